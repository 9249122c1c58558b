/* The workflow logs (the SDK's Client.logs): a page of runs from this
 * node's store, each with its history entries, the message that delivers
 * each entry and, for a failed run, the dead letter and the failure
 * callback. Runs come in id order (a run id is the SDK's random `wfr_`
 * id, so this is not creation order: the store has no index by time, and a
 * page costs what it returns, not every run there is). The REST face
 * shapes it (api/rest_workflow_logs.c). */
#include "ops/ops_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repl/callback.h"
#include "repl/check.h"
#include "repl/command.h"
#include "repl/redact.h"

#define LOGS_DEFAULT_COUNT 10u
#define LOGS_MAX_COUNT 100u
/* A page examines at most this many runs: a filter that matches few runs
 * answers a short (even empty) page with a cursor to go on from. */
#define LOGS_MAX_SCAN 10000u
/* A failure callback's id is the first free one from qr_callback_seq: try
 * this many. */
#define FAILURE_CALLBACK_PROBES 16u

/* A page being read: copies of the runs that match, one more than the
 * page holds (to know whether there is a next page). */
struct logs_walk {
    const Qraft__WorkflowLogsRequest *r;
    struct qr_pb_list runs; /* of Qraft__WorkflowRun */
    size_t want;            /* count + 1 */
    size_t n_scanned;
    char last_id[QR_COMMAND_MAX_RUN_ID_BYTES + 1]; /* the last one scanned */
};

static bool has_any(char **have, size_t n_have, char **want, size_t n_want)
{
    for (size_t i = 0; i < n_want; i++) {
        if (qr_op_id_listed(have, n_have, want[i])) {
            return true;
        }
    }
    return false;
}

/* Whether run passes every filter of r. */
static bool run_matches(const Qraft__WorkflowLogsRequest *r,
                        const Qraft__WorkflowRun *run)
{
    if (r->run_id[0] != '\0' && strcmp(run->id, r->run_id) != 0) {
        return false;
    }
    if (r->url[0] != '\0' && strcmp(run->url, r->url) != 0) {
        return false;
    }
    if (r->state != QRAFT__WORKFLOW_RUN_STATE__RUN_STATE_UNSPECIFIED &&
        run->state != r->state) {
        return false;
    }
    if (r->created_ms != 0 && run->created_ms != r->created_ms) {
        return false;
    }
    if ((r->from_ms != 0 && run->created_ms < r->from_ms) ||
        (r->to_ms != 0 && run->created_ms > r->to_ms)) {
        return false;
    }
    if (r->n_labels > 0 &&
        !has_any(run->labels, run->n_labels, r->labels, r->n_labels)) {
        return false;
    }
    if (r->n_flow_control_keys > 0 &&
        !qr_op_id_listed(r->flow_control_keys, r->n_flow_control_keys,
                         run->flow_control_key)) {
        return false;
    }
    return true;
}

static int visit_run(void *arg, const Qraft__WorkflowRun *run)
{
    struct logs_walk *w = arg;
    w->n_scanned++;
    snprintf(w->last_id, sizeof w->last_id, "%s", run->id);
    if (run_matches(w->r, run)) {
        int rv = qr_pb_list_add(&w->runs, &run->base);
        if (rv != 0 || w->runs.n == w->want) {
            return 1;
        }
    }
    return w->n_scanned >= LOGS_MAX_SCAN ? 1 : 0;
}

/* One run named by the request (workflowRunId, or messageId's run): added
 * to w when it exists and matches. */
static int read_one_run(struct qr_store_txn *txn,
                        const char *run_id,
                        struct logs_walk *w)
{
    Qraft__WorkflowRun *run = NULL;
    int rv = qr_store_run_get(txn, run_id, &run);
    if (rv == QR_ENOTFOUND) {
        return 0;
    }
    if (rv == 0 && run_matches(w->r, run) &&
        (w->r->cursor[0] == '\0' || strcmp(run->id, w->r->cursor) > 0)) {
        rv = qr_pb_list_status(&w->runs, qr_pb_list_add(&w->runs, &run->base));
    }
    if (run != NULL) {
        qraft__workflow_run__free_unpacked(run, NULL);
    }
    return rv;
}

/* The runs of the page into w. */
static int select_runs(struct qr_store_txn *txn, struct logs_walk *w)
{
    const Qraft__WorkflowLogsRequest *r = w->r;
    if (r->message_id[0] != '\0') {
        Qraft__Message *m = NULL;
        int rv = qr_store_msg_get(txn, r->message_id, &m);
        if (rv == QR_ENOTFOUND) {
            return 0;
        }
        if (rv == 0 && qr_command_is_run_id(m->workflow_run_id)) {
            rv = read_one_run(txn, m->workflow_run_id, w);
        }
        if (m != NULL) {
            qraft__message__free_unpacked(m, NULL);
        }
        return rv;
    }
    if (r->run_id[0] != '\0') {
        return read_one_run(txn, r->run_id, w);
    }
    int rv = qr_store_run_list(txn, r->cursor, SIZE_MAX, visit_run, w);
    return qr_pb_list_status(&w->runs, rv);
}

static void drop_body(Qraft__Message *m)
{
    free(m->body.data);
    m->body.data = NULL;
    m->body.len = 0;
}

/* The message id (or NULL: pruned, or not stored) as the logs show it: in
 * its reported state (delivering once due), without its body (a workflow
 * message's is its history entry's). */
static int load_message(struct qr_store_txn *txn,
                        const char *id,
                        uint64_t now_ms,
                        Qraft__Message **out)
{
    *out = NULL;
    if (id[0] == '\0' || strlen(id) > QR_CHECK_MAX_MESSAGE_ID_BYTES) {
        return 0;
    }
    int rv = qr_store_msg_get(txn, id, out);
    if (rv == QR_ENOTFOUND) {
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    (*out)->state = qr_op_reported_state(*out, now_ms);
    drop_body(*out);
    return qr_redact_view(*out); /* shown, never written back */
}

struct steps_walk {
    struct qr_store_txn *txn;
    uint64_t now_ms;
    Qraft__WorkflowLogStep **steps; /* owned, each owned */
    size_t n, cap;
};

static int collect_log_step(void *arg,
                            uint32_t seq,
                            const Qraft__WorkflowStep *st)
{
    struct steps_walk *w = arg;
    if (w->n == w->cap) {
        size_t cap = w->cap == 0 ? 8 : 2 * w->cap;
        void *grown = realloc(w->steps, cap * sizeof *w->steps);
        if (grown == NULL) {
            return -ENOMEM;
        }
        w->steps = grown;
        w->cap = cap;
    }
    Qraft__WorkflowLogStep *ls = malloc(sizeof *ls);
    if (ls == NULL) {
        return -ENOMEM;
    }
    qraft__workflow_log_step__init(ls);
    ls->seq = seq;
    w->steps[w->n++] = ls;
    ls->step = (Qraft__WorkflowStep *)qr_ops_copy_pb(&st->base);
    if (ls->step == NULL) {
        return -ENOMEM;
    }
    return load_message(w->txn, st->message_id, w->now_ms, &ls->message);
}

/* A failed run's failure callback: the message apply made from the dead
 * letter when the run failed (repl/apply_msg.c create_callback), found by
 * the same ids it tried. */
static int load_failure_callback(struct qr_store_txn *txn,
                                 const Qraft__WorkflowRun *run,
                                 const Qraft__Message *failed,
                                 uint64_t now_ms,
                                 Qraft__Message **out)
{
    char id[QR_ID_BYTES];
    *out = NULL;
    if (failed->attempts == 0) {
        return 0;
    }
    uint32_t seq =
        qr_callback_seq(failed->id, QRAFT__CALLBACK_KIND__FAILURE_CALLBACK,
                        failed->attempts - 1);
    for (unsigned i = 0; i < FAILURE_CALLBACK_PROBES; i++) {
        Qraft__Message *m = NULL;
        qr_command_message_id(id, run->ended_ms, QR_CALLBACK_NODE_ID, seq + i);
        int rv = load_message(txn, id, now_ms, &m);
        if (rv != 0 || m == NULL) {
            return rv;
        }
        if (m->callback_kind == QRAFT__CALLBACK_KIND__FAILURE_CALLBACK &&
            strcmp(m->source_message_id, failed->id) == 0) {
            *out = m;
            return 0;
        }
        qraft__message__free_unpacked(m, NULL);
    }
    return 0;
}

/* The log of run (taken) into *out (new; free with
 * qraft__workflow_log_run__free_unpacked). */
static int read_run_log(struct qr_store_txn *txn,
                        Qraft__WorkflowRun *run,
                        uint64_t now_ms,
                        Qraft__WorkflowLogRun **out)
{
    Qraft__WorkflowLogRun *lr = malloc(sizeof *lr);
    if (lr == NULL) {
        qraft__workflow_run__free_unpacked(run, NULL);
        return -ENOMEM;
    }
    qraft__workflow_log_run__init(lr);
    lr->run = run;
    *out = lr;
    struct steps_walk w = {.txn = txn, .now_ms = now_ms};
    int rv = 0;
    if (run->next_seq > 0) {
        rv = qr_store_run_steps(txn, run->id, 0, run->next_seq - 1,
                                collect_log_step, &w);
    }
    lr->steps = w.steps;
    lr->n_steps = w.n;
    if (rv == 0 && run->invoker != NULL &&
        qr_command_is_run_id(run->invoker->run_id)) {
        Qraft__WorkflowRun *by = NULL;
        rv = qr_store_run_get(txn, run->invoker->run_id, &by);
        if (rv == 0) {
            lr->invoker_created_ms = by->created_ms;
            qraft__workflow_run__free_unpacked(by, NULL);
        } else if (rv == QR_ENOTFOUND) {
            rv = 0;
        }
    }
    if (rv == 0 && run->failed_message_id[0] != '\0') {
        rv = load_message(txn, run->failed_message_id, now_ms, &lr->failed);
        if (rv == 0 && lr->failed != NULL) {
            rv = load_failure_callback(txn, run, lr->failed, now_ms,
                                       &lr->failure_callback);
        }
    }
    return rv;
}

static void free_runs(Qraft__WorkflowLogRun **runs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (runs[i] != NULL) {
            qraft__workflow_log_run__free_unpacked(runs[i], NULL);
        }
    }
    free(runs);
}

static bool request_ok(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__WorkflowLogsRequest *r = req->workflow_logs;
    const char *why = NULL;
    if (r->count > LOGS_MAX_COUNT) {
        why = "count must be from 1 to 100";
    } else if (r->cursor[0] != '\0' && !qr_command_is_run_id(r->cursor)) {
        why = "invalid cursor";
    } else if (r->run_id[0] != '\0' && !qr_command_is_run_id(r->run_id)) {
        why = "invalid workflow run id";
    } else if (strlen(r->message_id) > QR_CHECK_MAX_MESSAGE_ID_BYTES) {
        why = "message id too long";
    } else if (r->from_ms != 0 && r->to_ms != 0 && r->from_ms > r->to_ms) {
        why = "fromDate is after toDate";
    }
    if (why != NULL) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST, "%s", why);
        return false;
    }
    return true;
}

void qr_op_workflow_logs(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__WorkflowLogsRequest *r = req->workflow_logs;
    struct qr_ops *ops = op->ops;
    uint64_t now_ms = qr_cluster_now_ms(ops->cluster);
    size_t count = r->count != 0 ? r->count : LOGS_DEFAULT_COUNT;
    struct logs_walk w = {.r = r, .want = count + 1};
    struct qr_store_txn *txn = NULL;
    Qraft__WorkflowLogRun **runs = NULL;
    size_t n_runs = 0;
    size_t bytes = 0;
    const char *cursor = "";
    if (!request_ok(op, req)) {
        return;
    }
    int rv = qr_store_txn_begin(ops->store, false, &txn);
    if (rv == 0) {
        rv = select_runs(txn, &w);
    }
    size_t n = w.runs.n < count ? w.runs.n : count;
    if (rv == 0 && n > 0) {
        runs = calloc(n, sizeof *runs);
        rv = runs == NULL ? -ENOMEM : 0;
    }
    /* Each run's log; the page stops early past LIST_MAX_PAGE_BYTES. */
    for (size_t i = 0; rv == 0 && i < n; i++) {
        rv = read_run_log(txn, (Qraft__WorkflowRun *)w.runs.items[i], now_ms,
                          &runs[n_runs++]);
        w.runs.items[i] = NULL; /* taken */
        if (rv == 0) {
            bytes += qraft__workflow_log_run__get_packed_size(runs[i]);
        }
        if (rv == 0 && bytes >= LIST_MAX_PAGE_BYTES && i + 1 < n) {
            break;
        }
    }
    if (txn != NULL) {
        qr_store_txn_abort(txn);
    }
    if (rv == 0 && (n_runs < w.runs.n ||
                    (w.n_scanned >= LOGS_MAX_SCAN && w.runs.n < w.want))) {
        /* More may follow: from the last run shown, or, when the scan
         * budget ran out first, from the last run examined. */
        cursor = n_runs < w.runs.n || n_runs == count
                     ? runs[n_runs - 1]->run->id
                     : w.last_id;
    }
    if (rv != 0) {
        qr_op_store_error(op, req->id, rv);
    } else {
        Qraft__WorkflowLogsResponse lr = QRAFT__WORKFLOW_LOGS_RESPONSE__INIT;
        lr.runs = runs;
        lr.n_runs = n_runs;
        lr.cursor = (char *)cursor;
        QR_OP_REPLY_BODY(op, req->id, WORKFLOW_LOGS, workflow_logs, &lr);
    }
    free_runs(runs, n_runs);
    for (size_t i = 0; i < w.runs.n; i++) {
        if (w.runs.items[i] != NULL) {
            protobuf_c_message_free_unpacked(w.runs.items[i], NULL);
        }
    }
    free(w.runs.items);
}
