#include "repl/fsm.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deliver/callback.h"
#include "lib/clock.h"
#include "lib/err.h"
#include "lib/logger.h"
#include "repl/check.h"

/* Most items one Prune removes per kind (the leader asks for up to this
 * many; docs/benchmarks.md has the apply time of a full batch). */
#define QR_FSM_MAX_PRUNE_ITEMS 10000u

/* Expired dedup records pruned per applied entry: bounded work per entry. */
#define DEDUP_PRUNE_PER_ENTRY 64

/* Everything an entry's commands share while it is applied. */
struct apply_ctx {
    struct qr_fsm *fsm;
    struct qr_store_txn *txn;
    uint64_t index;
    uint64_t now_ms; /* the leader's stamp: the only clock apply knows */
    uint32_t position;
    /* Events appended by this entry so far: their key's last part, so a
     * command that records several (a batch of results, a callback and its
     * source, a queue activating its next message) keeps them all. */
    uint32_t n_events;
    uint64_t earliest_due_ms; /* UINT64_MAX: nothing became due */
};

static void note_due(struct apply_ctx *ctx, uint64_t due_ms)
{
    if (due_ms < ctx->earliest_due_ms) {
        ctx->earliest_due_ms = due_ms;
    }
}

uint32_t qr_fsm_shard_of(const char *message_id)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)message_id; *p; p++) {
        h ^= *p;
        h *= 16777619u;
    }
    return h % QR_FSM_N_SHARDS;
}

static void set_result(struct qr_apply_result *res,
                       int status,
                       const char *fmt,
                       ...) __attribute__((format(printf, 3, 4)));

static void set_result(struct qr_apply_result *res,
                       int status,
                       const char *fmt,
                       ...)
{
    va_list ap;
    res->status = status;
    va_start(ap, fmt);
    vsnprintf(res->error, sizeof res->error, fmt, ap);
    va_end(ap);
}

static int append_event(struct apply_ctx *ctx,
                        const Qraft__Message *m,
                        const char *detail)
{
    Qraft__Event e = QRAFT__EVENT__INIT;
    e.message_id = m->id;
    e.time_ms = ctx->now_ms;
    e.state = m->state;
    e.attempt = m->attempts;
    e.detail = (char *)detail;
    return qr_store_event_append(ctx->txn, ctx->index, ctx->n_events++, &e);
}

/* ------------------------------------------------------------------------
 * Queues.
 *
 * Invariants, for every stored Queue q (kept by apply alone):
 * - q.waiting is the number of QUEUED messages whose `queue` is q.name;
 *   each has a distinct queue_seq < q.next_seq, so `qfifo` orders them by
 *   arrival (FIFO).
 * - q.active is the number of messages whose (slot_queue, slot_queue_id)
 *   is (q.name, q.id): messages of q activated and not yet final, and the
 *   callbacks of such messages, until they are final themselves. A message
 *   gives its slot back (clearing slot_queue) when it becomes final.
 * - After every command: q.paused, or q.waiting == 0, or q.active >=
 *   q.parallelism. (queue_fill restores it wherever a slot frees up, the
 *   queue grows or resumes, or parallelism rises.) */

/* Queue semantics apply once the cluster's feature level has them (a
 * replicated value, so every replica agrees). */
static bool queues_on(const struct apply_ctx *ctx)
{
    return ctx->fsm->feature_level >= QR_FEATURE_LEVEL_QUEUES;
}

/* What the leader checks (command.c), checked again: a name becomes part
 * of LMDB keys, and bad content must never stop apply. */
static bool queue_name_ok(const char *name)
{
    return qr_command_is_name(name) &&
           strlen(name) <= QR_COMMAND_MAX_QUEUE_NAME_BYTES;
}

/* Loads queue `name`; 1 when *out was loaded, 0 when there is none. */
static int queue_load(struct apply_ctx *ctx,
                      const char *name,
                      Qraft__Queue **out)
{
    int rv = qr_store_queue_get(ctx->txn, name, out);
    if (rv == QR_ENOTFOUND || rv == QR_EBADREQ) {
        return 0; /* a name no queue can have (empty, too long) */
    }
    return rv == 0 ? 1 : rv;
}

/* Loads the queue a command names; a missing one is the command's result
 * (not found), not an apply failure. Returns 1 when *out was loaded, 0 when
 * res was set, or a store error (like load_target for messages). */
static int queue_load_target(struct apply_ctx *ctx,
                             const char *name,
                             Qraft__Queue **out,
                             struct qr_apply_result *res)
{
    int rv = queue_load(ctx, name, out);
    if (rv == 0) {
        set_result(res, QR_ENOTFOUND, "queue %.64s not found", name);
    }
    return rv;
}

/* Loads the message at the head of queue `name`'s FIFO (new in *out).
 * Returns 0, QR_ENOTFOUND when the FIFO is empty, QR_ECORRUPT when it names
 * a message that is not stored, or a store error. */
static int queue_head_load(struct apply_ctx *ctx,
                           const char *name,
                           Qraft__Message **out)
{
    char *id = NULL;
    int rv = qr_store_queue_head(ctx->txn, name, &id);
    if (rv == 0) {
        rv = qr_store_msg_get(ctx->txn, id, out);
        rv = rv == QR_ENOTFOUND ? QR_ECORRUPT : rv;
    }
    free(id);
    return rv;
}

/* Activates q's oldest waiting messages while a slot is free and q is not
 * paused: each becomes PENDING, due at max(not_before, now), holding a slot
 * of q. Changes q's counters; the caller stores q. */
static int queue_fill(struct apply_ctx *ctx, Qraft__Queue *q)
{
    while (!q->paused && q->active < q->parallelism && q->waiting > 0) {
        Qraft__Message *m = NULL;
        int rv = queue_head_load(ctx, q->name, &m);
        if (rv == QR_ENOTFOUND) {
            return QR_ECORRUPT; /* waiting > 0 with an empty FIFO */
        }
        if (rv != 0) {
            return rv;
        }
        Qraft__Message upd = *m;
        upd.state = QRAFT__MESSAGE_STATE__PENDING;
        upd.queue_seq = 0;
        upd.slot_queue = q->name;
        upd.slot_queue_id = q->id;
        upd.next_attempt_ms =
            m->not_before_ms > ctx->now_ms ? m->not_before_ms : ctx->now_ms;
        upd.updated_ms = ctx->now_ms;
        rv = qr_store_msg_put(ctx->txn, &upd);
        if (rv == 0) {
            note_due(ctx, upd.next_attempt_ms);
            rv = append_event(ctx, &upd, "activated: its turn in the queue");
        }
        qraft__message__free_unpacked(m, NULL);
        if (rv != 0) {
            return rv;
        }
        q->active++;
        q->waiting--;
    }
    return 0;
}

/* The end of every change that may free a slot of q or resume it: lets q
 * fill (queue_fill), then stores it. The caller still frees q. */
static int queue_fill_and_put(struct apply_ctx *ctx, Qraft__Queue *q)
{
    int rv = queue_fill(ctx, q);
    return rv == 0 ? qr_store_queue_put(ctx->txn, q) : rv;
}

/* Returns new in *out: the queue `name`, created (parallelism 1, running)
 * when it does not exist. A new queue's id comes from a meta counter. */
static int queue_load_or_create(struct apply_ctx *ctx,
                                const char *name,
                                Qraft__Queue **out)
{
    int rv = queue_load(ctx, name, out);
    if (rv != 0) {
        return rv < 0 ? rv : 0;
    }
    uint64_t last_id = 0;
    rv = qr_store_meta_get_u64(ctx->txn, QR_META_QUEUE_LAST_ID, &last_id);
    if (rv != 0 && rv != QR_ENOTFOUND) {
        return rv;
    }
    rv = qr_store_meta_put_u64(ctx->txn, QR_META_QUEUE_LAST_ID, last_id + 1);
    if (rv != 0) {
        return rv;
    }
    /* Built packed-and-unpacked so the caller frees every queue alike. */
    Qraft__Queue q = QRAFT__QUEUE__INIT;
    q.name = (char *)name;
    q.parallelism = 1;
    q.created_ms = ctx->now_ms;
    q.updated_ms = ctx->now_ms;
    q.id = last_id + 1;
    uint8_t buf[512];
    size_t len = qraft__queue__get_packed_size(&q);
    if (len > sizeof buf) {
        return QR_EBADREQ; /* names are checked far below this */
    }
    qraft__queue__pack(&q, buf);
    *out = qraft__queue__unpack(NULL, len, buf);
    return *out == NULL ? -ENOMEM : 0;
}

/* Puts m (a message that is new, or was not QUEUED) at the tail of its
 * queue, creating the queue if needed, then lets the queue fill: m may be
 * activated at once. Stores m. */
static int queue_enqueue(struct apply_ctx *ctx,
                         Qraft__Message *m,
                         const char *detail)
{
    Qraft__Queue *q = NULL;
    int rv = queue_load_or_create(ctx, m->queue, &q);
    if (rv != 0) {
        return rv;
    }
    m->state = QRAFT__MESSAGE_STATE__QUEUED;
    m->queue_seq = q->next_seq++;
    m->slot_queue = "";
    m->slot_queue_id = 0;
    q->waiting++;
    q->updated_ms = ctx->now_ms;
    rv = qr_store_msg_put(ctx->txn, m);
    if (rv == 0) {
        rv = append_event(ctx, m, detail);
    }
    if (rv == 0) {
        rv = queue_fill_and_put(ctx, q);
    }
    qraft__queue__free_unpacked(q, NULL);
    return rv;
}

/* A message that holds a slot of its source's queue (m is a callback being
 * created for src): counts it on the queue. */
static int queue_take_slot(struct apply_ctx *ctx,
                           const Qraft__Message *src,
                           Qraft__Message *m)
{
    Qraft__Queue *q = NULL;
    if (src->slot_queue[0] == '\0') {
        return 0;
    }
    int rv = queue_load(ctx, src->slot_queue, &q);
    if (rv <= 0) {
        return rv; /* deleted meanwhile: nothing to hold */
    }
    rv = 0; /* created again under the same name: not src's queue */
    if (q->id == src->slot_queue_id) {
        m->slot_queue = src->slot_queue;
        m->slot_queue_id = src->slot_queue_id;
        q->active++;
        rv = qr_store_queue_put(ctx->txn, q);
    }
    qraft__queue__free_unpacked(q, NULL);
    return rv;
}

/* m (a shallow copy, about to be stored) has become final: it gives back
 * the slot it holds, if any, and its queue fills. */
static int queue_release(struct apply_ctx *ctx, Qraft__Message *m)
{
    Qraft__Queue *q = NULL;
    if (m->slot_queue[0] == '\0') {
        return 0;
    }
    int rv = queue_load(ctx, m->slot_queue, &q);
    if (rv == 1 && q->id == m->slot_queue_id) {
        if (q->active > 0) {
            q->active--;
        }
        q->updated_ms = ctx->now_ms;
        rv = queue_fill_and_put(ctx, q);
    }
    if (q != NULL) {
        qraft__queue__free_unpacked(q, NULL);
    }
    m->slot_queue = "";
    m->slot_queue_id = 0;
    return rv < 0 ? rv : 0;
}

/* m (a shallow copy, about to be stored) leaves its queue's FIFO without
 * being activated (cancelled). */
static int queue_unlink(struct apply_ctx *ctx, const Qraft__Message *m)
{
    Qraft__Queue *q = NULL;
    int rv = queue_load(ctx, m->queue, &q);
    if (rv <= 0) {
        return rv == 0 ? QR_ECORRUPT : rv; /* QUEUED in a missing queue */
    }
    if (q->waiting == 0) {
        rv = QR_ECORRUPT;
    } else {
        q->waiting--;
        q->updated_ms = ctx->now_ms;
        rv = qr_store_queue_put(ctx->txn, q);
    }
    qraft__queue__free_unpacked(q, NULL);
    return rv;
}

/* Looks the dedup keys of a creating command (publish, schedule upsert) up
 * at the command's time. Returns 1 when one is live: res then answers the
 * id it created (res->message_id) as deduplicated, and the command must
 * change nothing. 0 when none is; a store error otherwise. */
static int dedup_seen(struct apply_ctx *ctx,
                      char **keys,
                      size_t n_keys,
                      struct qr_apply_result *res)
{
    for (size_t i = 0; i < n_keys; i++) {
        char *existing = NULL;
        int rv = qr_store_dedup_get(ctx->txn, keys[i], ctx->now_ms, &existing);
        if (rv == 0) {
            snprintf(res->message_id, sizeof res->message_id, "%s", existing);
            res->deduplicated = true;
            free(existing);
            return 1;
        }
        if (rv != QR_ENOTFOUND) {
            return rv;
        }
    }
    return 0;
}

static int apply_publish(struct apply_ctx *ctx,
                         const Qraft__Publish *p,
                         struct qr_apply_result *res)
{
    const Qraft__PublishRequest *req = p->request;
    int rv;

    if (req == NULL || p->message_id[0] == '\0') {
        set_result(res, QR_EBADREQ, "publish without a request");
        return 0;
    }
    if (req->queue[0] != '\0' && queues_on(ctx) && !queue_name_ok(req->queue)) {
        set_result(res, QR_EBADREQ, "queue name is invalid");
        return 0;
    }
    /* A dedup key seen within its window answers with the message it
     * created and stores nothing. */
    rv = dedup_seen(ctx, p->dedup_keys, p->n_dedup_keys, res);
    if (rv != 0) {
        return rv < 0 ? rv : 0;
    }

    Qraft__Message *old = NULL;
    rv = qr_store_msg_get(ctx->txn, p->message_id, &old);
    if (rv == 0) {
        qraft__message__free_unpacked(old, NULL);
        set_result(res, QR_ECONFLICT, "message id %s exists already",
                   p->message_id);
        return 0;
    }
    if (rv != QR_ENOTFOUND) {
        return rv;
    }

    Qraft__Message m = QRAFT__MESSAGE__INIT;
    m.id = p->message_id;
    m.url = req->url;
    m.method = req->method[0] != '\0' ? req->method : "POST";
    m.n_headers = req->n_headers;
    m.headers = req->headers;
    m.body = req->body;
    m.state = QRAFT__MESSAGE_STATE__PENDING;
    m.max_retries = req->retries_set ? req->retries : p->default_retries;
    m.retry_delay = req->retry_delay;
    m.timeout_ms =
        req->timeout_ms != 0 ? req->timeout_ms : p->default_timeout_ms;
    m.callback = req->callback;
    m.failure_callback = req->failure_callback;
    m.queue = req->queue;
    m.dedup_id = req->dedup_id;
    m.retry_options = req->retry_options;
    m.schedule_id = req->schedule_id;
    m.topic_name = req->topic_name;
    m.endpoint_name = req->endpoint_name;
    m.n_labels = req->n_labels;
    m.labels = req->labels;
    m.caller_ip = req->caller_ip;
    m.flow_control_key = req->flow_control_key;
    m.flow_parallelism = req->flow_parallelism;
    m.flow_rate = req->flow_rate;
    m.flow_period_s = req->flow_period_s;
    m.not_before_ms = req->not_before_ms != 0 ? req->not_before_ms
                                              : ctx->now_ms + req->delay_ms;
    m.next_attempt_ms = m.not_before_ms;
    m.created_ms = ctx->now_ms;
    m.updated_ms = ctx->now_ms;
    m.shard = qr_fsm_shard_of(m.id);

    for (size_t i = 0; i < p->n_dedup_keys; i++) {
        rv = qr_store_dedup_put(ctx->txn, p->dedup_keys[i], m.id,
                                ctx->now_ms + p->dedup_window_ms);
        if (rv != 0) {
            return rv;
        }
    }
    if (m.queue[0] != '\0' && queues_on(ctx)) {
        /* Waits at the tail of its queue (created on first use) until its
         * turn; may be activated right away. */
        rv = queue_enqueue(ctx, &m, "published into its queue");
    } else {
        rv = qr_store_msg_put(ctx->txn, &m);
        if (rv == 0) {
            note_due(ctx, m.next_attempt_ms);
            rv = append_event(ctx, &m, "published");
        }
    }
    if (rv != 0) {
        return rv;
    }
    snprintf(res->message_id, sizeof res->message_id, "%s", m.id);
    return 0;
}

/* Loads the message a command names; a missing one is the command's result,
 * not an apply failure. Returns 1 when *out was loaded. */
static int load_target(struct apply_ctx *ctx,
                       const char *id,
                       Qraft__Message **out,
                       struct qr_apply_result *res)
{
    snprintf(res->message_id, sizeof res->message_id, "%s", id);
    int rv = qr_store_msg_get(ctx->txn, id, out);
    if (rv == QR_ENOTFOUND) {
        set_result(res, QR_ENOTFOUND, "message %s not found", id);
        return 0;
    }
    return rv == 0 ? 1 : rv;
}

static bool is_final(Qraft__MessageState s)
{
    return s == QRAFT__MESSAGE_STATE__DELIVERED ||
           s == QRAFT__MESSAGE_STATE__DEAD_LETTERED ||
           s == QRAFT__MESSAGE_STATE__CANCELLED;
}

static const char *state_word(Qraft__MessageState s)
{
    switch (s) {
        case QRAFT__MESSAGE_STATE__PENDING:
            return "pending";
        case QRAFT__MESSAGE_STATE__DELIVERING:
            return "delivering";
        case QRAFT__MESSAGE_STATE__RETRYING:
            return "retrying";
        case QRAFT__MESSAGE_STATE__DELIVERED:
            return "delivered";
        case QRAFT__MESSAGE_STATE__DEAD_LETTERED:
            return "dead_lettered";
        case QRAFT__MESSAGE_STATE__CANCELLED:
            return "cancelled";
        case QRAFT__MESSAGE_STATE__QUEUED:
            return "queued";
        default:
            return "unknown";
    }
}

/* Cancels m (unpacked, not final): out of its queue's FIFO if it waits
 * there, its slot given back if it holds one. */
static int cancel_message(struct apply_ctx *ctx,
                          const Qraft__Message *m,
                          const char *detail)
{
    Qraft__Message upd = *m;
    int rv = 0;
    if (m->state == QRAFT__MESSAGE_STATE__QUEUED) {
        rv = queue_unlink(ctx, m);
        upd.queue_seq = 0;
    }
    upd.state = QRAFT__MESSAGE_STATE__CANCELLED;
    upd.updated_ms = ctx->now_ms;
    if (rv == 0) {
        rv = queue_release(ctx, &upd);
    }
    if (rv == 0) {
        rv = qr_store_msg_put(ctx->txn, &upd);
    }
    if (rv == 0) {
        rv = append_event(ctx, &upd, detail);
    }
    return rv;
}

static int apply_cancel(struct apply_ctx *ctx,
                        const Qraft__Cancel *c,
                        struct qr_apply_result *res)
{
    Qraft__Message *m = NULL;
    int rv = load_target(ctx, c->message_id, &m, res);
    if (rv <= 0) {
        return rv;
    }
    if (m->state == QRAFT__MESSAGE_STATE__CANCELLED) {
        rv = 0; /* cancelling twice is the same as once */
        goto out;
    }
    if (is_final(m->state)) {
        set_result(res, QR_ECONFLICT, "message %s is already %s", m->id,
                   state_word(m->state));
        rv = 0;
        goto out;
    }
    rv = cancel_message(ctx, m, "cancelled");
out:
    qraft__message__free_unpacked(m, NULL);
    return rv;
}

static int apply_dlq_replay(struct apply_ctx *ctx,
                            const Qraft__DlqReplay *r,
                            struct qr_apply_result *res)
{
    Qraft__Message *m = NULL;
    int rv = load_target(ctx, r->message_id, &m, res);
    if (rv <= 0) {
        return rv;
    }
    if (m->state != QRAFT__MESSAGE_STATE__DEAD_LETTERED) {
        set_result(res, QR_ECONFLICT, "message %s is not in the DLQ (it is %s)",
                   m->id, state_word(m->state));
        rv = 0;
        goto out;
    }
    /* The same id again, with a fresh budget, due now. Changes go into a
     * shallow copy: the unpacked record's own pointers stay as unpack made
     * them, for free_unpacked. */
    Qraft__Message upd = *m;
    upd.state = QRAFT__MESSAGE_STATE__PENDING;
    upd.attempts = 0;
    upd.generation = m->generation + 1;
    upd.next_attempt_ms = ctx->now_ms;
    upd.dead_lettered_ms = 0;
    upd.dlq_hint = "";
    upd.updated_ms = ctx->now_ms;
    if (upd.queue[0] != '\0' && queues_on(ctx) &&
        upd.callback_kind == QRAFT__CALLBACK_KIND__NOT_A_CALLBACK) {
        /* A queue message goes back to the tail of its queue (created again
         * if it was deleted), so replays keep the queue's order rule. */
        rv = queue_enqueue(ctx, &upd, "replayed from the DLQ into its queue");
        goto out;
    }
    rv = qr_store_msg_put(ctx->txn, &upd);
    if (rv == 0) {
        note_due(ctx, upd.next_attempt_ms);
        rv = append_event(ctx, &upd, "replayed from the DLQ");
    }
out:
    qraft__message__free_unpacked(m, NULL);
    return rv;
}

static int apply_dlq_delete(struct apply_ctx *ctx,
                            const Qraft__DlqDelete *d,
                            struct qr_apply_result *res)
{
    Qraft__Message *m = NULL;
    int rv = load_target(ctx, d->message_id, &m, res);
    if (rv <= 0) {
        return rv;
    }
    if (m->state != QRAFT__MESSAGE_STATE__DEAD_LETTERED) {
        set_result(res, QR_ECONFLICT, "message %s is not in the DLQ (it is %s)",
                   m->id, state_word(m->state));
        rv = 0;
        goto out;
    }
    rv = qr_store_msg_delete(ctx->txn, m->id);
    if (rv == 0) {
        rv = append_event(ctx, m, "deleted from the DLQ");
    }
out:
    qraft__message__free_unpacked(m, NULL);
    return rv;
}

/* Creates the callback message of `kind` for src (after its attempt) with a
 * deterministic id: the first free one from qr_callback_seq. */
static int create_callback(struct apply_ctx *ctx,
                           const Qraft__DeliveryResults *batch,
                           const Qraft__Message *src,
                           const Qraft__DeliveryResult *r,
                           Qraft__CallbackKind kind)
{
    struct qr_callback cb;
    char id[QR_ID_BYTES];
    int rv =
        qr_callback_build(&cb, src, r, kind, ctx->now_ms,
                          batch->default_retries, batch->default_timeout_ms);
    if (rv != 0) {
        return rv;
    }
    uint32_t seq = qr_callback_seq(src->id, kind, r->attempt);
    for (;;) {
        Qraft__Message *taken = NULL;
        qr_command_message_id(id, ctx->now_ms, QR_CALLBACK_NODE_ID, seq++);
        rv = qr_store_msg_get(ctx->txn, id, &taken);
        if (rv == 0) {
            qraft__message__free_unpacked(taken, NULL);
            continue;
        }
        break;
    }
    if (rv == QR_ENOTFOUND) {
        cb.m.id = id;
        cb.m.shard = qr_fsm_shard_of(id);
        /* The callback of a queue message holds a slot of its queue too:
         * the queue's next message waits for the callbacks. */
        rv = queue_take_slot(ctx, src, &cb.m);
    }
    if (rv == 0) {
        rv = qr_store_msg_put(ctx->txn, &cb.m);
        note_due(ctx, cb.m.next_attempt_ms);
    }
    if (rv == 0) {
        rv = append_event(ctx, &cb.m,
                          kind == QRAFT__CALLBACK_KIND__FAILURE_CALLBACK
                              ? "failure callback created"
                              : "callback created");
    }
    qr_callback_free(&cb);
    return rv;
}

static void describe_failure(char *buf,
                             size_t len,
                             const Qraft__DeliveryResult *r,
                             const char *what)
{
    const Qraft__LastError *e = r->error;
    if (e != NULL && e->status != 0) {
        snprintf(buf, len, "%s: %s (HTTP %d)", what, e->category, e->status);
    } else if (e != NULL) {
        snprintf(buf, len, "%s: %s: %s", what, e->category, e->message);
    } else {
        snprintf(buf, len, "%s", what);
    }
}

/* One attempt's committed result. The fence: only a message still waiting
 * for that very attempt (pending or retrying, with `attempts` equal to the
 * attempt number, in the same generation: replays start a new one) takes
 * it; any other result is stale (a duplicate after a
 * re-send, or the message was cancelled) and changes nothing. */
static int apply_delivery_result(struct apply_ctx *ctx,
                                 const Qraft__DeliveryResults *batch,
                                 const Qraft__DeliveryResult *r)
{
    Qraft__Message *m = NULL;
    int rv = qr_store_msg_get(ctx->txn, r->message_id, &m);
    if (rv == QR_ENOTFOUND) {
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    bool waiting = m->state == QRAFT__MESSAGE_STATE__PENDING ||
                   m->state == QRAFT__MESSAGE_STATE__RETRYING;
    if (!waiting || m->attempts != r->attempt ||
        m->generation != r->generation ||
        r->outcome == QRAFT__ATTEMPT_OUTCOME__OUTCOME_UNSPECIFIED) {
        goto out;
    }

    /* Changes go into a shallow copy that may borrow from the command; the
     * unpacked record keeps its own pointers for free_unpacked. */
    Qraft__Message upd = *m;
    Qraft__LastError budget = QRAFT__LAST_ERROR__INIT;
    char detail[192];
    Qraft__AttemptOutcome outcome = r->outcome;
    upd.attempts++;
    upd.updated_ms = ctx->now_ms;
    /* Apply checks the budget itself: whatever a worker decided, a message
     * never gets more than 1 + max_retries attempts. */
    if (outcome == QRAFT__ATTEMPT_OUTCOME__OUTCOME_RETRY &&
        upd.attempts > upd.max_retries) {
        outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_DEAD;
        budget.category = "budget_exhausted";
        budget.status = r->error != NULL ? r->error->status : 0;
        budget.message = r->error != NULL ? r->error->message : "";
        budget.cause = r->error != NULL ? r->error->category : "";
    }
    switch (outcome) {
        case QRAFT__ATTEMPT_OUTCOME__OUTCOME_DELIVERED:
            upd.state = QRAFT__MESSAGE_STATE__DELIVERED;
            upd.delivered_ms = ctx->now_ms;
            upd.last_response = NULL;
            snprintf(detail, sizeof detail, "delivered (HTTP %d)",
                     r->response != NULL ? r->response->status : 0);
            break;
        case QRAFT__ATTEMPT_OUTCOME__OUTCOME_RETRY:
            upd.state = QRAFT__MESSAGE_STATE__RETRYING;
            upd.next_attempt_ms = ctx->now_ms + r->retry_delay_ms;
            upd.last_error = r->error;
            upd.last_response = r->response;
            describe_failure(detail, sizeof detail, r, "attempt failed");
            break;
        default:
            upd.state = QRAFT__MESSAGE_STATE__DEAD_LETTERED;
            upd.dead_lettered_ms = ctx->now_ms;
            upd.last_response = r->response;
            if (budget.category[0] != '\0') {
                upd.last_error = &budget;
                upd.dlq_hint =
                    "the retry budget is spent: check the "
                    "destination, then replay from the DLQ";
                snprintf(detail, sizeof detail,
                         "dead-lettered: budget_exhausted after %u attempts",
                         upd.attempts);
            } else {
                upd.last_error = r->error;
                upd.dlq_hint = r->hint;
                describe_failure(detail, sizeof detail, r, "dead-lettered");
            }
            break;
    }
    rv = 0;
    if (upd.callback[0] != '\0') {
        rv = create_callback(ctx, batch, &upd, r,
                             QRAFT__CALLBACK_KIND__CALLBACK);
    }
    if (rv == 0 && upd.failure_callback[0] != '\0' &&
        upd.state == QRAFT__MESSAGE_STATE__DEAD_LETTERED) {
        rv = create_callback(ctx, batch, &upd, r,
                             QRAFT__CALLBACK_KIND__FAILURE_CALLBACK);
    }
    if (upd.state == QRAFT__MESSAGE_STATE__DELIVERED) {
        /* A delivered message keeps its record (state, history) but not its
         * body: the replicated state stays lean. */
        upd.body.data = NULL;
        upd.body.len = 0;
    }
    if (rv == 0 && is_final(upd.state)) {
        rv = queue_release(ctx, &upd); /* after its callbacks took theirs */
    }
    if (rv == 0) {
        rv = qr_store_msg_put(ctx->txn, &upd);
    }
    if (rv == 0 && upd.state == QRAFT__MESSAGE_STATE__RETRYING) {
        note_due(ctx, upd.next_attempt_ms);
    }
    if (rv == 0) {
        rv = append_event(ctx, &upd, detail);
    }
out:
    qraft__message__free_unpacked(m, NULL);
    return rv;
}

static int apply_delivery_results(struct apply_ctx *ctx,
                                  const Qraft__DeliveryResults *batch)
{
    for (size_t i = 0; i < batch->n_results; i++) {
        const Qraft__DeliveryResult *r = batch->results[i];
        if (!qr_check_message_id(r->message_id)) {
            /* No message has such an id, so it changes nothing, as a
             * result for a message gone; skipping it keeps the batch's
             * other results. */
            continue;
        }
        int rv = apply_delivery_result(ctx, batch, r);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

/* Installs the first keys, or rotates: the stored next key becomes current
 * and the command's next key becomes next. Taking "current" from the store,
 * not the command, keeps two racing rotations from undoing each other. */
static int apply_set_signing_keys(struct apply_ctx *ctx,
                                  const Qraft__SetSigningKeys *s,
                                  struct qr_apply_result *res)
{
    Qraft__SigningKeys *stored = NULL;
    Qraft__SigningKeys keys = QRAFT__SIGNING_KEYS__INIT;
    int rv = qr_store_meta_get_msg(ctx->txn, QR_META_SIGNING_KEYS,
                                   &qraft__signing_keys__descriptor,
                                   (ProtobufCMessage **)&stored);
    if (rv != 0 && rv != QR_ENOTFOUND) {
        return rv;
    }
    if (s->keys == NULL || s->keys->next[0] == '\0' ||
        (stored == NULL && s->keys->current[0] == '\0')) {
        set_result(res, QR_EBADREQ, "signing keys are missing");
        rv = 0;
        goto out;
    }
    if (stored != NULL && !s->rotate) {
        rv = 0; /* the first keys win; a second proposal is a no-op */
        goto out;
    }
    keys.current = stored != NULL ? stored->next : s->keys->current;
    keys.next = s->keys->next;
    rv = qr_store_meta_put_msg(ctx->txn, QR_META_SIGNING_KEYS, &keys.base);
out:
    if (stored != NULL) {
        qraft__signing_keys__free_unpacked(stored, NULL);
    }
    return rv;
}

struct expired {
    uint64_t cutoff_ms;
    size_t max;
    char **ids;
    size_t n;
};

static int collect_expired(void *arg, const Qraft__Message *m)
{
    struct expired *e = arg;
    if (m->dead_lettered_ms >= e->cutoff_ms || e->n == e->max) {
        return 1; /* oldest first: the rest are younger */
    }
    e->ids[e->n] = strdup(m->id);
    if (e->ids[e->n] == NULL) {
        return -ENOMEM;
    }
    e->n++;
    return 0;
}

struct done_walk {
    uint64_t cutoff_ms;
    char **ids; /* finished and old enough: to delete */
    size_t n;
    size_t visited;
    char last[QR_ID_BYTES + 64];
};

static int collect_done(void *arg, const Qraft__Message *m)
{
    struct done_walk *w = arg;
    w->visited++;
    snprintf(w->last, sizeof w->last, "%s", m->id);
    bool done = m->state == QRAFT__MESSAGE_STATE__DELIVERED ||
                m->state == QRAFT__MESSAGE_STATE__CANCELLED;
    if (done && m->updated_ms < w->cutoff_ms) {
        w->ids[w->n] = strdup(m->id);
        if (w->ids[w->n] == NULL) {
            return -ENOMEM;
        }
        w->n++;
    }
    return 0;
}

/* Below QR_FEATURE_LEVEL_DONE_INDEX, what nodes before it do: a walk of
 * max messages in id order after scan_after_id; res->message_id tells the
 * leader where the walk stopped. */
static int prune_done_walk(struct apply_ctx *ctx,
                           const Qraft__Prune *p,
                           size_t max,
                           size_t *n_pruned,
                           struct qr_apply_result *res)
{
    struct done_walk w = {
        .cutoff_ms = ctx->now_ms - p->done_retention_ms,
        .ids = calloc(max, sizeof(char *)),
    };
    if (w.ids == NULL) {
        return -ENOMEM;
    }
    int rv =
        qr_store_msg_list(ctx->txn, QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED,
                          p->scan_after_id, max, collect_done, &w);
    for (size_t i = 0; i < w.n && rv == 0; i++) {
        rv = qr_store_msg_delete(ctx->txn, w.ids[i]);
    }
    for (size_t i = 0; i < w.n; i++) {
        free(w.ids[i]);
    }
    free(w.ids);
    /* A short walk reached the end: start over next time. */
    snprintf(res->message_id, sizeof res->message_id, "%s",
             w.visited == max ? w.last : "");
    *n_pruned = w.n;
    return rv;
}

/* Delivered and cancelled messages finished longer ago than the done
 * retention go, oldest first, from the store's `done` index: the work is
 * what is deleted, however many messages are pending, and the same on
 * every replica. (The command's scan_after_id is ignored.) Below
 * QR_FEATURE_LEVEL_DONE_INDEX, the walk older nodes do instead. */
static int prune_done(struct apply_ctx *ctx,
                      const Qraft__Prune *p,
                      size_t max,
                      size_t *n_pruned,
                      struct qr_apply_result *res)
{
    if (ctx->fsm->feature_level < QR_FEATURE_LEVEL_DONE_INDEX) {
        return prune_done_walk(ctx, p, max, n_pruned, res);
    }
    return qr_store_done_prune(ctx->txn, ctx->now_ms - p->done_retention_ms,
                               max, n_pruned);
}

/* Dead letters past the DLQ retention, finished messages past theirs and
 * events past theirs go, at most max of each kind. res->more tells the
 * leader a kind removed a full batch: more may be waiting. */
static int apply_prune(struct apply_ctx *ctx,
                       const Qraft__Prune *p,
                       struct qr_apply_result *res)
{
    int rv = 0;
    /* The walk's size is the command's, bounded here: what apply allocates
     * must not be the command's to choose. */
    size_t max = p->max_items < QR_FSM_MAX_PRUNE_ITEMS ? p->max_items
                                                       : QR_FSM_MAX_PRUNE_ITEMS;
    if (p->dlq_retention_ms != 0 && ctx->now_ms > p->dlq_retention_ms &&
        max > 0) {
        struct expired e = {
            .cutoff_ms = ctx->now_ms - p->dlq_retention_ms,
            .max = max,
            .ids = calloc(max, sizeof(char *)),
        };
        if (e.ids == NULL) {
            return -ENOMEM;
        }
        rv = qr_store_dlq_list(ctx->txn, NULL, max, collect_expired, &e);
        if (rv == 1) {
            rv = 0;
        }
        for (size_t i = 0; i < e.n && rv == 0; i++) {
            rv = qr_store_msg_delete(ctx->txn, e.ids[i]);
        }
        for (size_t i = 0; i < e.n; i++) {
            free(e.ids[i]);
        }
        free(e.ids);
        if (rv != 0) {
            return rv;
        }
        res->more = res->more || e.n == max;
    }
    if (p->done_retention_ms != 0 && ctx->now_ms > p->done_retention_ms &&
        max > 0) {
        size_t n = 0;
        rv = prune_done(ctx, p, max, &n, res);
        if (rv != 0) {
            return rv;
        }
        res->more = res->more || n == max;
    }
    if (p->events_retention_ms != 0 && ctx->now_ms > p->events_retention_ms &&
        max > 0) {
        size_t n = 0;
        rv = qr_store_event_prune(
            ctx->txn, ctx->now_ms - p->events_retention_ms, max, &n);
        res->more = res->more || (rv == 0 && n == max);
    }
    return rv;
}

static int apply_set_node_info(struct apply_ctx *ctx,
                               const Qraft__SetNodeInfo *s,
                               struct qr_apply_result *res)
{
    if (s->info == NULL || s->info->id == 0) {
        set_result(res, QR_EBADREQ, "node info without a node id");
        return 0;
    }
    char name[48];
    snprintf(name, sizeof name, "%s%" PRIu64, QR_META_NODE_PREFIX, s->info->id);
    return qr_store_meta_put_msg(ctx->txn, name, &s->info->base);
}

/* The feature level only goes up: a late or repeated proposal of a lower
 * level changes nothing. */
static int apply_set_feature_level(struct apply_ctx *ctx,
                                   const Qraft__SetFeatureLevel *l,
                                   struct qr_apply_result *res)
{
    uint64_t level = QR_FSM_BASE_FEATURE_LEVEL;
    int rv = qr_store_meta_get_u64(ctx->txn, QR_META_FEATURE_LEVEL, &level);
    if (rv != 0 && rv != QR_ENOTFOUND) {
        return rv;
    }
    if (l->level <= level) {
        set_result(res, QR_ECONFLICT, "feature level %u is not above %" PRIu64,
                   l->level, level);
        return 0;
    }
    rv = qr_store_meta_put_u64(ctx->txn, QR_META_FEATURE_LEVEL, l->level);
    if (rv == 0) {
        ctx->fsm->feature_level = l->level;
    }
    return rv;
}

/* A new shard map replaces the stored one only if its epoch is newer: an
 * assignment never goes back in time. */
static int apply_assign_shards(struct apply_ctx *ctx,
                               const Qraft__AssignShards *a,
                               struct qr_apply_result *res)
{
    Qraft__AssignShards *stored = NULL;
    int rv = qr_store_meta_get_msg(ctx->txn, QR_META_SHARDS,
                                   &qraft__assign_shards__descriptor,
                                   (ProtobufCMessage **)&stored);
    if (rv == 0) {
        uint64_t epoch = stored->epoch;
        qraft__assign_shards__free_unpacked(stored, NULL);
        if (a->epoch <= epoch) {
            set_result(res, QR_ECONFLICT,
                       "shard epoch %" PRIu64 " is not after %" PRIu64,
                       a->epoch, epoch);
            return 0;
        }
    } else if (rv != QR_ENOTFOUND) {
        return rv;
    }
    if (a->n_owners != QR_FSM_N_SHARDS) {
        set_result(res, QR_EBADREQ, "%zu shard owners for %u shards",
                   a->n_owners, QR_FSM_N_SHARDS);
        return 0;
    }
    return qr_store_meta_put_msg(ctx->txn, QR_META_SHARDS, &a->base);
}

/* Creates a queue, or sets its parallelism and paused flag; a larger
 * parallelism or a resume activates waiting messages at once. */
static int apply_queue_upsert(struct apply_ctx *ctx,
                              const Qraft__QueueUpsert *u,
                              struct qr_apply_result *res)
{
    Qraft__Queue *q = NULL;
    uint32_t parallelism = u->parallelism != 0 ? u->parallelism : 1;
    if (!queue_name_ok(u->name)) {
        set_result(res, QR_EBADREQ, "queue name must match [A-Za-z0-9._-]+");
        return 0;
    }
    if (u->max_parallelism != 0 && parallelism > u->max_parallelism) {
        set_result(res, QR_ECONFLICT, "parallelism %u is above the limit %u",
                   parallelism, u->max_parallelism);
        return 0;
    }
    int rv = queue_load(ctx, u->name, &q);
    if (rv < 0) {
        return rv;
    }
    if (rv == 0 && u->max_queues != 0) {
        size_t n = 0;
        rv = qr_store_queue_count(ctx->txn, &n);
        if (rv != 0) {
            return rv;
        }
        if (n >= u->max_queues) {
            set_result(res, QR_ECONFLICT, "too many queues (the limit is %u)",
                       u->max_queues);
            return 0;
        }
    }
    if (q == NULL) {
        rv = queue_load_or_create(ctx, u->name, &q);
        if (rv != 0) {
            return rv;
        }
    }
    q->parallelism = parallelism;
    q->paused = u->paused;
    q->updated_ms = ctx->now_ms;
    rv = queue_fill_and_put(ctx, q);
    qraft__queue__free_unpacked(q, NULL);
    return rv;
}

static int apply_queue_pause(struct apply_ctx *ctx,
                             const Qraft__QueuePause *p,
                             struct qr_apply_result *res)
{
    Qraft__Queue *q = NULL;
    int rv = queue_load_target(ctx, p->name, &q, res);
    if (rv <= 0) {
        return rv;
    }
    if (q->paused != p->paused) {
        q->paused = p->paused;
        q->updated_ms = ctx->now_ms;
    }
    rv = queue_fill_and_put(ctx, q);
    qraft__queue__free_unpacked(q, NULL);
    return rv;
}

/* Deletes a queue. Its waiting messages are cancelled (they would never
 * get a turn); active ones and their callbacks finish normally and no
 * longer count anywhere (their slot names a queue id that is gone). */
static int apply_queue_delete(struct apply_ctx *ctx,
                              const Qraft__QueueDelete *d,
                              struct qr_apply_result *res)
{
    Qraft__Queue *q = NULL;
    int rv = queue_load_target(ctx, d->name, &q, res);
    if (rv <= 0) {
        return rv;
    }
    for (;;) {
        Qraft__Message *m = NULL;
        rv = queue_head_load(ctx, q->name, &m);
        if (rv == QR_ENOTFOUND) {
            rv = 0;
            break;
        }
        if (rv == 0) {
            rv = cancel_message(ctx, m, "cancelled: its queue was deleted");
        }
        if (m != NULL) {
            qraft__message__free_unpacked(m, NULL);
        }
        if (rv != 0) {
            break;
        }
    }
    if (rv == 0) {
        rv = qr_store_queue_delete(ctx->txn, q->name);
    }
    qraft__queue__free_unpacked(q, NULL);
    return rv;
}

/* ---------------------------------------------------------------------------
 * Schedules. Apply evaluates no cron and reads no clock: the leader computed
 * every slot it proposes. */

static int apply_schedule_upsert(struct apply_ctx *ctx,
                                 const Qraft__ScheduleUpsert *u,
                                 struct qr_apply_result *res)
{
    const Qraft__Schedule *sc = u->schedule;
    int rv;

    if (sc == NULL || sc->id[0] == '\0' || sc->request == NULL) {
        set_result(res, QR_EBADREQ, "schedule without an id or a request");
        return 0;
    }
    /* A create seen within its dedup window answers the schedule it made
     * and changes nothing. */
    rv = dedup_seen(ctx, u->dedup_keys, u->n_dedup_keys, res);
    if (rv != 0) {
        return rv < 0 ? rv : 0;
    }
    Qraft__Schedule *old = NULL;
    rv = qr_store_schedule_get(ctx->txn, sc->id, &old);
    if (rv != 0 && rv != QR_ENOTFOUND) {
        return rv;
    }
    /* Replace wholesale, but keep when it was created and what it fired:
     * the slot fence must survive a replacement. */
    Qraft__Schedule upd = *sc;
    upd.created_ms = old != NULL ? old->created_ms : ctx->now_ms;
    upd.updated_ms = ctx->now_ms;
    upd.last_slot_ms = old != NULL ? old->last_slot_ms : 0;
    upd.n_last_fired = old != NULL ? old->n_last_fired : 0;
    upd.last_fired = old != NULL ? old->last_fired : NULL;
    rv = qr_store_schedule_put(ctx->txn, &upd);
    for (size_t i = 0; i < u->n_dedup_keys && rv == 0; i++) {
        rv = qr_store_dedup_put(ctx->txn, u->dedup_keys[i], sc->id,
                                ctx->now_ms + u->dedup_window_ms);
    }
    if (old != NULL) {
        qraft__schedule__free_unpacked(old, NULL);
    }
    snprintf(res->message_id, sizeof res->message_id, "%s", sc->id);
    return rv;
}

/* Whether rv, from a store call on schedule `id`, says there is no such
 * schedule (QR_ENOTFOUND, or QR_EBADREQ: an id no schedule can have); sets
 * that as the command's result then (not an apply failure). */
static bool schedule_missing(int rv,
                             const char *id,
                             struct qr_apply_result *res)
{
    if (rv != QR_ENOTFOUND && rv != QR_EBADREQ) {
        return false;
    }
    set_result(res, QR_ENOTFOUND, "schedule %.64s not found", id);
    return true;
}

static int apply_schedule_delete(struct apply_ctx *ctx,
                                 const Qraft__ScheduleDelete *d,
                                 struct qr_apply_result *res)
{
    int rv = qr_store_schedule_delete(ctx->txn, d->schedule_id);
    return schedule_missing(rv, d->schedule_id, res) ? 0 : rv;
}

static int apply_schedule_pause(struct apply_ctx *ctx,
                                const Qraft__SchedulePause *p,
                                struct qr_apply_result *res)
{
    Qraft__Schedule *sc = NULL;
    int rv = qr_store_schedule_get(ctx->txn, p->schedule_id, &sc);
    if (schedule_missing(rv, p->schedule_id, res)) {
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    if (sc->paused != p->paused) {
        /* Resuming starts from the slot after the leader's time: the slots
         * of the pause are skipped, not caught up. */
        sc->paused = p->paused;
        if (!p->paused) {
            sc->next_slot_ms = p->next_slot_ms;
        }
        sc->updated_ms = ctx->now_ms;
        rv = qr_store_schedule_put(ctx->txn, sc);
    }
    qraft__schedule__free_unpacked(sc, NULL);
    return rv;
}

/* First sequence number of a tick's message id: FNV-1a of the schedule id,
 * so ticks of different schedules in the same minute rarely probe. */
static uint32_t schedule_seq(const char *schedule_id)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)schedule_id; *p; p++) {
        h ^= *p;
        h *= 16777619u;
    }
    return h;
}

/* One tick: the fence (not paused, slot_ms at or after the stored next slot
 * and after the last fired one, and due at the entry's time) makes a slot
 * fire at most once, however many times and by whichever leader it is
 * proposed. The message goes through apply_publish like any publish, with
 * an id derived from (schedule, slot) and schedule_id set. */
static int apply_schedule_fire(struct apply_ctx *ctx,
                               const Qraft__ScheduleFire *f,
                               struct qr_apply_result *res)
{
    Qraft__Schedule *sc = NULL;
    int rv = qr_store_schedule_get(ctx->txn, f->schedule_id, &sc);
    if (rv == QR_ENOTFOUND || rv == QR_EBADREQ) {
        set_result(res, QR_ENOTFOUND, "schedule %.64s not found",
                   f->schedule_id);
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    if (sc->paused || sc->request == NULL || f->slot_ms < sc->next_slot_ms ||
        f->slot_ms <= sc->last_slot_ms || f->slot_ms > ctx->now_ms ||
        f->next_slot_ms <= f->slot_ms) {
        set_result(res, QR_ECONFLICT,
                   "schedule %.64s: slot %" PRIu64 " is not due or fired",
                   sc->id, f->slot_ms);
        goto out;
    }
    /* A schedule to a url group fans out, at each tick, to the endpoints
     * the group has at this point of the log (replicated state, so every
     * replica creates the same messages); a group deleted since then
     * yields none. */
    Qraft__UrlGroup *g = NULL;
    size_t n = 1;
    if (sc->request->topic_name[0] != '\0') {
        rv = qr_store_group_get(ctx->txn, sc->request->topic_name, &g);
        if (rv != 0 && rv != QR_ENOTFOUND) {
            goto out;
        }
        n = rv == 0 ? g->n_endpoints : 0;
    }
    Qraft__ScheduleFired *fired = calloc(n + 1, sizeof *fired);
    Qraft__ScheduleFired **fired_ptrs = calloc(n + 1, sizeof *fired_ptrs);
    char(*ids)[QR_ID_BYTES] = calloc(n + 1, sizeof *ids);
    if (fired == NULL || fired_ptrs == NULL || ids == NULL) {
        rv = -ENOMEM;
        goto out_fired;
    }
    uint32_t seq = schedule_seq(sc->id);
    for (size_t i = 0; i < n; i++) {
        for (;;) {
            Qraft__Message *taken = NULL;
            qr_command_message_id(ids[i], f->slot_ms, QR_CALLBACK_NODE_ID,
                                  seq++);
            rv = qr_store_msg_get(ctx->txn, ids[i], &taken);
            if (rv != 0) {
                break;
            }
            qraft__message__free_unpacked(taken, NULL);
        }
        if (rv != QR_ENOTFOUND) {
            goto out_fired;
        }
        Qraft__PublishRequest req = *sc->request;
        req.schedule_id = sc->id;
        if (g != NULL) {
            req.url = g->endpoints[i]->url;
            req.endpoint_name = g->endpoints[i]->name;
        }
        Qraft__Publish p = QRAFT__PUBLISH__INIT;
        p.message_id = ids[i];
        p.request = &req;
        p.default_retries = f->default_retries;
        p.default_timeout_ms = f->default_timeout_ms;
        rv = apply_publish(ctx, &p, res);
        if (rv != 0) {
            goto out_fired;
        }
        qraft__schedule_fired__init(&fired[i]);
        fired[i].message_id = ids[i];
        fired_ptrs[i] = &fired[i];
    }
    Qraft__Schedule upd = *sc;
    upd.last_slot_ms = f->slot_ms;
    upd.next_slot_ms = f->next_slot_ms;
    upd.n_last_fired = n;
    upd.last_fired = fired_ptrs;
    rv = qr_store_schedule_put(ctx->txn, &upd);
out_fired:
    free(ids);
    free(fired_ptrs);
    free(fired);
    if (g != NULL) {
        qraft__url_group__free_unpacked(g, NULL);
    }
out:
    qraft__schedule__free_unpacked(sc, NULL);
    return rv;
}

/* URL groups. The command is checked again here with the same pure checks
 * the leader ran (command.c): a bad one is refused, never half applied. */
static bool group_name_ok(const char *name)
{
    return strlen(name) <= QR_FSM_MAX_GROUP_NAME_BYTES &&
           qr_command_is_name(name);
}

/* Whether rv, from a store call on url group `name`, says there is no such
 * group; sets that as the command's result then (not an apply failure). */
static bool group_missing(int rv, const char *name, struct qr_apply_result *res)
{
    if (rv != QR_ENOTFOUND) {
        return false;
    }
    set_result(res, QR_ENOTFOUND, "url group '%.64s' not found", name);
    return true;
}

static Qraft__UrlGroupEndpoint *find_endpoint(Qraft__UrlGroupEndpoint **eps,
                                              size_t n,
                                              const char *name,
                                              const char *url,
                                              size_t *at)
{
    for (size_t i = 0; i < n; i++) {
        bool hit = name != NULL ? strcmp(eps[i]->name, name) == 0
                                : strcmp(eps[i]->url, url) == 0;
        if (hit) {
            *at = i;
            return eps[i];
        }
    }
    return NULL;
}

static int apply_group_add(struct apply_ctx *ctx,
                           const Qraft__GroupAddEndpoints *a,
                           struct qr_apply_result *res)
{
    Qraft__UrlGroup *stored = NULL;
    Qraft__UrlGroupEndpoint **eps = NULL;
    size_t n = 0;

    if (!group_name_ok(a->group) || a->n_endpoints == 0) {
        set_result(res, QR_EBADREQ, "invalid url group change");
        return 0;
    }
    int rv = qr_store_group_get(ctx->txn, a->group, &stored);
    if (rv != 0 && rv != QR_ENOTFOUND) {
        return rv;
    }
    size_t n_old = stored != NULL ? stored->n_endpoints : 0;
    eps = calloc(n_old + a->n_endpoints, sizeof *eps);
    if (eps == NULL) {
        rv = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n_old; i++) {
        eps[n++] = stored->endpoints[i];
    }
    rv = 0;
    for (size_t i = 0; i < a->n_endpoints; i++) {
        Qraft__UrlGroupEndpoint *e = a->endpoints[i];
        size_t at = 0;
        if (e->url[0] == '\0' ||
            (e->name[0] != '\0' && !group_name_ok(e->name))) {
            set_result(res, QR_EBADREQ, "invalid endpoint %zu", i + 1);
            goto out;
        }
        /* The same URL replaces; a name held by another URL is refused. */
        Qraft__UrlGroupEndpoint *named =
            e->name[0] != '\0' ? find_endpoint(eps, n, e->name, NULL, &at)
                               : NULL;
        if (named != NULL && strcmp(named->url, e->url) != 0) {
            set_result(res, QR_EBADREQ,
                       "endpoint name '%.64s' is taken in url group '%.64s' "
                       "by another url",
                       e->name, a->group);
            goto out;
        }
        if (find_endpoint(eps, n, NULL, e->url, &at) != NULL) {
            eps[at] = e;
        } else {
            eps[n++] = e;
        }
    }
    if (n > a->max_endpoints) {
        set_result(res, QR_EBADREQ,
                   "url group '%.64s' would have %zu endpoints; the limit is "
                   "%" PRIu32,
                   a->group, n, a->max_endpoints);
        goto out;
    }
    Qraft__UrlGroup g = QRAFT__URL_GROUP__INIT;
    g.name = a->group;
    g.created_ms = stored != NULL ? stored->created_ms : ctx->now_ms;
    g.updated_ms = ctx->now_ms;
    g.n_endpoints = n;
    g.endpoints = eps;
    rv = qr_store_group_put(ctx->txn, &g);
out:
    free(eps);
    if (stored != NULL) {
        qraft__url_group__free_unpacked(stored, NULL);
    }
    return rv;
}

static int apply_group_remove(struct apply_ctx *ctx,
                              const Qraft__GroupRemoveEndpoints *r,
                              struct qr_apply_result *res)
{
    Qraft__UrlGroup *stored = NULL;
    Qraft__UrlGroupEndpoint **eps = NULL;

    if (!group_name_ok(r->group) || r->n_endpoints == 0) {
        set_result(res, QR_EBADREQ, "invalid url group change");
        return 0;
    }
    int rv = qr_store_group_get(ctx->txn, r->group, &stored);
    if (group_missing(rv, r->group, res)) {
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    size_t n = stored->n_endpoints;
    eps = calloc(n > 0 ? n : 1, sizeof *eps);
    if (eps == NULL) {
        rv = -ENOMEM;
        goto out;
    }
    memcpy(eps, stored->endpoints, n * sizeof *eps);
    for (size_t i = 0; i < r->n_endpoints; i++) {
        const Qraft__UrlGroupEndpoint *e = r->endpoints[i];
        bool by_name = e->name[0] != '\0';
        size_t at = 0;
        if (!by_name && e->url[0] == '\0') {
            set_result(res, QR_EBADREQ, "invalid endpoint %zu", i + 1);
            goto out;
        }
        if (find_endpoint(eps, n, by_name ? e->name : NULL, e->url, &at) ==
            NULL) {
            set_result(res, QR_ENOTFOUND,
                       "url group '%.64s' has no endpoint %s '%.64s'", r->group,
                       by_name ? "named" : "with url",
                       by_name ? e->name : e->url);
            goto out;
        }
        memmove(eps + at, eps + at + 1, (n - at - 1) * sizeof *eps);
        n--;
    }
    if (n == 0) {
        rv = qr_store_group_delete(ctx->txn, r->group);
        goto out;
    }
    Qraft__UrlGroup g = *stored;
    g.updated_ms = ctx->now_ms;
    g.n_endpoints = n;
    g.endpoints = eps;
    rv = qr_store_group_put(ctx->txn, &g);
out:
    free(eps);
    qraft__url_group__free_unpacked(stored, NULL);
    return rv;
}

static int apply_group_delete(struct apply_ctx *ctx,
                              const Qraft__GroupDelete *d,
                              struct qr_apply_result *res)
{
    if (!group_name_ok(d->group)) {
        set_result(res, QR_EBADREQ, "invalid url group name");
        return 0;
    }
    int rv = qr_store_group_delete(ctx->txn, d->group);
    return group_missing(rv, d->group, res) ? 0 : rv;
}

static int apply_command(struct apply_ctx *ctx,
                         const Qraft__Command *cmd,
                         struct qr_apply_result *res)
{
    switch (cmd->body_case) {
        case QRAFT__COMMAND__BODY_PUBLISH:
            return apply_publish(ctx, cmd->publish, res);
        case QRAFT__COMMAND__BODY_CANCEL:
            return apply_cancel(ctx, cmd->cancel, res);
        case QRAFT__COMMAND__BODY_DLQ_REPLAY:
            return apply_dlq_replay(ctx, cmd->dlq_replay, res);
        case QRAFT__COMMAND__BODY_DLQ_DELETE:
            return apply_dlq_delete(ctx, cmd->dlq_delete, res);
        case QRAFT__COMMAND__BODY_SET_SIGNING_KEYS:
            return apply_set_signing_keys(ctx, cmd->set_signing_keys, res);
        case QRAFT__COMMAND__BODY_DELIVERY_RESULTS:
            return apply_delivery_results(ctx, cmd->delivery_results);
        case QRAFT__COMMAND__BODY_PRUNE:
            return apply_prune(ctx, cmd->prune, res);
        case QRAFT__COMMAND__BODY_SET_NODE_INFO:
            return apply_set_node_info(ctx, cmd->set_node_info, res);
        case QRAFT__COMMAND__BODY_ASSIGN_SHARDS:
            return apply_assign_shards(ctx, cmd->assign_shards, res);
        case QRAFT__COMMAND__BODY_SET_FEATURE_LEVEL:
            return apply_set_feature_level(ctx, cmd->set_feature_level, res);
        case QRAFT__COMMAND__BODY_QUEUE_UPSERT:
            return apply_queue_upsert(ctx, cmd->queue_upsert, res);
        case QRAFT__COMMAND__BODY_QUEUE_PAUSE:
            return apply_queue_pause(ctx, cmd->queue_pause, res);
        case QRAFT__COMMAND__BODY_QUEUE_DELETE:
            return apply_queue_delete(ctx, cmd->queue_delete, res);
        case QRAFT__COMMAND__BODY_SCHEDULE_UPSERT:
            return apply_schedule_upsert(ctx, cmd->schedule_upsert, res);
        case QRAFT__COMMAND__BODY_SCHEDULE_DELETE:
            return apply_schedule_delete(ctx, cmd->schedule_delete, res);
        case QRAFT__COMMAND__BODY_SCHEDULE_PAUSE:
            return apply_schedule_pause(ctx, cmd->schedule_pause, res);
        case QRAFT__COMMAND__BODY_SCHEDULE_FIRE:
            return apply_schedule_fire(ctx, cmd->schedule_fire, res);
        case QRAFT__COMMAND__BODY_GROUP_ADD_ENDPOINTS:
            return apply_group_add(ctx, cmd->group_add_endpoints, res);
        case QRAFT__COMMAND__BODY_GROUP_REMOVE_ENDPOINTS:
            return apply_group_remove(ctx, cmd->group_remove_endpoints, res);
        case QRAFT__COMMAND__BODY_GROUP_DELETE:
            return apply_group_delete(ctx, cmd->group_delete, res);
        default:
            /* A kind this node does not know: feature levels should make
             * this impossible; skipping it would diverge from the nodes that
             * do know it. */
            return QR_EPROTO;
    }
}

static void fatal(struct qr_fsm *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void fatal(struct qr_fsm *f, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    f->failed = true;
    QR_ERROR("fsm", "%s", why);
    if (f->on_fatal != NULL) {
        f->on_fatal(f->on_fatal_data, why);
        return;
    }
    QR_ERROR("fsm", "stopping: this replica must not diverge from the others");
    exit(EXIT_FAILURE);
}

/* Whether a command that failed with rv failed for what it says, given this
 * store, rather than for what this node is going through. Store calls
 * answer QR_EBADREQ for a key they cannot hold (empty, too long) and never
 * fail the store for it; the other codes here are the results apply itself
 * gives. Every replica holds the same store at this entry, so every replica
 * decides alike. Anything else (an I/O error, a failed store, a corrupt
 * record, no memory) is this node's trouble. */
static bool fails_command(const struct qr_fsm *f, int rv)
{
    if (qr_store_failed(f->store)) {
        return false;
    }
    return rv == QR_EBADREQ || rv == QR_ENOTFOUND || rv == QR_ECONFLICT ||
           rv == QR_ETOOLARGE;
}

/* One pass over the commands of an entry in a fresh write transaction,
 * skipping those marked in `refused`. Returns 0 with the transaction open
 * in ctx->txn, or the failing command's code with the transaction aborted
 * and *failed_at set to its position. */
static int apply_pass(struct apply_ctx *ctx,
                      const Qraft__Entry *entry,
                      const bool *refused,
                      struct qr_apply_result *results,
                      size_t *failed_at)
{
    struct qr_fsm *f = ctx->fsm;
    int rv = qr_store_txn_begin(f->store, true, &ctx->txn);
    if (rv != 0) {
        *failed_at = SIZE_MAX;
        return rv;
    }
    for (size_t i = 0; i < entry->n_commands; i++) {
        if (refused[i]) {
            continue; /* its result says why; it changes nothing */
        }
        memset(&results[i], 0, sizeof results[i]);
        ctx->position = (uint32_t)i;
        rv = apply_command(ctx, entry->commands[i], &results[i]);
        if (rv != 0) {
            qr_store_txn_abort(ctx->txn);
            ctx->txn = NULL;
            *failed_at = i;
            return rv;
        }
    }
    return 0;
}

/* One attempt at an entry with the store as it is: its commands (refusing,
 * pass after pass, those that fail for what they hold), its bookkeeping,
 * and the commit. Returns 0 once committed. On failure the transaction is
 * gone, the feature level is back at level_before and *failed_at names the
 * command that failed (SIZE_MAX: not a command's doing). */
static int apply_entry(struct apply_ctx *ctx,
                       const Qraft__Entry *entry,
                       uint32_t level_before,
                       bool *refused,
                       struct qr_apply_result *results,
                       size_t *failed_at)
{
    struct qr_fsm *f = ctx->fsm;
    int rv;
    for (;;) {
        ctx->n_events = 0;
        ctx->earliest_due_ms = UINT64_MAX;
        f->feature_level = level_before;
        rv = apply_pass(ctx, entry, refused, results, failed_at);
        if (rv == 0) {
            break;
        }
        if (*failed_at == SIZE_MAX || !fails_command(f, rv)) {
            f->feature_level = level_before;
            return rv;
        }
        assert(*failed_at < entry->n_commands && !refused[*failed_at]);
        refused[*failed_at] = true;
        /* The store names what it refused; a code apply met otherwise
         * (a record not found where it had to be) speaks for itself. */
        const char *why =
            rv == QR_EBADREQ ? qr_store_errmsg(f->store) : qr_strerror(rv);
        memset(&results[*failed_at], 0, sizeof results[*failed_at]);
        set_result(&results[*failed_at], rv, "%s", why);
        QR_WARN("fsm",
                "entry %" PRIu64
                " command %zu refused: %s (%s); every "
                "replica refuses it alike",
                ctx->index, *failed_at, qr_strerror(rv), why);
    }
    *failed_at = SIZE_MAX;
    size_t n_pruned = 0;
    rv = qr_store_dedup_prune(ctx->txn, ctx->now_ms, DEDUP_PRUNE_PER_ENTRY,
                              &n_pruned);
    if (rv == 0) {
        rv = qr_store_meta_put_u64(ctx->txn, QR_META_APPLIED_INDEX, ctx->index);
    }
    if (rv == 0 && ctx->now_ms > f->last_time_ms) {
        rv = qr_store_meta_put_u64(ctx->txn, QR_META_LAST_TIME, ctx->now_ms);
    }
    if (rv != 0) {
        qr_store_txn_abort(ctx->txn);
    } else {
        rv = qr_store_txn_commit(ctx->txn);
    }
    ctx->txn = NULL;
    if (rv != 0) {
        f->feature_level = level_before;
    }
    return rv;
}

/* Applies one committed entry.
 *
 * Apply is total over the entry's content: a command that fails for what it
 * holds (fails_command) is refused, the same way on every replica. The
 * transaction is abandoned and the entry applied again from its start
 * without that command, so a refused command leaves nothing behind, however
 * far it got; its result (status and the store's words) goes to the
 * proposer, who answers the client with a 4xx. Each pass refuses one more
 * command or finishes, so an entry of n commands takes at most n + 1
 * passes, and only entries holding a refused command take more than one.
 *
 * A full map (QR_ENOSPACE) is this node's, not the entry's: another replica
 * may have had room. The map grows and the entry is applied again, once.
 *
 * Only what is not a property of the entry stops this replica (the fatal
 * hook): an I/O or LMDB error, a failed store, a corrupt record, no memory,
 * a map that cannot grow, an entry that does not decode or a command kind
 * this version does not know. Skipping any of those would let this replica
 * diverge. */
static int fsm_apply(struct raft_fsm *rf,
                     const struct raft_buffer *buf,
                     void **result)
{
    struct qr_fsm *f = rf->data;
    uint64_t index = raft_last_applied(f->raft) + 1;
    Qraft__Entry *entry = NULL;
    struct qr_apply_result *results = NULL;
    bool *refused = NULL;
    struct apply_ctx ctx = {.fsm = f, .index = index};
    size_t failed_at = SIZE_MAX;
    int rv;

    *result = NULL;
    if (f->failed) {
        return RAFT_IOERR;
    }
    if (index <= f->applied_index) {
        return 0; /* applied before a restart: the store has it already */
    }

    rv = qr_command_decode_entry(buf->base, buf->len, &entry);
    if (rv != 0) {
        fatal(f, "entry %" PRIu64 " cannot be decoded: %s", index,
              qr_strerror(rv));
        return RAFT_IOERR;
    }
    size_t n_slots = entry->n_commands > 0 ? entry->n_commands : 1;
    results = calloc(n_slots, sizeof *results);
    refused = calloc(n_slots, sizeof *refused);
    if (results == NULL || refused == NULL) {
        fatal(f, "entry %" PRIu64 ": out of memory", index);
        rv = -ENOMEM;
        goto out;
    }
    ctx.now_ms = entry->proposed_at_ms;

    uint32_t level_before = f->feature_level;
    rv = apply_entry(&ctx, entry, level_before, refused, results, &failed_at);
    if (rv == QR_ENOSPACE) {
        int grown = qr_store_grow(f->store, 0);
        QR_WARN("fsm", "entry %" PRIu64 ": the store's map is full: %s", index,
                grown == 0 ? "grown; applying the entry again"
                           : "it cannot grow now");
        if (grown == 0) {
            rv = apply_entry(&ctx, entry, level_before, refused, results,
                             &failed_at);
        }
    }
    if (rv != 0) {
        if (failed_at == SIZE_MAX) {
            fatal(f, "entry %" PRIu64 ": %s (%s)", index, qr_strerror(rv),
                  qr_store_errmsg(f->store));
        } else {
            fatal(f, "entry %" PRIu64 " command %zu: %s (%s)", index, failed_at,
                  qr_strerror(rv), qr_store_errmsg(f->store));
        }
        goto out;
    }
    f->applied_index = index;
    if (ctx.now_ms > f->last_time_ms) {
        f->last_time_ms = ctx.now_ms;
    }
    if (f->on_applied != NULL) {
        f->on_applied(f->on_applied_data, index, results, entry->n_commands);
    }
    if (f->on_due != NULL && ctx.earliest_due_ms != UINT64_MAX) {
        f->on_due(f->on_due_data, ctx.earliest_due_ms);
    }

out:
    free(refused);
    free(results);
    qraft__entry__free_unpacked(entry, NULL);
    return rv == 0 ? 0 : RAFT_IOERR;
}

/* A snapshot is the store's, seen by one read transaction; raft writes its
 * buffers from its thread pool and snapshot_finalize (fsm version 2)
 * closes it. Once the cluster is at QR_FEATURE_LEVEL_IMAGE_SNAPSHOTS the
 * snapshot is a page image of the environment (qr_store_snapshot_open_image:
 * a header and two meta pages copied, the rest pointing into the map), so
 * the loop blocks for a constant time whatever the state holds. Below it, a
 * replica may not know images: the pairs format (qr_store_snapshot_open,
 * a walk of every key, long values pointing into the map). The level is
 * replicated, so every node of a cluster at that level restores images. */
static int fsm_snapshot(struct raft_fsm *rf,
                        struct raft_buffer *bufs[],
                        unsigned *n_bufs)
{
    struct qr_fsm *f = rf->data;
    uint64_t start_ms = qr_clock_mono_ms();
    bool image = f->feature_level >= QR_FEATURE_LEVEL_IMAGE_SNAPSHOTS;

    if (f->snapshot != NULL) {
        QR_ERROR("fsm", "snapshot: one is still being written");
        return RAFT_BUSY;
    }
    int rv = image ? qr_store_snapshot_open_image(f->store, &f->snapshot)
                   : qr_store_snapshot_open(f->store, &f->snapshot);
    if (rv != 0) {
        QR_ERROR("fsm", "snapshot: %s: %s", qr_strerror(rv),
                 qr_store_errmsg(f->store));
        return rv == QR_ECONFLICT ? RAFT_BUSY : RAFT_IOERR;
    }
    size_t n;
    size_t total;
    const struct qr_store_snap_buf *sb =
        qr_store_snapshot_bufs(f->snapshot, &n, &total);
    if (n > UINT_MAX) {
        QR_ERROR("fsm", "snapshot: %zu buffers", n);
        qr_store_snapshot_close(f->snapshot);
        f->snapshot = NULL;
        return RAFT_TOOBIG;
    }
    *bufs = raft_malloc(n * sizeof **bufs);
    if (*bufs == NULL) {
        qr_store_snapshot_close(f->snapshot);
        f->snapshot = NULL;
        return RAFT_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        /* raft only reads them. */
        (*bufs)[i].base = (void *)sb[i].base;
        (*bufs)[i].len = sb[i].len;
    }
    *n_bufs = (unsigned)n;
    QR_INFO("fsm",
            "snapshot at index %" PRIu64
            " (%s): %zu bytes in %zu buffers, "
            "%" PRIu64 " ms",
            f->applied_index, image ? "image" : "pairs", total, n,
            qr_clock_mono_ms() - start_ms);
    return 0;
}

static int fsm_snapshot_finalize(struct raft_fsm *rf,
                                 struct raft_buffer *bufs[],
                                 unsigned *n_bufs)
{
    struct qr_fsm *f = rf->data;
    raft_free(*bufs);
    *bufs = NULL;
    *n_bufs = 0;
    qr_store_snapshot_close(f->snapshot);
    f->snapshot = NULL;
    return 0;
}

static int load_indexes(struct qr_fsm *f)
{
    struct qr_store_txn *txn = NULL;
    int rv = qr_store_txn_begin(f->store, false, &txn);
    if (rv != 0) {
        return rv;
    }
    f->applied_index = 0;
    f->last_time_ms = 0;
    uint64_t level = QR_FSM_BASE_FEATURE_LEVEL;
    rv = qr_store_meta_get_u64(txn, QR_META_APPLIED_INDEX, &f->applied_index);
    if (rv == 0 || rv == QR_ENOTFOUND) {
        rv = qr_store_meta_get_u64(txn, QR_META_LAST_TIME, &f->last_time_ms);
    }
    if (rv == 0 || rv == QR_ENOTFOUND) {
        rv = qr_store_meta_get_u64(txn, QR_META_FEATURE_LEVEL, &level);
    }
    qr_store_txn_abort(txn);
    f->feature_level = (uint32_t)level;
    return rv == QR_ENOTFOUND ? 0 : rv;
}

/* On success the buffer is ours to free (the raft library's contract). */
static int fsm_restore(struct raft_fsm *rf, struct raft_buffer *buf)
{
    struct qr_fsm *f = rf->data;
    uint64_t start_ms = qr_clock_mono_ms();
    int rv = qr_store_restore(f->store, buf->base, buf->len);
    if (rv != 0) {
        QR_ERROR("fsm", "restore: %s: %s", qr_strerror(rv),
                 qr_store_errmsg(f->store));
        return rv == QR_ECONFLICT ? RAFT_BUSY : RAFT_CORRUPT;
    }
    rv = load_indexes(f);
    if (rv != 0) {
        QR_ERROR("fsm", "restore: reading indexes: %s", qr_strerror(rv));
        return RAFT_CORRUPT;
    }
    QR_INFO("fsm",
            "restored a snapshot (%s) of %zu bytes at index %" PRIu64
            " in %" PRIu64 " ms",
            qr_store_snapshot_is_image(buf->base, buf->len) ? "image" : "pairs",
            buf->len, f->applied_index, qr_clock_mono_ms() - start_ms);
    raft_free(buf->base);
    return 0;
}

int qr_fsm_init(struct qr_fsm *f, struct qr_store *store)
{
    memset(f, 0, sizeof *f);
    f->store = store;
    f->raft_fsm.version = 2;
    f->raft_fsm.data = f;
    f->raft_fsm.apply = fsm_apply;
    f->raft_fsm.snapshot = fsm_snapshot;
    f->raft_fsm.snapshot_finalize = fsm_snapshot_finalize;
    f->raft_fsm.restore = fsm_restore;
    return load_indexes(f);
}

void qr_fsm_close(struct qr_fsm *f)
{
    qr_store_snapshot_close(f->snapshot);
    f->snapshot = NULL;
    f->store = NULL;
    f->raft = NULL;
}
