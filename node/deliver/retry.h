/* Retry policy as pure functions: classification of one delivery attempt,
 * the attempt budget, Retry-After style response headers, the
 * Upstash-Retry-Delay expression's value as a delay (the language itself is
 * lib/expr.h) and the backoff precedence. Nothing here reads a clock, draws a
 * random number, allocates or does I/O: time and jitter come from the caller,
 * so the worker and apply compute the same answers from the same inputs. */
#ifndef QR_RETRY_H
#define QR_RETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"
#include "lib/expr.h"

/* Every delay computed here is capped at one day. */
#define QR_RETRY_DAY_MS 86400000ull

/* ---------------------------------------------------------------------------
 * 1. Classification of one attempt
 *
 *   what happened                           default mode         strict mode
 *   ------------------------------------    -------------------  -----------
 *   2xx                                      DELIVERED            DELIVERED
 *   connect / DNS / TLS failure              TRANSIENT connect    same
 *   timed out, or HTTP 408                   TRANSIENT timeout    same
 *   HTTP 429                                 TRANSIENT throttled  same
 *   HTTP 5xx                                 TRANSIENT server_err same
 *   malformed response (PROTOCOL), or a
 *     status outside 100..599                TRANSIENT server_err same
 *   489 + Upstash-NonRetryable-Error: true   PERMANENT non_retry. same
 *   any other 4xx (489 without the header
 *     included)                              PERMANENT client_err TRANSIENT
 *   1xx as a final answer, 3xx (redirects
 *     are not followed), too many redirects  PERMANENT client_err TRANSIENT
 *   the destination's address refused by
 *     the node's policy (SSRF guard)         PERMANENT dest_ref. same
 *
 * Strict mode is QStash's behaviour: every failure is retried except 489 with
 * the NonRetryable header. 1xx/3xx are permanent by default because a retry
 * would get the same answer: the destination or the URL has to change. A
 * malformed answer is treated as a server fault, hence transient. A refused
 * destination is permanent in both modes: nothing was sent, and a retry
 * would be refused alike until the node's flags or the URL change.
 * ------------------------------------------------------------------------- */

/* How the transport ended. status is consulted only for OK and TOO_LARGE. */
enum qr_retry_transport {
    QR_RETRY_TRANSPORT_OK = 0,    /* a complete response arrived: see status */
    QR_RETRY_TRANSPORT_CONNECT,   /* refused, reset, unreachable, closed */
    QR_RETRY_TRANSPORT_DNS,       /* the host name did not resolve */
    QR_RETRY_TRANSPORT_TLS,       /* handshake or certificate failure */
    QR_RETRY_TRANSPORT_TIMEOUT,   /* no complete answer within the timeout */
    QR_RETRY_TRANSPORT_PROTOCOL,  /* the answer was not valid HTTP */
    QR_RETRY_TRANSPORT_REDIRECTS, /* too many redirects (when following) */
    /* The answer went over the response caps and its reading was cut short.
     * With a valid status (100..599) it is classified by that status (the
     * kept body is merely truncated); without one, like PROTOCOL. */
    QR_RETRY_TRANSPORT_TOO_LARGE,
    /* Every address of the destination was refused by the node's policy
     * (--allow-destinations): nothing was sent. */
    QR_RETRY_TRANSPORT_REFUSED,
};

enum qr_retry_class {
    QR_RETRY_DELIVERED = 0,
    QR_RETRY_TRANSIENT, /* retry while the budget lasts */
    QR_RETRY_PERMANENT, /* dead-letter now */
};

/* Why an attempt failed; the names are the DLQ's error categories. */
enum qr_retry_category {
    QR_RETRY_CAT_NONE = 0, /* delivered */
    QR_RETRY_CAT_CONNECT,
    QR_RETRY_CAT_TIMEOUT,
    QR_RETRY_CAT_THROTTLED,
    QR_RETRY_CAT_SERVER_ERROR,
    QR_RETRY_CAT_CLIENT_ERROR,
    QR_RETRY_CAT_NON_RETRYABLE,
    QR_RETRY_CAT_BUDGET_EXHAUSTED, /* set by qr_retry_check_budget only */
    QR_RETRY_CAT_DESTINATION_REFUSED,
};

struct qr_retry_verdict {
    enum qr_retry_class cls;
    enum qr_retry_category category;
    /* Category of the attempt itself; differs from category only when the
     * budget check turned a transient failure into BUDGET_EXHAUSTED. */
    enum qr_retry_category cause;
    enum qr_retry_transport transport;
    int status;           /* HTTP status as given; 0 when none */
    uint32_t attempts;    /* set by qr_retry_check_budget */
    bool deadline_passed; /* budget ran out by time, not by count */
};

/* Classifies one attempt into *out (see the table above). non_retryable: the
 * response carried Upstash-NonRetryable-Error: true (see
 * qr_retry_header_is_true); it counts only together with status 489. */
void qr_retry_classify(enum qr_retry_transport transport,
                       int status,
                       bool non_retryable,
                       bool strict,
                       struct qr_retry_verdict *out);

/* "connect", "timeout", "throttled", "server_error", "client_error",
 * "non_retryable", "budget_exhausted", "destination_refused"; "" for NONE.
 * Static strings. */
const char *qr_retry_category_name(enum qr_retry_category category);

/* Inverse of qr_retry_category_name (exact, lower case). Returns 0 and sets
 * *out, or QR_EBADREQ for an unknown name. */
int qr_retry_category_parse(const char *name, enum qr_retry_category *out);

/* Short static text for a transport outcome ("connection failed", ...). */
const char *qr_retry_transport_name(enum qr_retry_transport transport);

/* True when value (len bytes, need not be NUL-terminated) is "true" in any
 * case, ignoring surrounding spaces, tabs, CR and LF. */
bool qr_retry_header_is_true(const char *value, size_t len);

/* One line of advice for the operator of a dead-lettered message, e.g.
 * "the destination rejected the request (HTTP 404): fix the URL or payload,
 * then replay". Always NUL-terminates buf (truncating); "" when delivered. */
#define QR_RETRY_HINT_BYTES 256
void qr_retry_hint(const struct qr_retry_verdict *v, char *buf, size_t size);

/* ---------------------------------------------------------------------------
 * 2. Budget
 * ------------------------------------------------------------------------- */

struct qr_retry_budget {
    uint32_t attempts;    /* attempts made, including the one that failed */
    uint32_t max_retries; /* attempts allowed = 1 + max_retries */
    uint64_t created_ms;  /* the message's creation time (leader time) */
    /* Retrying stops once now_ms - created_ms >= this; 0 = no limit. Note a
     * message delayed longer than this gets one attempt only. */
    uint64_t max_retry_duration_ms;
    uint64_t now_ms;
};

/* True when another attempt may be made: attempts <= max_retries and the
 * retry duration (if any) has not run out. Either limit ends the retries. */
bool qr_retry_budget_allows(const struct qr_retry_budget *b);

/* Applies the budget to a verdict. Returns true when v is TRANSIENT and
 * another attempt is allowed; when it is TRANSIENT and none is, turns v into
 * PERMANENT / BUDGET_EXHAUSTED (cause keeps the attempt's own category) and
 * returns false. DELIVERED and PERMANENT verdicts return false unchanged
 * except for v->attempts, which is always set from b. */
bool qr_retry_check_budget(struct qr_retry_verdict *v,
                           const struct qr_retry_budget *b);

/* ---------------------------------------------------------------------------
 * 3. Delays asked for by the response
 *
 * Retry-After, X-RateLimit-Reset, X-RateLimit-Reset-Requests and
 * X-RateLimit-Reset-Tokens accept, after trimming spaces/tabs/CR/LF:
 *   - seconds: "10", "0" (at once), also with a fraction ("1.5");
 *   - an HTTP date: IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT", and the
 *     obsolete RFC 850 and asctime forms HTTP requires recipients to accept;
 *     relative to now_ms, a date in the past means 0 (two-digit RFC 850
 *     years: 00-69 are 20xx, 70-99 19xx);
 *   - a Go duration: "6m5s", "1.5h", "300ms", units ns us µs μs ms s m h, an
 *     optional leading '+'; a negative duration ("-5s") means 0.
 * Sub-millisecond remainders round up (never retry earlier than asked).
 * ------------------------------------------------------------------------- */

/* Parses one header value (len bytes, need not be NUL-terminated). Returns 0
 * and sets *delay_ms (0..QR_RETRY_DAY_MS), QR_ETOOLARGE when the delay is
 * above one day (ignored by the caller: the next rule applies), or
 * QR_EBADREQ for anything unparseable (likewise ignored). */
int qr_retry_parse_delay(const char *value,
                         size_t len,
                         uint64_t now_ms,
                         uint64_t *delay_ms);

/* What the retry policy wants from a response's headers. */
struct qr_retry_response {
    bool non_retryable; /* Upstash-NonRetryable-Error: true */
    bool delay_set;     /* a usable delay header was seen */
    uint64_t delay_ms;  /* the largest usable one: every limit must reset */
};

/* Feeds one raw header line ("Name: value\r\n", as libcurl's header callback
 * gives it) into *r. A status line ("HTTP/...") starts a new response (after
 * 100 Continue or a followed redirect) and clears *r; unknown names, lines
 * without ':' and unusable values are ignored. Start with a zeroed *r. */
void qr_retry_note_header(struct qr_retry_response *r,
                          const char *line,
                          size_t len,
                          uint64_t now_ms);

/* ---------------------------------------------------------------------------
 * 4. The Upstash-Retry-Delay expression as a delay
 *
 * The language, its compiler and evaluator are lib/expr.h; here the value
 * becomes a delay within the day cap.
 * ------------------------------------------------------------------------- */

/* The value as a delay: NaN and +inf become QR_RETRY_DAY_MS, anything below 0
 * (-inf included) 0, the rest rounded to the nearest ms and capped at
 * QR_RETRY_DAY_MS. */
uint64_t qr_retry_ms_from_double(double ms);

/* qr_retry_ms_from_double(qr_expr_eval(e, retried)). */
uint64_t qr_retry_expr_delay_ms(const struct qr_expr *e, uint32_t retried);

/* ---------------------------------------------------------------------------
 * 5. The next delay
 *
 * 1. header delay (delay_set, <= 1 day; larger values are ignored);
 * 2. else the expression, evaluated with retried (falls through when it does
 *    not compile, which publish-time checks make unlikely);
 * 3. else the default: min(86400, e^(2.5 n)) s with n = retried + 1, i.e.
 *    12.18 s, 148.4 s, 1808 s, 22026 s, then 86400 s, times (1 + jitter).
 *    With max_doublings d > 0 the curve grows exponentially for d steps
 *    (n = 1..d+1) and then linearly by its last step:
 *      delay(n) = e(d+1) + (n-d-1) * (e(d+1) - e(d)),  e(k) = e^(2.5 k), e(0)=1
 *    (the name comes from Cloud Tasks; here a step multiplies by e^2.5).
 *    The e^(2.5 k) values are constants, so no libm result is involved.
 * Then, whatever the rule: at least min_backoff_ms, then at most
 * max_backoff_ms (when both are set and conflict, the max wins), then at most
 * one day. Jitter applies to the default rule only.
 * ------------------------------------------------------------------------- */

enum qr_retry_rule {
    QR_RETRY_RULE_HEADER = 0,
    QR_RETRY_RULE_EXPRESSION,
    QR_RETRY_RULE_DEFAULT,
};

struct qr_retry_backoff {
    bool header_delay_set; /* from struct qr_retry_response */
    uint64_t header_delay_ms;
    const char *expr; /* retry-delay source; NULL or "" = none;
                       * borrowed */
    /* Upstash-Retried of the attempt that just failed (attempts made before
     * it): 0 when computing the delay before the first retry. */
    uint32_t retried;
    double jitter;           /* in [-0.1, 0.1], clamped; NaN counts as 0 */
    uint64_t min_backoff_ms; /* 0 = unset */
    uint64_t max_backoff_ms; /* 0 = unset */
    uint32_t max_doublings;  /* 0 = unset */
};

/* Returns the delay in ms before the next attempt (0..QR_RETRY_DAY_MS) and,
 * when rule is not NULL, which rule produced it. */
uint64_t qr_retry_next_delay_ms(const struct qr_retry_backoff *b,
                                enum qr_retry_rule *rule);

/* The default rule alone, before clamps: ms for retry n (1-based). */
uint64_t qr_retry_default_delay_ms(uint64_t n,
                                   double jitter,
                                   uint32_t max_doublings);

#endif /* QR_RETRY_H */
