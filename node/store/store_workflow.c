/* Workflow runs and their histories: `runs` holds one WorkflowRun record
 * under its id; `wsteps` one WorkflowStep per history entry, keyed by the
 * run id, a 0 byte and the entry's seq (big-endian), so a run's entries
 * sort together and in order. Entries are written once and never change
 * (apply appends them); a run's delete takes them all. */
#include <errno.h>
#include <stdint.h>
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

int qr_store_run_put(struct qr_store_txn *t, const Qraft__WorkflowRun *run)
{
    const char *what = "put workflow run";
    int rv = check_run_id(t, true, run->id, what);
    if (rv == 0) {
        rv = store_put_packed(t, DB_RUNS, run->id, strlen(run->id), &run->base,
                              what);
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

int qr_store_run_delete(struct qr_store_txn *t, const char *id)
{
    const char *what = "delete workflow run";
    uint8_t key[KEY_BUF_BYTES];
    int rv = check_run_id(t, true, id, what);
    if (rv != 0) {
        return rv;
    }
    /* The entries' seqs are 0..next_seq-1; find the last one stored, then
     * delete them all by key. */
    struct step_walk w = {.run_id = id,
                          .prefix_len = strlen(id) + 1,
                          .to_seq = UINT32_MAX,
                          .collect = true};
    rv = store_walk_db(t, DB_WSTEPS, key, step_key(key, id, 0), false, SIZE_MAX,
                       visit_step, &w, what);
    for (uint32_t seq = 0; rv == 0 && w.any && seq <= w.last_seq; seq++) {
        rv = store_del_raw(t, DB_WSTEPS, key, step_key(key, id, seq), what);
        if (rv == QR_ENOTFOUND) {
            rv = 0;
        }
        if (seq == UINT32_MAX) {
            break;
        }
    }
    if (rv == 0) {
        rv = store_del_raw(t, DB_RUNS, id, strlen(id), what);
        if (rv == QR_ENOTFOUND) {
            rv = 0;
        }
    }
    return rv;
}
