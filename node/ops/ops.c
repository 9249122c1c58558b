/* The operations layer's core (ops.h): submit, the dispatch table
 * {kind, operation, needs_leader, forward}, leader checks and NOT_LEADER,
 * admission (space), one request's op and its one answer, and the helpers
 * every operation answers and proposes with (ops_int.h). */
#include "ops/ops.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/addr.h"
#include "lib/logger.h"
#include "ops/ops_int.h"
#include "repl/command.h"

/* ------------------------------------------------------------------------ */
/* Ops and answers. */

static void op_unref(struct qr_op *op)
{
    if (--op->refs > 0) {
        return;
    }
    if (!op->answered) {
        /* Every path answers before it lets go (a face counts the request
         * pending until then: one never answered would hold its slot and
         * its connection for good). Should one not, the client still gets
         * an answer, and the log says it is a bug. */
        QR_ERROR("ops", "request %" PRIu64 " ended without an answer (a bug)",
                 op->id);
        qr_op_error(op, op->id, QRAFT__STATUS__INTERNAL,
                    "the node made no answer (a bug in qraft); the outcome "
                    "is unknown");
    }
    free(op);
}

void qr_ops_stamp(struct qr_ops *ops, Qraft__Response *resp, unsigned flags)
{
    /* Every answer says how far this node had applied (see qraft.proto):
     * a write answered here was applied at or below it. */
    resp->applied_index = qr_cluster_answer_index(ops->cluster);
    /* A node (a relay, a worker's results) waits to apply that much
     * itself: tell it the commit index now, not at the next heartbeat. */
    if ((flags & QR_OPS_FROM_NODE) &&
        resp->body_case != QRAFT__RESPONSE__BODY_HEARTBEAT &&
        resp->body_case != QRAFT__RESPONSE__BODY_READ_INDEX) {
        qr_cluster_push_commit(ops->cluster);
    }
}

const char *qr_ops_kind_name(Qraft__Request__BodyCase kind)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(
        &qraft__request__descriptor, (unsigned)kind);
    return f != NULL ? f->name : "unknown";
}

const char *qr_ops_status_name(Qraft__Status status)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
        &qraft__status__descriptor, status);
    return v != NULL ? v->name : "UNKNOWN";
}

/* The metrics of an answer: an RPC request's {kind, code}; a publish's
 * time from its arrival here, on the node that took it (a relayed one is
 * timed by the follower that relays it). */
static void count_answer(struct qr_op *op, Qraft__Status status)
{
    struct qr_metrics *m = op->ops->metrics;
    if (m == NULL) {
        return;
    }
    if ((op->flags & QR_OPS_RPC) != 0) {
        qr_metrics_count(&m->rpc, qr_ops_kind_name(op->kind),
                         qr_ops_status_name(status));
    }
    if (op->kind == QRAFT__REQUEST__BODY_PUBLISH &&
        status == QRAFT__STATUS__OK && (op->flags & QR_OPS_FROM_NODE) == 0) {
        qr_metrics_observe(&m->publish_seconds,
                           qr_metrics_now_us() - op->start_us);
    }
}

void qr_op_reply(struct qr_op *op, const Qraft__Response *resp)
{
    if (op->answered) {
        return;
    }
    op->answered = true;
    count_answer(op, resp->status);
    if (op->traced) {
        qr_trace_end_publish(op->ops->trace, &op->span,
                             resp->status == QRAFT__STATUS__OK,
                             qr_ops_status_name(resp->status),
                             resp->body_case == QRAFT__RESPONSE__BODY_PUBLISH
                                 ? resp->publish->message_id
                                 : NULL);
    }
    Qraft__Response stamped = *resp;
    qr_ops_stamp(op->ops, &stamped, op->flags);
    if (op->reply_cb != NULL) {
        op->reply_cb(op->reply_data, &stamped);
    }
}

void qr_op_error(struct qr_op *op,
                 uint64_t id,
                 Qraft__Status status,
                 const char *fmt,
                 ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    Qraft__Response resp = QRAFT__RESPONSE__INIT;
    resp.id = id;
    resp.status = status;
    resp.error = msg;
    qr_op_reply(op, &resp);
}

Qraft__Status qr_op_status_of(int rv)
{
    switch (rv) {
        case 0:
            return QRAFT__STATUS__OK;
        case QR_EBADREQ:
            return QRAFT__STATUS__BAD_REQUEST;
        case QR_ETOOLARGE:
            return QRAFT__STATUS__TOO_LARGE;
        case QR_ENOTFOUND:
            return QRAFT__STATUS__NOT_FOUND;
        case QR_ENOTLEADER:
            return QRAFT__STATUS__NOT_LEADER;
        case QR_EUNAVAIL:
            return QRAFT__STATUS__UNAVAILABLE;
        case QR_ECONFLICT:
            return QRAFT__STATUS__CONFLICT;
        case QR_EUNKNOWN:
            return QRAFT__STATUS__UNKNOWN_OUTCOME;
        case QR_EAUTH:
            return QRAFT__STATUS__UNAUTHORIZED;
        case QR_ENOSPACE:
            return QRAFT__STATUS__INSUFFICIENT_STORAGE;
        default:
            return QRAFT__STATUS__INTERNAL;
    }
}

void qr_op_not_leader(struct qr_op *op, uint64_t id)
{
    struct qr_ops *ops = op->ops;
    char leader_rpc[QR_ADDR_MAX];
    uint64_t leader_id = 0;
    qr_cluster_leader(ops->cluster, &leader_id, NULL);
    Qraft__Response resp = QRAFT__RESPONSE__INIT;
    resp.id = id;
    if (leader_id == 0) {
        resp.status = QRAFT__STATUS__UNAVAILABLE;
        resp.error =
            "no leader at the moment (an election, or this node is "
            "cut off from the others); not sent, nothing was "
            "applied: safe to retry shortly";
    } else if (leader_id == ops->config->id) {
        resp.status = QRAFT__STATUS__UNAVAILABLE;
        resp.error = "the leader is catching up; retry shortly";
    } else {
        /* The leader's advertised address, when it has been applied here;
         * else the client tries its other endpoints. */
        resp.status = QRAFT__STATUS__NOT_LEADER;
        resp.error = "not the leader";
        resp.leader_id = leader_id;
        qr_shards_node_addrs(ops->shards, leader_id, leader_rpc, NULL);
        resp.leader_rpc = leader_rpc;
    }
    qr_op_reply(op, &resp);
}

/* ------------------------------------------------------------------------ */
/* Calls and proposals. */

struct qr_call *qr_call_new(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_call *call = calloc(1, sizeof *call);
    if (call == NULL) {
        return NULL;
    }
    call->op = op;
    call->id = req->id;
    call->kind = req->body_case;
    op->refs++;
    return call;
}

void qr_call_free(struct qr_call *call)
{
    struct qr_op *op = call->op;
    for (size_t i = 0; i < call->n_items; i++) {
        if (call->item_ids != NULL) {
            free(call->item_ids[i]);
        }
        if (call->items != NULL) {
            free(call->items[i].error);
            free(call->items[i].workflow_run_id);
        }
    }
    free(call->cursor);
    for (size_t i = 0; call->published != NULL && i < call->n_items; i++) {
        free(call->published[i].message_id);
        free(call->published[i].url);
        free(call->published[i].endpoint_name);
    }
    free(call->items);
    free(call->item_ptrs);
    free(call->item_ids);
    free(call->published);
    free(call->published_ptrs);
    free(call->topic_name);
    free(call->fan_error);
    if (call->notify != NULL) {
        protobuf_c_message_free_unpacked(&call->notify->base, NULL);
    }
    if (call->member_add != NULL) {
        protobuf_c_message_free_unpacked(&call->member_add->base, NULL);
    }
    free(call);
    op_unref(op);
}

void qr_op_refused(struct qr_op *op, uint64_t id, int rv, const char *why)
{
    if (rv == QR_ENOTLEADER) {
        qr_op_not_leader(op, id);
    } else {
        qr_op_error(op, id, qr_op_status_of(rv), "%s", why);
    }
}

bool qr_call_propose(struct qr_op *op,
                     struct qr_call *call,
                     struct qr_packed *cmd,
                     qr_cluster_propose_cb cb)
{
    int rv = qr_cluster_propose(op->ops->cluster, cmd, cb, call);
    if (rv == 0) {
        return true;
    }
    free(cmd->data);
    qr_op_refused(op, call->id, rv,
                  rv == QR_EUNAVAIL ? "overloaded or shutting down; retry "
                                      "shortly"
                                    : qr_strerror(rv));
    qr_call_free(call);
    return false;
}

void qr_op_propose(struct qr_op *op,
                   const Qraft__Request *req,
                   const Qraft__Command *cmd,
                   qr_cluster_propose_cb cb)
{
    char why[256];
    if (qr_cluster_check_level(op->ops->cluster, cmd, why, sizeof why) != 0) {
        qr_op_error(op, req->id, QRAFT__STATUS__UNAVAILABLE, "%s", why);
        return;
    }
    struct qr_packed packed;
    struct qr_call *call = qr_call_new(op, req);
    if (call == NULL || qr_command_pack(cmd, &packed) != 0) {
        qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
        if (call != NULL) {
            qr_call_free(call);
        }
        return;
    }
    qr_call_propose(op, call, &packed, cb);
}

bool qr_call_applied_ok(struct qr_call *call,
                        int status,
                        const struct qr_apply_result *res)
{
    if (status == 0 && res->status == 0) {
        return true;
    }
    if (status == 0) {
        qr_op_error(call->op, call->id, qr_op_status_of(res->status), "%s",
                    res->error);
    } else {
        qr_op_error(call->op, call->id, qr_op_status_of(status), "%s",
                    qr_strerror(status));
    }
    return false;
}

void qr_op_ok(struct qr_op *op, uint64_t id)
{
    Qraft__Response resp = QRAFT__RESPONSE__INIT;
    resp.id = id;
    qr_op_reply(op, &resp);
}

static void on_applied_ok(void *data,
                          int status,
                          const struct qr_apply_result *res)
{
    struct qr_call *call = data;
    if (qr_call_applied_ok(call, status, res)) {
        qr_op_ok(call->op, call->id);
    }
    qr_call_free(call);
}

void qr_op_propose_ok(struct qr_op *op,
                      const Qraft__Request *req,
                      const Qraft__Command *cmd)
{
    qr_op_propose(op, req, cmd, on_applied_ok);
}

void qr_op_store_error(struct qr_op *op, uint64_t id, int rv)
{
    if (rv == QR_ECORRUPT) {
        qr_op_error(op, id, QRAFT__STATUS__INTERNAL, "%s",
                    qr_store_errmsg(op->ops->store));
        return;
    }
    qr_op_error(op, id, QRAFT__STATUS__INTERNAL, "reading the store: %s",
                qr_strerror(rv));
}

void qr_op_read_error(struct qr_op *op,
                      uint64_t id,
                      int rv,
                      const char *kind,
                      const char *name)
{
    if (rv == QR_ENOTFOUND) {
        qr_op_error(op, id, QRAFT__STATUS__NOT_FOUND, "%s %.64s not found",
                    kind, name);
        return;
    }
    qr_op_store_error(op, id, rv);
}

/* ------------------------------------------------------------------------ */
/* Record reads. */

ProtobufCMessage *qr_ops_copy_pb(const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len > 0 ? len : 1);
    if (buf == NULL) {
        return NULL;
    }
    protobuf_c_message_pack(m, buf);
    ProtobufCMessage *copy =
        protobuf_c_message_unpack(m->descriptor, NULL, len, buf);
    free(buf);
    return copy;
}

int qr_pb_list_add(struct qr_pb_list *l, const ProtobufCMessage *m)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        ProtobufCMessage **items = realloc(l->items, cap * sizeof *items);
        if (items == NULL) {
            l->rv = -ENOMEM;
            return 1;
        }
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n] = qr_ops_copy_pb(m);
    if (l->items[l->n] == NULL) {
        l->rv = -ENOMEM;
        return 1;
    }
    l->n++;
    return 0;
}

int qr_pb_list_status(const struct qr_pb_list *l, int rv)
{
    return rv == 0 || rv == 1 ? l->rv : rv;
}

void qr_pb_list_free(struct qr_pb_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        protobuf_c_message_free_unpacked(l->items[i], NULL);
    }
    free(l->items);
}

/* ------------------------------------------------------------------------ */
/* The dispatch table. */

struct route {
    Qraft__Request__BodyCase kind;
    const char *name;
    qr_op_fn handler;
    bool needs_leader; /* writes: only the serving leader proposes */
    /* A follower forwards it to the leader (client writes); peer traffic
     * is for the leader itself and is never forwarded. */
    bool forward;
};

static const struct route routes[] = {
    /* kind, name, handler, needs_leader, forward */
    {QRAFT__REQUEST__BODY_PUBLISH, "publish", qr_op_publish, true, true},
    {QRAFT__REQUEST__BODY_GET, "get", qr_op_get, false, false},
    {QRAFT__REQUEST__BODY_CANCEL, "cancel", qr_op_cancel, true, true},
    {QRAFT__REQUEST__BODY_WORKFLOW_RUN, "workflow run", qr_op_workflow_run,
     false, false},
    {QRAFT__REQUEST__BODY_WORKFLOW_END, "workflow end", qr_op_workflow_end,
     true, true},
    {QRAFT__REQUEST__BODY_WAIT, "wait", qr_op_wait, true, true},
    /* Reads the waiters where it proposes: on the leader. */
    {QRAFT__REQUEST__BODY_NOTIFY, "notify", qr_op_notify, true, true},
    {QRAFT__REQUEST__BODY_WAITERS, "waiters", qr_op_waiters, false, false},
    {QRAFT__REQUEST__BODY_WORKFLOW_DLQ, "workflow dlq", qr_op_workflow_dlq,
     true, true},
    {QRAFT__REQUEST__BODY_WORKFLOW_LOGS, "workflow logs", qr_op_workflow_logs,
     false, false},
    {QRAFT__REQUEST__BODY_LIST, "list", qr_op_list, false, false},
    {QRAFT__REQUEST__BODY_DLQ_LIST, "dlq list", qr_op_list, false, false},
    {QRAFT__REQUEST__BODY_DLQ_REPLAY, "dlq replay", qr_op_dlq_replay, true,
     true},
    {QRAFT__REQUEST__BODY_DLQ_DELETE, "dlq delete", qr_op_dlq_delete, true,
     true},
    {QRAFT__REQUEST__BODY_CANCEL_MANY, "cancel many", qr_op_cancel_many, true,
     true},
    {QRAFT__REQUEST__BODY_CANCEL_COUNT, "cancel count", qr_op_cancel_count,
     false, false},
    {QRAFT__REQUEST__BODY_EVENTS, "events", qr_op_events, false, false},
    {QRAFT__REQUEST__BODY_STATUS, "status", qr_op_status, false, false},
    {QRAFT__REQUEST__BODY_FLOW_CONTROL_UPDATE, "flow control update",
     qr_op_flow_control_update, true, true},
    {QRAFT__REQUEST__BODY_FLOW_CONTROL_READ, "flow control read",
     qr_op_flow_control_read, false, false},
    {QRAFT__REQUEST__BODY_QUEUE_UPSERT, "queue upsert", qr_op_queue_upsert,
     true, true},
    {QRAFT__REQUEST__BODY_QUEUE_PAUSE, "queue pause", qr_op_queue_pause, true,
     true},
    {QRAFT__REQUEST__BODY_QUEUE_DELETE, "queue delete", qr_op_queue_delete,
     true, true},
    {QRAFT__REQUEST__BODY_QUEUE_GET, "queue get", qr_op_queue_read, false,
     false},
    {QRAFT__REQUEST__BODY_QUEUE_LIST, "queue list", qr_op_queue_read, false,
     false},
    /* Reading keys is local; rotating checks for the leader itself. */
    {QRAFT__REQUEST__BODY_KEYS, "keys", qr_op_keys, false, false},
    /* An add waits for the new node to catch up, longer than a relay may
     * wait: the client goes to the leader itself. */
    {QRAFT__REQUEST__BODY_MEMBER_ADD, "add", qr_op_membership, true, false},
    {QRAFT__REQUEST__BODY_MEMBER_REMOVE, "remove", qr_op_membership, true,
     true},
    /* Not forwarded: the leader changes, so a relay's peer connection would
     * move away before the answer; the client goes to the leader. */
    {QRAFT__REQUEST__BODY_TRANSFER, "transfer", qr_op_membership, true, false},
    {QRAFT__REQUEST__BODY_SCHEDULE_UPSERT, "schedule upsert",
     qr_op_schedule_upsert, true, true},
    {QRAFT__REQUEST__BODY_SCHEDULE_GET, "schedule get", qr_op_schedule_read,
     false, false},
    {QRAFT__REQUEST__BODY_SCHEDULE_LIST, "schedule list", qr_op_schedule_read,
     false, false},
    {QRAFT__REQUEST__BODY_SCHEDULE_DELETE, "schedule delete",
     qr_op_schedule_delete, true, true},
    {QRAFT__REQUEST__BODY_SCHEDULE_PAUSE, "schedule pause",
     qr_op_schedule_pause, true, true},
    {QRAFT__REQUEST__BODY_GROUP_CHANGE, "group change", qr_op_group_change,
     true, true},
    {QRAFT__REQUEST__BODY_GROUP_GET, "group get", qr_op_group_get, false,
     false},
    {QRAFT__REQUEST__BODY_GROUP_LIST, "group list", qr_op_group_list, false,
     false},
    /* Peer traffic, for the leader itself. */
    {QRAFT__REQUEST__BODY_HEARTBEAT, "heartbeat", qr_op_heartbeat, true, false},
    {QRAFT__REQUEST__BODY_RESULTS, "results", qr_op_results, true, false},
    {QRAFT__REQUEST__BODY_READ_INDEX, "read index", qr_op_read_index, true,
     false},
    /* Any node answers: the leader asks one it is about to add. */
    {QRAFT__REQUEST__BODY_MEMBER_PROBE, "membership probe", qr_op_member_probe,
     false, false},
};

static const struct route *find_route(Qraft__Request__BodyCase kind)
{
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (routes[i].kind == kind) {
            return &routes[i];
        }
    }
    return NULL;
}

void qr_op_run(struct qr_op *op, const Qraft__Request *req)
{
    find_route(req->body_case)->handler(op, req);
}

bool qr_ops_is_peer_request(Qraft__Request__BodyCase kind)
{
    return kind == QRAFT__REQUEST__BODY_HEARTBEAT ||
           kind == QRAFT__REQUEST__BODY_RESULTS ||
           kind == QRAFT__REQUEST__BODY_READ_INDEX ||
           kind == QRAFT__REQUEST__BODY_MEMBER_PROBE;
}

bool qr_ops_answer_is_small(Qraft__Request__BodyCase kind)
{
    if (kind == QRAFT__REQUEST__BODY_PUBLISH) {
        return true; /* the hot kind: no walk of the table */
    }
    const struct route *r = find_route(kind);
    return qr_ops_is_peer_request(kind) || (r != NULL && r->needs_leader);
}

static void parked_watch(struct qr_ops *ops, uint64_t leader_id);

/* Each loop iteration: answers what waits on a leader that is gone
 * (forward.c, reads.c), and goes on with writes that waited for one. */
static void on_leader_watch(uv_check_t *h)
{
    struct qr_ops *ops = h->data;
    uint64_t leader_id = 0;
    qr_cluster_leader(ops->cluster, &leader_id, NULL);
    /* Relays are looked at when the leader changes (or some were left). */
    if (!LIST_EMPTY(&ops->relays) &&
        (leader_id != ops->watch_leader || ops->relays_left)) {
        qr_ops_relays_sweep(ops, leader_id);
    }
    ops->watch_leader = leader_id;
    qr_ops_reads_watch(ops, leader_id);
    if (ops->parked_head != NULL) {
        parked_watch(ops, leader_id);
    }
}

/* Requests that add data: refused while space is low (node/admit.h), on
 * the node that takes them and again on the leader. Reads, cancels, deletes,
 * replays, pauses and membership changes always pass: they are how an
 * operator frees space. */
static bool adds_data(Qraft__Request__BodyCase kind)
{
    return kind == QRAFT__REQUEST__BODY_PUBLISH ||
           kind == QRAFT__REQUEST__BODY_QUEUE_UPSERT ||
           kind == QRAFT__REQUEST__BODY_SCHEDULE_UPSERT ||
           kind == QRAFT__REQUEST__BODY_GROUP_CHANGE;
}

int qr_ops_check_space(struct qr_ops *ops, char *why, size_t why_size)
{
    if (ops->admit == NULL) {
        return 0;
    }
    uint64_t pending =
        ops->cluster->queued_bytes + ops->cluster->inflight_bytes;
    int rv =
        qr_admit_check(ops->admit, uv_now(ops->loop), pending, why, why_size);
    if (rv == 0 && qr_shards_space_short(ops->shards, why, why_size)) {
        qr_admit_refused(ops->admit, uv_now(ops->loop), why);
        rv = QR_ENOSPACE;
    }
    return rv;
}

/* Answers INSUFFICIENT_STORAGE and returns false when space is low. */
static bool admit(struct qr_op *op, const Qraft__Request *req)
{
    char why[QR_OPS_SPACE_WHY_BYTES];
    if (!adds_data(req->body_case) ||
        qr_ops_check_space(op->ops, why, sizeof why) == 0) {
        return true;
    }
    qr_op_error(op, req->id, QRAFT__STATUS__INSUFFICIENT_STORAGE, "%s", why);
    return false;
}

/* ------------------------------------------------------------------------ */
/* Writes that wait for a leader. Around an election a write may find no
 * leader to go to: none is known yet, the one known has not advertised
 * its RPC address (a young cluster), or this node has just been elected
 * and has not applied its first barrier. Answering such a write "no
 * leader" sends its client to another node, maybe the old leader, paused
 * or cut off, where it waits for its own timeout (docs/chaos.md,
 * "Publish unavailability per fault"). So the write waits here until it
 * can go on (handled here once this node serves, forwarded once another
 * leader's address is known) or PARK_ELECTIONS election timeouts have
 * passed (then the answer it would have had). */
#define PARK_ELECTIONS 3

struct qr_parked_write {
    struct qr_call *call; /* holds the op */
    Qraft__Request *req;  /* owned copy */
    uint64_t deadline_ms; /* uv_now */
    struct qr_parked_write *next;
};

/* Whether a write that may be forwarded has nowhere to go yet: no leader,
 * this node elected but not serving, or a leader whose address this node
 * has not applied. */
static bool no_way_yet(struct qr_ops *ops, uint64_t leader_id)
{
    if (leader_id == 0) {
        return true;
    }
    if (leader_id == ops->config->id) {
        return !qr_cluster_serving(ops->cluster);
    }
    char rpc[QR_ADDR_MAX];
    qr_shards_node_addrs(ops->shards, leader_id, rpc, NULL);
    return rpc[0] == '\0';
}

static void parked_free(struct qr_parked_write *w)
{
    protobuf_c_message_free_unpacked(&w->req->base, NULL);
    qr_call_free(w->call);
    free(w);
}

/* Holds req (borrowed; copied) on op; false when out of memory. */
static bool park_write(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_ops *ops = op->ops;
    struct qr_parked_write *w = calloc(1, sizeof *w);
    if (w == NULL) {
        return false;
    }
    w->req = (Qraft__Request *)qr_ops_copy_pb(&req->base);
    w->call = w->req != NULL ? qr_call_new(op, req) : NULL;
    if (w->call == NULL) {
        if (w->req != NULL) {
            protobuf_c_message_free_unpacked(&w->req->base, NULL);
        }
        free(w);
        return false;
    }
    w->deadline_ms = uv_now(ops->loop) + (uint64_t)PARK_ELECTIONS *
                                             ops->config->election_timeout_ms;
    if (ops->parked_tail != NULL) {
        ops->parked_tail->next = w;
    } else {
        ops->parked_head = w;
    }
    ops->parked_tail = w;
    ops->n_parked++;
    return true;
}

/* Each loop iteration while writes wait: once this node serves as leader,
 * or knows another leader, they go on as they came; past their deadline,
 * or when the node closes, they are answered. */
static void parked_watch(struct qr_ops *ops, uint64_t leader_id)
{
    bool serving = qr_cluster_serving(ops->cluster);
    bool elsewhere = leader_id != 0 && leader_id != ops->config->id &&
                     !no_way_yet(ops, leader_id);
    uint64_t now = uv_now(ops->loop);
    struct qr_parked_write **pp = &ops->parked_head;
    struct qr_parked_write *prev = NULL;
    while (*pp != NULL) {
        struct qr_parked_write *w = *pp;
        struct qr_op *op = w->call->op;
        if (ops->closing) {
            qr_op_error(op, w->req->id, QRAFT__STATUS__UNAVAILABLE,
                        "shutting down; nothing was applied");
        } else if (serving) {
            find_route(w->req->body_case)->handler(op, w->req);
        } else if (elsewhere) {
            if (!qr_op_forward(op, w->req)) {
                qr_op_not_leader(op, w->req->id);
            }
        } else if (now >= w->deadline_ms) {
            qr_op_not_leader(op, w->req->id);
        } else {
            prev = w;
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        if (ops->parked_tail == w) {
            ops->parked_tail = prev;
        }
        parked_free(w);
    }
}

/* Routes one decoded request (borrowed) to its handler, which answers on
 * op now or later. as_peer: it carried the peer token. */
static void dispatch(struct qr_op *op, Qraft__Request *req, bool as_peer)
{
    struct qr_ops *ops = op->ops;
    const struct route *route = find_route(req->body_case);
    if (route == NULL) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                    "unknown request kind %d", (int)req->body_case);
        return;
    }
    if (qr_ops_is_peer_request(req->body_case) && !as_peer) {
        qr_op_error(op, req->id, QRAFT__STATUS__UNAUTHORIZED,
                    "unauthorized: %s is a node-to-node request and needs the "
                    "peer token",
                    route->name);
        return;
    }
    if (qr_ops_reads_replica(req) && !qr_cluster_is_member(ops->cluster)) {
        qr_op_error(op, req->id, QRAFT__STATUS__UNAVAILABLE,
                    "this node is not a member of the cluster (removed, or "
                    "not added yet): its replica is not current; ask a member");
        return;
    }
    if (!admit(op, req)) {
        return;
    }
    if (route->needs_leader && !qr_cluster_serving(ops->cluster)) {
        uint64_t leader_id = 0;
        qr_cluster_leader(ops->cluster, &leader_id, NULL);
        /* A forwarded write waits only on the leader it was sent to (this
         * node, elected, not serving yet): never forwarded twice. */
        bool may_wait =
            as_peer ? leader_id == ops->config->id : no_way_yet(ops, leader_id);
        if (route->forward && may_wait && park_write(op, req)) {
            return; /* parked_watch goes on with it */
        }
        if (!route->forward || !qr_op_forward(op, req)) {
            qr_op_not_leader(op, req->id);
        }
        return;
    }
    if (qr_ops_is_linear_read(req)) {
        qr_op_hold_read(op, req, false);
        return;
    }
    route->handler(op, req);
}

int qr_ops_submit(struct qr_ops *ops,
                  const Qraft__Request *req,
                  unsigned flags,
                  qr_ops_reply_cb cb,
                  void *data)
{
    if (ops->closing) {
        return QR_ECANCELED;
    }
    struct qr_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        return -ENOMEM;
    }
    op->ops = ops;
    op->refs = 1;
    op->flags = flags;
    op->id = req->id;
    op->kind = req->body_case;
    op->start_us = ops->metrics != NULL ? qr_metrics_now_us() : 0;
    op->reply_cb = cb;
    op->reply_data = data;
    ops->n_requests++;
    /* A publish taken here, with tracing on, gets its span, and goes on
     * (proposed, forwarded or parked: each copies it) carrying the span's
     * traceparent instead of the client's, which is its parent. With
     * tracing off the client's goes nowhere: not into the log (a client's
     * text of any length), not onto the message. One a follower forwarded
     * carries the follower's span already. */
    Qraft__PublishRequest *traced = NULL;
    char *client_parent = NULL;
    char span_parent[QR_TRACEPARENT_BYTES] = "";
    if (req->body_case == QRAFT__REQUEST__BODY_PUBLISH &&
        (flags & QR_OPS_FROM_NODE) == 0) {
        traced = req->publish;
        client_parent = traced->traceparent;
        if (ops->trace != NULL) {
            op->traced = true;
            qr_trace_begin(&op->span, traced->traceparent);
            qr_traceparent_format(&op->span.ctx, span_parent);
        }
        traced->traceparent = span_parent;
    }
    /* Only forwarding needs it mutable (qr_peer_call); it is not changed
     * (but for the traceparent, put back here). */
    dispatch(op, (Qraft__Request *)req, (flags & QR_OPS_PEER) != 0);
    if (traced != NULL) {
        traced->traceparent = client_parent;
    }
    op_unref(op); /* calls in progress hold their own references */
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Life cycle. */

int qr_ops_init(struct qr_ops *ops,
                uv_loop_t *loop,
                const struct qr_config *cfg,
                struct qr_cluster *cluster,
                struct qr_store *store,
                struct qr_shards *shards)
{
    memset(ops, 0, sizeof *ops);
    ops->loop = loop;
    ops->config = cfg;
    ops->cluster = cluster;
    ops->store = store;
    ops->shards = shards;
    int rv = uv_check_init(loop, &ops->leader_watch);
    if (rv != 0) {
        return rv;
    }
    ops->leader_watch.data = ops;
    uv_check_start(&ops->leader_watch, on_leader_watch);
    return 0;
}

static void on_watch_close(uv_handle_t *h)
{
    struct qr_ops *ops = h->data;
    if (ops->close_cb != NULL) {
        ops->close_cb(ops);
    }
}

void qr_ops_close(struct qr_ops *ops, qr_ops_close_cb cb)
{
    if (ops->closing) {
        return;
    }
    ops->closing = true;
    ops->close_cb = cb;
    parked_watch(ops, 0); /* answers every parked write */
    uv_check_stop(&ops->leader_watch);
    uv_close((uv_handle_t *)&ops->leader_watch, on_watch_close);
}
