/* Schedules: writes go through raft like any command; the leader evaluates
 * the cron, apply only stores what it is given. */
#include "ops/ops_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/cron.h"
#include "repl/check.h"
#include "repl/command.h"
#include "repl/redact.h"

/* Dedup keys of a schedule's creation live beside those of publishes; this
 * prefix keeps the two apart (a dedup id reused for a publish and for a
 * schedule names two different things). */
#define SCHEDULE_DEDUP_PREFIX "schedule:"

static void on_schedule_upserted(void *data,
                                 int status,
                                 const struct qr_apply_result *res)
{
    struct qr_call *call = data;
    if (qr_call_applied_ok(call, status, res)) {
        Qraft__ScheduleUpsertResponse ur =
            QRAFT__SCHEDULE_UPSERT_RESPONSE__INIT;
        ur.schedule_id = (char *)res->message_id;
        ur.deduplicated = res->deduplicated;
        QR_OP_REPLY_BODY(call->op, call->id, SCHEDULE_UPSERT, schedule_upsert,
                         &ur);
    }
    qr_call_free(call);
}

void qr_op_schedule_upsert(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_ops *ops = op->ops;
    const Qraft__ScheduleUpsertRequest *r = req->schedule_upsert;
    struct qr_cron cron;
    uint64_t first_slot_ms = 0;
    char err[256];
    int rv = qr_command_check_schedule(r, &ops->config->limits,
                                       qr_cluster_now_ms(ops->cluster), &cron,
                                       &first_slot_ms, err, sizeof err);
    if (rv == 0) {
        rv =
            qr_ops_check_publish_destinations(ops, r->request, err, sizeof err);
    }
    if (rv == 0 && r->request->topic_name[0] != '\0') {
        /* Like a publish: a url group must exist when it is named. Each
         * tick fans out to the endpoints it has then. */
        Qraft__UrlGroup *g = NULL;
        rv = qr_ops_load_group(ops, r->request->topic_name, &g);
        if (rv == 0) {
            qraft__url_group__free_unpacked(g, NULL);
        } else if (rv == QR_ENOTFOUND) {
            snprintf(err, sizeof err, "url group '%.64s' not found",
                     r->request->topic_name);
        } else {
            snprintf(err, sizeof err, "reading the store: %s", qr_strerror(rv));
        }
    }
    if (rv != 0) {
        qr_op_error(op, req->id, qr_op_status_of(rv), "%s", err);
        return;
    }
    char id[QR_ID_BYTES];
    if (r->schedule_id[0] == '\0') {
        qr_cluster_new_message_id(ops->cluster, id);
        memcpy(id, "scd_", 4); /* same shape as message ids */
    }
    char trimmed[QR_COMMAND_MAX_CRON_BYTES + 1];
    qr_cron_trim(r->cron, trimmed, sizeof trimmed);

    /* The dedup fields dedup the creation, not each tick. */
    char *keys[QR_DEDUP_MAX_KEYS] = {NULL, NULL, NULL};
    char *prefixed[QR_DEDUP_MAX_KEYS] = {NULL, NULL, NULL};
    size_t n_keys = 0;
    rv = qr_command_dedup_keys(r->request, keys, &n_keys);
    for (size_t i = 0; i < n_keys && rv == 0; i++) {
        if (asprintf(&prefixed[i], "%s%s", SCHEDULE_DEDUP_PREFIX, keys[i]) <
            0) {
            prefixed[i] = NULL;
            rv = -ENOMEM;
        }
    }
    if (rv == 0) {
        Qraft__PublishRequest tmpl = *r->request;
        tmpl.dedup_id = "";
        tmpl.content_dedup = false;
        tmpl.idempotency_key = "";
        Qraft__Schedule sc = QRAFT__SCHEDULE__INIT;
        sc.id = r->schedule_id[0] != '\0' ? r->schedule_id : id;
        sc.cron = trimmed;
        sc.request = &tmpl;
        sc.next_slot_ms = first_slot_ms;
        sc.caller_ip = r->caller_ip;
        Qraft__ScheduleUpsert u = QRAFT__SCHEDULE_UPSERT__INIT;
        u.schedule = &sc;
        u.n_dedup_keys = n_keys;
        u.dedup_keys = prefixed;
        u.dedup_window_ms = ops->config->limits.dedup_window_ms;
        QR_OP_PROPOSE(op, req, SCHEDULE_UPSERT, schedule_upsert, &u,
                      on_schedule_upserted);
    } else {
        qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
    }
    qr_command_dedup_keys_free(keys, n_keys);
    qr_command_dedup_keys_free(prefixed, n_keys);
}

static bool schedule_id_ok(struct qr_op *op,
                           const Qraft__Request *req,
                           const char *id)
{
    if (id[0] == '\0' || strlen(id) > op->ops->config->limits.max_name_bytes) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                    "schedule id is missing or too long");
        return false;
    }
    return true;
}

void qr_op_schedule_delete(struct qr_op *op, const Qraft__Request *req)
{
    if (!schedule_id_ok(op, req, req->schedule_delete->schedule_id)) {
        return;
    }
    Qraft__ScheduleDelete d = QRAFT__SCHEDULE_DELETE__INIT;
    d.schedule_id = req->schedule_delete->schedule_id;
    QR_OP_PROPOSE_OK(op, req, SCHEDULE_DELETE, schedule_delete, &d);
}

/* Pause, or resume from the first slot after the leader's time (computed
 * here, from the stored cron: apply evaluates none). */
void qr_op_schedule_pause(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_ops *ops = op->ops;
    const Qraft__SchedulePauseRequest *r = req->schedule_pause;
    if (!schedule_id_ok(op, req, r->schedule_id)) {
        return;
    }
    Qraft__SchedulePause p = QRAFT__SCHEDULE_PAUSE__INIT;
    p.schedule_id = r->schedule_id;
    p.paused = r->paused;
    if (!r->paused) {
        Qraft__Schedule *sc = NULL;
        struct qr_store_txn *txn = NULL;
        int rv = qr_store_txn_begin(ops->store, false, &txn);
        if (rv == 0) {
            rv = qr_store_schedule_get(txn, r->schedule_id, &sc);
            qr_store_txn_abort(txn);
        }
        if (rv == QR_ENOTFOUND) {
            qr_op_error(op, req->id, QRAFT__STATUS__NOT_FOUND,
                        "schedule %.64s not found", r->schedule_id);
            return;
        }
        struct qr_cron cron;
        char err[QR_ERRMSG_BYTES];
        if (rv == 0) {
            rv = qr_cron_parse(sc->cron, &cron, err, sizeof err);
        }
        if (rv == 0) {
            rv = qr_cron_next(&cron, qr_cluster_now_ms(ops->cluster),
                              &p.next_slot_ms);
        }
        if (sc != NULL) {
            qraft__schedule__free_unpacked(sc, NULL);
        }
        if (rv != 0) {
            qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL,
                        "computing the next slot: %s", qr_strerror(rv));
            return;
        }
    }
    QR_OP_PROPOSE_OK(op, req, SCHEDULE_PAUSE, schedule_pause, &p);
}

/* Reads: deep copies, with the state of each last fired message filled in
 * from this node's store. */
struct schedule_list {
    struct qr_pb_list list; /* of Qraft__Schedule */
    struct qr_store_txn *txn;
    uint64_t now_ms;
};

static int collect_schedule(void *arg, const Qraft__Schedule *sc)
{
    struct schedule_list *l = arg;
    if (qr_pb_list_add(&l->list, &sc->base) != 0) {
        return 1;
    }
    Qraft__Schedule *copy = (Qraft__Schedule *)l->list.items[l->list.n - 1];
    if (copy->request != NULL &&
        qr_redact_view_parts(copy->request->redact, copy->request->headers,
                             copy->request->n_headers,
                             &copy->request->body) != 0) {
        l->list.rv = -ENOMEM;
        return 1;
    }
    for (size_t i = 0; i < copy->n_last_fired; i++) {
        Qraft__Message *m = NULL;
        int rv = qr_store_msg_get(l->txn, copy->last_fired[i]->message_id, &m);
        if (rv == 0) {
            copy->last_fired[i]->state = qr_op_reported_state(m, l->now_ms);
            qraft__message__free_unpacked(m, NULL);
        } else if (rv != QR_ENOTFOUND) {
            l->list.rv = rv;
            return 1;
        }
    }
    return 0;
}

void qr_op_schedule_read(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_ops *ops = op->ops;
    bool one = req->body_case == QRAFT__REQUEST__BODY_SCHEDULE_GET;
    const char *id = one ? req->schedule_get->schedule_id : NULL;
    if (one && !schedule_id_ok(op, req, id)) {
        return;
    }
    struct schedule_list l = {.now_ms = qr_cluster_now_ms(ops->cluster)};
    int rv = qr_store_txn_begin(ops->store, false, &l.txn);
    if (rv == 0) {
        if (one) {
            Qraft__Schedule *sc = NULL;
            rv = qr_store_schedule_get(l.txn, id, &sc);
            if (rv == 0) {
                collect_schedule(&l, sc);
                qraft__schedule__free_unpacked(sc, NULL);
            }
        } else {
            rv = qr_store_schedule_list(l.txn, collect_schedule, &l);
        }
        qr_store_txn_abort(l.txn);
    }
    rv = qr_pb_list_status(&l.list, rv);
    if (rv != 0) {
        qr_op_read_error(op, req->id, rv, "schedule", id);
    } else {
        Qraft__ScheduleListResponse sl = QRAFT__SCHEDULE_LIST_RESPONSE__INIT;
        sl.n_schedules = l.list.n;
        sl.schedules = (Qraft__Schedule **)l.list.items;
        QR_OP_REPLY_BODY(op, req->id, SCHEDULES, schedules, &sl);
    }
    qr_pb_list_free(&l.list);
}
