#include "lib/utf8.h"

#include <string.h>

/* The well-formed sequence that starts at s (n > 0 bytes left): its length
 * (1..4), or minus the length of its maximal ill-formed subpart (at least
 * 1) when it is not one. Unicode table 3-7: the second byte's range depends
 * on the first (E0: A0..BF, ED: 80..9F, F0: 90..BF, F4: 80..8F); C0, C1 and
 * F5..FF never occur. */
static int sequence(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    int len;

    if (c < 0x80) {
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) {
            lo = 0xA0; /* else overlong */
        } else if (c == 0xED) {
            hi = 0x9F; /* else a surrogate */
        }
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) {
            lo = 0x90; /* else overlong */
        } else if (c == 0xF4) {
            hi = 0x8F; /* else above U+10FFFF */
        }
    } else {
        return -1;
    }
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n || s[i] < lo || s[i] > hi) {
            return -i;
        }
        lo = 0x80;
        hi = 0xBF;
    }
    return len;
}

bool qr_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    while (i < n) {
        if (p[i] < 0x80) { /* the common case, one byte at a time */
            i++;
            continue;
        }
        int len = sequence(p + i, n - i);
        if (len < 0) {
            return false;
        }
        i += (size_t)len;
    }
    return true;
}

size_t qr_utf8_lossy(const char *s, size_t n, char *out)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    size_t o = 0;

    while (i < n) {
        int len = sequence(p + i, n - i);
        if (len > 0) {
            memcpy(out + o, s + i, (size_t)len);
            o += (size_t)len;
            i += (size_t)len;
            continue;
        }
        memcpy(out + o, QR_UTF8_REPLACEMENT, 3);
        o += 3;
        i += (size_t)-len;
    }
    out[o] = '\0';
    return o;
}
