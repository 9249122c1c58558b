/* libqraft's delivery controls (include/qraft.h): queues and schedules
 * (upsert, get, list, pause, delete over the queue_* and schedule_* RPC
 * kinds) and flow control keys (flow_control_read and _update), with the
 * conversions to the public structs. Every call here is safe to repeat (an
 * upsert, pause or pin twice leaves the same state; a schedule create
 * carries an idempotency key), so all retry as reads. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "qraft.h"
#include "qraft.pb-c.h"

/* ----------------------------------------------------------------------
 * Queues */

static int check_name(struct qraft_client *c, const char *name, const char *of)
{
    if (name == NULL || name[0] == '\0') {
        return qr_client_fail(c, QRAFT_EINVAL, "a %s is required", of);
    }
    return 0;
}

void qraft_queues_free(struct qraft_queue *queues, size_t n)
{
    if (queues == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        free(queues[i].name);
    }
    free(queues);
}

static int queues_from_pb(struct qraft_client *c,
                          Qraft__Queue *const *pq,
                          size_t n,
                          struct qraft_queue **out)
{
    struct qraft_queue *qs = calloc(n > 0 ? n : 1, sizeof *qs);
    if (qs == NULL) {
        return qr_client_fail(c, QRAFT_ENOMEM, "out of memory for queues");
    }
    bool oom = false;
    for (size_t i = 0; i < n; i++) {
        qs[i].name = qr_client_dup_str(pq[i]->name, &oom);
        qs[i].parallelism = pq[i]->parallelism;
        qs[i].paused = pq[i]->paused;
        qs[i].active = pq[i]->active;
        qs[i].waiting = pq[i]->waiting;
        qs[i].created_ms = pq[i]->created_ms;
        qs[i].updated_ms = pq[i]->updated_ms;
    }
    if (oom) {
        qraft_queues_free(qs, n);
        return qr_client_fail(c, QRAFT_ENOMEM, "out of memory for queues");
    }
    *out = qs;
    return 0;
}

int qraft_queue_upsert(struct qraft_client *c,
                       const char *name,
                       uint32_t parallelism,
                       bool paused,
                       struct qraft_queue **out)
{
    int rc = check_name(c, name, "queue name");
    if (rc != 0) {
        return rc;
    }
    Qraft__QueueUpsertRequest up = QRAFT__QUEUE_UPSERT_REQUEST__INIT;
    up.name = (char *)name;
    up.parallelism = parallelism;
    up.paused = paused;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_QUEUE_UPSERT;
    req.queue_upsert = &up;
    Qraft__Response *resp = NULL;
    rc = qr_client_call(c, &req, RETRY_ANY, &resp, NULL);
    if (rc != 0) {
        return rc;
    }
    if (out != NULL) {
        if (resp->body_case == QRAFT__RESPONSE__BODY_QUEUE) {
            rc = queues_from_pb(c, &resp->queue, 1, out);
        } else {
            rc = qraft_queue_get(c, name, out);
        }
    }
    qraft__response__free_unpacked(resp, NULL);
    return rc;
}

int qraft_queue_get(struct qraft_client *c,
                    const char *name,
                    struct qraft_queue **out)
{
    int rc = check_name(c, name, "queue name");
    if (rc != 0) {
        return rc;
    }
    Qraft__QueueGetRequest get = QRAFT__QUEUE_GET_REQUEST__INIT;
    get.name = (char *)name;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_QUEUE_GET;
    req.queue_get = &get;
    Qraft__Response *resp = NULL;
    rc = qr_client_call_expect(c, &req, RETRY_ANY, QRAFT__RESPONSE__BODY_QUEUE,
                               &resp);
    if (rc != 0) {
        return rc;
    }
    rc = queues_from_pb(c, &resp->queue, 1, out);
    qraft__response__free_unpacked(resp, NULL);
    return rc;
}

int qraft_queue_list(struct qraft_client *c,
                     struct qraft_queue **out,
                     size_t *n)
{
    Qraft__QueueListRequest list = QRAFT__QUEUE_LIST_REQUEST__INIT;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_QUEUE_LIST;
    req.queue_list = &list;
    Qraft__Response *resp = NULL;
    int rc = qr_client_call_expect(c, &req, RETRY_ANY,
                                   QRAFT__RESPONSE__BODY_QUEUES, &resp);
    if (rc != 0) {
        return rc;
    }
    rc = queues_from_pb(c, resp->queues->queues, resp->queues->n_queues, out);
    if (rc == 0) {
        *n = resp->queues->n_queues;
    }
    qraft__response__free_unpacked(resp, NULL);
    return rc;
}

/* Runs a write whose answer carries no body. */
static int call_ok(struct qraft_client *c, Qraft__Request *req)
{
    Qraft__Response *resp = NULL;
    int rc = qr_client_call(c, req, RETRY_ANY, &resp, NULL);
    if (rc == 0) {
        qraft__response__free_unpacked(resp, NULL);
    }
    return rc;
}

int qraft_queue_pause(struct qraft_client *c, const char *name, bool paused)
{
    int rc = check_name(c, name, "queue name");
    if (rc != 0) {
        return rc;
    }
    Qraft__QueuePauseRequest p = QRAFT__QUEUE_PAUSE_REQUEST__INIT;
    p.name = (char *)name;
    p.paused = paused;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_QUEUE_PAUSE;
    req.queue_pause = &p;
    return call_ok(c, &req);
}

int qraft_queue_delete(struct qraft_client *c, const char *name)
{
    int rc = check_name(c, name, "queue name");
    if (rc != 0) {
        return rc;
    }
    Qraft__QueueDeleteRequest d = QRAFT__QUEUE_DELETE_REQUEST__INIT;
    d.name = (char *)name;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_QUEUE_DELETE;
    req.queue_delete = &d;
    return call_ok(c, &req);
}

/* ----------------------------------------------------------------------
 * Schedules */

static void schedule_fini(struct qraft_schedule *s)
{
    free(s->id);
    free(s->cron);
    free(s->url);
    free(s->method);
    free(s->queue);
    free(s->body);
    for (size_t i = 0; i < s->n_last_fired; i++) {
        free(s->last_fired[i].message_id);
    }
    free(s->last_fired);
}

void qraft_schedules_free(struct qraft_schedule *schedules, size_t n)
{
    if (schedules == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        schedule_fini(&schedules[i]);
    }
    free(schedules);
}

/* Fills s from ps; false when out of memory (s is then half filled, and
 * schedule_fini frees it). */
static bool schedule_from_pb(const Qraft__Schedule *ps,
                             struct qraft_schedule *s)
{
    bool oom = false;
    const Qraft__PublishRequest *r = ps->request;
    s->id = qr_client_dup_str(ps->id, &oom);
    s->cron = qr_client_dup_str(ps->cron, &oom);
    s->url = qr_client_dup_str(r != NULL ? r->url : "", &oom);
    s->method = qr_client_dup_str(
        r != NULL && r->method[0] != '\0' ? r->method : "POST", &oom);
    s->queue = qr_client_dup_str(r != NULL ? r->queue : "", &oom);
    if (r != NULL && r->body.len > 0) {
        s->body = malloc(r->body.len);
        if (s->body == NULL) {
            return false;
        }
        memcpy(s->body, r->body.data, r->body.len);
        s->body_len = r->body.len;
    }
    s->paused = ps->paused;
    s->created_ms = ps->created_ms;
    s->updated_ms = ps->updated_ms;
    s->last_slot_ms = ps->last_slot_ms;
    s->next_slot_ms = ps->next_slot_ms;
    if (ps->n_last_fired > 0) {
        s->last_fired = calloc(ps->n_last_fired, sizeof *s->last_fired);
        if (s->last_fired == NULL) {
            return false;
        }
        s->n_last_fired = ps->n_last_fired;
        for (size_t i = 0; i < ps->n_last_fired; i++) {
            s->last_fired[i].message_id =
                qr_client_dup_str(ps->last_fired[i]->message_id, &oom);
            s->last_fired[i].state =
                qr_client_to_state(ps->last_fired[i]->state);
        }
    }
    return !oom;
}

static int schedules_call(struct qraft_client *c,
                          Qraft__Request *req,
                          struct qraft_schedule **out,
                          size_t *n)
{
    Qraft__Response *resp = NULL;
    int rc = qr_client_call_expect(c, req, RETRY_ANY,
                                   QRAFT__RESPONSE__BODY_SCHEDULES, &resp);
    if (rc != 0) {
        return rc;
    }
    const Qraft__ScheduleListResponse *l = resp->schedules;
    struct qraft_schedule *ss =
        calloc(l->n_schedules > 0 ? l->n_schedules : 1, sizeof *ss);
    bool ok = ss != NULL;
    for (size_t i = 0; ok && i < l->n_schedules; i++) {
        ok = schedule_from_pb(l->schedules[i], &ss[i]);
    }
    if (!ok) {
        qraft_schedules_free(ss, l->n_schedules);
        rc = qr_client_fail(c, QRAFT_ENOMEM, "out of memory for schedules");
    } else {
        *out = ss;
        *n = l->n_schedules;
    }
    qraft__response__free_unpacked(resp, NULL);
    return rc;
}

int qraft_schedule_create(struct qraft_client *c,
                          const char *id,
                          const char *cron,
                          const struct qraft_publish *p,
                          char id_out[QRAFT_ID_MAX])
{
    int rc = check_name(c, cron, "cron expression");
    if (rc != 0) {
        return rc;
    }
    struct qr_client_publish_req r;
    rc = qr_client_publish_req_init(c, p, NULL, &r);
    if (rc != 0) {
        return rc;
    }
    Qraft__ScheduleUpsertRequest up = QRAFT__SCHEDULE_UPSERT_REQUEST__INIT;
    up.schedule_id = qr_client_or_empty(id);
    up.cron = (char *)cron;
    up.request = &r.pr;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_SCHEDULE_UPSERT;
    req.schedule_upsert = &up;
    Qraft__Response *resp = NULL;
    rc = qr_client_call_expect(c, &req, RETRY_ANY,
                               QRAFT__RESPONSE__BODY_SCHEDULE_UPSERT, &resp);
    if (rc == 0) {
        const char *got = resp->schedule_upsert->schedule_id;
        if (got[0] == '\0' || strlen(got) >= QRAFT_ID_MAX) {
            rc = qr_client_fail(c, QRAFT_EPROTO,
                                "the server answered a schedule without an id");
        } else {
            strcpy(id_out, got);
        }
        qraft__response__free_unpacked(resp, NULL);
    }
    qr_client_publish_req_fini(&r);
    return rc;
}

int qraft_schedule_get(struct qraft_client *c,
                       const char *id,
                       struct qraft_schedule **out)
{
    int rc = check_name(c, id, "schedule id");
    if (rc != 0) {
        return rc;
    }
    Qraft__ScheduleGetRequest get = QRAFT__SCHEDULE_GET_REQUEST__INIT;
    get.schedule_id = (char *)id;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_SCHEDULE_GET;
    req.schedule_get = &get;
    size_t n = 0;
    rc = schedules_call(c, &req, out, &n);
    if (rc == 0 && n != 1) {
        qraft_schedules_free(*out, n);
        *out = NULL;
        rc = qr_client_fail(c, QRAFT_EPROTO,
                            "the server answered %zu schedules for one id", n);
    }
    return rc;
}

int qraft_schedule_list(struct qraft_client *c,
                        struct qraft_schedule **out,
                        size_t *n)
{
    Qraft__ScheduleListRequest list = QRAFT__SCHEDULE_LIST_REQUEST__INIT;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_SCHEDULE_LIST;
    req.schedule_list = &list;
    return schedules_call(c, &req, out, n);
}

int qraft_schedule_pause(struct qraft_client *c, const char *id, bool paused)
{
    int rc = check_name(c, id, "schedule id");
    if (rc != 0) {
        return rc;
    }
    Qraft__SchedulePauseRequest p = QRAFT__SCHEDULE_PAUSE_REQUEST__INIT;
    p.schedule_id = (char *)id;
    p.paused = paused;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_SCHEDULE_PAUSE;
    req.schedule_pause = &p;
    return call_ok(c, &req);
}

int qraft_schedule_delete(struct qraft_client *c, const char *id)
{
    int rc = check_name(c, id, "schedule id");
    if (rc != 0) {
        return rc;
    }
    Qraft__ScheduleDeleteRequest d = QRAFT__SCHEDULE_DELETE_REQUEST__INIT;
    d.schedule_id = (char *)id;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_SCHEDULE_DELETE;
    req.schedule_delete = &d;
    return call_ok(c, &req);
}

/* ----------------------------------------------------------------------
 * Flow control keys */

void qraft_flow_keys_free(struct qraft_flow_key *keys, size_t n)
{
    if (keys == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        free(keys[i].key);
    }
    free(keys);
}

static int flow_read(struct qraft_client *c,
                     const char *key,
                     struct qraft_flow_key **out,
                     size_t *n)
{
    Qraft__FlowControlReadRequest rd = QRAFT__FLOW_CONTROL_READ_REQUEST__INIT;
    rd.key = qr_client_or_empty(key);
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_FLOW_CONTROL_READ;
    req.flow_control_read = &rd;
    Qraft__Response *resp = NULL;
    int rc = qr_client_call_expect(c, &req, RETRY_ANY,
                                   QRAFT__RESPONSE__BODY_FLOW_CONTROL, &resp);
    if (rc != 0) {
        return rc;
    }
    const Qraft__FlowControlReadResponse *r = resp->flow_control;
    struct qraft_flow_key *ks =
        calloc(r->n_keys > 0 ? r->n_keys : 1, sizeof *ks);
    bool oom = ks == NULL;
    for (size_t i = 0; !oom && i < r->n_keys; i++) {
        const Qraft__FlowControlInfo *pk = r->keys[i];
        ks[i].key = qr_client_dup_str(pk->key, &oom);
        ks[i].wait_list_size = pk->wait_list_size;
        ks[i].parallelism_max = pk->parallelism_max;
        ks[i].parallelism_count = pk->parallelism_count;
        ks[i].rate_max = pk->rate_max;
        ks[i].rate_count = pk->rate_count;
        ks[i].rate_period_s = pk->rate_period_s;
        ks[i].rate_period_start_s = pk->rate_period_start_s;
        ks[i].paused = pk->paused;
        ks[i].pinned_parallelism = pk->pinned_parallelism;
        ks[i].pinned_rate = pk->pinned_rate;
        ks[i].counts_known = pk->counts_known;
    }
    size_t got = r->n_keys;
    qraft__response__free_unpacked(resp, NULL);
    if (oom) {
        qraft_flow_keys_free(ks, got);
        return qr_client_fail(c, QRAFT_ENOMEM, "out of memory for flow keys");
    }
    *out = ks;
    *n = got;
    return 0;
}

int qraft_flow_get(struct qraft_client *c,
                   const char *key,
                   struct qraft_flow_key **out)
{
    int rc = check_name(c, key, "flow control key");
    if (rc != 0) {
        return rc;
    }
    size_t n = 0;
    rc = flow_read(c, key, out, &n);
    if (rc == 0 && n != 1) {
        qraft_flow_keys_free(*out, n);
        *out = NULL;
        rc = qr_client_fail(c, QRAFT_ENOTFOUND, "flow control key %s not found",
                            key);
    }
    return rc;
}

int qraft_flow_list(struct qraft_client *c,
                    struct qraft_flow_key **out,
                    size_t *n)
{
    return flow_read(c, NULL, out, n);
}

int qraft_flow_update(struct qraft_client *c,
                      const char *key,
                      const struct qraft_flow_update *u)
{
    int rc = check_name(c, key, "flow control key");
    if (rc != 0) {
        return rc;
    }
    if (u == NULL || u->action < QRAFT_FLOW_PAUSE ||
        u->action > QRAFT_FLOW_RESET_RATE) {
        return qr_client_fail(c, QRAFT_EINVAL, "unknown flow control action");
    }
    Qraft__FlowControlUpdate up = QRAFT__FLOW_CONTROL_UPDATE__INIT;
    up.key = (char *)key;
    up.action = (Qraft__FlowControlAction)u->action;
    up.parallelism = u->parallelism;
    up.rate = u->rate;
    up.period_s = u->period_s;
    up.unpin_parallelism = u->unpin_parallelism;
    up.unpin_rate = u->unpin_rate;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_FLOW_CONTROL_UPDATE;
    req.flow_control_update = &up;
    return call_ok(c, &req);
}
