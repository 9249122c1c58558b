/* Traces (OpenTelemetry), optional and off by default: the spans this node
 * makes (a publish it took, each delivery attempt it sent) and their export
 * as OTLP/HTTP JSON to --otlp-endpoint (docs/operations.md, "Traces").
 * Off means no struct qr_trace at all: callers hold a NULL pointer and test
 * it once on their paths.
 *
 * Invariants:
 * - Spans wait in a bounded buffer (QR_TRACE_MAX_SPANS); a span that finds
 *   it full is dropped and counted, never waited for: neither a slow nor a
 *   dead collector can slow a publish or a delivery, or grow memory.
 * - At most one batch (QR_TRACE_BATCH_SPANS spans) is in flight, sent on
 *   the node's loop by a delivery engine of its own (deliver/delivery.h:
 *   one transfer, timeout QR_TRACE_TIMEOUT_MS, no destination policy: the
 *   operator names the collector); a batch is sent every second, or at
 *   once when a full one waits. A batch that fails is dropped and counted;
 *   a WARN says so at most every 30 s.
 * - Trace ids come from the request (a valid traceparent) or are made here;
 *   they are never made in apply: a publish span's context travels in the
 *   PublishRequest to the leader and is stored on the message by apply as
 *   it came (Message.traceparent), so the attempt on any node joins it. */
#ifndef QR_TRACE_H
#define QR_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "deliver/delivery.h"
#include "lib/metrics.h"
#include "lib/traceparent.h"
#include "qraft.pb-c.h"

#define QR_TRACE_MAX_SPANS 2048u
#define QR_TRACE_BATCH_SPANS 256u
#define QR_TRACE_FLUSH_MS 1000u
#define QR_TRACE_TIMEOUT_MS 5000u
#define QR_TRACE_WARN_EVERY_MS 30000u

struct qr_trace;

#define QR_TRACE_HOST_BYTES 128

/* One span being timed: its own context (trace id, span id, flags), its
 * parent's span id (when it has one), its start (Unix ns), and for an
 * attempt its destination's host:port. */
struct qr_trace_span {
    struct qr_traceparent ctx;
    uint8_t parent_id[8];
    bool has_parent;
    uint64_t start_ns;
    char host[QR_TRACE_HOST_BYTES];
};

/* Where an exporter sends and what it says it is (qr_trace_open). */
struct qr_trace_options {
    const char *endpoint;     /* an http:// or https:// URL, copied */
    const char *service_name; /* copied; with node_id, names the resource */
    uint64_t node_id;
    struct qr_metrics *metrics; /* borrowed, may be NULL: counts the spans
                                   exported and dropped */
};

/* Opens the exporter on loop (borrowed) as opts says (borrowed for the
 * call). On 0 *out is new: close it with qr_trace_close. On failure errmsg
 * (QR_ERRMSG_BYTES) says why. */
int qr_trace_open(uv_loop_t *loop,
                  const struct qr_trace_options *opts,
                  struct qr_trace **out,
                  char *errmsg);

/* Drops what is buffered, cancels the batch in flight, and frees t once
 * its handles are closed (from the loop). NULL: nothing. */
void qr_trace_close(struct qr_trace *t);

/* Starts s now: a child of parent (a traceparent value) when that is well
 * formed, else the root of a new trace (NULL or "": none). */
void qr_trace_begin(struct qr_trace_span *s, const char *parent);

/* Ends s, the span of a publish this node took (from its arrival to its
 * answer): ok or not, status its answer's status name, message_id the
 * message it made ("" or NULL: none, e.g. a URL group's several). */
void qr_trace_end_publish(struct qr_trace *t,
                          const struct qr_trace_span *s,
                          bool ok,
                          const char *status,
                          const char *message_id);

/* Ends s, the span of attempt `retried` (its Upstash-Retried) at message
 * message_id, with its outcome and what the destination answered (resp,
 * borrowed: status and transport). */
void qr_trace_end_attempt(struct qr_trace *t,
                          const struct qr_trace_span *s,
                          const char *message_id,
                          uint32_t retried,
                          Qraft__AttemptOutcome outcome,
                          const struct qr_delivery_response *resp);

/* Starts s for an attempt at m (the child of m's stored traceparent, or a
 * new trace) and writes the traceparent naming s into header
 * (QR_TRACEPARENT_BYTES). Returns false when m's own headers already
 * forward a traceparent: the delivery then carries that one alone. */
bool qr_trace_begin_attempt(struct qr_trace_span *s,
                            const Qraft__Message *m,
                            char *header);

#endif /* QR_TRACE_H */
