#include "config_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "lib/err.h"

/* A sequence's items joined with commas: at most this long. */
#define JOINED_BYTES 4096

static unsigned line_of(const yaml_node_t *node)
{
    return (unsigned)node->start_mark.line + 1;
}

static const char *scalar_text(const yaml_node_t *node)
{
    return (const char *)node->data.scalar.value;
}

/* The items of a sequence (every one a scalar without a comma) joined with
 * commas into out[JOINED_BYTES]. */
static int join_sequence(yaml_document_t *doc,
                         const yaml_node_t *seq,
                         char *out,
                         char *reason)
{
    size_t len = 0;
    out[0] = '\0';
    for (yaml_node_item_t *it = seq->data.sequence.items.start;
         it < seq->data.sequence.items.top; it++) {
        const yaml_node_t *item = yaml_document_get_node(doc, *it);
        if (item == NULL || item->type != YAML_SCALAR_NODE) {
            snprintf(reason, QR_ERRMSG_BYTES,
                     "a list item on line %u is not a plain value",
                     item != NULL ? line_of(item) : line_of(seq));
            return QR_EBADREQ;
        }
        const char *text = scalar_text(item);
        if (strchr(text, ',') != NULL) {
            snprintf(reason, QR_ERRMSG_BYTES,
                     "list item '%.64s' on line %u holds a comma", text,
                     line_of(item));
            return QR_EBADREQ;
        }
        int n = snprintf(out + len, JOINED_BYTES - len, "%s%s",
                         len > 0 ? "," : "", text);
        if (n < 0 || (size_t)n >= JOINED_BYTES - len) {
            snprintf(reason, QR_ERRMSG_BYTES, "the list is over %d bytes",
                     JOINED_BYTES - 1);
            return QR_EBADREQ;
        }
        len += (size_t)n;
    }
    return 0;
}

/* Whether the key of pair i was a key of an earlier pair; *line: where. */
static bool seen_before(yaml_document_t *doc,
                        const yaml_node_pair_t *first,
                        const yaml_node_pair_t *pair,
                        const char *key,
                        unsigned *line)
{
    for (const yaml_node_pair_t *p = first; p < pair; p++) {
        const yaml_node_t *k = yaml_document_get_node(doc, p->key);
        if (k != NULL && k->type == YAML_SCALAR_NODE &&
            strcmp(scalar_text(k), key) == 0) {
            *line = line_of(k);
            return true;
        }
    }
    return false;
}

/* Hands each pair of the root mapping to cb. */
static int walk_mapping(const char *path,
                        yaml_document_t *doc,
                        const yaml_node_t *root,
                        qr_config_file_cb cb,
                        void *arg,
                        char *errmsg)
{
    char reason[QR_ERRMSG_BYTES];
    char joined[JOINED_BYTES];
    const yaml_node_pair_t *first = root->data.mapping.pairs.start;
    for (const yaml_node_pair_t *p = first; p < root->data.mapping.pairs.top;
         p++) {
        const yaml_node_t *k = yaml_document_get_node(doc, p->key);
        const yaml_node_t *v = yaml_document_get_node(doc, p->value);
        if (k == NULL || v == NULL) {
            snprintf(errmsg, QR_ERRMSG_BYTES, "%s: a broken YAML mapping",
                     path);
            return QR_EBADREQ;
        }
        if (k->type != YAML_SCALAR_NODE) {
            snprintf(errmsg, QR_ERRMSG_BYTES,
                     "%s:%u: a key must be a setting's name, not a list or "
                     "mapping",
                     path, line_of(k));
            return QR_EBADREQ;
        }
        const char *key = scalar_text(k);
        unsigned earlier;
        if (seen_before(doc, first, p, key, &earlier)) {
            snprintf(errmsg, QR_ERRMSG_BYTES,
                     "%s:%u: %.64s: given twice (first on line %u)", path,
                     line_of(k), key, earlier);
            return QR_EBADREQ;
        }
        struct qr_config_file_entry e = {.key = key, .line = line_of(k)};
        int rv = 0;
        reason[0] = '\0';
        if (v->type == YAML_SCALAR_NODE) {
            e.value = scalar_text(v);
            e.plain = v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        } else if (v->type == YAML_SEQUENCE_NODE) {
            rv = join_sequence(doc, v, joined, reason);
            e.value = joined;
            e.sequence = true;
        } else {
            snprintf(reason, QR_ERRMSG_BYTES,
                     "a mapping is not a value (a string, number, true or "
                     "false, or a list)");
            rv = QR_EBADREQ;
        }
        if (rv == 0) {
            rv = cb(arg, &e, reason);
        }
        if (rv != 0) {
            snprintf(errmsg, QR_ERRMSG_BYTES, "%s:%u: %.64s: %s", path, e.line,
                     key, reason);
            return rv;
        }
    }
    return 0;
}

/* A parser's error, with its line, into errmsg. */
static int parse_error(const char *path,
                       const yaml_parser_t *parser,
                       char *errmsg)
{
    snprintf(errmsg, QR_ERRMSG_BYTES, "%s:%zu: not valid YAML: %s%s%s", path,
             parser->problem_mark.line + 1,
             parser->problem != NULL ? parser->problem : "unknown error",
             parser->context != NULL ? " " : "",
             parser->context != NULL ? parser->context : "");
    return QR_EBADREQ;
}

int qr_config_file_read(const char *path,
                        qr_config_file_cb cb,
                        void *arg,
                        char *errmsg)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        int err = errno;
        snprintf(errmsg, QR_ERRMSG_BYTES, "%s: cannot read: %s", path,
                 strerror(err));
        return -err;
    }
    yaml_parser_t parser;
    yaml_document_t doc;
    int rv = QR_EBADREQ;
    if (!yaml_parser_initialize(&parser)) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "%s: out of memory", path);
        rv = -ENOMEM;
        goto err_after_open;
    }
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &doc)) {
        rv = parse_error(path, &parser, errmsg);
        goto err_after_parser;
    }
    const yaml_node_t *root = yaml_document_get_root_node(&doc);
    bool had_root = root != NULL;
    if (root == NULL) {
        rv = 0; /* an empty file, or comments only */
    } else if (root->type != YAML_MAPPING_NODE) {
        snprintf(errmsg, QR_ERRMSG_BYTES,
                 "%s:%u: the file must be a mapping of settings (key: value "
                 "lines), not a %s",
                 path, line_of(root),
                 root->type == YAML_SEQUENCE_NODE ? "list" : "single value");
    } else {
        rv = walk_mapping(path, &doc, root, cb, arg, errmsg);
    }
    yaml_document_delete(&doc);
    if (rv == 0 && had_root) {
        /* A second document ("---" and more) would be silently ignored. */
        if (!yaml_parser_load(&parser, &doc)) {
            rv = parse_error(path, &parser, errmsg);
        } else {
            if (yaml_document_get_root_node(&doc) != NULL) {
                snprintf(errmsg, QR_ERRMSG_BYTES,
                         "%s:%zu: a second YAML document: the file holds "
                         "one mapping of settings",
                         path, (size_t)doc.start_mark.line + 1);
                rv = QR_EBADREQ;
            }
            yaml_document_delete(&doc);
        }
    }
err_after_parser:
    yaml_parser_delete(&parser);
err_after_open:
    fclose(f);
    return rv;
}
