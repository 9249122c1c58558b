/* Unit tests of node/metrics.c: the Prometheus text carries every metric
 * with HELP and TYPE lines and the values given. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "lib/metrics.h"

static void test_render(void **state)
{
    (void)state;
    struct qr_metrics m = {.publishes = 3,
                           .deliveries_delivered = 2,
                           .deliveries_retry = 1,
                           .deliveries_dead = 4,
                           .retries = 5,
                           .http_requests = 6};
    struct qr_metrics_gauges g = {.term = 7,
                                  .commit_index = 8,
                                  .applied_index = 9,
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
        "# TYPE qraft_dlq_messages gauge\n",
        "\nqraft_dlq_messages 4\n",
        "\nqraft_messages{state=\"retrying\"} 2\n",
        "\nqraft_messages{state=\"cancelled\"} 5\n",
        "\nqraft_raft_term 7\n",
        "\nqraft_raft_commit_index 8\n",
        "\nqraft_raft_applied_index 9\n",
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
