/* The workflow logs: GET /v2/workflows/events?groupBy=workflowRunId (what
 * the SDK's Client.logs calls) and GET /v2/workflows/logs (the same),
 * answered {"runs": [WorkflowRunLog], "cursor"?} in the SDK's shape
 * (docs/workflow.md, "Logs"). The node reads the runs, their histories and
 * the messages that deliver them (ops/workflow_logs.c); this file parses
 * the step JSONs and groups the steps:
 *
 * - a history entry is a step whose result the run stored: STEP_SUCCESS,
 *   alone in a "sequential" group; entry 0 is the initial payload (type
 *   Initial);
 * - a run of entries with concurrent > 1 is one "parallel" group: the
 *   plan entries (stepId 0, targetStep k) give its branches, each shown by
 *   its result entry once there is one, else by the plan entry in the
 *   state of the message that runs the branch (no `out`);
 * - the last entry's message, while it is not delivered, is the delivery
 *   that runs the next step: a "next" group in that message's state
 *   (progress, retry, failed, canceled), with its last error. */
#include "api/rest_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/base64.h"
#include "lib/json_text.h"
#include "repl/check.h"

#define LOGS_MAX_COUNT 100u
#define LOGS_DEFAULT_COUNT 10u

/* ------------------------------------------------------------------------ */
/* The answer. */

static const char *run_state_name(Qraft__WorkflowRunState s)
{
    switch (s) {
        case QRAFT__WORKFLOW_RUN_STATE__RUN_SUCCESS:
            return "RUN_SUCCESS";
        case QRAFT__WORKFLOW_RUN_STATE__RUN_FAILED:
            return "RUN_FAILED";
        case QRAFT__WORKFLOW_RUN_STATE__RUN_CANCELED:
            return "RUN_CANCELED";
        default:
            return "RUN_STARTED";
    }
}

/* A step's state from the message that runs it (NULL: pruned, so it was
 * delivered or cancelled; taken as delivered). */
static const char *step_state_name(const Qraft__Message *m)
{
    if (m == NULL) {
        return "STEP_SUCCESS";
    }
    switch (m->state) {
        case QRAFT__MESSAGE_STATE__DELIVERED:
            return "STEP_SUCCESS";
        case QRAFT__MESSAGE_STATE__RETRYING:
            return "STEP_RETRY";
        case QRAFT__MESSAGE_STATE__DEAD_LETTERED:
            return "STEP_FAILED";
        case QRAFT__MESSAGE_STATE__CANCELLED:
            return "STEP_CANCELED";
        default:
            return "STEP_PROGRESS";
    }
}

static const char *callback_state_name(const Qraft__Message *m)
{
    switch (m->state) {
        case QRAFT__MESSAGE_STATE__DELIVERED:
            return "CALLBACK_SUCCESS";
        case QRAFT__MESSAGE_STATE__DEAD_LETTERED:
            return "CALLBACK_FAIL";
        case QRAFT__MESSAGE_STATE__CANCELLED:
            return "CALLBACK_CANCELED";
        default:
            return "CALLBACK_INPROGRESS";
    }
}

/* A history entry's step JSON, as the SDK published it. */
struct step_info {
    json_t *doc; /* owned; NULL: not JSON (then the fields are defaults) */
    json_int_t step_id;
    const char *name;
    const char *type;
    json_int_t concurrent;
    json_int_t target_step;
    json_t *out; /* borrowed from doc; NULL: none */
};

/* The value of header name (any case) among headers, or NULL. */
static const char *header_value(Qraft__Header **headers,
                                size_t n,
                                const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (qr_rest_equal_ci(headers[i]->name, strlen(headers[i]->name),
                             name)) {
            return headers[i]->value;
        }
    }
    return NULL;
}

/* A context.call's entries carry no step JSON: the step's id, name and
 * type come from the headers the SDK set for the callback (Upstash-
 * Callback-Forward-Upstash-Workflow-*: the call's callback_headers, then
 * the callback's own headers). */
static void call_step_parse(const Qraft__WorkflowLogStep *ls,
                            struct step_info *si)
{
    const Qraft__Message *m = ls->message;
    si->type = "Call";
    if (m == NULL) {
        return;
    }
    bool to = strcmp(ls->step->call_type, "toCallback") == 0;
    Qraft__Header **h = to ? m->callback_headers : m->headers;
    size_t n = to ? m->n_callback_headers : m->n_headers;
    const char *prefix = to ? "Forward-Upstash-Workflow-" : "Upstash-Workflow-";
    char name[64];
    const char *v;
    snprintf(name, sizeof name, "%sStepId", prefix);
    if ((v = header_value(h, n, name)) != NULL) {
        si->step_id = strtoll(v, NULL, 10);
    }
    snprintf(name, sizeof name, "%sStepName", prefix);
    if ((v = header_value(h, n, name)) != NULL) {
        si->name = v;
    }
    snprintf(name, sizeof name, "%sStepType", prefix);
    if ((v = header_value(h, n, name)) != NULL) {
        si->type = v;
    }
}

static void step_parse(const Qraft__WorkflowLogStep *ls, struct step_info *si)
{
    const Qraft__WorkflowStep *st = ls->step;
    memset(si, 0, sizeof *si);
    si->name = "";
    si->type = "";
    si->concurrent = 1;
    if (ls->seq == 0) {
        si->name = "init";
        si->type = "Initial";
        return;
    }
    if (strcmp(st->call_type, "toCallback") == 0 ||
        strcmp(st->call_type, "fromCallback") == 0) {
        call_step_parse(ls, si);
        return;
    }
    si->doc = json_loadb((const char *)st->body.data, st->body.len, 0, NULL);
    if (!json_is_object(si->doc)) {
        return;
    }
    json_t *v;
    if (json_is_integer(v = json_object_get(si->doc, "stepId"))) {
        si->step_id = json_integer_value(v);
    }
    if (json_is_string(v = json_object_get(si->doc, "stepName"))) {
        si->name = json_string_value(v);
    }
    if (json_is_string(v = json_object_get(si->doc, "stepType"))) {
        si->type = json_string_value(v);
    }
    if (json_is_integer(v = json_object_get(si->doc, "concurrent")) &&
        json_integer_value(v) > 0) {
        si->concurrent = json_integer_value(v);
    }
    if (json_is_integer(v = json_object_get(si->doc, "targetStep"))) {
        si->target_step = json_integer_value(v);
    }
    si->out = json_object_get(si->doc, "out");
}

/* A parallel plan entry: stepId 0 with the branch it starts. */
static bool is_plan(const struct step_info *si)
{
    return si->step_id == 0 && si->target_step > 0;
}

/* The bytes as a JSON string (text; invalid UTF-8 made lossy). */
static json_t *bytes_text(ProtobufCBinaryData b)
{
    if (b.len == 0) {
        return json_string("");
    }
    return qr_json_textn((const char *)b.data, b.len);
}

/* Standard base64 text as a JSON string of the bytes it encodes (NULL when
 * it is not base64). */
static json_t *b64_text(const char *s)
{
    size_t n = strlen(s);
    char *url = malloc(n + 1);
    uint8_t *raw = NULL;
    size_t raw_len = 0;
    json_t *out = NULL;
    if (url == NULL) {
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < n && s[i] != '='; i++) {
        url[k++] = s[i] == '+' ? '-' : s[i] == '/' ? '_' : s[i];
    }
    if (qr_base64url_decode(url, k, &raw, &raw_len) == 0) {
        out = qr_json_textn((const char *)raw, raw_len);
        free(raw);
    }
    free(url);
    return out;
}

/* A context.call's fields: the call (toCallback: the message to the called
 * URL; its body is the entry's) or its answer (fromCallback: the
 * callback's body, the entry's too). */
static void call_fields(json_t *o,
                        const Qraft__WorkflowLogStep *ls,
                        h2o_mem_pool_t *pool)
{
    const Qraft__Message *m = ls->message;
    if (strcmp(ls->step->call_type, "toCallback") == 0 && m != NULL) {
        json_object_set_new(o, "callUrl", qr_json_text(m->url));
        json_object_set_new(o, "callMethod", qr_json_text(m->method));
        json_object_set_new(o, "callHeaders",
                            qr_rest_header_map(m->headers, m->n_headers, pool));
        json_object_set_new(o, "callBody", bytes_text(ls->step->body));
        return;
    }
    if (strcmp(ls->step->call_type, "fromCallback") != 0) {
        return;
    }
    json_t *cb = json_loadb((const char *)ls->step->body.data,
                            ls->step->body.len, 0, NULL);
    json_t *status = json_object_get(cb, "status");
    json_t *body = json_object_get(cb, "body");
    json_t *header = json_object_get(cb, "header");
    if (json_is_integer(status)) {
        json_object_set(o, "callResponseStatus", status);
    }
    if (json_is_string(body)) {
        json_t *text = b64_text(json_string_value(body));
        json_object_set_new(o, "callResponseBody",
                            text != NULL ? text : json_incref(body));
    }
    if (json_is_object(header)) {
        json_object_set(o, "callResponseHeaders", header);
    }
    json_decref(cb);
}

/* One StepLog: the entry ls (info si) in `state`; with_out: its out. */
static json_t *step_log(const Qraft__WorkflowLogStep *ls,
                        const struct step_info *si,
                        const char *state,
                        bool with_out,
                        h2o_mem_pool_t *pool)
{
    const Qraft__Message *m = ls->message;
    json_t *o = json_object();
    if (o == NULL) {
        return NULL;
    }
    json_object_set_new(
        o, "stepId", json_integer(is_plan(si) ? si->target_step : si->step_id));
    json_object_set_new(o, "stepName", qr_json_text(si->name));
    json_object_set_new(o, "stepType", qr_json_text(si->type));
    json_object_set_new(o, "callType", qr_json_text(ls->step->call_type));
    json_object_set_new(o, "messageId", qr_json_text(ls->step->message_id));
    if (with_out) {
        if (ls->seq == 0) {
            json_object_set_new(o, "out", bytes_text(ls->step->body));
        } else if (si->out != NULL) {
            json_object_set(o, "out", si->out);
        }
    }
    json_object_set_new(o, "concurrent", json_integer(si->concurrent));
    json_object_set_new(o, "state", json_string(state));
    json_object_set_new(o, "createdAt",
                        json_integer((json_int_t)ls->step->created_ms));
    json_object_set_new(
        o, "retries", json_integer(m != NULL ? (json_int_t)m->max_retries : 0));
    if (m != NULL) {
        qr_rest_set_opt_string(o, "retryDelay", m->retry_delay);
    }
    json_object_set_new(o, "headers",
                        m != NULL
                            ? qr_rest_header_map(m->headers, m->n_headers, pool)
                            : json_object());
    call_fields(o, ls, pool);
    return o;
}

static json_t *group(const char *type, json_t *steps)
{
    return json_pack("{s:s,s:o}", "type", type, "steps", steps);
}

/* The "next" group's step: the delivery of m (not delivered yet). */
static json_t *next_step(const Qraft__Message *m)
{
    json_t *o =
        json_pack("{s:o,s:s,s:I}", "messageId", qr_json_text(m->id), "state",
                  step_state_name(m), "retries", (json_int_t)m->max_retries);
    if (o == NULL) {
        return NULL;
    }
    qr_rest_set_opt_string(o, "retryDelay", m->retry_delay);
    if (m->last_error != NULL || m->last_response != NULL) {
        const Qraft__LastError *e = m->last_error;
        const Qraft__AttemptResponse *r = m->last_response;
        json_t *err = json_object();
        json_object_set_new(
            err, "error",
            qr_json_text(e != NULL && e->message[0] != '\0' ? e->message
                         : e != NULL                        ? e->category
                                                            : ""));
        json_object_set_new(err, "status",
                            json_integer(r != NULL   ? r->status
                                         : e != NULL ? e->status
                                                     : 0));
        json_object_set_new(err, "body",
                            r != NULL ? bytes_text(r->body) : json_string(""));
        json_object_set_new(err, "headers", json_object());
        json_object_set_new(err, "time",
                            json_integer((json_int_t)m->updated_ms));
        json_object_set_new(o, "errors", json_pack("[o]", err));
    }
    return o;
}

/* The entries of one parallel block, [from, to), as one group. */
static json_t *parallel_group(const Qraft__WorkflowLogRun *lr,
                              const struct step_info *si,
                              size_t from,
                              size_t to,
                              h2o_mem_pool_t *pool)
{
    json_t *steps = json_array();
    for (size_t i = from; i < to; i++) {
        const Qraft__WorkflowLogStep *ls = lr->steps[i];
        if (!is_plan(&si[i])) {
            bool planned = false;
            for (size_t j = from; j < to; j++) {
                planned |=
                    is_plan(&si[j]) && si[j].target_step == si[i].step_id;
            }
            if (!planned) { /* a result whose plan is not shown */
                json_array_append_new(
                    steps, step_log(ls, &si[i], "STEP_SUCCESS", true, pool));
            }
            continue;
        }
        /* A branch: its result once the run has it, else its plan. */
        size_t found = to;
        for (size_t j = from; j < to; j++) {
            if (!is_plan(&si[j]) && si[j].step_id == si[i].target_step) {
                found = j;
                break;
            }
        }
        json_array_append_new(
            steps, found < to
                       ? step_log(lr->steps[found], &si[found], "STEP_SUCCESS",
                                  true, pool)
                       : step_log(ls, &si[i], step_state_name(ls->message),
                                  false, pool));
    }
    return group("parallel", steps);
}

/* The end of the parallel block starting at from: the entries with
 * concurrent > 1 up to a plan for a branch the block has already. */
static size_t parallel_end(const struct step_info *si, size_t from, size_t n)
{
    size_t i = from;
    for (; i < n && si[i].concurrent > 1; i++) {
        for (size_t j = from; j < i && is_plan(&si[i]); j++) {
            if (is_plan(&si[j]) && si[j].target_step == si[i].target_step) {
                return i;
            }
        }
    }
    return i;
}

static json_t *steps_json(const Qraft__WorkflowLogRun *lr, h2o_mem_pool_t *pool)
{
    json_t *groups = json_array();
    struct step_info *si = calloc(lr->n_steps + 1, sizeof *si);
    if (groups == NULL || si == NULL) {
        json_decref(groups);
        free(si);
        return NULL;
    }
    for (size_t i = 0; i < lr->n_steps; i++) {
        step_parse(lr->steps[i], &si[i]);
    }
    for (size_t i = 0; i < lr->n_steps;) {
        if (si[i].concurrent > 1) {
            size_t end = parallel_end(si, i, lr->n_steps);
            json_array_append_new(groups, parallel_group(lr, si, i, end, pool));
            i = end;
            continue;
        }
        json_array_append_new(
            groups,
            group("sequential",
                  json_pack("[o]", step_log(lr->steps[i], &si[i],
                                            "STEP_SUCCESS", true, pool))));
        i++;
    }
    if (lr->n_steps > 0) {
        const Qraft__WorkflowLogStep *last = lr->steps[lr->n_steps - 1];
        if (last->message != NULL &&
            last->message->state != QRAFT__MESSAGE_STATE__DELIVERED &&
            !is_plan(&si[lr->n_steps - 1])) {
            json_array_append_new(
                groups,
                group("next", json_pack("[o]", next_step(last->message))));
        }
    }
    for (size_t i = 0; i < lr->n_steps; i++) {
        json_decref(si[i].doc);
    }
    free(si);
    return groups;
}

/* failureFunction: the failure callback the run's dead letter made. */
static json_t *failure_json(const Qraft__WorkflowLogRun *lr,
                            h2o_mem_pool_t *pool)
{
    const Qraft__Message *cb = lr->failure_callback;
    const Qraft__AttemptResponse *r =
        lr->failed != NULL ? lr->failed->last_response : NULL;
    json_t *o =
        json_pack("{s:o,s:o,s:s,s:o}", "messageId", qr_json_text(cb->id), "url",
                  qr_json_text(cb->url), "state", callback_state_name(cb),
                  "dlqId", qr_json_text(lr->run->failed_message_id));
    if (o == NULL) {
        return NULL;
    }
    json_object_set_new(o, "failStatus",
                        json_integer(r != NULL ? r->status : 0));
    json_object_set_new(o, "failResponse",
                        r != NULL ? bytes_text(r->body) : json_string(""));
    json_object_set_new(o, "failHeaders",
                        r != NULL
                            ? qr_rest_header_map(r->headers, r->n_headers, pool)
                            : json_object());
    return o;
}

static json_t *run_json(const Qraft__WorkflowLogRun *lr, h2o_mem_pool_t *pool)
{
    const Qraft__WorkflowRun *run = lr->run;
    json_t *o = json_object();
    if (o == NULL) {
        return NULL;
    }
    json_object_set_new(o, "workflowRunId", qr_json_text(run->id));
    json_object_set_new(o, "workflowUrl", qr_json_text(run->url));
    json_object_set_new(o, "workflowState",
                        json_string(run_state_name(run->state)));
    json_object_set_new(o, "workflowRunCreatedAt",
                        json_integer((json_int_t)run->created_ms));
    if (run->ended_ms != 0) {
        json_object_set_new(o, "workflowRunCompletedAt",
                            json_integer((json_int_t)run->ended_ms));
    }
    if (run->state == QRAFT__WORKFLOW_RUN_STATE__RUN_SUCCESS) {
        json_object_set_new(o, "workflowRunResponse", bytes_text(run->result));
    }
    if (run->n_labels > 0) {
        json_t *labels = json_array();
        for (size_t i = 0; i < run->n_labels; i++) {
            json_array_append_new(labels, qr_json_text(run->labels[i]));
        }
        json_object_set_new(o, "label", qr_json_text(run->labels[0]));
        json_object_set_new(o, "labels", labels);
    }
    if (run->invoker != NULL) {
        json_t *by = json_pack("{s:o,s:o}", "workflowRunId",
                               qr_json_text(run->invoker->run_id),
                               "workflowUrl", qr_json_text(run->invoker->url));
        if (by != NULL && lr->invoker_created_ms != 0) {
            json_object_set_new(
                by, "workflowRunCreatedAt",
                json_integer((json_int_t)lr->invoker_created_ms));
        }
        json_object_set_new(o, "invoker", by);
    }
    if (lr->failed != NULL &&
        lr->failed->state == QRAFT__MESSAGE_STATE__DEAD_LETTERED) {
        json_object_set_new(o, "dlqId", qr_json_text(lr->failed->id));
    }
    if (lr->failure_callback != NULL) {
        json_object_set_new(o, "failureFunction", failure_json(lr, pool));
    }
    json_t *steps = steps_json(lr, pool);
    if (steps == NULL) {
        json_decref(o);
        return NULL;
    }
    json_object_set_new(o, "steps", steps);
    return o;
}

static json_t *logs_json(struct rest_call *c, const Qraft__Response *resp)
{
    const Qraft__WorkflowLogsResponse *lr = resp->workflow_logs;
    json_t *runs = json_array();
    for (size_t i = 0; runs != NULL && i < lr->n_runs; i++) {
        json_t *one = run_json(lr->runs[i], &c->req->pool);
        if (one == NULL) {
            json_decref(runs);
            return NULL;
        }
        json_array_append_new(runs, one);
    }
    return runs != NULL ? qr_rest_page_json("runs", runs, lr->cursor) : NULL;
}

/* ------------------------------------------------------------------------ */
/* The query. */

static const char *const logs_params[] = {"groupBy",
                                          "cursor",
                                          "count",
                                          "workflowRunId",
                                          "workflowUrl",
                                          "state",
                                          "workflowCreatedAt",
                                          "fromDate",
                                          "toDate",
                                          "label",
                                          "messageId",
                                          "flowControlKey",
                                          "qstash_token",
                                          NULL};

/* Parameter name as unix milliseconds into *out (absent: left alone). */
static int take_ms(h2o_req_t *req,
                   h2o_iovec_t query,
                   const char *name,
                   uint64_t *out,
                   char *err)
{
    const char *v = qr_rest_query_get(&req->pool, query, name);
    if (v != NULL &&
        qr_command_parse_uint(v, strlen(v), UINT64_MAX, out) != 0) {
        snprintf(err, ERR_BYTES, "invalid %s '%.64s': want unix milliseconds",
                 name, v);
        return -1;
    }
    return 0;
}

static int parse_state(const char *v, Qraft__WorkflowRunState *out)
{
    static const struct {
        const char *name;
        Qraft__WorkflowRunState state;
    } states[] = {
        {"RUN_STARTED", QRAFT__WORKFLOW_RUN_STATE__RUN_RUNNING},
        {"RUN_SUCCESS", QRAFT__WORKFLOW_RUN_STATE__RUN_SUCCESS},
        {"RUN_FAILED", QRAFT__WORKFLOW_RUN_STATE__RUN_FAILED},
        {"RUN_CANCELED", QRAFT__WORKFLOW_RUN_STATE__RUN_CANCELED},
    };
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++) {
        if (strcmp(v, states[i].name) == 0) {
            *out = states[i].state;
            return 0;
        }
    }
    return -1;
}

/* The query into lr (pool memory); -1 with why in err. */
static int parse_logs_query(h2o_req_t *req,
                            h2o_iovec_t query,
                            Qraft__WorkflowLogsRequest *lr,
                            char *err)
{
    struct rest_param p;
    size_t pos = 0;
    while (qr_rest_next_param(query.base, query.len, &pos, &p)) {
        bool known = false;
        for (size_t i = 0; !known && logs_params[i] != NULL; i++) {
            known = qr_rest_equal_ci(p.name, p.name_len, logs_params[i]);
        }
        if (!known) {
            snprintf(err, ERR_BYTES, "unknown parameter '%.*s'",
                     (int)(p.name_len > 64 ? 64 : p.name_len), p.name);
            return -1;
        }
    }
    h2o_mem_pool_t *pool = &req->pool;
    const char *group_by = qr_rest_query_get(pool, query, "groupBy");
    if (group_by != NULL && strcmp(group_by, "workflowRunId") != 0) {
        snprintf(err, ERR_BYTES, "groupBy must be workflowRunId");
        return -1;
    }
    const char *state = qr_rest_query_get(pool, query, "state");
    if (state != NULL && parse_state(state, &lr->state) != 0) {
        snprintf(err, ERR_BYTES,
                 "state must be RUN_STARTED, RUN_SUCCESS, RUN_FAILED or "
                 "RUN_CANCELED");
        return -1;
    }
    const char *cursor = qr_rest_query_get(pool, query, "cursor");
    const char *run_id = qr_rest_query_get(pool, query, "workflowRunId");
    const char *url = qr_rest_query_get(pool, query, "workflowUrl");
    const char *message_id = qr_rest_query_get(pool, query, "messageId");
    lr->cursor = cursor != NULL ? (char *)cursor : "";
    lr->run_id = run_id != NULL ? (char *)run_id : "";
    lr->url = url != NULL ? (char *)url : "";
    lr->message_id = message_id != NULL ? (char *)message_id : "";
    if (qr_rest_take_count(pool, query, LOGS_MAX_COUNT, LOGS_DEFAULT_COUNT,
                           &lr->count, err) != 0 ||
        take_ms(req, query, "workflowCreatedAt", &lr->created_ms, err) != 0 ||
        take_ms(req, query, "fromDate", &lr->from_ms, err) != 0 ||
        take_ms(req, query, "toDate", &lr->to_ms, err) != 0 ||
        qr_rest_take_list(pool, query, "label", &lr->labels, &lr->n_labels,
                          err) != 0 ||
        qr_rest_take_list(pool, query, "flowControlKey", &lr->flow_control_keys,
                          &lr->n_flow_control_keys, err) != 0) {
        return -1;
    }
    return 0;
}

/* GET /v2/workflows/events and GET /v2/workflows/logs. */
void qr_rest_workflow_logs(struct qr_rest *r,
                           h2o_req_t *req,
                           const struct rest_match *m)
{
    static const struct rest_answer answer = {
        .want = QRAFT__RESPONSE__BODY_WORKFLOW_LOGS, .build = logs_json};
    Qraft__WorkflowLogsRequest lr = QRAFT__WORKFLOW_LOGS_REQUEST__INIT;
    char err[ERR_BYTES];
    if (parse_logs_query(req, m->query, &lr, err) != 0) {
        qr_rest_send_error(req, 400, err);
        return;
    }
    QR_REST_RUN(r, req, WORKFLOW_LOGS, workflow_logs, &lr, &answer);
}
