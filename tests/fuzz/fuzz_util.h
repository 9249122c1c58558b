/* Helpers the fuzz targets share: a NUL-terminated copy of the input, and a
 * check that aborts (so libFuzzer reports a crash) with a message. */
#ifndef QRAFT_FUZZ_UTIL_H
#define QRAFT_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Returns new: data[0..size) followed by a NUL (free with free()). Aborts
 * when out of memory. */
char *fuzz_strndup(const uint8_t *data, size_t size);

/* Aborts with "fuzz: <what>" on stderr when ok is false. */
#define FUZZ_CHECK(ok, what)           \
    do {                               \
        if (!(ok)) {                   \
            fuzz_fail(__LINE__, what); \
        }                              \
    } while (0)
void fuzz_fail(int line, const char *what) __attribute__((noreturn));

/* A check for a defect that is known and open (issue 10): aborts like
 * FUZZ_CHECK, unless QRAFT_FUZZ_TOLERATE_KNOWN=1, when it prints
 * "TOLERATED known finding: <what>" on stderr and evaluates to false so the
 * caller can skip what follows. CI sets the variable until the fix lands;
 * the lead flips it off (tests/fuzz/run.sh --strict) once it has. */
#define FUZZ_KNOWN(ok, what) ((ok) ? 1 : fuzz_known(__LINE__, what))
int fuzz_known(int line, const char *what);

/* Whether QRAFT_FUZZ_TOLERATE_KNOWN=1. */
int fuzz_tolerate_known(void);

struct ProtobufCMessage;

/* True when every string field of m, nested messages and set oneof members
 * included, is valid UTF-8 (no overlong forms, no surrogates, at most
 * U+10FFFF). m is borrowed; NULL is fine. */
int fuzz_all_utf8(const struct ProtobufCMessage *m);

/* Silences the node's logging below ERROR (once per process). */
void fuzz_quiet_logs(void);

#endif
