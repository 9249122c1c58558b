/* libqraft's workflow runs (include/qraft.h): the run log over the
 * workflow_logs RPC (runs with their steps and the state of each step's
 * message), bulk cancel over workflow_end, and the workflow DLQ's resume
 * and restart over workflow_dlq. A resume or restart is not repeated after
 * an ambiguous failure (like a DLQ replay); a cancel is. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "qraft.h"
#include "qraft.pb-c.h"

/* Indexed by Qraft__WorkflowRunState. */
static const char *const run_states[] = {"unspecified", "running", "success",
                                         "failed", "canceled"};
#define N_RUN_STATES (sizeof run_states / sizeof run_states[0])

static int run_state_parse(const char *name)
{
    return qr_client_name_index(run_states, N_RUN_STATES, name);
}

int qraft_workflow_state_check(const char *name)
{
    return run_state_parse(name) < 0 ? QRAFT_EINVAL : 0;
}

void qraft_workflow_page_free(struct qraft_workflow_page *p)
{
    if (p == NULL) {
        return;
    }
    for (size_t i = 0; i < p->n_runs; i++) {
        struct qraft_workflow_run *r = &p->runs[i];
        free(r->id);
        free(r->url);
        free(r->state);
        free(r->failed_message_id);
        for (size_t j = 0; j < r->n_steps; j++) {
            free(r->steps[j].call_type);
            free(r->steps[j].message_id);
        }
        free(r->steps);
    }
    free(p->runs);
    free(p->cursor);
    free(p);
}

/* Fills r from pr; false when out of memory (r is freed with the page). */
static bool run_from_pb(const Qraft__WorkflowLogRun *pr,
                        struct qraft_workflow_run *r)
{
    bool oom = false;
    const Qraft__WorkflowRun *run = pr->run;
    size_t st = run != NULL && (size_t)run->state < N_RUN_STATES
                    ? (size_t)run->state
                    : 0;
    r->id = qr_client_dup_str(run != NULL ? run->id : "", &oom);
    r->url = qr_client_dup_str(run != NULL ? run->url : "", &oom);
    r->state = qr_client_dup_str(run_states[st], &oom);
    r->failed_message_id =
        qr_client_dup_str(run != NULL ? run->failed_message_id : "", &oom);
    r->created_ms = run != NULL ? run->created_ms : 0;
    r->ended_ms = run != NULL ? run->ended_ms : 0;
    if (oom || pr->n_steps == 0) {
        return !oom;
    }
    r->steps = calloc(pr->n_steps, sizeof *r->steps);
    if (r->steps == NULL) {
        return false;
    }
    for (size_t i = 0; i < pr->n_steps; i++) {
        const Qraft__WorkflowLogStep *ps = pr->steps[i];
        struct qraft_workflow_step *s = &r->steps[i];
        r->n_steps = i + 1;
        s->seq = ps->seq;
        s->call_type = qr_client_dup_str(
            ps->step != NULL ? ps->step->call_type : "", &oom);
        s->message_id = qr_client_dup_str(
            ps->step != NULL ? ps->step->message_id : "", &oom);
        s->created_ms = ps->step != NULL ? ps->step->created_ms : 0;
        s->step_id = ps->step != NULL ? ps->step->step_id : 0;
        s->state = ps->message != NULL ? qr_client_to_state(ps->message->state)
                                       : QRAFT_STATE_UNSPECIFIED;
    }
    return !oom;
}

int qraft_workflow_runs(struct qraft_client *c,
                        const struct qraft_workflow_filter *f,
                        const char *cursor,
                        uint32_t count,
                        struct qraft_workflow_page **out)
{
    Qraft__WorkflowLogsRequest lr = QRAFT__WORKFLOW_LOGS_REQUEST__INIT;
    char *label = NULL;
    if (f != NULL) {
        int st = 0;
        if (f->state != NULL && f->state[0] != '\0' &&
            (st = run_state_parse(f->state)) < 0) {
            return qr_client_fail(c, QRAFT_EINVAL,
                                  "unknown run state '%s': expected running, "
                                  "success, failed or canceled",
                                  f->state);
        }
        lr.state = (Qraft__WorkflowRunState)st;
        lr.run_id = qr_client_or_empty(f->run_id);
        lr.url = qr_client_or_empty(f->url);
        lr.message_id = qr_client_or_empty(f->message_id);
        lr.from_ms = f->from_ms;
        lr.to_ms = f->to_ms;
        if (f->label != NULL && f->label[0] != '\0') {
            label = (char *)f->label;
            lr.labels = &label;
            lr.n_labels = 1;
        }
    }
    lr.cursor = qr_client_or_empty(cursor);
    lr.count = count;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_WORKFLOW_LOGS;
    req.workflow_logs = &lr;
    Qraft__Response *resp = NULL;
    int rc = qr_client_call_expect(c, &req, RETRY_ANY,
                                   QRAFT__RESPONSE__BODY_WORKFLOW_LOGS, &resp);
    if (rc != 0) {
        return rc;
    }
    const Qraft__WorkflowLogsResponse *r = resp->workflow_logs;
    struct qraft_workflow_page *p = calloc(1, sizeof *p);
    bool ok = p != NULL;
    if (ok && r->n_runs > 0) {
        p->runs = calloc(r->n_runs, sizeof *p->runs);
        ok = p->runs != NULL;
    }
    for (size_t i = 0; ok && i < r->n_runs; i++) {
        p->n_runs = i + 1;
        ok = run_from_pb(r->runs[i], &p->runs[i]);
    }
    bool oom = !ok;
    if (ok) {
        p->cursor = qr_client_dup_str(r->cursor, &oom);
    }
    qraft__response__free_unpacked(resp, NULL);
    if (oom) {
        qraft_workflow_page_free(p);
        return qr_client_fail(c, QRAFT_ENOMEM, "out of memory for runs");
    }
    *out = p;
    return 0;
}

static int check_ids(struct qraft_client *c,
                     const char *const *ids,
                     size_t n,
                     const char *what)
{
    if (n == 0 || ids == NULL) {
        return qr_client_fail(c, QRAFT_EINVAL, "at least one %s is required",
                              what);
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == NULL || ids[i][0] == '\0') {
            return qr_client_fail(c, QRAFT_EINVAL, "%s %zu is empty", what, i);
        }
    }
    return 0;
}

int qraft_workflow_cancel(struct qraft_client *c,
                          const char *const *run_ids,
                          size_t n,
                          struct qraft_bulk **out)
{
    int rc = check_ids(c, run_ids, n, "run id");
    if (rc != 0) {
        return rc;
    }
    Qraft__WorkflowEndRequest end = QRAFT__WORKFLOW_END_REQUEST__INIT;
    end.cancel = true;
    end.run_ids = (char **)run_ids;
    end.n_run_ids = n;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_WORKFLOW_END;
    req.workflow_end = &end;
    return qr_client_call_bulk(c, &req, RETRY_ANY, out);
}

int qraft_workflow_dlq(struct qraft_client *c,
                       const char *const *message_ids,
                       size_t n,
                       bool restart,
                       struct qraft_bulk **out)
{
    int rc = check_ids(c, message_ids, n, "message id");
    if (rc != 0) {
        return rc;
    }
    Qraft__WorkflowDlqRequest dr = QRAFT__WORKFLOW_DLQ_REQUEST__INIT;
    dr.message_ids = (char **)message_ids;
    dr.n_message_ids = n;
    dr.restart = restart;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_WORKFLOW_DLQ;
    req.workflow_dlq = &dr;
    return qr_client_call_bulk(c, &req, RETRY_UNSENT, out);
}
