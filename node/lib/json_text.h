/* JSON strings from text that may not be UTF-8: what an older node stored,
 * an RPC client sent or a destination answered can hold any bytes, and
 * jansson refuses those (json_string returns NULL). Here each ill-formed
 * sequence becomes U+FFFD (qr_utf8_lossy), so building a reply, a log
 * entry or a callback never fails on data, only when out of memory, and
 * always the same way on every replica. */
#ifndef QR_JSON_TEXT_H
#define QR_JSON_TEXT_H

#include <stddef.h>

#include <jansson.h>

/* The n bytes at s (borrowed) as a JSON string: returns new (json_decref
 * it), NULL only when out of memory. */
json_t *qr_json_textn(const char *s, size_t n);

/* qr_json_textn of a C string; NULL for NULL. */
json_t *qr_json_text(const char *s);

/* Sets o[key] = value, takes value (also on failure); a key that is not
 * UTF-8 is set as its lossy copy. Returns 0, or -1 when o is not an
 * object, value is NULL or memory ran out. */
int qr_json_set_text_key(json_t *o, const char *key, json_t *value);

#endif /* QR_JSON_TEXT_H */
