/* Hashes that are a pure function of their input: SHA-256 over
 * length-prefixed parts (the content and endpoint dedup keys, replicated in
 * commands) and 32-bit FNV-1a (a message's shard, a schedule tick's first
 * id sequence). Both feed replicated state: their output must never change.
 * SHA-256 is OpenSSL's; nothing here keeps state. */
#ifndef QR_HASH_H
#define QR_HASH_H

#include <stddef.h>
#include <stdint.h>

/* 64 lower-case hex characters + NUL */
#define QR_SHA256_HEX_BYTES 65

/* One piece of input to a hash; pieces are length-prefixed when hashed, so
 * ("ab","c") and ("a","bc") differ. data is borrowed (may be NULL when len
 * is 0). */
struct qr_hash_part {
    const void *data;
    size_t len;
};

/* Lower-case hex SHA-256 over the parts, each preceded by its length as 8
 * big-endian bytes. Returns 0 or -ENOMEM. */
int qr_hash_sha256_parts_hex(const struct qr_hash_part *parts,
                             size_t n,
                             char out[QR_SHA256_HEX_BYTES]);

/* Lower-case hex SHA-256 of len bytes at data (borrowed; NULL when len is
 * 0), nothing prefixed: what anyone can compute from the value alone.
 * Returns 0 or -ENOMEM. */
int qr_hash_sha256_hex(const void *data,
                       size_t len,
                       char out[QR_SHA256_HEX_BYTES]);

/* 32-bit FNV-1a of the NUL-terminated string s (borrowed). */
uint32_t qr_hash_fnv1a32(const char *s);

#endif /* QR_HASH_H */
