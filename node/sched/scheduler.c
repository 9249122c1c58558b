/* The leader's schedule firing loop; see scheduler.h. Each round reads every
 * schedule from one read transaction (a schedule is a small record and
 * their number is bounded by the API's limit), proposes the due ones, and
 * sets the timer for the earliest next slot, at most a second away, so a
 * schedule created or resumed meanwhile is seen within a second. */
#include "sched/scheduler.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "lib/cron.h"
#include "lib/err.h"
#include "lib/logger.h"
#include "repl/command.h"

#define MAX_WAIT_MS 1000
#define MIN_WAIT_MS 10
/* While fires are in flight the next round waits for their answers. */
#define INFLIGHT_WAIT_MS 50

struct due {
    char *id;
    char *cron;
    uint64_t from_ms; /* the earliest slot that may fire */
};

struct round {
    uint64_t now_ms;
    uint64_t earliest_ms; /* next slot of the schedules not due */
    struct due *due;
    size_t n, cap;
    int rv;
};

static int collect(void *arg, const Qraft__Schedule *sc)
{
    struct round *r = arg;
    if (sc->paused || sc->next_slot_ms == 0 || sc->next_slot_ms == UINT64_MAX) {
        return 0;
    }
    if (sc->next_slot_ms > r->now_ms) {
        if (sc->next_slot_ms < r->earliest_ms) {
            r->earliest_ms = sc->next_slot_ms;
        }
        return 0;
    }
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 16;
        struct due *d = realloc(r->due, cap * sizeof *d);
        if (d == NULL) {
            r->rv = -ENOMEM;
            return 1;
        }
        r->due = d;
        r->cap = cap;
    }
    struct due *d = &r->due[r->n];
    d->id = strdup(sc->id);
    d->cron = strdup(sc->cron);
    d->from_ms = sc->next_slot_ms > sc->last_slot_ms ? sc->next_slot_ms
                                                     : sc->last_slot_ms + 1;
    if (d->id == NULL || d->cron == NULL) {
        free(d->id);
        free(d->cron);
        r->rv = -ENOMEM;
        return 1;
    }
    r->n++;
    return 0;
}

static void on_fired(void *data, int status, const struct qr_apply_result *res)
{
    struct qr_scheduler *s = data;
    s->n_inflight--;
    if (status != 0) {
        QR_DEBUG("scheduler", "fire: %s", qr_strerror(status));
    } else if (res->status != 0) {
        QR_DEBUG("scheduler", "fire: %s", res->error);
    }
}

/* Proposes the command of one body (borrowed) that on_fired answers: it
 * counts in n_inflight until then. */
static int propose(struct qr_scheduler *s,
                   Qraft__Command__BodyCase body_case,
                   const ProtobufCMessage *body)
{
    int rv = qr_cluster_propose_one(s->cluster, body_case, body, on_fired, s);
    if (rv == 0) {
        s->n_inflight++;
    }
    return rv;
}

/* Proposes the tick of one due schedule: the latest slot that has passed,
 * and the slot after it. */
static void fire(struct qr_scheduler *s, const struct due *d, uint64_t now_ms)
{
    struct qr_cron cron;
    char err[QR_ERRMSG_BYTES];
    uint64_t slot_ms = d->from_ms;
    uint64_t next_ms = UINT64_MAX;

    if (qr_cron_parse(d->cron, &cron, err, sizeof err) != 0) {
        QR_ERROR("scheduler", "schedule %s: stored cron '%s': %s", d->id,
                 d->cron, err);
        return;
    }
    if (qr_cron_latest(&cron, d->from_ms, now_ms, &slot_ms) != 0) {
        slot_ms = d->from_ms; /* the stored next slot itself */
    }
    if (qr_cron_next(&cron, slot_ms, &next_ms) != 0) {
        next_ms = UINT64_MAX; /* never again */
    }
    if (slot_ms > d->from_ms) {
        s->n_missed++;
        QR_INFO("scheduler",
                "schedule %s: slots from %" PRIu64 " to %" PRIu64
                " passed unfired; firing the latest only",
                d->id, d->from_ms, slot_ms);
    }
    Qraft__ScheduleFire f = QRAFT__SCHEDULE_FIRE__INIT;
    f.schedule_id = d->id;
    f.slot_ms = slot_ms;
    f.next_slot_ms = next_ms;
    f.default_retries = s->config->limits.default_retries;
    f.default_timeout_ms = s->config->limits.default_timeout_ms;
    int rv = propose(s, QRAFT__COMMAND__BODY_SCHEDULE_FIRE, &f.base);
    if (rv != 0) {
        QR_DEBUG("scheduler", "proposing a fire of %s: %s", d->id,
                 qr_strerror(rv));
        return;
    }
    s->n_fired++;
}

/* Waiters whose deadline passed (context.waitForEvent timeouts): at most
 * this many a round. */
#define MAX_TIMEOUTS_PER_ROUND 256

struct timeouts {
    struct qr_scheduler *s;
    uint64_t proposed;
};

/* Proposes the timeout of one waiter. Apply fences it by the deadline, so
 * a waiter notified meanwhile, or timed out by an earlier leader, is left
 * alone. */
static int propose_timeout(void *arg, const Qraft__Waiter *w)
{
    struct timeouts *t = arg;
    struct qr_scheduler *s = t->s;
    char id[QR_ID_BYTES];
    qr_cluster_new_message_id(s->cluster, id);
    Qraft__WaitTimeout wt = QRAFT__WAIT_TIMEOUT__INIT;
    wt.event_id = w->event_id;
    wt.run_id = w->run_id;
    wt.deadline_ms = w->deadline_ms;
    wt.message_id = id;
    wt.default_retries = s->config->limits.default_retries;
    wt.default_timeout_ms = s->config->limits.default_timeout_ms;
    int rv = propose(s, QRAFT__COMMAND__BODY_WAIT_TIMEOUT, &wt.base);
    if (rv != 0) {
        QR_DEBUG("scheduler", "proposing the timeout of %s's wait for %s: %s",
                 w->run_id, w->event_id, qr_strerror(rv));
        return 1; /* the next round tries again */
    }
    t->proposed++;
    return 0;
}

/* Proposes the timeouts that are due; returns the next deadline after now
 * (UINT64_MAX: none known). */
static uint64_t fire_timeouts(struct qr_scheduler *s, uint64_t now_ms)
{
    struct timeouts t = {.s = s};
    struct qr_store_txn *txn = NULL;
    uint64_t next_ms = UINT64_MAX;
    int rv = qr_store_txn_begin(s->store, false, &txn);
    if (rv == 0) {
        rv = qr_store_waiter_due(txn, now_ms, MAX_TIMEOUTS_PER_ROUND,
                                 propose_timeout, &t, &next_ms);
        qr_store_txn_abort(txn);
    }
    if (rv != 0 && rv != 1) {
        QR_WARN("scheduler", "reading waiters: %s", qr_strerror(rv));
    }
    s->n_timeouts += t.proposed;
    return next_ms;
}

static void on_timer(uv_timer_t *t);

static void arm(struct qr_scheduler *s, uint64_t wait_ms)
{
    if (s->closing) {
        return;
    }
    if (wait_ms > MAX_WAIT_MS) {
        wait_ms = MAX_WAIT_MS;
    }
    if (wait_ms < MIN_WAIT_MS) {
        wait_ms = MIN_WAIT_MS;
    }
    uv_timer_start(&s->timer, on_timer, wait_ms, 0);
}

static void on_timer(uv_timer_t *t)
{
    struct qr_scheduler *s = t->data;
    if (s->closing) {
        return;
    }
    if (!qr_cluster_serving(s->cluster)) {
        arm(s, MAX_WAIT_MS);
        return;
    }
    if (s->n_inflight > 0) {
        arm(s, INFLIGHT_WAIT_MS);
        return;
    }
    struct round r = {.now_ms = qr_cluster_now_ms(s->cluster),
                      .earliest_ms = UINT64_MAX};
    struct qr_store_txn *txn = NULL;
    int rv = qr_store_txn_begin(s->store, false, &txn);
    if (rv == 0) {
        rv = qr_store_schedule_list(txn, collect, &r);
        qr_store_txn_abort(txn);
    }
    if (rv == 0 || rv == 1) {
        rv = r.rv;
    }
    if (rv != 0) {
        QR_WARN("scheduler", "reading schedules: %s", qr_strerror(rv));
    }
    for (size_t i = 0; i < r.n; i++) {
        if (rv == 0) {
            fire(s, &r.due[i], r.now_ms);
        }
        free(r.due[i].id);
        free(r.due[i].cron);
    }
    free(r.due);
    uint64_t next_timeout_ms = fire_timeouts(s, r.now_ms);
    if (next_timeout_ms < r.earliest_ms) {
        r.earliest_ms = next_timeout_ms;
    }
    if (s->n_inflight > 0) {
        arm(s, INFLIGHT_WAIT_MS);
    } else {
        arm(s,
            r.earliest_ms > r.now_ms ? r.earliest_ms - r.now_ms : MAX_WAIT_MS);
    }
}

int qr_scheduler_init(struct qr_scheduler *s,
                      uv_loop_t *loop,
                      const struct qr_config *cfg,
                      struct qr_cluster *cluster,
                      struct qr_store *store)
{
    memset(s, 0, sizeof *s);
    s->loop = loop;
    s->config = cfg;
    s->cluster = cluster;
    s->store = store;
    int rv = uv_timer_init(loop, &s->timer);
    if (rv != 0) {
        return rv;
    }
    s->timer.data = s;
    arm(s, MAX_WAIT_MS);
    return 0;
}

void qr_scheduler_kick(struct qr_scheduler *s)
{
    arm(s, 0);
}

void qr_scheduler_close(struct qr_scheduler *s)
{
    if (s->closing) {
        return;
    }
    s->closing = true;
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, NULL);
}
