/* The RPC server: framed protobuf Requests over TCP, answered with Responses
 * carrying the same id, pipelined (answers may come out of order).
 *
 * Invariants:
 * - Every well-framed request gets exactly one response, unless its
 *   connection closed first.
 * - Input is checked before work is done: a frame over the limit closes the
 *   connection after one error response; a frame that does not decode gets a
 *   BAD_REQUEST (id 0) and the connection stays usable; a wrong token gets
 *   UNAUTHORIZED before anything else is looked at.
 * - Writes are acknowledged only after commit and apply (see cluster.h), on
 *   the leader and, for a write a follower forwarded, on that follower too.
 * - Reads are linearizable unless the request says `stale`: before a read
 *   is served from this node's store, the leader proves it still leads (a
 *   raft barrier of its term; a follower asks it with a read-index peer
 *   request) and this node applies up to the barrier's index. Reads that
 *   arrive while a round is in flight share the next one. A node without a
 *   reachable leader answers them UNAVAILABLE, never stale data. */
#ifndef QR_RPC_H
#define QR_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "deliver/shards.h"
#include "lib/err.h"
#include "lib/metrics.h"
#include "repl/cluster.h"
#include "store/admit.h"
#include "store/store.h"

struct qr_rpc;
typedef void (*qr_rpc_close_cb)(struct qr_rpc *rpc);

struct qr_rpc_conn;
struct held_read;
struct read_round;
struct call;

struct qr_rpc {
    uv_loop_t *loop;                /* borrowed */
    const struct qr_config *config; /* borrowed */
    const char *token;              /* borrowed: the effective API token */
    /* borrowed: cfg->peer_token, or token when that is empty */
    const char *peer_token;
    struct qr_cluster *cluster; /* borrowed */
    struct qr_store *store;     /* borrowed */
    struct qr_shards *shards;   /* borrowed */
    uv_tcp_t listener;
    struct qr_rpc_conn *conns; /* live connections, a doubly linked list */
    size_t n_conns;
    bool closing;
    unsigned pending_closes;
    qr_rpc_close_cb close_cb;
    char errmsg[QR_ERRMSG_BYTES];
    uint64_t n_requests;
    struct qr_metrics *metrics; /* borrowed, may be NULL; set after init */
    /* borrowed, may be NULL (nothing is refused); set after init: writes
     * that add data are refused while space is low (node/admit.h) */
    struct qr_admit *admit;
    /* Linearizable reads: those waiting for the next read-index round, and
     * the round in flight (one at a time). */
    struct held_read *reads_head, *reads_tail;
    size_t n_reads;
    struct read_round *round;
    uint64_t n_rounds;      /* read-index rounds started (status, benchmarks) */
    struct call *relays;    /* forwarded writes not answered yet */
    uint64_t watch_leader;  /* the leader at the last loop iteration */
    bool relays_left;       /* the last sweep left some to the peer */
    bool warned_old_leader; /* logged that the leader has no read index */
    /* Each loop iteration: fails what waits on a leader that is gone. */
    uv_check_t leader_watch;
};

/* Binds and listens on cfg->rpc_addr. Client requests need the API token
 * (or the peer token: followers forward clients' writes); peer requests
 * (heartbeats, results) need the peer token. All pointers are borrowed and must
 * outlive the server. On failure rpc->errmsg says why and nothing needs
 * closing. */
int qr_rpc_init(struct qr_rpc *rpc,
                uv_loop_t *loop,
                const struct qr_config *cfg,
                const char *token,
                struct qr_cluster *cluster,
                struct qr_store *store,
                struct qr_shards *shards);

/* Stops listening and closes every connection (answers still owed are
 * dropped with them); cb fires once all handles are closed. Safe to call
 * twice. */
void qr_rpc_close(struct qr_rpc *rpc, qr_rpc_close_cb cb);

/* One answer to a request submitted in-process; resp is borrowed for the
 * call. */
typedef void (*qr_rpc_reply_cb)(void *data, const Qraft__Response *resp);

/* Runs req (borrowed; its id is echoed, its token is not checked: the
 * caller authenticated it) through the same routes, checks, forwarding and
 * answers as a request read from a socket. On 0, cb fires exactly once,
 * possibly before this returns (a request refused at once), else later;
 * a caller whose own client went away must still expect it. On error
 * (QR_ECANCELED while closing, -ENOMEM) cb never fires. Used by the HTTP
 * API. */
int qr_rpc_submit(struct qr_rpc *rpc,
                  Qraft__Request *req,
                  qr_rpc_reply_cb cb,
                  void *data);

/* Whether a write that adds data may be taken now (node/admit.h): 0, or
 * QR_ENOSPACE with why (QR_RPC_SPACE_WHY_BYTES is enough) saying what is
 * full. Every such request is checked in dispatch; a caller that splits one
 * client request into many (the REST batch) asks first, to refuse it
 * whole. */
#define QR_RPC_SPACE_WHY_BYTES 640
int qr_rpc_check_space(struct qr_rpc *rpc, char *why, size_t why_size);

#endif /* QR_RPC_H */
