/* The peer RPC client: asynchronous calls from this node to one other node's
 * RPC server (the leader's: heartbeats, delivery results, forwarded writes),
 * on the node's libuv loop, never blocking, no threads.
 *
 * Invariants:
 * - A call accepted by qr_peer_call (return 0) completes exactly once: its
 *   callback fires from the loop, never inside a qr_peer_* function.
 * - Requests go out in call order on one connection and are matched to
 *   answers by id (ids grow and are never reused); answers may come in any
 *   order, an answer to a call that already completed is dropped.
 * - Memory is bounded: at most max_outstanding calls, max_queued_bytes of
 *   packed requests not yet written, and a read buffer that grows to an
 *   announced frame only once the announcement passed the max_frame check.
 *
 * Connections. While a target is set the peer keeps one connection to it
 * open, idle or not: it connects as soon as the target is set and, after a
 * failure or a loss, again after a backoff that doubles from backoff_min_ms
 * to backoff_max_ms (reset by an answer or a new target). Its timers keep
 * the loop alive meanwhile; no target, no timers. Calls made while the
 * connection is not up wait in a queue and are written, pipelined, once it
 * is; a connect attempt that fails or outlasts connect_timeout_ms fails
 * every call waiting then with QR_EUNAVAIL (a call made during a backoff
 * waits for the next attempt, within its own deadline). Switching the
 * target closes the connection and fails every call with QR_EUNAVAIL. */
#ifndef QR_PEER_H
#define QR_PEER_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "qraft.pb-c.h"

#define QR_PEER_ADDR_MAX 64

#define QR_PEER_DEFAULT_MAX_OUTSTANDING 4096u
#define QR_PEER_DEFAULT_MAX_QUEUED_BYTES (64u * 1024u * 1024u)
#define QR_PEER_DEFAULT_MAX_FRAME_BYTES (17u * 1024u * 1024u)
#define QR_PEER_DEFAULT_CONNECT_TIMEOUT_MS 2000u
#define QR_PEER_DEFAULT_BACKOFF_MIN_MS 50u
#define QR_PEER_DEFAULT_BACKOFF_MAX_MS 1000u

/* A zero field takes its default (QR_PEER_DEFAULT_*). */
struct qr_peer_limits {
    size_t max_outstanding;  /* calls waiting for their answer */
    size_t max_queued_bytes; /* packed requests not yet written out */
    size_t max_frame_bytes;  /* largest request or answer payload */
    uint64_t connect_timeout_ms;
    uint64_t backoff_min_ms; /* first reconnect delay after a failure */
    uint64_t backoff_max_ms; /* the delay doubles up to this */
};

/* How a call ended (status) and, when status is 0, the answer:
 * - 0: the server answered; resp is the answer (borrowed for the duration
 *   of the callback; its own status may still be an error such as
 *   NOT_LEADER or UNAVAILABLE). A Response with id 0 and a non-OK status
 *   (the server could not decode a request) answers the oldest call written
 *   and not yet answered.
 * - QR_ENOTSENT: the call was never written (no connection in time, the
 *   connect attempt failed, the target changed first): the server certainly
 *   did not handle it, so any call may be retried.
 * - QR_EUNAVAIL: written, but its connection was lost or closed by
 *   qr_peer_set_target before the answer: the server MAY have handled it;
 *   retry only what is safe to repeat (results are fenced by attempt,
 *   writes carry idempotency keys).
 * - QR_ETIMEOUT: written, and no answer within timeout_ms; the server may
 *   still handle it (a late answer is dropped).
 * - QR_EPROTO: the server sent something that is not a valid answer (a frame
 *   that does not decode, a frame over max_frame_bytes, an id never issued);
 *   the connection is closed and every call written on it ends so, with the
 *   same "may have been handled" caveat; a new connection follows.
 * - QR_ECANCELED: qr_peer_close was called first.
 * resp is NULL unless status is 0. */
typedef void (*qr_peer_cb)(void *data, int status, const Qraft__Response *resp);

struct qr_peer;
typedef void (*qr_peer_close_cb)(struct qr_peer *p);

struct qr_peer_call;
struct qr_peer_conn;

/* A FIFO of calls (private). */
struct qr_peer_list {
    struct qr_peer_call *head, *tail;
    size_t n;
};

/* Caller-allocated; every field is private. */
struct qr_peer {
    uv_loop_t *loop; /* borrowed */
    struct qr_peer_limits limits;
    char *token; /* owned copy */
    char target[QR_PEER_ADDR_MAX];
    struct sockaddr_in addr;
    struct qr_peer_conn *conn; /* current connection, NULL when none */
    size_t n_conns;            /* allocated, the closing ones included */
    uv_timer_t conn_timer;     /* connect timeout, or reconnect delay */
    uv_timer_t deadline_timer; /* armed for the earliest call deadline */
    uint64_t deadline_armed_ms;
    uv_idle_t kick; /* writes the queue, fires completed callbacks */
    struct qr_peer_list queued; /* packed, not written yet */
    struct qr_peer_list sent;   /* written, waiting for an answer (id order) */
    struct qr_peer_list done;   /* ended, callback not fired yet */
    size_t queued_bytes;        /* packed bytes not yet written out */
    uint64_t last_id;
    uint64_t backoff_ms;
    bool unreachable; /* a connect failed since the last success (logged) */
    void (*on_down)(void *data);
    void *on_down_data;
    struct ssl_ctx_st *tls; /* owned: TLS to the target; NULL: plaintext */
    bool closing;
    unsigned pending_closes;
    qr_peer_close_cb close_cb;
};

/* Prepares p on loop with no target. token is copied; limits is read once
 * (NULL: every default). On failure errmsg (QR_ERRMSG_BYTES) says why and
 * nothing needs closing. */
int qr_peer_init(struct qr_peer *p,
                 uv_loop_t *loop,
                 const char *token,
                 const struct qr_peer_limits *limits,
                 char *errmsg);

/* Points p at hostport ("127.0.0.1:7101"; "localhost" means 127.0.0.1;
 * IPv4 only), or at nothing (NULL or ""). The same target again is a no-op.
 * A different one closes the connection and fails every call with
 * QR_EUNAVAIL (their callbacks fire later, from the loop), then connects to
 * the new target at once. Returns QR_EBADREQ for an address that does not
 * parse (the target is left as it was), QR_ECANCELED once closing. */
int qr_peer_set_target(struct qr_peer *p, const char *hostport);

/* Sends req to the target. req is borrowed and packed before this returns
 * (it may be freed right after); the peer puts its own id and token and
 * from_node on the wire and leaves req's fields as they were. timeout_ms counts
 * from now; 0 means no deadline (the call still ends if its connection does).
 * Returns 0: cb fires exactly once, later, from the loop. Otherwise cb never
 * fires: QR_EUNAVAIL (no target, max_outstanding calls or max_queued_bytes
 * reached: retry later), QR_ETOOLARGE (req packs to more than
 * max_frame_bytes), -ENOMEM, QR_ECANCELED (closing). */
int qr_peer_call(struct qr_peer *p,
                 Qraft__Request *req,
                 uint64_t timeout_ms,
                 qr_peer_cb cb,
                 void *data);

struct qr_tls_files;

/* Makes p speak TLS to its targets from the next connection on: the
 * target's certificate must be signed by files->ca (or, without one, a
 * CA of the system's store) and name the target's IP address; files'
 * certificate and key are presented when the target asks (lib/tls_ctx.h).
 * A handshake counts as part of connecting: it must finish within
 * connect_timeout_ms, and when it fails the calls waiting end with
 * QR_ENOTSENT and the first failure is a warning naming OpenSSL's reason.
 * Returns 0, or QR_EBADREQ with errmsg (QR_ERRMSG_BYTES) saying why. */
int qr_peer_use_tls(struct qr_peer *p,
                    const struct qr_tls_files *files,
                    char *errmsg);

/* cb (NULL: none) is told, from the loop, each time the connection to the
 * target is lost or a connect attempt fails, before the calls that ended
 * with it are reported (it learns first that the target is out of reach).
 * It must not call qr_peer_* functions. */
void qr_peer_set_on_down(struct qr_peer *p, void (*cb)(void *data), void *data);

/* True while a connection to the target is established. */
bool qr_peer_connected(const struct qr_peer *p);

/* The current target, "" when none (borrowed: valid until the next
 * qr_peer_set_target). */
const char *qr_peer_target(const struct qr_peer *p);

/* Fails every call with QR_ECANCELED (callbacks fire from the loop, before
 * cb), closes the connection and handles; cb (may be NULL) fires once all
 * are closed, after which p may be freed. Safe to call twice: the second
 * call does nothing. */
void qr_peer_close(struct qr_peer *p, qr_peer_close_cb cb);

#endif /* QR_PEER_H */
