/* Callback messages: what apply creates when a message with a callback URL
 * has an attempt committed (callback), or is dead-lettered (failure
 * callback). Pure and deterministic: everything comes from the source
 * message, the committed result and the entry's time, so every replica
 * builds the same message with the same id.
 *
 * The body is the JSON of qstash-api.md section 2.5: status, header, body
 * (base64), retried, maxRetries, dlqId (failure callbacks), sourceMessageId,
 * url, method, sourceHeader, sourceBody (base64), notBefore, createdAt,
 * scheduleId (a schedule's messages), and when set topicName, endpointName
 * (URL groups) and callerIP. */
#ifndef QR_CALLBACK_H
#define QR_CALLBACK_H

#include <stdint.h>

#include "qraft.pb-c.h"

/* Node id used in the ids of messages that apply creates: real nodes are
 * 1..65535, so these never collide with published ones. */
#define QR_CALLBACK_NODE_ID 0u

/* A built callback message. The body, the header arrays and the renamed
 * header names are owned by the struct (free with qr_callback_free); the
 * rest is borrowed from the source. m is ready for qr_store_msg_put once
 * its id is set (see qr_callback_seq). */
struct qr_callback {
    Qraft__Message m;
    Qraft__Header content_type;
    Qraft__Header *header_store; /* the forwarded ones, renamed */
    Qraft__Header **headers;
    Qraft__Header **failure_headers; /* its own failure callback's */
    char **names;
    size_t n_names;
    char *body_json;
};

/* The workflow run a failure callback reports on (docs/workflow.md): its
 * body then adds workflowRunId and workflowCreatedAt, and its sourceBody is
 * the run's initial payload, as the workflow SDK reads them. Borrowed. */
struct qr_callback_run {
    const char *run_id;
    uint64_t created_ms;
    ProtobufCBinaryData initial_body;
};

/* Builds (from the fields of `from`) the callback of `kind` for source
 * message src (as it is after the attempt: attempts already counted) and
 * the committed result r, at leader time now_ms. The callback retries like
 * its source (max retries and retry options, borrowed from src); its
 * timeout is the default carried by the command.
 *
 * Then it takes the source's settings for it (Upstash-Callback-* or
 * Upstash-Failure-Callback-*: src->callback_headers or
 * src->failure_callback_headers): Retries, Retry-Delay, Timeout and Method
 * override the above; Forward-X: v is sent as X: v, and Workflow-Y: v as
 * Upstash-Workflow-Y: v; a callback's Failure-Callback and
 * Failure-Callback-* give it a failure callback of its own; the rest is
 * ignored. The callback of a workflow's context.call dead-lettered reports
 * retried = maxRetries (the SDK waits for that attempt). run (NULL: none)
 * is the source's workflow run, for a failure callback. Returns 0 or
 * -ENOMEM. */
struct qr_callback_source {
    const Qraft__Message *src;      /* borrowed */
    const Qraft__DeliveryResult *r; /* borrowed */
    Qraft__CallbackKind kind;
    uint64_t now_ms;
    uint64_t default_timeout_ms;
    const struct qr_callback_run *run; /* borrowed, may be NULL */
};
int qr_callback_build(struct qr_callback *cb,
                      const struct qr_callback_source *from);

void qr_callback_free(struct qr_callback *cb);

/* The first sequence number to try for the callback's id: a hash of the
 * source id, the kind and the attempt. Apply tries seq, seq+1, ... until an
 * id is free, which every replica does identically. */
uint32_t qr_callback_seq(const char *source_id,
                         Qraft__CallbackKind kind,
                         uint32_t attempt);

/* Writes the Go-canonical form of a header name ("content-type" ->
 * "Content-Type") into out (out_len bytes). */
void qr_callback_canonical_name(const char *name, char *out, size_t out_len);

#endif /* QR_CALLBACK_H */
