/* Cron parsing and evaluation; see cron.h for the syntax and the rules.
 *
 * Evaluation walks forward from the minute after the given time, looking at
 * the wall clock in the schedule's zone: a month that does not match skips
 * to the first day of the next month, a day to the next day, an hour to the
 * next hour, a minute to the next minute. Day starts are found with
 * mktime/timegm (local days are 23 to 25 hours long around DST changes);
 * hours and minutes are plain arithmetic on absolute time, which follows
 * the wall clock across a change. Every step moves forward, so the walk
 * ends: at a slot, or at the eight-year horizon. */
#include "lib/cron.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "lib/err.h"

#define MINUTE_S 60
#define HORIZON_S (8ll * 366 * 86400)
#define MAX_TZ_PATH 512

enum field { F_MINUTE, F_HOUR, F_DOM, F_MONTH, F_DOW, N_FIELDS };

static const struct {
    const char *name;
    int min;
    int max;
} fields[N_FIELDS] = {
    {"minute", 0, 59}, {"hour", 0, 23},       {"day-of-month", 1, 31},
    {"month", 1, 12},  {"day-of-week", 0, 7},
};

static const char *const month_names[] = {"JAN", "FEB", "MAR", "APR",
                                          "MAY", "JUN", "JUL", "AUG",
                                          "SEP", "OCT", "NOV", "DEC"};
static const char *const day_names[] = {"SUN", "MON", "TUE", "WED",
                                        "THU", "FRI", "SAT"};

static int fail(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
    return QR_EBADREQ;
}

static bool is_blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

size_t qr_cron_trim(const char *expr, char *out, size_t out_len)
{
    while (is_blank(*expr)) {
        expr++;
    }
    size_t len = strlen(expr);
    while (len > 0 && is_blank(expr[len - 1])) {
        len--;
    }
    if (out_len > 0) {
        size_t n = len < out_len - 1 ? len : out_len - 1;
        memcpy(out, expr, n);
        out[n] = '\0';
    }
    return len;
}

/* One value of field f: a number, or a month/day name. Returns 0 or -1. */
static int parse_value(enum field f, const char *s, size_t len, int *out)
{
    if (len == 0) {
        return -1;
    }
    if (isdigit((unsigned char)s[0])) {
        int v = 0;
        for (size_t i = 0; i < len; i++) {
            if (!isdigit((unsigned char)s[i]) || v > 1000) {
                return -1;
            }
            v = v * 10 + (s[i] - '0');
        }
        *out = v;
        return 0;
    }
    const char *const *names = f == F_MONTH ? month_names
                               : f == F_DOW ? day_names
                                            : NULL;
    size_t n_names = f == F_MONTH ? 12 : 7;
    for (size_t i = 0; names != NULL && i < n_names; i++) {
        if (len == 3 && strncasecmp(s, names[i], 3) == 0) {
            *out = (int)i + (f == F_MONTH ? 1 : 0);
            return 0;
        }
    }
    return -1;
}

/* One comma-separated item of field f ("*", "a", "a-b", each optionally
 * "/step") into *bits. */
static int parse_item(enum field f,
                      const char *s,
                      size_t len,
                      uint64_t *bits,
                      char *err,
                      size_t err_len)
{
    const char *name = fields[f].name;
    int min = fields[f].min;
    int max = fields[f].max;
    const char *slash = memchr(s, '/', len);
    size_t base_len = slash != NULL ? (size_t)(slash - s) : len;
    int lo;
    int hi;
    int step = 1;

    if (slash != NULL) {
        if (parse_value(F_MINUTE, slash + 1, len - base_len - 1, &step) != 0 ||
            step == 0) {
            return fail(err, err_len,
                        "%s field: step '%.*s' is not a positive number", name,
                        (int)(len - base_len - 1), slash + 1);
        }
    }
    bool star = base_len == 1 &&
                (s[0] == '*' || (s[0] == '?' && (f == F_DOM || f == F_DOW)));
    if (star) {
        lo = min;
        hi = f == F_DOW ? 6 : max;
    } else {
        const char *dash = memchr(s, '-', base_len);
        size_t lo_len = dash != NULL ? (size_t)(dash - s) : base_len;
        if (parse_value(f, s, lo_len, &lo) != 0) {
            return fail(err, err_len, "%s field: '%.*s' is not a %s value",
                        name, (int)lo_len, s,
                        f == F_MONTH ? "number or JAN..DEC"
                        : f == F_DOW ? "number or SUN..SAT"
                                     : "number");
        }
        if (dash != NULL) {
            size_t hi_len = base_len - lo_len - 1;
            if (parse_value(f, dash + 1, hi_len, &hi) != 0) {
                return fail(err, err_len, "%s field: '%.*s' is not a value",
                            name, (int)hi_len, dash + 1);
            }
        } else {
            hi = slash != NULL ? max : lo; /* "a/n": a up to the maximum */
        }
        if (lo < min || lo > max || hi < min || hi > max) {
            return fail(err, err_len, "%s field: %d is out of range %d-%d",
                        name, lo < min || lo > max ? lo : hi, min, max);
        }
        if (lo > hi) {
            return fail(err, err_len, "%s field: range %d-%d is backwards",
                        name, lo, hi);
        }
    }
    for (int v = lo; v <= hi; v += step) {
        *bits |= 1ull << (f == F_DOW && v == 7 ? 0 : v);
    }
    return 0;
}

static int parse_field(enum field f,
                       const char *s,
                       size_t len,
                       uint64_t *bits,
                       char *err,
                       size_t err_len)
{
    size_t pos = 0;
    *bits = 0;
    while (pos <= len) {
        const char *comma = memchr(s + pos, ',', len - pos);
        size_t item_len = comma != NULL ? (size_t)(comma - s - pos) : len - pos;
        if (item_len == 0) {
            return fail(err, err_len, "%s field '%.*s' has an empty list item",
                        fields[f].name, (int)len, s);
        }
        int rv = parse_item(f, s + pos, item_len, bits, err, err_len);
        if (rv != 0) {
            return rv;
        }
        pos += item_len + 1;
    }
    return 0;
}

/* The zone must be a tz database file: glibc silently takes UTC for an
 * unknown TZ, which would fire at the wrong hours. */
static int check_zone(const char *zone, char *err, size_t err_len)
{
    size_t len = strlen(zone);
    if (len == 0 || len >= QR_CRON_TZ_BYTES || zone[0] == '/' ||
        strstr(zone, "..") != NULL) {
        return fail(err, err_len, "CRON_TZ '%.64s' is not a time zone name",
                    zone);
    }
    for (const char *p = zone; *p; p++) {
        if (!isalnum((unsigned char)*p) && strchr("/_+-", *p) == NULL) {
            return fail(err, err_len, "CRON_TZ '%.64s' is not a time zone name",
                        zone);
        }
    }
    const char *dir = getenv("TZDIR");
    char path[MAX_TZ_PATH];
    snprintf(path, sizeof path, "%s/%s",
             dir != NULL && dir[0] != '\0' ? dir : "/usr/share/zoneinfo", zone);
    char magic[4] = {0};
    FILE *f = fopen(path, "rb");
    bool ok = f != NULL && fread(magic, 1, 4, f) == 4 &&
              memcmp(magic, "TZif", 4) == 0;
    if (f != NULL) {
        fclose(f);
    }
    if (!ok) {
        return fail(err, err_len,
                    "CRON_TZ '%.64s' is not a known IANA time zone (e.g. "
                    "America/New_York)",
                    zone);
    }
    return 0;
}

int qr_cron_parse(const char *expr,
                  struct qr_cron *out,
                  char *err,
                  size_t err_len)
{
    const char *s = expr;
    const char *start[N_FIELDS];
    size_t len[N_FIELDS];
    size_t n = 0;
    int rv;

    memset(out, 0, sizeof *out);
    while (is_blank(*s)) {
        s++;
    }
    if (*s == '\0') {
        return fail(err, err_len, "cron expression is empty");
    }
    size_t prefix = strncmp(s, "CRON_TZ=", 8) == 0 ? 8
                    : strncmp(s, "TZ=", 3) == 0    ? 3
                                                   : 0;
    if (prefix > 0) {
        s += prefix;
        size_t zlen = 0;
        while (s[zlen] != '\0' && !is_blank(s[zlen])) {
            zlen++;
        }
        if (zlen == 0 || zlen >= QR_CRON_TZ_BYTES) {
            return fail(err, err_len,
                        "CRON_TZ= must be followed by a time zone name");
        }
        memcpy(out->tz, s, zlen);
        out->tz[zlen] = '\0';
        rv = check_zone(out->tz, err, err_len);
        if (rv != 0) {
            return rv;
        }
        s += zlen;
    }
    for (;;) {
        while (is_blank(*s)) {
            s++;
        }
        if (*s == '\0') {
            break;
        }
        size_t l = 0;
        while (s[l] != '\0' && !is_blank(s[l])) {
            l++;
        }
        if (n < N_FIELDS) {
            start[n] = s;
            len[n] = l;
        }
        n++;
        s += l;
    }
    if (n != N_FIELDS) {
        return fail(err, err_len,
                    "cron expression has %zu fields; want 5 (minute hour "
                    "day-of-month month day-of-week)",
                    n);
    }
    uint64_t bits[N_FIELDS];
    for (int f = 0; f < N_FIELDS; f++) {
        rv = parse_field((enum field)f, start[f], len[f], &bits[f], err,
                         err_len);
        if (rv != 0) {
            return rv;
        }
    }
    out->minutes = bits[F_MINUTE];
    out->hours = (uint32_t)bits[F_HOUR];
    out->days = (uint32_t)bits[F_DOM];
    out->months = (uint32_t)bits[F_MONTH];
    out->weekdays = (uint32_t)bits[F_DOW];
    out->days_star = start[F_DOM][0] == '*' || start[F_DOM][0] == '?';
    out->weekdays_star = start[F_DOW][0] == '*' || start[F_DOW][0] == '?';
    return 0;
}

/* The process's TZ while a zone is in use, to be put back. */
struct tz_saved {
    bool switched;
    bool had;
    char value[256];
};

static void tz_switch(const char *zone, struct tz_saved *saved)
{
    saved->switched = zone[0] != '\0';
    if (!saved->switched) {
        return;
    }
    const char *old = getenv("TZ");
    saved->had = old != NULL;
    snprintf(saved->value, sizeof saved->value, "%s", old != NULL ? old : "");
    setenv("TZ", zone, 1);
    tzset();
}

static void tz_restore(const struct tz_saved *saved)
{
    if (!saved->switched) {
        return;
    }
    if (saved->had) {
        setenv("TZ", saved->value, 1);
    } else {
        unsetenv("TZ");
    }
    tzset();
}

static void wall_clock(bool local, time_t t, struct tm *out)
{
    if (local) {
        localtime_r(&t, out);
    } else {
        gmtime_r(&t, out);
    }
}

/* The first minute of local day (year, mon, mday), normalized, and never
 * at or before t: where that midnight does not exist mktime may answer an
 * earlier time, and the walk must still move on. */
static time_t day_start(bool local,
                        const struct tm *now,
                        int mon,
                        int mday,
                        time_t t)
{
    struct tm tm = {0};
    tm.tm_year = now->tm_year;
    tm.tm_mon = mon;
    tm.tm_mday = mday;
    tm.tm_isdst = -1;
    time_t start = local ? mktime(&tm) : timegm(&tm);
    return start > t ? start : t + MINUTE_S;
}

static bool day_matches(const struct qr_cron *c, const struct tm *tm)
{
    bool dom = (c->days >> tm->tm_mday) & 1u;
    bool dow = (c->weekdays >> tm->tm_wday) & 1u;
    if (c->days_star || c->weekdays_star) {
        return dom && dow;
    }
    return dom || dow;
}

int qr_cron_next(const struct qr_cron *c, uint64_t after_ms, uint64_t *next_ms)
{
    bool local = c->tz[0] != '\0';
    struct tz_saved saved;
    time_t t = (time_t)(after_ms / 60000 + 1) * MINUTE_S;
    time_t horizon = t + HORIZON_S;
    int rv = QR_ENOTFOUND;

    tz_switch(c->tz, &saved);
    while (t <= horizon) {
        struct tm tm;
        wall_clock(local, t, &tm);
        if (!((c->months >> (tm.tm_mon + 1)) & 1u)) {
            t = day_start(local, &tm, tm.tm_mon + 1, 1, t);
        } else if (!day_matches(c, &tm)) {
            t = day_start(local, &tm, tm.tm_mon, tm.tm_mday + 1, t);
        } else if (!((c->hours >> tm.tm_hour) & 1u)) {
            t += (time_t)(60 - tm.tm_min) * MINUTE_S - tm.tm_sec;
        } else if (!((c->minutes >> tm.tm_min) & 1u)) {
            t += MINUTE_S - tm.tm_sec;
        } else {
            *next_ms = (uint64_t)t * 1000;
            rv = 0;
            break;
        }
    }
    tz_restore(&saved);
    return rv;
}

int qr_cron_latest(const struct qr_cron *c,
                   uint64_t from_ms,
                   uint64_t now_ms,
                   uint64_t *slot_ms)
{
    /* Look back over growing windows; the first one holding a slot is then
     * walked forward to its last slot. */
    static const uint64_t windows_ms[] = {
        60000ull,         3600000ull,        86400000ull,
        32 * 86400000ull, 366 * 86400000ull, UINT64_MAX,
    };
    if (from_ms > now_ms) {
        return QR_ENOTFOUND;
    }
    for (size_t i = 0; i < sizeof windows_ms / sizeof windows_ms[0]; i++) {
        uint64_t start =
            now_ms - from_ms > windows_ms[i] ? now_ms - windows_ms[i] : from_ms;
        uint64_t s;
        /* The first slot at or after start. */
        int rv = qr_cron_next(c, start > 0 ? start - 1 : 0, &s);
        if (rv == QR_ENOTFOUND || (rv == 0 && s > now_ms)) {
            if (start == from_ms) {
                return QR_ENOTFOUND;
            }
            continue;
        }
        if (rv != 0) {
            return rv;
        }
        for (;;) {
            uint64_t next;
            rv = qr_cron_next(c, s, &next);
            if (rv != 0 || next > now_ms) {
                break;
            }
            s = next;
        }
        *slot_ms = s;
        return 0;
    }
    return QR_ENOTFOUND;
}
