/* Apply of Upstash Workflow runs (docs/workflow.md): a publish that
 * triggers a run or adds a step to it (called from qr_apply_publish), and
 * WorkflowEnd. A run's history entry and the message that delivers it are
 * written in the same transaction: an entry is stored if and only if its
 * delivery exists. Waits, notifies and an invoked run's report to its
 * invoker are apply_wait.c's. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "lib/err.h"
#include "repl/callback.h"
#include "repl/check.h"
#include "repl/command.h"
#include "repl/fsm_int.h"

bool qr_apply_workflow_on(const struct qr_apply_ctx *ctx)
{
    return ctx->fsm->feature_level >= QR_FEATURE_LEVEL_WORKFLOW;
}

const char *qr_apply_run_state_word(Qraft__WorkflowRunState s)
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
    bool call = qr_command_is_workflow_call(wf->call_type);
    if (!qr_command_is_workflow_step(wf->call_type) && !call) {
        qr_apply_set_result(res, QR_EBADREQ,
                            "workflow call type '%.32s' is not supported",
                            wf->call_type);
        return 0;
    }
    if (wf->init && call) {
        qr_apply_set_result(res, QR_EBADREQ,
                            "a workflow run starts with a step, not a call");
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
                            qr_apply_run_state_word(old->state));
        qraft__workflow_run__free_unpacked(old, NULL);
        return 0;
    }
    if (p->max_run_history_bytes != 0 &&
        old->history_bytes + p->request->body.len > p->max_run_history_bytes) {
        qr_apply_set_result(res, QR_ETOOLARGE,
                            "workflow run %.64s's history would be %" PRIu64
                            " bytes; the limit is %" PRIu64
                            " (--max-run-history-bytes)",
                            old->id, old->history_bytes + p->request->body.len,
                            p->max_run_history_bytes);
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
    run->n_failure_callback_headers = m->n_failure_callback_headers;
    run->failure_callback_headers = m->failure_callback_headers;
    run->n_headers = m->n_headers;
    run->headers = m->headers;
    run->n_labels = m->n_labels;
    run->labels = m->labels;
    run->flow_control_key = m->flow_control_key;
    run->flow_parallelism = m->flow_parallelism;
    run->flow_rate = m->flow_rate;
    run->flow_period_s = m->flow_period_s;
}

/* The SDK's step JSON (a step's body): its stepId, concurrent and
 * targetStep, 0 for any that is missing or not a whole number in range.
 * Deterministic: the same bytes give the same numbers on every replica. */
static void read_step(ProtobufCBinaryData body, Qraft__Message *m)
{
    json_error_t jerr;
    json_t *o = json_loadb((const char *)body.data, body.len,
                           JSON_REJECT_DUPLICATES, &jerr);
    uint32_t *fields[] = {&m->workflow_step_id, &m->workflow_concurrent,
                          &m->workflow_target_step};
    const char *names[] = {"stepId", "concurrent", "targetStep"};
    for (size_t i = 0; i < 3; i++) {
        json_t *v = json_object_get(o, names[i]);
        json_int_t n = json_is_integer(v) ? json_integer_value(v) : 0;
        *fields[i] = n > 0 && n <= UINT32_MAX ? (uint32_t)n : 0;
    }
    json_decref(o);
}

void qr_apply_workflow_inherit(const Qraft__WorkflowRun *run,
                               const Qraft__PublishRequest *req,
                               Qraft__Message *m)
{
    if (!req->workflow->init &&
        qr_command_is_workflow_step(req->workflow->call_type)) {
        read_step(m->body, m);
    }
    m->workflow_call_type =
        qr_command_is_workflow_call(req->workflow->call_type) ? "toCallback"
                                                              : "step";
    if (req->workflow->init ||
        qr_command_is_workflow_call(req->workflow->call_type)) {
        /* The trigger is where the settings come from; a call to another
         * URL has its own, and its failure does not fail the run (its
         * callback reports it). */
        return;
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
        m->n_failure_callback_headers = run->n_failure_callback_headers;
        m->failure_callback_headers = run->failure_callback_headers;
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

/* How far back in a run's history implicit_ack looks for the delivery a
 * step result answers. */
#define ACK_LOOKBACK 256u

/* Whether entry e's delivery is one that asks for step result m: a
 * sequential step k is asked for by the delivery of step k-1 (the
 * trigger's for step 1); a parallel branch's result by its plan step. */
static bool asks_for(const Qraft__Message *m,
                     uint32_t seq,
                     const Qraft__WorkflowStep *e)
{
    if (strcmp(e->call_type, "step") != 0) {
        return false;
    }
    if (m->workflow_concurrent > 1) {
        return e->step_id == 0 && e->target_step == m->workflow_step_id;
    }
    if (m->workflow_step_id == 1) {
        return seq == 0;
    }
    return e->step_id == m->workflow_step_id - 1 && e->concurrent <= 1;
}

/* Implicit ack (docs/workflow.md): m, a step result the SDK just stored,
 * proves the delivery that asked for it was answered: the SDK publishes
 * a result, then answers 200. That delivery's message, if it still waits
 * for its result (the 200 may never be committed: a leader crash in
 * between), is marked delivered now, so it is not sent again, and the step
 * whose result is stored is not run again. Plan steps (step id 0) and the
 * first result after a parallel group ack nothing: which delivery asked
 * for them is not known. */
static int implicit_ack(struct qr_apply_ctx *ctx,
                        const Qraft__WorkflowRun *run,
                        const Qraft__Message *m)
{
    if (m->workflow_step_id == 0 ||
        strcmp(m->workflow_call_type, "step") != 0) {
        return 0;
    }
    int rv = 0;
    bool found = false;
    /* A run stores each step once (qr_apply_workflow_duplicate), so one
     * entry asks for m: the walk back ends there. */
    for (uint32_t seq = m->workflow_seq;
         rv == 0 && !found && seq-- > 0 &&
         m->workflow_seq - seq <= ACK_LOOKBACK;) {
        Qraft__WorkflowStep *e = NULL;
        Qraft__Message *c = NULL;
        rv = qr_store_run_step_get(ctx->txn, run->id, seq, &e);
        found = rv == 0 && asks_for(m, seq, e);
        if (found) {
            rv = qr_store_msg_get(ctx->txn, e->message_id, &c);
        }
        if (e != NULL) {
            qraft__workflow_step__free_unpacked(e, NULL);
        }
        if (rv == QR_ENOTFOUND) {
            rv = 0; /* pruned once delivered */
            continue;
        }
        if (c != NULL && (c->state == QRAFT__MESSAGE_STATE__PENDING ||
                          c->state == QRAFT__MESSAGE_STATE__RETRYING)) {
            rv = qr_apply_mark_delivered(ctx, c,
                                         "delivered: the step result it "
                                         "asked for is stored");
        }
        if (c != NULL) {
            qraft__message__free_unpacked(c, NULL);
        }
    }
    return rv;
}

int qr_apply_workflow_duplicate(struct qr_apply_ctx *ctx,
                                const Qraft__WorkflowRun *run,
                                const Qraft__Message *m,
                                struct qr_apply_result *res)
{
    if ((m->workflow_step_id == 0 && m->workflow_target_step == 0) ||
        strcmp(m->workflow_call_type, "step") != 0 || run->next_seq == 0) {
        return 0;
    }
    int rv = 0;
    bool dup = false;
    bool older = false;
    /* Sequential steps are stored in step order (step k is published
     * only once the delivery carrying k-1 came): walking back, the first
     * sequential step below m's id means m is new, so a new step reads
     * one entry or two, not the whole look-back. */
    bool sequential =
        m->workflow_target_step == 0 && m->workflow_concurrent <= 1;
    for (uint32_t seq = run->next_seq; rv == 0 && !dup && !older && seq-- > 1 &&
                                       run->next_seq - seq <= ACK_LOOKBACK;) {
        Qraft__WorkflowStep *e = NULL;
        rv = qr_store_run_step_get(ctx->txn, run->id, seq, &e);
        if (rv == QR_ENOTFOUND) {
            rv = 0;
            continue;
        }
        bool step = rv == 0 && strcmp(e->call_type, "step") == 0;
        dup = step && e->step_id == m->workflow_step_id &&
              e->target_step == m->workflow_target_step;
        older = sequential && step && e->target_step == 0 &&
                e->concurrent <= 1 && e->step_id != 0 &&
                e->step_id < m->workflow_step_id;
        if (dup) {
            snprintf(res->message_id, sizeof res->message_id, "%s",
                     e->message_id);
            res->deduplicated = true;
        }
        if (e != NULL) {
            qraft__workflow_step__free_unpacked(e, NULL);
        }
    }
    return rv != 0 ? rv : dup;
}

int qr_apply_workflow_append(struct qr_apply_ctx *ctx,
                             Qraft__WorkflowRun *run,
                             const Qraft__PublishRequest *req,
                             const Qraft__Message *m)
{
    Qraft__WorkflowStep st = QRAFT__WORKFLOW_STEP__INIT;
    Qraft__WorkflowInvoker invoker = QRAFT__WORKFLOW_INVOKER__INIT;
    struct qr_invoke inv = {0};
    st.message_id = m->id;
    st.call_type = m->workflow_call_type;
    st.body = m->body;
    st.created_ms = ctx->now_ms;
    st.step_id = m->workflow_step_id;
    st.concurrent = m->workflow_concurrent;
    st.target_step = m->workflow_target_step;
    if (req->workflow->init) {
        run_from_trigger(run, req, m, ctx->now_ms);
    }
    if (req->workflow->init && req->workflow->invoke &&
        qr_command_parse_invoke(m->body.data, m->body.len, &inv) == 0) {
        /* context.invoke: the run starts from the payload inside, and its
         * end goes back to the invoking run
         * (qr_apply_workflow_notify_invoker). The face refuses a body that
         * does not parse; here it is a plain run. */
        st.body.data = (uint8_t *)inv.body;
        st.body.len = inv.body_len;
        invoker.run_id = inv.run_id;
        invoker.url = inv.url;
        invoker.step.data = (uint8_t *)inv.step_json;
        invoker.step.len = strlen(inv.step_json);
        run->invoker = &invoker;
    }
    int rv = qr_store_run_step_put(ctx->txn, run->id, m->workflow_seq, &st);
    if (rv == 0) {
        run->next_seq = m->workflow_seq + 1;
        run->history_bytes += st.body.len;
        rv = qr_store_run_put(ctx->txn, run);
    }
    if (rv == 0 && !req->workflow->init) {
        rv = implicit_ack(ctx, run, m);
    }
    if (run->invoker == &invoker) {
        run->invoker = NULL; /* a trigger's run borrows; nothing to free */
    }
    qr_command_invoke_free(&inv);
    return rv;
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

/* Stores run, which has just ended: the events it waited for wait no
 * more (its waiters go), and a run that another one invoked reports its
 * outcome to it. */
static int put_ended_run(struct qr_apply_ctx *ctx, Qraft__WorkflowRun *run)
{
    int rv = qr_apply_workflow_notify_invoker(ctx, run);
    for (size_t i = 0; rv == 0 && i < run->n_waiting_events; i++) {
        rv = qr_store_waiter_delete(ctx->txn, run->waiting_events[i], run->id);
    }
    size_t n = run->n_waiting_events;
    run->n_waiting_events = 0;
    if (rv == 0) {
        rv = qr_store_run_put(ctx->txn, run);
    }
    run->n_waiting_events = n; /* run's own, freed with it */
    return rv;
}

/* Cancels every message of run that is not final yet (each history entry
 * names the message that delivers it), but skip_id (NULL: none); with
 * detail NULL (the run finished), marks them delivered instead. */
static int cancel_run_messages(struct qr_apply_ctx *ctx,
                               const Qraft__WorkflowRun *run,
                               const char *skip_id,
                               const char *detail)
{
    struct run_ids l = {0};
    int rv = run->next_seq == 0
                 ? 0
                 : qr_store_run_steps(ctx->txn, run->id, 0, run->next_seq - 1,
                                      collect_id, &l);
    for (size_t i = 0; rv == 0 && i < l.n; i++) {
        Qraft__Message *m = NULL;
        if (skip_id != NULL && strcmp(l.ids[i], skip_id) == 0) {
            continue;
        }
        rv = qr_store_msg_get(ctx->txn, l.ids[i], &m);
        if (rv == QR_ENOTFOUND) {
            rv = 0; /* pruned after it was delivered */
            continue;
        }
        bool waiting = rv == 0 && !qr_apply_is_final(m->state);
        if (waiting && detail == NULL) {
            /* The run finished: the deliveries still waiting for their
             * answer (the one that finished it, and any whose step is
             * moot now) are done, as an implicit ack would have them. A
             * context.call in flight goes on: its callback is refused. */
            if (m->state != QRAFT__MESSAGE_STATE__QUEUED &&
                strcmp(m->workflow_call_type, "toCallback") != 0) {
                rv = qr_apply_mark_delivered(
                    ctx, m, "delivered: its workflow run finished");
            }
        } else if (waiting) {
            rv = qr_apply_cancel_message(ctx, m, detail);
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
    rv = cancel_run_messages(ctx, run, NULL,
                             e->cancel ? "workflow run cancelled" : NULL);
    if (rv == 0) {
        rv = put_ended_run(ctx, run);
    }
    run->result = kept; /* run's own, freed with it */
    qraft__workflow_run__free_unpacked(run, NULL);
    return rv;
}

/* ------------------------------------------------------------------------ */
/* A step that failed for good. */

int qr_apply_workflow_failed(struct qr_apply_ctx *ctx,
                             const Qraft__Message *m,
                             struct qr_apply_failed_run *out)
{
    memset(out, 0, sizeof *out);
    if (!qr_apply_workflow_on(ctx) ||
        !qr_command_is_run_id(m->workflow_run_id) ||
        strcmp(m->workflow_call_type, "toCallback") == 0) {
        /* A call that failed is reported by its callback, which the SDK
         * reads; the run goes on. */
        return 0;
    }
    int rv = qr_store_run_get(ctx->txn, m->workflow_run_id, &out->run);
    if (rv == QR_ENOTFOUND) {
        return 0; /* a run gone: the message fails on its own */
    }
    if (rv == 0) {
        rv = qr_store_run_step_get(ctx->txn, out->run->id, 0, &out->first);
        if (rv == QR_ENOTFOUND) {
            rv = 0; /* no initial payload to report */
        }
    }
    if (rv == 0 && out->run->state == QRAFT__WORKFLOW_RUN_STATE__RUN_RUNNING) {
        /* The run ends here: its other messages are cancelled, and the
         * failure callback (built by the caller) reports it. */
        out->run->state = QRAFT__WORKFLOW_RUN_STATE__RUN_FAILED;
        out->run->ended_ms = ctx->now_ms;
        char *kept = out->run->failed_message_id;
        out->run->failed_message_id = m->id;
        rv = cancel_run_messages(ctx, out->run, m->id, "workflow run failed");
        if (rv == 0) {
            rv = put_ended_run(ctx, out->run);
        }
        out->run->failed_message_id = kept;
    }
    if (rv != 0) {
        qr_apply_workflow_failed_free(out);
        return rv;
    }
    out->cb.run_id = out->run->id;
    out->cb.created_ms = out->run->created_ms;
    if (out->first != NULL) {
        out->cb.initial_body = out->first->body;
    }
    return 0;
}

void qr_apply_workflow_failed_free(struct qr_apply_failed_run *f)
{
    if (f->run != NULL) {
        qraft__workflow_run__free_unpacked(f->run, NULL);
    }
    if (f->first != NULL) {
        qraft__workflow_step__free_unpacked(f->first, NULL);
    }
    memset(f, 0, sizeof *f);
}

/* ------------------------------------------------------------------------ */
/* The callback of a context.call. */

int qr_apply_workflow_callback(struct qr_apply_ctx *ctx,
                               const Qraft__Message *call,
                               Qraft__Message *cb)
{
    if (!qr_apply_workflow_on(ctx) ||
        strcmp(call->workflow_call_type, "toCallback") != 0 ||
        !qr_command_is_run_id(call->workflow_run_id)) {
        return 0;
    }
    Qraft__WorkflowRun *run = NULL;
    int rv = qr_store_run_get(ctx->txn, call->workflow_run_id, &run);
    if (rv == QR_ENOTFOUND) {
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    if (run->state == QRAFT__WORKFLOW_RUN_STATE__RUN_RUNNING) {
        /* Its own entry: the SDK, lazy-fetching an empty callback body,
         * looks the callback's message id up in the history. */
        cb->workflow_run_id = call->workflow_run_id;
        cb->workflow_call_type = "fromCallback";
        cb->workflow_seq = run->next_seq;
        Qraft__WorkflowStep st = QRAFT__WORKFLOW_STEP__INIT;
        st.message_id = cb->id;
        st.call_type = "fromCallback";
        st.body = cb->body;
        st.created_ms = ctx->now_ms;
        rv = qr_store_run_step_put(ctx->txn, run->id, cb->workflow_seq, &st);
        if (rv == 0) {
            run->next_seq++;
            run->history_bytes += cb->body.len;
            rv = qr_store_run_put(ctx->txn, run);
        }
    }
    qraft__workflow_run__free_unpacked(run, NULL);
    return rv;
}

/* ------------------------------------------------------------------------ */
/* Workflow DLQ: resume and restart. */

/* Loads m's run when it failed (1), else 0 (no run, another state) or a
 * store error. */
static int failed_run_of(struct qr_apply_ctx *ctx,
                         const Qraft__Message *m,
                         Qraft__WorkflowRun **run)
{
    *run = NULL;
    if (!qr_apply_workflow_on(ctx) ||
        !qr_command_is_run_id(m->workflow_run_id) ||
        strcmp(m->workflow_call_type, "toCallback") == 0) {
        return 0;
    }
    int rv = qr_store_run_get(ctx->txn, m->workflow_run_id, run);
    if (rv == QR_ENOTFOUND) {
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    if ((*run)->state != QRAFT__WORKFLOW_RUN_STATE__RUN_FAILED) {
        qraft__workflow_run__free_unpacked(*run, NULL);
        *run = NULL;
        return 0;
    }
    return 1;
}

/* Stores run running again. */
static int put_reopened(struct qr_apply_ctx *ctx, Qraft__WorkflowRun *run)
{
    char *failed = run->failed_message_id;
    run->state = QRAFT__WORKFLOW_RUN_STATE__RUN_RUNNING;
    run->ended_ms = 0;
    run->failed_message_id = "";
    int rv = qr_store_run_put(ctx->txn, run);
    run->failed_message_id = failed; /* the record's own, freed with it */
    return rv;
}

int qr_apply_workflow_reopen(struct qr_apply_ctx *ctx, const Qraft__Message *m)
{
    Qraft__WorkflowRun *run = NULL;
    int rv = failed_run_of(ctx, m, &run);
    if (rv == 1) {
        rv = put_reopened(ctx, run);
        qraft__workflow_run__free_unpacked(run, NULL);
    }
    return rv;
}

/* A restart: the history is cut back to the initial payload, the dead
 * letter leaves the DLQ, and a new message (the command's id) delivers the
 * first entry again, with the run's settings. */
static int restart_run(struct qr_apply_ctx *ctx,
                       Qraft__WorkflowRun *run,
                       const Qraft__Message *dead,
                       const char *new_id,
                       struct qr_apply_result *res)
{
    Qraft__WorkflowStep *first = NULL;
    Qraft__Message *taken = NULL;
    int rv = qr_store_msg_get(ctx->txn, new_id, &taken);
    if (rv == 0) {
        qraft__message__free_unpacked(taken, NULL);
        qr_apply_set_result(res, QR_ECONFLICT, "message id %s exists already",
                            new_id);
        return 0;
    }
    if (rv != QR_ENOTFOUND) {
        return rv;
    }
    rv = qr_store_run_step_get(ctx->txn, run->id, 0, &first);
    if (rv == QR_ENOTFOUND) {
        qr_apply_set_result(res, QR_ECONFLICT,
                            "workflow run %s has no initial payload", run->id);
        return 0;
    }
    if (rv == 0) {
        rv = qr_store_run_steps_truncate(ctx->txn, run->id, 1);
    }
    if (rv == 0) {
        run->next_seq = 1;
        run->history_bytes = first->body.len;
        rv = put_reopened(ctx, run);
    }
    if (rv == 0) {
        rv = qr_store_msg_delete(ctx->txn, dead->id);
    }
    if (rv == 0) {
        rv = qr_apply_event(ctx, dead, "deleted from the DLQ: run restarted");
    }
    if (rv == 0) {
        Qraft__Message m = QRAFT__MESSAGE__INIT;
        m.id = (char *)new_id;
        m.url = run->url;
        m.method = "POST";
        m.body = first->body;
        m.state = QRAFT__MESSAGE_STATE__PENDING;
        m.max_retries = run->max_retries;
        m.retry_delay = run->retry_delay;
        m.retry_options = run->retry_options;
        m.timeout_ms = run->timeout_ms;
        m.failure_callback = run->failure_callback;
        m.n_failure_callback_headers = run->n_failure_callback_headers;
        m.failure_callback_headers = run->failure_callback_headers;
        m.n_labels = run->n_labels;
        m.labels = run->labels;
        m.flow_control_key = run->flow_control_key;
        m.flow_parallelism = run->flow_parallelism;
        m.flow_rate = run->flow_rate;
        m.flow_period_s = run->flow_period_s;
        m.not_before_ms = ctx->now_ms;
        m.next_attempt_ms = ctx->now_ms;
        m.created_ms = ctx->now_ms;
        m.updated_ms = ctx->now_ms;
        qr_apply_place(ctx, &m);
        m.workflow_run_id = run->id;
        m.workflow_seq = 0;
        m.workflow_call_type = "step";
        rv = qr_store_msg_put(ctx->txn, &m);
        if (rv == 0) {
            qr_apply_note_due(ctx, m.next_attempt_ms);
            rv = qr_apply_event(ctx, &m, "workflow run restarted");
        }
    }
    qraft__workflow_step__free_unpacked(first, NULL);
    return rv;
}

/* The dead letter m's failure callback, sent again: built from what its
 * last attempt got, as when it was dead-lettered (the run, when m is a
 * workflow step, stays as it is). */
static int rerun_failure_callback(struct qr_apply_ctx *ctx,
                                  const Qraft__WorkflowResume *r,
                                  const Qraft__Message *m,
                                  struct qr_apply_result *res)
{
    if (m->failure_callback[0] == '\0') {
        qr_apply_set_result(res, QR_ECONFLICT,
                            "message %s has no failure callback", m->id);
        return 0;
    }
    Qraft__WorkflowRun *run = NULL;
    Qraft__WorkflowStep *first = NULL;
    struct qr_callback_run cr = {0};
    int rv = 0;
    if (qr_command_is_run_id(m->workflow_run_id)) {
        rv = qr_store_run_get(ctx->txn, m->workflow_run_id, &run);
        if (rv == 0) {
            rv = qr_store_run_step_get(ctx->txn, run->id, 0, &first);
            rv = rv == QR_ENOTFOUND ? 0 : rv;
            cr.run_id = run->id;
            cr.created_ms = run->created_ms;
            if (first != NULL) {
                cr.initial_body = first->body;
            }
        } else if (rv == QR_ENOTFOUND) {
            rv = 0;
        }
    }
    Qraft__DeliveryResult dr = QRAFT__DELIVERY_RESULT__INIT;
    dr.message_id = m->id;
    dr.attempt = m->attempts > 0 ? m->attempts - 1 : 0;
    dr.outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_DEAD;
    dr.error = m->last_error;
    dr.response = m->last_response;
    if (rv == 0) {
        rv = qr_apply_create_callback(ctx, r->default_timeout_ms, m, &dr,
                                      QRAFT__CALLBACK_KIND__FAILURE_CALLBACK,
                                      run != NULL ? &cr : NULL);
    }
    if (first != NULL) {
        qraft__workflow_step__free_unpacked(first, NULL);
    }
    if (run != NULL) {
        qraft__workflow_run__free_unpacked(run, NULL);
    }
    return rv;
}

int qr_apply_workflow_resume(struct qr_apply_ctx *ctx,
                             const Qraft__WorkflowResume *r,
                             struct qr_apply_result *res)
{
    if (!qr_check_message_id(r->message_id) ||
        (r->restart && !qr_check_message_id(r->new_message_id))) {
        qr_apply_set_result(res, QR_EBADREQ, "invalid workflow resume");
        return 0;
    }
    snprintf(res->message_id, sizeof res->message_id, "%s", r->message_id);
    Qraft__Message *m = NULL;
    int rv = qr_store_msg_get(ctx->txn, r->message_id, &m);
    if (rv == QR_ENOTFOUND ||
        (rv == 0 && m->state != QRAFT__MESSAGE_STATE__DEAD_LETTERED)) {
        qr_apply_set_result(res, QR_ENOTFOUND, "dlq message %s not found",
                            r->message_id);
        rv = 0;
        goto out;
    }
    if (rv != 0) {
        goto out;
    }
    if (r->failure_callback) {
        rv = rerun_failure_callback(ctx, r, m, res);
        goto out;
    }
    Qraft__WorkflowRun *run = NULL;
    rv = failed_run_of(ctx, m, &run);
    if (rv == 0) {
        qr_apply_set_result(res, QR_ECONFLICT,
                            "message %s is no step of a failed workflow run",
                            m->id);
        goto out;
    }
    if (rv == 1 && !r->restart) {
        qraft__workflow_run__free_unpacked(run, NULL);
        Qraft__DlqReplay replay = QRAFT__DLQ_REPLAY__INIT;
        replay.message_id = m->id;
        rv = qr_apply_dlq_replay(ctx, &replay, res); /* reopens the run */
    } else if (rv == 1) {
        rv = restart_run(ctx, run, m, r->new_message_id, res);
        qraft__workflow_run__free_unpacked(run, NULL);
    }
out:
    if (m != NULL) {
        qraft__message__free_unpacked(m, NULL);
    }
    return rv;
}
