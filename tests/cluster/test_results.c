/* Delivery results, the DLQ, callbacks, shard maps and housekeeping on
 * raft_fixture: three in-memory raft servers, each applying to its own LMDB
 * store. Deterministic: every entry carries the time the test stamps on it,
 * the fixture drives raft's time, nothing reads a clock.
 *
 * What a user relies on and these tests check on every replica: the first
 * committed result of an attempt wins and any other (a duplicate after a
 * re-send, a result for a cancelled, unknown or finished message, one from
 * the future) changes nothing; apply enforces the retry budget itself; the
 * DLQ replays and deletes; callbacks get the same ids everywhere; a shard map
 * never goes back in time; a result survives a leader change without being
 * applied twice; Prune removes exactly the dead letters past retention. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "fixture.h"
#include "lib/err.h"

#define MAX_RESULTS 4   /* results per DeliveryResults command built here */
#define MAX_CALLBACKS 8 /* callback messages collected per source */

#define URL "http://127.0.0.1:9/hook"
#define CALLBACK_URL "http://127.0.0.1:9/callback"
#define FAILURE_URL "http://127.0.0.1:9/failure"

/* What a worker would report for one attempt. Unset error fields get
 * defaults that fit the outcome. */
struct result_spec {
    const char *id;
    uint32_t attempt;
    uint32_t generation; /* replays of the message when the attempt was sent */
    Qraft__AttemptOutcome outcome;
    uint64_t delay_ms;
    const char *category;
    int32_t http_status;
    const char *hint;
};

/* ------------------------------------------------------------------------ */
/* Proposing. */

/* Proposes one entry on the leader and steps until server `until`
 * (FIXTURE_N_SERVERS = every server) has applied it. Returns its index. */
static uint64_t propose_until(struct fixture *f,
                              struct qr_packed *cmds,
                              size_t n,
                              uint64_t now_ms,
                              unsigned until)
{
    return fixture_propose(f, f->leader, cmds, n, now_ms, until);
}

static uint64_t propose(struct fixture *f, struct qr_packed cmd, uint64_t now)
{
    return propose_until(f, &cmd, 1, now, FIXTURE_N_SERVERS);
}

/* ------------------------------------------------------------------------ */
/* Commands. */

/* A publish of `req` (borrowed; url and body filled in when empty) under a
 * new id written to id_out. */
static struct qr_packed publish_cmd(struct fixture *f,
                                    Qraft__PublishRequest *req,
                                    char id_out[QR_ID_BYTES])
{
    struct qr_packed packed;
    if (req->url[0] == '\0') {
        req->url = URL;
    }
    if (req->body.len == 0) {
        req->body.data = (uint8_t *)"hello";
        req->body.len = 5;
    }
    qr_command_message_id(id_out, 1000000 + f->next_seq, 1, f->next_seq);
    f->next_seq++;
    assert_int_equal(qr_command_pack_publish(req, id_out, &f->limits, &packed),
                     0);
    return packed;
}

/* A publish due at once with max_retries = retries. */
static struct qr_packed publish_simple(struct fixture *f,
                                       uint32_t retries,
                                       char id_out[QR_ID_BYTES])
{
    Qraft__PublishRequest req = QRAFT__PUBLISH_REQUEST__INIT;
    req.retries = retries;
    req.retries_set = true;
    return publish_cmd(f, &req, id_out);
}

/* A DeliveryResults command of n results. */
static struct qr_packed results_cmd(struct fixture *f,
                                    const struct result_spec *specs,
                                    size_t n)
{
    Qraft__DeliveryResult r[MAX_RESULTS];
    Qraft__DeliveryResult *rp[MAX_RESULTS];
    Qraft__LastError e[MAX_RESULTS];
    Qraft__AttemptResponse resp[MAX_RESULTS];
    assert_true(n <= MAX_RESULTS);
    for (size_t i = 0; i < n; i++) {
        const struct result_spec *s = &specs[i];
        qraft__delivery_result__init(&r[i]);
        qraft__last_error__init(&e[i]);
        qraft__attempt_response__init(&resp[i]);
        r[i].message_id = (char *)s->id;
        r[i].attempt = s->attempt;
        r[i].generation = s->generation;
        r[i].outcome = s->outcome;
        r[i].retry_delay_ms = s->delay_ms;
        r[i].node_id = 1;
        r[i].response = &resp[i];
        resp[i].body.data = (uint8_t *)"busy";
        resp[i].body.len = 4;
        if (s->outcome == QRAFT__ATTEMPT_OUTCOME__OUTCOME_DELIVERED) {
            resp[i].status = 200;
        } else {
            bool dead = s->outcome == QRAFT__ATTEMPT_OUTCOME__OUTCOME_DEAD;
            e[i].category = (char *)(s->category != NULL ? s->category
                                     : dead              ? "client_error"
                                                         : "server_error");
            e[i].status = s->http_status != 0 ? s->http_status
                          : dead              ? 404
                                              : 503;
            e[i].message = "the destination said no";
            resp[i].status = e[i].status;
            r[i].error = &e[i];
            r[i].hint = (char *)(s->hint != NULL ? s->hint : "");
        }
        rp[i] = &r[i];
    }
    Qraft__DeliveryResults batch = QRAFT__DELIVERY_RESULTS__INIT;
    batch.n_results = n;
    batch.results = rp;
    batch.default_retries = f->limits.default_retries;
    batch.default_timeout_ms = f->limits.default_timeout_ms;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_DELIVERY_RESULTS;
    cmd.delivery_results = &batch;
    return fixture_pack(&cmd);
}

static struct qr_packed result_cmd(struct fixture *f,
                                   const char *id,
                                   uint32_t attempt,
                                   Qraft__AttemptOutcome outcome,
                                   uint64_t delay_ms)
{
    struct result_spec s = {
        .id = id, .attempt = attempt, .outcome = outcome, .delay_ms = delay_ms};
    return results_cmd(f, &s, 1);
}

static struct qr_packed delete_cmd(const char *id)
{
    Qraft__DlqDelete d = QRAFT__DLQ_DELETE__INIT;
    d.message_id = (char *)id;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_DLQ_DELETE;
    cmd.dlq_delete = &d;
    return fixture_pack(&cmd);
}

/* owners[shard] = owner for every shard, n_owners of them. */
static struct qr_packed assign_cmd(uint64_t epoch,
                                   uint64_t owner,
                                   size_t n_owners)
{
    uint64_t owners[QR_FSM_N_SHARDS + 1];
    assert_true(n_owners <= QR_FSM_N_SHARDS + 1);
    for (size_t i = 0; i < n_owners; i++) {
        owners[i] = owner;
    }
    Qraft__AssignShards a = QRAFT__ASSIGN_SHARDS__INIT;
    a.epoch = epoch;
    a.n_owners = n_owners;
    a.owners = owners;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_ASSIGN_SHARDS;
    cmd.assign_shards = &a;
    return fixture_pack(&cmd);
}

static struct qr_packed prune_cmd(uint64_t dlq_retention_ms, uint32_t max)
{
    Qraft__Prune p = QRAFT__PRUNE__INIT;
    p.dlq_retention_ms = dlq_retention_ms;
    p.max_items = max;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_PRUNE;
    cmd.prune = &p;
    return fixture_pack(&cmd);
}

static struct qr_packed node_info_cmd(uint64_t id, const char *rpc)
{
    Qraft__NodeInfo info = QRAFT__NODE_INFO__INIT;
    info.id = id;
    info.rpc = (char *)rpc;
    info.http = "127.0.0.1:8080";
    Qraft__SetNodeInfo s = QRAFT__SET_NODE_INFO__INIT;
    s.info = &info;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_SET_NODE_INFO;
    cmd.set_node_info = &s;
    return fixture_pack(&cmd);
}

static struct qr_packed keys_cmd(const char *current,
                                 const char *next,
                                 bool rotate)
{
    Qraft__SigningKeys k = QRAFT__SIGNING_KEYS__INIT;
    k.current = (char *)current;
    k.next = (char *)next;
    Qraft__SetSigningKeys s = QRAFT__SET_SIGNING_KEYS__INIT;
    s.keys = &k;
    s.rotate = rotate;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_SET_SIGNING_KEYS;
    cmd.set_signing_keys = &s;
    return fixture_pack(&cmd);
}

/* ------------------------------------------------------------------------ */
/* Reading a replica. */

/* Returns new (free with qraft__message__free_unpacked) or NULL if absent. */

static int count_event(void *arg, const Qraft__Event *e)
{
    (void)e;
    (*(size_t *)arg)++;
    return 0;
}

static size_t events_on(struct fixture_server *s, const char *id)
{
    struct qr_store_txn *txn;
    size_t n = 0;
    assert_int_equal(qr_store_txn_begin(s->store, false, &txn), 0);
    assert_int_equal(qr_store_event_list(txn, id, 1000, count_event, &n), 0);
    qr_store_txn_abort(txn);
    return n;
}

struct id_list {
    char ids[MAX_CALLBACKS][QR_ID_BYTES];
    size_t n;
    const char *source; /* callbacks: only those of this source */
};

static int collect_id(void *arg, const Qraft__Message *m)
{
    struct id_list *l = arg;
    if (l->source != NULL && strcmp(m->source_message_id, l->source) != 0) {
        return 0;
    }
    assert_true(l->n < MAX_CALLBACKS);
    snprintf(l->ids[l->n++], QR_ID_BYTES, "%s", m->id);
    return 0;
}

/* The DLQ, oldest first. */
static void dlq_on(struct fixture_server *s, struct id_list *out)
{
    struct qr_store_txn *txn;
    memset(out, 0, sizeof *out);
    assert_int_equal(qr_store_txn_begin(s->store, false, &txn), 0);
    assert_int_equal(qr_store_dlq_list(txn, NULL, 100, collect_id, out), 0);
    qr_store_txn_abort(txn);
}

/* The callback messages apply created for source, in id order. */
static void callbacks_on(struct fixture_server *s,
                         const char *source,
                         struct id_list *out)
{
    struct qr_store_txn *txn;
    memset(out, 0, sizeof *out);
    out->source = source;
    assert_int_equal(qr_store_txn_begin(s->store, false, &txn), 0);
    assert_int_equal(
        qr_store_msg_list(txn, QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED, NULL,
                          1000, collect_id, out),
        0);
    qr_store_txn_abort(txn);
}

struct due_count {
    const char *id;
    size_t n;
};

static int count_due(void *arg, const Qraft__Message *m)
{
    struct due_count *d = arg;
    d->n += strcmp(m->id, d->id) == 0;
    return 0;
}

/* 1 when message id is due by until_ms in its shard (the worker's view). */
static size_t due_on(struct fixture_server *s,
                     const char *id,
                     uint64_t until_ms)
{
    struct qr_store_txn *txn;
    struct due_count d = {.id = id};
    assert_int_equal(qr_store_txn_begin(s->store, false, &txn), 0);
    assert_int_equal(qr_store_due_scan(txn, qr_fsm_shard_of(id), until_ms, 1000,
                                       count_due, &d),
                     0);
    qr_store_txn_abort(txn);
    return d.n;
}

/* Returns new (free with free()) or NULL when absent. */
static void *meta_on(struct fixture_server *s, const char *name, size_t *len)
{
    struct qr_store_txn *txn;
    void *value = NULL;
    assert_int_equal(qr_store_txn_begin(s->store, false, &txn), 0);
    int rv = qr_store_meta_get(txn, name, &value, len);
    qr_store_txn_abort(txn);
    if (rv == QR_ENOTFOUND) {
        return NULL;
    }
    assert_int_equal(rv, 0);
    return value;
}

/* The stored shard map's epoch, 0 when none; checks every owner is `owner`
 * unless owner is 0. */
static uint64_t epoch_on(struct fixture_server *s, uint64_t owner)
{
    size_t len = 0;
    void *buf = meta_on(s, QR_META_SHARDS, &len);
    if (buf == NULL) {
        return 0;
    }
    Qraft__AssignShards *a = qraft__assign_shards__unpack(NULL, len, buf);
    free(buf);
    assert_non_null(a);
    assert_int_equal(a->n_owners, QR_FSM_N_SHARDS);
    for (size_t i = 0; owner != 0 && i < a->n_owners; i++) {
        assert_int_equal(a->owners[i], owner);
    }
    uint64_t epoch = a->epoch;
    qraft__assign_shards__free_unpacked(a, NULL);
    return epoch;
}

/* Outcome of command i of the last entry every replica applied: the same on
 * all of them. */
static int status_of(struct fixture *f, size_t i)
{
    for (unsigned k = 0; k < FIXTURE_N_SERVERS; k++) {
        assert_true(f->servers[k].n_last > i);
        assert_int_equal(f->servers[k].last[i].status,
                         f->servers[0].last[i].status);
    }
    return f->servers[0].last[i].status;
}

/* What every test checks of a message on one replica. */
static void expect_msg(struct fixture_server *s,
                       const char *id,
                       Qraft__MessageState state,
                       uint32_t attempts)
{
    Qraft__Message *m = fixture_msg_on(s, id);
    assert_non_null(m);
    assert_int_equal(m->state, state);
    assert_int_equal(m->attempts, attempts);
    qraft__message__free_unpacked(m, NULL);
}

/* ------------------------------------------------------------------------ */
/* Tests. */

/* The fence: the first committed result of attempt k wins; a duplicate for
 * the same attempt, and anything after the final state, change nothing. */
static void test_result_fencing(void **state)
{
    struct fixture *f = *state;
    char id[QR_ID_BYTES];
    propose(f, publish_simple(f, 3, id), 1000);

    propose(f,
            result_cmd(f, id, 0, QRAFT__ATTEMPT_OUTCOME__OUTCOME_RETRY, 1000),
            2000);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        struct fixture_server *s = &f->servers[i];
        Qraft__Message *m = fixture_msg_on(s, id);
        assert_non_null(m);
        assert_int_equal(m->state, QRAFT__MESSAGE_STATE__RETRYING);
        assert_int_equal(m->attempts, 1);
        assert_int_equal(m->next_attempt_ms, 2000 + 1000);
        assert_int_equal(m->updated_ms, 2000);
        assert_non_null(m->last_error);
        assert_string_equal(m->last_error->category, "server_error");
        assert_int_equal(m->last_error->status, 503);
        assert_non_null(m->last_response);
        assert_int_equal(m->last_response->status, 503);
        qraft__message__free_unpacked(m, NULL);
        /* The worker sees it due at its time, not before. */
        assert_int_equal(due_on(s, id, 2999), 0);
        assert_int_equal(due_on(s, id, 3000), 1);
        assert_int_equal(events_on(s, id), 2);
    }

    /* A re-sent attempt 0 reports again (here: delivered): stale. */
    propose(f,
            result_cmd(f, id, 0, QRAFT__ATTEMPT_OUTCOME__OUTCOME_DELIVERED, 0),
            2500);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        struct fixture_server *s = &f->servers[i];
        Qraft__Message *m = fixture_msg_on(s, id);
        assert_non_null(m);
        assert_int_equal(m->state, QRAFT__MESSAGE_STATE__RETRYING);
        assert_int_equal(m->attempts, 1);
        assert_int_equal(m->next_attempt_ms, 3000);
        assert_int_equal(m->updated_ms, 2000);
        assert_int_equal(m->body.len, 5);
        qraft__message__free_unpacked(m, NULL);
        assert_int_equal(events_on(s, id), 2);
    }

    propose(f,
            result_cmd(f, id, 1, QRAFT__ATTEMPT_OUTCOME__OUTCOME_DELIVERED, 0),
            3100);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        struct fixture_server *s = &f->servers[i];
        Qraft__Message *m = fixture_msg_on(s, id);
        assert_non_null(m);
        assert_int_equal(m->state, QRAFT__MESSAGE_STATE__DELIVERED);
        assert_int_equal(m->attempts, 2);
        assert_int_equal(m->delivered_ms, 3100);
        assert_int_equal(m->body.len, 0); /* delivered: the body is dropped */
        assert_string_equal(m->url, URL); /* the record stays */
        qraft__message__free_unpacked(m, NULL);
        assert_int_equal(due_on(s, id, UINT64_MAX), 0);
        assert_int_equal(fixture_count_on(s, QRAFT__MESSAGE_STATE__DELIVERED),
                         1);
        assert_int_equal(fixture_count_on(s, QRAFT__MESSAGE_STATE__RETRYING),
                         0);
    }

    /* After the final state nothing is taken: not the next attempt, not a
     * repeat of the last one, not a stale one. */
    struct result_spec late[3] = {
        {.id = id,
         .attempt = 2,
         .outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_RETRY},
        {.id = id,
         .attempt = 1,
         .outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_DEAD},
        {.id = id,
         .attempt = 0,
         .outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_RETRY},
    };
    propose(f, results_cmd(f, late, 3), 4000);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        struct fixture_server *s = &f->servers[i];
        Qraft__Message *m = fixture_msg_on(s, id);
        assert_non_null(m);
        assert_int_equal(m->state, QRAFT__MESSAGE_STATE__DELIVERED);
        assert_int_equal(m->attempts, 2);
        assert_int_equal(m->updated_ms, 3100);
        qraft__message__free_unpacked(m, NULL);
        assert_int_equal(events_on(s, id), 3);
        assert_int_equal(
            fixture_count_on(s, QRAFT__MESSAGE_STATE__DEAD_LETTERED), 0);
    }
}

/* Results that do not match a waiting attempt change nothing, and do not
 * keep the other results of their batch from applying. */
static void test_stale_results(void **state)
{
    struct fixture *f = *state;
    char cancelled[QR_ID_BYTES];
    char waiting[QR_ID_BYTES];
    char unknown[QR_ID_BYTES];
    struct qr_packed pubs[2];
    pubs[0] = publish_simple(f, 3, cancelled);
    pubs[1] = publish_simple(f, 3, waiting);
    propose_until(f, pubs, 2, 1000, FIXTURE_N_SERVERS);
    propose(f, fixture_cancel_cmd(cancelled), 2000);
    qr_command_message_id(unknown, 999, 7, 7);

    struct result_spec stale[4] = {
        /* cancelled while its attempt was in flight */
        {.id = cancelled,
         .attempt = 0,
         .outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_DELIVERED},
        /* never existed (or deleted from the DLQ meanwhile) */
        {.id = unknown,
         .attempt = 0,
         .outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_DELIVERED},
        /* from the future: attempt 1 was never dispatched */
        {.id = waiting,
         .attempt = 1,
         .outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_RETRY,
         .delay_ms = 10},
        /* no outcome at all */
        {.id = waiting,
         .attempt = 0,
         .outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_UNSPECIFIED},
    };
    propose(f, results_cmd(f, stale, 4), 3000);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        struct fixture_server *s = &f->servers[i];
        Qraft__Message *m = fixture_msg_on(s, cancelled);
        assert_non_null(m);
        assert_int_equal(m->state, QRAFT__MESSAGE_STATE__CANCELLED);
        assert_int_equal(m->attempts, 0);
        assert_int_equal(m->updated_ms, 2000);
        qraft__message__free_unpacked(m, NULL);
        assert_int_equal(events_on(s, cancelled), 2);

        assert_null(fixture_msg_on(s, unknown));
        assert_int_equal(events_on(s, unknown), 0);

        m = fixture_msg_on(s, waiting);
        assert_non_null(m);
        assert_int_equal(m->state, QRAFT__MESSAGE_STATE__PENDING);
        assert_int_equal(m->attempts, 0);
        assert_int_equal(m->updated_ms, 1000);
        assert_null(m->last_error);
        qraft__message__free_unpacked(m, NULL);
        assert_int_equal(events_on(s, waiting), 1);

        assert_int_equal(fixture_count_on(s, QRAFT__MESSAGE_STATE__PENDING), 1);
        assert_int_equal(fixture_count_on(s, QRAFT__MESSAGE_STATE__CANCELLED),
                         1);
        assert_int_equal(fixture_count_on(s, QRAFT__MESSAGE_STATE__DELIVERED),
                         0);
        assert_int_equal(fixture_count_on(s, QRAFT__MESSAGE_STATE__RETRYING),
                         0);
    }

    /* Stale and current results in one batch: the current one applies. */
    struct result_spec mixed[2] = {
        {.id = cancelled,
         .attempt = 0,
         .outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_RETRY,
         .delay_ms = 10},
        {.id = waiting,
         .attempt = 0,
         .outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_DELIVERED},
    };
    propose(f, results_cmd(f, mixed, 2), 4000);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        expect_msg(&f->servers[i], cancelled, QRAFT__MESSAGE_STATE__CANCELLED,
                   0);
        expect_msg(&f->servers[i], waiting, QRAFT__MESSAGE_STATE__DELIVERED, 1);
    }
}

/* Apply never grants more than 1 + max_retries attempts, whatever the
 * worker asked for. */
static void test_budget_enforced_by_apply(void **state)
{
    struct fixture *f = *state;
    char one[QR_ID_BYTES];
    char none[QR_ID_BYTES];
    struct qr_packed pubs[2];
    pubs[0] = publish_simple(f, 1, one);
    pubs[1] = publish_simple(f, 0, none);
    propose_until(f, pubs, 2, 1000, FIXTURE_N_SERVERS);

    propose(f,
            result_cmd(f, one, 0, QRAFT__ATTEMPT_OUTCOME__OUTCOME_RETRY, 1000),
            2000);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        expect_msg(&f->servers[i], one, QRAFT__MESSAGE_STATE__RETRYING, 1);
    }

    /* The worker says "retry" for the last allowed attempt of `one`, and for
     * the only attempt of `none` (max_retries 0). */
    struct result_spec over[2] = {
        {.id = one,
         .attempt = 1,
         .outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_RETRY,
         .delay_ms = 1000,
         .category = "timeout",
         .http_status = 504},
        {.id = none,
         .attempt = 0,
         .outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_RETRY,
         .delay_ms = 1000},
    };
    propose(f, results_cmd(f, over, 2), 3000);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        struct fixture_server *s = &f->servers[i];
        Qraft__Message *m = fixture_msg_on(s, one);
        assert_non_null(m);
        assert_int_equal(m->state, QRAFT__MESSAGE_STATE__DEAD_LETTERED);
        assert_int_equal(m->attempts, 2);
        assert_int_equal(m->dead_lettered_ms, 3000);
        assert_non_null(m->last_error);
        assert_string_equal(m->last_error->category, "budget_exhausted");
        assert_string_equal(m->last_error->cause, "timeout");
        assert_int_equal(m->last_error->status, 504);
        assert_string_not_equal(m->dlq_hint, "");
        qraft__message__free_unpacked(m, NULL);

        m = fixture_msg_on(s, none);
        assert_non_null(m);
        assert_int_equal(m->state, QRAFT__MESSAGE_STATE__DEAD_LETTERED);
        assert_int_equal(m->attempts, 1);
        assert_string_equal(m->last_error->category, "budget_exhausted");
        assert_string_equal(m->last_error->cause, "server_error");
        qraft__message__free_unpacked(m, NULL);

        assert_int_equal(due_on(s, one, UINT64_MAX), 0);
        assert_int_equal(due_on(s, none, UINT64_MAX), 0);
        struct id_list dlq;
        dlq_on(s, &dlq);
        assert_int_equal(dlq.n, 2);
        assert_int_equal(
            fixture_count_on(s, QRAFT__MESSAGE_STATE__DEAD_LETTERED), 2);
        assert_int_equal(fixture_count_on(s, QRAFT__MESSAGE_STATE__RETRYING),
                         0);
    }
}

/* A permanent failure goes to the DLQ with the worker's hint; a replay gives
 * the same message a fresh budget; only dead letters can be deleted. */
static void test_dead_replay_delete(void **state)
{
    struct fixture *f = *state;
    char id[QR_ID_BYTES];
    propose(f, publish_simple(f, 3, id), 1000);

    struct result_spec dead = {.id = id,
                               .attempt = 0,
                               .outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_DEAD,
                               .hint = "fix the destination URL"};
    propose(f, results_cmd(f, &dead, 1), 2000);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        struct fixture_server *s = &f->servers[i];
        Qraft__Message *m = fixture_msg_on(s, id);
        assert_non_null(m);
        assert_int_equal(m->state, QRAFT__MESSAGE_STATE__DEAD_LETTERED);
        assert_int_equal(m->attempts, 1);
        assert_int_equal(m->dead_lettered_ms, 2000);
        assert_string_equal(m->dlq_hint, "fix the destination URL");
        assert_string_equal(m->last_error->category, "client_error");
        assert_int_equal(m->last_error->status, 404);
        qraft__message__free_unpacked(m, NULL);
        struct id_list dlq;
        dlq_on(s, &dlq);
        assert_int_equal(dlq.n, 1);
        assert_string_equal(dlq.ids[0], id);
    }

    propose(f, fixture_replay_cmd(id), 3000);
    assert_int_equal(status_of(f, 0), 0);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        struct fixture_server *s = &f->servers[i];
        Qraft__Message *m = fixture_msg_on(s, id);
        assert_non_null(m);
        assert_int_equal(m->state, QRAFT__MESSAGE_STATE__PENDING);
        assert_int_equal(m->attempts, 0);
        assert_int_equal(m->next_attempt_ms, 3000);
        assert_int_equal(m->dead_lettered_ms, 0);
        assert_string_equal(m->dlq_hint, "");
        assert_int_equal(m->body.len, 5);
        qraft__message__free_unpacked(m, NULL);
        struct id_list dlq;
        dlq_on(s, &dlq);
        assert_int_equal(dlq.n, 0);
        assert_int_equal(due_on(s, id, 3000), 1);
        assert_int_equal(fixture_count_on(s, QRAFT__MESSAGE_STATE__PENDING), 1);
        assert_int_equal(
            fixture_count_on(s, QRAFT__MESSAGE_STATE__DEAD_LETTERED), 0);
    }

    /* Not a dead letter any more: delete is refused, and a second replay
     * too. */
    struct qr_packed two[2] = {delete_cmd(id), fixture_replay_cmd(id)};
    propose_until(f, two, 2, 4000, FIXTURE_N_SERVERS);
    assert_int_equal(status_of(f, 0), QR_ECONFLICT);
    assert_int_equal(status_of(f, 1), QR_ECONFLICT);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        expect_msg(&f->servers[i], id, QRAFT__MESSAGE_STATE__PENDING, 0);
    }

    dead.hint = "still broken";
    dead.generation = 1; /* the replayed message's first attempt */
    propose(f, results_cmd(f, &dead, 1), 5000);
    propose(f, delete_cmd(id), 6000);
    assert_int_equal(status_of(f, 0), 0);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        struct fixture_server *s = &f->servers[i];
        assert_null(fixture_msg_on(s, id));
        struct id_list dlq;
        dlq_on(s, &dlq);
        assert_int_equal(dlq.n, 0);
        assert_int_equal(
            fixture_count_on(s, QRAFT__MESSAGE_STATE__DEAD_LETTERED), 0);
        assert_int_equal(fixture_count_on(s, QRAFT__MESSAGE_STATE__PENDING), 0);
    }

    /* Gone: delete and replay answer NOT_FOUND. */
    struct qr_packed gone[2] = {delete_cmd(id), fixture_replay_cmd(id)};
    propose_until(f, gone, 2, 7000, FIXTURE_N_SERVERS);
    assert_int_equal(status_of(f, 0), QR_ENOTFOUND);
    assert_int_equal(status_of(f, 1), QR_ENOTFOUND);
}

/* Checks callback message `id` on replica s: what it reports and where it
 * goes. */
static void expect_callback(struct fixture_server *s,
                            const char *id,
                            const char *source,
                            Qraft__CallbackKind kind,
                            int retried,
                            uint64_t created_ms)
{
    Qraft__Message *m = fixture_msg_on(s, id);
    assert_non_null(m);
    assert_int_equal(m->state, QRAFT__MESSAGE_STATE__PENDING);
    assert_int_equal(m->callback_kind, kind);
    assert_string_equal(m->source_message_id, source);
    assert_string_equal(m->url, kind == QRAFT__CALLBACK_KIND__FAILURE_CALLBACK
                                    ? FAILURE_URL
                                    : CALLBACK_URL);
    assert_string_equal(m->method, "POST");
    assert_int_equal(m->next_attempt_ms, created_ms);
    assert_int_equal(m->shard, qr_fsm_shard_of(id));
    assert_string_equal(m->callback, "");

    json_error_t err;
    json_t *body = json_loadb((const char *)m->body.data, m->body.len, 0, &err);
    assert_non_null(body);
    assert_string_equal(
        json_string_value(json_object_get(body, "sourceMessageId")), source);
    assert_int_equal(json_integer_value(json_object_get(body, "retried")),
                     retried);
    assert_int_equal(json_integer_value(json_object_get(body, "maxRetries")),
                     1);
    assert_string_equal(json_string_value(json_object_get(body, "url")), URL);
    json_t *dlq_id = json_object_get(body, "dlqId");
    if (kind == QRAFT__CALLBACK_KIND__FAILURE_CALLBACK) {
        assert_string_equal(json_string_value(dlq_id), source);
    } else {
        assert_null(dlq_id);
    }
    json_decref(body);
    qraft__message__free_unpacked(m, NULL);
}

/* Finds which of the listed callbacks has the given kind and retried value
 * on replica s; -1 when none. */
static int find_callback(struct fixture_server *s,
                         const struct id_list *l,
                         Qraft__CallbackKind kind,
                         int retried)
{
    for (size_t i = 0; i < l->n; i++) {
        Qraft__Message *m = fixture_msg_on(s, l->ids[i]);
        assert_non_null(m);
        json_t *body =
            json_loadb((const char *)m->body.data, m->body.len, 0, NULL);
        assert_non_null(body);
        bool match =
            m->callback_kind == kind &&
            json_integer_value(json_object_get(body, "retried")) == retried;
        json_decref(body);
        qraft__message__free_unpacked(m, NULL);
        if (match) {
            return (int)i;
        }
    }
    return -1;
}

/* Every committed attempt of a message with a callback creates one callback
 * message; dead-lettering also creates the failure callback. Every replica
 * creates them with the same ids. */
static void test_callbacks(void **state)
{
    struct fixture *f = *state;
    char id[QR_ID_BYTES];
    Qraft__PublishRequest req = QRAFT__PUBLISH_REQUEST__INIT;
    req.retries = 1;
    req.retries_set = true;
    req.callback = CALLBACK_URL;
    req.failure_callback = FAILURE_URL;
    propose(f, publish_cmd(f, &req, id), 1000);

    propose(f, result_cmd(f, id, 0, QRAFT__ATTEMPT_OUTCOME__OUTCOME_RETRY, 500),
            2000);
    struct id_list first;
    callbacks_on(&f->servers[0], id, &first);
    assert_int_equal(first.n, 1);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        struct fixture_server *s = &f->servers[i];
        struct id_list l;
        callbacks_on(s, id, &l);
        assert_int_equal(l.n, 1);
        assert_string_equal(l.ids[0], first.ids[0]);
        expect_callback(s, l.ids[0], id, QRAFT__CALLBACK_KIND__CALLBACK, 0,
                        2000);
        expect_msg(s, id, QRAFT__MESSAGE_STATE__RETRYING, 1);
        assert_int_equal(fixture_count_on(s, QRAFT__MESSAGE_STATE__PENDING), 1);
    }

    struct result_spec dead = {.id = id,
                               .attempt = 1,
                               .outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_DEAD,
                               .hint = "gone"};
    propose(f, results_cmd(f, &dead, 1), 3000);
    struct id_list all;
    callbacks_on(&f->servers[0], id, &all);
    assert_int_equal(all.n, 3);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        struct fixture_server *s = &f->servers[i];
        struct id_list l;
        callbacks_on(s, id, &l);
        assert_int_equal(l.n, 3);
        for (size_t k = 0; k < l.n; k++) {
            assert_string_equal(l.ids[k], all.ids[k]); /* determinism */
            assert_string_not_equal(l.ids[k], id);
        }
        int c0 = find_callback(s, &l, QRAFT__CALLBACK_KIND__CALLBACK, 0);
        int c1 = find_callback(s, &l, QRAFT__CALLBACK_KIND__CALLBACK, 1);
        int fc =
            find_callback(s, &l, QRAFT__CALLBACK_KIND__FAILURE_CALLBACK, 1);
        assert_true(c0 >= 0 && c1 >= 0 && fc >= 0);
        assert_string_equal(l.ids[c0], first.ids[0]);
        expect_callback(s, l.ids[c1], id, QRAFT__CALLBACK_KIND__CALLBACK, 1,
                        3000);
        expect_callback(s, l.ids[fc], id,
                        QRAFT__CALLBACK_KIND__FAILURE_CALLBACK, 1, 3000);
        expect_msg(s, id, QRAFT__MESSAGE_STATE__DEAD_LETTERED, 2);
        assert_int_equal(fixture_count_on(s, QRAFT__MESSAGE_STATE__PENDING), 3);
        /* Callbacks are delivered like any message: they are due. */
        assert_int_equal(due_on(s, l.ids[fc], 3000), 1);
    }
}

/* A shard map replaces the stored one only with a newer epoch, and only if
 * it names an owner for every shard. */
static void test_epoch_fencing(void **state)
{
    struct fixture *f = *state;

    propose(f, assign_cmd(1, 1, QR_FSM_N_SHARDS - 1), 1000);
    assert_int_equal(status_of(f, 0), QR_EBADREQ);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        assert_int_equal(epoch_on(&f->servers[i], 0), 0);
    }

    propose(f, assign_cmd(1, 1, QR_FSM_N_SHARDS), 2000);
    assert_int_equal(status_of(f, 0), 0);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        assert_int_equal(epoch_on(&f->servers[i], 1), 1);
    }

    propose(f, assign_cmd(3, 3, QR_FSM_N_SHARDS), 3000);
    assert_int_equal(status_of(f, 0), 0);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        assert_int_equal(epoch_on(&f->servers[i], 3), 3);
    }

    /* Older and equal epochs: a deposed leader's late assignment. */
    struct qr_packed old[2] = {assign_cmd(2, 2, QR_FSM_N_SHARDS),
                               assign_cmd(3, 2, QR_FSM_N_SHARDS)};
    propose_until(f, old, 2, 4000, FIXTURE_N_SERVERS);
    assert_int_equal(status_of(f, 0), QR_ECONFLICT);
    assert_int_equal(status_of(f, 1), QR_ECONFLICT);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        assert_int_equal(epoch_on(&f->servers[i], 3), 3);
    }

    /* A newer epoch with too many owners: refused, the map stays. */
    propose(f, assign_cmd(4, 2, QR_FSM_N_SHARDS + 1), 5000);
    assert_int_equal(status_of(f, 0), QR_EBADREQ);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        assert_int_equal(epoch_on(&f->servers[i], 3), 3);
    }
}
/* The leader is cut off after a publish and, before it notices, takes the
 * old owner's result for attempt 0; it never commits. The new leader commits
 * another result for attempt 0. Once back, the old leader's replica has the
 * new leader's result, applied once, and a re-sent copy of the lost result
 * is ignored. */
static void test_leader_change_mid_flight(void **state)
{
    struct fixture *f = *state;
    char id[QR_ID_BYTES];
    propose(f, publish_simple(f, 3, id), 1000);

    fixture_partition(f, 0, true);
    assert_int_equal(raft_state(raft_fixture_get(&f->raft, 0)), RAFT_LEADER);
    struct qr_packed lost =
        result_cmd(f, id, 0, QRAFT__ATTEMPT_OUTCOME__OUTCOME_DELIVERED, 0);
    struct fixture_apply *orphan = fixture_submit(f, 0, &lost, 1, 1500);

    assert_true(
        raft_fixture_step_until_has_no_leader(&f->raft, FIXTURE_STEP_MS));
    assert_true(raft_fixture_step_until_has_leader(&f->raft, FIXTURE_STEP_MS));
    f->leader = raft_fixture_leader_index(&f->raft);
    assert_int_not_equal(f->leader, 0);
    unsigned other = f->leader == 1 ? 2 : 1;

    struct qr_packed won =
        result_cmd(f, id, 0, QRAFT__ATTEMPT_OUTCOME__OUTCOME_RETRY, 500);
    uint64_t index = propose_until(f, &won, 1, 2000, f->leader);
    assert_true(raft_fixture_step_until_applied(
        &f->raft, other, (raft_index)index, FIXTURE_STEP_MS));
    expect_msg(&f->servers[f->leader], id, QRAFT__MESSAGE_STATE__RETRYING, 1);
    expect_msg(&f->servers[other], id, QRAFT__MESSAGE_STATE__RETRYING, 1);
    /* The cut-off replica has applied neither. */
    expect_msg(&f->servers[0], id, QRAFT__MESSAGE_STATE__PENDING, 0);

    fixture_partition(f, 0, false);
    /* The old owner re-sends its lost result to the new leader. */
    propose(f,
            result_cmd(f, id, 0, QRAFT__ATTEMPT_OUTCOME__OUTCOME_DELIVERED, 0),
            2100);
    assert_true(orphan->done);
    assert_int_equal(orphan->status, RAFT_LEADERSHIPLOST);
    free(orphan);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        struct fixture_server *s = &f->servers[i];
        Qraft__Message *m = fixture_msg_on(s, id);
        assert_non_null(m);
        assert_int_equal(m->state, QRAFT__MESSAGE_STATE__RETRYING);
        assert_int_equal(m->attempts, 1);
        assert_int_equal(m->next_attempt_ms, 2500);
        assert_int_equal(m->updated_ms, 2000);
        qraft__message__free_unpacked(m, NULL);
        assert_int_equal(events_on(s, id), 2); /* published, failed once */
        assert_int_equal(fixture_count_on(s, QRAFT__MESSAGE_STATE__DELIVERED),
                         0);
        assert_int_equal(f->servers[i].fsm.applied_index,
                         f->servers[f->leader].fsm.applied_index);
    }
}

/* Dead-letters message id with a DEAD result at leader time now_ms. */
static void kill_at(struct fixture *f, const char *id, uint64_t now_ms)
{
    propose(f, result_cmd(f, id, 0, QRAFT__ATTEMPT_OUTCOME__OUTCOME_DEAD, 0),
            now_ms);
}

/* Prune deletes dead letters older than the retention, measured from the
 * entry's time, oldest first and at most max_items per command. */
static void test_prune(void **state)
{
    struct fixture *f = *state;
    char ids[4][QR_ID_BYTES];
    struct qr_packed pubs[4];
    for (unsigned i = 0; i < 4; i++) {
        pubs[i] = publish_simple(f, 3, ids[i]);
    }
    propose_until(f, pubs, 4, 1000, FIXTURE_N_SERVERS);
    /* Dead at 10 s, 20 s, 30 s; ids[3] stays pending. Dead-letter them out
     * of id order, so "oldest" means oldest in the DLQ. */
    kill_at(f, ids[2], 10000);
    kill_at(f, ids[0], 20000);
    kill_at(f, ids[1], 30000);

    /* Retention 20 s at 50 s: the cutoff is 30 s. Two are older, but at
     * most one per command. */
    propose(f, prune_cmd(20000, 1), 50000);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        struct fixture_server *s = &f->servers[i];
        assert_null(fixture_msg_on(s, ids[2]));
        struct id_list dlq;
        dlq_on(s, &dlq);
        assert_int_equal(dlq.n, 2);
        assert_string_equal(dlq.ids[0], ids[0]);
        assert_string_equal(dlq.ids[1], ids[1]);
    }

    /* The next one; the letter exactly at the cutoff is not older: kept. */
    propose(f, prune_cmd(20000, 10), 50000);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        struct fixture_server *s = &f->servers[i];
        assert_null(fixture_msg_on(s, ids[0]));
        struct id_list dlq;
        dlq_on(s, &dlq);
        assert_int_equal(dlq.n, 1);
        assert_string_equal(dlq.ids[0], ids[1]);
        assert_int_equal(
            fixture_count_on(s, QRAFT__MESSAGE_STATE__DEAD_LETTERED), 1);
        expect_msg(s, ids[3], QRAFT__MESSAGE_STATE__PENDING, 0);
    }

    /* Retention 0 keeps dead letters forever; max_items 0 prunes nothing. */
    struct qr_packed keep[2] = {prune_cmd(0, 10), prune_cmd(1, 0)};
    propose_until(f, keep, 2, 90000, FIXTURE_N_SERVERS);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        expect_msg(&f->servers[i], ids[1], QRAFT__MESSAGE_STATE__DEAD_LETTERED,
                   1);
    }

    propose(f, prune_cmd(20000, 10), 90000);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        struct fixture_server *s = &f->servers[i];
        assert_null(fixture_msg_on(s, ids[1]));
        assert_int_equal(
            fixture_count_on(s, QRAFT__MESSAGE_STATE__DEAD_LETTERED), 0);
        expect_msg(s, ids[3], QRAFT__MESSAGE_STATE__PENDING, 0);
    }
}

static struct qr_packed prune_done_cmd(uint64_t done_retention_ms, uint32_t max)
{
    Qraft__Prune p = QRAFT__PRUNE__INIT;
    p.done_retention_ms = done_retention_ms;
    p.max_items = max;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_PRUNE;
    cmd.prune = &p;
    return fixture_pack(&cmd);
}

static void deliver_at(struct fixture *f, const char *id, uint64_t now_ms)
{
    propose(f,
            result_cmd(f, id, 0, QRAFT__ATTEMPT_OUTCOME__OUTCOME_DELIVERED, 0),
            now_ms);
}

/* At the done index's feature level, Prune removes the finished (delivered
 * or cancelled) messages that finished longest ago, before the cutoff, at
 * most max_items, whatever their ids: the same ones on every replica, and
 * says when a full batch went (more may wait). Pending ones stay. Below
 * that level it walks in id order, as older nodes do. */
static void test_prune_done(void **state)
{
    struct fixture *f = *state;
    char ids[6][QR_ID_BYTES];
    struct qr_packed pubs[6];
    for (unsigned i = 0; i < 6; i++) {
        pubs[i] = publish_simple(f, 3, ids[i]);
    }
    propose_until(f, pubs, 6, 1000, FIXTURE_N_SERVERS);
    /* Finished out of id order; ids[4] stays pending. */
    deliver_at(f, ids[3], 10000);
    propose(f, fixture_cancel_cmd(ids[1]), 20000);
    deliver_at(f, ids[0], 30000);
    deliver_at(f, ids[2], 40000);
    deliver_at(f, ids[5], 5000);

    /* Below level 3: a walk of max_items in id order from scan_after_id
     * (ids[0], ids[1]: both finished before the cutoff). */
    propose(f, prune_done_cmd(15000, 2), 50000);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        struct fixture_server *s = &f->servers[i];
        assert_null(fixture_msg_on(s, ids[0]));
        assert_null(fixture_msg_on(s, ids[1]));
        assert_string_equal(s->last[0].message_id, ids[1]);
        expect_msg(s, ids[5], QRAFT__MESSAGE_STATE__DELIVERED, 1);
    }

    propose(f, fixture_feature_level_cmd(QR_FEATURE_LEVEL_DONE_INDEX), 50000);
    /* Retention 15 s at 50 s: cutoff 35 s. Oldest first, one at a time:
     * ids[5] (5 s), not ids[3] (10 s). */
    propose(f, prune_done_cmd(15000, 1), 50000);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        struct fixture_server *s = &f->servers[i];
        assert_null(fixture_msg_on(s, ids[5]));
        expect_msg(s, ids[3], QRAFT__MESSAGE_STATE__DELIVERED, 1);
        assert_true(s->last[0].more);
        assert_string_equal(s->last[0].message_id, "");
    }
    propose(f, prune_done_cmd(15000, 10), 50000);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        struct fixture_server *s = &f->servers[i];
        assert_null(fixture_msg_on(s, ids[3]));
        assert_false(s->last[0].more);
        /* ids[2] finished after the cutoff; ids[4] is not finished. */
        expect_msg(s, ids[2], QRAFT__MESSAGE_STATE__DELIVERED, 1);
        expect_msg(s, ids[4], QRAFT__MESSAGE_STATE__PENDING, 0);
        assert_int_equal(fixture_count_on(s, QRAFT__MESSAGE_STATE__DELIVERED),
                         1);
        assert_int_equal(fixture_count_on(s, QRAFT__MESSAGE_STATE__CANCELLED),
                         0);
    }
    /* Later, ids[2] is old enough too; the pending one never is. */
    propose(f, prune_done_cmd(15000, 10), 60000);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        struct fixture_server *s = &f->servers[i];
        assert_null(fixture_msg_on(s, ids[2]));
        expect_msg(s, ids[4], QRAFT__MESSAGE_STATE__PENDING, 0);
    }
}

/* Node info is replicated under its node id; signing keys are installed once
 * and then only rotated (next becomes current). */
static void test_node_info_and_keys(void **state)
{
    struct fixture *f = *state;
    struct qr_packed infos[2] = {node_info_cmd(2, "127.0.0.1:7102"),
                                 node_info_cmd(0, "127.0.0.1:7100")};
    propose_until(f, infos, 2, 1000, FIXTURE_N_SERVERS);
    assert_int_equal(status_of(f, 0), 0);
    assert_int_equal(status_of(f, 1), QR_EBADREQ);
    propose(f, node_info_cmd(2, "127.0.0.1:7202"), 2000);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        size_t len = 0;
        void *buf = meta_on(&f->servers[i], QR_META_NODE_PREFIX "2", &len);
        assert_non_null(buf);
        Qraft__NodeInfo *info = qraft__node_info__unpack(NULL, len, buf);
        free(buf);
        assert_non_null(info);
        assert_int_equal(info->id, 2);
        assert_string_equal(info->rpc, "127.0.0.1:7202");
        qraft__node_info__free_unpacked(info, NULL);
        assert_null(meta_on(&f->servers[i], QR_META_NODE_PREFIX "0", &len));
    }

    struct qr_packed keys[3] = {keys_cmd("sig_a", "sig_b", false),
                                keys_cmd("sig_x", "sig_y", false),
                                keys_cmd("", "sig_c", true)};
    propose_until(f, keys, 3, 3000, FIXTURE_N_SERVERS);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        size_t len = 0;
        void *buf = meta_on(&f->servers[i], QR_META_SIGNING_KEYS, &len);
        assert_non_null(buf);
        Qraft__SigningKeys *k = qraft__signing_keys__unpack(NULL, len, buf);
        free(buf);
        assert_non_null(k);
        assert_string_equal(k->current, "sig_b");
        assert_string_equal(k->next, "sig_c");
        qraft__signing_keys__free_unpacked(k, NULL);
    }
}

/* A DLQ replay sets attempts back to 0, so the fence includes the replay
 * generation: a late result for the attempt 0 made before the message was
 * dead-lettered (two owners around a failover both sent attempt 0, the
 * first result dead-lettered it, the operator replayed it, then the second
 * result commits) must not apply to the replayed message, which stays
 * pending with attempts 0 and no second failure callback. */
static void test_result_from_before_replay(void **state)
{
    struct fixture *f = *state;
    char id[QR_ID_BYTES];
    Qraft__PublishRequest req = QRAFT__PUBLISH_REQUEST__INIT;
    req.retries = 3;
    req.retries_set = true;
    req.failure_callback = FAILURE_URL;
    propose(f, publish_cmd(f, &req, id), 1000);

    /* Owner B's result for attempt 0 commits first: dead-lettered. */
    struct result_spec dead = {.id = id,
                               .attempt = 0,
                               .outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_DEAD,
                               .hint = "fix the destination URL"};
    propose(f, results_cmd(f, &dead, 1), 2000);
    propose(f, fixture_replay_cmd(id), 3000);
    assert_int_equal(status_of(f, 0), 0);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        expect_msg(&f->servers[i], id, QRAFT__MESSAGE_STATE__PENDING, 0);
    }

    /* Owner A's result for the same, pre-replay attempt 0 commits late. */
    propose(f, results_cmd(f, &dead, 1), 3500);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        struct fixture_server *s = &f->servers[i];
        struct id_list l;
        callbacks_on(s, id, &l);
        assert_int_equal(l.n, 1); /* one failure callback, not two */
        Qraft__Message *m = fixture_msg_on(s, id);
        assert_non_null(m);
        assert_int_equal(m->state, QRAFT__MESSAGE_STATE__PENDING);
        assert_int_equal(m->attempts, 0);
        assert_int_equal(m->updated_ms, 3000);
        qraft__message__free_unpacked(m, NULL);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_result_fencing, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_stale_results, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_budget_enforced_by_apply,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_dead_replay_delete, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_callbacks, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_epoch_fencing, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_leader_change_mid_flight,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_prune_done, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_prune, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_node_info_and_keys, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_result_from_before_replay,
                                        fixture_setup, fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
