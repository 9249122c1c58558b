/* The peer RPC client (see peer.h). A call moves through three FIFOs:
 * queued (packed, waiting for a connection) -> sent (written, waiting for
 * the answer with its id) -> done (ended without an answer, callback still to
 * fire). Callbacks fire from the read callback (an answer), the `kick` idle
 * handle (any other end) or, once closing, the last close callback: never
 * from inside a qr_peer_* function. */
#include "lib/peer.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "lib/addr.h"
#include "lib/dlist.h"
#include "lib/err.h"
#include "lib/framed.h"
#include "lib/logger.h"
#include "lib/tls_ctx.h"
#include "lib/tls_stream.h"

#define NO_DEADLINE UINT64_MAX

struct qr_peer_call {
    struct qr_peer_call *prev, *next;
    uint64_t id;
    uint64_t deadline_ms; /* loop time (uv_now); NO_DEADLINE: none */
    qr_peer_cb cb;
    void *data;
    uint8_t *frame; /* while queued: frame header + packed request */
    size_t frame_bytes;
    int status; /* once done */
};

/* One TCP connection; freed in its close callback. Only p->conn is live:
 * a detached connection is closing and reports nothing any more. */
struct qr_peer_conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    struct qr_peer *p;
    struct qr_framed in;      /* read buffer, cut into frames */
    struct qr_tls_stream tls; /* under the frames when p->tls */
    bool use_tls;
    unsigned open_handles; /* the TCP handle, and the TLS stream's */
    bool connected;        /* with TLS: once the handshake finished */
    bool closing;
};

/* One write of every frame queued at flush time; owns the frames. */
struct peer_write {
    uv_write_t req;
    struct qr_tls_write tls_req;
    struct qr_peer_conn *conn;
    struct qr_peer *p;
    size_t n_bytes;
    size_t n_bufs;
    uv_buf_t bufs[];
};

static void start_connect(struct qr_peer *p);
static void on_kick(uv_idle_t *idle);

/* ------------------------------------------------------------------------ */
/* Call lists. */

static void list_push(struct qr_peer_list *l, struct qr_peer_call *c)
{
    QR_DLIST_APPEND(l->head, l->tail, c, prev, next);
    l->n++;
}

static void list_remove(struct qr_peer_list *l, struct qr_peer_call *c)
{
    QR_DLIST_UNLINK_TAIL(l->head, l->tail, c, prev, next);
    l->n--;
}

static struct qr_peer_call *list_pop(struct qr_peer_list *l)
{
    struct qr_peer_call *c = l->head;
    if (c != NULL) {
        list_remove(l, c);
    }
    return c;
}

static void kick(struct qr_peer *p)
{
    if (!p->closing && !uv_is_active((uv_handle_t *)&p->kick)) {
        uv_idle_start(&p->kick, on_kick);
    }
}

/* Ends call c (on list l) with status; its callback fires from on_kick. */
static void finish(struct qr_peer *p,
                   struct qr_peer_list *l,
                   struct qr_peer_call *c,
                   int status)
{
    list_remove(l, c);
    if (c->frame != NULL) {
        p->queued_bytes -= c->frame_bytes;
        free(c->frame);
        c->frame = NULL;
    }
    c->status = status;
    list_push(&p->done, c);
    kick(p);
}

static void finish_all(struct qr_peer *p, struct qr_peer_list *l, int status)
{
    while (l->head != NULL) {
        finish(p, l, l->head, status);
    }
}

static void fire_done(struct qr_peer *p)
{
    struct qr_peer_call *c;
    while ((c = list_pop(&p->done)) != NULL) {
        qr_peer_cb cb = c->cb;
        void *data = c->data;
        int status = c->status;
        free(c);
        cb(data, status, NULL);
    }
}

/* ------------------------------------------------------------------------ */
/* Deadlines: one timer, armed for the earliest deadline it knows of. A call
 * that ends earlier leaves the timer armed; it then fires, finds nothing
 * due, and re-arms for the earliest remaining deadline. */

static void on_deadline(uv_timer_t *t);

static void arm_deadline(struct qr_peer *p, uint64_t deadline_ms)
{
    if (deadline_ms == NO_DEADLINE) {
        return;
    }
    if (uv_is_active((uv_handle_t *)&p->deadline_timer) &&
        p->deadline_armed_ms <= deadline_ms) {
        return;
    }
    uint64_t now = uv_now(p->loop);
    uv_timer_start(&p->deadline_timer, on_deadline,
                   deadline_ms > now ? deadline_ms - now : 0, 0);
    p->deadline_armed_ms = deadline_ms;
}

/* Ends the calls of l due at now with status; returns the earliest
 * deadline left. */
static uint64_t expire(struct qr_peer *p,
                       struct qr_peer_list *l,
                       uint64_t now,
                       int status)
{
    uint64_t earliest = NO_DEADLINE;
    struct qr_peer_call *next;
    for (struct qr_peer_call *c = l->head; c != NULL; c = next) {
        next = c->next;
        if (c->deadline_ms <= now) {
            finish(p, l, c, status);
        } else if (c->deadline_ms < earliest) {
            earliest = c->deadline_ms;
        }
    }
    return earliest;
}

static void on_deadline(uv_timer_t *t)
{
    struct qr_peer *p = t->data;
    uint64_t now = uv_now(p->loop);
    /* Never written: certainly not handled. */
    uint64_t a = expire(p, &p->queued, now, QR_ENOTSENT);
    uint64_t b = expire(p, &p->sent, now, QR_ETIMEOUT);
    arm_deadline(p, a < b ? a : b);
}

/* ------------------------------------------------------------------------ */
/* Connections. */

/* One handle of a closing peer is closed; after the last one, the calls
 * that ended fire and then the close callback. */
static void close_step(struct qr_peer *p)
{
    if (--p->pending_closes > 0) {
        return;
    }
    fire_done(p);
    if (p->close_cb != NULL) {
        p->close_cb(p);
    }
}

static void conn_handle_closed(struct qr_peer_conn *conn)
{
    struct qr_peer *p = conn->p;
    if (--conn->open_handles > 0) {
        return;
    }
    qr_framed_free(&conn->in);
    free(conn);
    p->n_conns--;
    if (p->closing) {
        close_step(p);
    }
}

static void on_conn_close(uv_handle_t *h)
{
    conn_handle_closed(h->data);
}

static void on_tls_close(struct qr_tls_stream *t)
{
    conn_handle_closed(t->data);
}

/* Closes the current connection, if any; nothing is reported about it any
 * more (its pending write callbacks see UV_ECANCELED). */
static void conn_detach(struct qr_peer *p)
{
    struct qr_peer_conn *conn = p->conn;
    uv_timer_stop(&p->conn_timer);
    if (conn == NULL) {
        return;
    }
    p->conn = NULL;
    conn->closing = true;
    if (conn->use_tls) {
        qr_tls_stream_close(&conn->tls, on_tls_close);
    }
    uv_close((uv_handle_t *)&conn->tcp, on_conn_close);
}

static void on_conn_timer(uv_timer_t *t);

static void schedule_reconnect(struct qr_peer *p)
{
    if (p->closing || p->target[0] == '\0') {
        return;
    }
    uv_timer_start(&p->conn_timer, on_conn_timer, p->backoff_ms, 0);
    p->backoff_ms *= 2;
    if (p->backoff_ms > p->limits.backoff_max_ms) {
        p->backoff_ms = p->limits.backoff_max_ms;
    }
}

/* The connection is gone: calls written on it end with status; when it was
 * only being attempted, the calls waiting for it end with QR_ENOTSENT. */
static void conn_lost(struct qr_peer *p, int status, bool attempt_failed)
{
    conn_detach(p);
    finish_all(p, &p->sent, status);
    if (attempt_failed) {
        finish_all(p, &p->queued, QR_ENOTSENT);
    }
    schedule_reconnect(p);
    if (p->on_down != NULL) {
        p->on_down(p->on_down_data);
    }
}

static void written(struct peer_write *w, int status)
{
    struct qr_peer *p = w->p;
    struct qr_peer_conn *conn = w->conn;
    p->queued_bytes -= w->n_bytes;
    for (size_t i = 0; i < w->n_bufs; i++) {
        free(w->bufs[i].base);
    }
    free(w);
    if (status != 0 && !conn->closing) {
        QR_DEBUG("peer", "write to %s: %s", p->target, uv_strerror(status));
        conn_lost(p, QR_EUNAVAIL, false);
    }
}

static void on_write(uv_write_t *req, int status)
{
    written((struct peer_write *)req, status);
}

static void on_tls_write(struct qr_tls_write *req, int status)
{
    written((struct peer_write *)((char *)req -
                                  offsetof(struct peer_write, tls_req)),
            status);
}

/* Writes every queued call in one write; they become `sent`. */
static void flush(struct qr_peer *p)
{
    struct qr_peer_conn *conn = p->conn;
    if (conn == NULL || !conn->connected || p->queued.n == 0) {
        return;
    }
    size_t n = p->queued.n;
    struct peer_write *w = malloc(sizeof *w + n * sizeof w->bufs[0]);
    if (w == NULL) {
        QR_ERROR("peer", "out of memory writing %zu request(s)", n);
        finish_all(p, &p->queued, QR_ENOTSENT);
        return;
    }
    w->p = p;
    w->conn = conn;
    w->n_bufs = n;
    w->n_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        struct qr_peer_call *c = list_pop(&p->queued);
        w->bufs[i] = uv_buf_init((char *)c->frame, (unsigned)c->frame_bytes);
        w->n_bytes += c->frame_bytes;
        c->frame = NULL;
        list_push(&p->sent, c);
    }
    int rv = conn->use_tls
                 ? qr_tls_stream_write(&conn->tls, &w->tls_req, w->bufs,
                                       (unsigned)n, on_tls_write)
                 : uv_write(&w->req, (uv_stream_t *)&conn->tcp, w->bufs,
                            (unsigned)n, on_write);
    if (rv != 0) {
        QR_DEBUG("peer", "write to %s: %s", p->target, uv_strerror(rv));
        p->queued_bytes -= w->n_bytes;
        for (size_t i = 0; i < n; i++) {
            free(w->bufs[i].base);
        }
        free(w);
        conn_lost(p, QR_EUNAVAIL, false);
    }
}

static void on_kick(uv_idle_t *idle)
{
    struct qr_peer *p = idle->data;
    fire_done(p);
    flush(p);
    if (p->done.n == 0 && (p->queued.n == 0 || !qr_peer_connected(p))) {
        uv_idle_stop(&p->kick);
    }
}

/* ------------------------------------------------------------------------ */
/* Reading answers. */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct qr_peer_conn *conn = h->data;
    (void)suggested;
    qr_framed_alloc(&conn->in, conn->use_tls ? &conn->tls : NULL, buf);
}

/* Hands one answer to its call. Anything but an answer to a call this peer
 * issued is a protocol error, except an answer to a call that already ended
 * (timed out): that one is dropped. */
static void handle_answer(void *arg, const uint8_t *payload, size_t len)
{
    struct qr_peer *p = arg;
    Qraft__Response *resp = qraft__response__unpack(NULL, len, payload);
    if (resp == NULL) {
        QR_WARN("peer", "%s sent an answer that does not decode (%zu bytes)",
                p->target, len);
        conn_lost(p, QR_EPROTO, false);
        return;
    }
    struct qr_peer_call *c = NULL;
    bool bad = false;
    if (resp->id == 0) {
        /* The server could not decode a request: it answers with id 0. */
        bad = resp->status == QRAFT__STATUS__OK;
        c = p->sent.head;
    } else if (resp->id > p->last_id) {
        bad = true;
    } else {
        /* Answers mostly come in call order: the search ends early. */
        c = p->sent.head;
        while (c != NULL && c->id != resp->id) {
            c = c->next;
        }
    }
    if (bad) {
        QR_WARN("peer", "%s answered id %" PRIu64 " (status %d), not a call",
                p->target, resp->id, (int)resp->status);
        qraft__response__free_unpacked(resp, NULL);
        conn_lost(p, QR_EPROTO, false);
        return;
    }
    if (c == NULL) {
        QR_DEBUG("peer", "%s answered id %" PRIu64 " after it ended", p->target,
                 resp->id);
        qraft__response__free_unpacked(resp, NULL);
        return;
    }
    list_remove(&p->sent, c);
    p->backoff_ms = p->limits.backoff_min_ms;
    qr_peer_cb cb = c->cb;
    void *data = c->data;
    free(c);
    cb(data, 0, resp);
    qraft__response__free_unpacked(resp, NULL);
}

static void connect_failed(struct qr_peer *p, const char *why);

/* nread bytes of plaintext were read into conn->in (or the stream ended:
 * nread < 0). */
static void got_bytes(struct qr_peer_conn *conn, ssize_t nread)
{
    struct qr_peer *p = conn->p;
    if (nread == 0 || conn->closing) {
        return;
    }
    if (nread < 0 && conn->use_tls && !conn->connected) {
        /* The handshake failed: nothing was written, as with a connect
         * that failed. */
        char why[300];
        snprintf(why, sizeof why, "TLS: %s", conn->tls.errmsg);
        connect_failed(p, why);
        return;
    }
    if (nread < 0) {
        if (nread == UV_ENOBUFS) {
            QR_ERROR("peer", "out of memory reading from %s", p->target);
        } else if (nread != UV_EOF) {
            QR_DEBUG("peer", "read from %s: %s", p->target,
                     uv_strerror((int)nread));
        }
        conn_lost(p, QR_EUNAVAIL, false);
        return;
    }
    qr_framed_filled(&conn->in, (size_t)nread);
    /* A callback may switch the target or close the peer: conn->closing. */
    if (qr_framed_drain(&conn->in, &conn->closing, handle_answer, p) ==
        QR_FRAME_TOO_LARGE) {
        QR_WARN("peer", "%s announced a frame over %zu bytes", p->target,
                p->limits.max_frame_bytes);
        conn_lost(p, QR_EPROTO, false);
    }
    if (conn->closing) {
        return; /* the buffer goes with the connection */
    }
    /* Gives back what a large answer needed once it has been handled. */
    qr_framed_compact(&conn->in);
}

static uint8_t *on_plain_alloc(void *data, size_t *room)
{
    struct qr_peer_conn *conn = data;
    return qr_framed_room(&conn->in, room);
}

static void on_plain_read(void *data, ssize_t nread)
{
    got_bytes(data, nread);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct qr_peer_conn *conn = s->data;
    (void)buf;
    if (conn->closing) {
        return;
    }
    if (conn->use_tls) {
        qr_tls_stream_feed(&conn->tls, nread); /* on_plain_read */
    } else {
        got_bytes(conn, nread);
    }
}

/* ------------------------------------------------------------------------ */
/* Connecting. */

/* A connect attempt failed: the calls waiting for it end, and the first
 * failure after a success is worth a warning (later ones repeat it). */
static void connect_failed(struct qr_peer *p, const char *why)
{
    if (!p->unreachable) {
        QR_WARN("peer", "cannot connect to %s: %s; retrying", p->target, why);
        p->unreachable = true;
    } else {
        QR_DEBUG("peer", "connect to %s: %s", p->target, why);
    }
    conn_lost(p, QR_EUNAVAIL, true);
}

static void connected(struct qr_peer_conn *conn);

static void on_tls_ready(void *data)
{
    connected(data);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct qr_peer_conn *conn = req->data;
    struct qr_peer *p = conn->p;
    if (conn->closing) {
        return; /* detached while connecting */
    }
    if (status != 0) {
        connect_failed(p, uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&conn->tcp, 1);
    if (p->tls != NULL) {
        /* Connected once the handshake finished (on_tls_ready), within
         * the same connect timeout (conn_timer still runs). */
        char host[INET_ADDRSTRLEN];
        uv_ip4_name(&p->addr, host, sizeof host);
        if (qr_tls_stream_init(&conn->tls, p->loop, (uv_stream_t *)&conn->tcp,
                               p->tls, false, host,
                               p->limits.connect_timeout_ms, on_plain_alloc,
                               on_plain_read, conn) != 0) {
            char why[300];
            snprintf(why, sizeof why, "TLS: %s", conn->tls.errmsg);
            connect_failed(p, why);
            return;
        }
        conn->use_tls = true;
        conn->open_handles++;
        qr_tls_stream_on_ready(&conn->tls, on_tls_ready);
        qr_tls_stream_read_start(&conn->tls);
    }
    int rv = uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read);
    if (rv != 0) {
        QR_DEBUG("peer", "read from %s: %s", p->target, uv_strerror(rv));
        conn_lost(p, QR_EUNAVAIL, false);
        return;
    }
    if (!conn->use_tls) {
        connected(conn);
    }
}

/* The connection is up (with TLS: its handshake finished). */
static void connected(struct qr_peer_conn *conn)
{
    struct qr_peer *p = conn->p;
    uv_timer_stop(&p->conn_timer);
    conn->connected = true;
    if (p->unreachable) {
        QR_INFO("peer", "connected to %s", p->target);
        p->unreachable = false;
    } else {
        QR_DEBUG("peer", "connected to %s", p->target);
    }
    kick(p);
}

/* Connect timeout while connecting, reconnect delay otherwise. */
static void on_conn_timer(uv_timer_t *t)
{
    struct qr_peer *p = t->data;
    if (p->conn == NULL) {
        start_connect(p);
    } else if (!p->conn->connected) {
        connect_failed(p, "timed out");
    }
}

static void start_connect(struct qr_peer *p)
{
    struct qr_peer_conn *conn = calloc(1, sizeof *conn);
    if (conn == NULL) {
        QR_ERROR("peer", "out of memory connecting to %s", p->target);
        finish_all(p, &p->queued, QR_ENOTSENT);
        schedule_reconnect(p);
        return;
    }
    conn->p = p;
    qr_framed_init(&conn->in, p->limits.max_frame_bytes);
    conn->tcp.data = conn;
    conn->connect_req.data = conn;
    conn->open_handles = 1;
    uv_tcp_init(p->loop, &conn->tcp);
    p->n_conns++;
    p->conn = conn;
    int rv = uv_tcp_connect(&conn->connect_req, &conn->tcp,
                            (const struct sockaddr *)&p->addr, on_connect);
    if (rv != 0) {
        connect_failed(p, uv_strerror(rv));
        return;
    }
    uv_timer_start(&p->conn_timer, on_conn_timer, p->limits.connect_timeout_ms,
                   0);
}

/* ------------------------------------------------------------------------ */
/* The API. */

int qr_peer_init(struct qr_peer *p,
                 uv_loop_t *loop,
                 const char *token,
                 const struct qr_peer_limits *limits,
                 char *errmsg)
{
    memset(p, 0, sizeof *p);
    p->loop = loop;
    if (limits != NULL) {
        p->limits = *limits;
    }
    struct qr_peer_limits *l = &p->limits;
    if (l->max_outstanding == 0) {
        l->max_outstanding = QR_PEER_DEFAULT_MAX_OUTSTANDING;
    }
    if (l->max_queued_bytes == 0) {
        l->max_queued_bytes = QR_PEER_DEFAULT_MAX_QUEUED_BYTES;
    }
    if (l->max_frame_bytes == 0) {
        l->max_frame_bytes = QR_PEER_DEFAULT_MAX_FRAME_BYTES;
    }
    if (l->connect_timeout_ms == 0) {
        l->connect_timeout_ms = QR_PEER_DEFAULT_CONNECT_TIMEOUT_MS;
    }
    if (l->backoff_min_ms == 0) {
        l->backoff_min_ms = QR_PEER_DEFAULT_BACKOFF_MIN_MS;
    }
    if (l->backoff_max_ms == 0) {
        l->backoff_max_ms = QR_PEER_DEFAULT_BACKOFF_MAX_MS;
    }
    if (l->max_frame_bytes > UINT32_MAX ||
        l->backoff_min_ms > l->backoff_max_ms) {
        snprintf(errmsg, QR_ERRMSG_BYTES,
                 "peer: limits out of range (frame %zu bytes, backoff "
                 "%" PRIu64 "..%" PRIu64 " ms)",
                 l->max_frame_bytes, l->backoff_min_ms, l->backoff_max_ms);
        return QR_EBADREQ;
    }
    p->token = strdup(token != NULL ? token : "");
    if (p->token == NULL) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "peer: out of memory");
        return -ENOMEM;
    }
    p->backoff_ms = l->backoff_min_ms;
    uv_timer_init(loop, &p->conn_timer);
    uv_timer_init(loop, &p->deadline_timer);
    uv_idle_init(loop, &p->kick);
    p->conn_timer.data = p;
    p->deadline_timer.data = p;
    p->kick.data = p;
    return 0;
}

int qr_peer_set_target(struct qr_peer *p, const char *hostport)
{
    if (p->closing) {
        return QR_ECANCELED;
    }
    if (hostport == NULL) {
        hostport = "";
    }
    if (strcmp(hostport, p->target) == 0) {
        return 0;
    }
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    if (hostport[0] != '\0') {
        int rv = qr_addr_parse_ipv4(hostport, &addr);
        if (rv != 0) {
            return rv;
        }
    }
    QR_DEBUG("peer", "target %s -> %s", p->target[0] ? p->target : "none",
             hostport[0] ? hostport : "none");
    conn_detach(p);
    finish_all(p, &p->sent, QR_EUNAVAIL);
    finish_all(p, &p->queued, QR_ENOTSENT);
    snprintf(p->target, sizeof p->target, "%s", hostport);
    p->addr = addr;
    p->backoff_ms = p->limits.backoff_min_ms;
    p->unreachable = false;
    if (p->target[0] != '\0') {
        start_connect(p);
    }
    return 0;
}

/* Packs req (with the peer's id, token and from_node already on it) into a
 * new call. */
static int pack_call(struct qr_peer *p,
                     const Qraft__Request *req,
                     struct qr_peer_call **out)
{
    size_t len = qraft__request__get_packed_size(req);
    if (len > p->limits.max_frame_bytes) {
        return QR_ETOOLARGE;
    }
    size_t frame_bytes = QR_FRAME_HEADER_BYTES + len;
    if (frame_bytes > p->limits.max_queued_bytes - p->queued_bytes) {
        return QR_EUNAVAIL;
    }
    struct qr_peer_call *c = calloc(1, sizeof *c);
    if (c == NULL) {
        goto err;
    }
    c->frame = malloc(frame_bytes);
    if (c->frame == NULL) {
        goto err_after_call;
    }
    qr_frame_put_header(c->frame, (uint32_t)len);
    qraft__request__pack(req, c->frame + QR_FRAME_HEADER_BYTES);
    c->frame_bytes = frame_bytes;
    c->id = req->id;
    *out = c;
    return 0;

err_after_call:
    free(c);
err:
    return -ENOMEM;
}

int qr_peer_call(struct qr_peer *p,
                 Qraft__Request *req,
                 uint64_t timeout_ms,
                 qr_peer_cb cb,
                 void *data)
{
    if (p->closing) {
        return QR_ECANCELED;
    }
    if (p->target[0] == '\0' ||
        p->queued.n + p->sent.n >= p->limits.max_outstanding) {
        return QR_EUNAVAIL;
    }
    /* Sent as this node: its own id sequence and token, and marked as a
     * node's (a forwarded write is the client's request otherwise). */
    uint64_t caller_id = req->id;
    char *caller_token = req->token;
    protobuf_c_boolean caller_from_node = req->from_node;
    req->id = p->last_id + 1;
    req->token = p->token;
    req->from_node = true;
    struct qr_peer_call *c = NULL;
    int rv = pack_call(p, req, &c);
    req->id = caller_id;
    req->token = caller_token;
    req->from_node = caller_from_node;
    if (rv != 0) {
        return rv;
    }
    c->cb = cb;
    c->data = data;
    uint64_t now = uv_now(p->loop);
    c->deadline_ms = timeout_ms == 0 || timeout_ms >= NO_DEADLINE - now
                         ? NO_DEADLINE
                         : now + timeout_ms;
    p->last_id = c->id;
    p->queued_bytes += c->frame_bytes;
    list_push(&p->queued, c);
    arm_deadline(p, c->deadline_ms);
    if (qr_peer_connected(p)) {
        kick(p);
    }
    return 0;
}

int qr_peer_use_tls(struct qr_peer *p,
                    const struct qr_tls_files *files,
                    char *errmsg)
{
    SSL_CTX *ctx;
    char why[QR_ERRMSG_BYTES - 16];
    if (qr_tls_client_ctx(files, &ctx, why, sizeof why) != 0) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "peer: TLS: %s", why);
        return QR_EBADREQ;
    }
    SSL_CTX_free(p->tls);
    p->tls = ctx;
    return 0;
}

void qr_peer_set_on_down(struct qr_peer *p, void (*cb)(void *data), void *data)
{
    p->on_down = cb;
    p->on_down_data = data;
}

bool qr_peer_connected(const struct qr_peer *p)
{
    return p->conn != NULL && p->conn->connected;
}

const char *qr_peer_target(const struct qr_peer *p)
{
    return p->target;
}

static void on_handle_close(uv_handle_t *h)
{
    close_step(h->data);
}

void qr_peer_close(struct qr_peer *p, qr_peer_close_cb cb)
{
    if (p->closing) {
        return;
    }
    p->closing = true;
    p->close_cb = cb;
    finish_all(p, &p->sent, QR_ECANCELED);
    finish_all(p, &p->queued, QR_ECANCELED);
    conn_detach(p);
    free(p->token);
    p->token = NULL;
    SSL_CTX_free(p->tls); /* connections hold their own reference */
    p->tls = NULL;
    p->pending_closes = 3 + (unsigned)p->n_conns;
    uv_close((uv_handle_t *)&p->conn_timer, on_handle_close);
    uv_close((uv_handle_t *)&p->deadline_timer, on_handle_close);
    uv_close((uv_handle_t *)&p->kick, on_handle_close);
}
