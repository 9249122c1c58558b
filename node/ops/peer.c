/* Node-to-node requests, for the leader itself (they need the peer token):
 * heartbeats, a follower worker's delivery results, and read indexes. */
#include "ops/ops_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repl/check.h"

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
