/* Leveled logging to stderr, one line per event, in one of two formats:
 * text "2026-11-23T05:17:17.123Z INFO  cluster: became leader (term 3)", or
 * JSON, one object per line: {"time":"2026-11-23T05:17:17.123Z",
 * "level":"info","module":"cluster","node":1,"msg":"became leader"}.
 * A line may carry what it concerns (a message id, a workflow run id, a
 * raft term: struct qr_log_fields): JSON keys message_id, run_id and term,
 * and "msg=ID run=ID term=N" before the text of a text line. Every JSON
 * line is valid JSON whatever the text holds (control characters and
 * quotes escaped, invalid UTF-8 replaced by U+FFFD). The level, format and
 * node id are process-wide and set once at start-up. */
#ifndef QR_LOGGER_H
#define QR_LOGGER_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

enum qr_log_level {
    QR_LOG_DEBUG = 0,
    QR_LOG_INFO = 1,
    QR_LOG_WARN = 2,
    QR_LOG_ERROR = 3,
};

enum qr_log_format {
    QR_LOG_TEXT = 0,
    QR_LOG_JSON = 1,
};

/* What a line concerns beside its text; NULL or "" (0 for term): absent.
 * The strings are borrowed for the call. */
struct qr_log_fields {
    const char *message_id;
    const char *run_id;
    uint64_t term;
};

/* The longest line qr_log_format_line writes, newline included. */
#define QR_LOG_LINE_BYTES 4096

void qr_log_set_level(enum qr_log_level level);
enum qr_log_level qr_log_get_level(void);
void qr_log_set_format(enum qr_log_format format);
/* The node id every JSON line carries as "node"; 0 (the default): none. */
void qr_log_set_node(uint64_t node_id);

/* Parses "debug", "info", "warn", "error". Returns 0 or QR_EBADREQ. */
int qr_log_parse_level(const char *s, enum qr_log_level *out);
/* Parses "text", "json". Returns 0 or QR_EBADREQ. */
int qr_log_parse_format(const char *s, enum qr_log_format *out);

/* Logs one line at level (nothing below the level set) for module, with
 * what the line concerns (fields borrowed; NULL: nothing). The QR_DEBUG
 * ... QR_ERROR_MSG macros below are the usual way in. */
void qr_log_with(enum qr_log_level level,
                 const char *module,
                 const struct qr_log_fields *fields,
                 const char *fmt,
                 ...) __attribute__((format(printf, 4, 5)));

/* What one log line says (qr_log_format_line); pointers borrowed. */
struct qr_log_line {
    enum qr_log_format format;
    const struct timespec *when;
    uint64_t node_id; /* 0: none */
    enum qr_log_level level;
    const char *module;
    const struct qr_log_fields *fields; /* NULL: none */
    const char *text;
};

/* Writes e as one whole line (newline included, NUL-terminated) into
 * out, which holds QR_LOG_LINE_BYTES, and returns its length. A text too
 * long for the line is cut at a character boundary. Pure: what qr_log_with
 * prints, for tests. */
size_t qr_log_format_line(char *out, const struct qr_log_line *e);

#define QR_DEBUG(module, ...) \
    qr_log_with(QR_LOG_DEBUG, module, NULL, __VA_ARGS__)
#define QR_INFO(module, ...) qr_log_with(QR_LOG_INFO, module, NULL, __VA_ARGS__)
#define QR_WARN(module, ...) qr_log_with(QR_LOG_WARN, module, NULL, __VA_ARGS__)
#define QR_ERROR(module, ...) \
    qr_log_with(QR_LOG_ERROR, module, NULL, __VA_ARGS__)

/* A line about one message (msg_id borrowed; the text need not repeat it). */
#define QR_LOG_MSG_(level, module, msg_id, ...)                        \
    qr_log_with(level, module,                                         \
                &(const struct qr_log_fields){.message_id = (msg_id)}, \
                __VA_ARGS__)
#define QR_DEBUG_MSG(module, msg_id, ...) \
    QR_LOG_MSG_(QR_LOG_DEBUG, module, msg_id, __VA_ARGS__)
#define QR_INFO_MSG(module, msg_id, ...) \
    QR_LOG_MSG_(QR_LOG_INFO, module, msg_id, __VA_ARGS__)
#define QR_WARN_MSG(module, msg_id, ...) \
    QR_LOG_MSG_(QR_LOG_WARN, module, msg_id, __VA_ARGS__)
#define QR_ERROR_MSG(module, msg_id, ...) \
    QR_LOG_MSG_(QR_LOG_ERROR, module, msg_id, __VA_ARGS__)

#endif /* QR_LOGGER_H */
