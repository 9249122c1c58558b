/* One transfer of the delivery engine: a request copied into curl's terms
 * (URL, method, headers, body), the easy handle's options (TLS protocols,
 * timeouts, keepalive) and the capture of its response, bounded by the
 * engine's limits. Internal to node/deliver/: delivery.c owns the queues,
 * the multi handle and the loop; this file owns what one easy handle does.
 * With delivery.c, the only place that includes <curl/curl.h>.
 *
 * Invariants:
 * - A request is checked whole (method, URL, body, headers) before any
 *   transfer is made of it: a refused one leaves nothing behind.
 * - The curl callbacks here (body, headers) run inside curl: they only copy
 *   bytes into the xfer, never call user code or curl. */
#ifndef QR_DELIVERY_XFER_H
#define QR_DELIVERY_XFER_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deliver/delivery.h"

/* Returns from the enclosing function (which returns CURLcode or
 * CURLMcode) with the code of a curl call that failed: CURLE_OK and
 * CURLM_OK are both 0. */
#define QR_CURL_TRY(call)      \
    do {                       \
        int rc_ = (int)(call); \
        if (rc_ != 0) {        \
            return rc_;        \
        }                      \
    } while (0)

enum xfer_state { XFER_QUEUED, XFER_RUNNING };

struct qr_delivery_xfer {
    struct qr_delivery *d;
    struct qr_delivery_host *host;
    struct qr_delivery_xfer *prev, *next; /* d->running or host queue */
    enum xfer_state state;
    size_t slot;
    qr_delivery_cb cb;
    void *data;
    /* the request, copied */
    char *url;
    char method[8];
    struct curl_slist *headers;
    uint8_t *body;
    size_t body_len;
    bool send_body;
    uint64_t timeout_ms;
    /* the transfer */
    CURL *easy;
    uint64_t queued_at_ms;
    uint64_t started_at_ms;
    char errbuf[CURL_ERROR_SIZE];
    /* the response */
    uint8_t *resp_body;
    size_t resp_body_len, resp_body_cap;
    size_t resp_body_max; /* the request's, or 0: the engine's */
    uint64_t resp_body_total;
    bool drained; /* we stopped reading after the drain limit */
    /* The destination policy's verdicts on this transfer's connections:
     * sockets opened, addresses refused and why the first one was. */
    unsigned n_opened, n_refused;
    char refused_why[QR_DELIVERY_ERROR_BYTES];
    char *hdr_buf; /* "name\0value\0" pairs */
    size_t hdr_len, hdr_cap;
    size_t n_hdrs;
    bool hdr_truncated;
};

/* Checks that url is an absolute http(s) URL with a host and writes its
 * host key "scheme://host:port" (new; free with free) to *key. Returns 0,
 * QR_EBADREQ (errmsg, QR_ERRMSG_BYTES, says why) or -ENOMEM. */
int qr_delivery_xfer_host_key(const char *url, char **key, char *errmsg);

/* Checks req (method, URL, body, headers) and writes its canonical method
 * (static) to *method and its host key "scheme://host:port" (new; free with
 * free) to *host_key. Returns 0, QR_EBADREQ (errmsg, QR_ERRMSG_BYTES, says
 * why) or -ENOMEM (errmsg untouched). */
int qr_delivery_xfer_check(const struct qr_delivery_request *req,
                           const char **method,
                           char **host_key,
                           char *errmsg);

/* Returns a new xfer holding a copy of req (checked) with method; NULL when
 * out of memory. Free with qr_delivery_xfer_free. */
struct qr_delivery_xfer *qr_delivery_xfer_new(
    const struct qr_delivery_request *req,
    const char *method);

/* Frees x and its easy handle (which curl must be done with). */
void qr_delivery_xfer_free(struct qr_delivery_xfer *x);

/* Sets the options of e, the easy handle of x (x->d set): the request, its
 * limits and the response capture. Stops at the first failure. */
CURLcode qr_delivery_xfer_configure(struct qr_delivery *d,
                                    struct qr_delivery_xfer *x,
                                    CURL *e);

/* The table in delivery.h. `sent` (some of the request went out) tells a
 * timeout while connecting (the destination is unreachable) from a slow
 * answer. */
enum qr_delivery_transport qr_delivery_xfer_transport(CURLcode code, bool sent);

#endif /* QR_DELIVERY_XFER_H */
