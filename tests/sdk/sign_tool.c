/* qraft-sign-tool: prints the Upstash-Signature token that node/sign.c makes
 * for one request, so tests/sdk can check it with the official SDK before a
 * delivery engine exists to carry it.
 *
 *   qraft-sign-tool KEY URL [NOW_S] < BODY
 *   qraft-sign-tool --new-key
 *
 * The body is read raw from stdin; NOW_S (unix seconds) defaults to now.
 * --new-key prints a fresh signing key as the leader would make one.
 * Exits 0 after printing the token (or key) and a newline, 2 on bad usage,
 * 1 on failure. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deliver/sign.h"
#include "lib/err.h"

/* Reads all of stdin into a new buffer (free with free()). */
static int read_stdin(uint8_t **out, size_t *out_len)
{
    size_t cap = 4096;
    size_t len = 0;
    uint8_t *buf = malloc(cap);
    if (buf == NULL) {
        return -ENOMEM;
    }
    for (;;) {
        if (len == cap) {
            uint8_t *bigger = realloc(buf, cap * 2);
            if (bigger == NULL) {
                free(buf);
                return -ENOMEM;
            }
            buf = bigger;
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - len, stdin);
        len += n;
        if (n == 0) {
            break;
        }
    }
    if (ferror(stdin)) {
        free(buf);
        return -EIO;
    }
    *out = buf;
    *out_len = len;
    return 0;
}

static int print_new_key(void)
{
    char key[QR_SIGN_KEY_BYTES];
    int rv = qr_sign_generate_key(key);
    if (rv != 0) {
        fprintf(stderr, "qraft-sign-tool: new key: %s\n", qr_strerror(rv));
        return 1;
    }
    printf("%s\n", key);
    return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--new-key") == 0) {
        return print_new_key();
    }
    if (argc < 3 || argc > 4) {
        fprintf(stderr,
                "usage: qraft-sign-tool KEY URL [NOW_S] < BODY\n"
                "       qraft-sign-tool --new-key\n");
        return 2;
    }
    uint64_t now_s = (uint64_t)time(NULL);
    if (argc == 4) {
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(argv[3], &end, 10);
        if (errno != 0 || end == argv[3] || *end != '\0') {
            fprintf(stderr, "qraft-sign-tool: bad NOW_S '%s'\n", argv[3]);
            return 2;
        }
        now_s = v;
    }
    uint8_t *body = NULL;
    size_t body_len = 0;
    int rv = read_stdin(&body, &body_len);
    if (rv != 0) {
        fprintf(stderr, "qraft-sign-tool: stdin: %s\n", qr_strerror(rv));
        return 1;
    }
    char *token = NULL;
    rv = qr_sign_jwt(argv[1], argv[2], body, body_len, now_s, &token);
    free(body);
    if (rv != 0) {
        fprintf(stderr, "qraft-sign-tool: sign: %s\n", qr_strerror(rv));
        return 1;
    }
    printf("%s\n", token);
    free(token);
    return fflush(stdout) == 0 ? 0 : 1;
}
