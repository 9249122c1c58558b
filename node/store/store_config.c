/* The cluster's configuration records in the store: queues (the `queues`
 * database; a queue's waiting messages are in `qfifo`, store_msg.c),
 * schedules and URL groups. Each is a protobuf record under its name,
 * read and written through the record layer (store_record.c). */
#include <stdint.h>

#include "lib/err.h"
#include "store/store_int.h"

static const struct record_db queue_records = {
    DB_QUEUES, &qraft__queue__descriptor, "queue does not decode", NULL, NULL};
static const struct record_db schedule_records = {
    DB_SCHEDULES, &qraft__schedule__descriptor, "schedule does not decode",
    NULL, NULL};
static const struct record_db group_records = {
    DB_GROUPS, &qraft__url_group__descriptor, "url group does not decode", NULL,
    NULL};

static int call_queue_cb(const struct record_walk *w,
                         const ProtobufCMessage *msg)
{
    return w->cb.queue(w->arg, (const Qraft__Queue *)msg);
}

static int call_schedule_cb(const struct record_walk *w,
                            const ProtobufCMessage *msg)
{
    return w->cb.schedule(w->arg, (const Qraft__Schedule *)msg);
}

static int call_group_cb(const struct record_walk *w,
                         const ProtobufCMessage *msg)
{
    return w->cb.group(w->arg, (const Qraft__UrlGroup *)msg);
}

int qr_store_queue_get(struct qr_store_txn *t,
                       const char *name,
                       Qraft__Queue **out)
{
    ProtobufCMessage *q;
    int rv = store_record_get(t, &queue_records, name, &q, "get queues");
    *out = (Qraft__Queue *)q;
    return rv;
}

int qr_store_queue_put(struct qr_store_txn *t, const Qraft__Queue *q)
{
    /* The name is also a qfifo key prefix, with a message id after it. */
    return store_record_put(t, &queue_records, q->name,
                            1 + QFIFO_SEQ_BYTES + QR_STORE_MAX_ID_BYTES,
                            &q->base, "put queues");
}

int qr_store_queue_delete(struct qr_store_txn *t, const char *name)
{
    /* Unlike schedules and groups, an absent queue is not an error. */
    int rv = store_record_delete(t, &queue_records, name, "delete queues");
    return rv == QR_ENOTFOUND ? 0 : rv;
}

int qr_store_queue_list(struct qr_store_txn *t,
                        const char *after_name,
                        size_t limit,
                        qr_store_queue_cb cb,
                        void *arg)
{
    struct record_walk w = {.r = &queue_records,
                            .call = call_queue_cb,
                            .cb.queue = cb,
                            .arg = arg,
                            .what = "list queues"};
    return store_record_list(t, &w, after_name, limit);
}

int qr_store_queue_count(struct qr_store_txn *t, size_t *n)
{
    MDB_stat st;
    int rv = store_check_txn(t, false, "count queues");
    if (rv != 0) {
        return rv;
    }
    int rc = mdb_stat(t->txn, t->s->dbis[DB_QUEUES], &st);
    if (rc != 0) {
        return store_fail_mdb(t->s, t->write, "count queues", rc);
    }
    *n = st.ms_entries;
    return 0;
}

/* ---------------------------------------------------------------------------
 * URL groups. */

int qr_store_group_get(struct qr_store_txn *t,
                       const char *name,
                       Qraft__UrlGroup **out)
{
    ProtobufCMessage *g;
    int rv = store_record_get(t, &group_records, name, &g, "get groups");
    *out = (Qraft__UrlGroup *)g;
    return rv;
}

int qr_store_group_put(struct qr_store_txn *t, const Qraft__UrlGroup *g)
{
    return store_record_put(t, &group_records, g->name, 0, &g->base,
                            "put groups");
}

int qr_store_group_delete(struct qr_store_txn *t, const char *name)
{
    return store_record_delete(t, &group_records, name, "delete groups");
}

int qr_store_group_list(struct qr_store_txn *t, qr_store_group_cb cb, void *arg)
{
    struct record_walk w = {.r = &group_records,
                            .call = call_group_cb,
                            .cb.group = cb,
                            .arg = arg,
                            .what = "list groups"};
    return store_record_list(t, &w, NULL, SIZE_MAX);
}

/* ---------------------------------------------------------------------------
 * schedules */

int qr_store_schedule_get(struct qr_store_txn *t,
                          const char *id,
                          Qraft__Schedule **out)
{
    ProtobufCMessage *sc;
    int rv = store_record_get(t, &schedule_records, id, &sc, "get schedules");
    *out = (Qraft__Schedule *)sc;
    return rv;
}

int qr_store_schedule_put(struct qr_store_txn *t, const Qraft__Schedule *sc)
{
    return store_record_put(t, &schedule_records, sc->id, 0, &sc->base,
                            "put schedules");
}

int qr_store_schedule_delete(struct qr_store_txn *t, const char *id)
{
    return store_record_delete(t, &schedule_records, id, "delete schedules");
}

int qr_store_schedule_list(struct qr_store_txn *t,
                           qr_store_schedule_cb cb,
                           void *arg)
{
    struct record_walk w = {.r = &schedule_records,
                            .call = call_schedule_cb,
                            .cb.schedule = cb,
                            .arg = arg,
                            .what = "list schedules"};
    return store_record_list(t, &w, NULL, SIZE_MAX);
}
