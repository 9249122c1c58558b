#include "repl/fsm.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/clock.h"
#include "lib/err.h"
#include "lib/hash.h"
#include "lib/logger.h"
#include "lib/metrics.h"
#include "repl/fsm_int.h"

/* Expired dedup records pruned per applied entry: bounded work per entry. */
#define DEDUP_PRUNE_PER_ENTRY 64

uint32_t qr_fsm_shard_of(const char *message_id)
{
    assert(message_id != NULL);
    return qr_hash_fnv1a32(message_id) % QR_FSM_N_SHARDS;
}

void qr_apply_set_result(struct qr_apply_result *res,
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

int qr_apply_event(struct qr_apply_ctx *ctx,
                   const Qraft__Message *m,
                   const char *detail)
{
    assert(ctx->txn != NULL); /* only inside apply's write transaction */
    Qraft__Event e = QRAFT__EVENT__INIT;
    e.message_id = m->id;
    e.time_ms = ctx->now_ms;
    e.state = m->state;
    e.attempt = m->attempts;
    e.detail = (char *)detail;
    return qr_store_event_append(ctx->txn, ctx->index, ctx->n_events++, &e);
}

static int apply_command(struct qr_apply_ctx *ctx,
                         const Qraft__Command *cmd,
                         struct qr_apply_result *res)
{
    /* Every command applies inside the entry's write transaction, which
     * also records the entry's index (fsm.h). */
    assert(ctx->txn != NULL && ctx->index > ctx->fsm->applied_index);
    switch (cmd->body_case) {
        case QRAFT__COMMAND__BODY_PUBLISH:
            return qr_apply_publish(ctx, cmd->publish, res);
        case QRAFT__COMMAND__BODY_CANCEL:
            return qr_apply_cancel(ctx, cmd->cancel, res);
        case QRAFT__COMMAND__BODY_WORKFLOW_END:
            return qr_apply_workflow_end(ctx, cmd->workflow_end, res);
        case QRAFT__COMMAND__BODY_WAIT_CREATE:
            return qr_apply_wait_create(ctx, cmd->wait_create, res);
        case QRAFT__COMMAND__BODY_NOTIFY:
            return qr_apply_notify(ctx, cmd->notify, res);
        case QRAFT__COMMAND__BODY_WAIT_TIMEOUT:
            return qr_apply_wait_timeout(ctx, cmd->wait_timeout, res);
        case QRAFT__COMMAND__BODY_WORKFLOW_RESUME:
            return qr_apply_workflow_resume(ctx, cmd->workflow_resume, res);
        case QRAFT__COMMAND__BODY_FLOW_CONTROL_UPDATE:
            return qr_apply_flow_control_update(ctx, cmd->flow_control_update,
                                                res);
        case QRAFT__COMMAND__BODY_DLQ_REPLAY:
            return qr_apply_dlq_replay(ctx, cmd->dlq_replay, res);
        case QRAFT__COMMAND__BODY_DLQ_DELETE:
            return qr_apply_dlq_delete(ctx, cmd->dlq_delete, res);
        case QRAFT__COMMAND__BODY_SET_SIGNING_KEYS:
            return qr_apply_set_signing_keys(ctx, cmd->set_signing_keys, res);
        case QRAFT__COMMAND__BODY_DELIVERY_RESULTS:
            return qr_apply_delivery_results(ctx, cmd->delivery_results);
        case QRAFT__COMMAND__BODY_PRUNE:
            return qr_apply_prune(ctx, cmd->prune, res);
        case QRAFT__COMMAND__BODY_SET_NODE_INFO:
            return qr_apply_set_node_info(ctx, cmd->set_node_info, res);
        case QRAFT__COMMAND__BODY_ASSIGN_SHARDS:
            return qr_apply_assign_shards(ctx, cmd->assign_shards, res);
        case QRAFT__COMMAND__BODY_SET_FEATURE_LEVEL:
            return qr_apply_set_feature_level(ctx, cmd->set_feature_level, res);
        case QRAFT__COMMAND__BODY_QUEUE_UPSERT:
            return qr_apply_queue_upsert(ctx, cmd->queue_upsert, res);
        case QRAFT__COMMAND__BODY_QUEUE_PAUSE:
            return qr_apply_queue_pause(ctx, cmd->queue_pause, res);
        case QRAFT__COMMAND__BODY_QUEUE_DELETE:
            return qr_apply_queue_delete(ctx, cmd->queue_delete, res);
        case QRAFT__COMMAND__BODY_SCHEDULE_UPSERT:
            return qr_apply_schedule_upsert(ctx, cmd->schedule_upsert, res);
        case QRAFT__COMMAND__BODY_SCHEDULE_DELETE:
            return qr_apply_schedule_delete(ctx, cmd->schedule_delete, res);
        case QRAFT__COMMAND__BODY_SCHEDULE_PAUSE:
            return qr_apply_schedule_pause(ctx, cmd->schedule_pause, res);
        case QRAFT__COMMAND__BODY_SCHEDULE_FIRE:
            return qr_apply_schedule_fire(ctx, cmd->schedule_fire, res);
        case QRAFT__COMMAND__BODY_GROUP_ADD_ENDPOINTS:
            return qr_apply_group_add(ctx, cmd->group_add_endpoints, res);
        case QRAFT__COMMAND__BODY_GROUP_REMOVE_ENDPOINTS:
            return qr_apply_group_remove(ctx, cmd->group_remove_endpoints, res);
        case QRAFT__COMMAND__BODY_GROUP_DELETE:
            return qr_apply_group_delete(ctx, cmd->group_delete, res);
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
static int apply_pass(struct qr_apply_ctx *ctx,
                      const Qraft__Entry *entry,
                      const bool *refused,
                      struct qr_apply_result *results,
                      size_t *failed_at)
{
    struct qr_fsm *f = ctx->fsm;
    assert(ctx->txn == NULL); /* the last pass committed or aborted its own */
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
static int apply_entry(struct qr_apply_ctx *ctx,
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
        qr_apply_set_result(&results[*failed_at], rv, "%s", why);
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

void qr_fsm_pace_snapshots(struct qr_fsm *f,
                           unsigned threshold,
                           unsigned log_share)
{
    assert(f->raft != NULL && threshold > 0);
    f->snapshot_threshold = threshold;
    f->snapshot_log_share = log_share;
    struct qr_store_space sp;
    uint64_t due_bytes = 0;
    if (log_share > 0 && qr_store_space(f->store, false, &sp) == 0 &&
        sp.file_bytes > QR_FSM_SNAPSHOT_FREE_BYTES) {
        due_bytes =
            (sp.file_bytes - QR_FSM_SNAPSHOT_FREE_BYTES) / 100 * log_share;
    }
    /* raft counts the entries itself (since its last snapshot); holding
     * the threshold out of reach is how to say "not yet" to it. */
    raft_set_snapshot_threshold(
        f->raft,
        f->log_bytes_since_snapshot >= due_bytes ? threshold : UINT_MAX);
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
static int apply_one(struct raft_fsm *rf,
                     const struct raft_buffer *buf,
                     void **result)
{
    struct qr_fsm *f = rf->data;
    uint64_t index = raft_last_applied(f->raft) + 1;
    Qraft__Entry *entry = NULL;
    struct qr_apply_result *results = NULL;
    bool *refused = NULL;
    struct qr_apply_ctx ctx = {.fsm = f, .index = index};
    size_t failed_at = SIZE_MAX;
    int rv;

    assert(f->raft != NULL && f->store != NULL); /* set before raft_start */
    *result = NULL;
    if (f->failed) {
        return RAFT_IOERR;
    }
    f->log_bytes_since_snapshot += buf->len;
    if (f->snapshot_threshold > 0) {
        qr_fsm_pace_snapshots(f, f->snapshot_threshold, f->snapshot_log_share);
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
    assert(ctx.txn == NULL); /* apply_entry committed or aborted it */
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

/* raft's apply: one entry, timed into the apply histogram when the server
 * gave one. */
static int fsm_apply(struct raft_fsm *rf,
                     const struct raft_buffer *buf,
                     void **result)
{
    struct qr_fsm *f = rf->data;
    if (f->apply_seconds == NULL) {
        return apply_one(rf, buf, result);
    }
    uint64_t start_us = qr_metrics_now_us();
    int rv = apply_one(rf, buf, result);
    qr_metrics_observe(f->apply_seconds, qr_metrics_now_us() - start_us);
    return rv;
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
    f->n_snapshots++;
    f->last_snapshot_bytes = total;
    f->last_snapshot_ms = qr_clock_mono_ms() - start_ms;
    QR_INFO("fsm",
            "snapshot at index %" PRIu64
            " (%s): %zu bytes in %zu buffers, "
            "%" PRIu64 " ms; %" PRIu64 " bytes of log since the last",
            f->applied_index, image ? "image" : "pairs", total, n,
            f->last_snapshot_ms, f->log_bytes_since_snapshot);
    f->log_bytes_since_snapshot = 0;
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

void qr_fsm_starting(struct qr_fsm *f,
                     uint64_t snapshot_index,
                     uint64_t start_index)
{
    f->start_snapshot_index = snapshot_index;
    if (snapshot_index != 0) {
        return; /* the restore decides (keep_store_at_start) */
    }
    if (f->applied_index == 0 || qr_store_opened_clean(f->store)) {
        return; /* nothing to distrust, or the replay skips what it has */
    }
    if (start_index != 1) {
        QR_ERROR("fsm",
                 "the store was not closed cleanly, and raft has no snapshot "
                 "but a log from index %" PRIu64 ": keeping the store as it is",
                 start_index);
        return;
    }
    int rv = qr_store_clear(f->store);
    if (rv == 0) {
        rv = load_indexes(f);
    }
    if (rv != 0) {
        QR_ERROR("fsm", "emptying the store: %s: %s", qr_strerror(rv),
                 qr_store_errmsg(f->store));
        return;
    }
    QR_INFO("fsm",
            "the store was not closed cleanly and raft has no snapshot: "
            "emptied it; raft replays its log from index 1");
}

void qr_fsm_started(struct qr_fsm *f)
{
    f->start_snapshot_index = 0;
}

/* At start, after a clean stop: keeps the store when it holds the loaded
 * snapshot's state already. Frees buf when it does. */
static bool keep_store_at_start(struct qr_fsm *f, struct raft_buffer *buf)
{
    uint64_t snapshot_index = f->start_snapshot_index;
    f->start_snapshot_index = 0;
    if (snapshot_index == 0 || !qr_store_opened_clean(f->store) ||
        f->applied_index < snapshot_index) {
        return false;
    }
    QR_INFO("fsm",
            "kept the store at index %" PRIu64
            " (stopped cleanly) over the snapshot at index %" PRIu64,
            f->applied_index, snapshot_index);
    f->log_bytes_since_snapshot = 0; /* raft's log starts after it */
    raft_free(buf->base);
    return true;
}

/* On success the buffer is ours to free (the raft library's contract). */
static int fsm_restore(struct raft_fsm *rf, struct raft_buffer *buf)
{
    struct qr_fsm *f = rf->data;
    if (keep_store_at_start(f, buf)) {
        return 0;
    }
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
    f->log_bytes_since_snapshot = 0; /* raft's log starts after it */
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
