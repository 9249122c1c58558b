#include "repl/command.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "lib/hash.h"

/* Tag of qraft.Entry field 3 (commands), wire type 2 (length-delimited). */
#define ENTRY_COMMANDS_TAG 0x1Au
/* Tags of qraft.Entry fields 1 (format) and 2 (proposed_at_ms), varints. */
#define ENTRY_FORMAT_TAG 0x08u
#define ENTRY_PROPOSED_AT_TAG 0x10u

bool qr_command_is_word(const char *s, const char *punct)
{
    if (*s == '\0') {
        return false;
    }
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || strchr(punct, ch))) {
            return false;
        }
    }
    return true;
}

/* Queue, URL group and endpoint names: [A-Za-z0-9._-]+ */
bool qr_command_is_name(const char *s)
{
    return qr_command_is_word(s, "._-");
}

void qr_command_message_id(char out[QR_ID_BYTES],
                           uint64_t ms,
                           uint64_t node_id,
                           uint32_t seq)
{
    snprintf(out, QR_ID_BYTES, "msg_%012" PRIx64 "%04" PRIx64 "%08" PRIx32,
             (uint64_t)(ms & 0xffffffffffffu), (uint64_t)(node_id & 0xffffu),
             seq);
}

/* The content hash covers what is delivered: destination, method, body and
 * the forwarded headers (Content-Type included), in order. */
static int content_key(const Qraft__PublishRequest *req, char **out)
{
    size_t n_parts = 3 + 2 * req->n_headers;
    struct qr_hash_part *parts = calloc(n_parts, sizeof *parts);
    if (parts == NULL) {
        return -ENOMEM;
    }
    const char *method = req->method[0] != '\0' ? req->method : "POST";
    parts[0] = (struct qr_hash_part){req->url, strlen(req->url)};
    parts[1] = (struct qr_hash_part){method, strlen(method)};
    parts[2] = (struct qr_hash_part){req->body.data, req->body.len};
    for (size_t i = 0; i < req->n_headers; i++) {
        const Qraft__Header *h = req->headers[i];
        parts[3 + 2 * i] = (struct qr_hash_part){h->name, strlen(h->name)};
        parts[4 + 2 * i] = (struct qr_hash_part){h->value, strlen(h->value)};
    }
    char hex[QR_SHA256_HEX_BYTES];
    int rv = qr_hash_sha256_parts_hex(parts, n_parts, hex);
    free(parts);
    if (rv != 0) {
        return rv;
    }
    if (asprintf(out, "%s%s", QR_DEDUP_CONTENT_PREFIX, hex) < 0) {
        return -ENOMEM;
    }
    return 0;
}

/* Replaces *key (heap) by its URL-group member form: one endpoint's
 * dedup record never answers for another endpoint of the group. */
static int endpoint_key(const Qraft__PublishRequest *req, char **key)
{
    struct qr_hash_part parts[3] = {
        {*key, strlen(*key)},
        {req->topic_name, strlen(req->topic_name)},
        {req->url, strlen(req->url)},
    };
    char hex[QR_SHA256_HEX_BYTES];
    char *out = NULL;
    int rv = qr_hash_sha256_parts_hex(parts, 3, hex);
    if (rv != 0) {
        return rv;
    }
    if (asprintf(&out, "%s%s", QR_DEDUP_ENDPOINT_PREFIX, hex) < 0) {
        return -ENOMEM;
    }
    free(*key);
    *key = out;
    return 0;
}

int qr_command_dedup_keys(const Qraft__PublishRequest *req,
                          char *keys[QR_DEDUP_MAX_KEYS],
                          size_t *n)
{
    size_t n_keys = 0;
    int rv = 0;

    if (req->dedup_id[0] != '\0') {
        if (asprintf(&keys[n_keys], "%s%s", QR_DEDUP_ID_PREFIX, req->dedup_id) <
            0) {
            rv = -ENOMEM;
            goto out;
        }
        n_keys++;
    }
    if (req->content_dedup) {
        rv = content_key(req, &keys[n_keys]);
        if (rv != 0) {
            goto out;
        }
        n_keys++;
    }
    if (req->idempotency_key[0] != '\0') {
        if (asprintf(&keys[n_keys], "%s%s", QR_DEDUP_REQUEST_PREFIX,
                     req->idempotency_key) < 0) {
            rv = -ENOMEM;
            goto out;
        }
        n_keys++;
    }
    /* One endpoint's copy of a URL-group publish dedups on its own. */
    if (req->topic_name[0] != '\0' && req->url[0] != '\0') {
        for (size_t i = 0; i < n_keys && rv == 0; i++) {
            rv = endpoint_key(req, &keys[i]);
        }
    }
out:
    if (rv != 0) {
        qr_command_dedup_keys_free(keys, n_keys);
        n_keys = 0;
    }
    *n = n_keys;
    return rv;
}

void qr_command_dedup_keys_free(char *keys[QR_DEDUP_MAX_KEYS], size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(keys[i]);
        keys[i] = NULL;
    }
}

int qr_command_pack_publish(const Qraft__PublishRequest *req,
                            const char *message_id,
                            const struct qr_limits *limits,
                            struct qr_packed *out)
{
    char *keys[QR_DEDUP_MAX_KEYS] = {NULL, NULL, NULL};
    size_t n_keys = 0;
    int rv = qr_command_dedup_keys(req, keys, &n_keys);
    if (rv != 0) {
        return rv;
    }

    Qraft__Publish publish = QRAFT__PUBLISH__INIT;
    publish.message_id = (char *)message_id;
    publish.request = (Qraft__PublishRequest *)req;
    publish.n_dedup_keys = n_keys;
    publish.dedup_keys = keys;
    publish.dedup_window_ms = limits->dedup_window_ms;
    publish.max_run_history_bytes = limits->max_run_history_bytes;
    publish.default_retries = limits->default_retries;
    publish.default_timeout_ms = limits->default_timeout_ms;

    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_PUBLISH;
    cmd.publish = &publish;
    rv = qr_command_pack(&cmd, out);
    qr_command_dedup_keys_free(keys, n_keys);
    return rv;
}

uint32_t qr_command_level(const Qraft__Command *cmd)
{
    switch (cmd->body_case) {
        case QRAFT__COMMAND__BODY_PUBLISH: {
            const Qraft__PublishRequest *req =
                cmd->publish != NULL ? cmd->publish->request : NULL;
            /* Apply below these levels ignores the redaction, workflow or
             * queue. */
            if (req != NULL && req->redact != NULL) {
                return QR_FEATURE_LEVEL_REDACT;
            }
            if (req != NULL && req->workflow != NULL) {
                return QR_FEATURE_LEVEL_WORKFLOW;
            }
            if (req != NULL && req->queue[0] != '\0') {
                return QR_FEATURE_LEVEL_QUEUES;
            }
            return 1;
        }
        case QRAFT__COMMAND__BODY_WORKFLOW_END:
        case QRAFT__COMMAND__BODY_WAIT_CREATE:
        case QRAFT__COMMAND__BODY_NOTIFY:
        case QRAFT__COMMAND__BODY_WAIT_TIMEOUT:
        case QRAFT__COMMAND__BODY_WORKFLOW_RESUME:
            return QR_FEATURE_LEVEL_WORKFLOW;
        case QRAFT__COMMAND__BODY_FLOW_CONTROL_UPDATE:
            return QR_FEATURE_LEVEL_FLOW_CONTROL;
        case QRAFT__COMMAND__BODY_SCHEDULE_UPSERT:
            /* Its ticks publish with the template's redaction. */
            return cmd->schedule_upsert != NULL &&
                           cmd->schedule_upsert->schedule != NULL &&
                           cmd->schedule_upsert->schedule->request != NULL &&
                           cmd->schedule_upsert->schedule->request->redact !=
                               NULL
                       ? QR_FEATURE_LEVEL_REDACT
                       : 2;
        case QRAFT__COMMAND__BODY_CANCEL:
        case QRAFT__COMMAND__BODY_DLQ_REPLAY:
        case QRAFT__COMMAND__BODY_DLQ_DELETE:
        case QRAFT__COMMAND__BODY_SET_SIGNING_KEYS:
        case QRAFT__COMMAND__BODY_DELIVERY_RESULTS:
        case QRAFT__COMMAND__BODY_PRUNE:
        case QRAFT__COMMAND__BODY_SET_NODE_INFO:
        case QRAFT__COMMAND__BODY_ASSIGN_SHARDS:
        case QRAFT__COMMAND__BODY_SET_FEATURE_LEVEL:
            return 1;
        default:
            return 2;
    }
}

void qr_command_init_one(Qraft__Command *cmd,
                         Qraft__Command__BodyCase body_case,
                         const ProtobufCMessage *body)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(
        &qraft__command__descriptor, (unsigned)body_case);
    assert(f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE);
    assert(f->descriptor == body->descriptor);
    *cmd = (Qraft__Command)QRAFT__COMMAND__INIT;
    cmd->body_case = body_case;
    /* The member is a pointer to the body's struct, whose first member is
     * body: the same address, and every struct pointer has one
     * representation (C11 6.2.5). */
    memcpy((char *)cmd + f->offset, &body, sizeof body);
}

int qr_command_pack(const Qraft__Command *cmd, struct qr_packed *out)
{
    size_t len = qraft__command__get_packed_size(cmd);
    uint8_t *data = malloc(len > 0 ? len : 1);
    if (data == NULL) {
        return -ENOMEM;
    }
    qraft__command__pack(cmd, data);
    out->data = data;
    out->len = len;
    return 0;
}

static size_t varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

static size_t payload_size(uint64_t proposed_at_ms,
                           const struct qr_packed *cmds,
                           size_t n)
{
    size_t size =
        1 + varint_size(QR_COMMAND_FORMAT) + 1 + varint_size(proposed_at_ms);
    for (size_t i = 0; i < n; i++) {
        size += 1 + varint_size(cmds[i].len) + cmds[i].len;
    }
    return size;
}

size_t qr_command_entry_size(uint64_t proposed_at_ms,
                             const struct qr_packed *cmds,
                             size_t n)
{
    size_t size = QR_ENTRY_HEADER_BYTES + payload_size(proposed_at_ms, cmds, n);
    return (size + 7) & ~(size_t)7;
}

static void put_u32_be(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_u32_be(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

void qr_command_entry_write(uint64_t proposed_at_ms,
                            const struct qr_packed *cmds,
                            size_t n,
                            uint8_t *out,
                            size_t size)
{
    size_t payload = payload_size(proposed_at_ms, cmds, n);
    memset(out, 0, size);
    put_u32_be(out, QR_ENTRY_MAGIC);
    put_u32_be(out + 4, (uint32_t)payload);
    uint8_t *p = out + QR_ENTRY_HEADER_BYTES;
    *p++ = ENTRY_FORMAT_TAG;
    p = put_varint(p, QR_COMMAND_FORMAT);
    *p++ = ENTRY_PROPOSED_AT_TAG;
    p = put_varint(p, proposed_at_ms);
    for (size_t i = 0; i < n; i++) {
        *p++ = ENTRY_COMMANDS_TAG;
        p = put_varint(p, cmds[i].len);
        memcpy(p, cmds[i].data, cmds[i].len);
        p += cmds[i].len;
    }
}

int qr_command_decode_entry(const void *buf, size_t len, Qraft__Entry **out)
{
    const uint8_t *p = buf;
    *out = NULL;
    if (len < QR_ENTRY_HEADER_BYTES || get_u32_be(p) != QR_ENTRY_MAGIC) {
        return QR_ECORRUPT;
    }
    uint32_t payload = get_u32_be(p + 4);
    if (payload > len - QR_ENTRY_HEADER_BYTES) {
        return QR_ECORRUPT;
    }
    Qraft__Entry *e =
        qraft__entry__unpack(NULL, payload, p + QR_ENTRY_HEADER_BYTES);
    if (e == NULL) {
        return QR_ECORRUPT;
    }
    if (e->format > QR_COMMAND_FORMAT) {
        qraft__entry__free_unpacked(e, NULL);
        return QR_EPROTO;
    }
    *out = e;
    return 0;
}
