/* Unit tests of node/filter.c: which messages a MessageFilter selects (OR
 * within a field, AND across fields, time bounds), the filters it refuses,
 * and the QStash log states of each kind of event. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "ops/filter.h"

static Qraft__Message message(const char *id, const char *url)
{
    Qraft__Message m = QRAFT__MESSAGE__INIT;
    m.id = (char *)id;
    m.url = (char *)url;
    m.state = QRAFT__MESSAGE_STATE__PENDING;
    m.created_ms = 1000;
    return m;
}

static void test_empty_matches_all(void **state)
{
    (void)state;
    Qraft__MessageFilter f = QRAFT__MESSAGE_FILTER__INIT;
    Qraft__Message m = message("msg_1", "http://a.example/x");
    assert_true(qr_filter_is_empty(&f));
    assert_true(qr_filter_is_empty(NULL));
    assert_true(qr_filter_match(&f, &m));
    assert_true(qr_filter_match(NULL, &m));
    assert_null(qr_filter_unsupported(&f));
}

static void test_or_within_and_across(void **state)
{
    (void)state;
    char *urls[] = {"http://a.example/x", "http://b.example/y"};
    char *queues[] = {"q1"};
    Qraft__MessageFilter f = QRAFT__MESSAGE_FILTER__INIT;
    Qraft__Message a = message("msg_1", "http://a.example/x");
    Qraft__Message b = message("msg_2", "http://b.example/y");
    Qraft__Message c = message("msg_3", "http://c.example/z");

    f.urls = urls;
    f.n_urls = 2;
    assert_false(qr_filter_is_empty(&f));
    assert_true(qr_filter_match(&f, &a));
    assert_true(qr_filter_match(&f, &b));
    assert_false(qr_filter_match(&f, &c));

    /* AND: the queue must match too. */
    f.queue_names = queues;
    f.n_queue_names = 1;
    a.queue = "q1";
    b.queue = "q2";
    assert_true(qr_filter_match(&f, &a));
    assert_false(qr_filter_match(&f, &b));
}

static void test_host_and_path(void **state)
{
    (void)state;
    char *hosts[] = {"Api.Example"};
    char *hosts_port[] = {"api.example:8080"};
    char *paths[] = {"/hook"};
    Qraft__MessageFilter f = QRAFT__MESSAGE_FILTER__INIT;
    Qraft__Message m = message("msg_1", "https://api.example:8080/hook?a=1");
    Qraft__Message root = message("msg_2", "https://api.example");
    Qraft__Message other = message("msg_3", "https://api.example.org/hook");

    f.hosts = hosts;
    f.n_hosts = 1;
    assert_true(qr_filter_match(&f, &m)); /* host name alone, any case */
    assert_true(qr_filter_match(&f, &root));
    assert_false(qr_filter_match(&f, &other));
    f.hosts = hosts_port;
    assert_true(qr_filter_match(&f, &m));
    assert_false(qr_filter_match(&f, &root));

    f.n_hosts = 0;
    f.paths = paths;
    f.n_paths = 1;
    assert_true(qr_filter_match(&f, &m)); /* the query is not the path */
    assert_false(qr_filter_match(&f, &root));
    assert_true(qr_filter_match(&f, &other));
    paths[0] = "/";
    assert_true(qr_filter_match(&f, &root));
}

static void test_ids_status_prefix_category(void **state)
{
    (void)state;
    char *ids[] = {"msg_9", "msg_1"};
    int32_t statuses[] = {404, 500};
    Qraft__AttemptResponse resp = QRAFT__ATTEMPT_RESPONSE__INIT;
    Qraft__LastError err = QRAFT__LAST_ERROR__INIT;
    Qraft__MessageFilter f = QRAFT__MESSAGE_FILTER__INIT;
    Qraft__Message m = message("msg_1", "http://a.example/x");

    f.message_ids = ids;
    f.n_message_ids = 2;
    assert_true(qr_filter_match(&f, &m));
    m.id = "msg_2";
    assert_false(qr_filter_match(&f, &m));
    m.id = "msg_1";

    f.response_statuses = statuses;
    f.n_response_statuses = 2;
    assert_false(qr_filter_match(&f, &m)); /* no response at all */
    resp.status = 500;
    m.last_response = &resp;
    assert_true(qr_filter_match(&f, &m));
    resp.status = 0;
    err.status = 404;
    m.last_error = &err;
    assert_true(qr_filter_match(&f, &m)); /* from the last error */

    f.url_prefix = "http://a.";
    assert_true(qr_filter_match(&f, &m));
    f.url_prefix = "http://b.";
    assert_false(qr_filter_match(&f, &m));
    f.url_prefix = "";

    err.category = "budget_exhausted";
    err.cause = "server_error";
    f.error_category = "server_error";
    assert_true(qr_filter_match(&f, &m));
    f.error_category = "timeout";
    assert_false(qr_filter_match(&f, &m));
}

static void test_time_bounds(void **state)
{
    (void)state;
    Qraft__MessageFilter f = QRAFT__MESSAGE_FILTER__INIT;
    Qraft__Message m = message("msg_1", "http://a.example/x");

    f.from_ms = 1000; /* inclusive */
    f.to_ms = 2000;
    assert_true(qr_filter_match(&f, &m));
    m.created_ms = 999;
    assert_false(qr_filter_match(&f, &m));
    m.created_ms = 2000;
    assert_true(qr_filter_match(&f, &m));
    m.created_ms = 2001;
    assert_false(qr_filter_match(&f, &m));
    /* A dead letter is placed by its dead-letter time. */
    m.created_ms = 10;
    m.state = QRAFT__MESSAGE_STATE__DEAD_LETTERED;
    m.dead_lettered_ms = 1500;
    assert_true(qr_filter_match(&f, &m));
    assert_true(qr_filter_match_time(&f, 1000));
    assert_false(qr_filter_match_time(&f, 2001));
    assert_true(qr_filter_match_time(NULL, 5));
}

/* scheduleId: the ticks of the schedules named, nothing else. */
static void test_schedule_id(void **state)
{
    (void)state;
    char *ids[] = {"nightly", "hourly"};
    Qraft__MessageFilter f = QRAFT__MESSAGE_FILTER__INIT;
    f.schedule_ids = ids;
    f.n_schedule_ids = 2;
    Qraft__Message tick = message("msg_1", "http://a.example/x");
    Qraft__Message other = message("msg_2", "http://a.example/x");
    Qraft__Message plain = message("msg_3", "http://a.example/x");
    tick.schedule_id = "hourly";
    other.schedule_id = "weekly";
    assert_null(qr_filter_unsupported(&f));
    assert_false(qr_filter_is_empty(&f));
    assert_true(qr_filter_match(&f, &tick));
    assert_false(qr_filter_match(&f, &other));
    assert_false(qr_filter_match(&f, &plain));
}

/* The callback messages of a message: those whose source it is; a
 * message that is no callback never matches. */
static void test_source_message_id(void **state)
{
    (void)state;
    char *ids[] = {"msg_src"};
    Qraft__MessageFilter f = QRAFT__MESSAGE_FILTER__INIT;
    f.source_message_ids = ids;
    f.n_source_message_ids = 1;
    Qraft__Message cb = message("msg_cb", "http://a.example/cb");
    Qraft__Message other = message("msg_cb2", "http://a.example/cb");
    Qraft__Message source = message("msg_src", "http://a.example/x");
    cb.source_message_id = "msg_src";
    cb.callback_kind = QRAFT__CALLBACK_KIND__CALLBACK;
    other.source_message_id = "msg_else";
    assert_false(qr_filter_is_empty(&f));
    assert_true(qr_filter_match(&f, &cb));
    assert_false(qr_filter_match(&f, &other));
    assert_false(qr_filter_match(&f, &source));
}

/* Every field of a MessageFilter is evaluated now: none is refused. */
static void test_every_field_supported(void **state)
{
    (void)state;
    char *one[] = {"x"};
    Qraft__MessageFilter f = QRAFT__MESSAGE_FILTER__INIT;
    f.topic_names = f.labels = f.caller_ips = f.flow_control_keys =
        f.schedule_ids = one;
    f.n_topic_names = f.n_labels = f.n_caller_ips = f.n_flow_control_keys =
        f.n_schedule_ids = 1;
    assert_false(qr_filter_is_empty(&f));
    assert_null(qr_filter_unsupported(&f));
}

/* The metadata a publish carries (URL group, labels, caller, flow-control
 * key): OR within a field (a message matches a label filter when it has
 * any of the labels), AND across fields. */
static void test_metadata_filters(void **state)
{
    (void)state;
    char *labels[] = {"gold", "eu"};
    Qraft__Message m = message("msg_1", "http://a.example/x");
    m.topic_name = "orders";
    m.labels = labels;
    m.n_labels = 2;
    m.caller_ip = "10.0.0.7";
    m.flow_control_key = "tenant-1";
    Qraft__Message bare = message("msg_2", "http://a.example/x");

    char *topics[] = {"other", "orders"};
    char *want_labels[] = {"silver", "eu"};
    char *ips[] = {"10.0.0.7"};
    char *keys[] = {"tenant-1"};
    char *nope[] = {"nope"};
    Qraft__MessageFilter f = QRAFT__MESSAGE_FILTER__INIT;
    f.topic_names = topics;
    f.n_topic_names = 2;
    assert_null(qr_filter_unsupported(&f));
    assert_true(qr_filter_match(&f, &m));
    assert_false(qr_filter_match(&f, &bare));
    f.labels = want_labels;
    f.n_labels = 2;
    f.caller_ips = ips;
    f.n_caller_ips = 1;
    f.flow_control_keys = keys;
    f.n_flow_control_keys = 1;
    assert_null(qr_filter_unsupported(&f));
    assert_true(qr_filter_match(&f, &m));
    assert_false(qr_filter_match(&f, &bare));
    f.labels = nope;
    f.n_labels = 1;
    assert_false(qr_filter_match(&f, &m)); /* AND across fields */
    f.n_labels = 0;
    f.flow_control_keys = nope;
    assert_false(qr_filter_match(&f, &m));
    f.n_flow_control_keys = 0;
    f.caller_ips = nope;
    assert_false(qr_filter_match(&f, &m));
}

static size_t states_of(Qraft__MessageState st,
                        const char *detail,
                        Qraft__LogState out[QR_FILTER_MAX_LOG_STATES])
{
    Qraft__Event e = QRAFT__EVENT__INIT;
    e.state = st;
    e.detail = (char *)detail;
    return qr_filter_log_states(&e, out);
}

static void assert_states(Qraft__MessageState st,
                          const char *detail,
                          const char *const *want)
{
    Qraft__LogState out[QR_FILTER_MAX_LOG_STATES];
    size_t n = states_of(st, detail, out);
    size_t i = 0;
    for (; want[i] != NULL; i++) {
        assert_true(i < n);
        assert_string_equal(qr_filter_log_state_name(out[i]), want[i]);
    }
    assert_int_equal(n, i);
}

/* The details fsm.c writes (append_event) and the QStash states they give,
 * oldest first. */
static void test_log_states(void **state)
{
    (void)state;
    assert_states(QRAFT__MESSAGE_STATE__PENDING, "published",
                  (const char *const[]){"CREATED", NULL});
    assert_states(QRAFT__MESSAGE_STATE__PENDING, "replayed from the DLQ",
                  (const char *const[]){"CREATED", NULL});
    assert_states(QRAFT__MESSAGE_STATE__DELIVERED, "delivered (HTTP 200)",
                  (const char *const[]){"ACTIVE", "DELIVERED", NULL});
    assert_states(QRAFT__MESSAGE_STATE__RETRYING,
                  "attempt failed: server_error (HTTP 500)",
                  (const char *const[]){"ACTIVE", "ERROR", "RETRY", NULL});
    assert_states(QRAFT__MESSAGE_STATE__DEAD_LETTERED,
                  "dead-lettered: client_error (HTTP 404)",
                  (const char *const[]){"ACTIVE", "FAILED", NULL});
    assert_states(QRAFT__MESSAGE_STATE__DEAD_LETTERED, "deleted from the DLQ",
                  (const char *const[]){NULL});
    assert_states(QRAFT__MESSAGE_STATE__CANCELLED, "cancelled",
                  (const char *const[]){"CANCEL_REQUESTED", "CANCELLED", NULL});
    /* Queues: accepted into the queue is CREATED; its turn adds nothing. */
    assert_states(QRAFT__MESSAGE_STATE__QUEUED, "published into its queue",
                  (const char *const[]){"CREATED", NULL});
    assert_states(QRAFT__MESSAGE_STATE__PENDING,
                  "activated: its turn in the queue",
                  (const char *const[]){NULL});
    assert_states(QRAFT__MESSAGE_STATE__CANCELLED,
                  "cancelled: its queue was deleted",
                  (const char *const[]){"CANCEL_REQUESTED", "CANCELLED", NULL});
}

static void test_parse_log_state(void **state)
{
    (void)state;
    Qraft__LogState out[QR_FILTER_MAX_LOG_STATES];
    assert_int_equal(qr_filter_parse_log_state("delivered", 9, out), 1);
    assert_int_equal(out[0], QRAFT__LOG_STATE__LOG_DELIVERED);
    assert_int_equal(qr_filter_parse_log_state("CANCELED", 8, out), 1);
    assert_int_equal(out[0], QRAFT__LOG_STATE__LOG_CANCELLED);
    assert_int_equal(qr_filter_parse_log_state("CANCELLED", 9, out), 1);
    assert_int_equal(out[0], QRAFT__LOG_STATE__LOG_CANCELLED);
    assert_int_equal(qr_filter_parse_log_state("IN_PROGRESS", 11, out), 3);
    assert_int_equal(qr_filter_parse_log_state("CANCEL_REQUESTED", 16, out), 1);
    assert_int_equal(out[0], QRAFT__LOG_STATE__LOG_CANCEL_REQUESTED);
    assert_int_equal(qr_filter_parse_log_state("PENDING", 7, out), -1);
    assert_int_equal(qr_filter_parse_log_state("", 0, out), -1);
    assert_int_equal(qr_filter_parse_log_state("CREATEDX", 7, out), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_matches_all),
        cmocka_unit_test(test_or_within_and_across),
        cmocka_unit_test(test_host_and_path),
        cmocka_unit_test(test_ids_status_prefix_category),
        cmocka_unit_test(test_time_bounds),
        cmocka_unit_test(test_schedule_id),
        cmocka_unit_test(test_source_message_id),
        cmocka_unit_test(test_every_field_supported),
        cmocka_unit_test(test_metadata_filters),
        cmocka_unit_test(test_log_states),
        cmocka_unit_test(test_parse_log_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
