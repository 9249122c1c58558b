/* Unit tests of node/lib/metrics.c: the Prometheus text carries every
 * metric with HELP and TYPE lines and the values given; a histogram's
 * buckets are cumulative, in seconds, with _sum and _count; labelled
 * counters and hosts keep their caps; and of
 * node/lib/loopwatch.c: a timer that fires late by the stall threshold or
 * more counts a stall and keeps the longest. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/loopwatch.h"
#include "lib/metrics.h"

/* Fails naming the first of want[0..n) that text lacks. */
static void assert_all_in(const char *text, const char *const *want, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strstr(text, want[i]) == NULL) {
            fail_msg("missing %s in:\n%s", want[i], text);
        }
    }
}

static void test_render(void **state)
{
    (void)state;
    static struct qr_metrics m = {.publishes = 3,
                                  .deliveries_delivered = 2,
                                  .deliveries_retry = 1,
                                  .deliveries_dead = 4,
                                  .retries = 5,
                                  .loop_stalls = 11,
                                  .loop_stall_max_ms = 12};
    qr_metrics_count(&m.http, "/v2/publish/{url}", "201");
    struct qr_metrics_gauges g = {.term = 7,
                                  .commit_index = 8,
                                  .applied_index = 9,
                                  .entries_proposed = 13,
                                  .commands_proposed = 14,
                                  .snapshots = 15,
                                  .snapshot_bytes = 16,
                                  .leader = true,
                                  .shards_owned = 256,
                                  .have_counts = true,
                                  .state_counts = {0, 1, 0, 2, 3, 4, 5},
                                  .store_corrupt_records = 10,
                                  .retention_pressure = true,
                                  .version = "1.2.3",
                                  .commit = "abc",
                                  .max_feature_level = 6};
    QR_METRICS_INC(&m, publishes);
    QR_METRICS_INC((struct qr_metrics *)NULL, publishes);
    char *text = qr_metrics_render(&m, &g);
    assert_non_null(text);
    static const char *const want[] = {
        "# TYPE qraft_publishes_total counter\n",
        "\nqraft_publishes_total 4\n",
        "\nqraft_deliveries_total{outcome=\"delivered\"} 2\n",
        "\nqraft_deliveries_total{outcome=\"retry\"} 1\n",
        "\nqraft_deliveries_total{outcome=\"dead\"} 4\n",
        "\nqraft_retries_total 5\n",
        "\nqraft_http_requests_total{route=\"/v2/publish/{url}\",code=\"201\"}"
        " 1\n",
        "\nqraft_build_info{version=\"1.2.3\",commit=\"abc\","
        "feature_level=\"6\"} 1\n",
        "\nqraft_raft_apply_lag_entries 0\n",
        "\nqraft_loop_stalls_total 11\n",
        "\nqraft_loop_stall_max_seconds 0.012\n",
        "# TYPE qraft_dlq_messages gauge\n",
        "\nqraft_dlq_messages 4\n",
        "\nqraft_messages{state=\"retrying\"} 2\n",
        "\nqraft_messages{state=\"pending\"} 1\n",
        "\nqraft_messages{state=\"cancelled\"} 5\n",
        "\nqraft_raft_term 7\n",
        "\nqraft_raft_commit_index 8\n",
        "\nqraft_raft_applied_index 9\n",
        "\nqraft_raft_entries_proposed_total 13\n",
        "\nqraft_raft_commands_proposed_total 14\n",
        "# TYPE qraft_snapshots_total counter\n",
        "\nqraft_snapshots_total 15\n",
        "\nqraft_snapshot_last_bytes 16\n",
        "\nqraft_leader 1\n",
        "\nqraft_shards_owned 256\n",
        "# TYPE qraft_store_corrupt_records_total counter\n",
        "\nqraft_store_corrupt_records_total 10\n",
        "# TYPE qraft_retention_pressure gauge\n",
        "\nqraft_retention_pressure 1\n",
        "# HELP qraft_leader ",
    };
    assert_all_in(text, want, sizeof want / sizeof want[0]);
    assert_int_equal(text[strlen(text) - 1], '\n');
    /* Nothing is stored as delivering: the state is not shown. */
    assert_null(strstr(text, "state=\"delivering\""));
    assert_null(strstr(text, "state=\"unspecified\""));
    free(text);

    /* Without store counts the state gauges are left out, not zero. */
    g.have_counts = false;
    text = qr_metrics_render(NULL, &g);
    assert_non_null(text);
    assert_null(strstr(text, "qraft_dlq_messages"));
    assert_non_null(strstr(text, "\nqraft_publishes_total 0\n"));
    free(text);
}

/* The histogram's text: cumulative buckets with le in seconds, +Inf equal
 * to _count, _sum in seconds; a bound itself falls in its bucket. */
static void test_histogram(void **state)
{
    (void)state;
    static struct qr_metrics m;
    qr_metrics_observe(&m.publish_seconds, 300);     /* 0.0003 s */
    qr_metrics_observe(&m.publish_seconds, 1000);    /* 0.001 s, a bound */
    qr_metrics_observe(&m.publish_seconds, 40000);   /* 0.04 s */
    qr_metrics_observe(&m.publish_seconds, 2000000); /* 2 s */
    qr_metrics_observe(&m.publish_seconds, UINT64_C(400000000)); /* 400 s */
    qr_metrics_observe(NULL, 5);
    struct qr_metrics_gauges g = {0};
    char *text = qr_metrics_render(&m, &g);
    assert_non_null(text);
    static const char *const want[] = {
        "# TYPE qraft_publish_duration_seconds histogram\n",
        "\nqraft_publish_duration_seconds_bucket{le=\"0.0005\"} 1\n",
        "\nqraft_publish_duration_seconds_bucket{le=\"0.001\"} 2\n",
        "\nqraft_publish_duration_seconds_bucket{le=\"0.025\"} 2\n",
        "\nqraft_publish_duration_seconds_bucket{le=\"0.05\"} 3\n",
        "\nqraft_publish_duration_seconds_bucket{le=\"2.5\"} 4\n",
        "\nqraft_publish_duration_seconds_bucket{le=\"300\"} 4\n",
        "\nqraft_publish_duration_seconds_bucket{le=\"+Inf\"} 5\n",
        "\nqraft_publish_duration_seconds_sum 402.041300\n",
        "\nqraft_publish_duration_seconds_count 5\n",
        "\nqraft_apply_duration_seconds_count 0\n",
        "\nqraft_apply_duration_seconds_bucket{le=\"+Inf\"} 0\n",
    };
    assert_all_in(text, want, sizeof want / sizeof want[0]);
    free(text);
}

/* Labelled counters: one sample per pair; past the cap every new pair is
 * counted under "(other)". Hosts: host:port from the URL, the cap, and a
 * URL without a host under "(other)"; label values are escaped. */
static void test_labels_and_hosts(void **state)
{
    (void)state;
    static struct qr_metrics m;
    qr_metrics_count(&m.rpc, "publish", "OK");
    qr_metrics_count(&m.rpc, "publish", "OK");
    qr_metrics_count(&m.rpc, "get", "NOT_FOUND");
    assert_int_equal(m.rpc.n_pairs, 2);
    assert_int_equal(m.rpc.pairs[0].n, 2);
    for (int i = 0; i < QR_METRICS_MAX_PAIRS + 5; i++) {
        char code[16];
        snprintf(code, sizeof code, "%d", i);
        qr_metrics_count(&m.http, "/x", code);
    }
    assert_int_equal(m.http.n_pairs, QR_METRICS_MAX_PAIRS);
    assert_int_equal(m.http.pairs[QR_METRICS_MAX_PAIRS].n, 5);

    size_t a = qr_metrics_host_slot(&m, "http://Example.COM/path");
    size_t b = qr_metrics_host_slot(&m, "https://user:pw@example.com:8443/x");
    size_t c = qr_metrics_host_slot(&m, "http://example.com:80/other");
    size_t d = qr_metrics_host_slot(&m, "https://[::1]/");
    assert_int_equal(a, 0);
    assert_int_equal(b, 1);
    assert_int_equal(c, 0);
    assert_int_equal(d, 2);
    assert_string_equal(m.hosts[0].host, "example.com:80");
    assert_string_equal(m.hosts[1].host, "example.com:8443");
    assert_string_equal(m.hosts[2].host, "[::1]:443");
    qr_metrics_host_started(&m, a);
    qr_metrics_host_started(&m, a);
    qr_metrics_host_ended(&m, a, true);
    assert_int_equal(m.hosts[0].in_flight, 1);
    assert_int_equal(m.hosts[0].failures, 1);
    assert_int_equal(qr_metrics_host_slot(&m, "no-scheme"),
                     QR_METRICS_MAX_HOSTS);
    for (int i = 0; i < QR_METRICS_MAX_HOSTS; i++) {
        char url[64];
        snprintf(url, sizeof url, "http://h%d.example/", i);
        qr_metrics_host_slot(&m, url);
    }
    assert_int_equal(m.n_hosts, QR_METRICS_MAX_HOSTS);
    assert_int_equal(qr_metrics_host_slot(&m, "http://late.example/"),
                     QR_METRICS_MAX_HOSTS);

    struct qr_metrics_gauges g = {.version = "a\"b\\c\nd"};
    char *text = qr_metrics_render(&m, &g);
    assert_non_null(text);
    static const char *const want[] = {
        "\nqraft_rpc_requests_total{kind=\"publish\",code=\"OK\"} 2\n",
        "\nqraft_rpc_requests_total{kind=\"get\",code=\"NOT_FOUND\"} 1\n",
        "\nqraft_http_requests_total{route=\"(other)\",code=\"(other)\"} 5\n",
        "\nqraft_host_deliveries_in_flight{host=\"example.com:80\"} 1\n",
        "\nqraft_host_delivery_failures_total{host=\"example.com:80\"} 1\n",
        "\nqraft_host_delivery_failures_total{host=\"(other)\"} 0\n",
        "qraft_build_info{version=\"a\\\"b\\\\c\\nd\",",
    };
    assert_all_in(text, want, sizeof want / sizeof want[0]);
    /* One (other) sample per family, however many hosts went there. */
    const char *first = strstr(text, "in_flight{host=\"(other)\"}");
    assert_non_null(first);
    assert_null(strstr(first + 1, "in_flight{host=\"(other)\"}"));
    free(text);
}

/* Queues past the cap are summed under "(other)"; databases by name. */
static void test_queues(void **state)
{
    (void)state;
    static struct qr_metrics_gauges g = {
        .have_counts = true,
        .n_queues = 1,
        .n_other_queues = 2,
        .other_queues = {.waiting = 7, .active = 3},
        .oldest_due_age_ms = 1500,
        .n_dbs = 1};
    snprintf(g.queues[0].name, sizeof g.queues[0].name, "q1");
    g.queues[0].waiting = 4;
    g.dbs[0].name = "msgs";
    g.dbs[0].bytes = 8192;
    char *text = qr_metrics_render(NULL, &g);
    assert_non_null(text);
    static const char *const want[] = {
        "\nqraft_queue_messages{queue=\"q1\",state=\"waiting\"} 4\n",
        "\nqraft_queue_messages{queue=\"q1\",state=\"active\"} 0\n",
        "\nqraft_queue_messages{queue=\"(other)\",state=\"waiting\"} 7\n",
        "\nqraft_queue_messages{queue=\"(other)\",state=\"active\"} 3\n",
        "\nqraft_queues 3\n",
        "\nqraft_oldest_pending_age_seconds 1.500\n",
        "\nqraft_store_db_bytes{db=\"msgs\"} 8192\n",
    };
    assert_all_in(text, want, sizeof want / sizeof want[0]);
    free(text);
}

#define MS UINT64_C(1000000)

static void test_loopwatch(void **state)
{
    (void)state;
    struct qr_metrics m = {0};
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct qr_loopwatch w;
    assert_int_equal(qr_loopwatch_start(&w, &loop, &m), 0);

    /* On time, and late by less than the threshold: no stall. */
    uint64_t t = w.last_ns + QR_LOOPWATCH_PERIOD_MS * MS;
    qr_loopwatch_note(&w, t);
    t += (QR_LOOPWATCH_PERIOD_MS + QR_LOOPWATCH_STALL_MS - 1) * MS;
    qr_loopwatch_note(&w, t);
    assert_int_equal(m.loop_stalls, 0);
    assert_int_equal(m.loop_stall_max_ms, 0);

    /* Late by 70 ms, then by 300 ms, then by 60 ms: three stalls, the
     * longest kept. */
    t += (QR_LOOPWATCH_PERIOD_MS + 70) * MS;
    qr_loopwatch_note(&w, t);
    t += (QR_LOOPWATCH_PERIOD_MS + 300) * MS;
    qr_loopwatch_note(&w, t);
    t += (QR_LOOPWATCH_PERIOD_MS + 60) * MS;
    qr_loopwatch_note(&w, t);
    assert_int_equal(m.loop_stalls, 3);
    assert_int_equal(m.loop_stall_max_ms, 300);

    /* The first stall was logged at once; the next two wait for the log
     * interval, and a firing after it (late itself) logs them. */
    assert_int_equal(w.unlogged, 2);
    assert_int_equal(w.unlogged_max_ms, 300);
    t += QR_LOOPWATCH_LOG_MS * MS;
    qr_loopwatch_note(&w, t);
    assert_int_equal(w.unlogged, 0);
    assert_int_equal(m.loop_stalls, 4);

    qr_loopwatch_close(&w, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_labels_and_hosts),
        cmocka_unit_test(test_queues),
        cmocka_unit_test(test_loopwatch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
