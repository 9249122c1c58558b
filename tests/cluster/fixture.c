/* The cluster tests' shared harness; see fixture.h. */
#include "fixture.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/err.h"

static void quiet_emit(struct raft_tracer *t, int type, const void *info)
{
    (void)t;
    (void)type;
    (void)info;
}

static struct raft_tracer quiet_tracer = {.version = 2, .emit = quiet_emit};

static void on_applied(void *data,
                       uint64_t index,
                       const struct qr_apply_result *results,
                       size_t n)
{
    struct fixture_server *s = data;
    s->n_last = n < FIXTURE_MAX_RESULTS ? n : FIXTURE_MAX_RESULTS;
    memcpy(s->last, results, s->n_last * sizeof *results);
    if (s->n_applied < FIXTURE_MAX_APPLIED) {
        s->applied_indexes[s->n_applied++] = index;
    }
}

uint64_t fixture_map_bytes = 64ull << 20;

void fixture_server_open(struct fixture_server *s, const char *dir)
{
    if (dir == NULL) {
        snprintf(s->dir, sizeof s->dir, "/tmp/qraft-test-cluster-XXXXXX");
        assert_non_null(mkdtemp(s->dir));
    } else {
        snprintf(s->dir, sizeof s->dir, "%s", dir);
    }
    assert_int_equal(qr_store_open(s->dir, fixture_map_bytes, &s->store, NULL),
                     0);
    assert_int_equal(qr_fsm_init(&s->fsm, s->store), 0);
    s->fsm.on_applied = on_applied;
    s->fsm.on_applied_data = s;
    s->n_last = 0;
    s->n_applied = 0;
}

void fixture_server_close(struct fixture_server *s, bool remove_dir)
{
    qr_fsm_close(&s->fsm);
    qr_store_close(s->store);
    s->store = NULL;
    if (remove_dir) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", s->dir);
        assert_int_equal(system(cmd), 0);
    }
}

void fixture_start(struct fixture *f, unsigned n)
{
    struct raft_configuration conf;
    f->n = n;
    memset(&f->raft, 0, sizeof f->raft);
    assert_int_equal(raft_fixture_init(&f->raft), 0);
    for (unsigned i = 0; i < n; i++) {
        assert_int_equal(
            raft_fixture_grow(&f->raft, &f->servers[i].fsm.raft_fsm), 0);
        struct raft *r = raft_fixture_get(&f->raft, i);
        r->tracer = &quiet_tracer;
        f->servers[i].fsm.raft = r;
    }
    assert_int_equal(raft_fixture_configuration(&f->raft, n, &conf), 0);
    assert_int_equal(raft_fixture_bootstrap(&f->raft, &conf), 0);
    raft_configuration_close(&conf);
    assert_int_equal(raft_fixture_start(&f->raft), 0);
    if (n > 1) {
        raft_fixture_elect(&f->raft, 0);
    } else {
        assert_true(
            raft_fixture_step_until_has_leader(&f->raft, FIXTURE_STEP_MS));
    }
    assert_int_equal(raft_state(raft_fixture_get(&f->raft, 0)), RAFT_LEADER);
}

int fixture_setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    struct qr_config cfg;
    assert_non_null(f);
    qr_config_defaults(&cfg);
    f->limits = cfg.limits;
    f->leader = 0;
    f->next_seq = 1;
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        fixture_server_open(&f->servers[i], NULL);
    }
    fixture_start(f, FIXTURE_N_SERVERS);
    *state = f;
    return 0;
}

int fixture_teardown(void **state)
{
    struct fixture *f = *state;
    raft_fixture_close(&f->raft);
    for (unsigned i = 0; i < f->n; i++) {
        fixture_server_close(&f->servers[i], true);
    }
    free(f);
    return 0;
}

static void on_apply_done(struct raft_apply *req, int status, void *result)
{
    struct fixture_apply *c = req->data;
    (void)result;
    c->status = status;
    c->done = true;
}

struct fixture_apply *fixture_submit(struct fixture *f,
                                     unsigned at,
                                     struct qr_packed *cmds,
                                     size_t n,
                                     uint64_t now_ms)
{
    size_t size = qr_command_entry_size(now_ms, cmds, n);
    struct raft_buffer buf = {.base = raft_malloc(size), .len = size};
    assert_non_null(buf.base);
    qr_command_entry_write(now_ms, cmds, n, buf.base, size);
    for (size_t i = 0; i < n; i++) {
        free(cmds[i].data);
    }
    struct fixture_apply *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->req.data = c;
    struct raft *r = raft_fixture_get(&f->raft, at);
    assert_int_equal(raft_apply(r, &c->req, &buf, 1, on_apply_done), 0);
    return c;
}

uint64_t fixture_propose(struct fixture *f,
                         unsigned at,
                         struct qr_packed *cmds,
                         size_t n,
                         uint64_t now_ms,
                         unsigned until)
{
    struct fixture_apply *c = fixture_submit(f, at, cmds, n, now_ms);
    uint64_t index = c->req.index;
    assert_true(raft_fixture_step_until_applied(
        &f->raft, until, (raft_index)index, FIXTURE_STEP_MS));
    assert_true(c->done);
    assert_int_equal(c->status, 0);
    free(c);
    return index;
}

void fixture_partition(struct fixture *f, unsigned i, bool cut)
{
    for (unsigned j = 0; j < f->n; j++) {
        if (j == i) {
            continue;
        }
        if (cut) {
            raft_fixture_saturate(&f->raft, i, j);
            raft_fixture_saturate(&f->raft, j, i);
        } else {
            raft_fixture_desaturate(&f->raft, i, j);
            raft_fixture_desaturate(&f->raft, j, i);
        }
    }
}

Qraft__Message *fixture_msg_on(struct fixture_server *s, const char *id)
{
    struct qr_store_txn *txn;
    Qraft__Message *m = NULL;
    assert_int_equal(qr_store_txn_begin(s->store, false, &txn), 0);
    int rv = qr_store_msg_get(txn, id, &m);
    qr_store_txn_abort(txn);
    if (rv == QR_ENOTFOUND) {
        return NULL;
    }
    assert_int_equal(rv, 0);
    return m;
}

int fixture_state_on(struct fixture_server *s, const char *id)
{
    Qraft__Message *m = fixture_msg_on(s, id);
    if (m == NULL) {
        return -1;
    }
    int state = m->state;
    qraft__message__free_unpacked(m, NULL);
    return state;
}

int fixture_state_of(struct fixture *f, const char *id)
{
    int want = fixture_state_on(&f->servers[0], id);
    for (unsigned i = 1; i < f->n; i++) {
        assert_int_equal(fixture_state_on(&f->servers[i], id), want);
    }
    return want;
}

uint64_t fixture_count_on(struct fixture_server *s, Qraft__MessageState state)
{
    struct qr_store_txn *txn;
    uint64_t counts[QR_STORE_N_STATES];
    assert_int_equal(qr_store_txn_begin(s->store, false, &txn), 0);
    assert_int_equal(qr_store_count_states(txn, counts), 0);
    qr_store_txn_abort(txn);
    return counts[state];
}

struct qr_packed fixture_pack(Qraft__Command *cmd)
{
    struct qr_packed packed;
    assert_int_equal(qr_command_pack(cmd, &packed), 0);
    return packed;
}

struct qr_packed fixture_cancel_cmd(const char *id)
{
    Qraft__Cancel c = QRAFT__CANCEL__INIT;
    c.message_id = (char *)id;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_CANCEL;
    cmd.cancel = &c;
    return fixture_pack(&cmd);
}

struct qr_packed fixture_replay_cmd(const char *id)
{
    Qraft__DlqReplay r = QRAFT__DLQ_REPLAY__INIT;
    r.message_id = (char *)id;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_DLQ_REPLAY;
    cmd.dlq_replay = &r;
    return fixture_pack(&cmd);
}

struct qr_packed fixture_feature_level_cmd(uint32_t level)
{
    Qraft__SetFeatureLevel l = QRAFT__SET_FEATURE_LEVEL__INIT;
    l.level = level;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_SET_FEATURE_LEVEL;
    cmd.set_feature_level = &l;
    return fixture_pack(&cmd);
}
