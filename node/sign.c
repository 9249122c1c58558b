#include "sign.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>

#include "err.h"

static const char base58[] =
    "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

int qr_sign_random_bytes(void *buf, size_t len)
{
    if (RAND_bytes(buf, (int)len) != 1) {
        return QR_EUNAVAIL;
    }
    return 0;
}

int qr_sign_generate_key(char out[QR_SIGN_KEY_BYTES])
{
    enum { N_CHARS = QR_SIGN_KEY_BYTES - 5 };
    uint8_t raw[N_CHARS];
    int rv = qr_sign_random_bytes(raw, sizeof raw);
    if (rv != 0) {
        return rv;
    }
    out[0] = 's';
    out[1] = 'i';
    out[2] = 'g';
    out[3] = '_';
    for (size_t i = 0; i < N_CHARS; i++) {
        /* 58 * 4 = 232: reject-free mapping is not needed for a key drawn
         * from 28 * log2(58) ~ 164 bits; the slight bias costs < 1 bit. */
        out[4 + i] = base58[raw[i] % 58];
    }
    out[QR_SIGN_KEY_BYTES - 1] = '\0';
    return 0;
}

int qr_sign_sha256_parts_hex(const struct qr_sign_part *parts,
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
