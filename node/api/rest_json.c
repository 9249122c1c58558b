/* The JSON shapes several REST resources show (and headers, read too):
 * headers as {"Name": [v]},
 * bodies as text or base64, optional strings (omitted when empty) and
 * cursor-paged lists. */
#include "api/rest_int.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/json_text.h"
#include "lib/utf8.h"

static void base64_encode(const uint8_t *in, size_t len, char *out)
{
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;

    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len) {
            v |= (uint32_t)in[i + 1] << 8;
        }
        if (i + 2 < len) {
            v |= in[i + 2];
        }
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? tbl[v & 63] : '=';
    }
    out[o] = '\0';
}

/* s, or, when it is not UTF-8, its lossy copy in pool memory. */
static const char *pool_lossy(h2o_mem_pool_t *pool, const char *s)
{
    size_t n = strlen(s);
    char *clean;

    if (qr_utf8_valid(s, n)) {
        return s;
    }
    clean = h2o_mem_alloc_pool(pool, QR_UTF8_LOSSY_BYTES(n));
    qr_utf8_lossy(s, n, clean);
    return clean;
}

/* {"Name": ["v", ...]} from headers, names in qr_rest_canonical form. */
json_t *qr_rest_header_map(Qraft__Header **headers,
                           size_t n,
                           h2o_mem_pool_t *pool)
{
    json_t *map = json_object();

    for (size_t i = 0; i < n && map != NULL; i++) {
        const char *name =
            pool_lossy(pool, qr_rest_canonical(pool, headers[i]->name,
                                               strlen(headers[i]->name)));
        json_t *values = json_object_get(map, name);
        if (values == NULL) {
            values = json_array();
            json_object_set_new(map, name, values);
        }
        json_array_append_new(values, qr_json_text(headers[i]->value));
    }
    return map;
}

int qr_rest_header_list(h2o_mem_pool_t *pool,
                        json_t *map,
                        Qraft__Header ***headers,
                        size_t *n,
                        const char **bad_name)
{
    size_t cap = 0;
    const char *key;
    json_t *value;

    json_object_foreach(map, key, value)
    {
        cap += json_is_array(value) ? json_array_size(value) : 1;
    }
    *headers = h2o_mem_alloc_pool(pool, (cap + 1) * sizeof **headers);
    *n = 0;
    json_object_foreach(map, key, value)
    {
        size_t k = json_is_array(value) ? json_array_size(value) : 1;
        for (size_t i = 0; i < k; i++) {
            json_t *v = json_is_array(value) ? json_array_get(value, i) : value;
            if (!json_is_string(v)) {
                *bad_name = key;
                return -EINVAL;
            }
            Qraft__Header *h = h2o_mem_alloc_pool(pool, sizeof *h);
            qraft__header__init(h);
            h->name = qr_rest_pool_str(pool, key, strlen(key));
            h->value = qr_rest_pool_str(pool, json_string_value(v),
                                        json_string_length(v));
            (*headers)[(*n)++] = h;
        }
    }
    return 0;
}

/* Sets key to the bytes in base64. */
void qr_rest_set_b64(json_t *o, const char *key, ProtobufCBinaryData data)
{
    char *b64 = malloc(4 * ((data.len + 2) / 3) + 1);

    if (b64 == NULL) {
        return;
    }
    base64_encode(data.data, data.len, b64);
    json_object_set_new(o, key, qr_json_text(b64));
    free(b64);
}

/* Sets key (UTF-8 text) or key_b64 (base64) to the bytes. */
void qr_rest_set_body(json_t *o,
                      const char *key,
                      const char *key_b64,
                      ProtobufCBinaryData body)
{
    json_t *s = json_stringn((const char *)body.data, body.len);

    if (s != NULL) {
        json_object_set_new(o, key, s);
        return;
    }
    qr_rest_set_b64(o, key_b64, body);
}

void qr_rest_set_opt_string(json_t *o, const char *key, const char *value)
{
    if (value != NULL && value[0] != '\0') {
        json_object_set_new(o, key, qr_json_text(value));
    }
}

/* A page of a cursor-paged list: {key: items, "cursor"?: cursor} (no
 * cursor when the list ends here). Takes items; returns new or NULL. */
json_t *qr_rest_page_json(const char *key, json_t *items, const char *cursor)
{
    json_t *out = json_object();

    json_object_set_new(out, key, items);
    qr_rest_set_opt_string(out, "cursor", cursor);
    return out;
}

void qr_rest_set_labels(json_t *o, char **labels, size_t n)
{
    if (n == 0) {
        return;
    }
    json_t *all = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(all, qr_json_text(labels[i]));
    }
    json_object_set_new(o, "label", qr_json_text(labels[0]));
    json_object_set_new(o, "labels", all);
}

void qr_rest_set_flow_control(json_t *o,
                              const char *key,
                              uint32_t parallelism,
                              uint32_t rate,
                              uint64_t period_s)
{
    if (key[0] == '\0') {
        return;
    }
    json_object_set_new(o, "flowControlKey", qr_json_text(key));
    json_object_set_new(o, "parallelism", json_integer(parallelism));
    json_object_set_new(o, "rate", json_integer(rate));
    json_object_set_new(o, "period", json_integer((json_int_t)period_s));
}
