/* The operations layer (ops.h): the dispatch table, one request's op and
 * its answer, leader checks, admission, and the handlers. */
#include "ops/ops.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deliver/sign.h"
#include "lib/addr.h"
#include "lib/clock.h"
#include "lib/logger.h"
#include "ops/filter.h"
#include "repl/check.h"
#include "repl/command.h"
#include "sched/cron.h"

/* Test builds only (qraftd-test-ack-before-commit, for the chaos suite's
 * proof that its checker catches a broken queue): a publish is answered as
 * soon as it is queued, before raft commits it. Never in qraftd. */
#ifdef QRAFT_TEST_ACK_BEFORE_COMMIT
#define ACK_BEFORE_COMMIT true
#else
#define ACK_BEFORE_COMMIT false
#endif

#define LIST_DEFAULT_LIMIT 100u
#define LIST_MAX_LIMIT 1000u
/* A page stops early once its messages reach this many bytes (bodies are up
 * to 16 MiB each): the cursor then continues where it stopped. */
#define LIST_MAX_PAGE_BYTES (8u * 1024u * 1024u)
#define EVENTS_PER_GET 100u
#define MAX_BULK_IDS 1000u

/* One submitted request: whom to answer, and how. Held by the submit and
 * by each call in progress; freed with the last reference. A request with
 * no socket is the normal case here, not a disguised connection. */
struct qr_op {
    struct qr_ops *ops;
    unsigned refs;  /* the submit itself + one per call in progress */
    unsigned flags; /* QR_OPS_* */
    bool answered;  /* one request, one answer */
    qr_ops_reply_cb reply_cb;
    void *reply_data;
};

/* A request whose answer comes later (it went through raft). */
struct qr_call {
    struct qr_op *op;
    uint64_t id;
    Qraft__Request__BodyCase kind;
    bool answered; /* test builds: answered before commit */
    /* Bulk calls (DLQ replay/delete): one proposal per id. */
    size_t n_items;
    size_t n_done;
    Qraft__ItemResult *items;
    Qraft__ItemResult **item_ptrs;
    char **item_ids;
    bool paged;   /* answer a BulkPageResponse with cursor */
    char *cursor; /* owned; NULL: none */
    /* URL-group publishes: one proposal per endpoint (n_items of them);
     * strings are heap (NULL packs as ""). The first failure answers. */
    Qraft__PublishedMessage *published;
    Qraft__PublishedMessage **published_ptrs;
    char *topic_name;
    int fan_status;
    char *fan_error;
    /* A write forwarded to relay_leader, in ops->relays until answered;
     * held: the leader's answer, waiting for this node to apply it. */
    struct qr_call *relay_prev, *relay_next;
    uint64_t relay_leader;
    bool relay_linked;
    bool relay_done; /* answered already (the leader went away) */
    struct held_answer *held;
};

typedef void (*handler_fn)(struct qr_op *op, const Qraft__Request *req);

struct route {
    Qraft__Request__BodyCase kind;
    const char *name;
    handler_fn handler;
    bool needs_leader; /* writes: only the serving leader proposes */
    /* A follower forwards it to the leader (client writes); peer traffic
     * is for the leader itself and is never forwarded. */
    bool forward;
};

/* ------------------------------------------------------------------------ */
/* Ops and answers. */

static void op_unref(struct qr_op *op)
{
    if (--op->refs > 0) {
        return;
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

/* Answers op with resp (borrowed), stamped; a second answer is dropped. */
static void qr_op_reply(struct qr_op *op, const Qraft__Response *resp)
{
    if (op->answered) {
        return;
    }
    op->answered = true;
    Qraft__Response stamped = *resp;
    qr_ops_stamp(op->ops, &stamped, op->flags);
    if (op->reply_cb != NULL) {
        op->reply_cb(op->reply_data, &stamped);
    }
}

static void qr_op_error(struct qr_op *op,
                        uint64_t id,
                        Qraft__Status status,
                        const char *fmt,
                        ...) __attribute__((format(printf, 4, 5)));

static void qr_op_error(struct qr_op *op,
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

/* Maps a node error onto the status a client acts on. */
static Qraft__Status qr_op_status(int rv)
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

static void qr_op_not_leader(struct qr_op *op, uint64_t id)
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

static struct qr_call *qr_call_new(struct qr_op *op, const Qraft__Request *req)
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

static void qr_call_free(struct qr_call *call)
{
    struct qr_op *op = call->op;
    for (size_t i = 0; i < call->n_items; i++) {
        if (call->item_ids != NULL) {
            free(call->item_ids[i]);
        }
        if (call->items != NULL) {
            free(call->items[i].error);
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
    free(call);
    op_unref(op);
}

/* ------------------------------------------------------------------------ */
/* Handlers. */

static void on_publish_done(void *data,
                            int status,
                            const struct qr_apply_result *res)
{
    struct qr_call *call = data;
    if (call->answered) {
        qr_call_free(call);
        return;
    }
    if (status == 0 && res->status != 0) {
        status = res->status;
    }
    if (status != 0) {
        qr_op_error(call->op, call->id, qr_op_status(status), "%s",
                    res != NULL && res->status != 0 ? res->error
                    : status == QR_EUNKNOWN
                        ? "outcome unknown (leadership changed); retry with "
                          "the same idempotency key"
                        : qr_strerror(status));
    } else {
        Qraft__PublishResponse pr = QRAFT__PUBLISH_RESPONSE__INIT;
        pr.message_id = (char *)res->message_id;
        pr.deduplicated = res->deduplicated;
        if (!res->deduplicated) {
            QR_METRICS_INC(call->op->ops->metrics, publishes);
        }
        Qraft__Response resp = QRAFT__RESPONSE__INIT;
        resp.id = call->id;
        resp.body_case = QRAFT__RESPONSE__BODY_PUBLISH;
        resp.publish = &pr;
        qr_op_reply(call->op, &resp);
    }
    qr_call_free(call);
}

/* Answers request id whose proposal (or membership change) was refused
 * before raft took it: rv QR_ENOTLEADER answers where the leader is
 * (send_not_leader), any other rv its status with why. */
static void qr_op_refused(struct qr_op *op,
                          uint64_t id,
                          int rv,
                          const char *why)
{
    if (rv == QR_ENOTLEADER) {
        qr_op_not_leader(op, id);
    } else {
        qr_op_error(op, id, qr_op_status(rv), "%s", why);
    }
}

/* Proposes one packed command for a call; answers the call on failure. */
static bool qr_call_propose(struct qr_op *op,
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

/* Packs cmd (borrowed) and proposes it for req; answers req itself when
 * that fails, else cb answers once the command is applied. */
static void qr_op_propose(struct qr_op *op,
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

/* The error half of every "answer once applied" callback: when the proposal
 * failed (status, see qr_cluster_propose_cb; res is NULL then) or apply
 * refused the command (res->status), answers the call with apply's own
 * message, else the status's text, and returns false. Returns true, having
 * answered nothing, when the command applied cleanly: the caller answers
 * success. Never frees the call. */
static bool qr_call_applied_ok(struct qr_call *call,
                               int status,
                               const struct qr_apply_result *res)
{
    if (status == 0 && res->status == 0) {
        return true;
    }
    if (status == 0) {
        qr_op_error(call->op, call->id, qr_op_status(res->status), "%s",
                    res->error);
    } else {
        qr_op_error(call->op, call->id, qr_op_status(status), "%s",
                    qr_strerror(status));
    }
    return false;
}

/* Answers request id with OK and no body. */
static void qr_op_ok(struct qr_op *op, uint64_t id)
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

/* The write path of commands whose answer has no body (queue, schedule and
 * url group changes): proposes cmd (borrowed) for req and answers OK once
 * it is applied, or the error (applied_ok). Answers req itself when the
 * proposal cannot be made. */
static void qr_op_propose_ok(struct qr_op *op,
                             const Qraft__Request *req,
                             const Qraft__Command *cmd)
{
    qr_op_propose(op, req, cmd, on_applied_ok);
}

/* Answers request id with a store read failure. A corrupt record is
 * named (the store's errmsg says which and what to do), never served. */
static void qr_op_store_error(struct qr_op *op, uint64_t id, int rv)
{
    if (rv == QR_ECORRUPT) {
        qr_op_error(op, id, QRAFT__STATUS__INTERNAL, "%s",
                    qr_store_errmsg(op->ops->store));
        return;
    }
    qr_op_error(op, id, QRAFT__STATUS__INTERNAL, "reading the store: %s",
                qr_strerror(rv));
}

/* A deep copy of any protobuf message (pack, then unpack): returns new
 * (free with protobuf_c_message_free_unpacked) or NULL. */
static ProtobufCMessage *qr_ops_copy_pb(const ProtobufCMessage *m)
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

/* Record reads (queues, schedules, url groups): deep copies taken in one
 * read transaction, so the answer outlives it. items[i] is a record of the
 * walked type (cast the array to it for the response). */
struct pb_list {
    ProtobufCMessage **items; /* owned, each owned */
    size_t n, cap;
    int rv; /* why the walk stopped early: -ENOMEM; 0 otherwise */
};

/* Appends a deep copy of m. Returns 0, or 1 (a store walk's "stop") with
 * l->rv set: callers of the walk then answer l->rv. */
static int pb_list_add(struct pb_list *l, const ProtobufCMessage *m)
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

/* The walk's outcome: rv from the store walk (1: a callback stopped it). */
static int pb_list_status(const struct pb_list *l, int rv)
{
    return rv == 0 || rv == 1 ? l->rv : rv;
}

static void pb_list_free(struct pb_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        protobuf_c_message_free_unpacked(l->items[i], NULL);
    }
    free(l->items);
}

/* Whether publishing into `queue` may go ahead: it exists, or one more
 * queue stays within the limit. Apply creates a missing queue
 * unconditionally, so two publishes racing into two new queues at the
 * limit can both pass (documented). Answers req itself when it may not. */
static bool queue_room(struct qr_op *op,
                       const Qraft__Request *req,
                       const char *queue)
{
    struct qr_ops *ops = op->ops;
    uint32_t max = ops->config->limits.max_queues;
    struct qr_store_txn *txn = NULL;
    Qraft__Queue *q = NULL;
    size_t n = 0;
    int rv = qr_store_txn_begin(ops->store, false, &txn);
    if (rv == 0) {
        rv = qr_store_queue_get(txn, queue, &q);
        if (rv == QR_ENOTFOUND) {
            rv = qr_store_queue_count(txn, &n);
        }
        qr_store_txn_abort(txn);
    }
    if (q != NULL) {
        qraft__queue__free_unpacked(q, NULL);
        return true;
    }
    if (rv != 0) {
        qr_op_store_error(op, req->id, rv);
        return false;
    }
    if (n >= max) {
        qr_op_error(op, req->id, QRAFT__STATUS__CONFLICT,
                    "too many queues (the limit is %" PRIu32 ")", max);
        return false;
    }
    return true;
}

/* A publish into a queue needs the cluster at the queues' feature level
 * (command.h) and room for the queue. True when p has no queue or may go
 * ahead; else answers req itself. */
static bool queue_ok(struct qr_op *op,
                     const Qraft__Request *req,
                     const Qraft__PublishRequest *p)
{
    char err[256];
    if (p->queue[0] == '\0') {
        return true;
    }
    Qraft__Publish level_probe = QRAFT__PUBLISH__INIT;
    Qraft__Command level_cmd = QRAFT__COMMAND__INIT;
    level_probe.request = (Qraft__PublishRequest *)p;
    level_cmd.body_case = QRAFT__COMMAND__BODY_PUBLISH;
    level_cmd.publish = &level_probe;
    int rv =
        qr_cluster_check_level(op->ops->cluster, &level_cmd, err, sizeof err);
    if (rv != 0) {
        qr_op_error(op, req->id, qr_op_status(rv), "%s", err);
        return false;
    }
    return queue_room(op, req, p->queue);
}

static void handle_group_publish(struct qr_op *op, const Qraft__Request *req);

static void handle_publish(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_ops *ops = op->ops;
    const Qraft__PublishRequest *p = req->publish;
    char err[256];
    if (p->topic_name[0] != '\0' || p->endpoint_name[0] != '\0') {
        handle_group_publish(op, req);
        return;
    }
    int rv = qr_command_check_publish(p, &ops->config->limits,
                                      qr_cluster_now_ms(ops->cluster), err,
                                      sizeof err);
    if (rv != 0) {
        qr_op_error(op, req->id, qr_op_status(rv), "%s", err);
        return;
    }
    if (!queue_ok(op, req, p)) {
        return;
    }
    char id[QR_ID_BYTES];
    qr_cluster_new_message_id(ops->cluster, id);
    struct qr_packed cmd;
    rv = qr_command_pack_publish(p, id, &ops->config->limits, &cmd);
    if (rv != 0) {
        qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL,
                    "packing the command: %s", qr_strerror(rv));
        return;
    }
    struct qr_call *call = qr_call_new(op, req);
    if (call == NULL) {
        free(cmd.data);
        qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
        return;
    }
    if (qr_call_propose(op, call, &cmd, on_publish_done) && ACK_BEFORE_COMMIT) {
        Qraft__PublishResponse pr = QRAFT__PUBLISH_RESPONSE__INIT;
        pr.message_id = id;
        Qraft__Response resp = QRAFT__RESPONSE__INIT;
        resp.id = req->id;
        resp.body_case = QRAFT__RESPONSE__BODY_PUBLISH;
        resp.publish = &pr;
        qr_op_reply(op, &resp);
        call->answered = true;
    }
}

/* Per-item context of a call with many proposals: the call and which
 * item. */
struct bulk_item {
    struct qr_call *call;
    size_t i;
};

/* ------------------------------------------------------------------------ */
/* URL groups. */

static void finish_fanout(struct qr_call *call)
{
    if (call->fan_status != 0) {
        qr_op_error(
            call->op, call->id, qr_op_status(call->fan_status), "%s",
            call->fan_error != NULL ? call->fan_error : "out of memory");
    } else {
        Qraft__PublishResponse pr = QRAFT__PUBLISH_RESPONSE__INIT;
        pr.n_messages = call->n_items;
        pr.messages = call->published_ptrs;
        pr.topic_name = call->topic_name;
        Qraft__Response resp = QRAFT__RESPONSE__INIT;
        resp.id = call->id;
        resp.body_case = QRAFT__RESPONSE__BODY_PUBLISH;
        resp.publish = &pr;
        qr_op_reply(call->op, &resp);
    }
    qr_call_free(call);
}

/* Keeps the first failure: it is what the client hears. */
static void fanout_fail(struct qr_call *call, int status, const char *why)
{
    if (call->fan_status == 0) {
        call->fan_status = status;
        call->fan_error = strdup(why);
    }
}

static void on_fanout_item_done(void *data,
                                int status,
                                const struct qr_apply_result *res)
{
    struct bulk_item *item = data;
    struct qr_call *call = item->call;
    Qraft__PublishedMessage *pm = &call->published[item->i];
    free(item);
    if (status == 0 && res->status != 0) {
        fanout_fail(call, res->status, res->error);
    } else if (status != 0) {
        fanout_fail(call, status,
                    status == QR_EUNKNOWN
                        ? "outcome unknown (leadership changed); retry with "
                          "a deduplication id"
                        : qr_strerror(status));
    } else {
        pm->message_id = strdup(res->message_id);
        pm->deduplicated = res->deduplicated;
    }
    if (++call->n_done == call->n_items) {
        finish_fanout(call);
    }
}

static int load_group(struct qr_ops *ops,
                      const char *name,
                      Qraft__UrlGroup **out)
{
    struct qr_store_txn *txn = NULL;
    int rv = qr_store_txn_begin(ops->store, false, &txn);
    if (rv == 0) {
        rv = qr_store_group_get(txn, name, out);
        qr_store_txn_abort(txn);
    }
    return rv;
}

/* A publish to a URL group: one message per endpoint of the group as this
 * leader has applied it, each with its own id, url and endpoint name, all
 * answered together once every one is applied. */
static void handle_group_publish(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_ops *ops = op->ops;
    const Qraft__PublishRequest *p = req->publish;
    uint64_t now_ms = qr_cluster_now_ms(ops->cluster);
    Qraft__UrlGroup *g = NULL;
    char err[256];

    if (p->url[0] != '\0' || p->endpoint_name[0] != '\0') {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST, "%s",
                    p->endpoint_name[0] != '\0'
                        ? "endpoint name is set by the server, not the client"
                        : "give a url or a url group name, not both");
        return;
    }
    int rv = qr_command_check_publish(p, &ops->config->limits, now_ms, err,
                                      sizeof err);
    if (rv == 0) {
        rv = load_group(ops, p->topic_name, &g);
        if (rv == QR_ENOTFOUND) {
            snprintf(err, sizeof err, "url group '%.64s' not found",
                     p->topic_name);
        } else if (rv != 0) {
            snprintf(err, sizeof err, "reading the store: %s", qr_strerror(rv));
        }
    }
    /* One copy per endpoint goes into the propose queue: refuse what could
     * not fit in half of it, rather than fail halfway through. */
    size_t total =
        rv == 0 ? g->n_endpoints * qraft__publish_request__get_packed_size(p)
                : 0;
    if (rv == 0 && total > ops->config->max_queued_bytes / 2) {
        rv = QR_ETOOLARGE;
        snprintf(err, sizeof err,
                 "a publish to url group '%.64s' (%zu endpoints) is %zu "
                 "bytes; the limit is %zu",
                 p->topic_name, g->n_endpoints, total,
                 ops->config->max_queued_bytes / 2);
    }
    /* Every copy is checked before anything is proposed. */
    for (size_t i = 0; rv == 0 && i < g->n_endpoints; i++) {
        Qraft__PublishRequest one = *p;
        one.url = g->endpoints[i]->url;
        one.endpoint_name = g->endpoints[i]->name;
        rv = qr_command_check_publish(&one, &ops->config->limits, now_ms, err,
                                      sizeof err);
    }
    if (rv == 0 && !queue_ok(op, req, p)) {
        qraft__url_group__free_unpacked(g, NULL);
        return;
    }
    struct qr_call *call = NULL;
    if (rv == 0) {
        call = qr_call_new(op, req);
        rv = -ENOMEM;
        snprintf(err, sizeof err, "out of memory");
    }
    if (call != NULL) {
        size_t n = g->n_endpoints;
        call->published = calloc(n, sizeof *call->published);
        call->published_ptrs = calloc(n, sizeof *call->published_ptrs);
        call->topic_name = strdup(p->topic_name);
        if (call->published != NULL && call->published_ptrs != NULL &&
            call->topic_name != NULL) {
            call->n_items = n;
            rv = 0;
        }
    }
    if (rv != 0) {
        qr_op_error(op, req->id, qr_op_status(rv), "%s", err);
        if (call != NULL) {
            qr_call_free(call);
        }
        if (g != NULL) {
            qraft__url_group__free_unpacked(g, NULL);
        }
        return;
    }
    for (size_t i = 0; i < call->n_items; i++) {
        Qraft__PublishedMessage *pm = &call->published[i];
        qraft__published_message__init(pm);
        call->published_ptrs[i] = pm;
        /* init points strings at protobuf-c's static "": ours are heap or
         * NULL, so call_free can free them. */
        pm->message_id = NULL;
        pm->url = strdup(g->endpoints[i]->url);
        pm->endpoint_name = strdup(g->endpoints[i]->name);
    }
    /* Proposals complete from the loop, never before this returns; the
     * ones that fail here are counted at once. */
    for (size_t i = 0; i < call->n_items; i++) {
        Qraft__PublishRequest one = *p;
        one.url = g->endpoints[i]->url;
        one.endpoint_name = g->endpoints[i]->name;
        char id[QR_ID_BYTES];
        qr_cluster_new_message_id(ops->cluster, id);
        struct qr_packed packed = {NULL, 0};
        struct bulk_item *item = malloc(sizeof *item);
        rv = item == NULL ? -ENOMEM
                          : qr_command_pack_publish(
                                &one, id, &ops->config->limits, &packed);
        if (rv == 0) {
            item->call = call;
            item->i = i;
            rv = qr_cluster_propose(ops->cluster, &packed, on_fanout_item_done,
                                    item);
        }
        if (rv != 0) {
            free(item);
            free(packed.data);
            fanout_fail(call, rv,
                        rv == QR_ENOTLEADER ? "not the leader any more"
                        : rv == QR_EUNAVAIL ? "overloaded or shutting down; "
                                              "retry shortly"
                                            : qr_strerror(rv));
            call->n_done++;
        }
    }
    qraft__url_group__free_unpacked(g, NULL);
    if (call->n_done == call->n_items) {
        finish_fanout(call);
    }
}

static void handle_group_change(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__GroupChangeRequest *gc = req->group_change;
    const struct qr_limits *l = &op->ops->config->limits;
    char err[256];
    int rv = qr_command_check_group_change(gc, l, err, sizeof err);
    if (rv != 0) {
        qr_op_error(op, req->id, qr_op_status(rv), "%s", err);
        return;
    }
    Qraft__GroupAddEndpoints add = QRAFT__GROUP_ADD_ENDPOINTS__INIT;
    Qraft__GroupRemoveEndpoints remove = QRAFT__GROUP_REMOVE_ENDPOINTS__INIT;
    Qraft__GroupDelete del = QRAFT__GROUP_DELETE__INIT;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    switch (gc->kind) {
        case QRAFT__GROUP_CHANGE_KIND__GROUP_ADD_ENDPOINTS:
            add.group = gc->name;
            add.n_endpoints = gc->n_endpoints;
            add.endpoints = gc->endpoints;
            add.max_endpoints = l->max_group_endpoints;
            cmd.body_case = QRAFT__COMMAND__BODY_GROUP_ADD_ENDPOINTS;
            cmd.group_add_endpoints = &add;
            break;
        case QRAFT__GROUP_CHANGE_KIND__GROUP_REMOVE_ENDPOINTS:
            remove.group = gc->name;
            remove.n_endpoints = gc->n_endpoints;
            remove.endpoints = gc->endpoints;
            cmd.body_case = QRAFT__COMMAND__BODY_GROUP_REMOVE_ENDPOINTS;
            cmd.group_remove_endpoints = &remove;
            break;
        default:
            del.group = gc->name;
            cmd.body_case = QRAFT__COMMAND__BODY_GROUP_DELETE;
            cmd.group_delete = &del;
            break;
    }
    qr_op_propose_ok(op, req, &cmd);
}

static void handle_group_get(struct qr_op *op, const Qraft__Request *req)
{
    Qraft__UrlGroup *g = NULL;
    int rv = load_group(op->ops, req->group_get->name, &g);
    if (rv == QR_ENOTFOUND || rv == QR_EBADREQ) {
        qr_op_error(op, req->id, QRAFT__STATUS__NOT_FOUND,
                    "url group '%.64s' not found", req->group_get->name);
        return;
    }
    if (rv != 0) {
        qr_op_store_error(op, req->id, rv);
        return;
    }
    Qraft__Response resp = QRAFT__RESPONSE__INIT;
    resp.id = req->id;
    resp.body_case = QRAFT__RESPONSE__BODY_GROUP;
    resp.group = g;
    qr_op_reply(op, &resp);
    qraft__url_group__free_unpacked(g, NULL);
}

static int collect_group(void *arg, const Qraft__UrlGroup *g)
{
    return pb_list_add(arg, &g->base);
}

static void handle_group_list(struct qr_op *op, const Qraft__Request *req)
{
    struct pb_list l = {0};
    struct qr_store_txn *txn = NULL;
    int rv = qr_store_txn_begin(op->ops->store, false, &txn);
    if (rv == 0) {
        rv = qr_store_group_list(txn, collect_group, &l);
        qr_store_txn_abort(txn);
    }
    rv = pb_list_status(&l, rv);
    if (rv != 0) {
        qr_op_store_error(op, req->id, rv);
    } else {
        Qraft__GroupListResponse gl = QRAFT__GROUP_LIST_RESPONSE__INIT;
        gl.n_groups = l.n;
        gl.groups = (Qraft__UrlGroup **)l.items;
        Qraft__Response resp = QRAFT__RESPONSE__INIT;
        resp.id = req->id;
        resp.body_case = QRAFT__RESPONSE__BODY_GROUP_LIST;
        resp.group_list = &gl;
        qr_op_reply(op, &resp);
    }
    pb_list_free(&l);
}

static void on_single_done(void *data,
                           int status,
                           const struct qr_apply_result *res)
{
    struct qr_call *call = data;
    if (qr_call_applied_ok(call, status, res)) {
        Qraft__CancelResponse cr = QRAFT__CANCEL_RESPONSE__INIT;
        Qraft__Response resp = QRAFT__RESPONSE__INIT;
        resp.id = call->id;
        resp.body_case = QRAFT__RESPONSE__BODY_CANCEL;
        resp.cancel = &cr;
        qr_op_reply(call->op, &resp);
    }
    qr_call_free(call);
}

static void handle_cancel(struct qr_op *op, const Qraft__Request *req)
{
    const char *id = req->cancel->message_id;
    if (!qr_check_message_id(id)) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                    "invalid message id: %s", QR_CHECK_MESSAGE_ID_RULE);
        return;
    }
    Qraft__Cancel c = QRAFT__CANCEL__INIT;
    c.message_id = (char *)id;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_CANCEL;
    cmd.cancel = &c;
    qr_op_propose(op, req, &cmd, on_single_done);
}

static void on_bulk_item_done(void *data,
                              int status,
                              const struct qr_apply_result *res);

static void finish_bulk(struct qr_call *call)
{
    Qraft__Response resp = QRAFT__RESPONSE__INIT;
    Qraft__BulkResponse br = QRAFT__BULK_RESPONSE__INIT;
    Qraft__BulkPageResponse bp = QRAFT__BULK_PAGE_RESPONSE__INIT;
    resp.id = call->id;
    if (call->paged) {
        bp.n_results = call->n_items;
        bp.results = call->item_ptrs;
        bp.cursor = call->cursor != NULL ? call->cursor : "";
        resp.body_case = QRAFT__RESPONSE__BODY_BULK_PAGE;
        resp.bulk_page = &bp;
    } else {
        br.n_results = call->n_items;
        br.results = call->item_ptrs;
        resp.body_case = QRAFT__RESPONSE__BODY_BULK;
        resp.bulk = &br;
    }
    qr_op_reply(call->op, &resp);
    qr_call_free(call);
}

static void set_item(struct qr_call *call,
                     size_t i,
                     int status,
                     const char *error)
{
    call->items[i].status = qr_op_status(status);
    free(call->items[i].error);
    /* NULL packs as "" (protobuf-c treats it as the zero value). */
    call->items[i].error = status != 0 ? strdup(error) : NULL;
    call->n_done++;
}

static void on_bulk_item_done(void *data,
                              int status,
                              const struct qr_apply_result *res)
{
    struct bulk_item *item = data;
    struct qr_call *call = item->call;
    size_t i = item->i;
    free(item);
    if (status == 0 && res->status != 0) {
        set_item(call, i, res->status, res->error);
    } else {
        set_item(call, i, status, qr_strerror(status));
    }
    if (call->n_done == call->n_items) {
        finish_bulk(call);
    }
}

/* What a bulk request does to each message: one command per id. */
enum bulk_kind { BULK_REPLAY, BULK_DELETE, BULK_CANCEL };

/* How a bulk request is answered: `paged` gives a BulkPageResponse with
 * `cursor` (borrowed; "": nothing more), else a BulkResponse. cursor is
 * NULL when the client gave the ids (then there must be some), set when
 * a filter selected them (then none is an empty answer). */
struct bulk_page {
    bool paged;
    const char *cursor;
};

static void handle_bulk(struct qr_op *op,
                        const Qraft__Request *req,
                        size_t n_ids,
                        char **ids,
                        enum bulk_kind kind,
                        const struct bulk_page *page)
{
    static const char *const names[] = {"dlq replay", "dlq delete", "cancel"};
    if (n_ids > MAX_BULK_IDS || (n_ids == 0 && page->cursor == NULL)) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                    "%s takes 1 to %u message ids", names[kind], MAX_BULK_IDS);
        return;
    }
    for (size_t i = 0; i < n_ids; i++) {
        if (!qr_check_message_id(ids[i])) {
            qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                        "%s: message id %zu of %zu is invalid: %s", names[kind],
                        i + 1, n_ids, QR_CHECK_MESSAGE_ID_RULE);
            return;
        }
    }
    struct qr_call *call = qr_call_new(op, req);
    if (call == NULL) {
        qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
        return;
    }
    call->paged = page->paged;
    call->cursor = page->cursor != NULL ? strdup(page->cursor) : NULL;
    call->items = calloc(n_ids + 1, sizeof *call->items);
    call->item_ptrs = calloc(n_ids + 1, sizeof *call->item_ptrs);
    call->item_ids = calloc(n_ids + 1, sizeof *call->item_ids);
    if (call->items == NULL || call->item_ptrs == NULL ||
        call->item_ids == NULL ||
        (page->cursor != NULL && call->cursor == NULL)) {
        qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
        qr_call_free(call);
        return;
    }
    call->n_items = n_ids;
    for (size_t i = 0; i < n_ids; i++) {
        qraft__item_result__init(&call->items[i]);
        call->item_ptrs[i] = &call->items[i];
        call->item_ids[i] = strdup(ids[i]); /* NULL packs as "" */
        call->items[i].message_id = call->item_ids[i];
        /* init points strings at protobuf-c's static "": ours are heap or
         * NULL, so call_free can free them. */
        call->items[i].error = NULL;
    }
    /* Every item is answered: proposed ones by their callback (never
     * before this function returns: proposals complete from the loop), the
     * others right here. */
    for (size_t i = 0; i < n_ids; i++) {
        Qraft__DlqReplay r = QRAFT__DLQ_REPLAY__INIT;
        Qraft__DlqDelete d = QRAFT__DLQ_DELETE__INIT;
        Qraft__Cancel c = QRAFT__CANCEL__INIT;
        Qraft__Command cmd = QRAFT__COMMAND__INIT;
        switch (kind) {
            case BULK_REPLAY:
                r.message_id = ids[i];
                cmd.body_case = QRAFT__COMMAND__BODY_DLQ_REPLAY;
                cmd.dlq_replay = &r;
                break;
            case BULK_DELETE:
                d.message_id = ids[i];
                cmd.body_case = QRAFT__COMMAND__BODY_DLQ_DELETE;
                cmd.dlq_delete = &d;
                break;
            case BULK_CANCEL:
                c.message_id = ids[i];
                cmd.body_case = QRAFT__COMMAND__BODY_CANCEL;
                cmd.cancel = &c;
                break;
        }
        struct qr_packed packed = {NULL, 0};
        struct bulk_item *item = malloc(sizeof *item);
        int rv = item == NULL ? -ENOMEM : qr_command_pack(&cmd, &packed);
        if (rv == 0) {
            item->call = call;
            item->i = i;
            rv = qr_cluster_propose(op->ops->cluster, &packed,
                                    on_bulk_item_done, item);
        }
        if (rv != 0) {
            free(item);
            free(packed.data);
            set_item(call, i, rv, qr_strerror(rv));
        }
    }
    if (call->n_done == call->n_items) {
        finish_bulk(call);
    }
}

/* The messages a bulk request selects by filter: at most max ids, in walk
 * order, and where the walk got to. */
struct selection {
    const Qraft__MessageFilter *filter;
    bool cancellable; /* only messages a Cancel still changes */
    char **ids;
    size_t n, max;
    bool more; /* a further match exists past the last id taken */
    uint64_t last_ms;
    char last_id[QR_ID_BYTES + 64];
    int rv;
};

static void selection_free(struct selection *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->ids[i]);
    }
    free(s->ids);
}

static int collect_matching(void *arg, const Qraft__Message *m)
{
    struct selection *s = arg;
    const Qraft__MessageFilter *f = s->filter;
    if (!s->cancellable && f->to_ms != 0 && m->dead_lettered_ms > f->to_ms) {
        return 1; /* the DLQ is walked oldest first: nothing later matches */
    }
    if (s->cancellable && m->state != QRAFT__MESSAGE_STATE__PENDING &&
        m->state != QRAFT__MESSAGE_STATE__RETRYING &&
        m->state != QRAFT__MESSAGE_STATE__QUEUED) {
        return 0;
    }
    if (!qr_filter_match(f, m)) {
        return 0;
    }
    if (s->n == s->max) {
        s->more = true;
        return 1;
    }
    s->ids[s->n] = strdup(m->id);
    if (s->ids[s->n] == NULL) {
        s->rv = -ENOMEM;
        return 1;
    }
    s->n++;
    s->last_ms = m->dead_lettered_ms;
    snprintf(s->last_id, sizeof s->last_id, "%s", m->id);
    return 0;
}

/* A paged DLQ bulk cursor: "<dead-lettered ms>:<bound ms>:<message id>",
 * a position that stays valid after the message left the DLQ, and the
 * first page's time: later pages leave out what was dead-lettered after
 * it, so a loop that replays until the cursor ends does end, even when
 * the replayed messages fail again at once. */
static int parse_dlq_position(const char *cursor,
                              uint64_t *ms,
                              uint64_t *bound_ms,
                              const char **id)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(cursor, &end, 10);
    if (errno != 0 || end == cursor || *end != ':') {
        return QR_EBADREQ;
    }
    const char *b = end + 1;
    unsigned long long bound = strtoull(b, &end, 10);
    if (errno != 0 || end == b || *end != ':' || end[1] == '\0') {
        return QR_EBADREQ;
    }
    *ms = v;
    *bound_ms = bound;
    *id = end + 1;
    return 0;
}

/* The older DLQ replay fields, folded into one filter (a shallow copy of
 * the request's own filter, when it has one). */
static void fold_replay_filter(const Qraft__DlqReplayRequest *r,
                               Qraft__MessageFilter *f)
{
    if (r->filter != NULL) {
        *f = *r->filter;
    } else {
        qraft__message_filter__init(f);
    }
    if (r->url_prefix[0] != '\0') {
        f->url_prefix = r->url_prefix;
    }
    if (r->category[0] != '\0') {
        f->error_category = r->category;
    }
    if (r->since_ms > f->from_ms) {
        f->from_ms = r->since_ms;
    }
    if (r->until_ms != 0 && (f->to_ms == 0 || r->until_ms - 1 < f->to_ms)) {
        f->to_ms = r->until_ms - 1; /* until is exclusive, to inclusive */
    }
}

static bool refuse_unsupported(struct qr_op *op,
                               const Qraft__Request *req,
                               const Qraft__MessageFilter *f)
{
    const char *name = qr_filter_unsupported(f);
    if (name != NULL) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                    "filter %s is not supported yet", name);
    }
    return name != NULL;
}

static uint32_t bulk_limit(uint32_t limit)
{
    return limit == 0 || limit > MAX_BULK_IDS ? MAX_BULK_IDS : limit;
}

/* Dead letters matching f after cursor (a position, or "": the oldest),
 * up to limit, then one command each, answered with a BulkPageResponse. */
static void dlq_bulk_by_filter(struct qr_op *op,
                               const Qraft__Request *req,
                               const Qraft__MessageFilter *f,
                               const char *cursor,
                               uint32_t limit,
                               enum bulk_kind kind,
                               bool paged)
{
    uint64_t after_ms = 0;
    uint64_t bound_ms = qr_cluster_now_ms(op->ops->cluster);
    const char *after_id = NULL;
    if (cursor[0] != '\0' &&
        parse_dlq_position(cursor, &after_ms, &bound_ms, &after_id) != 0) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                    "invalid cursor '%.64s'", cursor);
        return;
    }
    Qraft__MessageFilter bounded = *f;
    if (bounded.to_ms == 0 || bound_ms < bounded.to_ms) {
        bounded.to_ms = bound_ms;
    }
    struct selection s = {.filter = &bounded, .max = bulk_limit(limit)};
    s.ids = calloc(s.max, sizeof(char *));
    struct qr_store_txn *txn = NULL;
    int rv = s.ids == NULL ? -ENOMEM
                           : qr_store_txn_begin(op->ops->store, false, &txn);
    if (rv == 0) {
        rv = qr_store_dlq_list_at(txn, after_ms, after_id, SIZE_MAX,
                                  collect_matching, &s);
        qr_store_txn_abort(txn);
        rv = rv == 1 ? s.rv : rv;
    }
    if (rv == QR_EBADREQ) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                    "invalid cursor '%.64s'", cursor);
    } else if (rv != 0) {
        qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL, "reading the DLQ: %s",
                    qr_strerror(rv));
    } else {
        char next[QR_ID_BYTES + 96] = "";
        if (s.more) {
            snprintf(next, sizeof next, "%" PRIu64 ":%" PRIu64 ":%s", s.last_ms,
                     bound_ms, s.last_id);
        }
        struct bulk_page page = {.paged = paged, .cursor = next};
        handle_bulk(op, req, s.n, s.ids, kind, &page);
    }
    selection_free(&s);
}

/* DLQ replay and delete name dead letters by ids or by a filter (all:
 * every one), never both. Refuses a filter that is not supported or comes
 * with ids, and runs the bulk over the ids (unpaged, as before filters
 * existed) when there is no filter. Returns true when the caller selects
 * by f (NULL: none) instead; false when req is answered or under way. */
static bool dlq_bulk_ids(struct qr_op *op,
                         const Qraft__Request *req,
                         const Qraft__MessageFilter *f,
                         bool all,
                         size_t n_ids,
                         char **ids,
                         enum bulk_kind kind)
{
    bool filtered = all || !qr_filter_is_empty(f);
    if (refuse_unsupported(op, req, f)) {
        return false;
    }
    if (n_ids == 0 && filtered) {
        return true;
    }
    if (filtered) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                    "give message ids or a filter, not both");
        return false;
    }
    struct bulk_page page = {.paged = false};
    handle_bulk(op, req, n_ids, ids, kind, &page);
    return false;
}

static void handle_dlq_replay(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__DlqReplayRequest *r = req->dlq_replay;
    Qraft__MessageFilter f;
    fold_replay_filter(r, &f);
    if (!dlq_bulk_ids(op, req, &f, r->all, r->n_message_ids, r->message_ids,
                      BULK_REPLAY)) {
        return;
    }
    bool paged = r->filter != NULL || r->limit != 0 || r->cursor[0] != '\0';
    dlq_bulk_by_filter(op, req, &f, r->cursor, r->limit, BULK_REPLAY, paged);
}

static void handle_dlq_delete(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__DlqDeleteRequest *d = req->dlq_delete;
    if (!dlq_bulk_ids(op, req, d->filter, d->all, d->n_message_ids,
                      d->message_ids, BULK_DELETE)) {
        return;
    }
    Qraft__MessageFilter none = QRAFT__MESSAGE_FILTER__INIT;
    dlq_bulk_by_filter(op, req, d->filter != NULL ? d->filter : &none,
                       d->cursor, d->limit, BULK_DELETE, true);
}

/* Cancels the listed messages, or the cancellable ones the filter selects
 * (in id order, at most limit). */
static void handle_cancel_many(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__CancelManyRequest *r = req->cancel_many;
    struct bulk_page page = {.paged = false};
    if (refuse_unsupported(op, req, r->filter)) {
        return;
    }
    if (r->n_message_ids > 0) {
        if (!qr_filter_is_empty(r->filter)) {
            qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                        "give message ids or a filter, not both");
            return;
        }
        handle_bulk(op, req, r->n_message_ids, r->message_ids, BULK_CANCEL,
                    &page);
        return;
    }
    Qraft__MessageFilter none = QRAFT__MESSAGE_FILTER__INIT;
    struct selection s = {.filter = r->filter != NULL ? r->filter : &none,
                          .cancellable = true,
                          .max = bulk_limit(r->limit)};
    s.ids = calloc(s.max, sizeof(char *));
    struct qr_store_txn *txn = NULL;
    int rv = s.ids == NULL ? -ENOMEM
                           : qr_store_txn_begin(op->ops->store, false, &txn);
    if (rv == 0) {
        rv = qr_store_msg_list(txn, QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED,
                               NULL, SIZE_MAX, collect_matching, &s);
        qr_store_txn_abort(txn);
        rv = rv == 1 ? s.rv : rv;
    }
    if (rv != 0) {
        qr_op_store_error(op, req->id, rv);
    } else {
        page.cursor = ""; /* selected: none is an empty answer */
        handle_bulk(op, req, s.n, s.ids, BULK_CANCEL, &page);
    }
    selection_free(&s);
}

static bool forward(struct qr_op *op, Qraft__Request *req);

static void send_keys(struct qr_op *op, uint64_t id)
{
    struct qr_store_txn *txn = NULL;
    Qraft__SigningKeys *keys = NULL;
    int rv = qr_store_txn_begin(op->ops->store, false, &txn);
    if (rv == 0) {
        rv = qr_store_meta_get_msg(txn, QR_META_SIGNING_KEYS,
                                   &qraft__signing_keys__descriptor,
                                   (ProtobufCMessage **)&keys);
        qr_store_txn_abort(txn);
    }
    if (rv != 0) {
        qr_op_error(op, id, QRAFT__STATUS__UNAVAILABLE,
                    "no signing keys yet: the cluster is starting");
        return;
    }
    Qraft__Response resp = QRAFT__RESPONSE__INIT;
    resp.id = id;
    resp.body_case = QRAFT__RESPONSE__BODY_KEYS;
    resp.keys = keys;
    qr_op_reply(op, &resp);
    qraft__signing_keys__free_unpacked(keys, NULL);
}

static void on_rotated(void *data,
                       int status,
                       const struct qr_apply_result *res)
{
    struct qr_call *call = data;
    if (qr_call_applied_ok(call, status, res)) {
        send_keys(call->op, call->id);
    }
    qr_call_free(call);
}

static void handle_keys(struct qr_op *op, const Qraft__Request *req)
{
    if (!req->keys->rotate) {
        send_keys(op, req->id);
        return;
    }
    if (!qr_cluster_serving(op->ops->cluster)) {
        if (!forward(op, (Qraft__Request *)req)) {
            qr_op_not_leader(op, req->id);
        }
        return;
    }
    char next[QR_SIGN_KEY_BYTES];
    if (qr_sign_generate_key(next) != 0) {
        qr_op_error(op, req->id, QRAFT__STATUS__UNAVAILABLE,
                    "no randomness for a new key");
        return;
    }
    Qraft__SigningKeys keys = QRAFT__SIGNING_KEYS__INIT;
    keys.next = next;
    Qraft__SetSigningKeys set = QRAFT__SET_SIGNING_KEYS__INIT;
    set.keys = &keys;
    set.rotate = true;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_SET_SIGNING_KEYS;
    cmd.set_signing_keys = &set;
    qr_op_propose(op, req, &cmd, on_rotated);
}

/* Reads: a list of deep copies taken from one read transaction. */
struct msg_list {
    Qraft__Message **items;
    size_t n, cap;
    size_t bytes;
    bool full; /* stopped at the page's limit or LIST_MAX_PAGE_BYTES */
    int rv;
    /* Filter on the reported state (see reported_state), when set. */
    Qraft__MessageState want;
    uint64_t now_ms;
    size_t limit;
    /* DLQ list: only the messages that match (NULL: all), and, when
     * n_ids > 0, only these ids. */
    const Qraft__MessageFilter *filter;
    char **ids;
    size_t n_ids;
};

static bool id_listed(char **ids, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(ids[i], id) == 0) {
            return true;
        }
    }
    return false;
}

/* "delivering" is not stored: a pending or retrying message whose time has
 * come is in flight (or about to be), and is reported so. */
static Qraft__MessageState reported_state(const Qraft__Message *m,
                                          uint64_t now_ms)
{
    bool waiting = m->state == QRAFT__MESSAGE_STATE__PENDING ||
                   m->state == QRAFT__MESSAGE_STATE__RETRYING;
    return waiting && m->next_attempt_ms <= now_ms
               ? QRAFT__MESSAGE_STATE__DELIVERING
               : m->state;
}

static Qraft__Message *copy_message(const Qraft__Message *m)
{
    return (Qraft__Message *)qr_ops_copy_pb(&m->base);
}

/* ------------------------------------------------------------------------ */
/* Queues. */

/* Checks a queue name (and parallelism); answers req when it is bad. */
static bool queue_args_ok(struct qr_op *op,
                          const Qraft__Request *req,
                          const char *name,
                          uint32_t parallelism)
{
    char err[256];
    int rv = qr_command_check_queue(name, parallelism, &op->ops->config->limits,
                                    err, sizeof err);
    if (rv != 0) {
        qr_op_error(op, req->id, qr_op_status(rv), "%s", err);
        return false;
    }
    return true;
}

static void handle_queue_upsert(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__QueueUpsertRequest *r = req->queue_upsert;
    const struct qr_limits *l = &op->ops->config->limits;
    if (!queue_args_ok(op, req, r->name, r->parallelism)) {
        return;
    }
    Qraft__QueueUpsert u = QRAFT__QUEUE_UPSERT__INIT;
    u.name = r->name;
    u.parallelism = r->parallelism != 0 ? r->parallelism : 1;
    u.paused = r->paused;
    u.max_queues = l->max_queues;
    u.max_parallelism = l->max_queue_parallelism;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_QUEUE_UPSERT;
    cmd.queue_upsert = &u;
    qr_op_propose_ok(op, req, &cmd);
}

static void handle_queue_pause(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__QueuePauseRequest *r = req->queue_pause;
    if (!queue_args_ok(op, req, r->name, 0)) {
        return;
    }
    Qraft__QueuePause p = QRAFT__QUEUE_PAUSE__INIT;
    p.name = r->name;
    p.paused = r->paused;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_QUEUE_PAUSE;
    cmd.queue_pause = &p;
    qr_op_propose_ok(op, req, &cmd);
}

static void handle_queue_delete(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__QueueDeleteRequest *r = req->queue_delete;
    if (!queue_args_ok(op, req, r->name, 0)) {
        return;
    }
    Qraft__QueueDelete d = QRAFT__QUEUE_DELETE__INIT;
    d.name = r->name;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_QUEUE_DELETE;
    cmd.queue_delete = &d;
    qr_op_propose_ok(op, req, &cmd);
}

static int collect_queue(void *arg, const Qraft__Queue *q)
{
    return pb_list_add(arg, &q->base);
}

static void handle_queue_read(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_ops *ops = op->ops;
    bool one = req->body_case == QRAFT__REQUEST__BODY_QUEUE_GET;
    const char *name = one ? req->queue_get->name : NULL;
    struct pb_list l = {0};
    struct qr_store_txn *txn = NULL;
    Qraft__Queue *q = NULL;
    if (one && !queue_args_ok(op, req, name, 0)) {
        return;
    }
    int rv = qr_store_txn_begin(ops->store, false, &txn);
    if (rv == 0) {
        rv = one ? qr_store_queue_get(txn, name, &q)
                 : qr_store_queue_list(txn, NULL, SIZE_MAX, collect_queue, &l);
        qr_store_txn_abort(txn);
    }
    rv = pb_list_status(&l, rv);
    Qraft__Response resp = QRAFT__RESPONSE__INIT;
    Qraft__QueueListResponse list = QRAFT__QUEUE_LIST_RESPONSE__INIT;
    resp.id = req->id;
    if (rv == QR_ENOTFOUND) {
        qr_op_error(op, req->id, QRAFT__STATUS__NOT_FOUND,
                    "queue %.64s not found", name);
    } else if (rv != 0) {
        qr_op_store_error(op, req->id, rv);
    } else if (one) {
        resp.body_case = QRAFT__RESPONSE__BODY_QUEUE;
        resp.queue = q;
        qr_op_reply(op, &resp);
    } else {
        list.n_queues = l.n;
        list.queues = (Qraft__Queue **)l.items;
        resp.body_case = QRAFT__RESPONSE__BODY_QUEUES;
        resp.queues = &list;
        qr_op_reply(op, &resp);
    }
    if (q != NULL) {
        qraft__queue__free_unpacked(q, NULL);
    }
    pb_list_free(&l);
}

static int collect_message(void *arg, const Qraft__Message *m)
{
    struct msg_list *l = arg;
    Qraft__MessageState state = reported_state(m, l->now_ms);
    if (l->want != QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED &&
        state != l->want) {
        return 0;
    }
    if ((l->n_ids > 0 && !id_listed(l->ids, l->n_ids, m->id)) ||
        (l->filter != NULL && !qr_filter_match(l->filter, m))) {
        return 0;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        Qraft__Message **items = realloc(l->items, cap * sizeof *items);
        if (items == NULL) {
            l->rv = -ENOMEM;
            return 1;
        }
        l->items = items;
        l->cap = cap;
    }
    Qraft__Message *copy = copy_message(m);
    if (copy == NULL) {
        l->rv = -ENOMEM;
        return 1;
    }
    copy->state = state;
    l->items[l->n++] = copy;
    l->bytes += qraft__message__get_packed_size(copy);
    if (l->bytes >= LIST_MAX_PAGE_BYTES || l->n == l->limit) {
        l->full = true;
        return 1;
    }
    return 0;
}

static void msg_list_free(struct msg_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        qraft__message__free_unpacked(l->items[i], NULL);
    }
    free(l->items);
}

static uint32_t clamp_limit(uint32_t limit)
{
    if (limit == 0) {
        return LIST_DEFAULT_LIMIT;
    }
    return limit > LIST_MAX_LIMIT ? LIST_MAX_LIMIT : limit;
}

static void handle_list(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_ops *ops = op->ops;
    const Qraft__ListRequest *lr = req->list;
    bool dlq = req->body_case == QRAFT__REQUEST__BODY_DLQ_LIST;
    const char *cursor = dlq ? req->dlq_list->cursor : lr->cursor;
    uint32_t limit = clamp_limit(dlq ? req->dlq_list->limit : lr->limit);
    if ((unsigned)(dlq ? 0 : lr->state) >= QR_STORE_N_STATES) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST, "unknown state %d",
                    (int)lr->state);
        return;
    }

    struct msg_list l = {.now_ms = qr_cluster_now_ms(ops->cluster),
                         .limit = limit};
    if (dlq) {
        if (refuse_unsupported(op, req, req->dlq_list->filter)) {
            return;
        }
        l.filter = req->dlq_list->filter;
        l.ids = req->dlq_list->message_ids;
        l.n_ids = req->dlq_list->n_message_ids;
    }
    struct qr_store_txn *txn = NULL;
    int rv = qr_store_txn_begin(ops->store, false, &txn);
    if (rv == 0) {
        if (dlq) {
            rv = qr_store_dlq_list(txn, cursor, limit, collect_message, &l);
        } else {
            /* The store filters on the stored state; "delivering" and the
             * waiting states it is computed from are filtered here. */
            Qraft__MessageState stored = lr->state;
            if (stored == QRAFT__MESSAGE_STATE__DELIVERING ||
                stored == QRAFT__MESSAGE_STATE__PENDING ||
                stored == QRAFT__MESSAGE_STATE__RETRYING) {
                l.want = stored;
                if (stored == QRAFT__MESSAGE_STATE__DELIVERING) {
                    stored = QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED;
                }
            }
            rv = qr_store_msg_list(txn, stored, cursor, SIZE_MAX,
                                   collect_message, &l);
        }
        qr_store_txn_abort(txn);
    }
    if (rv == 1 && (l.full || l.rv != 0)) {
        rv = l.rv; /* the callback stopped the walk */
    }
    if (rv == 0 && l.rv != 0) {
        rv = l.rv;
    }
    if (rv != 0) {
        qr_op_store_error(op, req->id, rv);
        msg_list_free(&l);
        return;
    }

    char *next = l.n > 0 && l.full ? l.items[l.n - 1]->id : "";
    Qraft__Response resp = QRAFT__RESPONSE__INIT;
    Qraft__ListResponse list = QRAFT__LIST_RESPONSE__INIT;
    Qraft__DlqListResponse dlq_list = QRAFT__DLQ_LIST_RESPONSE__INIT;
    resp.id = req->id;
    if (dlq) {
        dlq_list.n_messages = l.n;
        dlq_list.messages = l.items;
        dlq_list.cursor = next;
        resp.body_case = QRAFT__RESPONSE__BODY_DLQ_LIST;
        resp.dlq_list = &dlq_list;
    } else {
        list.n_messages = l.n;
        list.messages = l.items;
        list.cursor = next;
        resp.body_case = QRAFT__RESPONSE__BODY_LIST;
        resp.list = &list;
    }
    qr_op_reply(op, &resp);
    msg_list_free(&l);
}

struct event_list {
    Qraft__Event **items;
    size_t n;
    int rv;
};

static int collect_event(void *arg, const Qraft__Event *e)
{
    struct event_list *l = arg;
    if (l->n == EVENTS_PER_GET) {
        /* Keep the newest: drop the oldest kept. */
        qraft__event__free_unpacked(l->items[0], NULL);
        memmove(l->items, l->items + 1, (l->n - 1) * sizeof *l->items);
        l->n--;
    }
    size_t len = qraft__event__get_packed_size(e);
    uint8_t *buf = malloc(len > 0 ? len : 1);
    if (buf == NULL) {
        l->rv = -ENOMEM;
        return 1;
    }
    qraft__event__pack(e, buf);
    l->items[l->n] = qraft__event__unpack(NULL, len, buf);
    free(buf);
    if (l->items[l->n] == NULL) {
        l->rv = -ENOMEM;
        return 1;
    }
    l->n++;
    return 0;
}

static void handle_get(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_ops *ops = op->ops;
    const char *id = req->get->message_id;
    if (id[0] == '\0') {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                    "message id is missing");
        return;
    }
    Qraft__Message *m = NULL;
    Qraft__Event *events[EVENTS_PER_GET];
    struct event_list el = {.items = events};
    struct qr_store_txn *txn = NULL;
    int rv = qr_store_txn_begin(ops->store, false, &txn);
    if (rv == 0) {
        rv = qr_store_msg_get(txn, id, &m);
        if (rv == 0) {
            rv = qr_store_event_list(txn, id, SIZE_MAX, collect_event, &el);
            if (rv == 0) {
                rv = el.rv;
            }
        }
        qr_store_txn_abort(txn);
    }
    if (rv == QR_ENOTFOUND) {
        qr_op_error(op, req->id, QRAFT__STATUS__NOT_FOUND,
                    "message %.64s not found", id);
    } else if (rv != 0) {
        qr_op_store_error(op, req->id, rv);
    } else {
        Qraft__GetResponse gr = QRAFT__GET_RESPONSE__INIT;
        m->state = reported_state(m, qr_cluster_now_ms(ops->cluster));
        gr.message = m;
        gr.n_events = el.n;
        gr.events = events;
        Qraft__Response resp = QRAFT__RESPONSE__INIT;
        resp.id = req->id;
        resp.body_case = QRAFT__RESPONSE__BODY_GET;
        resp.get = &gr;
        qr_op_reply(op, &resp);
    }
    for (size_t i = 0; i < el.n; i++) {
        qraft__event__free_unpacked(events[i], NULL);
    }
    if (m != NULL) {
        qraft__message__free_unpacked(m, NULL);
    }
}

/* ------------------------------------------------------------------------ */
/* Events (the logs API): a cursor-paged scan of the events db, each event
 * seen as the QStash states it stands for (filter.h), with its message. */

#define EVENTS_DEFAULT_LIMIT 100u
#define EVENTS_MAX_LIMIT 1000u
/* Cursor: decimal digits, the event key then which of its entries came
 * last: <time ms><index, 20 digits><position, 10><entry, 1>. A bare
 * number of at most 20 digits is a time: newest first, the events at or
 * before it; oldest first, at or after it. */
#define CURSOR_TAIL_DIGITS 31u

struct events_page {
    struct qr_store_txn *txn;
    const Qraft__EventsRequest *r;
    bool desc;
    uint32_t state_mask; /* bit per LogState; 0: all */
    size_t limit;
    /* Resume: the entries of the event at skip_pos up to skip_entry (in
     * scan order) were on the previous page. */
    bool have_skip;
    struct qr_store_event_pos skip_pos;
    uint32_t skip_entry;
    /* Built page. */
    Qraft__EventEntry *entries;
    Qraft__EventEntry **entry_ptrs;
    Qraft__Event **events; /* owned copies, one per event used */
    size_t n_events;
    Qraft__Message **messages; /* owned, one per distinct message loaded */
    size_t n_messages;
    size_t n, bytes;
    bool more;
    struct qr_store_event_pos last_pos;
    uint32_t last_entry;
    int rv;
};

static Qraft__Event *copy_event(const Qraft__Event *e)
{
    return (Qraft__Event *)qr_ops_copy_pb(&e->base);
}

/* The message of e: the last one loaded when it is the same, else from the
 * store (NULL when it was pruned). Returns 0 or an error. */
static int event_message(struct events_page *p,
                         const Qraft__Event *e,
                         Qraft__Message **out)
{
    *out = NULL;
    if (p->n_messages > 0 &&
        strcmp(p->messages[p->n_messages - 1]->id, e->message_id) == 0) {
        *out = p->messages[p->n_messages - 1];
        return 0;
    }
    Qraft__Message *m = NULL;
    int rv = qr_store_msg_get(p->txn, e->message_id, &m);
    if (rv == QR_ENOTFOUND) {
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    p->messages[p->n_messages++] = m;
    p->bytes += qraft__message__get_packed_size(m);
    *out = m;
    return 0;
}

/* True when f sets nothing but message ids and time bounds. */
static bool ids_and_time_only(const Qraft__MessageFilter *f)
{
    if (f == NULL) {
        return true;
    }
    Qraft__MessageFilter rest = *f;
    rest.n_message_ids = 0;
    rest.from_ms = 0;
    rest.to_ms = 0;
    return qr_filter_is_empty(&rest);
}

static int collect_entries(void *arg,
                           const struct qr_store_event_pos *pos,
                           const Qraft__Event *e)
{
    struct events_page *p = arg;
    const Qraft__MessageFilter *f = p->r->filter;
    Qraft__LogState states[QR_FILTER_MAX_LOG_STATES];
    size_t n_states = qr_filter_log_states(e, states);
    bool resumed = p->have_skip && pos->time_ms == p->skip_pos.time_ms &&
                   pos->index == p->skip_pos.index &&
                   pos->position == p->skip_pos.position;

    if (f != NULL && ((p->desc && f->from_ms != 0 && e->time_ms < f->from_ms) ||
                      (!p->desc && f->to_ms != 0 && e->time_ms > f->to_ms))) {
        return 1; /* past the time bound: nothing further matches */
    }
    if (n_states == 0 || !qr_filter_match_time(f, e->time_ms) ||
        (f != NULL && f->n_message_ids > 0 &&
         !id_listed(f->message_ids, f->n_message_ids, e->message_id))) {
        return 0;
    }
    Qraft__Message *m = NULL;
    bool loaded = false;
    for (size_t k = 0; k < n_states; k++) {
        /* Scan order: oldest first within the event, or reversed. */
        uint32_t entry = (uint32_t)k;
        size_t i = p->desc ? n_states - 1 - k : k;
        if (resumed && entry <= p->skip_entry) {
            continue;
        }
        if (p->state_mask != 0 && !(p->state_mask & (1u << states[i]))) {
            continue;
        }
        if (!loaded) {
            /* Before the first entry of this event is taken: its message
             * (for the answer and the other filter fields). */
            size_t n_loaded = p->n_messages;
            int rv = event_message(p, e, &m);
            if (rv != 0) {
                p->rv = rv;
                return 1;
            }
            loaded = true;
            /* A pruned message matches no condition on its fields. */
            if (m != NULL ? !qr_filter_match_fields(f, m)
                          : !ids_and_time_only(f)) {
                if (p->n_messages > n_loaded) {
                    p->n_messages--;
                    p->bytes -= qraft__message__get_packed_size(m);
                    qraft__message__free_unpacked(m, NULL);
                }
                return 0;
            }
            Qraft__Event *copy = copy_event(e);
            if (copy == NULL) {
                p->rv = -ENOMEM;
                return 1;
            }
            p->events[p->n_events++] = copy;
        }
        if (p->n == p->limit || p->bytes >= LIST_MAX_PAGE_BYTES) {
            p->more = true;
            return 1;
        }
        Qraft__EventEntry *out = &p->entries[p->n];
        qraft__event_entry__init(out);
        out->event = p->events[p->n_events - 1];
        out->state = states[i];
        out->message = m;
        p->entry_ptrs[p->n++] = out;
        p->last_pos = *pos;
        p->last_entry = entry;
    }
    return 0;
}

static int parse_events_cursor(const char *c,
                               bool desc,
                               struct events_page *p,
                               struct qr_store_event_pos *from)
{
    size_t len = strlen(c);
    if (len == 0 || strspn(c, "0123456789") != len) {
        return QR_EBADREQ;
    }
    if (len <= 20) {
        unsigned long long t = strtoull(c, NULL, 10);
        from->time_ms = t;
        from->index = desc ? UINT64_MAX : 0;
        from->position = desc ? UINT32_MAX : 0;
        return errno == ERANGE ? QR_EBADREQ : 0;
    }
    if (len <= CURSOR_TAIL_DIGITS || len > CURSOR_TAIL_DIGITS + 20) {
        return QR_EBADREQ;
    }
    char head[21];
    char index[21];
    char position[11];
    size_t hl = len - CURSOR_TAIL_DIGITS;
    memcpy(head, c, hl);
    head[hl] = '\0';
    memcpy(index, c + hl, 20);
    index[20] = '\0';
    memcpy(position, c + hl + 20, 10);
    position[10] = '\0';
    errno = 0;
    from->time_ms = strtoull(head, NULL, 10);
    from->index = strtoull(index, NULL, 10);
    unsigned long long pos = strtoull(position, NULL, 10);
    if (errno != 0 || pos > UINT32_MAX) {
        return QR_EBADREQ;
    }
    from->position = (uint32_t)pos;
    p->have_skip = true;
    p->skip_pos = *from;
    p->skip_entry = (uint32_t)(c[len - 1] - '0');
    return 0;
}

static void events_page_free(struct events_page *p)
{
    for (size_t i = 0; i < p->n_events; i++) {
        qraft__event__free_unpacked(p->events[i], NULL);
    }
    for (size_t i = 0; i < p->n_messages; i++) {
        qraft__message__free_unpacked(p->messages[i], NULL);
    }
    free(p->events);
    free(p->messages);
    free(p->entries);
    free(p->entry_ptrs);
}

static void handle_events(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__EventsRequest *r = req->events;
    struct events_page p = {.r = r, .desc = !r->oldest_first};
    struct qr_store_event_pos from;
    bool have_from = false;

    if (refuse_unsupported(op, req, r->filter)) {
        return;
    }
    for (size_t i = 0; i < r->n_states; i++) {
        if (r->states[i] <= QRAFT__LOG_STATE__LOG_STATE_UNSPECIFIED ||
            r->states[i] > QRAFT__LOG_STATE__LOG_CANCELLED) {
            qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                        "unknown log state %d", (int)r->states[i]);
            return;
        }
        p.state_mask |= 1u << r->states[i];
    }
    if (r->cursor[0] != '\0') {
        errno = 0;
        if (parse_events_cursor(r->cursor, p.desc, &p, &from) != 0) {
            qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                        "invalid cursor '%.64s'", r->cursor);
            return;
        }
        have_from = true;
    }
    p.limit = r->limit == 0                 ? EVENTS_DEFAULT_LIMIT
              : r->limit > EVENTS_MAX_LIMIT ? EVENTS_MAX_LIMIT
                                            : r->limit;
    /* At most one event and one message per entry. */
    p.entries = calloc(p.limit, sizeof *p.entries);
    p.entry_ptrs = calloc(p.limit, sizeof *p.entry_ptrs);
    p.events = calloc(p.limit + 1, sizeof *p.events);
    p.messages = calloc(p.limit + 1, sizeof *p.messages);
    int rv = p.entries == NULL || p.entry_ptrs == NULL || p.events == NULL ||
                     p.messages == NULL
                 ? -ENOMEM
                 : qr_store_txn_begin(op->ops->store, false, &p.txn);
    if (rv == 0) {
        rv = qr_store_event_scan(p.txn, have_from ? &from : NULL, true, p.desc,
                                 collect_entries, &p);
        rv = rv == 1 ? p.rv : rv;
        qr_store_txn_abort(p.txn);
    }
    if (rv != 0) {
        qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL,
                    "reading the events: %s", qr_strerror(rv));
        events_page_free(&p);
        return;
    }
    char next[64] = "";
    if (p.more && p.n > 0) {
        snprintf(next, sizeof next, "%" PRIu64 "%020" PRIu64 "%010" PRIu32 "%u",
                 p.last_pos.time_ms, p.last_pos.index, p.last_pos.position,
                 p.last_entry);
    }
    Qraft__EventsResponse er = QRAFT__EVENTS_RESPONSE__INIT;
    er.n_entries = p.n;
    er.entries = p.entry_ptrs;
    er.cursor = next;
    Qraft__Response resp = QRAFT__RESPONSE__INIT;
    resp.id = req->id;
    resp.body_case = QRAFT__RESPONSE__BODY_EVENTS;
    resp.events = &er;
    qr_op_reply(op, &resp);
    events_page_free(&p);
}

static void handle_status(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_ops *ops = op->ops;
    struct qr_cluster_status cs;
    qr_cluster_get_status(ops->cluster, &cs);

    uint64_t counts[QR_STORE_N_STATES] = {0};
    struct qr_store_txn *txn = NULL;
    int rv = qr_store_txn_begin(ops->store, false, &txn);
    if (rv == 0) {
        rv = qr_store_count_states(txn, counts);
        qr_store_txn_abort(txn);
    }
    if (rv != 0) {
        qr_op_store_error(op, req->id, rv);
        return;
    }

    Qraft__NodeStatus nodes[QR_CLUSTER_MAX_NODES];
    Qraft__NodeStatus *node_ptrs[QR_CLUSTER_MAX_NODES];
    Qraft__NodeInfo *infos[QR_CLUSTER_MAX_NODES];
    uint64_t now = qr_clock_mono_ms();
    for (size_t i = 0; i < cs.n_nodes; i++) {
        uint64_t nid = cs.nodes[i].id;
        qraft__node_status__init(&nodes[i]);
        nodes[i].id = nid;
        nodes[i].role = (char *)cs.nodes[i].role;
        nodes[i].raft = cs.nodes[i].raft_addr;
        nodes[i].shards = qr_shards_count(ops->shards, nid);
        infos[i] = qr_shards_node_info(ops->shards, nid);
        if (infos[i] != NULL) {
            nodes[i].rpc = infos[i]->rpc;
            nodes[i].http = infos[i]->http;
            nodes[i].version = infos[i]->version;
            nodes[i].feature_level = infos[i]->feature_level != 0
                                         ? infos[i]->feature_level
                                         : QR_FSM_BASE_FEATURE_LEVEL;
        }
        if (nid == ops->config->id) {
            nodes[i].alive = true;
            nodes[i].applied = cs.applied_index;
        } else {
            /* Known on the leader, from heartbeats. */
            const struct qr_shards_node *n = qr_shards_node(ops->shards, nid);
            nodes[i].alive = n != NULL && n->last_heartbeat_mono_ms != 0 &&
                             now - n->last_heartbeat_mono_ms < 3000;
            nodes[i].applied = n != NULL ? n->applied_index : 0;
        }
        node_ptrs[i] = &nodes[i];
    }
    Qraft__StatusResponse sr = QRAFT__STATUS_RESPONSE__INIT;
    sr.node_id = ops->config->id;
    sr.state = (char *)cs.state;
    sr.leader_id = cs.leader_id;
    char leader_rpc[QR_ADDR_MAX] = "";
    if (cs.leader_id != 0) {
        qr_shards_node_addrs(ops->shards, cs.leader_id, leader_rpc, NULL);
    }
    sr.leader_rpc = leader_rpc;
    sr.term = cs.term;
    sr.commit_index = cs.commit_index;
    sr.applied_index = cs.applied_index;
    sr.last_index = cs.last_index;
    sr.n_nodes = cs.n_nodes;
    sr.nodes = node_ptrs;
    sr.n_state_counts = QR_STORE_N_STATES;
    sr.state_counts = counts;
    sr.version = QRAFT_VERSION;
    sr.feature_level = ops->cluster->fsm.feature_level;
    Qraft__Response resp = QRAFT__RESPONSE__INIT;
    resp.id = req->id;
    resp.body_case = QRAFT__RESPONSE__BODY_CLUSTER_STATUS;
    resp.cluster_status = &sr;
    qr_op_reply(op, &resp);
    for (size_t i = 0; i < cs.n_nodes; i++) {
        if (infos[i] != NULL) {
            qraft__node_info__free_unpacked(infos[i], NULL);
        }
    }
}

static void handle_heartbeat(struct qr_op *op, const Qraft__Request *req)
{
    Qraft__HeartbeatResponse hb = QRAFT__HEARTBEAT_RESPONSE__INIT;
    qr_shards_on_heartbeat(op->ops->shards, req->heartbeat, &hb);
    Qraft__Response resp = QRAFT__RESPONSE__INIT;
    resp.id = req->id;
    resp.body_case = QRAFT__RESPONSE__BODY_HEARTBEAT;
    resp.heartbeat = &hb;
    qr_op_reply(op, &resp);
}

static void on_results_applied(void *data, int status, uint64_t applied)
{
    struct qr_call *call = data;
    if (status != 0) {
        qr_op_error(call->op, call->id, qr_op_status(status), "%s",
                    qr_strerror(status));
    } else {
        Qraft__ResultsResponse rr = QRAFT__RESULTS_RESPONSE__INIT;
        rr.applied_index = applied;
        Qraft__Response resp = QRAFT__RESPONSE__INIT;
        resp.id = call->id;
        resp.body_case = QRAFT__RESPONSE__BODY_RESULTS;
        resp.results = &rr;
        qr_op_reply(call->op, &resp);
    }
    qr_call_free(call);
}

/* A follower's worker hands over outcomes: the leader proposes them and
 * answers once they are applied. */
static void handle_results(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__ResultsRequest *r = req->results;
    if (r->n_results == 0) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST, "no results");
        return;
    }
    char why[160];
    if (qr_check_delivery_results(r->results, r->n_results, why, sizeof why) !=
        0) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST, "results: %s",
                    why);
        return;
    }
    struct qr_call *call = qr_call_new(op, req);
    if (call == NULL) {
        qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
        return;
    }
    int rv = qr_shards_propose_results(op->ops->shards, r->results,
                                       r->n_results, on_results_applied, call);
    if (rv != 0) {
        qr_op_refused(op, req->id, rv, qr_strerror(rv));
        qr_call_free(call);
    }
}

static void on_membership_done(void *data, int status, const char *why)
{
    struct qr_call *call = data;
    if (status != 0) {
        qr_op_error(call->op, call->id, qr_op_status(status), "%s", why);
    } else {
        qr_op_ok(call->op, call->id);
    }
    qr_call_free(call);
}

static void handle_membership(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_cluster *c = op->ops->cluster;
    if (req->body_case == QRAFT__REQUEST__BODY_MEMBER_ADD) {
        struct sockaddr_in addr;
        const Qraft__MemberAddRequest *a = req->member_add;
        if (a->id == 0 || a->id > QR_MAX_NODE_ID ||
            qr_addr_parse_ipv4(a->raft_addr, &addr) != 0) {
            qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                        "add needs an id in 1..%u and an IPv4 HOST:PORT raft "
                        "address",
                        QR_MAX_NODE_ID);
            return;
        }
    }
    struct qr_call *call = qr_call_new(op, req);
    if (call == NULL) {
        qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
        return;
    }
    int rv;
    switch (req->body_case) {
        case QRAFT__REQUEST__BODY_MEMBER_ADD:
            rv = qr_cluster_add(c, req->member_add->id,
                                req->member_add->raft_addr, on_membership_done,
                                call);
            break;
        case QRAFT__REQUEST__BODY_MEMBER_REMOVE:
            rv = qr_cluster_remove(c, req->member_remove->id,
                                   on_membership_done, call);
            break;
        default:
            rv = qr_cluster_transfer(c, req->transfer->id, on_membership_done,
                                     call);
            break;
    }
    if (rv != 0) {
        qr_op_refused(
            op, req->id, rv,
            rv == QR_ECONFLICT ? "another membership change is in progress"
            : rv == QR_EBADREQ ? "no such node, or the id or address is taken"
                               : qr_strerror(rv));
        qr_call_free(call);
    }
}

/* ------------------------------------------------------------------------ */
/* Schedules: writes go through raft like any command; the leader evaluates
 * the cron, apply only stores what it is given. */

/* Dedup keys of a schedule's creation live beside those of publishes; this
 * prefix keeps the two apart (a dedup id reused for a publish and for a
 * schedule names two different things). */
#define SCHEDULE_DEDUP_PREFIX "schedule:"

static void on_schedule_upserted(void *data,
                                 int status,
                                 const struct qr_apply_result *res)
{
    struct qr_call *call = data;
    if (qr_call_applied_ok(call, status, res)) {
        Qraft__ScheduleUpsertResponse ur =
            QRAFT__SCHEDULE_UPSERT_RESPONSE__INIT;
        ur.schedule_id = (char *)res->message_id;
        ur.deduplicated = res->deduplicated;
        Qraft__Response resp = QRAFT__RESPONSE__INIT;
        resp.id = call->id;
        resp.body_case = QRAFT__RESPONSE__BODY_SCHEDULE_UPSERT;
        resp.schedule_upsert = &ur;
        qr_op_reply(call->op, &resp);
    }
    qr_call_free(call);
}

static void handle_schedule_upsert(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_ops *ops = op->ops;
    const Qraft__ScheduleUpsertRequest *r = req->schedule_upsert;
    struct qr_cron cron;
    uint64_t first_slot_ms = 0;
    char err[256];
    int rv = qr_command_check_schedule(r, &ops->config->limits,
                                       qr_cluster_now_ms(ops->cluster), &cron,
                                       &first_slot_ms, err, sizeof err);
    if (rv == 0 && r->request->topic_name[0] != '\0') {
        /* Like a publish: a url group must exist when it is named. Each
         * tick fans out to the endpoints it has then. */
        Qraft__UrlGroup *g = NULL;
        rv = load_group(ops, r->request->topic_name, &g);
        if (rv == 0) {
            qraft__url_group__free_unpacked(g, NULL);
        } else if (rv == QR_ENOTFOUND) {
            snprintf(err, sizeof err, "url group '%.64s' not found",
                     r->request->topic_name);
        } else {
            snprintf(err, sizeof err, "reading the store: %s", qr_strerror(rv));
        }
    }
    if (rv != 0) {
        qr_op_error(op, req->id, qr_op_status(rv), "%s", err);
        return;
    }
    char id[QR_ID_BYTES];
    if (r->schedule_id[0] == '\0') {
        qr_cluster_new_message_id(ops->cluster, id);
        memcpy(id, "scd_", 4); /* same shape as message ids */
    }
    char trimmed[QR_COMMAND_MAX_CRON_BYTES + 1];
    qr_cron_trim(r->cron, trimmed, sizeof trimmed);

    /* The dedup fields dedup the creation, not each tick. */
    char *keys[QR_DEDUP_MAX_KEYS] = {NULL, NULL, NULL};
    char *prefixed[QR_DEDUP_MAX_KEYS] = {NULL, NULL, NULL};
    size_t n_keys = 0;
    rv = qr_command_dedup_keys(r->request, keys, &n_keys);
    for (size_t i = 0; i < n_keys && rv == 0; i++) {
        if (asprintf(&prefixed[i], "%s%s", SCHEDULE_DEDUP_PREFIX, keys[i]) <
            0) {
            prefixed[i] = NULL;
            rv = -ENOMEM;
        }
    }
    if (rv == 0) {
        Qraft__PublishRequest tmpl = *r->request;
        tmpl.dedup_id = "";
        tmpl.content_dedup = false;
        tmpl.idempotency_key = "";
        Qraft__Schedule sc = QRAFT__SCHEDULE__INIT;
        sc.id = r->schedule_id[0] != '\0' ? r->schedule_id : id;
        sc.cron = trimmed;
        sc.request = &tmpl;
        sc.next_slot_ms = first_slot_ms;
        sc.caller_ip = r->caller_ip;
        Qraft__ScheduleUpsert u = QRAFT__SCHEDULE_UPSERT__INIT;
        u.schedule = &sc;
        u.n_dedup_keys = n_keys;
        u.dedup_keys = prefixed;
        u.dedup_window_ms = ops->config->limits.dedup_window_ms;
        Qraft__Command cmd = QRAFT__COMMAND__INIT;
        cmd.body_case = QRAFT__COMMAND__BODY_SCHEDULE_UPSERT;
        cmd.schedule_upsert = &u;
        qr_op_propose(op, req, &cmd, on_schedule_upserted);
    } else {
        qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
    }
    qr_command_dedup_keys_free(keys, n_keys);
    qr_command_dedup_keys_free(prefixed, n_keys);
}

static bool schedule_id_ok(struct qr_op *op,
                           const Qraft__Request *req,
                           const char *id)
{
    if (id[0] == '\0' || strlen(id) > op->ops->config->limits.max_name_bytes) {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                    "schedule id is missing or too long");
        return false;
    }
    return true;
}

static void handle_schedule_delete(struct qr_op *op, const Qraft__Request *req)
{
    if (!schedule_id_ok(op, req, req->schedule_delete->schedule_id)) {
        return;
    }
    Qraft__ScheduleDelete d = QRAFT__SCHEDULE_DELETE__INIT;
    d.schedule_id = req->schedule_delete->schedule_id;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_SCHEDULE_DELETE;
    cmd.schedule_delete = &d;
    qr_op_propose_ok(op, req, &cmd);
}

/* Pause, or resume from the first slot after the leader's time (computed
 * here, from the stored cron: apply evaluates none). */
static void handle_schedule_pause(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_ops *ops = op->ops;
    const Qraft__SchedulePauseRequest *r = req->schedule_pause;
    if (!schedule_id_ok(op, req, r->schedule_id)) {
        return;
    }
    Qraft__SchedulePause p = QRAFT__SCHEDULE_PAUSE__INIT;
    p.schedule_id = r->schedule_id;
    p.paused = r->paused;
    if (!r->paused) {
        Qraft__Schedule *sc = NULL;
        struct qr_store_txn *txn = NULL;
        int rv = qr_store_txn_begin(ops->store, false, &txn);
        if (rv == 0) {
            rv = qr_store_schedule_get(txn, r->schedule_id, &sc);
            qr_store_txn_abort(txn);
        }
        if (rv == QR_ENOTFOUND) {
            qr_op_error(op, req->id, QRAFT__STATUS__NOT_FOUND,
                        "schedule %.64s not found", r->schedule_id);
            return;
        }
        struct qr_cron cron;
        char err[QR_ERRMSG_BYTES];
        if (rv == 0) {
            rv = qr_cron_parse(sc->cron, &cron, err, sizeof err);
        }
        if (rv == 0) {
            rv = qr_cron_next(&cron, qr_cluster_now_ms(ops->cluster),
                              &p.next_slot_ms);
        }
        if (sc != NULL) {
            qraft__schedule__free_unpacked(sc, NULL);
        }
        if (rv != 0) {
            qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL,
                        "computing the next slot: %s", qr_strerror(rv));
            return;
        }
    }
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_SCHEDULE_PAUSE;
    cmd.schedule_pause = &p;
    qr_op_propose_ok(op, req, &cmd);
}

/* Reads: deep copies, with the state of each last fired message filled in
 * from this node's store. */
struct schedule_list {
    struct pb_list list; /* of Qraft__Schedule */
    struct qr_store_txn *txn;
    uint64_t now_ms;
};

static int collect_schedule(void *arg, const Qraft__Schedule *sc)
{
    struct schedule_list *l = arg;
    if (pb_list_add(&l->list, &sc->base) != 0) {
        return 1;
    }
    Qraft__Schedule *copy = (Qraft__Schedule *)l->list.items[l->list.n - 1];
    for (size_t i = 0; i < copy->n_last_fired; i++) {
        Qraft__Message *m = NULL;
        int rv = qr_store_msg_get(l->txn, copy->last_fired[i]->message_id, &m);
        if (rv == 0) {
            copy->last_fired[i]->state = reported_state(m, l->now_ms);
            qraft__message__free_unpacked(m, NULL);
        } else if (rv != QR_ENOTFOUND) {
            l->list.rv = rv;
            return 1;
        }
    }
    return 0;
}

static void handle_schedule_read(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_ops *ops = op->ops;
    bool one = req->body_case == QRAFT__REQUEST__BODY_SCHEDULE_GET;
    const char *id = one ? req->schedule_get->schedule_id : NULL;
    if (one && !schedule_id_ok(op, req, id)) {
        return;
    }
    struct schedule_list l = {.now_ms = qr_cluster_now_ms(ops->cluster)};
    int rv = qr_store_txn_begin(ops->store, false, &l.txn);
    if (rv == 0) {
        if (one) {
            Qraft__Schedule *sc = NULL;
            rv = qr_store_schedule_get(l.txn, id, &sc);
            if (rv == 0) {
                collect_schedule(&l, sc);
                qraft__schedule__free_unpacked(sc, NULL);
            }
        } else {
            rv = qr_store_schedule_list(l.txn, collect_schedule, &l);
        }
        qr_store_txn_abort(l.txn);
    }
    rv = pb_list_status(&l.list, rv);
    if (rv == QR_ENOTFOUND) {
        qr_op_error(op, req->id, QRAFT__STATUS__NOT_FOUND,
                    "schedule %.64s not found", id);
    } else if (rv != 0) {
        qr_op_store_error(op, req->id, rv);
    } else {
        Qraft__ScheduleListResponse sl = QRAFT__SCHEDULE_LIST_RESPONSE__INIT;
        sl.n_schedules = l.list.n;
        sl.schedules = (Qraft__Schedule **)l.list.items;
        Qraft__Response resp = QRAFT__RESPONSE__INIT;
        resp.id = req->id;
        resp.body_case = QRAFT__RESPONSE__BODY_SCHEDULES;
        resp.schedules = &sl;
        qr_op_reply(op, &resp);
    }
    pb_list_free(&l.list);
}

/* ------------------------------------------------------------------------ */
/* Linearizable reads.
 *
 * A read is held until the leader has proven, after the read arrived, that
 * it still leads, and this node has applied the index the leader gave then.
 * Held reads wait for the next round; one round is in flight at a time, so
 * however many reads arrive, each costs one raft barrier (on the leader)
 * or one peer request plus the leader's barrier (on a follower) shared by
 * all that arrived meanwhile. */

/* A follower's read-index request waits at most this long for the leader;
 * a read then at most this long for this node to apply that far. */
#define READ_INDEX_TIMEOUT_MS 5000
#define READ_APPLY_TIMEOUT_MS 5000

struct qr_held_read {
    struct qr_call *call; /* holds the op */
    struct qr_held_read *next;
    /* Owned copy of the read; NULL for a follower's read-index request
     * (answered with the index). */
    Qraft__Request *req;
    uint64_t index;
};

struct qr_read_round {
    struct qr_ops *ops;
    struct qr_held_read *reads;
    uint64_t leader_id; /* the leader asked; 0: this node's own barrier */
    bool abandoned;     /* its leader went away; its reads were answered */
};

static const struct route *find_route(Qraft__Request__BodyCase kind);

/* Reads that wait for a linearizable read index unless they say stale. */
static bool is_linear_read(const Qraft__Request *req)
{
    switch (req->body_case) {
        case QRAFT__REQUEST__BODY_GET:
        case QRAFT__REQUEST__BODY_LIST:
        case QRAFT__REQUEST__BODY_DLQ_LIST:
        case QRAFT__REQUEST__BODY_EVENTS:
        case QRAFT__REQUEST__BODY_STATUS:
        case QRAFT__REQUEST__BODY_QUEUE_GET:
        case QRAFT__REQUEST__BODY_QUEUE_LIST:
        case QRAFT__REQUEST__BODY_SCHEDULE_GET:
        case QRAFT__REQUEST__BODY_SCHEDULE_LIST:
        case QRAFT__REQUEST__BODY_GROUP_GET:
        case QRAFT__REQUEST__BODY_GROUP_LIST:
            return !req->stale;
        case QRAFT__REQUEST__BODY_KEYS:
            return !req->stale && !req->keys->rotate;
        default:
            return false;
    }
}

static void read_free(struct qr_held_read *r)
{
    if (r->req != NULL) {
        protobuf_c_message_free_unpacked(&r->req->base, NULL);
    }
    qr_call_free(r->call);
    free(r);
}

/* Answers a read that cannot be served linearizably: UNAVAILABLE (nothing
 * is known; retrying is always safe). */
static void read_fail(struct qr_held_read *r, const char *why)
{
    qr_op_error(r->call->op, r->call->id, QRAFT__STATUS__UNAVAILABLE, "%s",
                why);
    read_free(r);
}

static void read_serve(struct qr_held_read *r)
{
    struct qr_op *op = r->call->op;
    if (r->req == NULL) {
        Qraft__ReadIndexResponse ri = QRAFT__READ_INDEX_RESPONSE__INIT;
        ri.index = r->index;
        Qraft__Response resp = QRAFT__RESPONSE__INIT;
        resp.id = r->call->id;
        resp.body_case = QRAFT__RESPONSE__BODY_READ_INDEX;
        resp.read_index = &ri;
        qr_op_reply(op, &resp);
    } else if (!op->answered) {
        find_route(r->req->body_case)->handler(op, r->req);
    }
    read_free(r);
}

static void on_read_caught_up(void *data, int status)
{
    struct qr_held_read *r = data;
    if (status == 0) {
        read_serve(r);
    } else {
        read_fail(r, status == QR_ETIMEOUT
                         ? "this node is too far behind the leader to answer "
                           "now; retry, or ask for a stale read"
                         : "shutting down");
    }
}

/* Each read of the list goes on: with status 0, once this node applied
 * index; else answered UNAVAILABLE with why. */
static void reads_proceed(struct qr_ops *ops,
                          struct qr_held_read *list,
                          int status,
                          uint64_t index,
                          const char *why)
{
    while (list != NULL) {
        struct qr_held_read *r = list;
        list = r->next;
        r->next = NULL;
        if (status != 0) {
            read_fail(r, why);
            continue;
        }
        r->index = index;
        if (r->req == NULL || index <= qr_cluster_applied(ops->cluster)) {
            read_serve(r);
        } else if (qr_cluster_wait_applied(ops->cluster, index,
                                           READ_APPLY_TIMEOUT_MS,
                                           on_read_caught_up, r) != 0) {
            read_fail(r, "shutting down");
        }
    }
}

static void reads_kick(struct qr_ops *ops);

static void round_finish(struct qr_read_round *round,
                         int status,
                         uint64_t index,
                         const char *why)
{
    struct qr_ops *ops = round->ops;
    struct qr_held_read *reads = round->reads;
    if (ops->round == round) {
        ops->round = NULL;
    }
    free(round);
    reads_proceed(ops, reads, status, index, why);
    reads_kick(ops);
}

static void on_round_barrier(void *data, int status, uint64_t index)
{
    round_finish(data, status, index,
                 "leadership was lost before this read could be confirmed; "
                 "retry shortly");
}

static void on_round_answer(void *data, int status, const Qraft__Response *resp)
{
    struct qr_read_round *round = data;
    if (round->abandoned) {
        free(round);
        return;
    }
    if (status == 0 && resp->status == QRAFT__STATUS__OK &&
        resp->body_case == QRAFT__RESPONSE__BODY_READ_INDEX) {
        round_finish(round, 0, resp->read_index->index, NULL);
        return;
    }
    if (status == 0 && resp->status == QRAFT__STATUS__BAD_REQUEST) {
        /* A leader from before read indexes (a rolling upgrade): reads
         * are served as that version served them, from this node's store,
         * until the leader runs this version too. */
        if (!round->ops->warned_old_leader) {
            round->ops->warned_old_leader = true;
            QR_WARN("rpc",
                    "the leader does not know read-index requests (an "
                    "older version): reads here are served from this "
                    "node's store, possibly stale, until it is upgraded");
        }
        round_finish(round, 0, 0, NULL);
        return;
    }
    char why[300];
    snprintf(why, sizeof why,
             "the leader did not confirm this read (%s); nothing is known; "
             "retry shortly",
             status != 0 ? qr_strerror(status)
             : resp->error != NULL && resp->error[0] != '\0' ? resp->error
                                                             : "no read index");
    round_finish(round, QR_EUNAVAIL, 0, why);
}

/* A follower's round: asks the leader for a read index. 0, or why not. */
static int ask_leader(struct qr_ops *ops,
                      struct qr_read_round *round,
                      const char **why)
{
    uint64_t leader_id = 0;
    qr_cluster_leader(ops->cluster, &leader_id, NULL);
    if (leader_id == 0) {
        *why = "no leader at the moment; retry shortly";
        return QR_EUNAVAIL;
    }
    if (leader_id == ops->config->id) {
        *why = "the leader is catching up; retry shortly";
        return QR_EUNAVAIL;
    }
    char leader_rpc[QR_ADDR_MAX];
    qr_shards_node_addrs(ops->shards, leader_id, leader_rpc, NULL);
    if (leader_rpc[0] == '\0' ||
        qr_peer_set_target(&ops->shards->peer, leader_rpc) != 0) {
        *why = "the leader's address is not known here yet; retry shortly";
        return QR_EUNAVAIL;
    }
    Qraft__ReadIndexRequest ri = QRAFT__READ_INDEX_REQUEST__INIT;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_READ_INDEX;
    req.read_index = &ri;
    round->leader_id = leader_id;
    if (qr_peer_call(&ops->shards->peer, &req, READ_INDEX_TIMEOUT_MS,
                     on_round_answer, round) != 0) {
        *why =
            "the leader could not be asked (peer queue full); retry "
            "shortly";
        return QR_EUNAVAIL;
    }
    return 0;
}

/* Starts a round for the reads waiting, unless one is in flight. */
static void reads_kick(struct qr_ops *ops)
{
    if (ops->round != NULL || ops->reads_head == NULL) {
        return;
    }
    struct qr_held_read *reads = ops->reads_head;
    ops->reads_head = ops->reads_tail = NULL;
    ops->n_reads = 0;
    struct qr_read_round *round = calloc(1, sizeof *round);
    if (ops->closing || round == NULL) {
        free(round);
        reads_proceed(ops, reads, QR_EUNAVAIL, 0,
                      ops->closing ? "shutting down" : "out of memory");
        return;
    }
    round->ops = ops;
    round->reads = reads;
    ops->round = round;
    ops->n_rounds++;
    const char *why = NULL;
    int rv;
    if (qr_cluster_serving(ops->cluster)) {
        rv = qr_cluster_read_barrier(ops->cluster, on_round_barrier, round);
        why = "this node is no longer the leader; retry shortly";
    } else {
        rv = ask_leader(ops, round, &why);
    }
    if (rv != 0) {
        round_finish(round, rv, 0, why);
    }
}

/* Holds req (borrowed; copied) until it may be served linearizably, or,
 * index_only, answers the read index (a follower's read-index request). */
static void hold_read(struct qr_op *op,
                      const Qraft__Request *req,
                      bool index_only)
{
    struct qr_ops *ops = op->ops;
    struct qr_held_read *r = calloc(1, sizeof *r);
    struct qr_call *call = r != NULL ? qr_call_new(op, req) : NULL;
    if (call == NULL) {
        free(r);
        qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
        return;
    }
    r->call = call;
    if (!index_only) {
        r->req = (Qraft__Request *)qr_ops_copy_pb(&req->base);
        if (r->req == NULL) {
            qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
            read_free(r);
            return;
        }
    }
    if (ops->reads_tail != NULL) {
        ops->reads_tail->next = r;
    } else {
        ops->reads_head = r;
    }
    ops->reads_tail = r;
    ops->n_reads++;
    reads_kick(ops);
}

/* Peer: a follower's linearizable reads need this leader's read index. */
static void handle_read_index(struct qr_op *op, const Qraft__Request *req)
{
    hold_read(op, req, true);
}

/* Each loop iteration: a follower's round whose leader is gone (an
 * election, a partition: raft forgets the leader within an election
 * timeout) will not be answered in time: its reads are answered
 * UNAVAILABLE now and a new round goes to the new leader, if any. */
static void relays_sweep(struct qr_ops *ops, uint64_t leader_id);

static void on_leader_watch(uv_check_t *h)
{
    struct qr_ops *ops = h->data;
    uint64_t leader_id = 0;
    qr_cluster_leader(ops->cluster, &leader_id, NULL);
    /* Relays are looked at when the leader changes (or some were left). */
    if (ops->relays != NULL &&
        (leader_id != ops->watch_leader || ops->relays_left)) {
        relays_sweep(ops, leader_id);
    }
    ops->watch_leader = leader_id;
    struct qr_read_round *round = ops->round;
    if (round == NULL || round->leader_id == 0 ||
        leader_id == round->leader_id) {
        return;
    }
    round->abandoned = true; /* on_round_answer frees it */
    struct qr_held_read *reads = round->reads;
    round->reads = NULL;
    ops->round = NULL;
    reads_proceed(ops, reads, QR_EUNAVAIL, 0,
                  "this node lost the leader before the read could be "
                  "confirmed; nothing is known; retry shortly");
    reads_kick(ops);
}

static const struct route routes[] = {
    /* kind, name, handler, needs_leader, forward */
    {QRAFT__REQUEST__BODY_PUBLISH, "publish", handle_publish, true, true},
    {QRAFT__REQUEST__BODY_GET, "get", handle_get, false, false},
    {QRAFT__REQUEST__BODY_CANCEL, "cancel", handle_cancel, true, true},
    {QRAFT__REQUEST__BODY_LIST, "list", handle_list, false, false},
    {QRAFT__REQUEST__BODY_DLQ_LIST, "dlq list", handle_list, false, false},
    {QRAFT__REQUEST__BODY_DLQ_REPLAY, "dlq replay", handle_dlq_replay, true,
     true},
    {QRAFT__REQUEST__BODY_DLQ_DELETE, "dlq delete", handle_dlq_delete, true,
     true},
    {QRAFT__REQUEST__BODY_CANCEL_MANY, "cancel many", handle_cancel_many, true,
     true},
    {QRAFT__REQUEST__BODY_EVENTS, "events", handle_events, false, false},
    {QRAFT__REQUEST__BODY_STATUS, "status", handle_status, false, false},
    {QRAFT__REQUEST__BODY_QUEUE_UPSERT, "queue upsert", handle_queue_upsert,
     true, true},
    {QRAFT__REQUEST__BODY_QUEUE_PAUSE, "queue pause", handle_queue_pause, true,
     true},
    {QRAFT__REQUEST__BODY_QUEUE_DELETE, "queue delete", handle_queue_delete,
     true, true},
    {QRAFT__REQUEST__BODY_QUEUE_GET, "queue get", handle_queue_read, false,
     false},
    {QRAFT__REQUEST__BODY_QUEUE_LIST, "queue list", handle_queue_read, false,
     false},
    /* Reading keys is local; rotating checks for the leader itself. */
    {QRAFT__REQUEST__BODY_KEYS, "keys", handle_keys, false, false},
    /* An add waits for the new node to catch up, longer than a relay may
     * wait: the client goes to the leader itself. */
    {QRAFT__REQUEST__BODY_MEMBER_ADD, "add", handle_membership, true, false},
    {QRAFT__REQUEST__BODY_MEMBER_REMOVE, "remove", handle_membership, true,
     true},
    /* Not forwarded: the leader changes, so a relay's peer connection would
     * move away before the answer; the client goes to the leader. */
    {QRAFT__REQUEST__BODY_TRANSFER, "transfer", handle_membership, true, false},
    {QRAFT__REQUEST__BODY_SCHEDULE_UPSERT, "schedule upsert",
     handle_schedule_upsert, true, true},
    {QRAFT__REQUEST__BODY_SCHEDULE_GET, "schedule get", handle_schedule_read,
     false, false},
    {QRAFT__REQUEST__BODY_SCHEDULE_LIST, "schedule list", handle_schedule_read,
     false, false},
    {QRAFT__REQUEST__BODY_SCHEDULE_DELETE, "schedule delete",
     handle_schedule_delete, true, true},
    {QRAFT__REQUEST__BODY_SCHEDULE_PAUSE, "schedule pause",
     handle_schedule_pause, true, true},
    {QRAFT__REQUEST__BODY_GROUP_CHANGE, "group change", handle_group_change,
     true, true},
    {QRAFT__REQUEST__BODY_GROUP_GET, "group get", handle_group_get, false,
     false},
    {QRAFT__REQUEST__BODY_GROUP_LIST, "group list", handle_group_list, false,
     false},
    /* Peer traffic, for the leader itself. */
    {QRAFT__REQUEST__BODY_HEARTBEAT, "heartbeat", handle_heartbeat, true,
     false},
    {QRAFT__REQUEST__BODY_RESULTS, "results", handle_results, true, false},
    {QRAFT__REQUEST__BODY_READ_INDEX, "read index", handle_read_index, true,
     false},
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

/* Node-to-node requests: they need the peer token. */
static bool is_peer_request(Qraft__Request__BodyCase kind)
{
    return kind == QRAFT__REQUEST__BODY_HEARTBEAT ||
           kind == QRAFT__REQUEST__BODY_RESULTS ||
           kind == QRAFT__REQUEST__BODY_READ_INDEX;
}

/* Write forwarding: a follower passes a client's write to the leader over
 * its peer connection and relays the answer under the client's request id.
 * When the peer call fails the request may or may not have reached the
 * leader, so the client hears UNKNOWN_OUTCOME (libqraft retries a publish
 * with its idempotency key); when it was never sent, UNAVAILABLE. */
/* Forwarding waits at most this long for the leader's answer, and then
 * for this node to apply what the leader applied. */
#define FORWARD_TIMEOUT_MS 30000

/* A leader's answer held until this node has applied as far as the leader
 * had when it answered (read-your-writes on the node written through). */
struct held_answer {
    struct qr_call *call;
    uint8_t *packed; /* the answer, packed */
    size_t len;
};

static void relay_link(struct qr_ops *ops,
                       struct qr_call *call,
                       uint64_t leader)
{
    call->relay_leader = leader;
    call->relay_prev = NULL;
    call->relay_next = ops->relays;
    if (ops->relays != NULL) {
        ops->relays->relay_prev = call;
    }
    ops->relays = call;
    call->relay_linked = true;
}

static void relay_unlink(struct qr_ops *ops, struct qr_call *call)
{
    if (!call->relay_linked) {
        return;
    }
    if (call->relay_prev != NULL) {
        call->relay_prev->relay_next = call->relay_next;
    } else {
        ops->relays = call->relay_next;
    }
    if (call->relay_next != NULL) {
        call->relay_next->relay_prev = call->relay_prev;
    }
    call->relay_linked = false;
}

/* Relays a held answer now. */
static void send_held(struct held_answer *h)
{
    struct qr_call *call = h->call;
    Qraft__Response *resp = qraft__response__unpack(NULL, h->len, h->packed);
    if (resp == NULL) {
        qr_op_error(call->op, call->id, QRAFT__STATUS__INTERNAL,
                    "out of memory; the request was applied by the leader");
        return;
    }
    resp->id = call->id;
    qr_op_reply(call->op, resp);
    qraft__response__free_unpacked(resp, NULL);
}

static void on_caught_up(void *data, int status)
{
    struct held_answer *h = data;
    struct qr_call *call = h->call;
    if (call->relay_done) { /* relayed already: this node lost the leader */
        free(h->packed);
        free(h);
        qr_call_free(call);
        return;
    }
    relay_unlink(call->op->ops, call);
    Qraft__Response *resp = qraft__response__unpack(NULL, h->len, h->packed);
    if (status == QR_ETIMEOUT) {
        /* The write is applied on the leader; this node lags. The answer
         * is still the truth about the write (a linearizable read here
         * waits for it anyway). */
        QR_WARN("rpc",
                "request %" PRIu64
                ": this node did not apply the leader's index in time; "
                "answering anyway",
                call->id);
    }
    if (status == QR_ECANCELED) {
        qr_op_error(call->op, call->id, QRAFT__STATUS__UNAVAILABLE,
                    "shutting down; the request was applied by the leader");
    } else if (resp == NULL) {
        qr_op_error(call->op, call->id, QRAFT__STATUS__INTERNAL,
                    "out of memory; the request was applied by the leader");
    } else {
        resp->id = call->id;
        qr_op_reply(call->op, resp);
    }
    if (resp != NULL) {
        qraft__response__free_unpacked(resp, NULL);
    }
    free(h->packed);
    free(h);
    qr_call_free(call);
}

/* Holds the leader's answer (borrowed) for call until this node applied
 * resp->applied_index; false (nothing held) when that cannot be done. */
static bool hold_answer(struct qr_call *call, const Qraft__Response *resp)
{
    struct qr_ops *ops = call->op->ops;
    struct held_answer *h = calloc(1, sizeof *h);
    if (h == NULL) {
        return false;
    }
    h->call = call;
    h->len = qraft__response__get_packed_size(resp);
    h->packed = malloc(h->len > 0 ? h->len : 1);
    if (h->packed == NULL) {
        free(h);
        return false;
    }
    qraft__response__pack(resp, h->packed);
    if (qr_cluster_wait_applied(ops->cluster, resp->applied_index,
                                FORWARD_TIMEOUT_MS, on_caught_up, h) != 0) {
        free(h->packed);
        free(h);
        return false;
    }
    call->held = h; /* still a relay: on_leader_watch may send it sooner */
    return true;
}

static void on_forwarded(void *data, int status, const Qraft__Response *resp)
{
    struct qr_call *call = data;
    if (call->relay_done) { /* answered already: this node lost the leader */
        qr_call_free(call);
        return;
    }
    if (status == 0) {
        if (resp->applied_index > qr_cluster_applied(call->op->ops->cluster) &&
            hold_answer(call, resp)) {
            return; /* on_caught_up answers */
        }
        relay_unlink(call->op->ops, call);
        Qraft__Response relay = *resp;
        relay.id = call->id;
        qr_op_reply(call->op, &relay);
        qr_call_free(call);
        return;
    }
    relay_unlink(call->op->ops, call);
    if (status == QR_ECANCELED) {
        qr_op_error(call->op, call->id, QRAFT__STATUS__UNAVAILABLE,
                    "shutting down");
    } else if (status == QR_ENOTSENT) {
        /* Never reached the leader (it may have just died): nothing was
         * applied, so the client may simply retry. */
        qr_op_error(call->op, call->id, QRAFT__STATUS__UNAVAILABLE,
                    "the leader could not be reached; nothing was applied; "
                    "retry shortly");
    } else {
        qr_op_error(call->op, call->id, QRAFT__STATUS__UNKNOWN_OUTCOME,
                    "forwarding to the leader failed (%s); the request may "
                    "or may not have been applied",
                    qr_strerror(status));
    }
    qr_call_free(call);
}

static bool forward(struct qr_op *op, Qraft__Request *req)
{
    struct qr_ops *ops = op->ops;
    uint64_t leader_id = 0;
    qr_cluster_leader(ops->cluster, &leader_id, NULL);
    char leader_rpc[QR_ADDR_MAX];
    if (leader_id == 0 || leader_id == ops->config->id) {
        return false;
    }
    qr_shards_node_addrs(ops->shards, leader_id, leader_rpc, NULL);
    if (leader_rpc[0] == '\0' ||
        qr_peer_set_target(&ops->shards->peer, leader_rpc) != 0) {
        return false; /* not advertised yet: the client is redirected */
    }
    struct qr_call *call = qr_call_new(op, req);
    if (call == NULL) {
        return false;
    }
    if (qr_peer_call(&ops->shards->peer, req, FORWARD_TIMEOUT_MS, on_forwarded,
                     call) != 0) {
        qr_call_free(call);
        return false;
    }
    relay_link(ops, call, leader_id);
    return true;
}

/* Answers every forwarded write whose leader is no longer this node's
 * leader (an election, or a partition: raft forgets an unreachable leader
 * within an election timeout), rather than let its client wait for a peer
 * call that may hang until the partition heals: a held answer is relayed
 * (the write is applied), one still owed by the old leader is
 * UNKNOWN_OUTCOME. Their peer callbacks only free them later.
 *
 * While the peer connection is down (the old leader died: its socket was
 * reset), the calls are left to the peer: those never written end soon
 * with QR_ENOTSENT (a connect fails or times out), which tells the client
 * that nothing was applied. A connection still up to a leader that no
 * longer answers is the partition case. */
static void relays_sweep(struct qr_ops *ops, uint64_t leader_id)
{
    bool connected = qr_peer_connected(&ops->shards->peer);
    struct qr_call *next;
    ops->relays_left = false;
    for (struct qr_call *call = ops->relays; call != NULL; call = next) {
        next = call->relay_next;
        if (call->relay_leader == leader_id) {
            continue;
        }
        if (call->held == NULL && !connected) {
            ops->relays_left = true; /* looked at again next iteration */
            continue;
        }
        relay_unlink(ops, call);
        call->relay_done = true;
        if (call->held != NULL) {
            send_held(call->held);
        } else {
            qr_op_error(call->op, call->id, QRAFT__STATUS__UNKNOWN_OUTCOME,
                        "this node lost the leader after forwarding the "
                        "request to it; the request may or may not have been "
                        "applied (retry a publish with the same idempotency "
                        "key)");
        }
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
    if (is_peer_request(req->body_case) && !as_peer) {
        qr_op_error(op, req->id, QRAFT__STATUS__UNAUTHORIZED,
                    "unauthorized: %s is a node-to-node request and needs the "
                    "peer token",
                    route->name);
        return;
    }
    if (!admit(op, req)) {
        return;
    }
    if (route->needs_leader && !qr_cluster_serving(ops->cluster)) {
        if (!route->forward || !forward(op, req)) {
            qr_op_not_leader(op, req->id);
        }
        return;
    }
    if (is_linear_read(req)) {
        hold_read(op, req, false);
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
    op->reply_cb = cb;
    op->reply_data = data;
    ops->n_requests++;
    /* Only forwarding needs it mutable (qr_peer_call); it is not changed. */
    dispatch(op, (Qraft__Request *)req, (flags & QR_OPS_PEER) != 0);
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
    uv_check_init(loop, &ops->leader_watch);
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
    uv_check_stop(&ops->leader_watch);
    uv_close((uv_handle_t *)&ops->leader_watch, on_watch_close);
}
