/* The record and walk layers of the store: the databases whose values are
 * protobuf messages (struct record_db, in store_int.h), and ordered walks
 * over any database. Every read of a record decodes through
 * store_decode_record, every write packs through store_put_packed; every
 * walk opens each value it visits (store_open_value), so a corrupt pair
 * stops it.
 *
 * Iterators visit at most `limit` items: a limit of 0 visits nothing. A
 * callback must not write through the transaction it is iterating. */
#include <assert.h>
#include <lmdb.h>
#include <string.h>

#include "lib/err.h"
#include "store/store_int.h"

/* Decodes v, the payload of a value of r stored under k (its checksum
 * already checked: store_open_value), into *out (new; free with
 * protobuf_c_message_free_unpacked). A value that does not decode, or
 * whose fields r->valid refuses, is QR_ECORRUPT (store_corrupt_record); *out is
 * then left alone. */
int store_decode_record(struct qr_store_txn *t,
                        const struct record_db *r,
                        const MDB_val *k,
                        const MDB_val *v,
                        ProtobufCMessage **out,
                        const char *what)
{
    ProtobufCMessage *msg =
        protobuf_c_message_unpack(r->desc, NULL, v->mv_size, v->mv_data);
    if (msg == NULL) {
        return store_corrupt_record(t, r->db, k, what, r->corrupt);
    }
    if (r->valid != NULL && !r->valid(t->s, msg, what)) {
        protobuf_c_message_free_unpacked(msg, NULL);
        return store_corrupt_record(t, r->db, k, what, r->invalid);
    }
    *out = msg;
    return 0;
}

/* Gets the record of r stored under `key` into *out (new), or NULL with
 * QR_ENOTFOUND (or another error). */
int store_load_record(struct qr_store_txn *t,
                      const struct record_db *r,
                      const void *key,
                      size_t key_len,
                      ProtobufCMessage **out,
                      const char *what)
{
    MDB_val k = {key_len, (void *)key};
    MDB_val v;
    *out = NULL;
    int rv = store_get_raw(t, r->db, key, key_len, &v, what);
    if (rv != 0) {
        return rv;
    }
    return store_decode_record(t, r, &k, &v, out, what);
}

/* Stores msg packed as the value of `key` (insert or replace). */
int store_put_packed(struct qr_store_txn *t,
                     enum db db,
                     const void *key,
                     size_t key_len,
                     const ProtobufCMessage *msg,
                     const char *what)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *payload = NULL;
    int rv = store_put_reserve(t, db, key, key_len, len, &payload, what);
    if (rv == 0) {
        protobuf_c_message_pack(msg, payload);
        store_seal_value(key, key_len, payload, len);
    }
    return rv;
}

int store_cursor_seek(MDB_cursor *c,
                      const void *key,
                      size_t key_len,
                      bool exclusive,
                      MDB_val *k,
                      MDB_val *v)
{
    int rc;

    if (key_len == 0) {
        return mdb_cursor_get(c, k, v, MDB_FIRST);
    }
    k->mv_size = key_len;
    k->mv_data = (void *)key;
    rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE);
    if (rc == 0 && exclusive && k->mv_size == key_len &&
        memcmp(k->mv_data, key, key_len) == 0) {
        rc = mdb_cursor_get(c, k, v, MDB_NEXT);
    }
    return rc;
}

int store_walk_db(struct qr_store_txn *t,
                  enum db db,
                  const void *start,
                  size_t start_len,
                  bool exclusive,
                  size_t limit,
                  walk_fn visit,
                  void *arg,
                  const char *what)
{
    MDB_cursor *c;
    MDB_val k;
    MDB_val v;
    size_t n = 0;
    assert(limit > 0); /* callers answer a limit of 0 themselves */
    int rv = store_cursor_open(t, db, &c, what);
    if (rv != 0) {
        return rv;
    }
    int rc = store_cursor_seek(c, start, start_len, exclusive, &k, &v);
    while (rc == 0) {
        enum walk_step step = STEP_VISITED;
        rv = store_open_value(t, db, &k, &v, what);
        if (rv != 0) {
            goto out;
        }
        rv = visit(t, &k, &v, arg, &step);
        if (rv != 0 || step == STEP_END ||
            (step == STEP_VISITED && ++n >= limit)) {
            goto out;
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    if (rc != MDB_NOTFOUND) {
        rv = store_fail_mdb(t->s, t->write, what, rc);
    }
out:
    mdb_cursor_close(c);
    return rv;
}

/* Gets the record `key` (a non-empty name) into *out, new, or NULL with
 * QR_ENOTFOUND. */
int store_record_get(struct qr_store_txn *t,
                     const struct record_db *r,
                     const char *key,
                     ProtobufCMessage **out,
                     const char *what)
{
    *out = NULL;
    int rv = store_check_key(t, false, key, 0, what);
    if (rv != 0) {
        return rv;
    }
    return store_load_record(t, r, key, strlen(key), out, what);
}

/* Inserts or replaces msg (of r's type) under `key`, a non-empty name that
 * leaves key_room bytes of the maximum key size free. */
int store_record_put(struct qr_store_txn *t,
                     const struct record_db *r,
                     const char *key,
                     size_t key_room,
                     const ProtobufCMessage *msg,
                     const char *what)
{
    int rv = store_check_txn(t, true, what);
    if (rv != 0) {
        return rv;
    }
    assert(msg != NULL && msg->descriptor == r->desc);
    rv = store_check_name(t->s, key, key_room, what);
    if (rv != 0) {
        return rv;
    }
    return store_put_packed(t, r->db, key, strlen(key), msg, what);
}

/* Deletes the record `key`; QR_ENOTFOUND when there is none. */
int store_record_delete(struct qr_store_txn *t,
                        const struct record_db *r,
                        const char *key,
                        const char *what)
{
    MDB_val v;
    int rv = store_check_key(t, true, key, 0, what);
    if (rv == 0) {
        rv = store_get_raw(t, r->db, key, strlen(key), &v, what);
    }
    if (rv != 0) {
        return rv;
    }
    return store_del_raw(t, r->db, key, strlen(key), what);
}

static int walk_records(struct qr_store_txn *t,
                        const MDB_val *k,
                        const MDB_val *v,
                        void *arg,
                        enum walk_step *step)
{
    const struct record_walk *w = arg;
    ProtobufCMessage *msg;
    int rv = store_decode_record(t, w->r, k, v, &msg, w->what);
    if (rv != 0) {
        return rv;
    }
    if (w->keep == NULL || w->keep(w, msg)) {
        rv = w->call(w, msg);
    } else {
        *step = STEP_SKIPPED;
    }
    protobuf_c_message_free_unpacked(msg, NULL);
    return rv;
}

/* Visits w's records in key order after `after` (NULL or "": from the
 * first), at most limit (0: none); a nonzero return of the callback stops
 * the walk and is returned. */
int store_record_list(struct qr_store_txn *t,
                      const struct record_walk *w,
                      const char *after,
                      size_t limit)
{
    size_t after_len = after != NULL ? strlen(after) : 0;
    int rv = store_check_txn(t, false, w->what);
    if (rv != 0) {
        return rv;
    }
    if (after_len >
        (w->max_after_bytes != 0 ? w->max_after_bytes : t->s->max_key_bytes)) {
        return store_bad_request(t->s, w->what, "cursor too long");
    }
    if (limit == 0) {
        return 0;
    }
    return store_walk_db(t, w->r->db, after, after_len, true, limit,
                         walk_records, (void *)w, w->what);
}
