#include "deliver/worker.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deliver/sign.h"
#include "deliver/worker_int.h"
#include "deliver/workflow.h"
#include "lib/clock.h"
#include "lib/err.h"
#include "lib/logger.h"
#include "repl/command.h"
#include "repl/fsm.h"

/* Rescan at least this often, whatever the store says: a safety net, not
 * the mechanism (the fsm's due hook wakes us for new work). */
#define MAX_SLEEP_MS 1000u
#define INFLIGHT_BUCKETS 4096u
#define MAX_INFLIGHT 1024u
/* Attempts waiting in the delivery engine for one destination host (behind
 * the ones it runs, 32): enough to keep a fast host busy between scans,
 * few enough that a host that hangs leaves most of MAX_INFLIGHT to the
 * others. Held only once HOST_LIMIT_FROM_INFLIGHT attempts are in flight:
 * below that every host has room, and leaving messages only costs their
 * loads (with the throttle below, a single busy destination still lost
 * ~8% of its delivery rate to them: qraft-bench deliver, 3 runs). */
#define MAX_HOST_QUEUED 96u
#define HOST_LIMIT_FROM_INFLIGHT (MAX_INFLIGHT / 2)
/* Due messages a scan may read and leave (their host has MAX_HOST_QUEUED
 * waiting) before it stops: each costs a load, and a busy host's backlog
 * would otherwise be read again by every scan. The next scan, soon, goes
 * on from that message, so every due message gets its turn. */
#define MAX_DEFERRED_PER_SCAN 256u
#define CUT_SHORT_RESCAN_MS 10u
/* Message-Id, Retried, User-Agent, Signature, Schedule-Id, Topic-Name,
 * Caller-Ip, traceparent */
#define EXTRA_HEADERS 8
#define SETTLE_MS 5000
/* Without a lease this long, transfers the gate holds are cancelled (their
 * messages are read afresh once the lease is back); a shorter gap (a
 * leader change) lets them start where they were. */
#define HOLD_QUEUED_MS 1000
/* While flow-controlled deliveries are sending, the lease is looked at
 * this often: they are cancelled soon after it ends (a next owner starts
 * no sooner than the lease margin after that, shards.h). */
#define FLOW_LEASE_CHECK_MS 100

/* ------------------------------------------------------------------------ */
/* The in-flight table. */

void worker_inflight_remove(struct qr_worker *w, struct qr_worker_inflight *f)
{
    struct qr_worker_inflight **pp = &w->buckets[worker_bucket_of(w, f->id)];
    while (*pp != NULL && *pp != f) {
        pp = &(*pp)->next;
    }
    if (*pp == f) {
        *pp = f->next;
        assert(w->n_inflight > 0);
        w->n_inflight--;
    }
    free(f->retry_delay);
    free(f->result);
    free(f);
}

/* ------------------------------------------------------------------------ */
/* Time. */

/* The earlier of this node's clock and the leader's last stamp plus the
 * monotonic time since we saw it: a clock that jumps ahead does not make
 * anything due early.
 *
 * A stamp is seen at the first scan after its entry applied, which may be
 * up to a sleep later: it is taken only when it is ahead of the estimate
 * the stamp before it gives. Both are lower bounds of the leader's time,
 * and the leader's stamps never go back (cluster.c), so the estimate never
 * goes back either: a stamp seen late would set it back by the wait, and
 * a flow control key's rate period would then last longer in the scan's
 * time than in real time, letting the next period start early. */
uint64_t worker_now_ms(struct qr_worker *w)
{
    uint64_t wall = qr_clock_wall_ms();
    uint64_t mono = qr_clock_mono_ms();
    uint64_t stamp = qr_cluster_last_time_ms(w->cluster);
    uint64_t bound = w->leader_time_ms + (mono - w->leader_time_seen_mono_ms);
    if (w->leader_time_ms == 0 || stamp > bound) {
        w->leader_time_ms = stamp;
        w->leader_time_seen_mono_ms = mono;
        bound = stamp;
    }
    if (w->leader_time_ms == 0) {
        return wall;
    }
    return wall < bound ? wall : bound;
}

static void on_timer(uv_timer_t *t);

void worker_wake_at(struct qr_worker *w, uint64_t at_ms)
{
    if (w->closing || at_ms >= w->wake_at_ms) {
        return;
    }
    uint64_t now = qr_clock_wall_ms();
    uint64_t delay = at_ms > now ? at_ms - now : 0;
    if (delay > MAX_SLEEP_MS) {
        delay = MAX_SLEEP_MS;
    }
    w->wake_at_ms = now + delay;
    uv_timer_start(&w->timer, on_timer, delay, 0);
}

static void on_due(void *data, uint64_t earliest_due_ms)
{
    worker_wake_at(data, earliest_due_ms);
}

/* ------------------------------------------------------------------------ */
/* Dispatch. */

struct scan_ctx {
    struct qr_worker *worker;
    struct qr_store_txn *txn; /* the scan's read transaction */
    const Qraft__SigningKeys *keys;
    uint64_t now_ms;
    uint64_t now_s;
    /* The store's due scans: up to now_ms, through skip_in_flight and
     * on_due_message (a key's waitlist: at most its capacity). */
    struct qr_store_due_visit due;
    /* A flow-controlled key's rate periods are a span of this node's
     * monotonic clock: now_ms (the leader's frame, as due times are) can
     * lag it and then jump ahead when a fresh entry is seen, which would
     * end a period early. */
    uint64_t flow_mono_ms;
    uint64_t next_due_ms; /* the earliest wake the scan found needed */
    uint32_t shard;       /* the shard being scanned */
    /* While a key's waitlist is scanned: its state and limits. */
    struct qr_flow_key *flow;
    struct qr_flow_limits flow_limits;
    size_t n_deferred; /* due, left for their host's queue to drain */
    bool cut;          /* stopped at MAX_DEFERRED_PER_SCAN, at: */
    uint64_t cut_ms;
    char cut_id[QR_ID_BYTES + 64];
};

static int dispatch(struct scan_ctx *sc, const Qraft__Message *m)
{
    struct qr_worker *w = sc->worker;
    assert(w->n_inflight < MAX_INFLIGHT); /* on_due_message checks */
    assert(w->active); /* scan dispatches only while holding a lease */
    /* A workflow step carries its run's history and headers. */
    struct qr_workflow_delivery wd = {0};
    bool workflow = m->workflow_run_id[0] != '\0';
    int rv = !workflow || !qr_workflow_delivery_is_step(m)
                 ? 0
                 : qr_workflow_delivery_build(
                       sc->txn, m, w->config->limits.max_body_bytes, &wd);
    if (rv != 0) {
        qr_log_with(QR_LOG_WARN, "worker",
                    &(const struct qr_log_fields){.message_id = m->id,
                                                  .run_id = m->workflow_run_id},
                    "not sent: reading its workflow run: %s", qr_strerror(rv));
        return rv;
    }
    const uint8_t *body = wd.run != NULL ? wd.body : m->body.data;
    size_t body_len = wd.run != NULL ? wd.body_len : m->body.len;
    size_t max_headers = m->n_headers + EXTRA_HEADERS;
    if (wd.run != NULL) {
        max_headers += wd.run->n_headers + QR_WORKFLOW_EXTRA_HEADERS;
    }
    struct qr_delivery_header *headers = calloc(max_headers, sizeof *headers);
    struct qr_worker_inflight *f = calloc(1, sizeof *f);
    char *jwt = NULL;
    char retried[16];
    rv = -ENOMEM;
    if (headers == NULL || f == NULL) {
        goto out;
    }
    rv =
        qr_sign_jwt(sc->keys->current, m->url, body, body_len, sc->now_s, &jwt);
    if (rv == QR_EBADREQ) {
        /* Only a URL that is not UTF-8 does this: both faces refuse one
         * now, but older nodes and RPC clients stored some. It stays due
         * (nothing can be signed for it), so say which and what to do. */
        uint64_t now = qr_clock_mono_ms();
        if (w->unsignable_warn_mono_ms == 0 ||
            now - w->unsignable_warn_mono_ms >= 60000) {
            w->unsignable_warn_mono_ms = now;
            QR_WARN_MSG("worker", m->id,
                        "cannot be sent: its stored URL is not valid UTF-8, "
                        "so no signature can be made for it; cancel it "
                        "(DELETE /v2/messages/%s) and publish it again",
                        m->id);
        }
    }
    if (rv != 0) {
        goto out;
    }
    size_t n = 0;
    if (wd.run != NULL) {
        n = qr_workflow_delivery_headers(&wd, m, headers);
    } else {
        for (size_t i = 0; i < m->n_headers; i++) {
            headers[n++] = (struct qr_delivery_header){m->headers[i]->name,
                                                       m->headers[i]->value};
        }
    }
    snprintf(retried, sizeof retried, "%" PRIu32, m->attempts);
    headers[n++] = (struct qr_delivery_header){"Upstash-Message-Id", m->id};
    headers[n++] = (struct qr_delivery_header){"Upstash-Retried", retried};
    headers[n++] = (struct qr_delivery_header){"User-Agent", "Upstash-QStash"};
    headers[n++] = (struct qr_delivery_header){"Upstash-Signature", jwt};
    if (m->schedule_id[0] != '\0') {
        headers[n++] =
            (struct qr_delivery_header){"Upstash-Schedule-Id", m->schedule_id};
    }
    /* Reserved names (command.c): a published header cannot forge them. */
    if (m->topic_name[0] != '\0') {
        headers[n++] =
            (struct qr_delivery_header){"Upstash-Topic-Name", m->topic_name};
    }
    if (m->caller_ip[0] != '\0') {
        headers[n++] =
            (struct qr_delivery_header){"Upstash-Caller-Ip", m->caller_ip};
    }

    f->worker = w;
    snprintf(f->id, sizeof f->id, "%s", m->id);
    f->attempt = m->attempts;
    f->generation = m->generation;
    f->max_retries = m->max_retries;
    f->created_ms = m->created_ms;
    f->shard = m->shard;
    if (m->retry_options != NULL) {
        const Qraft__RetryOptions *o = m->retry_options;
        f->options.strict = o->strict;
        f->options.min_backoff_ms = o->min_backoff_ms;
        f->options.max_backoff_ms = o->max_backoff_ms;
        f->options.max_doublings = o->max_doublings;
        f->options.max_retry_duration_ms = o->max_retry_duration_ms;
    }
    if (m->retry_delay[0] != '\0') {
        f->retry_delay = strdup(m->retry_delay);
        if (f->retry_delay == NULL) {
            rv = -ENOMEM;
            goto out;
        }
    }
    char traceparent[QR_TRACEPARENT_BYTES];
    if (w->trace != NULL && qr_trace_begin_attempt(&f->span, m, traceparent)) {
        headers[n++] = (struct qr_delivery_header){"traceparent", traceparent};
    }
    struct qr_delivery_request req = {
        .url = m->url,
        .method = m->method,
        .headers = headers,
        .n_headers = n,
        .body = body,
        .body_len = body_len,
        .timeout_ms = m->timeout_ms,
        /* A workflow's answers are read whole: a call's result goes to the
         * SDK, a step's error to its failure function. */
        .max_response_body_bytes =
            workflow ? w->config->limits.max_body_bytes : 0,
    };
    if (w->metrics != NULL) {
        f->host_slot = qr_metrics_host_slot(w->metrics, m->url);
        f->sent_us = qr_metrics_now_us();
    }
    rv = qr_delivery_send(&w->delivery, &req, worker_on_delivered, f,
                          &f->ticket);
    if (rv != 0) {
        QR_WARN_MSG("worker", m->id, "not sent: %s (%s)", qr_strerror(rv),
                    w->delivery.errmsg);
        goto out;
    }
    f->sending = true;
    qr_metrics_host_started(w->metrics, f->host_slot);
    if (w->metrics != NULL) {
        uint64_t lag_ms = sc->now_ms > m->next_attempt_ms
                              ? sc->now_ms - m->next_attempt_ms
                              : 0;
        qr_metrics_observe(&w->metrics->due_lag_seconds, lag_ms * 1000);
    }
    if (sc->flow != NULL) {
        f->flow = sc->flow;
        qr_flow_started(sc->flow, &sc->flow_limits, sc->flow_mono_ms);
        w->n_flow_sending++;
    }
    size_t b = worker_bucket_of(w, f->id);
    f->next = w->buckets[b];
    w->buckets[b] = f;
    w->n_inflight++;
    w->stats.dispatched++;
    if (f->attempt > 0) {
        QR_METRICS_INC(w->metrics, retries);
    }
    f = NULL;
out:
    if (f != NULL) {
        free(f->retry_delay);
        free(f);
    }
    free(jwt);
    free(headers);
    qr_workflow_delivery_free(&wd);
    return rv;
}

/* In flight and not answered yet: nothing to decide, no need to load it. */
static bool skip_in_flight(void *arg, const char *id)
{
    struct scan_ctx *sc = arg;
    const struct qr_worker_inflight *f = worker_inflight_find(sc->worker, id);
    return f != NULL && !f->answered;
}

static int on_due_message(void *arg, const Qraft__Message *m)
{
    struct scan_ctx *sc = arg;
    struct qr_worker *w = sc->worker;
    if (w->n_inflight >= MAX_INFLIGHT) {
        return 1; /* full: the rest waits for the next scan */
    }
    if (m->next_attempt_ms > sc->now_ms) {
        return 0;
    }
    struct qr_worker_inflight *f = worker_inflight_find(w, m->id);
    if (f != NULL) {
        /* Once this replica counts the attempt, the message's next attempt
         * (if any) is a new one: the entry has done its job. */
        if (!f->answered ||
            (m->attempts == f->attempt && m->generation == f->generation)) {
            return 0;
        }
        worker_inflight_remove(w, f);
    }
    if (w->n_inflight >= HOST_LIMIT_FROM_INFLIGHT &&
        qr_delivery_queued(&w->delivery) >= MAX_HOST_QUEUED &&
        qr_delivery_host_queued(&w->delivery, m->url) >= MAX_HOST_QUEUED) {
        /* Its host has enough attempts waiting: one more would only wait
         * too, holding a slot of MAX_INFLIGHT that other hosts' messages
         * need (a host that hangs would take them all). It stays due for a
         * later scan. A key's waitlist is read at most its capacity at a
         * time: it is never where a scan is cut. */
        if (sc->flow != NULL || ++sc->n_deferred < MAX_DEFERRED_PER_SCAN) {
            return 0;
        }
        sc->cut = true;
        sc->cut_ms = m->next_attempt_ms;
        snprintf(sc->cut_id, sizeof sc->cut_id, "%s", m->id);
        return 1;
    }
    int rv = dispatch(sc, m);
    if (rv != 0 && rv != QR_EBADREQ) {
        return 1; /* out of memory or closing: stop this scan */
    }
    return 0;
}

static int read_keys(struct qr_store_txn *txn, Qraft__SigningKeys **out)
{
    return qr_store_meta_get_msg(txn, QR_META_SIGNING_KEYS,
                                 &qraft__signing_keys__descriptor,
                                 (ProtobufCMessage **)out);
}

/* Cancels deliveries of shards the map gives another node (all of them
 * when it is leaving): their new owner sends them. A shard being handed
 * over (owner nobody) keeps its deliveries running: they finish and report
 * before the next owner gets it (shards.h). Inactive for HOLD_QUEUED_MS,
 * cancels those not started yet (the engine's gate holds them): the
 * messages stay due, and are read afresh once it is active again. Once the
 * lease itself ends (lease_runs false), cancels the flow-controlled ones
 * too. Not while it only waits to apply its leader's newest map: a
 * planned move waits for them (qr_shards_lease_runs), and cancelling them
 * then told the leader none ran while their requests were still being
 * served, so the next owner overlapped them. */
static void cancel_unowned(struct qr_worker *w, bool active, bool lease_runs)
{
    if (!active &&
        qr_clock_mono_ms() - w->inactive_since_mono_ms >= HOLD_QUEUED_MS) {
        qr_delivery_cancel_queued(&w->delivery);
    }
    for (size_t b = 0; b < w->n_buckets; b++) {
        struct qr_worker_inflight *f = w->buckets[b];
        while (f != NULL) {
            struct qr_worker_inflight *next = f->next;
            /* A flow-controlled delivery does not outlive the lease: the
             * next owner of its key counts from zero. */
            bool moved = !qr_shards_assigned(w->shards, f->shard) &&
                         !qr_shards_handing_over(w->shards, f->shard);
            if (f->sending && (moved || (!lease_runs && f->flow != NULL))) {
                /* Fires the delivery callback (CANCELLED) now, which
                 * removes f. */
                qr_delivery_cancel(&w->delivery, f->ticket);
            }
            f = next;
        }
    }
}

/* Drops answered entries once this replica has applied their result, or
 * SETTLE_MS after an unknown outcome (if it did not commit, the message is
 * then sent again). Returns whether some still wait. */
static bool sweep_settled(struct qr_worker *w)
{
    uint64_t now = qr_clock_mono_ms();
    uint64_t applied = qr_cluster_fsm_applied(w->cluster);
    bool waiting = false;
    for (size_t b = 0; b < w->n_buckets; b++) {
        struct qr_worker_inflight *f = w->buckets[b];
        while (f != NULL) {
            struct qr_worker_inflight *next = f->next;
            if (f->answered && (f->wait_index <= applied ||
                                now - f->answered_mono_ms >= SETTLE_MS)) {
                worker_inflight_remove(w, f);
            } else if (f->answered) {
                waiting = true;
            }
            f = next;
        }
    }
    return waiting;
}

static void need_wake(struct scan_ctx *sc, uint64_t at_ms)
{
    if (at_ms < sc->next_due_ms) {
        sc->next_due_ms = at_ms;
    }
}

/* Sends what key's waitlist in the scanned shard may start now. A key at
 * its parallelism is looked at again when a result comes back (the fsm's
 * due hook); one at its rate when its period ends. */
static int on_flow_key(void *arg, const char *key, uint64_t first_due_ms)
{
    struct scan_ctx *sc = arg;
    struct qr_worker *w = sc->worker;
    if (first_due_ms > sc->now_ms) {
        need_wake(sc, first_due_ms);
        return 0;
    }
    if (w->n_inflight >= MAX_INFLIGHT) {
        return 1; /* full: the rest waits for the next scan */
    }
    Qraft__FlowControlKey *rec = NULL;
    int rv = qr_store_flow_get(sc->txn, key, &rec);
    if (rv != 0) {
        /* A waitlist without its record: the store's invariant says this
         * cannot be; nothing of the key is sent rather than unlimited. */
        QR_WARN("worker", "flow control key '%.64s' not read: %s", key,
                qr_strerror(rv));
        return rv == QR_ENOTFOUND ? 0 : 1;
    }
    qr_flow_limits_of(rec, &sc->flow_limits);
    struct qr_flow_key *k = qr_flow_find(&w->flow, key, false);
    if (k == NULL) {
        k = qr_flow_find(&w->flow, key, true);
        if (k == NULL) {
            qraft__flow_control_key__free_unpacked(rec, NULL);
            return 1; /* out of memory: stop this scan */
        }
        /* The key's previous owner may have started up to its rate in the
         * period that is still running (flow.h, "A new owner"). */
        qr_flow_adopt(k, &sc->flow_limits, rec->rate_reset_ms,
                      w->assigned_since_ms[sc->shard],
                      w->assigned_since_mono_ms[sc->shard], sc->flow_mono_ms);
    }
    uint64_t retry_ms = UINT64_MAX;
    uint32_t cap = qr_flow_capacity(k, &sc->flow_limits, rec->rate_reset_ms,
                                    sc->flow_mono_ms, &retry_ms);
    qraft__flow_control_key__free_unpacked(rec, NULL);
    if (retry_ms != UINT64_MAX) {
        /* The period's end, from the monotonic clock into the scan's. */
        need_wake(sc, sc->now_ms + (retry_ms > sc->flow_mono_ms
                                        ? retry_ms - sc->flow_mono_ms
                                        : 0));
    }
    if (cap == 0) {
        return 0;
    }
    sc->flow = k;
    struct qr_store_due_visit due = sc->due;
    due.limit = cap;
    rv = qr_store_flow_due_scan(sc->txn, sc->shard, key, &due);
    sc->flow = NULL;
    return rv;
}

/* Since when the map gives shard to this node (flow.h, "A new owner"), in
 * the scan's time and on the monotonic clock. */
static void note_assignment(struct qr_worker *w,
                            uint32_t shard,
                            const struct scan_ctx *sc)
{
    if (!qr_shards_assigned(w->shards, shard)) {
        w->assigned_since_ms[shard] = 0;
    } else if (w->assigned_since_ms[shard] == 0) {
        w->assigned_since_ms[shard] = sc->now_ms;
        w->assigned_since_mono_ms[shard] = sc->flow_mono_ms;
    }
}

/* ------------------------------------------------------------------------ */
/* The drain (a clean stop) and hand-overs. */

/* Whether f's result is not committed yet: sending, on its way through
 * raft, or held for another report. */
static bool unsettled(const struct qr_worker_inflight *f)
{
    return f->sending || f->proposing || f->held;
}

/* The shards' hand-over probe: attempts of shards the map gives to nobody
 * that still run or wait for their results to commit. */
static bool handover_busy(void *data)
{
    const struct qr_worker *w = data;
    for (size_t b = 0; b < w->n_buckets; b++) {
        for (const struct qr_worker_inflight *f = w->buckets[b]; f != NULL;
             f = f->next) {
            if (unsettled(f) && qr_shards_handing_over(w->shards, f->shard)) {
                return true;
            }
        }
    }
    return false;
}

/* Attempts whose result is not committed yet (unsettled). */
static size_t count_unsettled(const struct qr_worker *w, size_t *n_sending)
{
    size_t n = 0;
    *n_sending = 0;
    for (size_t b = 0; b < w->n_buckets; b++) {
        for (const struct qr_worker_inflight *f = w->buckets[b]; f != NULL;
             f = f->next) {
            *n_sending += f->sending;
            n += unsettled(f);
        }
    }
    return n;
}

static void drain_done(struct qr_worker *w)
{
    void (*cb)(void *data) = w->drain_cb;
    w->drain_cb = NULL;
    if (cb != NULL) {
        cb(w->drain_data);
    }
}

/* Reports held results again while the lease lasts, and ends the drain when
 * nothing is unsettled, or at its deadline. */
static void drain_step(struct qr_worker *w)
{
    if (w->drain_cb == NULL) {
        return; /* drained: the stop goes on */
    }
    if (qr_shards_leased(w->shards)) {
        worker_report_held(w);
    }
    size_t n_sending = 0;
    size_t n = count_unsettled(w, &n_sending);
    uint64_t now = qr_clock_mono_ms();
    if (n == 0) {
        QR_INFO("worker",
                "drained in %" PRIu64
                " ms: the %zu attempt(s) running "
                "finished and their results are committed",
                now - w->drain_started_mono_ms, w->drain_n_running);
        drain_done(w);
        return;
    }
    if (now < w->drain_deadline_mono_ms) {
        worker_wake_at(w, qr_clock_wall_ms() + 10);
        return;
    }
    QR_WARN("worker",
            "drain deadline (--drain-timeout-ms) passed with %zu attempt(s) "
            "unsettled: cancelling the %zu still sending; their messages "
            "stay due and the next owner sends them again (a destination "
            "may see them twice)",
            n, n_sending);
    for (size_t b = 0; b < w->n_buckets; b++) {
        struct qr_worker_inflight *f = w->buckets[b];
        while (f != NULL) {
            struct qr_worker_inflight *next = f->next;
            if (f->sending) {
                /* Fires the delivery callback (CANCELLED) now, which
                 * removes f. */
                qr_delivery_cancel(&w->delivery, f->ticket);
            }
            f = next;
        }
    }
    drain_done(w);
}

void qr_worker_drain(struct qr_worker *w,
                     uint64_t timeout_ms,
                     void (*cb)(void *data),
                     void *data)
{
    assert(!w->draining && !w->closing);
    w->draining = true;
    w->drain_cb = cb;
    w->drain_data = data;
    w->drain_started_mono_ms = qr_clock_mono_ms();
    w->drain_deadline_mono_ms = w->drain_started_mono_ms + timeout_ms;
    size_t n_queued = qr_delivery_cancel_queued(&w->delivery);
    size_t n_sending = 0;
    count_unsettled(w, &n_sending);
    w->drain_n_running = n_sending;
    QR_INFO("worker",
            "draining: %zu attempt(s) running may finish within %" PRIu64
            " ms; %zu not started stay due",
            n_sending, timeout_ms, n_queued);
    worker_wake_at(w, qr_clock_wall_ms());
}

/* One pass over every owned shard: send what is due, and find when the next
 * message becomes due. */
static void scan(struct qr_worker *w)
{
    bool active = qr_shards_active(w->shards);
    if (active != w->active) {
        w->active = active;
        w->inactive_since_mono_ms = qr_clock_mono_ms();
        QR_INFO("worker", "%s dispatching", active ? "started" : "stopped");
    }
    /* A draining node's flow-controlled deliveries may finish: nobody
     * else gets their shard before they did. */
    cancel_unowned(w, active || (w->draining && qr_shards_leased(w->shards)),
                   qr_shards_lease_runs(w->shards));
    bool settling = sweep_settled(w);
    if (settling) {
        worker_wake_at(w, qr_clock_wall_ms() + 10); /* replication is quick */
    }
    if (w->draining) {
        drain_step(w);
        return;
    }
    if (!active) {
        worker_wake_at(w, qr_clock_wall_ms() + MAX_SLEEP_MS / 4);
        return;
    }
    worker_report_held(w);
    qr_delivery_resume(&w->delivery); /* what the gate held, if any */
    /* The last scan was cut short by busy hosts: the next goes on from
     * there CUT_SHORT_RESCAN_MS later, not at every result (each would
     * read MAX_DEFERRED_PER_SCAN messages only to leave them again). */
    uint64_t mono = qr_clock_mono_ms();
    if (w->scan_from_set && mono < w->cut_mono_ms + CUT_SHORT_RESCAN_MS) {
        worker_wake_at(w, qr_clock_wall_ms() +
                              (w->cut_mono_ms + CUT_SHORT_RESCAN_MS - mono));
        return;
    }

    struct qr_store_txn *txn = NULL;
    Qraft__SigningKeys *keys = NULL;
    struct scan_ctx sc = {.worker = w,
                          .now_ms = worker_now_ms(w),
                          .flow_mono_ms = mono,
                          .next_due_ms = UINT64_MAX};
    sc.now_s = sc.now_ms / 1000;
    sc.due = (struct qr_store_due_visit){.until_ms = sc.now_ms,
                                         .limit = SIZE_MAX,
                                         .skip = skip_in_flight,
                                         .cb = on_due_message,
                                         .arg = &sc};
    int rv = qr_store_txn_begin(w->store, false, &txn);
    if (rv == 0) {
        rv = read_keys(txn, &keys);
    }
    if (rv != 0) {
        /* No keys yet (a brand-new cluster): nothing can be signed. */
        if (txn != NULL) {
            qr_store_txn_abort(txn);
        }
        worker_wake_at(w, qr_clock_wall_ms() + 100);
        return;
    }
    sc.keys = keys;
    sc.txn = txn;
    /* From where the last scan was cut short, round every shard and back
     * to the start of the first one; else shard by shard from 0. */
    bool resume = w->scan_from_set;
    uint32_t first = resume ? w->scan_from_shard : 0;
    w->scan_from_set = false;
    for (uint32_t i = 0; i <= QR_FSM_N_SHARDS; i++) {
        uint32_t shard = (first + i) % QR_FSM_N_SHARDS;
        if (i < QR_FSM_N_SHARDS) {
            note_assignment(w, shard, &sc);
        }
        if (!qr_shards_owns(w->shards, shard)) {
            continue;
        }
        sc.shard = shard;
        if (w->n_inflight < MAX_INFLIGHT && !sc.cut &&
            (i < QR_FSM_N_SHARDS || resume)) {
            bool from = resume && i == 0;
            qr_store_due_scan_from(txn, shard, from ? w->scan_from_ms : 0,
                                   from ? w->scan_from_id : NULL, &sc.due);
            if (sc.cut) {
                w->scan_from_set = true;
                w->cut_mono_ms = qr_clock_mono_ms();
                w->scan_from_shard = shard;
                w->scan_from_ms = sc.cut_ms;
                snprintf(w->scan_from_id, sizeof w->scan_from_id, "%s",
                         sc.cut_id);
            }
        }
        if (i == QR_FSM_N_SHARDS) {
            break; /* the first shard's next due is counted */
        }
        if (w->n_inflight < MAX_INFLIGHT) {
            qr_store_flow_due_keys(txn, shard, on_flow_key, &sc);
        }
        uint64_t next;
        if (qr_store_due_next(txn, shard, sc.now_ms, &next) == 0) {
            need_wake(&sc, next);
        }
    }
    qr_store_txn_abort(txn);
    qraft__signing_keys__free_unpacked(keys, NULL);
    qr_flow_sweep(&w->flow, sc.flow_mono_ms, false);
    if (w->n_flow_sending > 0) {
        need_wake(&sc, sc.now_ms + FLOW_LEASE_CHECK_MS);
    }
    uint64_t next_due = sc.next_due_ms;

    uint64_t wall = qr_clock_wall_ms();
    /* Due times are in the leader's frame; our clock may run behind it. */
    uint64_t skew = wall > sc.now_ms ? wall - sc.now_ms : 0;
    worker_wake_at(
        w, next_due == UINT64_MAX ? wall + MAX_SLEEP_MS : next_due + skew);
    if (sc.cut) {
        worker_wake_at(w, wall + CUT_SHORT_RESCAN_MS);
    }
}

/* The delivery engine's gate: nothing starts without a lease. */
static bool may_start(void *data)
{
    struct qr_worker *w = data;
    return !w->closing && qr_shards_active(w->shards);
}

static void on_timer(uv_timer_t *t)
{
    struct qr_worker *w = t->data;
    w->wake_at_ms = UINT64_MAX;
    if (!w->closing) {
        scan(w);
    }
}

void qr_worker_kick(struct qr_worker *w)
{
    worker_wake_at(w, qr_clock_wall_ms());
}

/* ------------------------------------------------------------------------ */
/* Life cycle. */

int qr_worker_init(struct qr_worker *w,
                   uv_loop_t *loop,
                   const struct qr_config *cfg,
                   struct qr_cluster *cluster,
                   struct qr_store *store,
                   struct qr_shards *shards)
{
    memset(w, 0, sizeof *w);
    w->loop = loop;
    w->config = cfg;
    w->cluster = cluster;
    w->store = store;
    w->shards = shards;
    w->wake_at_ms = UINT64_MAX;
    w->n_buckets = INFLIGHT_BUCKETS;
    w->buckets = calloc(w->n_buckets, sizeof *w->buckets);
    if (w->buckets == NULL) {
        snprintf(w->errmsg, sizeof w->errmsg, "worker: out of memory");
        return -ENOMEM;
    }
    int rv = qr_delivery_init(&w->delivery, loop, NULL, w->errmsg);
    if (rv != 0) {
        free(w->buckets);
        return rv;
    }
    qr_delivery_set_gate(&w->delivery, may_start, w);
    qr_delivery_set_destinations(&w->delivery, &w->config->destinations);
    uv_timer_init(loop, &w->timer);
    w->timer.data = w;
    qr_cluster_set_due_hook(cluster, on_due, w);
    qr_shards_set_handover_probe(shards, handover_busy, w);
    qr_worker_kick(w);
    return 0;
}

static void close_step_done(struct qr_worker *w)
{
    if (--w->pending_closes > 0) {
        return;
    }
    /* Results still in raft keep their entries: their callbacks come from
     * the cluster closing, after us. Free what remains now. */
    for (size_t b = 0; b < w->n_buckets; b++) {
        while (w->buckets[b] != NULL) {
            struct qr_worker_inflight *f = w->buckets[b];
            w->buckets[b] = f->next;
            free(f->retry_delay);
            free(f->result);
            free(f);
        }
    }
    w->n_inflight = 0;
    w->n_flow_sending = 0;
    qr_flow_sweep(&w->flow, 0, true);
    free(w->buckets);
    w->buckets = NULL;
    if (w->close_cb != NULL) {
        w->close_cb(w);
    }
}

static void on_timer_close(uv_handle_t *h)
{
    close_step_done(h->data);
}

static void on_delivery_close(struct qr_delivery *d)
{
    struct qr_worker *w =
        (struct qr_worker *)((char *)d - offsetof(struct qr_worker, delivery));
    close_step_done(w);
}

void qr_worker_close(struct qr_worker *w, void (*cb)(struct qr_worker *w))
{
    if (w->closing) {
        return;
    }
    w->closing = true;
    w->close_cb = cb;
    w->pending_closes = 2;
    qr_cluster_set_due_hook(w->cluster, NULL, NULL);
    qr_shards_set_handover_probe(w->shards, NULL, NULL);
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, on_timer_close);
    qr_delivery_close(&w->delivery, on_delivery_close);
}

/* ------------------------------------------------------------------------ */
/* What the API reads. */

bool qr_worker_flow_counts(struct qr_worker *w,
                           const char *key,
                           uint64_t rate_reset_ms,
                           struct qr_worker_flow_counts *out)
{
    memset(out, 0, sizeof *out);
    if (!qr_shards_assigned(w->shards, qr_fsm_flow_shard_of(key))) {
        return false;
    }
    const struct qr_flow_key *k = qr_flow_find(&w->flow, key, false);
    if (k != NULL) {
        out->sending = k->sending;
        uint64_t mono = qr_clock_mono_ms();
        uint64_t start = 0;
        out->rate_count = qr_flow_rate_count(k, rate_reset_ms, mono, &start);
        /* The period's start on the wall clock, as the API shows it. */
        uint64_t wall = qr_clock_wall_ms();
        uint64_t ago = mono - start;
        out->period_start_ms = start == 0 ? 0 : wall > ago ? wall - ago : 0;
    }
    return true;
}

size_t qr_worker_sending(const struct qr_worker *w)
{
    /* Every attempt sending is one request the engine holds, running or
     * queued, until it answers. */
    return qr_delivery_inflight(&w->delivery) +
           qr_delivery_queued(&w->delivery);
}

size_t qr_worker_max_inflight(void)
{
    return MAX_INFLIGHT;
}
