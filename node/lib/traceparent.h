/* W3C trace context (https://www.w3.org/TR/trace-context/): the
 * `traceparent` value "00-<32 hex trace id>-<16 hex span id>-<2 hex
 * flags>" parsed strictly and written, and fresh random ids. Pure (apply
 * uses the parser to decide whether a publish's value is kept on its
 * message, so it reads nothing but its input).
 *
 * Invariants: a parsed or made context has version 00, lower-case hex, and
 * a trace id and span id that are not all zero; anything else is refused
 * whole (a caller ignores a bad value, it never fails a request for it). */
#ifndef QR_LIB_TRACEPARENT_H
#define QR_LIB_TRACEPARENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "00-" 32 "-" 16 "-" 2, and the terminating NUL. */
#define QR_TRACEPARENT_LEN 55
#define QR_TRACEPARENT_BYTES (QR_TRACEPARENT_LEN + 1)

struct qr_traceparent {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t flags; /* bit 0: sampled */
};

/* Parses s (NUL-terminated, may be NULL) into *out. Returns true only for
 * a well-formed version 00 value (exactly QR_TRACEPARENT_LEN characters,
 * lower-case hex, ids not all zero); *out is untouched otherwise. */
bool qr_traceparent_parse(const char *s, struct qr_traceparent *out);

/* Writes tp as a traceparent value into out (QR_TRACEPARENT_BYTES). */
void qr_traceparent_format(const struct qr_traceparent *tp, char *out);

/* Lower-case hex of n bytes into out (2n + 1 bytes, NUL-terminated). */
void qr_traceparent_hex(const uint8_t *bytes, size_t n, char *out);

/* Fills id (n bytes) with random bytes, never all zero. Returns 0, or
 * QR_EUNAVAIL when the system has no randomness (id is then unusable). */
int qr_traceparent_new_id(uint8_t *id, size_t n);

#endif /* QR_LIB_TRACEPARENT_H */
