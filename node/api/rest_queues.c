/* /v2/queues (spec section 7): upsert (POST {"queueName", "parallelism",
 * "paused"}), list, get, delete, pause and resume. A limit the node
 * refuses (CONFLICT) is QStash's 412. */
#include "api/rest_int.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/json_text.h"

static json_t *queue_json(const Qraft__Queue *q)
{
    return json_pack("{s:o,s:I,s:b,s:I,s:I,s:I}", "name", qr_json_text(q->name),
                     "parallelism", (json_int_t)q->parallelism, "paused",
                     q->paused, "lag", (json_int_t)q->waiting, "createdAt",
                     (json_int_t)q->created_ms, "updatedAt",
                     (json_int_t)q->updated_ms);
}

/* Queue writes answer 200 with {} (the SDK ignores the body); a limit
 * (CONFLICT from the node) is QStash's 412. */
static void on_queue_write_reply(struct rest_call *c,
                                 size_t index,
                                 const Qraft__Response *resp)
{
    if (resp->status == QRAFT__STATUS__CONFLICT) {
        c->answered = true;
        qr_rest_send_error(c->req, 412, resp->error);
        return;
    }
    qr_rest_on_json_reply(c, index, resp);
}

/* How a queue write is answered: 200 {} or its error. */
static const struct rest_answer queue_write = {
    .on_reply = on_queue_write_reply,
    .build = qr_rest_empty_json,
};

/* One queue (GET /v2/queues/{name}), or all of them. */
static json_t *queues_json(struct rest_call *c, const Qraft__Response *resp)
{
    (void)c;
    if (resp->body_case == QRAFT__RESPONSE__BODY_QUEUE) {
        return queue_json(resp->queue);
    }
    json_t *arr = json_array();
    for (size_t i = 0; resp->body_case == QRAFT__RESPONSE__BODY_QUEUES &&
                       i < resp->queues->n_queues && arr != NULL;
         i++) {
        json_array_append_new(arr, queue_json(resp->queues->queues[i]));
    }
    return arr;
}

/* POST /v2/queues {"queueName": "q", "parallelism": 1, "paused": false}:
 * every field checked, none unknown. */
void qr_rest_queue_upsert(struct qr_rest *r,
                          h2o_req_t *req,
                          const struct rest_match *m)
{
    Qraft__QueueUpsertRequest up = QRAFT__QUEUE_UPSERT_REQUEST__INIT;
    char err[ERR_BYTES];
    const char *key;
    json_t *value;
    json_t *in = qr_rest_load_body(req);

    (void)m;
    if (in == NULL) {
        return;
    }
    if (!json_is_object(in)) {
        json_decref(in);
        qr_rest_send_error(req, 400, "body must be a JSON object");
        return;
    }
    err[0] = '\0';
    json_object_foreach(in, key, value)
    {
        if (strcmp(key, "queueName") == 0) {
            if (!json_is_string(value) ||
                !qr_rest_valid_name(json_string_value(value),
                                    json_string_length(value))) {
                snprintf(err, sizeof(err),
                         "queueName must be a string matching "
                         "[A-Za-z0-9._-]+");
                break;
            }
            up.name = qr_rest_pool_str(&req->pool, json_string_value(value),
                                       json_string_length(value));
        } else if (strcmp(key, "parallelism") == 0) {
            if (!json_is_integer(value) || json_integer_value(value) < 1 ||
                json_integer_value(value) > UINT32_MAX) {
                snprintf(err, sizeof(err),
                         "parallelism must be a positive integer");
                break;
            }
            up.parallelism = (uint32_t)json_integer_value(value);
        } else if (strcmp(key, "paused") == 0) {
            if (!json_is_boolean(value)) {
                snprintf(err, sizeof(err), "paused must be true or false");
                break;
            }
            up.paused = json_is_true(value);
        } else {
            snprintf(err, sizeof(err),
                     "unknown field '%.64s' (queueName, parallelism, paused)",
                     key);
            break;
        }
    }
    json_decref(in);
    if (err[0] == '\0' && up.name[0] == '\0') {
        snprintf(err, sizeof(err), "queueName is missing");
    }
    if (err[0] != '\0') {
        qr_rest_send_error(req, 400, err);
        return;
    }
    QR_REST_RUN(r, req, QUEUE_UPSERT, queue_upsert, &up, &queue_write);
}

/* GET /v2/queues (all) and /v2/queues/{queue}; DELETE /v2/queues/{queue};
 * POST /v2/queues/{queue}/pause and /resume. The route checked the name. */
void qr_rest_queue(struct qr_rest *r,
                   h2o_req_t *req,
                   const struct rest_match *m)
{
    static const struct rest_answer read_answer = {.build = queues_json};
    Qraft__QueueListRequest list = QRAFT__QUEUE_LIST_REQUEST__INIT;
    Qraft__QueueGetRequest get = QRAFT__QUEUE_GET_REQUEST__INIT;
    Qraft__QueueDeleteRequest del = QRAFT__QUEUE_DELETE_REQUEST__INIT;
    Qraft__QueuePauseRequest pause = QRAFT__QUEUE_PAUSE_REQUEST__INIT;
    bool one = m->capture.base != NULL;
    char *name = one ? qr_rest_capture(req, m) : NULL;

    if (m->op == REST_GET && !one) {
        QR_REST_RUN(r, req, QUEUE_LIST, queue_list, &list, &read_answer);
    } else if (m->op == REST_GET) {
        get.name = name;
        QR_REST_RUN(r, req, QUEUE_GET, queue_get, &get, &read_answer);
    } else if (m->op == REST_DELETE) {
        del.name = name;
        QR_REST_RUN(r, req, QUEUE_DELETE, queue_delete, &del, &queue_write);
    } else {
        pause.name = name;
        pause.paused = m->op == REST_PAUSE;
        QR_REST_RUN(r, req, QUEUE_PAUSE, queue_pause, &pause, &queue_write);
    }
}
