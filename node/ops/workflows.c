/* Upstash Workflow runs: a run's history (the SDK's lazy fetch) from this
 * node's store, and the end of a run (finish or cancel) through raft. The
 * triggers and steps themselves are publishes (publish.c). */
#include "ops/ops_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repl/check.h"
#include "repl/command.h"

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

/* The running runs a bulk cancel selects by URL (every one, without). */
struct run_selection {
    const Qraft__WorkflowEndRequest *r;
    char **ids;
    size_t n, max;
    int rv;
};

static int select_run(void *arg, const Qraft__WorkflowRun *run)
{
    struct run_selection *s = arg;
    const char *url = s->r->url;
    if (run->state != QRAFT__WORKFLOW_RUN_STATE__RUN_RUNNING ||
        (s->r->url_exact ? strcmp(run->url, url) != 0
                         : strncmp(run->url, url, strlen(url)) != 0)) {
        return 0;
    }
    s->ids[s->n] = strdup(run->id);
    if (s->ids[s->n] == NULL) {
        s->rv = -ENOMEM;
        return 1;
    }
    return ++s->n == s->max ? 1 : 0;
}

/* Cancels the running runs r selects, at most r->limit (a walk of every
 * run: bounded by what the store holds, as a DLQ filter is). */
static void cancel_selected(struct qr_op *op,
                            const Qraft__Request *req,
                            const Qraft__WorkflowEndRequest *r)
{
    struct run_selection s = {
        .r = r, .max = r->limit > 0 && r->limit < 1000 ? r->limit : 1000};
    s.ids = calloc(s.max, sizeof *s.ids);
    struct qr_store_txn *txn = NULL;
    int rv = s.ids == NULL ? -ENOMEM
                           : qr_store_txn_begin(op->ops->store, false, &txn);
    if (rv == 0) {
        rv = qr_store_run_list(txn, NULL, SIZE_MAX, select_run, &s);
        qr_store_txn_abort(txn);
        rv = rv == 1 ? s.rv : rv;
    }
    if (rv != 0) {
        qr_op_store_error(op, req->id, rv);
    } else if (s.n == 0) {
        Qraft__BulkResponse none = QRAFT__BULK_RESPONSE__INIT;
        QR_OP_REPLY_BODY(op, req->id, BULK, bulk, &none);
    } else {
        qr_op_bulk(op, req, s.n, s.ids, QR_BULK_WORKFLOW_CANCEL,
                   &(struct qr_bulk_page){0});
    }
    for (size_t i = 0; i < s.n; i++) {
        free(s.ids[i]);
    }
    free(s.ids);
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
        if (r->select) {
            cancel_selected(op, req, r);
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

/* ------------------------------------------------------------------------ */
/* context.waitForEvent and notify. */

/* Checks an event id; answers req when it is bad. */
static bool event_id_ok(struct qr_op *op,
                        const Qraft__Request *req,
                        const char *event_id)
{
    if (!qr_command_is_event_id(event_id)) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                    "invalid event id: want 1 to %u bytes of UTF-8 without "
                    "control characters",
                    QR_COMMAND_MAX_EVENT_ID_BYTES);
        return false;
    }
    return true;
}

void qr_op_wait(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__WaitRequest *r = req->wait;
    const struct qr_limits *l = &op->ops->config->limits;
    const Qraft__Waiter *w = r->waiter;
    char err[256];
    if (w == NULL) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST, "wait missing");
        return;
    }
    if (!event_id_ok(op, req, w->event_id) || !run_id_ok(op, req, w->run_id)) {
        return;
    }
    int rv = qr_command_check_wait(w, r->timeout_ms, l, err, sizeof err);
    if (rv == 0) {
        rv = qr_ops_check_wait_destinations(op->ops, w, err, sizeof err);
    }
    if (rv != 0) {
        qr_op_error(op, req->id, qr_op_status_of(rv), "%s", err);
        return;
    }
    Qraft__WaitCreate c = QRAFT__WAIT_CREATE__INIT;
    c.waiter = (Qraft__Waiter *)w;
    c.timeout_ms = r->timeout_ms;
    QR_OP_PROPOSE_OK(op, req, WAIT_CREATE, wait_create, &c);
}

static int collect_waiter(void *arg, const Qraft__Waiter *w)
{
    return qr_pb_list_add(arg, &w->base);
}

/* The waiters of event_id (of run_id only, unless ""), as this node has
 * applied them, into l. */
static int read_waiters(struct qr_ops *ops,
                        const char *event_id,
                        const char *run_id,
                        struct qr_pb_list *l)
{
    struct qr_store_txn *txn = NULL;
    Qraft__Waiter *one = NULL;
    int rv = qr_store_txn_begin(ops->store, false, &txn);
    if (rv != 0) {
        return rv;
    }
    if (run_id[0] != '\0') {
        rv = qr_store_waiter_get(txn, event_id, run_id, &one);
        if (rv == 0) {
            rv = qr_pb_list_add(l, &one->base);
            qraft__waiter__free_unpacked(one, NULL);
        } else if (rv == QR_ENOTFOUND) {
            rv = 0;
        }
    } else {
        rv = qr_store_waiter_list(txn, event_id, QR_OPS_MAX_WAITERS,
                                  collect_waiter, l);
    }
    qr_store_txn_abort(txn);
    return qr_pb_list_status(l, rv);
}

void qr_op_waiters(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__WaitersRequest *r = req->waiters;
    struct qr_pb_list l = {0};
    if (!event_id_ok(op, req, r->event_id)) {
        return;
    }
    int rv = read_waiters(op->ops, r->event_id, "", &l);
    if (rv != 0) {
        qr_op_store_error(op, req->id, rv);
    } else {
        Qraft__WaitersResponse wr = QRAFT__WAITERS_RESPONSE__INIT;
        wr.n_waiters = l.n;
        wr.waiters = (Qraft__Waiter **)l.items;
        QR_OP_REPLY_BODY(op, req->id, WAITERS, waiters, &wr);
    }
    qr_pb_list_free(&l);
}

static void on_notified(void *data,
                        int status,
                        const struct qr_apply_result *res)
{
    struct qr_call *call = data;
    if (qr_call_applied_ok(call, status, res)) {
        QR_OP_REPLY_BODY(call->op, call->id, NOTIFY, notify, call->notify);
    }
    qr_call_free(call);
}

/* Notify reads the waiters on the leader, proposes one Notify naming them
 * (with the id of the message each one's Wait step gets), and answers the
 * list once it applied. A waiter that timed out in between is skipped by
 * apply, yet listed. */
void qr_op_notify(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__NotifyRequest *r = req->notify;
    struct qr_ops *ops = op->ops;
    const struct qr_limits *l = &ops->config->limits;
    struct qr_pb_list found = {0};
    if (!event_id_ok(op, req, r->event_id) ||
        (r->run_id[0] != '\0' && !run_id_ok(op, req, r->run_id))) {
        return;
    }
    if (r->data.len > l->max_body_bytes) {
        qr_op_error(op, req->id, QRAFT__STATUS__TOO_LARGE,
                    "event data is %zu bytes; the limit is %" PRIu64,
                    r->data.len, l->max_body_bytes);
        return;
    }
    int rv = read_waiters(ops, r->event_id, r->run_id, &found);
    if (rv != 0) {
        qr_op_store_error(op, req->id, rv);
        qr_pb_list_free(&found);
        return;
    }
    Qraft__NotifyResponse nr = QRAFT__NOTIFY_RESPONSE__INIT;
    Qraft__NotifiedWaiter *nw = calloc(found.n + 1, sizeof *nw);
    Qraft__NotifiedWaiter **nwp = calloc(found.n + 1, sizeof *nwp);
    Qraft__NotifyTarget *t = calloc(found.n + 1, sizeof *t);
    Qraft__NotifyTarget **tp = calloc(found.n + 1, sizeof *tp);
    char(*ids)[QR_ID_BYTES] = calloc(found.n + 1, sizeof *ids);
    struct qr_call *call = NULL;
    if (nw == NULL || nwp == NULL || t == NULL || tp == NULL || ids == NULL) {
        rv = -ENOMEM;
        goto out;
    }
    Qraft__Notify n = QRAFT__NOTIFY__INIT;
    n.event_id = r->event_id;
    n.data = r->data;
    n.default_retries = l->default_retries;
    n.default_timeout_ms = l->default_timeout_ms;
    for (size_t i = 0; i < found.n; i++) {
        Qraft__Waiter *w = (Qraft__Waiter *)found.items[i];
        qr_cluster_new_message_id(ops->cluster, ids[i]);
        qraft__notify_target__init(&t[i]);
        t[i].run_id = w->run_id;
        t[i].message_id = ids[i];
        tp[i] = &t[i];
        qraft__notified_waiter__init(&nw[i]);
        nw[i].waiter = w;
        nw[i].message_id = ids[i];
        nwp[i] = &nw[i];
    }
    n.n_targets = found.n;
    n.targets = tp;
    nr.n_notified = found.n;
    nr.notified = nwp;
    if (found.n == 0) {
        /* Nobody waits: nothing to propose ([] answers). */
        QR_OP_REPLY_BODY(op, req->id, NOTIFY, notify, &nr);
        goto out;
    }
    call = qr_call_new(op, req);
    if (call == NULL) {
        rv = -ENOMEM;
        goto out;
    }
    call->notify = (Qraft__NotifyResponse *)qr_ops_copy_pb(&nr.base);
    Qraft__Command cmd;
    qr_command_init_one(&cmd, QRAFT__COMMAND__BODY_NOTIFY, &n.base);
    char why[256];
    struct qr_packed packed;
    if (call->notify == NULL) {
        rv = -ENOMEM;
    } else if (qr_cluster_check_level(ops->cluster, &cmd, why, sizeof why) !=
               0) {
        qr_op_error(op, req->id, QRAFT__STATUS__UNAVAILABLE, "%s", why);
    } else if (qr_command_pack(&cmd, &packed) != 0) {
        rv = -ENOMEM;
    } else {
        qr_call_propose(op, call, &packed, on_notified);
        call = NULL;
    }
out:
    if (rv == -ENOMEM) {
        qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
    }
    if (call != NULL) {
        qr_call_free(call);
    }
    free(nw);
    free(nwp);
    free(t);
    free(tp);
    free(ids);
    qr_pb_list_free(&found);
}

/* ------------------------------------------------------------------------ */
/* Workflow DLQ: resume and restart of failed runs. */

void qr_op_workflow_dlq(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__WorkflowDlqRequest *r = req->workflow_dlq;
    Qraft__WorkflowResume wr = QRAFT__WORKFLOW_RESUME__INIT;
    Qraft__Command probe;
    char why[256];
    qr_command_init_one(&probe, QRAFT__COMMAND__BODY_WORKFLOW_RESUME, &wr.base);
    if (qr_cluster_check_level(op->ops->cluster, &probe, why, sizeof why) !=
        0) {
        qr_op_error(op, req->id, QRAFT__STATUS__UNAVAILABLE, "%s", why);
        return;
    }
    qr_op_bulk(op, req, r->n_message_ids, r->message_ids,
               r->failure_callback ? QR_BULK_WORKFLOW_CALLBACK
               : r->restart        ? QR_BULK_WORKFLOW_RESTART
                                   : QR_BULK_WORKFLOW_RESUME,
               &(struct qr_bulk_page){0});
}
