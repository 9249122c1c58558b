/* libFuzzer target: the Upstash-Retry-Delay expression compiler and
 * evaluator (node/lib/expr.c), and the response-header delay parsers of the
 * retry policy (node/deliver/retry.c: Retry-After and friends, fed by
 * whatever a destination answers).
 *
 * The input is the expression source (any bytes; a NUL ends it early, as a
 * C string does). Invariants checked: compile, parse and check agree; a
 * compiled program has at most QR_EXPR_MAX_NODES instructions; a
 * failed compile leaves a program that evaluates to NaN; every delay is at
 * most one day; the header parsers stay inside their input. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "deliver/retry.h"
#include "fuzz_util.h"
#include "lib/expr.h"

#define NOW_MS 1767225600000ull

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_expr(const char *src, size_t max_src_bytes)
{
    static struct qr_expr e;
    char errmsg[QR_ERRMSG_BYTES];
    int rv = qr_expr_compile(&e, src, max_src_bytes, errmsg);
    char errmsg2[QR_ERRMSG_BYTES];
    FUZZ_CHECK(qr_expr_check(src, max_src_bytes, errmsg2) == rv,
               "check and compile disagree");
    struct qr_expr *heap = NULL;
    int rv2 = qr_expr_parse(src, max_src_bytes, &heap, errmsg2);
    FUZZ_CHECK(rv2 == rv || rv2 == -ENOMEM, "parse and compile disagree");
    qr_expr_free(heap);
    if (rv != 0) {
        FUZZ_CHECK(rv == QR_EBADREQ, "compile failed with another code");
        FUZZ_CHECK(memchr(errmsg, '\0', sizeof errmsg) != NULL,
                   "errmsg not terminated");
        FUZZ_CHECK(isnan(qr_expr_eval(&e, 1)),
                   "a failed compile does not evaluate to NaN");
        return;
    }
    FUZZ_CHECK(e.n_insns <= QR_EXPR_MAX_NODES, "too many insns");
    static const uint32_t retried[] = {0, 1, 2, 3, 10, 100, 4294967295u};
    for (size_t i = 0; i < sizeof retried / sizeof retried[0]; i++) {
        (void)qr_expr_eval(&e, retried[i]);
        FUZZ_CHECK(qr_retry_expr_delay_ms(&e, retried[i]) <= QR_RETRY_DAY_MS,
                   "delay above one day");
    }
    struct qr_retry_backoff b = {.expr = src, .retried = 5, .jitter = 0.1};
    FUZZ_CHECK(qr_retry_next_delay_ms(&b, NULL) <= QR_RETRY_DAY_MS,
               "next delay above one day");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *src = fuzz_strndup(data, size);
    check_expr(src, 0);
    if (size > QR_EXPR_DEFAULT_MAX_BYTES) {
        check_expr(src, size);
    }

    /* Header values: exactly size bytes, no terminator to lean on. */
    uint8_t *exact = malloc(size > 0 ? size : 1);
    FUZZ_CHECK(exact != NULL, "out of memory");
    memcpy(exact, data, size);
    uint64_t delay = 0;
    if (qr_retry_parse_delay((const char *)exact, size, NOW_MS, &delay) == 0) {
        FUZZ_CHECK(delay <= QR_RETRY_DAY_MS, "header delay above one day");
    }
    struct qr_retry_response r;
    memset(&r, 0, sizeof r);
    qr_retry_note_header(&r, (const char *)exact, size, NOW_MS);
    FUZZ_CHECK(!r.delay_set || r.delay_ms <= QR_RETRY_DAY_MS,
               "noted delay above one day");
    free(exact);
    free(src);
    return 0;
}
