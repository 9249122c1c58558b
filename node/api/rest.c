/* QStash-dialect REST routes on top of qr_rpc_submit: the route table and
 * its matcher, the API token, errors and status mapping, and the calls that
 * wait for the RPC; each resource's handlers live in rest_<resource>.c
 * (rest_int.h).
 *
 * Answers that come later (after raft commit) go through a struct rest_call:
 * one reference is held by the h2o request pool (dropped, with req set to
 * NULL, when h2o disposes the request: answered, or its connection closed)
 * and one by each RPC submission still owed an answer. A call is answered at
 * most once, only while req is not NULL, and freed when the last reference
 * goes. The RPC callback may run inside qr_rpc_submit; the submitting code
 * holds its own reference across the call, so that is safe too. */
#include "api/rest.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <h2o.h>
#include <jansson.h>

#include "api/rest_int.h"
#include "api/rpc.h"
#include "lib/json_text.h"
#include "lib/logger.h"
#include "lib/utf8.h"

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

static void unlink_call(struct rest_call *c)
{
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else if (c->rest->calls == c) {
        c->rest->calls = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    c->prev = NULL;
    c->next = NULL;
}

static void on_link_disposed(void *p)
{
    struct rest_call *c = ((struct call_link *)p)->call;

    unlink_call(c);
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
    c->next = r->calls;
    if (r->calls != NULL) {
        r->calls->prev = c;
    }
    r->calls = c;
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

/* Answers json (takes ownership); a reply that cannot be built (json NULL,
 * or json_dumps out of memory) is a 500 that says so. */
static void send_json(h2o_req_t *req, int status, json_t *json)
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

/* send_json for a call: after a write (c->done) the 500 that answers a
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

    send_json(req, status,
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
    rv = qr_rpc_submit(c->rest->rpc, rpc_req, on_call_reply, item);
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

/* Runs one request for a fresh call on req; answers 503 if it cannot.
 * want and build are kept for qr_rest_on_json_reply (qr_rest_run_json). */
void qr_rest_start_single(struct qr_rest *r,
                          h2o_req_t *req,
                          Qraft__Request *rpc_req,
                          rest_reply_fn on_reply,
                          Qraft__Response__BodyCase want,
                          rest_json_fn build,
                          const char *url,
                          bool single)
{
    struct rest_call *c = qr_rest_call_new(r, req, on_reply);

    if (c == NULL) {
        qr_rest_send_error(req, 503, "out of memory");
        return;
    }
    c->items = calloc(1, sizeof(*c->items));
    c->url = url != NULL ? strdup(url) : NULL;
    if (c->items == NULL || (url != NULL && c->url == NULL)) {
        qr_rest_send_error(req, 503, "out of memory");
        return;
    }
    c->items[0].call = c;
    c->n_items = 1;
    c->single = single;
    c->want = want;
    c->build = build;
    c->done = write_outcome(rpc_req);
    c->refs++; /* ours, across the submission */
    if (qr_rest_submit(c, &c->items[0], rpc_req) != 0 && c->req != NULL &&
        !c->answered) {
        c->answered = true;
        qr_rest_send_error(req, 503, "the node is shutting down");
    }
    qr_rest_call_unref(c);
}

/* Runs one request whose reply on_reply answers itself (qr_rest_reply_ok
 * first). */
void qr_rest_run_single(struct qr_rest *r,
                        h2o_req_t *req,
                        Qraft__Request *rpc_req,
                        rest_reply_fn on_reply,
                        const char *url,
                        bool single)
{
    qr_rest_start_single(r, req, rpc_req, on_reply,
                         QRAFT__RESPONSE__BODY__NOT_SET, NULL, url, single);
}

/* The path of a route that is one RPC answered with JSON: submits rpc_req
 * (borrowed) for req; a reply that is not OK or lacks the body `want`
 * (QRAFT__RESPONSE__BODY__NOT_SET: any) answers {"error"} with the node's
 * status, an OK one 200 with what build makes of it. single is c->single
 * for build. 503 when it cannot qr_rest_submit. */
void qr_rest_run_json(struct qr_rest *r,
                      h2o_req_t *req,
                      Qraft__Request *rpc_req,
                      Qraft__Response__BodyCase want,
                      rest_json_fn build,
                      bool single)
{
    qr_rest_start_single(r, req, rpc_req, qr_rest_on_json_reply, want, build,
                         NULL, single);
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

static bool one_segment(const char *s, size_t len);

/* Everything under /v2/schedules; rest is what follows "/v2/schedules/"
 * (NULL for the collection itself). */
static void route_schedules(struct qr_rest *r,
                            h2o_req_t *req,
                            const char *rest,
                            size_t rest_len,
                            h2o_iovec_t query)
{
    if (rest == NULL || rest_len == 0) {
        if (qr_rest_method_is(req, "GET")) {
            qr_rest_handle_schedule_get(r, req, NULL, 0);
        } else if (qr_rest_method_is(req, "POST")) {
            qr_rest_send_error(req, 400, "destination missing");
        } else {
            qr_rest_method_not_allowed(req, "GET");
        }
        return;
    }
    if (qr_rest_prefix_ci(rest, rest_len, "http://") ||
        qr_rest_prefix_ci(rest, rest_len, "https://")) {
        if (!qr_rest_method_only(req, "POST")) {
            return;
        }
        qr_rest_handle_schedule_create(r, req, rest, rest_len, query);
        return;
    }
    if (one_segment(rest, rest_len)) {
        if (qr_rest_method_is(req, "GET")) {
            qr_rest_handle_schedule_get(r, req, rest, rest_len);
        } else if (qr_rest_method_is(req, "DELETE")) {
            qr_rest_handle_schedule_delete(r, req, rest, rest_len);
        } else if (qr_rest_method_is(req, "POST")) {
            qr_rest_handle_schedule_create(r, req, rest, rest_len, query);
        } else {
            qr_rest_method_not_allowed(req, "GET, DELETE, POST");
        }
        return;
    }
    const char *slash = memchr(rest, '/', rest_len);
    size_t id_len = (size_t)(slash - rest);
    const char *action = slash + 1;
    size_t action_len = rest_len - id_len - 1;
    bool pause = action_len == 5 && memcmp(action, "pause", 5) == 0;
    bool resume = action_len == 6 && memcmp(action, "resume", 6) == 0;
    if (id_len == 0 || (!pause && !resume)) {
        if (qr_rest_method_is(req, "POST")) { /* a destination that is no URL */
            qr_rest_handle_schedule_create(r, req, rest, rest_len, query);
        } else {
            qr_rest_send_error(req, 404, "not found");
        }
        return;
    }
    /* The SDK sends PATCH, the openapi says POST: both. */
    if (!qr_rest_method_is(req, "PATCH") && !qr_rest_method_is(req, "POST")) {
        qr_rest_method_not_allowed(req, "PATCH, POST");
        return;
    }
    qr_rest_handle_schedule_pause(r, req, rest, id_len, pause);
}

/* Constant-time comparison of a presented token with the API token. */
static bool token_ok(const char *token, const char *given, size_t len)
{
    size_t tlen = strlen(token);
    unsigned char diff = (unsigned char)(tlen != len);

    for (size_t i = 0; i < len; i++) {
        diff |= (unsigned char)(given[i] ^ token[i < tlen ? i : 0]);
    }
    return diff == 0 && tlen > 0;
}

static bool authorized(struct qr_rest *r, h2o_req_t *req, h2o_iovec_t query)
{
    ssize_t at = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    const char *t;

    if (at >= 0) {
        const h2o_iovec_t *v = &req->headers.entries[at].value;
        if (qr_rest_prefix_ci(v->base, v->len, "bearer ") &&
            token_ok(r->token, v->base + 7, v->len - 7)) {
            return true;
        }
    }
    t = qr_rest_query_get(&req->pool, query, "qstash_token");
    return t != NULL && token_ok(r->token, t, strlen(t));
}

bool qr_rest_method_is(h2o_req_t *req, const char *m)
{
    return h2o_memis(req->method.base, req->method.len, m, strlen(m));
}

void qr_rest_method_not_allowed(h2o_req_t *req, const char *allow)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, allow,
                   strlen(allow));
    qr_rest_send_error(req, 405, "method not allowed");
}

/* Whether req uses method m, the only one its route takes; else answers
 * 405 with Allow: m. */
bool qr_rest_method_only(h2o_req_t *req, const char *m)
{
    if (qr_rest_method_is(req, m)) {
        return true;
    }
    qr_rest_method_not_allowed(req, m);
    return false;
}

/* Matches path against "/v2/<word>" exactly or "/v2/<word>/..." (then *rest
 * points after the slash). */
static bool path_is(const char *path,
                    size_t len,
                    const char *word,
                    const char **rest,
                    size_t *rest_len)
{
    size_t wlen = strlen(word);

    if (len < wlen || memcmp(path, word, wlen) != 0) {
        return false;
    }
    if (len == wlen) {
        *rest = NULL;
        *rest_len = 0;
        return true;
    }
    if (path[wlen] != '/') {
        return false;
    }
    *rest = path + wlen + 1;
    *rest_len = len - wlen - 1;
    return true;
}

/* Routes with an id: it must be one non-empty segment. */
static bool one_segment(const char *s, size_t len)
{
    return s != NULL && len > 0 && memchr(s, '/', len) == NULL;
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

static void route(struct qr_rest *r,
                  h2o_req_t *req,
                  const char *path,
                  size_t len,
                  h2o_iovec_t query)
{
    const char *rest;
    size_t rest_len;
    char err[ERR_BYTES];
    bool forwards_query =
        ((path_is(path, len, "/v2/publish", &rest, &rest_len) ||
          path_is(path, len, "/v2/enqueue", &rest, &rest_len)) &&
         rest != NULL) ||
        (path_is(path, len, "/v2/schedules", &rest, &rest_len) &&
         qr_rest_method_is(req, "POST"));

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

    if (path_is(path, len, "/v2/publish", &rest, &rest_len) && rest != NULL) {
        if (!qr_rest_method_only(req, "POST")) {
            return;
        }
        qr_rest_handle_publish(r, req, NULL, 0, rest, rest_len, query);
        return;
    }
    if (path_is(path, len, "/v2/enqueue", &rest, &rest_len) && rest != NULL) {
        const char *slash = memchr(rest, '/', rest_len);
        size_t qlen = slash != NULL ? (size_t)(slash - rest) : rest_len;
        if (!qr_rest_method_only(req, "POST")) {
            return;
        }
        if (!qr_rest_valid_name(rest, qlen)) {
            qr_rest_send_error(req, 400,
                               "queue name must match [A-Za-z0-9._-]+");
            return;
        }
        qr_rest_handle_publish(r, req, rest, qlen,
                               slash != NULL ? slash + 1 : "",
                               slash != NULL ? rest_len - qlen - 1 : 0, query);
        return;
    }
    if (path_is(path, len, "/v2/batch", &rest, &rest_len) && rest == NULL) {
        if (!qr_rest_method_only(req, "POST")) {
            return;
        }
        qr_rest_handle_batch(r, req);
        return;
    }
    if (path_is(path, len, "/v2/messages", &rest, &rest_len) && rest == NULL) {
        if (!qr_rest_method_only(req, "DELETE")) {
            return;
        }
        qr_rest_handle_cancel_many(r, req, query);
        return;
    }
    if ((path_is(path, len, "/v2/events", &rest, &rest_len) ||
         path_is(path, len, "/v2/logs", &rest, &rest_len)) &&
        rest == NULL) {
        if (!qr_rest_method_only(req, "GET")) {
            return;
        }
        qr_rest_handle_events(r, req, query, path[4] == 'l');
        return;
    }
    if (path_is(path, len, "/v2/messages", &rest, &rest_len) &&
        one_segment(rest, rest_len)) {
        if (!qr_rest_method_is(req, "GET") &&
            !qr_rest_method_is(req, "DELETE")) {
            qr_rest_method_not_allowed(req, "GET, DELETE");
            return;
        }
        qr_rest_handle_message(r, req, rest, rest_len, false);
        return;
    }
    if (path_is(path, len, "/v2/queues", &rest, &rest_len) &&
        (rest == NULL || rest_len > 0)) {
        qr_rest_handle_queues(r, req, rest, rest_len);
        return;
    }
    if ((path_is(path, len, "/v2/keys", &rest, &rest_len) && rest == NULL)) {
        if (!qr_rest_method_only(req, "GET")) {
            return;
        }
        qr_rest_handle_keys(r, req, false);
        return;
    }
    if ((path_is(path, len, "/v2/keys/rotate", &rest, &rest_len) ||
         path_is(path, len, "/v2/rotate", &rest, &rest_len)) &&
        rest == NULL) {
        if (!qr_rest_method_only(req, "POST")) {
            return;
        }
        qr_rest_handle_keys(r, req, true);
        return;
    }
    if (path_is(path, len, "/v2/schedules", &rest, &rest_len)) {
        route_schedules(r, req, rest, rest_len, query);
        return;
    }
    if (path_is(path, len, "/v2/dlq/retry", &rest, &rest_len) &&
        (rest == NULL || one_segment(rest, rest_len))) {
        if (!qr_rest_method_only(req, "POST")) {
            return;
        }
        qr_rest_handle_dlq_bulk(r, req, rest, rest_len, query, true);
        return;
    }
    if (path_is(path, len, "/v2/dlq", &rest, &rest_len) && rest == NULL) {
        if (qr_rest_method_is(req, "GET")) {
            qr_rest_handle_dlq_list(r, req, query);
        } else if (qr_rest_method_is(req, "DELETE")) {
            qr_rest_handle_dlq_bulk(r, req, NULL, 0, query, false);
        } else {
            qr_rest_method_not_allowed(req, "GET, DELETE");
        }
        return;
    }
    if (path_is(path, len, "/v2/dlq", &rest, &rest_len) &&
        one_segment(rest, rest_len)) {
        if (qr_rest_method_is(req, "GET")) {
            qr_rest_handle_message(r, req, rest, rest_len, true);
        } else if (qr_rest_method_is(req, "DELETE")) {
            qr_rest_handle_dlq_bulk(r, req, rest, rest_len, query, false);
        } else {
            qr_rest_method_not_allowed(req, "GET, DELETE");
        }
        return;
    }
    if (path_is(path, len, "/v2/topics", &rest, &rest_len)) {
        static const char suffix[] = "/endpoints";
        size_t slen = sizeof(suffix) - 1;
        if (rest == NULL) {
            if (!qr_rest_method_only(req, "GET")) {
                return;
            }
            qr_rest_handle_topics(r, req, NULL, 0, false);
            return;
        }
        if (rest_len > slen &&
            memcmp(rest + rest_len - slen, suffix, slen) == 0 &&
            one_segment(rest, rest_len - slen)) {
            if (!qr_rest_method_is(req, "POST") &&
                !qr_rest_method_is(req, "DELETE")) {
                qr_rest_method_not_allowed(req, "POST, DELETE");
                return;
            }
            qr_rest_handle_topics(r, req, rest, rest_len - slen, true);
            return;
        }
        if (one_segment(rest, rest_len)) {
            if (!qr_rest_method_is(req, "GET") &&
                !qr_rest_method_is(req, "DELETE")) {
                qr_rest_method_not_allowed(req, "GET, DELETE");
                return;
            }
            qr_rest_handle_topics(r, req, rest, rest_len, false);
            return;
        }
    }
    qr_rest_send_error(req, 404, "not found");
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
    if (r->rpc == NULL) {
        qr_rest_send_error(req, 503,
                           "the REST API is not available on this server");
        return true;
    }
    if (!authorized(r, req, query)) {
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
    route(r, req, path, len, query);
    return true;
}

void qr_rest_init(struct qr_rest *r, struct qr_rpc *rpc, const char *token)
{
    r->rpc = rpc;
    r->token = token;
    r->calls = NULL;
}

void qr_rest_abort(struct qr_rest *r)
{
    struct rest_call *next;

    for (struct rest_call *c = r->calls; c != NULL; c = next) {
        next = c->next; /* answering may unlink c */
        if (c->req != NULL && !c->answered) {
            c->answered = true;
            c->req->http1_is_persistent = 0;
            qr_rest_send_error(c->req, 503, "the node is shutting down");
        }
    }
}
