/* The node's HTTP server: h2o (HTTP/1.1) on the node's libuv loop, serving a
 * small route table (/healthz, /readyz, /metrics, the console's files:
 * console.h) and the QStash REST API (rest.h), in plaintext or over TLS
 * (h2o's OpenSSL support, ALPN http/1.1).
 * It never holds more than max_conns connections, a TLS handshake gets no
 * longer than a request (req_timeout_ms), and it is closed only once every
 * connection and every uv handle it (or h2o) opened is closed. */
#ifndef QR_HTTP_API_H
#define QR_HTTP_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "lib/metrics.h"

struct qr_ops;
struct qr_tokens;
struct ssl_ctx_st; /* OpenSSL's SSL_CTX */

#define QR_HTTP_DEFAULT_MAX_CONNS 4096u
#define QR_HTTP_DEFAULT_REQ_TIMEOUT_MS 10000u
#define QR_HTTP_DEFAULT_MAX_BODY_BYTES (1024u * 1024u)
#define QR_HTTP_DEFAULT_CLOSE_GRACE_MS 2000u

/* What the server asks the node. Both are called on the loop thread and must
 * not block. `data` is borrowed and must outlive the server. */
struct qr_http_hooks {
    void *data;
    /* The REST API (/v2/...) runs its requests here and checks this token;
     * both borrowed, must outlive the server. ops NULL: /v2 answers 503. */
    struct qr_ops *ops;
    const struct qr_tokens *tokens;
    /* True once the node serves (GET /healthz answers 200). */
    bool (*serving)(void *data);
    /* True when the node knows a leader and has applied everything it knows
     * committed (GET /readyz answers 200). When false, it writes a one-line
     * reason (NUL-terminated, at most why_len bytes) into why. */
    bool (*ready)(void *data, char *why, size_t why_len);
    /* GET /metrics: the node's counters (borrowed, may be NULL; the server
     * counts http_requests into it) and a hook that fills the gauges (may
     * be NULL: zeros). */
    struct qr_metrics *metrics;
    void (*gauges)(void *data, struct qr_metrics_gauges *g);
};

/* Limits; a zero field takes its QR_HTTP_DEFAULT_* value. */
struct qr_http_limits {
    /* Connections held at once. At the cap the server stops accepting: new
     * connections wait in the kernel's backlog until one closes. */
    unsigned max_conns;
    /* Longest wait for a whole request (headers and body), for the next
     * request on an idle keep-alive connection, and for a TLS handshake to
     * complete; then h2o closes the connection. */
    uint64_t req_timeout_ms;
    /* Largest request body; h2o answers 413 to a bigger one. */
    size_t max_body_bytes;
    /* How long qr_http_close lets responses in progress finish before it
     * shuts the remaining connections down. */
    uint64_t close_grace_ms;
};

struct http_server;
struct qr_http;

typedef void (*qr_http_close_cb)(struct qr_http *h);

/* Allocated by the caller; its fields are private. */
struct qr_http {
    struct http_server *server; /* owned; NULL unless running */
};

/* Binds listen_hostport ("127.0.0.1:8080", "[::1]:8080", "localhost:8080")
 * and serves on loop: over TLS with tls (a server context, lib/tls_ctx.h;
 * the server takes its own reference, the caller keeps its own), in
 * plaintext when tls is NULL. loop and hooks->data are borrowed; hooks and
 * limits (NULL: defaults) are copied. On failure returns a negative code
 * (-errno or QR_E*), writes why into errmsg (QR_ERRMSG_BYTES) and leaves
 * nothing for the caller to close; a handle already opened is released by
 * the loop as it runs, so run it before uv_loop_close. */
int qr_http_init(struct qr_http *h,
                 uv_loop_t *loop,
                 const char *listen_hostport,
                 struct ssl_ctx_st *tls,
                 const struct qr_http_limits *limits,
                 const struct qr_http_hooks *hooks,
                 char *errmsg);

/* Connections accepted from now on handshake with tls (a reload: takes its
 * own reference and drops the one on the context before; connections
 * already open keep theirs). Only for a server started with TLS: returns
 * -EINVAL when it serves plaintext (or tls is NULL), -EBADF when it is not
 * running. */
int qr_http_set_tls(struct qr_http *h, struct ssl_ctx_st *tls);

/* The port the server listens on (useful after binding port 0), or a
 * negative code. */
int qr_http_port(const struct qr_http *h);

/* True when the server serves TLS. */
bool qr_http_tls(const struct qr_http *h);

/* Connections held now. */
unsigned qr_http_n_conns(const struct qr_http *h);

/* Stops accepting, lets responses in progress finish for close_grace_ms,
 * then shuts the rest down. cb (may be NULL) fires exactly once, from the
 * loop, after every handle is closed and every byte freed; h must stay valid
 * until then and may be freed or reused in cb. Hooks may be called until cb
 * fires, never after. A second call, or a call on a server that is not
 * running (init failed, or h zeroed), does nothing and its cb never fires. */
void qr_http_close(struct qr_http *h, qr_http_close_cb cb);

#endif /* QR_HTTP_API_H */
