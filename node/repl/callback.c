#include "repl/callback.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/base64.h"
#include "lib/json_text.h"
#include "lib/utf8.h"
#include "repl/check.h"
#include "repl/redact.h"

void qr_callback_canonical_name(const char *name, char *out, size_t out_len)
{
    size_t i = 0;
    bool upper = true;
    if (out_len == 0) {
        return;
    }
    for (; name[i] != '\0' && i + 1 < out_len; i++) {
        char ch = name[i];
        if (upper && ch >= 'a' && ch <= 'z') {
            ch = (char)(ch - 'a' + 'A');
        } else if (!upper && ch >= 'A' && ch <= 'Z') {
            ch = (char)(ch - 'A' + 'a');
        }
        out[i] = ch;
        upper = ch == '-';
    }
    out[i] = '\0';
}

uint32_t qr_callback_seq(const char *source_id,
                         Qraft__CallbackKind kind,
                         uint32_t attempt)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)source_id; *p; p++) {
        h = (h ^ *p) * 16777619u;
    }
    h = (h ^ (uint32_t)kind) * 16777619u;
    for (int i = 0; i < 4; i++) {
        h = (h ^ ((attempt >> (8 * i)) & 0xffu)) * 16777619u;
    }
    return h;
}

/* {"Canonical-Name": ["value", ...]}, values grouped by canonical name in
 * the order the names first appear. Names and values that are not UTF-8
 * (a destination may answer any bytes) show U+FFFD: a callback is built in
 * apply, where failing on data would stop every replica. */
static json_t *header_map(Qraft__Header *const *headers,
                          size_t n,
                          const Qraft__Redact *redact)
{
    json_t *map = json_object();
    if (map == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        char raw[256];
        char name[QR_UTF8_LOSSY_BYTES(sizeof raw)];
        qr_callback_canonical_name(headers[i]->name, raw, sizeof raw);
        qr_utf8_lossy(raw, strlen(raw), name);
        json_t *values = json_object_get(map, name);
        if (values == NULL) {
            values = json_array();
            if (values == NULL || json_object_set_new(map, name, values)) {
                json_decref(map);
                return NULL;
            }
        }
        const char *value = headers[i]->value;
        char placeholder[QR_REDACT_PLACEHOLDER_BYTES];
        if (qr_redact_header(redact, headers[i]->name)) {
            if (qr_redact_placeholder(value, strlen(value), placeholder) != 0) {
                json_decref(map);
                return NULL;
            }
            value = placeholder;
        }
        if (json_array_append_new(values, qr_json_text(value))) {
            json_decref(map);
            return NULL;
        }
    }
    return map;
}

static json_t *base64_string(const uint8_t *data, size_t len)
{
    char *b64 = NULL;
    if (qr_base64(data, len, &b64) != 0) {
        return NULL;
    }
    json_t *s = json_string(b64);
    free(b64);
    return s;
}

static char *build_body(const Qraft__Message *src,
                        const Qraft__DeliveryResult *r,
                        Qraft__CallbackKind kind,
                        const struct qr_callback_run *run)
{
    const Qraft__AttemptResponse *resp = r->response;
    static Qraft__AttemptResponse none = QRAFT__ATTEMPT_RESPONSE__INIT;
    if (resp == NULL) {
        resp = &none;
    }
    json_t *o = json_object();
    if (o == NULL) {
        return NULL;
    }
    /* Insertion order is the output order (JSON_PRESERVE_ORDER): the same on
     * every replica. */
    int bad = 0;
    bad |= json_object_set_new(o, "status", json_integer(resp->status));
    bad |= json_object_set_new(
        o, "header", header_map(resp->headers, resp->n_headers, NULL));
    bad |= json_object_set_new(o, "body",
                               base64_string(resp->body.data, resp->body.len));
    /* A context.call's last attempt says retried == maxRetries, however
     * early it failed for good: the workflow SDK waits for that one. */
    uint32_t retried = r->attempt;
    if (src->state == QRAFT__MESSAGE_STATE__DEAD_LETTERED &&
        strcmp(src->workflow_call_type, "toCallback") == 0) {
        retried = src->max_retries;
    }
    bad |= json_object_set_new(o, "retried", json_integer(retried));
    bad |= json_object_set_new(o, "maxRetries", json_integer(src->max_retries));
    if (kind == QRAFT__CALLBACK_KIND__FAILURE_CALLBACK) {
        bad |= json_object_set_new(o, "dlqId", qr_json_text(src->id));
    }
    bad |= json_object_set_new(o, "sourceMessageId", qr_json_text(src->id));
    bad |= json_object_set_new(o, "url", qr_json_text(src->url));
    bad |= json_object_set_new(o, "method", qr_json_text(src->method));
    /* The source's redacted parts show as placeholders (repl/redact.h). */
    bad |= json_object_set_new(
        o, "sourceHeader",
        header_map(src->headers, src->n_headers, src->redact));
    ProtobufCBinaryData source = run != NULL ? run->initial_body : src->body;
    char placeholder[QR_REDACT_PLACEHOLDER_BYTES];
    if (src->redact != NULL && src->redact->body && source.len > 0) {
        if (qr_redact_placeholder(source.data, source.len, placeholder) != 0) {
            json_decref(o);
            return NULL;
        }
        source.data = (uint8_t *)placeholder;
        source.len = strlen(placeholder);
    }
    bad |= json_object_set_new(o, "sourceBody",
                               base64_string(source.data, source.len));
    bad |= json_object_set_new(o, "notBefore",
                               json_integer((json_int_t)src->not_before_ms));
    bad |= json_object_set_new(o, "createdAt",
                               json_integer((json_int_t)src->created_ms));
    if (src->schedule_id[0] != '\0') {
        bad |= json_object_set_new(o, "scheduleId",
                                   qr_json_text(src->schedule_id));
    }
    if (src->topic_name[0] != '\0') {
        bad |=
            json_object_set_new(o, "topicName", qr_json_text(src->topic_name));
    }
    if (src->endpoint_name[0] != '\0') {
        bad |= json_object_set_new(o, "endpointName",
                                   qr_json_text(src->endpoint_name));
    }
    if (src->caller_ip[0] != '\0') {
        bad |= json_object_set_new(o, "callerIP", qr_json_text(src->caller_ip));
    }
    if (run != NULL) {
        bad |=
            json_object_set_new(o, "workflowRunId", qr_json_text(run->run_id));
        bad |= json_object_set_new(o, "workflowCreatedAt",
                                   json_integer((json_int_t)run->created_ms));
    }
    char *text = bad ? NULL : json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return text;
}

/* A callback's settings (src's Upstash-Callback-* or
 * Upstash-Failure-Callback-* headers, by kind) onto cb->m, and its
 * forwarded headers after Content-Type (cb->headers[0]). A callback's may
 * also give it a failure callback of its own (Failure-Callback and
 * Failure-Callback-*). */
static int apply_template(struct qr_callback *cb,
                          const Qraft__Message *src,
                          Qraft__CallbackKind kind)
{
    bool failure = kind == QRAFT__CALLBACK_KIND__FAILURE_CALLBACK;
    Qraft__Header **t =
        failure ? src->failure_callback_headers : src->callback_headers;
    size_t n =
        failure ? src->n_failure_callback_headers : src->n_callback_headers;
    cb->header_store = calloc(n > 0 ? n : 1, sizeof *cb->header_store);
    cb->names = calloc(n > 0 ? n : 1, sizeof *cb->names);
    cb->failure_headers = calloc(n > 0 ? n : 1, sizeof *cb->failure_headers);
    Qraft__Header **grown = realloc(cb->headers, (n + 1) * sizeof *grown);
    if (grown != NULL) {
        cb->headers = grown;
    }
    if (cb->header_store == NULL || cb->names == NULL ||
        cb->failure_headers == NULL || grown == NULL) {
        return -ENOMEM;
    }
    struct qr_callback_settings cs = {0};
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        const Qraft__Header *h = t[i];
        const char *fwd = NULL;
        const char *prefix = "";
        if (!failure && strcasecmp(h->name, "Failure-Callback") == 0) {
            cb->m.failure_callback = h->value;
            continue;
        }
        if (!failure && strncasecmp(h->name, "Failure-Callback-", 17) == 0) {
            /* Its failure callback's template, the prefix dropped. */
            Qraft__Header *out = &cb->header_store[used++];
            qraft__header__init(out);
            out->name = h->name + 17;
            out->value = h->value;
            cb->failure_headers[cb->m.n_failure_callback_headers++] = out;
            continue;
        }
        if (strncasecmp(h->name, "Forward-", 8) == 0 && h->name[8] != '\0') {
            fwd = h->name + 8;
        } else if (strncasecmp(h->name, "Workflow-", 9) == 0 &&
                   h->name[9] != '\0') {
            fwd = h->name + 9;
            prefix = "Upstash-Workflow-";
        }
        if (fwd == NULL) {
            /* A value no longer valid (the bounds are fixed, so only a
             * record from a buggy leader) is ignored, alike everywhere. */
            (void)qr_command_callback_setting(h, NULL, &cs);
            continue;
        }
        size_t len = strlen(prefix) + strlen(fwd) + 1;
        char *name = malloc(len);
        if (name == NULL) {
            return -ENOMEM;
        }
        snprintf(name, len, "%s%s", prefix, fwd);
        cb->names[cb->n_names++] = name;
        Qraft__Header *out = &cb->header_store[used++];
        qraft__header__init(out);
        out->name = name;
        out->value = h->value;
        cb->headers[cb->m.n_headers++] = out;
    }
    cb->m.headers = cb->headers;
    cb->m.failure_callback_headers = cb->failure_headers;
    if (cs.retries_set) {
        cb->m.max_retries = cs.retries;
    }
    if (cs.timeout_ms != 0) {
        cb->m.timeout_ms = cs.timeout_ms;
    }
    if (cs.retry_delay != NULL) {
        cb->m.retry_delay = (char *)cs.retry_delay;
    }
    if (cs.method != NULL) {
        cb->m.method = (char *)cs.method;
    }
    return 0;
}

int qr_callback_build(struct qr_callback *cb,
                      const struct qr_callback_source *from)
{
    const Qraft__Message *src = from->src;
    const Qraft__DeliveryResult *r = from->r;
    Qraft__CallbackKind kind = from->kind;
    uint64_t now_ms = from->now_ms;
    const struct qr_callback_run *run = from->run;
    memset(cb, 0, sizeof *cb);
    cb->body_json = build_body(src, r, kind, run);
    cb->headers = malloc(sizeof *cb->headers);
    if (cb->body_json == NULL || cb->headers == NULL) {
        qr_callback_free(cb);
        return -ENOMEM;
    }
    qraft__header__init(&cb->content_type);
    cb->content_type.name = "Content-Type";
    cb->content_type.value = "application/json";
    cb->headers[0] = &cb->content_type;

    Qraft__Message *m = &cb->m;
    qraft__message__init(m);
    m->url = kind == QRAFT__CALLBACK_KIND__FAILURE_CALLBACK
                 ? src->failure_callback
                 : src->callback;
    m->method = "POST";
    m->n_headers = 1;
    m->headers = cb->headers;
    m->body.data = (uint8_t *)cb->body_json;
    m->body.len = strlen(cb->body_json);
    m->state = QRAFT__MESSAGE_STATE__PENDING;
    /* As QStash does: a callback retries like its source. */
    m->max_retries = src->max_retries;
    m->retry_options = src->retry_options;
    m->timeout_ms = from->default_timeout_ms;
    m->not_before_ms = now_ms;
    m->next_attempt_ms = now_ms;
    m->created_ms = now_ms;
    m->updated_ms = now_ms;
    m->source_message_id = src->id;
    m->callback_kind = kind;
    if (apply_template(cb, src, kind) != 0) {
        qr_callback_free(cb);
        return -ENOMEM;
    }
    return 0;
}

void qr_callback_free(struct qr_callback *cb)
{
    free(cb->body_json);
    for (size_t i = 0; i < cb->n_names; i++) {
        free(cb->names[i]);
    }
    free(cb->names);
    free(cb->header_store);
    free(cb->failure_headers);
    free(cb->headers);
    cb->body_json = NULL;
    cb->names = NULL;
    cb->n_names = 0;
    cb->header_store = NULL;
    cb->failure_headers = NULL;
    cb->headers = NULL;
}
