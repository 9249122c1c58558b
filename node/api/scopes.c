/* The scope table (scopes.h). */
#include "api/scopes.h"

#include <string.h>

#include "qraft.pb-c.h"

#define P QR_SCOPE_PUBLISH
#define R QR_SCOPE_READ
#define A QR_SCOPE_ADMIN

/* One row: REST (method and route pattern) or RPC (kind, method NULL). The
 * rule of thumb: reading anything but the signing keys is read; what sends
 * messages, or changes the queues, schedules, topics and workflows an
 * application uses, is publish; signing keys, membership, DLQ deletion and
 * flow-control overrides (operator actions) are admin. */
struct row {
    const char *method; /* REST: "GET", ...; "*": any; NULL: an RPC kind */
    const char *what;   /* REST: the route's pattern; RPC: the kind's name */
    int kind;           /* RPC: its Qraft__Request__BodyCase */
    unsigned scope;
};

/* clang-format off */
static const struct row table[] = {
    /* REST, in the route table's order. */
    {"POST",   "/v2/publish/{*}", 0, P},
    {"POST",   "/v2/enqueue/{*}", 0, P},
    {"POST",   "/v2/batch", 0, P},
    {"DELETE", "/v2/messages", 0, P},
    {"GET",    "/v2/events", 0, R},
    {"GET",    "/v2/logs", 0, R},
    {"GET",    "/v2/messages/{id}", 0, R},
    {"DELETE", "/v2/messages/{id}", 0, P},
    {"POST",   "/v2/queues", 0, P},
    {"GET",    "/v2/queues", 0, R},
    {"GET",    "/v2/flowControl", 0, R},
    {"POST",   "/v2/flowControl/{id}/pause", 0, A},
    {"POST",   "/v2/flowControl/{id}/resume", 0, A},
    {"POST",   "/v2/flowControl/{id}/pin", 0, A},
    {"POST",   "/v2/flowControl/{id}/unpin", 0, A},
    {"POST",   "/v2/flowControl/{id}/resetRate", 0, A},
    {"GET",    "/v2/flowControl/{id}", 0, R},
    {"GET",    "/v2/globalParallelism", 0, R},
    {"POST",   "/v2/queues/{queue}/pause", 0, P},
    {"POST",   "/v2/queues/{queue}/resume", 0, P},
    {"GET",    "/v2/queues/{queue}", 0, R},
    {"DELETE", "/v2/queues/{queue}", 0, P},
    {"DELETE", "/v2/workflows/runs", 0, P},
    {"GET",    "/v2/workflows/runs/{id}", 0, R},
    {"DELETE", "/v2/workflows/runs/{id}", 0, P},
    {"DELETE", "/v2/workflows/dlq", 0, A},
    {"POST",   "/v2/workflows/dlq/callback/{id}", 0, P},
    {"POST",   "/v2/workflows/dlq/resume", 0, P},
    {"POST",   "/v2/workflows/dlq/restart", 0, P},
    /* The URL is the secret (docs/workflow.md). */
    {"*",      "/v2/workflows/hooks/{*}", 0, 0},
    {"POST",   "/v2/wait/{id}", 0, P},
    {"POST",   "/v2/notify/{*}", 0, P},
    {"GET",    "/v2/waiters/{id}", 0, R},
    {"GET",    "/v2/workflows/events", 0, R},
    {"GET",    "/v2/workflows/logs", 0, R},
    {"GET",    "/v2/keys", 0, A},
    {"POST",   "/v2/keys/rotate", 0, A},
    {"POST",   "/v2/rotate", 0, A},
    {"GET",    "/v2/schedules", 0, R},
    {"POST",   "/v2/schedules", 0, P},
    {"GET",    "/v2/schedules/", 0, R},
    {"POST",   "/v2/schedules/", 0, P},
    {"POST",   "/v2/schedules/{url}", 0, P},
    {"GET",    "/v2/schedules/{id}", 0, R},
    {"DELETE", "/v2/schedules/{id}", 0, P},
    {"POST",   "/v2/schedules/{id}", 0, P},
    {"PATCH",  "/v2/schedules/{id}/pause", 0, P},
    {"POST",   "/v2/schedules/{id}/pause", 0, P},
    {"PATCH",  "/v2/schedules/{id}/resume", 0, P},
    {"POST",   "/v2/schedules/{id}/resume", 0, P},
    {"POST",   "/v2/schedules/{*}", 0, P},
    {"POST",   "/v2/dlq/retry", 0, P},
    {"POST",   "/v2/dlq/retry/{id}", 0, P},
    {"GET",    "/v2/dlq", 0, R},
    {"DELETE", "/v2/dlq", 0, A},
    {"GET",    "/v2/dlq/{id}", 0, R},
    {"DELETE", "/v2/dlq/{id}", 0, A},
    {"GET",    "/v2/qraft/cluster", 0, R},
    {"GET",    "/v2/qraft/cron", 0, R},
    {"GET",    "/v2/topics", 0, R},
    {"POST",   "/v2/topics/{id}/endpoints", 0, P},
    {"DELETE", "/v2/topics/{id}/endpoints", 0, P},
    {"GET",    "/v2/topics/{id}", 0, R},
    {"DELETE", "/v2/topics/{id}", 0, P},

    /* RPC, by Request.body field. */
    {NULL, "publish", QRAFT__REQUEST__BODY_PUBLISH, P},
    {NULL, "get", QRAFT__REQUEST__BODY_GET, R},
    {NULL, "cancel", QRAFT__REQUEST__BODY_CANCEL, P},
    {NULL, "list", QRAFT__REQUEST__BODY_LIST, R},
    {NULL, "dlq_list", QRAFT__REQUEST__BODY_DLQ_LIST, R},
    {NULL, "dlq_replay", QRAFT__REQUEST__BODY_DLQ_REPLAY, P},
    {NULL, "dlq_delete", QRAFT__REQUEST__BODY_DLQ_DELETE, A},
    {NULL, "status", QRAFT__REQUEST__BODY_STATUS, R},
    {NULL, "keys", QRAFT__REQUEST__BODY_KEYS, A},
    {NULL, "member_add", QRAFT__REQUEST__BODY_MEMBER_ADD, A},
    {NULL, "member_remove", QRAFT__REQUEST__BODY_MEMBER_REMOVE, A},
    {NULL, "transfer", QRAFT__REQUEST__BODY_TRANSFER, A},
    {NULL, "events", QRAFT__REQUEST__BODY_EVENTS, R},
    {NULL, "cancel_many", QRAFT__REQUEST__BODY_CANCEL_MANY, P},
    {NULL, "cancel_count", QRAFT__REQUEST__BODY_CANCEL_COUNT, R},
    {NULL, "workflow_run", QRAFT__REQUEST__BODY_WORKFLOW_RUN, R},
    {NULL, "workflow_end", QRAFT__REQUEST__BODY_WORKFLOW_END, P},
    {NULL, "wait", QRAFT__REQUEST__BODY_WAIT, P},
    {NULL, "notify", QRAFT__REQUEST__BODY_NOTIFY, P},
    {NULL, "waiters", QRAFT__REQUEST__BODY_WAITERS, R},
    {NULL, "workflow_dlq", QRAFT__REQUEST__BODY_WORKFLOW_DLQ, P},
    {NULL, "workflow_logs", QRAFT__REQUEST__BODY_WORKFLOW_LOGS, R},
    {NULL, "flow_control_update", QRAFT__REQUEST__BODY_FLOW_CONTROL_UPDATE, A},
    {NULL, "flow_control_read", QRAFT__REQUEST__BODY_FLOW_CONTROL_READ, R},
    {NULL, "queue_upsert", QRAFT__REQUEST__BODY_QUEUE_UPSERT, P},
    {NULL, "queue_delete", QRAFT__REQUEST__BODY_QUEUE_DELETE, P},
    {NULL, "queue_pause", QRAFT__REQUEST__BODY_QUEUE_PAUSE, P},
    {NULL, "queue_get", QRAFT__REQUEST__BODY_QUEUE_GET, R},
    {NULL, "queue_list", QRAFT__REQUEST__BODY_QUEUE_LIST, R},
    {NULL, "schedule_upsert", QRAFT__REQUEST__BODY_SCHEDULE_UPSERT, P},
    {NULL, "schedule_get", QRAFT__REQUEST__BODY_SCHEDULE_GET, R},
    {NULL, "schedule_list", QRAFT__REQUEST__BODY_SCHEDULE_LIST, R},
    {NULL, "schedule_delete", QRAFT__REQUEST__BODY_SCHEDULE_DELETE, P},
    {NULL, "schedule_pause", QRAFT__REQUEST__BODY_SCHEDULE_PAUSE, P},
    {NULL, "group_change", QRAFT__REQUEST__BODY_GROUP_CHANGE, P},
    {NULL, "group_get", QRAFT__REQUEST__BODY_GROUP_GET, R},
    {NULL, "group_list", QRAFT__REQUEST__BODY_GROUP_LIST, R},
    {NULL, "heartbeat", QRAFT__REQUEST__BODY_HEARTBEAT, QR_SCOPE_PEER},
    {NULL, "results", QRAFT__REQUEST__BODY_RESULTS, QR_SCOPE_PEER},
    {NULL, "read_index", QRAFT__REQUEST__BODY_READ_INDEX, QR_SCOPE_PEER},
    {NULL, "member_probe", QRAFT__REQUEST__BODY_MEMBER_PROBE, QR_SCOPE_PEER},
};
/* clang-format on */

unsigned qr_scopes_rest(const char *method, const char *pattern)
{
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (table[i].method != NULL && strcmp(table[i].what, pattern) == 0 &&
            (strcmp(table[i].method, method) == 0 ||
             strcmp(table[i].method, "*") == 0)) {
            return table[i].scope;
        }
    }
    return QR_SCOPES_UNKNOWN;
}

unsigned qr_scopes_rpc(int kind)
{
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (table[i].method == NULL && table[i].kind == kind) {
            return table[i].scope;
        }
    }
    return QR_SCOPES_UNKNOWN;
}

const char *qr_scopes_rpc_name(int kind)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(
        &qraft__request__descriptor, (unsigned)kind);

    return f != NULL ? f->name : "unknown";
}

int qr_scopes_print_rpc(FILE *out)
{
    const ProtobufCMessageDescriptor *d = &qraft__request__descriptor;
    int missing = 0;

    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) == 0) {
            continue;
        }
        unsigned scope = qr_scopes_rpc((int)f->id);
        missing += scope == QR_SCOPES_UNKNOWN;
        fprintf(out, "rpc %s %s %u\n", f->name,
                scope == QR_SCOPES_UNKNOWN ? "missing"
                                           : qr_tokens_scope_name(scope),
                f->id);
    }
    return missing;
}
