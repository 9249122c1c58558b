/* libFuzzer target: schedule cron expressions (node/cron.c): the parser,
 * with its CRON_TZ= prefix, and the slot search after a parse succeeds.
 *
 * The input is the expression (a NUL ends it early, as a C string does).
 * Invariants checked: the error is a terminated string; qr_cron_next gives
 * a whole minute strictly after its argument, and that slot is one
 * qr_cron_latest finds in [slot, slot]; qr_cron_latest stays in its window;
 * the process's TZ is what it was before. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "lib/cron.h"
#include "lib/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint64_t afters[] = {
    0, 1767225600000ull, /* 2026-01-01T00:00:00Z */
    1774746000000ull,    /* 2026-03-29T01:00:00Z: a spring-forward day */
    1792976400000ull,    /* 2026-10-25T01:00:00Z: a fall-back day */
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *expr = fuzz_strndup(data, size);
    struct qr_cron c;
    char err[256];
    const char *tz_before = getenv("TZ");
    char *tz_copy = tz_before != NULL ? strdup(tz_before) : NULL;

    char trimmed[512];
    size_t n = qr_cron_trim(expr, trimmed, sizeof trimmed);
    FUZZ_CHECK(n <= strlen(expr), "trim grew the expression");

    int rv = qr_cron_parse(expr, &c, err, sizeof err);
    if (rv != 0) {
        FUZZ_CHECK(rv == QR_EBADREQ, "parse failed with another code");
        FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL,
                   "error not terminated");
        goto out;
    }
    FUZZ_CHECK(memchr(c.tz, '\0', sizeof c.tz) != NULL, "tz not terminated");
    for (size_t i = 0; i < sizeof afters / sizeof afters[0]; i++) {
        uint64_t next = 0;
        rv = qr_cron_next(&c, afters[i], &next);
        if (rv != 0) {
            FUZZ_CHECK(rv == QR_ENOTFOUND, "next failed with another code");
            continue;
        }
        FUZZ_CHECK(next > afters[i], "next slot not after its argument");
        FUZZ_CHECK(next % 60000 == 0, "next slot not a whole minute");
        uint64_t slot = 0;
        FUZZ_CHECK(qr_cron_latest(&c, next, next, &slot) == 0 && slot == next,
                   "latest does not find the slot next found");
        uint64_t now = next + 40ull * 24 * 3600 * 1000;
        if (qr_cron_latest(&c, afters[i], now, &slot) == 0) {
            FUZZ_CHECK(slot >= afters[i] && slot <= now,
                       "latest outside its window");
            FUZZ_CHECK(slot >= next, "latest before the first slot");
        }
    }
out:;
    const char *tz_after = getenv("TZ");
    FUZZ_CHECK((tz_copy == NULL && tz_after == NULL) ||
                   (tz_copy != NULL && tz_after != NULL &&
                    strcmp(tz_copy, tz_after) == 0),
               "TZ not restored");
    free(tz_copy);
    free(expr);
    return 0;
}
