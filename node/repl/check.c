#include "repl/check.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/cron.h"
#include "lib/err.h"
#include "lib/expr.h"
#include "lib/utf8.h"

/* Past this the default backoff has long hit its one-day cap. */
#define MAX_DOUBLINGS 16u

/* Headers qraft sets on every delivery: a published copy would let a sender
 * forge them (a receiver dedups on Upstash-Message-Id and verifies
 * Upstash-Signature). Framing headers belong to the HTTP client. */
static const char *const reserved_headers[] = {
    "Upstash-Message-Id",  "Upstash-Retried",   "Upstash-Signature",
    "Upstash-Schedule-Id", "User-Agent",        "Content-Length",
    "Transfer-Encoding",   "Connection",        "Host",
    "Upstash-Topic-Name",  "Upstash-Caller-Ip",
};

const char *qr_command_header_reserved(const char *name, size_t len)
{
    for (size_t r = 0; r < sizeof reserved_headers / sizeof reserved_headers[0];
         r++) {
        if (strlen(reserved_headers[r]) == len &&
            strncasecmp(name, reserved_headers[r], len) == 0) {
            return reserved_headers[r];
        }
    }
    return NULL;
}

static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};

/* A request's text field and the name its error message gives it. */
struct named_text {
    const char *field;
    const char *value;
};

static int fail(int rv, char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(int rv, char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
    return rv;
}

/* http:// or https:// followed by a host, no whitespace or control bytes. */
static bool is_http_url(const char *url)
{
    size_t skip;
    if (strncasecmp(url, "http://", 7) == 0) {
        skip = 7;
    } else if (strncasecmp(url, "https://", 8) == 0) {
        skip = 8;
    } else {
        return false;
    }
    const char *host = url + skip;
    if (*host == '\0' || *host == '/' || *host == '?' || *host == '#') {
        return false;
    }
    for (const unsigned char *p = (const unsigned char *)url; *p; p++) {
        if (*p <= 0x20 || *p == 0x7f) {
            return false;
        }
    }
    return true;
}

/* RFC 9110 token characters. */
static bool is_header_name(const char *s)
{
    return qr_command_is_word(s, "!#$%&'*+-.^_`|~");
}

/* Text that is stored and shown (as JSON, too): UTF-8 without control
 * characters but tab. */
static bool is_header_value(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        unsigned char ch = (unsigned char)s[n];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            return false;
        }
    }
    return qr_utf8_valid(s, n);
}

static int check_url(const char *field,
                     const char *url,
                     const struct qr_limits *l,
                     char *err,
                     size_t err_len)
{
    size_t len = strlen(url);
    if (len > l->max_url_bytes) {
        return fail(QR_ETOOLARGE, err, err_len,
                    "%s is %zu bytes; the limit is %" PRIu32, field, len,
                    l->max_url_bytes);
    }
    if (!qr_utf8_valid(url, len)) {
        return fail(QR_EBADREQ, err, err_len, "%s is not valid UTF-8", field);
    }
    if (!is_http_url(url)) {
        return fail(QR_EBADREQ, err, err_len,
                    "%s '%.64s' is not an http:// or https:// URL", field, url);
    }
    return 0;
}

/* Labels, caller address and flow control: stored and echoed. */
static int check_metadata(const Qraft__PublishRequest *req,
                          const struct qr_limits *l,
                          char *err,
                          size_t err_len)
{
    if (req->n_labels > l->max_labels) {
        return fail(QR_ETOOLARGE, err, err_len,
                    "%zu labels; the limit is %" PRIu32, req->n_labels,
                    l->max_labels);
    }
    for (size_t i = 0; i < req->n_labels; i++) {
        const char *label = req->labels[i];
        if (label[0] == '\0' || strlen(label) > l->max_name_bytes ||
            !is_header_value(label)) {
            return fail(QR_EBADREQ, err, err_len,
                        "label %zu is empty, over %" PRIu32
                        " bytes, has control characters or is not UTF-8",
                        i + 1, l->max_name_bytes);
        }
    }
    const struct named_text texts[] = {
        {"caller ip", req->caller_ip},
        {"flow control key", req->flow_control_key},
        {"endpoint name", req->endpoint_name},
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        if (strlen(texts[i].value) > l->max_name_bytes ||
            !is_header_value(texts[i].value)) {
            return fail(QR_EBADREQ, err, err_len,
                        "%s is over %" PRIu32
                        " bytes, has control characters or is not UTF-8",
                        texts[i].field, l->max_name_bytes);
        }
    }
    bool limits = req->flow_parallelism != 0 || req->flow_rate != 0;
    if (req->flow_control_key[0] == '\0') {
        if (limits || req->flow_period_s != 0) {
            return fail(QR_EBADREQ, err, err_len,
                        "flow control limits without a flow control key");
        }
        return 0;
    }
    if (!limits) {
        return fail(QR_EBADREQ, err, err_len,
                    "flow control key '%.64s' needs a parallelism or a rate",
                    req->flow_control_key);
    }
    if (req->flow_period_s > QR_COMMAND_MAX_FLOW_PERIOD_S) {
        return fail(QR_EBADREQ, err, err_len,
                    "flow control period %" PRIu64
                    " s is over the limit of %llu s",
                    req->flow_period_s, QR_COMMAND_MAX_FLOW_PERIOD_S);
    }
    return 0;
}

bool qr_command_is_run_id(const char *s)
{
    return strlen(s) <= QR_COMMAND_MAX_RUN_ID_BYTES &&
           qr_command_is_word(s, "._:-");
}

bool qr_command_is_event_id(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > QR_COMMAND_MAX_EVENT_ID_BYTES ||
        !qr_utf8_valid(s, len)) {
        return false;
    }
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f) {
            return false;
        }
    }
    return true;
}

bool qr_command_is_workflow_step(const char *call_type)
{
    return call_type[0] == '\0' || strcmp(call_type, "step") == 0;
}

bool qr_command_is_workflow_call(const char *call_type)
{
    return strcmp(call_type, "toCallback") == 0;
}

/* The Upstash-Workflow-* part of a publish (docs/workflow.md). */
static int check_workflow(const Qraft__PublishRequest *req,
                          const struct qr_limits *l,
                          char *err,
                          size_t err_len)
{
    const Qraft__WorkflowPublish *wf = req->workflow;
    if (!qr_command_is_run_id(wf->run_id)) {
        return fail(QR_EBADREQ, err, err_len,
                    "invalid Upstash-Workflow-RunId '%.64s': want 1 to %u of "
                    "A-Z a-z 0-9 . _ : -",
                    wf->run_id, QR_COMMAND_MAX_RUN_ID_BYTES);
    }
    if (req->topic_name[0] != '\0') {
        return fail(QR_EBADREQ, err, err_len,
                    "a workflow message goes to a URL, not a URL group");
    }
    if (!qr_command_is_workflow_step(wf->call_type) &&
        !qr_command_is_workflow_call(wf->call_type)) {
        return fail(QR_EBADREQ, err, err_len,
                    "Upstash-Workflow-CallType '%.32s' is not supported "
                    "(step or toCallback)",
                    wf->call_type);
    }
    if (wf->init && !qr_command_is_workflow_step(wf->call_type)) {
        return fail(QR_EBADREQ, err, err_len,
                    "a workflow run starts with a step, not a call");
    }
    if (!wf->init && qr_command_is_workflow_step(wf->call_type)) {
        /* A step's body is the SDK's step JSON: anything else would reach
         * the workflow as a history it cannot read. */
        json_error_t jerr;
        json_t *o = json_loadb((const char *)req->body.data, req->body.len,
                               JSON_REJECT_DUPLICATES, &jerr);
        bool step = json_is_object(o) &&
                    json_is_integer(json_object_get(o, "stepId")) &&
                    json_integer_value(json_object_get(o, "stepId")) >= 0;
        json_decref(o);
        if (!step) {
            return fail(QR_EBADREQ, err, err_len,
                        "a workflow step's body must be a JSON object with a "
                        "stepId (the SDK's step)");
        }
    }
    if (wf->invoke) {
        struct qr_invoke inv;
        if (!wf->init ||
            qr_command_parse_invoke(req->body.data, req->body.len, &inv) != 0) {
            return fail(QR_EBADREQ, err, err_len,
                        "an invoke (Upstash-Workflow-Invoke) is a trigger "
                        "whose body is {\"body\", \"workflowRunId\", "
                        "\"workflowUrl\", \"step\": {...}}");
        }
        int rv = check_url("invoke workflowUrl", inv.url, l, err, err_len);
        qr_command_invoke_free(&inv);
        if (rv != 0) {
            return rv;
        }
    }
    if (wf->url[0] != '\0') {
        return check_url("Upstash-Workflow-Url", wf->url, l, err, err_len);
    }
    return 0;
}

int qr_command_parse_invoke(const uint8_t *body,
                            size_t len,
                            struct qr_invoke *out)
{
    json_error_t jerr;
    memset(out, 0, sizeof *out);
    json_t *o =
        json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *run = json_object_get(o, "workflowRunId");
    json_t *url = json_object_get(o, "workflowUrl");
    json_t *step = json_object_get(o, "step");
    json_t *inner = json_object_get(o, "body");
    int rv = QR_EBADREQ;
    if (json_is_object(o) && json_is_string(run) &&
        qr_command_is_run_id(json_string_value(run)) && json_is_string(url) &&
        json_is_object(step) && (inner == NULL || json_is_string(inner))) {
        out->run_id = strdup(json_string_value(run));
        out->url = strdup(json_string_value(url));
        out->step_json = json_dumps(step, JSON_COMPACT | JSON_PRESERVE_ORDER);
        out->body_len = inner != NULL ? json_string_length(inner) : 0;
        out->body = malloc(out->body_len + 1);
        if (out->body != NULL) {
            memcpy(out->body, inner != NULL ? json_string_value(inner) : "",
                   out->body_len + 1);
        }
        rv = out->run_id != NULL && out->url != NULL &&
                     out->step_json != NULL && out->body != NULL
                 ? 0
                 : -ENOMEM;
        if (rv != 0) {
            qr_command_invoke_free(out);
        }
    }
    json_decref(o);
    return rv;
}

void qr_command_invoke_free(struct qr_invoke *inv)
{
    free(inv->run_id);
    free(inv->url);
    free(inv->step_json);
    free(inv->body);
    memset(inv, 0, sizeof *inv);
}

/* Headers to forward (what names "Upstash-Failure-Callback-" when set):
 * sizes, names, values, and none that qraft sets on delivery. */
static int check_headers(const char *what,
                         Qraft__Header *const *headers,
                         size_t n,
                         const struct qr_limits *l,
                         char *err,
                         size_t err_len)
{
    if (n > l->max_headers) {
        return fail(QR_ETOOLARGE, err, err_len,
                    "%zu %sheaders; the limit is %" PRIu32, n, what,
                    l->max_headers);
    }
    for (size_t i = 0; i < n; i++) {
        const Qraft__Header *h = headers[i];
        size_t size = strlen(h->name) + strlen(h->value);
        if (size > l->max_header_bytes) {
            return fail(QR_ETOOLARGE, err, err_len,
                        "header '%s%.64s' is %zu bytes; the limit is %" PRIu32,
                        what, h->name, size, l->max_header_bytes);
        }
        if (!is_header_name(h->name)) {
            return fail(QR_EBADREQ, err, err_len,
                        "header name '%s%.64s' is not a valid HTTP token", what,
                        h->name);
        }
        const char *name = h->name;
        if (what[0] != '\0' && strncasecmp(name, "Forward-", 8) == 0) {
            name += 8;
        }
        const char *reserved =
            what[0] == '\0' || name != h->name
                ? qr_command_header_reserved(name, strlen(name))
                : NULL;
        if (reserved != NULL) {
            return fail(QR_EBADREQ, err, err_len,
                        "header '%s' is set by qraft on delivery and "
                        "cannot be published",
                        reserved);
        }
        if (!is_header_value(h->value)) {
            return fail(QR_EBADREQ, err, err_len,
                        "header '%s%.64s' has control characters in its value "
                        "or is not UTF-8",
                        what, h->name);
        }
    }
    return 0;
}

/* A callback's own settings (Upstash-Callback-* or
 * Upstash-Failure-Callback-*, `what`): the headers, and the values apply
 * reads from them. A callback's may name its own failure callback
 * (Failure-Callback, Failure-Callback-*). */
static int check_template(const char *what,
                          Qraft__Header *const *headers,
                          size_t n,
                          bool nested,
                          const struct qr_limits *l,
                          char *err,
                          size_t err_len)
{
    int rv = check_headers(what, headers, n, l, err, err_len);
    for (size_t i = 0; rv == 0 && i < n; i++) {
        const Qraft__Header *h = headers[i];
        Qraft__Header inner = *h;
        struct qr_callback_settings cs = {0};
        if (nested && strcasecmp(h->name, "Failure-Callback") == 0) {
            rv = check_url("Upstash-Callback-Failure-Callback", h->value, l,
                           err, err_len);
            continue;
        }
        if (nested && strncasecmp(h->name, "Failure-Callback-", 17) == 0) {
            inner.name = h->name + 17;
        }
        if (!qr_command_callback_setting(&inner, l, &cs)) {
            rv = fail(QR_EBADREQ, err, err_len, "invalid %s%s '%.64s'", what,
                      h->name, h->value);
        }
    }
    return rv;
}

static int check_failure_headers(const Qraft__PublishRequest *req,
                                 const struct qr_limits *l,
                                 char *err,
                                 size_t err_len)
{
    int rv = check_template(
        "Upstash-Failure-Callback-", req->failure_callback_headers,
        req->n_failure_callback_headers, false, l, err, err_len);
    if (rv == 0) {
        rv = check_template("Upstash-Callback-", req->callback_headers,
                            req->n_callback_headers, true, l, err, err_len);
    }
    return rv;
}

bool qr_command_callback_setting(const Qraft__Header *h,
                                 const struct qr_limits *l,
                                 struct qr_callback_settings *cs)
{
    /* Apply's bounds: the limits no node configures. */
    static const struct qr_limits ceilings = {
        .max_retries = 100,
        .max_timeout_ms = 6 * 3600 * 1000ull,
        .max_expr_bytes = 256,
    };
    uint64_t v;
    if (l == NULL) {
        l = &ceilings;
    }
    size_t len = strlen(h->value);
    if (strcasecmp(h->name, "Retries") == 0) {
        if (qr_command_parse_uint(h->value, len, l->max_retries, &v) != 0) {
            return false;
        }
        cs->retries = (uint32_t)v;
        cs->retries_set = true;
    } else if (strcasecmp(h->name, "Timeout") == 0) {
        if (qr_command_parse_duration(h->value, len, &v) != 0 || v == 0 ||
            v > l->max_timeout_ms) {
            return false;
        }
        cs->timeout_ms = v;
    } else if (strcasecmp(h->name, "Retry-Delay") == 0) {
        char why[QR_ERRMSG_BYTES];
        if (qr_expr_check(h->value, l->max_expr_bytes, why) != 0) {
            return false;
        }
        cs->retry_delay = h->value;
    } else if (strcasecmp(h->name, "Method") == 0) {
        bool known = false;
        for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
            known = known || strcasecmp(h->value, methods[i]) == 0;
        }
        if (!known) {
            return false;
        }
        cs->method = h->value;
    }
    return true;
}

int qr_command_check_wait(const Qraft__Waiter *w,
                          uint64_t timeout_ms,
                          const struct qr_limits *l,
                          char *err,
                          size_t err_len)
{
    int rv = check_url("url", w->url, l, err, err_len);
    if (rv == 0 && w->timeout_url[0] != '\0') {
        rv = check_url("timeoutUrl", w->timeout_url, l, err, err_len);
    }
    if (rv == 0) {
        rv = check_headers("timeoutHeaders ", w->timeout_headers,
                           w->n_timeout_headers, l, err, err_len);
    }
    if (rv != 0) {
        return rv;
    }
    if (timeout_ms == 0 || timeout_ms > l->max_delay_ms) {
        return fail(QR_EBADREQ, err, err_len,
                    "timeout must be from 1 s to %" PRIu64 " days",
                    l->max_delay_ms / (uint64_t)(24 * 3600 * 1000));
    }
    if (w->step.len > l->max_body_bytes) {
        return fail(QR_ETOOLARGE, err, err_len,
                    "step is %zu bytes; the limit is %" PRIu64, w->step.len,
                    l->max_body_bytes);
    }
    return 0;
}

int qr_command_check_redact(const Qraft__Redact *r, char *err, size_t err_len)
{
    if (r == NULL) {
        return 0;
    }
    if (!r->body && !r->all_headers && r->n_headers == 0) {
        return fail(QR_EBADREQ, err, err_len,
                    "Upstash-Redact-Fields names nothing to redact");
    }
    if (r->n_headers > QR_CHECK_REDACT_MAX_HEADERS) {
        return fail(QR_EBADREQ, err, err_len,
                    "Upstash-Redact-Fields names %zu headers; the limit is %u",
                    r->n_headers, QR_CHECK_REDACT_MAX_HEADERS);
    }
    for (size_t i = 0; i < r->n_headers; i++) {
        const char *name = r->headers[i];
        if (strlen(name) > QR_CHECK_REDACT_MAX_NAME_BYTES ||
            !qr_command_is_word(name, "!#$%&'*+-.^_`|~")) {
            return fail(QR_EBADREQ, err, err_len,
                        "Upstash-Redact-Fields: header[%.64s] is not a header "
                        "name (at most %u bytes)",
                        name, QR_CHECK_REDACT_MAX_NAME_BYTES);
        }
    }
    return 0;
}

int qr_command_check_publish(const Qraft__PublishRequest *req,
                             const struct qr_limits *l,
                             uint64_t now_ms,
                             char *err,
                             size_t err_len)
{
    int rv;
    if (req->url[0] == '\0' && req->topic_name[0] == '\0') {
        return fail(QR_EBADREQ, err, err_len, "url is missing");
    }
    if (req->schedule_id[0] != '\0') {
        return fail(QR_EBADREQ, err, err_len,
                    "schedule id is set by qraft on a schedule's messages "
                    "and cannot be published");
    }
    if (req->url[0] != '\0') {
        rv = check_url("url", req->url, l, err, err_len);
        if (rv != 0) {
            return rv;
        }
    }
    if (req->topic_name[0] != '\0' &&
        (strlen(req->topic_name) > l->max_name_bytes ||
         !qr_command_is_name(req->topic_name))) {
        return fail(QR_EBADREQ, err, err_len,
                    "url group name '%.64s' must match [A-Za-z0-9._-]+ (at "
                    "most %" PRIu32 " bytes)",
                    req->topic_name, l->max_name_bytes);
    }
    rv = check_metadata(req, l, err, err_len);
    if (rv == 0) {
        rv = qr_command_check_redact(req->redact, err, err_len);
    }
    if (rv == 0 && req->redact != NULL && req->workflow != NULL) {
        /* A run's history (its steps' bodies in the workflow logs) would
         * still show them: refused rather than half hidden. */
        return fail(QR_EBADREQ, err, err_len,
                    "Upstash-Redact-Fields is not supported on workflow runs "
                    "yet");
    }
    if (rv == 0 && req->workflow != NULL) {
        rv = check_workflow(req, l, err, err_len);
    }
    if (rv != 0) {
        return rv;
    }
    if (req->method[0] != '\0') {
        bool known = false;
        for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
            known = known || strcmp(req->method, methods[i]) == 0;
        }
        if (!known) {
            return fail(QR_EBADREQ, err, err_len,
                        "method '%.16s' is not one of GET, POST, PUT, PATCH, "
                        "DELETE",
                        req->method);
        }
    }
    if (req->body.len > l->max_body_bytes) {
        return fail(QR_ETOOLARGE, err, err_len,
                    "body is %zu bytes; the limit is %" PRIu64, req->body.len,
                    l->max_body_bytes);
    }
    rv = check_headers("", req->headers, req->n_headers, l, err, err_len);
    if (rv == 0) {
        rv = check_failure_headers(req, l, err, err_len);
    }
    if (rv != 0) {
        return rv;
    }
    if (req->retries_set && req->retries > l->max_retries) {
        return fail(QR_EBADREQ, err, err_len,
                    "retries %" PRIu32 " is out of range 0..%" PRIu32,
                    req->retries, l->max_retries);
    }
    if (req->delay_ms > l->max_delay_ms) {
        return fail(QR_EBADREQ, err, err_len,
                    "delay %" PRIu64 " ms is over the limit of %" PRIu64 " ms",
                    req->delay_ms, l->max_delay_ms);
    }
    if (req->not_before_ms > now_ms &&
        req->not_before_ms - now_ms > l->max_delay_ms) {
        return fail(QR_EBADREQ, err, err_len,
                    "not-before is more than %" PRIu64 " ms in the future",
                    l->max_delay_ms);
    }
    if (req->timeout_ms > l->max_timeout_ms) {
        return fail(QR_EBADREQ, err, err_len,
                    "timeout %" PRIu64 " ms is over the limit of %" PRIu64
                    " ms",
                    req->timeout_ms, l->max_timeout_ms);
    }
    if (strlen(req->retry_delay) > l->max_expr_bytes) {
        return fail(QR_ETOOLARGE, err, err_len,
                    "retry delay expression is over %" PRIu32 " bytes",
                    l->max_expr_bytes);
    }
    if (req->retry_delay[0] != '\0') {
        char why[QR_ERRMSG_BYTES];
        if (qr_expr_check(req->retry_delay, l->max_expr_bytes, why) != 0) {
            return fail(QR_EBADREQ, err, err_len,
                        "retry delay expression '%.64s': %s", req->retry_delay,
                        why);
        }
    }
    const Qraft__RetryOptions *o = req->retry_options;
    if (o != NULL) {
        const struct {
            const char *field;
            uint64_t value;
        } spans[] = {
            {"min backoff", o->min_backoff_ms},
            {"max backoff", o->max_backoff_ms},
            {"max retry duration", o->max_retry_duration_ms},
        };
        for (size_t i = 0; i < sizeof spans / sizeof spans[0]; i++) {
            if (spans[i].value > l->max_delay_ms) {
                return fail(QR_EBADREQ, err, err_len,
                            "%s %" PRIu64 " ms is over the limit of %" PRIu64
                            " ms",
                            spans[i].field, spans[i].value, l->max_delay_ms);
            }
        }
        if (o->max_backoff_ms != 0 && o->min_backoff_ms > o->max_backoff_ms) {
            return fail(QR_EBADREQ, err, err_len,
                        "min backoff %" PRIu64
                        " ms is above max backoff "
                        "%" PRIu64 " ms",
                        o->min_backoff_ms, o->max_backoff_ms);
        }
        if (o->max_doublings > MAX_DOUBLINGS) {
            return fail(QR_EBADREQ, err, err_len,
                        "max doublings %" PRIu32 " is out of range 0..%u",
                        o->max_doublings, MAX_DOUBLINGS);
        }
    }
    const struct named_text names[] = {
        {"dedup id", req->dedup_id},
        {"idempotency key", req->idempotency_key},
        {"queue", req->queue},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        size_t len = strlen(names[i].value);
        if (len > l->max_name_bytes) {
            return fail(QR_ETOOLARGE, err, err_len,
                        "%s is over %" PRIu32 " bytes", names[i].field,
                        l->max_name_bytes);
        }
        if (!qr_utf8_valid(names[i].value, len)) {
            return fail(QR_EBADREQ, err, err_len, "%s is not valid UTF-8",
                        names[i].field);
        }
    }
    if (req->queue[0] != '\0' && !qr_command_is_name(req->queue)) {
        return fail(QR_EBADREQ, err, err_len,
                    "queue name '%.64s' must match [A-Za-z0-9._-]+",
                    req->queue);
    }
    if (req->callback[0] != '\0') {
        rv = check_url("callback", req->callback, l, err, err_len);
        if (rv != 0) {
            return rv;
        }
    }
    if (req->failure_callback[0] != '\0') {
        rv = check_url("failure callback", req->failure_callback, l, err,
                       err_len);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

int qr_command_check_group_change(const Qraft__GroupChangeRequest *req,
                                  const struct qr_limits *l,
                                  char *err,
                                  size_t err_len)
{
    if (strlen(req->name) > l->max_name_bytes ||
        !qr_command_is_name(req->name)) {
        return fail(QR_EBADREQ, err, err_len,
                    "url group name '%.64s' must match [A-Za-z0-9._-]+ (at "
                    "most %" PRIu32 " bytes)",
                    req->name, l->max_name_bytes);
    }
    bool add = req->kind == QRAFT__GROUP_CHANGE_KIND__GROUP_ADD_ENDPOINTS;
    switch (req->kind) {
        case QRAFT__GROUP_CHANGE_KIND__GROUP_DELETE:
            return 0;
        case QRAFT__GROUP_CHANGE_KIND__GROUP_ADD_ENDPOINTS:
        case QRAFT__GROUP_CHANGE_KIND__GROUP_REMOVE_ENDPOINTS:
            break;
        default:
            return fail(QR_EBADREQ, err, err_len, "unknown url group change %d",
                        (int)req->kind);
    }
    if (req->n_endpoints == 0) {
        return fail(QR_EBADREQ, err, err_len, "endpoints are missing");
    }
    if (req->n_endpoints > l->max_group_endpoints) {
        return fail(QR_ETOOLARGE, err, err_len,
                    "%zu endpoints; a url group has at most %" PRIu32,
                    req->n_endpoints, l->max_group_endpoints);
    }
    for (size_t i = 0; i < req->n_endpoints; i++) {
        const Qraft__UrlGroupEndpoint *e = req->endpoints[i];
        if (e->name[0] != '\0' && (strlen(e->name) > l->max_name_bytes ||
                                   !qr_command_is_name(e->name))) {
            return fail(QR_EBADREQ, err, err_len,
                        "endpoint name '%.64s' must match [A-Za-z0-9._-]+ "
                        "(at most %" PRIu32 " bytes)",
                        e->name, l->max_name_bytes);
        }
        if (add || e->url[0] != '\0') {
            char field[32];
            snprintf(field, sizeof field, "endpoint %zu url", i + 1);
            if (e->url[0] == '\0') {
                return fail(QR_EBADREQ, err, err_len, "%s is missing", field);
            }
            int rv = check_url(field, e->url, l, err, err_len);
            if (rv != 0) {
                return rv;
            }
        } else if (e->name[0] == '\0') {
            return fail(QR_EBADREQ, err, err_len,
                        "endpoint %zu to remove has neither a name nor a url",
                        i + 1);
        }
    }
    return 0;
}

int qr_command_check_schedule(const Qraft__ScheduleUpsertRequest *req,
                              const struct qr_limits *l,
                              uint64_t now_ms,
                              struct qr_cron *cron,
                              uint64_t *first_slot_ms,
                              char *err,
                              size_t err_len)
{
    const char *id = req->schedule_id;
    if (strlen(id) > l->max_name_bytes) {
        return fail(QR_EBADREQ, err, err_len,
                    "schedule id is over %" PRIu32 " bytes", l->max_name_bytes);
    }
    if (id[0] != '\0' && !qr_command_is_name(id)) {
        return fail(QR_EBADREQ, err, err_len,
                    "schedule id '%.64s' must match [A-Za-z0-9._-]+", id);
    }
    if (strlen(req->cron) > QR_COMMAND_MAX_CRON_BYTES) {
        return fail(QR_EBADREQ, err, err_len,
                    "cron expression is over %d bytes",
                    QR_COMMAND_MAX_CRON_BYTES);
    }
    char why[QR_ERRMSG_BYTES];
    if (qr_cron_parse(req->cron, cron, why, sizeof why) != 0) {
        return fail(QR_EBADREQ, err, err_len, "invalid cron '%.100s': %s",
                    req->cron, why);
    }
    if (qr_cron_next(cron, now_ms, first_slot_ms) != 0) {
        return fail(QR_EBADREQ, err, err_len,
                    "invalid cron '%.100s': it never fires (its days never "
                    "occur)",
                    req->cron);
    }
    if (req->request == NULL) {
        return fail(QR_EBADREQ, err, err_len, "schedule without a request");
    }
    if (req->request->not_before_ms != 0) {
        return fail(QR_EBADREQ, err, err_len,
                    "not-before does not apply to a schedule's messages "
                    "(use a delay)");
    }
    if (strlen(req->caller_ip) > l->max_name_bytes) {
        return fail(QR_EBADREQ, err, err_len, "caller ip is too long");
    }
    return qr_command_check_publish(req->request, l, now_ms, err, err_len);
}

int qr_command_check_queue(const char *name,
                           uint32_t parallelism,
                           const struct qr_limits *limits,
                           char *err,
                           size_t err_len)
{
    if (strlen(name) > limits->max_name_bytes) {
        return fail(QR_ETOOLARGE, err, err_len,
                    "queue name is over %" PRIu32 " bytes",
                    limits->max_name_bytes);
    }
    if (!qr_command_is_name(name)) {
        return fail(QR_EBADREQ, err, err_len,
                    "queue name '%.64s' must match [A-Za-z0-9._-]+", name);
    }
    if (parallelism > limits->max_queue_parallelism) {
        return fail(QR_ECONFLICT, err, err_len,
                    "parallelism %" PRIu32 " is above the limit %" PRIu32,
                    parallelism, limits->max_queue_parallelism);
    }
    return 0;
}

int qr_command_check_flow_key(const char *key, char *err, size_t err_len)
{
    if (key[0] == '\0' || strlen(key) > QR_COMMAND_MAX_FLOW_KEY_BYTES ||
        !is_header_value(key)) {
        return fail(QR_EBADREQ, err, err_len,
                    "flow control key is empty, over %u bytes, has control "
                    "characters or is not UTF-8",
                    QR_COMMAND_MAX_FLOW_KEY_BYTES);
    }
    return 0;
}

int qr_command_check_flow_update(const Qraft__FlowControlUpdate *u,
                                 char *err,
                                 size_t err_len)
{
    int rv = qr_command_check_flow_key(u->key, err, err_len);
    if (rv != 0) {
        return rv;
    }
    switch (u->action) {
        case QRAFT__FLOW_CONTROL_ACTION__FLOW_CONTROL_PAUSE:
        case QRAFT__FLOW_CONTROL_ACTION__FLOW_CONTROL_RESUME:
        case QRAFT__FLOW_CONTROL_ACTION__FLOW_CONTROL_RESET_RATE:
            return 0;
        case QRAFT__FLOW_CONTROL_ACTION__FLOW_CONTROL_PIN:
            if (u->parallelism == 0 && u->rate == 0) {
                return fail(QR_EBADREQ, err, err_len,
                            "pin needs a parallelism or a rate of at least 1");
            }
            if (u->period_s > QR_COMMAND_MAX_FLOW_PERIOD_S ||
                (u->period_s != 0 && u->rate == 0)) {
                return fail(QR_EBADREQ, err, err_len,
                            "pin's period goes with a rate and is 1 s .. "
                            "%llu s",
                            QR_COMMAND_MAX_FLOW_PERIOD_S);
            }
            return 0;
        case QRAFT__FLOW_CONTROL_ACTION__FLOW_CONTROL_UNPIN:
            if (!u->unpin_parallelism && !u->unpin_rate) {
                return fail(QR_EBADREQ, err, err_len,
                            "unpin needs parallelism=true and/or rate=true");
            }
            return 0;
        default:
            return fail(QR_EBADREQ, err, err_len,
                        "unknown flow control action %d", (int)u->action);
    }
}

/* Parses an unsigned decimal (digits only) no larger than max. */
int qr_command_parse_uint(const char *s,
                          size_t len,
                          uint64_t max,
                          uint64_t *out)
{
    uint64_t v = 0;

    if (len == 0 || len > 20) {
        return -EINVAL;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -EINVAL;
        }
        if (v > (max - (uint64_t)(s[i] - '0')) / 10) {
            return -ERANGE;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

/* A QStash duration: `<number><unit>` repeated, units s m h d, decimals
 * allowed ("1d10h30m", "1.5s"). */
int qr_command_parse_duration(const char *s, size_t len, uint64_t *out_ms)
{
    double total_ms = 0;
    size_t i = 0;

    if (len == 0) {
        return -EINVAL;
    }
    while (i < len) {
        double v = 0;
        double scale = 0;
        size_t digits = 0;
        double unit_ms;

        for (; i < len && s[i] >= '0' && s[i] <= '9'; i++, digits++) {
            v = v * 10 + (s[i] - '0');
        }
        if (i < len && s[i] == '.') {
            i++;
            scale = 0.1;
            for (; i < len && s[i] >= '0' && s[i] <= '9'; i++, digits++) {
                v += (s[i] - '0') * scale;
                scale /= 10;
            }
        }
        if (digits == 0 || i >= len) {
            return -EINVAL;
        }
        switch (s[i++]) {
            case 's':
                unit_ms = 1e3;
                break;
            case 'm':
                unit_ms = 60e3;
                break;
            case 'h':
                unit_ms = 3600e3;
                break;
            case 'd':
                unit_ms = 86400e3;
                break;
            default:
                return -EINVAL;
        }
        total_ms += v * unit_ms;
        if (total_ms > (double)QR_COMMAND_MAX_DURATION_MS) {
            return -ERANGE;
        }
    }
    *out_ms = (uint64_t)llround(total_ms);
    return 0;
}

int qr_command_parse_flow_control(const char *s,
                                  size_t len,
                                  uint32_t *parallelism,
                                  uint32_t *rate,
                                  uint64_t *period_s,
                                  char *err,
                                  size_t err_len)
{
    static const char *const keys[] = {"parallelism", "rate", "period"};
    bool seen[3] = {false, false, false};
    uint64_t values[3] = {0, 0, 1};
    size_t i = 0;

    while (i <= len) {
        const char *start = s + i;
        const char *comma = memchr(start, ',', len - i);
        size_t n = comma != NULL ? (size_t)(comma - start) : len - i;
        i += n + 1;
        while (n > 0 && (*start == ' ' || *start == '\t')) {
            start++;
            n--;
        }
        while (n > 0 && (start[n - 1] == ' ' || start[n - 1] == '\t')) {
            n--;
        }
        const char *eq = memchr(start, '=', n);
        if (eq == NULL) {
            return fail(-EINVAL, err, err_len,
                        "flow control value: '%.*s' is not name=value",
                        (int)(n > 64 ? 64 : n), start);
        }
        size_t klen = (size_t)(eq - start);
        const char *v = eq + 1;
        size_t vlen = n - klen - 1;
        size_t k = 0;
        while (k < 3 && !(strlen(keys[k]) == klen &&
                          strncasecmp(start, keys[k], klen) == 0)) {
            k++;
        }
        if (k == 3 || seen[k]) {
            return fail(-EINVAL, err, err_len,
                        "flow control value: %s '%.*s' (want parallelism, "
                        "rate and period, each at most once)",
                        k == 3 ? "unknown name" : "repeated",
                        (int)(klen > 64 ? 64 : klen), start);
        }
        seen[k] = true;
        int rv;
        if (k == 2) {
            uint64_t ms = 0;
            rv = qr_command_parse_uint(v, vlen, QR_COMMAND_MAX_FLOW_PERIOD_S,
                                       &values[2]);
            if (rv != 0) {
                rv = qr_command_parse_duration(v, vlen, &ms);
                values[2] = ms / 1000;
                if (rv == 0 && ms % 1000 != 0) {
                    rv = -EINVAL;
                }
            }
            if (rv == 0 &&
                (values[2] == 0 || values[2] > QR_COMMAND_MAX_FLOW_PERIOD_S)) {
                rv = -ERANGE;
            }
        } else {
            rv = qr_command_parse_uint(v, vlen, UINT32_MAX, &values[k]);
            if (rv == 0 && values[k] == 0) {
                rv = -ERANGE;
            }
        }
        if (rv != 0) {
            return fail(-EINVAL, err, err_len,
                        "flow control %s '%.*s': want %s", keys[k],
                        (int)(vlen > 64 ? 64 : vlen), v,
                        k == 2 ? "whole seconds from 1s to 7d (e.g. 10s, 1m)"
                               : "an integer >= 1");
        }
    }
    if (!seen[0] && !seen[1]) {
        return fail(-EINVAL, err, err_len,
                    "flow control value needs parallelism or rate");
    }
    *parallelism = (uint32_t)values[0];
    *rate = (uint32_t)values[1];
    *period_s = values[2];
    return 0;
}

_Static_assert(QR_CHECK_MAX_MESSAGE_ID_BYTES == 92,
               "QR_CHECK_MESSAGE_ID_RULE names the bound");

bool qr_check_message_id(const char *id)
{
    if (id == NULL || id[0] == '\0') {
        return false;
    }
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++, n++) {
        if (n == QR_CHECK_MAX_MESSAGE_ID_BYTES || *p <= 0x20 || *p >= 0x7f) {
            return false;
        }
    }
    return true;
}

int qr_check_delivery_results(Qraft__DeliveryResult *const *results,
                              size_t n,
                              char *err,
                              size_t err_len)
{
    for (size_t i = 0; i < n; i++) {
        const Qraft__DeliveryResult *r = results[i];
        if (r == NULL || !qr_check_message_id(r->message_id)) {
            snprintf(err, err_len, "result %zu: invalid message id: %s", i,
                     QR_CHECK_MESSAGE_ID_RULE);
            return QR_EBADREQ;
        }
        if (r->outcome != QRAFT__ATTEMPT_OUTCOME__OUTCOME_DELIVERED &&
            r->outcome != QRAFT__ATTEMPT_OUTCOME__OUTCOME_RETRY &&
            r->outcome != QRAFT__ATTEMPT_OUTCOME__OUTCOME_DEAD) {
            snprintf(err, err_len, "result %zu (%s): unknown outcome %d", i,
                     r->message_id, (int)r->outcome);
            return QR_EBADREQ;
        }
    }
    return 0;
}
