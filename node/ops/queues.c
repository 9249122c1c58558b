/* Queues: upsert, pause, delete through raft; get and list from this
 * node's store. */
#include "ops/ops_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repl/check.h"
#include "repl/command.h"

/* Checks a queue name (and parallelism); answers req when it is bad. */
static bool queue_args_ok(struct qr_op *op,
                          const Qraft__Request *req,
                          const char *name,
                          uint32_t parallelism)
{
    char err[256];
    int rv = qr_command_check_queue(name, parallelism, &op->ops->config->limits,
                                    err, sizeof err);
    if (rv != 0) {
        qr_op_error(op, req->id, qr_op_status_of(rv), "%s", err);
        return false;
    }
    return true;
}

void qr_op_queue_upsert(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__QueueUpsertRequest *r = req->queue_upsert;
    const struct qr_limits *l = &op->ops->config->limits;
    if (!queue_args_ok(op, req, r->name, r->parallelism)) {
        return;
    }
    Qraft__QueueUpsert u = QRAFT__QUEUE_UPSERT__INIT;
    u.name = r->name;
    u.parallelism = r->parallelism != 0 ? r->parallelism : 1;
    u.paused = r->paused;
    u.max_queues = l->max_queues;
    u.max_parallelism = l->max_queue_parallelism;
    QR_OP_PROPOSE_OK(op, req, QUEUE_UPSERT, queue_upsert, &u);
}

void qr_op_queue_pause(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__QueuePauseRequest *r = req->queue_pause;
    if (!queue_args_ok(op, req, r->name, 0)) {
        return;
    }
    Qraft__QueuePause p = QRAFT__QUEUE_PAUSE__INIT;
    p.name = r->name;
    p.paused = r->paused;
    QR_OP_PROPOSE_OK(op, req, QUEUE_PAUSE, queue_pause, &p);
}

void qr_op_queue_delete(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__QueueDeleteRequest *r = req->queue_delete;
    if (!queue_args_ok(op, req, r->name, 0)) {
        return;
    }
    Qraft__QueueDelete d = QRAFT__QUEUE_DELETE__INIT;
    d.name = r->name;
    QR_OP_PROPOSE_OK(op, req, QUEUE_DELETE, queue_delete, &d);
}

static int collect_queue(void *arg, const Qraft__Queue *q)
{
    return qr_pb_list_add(arg, &q->base);
}

void qr_op_queue_read(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_ops *ops = op->ops;
    bool one = req->body_case == QRAFT__REQUEST__BODY_QUEUE_GET;
    const char *name = one ? req->queue_get->name : NULL;
    struct qr_pb_list l = {0};
    struct qr_store_txn *txn = NULL;
    Qraft__Queue *q = NULL;
    if (one && !queue_args_ok(op, req, name, 0)) {
        return;
    }
    int rv = qr_store_txn_begin(ops->store, false, &txn);
    if (rv == 0) {
        rv = one ? qr_store_queue_get(txn, name, &q)
                 : qr_store_queue_list(txn, NULL, SIZE_MAX, collect_queue, &l);
        qr_store_txn_abort(txn);
    }
    rv = qr_pb_list_status(&l, rv);
    Qraft__Response resp = QRAFT__RESPONSE__INIT;
    Qraft__QueueListResponse list = QRAFT__QUEUE_LIST_RESPONSE__INIT;
    resp.id = req->id;
    if (rv != 0) {
        qr_op_read_error(op, req->id, rv, "queue", name);
    } else if (one) {
        resp.body_case = QRAFT__RESPONSE__BODY_QUEUE;
        resp.queue = q;
        qr_op_reply(op, &resp);
    } else {
        list.n_queues = l.n;
        list.queues = (Qraft__Queue **)l.items;
        resp.body_case = QRAFT__RESPONSE__BODY_QUEUES;
        resp.queues = &list;
        qr_op_reply(op, &resp);
    }
    if (q != NULL) {
        qraft__queue__free_unpacked(q, NULL);
    }
    qr_pb_list_free(&l);
}
