/* /v2/workflows (docs/workflow.md): a run's history for the SDK's lazy
 * fetch (GET /v2/workflows/runs/{id}), the end of a run (DELETE
 * /v2/workflows/runs/{id}?cancel=false with the result as the body, or
 * cancel), the bulk cancel (DELETE /v2/workflows/runs?workflowRunIds=),
 * and context.waitForEvent's waits, notifies and waiters. Triggers and
 * steps are publishes (rest_publish.c). */
#include "api/rest_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/json_text.h"
#include "repl/check.h"

/* True when query names no parameter but the known ones (NULL-ended);
 * else answers 400: "<doing> by '<param>' is not supported yet: <hint>".
 * A selection the node cannot make is refused, never widened. */
static bool only_params(h2o_req_t *req,
                        h2o_iovec_t query,
                        const char *const *known,
                        const char *doing,
                        const char *hint)
{
    struct rest_param p;
    size_t pos = 0;
    while (qr_rest_next_param(query.base, query.len, &pos, &p)) {
        bool ok = false;
        for (size_t i = 0; known[i] != NULL; i++) {
            ok = ok || qr_rest_equal_ci(p.name, p.name_len, known[i]);
        }
        if (!ok) {
            char err[ERR_BYTES];
            snprintf(err, sizeof err, "%s by '%.*s' is not supported yet: %s",
                     doing, (int)(p.name_len > 64 ? 64 : p.name_len), p.name,
                     hint);
            qr_rest_send_error(req, 400, err);
            return false;
        }
    }
    return true;
}

/* The history as the SDK reads it: [{"messageId", "body" (base64),
 * "callType"}], oldest first. */
static json_t *history_json(struct rest_call *c, const Qraft__Response *resp)
{
    (void)c;
    json_t *arr = json_array();
    const Qraft__WorkflowRunResponse *wr = resp->workflow_run;
    for (size_t i = 0; arr != NULL && i < wr->n_steps; i++) {
        const Qraft__WorkflowStep *st = wr->steps[i];
        json_t *o =
            json_pack("{s:o,s:o}", "messageId", qr_json_text(st->message_id),
                      "callType", qr_json_text(st->call_type));
        if (o == NULL) {
            json_decref(arr);
            return NULL;
        }
        qr_rest_set_b64(o, "body", st->body);
        json_array_append_new(arr, o);
    }
    return arr;
}

/* GET and DELETE /v2/workflows/runs/{id}. A DELETE cancels the run unless
 * cancel=false, which finishes it with the body as its result. */
void qr_rest_workflow_run(struct qr_rest *r,
                          h2o_req_t *req,
                          const struct rest_match *m)
{
    char *id = qr_rest_capture(req, m);
    if (m->op == REST_GET) {
        static const struct rest_answer history = {
            .want = QRAFT__RESPONSE__BODY_WORKFLOW_RUN, .build = history_json};
        Qraft__WorkflowRunRequest get = QRAFT__WORKFLOW_RUN_REQUEST__INIT;
        get.run_id = id;
        QR_REST_RUN(r, req, WORKFLOW_RUN, workflow_run, &get, &history);
        return;
    }
    static const struct rest_answer ended = {.build = qr_rest_empty_json};
    Qraft__WorkflowEndRequest end = QRAFT__WORKFLOW_END_REQUEST__INIT;
    bool cancel;
    if (!qr_rest_query_bool(&req->pool, m->query, "cancel", true, &cancel)) {
        qr_rest_send_error(req, 400, "cancel must be true or false");
        return;
    }
    end.run_id = id;
    end.cancel = cancel;
    if (!end.cancel && req->entity.base != NULL) {
        end.result.data = (uint8_t *)req->entity.base;
        end.result.len = req->entity.len;
    }
    QR_REST_RUN(r, req, WORKFLOW_END, workflow_end, &end, &ended);
}

/* DELETE /v2/workflows/runs: cancels the runs given by workflowRunIds
 * (repeated), or the running ones whose workflowUrl starts with the one
 * given (equals it with workflowUrlExactMatch=true), or with only `count`
 * (the SDK's {all: true}) every running run, at most count (default 100);
 * answered {"cancelled": n}. Filters by date, label or caller are not
 * supported yet: refused, never taken for "everything". */
void qr_rest_workflow_cancel_many(struct qr_rest *r,
                                  h2o_req_t *req,
                                  const struct rest_match *m)
{
    static const char *const known[] = {"workflowRunIds", "workflowUrl",
                                        "workflowUrlExactMatch", "count", NULL};
    Qraft__WorkflowEndRequest end = QRAFT__WORKFLOW_END_REQUEST__INIT;
    char err[ERR_BYTES];
    if (!only_params(req, m->query, known, "cancelling workflow runs",
                     "give workflowRunIds or workflowUrl")) {
        return;
    }
    if (qr_rest_take_list(&req->pool, m->query, "workflowRunIds", &end.run_ids,
                          &end.n_run_ids, err) != 0 ||
        qr_rest_take_count(&req->pool, m->query, 1000, 100, &end.limit, err) !=
            0) {
        qr_rest_send_error(req, 400, err);
        return;
    }
    const char *url = qr_rest_query_get(&req->pool, m->query, "workflowUrl");
    const char *exact =
        qr_rest_query_get(&req->pool, m->query, "workflowUrlExactMatch");
    bool has_count = qr_rest_query_get(&req->pool, m->query, "count") != NULL;
    if (end.n_run_ids > 0 && url != NULL) {
        qr_rest_send_error(req, 400,
                           "give workflowRunIds or workflowUrl, not "
                           "both");
        return;
    }
    if (end.n_run_ids == 0 && url == NULL && !has_count) {
        qr_rest_send_error(req, 400,
                           "give the runs to cancel: workflowRunIds, "
                           "workflowUrl, or count alone for every run");
        return;
    }
    end.cancel = true;
    end.select = end.n_run_ids == 0;
    end.url = url != NULL ? (char *)url : "";
    end.url_exact = exact != NULL && strcmp(exact, "true") == 0;
    QR_REST_RUN(r, req, WORKFLOW_END, workflow_end, &end,
                &(struct rest_answer){.on_reply = qr_rest_on_cancelled_reply});
}

/* ------------------------------------------------------------------------ */
/* context.waitForEvent: POST /v2/wait/{eventId}, POST
 * /v2/notify/[{runId}/]{eventId}, GET /v2/waiters/{eventId}. */

/* {"url", "deadline" (unix ms), "headers", "timeoutUrl", "timeoutHeaders"}:
 * a waiter as the SDK's Waiter type reads it. */
static json_t *waiter_json(const Qraft__Waiter *w, h2o_mem_pool_t *pool)
{
    json_t *h =
        qr_rest_header_map(w->timeout_headers, w->n_timeout_headers, pool);
    return json_pack("{s:o,s:I,s:O,s:o,s:o}", "url", qr_json_text(w->url),
                     "deadline", (json_int_t)w->deadline_ms, "headers", h,
                     "timeoutUrl", qr_json_text(w->timeout_url),
                     "timeoutHeaders", h);
}

static json_t *waiters_json(struct rest_call *c, const Qraft__Response *resp)
{
    json_t *arr = json_array();
    const Qraft__WaitersResponse *wr = resp->waiters;
    for (size_t i = 0; arr != NULL && i < wr->n_waiters; i++) {
        json_array_append_new(arr, waiter_json(wr->waiters[i], &c->req->pool));
    }
    return arr;
}

/* [{"waiter", "messageId", "error"}] for the runs a notify reached. */
static json_t *notified_json(struct rest_call *c, const Qraft__Response *resp)
{
    json_t *arr = json_array();
    const Qraft__NotifyResponse *nr = resp->notify;
    for (size_t i = 0; arr != NULL && i < nr->n_notified; i++) {
        const Qraft__NotifiedWaiter *nw = nr->notified[i];
        json_array_append_new(
            arr, json_pack("{s:o,s:o,s:o}", "waiter",
                           nw->waiter != NULL
                               ? waiter_json(nw->waiter, &c->req->pool)
                               : json_null(),
                           "messageId", qr_json_text(nw->message_id), "error",
                           qr_json_text(nw->error)));
    }
    return arr;
}

void qr_rest_waiters(struct qr_rest *r,
                     h2o_req_t *req,
                     const struct rest_match *m)
{
    static const struct rest_answer answer = {
        .want = QRAFT__RESPONSE__BODY_WAITERS, .build = waiters_json};
    Qraft__WaitersRequest wr = QRAFT__WAITERS_REQUEST__INIT;
    wr.event_id = qr_rest_capture(req, m);
    QR_REST_RUN(r, req, WAITERS, waiters, &wr, &answer);
}

/* A notify's answer: the runs it reached. */
static const struct rest_answer notify_answer = {
    .want = QRAFT__RESPONSE__BODY_NOTIFY,
    .build = notified_json};

/* POST /v2/notify/{eventId} and /v2/notify/{runId}/{eventId}: the body is
 * the event's data. */
void qr_rest_notify(struct qr_rest *r,
                    h2o_req_t *req,
                    const struct rest_match *m)
{
    Qraft__NotifyRequest nr = QRAFT__NOTIFY_REQUEST__INIT;
    char *path = qr_rest_capture(req, m);
    char *slash = strchr(path, '/');
    if (slash != NULL) {
        *slash = '\0';
        nr.run_id = path;
        nr.event_id = slash + 1;
    } else {
        nr.event_id = path;
    }
    if (req->entity.base != NULL) {
        nr.data.data = (uint8_t *)req->entity.base;
        nr.data.len = req->entity.len;
    }
    QR_REST_RUN(r, req, NOTIFY, notify, &nr, &notify_answer);
}

/* The run a wait is for: its Upstash-Workflow-RunId header, else the one
 * the SDK puts in timeoutHeaders. */
static const char *wait_run_id(h2o_req_t *req, json_t *timeout_headers)
{
    for (size_t i = 0; i < req->headers.size; i++) {
        const h2o_header_t *h = &req->headers.entries[i];
        if (qr_rest_equal_ci(h->name->base, h->name->len,
                             "upstash-workflow-runid")) {
            return qr_rest_pool_str(&req->pool, h->value.base, h->value.len);
        }
    }
    const char *key;
    json_t *value;
    json_object_foreach(timeout_headers, key, value)
    {
        if (qr_rest_equal_ci(key, strlen(key), "upstash-workflow-runid") &&
            json_is_string(json_array_get(value, 0))) {
            return json_string_value(json_array_get(value, 0));
        }
    }
    return "";
}

/* A wait's timeout: a duration ("7d", "10s", "1h30m") or seconds. */
static int wait_timeout(json_t *v, uint64_t *ms)
{
    if (json_is_integer(v) && json_integer_value(v) > 0) {
        *ms = (uint64_t)json_integer_value(v) * 1000;
        return 0;
    }
    if (json_is_string(v)) {
        return qr_command_parse_duration(json_string_value(v),
                                         json_string_length(v), ms);
    }
    return -EINVAL;
}

/* {"url", "timeout", "timeoutUrl", "timeoutBody"?, "timeoutHeaders":
 * {"Name": ["v"]}, "step": {...}} into wr (pool memory); -EINVAL with why
 * in err. */
static int parse_wait(h2o_req_t *req,
                      json_t *in,
                      Qraft__WaitRequest *wr,
                      Qraft__Waiter *w,
                      char *err)
{
    json_t *url = json_object_get(in, "url");
    json_t *timeout_url = json_object_get(in, "timeoutUrl");
    json_t *headers = json_object_get(in, "timeoutHeaders");
    json_t *step = json_object_get(in, "step");
    if (!json_is_object(in) || !json_is_string(url) ||
        (timeout_url != NULL && !json_is_string(timeout_url)) ||
        (headers != NULL && !json_is_object(headers)) ||
        !json_is_object(step)) {
        snprintf(err, ERR_BYTES,
                 "wait body must be {\"url\", \"timeout\", \"timeoutUrl\", "
                 "\"timeoutHeaders\", \"step\": {...}}");
        return -EINVAL;
    }
    if (wait_timeout(json_object_get(in, "timeout"), &wr->timeout_ms) != 0) {
        snprintf(err, ERR_BYTES,
                 "invalid timeout: want a duration like 30s, 10m, 7d");
        return -EINVAL;
    }
    w->url = qr_rest_pool_str(&req->pool, json_string_value(url),
                              json_string_length(url));
    w->timeout_url =
        timeout_url != NULL
            ? qr_rest_pool_str(&req->pool, json_string_value(timeout_url),
                               json_string_length(timeout_url))
            : w->url;
    w->run_id = (char *)wait_run_id(req, headers);
    char *text = json_dumps(step, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (text == NULL) {
        snprintf(err, ERR_BYTES, "out of memory");
        return -EINVAL;
    }
    w->step.len = strlen(text);
    w->step.data = (uint8_t *)qr_rest_pool_str(&req->pool, text, w->step.len);
    free(text);
    const char *bad = NULL;
    if (qr_rest_header_list(&req->pool, headers, &w->timeout_headers,
                            &w->n_timeout_headers, &bad) != 0) {
        snprintf(err, ERR_BYTES,
                 "timeoutHeaders '%.64s' is not a string or a list of "
                 "strings",
                 bad);
        return -EINVAL;
    }
    return 0;
}

/* POST /v2/wait/{eventId}: the run of the request's workflow headers waits
 * for the event. */
void qr_rest_wait(struct qr_rest *r, h2o_req_t *req, const struct rest_match *m)
{
    static const struct rest_answer answer = {.build = qr_rest_empty_json};
    Qraft__WaitRequest wr = QRAFT__WAIT_REQUEST__INIT;
    Qraft__Waiter *w = h2o_mem_alloc_pool(&req->pool, sizeof *w);
    char err[ERR_BYTES];
    qraft__waiter__init(w);
    w->event_id = qr_rest_capture(req, m);
    json_t *in = qr_rest_load_body(req);
    if (in == NULL) {
        return;
    }
    int rv = parse_wait(req, in, &wr, w, err);
    json_decref(in);
    if (rv != 0) {
        qr_rest_send_error(req, 400, err);
        return;
    }
    wr.waiter = w;
    QR_REST_RUN(r, req, WAIT, wait, &wr, &answer);
}

/* ------------------------------------------------------------------------ */
/* Workflow DLQ: POST /v2/workflows/dlq/resume and /restart?dlqIds=... */

/* {"workflowRuns": [{"workflowRunId", "workflowCreatedAt"}]} for the dead
 * letters the node resumed or restarted; the first refusal answers when
 * none was. */
static void on_workflow_dlq_reply(struct rest_call *c,
                                  size_t index,
                                  const Qraft__Response *resp)
{
    (void)index;
    if (!qr_rest_reply_ok(c, resp, QRAFT__RESPONSE__BODY_BULK)) {
        return;
    }
    json_t *runs = json_array();
    const Qraft__ItemResult *refused = NULL;
    for (size_t i = 0; runs != NULL && i < resp->bulk->n_results; i++) {
        const Qraft__ItemResult *it = resp->bulk->results[i];
        if (it->status != QRAFT__STATUS__OK) {
            refused = refused != NULL ? refused : it;
            continue;
        }
        json_array_append_new(
            runs,
            json_pack("{s:o,s:I}", "workflowRunId",
                      qr_json_text(it->workflow_run_id), "workflowCreatedAt",
                      (json_int_t)it->workflow_created_ms));
    }
    if (runs != NULL && json_array_size(runs) == 0 && refused != NULL) {
        json_decref(runs);
        c->answered = true;
        qr_rest_send_error(c->req, qr_rest_http_status(refused->status),
                           refused->error);
        return;
    }
    qr_rest_send_reply(c, 200, json_pack("{s:o}", "workflowRuns", runs), NULL);
}

/* {"workflowRunId", "workflowCreatedAt"} of the dead letter whose failure
 * callback was sent again. */
static void on_workflow_callback_reply(struct rest_call *c,
                                       size_t index,
                                       const Qraft__Response *resp)
{
    (void)index;
    if (!qr_rest_reply_ok(c, resp, QRAFT__RESPONSE__BODY_BULK)) {
        return;
    }
    const Qraft__ItemResult *it =
        resp->bulk->n_results > 0 ? resp->bulk->results[0] : NULL;
    if (it == NULL || it->status != QRAFT__STATUS__OK) {
        c->answered = true;
        qr_rest_send_error(c->req,
                           it != NULL ? qr_rest_http_status(it->status) : 500,
                           it != NULL ? it->error : "no answer");
        return;
    }
    qr_rest_send_reply(
        c, 200,
        json_pack("{s:o,s:I}", "workflowRunId",
                  qr_json_text(it->workflow_run_id), "workflowCreatedAt",
                  (json_int_t)it->workflow_created_ms),
        NULL);
}

/* POST /v2/workflows/dlq/callback/{dlqId}: the failure callback again. */
void qr_rest_workflow_dlq_callback(struct qr_rest *r,
                                   h2o_req_t *req,
                                   const struct rest_match *m)
{
    Qraft__WorkflowDlqRequest wd = QRAFT__WORKFLOW_DLQ_REQUEST__INIT;
    char **ids = h2o_mem_alloc_pool(&req->pool, sizeof *ids);
    ids[0] = qr_rest_capture(req, m);
    wd.message_ids = ids;
    wd.n_message_ids = 1;
    wd.failure_callback = true;
    QR_REST_RUN(r, req, WORKFLOW_DLQ, workflow_dlq, &wd,
                &(struct rest_answer){.on_reply = on_workflow_callback_reply});
}

void qr_rest_workflow_dlq(struct qr_rest *r,
                          h2o_req_t *req,
                          const struct rest_match *m)
{
    static const char *const known[] = {"dlqIds", NULL};
    Qraft__WorkflowDlqRequest wd = QRAFT__WORKFLOW_DLQ_REQUEST__INIT;
    char err[ERR_BYTES];
    if (!only_params(req, m->query, known, "selecting workflow dead letters",
                     "give dlqIds")) {
        return;
    }
    if (qr_rest_take_list(&req->pool, m->query, "dlqIds", &wd.message_ids,
                          &wd.n_message_ids, err) != 0) {
        qr_rest_send_error(req, 400, err);
        return;
    }
    wd.restart = m->op == REST_RESTART;
    QR_REST_RUN(r, req, WORKFLOW_DLQ, workflow_dlq, &wd,
                &(struct rest_answer){.on_reply = on_workflow_dlq_reply});
}

/* ------------------------------------------------------------------------ */
/* Webhooks (context.createWebhook, waitForWebhook): any method on
 * /v2/workflows/hooks/{userId}/{runId}/{eventId}, without a token, notifies
 * that run's wait for that event with the request, as the SDK reads it:
 * {"method", "header": {"Name": ["v"]}, "body" (base64), "proto", "host",
 * "url" (path and query)}. */
void qr_rest_workflow_hook(struct qr_rest *r,
                           h2o_req_t *req,
                           const struct rest_match *m)
{
    Qraft__NotifyRequest nr = QRAFT__NOTIFY_REQUEST__INIT;
    char *path = qr_rest_capture(req, m);
    char *run = strchr(path, '/');
    char *event = run != NULL ? strchr(run + 1, '/') : NULL;
    if (event == NULL) {
        qr_rest_send_error(req, 404,
                           "not found: a webhook is "
                           "/v2/workflows/hooks/{userId}/{runId}/{eventId}");
        return;
    }
    *run++ = '\0';
    *event++ = '\0';
    nr.run_id = run;
    nr.event_id = event;
    json_t *headers = json_object();
    const char *host = "";
    for (size_t i = 0; headers != NULL && i < req->headers.size; i++) {
        const h2o_header_t *h = &req->headers.entries[i];
        char *name = qr_rest_canonical(&req->pool, h->name->base, h->name->len);
        char *value = qr_rest_pool_str(&req->pool, h->value.base, h->value.len);
        if (qr_rest_equal_ci(h->name->base, h->name->len, "host")) {
            host = value;
        }
        json_t *values = json_object_get(headers, name);
        if (values == NULL) {
            values = json_array();
            json_object_set_new(headers, name, values);
        }
        json_array_append_new(values, qr_json_text(value));
    }
    json_t *o =
        json_pack("{s:s%,s:o,s:s,s:s,s:s%}", "method", req->method.base,
                  (size_t)req->method.len, "header",
                  headers != NULL ? headers : json_object(), "proto", "http",
                  "host", host, "url", req->path.base, (size_t)req->path.len);
    if (o != NULL) {
        ProtobufCBinaryData body = {
            req->entity.base != NULL ? req->entity.len : 0,
            (uint8_t *)req->entity.base};
        qr_rest_set_b64(o, "body", body);
    }
    char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (text == NULL) {
        qr_rest_send_error(req, 503, "out of memory");
        return;
    }
    nr.data.len = strlen(text);
    nr.data.data = (uint8_t *)qr_rest_pool_str(&req->pool, text, nr.data.len);
    free(text);
    QR_REST_RUN(r, req, NOTIFY, notify, &nr, &notify_answer);
}

/* DELETE /v2/workflows/dlq?dlqIds=...: the DLQ's delete (rest_dlq.c), by
 * ids only: without them it would take the whole DLQ, not only the
 * workflows' dead letters. */
void qr_rest_workflow_dlq_delete(struct qr_rest *r,
                                 h2o_req_t *req,
                                 const struct rest_match *m)
{
    if (qr_rest_query_get(&req->pool, m->query, "dlqIds") == NULL) {
        qr_rest_send_error(req, 400,
                           "give the dead letters to delete: dlqIds "
                           "(selecting them by filters is not supported "
                           "yet)");
        return;
    }
    qr_rest_dlq_bulk(r, req, m);
}
