/* Write forwarding: a follower relays a client's write to the leader and
 * answers once it has applied what the leader had (relays, ops->relays). */
#include "ops/ops_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/addr.h"
#include "lib/logger.h"

/* Write forwarding: a follower passes a client's write to the leader over
 * its peer connection and relays the answer under the client's request id.
 * When the peer call fails the request may or may not have reached the
 * leader, so the client hears UNKNOWN_OUTCOME (libqraft retries a publish
 * with its idempotency key); when it was never sent, UNAVAILABLE. */
/* Forwarding waits at most this long for the leader's answer, and then
 * for this node to apply what the leader applied. */
#define FORWARD_TIMEOUT_MS 30000

/* A leader's answer held until this node has applied as far as the leader
 * had when it answered (read-your-writes on the node written through). */
struct held_answer {
    struct qr_call *call;
    uint8_t *packed; /* the answer, packed */
    size_t len;
};

static void relay_link(struct qr_ops *ops,
                       struct qr_call *call,
                       uint64_t leader)
{
    call->relay_leader = leader;
    LIST_INSERT_HEAD(&ops->relays, call, relay_link);
    call->relay_linked = true;
}

static void relay_unlink(struct qr_call *call)
{
    if (!call->relay_linked) {
        return;
    }
    LIST_REMOVE(call, relay_link);
    call->relay_linked = false;
}

/* Relays a held answer now. */
static void send_held(struct held_answer *h)
{
    struct qr_call *call = h->call;
    Qraft__Response *resp = qraft__response__unpack(NULL, h->len, h->packed);
    if (resp == NULL) {
        qr_op_error(call->op, call->id, QRAFT__STATUS__INTERNAL,
                    "out of memory; the request was applied by the leader");
        return;
    }
    resp->id = call->id;
    qr_op_reply(call->op, resp);
    qraft__response__free_unpacked(resp, NULL);
}

static void on_caught_up(void *data, int status)
{
    struct held_answer *h = data;
    struct qr_call *call = h->call;
    if (call->relay_done) { /* relayed already: this node lost the leader */
        free(h->packed);
        free(h);
        qr_call_free(call);
        return;
    }
    relay_unlink(call);
    Qraft__Response *resp = qraft__response__unpack(NULL, h->len, h->packed);
    if (status == QR_ETIMEOUT) {
        /* The write is applied on the leader; this node lags. The answer
         * is still the truth about the write (a linearizable read here
         * waits for it anyway). */
        QR_WARN("rpc",
                "request %" PRIu64
                ": this node did not apply the leader's index in time; "
                "answering anyway",
                call->id);
    }
    if (status == QR_ECANCELED) {
        qr_op_error(call->op, call->id, QRAFT__STATUS__UNAVAILABLE,
                    "shutting down; the request was applied by the leader");
    } else if (resp == NULL) {
        qr_op_error(call->op, call->id, QRAFT__STATUS__INTERNAL,
                    "out of memory; the request was applied by the leader");
    } else {
        resp->id = call->id;
        qr_op_reply(call->op, resp);
    }
    if (resp != NULL) {
        qraft__response__free_unpacked(resp, NULL);
    }
    free(h->packed);
    free(h);
    qr_call_free(call);
}

/* Holds the leader's answer (borrowed) for call until this node applied
 * resp->applied_index; false (nothing held) when that cannot be done. */
static bool hold_answer(struct qr_call *call, const Qraft__Response *resp)
{
    struct qr_ops *ops = call->op->ops;
    struct held_answer *h = calloc(1, sizeof *h);
    if (h == NULL) {
        return false;
    }
    h->call = call;
    h->len = qraft__response__get_packed_size(resp);
    h->packed = malloc(h->len > 0 ? h->len : 1);
    if (h->packed == NULL) {
        free(h);
        return false;
    }
    qraft__response__pack(resp, h->packed);
    if (qr_cluster_wait_applied(ops->cluster, resp->applied_index,
                                FORWARD_TIMEOUT_MS, on_caught_up, h) != 0) {
        free(h->packed);
        free(h);
        return false;
    }
    call->held = h; /* still a relay: on_leader_watch may send it sooner */
    return true;
}

/* What an older leader answers to a request kind it does not know (its
 * dispatch, ops.c: protobuf-c leaves an unknown oneof unset, so it names
 * kind 0). Text is all older versions give to tell it apart from a bad
 * request of a kind it knows. */
#define UNKNOWN_KIND_PREFIX "unknown request kind"

static bool leader_lacks_kind(const Qraft__Response *resp)
{
    return resp->status == QRAFT__STATUS__BAD_REQUEST && resp->error != NULL &&
           strncmp(resp->error, UNKNOWN_KIND_PREFIX,
                   strlen(UNKNOWN_KIND_PREFIX)) == 0;
}

static void on_forwarded(void *data, int status, const Qraft__Response *resp)
{
    struct qr_call *call = data;
    if (call->relay_done) { /* answered already: this node lost the leader */
        qr_call_free(call);
        return;
    }
    if (status == 0 && resp->status == QRAFT__STATUS__UNAUTHORIZED) {
        /* The client's token passed here; the leader refused this node's
         * peer token (shards.c warns), before anything was applied. */
        relay_unlink(call);
        qr_op_error(call->op, call->id, QRAFT__STATUS__UNAVAILABLE,
                    "the leader refuses this node's peer token (it must run "
                    "with the cluster's --peer-token); nothing was applied; "
                    "ask another node");
        qr_call_free(call);
        return;
    }
    if (status == 0 && leader_lacks_kind(resp)) {
        /* A rolling upgrade: this node knows the request, the leader (an
         * older version) does not, and applied nothing. Retriable, not the
         * client's fault: another node, or this one once the leader runs
         * this version, takes it. */
        relay_unlink(call);
        QR_WARN("rpc",
                "request %" PRIu64
                ": the leader does not know request kind "
                "%d (it runs an older version: %s); answering UNAVAILABLE",
                call->id, (int)call->kind, resp->error);
        qr_op_error(call->op, call->id, QRAFT__STATUS__UNAVAILABLE,
                    "the leader runs an older version that does not know "
                    "this request yet (a rolling upgrade is under way); "
                    "nothing was applied; retry shortly or ask a node of "
                    "the older version");
        qr_call_free(call);
        return;
    }
    if (status == 0) {
        if (resp->applied_index > qr_cluster_applied(call->op->ops->cluster) &&
            hold_answer(call, resp)) {
            return; /* on_caught_up answers */
        }
        relay_unlink(call);
        Qraft__Response relay = *resp;
        relay.id = call->id;
        qr_op_reply(call->op, &relay);
        qr_call_free(call);
        return;
    }
    relay_unlink(call);
    if (status == QR_ECANCELED) {
        qr_op_error(call->op, call->id, QRAFT__STATUS__UNAVAILABLE,
                    "shutting down");
    } else if (status == QR_ENOTSENT) {
        /* Never reached the leader (it may have just died): nothing was
         * applied, so the client may simply retry. */
        qr_op_error(call->op, call->id, QRAFT__STATUS__UNAVAILABLE,
                    "the leader could not be reached; nothing was applied; "
                    "retry shortly");
    } else {
        qr_op_error(call->op, call->id, QRAFT__STATUS__UNKNOWN_OUTCOME,
                    "forwarding to the leader failed (%s); the request may "
                    "or may not have been applied",
                    qr_strerror(status));
    }
    qr_call_free(call);
}

bool qr_op_forward(struct qr_op *op, Qraft__Request *req)
{
    struct qr_ops *ops = op->ops;
    uint64_t leader_id = 0;
    qr_cluster_leader(ops->cluster, &leader_id, NULL);
    char leader_rpc[QR_ADDR_MAX];
    if (leader_id == 0 || leader_id == ops->config->id) {
        return false;
    }
    qr_shards_node_addrs(ops->shards, leader_id, leader_rpc, NULL);
    if (leader_rpc[0] == '\0' ||
        qr_peer_set_target(&ops->shards->peer, leader_rpc) != 0) {
        return false; /* not advertised yet: the client is redirected */
    }
    struct qr_call *call = qr_call_new(op, req);
    if (call == NULL) {
        return false;
    }
    if (qr_peer_call(&ops->shards->peer, req, FORWARD_TIMEOUT_MS, on_forwarded,
                     call) != 0) {
        qr_call_free(call);
        return false;
    }
    relay_link(ops, call, leader_id);
    return true;
}

/* Answers every forwarded write whose leader is no longer this node's
 * leader (an election, or a partition: raft forgets an unreachable leader
 * within an election timeout), rather than let its client wait for a peer
 * call that may hang until the partition heals: a held answer is relayed
 * (the write is applied), one still owed by the old leader is
 * UNKNOWN_OUTCOME. Their peer callbacks only free them later.
 *
 * While the peer connection is down (the old leader died: its socket was
 * reset), the calls are left to the peer: those never written end soon
 * with QR_ENOTSENT (a connect fails or times out), which tells the client
 * that nothing was applied. A connection still up to a leader that no
 * longer answers is the partition case. */
void qr_ops_relays_sweep(struct qr_ops *ops, uint64_t leader_id)
{
    bool connected = qr_peer_connected(&ops->shards->peer);
    struct qr_call *next;
    ops->relays_left = false;
    for (struct qr_call *call = LIST_FIRST(&ops->relays); call != NULL;
         call = next) {
        next = LIST_NEXT(call, relay_link);
        if (call->relay_leader == leader_id) {
            continue;
        }
        if (call->held == NULL && !connected) {
            ops->relays_left = true; /* looked at again next iteration */
            continue;
        }
        relay_unlink(call);
        call->relay_done = true;
        if (call->held != NULL) {
            send_held(call->held);
        } else {
            qr_op_error(call->op, call->id, QRAFT__STATUS__UNKNOWN_OUTCOME,
                        "this node lost the leader after forwarding the "
                        "request to it; the request may or may not have been "
                        "applied (retry a publish with the same idempotency "
                        "key)");
        }
    }
}
