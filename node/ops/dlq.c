/* The DLQ's writes: replay and delete, by ids or by a filter (paged with a
 * cursor that stays valid as messages leave the DLQ). Listing is
 * messages.c's. */
#include "ops/ops_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/filter.h"

/* A paged DLQ bulk cursor: "<dead-lettered ms>:<bound ms>:<message id>",
 * a position that stays valid after the message left the DLQ, and the
 * first page's time: later pages leave out what was dead-lettered after
 * it, so a loop that replays until the cursor ends does end, even when
 * the replayed messages fail again at once. */
static int parse_dlq_position(const char *cursor,
                              uint64_t *ms,
                              uint64_t *bound_ms,
                              const char **id)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(cursor, &end, 10);
    if (errno != 0 || end == cursor || *end != ':') {
        return QR_EBADREQ;
    }
    const char *b = end + 1;
    unsigned long long bound = strtoull(b, &end, 10);
    if (errno != 0 || end == b || *end != ':' || end[1] == '\0') {
        return QR_EBADREQ;
    }
    *ms = v;
    *bound_ms = bound;
    *id = end + 1;
    return 0;
}

/* The older DLQ replay fields, folded into one filter (a shallow copy of
 * the request's own filter, when it has one). */
static void fold_replay_filter(const Qraft__DlqReplayRequest *r,
                               Qraft__MessageFilter *f)
{
    if (r->filter != NULL) {
        *f = *r->filter;
    } else {
        qraft__message_filter__init(f);
    }
    if (r->url_prefix[0] != '\0') {
        f->url_prefix = r->url_prefix;
    }
    if (r->category[0] != '\0') {
        f->error_category = r->category;
    }
    if (r->since_ms > f->from_ms) {
        f->from_ms = r->since_ms;
    }
    if (r->until_ms != 0 && (f->to_ms == 0 || r->until_ms - 1 < f->to_ms)) {
        f->to_ms = r->until_ms - 1; /* until is exclusive, to inclusive */
    }
}

/* Dead letters matching f after cursor (a position, or "": the oldest),
 * up to limit, then one command each, answered with a BulkPageResponse. */
static void dlq_bulk_by_filter(struct qr_op *op,
                               const Qraft__Request *req,
                               const Qraft__MessageFilter *f,
                               const char *cursor,
                               uint32_t limit,
                               enum qr_bulk_kind kind,
                               bool paged)
{
    uint64_t after_ms = 0;
    /* The first page's bound holds for every page: what the operation's
     * own effects dead-letter again lies beyond it. */
    uint64_t bound_ms = qr_cluster_bound_ms(op->ops->cluster);
    const char *after_id = NULL;
    if (cursor[0] != '\0' &&
        parse_dlq_position(cursor, &after_ms, &bound_ms, &after_id) != 0) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                    "invalid cursor '%.64s'", cursor);
        return;
    }
    Qraft__MessageFilter bounded = *f;
    if (bounded.to_ms == 0 || bound_ms < bounded.to_ms) {
        bounded.to_ms = bound_ms;
    }
    struct qr_selection s = {.filter = &bounded, .max = qr_bulk_limit(limit)};
    s.ids = calloc(s.max, sizeof(char *));
    struct qr_store_txn *txn = NULL;
    int rv = s.ids == NULL ? -ENOMEM
                           : qr_store_txn_begin(op->ops->store, false, &txn);
    if (rv == 0) {
        rv = qr_store_dlq_list_at(txn, after_ms, after_id, SIZE_MAX,
                                  qr_selection_collect, &s);
        qr_store_txn_abort(txn);
        rv = rv == 1 ? s.rv : rv;
    }
    if (rv == QR_EBADREQ) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                    "invalid cursor '%.64s'", cursor);
    } else if (rv != 0) {
        qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL, "reading the DLQ: %s",
                    qr_strerror(rv));
    } else {
        char next[QR_ID_BYTES + 96] = "";
        if (s.more) {
            snprintf(next, sizeof next, "%" PRIu64 ":%" PRIu64 ":%s", s.last_ms,
                     bound_ms, s.last_id);
        }
        struct qr_bulk_page page = {.paged = paged, .cursor = next};
        qr_op_bulk(op, req, s.n, s.ids, kind, &page);
    }
    qr_selection_free(&s);
}

/* DLQ replay and delete name dead letters by ids or by a filter (all:
 * every one), never both. Refuses a filter that is not supported or comes
 * with ids, and runs the bulk over the ids (unpaged, as before filters
 * existed) when there is no filter. Returns true when the caller selects
 * by f (NULL: none) instead; false when req is answered or under way. */
static bool dlq_bulk_ids(struct qr_op *op,
                         const Qraft__Request *req,
                         const Qraft__MessageFilter *f,
                         bool all,
                         size_t n_ids,
                         char **ids,
                         enum qr_bulk_kind kind)
{
    bool filtered = all || !qr_filter_is_empty(f);
    if (qr_op_refuse_unsupported(op, req, f)) {
        return false;
    }
    if (n_ids == 0 && filtered) {
        return true;
    }
    if (filtered) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                    "give message ids or a filter, not both");
        return false;
    }
    struct qr_bulk_page page = {.paged = false};
    qr_op_bulk(op, req, n_ids, ids, kind, &page);
    return false;
}

void qr_op_dlq_replay(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__DlqReplayRequest *r = req->dlq_replay;
    Qraft__MessageFilter f;
    fold_replay_filter(r, &f);
    if (!dlq_bulk_ids(op, req, &f, r->all, r->n_message_ids, r->message_ids,
                      QR_BULK_REPLAY)) {
        return;
    }
    bool paged = r->filter != NULL || r->limit != 0 || r->cursor[0] != '\0';
    dlq_bulk_by_filter(op, req, &f, r->cursor, r->limit, QR_BULK_REPLAY, paged);
}

void qr_op_dlq_delete(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__DlqDeleteRequest *d = req->dlq_delete;
    if (!dlq_bulk_ids(op, req, d->filter, d->all, d->n_message_ids,
                      d->message_ids, QR_BULK_DELETE)) {
        return;
    }
    Qraft__MessageFilter none = QRAFT__MESSAGE_FILTER__INIT;
    dlq_bulk_by_filter(op, req, d->filter != NULL ? d->filter : &none,
                       d->cursor, d->limit, QR_BULK_DELETE, true);
}
