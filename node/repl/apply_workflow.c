/* Apply of Upstash Workflow runs (docs/workflow.md): a publish that
 * triggers a run or adds a step to it (called from qr_apply_publish), and
 * WorkflowEnd. A run's history entry and the message that delivers it are
 * written in the same transaction: an entry is stored if and only if its
 * delivery exists. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "repl/check.h"
#include "repl/fsm_int.h"

bool qr_apply_workflow_on(const struct qr_apply_ctx *ctx)
{
    return ctx->fsm->feature_level >= QR_FEATURE_LEVEL_WORKFLOW;
}

static const char *run_state_word(Qraft__WorkflowRunState s)
{
    switch (s) {
        case QRAFT__WORKFLOW_RUN_STATE__RUN_RUNNING:
            return "running";
        case QRAFT__WORKFLOW_RUN_STATE__RUN_SUCCESS:
            return "finished";
        case QRAFT__WORKFLOW_RUN_STATE__RUN_FAILED:
            return "failed";
        case QRAFT__WORKFLOW_RUN_STATE__RUN_CANCELED:
            return "cancelled";
        default:
            return "in an unknown state";
    }
}

int qr_apply_workflow_begin(struct qr_apply_ctx *ctx,
                            const Qraft__Publish *p,
                            Qraft__WorkflowRun **run,
                            struct qr_apply_result *res)
{
    const Qraft__WorkflowPublish *wf = p->request->workflow;
    *run = NULL;
    if (!qr_command_is_run_id(wf->run_id)) {
        qr_apply_set_result(res, QR_EBADREQ, "invalid workflow run id");
        return 0;
    }
    if (!qr_command_is_workflow_step(wf->call_type)) {
        qr_apply_set_result(res, QR_EBADREQ,
                            "workflow call type '%.32s' is not supported",
                            wf->call_type);
        return 0;
    }
    Qraft__WorkflowRun *old = NULL;
    int rv = qr_store_run_get(ctx->txn, wf->run_id, &old);
    if (rv != 0 && rv != QR_ENOTFOUND) {
        return rv;
    }
    if (wf->init) {
        if (old != NULL) {
            /* The run id is the trigger's dedup key, for as long as the
             * run is stored. */
            snprintf(res->message_id, sizeof res->message_id, "%s",
                     old->trigger_message_id);
            res->deduplicated = true;
            qraft__workflow_run__free_unpacked(old, NULL);
            return 0;
        }
        *run = calloc(1, sizeof **run);
        if (*run == NULL) {
            return -ENOMEM;
        }
        qraft__workflow_run__init(*run);
        return 1;
    }
    if (old == NULL) {
        qr_apply_set_result(res, QR_EBADREQ, "workflow run %s does not exist",
                            wf->run_id);
        return 0;
    }
    if (old->state != QRAFT__WORKFLOW_RUN_STATE__RUN_RUNNING) {
        /* The SDK takes a 400 here for "the run is over" and stops. */
        qr_apply_set_result(res, QR_EBADREQ, "workflow run %s is %s", old->id,
                            run_state_word(old->state));
        qraft__workflow_run__free_unpacked(old, NULL);
        return 0;
    }
    *run = old;
    return 1;
}

/* A trigger: the run takes m's settings, which its steps inherit. Only
 * borrowed pointers go into run (freed with free_run). */
static void run_from_trigger(Qraft__WorkflowRun *run,
                             const Qraft__PublishRequest *req,
                             const Qraft__Message *m,
                             uint64_t now_ms)
{
    const Qraft__WorkflowPublish *wf = req->workflow;
    run->id = wf->run_id;
    run->url = wf->url[0] != '\0' ? wf->url : m->url;
    run->state = QRAFT__WORKFLOW_RUN_STATE__RUN_RUNNING;
    run->created_ms = now_ms;
    run->trigger_message_id = m->id;
    run->max_retries = m->max_retries;
    run->retry_delay = m->retry_delay;
    run->retry_options = m->retry_options;
    run->timeout_ms = m->timeout_ms;
    run->failure_callback = m->failure_callback;
    run->n_headers = m->n_headers;
    run->headers = m->headers;
    run->n_labels = m->n_labels;
    run->labels = m->labels;
    run->flow_control_key = m->flow_control_key;
    run->flow_parallelism = m->flow_parallelism;
    run->flow_rate = m->flow_rate;
    run->flow_period_s = m->flow_period_s;
}

void qr_apply_workflow_inherit(const Qraft__WorkflowRun *run,
                               const Qraft__PublishRequest *req,
                               Qraft__Message *m)
{
    if (req->workflow->init) {
        return; /* the trigger is where the settings come from */
    }
    if (!req->retries_set) {
        m->max_retries = run->max_retries;
    }
    if (req->retry_delay[0] == '\0') {
        m->retry_delay = run->retry_delay;
    }
    if (req->retry_options == NULL) {
        m->retry_options = run->retry_options;
    }
    if (req->timeout_ms == 0) {
        m->timeout_ms = run->timeout_ms;
    }
    if (req->failure_callback[0] == '\0') {
        m->failure_callback = run->failure_callback;
    }
    if (req->n_labels == 0) {
        m->n_labels = run->n_labels;
        m->labels = run->labels;
    }
    if (req->flow_control_key[0] == '\0') {
        m->flow_control_key = run->flow_control_key;
        m->flow_parallelism = run->flow_parallelism;
        m->flow_rate = run->flow_rate;
        m->flow_period_s = run->flow_period_s;
    }
}

int qr_apply_workflow_append(struct qr_apply_ctx *ctx,
                             Qraft__WorkflowRun *run,
                             const Qraft__PublishRequest *req,
                             const Qraft__Message *m)
{
    if (req->workflow->init) {
        run_from_trigger(run, req, m, ctx->now_ms);
    }
    Qraft__WorkflowStep st = QRAFT__WORKFLOW_STEP__INIT;
    st.message_id = m->id;
    st.call_type = "step";
    st.body = m->body;
    st.created_ms = ctx->now_ms;
    int rv = qr_store_run_step_put(ctx->txn, run->id, m->workflow_seq, &st);
    if (rv != 0) {
        return rv;
    }
    run->next_seq = m->workflow_seq + 1;
    run->history_bytes += m->body.len;
    return qr_store_run_put(ctx->txn, run);
}

void qr_apply_workflow_free(Qraft__WorkflowRun *run, bool created)
{
    if (run == NULL) {
        return;
    }
    if (created) {
        free(run); /* its fields are borrowed from the command */
    } else {
        qraft__workflow_run__free_unpacked(run, NULL);
    }
}

/* ------------------------------------------------------------------------ */
/* WorkflowEnd. */

struct run_ids {
    char **ids;
    size_t n;
    size_t cap;
};

static int collect_id(void *arg, uint32_t seq, const Qraft__WorkflowStep *st)
{
    struct run_ids *l = arg;
    (void)seq;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        char **grown = realloc(l->ids, cap * sizeof *grown);
        if (grown == NULL) {
            return -ENOMEM;
        }
        l->ids = grown;
        l->cap = cap;
    }
    l->ids[l->n] = strdup(st->message_id);
    if (l->ids[l->n] == NULL) {
        return -ENOMEM;
    }
    l->n++;
    return 0;
}

/* Cancels every message of run that is not final yet (each history entry
 * names the message that delivers it). */
static int cancel_run_messages(struct qr_apply_ctx *ctx,
                               const Qraft__WorkflowRun *run)
{
    struct run_ids l = {0};
    int rv = run->next_seq == 0
                 ? 0
                 : qr_store_run_steps(ctx->txn, run->id, 0, run->next_seq - 1,
                                      collect_id, &l);
    for (size_t i = 0; rv == 0 && i < l.n; i++) {
        Qraft__Message *m = NULL;
        rv = qr_store_msg_get(ctx->txn, l.ids[i], &m);
        if (rv == QR_ENOTFOUND) {
            rv = 0; /* pruned after it was delivered */
            continue;
        }
        if (rv == 0 && !qr_apply_is_final(m->state)) {
            rv = qr_apply_cancel_message(ctx, m, "workflow run cancelled");
        }
        if (m != NULL) {
            qraft__message__free_unpacked(m, NULL);
        }
    }
    for (size_t i = 0; i < l.n; i++) {
        free(l.ids[i]);
    }
    free(l.ids);
    return rv;
}

int qr_apply_workflow_end(struct qr_apply_ctx *ctx,
                          const Qraft__WorkflowEnd *e,
                          struct qr_apply_result *res)
{
    if (!qr_command_is_run_id(e->run_id)) {
        qr_apply_set_result(res, QR_EBADREQ, "invalid workflow run id");
        return 0;
    }
    Qraft__WorkflowRun *run = NULL;
    int rv = qr_store_run_get(ctx->txn, e->run_id, &run);
    if (rv == QR_ENOTFOUND) {
        qr_apply_set_result(res, QR_ENOTFOUND, "workflow run %s not found",
                            e->run_id);
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    if (run->state != QRAFT__WORKFLOW_RUN_STATE__RUN_RUNNING) {
        /* Ended already: the same answer again (the SDK may repeat its
         * DELETE after a lost answer). */
        qraft__workflow_run__free_unpacked(run, NULL);
        return 0;
    }
    run->state = e->cancel ? QRAFT__WORKFLOW_RUN_STATE__RUN_CANCELED
                           : QRAFT__WORKFLOW_RUN_STATE__RUN_SUCCESS;
    run->ended_ms = ctx->now_ms;
    ProtobufCBinaryData kept = run->result;
    run->result = e->result;
    rv = e->cancel ? cancel_run_messages(ctx, run) : 0;
    if (rv == 0) {
        rv = qr_store_run_put(ctx->txn, run);
    }
    run->result = kept; /* run's own, freed with it */
    qraft__workflow_run__free_unpacked(run, NULL);
    return rv;
}
