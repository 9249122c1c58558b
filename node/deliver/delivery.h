/* The delivery engine: HTTP requests to destinations over libcurl's multi
 * interface, driven by the node's libuv loop (one uv_poll per socket, one
 * uv_timer for curl's timeouts). It owns no thread and never blocks the loop;
 * with delivery_xfer.c it is the only module that includes <curl/curl.h>.
 *
 * Invariants:
 * - A request accepted by qr_delivery_send (it returned 0) gets exactly one
 *   callback: a response, a transport failure, or CANCELLED. A refused one
 *   gets none. Callbacks never run inside qr_delivery_send; they may run
 *   inside qr_delivery_cancel and qr_delivery_close (with CANCELLED).
 * - At most max_inflight transfers run at once, at most max_per_host of them
 *   to one host (scheme + host + port). The others wait in one FIFO queue per
 *   host; hosts take turns (round-robin) when a slot frees, so a slow host
 *   cannot starve the others. The engine takes any number of requests;
 *   qr_delivery_host_queued tells a caller with a cap of its own on what it
 *   has in flight (the worker) how many wait for one host, so that a host
 *   that hangs cannot take the whole of that cap.
 * - A transfer starts (goes to curl, and so may reach its destination) only
 *   while the gate, when one is set, says yes: it is asked right before each
 *   start. A closed gate holds requests in their queues; running transfers
 *   go on. qr_delivery_resume starts what the gate held once it opened.
 * - Memory per transfer is bounded whatever the destination does: the body
 *   is captured up to max_response_body_bytes, then read and discarded up to
 *   max_drain_bytes more (so the connection can be reused), then the
 *   transfer is cut short and the response reported as it stands (status,
 *   headers, captured body, body_truncated). Headers are captured up to
 *   max_response_header_bytes: one that does not fit is dropped, later ones
 *   that do are kept (curl itself refuses header sections over ~300 KiB).
 *   Time is bounded by the request's timeout.
 * - The request goes out as given: the URL byte for byte (no dot-segment or
 *   escape normalization), the method, the caller's headers and the body
 *   (also for GET and DELETE). The engine adds only Host, Content-Length
 *   (when there is a body, or for POST/PUT/PATCH) and suppresses what curl
 *   would add by itself (Accept, Expect: 100-continue, a form Content-Type).
 *   Caller headers Content-Length, Transfer-Encoding and Connection are
 *   dropped: framing and connection reuse belong to the engine. (A #fragment
 *   is never sent, as in any HTTP client.) No proxy is used, whatever the
 *   environment says. https peers are verified against the system CAs;
 *   HTTP/2 is used when the peer offers it over TLS.
 * - Redirects are not followed unless max_redirects > 0 (a 3xx is then just a
 *   response); only http and https are spoken, also on redirects.
 * - With a destination policy set (qr_delivery_set_destinations, the SSRF
 *   guard), every connection is checked on the address it is about to be
 *   made to, after name resolution, before the socket exists: a refused
 *   address is never connected to, so neither a name that resolves (or
 *   rebinds) to an internal address nor a redirect (were one followed) can
 *   get past it. A name with several addresses is served by the allowed
 *   ones; when every address tried was refused and no connection was made,
 *   the transfer ends REFUSED, its error naming the address and its class.
 *
 * CURLcode → transport (the only place curl's codes are seen; see
 * qr_delivery_transport_name for the spellings used in logs):
 *   CURLE_OK                                               OK
 *   COULDNT_CONNECT; OPERATION_TIMEDOUT before any of the
 *   request was sent (DNS, TCP or TLS handshake)           CONNECT
 *   COULDNT_RESOLVE_HOST, COULDNT_RESOLVE_PROXY            DNS
 *   SSL_*, PEER_FAILED_VERIFICATION, USE_SSL_FAILED        TLS
 *   OPERATION_TIMEDOUT once the request went out           TIMEOUT
 *   WEIRD_SERVER_REPLY, GOT_NOTHING, RECV_ERROR,
 *   SEND_ERROR, PARTIAL_FILE, HTTP2, HTTP2_STREAM,
 *   HTTP3, BAD_CONTENT_ENCODING, UNSUPPORTED_PROTOCOL
 *   (e.g. an HTTP/0.9 answer), RANGE_ERROR                 PROTOCOL
 *   TOO_MANY_REDIRECTS                                     TOO_MANY_REDIRECTS
 *   any failure, when every address was refused by the
 *   destination policy and none connected                  REFUSED
 *   WRITE_ERROR after the drain limit (we stopped reading) OK, body_truncated
 *   anything else (OUT_OF_MEMORY, ...)                     OTHER
 *
 * Call qr_delivery_global_init once at process start, before any thread is
 * created (curl_global_init is not thread-safe on older curl). */
#ifndef QR_DELIVERY_H
#define QR_DELIVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "lib/err.h"

struct qr_dest_policy;

#define QR_DELIVERY_DEFAULT_MAX_INFLIGHT 256u
#define QR_DELIVERY_DEFAULT_MAX_PER_HOST 32u
#define QR_DELIVERY_DEFAULT_MAX_BODY_BYTES 4096u
#define QR_DELIVERY_DEFAULT_MAX_DRAIN_BYTES ((size_t)1024 * 1024)
#define QR_DELIVERY_DEFAULT_MAX_HEADER_BYTES ((size_t)16 * 1024)
#define QR_DELIVERY_DEFAULT_CONNECT_TIMEOUT_MS 10000u
#define QR_DELIVERY_DEFAULT_TIMEOUT_MS 30000u
#define QR_DELIVERY_ERROR_BYTES 160

struct qr_delivery_limits {
    unsigned max_inflight; /* transfers running at once, >= 1 */
    unsigned max_per_host; /* of them to one scheme+host+port, >= 1 */
    /* Response body bytes kept for the callback; beyond them up to
     * max_drain_bytes more are read and discarded, then the transfer is cut
     * short (the response is still reported, body_truncated set). */
    size_t max_response_body_bytes;
    size_t max_drain_bytes;
    /* Response header bytes kept ("name: value" lines); the rest dropped. */
    size_t max_response_header_bytes;
    unsigned max_redirects;      /* 0: a 3xx is returned as it is */
    uint64_t connect_timeout_ms; /* > 0 */
    uint64_t default_timeout_ms; /* when a request gives 0; > 0 */
};

struct qr_delivery_header {
    const char *name;
    const char *value;
};

/* Everything is borrowed for the duration of qr_delivery_send only: the
 * engine copies what it needs. */
struct qr_delivery_request {
    const char *url;    /* http:// or https://, sent exactly as given */
    const char *method; /* GET POST PUT PATCH DELETE (any case) */
    const struct qr_delivery_header *headers;
    size_t n_headers;
    const uint8_t *body; /* may be NULL when body_len is 0 */
    size_t body_len;
    uint64_t timeout_ms; /* whole transfer, from its start; 0 = default */
    /* Response body bytes kept for this one (a workflow call's result);
     * 0 = the engine's max_response_body_bytes. */
    size_t max_response_body_bytes;
};

enum qr_delivery_transport {
    QR_DELIVERY_OK = 0, /* a response arrived: see status */
    QR_DELIVERY_CONNECT,
    QR_DELIVERY_DNS,
    QR_DELIVERY_TLS,
    QR_DELIVERY_TIMEOUT,
    QR_DELIVERY_PROTOCOL, /* nothing, garbage or a broken response */
    QR_DELIVERY_TOO_MANY_REDIRECTS,
    QR_DELIVERY_CANCELLED, /* qr_delivery_cancel or the engine closing */
    QR_DELIVERY_REFUSED,   /* the destination policy refused every address */
    QR_DELIVERY_OTHER,
};

/* Borrowed by the callback; nothing in it outlives the call. */
struct qr_delivery_response {
    enum qr_delivery_transport transport;
    char error[QR_DELIVERY_ERROR_BYTES]; /* human, "" when all went well */
    /* Status of the last response whose status line arrived, also when the
     * transfer then failed (transport != OK); 0 if none arrived. */
    long status;
    const struct qr_delivery_header *headers; /* of that response, as sent */
    size_t n_headers;
    bool headers_truncated;
    const uint8_t *body; /* the first body_len bytes of the body */
    size_t body_len;
    bool body_truncated; /* the body had more bytes than body_len */
    uint64_t queued_ms;  /* waiting for a slot */
    uint64_t elapsed_ms; /* from the transfer's start to its end */
};

typedef void (*qr_delivery_cb)(void *data,
                               const struct qr_delivery_response *resp);

struct qr_delivery;
typedef void (*qr_delivery_close_cb)(struct qr_delivery *d);

/* Internal types of delivery.c and delivery_xfer.c. */
struct qr_delivery_host;
struct qr_delivery_sock;
struct qr_delivery_slot;
struct qr_delivery_xfer;

/* Caller-allocated; the fields are private to delivery.c (and
 * delivery_xfer.c). */
struct qr_delivery {
    uv_loop_t *loop; /* borrowed */
    struct qr_delivery_limits limits;
    void *multi; /* CURLM *, owned */
    uv_timer_t timer;
    struct qr_delivery_xfer *running; /* transfers in curl, a list */
    struct qr_delivery_host **host_buckets;
    size_t n_host_buckets, n_hosts;
    /* hosts with queued requests and a free per-host slot, in turn order */
    struct qr_delivery_host *runnable_head, *runnable_tail;
    struct qr_delivery_slot *slots; /* ticket -> transfer */
    size_t n_slots;
    size_t free_slot; /* head of the free list, n_slots when empty */
    struct qr_delivery_sock *socks; /* polled sockets, a list */
    size_t n_inflight, n_queued;
    bool (*gate)(void *data); /* may a transfer start now? NULL: yes */
    void *gate_data;
    /* borrowed; NULL: any address may be connected to */
    const struct qr_dest_policy *destinations;
    unsigned n_handles; /* uv handles open or closing */
    bool initialized;
    bool closing;
    qr_delivery_close_cb close_cb;
    char errmsg[QR_ERRMSG_BYTES];
};

/* curl_global_init. Once, at start, before threads. Returns 0 or
 * QR_EUNAVAIL. qr_delivery_global_cleanup undoes it at exit. */
int qr_delivery_global_init(void);
void qr_delivery_global_cleanup(void);

/* Fills *out with the defaults above. */
void qr_delivery_limits_default(struct qr_delivery_limits *out);

/* Initializes d on loop (borrowed, must outlive d). limits is copied; NULL
 * means the defaults. On failure returns QR_EBADREQ (bad limits) or
 * QR_EUNAVAIL/-ENOMEM, errmsg (QR_ERRMSG_BYTES, may be NULL) says why, and
 * nothing needs closing. */
int qr_delivery_init(struct qr_delivery *d,
                     uv_loop_t *loop,
                     const struct qr_delivery_limits *limits,
                     char *errmsg);

/* Starts the request, or queues it behind its host's earlier ones. On 0, cb
 * fires exactly once, later, with data; *ticket_out (may be NULL) names the
 * request for qr_delivery_cancel. On failure cb never fires: QR_EBADREQ (bad
 * URL, method or header; d->errmsg says which), -ENOMEM, QR_EUNAVAIL (curl
 * refused the transfer) or QR_ECANCELED (the engine is closing or closed). */
int qr_delivery_send(struct qr_delivery *d,
                     const struct qr_delivery_request *req,
                     qr_delivery_cb cb,
                     void *data,
                     uint64_t *ticket_out);

/* Aborts one request, queued or running: its callback fires, before this
 * returns, with CANCELLED. Returns QR_ENOTFOUND when the ticket's callback
 * already fired (or never existed). */
int qr_delivery_cancel(struct qr_delivery *d, uint64_t ticket);

/* Sets the gate asked before every start (see the invariants); NULL
 * removes it. It must not call qr_delivery_* functions. */
void qr_delivery_set_gate(struct qr_delivery *d,
                          bool (*gate)(void *data),
                          void *data);

/* Sets the policy (borrowed, must outlive d; NULL: none) every
 * connection's address is checked against from now on (see the
 * invariants). */
void qr_delivery_set_destinations(struct qr_delivery *d,
                                  const struct qr_dest_policy *policy);

/* The publish-time side of the guard: when url's host (as curl reads it)
 * is a literal address that policy refuses, returns QR_EBADREQ with err
 * (err_len bytes) naming field, the address and its class. A host name,
 * an allowed address, or a URL curl cannot read (other checks refuse
 * that) returns 0: the check at connection time is the guard, this one
 * only answers sooner. */
int qr_delivery_check_url(const struct qr_dest_policy *policy,
                          const char *field,
                          const char *url,
                          char *err,
                          size_t err_len);

/* Starts what waits in the queues and may start now: call when the gate
 * may have opened. Callbacks may fire inside (a transfer that cannot
 * start is reported as it would be from a send). */
void qr_delivery_resume(struct qr_delivery *d);

/* Cancels every request that has not started (queued): each callback fires
 * with CANCELLED before this returns. Those never reached their
 * destination. Running transfers go on. Returns how many were cancelled. */
size_t qr_delivery_cancel_queued(struct qr_delivery *d);

/* How many requests wait in the queue of url's host (scheme + host +
 * port); 0 for a URL the engine would refuse (send says why). */
size_t qr_delivery_host_queued(struct qr_delivery *d, const char *url);

size_t qr_delivery_inflight(const struct qr_delivery *d);
size_t qr_delivery_queued(const struct qr_delivery *d);

/* Cancels every request (each callback fires with CANCELLED, before this
 * returns), drops all connections and closes the uv handles; cb (may be NULL)
 * fires once they are closed, from the loop. Sends are refused from now on.
 * Safe to call twice; the second call does nothing. */
void qr_delivery_close(struct qr_delivery *d, qr_delivery_close_cb cb);

/* "ok", "connect", "dns", "tls", "timeout", "protocol",
 * "too_many_redirects", "cancelled", "refused", "other". Static. */
const char *qr_delivery_transport_name(enum qr_delivery_transport t);

#endif /* QR_DELIVERY_H */
