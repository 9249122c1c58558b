/* Unit tests of node/retry.c: what an operator or a publisher would check.
 * Each attempt outcome lands in the documented class and category in both
 * modes; the budget stops retries by count and by age; delay headers parse in
 * every format (dates against a fixed now); the retry-delay expressions from
 * the QStash docs evaluate as documented and bad ones are refused with a
 * position; the backoff follows header > expression > default. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deliver/retry.h"
#include "lib/err.h"
#include "lib/expr.h"

#define SECOND_MS 1000ull
#define MINUTE_MS (60ull * SECOND_MS)
#define HOUR_MS (60ull * MINUTE_MS)
#define DAY_MS (24ull * HOUR_MS)

/* Sun, 06 Nov 1994 08:49:37 GMT */
#define NOV_6_1994_MS 784111777000ull

/* ------------------------------------------------------------------------ */
/* Classification                                                            */
/* ------------------------------------------------------------------------ */

struct class_row {
    enum qr_retry_transport transport;
    int status;
    bool non_retryable;
    enum qr_retry_class default_cls;
    enum qr_retry_class strict_cls;
    const char *category; /* same in both modes */
};

#define OK QR_RETRY_TRANSPORT_OK
#define DELIV QR_RETRY_DELIVERED
#define TRANS QR_RETRY_TRANSIENT
#define PERM QR_RETRY_PERMANENT

static const struct class_row class_rows[] = {
    {OK, 200, false, DELIV, DELIV, ""},
    {OK, 201, false, DELIV, DELIV, ""},
    {OK, 204, false, DELIV, DELIV, ""},
    {OK, 299, false, DELIV, DELIV, ""},
    /* a 2xx with the header is still delivered */
    {OK, 200, true, DELIV, DELIV, ""},
    {QR_RETRY_TRANSPORT_CONNECT, 0, false, TRANS, TRANS, "connect"},
    {QR_RETRY_TRANSPORT_DNS, 0, false, TRANS, TRANS, "connect"},
    {QR_RETRY_TRANSPORT_TLS, 0, false, TRANS, TRANS, "connect"},
    {QR_RETRY_TRANSPORT_TIMEOUT, 0, false, TRANS, TRANS, "timeout"},
    /* a transport failure wins over a status seen before it */
    {QR_RETRY_TRANSPORT_TIMEOUT, 200, false, TRANS, TRANS, "timeout"},
    {OK, 408, false, TRANS, TRANS, "timeout"},
    {OK, 429, false, TRANS, TRANS, "throttled"},
    {OK, 500, false, TRANS, TRANS, "server_error"},
    {OK, 502, false, TRANS, TRANS, "server_error"},
    {OK, 503, false, TRANS, TRANS, "server_error"},
    {OK, 599, false, TRANS, TRANS, "server_error"},
    {QR_RETRY_TRANSPORT_PROTOCOL, 0, false, TRANS, TRANS, "server_error"},
    {QR_RETRY_TRANSPORT_PROTOCOL, 200, false, TRANS, TRANS, "server_error"},
    {OK, 0, false, TRANS, TRANS, "server_error"},
    {OK, 600, false, TRANS, TRANS, "server_error"},
    {OK, 99, false, TRANS, TRANS, "server_error"},
    {QR_RETRY_TRANSPORT_TOO_LARGE, 0, false, TRANS, TRANS, "server_error"},
    {QR_RETRY_TRANSPORT_TOO_LARGE, 200, false, DELIV, DELIV, ""},
    {QR_RETRY_TRANSPORT_TOO_LARGE, 503, false, TRANS, TRANS, "server_error"},
    {QR_RETRY_TRANSPORT_TOO_LARGE, 404, false, PERM, TRANS, "client_error"},
    {OK, 489, true, PERM, PERM, "non_retryable"},
    {QR_RETRY_TRANSPORT_TOO_LARGE, 489, true, PERM, PERM, "non_retryable"},
    {OK, 489, false, PERM, TRANS, "client_error"},
    /* the header counts only with 489 */
    {OK, 500, true, TRANS, TRANS, "server_error"},
    {OK, 404, true, PERM, TRANS, "client_error"},
    {OK, 400, false, PERM, TRANS, "client_error"},
    {OK, 401, false, PERM, TRANS, "client_error"},
    {OK, 403, false, PERM, TRANS, "client_error"},
    {OK, 404, false, PERM, TRANS, "client_error"},
    {OK, 410, false, PERM, TRANS, "client_error"},
    {OK, 499, false, PERM, TRANS, "client_error"},
    {OK, 100, false, PERM, TRANS, "client_error"},
    {OK, 101, false, PERM, TRANS, "client_error"},
    {OK, 301, false, PERM, TRANS, "client_error"},
    {OK, 302, false, PERM, TRANS, "client_error"},
    {OK, 304, false, PERM, TRANS, "client_error"},
    {QR_RETRY_TRANSPORT_REDIRECTS, 0, false, PERM, TRANS, "client_error"},
    /* the SSRF guard: permanent even in strict mode */
    {QR_RETRY_TRANSPORT_REFUSED, 0, false, PERM, PERM, "destination_refused"},
};

static void test_classify_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof class_rows / sizeof class_rows[0]; i++) {
        const struct class_row *r = &class_rows[i];
        for (int strict = 0; strict <= 1; strict++) {
            struct qr_retry_verdict v;
            qr_retry_classify(r->transport, r->status, r->non_retryable, strict,
                              &v);
            enum qr_retry_class want = strict ? r->strict_cls : r->default_cls;
            const char *got = qr_retry_category_name(v.category);
            if (v.cls != want || strcmp(got, r->category) != 0 ||
                v.cause != v.category) {
                fail_msg(
                    "row %zu (transport %d, status %d, nonretryable %d, "
                    "strict %d): class %d category '%s', want %d '%s'",
                    i, r->transport, r->status, r->non_retryable, strict, v.cls,
                    got, want, r->category);
            }
            assert_int_equal(v.status, r->status);
            assert_int_equal(v.transport, r->transport);
        }
    }
}

static void test_category_names(void **state)
{
    (void)state;
    static const char *const names[] = {
        "connect",          "timeout",
        "throttled",        "server_error",
        "client_error",     "non_retryable",
        "budget_exhausted", "destination_refused",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        enum qr_retry_category c;
        assert_int_equal(qr_retry_category_parse(names[i], &c), 0);
        assert_string_equal(qr_retry_category_name(c), names[i]);
    }
    enum qr_retry_category c;
    assert_int_equal(qr_retry_category_parse("Connect", &c), QR_EBADREQ);
    assert_int_equal(qr_retry_category_parse("", &c), QR_EBADREQ);
    assert_int_equal(qr_retry_category_parse("bogus", &c), QR_EBADREQ);
    assert_string_equal(qr_retry_category_name(QR_RETRY_CAT_NONE), "");
}

static void test_header_is_true(void **state)
{
    (void)state;
    static const char *const yes[] = {"true", "TRUE", "True", " true\r\n",
                                      "\ttrue "};
    static const char *const no[] = {"",      "false", "1",  "yes",
                                     "truex", "t rue", "tru"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        assert_true(qr_retry_header_is_true(yes[i], strlen(yes[i])));
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        assert_false(qr_retry_header_is_true(no[i], strlen(no[i])));
    }
    /* not NUL-terminated: only len bytes count */
    assert_true(qr_retry_header_is_true("trueXYZ", 4));
    assert_false(qr_retry_header_is_true(NULL, 0));
}

static void hint_for(enum qr_retry_transport t, int status, bool nr, char *buf)
{
    struct qr_retry_verdict v;
    qr_retry_classify(t, status, nr, false, &v);
    qr_retry_hint(&v, buf, QR_RETRY_HINT_BYTES);
    assert_null(strchr(buf, '\n'));
}

static void test_hints(void **state)
{
    (void)state;
    char buf[QR_RETRY_HINT_BYTES];

    hint_for(OK, 404, false, buf);
    assert_string_equal(buf,
                        "the destination rejected the request (HTTP "
                        "404): fix the URL or payload, then replay");
    hint_for(OK, 200, false, buf);
    assert_string_equal(buf, "");
    hint_for(OK, 489, true, buf);
    assert_non_null(strstr(buf, "HTTP 489"));
    assert_non_null(strstr(buf, "Upstash-NonRetryable-Error"));
    hint_for(OK, 301, false, buf);
    assert_non_null(strstr(buf, "HTTP 301"));
    assert_non_null(strstr(buf, "redirects are not followed"));
    hint_for(OK, 503, false, buf);
    assert_non_null(strstr(buf, "HTTP 503"));
    hint_for(OK, 429, false, buf);
    assert_non_null(strstr(buf, "HTTP 429"));
    hint_for(OK, 408, false, buf);
    assert_non_null(strstr(buf, "HTTP 408"));
    hint_for(QR_RETRY_TRANSPORT_DNS, 0, false, buf);
    assert_non_null(strstr(buf, "did not resolve"));
    hint_for(QR_RETRY_TRANSPORT_TLS, 0, false, buf);
    assert_non_null(strstr(buf, "TLS"));
    hint_for(QR_RETRY_TRANSPORT_CONNECT, 0, false, buf);
    assert_non_null(strstr(buf, "could not connect"));
    hint_for(QR_RETRY_TRANSPORT_TIMEOUT, 0, false, buf);
    assert_non_null(strstr(buf, "timeout"));
    hint_for(QR_RETRY_TRANSPORT_PROTOCOL, 0, false, buf);
    assert_non_null(strstr(buf, "malformed"));
    hint_for(QR_RETRY_TRANSPORT_REDIRECTS, 0, false, buf);
    assert_non_null(strstr(buf, "redirected too many times"));
    hint_for(QR_RETRY_TRANSPORT_REFUSED, 0, false, buf);
    assert_non_null(strstr(buf, "--allow-destinations"));

    /* Budget exhausted: names the attempts and the last failure. */
    struct qr_retry_verdict v;
    qr_retry_classify(OK, 503, false, false, &v);
    struct qr_retry_budget b = {.attempts = 4, .max_retries = 3};
    assert_false(qr_retry_check_budget(&v, &b));
    qr_retry_hint(&v, buf, sizeof buf);
    assert_non_null(strstr(buf, "gave up after 4 attempts"));
    assert_non_null(strstr(buf, "retries used up"));
    assert_non_null(strstr(buf, "HTTP 503"));

    /* A small buffer truncates but stays terminated. */
    char small[16];
    hint_for(OK, 404, false, buf);
    struct qr_retry_verdict v404;
    qr_retry_classify(OK, 404, false, false, &v404);
    qr_retry_hint(&v404, small, sizeof small);
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_memory_equal(small, buf, sizeof small - 1);
}

/* ------------------------------------------------------------------------ */
/* Budget                                                                    */
/* ------------------------------------------------------------------------ */

static void test_budget_by_count(void **state)
{
    (void)state;
    /* max_retries 3: attempts 1..3 failed may retry, the 4th may not. */
    for (uint32_t attempts = 1; attempts <= 5; attempts++) {
        struct qr_retry_budget b = {.attempts = attempts, .max_retries = 3};
        assert_int_equal(qr_retry_budget_allows(&b), attempts <= 3);
    }
    struct qr_retry_budget none = {.attempts = 1, .max_retries = 0};
    assert_false(qr_retry_budget_allows(&none));

    /* The verdict turns into budget_exhausted, keeping its cause. */
    struct qr_retry_verdict v;
    qr_retry_classify(QR_RETRY_TRANSPORT_TIMEOUT, 0, false, false, &v);
    struct qr_retry_budget b = {.attempts = 3, .max_retries = 3};
    assert_true(qr_retry_check_budget(&v, &b));
    assert_int_equal(v.cls, QR_RETRY_TRANSIENT);
    assert_string_equal(qr_retry_category_name(v.category), "timeout");

    b.attempts = 4;
    assert_false(qr_retry_check_budget(&v, &b));
    assert_int_equal(v.cls, QR_RETRY_PERMANENT);
    assert_string_equal(qr_retry_category_name(v.category), "budget_exhausted");
    assert_string_equal(qr_retry_category_name(v.cause), "timeout");
    assert_int_equal(v.attempts, 4);
    assert_false(v.deadline_passed);

    /* Permanent and delivered verdicts are left alone. */
    qr_retry_classify(OK, 404, false, false, &v);
    assert_false(qr_retry_check_budget(&v, &b));
    assert_string_equal(qr_retry_category_name(v.category), "client_error");
    qr_retry_classify(OK, 200, false, false, &v);
    assert_false(qr_retry_check_budget(&v, &b));
    assert_int_equal(v.cls, QR_RETRY_DELIVERED);
}

static void test_budget_by_duration(void **state)
{
    (void)state;
    const uint64_t created = 1700000000000ull;
    struct qr_retry_budget b = {
        .attempts = 1,
        .max_retries = 100,
        .created_ms = created,
        .max_retry_duration_ms = 10 * MINUTE_MS,
    };
    b.now_ms = created + 10 * MINUTE_MS - 1;
    assert_true(qr_retry_budget_allows(&b));
    b.now_ms = created + 10 * MINUTE_MS;
    assert_false(qr_retry_budget_allows(&b));
    /* a clock behind created_ms does not underflow */
    b.now_ms = created - 5000;
    assert_true(qr_retry_budget_allows(&b));
    /* 0 = no limit */
    b.max_retry_duration_ms = 0;
    b.now_ms = created + 365 * DAY_MS;
    assert_true(qr_retry_budget_allows(&b));

    struct qr_retry_verdict v;
    qr_retry_classify(OK, 500, false, false, &v);
    b.max_retry_duration_ms = HOUR_MS;
    b.attempts = 2;
    b.now_ms = created + 2 * HOUR_MS;
    assert_false(qr_retry_check_budget(&v, &b));
    assert_string_equal(qr_retry_category_name(v.category), "budget_exhausted");
    assert_true(v.deadline_passed);
    char buf[QR_RETRY_HINT_BYTES];
    qr_retry_hint(&v, buf, sizeof buf);
    assert_non_null(strstr(buf, "max retry duration reached"));
    assert_non_null(strstr(buf, "after 2 attempts"));
}

/* ------------------------------------------------------------------------ */
/* Delay headers                                                             */
/* ------------------------------------------------------------------------ */

/* Parses s against now; returns the result code and the delay in *ms. */
static int delay(const char *s, uint64_t now_ms, uint64_t *ms)
{
    *ms = 123456789;
    return qr_retry_parse_delay(s, strlen(s), now_ms, ms);
}

static void assert_delay(const char *s, uint64_t now_ms, uint64_t want)
{
    uint64_t ms;
    int rv = delay(s, now_ms, &ms);
    if (rv != 0 || ms != want) {
        fail_msg("'%s': rv %d delay %llu, want %llu", s, rv,
                 (unsigned long long)ms, (unsigned long long)want);
    }
}

static void assert_ignored(const char *s, int want_rv)
{
    uint64_t ms;
    int rv = delay(s, NOV_6_1994_MS, &ms);
    if (rv != want_rv) {
        fail_msg("'%s': rv %d, want %d", s, rv, want_rv);
    }
    assert_int_equal(ms, 123456789); /* untouched */
}

static void test_delay_seconds(void **state)
{
    (void)state;
    assert_delay("10", 0, 10 * SECOND_MS);
    assert_delay("0", 0, 0);
    assert_delay(" 120\r\n", 0, 120 * SECOND_MS);
    assert_delay("1.5", 0, 1500);
    assert_delay("86400", 0, DAY_MS);
    assert_ignored("86401", QR_ETOOLARGE);
    /* an epoch timestamp, as some X-RateLimit-Reset send, is above a day */
    assert_ignored("1700000000", QR_ETOOLARGE);
    assert_ignored("99999999999999999999999", QR_ETOOLARGE);
}

static void test_delay_http_date(void **state)
{
    (void)state;
    const uint64_t now = NOV_6_1994_MS;
    assert_delay("Sun, 06 Nov 1994 08:49:37 GMT", now, 0);
    assert_delay("Sun, 06 Nov 1994 08:50:37 GMT", now, MINUTE_MS);
    assert_delay("Sun, 06 Nov 1994 08:49:37 GMT", now - 500, 500);
    /* past dates mean now */
    assert_delay("Sun, 06 Nov 1994 07:49:37 GMT", now, 0);
    assert_delay("Thu, 01 Jan 1970 00:00:00 GMT", now, 0);
    /* other forms HTTP requires */
    assert_delay("Sunday, 06-Nov-94 09:49:37 GMT", now, HOUR_MS);
    assert_delay("Sun Nov  6 10:49:37 1994", now, 2 * HOUR_MS);
    /* next day exactly, across a month end, and a leap day */
    assert_delay("Mon, 07 Nov 1994 08:49:37 GMT", now, DAY_MS);
    assert_delay("Thu, 01 Dec 1994 00:00:00 GMT", 786240000000ull - 1000, 1000);
    assert_delay("Thu, 29 Feb 2024 00:00:00 GMT", 1709164800000ull - 1, 1);
    assert_delay("Fri, 01 Mar 2024 00:00:00 GMT", 1709164800000ull, DAY_MS);
    /* case of names is not significant */
    assert_delay("sun, 06 nov 1994 08:49:38 gmt", now, 1000);

    uint64_t ms;
    /* more than a day ahead: ignored */
    assert_int_equal(delay("Tue, 08 Nov 1994 08:49:37 GMT", now, &ms),
                     QR_ETOOLARGE);
    assert_int_equal(delay("Mon, 07 Nov 1994 08:49:38 GMT", now, &ms),
                     QR_ETOOLARGE);
    /* broken dates: ignored */
    static const char *const bad[] = {
        "Sun, 31 Nov 1994 08:49:37 GMT",
        "Sun, 29 Feb 2023 00:00:00 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:49:37 PST",
        "Sun, 06 Nov 1994 08:49:37",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Xyz, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT x",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Sunday Nov  6 08:49:37 1994",
        "Sun, 06 Nov 1994 8:49:37 GMT",
        "Sun,",
        "Sun",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (delay(bad[i], now, &ms) != QR_EBADREQ) {
            fail_msg("'%s' was accepted", bad[i]);
        }
    }
}

static void test_delay_go_duration(void **state)
{
    (void)state;
    assert_delay("6m5s", 0, 6 * MINUTE_MS + 5 * SECOND_MS);
    assert_delay("1.5h", 0, 90 * MINUTE_MS);
    assert_delay("300ms", 0, 300);
    assert_delay("1h30m", 0, 90 * MINUTE_MS);
    assert_delay("2s", 0, 2000);
    assert_delay("1.1s", 0, 1100);
    assert_delay(".5s", 0, 500);
    assert_delay("+5s", 0, 5000);
    assert_delay("24h", 0, DAY_MS);
    assert_delay("1500000us", 0, 1500);
    assert_delay("1500000\xc2\xb5s", 0, 1500); /* micro sign */
    assert_delay("1500000\xce\xbcs", 0, 1500); /* Greek mu */
    assert_delay("2000000000ns", 0, 2000);
    /* sub-millisecond rounds up: never retry earlier than asked */
    assert_delay("300us", 0, 1);
    assert_delay("1ns", 0, 1);
    assert_delay("1ms1ns", 0, 2);
    /* negative means already reset */
    assert_delay("-5s", 0, 0);
    assert_delay("-0", 0, 0);

    assert_ignored("24h1ms", QR_ETOOLARGE);
    assert_ignored("25h", QR_ETOOLARGE);
    assert_ignored("100000000000h", QR_ETOOLARGE);
    static const char *const bad[] = {
        "",  "   ", "abc",  "10x", "5s5", "1d",   "s",         "1.2.3s", "-",
        "+", "5 s", "1,5s", ".s",  "5S",  "--5s", "\xc2\xb5s", "1e3",    "0x10",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_ignored(bad[i], QR_EBADREQ);
    }
}

static void note(struct qr_retry_response *r, const char *line)
{
    qr_retry_note_header(r, line, strlen(line), NOV_6_1994_MS);
}

static void test_note_header(void **state)
{
    (void)state;
    struct qr_retry_response r = {0};
    note(&r, "HTTP/1.1 429 Too Many Requests\r\n");
    note(&r, "Content-Type: text/plain\r\n");
    note(&r, "retry-after: 10\r\n");
    note(&r, "X-RateLimit-Reset-Requests: 1m\r\n");
    note(&r, "X-RateLimit-Reset-Tokens: 6m5s\r\n");
    note(&r, "X-RateLimit-Reset: 3\r\n");
    note(&r, "\r\n");
    /* the largest: every limit must have reset */
    assert_true(r.delay_set);
    assert_int_equal(r.delay_ms, 6 * MINUTE_MS + 5 * SECOND_MS);
    assert_false(r.non_retryable);

    /* unusable values are ignored, not taken as 0 */
    struct qr_retry_response r2 = {0};
    note(&r2, "Retry-After: soon\r\n");
    note(&r2, "Retry-After: 2d\r\n");
    note(&r2, "Retry-After: 90000\r\n");
    assert_false(r2.delay_set);
    note(&r2, "Retry-After: Sun, 06 Nov 1994 08:49:47 GMT\r\n");
    assert_true(r2.delay_set);
    assert_int_equal(r2.delay_ms, 10 * SECOND_MS);

    struct qr_retry_response r3 = {0};
    note(&r3, "HTTP/2 489\r\n");
    note(&r3, "upstash-nonretryable-error:  TRUE \r\n");
    assert_true(r3.non_retryable);
    /* a new status line starts over (100 Continue, followed redirect) */
    note(&r3, "HTTP/1.1 500 Internal Server Error\r\n");
    assert_false(r3.non_retryable);
    note(&r3, "Upstash-NonRetryable-Error: false\r\n");
    note(&r3, "no colon here\r\n");
    assert_false(r3.non_retryable);
    assert_false(r3.delay_set);
}

/* ------------------------------------------------------------------------ */
/* Expressions                                                               */
/* ------------------------------------------------------------------------ */

static double eval(const char *src, double retried)
{
    struct qr_expr *e = NULL;
    char errmsg[QR_ERRMSG_BYTES] = "";
    int rv = qr_expr_parse(src, 0, &e, errmsg);
    if (rv != 0) {
        fail_msg("'%s' refused: %s", src, errmsg);
    }
    double v = qr_expr_eval(e, retried);
    qr_expr_free(e);
    return v;
}

static uint64_t delay_of(const char *src, uint32_t retried)
{
    struct qr_expr e;
    char errmsg[QR_ERRMSG_BYTES] = "";
    if (qr_expr_compile(&e, src, 0, errmsg) != 0) {
        fail_msg("'%s' refused: %s", src, errmsg);
    }
    return qr_retry_expr_delay_ms(&e, retried);
}

static void test_expr_docs_examples(void **state)
{
    (void)state;
    static const struct {
        const char *src;
        double want[4]; /* retried 0..3 */
    } rows[] = {
        {"1000", {1000, 1000, 1000, 1000}},
        {"1000 * (1 + retried)", {1000, 2000, 3000, 4000}},
        {"pow(2, retried) * 1000", {1000, 2000, 4000, 8000}},
        {"max(1000, pow(2, retried) * 100)", {1000, 1000, 1000, 1000}},
        {"2000 * retried", {0, 2000, 4000, 6000}},
        {"pow(retried, 2) * 1000", {0, 1000, 4000, 9000}},
        {"10000 * pow(2, retried)", {10000, 20000, 40000, 80000}},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        for (int r = 0; r <= 3; r++) {
            double got = eval(rows[i].src, r);
            if (got != rows[i].want[r]) {
                fail_msg("'%s' retried=%d: %g, want %g", rows[i].src, r, got,
                         rows[i].want[r]);
            }
            assert_int_equal(delay_of(rows[i].src, (uint32_t)r),
                             (uint64_t)rows[i].want[r]);
        }
    }
    /* max() picks the exponential once it passes the floor */
    assert_true(eval("max(1000, pow(2, retried) * 100)", 4) == 1600);
}

static void test_expr_syntax(void **state)
{
    (void)state;
    /* precedence and associativity */
    assert_true(eval("1 + 2 * 3", 0) == 7);
    assert_true(eval("(1 + 2) * 3", 0) == 9);
    assert_true(eval("10 - 3 - 2", 0) == 5);
    assert_true(eval("100 / 10 / 2", 0) == 5);
    assert_true(eval("2 * 3 / 4", 0) == 1.5);
    assert_true(eval("-2 * 3", 0) == -6);
    assert_true(eval("-(2 + 3)", 0) == -5);
    assert_true(eval("--5", 0) == 5);
    assert_true(eval("2 - -3", 0) == 5);
    assert_true(eval("+5", 0) == 5);
    assert_true(eval("-retried", 3) == -3);
    assert_true(eval("- pow(2, 3)", 0) == -8);
    /* numbers */
    assert_true(eval("1.5", 0) == 1.5);
    assert_true(eval(".5", 0) == 0.5);
    assert_true(eval("0.1", 0) == 0.1);
    assert_true(eval("1e3", 0) == 1000);
    assert_true(eval("2.5E-1", 0) == 0.25);
    assert_true(eval("007", 0) == 7);
    assert_true(
        fabs(eval("12345678901234567890123", 0) / 1.2345678901234568e22 - 1.0) <
        1e-15);
    /* every function */
    assert_true(eval("exp(0)", 0) == 1);
    assert_true(eval("sqrt(16)", 0) == 4);
    assert_true(eval("abs(-3)", 0) == 3);
    assert_true(eval("floor(2.7)", 0) == 2);
    assert_true(eval("ceil(2.1)", 0) == 3);
    assert_true(eval("round(2.5)", 0) == 3);
    assert_true(eval("round(2.4)", 0) == 2);
    assert_true(eval("min(3, 4)", 0) == 3);
    assert_true(eval("max(3, 4)", 0) == 4);
    assert_true(eval("pow(10, 3)", 0) == 1000);
    assert_true(fabs(eval("exp(1)", 0) - M_E) < 1e-12);
    /* whitespace of all kinds, or none */
    assert_true(eval(" \t1000*\r\n(1+retried) ", 1) == 2000);
    assert_true(eval("1000*(1+retried)", 1) == 2000);
    assert_true(eval("min(max(1,2),pow(2,min(3,4)))", 0) == 2);
}

static void assert_refused(const char *src, size_t max, const char *want)
{
    char errmsg[QR_ERRMSG_BYTES] = "";
    int rv = qr_expr_check(src, max, errmsg);
    if (rv != QR_EBADREQ || strcmp(errmsg, want) != 0) {
        fail_msg("'%s': rv %d errmsg '%s', want '%s'", src, rv, errmsg, want);
    }
    struct qr_expr *e = (struct qr_expr *)0x1;
    assert_int_equal(qr_expr_parse(src, max, &e, errmsg), QR_EBADREQ);
    assert_ptr_equal(e, (struct qr_expr *)0x1);
}

static void test_expr_errors(void **state)
{
    (void)state;
    assert_refused("", 0, "empty expression");
    assert_refused("   ", 0, "empty expression");
    assert_refused(NULL, 0, "empty expression");
    assert_refused("1 + foo(2)", 0,
                   "unknown function 'foo' at 5 (known: pow exp sqrt abs "
                   "floor ceil round min max)");
    assert_refused("1 + x", 0,
                   "unknown variable 'x' at 5 (only 'retried' is defined)");
    assert_refused("Retried", 0,
                   "unknown variable 'Retried' at 1 (only 'retried' is "
                   "defined)");
    assert_refused("(1 + 2", 0, "expected ')' at 7 (end of expression)");
    assert_refused("(1 + 2 3", 0, "expected ')' at 8");
    assert_refused("pow(2 3)", 0, "expected ',' or ')' at 7");
    assert_refused("pow(2", 0, "expected ',' or ')' at 6 (end of expression)");
    assert_refused("1 +", 0, "unexpected end of expression");
    assert_refused("1 + * 2", 0, "unexpected '*' at 5");
    assert_refused("1 2", 0, "unexpected '2' at 3");
    assert_refused("(1))", 0, "unexpected ')' at 4");
    assert_refused("1 % 2", 0, "unexpected character '%' at 3");
    assert_refused("1 \xc2\xb5", 0, "unexpected byte 0xc2 at 3");
    assert_refused("pow(2)", 0, "'pow' takes 2 arguments, got 1 at 1");
    assert_refused("sqrt(1, 2)", 0, "'sqrt' takes 1 argument, got 2 at 1");
    assert_refused("max()", 0, "'max' takes 2 arguments, got 0 at 1");
    assert_refused("pow + 1", 0, "expected '(' after 'pow' at 4");
    assert_refused("retried(1)", 0,
                   "'retried' is a variable, not a function, at 1");
    assert_refused("1.2.3", 0, "unexpected '.3' at 4");
    assert_refused("2retried", 0, "unexpected 'retried' at 2");
    assert_refused("1,2", 0, "unexpected ',' at 2");
    /* no loops, assignments, comparisons or other variables */
    assert_refused("retried = 1", 0, "unexpected character '=' at 9");
    assert_refused("retried > 1", 0, "unexpected character '>' at 9");
}

static void test_expr_limits(void **state)
{
    (void)state;
    char src[1024];
    char errmsg[QR_ERRMSG_BYTES];

    /* 100 nested parentheses: refused at the 33rd */
    memset(src, 0, sizeof src);
    memset(src, '(', 100);
    src[100] = '1';
    memset(src + 101, ')', 100);
    assert_int_equal(qr_expr_check(src, sizeof src, errmsg), QR_EBADREQ);
    assert_string_equal(errmsg,
                        "expression nested too deeply (max 32 levels) at 33");
    /* 32 levels pass */
    memset(src, 0, sizeof src);
    memset(src, '(', 32);
    src[32] = '7';
    memset(src + 33, ')', 32);
    assert_true(eval(src, 0) == 7);
    /* unary signs and calls count as nesting too */
    memset(src, 0, sizeof src);
    memset(src, '-', 40);
    src[40] = '1';
    assert_int_equal(qr_expr_check(src, sizeof src, errmsg), QR_EBADREQ);
    assert_non_null(strstr(errmsg, "nested too deeply"));
    memset(src, 0, sizeof src);
    for (int i = 0; i < 40; i++) {
        strcat(src, "abs(");
    }
    strcat(src, "1");
    for (int i = 0; i < 40; i++) {
        strcat(src, ")");
    }
    assert_int_equal(qr_expr_check(src, sizeof src, errmsg), QR_EBADREQ);
    assert_non_null(strstr(errmsg, "nested too deeply"));

    /* length: the caller's limit, and 256 by default */
    memset(src, 0, sizeof src);
    memset(src, ' ', 300);
    src[0] = '1';
    assert_int_equal(qr_expr_check(src, 0, errmsg), QR_EBADREQ);
    assert_string_equal(errmsg, "expression too long (max 256 bytes)");
    assert_int_equal(qr_expr_check(src, 300, errmsg), 0);
    assert_int_equal(qr_expr_check("1000 * retried", 10, errmsg), QR_EBADREQ);
    assert_string_equal(errmsg, "expression too long (max 10 bytes)");
    assert_int_equal(qr_expr_check("1000*retried", 12, errmsg), 0);

    /* node count: a long flat sum within a generous length limit */
    memset(src, 0, sizeof src);
    strcat(src, "1");
    for (int i = 0; i < 200; i++) {
        strcat(src, "+1");
    }
    assert_int_equal(qr_expr_check(src, sizeof src, errmsg), QR_EBADREQ);
    assert_non_null(strstr(errmsg, "too complex (more than 256 operations)"));
    /* 128 numbers and 127 additions fit, and evaluate without recursion */
    memset(src, 0, sizeof src);
    strcat(src, "1");
    for (int i = 0; i < 127; i++) {
        strcat(src, "+1");
    }
    assert_true(eval(src, 0) == 128);
}

static void test_expr_clamps(void **state)
{
    (void)state;
    /* negative -> 0 */
    assert_int_equal(delay_of("-1000", 0), 0);
    assert_int_equal(delay_of("1000 - 2000 * retried", 3), 0);
    assert_int_equal(delay_of("-1 / 0", 0), 0);
    /* division by zero, NaN -> the cap */
    assert_true(isinf(eval("1 / 0", 0)));
    assert_true(isnan(eval("0 / 0", 0)));
    assert_int_equal(delay_of("1 / 0", 0), DAY_MS);
    assert_int_equal(delay_of("0 / 0", 0), DAY_MS);
    assert_int_equal(delay_of("1000 / retried", 0), DAY_MS);
    assert_int_equal(delay_of("sqrt(-1)", 0), DAY_MS);
    /* huge -> the cap */
    assert_int_equal(delay_of("pow(10, 400)", 0), DAY_MS);
    assert_int_equal(delay_of("exp(1000)", 0), DAY_MS);
    assert_int_equal(delay_of("1e400", 0), DAY_MS);
    assert_int_equal(delay_of("86400001", 0), DAY_MS);
    assert_int_equal(delay_of("86400000", 0), DAY_MS);
    assert_int_equal(delay_of("pow(2, retried) * 1000", 100), DAY_MS);
    /* fractions round to the nearest ms */
    assert_int_equal(delay_of("1000.4", 0), 1000);
    assert_int_equal(delay_of("1000.5", 0), 1001);
    assert_int_equal(qr_retry_ms_from_double(-INFINITY), 0);
    assert_int_equal(qr_retry_ms_from_double(INFINITY), DAY_MS);
    assert_int_equal(qr_retry_ms_from_double(NAN), DAY_MS);
    assert_int_equal(qr_retry_ms_from_double(0.4), 0);
}

/* ------------------------------------------------------------------------ */
/* Backoff                                                                   */
/* ------------------------------------------------------------------------ */

static void test_default_backoff(void **state)
{
    (void)state;
    /* min(86400, e^(2.5 n)) s: 12 s, 148 s, 1808 s, 22026 s, then a day */
    static const uint64_t want[] = {12182,    148413, 1808042,
                                    22026466, DAY_MS, DAY_MS};
    for (uint64_t n = 1; n <= 6; n++) {
        double exact_ms = fmin(86400.0, exp(2.5 * (double)n)) * 1000.0;
        assert_int_equal(qr_retry_default_delay_ms(n, 0.0, 0), want[n - 1]);
        assert_true(fabs((double)want[n - 1] - exact_ms) <= 0.5);

        uint64_t up = qr_retry_default_delay_ms(n, 0.1, 0);
        uint64_t down = qr_retry_default_delay_ms(n, -0.1, 0);
        uint64_t want_up = (uint64_t)llround(exact_ms * 1.1);
        if (want_up > DAY_MS) {
            want_up = DAY_MS;
        }
        assert_int_equal(up, want_up);
        assert_int_equal(down, (uint64_t)llround(exact_ms * 0.9));
        /* jitter beyond +-10% is clamped */
        assert_int_equal(qr_retry_default_delay_ms(n, 0.5, 0), up);
        assert_int_equal(qr_retry_default_delay_ms(n, -0.5, 0), down);
        assert_int_equal(qr_retry_default_delay_ms(n, NAN, 0), want[n - 1]);
    }
    assert_int_equal(qr_retry_default_delay_ms(1, 0.1, 0), 13401);
    assert_int_equal(qr_retry_default_delay_ms(1, -0.1, 0), 10964);
    assert_int_equal(qr_retry_default_delay_ms(5, -0.1, 0), 77760000);
    assert_int_equal(qr_retry_default_delay_ms(UINT32_MAX + 1ull, 0, 0),
                     DAY_MS);
}

static void test_max_doublings(void **state)
{
    (void)state;
    /* d = 1: exponential for n = 1..2, then +(e^5 - e^2.5) s per retry */
    double e1 = exp(2.5);
    double e2 = exp(5.0);
    for (uint64_t n = 1; n <= 6; n++) {
        double s =
            n <= 2 ? exp(2.5 * (double)n) : e2 + (double)(n - 2) * (e2 - e1);
        uint64_t want = (uint64_t)llround(s * 1000.0);
        assert_int_equal(qr_retry_default_delay_ms(n, 0.0, 1), want);
    }
    /* d = 2: 12 s, 148 s, 1808 s, then +1660 s per retry */
    assert_int_equal(qr_retry_default_delay_ms(3, 0.0, 2), 1808042);
    assert_int_equal(qr_retry_default_delay_ms(4, 0.0, 2),
                     (uint64_t)llround((2 * exp(7.5) - exp(5.0)) * 1000.0));
    /* the cap still applies */
    assert_int_equal(qr_retry_default_delay_ms(100, 0.0, 1), 13499018);
    assert_int_equal(qr_retry_default_delay_ms(1000, 0.0, 1), DAY_MS);
    assert_int_equal(qr_retry_default_delay_ms(6, 0.0, 10), DAY_MS);
}

static void test_backoff_precedence(void **state)
{
    (void)state;
    enum qr_retry_rule rule;
    struct qr_retry_backoff b = {
        .header_delay_set = true,
        .header_delay_ms = 7000,
        .expr = "1000 * (1 + retried)",
        .retried = 2,
        .jitter = 0.1,
    };
    /* header > expression > default */
    assert_int_equal(qr_retry_next_delay_ms(&b, &rule), 7000);
    assert_int_equal(rule, QR_RETRY_RULE_HEADER);
    b.header_delay_ms = 0; /* "Retry-After: 0" = at once */
    assert_int_equal(qr_retry_next_delay_ms(&b, &rule), 0);
    assert_int_equal(rule, QR_RETRY_RULE_HEADER);

    b.header_delay_set = false;
    assert_int_equal(qr_retry_next_delay_ms(&b, &rule), 3000);
    assert_int_equal(rule, QR_RETRY_RULE_EXPRESSION);
    /* above a day the header is ignored */
    b.header_delay_set = true;
    b.header_delay_ms = DAY_MS + 1;
    assert_int_equal(qr_retry_next_delay_ms(&b, &rule), 3000);
    assert_int_equal(rule, QR_RETRY_RULE_EXPRESSION);

    b.expr = NULL;
    assert_int_equal(qr_retry_next_delay_ms(&b, &rule),
                     qr_retry_default_delay_ms(3, 0.1, 0));
    assert_int_equal(rule, QR_RETRY_RULE_DEFAULT);
    b.expr = "";
    assert_int_equal(qr_retry_next_delay_ms(&b, NULL),
                     qr_retry_default_delay_ms(3, 0.1, 0));
    /* an expression that no longer compiles falls through */
    b.expr = "1000 *";
    assert_int_equal(qr_retry_next_delay_ms(&b, &rule),
                     qr_retry_default_delay_ms(3, 0.1, 0));
    assert_int_equal(rule, QR_RETRY_RULE_DEFAULT);

    /* retried = 0 before the first retry: n = 1, 12 s */
    struct qr_retry_backoff first = {.retried = 0};
    assert_int_equal(qr_retry_next_delay_ms(&first, &rule), 12182);
    /* the expression sees retried as given */
    first.expr = "2000 * retried";
    assert_int_equal(qr_retry_next_delay_ms(&first, &rule), 0);
    first.retried = 1;
    assert_int_equal(qr_retry_next_delay_ms(&first, &rule), 2000);
}

static void test_backoff_clamps(void **state)
{
    (void)state;
    struct qr_retry_backoff b = {
        .retried = 0,
        .min_backoff_ms = 20000,
    };
    /* min raises the default's 12 s */
    assert_int_equal(qr_retry_next_delay_ms(&b, NULL), 20000);
    /* max lowers it */
    b.min_backoff_ms = 0;
    b.max_backoff_ms = 5000;
    assert_int_equal(qr_retry_next_delay_ms(&b, NULL), 5000);
    /* both: the max wins when they conflict */
    b.min_backoff_ms = 9000;
    assert_int_equal(qr_retry_next_delay_ms(&b, NULL), 5000);
    /* clamps apply to the header and expression rules too */
    b.min_backoff_ms = 1000;
    b.max_backoff_ms = 60000;
    b.header_delay_set = true;
    b.header_delay_ms = 0;
    assert_int_equal(qr_retry_next_delay_ms(&b, NULL), 1000);
    b.header_delay_ms = HOUR_MS;
    assert_int_equal(qr_retry_next_delay_ms(&b, NULL), 60000);
    b.header_delay_set = false;
    b.expr = "pow(2, retried) * 100";
    b.retried = 3;
    assert_int_equal(qr_retry_next_delay_ms(&b, NULL), 1000);
    b.retried = 20;
    assert_int_equal(qr_retry_next_delay_ms(&b, NULL), 60000);
    /* a min beyond a day is still capped at a day */
    struct qr_retry_backoff big = {.min_backoff_ms = 2 * DAY_MS};
    assert_int_equal(qr_retry_next_delay_ms(&big, NULL), DAY_MS);
    /* max doublings reaches the default rule */
    struct qr_retry_backoff lin = {.retried = 3, .max_doublings = 1};
    assert_int_equal(qr_retry_next_delay_ms(&lin, NULL),
                     qr_retry_default_delay_ms(4, 0, 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify_table),
        cmocka_unit_test(test_category_names),
        cmocka_unit_test(test_header_is_true),
        cmocka_unit_test(test_hints),
        cmocka_unit_test(test_budget_by_count),
        cmocka_unit_test(test_budget_by_duration),
        cmocka_unit_test(test_delay_seconds),
        cmocka_unit_test(test_delay_http_date),
        cmocka_unit_test(test_delay_go_duration),
        cmocka_unit_test(test_note_header),
        cmocka_unit_test(test_expr_docs_examples),
        cmocka_unit_test(test_expr_syntax),
        cmocka_unit_test(test_expr_errors),
        cmocka_unit_test(test_expr_limits),
        cmocka_unit_test(test_expr_clamps),
        cmocka_unit_test(test_default_backoff),
        cmocka_unit_test(test_max_doublings),
        cmocka_unit_test(test_backoff_precedence),
        cmocka_unit_test(test_backoff_clamps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
