/* /v2/flowControl and /v2/globalParallelism (docs/api.md 5.11), as the
 * QStash SDK's FlowControlApi calls them: GET one key (or every key, a
 * qraft extension), POST {key}/pause, /resume, /pin?parallelism=&rate=
 * &period=, /unpin?parallelism=true&rate=true and /resetRate. Writes
 * answer 200 {} (the SDK reads no body). */
#include "api/rest_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/json_text.h"
#include "repl/check.h"

static json_t *info_json(const Qraft__FlowControlInfo *i)
{
    return json_pack(
        "{s:o,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:b,s:b,s:b}", "flowControlKey",
        qr_json_text(i->key), "waitListSize", (json_int_t)i->wait_list_size,
        "parallelismMax", (json_int_t)i->parallelism_max, "parallelismCount",
        (json_int_t)i->parallelism_count, "rateMax", (json_int_t)i->rate_max,
        "rateCount", (json_int_t)i->rate_count, "ratePeriod",
        (json_int_t)i->rate_period_s, "ratePeriodStart",
        (json_int_t)i->rate_period_start_s, "isPaused", i->paused,
        "isPinnedParallelism", i->pinned_parallelism, "isPinnedRate",
        i->pinned_rate);
}

static bool has_keys(const Qraft__Response *resp)
{
    return resp->body_case == QRAFT__RESPONSE__BODY_FLOW_CONTROL;
}

static json_t *one_json(struct rest_call *c, const Qraft__Response *resp)
{
    (void)c;
    if (!has_keys(resp) || resp->flow_control->n_keys != 1) {
        return NULL;
    }
    return info_json(resp->flow_control->keys[0]);
}

static json_t *all_json(struct rest_call *c, const Qraft__Response *resp)
{
    (void)c;
    json_t *arr = json_array();
    for (size_t i = 0;
         has_keys(resp) && arr != NULL && i < resp->flow_control->n_keys; i++) {
        json_array_append_new(arr, info_json(resp->flow_control->keys[i]));
    }
    return arr;
}

static json_t *global_json(struct rest_call *c, const Qraft__Response *resp)
{
    (void)c;
    if (!has_keys(resp)) {
        return NULL;
    }
    return json_pack("{s:I,s:I}", "parallelismMax",
                     (json_int_t)resp->flow_control->parallelism_max,
                     "parallelismCount",
                     (json_int_t)resp->flow_control->parallelism_count);
}

static const struct rest_answer one_answer = {
    .want = QRAFT__RESPONSE__BODY_FLOW_CONTROL,
    .build = one_json};
static const struct rest_answer all_answer = {
    .want = QRAFT__RESPONSE__BODY_FLOW_CONTROL,
    .build = all_json};
static const struct rest_answer global_answer = {
    .want = QRAFT__RESPONSE__BODY_FLOW_CONTROL,
    .build = global_json};
static const struct rest_answer write_answer = {.build = qr_rest_empty_json};

/* GET /v2/globalParallelism: this node's deliveries awaiting a response
 * and the most it holds. */
void qr_rest_global_parallelism(struct qr_rest *r,
                                h2o_req_t *req,
                                const struct rest_match *m)
{
    Qraft__FlowControlReadRequest read = QRAFT__FLOW_CONTROL_READ_REQUEST__INIT;
    (void)m;
    read.global = true;
    QR_REST_RUN(r, req, FLOW_CONTROL_READ, flow_control_read, &read,
                &global_answer);
}

/* A pin's or unpin's query into u; false with why in err. */
static bool parse_pin(h2o_iovec_t query,
                      bool unpin,
                      Qraft__FlowControlUpdate *u,
                      char *err)
{
    struct rest_param p;
    size_t pos = 0;
    while (qr_rest_next_param(query.base, query.len, &pos, &p)) {
        bool parallelism = qr_rest_equal_ci(p.name, p.name_len, "parallelism");
        bool rate = qr_rest_equal_ci(p.name, p.name_len, "rate");
        bool period = qr_rest_equal_ci(p.name, p.name_len, "period");
        uint64_t v = 0;
        if (unpin && (parallelism || rate)) {
            bool yes = qr_rest_equal_ci(p.value, p.value_len, "true");
            if (!yes && !qr_rest_equal_ci(p.value, p.value_len, "false")) {
                snprintf(err, ERR_BYTES, "%s must be true or false",
                         parallelism ? "parallelism" : "rate");
                return false;
            }
            if (parallelism) {
                u->unpin_parallelism = yes;
            } else {
                u->unpin_rate = yes;
            }
        } else if (!unpin && (parallelism || rate)) {
            if (qr_command_parse_uint(p.value, p.value_len, UINT32_MAX, &v) !=
                    0 ||
                v == 0) {
                snprintf(err, ERR_BYTES, "%s must be a whole number >= 1",
                         parallelism ? "parallelism" : "rate");
                return false;
            }
            if (parallelism) {
                u->parallelism = (uint32_t)v;
            } else {
                u->rate = (uint32_t)v;
            }
        } else if (!unpin && period) {
            /* Seconds, as the SDK sends it, or a duration ("1m"). */
            uint64_t ms = 0;
            if (qr_command_parse_uint(p.value, p.value_len, UINT64_MAX / 1000,
                                      &v) == 0) {
                ms = v * 1000;
            } else if (qr_command_parse_duration(p.value, p.value_len, &ms) !=
                       0) {
                ms = 0;
            }
            if (ms < 1000 || ms % 1000 != 0) {
                snprintf(err, ERR_BYTES,
                         "period must be whole seconds, at least 1 s");
                return false;
            }
            u->period_s = ms / 1000;
        } else {
            snprintf(err, ERR_BYTES, "unknown parameter '%.*s' (%s)",
                     (int)(p.name_len < 64 ? p.name_len : 64), p.name,
                     unpin ? "parallelism, rate" : "parallelism, rate, period");
            return false;
        }
    }
    return true;
}

/* GET /v2/flowControl (every key), GET /v2/flowControl/{id}, POST
 * /v2/flowControl/{id}/<action>. */
void qr_rest_flow_control(struct qr_rest *r,
                          h2o_req_t *req,
                          const struct rest_match *m)
{
    Qraft__FlowControlReadRequest read = QRAFT__FLOW_CONTROL_READ_REQUEST__INIT;
    Qraft__FlowControlUpdate u = QRAFT__FLOW_CONTROL_UPDATE__INIT;
    char err[ERR_BYTES];
    char *key = m->capture.base != NULL ? qr_rest_capture(req, m) : "";

    if (m->op == REST_GET) {
        read.key = key;
        QR_REST_RUN(r, req, FLOW_CONTROL_READ, flow_control_read, &read,
                    key[0] != '\0' ? &one_answer : &all_answer);
        return;
    }
    u.key = key;
    switch (m->op) {
        case REST_PAUSE:
            u.action = QRAFT__FLOW_CONTROL_ACTION__FLOW_CONTROL_PAUSE;
            break;
        case REST_RESUME:
            u.action = QRAFT__FLOW_CONTROL_ACTION__FLOW_CONTROL_RESUME;
            break;
        case REST_PIN:
            u.action = QRAFT__FLOW_CONTROL_ACTION__FLOW_CONTROL_PIN;
            break;
        case REST_UNPIN:
            u.action = QRAFT__FLOW_CONTROL_ACTION__FLOW_CONTROL_UNPIN;
            break;
        default:
            u.action = QRAFT__FLOW_CONTROL_ACTION__FLOW_CONTROL_RESET_RATE;
            break;
    }
    bool pins = m->op == REST_PIN || m->op == REST_UNPIN;
    if (pins && !parse_pin(m->query, m->op == REST_UNPIN, &u, err)) {
        qr_rest_send_error(req, 400, err);
        return;
    }
    /* The key and what the action needs are checked by the operation
     * (ops/flow.c), for this face and RPC alike. */
    QR_REST_RUN(r, req, FLOW_CONTROL_UPDATE, flow_control_update, &u,
                &write_answer);
}
