/* The outcome of each attempt: the delivery engine's answer classified
 * (deliver/retry.h), the delay of a retry chosen (with the jitter drawn
 * here, by the proposer, so apply stays deterministic), and the result
 * proposed through the leader (qr_shards_submit_result). The in-flight
 * table and the scan are worker.c's (worker_int.h).
 *
 * Invariants (worker.h): a result is kept packed in its entry until it is
 * reported; a failed report is made again once a lease is back, never the
 * delivery; after MAX_REPORTS failures it is given up and the message is
 * sent again once it settled. An entry leaves the table only once this
 * replica applied its result (or the result was given up and SETTLE_MS
 * passed: worker.c's sweep). */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deliver/retry.h"
#include "deliver/worker_int.h"
#include "lib/clock.h"
#include "lib/err.h"
#include "lib/logger.h"
#include "lib/random.h"

/* A result whose report failed is held and sent again (the node holds no
 * lease meanwhile: nothing new starts); after this many failures it is
 * given up and the message is sent again once it settled, as when the
 * outcome is unknown. */
#define MAX_REPORTS 5
#define HELD_RETRY_MS 100

struct result_ctx {
    struct qr_worker *worker;
    char id[QR_ID_BYTES + 64];
};

/* A report of f's result failed (it may or may not have committed): hold it
 * for another report, or give it up after MAX_REPORTS. Either way the
 * message is not sent again while the entry stays. */
static void report_failed(struct qr_worker *w, struct qr_worker_inflight *f)
{
    f->proposing = false;
    if (f->result != NULL && ++f->report_failures < MAX_REPORTS) {
        f->held = true;
        w->stats.results_held++;
        worker_wake_at(w, qr_clock_wall_ms() + HELD_RETRY_MS);
        return;
    }
    /* Not committed (or not known to be): the message is still due unless
     * the result did commit; the scans after SETTLE_MS tell. */
    w->stats.results_dropped++;
    f->answered = true;
    f->answered_mono_ms = qr_clock_mono_ms();
    f->wait_index = UINT64_MAX;
    free(f->result);
    f->result = NULL;
}

static void on_result_applied(void *data, int status, uint64_t applied_index);

/* Hands r (f's result) to raft through the leader. */
static void report(struct qr_worker *w,
                   struct qr_worker_inflight *f,
                   const Qraft__DeliveryResult *r)
{
    struct result_ctx *ctx = malloc(sizeof *ctx);
    int rv = -ENOMEM;
    if (ctx != NULL) {
        ctx->worker = w;
        snprintf(ctx->id, sizeof ctx->id, "%s", f->id);
        rv = qr_shards_submit_result(w->shards, r, on_result_applied, ctx);
    }
    if (rv != 0) {
        free(ctx);
        QR_DEBUG_MSG("worker", f->id, "result not submitted: %s",
                     qr_strerror(rv));
        report_failed(w, f);
        return;
    }
    f->held = false;
    f->proposing = true;
}

void worker_report_held(struct qr_worker *w)
{
    for (size_t b = 0; b < w->n_buckets; b++) {
        struct qr_worker_inflight *f = w->buckets[b];
        while (f != NULL && qr_shards_active(w->shards)) {
            struct qr_worker_inflight *next = f->next;
            if (f->held) {
                Qraft__DeliveryResult *r = qraft__delivery_result__unpack(
                    NULL, f->result_len, f->result);
                if (r == NULL) {
                    f->held = false;
                    report_failed(w, f); /* gives it up: no result left */
                } else {
                    w->stats.results_resent++;
                    report(w, f, r);
                    qraft__delivery_result__free_unpacked(r, NULL);
                }
            }
            f = next;
        }
    }
}

static void on_result_applied(void *data, int status, uint64_t applied_index)
{
    struct result_ctx *ctx = data;
    struct qr_worker *w = ctx->worker;
    if (w->closing) {
        free(ctx); /* the table is gone; nothing is waiting for this */
        return;
    }
    struct qr_worker_inflight *f = worker_inflight_find(w, ctx->id);
    if (status != 0) {
        QR_DEBUG_MSG("worker", ctx->id, "result: %s", qr_strerror(status));
    }
    if (f != NULL && status != 0) {
        report_failed(w, f);
    } else if (f != NULL &&
               applied_index <= qr_cluster_fsm_applied(w->cluster)) {
        worker_inflight_remove(w, f); /* this replica has it: the store tells */
    } else if (f != NULL) {
        f->proposing = false;
        f->answered = true;
        f->answered_mono_ms = qr_clock_mono_ms();
        f->wait_index = applied_index;
        free(f->result);
        f->result = NULL;
    }
    free(ctx);
    /* The message moved (or will be re-sent): look again soon. */
    worker_wake_at(w, qr_clock_wall_ms());
}

static void fill_response(Qraft__AttemptResponse *out,
                          Qraft__Header *headers,
                          Qraft__Header **header_ptrs,
                          const struct qr_delivery_response *resp)
{
    qraft__attempt_response__init(out);
    out->status = (int32_t)resp->status;
    for (size_t i = 0; i < resp->n_headers; i++) {
        qraft__header__init(&headers[i]);
        headers[i].name = (char *)resp->headers[i].name;
        headers[i].value = (char *)resp->headers[i].value;
        header_ptrs[i] = &headers[i];
    }
    out->n_headers = resp->n_headers;
    out->headers = header_ptrs;
    out->body.data = (uint8_t *)resp->body;
    out->body.len = resp->body_len;
    out->body_truncated = resp->body_truncated;
}

static enum qr_retry_transport transport_of(enum qr_delivery_transport t)
{
    switch (t) {
        case QR_DELIVERY_OK:
            return QR_RETRY_TRANSPORT_OK;
        case QR_DELIVERY_CONNECT:
            return QR_RETRY_TRANSPORT_CONNECT;
        case QR_DELIVERY_DNS:
            return QR_RETRY_TRANSPORT_DNS;
        case QR_DELIVERY_TLS:
            return QR_RETRY_TRANSPORT_TLS;
        case QR_DELIVERY_TIMEOUT:
            return QR_RETRY_TRANSPORT_TIMEOUT;
        case QR_DELIVERY_TOO_MANY_REDIRECTS:
            return QR_RETRY_TRANSPORT_REDIRECTS;
        case QR_DELIVERY_REFUSED:
            return QR_RETRY_TRANSPORT_REFUSED;
        default:
            return QR_RETRY_TRANSPORT_PROTOCOL;
    }
}

/* A random jitter in [-0.1, 0.1]: chosen here, by the proposer, so apply
 * stays deterministic. */
static double draw_jitter(void)
{
    uint32_t r = 0;
    if (qr_random_bytes(&r, sizeof r) != 0) {
        return 0;
    }
    return ((double)r / (double)UINT32_MAX) * 0.2 - 0.1;
}

/* Classifies the attempt, chooses the delay, and proposes the result. */
static void propose_result(struct qr_worker *w,
                           struct qr_worker_inflight *f,
                           const struct qr_delivery_response *resp)
{
    uint64_t now = worker_now_ms(w);
    struct qr_retry_response hdr = {0};
    for (size_t i = 0; i < resp->n_headers; i++) {
        char line[1024];
        int n = snprintf(line, sizeof line, "%s: %s", resp->headers[i].name,
                         resp->headers[i].value);
        if (n > 0) {
            qr_retry_note_header(
                &hdr, line,
                (size_t)n < sizeof line ? (size_t)n : sizeof line - 1, now);
        }
    }
    struct qr_retry_verdict v;
    qr_retry_classify(transport_of(resp->transport), (int)resp->status,
                      hdr.non_retryable, f->options.strict, &v);
    struct qr_retry_budget budget = {
        .attempts = f->attempt + 1,
        .max_retries = f->max_retries,
        .created_ms = f->created_ms,
        .max_retry_duration_ms = f->options.max_retry_duration_ms,
        .now_ms = now,
    };
    bool retry = qr_retry_check_budget(&v, &budget);

    Qraft__DeliveryResult r = QRAFT__DELIVERY_RESULT__INIT;
    Qraft__LastError err = QRAFT__LAST_ERROR__INIT;
    Qraft__AttemptResponse ar;
    Qraft__Header *headers = calloc(resp->n_headers + 1, sizeof *headers);
    Qraft__Header **header_ptrs =
        calloc(resp->n_headers + 1, sizeof *header_ptrs);
    char hint[QR_RETRY_HINT_BYTES];
    char message[QR_DELIVERY_ERROR_BYTES + 64];
    if (headers == NULL || header_ptrs == NULL) {
        free(headers);
        free(header_ptrs);
        w->stats.results_dropped++;
        worker_inflight_remove(w, f);
        return;
    }
    fill_response(&ar, headers, header_ptrs, resp);
    r.message_id = f->id;
    r.attempt = f->attempt;
    r.generation = f->generation;
    r.node_id = w->config->id;
    r.response = &ar;
    if (v.cls == QR_RETRY_DELIVERED) {
        r.outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_DELIVERED;
        w->stats.delivered++;
        QR_METRICS_INC(w->metrics, deliveries_delivered);
    } else {
        if (resp->transport == QR_DELIVERY_OK) {
            snprintf(message, sizeof message, "HTTP %ld", resp->status);
        } else {
            snprintf(message, sizeof message, "%s: %s",
                     qr_retry_transport_name(v.transport), resp->error);
        }
        err.category = (char *)qr_retry_category_name(v.category);
        err.cause = (char *)qr_retry_category_name(v.cause);
        err.status = (int32_t)resp->status;
        err.message = message;
        r.error = &err;
        if (retry) {
            struct qr_retry_backoff b = {
                .header_delay_set = hdr.delay_set,
                .header_delay_ms = hdr.delay_ms,
                .expr = f->retry_delay,
                .retried = f->attempt,
                .jitter = draw_jitter(),
                .min_backoff_ms = f->options.min_backoff_ms,
                .max_backoff_ms = f->options.max_backoff_ms,
                .max_doublings = f->options.max_doublings,
            };
            r.outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_RETRY;
            r.retry_delay_ms = qr_retry_next_delay_ms(&b, NULL);
            w->stats.retried++;
            QR_METRICS_INC(w->metrics, deliveries_retry);
        } else {
            r.outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_DEAD;
            qr_retry_hint(&v, hint, sizeof hint);
            r.hint = hint;
            w->stats.dead_lettered++;
            QR_METRICS_INC(w->metrics, deliveries_dead);
            if (resp->transport == QR_DELIVERY_REFUSED) {
                /* An operator's matter (a publisher aimed at an internal
                 * address, or a network to open): say where. */
                QR_WARN_MSG("worker", f->id, "not delivered, dead-lettered: %s",
                            resp->error);
            } else {
                QR_INFO_MSG("worker", f->id,
                            "dead-lettered after %u attempt(s): %s (%s)",
                            f->attempt + 1, err.category, message);
            }
        }
    }

    if (w->trace != NULL) {
        qr_trace_end_attempt(w->trace, &f->span, f->id, f->attempt, r.outcome,
                             resp);
    }
    /* Kept until reported: a failed report is made again, never the
     * delivery (see worker.h). Without it, a failed report is given up. */
    size_t len = qraft__delivery_result__get_packed_size(&r);
    f->result = malloc(len > 0 ? len : 1);
    if (f->result != NULL) {
        f->result_len = qraft__delivery_result__pack(&r, f->result);
    }
    report(w, f, &r);
    free(headers);
    free(header_ptrs);
}

void worker_on_delivered(void *data, const struct qr_delivery_response *resp)
{
    struct qr_worker_inflight *f = data;
    struct qr_worker *w = f->worker;
    assert(f->sending); /* the engine answers each send exactly once */
    f->sending = false;
    if (f->flow != NULL) {
        qr_flow_finished(f->flow);
        f->flow = NULL;
        w->n_flow_sending--;
    }
    bool cancelled = resp->transport == QR_DELIVERY_CANCELLED || w->closing;
    qr_metrics_host_ended(
        w->metrics, f->host_slot,
        !cancelled && (resp->transport != QR_DELIVERY_OK ||
                       resp->status < 200 || resp->status >= 300));
    if (cancelled) {
        /* Nothing was learned: the message stays due for whoever leads. */
        worker_inflight_remove(w, f);
        return;
    }
    if (w->metrics != NULL) {
        qr_metrics_observe(&w->metrics->attempt_seconds,
                           qr_metrics_now_us() - f->sent_us);
    }
    /* Reported even when this node lost its lease meanwhile: the outcome
     * is known, and reporting it (now or once the lease is back) spares
     * the destination a duplicate. */
    QR_DEBUG_MSG("worker", f->id, "attempt %u: %s, HTTP %ld in %" PRIu64 " ms",
                 f->attempt,
                 resp->transport == QR_DELIVERY_OK ? "answered" : resp->error,
                 resp->status, resp->elapsed_ms);
    propose_result(w, f, resp);
}
