/* Spans and their OTLP/HTTP JSON export (trace.h). A span is made into
 * its JSON object when it ends and waits in a ring of QR_TRACE_MAX_SPANS;
 * a batch takes up to QR_TRACE_BATCH_SPANS of them off the ring, wraps them
 * in resourceSpans → scopeSpans → spans and posts it through a delivery
 * engine of its own (one transfer at a time). */
#include "deliver/trace.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lib/clock.h"
#include "lib/err.h"
#include "lib/logger.h"

/* OTLP's SpanKind and StatusCode values. */
#define KIND_SERVER 2
#define KIND_CLIENT 3
#define STATUS_OK 1
#define STATUS_ERROR 2

struct qr_trace {
    uv_loop_t *loop;
    struct qr_delivery engine; /* the collector's transfers, one at a time */
    uv_timer_t timer;          /* a batch every QR_TRACE_FLUSH_MS */
    char *endpoint;
    json_t *resource; /* the resource's attributes, reused by every batch */
    json_t *ring[QR_TRACE_MAX_SPANS]; /* span objects, oldest at head */
    size_t head, n;
    size_t n_sending; /* spans of the batch in flight (0: none) */
    bool closing;
    unsigned n_open; /* the timer and the engine, until both closed */
    struct qr_metrics *metrics;
    uint64_t exported, dropped;
    uint64_t warned_mono_ms; /* the last WARN about a failed batch */
    uint64_t failed_since;   /* batches failed since that WARN */
};

static uint64_t now_unix_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void count_dropped(struct qr_trace *t, size_t n)
{
    t->dropped += n;
    if (t->metrics != NULL) {
        t->metrics->trace_spans_dropped += n;
    }
}

/* ------------------------------------------------------------------------ */
/* Spans. */

void qr_trace_begin(struct qr_trace_span *s, const char *parent)
{
    struct qr_traceparent p;
    memset(s, 0, sizeof *s);
    s->start_ns = now_unix_ns();
    if (qr_traceparent_parse(parent, &p)) {
        memcpy(s->ctx.trace_id, p.trace_id, sizeof p.trace_id);
        memcpy(s->parent_id, p.span_id, sizeof p.span_id);
        s->has_parent = true;
        s->ctx.flags = p.flags;
    } else {
        /* A random source that fails leaves zeros: the header is then
         * invalid and the destination ignores it, as the collector does. */
        qr_traceparent_new_id(s->ctx.trace_id, sizeof s->ctx.trace_id);
        s->ctx.flags = 1; /* sampled: every span is exported */
    }
    qr_traceparent_new_id(s->ctx.span_id, sizeof s->ctx.span_id);
}

static void attr(json_t *attrs, const char *key, json_t *value)
{
    json_array_append_new(attrs,
                          json_pack("{s:s,s:o}", "key", key, "value", value));
}

static void attr_str(json_t *attrs, const char *key, const char *v)
{
    if (v != NULL && v[0] != '\0') {
        attr(attrs, key, json_pack("{s:s}", "stringValue", v));
    }
}

static void attr_int(json_t *attrs, const char *key, int64_t v)
{
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, v); /* int64 is a JSON string */
    attr(attrs, key, json_pack("{s:s}", "intValue", text));
}

/* The span's JSON object (OTLP's Span), or NULL when out of memory. */
static json_t *span_json(const struct qr_trace_span *s,
                         const char *name,
                         int kind,
                         json_t *attrs,
                         int status,
                         const char *status_message)
{
    char trace_id[33], span_id[17], parent_id[17], start[24], end[24];
    qr_traceparent_hex(s->ctx.trace_id, sizeof s->ctx.trace_id, trace_id);
    qr_traceparent_hex(s->ctx.span_id, sizeof s->ctx.span_id, span_id);
    snprintf(start, sizeof start, "%" PRIu64, s->start_ns);
    snprintf(end, sizeof end, "%" PRIu64, now_unix_ns());
    json_t *st = json_pack("{s:i}", "code", status);
    if (st != NULL && status_message != NULL && status_message[0] != '\0') {
        json_object_set_new(st, "message", json_string(status_message));
    }
    json_t *o = json_pack("{s:s,s:s,s:s,s:i,s:s,s:s,s:o,s:o}", "traceId",
                          trace_id, "spanId", span_id, "name", name, "kind",
                          kind, "startTimeUnixNano", start, "endTimeUnixNano",
                          end, "attributes", attrs, "status", st);
    if (o != NULL && s->has_parent) {
        qr_traceparent_hex(s->parent_id, sizeof s->parent_id, parent_id);
        json_object_set_new(o, "parentSpanId", json_string(parent_id));
    }
    return o;
}

static void flush(struct qr_trace *t);

/* Takes span (a reference) into the ring, or drops it when the ring is
 * full; a full batch waiting goes at once. */
static void push(struct qr_trace *t, json_t *span)
{
    if (span == NULL || t->closing || t->n == QR_TRACE_MAX_SPANS) {
        json_decref(span);
        count_dropped(t, 1);
        return;
    }
    t->ring[(t->head + t->n) % QR_TRACE_MAX_SPANS] = span;
    t->n++;
    if (t->n >= QR_TRACE_BATCH_SPANS) {
        flush(t);
    }
}

void qr_trace_end_publish(struct qr_trace *t,
                          const struct qr_trace_span *s,
                          bool ok,
                          const char *status,
                          const char *message_id)
{
    json_t *attrs = json_array();
    attr_str(attrs, "messaging.message.id", message_id);
    attr_str(attrs, "qraft.status", status);
    push(t, span_json(s, "publish", KIND_SERVER, attrs,
                      ok ? STATUS_OK : STATUS_ERROR, ok ? NULL : status));
}

void qr_trace_end_attempt(struct qr_trace *t,
                          const struct qr_trace_span *s,
                          const char *message_id,
                          uint32_t retried,
                          Qraft__AttemptOutcome outcome,
                          const struct qr_delivery_response *resp)
{
    bool ok = outcome == QRAFT__ATTEMPT_OUTCOME__OUTCOME_DELIVERED;
    const char *name = ok ? "delivered"
                       : outcome == QRAFT__ATTEMPT_OUTCOME__OUTCOME_RETRY
                           ? "retry"
                           : "dead";
    json_t *attrs = json_array();
    attr_str(attrs, "messaging.message.id", message_id);
    attr_str(attrs, "server.address", s->host);
    if (resp->status > 0) {
        attr_int(attrs, "http.response.status_code", resp->status);
    }
    attr_str(attrs, "qraft.outcome", name);
    attr_int(attrs, "qraft.retried", retried);
    if (resp->transport != QR_DELIVERY_OK) {
        attr_str(attrs, "error.type",
                 qr_delivery_transport_name(resp->transport));
    }
    push(t, span_json(s, "delivery attempt", KIND_CLIENT, attrs,
                      ok ? STATUS_OK : STATUS_ERROR, ok ? NULL : name));
}

bool qr_trace_begin_attempt(struct qr_trace_span *s,
                            const Qraft__Message *m,
                            char *header)
{
    qr_trace_begin(s, m->traceparent);
    qr_metrics_url_host(m->url, s->host, sizeof s->host);
    for (size_t i = 0; i < m->n_headers; i++) {
        if (strcasecmp(m->headers[i]->name, "traceparent") == 0) {
            return false;
        }
    }
    qr_traceparent_format(&s->ctx, header);
    return true;
}

/* ------------------------------------------------------------------------ */
/* Export. */

static void on_batch_done(void *data, const struct qr_delivery_response *resp)
{
    struct qr_trace *t = data;
    size_t n = t->n_sending;
    t->n_sending = 0;
    if (resp->transport == QR_DELIVERY_OK && resp->status >= 200 &&
        resp->status < 300) {
        t->exported += n;
        if (t->metrics != NULL) {
            t->metrics->trace_spans_exported += n;
        }
    } else {
        count_dropped(t, n);
        t->failed_since++;
        uint64_t now = qr_clock_mono_ms();
        if (!t->closing &&
            (t->warned_mono_ms == 0 ||
             now - t->warned_mono_ms >= QR_TRACE_WARN_EVERY_MS)) {
            char why[QR_DELIVERY_ERROR_BYTES + 32];
            if (resp->transport == QR_DELIVERY_OK) {
                snprintf(why, sizeof why, "the collector answered HTTP %ld",
                         resp->status);
            } else {
                snprintf(why, sizeof why, "%s: %s",
                         qr_delivery_transport_name(resp->transport),
                         resp->error);
            }
            QR_WARN("trace",
                    "spans not exported to %s: %s (%" PRIu64
                    " batch(es) dropped since the last warning; %" PRIu64
                    " spans dropped in all)",
                    t->endpoint, why, t->failed_since, t->dropped);
            t->warned_mono_ms = now;
            t->failed_since = 0;
        }
    }
    if (!t->closing && t->n >= QR_TRACE_BATCH_SPANS) {
        flush(t);
    }
}

/* Sends the oldest spans (up to a batch) unless a batch is in flight. */
static void flush(struct qr_trace *t)
{
    if (t->closing || t->n_sending > 0 || t->n == 0) {
        return;
    }
    size_t n = t->n < QR_TRACE_BATCH_SPANS ? t->n : QR_TRACE_BATCH_SPANS;
    json_t *spans = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(spans, t->ring[t->head]);
        t->ring[t->head] = NULL;
        t->head = (t->head + 1) % QR_TRACE_MAX_SPANS;
    }
    t->n -= n;
    json_t *body = json_pack("{s:[{s:O,s:[{s:{s:s},s:o}]}]}", "resourceSpans",
                             "resource", t->resource, "scopeSpans", "scope",
                             "name", "qraft", "spans", spans);
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    static const struct qr_delivery_header headers[] = {
        {"Content-Type", "application/json"},
    };
    struct qr_delivery_request req = {
        .url = t->endpoint,
        .method = "POST",
        .headers = headers,
        .n_headers = 1,
        .body = (const uint8_t *)text,
        .body_len = text != NULL ? strlen(text) : 0,
        .timeout_ms = QR_TRACE_TIMEOUT_MS,
    };
    int rv = text == NULL
                 ? -ENOMEM
                 : qr_delivery_send(&t->engine, &req, on_batch_done, t, NULL);
    free(text);
    if (rv != 0) {
        count_dropped(t, n);
        uint64_t now = qr_clock_mono_ms();
        if (t->warned_mono_ms == 0 ||
            now - t->warned_mono_ms >= QR_TRACE_WARN_EVERY_MS) {
            QR_WARN("trace", "spans not exported to %s: %s (%s)", t->endpoint,
                    qr_strerror(rv), t->engine.errmsg);
            t->warned_mono_ms = now;
        }
        return;
    }
    t->n_sending = n;
}

static void on_timer(uv_timer_t *timer)
{
    flush(timer->data);
}

/* ------------------------------------------------------------------------ */
/* Life cycle. */

static void trace_free(struct qr_trace *t)
{
    for (size_t i = 0; i < t->n; i++) {
        json_decref(t->ring[(t->head + i) % QR_TRACE_MAX_SPANS]);
    }
    json_decref(t->resource);
    free(t->endpoint);
    free(t);
}

static void closed_one(struct qr_trace *t)
{
    if (--t->n_open == 0) {
        trace_free(t);
    }
}

static void on_timer_closed(uv_handle_t *h)
{
    closed_one(h->data);
}

static void on_engine_closed(struct qr_delivery *d)
{
    closed_one(
        (struct qr_trace *)((char *)d - offsetof(struct qr_trace, engine)));
}

int qr_trace_open(uv_loop_t *loop,
                  const struct qr_trace_options *opts,
                  struct qr_trace **out,
                  char *errmsg)
{
    struct qr_trace *t = calloc(1, sizeof *t);
    char instance[24];
    snprintf(instance, sizeof instance, "%" PRIu64, opts->node_id);
    if (t != NULL) {
        t->endpoint = strdup(opts->endpoint);
        t->resource = json_pack(
            "{s:[{s:s,s:{s:s}},{s:s,s:{s:s}}]}", "attributes", "key",
            "service.name", "value", "stringValue", opts->service_name, "key",
            "service.instance.id", "value", "stringValue", instance);
    }
    if (t == NULL || t->endpoint == NULL || t->resource == NULL) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "trace: out of memory");
        goto err;
    }
    t->loop = loop;
    t->metrics = opts->metrics;
    struct qr_delivery_limits limits;
    qr_delivery_limits_default(&limits);
    limits.max_inflight = 1;
    limits.max_per_host = 1;
    limits.connect_timeout_ms = QR_TRACE_TIMEOUT_MS;
    limits.default_timeout_ms = QR_TRACE_TIMEOUT_MS;
    char why[QR_ERRMSG_BYTES];
    int rv = qr_delivery_init(&t->engine, loop, &limits, why);
    if (rv != 0) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "trace: %s", why);
        goto err_after_alloc;
    }
    rv = uv_timer_init(loop, &t->timer);
    if (rv == 0) {
        t->timer.data = t;
        t->n_open = 2;
        rv = uv_timer_start(&t->timer, on_timer, QR_TRACE_FLUSH_MS,
                            QR_TRACE_FLUSH_MS);
        if (rv != 0) {
            snprintf(errmsg, QR_ERRMSG_BYTES, "trace: timer: %s",
                     uv_strerror(rv));
            qr_trace_close(t);
            return QR_EUNAVAIL;
        }
    } else {
        snprintf(errmsg, QR_ERRMSG_BYTES, "trace: timer: %s", uv_strerror(rv));
        t->n_open = 1;
        t->closing = true;
        qr_delivery_close(&t->engine, on_engine_closed);
        return QR_EUNAVAIL;
    }
    QR_INFO("trace", "exporting spans to %s as service %s", opts->endpoint,
            opts->service_name);
    *out = t;
    return 0;

err_after_alloc:
    trace_free(t);
    return QR_EUNAVAIL;
err:
    if (t != NULL) {
        trace_free(t);
    }
    return -ENOMEM;
}

void qr_trace_close(struct qr_trace *t)
{
    if (t == NULL || t->closing) {
        return;
    }
    if (t->n > 0) {
        QR_INFO("trace", "%zu span(s) not exported: the node is stopping",
                t->n);
    }
    t->closing = true;
    uv_close((uv_handle_t *)&t->timer, on_timer_closed);
    qr_delivery_close(&t->engine, on_engine_closed);
}
