/* /v2/dlq: the dead letter queue listed (GET), one letter read (GET
 * /v2/dlq/{id}), deleted (DELETE) or sent again (POST /v2/dlq/retry), one
 * by id or many by ids, filters or all, a page at a time. */
#include "api/rest_int.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/json_text.h"
#include "ops/filter.h"

#define DLQ_PAGE_MAX 100

static json_t *dlq_page_json(struct rest_call *c, const Qraft__Response *resp)
{
    json_t *msgs = json_array();

    for (size_t i = 0; i < resp->dlq_list->n_messages; i++) {
        json_array_append_new(
            msgs, qr_rest_message_json(resp->dlq_list->messages[i], true,
                                       &c->req->pool));
    }
    return qr_rest_page_json("messages", msgs, resp->dlq_list->cursor);
}

/* The query of a DLQ list or bulk route into f, *count (1..100, default
 * 100) and *ids (dlqIds, appended; pool memory). Returns false having
 * answered 400 when it is bad. */
static bool dlq_query(h2o_req_t *req,
                      h2o_iovec_t query,
                      Qraft__MessageFilter *f,
                      uint32_t *count,
                      char ***ids,
                      size_t *n)
{
    static const char *const extra[] = {"count", "cursor", "dlqIds", NULL};
    char err[ERR_BYTES];

    if (qr_rest_parse_filter(&req->pool, query, extra, f, err) != 0 ||
        qr_rest_take_count(&req->pool, query, DLQ_PAGE_MAX, DLQ_PAGE_MAX, count,
                           err) != 0 ||
        qr_rest_take_list(&req->pool, query, "dlqIds", ids, n, err) != 0) {
        qr_rest_send_error(req, 400, err);
        return false;
    }
    return true;
}

/* GET /v2/dlq: count (1..100), cursor, dlqIds, filters. */
void qr_rest_dlq_list(struct qr_rest *r,
                      h2o_req_t *req,
                      const struct rest_match *m)
{
    Qraft__DlqListRequest list = QRAFT__DLQ_LIST_REQUEST__INIT;
    Qraft__MessageFilter *f = h2o_mem_alloc_pool(&req->pool, sizeof(*f));
    const char *cursor = qr_rest_query_get(&req->pool, m->query, "cursor");

    if (!dlq_query(req, m->query, f, &list.limit, &list.message_ids,
                   &list.n_message_ids)) {
        return;
    }
    list.filter = f;
    list.cursor = cursor != NULL ? (char *)cursor : (char *)"";
    QR_REST_RUN(r, req, DLQ_LIST, dlq_list, &list,
                &(struct rest_answer){.want = QRAFT__RESPONSE__BODY_DLQ_LIST,
                                      .build = dlq_page_json});
}

/* Answers of DLQ delete and retry: {"deleted": n, "cursor"?} /
 * {"responses": [...], "cursor"?}, or, for one id (c->single), 404 when it
 * is not in the DLQ. */
static void on_dlq_bulk_reply(struct rest_call *c,
                              size_t index,
                              const Qraft__Response *resp,
                              bool retry)
{
    json_t *responses = json_array();
    Qraft__ItemResult **results = NULL;
    size_t n_results = 0;
    const char *cursor = NULL;
    size_t n_ok = 0;
    json_t *out;

    (void)index;
    c->answered = true;
    /* body is a oneof (a union): check which member it holds. */
    if (resp->status == QRAFT__STATUS__OK &&
        resp->body_case == QRAFT__RESPONSE__BODY_BULK) {
        results = resp->bulk->results;
        n_results = resp->bulk->n_results;
    } else if (resp->status == QRAFT__STATUS__OK &&
               resp->body_case == QRAFT__RESPONSE__BODY_BULK_PAGE) {
        results = resp->bulk_page->results;
        n_results = resp->bulk_page->n_results;
        cursor = resp->bulk_page->cursor;
    } else {
        json_decref(responses);
        qr_rest_send_status_error(c, resp);
        return;
    }
    for (size_t i = 0; i < n_results; i++) {
        const Qraft__ItemResult *it = results[i];
        if (it->status == QRAFT__STATUS__OK) {
            n_ok++;
            json_array_append_new(
                responses,
                json_pack("{s:o}", "messageId", qr_json_text(it->message_id)));
        } else if (c->single) {
            json_decref(responses);
            qr_rest_send_error(c->req,
                               it->status == QRAFT__STATUS__CONFLICT
                                   ? 404
                                   : qr_rest_http_status(it->status),
                               it->status == QRAFT__STATUS__CONFLICT ||
                                       it->status == QRAFT__STATUS__NOT_FOUND
                                   ? "dlq message not found"
                                   : it->error);
            return;
        }
    }
    if (retry && c->single && json_array_size(responses) == 1) {
        json_t *one = json_incref(json_array_get(responses, 0));
        json_decref(responses);
        qr_rest_send_reply(c, 201, one, NULL);
        return;
    }
    if (retry) {
        out = json_pack("{s:o}", "responses", responses);
    } else {
        json_decref(responses);
        out = json_pack("{s:I}", "deleted", (json_int_t)n_ok);
    }
    qr_rest_set_opt_string(out, "cursor", cursor);
    qr_rest_send_reply(c, retry ? 201 : 200, out, NULL);
}

static void on_dlq_delete_reply(struct rest_call *c,
                                size_t index,
                                const Qraft__Response *resp)
{
    on_dlq_bulk_reply(c, index, resp, false);
}

static void on_dlq_retry_reply(struct rest_call *c,
                               size_t index,
                               const Qraft__Response *resp)
{
    on_dlq_bulk_reply(c, index, resp, true);
}

/* DELETE /v2/dlq/{id}, POST /v2/dlq/retry/{id}, and the bulk forms
 * DELETE /v2/dlq and POST /v2/dlq/retry with dlqIds, or filters, or
 * nothing (= every dead letter), a page of count (1..100, default 100)
 * after cursor. */
void qr_rest_dlq_bulk(struct qr_rest *r,
                      h2o_req_t *req,
                      const struct rest_match *m)
{
    const char *id = m->capture.base;
    bool retry = m->op == REST_RETRY;
    Qraft__DlqDeleteRequest del = QRAFT__DLQ_DELETE_REQUEST__INIT;
    Qraft__DlqReplayRequest replay = QRAFT__DLQ_REPLAY_REQUEST__INIT;
    Qraft__MessageFilter *f = h2o_mem_alloc_pool(&req->pool, sizeof(*f));
    const char *cursor = qr_rest_query_get(&req->pool, m->query, "cursor");
    char **ids = NULL;
    size_t n = 0;
    uint32_t count = DLQ_PAGE_MAX;

    if (id != NULL) {
        ids = h2o_mem_alloc_pool(&req->pool, sizeof(*ids));
        ids[0] = qr_rest_capture(req, m);
        n = 1;
        qraft__message_filter__init(f);
    } else if (!dlq_query(req, m->query, f, &count, &ids, &n)) {
        return;
    }
    if (n > 0 && !qr_filter_is_empty(f)) {
        qr_rest_send_error(req, 400, "give dlqIds or filters, not both");
        return;
    }
    if (cursor == NULL || n > 0) {
        cursor = "";
    }
    if (!retry) {
        del.message_ids = ids;
        del.n_message_ids = n;
        del.filter = n == 0 ? f : NULL;
        del.all = n == 0 && qr_filter_is_empty(f);
        del.cursor = (char *)cursor;
        del.limit = count;
        QR_REST_RUN(r, req, DLQ_DELETE, dlq_delete, &del,
                    &(struct rest_answer){.on_reply = on_dlq_delete_reply,
                                          .single = id != NULL});
        return;
    }
    replay.message_ids = ids;
    replay.n_message_ids = n;
    replay.filter = n == 0 ? f : NULL;
    replay.all = n == 0 && qr_filter_is_empty(f);
    replay.cursor = (char *)cursor;
    replay.limit = n == 0 ? count : 0;
    QR_REST_RUN(r, req, DLQ_REPLAY, dlq_replay, &replay,
                &(struct rest_answer){.on_reply = on_dlq_retry_reply,
                                      .single = id != NULL});
}
