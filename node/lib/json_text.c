#include "lib/json_text.h"

#include <stdlib.h>
#include <string.h>

#include "lib/utf8.h"

json_t *qr_json_textn(const char *s, size_t n)
{
    char *clean;
    json_t *j;

    if (qr_utf8_valid(s, n)) {
        return json_stringn(s, n);
    }
    clean = malloc(QR_UTF8_LOSSY_BYTES(n));
    if (clean == NULL) {
        return NULL;
    }
    j = json_stringn(clean, qr_utf8_lossy(s, n, clean));
    free(clean);
    return j;
}

json_t *qr_json_text(const char *s)
{
    return s != NULL ? qr_json_textn(s, strlen(s)) : NULL;
}

int qr_json_set_text_key(json_t *o, const char *key, json_t *value)
{
    size_t n = strlen(key);
    char *clean;
    int rv;

    if (qr_utf8_valid(key, n)) {
        return json_object_set_new(o, key, value);
    }
    clean = malloc(QR_UTF8_LOSSY_BYTES(n));
    if (clean == NULL) {
        json_decref(value);
        return -1;
    }
    qr_utf8_lossy(key, n, clean);
    rv = json_object_set_new(o, clean, value);
    free(clean);
    return rv;
}
