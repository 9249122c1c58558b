/* /v2/workflows (docs/workflow.md): a run's history for the SDK's lazy
 * fetch (GET /v2/workflows/runs/{id}), the end of a run (DELETE
 * /v2/workflows/runs/{id}?cancel=false with the result as the body, or
 * cancel) and the bulk cancel (DELETE /v2/workflows/runs?workflowRunIds=).
 * Triggers and steps are publishes (rest_publish.c). */
#include "api/rest_int.h"

#include <stdio.h>
#include <string.h>

#include "lib/json_text.h"

/* The history as the SDK reads it: [{"messageId", "body" (base64),
 * "callType"}], oldest first. */
static json_t *history_json(struct rest_call *c, const Qraft__Response *resp)
{
    (void)c;
    json_t *arr = json_array();
    const Qraft__WorkflowRunResponse *wr = resp->workflow_run;
    for (size_t i = 0; arr != NULL && i < wr->n_steps; i++) {
        const Qraft__WorkflowStep *st = wr->steps[i];
        json_t *o =
            json_pack("{s:o,s:o}", "messageId", qr_json_text(st->message_id),
                      "callType", qr_json_text(st->call_type));
        if (o == NULL) {
            json_decref(arr);
            return NULL;
        }
        qr_rest_set_b64(o, "body", st->body);
        json_array_append_new(arr, o);
    }
    return arr;
}

/* GET and DELETE /v2/workflows/runs/{id}. A DELETE cancels the run unless
 * cancel=false, which finishes it with the body as its result. */
void qr_rest_workflow_run(struct qr_rest *r,
                          h2o_req_t *req,
                          const struct rest_match *m)
{
    char *id = qr_rest_capture(req, m);
    if (m->op == REST_GET) {
        static const struct rest_answer history = {
            .want = QRAFT__RESPONSE__BODY_WORKFLOW_RUN, .build = history_json};
        Qraft__WorkflowRunRequest get = QRAFT__WORKFLOW_RUN_REQUEST__INIT;
        get.run_id = id;
        QR_REST_RUN(r, req, WORKFLOW_RUN, workflow_run, &get, &history);
        return;
    }
    static const struct rest_answer ended = {.build = qr_rest_empty_json};
    Qraft__WorkflowEndRequest end = QRAFT__WORKFLOW_END_REQUEST__INIT;
    char *cancel = qr_rest_query_get(&req->pool, m->query, "cancel");
    if (cancel != NULL && strcmp(cancel, "true") != 0 &&
        strcmp(cancel, "false") != 0) {
        qr_rest_send_error(req, 400, "cancel must be true or false");
        return;
    }
    end.run_id = id;
    end.cancel = cancel == NULL || strcmp(cancel, "true") == 0;
    if (!end.cancel && req->entity.base != NULL) {
        end.result.data = (uint8_t *)req->entity.base;
        end.result.len = req->entity.len;
    }
    QR_REST_RUN(r, req, WORKFLOW_END, workflow_end, &end, &ended);
}

/* DELETE /v2/workflows/runs?workflowRunIds=a&workflowRunIds=b: cancels
 * those runs, answered {"cancelled": n}. The SDK's other selections (by
 * URL, by filters, all) are not supported yet: refused, never taken for
 * "everything". */
void qr_rest_workflow_cancel_many(struct qr_rest *r,
                                  h2o_req_t *req,
                                  const struct rest_match *m)
{
    Qraft__WorkflowEndRequest end = QRAFT__WORKFLOW_END_REQUEST__INIT;
    struct rest_param p;
    size_t pos = 0;
    char err[ERR_BYTES];
    while (qr_rest_next_param(m->query.base, m->query.len, &pos, &p)) {
        if (!qr_rest_equal_ci(p.name, p.name_len, "workflowRunIds")) {
            snprintf(err, sizeof err,
                     "cancelling workflow runs by '%.*s' is not supported "
                     "yet: give workflowRunIds",
                     (int)(p.name_len > 64 ? 64 : p.name_len), p.name);
            qr_rest_send_error(req, 400, err);
            return;
        }
    }
    if (qr_rest_take_list(&req->pool, m->query, "workflowRunIds", &end.run_ids,
                          &end.n_run_ids, err) != 0) {
        qr_rest_send_error(req, 400, err);
        return;
    }
    if (end.n_run_ids == 0) {
        qr_rest_send_error(req, 400, "give the runs to cancel: workflowRunIds");
        return;
    }
    end.cancel = true;
    QR_REST_RUN(r, req, WORKFLOW_END, workflow_end, &end,
                &(struct rest_answer){.on_reply = qr_rest_on_cancelled_reply});
}
