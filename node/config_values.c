#include "config_values.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "lib/dest.h"
#include "lib/err.h"

#define SECOND_MS 1000ull
#define MINUTE_MS (60ull * SECOND_MS)
#define HOUR_MS (60ull * MINUTE_MS)
#define DAY_MS (24ull * HOUR_MS)

/* Reads "<digits>[.<digits>]" and nothing else: no sign, exponent or hex
 * (strtod would take those). */
static int read_number(const char **p, double *out)
{
    const char *q = *p;
    double v = 0;
    bool any = false;
    while (*q >= '0' && *q <= '9') {
        v = v * 10 + (*q++ - '0');
        any = true;
    }
    if (*q == '.') {
        double scale = 0.1;
        q++;
        while (*q >= '0' && *q <= '9') {
            v += (*q++ - '0') * scale;
            scale /= 10;
            any = true;
        }
    }
    if (!any || v > 1e15) {
        return QR_EBADREQ;
    }
    *p = q;
    *out = v;
    return 0;
}

int qr_config_parse_duration_ms(const char *s, uint64_t *out)
{
    if (s == NULL || *s == '\0') {
        return QR_EBADREQ;
    }
    const char *p = s;
    double total = 0;
    double v;
    if (read_number(&p, &v) != 0) {
        return QR_EBADREQ;
    }
    if (*p == '\0') {
        total = v * SECOND_MS; /* a bare number, alone, is seconds */
    } else {
        for (;;) {
            double unit_ms;
            if (strncmp(p, "ms", 2) == 0) {
                unit_ms = 1;
                p += 2;
            } else if (*p == 's') {
                unit_ms = SECOND_MS;
                p++;
            } else if (*p == 'm') {
                unit_ms = MINUTE_MS;
                p++;
            } else if (*p == 'h') {
                unit_ms = HOUR_MS;
                p++;
            } else if (*p == 'd') {
                unit_ms = DAY_MS;
                p++;
            } else {
                return QR_EBADREQ;
            }
            total += v * unit_ms;
            if (total > 1e15) { /* ~31,000 years: surely a mistake */
                return QR_EBADREQ;
            }
            if (*p == '\0') {
                break;
            }
            if (read_number(&p, &v) != 0) {
                return QR_EBADREQ;
            }
        }
    }
    *out = (uint64_t)llround(total);
    return 0;
}

/* The power of two a byte count's suffix stands for: k, m, g, t (binary
 * multiples, either case), 0 for none, -1 for anything else. */
static int suffix_shift(char c)
{
    switch (c) {
        case '\0':
            return 0;
        case 'k':
        case 'K':
            return 10;
        case 'm':
        case 'M':
            return 20;
        case 'g':
        case 'G':
            return 30;
        case 't':
        case 'T':
            return 40;
        default:
            return -1;
    }
}

/* Digits in min..max; with `suffixed`, optionally followed by one byte
 * count suffix (see suffix_shift) that scales them. */
static int parse_number(const char *s,
                        bool suffixed,
                        uint64_t min,
                        uint64_t max,
                        uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9') {
        return QR_EBADREQ;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    int shift = suffixed ? suffix_shift(*end) : (*end == '\0' ? 0 : -1);
    if (errno != 0 || shift < 0 || (shift != 0 && end[1] != '\0') ||
        v > (UINT64_MAX >> shift)) {
        return QR_EBADREQ;
    }
    v <<= shift;
    if (v < min || v > max) {
        return QR_EBADREQ;
    }
    *out = v;
    return 0;
}

int qr_config_parse_u64(const char *s,
                        uint64_t min,
                        uint64_t max,
                        uint64_t *out)
{
    return parse_number(s, false, min, max, out);
}

/* A byte count: digits, then optionally one of k, m, g, t (binary
 * multiples, either case); in min..max. */
int qr_config_parse_bytes(const char *s,
                          uint64_t min,
                          uint64_t max,
                          uint64_t *out)
{
    return parse_number(s, true, min, max, out);
}

/* "HOST:PORT" with a non-empty host and a port in 1..65535. */
int qr_config_check_hostport(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || strlen(s) >= QR_ADDR_MAX) {
        return QR_EBADREQ;
    }
    uint64_t port;
    return qr_config_parse_u64(colon + 1, 1, 65535, &port);
}

/* The raft library takes IPv4 dotted quads: a host name is resolved here,
 * once, to its first IPv4 address. */
int qr_config_resolve_ipv4(char *hostport,
                           size_t size,
                           char *errmsg,
                           const char *flag)
{
    char host[QR_ADDR_MAX];
    const char *colon = strrchr(hostport, ':');
    size_t host_len = (size_t)(colon - hostport);
    struct in_addr a;
    memcpy(host, hostport, host_len);
    host[host_len] = '\0';
    if (inet_pton(AF_INET, host, &a) == 1) {
        return 0;
    }
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rv = getaddrinfo(host, NULL, &hints, &res);
    if (rv != 0 || res == NULL) {
        snprintf(errmsg, QR_ERRMSG_BYTES,
                 "%s: cannot resolve '%s' to an IPv4 address: %s", flag, host,
                 rv != 0 ? gai_strerror(rv) : "no address");
        return QR_EBADREQ;
    }
    char ip[INET_ADDRSTRLEN];
    const struct sockaddr_in *sin = (const struct sockaddr_in *)res->ai_addr;
    inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof ip);
    freeaddrinfo(res);
    char port[8];
    snprintf(port, sizeof port, "%s", colon + 1);
    snprintf(hostport, size, "%s:%s", ip, port);
    return 0;
}

/* Whether a listener on hostport ("HOST:PORT", "[V6]:PORT") takes
 * connections from this machine only: HOST is a loopback address, or a name
 * all of whose addresses are. An empty host (every interface) is not. */
int qr_config_check_ipv4_port(const char *s, char *errmsg, const char *flag)
{
    struct in_addr a;
    const char *colon = strrchr(s, ':');
    char ip[INET_ADDRSTRLEN] = "";
    if (colon != NULL && (size_t)(colon - s) < sizeof ip) {
        memcpy(ip, s, (size_t)(colon - s));
        ip[colon - s] = '\0';
    }
    if (inet_pton(AF_INET, ip, &a) != 1 || qr_config_check_hostport(s) != 0) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "%s: '%s' is not IPV4:PORT", flag, s);
        return QR_EBADREQ;
    }
    return 0;
}

bool qr_config_on_loopback(const char *hostport)
{
    char host[QR_ADDR_MAX];
    const char *colon = strrchr(hostport, ':');
    size_t len = colon != NULL ? (size_t)(colon - hostport) : 0;
    if (len == 0 || len >= sizeof host) {
        return false;
    }
    memcpy(host, hostport, len);
    host[len] = '\0';
    struct qr_dest_addr a;
    if (qr_dest_parse_addr(host, &a) == 0) {
        return qr_dest_classify(&a) == QR_DEST_LOOPBACK;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL) {
        return false;
    }
    bool loopback = true;
    for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        loopback =
            loopback &&
            qr_dest_from_sockaddr(ai->ai_addr, ai->ai_addrlen, &a) == 0 &&
            qr_dest_classify(&a) == QR_DEST_LOOPBACK;
    }
    freeaddrinfo(res);
    return loopback;
}
