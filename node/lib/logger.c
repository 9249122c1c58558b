#include "lib/logger.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lib/err.h"

static enum qr_log_level log_level = QR_LOG_INFO;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void qr_log_set_level(enum qr_log_level level)
{
    log_level = level;
}

enum qr_log_level qr_log_get_level(void)
{
    return log_level;
}

int qr_log_parse_level(const char *s, enum qr_log_level *out)
{
    static const char *const words[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, words[i]) == 0) {
            *out = (enum qr_log_level)i;
            return 0;
        }
    }
    return QR_EBADREQ;
}

void qr_log(enum qr_log_level level, const char *module, const char *fmt, ...)
{
    if (level < log_level) {
        return;
    }
    struct timespec ts;
    struct tm tm;
    char when[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);

    /* One fprintf per line keeps lines whole when several threads log. */
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s.%03ldZ %-5s %s: %s\n", when, ts.tv_nsec / 1000000,
            level_names[level], module, line);
}
