/* Leveled logging to stderr, one line per event:
 * "2026-11-23T05:17:17.123Z INFO  cluster: became leader (term 3)".
 * The level is process-wide and set once at start-up. */
#ifndef QR_LOGGER_H
#define QR_LOGGER_H

enum qr_log_level {
    QR_LOG_DEBUG = 0,
    QR_LOG_INFO = 1,
    QR_LOG_WARN = 2,
    QR_LOG_ERROR = 3,
};

void qr_log_set_level(enum qr_log_level level);
enum qr_log_level qr_log_get_level(void);

/* Parses "debug", "info", "warn", "error". Returns 0 or QR_EBADREQ. */
int qr_log_parse_level(const char *s, enum qr_log_level *out);

void qr_log(enum qr_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define QR_DEBUG(module, ...) qr_log(QR_LOG_DEBUG, module, __VA_ARGS__)
#define QR_INFO(module, ...) qr_log(QR_LOG_INFO, module, __VA_ARGS__)
#define QR_WARN(module, ...) qr_log(QR_LOG_WARN, module, __VA_ARGS__)
#define QR_ERROR(module, ...) qr_log(QR_LOG_ERROR, module, __VA_ARGS__)

#endif /* QR_LOGGER_H */
