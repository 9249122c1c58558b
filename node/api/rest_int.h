/* What the REST rooms (node/api/rest*.c) share, and nothing else includes
 * but them and the fuzz target (tests/fuzz/fuzz_json_bodies.c): the call a
 * request waits in for the RPC's answer (struct rest_call, owned by rest.c),
 * the helpers that run and answer one, the query and body parsers, the JSON
 * shapes several resources show, and each resource's handlers, which the
 * route table in rest.c calls.
 *
 * Ownership: every string a parser returns or fills in is pool memory of
 * the request it was given (h2o_mem_pool_t), valid until h2o disposes it;
 * every json_t * returned is a new reference; every json_t * passed to a
 * send_* helper is taken. Errors go into a caller's char[ERR_BYTES]. */
#ifndef QR_REST_INT_H
#define QR_REST_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <h2o.h>
#include <jansson.h>

#include "api/rest.h"
#include "qraft.pb-c.h"

#define ERR_BYTES 256
#define MAX_BATCH 1000
#define MAX_IDS 1000

/* ---------------------------------------------------------------------------
 * Routes (rest.c): what the route table hands a handler. */

/* What a route does with what it names, when its handler serves several
 * (the route table says which). */
enum rest_op {
    REST_GET,      /* one, or all when the route names none */
    REST_DELETE,   /* delete, cancel, or remove endpoints */
    REST_PAUSE,    /* a queue or a schedule */
    REST_RESUME,   /* a queue or a schedule */
    REST_GET_DEAD, /* a message only if dead-lettered (GET /v2/dlq/{id}) */
    REST_RETRY,    /* dead letters sent again */
    REST_ADD,      /* url group endpoints */
    REST_LOGS,     /* the log as {"logs"} (GET /v2/logs), not {"events"} */
    REST_ROTATE,   /* the signing keys */
    REST_RESTART,  /* a failed workflow run, from its start */
    REST_PIN,      /* a flow control key's limits */
    REST_UNPIN,
    REST_RESET, /* a flow control key's rate period */
};

/* The route's capture in req's raw path and the raw query (both borrowed
 * from req), and its op. */
struct rest_match {
    h2o_iovec_t capture; /* {id}, {queue}, {url} or {*}; {NULL, 0}: none */
    h2o_iovec_t query;   /* after '?'; {NULL, 0}: none */
    enum rest_op op;
};

/* A route's handler (the table in rest.c names each one's route): answers
 * req now or later. */
typedef void rest_handler(struct qr_rest *r,
                          h2o_req_t *req,
                          const struct rest_match *m);

/* ---------------------------------------------------------------------------
 * Calls awaiting the RPC (rest.c). */

struct rest_call;
typedef void (*rest_reply_fn)(struct rest_call *c,
                              size_t index,
                              const Qraft__Response *resp);
/* Builds the JSON a 200 answers from an OK response (see qr_rest_run): a new
 * reference, or NULL (out of memory: answered 500). */
typedef json_t *(*rest_json_fn)(struct rest_call *c,
                                const Qraft__Response *resp);

/* One RPC submission of a call (a batch has many). */
struct call_item {
    struct rest_call *call;
    size_t index;
};

struct rest_call {
    struct qr_rest *rest;
    h2o_req_t *req;             /* NULL once h2o disposed the request */
    LIST_ENTRY(rest_call) link; /* in rest->calls while req is alive */
    unsigned refs;
    bool answered;
    rest_reply_fn on_reply;
    /* Route state. */
    char *url;        /* publish: the destination echoed back */
    bool single;      /* DLQ retry of one id: answer {"messageId"};
                         events: answer {"logs"} (GET /v2/logs) */
    json_t *out;      /* batch: the answer array being filled */
    size_t n_pending; /* batch: submissions not answered yet */
    /* batch: the first element (by index) the node refused, and its HTTP
     * status (0: none yet). */
    size_t failed_at;
    int failed_status;
    char **urls; /* batch: each element's destination */
    struct call_item *items;
    size_t n_items;
    /* qr_rest_run: the body an OK answer must hold, and its JSON. */
    Qraft__Response__BodyCase want;
    rest_json_fn build;
    /* A write: what it did once the node answered OK (write_outcome), said
     * in the 500 that answers when its reply cannot be built; NULL for a
     * read. */
    const char *done;
};

/* A new call bound to req with one reference (the pool's), or NULL when
 * out of memory; dropped with qr_rest_call_unref, freed with the last. */
void qr_rest_call_unref(struct rest_call *c);
struct rest_call *qr_rest_call_new(struct qr_rest *r,
                                   h2o_req_t *req,
                                   rest_reply_fn on_reply);
/* Answers: json (taken) for a call, the 500 that says a write happened
 * when it cannot be built; {"error": message} (any bytes); the node's
 * error for a reply that is not what the route expected. */
void qr_rest_send_reply(struct rest_call *c,
                        int status,
                        json_t *json,
                        const char *id);
void qr_rest_send_error(h2o_req_t *req, int status, const char *message);
/* Answers json (taken) for a request that needs no call (nothing was
 * written); one that cannot be built (json NULL, or out of memory) is a
 * 500 that says so. */
void qr_rest_send_json(h2o_req_t *req, int status, json_t *json);
/* The HTTP status of a node's status. */
int qr_rest_http_status(Qraft__Status st);
void qr_rest_send_status_error(struct rest_call *c,
                               const Qraft__Response *resp);
/* Submits rpc_req (borrowed) for item, the one way a request is run (the
 * call gains a reference while it is owed an answer); non-zero: it was
 * not, and the callback will not fire. */
int qr_rest_submit(struct rest_call *c,
                   struct call_item *item,
                   Qraft__Request *rpc_req);
/* The head of every one-RPC reply: marks c answered; true when resp is OK
 * with the body `want` (NOT_SET: any), else answers the node's error. */
bool qr_rest_reply_ok(struct rest_call *c,
                      const Qraft__Response *resp,
                      Qraft__Response__BodyCase want);
/* The reply of a call run without on_reply (struct rest_answer). */
void qr_rest_on_json_reply(struct rest_call *c,
                           size_t index,
                           const Qraft__Response *resp);
/* How a route that is one RPC answers it (qr_rest_run). With on_reply
 * NULL: a reply that is not OK or lacks the body `want`
 * (QRAFT__RESPONSE__BODY__NOT_SET: any) answers {"error"} with the node's
 * status, an OK one 200 with what build makes of it; else on_reply answers
 * (qr_rest_reply_ok first). url (copied) and single are kept on the call
 * for them (struct rest_call). */
struct rest_answer {
    rest_reply_fn on_reply;
    Qraft__Response__BodyCase want;
    rest_json_fn build;
    const char *url;
    bool single;
};

/* The route's capture as a string in req's pool. */
char *qr_rest_capture(h2o_req_t *req, const struct rest_match *m);

/* Runs rpc_req (borrowed) for a fresh call on req, answered as a (borrowed)
 * says (see struct rest_answer); 503 when it cannot be submitted. */
void qr_rest_run(struct qr_rest *r,
                 h2o_req_t *req,
                 Qraft__Request *rpc_req,
                 const struct rest_answer *a);
/* qr_rest_run of a request whose body is ptr (borrowed): the member field
 * of Qraft__Request's body, QRAFT__REQUEST__BODY_##CASE; the last argument
 * is the answer (a struct rest_answer *, a compound literal's commas
 * allowed). The REST face of ops' QR_OP_PROPOSE_OK. */
#define QR_REST_RUN(r, req, CASE, field, ptr, ...)        \
    do {                                                  \
        Qraft__Request rpc_req_ = QRAFT__REQUEST__INIT;   \
        rpc_req_.body_case = QRAFT__REQUEST__BODY_##CASE; \
        rpc_req_.field = (ptr);                           \
        qr_rest_run((r), (req), &rpc_req_, __VA_ARGS__);  \
    } while (0)
/* The request body as JSON (new), or NULL having answered 400. */
json_t *qr_rest_load_body(h2o_req_t *req);
/* {} for any reply: the answer of writes the SDK reads no body of. */
json_t *qr_rest_empty_json(struct rest_call *c, const Qraft__Response *resp);

/* ---------------------------------------------------------------------------
 * Query strings, names and filters (rest_query.c). */

/* One name=value of a query string (raw, not decoded). */
struct rest_param {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* Case-insensitive prefix and equality of s (len bytes) with C strings;
 * a name is [A-Za-z0-9._-]{1,256}. */
bool qr_rest_prefix_ci(const char *s, size_t len, const char *prefix);
bool qr_rest_equal_ci(const char *s, size_t len, const char *word);
bool qr_rest_valid_name(const char *s, size_t len);
/* Percent-decodes a query value ('+' is a space) into pool memory. */
char *qr_rest_query_decode(h2o_mem_pool_t *pool, const char *s, size_t len);
/* Fills the next parameter of q from *pos; false at the end. */
bool qr_rest_next_param(const char *q,
                        size_t len,
                        size_t *pos,
                        struct rest_param *p);
/* The first value of parameter name, decoded, or NULL. */
char *qr_rest_query_get(h2o_mem_pool_t *pool,
                        h2o_iovec_t query,
                        const char *name);
/* Parameter name as exactly "true" or "false" into *out (absent when it
 * is not given); false for any other value. */
bool qr_rest_query_bool(h2o_mem_pool_t *pool,
                        h2o_iovec_t query,
                        const char *name,
                        bool absent,
                        bool *out);
/* name in Go's canonical form ("Content-Type"). */
char *qr_rest_canonical(h2o_mem_pool_t *pool, const char *name, size_t len);
char *qr_rest_pool_str(h2o_mem_pool_t *pool, const char *s, size_t len);
/* Appends every value of parameter name (repeated or comma-separated) to
 * *list; -EINVAL (why in err) over MAX_IDS or when it has no value. */
int qr_rest_take_list(h2o_mem_pool_t *pool,
                      h2o_iovec_t query,
                      const char *name,
                      char ***list,
                      size_t *n,
                      char *err);
/* The filter parameters of query into f, refusing any parameter but the
 * filters and extra (NULL-terminated), bad values and filters this build
 * cannot evaluate (-EINVAL, why in err). */
int qr_rest_parse_filter(h2o_mem_pool_t *pool,
                         h2o_iovec_t query,
                         const char *const *extra,
                         Qraft__MessageFilter *f,
                         char *err);
/* `count` in 1..max (absent: dflt) into *out; -EINVAL, why in err. */
int qr_rest_take_count(h2o_mem_pool_t *pool,
                       h2o_iovec_t query,
                       uint64_t max,
                       uint64_t dflt,
                       uint32_t *out,
                       char *err);

/* ---------------------------------------------------------------------------
 * JSON shapes several resources show (rest_json.c). */

/* {"Name": ["v", ...]}, names canonical. */
json_t *qr_rest_header_map(Qraft__Header **headers,
                           size_t n,
                           h2o_mem_pool_t *pool);
/* The way back: {"Name": "v" | ["v", ...]} (map; NULL: none) into
 * *headers, *n of them, names as given (pool memory). -EINVAL when a value
 * is not a string or a list of strings, its name in *bad_name (borrowed
 * from map). */
int qr_rest_header_list(h2o_mem_pool_t *pool,
                        json_t *map,
                        Qraft__Header ***headers,
                        size_t *n,
                        const char **bad_name);
/* o[key] = the bytes in base64; o[key] = the bytes as text when they are
 * UTF-8, else o[key_b64] = base64; o[key] = value unless it is empty; a
 * cursor page {key: items (taken), "cursor"?}. */
void qr_rest_set_b64(json_t *o, const char *key, ProtobufCBinaryData data);
void qr_rest_set_body(json_t *o,
                      const char *key,
                      const char *key_b64,
                      ProtobufCBinaryData body);
void qr_rest_set_opt_string(json_t *o, const char *key, const char *value);
/* "label" (the first) and "labels" (all), as the SDK reads them; nothing
 * when there are none. */
void qr_rest_set_labels(json_t *o, char **labels, size_t n);
/* "flowControlKey", "parallelism", "rate", "period" (s) when key is set. */
void qr_rest_set_flow_control(json_t *o,
                              const char *key,
                              uint32_t parallelism,
                              uint32_t rate,
                              uint64_t period_s);
json_t *qr_rest_page_json(const char *key, json_t *items, const char *cursor);

/* ---------------------------------------------------------------------------
 * Publish, enqueue and batch (rest_publish.c). */

/* A publish being built from a request; its strings are pool memory. */
struct rest_pub {
    Qraft__PublishRequest pr;
    Qraft__WorkflowPublish wf; /* pr.workflow points here once one is set */
    Qraft__Header **headers;   /* pool memory */
    size_t cap;
    Qraft__Header **fc_headers; /* pr.failure_callback_headers: pool */
    Qraft__Header **cb_headers; /* pr.callback_headers: pool */
    size_t labels_cap;          /* pr.labels: pool memory, grown by copying */
};

/* -EINVAL (why in err) when a header the node reads (Content-Type,
 * Upstash-*) is not UTF-8. */
int qr_rest_check_header_utf8(const char *name,
                              size_t nlen,
                              const char *val,
                              size_t vlen,
                              char *err);
/* Maps one Upstash-* header (or Content-Type) onto p; others are ignored.
 * -EINVAL, why in err. */
int qr_rest_apply_header(struct rest_pub *p,
                         h2o_mem_pool_t *pool,
                         h2o_iovec_t header,
                         h2o_iovec_t value,
                         char *err);
/* The caller's address as text ("" when h2o cannot tell). */
char *qr_rest_caller_ip(h2o_req_t *req);
/* Starts p for dest (a URL, or a url group's name: pr.topic_name set) with
 * room for max_headers: 0, or an HTTP status (why in err). pub_start does
 * it for req (and its body), answering when dest is bad. */
int qr_rest_pub_begin(struct rest_pub *p,
                      h2o_mem_pool_t *pool,
                      h2o_iovec_t dest,
                      h2o_iovec_t query,
                      size_t max_headers,
                      char *err);
bool qr_rest_pub_start(struct rest_pub *p,
                       h2o_req_t *req,
                       h2o_iovec_t dest,
                       h2o_iovec_t query,
                       size_t extra);
/* How many parameters query holds. */
size_t qr_rest_query_count(h2o_iovec_t query);
/* Maps the upstash-* query parameters, then the headers (which win), onto
 * p; -EINVAL, why in err. */
int qr_rest_pub_map(struct rest_pub *p,
                    h2o_mem_pool_t *pool,
                    h2o_iovec_t query,
                    const h2o_headers_t *headers,
                    char *err);
rest_handler qr_rest_publish, qr_rest_enqueue, qr_rest_batch;
/* One element of a batch into p (caller: its caller_ip, borrowed);
 * -EINVAL, why in err. */
int qr_rest_batch_element(h2o_mem_pool_t *pool,
                          json_t *el,
                          struct rest_pub *p,
                          char *caller,
                          char *err);

/* ---------------------------------------------------------------------------
 * Messages, bulk cancel and logs (rest_messages.c). */

rest_handler qr_rest_message, qr_rest_cancel_many, qr_rest_events;
/* The message as the SDK reads it (spec section 4; new); with dlq, the
 * DLQ's fields too. */
json_t *qr_rest_message_json(const Qraft__Message *m,
                             bool dlq,
                             h2o_mem_pool_t *pool);
/* Appends the ids of a {"messageIds": [...]} body (none: fine) to *ids;
 * -EINVAL, why in err. */
int qr_rest_body_message_ids(h2o_req_t *req, char ***ids, size_t *n, char *err);
/* A bulk cancel's answer: {"cancelled": how many items were OK}. */
void qr_rest_on_cancelled_reply(struct rest_call *c,
                                size_t index,
                                const Qraft__Response *resp);

/* ---------------------------------------------------------------------------
 * Workflow runs (rest_workflows.c). */

rest_handler qr_rest_workflow_run, qr_rest_workflow_cancel_many;
rest_handler qr_rest_wait, qr_rest_notify, qr_rest_waiters;
rest_handler qr_rest_workflow_dlq, qr_rest_workflow_hook;
rest_handler qr_rest_workflow_dlq_delete, qr_rest_workflow_dlq_callback;
/* The workflow logs (rest_workflow_logs.c). */
rest_handler qr_rest_workflow_logs;

/* ---------------------------------------------------------------------------
 * The dead letter queue (rest_dlq.c). */

rest_handler qr_rest_dlq_list, qr_rest_dlq_bulk;

/* ---------------------------------------------------------------------------
 * Schedules (rest_schedules.c). */

rest_handler qr_rest_schedule, qr_rest_schedule_create;

/* ---------------------------------------------------------------------------
 * Queues (rest_queues.c). */

rest_handler qr_rest_queue, qr_rest_queue_upsert;

/* ---------------------------------------------------------------------------
 * Flow control (rest_flow.c). */

rest_handler qr_rest_flow_control, qr_rest_global_parallelism;

/* ---------------------------------------------------------------------------
 * URL groups, QStash's topics (rest_topics.c). */

rest_handler qr_rest_topic, qr_rest_topic_endpoints;
/* change->endpoints from a {"endpoints": [{"name"?, "url"?}, ...]} body;
 * -EINVAL, why in err. */
int qr_rest_parse_endpoints(h2o_req_t *req,
                            Qraft__GroupChangeRequest *change,
                            char *err);

/* ---------------------------------------------------------------------------
 * Signing keys (rest_keys.c). */

rest_handler qr_rest_keys;

/* ---------------------------------------------------------------------------
 * The cluster's status, qraft's own (rest_cluster.c). */

rest_handler qr_rest_cluster;
rest_handler qr_rest_cron_preview;

#endif /* QR_REST_INT_H */
