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

#include <h2o.h>
#include <jansson.h>

#include "api/rest.h"
#include "qraft.pb-c.h"

#define ERR_BYTES 256
#define MAX_BATCH 1000
#define MAX_IDS 1000

/* ---------------------------------------------------------------------------
 * Routes (rest.c): what the route table hands a handler. */

/* The route's capture in req's raw path and the raw query (both borrowed
 * from req), and the route's arg (which variant of the handler). */
struct rest_match {
    h2o_iovec_t capture; /* {id}, {queue}, {url} or {*}; {NULL, 0}: none */
    h2o_iovec_t query;   /* after '?'; {NULL, 0}: none */
    int arg;
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
/* Builds the JSON a 200 answers from an OK response (see run_json): a new
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
    h2o_req_t *req; /* NULL once h2o disposed the request */
    struct rest_call *prev;
    struct rest_call *next;
    unsigned refs;
    bool answered;
    rest_reply_fn on_reply;
    /* Route state. */
    char *url;        /* publish: the destination echoed back */
    bool single;      /* DLQ retry of one id: answer {"messageId"};
                         events: answer {"logs"} (GET /v2/logs) */
    json_t *out;      /* batch: the answer array being filled */
    size_t n_pending; /* batch: submissions not answered yet */
    char **urls;      /* batch: each element's destination */
    struct call_item *items;
    size_t n_items;
    /* run_json: the body an OK answer must hold, and its JSON. */
    Qraft__Response__BodyCase want;
    rest_json_fn build;
    /* A write: what it did once the node answered OK (write_outcome), said
     * in the 500 that answers when its reply cannot be built; NULL for a
     * read. */
    const char *done;
};

void qr_rest_call_unref(struct rest_call *c);
struct rest_call *qr_rest_call_new(struct qr_rest *r,
                                   h2o_req_t *req,
                                   rest_reply_fn on_reply);
void qr_rest_send_reply(struct rest_call *c,
                        int status,
                        json_t *json,
                        const char *id);
void qr_rest_send_error(h2o_req_t *req, int status, const char *message);
int qr_rest_http_status(Qraft__Status st);
void qr_rest_send_status_error(struct rest_call *c,
                               const Qraft__Response *resp);
int qr_rest_submit(struct rest_call *c,
                   struct call_item *item,
                   Qraft__Request *rpc_req);
bool qr_rest_reply_ok(struct rest_call *c,
                      const Qraft__Response *resp,
                      Qraft__Response__BodyCase want);
void qr_rest_on_json_reply(struct rest_call *c,
                           size_t index,
                           const Qraft__Response *resp);
void qr_rest_start_single(struct qr_rest *r,
                          h2o_req_t *req,
                          Qraft__Request *rpc_req,
                          rest_reply_fn on_reply,
                          Qraft__Response__BodyCase want,
                          rest_json_fn build,
                          const char *url,
                          bool single);
void qr_rest_run_single(struct qr_rest *r,
                        h2o_req_t *req,
                        Qraft__Request *rpc_req,
                        rest_reply_fn on_reply,
                        const char *url,
                        bool single);
void qr_rest_run_json(struct qr_rest *r,
                      h2o_req_t *req,
                      Qraft__Request *rpc_req,
                      Qraft__Response__BodyCase want,
                      rest_json_fn build,
                      bool single);
json_t *qr_rest_load_body(h2o_req_t *req);
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

bool qr_rest_prefix_ci(const char *s, size_t len, const char *prefix);
bool qr_rest_equal_ci(const char *s, size_t len, const char *word);
bool qr_rest_valid_name(const char *s, size_t len);
char *qr_rest_query_decode(h2o_mem_pool_t *pool, const char *s, size_t len);
bool qr_rest_next_param(const char *q,
                        size_t len,
                        size_t *pos,
                        struct rest_param *p);
char *qr_rest_query_get(h2o_mem_pool_t *pool,
                        h2o_iovec_t query,
                        const char *name);
char *qr_rest_canonical(h2o_mem_pool_t *pool, const char *name, size_t len);
char *qr_rest_pool_str(h2o_mem_pool_t *pool, const char *s, size_t len);
int qr_rest_take_list(h2o_mem_pool_t *pool,
                      h2o_iovec_t query,
                      const char *name,
                      char ***list,
                      size_t *n,
                      char *err);
int qr_rest_parse_filter(h2o_mem_pool_t *pool,
                         h2o_iovec_t query,
                         const char *const *extra,
                         Qraft__MessageFilter *f,
                         char *err);
int qr_rest_take_count(h2o_mem_pool_t *pool,
                       h2o_iovec_t query,
                       uint64_t max,
                       uint64_t dflt,
                       uint32_t *out,
                       char *err);

/* ---------------------------------------------------------------------------
 * JSON shapes several resources show (rest_json.c). */

json_t *qr_rest_header_map(Qraft__Header **headers,
                           size_t n,
                           h2o_mem_pool_t *pool);
void qr_rest_set_b64(json_t *o, const char *key, ProtobufCBinaryData data);
void qr_rest_set_body(json_t *o,
                      const char *key,
                      const char *key_b64,
                      ProtobufCBinaryData body);
void qr_rest_set_opt_string(json_t *o, const char *key, const char *value);
json_t *qr_rest_page_json(const char *key, json_t *items, const char *cursor);

/* ---------------------------------------------------------------------------
 * Publish, enqueue and batch (rest_publish.c). */

/* A publish being built from a request; its strings are pool memory. */
struct rest_pub {
    Qraft__PublishRequest pr;
    Qraft__Header **headers; /* pool memory */
    size_t cap;
    size_t labels_cap; /* pr.labels: pool memory, grown by copying */
};

void qr_rest_pub_init(struct rest_pub *p,
                      h2o_mem_pool_t *pool,
                      size_t max_headers);
int qr_rest_check_header_utf8(const char *name,
                              size_t nlen,
                              const char *val,
                              size_t vlen,
                              char *err);
int qr_rest_apply_header(struct rest_pub *p,
                         h2o_mem_pool_t *pool,
                         const char *name,
                         size_t nlen,
                         const char *val,
                         size_t vlen,
                         char *err);
int qr_rest_check_destination(const char *dest,
                              size_t len,
                              bool *group,
                              char *err);
char *qr_rest_caller_ip(h2o_req_t *req);
char *qr_rest_destination_with_query(h2o_mem_pool_t *pool,
                                     const char *dest,
                                     size_t dlen,
                                     h2o_iovec_t query);
bool qr_rest_pub_start(struct rest_pub *p,
                       h2o_req_t *req,
                       const char *dest,
                       size_t dest_len,
                       h2o_iovec_t query,
                       size_t extra,
                       bool *group);
int qr_rest_pub_begin(struct rest_pub *p,
                      h2o_mem_pool_t *pool,
                      const char *dest,
                      size_t dest_len,
                      h2o_iovec_t query,
                      h2o_iovec_t body,
                      size_t max_headers,
                      bool *group,
                      char *err);
size_t qr_rest_query_count(h2o_iovec_t query);
int qr_rest_pub_map(struct rest_pub *p,
                    h2o_mem_pool_t *pool,
                    h2o_iovec_t query,
                    const h2o_headers_t *headers,
                    char *err);
rest_handler qr_rest_publish, qr_rest_enqueue, qr_rest_batch;
int qr_rest_batch_element(h2o_mem_pool_t *pool,
                          json_t *el,
                          struct rest_pub *p,
                          char *caller,
                          char *err);

/* ---------------------------------------------------------------------------
 * Messages, bulk cancel and logs (rest_messages.c). */

rest_handler qr_rest_message_get, qr_rest_message_cancel, qr_rest_cancel_many,
    qr_rest_events;
json_t *qr_rest_message_json(const Qraft__Message *m,
                             bool dlq,
                             h2o_mem_pool_t *pool);
int qr_rest_body_message_ids(h2o_req_t *req, char ***ids, size_t *n, char *err);

/* ---------------------------------------------------------------------------
 * The dead letter queue (rest_dlq.c). */

rest_handler qr_rest_dlq_list, qr_rest_dlq_delete, qr_rest_dlq_retry;

/* ---------------------------------------------------------------------------
 * Schedules (rest_schedules.c). */

rest_handler qr_rest_schedule_list, qr_rest_schedule_get,
    qr_rest_schedule_create, qr_rest_schedule_delete, qr_rest_schedule_pause;

/* ---------------------------------------------------------------------------
 * Queues (rest_queues.c). */

rest_handler qr_rest_queue_list, qr_rest_queue_upsert, qr_rest_queue_get,
    qr_rest_queue_delete, qr_rest_queue_pause;

/* ---------------------------------------------------------------------------
 * URL groups, QStash's topics (rest_topics.c). */

rest_handler qr_rest_topic_list, qr_rest_topic_get, qr_rest_topic_delete,
    qr_rest_topic_endpoints;
int qr_rest_parse_endpoints(h2o_req_t *req,
                            Qraft__GroupChangeRequest *change,
                            char *err);

/* ---------------------------------------------------------------------------
 * Signing keys (rest_keys.c). */

rest_handler qr_rest_keys;

#endif /* QR_REST_INT_H */
