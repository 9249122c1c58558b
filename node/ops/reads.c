/* Linearizable reads.
 *
 * A read is held until the leader has proven, after the read arrived, that
 * it still leads, and this node has applied the index the leader gave then.
 * Held reads wait for the next round; one round is in flight at a time, so
 * however many reads arrive, each costs one raft barrier (on the leader)
 * or one peer request plus the leader's barrier (on a follower) shared by
 * all that arrived meanwhile. */
#include "ops/ops_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/addr.h"
#include "lib/logger.h"

/* A follower's read-index request waits at most this long for the leader;
 * a read then at most this long for this node to apply that far. */
#define READ_INDEX_TIMEOUT_MS 5000
#define READ_APPLY_TIMEOUT_MS 5000

struct qr_held_read {
    struct qr_call *call; /* holds the op */
    struct qr_held_read *next;
    /* Owned copy of the read; NULL for a follower's read-index request
     * (answered with the index). */
    Qraft__Request *req;
    uint64_t index;
};

struct qr_read_round {
    struct qr_ops *ops;
    struct qr_held_read *reads;
    uint64_t leader_id; /* the leader asked; 0: this node's own barrier */
    bool abandoned;     /* its leader went away; its reads were answered */
};

bool qr_ops_is_linear_read(const Qraft__Request *req)
{
    switch (req->body_case) {
        case QRAFT__REQUEST__BODY_GET:
        case QRAFT__REQUEST__BODY_LIST:
        case QRAFT__REQUEST__BODY_DLQ_LIST:
        case QRAFT__REQUEST__BODY_EVENTS:
        case QRAFT__REQUEST__BODY_CANCEL_COUNT:
        case QRAFT__REQUEST__BODY_STATUS:
        case QRAFT__REQUEST__BODY_QUEUE_GET:
        case QRAFT__REQUEST__BODY_QUEUE_LIST:
        case QRAFT__REQUEST__BODY_SCHEDULE_GET:
        case QRAFT__REQUEST__BODY_SCHEDULE_LIST:
        case QRAFT__REQUEST__BODY_GROUP_GET:
        case QRAFT__REQUEST__BODY_GROUP_LIST:
        case QRAFT__REQUEST__BODY_WORKFLOW_RUN:
        case QRAFT__REQUEST__BODY_WAITERS:
        case QRAFT__REQUEST__BODY_WORKFLOW_LOGS:
            return !req->stale;
        case QRAFT__REQUEST__BODY_KEYS:
            return !req->stale && !req->keys->rotate;
        default:
            return false;
    }
}

bool qr_ops_reads_replica(const Qraft__Request *req)
{
    if (req->body_case == QRAFT__REQUEST__BODY_STATUS) {
        return false; /* says what this node is, member or not */
    }
    /* The same kinds as above, whatever their stale flag (a shallow copy
     * only to read it with the flag off). */
    Qraft__Request linear = *req;
    linear.stale = false;
    return qr_ops_is_linear_read(&linear);
}

static void read_free(struct qr_held_read *r)
{
    if (r->req != NULL) {
        protobuf_c_message_free_unpacked(&r->req->base, NULL);
    }
    qr_call_free(r->call);
    free(r);
}

/* Answers a read that cannot be served linearizably: UNAVAILABLE (nothing
 * is known; retrying is always safe). */
static void read_fail(struct qr_held_read *r, const char *why)
{
    qr_op_error(r->call->op, r->call->id, QRAFT__STATUS__UNAVAILABLE, "%s",
                why);
    read_free(r);
}

static void read_serve(struct qr_held_read *r)
{
    struct qr_op *op = r->call->op;
    if (r->req == NULL) {
        Qraft__ReadIndexResponse ri = QRAFT__READ_INDEX_RESPONSE__INIT;
        ri.index = r->index;
        QR_OP_REPLY_BODY(op, r->call->id, READ_INDEX, read_index, &ri);
    } else if (!op->answered) {
        qr_op_run(op, r->req);
    }
    read_free(r);
}

static void on_read_caught_up(void *data, int status)
{
    struct qr_held_read *r = data;
    if (status == 0) {
        read_serve(r);
    } else {
        read_fail(r, status == QR_ETIMEOUT
                         ? "this node is too far behind the leader to answer "
                           "now; retry, or ask for a stale read"
                         : "shutting down");
    }
}

/* Each read of the list goes on: with status 0, once this node applied
 * index; else answered UNAVAILABLE with why. */
static void reads_proceed(struct qr_ops *ops,
                          struct qr_held_read *list,
                          int status,
                          uint64_t index,
                          const char *why)
{
    while (list != NULL) {
        struct qr_held_read *r = list;
        list = r->next;
        r->next = NULL;
        if (status != 0) {
            read_fail(r, why);
            continue;
        }
        r->index = index;
        if (r->req == NULL || index <= qr_cluster_applied(ops->cluster)) {
            read_serve(r);
        } else if (qr_cluster_wait_applied(ops->cluster, index,
                                           READ_APPLY_TIMEOUT_MS,
                                           on_read_caught_up, r) != 0) {
            read_fail(r, "shutting down");
        }
    }
}

static void reads_kick(struct qr_ops *ops);

static void round_finish(struct qr_read_round *round,
                         int status,
                         uint64_t index,
                         const char *why)
{
    struct qr_ops *ops = round->ops;
    struct qr_held_read *reads = round->reads;
    if (ops->round == round) {
        ops->round = NULL;
    }
    free(round);
    reads_proceed(ops, reads, status, index, why);
    reads_kick(ops);
}

static void on_round_barrier(void *data, int status, uint64_t index)
{
    round_finish(data, status, index,
                 "leadership was lost before this read could be confirmed; "
                 "retry shortly");
}

static void on_round_answer(void *data, int status, const Qraft__Response *resp)
{
    struct qr_read_round *round = data;
    if (round->abandoned) {
        free(round);
        return;
    }
    if (status == 0 && resp->status == QRAFT__STATUS__OK &&
        resp->body_case == QRAFT__RESPONSE__BODY_READ_INDEX) {
        round_finish(round, 0, resp->read_index->index, NULL);
        return;
    }
    if (status == 0 && resp->status == QRAFT__STATUS__BAD_REQUEST) {
        /* A leader from before read indexes (a rolling upgrade): reads
         * are served as that version served them, from this node's store,
         * until the leader runs this version too. */
        if (!round->ops->warned_old_leader) {
            round->ops->warned_old_leader = true;
            QR_WARN("rpc",
                    "the leader does not know read-index requests (an "
                    "older version): reads here are served from this "
                    "node's store, possibly stale, until it is upgraded");
        }
        round_finish(round, 0, 0, NULL);
        return;
    }
    char why[300];
    snprintf(why, sizeof why,
             "the leader did not confirm this read (%s); nothing is known; "
             "retry shortly",
             status != 0 ? qr_strerror(status)
             : resp->error != NULL && resp->error[0] != '\0' ? resp->error
                                                             : "no read index");
    round_finish(round, QR_EUNAVAIL, 0, why);
}

/* A follower's round: asks the leader for a read index. 0, or why not. */
static int ask_leader(struct qr_ops *ops,
                      struct qr_read_round *round,
                      const char **why)
{
    uint64_t leader_id = 0;
    qr_cluster_leader(ops->cluster, &leader_id, NULL);
    if (leader_id == 0) {
        *why = "no leader at the moment; retry shortly";
        return QR_EUNAVAIL;
    }
    if (leader_id == ops->config->id) {
        *why = "the leader is catching up; retry shortly";
        return QR_EUNAVAIL;
    }
    char leader_rpc[QR_ADDR_MAX];
    qr_shards_node_addrs(ops->shards, leader_id, leader_rpc, NULL);
    if (leader_rpc[0] == '\0' ||
        qr_peer_set_target(&ops->shards->peer, leader_rpc) != 0) {
        *why = "the leader's address is not known here yet; retry shortly";
        return QR_EUNAVAIL;
    }
    Qraft__ReadIndexRequest ri = QRAFT__READ_INDEX_REQUEST__INIT;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_READ_INDEX;
    req.read_index = &ri;
    round->leader_id = leader_id;
    if (qr_peer_call(&ops->shards->peer, &req, READ_INDEX_TIMEOUT_MS,
                     on_round_answer, round) != 0) {
        *why =
            "the leader could not be asked (peer queue full); retry "
            "shortly";
        return QR_EUNAVAIL;
    }
    return 0;
}

/* Starts a round for the reads waiting, unless one is in flight. */
static void reads_kick(struct qr_ops *ops)
{
    if (ops->round != NULL || ops->reads_head == NULL) {
        return;
    }
    struct qr_held_read *reads = ops->reads_head;
    ops->reads_head = ops->reads_tail = NULL;
    ops->n_reads = 0;
    struct qr_read_round *round = calloc(1, sizeof *round);
    if (ops->closing || round == NULL) {
        free(round);
        reads_proceed(ops, reads, QR_EUNAVAIL, 0,
                      ops->closing ? "shutting down" : "out of memory");
        return;
    }
    round->ops = ops;
    round->reads = reads;
    ops->round = round;
    ops->n_rounds++;
    const char *why = NULL;
    int rv;
    if (qr_cluster_serving(ops->cluster)) {
        rv = qr_cluster_read_barrier(ops->cluster, on_round_barrier, round);
        why = "this node is no longer the leader; retry shortly";
    } else {
        rv = ask_leader(ops, round, &why);
    }
    if (rv != 0) {
        round_finish(round, rv, 0, why);
    }
}

void qr_op_hold_read(struct qr_op *op,
                     const Qraft__Request *req,
                     bool index_only)
{
    struct qr_ops *ops = op->ops;
    struct qr_held_read *r = calloc(1, sizeof *r);
    struct qr_call *call = r != NULL ? qr_call_new(op, req) : NULL;
    if (call == NULL) {
        free(r);
        qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
        return;
    }
    r->call = call;
    if (!index_only) {
        r->req = (Qraft__Request *)qr_ops_copy_pb(&req->base);
        if (r->req == NULL) {
            qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
            read_free(r);
            return;
        }
    }
    if (ops->reads_tail != NULL) {
        ops->reads_tail->next = r;
    } else {
        ops->reads_head = r;
    }
    ops->reads_tail = r;
    ops->n_reads++;
    reads_kick(ops);
}

/* Each loop iteration: a follower's round whose leader is gone (an
 * election, a partition: raft forgets the leader within an election
 * timeout) will not be answered in time: its reads are answered
 * UNAVAILABLE now and a new round goes to the new leader, if any. */
void qr_ops_reads_watch(struct qr_ops *ops, uint64_t leader_id)
{
    struct qr_read_round *round = ops->round;
    if (round == NULL || round->leader_id == 0 ||
        leader_id == round->leader_id) {
        return;
    }
    round->abandoned = true; /* on_round_answer frees it */
    struct qr_held_read *reads = round->reads;
    round->reads = NULL;
    ops->round = NULL;
    reads_proceed(ops, reads, QR_EUNAVAIL, 0,
                  "this node lost the leader before the read could be "
                  "confirmed; nothing is known; retry shortly");
    reads_kick(ops);
}
