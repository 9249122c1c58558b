/* Destinations: which network addresses a node may deliver to (the SSRF
 * guard). An address is classified (loopback, link-local, private, ...);
 * a policy says which classes and which explicit networks are open; only
 * public addresses are open without one saying so. Pure: no I/O, no
 * allocation.
 *
 * Invariants:
 * - An IPv6 address that carries an IPv4 one (IPv4-mapped ::ffff:a.b.c.d,
 *   IPv4-compatible ::a.b.c.d, SIIT ::ffff:0:a.b.c.d, NAT64 64:ff9b::/96)
 *   is classified, and matched against networks, as that IPv4 address: no
 *   spelling of 127.0.0.1 is anything but loopback.
 * - The checks that matter run on the address a connection is made to,
 *   after name resolution (deliver/delivery.h); the check of a literal
 *   address at publish time only answers sooner. */
#ifndef QR_DEST_H
#define QR_DEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Networks --allow-destinations may open. */
#define QR_DEST_MAX_NETS 32
/* Longest text of an address, "[...]" included, or of a policy summary. */
#define QR_DEST_ADDR_TEXT_BYTES 48
#define QR_DEST_POLICY_TEXT_BYTES 512

enum qr_dest_class {
    QR_DEST_PUBLIC = 0,
    QR_DEST_LOOPBACK,    /* 127.0.0.0/8, ::1 */
    QR_DEST_LINK_LOCAL,  /* 169.254.0.0/16 (cloud metadata), fe80::/10 */
    QR_DEST_PRIVATE,     /* 10/8, 172.16/12, 192.168/16, 100.64/10 (shared
                            address space: carrier NAT, some clouds'
                            metadata), fc00::/7, fec0::/10 (site-local) */
    QR_DEST_MULTICAST,   /* 224.0.0.0/4, ff00::/8 */
    QR_DEST_UNSPECIFIED, /* 0.0.0.0/8 (Linux connects 0.0.0.0 to the host
                            itself), :: */
    QR_DEST_RESERVED,    /* 240.0.0.0/4, 255.255.255.255 included */
};

/* An address in canonical form: IPv4 (4 bytes) or IPv6 (16 bytes), IPv6
 * forms that carry an IPv4 address already turned into it. */
struct qr_dest_addr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t bytes[16];
};

struct qr_dest_net {
    struct qr_dest_addr addr; /* host bits zero */
    unsigned prefix;          /* 0..32 or 0..128 */
};

/* What a node may deliver to: public addresses always; loopback when
 * allow_loopback; and any address inside one of nets. */
struct qr_dest_policy {
    bool allow_loopback;
    struct qr_dest_net nets[QR_DEST_MAX_NETS];
    size_t n_nets;
};

/* Reads a literal address as an URL host may spell it: IPv4 in any form
 * inet_aton(3) takes (dotted quad, "127.1", decimal "2130706433", octal
 * "0177.0.0.1", hex "0x7f.1"; curl takes the same), with one trailing dot
 * allowed; IPv6 with or without brackets and with an optional zone
 * ("%eth0" or "%25eth0"). Returns 0, or -EINVAL for anything else (a host
 * name). */
int qr_dest_parse_addr(const char *text, struct qr_dest_addr *out);

/* From a socket address (AF_INET or AF_INET6, len bytes). Returns 0 or
 * -EAFNOSUPPORT. */
int qr_dest_from_sockaddr(const struct sockaddr *sa,
                          size_t len,
                          struct qr_dest_addr *out);

enum qr_dest_class qr_dest_classify(const struct qr_dest_addr *a);

/* "public", "loopback", "link-local", "private", "multicast",
 * "unspecified", "reserved". Static. */
const char *qr_dest_class_name(enum qr_dest_class c);

/* Whether policy lets a node deliver to a; *cls (may be NULL) gets its
 * class either way. */
bool qr_dest_allowed(const struct qr_dest_policy *policy,
                     const struct qr_dest_addr *a,
                     enum qr_dest_class *cls);

/* Parses --allow-destinations: "none", or a comma-separated list of
 * networks "ADDR/PREFIX" or single addresses "ADDR" (a /32 or /128), ADDR
 * strictly a dotted quad or an IPv6 address without brackets. Replaces
 * policy's nets (allow_loopback untouched). Returns 0, or -EINVAL with why
 * in err (err_len bytes) naming the entry. */
int qr_dest_parse_nets(const char *list,
                       struct qr_dest_policy *policy,
                       char *err,
                       size_t err_len);

/* a as text: "10.0.0.1" or "fe80::1". */
void qr_dest_addr_format(const struct qr_dest_addr *a, char *buf, size_t size);

/* What policy opens beyond public addresses, for a log line: "loopback,
 * 10.0.0.0/8, fd00::/8", or "nothing". Truncates to size. */
void qr_dest_policy_format(const struct qr_dest_policy *policy,
                           char *buf,
                           size_t size);

#endif /* QR_DEST_H */
