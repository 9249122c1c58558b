/* Redaction (Upstash-Redact-Fields): the parts of a message a publisher
 * asked never to be shown. They are delivered as published; every view
 * (GET /v2/messages, the DLQ, /v2/events, callbacks' source fields, the
 * CLI through the same ops) shows each redacted value as
 * "REDACTED:<sha256 hex of the value>", as QStash does (its docs, "Redact
 * Private Data"); once a message is delivered or cancelled apply writes the
 * placeholders into its record, so the originals leave the store.
 *
 * Placeholders are idempotent: a value that is a placeholder already is
 * kept, so a record whose parts were replaced shows the same text as before.
 * Everything here is a pure function of its input (apply calls it). */
#ifndef QR_REDACT_H
#define QR_REDACT_H

#include <stdbool.h>
#include <stddef.h>

#include "qraft.pb-c.h"

#define QR_REDACT_PREFIX "REDACTED:"
/* "REDACTED:" + 64 hex + NUL */
#define QR_REDACT_PLACEHOLDER_BYTES (sizeof QR_REDACT_PREFIX - 1 + 64 + 1)

/* True when r (borrowed, may be NULL) redacts something. */
bool qr_redact_any(const Qraft__Redact *r);

/* True when r (borrowed, may be NULL) redacts the value of the forwarded
 * header name (borrowed); names compare without case. */
bool qr_redact_header(const Qraft__Redact *r, const char *name);

/* True when len bytes at data are a placeholder: the prefix and 64
 * lower-case hex digits. */
bool qr_redact_is_placeholder(const void *data, size_t len);

/* Writes the placeholder of len bytes at data (borrowed) into out: the
 * bytes themselves when they are one already. Returns 0 or -ENOMEM. */
int qr_redact_placeholder(const void *data,
                          size_t len,
                          char out[QR_REDACT_PLACEHOLDER_BYTES]);

/* Replaces, in m (unpacked with the default allocator: owned by the
 * caller, freed with qraft__message__free_unpacked), the redacted header
 * values and the body with their placeholders. For views: the record is
 * never written back. Returns 0 or -ENOMEM (m may then be partly done). */
int qr_redact_view(Qraft__Message *m);
/* The same over parts of any unpacked record (a schedule's template): the
 * headers' values and *body, by r (all borrowed; the parts owned by an
 * unpacked record). */
int qr_redact_view_parts(const Qraft__Redact *r,
                         Qraft__Header **headers,
                         size_t n_headers,
                         ProtobufCBinaryData *body);

/* What qr_redact_drop points a message at; free with
 * qr_redact_scratch_free (safe to call twice, and on a zeroed one). */
struct qr_redact_scratch {
    Qraft__Header **ptrs;
    Qraft__Header *headers;
    char *values; /* n * QR_REDACT_PLACEHOLDER_BYTES */
    char body[QR_REDACT_PLACEHOLDER_BYTES];
};

/* Points m's headers (and its body, unless empty) at copies in s (zeroed
 * by the caller) whose redacted values are placeholders; m's old arrays
 * are left alone (they may be borrowed). For apply, before the record of a
 * message that no longer needs its originals is written. Returns 0 or
 * -ENOMEM (m unchanged). */
int qr_redact_drop(Qraft__Message *m, struct qr_redact_scratch *s);
void qr_redact_scratch_free(struct qr_redact_scratch *s);

#endif /* QR_REDACT_H */
