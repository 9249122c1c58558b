/* Workflow runs and their histories: `runs` holds one WorkflowRun record
 * under its id; `wsteps` one WorkflowStep per history entry, keyed by the
 * run id, a 0 byte and the entry's seq (big-endian), so a run's entries
 * sort together and in order. Entries are written once and never change
 * (apply appends them); a run's delete takes them all. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "store/store_int.h"

#define STEP_SEQ_BYTES 4

static const struct record_db run_records = {
    DB_RUNS, &qraft__workflow_run__descriptor, "workflow run does not decode",
    NULL, NULL};
static const struct record_db step_records = {
    DB_WSTEPS, &qraft__workflow_step__descriptor,
    "workflow history entry does not decode", NULL, NULL};

/* Checks a run id as a key of both databases (its `wsteps` keys add the 0
 * byte and the seq). */
static int check_run_id(struct qr_store_txn *t,
                        bool write,
                        const char *id,
                        const char *what)
{
    int rv = store_check_key(t, write, id, 1 + STEP_SEQ_BYTES, what);
    if (rv == 0 && strlen(id) > QR_STORE_MAX_RUN_ID_BYTES) {
        rv = store_bad_request(t->s, what, "workflow run id too long");
    }
    return rv;
}

/* The `wsteps` key of (run id, seq) into buf; returns its length. */
static size_t step_key(uint8_t *buf, const char *run_id, uint32_t seq)
{
    size_t n = strlen(run_id);
    memcpy(buf, run_id, n);
    buf[n] = 0;
    put_be32(buf + n + 1, seq);
    return n + 1 + STEP_SEQ_BYTES;
}

int qr_store_run_get(struct qr_store_txn *t,
                     const char *id,
                     Qraft__WorkflowRun **out)
{
    const char *what = "get workflow run";
    ProtobufCMessage *msg = NULL;
    *out = NULL;
    int rv = check_run_id(t, false, id, what);
    if (rv == 0) {
        rv = store_load_record(t, &run_records, id, strlen(id), &msg, what);
    }
    *out = (Qraft__WorkflowRun *)msg;
    return rv;
}

/* `rdone`: an ended run under (class, end time, id); class 1 for failed
 * runs (kept as long as dead letters), 0 for the others. */
#define RDONE_PREFIX_BYTES 9

static bool run_ended(const Qraft__WorkflowRun *run)
{
    return run->state == QRAFT__WORKFLOW_RUN_STATE__RUN_SUCCESS ||
           run->state == QRAFT__WORKFLOW_RUN_STATE__RUN_FAILED ||
           run->state == QRAFT__WORKFLOW_RUN_STATE__RUN_CANCELED;
}

static size_t rdone_key(uint8_t *buf, const Qraft__WorkflowRun *run)
{
    size_t n = strlen(run->id);
    buf[0] = run->state == QRAFT__WORKFLOW_RUN_STATE__RUN_FAILED ? 1 : 0;
    put_be64(buf + 1, run->ended_ms);
    memcpy(buf + RDONE_PREFIX_BYTES, run->id, n);
    return RDONE_PREFIX_BYTES + n;
}

int qr_store_run_put(struct qr_store_txn *t, const Qraft__WorkflowRun *run)
{
    const char *what = "put workflow run";
    uint8_t key[KEY_BUF_BYTES];
    Qraft__WorkflowRun *old = NULL;
    int rv = check_run_id(t, true, run->id, what);
    if (rv == 0) {
        rv = qr_store_run_get(t, run->id, &old);
        rv = rv == QR_ENOTFOUND ? 0 : rv;
    }
    /* `rdone` follows the run's end (a resumed run is no longer ended). */
    if (rv == 0 && old != NULL && run_ended(old)) {
        rv = store_del_raw(t, DB_RDONE, key, rdone_key(key, old), what);
    }
    if (rv == 0 && run_ended(run)) {
        rv = store_put_raw(t, DB_RDONE, key, rdone_key(key, run), "", 0, what);
    }
    if (rv == 0) {
        rv = store_put_packed(t, DB_RUNS, run->id, strlen(run->id), &run->base,
                              what);
    }
    if (old != NULL) {
        qraft__workflow_run__free_unpacked(old, NULL);
    }
    return rv;
}

int qr_store_run_step_put(struct qr_store_txn *t,
                          const char *run_id,
                          uint32_t seq,
                          const Qraft__WorkflowStep *st)
{
    const char *what = "put workflow history entry";
    uint8_t key[KEY_BUF_BYTES];
    int rv = check_run_id(t, true, run_id, what);
    if (rv == 0) {
        rv = store_put_packed(t, DB_WSTEPS, key, step_key(key, run_id, seq),
                              &st->base, what);
    }
    return rv;
}

int qr_store_run_step_get(struct qr_store_txn *t,
                          const char *run_id,
                          uint32_t seq,
                          Qraft__WorkflowStep **out)
{
    const char *what = "get workflow history entry";
    uint8_t key[KEY_BUF_BYTES];
    ProtobufCMessage *msg = NULL;
    *out = NULL;
    int rv = check_run_id(t, false, run_id, what);
    if (rv == 0) {
        rv = store_load_record(t, &step_records, key,
                               step_key(key, run_id, seq), &msg, what);
    }
    *out = (Qraft__WorkflowStep *)msg;
    return rv;
}

struct step_walk {
    const char *run_id;
    size_t prefix_len; /* the run id and its 0 byte */
    uint32_t to_seq;
    qr_store_run_step_cb cb;
    void *arg;
    /* Deleting: the keys visited, removed once the walk is over (a walk
     * must not write through its own cursor's transaction). */
    bool collect;
    uint32_t last_seq;
    bool any;
};

static int visit_step(struct qr_store_txn *t,
                      const MDB_val *k,
                      const MDB_val *v,
                      void *arg,
                      enum walk_step *step)
{
    struct step_walk *w = arg;
    if (k->mv_size != w->prefix_len + STEP_SEQ_BYTES ||
        memcmp(k->mv_data, w->run_id, w->prefix_len) != 0) {
        *step = STEP_END; /* past the run's entries */
        return 0;
    }
    uint32_t seq = get_be32((const uint8_t *)k->mv_data + w->prefix_len);
    if (seq > w->to_seq) {
        *step = STEP_END;
        return 0;
    }
    if (w->collect) {
        w->last_seq = seq;
        w->any = true;
        return 0;
    }
    ProtobufCMessage *msg = NULL;
    int rv = store_decode_record(t, &step_records, k, v, &msg,
                                 "read workflow history");
    if (rv != 0) {
        return rv;
    }
    rv = w->cb(w->arg, seq, (const Qraft__WorkflowStep *)msg);
    protobuf_c_message_free_unpacked(msg, NULL);
    return rv;
}

int qr_store_run_steps(struct qr_store_txn *t,
                       const char *run_id,
                       uint32_t from_seq,
                       uint32_t to_seq,
                       qr_store_run_step_cb cb,
                       void *arg)
{
    const char *what = "read workflow history";
    uint8_t start[KEY_BUF_BYTES];
    int rv = check_run_id(t, false, run_id, what);
    if (rv != 0 || from_seq > to_seq) {
        return rv;
    }
    struct step_walk w = {.run_id = run_id,
                          .prefix_len = strlen(run_id) + 1,
                          .to_seq = to_seq,
                          .cb = cb,
                          .arg = arg};
    return store_walk_db(t, DB_WSTEPS, start, step_key(start, run_id, from_seq),
                         false, SIZE_MAX, visit_step, &w, what);
}

int qr_store_run_steps_truncate(struct qr_store_txn *t,
                                const char *run_id,
                                uint32_t from_seq)
{
    const char *what = "truncate workflow history";
    uint8_t key[KEY_BUF_BYTES];
    int rv = check_run_id(t, true, run_id, what);
    if (rv != 0) {
        return rv;
    }
    /* Find the last entry stored, then delete from_seq..it by key. */
    struct step_walk w = {.run_id = run_id,
                          .prefix_len = strlen(run_id) + 1,
                          .to_seq = UINT32_MAX,
                          .collect = true};
    rv = store_walk_db(t, DB_WSTEPS, key, step_key(key, run_id, from_seq),
                       false, SIZE_MAX, visit_step, &w, what);
    for (uint32_t seq = from_seq; rv == 0 && w.any && seq <= w.last_seq;
         seq++) {
        rv = store_del_raw(t, DB_WSTEPS, key, step_key(key, run_id, seq), what);
        if (seq == UINT32_MAX) {
            break;
        }
    }
    return rv;
}

int qr_store_run_delete(struct qr_store_txn *t, const char *id)
{
    const char *what = "delete workflow run";
    uint8_t key[KEY_BUF_BYTES];
    int rv = qr_store_run_steps_truncate(t, id, 0);
    Qraft__WorkflowRun *run = NULL;
    if (rv == 0) {
        rv = qr_store_run_get(t, id, &run);
    }
    if (rv == 0 && run_ended(run)) {
        rv = store_del_raw(t, DB_RDONE, key, rdone_key(key, run), what);
    }
    if (run != NULL) {
        qraft__workflow_run__free_unpacked(run, NULL);
    }
    if (rv == 0) {
        rv = store_del_raw(t, DB_RUNS, id, strlen(id), what);
    }
    return rv == QR_ENOTFOUND ? 0 : rv;
}

static int call_run_cb(const struct record_walk *w, const ProtobufCMessage *msg)
{
    return w->cb.run(w->arg, (const Qraft__WorkflowRun *)msg);
}

int qr_store_run_list(struct qr_store_txn *t,
                      const char *after_id,
                      size_t limit,
                      qr_store_run_cb cb,
                      void *arg)
{
    struct record_walk w = {.r = &run_records,
                            .call = call_run_cb,
                            .cb.run = cb,
                            .arg = arg,
                            .what = "list workflow runs",
                            .max_after_bytes = QR_STORE_MAX_RUN_ID_BYTES};
    return store_record_list(t, &w, after_id, limit);
}

/* ------------------------------------------------------------------------ */
/* Waiters: `waiters` under (event id, 0, run id); `wdue` under (deadline,
 * event id, 0, run id), empty values. */

static const struct record_db waiter_records = {
    DB_WAITERS, &qraft__waiter__descriptor, "waiter does not decode", NULL,
    NULL};

#define WDUE_PREFIX_BYTES 8

static int check_waiter_ids(struct qr_store_txn *t,
                            bool write,
                            const char *event_id,
                            const char *run_id,
                            const char *what)
{
    int rv = check_run_id(t, write, run_id, what);
    if (rv == 0) {
        rv = store_check_name(t->s, event_id,
                              WDUE_PREFIX_BYTES + 1 + strlen(run_id), what);
    }
    return rv;
}

/* (event id, 0, run id) into buf at off; returns the end. */
static size_t waiter_key_at(uint8_t *buf,
                            size_t off,
                            const char *event_id,
                            const char *run_id)
{
    size_t e = strlen(event_id);
    size_t r = strlen(run_id);
    memcpy(buf + off, event_id, e);
    buf[off + e] = 0;
    memcpy(buf + off + e + 1, run_id, r);
    return off + e + 1 + r;
}

static size_t wdue_key(uint8_t *buf, const Qraft__Waiter *w)
{
    put_be64(buf, w->deadline_ms);
    return waiter_key_at(buf, WDUE_PREFIX_BYTES, w->event_id, w->run_id);
}

int qr_store_waiter_get(struct qr_store_txn *t,
                        const char *event_id,
                        const char *run_id,
                        Qraft__Waiter **out)
{
    const char *what = "get waiter";
    uint8_t key[KEY_BUF_BYTES];
    ProtobufCMessage *msg = NULL;
    *out = NULL;
    int rv = check_waiter_ids(t, false, event_id, run_id, what);
    if (rv == 0) {
        rv = store_load_record(t, &waiter_records, key,
                               waiter_key_at(key, 0, event_id, run_id), &msg,
                               what);
    }
    *out = (Qraft__Waiter *)msg;
    return rv;
}

int qr_store_waiter_delete(struct qr_store_txn *t,
                           const char *event_id,
                           const char *run_id)
{
    const char *what = "delete waiter";
    uint8_t key[KEY_BUF_BYTES];
    Qraft__Waiter *old = NULL;
    int rv = check_waiter_ids(t, true, event_id, run_id, what);
    if (rv == 0) {
        rv = qr_store_waiter_get(t, event_id, run_id, &old);
    }
    if (rv == QR_ENOTFOUND) {
        return 0;
    }
    if (rv == 0) {
        rv = store_del_raw(t, DB_WDUE, key, wdue_key(key, old), what);
    }
    if (rv == 0) {
        rv = store_del_raw(t, DB_WAITERS, key,
                           waiter_key_at(key, 0, event_id, run_id), what);
    }
    if (old != NULL) {
        qraft__waiter__free_unpacked(old, NULL);
    }
    return rv;
}

int qr_store_waiter_put(struct qr_store_txn *t, const Qraft__Waiter *w)
{
    const char *what = "put waiter";
    uint8_t key[KEY_BUF_BYTES];
    int rv = qr_store_waiter_delete(t, w->event_id, w->run_id);
    if (rv == 0) {
        rv = store_put_packed(t, DB_WAITERS, key,
                              waiter_key_at(key, 0, w->event_id, w->run_id),
                              &w->base, what);
    }
    if (rv == 0) {
        rv = store_put_raw(t, DB_WDUE, key, wdue_key(key, w), "", 0, what);
    }
    return rv;
}

struct waiter_walk {
    const uint8_t *prefix;
    size_t prefix_len;
    qr_store_waiter_cb cb;
    void *arg;
};

static int visit_waiter(struct qr_store_txn *t,
                        const MDB_val *k,
                        const MDB_val *v,
                        void *arg,
                        enum walk_step *step)
{
    struct waiter_walk *w = arg;
    if (k->mv_size < w->prefix_len ||
        memcmp(k->mv_data, w->prefix, w->prefix_len) != 0) {
        *step = STEP_END;
        return 0;
    }
    ProtobufCMessage *msg = NULL;
    int rv =
        store_decode_record(t, &waiter_records, k, v, &msg, "list waiters");
    if (rv == 0) {
        rv = w->cb(w->arg, (const Qraft__Waiter *)msg);
        protobuf_c_message_free_unpacked(msg, NULL);
    }
    return rv;
}

int qr_store_waiter_list(struct qr_store_txn *t,
                         const char *event_id,
                         size_t limit,
                         qr_store_waiter_cb cb,
                         void *arg)
{
    const char *what = "list waiters";
    uint8_t prefix[KEY_BUF_BYTES];
    int rv = store_check_key(t, false, event_id, 1 + QR_STORE_MAX_RUN_ID_BYTES,
                             what);
    if (rv != 0 || limit == 0) {
        return rv;
    }
    size_t n = strlen(event_id);
    memcpy(prefix, event_id, n);
    prefix[n] = 0;
    struct waiter_walk w = {prefix, n + 1, cb, arg};
    return store_walk_db(t, DB_WAITERS, prefix, n + 1, false, limit,
                         visit_waiter, &w, what);
}

struct due_walk {
    uint64_t now_ms;
    uint64_t next_ms; /* the first deadline after now_ms */
    qr_store_waiter_cb cb;
    void *arg;
};

static int visit_due(struct qr_store_txn *t,
                     const MDB_val *k,
                     const MDB_val *v,
                     void *arg,
                     enum walk_step *step)
{
    struct due_walk *w = arg;
    (void)v;
    const uint8_t *key = k->mv_data;
    if (k->mv_size <= WDUE_PREFIX_BYTES + 1) {
        return store_fail_corrupt(t, "waiters due", "wdue key too short");
    }
    uint64_t deadline = get_be64(key);
    if (deadline > w->now_ms) {
        w->next_ms = deadline;
        *step = STEP_END;
        return 0;
    }
    /* The waiter's key is the rest of the index key. */
    MDB_val wk = {k->mv_size - WDUE_PREFIX_BYTES,
                  (void *)(key + WDUE_PREFIX_BYTES)};
    MDB_val wv;
    ProtobufCMessage *msg = NULL;
    int rv = store_get_raw(t, DB_WAITERS, wk.mv_data, wk.mv_size, &wv,
                           "waiters due");
    if (rv == QR_ENOTFOUND) {
        return store_fail_corrupt(t, "waiters due",
                                  "wdue names a waiter that is gone");
    }
    if (rv == 0) {
        rv = store_decode_record(t, &waiter_records, &wk, &wv, &msg,
                                 "waiters due");
    }
    if (rv == 0) {
        rv = w->cb(w->arg, (const Qraft__Waiter *)msg);
        protobuf_c_message_free_unpacked(msg, NULL);
    }
    return rv;
}

int qr_store_waiter_due(struct qr_store_txn *t,
                        uint64_t now_ms,
                        size_t limit,
                        qr_store_waiter_cb cb,
                        void *arg,
                        uint64_t *next_ms)
{
    struct due_walk w = {
        .now_ms = now_ms, .next_ms = UINT64_MAX, .cb = cb, .arg = arg};
    *next_ms = UINT64_MAX;
    int rv = store_check_txn(t, false, "waiters due");
    if (rv != 0 || limit == 0) {
        return rv;
    }
    rv = store_walk_db(t, DB_WDUE, "", 0, false, limit, visit_due, &w,
                       "waiters due");
    *next_ms = w.next_ms;
    return rv;
}

/* ------------------------------------------------------------------------ */
/* Prune: ended runs, oldest first. */

struct rdone_walk {
    uint8_t class_;
    uint64_t before_ms;
    char **ids;
    size_t n, max;
};

static int visit_rdone(struct qr_store_txn *t,
                       const MDB_val *k,
                       const MDB_val *v,
                       void *arg,
                       enum walk_step *step)
{
    struct rdone_walk *w = arg;
    const uint8_t *key = k->mv_data;
    (void)v;
    if (k->mv_size <= RDONE_PREFIX_BYTES) {
        return store_fail_corrupt(t, "prune workflow runs",
                                  "rdone key too short");
    }
    if (key[0] != w->class_ || get_be64(key + 1) >= w->before_ms) {
        *step = STEP_END;
        return 0;
    }
    size_t n = k->mv_size - RDONE_PREFIX_BYTES;
    char *id = malloc(n + 1);
    if (id == NULL) {
        return -ENOMEM;
    }
    memcpy(id, key + RDONE_PREFIX_BYTES, n);
    id[n] = '\0';
    w->ids[w->n++] = id;
    return 0;
}

int qr_store_run_prune(struct qr_store_txn *t,
                       bool failed,
                       uint64_t before_ms,
                       size_t max,
                       size_t *n_pruned)
{
    const char *what = "prune workflow runs";
    *n_pruned = 0;
    int rv = store_check_txn(t, true, what);
    if (rv != 0 || max == 0) {
        return rv;
    }
    struct rdone_walk w = {.class_ = failed ? 1 : 0,
                           .before_ms = before_ms,
                           .ids = calloc(max, sizeof(char *)),
                           .max = max};
    if (w.ids == NULL) {
        return -ENOMEM;
    }
    rv = store_walk_db(t, DB_RDONE, &w.class_, 1, false, max, visit_rdone, &w,
                       what);
    /* Deleted once the walk is over (a walk must not write). */
    for (size_t i = 0; i < w.n; i++) {
        if (rv == 0) {
            rv = qr_store_run_delete(t, w.ids[i]);
        }
        free(w.ids[i]);
    }
    free(w.ids);
    *n_pruned = rv == 0 ? w.n : 0;
    return rv;
}
