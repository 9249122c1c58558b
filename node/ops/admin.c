/* Node and cluster administration: status, the signing keys (read, or
 * rotate on the leader), and membership (add, remove, transfer). */
#include "ops/ops_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deliver/sign.h"
#include "lib/addr.h"
#include "lib/clock.h"
#include "repl/command.h"

static void send_keys(struct qr_op *op, uint64_t id)
{
    struct qr_store_txn *txn = NULL;
    Qraft__SigningKeys *keys = NULL;
    int rv = qr_store_txn_begin(op->ops->store, false, &txn);
    if (rv == 0) {
        rv = qr_store_meta_get_msg(txn, QR_META_SIGNING_KEYS,
                                   &qraft__signing_keys__descriptor,
                                   (ProtobufCMessage **)&keys);
        qr_store_txn_abort(txn);
    }
    if (rv != 0) {
        qr_op_error(op, id, QRAFT__STATUS__UNAVAILABLE,
                    "no signing keys yet: the cluster is starting");
        return;
    }
    QR_OP_REPLY_BODY(op, id, KEYS, keys, keys);
    qraft__signing_keys__free_unpacked(keys, NULL);
}

static void on_rotated(void *data,
                       int status,
                       const struct qr_apply_result *res)
{
    struct qr_call *call = data;
    if (qr_call_applied_ok(call, status, res)) {
        send_keys(call->op, call->id);
    }
    qr_call_free(call);
}

void qr_op_keys(struct qr_op *op, const Qraft__Request *req)
{
    if (!req->keys->rotate) {
        send_keys(op, req->id);
        return;
    }
    if (!qr_cluster_serving(op->ops->cluster)) {
        if (!qr_op_forward(op, (Qraft__Request *)req)) {
            qr_op_not_leader(op, req->id);
        }
        return;
    }
    char next[QR_SIGN_KEY_BYTES];
    if (qr_sign_generate_key(next) != 0) {
        qr_op_error(op, req->id, QRAFT__STATUS__UNAVAILABLE,
                    "no randomness for a new key");
        return;
    }
    Qraft__SigningKeys keys = QRAFT__SIGNING_KEYS__INIT;
    keys.next = next;
    Qraft__SetSigningKeys set = QRAFT__SET_SIGNING_KEYS__INIT;
    set.keys = &keys;
    set.rotate = true;
    QR_OP_PROPOSE(op, req, SET_SIGNING_KEYS, set_signing_keys, &set,
                  on_rotated);
}

void qr_op_status(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_ops *ops = op->ops;
    /* The leader's view when asked for it; this node's own when it is the
     * leader, or knows none, or cannot reach it. */
    if (req->status->from_leader && !qr_cluster_serving(ops->cluster) &&
        qr_op_forward(op, (Qraft__Request *)req)) {
        return;
    }
    struct qr_cluster_status cs;
    qr_cluster_get_status(ops->cluster, &cs);

    uint64_t counts[QR_STORE_N_STATES] = {0};
    struct qr_store_txn *txn = NULL;
    int rv = qr_store_txn_begin(ops->store, false, &txn);
    if (rv == 0) {
        rv = qr_store_count_states(txn, counts);
        qr_store_txn_abort(txn);
    }
    if (rv != 0) {
        qr_op_store_error(op, req->id, rv);
        return;
    }

    Qraft__NodeStatus nodes[QR_CLUSTER_MAX_NODES];
    char problems[QR_CLUSTER_MAX_NODES][96];
    Qraft__NodeStatus *node_ptrs[QR_CLUSTER_MAX_NODES];
    Qraft__NodeInfo *infos[QR_CLUSTER_MAX_NODES];
    uint64_t now = qr_clock_mono_ms();
    for (size_t i = 0; i < cs.n_nodes; i++) {
        uint64_t nid = cs.nodes[i].id;
        qraft__node_status__init(&nodes[i]);
        nodes[i].id = nid;
        nodes[i].role = (char *)cs.nodes[i].role;
        nodes[i].raft = cs.nodes[i].raft_addr;
        nodes[i].shards = qr_shards_count(ops->shards, nid);
        infos[i] = qr_shards_node_info(ops->shards, nid);
        if (infos[i] != NULL) {
            nodes[i].rpc = infos[i]->rpc;
            nodes[i].http = infos[i]->http;
            nodes[i].version = infos[i]->version;
            nodes[i].feature_level = infos[i]->feature_level != 0
                                         ? infos[i]->feature_level
                                         : QR_FSM_BASE_FEATURE_LEVEL;
        }
        if (nid == ops->config->id) {
            nodes[i].alive = true;
            nodes[i].applied = cs.applied_index;
        } else {
            /* Known on the leader, from heartbeats. */
            const struct qr_shards_node *n = qr_shards_node(ops->shards, nid);
            nodes[i].alive = n != NULL && n->last_heartbeat_mono_ms != 0 &&
                             now - n->last_heartbeat_mono_ms < 3000;
            nodes[i].applied = n != NULL ? n->applied_index : 0;
            if (qr_cluster_serving(ops->cluster) &&
                qr_ops_peer_problem(ops, nid, problems[i],
                                    sizeof problems[i])) {
                nodes[i].problem = problems[i];
            }
        }
        node_ptrs[i] = &nodes[i];
    }
    Qraft__StatusResponse sr = QRAFT__STATUS_RESPONSE__INIT;
    sr.node_id = ops->config->id;
    sr.state = (char *)cs.state;
    sr.leader_id = cs.leader_id;
    char leader_rpc[QR_ADDR_MAX] = "";
    if (cs.leader_id != 0) {
        qr_shards_node_addrs(ops->shards, cs.leader_id, leader_rpc, NULL);
    }
    sr.leader_rpc = leader_rpc;
    sr.term = cs.term;
    sr.commit_index = cs.commit_index;
    sr.applied_index = cs.applied_index;
    sr.last_index = cs.last_index;
    sr.n_nodes = cs.n_nodes;
    sr.nodes = node_ptrs;
    sr.n_state_counts = QR_STORE_N_STATES;
    sr.state_counts = counts;
    sr.version = QRAFT_VERSION;
    char problem[256] = "";
    qr_shards_peer_refused(ops->shards, problem, sizeof problem);
    sr.problem = problem;
    sr.feature_level = qr_cluster_feature_level(ops->cluster);
    if (ops->metrics != NULL) {
        sr.loop_stalls = ops->metrics->loop_stalls;
        sr.loop_stall_max_ms = ops->metrics->loop_stall_max_ms;
    }
    sr.rss_bytes = qr_metrics_rss_bytes();
    if (ops->admit != NULL) {
        struct qr_admit_space sp;
        qr_admit_get_space(ops->admit, &sp);
        sr.store_used_bytes = sp.store_used_bytes;
        sr.store_file_bytes = sp.store_file_bytes;
    }
    QR_OP_REPLY_BODY(op, req->id, CLUSTER_STATUS, cluster_status, &sr);
    for (size_t i = 0; i < cs.n_nodes; i++) {
        if (infos[i] != NULL) {
            qraft__node_info__free_unpacked(infos[i], NULL);
        }
    }
}

static void on_membership_done(void *data, int status, const char *why)
{
    struct qr_call *call = data;
    if (status != 0) {
        qr_op_error(call->op, call->id, qr_op_status_of(status), "%s", why);
    } else {
        qr_op_ok(call->op, call->id);
    }
    qr_call_free(call);
}

static void membership_refused(struct qr_op *op, uint64_t id, int rv)
{
    qr_op_refused(
        op, id, rv,
        rv == QR_ECONFLICT ? "another membership change is in progress"
        : rv == QR_EBADREQ ? "no such node, or the id or address is taken"
                           : qr_strerror(rv));
}

/* An add whose node was checked (member_check.c): now raft changes the
 * configuration, unless the check failed or leadership went meanwhile. */
static void on_member_checked(void *data, int status, const char *why)
{
    struct qr_call *call = data;
    if (status != 0) {
        qr_op_error(call->op, call->id, qr_op_status_of(status), "%s", why);
        qr_call_free(call);
        return;
    }
    const Qraft__MemberAddRequest *a = call->member_add;
    struct qr_membership_change add = {
        .kind = QR_MEMBERSHIP_ADD, .id = a->id, .raft_addr = a->raft_addr};
    int rv = qr_cluster_change_membership(call->op->ops->cluster, &add,
                                          on_membership_done, call);
    if (rv != 0) {
        membership_refused(call->op, call->id, rv);
        qr_call_free(call);
    }
}

/* Checks the new node first (qr_ops_check_new_member), then adds it. */
static void member_add(struct qr_op *op, const Qraft__Request *req)
{
    struct sockaddr_in addr;
    const Qraft__MemberAddRequest *a = req->member_add;
    if (a->id == 0 || a->id > QR_MAX_NODE_ID ||
        qr_addr_parse_ipv4(a->raft_addr, &addr) != 0) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                    "add needs an id in 1..%u and an IPv4 HOST:PORT raft "
                    "address",
                    QR_MAX_NODE_ID);
        return;
    }
    if (qr_addr_parse_ipv4(a->rpc_addr, &addr) != 0) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                    "add needs the new node's RPC address too (IPv4 "
                    "HOST:PORT; qraft cluster add ID RAFT_ADDR --rpc "
                    "RPC_ADDR): the leader checks the node there before it "
                    "changes the configuration");
        return;
    }
    if (op->ops->cluster->change != NULL) {
        membership_refused(op, req->id, QR_ECONFLICT);
        return;
    }
    /* Idempotent: a voter already there is done, a spare or standby left
     * by an add cut short is checked again and promoted on. */
    char why[QR_ERRMSG_BYTES];
    switch (qr_cluster_add_state(op->ops->cluster, a->id, a->raft_addr, why,
                                 sizeof why)) {
        case QR_ADD_DONE:
            QR_INFO("cluster",
                    "node %" PRIu64 " at %s is already a voter: nothing to do",
                    a->id, a->raft_addr);
            qr_op_ok(op, req->id);
            return;
        case QR_ADD_CONFLICT:
            QR_WARN("cluster", "not adding node %" PRIu64 ": %s", a->id, why);
            qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST, "%s", why);
            return;
        default:
            break;
    }
    struct qr_call *call = qr_call_new(op, req);
    if (call == NULL) {
        qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
        return;
    }
    call->member_add = (Qraft__MemberAddRequest *)qr_ops_copy_pb(&a->base);
    int rv =
        call->member_add == NULL
            ? -ENOMEM
            : qr_ops_check_new_member(op->ops, a->id, a->raft_addr, a->rpc_addr,
                                      on_member_checked, call);
    if (rv != 0) {
        qr_op_refused(op, req->id, rv, qr_strerror(rv));
        qr_call_free(call);
    }
}

void qr_op_membership(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_cluster *c = op->ops->cluster;
    if (req->body_case == QRAFT__REQUEST__BODY_MEMBER_ADD) {
        member_add(op, req);
        return;
    }
    struct qr_call *call = qr_call_new(op, req);
    if (call == NULL) {
        qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
        return;
    }
    struct qr_membership_change change = {.kind = QR_MEMBERSHIP_TRANSFER};
    if (req->body_case == QRAFT__REQUEST__BODY_MEMBER_REMOVE) {
        change.kind = QR_MEMBERSHIP_REMOVE;
        change.id = req->member_remove->id;
    } else {
        change.id = req->transfer->id;
    }
    int rv = qr_cluster_change_membership(c, &change, on_membership_done, call);
    if (rv != 0) {
        membership_refused(op, req->id, rv);
        qr_call_free(call);
    }
}
