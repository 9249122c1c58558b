/* QStash-dialect REST routes on top of qr_ops_submit: the route table and
 * its matcher, the API tokens and scopes, errors and status mapping, and the
 * calls that wait for the RPC; each resource's handlers live in
 * rest_<resource>.c (rest_int.h).
 *
 * Answers that come later (after raft commit) go through a struct rest_call:
 * one reference is held by the h2o request pool (dropped, with req set to
 * NULL, when h2o disposes the request: answered, or its connection closed)
 * and one by each RPC submission still owed an answer. A call is answered at
 * most once, only while req is not NULL, and freed when the last reference
 * goes. The RPC callback may run inside qr_ops_submit; the submitting code
 * holds its own reference across the call, so that is safe too. */
#include "api/rest.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <h2o.h>
#include <jansson.h>

#include "api/rest_int.h"
#include "api/scopes.h"
#include "lib/json_text.h"
#include "lib/logger.h"
#include "lib/tokens.h"
#include "lib/utf8.h"
#include "ops/ops.h"

/* The pool's share of a call: its dispose callback drops the reference. */
struct call_link {
    struct rest_call *call;
};

void qr_rest_call_unref(struct rest_call *c)
{
    if (--c->refs > 0) {
        return;
    }
    if (c->out != NULL) {
        json_decref(c->out);
    }
    if (c->urls != NULL) {
        for (size_t i = 0; i < c->n_items; i++) {
            free(c->urls[i]);
        }
        free(c->urls);
    }
    free(c->items);
    free(c->url);
    free(c);
}

static void on_link_disposed(void *p)
{
    struct rest_call *c = ((struct call_link *)p)->call;

    LIST_REMOVE(c, link);
    c->req = NULL;
    qr_rest_call_unref(c);
}

/* Returns a new call bound to req with one reference (the pool's), or NULL
 * when out of memory. */
struct rest_call *qr_rest_call_new(struct qr_rest *r,
                                   h2o_req_t *req,
                                   rest_reply_fn on_reply)
{
    struct rest_call *c = calloc(1, sizeof(*c));
    struct call_link *link;

    if (c == NULL) {
        return NULL;
    }
    link = h2o_mem_alloc_shared(&req->pool, sizeof(*link), on_link_disposed);
    link->call = c;
    c->rest = r;
    c->req = req;
    c->refs = 1;
    c->on_reply = on_reply;
    LIST_INSERT_HEAD(&r->calls, c, link);
    return c;
}

static void send_body(h2o_req_t *req, int status, const char *body)
{
    size_t len = strlen(body);

    req->res.status = status;
    req->res.reason = status < 300 ? "OK" : "Error";
    req->res.content_length = len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/json"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-store"));
    h2o_send_inline(req, body, len);
}

/* The body of a 500 whose JSON could not be built (out of memory). After a
 * write (done: what it did; id: the message it made, or NULL) it says so:
 * a client must not take it for "nothing happened" and send the write
 * again. done and id are shown only as plain ASCII, so the body is always
 * valid JSON. */
static void send_unbuilt(h2o_req_t *req,
                         const char *done,
                         const char *id,
                         const char *why)
{
    char body[512];
    bool id_ok = id != NULL && id[0] != '\0' && strlen(id) <= 128;

    for (const char *p = id; id_ok && *p != '\0'; p++) {
        id_ok = isalnum((unsigned char)*p) || strchr("._-", *p) != NULL;
    }
    if (done == NULL) {
        snprintf(body, sizeof(body), "{\"error\":\"%s\"}", why);
    } else {
        snprintf(body, sizeof(body),
                 "{\"error\":\"%s%s%s, but %s: do not send it again; read "
                 "the state back\"}",
                 done, id_ok ? " as " : "", id_ok ? id : "", why);
    }
    send_body(req, 500, body);
}

void qr_rest_send_json(h2o_req_t *req, int status, json_t *json)
{
    char *body = json != NULL ? json_dumps(json, JSON_COMPACT) : NULL;

    json_decref(json);
    if (body == NULL) {
        send_unbuilt(req, NULL, NULL,
                     "out of memory: the reply could not be built");
        return;
    }
    send_body(req, status, body);
    free(body);
}

/* qr_rest_send_json for a call: after a write (c->done) the 500 that answers a
 * reply that cannot be built says what the write did (id: the message it
 * made, or NULL). */
void qr_rest_send_reply(struct rest_call *c,
                        int status,
                        json_t *json,
                        const char *id)
{
    char *body = json != NULL ? json_dumps(json, JSON_COMPACT) : NULL;

    json_decref(json);
    if (body == NULL) {
        send_unbuilt(c->req, c->done, id,
                     "the reply could not be built (out of memory)");
        return;
    }
    send_body(c->req, status, body);
    free(body);
}

/* Answers {"error": message}; message may hold any bytes (a request's or
 * a record's, echoed back). */
void qr_rest_send_error(h2o_req_t *req, int status, const char *message)
{
    json_t *text = qr_json_text(message);

    qr_rest_send_json(req, status,
                      text != NULL ? json_pack("{s:o}", "error", text) : NULL);
}

int qr_rest_http_status(Qraft__Status st)
{
    switch (st) {
        case QRAFT__STATUS__OK:
            return 200;
        case QRAFT__STATUS__BAD_REQUEST:
            return 400;
        case QRAFT__STATUS__UNAUTHORIZED:
            return 401;
        case QRAFT__STATUS__PERMISSION_DENIED:
            return 403;
        case QRAFT__STATUS__NOT_FOUND:
            return 404;
        case QRAFT__STATUS__TOO_LARGE:
            return 413;
        case QRAFT__STATUS__CONFLICT:
            return 409;
        case QRAFT__STATUS__UNKNOWN_OUTCOME:
            return 504;
        case QRAFT__STATUS__NOT_LEADER:
        case QRAFT__STATUS__UNAVAILABLE:
            return 503;
        case QRAFT__STATUS__INSUFFICIENT_STORAGE:
            return 507;
        default:
            return 500;
    }
}

/* What a request changes once the node answers OK, said in a 500 that
 * answers it after all (see qr_rest_send_reply); NULL for a read. */
static const char *write_outcome(const Qraft__Request *rpc_req)
{
    switch (rpc_req->body_case) {
        case QRAFT__REQUEST__BODY_PUBLISH:
            return "the message was published";
        case QRAFT__REQUEST__BODY_CANCEL:
            return "the message was cancelled";
        case QRAFT__REQUEST__BODY_CANCEL_MANY:
            return "the messages were cancelled";
        case QRAFT__REQUEST__BODY_DLQ_DELETE:
            return "the dead letters were deleted";
        case QRAFT__REQUEST__BODY_DLQ_REPLAY:
            return "the dead letters were sent again";
        case QRAFT__REQUEST__BODY_SCHEDULE_UPSERT:
            return "the schedule was saved";
        case QRAFT__REQUEST__BODY_SCHEDULE_DELETE:
            return "the schedule was deleted";
        case QRAFT__REQUEST__BODY_SCHEDULE_PAUSE:
            return "the schedule was paused or resumed";
        case QRAFT__REQUEST__BODY_QUEUE_UPSERT:
        case QRAFT__REQUEST__BODY_QUEUE_DELETE:
        case QRAFT__REQUEST__BODY_QUEUE_PAUSE:
            return "the queue was changed";
        case QRAFT__REQUEST__BODY_GROUP_CHANGE:
            return "the url group was changed";
        case QRAFT__REQUEST__BODY_FLOW_CONTROL_UPDATE:
            return "the flow control key was changed";
        case QRAFT__REQUEST__BODY_KEYS:
            return rpc_req->keys->rotate ? "the signing keys were rotated"
                                         : NULL;
        default:
            return NULL;
    }
}

/* Answers a reply that is not what the route expected: the node's error,
 * or, for an OK reply without the expected body, a 500 (never an error
 * sent with 200) that, after a write, says it happened. */
void qr_rest_send_status_error(struct rest_call *c, const Qraft__Response *resp)
{
    if (resp->status == QRAFT__STATUS__OK) {
        send_unbuilt(c->req, c->done, NULL,
                     "the node answered without the expected body");
        return;
    }
    const char *why = resp->error != NULL && resp->error[0] != '\0'
                          ? resp->error
                          : "request failed";
    qr_rest_send_error(c->req, qr_rest_http_status(resp->status), why);
}

static void on_call_reply(void *data, const Qraft__Response *resp)
{
    struct call_item *item = data;
    struct rest_call *c = item->call;

    if (c->req != NULL && !c->answered) {
        c->on_reply(c, item->index, resp);
    }
    qr_rest_call_unref(c);
}

/* ?consistency=stale (our extension; QStash has none): a read is answered
 * from this node's store as it is, without confirming with the leader. */
static bool wants_stale(h2o_req_t *req)
{
    const char *q = memchr(req->path.base, '?', req->path.len);
    if (q == NULL) {
        return false;
    }
    h2o_iovec_t query =
        h2o_iovec_init(q + 1, req->path.len - (size_t)(q - req->path.base) - 1);
    const char *v = qr_rest_query_get(&req->pool, query, "consistency");
    return v != NULL && strcmp(v, "stale") == 0;
}

/* Submits rpc_req for item (its call gains a reference while it is owed an
 * answer). On failure answers 503 unless the call is a batch. */
int qr_rest_submit(struct rest_call *c,
                   struct call_item *item,
                   Qraft__Request *rpc_req)
{
    int rv;

    if (c->req != NULL && wants_stale(c->req)) {
        rpc_req->stale = true;
    }
    c->refs++;
    rv = qr_ops_submit(c->rest->ops, rpc_req, 0, on_call_reply, item);
    if (rv != 0) {
        c->refs--;
    }
    return rv;
}

/* The head of every one-RPC reply: marks c answered and, unless resp is OK
 * and holds the body `want` (QRAFT__RESPONSE__BODY__NOT_SET: any or none),
 * answers the node's error (qr_rest_send_status_error). Returns true when resp
 * is OK and the caller answers it. body is a oneof (a union): its case is
 * checked, never its pointer. */
bool qr_rest_reply_ok(struct rest_call *c,
                      const Qraft__Response *resp,
                      Qraft__Response__BodyCase want)
{
    c->answered = true;
    if (resp->status != QRAFT__STATUS__OK ||
        (want != QRAFT__RESPONSE__BODY__NOT_SET && resp->body_case != want)) {
        qr_rest_send_status_error(c, resp);
        return false;
    }
    return true;
}

void qr_rest_on_json_reply(struct rest_call *c,
                           size_t index,
                           const Qraft__Response *resp)
{
    (void)index;
    if (qr_rest_reply_ok(c, resp, c->want)) {
        qr_rest_send_reply(c, 200, c->build(c, resp), NULL);
    }
}

char *qr_rest_capture(h2o_req_t *req, const struct rest_match *m)
{
    return qr_rest_pool_str(&req->pool, m->capture.base, m->capture.len);
}

void qr_rest_run(struct qr_rest *r,
                 h2o_req_t *req,
                 Qraft__Request *rpc_req,
                 const struct rest_answer *a)
{
    struct rest_call *c = qr_rest_call_new(
        r, req, a->on_reply != NULL ? a->on_reply : qr_rest_on_json_reply);

    if (c == NULL) {
        qr_rest_send_error(req, 503, "out of memory");
        return;
    }
    c->items = calloc(1, sizeof(*c->items));
    c->url = a->url != NULL ? strdup(a->url) : NULL;
    if (c->items == NULL || (a->url != NULL && c->url == NULL)) {
        qr_rest_send_error(req, 503, "out of memory");
        return;
    }
    c->items[0].call = c;
    c->n_items = 1;
    c->single = a->single;
    c->want = a->want;
    c->build = a->build;
    c->done = write_outcome(rpc_req);
    c->refs++; /* ours, across the submission */
    if (qr_rest_submit(c, &c->items[0], rpc_req) != 0 && c->req != NULL &&
        !c->answered) {
        c->answered = true;
        qr_rest_send_error(req, 503, "the node is shutting down");
    }
    qr_rest_call_unref(c);
}

/* The request body as JSON (new; json_decref it), or NULL after answering
 * 400 with the parser's error. */
json_t *qr_rest_load_body(h2o_req_t *req)
{
    json_error_t jerr;
    char err[ERR_BYTES];
    json_t *in =
        json_loadb(req->entity.base != NULL ? req->entity.base : "",
                   req->entity.base != NULL ? req->entity.len : 0, 0, &jerr);

    if (in == NULL) {
        snprintf(err, sizeof(err), "invalid JSON: %s (line %d, column %d)",
                 jerr.text, jerr.line, jerr.column);
        qr_rest_send_error(req, 400, err);
    }
    return in;
}

/* Schedule delete, pause, resume and queue writes: 200 with an empty
 * object (the SDK reads no body). */
json_t *qr_rest_empty_json(struct rest_call *c, const Qraft__Response *resp)
{
    (void)c;
    (void)resp;
    return json_object();
}

/* The API token the request presents (Authorization: Bearer, else
 * ?qstash_token=), or NULL when it presents none that is known. */
static const struct qr_token *authorized(struct qr_rest *r,
                                         h2o_req_t *req,
                                         h2o_iovec_t query)
{
    ssize_t at = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    const struct qr_token *tok;
    const char *t;

    if (at >= 0) {
        const h2o_iovec_t *v = &req->headers.entries[at].value;
        if (qr_rest_prefix_ci(v->base, v->len, "bearer ")) {
            tok = qr_tokens_find(r->tokens, v->base + 7, v->len - 7);
            if (tok != NULL) {
                return tok;
            }
        }
    }
    t = qr_rest_query_get(&req->pool, query, "qstash_token");
    return t != NULL ? qr_tokens_find(r->tokens, t, strlen(t)) : NULL;
}

/* ---------------------------------------------------------------------------
 * The route table. */

static bool method_is(h2o_req_t *req, const char *m)
{
    return h2o_memis(req->method.base, req->method.len, m, strlen(m));
}

static void method_not_allowed(h2o_req_t *req, const char *allow)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, allow,
                   strlen(allow));
    qr_rest_send_error(req, 405, "method not allowed");
}

/* rest_route.flags: the query goes on to the destination as it came, so
 * only the parameters the node reads are checked (and ?consistency is
 * not one of them): whatever the method, or for a POST only. */
#define ROUTE_QUERY_FORWARDED 1u
#define ROUTE_QUERY_FORWARDED_ON_POST 2u
/* Any method goes to the route's first handler (a workflow webhook). */
#define ROUTE_ANY_METHOD 4u
/* The path every route that needs no token starts with: workflow webhooks
 * (the URL is the secret, as on Upstash; docs/workflow.md). */
#define HOOKS_PREFIX "/v2/workflows/hooks/"

/* One method a route takes: its handler, and the op handed to it. */
struct rest_method {
    const char *name; /* exact, as h2o gives it; NULL ends the list */
    rest_handler *fn;
    enum rest_op op;
};

/* A route: a pattern over the raw path (without the query) and what each
 * method gets. A pattern is literal bytes with at most one capture:
 *   {id}     one non-empty segment (no '/');
 *   {queue}  one segment that must be a name, [A-Za-z0-9._-]+, checked
 *            before the method (400); empty matches only where more of the
 *            pattern follows (and is then refused as a name);
 *   {url}    the rest of the path, if it starts http:// or https:// (any
 *            case);
 *   {*}      the rest of the path, whatever it is (maybe nothing).
 * {url} and {*} end a pattern. A method the route does not take answers
 * 405 with Allow: allow, or 404 when allow is NULL. */
struct rest_route {
    const char *pattern;
    const char *allow;
    unsigned flags;
    struct rest_method methods[3];
};

/* Tried in order; the first route whose pattern matches answers. Order
 * matters only where patterns overlap: /v2/dlq/retry before /v2/dlq/{id},
 * and the /v2/schedules rows, whose last ({*}) takes what the others
 * leave. (Laid out by hand: clang-format would give each field a line.) */
/* clang-format off */
static const struct rest_route routes[] = {
    /* A destination keeps its slashes, "://" and escapes: the raw rest of
     * the path. */
    {"/v2/publish/{*}", "POST", ROUTE_QUERY_FORWARDED,
     {{"POST", qr_rest_publish, REST_GET}}},
    {"/v2/enqueue/{*}", "POST", ROUTE_QUERY_FORWARDED,
     {{"POST", qr_rest_enqueue, REST_GET}}},
    {"/v2/batch", "POST", 0, {{"POST", qr_rest_batch, REST_GET}}},
    {"/v2/messages", "DELETE", 0, {{"DELETE", qr_rest_cancel_many, REST_GET}}},
    {"/v2/events", "GET", 0, {{"GET", qr_rest_events, REST_GET}}},
    {"/v2/logs", "GET", 0, {{"GET", qr_rest_events, REST_LOGS}}},
    {"/v2/messages/{id}", "GET, DELETE", 0,
     {{"GET", qr_rest_message, REST_GET},
      {"DELETE", qr_rest_message, REST_DELETE}}},
    {"/v2/queues", "GET, POST", 0,
     {{"POST", qr_rest_queue_upsert, REST_GET},
      {"GET", qr_rest_queue, REST_GET}}},
    {"/v2/flowControl", "GET", 0, {{"GET", qr_rest_flow_control, REST_GET}}},
    {"/v2/flowControl/{id}/pause", "POST", 0,
     {{"POST", qr_rest_flow_control, REST_PAUSE}}},
    {"/v2/flowControl/{id}/resume", "POST", 0,
     {{"POST", qr_rest_flow_control, REST_RESUME}}},
    {"/v2/flowControl/{id}/pin", "POST", 0,
     {{"POST", qr_rest_flow_control, REST_PIN}}},
    {"/v2/flowControl/{id}/unpin", "POST", 0,
     {{"POST", qr_rest_flow_control, REST_UNPIN}}},
    {"/v2/flowControl/{id}/resetRate", "POST", 0,
     {{"POST", qr_rest_flow_control, REST_RESET}}},
    {"/v2/flowControl/{id}", "GET", 0,
     {{"GET", qr_rest_flow_control, REST_GET}}},
    {"/v2/globalParallelism", "GET", 0,
     {{"GET", qr_rest_global_parallelism, REST_GET}}},
    {"/v2/queues/{queue}/pause", "POST", 0,
     {{"POST", qr_rest_queue, REST_PAUSE}}},
    {"/v2/queues/{queue}/resume", "POST", 0,
     {{"POST", qr_rest_queue, REST_RESUME}}},
    {"/v2/queues/{queue}", "GET, DELETE", 0,
     {{"GET", qr_rest_queue, REST_GET},
      {"DELETE", qr_rest_queue, REST_DELETE}}},
    {"/v2/workflows/runs", "DELETE", 0,
     {{"DELETE", qr_rest_workflow_cancel_many, REST_DELETE}}},
    {"/v2/workflows/runs/{id}", "GET, DELETE", 0,
     {{"GET", qr_rest_workflow_run, REST_GET},
      {"DELETE", qr_rest_workflow_run, REST_DELETE}}},
    {"/v2/workflows/dlq", "DELETE", 0,
     {{"DELETE", qr_rest_workflow_dlq_delete, REST_DELETE}}},
    {"/v2/workflows/dlq/callback/{id}", "POST", 0,
     {{"POST", qr_rest_workflow_dlq_callback, REST_GET}}},
    {"/v2/workflows/dlq/resume", "POST", 0,
     {{"POST", qr_rest_workflow_dlq, REST_RESUME}}},
    {"/v2/workflows/dlq/restart", "POST", 0,
     {{"POST", qr_rest_workflow_dlq, REST_RESTART}}},
    {HOOKS_PREFIX "{*}", NULL, ROUTE_ANY_METHOD,
     {{"POST", qr_rest_workflow_hook, REST_GET}}},
    {"/v2/wait/{id}", "POST", 0, {{"POST", qr_rest_wait, REST_GET}}},
    {"/v2/notify/{*}", "POST", 0, {{"POST", qr_rest_notify, REST_GET}}},
    {"/v2/waiters/{id}", "GET", 0, {{"GET", qr_rest_waiters, REST_GET}}},
    {"/v2/workflows/events", "GET", 0,
     {{"GET", qr_rest_workflow_logs, REST_GET}}},
    {"/v2/workflows/logs", "GET", 0,
     {{"GET", qr_rest_workflow_logs, REST_GET}}},
    {"/v2/keys", "GET", 0, {{"GET", qr_rest_keys, REST_GET}}},
    {"/v2/keys/rotate", "POST", 0, {{"POST", qr_rest_keys, REST_ROTATE}}},
    {"/v2/rotate", "POST", 0, {{"POST", qr_rest_keys, REST_ROTATE}}},
    /* A POST without a destination is refused by create (400). */
    {"/v2/schedules", "GET", ROUTE_QUERY_FORWARDED_ON_POST,
     {{"GET", qr_rest_schedule, REST_GET},
      {"POST", qr_rest_schedule_create, REST_GET}}},
    {"/v2/schedules/", "GET", ROUTE_QUERY_FORWARDED_ON_POST,
     {{"GET", qr_rest_schedule, REST_GET},
      {"POST", qr_rest_schedule_create, REST_GET}}},
    {"/v2/schedules/{url}", "POST", ROUTE_QUERY_FORWARDED_ON_POST,
     {{"POST", qr_rest_schedule_create, REST_GET}}},
    {"/v2/schedules/{id}", "GET, DELETE, POST", ROUTE_QUERY_FORWARDED_ON_POST,
     {{"GET", qr_rest_schedule, REST_GET},
      {"DELETE", qr_rest_schedule, REST_DELETE},
      {"POST", qr_rest_schedule_create, REST_GET}}},
    /* The SDK sends PATCH, the openapi says POST: both. */
    {"/v2/schedules/{id}/pause", "PATCH, POST", ROUTE_QUERY_FORWARDED_ON_POST,
     {{"PATCH", qr_rest_schedule, REST_PAUSE},
      {"POST", qr_rest_schedule, REST_PAUSE}}},
    {"/v2/schedules/{id}/resume", "PATCH, POST", ROUTE_QUERY_FORWARDED_ON_POST,
     {{"PATCH", qr_rest_schedule, REST_RESUME},
      {"POST", qr_rest_schedule, REST_RESUME}}},
    /* A destination that is no URL (create refuses it), else not found. */
    {"/v2/schedules/{*}", NULL, ROUTE_QUERY_FORWARDED_ON_POST,
     {{"POST", qr_rest_schedule_create, REST_GET}}},
    {"/v2/dlq/retry", "POST", 0, {{"POST", qr_rest_dlq_bulk, REST_RETRY}}},
    {"/v2/dlq/retry/{id}", "POST", 0, {{"POST", qr_rest_dlq_bulk, REST_RETRY}}},
    {"/v2/dlq", "GET, DELETE", 0,
     {{"GET", qr_rest_dlq_list, REST_GET},
      {"DELETE", qr_rest_dlq_bulk, REST_DELETE}}},
    {"/v2/dlq/{id}", "GET, DELETE", 0,
     {{"GET", qr_rest_message, REST_GET_DEAD},
      {"DELETE", qr_rest_dlq_bulk, REST_DELETE}}},
    {"/v2/qraft/cluster", "GET", 0, {{"GET", qr_rest_cluster, REST_GET}}},
    {"/v2/qraft/cron", "GET", 0, {{"GET", qr_rest_cron_preview, REST_GET}}},
    {"/v2/topics", "GET", 0, {{"GET", qr_rest_topic, REST_GET}}},
    {"/v2/topics/{id}/endpoints", "POST, DELETE", 0,
     {{"POST", qr_rest_topic_endpoints, REST_ADD},
      {"DELETE", qr_rest_topic_endpoints, REST_DELETE}}},
    {"/v2/topics/{id}", "GET, DELETE", 0,
     {{"GET", qr_rest_topic, REST_GET},
      {"DELETE", qr_rest_topic, REST_DELETE}}},
};
/* clang-format on */

/* Whether path (len bytes, without the query) matches pattern (see struct
 * rest_route); *capture is what its capture covers ({NULL, 0}: none). */
static bool match(const char *pattern,
                  const char *path,
                  size_t len,
                  h2o_iovec_t *capture)
{
    size_t i = 0;

    *capture = h2o_iovec_init(NULL, 0);
    for (const char *p = pattern; *p != '\0'; p++) {
        if (*p != '{') {
            if (i == len || path[i] != *p) {
                return false;
            }
            i++;
            continue;
        }
        const char *kind = p + 1;
        h2o_iovec_t rest = h2o_iovec_init(path + i, len - i);
        p = strchr(kind, '}');
        if (kind[0] == '*' || kind[0] == 'u') { /* {*}, {url} */
            assert(p[1] == '\0');
            if (kind[0] == 'u' &&
                !qr_rest_prefix_ci(rest.base, rest.len, "http://") &&
                !qr_rest_prefix_ci(rest.base, rest.len, "https://")) {
                return false;
            }
            *capture = rest;
            return true;
        }
        /* {id}, {queue}: one segment. */
        const char *slash = memchr(rest.base, '/', rest.len);
        size_t n = slash != NULL ? (size_t)(slash - rest.base) : rest.len;
        if (n == 0 && (kind[0] == 'i' || p[1] == '\0')) {
            return false;
        }
        *capture = h2o_iovec_init(rest.base, n);
        i += n;
    }
    return i == len;
}

/* The first route whose pattern matches path, its capture in *capture;
 * NULL when none does. */
static const struct rest_route *find_route(const char *path,
                                           size_t len,
                                           h2o_iovec_t *capture)
{
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (match(routes[i].pattern, path, len, capture)) {
            return &routes[i];
        }
    }
    return NULL;
}

/* Refuses a query parameter whose name or value, percent-decoded, is not
 * UTF-8: the node reads it (a filter, an id, a cursor, Upstash-* config).
 * With config_only (a publish or a schedule, whose other parameters go on
 * to the destination as they came, percent-encoded) only the parameters
 * the node reads itself are checked. On bad input writes why into err and
 * returns -EINVAL. */
static int check_query_utf8(h2o_mem_pool_t *pool,
                            h2o_iovec_t query,
                            bool config_only,
                            char *err)
{
    struct rest_param p;
    size_t pos = 0;

    while (qr_rest_next_param(query.base, query.len, &pos, &p)) {
        if (config_only && !qr_rest_prefix_ci(p.name, p.name_len, "upstash-") &&
            !qr_rest_equal_ci(p.name, p.name_len, "qstash_token")) {
            continue;
        }
        char *name = qr_rest_query_decode(pool, p.name, p.name_len);
        char *value = qr_rest_query_decode(pool, p.value, p.value_len);
        if (!qr_utf8_valid(name, strlen(name)) ||
            !qr_utf8_valid(value, strlen(value))) {
            snprintf(err, ERR_BYTES,
                     "query parameter '%.*s' is not valid UTF-8 once "
                     "percent-decoded",
                     (int)(p.name_len > 64 ? 64 : p.name_len), p.name);
            return -EINVAL;
        }
    }
    return 0;
}

/* The method of rt that req has, or NULL (405, or 404: see allow). */
static const struct rest_method *find_method(const struct rest_route *rt,
                                             h2o_req_t *req)
{
    if ((rt->flags & ROUTE_ANY_METHOD) != 0) {
        return &rt->methods[0];
    }
    for (size_t i = 0; i < sizeof(rt->methods) / sizeof(rt->methods[0]) &&
                       rt->methods[i].name != NULL;
         i++) {
        if (method_is(req, rt->methods[i].name)) {
            return &rt->methods[i];
        }
    }
    return NULL;
}

/* The scope table's scope for one route and method. */
static unsigned method_scope(const struct rest_route *rt,
                             const struct rest_method *rm)
{
    return qr_scopes_rest((rt->flags & ROUTE_ANY_METHOD) != 0 ? "*" : rm->name,
                          rt->pattern);
}

/* 403 unless tok (NULL: none, for a route that needs none) has the scope
 * the scope table gives this route and method; returns whether it may go
 * on. */
static bool scope_ok(h2o_req_t *req,
                     const struct qr_token *tok,
                     const struct rest_route *rt,
                     const struct rest_method *rm)
{
    unsigned need = method_scope(rt, rm);
    char err[ERR_BYTES];

    if (need == 0 || (tok != NULL && (tok->scopes & need) == need)) {
        return true;
    }
    snprintf(err, sizeof err,
             "forbidden: %s %s needs a token with the '%s' scope; token "
             "'%s' lacks it",
             rm->name, rt->pattern,
             need == QR_SCOPES_UNKNOWN ? "admin" : qr_tokens_scope_name(need),
             tok != NULL ? tok->name : "?");
    qr_rest_send_error(req, 403, err);
    return false;
}

/* Answers req by the route its path matches: 403 when tok lacks the scope
 * the route and method need, then after the checks every route shares (the
 * query's UTF-8, ?consistency), 404 when none does, 400 for a bad {queue},
 * else its method's handler or 405 (404: see allow). */
static void route(struct qr_rest *r,
                  h2o_req_t *req,
                  const struct qr_token *tok,
                  const char *path,
                  size_t len,
                  h2o_iovec_t query)
{
    struct rest_match m = {.query = query};
    const struct rest_route *rt = find_route(path, len, &m.capture);
    const struct rest_method *rm = rt != NULL ? find_method(rt, req) : NULL;
    char err[ERR_BYTES];

    if (rm != NULL && !scope_ok(req, tok, rt, rm)) {
        return;
    }
    bool forwards_query =
        rt != NULL && ((rt->flags & ROUTE_QUERY_FORWARDED) != 0 ||
                       ((rt->flags & ROUTE_QUERY_FORWARDED_ON_POST) != 0 &&
                        method_is(req, "POST")));

    if (check_query_utf8(&req->pool, query, forwards_query, err) != 0) {
        qr_rest_send_error(req, 400, err);
        return;
    }
    const char *consistency =
        forwards_query ? NULL
                       : qr_rest_query_get(&req->pool, query, "consistency");
    if (consistency != NULL && strcmp(consistency, "stale") != 0 &&
        strcmp(consistency, "linearizable") != 0) {
        qr_rest_send_error(
            req, 400,
            "consistency must be linearizable (the default) or stale");
        return;
    }
    if (rt == NULL) {
        qr_rest_send_error(req, 404, "not found");
        return;
    }
    if (strstr(rt->pattern, "{queue}") != NULL &&
        !qr_rest_valid_name(m.capture.base, m.capture.len)) {
        qr_rest_send_error(req, 400, "queue name must match [A-Za-z0-9._-]+");
        return;
    }
    if (rm != NULL) {
        m.op = rm->op;
        rm->fn(r, req, &m);
        return;
    }
    if (rt->allow == NULL) {
        qr_rest_send_error(req, 404, "not found");
        return;
    }
    method_not_allowed(req, rt->allow);
}

const char *qr_rest_route_pattern(const h2o_req_t *req)
{
    const char *path = req->path.base;
    const char *q = memchr(path, '?', req->path.len);
    size_t len = q != NULL ? (size_t)(q - path) : req->path.len;
    h2o_iovec_t capture;

    if (!(len == 3 && memcmp(path, "/v2", 3) == 0) &&
        !(len > 3 && memcmp(path, "/v2/", 4) == 0)) {
        return NULL;
    }
    const struct rest_route *rt = find_route(path, len, &capture);
    return rt != NULL ? rt->pattern : "/v2/(other)";
}

bool qr_rest_handle(struct qr_rest *r, h2o_req_t *req)
{
    const char *path = req->path.base;
    size_t len = req->path.len;
    const char *q = memchr(path, '?', len);
    h2o_iovec_t query = h2o_iovec_init(NULL, 0);

    if (q != NULL) {
        query = h2o_iovec_init(q + 1, len - (size_t)(q - path) - 1);
        len = (size_t)(q - path);
    }
    if (!(len == 3 && memcmp(path, "/v2", 3) == 0) &&
        !(len > 3 && memcmp(path, "/v2/", 4) == 0)) {
        return false;
    }
    if (r->ops == NULL) {
        qr_rest_send_error(req, 503,
                           "the REST API is not available on this server");
        return true;
    }
    bool hook = len > strlen(HOOKS_PREFIX) &&
                memcmp(path, HOOKS_PREFIX, strlen(HOOKS_PREFIX)) == 0;
    const struct qr_token *tok = hook ? NULL : authorized(r, req, query);
    if (!hook && tok == NULL) {
        qr_rest_send_error(
            req, 401,
            "unauthorized: send Authorization: Bearer <token> (or "
            "?qstash_token=)");
        return true;
    }
    /* Ids, names and destinations come from the path: refused before
     * anything is proposed, never stored to fail when shown. */
    if (!qr_utf8_valid(req->path.base, req->path.len)) {
        qr_rest_send_error(
            req, 400,
            "the request path is not valid UTF-8 (percent-encode "
            "other bytes)");
        return true;
    }
    route(r, req, tok, path, len, query);
    return true;
}

/* Calls fn for each route and method of the route table. */
static int each_method(int (*fn)(const struct rest_route *,
                                 const struct rest_method *,
                                 void *),
                       void *data)
{
    int n = 0;

    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const struct rest_route *rt = &routes[i];
        for (size_t j = 0; j < sizeof(rt->methods) / sizeof(rt->methods[0]) &&
                           rt->methods[j].name != NULL &&
                           (j == 0 || (rt->flags & ROUTE_ANY_METHOD) == 0);
             j++) {
            n += fn(rt, &rt->methods[j], data);
        }
    }
    return n;
}

static int print_scope(const struct rest_route *rt,
                       const struct rest_method *rm,
                       void *data)
{
    unsigned scope = method_scope(rt, rm);

    fprintf(
        (FILE *)data, "rest %s %s %s\n",
        (rt->flags & ROUTE_ANY_METHOD) != 0 ? "*" : rm->name, rt->pattern,
        scope == QR_SCOPES_UNKNOWN ? "missing" : qr_tokens_scope_name(scope));
    return scope == QR_SCOPES_UNKNOWN;
}

int qr_rest_print_scopes(FILE *out)
{
    return each_method(print_scope, out);
}

static int scope_missing(const struct rest_route *rt,
                         const struct rest_method *rm,
                         void *data)
{
    (void)data;
    return method_scope(rt, rm) == QR_SCOPES_UNKNOWN;
}

void qr_rest_init(struct qr_rest *r,
                  struct qr_ops *ops,
                  const struct qr_tokens *tokens)
{
    /* A route without a row in the scope table is a programming error;
     * it would be refused as admin-only. */
    int missing = each_method(scope_missing, NULL);
    assert(missing == 0);
    (void)missing;
    r->ops = ops;
    r->tokens = tokens;
    LIST_INIT(&r->calls);
}

void qr_rest_abort(struct qr_rest *r)
{
    struct rest_call *next;

    for (struct rest_call *c = LIST_FIRST(&r->calls); c != NULL; c = next) {
        next = LIST_NEXT(c, link); /* answering may unlink c */
        if (c->req != NULL && !c->answered) {
            c->answered = true;
            c->req->http1_is_persistent = 0;
            qr_rest_send_error(c->req, 503, "the node is shutting down");
        }
    }
}
