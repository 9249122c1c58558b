/* Unit tests of node/lib/utf8.c: what the strict validator takes and
 * refuses (the edges of every range in Unicode table 3-7), and how the
 * lossy copy replaces what it refuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "lib/utf8.h"

static bool valid(const char *s)
{
    return qr_utf8_valid(s, strlen(s));
}

static void test_valid_text(void **state)
{
    (void)state;
    assert_true(qr_utf8_valid("", 0));
    assert_true(valid("http://127.0.0.1:9/x?a=b"));
    assert_true(valid("caf\xC3\xA9"));      /* U+00E9 */
    assert_true(valid("\xC2\x80"));         /* U+0080, lowest 2 */
    assert_true(valid("\xDF\xBF"));         /* U+07FF */
    assert_true(valid("\xE0\xA0\x80"));     /* U+0800, lowest 3 */
    assert_true(valid("\xED\x9F\xBF"));     /* U+D7FF */
    assert_true(valid("\xEE\x80\x80"));     /* U+E000 */
    assert_true(valid("\xEF\xBF\xBD"));     /* U+FFFD */
    assert_true(valid("\xF0\x90\x80\x80")); /* U+10000 */
    assert_true(valid("\xF0\x9F\x98\x80")); /* an emoji */
    assert_true(valid("\xF4\x8F\xBF\xBF")); /* U+10FFFF */
    assert_true(qr_utf8_valid("a\0b", 3));  /* U+0000 is text */
}

static void test_invalid_text(void **state)
{
    (void)state;
    assert_false(valid("\xFF"));
    assert_false(valid("x\xFF"));
    assert_false(valid("\x80"));             /* a lone continuation */
    assert_false(valid("\xC0\xAF"));         /* overlong '/' */
    assert_false(valid("\xC1\xBF"));         /* overlong */
    assert_false(valid("\xE0\x80\xAF"));     /* overlong */
    assert_false(valid("\xE0\x9F\xBF"));     /* overlong U+07FF */
    assert_false(valid("\xF0\x8F\xBF\xBF")); /* overlong U+FFFF */
    assert_false(valid("\xED\xA0\x80"));     /* surrogate U+D800 */
    assert_false(valid("\xED\xBF\xBF"));     /* surrogate U+DFFF */
    assert_false(valid("\xF4\x90\x80\x80")); /* U+110000 */
    assert_false(valid("\xF5\x80\x80\x80"));
    assert_false(valid("\xC3")); /* cut short */
    assert_false(valid("\xE2\x82"));
    assert_false(valid("\xF0\x9F\x98"));
    assert_false(valid("\xC3("));               /* not a continuation */
    assert_false(qr_utf8_valid("\xC3\xA9", 1)); /* n counts, not NUL */
}

static void assert_lossy(const char *in, size_t n, const char *want)
{
    char out[QR_UTF8_LOSSY_BYTES(16)];
    assert_true(n <= 16);
    size_t len = qr_utf8_lossy(in, n, out);
    assert_int_equal(len, strlen(want));
    assert_string_equal(out, want);
    assert_true(qr_utf8_valid(out, len));
}

#define R QR_UTF8_REPLACEMENT

static void test_lossy_replaces_maximal_subparts(void **state)
{
    (void)state;
    assert_lossy("", 0, "");
    assert_lossy("caf\xC3\xA9", 5, "caf\xC3\xA9");
    assert_lossy("x\xFF", 2, "x" R);
    assert_lossy("\xFF\xFE", 2, R R);
    /* A cut sequence is one replacement; what follows is kept. */
    assert_lossy(
        "\xE2\x82"
        "a",
        3, R "a");
    assert_lossy("\xF0\x9F\x98", 3, R);
    /* An overlong or surrogate start byte pair: each byte on its own. */
    assert_lossy("\xC0\xAF", 2, R R);
    assert_lossy("\xED\xA0\x80", 3, R R R);
    assert_lossy("\xF4\x90\x80\x80", 4, R R R R);
    /* The worst case: every byte grows to three. */
    assert_lossy("\x80\x80\x80\x80\x80", 5, R R R R R);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_text),
        cmocka_unit_test(test_invalid_text),
        cmocka_unit_test(test_lossy_replaces_maximal_subparts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
