/* Unit tests of node/lib/logger.c's line encoder (qr_log_format_line): the
 * text format as it always was, and JSON lines that a JSON parser (jansson)
 * reads back whole whatever the text holds: quotes, control characters,
 * invalid UTF-8, a text too long for a line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <string.h>

#include "lib/logger.h"

/* 2026-11-23T05:17:17.123Z */
static const struct timespec when = {.tv_sec = 1795411037,
                                     .tv_nsec = 123456789};

/* The JSON line for text (with fields, from node 7), parsed; the caller
 * frees it with json_decref. Fails unless it is one object on one line. */
static json_t *json_line(const struct qr_log_fields *fields, const char *text)
{
    char line[QR_LOG_LINE_BYTES];
    size_t len = qr_log_format_line(
        line, &(struct qr_log_line){QR_LOG_JSON, &when, 7, QR_LOG_WARN,
                                    "worker", fields, text});
    assert_int_equal(len, strlen(line));
    assert_true(len < QR_LOG_LINE_BYTES);
    assert_int_equal(line[len - 1], '\n');
    assert_null(memchr(line, '\n', len - 1));
    json_error_t err;
    json_t *obj = json_loads(line, 0, &err);
    if (obj == NULL) {
        fail_msg("not JSON (%s): %s", err.text, line);
    }
    assert_true(json_is_object(obj));
    return obj;
}

static const char *str(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v)) {
        fail_msg("no string '%s'", key);
    }
    return json_string_value(v);
}

static void test_text_format_unchanged(void **state)
{
    (void)state;
    char line[QR_LOG_LINE_BYTES];
    qr_log_format_line(
        line, &(struct qr_log_line){QR_LOG_TEXT, &when, 7, QR_LOG_INFO,
                                    "cluster", NULL, "became leader (term 3)"});
    assert_string_equal(
        line,
        "2026-11-23T05:17:17.123Z INFO  cluster: became leader (term 3)\n");
    const struct qr_log_fields f = {
        .message_id = "msg_abc", .run_id = "wfr_1", .term = 4};
    qr_log_format_line(line,
                       &(struct qr_log_line){QR_LOG_TEXT, &when, 7, QR_LOG_WARN,
                                             "worker", &f, "not sent"});
    assert_string_equal(line,
                        "2026-11-23T05:17:17.123Z WARN  worker: msg=msg_abc "
                        "run=wfr_1 term=4 not sent\n");
}

static void test_json_fields(void **state)
{
    (void)state;
    const struct qr_log_fields f = {
        .message_id = "msg_abc", .run_id = "wfr_1", .term = 4};
    json_t *obj = json_line(&f, "dead-lettered after 1 attempt(s)");
    assert_string_equal(str(obj, "time"), "2026-11-23T05:17:17.123Z");
    assert_string_equal(str(obj, "level"), "warn");
    assert_string_equal(str(obj, "module"), "worker");
    assert_string_equal(str(obj, "msg"), "dead-lettered after 1 attempt(s)");
    assert_string_equal(str(obj, "message_id"), "msg_abc");
    assert_string_equal(str(obj, "run_id"), "wfr_1");
    assert_int_equal(json_integer_value(json_object_get(obj, "node")), 7);
    assert_int_equal(json_integer_value(json_object_get(obj, "term")), 4);
    json_decref(obj);

    /* Absent fields are absent keys; node 0 is no node. */
    char line[QR_LOG_LINE_BYTES];
    qr_log_format_line(
        line, &(struct qr_log_line){QR_LOG_JSON, &when, 0, QR_LOG_ERROR,
                                    "store", NULL, "x"});
    assert_string_equal(line,
                        "{\"time\":\"2026-11-23T05:17:17.123Z\",\"level\":"
                        "\"error\",\"module\":\"store\",\"msg\":\"x\"}\n");
}

static void test_json_escapes(void **state)
{
    (void)state;
    const struct {
        const char *in;
        const char *out; /* as UTF-8 */
    } cases[] = {
        {"say \"hi\" \\ back", "say \"hi\" \\ back"},
        {"two\nlines\r\tand \x01\x1f\x7f", "two\nlines\r\tand \x01\x1f\x7f"},
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
         "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
        {"bad \xff\xfe end", "bad \xef\xbf\xbd\xef\xbf\xbd end"},
        {"cut \xe2\x82", "cut \xef\xbf\xbd"},
        {"\xc0\xaf overlong", "\xef\xbf\xbd\xef\xbf\xbd overlong"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct qr_log_fields f = {.message_id = cases[i].in};
        json_t *obj = json_line(&f, cases[i].in);
        assert_string_equal(str(obj, "msg"), cases[i].out);
        assert_string_equal(str(obj, "message_id"), cases[i].out);
        json_decref(obj);
    }
}

/* A text longer than a line is cut, never an escape or a character. */
static void test_json_long_text(void **state)
{
    (void)state;
    char text[1024];
    const char *pieces[] = {"\x01", "\xe2\x82\xac", "\"", "a", "\xff"};
    for (size_t p = 0; p < sizeof pieces / sizeof pieces[0]; p++) {
        size_t n = strlen(pieces[p]);
        size_t len = 0;
        while (len + n < sizeof text) {
            memcpy(text + len, pieces[p], n);
            len += n;
        }
        text[len] = '\0';
        json_t *obj = json_line(NULL, text);
        assert_true(strlen(str(obj, "msg")) > 500);
        json_decref(obj);
    }
}

static void test_parse_format(void **state)
{
    (void)state;
    enum qr_log_format f = QR_LOG_TEXT;
    assert_int_equal(qr_log_parse_format("json", &f), 0);
    assert_int_equal(f, QR_LOG_JSON);
    assert_int_equal(qr_log_parse_format("text", &f), 0);
    assert_int_equal(f, QR_LOG_TEXT);
    assert_int_not_equal(qr_log_parse_format("JSON", &f), 0);
    assert_int_not_equal(qr_log_parse_format("", &f), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_format_unchanged),
        cmocka_unit_test(test_json_fields),
        cmocka_unit_test(test_json_escapes),
        cmocka_unit_test(test_json_long_text),
        cmocka_unit_test(test_parse_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
