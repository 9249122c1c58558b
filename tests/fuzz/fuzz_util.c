/* See fuzz_util.h. */
#include "fuzz_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logger.h"

char *fuzz_strndup(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s == NULL) {
        abort();
    }
    if (size > 0) {
        memcpy(s, data, size);
    }
    s[size] = '\0';
    return s;
}

void fuzz_fail(int line, const char *what)
{
    fprintf(stderr, "fuzz: check failed at line %d: %s\n", line, what);
    abort();
}

int fuzz_tolerate_known(void)
{
    static int cached = -1;
    if (cached < 0) {
        const char *v = getenv("QRAFT_FUZZ_TOLERATE_KNOWN");
        cached = v != NULL && strcmp(v, "1") == 0;
    }
    return cached;
}

int fuzz_known(int line, const char *what)
{
    if (!fuzz_tolerate_known()) {
        fuzz_fail(line, what);
    }
    fprintf(stderr, "fuzz: TOLERATED known finding at line %d: %s\n", line,
            what);
    return 0;
}

void fuzz_quiet_logs(void)
{
    qr_log_set_level(QR_LOG_ERROR);
}
