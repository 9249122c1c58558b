/* Messages: get (with its newest events), list (messages and the DLQ),
 * cancel, and the bulk path (one proposal per id, answered together) that
 * cancel-many and the DLQ share. */
#include "ops/ops_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/filter.h"
#include "repl/check.h"
#include "repl/command.h"
#include "repl/redact.h"

static void on_single_done(void *data,
                           int status,
                           const struct qr_apply_result *res)
{
    struct qr_call *call = data;
    if (qr_call_applied_ok(call, status, res)) {
        Qraft__CancelResponse cr = QRAFT__CANCEL_RESPONSE__INIT;
        QR_OP_REPLY_BODY(call->op, call->id, CANCEL, cancel, &cr);
    }
    qr_call_free(call);
}

void qr_op_cancel(struct qr_op *op, const Qraft__Request *req)
{
    const char *id = req->cancel->message_id;
    if (!qr_check_message_id(id)) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                    "invalid message id: %s", QR_CHECK_MESSAGE_ID_RULE);
        return;
    }
    Qraft__Cancel c = QRAFT__CANCEL__INIT;
    c.message_id = (char *)id;
    QR_OP_PROPOSE(op, req, CANCEL, cancel, &c, on_single_done);
}

static void on_bulk_item_done(void *data,
                              int status,
                              const struct qr_apply_result *res);

static void finish_bulk(struct qr_call *call)
{
    Qraft__Response resp = QRAFT__RESPONSE__INIT;
    Qraft__BulkResponse br = QRAFT__BULK_RESPONSE__INIT;
    Qraft__BulkPageResponse bp = QRAFT__BULK_PAGE_RESPONSE__INIT;
    resp.id = call->id;
    if (call->paged) {
        bp.n_results = call->n_items;
        bp.results = call->item_ptrs;
        bp.cursor = call->cursor != NULL ? call->cursor : "";
        resp.body_case = QRAFT__RESPONSE__BODY_BULK_PAGE;
        resp.bulk_page = &bp;
    } else {
        br.n_results = call->n_items;
        br.results = call->item_ptrs;
        resp.body_case = QRAFT__RESPONSE__BODY_BULK;
        resp.bulk = &br;
    }
    qr_op_reply(call->op, &resp);
    qr_call_free(call);
}

static void set_item(struct qr_call *call,
                     size_t i,
                     int status,
                     const char *error)
{
    call->items[i].status = qr_op_status_of(status);
    free(call->items[i].error);
    /* NULL packs as "" (protobuf-c treats it as the zero value). */
    call->items[i].error = status != 0 ? strdup(error) : NULL;
    call->n_done++;
}

static void on_bulk_item_done(void *data,
                              int status,
                              const struct qr_apply_result *res)
{
    struct qr_bulk_item *item = data;
    struct qr_call *call = item->call;
    size_t i = item->i;
    free(item);
    if (status == 0 && res->status != 0) {
        set_item(call, i, res->status, res->error);
    } else {
        set_item(call, i, status, qr_strerror(status));
    }
    if (call->n_done == call->n_items) {
        finish_bulk(call);
    }
}

/* A workflow DLQ action's items name the run of each dead letter (as
 * this node has applied it; an id that is no workflow dead letter names
 * none, and apply refuses it). */
static void name_runs(struct qr_ops *ops, struct qr_call *call)
{
    struct qr_store_txn *txn = NULL;
    if (qr_store_txn_begin(ops->store, false, &txn) != 0) {
        return;
    }
    for (size_t i = 0; i < call->n_items; i++) {
        Qraft__Message *m = NULL;
        Qraft__WorkflowRun *run = NULL;
        if (qr_store_msg_get(txn, call->item_ids[i], &m) != 0) {
            continue;
        }
        if (m->workflow_run_id[0] != '\0' &&
            qr_store_run_get(txn, m->workflow_run_id, &run) == 0) {
            call->items[i].workflow_run_id = strdup(run->id);
            call->items[i].workflow_created_ms = run->created_ms;
            qraft__workflow_run__free_unpacked(run, NULL);
        }
        qraft__message__free_unpacked(m, NULL);
    }
    qr_store_txn_abort(txn);
}

void qr_op_bulk(struct qr_op *op,
                const Qraft__Request *req,
                size_t n_ids,
                char **ids,
                enum qr_bulk_kind kind,
                const struct qr_bulk_page *page)
{
    static const char *const names[] = {"dlq replay",
                                        "dlq delete",
                                        "cancel",
                                        "workflow cancel",
                                        "workflow resume",
                                        "workflow restart",
                                        "workflow failure callback"};
    bool runs = kind == QR_BULK_WORKFLOW_CANCEL;
    if (n_ids > MAX_BULK_IDS || (n_ids == 0 && page->cursor == NULL)) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                    "%s takes 1 to %u %s ids", names[kind], MAX_BULK_IDS,
                    runs ? "workflow run" : "message");
        return;
    }
    for (size_t i = 0; i < n_ids; i++) {
        if (runs ? !qr_command_is_run_id(ids[i])
                 : !qr_check_message_id(ids[i])) {
            qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                        "%s: id %zu of %zu is invalid: %s", names[kind], i + 1,
                        n_ids,
                        runs ? "want 1 to 128 of A-Z a-z 0-9 . _ : -"
                             : QR_CHECK_MESSAGE_ID_RULE);
            return;
        }
    }
    struct qr_call *call = qr_call_new(op, req);
    if (call == NULL) {
        qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
        return;
    }
    call->paged = page->paged;
    call->cursor = page->cursor != NULL ? strdup(page->cursor) : NULL;
    call->items = calloc(n_ids + 1, sizeof *call->items);
    call->item_ptrs = calloc(n_ids + 1, sizeof *call->item_ptrs);
    call->item_ids = calloc(n_ids + 1, sizeof *call->item_ids);
    if (call->items == NULL || call->item_ptrs == NULL ||
        call->item_ids == NULL ||
        (page->cursor != NULL && call->cursor == NULL)) {
        qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
        qr_call_free(call);
        return;
    }
    call->n_items = n_ids;
    for (size_t i = 0; i < n_ids; i++) {
        qraft__item_result__init(&call->items[i]);
        call->item_ptrs[i] = &call->items[i];
        call->item_ids[i] = strdup(ids[i]); /* NULL packs as "" */
        call->items[i].message_id = call->item_ids[i];
        /* init points strings at protobuf-c's static "": ours are heap or
         * NULL, so qr_call_free can free them. */
        call->items[i].error = NULL;
        call->items[i].workflow_run_id = NULL;
    }
    if (kind == QR_BULK_WORKFLOW_RESUME || kind == QR_BULK_WORKFLOW_RESTART ||
        kind == QR_BULK_WORKFLOW_CALLBACK) {
        name_runs(op->ops, call);
    }
    /* Every item is answered: proposed ones by their callback (never
     * before this function returns: proposals complete from the loop), the
     * others right here. */
    for (size_t i = 0; i < n_ids; i++) {
        Qraft__DlqReplay r = QRAFT__DLQ_REPLAY__INIT;
        Qraft__DlqDelete d = QRAFT__DLQ_DELETE__INIT;
        Qraft__Cancel c = QRAFT__CANCEL__INIT;
        Qraft__WorkflowEnd e = QRAFT__WORKFLOW_END__INIT;
        Qraft__WorkflowResume wr = QRAFT__WORKFLOW_RESUME__INIT;
        char new_id[QR_ID_BYTES];
        Qraft__Command cmd = QRAFT__COMMAND__INIT;
        switch (kind) {
            case QR_BULK_REPLAY:
                r.message_id = ids[i];
                qr_command_init_one(&cmd, QRAFT__COMMAND__BODY_DLQ_REPLAY,
                                    &r.base);
                break;
            case QR_BULK_DELETE:
                d.message_id = ids[i];
                qr_command_init_one(&cmd, QRAFT__COMMAND__BODY_DLQ_DELETE,
                                    &d.base);
                break;
            case QR_BULK_CANCEL:
                c.message_id = ids[i];
                qr_command_init_one(&cmd, QRAFT__COMMAND__BODY_CANCEL, &c.base);
                break;
            case QR_BULK_WORKFLOW_CANCEL:
                e.run_id = ids[i];
                e.cancel = true;
                cmd.body_case = QRAFT__COMMAND__BODY_WORKFLOW_END;
                cmd.workflow_end = &e;
                break;
            case QR_BULK_WORKFLOW_RESUME:
            case QR_BULK_WORKFLOW_RESTART:
            case QR_BULK_WORKFLOW_CALLBACK:
                wr.message_id = ids[i];
                wr.restart = kind == QR_BULK_WORKFLOW_RESTART;
                wr.failure_callback = kind == QR_BULK_WORKFLOW_CALLBACK;
                wr.default_timeout_ms =
                    op->ops->config->limits.default_timeout_ms;
                qr_cluster_new_message_id(op->ops->cluster, new_id);
                wr.new_message_id = new_id;
                cmd.body_case = QRAFT__COMMAND__BODY_WORKFLOW_RESUME;
                cmd.workflow_resume = &wr;
                break;
        }
        struct qr_packed packed = {NULL, 0};
        struct qr_bulk_item *item = malloc(sizeof *item);
        int rv = item == NULL ? -ENOMEM : qr_command_pack(&cmd, &packed);
        if (rv == 0) {
            item->call = call;
            item->i = i;
            rv = qr_cluster_propose(op->ops->cluster, &packed,
                                    on_bulk_item_done, item);
        }
        if (rv != 0) {
            free(item);
            free(packed.data);
            set_item(call, i, rv, qr_strerror(rv));
        }
    }
    if (call->n_done == call->n_items) {
        finish_bulk(call);
    }
}

void qr_selection_free(struct qr_selection *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->ids[i]);
    }
    free(s->ids);
}

int qr_selection_collect(void *arg, const Qraft__Message *m)
{
    struct qr_selection *s = arg;
    const Qraft__MessageFilter *f = s->filter;
    if (!s->cancellable && f->to_ms != 0 && m->dead_lettered_ms > f->to_ms) {
        return 1; /* the DLQ is walked oldest first: nothing later matches */
    }
    if (s->cancellable && m->state != QRAFT__MESSAGE_STATE__PENDING &&
        m->state != QRAFT__MESSAGE_STATE__RETRYING &&
        m->state != QRAFT__MESSAGE_STATE__QUEUED) {
        return 0;
    }
    if (!qr_filter_match(f, m)) {
        return 0;
    }
    if (s->count_only) {
        s->n++;
        return 0;
    }
    if (s->n == s->max) {
        s->more = true;
        return 1;
    }
    s->ids[s->n] = strdup(m->id);
    if (s->ids[s->n] == NULL) {
        s->rv = -ENOMEM;
        return 1;
    }
    s->n++;
    s->last_ms = m->dead_lettered_ms;
    snprintf(s->last_id, sizeof s->last_id, "%s", m->id);
    return 0;
}

bool qr_op_refuse_unsupported(struct qr_op *op,
                              const Qraft__Request *req,
                              const Qraft__MessageFilter *f)
{
    const char *name = qr_filter_unsupported(f);
    if (name != NULL) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                    "filter %s is not supported yet", name);
        return true;
    }
    /* A write may be forwarded to an older leader that does not know the
     * field and would match too much (proto MessageFilter). */
    bool read = req->body_case == QRAFT__REQUEST__BODY_EVENTS ||
                req->body_case == QRAFT__REQUEST__BODY_DLQ_LIST;
    if (f != NULL && f->n_source_message_ids > 0 && !read) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                    "filter sourceMessageId is for reads only (logs, DLQ "
                    "list)");
        return true;
    }
    return false;
}

uint32_t qr_bulk_limit(uint32_t limit)
{
    return limit == 0 || limit > MAX_BULK_IDS ? MAX_BULK_IDS : limit;
}

/* The cancellable messages s->filter selects, in id order, into s. */
static int select_cancellable(struct qr_ops *ops, struct qr_selection *s)
{
    struct qr_store_txn *txn = NULL;
    int rv = qr_store_txn_begin(ops->store, false, &txn);
    if (rv == 0) {
        rv = qr_store_msg_list(txn, QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED,
                               NULL, SIZE_MAX, qr_selection_collect, s);
        qr_store_txn_abort(txn);
        rv = rv == 1 ? s->rv : rv;
    }
    return rv;
}

/* Cancels the listed messages, or the cancellable ones the filter selects
 * (in id order, at most limit). */
void qr_op_cancel_many(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__CancelManyRequest *r = req->cancel_many;
    struct qr_bulk_page page = {.paged = false};
    if (qr_op_refuse_unsupported(op, req, r->filter)) {
        return;
    }
    if (r->n_message_ids > 0) {
        if (!qr_filter_is_empty(r->filter)) {
            qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                        "give message ids or a filter, not both");
            return;
        }
        qr_op_bulk(op, req, r->n_message_ids, r->message_ids, QR_BULK_CANCEL,
                   &page);
        return;
    }
    Qraft__MessageFilter none = QRAFT__MESSAGE_FILTER__INIT;
    struct qr_selection s = {.filter = r->filter != NULL ? r->filter : &none,
                             .cancellable = true,
                             .max = qr_bulk_limit(r->limit)};
    s.ids = calloc(s.max, sizeof(char *));
    int rv = s.ids == NULL ? -ENOMEM : select_cancellable(op->ops, &s);
    if (rv != 0) {
        qr_op_store_error(op, req->id, rv);
    } else {
        page.cursor = ""; /* selected: none is an empty answer */
        qr_op_bulk(op, req, s.n, s.ids, QR_BULK_CANCEL, &page);
    }
    qr_selection_free(&s);
}

/* How many a cancel by this filter would take: the same selection, all
 * of it, counted. */
void qr_op_cancel_count(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__CancelCountRequest *r = req->cancel_count;
    if (qr_op_refuse_unsupported(op, req, r->filter)) {
        return;
    }
    Qraft__MessageFilter none = QRAFT__MESSAGE_FILTER__INIT;
    struct qr_selection s = {.filter = r->filter != NULL ? r->filter : &none,
                             .cancellable = true,
                             .count_only = true};
    int rv = select_cancellable(op->ops, &s);
    if (rv != 0) {
        qr_op_store_error(op, req->id, rv);
        return;
    }
    Qraft__CountResponse cr = QRAFT__COUNT_RESPONSE__INIT;
    cr.count = s.n;
    QR_OP_REPLY_BODY(op, req->id, COUNT, count, &cr);
}

/* Reads: a list of deep copies taken from one read transaction. */
struct msg_list {
    struct qr_pb_list copies; /* of Qraft__Message; its rv: -ENOMEM */
    size_t bytes;
    bool full; /* stopped at the page's limit or LIST_MAX_PAGE_BYTES */
    /* Filter on the reported state (see qr_op_reported_state), when set. */
    Qraft__MessageState want;
    uint64_t now_ms;
    size_t limit;
    /* DLQ list: only the messages that match (NULL: all), and, when
     * n_ids > 0, only these ids. */
    const Qraft__MessageFilter *filter;
    char **ids;
    size_t n_ids;
};

bool qr_op_id_listed(char **ids, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(ids[i], id) == 0) {
            return true;
        }
    }
    return false;
}

Qraft__MessageState qr_op_reported_state(const Qraft__Message *m,
                                         uint64_t now_ms)
{
    bool waiting = m->state == QRAFT__MESSAGE_STATE__PENDING ||
                   m->state == QRAFT__MESSAGE_STATE__RETRYING;
    return waiting && m->next_attempt_ms <= now_ms
               ? QRAFT__MESSAGE_STATE__DELIVERING
               : m->state;
}

static int collect_message(void *arg, const Qraft__Message *m)
{
    struct msg_list *l = arg;
    Qraft__MessageState state = qr_op_reported_state(m, l->now_ms);
    if (l->want != QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED &&
        state != l->want) {
        return 0;
    }
    if ((l->n_ids > 0 && !qr_op_id_listed(l->ids, l->n_ids, m->id)) ||
        (l->filter != NULL && !qr_filter_match(l->filter, m))) {
        return 0;
    }
    if (qr_pb_list_add(&l->copies, &m->base) != 0) {
        return 1;
    }
    Qraft__Message *copy = (Qraft__Message *)l->copies.items[l->copies.n - 1];
    copy->state = state;
    if (qr_redact_view(copy) != 0) {
        l->copies.rv = -ENOMEM;
        return 1;
    }
    l->bytes += qraft__message__get_packed_size(copy);
    if (l->bytes >= LIST_MAX_PAGE_BYTES || l->copies.n == l->limit) {
        l->full = true;
        return 1;
    }
    return 0;
}

static uint32_t clamp_limit(uint32_t limit)
{
    if (limit == 0) {
        return LIST_DEFAULT_LIMIT;
    }
    return limit > LIST_MAX_LIMIT ? LIST_MAX_LIMIT : limit;
}

void qr_op_list(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_ops *ops = op->ops;
    const Qraft__ListRequest *lr = req->list;
    bool dlq = req->body_case == QRAFT__REQUEST__BODY_DLQ_LIST;
    const char *cursor = dlq ? req->dlq_list->cursor : lr->cursor;
    uint32_t limit = clamp_limit(dlq ? req->dlq_list->limit : lr->limit);
    if ((unsigned)(dlq ? 0 : lr->state) >= QR_STORE_N_STATES) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST, "unknown state %d",
                    (int)lr->state);
        return;
    }

    struct msg_list l = {.now_ms = qr_cluster_now_ms(ops->cluster),
                         .limit = limit};
    if (dlq) {
        if (qr_op_refuse_unsupported(op, req, req->dlq_list->filter)) {
            return;
        }
        l.filter = req->dlq_list->filter;
        l.ids = req->dlq_list->message_ids;
        l.n_ids = req->dlq_list->n_message_ids;
    }
    struct qr_store_txn *txn = NULL;
    int rv = qr_store_txn_begin(ops->store, false, &txn);
    if (rv == 0) {
        if (dlq) {
            rv = qr_store_dlq_list(txn, cursor, limit, collect_message, &l);
        } else {
            /* The store filters on the stored state; "delivering" and the
             * waiting states it is computed from are filtered here. */
            Qraft__MessageState stored = lr->state;
            if (stored == QRAFT__MESSAGE_STATE__DELIVERING ||
                stored == QRAFT__MESSAGE_STATE__PENDING ||
                stored == QRAFT__MESSAGE_STATE__RETRYING) {
                l.want = stored;
                if (stored == QRAFT__MESSAGE_STATE__DELIVERING) {
                    stored = QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED;
                }
            }
            rv = qr_store_msg_list(txn, stored, cursor, SIZE_MAX,
                                   collect_message, &l);
        }
        qr_store_txn_abort(txn);
    }
    if (rv == 1 && (l.full || l.copies.rv != 0)) {
        rv = l.copies.rv; /* the callback stopped the walk */
    }
    if (rv == 0 && l.copies.rv != 0) {
        rv = l.copies.rv;
    }
    if (rv != 0) {
        qr_op_store_error(op, req->id, rv);
        qr_pb_list_free(&l.copies);
        return;
    }

    Qraft__Message **items = (Qraft__Message **)l.copies.items;
    size_t n = l.copies.n;
    char *next = n > 0 && l.full ? items[n - 1]->id : "";
    Qraft__Response resp = QRAFT__RESPONSE__INIT;
    Qraft__ListResponse list = QRAFT__LIST_RESPONSE__INIT;
    Qraft__DlqListResponse dlq_list = QRAFT__DLQ_LIST_RESPONSE__INIT;
    resp.id = req->id;
    if (dlq) {
        dlq_list.n_messages = n;
        dlq_list.messages = items;
        dlq_list.cursor = next;
        resp.body_case = QRAFT__RESPONSE__BODY_DLQ_LIST;
        resp.dlq_list = &dlq_list;
    } else {
        list.n_messages = n;
        list.messages = items;
        list.cursor = next;
        resp.body_case = QRAFT__RESPONSE__BODY_LIST;
        resp.list = &list;
    }
    qr_op_reply(op, &resp);
    qr_pb_list_free(&l.copies);
}

struct event_list {
    Qraft__Event **items;
    size_t n;
    int rv;
};

static int collect_event(void *arg, const Qraft__Event *e)
{
    struct event_list *l = arg;
    if (l->n == EVENTS_PER_GET) {
        /* Keep the newest: drop the oldest kept. */
        qraft__event__free_unpacked(l->items[0], NULL);
        memmove(l->items, l->items + 1, (l->n - 1) * sizeof *l->items);
        l->n--;
    }
    size_t len = qraft__event__get_packed_size(e);
    uint8_t *buf = malloc(len > 0 ? len : 1);
    if (buf == NULL) {
        l->rv = -ENOMEM;
        return 1;
    }
    qraft__event__pack(e, buf);
    l->items[l->n] = qraft__event__unpack(NULL, len, buf);
    free(buf);
    if (l->items[l->n] == NULL) {
        l->rv = -ENOMEM;
        return 1;
    }
    l->n++;
    return 0;
}

void qr_op_get(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_ops *ops = op->ops;
    const char *id = req->get->message_id;
    if (id[0] == '\0') {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                    "message id is missing");
        return;
    }
    /* Checked before the store is asked: an id over its key limit is not
     * "not found" there but a failed read. */
    if (!qr_check_message_id(id)) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                    "invalid message id: %s", QR_CHECK_MESSAGE_ID_RULE);
        return;
    }
    Qraft__Message *m = NULL;
    Qraft__Event *events[EVENTS_PER_GET];
    struct event_list el = {.items = events};
    struct qr_store_txn *txn = NULL;
    int rv = qr_store_txn_begin(ops->store, false, &txn);
    if (rv == 0) {
        rv = qr_store_msg_get(txn, id, &m);
        if (rv == 0) {
            rv = qr_redact_view(m); /* shown, never written back */
        }
        if (rv == 0) {
            rv = qr_store_event_list(txn, id, SIZE_MAX, collect_event, &el);
            if (rv == 0) {
                rv = el.rv;
            }
        }
        qr_store_txn_abort(txn);
    }
    if (rv != 0) {
        qr_op_read_error(op, req->id, rv, "message", id);
    } else {
        Qraft__GetResponse gr = QRAFT__GET_RESPONSE__INIT;
        m->state = qr_op_reported_state(m, qr_cluster_now_ms(ops->cluster));
        gr.message = m;
        gr.n_events = el.n;
        gr.events = events;
        QR_OP_REPLY_BODY(op, req->id, GET, get, &gr);
    }
    for (size_t i = 0; i < el.n; i++) {
        qraft__event__free_unpacked(events[i], NULL);
    }
    if (m != NULL) {
        qraft__message__free_unpacked(m, NULL);
    }
}
