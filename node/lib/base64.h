/* Base64 (RFC 4648): the standard alphabet (section 4) and the URL-safe one
 * (section 5: '-' and '_'). Pure; used by the delivery signature (JWT
 * segments, the body hash) and by the callback messages apply builds (base64
 * bodies). */
#ifndef QR_LIB_BASE64_H
#define QR_LIB_BASE64_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Characters (without the NUL) that encoding len bytes produces. */
size_t qr_base64_len(size_t len, bool pad);

/* Writes qr_base64_len(len, pad) characters and a NUL into dst: the URL-safe
 * alphabet when url, '='-padded when pad. */
void qr_base64_encode_into(const uint8_t *data,
                           size_t len,
                           bool url,
                           bool pad,
                           char *dst);

/* Standard base64, always '='-padded, of data[0..len) (data may be NULL when
 * len is 0). Returns 0 and new in *out (NUL-terminated; free with free()),
 * or -ENOMEM / QR_ETOOLARGE with *out NULL. */
int qr_base64(const uint8_t *data, size_t len, char **out);

/* URL-safe base64, '='-padded only when pad is true. Ownership and errors
 * as qr_base64. */
int qr_base64url(const uint8_t *data, size_t len, bool pad, char **out);

/* Decodes unpadded base64url s[0..n) (a JWS segment) into a new buffer
 * (free with free()). Returns 0, QR_EBADREQ on a character outside the
 * alphabet or an impossible length, or -ENOMEM. */
int qr_base64url_decode(const char *s,
                        size_t n,
                        uint8_t **out,
                        size_t *out_len);

#endif /* QR_LIB_BASE64_H */
