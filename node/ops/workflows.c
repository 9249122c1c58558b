/* Upstash Workflow runs: a run's history (the SDK's lazy fetch) from this
 * node's store, and the end of a run (finish or cancel) through raft. The
 * triggers and steps themselves are publishes (publish.c). */
#include "ops/ops_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "repl/check.h"

/* Checks a run id; answers req when it is bad. */
static bool run_id_ok(struct qr_op *op,
                      const Qraft__Request *req,
                      const char *run_id)
{
    if (!qr_command_is_run_id(run_id)) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                    "invalid workflow run id: want 1 to %u of A-Z a-z 0-9 . _ "
                    ": -",
                    QR_COMMAND_MAX_RUN_ID_BYTES);
        return false;
    }
    return true;
}

static int collect_step(void *arg, uint32_t seq, const Qraft__WorkflowStep *st)
{
    (void)seq;
    return qr_pb_list_add(arg, &st->base);
}

void qr_op_workflow_run(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__WorkflowRunRequest *r = req->workflow_run;
    struct qr_pb_list l = {0};
    struct qr_store_txn *txn = NULL;
    Qraft__WorkflowRun *run = NULL;
    if (!run_id_ok(op, req, r->run_id)) {
        return;
    }
    int rv = qr_store_txn_begin(op->ops->store, false, &txn);
    if (rv == 0) {
        rv = qr_store_run_get(txn, r->run_id, &run);
        if (rv == 0 && !r->ended &&
            run->state != QRAFT__WORKFLOW_RUN_STATE__RUN_RUNNING) {
            rv = QR_ENOTFOUND; /* the SDK: "workflow-already-ended" */
        }
        if (rv == 0 && run->next_seq > 0) {
            rv = qr_store_run_steps(txn, r->run_id, 0, run->next_seq - 1,
                                    collect_step, &l);
        }
        qr_store_txn_abort(txn);
    }
    rv = qr_pb_list_status(&l, rv);
    if (rv != 0) {
        qr_op_read_error(op, req->id, rv, "workflow run", r->run_id);
    } else {
        Qraft__WorkflowRunResponse wr = QRAFT__WORKFLOW_RUN_RESPONSE__INIT;
        wr.run = run;
        wr.n_steps = l.n;
        wr.steps = (Qraft__WorkflowStep **)l.items;
        QR_OP_REPLY_BODY(op, req->id, WORKFLOW_RUN, workflow_run, &wr);
    }
    if (run != NULL) {
        qraft__workflow_run__free_unpacked(run, NULL);
    }
    qr_pb_list_free(&l);
}

void qr_op_workflow_end(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__WorkflowEndRequest *r = req->workflow_end;
    const struct qr_limits *l = &op->ops->config->limits;
    Qraft__WorkflowEnd e = QRAFT__WORKFLOW_END__INIT;
    Qraft__Command probe = QRAFT__COMMAND__INIT;
    probe.body_case = QRAFT__COMMAND__BODY_WORKFLOW_END;
    probe.workflow_end = &e;
    if (r->n_run_ids > 0 || r->run_id[0] == '\0') {
        char why[256];
        if (qr_cluster_check_level(op->ops->cluster, &probe, why, sizeof why) !=
            0) {
            qr_op_error(op, req->id, QRAFT__STATUS__UNAVAILABLE, "%s", why);
            return;
        }
        qr_op_bulk(op, req, r->n_run_ids, r->run_ids, QR_BULK_WORKFLOW_CANCEL,
                   &(struct qr_bulk_page){0});
        return;
    }
    if (!run_id_ok(op, req, r->run_id)) {
        return;
    }
    if (r->result.len > l->max_body_bytes) {
        qr_op_error(op, req->id, QRAFT__STATUS__TOO_LARGE,
                    "workflow result is %zu bytes; the limit is %" PRIu64,
                    r->result.len, l->max_body_bytes);
        return;
    }
    e.run_id = r->run_id;
    e.cancel = r->cancel;
    e.result = r->result;
    QR_OP_PROPOSE_OK(op, req, WORKFLOW_END, workflow_end, &e);
}
