/* UTF-8 text, for every face that takes strings it will store or show:
 * a strict validator (RFC 3629: no overlong forms, no UTF-16 surrogates,
 * nothing above U+10FFFF) and a lossy copy for showing bytes that are
 * already stored. Pure functions: no allocation, no state. */
#ifndef QR_UTF8_H
#define QR_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* The bytes U+FFFD (REPLACEMENT CHARACTER) takes in UTF-8. */
#define QR_UTF8_REPLACEMENT "\xEF\xBF\xBD"

/* Whether the n bytes at s (borrowed; NUL bytes count as U+0000) are
 * well-formed UTF-8. n == 0 is valid. */
bool qr_utf8_valid(const char *s, size_t n);

/* The size qr_utf8_lossy may write for n input bytes, NUL included. */
#define QR_UTF8_LOSSY_BYTES(n) (3 * (n) + 1)

/* Copies the n bytes at s into out (which holds QR_UTF8_LOSSY_BYTES(n)
 * bytes), replacing each maximal ill-formed subsequence with U+FFFD as
 * Unicode recommends (section 3.9, "U+FFFD substitution of maximal
 * subparts"), and NUL-terminates it. Returns the bytes written, NUL
 * excluded. Valid input is copied unchanged. */
size_t qr_utf8_lossy(const char *s, size_t n, char *out);

#endif /* QR_UTF8_H */
