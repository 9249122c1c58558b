/* Messages and what keeps them found: the `msgs` records, their indexes
 * (`due`, `dlq`, `done`, `qfifo`: one table, message_indexes, says which
 * states each holds a key for and how the key is made, and reindex moves a
 * message's keys and per-state counters with every write of it), and the
 * index walks (due scan, DLQ and done lists, retention's prune, a queue's
 * head). Dedup records and events are store_log.c's. The invariants are
 * store.h's.
 *
 * The dlq_list cursor is a message id; if that message is gone or no
 * longer dead-lettered, listing starts again from the oldest entry, so a
 * page may repeat entries but never skips one. */
#include <assert.h>
#include <errno.h>
#include <lmdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "store/store_int.h"

static bool due_state(Qraft__MessageState state)
{
    return state == QRAFT__MESSAGE_STATE__PENDING ||
           state == QRAFT__MESSAGE_STATE__DELIVERING ||
           state == QRAFT__MESSAGE_STATE__RETRYING;
}

static bool in_dlq(Qraft__MessageState state)
{
    return state == QRAFT__MESSAGE_STATE__DEAD_LETTERED;
}

bool store_in_done(Qraft__MessageState state)
{
    return state == QRAFT__MESSAGE_STATE__DELIVERED ||
           state == QRAFT__MESSAGE_STATE__CANCELLED;
}

static bool in_qfifo(Qraft__MessageState state)
{
    return state == QRAFT__MESSAGE_STATE__QUEUED;
}

/* Which index holds a message: the state decides, and for a due one
 * whether it waits in its flow control key's waitlist (store_flow.c). */
static bool in_due(const Qraft__Message *m)
{
    return due_state(m->state) && !store_flow_waits(m);
}

static bool in_fcdue(const Qraft__Message *m)
{
    return due_state(m->state) && store_flow_waits(m);
}

static bool in_dlq_index(const Qraft__Message *m)
{
    return in_dlq(m->state);
}

static bool in_done_index(const Qraft__Message *m)
{
    return store_in_done(m->state);
}

static bool in_qfifo_index(const Qraft__Message *m)
{
    return in_qfifo(m->state);
}

/* queue name | 0 | u64 seq [| id]: the 0 byte ends the name (names never
 * hold one), so one queue's keys are contiguous and ordered by seq. */
static size_t qfifo_prefix(uint8_t *buf, const char *queue)
{
    size_t n = strlen(queue);
    memcpy(buf, queue, n);
    buf[n] = 0;
    return n + 1;
}

static size_t qfifo_key(uint8_t *buf, const Qraft__Message *m)
{
    size_t off = qfifo_prefix(buf, m->queue);
    size_t n = strlen(m->id);
    put_be64(buf + off, m->queue_seq);
    memcpy(buf + off + QFIFO_SEQ_BYTES, m->id, n);
    return off + QFIFO_SEQ_BYTES + n;
}

static size_t due_key(uint8_t *buf, const Qraft__Message *m)
{
    size_t n = strlen(m->id);
    put_be16(buf, (uint16_t)m->shard);
    put_be64(buf + 2, m->next_attempt_ms);
    memcpy(buf + DUE_PREFIX_BYTES, m->id, n);
    return DUE_PREFIX_BYTES + n;
}

static size_t dlq_key(uint8_t *buf, const Qraft__Message *m)
{
    size_t n = strlen(m->id);
    put_be64(buf, m->dead_lettered_ms);
    memcpy(buf + DLQ_PREFIX_BYTES, m->id, n);
    return DLQ_PREFIX_BYTES + n;
}

/* done_ms is the record's updated_ms: the time it became DELIVERED or
 * CANCELLED, as no later write of a finished message changes it (and a
 * write that did would move its key with it). */
size_t store_done_key(uint8_t *buf, const Qraft__Message *m)
{
    size_t n = strlen(m->id);
    put_be64(buf, m->updated_ms);
    memcpy(buf + DONE_PREFIX_BYTES, m->id, n);
    return DONE_PREFIX_BYTES + n;
}

/* A message must have a known state, a shard that fits in a due key and an
 * id store_check_id accepts. */
static bool message_valid(struct qr_store *s,
                          const ProtobufCMessage *msg,
                          const char *what)
{
    const Qraft__Message *m = (const Qraft__Message *)msg;
    return (unsigned)m->state < N_STATES && m->shard <= UINT16_MAX &&
           store_check_id(s, m->id, what) == 0 &&
           (!store_flow_waits(m) ||
            strlen(m->flow_control_key) <= QR_STORE_MAX_FLOW_KEY_BYTES);
}

static const struct record_db msg_records = {
    DB_MSGS, &qraft__message__descriptor, "message does not decode",
    message_valid, "message has invalid fields"};

static int load_message(struct qr_store_txn *t,
                        const void *id,
                        size_t id_len,
                        Qraft__Message **out,
                        const char *what)
{
    ProtobufCMessage *m;
    int rv = store_load_record(t, &msg_records, id, id_len, &m, what);
    *out = (Qraft__Message *)m;
    return rv;
}

/* Loads the message an index key names: a missing one means the index is
 * out of step with msgs (corrupt). */
static int load_indexed(struct qr_store_txn *t,
                        const void *id,
                        size_t id_len,
                        Qraft__Message **out,
                        const char *what)
{
    int rv = load_message(t, id, id_len, out, what);
    if (rv == QR_ENOTFOUND) {
        return store_fail_corrupt(t, what, "index names a missing message");
    }
    return rv;
}

static void counter_name(char *buf, size_t size, Qraft__MessageState state)
{
    snprintf(buf, size, "count.%u", (unsigned)state);
}

static int count_add(struct qr_store_txn *t,
                     Qraft__MessageState state,
                     int delta,
                     const char *what)
{
    char name[16];
    uint64_t n = 0;
    assert(t->write);
    assert(delta == 1 || delta == -1);
    assert((unsigned)state < N_STATES);
    counter_name(name, sizeof name, state);
    int rv = store_get_u64(t, name, &n, what);
    if (rv != 0 && rv != QR_ENOTFOUND) {
        return rv;
    }
    if (delta < 0 && n == 0) {
        return store_fail_corrupt(t, what, "state counter below zero");
    }
    return store_put_u64(t, name, delta < 0 ? n - 1 : n + 1, what);
}

/* Replaces one index key by another in db; NULL means none. Does nothing
 * when both are the same key. */
static int move_index_key(struct qr_store_txn *t,
                          enum db db,
                          const uint8_t *old_key,
                          size_t old_len,
                          const uint8_t *new_key,
                          size_t new_len,
                          const char *what)
{
    assert(t->write);
    assert(old_key == NULL || old_len > 0);
    assert(new_key == NULL || new_len > 0);
    if (old_key != NULL && new_key != NULL && old_len == new_len &&
        memcmp(old_key, new_key, old_len) == 0) {
        return 0;
    }
    if (old_key != NULL) {
        int rv = store_del_raw(t, db, old_key, old_len, what);
        if (rv != 0) {
            return rv;
        }
    }
    if (new_key != NULL) {
        return store_put_raw(t, db, new_key, new_len, NULL, 0, what);
    }
    return 0;
}

/* The message indexes: which messages each holds a key for, and the key.
 * A message is held by at most one of them (QUEUED by qfifo only, never
 * due; a due one by `due` or, waiting for its flow control key, `fcdue`). */
static const struct message_index {
    enum db db;
    bool (*holds)(const Qraft__Message *m);
    size_t (*key)(uint8_t *buf, const Qraft__Message *m);
} message_indexes[] = {
    {DB_DUE, in_due, due_key},
    {DB_FCDUE, in_fcdue, store_fcdue_key},
    {DB_DLQ, in_dlq_index, dlq_key},
    {DB_DONE, in_done_index, store_done_key},
    {DB_QFIFO, in_qfifo_index, qfifo_key},
};

/* Moves the index entries and counters of one message from its old record
 * to its new one; either may be NULL (insert, delete). Both are records of
 * the same message, in a write transaction. */
static int reindex(struct qr_store_txn *t,
                   const Qraft__Message *old,
                   const Qraft__Message *m,
                   const char *what)
{
    uint8_t old_buf[KEY_BUF_BYTES];
    uint8_t new_buf[KEY_BUF_BYTES];
    size_t n_old_keys = 0;
    size_t n_new_keys = 0;
    int rv;

    assert(t->write);
    assert(old != NULL || m != NULL);
    assert(old == NULL || m == NULL || strcmp(old->id, m->id) == 0);
    for (size_t i = 0; i < sizeof message_indexes / sizeof message_indexes[0];
         i++) {
        const struct message_index *ix = &message_indexes[i];
        const uint8_t *old_key = NULL;
        const uint8_t *new_key = NULL;
        size_t old_len = 0;
        size_t new_len = 0;
        if (old != NULL && ix->holds(old)) {
            old_len = ix->key(old_buf, old);
            old_key = old_buf;
            n_old_keys++;
        }
        if (m != NULL && ix->holds(m)) {
            new_len = ix->key(new_buf, m);
            new_key = new_buf;
            n_new_keys++;
            /* store_check_id (and check_name for a queue) made room. */
            assert(new_len <= t->s->max_key_bytes);
        }
        rv =
            move_index_key(t, ix->db, old_key, old_len, new_key, new_len, what);
        if (rv != 0) {
            return rv;
        }
    }
    /* A message is in one index at most, whatever its state. */
    assert(n_old_keys <= 1 && n_new_keys <= 1);
    rv = store_flow_note(t, old, m, what);
    if (rv != 0) {
        return rv;
    }

    if (old != NULL && m != NULL && old->state == m->state) {
        return 0;
    }
    if (old != NULL) {
        rv = count_add(t, old->state, -1, what);
        if (rv != 0) {
            return rv;
        }
    }
    if (m != NULL) {
        rv = count_add(t, m->state, 1, what);
    }
    return rv;
}

int qr_store_msg_get(struct qr_store_txn *t,
                     const char *id,
                     Qraft__Message **out)
{
    int rv;

    *out = NULL;
    rv = store_check_txn_id(t, false, id, "get msgs");
    if (rv != 0) {
        return rv;
    }
    return load_message(t, id, strlen(id), out, "get msgs");
}

int qr_store_msg_put(struct qr_store_txn *t, const Qraft__Message *m)
{
    const char *what = "put msgs";
    Qraft__Message *old = NULL;
    int rv;

    rv = store_check_txn(t, true, what);
    if (rv != 0) {
        return rv;
    }
    assert(m != NULL && m->base.descriptor == &qraft__message__descriptor);
    rv = store_check_id(t->s, m->id, what);
    if (rv != 0) {
        return rv;
    }
    if ((unsigned)m->state >= N_STATES) {
        return store_bad_request(t->s, what, "unknown message state");
    }
    if (m->shard > UINT16_MAX) {
        return store_bad_request(t->s, what, "shard out of range");
    }
    if (store_flow_waits(m) &&
        strlen(m->flow_control_key) > QR_STORE_MAX_FLOW_KEY_BYTES) {
        return store_bad_request(t->s, what, "flow control key too long");
    }
    if (in_qfifo(m->state)) {
        rv = store_check_name(t->s, m->queue,
                              1 + QFIFO_SEQ_BYTES + strlen(m->id), what);
        if (rv != 0) {
            return rv;
        }
    }

    rv = load_message(t, m->id, strlen(m->id), &old, what);
    if (rv != 0 && rv != QR_ENOTFOUND) {
        return rv;
    }
    rv = reindex(t, old, m, what);
    if (rv == 0) {
        rv = store_put_packed(t, DB_MSGS, m->id, strlen(m->id), &m->base, what);
    }
    if (old != NULL) {
        qraft__message__free_unpacked(old, NULL);
    }
    return rv;
}

int qr_store_msg_delete(struct qr_store_txn *t, const char *id)
{
    const char *what = "delete msgs";
    Qraft__Message *old = NULL;
    int rv;

    rv = store_check_txn_id(t, true, id, what);
    if (rv == 0) {
        rv = load_message(t, id, strlen(id), &old, what);
    }
    if (rv != 0) {
        return rv;
    }
    rv = reindex(t, old, NULL, what);
    if (rv == 0) {
        rv = store_del_raw(t, DB_MSGS, id, strlen(id), what);
    }
    qraft__message__free_unpacked(old, NULL);
    return rv;
}

static bool keep_in_state(const struct record_walk *w,
                          const ProtobufCMessage *msg)
{
    const Qraft__Message *m = (const Qraft__Message *)msg;
    return w->state == QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED ||
           m->state == w->state;
}

static int call_msg_cb(const struct record_walk *w, const ProtobufCMessage *msg)
{
    return w->cb.msg(w->arg, (const Qraft__Message *)msg);
}

int qr_store_msg_list(struct qr_store_txn *t,
                      Qraft__MessageState state,
                      const char *after_id,
                      size_t limit,
                      qr_store_msg_cb cb,
                      void *arg)
{
    const char *what = "list msgs";
    struct record_walk w = {.r = &msg_records,
                            .keep = keep_in_state,
                            .call = call_msg_cb,
                            .cb.msg = cb,
                            .arg = arg,
                            .what = what,
                            .state = state};
    int rv = store_check_txn(t, false, what);
    if (rv != 0) {
        return rv;
    }
    if ((unsigned)state >= N_STATES) {
        return store_bad_request(t->s, what, "unknown message state");
    }
    return store_record_list(t, &w, after_id, limit);
}

/* A walk of an index (due, dlq) handing the messages it names to cb. The
 * due walk stops after until_ms and at the end of its shard's keys
 * (`shard`, the first 2 bytes of a due key), and passes over the ids skip
 * answers true for. */
struct index_walk {
    size_t id_offset; /* the id follows this many bytes of key prefix */
    qr_store_msg_cb cb;
    void *arg;
    const char *what;
    /* Due-ordered indexes (store_due_walk): the bytes every key of the
     * walk starts with, before its due time. */
    const uint8_t *prefix;
    size_t prefix_len;
    uint64_t until_ms;
    qr_store_due_skip_cb skip;
};

/* Loads the message an index key names and hands it to cb. A missing
 * message means the index is out of step with msgs. */
static int walk_index(struct qr_store_txn *t,
                      const MDB_val *k,
                      const MDB_val *v,
                      void *arg,
                      enum walk_step *step)
{
    const struct index_walk *w = arg;
    Qraft__Message *m;
    int rv;

    (void)v;
    (void)step;
    if (k->mv_size <= w->id_offset) {
        return store_fail_corrupt(t, w->what, "index key too short");
    }
    rv = load_indexed(t, (const uint8_t *)k->mv_data + w->id_offset,
                      k->mv_size - w->id_offset, &m, w->what);
    if (rv != 0) {
        return rv;
    }
    rv = w->cb(w->arg, m);
    qraft__message__free_unpacked(m, NULL);
    return rv;
}

static int walk_due(struct qr_store_txn *t,
                    const MDB_val *k,
                    const MDB_val *v,
                    void *arg,
                    enum walk_step *step)
{
    const struct index_walk *w = arg;
    const uint8_t *key = k->mv_data;
    if (k->mv_size < w->id_offset ||
        memcmp(key, w->prefix, w->prefix_len) != 0 ||
        get_be64(key + w->prefix_len) > w->until_ms) {
        *step = STEP_END;
        return 0;
    }
    if (w->skip != NULL && k->mv_size > w->id_offset &&
        k->mv_size - w->id_offset < KEY_BUF_BYTES) {
        /* Decide from the id alone, before loading the message. */
        char id[KEY_BUF_BYTES];
        size_t id_len = k->mv_size - w->id_offset;
        memcpy(id, key + w->id_offset, id_len);
        id[id_len] = '\0';
        if (w->skip(w->arg, id)) {
            *step = STEP_SKIPPED;
            return 0;
        }
    }
    return walk_index(t, k, v, arg, step);
}

/* Checks a read of shard's due keys and writes the key prefix (shard,
 * from_ms) where it starts into start. */
static int due_start(struct qr_store_txn *t,
                     uint32_t shard,
                     uint64_t from_ms,
                     uint8_t start[DUE_PREFIX_BYTES],
                     const char *what)
{
    int rv = store_check_txn(t, false, what);
    if (rv != 0) {
        return rv;
    }
    if (shard > UINT16_MAX) {
        return store_bad_request(t->s, what, "shard out of range");
    }
    put_be16(start, (uint16_t)shard);
    put_be64(start + 2, from_ms);
    return 0;
}

int qr_store_due_scan_from(struct qr_store_txn *t,
                           uint32_t shard,
                           uint64_t from_ms,
                           const char *from_id,
                           const struct qr_store_due_visit *v)
{
    const char *what = "scan due";
    uint8_t start[DUE_PREFIX_BYTES + KEY_BUF_BYTES];
    int rv = due_start(t, shard, from_ms, start, what);
    if (rv != 0 || v->limit == 0) {
        return rv;
    }
    size_t id_len = from_id != NULL ? strlen(from_id) : 0;
    if (id_len >= KEY_BUF_BYTES) {
        id_len = 0; /* no such key: from from_ms */
    }
    if (id_len > 0) {
        memcpy(start + DUE_PREFIX_BYTES, from_id, id_len);
    }
    struct due_from from = {start, DUE_PREFIX_BYTES + id_len, 2};
    return store_due_walk(t, DB_DUE, &from, v, what);
}

int store_due_walk(struct qr_store_txn *t,
                   enum db db,
                   const struct due_from *from,
                   const struct qr_store_due_visit *v,
                   const char *what)
{
    struct index_walk w = {
        .id_offset = from->prefix_len + 8,
        .cb = v->cb,
        .arg = v->arg,
        .what = what,
        .prefix = from->key,
        .prefix_len = from->prefix_len,
        .until_ms = v->until_ms,
        .skip = v->skip,
    };
    return store_walk_db(t, db, from->key, from->len, false, v->limit, walk_due,
                         &w, what);
}

int qr_store_due_scan_skipping(struct qr_store_txn *t,
                               uint32_t shard,
                               const struct qr_store_due_visit *v)
{
    return qr_store_due_scan_from(t, shard, 0, NULL, v);
}

int qr_store_due_scan(struct qr_store_txn *t,
                      uint32_t shard,
                      uint64_t until_ms,
                      size_t limit,
                      qr_store_msg_cb cb,
                      void *arg)
{
    struct qr_store_due_visit v = {
        .until_ms = until_ms, .limit = limit, .cb = cb, .arg = arg};
    return qr_store_due_scan_skipping(t, shard, &v);
}

int qr_store_due_next(struct qr_store_txn *t,
                      uint32_t shard,
                      uint64_t after_ms,
                      uint64_t *next_ms)
{
    const char *what = "next due";
    uint8_t start[DUE_PREFIX_BYTES];
    MDB_cursor *c;
    MDB_val k;
    MDB_val v;
    int rc;

    /* after_ms + 1 wraps for UINT64_MAX, whose answer needs no key. */
    int rv = due_start(t, shard, after_ms + 1, start, what);
    if (rv != 0) {
        return rv;
    }
    if (after_ms == UINT64_MAX) {
        return QR_ENOTFOUND;
    }
    rv = store_cursor_open(t, DB_DUE, &c, what);
    if (rv != 0) {
        return rv;
    }
    rc = store_cursor_seek(c, start, sizeof start, false, &k, &v);
    if (rc == 0) {
        rv = store_open_value(t, DB_DUE, &k, &v, what);
    }
    if (rc == 0 && rv == 0) {
        const uint8_t *key = k.mv_data;
        if (k.mv_size < DUE_PREFIX_BYTES || memcmp(key, start, 2) != 0) {
            rv = QR_ENOTFOUND;
        } else {
            *next_ms = get_be64(key + 2);
        }
    } else if (rc == MDB_NOTFOUND) {
        rv = QR_ENOTFOUND;
    } else if (rc != 0) {
        rv = store_fail_mdb(t->s, t->write, what, rc);
    }
    mdb_cursor_close(c);
    return rv;
}

/* Visits the messages an index (dlq, done: ids after id_offset bytes of
 * key) names after its key start (none: from the oldest), at most limit. */
static int index_list(struct qr_store_txn *t,
                      enum db db,
                      size_t id_offset,
                      const uint8_t *start,
                      size_t start_len,
                      size_t limit,
                      qr_store_msg_cb cb,
                      void *arg,
                      const char *what)
{
    struct index_walk w = {
        .id_offset = id_offset, .cb = cb, .arg = arg, .what = what};

    if (limit == 0) {
        return 0;
    }
    return store_walk_db(t, db, start, start_len, true, limit, walk_index, &w,
                         what);
}

/* Visits the dead letters after the dlq key start (none: from the
 * oldest), at most limit. */
static int dlq_walk(struct qr_store_txn *t,
                    const uint8_t *start,
                    size_t start_len,
                    size_t limit,
                    qr_store_msg_cb cb,
                    void *arg)
{
    return index_list(t, DB_DLQ, DLQ_PREFIX_BYTES, start, start_len, limit, cb,
                      arg, "list dlq");
}

int qr_store_dlq_list(struct qr_store_txn *t,
                      const char *after_id,
                      size_t limit,
                      qr_store_msg_cb cb,
                      void *arg)
{
    const char *what = "list dlq";
    uint8_t start[KEY_BUF_BYTES];
    size_t start_len = 0;
    int rv;

    rv = store_check_txn(t, false, what);
    if (rv != 0) {
        return rv;
    }
    if (after_id != NULL && after_id[0] != '\0') {
        Qraft__Message *m;
        rv = store_check_id(t->s, after_id, what);
        if (rv != 0) {
            return rv;
        }
        rv = load_message(t, after_id, strlen(after_id), &m, what);
        if (rv != 0 && rv != QR_ENOTFOUND) {
            return rv;
        }
        /* A cursor message that left the DLQ restarts from the oldest. */
        if (rv == 0) {
            if (in_dlq(m->state)) {
                start_len = dlq_key(start, m);
            }
            qraft__message__free_unpacked(m, NULL);
        }
        rv = 0;
    }
    return dlq_walk(t, start, start_len, limit, cb, arg);
}

int qr_store_dlq_list_at(struct qr_store_txn *t,
                         uint64_t after_ms,
                         const char *after_id,
                         size_t limit,
                         qr_store_msg_cb cb,
                         void *arg)
{
    uint8_t start[KEY_BUF_BYTES];
    size_t n = after_id != NULL ? strlen(after_id) : 0;
    int rv = store_check_txn(t, false, "list dlq");

    if (rv != 0) {
        return rv;
    }
    if (n == 0) {
        return dlq_walk(t, NULL, 0, limit, cb, arg);
    }
    rv = store_check_id(t->s, after_id, "list dlq");
    if (rv != 0) {
        return rv;
    }
    put_be64(start, after_ms);
    memcpy(start + DLQ_PREFIX_BYTES, after_id, n);
    return dlq_walk(t, start, DLQ_PREFIX_BYTES + n, limit, cb, arg);
}

int qr_store_done_list(struct qr_store_txn *t,
                       size_t limit,
                       qr_store_msg_cb cb,
                       void *arg)
{
    const char *what = "list done";
    int rv = store_check_txn(t, false, what);
    if (rv != 0) {
        return rv;
    }
    return index_list(t, DB_DONE, DONE_PREFIX_BYTES, NULL, 0, limit, cb, arg,
                      what);
}

/* The oldest `done` key, copied into key (KEY_BUF_BYTES) and *key_len;
 * QR_ENOTFOUND when the index is empty. */
static int done_first(struct qr_store_txn *t,
                      uint8_t *key,
                      size_t *key_len,
                      const char *what)
{
    MDB_cursor *c;
    MDB_val k;
    MDB_val v;
    int rv = store_cursor_open(t, DB_DONE, &c, what);
    if (rv != 0) {
        return rv;
    }
    rv = store_cursor_first(t, c, DB_DONE, &k, &v, what);
    if (rv == 0 &&
        (k.mv_size <= DONE_PREFIX_BYTES || k.mv_size > KEY_BUF_BYTES)) {
        rv = store_corrupt_record(t, DB_DONE, &k, what, "bad index key");
    }
    if (rv == 0) {
        memcpy(key, k.mv_data, k.mv_size);
        *key_len = k.mv_size;
    }
    mdb_cursor_close(c);
    return rv;
}

int qr_store_done_prune(struct qr_store_txn *t,
                        uint64_t before_ms,
                        size_t max,
                        size_t *n_pruned)
{
    const char *what = "prune done";
    uint8_t key[KEY_BUF_BYTES];
    uint8_t want[KEY_BUF_BYTES];
    size_t key_len;
    int rv;

    *n_pruned = 0;
    rv = store_check_txn(t, true, what);
    while (rv == 0 && *n_pruned < max) {
        Qraft__Message *m;
        rv = done_first(t, key, &key_len, what);
        if (rv == QR_ENOTFOUND) {
            return 0;
        }
        if (rv != 0 || get_be64(key) >= before_ms) {
            break;
        }
        rv = load_indexed(t, key + DONE_PREFIX_BYTES,
                          key_len - DONE_PREFIX_BYTES, &m, what);
        if (rv != 0) {
            break;
        }
        /* The record must name this very key, or the walk would not move
         * on. */
        if (!store_in_done(m->state) || store_done_key(want, m) != key_len ||
            memcmp(want, key, key_len) != 0) {
            qraft__message__free_unpacked(m, NULL);
            return store_fail_corrupt(t, what,
                                      "done index out of step with msgs");
        }
        rv = reindex(t, m, NULL, what);
        if (rv == 0) {
            rv = store_del_raw(t, DB_MSGS, m->id, strlen(m->id), what);
        }
        qraft__message__free_unpacked(m, NULL);
        if (rv == 0) {
            (*n_pruned)++;
        }
    }
    return rv;
}

int qr_store_count_states(struct qr_store_txn *t,
                          uint64_t counts[QR_STORE_N_STATES])
{
    int rv = store_check_txn(t, false, "count states");
    if (rv != 0) {
        return rv;
    }
    for (unsigned i = 0; i < N_STATES; i++) {
        char name[16];
        counter_name(name, sizeof name, (Qraft__MessageState)i);
        counts[i] = 0;
        rv = store_get_u64(t, name, &counts[i], "count states");
        if (rv != 0 && rv != QR_ENOTFOUND) {
            return rv;
        }
    }
    return 0;
}

/* The message id at the end of qfifo key k (after a prefix of plen
 * bytes), new in *id. */
static int qfifo_id(struct qr_store_txn *t,
                    const MDB_val *k,
                    size_t plen,
                    char **id,
                    const char *what)
{
    if (k->mv_size <= plen + QFIFO_SEQ_BYTES) {
        return store_fail_corrupt(t, what, "qfifo key too short");
    }
    size_t n = k->mv_size - plen - QFIFO_SEQ_BYTES;
    *id = malloc(n + 1);
    if (*id == NULL) {
        return -ENOMEM;
    }
    memcpy(*id, (const uint8_t *)k->mv_data + plen + QFIFO_SEQ_BYTES, n);
    (*id)[n] = '\0';
    return 0;
}

int qr_store_queue_head(struct qr_store_txn *t, const char *name, char **id)
{
    const char *what = "queue head";
    uint8_t prefix[KEY_BUF_BYTES];
    MDB_cursor *c;
    MDB_val k;
    MDB_val v;
    *id = NULL;
    int rv = store_check_key(t, false, name, 1, what);
    if (rv != 0) {
        return rv;
    }
    size_t plen = qfifo_prefix(prefix, name);
    rv = store_cursor_open(t, DB_QFIFO, &c, what);
    if (rv != 0) {
        return rv;
    }
    int rc = store_cursor_seek(c, prefix, plen, false, &k, &v);
    if (rc == MDB_NOTFOUND ||
        (rc == 0 && (k.mv_size < plen || memcmp(k.mv_data, prefix, plen)))) {
        rv = QR_ENOTFOUND;
    } else if (rc != 0) {
        rv = store_fail_mdb(t->s, t->write, what, rc);
    } else {
        rv = store_open_value(t, DB_QFIFO, &k, &v, what);
        if (rv == 0) {
            rv = qfifo_id(t, &k, plen, id, what);
        }
    }
    mdb_cursor_close(c);
    return rv;
}
