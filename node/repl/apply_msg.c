/* Apply of the message commands: publish, cancel, DLQ replay and delete,
 * and the delivery results a worker proposes (with the callbacks they
 * create). A message's state changes here and in apply_queue.c only. */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "lib/traceparent.h"
#include "repl/callback.h"
#include "repl/check.h"
#include "repl/fsm_int.h"
#include "repl/redact.h"

/* Redaction is kept from feature level 6 on; below it apply ignores the
 * spec as nodes before it do (command.h), so replicas agree. */
static bool redact_on(const struct qr_apply_ctx *ctx)
{
    return ctx->fsm->feature_level >= QR_FEATURE_LEVEL_REDACT;
}

/* Writes upd, a message that needs its redacted parts no more (delivered,
 * cancelled), with placeholders instead of them; upd itself is left as it
 * was. */
static int put_dropping_redacted(struct qr_apply_ctx *ctx,
                                 const Qraft__Message *upd)
{
    struct qr_redact_scratch s = {0};
    Qraft__Message out = *upd;
    int rv = qr_redact_drop(&out, &s);
    if (rv == 0) {
        rv = qr_store_msg_put(ctx->txn, &out);
    }
    qr_redact_scratch_free(&s);
    return rv;
}

int qr_apply_dedup_seen(struct qr_apply_ctx *ctx,
                        char **keys,
                        size_t n_keys,
                        struct qr_apply_result *res)
{
    for (size_t i = 0; i < n_keys; i++) {
        char *existing = NULL;
        int rv = qr_store_dedup_get(ctx->txn, keys[i], ctx->now_ms, &existing);
        if (rv == 0) {
            snprintf(res->message_id, sizeof res->message_id, "%s", existing);
            res->deduplicated = true;
            free(existing);
            return 1;
        }
        if (rv != QR_ENOTFOUND) {
            return rv;
        }
    }
    return 0;
}

int qr_apply_publish(struct qr_apply_ctx *ctx,
                     const Qraft__Publish *p,
                     struct qr_apply_result *res)
{
    const Qraft__PublishRequest *req = p->request;
    int rv;

    if (req == NULL || p->message_id[0] == '\0') {
        qr_apply_set_result(res, QR_EBADREQ, "publish without a request");
        return 0;
    }
    /* Checked by the leader's face; never trusted here. */
    char why[160];
    if (redact_on(ctx) &&
        qr_command_check_redact(req->redact, why, sizeof why) != 0) {
        qr_apply_set_result(res, QR_EBADREQ, "%s", why);
        return 0;
    }
    if (req->queue[0] != '\0' && qr_apply_queues_on(ctx) &&
        !qr_apply_queue_name_ok(req->queue)) {
        qr_apply_set_result(res, QR_EBADREQ, "queue name is invalid");
        return 0;
    }
    /* A dedup key seen within its window answers with the message it
     * created and stores nothing. */
    rv = qr_apply_dedup_seen(ctx, p->dedup_keys, p->n_dedup_keys, res);
    if (rv != 0) {
        return rv < 0 ? rv : 0;
    }

    Qraft__Message *old = NULL;
    rv = qr_store_msg_get(ctx->txn, p->message_id, &old);
    if (rv == 0) {
        qraft__message__free_unpacked(old, NULL);
        qr_apply_set_result(res, QR_ECONFLICT, "message id %s exists already",
                            p->message_id);
        return 0;
    }
    if (rv != QR_ENOTFOUND) {
        return rv;
    }
    rv = 0;
    /* A workflow trigger or step: 1 with its run loaded (or new, for a
     * trigger), 0 when res says why not (a repeated trigger, a step into
     * a run that is over). */
    Qraft__WorkflowRun *run = NULL;
    if (req->workflow != NULL && qr_apply_workflow_on(ctx)) {
        rv = qr_apply_workflow_begin(ctx, p, &run, res);
        if (rv <= 0) {
            return rv;
        }
        rv = 0;
    }

    Qraft__Message m = QRAFT__MESSAGE__INIT;
    m.id = p->message_id;
    m.url = req->url;
    m.method = req->method[0] != '\0' ? req->method : "POST";
    m.n_headers = req->n_headers;
    m.headers = req->headers;
    m.body = req->body;
    m.state = QRAFT__MESSAGE_STATE__PENDING;
    m.max_retries = req->retries_set ? req->retries : p->default_retries;
    m.retry_delay = req->retry_delay;
    m.timeout_ms =
        req->timeout_ms != 0 ? req->timeout_ms : p->default_timeout_ms;
    m.callback = req->callback;
    m.failure_callback = req->failure_callback;
    m.n_failure_callback_headers = req->n_failure_callback_headers;
    m.failure_callback_headers = req->failure_callback_headers;
    m.n_callback_headers = req->n_callback_headers;
    m.callback_headers = req->callback_headers;
    m.queue = req->queue;
    m.dedup_id = req->dedup_id;
    m.retry_options = req->retry_options;
    m.schedule_id = req->schedule_id;
    m.topic_name = req->topic_name;
    m.endpoint_name = req->endpoint_name;
    m.n_labels = req->n_labels;
    m.labels = req->labels;
    m.caller_ip = req->caller_ip;
    /* Kept only when well formed (a pure check: every replica agrees). */
    struct qr_traceparent tp;
    if (qr_traceparent_parse(req->traceparent, &tp)) {
        m.traceparent = req->traceparent;
    }
    m.flow_control_key = req->flow_control_key;
    m.flow_parallelism = req->flow_parallelism;
    m.flow_rate = req->flow_rate;
    m.flow_period_s = req->flow_period_s;
    m.redact = redact_on(ctx) ? req->redact : NULL;
    m.not_before_ms = req->not_before_ms != 0 ? req->not_before_ms
                                              : ctx->now_ms + req->delay_ms;
    m.next_attempt_ms = m.not_before_ms;
    m.created_ms = ctx->now_ms;
    m.updated_ms = ctx->now_ms;
    if (run != NULL) {
        m.workflow_run_id = req->workflow->run_id;
        m.workflow_seq = req->workflow->init ? 0 : run->next_seq;
        qr_apply_workflow_inherit(run, req, &m);
        rv = qr_apply_workflow_duplicate(ctx, run, &m, res);
        if (rv != 0) {
            /* Stored already: answered as the first, nothing written. */
            qr_apply_workflow_free(run, req->workflow->init);
            return rv < 0 ? rv : 0;
        }
    }
    qr_apply_place(ctx, &m); /* after the run's flow control, if any */

    for (size_t i = 0; rv == 0 && i < p->n_dedup_keys; i++) {
        rv = qr_store_dedup_put(ctx->txn, p->dedup_keys[i], m.id,
                                ctx->now_ms + p->dedup_window_ms);
    }
    if (rv == 0 && run != NULL) {
        rv = qr_apply_workflow_append(ctx, run, req, &m);
    }
    if (rv == 0 && m.queue[0] != '\0' && qr_apply_queues_on(ctx)) {
        /* Waits at the tail of its queue (created on first use) until its
         * turn; may be activated right away. */
        rv = qr_apply_queue_enqueue(ctx, &m, "published into its queue");
    } else if (rv == 0) {
        rv = qr_store_msg_put(ctx->txn, &m);
        if (rv == 0) {
            qr_apply_note_due(ctx, m.next_attempt_ms);
            rv = qr_apply_event(ctx, &m, "published");
        }
    }
    /* Only now: m borrows the run's settings (WF_TriggerOnConfig). */
    qr_apply_workflow_free(run, req->workflow != NULL && req->workflow->init);
    if (rv != 0) {
        return rv;
    }
    snprintf(res->message_id, sizeof res->message_id, "%s", m.id);
    return 0;
}

int qr_apply_mark_delivered(struct qr_apply_ctx *ctx,
                            const Qraft__Message *m,
                            const char *detail)
{
    assert(!qr_apply_is_final(m->state));
    Qraft__Message upd = *m;
    upd.state = QRAFT__MESSAGE_STATE__DELIVERED;
    upd.delivered_ms = ctx->now_ms;
    upd.updated_ms = ctx->now_ms;
    upd.body.data = NULL; /* as any delivered message */
    upd.body.len = 0;
    int rv = qr_apply_queue_release(ctx, &upd);
    if (rv == 0) {
        rv = put_dropping_redacted(ctx, &upd);
    }
    if (rv == 0) {
        rv = qr_apply_event(ctx, &upd, detail);
    }
    return rv;
}

/* Loads the message a command names; a missing one is the command's result,
 * not an apply failure. Returns 1 when *out was loaded. */
static int load_target(struct qr_apply_ctx *ctx,
                       const char *id,
                       Qraft__Message **out,
                       struct qr_apply_result *res)
{
    snprintf(res->message_id, sizeof res->message_id, "%s", id);
    int rv = qr_store_msg_get(ctx->txn, id, out);
    if (rv == QR_ENOTFOUND) {
        qr_apply_set_result(res, QR_ENOTFOUND, "message %s not found", id);
        return 0;
    }
    return rv == 0 ? 1 : rv;
}

bool qr_apply_is_final(Qraft__MessageState s)
{
    return s == QRAFT__MESSAGE_STATE__DELIVERED ||
           s == QRAFT__MESSAGE_STATE__DEAD_LETTERED ||
           s == QRAFT__MESSAGE_STATE__CANCELLED;
}

static const char *state_word(Qraft__MessageState s)
{
    switch (s) {
        case QRAFT__MESSAGE_STATE__PENDING:
            return "pending";
        case QRAFT__MESSAGE_STATE__DELIVERING:
            return "delivering";
        case QRAFT__MESSAGE_STATE__RETRYING:
            return "retrying";
        case QRAFT__MESSAGE_STATE__DELIVERED:
            return "delivered";
        case QRAFT__MESSAGE_STATE__DEAD_LETTERED:
            return "dead_lettered";
        case QRAFT__MESSAGE_STATE__CANCELLED:
            return "cancelled";
        case QRAFT__MESSAGE_STATE__QUEUED:
            return "queued";
        default:
            return "unknown";
    }
}

/* Cancels m (unpacked, not final): out of its queue's FIFO if it waits
 * there, its slot given back if it holds one. */
int qr_apply_cancel_message(struct qr_apply_ctx *ctx,
                            const Qraft__Message *m,
                            const char *detail)
{
    Qraft__Message upd = *m;
    int rv = 0;
    if (m->state == QRAFT__MESSAGE_STATE__QUEUED) {
        rv = qr_apply_queue_unlink(ctx, m);
        upd.queue_seq = 0;
    }
    upd.state = QRAFT__MESSAGE_STATE__CANCELLED;
    upd.updated_ms = ctx->now_ms;
    if (rv == 0) {
        rv = qr_apply_queue_release(ctx, &upd);
    }
    if (rv == 0) {
        rv = put_dropping_redacted(ctx, &upd);
    }
    if (rv == 0) {
        rv = qr_apply_event(ctx, &upd, detail);
    }
    return rv;
}

int qr_apply_cancel(struct qr_apply_ctx *ctx,
                    const Qraft__Cancel *c,
                    struct qr_apply_result *res)
{
    Qraft__Message *m = NULL;
    int rv = load_target(ctx, c->message_id, &m, res);
    if (rv <= 0) {
        return rv;
    }
    if (m->state == QRAFT__MESSAGE_STATE__CANCELLED) {
        rv = 0; /* cancelling twice is the same as once */
        goto out;
    }
    if (qr_apply_is_final(m->state)) {
        qr_apply_set_result(res, QR_ECONFLICT, "message %s is already %s",
                            m->id, state_word(m->state));
        rv = 0;
        goto out;
    }
    rv = qr_apply_cancel_message(ctx, m, "cancelled");
out:
    qraft__message__free_unpacked(m, NULL);
    return rv;
}

/* Loads the dead letter a DLQ command names: 1 when *out was loaded (new,
 * DEAD_LETTERED), 0 when res says why not (not found, not in the DLQ), or
 * a store error. */
static int load_dead_letter(struct qr_apply_ctx *ctx,
                            const char *id,
                            Qraft__Message **out,
                            struct qr_apply_result *res)
{
    int rv = load_target(ctx, id, out, res);
    if (rv <= 0) {
        return rv;
    }
    if ((*out)->state != QRAFT__MESSAGE_STATE__DEAD_LETTERED) {
        qr_apply_set_result(res, QR_ECONFLICT,
                            "message %s is not in the DLQ (it is %s)",
                            (*out)->id, state_word((*out)->state));
        qraft__message__free_unpacked(*out, NULL);
        *out = NULL;
        return 0;
    }
    return 1;
}

int qr_apply_dlq_replay(struct qr_apply_ctx *ctx,
                        const Qraft__DlqReplay *r,
                        struct qr_apply_result *res)
{
    Qraft__Message *m = NULL;
    int rv = load_dead_letter(ctx, r->message_id, &m, res);
    if (rv <= 0) {
        return rv;
    }
    /* The same id again, with a fresh budget, due now. Changes go into a
     * shallow copy: the unpacked record's own pointers stay as unpack made
     * them, for free_unpacked. */
    /* A workflow step's run failed with it: it goes on. */
    rv = qr_apply_workflow_reopen(ctx, m);
    if (rv != 0) {
        goto out;
    }
    Qraft__Message upd = *m;
    upd.state = QRAFT__MESSAGE_STATE__PENDING;
    upd.attempts = 0;
    upd.generation = m->generation + 1;
    upd.next_attempt_ms = ctx->now_ms;
    upd.dead_lettered_ms = 0;
    upd.dlq_hint = "";
    upd.updated_ms = ctx->now_ms;
    if (upd.queue[0] != '\0' && qr_apply_queues_on(ctx) &&
        upd.callback_kind == QRAFT__CALLBACK_KIND__NOT_A_CALLBACK) {
        /* A queue message goes back to the tail of its queue (created again
         * if it was deleted), so replays keep the queue's order rule. */
        rv = qr_apply_queue_enqueue(ctx, &upd,
                                    "replayed from the DLQ into its queue");
        goto out;
    }
    rv = qr_store_msg_put(ctx->txn, &upd);
    if (rv == 0) {
        qr_apply_note_due(ctx, upd.next_attempt_ms);
        rv = qr_apply_event(ctx, &upd, "replayed from the DLQ");
    }
out:
    qraft__message__free_unpacked(m, NULL);
    return rv;
}

int qr_apply_dlq_delete(struct qr_apply_ctx *ctx,
                        const Qraft__DlqDelete *d,
                        struct qr_apply_result *res)
{
    Qraft__Message *m = NULL;
    int rv = load_dead_letter(ctx, d->message_id, &m, res);
    if (rv <= 0) {
        return rv;
    }
    rv = qr_store_msg_delete(ctx->txn, m->id);
    if (rv == 0) {
        rv = qr_apply_event(ctx, m, "deleted from the DLQ");
    }
    qraft__message__free_unpacked(m, NULL);
    return rv;
}

/* Creates the callback message of `kind` for src (after its attempt) with a
 * deterministic id: the first free one from qr_callback_seq. */
static int create_callback(struct qr_apply_ctx *ctx,
                           const Qraft__DeliveryResults *batch,
                           const Qraft__Message *src,
                           const Qraft__DeliveryResult *r,
                           Qraft__CallbackKind kind,
                           const struct qr_callback_run *run)
{
    return qr_apply_create_callback(ctx, batch->default_timeout_ms, src, r,
                                    kind, run);
}

int qr_apply_create_callback(struct qr_apply_ctx *ctx,
                             uint64_t default_timeout_ms,
                             const Qraft__Message *src,
                             const Qraft__DeliveryResult *r,
                             Qraft__CallbackKind kind,
                             const struct qr_callback_run *run)
{
    struct qr_callback cb;
    char id[QR_ID_BYTES];
    struct qr_callback_source from = {.src = src,
                                      .r = r,
                                      .kind = kind,
                                      .now_ms = ctx->now_ms,
                                      .default_timeout_ms = default_timeout_ms,
                                      .run = run};
    int rv = qr_callback_build(&cb, &from);
    if (rv != 0) {
        return rv;
    }
    uint32_t seq = qr_callback_seq(src->id, kind, r->attempt);
    for (;;) {
        Qraft__Message *taken = NULL;
        qr_command_message_id(id, ctx->now_ms, QR_CALLBACK_NODE_ID, seq++);
        rv = qr_store_msg_get(ctx->txn, id, &taken);
        if (rv == 0) {
            qraft__message__free_unpacked(taken, NULL);
            continue;
        }
        break;
    }
    if (rv == QR_ENOTFOUND) {
        cb.m.id = id;
        qr_apply_place(ctx, &cb.m);
        /* The callback of a queue message holds a slot of its queue too:
         * the queue's next message waits for the callbacks. */
        rv = qr_apply_queue_take_slot(ctx, src, &cb.m);
    }
    if (rv == 0 && kind == QRAFT__CALLBACK_KIND__CALLBACK) {
        rv = qr_apply_workflow_callback(ctx, src, &cb.m);
    }
    if (rv == 0) {
        rv = qr_store_msg_put(ctx->txn, &cb.m);
        qr_apply_note_due(ctx, cb.m.next_attempt_ms);
    }
    if (rv == 0) {
        rv = qr_apply_event(ctx, &cb.m,
                            kind == QRAFT__CALLBACK_KIND__FAILURE_CALLBACK
                                ? "failure callback created"
                                : "callback created");
    }
    qr_callback_free(&cb);
    return rv;
}

static void describe_failure(char *buf,
                             size_t len,
                             const Qraft__DeliveryResult *r,
                             const char *what)
{
    const Qraft__LastError *e = r->error;
    if (e != NULL && e->status != 0) {
        snprintf(buf, len, "%s: %s (HTTP %d)", what, e->category, e->status);
    } else if (e != NULL) {
        snprintf(buf, len, "%s: %s: %s", what, e->category, e->message);
    } else {
        snprintf(buf, len, "%s", what);
    }
}

/* One attempt's committed result. The fence: only a message still waiting
 * for that very attempt (pending or retrying, with `attempts` equal to the
 * attempt number, in the same generation: replays start a new one) takes
 * it; any other result is stale (a duplicate after a
 * re-send, or the message was cancelled) and changes nothing. */
static int apply_delivery_result(struct qr_apply_ctx *ctx,
                                 const Qraft__DeliveryResults *batch,
                                 const Qraft__DeliveryResult *r)
{
    Qraft__Message *m = NULL;
    int rv = qr_store_msg_get(ctx->txn, r->message_id, &m);
    if (rv == QR_ENOTFOUND) {
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    bool waiting = m->state == QRAFT__MESSAGE_STATE__PENDING ||
                   m->state == QRAFT__MESSAGE_STATE__RETRYING;
    if (!waiting || m->attempts != r->attempt ||
        m->generation != r->generation ||
        r->outcome == QRAFT__ATTEMPT_OUTCOME__OUTCOME_UNSPECIFIED) {
        goto out;
    }

    /* Changes go into a shallow copy that may borrow from the command; the
     * unpacked record keeps its own pointers for free_unpacked. */
    Qraft__Message upd = *m;
    Qraft__LastError budget = QRAFT__LAST_ERROR__INIT;
    char detail[192];
    Qraft__AttemptOutcome outcome = r->outcome;
    upd.attempts++;
    upd.updated_ms = ctx->now_ms;
    /* Apply checks the budget itself: whatever a worker decided, a message
     * never gets more than 1 + max_retries attempts. */
    if (outcome == QRAFT__ATTEMPT_OUTCOME__OUTCOME_RETRY &&
        upd.attempts > upd.max_retries) {
        outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_DEAD;
        budget.category = "budget_exhausted";
        budget.status = r->error != NULL ? r->error->status : 0;
        budget.message = r->error != NULL ? r->error->message : "";
        budget.cause = r->error != NULL ? r->error->category : "";
    }
    switch (outcome) {
        case QRAFT__ATTEMPT_OUTCOME__OUTCOME_DELIVERED:
            upd.state = QRAFT__MESSAGE_STATE__DELIVERED;
            upd.delivered_ms = ctx->now_ms;
            upd.last_response = NULL;
            snprintf(detail, sizeof detail, "delivered (HTTP %d)",
                     r->response != NULL ? r->response->status : 0);
            break;
        case QRAFT__ATTEMPT_OUTCOME__OUTCOME_RETRY:
            upd.state = QRAFT__MESSAGE_STATE__RETRYING;
            upd.next_attempt_ms = ctx->now_ms + r->retry_delay_ms;
            upd.last_error = r->error;
            upd.last_response = r->response;
            describe_failure(detail, sizeof detail, r, "attempt failed");
            break;
        default:
            upd.state = QRAFT__MESSAGE_STATE__DEAD_LETTERED;
            upd.dead_lettered_ms = ctx->now_ms;
            upd.last_response = r->response;
            if (budget.category[0] != '\0') {
                upd.last_error = &budget;
                upd.dlq_hint =
                    "the retry budget is spent: check the "
                    "destination, then replay from the DLQ";
                snprintf(detail, sizeof detail,
                         "dead-lettered: budget_exhausted after %u attempts",
                         upd.attempts);
            } else {
                upd.last_error = r->error;
                upd.dlq_hint = r->hint;
                describe_failure(detail, sizeof detail, r, "dead-lettered");
            }
            break;
    }
    rv = 0;
    if (upd.callback[0] != '\0') {
        rv = create_callback(ctx, batch, &upd, r,
                             QRAFT__CALLBACK_KIND__CALLBACK, NULL);
    }
    /* A workflow step that fails for good fails its run. */
    struct qr_apply_failed_run failed = {0};
    if (rv == 0 && upd.state == QRAFT__MESSAGE_STATE__DEAD_LETTERED &&
        upd.workflow_run_id[0] != '\0') {
        rv = qr_apply_workflow_failed(ctx, &upd, &failed);
    }
    if (rv == 0 && upd.failure_callback[0] != '\0' &&
        upd.state == QRAFT__MESSAGE_STATE__DEAD_LETTERED) {
        rv = create_callback(ctx, batch, &upd, r,
                             QRAFT__CALLBACK_KIND__FAILURE_CALLBACK,
                             failed.run != NULL ? &failed.cb : NULL);
    }
    qr_apply_workflow_failed_free(&failed);
    if (upd.state == QRAFT__MESSAGE_STATE__DELIVERED) {
        /* A delivered message keeps its record (state, history) but not its
         * body: the replicated state stays lean. */
        upd.body.data = NULL;
        upd.body.len = 0;
    }
    if (rv == 0 && qr_apply_is_final(upd.state)) {
        rv = qr_apply_queue_release(ctx,
                                    &upd); /* after its callbacks took theirs */
    }
    if (rv == 0 && upd.state == QRAFT__MESSAGE_STATE__DELIVERED) {
        /* Its redacted parts leave the store with the delivery; a dead
         * letter keeps them for a replay (never shown: repl/redact.h). */
        rv = put_dropping_redacted(ctx, &upd);
    } else if (rv == 0) {
        rv = qr_store_msg_put(ctx->txn, &upd);
    }
    if (rv == 0 && upd.state == QRAFT__MESSAGE_STATE__RETRYING) {
        qr_apply_note_due(ctx, upd.next_attempt_ms);
    }
    if (rv == 0) {
        rv = qr_apply_event(ctx, &upd, detail);
    }
out:
    qraft__message__free_unpacked(m, NULL);
    return rv;
}

int qr_apply_delivery_results(struct qr_apply_ctx *ctx,
                              const Qraft__DeliveryResults *batch)
{
    for (size_t i = 0; i < batch->n_results; i++) {
        const Qraft__DeliveryResult *r = batch->results[i];
        if (!qr_check_message_id(r->message_id)) {
            /* No message has such an id, so it changes nothing, as a
             * result for a message gone; skipping it keeps the batch's
             * other results. */
            continue;
        }
        int rv = apply_delivery_result(ctx, batch, r);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}
