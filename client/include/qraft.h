/* libqraft: the C client library of qraft, a Raft-replicated HTTP delivery
 * queue. Blocking calls over the node's framed protobuf RPC; the library
 * finds and follows the leader, reconnects with backoff and retries within
 * each call's deadline, and never turns one publish into two messages.
 *
 * This is the library's only public header. It exposes plain C structs; the
 * wire format (protobuf) stays inside the library.
 *
 * Threads: a client handle is NOT thread-safe; use one handle per thread.
 * Different handles share nothing and may be used concurrently.
 *
 * Errors: every function that can fail returns 0 on success or one of the
 * negative QRAFT_E* codes below (never -errno). qraft_strerror names a code;
 * qraft_client_errmsg gives the text of the handle's last failure, which for
 * a refusal by the server is the server's own message, e.g.
 * "body is 2097152 bytes; the limit is 1048576".
 *
 * Ownership: every pointer argument is borrowed for the duration of the call
 * only. Results that the library allocates say "returns new" and name the
 * function that frees them; strings inside them are never NULL (an absent
 * value is ""). */
#ifndef QRAFT_H
#define QRAFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* X(name, value, text) */
#define QRAFT_ERRORS(X)                                \
    X(QRAFT_EINVAL, -1000, "invalid request")          \
    X(QRAFT_ENOMEM, -1001, "out of memory")            \
    X(QRAFT_ENOTFOUND, -1002, "not found")             \
    X(QRAFT_EUNAUTHORIZED, -1003, "unauthorized")      \
    X(QRAFT_ETOOLARGE, -1004, "too large")             \
    X(QRAFT_ECONFLICT, -1005, "conflict")              \
    X(QRAFT_EINTERNAL, -1006, "internal server error") \
    X(QRAFT_EUNAVAILABLE, -1007, "unavailable")        \
    X(QRAFT_ENOTLEADER, -1008, "not the leader")       \
    X(QRAFT_ECONNECT, -1009, "connection failed")      \
    X(QRAFT_ETIMEDOUT, -1010, "timed out")             \
    X(QRAFT_EUNKNOWN, -1011, "outcome unknown")        \
    X(QRAFT_EPROTO, -1012, "protocol error")           \
    X(QRAFT_ENOSPACE, -1013, "insufficient storage")   \
    X(QRAFT_EFORBIDDEN, -1014, "permission denied")    \
    X(QRAFT_ETLS, -1015, "TLS failure")

/* QRAFT_EINVAL       the library or the server (BAD_REQUEST) refused the
 *                    arguments; the errmsg says which.
 * QRAFT_ENOTFOUND    no such message (NOT_FOUND).
 * QRAFT_EUNAUTHORIZED missing or wrong token (UNAUTHORIZED).
 * QRAFT_EFORBIDDEN   the token lacks the scope the request needs
 *                    (PERMISSION_DENIED); the errmsg names it.
 * QRAFT_ETOOLARGE    a size limit was exceeded (TOO_LARGE, or a request
 *                    larger than a frame may be).
 * QRAFT_ECONFLICT    the operation does not apply in the message's state.
 * QRAFT_EINTERNAL    the server failed (INTERNAL).
 * QRAFT_EUNAVAILABLE the cluster kept answering UNAVAILABLE (no leader,
 *                    shutting down, overloaded) until the call's deadline.
 * QRAFT_ENOTLEADER   only from the pipelined calls, which do not follow the
 *                    leader; the blocking calls follow it.
 * QRAFT_ECONNECT     no endpoint could be reached, or the connection broke,
 *                    until the deadline.
 * QRAFT_ETIMEDOUT    no answer before the call's deadline.
 * QRAFT_EUNKNOWN     a write that is unsafe to repeat (dlq replay) was sent
 *                    but its answer was lost: it may or may not have
 *                    happened.
 * QRAFT_EPROTO       the peer does not speak the qraft protocol (garbage,
 *                    oversized or mismatched frames). Not retried.
 * QRAFT_ENOSPACE     the node's disk or store is below its free-space
 *                    reserve (INSUFFICIENT_STORAGE): the write was refused
 *                    before anything happened; the errmsg says what is full
 *                    and by how much. Not retried: space must be freed
 *                    first (reads, cancels and deletes still work).
 * QRAFT_ETLS         TLS could not be set up: the CA, certificate or key
 *                    file does not load (from qraft_client_new), or a
 *                    handshake failed (the node's certificate does not
 *                    verify or name the endpoint's host, or the endpoint
 *                    does not speak TLS); the errmsg has OpenSSL's
 *                    reason. Not retried: retrying cannot fix it. */
enum qraft_error {
#define QRAFT_ERROR_ENUM(name, value, text) name = value,
    QRAFT_ERRORS(QRAFT_ERROR_ENUM)
#undef QRAFT_ERROR_ENUM
};

/* Returns a static description of a QRAFT_E* code ("success" for 0). */
const char *qraft_strerror(int rc);

/* Buffer sizes, terminating NUL included. */
#define QRAFT_ID_MAX 64      /* a message id ("msg_" + 24 hex digits) */
#define QRAFT_KEY_MAX 65     /* an idempotency key */
#define QRAFT_ERRMSG_MAX 512 /* qraft_client_errmsg and item errors */

/* Default endpoint when qraft_client_new gets NULL. */
#define QRAFT_DEFAULT_ENDPOINTS "127.0.0.1:7100"

/* Client tuning. A zero field takes the default shown; negative values are
 * refused. Zero-initialise the struct and set what you need. */
struct qraft_options {
    /* Per TCP connect attempt. Default 2000. */
    int connect_timeout_ms;
    /* Overall deadline of one call, every retry, redirect and backoff
     * included. Default 10000. */
    int call_timeout_ms;
    /* Longest wait for one answer before the attempt counts as failed and
     * the call moves on to the next endpoint. Default 0: no separate limit,
     * an attempt may use what is left of the call's deadline. */
    int attempt_timeout_ms;
    /* Most requests sent (or connections tried) in one call. Default 0: no
     * limit but the deadline. */
    int max_attempts;
    /* Backoff between attempts: exponential from initial, capped at max,
     * with jitter (each wait is drawn from [d/2, d]). Redirects to a named
     * leader do not wait. Defaults 50 and 250. */
    int backoff_initial_ms;
    int backoff_max_ms;
    /* TLS to the nodes' RPC ports (docs/api.md 1.1): on when tls is true
     * or any file below is given. The node's certificate must be signed
     * by a CA of ca_file (PEM; NULL: the system's CA store) and name the
     * host of the endpoint connected to (a DNS name or an IP address, as
     * its subjectAltName says); verification cannot be turned off.
     * cert_file and key_file (PEM, both or neither) are presented when a
     * node asks for a client certificate. The files are read by
     * qraft_client_new (the strings are borrowed for that call); the
     * handshake counts against connect_timeout_ms. */
    bool tls;
    const char *ca_file;
    const char *cert_file;
    const char *key_file;
};

struct qraft_client;

/* Creates a client for `endpoints`, a comma-separated list of host:port
 * ("[v6addr]:port" for IPv6 literals; NULL = QRAFT_DEFAULT_ENDPOINTS), and
 * sends `token` (NULL = none) with every request. `opts` may be NULL for
 * the defaults. Does not connect: the first call does. On success *out is
 * new; free with qraft_client_free. Returns QRAFT_EINVAL for a malformed
 * endpoint list or option (a certificate without its key), QRAFT_ETLS when
 * a TLS file does not load, QRAFT_ENOMEM. */
int qraft_client_new(const char *endpoints,
                     const char *token,
                     const struct qraft_options *opts,
                     struct qraft_client **out);

/* Closes the connection and frees c. NULL is fine. */
void qraft_client_free(struct qraft_client *c);

/* Reads on c (get, list, dlq list, events, status, keys, queue, schedule
 * and group reads) are linearizable by default: the node asked first
 * confirms with the leader that it has applied every write acknowledged
 * before the read, and a node cut off from the leader answers UNAVAILABLE
 * (retried on another endpoint). With stale true the node answers from its
 * own store as it is: faster, served while the leader is unreachable, and
 * may miss recent writes. Writes are unaffected. */
void qraft_client_set_stale_reads(struct qraft_client *c, bool stale);

/* Text of the last failure on c ("" when none yet). Borrowed: valid until
 * the next call on c. */
const char *qraft_client_errmsg(const struct qraft_client *c);

/* ----------------------------------------------------------------------
 * Messages */

enum qraft_state {
    QRAFT_STATE_UNSPECIFIED = 0, /* as a filter: every state */
    QRAFT_STATE_PENDING = 1,     /* waiting for its time */
    QRAFT_STATE_DELIVERING = 2,  /* due, being delivered */
    QRAFT_STATE_RETRYING = 3,    /* an attempt failed; waits for the next */
    QRAFT_STATE_DELIVERED = 4,
    QRAFT_STATE_DEAD_LETTERED = 5, /* in the dead-letter queue */
    QRAFT_STATE_CANCELLED = 6,
    QRAFT_STATE_QUEUED = 7 /* in its queue, waiting for its turn */
};
#define QRAFT_N_STATES 8

/* "pending", "delivering", "retrying", "delivered", "dead_lettered",
 * "cancelled", "queued"; "unspecified" for 0 and "unknown" for anything
 * else. */
const char *qraft_state_name(enum qraft_state state);

/* Parses a name of qraft_state_name (not "unknown"). Returns 0 or
 * QRAFT_EINVAL. */
int qraft_state_parse(const char *name, enum qraft_state *out);

struct qraft_header {
    const char *name;
    const char *value;
};

/* How a message retries beyond `retries` and `retry_delay`; zero fields are
 * unset. */
struct qraft_retry_options {
    /* QStash-strict: retry every failure except a 489 with
     * Upstash-NonRetryable-Error: true (by default other 4xx are final). */
    bool strict;
    uint64_t min_backoff_ms; /* no retry sooner than this */
    uint64_t max_backoff_ms; /* nor later than this */
    /* The default backoff grows exponentially this many times, then
     * linearly (at most 16). */
    uint32_t max_doublings;
    /* Retrying stops this long after the message was created. */
    uint64_t max_retry_duration_ms;
};

/* A publish. Zero-initialise and set at least `url`; every other zero field
 * means "the server's default". */
struct qraft_publish {
    const char *url;                    /* http(s) destination; required */
    const char *method;                 /* NULL = POST */
    const struct qraft_header *headers; /* forwarded on delivery, in order */
    size_t n_headers;
    const void *body;
    size_t body_len;
    uint64_t delay_ms;       /* deliver this long after the leader accepts */
    uint64_t not_before_ms;  /* absolute unix ms; overrides delay_ms */
    bool has_retries;        /* false: the server's default retry count */
    uint32_t retries;        /* attempts = 1 + retries */
    const char *retry_delay; /* retry-delay expression, e.g. "1000 * pow(2,
                                retried)"; NULL = default backoff */
    uint64_t timeout_ms;     /* per delivery attempt; 0 = server default */
    const char *dedup_id;    /* the server drops a second publish with the
                                same id within its dedup window */
    bool content_dedup;      /* same, keyed by a hash of the content */
    const char *callback;
    const char *failure_callback;
    const char *queue;
    /* Makes retries of this publish safe: the server answers a repeated key
     * with the first message's id. NULL: when dedup_id is NULL too, the
     * library draws a key once per qraft_publish call (48 bits of the
     * time in ms, then 80 random bits) and sends it with every retry of
     * that call. Set it yourself to extend the
     * guarantee across calls or processes (at most QRAFT_KEY_MAX - 1
     * bytes). */
    const char *idempotency_key;
    struct qraft_retry_options retry_options;
    /* What views never show (Upstash-Redact-Fields): comma-separated
     * "body", "header" (every forwarded header), "header[Name]"; the
     * destination still gets them as published. NULL: nothing. Needs a
     * cluster at feature level 6. */
    const char *redact;
};

/* Publishes p. On success writes the message id to id (NUL-terminated) and,
 * if `deduplicated` is not NULL, whether the server returned an existing
 * message (dedup_id, content_dedup or a caller's idempotency_key matched)
 * instead of creating one. A match on the key the library drew itself can
 * only be this call's own earlier, ambiguous attempt, so it is reported as
 * not deduplicated (with content_dedup as well, a retried call cannot tell
 * the two apart and reports what the server says).
 *
 * Retries: every failure is retried until the deadline, ambiguous ones
 * included (connection lost after sending, no answer, UNKNOWN_OUTCOME),
 * because the idempotency key (or the dedup id) makes the server answer a
 * repeat with the first message. */
int qraft_publish(struct qraft_client *c,
                  const struct qraft_publish *p,
                  char id[QRAFT_ID_MAX],
                  bool *deduplicated);

/* One message a URL-group publish created. */
struct qraft_published {
    char *id;
    char *url;      /* the endpoint's */
    char *endpoint; /* its name, "" when it has none */
    bool deduplicated;
};

/* Publishes p (p->url unset) to every endpoint of URL group `group`: one
 * message each, in the group's order. On success *out is new (an array of
 * *n; free with qraft_group_publish_free). QRAFT_ENOTFOUND: no such
 * group; QRAFT_EINVAL: p is invalid (or sets url). Retried like qraft_publish
 * (the idempotency key covers the whole fan-out). */
int qraft_publish_group(struct qraft_client *c,
                        const char *group,
                        const struct qraft_publish *p,
                        struct qraft_published **out,
                        size_t *n);
void qraft_group_publish_free(struct qraft_published *msgs, size_t n);

struct qraft_last_error {
    char *category; /* connect, timeout, throttled, server_error, ... */
    int32_t status; /* HTTP status, 0 when no response */
    char *message;
};

/* One state transition of a message. */
struct qraft_event {
    uint64_t time_ms;
    enum qraft_state state;
    uint32_t attempt;
    char *detail;
};

/* A stored message. Times are unix milliseconds, 0 when unset. */
struct qraft_message {
    char *id;
    char *url;
    char *method;
    struct qraft_header *headers; /* names and values owned by the message */
    size_t n_headers;
    uint8_t *body;
    size_t body_len;
    enum qraft_state state;
    uint32_t max_retries;
    char *retry_delay;
    uint64_t timeout_ms;
    char *callback;
    char *failure_callback;
    char *queue;
    char *dedup_id;
    uint32_t attempts; /* attempts whose result is known */
    uint64_t not_before_ms;
    uint64_t next_attempt_ms;
    uint64_t created_ms;
    uint64_t updated_ms;
    struct qraft_last_error last_error; /* category "" when none */
    uint64_t dead_lettered_ms;
    char *dlq_hint; /* what an operator should do, for dead letters */
    struct qraft_event *events; /* history, oldest first; qraft_get only */
    size_t n_events;
};

/* Fetches message `id` with its history. On success *out is new; free with
 * qraft_message_free. QRAFT_ENOTFOUND when the id is unknown. */
int qraft_get(struct qraft_client *c,
              const char *id,
              struct qraft_message **out);

/* Frees a message from qraft_get. NULL is fine. */
void qraft_message_free(struct qraft_message *m);

/* Cancels message `id` before delivery. Retried like a read: cancelling the
 * same id twice leaves the same end state, and the node answers success for
 * a message that is already cancelled, so a repeat after an ambiguous
 * failure is harmless. QRAFT_ECONFLICT: already delivered or
 * dead-lettered. */
int qraft_cancel(struct qraft_client *c, const char *id);

/* One page of messages. */
struct qraft_message_list {
    struct qraft_message *messages; /* events are not filled in */
    size_t n_messages;
    char *cursor; /* pass to the next call; "" on the last page */
};

/* Lists messages in `state` (QRAFT_STATE_UNSPECIFIED = all), from `cursor`
 * (NULL or "" = the start), at most `limit` (0 = server default; the server
 * caps it). On success *out is new; free with qraft_message_list_free. */
int qraft_list(struct qraft_client *c,
               enum qraft_state state,
               const char *cursor,
               uint32_t limit,
               struct qraft_message_list **out);

/* Lists the dead-letter queue, oldest first. As qraft_list. */
int qraft_dlq_list(struct qraft_client *c,
                   const char *cursor,
                   uint32_t limit,
                   struct qraft_message_list **out);

void qraft_message_list_free(struct qraft_message_list *l);

/* Outcome of one id in a bulk call. */
struct qraft_item_result {
    int rc; /* 0 or QRAFT_E* */
    char error[QRAFT_ERRMSG_MAX];
};

/* Requeues dead letters ids[0..n_ids) with a fresh attempt budget. The
 * caller passes results[n_ids]; results[i] tells how ids[i] fared. Returns
 * 0 once the server answered (look at each result), or a call error.
 *
 * A replay is not repeated after an ambiguous failure (answer lost, no
 * answer, UNKNOWN_OUTCOME): a second replay could requeue a message that
 * the first replay already sent back through delivery into the DLQ. The
 * call then returns QRAFT_EUNKNOWN; `qraft_dlq_list` tells what happened. */
int qraft_dlq_replay(struct qraft_client *c,
                     const char *const *ids,
                     size_t n_ids,
                     struct qraft_item_result *results);

/* Deletes dead letters ids[0..n_ids); results as for qraft_dlq_replay.
 * Retried like a read: deleting twice leaves the same end state; but after
 * such a retry an item's QRAFT_ENOTFOUND may mean that the first, lost
 * attempt deleted it. */
int qraft_dlq_delete(struct qraft_client *c,
                     const char *const *ids,
                     size_t n_ids,
                     struct qraft_item_result *results);

/* Which dead letters qraft_dlq_replay_matching replays: all of them, or
 * those matching every field set (zero fields are unset). */
struct qraft_dlq_filter {
    bool all;               /* the whole DLQ when no other field is set */
    const char *url_prefix; /* destination starts with this */
    const char *category;   /* last error category, e.g. "server_error" */
    uint64_t since_ms;      /* dead-lettered at or after (unix ms) */
    uint64_t until_ms;      /* dead-lettered before (unix ms) */
};

/* What a bulk call did, id by id. */
struct qraft_bulk {
    size_t n;
    char **ids;
    struct qraft_item_result *results;
};

/* Replays the dead letters that match f, oldest first, at most 1000 per
 * call (call again while it returns a full batch). On success *out is new
 * (free with qraft_bulk_free) and lists each id replayed with its result;
 * an empty list means nothing matched. Not repeated after an ambiguous
 * failure, like qraft_dlq_replay. */
int qraft_dlq_replay_matching(struct qraft_client *c,
                              const struct qraft_dlq_filter *f,
                              struct qraft_bulk **out);

void qraft_bulk_free(struct qraft_bulk *b);

/* Lists the dead letters that match f (NULL: all), oldest first, as
 * qraft_dlq_list. */
int qraft_dlq_list_matching(struct qraft_client *c,
                            const struct qraft_dlq_filter *f,
                            const char *cursor,
                            uint32_t limit,
                            struct qraft_message_list **out);

/* Deletes the dead letters that match f (f->all alone: every one), at
 * most 1000 per call (call again while it returns a non-empty list); *out
 * as for qraft_dlq_replay_matching. Retried like qraft_dlq_delete. */
int qraft_dlq_delete_matching(struct qraft_client *c,
                              const struct qraft_dlq_filter *f,
                              struct qraft_bulk **out);

/* ----------------------------------------------------------------------
 * Filters, logs and bulk cancel: the message filter the REST API's logs,
 * DLQ and bulk cancel routes take (docs/api.md 5.5), one value a field. */

/* Which messages: those that match every field set (NULL, 0: unset). */
struct qraft_filter {
    const char *message_id;
    const char *url;              /* the destination, exactly */
    const char *url_prefix;       /* the destination starts with this */
    const char *host;             /* host or host:port of the destination */
    const char *path;             /* path of the destination, no query */
    const char *group;            /* URL group (topic) name */
    const char *queue;            /* queue name */
    const char *schedule_id;      /* created by this schedule */
    const char *label;            /* carries this label */
    const char *flow_control_key; /* of this flow control key */
    const char *caller_ip;        /* published from this address */
    const char *category;         /* last error category or its cause */
    const char *workflow_run_id;  /* of this workflow run */
    int32_t response_status;      /* the last attempt's HTTP status */
    uint64_t from_ms;             /* at or after (unix ms) */
    uint64_t to_ms;               /* at or before (unix ms) */
};

/* One log entry: a message's event seen as one QStash log state. */
struct qraft_log_entry {
    char *message_id;
    uint64_t time_ms;
    /* CREATED, ACTIVE, DELIVERED, ERROR, RETRY, FAILED, CANCEL_REQUESTED,
     * CANCELLED */
    char *state;
    uint32_t attempt;
    char *detail;
    char *url; /* the message's destination ("" when it was pruned) */
};

struct qraft_log_page {
    struct qraft_log_entry *entries;
    size_t n_entries;
    char *cursor; /* pass to the next call; "" on the last page */
};

/* The log states qraft_logs takes ("CREATED", ...; case-insensitive).
 * Returns 0 when `name` is one of them, else QRAFT_EINVAL. */
int qraft_log_state_check(const char *name);

/* One page of the message log (the stored events) that match f (NULL:
 * every message) and, when n_states > 0, are in one of states (names of
 * qraft_log_state_check); newest first unless oldest_first; from cursor
 * (NULL or "": the start; also a bare unix ms); at most limit entries (0:
 * 100; the server caps it at 1000). Served by the node asked. On success
 * *out is new; free with qraft_log_page_free. */
int qraft_logs(struct qraft_client *c,
               const struct qraft_filter *f,
               const char *const *states,
               size_t n_states,
               const char *cursor,
               uint32_t limit,
               bool oldest_first,
               struct qraft_log_page **out);
void qraft_log_page_free(struct qraft_log_page *p);

/* Cancels the messages not yet delivered that match f (at least one field
 * set), at most limit (0: 1000) per call: call again while it returns a
 * non-empty list. On success *out is new (free with qraft_bulk_free): each
 * id with its result. Retried like qraft_cancel (cancelling twice leaves
 * the same state). */
int qraft_cancel_matching(struct qraft_client *c,
                          const struct qraft_filter *f,
                          uint32_t limit,
                          struct qraft_bulk **out);

/* How many messages qraft_cancel_matching with f (at least one field set)
 * would cancel now, all of them, not a page: the server counts with the
 * cancel's own selection and cancels nothing (RPC cancel_count, a read).
 * A server older than this call refuses it (an error; nothing changes). */
int qraft_cancel_count(struct qraft_client *c,
                       const struct qraft_filter *f,
                       uint64_t *count);

/* ----------------------------------------------------------------------
 * Membership, done by the leader, one change at a time (QRAFT_ECONFLICT
 * while another runs). None is repeated after an ambiguous failure: the
 * call returns QRAFT_EUNKNOWN and qraft_status tells what happened. */

/* Adds node id, listening for raft on raft_addr and for RPC on rpc_addr
 * (IPv4 HOST:PORT; start it with `qraftd --join`). The leader first checks
 * the node at rpc_addr (it answers with the cluster's peer token, is node
 * id with raft at raft_addr, applies the cluster's feature level, has no
 * configuration of its own) and dials raft_addr; if anything fails it
 * changes nothing and the error (QRAFT_ECONFLICT) says what. Then the node
 * joins as a standby, catches up, and is promoted to voter; returns once it
 * is a voter. */
int qraft_cluster_add(struct qraft_client *c,
                      uint64_t id,
                      const char *raft_addr,
                      const char *rpc_addr);

/* Removes node id from the configuration; the node shuts itself down. */
int qraft_cluster_remove(struct qraft_client *c, uint64_t id);

/* Hands leadership to node id (0: the most up-to-date voter); returns once
 * it moved, or QRAFT_EUNKNOWN when it did not within an election timeout. */
int qraft_cluster_transfer(struct qraft_client *c, uint64_t id);

/* ----------------------------------------------------------------------
 * Signing keys: receivers verify Upstash-Signature with either. */

#define QRAFT_SIGNING_KEY_MAX 64

struct qraft_keys {
    char current[QRAFT_SIGNING_KEY_MAX];
    char next[QRAFT_SIGNING_KEY_MAX];
};

/* Reads the keys, or with rotate first makes next the current key and
 * generates a new next one (receivers that know both keep verifying; rotate
 * twice without updating them and they stop). A rotation is not repeated
 * after an ambiguous failure: the call returns QRAFT_EUNKNOWN and a plain
 * read tells whether it happened. */
int qraft_keys(struct qraft_client *c, bool rotate, struct qraft_keys *out);

/* ----------------------------------------------------------------------
 * URL groups (QStash "topics"): named lists of endpoints. Publish to one
 * with qraft_publish_group (or POST /v2/publish/{group} over REST). */

/* An endpoint in a request: url, and an optional name (NULL or "": none)
 * unique in its group. */
struct qraft_endpoint {
    const char *name;
    const char *url;
};

/* Adds endpoints to group, creating it when missing; an endpoint whose URL
 * is in the group already replaces it. QRAFT_EINVAL: a name or URL is
 * invalid, a name belongs to another URL, or the group would have more than
 * the server's limit (100). Repeated after an ambiguous failure (adding the
 * same endpoints twice leaves the same group). */
int qraft_group_add(struct qraft_client *c,
                    const char *group,
                    const struct qraft_endpoint *endpoints,
                    size_t n);

/* Removes endpoints, each matched by name when it has one, else by URL;
 * removing the last one deletes the group. QRAFT_ENOTFOUND: no such group,
 * or an endpoint matches nothing (then nothing is removed). Not repeated
 * after an ambiguous failure. */
int qraft_group_remove(struct qraft_client *c,
                       const char *group,
                       const struct qraft_endpoint *endpoints,
                       size_t n);

/* Deletes group. QRAFT_ENOTFOUND when there is none. Not repeated after an
 * ambiguous failure. */
int qraft_group_delete(struct qraft_client *c, const char *group);

struct qraft_group_endpoint {
    char *name; /* "" when it has none */
    char *url;
};

struct qraft_group {
    char *name;
    uint64_t created_ms;
    uint64_t updated_ms;
    struct qraft_group_endpoint *endpoints; /* in the order added */
    size_t n_endpoints;
};

/* Reads one group (*out new; free with qraft_groups_free(*out, 1)), or
 * every group by name (*out an array of *n; free with qraft_groups_free).
 * QRAFT_ENOTFOUND: no such group. Served by the node asked. */
int qraft_group_get(struct qraft_client *c,
                    const char *group,
                    struct qraft_group **out);
int qraft_group_list(struct qraft_client *c,
                     struct qraft_group **out,
                     size_t *n);
void qraft_groups_free(struct qraft_group *groups, size_t n);

/* ----------------------------------------------------------------------
 * Queues: named FIFOs; a message published with `queue` waits as QUEUED
 * until one of the queue's `parallelism` slots frees up. */

struct qraft_queue {
    char *name;
    uint32_t parallelism; /* messages delivered at once */
    bool paused;          /* holds its messages back while true */
    uint32_t active;      /* messages holding a slot now */
    uint64_t waiting;     /* QUEUED messages in it (the API's "lag") */
    uint64_t created_ms;
    uint64_t updated_ms;
};

/* Creates queue `name` or changes it: parallelism (0: 1; at most the
 * leader's --max-queue-parallelism) and paused. If out is not NULL, *out is
 * new (the queue as stored; free with qraft_queues_free(*out, 1)).
 * Repeated after an ambiguous failure (the same upsert twice leaves the
 * same queue). */
int qraft_queue_upsert(struct qraft_client *c,
                       const char *name,
                       uint32_t parallelism,
                       bool paused,
                       struct qraft_queue **out);

/* Reads one queue (*out new; free with qraft_queues_free(*out, 1)), or
 * every queue by name (*out an array of *n; free with qraft_queues_free).
 * QRAFT_ENOTFOUND: no such queue. */
int qraft_queue_get(struct qraft_client *c,
                    const char *name,
                    struct qraft_queue **out);
int qraft_queue_list(struct qraft_client *c,
                     struct qraft_queue **out,
                     size_t *n);
void qraft_queues_free(struct qraft_queue *queues, size_t n);

/* Pauses (paused true) or resumes a queue. QRAFT_ENOTFOUND: no such
 * queue. Repeated after an ambiguous failure. */
int qraft_queue_pause(struct qraft_client *c, const char *name, bool paused);

/* Deletes a queue; its waiting messages are cancelled by the server.
 * QRAFT_ENOTFOUND: no such queue. Repeated after an ambiguous failure (a
 * repeat may then answer QRAFT_ENOTFOUND). */
int qraft_queue_delete(struct qraft_client *c, const char *name);

/* ----------------------------------------------------------------------
 * Schedules: a cron expression (5 fields, "CRON_TZ=Zone " allowed in
 * front) that publishes a message on each tick. */

/* A message one tick created, with its state when the schedule was read. */
struct qraft_schedule_fired {
    char *message_id;
    enum qraft_state state;
};

struct qraft_schedule {
    char *id;
    char *cron;
    char *url; /* what each tick publishes */
    char *method;
    char *queue; /* "" when none */
    uint8_t *body;
    size_t body_len;
    bool paused;
    uint64_t created_ms;
    uint64_t updated_ms;
    uint64_t last_slot_ms; /* the last tick fired, 0: none yet */
    uint64_t next_slot_ms; /* the next tick, 0: unknown or paused */
    struct qraft_schedule_fired *last_fired; /* the last tick's messages */
    size_t n_last_fired;
};

/* Creates (id NULL or "": the leader names it scd_...) or replaces schedule
 * `id`, which publishes p on every tick of cron. p's dedup_id,
 * content_dedup, idempotency_key and not_before_ms dedup the creation, not
 * each tick. Writes the schedule's id to id_out. Repeated after an
 * ambiguous failure: the idempotency key makes a repeat the same
 * creation. */
int qraft_schedule_create(struct qraft_client *c,
                          const char *id,
                          const char *cron,
                          const struct qraft_publish *p,
                          char id_out[QRAFT_ID_MAX]);

/* Reads one schedule (*out new; free with qraft_schedules_free(*out, 1))
 * or every schedule by id (an array of *n). QRAFT_ENOTFOUND: no such
 * schedule. */
int qraft_schedule_get(struct qraft_client *c,
                       const char *id,
                       struct qraft_schedule **out);
int qraft_schedule_list(struct qraft_client *c,
                        struct qraft_schedule **out,
                        size_t *n);
void qraft_schedules_free(struct qraft_schedule *schedules, size_t n);

/* Pauses (paused true) or resumes a schedule: a paused one skips its
 * ticks. QRAFT_ENOTFOUND: no such schedule. */
int qraft_schedule_pause(struct qraft_client *c, const char *id, bool paused);

/* Deletes a schedule (messages it already created stay). QRAFT_ENOTFOUND:
 * no such schedule. */
int qraft_schedule_delete(struct qraft_client *c, const char *id);

/* ----------------------------------------------------------------------
 * Flow control keys (publish's flow_control_key): per key parallelism and
 * rate limits, pause, pins. Reads are served by the node asked; the counts
 * are the key's owner's (counts_known false on other nodes). */

struct qraft_flow_key {
    char *key;
    uint64_t wait_list_size; /* its messages waiting for a slot */
    uint32_t parallelism_max;
    uint32_t parallelism_count; /* being sent now */
    uint32_t rate_max;          /* per rate_period_s; 0: none */
    uint32_t rate_count;
    uint64_t rate_period_s;
    uint64_t rate_period_start_s;
    bool paused;
    bool pinned_parallelism; /* set by an operator, not by publishes */
    bool pinned_rate;
    bool counts_known;
};

/* Reads one key (*out new; free with qraft_flow_keys_free(*out, 1)) or
 * every key (an array of *n, at most 1000). QRAFT_ENOTFOUND: no such
 * key. */
int qraft_flow_get(struct qraft_client *c,
                   const char *key,
                   struct qraft_flow_key **out);
int qraft_flow_list(struct qraft_client *c,
                    struct qraft_flow_key **out,
                    size_t *n);
void qraft_flow_keys_free(struct qraft_flow_key *keys, size_t n);

enum qraft_flow_action {
    QRAFT_FLOW_PAUSE = 1, /* no more deliveries start; in-flight finish */
    QRAFT_FLOW_RESUME = 2,
    QRAFT_FLOW_PIN = 3,       /* fix parallelism and/or rate over publishes */
    QRAFT_FLOW_UNPIN = 4,     /* let publishes set them again */
    QRAFT_FLOW_RESET_RATE = 5 /* start a new rate period now */
};

/* A change to one key. PIN: parallelism and/or rate (0: unchanged), rate
 * per period_s (0: 1 s). UNPIN: unpin_parallelism and/or unpin_rate. */
struct qraft_flow_update {
    enum qraft_flow_action action;
    uint32_t parallelism;
    uint32_t rate;
    uint64_t period_s;
    bool unpin_parallelism;
    bool unpin_rate;
};

/* Applies u to key (through raft; needs the admin scope). Repeated after
 * an ambiguous failure (each action leaves the same state twice). */
int qraft_flow_update(struct qraft_client *c,
                      const char *key,
                      const struct qraft_flow_update *u);

/* ----------------------------------------------------------------------
 * Upstash Workflow runs: the run log (as the SDK's Client.logs), cancel,
 * and the workflow DLQ (resume or restart a failed run). */

struct qraft_workflow_step {
    uint32_t seq;           /* its place in the run's history */
    char *call_type;        /* "step", "sleep", "wait", ... ("" initial) */
    char *message_id;       /* the message that delivers it */
    enum qraft_state state; /* that message's; UNSPECIFIED once pruned */
    uint64_t created_ms;
    uint32_t step_id;
};

struct qraft_workflow_run {
    char *id;
    char *url;
    char *state; /* running, success, failed, canceled */
    uint64_t created_ms;
    uint64_t ended_ms;       /* 0 while running */
    char *failed_message_id; /* the dead letter that failed it, or "" */
    struct qraft_workflow_step *steps; /* in history order */
    size_t n_steps;
};

struct qraft_workflow_page {
    struct qraft_workflow_run *runs; /* by run id */
    size_t n_runs;
    char *cursor; /* pass to the next call; "" on the last page */
};

/* Which runs: those matching every field set (NULL, 0: unset). */
struct qraft_workflow_filter {
    const char *run_id;
    const char *url;        /* the workflow endpoint, exactly */
    const char *state;      /* running, success, failed, canceled */
    const char *message_id; /* the run this message belongs to */
    const char *label;
    uint64_t from_ms; /* created at or after (unix ms) */
    uint64_t to_ms;   /* created at or before */
};

/* Returns 0 when name is a run state qraft_workflow_runs takes, else
 * QRAFT_EINVAL. */
int qraft_workflow_state_check(const char *name);

/* One page of runs that match f (NULL: all), with their steps, from cursor
 * (NULL or "": the first), at most count (0: 10; at most 100). Served by
 * the node asked. *out new; free with qraft_workflow_page_free. */
int qraft_workflow_runs(struct qraft_client *c,
                        const struct qraft_workflow_filter *f,
                        const char *cursor,
                        uint32_t count,
                        struct qraft_workflow_page **out);
void qraft_workflow_page_free(struct qraft_workflow_page *p);

/* Cancels running runs run_ids[0..n). *out new (free with qraft_bulk_free):
 * a result per run. Repeated after an ambiguous failure. */
int qraft_workflow_cancel(struct qraft_client *c,
                          const char *const *run_ids,
                          size_t n,
                          struct qraft_bulk **out);

/* Resumes (restart false: the failed step is delivered again) or restarts
 * (from the initial payload) the failed runs whose dead letters are
 * message_ids[0..n). *out as for qraft_workflow_cancel. Not repeated after
 * an ambiguous failure (QRAFT_EUNKNOWN), like qraft_dlq_replay. */
int qraft_workflow_dlq(struct qraft_client *c,
                       const char *const *message_ids,
                       size_t n,
                       bool restart,
                       struct qraft_bulk **out);

/* ----------------------------------------------------------------------
 * Cluster status, as seen by the node the client is connected to. */

struct qraft_node_status {
    uint64_t id;
    char *role; /* voter, standby, spare */
    bool alive;
    uint64_t applied;
    uint32_t shards;
    char *raft; /* addresses */
    char *rpc;
    char *http;
    char *version;          /* as the node advertised it; "" unknown */
    uint32_t feature_level; /* advertised; 0 unknown */
    /* On the leader: why it refuses this node's node-to-node requests
     * (its peer token); "" when it does not. */
    char *problem;
};

struct qraft_status {
    uint64_t node_id;
    char *state;        /* leader, follower, candidate, unavailable */
    uint64_t leader_id; /* 0 when unknown */
    char *leader_rpc;
    uint64_t term;
    uint64_t commit_index;
    uint64_t applied_index;
    uint64_t last_index;
    uint64_t state_counts[QRAFT_N_STATES]; /* indexed by enum qraft_state */
    char *version;
    uint32_t feature_level; /* the cluster's (see docs/operations.md) */
    /* Of the answering node's process; 0 when unknown (older nodes). */
    uint64_t loop_stalls;       /* loop kept from its timers >= 50 ms */
    uint64_t loop_stall_max_ms; /* the longest of those, since start */
    uint64_t rss_bytes;         /* resident memory */
    uint64_t store_used_bytes;  /* live bytes in the store */
    uint64_t store_file_bytes;  /* size of the store's file */
    /* Why the answering node cannot do its part ("" when nothing is
     * wrong): the leader refuses its peer token. */
    char *problem;
    struct qraft_node_status *nodes;
    size_t n_nodes;
};

/* The cluster as its leader sees it: a follower asked forwards the
 * question to the leader (only the leader knows every node's liveness and
 * applied index), or answers itself when it knows no leader it can reach
 * (a node built before StatusRequest.from_leader always does). With stale
 * reads set
 * (qraft_client_set_stale_reads) the node reached answers from its own
 * state. On success *out is new; free with qraft_status_free. */
int qraft_status(struct qraft_client *c, struct qraft_status **out);

void qraft_status_free(struct qraft_status *s);

/* ----------------------------------------------------------------------
 * Pipelined publishes, for throughput (qraft-bench uses them).
 *
 * qraft_publish_send writes a publish on the handle's connection without
 * waiting for its answer; qraft_publish_recv returns answers as they come,
 * in any order. Every successful send is matched by exactly one reply.
 * These calls do not retry, redirect or back off: they talk to the node the
 * handle is connected to (make one blocking call first, e.g. qraft_publish,
 * so that it is the leader) and report each failure in its reply; a reply
 * carries the idempotency key so the caller can retry with qraft_publish
 * and the same key. If the connection breaks, every outstanding publish is
 * replied with QRAFT_EUNKNOWN (or QRAFT_EPROTO) and the next send
 * reconnects. While publishes are outstanding, the blocking calls refuse to
 * run (QRAFT_EINVAL). */

struct qraft_publish_reply {
    uint64_t ticket; /* from qraft_publish_send */
    int rc;          /* 0 or QRAFT_E*; the text is in qraft_client_errmsg */
    char id[QRAFT_ID_MAX];
    bool deduplicated;
    char idempotency_key[QRAFT_KEY_MAX];
};

/* Sends p; *ticket identifies its reply. Waits at most call_timeout_ms for
 * the connection and the socket buffer. On failure nothing is outstanding
 * for p. */
int qraft_publish_send(struct qraft_client *c,
                       const struct qraft_publish *p,
                       uint64_t *ticket);

/* Waits up to timeout_ms (negative: forever) for the next reply. Returns 0
 * with *out filled, QRAFT_ETIMEDOUT when none came in time (call again
 * later), QRAFT_EINVAL when nothing is outstanding. */
int qraft_publish_recv(struct qraft_client *c,
                       int timeout_ms,
                       struct qraft_publish_reply *out);

/* Number of publishes sent and not yet replied. */
size_t qraft_publish_outstanding(const struct qraft_client *c);

#ifdef __cplusplus
}
#endif

#endif /* QRAFT_H */
