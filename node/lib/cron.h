/* Cron expressions of schedules (QStash's Upstash-Cron): five fields, minute
 * hour day-of-month month day-of-week, evaluated in UTC, or in the IANA zone
 * of an optional `CRON_TZ=<zone> ` prefix. Pure: parsing and evaluation read
 * no clock and leave no global state changed.
 *
 * Syntax per field: `*`, a value, a range `a-b`, a step `*\/n`, `a-b/n` or
 * `a/n` (a up to the field's maximum), and comma lists of those. Months take
 * JAN..DEC, days of week SUN..SAT (0 and 7 are Sunday), case-insensitive;
 * `?` is `*` in the two day fields. Blanks around the expression and between
 * fields are ignored.
 *
 * Day rule (Vixie cron's): when both day-of-month and day-of-week are
 * restricted (neither field starts with `*` or `?`), a day matches if either
 * matches; otherwise both must.
 *
 * Time zones: a slot is every minute of absolute time whose wall clock in the
 * zone matches the fields. So on a spring-forward day a wall time that does
 * not exist (02:30 in America/New_York) does not fire, and on a fall-back
 * day a wall time that happens twice (01:30) fires twice. The zone's rules
 * come from the system tz database (package tzdata): evaluation switches
 * the process's TZ around the computation and restores it, which is safe
 * because qraftd evaluates crons only on its loop thread, and no other
 * thread of the node reads the local time zone. */
#ifndef QR_CRON_H
#define QR_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QR_CRON_TZ_BYTES 64

struct qr_cron {
    uint64_t minutes;  /* bit m: minute m, 0..59 */
    uint32_t hours;    /* bit h: 0..23 */
    uint32_t days;     /* bit d: day of month 1..31 */
    uint32_t months;   /* bit m: 1..12 */
    uint32_t weekdays; /* bit d: 0..6, Sunday = 0 */
    bool days_star;    /* day-of-month starts with * or ? */
    bool weekdays_star;
    char tz[QR_CRON_TZ_BYTES]; /* "" = UTC */
};

/* Parses expr into *out. Returns 0, or QR_EBADREQ with a one-line reason in
 * err (err_len bytes) that names the field and what is wrong with it. */
int qr_cron_parse(const char *expr,
                  struct qr_cron *out,
                  char *err,
                  size_t err_len);

/* The first slot strictly after after_ms (unix ms), in *next_ms (a whole
 * minute). QR_ENOTFOUND when there is none within the next eight years (the
 * fields never meet, e.g. `0 0 30 2 *`). */
int qr_cron_next(const struct qr_cron *c, uint64_t after_ms, uint64_t *next_ms);

/* The latest slot s with from_ms <= s <= now_ms, in *slot_ms; QR_ENOTFOUND
 * when there is none. Cost grows with log(now_ms - from_ms), not with the
 * number of slots in between. */
int qr_cron_latest(const struct qr_cron *c,
                   uint64_t from_ms,
                   uint64_t now_ms,
                   uint64_t *slot_ms);

/* Copies expr without its leading and trailing blanks into out (out_len
 * bytes, truncating). Returns the trimmed length. */
size_t qr_cron_trim(const char *expr, char *out, size_t out_len);

#endif /* QR_CRON_H */
