#include "repl/redact.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/hash.h"

bool qr_redact_any(const Qraft__Redact *r)
{
    return r != NULL && (r->body || r->all_headers || r->n_headers > 0);
}

bool qr_redact_header(const Qraft__Redact *r, const char *name)
{
    if (r == NULL) {
        return false;
    }
    if (r->all_headers) {
        return true;
    }
    for (size_t i = 0; i < r->n_headers; i++) {
        if (strcasecmp(r->headers[i], name) == 0) {
            return true;
        }
    }
    return false;
}

bool qr_redact_is_placeholder(const void *data, size_t len)
{
    const size_t prefix = sizeof QR_REDACT_PREFIX - 1;
    const char *s = data;
    if (len != QR_REDACT_PLACEHOLDER_BYTES - 1 ||
        memcmp(s, QR_REDACT_PREFIX, prefix) != 0) {
        return false;
    }
    for (size_t i = prefix; i < len; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return false;
        }
    }
    return true;
}

int qr_redact_placeholder(const void *data,
                          size_t len,
                          char out[QR_REDACT_PLACEHOLDER_BYTES])
{
    const size_t prefix = sizeof QR_REDACT_PREFIX - 1;
    if (qr_redact_is_placeholder(data, len)) {
        memcpy(out, data, len);
        out[len] = '\0';
        return 0;
    }
    memcpy(out, QR_REDACT_PREFIX, prefix);
    return qr_hash_sha256_hex(data, len, out + prefix);
}

int qr_redact_view(Qraft__Message *m)
{
    return qr_redact_view_parts(m->redact, m->headers, m->n_headers, &m->body);
}

int qr_redact_view_parts(const Qraft__Redact *r,
                         Qraft__Header **headers,
                         size_t n_headers,
                         ProtobufCBinaryData *body)
{
    if (!qr_redact_any(r)) {
        return 0;
    }
    char ph[QR_REDACT_PLACEHOLDER_BYTES];
    const ProtobufCFieldDescriptor *value_field =
        protobuf_c_message_descriptor_get_field_by_name(
            &qraft__header__descriptor, "value");
    for (size_t i = 0; i < n_headers; i++) {
        Qraft__Header *h = headers[i];
        if (!qr_redact_header(r, h->name)) {
            continue;
        }
        char *value = malloc(sizeof ph);
        if (value == NULL ||
            qr_redact_placeholder(h->value, strlen(h->value), value) != 0) {
            free(value);
            return -ENOMEM;
        }
        /* An empty value was not on the wire: it is the descriptor's
         * default, which free_unpacked never frees either. */
        if (h->value != value_field->default_value) {
            free(h->value);
        }
        h->value = value;
    }
    if (r->body && body->len > 0) {
        if (qr_redact_placeholder(body->data, body->len, ph) != 0) {
            return -ENOMEM;
        }
        uint8_t *data = (uint8_t *)strdup(ph);
        if (data == NULL) {
            return -ENOMEM;
        }
        free(body->data);
        body->data = data;
        body->len = strlen(ph);
    }
    return 0;
}

int qr_redact_drop(Qraft__Message *m, struct qr_redact_scratch *s)
{
    if (!qr_redact_any(m->redact)) {
        return 0;
    }
    size_t n = m->n_headers;
    s->ptrs = calloc(n > 0 ? n : 1, sizeof *s->ptrs);
    s->headers = calloc(n > 0 ? n : 1, sizeof *s->headers);
    s->values = calloc(n > 0 ? n : 1, QR_REDACT_PLACEHOLDER_BYTES);
    if (s->ptrs == NULL || s->headers == NULL || s->values == NULL) {
        qr_redact_scratch_free(s);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        s->headers[i] = *m->headers[i];
        s->ptrs[i] = &s->headers[i];
        if (!qr_redact_header(m->redact, m->headers[i]->name)) {
            continue;
        }
        char *value = s->values + i * QR_REDACT_PLACEHOLDER_BYTES;
        const char *old = m->headers[i]->value;
        if (qr_redact_placeholder(old, strlen(old), value) != 0) {
            qr_redact_scratch_free(s);
            return -ENOMEM;
        }
        s->headers[i].value = value;
    }
    if (m->redact->body && m->body.len > 0) {
        if (qr_redact_placeholder(m->body.data, m->body.len, s->body) != 0) {
            qr_redact_scratch_free(s);
            return -ENOMEM;
        }
        m->body.data = (uint8_t *)s->body;
        m->body.len = strlen(s->body);
    }
    m->headers = s->ptrs;
    return 0;
}

void qr_redact_scratch_free(struct qr_redact_scratch *s)
{
    free(s->ptrs);
    free(s->headers);
    free(s->values);
    s->ptrs = NULL;
    s->headers = NULL;
    s->values = NULL;
}
