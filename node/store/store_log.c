/* Dedup records with their expiry index `dedupx`, and the events log: the
 * two stores a message leaves behind, each keyed to be pruned oldest first
 * (a dedup by its expiry, an event by its time). The invariants are
 * store.h's. */
#include <assert.h>
#include <errno.h>
#include <lmdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "store/store_int.h"

static size_t dedupx_key(uint8_t *buf, uint64_t expires_ms, const char *key)
{
    size_t n = strlen(key);
    put_be64(buf, expires_ms);
    memcpy(buf + DEDUPX_PREFIX_BYTES, key, n);
    return DEDUPX_PREFIX_BYTES + n;
}

static const struct record_db dedup_records = {
    DB_DEDUP, &qraft__dedup_record__descriptor, "dedup record does not decode",
    NULL, NULL};
static const struct record_db event_records = {
    DB_EVENTS, &qraft__event__descriptor, "event does not decode", NULL, NULL};

static int load_dedup(struct qr_store_txn *t,
                      const char *key,
                      Qraft__DedupRecord **out,
                      const char *what)
{
    ProtobufCMessage *r;
    int rv = store_load_record(t, &dedup_records, key, strlen(key), &r, what);
    *out = (Qraft__DedupRecord *)r;
    return rv;
}

static bool keep_about(const struct record_walk *w, const ProtobufCMessage *msg)
{
    const Qraft__Event *e = (const Qraft__Event *)msg;
    return strcmp(e->message_id, w->message_id) == 0;
}

static int call_event_cb(const struct record_walk *w,
                         const ProtobufCMessage *msg)
{
    return w->cb.event(w->arg, (const Qraft__Event *)msg);
}

int qr_store_dedup_get(struct qr_store_txn *t,
                       const char *key,
                       uint64_t now_ms,
                       char **message_id)
{
    const char *what = "get dedup";
    Qraft__DedupRecord *r;
    int rv;

    *message_id = NULL;
    rv = store_check_key(t, false, key, DEDUPX_PREFIX_BYTES, what);
    if (rv == 0) {
        rv = load_dedup(t, key, &r, what);
    }
    if (rv != 0) {
        return rv;
    }
    if (r->expires_ms <= now_ms) {
        rv = QR_ENOTFOUND;
    } else {
        *message_id = strdup(r->message_id);
        rv = *message_id != NULL ? 0 : -ENOMEM;
    }
    qraft__dedup_record__free_unpacked(r, NULL);
    return rv;
}

int qr_store_dedup_put(struct qr_store_txn *t,
                       const char *key,
                       const char *message_id,
                       uint64_t expires_ms)
{
    const char *what = "put dedup";
    Qraft__DedupRecord r = QRAFT__DEDUP_RECORD__INIT;
    Qraft__DedupRecord *old = NULL;
    uint8_t xkey[KEY_BUF_BYTES];
    size_t len;
    int rv;

    rv = store_check_key(t, true, key, DEDUPX_PREFIX_BYTES, what);
    if (rv == 0) {
        rv = store_check_id(t->s, message_id, what);
    }
    if (rv != 0) {
        return rv;
    }
    rv = load_dedup(t, key, &old, what);
    if (rv != 0 && rv != QR_ENOTFOUND) {
        return rv;
    }
    if (old != NULL) {
        uint64_t old_expires_ms = old->expires_ms;
        qraft__dedup_record__free_unpacked(old, NULL);
        if (old_expires_ms != expires_ms) {
            len = dedupx_key(xkey, old_expires_ms, key);
            rv = store_del_raw(t, DB_DEDUPX, xkey, len, what);
            if (rv != 0) {
                return rv;
            }
        }
    }
    r.message_id = (char *)message_id;
    r.expires_ms = expires_ms;
    rv = store_put_packed(t, DB_DEDUP, key, strlen(key), &r.base, what);
    if (rv != 0) {
        return rv;
    }
    len = dedupx_key(xkey, expires_ms, key);
    return store_put_raw(t, DB_DEDUPX, xkey, len, NULL, 0, what);
}

/* Checks t (store_check_txn) and opens a cursor on db. A prune opens one,
 * then takes the first key again and again (prune_next) and deletes it
 * (prune_first) while it is old enough. */
static int open_checked(struct qr_store_txn *t,
                        bool need_write,
                        enum db db,
                        MDB_cursor **c,
                        const char *what)
{
    int rv = store_check_txn(t, need_write, what);
    if (rv != 0) {
        return rv;
    }
    return store_cursor_open(t, db, c, what);
}

/* The next key a prune of db deletes: db's first, whose key starts with a
 * u64 time (*time_ms), and must be at least min_bytes long (else it is
 * corrupt: `short_why`). QR_ENOTFOUND, the prune is over, when db is empty
 * or its first time is not below bound_ms (with `inclusive`, above it).
 * *k points into the map: copy what the caller needs before the delete. */
static int prune_next(struct qr_store_txn *t,
                      MDB_cursor *c,
                      enum db db,
                      size_t min_bytes,
                      uint64_t bound_ms,
                      bool inclusive,
                      const char *short_why,
                      MDB_val *k,
                      uint64_t *time_ms,
                      const char *what)
{
    MDB_val v;
    int rv = store_cursor_first(t, c, db, k, &v, what);
    if (rv != 0) {
        return rv;
    }
    if (k->mv_size < min_bytes) {
        return store_fail_corrupt(t, what, short_why);
    }
    *time_ms = get_be64(k->mv_data);
    if (inclusive ? *time_ms > bound_ms : *time_ms >= bound_ms) {
        return QR_ENOTFOUND;
    }
    return 0;
}

/* Deletes the pair a prune's cursor is at: its database's first. */
static int prune_first(struct qr_store_txn *t, MDB_cursor *c, const char *what)
{
    assert(t->write);
    int rc = mdb_cursor_del(c, 0);
    if (rc != 0) {
        return store_fail_mdb(t->s, t->write, what, rc);
    }
    return 0;
}

int qr_store_event_prune(struct qr_store_txn *t,
                         uint64_t before_ms,
                         size_t max,
                         size_t *n_pruned)
{
    const char *what = "prune events";
    MDB_cursor *c;
    MDB_val k;
    uint64_t time_ms;

    *n_pruned = 0;
    int rv = open_checked(t, true, DB_EVENTS, &c, what);
    if (rv != 0) {
        return rv;
    }
    /* Keys start with the event's time: the oldest come first. */
    while (*n_pruned < max) {
        rv = prune_next(t, c, DB_EVENTS, 8, before_ms, false,
                        "event key too short", &k, &time_ms, what);
        if (rv == 0) {
            rv = prune_first(t, c, what);
        }
        if (rv != 0) {
            break;
        }
        (*n_pruned)++;
    }
    mdb_cursor_close(c);
    return rv == QR_ENOTFOUND ? 0 : rv;
}

int qr_store_dedup_prune(struct qr_store_txn *t,
                         uint64_t now_ms,
                         size_t max,
                         size_t *n_pruned)
{
    const char *what = "prune dedup";
    MDB_cursor *c;
    MDB_val k;

    *n_pruned = 0;
    int rv = open_checked(t, true, DB_DEDUPX, &c, what);
    if (rv != 0) {
        return rv;
    }
    /* Each round takes the smallest expiry, which the last round deleted. */
    for (size_t i = 0; i < max && rv == 0; i++) {
        char name[KEY_BUF_BYTES];
        Qraft__DedupRecord *r;
        uint64_t expires_ms = 0;

        rv = prune_next(t, c, DB_DEDUPX, DEDUPX_PREFIX_BYTES + 1, now_ms, true,
                        "dedupx key too short", &k, &expires_ms, what);
        if (rv != 0) {
            break;
        }
        size_t name_len = k.mv_size - DEDUPX_PREFIX_BYTES;
        memcpy(name, (const uint8_t *)k.mv_data + DEDUPX_PREFIX_BYTES,
               name_len);
        name[name_len] = '\0';
        rv = prune_first(t, c, what);
        if (rv != 0) {
            break;
        }
        /* Delete the record only if this index entry is its own. */
        rv = load_dedup(t, name, &r, what);
        if (rv == QR_ENOTFOUND) {
            rv = 0;
            continue;
        }
        if (rv == 0 && r->expires_ms == expires_ms) {
            rv = store_del_raw(t, DB_DEDUP, name, name_len, what);
            (*n_pruned)++;
        }
        if (r != NULL) {
            qraft__dedup_record__free_unpacked(r, NULL);
        }
    }
    mdb_cursor_close(c);
    return rv == QR_ENOTFOUND ? 0 : rv;
}

/* u64 time_ms | u64 raft index | u32 position in the entry. */
static void event_key(uint8_t key[EVENT_KEY_BYTES],
                      const struct qr_store_event_pos *pos)
{
    put_be64(key, pos->time_ms);
    put_be64(key + 8, pos->index);
    put_be32(key + 16, pos->position);
}

int qr_store_event_append(struct qr_store_txn *t,
                          uint64_t index,
                          uint32_t position,
                          const Qraft__Event *e)
{
    const char *what = "append events";
    uint8_t key[EVENT_KEY_BYTES];
    int rv;

    rv = store_check_txn(t, true, what);
    if (rv != 0) {
        return rv;
    }
    assert(e != NULL && e->base.descriptor == &qraft__event__descriptor);
    struct qr_store_event_pos pos = {e->time_ms, index, position};
    event_key(key, &pos);
    return store_put_packed(t, DB_EVENTS, key, sizeof key, &e->base, what);
}

int qr_store_event_list(struct qr_store_txn *t,
                        const char *message_id,
                        size_t limit,
                        qr_store_event_cb cb,
                        void *arg)
{
    const char *what = "list events";
    struct record_walk w = {.r = &event_records,
                            .keep = keep_about,
                            .call = call_event_cb,
                            .cb.event = cb,
                            .arg = arg,
                            .what = what,
                            .message_id = message_id};
    int rv = store_check_txn_id(t, false, message_id, what);
    if (rv != 0) {
        return rv;
    }
    return store_record_list(t, &w, NULL, limit);
}

/* Positions c for a scan from `from` (see qr_store_event_scan). */
static int event_seek(MDB_cursor *c,
                      const struct qr_store_event_pos *from,
                      bool inclusive,
                      bool descending,
                      MDB_val *k,
                      MDB_val *v)
{
    uint8_t key[EVENT_KEY_BYTES];
    int rc;

    if (from == NULL) {
        return mdb_cursor_get(c, k, v, descending ? MDB_LAST : MDB_FIRST);
    }
    event_key(key, from);
    if (!descending) {
        return store_cursor_seek(c, key, sizeof key, !inclusive, k, v);
    }
    k->mv_size = sizeof key;
    k->mv_data = key;
    rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND) {
        return mdb_cursor_get(c, k, v, MDB_LAST);
    }
    if (rc != 0) {
        return rc;
    }
    /* At the first key >= from: step back unless it is from itself and
     * that is wanted. */
    if (!(inclusive && k->mv_size == sizeof key &&
          memcmp(k->mv_data, key, sizeof key) == 0)) {
        rc = mdb_cursor_get(c, k, v, MDB_PREV);
    }
    return rc;
}

int qr_store_event_scan(struct qr_store_txn *t,
                        const struct qr_store_event_pos *from,
                        bool inclusive,
                        bool descending,
                        qr_store_event_pos_cb cb,
                        void *arg)
{
    const char *what = "scan events";
    MDB_cursor *c;
    MDB_val k;
    MDB_val v;
    int rc;

    int rv = open_checked(t, false, DB_EVENTS, &c, what);
    if (rv != 0) {
        return rv;
    }
    rc = event_seek(c, from, inclusive, descending, &k, &v);
    while (rc == 0) {
        struct qr_store_event_pos pos;
        ProtobufCMessage *e;

        if (k.mv_size != EVENT_KEY_BYTES) {
            rv = store_fail_corrupt(t, what, "event key of the wrong size");
            goto out;
        }
        pos.time_ms = get_be64(k.mv_data);
        pos.index = get_be64((const uint8_t *)k.mv_data + 8);
        pos.position = get_be32((const uint8_t *)k.mv_data + 16);
        rv = store_open_value(t, DB_EVENTS, &k, &v, what);
        if (rv != 0) {
            goto out;
        }
        rv = store_decode_record(t, &event_records, &k, &v, &e, what);
        if (rv != 0) {
            goto out;
        }
        rv = cb(arg, &pos, (const Qraft__Event *)e);
        protobuf_c_message_free_unpacked(e, NULL);
        if (rv != 0) {
            goto out;
        }
        rc = mdb_cursor_get(c, &k, &v, descending ? MDB_PREV : MDB_NEXT);
    }
    if (rc != MDB_NOTFOUND) {
        rv = store_fail_mdb(t->s, t->write, what, rc);
    }
out:
    mdb_cursor_close(c);
    return rv;
}
