/* /v2/messages: one message (GET, DELETE = cancel), bulk cancel (DELETE
 * /v2/messages), and the logs (GET /v2/events, /v2/logs), with the JSON of a
 * message (also the DLQ's) and of a log entry. */
#include "api/rest_int.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/json_text.h"
#include "ops/filter.h"

#define BULK_CANCEL_MAX 500
#define EVENTS_PAGE_MAX 1000
#define EVENTS_PAGE_DEFAULT 100

/* The request a message makes, as messages and log entries show it: url,
 * method (POST when unset) and header. */
static void set_message_request(json_t *o,
                                const Qraft__Message *m,
                                h2o_mem_pool_t *pool)
{
    json_object_set_new(o, "url", qr_json_text(m->url));
    json_object_set_new(
        o, "method", qr_json_text(m->method[0] != '\0' ? m->method : "POST"));
    json_object_set_new(o, "header",
                        qr_rest_header_map(m->headers, m->n_headers, pool));
}

/* What ties a message to others, as messages and log entries show it:
 * callbacks, queue, schedule, url group and endpoint (each omitted when
 * empty). */
static void set_message_links(json_t *o, const Qraft__Message *m)
{
    qr_rest_set_opt_string(o, "callback", m->callback);
    qr_rest_set_opt_string(o, "failureCallback", m->failure_callback);
    qr_rest_set_opt_string(o, "queueName", m->queue);
    qr_rest_set_opt_string(o, "scheduleId", m->schedule_id);
    qr_rest_set_opt_string(o, "topicName", m->topic_name);
    qr_rest_set_opt_string(o, "endpointName", m->endpoint_name);
    /* A callback message: the message it reports on (4.9). */
    qr_rest_set_opt_string(o, "sourceMessageId", m->source_message_id);
    if (m->callback_kind == QRAFT__CALLBACK_KIND__CALLBACK) {
        json_object_set_new(o, "callbackKind", json_string("callback"));
    } else if (m->callback_kind == QRAFT__CALLBACK_KIND__FAILURE_CALLBACK) {
        json_object_set_new(o, "callbackKind", json_string("failureCallback"));
    }
}

json_t *qr_rest_message_json(const Qraft__Message *m,
                             bool dlq,
                             h2o_mem_pool_t *pool)
{
    json_t *o = json_object();

    if (o == NULL) {
        return NULL;
    }
    json_object_set_new(o, "messageId", qr_json_text(m->id));
    set_message_request(o, m, pool);
    if (m->body.len > 0) {
        qr_rest_set_body(o, "body", "bodyBase64", m->body);
    }
    json_object_set_new(o, "maxRetries", json_integer(m->max_retries));
    qr_rest_set_opt_string(o, "retryDelayExpression", m->retry_delay);
    json_object_set_new(o, "createdAt",
                        json_integer((json_int_t)m->created_ms));
    json_object_set_new(
        o, "notBefore",
        json_integer((json_int_t)(m->not_before_ms > m->created_ms
                                      ? m->not_before_ms
                                      : m->created_ms)));
    set_message_links(o, m);
    qr_rest_set_opt_string(o, "callerIP", m->caller_ip);
    if (m->workflow_run_id[0] != '\0') {
        /* A workflow run's message (docs/workflow.md). */
        json_object_set_new(o, "workflowRunId",
                            qr_json_text(m->workflow_run_id));
        json_object_set_new(o, "workflowUrl", qr_json_text(m->url));
    }
    qr_rest_set_labels(o, m->labels, m->n_labels);
    qr_rest_set_flow_control(o, m->flow_control_key, m->flow_parallelism,
                             m->flow_rate, m->flow_period_s);
    if (!dlq) {
        return o;
    }
    json_object_set_new(o, "dlqId", qr_json_text(m->id));
    if (m->last_response != NULL) {
        const Qraft__AttemptResponse *lr = m->last_response;
        json_object_set_new(o, "responseStatus", json_integer(lr->status));
        json_object_set_new(
            o, "responseHeader",
            qr_rest_header_map(lr->headers, lr->n_headers, pool));
        if (lr->body.len > 0) {
            qr_rest_set_body(o, "responseBody", "responseBodyBase64", lr->body);
        }
    } else if (m->last_error != NULL && m->last_error->status != 0) {
        json_object_set_new(o, "responseStatus",
                            json_integer(m->last_error->status));
    }
    /* Why it is here (an extension: QStash says it only through the
     * response): "category: message", as the events' "error" reads. */
    const Qraft__LastError *e = m->last_error;
    if (e != NULL && e->category[0] != '\0') {
        char why[512];
        snprintf(why, sizeof why, "%s: %s", e->category, e->message);
        json_object_set_new(o, "error", qr_json_text(why));
    }
    return o;
}

/* The states a message is visible in under /v2/messages: waiting (in its
 * queue too) or in flight. Delivered, cancelled and dead-lettered ones answer
 * 404. */
static bool message_live(const Qraft__Message *m)
{
    return m->state == QRAFT__MESSAGE_STATE__PENDING ||
           m->state == QRAFT__MESSAGE_STATE__QUEUED ||
           m->state == QRAFT__MESSAGE_STATE__RETRYING ||
           m->state == QRAFT__MESSAGE_STATE__DELIVERING;
}

static void on_get_reply(struct rest_call *c,
                         size_t index,
                         const Qraft__Response *resp)
{
    const Qraft__Message *m;

    (void)index;
    if (!qr_rest_reply_ok(c, resp, QRAFT__RESPONSE__BODY_GET)) {
        return;
    }
    m = resp->get->message;
    if (m == NULL) {
        qr_rest_send_error(c->req, 404, "message not found");
        return;
    }
    if (c->single) { /* GET /v2/dlq/{id} */
        if (m->state != QRAFT__MESSAGE_STATE__DEAD_LETTERED) {
            qr_rest_send_error(c->req, 404, "dlq message not found");
            return;
        }
        qr_rest_send_reply(c, 200, qr_rest_message_json(m, true, &c->req->pool),
                           NULL);
        return;
    }
    if (!message_live(m)) {
        qr_rest_send_error(c->req, 404, "message not found");
        return;
    }
    qr_rest_send_reply(c, 200, qr_rest_message_json(m, false, &c->req->pool),
                       NULL);
}

static void on_cancel_reply(struct rest_call *c,
                            size_t index,
                            const Qraft__Response *resp)
{
    (void)index;
    if (resp->status == QRAFT__STATUS__CONFLICT) {
        c->answered = true;
        qr_rest_send_error(c->req, 404,
                           "message not found (already delivered or "
                           "dead-lettered)");
        return;
    }
    if (!qr_rest_reply_ok(c, resp, QRAFT__RESPONSE__BODY__NOT_SET)) {
        return;
    }
    qr_rest_send_reply(c, 200, json_pack("{s:i}", "cancelled", 1), NULL);
}

/* GET /v2/messages/{id}, GET /v2/dlq/{id} (REST_GET_DEAD: only a dead
 * letter, with the DLQ's fields), DELETE /v2/messages/{id} (cancel). */
void qr_rest_message(struct qr_rest *r,
                     h2o_req_t *req,
                     const struct rest_match *m)
{
    Qraft__GetRequest get = QRAFT__GET_REQUEST__INIT;
    Qraft__CancelRequest cancel = QRAFT__CANCEL_REQUEST__INIT;
    char *id = qr_rest_capture(req, m);

    if (m->op == REST_DELETE) {
        cancel.message_id = id;
        QR_REST_RUN(r, req, CANCEL, cancel, &cancel,
                    &(struct rest_answer){.on_reply = on_cancel_reply});
        return;
    }
    get.message_id = id;
    QR_REST_RUN(r, req, GET, get, &get,
                &(struct rest_answer){.on_reply = on_get_reply,
                                      .single = m->op == REST_GET_DEAD});
}

void qr_rest_on_cancelled_reply(struct rest_call *c,
                                size_t index,
                                const Qraft__Response *resp)
{
    size_t n_ok = 0;

    (void)index;
    if (!qr_rest_reply_ok(c, resp, QRAFT__RESPONSE__BODY_BULK)) {
        return;
    }
    for (size_t i = 0; i < resp->bulk->n_results; i++) {
        n_ok += resp->bulk->results[i]->status == QRAFT__STATUS__OK;
    }
    qr_rest_send_reply(c, 200,
                       json_pack("{s:I}", "cancelled", (json_int_t)n_ok), NULL);
}

/* The Go SDK's form: {"messageIds": ["...", ...]} as the body. Appends the
 * ids to *ids (pool memory); no body is fine. */
int qr_rest_body_message_ids(h2o_req_t *req, char ***ids, size_t *n, char *err)
{
    json_error_t jerr;
    json_t *in;
    json_t *list;
    const char *key;
    json_t *value;
    char **grown;
    size_t count;

    if (req->entity.base == NULL || req->entity.len == 0) {
        return 0;
    }
    in = json_loadb(req->entity.base, req->entity.len, 0, &jerr);
    if (in == NULL) {
        snprintf(err, ERR_BYTES, "invalid JSON: %s", jerr.text);
        return -EINVAL;
    }
    json_object_foreach(in, key, value)
    {
        if (strcmp(key, "messageIds") != 0) {
            snprintf(err, ERR_BYTES, "unknown field '%.64s' in the body", key);
            json_decref(in);
            return -EINVAL;
        }
    }
    list = json_object_get(in, "messageIds");
    if (!json_is_object(in) || !json_is_array(list) ||
        json_array_size(list) > MAX_IDS) {
        snprintf(err, ERR_BYTES,
                 "body must be {\"messageIds\": [...]} with at most %d ids",
                 MAX_IDS);
        json_decref(in);
        return -EINVAL;
    }
    count = json_array_size(list);
    grown = h2o_mem_alloc_pool(&req->pool, sizeof(*grown) * (*n + count + 1));
    if (*n > 0) {
        memcpy(grown, *ids, sizeof(*grown) * *n);
    }
    for (size_t i = 0; i < count; i++) {
        json_t *v = json_array_get(list, i);
        if (!json_is_string(v) || json_string_length(v) == 0) {
            snprintf(err, ERR_BYTES, "messageIds must be non-empty strings");
            json_decref(in);
            return -EINVAL;
        }
        grown[*n + i] = qr_rest_pool_str(&req->pool, json_string_value(v),
                                         json_string_length(v));
    }
    *ids = grown;
    *n += count;
    json_decref(in);
    return 0;
}

/* messageIds (query or JSON body), or filters, or nothing (= every
 * cancellable message), at most count (1..500, default 500) per call. */
void qr_rest_cancel_many(struct qr_rest *r,
                         h2o_req_t *req,
                         const struct rest_match *m)
{
    static const char *const extra[] = {"count", NULL};
    h2o_iovec_t query = m->query;
    Qraft__CancelManyRequest cm = QRAFT__CANCEL_MANY_REQUEST__INIT;
    Qraft__MessageFilter *f = h2o_mem_alloc_pool(&req->pool, sizeof(*f));
    char err[ERR_BYTES];

    if (qr_rest_parse_filter(&req->pool, query, extra, f, err) != 0 ||
        qr_rest_take_count(&req->pool, query, BULK_CANCEL_MAX, BULK_CANCEL_MAX,
                           &cm.limit, err) != 0) {
        qr_rest_send_error(req, 400, err);
        return;
    }
    /* messageIds are the ids to cancel, not a filter on them. */
    cm.message_ids = f->message_ids;
    cm.n_message_ids = f->n_message_ids;
    f->message_ids = NULL;
    f->n_message_ids = 0;
    if (qr_rest_body_message_ids(req, &cm.message_ids, &cm.n_message_ids,
                                 err) != 0) {
        qr_rest_send_error(req, 400, err);
        return;
    }
    if (cm.n_message_ids > 0 && !qr_filter_is_empty(f)) {
        qr_rest_send_error(req, 400, "give messageIds or filters, not both");
        return;
    }
    if (cm.n_message_ids > cm.limit) {
        snprintf(err, sizeof(err), "%zu messageIds for count %u",
                 cm.n_message_ids, cm.limit);
        qr_rest_send_error(req, 400, err);
        return;
    }
    cm.filter = f;
    QR_REST_RUN(r, req, CANCEL_MANY, cancel_many, &cm,
                &(struct rest_answer){.on_reply = qr_rest_on_cancelled_reply});
}

/* The HTTP status an event's detail names ("... (HTTP 503)"; fsm.c writes
 * it), or 0. */
static int detail_status(const char *detail)
{
    const char *p = strstr(detail, "HTTP ");
    return p != NULL ? atoi(p + 5) : 0;
}

/* One log entry (spec 6): the event, and what its message still has. */
static json_t *log_json(const Qraft__EventEntry *en, h2o_mem_pool_t *pool)
{
    const Qraft__Event *e = en->event;
    const Qraft__Message *m = en->message;
    json_t *o = json_object();
    int status = detail_status(e->detail);
    bool failure = en->state == QRAFT__LOG_STATE__LOG_ERROR ||
                   en->state == QRAFT__LOG_STATE__LOG_RETRY ||
                   en->state == QRAFT__LOG_STATE__LOG_FAILED;
    /* The message's last attempt is this event's attempt. */
    bool latest = m != NULL && m->attempts == e->attempt;

    json_object_set_new(o, "time", json_integer((json_int_t)e->time_ms));
    json_object_set_new(o, "messageId", qr_json_text(e->message_id));
    json_object_set_new(o, "state",
                        qr_json_text(qr_filter_log_state_name(en->state)));
    if (failure) {
        json_object_set_new(o, "error", qr_json_text(e->detail));
    }
    if (status != 0 &&
        (failure || en->state == QRAFT__LOG_STATE__LOG_DELIVERED)) {
        json_object_set_new(o, "responseStatus", json_integer(status));
    }
    if (m == NULL) {
        return o;
    }
    if (en->state == QRAFT__LOG_STATE__LOG_RETRY && latest &&
        m->state == QRAFT__MESSAGE_STATE__RETRYING) {
        json_object_set_new(o, "nextDeliveryTime",
                            json_integer((json_int_t)m->next_attempt_ms));
    }
    if (failure && latest && m->last_response != NULL) {
        const Qraft__AttemptResponse *lr = m->last_response;
        json_object_set_new(
            o, "responseHeaders",
            qr_rest_header_map(lr->headers, lr->n_headers, pool));
        if (lr->body.len > 0) {
            qr_rest_set_b64(o, "responseBody", lr->body);
        }
    }
    set_message_request(o, m, pool);
    if (m->body.len > 0) {
        qr_rest_set_b64(o, "body", m->body);
    }
    json_object_set_new(o, "maxRetries", json_integer(m->max_retries));
    json_object_set_new(o, "timeout", json_integer((json_int_t)m->timeout_ms));
    qr_rest_set_opt_string(o, "retryDelayExpression", m->retry_delay);
    set_message_links(o, m);
    qr_rest_set_labels(o, m->labels, m->n_labels);
    return o;
}

static json_t *events_page_json(struct rest_call *c,
                                const Qraft__Response *resp)
{
    json_t *list = json_array();

    for (size_t i = 0; i < resp->events->n_entries; i++) {
        json_array_append_new(
            list, log_json(resp->events->entries[i], &c->req->pool));
    }
    return qr_rest_page_json(c->single ? "logs" : "events", list,
                             resp->events->cursor);
}

/* GET /v2/events ({"events"}), GET /v2/logs (REST_LOGS: {"logs"}). */
void qr_rest_events(struct qr_rest *r,
                    h2o_req_t *req,
                    const struct rest_match *m)
{
    static const char *const extra[] = {"count", "cursor",          "state",
                                        "order", "sourceMessageId", NULL};
    h2o_iovec_t query = m->query;
    bool logs = m->op == REST_LOGS;
    Qraft__EventsRequest ev = QRAFT__EVENTS_REQUEST__INIT;
    Qraft__MessageFilter *f = h2o_mem_alloc_pool(&req->pool, sizeof(*f));
    const char *cursor = qr_rest_query_get(&req->pool, query, "cursor");
    const char *order = qr_rest_query_get(&req->pool, query, "order");
    char **names = NULL;
    size_t n_names = 0;
    char err[ERR_BYTES];

    if (qr_rest_parse_filter(&req->pool, query, extra, f, err) != 0 ||
        qr_rest_take_count(&req->pool, query, EVENTS_PAGE_MAX,
                           EVENTS_PAGE_DEFAULT, &ev.limit, err) != 0 ||
        qr_rest_take_list(&req->pool, query, "state", &names, &n_names, err) !=
            0 ||
        qr_rest_take_list(&req->pool, query, "sourceMessageId",
                          &f->source_message_ids, &f->n_source_message_ids,
                          err) != 0) {
        qr_rest_send_error(req, 400, err);
        return;
    }
    ev.states = h2o_mem_alloc_pool(
        &req->pool,
        sizeof(*ev.states) * (n_names * QR_FILTER_MAX_LOG_STATES + 1));
    for (size_t i = 0; i < n_names; i++) {
        int k = qr_filter_parse_log_state(names[i], strlen(names[i]),
                                          ev.states + ev.n_states);
        if (k < 0) {
            snprintf(err, sizeof(err),
                     "unknown state '%.64s': want CREATED, ACTIVE, DELIVERED, "
                     "ERROR, RETRY, FAILED, CANCEL_REQUESTED, CANCELLED, "
                     "CANCELED or IN_PROGRESS",
                     names[i]);
            qr_rest_send_error(req, 400, err);
            return;
        }
        ev.n_states += (size_t)k;
    }
    if (order != NULL) {
        if (strcasecmp(order, "earliestFirst") == 0 ||
            strcasecmp(order, "asc") == 0) {
            ev.oldest_first = true;
        } else if (strcasecmp(order, "latestFirst") != 0 &&
                   strcasecmp(order, "desc") != 0) {
            qr_rest_send_error(
                req, 400,
                "order must be latestFirst (default) or earliestFirst");
            return;
        }
    }
    ev.filter = f;
    ev.cursor = cursor != NULL ? (char *)cursor : (char *)"";
    QR_REST_RUN(r, req, EVENTS, events, &ev,
                &(struct rest_answer){.want = QRAFT__RESPONSE__BODY_EVENTS,
                                      .build = events_page_json,
                                      .single = logs});
}
