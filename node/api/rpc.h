/* The RPC server: framed protobuf Requests over TCP, answered with Responses
 * carrying the same id, pipelined (answers may come out of order). A face
 * of the operations layer (ops/ops.h): it owns the listener, the
 * connections, framing and the token and scope checks; what a request does, and
 * the leader checks, forwarding and linearizable reads, are the operations'.
 *
 * Invariants:
 * - Every well-framed request gets exactly one response, unless its
 *   connection closed first (the answer is then dropped).
 * - Input is checked before work is done: a frame over the limit closes the
 *   connection after one error response; a frame that does not decode gets a
 *   BAD_REQUEST (id 0) and the connection stays usable; a wrong token gets
 *   UNAUTHORIZED before anything else is looked at; a known token without
 *   the scope its kind needs (api/scopes.h) gets PERMISSION_DENIED next.
 * - With TLS (--tls-cert/--tls-key) every connection speaks TLS under the
 *   same frames (lib/tls_stream.h); one that sends something else, or
 *   does not finish its handshake within --tls-handshake-timeout-ms, is
 *   closed. The connection cap counts them all.
 * - A connection with MAX_PENDING_PER_CONN requests unanswered is not read
 *   from until some are answered (backpressure). */
#ifndef QR_RPC_H
#define QR_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <uv.h>

#include "config.h"
#include "lib/err.h"
#include "lib/tokens.h"
#include "ops/ops.h"

struct qr_rpc;
typedef void (*qr_rpc_close_cb)(struct qr_rpc *rpc);

struct qr_rpc_conn;

struct qr_rpc {
    uv_loop_t *loop;                /* borrowed */
    const struct qr_config *config; /* borrowed */
    /* borrowed: the API tokens (they may change between requests: a
     * reload) */
    const struct qr_tokens *tokens;
    const char *peer_token; /* borrowed: node to node; every scope */
    struct qr_ops *ops;     /* borrowed: what each request is handed to */
    uv_tcp_t listener;
    /* owned: TLS under the frames when the node has a certificate
     * (--tls-cert/--tls-key), NULL for plaintext */
    struct ssl_ctx_st *tls;
    /* With --tls-ca too: mutual TLS for node-to-node requests. Clients
     * are asked for a certificate and need none; whatever is sent with
     * the peer token needs a verified one bound to a node id (and a
     * heartbeat's or a result's node id must be that one). */
    bool mutual;
    uint64_t peer_cert_warned_mono_ms; /* the last such refusal logged */
    uint64_t n_peer_cert_refused;      /* since then */
    LIST_HEAD(, qr_rpc_conn) conns;    /* live connections */
    /* Connections with answers waiting to be written, and the idle
     * handle that writes them at the start of the next loop iteration
     * (rpc.c, "Answers"). */
    LIST_HEAD(, qr_rpc_conn) dirty;
    uv_idle_t flush;
    /* Held connections whose limit cleared: the flush handle takes up
     * their waiting frames first (rpc.c, "Backpressure"). */
    LIST_HEAD(, qr_rpc_conn) resume;
    size_t n_conns;
    bool closing;
    unsigned pending_closes;
    qr_rpc_close_cb close_cb;
    char errmsg[QR_ERRMSG_BYTES];
    uint64_t n_requests; /* frames read */
};

/* Binds and listens on cfg->rpc_addr. Client requests need an API token
 * with their kind's scope (or the peer token: followers forward clients'
 * writes); peer requests (heartbeats, results) need the peer token. All
 * pointers are borrowed and must
 * outlive the server. On failure rpc->errmsg says why and nothing needs
 * closing. */
int qr_rpc_init(struct qr_rpc *rpc,
                uv_loop_t *loop,
                const struct qr_config *cfg,
                const struct qr_tokens *tokens,
                const char *peer_token,
                struct qr_ops *ops);

/* SIGHUP: builds the TLS context again from the certificate files, for
 * the connections accepted from now on (open ones keep theirs). A file
 * that does not load leaves the context in use: returns -1 with errmsg
 * (len bytes) saying why. A plaintext server stays plaintext (0). */
int qr_rpc_reload_tls(struct qr_rpc *rpc, char *errmsg, size_t len);

/* Stops listening and closes every connection (answers already made are
 * written first, as far as each socket takes them; answers still owed are
 * dropped); cb fires once all handles are closed. Safe to call twice. */
void qr_rpc_close(struct qr_rpc *rpc, qr_rpc_close_cb cb);

#endif /* QR_RPC_H */
