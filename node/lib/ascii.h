/* ASCII character classes for parsers of wire text (headers, expressions):
 * unlike <ctype.h> they do not depend on the locale or on the sign of
 * char. Header only; pure. */
#ifndef QR_ASCII_H
#define QR_ASCII_H

#include <stdbool.h>
#include <stddef.h>

/* HTTP's optional whitespace, plus the line ends a raw header line keeps:
 * space, tab, CR, LF. */
static inline bool qr_ascii_is_ows(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static inline bool qr_ascii_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static inline bool qr_ascii_is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static inline char qr_ascii_to_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* Trims qr_ascii_is_ows bytes from both ends of [*s, *s + *len). */
static inline void qr_ascii_trim(const char **s, size_t *len)
{
    while (*len > 0 && qr_ascii_is_ows((*s)[0])) {
        (*s)++;
        (*len)--;
    }
    while (*len > 0 && qr_ascii_is_ows((*s)[*len - 1])) {
        (*len)--;
    }
}

#endif /* QR_ASCII_H */
