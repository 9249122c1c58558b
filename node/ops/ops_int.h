/* What the files of the operations layer share, private to node/ops/: one
 * request's op and its answer (ops.c), a call that is answered later, the
 * reply helpers, and each file's operations for the dispatch table.
 *
 * Invariants:
 * - An op is answered exactly once (qr_op_reply drops a second answer);
 *   it lives while the submit or a call holds a reference.
 * - Every operation answers its op now or hands it to a call that will:
 *   an operation never returns having dropped a request. */
#ifndef QR_OPS_INT_H
#define QR_OPS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ops/ops.h"
#include "qraft.pb-c.h"

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
    uint64_t id;    /* the request's, for the answer of last resort */
    Qraft__Request__BodyCase kind; /* the request's, for the metrics */
    uint64_t start_us;             /* qr_metrics_now_us at submit */
    /* A publish this node took while tracing is on: its span, ended by
     * the answer (ops.c, trace_publish). */
    bool traced;
    struct qr_trace_span span;
    qr_ops_reply_cb reply_cb;
    void *reply_data;
};

struct held_answer;

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
    /* Notify: the answer, read before the proposal, sent once it applied
     * (owned: free with protobuf_c_message_free_unpacked). */
    Qraft__NotifyResponse *notify;
    /* Member add: the request, kept while the new node is checked (owned:
     * free with protobuf_c_message_free_unpacked). */
    Qraft__MemberAddRequest *member_add;
    /* A write forwarded to relay_leader, in ops->relays until answered;
     * held: the leader's answer, waiting for this node to apply it. */
    LIST_ENTRY(qr_call) relay_link;
    uint64_t relay_leader;
    bool relay_linked;
    bool relay_done; /* answered already (the leader went away) */
    struct held_answer *held;
};

/* Per-item context of a call with many proposals: the call and which
 * item. */
struct qr_bulk_item {
    struct qr_call *call;
    size_t i;
};

/* An operation: answers op (borrowed) for req (borrowed) now or later. */
typedef void (*qr_op_fn)(struct qr_op *op, const Qraft__Request *req);

/* ------------------------------------------------------------------------ */
/* Answers (ops.c). */

/* Answers op with resp (borrowed), stamped (qr_ops_stamp); a second answer
 * is dropped. */
void qr_op_reply(struct qr_op *op, const Qraft__Response *resp);

/* Answers request id with status and a printf-style message. */
void qr_op_error(struct qr_op *op,
                 uint64_t id,
                 Qraft__Status status,
                 const char *fmt,
                 ...) __attribute__((format(printf, 4, 5)));

/* Answers request id with OK and no body. */
void qr_op_ok(struct qr_op *op, uint64_t id);

/* Maps a node error onto the status a client acts on. */
Qraft__Status qr_op_status_of(int rv);

/* Answers request id: where the leader is (NOT_LEADER), or UNAVAILABLE
 * when there is none, or it is this node catching up. */
void qr_op_not_leader(struct qr_op *op, uint64_t id);

/* Answers request id whose proposal (or membership change) was refused
 * before raft took it: rv QR_ENOTLEADER answers where the leader is
 * (qr_op_not_leader), any other rv its status with why. */
void qr_op_refused(struct qr_op *op, uint64_t id, int rv, const char *why);

/* Answers request id with a store read failure. A corrupt record is
 * named (the store's errmsg says which and what to do), never served. */
void qr_op_store_error(struct qr_op *op, uint64_t id, int rv);
/* Answers request id with the failure rv of reading the record kind
 * ("queue") named name: NOT_FOUND "<kind> <name> not found" for
 * QR_ENOTFOUND, else as qr_op_store_error. */
void qr_op_read_error(struct qr_op *op,
                      uint64_t id,
                      int rv,
                      const char *kind,
                      const char *name);

/* Runs req (borrowed) through its operation, with no more checks (a held
 * read, once it may be served). */
void qr_op_run(struct qr_op *op, const Qraft__Request *req);

/* Answers request id with OK and one body: the Qraft__Response oneof
 * member `field` (ptr, borrowed), whose body case is
 * QRAFT__RESPONSE__BODY_<CASE>. */
#define QR_OP_REPLY_BODY(op, id_, CASE, field, ptr)      \
    do {                                                 \
        Qraft__Response reply_ = QRAFT__RESPONSE__INIT;  \
        reply_.id = (id_);                               \
        reply_.body_case = QRAFT__RESPONSE__BODY_##CASE; \
        reply_.field = (ptr);                            \
        qr_op_reply((op), &reply_);                      \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Calls and proposals (ops.c). */

/* Returns a new call for req on op (it holds a reference to op), or NULL;
 * free with qr_call_free. */
struct qr_call *qr_call_new(struct qr_op *op, const Qraft__Request *req);
void qr_call_free(struct qr_call *call);

/* Proposes one packed command (ownership taken) for a call; answers and
 * frees the call on failure (false). */
bool qr_call_propose(struct qr_op *op,
                     struct qr_call *call,
                     struct qr_packed *cmd,
                     qr_cluster_propose_cb cb);

/* Packs cmd (borrowed) and proposes it for req; answers req itself when
 * that fails, else cb answers once the command is applied. */
void qr_op_propose(struct qr_op *op,
                   const Qraft__Request *req,
                   const Qraft__Command *cmd,
                   qr_cluster_propose_cb cb);

/* The error half of every "answer once applied" callback: when the proposal
 * failed (status, see qr_cluster_propose_cb; res is NULL then) or apply
 * refused the command (res->status), answers the call with apply's own
 * message, else the status's text, and returns false. Returns true, having
 * answered nothing, when the command applied cleanly: the caller answers
 * success. Never frees the call. */
bool qr_call_applied_ok(struct qr_call *call,
                        int status,
                        const struct qr_apply_result *res);

/* The write path of commands whose answer has no body (queue, schedule and
 * url group changes): proposes cmd (borrowed) for req and answers OK once
 * it is applied, or the error (qr_call_applied_ok). Answers req itself
 * when the proposal cannot be made. */
void qr_op_propose_ok(struct qr_op *op,
                      const Qraft__Request *req,
                      const Qraft__Command *cmd);

/* qr_op_propose and qr_op_propose_ok for a command of one body: the
 * Qraft__Command oneof member `field` (ptr, borrowed), whose body case is
 * QRAFT__COMMAND__BODY_<CASE>. */
#define QR_OP_PROPOSE(op, req, CASE, field, ptr, cb)  \
    do {                                              \
        Qraft__Command cmd_ = QRAFT__COMMAND__INIT;   \
        cmd_.body_case = QRAFT__COMMAND__BODY_##CASE; \
        cmd_.field = (ptr);                           \
        qr_op_propose((op), (req), &cmd_, (cb));      \
    } while (0)
#define QR_OP_PROPOSE_OK(op, req, CASE, field, ptr)   \
    do {                                              \
        Qraft__Command cmd_ = QRAFT__COMMAND__INIT;   \
        cmd_.body_case = QRAFT__COMMAND__BODY_##CASE; \
        cmd_.field = (ptr);                           \
        qr_op_propose_ok((op), (req), &cmd_);         \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Record reads (ops.c). */

/* A deep copy of any protobuf message (pack, then unpack): returns new
 * (free with protobuf_c_message_free_unpacked) or NULL. */
ProtobufCMessage *qr_ops_copy_pb(const ProtobufCMessage *m);

/* Record reads (queues, schedules, url groups): deep copies taken in one
 * read transaction, so the answer outlives it. items[i] is a record of the
 * walked type (cast the array to it for the response). */
struct qr_pb_list {
    ProtobufCMessage **items; /* owned, each owned */
    size_t n, cap;
    int rv; /* why the walk stopped early: -ENOMEM; 0 otherwise */
};

/* Appends a deep copy of m. Returns 0, or 1 (a store walk's "stop") with
 * l->rv set: callers of the walk then answer l->rv. */
int qr_pb_list_add(struct qr_pb_list *l, const ProtobufCMessage *m);
/* The walk's outcome: rv from the store walk (1: a callback stopped it). */
int qr_pb_list_status(const struct qr_pb_list *l, int rv);
void qr_pb_list_free(struct qr_pb_list *l);

/* ------------------------------------------------------------------------ */
/* Messages and the DLQ (messages.c). */

/* What a bulk request does to each message (or workflow run): one command
 * per id. */
enum qr_bulk_kind {
    QR_BULK_REPLAY,
    QR_BULK_DELETE,
    QR_BULK_CANCEL,
    QR_BULK_WORKFLOW_CANCEL,
    QR_BULK_WORKFLOW_RESUME,
    QR_BULK_WORKFLOW_RESTART,
    QR_BULK_WORKFLOW_CALLBACK,
};

/* How a bulk request is answered: `paged` gives a BulkPageResponse with
 * `cursor` (borrowed; "": nothing more), else a BulkResponse. cursor is
 * NULL when the client gave the ids (then there must be some), set when
 * a filter selected them (then none is an empty answer). */
struct qr_bulk_page {
    bool paged;
    const char *cursor;
};

/* One command per id (borrowed), each answered in one BulkResponse. */
void qr_op_bulk(struct qr_op *op,
                const Qraft__Request *req,
                size_t n_ids,
                char **ids,
                enum qr_bulk_kind kind,
                const struct qr_bulk_page *page);

/* The messages a bulk request selects by filter: at most max ids, in walk
 * order, and where the walk got to. */
struct qr_selection {
    const Qraft__MessageFilter *filter;
    bool cancellable; /* only messages a Cancel still changes */
    bool count_only;  /* count every match in n; no ids, no max */
    char **ids;
    size_t n, max;
    bool more; /* a further match exists past the last id taken */
    uint64_t last_ms;
    char last_id[QR_ID_BYTES + 64];
    int rv;
};

/* A store walk's callback (arg: a struct qr_selection). */
int qr_selection_collect(void *arg, const Qraft__Message *m);
void qr_selection_free(struct qr_selection *s);

/* The most ids one bulk request selects. */
uint32_t qr_bulk_limit(uint32_t limit);

/* Answers BAD_REQUEST and returns true when f (may be NULL) sets a field
 * this build cannot evaluate yet, or a field for reads only (source
 * message ids) in a write. */
bool qr_op_refuse_unsupported(struct qr_op *op,
                              const Qraft__Request *req,
                              const Qraft__MessageFilter *f);

/* "delivering" is not stored: a pending or retrying message whose time has
 * come is in flight (or about to be), and is reported so. */
Qraft__MessageState qr_op_reported_state(const Qraft__Message *m,
                                         uint64_t now_ms);

bool qr_op_id_listed(char **ids, size_t n, const char *id);

/* ------------------------------------------------------------------------ */
/* Url groups (groups.c). */

/* The group named name, as this node has applied it: 0 with *out (new;
 * free with qraft__url_group__free_unpacked), QR_ENOTFOUND, or an error. */
int qr_ops_load_group(struct qr_ops *ops,
                      const char *name,
                      Qraft__UrlGroup **out);

/* ------------------------------------------------------------------------ */
/* Linearizable reads (reads.c) and write forwarding (forward.c). */

/* Reads that wait for a linearizable read index unless they say stale. */
bool qr_ops_is_linear_read(const Qraft__Request *req);

/* Reads answered from this node's replica (the kinds above, stale or not,
 * status aside): a node that is not a member refuses them. */
bool qr_ops_reads_replica(const Qraft__Request *req);

/* Holds req (borrowed; copied) until it may be served linearizably, or,
 * index_only, answers the read index (a follower's read-index request). */
void qr_op_hold_read(struct qr_op *op,
                     const Qraft__Request *req,
                     bool index_only);

/* Each loop iteration, with the leader now known (0: none): a follower's
 * round whose leader is gone is failed and a new one started. */
void qr_ops_reads_watch(struct qr_ops *ops, uint64_t leader_id);

/* Forwards req (borrowed) to the leader and relays its answer; false when
 * it cannot be (no leader, not advertised yet): the caller answers. */
bool qr_op_forward(struct qr_op *op, Qraft__Request *req);

/* Answers every forwarded write whose leader is no longer leader_id. */
void qr_ops_relays_sweep(struct qr_ops *ops, uint64_t leader_id);

/* ------------------------------------------------------------------------ */
/* Operations, one file per resource. */

/* publish.c */
void qr_op_publish(struct qr_op *op, const Qraft__Request *req);
/* messages.c */
void qr_op_get(struct qr_op *op, const Qraft__Request *req);
void qr_op_list(struct qr_op *op, const Qraft__Request *req);
void qr_op_cancel(struct qr_op *op, const Qraft__Request *req);
void qr_op_cancel_many(struct qr_op *op, const Qraft__Request *req);
void qr_op_cancel_count(struct qr_op *op, const Qraft__Request *req);
/* events.c */
void qr_op_events(struct qr_op *op, const Qraft__Request *req);
/* dlq.c */
void qr_op_dlq_replay(struct qr_op *op, const Qraft__Request *req);
void qr_op_dlq_delete(struct qr_op *op, const Qraft__Request *req);
/* queues.c */
void qr_op_queue_upsert(struct qr_op *op, const Qraft__Request *req);
void qr_op_queue_pause(struct qr_op *op, const Qraft__Request *req);
/* Flow control (flow.c). */
void qr_op_flow_control_update(struct qr_op *op, const Qraft__Request *req);
void qr_op_flow_control_read(struct qr_op *op, const Qraft__Request *req);
void qr_op_queue_delete(struct qr_op *op, const Qraft__Request *req);
void qr_op_queue_read(struct qr_op *op, const Qraft__Request *req);
/* schedules.c */
void qr_op_schedule_upsert(struct qr_op *op, const Qraft__Request *req);
void qr_op_schedule_delete(struct qr_op *op, const Qraft__Request *req);
void qr_op_schedule_pause(struct qr_op *op, const Qraft__Request *req);
void qr_op_schedule_read(struct qr_op *op, const Qraft__Request *req);
/* groups.c */
void qr_op_group_change(struct qr_op *op, const Qraft__Request *req);
void qr_op_group_get(struct qr_op *op, const Qraft__Request *req);
void qr_op_group_list(struct qr_op *op, const Qraft__Request *req);
/* workflows.c. A notify reaches at most this many runs waiting for its
 * event at once (a second notify reaches the next ones). */
#define QR_OPS_MAX_WAITERS 1000
void qr_op_workflow_run(struct qr_op *op, const Qraft__Request *req);
void qr_op_workflow_end(struct qr_op *op, const Qraft__Request *req);
void qr_op_wait(struct qr_op *op, const Qraft__Request *req);
void qr_op_notify(struct qr_op *op, const Qraft__Request *req);
void qr_op_waiters(struct qr_op *op, const Qraft__Request *req);
void qr_op_workflow_dlq(struct qr_op *op, const Qraft__Request *req);
/* workflow_logs.c */
void qr_op_workflow_logs(struct qr_op *op, const Qraft__Request *req);
/* admin.c */
void qr_op_status(struct qr_op *op, const Qraft__Request *req);
void qr_op_keys(struct qr_op *op, const Qraft__Request *req);
void qr_op_membership(struct qr_op *op, const Qraft__Request *req);
/* member_check.c: before node id is added, checks that it answers at
 * rpc_addr with this cluster's peer token, is node id with raft at
 * raft_addr, applies the cluster's feature level and has no configuration
 * of its own, and that raft_addr takes a connection. Strings are copied.
 * Returns 0 and cb fires once, from the loop (status 0, or QR_ECONFLICT
 * with why: what failed, for the operator); else cb never fires. */
typedef void (*qr_member_check_cb)(void *data, int status, const char *why);
int qr_ops_check_new_member(struct qr_ops *ops,
                            uint64_t id,
                            const char *raft_addr,
                            const char *rpc_addr,
                            qr_member_check_cb cb,
                            void *data);
/* peer.c */
void qr_op_member_probe(struct qr_op *op, const Qraft__Request *req);
void qr_op_heartbeat(struct qr_op *op, const Qraft__Request *req);
void qr_op_results(struct qr_op *op, const Qraft__Request *req);
void qr_op_read_index(struct qr_op *op, const Qraft__Request *req);

#endif /* QR_OPS_INT_H */
