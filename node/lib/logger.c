#include "lib/logger.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "lib/err.h"
#include "lib/utf8.h"

/* A log call's own text, before escaping. */
#define TEXT_BYTES 1024
/* A message or run id is cut to this many bytes on a line. */
#define FIELD_BYTES 256

static enum qr_log_level log_level = QR_LOG_INFO;
static enum qr_log_format log_format = QR_LOG_TEXT;
static uint64_t log_node_id;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
static const char *const level_words[] = {"debug", "info", "warn", "error"};
static const char *const format_words[] = {"text", "json"};

void qr_log_set_level(enum qr_log_level level)
{
    log_level = level;
}

enum qr_log_level qr_log_get_level(void)
{
    return log_level;
}

void qr_log_set_format(enum qr_log_format format)
{
    log_format = format;
}

void qr_log_set_node(uint64_t node_id)
{
    log_node_id = node_id;
}

static int parse_word(const char *s,
                      const char *const *words,
                      int n_words,
                      int *out)
{
    for (int i = 0; i < n_words; i++) {
        if (strcmp(s, words[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    return QR_EBADREQ;
}

int qr_log_parse_level(const char *s, enum qr_log_level *out)
{
    int i;
    int rv = parse_word(s, level_words, 4, &i);
    if (rv == 0) {
        *out = (enum qr_log_level)i;
    }
    return rv;
}

int qr_log_parse_format(const char *s, enum qr_log_format *out)
{
    int i;
    int rv = parse_word(s, format_words, 2, &i);
    if (rv == 0) {
        *out = (enum qr_log_format)i;
    }
    return rv;
}

/* A line under construction: never more than cap bytes, and never a piece
 * of a character or of an escape. */
struct line {
    char *buf;
    size_t len;
    size_t cap;
};

static void put(struct line *l, const char *s, size_t n)
{
    if (n <= l->cap - l->len) {
        memcpy(l->buf + l->len, s, n);
        l->len += n;
    }
}

static void putf(struct line *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void putf(struct line *l, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) {
        put(l, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
    }
}

/* The bytes of the UTF-8 character that starts with b (valid input). */
static size_t char_bytes(unsigned char b)
{
    return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}

/* The n bytes at s as the inside of a JSON string: invalid UTF-8 becomes
 * U+FFFD; quotes, backslashes and control characters are escaped. Stops
 * at the first character that does not fit within limit bytes of l. */
static void put_json_text(struct line *l, const char *s, size_t n, size_t limit)
{
    char valid[QR_UTF8_LOSSY_BYTES(TEXT_BYTES)];
    n = n < TEXT_BYTES ? n : TEXT_BYTES;
    size_t len = qr_utf8_lossy(s, n, valid);
    size_t saved_cap = l->cap;
    l->cap = limit < l->cap ? limit : l->cap;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)valid[i];
        char esc[8];
        const char *piece = esc;
        size_t piece_len = 2;
        esc[0] = '\\';
        if (c == '"' || c == '\\') {
            esc[1] = (char)c;
        } else if (c == '\n') {
            esc[1] = 'n';
        } else if (c == '\r') {
            esc[1] = 'r';
        } else if (c == '\t') {
            esc[1] = 't';
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            piece_len = 6;
        } else {
            piece = valid + i;
            piece_len = char_bytes(c);
        }
        size_t before = l->len;
        put(l, piece, piece_len);
        if (l->len == before) {
            break; /* full */
        }
        i += c < 0x80 ? 1 : piece_len;
    }
    l->cap = saved_cap;
}

static void put_json_field(struct line *l, const char *key, const char *v)
{
    if (v == NULL || v[0] == '\0') {
        return;
    }
    putf(l, ",\"%s\":\"", key);
    put_json_text(l, v, strnlen(v, FIELD_BYTES), l->cap);
    put(l, "\"", 1);
}

static void format_time(char *out, size_t size, const struct timespec *ts)
{
    struct tm tm;
    char day_time[24];
    gmtime_r(&ts->tv_sec, &tm);
    strftime(day_time, sizeof day_time, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, size, "%s.%03ldZ", day_time, ts->tv_nsec / 1000000);
}

size_t qr_log_format_line(char *out, const struct qr_log_line *e)
{
    static const struct qr_log_fields none = {0};
    const struct qr_log_fields *f = e->fields != NULL ? e->fields : &none;
    char time_text[48];
    format_time(time_text, sizeof time_text, e->when);
    /* Room is kept for the end: `"}` and the newline, then the NUL. */
    struct line l = {.buf = out, .len = 0, .cap = QR_LOG_LINE_BYTES - 4};

    if (e->format == QR_LOG_TEXT) {
        putf(&l, "%s %-5s %s: ", time_text, level_names[e->level], e->module);
        if (f->message_id != NULL && f->message_id[0] != '\0') {
            putf(&l, "msg=%.*s ", FIELD_BYTES, f->message_id);
        }
        if (f->run_id != NULL && f->run_id[0] != '\0') {
            putf(&l, "run=%.*s ", FIELD_BYTES, f->run_id);
        }
        if (f->term != 0) {
            putf(&l, "term=%" PRIu64 " ", f->term);
        }
        put(&l, e->text, strnlen(e->text, l.cap - l.len));
    } else {
        putf(&l, "{\"time\":\"%s\",\"level\":\"%s\",\"module\":\"", time_text,
             level_words[e->level]);
        put_json_text(&l, e->module, strlen(e->module), l.cap);
        put(&l, "\"", 1);
        if (e->node_id != 0) {
            putf(&l, ",\"node\":%" PRIu64, e->node_id);
        }
        put_json_field(&l, "message_id", f->message_id);
        put_json_field(&l, "run_id", f->run_id);
        if (f->term != 0) {
            putf(&l, ",\"term\":%" PRIu64, f->term);
        }
        put(&l, ",\"msg\":\"", 8);
        put_json_text(&l, e->text, strlen(e->text), l.cap);
        l.cap += 2;
        put(&l, "\"}", 2);
    }
    l.cap = QR_LOG_LINE_BYTES - 1;
    put(&l, "\n", 1);
    out[l.len] = '\0';
    return l.len;
}

static void log_text(enum qr_log_level level,
                     const char *module,
                     const struct qr_log_fields *fields,
                     const char *fmt,
                     va_list ap) __attribute__((format(printf, 4, 0)));

static void log_text(enum qr_log_level level,
                     const char *module,
                     const struct qr_log_fields *fields,
                     const char *fmt,
                     va_list ap)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char text[TEXT_BYTES];
    vsnprintf(text, sizeof text, fmt, ap);
    char line[QR_LOG_LINE_BYTES];
    struct qr_log_line what = {.format = log_format,
                               .when = &ts,
                               .node_id = log_node_id,
                               .level = level,
                               .module = module,
                               .fields = fields,
                               .text = text};
    size_t len = qr_log_format_line(line, &what);
    /* One write per line keeps lines whole when several threads log. */
    fprintf(stderr, "%.*s", (int)len, line);
}

void qr_log_with(enum qr_log_level level,
                 const char *module,
                 const struct qr_log_fields *fields,
                 const char *fmt,
                 ...)
{
    if (level < log_level) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    log_text(level, module, fields, fmt, ap);
    va_end(ap);
}
