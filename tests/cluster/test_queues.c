/* Queues on raft_fixture: three in-memory raft servers, each applying to its
 * own LMDB store. Deterministic: every entry carries the time the test
 * stamps on it, nothing reads a clock.
 *
 * What a user relies on and these tests check on every replica: messages of
 * a queue are activated in the order they were published (FIFO); at most
 * `parallelism` of them hold a slot; a paused queue activates nothing and a
 * resumed one continues with the oldest; a cancelled waiting message leaves
 * the FIFO; the callbacks of a queue message hold a slot, so the next
 * message waits for them; a DLQ replay re-enters at the tail; deleting a
 * queue cancels what waits in it; the queue limits hold; below the queues'
 * feature level nothing of this happens (a mixed-version cluster). */
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

#include "fixture.h"
#include "lib/err.h"

#define URL "http://127.0.0.1:9/hook"

#define QUEUED QRAFT__MESSAGE_STATE__QUEUED
#define PENDING QRAFT__MESSAGE_STATE__PENDING
#define RETRYING QRAFT__MESSAGE_STATE__RETRYING
#define DELIVERED QRAFT__MESSAGE_STATE__DELIVERED
#define CANCELLED QRAFT__MESSAGE_STATE__CANCELLED
#define DEAD QRAFT__MESSAGE_STATE__DEAD_LETTERED

/* Proposes one command (freed here) on the leader, 1 s after the previous
 * one, and steps until every server applied it. Returns the outcome, which
 * every replica must agree on. */
static int propose(struct fixture *f, struct qr_packed cmd)
{
    f->now_ms += 1000;
    fixture_propose(f, 0, &cmd, 1, f->now_ms, f->n);
    for (unsigned i = 1; i < f->n; i++) {
        assert_int_equal(f->servers[i].last[0].status,
                         f->servers[0].last[0].status);
    }
    return f->servers[0].last[0].status;
}

/* Three servers, a leader, and no feature level raised yet. */
static int setup_level1(void **state)
{
    fixture_setup(state);
    struct fixture *f = *state;
    f->now_ms = 1000000;
    return 0;
}

/* As setup_level1, then the cluster at the queues' feature level. */
static int setup(void **state)
{
    setup_level1(state);
    assert_int_equal(
        propose(*state, fixture_feature_level_cmd(QR_FEATURE_LEVEL_QUEUES)), 0);
    return 0;
}

/* A publish into `queue` under a new id written to id_out; with a callback
 * URL when callback is set. */
static struct qr_packed publish_cmd(struct fixture *f,
                                    const char *queue,
                                    const char *callback,
                                    char id_out[QR_ID_BYTES])
{
    Qraft__PublishRequest req = QRAFT__PUBLISH_REQUEST__INIT;
    struct qr_packed packed;
    req.url = URL;
    req.queue = (char *)queue;
    req.callback = (char *)(callback != NULL ? callback : "");
    req.retries = 3;
    req.retries_set = true;
    qr_command_message_id(id_out, f->now_ms, 1, f->next_seq++);
    assert_int_equal(qr_command_pack_publish(&req, id_out, &f->limits, &packed),
                     0);
    return packed;
}

static struct qr_packed upsert_cmd(const char *name,
                                   uint32_t parallelism,
                                   bool paused,
                                   uint32_t max_queues)
{
    Qraft__QueueUpsert u = QRAFT__QUEUE_UPSERT__INIT;
    u.name = (char *)name;
    u.parallelism = parallelism;
    u.paused = paused;
    u.max_queues = max_queues;
    u.max_parallelism = 100;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_QUEUE_UPSERT;
    cmd.queue_upsert = &u;
    return fixture_pack(&cmd);
}

static struct qr_packed pause_cmd(const char *name, bool paused)
{
    Qraft__QueuePause p = QRAFT__QUEUE_PAUSE__INIT;
    p.name = (char *)name;
    p.paused = paused;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_QUEUE_PAUSE;
    cmd.queue_pause = &p;
    return fixture_pack(&cmd);
}

static struct qr_packed delete_queue_cmd(const char *name)
{
    Qraft__QueueDelete d = QRAFT__QUEUE_DELETE__INIT;
    d.name = (char *)name;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_QUEUE_DELETE;
    cmd.queue_delete = &d;
    return fixture_pack(&cmd);
}

/* What a worker reports for attempt `attempt` (generation gen) of id. */
static struct qr_packed result_cmd(struct fixture *f,
                                   const char *id,
                                   uint32_t attempt,
                                   uint32_t gen,
                                   Qraft__AttemptOutcome outcome)
{
    Qraft__DeliveryResult r = QRAFT__DELIVERY_RESULT__INIT;
    Qraft__DeliveryResult *rp = &r;
    Qraft__LastError e = QRAFT__LAST_ERROR__INIT;
    Qraft__AttemptResponse resp = QRAFT__ATTEMPT_RESPONSE__INIT;
    r.message_id = (char *)id;
    r.attempt = attempt;
    r.generation = gen;
    r.outcome = outcome;
    r.retry_delay_ms = 5000;
    r.node_id = 1;
    r.response = &resp;
    resp.status = 200;
    if (outcome != QRAFT__ATTEMPT_OUTCOME__OUTCOME_DELIVERED) {
        e.category = "server_error";
        e.status = 503;
        resp.status = 503;
        r.error = &e;
    }
    Qraft__DeliveryResults batch = QRAFT__DELIVERY_RESULTS__INIT;
    batch.n_results = 1;
    batch.results = &rp;
    batch.default_retries = f->limits.default_retries;
    batch.default_timeout_ms = f->limits.default_timeout_ms;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_DELIVERY_RESULTS;
    cmd.delivery_results = &batch;
    return fixture_pack(&cmd);
}

static void deliver(struct fixture *f, const char *id, uint32_t attempt)
{
    propose(f, result_cmd(f, id, attempt, 0,
                          QRAFT__ATTEMPT_OUTCOME__OUTCOME_DELIVERED));
}

/* Queue counters on every replica (all must agree); false when absent. */
static bool queue_of(struct fixture *f,
                     const char *name,
                     uint32_t *active,
                     uint64_t *waiting)
{
    bool found = false;
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        struct qr_store_txn *txn;
        Qraft__Queue *q = NULL;
        assert_int_equal(qr_store_txn_begin(f->servers[i].store, false, &txn),
                         0);
        int rv = qr_store_queue_get(txn, name, &q);
        qr_store_txn_abort(txn);
        if (i > 0) {
            assert_int_equal(rv == 0, found);
        }
        found = rv == 0;
        if (found) {
            if (i > 0) {
                assert_int_equal(q->active, *active);
                assert_int_equal(q->waiting, *waiting);
            }
            *active = q->active;
            *waiting = q->waiting;
            qraft__queue__free_unpacked(q, NULL);
        }
    }
    return found;
}

static void expect_queue(struct fixture *f,
                         const char *name,
                         uint32_t active,
                         uint64_t waiting)
{
    uint32_t a = 0;
    uint64_t w = 0;
    assert_true(queue_of(f, name, &a, &w));
    assert_int_equal(a, active);
    assert_int_equal(w, waiting);
}

/* Parallelism 1: one message at a time, in publish order; a retry keeps
 * the slot; the next starts only once the current one is delivered. */
static void test_fifo_one_at_a_time(void **state)
{
    struct fixture *f = *state;
    char ids[4][QR_ID_BYTES];
    assert_int_equal(propose(f, upsert_cmd("orders", 1, false, 100)), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(propose(f, publish_cmd(f, "orders", NULL, ids[i])), 0);
    }
    assert_int_equal(fixture_state_of(f, ids[0]), PENDING);
    for (int i = 1; i < 4; i++) {
        assert_int_equal(fixture_state_of(f, ids[i]), QUEUED);
    }
    expect_queue(f, "orders", 1, 3);

    propose(f,
            result_cmd(f, ids[0], 0, 0, QRAFT__ATTEMPT_OUTCOME__OUTCOME_RETRY));
    assert_int_equal(fixture_state_of(f, ids[0]), RETRYING);
    assert_int_equal(fixture_state_of(f, ids[1]), QUEUED);
    deliver(f, ids[0], 1);
    assert_int_equal(fixture_state_of(f, ids[0]), DELIVERED);
    assert_int_equal(fixture_state_of(f, ids[1]), PENDING);
    assert_int_equal(fixture_state_of(f, ids[2]), QUEUED);
    for (int i = 1; i < 4; i++) {
        deliver(f, ids[i], 0);
        assert_int_equal(fixture_state_of(f, ids[i]), DELIVERED);
        if (i < 3) {
            assert_int_equal(fixture_state_of(f, ids[i + 1]), PENDING);
        }
    }
    expect_queue(f, "orders", 0, 0);
}

/* Parallelism P keeps at most P active; raising it activates the next ones
 * at once, lowering it lets the active ones finish first. An unknown queue
 * is created with parallelism 1 by the first publish. */
static void test_parallelism(void **state)
{
    struct fixture *f = *state;
    char ids[6][QR_ID_BYTES];
    assert_int_equal(propose(f, upsert_cmd("wide", 2, false, 100)), 0);
    for (int i = 0; i < 6; i++) {
        propose(f, publish_cmd(f, "wide", NULL, ids[i]));
    }
    assert_int_equal(fixture_state_of(f, ids[0]), PENDING);
    assert_int_equal(fixture_state_of(f, ids[1]), PENDING);
    assert_int_equal(fixture_state_of(f, ids[2]), QUEUED);
    expect_queue(f, "wide", 2, 4);
    deliver(f, ids[1], 0);
    assert_int_equal(fixture_state_of(f, ids[2]),
                     PENDING); /* the oldest waiting */
    assert_int_equal(fixture_state_of(f, ids[3]), QUEUED);

    propose(f, upsert_cmd("wide", 4, false, 100));
    assert_int_equal(fixture_state_of(f, ids[3]), PENDING);
    assert_int_equal(fixture_state_of(f, ids[4]), PENDING);
    assert_int_equal(fixture_state_of(f, ids[5]), QUEUED);
    expect_queue(f, "wide", 4, 1);

    propose(f, upsert_cmd("wide", 1, false, 100));
    deliver(f, ids[0], 0);
    deliver(f, ids[2], 0);
    deliver(f, ids[3], 0);
    assert_int_equal(fixture_state_of(f, ids[5]), QUEUED); /* 1 still active */
    deliver(f, ids[4], 0);
    assert_int_equal(fixture_state_of(f, ids[5]), PENDING);

    char solo[QR_ID_BYTES];
    propose(f, publish_cmd(f, "auto-made", NULL, solo));
    assert_int_equal(fixture_state_of(f, solo), PENDING);
    expect_queue(f, "auto-made", 1, 0);
}

/* Pause stops activations (the active message finishes); resume continues
 * with the oldest. Both are idempotent; unknown queues are NOT_FOUND. */
static void test_pause_resume(void **state)
{
    struct fixture *f = *state;
    char ids[3][QR_ID_BYTES];
    propose(f, upsert_cmd("p", 1, true, 100));
    for (int i = 0; i < 3; i++) {
        propose(f, publish_cmd(f, "p", NULL, ids[i]));
    }
    expect_queue(f, "p", 0, 3);
    assert_int_equal(fixture_state_of(f, ids[0]), QUEUED);
    assert_int_equal(propose(f, pause_cmd("p", false)), 0);
    assert_int_equal(fixture_state_of(f, ids[0]), PENDING);
    assert_int_equal(propose(f, pause_cmd("p", true)), 0);
    assert_int_equal(propose(f, pause_cmd("p", true)), 0);
    deliver(f, ids[0], 0);
    assert_int_equal(fixture_state_of(f, ids[0]), DELIVERED);
    assert_int_equal(fixture_state_of(f, ids[1]), QUEUED);
    expect_queue(f, "p", 0, 2);
    assert_int_equal(propose(f, pause_cmd("p", false)), 0);
    assert_int_equal(fixture_state_of(f, ids[1]), PENDING);
    assert_int_equal(fixture_state_of(f, ids[2]), QUEUED);
    assert_int_equal(propose(f, pause_cmd("nope", true)), QR_ENOTFOUND);
}

/* A cancelled waiting message leaves the FIFO; cancelling the active one
 * frees its slot for the next. */
static void test_cancel(void **state)
{
    struct fixture *f = *state;
    char ids[4][QR_ID_BYTES];
    for (int i = 0; i < 4; i++) {
        propose(f, publish_cmd(f, "c", NULL, ids[i]));
    }
    assert_int_equal(propose(f, fixture_cancel_cmd(ids[1])), 0);
    assert_int_equal(fixture_state_of(f, ids[1]), CANCELLED);
    expect_queue(f, "c", 1, 2);
    deliver(f, ids[0], 0);
    assert_int_equal(fixture_state_of(f, ids[2]),
                     PENDING); /* skips the cancelled */
    assert_int_equal(propose(f, fixture_cancel_cmd(ids[2])), 0);
    assert_int_equal(fixture_state_of(f, ids[3]), PENDING);
    expect_queue(f, "c", 1, 0);
}

struct find {
    const char *source;
    char *out;
};

/* Finds the callback of find->source; it must hold a slot of queue "cb". */
static int find_cb(void *arg, const Qraft__Message *msg)
{
    struct find *find = arg;
    if (strcmp(msg->source_message_id, find->source) == 0) {
        snprintf(find->out, QR_ID_BYTES + 64, "%s", msg->id);
        assert_string_equal(msg->slot_queue, "cb");
        return 1;
    }
    return 0;
}

/* The callback of a queue message holds a slot: the next message waits
 * until the callback is final too. */
static void test_callbacks_hold_slot(void **state)
{
    struct fixture *f = *state;
    char first[QR_ID_BYTES];
    char second[QR_ID_BYTES];
    propose(f, publish_cmd(f, "cb", "http://127.0.0.1:9/callback", first));
    propose(f, publish_cmd(f, "cb", NULL, second));
    deliver(f, first, 0);
    assert_int_equal(fixture_state_of(f, first), DELIVERED);
    assert_int_equal(fixture_state_of(f, second), QUEUED);
    expect_queue(f, "cb", 1, 1); /* the callback's slot */

    /* Find the callback apply created. */
    struct qr_store_txn *txn;
    char cb_id[QR_ID_BYTES + 64] = "";
    struct find find = {first, cb_id};
    assert_int_equal(qr_store_txn_begin(f->servers[0].store, false, &txn), 0);
    assert_int_equal(qr_store_msg_list(txn, PENDING, NULL, 100, find_cb, &find),
                     1);
    qr_store_txn_abort(txn);
    assert_true(cb_id[0] != '\0');

    /* A failed attempt keeps the slot; the delivered one frees it. */
    propose(f,
            result_cmd(f, cb_id, 0, 0, QRAFT__ATTEMPT_OUTCOME__OUTCOME_RETRY));
    assert_int_equal(fixture_state_of(f, second), QUEUED);
    deliver(f, cb_id, 1);
    assert_int_equal(fixture_state_of(f, second), PENDING);
    expect_queue(f, "cb", 1, 0);
}

/* A replayed dead letter re-enters at the tail of its queue. */
static void test_replay_reenters_tail(void **state)
{
    struct fixture *f = *state;
    char ids[3][QR_ID_BYTES];
    for (int i = 0; i < 3; i++) {
        propose(f, publish_cmd(f, "r", NULL, ids[i]));
    }
    propose(f,
            result_cmd(f, ids[0], 0, 0, QRAFT__ATTEMPT_OUTCOME__OUTCOME_DEAD));
    assert_int_equal(fixture_state_of(f, ids[0]), DEAD);
    assert_int_equal(fixture_state_of(f, ids[1]), PENDING);
    assert_int_equal(propose(f, fixture_replay_cmd(ids[0])), 0);
    assert_int_equal(fixture_state_of(f, ids[0]), QUEUED);
    expect_queue(f, "r", 1, 2);
    deliver(f, ids[1], 0);
    assert_int_equal(fixture_state_of(f, ids[2]),
                     PENDING); /* before the replay */
    assert_int_equal(fixture_state_of(f, ids[0]), QUEUED);
    deliver(f, ids[2], 0);
    assert_int_equal(fixture_state_of(f, ids[0]), PENDING);
    propose(f, result_cmd(f, ids[0], 0, 1,
                          QRAFT__ATTEMPT_OUTCOME__OUTCOME_DELIVERED));
    assert_int_equal(fixture_state_of(f, ids[0]), DELIVERED);
    expect_queue(f, "r", 0, 0);
}

/* Deleting a queue cancels its waiting messages; the active one finishes
 * and does not count in a new queue of the same name. */
static void test_delete(void **state)
{
    struct fixture *f = *state;
    char ids[3][QR_ID_BYTES];
    for (int i = 0; i < 3; i++) {
        propose(f, publish_cmd(f, "d", NULL, ids[i]));
    }
    assert_int_equal(propose(f, delete_queue_cmd("d")), 0);
    uint32_t a;
    uint64_t w;
    assert_false(queue_of(f, "d", &a, &w));
    assert_int_equal(fixture_state_of(f, ids[0]), PENDING);
    assert_int_equal(fixture_state_of(f, ids[1]), CANCELLED);
    assert_int_equal(fixture_state_of(f, ids[2]), CANCELLED);
    assert_int_equal(propose(f, delete_queue_cmd("d")), QR_ENOTFOUND);

    char fresh[QR_ID_BYTES];
    propose(f, publish_cmd(f, "d", NULL, fresh));
    assert_int_equal(fixture_state_of(f, fresh), PENDING);
    expect_queue(f, "d", 1, 0);
    deliver(f, ids[0], 0); /* the old queue's slot: not this queue's */
    expect_queue(f, "d", 1, 0);

    /* The same with a callback: created for a message of the deleted
     * queue, it takes no slot of the new one. */
    char with_cb[QR_ID_BYTES];
    char next[QR_ID_BYTES];
    propose(f, upsert_cmd("e", 5, false, 100));
    propose(f, publish_cmd(f, "e", "http://127.0.0.1:9/callback", with_cb));
    assert_int_equal(propose(f, delete_queue_cmd("e")), 0);
    propose(f, upsert_cmd("e", 1, false, 100));
    propose(f, publish_cmd(f, "e", NULL, next));
    deliver(f, with_cb, 0);
    assert_int_equal(fixture_state_of(f, with_cb), DELIVERED);
    expect_queue(f, "e", 1, 0);
    assert_int_equal(fixture_state_of(f, next), PENDING);
}

/* The limits travel in the command: a queue beyond max_queues, or a
 * parallelism above the limit, is a CONFLICT (the REST API's 412). */
static void test_limits(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(propose(f, upsert_cmd("a", 1, false, 2)), 0);
    assert_int_equal(propose(f, upsert_cmd("b", 1, false, 2)), 0);
    assert_int_equal(propose(f, upsert_cmd("c", 1, false, 2)), QR_ECONFLICT);
    assert_int_equal(propose(f, upsert_cmd("a", 5, false, 2)), 0);
    assert_int_equal(propose(f, upsert_cmd("a", 101, false, 2)), QR_ECONFLICT);
    assert_int_equal(propose(f, upsert_cmd("bad name", 1, false, 0)),
                     QR_EBADREQ);

    /* Content the leader would have refused is a result, never a stop. */
    char long_name[400];
    char id[QR_ID_BYTES];
    memset(long_name, 'x', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    assert_int_equal(propose(f, publish_cmd(f, long_name, NULL, id)),
                     QR_EBADREQ);
    assert_int_equal(fixture_state_of(f, id), -1);
    assert_int_equal(propose(f, upsert_cmd(long_name, 1, false, 0)),
                     QR_EBADREQ);
    assert_int_equal(propose(f, pause_cmd("", true)), QR_ENOTFOUND);
    assert_int_equal(propose(f, delete_queue_cmd(long_name)), QR_ENOTFOUND);
}

/* Below the queues' feature level (a cluster still mixing in nodes without
 * queues) a publish into a queue is a plain message that keeps the name, as
 * those nodes apply it; raising the level turns the semantics on. */
static void test_below_feature_level(void **state)
{
    struct fixture *f = *state;
    char a[QR_ID_BYTES];
    char b[QR_ID_BYTES];
    char c[QR_ID_BYTES];
    propose(f, publish_cmd(f, "old", NULL, a));
    propose(f, publish_cmd(f, "old", NULL, b));
    assert_int_equal(fixture_state_of(f, a), PENDING);
    assert_int_equal(fixture_state_of(f, b), PENDING);
    uint32_t active;
    uint64_t waiting;
    assert_false(queue_of(f, "old", &active, &waiting));

    assert_int_equal(
        propose(f, fixture_feature_level_cmd(QR_FEATURE_LEVEL_QUEUES)), 0);
    propose(f, publish_cmd(f, "old", NULL, c));
    assert_int_equal(fixture_state_of(f, c),
                     PENDING); /* a new queue, free slot */
    expect_queue(f, "old", 1, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fifo_one_at_a_time, setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_parallelism, setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_pause_resume, setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_callbacks_hold_slot, setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_replay_reenters_tail, setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_delete, setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_below_feature_level, setup_level1,
                                        fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
