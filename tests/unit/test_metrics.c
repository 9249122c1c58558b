/* Unit tests of node/lib/metrics.c: the Prometheus text carries every
 * metric with HELP and TYPE lines and the values given; and of
 * node/lib/loopwatch.c: a timer that fires late by the stall threshold or
 * more counts a stall and keeps the longest. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "lib/loopwatch.h"
#include "lib/metrics.h"

static void test_render(void **state)
{
    (void)state;
    struct qr_metrics m = {.publishes = 3,
                           .deliveries_delivered = 2,
                           .deliveries_retry = 1,
                           .deliveries_dead = 4,
                           .retries = 5,
                           .http_requests = 6,
                           .loop_stalls = 11,
                           .loop_stall_max_ms = 12};
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
                                  .retention_pressure = true};
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
        "\nqraft_http_requests_total 6\n",
        "\nqraft_loop_stalls_total 11\n",
        "\nqraft_loop_stall_max_ms 12\n",
        "# TYPE qraft_dlq_messages gauge\n",
        "\nqraft_dlq_messages 4\n",
        "\nqraft_messages{state=\"retrying\"} 2\n",
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
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (strstr(text, want[i]) == NULL) {
            fail_msg("missing %s in:\n%s", want[i], text);
        }
    }
    assert_int_equal(text[strlen(text) - 1], '\n');
    free(text);

    /* Without store counts the state gauges are left out, not zero. */
    g.have_counts = false;
    text = qr_metrics_render(NULL, &g);
    assert_non_null(text);
    assert_null(strstr(text, "qraft_dlq_messages"));
    assert_non_null(strstr(text, "\nqraft_publishes_total 0\n"));
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
        cmocka_unit_test(test_loopwatch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
