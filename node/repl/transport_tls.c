/* The raft transport over mutual TLS (transport.h, "qr_tls_transport").
 *
 * raft reads, writes and closes a uv_stream_t of its own, so each raft
 * connection is a proxy: this file connects or accepts the TCP connection,
 * runs the TLS handshake (lib/tls_stream.h) with both sides presenting a
 * certificate from the cluster CA, checks the node id the certificate is
 * bound to (lib/tls_ctx.h, "qraft:node:<id>"), exchanges raft's connect
 * preamble inside TLS, and then hands raft one end of a socketpair (a
 * uv_pipe_t allocated with raft_malloc, which raft closes and frees) and
 * shuttles bytes between the other end and the TLS stream.
 *
 * The preamble is the stock TCP transport's, little-endian: protocol
 * version (1), the sender's server id, the size of the address buffer (a
 * multiple of 8, at most PREAMBLE_MAX_ADDRESS), the address NUL-padded.
 *
 * Invariants:
 * - raft gets a stream only for a peer whose certificate verified against
 *   the CA and names the id raft expects (outgoing) or the id the peer
 *   claims in its preamble (incoming); anything else is closed, logged
 *   with the peer's address and why.
 * - A link is freed once its TCP handle, its TLS stream and its pipe end
 *   (each when opened) have closed; an outgoing link answers raft's
 *   connect request exactly once, from its free (status 0 earlier, when
 *   it handed raft the stream).
 * - An incoming connection reaches raft within twice the handshake timeout
 *   or is closed; at most MAX_HANDSHAKING incoming connections are before
 *   raft at a time; more are closed at once (a flood cannot take the
 *   fds). */
#include "repl/transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/addr.h"
#include "lib/clock.h"
#include "lib/logger.h"
#include "lib/tls_stream.h"

#define PREAMBLE_PROTOCOL 1u
#define PREAMBLE_MAX_ADDRESS 1024u
#define MAX_HANDSHAKING 64u
/* Plaintext bytes on their way to raft before the TLS side stops reading,
 * and TLS writes in flight before raft's side does (backpressure). */
#define MAX_TO_PIPE_BYTES (4u * 1024u * 1024u)
#define MAX_TO_TLS_WRITES 64u
#define CHUNK_BYTES (16u * 1024u)
/* A refused connection is logged at most this often. */
#define REFUSED_WARN_EVERY_MS 5000u

enum link_state {
    LINK_CONNECTING, /* outgoing TCP connect */
    LINK_HANDSHAKE,  /* TLS handshake (and, incoming, the preamble) */
    LINK_PROXY,      /* raft has its end */
    LINK_CLOSING,
};

struct tls_link {
    struct qr_tls_transport *t;
    LIST_ENTRY(tls_link) entry;
    enum link_state state;
    bool outgoing;
    bool counted; /* incoming, in t->n_handshaking */
    uv_tcp_t tcp;
    uv_connect_t connect;
    struct qr_tls_stream tls;
    bool tls_open;
    uv_timer_t deadline; /* incoming: handshake and preamble in time */
    bool deadline_open;
    uv_pipe_t pipe; /* our end of the socketpair */
    bool pipe_open;
    unsigned open; /* handles and streams whose close is awaited */
    struct raft_uv_connect *req; /* outgoing: raft's, until answered */
    int req_status;
    raft_id peer_id;      /* outgoing: expected; incoming: its certificate's */
    char peer_addr[64];   /* the TCP peer, for logs */
    uint8_t preamble[24]; /* incoming: protocol, id, address size */
    size_t preamble_n;
    char *address; /* incoming: the address it claims */
    size_t address_len, address_n;
    uint8_t *chunk;       /* plaintext room handed to the TLS stream */
    size_t to_pipe_bytes; /* written to our pipe end, not yet done */
    bool tls_paused;
    unsigned to_tls_writes;
    bool pipe_paused;
    uint8_t from_pipe[CHUNK_BYTES];
};

struct pipe_write {
    uv_write_t req;
    struct tls_link *link;
    size_t len;
    uint8_t data[];
};

struct tls_write {
    struct qr_tls_write req;
    struct tls_link *link;
};

static void link_close(struct tls_link *link);
static void on_pipe_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_pipe_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void maybe_closed(struct qr_tls_transport *t)
{
    if (t->closing && LIST_EMPTY(&t->links) && !t->listener_open &&
        t->close_cb != NULL) {
        raft_uv_transport_close_cb cb = t->close_cb;
        t->close_cb = NULL;
        cb(&t->outer);
    }
}

static void link_free(struct tls_link *link)
{
    struct qr_tls_transport *t = link->t;
    LIST_REMOVE(link, entry);
    if (link->counted) {
        t->n_handshaking--;
    }
    struct raft_uv_connect *req = link->req;
    int status = link->req_status;
    free(link->address);
    free(link->chunk);
    free(link);
    if (req != NULL) {
        req->cb(req, NULL, t->closing ? RAFT_CANCELED : status);
    }
    maybe_closed(t);
}

static void link_unref(struct tls_link *link)
{
    if (--link->open == 0) {
        link_free(link);
    }
}

static void on_link_handle_close(uv_handle_t *h)
{
    link_unref(h->data);
}

static void on_link_tls_close(struct qr_tls_stream *s)
{
    link_unref(s->data);
}

/* Closes everything the link opened; raft's end of an established link
 * sees EOF. */
static void link_close(struct tls_link *link)
{
    if (link->state == LINK_CLOSING) {
        return;
    }
    link->state = LINK_CLOSING;
    if (link->tls_open) {
        link->open++;
        qr_tls_stream_close(&link->tls, on_link_tls_close);
    }
    if (link->pipe_open) {
        uv_close((uv_handle_t *)&link->pipe, on_link_handle_close);
    }
    if (link->deadline_open) {
        link->open++;
        uv_close((uv_handle_t *)&link->deadline, on_link_handle_close);
    }
    uv_close((uv_handle_t *)&link->tcp, on_link_handle_close);
}

/* Logs why the link is refused (WARN: a wrong certificate or a stranger)
 * and closes it. */
static uint64_t hash_text(const char *text)
{
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (; *text != '\0'; text++) {
        h = (h ^ (uint8_t)*text) * 1099511628211ull;
    }
    return h;
}

static void link_refuse(struct tls_link *link, const char *why)
{
    struct qr_tls_transport *t = link->t;
    uint64_t now = qr_clock_mono_ms();
    uint64_t key = hash_text(why);
    t->n_refused++;
    /* raft retries every --connect-retry-ms: each cause is logged at most
     * once per REFUSED_WARN_EVERY_MS, with the count since. */
    struct qr_tls_refusal *slot = &t->refusals[0];
    for (size_t i = 0; i < QR_TLS_TRANSPORT_CAUSES; i++) {
        struct qr_tls_refusal *r = &t->refusals[i];
        if (r->key == key) {
            slot = r;
            break;
        }
        if (r->warned_mono_ms < slot->warned_mono_ms) {
            slot = r;
        }
    }
    if (slot->key != key) {
        slot->key = key;
        slot->warned_mono_ms = 0;
        slot->n_unlogged = 0;
    }
    slot->n_unlogged++;
    if (slot->warned_mono_ms == 0 ||
        now - slot->warned_mono_ms >= REFUSED_WARN_EVERY_MS) {
        QR_WARN("raft",
                "refusing the raft connection %s %s: %s (%" PRIu64
                " refused for this since the last warning)",
                link->outgoing ? "to" : "from", link->peer_addr, why,
                slot->n_unlogged);
        slot->warned_mono_ms = now;
        slot->n_unlogged = 0;
    }
    link_close(link);
}

/* link_refuse with the reason formatted (into a buffer of its own: the
 * arguments may live in the link). */
static void link_refusef(struct tls_link *link, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void link_refusef(struct tls_link *link, const char *fmt, ...)
{
    char why[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    link_refuse(link, why);
}

/* ------------------------------------------------------------------------ */
/* Shuttling: TLS plaintext → our pipe end → raft, and back. */

static void on_pipe_write(uv_write_t *req, int status)
{
    struct pipe_write *w = (struct pipe_write *)req;
    struct tls_link *link = w->link;
    link->to_pipe_bytes -= w->len;
    free(w);
    if (status != 0) {
        link_close(link);
    } else if (link->tls_paused && link->state == LINK_PROXY &&
               link->to_pipe_bytes < MAX_TO_PIPE_BYTES / 4) {
        link->tls_paused = false;
        qr_tls_stream_read_start(&link->tls);
    }
    link_unref(link);
}

/* Copies n plaintext bytes to raft's side. */
static void to_pipe(struct tls_link *link, const uint8_t *data, size_t n)
{
    if (n == 0) {
        return;
    }
    struct pipe_write *w = malloc(sizeof *w + n);
    if (w == NULL) {
        QR_ERROR("raft", "out of memory relaying to raft: closing %s",
                 link->peer_addr);
        link_close(link);
        return;
    }
    w->link = link;
    w->len = n;
    memcpy(w->data, data, n);
    uv_buf_t buf = uv_buf_init((char *)w->data, (unsigned)n);
    int rv =
        uv_write(&w->req, (uv_stream_t *)&link->pipe, &buf, 1, on_pipe_write);
    if (rv != 0) {
        free(w);
        link_close(link);
        return;
    }
    link->open++;
    link->to_pipe_bytes += n;
    if (link->to_pipe_bytes >= MAX_TO_PIPE_BYTES && !link->tls_paused) {
        link->tls_paused = true;
        qr_tls_stream_read_stop(&link->tls);
    }
}

static void on_tls_write(struct qr_tls_write *req, int status)
{
    struct tls_write *w = (struct tls_write *)req;
    struct tls_link *link = w->link;
    free(w);
    link->to_tls_writes--;
    if (status != 0) {
        link_close(link);
    } else if (link->pipe_paused && link->state == LINK_PROXY &&
               link->to_tls_writes < MAX_TO_TLS_WRITES / 4) {
        link->pipe_paused = false;
        uv_read_start((uv_stream_t *)&link->pipe, on_pipe_alloc, on_pipe_read);
    }
}

/* Encrypts n bytes to the peer (copied when the handshake is not over). */
static int to_tls(struct tls_link *link, const void *data, size_t n)
{
    struct tls_write *w = malloc(sizeof *w);
    if (w == NULL) {
        return UV_ENOMEM;
    }
    w->link = link;
    uv_buf_t buf = uv_buf_init((char *)data, (unsigned)n);
    int rv = qr_tls_stream_write(&link->tls, &w->req, &buf, 1, on_tls_write);
    if (rv != 0) {
        free(w);
        return rv;
    }
    link->to_tls_writes++;
    return 0;
}

static void on_pipe_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct tls_link *link = h->data;
    *buf = uv_buf_init((char *)link->from_pipe, sizeof link->from_pipe);
}

static void on_pipe_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct tls_link *link = s->data;
    if (nread == 0 || link->state != LINK_PROXY) {
        return;
    }
    if (nread < 0) {
        link_close(link); /* raft closed its end */
        return;
    }
    if (to_tls(link, buf->base, (size_t)nread) != 0) {
        link_close(link);
        return;
    }
    if (link->to_tls_writes >= MAX_TO_TLS_WRITES) {
        link->pipe_paused = true;
        uv_read_stop(s);
    }
}

/* Opens a socketpair: our end in link->pipe (reading raft's writes), raft's
 * end into *out (raft_malloc'd, raft closes and frees it). 0 or a UV
 * code. */
static int open_pipes(struct tls_link *link, uv_stream_t **out)
{
    uv_loop_t *loop = link->t->loop;
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
        return -errno;
    }
    uv_pipe_t *theirs = raft_malloc(sizeof *theirs);
    if (theirs == NULL) {
        close(fds[0]);
        close(fds[1]);
        return UV_ENOMEM;
    }
    uv_pipe_init(loop, &link->pipe, 0);
    link->pipe.data = link;
    link->pipe_open = true;
    link->open++;
    int rv = uv_pipe_open(&link->pipe, fds[0]);
    if (rv != 0) {
        close(fds[0]);
        close(fds[1]);
        raft_free(theirs);
        return rv;
    }
    uv_pipe_init(loop, theirs, 0);
    rv = uv_pipe_open(theirs, fds[1]);
    if (rv != 0) {
        close(fds[1]);
        uv_close((uv_handle_t *)theirs, (uv_close_cb)raft_free);
        return rv;
    }
    rv = uv_read_start((uv_stream_t *)&link->pipe, on_pipe_alloc, on_pipe_read);
    if (rv != 0) {
        uv_close((uv_handle_t *)theirs, (uv_close_cb)raft_free);
        return rv;
    }
    *out = (uv_stream_t *)theirs;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The TLS side. */

static uint8_t *on_plain_alloc(void *data, size_t *room)
{
    struct tls_link *link = data;
    if (link->chunk == NULL) {
        link->chunk = malloc(CHUNK_BYTES);
    }
    *room = link->chunk != NULL ? CHUNK_BYTES : 0;
    return link->chunk;
}

static void put64(uint8_t *p, uint64_t v)
{
    for (unsigned i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 8; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

/* Incoming: the whole preamble arrived; hands raft its end. */
static void accept_link(struct tls_link *link)
{
    struct qr_tls_transport *t = link->t;
    uint64_t claimed = get64(link->preamble + 8);
    if (claimed != link->peer_id) {
        link_refusef(link,
                     "it claims to be node %" PRIu64
                     " with the certificate of node %" PRIu64,
                     claimed, (uint64_t)link->peer_id);
        return;
    }
    uv_stream_t *stream = NULL;
    int rv = open_pipes(link, &stream);
    if (rv != 0) {
        QR_ERROR("raft", "raft connection from %s: socketpair: %s",
                 link->peer_addr, uv_strerror(rv));
        link_close(link);
        return;
    }
    link->state = LINK_PROXY;
    link->counted = false;
    t->n_handshaking--;
    uv_timer_stop(&link->deadline);
    t->accept_cb(&t->outer, claimed, link->address, stream);
}

/* Incoming: n plaintext bytes while reading the preamble; the rest goes
 * to raft once it has its end. */
static void read_preamble(struct tls_link *link, const uint8_t *p, size_t n)
{
    while (n > 0 && link->state == LINK_HANDSHAKE) {
        if (link->preamble_n < sizeof link->preamble) {
            size_t take = sizeof link->preamble - link->preamble_n;
            take = take < n ? take : n;
            memcpy(link->preamble + link->preamble_n, p, take);
            link->preamble_n += take;
            p += take;
            n -= take;
            if (link->preamble_n < sizeof link->preamble) {
                return;
            }
            uint64_t protocol = get64(link->preamble);
            uint64_t len = get64(link->preamble + 16);
            if (protocol != PREAMBLE_PROTOCOL || len == 0 || len % 8 != 0 ||
                len > PREAMBLE_MAX_ADDRESS) {
                link_refuse(link, "not a raft preamble");
                return;
            }
            link->address_len = (size_t)len;
            link->address = calloc(1, link->address_len + 1);
            if (link->address == NULL) {
                link_close(link);
                return;
            }
            continue;
        }
        size_t take = link->address_len - link->address_n;
        take = take < n ? take : n;
        memcpy(link->address + link->address_n, p, take);
        link->address_n += take;
        p += take;
        n -= take;
        if (link->address_n == link->address_len) {
            if (memchr(link->address, '\0', link->address_len) == NULL ||
                link->address[0] == '\0') {
                link_refuse(link, "not a raft preamble");
                return;
            }
            accept_link(link);
        }
    }
    if (n > 0 && link->state == LINK_PROXY) {
        to_pipe(link, p, n);
    }
}

static void on_plain_read(void *data, ssize_t nread)
{
    struct tls_link *link = data;
    if (link->state == LINK_CLOSING) {
        return;
    }
    if (nread < 0) {
        if (link->state != LINK_PROXY && nread != UV_EOF) {
            link_refusef(link, "%s",
                         link->tls.errmsg[0] != '\0' ? link->tls.errmsg
                                                     : uv_strerror((int)nread));
        } else {
            link_close(link);
        }
        return;
    }
    if (link->state == LINK_HANDSHAKE && !link->outgoing) {
        read_preamble(link, link->chunk, (size_t)nread);
        return;
    }
    if (link->state == LINK_PROXY) {
        to_pipe(link, link->chunk, (size_t)nread);
    }
}

/* The handshake finished: the certificate's node id is checked; an
 * outgoing link sends its preamble and hands raft its end. */
static void on_tls_ready(void *data)
{
    struct tls_link *link = data;
    struct qr_tls_transport *t = link->t;
    uint64_t cert_id = 0;
    if (qr_tls_peer_node_id(link->tls.ssl, &cert_id) != 0) {
        link_refuse(link,
                    "its certificate names no node id (a subjectAltName "
                    "URI " QR_TLS_NODE_URI_PREFIX "<id>)");
        return;
    }
    if (!link->outgoing) {
        link->peer_id = cert_id;
        return; /* the preamble follows */
    }
    if (cert_id != link->peer_id) {
        link_refusef(link,
                     "it presented the certificate of node %" PRIu64
                     ", not node %" PRIu64,
                     cert_id, (uint64_t)link->peer_id);
        return;
    }
    size_t addr_len = strlen(t->address) + 1;
    addr_len = (addr_len + 7) / 8 * 8;
    uint8_t *pre = calloc(1, 24 + addr_len);
    if (pre == NULL) {
        link_close(link);
        return;
    }
    put64(pre, PREAMBLE_PROTOCOL);
    put64(pre + 8, t->id);
    put64(pre + 16, addr_len);
    memcpy(pre + 24, t->address, strlen(t->address));
    int rv = to_tls(link, pre, 24 + addr_len);
    free(pre);
    uv_stream_t *stream = NULL;
    if (rv == 0) {
        rv = open_pipes(link, &stream);
    }
    if (rv != 0) {
        QR_ERROR("raft", "raft connection to %s: %s", link->peer_addr,
                 uv_strerror(rv));
        link_close(link);
        return;
    }
    link->state = LINK_PROXY;
    struct raft_uv_connect *req = link->req;
    link->req = NULL;
    req->cb(req, stream, 0);
}

static void on_tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct tls_link *link = h->data;
    qr_tls_stream_room(&link->tls, buf);
}

static void on_tcp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    struct tls_link *link = s->data;
    if (link->state == LINK_CLOSING || nread == 0) {
        return;
    }
    qr_tls_stream_feed(&link->tls, nread); /* on_plain_read */
}

/* TCP is up: starts TLS in the link's role. */
static int start_tls(struct tls_link *link, SSL_CTX *ctx)
{
    struct qr_tls_transport *t = link->t;
    uv_tcp_nodelay(&link->tcp, 1); /* raft-notes rule 4 */
    if (qr_tls_stream_init(&link->tls, t->loop, (uv_stream_t *)&link->tcp, ctx,
                           !link->outgoing, NULL, t->handshake_timeout_ms,
                           on_plain_alloc, on_plain_read, link) != 0) {
        QR_ERROR("raft", "raft connection %s %s: %s",
                 link->outgoing ? "to" : "from", link->peer_addr,
                 link->tls.errmsg);
        return -1;
    }
    link->tls_open = true;
    link->state = LINK_HANDSHAKE;
    qr_tls_stream_on_ready(&link->tls, on_tls_ready);
    qr_tls_stream_read_start(&link->tls);
    if (uv_read_start((uv_stream_t *)&link->tcp, on_tcp_alloc, on_tcp_read) !=
        0) {
        return -1;
    }
    return 0;
}

static struct tls_link *link_new(struct qr_tls_transport *t, bool outgoing)
{
    struct tls_link *link = calloc(1, sizeof *link);
    if (link == NULL) {
        return NULL;
    }
    link->t = t;
    link->outgoing = outgoing;
    link->req_status = RAFT_NOCONNECTION;
    uv_tcp_init(t->loop, &link->tcp);
    link->tcp.data = link;
    link->open = 1;
    LIST_INSERT_HEAD(&t->links, link, entry);
    return link;
}

/* ------------------------------------------------------------------------ */
/* raft's side: init, listen, connect, close. */

/* The TCP peer's address into link->peer_addr, for logs. */
static void peer_name(struct tls_link *link)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    snprintf(link->peer_addr, sizeof link->peer_addr, "?");
    if (uv_tcp_getpeername(&link->tcp, (struct sockaddr *)&ss, &len) == 0 &&
        ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        char host[INET_ADDRSTRLEN];
        uv_ip4_name(in, host, sizeof host);
        snprintf(link->peer_addr, sizeof link->peer_addr, "%s:%u", host,
                 (unsigned)ntohs(in->sin_port));
    }
}

/* An incoming link has not sent its preamble in time (the TLS stream
 * times the handshake itself; this covers the preamble after it). */
static void on_deadline(uv_timer_t *timer)
{
    struct tls_link *link = timer->data;
    if (link->state == LINK_HANDSHAKE) {
        link_refusef(link, "no raft preamble within %" PRIu64 " ms",
                     link->t->handshake_timeout_ms);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    struct qr_tls_transport *t = server->data;
    if (status != 0 || t->closing) {
        return;
    }
    struct tls_link *link = link_new(t, false);
    if (link == NULL) {
        QR_ERROR("raft", "out of memory accepting a raft connection");
        return;
    }
    link->state = LINK_HANDSHAKE;
    if (uv_accept(server, (uv_stream_t *)&link->tcp) != 0) {
        link_close(link);
        return;
    }
    peer_name(link);
    if (t->n_handshaking >= MAX_HANDSHAKING) {
        link_refuse(link, "too many raft connections before their handshake");
        return;
    }
    link->counted = true;
    t->n_handshaking++;
    uv_timer_init(t->loop, &link->deadline);
    link->deadline.data = link;
    link->deadline_open = true;
    uv_timer_start(&link->deadline, on_deadline, 2 * t->handshake_timeout_ms,
                   0);
    if (start_tls(link, t->server_ctx) != 0) {
        link_close(link);
    }
}

static int tls_init(struct raft_uv_transport *rt,
                    raft_id id,
                    const char *address)
{
    struct qr_tls_transport *t = rt->impl;
    t->id = id;
    t->address = address;
    return 0;
}

static int tls_listen(struct raft_uv_transport *rt, raft_uv_accept_cb cb)
{
    struct qr_tls_transport *t = rt->impl;
    struct sockaddr_in addr;
    const char *where = t->bind_address != NULL ? t->bind_address : t->address;
    t->accept_cb = cb;
    if (qr_addr_parse_ipv4(where, &addr) != 0) {
        t->listen_failed = true;
        snprintf(rt->errmsg, sizeof rt->errmsg,
                 "raft listen on %s: not an IPv4 HOST:PORT", where);
        return RAFT_INVALID;
    }
    uv_tcp_init(t->loop, &t->listener);
    t->listener.data = t;
    t->listener_open = true;
    int rv = uv_tcp_bind(&t->listener, (const struct sockaddr *)&addr, 0);
    if (rv == 0) {
        rv = uv_listen((uv_stream_t *)&t->listener, 511, on_connection);
    }
    if (rv != 0) {
        t->listen_failed = true;
        snprintf(rt->errmsg, sizeof rt->errmsg, "raft listen on %s: %s", where,
                 uv_strerror(rv));
        return RAFT_IOERR; /* the listener closes with the transport */
    }
    return 0;
}

static void on_connect(uv_connect_t *req, int status)
{
    struct tls_link *link = req->data;
    if (link->state == LINK_CLOSING) {
        return;
    }
    if (status != 0) {
        QR_DEBUG("raft", "raft connection to %s: %s", link->peer_addr,
                 uv_strerror(status));
        link_close(link);
        return;
    }
    if (start_tls(link, link->t->client_ctx) != 0) {
        link_close(link);
    }
}

static int tls_connect(struct raft_uv_transport *rt,
                       struct raft_uv_connect *req,
                       raft_id id,
                       const char *address,
                       raft_uv_connect_cb cb)
{
    struct qr_tls_transport *t = rt->impl;
    struct sockaddr_in addr;
    if (t->closing) {
        return RAFT_CANCELED;
    }
    if (qr_addr_parse_ipv4(address, &addr) != 0) {
        return RAFT_NOCONNECTION;
    }
    struct tls_link *link = link_new(t, true);
    if (link == NULL) {
        return RAFT_NOMEM;
    }
    req->cb = cb;
    link->req = req;
    link->peer_id = id;
    link->state = LINK_CONNECTING;
    snprintf(link->peer_addr, sizeof link->peer_addr, "%s", address);
    link->connect.data = link;
    int rv = uv_tcp_connect(&link->connect, &link->tcp,
                            (const struct sockaddr *)&addr, on_connect);
    if (rv != 0) {
        link->req = NULL; /* answered by the return value */
        link_close(link);
        return RAFT_NOCONNECTION;
    }
    return 0;
}

static void on_listener_close(uv_handle_t *h)
{
    struct qr_tls_transport *t = h->data;
    t->listener_open = false;
    maybe_closed(t);
}

static void tls_close(struct raft_uv_transport *rt,
                      raft_uv_transport_close_cb cb)
{
    struct qr_tls_transport *t = rt->impl;
    t->closing = true;
    t->close_cb = cb;
    struct tls_link *link;
    LIST_FOREACH(link, &t->links, entry)
    {
        link_close(link);
    }
    if (t->listener_open) {
        uv_close((uv_handle_t *)&t->listener, on_listener_close);
        return;
    }
    maybe_closed(t);
}

/* Both contexts from the files: 0 or -1 with err set. */
static int make_contexts(const struct qr_tls_files *files,
                         SSL_CTX **server,
                         SSL_CTX **client,
                         char *err,
                         size_t err_len)
{
    if (qr_tls_server_ctx(files, QR_TLS_CLIENT_CERT_REQUIRED, server, err,
                          err_len) != 0) {
        return -1;
    }
    if (qr_tls_client_ctx(files, client, err, err_len) != 0) {
        SSL_CTX_free(*server);
        *server = NULL;
        return -1;
    }
    return 0;
}

int qr_tls_transport_init(struct qr_tls_transport *t,
                          uv_loop_t *loop,
                          const struct qr_tls_files *files,
                          uint64_t handshake_timeout_ms,
                          char *err,
                          size_t err_len)
{
    memset(t, 0, sizeof *t);
    t->loop = loop;
    t->handshake_timeout_ms = handshake_timeout_ms;
    LIST_INIT(&t->links);
    if (make_contexts(files, &t->server_ctx, &t->client_ctx, err, err_len) !=
        0) {
        return -1;
    }
    t->outer.version = 1;
    t->outer.impl = t;
    t->outer.init = tls_init;
    t->outer.listen = tls_listen;
    t->outer.connect = tls_connect;
    t->outer.close = tls_close;
    return 0;
}

int qr_tls_transport_reload(struct qr_tls_transport *t,
                            const struct qr_tls_files *files,
                            char *err,
                            size_t err_len)
{
    SSL_CTX *server = NULL;
    SSL_CTX *client = NULL;
    if (make_contexts(files, &server, &client, err, err_len) != 0) {
        return -1;
    }
    /* Connections hold their own reference. */
    SSL_CTX_free(t->server_ctx);
    SSL_CTX_free(t->client_ctx);
    t->server_ctx = server;
    t->client_ctx = client;
    return 0;
}

void qr_tls_transport_free(struct qr_tls_transport *t)
{
    SSL_CTX_free(t->server_ctx);
    SSL_CTX_free(t->client_ctx);
    t->server_ctx = NULL;
    t->client_ctx = NULL;
}
