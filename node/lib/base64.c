/* Base64 encoding and base64url decoding (see base64.h). */
#include "lib/base64.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "lib/err.h"

static const char b64_std[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t qr_base64_len(size_t len, bool pad)
{
    size_t rest = len % 3;
    size_t n = len / 3 * 4;
    if (rest != 0) {
        n += pad ? 4 : rest + 1;
    }
    return n;
}

void qr_base64_encode_into(const uint8_t *data,
                           size_t len,
                           bool url,
                           bool pad,
                           char *dst)
{
    const char *alphabet = url ? b64_url : b64_std;
    size_t i = 0;
    char *p = dst;
    for (; i + 3 <= len; i += 3) {
        uint32_t v =
            (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        *p++ = alphabet[v >> 18 & 63];
        *p++ = alphabet[v >> 12 & 63];
        *p++ = alphabet[v >> 6 & 63];
        *p++ = alphabet[v & 63];
    }
    size_t rest = len - i;
    if (rest == 1) {
        uint32_t v = (uint32_t)data[i] << 16;
        *p++ = alphabet[v >> 18 & 63];
        *p++ = alphabet[v >> 12 & 63];
        if (pad) {
            *p++ = '=';
            *p++ = '=';
        }
    } else if (rest == 2) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8;
        *p++ = alphabet[v >> 18 & 63];
        *p++ = alphabet[v >> 12 & 63];
        *p++ = alphabet[v >> 6 & 63];
        if (pad) {
            *p++ = '=';
        }
    }
    *p = '\0';
}

static int encode_new(const uint8_t *data,
                      size_t len,
                      bool url,
                      bool pad,
                      char **out)
{
    *out = NULL;
    if (len / 3 >= (SIZE_MAX - 8) / 4) {
        return QR_ETOOLARGE;
    }
    char *s = malloc(qr_base64_len(len, pad) + 1);
    if (s == NULL) {
        return -ENOMEM;
    }
    qr_base64_encode_into(data, len, url, pad, s);
    *out = s;
    return 0;
}

int qr_base64(const uint8_t *data, size_t len, char **out)
{
    return encode_new(data, len, false, true, out);
}

int qr_base64url(const uint8_t *data, size_t len, bool pad, char **out)
{
    return encode_new(data, len, true, pad, out);
}

/* Value of one base64url character, or -1. */
static int b64url_value(char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '-') {
        return 62;
    }
    if (c == '_') {
        return 63;
    }
    return -1;
}

int qr_base64url_decode(const char *s, size_t n, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (n % 4 == 1) {
        return QR_EBADREQ;
    }
    uint8_t *buf = malloc(n / 4 * 3 + 3);
    if (buf == NULL) {
        return -ENOMEM;
    }
    size_t len = 0;
    uint32_t acc = 0;
    int n_bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_value(s[i]);
        if (v < 0) {
            free(buf);
            return QR_EBADREQ;
        }
        acc = (acc << 6 | (uint32_t)v) & 0xffffff;
        n_bits += 6;
        if (n_bits >= 8) {
            n_bits -= 8;
            buf[len++] = (uint8_t)(acc >> n_bits);
        }
    }
    *out = buf;
    *out_len = len;
    return 0;
}
