/* W3C traceparent values: parse, write, new ids (traceparent.h). */
#include "lib/traceparent.h"

#include <string.h>

#include "lib/err.h"
#include "lib/random.h"

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1; /* upper case is refused too: the spec says lower */
}

/* n bytes from 2n hex characters at s; false on any other character. */
static bool parse_hex(const char *s, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hex_value(s[2 * i]);
        int lo = hex_value(s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return false;
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool all_zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (b[i] != 0) {
            return false;
        }
    }
    return true;
}

bool qr_traceparent_parse(const char *s, struct qr_traceparent *out)
{
    struct qr_traceparent tp;
    if (s == NULL || strlen(s) != QR_TRACEPARENT_LEN || s[0] != '0' ||
        s[1] != '0' || s[2] != '-' || s[35] != '-' || s[52] != '-') {
        return false;
    }
    if (!parse_hex(s + 3, tp.trace_id, sizeof tp.trace_id) ||
        !parse_hex(s + 36, tp.span_id, sizeof tp.span_id) ||
        !parse_hex(s + 53, &tp.flags, 1) ||
        all_zero(tp.trace_id, sizeof tp.trace_id) ||
        all_zero(tp.span_id, sizeof tp.span_id)) {
        return false;
    }
    *out = tp;
    return true;
}

void qr_traceparent_hex(const uint8_t *bytes, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 0xf];
    }
    out[2 * n] = '\0';
}

void qr_traceparent_format(const struct qr_traceparent *tp, char *out)
{
    memcpy(out, "00-", 3);
    qr_traceparent_hex(tp->trace_id, sizeof tp->trace_id, out + 3);
    out[35] = '-';
    qr_traceparent_hex(tp->span_id, sizeof tp->span_id, out + 36);
    out[52] = '-';
    qr_traceparent_hex(&tp->flags, 1, out + 53);
}

int qr_traceparent_new_id(uint8_t *id, size_t n)
{
    do {
        if (qr_random_bytes(id, n) != 0) {
            return QR_EUNAVAIL;
        }
    } while (all_zero(id, n));
    return 0;
}
