/* See fuzz_util.h. */
#include "fuzz_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "lib/logger.h"

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

static int utf8_valid(const unsigned char *s)
{
    while (*s != '\0') {
        unsigned c = *s++;
        unsigned n;
        unsigned cp;
        unsigned min;
        if (c < 0x80) {
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
            min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
            min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
            min = 0x10000;
        } else {
            return 0;
        }
        for (unsigned i = 0; i < n; i++) {
            if ((*s & 0xc0) != 0x80) {
                return 0;
            }
            cp = (cp << 6) | (*s++ & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return 0;
        }
    }
    return 1;
}

int fuzz_all_utf8(const ProtobufCMessage *m)
{
    if (m == NULL) {
        return 1;
    }
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[i];
        const char *base = (const char *)m + fd->offset;
        if (fd->type != PROTOBUF_C_TYPE_STRING &&
            fd->type != PROTOBUF_C_TYPE_MESSAGE) {
            continue;
        }
        if ((fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) != 0 &&
            *(const uint32_t *)((const char *)m + fd->quantifier_offset) !=
                fd->id) {
            continue;
        }
        size_t n = 1;
        const void *const *items = (const void *const *)base;
        if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(const size_t *)((const char *)m + fd->quantifier_offset);
            items = *(const void *const *const *)base;
        }
        for (size_t j = 0; j < n; j++) {
            const void *v = items[j];
            if (v == NULL) {
                continue;
            }
            if (fd->type == PROTOBUF_C_TYPE_STRING
                    ? !utf8_valid(v)
                    : !fuzz_all_utf8((const ProtobufCMessage *)v)) {
                return 0;
            }
        }
    }
    return 1;
}

void fuzz_quiet_logs(void)
{
    qr_log_set_level(QR_LOG_ERROR);
}
