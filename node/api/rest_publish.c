/* POST /v2/publish/{destination}, /v2/enqueue/{queue}/{destination} and
 * /v2/batch: a request's body, Upstash-* headers (and lower-case upstash-*
 * query parameters) mapped onto a PublishRequest, answered {"messageId",
 * "url"} (one per endpoint for a URL group). A schedule's request is built
 * by the same mapping (rest_schedules.c). */
#include "api/rest_int.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/json_text.h"
#include "lib/utf8.h"
#include "ops/ops.h"
#include "repl/check.h"
#include "repl/command.h"

static void pub_init(struct rest_pub *p,
                     h2o_mem_pool_t *pool,
                     size_t max_headers)
{
    qraft__publish_request__init(&p->pr);
    qraft__workflow_publish__init(&p->wf);
    p->cap = max_headers;
    p->headers = h2o_mem_alloc_pool(
        pool, sizeof(*p->headers) * (max_headers > 0 ? max_headers : 1));
    p->pr.headers = p->headers;
    p->pr.n_headers = 0;
    p->fc_headers = h2o_mem_alloc_pool(
        pool, sizeof(*p->fc_headers) * (max_headers > 0 ? max_headers : 1));
    p->pr.failure_callback_headers = p->fc_headers;
    p->pr.n_failure_callback_headers = 0;
    p->cb_headers = h2o_mem_alloc_pool(
        pool, sizeof(*p->cb_headers) * (max_headers > 0 ? max_headers : 1));
    p->pr.callback_headers = p->cb_headers;
    p->pr.n_callback_headers = 0;
    p->labels_cap = 0;
}

/* The next item of a comma-separated header value ("a, b,,c") from *at:
 * false at its end; else the item with the blanks around it dropped in
 * *item, *n (0 for an empty one) and *at past its comma. */
static bool next_list_item(const char *val,
                           size_t vlen,
                           size_t *at,
                           const char **item,
                           size_t *n)
{
    if (*at >= vlen) {
        return false;
    }
    const char *start = val + *at;
    const char *comma = memchr(start, ',', vlen - *at);
    size_t len = comma != NULL ? (size_t)(comma - start) : vlen - *at;
    *at += len + 1;
    while (len > 0 && isspace((unsigned char)*start)) {
        start++;
        len--;
    }
    while (len > 0 && isspace((unsigned char)start[len - 1])) {
        len--;
    }
    *item = start;
    *n = len;
    return true;
}

/* Appends the labels of one Upstash-Label value ("a,b,c"; blanks around
 * each are dropped, empty ones skipped). */
static void pub_add_labels(struct rest_pub *p,
                           h2o_mem_pool_t *pool,
                           const char *val,
                           size_t vlen)
{
    size_t at = 0;
    const char *start;
    size_t n;

    while (next_list_item(val, vlen, &at, &start, &n)) {
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
        p->pr.labels[p->pr.n_labels++] = qr_rest_pool_str(pool, start, n);
    }
}

/* Takes one item of Upstash-Redact-Fields: body, header / headers (every
 * forwarded header), header[Name] / headers[Name] (SDK and docs spell it
 * both ways). -EINVAL, why in err, for anything else. */
static int pub_add_redact_item(struct rest_pub *p,
                               h2o_mem_pool_t *pool,
                               const char *s,
                               size_t n,
                               char *err)
{
    Qraft__Redact *r = p->pr.redact;
    if (qr_rest_equal_ci(s, n, "body")) {
        r->body = true;
        return 0;
    }
    if (qr_rest_equal_ci(s, n, "header") || qr_rest_equal_ci(s, n, "headers")) {
        r->all_headers = true;
        return 0;
    }
    size_t skip = qr_rest_prefix_ci(s, n, "header[")    ? 7
                  : qr_rest_prefix_ci(s, n, "headers[") ? 8
                                                        : 0;
    if (skip == 0 || s[n - 1] != ']' || n - 1 == skip) {
        snprintf(err, ERR_BYTES,
                 "invalid Upstash-Redact-Fields item '%.64s': want body, "
                 "header or header[Name], comma separated",
                 qr_rest_pool_str(pool, s, n));
        return -EINVAL;
    }
    if (r->n_headers == QR_CHECK_REDACT_MAX_HEADERS) {
        snprintf(err, ERR_BYTES,
                 "Upstash-Redact-Fields names more than %u headers",
                 QR_CHECK_REDACT_MAX_HEADERS);
        return -EINVAL;
    }
    char **grown =
        h2o_mem_alloc_pool(pool, sizeof(*grown) * (r->n_headers + 1));
    if (r->n_headers > 0) {
        memcpy(grown, r->headers, sizeof(*grown) * r->n_headers);
    }
    grown[r->n_headers] = qr_rest_pool_str(pool, s + skip, n - 1 - skip);
    r->headers = grown;
    r->n_headers++;
    return 0;
}

/* Upstash-Redact-Fields: comma-separated items, blanks around each dropped,
 * empty ones skipped; several such headers add up. The names are checked
 * with the rest of the request (qr_command_check_redact). */
static int pub_add_redact(struct rest_pub *p,
                          h2o_mem_pool_t *pool,
                          const char *val,
                          size_t vlen,
                          char *err)
{
    if (p->pr.redact == NULL) {
        p->pr.redact = h2o_mem_alloc_pool(pool, sizeof(*p->pr.redact));
        qraft__redact__init(p->pr.redact);
    }
    size_t at = 0;
    const char *start;
    size_t n;
    while (next_list_item(val, vlen, &at, &start, &n)) {
        if (n > 0 && pub_add_redact_item(p, pool, start, n, err) != 0) {
            return -EINVAL;
        }
    }
    return 0;
}

/* Appends name: value to list (p->cap entries), counted by *n. */
static void pub_add_to(struct rest_pub *p,
                       Qraft__Header **list,
                       size_t *n,
                       h2o_mem_pool_t *pool,
                       char *name,
                       const char *value,
                       size_t value_len)
{
    Qraft__Header *h;

    if (*n == p->cap) {
        return; /* cannot happen: cap counts every input header */
    }
    h = h2o_mem_alloc_pool(pool, sizeof(*h));
    qraft__header__init(h);
    h->name = name;
    h->value = qr_rest_pool_str(pool, value, value_len);
    list[(*n)++] = h;
}

static void pub_add_header(struct rest_pub *p,
                           h2o_mem_pool_t *pool,
                           char *name,
                           const char *value,
                           size_t value_len)
{
    pub_add_to(p, p->headers, &p->pr.n_headers, pool, name, value, value_len);
}

/* Refuses a header the node reads or stores (Content-Type and Upstash-*:
 * forwarded headers, callbacks, labels, keys, ids... that replies show as
 * JSON later) unless its name and value are UTF-8; any other header is
 * ignored, whatever its bytes. On bad input writes why into err and returns
 * -EINVAL. */
int qr_rest_check_header_utf8(const char *name,
                              size_t nlen,
                              const char *val,
                              size_t vlen,
                              char *err)
{
    if (!qr_rest_equal_ci(name, nlen, "content-type") &&
        !qr_rest_prefix_ci(name, nlen, "upstash-")) {
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

/* An Upstash-Workflow-* header of a publish: the run it triggers (Init:
 * true) or adds a step to (Init: false), docs/workflow.md. The others
 * (Sdk-Version, Telemetry...) are the SDK's and ignored. */
static int apply_workflow_header(struct rest_pub *p,
                                 h2o_mem_pool_t *pool,
                                 const char *name,
                                 size_t nlen,
                                 const char *val,
                                 size_t vlen,
                                 char *err)
{
    if (qr_rest_equal_ci(name, nlen, "upstash-workflow-runid")) {
        p->wf.run_id = qr_rest_pool_str(pool, val, vlen);
    } else if (qr_rest_equal_ci(name, nlen, "upstash-workflow-init")) {
        if (!qr_rest_equal_ci(val, vlen, "true") &&
            !qr_rest_equal_ci(val, vlen, "false")) {
            snprintf(err, ERR_BYTES,
                     "invalid Upstash-Workflow-Init: want true or false");
            return -EINVAL;
        }
        p->wf.init = qr_rest_equal_ci(val, vlen, "true");
    } else if (qr_rest_equal_ci(name, nlen, "upstash-workflow-url")) {
        p->wf.url = qr_rest_pool_str(pool, val, vlen);
    } else if (qr_rest_equal_ci(name, nlen, "upstash-workflow-calltype")) {
        p->wf.call_type = qr_rest_pool_str(pool, val, vlen);
    } else if (qr_rest_equal_ci(name, nlen, "upstash-workflow-invoke")) {
        p->wf.invoke = qr_rest_equal_ci(val, vlen, "true");
    } else {
        return 0;
    }
    p->pr.workflow = &p->wf;
    return 0;
}

/* One Upstash-Callback-* or Upstash-Failure-Callback-* header: a setting
 * of that callback message, kept by name (rest, after the prefix; see
 * repl/callback.h). A forwarded header qraft sets is dropped, as for the
 * message's own. */
static void add_template(struct rest_pub *p,
                         Qraft__Header **list,
                         size_t *n,
                         h2o_mem_pool_t *pool,
                         const char *rest,
                         size_t rlen,
                         const char *val,
                         size_t vlen)
{
    const char *fwd = NULL;
    size_t flen = 0;
    if (qr_rest_prefix_ci(rest, rlen, "forward-")) {
        fwd = rest + 8;
        flen = rlen - 8;
    } else if (qr_rest_prefix_ci(rest, rlen, "failure-callback-forward-")) {
        fwd = rest + 25;
        flen = rlen - 25;
    }
    if (fwd != NULL && qr_command_header_reserved(fwd, flen) != NULL) {
        return;
    }
    pub_add_to(p, list, n, pool, qr_rest_canonical(pool, rest, rlen), val,
               vlen);
}

/* Applies one request header to p; on bad input writes why into err and
 * returns -EINVAL. */
int qr_rest_apply_header(struct rest_pub *p,
                         h2o_mem_pool_t *pool,
                         h2o_iovec_t header,
                         h2o_iovec_t value,
                         char *err)
{
    static const char fwd[] = "upstash-forward-";
    static const char fcb[] = "upstash-failure-callback-";
    static const char cb[] = "upstash-callback-";
    const char *name = header.base;
    size_t nlen = header.len;
    const char *val = value.base;
    size_t vlen = value.len;
    uint64_t v;

    if (qr_rest_check_header_utf8(name, nlen, val, vlen, err) != 0) {
        return -EINVAL;
    }
    if (qr_rest_equal_ci(name, nlen, "content-type")) {
        pub_add_header(p, pool, qr_rest_pool_str(pool, "Content-Type", 12), val,
                       vlen);
    } else if (qr_rest_prefix_ci(name, nlen, fwd) && nlen > sizeof(fwd) - 1) {
        if (qr_command_header_reserved(name + sizeof(fwd) - 1,
                                       nlen - (sizeof(fwd) - 1)) != NULL) {
            /* qraft sets it on delivery (a copy would forge it, or frame
             * the request wrong); SDKs forward whatever they received, so
             * it is dropped, not refused. */
            return 0;
        }
        pub_add_header(p, pool,
                       qr_rest_canonical(pool, name + sizeof(fwd) - 1,
                                         nlen - (sizeof(fwd) - 1)),
                       val, vlen);
    } else if (qr_rest_equal_ci(name, nlen, "upstash-method")) {
        p->pr.method = qr_rest_pool_str(pool, val, vlen);
        for (char *m = p->pr.method; *m != '\0'; m++) {
            *m = (char)toupper((unsigned char)*m);
        }
    } else if (qr_rest_equal_ci(name, nlen, "upstash-retries")) {
        if (qr_command_parse_uint(val, vlen, UINT32_MAX, &v) != 0) {
            snprintf(err, ERR_BYTES,
                     "invalid Upstash-Retries '%.*s': want an integer >= 0",
                     (int)(vlen > 64 ? 64 : vlen), val);
            return -EINVAL;
        }
        p->pr.retries = (uint32_t)v;
        p->pr.retries_set = true;
    } else if (qr_rest_equal_ci(name, nlen, "upstash-retry-delay")) {
        p->pr.retry_delay = qr_rest_pool_str(pool, val, vlen);
    } else if (qr_rest_equal_ci(name, nlen, "upstash-delay") ||
               qr_rest_equal_ci(name, nlen, "upstash-timeout")) {
        bool delay = qr_rest_equal_ci(name, nlen, "upstash-delay");
        if (qr_command_parse_duration(val, vlen, &v) != 0) {
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
    } else if (qr_rest_equal_ci(name, nlen, "upstash-not-before")) {
        if (qr_command_parse_uint(val, vlen, UINT64_MAX / 1000, &v) != 0) {
            snprintf(err, ERR_BYTES,
                     "invalid Upstash-Not-Before '%.*s': want unix seconds",
                     (int)(vlen > 64 ? 64 : vlen), val);
            return -EINVAL;
        }
        p->pr.not_before_ms = v * 1000;
    } else if (qr_rest_equal_ci(name, nlen, "upstash-deduplication-id")) {
        p->pr.dedup_id = qr_rest_pool_str(pool, val, vlen);
    } else if (qr_rest_equal_ci(name, nlen,
                                "upstash-content-based-deduplication")) {
        if (qr_rest_equal_ci(val, vlen, "true")) {
            p->pr.content_dedup = true;
        } else if (!qr_rest_equal_ci(val, vlen, "false")) {
            snprintf(err, ERR_BYTES,
                     "invalid Upstash-Content-Based-Deduplication: want true "
                     "or false");
            return -EINVAL;
        }
    } else if (qr_rest_equal_ci(name, nlen, "upstash-callback")) {
        p->pr.callback = qr_rest_pool_str(pool, val, vlen);
    } else if (qr_rest_prefix_ci(name, nlen, fcb) && nlen > sizeof(fcb) - 1) {
        add_template(p, p->fc_headers, &p->pr.n_failure_callback_headers, pool,
                     name + sizeof(fcb) - 1, nlen - (sizeof(fcb) - 1), val,
                     vlen);
    } else if (qr_rest_prefix_ci(name, nlen, cb) && nlen > sizeof(cb) - 1) {
        add_template(p, p->cb_headers, &p->pr.n_callback_headers, pool,
                     name + sizeof(cb) - 1, nlen - (sizeof(cb) - 1), val, vlen);
    } else if (qr_rest_equal_ci(name, nlen, "upstash-failure-callback")) {
        p->pr.failure_callback = qr_rest_pool_str(pool, val, vlen);
    } else if (qr_rest_equal_ci(name, nlen, "upstash-label")) {
        pub_add_labels(p, pool, val, vlen);
    } else if (qr_rest_equal_ci(name, nlen, "upstash-redact-fields")) {
        return pub_add_redact(p, pool, val, vlen, err);
    } else if (qr_rest_prefix_ci(name, nlen, "upstash-workflow-")) {
        return apply_workflow_header(p, pool, name, nlen, val, vlen, err);
    } else if (qr_rest_equal_ci(name, nlen, "upstash-flow-control-key")) {
        p->pr.flow_control_key = qr_rest_pool_str(pool, val, vlen);
    } else if (qr_rest_equal_ci(name, nlen, "upstash-flow-control-value")) {
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
    if (qr_rest_prefix_ci(dest, len, "http://") ||
        qr_rest_prefix_ci(dest, len, "https://")) {
        return 0;
    }
    if (len == 0) {
        snprintf(err, ERR_BYTES, "destination missing");
        return 400;
    }
    if (qr_rest_valid_name(dest, len)) {
        *group = true;
        return 0;
    }
    snprintf(err, ERR_BYTES,
             "invalid destination url: endpoint has invalid scheme, add "
             "http:// or https://");
    return 400;
}

char *qr_rest_caller_ip(h2o_req_t *req)
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
    return n != SIZE_MAX ? qr_rest_pool_str(&req->pool, buf, n) : (char *)"";
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
        qr_rest_send_error(c->req, 412,
                           resp->error); /* QStash: quota exceeded */
        return;
    }
    if (!qr_rest_reply_ok(c, resp, QRAFT__RESPONSE__BODY__NOT_SET)) {
        return;
    }
    qr_rest_send_reply(c, publish_deduplicated(resp) ? 202 : 200,
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
    struct rest_param p;

    memcpy(out, dest, dlen);
    while (qr_rest_next_param(query.base, query.len, &pos, &p)) {
        size_t plen;
        if (qr_rest_equal_ci(p.name, p.name_len, "qstash_token") ||
            qr_rest_prefix_ci(p.name, p.name_len, "upstash-")) {
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

/* The start of a publish to dest (a URL, or a url group's name: then
 * pr.topic_name is set), a request's or a schedule's: checks dest, inits p
 * for max_headers headers, and sets its destination (a URL gets query,
 * less config; a group publish's query is config only). Returns 0, or an
 * HTTP status having written why into err. */
int qr_rest_pub_begin(struct rest_pub *p,
                      h2o_mem_pool_t *pool,
                      h2o_iovec_t dest,
                      h2o_iovec_t query,
                      size_t max_headers,
                      char *err)
{
    bool group;
    int status = check_destination(dest.base, dest.len, &group, err);

    if (status != 0) {
        return status;
    }
    pub_init(p, pool, max_headers);
    if (group) {
        p->pr.topic_name = qr_rest_pool_str(pool, dest.base, dest.len);
    } else {
        p->pr.url = destination_with_query(pool, dest.base, dest.len, query);
    }
    return 0;
}

/* qr_rest_pub_begin of req's body, with room for req's headers plus extra
 * more. Returns false having answered req when dest is bad. */
bool qr_rest_pub_start(struct rest_pub *p,
                       h2o_req_t *req,
                       h2o_iovec_t dest,
                       h2o_iovec_t query,
                       size_t extra)
{
    char err[ERR_BYTES];
    int status = qr_rest_pub_begin(p, &req->pool, dest, query,
                                   req->headers.size + extra, err);

    if (status != 0) {
        qr_rest_send_error(req, status, err);
        return false;
    }
    p->pr.body.data = (uint8_t *)req->entity.base;
    p->pr.body.len = req->entity.base != NULL ? req->entity.len : 0;
    return true;
}

/* How many parameters query holds (room for each in a rest_pub). */
size_t qr_rest_query_count(h2o_iovec_t query)
{
    struct rest_param qp;
    size_t pos = 0;
    size_t n = 0;

    while (qr_rest_next_param(query.base, query.len, &pos, &qp)) {
        n++;
    }
    return n;
}

/* A publish's config onto p: lower-case upstash-* query parameters
 * (webhooks), then the headers, which win. On bad input writes why into
 * err and returns -EINVAL. */
int qr_rest_pub_map(struct rest_pub *p,
                    h2o_mem_pool_t *pool,
                    h2o_iovec_t query,
                    const h2o_headers_t *headers,
                    char *err)
{
    struct rest_param qp;
    size_t pos = 0;

    while (qr_rest_next_param(query.base, query.len, &pos, &qp)) {
        if (!qr_rest_prefix_ci(qp.name, qp.name_len, "upstash-")) {
            continue;
        }
        char *v = qr_rest_query_decode(pool, qp.value, qp.value_len);
        if (qr_rest_apply_header(p, pool, h2o_iovec_init(qp.name, qp.name_len),
                                 h2o_iovec_init(v, strlen(v)), err) != 0) {
            return -EINVAL;
        }
    }
    for (size_t i = 0; i < headers->size; i++) {
        const h2o_header_t *h = &headers->entries[i];
        if (qr_rest_apply_header(p, pool, *h->name, h->value, err) != 0) {
            return -EINVAL;
        }
    }
    return 0;
}

/* With tracing on, the request's W3C traceparent header (the caller's
 * span) onto p: ops/ops.c makes the publish span its child, or starts a
 * new trace when it is not well formed. Off, it is not even looked for. */
static void pub_traceparent(struct qr_rest *r,
                            struct rest_pub *p,
                            h2o_req_t *req)
{
    if (r->ops->trace == NULL) {
        return;
    }
    ssize_t at =
        h2o_find_header_by_str(&req->headers, H2O_STRLIT("traceparent"), -1);
    if (at >= 0) {
        const h2o_iovec_t *v = &req->headers.entries[at].value;
        p->pr.traceparent = qr_rest_pool_str(&req->pool, v->base, v->len);
    }
}

static void handle_publish(struct qr_rest *r,
                           h2o_req_t *req,
                           h2o_iovec_t queue,
                           h2o_iovec_t dest,
                           h2o_iovec_t query)
{
    char err[ERR_BYTES];
    struct rest_pub p;

    if (!qr_rest_pub_start(&p, req, dest, query, qr_rest_query_count(query))) {
        return;
    }
    if (queue.base != NULL) {
        p.pr.queue = qr_rest_pool_str(&req->pool, queue.base, queue.len);
    }
    p.pr.caller_ip = qr_rest_caller_ip(req);
    pub_traceparent(r, &p, req);
    if (qr_rest_pub_map(&p, &req->pool, query, &req->headers, err) != 0) {
        qr_rest_send_error(req, 400, err);
        return;
    }
    QR_REST_RUN(
        r, req, PUBLISH, publish, &p.pr,
        &(struct rest_answer){
            .on_reply = on_publish_reply,
            .url = p.pr.topic_name[0] != '\0' ? p.pr.topic_name : p.pr.url});
}

/* POST /v2/publish/{destination}: the destination is the raw rest of the
 * path (slashes, "://" and escapes as they came). */
void qr_rest_publish(struct qr_rest *r,
                     h2o_req_t *req,
                     const struct rest_match *m)
{
    handle_publish(r, req, h2o_iovec_init(NULL, 0), m->capture, m->query);
}

/* POST /v2/enqueue/{queue}/{destination}. */
void qr_rest_enqueue(struct qr_rest *r,
                     h2o_req_t *req,
                     const struct rest_match *m)
{
    const char *rest = m->capture.base;
    size_t rest_len = m->capture.len;
    const char *slash = memchr(rest, '/', rest_len);
    size_t qlen = slash != NULL ? (size_t)(slash - rest) : rest_len;

    if (!qr_rest_valid_name(rest, qlen)) {
        qr_rest_send_error(req, 400, "queue name must match [A-Za-z0-9._-]+");
        return;
    }
    handle_publish(r, req, h2o_iovec_init(rest, qlen),
                   slash != NULL
                       ? h2o_iovec_init(slash + 1, rest_len - qlen - 1)
                       : h2o_iovec_init("", 0),
                   m->query);
}

/* Answers a batch once every element has its answer: 200 with one answer
 * per element, or, when the node refused one (a step into a run that is
 * over, say), that element's status and why, naming what was published
 * anyway (elements apply one by one). */
static void finish_batch(struct rest_call *c)
{
    c->answered = true;
    if (c->req == NULL) {
        return; /* the client is gone */
    }
    if (c->failed_status == 0) {
        qr_rest_send_reply(c, 200, json_incref(c->out), NULL);
        return;
    }
    size_t n = json_array_size(c->out);
    json_t *el = json_array_get(c->out, c->failed_at);
    const char *why = json_string_value(json_object_get(el, "error"));
    json_t *published = json_array();
    for (size_t i = 0; published != NULL && i < n; i++) {
        json_t *id = json_object_get(json_array_get(c->out, i), "messageId");
        if (id != NULL) {
            json_array_append(published, id);
        }
    }
    char *ids = published != NULL && json_array_size(published) > 0
                    ? json_dumps(published, JSON_COMPACT)
                    : NULL;
    char msg[ERR_BYTES + 256];
    snprintf(
        msg, sizeof msg, "batch element %zu of %zu: %s; %s%.512s",
        c->failed_at + 1, n, why != NULL ? why : "refused",
        ids != NULL ? "the others were published: " : "nothing was published",
        ids != NULL ? ids : "");
    free(ids);
    json_decref(published);
    qr_rest_send_error(c->req, c->failed_status, msg);
}

static void on_batch_reply(struct rest_call *c,
                           size_t index,
                           const Qraft__Response *resp)
{
    json_array_set_new(c->out, index, publish_answer(resp, c->urls[index]));
    if (resp->status != QRAFT__STATUS__OK &&
        (c->failed_status == 0 || index < c->failed_at)) {
        c->failed_at = index;
        c->failed_status = qr_rest_http_status(resp->status);
    }
    if (--c->n_pending > 0) {
        return;
    }
    finish_batch(c);
}

/* Builds the publish of one batch element into p; on bad input writes why
 * into err and returns -EINVAL. */
int qr_rest_batch_element(h2o_mem_pool_t *pool,
                          json_t *el,
                          struct rest_pub *p,
                          char *caller,
                          char *err)
{
    json_t *dest = NULL;
    json_t *headers = NULL;
    json_t *body = NULL;
    json_t *queue = NULL;
    const char *key;
    json_t *value;
    Qraft__Header **hs;
    size_t n_headers = 0;

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
    const char *bad = NULL;
    int bad_header = qr_rest_header_list(pool, headers, &hs, &n_headers, &bad);
    if (qr_rest_pub_begin(
            p, pool,
            h2o_iovec_init(json_string_value(dest), json_string_length(dest)),
            h2o_iovec_init(NULL, 0), n_headers, err) != 0) {
        return -EINVAL;
    }
    if (queue != NULL && !qr_rest_valid_name(json_string_value(queue),
                                             json_string_length(queue))) {
        snprintf(err, ERR_BYTES,
                 "batch element: queue name must match [A-Za-z0-9._-]+");
        return -EINVAL;
    }
    p->pr.caller_ip = caller;
    if (queue != NULL) {
        p->pr.queue = qr_rest_pool_str(pool, json_string_value(queue),
                                       json_string_length(queue));
    }
    if (bad_header != 0) {
        snprintf(err, ERR_BYTES,
                 "batch element: header '%.64s' is not a string", bad);
        return -EINVAL;
    }
    for (size_t i = 0; i < n_headers; i++) {
        if (qr_rest_apply_header(
                p, pool, h2o_iovec_init(hs[i]->name, strlen(hs[i]->name)),
                h2o_iovec_init(hs[i]->value, strlen(hs[i]->value)), err) != 0) {
            return -EINVAL;
        }
    }
    if (body != NULL) {
        p->pr.body.data = (uint8_t *)qr_rest_pool_str(
            pool, json_string_value(body), json_string_length(body));
        p->pr.body.len = json_string_length(body);
    }
    return 0;
}

/* POST /v2/batch: a JSON array of publishes, answered once each has its
 * answer. */
void qr_rest_batch(struct qr_rest *r,
                   h2o_req_t *req,
                   const struct rest_match *m)
{
    json_t *in;
    struct rest_call *c;
    size_t n;
    char err[ERR_BYTES];
    char *caller = qr_rest_caller_ip(req);
    char why[QR_OPS_SPACE_WHY_BYTES];

    (void)m;
    if (qr_ops_check_space(r->ops, why, sizeof why) != 0) {
        qr_rest_send_error(req, 507,
                           why); /* the whole batch, not item by item */
        return;
    }
    in = qr_rest_load_body(req);
    if (in == NULL) {
        return;
    }
    if (!json_is_array(in) || json_array_size(in) == 0 ||
        json_array_size(in) > MAX_BATCH) {
        json_decref(in);
        qr_rest_send_error(req, 400,
                           "batch body must be a JSON array of 1 to 1000 "
                           "messages");
        return;
    }
    n = json_array_size(in);
    /* All or nothing: every element is built and checked before any is
     * sent, and one that fails refuses the batch (the SDKs ignore a per-
     * element error, so a 200 with one would lose that message). */
    struct rest_pub *pubs = h2o_mem_alloc_pool(&req->pool, n * sizeof(*pubs));
    uint64_t now_ms = qr_cluster_now_ms(r->ops->cluster);
    for (size_t i = 0; i < n; i++) {
        char why_el[ERR_BYTES + 64];
        int rv = qr_rest_batch_element(&req->pool, json_array_get(in, i),
                                       &pubs[i], caller, err);
        if (rv == 0) {
            pub_traceparent(r, &pubs[i], req); /* one trace, a span each */
            rv = qr_command_check_publish(&pubs[i].pr, &r->ops->config->limits,
                                          now_ms, err, sizeof err);
        }
        if (rv == 0) {
            rv = qr_ops_check_publish_destinations(r->ops, &pubs[i].pr, err,
                                                   sizeof err);
        }
        if (rv != 0) {
            json_decref(in);
            snprintf(why_el, sizeof why_el,
                     "batch element %zu of %zu: %s; nothing was published",
                     i + 1, n, err);
            qr_rest_send_error(req, rv == QR_ETOOLARGE ? 413 : 400, why_el);
            return;
        }
    }
    c = qr_rest_call_new(r, req, on_batch_reply);
    if (c == NULL) {
        json_decref(in);
        qr_rest_send_error(req, 503, "out of memory");
        return;
    }
    c->items = calloc(n, sizeof(*c->items));
    c->urls = calloc(n, sizeof(*c->urls));
    c->out = json_array();
    if (c->items == NULL || c->urls == NULL || c->out == NULL) {
        json_decref(in);
        qr_rest_send_error(req, 503, "out of memory");
        return;
    }
    c->n_items = n;
    c->n_pending = n + 1; /* + ours, dropped once every element is sent */
    c->refs++;
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(c->out, json_null());
    }
    for (size_t i = 0; i < n; i++) {
        Qraft__Request rpc_req = QRAFT__REQUEST__INIT;
        json_t *d = json_object_get(json_array_get(in, i), "destination");

        c->items[i].call = c;
        c->items[i].index = i;
        c->urls[i] = strdup(json_is_string(d) ? json_string_value(d) : "");
        rpc_req.body_case = QRAFT__REQUEST__BODY_PUBLISH;
        rpc_req.publish = &pubs[i].pr;
        if (qr_rest_submit(c, &c->items[i], &rpc_req) != 0) {
            json_array_set_new(
                c->out, i,
                json_pack("{s:s}", "error", "the node is shutting down"));
            if (c->failed_status == 0) {
                c->failed_at = i;
                c->failed_status = 503;
            }
            c->n_pending--;
        } else {
            c->done = "the batch's messages without an error were published";
        }
    }
    json_decref(in);
    if (--c->n_pending == 0 && c->req != NULL && !c->answered) {
        finish_batch(c);
    }
    qr_rest_call_unref(c);
}
