/* Flow control (docs/api.md 5.11): pause, resume, pin, unpin and resetRate
 * through raft; reads of a key, every key and the node's parallelism
 * from this node's store and, for the counts, its worker (the counts are
 * the key's owner's: a node that does not own the key says so). */
#include "ops/ops_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "repl/check.h"
#include "repl/fsm.h"

/* Keys a list answers at most. */
#define MAX_LISTED_KEYS 1000

void qr_op_flow_control_update(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__FlowControlUpdate *u = req->flow_control_update;
    char err[256];
    if (qr_command_check_flow_update(u, err, sizeof err) != 0) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST, "%s", err);
        return;
    }
    QR_OP_PROPOSE_OK(op, req, FLOW_CONTROL_UPDATE, flow_control_update,
                     (Qraft__FlowControlUpdate *)u);
}

/* One key as the SDK reads it; info->key borrows k's. */
static void fill_info(struct qr_ops *ops,
                      const Qraft__FlowControlKey *k,
                      Qraft__FlowControlInfo *info)
{
    struct qr_flow_limits lim;
    struct qr_worker_flow_counts counts = {0};
    qraft__flow_control_info__init(info);
    qr_flow_limits_of(k, &lim);
    info->key = k->key;
    info->parallelism_max = lim.parallelism;
    info->rate_max = lim.rate;
    info->rate_period_s = lim.period_ms / 1000;
    info->paused = k->paused;
    info->pinned_parallelism = k->pinned_parallelism;
    info->pinned_rate = k->pinned_rate;
    if (ops->worker != NULL) {
        info->counts_known = qr_worker_flow_counts(ops->worker, k->key,
                                                   k->rate_reset_ms, &counts);
    }
    info->parallelism_count = counts.sending;
    info->rate_count = counts.rate_count;
    info->rate_period_start_s = counts.period_start_ms / 1000;
    /* Its messages not final and not awaiting a response. */
    info->wait_list_size =
        k->messages > counts.sending ? k->messages - counts.sending : 0;
}

static int collect_key(void *arg, const Qraft__FlowControlKey *k)
{
    return qr_pb_list_add(arg, &k->base);
}

void qr_op_flow_control_read(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_ops *ops = op->ops;
    const Qraft__FlowControlReadRequest *r = req->flow_control_read;
    Qraft__Response resp = QRAFT__RESPONSE__INIT;
    Qraft__FlowControlReadResponse out =
        QRAFT__FLOW_CONTROL_READ_RESPONSE__INIT;
    resp.id = req->id;
    resp.body_case = QRAFT__RESPONSE__BODY_FLOW_CONTROL;
    resp.flow_control = &out;
    if (r->global) {
        out.parallelism_max = (uint32_t)qr_worker_max_inflight();
        out.parallelism_count =
            ops->worker != NULL ? (uint32_t)qr_worker_sending(ops->worker) : 0;
        qr_op_reply(op, &resp);
        return;
    }
    bool one = r->key[0] != '\0';
    char err[256];
    if (one && qr_command_check_flow_key(r->key, err, sizeof err) != 0) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST, "%s", err);
        return;
    }
    struct qr_pb_list l = {0};
    struct qr_store_txn *txn = NULL;
    Qraft__FlowControlKey *k = NULL;
    int rv = qr_store_txn_begin(ops->store, false, &txn);
    if (rv == 0) {
        rv = one ? qr_store_flow_get(txn, r->key, &k)
                 : qr_store_flow_list(txn, NULL, MAX_LISTED_KEYS, collect_key,
                                      &l);
        qr_store_txn_abort(txn);
    }
    rv = qr_pb_list_status(&l, rv);
    if (one && k != NULL && qr_pb_list_add(&l, &k->base) != 0) {
        rv = l.rv;
    }
    size_t n = l.n;
    Qraft__FlowControlInfo *infos = calloc(n + 1, sizeof *infos);
    Qraft__FlowControlInfo **ptrs = calloc(n + 1, sizeof *ptrs);
    if (rv == 0 && (infos == NULL || ptrs == NULL)) {
        rv = -ENOMEM;
    }
    if (rv != 0) {
        qr_op_read_error(op, req->id, rv, "flow control key", r->key);
    } else {
        for (size_t i = 0; i < n; i++) {
            fill_info(ops, (const Qraft__FlowControlKey *)l.items[i],
                      &infos[i]);
            ptrs[i] = &infos[i];
        }
        out.n_keys = n;
        out.keys = ptrs;
        qr_op_reply(op, &resp);
    }
    free(infos);
    free(ptrs);
    if (k != NULL) {
        qraft__flow_control_key__free_unpacked(k, NULL);
    }
    qr_pb_list_free(&l);
}
