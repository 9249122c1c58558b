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
#define PEER_MAX 320
/* TLS 1.2's forward-secret AEAD suites, as the node's (TLS 1.3's are all
 * of that kind). */
#define TLS12_CIPHERS                                            \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

struct endpoint {
    char *host;
    char *port;
};

/* A pipelined publish sent and not yet replied. lost_rc != 0 once its
 * connection is gone: the reply is then that code. */
struct pending {
    uint64_t id;
    int lost_rc;
    char key[QRAFT_KEY_MAX];
};

struct qraft_client {
    struct endpoint *eps;
    size_t n_eps;
    size_t ep_index;
    struct endpoint redirect; /* host == NULL: none */
    char *token;
    bool stale_reads;          /* Request.stale on every call */
    struct qraft_options opts; /* defaults filled in */
    int fd;                    /* -1: not connected */
    SSL_CTX *tls;              /* owned; NULL: plaintext */
    SSL *ssl;                  /* owned: fd's TLS while connected */
    char peer[PEER_MAX];       /* "host:port" of the target */
    uint64_t next_id;
    uint8_t *rbuf; /* received bytes not yet parsed: rbuf[0..rlen) */
    size_t rlen;
    size_t rcap;
    struct pending *pend;
    size_t n_pend;
    size_t cap_pend;
    uint64_t rng;
    char errmsg[QRAFT_ERRMSG_MAX];
};

/* How a call may be retried after an attempt whose outcome is unknown. */
enum retry_policy {
    RETRY_ANY,   /* repeating is harmless: reads, keyed publishes, ... */
    RETRY_UNSENT /* repeat only what surely did not take effect */
};

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

__attribute__((format(printf, 3, 4))) static int fail(struct qraft_client *c,
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

static int64_t now_ms(void)
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
    int64_t left = deadline - now_ms();
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
static int make_key(struct qraft_client *c, char key[QRAFT_KEY_MAX])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t raw[16];
    if (fill_random(raw + 6, sizeof raw - 6) != 0) {
        return fail(c, QRAFT_EINTERNAL,
                    "no randomness for an idempotency key: %s", errtext(errno));
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

static void drop_connection(struct qraft_client *c, int lost_rc)
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
static void next_endpoint(struct qraft_client *c)
{
    drop_connection(c, QRAFT_EUNKNOWN);
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
    drop_connection(c, QRAFT_EUNKNOWN);
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
        return fail(c, QRAFT_ENOMEM, "out of memory for TLS");
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
        return fail(c, QRAFT_ETLS, "TLS to %s: cannot check the name '%s'",
                    c->peer, host);
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
            return fail(c, QRAFT_ETLS,
                        "TLS handshake with %s failed: %s (does it serve "
                        "TLS, and does the CA file sign its certificate?)",
                        c->peer, why);
        }
        struct pollfd pfd = {.fd = c->fd, .events = events};
        int ready = poll(&pfd, 1, poll_timeout(limit));
        if (ready < 0 && errno != EINTR) {
            return fail(c, QRAFT_ECONNECT, "poll: %s", errtext(errno));
        }
        if (ready == 0) {
            return fail(c, QRAFT_ECONNECT, "TLS handshake with %s: timed out",
                        c->peer);
        }
    }
}

/* Connects to the current target within the connect timeout and deadline. */
static int conn_open(struct qraft_client *c, int64_t deadline)
{
    const struct endpoint *ep = target(c);
    format_peer(ep, c->peer, sizeof c->peer);
    int64_t limit = now_ms() + c->opts.connect_timeout_ms;
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
        return fail(c, QRAFT_ECONNECT, "cannot resolve %s: %s", c->peer,
                    gai_strerror(gai));
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
                drop_connection(c, QRAFT_EUNKNOWN);
                return fail(c, rc, "%s", why);
            }
        }
        return 0;
    }
    freeaddrinfo(res);
    if (err == ETIMEDOUT) {
        return fail(c, QRAFT_ECONNECT, "cannot connect to %s: timed out",
                    c->peer);
    }
    return fail(c, QRAFT_ECONNECT, "cannot connect to %s: %s", c->peer,
                errtext(err));
}

/* True when the open connection has not been closed by the peer meanwhile
 * (a node that restarted): then a request sent on it would be lost for
 * sure, and sending it elsewhere is safe for every policy. */
static bool conn_alive(struct qraft_client *c)
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
        drop_connection(c, QRAFT_EUNKNOWN);
        return false;
    }
    ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
                            errno == EINTR))) {
        return true;
    }
    drop_connection(c, QRAFT_EUNKNOWN);
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
        return fail(c, QRAFT_ECONNECT, "connection to %s closed by the peer",
                    c->peer);
    }
    char why[300];
    tls_why(NULL, why, sizeof why);
    return fail(c, QRAFT_ECONNECT, "connection to %s lost: %s", c->peer,
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
            return fail(c, QRAFT_ENOMEM, "out of memory for a response");
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
        return fail(c, QRAFT_ECONNECT, "connection to %s closed by the peer",
                    c->peer);
    }
    return fail(c, QRAFT_ECONNECT, "connection to %s lost: %s", c->peer,
                errtext(errno));
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
                return fail(
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
            return fail(c, QRAFT_ECONNECT, "connection to %s lost: %s", c->peer,
                        errtext(errno));
        }
        struct pollfd pfd = {.fd = c->fd, .events = POLLOUT | POLLIN};
        int ready = poll(&pfd, 1, poll_timeout(deadline));
        if (ready < 0 && errno != EINTR) {
            return fail(c, QRAFT_ECONNECT, "poll: %s", errtext(errno));
        }
        if (ready == 0) {
            return fail(c, QRAFT_ETIMEDOUT, "could not send to %s in time",
                        c->peer);
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
static int conn_recv(struct qraft_client *c,
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
            return fail(c, QRAFT_ETLS,
                        "%s speaks TLS: connect with TLS (a CA file: "
                        "qraft --cacert, QRAFT_CACERT)",
                        c->peer);
        }
        if (st == QR_FRAME_TOO_LARGE) {
            return fail(c, QRAFT_EPROTO,
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
                return fail(c, QRAFT_EPROTO,
                            "%s sent a response that does not parse", c->peer);
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
            return fail(c, QRAFT_ECONNECT, "poll: %s", errtext(errno));
        }
        if (ready == 0) {
            return fail(c, QRAFT_ETIMEDOUT, "no answer from %s in time",
                        c->peer);
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
static int check_size(struct qraft_client *c, Qraft__Request *req)
{
    uint64_t id = req->id;
    req->id = UINT64_MAX; /* the longest id encoding */
    size_t n = qraft__request__get_packed_size(req);
    req->id = id;
    if (n > MAX_REQUEST_BYTES) {
        return fail(c, QRAFT_ETOOLARGE,
                    "request is %zu bytes; a frame holds at most %u", n,
                    MAX_REQUEST_BYTES);
    }
    return 0;
}

/* Frames and sends req, which check_size accepted. */
static int send_request(struct qraft_client *c,
                        const Qraft__Request *req,
                        int64_t deadline)
{
    size_t n = qraft__request__get_packed_size(req);
    assert(n <= MAX_REQUEST_BYTES);
    uint8_t *buf = malloc(QR_FRAME_HEADER_BYTES + n);
    if (buf == NULL) {
        return fail(c, QRAFT_ENOMEM, "out of memory for a request");
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
        int rc = conn_recv(c, deadline, &resp);
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
            return fail(c, QRAFT_EPROTO,
                        "%s answered request %" PRIu64 " while request %" PRIu64
                        " was the latest",
                        c->peer, got, id);
        }
        /* An answer to an earlier request: skip it. */
    }
}

static int status_code(Qraft__Status status)
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
static int fail_server(struct qraft_client *c, const Qraft__Response *resp)
{
    int rc = status_code(resp->status);
    if (resp->error != NULL && resp->error[0] != '\0') {
        return fail(c, rc, "%s", resp->error);
    }
    return fail(c, rc, "%s (status %d from %s)", qraft_strerror(rc),
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
    if (now_ms() + d >= deadline) {
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
static int call(struct qraft_client *c,
                Qraft__Request *req,
                enum retry_policy policy,
                Qraft__Response **out,
                bool *ambiguous)
{
    if (c->n_pend > 0) {
        return fail(c, QRAFT_EINVAL,
                    "%zu pipelined publishes are outstanding; collect them "
                    "with qraft_publish_recv first",
                    c->n_pend);
    }
    req->token = c->token;
    req->stale = c->stale_reads; /* the server reads it on reads only */
    int rc = check_size(c, req);
    if (rc != 0) {
        return rc;
    }
    int64_t start = now_ms();
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
        if (now_ms() >= deadline ||
            (c->opts.max_attempts > 0 && attempts >= c->opts.max_attempts)) {
            break;
        }
        attempts++;
        if (c->fd < 0 || !conn_alive(c)) {
            rc = conn_open(c, deadline);
            if (rc == QRAFT_ETLS || rc == QRAFT_ENOMEM) {
                return rc; /* retrying cannot help */
            }
            if (rc != 0) {
                next_endpoint(c);
                continue;
            }
        }
        req->id = ++c->next_id;
        rc = send_request(c, req, deadline);
        if (rc == QRAFT_ENOMEM) {
            return rc;
        }
        if (rc != 0) {
            /* Not written whole: the node did not process it. */
            drop_connection(c, QRAFT_EUNKNOWN);
            continue;
        }
        int64_t attempt_deadline = deadline;
        if (c->opts.attempt_timeout_ms > 0 &&
            now_ms() + c->opts.attempt_timeout_ms < deadline) {
            attempt_deadline = now_ms() + c->opts.attempt_timeout_ms;
        }
        Qraft__Response *resp = NULL;
        rc = recv_answer(c, req->id, attempt_deadline, &resp);
        if (rc == QRAFT_EPROTO || rc == QRAFT_ENOMEM || rc == QRAFT_ETLS) {
            drop_connection(c, rc);
            return rc;
        }
        if (rc != 0) {
            drop_connection(c, QRAFT_EUNKNOWN);
            if (ambiguous != NULL) {
                *ambiguous = true;
            }
            if (policy == RETRY_UNSENT) {
                char why[QRAFT_ERRMSG_MAX];
                memcpy(why, c->errmsg, sizeof why);
                return fail(c, QRAFT_EUNKNOWN,
                            "%s after the request was sent; it may or may "
                            "not have taken effect",
                            why);
            }
            if (rc == QRAFT_ETIMEDOUT) {
                next_endpoint(c);
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
                    rc = fail(c, QRAFT_EUNAVAILABLE,
                              "%s is not the leader%s%s%s", c->peer,
                              resp->leader_rpc[0] != '\0' ? " (leader " : "",
                              resp->leader_rpc,
                              resp->leader_rpc[0] != '\0' ? ")" : "");
                } else {
                    rc = fail_server(c, resp);
                }
                if (follow_leader(c, resp->leader_rpc)) {
                    wait = ++redirects > FREE_REDIRECTS;
                } else {
                    next_endpoint(c);
                }
                qraft__response__free_unpacked(resp, NULL);
                continue;
            }
            case QRAFT__STATUS__UNKNOWN_OUTCOME:
                rc = fail_server(c, resp);
                qraft__response__free_unpacked(resp, NULL);
                if (ambiguous != NULL) {
                    *ambiguous = true;
                }
                if (policy == RETRY_UNSENT) {
                    return rc;
                }
                continue;
            default:
                rc = fail_server(c, resp);
                qraft__response__free_unpacked(resp, NULL);
                return rc;
        }
    }
    if (rc == 0) {
        rc = fail(c, QRAFT_ETIMEDOUT, "no attempt fitted in the deadline");
    }
    char why[QRAFT_ERRMSG_MAX];
    memcpy(why, c->errmsg, sizeof why);
    return fail(c, rc, "%s (gave up after %d attempts in %" PRId64 " ms)", why,
                attempts, now_ms() - start);
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
        c->rng = (uint64_t)now_ms() ^ ((uint64_t)getpid() << 32) ^ 1;
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
    drop_connection(c, QRAFT_EUNKNOWN);
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
 * Publish */

/* A PublishRequest that borrows from p, plus what it owns. */
struct publish_req {
    Qraft__PublishRequest pr;
    Qraft__RetryOptions retry_options;
    Qraft__Header *headers;
    Qraft__Header **header_ptrs;
    char key[QRAFT_KEY_MAX];
    bool generated_key;
    Qraft__Redact redact;
    char *redact_spec;   /* a copy of p->redact, cut into names */
    char **redact_names; /* into redact_spec */
};

static char *or_empty(const char *s)
{
    return (char *)(s != NULL ? s : "");
}

static void publish_req_fini(struct publish_req *r)
{
    free(r->headers);
    free(r->header_ptrs);
    free(r->redact_spec);
    free(r->redact_names);
}

/* Trims blanks around s in place. */
static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t') {
        s++;
    }
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) {
        s[--n] = '\0';
    }
    return s;
}

/* Cuts spec (Upstash-Redact-Fields syntax) into r->redact; the server
 * checks the names. */
static int parse_redact(struct qraft_client *c,
                        const char *spec,
                        struct publish_req *r)
{
    size_t n_items = 1;
    for (const char *q = spec; *q; q++) {
        n_items += *q == ',';
    }
    r->redact_spec = strdup(spec);
    r->redact_names = calloc(n_items, sizeof *r->redact_names);
    if (r->redact_spec == NULL || r->redact_names == NULL) {
        return fail(c, QRAFT_ENOMEM, "out of memory for redact");
    }
    qraft__redact__init(&r->redact);
    r->redact.headers = r->redact_names;
    char *save = NULL;
    for (char *item = strtok_r(r->redact_spec, ",", &save); item != NULL;
         item = strtok_r(NULL, ",", &save)) {
        item = trim(item);
        size_t len = strlen(item);
        size_t skip = strncasecmp(item, "header[", 7) == 0    ? 7
                      : strncasecmp(item, "headers[", 8) == 0 ? 8
                                                              : 0;
        if (len == 0) {
            continue;
        } else if (strcasecmp(item, "body") == 0) {
            r->redact.body = true;
        } else if (strcasecmp(item, "header") == 0 ||
                   strcasecmp(item, "headers") == 0) {
            r->redact.all_headers = true;
        } else if (skip != 0 && item[len - 1] == ']' && len - 1 > skip) {
            item[len - 1] = '\0';
            r->redact_names[r->redact.n_headers++] = item + skip;
        } else {
            return fail(c, QRAFT_EINVAL,
                        "redact: '%s' is not body, header or header[Name]",
                        item);
        }
    }
    return 0;
}

static int publish_req_init(struct qraft_client *c,
                            const struct qraft_publish *p,
                            struct publish_req *r)
{
    memset(r, 0, sizeof *r);
    qraft__publish_request__init(&r->pr);
    if (p == NULL || p->url == NULL || p->url[0] == '\0') {
        return fail(c, QRAFT_EINVAL, "a url is required");
    }
    if (p->body == NULL && p->body_len > 0) {
        return fail(c, QRAFT_EINVAL, "body is NULL but body_len is %zu",
                    p->body_len);
    }
    if (p->n_headers > 0 && p->headers == NULL) {
        return fail(c, QRAFT_EINVAL, "headers is NULL but n_headers is %zu",
                    p->n_headers);
    }
    for (size_t i = 0; i < p->n_headers; i++) {
        if (p->headers[i].name == NULL || p->headers[i].name[0] == '\0') {
            return fail(c, QRAFT_EINVAL, "header %zu has no name", i);
        }
    }
    if (p->idempotency_key != NULL) {
        if (strlen(p->idempotency_key) >= QRAFT_KEY_MAX) {
            return fail(c, QRAFT_EINVAL,
                        "idempotency_key is longer than %d bytes",
                        QRAFT_KEY_MAX - 1);
        }
        strcpy(r->key, p->idempotency_key);
    } else if (p->dedup_id == NULL || p->dedup_id[0] == '\0') {
        int rc = make_key(c, r->key);
        if (rc != 0) {
            return rc;
        }
        r->generated_key = true;
    }
    if (p->n_headers > 0) {
        r->headers = calloc(p->n_headers, sizeof *r->headers);
        r->header_ptrs = calloc(p->n_headers, sizeof *r->header_ptrs);
        if (r->headers == NULL || r->header_ptrs == NULL) {
            publish_req_fini(r);
            return fail(c, QRAFT_ENOMEM, "out of memory for headers");
        }
    }
    for (size_t i = 0; i < p->n_headers; i++) {
        qraft__header__init(&r->headers[i]);
        r->headers[i].name = (char *)p->headers[i].name;
        r->headers[i].value = or_empty(p->headers[i].value);
        r->header_ptrs[i] = &r->headers[i];
    }
    if (p->redact != NULL) {
        int rc = parse_redact(c, p->redact, r);
        if (rc != 0) {
            publish_req_fini(r);
            return rc;
        }
        r->pr.redact = &r->redact;
    }
    Qraft__PublishRequest *pr = &r->pr;
    pr->url = (char *)p->url;
    pr->method = or_empty(p->method);
    pr->n_headers = p->n_headers;
    pr->headers = r->header_ptrs;
    pr->body.data = (uint8_t *)p->body;
    pr->body.len = p->body_len;
    pr->delay_ms = p->delay_ms;
    pr->not_before_ms = p->not_before_ms;
    if (p->has_retries) {
        pr->retries_set = true; /* protoc-c 1.4 has no proto3 `optional` */
        pr->retries = p->retries;
    }
    pr->retry_delay = or_empty(p->retry_delay);
    pr->timeout_ms = p->timeout_ms;
    pr->dedup_id = or_empty(p->dedup_id);
    pr->content_dedup = p->content_dedup;
    pr->callback = or_empty(p->callback);
    pr->failure_callback = or_empty(p->failure_callback);
    pr->queue = or_empty(p->queue);
    pr->idempotency_key = r->key;
    const struct qraft_retry_options *o = &p->retry_options;
    if (o->strict || o->min_backoff_ms != 0 || o->max_backoff_ms != 0 ||
        o->max_doublings != 0 || o->max_retry_duration_ms != 0) {
        qraft__retry_options__init(&r->retry_options);
        r->retry_options.strict = o->strict;
        r->retry_options.min_backoff_ms = o->min_backoff_ms;
        r->retry_options.max_backoff_ms = o->max_backoff_ms;
        r->retry_options.max_doublings = o->max_doublings;
        r->retry_options.max_retry_duration_ms = o->max_retry_duration_ms;
        pr->retry_options = &r->retry_options;
    }
    return 0;
}

static int copy_id(struct qraft_client *c,
                   const Qraft__Response *resp,
                   char id[QRAFT_ID_MAX],
                   bool *deduplicated)
{
    if (resp->body_case != QRAFT__RESPONSE__BODY_PUBLISH ||
        resp->publish->message_id == NULL ||
        resp->publish->message_id[0] == '\0' ||
        strlen(resp->publish->message_id) >= QRAFT_ID_MAX) {
        return fail(c, QRAFT_EPROTO, "%s answered a publish without an id",
                    c->peer);
    }
    strcpy(id, resp->publish->message_id);
    *deduplicated = resp->publish->deduplicated;
    return 0;
}

int qraft_publish(struct qraft_client *c,
                  const struct qraft_publish *p,
                  char id[QRAFT_ID_MAX],
                  bool *deduplicated)
{
    struct publish_req r;
    int rc = publish_req_init(c, p, &r);
    if (rc != 0) {
        return rc;
    }
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_PUBLISH;
    req.publish = &r.pr;
    Qraft__Response *resp = NULL;
    bool ambiguous = false;
    rc = call(c, &req, RETRY_ANY, &resp, &ambiguous);
    if (rc != 0) {
        goto out;
    }
    bool dedup = false;
    rc = copy_id(c, resp, id, &dedup);
    if (rc == 0 && deduplicated != NULL) {
        /* Only our own earlier attempt can match a key we just drew. */
        bool own = r.generated_key && ambiguous && !p->content_dedup;
        *deduplicated = dedup && !own;
    }
    qraft__response__free_unpacked(resp, NULL);
out:
    publish_req_fini(&r);
    return rc;
}

/* ----------------------------------------------------------------------
 * Conversions to the public structs */

static char *dup_str(const char *s, bool *oom)
{
    char *d = strdup(s != NULL ? s : "");
    if (d == NULL) {
        *oom = true;
    }
    return d;
}

static enum qraft_state to_state(Qraft__MessageState s)
{
    if ((int)s < 0 || (int)s >= QRAFT_N_STATES) {
        return QRAFT_STATE_UNSPECIFIED;
    }
    return (enum qraft_state)s;
}

static void message_fini(struct qraft_message *m)
{
    free(m->id);
    free(m->url);
    free(m->method);
    for (size_t i = 0; i < m->n_headers; i++) {
        free((char *)m->headers[i].name);
        free((char *)m->headers[i].value);
    }
    free(m->headers);
    free(m->body);
    free(m->retry_delay);
    free(m->callback);
    free(m->failure_callback);
    free(m->queue);
    free(m->dedup_id);
    free(m->last_error.category);
    free(m->last_error.message);
    free(m->dlq_hint);
    for (size_t i = 0; i < m->n_events; i++) {
        free(m->events[i].detail);
    }
    free(m->events);
}

/* Fills zeroed m from pm. On failure m holds what was copied: free it with
 * message_fini. */
static int message_from_pb(const Qraft__Message *pm, struct qraft_message *m)
{
    bool oom = false;
    m->id = dup_str(pm->id, &oom);
    m->url = dup_str(pm->url, &oom);
    m->method = dup_str(pm->method, &oom);
    if (pm->n_headers > 0) {
        m->headers = calloc(pm->n_headers, sizeof *m->headers);
        if (m->headers == NULL) {
            return QRAFT_ENOMEM;
        }
        m->n_headers = pm->n_headers;
        for (size_t i = 0; i < pm->n_headers; i++) {
            m->headers[i].name = dup_str(pm->headers[i]->name, &oom);
            m->headers[i].value = dup_str(pm->headers[i]->value, &oom);
        }
    }
    m->body = malloc(pm->body.len + 1);
    if (m->body == NULL) {
        return QRAFT_ENOMEM;
    }
    if (pm->body.len > 0) {
        memcpy(m->body, pm->body.data, pm->body.len);
    }
    m->body[pm->body.len] = '\0';
    m->body_len = pm->body.len;
    m->state = to_state(pm->state);
    m->max_retries = pm->max_retries;
    m->retry_delay = dup_str(pm->retry_delay, &oom);
    m->timeout_ms = pm->timeout_ms;
    m->callback = dup_str(pm->callback, &oom);
    m->failure_callback = dup_str(pm->failure_callback, &oom);
    m->queue = dup_str(pm->queue, &oom);
    m->dedup_id = dup_str(pm->dedup_id, &oom);
    m->attempts = pm->attempts;
    m->not_before_ms = pm->not_before_ms;
    m->next_attempt_ms = pm->next_attempt_ms;
    m->created_ms = pm->created_ms;
    m->updated_ms = pm->updated_ms;
    const Qraft__LastError *le = pm->last_error;
    m->last_error.category = dup_str(le != NULL ? le->category : "", &oom);
    m->last_error.status = le != NULL ? le->status : 0;
    m->last_error.message = dup_str(le != NULL ? le->message : "", &oom);
    m->dead_lettered_ms = pm->dead_lettered_ms;
    m->dlq_hint = dup_str(pm->dlq_hint, &oom);
    return oom ? QRAFT_ENOMEM : 0;
}

static int events_from_pb(Qraft__Event *const *pe,
                          size_t n,
                          struct qraft_message *m)
{
    if (n == 0) {
        return 0;
    }
    m->events = calloc(n, sizeof *m->events);
    if (m->events == NULL) {
        return QRAFT_ENOMEM;
    }
    m->n_events = n;
    bool oom = false;
    for (size_t i = 0; i < n; i++) {
        m->events[i].time_ms = pe[i]->time_ms;
        m->events[i].state = to_state(pe[i]->state);
        m->events[i].attempt = pe[i]->attempt;
        m->events[i].detail = dup_str(pe[i]->detail, &oom);
    }
    return oom ? QRAFT_ENOMEM : 0;
}

void qraft_message_free(struct qraft_message *m)
{
    if (m == NULL) {
        return;
    }
    message_fini(m);
    free(m);
}

void qraft_message_list_free(struct qraft_message_list *l)
{
    if (l == NULL) {
        return;
    }
    for (size_t i = 0; i < l->n_messages; i++) {
        message_fini(&l->messages[i]);
    }
    free(l->messages);
    free(l->cursor);
    free(l);
}

static int list_from_pb(Qraft__Message *const *pm,
                        size_t n,
                        const char *cursor,
                        struct qraft_message_list **out)
{
    struct qraft_message_list *l = calloc(1, sizeof *l);
    if (l == NULL) {
        return QRAFT_ENOMEM;
    }
    bool oom = false;
    l->cursor = dup_str(cursor, &oom);
    if (n > 0) {
        l->messages = calloc(n, sizeof *l->messages);
        oom = oom || l->messages == NULL;
    }
    int rc = oom ? QRAFT_ENOMEM : 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        l->n_messages++;
        rc = message_from_pb(pm[i], &l->messages[i]);
    }
    if (rc != 0) {
        qraft_message_list_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

/* ----------------------------------------------------------------------
 * Reads and the other writes */

static int check_id(struct qraft_client *c, const char *id)
{
    if (id == NULL || id[0] == '\0') {
        return fail(c, QRAFT_EINVAL, "a message id is required");
    }
    return 0;
}

/* Runs req and checks that the answer has the expected body. */
static int call_expect(struct qraft_client *c,
                       Qraft__Request *req,
                       enum retry_policy policy,
                       Qraft__Response__BodyCase body,
                       Qraft__Response **out)
{
    Qraft__Response *resp = NULL;
    int rc = call(c, req, policy, &resp, NULL);
    if (rc != 0) {
        return rc;
    }
    if (resp->body_case != body) {
        qraft__response__free_unpacked(resp, NULL);
        drop_connection(c, QRAFT_EPROTO);
        return fail(c, QRAFT_EPROTO, "%s answered with the wrong body",
                    c->peer);
    }
    *out = resp;
    return 0;
}

int qraft_get(struct qraft_client *c,
              const char *id,
              struct qraft_message **out)
{
    int rc = check_id(c, id);
    if (rc != 0) {
        return rc;
    }
    Qraft__GetRequest get = QRAFT__GET_REQUEST__INIT;
    get.message_id = (char *)id;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_GET;
    req.get = &get;
    Qraft__Response *resp = NULL;
    rc = call_expect(c, &req, RETRY_ANY, QRAFT__RESPONSE__BODY_GET, &resp);
    if (rc != 0) {
        return rc;
    }
    const Qraft__GetResponse *g = resp->get;
    if (g->message == NULL) {
        qraft__response__free_unpacked(resp, NULL);
        return fail(c, QRAFT_EPROTO, "%s answered a get without a message",
                    c->peer);
    }
    struct qraft_message *m = calloc(1, sizeof *m);
    if (m == NULL) {
        rc = QRAFT_ENOMEM;
    } else {
        rc = message_from_pb(g->message, m);
    }
    if (rc == 0) {
        rc = events_from_pb(g->events, g->n_events, m);
    }
    qraft__response__free_unpacked(resp, NULL);
    if (rc != 0) {
        qraft_message_free(m);
        return fail(c, rc, "out of memory for a message");
    }
    *out = m;
    return 0;
}

int qraft_cancel(struct qraft_client *c, const char *id)
{
    int rc = check_id(c, id);
    if (rc != 0) {
        return rc;
    }
    Qraft__CancelRequest cancel = QRAFT__CANCEL_REQUEST__INIT;
    cancel.message_id = (char *)id;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_CANCEL;
    req.cancel = &cancel;
    Qraft__Response *resp = NULL;
    /* Cancelling twice leaves the message cancelled: RETRY_ANY. */
    bool ambiguous = false;
    rc = call(c, &req, RETRY_ANY, &resp, &ambiguous);
    if (rc == QRAFT_ECONFLICT && ambiguous) {
        /* The node refuses to cancel a cancelled message; a lost earlier
         * attempt of ours may have done it: look before failing. */
        char why[QRAFT_ERRMSG_MAX];
        memcpy(why, c->errmsg, sizeof why);
        struct qraft_message *m = NULL;
        bool cancelled =
            qraft_get(c, id, &m) == 0 && m->state == QRAFT_STATE_CANCELLED;
        qraft_message_free(m);
        if (cancelled) {
            return 0;
        }
        return fail(c, rc, "%s", why);
    }
    if (rc != 0) {
        return rc;
    }
    qraft__response__free_unpacked(resp, NULL);
    return 0;
}

int qraft_list(struct qraft_client *c,
               enum qraft_state state,
               const char *cursor,
               uint32_t limit,
               struct qraft_message_list **out)
{
    if ((int)state < 0 || (int)state >= QRAFT_N_STATES) {
        return fail(c, QRAFT_EINVAL, "unknown state %d", (int)state);
    }
    Qraft__ListRequest list = QRAFT__LIST_REQUEST__INIT;
    list.state = (Qraft__MessageState)state;
    list.cursor = or_empty(cursor);
    list.limit = limit;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_LIST;
    req.list = &list;
    Qraft__Response *resp = NULL;
    int rc = call_expect(c, &req, RETRY_ANY, QRAFT__RESPONSE__BODY_LIST, &resp);
    if (rc != 0) {
        return rc;
    }
    rc = list_from_pb(resp->list->messages, resp->list->n_messages,
                      resp->list->cursor, out);
    qraft__response__free_unpacked(resp, NULL);
    if (rc != 0) {
        return fail(c, rc, "out of memory for a list");
    }
    return 0;
}

int qraft_dlq_list(struct qraft_client *c,
                   const char *cursor,
                   uint32_t limit,
                   struct qraft_message_list **out)
{
    Qraft__DlqListRequest list = QRAFT__DLQ_LIST_REQUEST__INIT;
    list.cursor = or_empty(cursor);
    list.limit = limit;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_DLQ_LIST;
    req.dlq_list = &list;
    Qraft__Response *resp = NULL;
    int rc =
        call_expect(c, &req, RETRY_ANY, QRAFT__RESPONSE__BODY_DLQ_LIST, &resp);
    if (rc != 0) {
        return rc;
    }
    rc = list_from_pb(resp->dlq_list->messages, resp->dlq_list->n_messages,
                      resp->dlq_list->cursor, out);
    qraft__response__free_unpacked(resp, NULL);
    if (rc != 0) {
        return fail(c, rc, "out of memory for a list");
    }
    return 0;
}

/* Matches the server's per-item results to ids: by id, else by position. */
static void bulk_results(const Qraft__BulkResponse *bulk,
                         const char *const *ids,
                         size_t n_ids,
                         struct qraft_item_result *results)
{
    for (size_t i = 0; i < n_ids; i++) {
        const Qraft__ItemResult *r = NULL;
        for (size_t j = 0; j < bulk->n_results && r == NULL; j++) {
            if (strcmp(bulk->results[j]->message_id, ids[i]) == 0) {
                r = bulk->results[j];
            }
        }
        if (r == NULL && bulk->n_results == n_ids &&
            bulk->results[i]->message_id[0] == '\0') {
            r = bulk->results[i];
        }
        struct qraft_item_result *out = &results[i];
        if (r == NULL) {
            out->rc = QRAFT_EPROTO;
            snprintf(out->error, sizeof out->error,
                     "the server sent no result for this id");
            continue;
        }
        out->rc = status_code(r->status);
        snprintf(out->error, sizeof out->error, "%s",
                 r->error[0] != '\0' ? r->error : qraft_strerror(out->rc));
    }
}

static int bulk_call(struct qraft_client *c,
                     bool replay,
                     const char *const *ids,
                     size_t n_ids,
                     struct qraft_item_result *results)
{
    if (n_ids == 0 || ids == NULL || results == NULL) {
        return fail(c, QRAFT_EINVAL, "at least one message id is required");
    }
    for (size_t i = 0; i < n_ids; i++) {
        int rc = check_id(c, ids[i]);
        if (rc != 0) {
            return rc;
        }
    }
    Qraft__DlqReplayRequest rep = QRAFT__DLQ_REPLAY_REQUEST__INIT;
    Qraft__DlqDeleteRequest del = QRAFT__DLQ_DELETE_REQUEST__INIT;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    if (replay) {
        rep.n_message_ids = n_ids;
        rep.message_ids = (char **)ids;
        req.body_case = QRAFT__REQUEST__BODY_DLQ_REPLAY;
        req.dlq_replay = &rep;
    } else {
        del.n_message_ids = n_ids;
        del.message_ids = (char **)ids;
        req.body_case = QRAFT__REQUEST__BODY_DLQ_DELETE;
        req.dlq_delete = &del;
    }
    /* A replay repeated after the first went through could requeue a
     * message that already went round again; a delete cannot do harm. */
    Qraft__Response *resp = NULL;
    int rc = call_expect(c, &req, replay ? RETRY_UNSENT : RETRY_ANY,
                         QRAFT__RESPONSE__BODY_BULK, &resp);
    if (rc != 0) {
        return rc;
    }
    bulk_results(resp->bulk, ids, n_ids, results);
    qraft__response__free_unpacked(resp, NULL);
    return 0;
}

int qraft_dlq_replay(struct qraft_client *c,
                     const char *const *ids,
                     size_t n_ids,
                     struct qraft_item_result *results)
{
    return bulk_call(c, true, ids, n_ids, results);
}

int qraft_dlq_delete(struct qraft_client *c,
                     const char *const *ids,
                     size_t n_ids,
                     struct qraft_item_result *results)
{
    return bulk_call(c, false, ids, n_ids, results);
}

void qraft_bulk_free(struct qraft_bulk *b)
{
    if (b == NULL) {
        return;
    }
    for (size_t i = 0; i < b->n; i++) {
        free(b->ids[i]);
    }
    free(b->ids);
    free(b->results);
    free(b);
}

int qraft_dlq_replay_matching(struct qraft_client *c,
                              const struct qraft_dlq_filter *f,
                              struct qraft_bulk **out)
{
    if (f == NULL || out == NULL ||
        !(f->all || (f->url_prefix != NULL && f->url_prefix[0] != '\0') ||
          (f->category != NULL && f->category[0] != '\0') || f->since_ms != 0 ||
          f->until_ms != 0)) {
        return fail(c, QRAFT_EINVAL,
                    "a filter needs `all` or at least one field set");
    }
    Qraft__DlqReplayRequest rep = QRAFT__DLQ_REPLAY_REQUEST__INIT;
    rep.all = f->all;
    rep.url_prefix = or_empty(f->url_prefix);
    rep.category = or_empty(f->category);
    rep.since_ms = f->since_ms;
    rep.until_ms = f->until_ms;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_DLQ_REPLAY;
    req.dlq_replay = &rep;
    Qraft__Response *resp = NULL;
    int rc =
        call_expect(c, &req, RETRY_UNSENT, QRAFT__RESPONSE__BODY_BULK, &resp);
    if (rc != 0) {
        return rc;
    }
    const Qraft__BulkResponse *bulk = resp->bulk;
    struct qraft_bulk *b = calloc(1, sizeof *b);
    bool oom = b == NULL;
    if (!oom && bulk->n_results > 0) {
        b->ids = calloc(bulk->n_results, sizeof *b->ids);
        b->results = calloc(bulk->n_results, sizeof *b->results);
        oom = b->ids == NULL || b->results == NULL;
    }
    for (size_t i = 0; !oom && i < bulk->n_results; i++) {
        const Qraft__ItemResult *r = bulk->results[i];
        b->ids[i] = dup_str(r->message_id, &oom);
        b->results[i].rc = status_code(r->status);
        snprintf(
            b->results[i].error, sizeof b->results[i].error, "%s",
            r->error[0] != '\0' ? r->error : qraft_strerror(b->results[i].rc));
        b->n = i + 1;
    }
    qraft__response__free_unpacked(resp, NULL);
    if (oom) {
        qraft_bulk_free(b);
        return fail(c, QRAFT_ENOMEM, "out of memory for a bulk result");
    }
    *out = b;
    return 0;
}

int qraft_keys(struct qraft_client *c, bool rotate, struct qraft_keys *out)
{
    Qraft__KeysRequest kr = QRAFT__KEYS_REQUEST__INIT;
    kr.rotate = rotate;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_KEYS;
    req.keys = &kr;
    Qraft__Response *resp = NULL;
    /* Two rotations instead of one would lock receivers out. */
    int rc = call_expect(c, &req, rotate ? RETRY_UNSENT : RETRY_ANY,
                         QRAFT__RESPONSE__BODY_KEYS, &resp);
    if (rc != 0) {
        return rc;
    }
    snprintf(out->current, sizeof out->current, "%s", resp->keys->current);
    snprintf(out->next, sizeof out->next, "%s", resp->keys->next);
    qraft__response__free_unpacked(resp, NULL);
    return 0;
}

/* ----------------------------------------------------------------------
 * URL groups */

static int group_change(struct qraft_client *c,
                        Qraft__GroupChangeKind kind,
                        const char *group,
                        const struct qraft_endpoint *endpoints,
                        size_t n)
{
    if (group == NULL || group[0] == '\0') {
        return fail(c, QRAFT_EINVAL, "a url group name is required");
    }
    if (kind != QRAFT__GROUP_CHANGE_KIND__GROUP_DELETE &&
        (endpoints == NULL || n == 0)) {
        return fail(c, QRAFT_EINVAL, "at least one endpoint is required");
    }
    Qraft__UrlGroupEndpoint *eps = calloc(n > 0 ? n : 1, sizeof *eps);
    Qraft__UrlGroupEndpoint **ptrs = calloc(n > 0 ? n : 1, sizeof *ptrs);
    if (eps == NULL || ptrs == NULL) {
        free(eps);
        free(ptrs);
        return fail(c, QRAFT_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        qraft__url_group_endpoint__init(&eps[i]);
        eps[i].name =
            (char *)(endpoints[i].name != NULL ? endpoints[i].name : "");
        eps[i].url = (char *)(endpoints[i].url != NULL ? endpoints[i].url : "");
        ptrs[i] = &eps[i];
    }
    Qraft__GroupChangeRequest gc = QRAFT__GROUP_CHANGE_REQUEST__INIT;
    gc.kind = kind;
    gc.name = (char *)group;
    gc.n_endpoints = n;
    gc.endpoints = ptrs;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_GROUP_CHANGE;
    req.group_change = &gc;
    Qraft__Response *resp = NULL;
    /* Adding the same endpoints again changes nothing; removing or deleting
     * twice answers NOT_FOUND the second time. */
    int rc = call_expect(c, &req,
                         kind == QRAFT__GROUP_CHANGE_KIND__GROUP_ADD_ENDPOINTS
                             ? RETRY_ANY
                             : RETRY_UNSENT,
                         QRAFT__RESPONSE__BODY__NOT_SET, &resp);
    if (rc == 0) {
        qraft__response__free_unpacked(resp, NULL);
    }
    free(eps);
    free(ptrs);
    return rc;
}

int qraft_group_add(struct qraft_client *c,
                    const char *group,
                    const struct qraft_endpoint *endpoints,
                    size_t n)
{
    return group_change(c, QRAFT__GROUP_CHANGE_KIND__GROUP_ADD_ENDPOINTS, group,
                        endpoints, n);
}

int qraft_group_remove(struct qraft_client *c,
                       const char *group,
                       const struct qraft_endpoint *endpoints,
                       size_t n)
{
    return group_change(c, QRAFT__GROUP_CHANGE_KIND__GROUP_REMOVE_ENDPOINTS,
                        group, endpoints, n);
}

int qraft_group_delete(struct qraft_client *c, const char *group)
{
    return group_change(c, QRAFT__GROUP_CHANGE_KIND__GROUP_DELETE, group, NULL,
                        0);
}

void qraft_groups_free(struct qraft_group *groups, size_t n)
{
    if (groups == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < groups[i].n_endpoints; j++) {
            free(groups[i].endpoints[j].name);
            free(groups[i].endpoints[j].url);
        }
        free(groups[i].endpoints);
        free(groups[i].name);
    }
    free(groups);
}

/* Fills g (zeroed) from pg; false when out of memory (g is then freed by
 * qraft_groups_free with what it holds). */
static bool group_from_pb(const Qraft__UrlGroup *pg, struct qraft_group *g)
{
    bool oom = false;
    g->name = dup_str(pg->name, &oom);
    g->created_ms = pg->created_ms;
    g->updated_ms = pg->updated_ms;
    g->endpoints =
        calloc(pg->n_endpoints > 0 ? pg->n_endpoints : 1, sizeof *g->endpoints);
    if (g->endpoints == NULL) {
        return false;
    }
    for (size_t i = 0; i < pg->n_endpoints; i++) {
        g->endpoints[i].name = dup_str(pg->endpoints[i]->name, &oom);
        g->endpoints[i].url = dup_str(pg->endpoints[i]->url, &oom);
        g->n_endpoints++;
    }
    return !oom;
}

static int groups_from_pb(struct qraft_client *c,
                          Qraft__UrlGroup *const *pgs,
                          size_t n,
                          struct qraft_group **out)
{
    struct qraft_group *gs = calloc(n > 0 ? n : 1, sizeof *gs);
    bool ok = gs != NULL;
    for (size_t i = 0; ok && i < n; i++) {
        ok = group_from_pb(pgs[i], &gs[i]);
    }
    if (!ok) {
        qraft_groups_free(gs, n);
        return fail(c, QRAFT_ENOMEM, "out of memory for url groups");
    }
    *out = gs;
    return 0;
}

int qraft_group_get(struct qraft_client *c,
                    const char *group,
                    struct qraft_group **out)
{
    if (group == NULL || group[0] == '\0') {
        return fail(c, QRAFT_EINVAL, "a url group name is required");
    }
    Qraft__GroupGetRequest get = QRAFT__GROUP_GET_REQUEST__INIT;
    get.name = (char *)group;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_GROUP_GET;
    req.group_get = &get;
    Qraft__Response *resp = NULL;
    int rc =
        call_expect(c, &req, RETRY_ANY, QRAFT__RESPONSE__BODY_GROUP, &resp);
    if (rc != 0) {
        return rc;
    }
    rc = groups_from_pb(c, &resp->group, 1, out);
    qraft__response__free_unpacked(resp, NULL);
    return rc;
}

int qraft_group_list(struct qraft_client *c,
                     struct qraft_group **out,
                     size_t *n)
{
    Qraft__GroupListRequest list = QRAFT__GROUP_LIST_REQUEST__INIT;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_GROUP_LIST;
    req.group_list = &list;
    Qraft__Response *resp = NULL;
    int rc = call_expect(c, &req, RETRY_ANY, QRAFT__RESPONSE__BODY_GROUP_LIST,
                         &resp);
    if (rc != 0) {
        return rc;
    }
    *n = resp->group_list->n_groups;
    rc = groups_from_pb(c, resp->group_list->groups, *n, out);
    qraft__response__free_unpacked(resp, NULL);
    return rc;
}

/* A membership change: answered with no body once done. Never repeated
 * after an ambiguous failure (a second add or remove is not the first). */
static int membership_call(struct qraft_client *c, Qraft__Request *req)
{
    Qraft__Response *resp = NULL;
    int rc = call_expect(c, req, RETRY_UNSENT, QRAFT__RESPONSE__BODY__NOT_SET,
                         &resp);
    if (rc == 0) {
        qraft__response__free_unpacked(resp, NULL);
    }
    return rc;
}

int qraft_cluster_add(struct qraft_client *c,
                      uint64_t id,
                      const char *raft_addr,
                      const char *rpc_addr)
{
    if (id == 0 || raft_addr == NULL || raft_addr[0] == '\0' ||
        rpc_addr == NULL || rpc_addr[0] == '\0') {
        return fail(c, QRAFT_EINVAL,
                    "add needs a node id, its raft address and its RPC "
                    "address");
    }
    Qraft__MemberAddRequest a = QRAFT__MEMBER_ADD_REQUEST__INIT;
    a.id = id;
    a.raft_addr = (char *)raft_addr;
    a.rpc_addr = (char *)rpc_addr;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_MEMBER_ADD;
    req.member_add = &a;
    return membership_call(c, &req);
}

int qraft_cluster_remove(struct qraft_client *c, uint64_t id)
{
    if (id == 0) {
        return fail(c, QRAFT_EINVAL, "remove needs a node id");
    }
    Qraft__MemberRemoveRequest r = QRAFT__MEMBER_REMOVE_REQUEST__INIT;
    r.id = id;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_MEMBER_REMOVE;
    req.member_remove = &r;
    return membership_call(c, &req);
}

int qraft_cluster_transfer(struct qraft_client *c, uint64_t id)
{
    Qraft__TransferRequest t = QRAFT__TRANSFER_REQUEST__INIT;
    t.id = id;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_TRANSFER;
    req.transfer = &t;
    return membership_call(c, &req);
}

void qraft_status_free(struct qraft_status *s)
{
    if (s == NULL) {
        return;
    }
    free(s->state);
    free(s->leader_rpc);
    free(s->version);
    free(s->problem);
    for (size_t i = 0; i < s->n_nodes; i++) {
        free(s->nodes[i].problem);
        free(s->nodes[i].role);
        free(s->nodes[i].raft);
        free(s->nodes[i].rpc);
        free(s->nodes[i].http);
        free(s->nodes[i].version);
    }
    free(s->nodes);
    free(s);
}

static int status_from_pb(const Qraft__StatusResponse *ps,
                          struct qraft_status *s)
{
    bool oom = false;
    s->node_id = ps->node_id;
    s->state = dup_str(ps->state, &oom);
    s->leader_id = ps->leader_id;
    s->leader_rpc = dup_str(ps->leader_rpc, &oom);
    s->term = ps->term;
    s->commit_index = ps->commit_index;
    s->applied_index = ps->applied_index;
    s->last_index = ps->last_index;
    for (size_t i = 0; i < ps->n_state_counts && i < QRAFT_N_STATES; i++) {
        s->state_counts[i] = ps->state_counts[i];
    }
    s->version = dup_str(ps->version, &oom);
    s->feature_level = ps->feature_level;
    s->loop_stalls = ps->loop_stalls;
    s->loop_stall_max_ms = ps->loop_stall_max_ms;
    s->rss_bytes = ps->rss_bytes;
    s->store_used_bytes = ps->store_used_bytes;
    s->store_file_bytes = ps->store_file_bytes;
    s->problem = dup_str(ps->problem, &oom);
    if (ps->n_nodes > 0) {
        s->nodes = calloc(ps->n_nodes, sizeof *s->nodes);
        if (s->nodes == NULL) {
            return QRAFT_ENOMEM;
        }
        s->n_nodes = ps->n_nodes;
    }
    for (size_t i = 0; i < ps->n_nodes; i++) {
        const Qraft__NodeStatus *pn = ps->nodes[i];
        struct qraft_node_status *n = &s->nodes[i];
        n->id = pn->id;
        n->role = dup_str(pn->role, &oom);
        n->alive = pn->alive;
        n->applied = pn->applied;
        n->shards = pn->shards;
        n->raft = dup_str(pn->raft, &oom);
        n->rpc = dup_str(pn->rpc, &oom);
        n->http = dup_str(pn->http, &oom);
        n->version = dup_str(pn->version, &oom);
        n->feature_level = pn->feature_level;
        n->problem = dup_str(pn->problem, &oom);
    }
    return oom ? QRAFT_ENOMEM : 0;
}

int qraft_status(struct qraft_client *c, struct qraft_status **out)
{
    Qraft__StatusRequest st = QRAFT__STATUS_REQUEST__INIT;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_STATUS;
    req.status = &st;
    Qraft__Response *resp = NULL;
    int rc = call_expect(c, &req, RETRY_ANY,
                         QRAFT__RESPONSE__BODY_CLUSTER_STATUS, &resp);
    if (rc != 0) {
        return rc;
    }
    struct qraft_status *s = calloc(1, sizeof *s);
    rc = s != NULL ? status_from_pb(resp->cluster_status, s) : QRAFT_ENOMEM;
    qraft__response__free_unpacked(resp, NULL);
    if (rc != 0) {
        qraft_status_free(s);
        return fail(c, rc, "out of memory for a status");
    }
    *out = s;
    return 0;
}

/* ----------------------------------------------------------------------
 * Pipelined publishes */

size_t qraft_publish_outstanding(const struct qraft_client *c)
{
    return c->n_pend;
}

int qraft_publish_send(struct qraft_client *c,
                       const struct qraft_publish *p,
                       uint64_t *ticket)
{
    if (c->n_pend == c->cap_pend) {
        size_t cap = c->cap_pend == 0 ? 64 : c->cap_pend * 2;
        struct pending *pend = realloc(c->pend, cap * sizeof *pend);
        if (pend == NULL) {
            return fail(c, QRAFT_ENOMEM, "out of memory for a publish");
        }
        c->pend = pend;
        c->cap_pend = cap;
    }
    struct publish_req r;
    int rc = publish_req_init(c, p, &r);
    if (rc != 0) {
        return rc;
    }
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.token = c->token;
    req.body_case = QRAFT__REQUEST__BODY_PUBLISH;
    req.publish = &r.pr;
    rc = check_size(c, &req);
    if (rc != 0) {
        goto out;
    }
    int64_t deadline = now_ms() + c->opts.call_timeout_ms;
    if (c->fd < 0 || !conn_alive(c)) {
        rc = conn_open(c, deadline);
        if (rc != 0) {
            if (rc != QRAFT_ETLS) {
                next_endpoint(c);
            }
            goto out;
        }
    }
    req.id = ++c->next_id;
    rc = send_request(c, &req, deadline);
    if (rc != 0) {
        if (rc != QRAFT_ENOMEM) {
            drop_connection(c, QRAFT_EUNKNOWN);
        }
        goto out;
    }
    struct pending *pe = &c->pend[c->n_pend++];
    pe->id = req.id;
    pe->lost_rc = 0;
    memcpy(pe->key, r.key, sizeof pe->key);
    *ticket = req.id;
out:
    publish_req_fini(&r);
    return rc;
}

/* Hands out pend[i] as a reply with code rc and forgets it. */
static void reply_from(struct qraft_client *c,
                       size_t i,
                       int rc,
                       struct qraft_publish_reply *out)
{
    memset(out, 0, sizeof *out);
    out->ticket = c->pend[i].id;
    out->rc = rc;
    memcpy(out->idempotency_key, c->pend[i].key, sizeof out->idempotency_key);
    c->pend[i] = c->pend[--c->n_pend];
}

int qraft_publish_recv(struct qraft_client *c,
                       int timeout_ms,
                       struct qraft_publish_reply *out)
{
    if (c->n_pend == 0) {
        return fail(c, QRAFT_EINVAL, "no publish is outstanding");
    }
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    for (;;) {
        for (size_t i = 0; i < c->n_pend; i++) {
            if (c->pend[i].lost_rc != 0) {
                reply_from(c, i, c->pend[i].lost_rc, out);
                return 0;
            }
        }
        Qraft__Response *resp = NULL;
        int rc = conn_recv(c, deadline, &resp);
        if (rc == QRAFT_ETIMEDOUT) {
            return rc;
        }
        if (rc != 0) {
            drop_connection(c, rc == QRAFT_EPROTO ? rc : QRAFT_EUNKNOWN);
            continue;
        }
        size_t i = 0;
        while (i < c->n_pend && c->pend[i].id != resp->id) {
            i++;
        }
        if (i == c->n_pend) {
            uint64_t got = resp->id;
            qraft__response__free_unpacked(resp, NULL);
            fail(c, QRAFT_EPROTO,
                 "%s answered request %" PRIu64 ", which is not outstanding",
                 c->peer, got);
            drop_connection(c, QRAFT_EPROTO);
            continue;
        }
        if (resp->status != QRAFT__STATUS__OK) {
            reply_from(c, i, fail_server(c, resp), out);
        } else {
            char id[QRAFT_ID_MAX];
            bool dedup = false;
            rc = copy_id(c, resp, id, &dedup);
            reply_from(c, i, rc, out);
            if (rc == 0) {
                memcpy(out->id, id, sizeof out->id);
                out->deduplicated = dedup;
            }
        }
        qraft__response__free_unpacked(resp, NULL);
        return 0;
    }
}
