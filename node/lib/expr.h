/* The Upstash-Retry-Delay expression language (qr_expr_*): a compiler
 * from source text into a bounded postfix program, and its evaluator. Pure:
 * no clock, randomness or I/O, no recursion when evaluating, and nothing
 * allocates except qr_expr_parse. The retry policy (deliver/retry.h)
 * turns the value into a delay; publish checks the source with
 * qr_expr_check. */
#ifndef QR_EXPR_H
#define QR_EXPR_H

#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"

/* ---------------------------------------------------------------------------
 * The Upstash-Retry-Delay expression (milliseconds)
 *
 *   expr    = term { ("+" | "-") term }             left associative
 *   term    = unary { ("*" | "/") unary }           left associative
 *   unary   = ("-" | "+") unary | primary
 *   primary = number | "retried" | name "(" expr { "," expr } ")"
 *           | "(" expr ")"
 *   number  = digits ["." digits] | "." digits, optional exponent "e[+-]d"
 *   name    = pow(x,y) exp(x) sqrt(x) abs(x) floor(x) ceil(x) round(x)
 *             min(x,y) max(x,y)                     (lower case only)
 *
 * Whitespace (space, tab, CR, LF) separates tokens. The source is compiled
 * into a postfix program of at most QR_EXPR_MAX_NODES operations, with
 * nesting (parentheses, calls, unary signs) at most QR_EXPR_MAX_DEPTH
 * deep; evaluation is a straight loop with no recursion. Error messages give
 * a 1-based byte position: "unknown function 'foo' at 5", "expected ')' at
 * 12" (len + 1 at the end), "unexpected end of expression".
 * ------------------------------------------------------------------------- */

#define QR_EXPR_MAX_DEPTH 32
#define QR_EXPR_MAX_NODES 256
/* Used when max_src_bytes is 0 (qraft's default publish limit). */
#define QR_EXPR_DEFAULT_MAX_BYTES 256

struct qr_expr_insn {
    uint8_t op;
    double value;
};

/* A compiled expression; fields are private to expr.c. About 4 KiB, so it
 * can live on the stack (qr_expr_compile) or the heap
 * (qr_expr_parse). */
struct qr_expr {
    uint32_t n_insns;
    struct qr_expr_insn insns[QR_EXPR_MAX_NODES];
};

/* Compiles src (NUL-terminated; borrowed) into caller storage *e. Returns 0,
 * or QR_EBADREQ with the reason in errmsg (empty, longer than max_src_bytes,
 * syntax, unknown name, wrong argument count, too deep, too many nodes); on
 * failure *e is left empty and evaluates to NaN. */
int qr_expr_compile(struct qr_expr *e,
                    const char *src,
                    size_t max_src_bytes,
                    char errmsg[QR_ERRMSG_BYTES]);

/* Like qr_expr_compile into a new object: returns 0 and *out (free
 * with qr_expr_free), QR_EBADREQ with errmsg, or -ENOMEM. */
int qr_expr_parse(const char *src,
                  size_t max_src_bytes,
                  struct qr_expr **out,
                  char errmsg[QR_ERRMSG_BYTES]);

/* Frees an object from qr_expr_parse; NULL is fine. */
void qr_expr_free(struct qr_expr *e);

/* Publish-time validation: 0, or QR_EBADREQ with the reason in errmsg. */
int qr_expr_check(const char *src,
                  size_t max_src_bytes,
                  char errmsg[QR_ERRMSG_BYTES]);

/* The raw IEEE value of the expression for `retried` (may be negative, NaN or
 * infinite: x/0 is +-inf, 0/0 NaN). */
double qr_expr_eval(const struct qr_expr *e, double retried);

#endif /* QR_EXPR_H */
