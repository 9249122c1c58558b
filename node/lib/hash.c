#include "lib/hash.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>

int qr_hash_sha256_parts_hex(const struct qr_hash_part *parts,
                             size_t n,
                             char out[QR_SHA256_HEX_BYTES])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t digest[32];
    unsigned digest_len = 0;
    if (ctx == NULL) {
        return -ENOMEM;
    }
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    for (size_t i = 0; i < n; i++) {
        uint8_t len_be[8];
        uint64_t len = parts[i].len;
        for (int b = 0; b < 8; b++) {
            len_be[b] = (uint8_t)(len >> (56 - 8 * b));
        }
        EVP_DigestUpdate(ctx, len_be, sizeof len_be);
        EVP_DigestUpdate(ctx, parts[i].data, parts[i].len);
    }
    EVP_DigestFinal_ex(ctx, digest, &digest_len);
    EVP_MD_CTX_free(ctx);
    for (unsigned i = 0; i < 32; i++) {
        snprintf(out + 2 * i, 3, "%02x", digest[i]);
    }
    return 0;
}

int qr_hash_sha256_hex(const void *data,
                       size_t len,
                       char out[QR_SHA256_HEX_BYTES])
{
    uint8_t digest[32];
    unsigned digest_len = 0;
    if (EVP_Digest(len > 0 ? data : "", len, digest, &digest_len, EVP_sha256(),
                   NULL) != 1) {
        return -ENOMEM;
    }
    for (unsigned i = 0; i < 32; i++) {
        snprintf(out + 2 * i, 3, "%02x", digest[i]);
    }
    return 0;
}

uint32_t qr_hash_fnv1a32(const char *s)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        h ^= *p;
        h *= 16777619u;
    }
    return h;
}
