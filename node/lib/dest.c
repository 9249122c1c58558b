/* Destinations: classification of addresses and the policy. See dest.h. */
#include "lib/dest.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Canonical addresses. */

static void set_v4(struct qr_dest_addr *out, const uint8_t *b)
{
    memset(out, 0, sizeof *out);
    out->family = AF_INET;
    memcpy(out->bytes, b, 4);
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

/* IPv6 forms that carry an IPv4 address become it; others stay. */
static void canonical_v6(const uint8_t *b, struct qr_dest_addr *out)
{
    static const uint8_t nat64[12] = {0x00, 0x64, 0xff, 0x9b};
    bool mapped = all_zero(b, 10) && b[10] == 0xff && b[11] == 0xff;
    /* ::ffff:0:a.b.c.d (SIIT, RFC 2765) */
    bool translated = all_zero(b, 8) && b[8] == 0xff && b[9] == 0xff &&
                      b[10] == 0 && b[11] == 0;
    /* ::a.b.c.d, but not :: and ::1, which are IPv6's own */
    bool compatible = all_zero(b, 12) && !(all_zero(b + 12, 3) && b[15] <= 1);
    bool well_known_nat64 = memcmp(b, nat64, sizeof nat64) == 0;
    if (mapped || translated || compatible || well_known_nat64) {
        set_v4(out, b + 12);
        return;
    }
    memset(out, 0, sizeof *out);
    out->family = AF_INET6;
    memcpy(out->bytes, b, 16);
}

int qr_dest_parse_addr(const char *text, struct qr_dest_addr *out)
{
    char buf[64];
    size_t len = strlen(text);
    if (len == 0 || len >= sizeof buf) {
        return -EINVAL;
    }
    memcpy(buf, text, len + 1);
    if (strchr(buf, ':') != NULL) {
        char *s = buf;
        if (s[0] == '[') {
            if (s[len - 1] != ']') {
                return -EINVAL;
            }
            s[len - 1] = '\0';
            s++;
        }
        char *zone = strchr(s, '%');
        if (zone != NULL) {
            *zone = '\0';
        }
        struct in6_addr a6;
        if (inet_pton(AF_INET6, s, &a6) != 1) {
            return -EINVAL;
        }
        canonical_v6(a6.s6_addr, out);
        return 0;
    }
    /* inet_aton stops at white space and takes what follows: none here. */
    for (const char *p = buf; *p != '\0'; p++) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') ||
              (*p >= 'A' && *p <= 'F') || *p == 'x' || *p == 'X' ||
              *p == '.')) {
            return -EINVAL;
        }
    }
    if (len > 1 && buf[len - 1] == '.') {
        buf[len - 1] = '\0'; /* "127.0.0.1." is the same host */
    }
    struct in_addr a4;
    if (inet_aton(buf, &a4) == 0) {
        return -EINVAL;
    }
    set_v4(out, (const uint8_t *)&a4.s_addr);
    return 0;
}

int qr_dest_from_sockaddr(const struct sockaddr *sa,
                          size_t len,
                          struct qr_dest_addr *out)
{
    if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        set_v4(out, (const uint8_t *)&in->sin_addr.s_addr);
        return 0;
    }
    if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        canonical_v6(in6->sin6_addr.s6_addr, out);
        return 0;
    }
    return -EAFNOSUPPORT;
}

/* ------------------------------------------------------------------------ */
/* Classes. */

/* Whether a's first prefix bits are those of net (same family). */
static bool in_net(const struct qr_dest_addr *a,
                   const uint8_t *net,
                   unsigned prefix)
{
    unsigned whole = prefix / 8, rest = prefix % 8;
    if (memcmp(a->bytes, net, whole) != 0) {
        return false;
    }
    if (rest == 0) {
        return true;
    }
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a->bytes[whole] & mask) == (net[whole] & mask);
}

struct range {
    uint8_t net[16];
    unsigned prefix;
    enum qr_dest_class cls;
};

static const struct range V4_RANGES[] = {
    {{0}, 8, QR_DEST_UNSPECIFIED},        {{127}, 8, QR_DEST_LOOPBACK},
    {{169, 254}, 16, QR_DEST_LINK_LOCAL}, {{10}, 8, QR_DEST_PRIVATE},
    {{172, 16}, 12, QR_DEST_PRIVATE},     {{192, 168}, 16, QR_DEST_PRIVATE},
    {{100, 64}, 10, QR_DEST_PRIVATE},     {{224}, 4, QR_DEST_MULTICAST},
    {{240}, 4, QR_DEST_RESERVED},
};

static const struct range V6_RANGES[] = {
    {{0}, 128, QR_DEST_UNSPECIFIED},        {{[15] = 1}, 128, QR_DEST_LOOPBACK},
    {{0xfe, 0x80}, 10, QR_DEST_LINK_LOCAL}, {{0xfc}, 7, QR_DEST_PRIVATE},
    {{0xfe, 0xc0}, 10, QR_DEST_PRIVATE},    {{0xff}, 8, QR_DEST_MULTICAST},
};

enum qr_dest_class qr_dest_classify(const struct qr_dest_addr *a)
{
    const struct range *r = a->family == AF_INET ? V4_RANGES : V6_RANGES;
    size_t n = a->family == AF_INET ? sizeof V4_RANGES / sizeof V4_RANGES[0]
                                    : sizeof V6_RANGES / sizeof V6_RANGES[0];
    for (size_t i = 0; i < n; i++) {
        if (in_net(a, r[i].net, r[i].prefix)) {
            return r[i].cls;
        }
    }
    return QR_DEST_PUBLIC;
}

const char *qr_dest_class_name(enum qr_dest_class c)
{
    switch (c) {
        case QR_DEST_PUBLIC:
            return "public";
        case QR_DEST_LOOPBACK:
            return "loopback";
        case QR_DEST_LINK_LOCAL:
            return "link-local";
        case QR_DEST_PRIVATE:
            return "private";
        case QR_DEST_MULTICAST:
            return "multicast";
        case QR_DEST_UNSPECIFIED:
            return "unspecified";
        case QR_DEST_RESERVED:
            return "reserved";
    }
    return "reserved";
}

bool qr_dest_allowed(const struct qr_dest_policy *policy,
                     const struct qr_dest_addr *a,
                     enum qr_dest_class *cls)
{
    enum qr_dest_class c = qr_dest_classify(a);
    if (cls != NULL) {
        *cls = c;
    }
    if (c == QR_DEST_PUBLIC ||
        (c == QR_DEST_LOOPBACK && policy->allow_loopback)) {
        return true;
    }
    for (size_t i = 0; i < policy->n_nets; i++) {
        const struct qr_dest_net *n = &policy->nets[i];
        if (n->addr.family == a->family &&
            in_net(a, n->addr.bytes, n->prefix)) {
            return true;
        }
    }
    return false;
}

/* ------------------------------------------------------------------------ */
/* --allow-destinations. */

/* One "ADDR[/PREFIX]" into *out. */
static int parse_net(char *item, struct qr_dest_net *out)
{
    char *slash = strchr(item, '/');
    unsigned long prefix = 0;
    if (slash != NULL) {
        char *end;
        *slash = '\0';
        if (slash[1] < '0' || slash[1] > '9') {
            return -EINVAL;
        }
        prefix = strtoul(slash + 1, &end, 10);
        if (*end != '\0' || end - (slash + 1) > 3) {
            return -EINVAL;
        }
    }
    uint8_t b[16];
    unsigned max;
    if (inet_pton(AF_INET, item, b) == 1) {
        set_v4(&out->addr, b);
        max = 32;
    } else if (inet_pton(AF_INET6, item, b) == 1) {
        canonical_v6(b, &out->addr);
        max = 128;
        if (out->addr.family == AF_INET) {
            /* ::ffff:10.0.0.0/104 is 10.0.0.0/8 */
            if (slash != NULL && prefix < 96) {
                return -EINVAL;
            }
            prefix = slash != NULL ? prefix - 96 : 32;
            max = 32;
        }
    } else {
        return -EINVAL;
    }
    if (slash == NULL) {
        prefix = max;
    }
    if (prefix > max) {
        return -EINVAL;
    }
    out->prefix = (unsigned)prefix;
    /* Host bits must be zero: "10.0.0.1/8" is a typo, not a network. */
    size_t n_bytes = max / 8;
    for (size_t i = 0; i < n_bytes; i++) {
        unsigned bit = (unsigned)i * 8;
        uint8_t keep = bit + 8 <= prefix ? 0xff
                       : bit >= prefix
                           ? 0
                           : (uint8_t)(0xff << (8 - (prefix - bit)));
        if ((out->addr.bytes[i] & (uint8_t)~keep) != 0) {
            return -EINVAL;
        }
    }
    return 0;
}

int qr_dest_parse_nets(const char *list,
                       struct qr_dest_policy *policy,
                       char *err,
                       size_t err_len)
{
    policy->n_nets = 0;
    if (strcmp(list, "none") == 0) {
        return 0;
    }
    char *copy = strdup(list);
    if (copy == NULL) {
        snprintf(err, err_len, "out of memory");
        return -EINVAL;
    }
    int rv = 0;
    char *save = NULL;
    char *item = strtok_r(copy, ",", &save);
    if (item == NULL) {
        snprintf(err, err_len, "no networks (give 'none' to open nothing)");
        rv = -EINVAL;
    }
    for (; rv == 0 && item != NULL; item = strtok_r(NULL, ",", &save)) {
        char quoted[64];
        snprintf(quoted, sizeof quoted, "%s", item);
        if (policy->n_nets == QR_DEST_MAX_NETS) {
            snprintf(err, err_len, "more than %d networks", QR_DEST_MAX_NETS);
            rv = -EINVAL;
        } else if (parse_net(item, &policy->nets[policy->n_nets]) != 0) {
            snprintf(err, err_len,
                     "'%s' is not ADDR or ADDR/PREFIX with the host bits "
                     "zero (10.0.0.0/8, fd00::/8, 192.168.1.5)",
                     quoted);
            rv = -EINVAL;
        } else {
            policy->n_nets++;
        }
    }
    free(copy);
    if (rv != 0) {
        policy->n_nets = 0;
    }
    return rv;
}

void qr_dest_addr_format(const struct qr_dest_addr *a, char *buf, size_t size)
{
    char text[INET6_ADDRSTRLEN];
    if (inet_ntop(a->family, a->bytes, text, sizeof text) == NULL) {
        snprintf(text, sizeof text, "?");
    }
    snprintf(buf, size, "%s", text);
}

void qr_dest_policy_format(const struct qr_dest_policy *policy,
                           char *buf,
                           size_t size)
{
    size_t used = 0;
    if (size == 0) {
        return;
    }
    buf[0] = '\0';
    if (policy->allow_loopback) {
        used += (size_t)snprintf(buf, size, "loopback");
    }
    for (size_t i = 0; i < policy->n_nets && used < size; i++) {
        char a[QR_DEST_ADDR_TEXT_BYTES];
        qr_dest_addr_format(&policy->nets[i].addr, a, sizeof a);
        used +=
            (size_t)snprintf(buf + used, size - used, "%s%s/%u",
                             used > 0 ? ", " : "", a, policy->nets[i].prefix);
    }
    if (used == 0) {
        snprintf(buf, size, "nothing");
    }
}
