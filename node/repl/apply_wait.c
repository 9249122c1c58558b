/* Apply of context.waitForEvent and its kin (docs/workflow.md): a waiter
 * created, notified or timed out, and an ended invoked run reporting to its
 * invoker. Each fired wait and each such report is one step published into
 * a run (publish_run_step), through qr_apply_publish like any other. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "lib/base64.h"
#include "lib/err.h"
#include "repl/callback.h"
#include "repl/check.h"
#include "repl/command.h"
#include "repl/fsm_int.h"

/* Publishes body (JSON text) as a step of run run_id, delivered to url by
 * message message_id: the one-step request a fired wait and an ended
 * invoked run both send. */
static int publish_run_step(struct qr_apply_ctx *ctx,
                            const char *run_id,
                            const char *url,
                            const char *body,
                            const char *message_id,
                            uint32_t default_retries,
                            uint64_t default_timeout_ms)
{
    Qraft__Header ct = QRAFT__HEADER__INIT;
    ct.name = "Content-Type";
    ct.value = "application/json";
    Qraft__Header *headers[1] = {&ct};
    Qraft__WorkflowPublish wf = QRAFT__WORKFLOW_PUBLISH__INIT;
    wf.run_id = (char *)run_id;
    wf.call_type = "step";
    Qraft__PublishRequest req = QRAFT__PUBLISH_REQUEST__INIT;
    req.url = (char *)url;
    req.n_headers = 1;
    req.headers = headers;
    req.body.data = (uint8_t *)body;
    req.body.len = strlen(body);
    req.workflow = &wf;
    Qraft__Publish p = QRAFT__PUBLISH__INIT;
    p.message_id = (char *)message_id;
    p.request = &req;
    p.default_retries = default_retries;
    p.default_timeout_ms = default_timeout_ms;
    struct qr_apply_result res = {0};
    return qr_apply_publish(ctx, &p, &res);
}

/* A stored step (an invoker's or a waiter's): the face's JSON object;
 * anything else (only a buggy leader could store it) becomes an empty
 * object, alike on every replica. New (json_decref), NULL without memory. */
static json_t *step_object(ProtobufCBinaryData step)
{
    json_error_t jerr;
    json_t *o = json_loadb((const char *)step.data, step.len,
                           JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(o)) {
        json_decref(o);
        o = json_object();
    }
    return o;
}

/* ------------------------------------------------------------------------ */
/* An invoked run's end. */

/* The first free message id of the ones apply derives from seed: the
 * same on every replica (as callbacks' are). */
static int derived_message_id(struct qr_apply_ctx *ctx,
                              const char *seed,
                              char id[QR_ID_BYTES])
{
    uint32_t seq =
        qr_callback_seq(seed, QRAFT__CALLBACK_KIND__CALLBACK, UINT32_MAX);
    for (;;) {
        Qraft__Message *taken = NULL;
        qr_command_message_id(id, ctx->now_ms, QR_CALLBACK_NODE_ID, seq++);
        int rv = qr_store_msg_get(ctx->txn, id, &taken);
        if (rv != 0) {
            return rv == QR_ENOTFOUND ? 0 : rv;
        }
        qraft__message__free_unpacked(taken, NULL);
    }
}

int qr_apply_workflow_notify_invoker(struct qr_apply_ctx *ctx,
                                     const Qraft__WorkflowRun *run)
{
    const Qraft__WorkflowInvoker *inv = run->invoker;
    if (inv == NULL || !qr_command_is_run_id(inv->run_id)) {
        return 0;
    }
    json_t *step = step_object(inv->step);
    json_t *out = json_object();
    char *out_text = NULL;
    char *body = NULL;
    int rv = -ENOMEM;
    if (step != NULL && out != NULL) {
        json_object_set_new(
            out, "body",
            json_stringn((const char *)run->result.data, run->result.len));
        json_object_set_new(
            out, "isFailed",
            json_boolean(run->state == QRAFT__WORKFLOW_RUN_STATE__RUN_FAILED));
        json_object_set_new(
            out, "isCanceled",
            json_boolean(run->state ==
                         QRAFT__WORKFLOW_RUN_STATE__RUN_CANCELED));
        out_text = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER);
    }
    if (out_text != NULL &&
        json_object_set_new(step, "out", json_string(out_text)) == 0) {
        body = json_dumps(step, JSON_COMPACT | JSON_PRESERVE_ORDER);
    }
    char id[QR_ID_BYTES];
    if (body != NULL) {
        rv = derived_message_id(ctx, run->id, id);
    }
    if (rv == 0) {
        rv = publish_run_step(ctx, inv->run_id, inv->url, body, id, 3, 30000);
    }
    free(body);
    free(out_text);
    json_decref(out);
    json_decref(step);
    return rv;
}

/* ------------------------------------------------------------------------ */
/* context.waitForEvent: waiters, notify, timeouts. */

int qr_apply_wait_create(struct qr_apply_ctx *ctx,
                         const Qraft__WaitCreate *c,
                         struct qr_apply_result *res)
{
    const Qraft__Waiter *in = c->waiter;
    if (in == NULL || !qr_command_is_run_id(in->run_id) ||
        !qr_command_is_event_id(in->event_id)) {
        qr_apply_set_result(res, QR_EBADREQ, "invalid wait");
        return 0;
    }
    Qraft__WorkflowRun *run = NULL;
    int rv = qr_store_run_get(ctx->txn, in->run_id, &run);
    if (rv == QR_ENOTFOUND) {
        qr_apply_set_result(res, QR_EBADREQ, "workflow run %s does not exist",
                            in->run_id);
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    if (run->state != QRAFT__WORKFLOW_RUN_STATE__RUN_RUNNING) {
        qr_apply_set_result(res, QR_EBADREQ, "workflow run %s is %s", run->id,
                            qr_apply_run_state_word(run->state));
        qraft__workflow_run__free_unpacked(run, NULL);
        return 0;
    }
    Qraft__Waiter w = *in;
    w.created_ms = ctx->now_ms;
    w.deadline_ms = ctx->now_ms + c->timeout_ms;
    if (w.deadline_ms < ctx->now_ms) {
        w.deadline_ms = UINT64_MAX; /* wrapped: never */
    }
    rv = qr_store_waiter_put(ctx->txn, &w);
    bool listed = false;
    for (size_t i = 0; i < run->n_waiting_events; i++) {
        listed = listed || strcmp(run->waiting_events[i], w.event_id) == 0;
    }
    if (rv == 0 && !listed) {
        /* A borrowed extra element, dropped again before the free. */
        char **grown = realloc(run->waiting_events,
                               (run->n_waiting_events + 1) * sizeof *grown);
        if (grown == NULL) {
            rv = -ENOMEM;
        } else {
            run->waiting_events = grown;
            run->waiting_events[run->n_waiting_events++] = w.event_id;
            rv = qr_store_run_put(ctx->txn, run);
            run->n_waiting_events--;
        }
    }
    qraft__workflow_run__free_unpacked(run, NULL);
    return rv;
}

/* The Wait step's JSON: the SDK's step (step_object) with the event's data
 * (base64, as the SDK decodes it) or waitTimeout. New in *out (free()). */
static int wait_step_json(const Qraft__Waiter *w,
                          const ProtobufCBinaryData *data,
                          char **out)
{
    json_t *o = step_object(w->step);
    if (o == NULL) {
        return -ENOMEM;
    }
    int bad = json_object_set_new(o, "waitEventId", json_string(w->event_id));
    if (data != NULL) {
        char *b64 = NULL;
        bad |= qr_base64(data->data, data->len, &b64) != 0;
        bad |= b64 == NULL || json_object_set_new(o, "out", json_string(b64));
        free(b64);
        bad |= json_object_set_new(o, "waitTimeout", json_false());
    } else {
        json_object_del(o, "out");
        bad |= json_object_set_new(o, "waitTimeout", json_true());
    }
    *out = bad ? NULL : json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return *out != NULL ? 0 : -ENOMEM;
}

/* The waiter is done (notified: data set; timed out: data NULL): it goes,
 * and its run gets the Wait step, delivered by message_id. */
static int fire_waiter(struct qr_apply_ctx *ctx,
                       const Qraft__Waiter *w,
                       const ProtobufCBinaryData *data,
                       const char *message_id,
                       uint32_t default_retries,
                       uint64_t default_timeout_ms)
{
    int rv = qr_store_waiter_delete(ctx->txn, w->event_id, w->run_id);
    Qraft__WorkflowRun *run = NULL;
    if (rv == 0) {
        rv = qr_store_run_get(ctx->txn, w->run_id, &run);
    }
    if (rv == QR_ENOTFOUND) {
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    /* The run waits for the event no more. */
    size_t n = run->n_waiting_events;
    size_t keep = 0;
    char *dropped = NULL;
    for (size_t i = 0; i < n; i++) {
        if (dropped == NULL &&
            strcmp(run->waiting_events[i], w->event_id) == 0) {
            dropped = run->waiting_events[i];
        } else {
            run->waiting_events[keep++] = run->waiting_events[i];
        }
    }
    if (dropped != NULL) {
        run->n_waiting_events = keep;
        rv = qr_store_run_put(ctx->txn, run);
        run->waiting_events[run->n_waiting_events++] = dropped; /* freed */
    }
    bool running = run->state == QRAFT__WORKFLOW_RUN_STATE__RUN_RUNNING;
    qraft__workflow_run__free_unpacked(run, NULL);
    if (rv != 0 || !running) {
        return rv;
    }
    char *step = NULL;
    rv = wait_step_json(w, data, &step);
    if (rv != 0) {
        return rv;
    }
    rv =
        publish_run_step(ctx, w->run_id, data != NULL ? w->url : w->timeout_url,
                         step, message_id, default_retries, default_timeout_ms);
    free(step);
    return rv;
}

int qr_apply_notify(struct qr_apply_ctx *ctx,
                    const Qraft__Notify *n,
                    struct qr_apply_result *res)
{
    if (!qr_command_is_event_id(n->event_id)) {
        qr_apply_set_result(res, QR_EBADREQ, "invalid event id");
        return 0;
    }
    for (size_t i = 0; i < n->n_targets; i++) {
        const Qraft__NotifyTarget *t = n->targets[i];
        if (!qr_command_is_run_id(t->run_id) ||
            !qr_check_message_id(t->message_id)) {
            continue; /* names no waiter */
        }
        Qraft__Waiter *w = NULL;
        int rv = qr_store_waiter_get(ctx->txn, n->event_id, t->run_id, &w);
        if (rv == QR_ENOTFOUND) {
            continue; /* timed out or notified since the leader looked */
        }
        if (rv == 0) {
            rv = fire_waiter(ctx, w, &n->data, t->message_id,
                             n->default_retries, n->default_timeout_ms);
            qraft__waiter__free_unpacked(w, NULL);
        }
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

int qr_apply_wait_timeout(struct qr_apply_ctx *ctx,
                          const Qraft__WaitTimeout *t,
                          struct qr_apply_result *res)
{
    if (!qr_command_is_event_id(t->event_id) ||
        !qr_command_is_run_id(t->run_id) ||
        !qr_check_message_id(t->message_id)) {
        qr_apply_set_result(res, QR_EBADREQ, "invalid wait timeout");
        return 0;
    }
    Qraft__Waiter *w = NULL;
    int rv = qr_store_waiter_get(ctx->txn, t->event_id, t->run_id, &w);
    if (rv == QR_ENOTFOUND) {
        return 0; /* notified, or fired by an earlier leader */
    }
    if (rv != 0) {
        return rv;
    }
    /* The fence: the very wait whose deadline the leader saw pass. */
    if (w->deadline_ms == t->deadline_ms && w->deadline_ms <= ctx->now_ms) {
        rv = fire_waiter(ctx, w, NULL, t->message_id, t->default_retries,
                         t->default_timeout_ms);
    }
    qraft__waiter__free_unpacked(w, NULL);
    return rv;
}
