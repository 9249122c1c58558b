/* The operations layer: every request a client or another node can make
 * (publish, reads, DLQ, queues, schedules, url groups, membership, peer
 * traffic), run without a transport. The RPC server (api/rpc.c) and the
 * REST API (api/rest.c) are two faces of it: each decodes its own wire
 * format into a Qraft__Request, calls qr_ops_submit, and turns the one
 * Qraft__Response back into its wire format.
 *
 * Invariants:
 * - Every submitted request gets exactly one answer, through its callback;
 *   an operation never touches a socket (a face whose client went away
 *   drops the answer in its callback).
 * - Input is checked before work is done, and writes that add data are
 *   refused while space is low (store/admit.h).
 * - Writes are acknowledged only after commit and apply (see cluster.h), on
 *   the leader and, for a write a follower forwarded, on that follower too.
 * - Reads are linearizable unless the request says `stale`: before a read
 *   is served from this node's store, the leader proves it still leads (a
 *   raft barrier of its term; a follower asks it with a read-index peer
 *   request) and this node applies up to the barrier's index. Reads that
 *   arrive while a round is in flight share the next one. A node without a
 *   reachable leader answers them UNAVAILABLE, never stale data. */
#ifndef QR_OPS_H
#define QR_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <uv.h>

#include "config.h"
#include "deliver/shards.h"
#include "deliver/trace.h"
#include "deliver/worker.h"
#include "lib/metrics.h"
#include "repl/cluster.h"
#include "store/admit.h"
#include "store/store.h"

struct qr_ops;
typedef void (*qr_ops_close_cb)(struct qr_ops *ops);

#define QR_OPS_MAX_REFUSED_PEERS 8

struct qr_held_read;
struct qr_read_round;
struct qr_call;
struct qr_parked_write;

struct qr_ops {
    uv_loop_t *loop;                /* borrowed */
    const struct qr_config *config; /* borrowed */
    struct qr_cluster *cluster;     /* borrowed */
    struct qr_store *store;         /* borrowed */
    struct qr_shards *shards;       /* borrowed */
    struct qr_metrics *metrics;     /* borrowed, may be NULL; set after init */
    /* borrowed, may be NULL (nothing is refused); set after init: writes
     * that add data are refused while space is low (store/admit.h) */
    struct qr_admit *admit;
    /* borrowed, may be NULL; set after init: what flow control reads of
     * this node's counts (ops/flow.c) */
    struct qr_worker *worker;
    /* borrowed, may be NULL (""); set after init: what this node sends as
     * the peer token when it probes a node it is about to add */
    const char *peer_token;
    /* borrowed, may be NULL (tracing off); set after init: a publish this
     * node takes gets a span (deliver/trace.h) */
    struct qr_trace *trace;
    bool closing;
    qr_ops_close_cb close_cb;
    uint64_t n_requests;
    /* Linearizable reads (ops/reads.c): those waiting for the next
     * read-index round, and the round in flight (one at a time). */
    struct qr_held_read *reads_head, *reads_tail;
    size_t n_reads;
    struct qr_read_round *round;
    uint64_t n_rounds; /* read-index rounds started (status, benchmarks) */
    LIST_HEAD(, qr_call) relays; /* forwarded writes not answered yet */
    uint64_t watch_leader;       /* the leader at the last loop iteration */
    bool relays_left;            /* the last sweep left some to the peer */
    bool warned_old_leader;      /* logged that the leader has no read index */
    /* Writes that came while no leader was known, held until one is
     * (ops.c, park_write), oldest first. */
    struct qr_parked_write *parked_head, *parked_tail;
    uint64_t n_parked; /* held since the process started (status, tests) */
    /* Each loop iteration: fails what waits on a leader that is gone. */
    uv_check_t leader_watch;
    /* Node-to-node requests refused for their token (ops/peer.c), by the
     * node id they name (0: none): status shows them, the log warns. */
    struct qr_ops_refused_peer {
        uint64_t id;
        uint64_t last_mono_ms;
        uint64_t warned_mono_ms;
        uint64_t n_since_warned;
    } refused_peers[QR_OPS_MAX_REFUSED_PEERS];
    uint64_t refused_warned_mono_ms; /* the last such WARN, any node */
};

/* All pointers are borrowed and must outlive the operations. Returns 0, or
 * libuv's error when the loop check cannot be made. */
int qr_ops_init(struct qr_ops *ops,
                uv_loop_t *loop,
                const struct qr_config *cfg,
                struct qr_cluster *cluster,
                struct qr_store *store,
                struct qr_shards *shards);

/* Refuses further submits (QR_ECANCELED) and closes the leader watch; cb
 * fires once it is closed. Operations still in flight finish through their
 * callbacks (the cluster and the peer fail them when they close). Close the
 * faces first. Safe to call twice. */
void qr_ops_close(struct qr_ops *ops, qr_ops_close_cb cb);

/* Flags of a submitted request. */
/* It carried the peer token: node-to-node requests are allowed. */
#define QR_OPS_PEER 1u
/* Another node sent it (a relay, a worker's results: the request's
 * from_node, with the peer token): its answer pushes the commit index to
 * the followers at once. */
#define QR_OPS_FROM_NODE 2u
/* It came through the RPC face: its answer is counted in
 * qraft_rpc_requests_total. */
#define QR_OPS_RPC 4u

/* True for the kinds only another node sends (heartbeat, results, read
 * index): they need the peer token. */
bool qr_ops_is_peer_request(Qraft__Request__BodyCase kind);

/* True for the kinds whose answer is small whatever the state holds: the
 * writes (their answers say what was done) and what only other nodes send.
 * The others (reads: a message with its body, a list) may answer up to the
 * frame limit; the RPC server caps how many of those one connection has
 * waiting (api/rpc.c, "Backpressure"). */
bool qr_ops_answer_is_small(Qraft__Request__BodyCase kind);

/* The node id a heartbeat says it comes from; 0 for anything else. */
uint64_t qr_ops_heartbeat_node_id(const Qraft__Request *req);

/* A face received req (borrowed), a node-to-node request, without the peer
 * token, from the address from: logs it at WARN (at most every 10 s per
 * node, with the count since), remembers it for status, and writes the
 * answer's text into why (why_size bytes). */
void qr_ops_peer_refused(struct qr_ops *ops,
                         const Qraft__Request *req,
                         const char *from,
                         char *why,
                         size_t why_size);

/* On the leader: why node id's node-to-node requests were refused within
 * the last few seconds, written into why; false (why "") when they were
 * not. */
bool qr_ops_peer_problem(struct qr_ops *ops,
                         uint64_t id,
                         char *why,
                         size_t why_size);

/* The one answer to a submitted request; resp is borrowed for the call. */
typedef void (*qr_ops_reply_cb)(void *data, const Qraft__Response *resp);

/* Runs req (borrowed; its id is echoed, its token is not checked: the face
 * authenticated it, and says so in flags) through the routes, checks,
 * forwarding and answers. On 0, cb fires exactly once, possibly before
 * this returns (a request refused at once), else later; a face whose own
 * client went away must still expect it. On error (QR_ECANCELED while
 * closing, -ENOMEM) cb never fires. */
int qr_ops_submit(struct qr_ops *ops,
                  const Qraft__Request *req,
                  unsigned flags,
                  qr_ops_reply_cb cb,
                  void *data);

/* The names the metrics give a request kind ("publish") and an answer's
 * status ("NOT_LEADER"): static strings. */
const char *qr_ops_kind_name(Qraft__Request__BodyCase kind);
const char *qr_ops_status_name(Qraft__Status status);

/* Fills in what every answer says (how far this node had applied, see
 * qraft.proto) and, for flags with QR_OPS_FROM_NODE, pushes the commit
 * index: for a face's own answers (a frame that does not decode, a wrong
 * token); qr_ops_submit's answers come stamped. */
void qr_ops_stamp(struct qr_ops *ops, Qraft__Response *resp, unsigned flags);

/* Whether a write that adds data may be taken now (store/admit.h): 0, or
 * QR_ENOSPACE with why (QR_OPS_SPACE_WHY_BYTES is enough) saying what is
 * full. Every such request is checked in qr_ops_submit; a caller that
 * splits one client request into many (the REST batch) asks first, to
 * refuse it whole. */
#define QR_OPS_SPACE_WHY_BYTES 640
int qr_ops_check_space(struct qr_ops *ops, char *why, size_t why_size);

/* The publish-time side of the SSRF guard (ops/destinations.c): whether
 * every destination a request names (url, callback, failure callback, a
 * callback's own failure callback, the workflow and invoke URLs; a wait's
 * url and timeoutUrl; a url group's added endpoints) is allowed by this
 * node's --allow-destinations policy when it is a literal address. Returns
 * 0 or QR_EBADREQ with the reason in err. Host names pass: the delivery
 * checks the address it connects to (deliver/delivery.h), which is the
 * guard; this only answers a literal refused address with a 400 at once.
 * A face check, never apply's: apply must not depend on a node's flags.
 * qr_ops_submit's operations run it; a caller that splits one client
 * request into many (the REST batch) runs it first, to refuse it whole. */
int qr_ops_check_publish_destinations(const struct qr_ops *ops,
                                      const Qraft__PublishRequest *p,
                                      char *err,
                                      size_t err_len);
int qr_ops_check_wait_destinations(const struct qr_ops *ops,
                                   const Qraft__Waiter *w,
                                   char *err,
                                   size_t err_len);
int qr_ops_check_group_destinations(const struct qr_ops *ops,
                                    const Qraft__GroupChangeRequest *gc,
                                    char *err,
                                    size_t err_len);

#endif /* QR_OPS_H */
