/* Unit tests of node/command.c: the checks a publish request goes through,
 * message ids, the Publish command (dedup keys, defaults) and the framing of
 * raft entries, each checked the way the RPC layer and the FSM use them; the
 * URL-group checks and the REST API's flow-control and duration parsers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "lib/cron.h"
#include "lib/err.h"
#include "repl/check.h"
#include "repl/command.h"
#include "repl/redact.h"

#define NOW_MS 1700000000000ull

static struct qr_limits default_limits(void)
{
    struct qr_config c;
    qr_config_defaults(&c);
    return c.limits;
}

/* A minimal valid request: a URL and nothing else. */
static Qraft__PublishRequest minimal_request(void)
{
    Qraft__PublishRequest req = QRAFT__PUBLISH_REQUEST__INIT;
    req.url = "https://example.com/hook";
    return req;
}

static int check(const Qraft__PublishRequest *req, char *err, size_t err_len)
{
    struct qr_limits l = default_limits();
    return qr_command_check_publish(req, &l, NOW_MS, err, err_len);
}

static void assert_accepted(const Qraft__PublishRequest *req)
{
    char err[QR_ERRMSG_BYTES] = "";
    int rv = check(req, err, sizeof err);
    if (rv != 0) {
        fail_msg("refused (%d): %s", rv, err);
    }
}

/* Asserts a refusal with code `code` whose message holds every one of the
 * NULL-terminated substrings. */
static void assert_refused(const Qraft__PublishRequest *req, int code, ...)
{
    char err[QR_ERRMSG_BYTES] = "";
    int rv = check(req, err, sizeof err);
    if (rv != code) {
        fail_msg("expected %d, got %d (%s)", code, rv, err);
    }
    va_list ap;
    va_start(ap, code);
    for (const char *want = va_arg(ap, const char *); want != NULL;
         want = va_arg(ap, const char *)) {
        if (strstr(err, want) == NULL) {
            va_end(ap);
            fail_msg("error '%s' does not mention '%s'", err, want);
        }
    }
    va_end(ap);
}

static char *repeat_char(char ch, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, ch, n);
    s[n] = '\0';
    return s;
}

/* ------------------------------------------------------------------------
 * qr_command_check_publish */

static void test_check_minimal_request_passes(void **state)
{
    (void)state;
    Qraft__PublishRequest req = minimal_request();
    assert_accepted(&req);
}

static void test_check_full_request_passes(void **state)
{
    (void)state;
    Qraft__Header h1 = QRAFT__HEADER__INIT;
    h1.name = "Content-Type";
    h1.value = "application/json";
    Qraft__Header h2 = QRAFT__HEADER__INIT;
    h2.name = "X-Tabbed";
    h2.value = "a\tb";
    Qraft__Header *headers[] = {&h1, &h2};
    Qraft__PublishRequest req = minimal_request();
    req.url = "http://localhost:8080/path?q=1";
    req.method = "PUT";
    req.headers = headers;
    req.n_headers = 2;
    req.body.data = (uint8_t *)"{}";
    req.body.len = 2;
    req.retries = 100;
    req.retries_set = true;
    req.delay_ms = 1000;
    req.timeout_ms = 60000;
    req.retry_delay = "1000 * pow(2, retried)";
    req.dedup_id = "d-1";
    req.content_dedup = true;
    req.callback = "https://example.com/cb";
    req.failure_callback = "https://example.com/fail";
    req.queue = "orders.v1_eu-west";
    req.idempotency_key = "k-1";
    assert_accepted(&req);
}

static void test_check_every_method(void **state)
{
    (void)state;
    const char *ok[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        Qraft__PublishRequest req = minimal_request();
        req.method = (char *)ok[i];
        assert_accepted(&req);
    }
    Qraft__PublishRequest req = minimal_request();
    req.method = "TRACE";
    assert_refused(&req, QR_EBADREQ, "method", "TRACE", NULL);
    req.method = "post";
    assert_refused(&req, QR_EBADREQ, "method", NULL);
}

static void test_check_url_refusals(void **state)
{
    (void)state;
    Qraft__PublishRequest req = minimal_request();

    req.url = "";
    assert_refused(&req, QR_EBADREQ, "url", NULL);
    req.url = "ftp://example.com/file";
    assert_refused(&req, QR_EBADREQ, "url", NULL);
    req.url = "http://";
    assert_refused(&req, QR_EBADREQ, "url", NULL);
    req.url = "https:///path";
    assert_refused(&req, QR_EBADREQ, "url", NULL);
    req.url = "http://example.com/a b";
    assert_refused(&req, QR_EBADREQ, "url", NULL);
    req.url = "http://example.com/a\nb";
    assert_refused(&req, QR_EBADREQ, "url", NULL);
    req.url = "example.com/hook";
    assert_refused(&req, QR_EBADREQ, "url", NULL);

    req.url = "HTTPS://EXAMPLE.COM/";
    assert_accepted(&req);
}

static void test_check_url_length_limit(void **state)
{
    (void)state;
    struct qr_limits l = default_limits();
    const char *prefix = "https://example.com/";
    size_t n = l.max_url_bytes - strlen(prefix);
    char *url = malloc(l.max_url_bytes + 2);
    assert_non_null(url);
    strcpy(url, prefix);
    memset(url + strlen(prefix), 'a', n);
    url[l.max_url_bytes] = '\0';

    Qraft__PublishRequest req = minimal_request();
    req.url = url;
    assert_accepted(&req); /* exactly the limit */

    url[l.max_url_bytes] = 'a';
    url[l.max_url_bytes + 1] = '\0';
    char limit[32];
    snprintf(limit, sizeof limit, "%u", l.max_url_bytes);
    assert_refused(&req, QR_ETOOLARGE, "url", limit, NULL);
    free(url);
}

static void test_check_body_limit(void **state)
{
    (void)state;
    struct qr_limits l = default_limits();
    assert_int_equal(l.max_body_bytes, 1048576);
    uint8_t *body = calloc(1, l.max_body_bytes + 1);
    assert_non_null(body);

    Qraft__PublishRequest req = minimal_request();
    req.body.data = body;
    req.body.len = l.max_body_bytes;
    assert_accepted(&req);
    req.body.len = l.max_body_bytes + 1;
    assert_refused(&req, QR_ETOOLARGE, "body", "1048576", NULL);
    free(body);
}

static void test_check_header_count_limit(void **state)
{
    (void)state;
    struct qr_limits l = default_limits();
    Qraft__Header h = QRAFT__HEADER__INIT;
    h.name = "X-A";
    h.value = "1";
    Qraft__Header **headers = calloc(l.max_headers + 1, sizeof *headers);
    assert_non_null(headers);
    for (size_t i = 0; i <= l.max_headers; i++) {
        headers[i] = &h;
    }
    Qraft__PublishRequest req = minimal_request();
    req.headers = headers;
    req.n_headers = l.max_headers;
    assert_accepted(&req);
    req.n_headers = l.max_headers + 1;
    char limit[32];
    snprintf(limit, sizeof limit, "%u", l.max_headers);
    assert_refused(&req, QR_ETOOLARGE, "headers", limit, NULL);
    free(headers);
}

static void test_check_header_name_and_value(void **state)
{
    (void)state;
    Qraft__Header h = QRAFT__HEADER__INIT;
    Qraft__Header *headers[] = {&h};
    Qraft__PublishRequest req = minimal_request();
    req.headers = headers;
    req.n_headers = 1;

    h.value = "v";
    h.name = "X Space";
    assert_refused(&req, QR_EBADREQ, "header", "X Space", NULL);
    h.name = "X:Colon";
    assert_refused(&req, QR_EBADREQ, "header", "X:Colon", NULL);
    h.name = "";
    assert_refused(&req, QR_EBADREQ, "header", NULL);

    h.name = "X-Ok";
    h.value = "a\r\nInjected: yes";
    assert_refused(&req, QR_EBADREQ, "header", "X-Ok", NULL);
    h.value = "a\rb";
    assert_refused(&req, QR_EBADREQ, "header", NULL);
    h.value = "a\nb";
    assert_refused(&req, QR_EBADREQ, "header", NULL);
    h.value = "";
    assert_accepted(&req);
}

static void test_check_header_size_limit(void **state)
{
    (void)state;
    struct qr_limits l = default_limits();
    Qraft__Header h = QRAFT__HEADER__INIT;
    h.name = "X-Big";
    char *value = repeat_char('v', l.max_header_bytes - strlen(h.name));
    h.value = value;
    Qraft__Header *headers[] = {&h};
    Qraft__PublishRequest req = minimal_request();
    req.headers = headers;
    req.n_headers = 1;
    assert_accepted(&req); /* name + value exactly at the limit */
    free(value);

    value = repeat_char('v', l.max_header_bytes - strlen(h.name) + 1);
    h.value = value;
    char limit[32];
    snprintf(limit, sizeof limit, "%u", l.max_header_bytes);
    assert_refused(&req, QR_ETOOLARGE, "header", "X-Big", limit, NULL);
    free(value);
}

static void test_check_retries(void **state)
{
    (void)state;
    struct qr_limits l = default_limits();
    Qraft__PublishRequest req = minimal_request();
    req.retries_set = true;
    req.retries = l.max_retries;
    assert_accepted(&req);
    req.retries = l.max_retries + 1;
    char limit[32];
    snprintf(limit, sizeof limit, "%u", l.max_retries);
    assert_refused(&req, QR_EBADREQ, "retries", limit, NULL);
    /* Without retries_set the value is ignored: the node default applies. */
    req.retries_set = false;
    req.retries = l.max_retries + 1000;
    assert_accepted(&req);
}

static void test_check_delay_and_not_before(void **state)
{
    (void)state;
    struct qr_limits l = default_limits();
    char limit[32];
    snprintf(limit, sizeof limit, "%llu", (unsigned long long)l.max_delay_ms);

    Qraft__PublishRequest req = minimal_request();
    req.delay_ms = l.max_delay_ms;
    assert_accepted(&req);
    req.delay_ms = l.max_delay_ms + 1;
    assert_refused(&req, QR_EBADREQ, "delay", limit, NULL);

    req = minimal_request();
    req.not_before_ms = NOW_MS + l.max_delay_ms;
    assert_accepted(&req);
    req.not_before_ms = NOW_MS + l.max_delay_ms + 1;
    assert_refused(&req, QR_EBADREQ, "not-before", limit, NULL);
    req.not_before_ms = UINT64_MAX;
    assert_refused(&req, QR_EBADREQ, "not-before", NULL);
    /* In the past: due at once, not an error. */
    req.not_before_ms = NOW_MS - 60000;
    assert_accepted(&req);
    req.not_before_ms = 1;
    assert_accepted(&req);
}

static void test_check_timeout(void **state)
{
    (void)state;
    struct qr_limits l = default_limits();
    char limit[32];
    snprintf(limit, sizeof limit, "%llu", (unsigned long long)l.max_timeout_ms);
    Qraft__PublishRequest req = minimal_request();
    req.timeout_ms = l.max_timeout_ms;
    assert_accepted(&req);
    req.timeout_ms = l.max_timeout_ms + 1;
    assert_refused(&req, QR_EBADREQ, "timeout", limit, NULL);
}

static void test_check_retry_delay_length(void **state)
{
    (void)state;
    struct qr_limits l = default_limits();
    char limit[32];
    snprintf(limit, sizeof limit, "%u", l.max_expr_bytes);
    Qraft__PublishRequest req = minimal_request();
    char *expr = repeat_char('1', l.max_expr_bytes);
    req.retry_delay = expr;
    assert_accepted(&req);
    free(expr);
    expr = repeat_char('1', l.max_expr_bytes + 1);
    req.retry_delay = expr;
    assert_refused(&req, QR_ETOOLARGE, "retry delay", limit, NULL);
    free(expr);
}

/* An expression that does not parse is refused at publish, with where. */
static void test_check_retry_delay_syntax(void **state)
{
    (void)state;
    Qraft__PublishRequest req = minimal_request();
    req.retry_delay = "1000 * pow(2, retried)";
    assert_accepted(&req);
    req.retry_delay = "1000 * foo(retried)";
    assert_refused(&req, QR_EBADREQ, "retry delay", "foo", NULL);
    req.retry_delay = "(1000";
    assert_refused(&req, QR_EBADREQ, "retry delay", "')'", NULL);
}

/* Retry options: each span within the delay limit, min <= max, bounded
 * doublings. */
static void test_check_retry_options(void **state)
{
    (void)state;
    struct qr_limits l = default_limits();
    Qraft__PublishRequest req = minimal_request();
    Qraft__RetryOptions o = QRAFT__RETRY_OPTIONS__INIT;
    req.retry_options = &o;
    o.strict = true;
    o.min_backoff_ms = 1000;
    o.max_backoff_ms = 60000;
    o.max_doublings = 5;
    o.max_retry_duration_ms = l.max_delay_ms;
    assert_accepted(&req);
    o.min_backoff_ms = 120000;
    assert_refused(&req, QR_EBADREQ, "min backoff", "max backoff", NULL);
    o.min_backoff_ms = 1000;
    o.max_retry_duration_ms = l.max_delay_ms + 1;
    assert_refused(&req, QR_EBADREQ, "max retry duration", NULL);
    o.max_retry_duration_ms = 0;
    o.max_doublings = 17;
    assert_refused(&req, QR_EBADREQ, "max doublings", "16", NULL);
}

/* Delivery headers qraft sets cannot be published: a forged
 * Upstash-Message-Id would break receivers' dedup. */
static void test_check_reserved_headers(void **state)
{
    (void)state;
    const char *names[] = {"Upstash-Message-Id", "upstash-signature",
                           "UPSTASH-RETRIED",    "User-Agent",
                           "Content-Length",     "Host",
                           "upstash-schedule-id"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        Qraft__Header h = QRAFT__HEADER__INIT;
        Qraft__Header *hp = &h;
        h.name = (char *)names[i];
        h.value = "x";
        Qraft__PublishRequest req = minimal_request();
        req.n_headers = 1;
        req.headers = &hp;
        assert_refused(&req, QR_EBADREQ, "set by qraft", NULL);
    }
}

/* Only apply sets a message's schedule id (a schedule's tick). */
static void test_check_schedule_id_is_not_publishable(void **state)
{
    (void)state;
    Qraft__PublishRequest req = minimal_request();
    req.schedule_id = "nightly";
    assert_refused(&req, QR_EBADREQ, "schedule id", "cannot be published",
                   NULL);
}

static int check_schedule(const char *id,
                          const char *cron,
                          Qraft__PublishRequest *req,
                          uint64_t *first_ms,
                          char *err)
{
    struct qr_limits l = default_limits();
    struct qr_cron c;
    Qraft__ScheduleUpsertRequest r = QRAFT__SCHEDULE_UPSERT_REQUEST__INIT;
    r.schedule_id = (char *)id;
    r.cron = (char *)cron;
    r.request = req;
    return qr_command_check_schedule(&r, &l, NOW_MS, &c, first_ms, err,
                                     QR_ERRMSG_BYTES);
}

/* A schedule: its id, its cron (which must fire) and its template. */
static void test_check_schedule(void **state)
{
    (void)state;
    char err[QR_ERRMSG_BYTES];
    uint64_t first = 0;
    Qraft__PublishRequest req = minimal_request();
    assert_int_equal(check_schedule("", "*/5 * * * *", &req, &first, err), 0);
    assert_true(first > NOW_MS && first % 300000 == 0);
    assert_int_equal(check_schedule("a.b_c-1", "0 4 * * *", &req, &first, err),
                     0);

    assert_int_equal(check_schedule("a b", "* * * * *", &req, &first, err),
                     QR_EBADREQ);
    assert_non_null(strstr(err, "[A-Za-z0-9._-]+"));
    char *long_id = repeat_char('x', 257);
    assert_int_equal(check_schedule(long_id, "* * * * *", &req, &first, err),
                     QR_EBADREQ);
    free(long_id);
    assert_int_equal(check_schedule("", "* * *", &req, &first, err),
                     QR_EBADREQ);
    assert_non_null(strstr(err, "invalid cron '* * *'"));
    assert_int_equal(check_schedule("", "0 0 31 2 *", &req, &first, err),
                     QR_EBADREQ);
    assert_non_null(strstr(err, "never fires"));

    req.not_before_ms = NOW_MS + 1000;
    assert_int_equal(check_schedule("", "* * * * *", &req, &first, err),
                     QR_EBADREQ);
    assert_non_null(strstr(err, "not-before"));
    req = minimal_request();
    req.url = "ftp://x";
    assert_int_equal(check_schedule("", "* * * * *", &req, &first, err),
                     QR_EBADREQ);
    assert_non_null(strstr(err, "url"));
}

static void test_check_names(void **state)
{
    (void)state;
    struct qr_limits l = default_limits();
    Qraft__PublishRequest req = minimal_request();

    req.queue = "a/b";
    assert_refused(&req, QR_EBADREQ, "queue", NULL);
    req.queue = "a b";
    assert_refused(&req, QR_EBADREQ, "queue", NULL);

    char *name = repeat_char('q', l.max_name_bytes + 1);
    char limit[32];
    snprintf(limit, sizeof limit, "%u", l.max_name_bytes);
    req.queue = name;
    assert_refused(&req, QR_ETOOLARGE, "queue", limit, NULL);
    req.queue = "";
    req.dedup_id = name;
    assert_refused(&req, QR_ETOOLARGE, "dedup id", limit, NULL);
    req.dedup_id = "";
    req.idempotency_key = name;
    assert_refused(&req, QR_ETOOLARGE, "idempotency key", limit, NULL);
    free(name);
}

static void test_check_callbacks(void **state)
{
    (void)state;
    Qraft__PublishRequest req = minimal_request();
    req.callback = "not a url";
    assert_refused(&req, QR_EBADREQ, "callback", NULL);
    req.callback = "ftp://example.com/cb";
    assert_refused(&req, QR_EBADREQ, "callback", NULL);
    req.callback = "https://example.com/cb";
    req.failure_callback = "http://";
    assert_refused(&req, QR_EBADREQ, "failure callback", NULL);
    req.failure_callback = "https://example.com/failed";
    assert_accepted(&req);
}

static void test_check_error_fits_small_buffer(void **state)
{
    (void)state;
    Qraft__PublishRequest req = minimal_request();
    req.method = "TRACE";
    char err[8];
    memset(err, 'Z', sizeof err);
    assert_int_equal(check(&req, err, sizeof err), QR_EBADREQ);
    assert_int_equal(strlen(err), sizeof err - 1);
}

/* ------------------------------------------------------------------------
 * qr_command_message_id */

static void assert_id_format(const char *id)
{
    assert_int_equal(strlen(id), QR_ID_BYTES - 1);
    assert_memory_equal(id, "msg_", 4);
    for (const char *p = id + 4; *p; p++) {
        bool hex = (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f');
        if (!hex) {
            fail_msg("id '%s' has non lower-case hex '%c'", id, *p);
        }
    }
}

static void test_message_id_format(void **state)
{
    (void)state;
    char id[QR_ID_BYTES];
    qr_command_message_id(id, NOW_MS, 1, 0);
    assert_id_format(id);
    assert_int_equal(strlen(id), 4 + 24);
    qr_command_message_id(id, 0, 0, 0);
    assert_id_format(id);
    assert_string_equal(id, "msg_000000000000000000000000");
    qr_command_message_id(id, 0xABCDEFull, 0xBEEF, 0xDEADBEEFu);
    assert_id_format(id);
    qr_command_message_id(id, UINT64_MAX, UINT64_MAX, UINT32_MAX);
    assert_id_format(id);
}

/* (ms, node, seq) triples in increasing order. */
struct id_parts {
    uint64_t ms;
    uint64_t node;
    uint32_t seq;
};

static void test_message_ids_sort_by_time(void **state)
{
    (void)state;
    const struct id_parts order[] = {
        {0, 0, 0},
        {0, 0, 1},
        {0, 0, 0x10},
        {0, 0, UINT32_MAX},
        {0, 1, 0},
        {0, 2, 0},
        {0, 0x10, 0},
        {0, 0xFFFF, UINT32_MAX},
        {1, 0, 0},
        {9, 1, 5},
        {10, 1, 0},
        {15, 1, 0},
        {16, 1, 0},
        {255, 1, 0},
        {256, 1, 0},
        {NOW_MS, 1, 0},
        {NOW_MS, 1, 9},
        {NOW_MS, 1, 10},
        {NOW_MS, 2, 0},
        {NOW_MS + 1, 1, 0},
        {0xFFFFFFFFFFFFull, 0, 0},
    };
    size_t n = sizeof order / sizeof order[0];
    for (size_t i = 0; i + 1 < n; i++) {
        char a[QR_ID_BYTES];
        char b[QR_ID_BYTES];
        qr_command_message_id(a, order[i].ms, order[i].node, order[i].seq);
        qr_command_message_id(b, order[i + 1].ms, order[i + 1].node,
                              order[i + 1].seq);
        if (strcmp(a, b) >= 0) {
            fail_msg("'%s' does not sort before '%s' (case %zu)", a, b, i);
        }
    }
}

static void test_message_ids_sort_over_a_range(void **state)
{
    (void)state;
    char prev[QR_ID_BYTES];
    qr_command_message_id(prev, NOW_MS, 3, 0);
    for (uint64_t ms = NOW_MS + 1; ms < NOW_MS + 5000; ms += 7) {
        char id[QR_ID_BYTES];
        qr_command_message_id(id, ms, 3, (uint32_t)(5000 - (ms - NOW_MS)));
        assert_true(strcmp(prev, id) < 0);
        memcpy(prev, id, sizeof id);
    }
}

/* Node ids are 1..QR_MAX_NODE_ID (config refuses others): any two of them
 * mint different ids for the same (ms, seq). */
static void test_message_id_distinct_nodes_distinct_ids(void **state)
{
    (void)state;
    char a[QR_ID_BYTES];
    char b[QR_ID_BYTES];
    qr_command_message_id(a, NOW_MS, 1, 7);
    qr_command_message_id(b, NOW_MS, QR_MAX_NODE_ID, 7);
    assert_string_not_equal(a, b);
    qr_command_message_id(b, NOW_MS, 2, 7);
    assert_string_not_equal(a, b);
}

/* ------------------------------------------------------------------------
 * Commands and entries */

static Qraft__Command *unpack_command(const struct qr_packed *p)
{
    Qraft__Command *cmd = qraft__command__unpack(NULL, p->len, p->data);
    assert_non_null(cmd);
    return cmd;
}

static void pack_cancel(const char *message_id, struct qr_packed *out)
{
    Qraft__Cancel cancel = QRAFT__CANCEL__INIT;
    cancel.message_id = (char *)message_id;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_CANCEL;
    cmd.cancel = &cancel;
    assert_int_equal(qr_command_pack(&cmd, out), 0);
}

static void pack_publish(const Qraft__PublishRequest *req,
                         const char *message_id,
                         struct qr_packed *out)
{
    struct qr_limits l = default_limits();
    assert_int_equal(qr_command_pack_publish(req, message_id, &l, out), 0);
}

static uint32_t get_u32_be(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

/* Writes a framed entry into a new buffer (free with free()). */
static uint8_t *write_entry(uint64_t at_ms,
                            const struct qr_packed *cmds,
                            size_t n,
                            size_t *size)
{
    *size = qr_command_entry_size(at_ms, cmds, n);
    uint8_t *buf = malloc(*size);
    assert_non_null(buf);
    memset(buf, 0xAA, *size);
    qr_command_entry_write(at_ms, cmds, n, buf, *size);
    return buf;
}

static void test_entry_size_is_aligned(void **state)
{
    (void)state;
    struct qr_packed cmds[3];
    pack_cancel("msg_a", &cmds[0]);
    pack_cancel("msg_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", &cmds[1]);
    pack_cancel("", &cmds[2]);
    const uint64_t times[] = {0, 1, 127, 128, NOW_MS, UINT64_MAX};
    for (size_t t = 0; t < sizeof times / sizeof times[0]; t++) {
        for (size_t n = 0; n <= 3; n++) {
            size_t size;
            uint8_t *buf = write_entry(times[t], cmds, n, &size);
            assert_int_equal(size % 8, 0);
            uint32_t payload = get_u32_be(buf + 4);
            assert_true(size >= QR_ENTRY_HEADER_BYTES + payload);
            assert_true(size - (QR_ENTRY_HEADER_BYTES + payload) < 8);
            size_t cmd_bytes = 0;
            for (size_t i = 0; i < n; i++) {
                cmd_bytes += cmds[i].len;
            }
            assert_true(payload > cmd_bytes);
            /* Header as documented, zero padding after the payload. */
            assert_int_equal(get_u32_be(buf), QR_ENTRY_MAGIC);
            assert_memory_equal(buf, "QRE1", 4);
            for (size_t i = QR_ENTRY_HEADER_BYTES + payload; i < size; i++) {
                assert_int_equal(buf[i], 0);
            }
            free(buf);
        }
    }
    for (size_t i = 0; i < 3; i++) {
        free(cmds[i].data);
    }
}

static void test_entry_round_trip(void **state)
{
    (void)state;
    Qraft__Header h = QRAFT__HEADER__INIT;
    h.name = "Content-Type";
    h.value = "text/plain";
    Qraft__Header *headers[] = {&h};
    Qraft__PublishRequest req = minimal_request();
    req.method = "PUT";
    req.headers = headers;
    req.n_headers = 1;
    req.body.data = (uint8_t *)"hello\0world";
    req.body.len = 11;
    req.delay_ms = 5000;
    req.queue = "q1";

    struct qr_packed cmds[2];
    pack_publish(&req, "msg_0000000000010001000000aa", &cmds[0]);
    pack_cancel("msg_0000000000020001000000bb", &cmds[1]);

    const uint64_t times[] = {0, NOW_MS, UINT64_MAX};
    for (size_t t = 0; t < sizeof times / sizeof times[0]; t++) {
        size_t size;
        uint8_t *buf = write_entry(times[t], cmds, 2, &size);
        Qraft__Entry *e = NULL;
        assert_int_equal(qr_command_decode_entry(buf, size, &e), 0);
        assert_non_null(e);
        assert_int_equal(e->format, QR_COMMAND_FORMAT);
        assert_true(e->proposed_at_ms == times[t]);
        assert_int_equal(e->n_commands, 2);

        const Qraft__Command *c0 = e->commands[0];
        assert_int_equal(c0->body_case, QRAFT__COMMAND__BODY_PUBLISH);
        assert_string_equal(c0->publish->message_id,
                            "msg_0000000000010001000000aa");
        const Qraft__PublishRequest *r = c0->publish->request;
        assert_non_null(r);
        assert_string_equal(r->url, req.url);
        assert_string_equal(r->method, "PUT");
        assert_int_equal(r->n_headers, 1);
        assert_string_equal(r->headers[0]->name, "Content-Type");
        assert_string_equal(r->headers[0]->value, "text/plain");
        assert_int_equal(r->body.len, 11);
        assert_memory_equal(r->body.data, "hello\0world", 11);
        assert_int_equal(r->delay_ms, 5000);
        assert_string_equal(r->queue, "q1");

        const Qraft__Command *c1 = e->commands[1];
        assert_int_equal(c1->body_case, QRAFT__COMMAND__BODY_CANCEL);
        assert_string_equal(c1->cancel->message_id,
                            "msg_0000000000020001000000bb");

        /* The payload is a plain qraft.Entry: re-packing it gives the
         * length in the header (protobuf-c leaves out a zero time, which
         * the entry writer keeps, hence the 2 bytes). */
        size_t repacked = qraft__entry__get_packed_size(e);
        if (times[t] == 0) {
            repacked += 2;
        }
        assert_int_equal(repacked, get_u32_be(buf + 4));
        qraft__entry__free_unpacked(e, NULL);
        free(buf);
    }
    free(cmds[0].data);
    free(cmds[1].data);
}

static void test_entry_without_commands(void **state)
{
    (void)state;
    size_t size;
    uint8_t *buf = write_entry(42, NULL, 0, &size);
    Qraft__Entry *e = NULL;
    assert_int_equal(qr_command_decode_entry(buf, size, &e), 0);
    assert_int_equal(e->format, QR_COMMAND_FORMAT);
    assert_int_equal(e->proposed_at_ms, 42);
    assert_int_equal(e->n_commands, 0);
    qraft__entry__free_unpacked(e, NULL);
    free(buf);
}

static void test_decode_rejects_short_and_bad_frames(void **state)
{
    (void)state;
    struct qr_packed cmd;
    pack_cancel("msg_x", &cmd);
    size_t size;
    uint8_t *buf = write_entry(NOW_MS, &cmd, 1, &size);
    uint32_t payload = get_u32_be(buf + 4);
    Qraft__Entry *e = NULL;

    /* Shorter than the header. */
    for (size_t n = 0; n < QR_ENTRY_HEADER_BYTES; n++) {
        assert_int_equal(qr_command_decode_entry(buf, n, &e), QR_ECORRUPT);
    }
    /* Cut inside the payload: the announced length exceeds the buffer. */
    assert_int_equal(
        qr_command_decode_entry(buf, QR_ENTRY_HEADER_BYTES + payload - 1, &e),
        QR_ECORRUPT);
    /* Without its padding the entry is still whole. */
    assert_int_equal(
        qr_command_decode_entry(buf, QR_ENTRY_HEADER_BYTES + payload, &e), 0);
    qraft__entry__free_unpacked(e, NULL);

    /* Wrong magic. */
    uint8_t *bad = malloc(size);
    assert_non_null(bad);
    memcpy(bad, buf, size);
    bad[0] = 'X';
    assert_int_equal(qr_command_decode_entry(bad, size, &e), QR_ECORRUPT);
    memcpy(bad, buf, size);
    bad[3] = '2'; /* "QRE2" */
    assert_int_equal(qr_command_decode_entry(bad, size, &e), QR_ECORRUPT);

    /* Payload length larger than the buffer. */
    const uint32_t lengths[] = {(uint32_t)size, (uint32_t)size - 7,
                                0xFFFFFFFFu};
    for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++) {
        memcpy(bad, buf, size);
        bad[4] = (uint8_t)(lengths[i] >> 24);
        bad[5] = (uint8_t)(lengths[i] >> 16);
        bad[6] = (uint8_t)(lengths[i] >> 8);
        bad[7] = (uint8_t)lengths[i];
        assert_int_equal(qr_command_decode_entry(bad, size, &e), QR_ECORRUPT);
    }
    free(bad);
    free(buf);
    free(cmd.data);
}

/* Frames magic + length + payload into a new buffer (free with free()). */
static uint8_t *frame_payload(const uint8_t *payload, size_t len, size_t *size)
{
    *size = QR_ENTRY_HEADER_BYTES + len;
    uint8_t *buf = calloc(1, *size);
    assert_non_null(buf);
    memcpy(buf, "QRE1", 4);
    buf[4] = (uint8_t)(len >> 24);
    buf[5] = (uint8_t)(len >> 16);
    buf[6] = (uint8_t)(len >> 8);
    buf[7] = (uint8_t)len;
    if (len > 0) {
        memcpy(buf + QR_ENTRY_HEADER_BYTES, payload, len);
    }
    return buf;
}

static void test_decode_rejects_garbage_payload(void **state)
{
    (void)state;
    const struct {
        const char *what;
        uint8_t bytes[8];
        size_t len;
    } cases[] = {
        {"unterminated varint tag", {0xFF, 0xFF, 0xFF, 0xFF}, 4},
        {"commands field cut short", {0x08, 0x01, 0x1A, 0x10, 0x0A}, 5},
        {"command that is not a Command", {0x1A, 0x02, 0xFF, 0xFF}, 4},
        {"varint format cut short", {0x08, 0x80}, 2},
        {"group wire type", {0x0B, 0x0C}, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t size;
        uint8_t *buf = frame_payload(cases[i].bytes, cases[i].len, &size);
        Qraft__Entry *e = NULL;
        int rv = qr_command_decode_entry(buf, size, &e);
        if (rv != QR_ECORRUPT) {
            fail_msg("%s: expected QR_ECORRUPT, got %d", cases[i].what, rv);
        }
        free(buf);
    }
}

static void test_decode_newer_format_is_proto_error(void **state)
{
    (void)state;
    struct qr_packed cmd;
    pack_cancel("msg_x", &cmd);
    Qraft__Command *c = unpack_command(&cmd);
    Qraft__Command *cmds[] = {c};

    Qraft__Entry entry = QRAFT__ENTRY__INIT;
    entry.format = 99;
    entry.proposed_at_ms = NOW_MS;
    entry.n_commands = 1;
    entry.commands = cmds;
    size_t len = qraft__entry__get_packed_size(&entry);
    uint8_t *payload = malloc(len);
    assert_non_null(payload);
    qraft__entry__pack(&entry, payload);

    size_t size;
    uint8_t *buf = frame_payload(payload, len, &size);
    Qraft__Entry *e = NULL;
    assert_int_equal(qr_command_decode_entry(buf, size, &e), QR_EPROTO);
    free(buf);

    /* The same entry by hand with the current format decodes. */
    entry.format = QR_COMMAND_FORMAT;
    qraft__entry__pack(&entry, payload);
    buf = frame_payload(payload, len, &size);
    assert_int_equal(qr_command_decode_entry(buf, size, &e), 0);
    assert_int_equal(e->n_commands, 1);
    assert_string_equal(e->commands[0]->cancel->message_id, "msg_x");
    qraft__entry__free_unpacked(e, NULL);
    free(buf);

    free(payload);
    qraft__command__free_unpacked(c, NULL);
    free(cmd.data);
}

/* ------------------------------------------------------------------------
 * qr_command_pack_publish */

/* Packs req and returns its Publish command (free with
 * qraft__command__free_unpacked). */
static Qraft__Command *publish_command(const Qraft__PublishRequest *req,
                                       const char *message_id,
                                       const struct qr_limits *l)
{
    struct qr_packed p;
    assert_int_equal(qr_command_pack_publish(req, message_id, l, &p), 0);
    Qraft__Command *cmd = unpack_command(&p);
    free(p.data);
    assert_int_equal(cmd->body_case, QRAFT__COMMAND__BODY_PUBLISH);
    assert_non_null(cmd->publish);
    return cmd;
}

/* The single content key of req (new; free with free()). */
static char *content_key_of(const Qraft__PublishRequest *req,
                            const char *message_id)
{
    struct qr_limits l = default_limits();
    Qraft__PublishRequest copy = *req;
    copy.content_dedup = true;
    Qraft__Command *cmd = publish_command(&copy, message_id, &l);
    assert_int_equal(cmd->publish->n_dedup_keys, 1);
    char *key = strdup(cmd->publish->dedup_keys[0]);
    assert_non_null(key);
    qraft__command__free_unpacked(cmd, NULL);
    return key;
}

static bool has_key(const Qraft__Publish *p, const char *key)
{
    for (size_t i = 0; i < p->n_dedup_keys; i++) {
        if (strcmp(p->dedup_keys[i], key) == 0) {
            return true;
        }
    }
    return false;
}

static void test_publish_copies_request_and_limits(void **state)
{
    (void)state;
    struct qr_limits l = default_limits();
    l.dedup_window_ms = 123456;
    l.default_retries = 7;
    l.default_timeout_ms = 9999;
    Qraft__PublishRequest req = minimal_request();
    req.body.data = (uint8_t *)"abc";
    req.body.len = 3;
    Qraft__Command *cmd = publish_command(&req, "msg_id1", &l);
    const Qraft__Publish *p = cmd->publish;
    assert_string_equal(p->message_id, "msg_id1");
    assert_int_equal(p->dedup_window_ms, 123456);
    assert_int_equal(p->default_retries, 7);
    assert_int_equal(p->default_timeout_ms, 9999);
    assert_non_null(p->request);
    assert_string_equal(p->request->url, req.url);
    assert_int_equal(p->request->body.len, 3);
    assert_memory_equal(p->request->body.data, "abc", 3);
    /* No dedup keys unless asked for. */
    assert_int_equal(p->n_dedup_keys, 0);
    qraft__command__free_unpacked(cmd, NULL);

    struct qr_limits d = default_limits();
    cmd = publish_command(&req, "msg_id2", &d);
    assert_int_equal(cmd->publish->dedup_window_ms, d.dedup_window_ms);
    assert_int_equal(cmd->publish->default_retries, d.default_retries);
    assert_int_equal(cmd->publish->default_timeout_ms, d.default_timeout_ms);
    qraft__command__free_unpacked(cmd, NULL);
}

static void test_publish_dedup_id_and_idempotency_keys(void **state)
{
    (void)state;
    struct qr_limits l = default_limits();
    Qraft__PublishRequest req = minimal_request();
    req.dedup_id = "order-42";
    Qraft__Command *cmd = publish_command(&req, "msg_1", &l);
    assert_int_equal(cmd->publish->n_dedup_keys, 1);
    assert_string_equal(cmd->publish->dedup_keys[0], "id:order-42");
    qraft__command__free_unpacked(cmd, NULL);

    req = minimal_request();
    req.idempotency_key = "client-7f";
    cmd = publish_command(&req, "msg_1", &l);
    assert_int_equal(cmd->publish->n_dedup_keys, 1);
    assert_string_equal(cmd->publish->dedup_keys[0], "req:client-7f");
    qraft__command__free_unpacked(cmd, NULL);

    req.dedup_id = "order-42";
    req.content_dedup = true;
    cmd = publish_command(&req, "msg_1", &l);
    assert_int_equal(cmd->publish->n_dedup_keys, 3);
    assert_true(has_key(cmd->publish, "id:order-42"));
    assert_true(has_key(cmd->publish, "req:client-7f"));
    size_t n_content = 0;
    for (size_t i = 0; i < cmd->publish->n_dedup_keys; i++) {
        n_content += strncmp(cmd->publish->dedup_keys[i], "content:", 8) == 0;
    }
    assert_int_equal(n_content, 1);
    qraft__command__free_unpacked(cmd, NULL);
}

static void test_publish_content_key_format(void **state)
{
    (void)state;
    Qraft__PublishRequest req = minimal_request();
    char *key = content_key_of(&req, "msg_1");
    assert_int_equal(strlen(key), strlen("content:") + 64);
    assert_memory_equal(key, "content:", 8);
    for (const char *p = key + 8; *p; p++) {
        assert_true((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'));
    }
    free(key);
}

static void test_publish_content_key_identity(void **state)
{
    (void)state;
    Qraft__Header h1 = QRAFT__HEADER__INIT;
    h1.name = "Content-Type";
    h1.value = "application/json";
    Qraft__Header *headers[] = {&h1};
    Qraft__PublishRequest base = minimal_request();
    base.headers = headers;
    base.n_headers = 1;
    base.body.data = (uint8_t *)"{\"a\":1}";
    base.body.len = 7;
    char *k0 = content_key_of(&base, "msg_1");

    /* Identical content in fresh objects, another message id: same key. */
    char url[] = "https://example.com/hook";
    char body[] = "{\"a\":1}";
    char name[] = "Content-Type";
    char value[] = "application/json";
    Qraft__Header h2 = QRAFT__HEADER__INIT;
    h2.name = name;
    h2.value = value;
    Qraft__Header *headers2[] = {&h2};
    Qraft__PublishRequest same = minimal_request();
    same.url = url;
    same.headers = headers2;
    same.n_headers = 1;
    same.body.data = (uint8_t *)body;
    same.body.len = 7;
    same.delay_ms = 777; /* scheduling is not content */
    char *k = content_key_of(&same, "msg_2");
    assert_string_equal(k0, k);
    free(k);

    /* POST is the default method. */
    same.method = "POST";
    k = content_key_of(&same, "msg_3");
    assert_string_equal(k0, k);
    free(k);
    same.method = "";

    /* Any change to what is delivered gives another key. */
    body[6] = ']';
    k = content_key_of(&same, "msg_1");
    assert_string_not_equal(k0, k);
    free(k);
    body[6] = '}';

    url[strlen(url) - 1] = 'K';
    k = content_key_of(&same, "msg_1");
    assert_string_not_equal(k0, k);
    free(k);
    url[strlen(url) - 1] = 'k';

    value[0] = 'A';
    k = content_key_of(&same, "msg_1");
    assert_string_not_equal(k0, k);
    free(k);
    value[0] = 'a';

    name[0] = 'X';
    k = content_key_of(&same, "msg_1");
    assert_string_not_equal(k0, k);
    free(k);
    name[0] = 'C';

    same.method = "PUT";
    k = content_key_of(&same, "msg_1");
    assert_string_not_equal(k0, k);
    free(k);
    same.method = "";

    same.n_headers = 0;
    k = content_key_of(&same, "msg_1");
    assert_string_not_equal(k0, k);
    free(k);
    same.n_headers = 1;

    /* Back to the original: the same key again. */
    k = content_key_of(&same, "msg_9");
    assert_string_equal(k0, k);
    free(k);
    free(k0);
}

static void test_publish_content_key_is_unambiguous(void **state)
{
    (void)state;
    /* Moving bytes between neighbouring fields must change the key. */
    Qraft__Header a = QRAFT__HEADER__INIT;
    a.name = "X-ab";
    a.value = "c";
    Qraft__Header b = QRAFT__HEADER__INIT;
    b.name = "X-a";
    b.value = "bc";
    Qraft__Header *ha[] = {&a};
    Qraft__Header *hb[] = {&b};
    Qraft__PublishRequest ra = minimal_request();
    ra.headers = ha;
    ra.n_headers = 1;
    Qraft__PublishRequest rb = minimal_request();
    rb.headers = hb;
    rb.n_headers = 1;
    char *ka = content_key_of(&ra, "msg_1");
    char *kb = content_key_of(&rb, "msg_1");
    assert_string_not_equal(ka, kb);
    free(ka);
    free(kb);

    Qraft__PublishRequest rc = minimal_request();
    rc.url = "https://example.com/ab";
    rc.body.data = (uint8_t *)"c";
    rc.body.len = 1;
    Qraft__PublishRequest rd = minimal_request();
    rd.url = "https://example.com/a";
    rd.body.data = (uint8_t *)"bc";
    rd.body.len = 2;
    char *kc = content_key_of(&rc, "msg_1");
    char *kd = content_key_of(&rd, "msg_1");
    assert_string_not_equal(kc, kd);
    free(kc);
    free(kd);
}

/* Queue upserts: the name rule, the name length, and parallelism above the
 * limit as CONFLICT (the REST API's 412). A publish into a queue needs the
 * queues' feature level; a plain one does not. */
static void test_check_queue_and_level(void **state)
{
    (void)state;
    struct qr_limits l = default_limits();
    char err[QR_ERRMSG_BYTES];
    char long_name[300];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';

    assert_int_equal(
        qr_command_check_queue("jobs.v1_a-b", 0, &l, err, sizeof err), 0);
    assert_int_equal(qr_command_check_queue("jobs", 100, &l, err, sizeof err),
                     0);
    assert_int_equal(qr_command_check_queue("jobs", 101, &l, err, sizeof err),
                     QR_ECONFLICT);
    assert_non_null(strstr(err, "limit 100"));
    assert_int_equal(qr_command_check_queue("a b", 1, &l, err, sizeof err),
                     QR_EBADREQ);
    assert_int_equal(qr_command_check_queue("", 1, &l, err, sizeof err),
                     QR_EBADREQ);
    assert_int_equal(qr_command_check_queue(long_name, 1, &l, err, sizeof err),
                     QR_ETOOLARGE);

    Qraft__PublishRequest req = minimal_request();
    Qraft__Publish pub = QRAFT__PUBLISH__INIT;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    pub.request = &req;
    cmd.body_case = QRAFT__COMMAND__BODY_PUBLISH;
    cmd.publish = &pub;
    assert_int_equal(qr_command_level(&cmd), 1);
    req.queue = "jobs";
    assert_int_equal(qr_command_level(&cmd), QR_FEATURE_LEVEL_QUEUES);
    Qraft__QueuePause pause = QRAFT__QUEUE_PAUSE__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_QUEUE_PAUSE;
    cmd.queue_pause = &pause;
    assert_int_equal(qr_command_level(&cmd), QR_FEATURE_LEVEL_QUEUES);
}

/* ---------------------------------------------------------------------------
 * Redaction (Upstash-Redact-Fields). */

static void test_redact_check_and_level(void **state)
{
    (void)state;
    Qraft__PublishRequest req = minimal_request();
    Qraft__Redact r = QRAFT__REDACT__INIT;
    req.redact = &r;
    assert_refused(&req, QR_EBADREQ, "nothing to redact", NULL);
    r.body = true;
    assert_accepted(&req);
    char *names[QR_CHECK_REDACT_MAX_HEADERS + 1];
    for (size_t i = 0; i <= QR_CHECK_REDACT_MAX_HEADERS; i++) {
        names[i] = "X-Secret";
    }
    r.headers = names;
    r.n_headers = QR_CHECK_REDACT_MAX_HEADERS;
    assert_accepted(&req);
    r.n_headers++;
    assert_refused(&req, QR_EBADREQ, "limit is 64", NULL);
    char *bad[] = {"a b", "", "x:y", "é"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r.headers = &bad[i];
        r.n_headers = 1;
        assert_refused(&req, QR_EBADREQ, "not a header name", NULL);
    }

    r.n_headers = 0;
    Qraft__WorkflowPublish wf = QRAFT__WORKFLOW_PUBLISH__INIT;
    wf.run_id = "wfr_1";
    wf.init = true;
    req.workflow = &wf;
    assert_refused(&req, QR_EBADREQ, "workflow runs", NULL);
    req.workflow = NULL;

    Qraft__Publish pub = QRAFT__PUBLISH__INIT;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    pub.request = &req;
    cmd.body_case = QRAFT__COMMAND__BODY_PUBLISH;
    cmd.publish = &pub;
    req.queue = "jobs"; /* the highest level wins */
    assert_int_equal(qr_command_level(&cmd), QR_FEATURE_LEVEL_REDACT);
    req.redact = NULL;
    assert_int_equal(qr_command_level(&cmd), QR_FEATURE_LEVEL_QUEUES);
}

static void test_redact_placeholders(void **state)
{
    (void)state;
    char ph[QR_REDACT_PLACEHOLDER_BYTES];
    assert_int_equal(qr_redact_placeholder("abc", 3, ph), 0);
    /* sha256("abc"), nothing prefixed: anyone can check it */
    assert_string_equal(ph,
                        "REDACTED:ba7816bf8f01cfea414140de5dae2223b00361a3"
                        "96177a9cb410ff61f20015ad");
    assert_true(qr_redact_is_placeholder(ph, strlen(ph)));
    char again[QR_REDACT_PLACEHOLDER_BYTES];
    assert_int_equal(qr_redact_placeholder(ph, strlen(ph), again), 0);
    assert_string_equal(again, ph); /* idempotent */
    assert_false(qr_redact_is_placeholder("REDACTED:abc", 12));

    /* A view (unpacked message) and a drop (shallow copy) agree. */
    Qraft__Redact r = QRAFT__REDACT__INIT;
    char *names[] = {"x-secret"};
    r.headers = names;
    r.n_headers = 1;
    r.body = true;
    Qraft__Header h1 = QRAFT__HEADER__INIT, h2 = QRAFT__HEADER__INIT;
    h1.name = "X-Secret";
    h1.value = "abc";
    h2.name = "X-Public";
    h2.value = "seen";
    Qraft__Header h3 = QRAFT__HEADER__INIT; /* empty: not on the wire */
    h3.name = "X-Secret";
    h3.value = "";
    Qraft__Header *hs[] = {&h1, &h2, &h3};
    Qraft__Message m = QRAFT__MESSAGE__INIT;
    m.id = "msg_1";
    m.headers = hs;
    m.n_headers = 3;
    m.body.data = (uint8_t *)"abc";
    m.body.len = 3;
    m.redact = &r;
    size_t len = qraft__message__get_packed_size(&m);
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    qraft__message__pack(&m, buf);
    Qraft__Message *view = qraft__message__unpack(NULL, len, buf);
    free(buf);
    assert_non_null(view);
    assert_int_equal(qr_redact_view(view), 0);
    assert_string_equal(view->headers[0]->value, ph);
    assert_string_equal(view->headers[1]->value, "seen");
    char empty[QR_REDACT_PLACEHOLDER_BYTES];
    assert_int_equal(qr_redact_placeholder("", 0, empty), 0);
    assert_string_equal(view->headers[2]->value, empty);
    assert_int_equal(view->body.len, strlen(ph));
    assert_memory_equal(view->body.data, ph, strlen(ph));

    struct qr_redact_scratch s = {0};
    Qraft__Message drop = m;
    assert_int_equal(qr_redact_drop(&drop, &s), 0);
    assert_string_equal(drop.headers[0]->value, ph);
    assert_string_equal(drop.headers[1]->value, "seen");
    assert_string_equal(h1.value, "abc"); /* the originals untouched */
    assert_memory_equal(drop.body.data, ph, strlen(ph));
    qr_redact_scratch_free(&s);
    qr_redact_scratch_free(&s);
    qraft__message__free_unpacked(view, NULL);
}

/* ---------------------------------------------------------------------------
 * URL groups, labels and flow control. */

static void test_check_topic_instead_of_url(void **state)
{
    (void)state;
    Qraft__PublishRequest req = QRAFT__PUBLISH_REQUEST__INIT;
    req.topic_name = "orders.v2_eu-1";
    assert_accepted(&req);
    req.topic_name = "bad name";
    assert_refused(&req, QR_EBADREQ, "url group name", NULL);
    req.topic_name = "";
    assert_refused(&req, QR_EBADREQ, "url is missing", NULL);
}

static void test_check_labels_and_metadata(void **state)
{
    (void)state;
    Qraft__PublishRequest req = minimal_request();
    char *labels[17];
    for (size_t i = 0; i < 17; i++) {
        labels[i] = "l";
    }
    req.labels = labels;
    req.n_labels = 16;
    assert_accepted(&req);
    req.n_labels = 17;
    assert_refused(&req, QR_ETOOLARGE, "17 labels", NULL);
    req.n_labels = 2;
    labels[1] = "";
    assert_refused(&req, QR_EBADREQ, "label 2", NULL);
    labels[1] = "a\nb";
    assert_refused(&req, QR_EBADREQ, "label 2", NULL);
    req.n_labels = 0;
    req.caller_ip = "127.0.0.1";
    assert_accepted(&req);
    req.caller_ip = "1.2.3.4\r\nX: y";
    assert_refused(&req, QR_EBADREQ, "caller ip", NULL);
}

static void test_check_flow_control_fields(void **state)
{
    (void)state;
    Qraft__PublishRequest req = minimal_request();
    req.flow_rate = 5;
    assert_refused(&req, QR_EBADREQ, "without a flow control key", NULL);
    req.flow_control_key = "tenant-1";
    req.flow_period_s = 60;
    assert_accepted(&req);
    req.flow_period_s = 8 * 24 * 3600;
    assert_refused(&req, QR_EBADREQ, "period", NULL);
    req.flow_period_s = 0;
    req.flow_rate = 0;
    assert_refused(&req, QR_EBADREQ, "needs a parallelism or a rate", NULL);
}

static int parse_fc(const char *s,
                    uint32_t *par,
                    uint32_t *rate,
                    uint64_t *period,
                    char *err)
{
    *par = 99;
    *rate = 99;
    *period = 99;
    return qr_command_parse_flow_control(s, strlen(s), par, rate, period, err,
                                         QR_ERRMSG_BYTES);
}

static void test_parse_flow_control(void **state)
{
    (void)state;
    char err[QR_ERRMSG_BYTES];
    uint32_t par, rate;
    uint64_t period;

    assert_int_equal(parse_fc("parallelism=2, rate=10, period=1m", &par, &rate,
                              &period, err),
                     0);
    assert_int_equal(par, 2);
    assert_int_equal(rate, 10);
    assert_int_equal(period, 60);
    /* The SDK's shapes: spaces optional, any order, period default 1 s,
     * bare seconds, durations with several units. */
    assert_int_equal(parse_fc("rate=3", &par, &rate, &period, err), 0);
    assert_int_equal(par, 0);
    assert_int_equal(rate, 3);
    assert_int_equal(period, 1);
    assert_int_equal(
        parse_fc("period=30,parallelism=1", &par, &rate, &period, err), 0);
    assert_int_equal(period, 30);
    assert_int_equal(par, 1);
    assert_int_equal(
        parse_fc("rate=1, period=1h30m", &par, &rate, &period, err), 0);
    assert_int_equal(period, 5400);
    assert_int_equal(parse_fc("rate=1, period=7d", &par, &rate, &period, err),
                     0);

    static const char *const bad[] = {
        "",
        "period=10s", /* neither parallelism nor rate */
        "rate=0",     /* zero */
        "rate=-1",
        "rate=abc",
        "rate=99999999999",    /* over 32 bits */
        "rate=1, rate=2",      /* repeated */
        "rate=1, burst=2",     /* unknown */
        "rate",                /* no value */
        "rate=1,",             /* empty item */
        "rate=1, period=8d",   /* over a week */
        "rate=1, period=1.5s", /* not whole seconds */
        "rate=1, period=0s",
        "rate=1, period=10x",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        if (parse_fc(bad[i], &par, &rate, &period, err) != -EINVAL) {
            fail_msg("'%s' was accepted", bad[i]);
        }
        assert_true(strlen(err) > 0);
        /* Refused values leave the outputs alone. */
        assert_int_equal(rate, 99);
    }
}

static void test_parse_duration(void **state)
{
    (void)state;
    uint64_t ms = 0;
    assert_int_equal(qr_command_parse_duration("1d10h30m", 8, &ms), 0);
    assert_int_equal(ms, (24 + 10) * 3600000ull + 30 * 60000ull);
    assert_int_equal(qr_command_parse_duration("1.5s", 4, &ms), 0);
    assert_int_equal(ms, 1500);
    assert_int_equal(qr_command_parse_duration("10", 2, &ms), -EINVAL);
    assert_int_equal(qr_command_parse_duration("s", 1, &ms), -EINVAL);
    assert_int_equal(qr_command_parse_duration("", 0, &ms), -EINVAL);
    assert_int_equal(qr_command_parse_duration("99999d", 6, &ms), -ERANGE);
    uint64_t v = 0;
    assert_int_equal(qr_command_parse_uint("42", 2, 100, &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(qr_command_parse_uint("101", 3, 100, &v), -ERANGE);
    assert_int_equal(qr_command_parse_uint("4x", 2, 100, &v), -EINVAL);
}

static int check_change(Qraft__GroupChangeKind kind,
                        const char *name,
                        Qraft__UrlGroupEndpoint **eps,
                        size_t n,
                        char *err)
{
    struct qr_limits l = default_limits();
    Qraft__GroupChangeRequest gc = QRAFT__GROUP_CHANGE_REQUEST__INIT;
    gc.kind = kind;
    gc.name = (char *)name;
    gc.endpoints = eps;
    gc.n_endpoints = n;
    err[0] = '\0';
    return qr_command_check_group_change(&gc, &l, err, QR_ERRMSG_BYTES);
}

static void test_check_group_change(void **state)
{
    (void)state;
    char err[QR_ERRMSG_BYTES];
    Qraft__UrlGroupEndpoint a = QRAFT__URL_GROUP_ENDPOINT__INIT;
    Qraft__UrlGroupEndpoint b = QRAFT__URL_GROUP_ENDPOINT__INIT;
    Qraft__UrlGroupEndpoint *eps[101];
    a.name = "first";
    a.url = "https://example.com/a";
    b.url = "http://127.0.0.1:8000/b";
    eps[0] = &a;
    eps[1] = &b;
    const Qraft__GroupChangeKind add =
        QRAFT__GROUP_CHANGE_KIND__GROUP_ADD_ENDPOINTS;
    const Qraft__GroupChangeKind rm =
        QRAFT__GROUP_CHANGE_KIND__GROUP_REMOVE_ENDPOINTS;

    assert_int_equal(check_change(add, "g", eps, 2, err), 0);
    assert_int_equal(check_change(rm, "g", eps, 2, err), 0);
    assert_int_equal(
        check_change(QRAFT__GROUP_CHANGE_KIND__GROUP_DELETE, "g", NULL, 0, err),
        0);

    /* Names. */
    assert_int_equal(check_change(add, "a b", eps, 2, err), QR_EBADREQ);
    assert_non_null(strstr(err, "url group name"));
    assert_int_equal(check_change(add, "", eps, 2, err), QR_EBADREQ);
    assert_int_equal(check_change(add, "g/x", eps, 2, err), QR_EBADREQ);
    a.name = "bad/name";
    assert_int_equal(check_change(add, "g", eps, 2, err), QR_EBADREQ);
    assert_non_null(strstr(err, "endpoint name"));
    a.name = "first";

    /* URLs: needed to add, a name or a URL to remove. */
    b.url = "ftp://example.com/b";
    assert_int_equal(check_change(add, "g", eps, 2, err), QR_EBADREQ);
    assert_non_null(strstr(err, "endpoint 2 url"));
    b.url = "";
    assert_int_equal(check_change(add, "g", eps, 2, err), QR_EBADREQ);
    assert_non_null(strstr(err, "missing"));
    assert_int_equal(check_change(rm, "g", eps, 2, err), QR_EBADREQ);
    assert_non_null(strstr(err, "neither a name nor a url"));
    b.name = "second";
    assert_int_equal(check_change(rm, "g", eps, 2, err), 0);

    /* Counts. */
    assert_int_equal(check_change(add, "g", eps, 0, err), QR_EBADREQ);
    for (size_t i = 0; i < 101; i++) {
        eps[i] = &a;
    }
    assert_int_equal(check_change(add, "g", eps, 100, err), 0);
    assert_int_equal(check_change(add, "g", eps, 101, err), QR_ETOOLARGE);
    assert_non_null(strstr(err, "at most 100"));
    assert_int_equal(check_change((Qraft__GroupChangeKind)9, "g", eps, 1, err),
                     QR_EBADREQ);
}

static void test_publish_group_member_keys_are_per_endpoint(void **state)
{
    (void)state;
    struct qr_limits l = default_limits();
    Qraft__PublishRequest req = minimal_request();
    req.dedup_id = "order-42";
    req.idempotency_key = "client-7f";
    req.topic_name = "orders";
    req.endpoint_name = "eu";
    Qraft__Command *one = publish_command(&req, "msg_1", &l);
    req.url = "https://example.com/other";
    Qraft__Command *two = publish_command(&req, "msg_2", &l);
    req.topic_name = "other-group";
    Qraft__Command *three = publish_command(&req, "msg_3", &l);

    assert_int_equal(one->publish->n_dedup_keys, 2);
    for (size_t i = 0; i < 2; i++) {
        const char *k = one->publish->dedup_keys[i];
        assert_int_equal(strlen(k), strlen("ep:") + 64);
        assert_memory_equal(k, "ep:", 3);
        assert_false(has_key(two->publish, k));
        assert_false(has_key(three->publish, k));
        assert_false(has_key(three->publish, two->publish->dedup_keys[i]));
    }
    /* The member's fields travel in the command. */
    assert_string_equal(one->publish->request->topic_name, "orders");
    assert_string_equal(one->publish->request->endpoint_name, "eu");
    qraft__command__free_unpacked(one, NULL);
    qraft__command__free_unpacked(two, NULL);
    qraft__command__free_unpacked(three, NULL);

    /* The same endpoint of the same group: the same keys (a retry dedups). */
    req = minimal_request();
    req.dedup_id = "order-42";
    req.topic_name = "orders";
    one = publish_command(&req, "msg_1", &l);
    two = publish_command(&req, "msg_2", &l);
    assert_string_equal(one->publish->dedup_keys[0],
                        two->publish->dedup_keys[0]);
    qraft__command__free_unpacked(one, NULL);
    qraft__command__free_unpacked(two, NULL);
}

/* qr_command_init_one puts the body in the member its case names: packed
 * and read back, it is that command. */
static void test_command_init_one(void **state)
{
    (void)state;
    Qraft__Prune prune = QRAFT__PRUNE__INIT;
    prune.max_items = 7;
    Qraft__Command cmd;
    qr_command_init_one(&cmd, QRAFT__COMMAND__BODY_PRUNE, &prune.base);
    assert_int_equal(cmd.body_case, QRAFT__COMMAND__BODY_PRUNE);
    assert_ptr_equal(cmd.prune, &prune);

    Qraft__DlqDelete del = QRAFT__DLQ_DELETE__INIT;
    del.message_id = "msg_1";
    qr_command_init_one(&cmd, QRAFT__COMMAND__BODY_DLQ_DELETE, &del.base);
    struct qr_packed packed;
    assert_int_equal(qr_command_pack(&cmd, &packed), 0);
    Qraft__Command *back =
        qraft__command__unpack(NULL, packed.len, packed.data);
    assert_non_null(back);
    assert_int_equal(back->body_case, QRAFT__COMMAND__BODY_DLQ_DELETE);
    assert_string_equal(back->dlq_delete->message_id, "msg_1");
    qraft__command__free_unpacked(back, NULL);
    free(packed.data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_command_init_one),
        cmocka_unit_test(test_redact_check_and_level),
        cmocka_unit_test(test_redact_placeholders),
        cmocka_unit_test(test_check_minimal_request_passes),
        cmocka_unit_test(test_check_schedule_id_is_not_publishable),
        cmocka_unit_test(test_check_schedule),
        cmocka_unit_test(test_check_full_request_passes),
        cmocka_unit_test(test_check_every_method),
        cmocka_unit_test(test_check_url_refusals),
        cmocka_unit_test(test_check_url_length_limit),
        cmocka_unit_test(test_check_body_limit),
        cmocka_unit_test(test_check_header_count_limit),
        cmocka_unit_test(test_check_header_name_and_value),
        cmocka_unit_test(test_check_header_size_limit),
        cmocka_unit_test(test_check_retries),
        cmocka_unit_test(test_check_delay_and_not_before),
        cmocka_unit_test(test_check_timeout),
        cmocka_unit_test(test_check_retry_delay_length),
        cmocka_unit_test(test_check_retry_delay_syntax),
        cmocka_unit_test(test_check_retry_options),
        cmocka_unit_test(test_check_reserved_headers),
        cmocka_unit_test(test_check_names),
        cmocka_unit_test(test_check_queue_and_level),
        cmocka_unit_test(test_check_callbacks),
        cmocka_unit_test(test_check_error_fits_small_buffer),
        cmocka_unit_test(test_message_id_format),
        cmocka_unit_test(test_message_ids_sort_by_time),
        cmocka_unit_test(test_message_ids_sort_over_a_range),
        cmocka_unit_test(test_message_id_distinct_nodes_distinct_ids),
        cmocka_unit_test(test_entry_size_is_aligned),
        cmocka_unit_test(test_entry_round_trip),
        cmocka_unit_test(test_entry_without_commands),
        cmocka_unit_test(test_decode_rejects_short_and_bad_frames),
        cmocka_unit_test(test_decode_rejects_garbage_payload),
        cmocka_unit_test(test_decode_newer_format_is_proto_error),
        cmocka_unit_test(test_publish_copies_request_and_limits),
        cmocka_unit_test(test_publish_dedup_id_and_idempotency_keys),
        cmocka_unit_test(test_publish_content_key_format),
        cmocka_unit_test(test_publish_content_key_identity),
        cmocka_unit_test(test_publish_content_key_is_unambiguous),
        cmocka_unit_test(test_check_topic_instead_of_url),
        cmocka_unit_test(test_check_labels_and_metadata),
        cmocka_unit_test(test_check_flow_control_fields),
        cmocka_unit_test(test_parse_flow_control),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_check_group_change),
        cmocka_unit_test(test_publish_group_member_keys_are_per_endpoint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
