/* The RPC server (rpc.h): connections, frames, the token and scope checks; each
 * decoded request goes to the operations layer (ops/ops.h). */
#include "api/rpc.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/scopes.h"
#include "frame.h"
#include "lib/addr.h"
#include "lib/clock.h"
#include "lib/framed.h"
#include "lib/logger.h"
#include "lib/pb.h"
#include "lib/tls_ctx.h"
#include "lib/tls_stream.h"
#include "lib/tokens.h"

/* Backpressure: a connection's frames are not taken (they wait, read or
 * still in the socket) while it has this many requests waiting for an
 * answer, this many of them of a kind whose answer may be large (reads:
 * qr_ops_answer_is_small), or this many bytes of answers its client has
 * not read yet. Together they bound what a client that sends and does not
 * read makes the node keep: the unread bytes, plus the answers of the
 * requests it had taken (over TLS twice that: plaintext and ciphertext).
 * An answer over the byte cap still goes whole. */
#define MAX_PENDING_PER_CONN 4096u
#define MAX_READS_PENDING_PER_CONN 16u
#define MAX_QUEUED_OUT_PER_CONN (4u * 1024u * 1024u)

struct qr_rpc_conn {
    uv_tcp_t tcp;
    struct qr_rpc *rpc;
    LIST_ENTRY(qr_rpc_conn) link; /* in rpc->conns */
    struct qr_framed in;          /* what was read, cut into frames */
    struct qr_tls_stream tls;     /* under the frames when rpc->tls */
    bool use_tls;
    bool tls_started;  /* its first bytes were read */
    bool plain_to_tls; /* they were not TLS: answered in plaintext */
    unsigned refs;     /* the handle itself + one per request in progress */
    unsigned pending;  /* requests waiting for an answer */
    unsigned pending_reads; /* those of them whose answer may be large */
    size_t out_bytes; /* answers handed to the socket and not written yet */
    bool reading;
    bool closing;
    /* Frames are not taken: closing, or a limit was reached (see
     * "Backpressure"). While held and queued on rpc->resume, a limit has
     * cleared and the next loop iteration takes them up. */
    bool held;
    bool resume_queued;
    LIST_ENTRY(qr_rpc_conn) resume_link; /* in rpc->resume */
    bool cert_checked; /* cert_id is known (mutual TLS, handshake done) */
    uint64_t cert_id;  /* the node id its certificate is bound to, or 0 */
    /* Answers framed since the last flush (owned; NULL: none), written
     * together at the start of the next loop iteration (see "Answers"). */
    struct out_batch *batch;
    LIST_ENTRY(qr_rpc_conn) dirty_link; /* in rpc->dirty while batch != NULL */
    bool close_queued; /* a frame asked for the close after it: no more */
};

/* ------------------------------------------------------------------------ */
/* Connections and responses. */

static void conn_unref(struct qr_rpc_conn *conn)
{
    if (--conn->refs > 0) {
        return;
    }
    qr_framed_free(&conn->in);
    free(conn);
}

/* One of the things qr_rpc_close waits for has closed (the listener, the
 * flush handle, the last connection); the last one calls close_cb. */
static void closed_one(struct qr_rpc *rpc)
{
    if (--rpc->pending_closes == 0 && rpc->close_cb != NULL) {
        rpc->close_cb(rpc);
    }
}

static void on_conn_close(uv_handle_t *h)
{
    struct qr_rpc_conn *conn = h->data;
    struct qr_rpc *rpc = conn->rpc;
    LIST_REMOVE(conn, link);
    rpc->n_conns--;
    bool last = rpc->closing && rpc->n_conns == 0;
    conn_unref(conn);
    if (last) {
        closed_one(rpc);
    }
}

static void on_tls_close(struct qr_tls_stream *t)
{
    conn_unref(t->data);
}

static void flush_conn(struct qr_rpc_conn *conn);

static void conn_close(struct qr_rpc_conn *conn)
{
    if (conn->closing) {
        return;
    }
    conn->closing = true;
    conn->held = true; /* no frame is taken after this */
    /* What was answered goes out first, as far as the socket takes it
     * before the close (uv_close cancels the rest). */
    flush_conn(conn);
    if (conn->use_tls) {
        conn->refs++; /* until the TLS stream's own handle has closed */
        qr_tls_stream_close(&conn->tls, on_tls_close);
    }
    uv_close((uv_handle_t *)&conn->tcp, on_conn_close);
}

/* ------------------------------------------------------------------------ */
/* Answers.
 *
 * Each answer is framed into its connection's batch; an idle handle
 * (rpc->flush) writes every batch at the start of the next loop iteration,
 * so the answers one iteration produces (the ~100 publishes a raft entry
 * commits under load) leave in one write, not one write each. An idle
 * handle, not a prepare one: while it is active the loop does not block in
 * poll, so an answer framed late in an iteration (raft fires some
 * callbacks from its own prepare handle, e.g. the proposals a leader that
 * stepped down fails) still goes out before the loop waits. A batch that
 * reaches BATCH_MAX_BYTES is written at once and a new one begun. Order is
 * kept: batches are written in the order they were begun. */

#define BATCH_MIN_BYTES 4096u
#define BATCH_MAX_BYTES (1024u * 1024u)

struct out_batch {
    uv_write_t req;
    struct qr_tls_write tls_req;
    struct qr_rpc_conn *conn;
    bool close_after; /* close the connection once written */
    size_t len;       /* bytes framed in data */
    size_t cap;
    uint8_t data[];
};

static void release(struct qr_rpc_conn *conn);

static void written(struct out_batch *b, int status)
{
    struct qr_rpc_conn *conn = b->conn;
    assert(conn->out_bytes >= b->len);
    conn->out_bytes -= b->len;
    if (status != 0 && status != UV_ECANCELED) {
        QR_DEBUG("rpc", "write: %s", uv_strerror(status));
        conn_close(conn);
    } else if (b->close_after) {
        conn_close(conn);
    }
    free(b);
    release(conn);
    conn_unref(conn);
}

static void on_write(uv_write_t *req, int status)
{
    written((struct out_batch *)req, status);
}

static void on_tls_write(struct qr_tls_write *req, int status)
{
    written(
        (struct out_batch *)((char *)req - offsetof(struct out_batch, tls_req)),
        status);
}

/* Takes conn's batch off the list of those waiting for the flush. */
static struct out_batch *take_batch(struct qr_rpc_conn *conn)
{
    struct out_batch *b = conn->batch;
    if (b != NULL) {
        LIST_REMOVE(conn, dirty_link);
        conn->batch = NULL;
    }
    return b;
}

/* Writes conn's batch, if it has one. */
static void flush_conn(struct qr_rpc_conn *conn)
{
    struct out_batch *b = take_batch(conn);
    if (b == NULL) {
        return;
    }
    b->conn = conn;
    uv_buf_t buf = uv_buf_init((char *)b->data, (unsigned)b->len);
    conn->refs++;
    int rv =
        conn->use_tls && !conn->plain_to_tls
            ? qr_tls_stream_write(&conn->tls, &b->tls_req, &buf, 1,
                                  on_tls_write)
            : uv_write(&b->req, (uv_stream_t *)&conn->tcp, &buf, 1, on_write);
    if (rv != 0) {
        QR_DEBUG("rpc", "write: %s", uv_strerror(rv));
        free(b);
        conn_unref(conn);
        conn_close(conn);
        return;
    }
    conn->out_bytes += b->len;
}

static void take_up(struct qr_rpc_conn *conn);

/* The next connection on rpc->resume, taken off it (its reference is the
 * caller's to drop), or NULL. */
static struct qr_rpc_conn *resume_pop(struct qr_rpc *rpc)
{
    struct qr_rpc_conn *conn = LIST_FIRST(&rpc->resume);
    if (conn != NULL) {
        LIST_REMOVE(conn, resume_link);
        conn->resume_queued = false;
    }
    return conn;
}

static void on_flush(uv_idle_t *h)
{
    struct qr_rpc *rpc = h->data;
    /* Held connections whose limit cleared first, so that the answers
     * their frames get at once leave with the rest. */
    struct qr_rpc_conn *conn;
    while ((conn = resume_pop(rpc)) != NULL) {
        take_up(conn);
        conn_unref(conn);
    }
    while (!LIST_EMPTY(&rpc->dirty)) {
        flush_conn(LIST_FIRST(&rpc->dirty));
    }
    if (LIST_EMPTY(&rpc->resume)) {
        uv_idle_stop(h);
    }
}

/* conn's batch with room for `need` more bytes, begun (and the flush
 * armed) or grown as needed; NULL when out of memory. */
static struct out_batch *batch_room(struct qr_rpc_conn *conn, size_t need)
{
    struct out_batch *b = conn->batch;
    if (b != NULL && b->cap - b->len >= need) {
        return b;
    }
    if (b != NULL && b->len + need > BATCH_MAX_BYTES) {
        flush_conn(conn); /* full: it goes now, a new one begins */
        if (conn->closing) {
            return NULL;
        }
        b = NULL;
    }
    size_t len = b != NULL ? b->len : 0;
    size_t cap = b != NULL ? b->cap * 2 : BATCH_MIN_BYTES;
    while (cap < len + need) {
        cap *= 2;
    }
    struct out_batch *grown = realloc(b, sizeof *grown + cap);
    if (grown == NULL) {
        return NULL; /* b, if any, is still conn's */
    }
    if (b == NULL) {
        memset(grown, 0, sizeof *grown);
        LIST_INSERT_HEAD(&conn->rpc->dirty, conn, dirty_link);
        uv_idle_start(&conn->rpc->flush, on_flush);
    }
    grown->cap = cap;
    conn->batch = grown;
    return grown;
}

/* Frames resp (borrowed, stamped already) into conn's batch; dropped when
 * the connection is closing (its client went away) or an earlier frame
 * asked for its close. close_after: close the connection once written. */
static void send_frame(struct qr_rpc_conn *conn,
                       const Qraft__Response *resp,
                       bool close_after)
{
    if (conn->closing || conn->close_queued) {
        return;
    }
    size_t len = qraft__response__get_packed_size(resp);
    struct out_batch *b = batch_room(conn, QR_FRAME_HEADER_BYTES + len);
    if (b == NULL) {
        if (!conn->closing) {
            QR_ERROR("rpc", "out of memory answering request %" PRIu64,
                     resp->id);
            conn_close(conn);
        }
        return;
    }
    qr_frame_put_header(b->data + b->len, (uint32_t)len);
    qraft__response__pack(resp, b->data + b->len + QR_FRAME_HEADER_BYTES);
    b->len += QR_FRAME_HEADER_BYTES + len;
    if (close_after) {
        b->close_after = true;
        conn->close_queued = true;
    }
}

/* The server's own answers (a frame that does not decode or is over the
 * limit, a wrong token): msg is borrowed. */
static void send_error(struct qr_rpc_conn *conn,
                       uint64_t id,
                       Qraft__Request__BodyCase kind,
                       Qraft__Status status,
                       const char *msg,
                       bool close_after)
{
    if (conn->closing || conn->close_queued) {
        return; /* it would be dropped (send_frame): not counted either */
    }
    Qraft__Response resp = QRAFT__RESPONSE__INIT;
    resp.id = id;
    resp.status = status;
    resp.error = (char *)msg;
    if (conn->rpc->ops->metrics != NULL) {
        qr_metrics_count(&conn->rpc->ops->metrics->rpc, qr_ops_kind_name(kind),
                         qr_ops_status_name(status));
    }
    qr_ops_stamp(conn->rpc->ops, &resp, 0); /* no write behind it */
    send_frame(conn, &resp, close_after);
}

/* ------------------------------------------------------------------------ */
/* Backpressure.
 *
 * A connection is held when a frame leaves it at a limit (too many
 * requests waiting for answers, or too many answer bytes its client has
 * not read): the rest of what was read waits in conn->in, and reading
 * stops, so what the client sends next waits in the socket. Each answer
 * given and each batch written may clear the limit (release); the
 * connection's frames are then taken up at the start of the next loop
 * iteration, from the flush handle, never from inside an answer (many are
 * given while the connection's own frames are being handed out). */

/* Answer bytes conn's client has still to read: handed to the socket, or
 * framed and waiting for the flush. */
static size_t queued_out(const struct qr_rpc_conn *conn)
{
    return conn->out_bytes + (conn->batch != NULL ? conn->batch->len : 0);
}

static bool at_limit(const struct qr_rpc_conn *conn)
{
    return conn->pending >= MAX_PENDING_PER_CONN ||
           conn->pending_reads >= MAX_READS_PENDING_PER_CONN ||
           queued_out(conn) >= MAX_QUEUED_OUT_PER_CONN;
}

/* Whether conn may take frames now: open, and under every limit. */
static bool may_take(const struct qr_rpc_conn *conn)
{
    return !conn->closing && !conn->close_queued && !at_limit(conn);
}

/* conn's limit may have cleared: if it was held, its frames are taken up
 * in the next loop iteration. */
static void release(struct qr_rpc_conn *conn)
{
    if (!conn->held || conn->resume_queued || !may_take(conn)) {
        return;
    }
    conn->resume_queued = true;
    conn->refs++; /* the resume list's */
    LIST_INSERT_HEAD(&conn->rpc->resume, conn, resume_link);
    uv_idle_start(&conn->rpc->flush, on_flush);
}

/* The answer to one submitted request: written unless the connection
 * closed meanwhile; the request's reference goes. */
static void on_reply(void *data, const Qraft__Response *resp)
{
    struct qr_rpc_conn *conn = data;
    send_frame(conn, resp, false);
    conn->pending--;
    release(conn);
    conn_unref(conn);
}

/* The same, for a request whose answer may be large (counted apart). */
static void on_read_reply(void *data, const Qraft__Response *resp)
{
    struct qr_rpc_conn *conn = data;
    conn->pending_reads--;
    on_reply(conn, resp);
}

/* Answers PERMISSION_DENIED unless tok has the scope the scope table gives
 * req's kind (a kind the table does not know goes on: the operations
 * refuse it as unknown). Returns whether req may go on. */
static bool scope_ok(struct qr_rpc_conn *conn,
                     const Qraft__Request *req,
                     const struct qr_token *tok)
{
    unsigned need = qr_scopes_rpc((int)req->body_case);
    char msg[256];

    if (need == QR_SCOPES_UNKNOWN || (tok->scopes & need) == need) {
        return true;
    }
    snprintf(msg, sizeof msg,
             "permission denied: a %s request needs a token with the '%s' "
             "scope; token '%s' lacks it",
             qr_scopes_rpc_name((int)req->body_case),
             qr_tokens_scope_name(need), tok->name);
    send_error(conn, req->id, req->body_case, QRAFT__STATUS__PERMISSION_DENIED,
               msg, false);
    return false;
}

/* The address the connection comes from, "?" when unknown. */
static void peer_name(struct qr_rpc_conn *conn, char *out, size_t out_size)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&conn->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
            uv_ip4_name(in, host, sizeof host);
            port = ntohs(in->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
            uv_ip6_name(in6, host, sizeof host);
            port = ntohs(in6->sin6_port);
        }
    }
    snprintf(out, out_size, "%s:%d", host, port);
}

/* The node id conn's verified certificate is bound to (0: none). */
static uint64_t conn_cert_id(struct qr_rpc_conn *conn)
{
    if (!conn->cert_checked && conn->use_tls &&
        qr_tls_stream_ready(&conn->tls)) {
        conn->cert_checked = true;
        if (qr_tls_peer_node_id(conn->tls.ssl, &conn->cert_id) != 0) {
            conn->cert_id = 0;
        }
    }
    return conn->cert_id;
}

/* With mutual TLS: whether a request sent with the peer token by a
 * connection with a certificate bound to a node id comes from that node (a
 * heartbeat's or a result's node id); why says otherwise. */
static bool peer_claims_ok(uint64_t cert_id,
                           const Qraft__Request *req,
                           char *why,
                           size_t why_size)
{
    uint64_t claimed = qr_ops_heartbeat_node_id(req);
    if (req->body_case == QRAFT__REQUEST__BODY_RESULTS) {
        for (size_t i = 0; i < req->results->n_results && claimed == 0; i++) {
            if (req->results->results[i]->node_id != cert_id) {
                claimed = req->results->results[i]->node_id;
            }
        }
    }
    if (claimed != 0 && claimed != cert_id) {
        snprintf(why, why_size,
                 "unauthorized: a request for node %" PRIu64
                 " with the certificate of node %" PRIu64,
                 claimed, cert_id);
        return false;
    }
    return true;
}

/* Refuses req (sent with the peer token) and says why, at most every 10 s
 * in the log. */
static void refuse_peer_cert(struct qr_rpc_conn *conn,
                             const Qraft__Request *req,
                             const char *why)
{
    struct qr_rpc *rpc = conn->rpc;
    uint64_t now = qr_clock_mono_ms();
    rpc->n_peer_cert_refused++;
    if (rpc->peer_cert_warned_mono_ms == 0 ||
        now - rpc->peer_cert_warned_mono_ms >= 10000) {
        char from[64];
        peer_name(conn, from, sizeof from);
        QR_WARN("rpc",
                "refused a node-to-node request (%s) from %s: %s (%" PRIu64
                " refused since the last warning)",
                qr_scopes_rpc_name((int)req->body_case), from, why,
                rpc->n_peer_cert_refused);
        rpc->peer_cert_warned_mono_ms = now;
        rpc->n_peer_cert_refused = 0;
    }
    send_error(conn, req->id, req->body_case, QRAFT__STATUS__UNAUTHORIZED, why,
               false);
}

/* One whole frame read from conn: answered, or handed to the
 * operations. */
static void handle_frame(struct qr_rpc_conn *conn,
                         const uint8_t *payload,
                         size_t len)
{
    struct qr_rpc *rpc = conn->rpc;
    rpc->n_requests++;
    Qraft__Request *req = qraft__request__unpack(NULL, len, payload);
    if (req == NULL) {
        char msg[96];
        snprintf(msg, sizeof msg, "malformed request (%zu bytes do not decode)",
                 len);
        send_error(conn, 0, QRAFT__REQUEST__BODY__NOT_SET,
                   QRAFT__STATUS__BAD_REQUEST, msg, false);
        return;
    }
    /* Nothing this version does not know goes further (lib/pb.h). */
    qr_pb_drop_unknown(&req->base);
    bool as_peer =
        qr_tokens_equal(rpc->peer_token, req->token, strlen(req->token));
    if (as_peer && rpc->mutual) {
        /* Another node is known by its certificate too. Without one the
         * request is a client's (the peer token may be the API token):
         * client kinds go on with that token's scopes, node-to-node ones
         * are refused. */
        char why[256];
        uint64_t cert_id = conn_cert_id(conn);
        if (cert_id == 0 && qr_ops_is_peer_request(req->body_case)) {
            refuse_peer_cert(
                conn, req,
                "unauthorized: node-to-node requests need a "
                "client certificate from the cluster CA bound "
                "to a node id (subjectAltName URI " QR_TLS_NODE_URI_PREFIX
                "<id>)");
            qraft__request__free_unpacked(req, NULL);
            return;
        }
        if (cert_id != 0 && !peer_claims_ok(cert_id, req, why, sizeof why)) {
            refuse_peer_cert(conn, req, why);
            qraft__request__free_unpacked(req, NULL);
            return;
        }
        as_peer = cert_id != 0;
    }
    const struct qr_token *tok =
        as_peer ? NULL
                : qr_tokens_find(rpc->tokens, req->token, strlen(req->token));
    if (!as_peer && qr_ops_is_peer_request(req->body_case)) {
        /* Another node with a different peer token: loud on this side too
         * (ops/peer.c), since it delivers nothing until fixed. */
        char from[64];
        char why[256];
        peer_name(conn, from, sizeof from);
        qr_ops_peer_refused(rpc->ops, req, from, why, sizeof why);
        send_error(conn, req->id, req->body_case, QRAFT__STATUS__UNAUTHORIZED,
                   why, false);
    } else if (!as_peer && tok == NULL) {
        send_error(conn, req->id, req->body_case, QRAFT__STATUS__UNAUTHORIZED,
                   "unauthorized: wrong or missing token", false);
    } else if (as_peer || scope_ok(conn, req, tok)) {
        unsigned flags = QR_OPS_RPC | (as_peer ? QR_OPS_PEER : 0) |
                         (as_peer && req->from_node ? QR_OPS_FROM_NODE : 0);
        bool small = qr_ops_answer_is_small(req->body_case);
        conn->refs++;
        conn->pending++;
        conn->pending_reads += !small;
        int rv = qr_ops_submit(rpc->ops, req, flags,
                               small ? on_reply : on_read_reply, conn);
        if (rv != 0) {
            conn->pending_reads -= !small;
            conn->pending--;
            conn->refs--;
            send_error(conn, req->id, req->body_case,
                       rv == QR_ECANCELED ? QRAFT__STATUS__UNAVAILABLE
                                          : QRAFT__STATUS__INTERNAL,
                       rv == QR_ECANCELED ? "shutting down" : "out of memory",
                       false);
        }
    }
    qraft__request__free_unpacked(req, NULL);
}

/* One whole frame read from conn (data), answered or handed on; the
 * frames after it wait if that left conn at a limit. */
static void take_frame(void *data, const uint8_t *payload, size_t len)
{
    struct qr_rpc_conn *conn = data;
    handle_frame(conn, payload, len);
    if (conn->held || !at_limit(conn)) {
        return;
    }
    conn->held = true;
    struct qr_metrics *m = conn->rpc->ops->metrics;
    if (m != NULL) {
        if (queued_out(conn) >= MAX_QUEUED_OUT_PER_CONN) {
            m->rpc_held_unread++;
        } else {
            m->rpc_held_pending++;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Reading. */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct qr_rpc_conn *conn = h->data;
    (void)suggested;
    qr_framed_alloc(&conn->in, conn->use_tls ? &conn->tls : NULL, buf);
}

/* Room for plaintext out of the TLS stream. */
static uint8_t *on_plain_alloc(void *data, size_t *room)
{
    struct qr_rpc_conn *conn = data;
    return qr_framed_room(&conn->in, room);
}

static void pause_reading(struct qr_rpc_conn *conn)
{
    if (conn->reading) {
        uv_read_stop((uv_stream_t *)&conn->tcp);
        if (conn->use_tls) {
            qr_tls_stream_read_stop(&conn->tls);
        }
        conn->reading = false;
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void resume_reading(struct qr_rpc_conn *conn)
{
    if (!conn->reading && !conn->closing && !conn->close_queued &&
        !conn->held) {
        int rv = uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read);
        if (rv != 0) {
            /* Not read again, it would never be answered: closed. */
            QR_WARN("rpc", "read start: %s; closing the connection",
                    uv_strerror(rv));
            conn_close(conn);
            return;
        }
        conn->reading = true;
        if (conn->use_tls) {
            qr_tls_stream_read_start(&conn->tls);
        }
    }
}

static void take_frames(struct qr_rpc_conn *conn);

/* nread bytes of plaintext were read into conn->in (or the stream ended:
 * nread < 0). */
static void got_bytes(struct qr_rpc_conn *conn, ssize_t nread)
{
    if (nread == 0) {
        return;
    }
    if (nread < 0) {
        if (conn->use_tls && !qr_tls_stream_ready(&conn->tls) &&
            nread != UV_EOF && nread != UV_ECONNRESET) {
            char from[64];
            peer_name(conn, from, sizeof from);
            QR_INFO("rpc", "closing a connection from %s: %s", from,
                    conn->tls.errmsg);
        } else if (nread != UV_EOF && nread != UV_ECONNRESET) {
            QR_DEBUG("rpc", "read: %s", uv_strerror((int)nread));
        }
        if (nread == UV_ENOBUFS) {
            QR_ERROR("rpc", "out of memory reading a request");
        }
        conn_close(conn);
        return;
    }
    qr_framed_filled(&conn->in, (size_t)nread);
    take_frames(conn);
}

/* Hands the whole frames read from conn on, until none is left or conn is
 * held; reading stops while it is. */
static void take_frames(struct qr_rpc_conn *conn)
{
    conn->refs++; /* handlers may close the connection */
    if (qr_framed_drain(&conn->in, &conn->held, take_frame, conn) ==
        QR_FRAME_TOO_LARGE) {
        QR_WARN("rpc",
                "closing a connection that sent a frame over "
                "%" PRIu64 " bytes",
                conn->rpc->config->max_frame_bytes);
        char msg[128];
        snprintf(msg, sizeof msg,
                 "frame exceeds the limit of %" PRIu64 " bytes",
                 conn->rpc->config->max_frame_bytes);
        pause_reading(conn);
        send_error(conn, 0, QRAFT__REQUEST__BODY__NOT_SET,
                   QRAFT__STATUS__TOO_LARGE, msg, true);
    }
    /* Gives back memory a large frame needed once it has been handled; a
     * closing connection's buffer goes with it. */
    if (!conn->closing) {
        qr_framed_compact(&conn->in);
    }
    if (conn->held) {
        pause_reading(conn);
    }
    conn_unref(conn);
}

/* A held connection whose limit cleared (release): its waiting frames are
 * taken, then reading starts again, unless a limit is reached once more
 * (a later answer or write releases it again). */
static void take_up(struct qr_rpc_conn *conn)
{
    if (!may_take(conn)) {
        return;
    }
    conn->held = false;
    take_frames(conn);
    resume_reading(conn);
}

static void on_plain_read(void *data, ssize_t nread)
{
    got_bytes(data, nread);
}

/* The first bytes on a TLS port are not a TLS handshake record: most
 * likely a plaintext client. It gets one plaintext error frame saying so
 * (a clear error rather than a closed connection), and the close. */
static void refuse_plaintext(struct qr_rpc_conn *conn)
{
    char from[64];
    peer_name(conn, from, sizeof from);
    QR_INFO("rpc", "closing a connection from %s: not TLS", from);
    conn->plain_to_tls = true;
    pause_reading(conn);
    send_error(conn, 0, QRAFT__REQUEST__BODY__NOT_SET,
               QRAFT__STATUS__BAD_REQUEST,
               "this port speaks TLS: connect with TLS (qraft --cacert, "
               "QRAFT_CACERT)",
               true);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct qr_rpc_conn *conn = s->data;
    if (conn->use_tls && !conn->tls_started && nread > 0) {
        conn->tls_started = true;
        if ((uint8_t)buf->base[0] != 0x16) { /* TLS record: handshake */
            refuse_plaintext(conn);
            return;
        }
    }
    if (conn->plain_to_tls) {
        return;
    }
    if (conn->use_tls) {
        qr_tls_stream_feed(&conn->tls, nread); /* on_plain_read */
    } else {
        got_bytes(conn, nread);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    struct qr_rpc *rpc = server->data;
    if (status != 0) {
        QR_WARN("rpc", "accept: %s", uv_strerror(status));
        return;
    }
    struct qr_rpc_conn *conn = calloc(1, sizeof *conn);
    if (conn == NULL) {
        QR_ERROR("rpc", "out of memory accepting a connection");
        return;
    }
    conn->rpc = rpc;
    conn->refs = 1;
    qr_framed_init(&conn->in, rpc->config->max_frame_bytes);
    uv_tcp_init(rpc->loop, &conn->tcp);
    conn->tcp.data = conn;
    LIST_INSERT_HEAD(&rpc->conns, conn, link);
    rpc->n_conns++;
    if (uv_accept(server, (uv_stream_t *)&conn->tcp) != 0) {
        conn_close(conn);
        return;
    }
    if (rpc->n_conns > rpc->config->max_connections) {
        QR_WARN("rpc", "refusing a connection: %zu open, the limit is %u",
                rpc->n_conns - 1, rpc->config->max_connections);
        conn_close(conn);
        return;
    }
    uv_tcp_nodelay(&conn->tcp, 1);
    if (rpc->tls != NULL) {
        if (qr_tls_stream_init(&conn->tls, rpc->loop, (uv_stream_t *)&conn->tcp,
                               rpc->tls, true, NULL,
                               rpc->config->tls_handshake_timeout_ms,
                               on_plain_alloc, on_plain_read, conn) != 0) {
            QR_ERROR("rpc", "refusing a connection: %s", conn->tls.errmsg);
            conn_close(conn);
            return;
        }
        conn->use_tls = true;
    }
    resume_reading(conn);
}

/* ------------------------------------------------------------------------ */
/* Life cycle. */

static enum qr_tls_client_cert client_cert_mode(const struct qr_rpc *rpc)
{
    return rpc->mutual ? QR_TLS_CLIENT_CERT_OPTIONAL : QR_TLS_CLIENT_CERT_NONE;
}

int qr_rpc_init(struct qr_rpc *rpc,
                uv_loop_t *loop,
                const struct qr_config *cfg,
                const struct qr_tokens *tokens,
                const char *peer_token,
                struct qr_ops *ops)
{
    memset(rpc, 0, sizeof *rpc);
    rpc->loop = loop;
    rpc->config = cfg;
    rpc->tokens = tokens;
    rpc->peer_token = peer_token;
    rpc->ops = ops;

    struct sockaddr_in addr;
    if (qr_addr_parse_ipv4(cfg->rpc_addr, &addr) != 0) {
        snprintf(rpc->errmsg, sizeof rpc->errmsg,
                 "rpc: '%s' is not an IPv4 HOST:PORT", cfg->rpc_addr);
        return QR_EBADREQ;
    }
    struct qr_tls_files files = {cfg->tls_cert, cfg->tls_key, cfg->tls_ca};
    if (qr_tls_enabled(&files)) {
        char why[QR_ERRMSG_BYTES - 32];
        /* Clients may present a certificate; other nodes must (checked per
         * request: handle_frame, peer_claims_ok). */
        rpc->mutual = qr_tls_mutual(&files);
        if (qr_tls_server_ctx(&files, client_cert_mode(rpc), &rpc->tls, why,
                              sizeof why) != 0) {
            snprintf(rpc->errmsg, sizeof rpc->errmsg, "rpc: TLS: %s", why);
            return QR_EBADREQ;
        }
    }
    uv_tcp_init(loop, &rpc->listener);
    rpc->listener.data = rpc;
    int rv = uv_tcp_bind(&rpc->listener, (const struct sockaddr *)&addr, 0);
    if (rv == 0) {
        rv = uv_listen((uv_stream_t *)&rpc->listener, 511, on_connection);
    }
    if (rv != 0) {
        snprintf(rpc->errmsg, sizeof rpc->errmsg, "rpc: listen on %s: %s",
                 cfg->rpc_addr, uv_strerror(rv));
        uv_close((uv_handle_t *)&rpc->listener, NULL);
        SSL_CTX_free(rpc->tls);
        rpc->tls = NULL;
        return rv;
    }
    uv_idle_init(loop, &rpc->flush);
    rpc->flush.data = rpc;
    return 0;
}

int qr_rpc_reload_tls(struct qr_rpc *rpc, char *errmsg, size_t len)
{
    const struct qr_config *cfg = rpc->config;
    struct qr_tls_files files = {cfg->tls_cert, cfg->tls_key, cfg->tls_ca};
    SSL_CTX *fresh;
    if (rpc->tls == NULL || rpc->closing) {
        return 0;
    }
    if (qr_tls_server_ctx(&files, client_cert_mode(rpc), &fresh, errmsg, len) !=
        0) {
        return -1;
    }
    SSL_CTX_free(rpc->tls); /* connections hold their own reference */
    rpc->tls = fresh;
    return 0;
}

static void on_listener_close(uv_handle_t *h)
{
    struct qr_rpc *rpc = h->data;
    /* Connections hold their own reference to the context. */
    SSL_CTX_free(rpc->tls);
    rpc->tls = NULL;
    closed_one(rpc);
}

static void on_flush_close(uv_handle_t *h)
{
    closed_one(h->data);
}

void qr_rpc_close(struct qr_rpc *rpc, qr_rpc_close_cb cb)
{
    if (rpc->closing) {
        return;
    }
    rpc->closing = true;
    rpc->close_cb = cb;
    rpc->pending_closes = 2 + (rpc->n_conns > 0 ? 1 : 0);
    uv_close((uv_handle_t *)&rpc->listener, on_listener_close);
    struct qr_rpc_conn *c;
    LIST_FOREACH(c, &rpc->conns, link)
    {
        conn_close(c); /* writes its batch: nothing is left to flush */
    }
    while ((c = resume_pop(rpc)) != NULL) { /* closing: nothing to take up */
        conn_unref(c);
    }
    uv_close((uv_handle_t *)&rpc->flush, on_flush_close);
}
