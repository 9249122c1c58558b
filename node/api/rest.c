/* QStash-dialect REST routes on top of qr_ops_submit.
 *
 * Answers that come later (after raft commit) go through a struct rest_call:
 * one reference is held by the h2o request pool (dropped, with req set to
 * NULL, when h2o disposes the request: answered, or its connection closed)
 * and one by each RPC submission still owed an answer. A call is answered at
 * most once, only while req is not NULL, and freed when the last reference
 * goes. The RPC callback may run inside qr_ops_submit; the submitting code
 * holds its own reference across the call, so that is safe too. */
#include "api/rest.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <h2o.h>
#include <jansson.h>

#include "lib/json_text.h"
#include "lib/logger.h"
#include "lib/utf8.h"
#include "ops/filter.h"
#include "ops/ops.h"
#include "qraft.pb-c.h"
#include "repl/command.h"

#define ERR_BYTES 256
#define MAX_BATCH 1000
#define DLQ_PAGE_MAX 100
#define MAX_IDS 1000

/* ---------------------------------------------------------------------------
 * Calls awaiting the RPC. */

struct rest_call;
typedef void (*reply_fn)(struct rest_call *c,
                         size_t index,
                         const Qraft__Response *resp);
/* Builds the JSON a 200 answers from an OK response (see run_json): a new
 * reference, or NULL (out of memory: answered 500). */
typedef json_t *(*json_fn)(struct rest_call *c, const Qraft__Response *resp);

/* One RPC submission of a call (a batch has many). */
struct call_item {
    struct rest_call *call;
    size_t index;
};

struct rest_call {
    struct qr_rest *rest;
    h2o_req_t *req; /* NULL once h2o disposed the request */
    struct rest_call *prev;
    struct rest_call *next;
    unsigned refs;
    bool answered;
    reply_fn on_reply;
    /* Route state. */
    char *url;        /* publish: the destination echoed back */
    bool single;      /* DLQ retry of one id: answer {"messageId"};
                         events: answer {"logs"} (GET /v2/logs) */
    json_t *out;      /* batch: the answer array being filled */
    size_t n_pending; /* batch: submissions not answered yet */
    char **urls;      /* batch: each element's destination */
    struct call_item *items;
    size_t n_items;
    /* run_json: the body an OK answer must hold, and its JSON. */
    Qraft__Response__BodyCase want;
    json_fn build;
    /* A write: what it did once the node answered OK (write_outcome), said
     * in the 500 that answers when its reply cannot be built; NULL for a
     * read. */
    const char *done;
};

/* The pool's share of a call: its dispose callback drops the reference. */
struct call_link {
    struct rest_call *call;
};

static void call_unref(struct rest_call *c)
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
    call_unref(c);
}

/* Returns a new call bound to req with one reference (the pool's), or NULL
 * when out of memory. */
static struct rest_call *call_new(struct qr_rest *r,
                                  h2o_req_t *req,
                                  reply_fn on_reply)
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

/* ---------------------------------------------------------------------------
 * Responses. */

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
static void send_reply(struct rest_call *c,
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
static void send_error(h2o_req_t *req, int status, const char *message)
{
    json_t *text = qr_json_text(message);

    send_json(req, status,
              text != NULL ? json_pack("{s:o}", "error", text) : NULL);
}

static int http_status(Qraft__Status st)
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
 * answers it after all (see send_reply); NULL for a read. */
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
static void send_status_error(struct rest_call *c, const Qraft__Response *resp)
{
    if (resp->status == QRAFT__STATUS__OK) {
        send_unbuilt(c->req, c->done, NULL,
                     "the node answered without the expected body");
        return;
    }
    const char *why = resp->error != NULL && resp->error[0] != '\0'
                          ? resp->error
                          : "request failed";
    send_error(c->req, http_status(resp->status), why);
}

static void on_call_reply(void *data, const Qraft__Response *resp)
{
    struct call_item *item = data;
    struct rest_call *c = item->call;

    if (c->req != NULL && !c->answered) {
        c->on_reply(c, item->index, resp);
    }
    call_unref(c);
}

static char *query_get(h2o_mem_pool_t *pool,
                       h2o_iovec_t query,
                       const char *name);

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
    const char *v = query_get(&req->pool, query, "consistency");
    return v != NULL && strcmp(v, "stale") == 0;
}

/* Submits rpc_req for item (its call gains a reference while it is owed an
 * answer). On failure answers 503 unless the call is a batch. */
static int submit(struct rest_call *c,
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
 * answers the node's error (send_status_error). Returns true when resp is
 * OK and the caller answers it. body is a oneof (a union): its case is
 * checked, never its pointer. */
static bool reply_ok(struct rest_call *c,
                     const Qraft__Response *resp,
                     Qraft__Response__BodyCase want)
{
    c->answered = true;
    if (resp->status != QRAFT__STATUS__OK ||
        (want != QRAFT__RESPONSE__BODY__NOT_SET && resp->body_case != want)) {
        send_status_error(c, resp);
        return false;
    }
    return true;
}

static void on_json_reply(struct rest_call *c,
                          size_t index,
                          const Qraft__Response *resp)
{
    (void)index;
    if (reply_ok(c, resp, c->want)) {
        send_reply(c, 200, c->build(c, resp), NULL);
    }
}

/* Runs one request for a fresh call on req; answers 503 if it cannot.
 * want and build are kept for on_json_reply (run_json). */
static void start_single(struct qr_rest *r,
                         h2o_req_t *req,
                         Qraft__Request *rpc_req,
                         reply_fn on_reply,
                         Qraft__Response__BodyCase want,
                         json_fn build,
                         const char *url,
                         bool single)
{
    struct rest_call *c = call_new(r, req, on_reply);

    if (c == NULL) {
        send_error(req, 503, "out of memory");
        return;
    }
    c->items = calloc(1, sizeof(*c->items));
    c->url = url != NULL ? strdup(url) : NULL;
    if (c->items == NULL || (url != NULL && c->url == NULL)) {
        send_error(req, 503, "out of memory");
        return;
    }
    c->items[0].call = c;
    c->n_items = 1;
    c->single = single;
    c->want = want;
    c->build = build;
    c->done = write_outcome(rpc_req);
    c->refs++; /* ours, across the submission */
    if (submit(c, &c->items[0], rpc_req) != 0 && c->req != NULL &&
        !c->answered) {
        c->answered = true;
        send_error(req, 503, "the node is shutting down");
    }
    call_unref(c);
}

/* Runs one request whose reply on_reply answers itself (reply_ok first). */
static void run_single(struct qr_rest *r,
                       h2o_req_t *req,
                       Qraft__Request *rpc_req,
                       reply_fn on_reply,
                       const char *url,
                       bool single)
{
    start_single(r, req, rpc_req, on_reply, QRAFT__RESPONSE__BODY__NOT_SET,
                 NULL, url, single);
}

/* The path of a route that is one RPC answered with JSON: submits rpc_req
 * (borrowed) for req; a reply that is not OK or lacks the body `want`
 * (QRAFT__RESPONSE__BODY__NOT_SET: any) answers {"error"} with the node's
 * status, an OK one 200 with what build makes of it. single is c->single
 * for build. 503 when it cannot submit. */
static void run_json(struct qr_rest *r,
                     h2o_req_t *req,
                     Qraft__Request *rpc_req,
                     Qraft__Response__BodyCase want,
                     json_fn build,
                     bool single)
{
    start_single(r, req, rpc_req, on_json_reply, want, build, NULL, single);
}

/* ---------------------------------------------------------------------------
 * Small parsers. */

static bool prefix_ci(const char *s, size_t len, const char *prefix)
{
    size_t plen = strlen(prefix);
    return len >= plen && strncasecmp(s, prefix, plen) == 0;
}

static bool equal_ci(const char *s, size_t len, const char *word)
{
    return len == strlen(word) && strncasecmp(s, word, len) == 0;
}

static bool valid_name(const char *s, size_t len)
{
    if (len == 0 || len > 256) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' &&
            s[i] != '-') {
            return false;
        }
    }
    return true;
}

/* Decimal and duration parsing live in command.c (unit-tested there). */
static int parse_uint(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    return qr_command_parse_uint(s, len, max, out);
}

static int parse_duration(const char *s, size_t len, uint64_t *out_ms)
{
    return qr_command_parse_duration(s, len, out_ms);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c = (char)tolower((unsigned char)c);
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

/* Percent-decodes a query value ('+' is a space) into pool memory. */
static char *query_decode(h2o_mem_pool_t *pool, const char *s, size_t len)
{
    char *out = h2o_mem_alloc_pool(pool, len + 1);
    size_t n = 0;

    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len && hexval(s[i + 1]) >= 0 &&
            hexval(s[i + 2]) >= 0) {
            out[n++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else if (s[i] == '+') {
            out[n++] = ' ';
        } else {
            out[n++] = s[i];
        }
    }
    out[n] = '\0';
    return out;
}

/* One name=value of a query string (raw, not decoded). */
struct query_param {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* Fills the next parameter from *pos; false at the end. */
static bool next_param(const char *q,
                       size_t len,
                       size_t *pos,
                       struct query_param *p)
{
    while (*pos < len) {
        const char *start = q + *pos;
        const char *amp = memchr(start, '&', len - *pos);
        size_t plen = amp != NULL ? (size_t)(amp - start) : len - *pos;
        const char *eq = memchr(start, '=', plen);

        *pos += plen + (amp != NULL ? 1 : 0);
        if (plen == 0) {
            continue;
        }
        p->name = start;
        p->name_len = eq != NULL ? (size_t)(eq - start) : plen;
        p->value = eq != NULL ? eq + 1 : start + plen;
        p->value_len = eq != NULL ? plen - p->name_len - 1 : 0;
        return true;
    }
    return false;
}

/* The first value of parameter name, decoded, or NULL. */
static char *query_get(h2o_mem_pool_t *pool,
                       h2o_iovec_t query,
                       const char *name)
{
    struct query_param p;
    size_t pos = 0;

    while (next_param(query.base, query.len, &pos, &p)) {
        if (equal_ci(p.name, p.name_len, name)) {
            return query_decode(pool, p.value, p.value_len);
        }
    }
    return NULL;
}

/* Every value of parameter name (repeated or comma-separated), decoded,
 * into ids (pool memory; ids NULL: only counts); returns how many, or -1
 * over max. */
static int query_list(h2o_mem_pool_t *pool,
                      h2o_iovec_t query,
                      const char *name,
                      char **ids,
                      size_t max)
{
    struct query_param p;
    size_t pos = 0;
    size_t n = 0;

    while (next_param(query.base, query.len, &pos, &p)) {
        char *v;
        char *save = NULL;
        if (!equal_ci(p.name, p.name_len, name)) {
            continue;
        }
        v = query_decode(pool, p.value, p.value_len);
        for (char *tok = strtok_r(v, ",", &save); tok != NULL;
             tok = strtok_r(NULL, ",", &save)) {
            if (n == max) {
                return -1;
            }
            if (ids != NULL) {
                ids[n] = tok;
            }
            n++;
        }
    }
    return (int)n;
}

/* Writes name in Go's canonical form into pool memory. */
static char *canonical(h2o_mem_pool_t *pool, const char *name, size_t len)
{
    char *out = h2o_mem_alloc_pool(pool, len + 1);
    bool upper = true;

    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)name[i];
        out[i] = (char)(upper ? toupper(ch) : tolower(ch));
        upper = ch == '-';
    }
    out[len] = '\0';
    return out;
}

static char *pool_str(h2o_mem_pool_t *pool, const char *s, size_t len)
{
    return h2o_strdup(pool, s, len).base;
}

static void base64_encode(const uint8_t *in, size_t len, char *out)
{
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;

    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len) {
            v |= (uint32_t)in[i + 1] << 8;
        }
        if (i + 2 < len) {
            v |= in[i + 2];
        }
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? tbl[v & 63] : '=';
    }
    out[o] = '\0';
}

/* ---------------------------------------------------------------------------
 * Publish requests. */

struct pub {
    Qraft__PublishRequest pr;
    Qraft__Header **headers; /* pool memory */
    size_t cap;
    size_t labels_cap; /* pr.labels: pool memory, grown by copying */
};

static void pub_init(struct pub *p, h2o_mem_pool_t *pool, size_t max_headers)
{
    qraft__publish_request__init(&p->pr);
    p->cap = max_headers;
    p->headers = h2o_mem_alloc_pool(
        pool, sizeof(*p->headers) * (max_headers > 0 ? max_headers : 1));
    p->pr.headers = p->headers;
    p->pr.n_headers = 0;
    p->labels_cap = 0;
}

/* Appends the labels of one Upstash-Label value ("a,b,c"; blanks around
 * each are dropped, empty ones skipped). */
static void pub_add_labels(struct pub *p,
                           h2o_mem_pool_t *pool,
                           const char *val,
                           size_t vlen)
{
    size_t i = 0;

    while (i < vlen) {
        const char *start = val + i;
        const char *comma = memchr(start, ',', vlen - i);
        size_t n = comma != NULL ? (size_t)(comma - start) : vlen - i;
        i += n + 1;
        while (n > 0 && isspace((unsigned char)*start)) {
            start++;
            n--;
        }
        while (n > 0 && isspace((unsigned char)start[n - 1])) {
            n--;
        }
        if (n == 0) {
            continue;
        }
        if (p->pr.n_labels == p->labels_cap) {
            size_t cap = p->labels_cap ? 2 * p->labels_cap : 8;
            char **grown = h2o_mem_alloc_pool(pool, sizeof(*grown) * cap);
            if (p->pr.n_labels > 0) {
                memcpy(grown, p->pr.labels, sizeof(*grown) * p->pr.n_labels);
            }
            p->pr.labels = grown;
            p->labels_cap = cap;
        }
        p->pr.labels[p->pr.n_labels++] = pool_str(pool, start, n);
    }
}

static void pub_add_header(struct pub *p,
                           h2o_mem_pool_t *pool,
                           char *name,
                           const char *value,
                           size_t value_len)
{
    Qraft__Header *h;

    if (p->pr.n_headers == p->cap) {
        return; /* cannot happen: cap counts every input header */
    }
    h = h2o_mem_alloc_pool(pool, sizeof(*h));
    qraft__header__init(h);
    h->name = name;
    h->value = pool_str(pool, value, value_len);
    p->headers[p->pr.n_headers++] = h;
}

/* Refuses a header the node reads or stores (Content-Type and Upstash-*:
 * forwarded headers, callbacks, labels, keys, ids... that replies show as
 * JSON later) unless its name and value are UTF-8; any other header is
 * ignored, whatever its bytes. On bad input writes why into err and returns
 * -EINVAL. */
static int check_header_utf8(const char *name,
                             size_t nlen,
                             const char *val,
                             size_t vlen,
                             char *err)
{
    if (!equal_ci(name, nlen, "content-type") &&
        !prefix_ci(name, nlen, "upstash-")) {
        return 0;
    }
    if (!qr_utf8_valid(name, nlen) || !qr_utf8_valid(val, vlen)) {
        snprintf(err, ERR_BYTES,
                 "header %.*s is not valid UTF-8 (send binary data in the "
                 "body, or percent- or base64-encoded)",
                 (int)(nlen > 64 ? 64 : nlen), name);
        return -EINVAL;
    }
    return 0;
}

/* Applies one request header to p; on bad input writes why into err and
 * returns -EINVAL. */
static int apply_header(struct pub *p,
                        h2o_mem_pool_t *pool,
                        const char *name,
                        size_t nlen,
                        const char *val,
                        size_t vlen,
                        char *err)
{
    static const char fwd[] = "upstash-forward-";
    uint64_t v;

    if (check_header_utf8(name, nlen, val, vlen, err) != 0) {
        return -EINVAL;
    }
    if (equal_ci(name, nlen, "content-type")) {
        pub_add_header(p, pool, pool_str(pool, "Content-Type", 12), val, vlen);
    } else if (prefix_ci(name, nlen, fwd) && nlen > sizeof(fwd) - 1) {
        pub_add_header(
            p, pool,
            canonical(pool, name + sizeof(fwd) - 1, nlen - (sizeof(fwd) - 1)),
            val, vlen);
    } else if (equal_ci(name, nlen, "upstash-method")) {
        p->pr.method = pool_str(pool, val, vlen);
        for (char *m = p->pr.method; *m != '\0'; m++) {
            *m = (char)toupper((unsigned char)*m);
        }
    } else if (equal_ci(name, nlen, "upstash-retries")) {
        if (parse_uint(val, vlen, UINT32_MAX, &v) != 0) {
            snprintf(err, ERR_BYTES,
                     "invalid Upstash-Retries '%.*s': want an integer >= 0",
                     (int)(vlen > 64 ? 64 : vlen), val);
            return -EINVAL;
        }
        p->pr.retries = (uint32_t)v;
        p->pr.retries_set = true;
    } else if (equal_ci(name, nlen, "upstash-retry-delay")) {
        p->pr.retry_delay = pool_str(pool, val, vlen);
    } else if (equal_ci(name, nlen, "upstash-delay") ||
               equal_ci(name, nlen, "upstash-timeout")) {
        bool delay = equal_ci(name, nlen, "upstash-delay");
        if (parse_duration(val, vlen, &v) != 0) {
            snprintf(err, ERR_BYTES,
                     "invalid %s '%.*s': want a duration like 10s, 5m, 1h, "
                     "1d10h30m",
                     delay ? "Upstash-Delay" : "Upstash-Timeout",
                     (int)(vlen > 64 ? 64 : vlen), val);
            return -EINVAL;
        }
        if (delay) {
            p->pr.delay_ms = v;
        } else {
            p->pr.timeout_ms = v;
        }
    } else if (equal_ci(name, nlen, "upstash-not-before")) {
        if (parse_uint(val, vlen, UINT64_MAX / 1000, &v) != 0) {
            snprintf(err, ERR_BYTES,
                     "invalid Upstash-Not-Before '%.*s': want unix seconds",
                     (int)(vlen > 64 ? 64 : vlen), val);
            return -EINVAL;
        }
        p->pr.not_before_ms = v * 1000;
    } else if (equal_ci(name, nlen, "upstash-deduplication-id")) {
        p->pr.dedup_id = pool_str(pool, val, vlen);
    } else if (equal_ci(name, nlen, "upstash-content-based-deduplication")) {
        if (equal_ci(val, vlen, "true")) {
            p->pr.content_dedup = true;
        } else if (!equal_ci(val, vlen, "false")) {
            snprintf(err, ERR_BYTES,
                     "invalid Upstash-Content-Based-Deduplication: want true "
                     "or false");
            return -EINVAL;
        }
    } else if (equal_ci(name, nlen, "upstash-callback")) {
        p->pr.callback = pool_str(pool, val, vlen);
    } else if (equal_ci(name, nlen, "upstash-failure-callback")) {
        p->pr.failure_callback = pool_str(pool, val, vlen);
    } else if (equal_ci(name, nlen, "upstash-label")) {
        pub_add_labels(p, pool, val, vlen);
    } else if (equal_ci(name, nlen, "upstash-flow-control-key")) {
        p->pr.flow_control_key = pool_str(pool, val, vlen);
    } else if (equal_ci(name, nlen, "upstash-flow-control-value")) {
        char why[ERR_BYTES - 64];
        if (qr_command_parse_flow_control(
                val, vlen, &p->pr.flow_parallelism, &p->pr.flow_rate,
                &p->pr.flow_period_s, why, sizeof(why)) != 0) {
            snprintf(err, ERR_BYTES, "invalid Upstash-Flow-Control-Value: %s",
                     why);
            return -EINVAL;
        }
    }
    /* Anything else (Authorization, Upstash-Telemetry-*, ...) is neither
     * forwarded nor interpreted. */
    return 0;
}

/* Checks a destination: a URL is taken as is; a name is a URL group (the
 * leader looks it up: 404 when unknown); *group says which. Returns an HTTP
 * status (0: fine). */
static int check_destination(const char *dest,
                             size_t len,
                             bool *group,
                             char *err)
{
    *group = false;
    if (prefix_ci(dest, len, "http://") || prefix_ci(dest, len, "https://")) {
        return 0;
    }
    if (len == 0) {
        snprintf(err, ERR_BYTES, "destination missing");
        return 400;
    }
    if (valid_name(dest, len)) {
        *group = true;
        return 0;
    }
    snprintf(err, ERR_BYTES,
             "invalid destination url: endpoint has invalid scheme, add "
             "http:// or https://");
    return 400;
}

/* The REST caller's address as text ("" when h2o cannot tell). */
static char *caller_ip(h2o_req_t *req)
{
    struct sockaddr_storage ss;
    char buf[NI_MAXHOST];
    socklen_t len = req->conn->callbacks->get_peername != NULL
                        ? req->conn->callbacks->get_peername(
                              req->conn, (struct sockaddr *)&ss)
                        : 0;
    size_t n = len > 0
                   ? h2o_socket_getnumerichost((struct sockaddr *)&ss, len, buf)
                   : SIZE_MAX;
    return n != SIZE_MAX ? pool_str(&req->pool, buf, n) : (char *)"";
}

/* {"messageId", "url", "deduplicated"?} for a publish answer. */
static json_t *publish_answer(const Qraft__Response *resp, const char *url)
{
    json_t *o;

    if (resp->status != QRAFT__STATUS__OK ||
        resp->body_case != QRAFT__RESPONSE__BODY_PUBLISH) {
        return json_pack(
            "{s:o}", "error",
            qr_json_text(resp->error != NULL && resp->error[0] != '\0'
                             ? resp->error
                             : "publish failed"));
    }
    if (resp->publish->topic_name[0] != '\0') {
        /* A URL group: one element per endpoint (a bare array, as the SDK
         * reads it). */
        json_t *all = json_array();
        for (size_t i = 0; all != NULL && i < resp->publish->n_messages; i++) {
            const Qraft__PublishedMessage *pm = resp->publish->messages[i];
            o = json_pack("{s:o,s:o}", "messageId",
                          qr_json_text(pm->message_id), "url",
                          qr_json_text(pm->url));
            if (o != NULL && pm->deduplicated) {
                json_object_set_new(o, "deduplicated", json_true());
            }
            json_array_append_new(all, o);
        }
        return all;
    }
    o = json_pack("{s:o,s:o}", "messageId",
                  qr_json_text(resp->publish->message_id), "url",
                  qr_json_text(url));
    if (o != NULL && resp->publish->deduplicated) {
        json_object_set_new(o, "deduplicated", json_true());
    }
    return o;
}

/* A publish is a duplicate when every message it names is one. */
static bool publish_deduplicated(const Qraft__Response *resp)
{
    const Qraft__PublishResponse *pr = resp->publish;

    if (resp->body_case != QRAFT__RESPONSE__BODY_PUBLISH) {
        return false;
    }
    if (pr->topic_name[0] == '\0') {
        return pr->deduplicated;
    }
    for (size_t i = 0; i < pr->n_messages; i++) {
        if (!pr->messages[i]->deduplicated) {
            return false;
        }
    }
    return pr->n_messages > 0;
}

static void on_publish_reply(struct rest_call *c,
                             size_t index,
                             const Qraft__Response *resp)
{
    (void)index;
    if (resp->status == QRAFT__STATUS__CONFLICT &&
        strncmp(resp->error, "too many queues", 15) == 0) {
        c->answered = true;
        send_error(c->req, 412, resp->error); /* QStash: quota exceeded */
        return;
    }
    if (!reply_ok(c, resp, QRAFT__RESPONSE__BODY__NOT_SET)) {
        return;
    }
    send_reply(c, publish_deduplicated(resp) ? 202 : 200,
               publish_answer(resp, c->url),
               resp->body_case == QRAFT__RESPONSE__BODY_PUBLISH
                   ? resp->publish->message_id
                   : NULL);
}

/* Appends the request's query to dest, without qstash_token and upstash-*
 * parameters (config, not part of the destination). */
static char *destination_with_query(h2o_mem_pool_t *pool,
                                    const char *dest,
                                    size_t dlen,
                                    h2o_iovec_t query)
{
    char *out = h2o_mem_alloc_pool(pool, dlen + query.len + 2);
    size_t n = dlen;
    size_t pos = 0;
    bool first = true;
    struct query_param p;

    memcpy(out, dest, dlen);
    while (next_param(query.base, query.len, &pos, &p)) {
        size_t plen;
        if (equal_ci(p.name, p.name_len, "qstash_token") ||
            prefix_ci(p.name, p.name_len, "upstash-")) {
            continue;
        }
        plen = (size_t)(p.value + p.value_len - p.name);
        out[n++] = first ? '?' : '&';
        memcpy(out + n, p.name, plen);
        n += plen;
        first = false;
    }
    out[n] = '\0';
    return out;
}

/* The start of a request that publishes req's body to dest (a URL, or a
 * url group's name: *group), a publish or a schedule's: checks dest, inits
 * p for req's headers plus extra more, and sets its destination (a URL
 * gets the request's query, less config; a group publish's query is config
 * only) and body. Returns false having answered req when dest is bad. */
static bool pub_start(struct pub *p,
                      h2o_req_t *req,
                      const char *dest,
                      size_t dest_len,
                      h2o_iovec_t query,
                      size_t extra,
                      bool *group)
{
    char err[ERR_BYTES];
    int status = check_destination(dest, dest_len, group, err);

    if (status != 0) {
        send_error(req, status, err);
        return false;
    }
    pub_init(p, &req->pool, req->headers.size + extra);
    if (*group) {
        p->pr.topic_name = pool_str(&req->pool, dest, dest_len);
    } else {
        p->pr.url = destination_with_query(&req->pool, dest, dest_len, query);
    }
    p->pr.body.data = (uint8_t *)req->entity.base;
    p->pr.body.len = req->entity.base != NULL ? req->entity.len : 0;
    return true;
}

static void handle_publish(struct qr_rest *r,
                           h2o_req_t *req,
                           const char *queue,
                           size_t queue_len,
                           const char *dest,
                           size_t dest_len,
                           h2o_iovec_t query)
{
    char err[ERR_BYTES];
    struct pub p;
    Qraft__Request rpc_req = QRAFT__REQUEST__INIT;
    struct query_param qp;
    size_t pos = 0;
    size_t n_params = 0;
    bool group;

    while (next_param(query.base, query.len, &pos, &qp)) {
        n_params++;
    }
    if (!pub_start(&p, req, dest, dest_len, query, n_params, &group)) {
        return;
    }
    if (queue != NULL) {
        p.pr.queue = pool_str(&req->pool, queue, queue_len);
    }
    p.pr.caller_ip = caller_ip(req);
    /* Config as lower-case upstash-* query parameters (webhooks), then the
     * headers, which win. */
    pos = 0;
    while (next_param(query.base, query.len, &pos, &qp)) {
        if (!prefix_ci(qp.name, qp.name_len, "upstash-")) {
            continue;
        }
        char *v = query_decode(&req->pool, qp.value, qp.value_len);
        if (apply_header(&p, &req->pool, qp.name, qp.name_len, v, strlen(v),
                         err) != 0) {
            send_error(req, 400, err);
            return;
        }
    }
    for (size_t i = 0; i < req->headers.size; i++) {
        const h2o_header_t *h = &req->headers.entries[i];
        if (apply_header(&p, &req->pool, h->name->base, h->name->len,
                         h->value.base, h->value.len, err) != 0) {
            send_error(req, 400, err);
            return;
        }
    }
    rpc_req.body_case = QRAFT__REQUEST__BODY_PUBLISH;
    rpc_req.publish = &p.pr;
    run_single(r, req, &rpc_req, on_publish_reply,
               group ? p.pr.topic_name : p.pr.url, false);
}

/* ---------------------------------------------------------------------------
 * Batch. */

static void on_batch_reply(struct rest_call *c,
                           size_t index,
                           const Qraft__Response *resp)
{
    json_array_set_new(c->out, index, publish_answer(resp, c->urls[index]));
    if (--c->n_pending > 0) {
        return;
    }
    c->answered = true;
    send_reply(c, 200, json_incref(c->out), NULL);
}

/* Builds the publish of one batch element into p; on bad input writes why
 * into err and returns -EINVAL. */
static int batch_element(h2o_mem_pool_t *pool,
                         json_t *el,
                         struct pub *p,
                         char *caller,
                         char *err)
{
    bool group;
    json_t *dest = NULL;
    json_t *headers = NULL;
    json_t *body = NULL;
    json_t *queue = NULL;
    const char *key;
    json_t *value;
    size_t n_headers = 0;
    int status;

    if (!json_is_object(el)) {
        snprintf(err, ERR_BYTES, "batch element is not an object");
        return -EINVAL;
    }
    json_object_foreach(el, key, value)
    {
        if (strcmp(key, "destination") == 0 && json_is_string(value)) {
            dest = value;
        } else if (strcmp(key, "headers") == 0 && json_is_object(value)) {
            headers = value;
        } else if (strcmp(key, "body") == 0 && json_is_string(value)) {
            body = value;
        } else if (strcmp(key, "queue") == 0 && json_is_string(value)) {
            queue = value;
        } else {
            snprintf(err, ERR_BYTES,
                     "batch element: unknown field or wrong type: '%.64s'",
                     key);
            return -EINVAL;
        }
    }
    if (dest == NULL) {
        snprintf(err, ERR_BYTES, "batch element: destination missing");
        return -EINVAL;
    }
    status = check_destination(json_string_value(dest),
                               json_string_length(dest), &group, err);
    if (status != 0) {
        return -EINVAL;
    }
    if (queue != NULL &&
        !valid_name(json_string_value(queue), json_string_length(queue))) {
        snprintf(err, ERR_BYTES,
                 "batch element: queue name must match [A-Za-z0-9._-]+");
        return -EINVAL;
    }
    json_object_foreach(headers, key, value)
    {
        n_headers += json_is_array(value) ? json_array_size(value) : 1;
    }
    pub_init(p, pool, n_headers);
    if (group) {
        p->pr.topic_name =
            pool_str(pool, json_string_value(dest), json_string_length(dest));
    } else {
        p->pr.url =
            pool_str(pool, json_string_value(dest), json_string_length(dest));
    }
    p->pr.caller_ip = caller;
    if (queue != NULL) {
        p->pr.queue =
            pool_str(pool, json_string_value(queue), json_string_length(queue));
    }
    json_object_foreach(headers, key, value)
    {
        size_t n = json_is_array(value) ? json_array_size(value) : 1;
        for (size_t i = 0; i < n; i++) {
            json_t *v = json_is_array(value) ? json_array_get(value, i) : value;
            if (!json_is_string(v)) {
                snprintf(err, ERR_BYTES,
                         "batch element: header '%.64s' is not a string", key);
                return -EINVAL;
            }
            if (apply_header(p, pool, key, strlen(key), json_string_value(v),
                             json_string_length(v), err) != 0) {
                return -EINVAL;
            }
        }
    }
    if (body != NULL) {
        p->pr.body.data = (uint8_t *)pool_str(pool, json_string_value(body),
                                              json_string_length(body));
        p->pr.body.len = json_string_length(body);
    }
    return 0;
}

/* The request body as JSON (new; json_decref it), or NULL after answering
 * 400 with the parser's error. */
static json_t *load_body(h2o_req_t *req)
{
    json_error_t jerr;
    char err[ERR_BYTES];
    json_t *in =
        json_loadb(req->entity.base != NULL ? req->entity.base : "",
                   req->entity.base != NULL ? req->entity.len : 0, 0, &jerr);

    if (in == NULL) {
        snprintf(err, sizeof(err), "invalid JSON: %s (line %d, column %d)",
                 jerr.text, jerr.line, jerr.column);
        send_error(req, 400, err);
    }
    return in;
}

static void handle_batch(struct qr_rest *r, h2o_req_t *req)
{
    json_t *in;
    struct rest_call *c;
    size_t n;
    char err[ERR_BYTES];
    char *caller = caller_ip(req);
    char why[QR_OPS_SPACE_WHY_BYTES];

    if (qr_ops_check_space(r->ops, why, sizeof why) != 0) {
        send_error(req, 507, why); /* the whole batch, not item by item */
        return;
    }
    in = load_body(req);
    if (in == NULL) {
        return;
    }
    if (!json_is_array(in) || json_array_size(in) == 0 ||
        json_array_size(in) > MAX_BATCH) {
        json_decref(in);
        send_error(req, 400,
                   "batch body must be a JSON array of 1 to 1000 "
                   "messages");
        return;
    }
    n = json_array_size(in);
    c = call_new(r, req, on_batch_reply);
    if (c == NULL) {
        json_decref(in);
        send_error(req, 503, "out of memory");
        return;
    }
    c->items = calloc(n, sizeof(*c->items));
    c->urls = calloc(n, sizeof(*c->urls));
    c->out = json_array();
    if (c->items == NULL || c->urls == NULL || c->out == NULL) {
        json_decref(in);
        send_error(req, 503, "out of memory");
        return;
    }
    c->n_items = n;
    c->n_pending = n + 1; /* + ours, dropped once every element is sent */
    c->refs++;
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(c->out, json_null());
    }
    for (size_t i = 0; i < n; i++) {
        struct pub p;
        Qraft__Request rpc_req = QRAFT__REQUEST__INIT;
        json_t *el = json_array_get(in, i);

        c->items[i].call = c;
        c->items[i].index = i;
        json_t *d = json_object_get(el, "destination");
        c->urls[i] = strdup(json_is_string(d) ? json_string_value(d) : "");
        if (batch_element(&req->pool, el, &p, caller, err) != 0) {
            json_array_set_new(c->out, i,
                               json_pack("{s:o}", "error", qr_json_text(err)));
            c->n_pending--;
            continue;
        }
        rpc_req.body_case = QRAFT__REQUEST__BODY_PUBLISH;
        rpc_req.publish = &p.pr;
        if (submit(c, &c->items[i], &rpc_req) != 0) {
            json_array_set_new(
                c->out, i,
                json_pack("{s:s}", "error", "the node is shutting down"));
            c->n_pending--;
        } else {
            c->done = "the batch's messages without an error were published";
        }
    }
    json_decref(in);
    if (--c->n_pending == 0 && c->req != NULL && !c->answered) {
        c->answered = true;
        send_reply(c, 200, json_incref(c->out), NULL);
    }
    call_unref(c);
}

/* ---------------------------------------------------------------------------
 * Messages and DLQ. */

/* s, or, when it is not UTF-8, its lossy copy in pool memory. */
static const char *pool_lossy(h2o_mem_pool_t *pool, const char *s)
{
    size_t n = strlen(s);
    char *clean;

    if (qr_utf8_valid(s, n)) {
        return s;
    }
    clean = h2o_mem_alloc_pool(pool, QR_UTF8_LOSSY_BYTES(n));
    qr_utf8_lossy(s, n, clean);
    return clean;
}

/* {"Name": ["v", ...]} from headers, names in canonical form. */
static json_t *header_map(Qraft__Header **headers,
                          size_t n,
                          h2o_mem_pool_t *pool)
{
    json_t *map = json_object();

    for (size_t i = 0; i < n && map != NULL; i++) {
        const char *name = pool_lossy(
            pool, canonical(pool, headers[i]->name, strlen(headers[i]->name)));
        json_t *values = json_object_get(map, name);
        if (values == NULL) {
            values = json_array();
            json_object_set_new(map, name, values);
        }
        json_array_append_new(values, qr_json_text(headers[i]->value));
    }
    return map;
}

/* Sets key (UTF-8 text) or key_b64 (base64) to the bytes. */
/* Sets key to the bytes in base64. */
static void set_b64(json_t *o, const char *key, ProtobufCBinaryData data)
{
    char *b64 = malloc(4 * ((data.len + 2) / 3) + 1);

    if (b64 == NULL) {
        return;
    }
    base64_encode(data.data, data.len, b64);
    json_object_set_new(o, key, qr_json_text(b64));
    free(b64);
}

static void set_body(json_t *o,
                     const char *key,
                     const char *key_b64,
                     ProtobufCBinaryData body)
{
    json_t *s = json_stringn((const char *)body.data, body.len);

    if (s != NULL) {
        json_object_set_new(o, key, s);
        return;
    }
    set_b64(o, key_b64, body);
}

static void set_opt_string(json_t *o, const char *key, const char *value)
{
    if (value != NULL && value[0] != '\0') {
        json_object_set_new(o, key, qr_json_text(value));
    }
}

/* "label" (the first) and "labels" (all), when m has labels. */
static void set_labels(json_t *o, const Qraft__Message *m)
{
    if (m->n_labels == 0) {
        return;
    }
    json_t *labels = json_array();
    for (size_t i = 0; i < m->n_labels; i++) {
        json_array_append_new(labels, qr_json_text(m->labels[i]));
    }
    json_object_set_new(o, "label", qr_json_text(m->labels[0]));
    json_object_set_new(o, "labels", labels);
}

/* The message as the SDK reads it (spec section 4); with dlq, the DLQ
 * fields too. */
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
                        header_map(m->headers, m->n_headers, pool));
}

/* What ties a message to others, as messages and log entries show it:
 * callbacks, queue, schedule, url group and endpoint (each omitted when
 * empty). */
static void set_message_links(json_t *o, const Qraft__Message *m)
{
    set_opt_string(o, "callback", m->callback);
    set_opt_string(o, "failureCallback", m->failure_callback);
    set_opt_string(o, "queueName", m->queue);
    set_opt_string(o, "scheduleId", m->schedule_id);
    set_opt_string(o, "topicName", m->topic_name);
    set_opt_string(o, "endpointName", m->endpoint_name);
}

static json_t *message_json(const Qraft__Message *m,
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
        set_body(o, "body", "bodyBase64", m->body);
    }
    json_object_set_new(o, "maxRetries", json_integer(m->max_retries));
    set_opt_string(o, "retryDelayExpression", m->retry_delay);
    json_object_set_new(o, "createdAt",
                        json_integer((json_int_t)m->created_ms));
    json_object_set_new(
        o, "notBefore",
        json_integer((json_int_t)(m->not_before_ms > m->created_ms
                                      ? m->not_before_ms
                                      : m->created_ms)));
    set_message_links(o, m);
    set_opt_string(o, "callerIP", m->caller_ip);
    set_labels(o, m);
    if (m->flow_control_key[0] != '\0') {
        json_object_set_new(o, "flowControlKey",
                            qr_json_text(m->flow_control_key));
        json_object_set_new(o, "parallelism",
                            json_integer(m->flow_parallelism));
        json_object_set_new(o, "rate", json_integer(m->flow_rate));
        json_object_set_new(o, "period",
                            json_integer((json_int_t)m->flow_period_s));
    }
    if (!dlq) {
        return o;
    }
    json_object_set_new(o, "dlqId", qr_json_text(m->id));
    if (m->last_response != NULL) {
        const Qraft__AttemptResponse *lr = m->last_response;
        json_object_set_new(o, "responseStatus", json_integer(lr->status));
        json_object_set_new(o, "responseHeader",
                            header_map(lr->headers, lr->n_headers, pool));
        if (lr->body.len > 0) {
            set_body(o, "responseBody", "responseBodyBase64", lr->body);
        }
    } else if (m->last_error != NULL && m->last_error->status != 0) {
        json_object_set_new(o, "responseStatus",
                            json_integer(m->last_error->status));
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
    if (!reply_ok(c, resp, QRAFT__RESPONSE__BODY_GET)) {
        return;
    }
    m = resp->get->message;
    if (m == NULL) {
        send_error(c->req, 404, "message not found");
        return;
    }
    if (c->single) { /* GET /v2/dlq/{id} */
        if (m->state != QRAFT__MESSAGE_STATE__DEAD_LETTERED) {
            send_error(c->req, 404, "dlq message not found");
            return;
        }
        send_reply(c, 200, message_json(m, true, &c->req->pool), NULL);
        return;
    }
    if (!message_live(m)) {
        send_error(c->req, 404, "message not found");
        return;
    }
    send_reply(c, 200, message_json(m, false, &c->req->pool), NULL);
}

static void on_cancel_reply(struct rest_call *c,
                            size_t index,
                            const Qraft__Response *resp)
{
    (void)index;
    if (resp->status == QRAFT__STATUS__CONFLICT) {
        c->answered = true;
        send_error(c->req, 404,
                   "message not found (already delivered or "
                   "dead-lettered)");
        return;
    }
    if (!reply_ok(c, resp, QRAFT__RESPONSE__BODY__NOT_SET)) {
        return;
    }
    send_reply(c, 200, json_pack("{s:i}", "cancelled", 1), NULL);
}

static void handle_message(struct qr_rest *r,
                           h2o_req_t *req,
                           const char *id,
                           size_t id_len,
                           bool dlq)
{
    Qraft__Request rpc_req = QRAFT__REQUEST__INIT;
    Qraft__GetRequest get = QRAFT__GET_REQUEST__INIT;
    Qraft__CancelRequest cancel = QRAFT__CANCEL_REQUEST__INIT;
    char *mid = pool_str(&req->pool, id, id_len);

    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("DELETE"))) {
        cancel.message_id = mid;
        rpc_req.body_case = QRAFT__REQUEST__BODY_CANCEL;
        rpc_req.cancel = &cancel;
        run_single(r, req, &rpc_req, on_cancel_reply, NULL, false);
        return;
    }
    get.message_id = mid;
    rpc_req.body_case = QRAFT__REQUEST__BODY_GET;
    rpc_req.get = &get;
    run_single(r, req, &rpc_req, on_get_reply, NULL, dlq);
}

/* ---------------------------------------------------------------------------
 * Filters (spec 4, 5, 6 and 14 item 11): one parser for the DLQ, bulk
 * cancel and the logs. Multi-value parameters may repeat and may hold
 * comma-separated values. */

#define BULK_CANCEL_MAX 500
#define EVENTS_PAGE_MAX 1000
#define EVENTS_PAGE_DEFAULT 100

/* The filter parameters every filtering route takes. */
#define FILTER_PARAMS                                                     \
    "messageId", "messageIds", "url", "host", "path", "topicName",        \
        "queueName", "scheduleId", "label", "flowControlKey", "callerIp", \
        "responseStatus", "fromDate", "toDate"

/* True when the query has parameter name at all (even with no value). */
static bool query_has(h2o_iovec_t query, const char *name)
{
    struct query_param p;
    size_t pos = 0;

    while (next_param(query.base, query.len, &pos, &p)) {
        if (equal_ci(p.name, p.name_len, name)) {
            return true;
        }
    }
    return false;
}

/* Appends every value of parameter name to *list (pool memory). */
static int take_list(h2o_mem_pool_t *pool,
                     h2o_iovec_t query,
                     const char *name,
                     char ***list,
                     size_t *n,
                     char *err)
{
    int count = query_list(pool, query, name, NULL, MAX_IDS);
    char **grown;

    if (count < 0) {
        snprintf(err, ERR_BYTES, "at most %d values for %s", MAX_IDS, name);
        return -EINVAL;
    }
    if (count == 0) {
        if (query_has(query, name)) {
            snprintf(err, ERR_BYTES, "%s has no value", name);
            return -EINVAL;
        }
        return 0;
    }
    grown = h2o_mem_alloc_pool(pool, sizeof(*grown) * (*n + (size_t)count));
    if (*n > 0) {
        memcpy(grown, *list, sizeof(*grown) * *n);
    }
    query_list(pool, query, name, grown + *n, (size_t)count);
    *list = grown;
    *n += (size_t)count;
    return 0;
}

static int take_ms(h2o_mem_pool_t *pool,
                   h2o_iovec_t query,
                   const char *name,
                   uint64_t *out,
                   char *err)
{
    const char *v = query_get(pool, query, name);

    if (v == NULL) {
        return 0;
    }
    if (parse_uint(v, strlen(v), UINT64_MAX, out) != 0) {
        snprintf(err, ERR_BYTES, "invalid %s '%.64s': want unix milliseconds",
                 name, v);
        return -EINVAL;
    }
    return 0;
}

/* Parses the filter parameters of query into f (pool memory), refusing
 * parameters other than the filters and `extra` (NULL-terminated), bad
 * values, and filters this build cannot evaluate. On bad input writes why
 * into err and returns -EINVAL. */
static int parse_filter(h2o_mem_pool_t *pool,
                        h2o_iovec_t query,
                        const char *const *extra,
                        Qraft__MessageFilter *f,
                        char *err)
{
    static const char *const filters[] = {FILTER_PARAMS, NULL};
    struct query_param p;
    size_t pos = 0;
    char **statuses = NULL;
    size_t n_statuses = 0;
    const char *unsupported;

    qraft__message_filter__init(f);
    while (next_param(query.base, query.len, &pos, &p)) {
        bool known = equal_ci(p.name, p.name_len, "qstash_token");
        for (size_t i = 0; !known && filters[i] != NULL; i++) {
            known = equal_ci(p.name, p.name_len, filters[i]);
        }
        for (size_t i = 0; !known && extra[i] != NULL; i++) {
            known = equal_ci(p.name, p.name_len, extra[i]);
        }
        if (!known) {
            snprintf(err, ERR_BYTES, "unknown parameter '%.*s'",
                     (int)(p.name_len > 64 ? 64 : p.name_len), p.name);
            return -EINVAL;
        }
    }
    if (take_list(pool, query, "messageId", &f->message_ids, &f->n_message_ids,
                  err) != 0 ||
        take_list(pool, query, "messageIds", &f->message_ids, &f->n_message_ids,
                  err) != 0 ||
        take_list(pool, query, "url", &f->urls, &f->n_urls, err) != 0 ||
        take_list(pool, query, "host", &f->hosts, &f->n_hosts, err) != 0 ||
        take_list(pool, query, "path", &f->paths, &f->n_paths, err) != 0 ||
        take_list(pool, query, "topicName", &f->topic_names, &f->n_topic_names,
                  err) != 0 ||
        take_list(pool, query, "queueName", &f->queue_names, &f->n_queue_names,
                  err) != 0 ||
        take_list(pool, query, "scheduleId", &f->schedule_ids,
                  &f->n_schedule_ids, err) != 0 ||
        take_list(pool, query, "label", &f->labels, &f->n_labels, err) != 0 ||
        take_list(pool, query, "flowControlKey", &f->flow_control_keys,
                  &f->n_flow_control_keys, err) != 0 ||
        take_list(pool, query, "callerIp", &f->caller_ips, &f->n_caller_ips,
                  err) != 0 ||
        take_list(pool, query, "responseStatus", &statuses, &n_statuses, err) !=
            0 ||
        take_ms(pool, query, "fromDate", &f->from_ms, err) != 0 ||
        take_ms(pool, query, "toDate", &f->to_ms, err) != 0) {
        return -EINVAL;
    }
    if (n_statuses > 0) {
        f->response_statuses =
            h2o_mem_alloc_pool(pool, sizeof(int32_t) * n_statuses);
        f->n_response_statuses = n_statuses;
        for (size_t i = 0; i < n_statuses; i++) {
            uint64_t v;
            if (parse_uint(statuses[i], strlen(statuses[i]), 999, &v) != 0 ||
                v < 100) {
                snprintf(err, ERR_BYTES,
                         "invalid responseStatus '%.64s': want an HTTP status",
                         statuses[i]);
                return -EINVAL;
            }
            f->response_statuses[i] = (int32_t)v;
        }
    }
    if (f->from_ms != 0 && f->to_ms != 0 && f->from_ms > f->to_ms) {
        snprintf(err, ERR_BYTES, "fromDate is after toDate");
        return -EINVAL;
    }
    unsupported = qr_filter_unsupported(f);
    if (unsupported != NULL) {
        snprintf(err, ERR_BYTES, "filter %s is not supported yet", unsupported);
        return -EINVAL;
    }
    return 0;
}

/* `count` in 1..max (absent: dflt). */
static int take_count(h2o_mem_pool_t *pool,
                      h2o_iovec_t query,
                      uint64_t max,
                      uint64_t dflt,
                      uint32_t *out,
                      char *err)
{
    const char *count = query_get(pool, query, "count");
    uint64_t n = dflt;

    if (count != NULL &&
        (parse_uint(count, strlen(count), max, &n) != 0 || n == 0)) {
        snprintf(err, ERR_BYTES, "count must be an integer from 1 to %" PRIu64,
                 max);
        return -EINVAL;
    }
    *out = (uint32_t)n;
    return 0;
}

/* ---------------------------------------------------------------------------
 * DLQ. */

/* A page of a cursor-paged list: {key: items, "cursor"?: cursor} (no
 * cursor when the list ends here). Takes items; returns new or NULL. */
static json_t *page_json(const char *key, json_t *items, const char *cursor)
{
    json_t *out = json_object();

    json_object_set_new(out, key, items);
    set_opt_string(out, "cursor", cursor);
    return out;
}

static json_t *dlq_page_json(struct rest_call *c, const Qraft__Response *resp)
{
    json_t *msgs = json_array();

    for (size_t i = 0; i < resp->dlq_list->n_messages; i++) {
        json_array_append_new(msgs, message_json(resp->dlq_list->messages[i],
                                                 true, &c->req->pool));
    }
    return page_json("messages", msgs, resp->dlq_list->cursor);
}

/* GET /v2/dlq: count (1..100), cursor, dlqIds, filters. */
static void handle_dlq_list(struct qr_rest *r,
                            h2o_req_t *req,
                            h2o_iovec_t query)
{
    static const char *const extra[] = {"count", "cursor", "dlqIds", NULL};
    Qraft__Request rpc_req = QRAFT__REQUEST__INIT;
    Qraft__DlqListRequest list = QRAFT__DLQ_LIST_REQUEST__INIT;
    Qraft__MessageFilter *f = h2o_mem_alloc_pool(&req->pool, sizeof(*f));
    const char *cursor = query_get(&req->pool, query, "cursor");
    char err[ERR_BYTES];

    if (parse_filter(&req->pool, query, extra, f, err) != 0 ||
        take_count(&req->pool, query, DLQ_PAGE_MAX, DLQ_PAGE_MAX, &list.limit,
                   err) != 0 ||
        take_list(&req->pool, query, "dlqIds", &list.message_ids,
                  &list.n_message_ids, err) != 0) {
        send_error(req, 400, err);
        return;
    }
    list.filter = f;
    list.cursor = cursor != NULL ? (char *)cursor : (char *)"";
    rpc_req.body_case = QRAFT__REQUEST__BODY_DLQ_LIST;
    rpc_req.dlq_list = &list;
    run_json(r, req, &rpc_req, QRAFT__RESPONSE__BODY_DLQ_LIST, dlq_page_json,
             false);
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
        send_status_error(c, resp);
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
            send_error(c->req,
                       it->status == QRAFT__STATUS__CONFLICT
                           ? 404
                           : http_status(it->status),
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
        send_reply(c, 201, one, NULL);
        return;
    }
    if (retry) {
        out = json_pack("{s:o}", "responses", responses);
    } else {
        json_decref(responses);
        out = json_pack("{s:I}", "deleted", (json_int_t)n_ok);
    }
    set_opt_string(out, "cursor", cursor);
    send_reply(c, retry ? 201 : 200, out, NULL);
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
static void handle_dlq_bulk(struct qr_rest *r,
                            h2o_req_t *req,
                            const char *id,
                            size_t id_len,
                            h2o_iovec_t query,
                            bool retry)
{
    static const char *const extra[] = {"count", "cursor", "dlqIds", NULL};
    Qraft__Request rpc_req = QRAFT__REQUEST__INIT;
    Qraft__DlqDeleteRequest del = QRAFT__DLQ_DELETE_REQUEST__INIT;
    Qraft__DlqReplayRequest replay = QRAFT__DLQ_REPLAY_REQUEST__INIT;
    Qraft__MessageFilter *f = h2o_mem_alloc_pool(&req->pool, sizeof(*f));
    const char *cursor = query_get(&req->pool, query, "cursor");
    char **ids = NULL;
    size_t n = 0;
    uint32_t count = DLQ_PAGE_MAX;
    char err[ERR_BYTES];

    if (id != NULL) {
        ids = h2o_mem_alloc_pool(&req->pool, sizeof(*ids));
        ids[0] = pool_str(&req->pool, id, id_len);
        n = 1;
        qraft__message_filter__init(f);
    } else if (parse_filter(&req->pool, query, extra, f, err) != 0 ||
               take_count(&req->pool, query, DLQ_PAGE_MAX, DLQ_PAGE_MAX, &count,
                          err) != 0 ||
               take_list(&req->pool, query, "dlqIds", &ids, &n, err) != 0) {
        send_error(req, 400, err);
        return;
    }
    if (n > 0 && !qr_filter_is_empty(f)) {
        send_error(req, 400, "give dlqIds or filters, not both");
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
        rpc_req.body_case = QRAFT__REQUEST__BODY_DLQ_DELETE;
        rpc_req.dlq_delete = &del;
        run_single(r, req, &rpc_req, on_dlq_delete_reply, NULL, id != NULL);
        return;
    }
    replay.message_ids = ids;
    replay.n_message_ids = n;
    replay.filter = n == 0 ? f : NULL;
    replay.all = n == 0 && qr_filter_is_empty(f);
    replay.cursor = (char *)cursor;
    replay.limit = n == 0 ? count : 0;
    rpc_req.body_case = QRAFT__REQUEST__BODY_DLQ_REPLAY;
    rpc_req.dlq_replay = &replay;
    run_single(r, req, &rpc_req, on_dlq_retry_reply, NULL, id != NULL);
}

/* ---------------------------------------------------------------------------
 * Bulk cancel: DELETE /v2/messages. */

static void on_cancel_many_reply(struct rest_call *c,
                                 size_t index,
                                 const Qraft__Response *resp)
{
    size_t n_ok = 0;

    (void)index;
    if (!reply_ok(c, resp, QRAFT__RESPONSE__BODY_BULK)) {
        return;
    }
    for (size_t i = 0; i < resp->bulk->n_results; i++) {
        n_ok += resp->bulk->results[i]->status == QRAFT__STATUS__OK;
    }
    send_reply(c, 200, json_pack("{s:I}", "cancelled", (json_int_t)n_ok), NULL);
}

/* The Go SDK's form: {"messageIds": ["...", ...]} as the body. Appends the
 * ids to *ids (pool memory); no body is fine. */
static int body_message_ids(h2o_req_t *req, char ***ids, size_t *n, char *err)
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
        grown[*n + i] =
            pool_str(&req->pool, json_string_value(v), json_string_length(v));
    }
    *ids = grown;
    *n += count;
    json_decref(in);
    return 0;
}

/* messageIds (query or JSON body), or filters, or nothing (= every
 * cancellable message), at most count (1..500, default 500) per call. */
static void handle_cancel_many(struct qr_rest *r,
                               h2o_req_t *req,
                               h2o_iovec_t query)
{
    static const char *const extra[] = {"count", NULL};
    Qraft__Request rpc_req = QRAFT__REQUEST__INIT;
    Qraft__CancelManyRequest cm = QRAFT__CANCEL_MANY_REQUEST__INIT;
    Qraft__MessageFilter *f = h2o_mem_alloc_pool(&req->pool, sizeof(*f));
    char err[ERR_BYTES];

    if (parse_filter(&req->pool, query, extra, f, err) != 0 ||
        take_count(&req->pool, query, BULK_CANCEL_MAX, BULK_CANCEL_MAX,
                   &cm.limit, err) != 0) {
        send_error(req, 400, err);
        return;
    }
    /* messageIds are the ids to cancel, not a filter on them. */
    cm.message_ids = f->message_ids;
    cm.n_message_ids = f->n_message_ids;
    f->message_ids = NULL;
    f->n_message_ids = 0;
    if (body_message_ids(req, &cm.message_ids, &cm.n_message_ids, err) != 0) {
        send_error(req, 400, err);
        return;
    }
    if (cm.n_message_ids > 0 && !qr_filter_is_empty(f)) {
        send_error(req, 400, "give messageIds or filters, not both");
        return;
    }
    if (cm.n_message_ids > cm.limit) {
        snprintf(err, sizeof(err), "%zu messageIds for count %u",
                 cm.n_message_ids, cm.limit);
        send_error(req, 400, err);
        return;
    }
    cm.filter = f;
    rpc_req.body_case = QRAFT__REQUEST__BODY_CANCEL_MANY;
    rpc_req.cancel_many = &cm;
    run_single(r, req, &rpc_req, on_cancel_many_reply, NULL, false);
}

/* ---------------------------------------------------------------------------
 * Logs: GET /v2/events ({"events"}) and GET /v2/logs ({"logs"}). */

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
        json_object_set_new(o, "responseHeaders",
                            header_map(lr->headers, lr->n_headers, pool));
        if (lr->body.len > 0) {
            set_b64(o, "responseBody", lr->body);
        }
    }
    set_message_request(o, m, pool);
    if (m->body.len > 0) {
        set_b64(o, "body", m->body);
    }
    json_object_set_new(o, "maxRetries", json_integer(m->max_retries));
    json_object_set_new(o, "timeout", json_integer((json_int_t)m->timeout_ms));
    set_opt_string(o, "retryDelayExpression", m->retry_delay);
    set_message_links(o, m);
    set_labels(o, m);
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
    return page_json(c->single ? "logs" : "events", list, resp->events->cursor);
}

static void handle_events(struct qr_rest *r,
                          h2o_req_t *req,
                          h2o_iovec_t query,
                          bool logs)
{
    static const char *const extra[] = {"count", "cursor", "state", "order",
                                        NULL};
    Qraft__Request rpc_req = QRAFT__REQUEST__INIT;
    Qraft__EventsRequest ev = QRAFT__EVENTS_REQUEST__INIT;
    Qraft__MessageFilter *f = h2o_mem_alloc_pool(&req->pool, sizeof(*f));
    const char *cursor = query_get(&req->pool, query, "cursor");
    const char *order = query_get(&req->pool, query, "order");
    char **names = NULL;
    size_t n_names = 0;
    char err[ERR_BYTES];

    if (parse_filter(&req->pool, query, extra, f, err) != 0 ||
        take_count(&req->pool, query, EVENTS_PAGE_MAX, EVENTS_PAGE_DEFAULT,
                   &ev.limit, err) != 0 ||
        take_list(&req->pool, query, "state", &names, &n_names, err) != 0) {
        send_error(req, 400, err);
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
            send_error(req, 400, err);
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
            send_error(req, 400,
                       "order must be latestFirst (default) or earliestFirst");
            return;
        }
    }
    ev.filter = f;
    ev.cursor = cursor != NULL ? (char *)cursor : (char *)"";
    rpc_req.body_case = QRAFT__REQUEST__BODY_EVENTS;
    rpc_req.events = &ev;
    run_json(r, req, &rpc_req, QRAFT__RESPONSE__BODY_EVENTS, events_page_json,
             logs);
}

/* ---------------------------------------------------------------------------
 * Schedules (spec section 8). */

/* QStash's words for the state of a tick's message. */
static const char *schedule_state_word(Qraft__MessageState s)
{
    switch (s) {
        case QRAFT__MESSAGE_STATE__QUEUED:
        case QRAFT__MESSAGE_STATE__PENDING:
        case QRAFT__MESSAGE_STATE__DELIVERING:
        case QRAFT__MESSAGE_STATE__RETRYING:
            return "IN_PROGRESS";
        case QRAFT__MESSAGE_STATE__DELIVERED:
            return "SUCCESS";
        case QRAFT__MESSAGE_STATE__DEAD_LETTERED:
        case QRAFT__MESSAGE_STATE__CANCELLED:
            return "FAIL";
        default:
            return NULL; /* pruned: no longer known */
    }
}

/* The schedule as the SDK reads it; absent optionals are omitted. */
static json_t *schedule_json(const Qraft__Schedule *sc,
                             uint32_t default_retries,
                             h2o_mem_pool_t *pool)
{
    static const Qraft__PublishRequest none = QRAFT__PUBLISH_REQUEST__INIT;
    const Qraft__PublishRequest *t = sc->request != NULL ? sc->request : &none;
    json_t *o = json_object();

    if (o == NULL) {
        return NULL;
    }
    json_object_set_new(o, "scheduleId", qr_json_text(sc->id));
    json_object_set_new(o, "cron", qr_json_text(sc->cron));
    json_object_set_new(o, "createdAt",
                        json_integer((json_int_t)sc->created_ms));
    json_object_set_new(
        o, "destination",
        qr_json_text(t->topic_name[0] != '\0' ? t->topic_name : t->url));
    json_object_set_new(
        o, "method", qr_json_text(t->method[0] != '\0' ? t->method : "POST"));
    json_object_set_new(o, "header",
                        header_map(t->headers, t->n_headers, pool));
    if (t->body.len > 0) {
        set_body(o, "body", "bodyBase64", t->body);
    }
    json_object_set_new(
        o, "retries",
        json_integer(t->retries_set ? t->retries : default_retries));
    if (t->delay_ms > 0) {
        json_object_set_new(o, "delay",
                            json_integer((json_int_t)(t->delay_ms / 1000)));
    }
    set_opt_string(o, "callback", t->callback);
    set_opt_string(o, "failureCallback", t->failure_callback);
    set_opt_string(o, "queueName", t->queue);
    set_opt_string(o, "retryDelayExpression", t->retry_delay);
    /* openapi spells callerIp, the SDK's type callerIP: both. */
    set_opt_string(o, "callerIp", sc->caller_ip);
    set_opt_string(o, "callerIP", sc->caller_ip);
    json_object_set_new(o, "isPaused", json_boolean(sc->paused));
    if (sc->last_slot_ms != 0) {
        json_object_set_new(o, "lastScheduleTime",
                            json_integer((json_int_t)sc->last_slot_ms));
    }
    if (sc->next_slot_ms != 0 && sc->next_slot_ms != UINT64_MAX) {
        json_object_set_new(o, "nextScheduleTime",
                            json_integer((json_int_t)sc->next_slot_ms));
    }
    json_t *states = json_object();
    for (size_t i = 0; i < sc->n_last_fired && states != NULL; i++) {
        const char *word = schedule_state_word(sc->last_fired[i]->state);
        if (word != NULL) {
            qr_json_set_text_key(states, sc->last_fired[i]->message_id,
                                 qr_json_text(word));
        }
    }
    if (states != NULL && json_object_size(states) > 0) {
        json_object_set_new(o, "lastScheduleStates", states);
    } else {
        json_decref(states);
    }
    return o;
}

static json_t *schedule_created_json(struct rest_call *c,
                                     const Qraft__Response *resp)
{
    (void)c;
    return json_pack("{s:o}", "scheduleId",
                     qr_json_text(resp->schedule_upsert->schedule_id));
}

static void on_schedules_reply(struct rest_call *c,
                               size_t index,
                               const Qraft__Response *resp)
{
    uint32_t retries = c->rest->ops->config->limits.default_retries;

    (void)index;
    if (!reply_ok(c, resp, QRAFT__RESPONSE__BODY_SCHEDULES)) {
        return;
    }
    if (c->single) { /* GET /v2/schedules/{id} */
        if (resp->schedules->n_schedules != 1) {
            send_error(c->req, 404, "schedule not found");
            return;
        }
        send_reply(c, 200,
                   schedule_json(resp->schedules->schedules[0], retries,
                                 &c->req->pool),
                   NULL);
        return;
    }
    json_t *out = json_array();
    for (size_t i = 0; i < resp->schedules->n_schedules && out != NULL; i++) {
        json_array_append_new(out, schedule_json(resp->schedules->schedules[i],
                                                 retries, &c->req->pool));
    }
    send_reply(c, 200, out, NULL);
}

/* Schedule delete, pause, resume and queue writes: 200 with an empty
 * object (the SDK reads no body). */
static json_t *empty_json(struct rest_call *c, const Qraft__Response *resp)
{
    (void)c;
    (void)resp;
    return json_object();
}

/* POST /v2/schedules/{destination}: Upstash-Cron (required),
 * Upstash-Schedule-Id, Upstash-Queue-Name and the publish headers. */
static void handle_schedule_create(struct qr_rest *r,
                                   h2o_req_t *req,
                                   const char *dest,
                                   size_t dest_len,
                                   h2o_iovec_t query)
{
    char err[ERR_BYTES];
    struct pub p;
    Qraft__Request rpc_req = QRAFT__REQUEST__INIT;
    Qraft__ScheduleUpsertRequest up = QRAFT__SCHEDULE_UPSERT_REQUEST__INIT;
    bool group;

    if (!pub_start(&p, req, dest, dest_len, query, 0, &group)) {
        return;
    }
    up.cron = NULL;
    for (size_t i = 0; i < req->headers.size; i++) {
        const h2o_header_t *h = &req->headers.entries[i];
        const char *name = h->name->base;
        size_t nlen = h->name->len;
        char *value = pool_str(&req->pool, h->value.base, h->value.len);
        if (check_header_utf8(name, nlen, h->value.base, h->value.len, err) !=
            0) {
            send_error(req, 400, err);
            return;
        }
        if (equal_ci(name, nlen, "upstash-cron")) {
            up.cron = value;
        } else if (equal_ci(name, nlen, "upstash-schedule-id")) {
            if (!valid_name(value, h->value.len)) {
                send_error(req, 400,
                           "invalid Upstash-Schedule-Id: it must match "
                           "[A-Za-z0-9._-]+ (at most 256 characters)");
                return;
            }
            up.schedule_id = value;
        } else if (equal_ci(name, nlen, "upstash-queue-name")) {
            if (!valid_name(value, h->value.len)) {
                send_error(req, 400,
                           "invalid Upstash-Queue-Name: it must match "
                           "[A-Za-z0-9._-]+");
                return;
            }
            p.pr.queue = value;
        } else if (equal_ci(name, nlen, "upstash-not-before")) {
            send_error(req, 400,
                       "Upstash-Not-Before does not apply to schedules (use "
                       "Upstash-Delay)");
            return;
        } else if (apply_header(&p, &req->pool, name, nlen, h->value.base,
                                h->value.len, err) != 0) {
            send_error(req, 400, err);
            return;
        }
    }
    if (up.cron == NULL) {
        send_error(req, 400,
                   "Upstash-Cron header is missing (a cron expression such "
                   "as \"*/5 * * * *\")");
        return;
    }
    up.request = &p.pr;
    up.caller_ip = caller_ip(req);
    rpc_req.body_case = QRAFT__REQUEST__BODY_SCHEDULE_UPSERT;
    rpc_req.schedule_upsert = &up;
    run_json(r, req, &rpc_req, QRAFT__RESPONSE__BODY_SCHEDULE_UPSERT,
             schedule_created_json, false);
}

static void handle_schedule_get(struct qr_rest *r,
                                h2o_req_t *req,
                                const char *id,
                                size_t id_len)
{
    Qraft__Request rpc_req = QRAFT__REQUEST__INIT;
    Qraft__ScheduleGetRequest get = QRAFT__SCHEDULE_GET_REQUEST__INIT;
    Qraft__ScheduleListRequest list = QRAFT__SCHEDULE_LIST_REQUEST__INIT;

    if (id == NULL) {
        rpc_req.body_case = QRAFT__REQUEST__BODY_SCHEDULE_LIST;
        rpc_req.schedule_list = &list;
    } else {
        get.schedule_id = pool_str(&req->pool, id, id_len);
        rpc_req.body_case = QRAFT__REQUEST__BODY_SCHEDULE_GET;
        rpc_req.schedule_get = &get;
    }
    run_single(r, req, &rpc_req, on_schedules_reply, NULL, id != NULL);
}

static void handle_schedule_delete(struct qr_rest *r,
                                   h2o_req_t *req,
                                   const char *id,
                                   size_t id_len)
{
    Qraft__Request rpc_req = QRAFT__REQUEST__INIT;
    Qraft__ScheduleDeleteRequest del = QRAFT__SCHEDULE_DELETE_REQUEST__INIT;

    del.schedule_id = pool_str(&req->pool, id, id_len);
    rpc_req.body_case = QRAFT__REQUEST__BODY_SCHEDULE_DELETE;
    rpc_req.schedule_delete = &del;
    run_json(r, req, &rpc_req, QRAFT__RESPONSE__BODY__NOT_SET, empty_json,
             false);
}

static void handle_schedule_pause(struct qr_rest *r,
                                  h2o_req_t *req,
                                  const char *id,
                                  size_t id_len,
                                  bool paused)
{
    Qraft__Request rpc_req = QRAFT__REQUEST__INIT;
    Qraft__SchedulePauseRequest pause = QRAFT__SCHEDULE_PAUSE_REQUEST__INIT;

    pause.schedule_id = pool_str(&req->pool, id, id_len);
    pause.paused = paused;
    rpc_req.body_case = QRAFT__REQUEST__BODY_SCHEDULE_PAUSE;
    rpc_req.schedule_pause = &pause;
    run_json(r, req, &rpc_req, QRAFT__RESPONSE__BODY__NOT_SET, empty_json,
             false);
}

static bool method_is(h2o_req_t *req, const char *m);
static void method_not_allowed(h2o_req_t *req, const char *allow);
static bool method_only(h2o_req_t *req, const char *m);
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
        if (method_is(req, "GET")) {
            handle_schedule_get(r, req, NULL, 0);
        } else if (method_is(req, "POST")) {
            send_error(req, 400, "destination missing");
        } else {
            method_not_allowed(req, "GET");
        }
        return;
    }
    if (prefix_ci(rest, rest_len, "http://") ||
        prefix_ci(rest, rest_len, "https://")) {
        if (!method_only(req, "POST")) {
            return;
        }
        handle_schedule_create(r, req, rest, rest_len, query);
        return;
    }
    if (one_segment(rest, rest_len)) {
        if (method_is(req, "GET")) {
            handle_schedule_get(r, req, rest, rest_len);
        } else if (method_is(req, "DELETE")) {
            handle_schedule_delete(r, req, rest, rest_len);
        } else if (method_is(req, "POST")) {
            handle_schedule_create(r, req, rest, rest_len, query);
        } else {
            method_not_allowed(req, "GET, DELETE, POST");
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
        if (method_is(req, "POST")) { /* a destination that is no URL */
            handle_schedule_create(r, req, rest, rest_len, query);
        } else {
            send_error(req, 404, "not found");
        }
        return;
    }
    /* The SDK sends PATCH, the openapi says POST: both. */
    if (!method_is(req, "PATCH") && !method_is(req, "POST")) {
        method_not_allowed(req, "PATCH, POST");
        return;
    }
    handle_schedule_pause(r, req, rest, id_len, pause);
}

/* ---------------------------------------------------------------------------
 * Keys. */

static json_t *keys_json(struct rest_call *c, const Qraft__Response *resp)
{
    (void)c;
    return json_pack("{s:o,s:o}", "current", qr_json_text(resp->keys->current),
                     "next", qr_json_text(resp->keys->next));
}

static void handle_keys(struct qr_rest *r, h2o_req_t *req, bool rotate)
{
    Qraft__Request rpc_req = QRAFT__REQUEST__INIT;
    Qraft__KeysRequest keys = QRAFT__KEYS_REQUEST__INIT;

    keys.rotate = rotate;
    rpc_req.body_case = QRAFT__REQUEST__BODY_KEYS;
    rpc_req.keys = &keys;
    run_json(r, req, &rpc_req, QRAFT__RESPONSE__BODY_KEYS, keys_json, false);
}

/* ---------------------------------------------------------------------------
 * URL groups (QStash's "topics"). */

static bool method_is(h2o_req_t *req, const char *m);

/* UrlGroup as the SDK reads it: endpoints carry only name (if set) and
 * url, which the SDK's tests compare with deep equality. */
static json_t *group_json(const Qraft__UrlGroup *g)
{
    json_t *eps = json_array();
    json_t *o;

    for (size_t i = 0; eps != NULL && i < g->n_endpoints; i++) {
        json_t *e = json_object();
        set_opt_string(e, "name", g->endpoints[i]->name);
        json_object_set_new(e, "url", qr_json_text(g->endpoints[i]->url));
        json_array_append_new(eps, e);
    }
    o = json_pack("{s:o,s:I,s:I,s:o}", "name", qr_json_text(g->name),
                  "createdAt", (json_int_t)g->created_ms, "updatedAt",
                  (json_int_t)g->updated_ms, "endpoints", eps);
    return o;
}

/* One url group (GET /v2/topics/{name}), or all of them. */
static json_t *groups_json(struct rest_call *c, const Qraft__Response *resp)
{
    json_t *all;

    (void)c;
    if (resp->body_case == QRAFT__RESPONSE__BODY_GROUP) {
        return group_json(resp->group);
    }
    all = json_array();
    for (size_t i = 0; all != NULL && i < resp->group_list->n_groups; i++) {
        json_array_append_new(all, group_json(resp->group_list->groups[i]));
    }
    return all;
}

/* A change: QStash answers 200 with an empty body. */
static void on_group_changed(struct rest_call *c,
                             size_t index,
                             const Qraft__Response *resp)
{
    (void)index;
    if (!reply_ok(c, resp, QRAFT__RESPONSE__BODY__NOT_SET)) {
        return;
    }
    c->req->res.status = 200;
    c->req->res.reason = "OK";
    c->req->res.content_length = 0;
    h2o_send_inline(c->req, "", 0);
}

/* Fills change->endpoints (pool memory) from {"endpoints": [{"name"?,
 * "url"?}, ...]}; on bad input writes why into err and returns -EINVAL. */
static int parse_endpoints(h2o_req_t *req,
                           Qraft__GroupChangeRequest *change,
                           char *err)
{
    json_error_t jerr;
    json_t *in;
    json_t *list;
    const char *key;
    json_t *value;
    size_t n;
    int rv = -EINVAL;

    in = json_loadb(req->entity.base != NULL ? req->entity.base : "",
                    req->entity.base != NULL ? req->entity.len : 0, 0, &jerr);
    if (in == NULL) {
        snprintf(err, ERR_BYTES, "invalid JSON: %s (line %d, column %d)",
                 jerr.text, jerr.line, jerr.column);
        return -EINVAL;
    }
    list = json_object_get(in, "endpoints");
    if (!json_is_object(in) || json_object_size(in) != 1 ||
        !json_is_array(list) || json_array_size(list) == 0) {
        snprintf(err, ERR_BYTES,
                 "body must be {\"endpoints\": [{\"name\"?, \"url\"}, "
                 "...]} with at least one endpoint");
        goto out;
    }
    n = json_array_size(list);
    change->endpoints =
        h2o_mem_alloc_pool(&req->pool, sizeof(*change->endpoints) * n);
    change->n_endpoints = n;
    for (size_t i = 0; i < n; i++) {
        json_t *el = json_array_get(list, i);
        Qraft__UrlGroupEndpoint *e = h2o_mem_alloc_pool(&req->pool, sizeof(*e));
        qraft__url_group_endpoint__init(e);
        change->endpoints[i] = e;
        if (!json_is_object(el)) {
            snprintf(err, ERR_BYTES, "endpoint %zu is not an object", i + 1);
            goto out;
        }
        json_object_foreach(el, key, value)
        {
            bool name = strcmp(key, "name") == 0;
            if ((!name && strcmp(key, "url") != 0) || !json_is_string(value)) {
                snprintf(err, ERR_BYTES,
                         "endpoint %zu: unknown field or not a string: "
                         "'%.64s'",
                         i + 1, key);
                goto out;
            }
            char *text = pool_str(&req->pool, json_string_value(value),
                                  json_string_length(value));
            if (strlen(text) != json_string_length(value)) {
                snprintf(err, ERR_BYTES, "endpoint %zu: NUL in '%s'", i + 1,
                         key);
                goto out;
            }
            if (name) {
                e->name = text;
            } else {
                e->url = text;
            }
        }
    }
    rv = 0;
out:
    json_decref(in);
    return rv;
}

/* GET/DELETE /v2/topics/{name}, POST/DELETE /v2/topics/{name}/endpoints
 * (endpoints true), GET /v2/topics (name NULL). */
static void handle_topics(struct qr_rest *r,
                          h2o_req_t *req,
                          const char *name,
                          size_t name_len,
                          bool endpoints)
{
    Qraft__Request rpc_req = QRAFT__REQUEST__INIT;
    Qraft__GroupChangeRequest change = QRAFT__GROUP_CHANGE_REQUEST__INIT;
    Qraft__GroupGetRequest get = QRAFT__GROUP_GET_REQUEST__INIT;
    Qraft__GroupListRequest list = QRAFT__GROUP_LIST_REQUEST__INIT;
    char err[ERR_BYTES];

    if (name == NULL) {
        rpc_req.body_case = QRAFT__REQUEST__BODY_GROUP_LIST;
        rpc_req.group_list = &list;
        run_json(r, req, &rpc_req, QRAFT__RESPONSE__BODY_GROUP_LIST,
                 groups_json, false);
        return;
    }
    if (!valid_name(name, name_len)) {
        send_error(req, 400, "url group name must match [A-Za-z0-9._-]+");
        return;
    }
    change.name = pool_str(&req->pool, name, name_len);
    if (endpoints) {
        change.kind = method_is(req, "POST")
                          ? QRAFT__GROUP_CHANGE_KIND__GROUP_ADD_ENDPOINTS
                          : QRAFT__GROUP_CHANGE_KIND__GROUP_REMOVE_ENDPOINTS;
        if (parse_endpoints(req, &change, err) != 0) {
            send_error(req, 400, err);
            return;
        }
    } else if (method_is(req, "GET")) {
        get.name = change.name;
        rpc_req.body_case = QRAFT__REQUEST__BODY_GROUP_GET;
        rpc_req.group_get = &get;
        run_json(r, req, &rpc_req, QRAFT__RESPONSE__BODY_GROUP, groups_json,
                 false);
        return;
    } else {
        change.kind = QRAFT__GROUP_CHANGE_KIND__GROUP_DELETE;
    }
    rpc_req.body_case = QRAFT__REQUEST__BODY_GROUP_CHANGE;
    rpc_req.group_change = &change;
    run_single(r, req, &rpc_req, on_group_changed, NULL, false);
}

/* ---------------------------------------------------------------------------
 * Routing. */

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
        if (prefix_ci(v->base, v->len, "bearer ") &&
            token_ok(r->token, v->base + 7, v->len - 7)) {
            return true;
        }
    }
    t = query_get(&req->pool, query, "qstash_token");
    return t != NULL && token_ok(r->token, t, strlen(t));
}

static bool method_is(h2o_req_t *req, const char *m)
{
    return h2o_memis(req->method.base, req->method.len, m, strlen(m));
}

static void method_not_allowed(h2o_req_t *req, const char *allow)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, allow,
                   strlen(allow));
    send_error(req, 405, "method not allowed");
}

/* Whether req uses method m, the only one its route takes; else answers
 * 405 with Allow: m. */
static bool method_only(h2o_req_t *req, const char *m)
{
    if (method_is(req, m)) {
        return true;
    }
    method_not_allowed(req, m);
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

/* ---------------------------------------------------------------------------
 * Queues (spec section 7). */

static json_t *queue_json(const Qraft__Queue *q)
{
    return json_pack("{s:o,s:I,s:b,s:I,s:I,s:I}", "name", qr_json_text(q->name),
                     "parallelism", (json_int_t)q->parallelism, "paused",
                     q->paused, "lag", (json_int_t)q->waiting, "createdAt",
                     (json_int_t)q->created_ms, "updatedAt",
                     (json_int_t)q->updated_ms);
}

/* Queue writes answer 200 with {} (the SDK ignores the body); a limit
 * (CONFLICT from the node) is QStash's 412. */
static void on_queue_write_reply(struct rest_call *c,
                                 size_t index,
                                 const Qraft__Response *resp)
{
    if (resp->status == QRAFT__STATUS__CONFLICT) {
        c->answered = true;
        send_error(c->req, 412, resp->error);
        return;
    }
    on_json_reply(c, index, resp);
}

/* One queue (GET /v2/queues/{name}), or all of them. */
static json_t *queues_json(struct rest_call *c, const Qraft__Response *resp)
{
    (void)c;
    if (resp->body_case == QRAFT__RESPONSE__BODY_QUEUE) {
        return queue_json(resp->queue);
    }
    json_t *arr = json_array();
    for (size_t i = 0; resp->body_case == QRAFT__RESPONSE__BODY_QUEUES &&
                       i < resp->queues->n_queues && arr != NULL;
         i++) {
        json_array_append_new(arr, queue_json(resp->queues->queues[i]));
    }
    return arr;
}

/* POST /v2/queues {"queueName": "q", "parallelism": 1, "paused": false}:
 * every field checked, none unknown. */
static void handle_queue_upsert(struct qr_rest *r, h2o_req_t *req)
{
    Qraft__Request rpc_req = QRAFT__REQUEST__INIT;
    Qraft__QueueUpsertRequest up = QRAFT__QUEUE_UPSERT_REQUEST__INIT;
    char err[ERR_BYTES];
    const char *key;
    json_t *value;
    json_t *in = load_body(req);

    if (in == NULL) {
        return;
    }
    if (!json_is_object(in)) {
        json_decref(in);
        send_error(req, 400, "body must be a JSON object");
        return;
    }
    err[0] = '\0';
    json_object_foreach(in, key, value)
    {
        if (strcmp(key, "queueName") == 0) {
            if (!json_is_string(value) ||
                !valid_name(json_string_value(value),
                            json_string_length(value))) {
                snprintf(err, sizeof(err),
                         "queueName must be a string matching "
                         "[A-Za-z0-9._-]+");
                break;
            }
            up.name = pool_str(&req->pool, json_string_value(value),
                               json_string_length(value));
        } else if (strcmp(key, "parallelism") == 0) {
            if (!json_is_integer(value) || json_integer_value(value) < 1 ||
                json_integer_value(value) > UINT32_MAX) {
                snprintf(err, sizeof(err),
                         "parallelism must be a positive integer");
                break;
            }
            up.parallelism = (uint32_t)json_integer_value(value);
        } else if (strcmp(key, "paused") == 0) {
            if (!json_is_boolean(value)) {
                snprintf(err, sizeof(err), "paused must be true or false");
                break;
            }
            up.paused = json_is_true(value);
        } else {
            snprintf(err, sizeof(err),
                     "unknown field '%.64s' (queueName, parallelism, paused)",
                     key);
            break;
        }
    }
    json_decref(in);
    if (err[0] == '\0' && up.name[0] == '\0') {
        snprintf(err, sizeof(err), "queueName is missing");
    }
    if (err[0] != '\0') {
        send_error(req, 400, err);
        return;
    }
    rpc_req.body_case = QRAFT__REQUEST__BODY_QUEUE_UPSERT;
    rpc_req.queue_upsert = &up;
    start_single(r, req, &rpc_req, on_queue_write_reply,
                 QRAFT__RESPONSE__BODY__NOT_SET, empty_json, NULL, false);
}

/* /v2/queues[/{name}[/pause|/resume]]; rest is what follows "/v2/queues/"
 * (NULL for the collection). */
static void handle_queues(struct qr_rest *r,
                          h2o_req_t *req,
                          const char *rest,
                          size_t rest_len)
{
    Qraft__Request rpc_req = QRAFT__REQUEST__INIT;
    Qraft__QueueGetRequest get = QRAFT__QUEUE_GET_REQUEST__INIT;
    Qraft__QueueListRequest list = QRAFT__QUEUE_LIST_REQUEST__INIT;
    Qraft__QueueDeleteRequest del = QRAFT__QUEUE_DELETE_REQUEST__INIT;
    Qraft__QueuePauseRequest pause = QRAFT__QUEUE_PAUSE_REQUEST__INIT;
    const char *slash = rest != NULL ? memchr(rest, '/', rest_len) : NULL;
    size_t name_len = slash != NULL ? (size_t)(slash - rest) : rest_len;
    const char *action = slash != NULL ? slash + 1 : NULL;
    size_t action_len = slash != NULL ? rest_len - name_len - 1 : 0;
    char *name;

    if (rest == NULL) {
        if (method_is(req, "POST")) {
            handle_queue_upsert(r, req);
        } else if (method_is(req, "GET")) {
            rpc_req.body_case = QRAFT__REQUEST__BODY_QUEUE_LIST;
            rpc_req.queue_list = &list;
            run_json(r, req, &rpc_req, QRAFT__RESPONSE__BODY__NOT_SET,
                     queues_json, false);
        } else {
            method_not_allowed(req, "GET, POST");
        }
        return;
    }
    if (action != NULL &&
        !(h2o_memis(action, action_len, H2O_STRLIT("pause")) ||
          h2o_memis(action, action_len, H2O_STRLIT("resume")))) {
        send_error(req, 404, "not found");
        return;
    }
    if (!valid_name(rest, name_len)) {
        send_error(req, 400, "queue name must match [A-Za-z0-9._-]+");
        return;
    }
    name = pool_str(&req->pool, rest, name_len);
    if (action != NULL) {
        if (!method_only(req, "POST")) {
            return;
        }
        pause.name = name;
        pause.paused = action[0] == 'p';
        rpc_req.body_case = QRAFT__REQUEST__BODY_QUEUE_PAUSE;
        rpc_req.queue_pause = &pause;
        start_single(r, req, &rpc_req, on_queue_write_reply,
                     QRAFT__RESPONSE__BODY__NOT_SET, empty_json, NULL, false);
    } else if (method_is(req, "GET")) {
        get.name = name;
        rpc_req.body_case = QRAFT__REQUEST__BODY_QUEUE_GET;
        rpc_req.queue_get = &get;
        run_json(r, req, &rpc_req, QRAFT__RESPONSE__BODY__NOT_SET, queues_json,
                 false);
    } else if (method_is(req, "DELETE")) {
        del.name = name;
        rpc_req.body_case = QRAFT__REQUEST__BODY_QUEUE_DELETE;
        rpc_req.queue_delete = &del;
        start_single(r, req, &rpc_req, on_queue_write_reply,
                     QRAFT__RESPONSE__BODY__NOT_SET, empty_json, NULL, false);
    } else {
        method_not_allowed(req, "GET, DELETE");
    }
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
    struct query_param p;
    size_t pos = 0;

    while (next_param(query.base, query.len, &pos, &p)) {
        if (config_only && !prefix_ci(p.name, p.name_len, "upstash-") &&
            !equal_ci(p.name, p.name_len, "qstash_token")) {
            continue;
        }
        char *name = query_decode(pool, p.name, p.name_len);
        char *value = query_decode(pool, p.value, p.value_len);
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
         method_is(req, "POST"));

    if (check_query_utf8(&req->pool, query, forwards_query, err) != 0) {
        send_error(req, 400, err);
        return;
    }
    const char *consistency =
        forwards_query ? NULL : query_get(&req->pool, query, "consistency");
    if (consistency != NULL && strcmp(consistency, "stale") != 0 &&
        strcmp(consistency, "linearizable") != 0) {
        send_error(req, 400,
                   "consistency must be linearizable (the default) or stale");
        return;
    }

    if (path_is(path, len, "/v2/publish", &rest, &rest_len) && rest != NULL) {
        if (!method_only(req, "POST")) {
            return;
        }
        handle_publish(r, req, NULL, 0, rest, rest_len, query);
        return;
    }
    if (path_is(path, len, "/v2/enqueue", &rest, &rest_len) && rest != NULL) {
        const char *slash = memchr(rest, '/', rest_len);
        size_t qlen = slash != NULL ? (size_t)(slash - rest) : rest_len;
        if (!method_only(req, "POST")) {
            return;
        }
        if (!valid_name(rest, qlen)) {
            send_error(req, 400, "queue name must match [A-Za-z0-9._-]+");
            return;
        }
        handle_publish(r, req, rest, qlen, slash != NULL ? slash + 1 : "",
                       slash != NULL ? rest_len - qlen - 1 : 0, query);
        return;
    }
    if (path_is(path, len, "/v2/batch", &rest, &rest_len) && rest == NULL) {
        if (!method_only(req, "POST")) {
            return;
        }
        handle_batch(r, req);
        return;
    }
    if (path_is(path, len, "/v2/messages", &rest, &rest_len) && rest == NULL) {
        if (!method_only(req, "DELETE")) {
            return;
        }
        handle_cancel_many(r, req, query);
        return;
    }
    if ((path_is(path, len, "/v2/events", &rest, &rest_len) ||
         path_is(path, len, "/v2/logs", &rest, &rest_len)) &&
        rest == NULL) {
        if (!method_only(req, "GET")) {
            return;
        }
        handle_events(r, req, query, path[4] == 'l');
        return;
    }
    if (path_is(path, len, "/v2/messages", &rest, &rest_len) &&
        one_segment(rest, rest_len)) {
        if (!method_is(req, "GET") && !method_is(req, "DELETE")) {
            method_not_allowed(req, "GET, DELETE");
            return;
        }
        handle_message(r, req, rest, rest_len, false);
        return;
    }
    if (path_is(path, len, "/v2/queues", &rest, &rest_len) &&
        (rest == NULL || rest_len > 0)) {
        handle_queues(r, req, rest, rest_len);
        return;
    }
    if ((path_is(path, len, "/v2/keys", &rest, &rest_len) && rest == NULL)) {
        if (!method_only(req, "GET")) {
            return;
        }
        handle_keys(r, req, false);
        return;
    }
    if ((path_is(path, len, "/v2/keys/rotate", &rest, &rest_len) ||
         path_is(path, len, "/v2/rotate", &rest, &rest_len)) &&
        rest == NULL) {
        if (!method_only(req, "POST")) {
            return;
        }
        handle_keys(r, req, true);
        return;
    }
    if (path_is(path, len, "/v2/schedules", &rest, &rest_len)) {
        route_schedules(r, req, rest, rest_len, query);
        return;
    }
    if (path_is(path, len, "/v2/dlq/retry", &rest, &rest_len) &&
        (rest == NULL || one_segment(rest, rest_len))) {
        if (!method_only(req, "POST")) {
            return;
        }
        handle_dlq_bulk(r, req, rest, rest_len, query, true);
        return;
    }
    if (path_is(path, len, "/v2/dlq", &rest, &rest_len) && rest == NULL) {
        if (method_is(req, "GET")) {
            handle_dlq_list(r, req, query);
        } else if (method_is(req, "DELETE")) {
            handle_dlq_bulk(r, req, NULL, 0, query, false);
        } else {
            method_not_allowed(req, "GET, DELETE");
        }
        return;
    }
    if (path_is(path, len, "/v2/dlq", &rest, &rest_len) &&
        one_segment(rest, rest_len)) {
        if (method_is(req, "GET")) {
            handle_message(r, req, rest, rest_len, true);
        } else if (method_is(req, "DELETE")) {
            handle_dlq_bulk(r, req, rest, rest_len, query, false);
        } else {
            method_not_allowed(req, "GET, DELETE");
        }
        return;
    }
    if (path_is(path, len, "/v2/topics", &rest, &rest_len)) {
        static const char suffix[] = "/endpoints";
        size_t slen = sizeof(suffix) - 1;
        if (rest == NULL) {
            if (!method_only(req, "GET")) {
                return;
            }
            handle_topics(r, req, NULL, 0, false);
            return;
        }
        if (rest_len > slen &&
            memcmp(rest + rest_len - slen, suffix, slen) == 0 &&
            one_segment(rest, rest_len - slen)) {
            if (!method_is(req, "POST") && !method_is(req, "DELETE")) {
                method_not_allowed(req, "POST, DELETE");
                return;
            }
            handle_topics(r, req, rest, rest_len - slen, true);
            return;
        }
        if (one_segment(rest, rest_len)) {
            if (!method_is(req, "GET") && !method_is(req, "DELETE")) {
                method_not_allowed(req, "GET, DELETE");
                return;
            }
            handle_topics(r, req, rest, rest_len, false);
            return;
        }
    }
    send_error(req, 404, "not found");
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
        send_error(req, 503, "the REST API is not available on this server");
        return true;
    }
    if (!authorized(r, req, query)) {
        send_error(req, 401,
                   "unauthorized: send Authorization: Bearer <token> (or "
                   "?qstash_token=)");
        return true;
    }
    /* Ids, names and destinations come from the path: refused before
     * anything is proposed, never stored to fail when shown. */
    if (!qr_utf8_valid(req->path.base, req->path.len)) {
        send_error(req, 400,
                   "the request path is not valid UTF-8 (percent-encode "
                   "other bytes)");
        return true;
    }
    route(r, req, path, len, query);
    return true;
}

void qr_rest_init(struct qr_rest *r, struct qr_ops *ops, const char *token)
{
    r->ops = ops;
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
            send_error(c->req, 503, "the node is shutting down");
        }
    }
}
