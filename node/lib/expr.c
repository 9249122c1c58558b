/* The retry-delay expression: tokenizer, recursive-descent compiler into a
 * postfix program of at most QR_EXPR_MAX_NODES operations, and the
 * evaluator, a straight loop over that program. Pure; see lib/expr.h. */
#include "lib/expr.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/ascii.h"

enum op {
    OP_CONST,
    OP_RETRIED,
    OP_NEG,
    OP_ADD,
    OP_SUB,
    OP_MUL,
    OP_DIV,
    OP_POW,
    OP_EXP,
    OP_SQRT,
    OP_ABS,
    OP_FLOOR,
    OP_CEIL,
    OP_ROUND,
    OP_MIN,
    OP_MAX,
};

static const struct {
    const char *name;
    enum op op;
    unsigned n_args;
} functions[] = {
    {"pow", OP_POW, 2},     {"exp", OP_EXP, 1},     {"sqrt", OP_SQRT, 1},
    {"abs", OP_ABS, 1},     {"floor", OP_FLOOR, 1}, {"ceil", OP_CEIL, 1},
    {"round", OP_ROUND, 1}, {"min", OP_MIN, 2},     {"max", OP_MAX, 2},
};

#define N_FUNCTIONS (sizeof functions / sizeof functions[0])

enum tok_kind {
    TOK_END,
    TOK_NUMBER,
    TOK_NAME,
    TOK_LPAREN,
    TOK_RPAREN,
    TOK_COMMA,
    TOK_PLUS,
    TOK_MINUS,
    TOK_STAR,
    TOK_SLASH,
    TOK_BAD, /* a byte that starts no token */
};

struct token {
    enum tok_kind kind;
    size_t pos; /* 0-based byte offset */
    size_t len;
    double value; /* TOK_NUMBER */
};

struct parser {
    const char *src;
    size_t len;
    size_t pos; /* scan position, after tok */
    struct token tok;
    unsigned depth;
    struct qr_expr *e;
    char *errmsg;
};

/* Shown positions are 1-based. */
static int fail(struct parser *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int fail(struct parser *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->errmsg, QR_ERRMSG_BYTES, fmt, ap);
    va_end(ap);
    return QR_EBADREQ;
}

/* 10^k for 0 <= k <= 400 by repeated multiplication: exact up to 10^22,
 * infinite past the double range; no libm involved. */
static double power_of_ten(unsigned k)
{
    double r = 1.0;
    for (unsigned i = 0; i < k && r < HUGE_VAL; i++) {
        r *= 10.0;
    }
    return r;
}

/* Scans a number at p->pos: digits ["." digits] | "." digits, then an
 * optional exponent. Keeps 19 significant digits. */
static void scan_number(struct parser *p, struct token *t)
{
    const char *s = p->src;
    size_t i = p->pos;
    uint64_t mant = 0;
    unsigned n_sig = 0;
    long exp10 = 0;

    while (i < p->len && qr_ascii_is_digit(s[i])) {
        if (n_sig < 19) {
            mant = mant * 10 + (uint64_t)(s[i] - '0');
            if (mant != 0) {
                n_sig++;
            }
        } else {
            exp10++;
        }
        i++;
    }
    if (i < p->len && s[i] == '.') {
        i++;
        while (i < p->len && qr_ascii_is_digit(s[i])) {
            if (n_sig < 19) {
                mant = mant * 10 + (uint64_t)(s[i] - '0');
                if (mant != 0) {
                    n_sig++;
                }
                exp10--;
            }
            i++;
        }
    }
    /* Exponent only when digits follow: "2e" is "2" then a name. */
    if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
        size_t j = i + 1;
        bool neg = false;
        if (j < p->len && (s[j] == '+' || s[j] == '-')) {
            neg = s[j] == '-';
            j++;
        }
        if (j < p->len && qr_ascii_is_digit(s[j])) {
            long e = 0;
            while (j < p->len && qr_ascii_is_digit(s[j])) {
                if (e < 100000) {
                    e = e * 10 + (s[j] - '0');
                }
                j++;
            }
            exp10 += neg ? -e : e;
            i = j;
        }
    }

    double v = (double)mant;
    if (mant == 0) {
        v = 0.0;
    } else if (exp10 >= 0) {
        v *= power_of_ten(exp10 > 400 ? 400 : (unsigned)exp10);
    } else {
        v /= power_of_ten(-exp10 > 400 ? 400 : (unsigned)-exp10);
    }
    t->kind = TOK_NUMBER;
    t->len = i - p->pos;
    t->value = v;
}

static bool is_name_char(char c)
{
    return qr_ascii_is_alpha(c) || qr_ascii_is_digit(c) || c == '_';
}

/* Reads the next token into p->tok. */
static void next(struct parser *p)
{
    while (p->pos < p->len && qr_ascii_is_ows(p->src[p->pos])) {
        p->pos++;
    }
    struct token *t = &p->tok;
    t->pos = p->pos;
    t->len = 1;
    t->value = 0;
    if (p->pos >= p->len) {
        t->kind = TOK_END;
        t->len = 0;
        return;
    }
    char c = p->src[p->pos];
    if (qr_ascii_is_digit(c) || (c == '.' && p->pos + 1 < p->len &&
                                 qr_ascii_is_digit(p->src[p->pos + 1]))) {
        scan_number(p, t);
    } else if (qr_ascii_is_alpha(c) || c == '_') {
        size_t i = p->pos;
        while (i < p->len && is_name_char(p->src[i])) {
            i++;
        }
        t->kind = TOK_NAME;
        t->len = i - p->pos;
    } else {
        /* One-byte tokens: punct[i] is the token kinds[i]. */
        static const char punct[] = "(),+-*/";
        static const enum tok_kind kinds[] = {
            TOK_LPAREN, TOK_RPAREN, TOK_COMMA, TOK_PLUS,
            TOK_MINUS,  TOK_STAR,   TOK_SLASH,
        };
        const char *hit = c != '\0' ? strchr(punct, c) : NULL;
        t->kind = hit != NULL ? kinds[hit - punct] : TOK_BAD;
    }
    p->pos += t->len;
}

static bool tok_is_name(const struct parser *p, const char *name)
{
    return p->tok.kind == TOK_NAME && p->tok.len == strlen(name) &&
           memcmp(p->src + p->tok.pos, name, p->tok.len) == 0;
}

/* Error for a token that cannot appear where it is. */
static int unexpected(struct parser *p)
{
    const struct token *t = &p->tok;
    size_t at = t->pos + 1;
    if (t->kind == TOK_END) {
        return fail(p, "unexpected end of expression");
    }
    if (t->kind == TOK_BAD) {
        unsigned char c = (unsigned char)p->src[t->pos];
        if (c >= 0x20 && c < 0x7f) {
            return fail(p, "unexpected character '%c' at %zu", c, at);
        }
        return fail(p, "unexpected byte 0x%02x at %zu", c, at);
    }
    int shown = t->len > 24 ? 24 : (int)t->len;
    return fail(p, "unexpected '%.*s'%s at %zu", shown, p->src + t->pos,
                t->len > 24 ? "..." : "", at);
}

/* Error for a missing token; at the end the position is len + 1. */
static int expected(struct parser *p, const char *what)
{
    if (p->tok.kind == TOK_END) {
        return fail(p, "expected %s at %zu (end of expression)", what,
                    p->len + 1);
    }
    return fail(p, "expected %s at %zu", what, p->tok.pos + 1);
}

static int emit(struct parser *p, enum op op, double value, size_t pos)
{
    struct qr_expr *e = p->e;
    if (e->n_insns >= QR_EXPR_MAX_NODES) {
        return fail(p,
                    "expression too complex (more than %d operations) "
                    "at %zu",
                    QR_EXPR_MAX_NODES, pos + 1);
    }
    e->insns[e->n_insns].op = (uint8_t)op;
    e->insns[e->n_insns].value = value;
    e->n_insns++;
    return 0;
}

/* Enters one nesting level at p->tok (a '(' or a unary sign) and reads
 * past it; the caller leaves it (p->depth--) once the level is parsed. */
static int enter(struct parser *p)
{
    if (p->depth >= QR_EXPR_MAX_DEPTH) {
        return fail(p, "expression nested too deeply (max %d levels) at %zu",
                    QR_EXPR_MAX_DEPTH, p->tok.pos + 1);
    }
    p->depth++;
    next(p);
    return 0;
}

static int parse_expr(struct parser *p);

/* The index in functions[] of the name (len bytes), N_FUNCTIONS if none. */
static size_t find_function(const char *name, size_t len)
{
    size_t f;
    for (f = 0; f < N_FUNCTIONS; f++) {
        if (strlen(functions[f].name) == len &&
            memcmp(functions[f].name, name, len) == 0) {
            break;
        }
    }
    return f;
}

/* name "(" args ")": p->tok is the '(' after the name. */
static int parse_call(struct parser *p, size_t name_pos, size_t name_len)
{
    const char *name = p->src + name_pos;
    size_t f = find_function(name, name_len);
    int shown = name_len > 24 ? 24 : (int)name_len;
    if (f == N_FUNCTIONS) {
        return fail(p,
                    "unknown function '%.*s'%s at %zu (known: pow exp "
                    "sqrt abs floor ceil round min max)",
                    shown, name, name_len > 24 ? "..." : "", name_pos + 1);
    }
    int rv = enter(p); /* past '(' */
    if (rv != 0) {
        return rv;
    }
    unsigned n_args = 0;
    if (p->tok.kind != TOK_RPAREN) {
        for (;;) {
            rv = parse_expr(p);
            if (rv != 0) {
                return rv;
            }
            n_args++;
            if (p->tok.kind != TOK_COMMA) {
                break;
            }
            next(p);
        }
    }
    if (p->tok.kind != TOK_RPAREN) {
        return expected(p, n_args > 0 ? "',' or ')'" : "')'");
    }
    if (n_args != functions[f].n_args) {
        return fail(p, "'%s' takes %u argument%s, got %u at %zu",
                    functions[f].name, functions[f].n_args,
                    functions[f].n_args == 1 ? "" : "s", n_args, name_pos + 1);
    }
    next(p);
    p->depth--;
    return emit(p, functions[f].op, 0, name_pos);
}

static int parse_primary(struct parser *p)
{
    struct token t = p->tok;
    int rv;

    switch (t.kind) {
        case TOK_NUMBER:
            next(p);
            return emit(p, OP_CONST, t.value, t.pos);
        case TOK_NAME:
            if (tok_is_name(p, "retried")) {
                next(p);
                if (p->tok.kind == TOK_LPAREN) {
                    return fail(p,
                                "'retried' is a variable, not a function, "
                                "at %zu",
                                t.pos + 1);
                }
                return emit(p, OP_RETRIED, 0, t.pos);
            }
            next(p);
            if (p->tok.kind == TOK_LPAREN) {
                return parse_call(p, t.pos, t.len);
            }
            size_t f = find_function(p->src + t.pos, t.len);
            if (f < N_FUNCTIONS) {
                return fail(p, "expected '(' after '%s' at %zu",
                            functions[f].name, t.pos + t.len + 1);
            }
            return fail(p,
                        "unknown variable '%.*s'%s at %zu (only "
                        "'retried' is defined)",
                        t.len > 24 ? 24 : (int)t.len, p->src + t.pos,
                        t.len > 24 ? "..." : "", t.pos + 1);
        case TOK_LPAREN:
            rv = enter(p);
            if (rv != 0) {
                return rv;
            }
            rv = parse_expr(p);
            if (rv != 0) {
                return rv;
            }
            if (p->tok.kind != TOK_RPAREN) {
                return expected(p, "')'");
            }
            next(p);
            p->depth--;
            return 0;
        default:
            return unexpected(p);
    }
}

static int parse_unary(struct parser *p)
{
    if (p->tok.kind != TOK_MINUS && p->tok.kind != TOK_PLUS) {
        return parse_primary(p);
    }
    struct token t = p->tok;
    int rv = enter(p);
    if (rv != 0) {
        return rv;
    }
    rv = parse_unary(p);
    if (rv != 0) {
        return rv;
    }
    p->depth--;
    return t.kind == TOK_MINUS ? emit(p, OP_NEG, 0, t.pos) : 0;
}

/* One level of left-associative binary operators over operand: "a op b op
 * c" is (a op b) op c. tok_a becomes op_a, tok_b op_b. */
static int parse_left_assoc(struct parser *p,
                            int (*operand)(struct parser *p),
                            enum tok_kind tok_a,
                            enum op op_a,
                            enum tok_kind tok_b,
                            enum op op_b)
{
    int rv = operand(p);
    while (rv == 0 && (p->tok.kind == tok_a || p->tok.kind == tok_b)) {
        struct token t = p->tok;
        next(p);
        rv = operand(p);
        if (rv == 0) {
            rv = emit(p, t.kind == tok_a ? op_a : op_b, 0, t.pos);
        }
    }
    return rv;
}

static int parse_term(struct parser *p)
{
    return parse_left_assoc(p, parse_unary, TOK_STAR, OP_MUL, TOK_SLASH,
                            OP_DIV);
}

static int parse_expr(struct parser *p)
{
    return parse_left_assoc(p, parse_term, TOK_PLUS, OP_ADD, TOK_MINUS, OP_SUB);
}

int qr_expr_compile(struct qr_expr *e,
                    const char *src,
                    size_t max_src_bytes,
                    char errmsg[QR_ERRMSG_BYTES])
{
    if (max_src_bytes == 0) {
        max_src_bytes = QR_EXPR_DEFAULT_MAX_BYTES;
    }
    e->n_insns = 0;
    struct parser p = {.src = src, .e = e, .errmsg = errmsg};
    if (src == NULL) {
        return fail(&p, "empty expression");
    }
    p.len = strnlen(src, max_src_bytes + 1);
    if (p.len > max_src_bytes) {
        return fail(&p, "expression too long (max %zu bytes)", max_src_bytes);
    }
    next(&p);
    if (p.tok.kind == TOK_END) {
        return fail(&p, "empty expression");
    }
    int rv = parse_expr(&p);
    if (rv == 0 && p.tok.kind != TOK_END) {
        rv = unexpected(&p);
    }
    if (rv != 0) {
        e->n_insns = 0;
        return rv;
    }
    assert(p.depth == 0);
    return 0;
}

int qr_expr_parse(const char *src,
                  size_t max_src_bytes,
                  struct qr_expr **out,
                  char errmsg[QR_ERRMSG_BYTES])
{
    struct qr_expr *e = malloc(sizeof *e);
    if (e == NULL) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "out of memory");
        return -ENOMEM;
    }
    int rv = qr_expr_compile(e, src, max_src_bytes, errmsg);
    if (rv != 0) {
        free(e);
        return rv;
    }
    *out = e;
    return 0;
}

void qr_expr_free(struct qr_expr *e)
{
    free(e);
}

int qr_expr_check(const char *src,
                  size_t max_src_bytes,
                  char errmsg[QR_ERRMSG_BYTES])
{
    struct qr_expr e;
    return qr_expr_compile(&e, src, max_src_bytes, errmsg);
}

/* x / y with the IEEE results spelled out, so no sanitizer sees a division
 * by zero. */
static double divide(double x, double y)
{
    if (y != 0.0) {
        return x / y;
    }
    if (isnan(x) || x == 0.0) {
        return NAN;
    }
    return (x > 0) == !signbit(y) ? HUGE_VAL : -HUGE_VAL;
}

static double negate(double x)
{
    return -x;
}

static double add(double x, double y)
{
    return x + y;
}

static double subtract(double x, double y)
{
    return x - y;
}

static double multiply(double x, double y)
{
    return x * y;
}

/* What each operation that takes operands computes: exactly one of unary
 * and binary is set (OP_CONST and OP_RETRIED push a value instead). */
static const struct {
    double (*unary)(double x);
    double (*binary)(double x, double y);
} apply[] = {
    [OP_NEG] = {.unary = negate},    [OP_ADD] = {.binary = add},
    [OP_SUB] = {.binary = subtract}, [OP_MUL] = {.binary = multiply},
    [OP_DIV] = {.binary = divide},   [OP_POW] = {.binary = pow},
    [OP_EXP] = {.unary = exp},       [OP_SQRT] = {.unary = sqrt},
    [OP_ABS] = {.unary = fabs},      [OP_FLOOR] = {.unary = floor},
    [OP_CEIL] = {.unary = ceil},     [OP_ROUND] = {.unary = round},
    [OP_MIN] = {.binary = fmin},     [OP_MAX] = {.binary = fmax},
};

/* The program is postfix and well formed by construction: every operation
 * finds its operands on the stack and one value is left at the end. */
double qr_expr_eval(const struct qr_expr *e, double retried)
{
    double stack[QR_EXPR_MAX_NODES];
    size_t sp = 0;

    if (e->n_insns == 0) {
        return NAN;
    }
    for (uint32_t i = 0; i < e->n_insns; i++) {
        enum op op = (enum op)e->insns[i].op;
        if (op == OP_CONST) {
            stack[sp++] = e->insns[i].value;
        } else if (op == OP_RETRIED) {
            stack[sp++] = retried;
        } else if (apply[op].binary != NULL) {
            assert(sp >= 2);
            stack[sp - 2] = apply[op].binary(stack[sp - 2], stack[sp - 1]);
            sp--;
        } else {
            assert(sp >= 1 && apply[op].unary != NULL);
            stack[sp - 1] = apply[op].unary(stack[sp - 1]);
        }
    }
    assert(sp == 1);
    return stack[0];
}
