/* API tokens and their scopes: the table a node checks each request's token
 * against, read from a token file (one "NAME SCOPES SECRET" line per token,
 * docs/operations.md) plus the single --token, which has every scope.
 *
 * Invariants: a table's names and secrets are unique; a secret is compared
 * only in constant time (qr_tokens_equal) and never written to a message,
 * a log line or an error. */
#ifndef QR_TOKENS_H
#define QR_TOKENS_H

#include <stdbool.h>
#include <stddef.h>

/* Scopes, one bit each. QR_SCOPE_PEER is not an API token's: only the
 * peer token (node to node) reaches what needs it. */
#define QR_SCOPE_PUBLISH 1u
#define QR_SCOPE_READ 2u
#define QR_SCOPE_ADMIN 4u
#define QR_SCOPE_ALL (QR_SCOPE_PUBLISH | QR_SCOPE_READ | QR_SCOPE_ADMIN)
#define QR_SCOPE_PEER 8u

#define QR_TOKENS_NAME_MAX 64    /* with the NUL */
#define QR_TOKENS_SECRET_MAX 128 /* with the NUL */
#define QR_TOKENS_SECRET_MIN 16  /* in a token file */
#define QR_TOKENS_LINE_MAX 1024

struct qr_token {
    char name[QR_TOKENS_NAME_MAX];
    char secret[QR_TOKENS_SECRET_MAX];
    unsigned scopes; /* QR_SCOPE_* bits */
};

struct qr_tokens {
    struct qr_token *v; /* owned */
    size_t n;
};

/* An empty table; nothing to free yet. */
void qr_tokens_init(struct qr_tokens *t);

/* Frees what t owns and leaves it empty. Safe to call twice. */
void qr_tokens_free(struct qr_tokens *t);

/* Adds a token (name and secret copied). Returns 0, -ENOMEM, or QR_EBADREQ
 * when name or secret is empty or too long, or either is already in t. */
int qr_tokens_add(struct qr_tokens *t,
                  const char *name,
                  const char *secret,
                  unsigned scopes);

/* Parses a token file's text (len bytes; file: its name, for errors) into
 * t, which must be empty. Lines: "NAME SCOPES SECRET" separated by spaces
 * or tabs; blank lines and lines starting with '#' (after blanks) are
 * skipped. NAME is [A-Za-z0-9._-]{1,63}; SCOPES a comma-separated list of
 * publish, read, admin; SECRET 16 to 127 printable ASCII characters. At
 * least one token. On a bad line returns QR_EBADREQ with "FILE:LINE: what
 * is wrong" in errmsg (never the secret, nor a field that may be one) and
 * leaves t empty; -ENOMEM likewise. */
int qr_tokens_parse(struct qr_tokens *t,
                    const char *text,
                    size_t len,
                    const char *file,
                    char *errmsg,
                    size_t errmsg_size);

/* Reads path and parses it as qr_tokens_parse does; a file that cannot be
 * read is -errno with errmsg naming it. */
int qr_tokens_load(struct qr_tokens *t,
                   const char *path,
                   char *errmsg,
                   size_t errmsg_size);

/* The token whose secret is given (len bytes, not NUL-terminated), or NULL.
 * Every entry is compared, in constant time each. */
const struct qr_token *qr_tokens_find(const struct qr_tokens *t,
                                      const char *given,
                                      size_t len);

/* Whether given (len bytes) equals secret, in time that depends on len and
 * strlen(secret) only. An empty secret matches nothing. */
bool qr_tokens_equal(const char *secret, const char *given, size_t len);

/* The name of one scope bit ("publish", "read", "admin", "peer", "none"
 * for 0). */
const char *qr_tokens_scope_name(unsigned scope);

/* Writes scopes as "publish,read" into out (size bytes). */
void qr_tokens_format_scopes(unsigned scopes, char *out, size_t size);

#endif /* QR_TOKENS_H */
