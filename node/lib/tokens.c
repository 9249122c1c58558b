/* API tokens and scopes (tokens.h). */
#include "lib/tokens.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"

/* A token file larger than this is refused: a few thousand tokens. */
#define FILE_MAX_BYTES (1u << 20)

static const struct {
    const char *name;
    unsigned bit;
} scope_names[] = {{"publish", QR_SCOPE_PUBLISH},
                   {"read", QR_SCOPE_READ},
                   {"admin", QR_SCOPE_ADMIN},
                   {"peer", QR_SCOPE_PEER}};

void qr_tokens_init(struct qr_tokens *t)
{
    t->v = NULL;
    t->n = 0;
}

void qr_tokens_free(struct qr_tokens *t)
{
    if (t->v != NULL) {
        /* Secrets do not outlive the table in freed memory. */
        memset(t->v, 0, t->n * sizeof t->v[0]);
    }
    free(t->v);
    qr_tokens_init(t);
}

bool qr_tokens_equal(const char *secret, const char *given, size_t len)
{
    size_t slen = strlen(secret);
    unsigned char diff = (unsigned char)(slen != len);

    for (size_t i = 0; i < len; i++) {
        diff |= (unsigned char)(given[i] ^ secret[i < slen ? i : 0]);
    }
    return diff == 0 && slen > 0;
}

const struct qr_token *qr_tokens_find(const struct qr_tokens *t,
                                      const char *given,
                                      size_t len)
{
    const struct qr_token *found = NULL;

    for (size_t i = 0; i < t->n; i++) {
        if (qr_tokens_equal(t->v[i].secret, given, len)) {
            found = &t->v[i];
        }
    }
    return found;
}

static bool name_ok(const char *name, size_t len)
{
    if (len == 0 || len >= QR_TOKENS_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')) {
            return false;
        }
    }
    return true;
}

int qr_tokens_add(struct qr_tokens *t,
                  const char *name,
                  const char *secret,
                  unsigned scopes)
{
    size_t nlen = strlen(name);
    size_t slen = strlen(secret);

    if (nlen == 0 || nlen >= QR_TOKENS_NAME_MAX || slen == 0 ||
        slen >= QR_TOKENS_SECRET_MAX) {
        return QR_EBADREQ;
    }
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->v[i].name, name) == 0 ||
            qr_tokens_equal(t->v[i].secret, secret, slen)) {
            return QR_EBADREQ;
        }
    }
    struct qr_token *v = realloc(t->v, (t->n + 1) * sizeof *v);
    if (v == NULL) {
        return -ENOMEM;
    }
    t->v = v;
    memset(&v[t->n], 0, sizeof v[t->n]);
    memcpy(v[t->n].name, name, nlen);
    memcpy(v[t->n].secret, secret, slen);
    v[t->n].scopes = scopes;
    t->n++;
    return 0;
}

/* Parses "publish,read" (len bytes) into *out; false on an unknown or
 * empty word. */
static bool parse_scopes(const char *s, size_t len, unsigned *out)
{
    size_t i = 0;

    *out = 0;
    while (i <= len) {
        size_t j = i;
        while (j < len && s[j] != ',') {
            j++;
        }
        bool known = false;
        for (size_t k = 0; k < 3; k++) { /* not "peer" */
            if (j - i == strlen(scope_names[k].name) &&
                memcmp(s + i, scope_names[k].name, j - i) == 0) {
                *out |= scope_names[k].bit;
                known = true;
            }
        }
        if (!known) {
            return false;
        }
        i = j + 1;
    }
    return *out != 0;
}

struct field {
    const char *p;
    size_t len;
};

/* Splits line (len bytes) at spaces and tabs into up to 4 fields; returns
 * how many there are (4: four or more). */
static size_t split(const char *line, size_t len, struct field f[4])
{
    size_t n = 0;
    size_t i = 0;

    while (i < len && n < 4) {
        while (i < len && (line[i] == ' ' || line[i] == '\t')) {
            i++;
        }
        if (i == len) {
            break;
        }
        f[n].p = line + i;
        while (i < len && line[i] != ' ' && line[i] != '\t') {
            i++;
        }
        f[n].len = (size_t)(line + i - f[n].p);
        n++;
    }
    return n;
}

/* Checks one line's fields and adds its token; on a bad line writes what
 * is wrong (without the line number) into why. */
static int parse_line(struct qr_tokens *t,
                      const char *line,
                      size_t len,
                      char *why,
                      size_t why_size)
{
    struct field f[4];
    size_t n = split(line, len, f);
    unsigned scopes;
    char name[QR_TOKENS_NAME_MAX];
    char secret[QR_TOKENS_SECRET_MAX];

    if (n != 3) {
        snprintf(why, why_size,
                 "expected 3 fields (NAME SCOPES SECRET), found %s",
                 n == 4   ? "more"
                 : n == 2 ? "2"
                          : "1");
        return QR_EBADREQ;
    }
    if (!name_ok(f[0].p, f[0].len)) {
        snprintf(why, why_size, "the name must be 1 to %d of A-Z a-z 0-9 . _ -",
                 QR_TOKENS_NAME_MAX - 1);
        return QR_EBADREQ;
    }
    if (!parse_scopes(f[1].p, f[1].len, &scopes)) {
        snprintf(why, why_size,
                 "the scopes must be a comma-separated list of publish, "
                 "read, admin (no spaces)");
        return QR_EBADREQ;
    }
    if (f[2].len < QR_TOKENS_SECRET_MIN || f[2].len >= QR_TOKENS_SECRET_MAX) {
        snprintf(why, why_size,
                 "the secret is %zu characters long; it must be %d to %d",
                 f[2].len, QR_TOKENS_SECRET_MIN, QR_TOKENS_SECRET_MAX - 1);
        return QR_EBADREQ;
    }
    for (size_t i = 0; i < f[2].len; i++) {
        unsigned char c = (unsigned char)f[2].p[i];
        if (c < 0x21 || c > 0x7e) {
            snprintf(why, why_size,
                     "the secret has a byte that is not printable ASCII "
                     "(at character %zu)",
                     i + 1);
            return QR_EBADREQ;
        }
    }
    memcpy(name, f[0].p, f[0].len);
    name[f[0].len] = '\0';
    memcpy(secret, f[2].p, f[2].len);
    secret[f[2].len] = '\0';
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->v[i].name, name) == 0) {
            snprintf(why, why_size, "the name '%s' is used twice", name);
            memset(secret, 0, sizeof secret);
            return QR_EBADREQ;
        }
        if (qr_tokens_equal(t->v[i].secret, secret, f[2].len)) {
            snprintf(why, why_size, "the same secret as token '%s'",
                     t->v[i].name);
            memset(secret, 0, sizeof secret);
            return QR_EBADREQ;
        }
    }
    int rv = qr_tokens_add(t, name, secret, scopes);
    memset(secret, 0, sizeof secret);
    if (rv != 0) {
        snprintf(why, why_size, "out of memory");
    }
    return rv;
}

int qr_tokens_parse(struct qr_tokens *t,
                    const char *text,
                    size_t len,
                    const char *file,
                    char *errmsg,
                    size_t errmsg_size)
{
    size_t line_no = 0;
    size_t i = 0;
    char why[160];

    while (i < len) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t end = nl != NULL ? (size_t)(nl - text) : len;
        size_t n = end - i;
        const char *line = text + i;
        line_no++;
        i = end + 1;
        if (n > 0 && line[n - 1] == '\r') {
            n--;
        }
        if (n >= QR_TOKENS_LINE_MAX) {
            snprintf(errmsg, errmsg_size, "%s:%zu: the line is over %d bytes",
                     file, line_no, QR_TOKENS_LINE_MAX - 1);
            goto err;
        }
        if (memchr(line, '\0', n) != NULL) {
            snprintf(errmsg, errmsg_size, "%s:%zu: the line has a NUL byte",
                     file, line_no);
            goto err;
        }
        size_t b = 0;
        while (b < n && (line[b] == ' ' || line[b] == '\t')) {
            b++;
        }
        if (b == n || line[b] == '#') {
            continue;
        }
        int rv = parse_line(t, line, n, why, sizeof why);
        if (rv != 0) {
            snprintf(errmsg, errmsg_size, "%s:%zu: %s", file, line_no, why);
            qr_tokens_free(t);
            return rv;
        }
    }
    if (t->n == 0) {
        snprintf(errmsg, errmsg_size,
                 "%s: no tokens (each line is NAME SCOPES SECRET)", file);
        return QR_EBADREQ;
    }
    return 0;

err:
    qr_tokens_free(t);
    return QR_EBADREQ;
}

int qr_tokens_load(struct qr_tokens *t,
                   const char *path,
                   char *errmsg,
                   size_t errmsg_size)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t len;
    int rv;

    if (f == NULL) {
        rv = -errno;
        snprintf(errmsg, errmsg_size, "%s: %s", path, strerror(errno));
        return rv;
    }
    buf = malloc(FILE_MAX_BYTES + 1);
    if (buf == NULL) {
        fclose(f);
        snprintf(errmsg, errmsg_size, "%s: out of memory", path);
        return -ENOMEM;
    }
    len = fread(buf, 1, FILE_MAX_BYTES + 1, f);
    if (ferror(f)) {
        rv = -EIO;
        snprintf(errmsg, errmsg_size, "%s: read failed", path);
    } else if (len > FILE_MAX_BYTES) {
        rv = QR_EBADREQ;
        snprintf(errmsg, errmsg_size, "%s: larger than %u bytes", path,
                 FILE_MAX_BYTES);
    } else {
        rv = qr_tokens_parse(t, buf, len, path, errmsg, errmsg_size);
    }
    memset(buf, 0, len < FILE_MAX_BYTES ? len : FILE_MAX_BYTES);
    free(buf);
    fclose(f);
    return rv;
}

const char *qr_tokens_scope_name(unsigned scope)
{
    for (size_t k = 0; k < sizeof scope_names / sizeof scope_names[0]; k++) {
        if (scope_names[k].bit == scope) {
            return scope_names[k].name;
        }
    }
    return scope == 0 ? "none" : "?";
}

void qr_tokens_format_scopes(unsigned scopes, char *out, size_t size)
{
    size_t used = 0;

    if (size == 0) {
        return;
    }
    out[0] = '\0';
    for (size_t k = 0; k < sizeof scope_names / sizeof scope_names[0]; k++) {
        if ((scopes & scope_names[k].bit) != 0 && used < size) {
            int w = snprintf(out + used, size - used, "%s%s",
                             used > 0 ? "," : "", scope_names[k].name);
            used += w > 0 ? (size_t)w : 0;
        }
    }
    if (used == 0) {
        snprintf(out, size, "none");
    }
}
