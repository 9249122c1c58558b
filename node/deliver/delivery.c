/* The delivery engine: libcurl multi on the node's uv loop. See delivery.h
 * for the contract and the CURLcode table. What one transfer is (the request
 * copied into an easy handle, its options, its response capture) lives in
 * delivery_xfer.c; this file owns tickets, hosts, queues, the multi handle
 * and the loop.
 *
 * Shape of the state:
 * - Every accepted request is a `struct xfer`, named by a ticket: (slot
 *   generation << 32 | slot index), so cancel finds it in O(1) and a stale
 *   ticket never names a later request.
 * - An xfer is either RUNNING (in curl, on d->running) or QUEUED (on its
 *   host's FIFO). Hosts live in a hash table while they have either kind;
 *   a host with queued xfers and a free per-host slot is on the runnable
 *   list, which dispatch() serves round-robin whenever a global slot frees.
 * - Sockets: curl tells us (on_curl_socket) which sockets to watch; each gets
 *   a uv_poll handle, closed as soon as curl stops caring about it. curl's
 *   single timeout is one uv_timer. User callbacks never run inside a curl
 *   callback: completions are collected after curl_multi_socket_action. */
#include "deliver/delivery.h"
#include "deliver/delivery_xfer.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/clock.h"
#include "lib/dlist.h"
#include "lib/logger.h"

#define HOST_BUCKETS_MIN 64u
#define TICKET_INDEX_MASK 0xffffffffull

struct qr_delivery_host {
    struct qr_delivery_host *hash_next;
    struct qr_delivery_host *run_prev, *run_next;
    bool runnable;
    uint64_t hash;
    struct qr_delivery_xfer *queue_head, *queue_tail;
    unsigned n_running;
    size_t n_queued;
    char key[]; /* "scheme://host:port", lower case */
};

struct qr_delivery_sock {
    uv_poll_t poll;
    struct qr_delivery *d;
    curl_socket_t fd;
    struct qr_delivery_sock *prev, *next;
};

struct qr_delivery_slot {
    struct qr_delivery_xfer *xfer; /* NULL when free */
    uint32_t gen;
    size_t next_free;
};

static void dispatch(struct qr_delivery *d);

/* ------------------------------------------------------------------------ */
/* Helpers. */

static void set_errmsg(struct qr_delivery *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_errmsg(struct qr_delivery *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->errmsg, sizeof d->errmsg, fmt, ap);
    va_end(ap);
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 14695981039346656037ull;
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

/* ------------------------------------------------------------------------ */
/* Tickets. */

static int slot_alloc(struct qr_delivery *d,
                      struct qr_delivery_xfer *x,
                      uint64_t *ticket)
{
    if (d->free_slot == d->n_slots) {
        size_t n = d->n_slots == 0 ? 64 : d->n_slots * 2;
        if (n > TICKET_INDEX_MASK) {
            return -ENOMEM;
        }
        struct qr_delivery_slot *slots = realloc(d->slots, n * sizeof *slots);
        if (slots == NULL) {
            return -ENOMEM;
        }
        for (size_t i = d->n_slots; i < n; i++) {
            slots[i].xfer = NULL;
            slots[i].gen = 1;
            slots[i].next_free = i + 1 < n ? i + 1 : n;
        }
        /* The free list was empty: it is now exactly the new slots, and
         * "empty" is spelled n from here on. */
        d->free_slot = d->n_slots;
        d->slots = slots;
        d->n_slots = n;
    }
    size_t i = d->free_slot;
    struct qr_delivery_slot *s = &d->slots[i];
    d->free_slot = s->next_free;
    s->xfer = x;
    x->slot = i;
    *ticket = ((uint64_t)s->gen << 32) | (uint64_t)i;
    return 0;
}

static void slot_release(struct qr_delivery *d, size_t i)
{
    struct qr_delivery_slot *s = &d->slots[i];
    assert(s->xfer != NULL);
    s->xfer = NULL;
    s->gen = s->gen == UINT32_MAX ? 1 : s->gen + 1;
    s->next_free = d->free_slot;
    d->free_slot = i;
}

static struct qr_delivery_xfer *slot_find(struct qr_delivery *d,
                                          uint64_t ticket)
{
    size_t i = (size_t)(ticket & TICKET_INDEX_MASK);
    uint32_t gen = (uint32_t)(ticket >> 32);
    if (i >= d->n_slots || d->slots[i].gen != gen) {
        return NULL;
    }
    return d->slots[i].xfer;
}

/* ------------------------------------------------------------------------ */
/* Hosts: the hash table and the runnable list. */

static struct qr_delivery_host *host_find(struct qr_delivery *d,
                                          const char *key,
                                          uint64_t hash)
{
    struct qr_delivery_host *h =
        d->host_buckets[hash & (d->n_host_buckets - 1)];
    for (; h != NULL; h = h->hash_next) {
        if (h->hash == hash && strcmp(h->key, key) == 0) {
            return h;
        }
    }
    return NULL;
}

static int hosts_grow(struct qr_delivery *d)
{
    size_t n = d->n_host_buckets * 2;
    struct qr_delivery_host **b = calloc(n, sizeof *b);
    if (b == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < d->n_host_buckets; i++) {
        struct qr_delivery_host *h = d->host_buckets[i];
        while (h != NULL) {
            struct qr_delivery_host *next = h->hash_next;
            h->hash_next = b[h->hash & (n - 1)];
            b[h->hash & (n - 1)] = h;
            h = next;
        }
    }
    free(d->host_buckets);
    d->host_buckets = b;
    d->n_host_buckets = n;
    return 0;
}

/* Returns the host for key, creating it; NULL when out of memory. */
static struct qr_delivery_host *host_get(struct qr_delivery *d, const char *key)
{
    uint64_t hash = fnv1a(key);
    struct qr_delivery_host *h = host_find(d, key, hash);
    if (h != NULL) {
        return h;
    }
    if (d->n_hosts >= d->n_host_buckets && hosts_grow(d) != 0) {
        return NULL;
    }
    size_t len = strlen(key);
    h = calloc(1, sizeof *h + len + 1);
    if (h == NULL) {
        return NULL;
    }
    memcpy(h->key, key, len + 1);
    h->hash = hash;
    size_t b = hash & (d->n_host_buckets - 1);
    h->hash_next = d->host_buckets[b];
    d->host_buckets[b] = h;
    d->n_hosts++;
    return h;
}

static void host_free(struct qr_delivery *d, struct qr_delivery_host *h)
{
    struct qr_delivery_host **p =
        &d->host_buckets[h->hash & (d->n_host_buckets - 1)];
    while (*p != h) {
        p = &(*p)->hash_next;
    }
    *p = h->hash_next;
    d->n_hosts--;
    free(h);
}

/* The intrusive lists here (each host's queue, the runnable hosts, the
 * running transfers, curl's sockets) are lib/dlist.h's. */
static void runnable_remove(struct qr_delivery *d, struct qr_delivery_host *h)
{
    QR_DLIST_UNLINK_TAIL(d->runnable_head, d->runnable_tail, h, run_prev,
                         run_next);
    h->runnable = false;
}

static void runnable_append(struct qr_delivery *d, struct qr_delivery_host *h)
{
    QR_DLIST_APPEND(d->runnable_head, d->runnable_tail, h, run_prev, run_next);
    h->runnable = true;
}

/* Puts h where its counts say it belongs: on the runnable list or off it,
 * freed once it has nothing running or queued. */
static void host_update(struct qr_delivery *d, struct qr_delivery_host *h)
{
    bool runnable = h->n_queued > 0 && h->n_running < d->limits.max_per_host;
    if (runnable && !h->runnable) {
        runnable_append(d, h);
    } else if (!runnable && h->runnable) {
        runnable_remove(d, h);
    }
    if (h->n_running == 0 && h->n_queued == 0) {
        host_free(d, h);
    }
}

static void queue_push(struct qr_delivery_host *h, struct qr_delivery_xfer *x)
{
    x->state = XFER_QUEUED;
    QR_DLIST_APPEND(h->queue_head, h->queue_tail, x, prev, next);
    h->n_queued++;
}

static void queue_remove(struct qr_delivery_host *h, struct qr_delivery_xfer *x)
{
    QR_DLIST_UNLINK_TAIL(h->queue_head, h->queue_tail, x, prev, next);
    h->n_queued--;
}

static void running_push(struct qr_delivery *d, struct qr_delivery_xfer *x)
{
    x->state = XFER_RUNNING;
    QR_DLIST_PUSH(d->running, x, prev, next);
}

static void running_remove(struct qr_delivery *d, struct qr_delivery_xfer *x)
{
    QR_DLIST_UNLINK(d->running, x, prev, next);
}

/* ------------------------------------------------------------------------ */
/* Starting and finishing transfers. */

/* Hands x to curl. On failure x is untouched (still unlinked). */
static int xfer_start(struct qr_delivery *d, struct qr_delivery_xfer *x)
{
    /* Callers start a transfer only into a free slot. */
    assert(d->n_inflight < d->limits.max_inflight);
    assert(x->host->n_running < d->limits.max_per_host);
    CURL *e = curl_easy_init();
    if (e == NULL) {
        set_errmsg(d, "delivery: curl_easy_init failed");
        return -ENOMEM;
    }
    CURLcode rc = qr_delivery_xfer_configure(d, x, e);
    if (rc != CURLE_OK) {
        set_errmsg(d, "delivery: setopt: %s", curl_easy_strerror(rc));
        curl_easy_cleanup(e);
        return rc == CURLE_OUT_OF_MEMORY ? -ENOMEM : QR_EUNAVAIL;
    }
    CURLMcode mc = curl_multi_add_handle(d->multi, e);
    if (mc != CURLM_OK) {
        set_errmsg(d, "delivery: add handle: %s", curl_multi_strerror(mc));
        curl_easy_cleanup(e);
        return mc == CURLM_OUT_OF_MEMORY ? -ENOMEM : QR_EUNAVAIL;
    }
    x->easy = e;
    x->started_at_ms = qr_clock_mono_ms();
    running_push(d, x);
    x->host->n_running++;
    d->n_inflight++;
    return 0;
}

/* Unlinks x from wherever it is, fires its callback once and frees it. For
 * a running x, curl must be done with its easy handle (removed). */
static void xfer_finish(struct qr_delivery *d,
                        struct qr_delivery_xfer *x,
                        enum qr_delivery_transport transport,
                        const char *error)
{
    struct qr_delivery_host *h = x->host;
    bool was_running = x->state == XFER_RUNNING;
    if (was_running) {
        assert(h->n_running > 0 && d->n_inflight > 0);
        running_remove(d, x);
        h->n_running--;
        d->n_inflight--;
    } else {
        assert(h->n_queued > 0 && d->n_queued > 0);
        queue_remove(h, x);
        d->n_queued--;
    }
    x->host = NULL;
    host_update(d, h);
    slot_release(d, x->slot);

    uint64_t now = qr_clock_mono_ms();
    struct qr_delivery_response resp = {.transport = transport};
    snprintf(resp.error, sizeof resp.error, "%s", error);
    if (was_running) {
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &resp.status);
        resp.queued_ms = x->started_at_ms - x->queued_at_ms;
        resp.elapsed_ms = now - x->started_at_ms;
    } else {
        resp.queued_ms = now - x->queued_at_ms;
    }
    resp.body = x->resp_body;
    resp.body_len = x->resp_body_len;
    resp.body_truncated = x->resp_body_total > x->resp_body_len;
    resp.headers_truncated = x->hdr_truncated;
    struct qr_delivery_header *hdrs = NULL;
    if (x->n_hdrs > 0) {
        hdrs = calloc(x->n_hdrs, sizeof *hdrs);
        if (hdrs == NULL) {
            resp.headers_truncated = true;
        } else {
            const char *p = x->hdr_buf;
            for (size_t i = 0; i < x->n_hdrs; i++) {
                hdrs[i].name = p;
                p += strlen(p) + 1;
                hdrs[i].value = p;
                p += strlen(p) + 1;
            }
            resp.headers = hdrs;
            resp.n_headers = x->n_hdrs;
        }
    }

    /* Fill the freed slot before the callback, so what the callback sends
     * queues behind requests that were already waiting. */
    if (was_running && !d->closing) {
        dispatch(d);
    }
    x->cb(x->data, &resp);
    free(hdrs);
    qr_delivery_xfer_free(x);
}

static bool gate_open(struct qr_delivery *d)
{
    return d->gate == NULL || d->gate(d->gate_data);
}

/* Starts queued transfers while slots are free and the gate is open, one
 * per host in turn. */
static void dispatch(struct qr_delivery *d)
{
    while (!d->closing && d->n_inflight < d->limits.max_inflight &&
           d->runnable_head != NULL && gate_open(d)) {
        struct qr_delivery_host *h = d->runnable_head;
        struct qr_delivery_xfer *x = h->queue_head;
        queue_remove(h, x);
        d->n_queued--;
        runnable_remove(d, h); /* to the back of the line, if still due */
        int rv = xfer_start(d, x);
        if (rv != 0) {
            /* Put it back to report it through the one path. */
            queue_push(h, x);
            d->n_queued++;
            QR_WARN("delivery", "%s", d->errmsg);
            xfer_finish(d, x, QR_DELIVERY_OTHER, d->errmsg);
            continue;
        }
        host_update(d, h);
    }
}

/* A transfer curl finished with code. */
static void xfer_done(struct qr_delivery *d,
                      struct qr_delivery_xfer *x,
                      CURLcode code)
{
    curl_multi_remove_handle(d->multi, x->easy);
    long request_bytes = 0;
    curl_easy_getinfo(x->easy, CURLINFO_REQUEST_SIZE, &request_bytes);
    enum qr_delivery_transport t =
        qr_delivery_xfer_transport(code, request_bytes > 0);
    const char *error = "";
    if (code == CURLE_WRITE_ERROR && x->drained) {
        t = QR_DELIVERY_OK;
    } else if (code != CURLE_OK && x->n_refused > 0 && x->n_opened == 0) {
        t = QR_DELIVERY_REFUSED;
        error = x->refused_why;
    } else if (code != CURLE_OK) {
        error = x->errbuf[0] != '\0' ? x->errbuf : curl_easy_strerror(code);
    }
    xfer_finish(d, x, t, error);
}

/* Collects what curl finished. Stops if a callback closed the engine. */
static void check_done(struct qr_delivery *d)
{
    CURLMsg *msg;
    int left;
    while (!d->closing &&
           (msg = curl_multi_info_read(d->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE) {
            continue;
        }
        CURL *e = msg->easy_handle;
        CURLcode code = msg->data.result;
        char *priv = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
        struct qr_delivery_xfer *x = (struct qr_delivery_xfer *)priv;
        assert(x != NULL && x->easy == e);
        xfer_done(d, x, code);
    }
}

/* ------------------------------------------------------------------------ */
/* The loop side: sockets and the timer. */

static void on_handle_close(uv_handle_t *handle)
{
    struct qr_delivery *d = handle->data;
    if (handle->type == UV_POLL) {
        free(handle);
    }
    assert(d->n_handles > 0);
    d->n_handles--;
    if (d->closing && d->n_handles == 0) {
        d->initialized = false;
        if (d->close_cb != NULL) {
            d->close_cb(d);
        }
    }
}

static void sock_close(struct qr_delivery_sock *s)
{
    struct qr_delivery *d = s->d;
    QR_DLIST_UNLINK(d->socks, s, prev, next);
    uv_close((uv_handle_t *)&s->poll, on_handle_close);
}

static void on_poll(uv_poll_t *poll, int status, int events)
{
    struct qr_delivery_sock *s = (struct qr_delivery_sock *)poll;
    struct qr_delivery *d = s->d;
    int flags = 0;
    if (status < 0) {
        flags = CURL_CSELECT_ERR;
    } else {
        flags |= (events & UV_READABLE) ? CURL_CSELECT_IN : 0;
        flags |= (events & UV_WRITABLE) ? CURL_CSELECT_OUT : 0;
    }
    int running = 0;
    CURLMcode mc = curl_multi_socket_action(d->multi, s->fd, flags, &running);
    if (mc != CURLM_OK) {
        QR_WARN("delivery", "socket action: %s", curl_multi_strerror(mc));
    }
    check_done(d);
}

static int on_curl_socket(CURL *easy,
                          curl_socket_t fd,
                          int what,
                          void *userp,
                          void *socketp)
{
    (void)easy;
    struct qr_delivery *d = userp;
    struct qr_delivery_sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s != NULL) {
            sock_close(s); /* curl forgets the socket's pointer itself */
        }
        return 0;
    }
    if (s == NULL) {
        s = calloc(1, sizeof *s);
        if (s == NULL) {
            return -1;
        }
        if (uv_poll_init_socket(d->loop, &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        s->poll.data = d;
        s->d = d;
        s->fd = fd;
        QR_DLIST_PUSH(d->socks, s, prev, next);
        d->n_handles++;
        curl_multi_assign(d->multi, fd, s);
    }
    int events = 0;
    events |= (what & CURL_POLL_IN) ? UV_READABLE : 0;
    events |= (what & CURL_POLL_OUT) ? UV_WRITABLE : 0;
    int rv = events != 0 ? uv_poll_start(&s->poll, events, on_poll)
                         : uv_poll_stop(&s->poll);
    return rv == 0 ? 0 : -1;
}

static void on_timer(uv_timer_t *timer)
{
    struct qr_delivery *d = timer->data;
    int running = 0;
    CURLMcode mc =
        curl_multi_socket_action(d->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    if (mc != CURLM_OK) {
        QR_WARN("delivery", "timeout action: %s", curl_multi_strerror(mc));
    }
    check_done(d);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct qr_delivery *d = userp;
    if (timeout_ms < 0) {
        uv_timer_stop(&d->timer);
        return 0;
    }
    return uv_timer_start(&d->timer, on_timer, (uint64_t)timeout_ms, 0) == 0
               ? 0
               : -1;
}

/* ------------------------------------------------------------------------ */
/* Public interface. */

int qr_delivery_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : QR_EUNAVAIL;
}

void qr_delivery_global_cleanup(void)
{
    curl_global_cleanup();
}

void qr_delivery_limits_default(struct qr_delivery_limits *out)
{
    *out = (struct qr_delivery_limits){
        .max_inflight = QR_DELIVERY_DEFAULT_MAX_INFLIGHT,
        .max_per_host = QR_DELIVERY_DEFAULT_MAX_PER_HOST,
        .max_response_body_bytes = QR_DELIVERY_DEFAULT_MAX_BODY_BYTES,
        .max_drain_bytes = QR_DELIVERY_DEFAULT_MAX_DRAIN_BYTES,
        .max_response_header_bytes = QR_DELIVERY_DEFAULT_MAX_HEADER_BYTES,
        .max_redirects = 0,
        .connect_timeout_ms = QR_DELIVERY_DEFAULT_CONNECT_TIMEOUT_MS,
        .default_timeout_ms = QR_DELIVERY_DEFAULT_TIMEOUT_MS,
    };
}

static int check_limits(const struct qr_delivery_limits *l, char *errmsg)
{
    const char *bad = NULL;
    if (l->max_inflight == 0 || l->max_inflight > 1000000) {
        bad = "max_inflight must be 1..1000000";
    } else if (l->max_per_host == 0) {
        bad = "max_per_host must be >= 1";
    } else if (l->connect_timeout_ms == 0 ||
               l->connect_timeout_ms > (uint64_t)INT32_MAX) {
        bad = "connect_timeout_ms must be 1..2^31-1";
    } else if (l->default_timeout_ms == 0 ||
               l->default_timeout_ms > (uint64_t)INT32_MAX) {
        bad = "default_timeout_ms must be 1..2^31-1";
    } else if (l->max_redirects > 100) {
        bad = "max_redirects must be 0..100";
    }
    if (bad == NULL) {
        return 0;
    }
    if (errmsg != NULL) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "delivery: %s", bad);
    }
    return QR_EBADREQ;
}

/* The multi handle's callbacks (sockets and timer on the loop) and its
 * connection caps; stops at the first failure. */
#define MULTI_SETOPT(m, opt, val) QR_CURL_TRY(curl_multi_setopt(m, opt, val))

static CURLMcode configure_multi(struct qr_delivery *d)
{
    CURLM *m = d->multi;
    long max_conns = (long)d->limits.max_inflight;
    long max_host = (long)d->limits.max_per_host;
    MULTI_SETOPT(m, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    MULTI_SETOPT(m, CURLMOPT_SOCKETDATA, d);
    MULTI_SETOPT(m, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    MULTI_SETOPT(m, CURLMOPT_TIMERDATA, d);
    MULTI_SETOPT(m, CURLMOPT_MAX_HOST_CONNECTIONS, max_host);
    MULTI_SETOPT(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, max_conns);
    /* Keep as many idle connections as may run at once. */
    MULTI_SETOPT(m, CURLMOPT_MAXCONNECTS, max_conns);
    return CURLM_OK;
}

#undef MULTI_SETOPT

int qr_delivery_init(struct qr_delivery *d,
                     uv_loop_t *loop,
                     const struct qr_delivery_limits *limits,
                     char *errmsg)
{
    memset(d, 0, sizeof *d);
    d->loop = loop;
    if (limits != NULL) {
        d->limits = *limits;
    } else {
        qr_delivery_limits_default(&d->limits);
    }
    int rv = check_limits(&d->limits, errmsg);
    if (rv != 0) {
        goto err;
    }
    const curl_version_info_data *info = curl_version_info(CURLVERSION_NOW);
    if (!(info->features & CURL_VERSION_ASYNCHDNS)) {
        QR_WARN("delivery",
                "libcurl %s resolves names synchronously: a slow DNS "
                "server will stall the node's loop",
                info->version);
    }
    rv = -ENOMEM;
    d->host_buckets = calloc(HOST_BUCKETS_MIN, sizeof *d->host_buckets);
    if (d->host_buckets == NULL) {
        goto err;
    }
    d->n_host_buckets = HOST_BUCKETS_MIN;
    d->multi = curl_multi_init();
    if (d->multi == NULL) {
        goto err_after_buckets;
    }
    CURLMcode mc = configure_multi(d);
    if (mc != CURLM_OK) {
        if (errmsg != NULL) {
            snprintf(errmsg, QR_ERRMSG_BYTES, "delivery: multi setopt: %s",
                     curl_multi_strerror(mc));
        }
        rv = QR_EUNAVAIL;
        goto err_after_multi;
    }
    rv = uv_timer_init(loop, &d->timer);
    if (rv != 0) {
        if (errmsg != NULL) {
            snprintf(errmsg, QR_ERRMSG_BYTES, "delivery: timer: %s",
                     uv_strerror(rv));
        }
        goto err_after_multi;
    }
    d->timer.data = d;
    d->n_handles = 1;
    d->initialized = true;
    return 0;

err_after_multi:
    curl_multi_cleanup(d->multi);
    d->multi = NULL;
err_after_buckets:
    free(d->host_buckets);
    d->host_buckets = NULL;
err:
    if (rv == -ENOMEM && errmsg != NULL) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "delivery: out of memory");
    }
    return rv;
}

int qr_delivery_send(struct qr_delivery *d,
                     const struct qr_delivery_request *req,
                     qr_delivery_cb cb,
                     void *data,
                     uint64_t *ticket_out)
{
    assert(req != NULL && cb != NULL);
    d->errmsg[0] = '\0';
    if (!d->initialized || d->closing) {
        set_errmsg(d, "delivery: closing");
        return QR_ECANCELED;
    }
    const char *method = NULL;
    char *key = NULL;
    int rv = qr_delivery_xfer_check(req, &method, &key, d->errmsg);
    if (rv != 0) {
        goto err;
    }
    rv = -ENOMEM;
    struct qr_delivery_xfer *x = qr_delivery_xfer_new(req, method);
    if (x == NULL) {
        goto err_after_key;
    }
    x->d = d;
    x->cb = cb;
    x->data = data;
    x->queued_at_ms = qr_clock_mono_ms();
    struct qr_delivery_host *h = host_get(d, key);
    if (h == NULL) {
        goto err_after_xfer;
    }
    x->host = h;
    uint64_t ticket = 0;
    rv = slot_alloc(d, x, &ticket);
    if (rv != 0) {
        goto err_after_host;
    }
    bool now = d->n_inflight < d->limits.max_inflight &&
               h->n_running < d->limits.max_per_host && h->n_queued == 0 &&
               gate_open(d);
    if (now) {
        rv = xfer_start(d, x);
        if (rv != 0) {
            goto err_after_slot;
        }
    } else {
        queue_push(h, x);
        d->n_queued++;
        host_update(d, h);
    }
    free(key);
    if (ticket_out != NULL) {
        *ticket_out = ticket;
    }
    return 0;

err_after_slot:
    slot_release(d, x->slot);
err_after_host:
    if (h->n_running == 0 && h->n_queued == 0) {
        host_free(d, h);
    }
err_after_xfer:
    qr_delivery_xfer_free(x);
err_after_key:
    free(key);
err:
    if (rv == -ENOMEM && d->errmsg[0] == '\0') {
        set_errmsg(d, "delivery: out of memory");
    }
    return rv;
}

/* Takes x away from curl (if it runs) and reports it CANCELLED. */
static void xfer_cancel(struct qr_delivery *d,
                        struct qr_delivery_xfer *x,
                        const char *why)
{
    if (x->state == XFER_RUNNING) {
        curl_multi_remove_handle(d->multi, x->easy);
    }
    xfer_finish(d, x, QR_DELIVERY_CANCELLED, why);
}

int qr_delivery_cancel(struct qr_delivery *d, uint64_t ticket)
{
    struct qr_delivery_xfer *x = slot_find(d, ticket);
    if (x == NULL) {
        return QR_ENOTFOUND;
    }
    xfer_cancel(d, x, "cancelled");
    return 0;
}

void qr_delivery_set_gate(struct qr_delivery *d,
                          bool (*gate)(void *data),
                          void *data)
{
    d->gate = gate;
    d->gate_data = data;
}

void qr_delivery_set_destinations(struct qr_delivery *d,
                                  const struct qr_dest_policy *policy)
{
    d->destinations = policy;
}

void qr_delivery_resume(struct qr_delivery *d)
{
    if (d->initialized && !d->closing) {
        dispatch(d);
    }
}

size_t qr_delivery_cancel_queued(struct qr_delivery *d)
{
    size_t n = 0;
    /* Each cancel may free its host; start again from the list's head. */
    while (!d->closing && d->n_queued > 0) {
        struct qr_delivery_xfer *x = NULL;
        for (size_t b = 0; b < d->n_host_buckets && x == NULL; b++) {
            for (struct qr_delivery_host *h = d->host_buckets[b];
                 h != NULL && x == NULL; h = h->hash_next) {
                x = h->queue_head;
            }
        }
        if (x == NULL) {
            break;
        }
        xfer_cancel(d, x, "not started: the gate closed");
        n++;
    }
    return n;
}

size_t qr_delivery_host_queued(struct qr_delivery *d, const char *url)
{
    if (!d->initialized || d->n_queued == 0) {
        return 0; /* spare the URL parse */
    }
    char *key = NULL;
    char errmsg[QR_ERRMSG_BYTES];
    if (qr_delivery_xfer_host_key(url, &key, errmsg) != 0) {
        return 0;
    }
    const struct qr_delivery_host *h = host_find(d, key, fnv1a(key));
    free(key);
    return h != NULL ? h->n_queued : 0;
}

size_t qr_delivery_inflight(const struct qr_delivery *d)
{
    return d->n_inflight;
}

size_t qr_delivery_queued(const struct qr_delivery *d)
{
    return d->n_queued;
}

void qr_delivery_close(struct qr_delivery *d, qr_delivery_close_cb cb)
{
    if (!d->initialized || d->closing) {
        return;
    }
    d->closing = true;
    d->close_cb = cb;
    /* One pass is enough: sends are refused from now on, so no slot is
     * taken behind us (callbacks may only cancel ones ahead). */
    for (size_t i = 0; i < d->n_slots; i++) {
        struct qr_delivery_xfer *x = d->slots[i].xfer;
        if (x != NULL) {
            xfer_cancel(d, x, "delivery engine closing");
        }
    }
    assert(d->n_inflight == 0 && d->n_queued == 0 && d->n_hosts == 0);
    /* Drops the idle connections; curl may still report their sockets. */
    curl_multi_cleanup(d->multi);
    d->multi = NULL;
    while (d->socks != NULL) {
        sock_close(d->socks);
    }
    free(d->slots);
    d->slots = NULL;
    d->n_slots = 0;
    d->free_slot = 0;
    free(d->host_buckets);
    d->host_buckets = NULL;
    d->n_host_buckets = 0;
    uv_close((uv_handle_t *)&d->timer, on_handle_close);
}
