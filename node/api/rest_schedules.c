/* /v2/schedules (spec section 8): create (POST with Upstash-Cron and the
 * publish headers), list, get, delete, pause and resume. */
#include "api/rest_int.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/clock.h"
#include "lib/cron.h"
#include "lib/json_text.h"
#include "ops/ops.h"
#include "repl/check.h"

/* QStash's words for the state of a tick's message. */
static const char *schedule_state_word(Qraft__MessageState s)
{
    switch (s) {
        case QRAFT__MESSAGE_STATE__QUEUED:
        case QRAFT__MESSAGE_STATE__PENDING:
        case QRAFT__MESSAGE_STATE__DELIVERING:
        case QRAFT__MESSAGE_STATE__RETRYING:
            return "IN_PROGRESS";
        case QRAFT__MESSAGE_STATE__DELIVERED:
            return "SUCCESS";
        case QRAFT__MESSAGE_STATE__DEAD_LETTERED:
        case QRAFT__MESSAGE_STATE__CANCELLED:
            return "FAIL";
        default:
            return NULL; /* pruned: no longer known */
    }
}

/* The schedule as the SDK reads it; absent optionals are omitted. */
static json_t *schedule_json(const Qraft__Schedule *sc,
                             uint32_t default_retries,
                             h2o_mem_pool_t *pool)
{
    static const Qraft__PublishRequest none = QRAFT__PUBLISH_REQUEST__INIT;
    const Qraft__PublishRequest *t = sc->request != NULL ? sc->request : &none;
    json_t *o = json_object();

    if (o == NULL) {
        return NULL;
    }
    json_object_set_new(o, "scheduleId", qr_json_text(sc->id));
    json_object_set_new(o, "cron", qr_json_text(sc->cron));
    json_object_set_new(o, "createdAt",
                        json_integer((json_int_t)sc->created_ms));
    json_object_set_new(
        o, "destination",
        qr_json_text(t->topic_name[0] != '\0' ? t->topic_name : t->url));
    json_object_set_new(
        o, "method", qr_json_text(t->method[0] != '\0' ? t->method : "POST"));
    json_object_set_new(o, "header",
                        qr_rest_header_map(t->headers, t->n_headers, pool));
    if (t->body.len > 0) {
        qr_rest_set_body(o, "body", "bodyBase64", t->body);
    }
    json_object_set_new(
        o, "retries",
        json_integer(t->retries_set ? t->retries : default_retries));
    if (t->delay_ms > 0) {
        json_object_set_new(o, "delay",
                            json_integer((json_int_t)(t->delay_ms / 1000)));
    }
    qr_rest_set_opt_string(o, "callback", t->callback);
    qr_rest_set_opt_string(o, "failureCallback", t->failure_callback);
    qr_rest_set_opt_string(o, "queueName", t->queue);
    qr_rest_set_opt_string(o, "retryDelayExpression", t->retry_delay);
    /* openapi spells callerIp, the SDK's type callerIP: both. */
    qr_rest_set_opt_string(o, "callerIp", sc->caller_ip);
    qr_rest_set_opt_string(o, "callerIP", sc->caller_ip);
    qr_rest_set_labels(o, t->labels, t->n_labels);
    qr_rest_set_flow_control(o, t->flow_control_key, t->flow_parallelism,
                             t->flow_rate, t->flow_period_s);
    json_object_set_new(o, "isPaused", json_boolean(sc->paused));
    if (sc->last_slot_ms != 0) {
        json_object_set_new(o, "lastScheduleTime",
                            json_integer((json_int_t)sc->last_slot_ms));
    }
    if (sc->next_slot_ms != 0 && sc->next_slot_ms != UINT64_MAX) {
        json_object_set_new(o, "nextScheduleTime",
                            json_integer((json_int_t)sc->next_slot_ms));
    }
    json_t *states = json_object();
    for (size_t i = 0; i < sc->n_last_fired && states != NULL; i++) {
        const char *word = schedule_state_word(sc->last_fired[i]->state);
        if (word != NULL) {
            qr_json_set_text_key(states, sc->last_fired[i]->message_id,
                                 qr_json_text(word));
        }
    }
    if (states != NULL && json_object_size(states) > 0) {
        json_object_set_new(o, "lastScheduleStates", states);
    } else {
        json_decref(states);
    }
    return o;
}

static json_t *schedule_created_json(struct rest_call *c,
                                     const Qraft__Response *resp)
{
    (void)c;
    return json_pack("{s:o}", "scheduleId",
                     qr_json_text(resp->schedule_upsert->schedule_id));
}

static void on_schedules_reply(struct rest_call *c,
                               size_t index,
                               const Qraft__Response *resp)
{
    uint32_t retries = c->rest->ops->config->limits.default_retries;

    (void)index;
    if (!qr_rest_reply_ok(c, resp, QRAFT__RESPONSE__BODY_SCHEDULES)) {
        return;
    }
    if (c->single) { /* GET /v2/schedules/{id} */
        if (resp->schedules->n_schedules != 1) {
            qr_rest_send_error(c->req, 404, "schedule not found");
            return;
        }
        qr_rest_send_reply(c, 200,
                           schedule_json(resp->schedules->schedules[0], retries,
                                         &c->req->pool),
                           NULL);
        return;
    }
    json_t *out = json_array();
    for (size_t i = 0; i < resp->schedules->n_schedules && out != NULL; i++) {
        json_array_append_new(out, schedule_json(resp->schedules->schedules[i],
                                                 retries, &c->req->pool));
    }
    qr_rest_send_reply(c, 200, out, NULL);
}

/* Maps one header of a schedule's request onto up and p: Upstash-Cron,
 * Upstash-Schedule-Id, Upstash-Queue-Name, and the publish headers but
 * Upstash-Not-Before. On bad input writes why into err and returns
 * -EINVAL. */
static int schedule_header(Qraft__ScheduleUpsertRequest *up,
                           struct rest_pub *p,
                           h2o_mem_pool_t *pool,
                           const h2o_header_t *h,
                           char *err)
{
    const char *name = h->name->base;
    size_t nlen = h->name->len;
    char *value = qr_rest_pool_str(pool, h->value.base, h->value.len);
    const char *bad_name = NULL; /* why, when value must be a name */

    if (qr_rest_check_header_utf8(name, nlen, h->value.base, h->value.len,
                                  err) != 0) {
        return -EINVAL;
    }
    if (qr_rest_equal_ci(name, nlen, "upstash-cron")) {
        up->cron = value;
    } else if (qr_rest_equal_ci(name, nlen, "upstash-schedule-id")) {
        up->schedule_id = value;
        bad_name =
            "invalid Upstash-Schedule-Id: it must match "
            "[A-Za-z0-9._-]+ (at most 256 characters)";
    } else if (qr_rest_equal_ci(name, nlen, "upstash-queue-name")) {
        p->pr.queue = value;
        bad_name =
            "invalid Upstash-Queue-Name: it must match "
            "[A-Za-z0-9._-]+";
    } else if (qr_rest_equal_ci(name, nlen, "upstash-not-before")) {
        snprintf(err, ERR_BYTES,
                 "Upstash-Not-Before does not apply to schedules (use "
                 "Upstash-Delay)");
        return -EINVAL;
    } else {
        return qr_rest_apply_header(p, pool, *h->name, h->value, err);
    }
    if (bad_name != NULL && !qr_rest_valid_name(value, h->value.len)) {
        snprintf(err, ERR_BYTES, "%s", bad_name);
        return -EINVAL;
    }
    return 0;
}

/* POST /v2/schedules/{destination}: Upstash-Cron (required),
 * Upstash-Schedule-Id, Upstash-Queue-Name and the publish headers. The
 * destination is the raw rest of the path (none: 400). */
void qr_rest_schedule_create(struct qr_rest *r,
                             h2o_req_t *req,
                             const struct rest_match *m)
{
    char err[ERR_BYTES];
    struct rest_pub p;
    Qraft__ScheduleUpsertRequest up = QRAFT__SCHEDULE_UPSERT_REQUEST__INIT;

    if (!qr_rest_pub_start(&p, req, m->capture, m->query, 0)) {
        return;
    }
    up.cron = NULL;
    for (size_t i = 0; i < req->headers.size; i++) {
        if (schedule_header(&up, &p, &req->pool, &req->headers.entries[i],
                            err) != 0) {
            qr_rest_send_error(req, 400, err);
            return;
        }
    }
    if (up.cron == NULL) {
        qr_rest_send_error(
            req, 400,
            "Upstash-Cron header is missing (a cron expression such "
            "as \"*/5 * * * *\")");
        return;
    }
    up.request = &p.pr;
    up.caller_ip = qr_rest_caller_ip(req);
    QR_REST_RUN(
        r, req, SCHEDULE_UPSERT, schedule_upsert, &up,
        &(struct rest_answer){.want = QRAFT__RESPONSE__BODY_SCHEDULE_UPSERT,
                              .build = schedule_created_json});
}

/* How a schedule write (delete, pause, resume) is answered: 200 {} or its
 * error. */
static const struct rest_answer schedule_write = {.build = qr_rest_empty_json};

/* GET /v2/schedules (all) and /v2/schedules/{id}; DELETE /v2/schedules/{id};
 * PATCH or POST /v2/schedules/{id}/pause and /resume. */
void qr_rest_schedule(struct qr_rest *r,
                      h2o_req_t *req,
                      const struct rest_match *m)
{
    Qraft__ScheduleListRequest list = QRAFT__SCHEDULE_LIST_REQUEST__INIT;
    Qraft__ScheduleGetRequest get = QRAFT__SCHEDULE_GET_REQUEST__INIT;
    Qraft__ScheduleDeleteRequest del = QRAFT__SCHEDULE_DELETE_REQUEST__INIT;
    Qraft__SchedulePauseRequest pause = QRAFT__SCHEDULE_PAUSE_REQUEST__INIT;
    bool one = m->capture.base != NULL;
    char *id = one ? qr_rest_capture(req, m) : NULL;
    const struct rest_answer read_answer = {.on_reply = on_schedules_reply,
                                            .single = one};

    if (m->op == REST_GET && !one) {
        QR_REST_RUN(r, req, SCHEDULE_LIST, schedule_list, &list, &read_answer);
    } else if (m->op == REST_GET) {
        get.schedule_id = id;
        QR_REST_RUN(r, req, SCHEDULE_GET, schedule_get, &get, &read_answer);
    } else if (m->op == REST_DELETE) {
        del.schedule_id = id;
        QR_REST_RUN(r, req, SCHEDULE_DELETE, schedule_delete, &del,
                    &schedule_write);
    } else {
        pause.schedule_id = id;
        pause.paused = m->op == REST_PAUSE;
        QR_REST_RUN(r, req, SCHEDULE_PAUSE, schedule_pause, &pause,
                    &schedule_write);
    }
}

/* At most this many fire times in one preview. */
#define CRON_PREVIEW_MAX 20

/* GET /v2/qraft/cron?cron=E[&count=N]: the next N (1..20, default 5) times
 * a schedule with cron E would fire after now, as unix ms: the console's
 * preview of a schedule it is about to create. The same parser and clock
 * as a schedule's (lib/cron.c, CRON_TZ= included), so what it shows is
 * what the schedule will do; a bad expression is a 400 with the same
 * reason a create would give. Answered by the node asked; writes nothing. */
void qr_rest_cron_preview(struct qr_rest *r,
                          h2o_req_t *req,
                          const struct rest_match *m)
{
    const char *expr = qr_rest_query_get(&req->pool, m->query, "cron");
    const char *count = qr_rest_query_get(&req->pool, m->query, "count");
    uint64_t n = 5;
    struct qr_cron cron;
    char err[160];

    if (expr == NULL || expr[0] == '\0') {
        qr_rest_send_error(req, 400,
                           "cron is required (e.g. ?cron=*/5+*+*+*+*)");
        return;
    }
    if (count != NULL && (qr_command_parse_uint(count, strlen(count),
                                                CRON_PREVIEW_MAX, &n) != 0 ||
                          n == 0)) {
        qr_rest_send_error(req, 400, "count must be 1 to 20");
        return;
    }
    if (qr_cron_parse(expr, &cron, err, sizeof err) != 0) {
        qr_rest_send_error(req, 400, err);
        return;
    }
    json_t *times = json_array();
    uint64_t at = qr_clock_wall_ms();
    for (uint64_t i = 0; times != NULL && i < n; i++) {
        if (qr_cron_next(&cron, at, &at) != 0) {
            break; /* none within eight years: fewer times */
        }
        if (json_array_append_new(times, json_integer((json_int_t)at)) != 0) {
            json_decref(times);
            times = NULL;
        }
    }
    (void)r;
    qr_rest_send_json(req, 200,
                      times != NULL ? json_pack("{s:o}", "next", times) : NULL);
}
