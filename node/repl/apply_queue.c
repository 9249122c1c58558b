/* Apply of the queue commands, and the queue machinery that publish,
 * cancel, DLQ replay and delivery results run through (fsm_int.h): FIFO
 * order, slots held by active messages and their callbacks, and activation
 * when a slot frees up. Owns the invariants written below; nothing else
 * writes a Queue record. */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "repl/fsm_int.h"

/*
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

bool qr_apply_queues_on(const struct qr_apply_ctx *ctx)
{
    return ctx->fsm->feature_level >= QR_FEATURE_LEVEL_QUEUES;
}

bool qr_apply_queue_name_ok(const char *name)
{
    return qr_command_is_name(name) &&
           strlen(name) <= QR_COMMAND_MAX_QUEUE_NAME_BYTES;
}

/* Loads queue `name`; 1 when *out was loaded, 0 when there is none. */
static int queue_load(struct qr_apply_ctx *ctx,
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
static int queue_load_target(struct qr_apply_ctx *ctx,
                             const char *name,
                             Qraft__Queue **out,
                             struct qr_apply_result *res)
{
    int rv = queue_load(ctx, name, out);
    if (rv == 0) {
        qr_apply_set_result(res, QR_ENOTFOUND, "queue %.64s not found", name);
    }
    return rv;
}

/* Loads the message at the head of queue `name`'s FIFO (new in *out).
 * Returns 0, QR_ENOTFOUND when the FIFO is empty, QR_ECORRUPT when it names
 * a message that is not stored, or a store error. */
static int queue_head_load(struct qr_apply_ctx *ctx,
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
static int queue_fill(struct qr_apply_ctx *ctx, Qraft__Queue *q)
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
            qr_apply_note_due(ctx, upd.next_attempt_ms);
            rv = qr_apply_event(ctx, &upd, "activated: its turn in the queue");
        }
        qraft__message__free_unpacked(m, NULL);
        if (rv != 0) {
            return rv;
        }
        q->active++;
        q->waiting--;
    }
    /* The invariant above, restored. */
    assert(q->paused || q->waiting == 0 || q->active >= q->parallelism);
    return 0;
}

/* The end of every change that may free a slot of q or resume it: lets q
 * fill (queue_fill), then stores it. The caller still frees q. */
static int queue_fill_and_put(struct qr_apply_ctx *ctx, Qraft__Queue *q)
{
    int rv = queue_fill(ctx, q);
    return rv == 0 ? qr_store_queue_put(ctx->txn, q) : rv;
}

/* Returns new in *out: the queue `name`, created (parallelism 1, running)
 * when it does not exist. A new queue's id comes from a meta counter. */
static int queue_load_or_create(struct qr_apply_ctx *ctx,
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

int qr_apply_queue_enqueue(struct qr_apply_ctx *ctx,
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
        rv = qr_apply_event(ctx, m, detail);
    }
    if (rv == 0) {
        rv = queue_fill_and_put(ctx, q);
    }
    qraft__queue__free_unpacked(q, NULL);
    return rv;
}

int qr_apply_queue_take_slot(struct qr_apply_ctx *ctx,
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

int qr_apply_queue_release(struct qr_apply_ctx *ctx, Qraft__Message *m)
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

int qr_apply_queue_unlink(struct qr_apply_ctx *ctx, const Qraft__Message *m)
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

/* Creates a queue, or sets its parallelism and paused flag; a larger
 * parallelism or a resume activates waiting messages at once. */
int qr_apply_queue_upsert(struct qr_apply_ctx *ctx,
                          const Qraft__QueueUpsert *u,
                          struct qr_apply_result *res)
{
    Qraft__Queue *q = NULL;
    uint32_t parallelism = u->parallelism != 0 ? u->parallelism : 1;
    if (!qr_apply_queue_name_ok(u->name)) {
        qr_apply_set_result(res, QR_EBADREQ,
                            "queue name must match [A-Za-z0-9._-]+");
        return 0;
    }
    if (u->max_parallelism != 0 && parallelism > u->max_parallelism) {
        qr_apply_set_result(res, QR_ECONFLICT,
                            "parallelism %u is above the limit %u", parallelism,
                            u->max_parallelism);
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
            qr_apply_set_result(res, QR_ECONFLICT,
                                "too many queues (the limit is %u)",
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

int qr_apply_queue_pause(struct qr_apply_ctx *ctx,
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
int qr_apply_queue_delete(struct qr_apply_ctx *ctx,
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
            rv = qr_apply_cancel_message(ctx, m,
                                         "cancelled: its queue was deleted");
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
