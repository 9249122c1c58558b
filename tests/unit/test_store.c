/* Unit tests of node/store.c: each test opens a store in its own temporary
 * directory and checks what a caller would: records, the indexes and
 * counters kept in step, iterators, snapshots and error states. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ftw.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/err.h"
#include "store/store.h"

#define MAP_BYTES (64ull * 1024 * 1024)

struct fixture {
    char dir[64];
    struct qr_store *s;
};

static int on_remove(const char *path,
                     const struct stat *st,
                     int flag,
                     struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void make_dir(char *dir, size_t size)
{
    snprintf(dir, size, "/tmp/qraft-test-store-XXXXXX");
    assert_non_null(mkdtemp(dir));
}

static void remove_dir(const char *dir)
{
    assert_int_equal(nftw(dir, on_remove, 8, FTW_DEPTH | FTW_PHYS), 0);
}

static struct qr_store *open_store(const char *dir)
{
    char errmsg[QR_ERRMSG_BYTES];
    struct qr_store *s = NULL;
    int rv = qr_store_open(dir, MAP_BYTES, &s, errmsg);
    if (rv != 0) {
        fail_msg("qr_store_open: %s", errmsg);
    }
    return s;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    make_dir(f->dir, sizeof f->dir);
    f->s = open_store(f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    qr_store_close(f->s);
    remove_dir(f->dir);
    free(f);
    return 0;
}

static struct qr_store_txn *begin(struct qr_store *s, bool write)
{
    struct qr_store_txn *t = NULL;
    assert_int_equal(qr_store_txn_begin(s, write, &t), 0);
    return t;
}

/* Builds a message with every field set; free with free_msg. */
static Qraft__Message *make_msg(const char *id,
                                Qraft__MessageState state,
                                uint32_t shard,
                                uint64_t next_attempt_ms)
{
    Qraft__Message *m = calloc(1, sizeof *m);
    Qraft__Header **headers = calloc(2, sizeof *headers);
    Qraft__LastError *le = calloc(1, sizeof *le);
    assert_true(m != NULL && headers != NULL && le != NULL);
    qraft__message__init(m);
    qraft__last_error__init(le);
    for (int i = 0; i < 2; i++) {
        headers[i] = calloc(1, sizeof *headers[i]);
        assert_non_null(headers[i]);
        qraft__header__init(headers[i]);
        headers[i]->name = i == 0 ? "Content-Type" : "X-Trace";
        headers[i]->value = i == 0 ? "application/json" : "abc";
    }
    m->id = (char *)id;
    m->url = "http://127.0.0.1:9/hook";
    m->method = "POST";
    m->n_headers = 2;
    m->headers = headers;
    m->body.data = (uint8_t *)"{\"k\":1}\0binary";
    m->body.len = 14;
    m->state = state;
    m->max_retries = 3;
    m->retry_delay = "1000 * (1 + retried)";
    m->timeout_ms = 30000;
    m->callback = "http://127.0.0.1:9/cb";
    m->failure_callback = "http://127.0.0.1:9/fail";
    m->queue = "q1";
    m->dedup_id = "d1";
    m->attempts = 2;
    m->not_before_ms = 1000;
    m->next_attempt_ms = next_attempt_ms;
    m->created_ms = 900;
    m->updated_ms = 950;
    le->category = "server_error";
    le->status = 503;
    le->message = "unavailable";
    m->last_error = le;
    m->shard = shard;
    m->dead_lettered_ms = 0;
    m->dlq_hint = "";
    return m;
}

static void free_msg(Qraft__Message *m)
{
    for (size_t i = 0; i < m->n_headers; i++) {
        free(m->headers[i]);
    }
    free(m->headers);
    free(m->last_error);
    free(m);
}

static void put_msg(struct qr_store *s,
                    const char *id,
                    Qraft__MessageState state,
                    uint32_t shard,
                    uint64_t next_attempt_ms,
                    uint64_t dead_lettered_ms)
{
    Qraft__Message *m = make_msg(id, state, shard, next_attempt_ms);
    struct qr_store_txn *t = begin(s, true);
    m->dead_lettered_ms = dead_lettered_ms;
    assert_int_equal(qr_store_msg_put(t, m), 0);
    assert_int_equal(qr_store_txn_commit(t), 0);
    free_msg(m);
}

static void delete_msg(struct qr_store *s, const char *id)
{
    struct qr_store_txn *t = begin(s, true);
    assert_int_equal(qr_store_msg_delete(t, id), 0);
    assert_int_equal(qr_store_txn_commit(t), 0);
}

/* Collects the ids an iterator visits; stops with `stop_rv` after
 * `stop_after` visits when that is nonzero. */
struct collect {
    char ids[64][32];
    size_t n;
    size_t stop_after;
    int stop_rv;
};

static int on_msg(void *arg, const Qraft__Message *m)
{
    struct collect *c = arg;
    assert_true(c->n < 64);
    snprintf(c->ids[c->n], sizeof c->ids[c->n], "%s", m->id);
    c->n++;
    if (c->stop_after != 0 && c->n == c->stop_after) {
        return c->stop_rv;
    }
    return 0;
}

static void assert_ids(const struct collect *c, const char *const *ids)
{
    size_t n = 0;
    while (ids[n] != NULL) {
        n++;
    }
    assert_int_equal(c->n, n);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(c->ids[i], ids[i]);
    }
}

static void list_msgs(struct qr_store *s,
                      Qraft__MessageState state,
                      const char *after,
                      size_t limit,
                      struct collect *c)
{
    struct qr_store_txn *t = begin(s, false);
    memset(c, 0, sizeof *c);
    assert_int_equal(qr_store_msg_list(t, state, after, limit, on_msg, c), 0);
    qr_store_txn_abort(t);
}

static void scan_due(struct qr_store *s,
                     uint32_t shard,
                     uint64_t until_ms,
                     struct collect *c)
{
    struct qr_store_txn *t = begin(s, false);
    memset(c, 0, sizeof *c);
    assert_int_equal(qr_store_due_scan(t, shard, until_ms, 100, on_msg, c), 0);
    qr_store_txn_abort(t);
}

static void list_dlq(struct qr_store *s,
                     const char *after,
                     size_t limit,
                     struct collect *c)
{
    struct qr_store_txn *t = begin(s, false);
    memset(c, 0, sizeof *c);
    assert_int_equal(qr_store_dlq_list(t, after, limit, on_msg, c), 0);
    qr_store_txn_abort(t);
}

static void list_done(struct qr_store *s, size_t limit, struct collect *c)
{
    struct qr_store_txn *t = begin(s, false);
    memset(c, 0, sizeof *c);
    assert_int_equal(qr_store_done_list(t, limit, on_msg, c), 0);
    qr_store_txn_abort(t);
}

/* Writes message id in state, finished (updated) at updated_ms. */
static void put_msg_at(struct qr_store *s,
                       const char *id,
                       Qraft__MessageState state,
                       uint64_t updated_ms)
{
    Qraft__Message *m = make_msg(id, state, 1, 5000);
    struct qr_store_txn *t = begin(s, true);
    m->updated_ms = updated_ms;
    if (state == QRAFT__MESSAGE_STATE__DEAD_LETTERED) {
        m->dead_lettered_ms = updated_ms;
    }
    assert_int_equal(qr_store_msg_put(t, m), 0);
    assert_int_equal(qr_store_txn_commit(t), 0);
    free_msg(m);
}

static size_t prune_done(struct qr_store *s, uint64_t before_ms, size_t max)
{
    struct qr_store_txn *t = begin(s, true);
    size_t n = SIZE_MAX;
    assert_int_equal(qr_store_done_prune(t, before_ms, max, &n), 0);
    assert_int_equal(qr_store_txn_commit(t), 0);
    return n;
}

static void get_counts(struct qr_store *s, uint64_t counts[QR_STORE_N_STATES])
{
    struct qr_store_txn *t = begin(s, false);
    assert_int_equal(qr_store_count_states(t, counts), 0);
    qr_store_txn_abort(t);
}

static void snapshot(struct qr_store *s, void **buf, size_t *len)
{
    assert_int_equal(qr_store_snapshot(s, buf, len), 0);
    assert_non_null(*buf);
}

static void test_open_reopen(void **state)
{
    struct fixture *f = *state;
    struct qr_store_txn *t;
    Qraft__Message *got;
    uint64_t v;

    t = begin(f->s, true);
    assert_int_equal(qr_store_meta_put_u64(t, QR_META_APPLIED_INDEX, 42), 0);
    assert_int_equal(qr_store_txn_commit(t), 0);
    put_msg(f->s, "msg_a", QRAFT__MESSAGE_STATE__PENDING, 1, 5000, 0);
    assert_int_equal(qr_store_sync(f->s), 0);
    qr_store_close(f->s);

    f->s = open_store(f->dir);
    t = begin(f->s, false);
    assert_int_equal(qr_store_meta_get_u64(t, QR_META_APPLIED_INDEX, &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(qr_store_meta_get_u64(t, QR_META_FORMAT, &v), 0);
    assert_int_equal(v, 3);
    assert_int_equal(qr_store_msg_get(t, "msg_a", &got), 0);
    assert_string_equal(got->url, "http://127.0.0.1:9/hook");
    qraft__message__free_unpacked(got, NULL);
    qr_store_txn_abort(t);

    struct collect c;
    scan_due(f->s, 1, 5000, &c);
    assert_ids(&c, (const char *[]){"msg_a", NULL});
    qr_store_close(NULL);
}

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fputs(text, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
}

/* The clean-stop mark: a clean close leaves it, an open takes it away, and
 * only an open of exactly what that close left counts as clean. */
static void test_clean_stop_mark(void **state)
{
    struct fixture *f = *state;
    char mark[128];
    snprintf(mark, sizeof mark, "%s/clean-stop", f->dir);
    assert_false(qr_store_opened_clean(f->s)); /* a new store */
    put_msg(f->s, "msg_a", QRAFT__MESSAGE_STATE__PENDING, 1, 5000, 0);
    qr_store_close(f->s);
    assert_int_equal(access(mark, F_OK), 0);

    f->s = open_store(f->dir);
    assert_true(qr_store_opened_clean(f->s));
    assert_int_equal(access(mark, F_OK), -1); /* gone while it is open */

    /* A crash: a process opens it, writes and exits without closing. */
    qr_store_close(f->s);
    f->s = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct qr_store *s = open_store(f->dir);
        put_msg(s, "msg_b", QRAFT__MESSAGE_STATE__PENDING, 1, 5000, 0);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    f->s = open_store(f->dir);
    assert_false(qr_store_opened_clean(f->s));

    /* A mark naming another transaction (written by hand, or left while
     * a binary that does not know marks wrote on), or none readable. */
    qr_store_close(f->s);
    write_file(mark, "qraft-clean 1\n");
    f->s = open_store(f->dir);
    assert_false(qr_store_opened_clean(f->s));
    qr_store_close(f->s);
    write_file(mark, "garbage");
    f->s = open_store(f->dir);
    assert_false(qr_store_opened_clean(f->s));
    assert_int_equal(access(mark, F_OK), -1);
}

static void test_open_missing_dir(void **state)
{
    (void)state;
    char errmsg[QR_ERRMSG_BYTES] = "";
    struct qr_store *s = (struct qr_store *)&errmsg; /* must be reset */
    int rv = qr_store_open("/nonexistent/qraft-store", MAP_BYTES, &s, errmsg);
    assert_true(rv < 0);
    assert_null(s);
    assert_non_null(strstr(errmsg, "/nonexistent/qraft-store"));
}

static void test_newer_format_refused(void **state)
{
    struct fixture *f = *state;
    char errmsg[QR_ERRMSG_BYTES] = "";
    struct qr_store *s = NULL;
    struct qr_store_txn *t = begin(f->s, true);
    assert_int_equal(qr_store_meta_put_u64(t, QR_META_FORMAT, 4), 0);
    assert_int_equal(qr_store_txn_commit(t), 0);
    qr_store_close(f->s);
    f->s = NULL;

    assert_int_not_equal(qr_store_open(f->dir, MAP_BYTES, &s, errmsg), 0);
    assert_null(s);
    assert_non_null(strstr(errmsg, "newer"));
}

static void test_meta(void **state)
{
    struct fixture *f = *state;
    struct qr_store_txn *t;
    uint64_t v = 7;
    void *value;
    size_t len;

    t = begin(f->s, false);
    assert_int_equal(qr_store_meta_get_u64(t, "nothing", &v), QR_ENOTFOUND);
    assert_int_equal(qr_store_meta_get(t, "nothing", &value, &len),
                     QR_ENOTFOUND);
    /* A read transaction cannot write. */
    assert_int_equal(qr_store_meta_put_u64(t, "x", 1), QR_EBADREQ);
    qr_store_txn_abort(t);

    t = begin(f->s, true);
    assert_int_equal(qr_store_meta_put_u64(t, "big", UINT64_MAX - 1), 0);
    assert_int_equal(qr_store_meta_put(t, "blob", "\x00\x01\x02", 3), 0);
    assert_int_equal(qr_store_meta_put(t, "empty", "", 0), 0);
    assert_int_equal(qr_store_meta_put(t, "", "x", 1), QR_EBADREQ);
    assert_int_equal(qr_store_txn_commit(t), 0);

    t = begin(f->s, false);
    assert_int_equal(qr_store_meta_get_u64(t, "big", &v), 0);
    assert_true(v == UINT64_MAX - 1);
    assert_int_equal(qr_store_meta_get(t, "big", &value, &len), 0);
    assert_int_equal(len, 8);
    assert_memory_equal(value, "\xff\xff\xff\xff\xff\xff\xff\xfe", 8);
    free(value);
    assert_int_equal(qr_store_meta_get(t, "blob", &value, &len), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(value, "\x00\x01\x02", 3);
    free(value);
    assert_int_equal(qr_store_meta_get(t, "empty", &value, &len), 0);
    assert_int_equal(len, 0);
    free(value);
    /* A value that is not 8 bytes is not a u64; a read does not fail the
     * store. */
    assert_int_equal(qr_store_meta_get_u64(t, "blob", &v), QR_ECORRUPT);
    qr_store_txn_abort(t);
    assert_false(qr_store_failed(f->s));
}

static void test_msg_roundtrip(void **state)
{
    struct fixture *f = *state;
    Qraft__Message *m = make_msg("msg_0001", QRAFT__MESSAGE_STATE__RETRYING, 77,
                                 123456789012ull);
    Qraft__Message *got;
    struct qr_store_txn *t;

    m->dead_lettered_ms = 5;
    m->dlq_hint = "check the endpoint";
    t = begin(f->s, true);
    assert_int_equal(qr_store_msg_put(t, m), 0);
    /* Visible inside its own write transaction. */
    assert_int_equal(qr_store_msg_get(t, "msg_0001", &got), 0);
    qraft__message__free_unpacked(got, NULL);
    assert_int_equal(qr_store_txn_commit(t), 0);

    t = begin(f->s, false);
    assert_int_equal(qr_store_msg_get(t, "msg_0001", &got), 0);
    assert_string_equal(got->id, m->id);
    assert_string_equal(got->url, m->url);
    assert_string_equal(got->method, m->method);
    assert_int_equal(got->n_headers, 2);
    assert_string_equal(got->headers[0]->name, "Content-Type");
    assert_string_equal(got->headers[0]->value, "application/json");
    assert_string_equal(got->headers[1]->name, "X-Trace");
    assert_string_equal(got->headers[1]->value, "abc");
    assert_int_equal(got->body.len, m->body.len);
    assert_memory_equal(got->body.data, m->body.data, m->body.len);
    assert_int_equal(got->state, QRAFT__MESSAGE_STATE__RETRYING);
    assert_int_equal(got->max_retries, 3);
    assert_string_equal(got->retry_delay, m->retry_delay);
    assert_int_equal(got->timeout_ms, 30000);
    assert_string_equal(got->callback, m->callback);
    assert_string_equal(got->failure_callback, m->failure_callback);
    assert_string_equal(got->queue, "q1");
    assert_string_equal(got->dedup_id, "d1");
    assert_int_equal(got->attempts, 2);
    assert_int_equal(got->not_before_ms, 1000);
    assert_int_equal(got->next_attempt_ms, 123456789012ull);
    assert_int_equal(got->created_ms, 900);
    assert_int_equal(got->updated_ms, 950);
    assert_non_null(got->last_error);
    assert_string_equal(got->last_error->category, "server_error");
    assert_int_equal(got->last_error->status, 503);
    assert_string_equal(got->last_error->message, "unavailable");
    assert_int_equal(got->shard, 77);
    assert_int_equal(got->dead_lettered_ms, 5);
    assert_string_equal(got->dlq_hint, "check the endpoint");
    qraft__message__free_unpacked(got, NULL);
    assert_int_equal(qr_store_msg_get(t, "msg_none", &got), QR_ENOTFOUND);
    assert_null(got);
    qr_store_txn_abort(t);

    t = begin(f->s, true);
    assert_int_equal(qr_store_msg_delete(t, "msg_0001"), 0);
    assert_int_equal(qr_store_msg_delete(t, "msg_0001"), QR_ENOTFOUND);
    assert_int_equal(qr_store_msg_get(t, "msg_0001", &got), QR_ENOTFOUND);
    /* Invalid input is refused without failing the store. */
    m->id = "";
    assert_int_equal(qr_store_msg_put(t, m), QR_EBADREQ);
    m->id = "msg_x";
    m->shard = 70000;
    assert_int_equal(qr_store_msg_put(t, m), QR_EBADREQ);
    m->shard = 1;
    m->state = (Qraft__MessageState)9;
    assert_int_equal(qr_store_msg_put(t, m), QR_EBADREQ);
    assert_int_equal(qr_store_txn_commit(t), 0);
    assert_false(qr_store_failed(f->s));

    struct collect c;
    scan_due(f->s, 77, UINT64_MAX, &c);
    assert_int_equal(c.n, 0);
    free_msg(m);
}

static bool skip_b(void *arg, const char *id)
{
    (void)arg;
    return strcmp(id, "msg_b") == 0;
}

/* The skipping scan asks about each id before loading it: a skipped one is
 * neither visited nor counted against the limit; due_next finds the next
 * due time after a point. */
static void test_due_scan_skipping(void **state)
{
    struct fixture *f = *state;
    struct collect c;
    put_msg(f->s, "msg_a", QRAFT__MESSAGE_STATE__PENDING, 3, 100, 0);
    put_msg(f->s, "msg_b", QRAFT__MESSAGE_STATE__PENDING, 3, 50, 0);
    put_msg(f->s, "msg_c", QRAFT__MESSAGE_STATE__RETRYING, 3, 70, 0);
    struct qr_store_txn *t = begin(f->s, false);
    memset(&c, 0, sizeof c);
    assert_int_equal(
        qr_store_due_scan_skipping(
            t, 3, &(struct qr_store_due_visit){100, 100, skip_b, on_msg, &c}),
        0);
    assert_ids(&c, (const char *[]){"msg_c", "msg_a", NULL});
    memset(&c, 0, sizeof c);
    assert_int_equal(
        qr_store_due_scan_skipping(
            t, 3, &(struct qr_store_due_visit){100, 1, skip_b, on_msg, &c}),
        0);
    assert_ids(&c, (const char *[]){"msg_c", NULL});
    uint64_t next = 0;
    assert_int_equal(qr_store_due_next(t, 3, 50, &next), 0);
    assert_int_equal(next, 70);
    assert_int_equal(qr_store_due_next(t, 3, 100, &next), QR_ENOTFOUND);
    assert_int_equal(qr_store_due_next(t, 9, 0, &next), QR_ENOTFOUND);
    qr_store_txn_abort(t);
}

/* A flow-controlled message to put: key, limits, state and due time. */
static void put_flow_msg(struct qr_store *s,
                         const char *id,
                         const char *key,
                         Qraft__MessageState state,
                         uint64_t next_attempt_ms,
                         uint32_t parallelism,
                         uint32_t rate)
{
    Qraft__Message *m = make_msg(id, state, 7, next_attempt_ms);
    struct qr_store_txn *t = begin(s, true);
    m->flow_control_key = (char *)key;
    m->flow_waitlist = true;
    m->flow_parallelism = parallelism;
    m->flow_rate = rate;
    m->flow_period_s = rate != 0 ? 10 : 0;
    assert_int_equal(qr_store_msg_put(t, m), 0);
    assert_int_equal(qr_store_txn_commit(t), 0);
    m->flow_control_key = (char *)protobuf_c_empty_string;
    free_msg(m);
}

struct due_keys {
    char keys[8][32];
    uint64_t first[8];
    size_t n;
};

static int on_due_key(void *arg, const char *key, uint64_t first_due_ms)
{
    struct due_keys *d = arg;
    assert_true(d->n < 8);
    snprintf(d->keys[d->n], sizeof d->keys[d->n], "%s", key);
    d->first[d->n++] = first_due_ms;
    return 0;
}

/* Flow-controlled messages wait in their key's waitlist, not in `due`:
 * the keys of a shard are walked one seek each with their earliest due
 * time, a key's waitlist in due order up to a limit; the key's record
 * counts its messages not final and keeps the highest limits, and goes
 * once nothing is left in it. */
static void test_flow_waitlist(void **state)
{
    struct fixture *f = *state;
    struct collect c;
    struct due_keys d = {0};
    Qraft__FlowControlKey *k = NULL;
    put_flow_msg(f->s, "msg_a1", "a", QRAFT__MESSAGE_STATE__PENDING, 300, 2, 0);
    put_flow_msg(f->s, "msg_a2", "a", QRAFT__MESSAGE_STATE__RETRYING, 100, 5,
                 3);
    put_flow_msg(f->s, "msg_a3", "a", QRAFT__MESSAGE_STATE__PENDING, 200, 1, 0);
    put_flow_msg(f->s, "msg_b1", "b", QRAFT__MESSAGE_STATE__PENDING, 50, 1, 0);
    put_msg(f->s, "msg_p", QRAFT__MESSAGE_STATE__PENDING, 7, 10, 0);

    struct qr_store_txn *t = begin(f->s, false);
    memset(&c, 0, sizeof c);
    assert_int_equal(qr_store_due_scan(t, 7, 1000, 100, on_msg, &c), 0);
    assert_ids(&c, (const char *[]){"msg_p", NULL});
    assert_int_equal(qr_store_flow_due_keys(t, 7, on_due_key, &d), 0);
    assert_int_equal(d.n, 2);
    assert_string_equal(d.keys[0], "a");
    assert_int_equal(d.first[0], 100);
    assert_string_equal(d.keys[1], "b");
    assert_int_equal(d.first[1], 50);
    memset(&c, 0, sizeof c);
    assert_int_equal(qr_store_flow_due_scan(t, 7, "a",
                                            &(struct qr_store_due_visit){
                                                250, 100, NULL, on_msg, &c}),
                     0);
    assert_ids(&c, (const char *[]){"msg_a2", "msg_a3", NULL});
    memset(&c, 0, sizeof c);
    assert_int_equal(
        qr_store_flow_due_scan(
            t, 7, "a", &(struct qr_store_due_visit){1000, 1, NULL, on_msg, &c}),
        0);
    assert_ids(&c, (const char *[]){"msg_a2", NULL});
    assert_int_equal(qr_store_flow_get(t, "a", &k), 0);
    assert_int_equal(k->messages, 3);
    assert_int_equal(k->max_parallelism, 5);
    assert_int_equal(k->max_rate, 3);
    assert_int_equal(k->rate_period_s, 10);
    qraft__flow_control_key__free_unpacked(k, NULL);
    qr_store_txn_abort(t);

    /* Final or gone: no longer counted; the last one takes the record. */
    put_flow_msg(f->s, "msg_a2", "a", QRAFT__MESSAGE_STATE__DELIVERED, 100, 5,
                 3);
    delete_msg(f->s, "msg_a1");
    t = begin(f->s, false);
    assert_int_equal(qr_store_flow_get(t, "a", &k), 0);
    assert_int_equal(k->messages, 1);
    qraft__flow_control_key__free_unpacked(k, NULL);
    qr_store_txn_abort(t);
    put_flow_msg(f->s, "msg_a3", "a", QRAFT__MESSAGE_STATE__DEAD_LETTERED, 200,
                 1, 0);
    t = begin(f->s, false);
    assert_int_equal(qr_store_flow_get(t, "a", &k), QR_ENOTFOUND);
    memset(&d, 0, sizeof d);
    assert_int_equal(qr_store_flow_due_keys(t, 7, on_due_key, &d), 0);
    assert_int_equal(d.n, 1);
    assert_string_equal(d.keys[0], "b");
    qr_store_txn_abort(t);

    /* A paused key keeps its record without messages; resumed, it goes. */
    Qraft__FlowControlKey p = QRAFT__FLOW_CONTROL_KEY__INIT;
    p.key = "c";
    p.paused = true;
    t = begin(f->s, true);
    assert_int_equal(qr_store_flow_put(t, &p), 0);
    assert_int_equal(qr_store_txn_commit(t), 0);
    t = begin(f->s, true);
    assert_int_equal(qr_store_flow_get(t, "c", &k), 0);
    assert_true(k->paused);
    qraft__flow_control_key__free_unpacked(k, NULL);
    p.paused = false;
    assert_int_equal(qr_store_flow_put(t, &p), 0);
    assert_int_equal(qr_store_flow_get(t, "c", &k), QR_ENOTFOUND);
    assert_int_equal(qr_store_txn_commit(t), 0);
}

/* A scan from a due position starts at that message (same time: id
 * order), takes the later ones, and stays in its shard. */
static void test_due_scan_from(void **state)
{
    struct fixture *f = *state;
    struct collect c;
    put_msg(f->s, "msg_a", QRAFT__MESSAGE_STATE__PENDING, 3, 50, 0);
    put_msg(f->s, "msg_b", QRAFT__MESSAGE_STATE__PENDING, 3, 50, 0);
    put_msg(f->s, "msg_c", QRAFT__MESSAGE_STATE__PENDING, 3, 50, 0);
    put_msg(f->s, "msg_d", QRAFT__MESSAGE_STATE__RETRYING, 3, 70, 0);
    put_msg(f->s, "msg_e", QRAFT__MESSAGE_STATE__PENDING, 4, 10, 0);
    struct qr_store_txn *t = begin(f->s, false);
    memset(&c, 0, sizeof c);
    assert_int_equal(qr_store_due_scan_from(t, 3, 50, "msg_b",
                                            &(struct qr_store_due_visit){
                                                100, 100, NULL, on_msg, &c}),
                     0);
    assert_ids(&c, (const char *[]){"msg_b", "msg_c", "msg_d", NULL});
    memset(&c, 0, sizeof c);
    assert_int_equal(qr_store_due_scan_from(t, 3, 60, NULL,
                                            &(struct qr_store_due_visit){
                                                100, 100, NULL, on_msg, &c}),
                     0);
    assert_ids(&c, (const char *[]){"msg_d", NULL});
    memset(&c, 0, sizeof c);
    assert_int_equal(qr_store_due_scan_from(t, 3, 50, "msg_b",
                                            &(struct qr_store_due_visit){
                                                60, 100, skip_b, on_msg, &c}),
                     0);
    assert_ids(&c, (const char *[]){"msg_c", NULL});
    /* A message that is gone: from where it would be. */
    memset(&c, 0, sizeof c);
    assert_int_equal(qr_store_due_scan_from(t, 3, 50, "msg_bb",
                                            &(struct qr_store_due_visit){
                                                100, 100, NULL, on_msg, &c}),
                     0);
    assert_ids(&c, (const char *[]){"msg_c", "msg_d", NULL});
    qr_store_txn_abort(t);
}

static void test_due_index(void **state)
{
    struct fixture *f = *state;
    struct collect c;
    Qraft__Message *m;
    struct qr_store_txn *t;

    put_msg(f->s, "msg_a", QRAFT__MESSAGE_STATE__PENDING, 3, 100, 0);
    put_msg(f->s, "msg_b", QRAFT__MESSAGE_STATE__PENDING, 3, 50, 0);
    put_msg(f->s, "msg_c", QRAFT__MESSAGE_STATE__DELIVERING, 3, 200, 0);
    put_msg(f->s, "msg_d", QRAFT__MESSAGE_STATE__PENDING, 4, 10, 0);
    put_msg(f->s, "msg_e", QRAFT__MESSAGE_STATE__PENDING, 2, 10, 0);
    put_msg(f->s, "msg_f", QRAFT__MESSAGE_STATE__PENDING, 3, UINT64_MAX, 0);

    /* Only shard 3, only up to until_ms inclusive, in due order. */
    scan_due(f->s, 3, 100, &c);
    assert_ids(&c, (const char *[]){"msg_b", "msg_a", NULL});
    scan_due(f->s, 3, 99, &c);
    assert_ids(&c, (const char *[]){"msg_b", NULL});
    scan_due(f->s, 3, UINT64_MAX, &c);
    assert_ids(&c, (const char *[]){"msg_b", "msg_a", "msg_c", "msg_f", NULL});
    scan_due(f->s, 4, 1000, &c);
    assert_ids(&c, (const char *[]){"msg_d", NULL});
    scan_due(f->s, 5, UINT64_MAX, &c);
    assert_int_equal(c.n, 0);

    /* PENDING -> DELIVERED removes the due key. */
    put_msg(f->s, "msg_b", QRAFT__MESSAGE_STATE__DELIVERED, 3, 50, 0);
    scan_due(f->s, 3, 100, &c);
    assert_ids(&c, (const char *[]){"msg_a", NULL});

    /* RETRYING with a new next_attempt_ms moves it. */
    put_msg(f->s, "msg_a", QRAFT__MESSAGE_STATE__RETRYING, 3, 300, 0);
    scan_due(f->s, 3, 250, &c);
    assert_ids(&c, (const char *[]){"msg_c", NULL});
    scan_due(f->s, 3, 300, &c);
    assert_ids(&c, (const char *[]){"msg_c", "msg_a", NULL});

    /* A message moved to another shard leaves the old one. */
    put_msg(f->s, "msg_c", QRAFT__MESSAGE_STATE__DELIVERING, 4, 200, 0);
    scan_due(f->s, 4, 1000, &c);
    assert_ids(&c, (const char *[]){"msg_d", "msg_c", NULL});
    scan_due(f->s, 3, 1000, &c);
    assert_ids(&c, (const char *[]){"msg_a", NULL});

    /* Deleting removes it; limit and early stop are honoured. */
    delete_msg(f->s, "msg_d");
    t = begin(f->s, false);
    memset(&c, 0, sizeof c);
    assert_int_equal(qr_store_due_scan(t, 4, 1000, 100, on_msg, &c), 0);
    assert_ids(&c, (const char *[]){"msg_c", NULL});
    memset(&c, 0, sizeof c);
    assert_int_equal(qr_store_due_scan(t, 3, UINT64_MAX, 1, on_msg, &c), 0);
    assert_ids(&c, (const char *[]){"msg_a", NULL});
    memset(&c, 0, sizeof c);
    c.stop_after = 1;
    c.stop_rv = 17;
    assert_int_equal(qr_store_due_scan(t, 3, UINT64_MAX, 100, on_msg, &c), 17);
    assert_int_equal(c.n, 1);
    assert_int_equal(qr_store_due_scan(t, 70000, 1, 1, on_msg, &c), QR_EBADREQ);
    assert_int_equal(qr_store_msg_get(t, "msg_b", &m), 0);
    assert_int_equal(m->state, QRAFT__MESSAGE_STATE__DELIVERED);
    qraft__message__free_unpacked(m, NULL);
    qr_store_txn_abort(t);
}

static void test_dlq(void **state)
{
    struct fixture *f = *state;
    struct collect c;

    put_msg(f->s, "msg_1", QRAFT__MESSAGE_STATE__DEAD_LETTERED, 1, 0, 300);
    put_msg(f->s, "msg_2", QRAFT__MESSAGE_STATE__DEAD_LETTERED, 1, 0, 100);
    put_msg(f->s, "msg_3", QRAFT__MESSAGE_STATE__DEAD_LETTERED, 1, 0, 200);
    put_msg(f->s, "msg_4", QRAFT__MESSAGE_STATE__DEAD_LETTERED, 1, 0, 100);
    put_msg(f->s, "msg_5", QRAFT__MESSAGE_STATE__RETRYING, 1, 0, 0);

    /* Oldest first; equal times in id order. */
    list_dlq(f->s, NULL, 100, &c);
    assert_ids(&c, (const char *[]){"msg_2", "msg_4", "msg_3", "msg_1", NULL});
    list_dlq(f->s, "", 2, &c);
    assert_ids(&c, (const char *[]){"msg_2", "msg_4", NULL});
    list_dlq(f->s, "msg_4", 2, &c);
    assert_ids(&c, (const char *[]){"msg_3", "msg_1", NULL});
    list_dlq(f->s, "msg_1", 2, &c);
    assert_int_equal(c.n, 0);

    /* Leaving the DLQ removes the key; a cursor message that left restarts
     * from the oldest. */
    put_msg(f->s, "msg_3", QRAFT__MESSAGE_STATE__PENDING, 1, 10, 0);
    delete_msg(f->s, "msg_4");
    list_dlq(f->s, "msg_4", 100, &c);
    assert_ids(&c, (const char *[]){"msg_2", "msg_1", NULL});
    list_dlq(f->s, "msg_3", 100, &c);
    assert_ids(&c, (const char *[]){"msg_2", "msg_1", NULL});

    /* Entering it again at another time moves it. */
    put_msg(f->s, "msg_2", QRAFT__MESSAGE_STATE__DEAD_LETTERED, 1, 0, 400);
    list_dlq(f->s, NULL, 100, &c);
    assert_ids(&c, (const char *[]){"msg_1", "msg_2", NULL});
}

static void test_counters(void **state)
{
    struct fixture *f = *state;
    uint64_t counts[QR_STORE_N_STATES];

    get_counts(f->s, counts);
    for (int i = 0; i < QR_STORE_N_STATES; i++) {
        assert_int_equal(counts[i], 0);
    }
    put_msg(f->s, "msg_1", QRAFT__MESSAGE_STATE__PENDING, 1, 1, 0);
    put_msg(f->s, "msg_2", QRAFT__MESSAGE_STATE__PENDING, 1, 1, 0);
    put_msg(f->s, "msg_3", QRAFT__MESSAGE_STATE__PENDING, 1, 1, 0);
    put_msg(f->s, "msg_2", QRAFT__MESSAGE_STATE__DELIVERING, 1, 1, 0);
    put_msg(f->s, "msg_2", QRAFT__MESSAGE_STATE__DELIVERED, 1, 1, 0);
    put_msg(f->s, "msg_3", QRAFT__MESSAGE_STATE__DEAD_LETTERED, 1, 1, 9);
    put_msg(f->s, "msg_3", QRAFT__MESSAGE_STATE__DEAD_LETTERED, 1, 1, 9);
    put_msg(f->s, "msg_4", QRAFT__MESSAGE_STATE__CANCELLED, 1, 1, 0);
    delete_msg(f->s, "msg_4");
    put_msg(f->s, "msg_5", QRAFT__MESSAGE_STATE__RETRYING, 1, 1, 0);

    get_counts(f->s, counts);
    assert_int_equal(counts[QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED], 0);
    assert_int_equal(counts[QRAFT__MESSAGE_STATE__PENDING], 1);
    assert_int_equal(counts[QRAFT__MESSAGE_STATE__DELIVERING], 0);
    assert_int_equal(counts[QRAFT__MESSAGE_STATE__RETRYING], 1);
    assert_int_equal(counts[QRAFT__MESSAGE_STATE__DELIVERED], 1);
    assert_int_equal(counts[QRAFT__MESSAGE_STATE__DEAD_LETTERED], 1);
    assert_int_equal(counts[QRAFT__MESSAGE_STATE__CANCELLED], 0);

    /* Stored as 8-byte big-endian meta values. */
    struct qr_store_txn *t = begin(f->s, false);
    uint64_t v;
    assert_int_equal(qr_store_meta_get_u64(t, "count.5", &v), 0);
    assert_int_equal(v, 1);
    qr_store_txn_abort(t);
}

static void test_msg_list(void **state)
{
    struct fixture *f = *state;
    struct collect c;
    char id[32];

    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof id, "msg_%02d", i);
        put_msg(f->s, id,
                i % 2 == 0 ? QRAFT__MESSAGE_STATE__PENDING
                           : QRAFT__MESSAGE_STATE__DELIVERED,
                1, 100, 0);
    }
    list_msgs(f->s, QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED, NULL, 100, &c);
    assert_int_equal(c.n, 10);
    assert_string_equal(c.ids[0], "msg_00");
    assert_string_equal(c.ids[9], "msg_09");

    list_msgs(f->s, QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED, "", 3, &c);
    assert_ids(&c, (const char *[]){"msg_00", "msg_01", "msg_02", NULL});
    list_msgs(f->s, QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED, "msg_02", 3, &c);
    assert_ids(&c, (const char *[]){"msg_03", "msg_04", "msg_05", NULL});
    /* A cursor that is not a stored id still positions by order. */
    list_msgs(f->s, QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED, "msg_025", 2, &c);
    assert_ids(&c, (const char *[]){"msg_03", "msg_04", NULL});

    list_msgs(f->s, QRAFT__MESSAGE_STATE__DELIVERED, NULL, 100, &c);
    assert_ids(&c, (const char *[]){"msg_01", "msg_03", "msg_05", "msg_07",
                                    "msg_09", NULL});
    list_msgs(f->s, QRAFT__MESSAGE_STATE__PENDING, "msg_04", 2, &c);
    assert_ids(&c, (const char *[]){"msg_06", "msg_08", NULL});
    list_msgs(f->s, QRAFT__MESSAGE_STATE__PENDING, "msg_08", 2, &c);
    assert_int_equal(c.n, 0);
    list_msgs(f->s, QRAFT__MESSAGE_STATE__CANCELLED, NULL, 100, &c);
    assert_int_equal(c.n, 0);
    list_msgs(f->s, QRAFT__MESSAGE_STATE__PENDING, NULL, 0, &c);
    assert_int_equal(c.n, 0);

    struct qr_store_txn *t = begin(f->s, false);
    memset(&c, 0, sizeof c);
    c.stop_after = 2;
    c.stop_rv = -5;
    assert_int_equal(qr_store_msg_list(t, QRAFT__MESSAGE_STATE__PENDING, NULL,
                                       100, on_msg, &c),
                     -5);
    assert_ids(&c, (const char *[]){"msg_00", "msg_02", NULL});
    qr_store_txn_abort(t);
}

static void test_dedup(void **state)
{
    struct fixture *f = *state;
    struct qr_store_txn *t;
    char *id;
    size_t n;

    t = begin(f->s, true);
    assert_int_equal(qr_store_dedup_put(t, "id:a", "msg_1", 1000), 0);
    assert_int_equal(qr_store_dedup_put(t, "id:b", "msg_2", 2000), 0);
    assert_int_equal(qr_store_dedup_put(t, "id:c", "msg_3", 3000), 0);
    assert_int_equal(qr_store_txn_commit(t), 0);

    t = begin(f->s, false);
    assert_int_equal(qr_store_dedup_get(t, "id:a", 999, &id), 0);
    assert_string_equal(id, "msg_1");
    free(id);
    /* Expired at expires_ms. */
    assert_int_equal(qr_store_dedup_get(t, "id:a", 1000, &id), QR_ENOTFOUND);
    assert_null(id);
    assert_int_equal(qr_store_dedup_get(t, "id:z", 0, &id), QR_ENOTFOUND);
    qr_store_txn_abort(t);

    /* Overwrite "id:a" with a later expiry: its old index entry must go, so
     * pruning at 1000 does not remove the new record. */
    t = begin(f->s, true);
    assert_int_equal(qr_store_dedup_put(t, "id:a", "msg_9", 5000), 0);
    assert_int_equal(qr_store_dedup_prune(t, 1000, 100, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(qr_store_dedup_get(t, "id:a", 4999, &id), 0);
    assert_string_equal(id, "msg_9");
    free(id);

    /* Prune takes the smallest expiries first, at most max. */
    assert_int_equal(qr_store_dedup_prune(t, 10000, 1, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(qr_store_dedup_get(t, "id:b", 0, &id), QR_ENOTFOUND);
    assert_int_equal(qr_store_dedup_get(t, "id:c", 0, &id), 0);
    free(id);
    assert_int_equal(qr_store_dedup_prune(t, 3000, 100, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(qr_store_dedup_get(t, "id:c", 0, &id), QR_ENOTFOUND);
    assert_int_equal(qr_store_dedup_get(t, "id:a", 0, &id), 0);
    free(id);
    assert_int_equal(qr_store_dedup_prune(t, 4999, 100, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(qr_store_dedup_prune(t, 5000, 100, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(qr_store_dedup_get(t, "id:a", 0, &id), QR_ENOTFOUND);
    assert_int_equal(qr_store_dedup_prune(t, UINT64_MAX, 100, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(qr_store_txn_commit(t), 0);

    /* Nothing is left in either database. */
    void *buf_a;
    void *buf_b;
    size_t len_a;
    size_t len_b;
    snapshot(f->s, &buf_a, &len_a);
    char dir[64];
    make_dir(dir, sizeof dir);
    struct qr_store *empty = open_store(dir);
    snapshot(empty, &buf_b, &len_b);
    assert_int_equal(len_a, len_b);
    assert_memory_equal(buf_a, buf_b, len_a);
    free(buf_a);
    free(buf_b);
    qr_store_close(empty);
    remove_dir(dir);
}

struct events {
    char details[16][32];
    uint64_t times[16];
    size_t n;
};

static int on_event(void *arg, const Qraft__Event *e)
{
    struct events *ev = arg;
    assert_true(ev->n < 16);
    snprintf(ev->details[ev->n], sizeof ev->details[ev->n], "%s", e->detail);
    ev->times[ev->n] = e->time_ms;
    ev->n++;
    return 0;
}

static void append_event(struct qr_store_txn *t,
                         const char *id,
                         uint64_t time_ms,
                         uint64_t index,
                         uint32_t position,
                         const char *detail)
{
    Qraft__Event e = QRAFT__EVENT__INIT;
    e.message_id = (char *)id;
    e.time_ms = time_ms;
    e.state = QRAFT__MESSAGE_STATE__PENDING;
    e.attempt = 1;
    e.detail = (char *)detail;
    assert_int_equal(qr_store_event_append(t, index, position, &e), 0);
}

/* Appends five events out of key order and commits. In key order they are
 * (time, index, position) (100,3,0) msg_a, (100,3,1) msg_a, (100,3,2) msg_b,
 * (200,5,0) msg_a, (300,9,0) msg_a, with detail[0..4]. */
static void append_five_events(struct qr_store *s, const char *const detail[5])
{
    struct qr_store_txn *t = begin(s, true);
    append_event(t, "msg_a", 200, 5, 0, detail[3]);
    append_event(t, "msg_a", 100, 3, 1, detail[1]);
    append_event(t, "msg_b", 100, 3, 2, detail[2]);
    append_event(t, "msg_a", 100, 3, 0, detail[0]);
    append_event(t, "msg_a", 300, 9, 0, detail[4]);
    assert_int_equal(qr_store_txn_commit(t), 0);
}

static void test_events(void **state)
{
    struct fixture *f = *state;
    struct qr_store_txn *t;
    struct events ev;

    append_five_events(f->s,
                       (const char *const[]){"a1", "a2", "b1", "a3", "a4"});

    t = begin(f->s, false);
    memset(&ev, 0, sizeof ev);
    assert_int_equal(qr_store_event_list(t, "msg_a", 100, on_event, &ev), 0);
    assert_int_equal(ev.n, 4);
    assert_string_equal(ev.details[0], "a1");
    assert_string_equal(ev.details[1], "a2");
    assert_string_equal(ev.details[2], "a3");
    assert_string_equal(ev.details[3], "a4");
    assert_int_equal(ev.times[3], 300);
    memset(&ev, 0, sizeof ev);
    assert_int_equal(qr_store_event_list(t, "msg_a", 2, on_event, &ev), 0);
    assert_int_equal(ev.n, 2);
    assert_string_equal(ev.details[1], "a2");
    memset(&ev, 0, sizeof ev);
    assert_int_equal(qr_store_event_list(t, "msg_b", 100, on_event, &ev), 0);
    assert_int_equal(ev.n, 1);
    assert_string_equal(ev.details[0], "b1");
    memset(&ev, 0, sizeof ev);
    assert_int_equal(qr_store_event_list(t, "msg_c", 100, on_event, &ev), 0);
    assert_int_equal(ev.n, 0);
    qr_store_txn_abort(t);
}

/* A page of a positional event scan: details in visit order and the last
 * position, stopping after `limit` events. */
struct scan_page {
    char details[16][32];
    size_t n;
    size_t limit;
    struct qr_store_event_pos last;
};

static int on_scan(void *arg,
                   const struct qr_store_event_pos *pos,
                   const Qraft__Event *e)
{
    struct scan_page *p = arg;
    if (p->n == p->limit) {
        return 1;
    }
    snprintf(p->details[p->n], sizeof p->details[p->n], "%s", e->detail);
    assert_int_equal(pos->time_ms, e->time_ms);
    p->last = *pos;
    p->n++;
    return 0;
}

static void scan_events(struct qr_store *s,
                        const struct qr_store_event_pos *from,
                        bool inclusive,
                        bool descending,
                        size_t limit,
                        struct scan_page *p)
{
    struct qr_store_txn *t = begin(s, false);
    memset(p, 0, sizeof *p);
    p->limit = limit;
    int rv = qr_store_event_scan(t, from, inclusive, descending, on_scan, p);
    assert_true(rv == 0 || rv == 1);
    qr_store_txn_abort(t);
}

static void assert_details(const struct scan_page *p, const char *const *want)
{
    size_t n = 0;
    while (want[n] != NULL) {
        assert_string_equal(p->details[n], want[n]);
        n++;
    }
    assert_int_equal(p->n, n);
}

/* Paging through the events db with a cursor, both ways, ends exactly: no
 * event twice, none left out. */
static void test_event_scan_paging(void **state)
{
    struct fixture *f = *state;
    struct scan_page p;

    append_five_events(f->s,
                       (const char *const[]){"e1", "e2", "e3", "e4", "e5"});

    /* Oldest first, two at a time, each page after the last position. */
    scan_events(f->s, NULL, false, false, 2, &p);
    assert_details(&p, (const char *const[]){"e1", "e2", NULL});
    struct qr_store_event_pos at = p.last;
    scan_events(f->s, &at, false, false, 2, &p);
    assert_details(&p, (const char *const[]){"e3", "e4", NULL});
    at = p.last;
    scan_events(f->s, &at, false, false, 2, &p);
    assert_details(&p, (const char *const[]){"e5", NULL});
    at = p.last;
    scan_events(f->s, &at, false, false, 2, &p);
    assert_int_equal(p.n, 0);

    /* Newest first. */
    scan_events(f->s, NULL, false, true, 2, &p);
    assert_details(&p, (const char *const[]){"e5", "e4", NULL});
    at = p.last;
    scan_events(f->s, &at, false, true, 2, &p);
    assert_details(&p, (const char *const[]){"e3", "e2", NULL});
    at = p.last;
    scan_events(f->s, &at, false, true, 2, &p);
    assert_details(&p, (const char *const[]){"e1", NULL});
    at = p.last;
    scan_events(f->s, &at, false, true, 2, &p);
    assert_int_equal(p.n, 0);

    /* Inclusive starts at the event itself. */
    scan_events(f->s, &at, true, false, 1, &p);
    assert_details(&p, (const char *const[]){"e1", NULL});

    /* A position between events, and past either end. */
    struct qr_store_event_pos mid = {.time_ms = 150};
    scan_events(f->s, &mid, true, true, 10, &p);
    assert_details(&p, (const char *const[]){"e3", "e2", "e1", NULL});
    scan_events(f->s, &mid, true, false, 10, &p);
    assert_details(&p, (const char *const[]){"e4", "e5", NULL});
    struct qr_store_event_pos late = {.time_ms = 1000};
    scan_events(f->s, &late, false, true, 1, &p);
    assert_details(&p, (const char *const[]){"e5", NULL});
    scan_events(f->s, &late, false, false, 1, &p);
    assert_int_equal(p.n, 0);
    struct qr_store_event_pos early = {.time_ms = 1};
    scan_events(f->s, &early, false, true, 1, &p);
    assert_int_equal(p.n, 0);
    /* The time alone as a bound, newest first: at or before 100. */
    struct qr_store_event_pos upto = {
        .time_ms = 100, .index = UINT64_MAX, .position = UINT32_MAX};
    scan_events(f->s, &upto, true, true, 10, &p);
    assert_details(&p, (const char *const[]){"e3", "e2", "e1", NULL});
}

/* The positional DLQ walk keeps its place after the cursor's message left
 * the DLQ. */
static void test_dlq_list_at(void **state)
{
    struct fixture *f = *state;
    struct collect c;
    put_msg(f->s, "msg_1", QRAFT__MESSAGE_STATE__DEAD_LETTERED, 1, 0, 10);
    put_msg(f->s, "msg_2", QRAFT__MESSAGE_STATE__DEAD_LETTERED, 1, 0, 20);
    put_msg(f->s, "msg_3", QRAFT__MESSAGE_STATE__DEAD_LETTERED, 1, 0, 30);
    delete_msg(f->s, "msg_2");

    struct qr_store_txn *t = begin(f->s, false);
    memset(&c, 0, sizeof c);
    assert_int_equal(qr_store_dlq_list_at(t, 20, "msg_2", 10, on_msg, &c), 0);
    assert_ids(&c, (const char *const[]){"msg_3", NULL});
    memset(&c, 0, sizeof c);
    assert_int_equal(qr_store_dlq_list_at(t, 0, NULL, 10, on_msg, &c), 0);
    assert_ids(&c, (const char *const[]){"msg_1", "msg_3", NULL});
    qr_store_txn_abort(t);
}

static void put_schedule(struct qr_store_txn *t, const char *id, uint64_t next)
{
    Qraft__PublishRequest req = QRAFT__PUBLISH_REQUEST__INIT;
    req.url = "http://127.0.0.1:9/tick";
    Qraft__Schedule sc = QRAFT__SCHEDULE__INIT;
    sc.id = (char *)id;
    sc.cron = "* * * * *";
    sc.request = &req;
    sc.next_slot_ms = next;
    assert_int_equal(qr_store_schedule_put(t, &sc), 0);
}

static int collect_schedule_id(void *arg, const Qraft__Schedule *sc)
{
    struct collect *c = arg;
    assert_true(c->n < sizeof c->ids / sizeof c->ids[0]);
    snprintf(c->ids[c->n++], sizeof c->ids[0], "%s", sc->id);
    return 0;
}

/* Schedules: put replaces, get and delete answer NOT_FOUND for an unknown
 * id, list walks in id order. */
static void test_schedules(void **state)
{
    struct fixture *f = *state;
    struct qr_store_txn *t = begin(f->s, true);
    Qraft__Schedule *sc = NULL;
    struct collect c = {0};

    put_schedule(t, "b", 1);
    put_schedule(t, "a", 2);
    put_schedule(t, "b", 3);
    assert_int_equal(qr_store_schedule_get(t, "b", &sc), 0);
    assert_int_equal(sc->next_slot_ms, 3);
    assert_string_equal(sc->request->url, "http://127.0.0.1:9/tick");
    qraft__schedule__free_unpacked(sc, NULL);
    assert_int_equal(qr_store_schedule_list(t, collect_schedule_id, &c), 0);
    assert_ids(&c, (const char *[]){"a", "b", NULL});
    assert_int_equal(qr_store_schedule_delete(t, "a"), 0);
    assert_int_equal(qr_store_schedule_delete(t, "a"), QR_ENOTFOUND);
    assert_int_equal(qr_store_schedule_get(t, "a", &sc), QR_ENOTFOUND);
    assert_int_equal(qr_store_txn_commit(t), 0);
    assert_false(qr_store_failed(f->s));
}

/* Fills a store with some of everything. */
static void populate(struct qr_store *s)
{
    struct qr_store_txn *t;
    put_msg(s, "msg_1", QRAFT__MESSAGE_STATE__PENDING, 1, 100, 0);
    put_msg(s, "msg_2", QRAFT__MESSAGE_STATE__RETRYING, 2, 200, 0);
    put_msg(s, "msg_3", QRAFT__MESSAGE_STATE__DEAD_LETTERED, 1, 0, 50);
    put_msg(s, "msg_4", QRAFT__MESSAGE_STATE__DELIVERED, 1, 0, 0);
    t = begin(s, true);
    assert_int_equal(qr_store_dedup_put(t, "id:x", "msg_1", 9000), 0);
    assert_int_equal(qr_store_meta_put(t, QR_META_SIGNING_KEYS, "k", 1), 0);
    assert_int_equal(qr_store_meta_put_u64(t, QR_META_APPLIED_INDEX, 12), 0);
    append_event(t, "msg_1", 100, 12, 0, "published");
    put_schedule(t, "nightly", 60000);
    assert_int_equal(qr_store_txn_commit(t), 0);
}

/* Puts message id with a body of `len` bytes of `fill`. */
static void put_big_msg(struct qr_store *s,
                        const char *id,
                        char fill,
                        size_t len)
{
    Qraft__Message *m = make_msg(id, QRAFT__MESSAGE_STATE__PENDING, 1, 1000);
    uint8_t *body = malloc(len);
    assert_non_null(body);
    memset(body, fill, len);
    m->body.data = body;
    m->body.len = len;
    struct qr_store_txn *t = begin(s, true);
    assert_int_equal(qr_store_msg_put(t, m), 0);
    assert_int_equal(qr_store_txn_commit(t), 0);
    free(body);
    free_msg(m);
}

/* An open snapshot's buffers point into the map for long values; writes
 * after it was opened (deletes, overwrites, new records that could reuse
 * freed pages) never change what they hold. */
static void test_snapshot_buffers_stay_valid(void **state)
{
    struct fixture *f = *state;
    char id[32];
    for (int i = 0; i < 200; i++) {
        snprintf(id, sizeof id, "msg_%04d", i);
        put_big_msg(f->s, id, (char)('a' + i % 26), 4096 + (size_t)i);
    }
    void *want;
    size_t want_len;
    snapshot(f->s, &want, &want_len);

    struct qr_store_snap *sn;
    assert_int_equal(qr_store_snapshot_open(f->s, &sn), 0);
    for (int i = 0; i < 200; i++) {
        snprintf(id, sizeof id, "msg_%04d", i);
        if (i % 2 == 0) {
            delete_msg(f->s, id);
        } else {
            put_big_msg(f->s, id, 'Z', 8000);
        }
        snprintf(id, sizeof id, "msg_new_%04d", i);
        put_big_msg(f->s, id, 'N', 6000);
    }

    size_t n;
    size_t total;
    const struct qr_store_snap_buf *bufs =
        qr_store_snapshot_bufs(sn, &n, &total);
    assert_int_equal(total, want_len);
    assert_true(n > 200); /* the bodies are referenced, not copied */
    uint8_t *got = malloc(total);
    assert_non_null(got);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(got + off, bufs[i].base, bufs[i].len);
        off += bufs[i].len;
    }
    assert_int_equal(off, total);
    assert_memory_equal(got, want, total);
    qr_store_snapshot_close(sn);
    qr_store_snapshot_close(NULL);
    free(got);
    free(want);
}

static void test_snapshot_restore(void **state)
{
    struct fixture *f = *state;
    char dir[64];
    struct qr_store *dst;
    void *buf;
    void *buf2;
    size_t len;
    size_t len2;
    struct collect c;
    uint64_t counts[QR_STORE_N_STATES];
    char *id;

    populate(f->s);
    snapshot(f->s, &buf, &len);
    assert_memory_equal(buf, "QRSNAP01", 8);

    make_dir(dir, sizeof dir);
    dst = open_store(dir);
    /* The target's old contents disappear. */
    put_msg(dst, "msg_old", QRAFT__MESSAGE_STATE__PENDING, 1, 1, 0);
    assert_int_equal(qr_store_restore(dst, buf, len), 0);

    /* Same contents, database by database. */
    snapshot(dst, &buf2, &len2);
    assert_int_equal(len, len2);
    assert_memory_equal(buf, buf2, len);
    free(buf2);

    list_msgs(dst, QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED, NULL, 100, &c);
    assert_ids(&c, (const char *[]){"msg_1", "msg_2", "msg_3", "msg_4", NULL});
    scan_due(dst, 1, 1000, &c);
    assert_ids(&c, (const char *[]){"msg_1", NULL});
    scan_due(dst, 2, 1000, &c);
    assert_ids(&c, (const char *[]){"msg_2", NULL});
    list_dlq(dst, NULL, 100, &c);
    assert_ids(&c, (const char *[]){"msg_3", NULL});
    get_counts(dst, counts);
    assert_int_equal(counts[QRAFT__MESSAGE_STATE__PENDING], 1);
    assert_int_equal(counts[QRAFT__MESSAGE_STATE__RETRYING], 1);
    assert_int_equal(counts[QRAFT__MESSAGE_STATE__DEAD_LETTERED], 1);
    assert_int_equal(counts[QRAFT__MESSAGE_STATE__DELIVERED], 1);
    struct qr_store_txn *t = begin(dst, false);
    assert_int_equal(qr_store_dedup_get(t, "id:x", 0, &id), 0);
    assert_string_equal(id, "msg_1");
    free(id);
    struct events ev = {0};
    assert_int_equal(qr_store_event_list(t, "msg_1", 10, on_event, &ev), 0);
    assert_int_equal(ev.n, 1);
    Qraft__Schedule *sc = NULL;
    assert_int_equal(qr_store_schedule_get(t, "nightly", &sc), 0);
    assert_int_equal(sc->next_slot_ms, 60000);
    qraft__schedule__free_unpacked(sc, NULL);
    qr_store_txn_abort(t);

    /* Survives a reopen. */
    qr_store_close(dst);
    dst = open_store(dir);
    snapshot(dst, &buf2, &len2);
    assert_int_equal(len, len2);
    assert_memory_equal(buf, buf2, len);
    free(buf2);

    free(buf);
    qr_store_close(dst);
    remove_dir(dir);
}

/* ---------------------------------------------------------------------------
 * Image snapshots */

/* Concatenates an open snapshot's buffers; returns new (free()). */
static uint8_t *snap_concat(struct qr_store_snap *sn, size_t *len)
{
    size_t n;
    size_t total;
    const struct qr_store_snap_buf *bufs =
        qr_store_snapshot_bufs(sn, &n, &total);
    uint8_t *out = malloc(total);
    assert_non_null(out);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(out + off, bufs[i].base, bufs[i].len);
        off += bufs[i].len;
    }
    assert_int_equal(off, total);
    *len = total;
    return out;
}

static uint8_t *image(struct qr_store *s, size_t *len)
{
    struct qr_store_snap *sn;
    assert_int_equal(qr_store_snapshot_open_image(s, &sn), 0);
    uint8_t *out = snap_concat(sn, len);
    qr_store_snapshot_close(sn);
    assert_memory_equal(out, "QRIMAGE1", 8);
    return out;
}

/* A message in every state, and one of each other record. */
static void populate_all_states(struct qr_store *s)
{
    populate(s);
    put_msg(s, "msg_5", QRAFT__MESSAGE_STATE__DELIVERING, 3, 300, 0);
    put_msg(s, "msg_6", QRAFT__MESSAGE_STATE__CANCELLED, 1, 0, 0);
    put_msg(s, "msg_7", QRAFT__MESSAGE_STATE__QUEUED, 1, 0, 0);
    put_big_msg(s, "msg_big", 'b', 20000);
}

/* The store's whole contents, as the pairs format lays them out. */
static void assert_same_contents(struct qr_store *s,
                                 const void *want,
                                 size_t want_len)
{
    void *got;
    size_t got_len;
    snapshot(s, &got, &got_len);
    assert_int_equal(got_len, want_len);
    assert_memory_equal(got, want, want_len);
    free(got);
}

static void assert_no_restore_dir(const char *dir)
{
    char path[128];
    snprintf(path, sizeof path, "%s/restore", dir);
    assert_int_equal(access(path, F_OK), -1);
}

static void test_image_restore(void **state)
{
    struct fixture *f = *state;
    char dir[64];
    void *want;
    size_t want_len;
    size_t len;

    populate_all_states(f->s);
    snapshot(f->s, &want, &want_len);
    uint8_t *img = image(f->s, &len);

    make_dir(dir, sizeof dir);
    struct qr_store *dst = open_store(dir);
    put_msg(dst, "msg_old", QRAFT__MESSAGE_STATE__PENDING, 1, 1, 0);
    assert_true(qr_store_snapshot_is_image(img, len));
    assert_int_equal(qr_store_restore(dst, img, len), 0);
    assert_same_contents(dst, want, want_len);
    assert_no_restore_dir(dir);

    /* The same object goes on: indexes, counters, writes, a reopen. */
    struct collect c;
    uint64_t counts[QR_STORE_N_STATES];
    scan_due(dst, 1, 1000, &c);
    assert_ids(&c, (const char *[]){"msg_1", "msg_big", NULL});
    list_dlq(dst, NULL, 100, &c);
    assert_ids(&c, (const char *[]){"msg_3", NULL});
    get_counts(dst, counts);
    for (int st = 1; st < QR_STORE_N_STATES; st++) {
        assert_int_equal(counts[st], st == 1 ? 2 : 1); /* msg_big pending */
    }
    put_msg(dst, "msg_after", QRAFT__MESSAGE_STATE__PENDING, 1, 1, 0);
    delete_msg(dst, "msg_after");
    assert_same_contents(dst, want, want_len);
    qr_store_close(dst);
    dst = open_store(dir);
    assert_same_contents(dst, want, want_len);

    /* A pairs snapshot still restores over a store restored from an
     * image, and an image over one restored from pairs. */
    assert_int_equal(qr_store_restore(dst, want, want_len), 0);
    assert_same_contents(dst, want, want_len);
    assert_int_equal(qr_store_restore(dst, img, len), 0);
    assert_same_contents(dst, want, want_len);

    qr_store_close(dst);
    remove_dir(dir);
    free(img);
    free(want);
}

/* The image's buffers are read after the loop has gone on writing (raft
 * copies them from its thread pool): the writes reuse pages that were free
 * when the snapshot was taken, yet the image restores the state of that
 * moment. */
static void test_image_read_after_writes(void **state)
{
    struct fixture *f = *state;
    char id[32];
    char dir[64];

    for (int i = 0; i < 300; i++) {
        snprintf(id, sizeof id, "msg_%04d", i);
        put_big_msg(f->s, id, (char)('a' + i % 26), 3000 + (size_t)i);
    }
    for (int i = 0; i < 300; i += 2) { /* free pages for later writes */
        snprintf(id, sizeof id, "msg_%04d", i);
        delete_msg(f->s, id);
    }
    put_msg(f->s, "msg_x", QRAFT__MESSAGE_STATE__PENDING, 1, 1, 0);
    put_msg(f->s, "msg_y", QRAFT__MESSAGE_STATE__PENDING, 1, 1, 0);
    void *want;
    size_t want_len;
    snapshot(f->s, &want, &want_len);

    struct qr_store_snap *sn;
    assert_int_equal(qr_store_snapshot_open_image(f->s, &sn), 0);
    size_t at_open_len;
    uint8_t *at_open = snap_concat(sn, &at_open_len);
    /* The map may not move while the buffers are out. */
    assert_int_equal(qr_store_grow(f->s, MAP_BYTES * 2), QR_EUNAVAIL);
    for (int i = 0; i < 300; i++) {
        snprintf(id, sizeof id, "msg_%04d", i);
        if (i % 2 == 1) {
            put_big_msg(f->s, id, 'Z', 5000);
        }
        snprintf(id, sizeof id, "msg_new_%04d", i);
        put_big_msg(f->s, id, 'N', 4000);
    }
    size_t len;
    uint8_t *img = snap_concat(sn, &len);
    qr_store_snapshot_close(sn);
    assert_int_equal(len, at_open_len);
    /* Free pages of the image were written meanwhile (else this test
     * would not show anything). */
    assert_memory_not_equal(img, at_open, len);

    make_dir(dir, sizeof dir);
    struct qr_store *dst = open_store(dir);
    assert_int_equal(qr_store_restore(dst, img, len), 0);
    assert_same_contents(dst, want, want_len);
    qr_store_close(dst);
    remove_dir(dir);
    free(at_open);
    free(img);
    free(want);
}

/* A byte changed in a value's page: refused, naming the key, before the
 * live store changes. */
static void test_image_corrupt_refused(void **state)
{
    struct fixture *f = *state;
    char dir[64];
    size_t len;

    populate_all_states(f->s);
    put_big_msg(f->s, "msg_q", 'Q', 8000);
    uint8_t *img = image(f->s, &len);

    make_dir(dir, sizeof dir);
    struct qr_store *dst = open_store(dir);
    put_msg(dst, "msg_old", QRAFT__MESSAGE_STATE__PENDING, 1, 1, 0);
    void *before;
    size_t before_len;
    snapshot(dst, &before, &before_len);

    char run[64];
    memset(run, 'Q', sizeof run);
    uint8_t *at = memmem(img, len, run, sizeof run);
    assert_non_null(at);
    at[10] ^= 0x01;
    assert_int_equal(qr_store_restore(dst, img, len), QR_ECORRUPT);
    assert_non_null(strstr(qr_store_errmsg(dst), "in msgs at key \"msg_q\""));
    assert_non_null(strstr(qr_store_errmsg(dst), "checksum mismatch"));
    assert_false(qr_store_failed(dst));
    assert_same_contents(dst, before, before_len);
    assert_no_restore_dir(dir);
    at[10] ^= 0x01;

    /* Truncated, or a header that lies. */
    for (size_t n = 0; n < 64; n++) {
        assert_int_equal(qr_store_restore(dst, img, n), QR_ECORRUPT);
    }
    assert_int_equal(qr_store_restore(dst, img, len - 4096), QR_ECORRUPT);
    img[9] ^= 0x10; /* the image version */
    assert_int_equal(qr_store_restore(dst, img, len), QR_ECORRUPT);
    img[9] ^= 0x10;
    img[31] ^= 0x01; /* the transaction id */
    assert_int_equal(qr_store_restore(dst, img, len), QR_ECORRUPT);
    img[31] ^= 0x01;
    assert_same_contents(dst, before, before_len);

    /* Nothing open may be swapped away: refused, changing nothing. */
    struct qr_store_txn *t = begin(dst, false);
    assert_int_equal(qr_store_restore(dst, img, len), QR_ECONFLICT);
    qr_store_txn_abort(t);
    assert_same_contents(dst, before, before_len);
    assert_no_restore_dir(dir);

    /* The sound image still lands. */
    assert_int_equal(qr_store_restore(dst, img, len), 0);
    t = begin(dst, false);
    Qraft__Message *m = NULL;
    assert_int_equal(qr_store_msg_get(t, "msg_q", &m), 0);
    assert_int_equal(m->body.len, 8000);
    qraft__message__free_unpacked(m, NULL);
    assert_int_equal(qr_store_msg_get(t, "msg_old", &m), QR_ENOTFOUND);
    qr_store_txn_abort(t);

    qr_store_close(dst);
    remove_dir(dir);
    free(before);
    free(img);
}

/* An image is refused while a write transaction is open (its meta pages
 * would not be the read transaction's). */
static void test_image_refused_while_writing(void **state)
{
    struct fixture *f = *state;
    struct qr_store_snap *sn = NULL;
    struct qr_store_txn *t = begin(f->s, true);
    assert_int_equal(qr_store_snapshot_open_image(f->s, &sn), QR_ECONFLICT);
    assert_null(sn);
    qr_store_txn_abort(t);
    assert_int_equal(qr_store_snapshot_open_image(f->s, &sn), 0);
    qr_store_snapshot_close(sn);
    assert_int_equal(qr_store_grow(f->s, MAP_BYTES * 2), 0);
}

/* Appends big-endian integers and bytes to a test buffer. */
struct wbuf {
    uint8_t data[4096];
    size_t len;
};

static void w_bytes(struct wbuf *b, const void *p, size_t n)
{
    assert_true(b->len + n <= sizeof b->data);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void w_be(struct wbuf *b, uint64_t v, int n_bytes)
{
    for (int i = n_bytes - 1; i >= 0; i--) {
        uint8_t byte = (uint8_t)(v >> (8 * i));
        w_bytes(b, &byte, 1);
    }
}

static void w_db(struct wbuf *b, const char *name, uint64_t n_pairs)
{
    w_be(b, strlen(name), 4);
    w_bytes(b, name, strlen(name));
    w_be(b, n_pairs, 8);
}

static void w_pair(struct wbuf *b,
                   const void *k,
                   size_t klen,
                   const void *v,
                   size_t vlen)
{
    w_be(b, klen, 4);
    w_be(b, vlen, 4);
    w_bytes(b, k, klen);
    w_bytes(b, v, vlen);
}

static void w_header(struct wbuf *b, uint32_t n_dbs)
{
    b->len = 0;
    w_bytes(b, "QRSNAP01", 8);
    w_be(b, 1, 4);
    w_be(b, n_dbs, 4);
}

static void assert_restore_refused(struct qr_store *s,
                                   const void *buf,
                                   size_t len,
                                   const void *before,
                                   size_t before_len)
{
    void *after;
    size_t after_len;
    assert_int_equal(qr_store_restore(s, buf, len), QR_ECORRUPT);
    assert_false(qr_store_failed(s));
    snapshot(s, &after, &after_len);
    assert_int_equal(after_len, before_len);
    assert_memory_equal(after, before, before_len);
    free(after);
}

static void test_restore_rejects_malformed(void **state)
{
    struct fixture *f = *state;
    void *before;
    size_t before_len;
    void *good;
    size_t good_len;
    struct wbuf b;
    uint8_t *bad;

    populate(f->s);
    snapshot(f->s, &before, &before_len);
    good = before;
    good_len = before_len;

    /* Every truncation of a good snapshot. */
    for (size_t n = 0; n < good_len; n++) {
        bad = malloc(n > 0 ? n : 1);
        assert_non_null(bad);
        memcpy(bad, good, n);
        assert_int_equal(qr_store_restore(f->s, bad, n), QR_ECORRUPT);
        free(bad);
    }
    assert_restore_refused(f->s, NULL, 0, before, before_len);

    /* Trailing garbage. */
    bad = malloc(good_len + 1);
    assert_non_null(bad);
    memcpy(bad, good, good_len);
    bad[good_len] = 0;
    assert_restore_refused(f->s, bad, good_len + 1, before, before_len);
    /* Bad magic, version. */
    memcpy(bad, good, good_len);
    bad[0] = 'X';
    assert_restore_refused(f->s, bad, good_len, before, before_len);
    memcpy(bad, good, good_len);
    bad[11] = 2;
    assert_restore_refused(f->s, bad, good_len, before, before_len);
    free(bad);

    /* Pure garbage. */
    uint8_t garbage[300];
    for (size_t i = 0; i < sizeof garbage; i++) {
        garbage[i] = (uint8_t)(i * 131 + 7);
    }
    assert_restore_refused(f->s, garbage, sizeof garbage, before, before_len);

    /* Unknown database, database twice, keys out of order, empty key, a
     * newer data format, a huge pair count. */
    w_header(&b, 1);
    w_db(&b, "nope", 0);
    assert_restore_refused(f->s, b.data, b.len, before, before_len);
    w_header(&b, 2);
    w_db(&b, "msgs", 0);
    w_db(&b, "msgs", 0);
    assert_restore_refused(f->s, b.data, b.len, before, before_len);
    w_header(&b, 1);
    w_db(&b, "meta", 2);
    w_pair(&b, "b", 1, "", 0);
    w_pair(&b, "a", 1, "", 0);
    assert_restore_refused(f->s, b.data, b.len, before, before_len);
    w_header(&b, 1);
    w_db(&b, "meta", 2);
    w_pair(&b, "ab", 2, "", 0);
    w_pair(&b, "a", 1, "", 0);
    assert_restore_refused(f->s, b.data, b.len, before, before_len);
    w_header(&b, 1);
    w_db(&b, "meta", 1);
    w_pair(&b, "", 0, "x", 1);
    assert_restore_refused(f->s, b.data, b.len, before, before_len);
    w_header(&b, 1);
    w_db(&b, "meta", 1);
    w_pair(&b, "format", 6, "\0\0\0\0\0\0\0\4", 8);
    assert_restore_refused(f->s, b.data, b.len, before, before_len);
    w_header(&b, 1);
    w_db(&b, "meta", 1);
    w_pair(&b, "format", 6, "\0\0\0\0\0\0\0\0", 8);
    assert_restore_refused(f->s, b.data, b.len, before, before_len);
    w_header(&b, 1);
    w_db(&b, "msgs", UINT64_MAX);
    w_pair(&b, "a", 1, "", 0);
    assert_restore_refused(f->s, b.data, b.len, before, before_len);
    w_header(&b, 8);
    assert_restore_refused(f->s, b.data, b.len, before, before_len);

    /* A well-formed minimal snapshot is accepted: no databases at all means
     * an empty store (with its format recorded). */
    w_header(&b, 0);
    assert_int_equal(qr_store_restore(f->s, b.data, b.len), 0);
    struct collect c;
    list_msgs(f->s, QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED, NULL, 100, &c);
    assert_int_equal(c.n, 0);
    struct qr_store_txn *t = begin(f->s, false);
    uint64_t v;
    assert_int_equal(qr_store_meta_get_u64(t, QR_META_FORMAT, &v), 0);
    assert_int_equal(v, 3);
    qr_store_txn_abort(t);

    free(before);
}

static void test_corrupt_value(void **state)
{
    struct fixture *f = *state;
    struct wbuf b;
    Qraft__Message *m;
    struct collect c;
    char *id;

    /* Structurally valid snapshot carrying values that do not decode. */
    w_header(&b, 4);
    w_db(&b, "msgs", 1);
    w_pair(&b, "msg_bad", 7, "\xff\xff\xff\xff", 4);
    w_db(&b, "due", 1);
    uint8_t due[10 + 7] = {0, 1, 0, 0, 0, 0, 0, 0, 0, 5};
    memcpy(due + 10, "msg_bad", 7);
    w_pair(&b, due, sizeof due, "", 0);
    w_db(&b, "dedup", 1);
    w_pair(&b, "k", 1, "\x0a\x7f", 2);
    w_db(&b, "events", 1);
    uint8_t ek[20] = {0};
    w_pair(&b, ek, sizeof ek, "\x0a\x10x", 3);
    assert_int_equal(qr_store_restore(f->s, b.data, b.len), 0);

    struct qr_store_txn *t = begin(f->s, false);
    assert_int_equal(qr_store_msg_get(t, "msg_bad", &m), QR_ECORRUPT);
    assert_null(m);
    assert_non_null(strstr(qr_store_errmsg(f->s), "get msgs"));
    memset(&c, 0, sizeof c);
    assert_int_equal(
        qr_store_msg_list(t, QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED, NULL, 10,
                          on_msg, &c),
        QR_ECORRUPT);
    assert_int_equal(qr_store_due_scan(t, 1, 10, 10, on_msg, &c), QR_ECORRUPT);
    assert_int_equal(qr_store_dedup_get(t, "k", 0, &id), QR_ECORRUPT);
    struct events ev = {0};
    assert_int_equal(qr_store_event_list(t, "msg_bad", 10, on_event, &ev),
                     QR_ECORRUPT);
    assert_int_equal(c.n, 0);
    qr_store_txn_abort(t);
    /* Reads do not fail the store ... */
    assert_false(qr_store_failed(f->s));

    /* ... but meeting a corrupt record while writing does. */
    t = begin(f->s, true);
    m = make_msg("msg_bad", QRAFT__MESSAGE_STATE__PENDING, 1, 1);
    assert_int_equal(qr_store_msg_put(t, m), QR_ECORRUPT);
    free_msg(m);
    qr_store_txn_abort(t);
    assert_true(qr_store_failed(f->s));
    assert_int_equal(qr_store_txn_begin(f->s, false, &t), QR_ESTORE);
    assert_null(t);
}

static void test_abort_leaves_nothing(void **state)
{
    struct fixture *f = *state;
    struct qr_store_txn *t = begin(f->s, true);
    struct qr_store_txn *r;
    Qraft__Message *m = make_msg("msg_a", QRAFT__MESSAGE_STATE__PENDING, 1, 1);
    Qraft__Message *got;
    uint64_t counts[QR_STORE_N_STATES];
    struct collect c;
    char *id;

    assert_int_equal(qr_store_msg_put(t, m), 0);
    assert_int_equal(qr_store_dedup_put(t, "id:a", "msg_a", 100), 0);
    assert_int_equal(qr_store_meta_put_u64(t, "x", 1), 0);
    /* A read transaction alongside sees none of it. */
    r = begin(f->s, false);
    assert_int_equal(qr_store_msg_get(r, "msg_a", &got), QR_ENOTFOUND);
    qr_store_txn_abort(r);
    /* Only one write transaction at a time. */
    assert_int_equal(qr_store_txn_begin(f->s, true, &r), QR_ECONFLICT);
    qr_store_txn_abort(t);
    free_msg(m);

    t = begin(f->s, false);
    assert_int_equal(qr_store_msg_get(t, "msg_a", &got), QR_ENOTFOUND);
    assert_int_equal(qr_store_dedup_get(t, "id:a", 0, &id), QR_ENOTFOUND);
    qr_store_txn_abort(t);
    get_counts(f->s, counts);
    assert_int_equal(counts[QRAFT__MESSAGE_STATE__PENDING], 0);
    scan_due(f->s, 1, UINT64_MAX, &c);
    assert_int_equal(c.n, 0);
    /* And a new write transaction can begin. */
    qr_store_txn_abort(begin(f->s, true));
}

/* Puts n messages of 64 KiB in one transaction t, stopping at the first
 * error; returns it. */
static int put_big_msgs(struct qr_store_txn *t, int n)
{
    static uint8_t body[64 * 1024];
    int rv = 0;
    for (int i = 0; i < n && rv == 0; i++) {
        char id[32];
        snprintf(id, sizeof id, "msg_%03d", i);
        Qraft__Message *m = make_msg(id, QRAFT__MESSAGE_STATE__PENDING, 1, 1);
        m->body.data = body;
        m->body.len = sizeof body;
        rv = qr_store_msg_put(t, m);
        free_msg(m);
    }
    return rv;
}

/* A full map spoils its transaction only: abort, grow, and the same writes
 * go in (what apply does with an entry that met MDB_MAP_FULL). */
static void test_map_full_then_grow(void **state)
{
    (void)state;
    char dir[64];
    char errmsg[QR_ERRMSG_BYTES];
    struct qr_store *s = NULL;
    struct qr_store_txn *t;
    struct qr_store_txn *r;
    struct qr_store_space sp = {0};

    make_dir(dir, sizeof dir);
    assert_int_equal(qr_store_open(dir, 1024 * 1024, &s, errmsg), 0);
    t = begin(s, true);
    assert_int_equal(put_big_msgs(t, 100), QR_ENOSPACE);
    assert_false(qr_store_failed(s));
    assert_non_null(strstr(qr_store_errmsg(s), "MDB_MAP_FULL"));
    qr_store_txn_abort(t);

    /* Not while a transaction is open: nothing changes. */
    r = begin(s, false);
    assert_int_equal(qr_store_grow(s, 16 * 1024 * 1024), QR_EUNAVAIL);
    qr_store_txn_abort(r);
    assert_int_equal(qr_store_space(s, true, &sp), 0);
    assert_int_equal(sp.map_bytes, 1024 * 1024);

    assert_int_equal(qr_store_grow(s, 16 * 1024 * 1024), 0);
    assert_int_equal(qr_store_space(s, true, &sp), 0);
    assert_int_equal(sp.map_bytes, 16 * 1024 * 1024);
    t = begin(s, true);
    assert_int_equal(put_big_msgs(t, 100), 0);
    assert_int_equal(qr_store_txn_commit(t), 0);
    assert_int_equal(qr_store_space(s, true, &sp), 0);
    assert_true(sp.file_bytes > 100 * 64 * 1024);
    assert_true(sp.file_bytes <= sp.map_bytes);
    assert_true(sp.reusable_bytes < sp.file_bytes);
    /* One step: half again, at least QR_STORE_GROW_MIN_BYTES. */
    assert_int_equal(qr_store_grow(s, 0), 0);
    assert_int_equal(qr_store_space(s, false, &sp), 0);
    assert_int_equal(sp.map_bytes, 16 * 1024 * 1024 + QR_STORE_GROW_MIN_BYTES);
    qr_store_close(s);

    s = open_store(dir);
    uint64_t counts[QR_STORE_N_STATES];
    get_counts(s, counts);
    assert_int_equal(counts[QRAFT__MESSAGE_STATE__PENDING], 100);
    qr_store_close(s);
    remove_dir(dir);
}

/* Free pages are counted as reusable: deleting shrinks the used bytes, not
 * the file. */
static void test_space_counts_free_pages(void **state)
{
    struct fixture *f = *state;
    struct qr_store_space before = {0};
    struct qr_store_space after = {0};
    struct qr_store_txn *t = begin(f->s, true);
    assert_int_equal(put_big_msgs(t, 20), 0);
    assert_int_equal(qr_store_txn_commit(t), 0);
    assert_int_equal(qr_store_space(f->s, true, &before), 0);
    t = begin(f->s, true);
    for (int i = 0; i < 20; i++) {
        char id[32];
        snprintf(id, sizeof id, "msg_%03d", i);
        assert_int_equal(qr_store_msg_delete(t, id), 0);
    }
    assert_int_equal(qr_store_txn_commit(t), 0);
    /* A second write lets LMDB record the pages the delete freed. */
    t = begin(f->s, true);
    assert_int_equal(qr_store_meta_put_u64(t, "x", 1), 0);
    assert_int_equal(qr_store_txn_commit(t), 0);
    assert_int_equal(qr_store_space(f->s, true, &after), 0);
    /* The file barely moves (the free list's own pages); what is used
     * drops by the bodies. */
    assert_true(after.file_bytes <= before.file_bytes + 64 * 1024);
    assert_true(after.file_bytes - after.reusable_bytes + 20 * 64 * 1024 <=
                before.file_bytes - before.reusable_bytes);
}

/* Restore makes room for the old and the new state before it starts: a
 * snapshot larger than the map still lands. */
static void test_restore_grows_the_map(void **state)
{
    struct fixture *f = *state;
    char dir[64];
    char errmsg[QR_ERRMSG_BYTES];
    struct qr_store *small = NULL;
    struct qr_store_space sp = {0};
    void *buf;
    size_t len;

    struct qr_store_txn *t = begin(f->s, true);
    assert_int_equal(put_big_msgs(t, 100), 0);
    assert_int_equal(qr_store_txn_commit(t), 0);
    assert_int_equal(qr_store_snapshot(f->s, &buf, &len), 0);
    assert_true(len > 100 * 64 * 1024);

    make_dir(dir, sizeof dir);
    assert_int_equal(qr_store_open(dir, 1024 * 1024, &small, errmsg), 0);
    assert_int_equal(qr_store_restore(small, buf, len), 0);
    assert_int_equal(qr_store_space(small, false, &sp), 0);
    assert_true(sp.map_bytes >= 2 * (uint64_t)len);
    uint64_t counts[QR_STORE_N_STATES];
    get_counts(small, counts);
    assert_int_equal(counts[QRAFT__MESSAGE_STATE__PENDING], 100);
    free(buf);
    qr_store_close(small);
    remove_dir(dir);
}

/* Committing a transaction spoilt by a full map fails the store (the
 * caller should have aborted it). */
static void test_map_full_commit_fails_store(void **state)
{
    (void)state;
    char dir[64];
    char errmsg[QR_ERRMSG_BYTES];
    struct qr_store *s = NULL;
    struct qr_store_txn *t;

    make_dir(dir, sizeof dir);
    assert_int_equal(qr_store_open(dir, 1024 * 1024, &s, errmsg), 0);
    t = begin(s, true);
    assert_int_equal(put_big_msgs(t, 100), QR_ENOSPACE);
    assert_int_equal(qr_store_txn_commit(t), QR_ESTORE);
    assert_true(qr_store_failed(s));
    assert_int_equal(qr_store_txn_begin(s, true, &t), QR_ESTORE);
    assert_int_equal(qr_store_txn_begin(s, false, &t), QR_ESTORE);
    void *buf;
    size_t len;
    assert_int_equal(qr_store_snapshot(s, &buf, &len), QR_ESTORE);
    assert_int_equal(qr_store_sync(s), QR_ESTORE);
    assert_int_equal(qr_store_grow(s, 0), QR_ESTORE);
    qr_store_close(s);

    /* Nothing of the failed transaction reached the disk. */
    s = open_store(dir);
    struct collect c;
    list_msgs(s, QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED, NULL, 100, &c);
    assert_int_equal(c.n, 0);
    qr_store_close(s);
    remove_dir(dir);
}

/* Puts a QUEUED message of queue "q1" at FIFO position seq. */
static void put_queued(struct qr_store *s, const char *id, uint64_t seq)
{
    Qraft__Message *m = make_msg(id, QRAFT__MESSAGE_STATE__QUEUED, 1, 0);
    struct qr_store_txn *t = begin(s, true);
    m->queue_seq = seq;
    assert_int_equal(qr_store_msg_put(t, m), 0);
    assert_int_equal(qr_store_txn_commit(t), 0);
    free_msg(m);
}

static char *head_of(struct qr_store *s, const char *queue)
{
    char *id = NULL;
    struct qr_store_txn *t = begin(s, false);
    int rv = qr_store_queue_head(t, queue, &id);
    qr_store_txn_abort(t);
    assert_true(rv == 0 || rv == QR_ENOTFOUND);
    return id;
}

static int count_queues(void *arg, const Qraft__Queue *q)
{
    (void)q;
    (*(size_t *)arg)++;
    return 0;
}

/* qfifo follows QUEUED messages: the head is the lowest queue_seq, a
 * message leaving QUEUED leaves the FIFO, queued messages are in no other
 * index, and queues and the FIFO survive a snapshot. */
/* Workflow runs: history entries in order and apart from other runs',
 * waiters by event and by deadline, and the prune of ended runs by kind,
 * each with its history. */
static int count_step(void *arg, uint32_t seq, const Qraft__WorkflowStep *st)
{
    unsigned *n = arg;
    assert_int_equal(seq, *n);
    assert_string_equal(st->call_type, "step");
    (*n)++;
    return 0;
}

static int count_waiter(void *arg, const Qraft__Waiter *w)
{
    (void)w;
    (*(unsigned *)arg)++;
    return 0;
}

static void put_run(struct qr_store *s,
                    const char *id,
                    Qraft__WorkflowRunState state,
                    uint64_t ended_ms,
                    unsigned steps)
{
    struct qr_store_txn *t = begin(s, true);
    Qraft__WorkflowRun run = QRAFT__WORKFLOW_RUN__INIT;
    run.id = (char *)id;
    run.state = state;
    run.ended_ms = ended_ms;
    run.next_seq = steps;
    for (unsigned i = 0; i < steps; i++) {
        Qraft__WorkflowStep st = QRAFT__WORKFLOW_STEP__INIT;
        st.message_id = "msg_x";
        st.call_type = "step";
        assert_int_equal(qr_store_run_step_put(t, id, i, &st), 0);
    }
    assert_int_equal(qr_store_run_put(t, &run), 0);
    assert_int_equal(qr_store_txn_commit(t), 0);
}

static unsigned steps_of(struct qr_store *s, const char *id)
{
    unsigned n = 0;
    struct qr_store_txn *t = begin(s, false);
    assert_int_equal(qr_store_run_steps(t, id, 0, UINT32_MAX, count_step, &n),
                     0);
    qr_store_txn_abort(t);
    return n;
}

static void test_workflow_runs(void **state)
{
    struct fixture *f = *state;
    put_run(f->s, "wfr_a", QRAFT__WORKFLOW_RUN_STATE__RUN_SUCCESS, 100, 3);
    put_run(f->s, "wfr_a2", QRAFT__WORKFLOW_RUN_STATE__RUN_RUNNING, 0, 2);
    put_run(f->s, "wfr_f", QRAFT__WORKFLOW_RUN_STATE__RUN_FAILED, 50, 1);
    put_run(f->s, "wfr_b", QRAFT__WORKFLOW_RUN_STATE__RUN_CANCELED, 300, 1);
    /* wfr_a's entries end where wfr_a2's begin. */
    assert_int_equal(steps_of(f->s, "wfr_a"), 3);
    assert_int_equal(steps_of(f->s, "wfr_a2"), 2);

    struct qr_store_txn *t = begin(f->s, true);
    Qraft__Waiter w = QRAFT__WAITER__INIT;
    w.event_id = "ev";
    w.run_id = "wfr_a2";
    w.deadline_ms = 500;
    assert_int_equal(qr_store_waiter_put(t, &w), 0);
    w.run_id = "wfr_b";
    w.deadline_ms = 200;
    assert_int_equal(qr_store_waiter_put(t, &w), 0);
    w.deadline_ms = 900; /* replaces its first wait, and that one's index */
    assert_int_equal(qr_store_waiter_put(t, &w), 0);
    unsigned n = 0;
    uint64_t next = 0;
    assert_int_equal(qr_store_waiter_list(t, "ev", 10, count_waiter, &n), 0);
    assert_int_equal(n, 2);
    n = 0;
    assert_int_equal(qr_store_waiter_due(t, 600, 10, count_waiter, &n, &next),
                     0);
    assert_int_equal(n, 1);
    assert_int_equal(next, 900);
    assert_int_equal(qr_store_waiter_delete(t, "ev", "wfr_a2"), 0);
    assert_int_equal(qr_store_waiter_delete(t, "ev", "wfr_a2"), 0);
    n = 0;
    assert_int_equal(qr_store_waiter_due(t, 600, 10, count_waiter, &n, &next),
                     0);
    assert_int_equal(n, 0);

    /* Finished and cancelled runs that ended before 200; failed ones apart. */
    size_t pruned = 0;
    assert_int_equal(qr_store_run_prune(t, false, 200, 10, &pruned), 0);
    assert_int_equal(pruned, 1);
    assert_int_equal(qr_store_run_prune(t, true, 40, 10, &pruned), 0);
    assert_int_equal(pruned, 0);
    assert_int_equal(qr_store_run_prune(t, true, 60, 10, &pruned), 0);
    assert_int_equal(pruned, 1);
    assert_int_equal(qr_store_txn_commit(t), 0);
    assert_int_equal(steps_of(f->s, "wfr_a"), 0);
    assert_int_equal(steps_of(f->s, "wfr_a2"), 2);

    /* A run resumed after its end is no longer an ended one. */
    put_run(f->s, "wfr_b", QRAFT__WORKFLOW_RUN_STATE__RUN_RUNNING, 0, 1);
    t = begin(f->s, true);
    assert_int_equal(qr_store_run_prune(t, false, 1000, 10, &pruned), 0);
    assert_int_equal(pruned, 0);
    Qraft__WorkflowRun *run = NULL;
    assert_int_equal(qr_store_run_get(t, "wfr_b", &run), 0);
    qraft__workflow_run__free_unpacked(run, NULL);
    assert_int_equal(qr_store_run_get(t, "wfr_a", &run), QR_ENOTFOUND);
    qr_store_txn_abort(t);
}

static void test_queues_and_fifo(void **state)
{
    struct fixture *f = *state;
    uint64_t counts[QR_STORE_N_STATES];
    char *id;

    put_queued(f->s, "msg_b", 7);
    put_queued(f->s, "msg_a", 9);
    put_queued(f->s, "msg_c", 8);
    id = head_of(f->s, "q1");
    assert_string_equal(id, "msg_b");
    free(id);
    assert_null(head_of(f->s, "q")); /* a prefix of q1: another queue */
    assert_null(head_of(f->s, "q10"));
    get_counts(f->s, counts);
    assert_int_equal(counts[QRAFT__MESSAGE_STATE__QUEUED], 3);
    struct collect c;
    scan_due(f->s, 1, UINT64_MAX, &c);
    assert_ids(&c, (const char *[]){NULL});

    put_msg(f->s, "msg_b", QRAFT__MESSAGE_STATE__PENDING, 1, 5, 0);
    id = head_of(f->s, "q1");
    assert_string_equal(id, "msg_c");
    free(id);
    get_counts(f->s, counts);
    assert_int_equal(counts[QRAFT__MESSAGE_STATE__QUEUED], 2);

    Qraft__Queue q = QRAFT__QUEUE__INIT;
    q.name = "q1";
    q.parallelism = 1;
    q.active = 1;
    q.waiting = 2;
    q.next_seq = 10;
    struct qr_store_txn *t = begin(f->s, true);
    assert_int_equal(qr_store_queue_put(t, &q), 0);
    q.name = "q2";
    assert_int_equal(qr_store_queue_put(t, &q), 0);
    assert_int_equal(qr_store_queue_delete(t, "q2"), 0);
    assert_int_equal(qr_store_queue_delete(t, "q2"), 0);
    assert_int_equal(qr_store_txn_commit(t), 0);

    void *buf;
    size_t len;
    char dir[64];
    snapshot(f->s, &buf, &len);
    make_dir(dir, sizeof dir);
    struct qr_store *dst = open_store(dir);
    assert_int_equal(qr_store_restore(dst, buf, len), 0);
    free(buf);
    id = head_of(dst, "q1");
    assert_string_equal(id, "msg_c");
    free(id);
    Qraft__Queue *got = NULL;
    size_t n = 0;
    t = begin(dst, false);
    assert_int_equal(qr_store_queue_get(t, "q1", &got), 0);
    assert_int_equal(qr_store_queue_get(t, "q2", &(Qraft__Queue *){NULL}),
                     QR_ENOTFOUND);
    assert_int_equal(qr_store_queue_list(t, NULL, 100, count_queues, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(qr_store_queue_count(t, &n), 0);
    assert_int_equal(n, 1);
    qr_store_txn_abort(t);
    assert_int_equal(got->next_seq, 10);
    assert_int_equal(got->waiting, 2);
    qraft__queue__free_unpacked(got, NULL);
    qr_store_close(dst);
    remove_dir(dir);
}

static void put_group(struct qr_store *s, const char *name, const char *url)
{
    Qraft__UrlGroupEndpoint ep = QRAFT__URL_GROUP_ENDPOINT__INIT;
    Qraft__UrlGroupEndpoint *eps[1] = {&ep};
    Qraft__UrlGroup g = QRAFT__URL_GROUP__INIT;
    ep.url = (char *)url;
    g.name = (char *)name;
    g.created_ms = 10;
    g.updated_ms = 20;
    g.endpoints = eps;
    g.n_endpoints = 1;
    struct qr_store_txn *t = begin(s, true);
    assert_int_equal(qr_store_group_put(t, &g), 0);
    assert_int_equal(qr_store_txn_commit(t), 0);
}

struct group_names {
    char names[8][32];
    size_t n;
};

static int on_group(void *arg, const Qraft__UrlGroup *g)
{
    struct group_names *gn = arg;
    assert_true(gn->n < 8);
    snprintf(gn->names[gn->n++], sizeof gn->names[0], "%s", g->name);
    return 0;
}

/* URL groups: put replaces, list is by name, delete of a missing group is
 * NOT_FOUND, and a snapshot carries them. */
static void test_groups(void **state)
{
    struct fixture *f = *state;
    struct qr_store_txn *t;
    Qraft__UrlGroup *g = NULL;
    struct group_names gn = {0};

    put_group(f->s, "beta", "http://h/b");
    put_group(f->s, "alpha", "http://h/a");
    put_group(f->s, "beta", "http://h/b2");
    t = begin(f->s, false);
    assert_int_equal(qr_store_group_get(t, "beta", &g), 0);
    assert_string_equal(g->endpoints[0]->url, "http://h/b2");
    assert_int_equal(g->created_ms, 10);
    qraft__url_group__free_unpacked(g, NULL);
    assert_int_equal(qr_store_group_get(t, "gamma", &g), QR_ENOTFOUND);
    assert_null(g);
    assert_int_equal(qr_store_group_list(t, on_group, &gn), 0);
    assert_int_equal(gn.n, 2);
    assert_string_equal(gn.names[0], "alpha");
    assert_string_equal(gn.names[1], "beta");
    assert_int_equal(qr_store_group_delete(t, "alpha"), QR_EBADREQ);
    qr_store_txn_abort(t);

    void *buf;
    size_t len;
    snapshot(f->s, &buf, &len);
    t = begin(f->s, true);
    assert_int_equal(qr_store_group_delete(t, "alpha"), 0);
    assert_int_equal(qr_store_group_delete(t, "alpha"), QR_ENOTFOUND);
    assert_int_equal(qr_store_txn_commit(t), 0);
    assert_false(qr_store_failed(f->s));

    assert_int_equal(qr_store_restore(f->s, buf, len), 0);
    free(buf);
    t = begin(f->s, false);
    assert_int_equal(qr_store_group_get(t, "alpha", &g), 0);
    assert_string_equal(g->endpoints[0]->url, "http://h/a");
    qraft__url_group__free_unpacked(g, NULL);
    qr_store_txn_abort(t);
}

struct listed_runs {
    char ids[8][32];
    size_t n;
    size_t stop_after; /* 0: never stop */
};

static int on_run(void *arg, const Qraft__WorkflowRun *run)
{
    struct listed_runs *r = arg;
    assert_true(r->n < 8);
    snprintf(r->ids[r->n++], sizeof r->ids[0], "%s", run->id);
    return r->stop_after != 0 && r->n == r->stop_after ? 7 : 0;
}

/* Workflow runs are listed by id after a cursor, at most limit, and a
 * callback's nonzero return stops the walk; their histories (another
 * database) do not show. */
static void test_run_list(void **state)
{
    struct fixture *f = *state;
    put_run(f->s, "wfr_b", QRAFT__WORKFLOW_RUN_STATE__RUN_RUNNING, 0, 3);
    put_run(f->s, "wfr_a", QRAFT__WORKFLOW_RUN_STATE__RUN_RUNNING, 0, 1);
    put_run(f->s, "wfr_c", QRAFT__WORKFLOW_RUN_STATE__RUN_RUNNING, 0, 0);
    struct qr_store_txn *t = begin(f->s, false);
    struct listed_runs all = {0};
    assert_int_equal(qr_store_run_list(t, NULL, SIZE_MAX, on_run, &all), 0);
    assert_int_equal(all.n, 3);
    assert_string_equal(all.ids[0], "wfr_a");
    assert_string_equal(all.ids[1], "wfr_b");
    assert_string_equal(all.ids[2], "wfr_c");
    struct listed_runs after = {0};
    assert_int_equal(qr_store_run_list(t, "wfr_a", 1, on_run, &after), 0);
    assert_int_equal(after.n, 1);
    assert_string_equal(after.ids[0], "wfr_b");
    struct listed_runs past = {0};
    assert_int_equal(qr_store_run_list(t, "wfr_bz", 10, on_run, &past), 0);
    assert_int_equal(past.n, 1);
    assert_string_equal(past.ids[0], "wfr_c");
    struct listed_runs stopped = {.stop_after = 2};
    assert_int_equal(qr_store_run_list(t, "", 10, on_run, &stopped), 7);
    assert_int_equal(stopped.n, 2);
    struct listed_runs none = {0};
    assert_int_equal(qr_store_run_list(t, NULL, 0, on_run, &none), 0);
    assert_int_equal(none.n, 0);
    qr_store_txn_abort(t);
}

/* Queues, schedules and URL groups keep store.c's error rules: a value that
 * does not decode is QR_ECORRUPT for get and list, named in errmsg; reads
 * leave the store working, meeting one inside a write transaction fails it.
 * A delete of a missing queue is fine, of a missing schedule NOT_FOUND. */
static void test_corrupt_records(void **state)
{
    struct fixture *f = *state;
    struct wbuf b;
    Qraft__Queue *q = NULL;
    Qraft__Schedule *sc = NULL;
    Qraft__UrlGroup *g = NULL;
    struct group_names gn = {0};
    struct collect c = {0};
    size_t n = 0;

    w_header(&b, 3);
    w_db(&b, "queues", 1);
    w_pair(&b, "q", 1, "\xff\xff\xff\xff", 4);
    w_db(&b, "schedules", 1);
    w_pair(&b, "s", 1, "\xff\xff\xff\xff", 4);
    w_db(&b, "groups", 1);
    w_pair(&b, "g", 1, "\xff\xff\xff\xff", 4);
    assert_int_equal(qr_store_restore(f->s, b.data, b.len), 0);

    struct qr_store_txn *t = begin(f->s, false);
    assert_int_equal(qr_store_queue_get(t, "q", &q), QR_ECORRUPT);
    assert_null(q);
    assert_non_null(strstr(qr_store_errmsg(f->s), "get queues"));
    assert_non_null(strstr(qr_store_errmsg(f->s), "queue does not decode"));
    assert_int_equal(qr_store_queue_list(t, NULL, 10, count_queues, &n),
                     QR_ECORRUPT);
    assert_int_equal(qr_store_schedule_get(t, "s", &sc), QR_ECORRUPT);
    assert_null(sc);
    assert_non_null(strstr(qr_store_errmsg(f->s), "schedule does not decode"));
    assert_int_equal(qr_store_schedule_list(t, collect_schedule_id, &c),
                     QR_ECORRUPT);
    assert_int_equal(qr_store_group_get(t, "g", &g), QR_ECORRUPT);
    assert_null(g);
    assert_int_equal(qr_store_group_list(t, on_group, &gn), QR_ECORRUPT);
    assert_non_null(strstr(qr_store_errmsg(f->s), "list groups"));
    assert_int_equal(n, 0);
    assert_int_equal(c.n, 0);
    assert_int_equal(gn.n, 0);
    qr_store_txn_abort(t);
    assert_false(qr_store_failed(f->s));

    t = begin(f->s, true);
    assert_int_equal(qr_store_queue_delete(t, "nothing"), 0);
    assert_int_equal(qr_store_schedule_delete(t, "nothing"), QR_ENOTFOUND);
    assert_false(qr_store_failed(f->s));
    assert_int_equal(qr_store_schedule_list(t, collect_schedule_id, &c),
                     QR_ECORRUPT);
    qr_store_txn_abort(t);
    assert_true(qr_store_failed(f->s));
}

/* ---------------------------------------------------------------------------
 * Checksums: bytes changed under the store, stores and snapshots written
 * before checksums (format 1). */

#define FLIP_URL "http://127.0.0.1:9/flip-me-0123456789abcdef"

/* Changes one byte (xor 0x20) at offset `at` of every occurrence of needle
 * in the file at path, as a stray write or a bad sector would; returns how
 * many occurrences it changed. */
static int flip_in_file(const char *path, const char *needle, size_t at)
{
    size_t n = strlen(needle);
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    long size = ftell(fp);
    assert_true(size > 0);
    uint8_t *buf = malloc((size_t)size);
    assert_non_null(buf);
    rewind(fp);
    assert_int_equal(fread(buf, 1, (size_t)size, fp), (size_t)size);
    int hits = 0;
    for (size_t off = 0; off + n <= (size_t)size; off++) {
        if (memcmp(buf + off, needle, n) == 0) {
            assert_int_equal(fseek(fp, (long)(off + at), SEEK_SET), 0);
            assert_int_equal(fputc(buf[off + at] ^ 0x20, fp),
                             buf[off + at] ^ 0x20);
            hits++;
        }
    }
    assert_int_equal(fclose(fp), 0);
    free(buf);
    return hits;
}

static void test_flipped_byte_is_corrupt(void **state)
{
    struct fixture *f = *state;
    Qraft__Message *m =
        make_msg("msg_flip", QRAFT__MESSAGE_STATE__PENDING, 3, 5000);
    Qraft__Message *got = NULL;
    struct qr_store_txn *t;
    struct collect c;
    char path[96];

    m->url = FLIP_URL;
    t = begin(f->s, true);
    assert_int_equal(qr_store_msg_put(t, m), 0);
    assert_int_equal(qr_store_txn_commit(t), 0);
    put_msg(f->s, "msg_ok", QRAFT__MESSAGE_STATE__PENDING, 3, 6000, 0);
    qr_store_close(f->s);
    f->s = NULL;
    snprintf(path, sizeof path, "%s/data.mdb", f->dir);
    assert_true(flip_in_file(path, FLIP_URL, strlen(FLIP_URL) - 4) >= 1);

    f->s = open_store(f->dir);
    assert_int_equal(qr_store_corrupt_count(f->s), 0);
    assert_null(qr_store_corrupt_first(f->s));
    t = begin(f->s, false);
    /* The changed URL is never handed out: the read names the key. */
    assert_int_equal(qr_store_msg_get(t, "msg_flip", &got), QR_ECORRUPT);
    assert_null(got);
    const char *e = qr_store_errmsg(f->s);
    assert_non_null(strstr(e, "corrupt record in msgs at key \"msg_flip\""));
    assert_non_null(strstr(e, "checksum mismatch"));
    assert_non_null(strstr(e, "rebuild-from-peers"));
    /* Sound records around it still read. */
    assert_int_equal(qr_store_msg_get(t, "msg_ok", &got), 0);
    assert_string_equal(got->url, "http://127.0.0.1:9/hook");
    qraft__message__free_unpacked(got, NULL);
    /* Walks stop at it; none hands it out. */
    memset(&c, 0, sizeof c);
    assert_int_equal(
        qr_store_msg_list(t, QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED, NULL, 10,
                          on_msg, &c),
        QR_ECORRUPT);
    assert_int_equal(qr_store_due_scan(t, 3, 10000, 10, on_msg, &c),
                     QR_ECORRUPT);
    assert_int_equal(c.n, 0);
    qr_store_txn_abort(t);

    /* A read fails nothing, but the store counts what it met. */
    assert_false(qr_store_failed(f->s));
    assert_int_equal(qr_store_corrupt_count(f->s), 3);
    assert_non_null(qr_store_corrupt_first(f->s));
    assert_non_null(strstr(qr_store_corrupt_first(f->s), "\"msg_flip\""));

    /* A write that meets it fails the store: apply stops, never builds on
     * a record this replica alone has wrong. */
    t = begin(f->s, true);
    m->state = QRAFT__MESSAGE_STATE__DELIVERED;
    assert_int_equal(qr_store_msg_put(t, m), QR_ECORRUPT);
    assert_true(qr_store_failed(f->s));
    qr_store_txn_abort(t);
    free_msg(m);
}

/* A key that is not printable is shown escaped. */
static void test_corrupt_key_escaped(void **state)
{
    struct fixture *f = *state;
    struct qr_store_txn *t = begin(f->s, true);
    const char name[] = "grp\x01\"flip-me-group-0123456789";
    Qraft__UrlGroup g = QRAFT__URL_GROUP__INIT;
    struct group_names gn = {.n = 0};
    char path[96];

    g.name = (char *)name;
    assert_int_equal(qr_store_group_put(t, &g), 0);
    assert_int_equal(qr_store_txn_commit(t), 0);
    qr_store_close(f->s);
    f->s = NULL;
    snprintf(path, sizeof path, "%s/data.mdb", f->dir);
    /* The name is both the key and, in the value, the group's name. */
    assert_true(flip_in_file(path, "flip-me-group", 2) >= 1);

    f->s = open_store(f->dir);
    t = begin(f->s, false);
    assert_int_equal(qr_store_group_list(t, on_group, &gn), QR_ECORRUPT);
    qr_store_txn_abort(t);
    assert_int_equal(gn.n, 0);
    assert_non_null(strstr(qr_store_errmsg(f->s),
                           "in groups at key \"grp\\x01\\x22flIp-me-group"));
}

/* A long key is shown cut short, and errmsg still says what to do. */
static void test_corrupt_long_key_cut(void **state)
{
    struct fixture *f = *state;
    struct qr_store_txn *t = begin(f->s, true);
    char name[300];
    Qraft__UrlGroup g = QRAFT__URL_GROUP__INIT;
    Qraft__UrlGroup *got = NULL;
    char path[96];

    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    memcpy(name + 200, "flip-me-long", 12);
    g.name = name;
    assert_int_equal(qr_store_group_put(t, &g), 0);
    assert_int_equal(qr_store_txn_commit(t), 0);
    qr_store_close(f->s);
    f->s = NULL;
    snprintf(path, sizeof path, "%s/data.mdb", f->dir);
    assert_true(flip_in_file(path, "flip-me-long", 0) >= 1);

    f->s = open_store(f->dir);
    t = begin(f->s, false);
    name[200] ^= 0x20; /* the key as it is now */
    assert_int_equal(qr_store_group_get(t, name, &got), QR_ECORRUPT);
    assert_null(got);
    qr_store_txn_abort(t);
    const char *e = qr_store_errmsg(f->s);
    assert_non_null(strstr(e, "in groups at key \"nnnnnnnn"));
    assert_non_null(strstr(e, "nnn...\" (get groups: checksum mismatch)"));
    assert_non_null(strstr(e, "rebuild-from-peers"));
}

/* Writes v big-endian into 8 bytes at p. */
static void be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

#define N_OLD_DELIVERED 3000

/* A store as qraft wrote it before checksums (format 1), made with LMDB
 * directly: one PENDING message, its due key and its counter, and enough
 * DELIVERED ones ("msg_x0000"...) to span many pages. */
static void write_format1_store(const char *dir, Qraft__Message *m)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta, msgs, due;
    uint8_t one[8];
    uint8_t key[10 + 64];
    size_t id_len = strlen(m->id);

    be64(one, 1);
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
    assert_int_equal(mdb_env_set_mapsize(env, MAP_BYTES), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", MDB_CREATE, &meta), 0);
    assert_int_equal(mdb_dbi_open(txn, "msgs", MDB_CREATE, &msgs), 0);
    assert_int_equal(mdb_dbi_open(txn, "due", MDB_CREATE, &due), 0);

    MDB_val k = {6, "format"};
    MDB_val v = {8, one};
    assert_int_equal(mdb_put(txn, meta, &k, &v, 0), 0);
    k = (MDB_val){7, "count.1"};
    assert_int_equal(mdb_put(txn, meta, &k, &v, 0), 0);
    uint8_t n_delivered[8];
    be64(n_delivered, N_OLD_DELIVERED);
    k = (MDB_val){7, "count.4"};
    v = (MDB_val){8, n_delivered};
    assert_int_equal(mdb_put(txn, meta, &k, &v, 0), 0);

    /* Packed sizes vary with the id's digits: values of several sizes. */
    char *id = m->id;
    Qraft__MessageState state = m->state;
    m->state = QRAFT__MESSAGE_STATE__DELIVERED;
    for (int i = 0; i < N_OLD_DELIVERED; i++) {
        char xid[16];
        uint8_t xbuf[512];
        snprintf(xid, sizeof xid, "msg_x%04d", i);
        m->id = xid;
        m->attempts = (uint32_t)i * 1000;
        size_t xlen = protobuf_c_message_get_packed_size(&m->base);
        assert_true(xlen <= sizeof xbuf);
        protobuf_c_message_pack(&m->base, xbuf);
        k = (MDB_val){strlen(xid), xid};
        v = (MDB_val){xlen, xbuf};
        assert_int_equal(mdb_put(txn, msgs, &k, &v, 0), 0);
    }
    m->id = id;
    m->state = state;
    m->attempts = 2;

    size_t len = protobuf_c_message_get_packed_size(&m->base);
    uint8_t *packed = malloc(len);
    assert_non_null(packed);
    protobuf_c_message_pack(&m->base, packed);
    k = (MDB_val){id_len, m->id};
    v = (MDB_val){len, packed};
    assert_int_equal(mdb_put(txn, msgs, &k, &v, 0), 0);
    free(packed);

    assert_true(id_len <= 64);
    key[0] = (uint8_t)(m->shard >> 8);
    key[1] = (uint8_t)m->shard;
    be64(key + 2, m->next_attempt_ms);
    memcpy(key + 10, m->id, id_len);
    k = (MDB_val){10 + id_len, key};
    v = (MDB_val){0, NULL};
    assert_int_equal(mdb_put(txn, due, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static int count_msg(void *arg, const Qraft__Message *m)
{
    struct collect *c = arg;
    char want[16];
    snprintf(want, sizeof want, "msg_x%04zu", c->n);
    assert_string_equal(m->id, want);
    assert_int_equal(m->attempts, c->n * 1000);
    c->n++;
    return 0;
}

/* msg_old reads, and so do n_delivered "msg_x" messages. */
static void assert_old_message_readable(struct qr_store *s, size_t n_delivered)
{
    struct qr_store_txn *t = begin(s, false);
    Qraft__Message *got;
    uint64_t counts[QR_STORE_N_STATES];
    uint64_t v;

    assert_int_equal(qr_store_meta_get_u64(t, QR_META_FORMAT, &v), 0);
    assert_int_equal(v, 3);
    assert_int_equal(qr_store_msg_get(t, "msg_old", &got), 0);
    assert_string_equal(got->url, "http://127.0.0.1:9/hook");
    qraft__message__free_unpacked(got, NULL);
    assert_int_equal(qr_store_count_states(t, counts), 0);
    assert_int_equal(counts[QRAFT__MESSAGE_STATE__PENDING], 1);
    assert_int_equal(counts[QRAFT__MESSAGE_STATE__DELIVERED], n_delivered);
    struct collect all;
    memset(&all, 0, sizeof all);
    assert_int_equal(qr_store_msg_list(t, QRAFT__MESSAGE_STATE__DELIVERED, NULL,
                                       SIZE_MAX, count_msg, &all),
                     0);
    assert_int_equal(all.n, n_delivered);
    /* Format 3: the finished ones are in the `done` index. */
    memset(&all, 0, sizeof all);
    assert_int_equal(qr_store_done_list(t, SIZE_MAX, count_msg, &all), 0);
    assert_int_equal(all.n, n_delivered);
    qr_store_txn_abort(t);

    struct collect c;
    scan_due(s, 2, 7000, &c);
    assert_ids(&c, (const char *[]){"msg_old", NULL});
    assert_int_equal(qr_store_corrupt_count(s), 0);
}

static void test_open_format1_adds_checksums(void **state)
{
    char dir[64];
    struct qr_store *s;
    Qraft__Message *m =
        make_msg("msg_old", QRAFT__MESSAGE_STATE__PENDING, 2, 7000);
    (void)state;

    make_dir(dir, sizeof dir);
    write_format1_store(dir, m);
    s = open_store(dir);
    assert_old_message_readable(s, N_OLD_DELIVERED);
    /* And it is an ordinary store from then on: writes, reopen. */
    struct qr_store_txn *t = begin(s, true);
    m->state = QRAFT__MESSAGE_STATE__DELIVERED;
    assert_int_equal(qr_store_msg_put(t, m), 0);
    assert_int_equal(qr_store_txn_commit(t), 0);
    qr_store_close(s);
    s = open_store(dir);
    t = begin(s, false);
    Qraft__Message *got;
    assert_int_equal(qr_store_msg_get(t, "msg_old", &got), 0);
    assert_int_equal(got->state, QRAFT__MESSAGE_STATE__DELIVERED);
    qraft__message__free_unpacked(got, NULL);
    qr_store_txn_abort(t);
    qr_store_close(s);
    free_msg(m);
    remove_dir(dir);
}

/* A snapshot of a format 1 store (sent by a node that does not have
 * checksums yet) restores, and its values gain their checksums. */
static void test_restore_format1_snapshot(void **state)
{
    struct fixture *f = *state;
    Qraft__Message *m =
        make_msg("msg_old", QRAFT__MESSAGE_STATE__PENDING, 2, 7000);
    struct wbuf b;
    uint8_t one[8];
    uint8_t key[10 + 7];

    be64(one, 1);
    w_header(&b, 3);
    w_db(&b, "meta", 2);
    w_pair(&b, "count.1", 7, one, 8);
    w_pair(&b, "format", 6, one, 8);
    w_db(&b, "msgs", 1);
    size_t len = protobuf_c_message_get_packed_size(&m->base);
    uint8_t *packed = malloc(len);
    assert_non_null(packed);
    protobuf_c_message_pack(&m->base, packed);
    w_pair(&b, "msg_old", 7, packed, len);
    free(packed);
    w_db(&b, "due", 1);
    key[0] = 0;
    key[1] = 2;
    be64(key + 2, 7000);
    memcpy(key + 10, "msg_old", 7);
    w_pair(&b, key, sizeof key, "", 0);
    assert_int_equal(qr_store_restore(f->s, b.data, b.len), 0);
    assert_old_message_readable(f->s, 0);

    /* Its snapshot is format 2 now, and restores as one. */
    void *snap;
    size_t snap_len;
    snapshot(f->s, &snap, &snap_len);
    assert_int_equal(qr_store_restore(f->s, snap, snap_len), 0);
    assert_old_message_readable(f->s, 0);
    free(snap);
    free_msg(m);
}

/* Restore checks every value of a format 2 snapshot before it touches
 * anything: a snapshot carrying a changed byte is refused, naming it. */
static void test_restore_checks_checksums(void **state)
{
    struct fixture *f = *state;
    Qraft__Message *m =
        make_msg("msg_flip", QRAFT__MESSAGE_STATE__PENDING, 3, 5000);
    struct qr_store_txn *t;
    void *before;
    size_t before_len;

    m->url = FLIP_URL;
    t = begin(f->s, true);
    assert_int_equal(qr_store_msg_put(t, m), 0);
    assert_int_equal(qr_store_txn_commit(t), 0);
    free_msg(m);
    snapshot(f->s, &before, &before_len);

    uint8_t *bad = malloc(before_len);
    assert_non_null(bad);
    memcpy(bad, before, before_len);
    uint8_t *at = memmem(bad, before_len, FLIP_URL, strlen(FLIP_URL));
    assert_non_null(at);
    at[10] ^= 0x01;
    assert_restore_refused(f->s, bad, before_len, before, before_len);
    assert_non_null(strstr(qr_store_errmsg(f->s),
                           "corrupt record in msgs at key \"msg_flip\""));
    free(bad);
    assert_int_equal(qr_store_restore(f->s, before, before_len), 0);
    free(before);
}

/* `done` holds one key per DELIVERED or CANCELLED message, at its
 * updated_ms, and follows the record through every write. */
static void test_done_index(void **state)
{
    struct fixture *f = *state;
    struct collect c;

    put_msg_at(f->s, "msg_a", QRAFT__MESSAGE_STATE__PENDING, 100);
    put_msg_at(f->s, "msg_b", QRAFT__MESSAGE_STATE__PENDING, 100);
    put_msg_at(f->s, "msg_c", QRAFT__MESSAGE_STATE__PENDING, 100);
    list_done(f->s, 100, &c);
    assert_int_equal(c.n, 0);

    /* Delivered, cancelled: indexed at the time they were finished, oldest
     * first (not in id order). */
    put_msg_at(f->s, "msg_c", QRAFT__MESSAGE_STATE__DELIVERING, 200);
    put_msg_at(f->s, "msg_c", QRAFT__MESSAGE_STATE__DELIVERED, 300);
    put_msg_at(f->s, "msg_a", QRAFT__MESSAGE_STATE__CANCELLED, 400);
    put_msg_at(f->s, "msg_b", QRAFT__MESSAGE_STATE__DEAD_LETTERED, 250);
    list_done(f->s, 100, &c);
    assert_ids(&c, (const char *[]){"msg_c", "msg_a", NULL});
    list_done(f->s, 1, &c);
    assert_ids(&c, (const char *[]){"msg_c", NULL});

    /* A finished record written again moves its one key; a replay out of
     * the DLQ and its delivery adds one. */
    put_msg_at(f->s, "msg_c", QRAFT__MESSAGE_STATE__DELIVERED, 500);
    put_msg_at(f->s, "msg_b", QRAFT__MESSAGE_STATE__PENDING, 600);
    list_done(f->s, 100, &c);
    assert_ids(&c, (const char *[]){"msg_a", "msg_c", NULL});
    put_msg_at(f->s, "msg_b", QRAFT__MESSAGE_STATE__DELIVERED, 700);
    list_done(f->s, 100, &c);
    assert_ids(&c, (const char *[]){"msg_a", "msg_c", "msg_b", NULL});

    /* Deleted: gone from the index. */
    delete_msg(f->s, "msg_c");
    list_done(f->s, 100, &c);
    assert_ids(&c, (const char *[]){"msg_a", "msg_b", NULL});

    /* And it survives a snapshot round trip (rebuilt by restore), from a
     * format 2 snapshot too (an older leader's: the same databases). */
    void *snap;
    size_t snap_len;
    snapshot(f->s, &snap, &snap_len);
    put_msg_at(f->s, "msg_z", QRAFT__MESSAGE_STATE__CANCELLED, 1);
    assert_int_equal(qr_store_restore(f->s, snap, snap_len), 0);
    list_done(f->s, 100, &c);
    assert_ids(&c, (const char *[]){"msg_a", "msg_b", NULL});
    /* meta "format" is stored as is (8 bytes, no checksum): patch it. */
    static const uint8_t three[14] = {'f', 'o', 'r', 'm', 'a', 't', 0,
                                      0,   0,   0,   0,   0,   0,   3};
    uint8_t *at = memmem(snap, snap_len, three, sizeof three);
    assert_non_null(at);
    at[13] = 2;
    put_msg_at(f->s, "msg_z", QRAFT__MESSAGE_STATE__CANCELLED, 1);
    assert_int_equal(qr_store_restore(f->s, snap, snap_len), 0);
    free(snap);
    list_done(f->s, 100, &c);
    assert_ids(&c, (const char *[]){"msg_a", "msg_b", NULL});
    struct qr_store_txn *t = begin(f->s, false);
    uint64_t format;
    assert_int_equal(qr_store_meta_get_u64(t, QR_META_FORMAT, &format), 0);
    assert_int_equal(format, 3);
    qr_store_txn_abort(t);
}

/* Pruning takes the oldest finished messages before the cutoff, at most
 * max, and nothing else: pending and dead-lettered ones stay. */
static void test_done_prune(void **state)
{
    struct fixture *f = *state;
    struct collect c;
    uint64_t counts[QR_STORE_N_STATES];

    put_msg_at(f->s, "msg_1", QRAFT__MESSAGE_STATE__DELIVERED, 40);
    put_msg_at(f->s, "msg_2", QRAFT__MESSAGE_STATE__CANCELLED, 10);
    put_msg_at(f->s, "msg_3", QRAFT__MESSAGE_STATE__DELIVERED, 30);
    put_msg_at(f->s, "msg_4", QRAFT__MESSAGE_STATE__PENDING, 1);
    put_msg_at(f->s, "msg_5", QRAFT__MESSAGE_STATE__DEAD_LETTERED, 1);
    put_msg_at(f->s, "msg_6", QRAFT__MESSAGE_STATE__DELIVERED, 50);

    assert_int_equal(prune_done(f->s, 100, 0), 0);
    assert_int_equal(prune_done(f->s, 10, 100), 0); /* strictly before */
    assert_int_equal(prune_done(f->s, 45, 2), 2);   /* max */
    list_done(f->s, 100, &c);
    assert_ids(&c, (const char *[]){"msg_1", "msg_6", NULL});
    assert_int_equal(prune_done(f->s, 45, 100), 1); /* cutoff */
    list_done(f->s, 100, &c);
    assert_ids(&c, (const char *[]){"msg_6", NULL});
    list_msgs(f->s, QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED, NULL, 100, &c);
    assert_ids(&c, (const char *[]){"msg_4", "msg_5", "msg_6", NULL});
    get_counts(f->s, counts);
    assert_int_equal(counts[QRAFT__MESSAGE_STATE__DELIVERED], 1);
    assert_int_equal(counts[QRAFT__MESSAGE_STATE__CANCELLED], 0);
    assert_int_equal(counts[QRAFT__MESSAGE_STATE__PENDING], 1);
    list_dlq(f->s, NULL, 100, &c);
    assert_ids(&c, (const char *[]){"msg_5", NULL});
    assert_int_equal(prune_done(f->s, UINT64_MAX, 100), 1);
    assert_int_equal(prune_done(f->s, UINT64_MAX, 100), 0);
}

/* A format 2 store (no `done` index) gets one when opened: every finished
 * message, whatever else is stored. With QR_TEST_DONE_N set, a store of
 * that many messages (a third pending) is migrated and timed. */
static void test_open_format2_builds_done_index(void **state)
{
    struct fixture *f = *state;
    const char *big = getenv("QR_TEST_DONE_N");
    size_t n = big != NULL ? strtoul(big, NULL, 10) : 300;
    struct collect c;
    Qraft__Message *m = make_msg("", QRAFT__MESSAGE_STATE__DELIVERED, 1, 0);
    char id[32];
    struct qr_store_txn *t = NULL;

    qr_store_close(f->s);
    char errmsg[QR_ERRMSG_BYTES];
    assert_int_equal(qr_store_open(f->dir, 64ull << 30, &f->s, errmsg), 0);
    for (size_t i = 0; i < n; i++) {
        if (t == NULL) {
            t = begin(f->s, true);
        }
        snprintf(id, sizeof id, "msg_%012zu", i);
        m->id = id;
        m->state = i % 3 == 0   ? QRAFT__MESSAGE_STATE__PENDING
                   : i % 3 == 1 ? QRAFT__MESSAGE_STATE__DELIVERED
                                : QRAFT__MESSAGE_STATE__CANCELLED;
        m->updated_ms = 1000000 - i; /* newest id finished first */
        assert_int_equal(qr_store_msg_put(t, m), 0);
        if (i % 10000 == 9999 || i + 1 == n) {
            assert_int_equal(qr_store_txn_commit(t), 0);
            t = NULL;
        }
    }
    m->id = "";
    free_msg(m);
    qr_store_close(f->s);
    f->s = NULL;

    /* Make it what a format 2 binary wrote: no `done`, format 2. */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    uint8_t two[8] = {0, 0, 0, 0, 0, 0, 0, 2};
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
    assert_int_equal(mdb_env_set_mapsize(env, 64ull << 30), 0);
    assert_int_equal(mdb_env_open(env, f->dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "done", 0, &dbi), 0);
    assert_int_equal(mdb_drop(txn, dbi, 1), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
    MDB_val k = {6, "format"};
    MDB_val v = {8, two};
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(qr_store_open(f->dir, 64ull << 30, &f->s, errmsg), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (big != NULL) {
        print_message("format 2 -> 3 of %zu messages: %.0f ms\n", n,
                      (double)(t1.tv_sec - t0.tv_sec) * 1e3 +
                          (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    }
    t = begin(f->s, false);
    uint64_t format;
    assert_int_equal(qr_store_meta_get_u64(t, QR_META_FORMAT, &format), 0);
    assert_int_equal(format, 3);
    qr_store_txn_abort(t);
    list_done(f->s, 2, &c);
    assert_int_equal(c.n, 2);
    /* All finished ones, no pending one, newest id first. */
    size_t n_finished = n - (n + 2) / 3;
    assert_int_equal(prune_done(f->s, UINT64_MAX, SIZE_MAX), n_finished);
    uint64_t counts[QR_STORE_N_STATES];
    get_counts(f->s, counts);
    assert_int_equal(counts[QRAFT__MESSAGE_STATE__PENDING], (n + 2) / 3);
    assert_int_equal(counts[QRAFT__MESSAGE_STATE__DELIVERED], 0);
    assert_int_equal(counts[QRAFT__MESSAGE_STATE__CANCELLED], 0);
}

/* A full Prune batch (10,000 finished messages among as many pending ones
 * of 1 KiB) is applied in well under the loop's budget: timed with
 * QR_TEST_DONE_N. */
static void test_done_prune_batch_time(void **state)
{
    struct fixture *f = *state;
    const char *big = getenv("QR_TEST_DONE_N");
    size_t n = big != NULL ? strtoul(big, NULL, 10) : 3000;
    const char *batch_env = getenv("QR_TEST_PRUNE_BATCH");
    size_t batch = batch_env != NULL ? strtoul(batch_env, NULL, 10) : 10000;
    if (batch > n / 3) {
        batch = n / 3;
    }
    Qraft__Message *m = make_msg("", QRAFT__MESSAGE_STATE__DELIVERED, 1, 0);
    struct qr_store_txn *t = NULL;
    char id[32];
    char errmsg[QR_ERRMSG_BYTES];

    qr_store_close(f->s);
    assert_int_equal(qr_store_open(f->dir, 64ull << 30, &f->s, errmsg), 0);
    static uint8_t body[1024];
    for (size_t i = 0; i < n; i++) {
        if (t == NULL) {
            t = begin(f->s, true);
        }
        snprintf(id, sizeof id, "msg_%012zu", i);
        m->id = id;
        m->state = i % 2 == 0 ? QRAFT__MESSAGE_STATE__PENDING
                              : QRAFT__MESSAGE_STATE__DELIVERED;
        /* Pending ones with a 1 KiB body, delivered ones without (as
         * delivery leaves them). */
        m->body.data = body;
        m->body.len = i % 2 == 0 ? sizeof body : 0;
        m->updated_ms = 1000 + i;
        assert_int_equal(qr_store_msg_put(t, m), 0);
        if (i % 10000 == 9999 || i + 1 == n) {
            assert_int_equal(qr_store_txn_commit(t), 0);
            t = NULL;
        }
    }
    m->id = "";
    free_msg(m);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t got = prune_done(f->s, UINT64_MAX, batch);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(got, batch);
    if (big != NULL) {
        print_message("prune of %zu finished among %zu messages: %.1f ms\n",
                      batch, n,
                      (double)(t1.tv_sec - t0.tv_sec) * 1e3 +
                          (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clean_stop_mark, setup, teardown),
        cmocka_unit_test(test_open_missing_dir),
        cmocka_unit_test_setup_teardown(test_newer_format_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_meta, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msg_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_due_scan_skipping, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_due_scan_from, setup, teardown),
        cmocka_unit_test_setup_teardown(test_due_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dlq, setup, teardown),
        cmocka_unit_test_setup_teardown(test_counters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msg_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dedup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_schedules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_restore, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_buffers_stay_valid, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_image_restore, setup, teardown),
        cmocka_unit_test_setup_teardown(test_image_read_after_writes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_image_corrupt_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_image_refused_while_writing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_restore_rejects_malformed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_leaves_nothing, setup,
                                        teardown),
        cmocka_unit_test(test_map_full_then_grow),
        cmocka_unit_test(test_map_full_commit_fails_store),
        cmocka_unit_test_setup_teardown(test_restore_grows_the_map, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_space_counts_free_pages, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_event_scan_paging, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_dlq_list_at, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queues_and_fifo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_workflow_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_groups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flipped_byte_is_corrupt, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_key_escaped, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_long_key_cut, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_done_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_prune, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_format2_builds_done_index,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_prune_batch_time, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_flow_waitlist, setup, teardown),
        cmocka_unit_test(test_open_format1_adds_checksums),
        cmocka_unit_test_setup_teardown(test_restore_format1_snapshot, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_restore_checks_checksums, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
