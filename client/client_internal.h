/* libqraft's private interface between client.c (the transport: connection,
 * framing, retries, TLS, errors) and the request files (client_publish.c,
 * client_messages.c, client_admin.c, ...). Not installed. A request file
 * builds a Qraft__Request, runs it with qr_client_call or
 * qr_client_call_expect and converts the answer; it never touches the
 * connection itself, but for the pipelined publishes. The qr_client_*
 * symbols are hidden from libqraft.so's ABI. */
#ifndef QRAFT_CLIENT_INTERNAL_H
#define QRAFT_CLIENT_INTERNAL_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>

#include "qraft.h"
#include "qraft.pb-c.h"

#define PEER_MAX 320

struct endpoint {
    char *host;
    char *port;
};

/* A pipelined publish sent and not yet replied. lost_rc != 0 once its
 * connection is gone: the reply is then that code. */
struct pending {
    uint64_t id;
    int lost_rc;
    char key[QRAFT_KEY_MAX];
};

struct qraft_client {
    struct endpoint *eps;
    size_t n_eps;
    size_t ep_index;
    struct endpoint redirect; /* host == NULL: none */
    char *token;
    bool stale_reads;          /* Request.stale on every call */
    struct qraft_options opts; /* defaults filled in */
    int fd;                    /* -1: not connected */
    SSL_CTX *tls;              /* owned; NULL: plaintext */
    SSL *ssl;                  /* owned: fd's TLS while connected */
    char peer[PEER_MAX];       /* "host:port" of the target */
    uint64_t next_id;
    uint8_t *rbuf; /* received bytes not yet parsed: rbuf[0..rlen) */
    size_t rlen;
    size_t rcap;
    struct pending *pend;
    size_t n_pend;
    size_t cap_pend;
    uint64_t rng;
    char errmsg[QRAFT_ERRMSG_MAX];
};

/* How a call may be retried after an attempt whose outcome is unknown. */
enum retry_policy {
    RETRY_ANY,   /* repeating is harmless: reads, keyed publishes, ... */
    RETRY_UNSENT /* repeat only what surely did not take effect */
};

#pragma GCC visibility push(hidden)

/* Sets c's error message; returns rc. */
__attribute__((format(printf, 3, 4))) int qr_client_fail(struct qraft_client *c,
                                                         int rc,
                                                         const char *fmt,
                                                         ...);
int64_t qr_client_now_ms(void);
/* Writes a fresh idempotency key (32 hex digits, time-ordered). */
int qr_client_make_key(struct qraft_client *c, char key[QRAFT_KEY_MAX]);
/* The QRAFT_E* code for a server status. */
int qr_client_status_code(Qraft__Status status);
/* Sets the error from a refused response; returns its code. */
int qr_client_fail_server(struct qraft_client *c, const Qraft__Response *resp);
/* Sends req until an attempt is answered, following the leader and
 * retrying as `policy` allows, within the call's deadline. On success *out
 * is the OK Response (new; free with qraft__response__free_unpacked).
 * *ambiguous (may be NULL) tells whether an earlier attempt may have taken
 * effect. */
int qr_client_call(struct qraft_client *c,
                   Qraft__Request *req,
                   enum retry_policy policy,
                   Qraft__Response **out,
                   bool *ambiguous);
/* qr_client_call, and checks that the answer has the expected body. */
int qr_client_call_expect(struct qraft_client *c,
                          Qraft__Request *req,
                          enum retry_policy policy,
                          Qraft__Response__BodyCase body,
                          Qraft__Response **out);
/* A copy of s ("" for NULL); sets *oom and returns NULL when out of
 * memory. */
char *qr_client_dup_str(const char *s, bool *oom);
/* s, or "" for NULL (protobuf-c wants non-NULL strings). */
char *qr_client_or_empty(const char *s);

/* A PublishRequest that borrows from p, plus what it owns. */
struct qr_client_publish_req {
    Qraft__PublishRequest pr;
    Qraft__RetryOptions retry_options;
    Qraft__Header *headers;
    Qraft__Header **header_ptrs;
    char key[QRAFT_KEY_MAX];
    bool generated_key;
    Qraft__Redact redact;
    char *redact_spec;   /* a copy of p->redact, cut into names */
    char **redact_names; /* into redact_spec */
};

/* Builds r->pr from p, drawing an idempotency key when p has neither a
 * key nor a dedup id; r borrows p's strings. With group (not NULL or
 * ""), p->url must be unset: the request goes to that URL group. On success
 * free with qr_client_publish_req_fini; a failed init leaves nothing to free.
 */
int qr_client_publish_req_init(struct qraft_client *c,
                               const struct qraft_publish *p,
                               const char *group,
                               struct qr_client_publish_req *r);
void qr_client_publish_req_fini(struct qr_client_publish_req *r);
/* The public state for a stored one (UNSPECIFIED when out of range). */
enum qraft_state qr_client_to_state(Qraft__MessageState s);

/* Runs a bulk request and converts its answer (BulkResponse or
 * BulkPageResponse) into a new qraft_bulk, items in their order (free
 * with qraft_bulk_free). */
int qr_client_call_bulk(struct qraft_client *c,
                        Qraft__Request *req,
                        enum retry_policy policy,
                        struct qraft_bulk **out);
/* The index of name (case-insensitive) in names[1..n), or -1: names[0]
 * is the "unspecified" no input may name. */
int qr_client_name_index(const char *const *names, size_t n, const char *name);

/* The connection, for the pipelined publishes only. */
int qr_client_check_size(struct qraft_client *c, Qraft__Request *req);
bool qr_client_conn_alive(struct qraft_client *c);
int qr_client_conn_open(struct qraft_client *c, int64_t deadline);
void qr_client_next_endpoint(struct qraft_client *c);
void qr_client_drop_connection(struct qraft_client *c, int lost_rc);
int qr_client_send_request(struct qraft_client *c,
                           const Qraft__Request *req,
                           int64_t deadline);
int qr_client_conn_recv(struct qraft_client *c,
                        int64_t deadline,
                        Qraft__Response **out);

#pragma GCC visibility pop

#endif
