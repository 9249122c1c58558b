/* Node-to-node requests (they need the peer token): for the leader itself,
 * heartbeats, a follower worker's delivery results and read indexes; for
 * any node, the membership probe of a leader about to add it. A refused one
 * is logged loudly here (qr_ops_peer_refused). */
#include "ops/ops_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/clock.h"
#include "lib/logger.h"
#include "repl/check.h"

/* A refusal is logged at most this often per node, and shown by status
 * this long after the last one (heartbeats come every few hundred ms). */
#define REFUSED_WARN_EVERY_MS 10000
#define REFUSED_SHOWN_MS 5000
/* And at most this often over all nodes. */
#define REFUSED_WARN_ANY_MS 1000

static const char *peer_kind_name(Qraft__Request__BodyCase kind)
{
    switch (kind) {
        case QRAFT__REQUEST__BODY_HEARTBEAT:
            return "heartbeat";
        case QRAFT__REQUEST__BODY_RESULTS:
            return "delivery results";
        case QRAFT__REQUEST__BODY_MEMBER_PROBE:
            return "membership probe";
        default:
            return "read index";
    }
}

/* The slot for node id: its own, else a free one, else the oldest. */
static struct qr_ops_refused_peer *refused_slot(struct qr_ops *ops, uint64_t id)
{
    struct qr_ops_refused_peer *oldest = &ops->refused_peers[0];
    for (size_t i = 0; i < QR_OPS_MAX_REFUSED_PEERS; i++) {
        struct qr_ops_refused_peer *r = &ops->refused_peers[i];
        if (r->last_mono_ms != 0 && r->id == id) {
            return r;
        }
        if (r->last_mono_ms < oldest->last_mono_ms) {
            oldest = r;
        }
    }
    memset(oldest, 0, sizeof *oldest);
    oldest->id = id;
    return oldest;
}

uint64_t qr_ops_heartbeat_node_id(const Qraft__Request *req)
{
    if (req->body_case == QRAFT__REQUEST__BODY_HEARTBEAT &&
        req->heartbeat->info != NULL) {
        return req->heartbeat->info->id;
    }
    return 0;
}

void qr_ops_peer_refused(struct qr_ops *ops,
                         const Qraft__Request *req,
                         const char *from,
                         char *why,
                         size_t why_size)
{
    uint64_t id = qr_ops_heartbeat_node_id(req);
    const char *kind = peer_kind_name(req->body_case);
    snprintf(why, why_size,
             "unauthorized: a %s is a node-to-node request and needs the "
             "peer token; the one sent is not this node's (every node needs "
             "the same --peer-token, QRAFT_PEER_TOKEN)",
             kind);
    uint64_t now = qr_clock_mono_ms();
    struct qr_ops_refused_peer *r = refused_slot(ops, id);
    r->last_mono_ms = now;
    r->n_since_warned++;
    /* Per node, and overall: the id comes from a request nobody
     * authenticated, so cycling ids must not flood the log either. */
    if ((r->warned_mono_ms != 0 &&
         now - r->warned_mono_ms < REFUSED_WARN_EVERY_MS) ||
        (ops->refused_warned_mono_ms != 0 &&
         now - ops->refused_warned_mono_ms < REFUSED_WARN_ANY_MS)) {
        return;
    }
    ops->refused_warned_mono_ms = now;
    char node[32] = "a node";
    if (id != 0) {
        snprintf(node, sizeof node, "node %" PRIu64, id);
    }
    bool probe = req->body_case == QRAFT__REQUEST__BODY_MEMBER_PROBE;
    QR_WARN("peer",
            "refused a %s from %s at %s: wrong or missing peer token (%" PRIu64
            " refused since the last warning); %s until both run with the "
            "same --peer-token (QRAFT_PEER_TOKEN)",
            kind, node, from, r->n_since_warned,
            probe ? "that leader cannot add this node"
                  : "that node delivers nothing");
    r->warned_mono_ms = now;
    r->n_since_warned = 0;
}

bool qr_ops_peer_problem(struct qr_ops *ops,
                         uint64_t id,
                         char *why,
                         size_t why_size)
{
    why[0] = '\0';
    uint64_t now = qr_clock_mono_ms();
    for (size_t i = 0; i < QR_OPS_MAX_REFUSED_PEERS; i++) {
        const struct qr_ops_refused_peer *r = &ops->refused_peers[i];
        if (r->last_mono_ms != 0 && r->id == id &&
            now - r->last_mono_ms < REFUSED_SHOWN_MS) {
            snprintf(why, why_size,
                     "its heartbeats are refused: wrong or missing peer "
                     "token");
            return true;
        }
    }
    return false;
}

/* The leader is about to add this node: who it is (member_check.c). */
void qr_op_member_probe(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_ops *ops = op->ops;
    struct qr_cluster_status cs;
    qr_cluster_get_status(ops->cluster, &cs);
    Qraft__MemberProbeResponse pr = QRAFT__MEMBER_PROBE_RESPONSE__INIT;
    pr.id = ops->config->id;
    pr.raft_addr = (char *)ops->config->raft_addr;
    pr.version = QRAFT_VERSION;
    pr.max_feature_level = ops->config->max_feature_level;
    pr.n_configuration = (uint32_t)cs.n_nodes;
    QR_OP_REPLY_BODY(op, req->id, MEMBER_PROBE, member_probe, &pr);
}

void qr_op_heartbeat(struct qr_op *op, const Qraft__Request *req)
{
    Qraft__HeartbeatResponse hb = QRAFT__HEARTBEAT_RESPONSE__INIT;
    qr_shards_on_heartbeat(op->ops->shards, req->heartbeat, &hb);
    QR_OP_REPLY_BODY(op, req->id, HEARTBEAT, heartbeat, &hb);
}

static void on_results_applied(void *data, int status, uint64_t applied)
{
    struct qr_call *call = data;
    if (status != 0) {
        qr_op_error(call->op, call->id, qr_op_status_of(status), "%s",
                    qr_strerror(status));
    } else {
        Qraft__ResultsResponse rr = QRAFT__RESULTS_RESPONSE__INIT;
        rr.applied_index = applied;
        QR_OP_REPLY_BODY(call->op, call->id, RESULTS, results, &rr);
    }
    qr_call_free(call);
}

/* A follower's worker hands over outcomes: the leader proposes them and
 * answers once they are applied. */
void qr_op_results(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__ResultsRequest *r = req->results;
    if (r->n_results == 0) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST, "no results");
        return;
    }
    char why[160];
    if (qr_check_delivery_results(r->results, r->n_results, why, sizeof why) !=
        0) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST, "results: %s",
                    why);
        return;
    }
    struct qr_call *call = qr_call_new(op, req);
    if (call == NULL) {
        qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
        return;
    }
    int rv = qr_shards_propose_results(op->ops->shards, r->results,
                                       r->n_results, on_results_applied, call);
    if (rv != 0) {
        qr_op_refused(op, req->id, rv, qr_strerror(rv));
        qr_call_free(call);
    }
}

/* Peer: a follower's linearizable reads need this leader's read index. */
void qr_op_read_index(struct qr_op *op, const Qraft__Request *req)
{
    qr_op_hold_read(op, req, true);
}
