/* libqraft: the blocking client of the qraft RPC (API in include/qraft.h).
 *
 * A handle owns at most one TCP connection, to its current target: the
 * leader a node named in NOT_LEADER if any, else endpoints[ep_index].
 * Requests carry strictly increasing ids and a blocking call reads until the
 * answer with its id; a call retries (reconnecting, following redirects,
 * rotating endpoints, backing off) only while its deadline allows and only
 * in ways its retry policy calls safe. Any broken, timed-out or corrupt
 * connection is closed at once, so a reply never lands on a later call. */
#include "qraft.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client_internal.h"
#include "frame.h"
#include "qraft.pb-c.h"

#define DEFAULT_CONNECT_TIMEOUT_MS 2000
#define DEFAULT_CALL_TIMEOUT_MS 10000
#define DEFAULT_BACKOFF_INITIAL_MS 50
#define DEFAULT_BACKOFF_MAX_MS 250
/* Redirects to a named leader that are followed without waiting. */
#define FREE_REDIRECTS 3
/* Largest request we send: what the node accepts by default. */
#define MAX_REQUEST_BYTES QR_FRAME_DEFAULT_MAX_BYTES
/* Largest answer we accept: a list page may hold many messages. */
#define MAX_RESPONSE_BYTES (64u * 1024u * 1024u)
#define READ_CHUNK_BYTES (64u * 1024u)
/* TLS 1.2's forward-secret AEAD suites, as the node's (TLS 1.3's are all
 * of that kind). */
#define TLS12_CIPHERS                                            \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

const char *qraft_strerror(int rc)
{
    switch (rc) {
        case 0:
            return "success";
#define QRAFT_ERROR_CASE(name, value, text) \
    case name:                              \
        return text;
            QRAFT_ERRORS(QRAFT_ERROR_CASE)
#undef QRAFT_ERROR_CASE
        default:
            return "unknown error";
    }
}

static const char *const state_names[QRAFT_N_STATES] = {
    "unspecified", "pending",       "delivering", "retrying",
    "delivered",   "dead_lettered", "cancelled",  "queued",
};

const char *qraft_state_name(enum qraft_state state)
{
    if ((int)state < 0 || (int)state >= QRAFT_N_STATES) {
        return "unknown";
    }
    return state_names[state];
}

int qraft_state_parse(const char *name, enum qraft_state *out)
{
    if (name == NULL) {
        return QRAFT_EINVAL;
    }
    for (int i = 0; i < QRAFT_N_STATES; i++) {
        if (strcmp(name, state_names[i]) == 0) {
            *out = (enum qraft_state)i;
            return 0;
        }
    }
    return QRAFT_EINVAL;
}

__attribute__((format(printf, 3, 4))) int qr_client_fail(struct qraft_client *c,
                                                         int rc,
                                                         const char *fmt,
                                                         ...)
{
    char tmp[QRAFT_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    memcpy(c->errmsg, tmp, sizeof tmp);
    return rc;
}

const char *qraft_client_errmsg(const struct qraft_client *c)
{
    return c->errmsg;
}

/* strerror, safe for handles used on different threads at once. */
static const char *errtext(int err)
{
    static _Thread_local char buf[128];
    return strerror_r(err, buf, sizeof buf);
}

int64_t qr_client_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until deadline for poll(): -1 when deadline < 0 (no
 * deadline), else at least 0. */
static int poll_timeout(int64_t deadline)
{
    if (deadline < 0) {
        return -1;
    }
    int64_t left = deadline - qr_client_now_ms();
    if (left <= 0) {
        return 0;
    }
    return left > INT32_MAX ? INT32_MAX : (int)left;
}

static int fill_random(void *buf, size_t len)
{
    uint8_t *p = buf;
    size_t off = 0;
    while (off < len) {
        ssize_t n = getrandom(p + off, len - off, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        off += (size_t)n;
    }
    if (off == len) {
        return 0;
    }
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    while (off < len) {
        ssize_t n = read(fd, p + off, len - off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)n;
    }
    close(fd);
    return 0;
}

static uint64_t next_random(struct qraft_client *c)
{
    /* xorshift64*: jitter only, not a secret. */
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    return c->rng * 0x2545F4914F6CDD1DULL;
}

/* Writes a fresh key as 32 hex digits: the wall clock's milliseconds (48
 * bits), then 80 random bits. Keys drawn later sort later, so the server's
 * dedup index grows at its end like its other indexes instead of taking
 * each key into a random page of a large tree (docs/benchmarks.md, "A
 * million pending"); 80 random bits keep two keys of one millisecond
 * apart. */
int qr_client_make_key(struct qraft_client *c, char key[QRAFT_KEY_MAX])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t raw[16];
    if (fill_random(raw + 6, sizeof raw - 6) != 0) {
        return qr_client_fail(c, QRAFT_EINTERNAL,
                              "no randomness for an idempotency key: %s",
                              errtext(errno));
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    for (int i = 5; i >= 0; i--) {
        raw[i] = (uint8_t)ms;
        ms >>= 8;
    }
    for (size_t i = 0; i < sizeof raw; i++) {
        key[2 * i] = hex[raw[i] >> 4];
        key[2 * i + 1] = hex[raw[i] & 15];
    }
    key[2 * sizeof raw] = '\0';
    return 0;
}

/* ----------------------------------------------------------------------
 * Endpoints */

static void endpoint_fini(struct endpoint *ep)
{
    free(ep->host);
    free(ep->port);
    ep->host = NULL;
    ep->port = NULL;
}

/* Parses "host:port" or "[v6]:port" from s[0..len), spaces trimmed. */
static int endpoint_parse(const char *s, size_t len, struct endpoint *ep)
{
    while (len > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        len--;
    }
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t')) {
        len--;
    }
    const char *host = s;
    size_t host_len;
    const char *colon;
    if (len > 0 && s[0] == '[') {
        const char *rbracket = memchr(s, ']', len);
        if (rbracket == NULL || rbracket + 1 >= s + len || rbracket[1] != ':') {
            return QRAFT_EINVAL;
        }
        host = s + 1;
        host_len = (size_t)(rbracket - host);
        colon = rbracket + 1;
    } else {
        colon = NULL;
        for (size_t i = len; i > 0; i--) {
            if (s[i - 1] == ':') {
                colon = s + i - 1;
                break;
            }
        }
        if (colon == NULL) {
            return QRAFT_EINVAL;
        }
        host_len = (size_t)(colon - s);
    }
    const char *port = colon + 1;
    size_t port_len = (size_t)(s + len - port);
    if (host_len == 0 || port_len == 0 || port_len > 5) {
        return QRAFT_EINVAL;
    }
    unsigned long port_num = 0;
    for (size_t i = 0; i < port_len; i++) {
        if (port[i] < '0' || port[i] > '9') {
            return QRAFT_EINVAL;
        }
        port_num = port_num * 10 + (unsigned long)(port[i] - '0');
    }
    if (port_num == 0 || port_num > 65535) {
        return QRAFT_EINVAL;
    }
    ep->host = strndup(host, host_len);
    ep->port = strndup(port, port_len);
    if (ep->host == NULL || ep->port == NULL) {
        endpoint_fini(ep);
        return QRAFT_ENOMEM;
    }
    return 0;
}

static int endpoints_parse(const char *list,
                           struct endpoint **out,
                           size_t *n_out)
{
    size_t n = 1;
    for (const char *p = list; *p != '\0'; p++) {
        n += *p == ',';
    }
    struct endpoint *eps = calloc(n, sizeof *eps);
    if (eps == NULL) {
        return QRAFT_ENOMEM;
    }
    const char *s = list;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        const char *end = strchr(s, ',');
        size_t len = end != NULL ? (size_t)(end - s) : strlen(s);
        rc = endpoint_parse(s, len, &eps[i]);
        if (rc != 0) {
            goto err_after_alloc;
        }
        s += len + 1;
    }
    *out = eps;
    *n_out = n;
    return 0;

err_after_alloc:
    for (size_t i = 0; i < n; i++) {
        endpoint_fini(&eps[i]);
    }
    free(eps);
    return rc;
}

static const struct endpoint *target(const struct qraft_client *c)
{
    if (c->redirect.host != NULL) {
        return &c->redirect;
    }
    return &c->eps[c->ep_index];
}

static void format_peer(const struct endpoint *ep, char *buf, size_t size)
{
    if (strchr(ep->host, ':') != NULL) {
        snprintf(buf, size, "[%s]:%s", ep->host, ep->port);
    } else {
        snprintf(buf, size, "%s:%s", ep->host, ep->port);
    }
}

/* ----------------------------------------------------------------------
 * Connection */

void qr_client_drop_connection(struct qraft_client *c, int lost_rc)
{
    if (c->ssl != NULL) {
        (void)SSL_shutdown(c->ssl); /* close_notify, without waiting */
        SSL_free(c->ssl);
        c->ssl = NULL;
        ERR_clear_error();
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    c->rlen = 0;
    for (size_t i = 0; i < c->n_pend; i++) {
        if (c->pend[i].lost_rc == 0) {
            c->pend[i].lost_rc = lost_rc;
        }
    }
}

/* Moves on to the next target: away from a redirect, else to the next
 * endpoint of the list. */
void qr_client_next_endpoint(struct qraft_client *c)
{
    qr_client_drop_connection(c, QRAFT_EUNKNOWN);
    if (c->redirect.host != NULL) {
        endpoint_fini(&c->redirect);
        return;
    }
    c->ep_index = (c->ep_index + 1) % c->n_eps;
}

/* Points the handle at the leader a node named; returns false when that is
 * where we already are (stale news) or the address does not parse. */
static bool follow_leader(struct qraft_client *c, const char *leader_rpc)
{
    struct endpoint ep = {NULL, NULL};
    if (leader_rpc == NULL || leader_rpc[0] == '\0' ||
        endpoint_parse(leader_rpc, strlen(leader_rpc), &ep) != 0) {
        return false;
    }
    char peer[PEER_MAX];
    format_peer(&ep, peer, sizeof peer);
    if (strcmp(peer, c->peer) == 0) {
        endpoint_fini(&ep);
        return false;
    }
    qr_client_drop_connection(c, QRAFT_EUNKNOWN);
    endpoint_fini(&c->redirect);
    c->redirect = ep;
    return true;
}

/* Waits for a non-blocking connect on fd. Returns 0 or an errno. */
static int wait_connected(int fd, int64_t deadline)
{
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    for (;;) {
        int n = poll(&pfd, 1, poll_timeout(deadline));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return errno;
        }
        if (n == 0) {
            return ETIMEDOUT;
        }
        break;
    }
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
        return errno;
    }
    return err;
}

/* OpenSSL's error queue (and a failed verification) as one line. */
static void tls_why(SSL *ssl, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    long v = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (v != X509_V_OK) {
        int n = snprintf(buf, len, "certificate: %s",
                         X509_verify_cert_error_string(v));
        used = n < 0 || (size_t)n >= len ? len - 1 : (size_t)n;
    }
    unsigned long e;
    while ((e = ERR_get_error()) != 0) {
        char one[256];
        ERR_error_string_n(e, one, sizeof one);
        if (used + 1 >= len || v != X509_V_OK) {
            continue; /* the verification result says it best */
        }
        int n =
            snprintf(buf + used, len - used, "%s%s", used > 0 ? "; " : "", one);
        used = n < 0 || (size_t)n >= len - used ? len - 1 : used + (size_t)n;
    }
    if (buf[0] == '\0') {
        snprintf(buf, len, "the connection closed");
    }
}

/* Runs the TLS handshake on the connected c->fd (non-blocking) until
 * limit, checking the certificate against host. */
static int tls_handshake(struct qraft_client *c,
                         const char *host,
                         int64_t limit)
{
    ERR_clear_error();
    c->ssl = SSL_new(c->tls);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
        return qr_client_fail(c, QRAFT_ENOMEM, "out of memory for TLS");
    }
    SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
                             SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    unsigned char addr[sizeof(struct in6_addr)];
    int ok;
    if (inet_pton(AF_INET, host, addr) == 1 ||
        inet_pton(AF_INET6, host, addr) == 1) {
        /* No SNI for an address; its certificate names it as an IP SAN. */
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host);
    } else {
        ok = SSL_set_tlsext_host_name(c->ssl, host) == 1 &&
             SSL_set1_host(c->ssl, host) == 1;
    }
    if (ok != 1) {
        return qr_client_fail(c, QRAFT_ETLS,
                              "TLS to %s: cannot check the name '%s'", c->peer,
                              host);
    }
    for (;;) {
        int r = SSL_connect(c->ssl);
        if (r == 1) {
            return 0;
        }
        int e = SSL_get_error(c->ssl, r);
        short events = e == SSL_ERROR_WANT_READ    ? POLLIN
                       : e == SSL_ERROR_WANT_WRITE ? POLLOUT
                                                   : 0;
        if (events == 0) {
            char why[400];
            int err = errno;
            tls_why(c->ssl, why, sizeof why);
            if (e == SSL_ERROR_SYSCALL && err != 0 &&
                strcmp(why, "the connection closed") == 0) {
                snprintf(why, sizeof why, "%s", errtext(err));
            }
            return qr_client_fail(
                c, QRAFT_ETLS,
                "TLS handshake with %s failed: %s (does it serve "
                "TLS, and does the CA file sign its certificate?)",
                c->peer, why);
        }
        struct pollfd pfd = {.fd = c->fd, .events = events};
        int ready = poll(&pfd, 1, poll_timeout(limit));
        if (ready < 0 && errno != EINTR) {
            return qr_client_fail(c, QRAFT_ECONNECT, "poll: %s",
                                  errtext(errno));
        }
        if (ready == 0) {
            return qr_client_fail(c, QRAFT_ECONNECT,
                                  "TLS handshake with %s: timed out", c->peer);
        }
    }
}

/* Connects to the current target within the connect timeout and deadline. */
int qr_client_conn_open(struct qraft_client *c, int64_t deadline)
{
    const struct endpoint *ep = target(c);
    format_peer(ep, c->peer, sizeof c->peer);
    int64_t limit = qr_client_now_ms() + c->opts.connect_timeout_ms;
    if (deadline >= 0 && deadline < limit) {
        limit = deadline;
    }
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_NUMERICSERV,
    };
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(ep->host, ep->port, &hints, &res);
    if (gai != 0) {
        return qr_client_fail(c, QRAFT_ECONNECT, "cannot resolve %s: %s",
                              c->peer, gai_strerror(gai));
    }
    int err = ECONNREFUSED;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        int fd =
            socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                   ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        err = 0;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            err = errno == EINPROGRESS ? wait_connected(fd, limit) : errno;
        }
        if (err != 0) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        freeaddrinfo(res);
        c->fd = fd;
        c->rlen = 0;
        if (c->tls != NULL) {
            int rc = tls_handshake(c, ep->host, limit);
            if (rc != 0) {
                char why[QRAFT_ERRMSG_MAX];
                memcpy(why, c->errmsg, sizeof why);
                qr_client_drop_connection(c, QRAFT_EUNKNOWN);
                return qr_client_fail(c, rc, "%s", why);
            }
        }
        return 0;
    }
    freeaddrinfo(res);
    if (err == ETIMEDOUT) {
        return qr_client_fail(c, QRAFT_ECONNECT,
                              "cannot connect to %s: timed out", c->peer);
    }
    return qr_client_fail(c, QRAFT_ECONNECT, "cannot connect to %s: %s",
                          c->peer, errtext(err));
}

/* True when the open connection has not been closed by the peer meanwhile
 * (a node that restarted): then a request sent on it would be lost for
 * sure, and sending it elsewhere is safe for every policy. */
bool qr_client_conn_alive(struct qraft_client *c)
{
    uint8_t b;
    if (c->ssl != NULL) {
        /* A node that closed sent close_notify first: bytes to peek at on
         * the socket, but no plaintext. */
        int r = SSL_peek(c->ssl, &b, 1);
        int e = r > 0 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
        ERR_clear_error();
        if (r > 0 || e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            return true;
        }
        qr_client_drop_connection(c, QRAFT_EUNKNOWN);
        return false;
    }
    ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
                            errno == EINTR))) {
        return true;
    }
    qr_client_drop_connection(c, QRAFT_EUNKNOWN);
    return false;
}

/* read_some over TLS: what has been decrypted so far. */
static int tls_read_some(struct qraft_client *c)
{
    size_t room = c->rcap - c->rlen;
    int r = SSL_read(c->ssl, c->rbuf + c->rlen,
                     room > INT32_MAX ? INT32_MAX : (int)room);
    if (r > 0) {
        c->rlen += (size_t)r;
        return 0;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        return 0;
    }
    if (e == SSL_ERROR_ZERO_RETURN ||
        (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0)) {
        ERR_clear_error();
        return qr_client_fail(c, QRAFT_ECONNECT,
                              "connection to %s closed by the peer", c->peer);
    }
    char why[300];
    tls_why(NULL, why, sizeof why);
    return qr_client_fail(
        c, QRAFT_ECONNECT, "connection to %s lost: %s", c->peer,
        e == SSL_ERROR_SYSCALL && errno != 0 ? errtext(errno) : why);
}

/* Reads what is available into rbuf. Returns 0 (maybe nothing read) or
 * QRAFT_ECONNECT when the connection is gone. */
static int read_some(struct qraft_client *c)
{
    if (c->rcap - c->rlen < READ_CHUNK_BYTES) {
        size_t cap = c->rcap == 0 ? READ_CHUNK_BYTES * 2 : c->rcap * 2;
        uint8_t *buf = realloc(c->rbuf, cap);
        if (buf == NULL) {
            return qr_client_fail(c, QRAFT_ENOMEM,
                                  "out of memory for a response");
        }
        c->rbuf = buf;
        c->rcap = cap;
    }
    if (c->ssl != NULL) {
        return tls_read_some(c);
    }
    ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
    if (n > 0) {
        c->rlen += (size_t)n;
        return 0;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        return 0;
    }
    if (n == 0) {
        return qr_client_fail(c, QRAFT_ECONNECT,
                              "connection to %s closed by the peer", c->peer);
    }
    return qr_client_fail(c, QRAFT_ECONNECT, "connection to %s lost: %s",
                          c->peer, errtext(errno));
}

/* Writes buf whole, reading whatever arrives meanwhile so neither side can
 * block the other. On failure the caller drops the connection; a frame that
 * was not written whole is never processed by the node. */
static int conn_send(struct qraft_client *c,
                     const uint8_t *buf,
                     size_t len,
                     int64_t deadline)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n;
        if (c->ssl != NULL) {
            size_t chunk = len - off > INT32_MAX ? INT32_MAX : len - off;
            int r = SSL_write(c->ssl, buf + off, (int)chunk);
            int e = r > 0 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
            if (r <= 0 && e != SSL_ERROR_WANT_READ &&
                e != SSL_ERROR_WANT_WRITE) {
                char why[300];
                tls_why(NULL, why, sizeof why);
                return qr_client_fail(
                    c, QRAFT_ECONNECT, "connection to %s lost: %s", c->peer,
                    e == SSL_ERROR_SYSCALL && errno != 0 ? errtext(errno)
                                                         : why);
            }
            n = r > 0 ? r : -1;
            errno = r > 0 ? 0 : EAGAIN;
        } else {
            n = send(c->fd, buf + off, len - off, MSG_NOSIGNAL);
        }
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            return qr_client_fail(c, QRAFT_ECONNECT,
                                  "connection to %s lost: %s", c->peer,
                                  errtext(errno));
        }
        struct pollfd pfd = {.fd = c->fd, .events = POLLOUT | POLLIN};
        int ready = poll(&pfd, 1, poll_timeout(deadline));
        if (ready < 0 && errno != EINTR) {
            return qr_client_fail(c, QRAFT_ECONNECT, "poll: %s",
                                  errtext(errno));
        }
        if (ready == 0) {
            return qr_client_fail(c, QRAFT_ETIMEDOUT,
                                  "could not send to %s in time", c->peer);
        }
        if (ready > 0 && (pfd.revents & POLLIN) != 0) {
            int rc = read_some(c);
            if (rc != 0) {
                return rc;
            }
        }
    }
    return 0;
}

/* Reads the next whole Response. On success *out is new (free with
 * qraft__response__free_unpacked). QRAFT_ETIMEDOUT leaves the connection
 * usable; other errors mean it must be dropped. */
int qr_client_conn_recv(struct qraft_client *c,
                        int64_t deadline,
                        Qraft__Response **out)
{
    for (;;) {
        const uint8_t *payload;
        size_t payload_len;
        size_t consumed;
        enum qr_frame_status st =
            qr_frame_parse(c->rbuf, c->rlen, MAX_RESPONSE_BYTES, &payload,
                           &payload_len, &consumed);
        if (st == QR_FRAME_TOO_LARGE && c->ssl == NULL && c->rlen >= 2 &&
            (c->rbuf[0] == 0x15 || c->rbuf[0] == 0x16) && c->rbuf[1] == 3) {
            /* A TLS record (an alert, or a handshake) where a frame
             * should be: the port serves TLS. */
            return qr_client_fail(c, QRAFT_ETLS,
                                  "%s speaks TLS: connect with TLS (a CA file: "
                                  "qraft --cacert, QRAFT_CACERT)",
                                  c->peer);
        }
        if (st == QR_FRAME_TOO_LARGE) {
            return qr_client_fail(
                c, QRAFT_EPROTO,
                "%s announced a frame over %u bytes: not a qraft "
                "RPC port?",
                c->peer, MAX_RESPONSE_BYTES);
        }
        if (st == QR_FRAME_READY) {
            Qraft__Response *resp =
                qraft__response__unpack(NULL, payload_len, payload);
            memmove(c->rbuf, c->rbuf + consumed, c->rlen - consumed);
            c->rlen -= consumed;
            if (resp == NULL) {
                return qr_client_fail(c, QRAFT_EPROTO,
                                      "%s sent a response that does not parse",
                                      c->peer);
            }
            *out = resp;
            return 0;
        }
        /* Plaintext already decrypted (or records read ahead) is not
         * on the socket any more: read it without waiting. */
        int ready = 1;
        if (c->ssl == NULL || !SSL_has_pending(c->ssl)) {
            struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
            ready = poll(&pfd, 1, poll_timeout(deadline));
        }
        if (ready < 0 && errno != EINTR) {
            return qr_client_fail(c, QRAFT_ECONNECT, "poll: %s",
                                  errtext(errno));
        }
        if (ready == 0) {
            return qr_client_fail(c, QRAFT_ETIMEDOUT,
                                  "no answer from %s in time", c->peer);
        }
        if (ready > 0) {
            int rc = read_some(c);
            if (rc != 0) {
                return rc;
            }
        }
    }
}

/* Refuses a request no node would accept, before connecting anywhere. */
int qr_client_check_size(struct qraft_client *c, Qraft__Request *req)
{
    uint64_t id = req->id;
    req->id = UINT64_MAX; /* the longest id encoding */
    size_t n = qraft__request__get_packed_size(req);
    req->id = id;
    if (n > MAX_REQUEST_BYTES) {
        return qr_client_fail(c, QRAFT_ETOOLARGE,
                              "request is %zu bytes; a frame holds at most %u",
                              n, MAX_REQUEST_BYTES);
    }
    return 0;
}

/* Frames and sends req, which check_size accepted. */
int qr_client_send_request(struct qraft_client *c,
                           const Qraft__Request *req,
                           int64_t deadline)
{
    size_t n = qraft__request__get_packed_size(req);
    assert(n <= MAX_REQUEST_BYTES);
    uint8_t *buf = malloc(QR_FRAME_HEADER_BYTES + n);
    if (buf == NULL) {
        return qr_client_fail(c, QRAFT_ENOMEM, "out of memory for a request");
    }
    qr_frame_put_header(buf, (uint32_t)n);
    qraft__request__pack(req, buf + QR_FRAME_HEADER_BYTES);
    int rc = conn_send(c, buf, QR_FRAME_HEADER_BYTES + n, deadline);
    free(buf);
    return rc;
}

/* Reads until the answer to request `id`. A node that could not read a
 * request at all answers an error with id 0: that is ours too. */
static int recv_answer(struct qraft_client *c,
                       uint64_t id,
                       int64_t deadline,
                       Qraft__Response **out)
{
    for (;;) {
        Qraft__Response *resp = NULL;
        int rc = qr_client_conn_recv(c, deadline, &resp);
        if (rc != 0) {
            return rc;
        }
        if (resp->id == id || (resp->id == 0 && resp->status != 0)) {
            *out = resp;
            return 0;
        }
        uint64_t got = resp->id;
        qraft__response__free_unpacked(resp, NULL);
        if (got > id) {
            return qr_client_fail(c, QRAFT_EPROTO,
                                  "%s answered request %" PRIu64
                                  " while request %" PRIu64 " was the latest",
                                  c->peer, got, id);
        }
        /* An answer to an earlier request: skip it. */
    }
}

int qr_client_status_code(Qraft__Status status)
{
    switch (status) {
        case QRAFT__STATUS__OK:
            return 0;
        case QRAFT__STATUS__BAD_REQUEST:
            return QRAFT_EINVAL;
        case QRAFT__STATUS__UNAUTHORIZED:
            return QRAFT_EUNAUTHORIZED;
        case QRAFT__STATUS__PERMISSION_DENIED:
            return QRAFT_EFORBIDDEN;
        case QRAFT__STATUS__NOT_FOUND:
            return QRAFT_ENOTFOUND;
        case QRAFT__STATUS__NOT_LEADER:
            return QRAFT_ENOTLEADER;
        case QRAFT__STATUS__UNAVAILABLE:
            return QRAFT_EUNAVAILABLE;
        case QRAFT__STATUS__TOO_LARGE:
            return QRAFT_ETOOLARGE;
        case QRAFT__STATUS__INTERNAL:
            return QRAFT_EINTERNAL;
        case QRAFT__STATUS__CONFLICT:
            return QRAFT_ECONFLICT;
        case QRAFT__STATUS__UNKNOWN_OUTCOME:
            return QRAFT_EUNKNOWN;
        case QRAFT__STATUS__INSUFFICIENT_STORAGE:
            return QRAFT_ENOSPACE;
        default:
            return QRAFT_EPROTO;
    }
}

/* Records the server's refusal in errmsg; returns its code. */
int qr_client_fail_server(struct qraft_client *c, const Qraft__Response *resp)
{
    int rc = qr_client_status_code(resp->status);
    if (resp->error != NULL && resp->error[0] != '\0') {
        return qr_client_fail(c, rc, "%s", resp->error);
    }
    return qr_client_fail(c, rc, "%s (status %d from %s)", qraft_strerror(rc),
                          (int)resp->status, c->peer);
}

/* Sleeps the n-th backoff. Returns false, without sleeping, when the wait
 * would pass the deadline. */
static bool backoff(struct qraft_client *c, unsigned *n, int64_t deadline)
{
    int64_t d = c->opts.backoff_initial_ms;
    for (unsigned i = 0; i < *n && d < c->opts.backoff_max_ms; i++) {
        d *= 2;
    }
    if (d > c->opts.backoff_max_ms) {
        d = c->opts.backoff_max_ms;
    }
    (*n)++;
    d = d / 2 + (int64_t)(next_random(c) % (uint64_t)(d / 2 + 1));
    if (qr_client_now_ms() + d >= deadline) {
        return false;
    }
    struct timespec ts = {.tv_sec = d / 1000,
                          .tv_nsec = (long)(d % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    return true;
}

/* Sends req until an attempt is answered, following the leader and
 * retrying as `policy` allows, within the call's deadline. On success *out
 * is the OK Response (new; free with qraft__response__free_unpacked).
 * *ambiguous (may be NULL) tells whether an earlier attempt may have taken
 * effect. */
int qr_client_call(struct qraft_client *c,
                   Qraft__Request *req,
                   enum retry_policy policy,
                   Qraft__Response **out,
                   bool *ambiguous)
{
    if (c->n_pend > 0) {
        return qr_client_fail(
            c, QRAFT_EINVAL,
            "%zu pipelined publishes are outstanding; collect them "
            "with qraft_publish_recv first",
            c->n_pend);
    }
    req->token = c->token;
    req->stale = c->stale_reads; /* the server reads it on reads only */
    int rc = qr_client_check_size(c, req);
    if (rc != 0) {
        return rc;
    }
    int64_t start = qr_client_now_ms();
    int64_t deadline = start + c->opts.call_timeout_ms;
    int attempts = 0;
    int redirects = 0;
    unsigned n_backoffs = 0;
    bool wait = false;
    for (;;) {
        if (wait && !backoff(c, &n_backoffs, deadline)) {
            break;
        }
        wait = true;
        if (qr_client_now_ms() >= deadline ||
            (c->opts.max_attempts > 0 && attempts >= c->opts.max_attempts)) {
            break;
        }
        attempts++;
        if (c->fd < 0 || !qr_client_conn_alive(c)) {
            rc = qr_client_conn_open(c, deadline);
            if (rc == QRAFT_ETLS || rc == QRAFT_ENOMEM) {
                return rc; /* retrying cannot help */
            }
            if (rc != 0) {
                qr_client_next_endpoint(c);
                continue;
            }
        }
        req->id = ++c->next_id;
        rc = qr_client_send_request(c, req, deadline);
        if (rc == QRAFT_ENOMEM) {
            return rc;
        }
        if (rc != 0) {
            /* Not written whole: the node did not process it. */
            qr_client_drop_connection(c, QRAFT_EUNKNOWN);
            continue;
        }
        int64_t attempt_deadline = deadline;
        if (c->opts.attempt_timeout_ms > 0 &&
            qr_client_now_ms() + c->opts.attempt_timeout_ms < deadline) {
            attempt_deadline = qr_client_now_ms() + c->opts.attempt_timeout_ms;
        }
        Qraft__Response *resp = NULL;
        rc = recv_answer(c, req->id, attempt_deadline, &resp);
        if (rc == QRAFT_EPROTO || rc == QRAFT_ENOMEM || rc == QRAFT_ETLS) {
            qr_client_drop_connection(c, rc);
            return rc;
        }
        if (rc != 0) {
            qr_client_drop_connection(c, QRAFT_EUNKNOWN);
            if (ambiguous != NULL) {
                *ambiguous = true;
            }
            if (policy == RETRY_UNSENT) {
                char why[QRAFT_ERRMSG_MAX];
                memcpy(why, c->errmsg, sizeof why);
                return qr_client_fail(
                    c, QRAFT_EUNKNOWN,
                    "%s after the request was sent; it may or may "
                    "not have taken effect",
                    why);
            }
            if (rc == QRAFT_ETIMEDOUT) {
                qr_client_next_endpoint(c);
            }
            continue;
        }
        switch (resp->status) {
            case QRAFT__STATUS__OK:
                *out = resp;
                return 0;
            case QRAFT__STATUS__NOT_LEADER:
            case QRAFT__STATUS__UNAVAILABLE: {
                /* The node did nothing: safe to send elsewhere. */
                if (resp->status == QRAFT__STATUS__NOT_LEADER) {
                    rc = qr_client_fail(
                        c, QRAFT_EUNAVAILABLE, "%s is not the leader%s%s%s",
                        c->peer, resp->leader_rpc[0] != '\0' ? " (leader " : "",
                        resp->leader_rpc,
                        resp->leader_rpc[0] != '\0' ? ")" : "");
                } else {
                    rc = qr_client_fail_server(c, resp);
                }
                if (follow_leader(c, resp->leader_rpc)) {
                    wait = ++redirects > FREE_REDIRECTS;
                } else {
                    qr_client_next_endpoint(c);
                }
                qraft__response__free_unpacked(resp, NULL);
                continue;
            }
            case QRAFT__STATUS__UNKNOWN_OUTCOME:
                rc = qr_client_fail_server(c, resp);
                qraft__response__free_unpacked(resp, NULL);
                if (ambiguous != NULL) {
                    *ambiguous = true;
                }
                if (policy == RETRY_UNSENT) {
                    return rc;
                }
                continue;
            default:
                rc = qr_client_fail_server(c, resp);
                qraft__response__free_unpacked(resp, NULL);
                return rc;
        }
    }
    if (rc == 0) {
        rc = qr_client_fail(c, QRAFT_ETIMEDOUT,
                            "no attempt fitted in the deadline");
    }
    char why[QRAFT_ERRMSG_MAX];
    memcpy(why, c->errmsg, sizeof why);
    return qr_client_fail(c, rc,
                          "%s (gave up after %d attempts in %" PRId64 " ms)",
                          why, attempts, qr_client_now_ms() - start);
}

/* ----------------------------------------------------------------------
 * Handle */

/* A client TLS context from o's files: TLS 1.2+, AEAD ciphers, the
 * server verified. NULL when a file does not load. */
static SSL_CTX *tls_ctx(const struct qraft_options *o)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        return NULL;
    }
    bool ok = SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 &&
              SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) == 1 &&
              (o->ca_file != NULL
                   ? SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL) == 1
                   : SSL_CTX_set_default_verify_paths(ctx) == 1) &&
              (o->cert_file == NULL ||
               (SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) == 1 &&
                SSL_CTX_use_PrivateKey_file(ctx, o->key_file,
                                            SSL_FILETYPE_PEM) == 1 &&
                SSL_CTX_check_private_key(ctx) == 1));
    ERR_clear_error();
    if (!ok) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    return ctx;
}

int qraft_client_new(const char *endpoints,
                     const char *token,
                     const struct qraft_options *opts,
                     struct qraft_client **out)
{
    struct qraft_options o = {0};
    if (opts != NULL) {
        o = *opts;
    }
    if (o.connect_timeout_ms < 0 || o.call_timeout_ms < 0 ||
        o.attempt_timeout_ms < 0 || o.max_attempts < 0 ||
        o.backoff_initial_ms < 0 || o.backoff_max_ms < 0) {
        return QRAFT_EINVAL;
    }
    if (o.connect_timeout_ms == 0) {
        o.connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    }
    if (o.call_timeout_ms == 0) {
        o.call_timeout_ms = DEFAULT_CALL_TIMEOUT_MS;
    }
    if (o.backoff_initial_ms == 0) {
        o.backoff_initial_ms = DEFAULT_BACKOFF_INITIAL_MS;
    }
    if (o.backoff_max_ms == 0) {
        o.backoff_max_ms = DEFAULT_BACKOFF_MAX_MS;
    }
    if (o.backoff_max_ms < o.backoff_initial_ms) {
        o.backoff_max_ms = o.backoff_initial_ms;
    }
    if ((o.cert_file != NULL) != (o.key_file != NULL)) {
        return QRAFT_EINVAL;
    }
    struct qraft_client *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return QRAFT_ENOMEM;
    }
    c->fd = -1;
    if (o.tls || o.ca_file != NULL || o.cert_file != NULL) {
        c->tls = tls_ctx(&o);
        if (c->tls == NULL) {
            free(c);
            return QRAFT_ETLS;
        }
    }
    o.ca_file = o.cert_file = o.key_file = NULL; /* borrowed: read already */
    c->opts = o;
    int rc =
        endpoints_parse(endpoints != NULL ? endpoints : QRAFT_DEFAULT_ENDPOINTS,
                        &c->eps, &c->n_eps);
    if (rc != 0) {
        goto err_after_alloc;
    }
    c->token = strdup(token != NULL ? token : "");
    if (c->token == NULL) {
        rc = QRAFT_ENOMEM;
        goto err_after_alloc;
    }
    if (fill_random(&c->rng, sizeof c->rng) != 0 || c->rng == 0) {
        c->rng = (uint64_t)qr_client_now_ms() ^ ((uint64_t)getpid() << 32) ^ 1;
    }
    format_peer(target(c), c->peer, sizeof c->peer);
    *out = c;
    return 0;

err_after_alloc:
    qraft_client_free(c);
    return rc;
}

void qraft_client_set_stale_reads(struct qraft_client *c, bool stale)
{
    c->stale_reads = stale;
}

void qraft_client_free(struct qraft_client *c)
{
    if (c == NULL) {
        return;
    }
    qr_client_drop_connection(c, QRAFT_EUNKNOWN);
    for (size_t i = 0; i < c->n_eps; i++) {
        endpoint_fini(&c->eps[i]);
    }
    free(c->eps);
    endpoint_fini(&c->redirect);
    free(c->token);
    free(c->rbuf);
    free(c->pend);
    SSL_CTX_free(c->tls);
    free(c);
}

/* ----------------------------------------------------------------------
 * Helpers of the request files */

/* Runs req and checks that the answer has the expected body. */
int qr_client_call_expect(struct qraft_client *c,
                          Qraft__Request *req,
                          enum retry_policy policy,
                          Qraft__Response__BodyCase body,
                          Qraft__Response **out)
{
    Qraft__Response *resp = NULL;
    int rc = qr_client_call(c, req, policy, &resp, NULL);
    if (rc != 0) {
        return rc;
    }
    if (resp->body_case != body) {
        qraft__response__free_unpacked(resp, NULL);
        qr_client_drop_connection(c, QRAFT_EPROTO);
        return qr_client_fail(c, QRAFT_EPROTO,
                              "%s answered with the wrong body", c->peer);
    }
    *out = resp;
    return 0;
}

char *qr_client_dup_str(const char *s, bool *oom)
{
    char *d = strdup(s != NULL ? s : "");
    if (d == NULL) {
        *oom = true;
    }
    return d;
}

int qr_client_name_index(const char *const *names, size_t n, const char *name)
{
    for (size_t i = 1; name != NULL && i < n; i++) {
        if (strcasecmp(name, names[i]) == 0) {
            return (int)i;
        }
    }
    return -1;
}

char *qr_client_or_empty(const char *s)
{
    return (char *)(s != NULL ? s : "");
}
