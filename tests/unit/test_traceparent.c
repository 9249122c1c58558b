/* Unit tests of node/lib/traceparent.c: the strict W3C traceparent parser
 * (what it takes, every way a value is refused), the writer's round trip,
 * and new ids that are never all zero. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "lib/traceparent.h"

#define GOOD "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static void test_parse_and_format(void **state)
{
    (void)state;
    struct qr_traceparent tp;
    char out[QR_TRACEPARENT_BYTES];
    assert_true(qr_traceparent_parse(GOOD, &tp));
    assert_int_equal(tp.trace_id[0], 0x4b);
    assert_int_equal(tp.trace_id[15], 0x36);
    assert_int_equal(tp.span_id[0], 0x00);
    assert_int_equal(tp.span_id[7], 0xb7);
    assert_int_equal(tp.flags, 1);
    qr_traceparent_format(&tp, out);
    assert_string_equal(out, GOOD);
}

static void test_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
        GOOD "0",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
    };
    struct qr_traceparent tp;
    memset(&tp, 0xaa, sizeof tp);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(qr_traceparent_parse(bad[i], &tp));
        assert_int_equal(tp.flags, 0xaa); /* untouched */
    }
    assert_false(qr_traceparent_parse(NULL, &tp));
}

static void test_new_ids(void **state)
{
    (void)state;
    uint8_t a[16], b[16];
    assert_int_equal(qr_traceparent_new_id(a, sizeof a), 0);
    assert_int_equal(qr_traceparent_new_id(b, sizeof b), 0);
    assert_memory_not_equal(a, b, sizeof a);
    char hex[33];
    qr_traceparent_hex(a, sizeof a, hex);
    assert_int_equal(strlen(hex), 32);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_format),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_new_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
