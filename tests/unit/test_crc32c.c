/* Unit tests of node/lib/crc32c.c: the CRC-32C check value, the test
 * vectors of RFC 3720 (iSCSI) B.4, and continuation across any split. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "lib/crc32c.h"

static void test_check_value(void **state)
{
    (void)state;
    assert_int_equal(qr_crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(qr_crc32c(0, "", 0), 0);
}

static void test_rfc3720_vectors(void **state)
{
    uint8_t buf[32];
    (void)state;

    memset(buf, 0, sizeof buf);
    assert_int_equal(qr_crc32c(0, buf, sizeof buf), 0x8A9136AAu);
    memset(buf, 0xff, sizeof buf);
    assert_int_equal(qr_crc32c(0, buf, sizeof buf), 0x62A8AB43u);
    for (size_t i = 0; i < sizeof buf; i++) {
        buf[i] = (uint8_t)i;
    }
    assert_int_equal(qr_crc32c(0, buf, sizeof buf), 0x46DD794Eu);
    for (size_t i = 0; i < sizeof buf; i++) {
        buf[i] = (uint8_t)(31 - i);
    }
    assert_int_equal(qr_crc32c(0, buf, sizeof buf), 0x113FDB5Cu);
}

/* The CRC of a then b, continued from the CRC of a, equals the CRC of the
 * whole, wherever the split falls and however the bytes are aligned. */
static void test_continuation(void **state)
{
    uint8_t buf[301];
    (void)state;

    for (size_t i = 0; i < sizeof buf; i++) {
        buf[i] = (uint8_t)(i * 131 + 7);
    }
    for (size_t off = 0; off < 8; off++) {
        size_t len = sizeof buf - off;
        uint32_t whole = qr_crc32c(0, buf + off, len);
        for (size_t n = 0; n <= len; n++) {
            uint32_t a = qr_crc32c(0, buf + off, n);
            assert_int_equal(qr_crc32c(a, buf + off + n, len - n), whole);
        }
    }
    /* One bit changed anywhere changes the CRC. */
    uint32_t whole = qr_crc32c(0, buf, sizeof buf);
    for (size_t i = 0; i < sizeof buf; i++) {
        buf[i] ^= 0x10;
        assert_int_not_equal(qr_crc32c(0, buf, sizeof buf), whole);
        buf[i] ^= 0x10;
    }
}

/* The CPU's instruction (where qr_crc32c uses it) and the portable tables
 * agree for every length up to a few words past eight, every alignment and
 * every starting CRC tried. */
static void test_fast_path_matches_the_tables(void **state)
{
    uint8_t buf[4096 + 8];
    (void)state;
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof buf; i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (uint8_t)(x >> 16);
    }
    const uint32_t starts[] = {0, 1, 0xE3069283u, 0xFFFFFFFFu};
    for (size_t s = 0; s < sizeof starts / sizeof starts[0]; s++) {
        for (size_t off = 0; off < 8; off++) {
            for (size_t len = 0; len <= 64; len++) {
                assert_int_equal(qr_crc32c(starts[s], buf + off, len),
                                 qr_crc32c_portable(starts[s], buf + off, len));
            }
            assert_int_equal(qr_crc32c(starts[s], buf + off, 4096),
                             qr_crc32c_portable(starts[s], buf + off, 4096));
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_path_matches_the_tables),
        cmocka_unit_test(test_check_value),
        cmocka_unit_test(test_rfc3720_vectors),
        cmocka_unit_test(test_continuation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
