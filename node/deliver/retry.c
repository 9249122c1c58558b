/* Retry policy: attempt classification, budget, response delay headers, the
 * retry-delay expression's value as a delay (compiler and evaluator are
 * lib/expr.c), and backoff precedence. Every function is pure (no clock,
 * randomness or I/O) and every delay it returns is within 0..QR_RETRY_DAY_MS.
 */
#include "deliver/retry.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lib/ascii.h"

#define NS_PER_MS 1000000ull
#define NS_PER_S 1000000000ull
#define DAY_NS (QR_RETRY_DAY_MS * NS_PER_MS)
#define DAY_S 86400.0

/* A stored expression passed the publish-time length check already; this
 * only bounds the scan when the backoff compiles it again. */
#define STORED_EXPR_MAX_BYTES 65536

/* ------------------------------------------------------------------------ */
/* Small text helpers                                                        */
/* ------------------------------------------------------------------------ */

/* Case-insensitive comparison of s (len bytes) with the C string word. */
static bool equals_nocase(const char *s, size_t len, const char *word)
{
    if (strlen(word) != len) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (qr_ascii_to_lower(s[i]) != qr_ascii_to_lower(word[i])) {
            return false;
        }
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* 1. Classification                                                         */
/* ------------------------------------------------------------------------ */

static const char *const category_names[] = {
    [QR_RETRY_CAT_NONE] = "",
    [QR_RETRY_CAT_CONNECT] = "connect",
    [QR_RETRY_CAT_TIMEOUT] = "timeout",
    [QR_RETRY_CAT_THROTTLED] = "throttled",
    [QR_RETRY_CAT_SERVER_ERROR] = "server_error",
    [QR_RETRY_CAT_CLIENT_ERROR] = "client_error",
    [QR_RETRY_CAT_NON_RETRYABLE] = "non_retryable",
    [QR_RETRY_CAT_BUDGET_EXHAUSTED] = "budget_exhausted",
    [QR_RETRY_CAT_DESTINATION_REFUSED] = "destination_refused",
};

#define N_CATEGORIES (sizeof category_names / sizeof category_names[0])

const char *qr_retry_category_name(enum qr_retry_category category)
{
    if ((size_t)category >= N_CATEGORIES) {
        return "";
    }
    return category_names[category];
}

int qr_retry_category_parse(const char *name, enum qr_retry_category *out)
{
    if (name == NULL || name[0] == '\0') {
        return QR_EBADREQ;
    }
    for (size_t i = 1; i < N_CATEGORIES; i++) {
        if (strcmp(name, category_names[i]) == 0) {
            *out = (enum qr_retry_category)i;
            return 0;
        }
    }
    return QR_EBADREQ;
}

const char *qr_retry_transport_name(enum qr_retry_transport transport)
{
    switch (transport) {
        case QR_RETRY_TRANSPORT_OK:
            return "response received";
        case QR_RETRY_TRANSPORT_CONNECT:
            return "connection failed";
        case QR_RETRY_TRANSPORT_DNS:
            return "host name did not resolve";
        case QR_RETRY_TRANSPORT_TLS:
            return "TLS handshake failed";
        case QR_RETRY_TRANSPORT_TIMEOUT:
            return "timed out";
        case QR_RETRY_TRANSPORT_PROTOCOL:
            return "malformed response";
        case QR_RETRY_TRANSPORT_REDIRECTS:
            return "too many redirects";
        case QR_RETRY_TRANSPORT_TOO_LARGE:
            return "response too large";
        case QR_RETRY_TRANSPORT_REFUSED:
            return "destination refused";
    }
    return "unknown transport outcome";
}

bool qr_retry_header_is_true(const char *value, size_t len)
{
    if (value == NULL) {
        return false;
    }
    qr_ascii_trim(&value, &len);
    return equals_nocase(value, len, "true");
}

static bool valid_status(int status)
{
    return status >= 100 && status <= 599;
}

static void set_verdict(struct qr_retry_verdict *out,
                        enum qr_retry_class cls,
                        enum qr_retry_category category)
{
    out->cls = cls;
    out->category = category;
    out->cause = category;
}

static void classify_status(int status,
                            bool non_retryable,
                            bool strict,
                            struct qr_retry_verdict *out)
{
    if (status >= 200 && status <= 299) {
        set_verdict(out, QR_RETRY_DELIVERED, QR_RETRY_CAT_NONE);
        return;
    }
    if (status == 489 && non_retryable) {
        set_verdict(out, QR_RETRY_PERMANENT, QR_RETRY_CAT_NON_RETRYABLE);
        return;
    }
    if (status == 408) {
        set_verdict(out, QR_RETRY_TRANSIENT, QR_RETRY_CAT_TIMEOUT);
        return;
    }
    if (status == 429) {
        set_verdict(out, QR_RETRY_TRANSIENT, QR_RETRY_CAT_THROTTLED);
        return;
    }
    if (status >= 500) {
        set_verdict(out, QR_RETRY_TRANSIENT, QR_RETRY_CAT_SERVER_ERROR);
        return;
    }
    /* 1xx as a final answer, 3xx, and the remaining 4xx. */
    set_verdict(out, strict ? QR_RETRY_TRANSIENT : QR_RETRY_PERMANENT,
                QR_RETRY_CAT_CLIENT_ERROR);
}

void qr_retry_classify(enum qr_retry_transport transport,
                       int status,
                       bool non_retryable,
                       bool strict,
                       struct qr_retry_verdict *out)
{
    memset(out, 0, sizeof *out);
    out->transport = transport;
    out->status = status;

    switch (transport) {
        case QR_RETRY_TRANSPORT_OK:
        case QR_RETRY_TRANSPORT_TOO_LARGE:
            if (valid_status(status)) {
                classify_status(status, non_retryable, strict, out);
            } else {
                set_verdict(out, QR_RETRY_TRANSIENT, QR_RETRY_CAT_SERVER_ERROR);
            }
            return;
        case QR_RETRY_TRANSPORT_CONNECT:
        case QR_RETRY_TRANSPORT_DNS:
        case QR_RETRY_TRANSPORT_TLS:
            set_verdict(out, QR_RETRY_TRANSIENT, QR_RETRY_CAT_CONNECT);
            return;
        case QR_RETRY_TRANSPORT_TIMEOUT:
            set_verdict(out, QR_RETRY_TRANSIENT, QR_RETRY_CAT_TIMEOUT);
            return;
        case QR_RETRY_TRANSPORT_PROTOCOL:
            set_verdict(out, QR_RETRY_TRANSIENT, QR_RETRY_CAT_SERVER_ERROR);
            return;
        case QR_RETRY_TRANSPORT_REDIRECTS:
            set_verdict(out, strict ? QR_RETRY_TRANSIENT : QR_RETRY_PERMANENT,
                        QR_RETRY_CAT_CLIENT_ERROR);
            return;
        case QR_RETRY_TRANSPORT_REFUSED:
            set_verdict(out, QR_RETRY_PERMANENT,
                        QR_RETRY_CAT_DESTINATION_REFUSED);
            return;
    }
    /* Not one of ours: treat like a malformed answer. */
    set_verdict(out, QR_RETRY_TRANSIENT, QR_RETRY_CAT_SERVER_ERROR);
}

/* Why the attempt failed and what to do, for the attempt's own category. */
static void cause_hint(const struct qr_retry_verdict *v, char *buf, size_t size)
{
    int status = v->status;
    bool has_status = (v->transport == QR_RETRY_TRANSPORT_OK ||
                       v->transport == QR_RETRY_TRANSPORT_TOO_LARGE) &&
                      valid_status(status);

    switch (v->cause) {
        case QR_RETRY_CAT_CONNECT:
            if (v->transport == QR_RETRY_TRANSPORT_DNS) {
                snprintf(buf, size,
                         "the destination host name did not resolve: "
                         "check the URL's host, then replay");
            } else if (v->transport == QR_RETRY_TRANSPORT_TLS) {
                snprintf(buf, size,
                         "the TLS handshake with the destination failed: "
                         "check its certificate and the URL's scheme, then "
                         "replay");
            } else {
                snprintf(buf, size,
                         "could not connect to the destination: check that "
                         "it is up and reachable, then replay");
            }
            return;
        case QR_RETRY_CAT_TIMEOUT:
            if (has_status) {
                snprintf(buf, size,
                         "the destination timed out reading the request "
                         "(HTTP %d): check its health, then replay",
                         status);
            } else {
                snprintf(buf, size,
                         "the destination did not answer within the "
                         "timeout: make it faster or raise the message "
                         "timeout, then replay");
            }
            return;
        case QR_RETRY_CAT_THROTTLED:
            snprintf(buf, size,
                     "the destination throttled the request (HTTP %d): "
                     "raise its rate limit or publish more slowly, then "
                     "replay",
                     status);
            return;
        case QR_RETRY_CAT_SERVER_ERROR:
            if (has_status) {
                snprintf(buf, size,
                         "the destination failed (HTTP %d): fix the server, "
                         "then replay",
                         status);
            } else if (v->transport == QR_RETRY_TRANSPORT_TOO_LARGE) {
                snprintf(buf, size,
                         "the destination's response was too large: fix the "
                         "server, then replay");
            } else {
                snprintf(buf, size,
                         "the destination sent a malformed HTTP response: "
                         "fix the server, then replay");
            }
            return;
        case QR_RETRY_CAT_CLIENT_ERROR:
            if (v->transport == QR_RETRY_TRANSPORT_REDIRECTS) {
                snprintf(buf, size,
                         "the destination redirected too many times: "
                         "publish to the final URL");
            } else if (status >= 300 && status <= 399) {
                snprintf(buf, size,
                         "the destination redirected (HTTP %d) and "
                         "redirects are not followed: publish to the final "
                         "URL",
                         status);
            } else if (status >= 100 && status <= 199) {
                snprintf(buf, size,
                         "the destination sent an unexpected HTTP %d: fix "
                         "the server, then replay",
                         status);
            } else {
                snprintf(buf, size,
                         "the destination rejected the request (HTTP %d): "
                         "fix the URL or payload, then replay",
                         status);
            }
            return;
        case QR_RETRY_CAT_NON_RETRYABLE:
            snprintf(buf, size,
                     "the destination refused the message for good (HTTP %d "
                     "with Upstash-NonRetryable-Error): replay once it "
                     "accepts it",
                     status);
            return;
        case QR_RETRY_CAT_DESTINATION_REFUSED:
            snprintf(buf, size,
                     "this node refuses the destination's address "
                     "(loopback, link-local, private, multicast or "
                     "unspecified): publish to a public address, or open "
                     "its network with --allow-destinations on every node, "
                     "then replay");
            return;
        case QR_RETRY_CAT_NONE:
        case QR_RETRY_CAT_BUDGET_EXHAUSTED:
            break;
    }
    snprintf(buf, size,
             "the delivery failed: check the destination, then "
             "replay");
}

void qr_retry_hint(const struct qr_retry_verdict *v, char *buf, size_t size)
{
    if (size == 0) {
        return;
    }
    buf[0] = '\0';
    if (v->cls == QR_RETRY_DELIVERED) {
        return;
    }
    if (v->category != QR_RETRY_CAT_BUDGET_EXHAUSTED) {
        cause_hint(v, buf, size);
        return;
    }
    char cause[QR_RETRY_HINT_BYTES];
    cause_hint(v, cause, sizeof cause);
    snprintf(
        buf, size, "gave up after %u attempt%s (%s); last failure: %s",
        (unsigned)v->attempts, v->attempts == 1 ? "" : "s",
        v->deadline_passed ? "max retry duration reached" : "retries used up",
        cause);
}

/* ------------------------------------------------------------------------ */
/* 2. Budget                                                                 */
/* ------------------------------------------------------------------------ */

static bool out_of_time(const struct qr_retry_budget *b)
{
    if (b->max_retry_duration_ms == 0 || b->now_ms < b->created_ms) {
        return false;
    }
    return b->now_ms - b->created_ms >= b->max_retry_duration_ms;
}

bool qr_retry_budget_allows(const struct qr_retry_budget *b)
{
    if (b->attempts > b->max_retries) {
        return false;
    }
    return !out_of_time(b);
}

bool qr_retry_check_budget(struct qr_retry_verdict *v,
                           const struct qr_retry_budget *b)
{
    v->attempts = b->attempts;
    if (v->cls != QR_RETRY_TRANSIENT) {
        return false;
    }
    if (qr_retry_budget_allows(b)) {
        return true;
    }
    v->deadline_passed = b->attempts <= b->max_retries;
    v->cls = QR_RETRY_PERMANENT;
    v->category = QR_RETRY_CAT_BUDGET_EXHAUSTED;
    return false;
}

/* ------------------------------------------------------------------------ */
/* 3. Delay headers                                                          */
/* ------------------------------------------------------------------------ */

/* A byte cursor over a header value. */
struct cursor {
    const char *s;
    size_t len;
    size_t i;
};

static bool at_end(const struct cursor *c)
{
    return c->i >= c->len;
}

static char peek(const struct cursor *c)
{
    return at_end(c) ? '\0' : c->s[c->i];
}

static bool eat(struct cursor *c, char ch)
{
    if (peek(c) != ch) {
        return false;
    }
    c->i++;
    return true;
}

/* One or more spaces. */
static bool eat_spaces(struct cursor *c)
{
    if (peek(c) != ' ') {
        return false;
    }
    while (peek(c) == ' ') {
        c->i++;
    }
    return true;
}

/* Between min_digits and max_digits decimal digits. */
static bool eat_number(struct cursor *c,
                       unsigned min_digits,
                       unsigned max_digits,
                       unsigned *out)
{
    unsigned n = 0;
    unsigned v = 0;
    while (n < max_digits && qr_ascii_is_digit(peek(c))) {
        v = v * 10 + (unsigned)(c->s[c->i] - '0');
        c->i++;
        n++;
    }
    if (n < min_digits || qr_ascii_is_digit(peek(c))) {
        return false;
    }
    *out = v;
    return true;
}

/* A run of letters, matched against names; returns the index or -1. */
static int eat_name(struct cursor *c, const char *const *names, size_t n)
{
    size_t start = c->i;
    while (qr_ascii_is_alpha(peek(c))) {
        c->i++;
    }
    for (size_t k = 0; k < n; k++) {
        if (equals_nocase(c->s + start, c->i - start, names[k])) {
            return (int)k;
        }
    }
    return -1;
}

static const char *const day_names[] = {
    "Mon",      "Tue",    "Wed",      "Thu",     "Fri",
    "Sat",      "Sun",    "Monday",   "Tuesday", "Wednesday",
    "Thursday", "Friday", "Saturday", "Sunday",
};
#define N_SHORT_DAY_NAMES 7

static const char *const month_names[] = {
    "Jan", "Feb", "Mar", "Apr", "May", "Jun",
    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
};

static bool is_leap(unsigned y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(unsigned y, unsigned m)
{
    static const unsigned days[] = {31, 28, 31, 30, 31, 30,
                                    31, 31, 30, 31, 30, 31};
    return (m == 2 && is_leap(y)) ? 29 : days[m - 1];
}

/* Days from 1970-01-01 to y-m-d; y >= 1970. */
static uint64_t days_since_epoch(unsigned y, unsigned m, unsigned d)
{
    static const unsigned before_month[] = {0,   31,  59,  90,  120, 151,
                                            181, 212, 243, 273, 304, 334};
    uint64_t leaps_y = (y - 1) / 4 - (y - 1) / 100 + (y - 1) / 400;
    uint64_t leaps_1970 = 1969 / 4 - 1969 / 100 + 1969 / 400;
    uint64_t days = 365ull * (y - 1970) + (leaps_y - leaps_1970);
    days += before_month[m - 1] + ((m > 2 && is_leap(y)) ? 1 : 0);
    return days + d - 1;
}

/* "hh:mm:ss" */
static bool eat_time(struct cursor *c, unsigned *h, unsigned *mi, unsigned *s)
{
    return eat_number(c, 2, 2, h) && *h <= 23 && eat(c, ':') &&
           eat_number(c, 2, 2, mi) && *mi <= 59 && eat(c, ':') &&
           eat_number(c, 2, 2, s) && *s <= 60;
}

static bool eat_gmt(struct cursor *c)
{
    static const char *const gmt[] = {"GMT"};
    return eat_name(c, gmt, 1) == 0;
}

/* Parses the three HTTP date forms into unix ms (0 for dates before 1970).
 * Returns false for anything else. */
static bool parse_http_date(const char *s, size_t len, uint64_t *out_ms)
{
    struct cursor c = {s, len, 0};
    unsigned day = 0;
    unsigned year = 0;
    unsigned h = 0;
    unsigned mi = 0;
    unsigned sec = 0;
    int month;

    int wday = eat_name(&c, day_names, sizeof day_names / sizeof day_names[0]);
    if (wday < 0) {
        return false;
    }
    if (eat(&c, ',')) {
        /* IMF-fixdate or RFC 850. */
        if (!eat_spaces(&c) || !eat_number(&c, 1, 2, &day)) {
            return false;
        }
        if (eat(&c, '-')) {
            month = eat_name(&c, month_names, 12);
            if (month < 0 || !eat(&c, '-') || !eat_number(&c, 2, 2, &year)) {
                return false;
            }
            year += year < 70 ? 2000 : 1900;
        } else {
            if (!eat_spaces(&c)) {
                return false;
            }
            month = eat_name(&c, month_names, 12);
            if (month < 0 || !eat_spaces(&c) || !eat_number(&c, 4, 4, &year)) {
                return false;
            }
        }
        if (!eat_spaces(&c) || !eat_time(&c, &h, &mi, &sec) ||
            !eat_spaces(&c) || !eat_gmt(&c)) {
            return false;
        }
    } else {
        /* asctime: "Sun Nov  6 08:49:37 1994" */
        if (wday >= N_SHORT_DAY_NAMES || !eat_spaces(&c)) {
            return false;
        }
        month = eat_name(&c, month_names, 12);
        if (month < 0 || !eat_spaces(&c) || !eat_number(&c, 1, 2, &day) ||
            !eat_spaces(&c) || !eat_time(&c, &h, &mi, &sec) ||
            !eat_spaces(&c) || !eat_number(&c, 4, 4, &year)) {
            return false;
        }
    }
    if (!at_end(&c)) {
        return false;
    }
    unsigned m = (unsigned)month + 1;
    if (day < 1 || day > days_in_month(year, m)) {
        return false;
    }
    if (year < 1970) {
        *out_ms = 0;
        return true;
    }
    uint64_t secs = days_since_epoch(year, m, day) * 86400ull + h * 3600ull +
                    mi * 60ull + sec;
    *out_ms = secs * 1000ull;
    return true;
}

/* Nanoseconds per unit of a Go duration, or 0 when unknown. */
static uint64_t unit_ns(const char *u, size_t n)
{
    static const struct {
        const char *name;
        uint64_t ns;
    } units[] = {
        {"ns", 1},
        {"us", 1000},
        {"\xc2\xb5s", 1000}, /* U+00B5 micro sign */
        {"\xce\xbcs", 1000}, /* U+03BC Greek mu */
        {"ms", NS_PER_MS},
        {"s", NS_PER_S},
        {"m", 60 * NS_PER_S},
        {"h", 3600 * NS_PER_S},
    };
    for (size_t k = 0; k < sizeof units / sizeof units[0]; k++) {
        if (strlen(units[k].name) == n && memcmp(units[k].name, u, n) == 0) {
            return units[k].ns;
        }
    }
    return 0;
}

/* Adds one "<number><unit>" to *total_ns. default_unit_ns != 0 means the
 * number must be the whole rest (plain seconds). Sets *over when the sum
 * passes one day. Returns false on a syntax error. */
static bool eat_component(struct cursor *c,
                          uint64_t default_unit_ns,
                          uint64_t *total_ns,
                          bool *over)
{
    uint64_t whole = 0;
    uint64_t frac = 0;
    uint64_t scale = 1;
    unsigned n_digits = 0;
    bool whole_over = false;

    while (qr_ascii_is_digit(peek(c))) {
        if (whole > DAY_NS) {
            whole_over = true;
        } else {
            whole = whole * 10 + (uint64_t)(c->s[c->i] - '0');
        }
        c->i++;
        n_digits++;
    }
    if (eat(c, '.')) {
        while (qr_ascii_is_digit(peek(c))) {
            if (scale < 1000000000000000000ull) {
                frac = frac * 10 + (uint64_t)(c->s[c->i] - '0');
                scale *= 10;
            }
            c->i++;
            n_digits++;
        }
    }
    if (n_digits == 0) {
        return false;
    }

    uint64_t unit = default_unit_ns;
    if (unit == 0) {
        size_t start = c->i;
        while (!at_end(c) && !qr_ascii_is_digit(peek(c)) && peek(c) != '.') {
            c->i++;
        }
        unit = unit_ns(c->s + start, c->i - start);
        if (unit == 0) {
            return false;
        }
    }

    if (whole_over || whole > DAY_NS / unit) {
        *over = true;
        return true;
    }
    uint64_t ns = whole * unit;
    ns += (uint64_t)((double)frac * (double)unit / (double)scale + 0.5);
    if (ns > DAY_NS - *total_ns) {
        *over = true;
        return true;
    }
    *total_ns += ns;
    return true;
}

/* Plain seconds ("10", "1.5") or a Go duration. */
static int parse_duration(const char *s, size_t len, uint64_t *out_ns)
{
    struct cursor c = {s, len, 0};
    uint64_t total = 0;
    bool over = false;

    /* Plain seconds first: the whole value is one unitless number. */
    if (eat_component(&c, NS_PER_S, &total, &over) && at_end(&c)) {
        *out_ns = total;
        return over ? QR_ETOOLARGE : 0;
    }

    c.i = 0;
    total = 0;
    over = false;
    bool negative = false;
    if (eat(&c, '-')) {
        negative = true;
    } else {
        eat(&c, '+');
    }
    if (c.len - c.i == 1 && peek(&c) == '0') {
        *out_ns = 0;
        return 0;
    }
    if (at_end(&c)) {
        return QR_EBADREQ;
    }
    while (!at_end(&c)) {
        if (!eat_component(&c, 0, &total, &over)) {
            return QR_EBADREQ;
        }
    }
    if (negative) {
        *out_ns = 0;
        return 0;
    }
    *out_ns = total;
    return over ? QR_ETOOLARGE : 0;
}

int qr_retry_parse_delay(const char *value,
                         size_t len,
                         uint64_t now_ms,
                         uint64_t *delay_ms)
{
    if (value == NULL) {
        return QR_EBADREQ;
    }
    qr_ascii_trim(&value, &len);
    if (len == 0) {
        return QR_EBADREQ;
    }

    if (qr_ascii_is_alpha(value[0])) {
        uint64_t at_ms;
        if (!parse_http_date(value, len, &at_ms)) {
            return QR_EBADREQ;
        }
        uint64_t d = at_ms > now_ms ? at_ms - now_ms : 0;
        if (d > QR_RETRY_DAY_MS) {
            return QR_ETOOLARGE;
        }
        *delay_ms = d;
        return 0;
    }

    uint64_t ns;
    int rv = parse_duration(value, len, &ns);
    if (rv != 0) {
        return rv;
    }
    uint64_t ms = (ns + NS_PER_MS - 1) / NS_PER_MS;
    if (ms > QR_RETRY_DAY_MS) {
        return QR_ETOOLARGE;
    }
    *delay_ms = ms;
    return 0;
}

static bool is_delay_header(const char *name, size_t len)
{
    return equals_nocase(name, len, "Retry-After") ||
           equals_nocase(name, len, "X-RateLimit-Reset") ||
           equals_nocase(name, len, "X-RateLimit-Reset-Requests") ||
           equals_nocase(name, len, "X-RateLimit-Reset-Tokens");
}

void qr_retry_note_header(struct qr_retry_response *r,
                          const char *line,
                          size_t len,
                          uint64_t now_ms)
{
    if (line == NULL) {
        return;
    }
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        memset(r, 0, sizeof *r);
        return;
    }
    const char *colon = memchr(line, ':', len);
    if (colon == NULL) {
        return;
    }
    const char *name = line;
    size_t name_len = (size_t)(colon - line);
    const char *value = colon + 1;
    size_t value_len = len - name_len - 1;
    qr_ascii_trim(&name, &name_len);

    if (equals_nocase(name, name_len, "Upstash-NonRetryable-Error")) {
        if (qr_retry_header_is_true(value, value_len)) {
            r->non_retryable = true;
        }
        return;
    }
    if (!is_delay_header(name, name_len)) {
        return;
    }
    uint64_t d;
    if (qr_retry_parse_delay(value, value_len, now_ms, &d) != 0) {
        return;
    }
    if (!r->delay_set || d > r->delay_ms) {
        r->delay_set = true;
        r->delay_ms = d;
    }
}

/* ------------------------------------------------------------------------ */
/* 4. The expression as a delay                                              */
/* ------------------------------------------------------------------------ */

uint64_t qr_retry_ms_from_double(double ms)
{
    if (isnan(ms)) {
        return QR_RETRY_DAY_MS;
    }
    if (ms <= 0.0) {
        return 0;
    }
    if (ms >= (double)QR_RETRY_DAY_MS) {
        return QR_RETRY_DAY_MS;
    }
    return (uint64_t)(ms + 0.5);
}

uint64_t qr_retry_expr_delay_ms(const struct qr_expr *e, uint32_t retried)
{
    return qr_retry_ms_from_double(qr_expr_eval(e, (double)retried));
}

/* ------------------------------------------------------------------------ */
/* 5. Backoff                                                                */
/* ------------------------------------------------------------------------ */

/* e^(2.5 k) seconds for k = 0..5; beyond that the cap applies anyway. */
static double growth_s(uint64_t k)
{
    static const double table[] = {
        1.0,
        12.182493960703473,
        148.4131591025766,
        1808.0424144560632,
        22026.465794806718,
        268337.2865208745,
    };
    const uint64_t last = sizeof table / sizeof table[0] - 1;
    return table[k < last ? k : last];
}

uint64_t qr_retry_default_delay_ms(uint64_t n,
                                   double jitter,
                                   uint32_t max_doublings)
{
    if (n == 0) {
        n = 1;
    }
    uint64_t d = max_doublings;
    double s;
    if (d > 0 && n > d + 1) {
        double top = growth_s(d + 1);
        s = top + (double)(n - d - 1) * (top - growth_s(d));
    } else {
        s = growth_s(n);
    }
    if (s > DAY_S) {
        s = DAY_S;
    }
    if (isnan(jitter)) {
        jitter = 0.0;
    } else if (jitter < -0.1) {
        jitter = -0.1;
    } else if (jitter > 0.1) {
        jitter = 0.1;
    }
    return qr_retry_ms_from_double(s * 1000.0 * (1.0 + jitter));
}

uint64_t qr_retry_next_delay_ms(const struct qr_retry_backoff *b,
                                enum qr_retry_rule *rule)
{
    enum qr_retry_rule used = QR_RETRY_RULE_DEFAULT;
    uint64_t ms = 0;
    bool have = false;

    if (b->header_delay_set && b->header_delay_ms <= QR_RETRY_DAY_MS) {
        ms = b->header_delay_ms;
        used = QR_RETRY_RULE_HEADER;
        have = true;
    }
    if (!have && b->expr != NULL && b->expr[0] != '\0') {
        struct qr_expr e;
        char errmsg[QR_ERRMSG_BYTES];
        if (qr_expr_compile(&e, b->expr, STORED_EXPR_MAX_BYTES, errmsg) == 0) {
            ms = qr_retry_expr_delay_ms(&e, b->retried);
            used = QR_RETRY_RULE_EXPRESSION;
            have = true;
        }
    }
    if (!have) {
        ms = qr_retry_default_delay_ms((uint64_t)b->retried + 1, b->jitter,
                                       b->max_doublings);
    }

    if (b->min_backoff_ms != 0 && ms < b->min_backoff_ms) {
        ms = b->min_backoff_ms;
    }
    if (b->max_backoff_ms != 0 && ms > b->max_backoff_ms) {
        ms = b->max_backoff_ms;
    }
    if (ms > QR_RETRY_DAY_MS) {
        ms = QR_RETRY_DAY_MS;
    }
    if (rule != NULL) {
        *rule = used;
    }
    return ms;
}
