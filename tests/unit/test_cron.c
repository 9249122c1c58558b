/* Unit tests of node/cron.c: every piece of the syntax, the day rule, month
 * ends and leap years, a CRON_TZ zone across both DST changes, the look-back
 * for missed slots, and refusals that say what is wrong. Times are written
 * as UTC "YYYY-MM-DD HH:MM" strings for readability. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/cron.h"
#include "lib/err.h"

/* "YYYY-MM-DD HH:MM[:SS]" in UTC -> unix ms. */
static uint64_t ms(const char *utc)
{
    struct tm tm = {0};
    int sec = 0;
    int n = sscanf(utc, "%d-%d-%d %d:%d:%d", &tm.tm_year, &tm.tm_mon,
                   &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &sec);
    assert_true(n >= 5);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    tm.tm_sec = sec;
    return (uint64_t)timegm(&tm) * 1000;
}

static void parse_ok(const char *expr, struct qr_cron *c)
{
    char err[256] = "";
    int rv = qr_cron_parse(expr, c, err, sizeof err);
    if (rv != 0) {
        fail_msg("'%s' refused: %s", expr, err);
    }
}

/* Asserts the slots after `after`, in order. */
static void expect_slots(const char *expr, const char *after, ...)
{
    struct qr_cron c;
    va_list ap;
    uint64_t t = ms(after);
    parse_ok(expr, &c);
    va_start(ap, after);
    for (const char *want = va_arg(ap, const char *); want != NULL;
         want = va_arg(ap, const char *)) {
        uint64_t next = 0;
        int rv = qr_cron_next(&c, t, &next);
        if (rv != 0 || next != ms(want)) {
            time_t got = (time_t)(next / 1000);
            char buf[32] = "none";
            if (rv == 0) {
                strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", gmtime(&got));
            }
            fail_msg("'%s' after %s: want %s, got %s", expr, after, want, buf);
        }
        t = next;
    }
    va_end(ap);
}

static void expect_refused(const char *expr, const char *fragment)
{
    struct qr_cron c;
    char err[256] = "";
    int rv = qr_cron_parse(expr, &c, err, sizeof err);
    if (rv != QR_EBADREQ) {
        fail_msg("'%s' was accepted", expr);
    }
    if (strstr(err, fragment) == NULL) {
        fail_msg("'%s': error '%s' does not mention '%s'", expr, err, fragment);
    }
}

static void test_every_minute_is_strictly_after(void **state)
{
    (void)state;
    expect_slots("* * * * *", "2024-01-01 00:00:30", "2024-01-01 00:01",
                 "2024-01-01 00:02", NULL);
    /* Exactly on a slot: the next one. */
    expect_slots("* * * * *", "2024-01-01 00:01", "2024-01-01 00:02", NULL);
}

static void test_trimming_and_blanks(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(qr_cron_trim("*/10 * * * * ", out, sizeof out), 12);
    assert_string_equal(out, "*/10 * * * *");
    assert_int_equal(qr_cron_trim("\t 0 4 * * *\n", out, sizeof out), 9);
    assert_string_equal(out, "0 4 * * *");
    expect_slots("*/10 * * * * ", "2024-01-01 00:05", "2024-01-01 00:10",
                 "2024-01-01 00:20", NULL);
    expect_slots("  0   9\t* * *  ", "2024-01-01 10:00", "2024-01-02 09:00",
                 NULL);
}

static void test_lists_ranges_steps(void **state)
{
    (void)state;
    expect_slots("5,10-12 * * * *", "2024-01-01 00:00", "2024-01-01 00:05",
                 "2024-01-01 00:10", "2024-01-01 00:11", "2024-01-01 00:12",
                 "2024-01-01 01:05", NULL);
    expect_slots("10-30/10 * * * *", "2024-01-01 00:00", "2024-01-01 00:10",
                 "2024-01-01 00:20", "2024-01-01 00:30", "2024-01-01 01:10",
                 NULL);
    /* a/n: from a up to the field's maximum. */
    expect_slots("50/5 * * * *", "2024-01-01 00:00", "2024-01-01 00:50",
                 "2024-01-01 00:55", "2024-01-01 01:50", NULL);
    expect_slots("0 */6 * * *", "2024-01-01 01:00", "2024-01-01 06:00",
                 "2024-01-01 12:00", "2024-01-01 18:00", "2024-01-02 00:00",
                 NULL);
    expect_slots("15 9-10 * * *", "2024-01-01 00:00", "2024-01-01 09:15",
                 "2024-01-01 10:15", "2024-01-02 09:15", NULL);
}

static void test_names_and_sunday(void **state)
{
    (void)state;
    /* 2024-01-01 is a Monday. */
    expect_slots("0 12 * * MON-FRI", "2024-01-05 13:00", "2024-01-08 12:00",
                 NULL);
    expect_slots("0 0 1 jan,Jul *", "2024-01-02 00:00", "2024-07-01 00:00",
                 "2025-01-01 00:00", NULL);
    /* 0 and 7 are both Sunday. */
    expect_slots("0 0 * * 7", "2024-01-01 00:00", "2024-01-07 00:00", NULL);
    expect_slots("0 0 * * 0", "2024-01-01 00:00", "2024-01-07 00:00", NULL);
    expect_slots("0 0 * * SUN", "2024-01-01 00:00", "2024-01-07 00:00", NULL);
}

static void test_day_rule(void **state)
{
    (void)state;
    /* Both restricted: the 13th OR a Friday. Friday 2024-09-06, 13th
     * Friday 2024-09-13, then Friday the 20th. */
    expect_slots("0 0 13 * FRI", "2024-09-01 00:00", "2024-09-06 00:00",
                 "2024-09-13 00:00", "2024-09-20 00:00", "2024-09-27 00:00",
                 "2024-10-04 00:00", "2024-10-11 00:00", "2024-10-13 00:00",
                 NULL);
    /* Day-of-week only: every Friday (day-of-month is *). */
    expect_slots("0 0 * * FRI", "2024-09-13 00:00", "2024-09-20 00:00", NULL);
    /* A star with a step still counts as unrestricted: both must match. */
    expect_slots("0 0 */2 * MON", "2024-01-01 00:00", "2024-01-15 00:00",
                 "2024-01-29 00:00", NULL);
    /* ? is * in the day fields. */
    expect_slots("0 0 ? * MON", "2024-01-01 00:00", "2024-01-08 00:00", NULL);
}

static void test_month_ends_and_leap_years(void **state)
{
    (void)state;
    expect_slots("0 0 31 * *", "2024-01-31 00:00", "2024-03-31 00:00",
                 "2024-05-31 00:00", "2024-07-31 00:00", "2024-08-31 00:00",
                 NULL);
    expect_slots("0 0 30 * *", "2024-01-30 00:00", "2024-03-30 00:00", NULL);
    expect_slots("0 0 29 2 *", "2024-03-01 00:00", "2028-02-29 00:00",
                 "2032-02-29 00:00", NULL);
    expect_slots("59 23 31 12 *", "2024-06-01 00:00", "2024-12-31 23:59",
                 "2025-12-31 23:59", NULL);
    expect_slots("0 0 1 * *", "2023-12-31 23:59", "2024-01-01 00:00",
                 "2024-02-01 00:00", NULL);

    /* Fields that never meet. */
    struct qr_cron c;
    uint64_t next;
    parse_ok("0 0 30 2 *", &c);
    assert_int_equal(qr_cron_next(&c, ms("2024-01-01 00:00"), &next),
                     QR_ENOTFOUND);
    parse_ok("0 0 31 4,6,9,11 *", &c);
    assert_int_equal(qr_cron_next(&c, ms("2024-01-01 00:00"), &next),
                     QR_ENOTFOUND);
}

static void test_time_zone(void **state)
{
    (void)state;
    /* 04:00 in New York is 09:00 UTC in winter, 08:00 UTC in summer. */
    expect_slots("CRON_TZ=America/New_York 0 4 * * *", "2024-01-10 12:00",
                 "2024-01-11 09:00", NULL);
    expect_slots("CRON_TZ=America/New_York 0 4 * * *", "2024-07-10 12:00",
                 "2024-07-11 08:00", NULL);
    /* Spring forward (2024-03-10): 02:30 does not exist that day. */
    expect_slots("CRON_TZ=America/New_York 30 2 * * *", "2024-03-09 07:31",
                 "2024-03-11 06:30", NULL);
    /* ... while 03:30 does (07:30 UTC, the first hour of EDT). */
    expect_slots("CRON_TZ=America/New_York 30 3 * * *", "2024-03-10 00:00",
                 "2024-03-10 07:30", NULL);
    /* Fall back (2024-11-03): 01:30 happens twice, once in EDT, once in
     * EST; each is a slot. */
    expect_slots("CRON_TZ=America/New_York 30 1 * * *", "2024-11-03 00:00",
                 "2024-11-03 05:30", "2024-11-03 06:30", "2024-11-04 06:30",
                 NULL);
    /* Midnight across the short day. */
    expect_slots("CRON_TZ=America/New_York 0 0 * * *", "2024-03-09 12:00",
                 "2024-03-10 05:00", "2024-03-11 04:00", NULL);
    /* A zone with a 45-minute offset: Kathmandu is UTC+05:45. */
    expect_slots("CRON_TZ=Asia/Kathmandu 0 * * * *", "2024-01-01 00:00",
                 "2024-01-01 00:15", "2024-01-01 01:15", NULL);
    /* TZ= is accepted too (robfig/cron's spelling). */
    expect_slots("TZ=Europe/Berlin 0 12 * * *", "2024-01-01 00:00",
                 "2024-01-01 11:00", NULL);
}

static void test_time_zone_restores_tz(void **state)
{
    (void)state;
    struct qr_cron c;
    uint64_t next;
    parse_ok("CRON_TZ=Asia/Tokyo 0 9 * * *", &c);

    unsetenv("TZ");
    tzset();
    assert_int_equal(qr_cron_next(&c, ms("2024-01-01 00:00"), &next), 0);
    assert_true(next == ms("2024-01-01 00:00") + 24ull * 3600 * 1000);
    assert_null(getenv("TZ"));

    setenv("TZ", "Europe/Paris", 1);
    tzset();
    assert_int_equal(qr_cron_next(&c, ms("2024-01-01 00:00"), &next), 0);
    assert_string_equal(getenv("TZ"), "Europe/Paris");
    time_t t = 0;
    struct tm tm;
    localtime_r(&t, &tm);
    assert_int_equal(tm.tm_hour, 1); /* Paris, not Tokyo */
    unsetenv("TZ");
    tzset();
}

static void test_latest_missed_slot(void **state)
{
    (void)state;
    struct qr_cron c;
    uint64_t slot;
    parse_ok("* * * * *", &c);
    assert_int_equal(qr_cron_latest(&c, ms("2024-01-01 00:00"),
                                    ms("2024-01-01 05:30:30"), &slot),
                     0);
    assert_true(slot == ms("2024-01-01 05:30"));
    /* from and now inclusive. */
    assert_int_equal(qr_cron_latest(&c, ms("2024-01-01 05:30"),
                                    ms("2024-01-01 05:30"), &slot),
                     0);
    assert_true(slot == ms("2024-01-01 05:30"));

    parse_ok("0 0 * * *", &c);
    assert_int_equal(qr_cron_latest(&c, ms("2023-01-01 00:00"),
                                    ms("2024-03-05 12:00"), &slot),
                     0);
    assert_true(slot == ms("2024-03-05 00:00"));

    parse_ok("0 0 1 1 *", &c);
    assert_int_equal(qr_cron_latest(&c, ms("2024-06-01 00:00"),
                                    ms("2024-12-31 00:00"), &slot),
                     QR_ENOTFOUND);
    assert_int_equal(qr_cron_latest(&c, ms("2020-01-01 00:00"),
                                    ms("2024-12-31 00:00"), &slot),
                     0);
    assert_true(slot == ms("2024-01-01 00:00"));
    assert_int_equal(qr_cron_latest(&c, ms("2024-06-02 00:00"),
                                    ms("2024-06-01 00:00"), &slot),
                     QR_ENOTFOUND);
}

static void test_invalid(void **state)
{
    (void)state;
    expect_refused("", "empty");
    expect_refused("   ", "empty");
    expect_refused("* * * *", "has 4 fields; want 5");
    expect_refused("* * * * * *", "has 6 fields");
    expect_refused("60 * * * *", "minute field: 60 is out of range 0-59");
    expect_refused("* 24 * * *", "hour field: 24 is out of range 0-23");
    expect_refused("* * 0 * *", "day-of-month field: 0 is out of range");
    expect_refused("* * 32 * *", "day-of-month field: 32");
    expect_refused("* * * 13 *", "month field: 13 is out of range 1-12");
    expect_refused("* * * * 8", "day-of-week field: 8 is out of range 0-7");
    expect_refused("*/0 * * * *", "minute field: step '0'");
    expect_refused("*/x * * * *", "step 'x'");
    expect_refused("5-1 * * * *", "range 5-1 is backwards");
    expect_refused("a * * * *", "minute field: 'a' is not a number");
    expect_refused("1,,2 * * * *", "empty list item");
    expect_refused("1, * * * *", "empty list item");
    expect_refused("* * * FOO *", "month field: 'FOO'");
    expect_refused("* * * * MONDAY", "day-of-week field: 'MONDAY'");
    expect_refused("? * * * *", "minute field: '?'");
    expect_refused("CRON_TZ=Nowhere/City * * * * *", "not a known IANA");
    expect_refused("CRON_TZ=../../etc/passwd * * * * *",
                   "not a time zone name");
    expect_refused("CRON_TZ= * * * * *", "must be followed by a time zone");
    expect_refused("CRON_TZ=UTC", "has 0 fields");
    expect_refused("@daily", "has 1 fields");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_minute_is_strictly_after),
        cmocka_unit_test(test_trimming_and_blanks),
        cmocka_unit_test(test_lists_ranges_steps),
        cmocka_unit_test(test_names_and_sunday),
        cmocka_unit_test(test_day_rule),
        cmocka_unit_test(test_month_ends_and_leap_years),
        cmocka_unit_test(test_time_zone),
        cmocka_unit_test(test_time_zone_restores_tz),
        cmocka_unit_test(test_latest_missed_slot),
        cmocka_unit_test(test_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
