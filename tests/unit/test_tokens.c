/* Unit tests of node/lib/tokens.c: the token file's format (good files,
 * every kind of bad line, each refused with its line number and without
 * the secret), lookup by secret, and the constant-time compare; and of
 * node/api/scopes.c: every RPC kind the protocol defines has a scope. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/scopes.h"
#include "lib/err.h"
#include "lib/tokens.h"
#include "qraft.pb-c.h"

#define SECRET_A "aaaaaaaaaaaaaaaa-publisher"
#define SECRET_B "bbbbbbbbbbbbbbbb-reader"
#define SECRET_C "cccccccccccccccc-operator"

static int parse(struct qr_tokens *t, const char *text, char *err)
{
    qr_tokens_init(t);
    return qr_tokens_parse(t, text, strlen(text), "tokens.txt", err,
                           QR_ERRMSG_BYTES);
}

static void test_good_file(void **state)
{
    (void)state;
    struct qr_tokens t;
    char err[QR_ERRMSG_BYTES];
    const char *text =
        "# who may do what\n"
        "\n"
        "ci-publisher publish " SECRET_A
        "\n"
        "   \t # an indented comment\n"
        "dashboard\tread\t" SECRET_B
        "\r\n"
        "ops  publish,read,admin  " SECRET_C; /* no final newline */

    assert_int_equal(parse(&t, text, err), 0);
    assert_int_equal(t.n, 3);
    assert_string_equal(t.v[0].name, "ci-publisher");
    assert_int_equal(t.v[0].scopes, QR_SCOPE_PUBLISH);
    assert_string_equal(t.v[1].name, "dashboard");
    assert_int_equal(t.v[1].scopes, QR_SCOPE_READ);
    assert_string_equal(t.v[1].secret, SECRET_B); /* no \r */
    assert_int_equal(t.v[2].scopes, QR_SCOPE_ALL);

    const struct qr_token *tok = qr_tokens_find(&t, SECRET_B, strlen(SECRET_B));
    assert_non_null(tok);
    assert_string_equal(tok->name, "dashboard");
    assert_null(qr_tokens_find(&t, SECRET_B, strlen(SECRET_B) - 1));
    assert_null(qr_tokens_find(&t, "", 0));
    assert_null(qr_tokens_find(&t, SECRET_B "x", strlen(SECRET_B) + 1));
    qr_tokens_free(&t);
    qr_tokens_free(&t); /* twice is safe */
    assert_int_equal(t.n, 0);
}

/* Each bad line is refused with "tokens.txt:LINE: why", never showing the
 * secret, and leaves the table empty. */
static void assert_refused(const char *text, int line, const char *why)
{
    struct qr_tokens t;
    char err[QR_ERRMSG_BYTES];
    char want[64];

    assert_int_equal(parse(&t, text, err), QR_EBADREQ);
    snprintf(want, sizeof want, "tokens.txt:%d: ", line);
    if (strncmp(err, want, strlen(want)) != 0 || strstr(err, why) == NULL) {
        fail_msg("for %s: got '%s', want '%s...%s'", text, err, want, why);
    }
    assert_null(strstr(err, "s3cr3t"));
    assert_int_equal(t.n, 0);
    assert_null(t.v);
}

static void test_bad_lines(void **state)
{
    (void)state;
    const char *ok = "good read s3cr3t-s3cr3t-0000\n";
    char text[4096];

    assert_refused("# c\nonlyname\n", 2, "expected 3 fields");
    assert_refused("two s3cr3t-s3cr3t-s3cr3t\n", 1, "found 2");
    assert_refused("a read s3cr3t-s3cr3t-s3cr3t extra\n", 1, "found more");
    /* A secret put first, or scopes and secret swapped: nothing echoed. */
    assert_refused("s3cr3t/s3cr3t/s3cr3t read x\n", 1, "the name must be");
    assert_refused("a s3cr3t-s3cr3t-s3cr3t read\n", 1, "the scopes must be");
    assert_refused("a pubish s3cr3t-s3cr3t-s3cr3t\n", 1, "the scopes must be");
    assert_refused("a publish, s3cr3t-s3cr3t-s3cr3t\n", 1, "scopes must be");
    assert_refused("a ,read s3cr3t-s3cr3t-s3cr3t\n", 1, "scopes must be");
    assert_refused("a peer s3cr3t-s3cr3t-s3cr3t\n", 1, "scopes must be");
    assert_refused("a read s3cr3t\n", 1, "6 characters long; it must be 16");
    assert_refused("a read s3cr3t-s3cr3t-\x01s3cr3t\n", 1,
                   "not printable ASCII (at character 15)");
    assert_refused("a read s3cr3t-s3cr3t-\xc3\xa9s3cr3t\n", 1,
                   "not printable ASCII");
    snprintf(text, sizeof text, "%s\ngood admin s3cr3t-s3cr3t-1111\n", ok);
    assert_refused(text, 3, "the name 'good' is used twice");
    snprintf(text, sizeof text, "%sother admin s3cr3t-s3cr3t-0000\n", ok);
    assert_refused(text, 2, "the same secret as token 'good'");
    /* A NUL byte inside a line (strlen would stop there). */
    {
        static const char nul[] = "a read s3cr3t-s3cr3t-s3cr3t\nb\0\n";
        struct qr_tokens t;
        char err[QR_ERRMSG_BYTES];
        qr_tokens_init(&t);
        assert_int_equal(
            qr_tokens_parse(&t, nul, sizeof nul - 1, "f", err, sizeof err),
            QR_EBADREQ);
        assert_string_equal(err, "f:2: the line has a NUL byte");
    }

    /* A line over the limit. */
    memset(text, 'x', 1100);
    memcpy(text, "a read ", 7);
    text[1100] = '\0';
    assert_refused(text, 1, "the line is over 1023 bytes");

    /* A secret of 128 characters: one too many. */
    memset(text, 'y', sizeof text);
    memcpy(text, "a read ", 7);
    memcpy(text + 7, "s3cr3t", 6);
    text[7 + 128] = '\0';
    assert_refused(text, 1, "128 characters long");
}

static void test_no_tokens(void **state)
{
    (void)state;
    struct qr_tokens t;
    char err[QR_ERRMSG_BYTES];

    assert_int_equal(parse(&t, "", err), QR_EBADREQ);
    assert_string_equal(err,
                        "tokens.txt: no tokens (each line is NAME "
                        "SCOPES SECRET)");
    assert_int_equal(parse(&t, "# only\n\n  \n", err), QR_EBADREQ);
}

static void test_load(void **state)
{
    (void)state;
    char path[] = "/tmp/qraft-test-tokens-XXXXXX";
    int fd = mkstemp(path);
    struct qr_tokens t;
    char err[QR_ERRMSG_BYTES];

    assert_true(fd >= 0);
    const char *text = "ops admin " SECRET_C "\nbad line\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    qr_tokens_init(&t);
    assert_int_equal(qr_tokens_load(&t, path, err, sizeof err), QR_EBADREQ);
    char want[128];
    snprintf(want, sizeof want, "%s:2: expected 3 fields", path);
    assert_memory_equal(err, want, strlen(want));
    unlink(path);
    assert_true(qr_tokens_load(&t, path, err, sizeof err) < 0);
    assert_non_null(strstr(err, "No such file"));
    assert_int_equal(t.n, 0);
}

static void test_add(void **state)
{
    (void)state;
    struct qr_tokens t;

    qr_tokens_init(&t);
    assert_int_equal(qr_tokens_add(&t, "(--token)", "short", QR_SCOPE_ALL), 0);
    assert_int_equal(qr_tokens_add(&t, "x", "short", QR_SCOPE_READ),
                     QR_EBADREQ);
    assert_int_equal(qr_tokens_add(&t, "(--token)", "other", QR_SCOPE_READ),
                     QR_EBADREQ);
    assert_int_equal(qr_tokens_add(&t, "x", "", QR_SCOPE_READ), QR_EBADREQ);
    assert_int_equal(qr_tokens_find(&t, "short", 5)->scopes, QR_SCOPE_ALL);
    qr_tokens_free(&t);
}

static void test_equal(void **state)
{
    (void)state;
    assert_true(qr_tokens_equal("abc", "abc", 3));
    assert_false(qr_tokens_equal("abc", "abd", 3));
    assert_false(qr_tokens_equal("abc", "ab", 2));
    assert_false(qr_tokens_equal("abc", "abcd", 4));
    assert_false(qr_tokens_equal("abc", "xbc", 3));
    /* An empty secret matches nothing, not even an empty token. */
    assert_false(qr_tokens_equal("", "", 0));
    assert_false(qr_tokens_equal("", "a", 1));
    /* given need not be NUL-terminated where len ends. */
    assert_true(qr_tokens_equal("abc", "abcdef", 3));
}

static void test_scope_names(void **state)
{
    (void)state;
    char buf[64];

    assert_string_equal(qr_tokens_scope_name(QR_SCOPE_ADMIN), "admin");
    assert_string_equal(qr_tokens_scope_name(0), "none");
    qr_tokens_format_scopes(QR_SCOPE_PUBLISH | QR_SCOPE_ADMIN, buf, sizeof buf);
    assert_string_equal(buf, "publish,admin");
    qr_tokens_format_scopes(0, buf, sizeof buf);
    assert_string_equal(buf, "none");
}

/* Every kind in Request.body has a row: a kind added to the protocol
 * without one fails here. */
static void test_every_rpc_kind_has_a_scope(void **state)
{
    (void)state;
    FILE *out = fopen("/dev/null", "w");

    assert_non_null(out);
    assert_int_equal(qr_scopes_print_rpc(out), 0);
    fclose(out);
    assert_int_equal(qr_scopes_rpc(QRAFT__REQUEST__BODY_DLQ_DELETE),
                     QR_SCOPE_ADMIN);
    assert_int_equal(qr_scopes_rpc(QRAFT__REQUEST__BODY_PUBLISH),
                     QR_SCOPE_PUBLISH);
    assert_int_equal(qr_scopes_rpc(QRAFT__REQUEST__BODY_HEARTBEAT),
                     QR_SCOPE_PEER);
    assert_int_equal(qr_scopes_rpc(9999), QR_SCOPES_UNKNOWN);
    assert_int_equal(qr_scopes_rest("DELETE", "/v2/dlq/{id}"), QR_SCOPE_ADMIN);
    assert_int_equal(qr_scopes_rest("GET", "/v2/dlq/{id}"), QR_SCOPE_READ);
    assert_int_equal(qr_scopes_rest("PUT", "/v2/workflows/hooks/{*}"), 0);
    assert_int_equal(qr_scopes_rest("GET", "/v2/nope"), QR_SCOPES_UNKNOWN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_file),
        cmocka_unit_test(test_bad_lines),
        cmocka_unit_test(test_no_tokens),
        cmocka_unit_test(test_load),
        cmocka_unit_test(test_add),
        cmocka_unit_test(test_equal),
        cmocka_unit_test(test_scope_names),
        cmocka_unit_test(test_every_rpc_kind_has_a_scope),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
