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

/* A built callback message. Strings and the body are owned by the struct
 * (free with qr_callback_free); m is ready for qr_store_msg_put once its id
 * is set (see qr_callback_seq). */
struct qr_callback {
    Qraft__Message m;
    Qraft__Header content_type;
    Qraft__Header *headers[1];
    char *body_json;
};

/* Builds the callback of `kind` for source message src (as it is after the
 * attempt: attempts already counted) and the committed result r, at leader
 * time now_ms. The callback retries like its source (max retries and retry
 * options, borrowed from src); its timeout is the default carried by the
 * command. Returns 0 or -ENOMEM. */
int qr_callback_build(struct qr_callback *cb,
                      const Qraft__Message *src,
                      const Qraft__DeliveryResult *r,
                      Qraft__CallbackKind kind,
                      uint64_t now_ms,
                      uint64_t default_timeout_ms);

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
