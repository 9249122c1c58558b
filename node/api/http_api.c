/* HTTP server on h2o's libuv binding.
 *
 * We own the listener and every connection's uv_tcp_t (struct http_conn);
 * h2o owns the HTTP/1 connection on top of it and closes the uv_tcp_t when
 * it is done, which is when on_conn_closed frees ours. n_conns counts
 * struct http_conn alive, so it never exceeds limits.max_conns: at the cap,
 * on_connection leaves the connection in libuv's hands (libuv then stops
 * watching the listener) and on_conn_closed accepts it once a slot frees up.
 *
 * TLS: h2o's accept does the handshake when accept_ctx.ssl_ctx is set,
 * under h2o's handshake timeout (which we set to req_timeout_ms), and closes
 * the connection when the handshake fails or times out: the connection is
 * ours (counted in n_conns) from accept to on_conn_closed either way. We
 * hold one reference on the context; a reload swaps it, and the SSL of a
 * connection already open holds its own.
 *
 * Stuck writes: h2o never looks at uv_write's return, and libuv (1.44)
 * makes a stream unwritable once a read fails (ECONNRESET), so a write h2o
 * starts after that (the TLS close_notify that h2o_socket_close sends on a
 * connection the client reset) fails at once and its callback never
 * fires: the connection would hold its fd and its slot forever. The sweep
 * timer finds such connections (neither readable nor writable, not
 * closing, an h2o write pending, twice in a row) and fails that write the
 * way libuv would have, so h2o closes the connection as usual.
 *
 * Closing (qr_http_close):
 *   RUNNING --close--> CLOSING: the listener is closed and every connection's
 *     socket is shut for reading, so idle connections see EOF and h2o closes
 *     them; responses in progress are sent with "connection: close". After
 *     close_grace_ms the rest are shut for writing too, which fails their
 *     writes and makes h2o close them.
 *   CLOSING --listener closed and n_conns == 0--> FINISHING: h2o's context
 *     is disposed. It closes uv timers that live inside struct http_server
 *     with no callback, so we cannot free it yet: we close grace_timer right
 *     after (same batch of closing handles) and, from its callback, sentinel
 *     (the next batch). libuv finishes a batch before it runs the closes
 *     requested from that batch's callbacks, so when sentinel's callback
 *     runs, h2o's timers are closed: we free the server and call the user.
 */
#include "api/http_api.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <h2o.h>
#include <jansson.h>

#include "api/console.h"
#include "api/rest.h"
#include "lib/err.h"
#include "lib/logger.h"

#define LISTEN_BACKLOG 511
#define HOST_MAX 256
#define PORT_MAX 8
#define CAP_LOG_INTERVAL_MS 10000
#define SWEEP_INTERVAL_MS 1000
/* Sweeps a connection must be found stuck in before it is failed. */
#define STUCK_SWEEPS 2

enum server_state {
    SERVER_RUNNING,
    SERVER_CLOSING,
    SERVER_FINISHING,
};

struct http_conn {
    uv_tcp_t tcp; /* first: on_conn_closed gets it back from the handle */
    struct http_server *server;
    h2o_socket_t *sock; /* h2o's, on tcp; NULL until handed to h2o */
    unsigned stuck_sweeps;
    LIST_ENTRY(http_conn) link; /* in server->conns */
};

/* h2o's handler, extended with the server it routes for. */
struct route_handler {
    h2o_handler_t super; /* first: h2o allocates and passes this */
    struct http_server *server;
};

struct http_server {
    struct qr_http *owner;
    uv_loop_t *loop;
    struct qr_http_hooks hooks;
    struct qr_http_limits limits;
    enum server_state state;
    uv_tcp_t listener;
    uv_timer_t grace_timer;
    uv_timer_t sweep_timer; /* every SWEEP_INTERVAL_MS: sweep_stuck */
    uv_idle_t sentinel;     /* never started; closed last */
    bool listener_closed;
    bool accept_paused;     /* libuv holds an accepted fd we did not take */
    uint64_t cap_logged_ms; /* loop time we last said the cap was reached */
    unsigned n_conns;
    LIST_HEAD(, http_conn) conns;
    struct qr_rest rest;
    qr_http_close_cb close_cb;
    h2o_globalconf_t globalconf;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
};

/* ---------------------------------------------------------------------------
 * Responses. */

static void start_response(struct http_server *s,
                           h2o_req_t *req,
                           int status,
                           const char *reason,
                           const char *content_type,
                           size_t len)
{
    req->res.status = status;
    req->res.reason = reason;
    req->res.content_length = len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   content_type, strlen(content_type));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-store"));
    if (s->state != SERVER_RUNNING) {
        req->http1_is_persistent = 0;
    }
}

static void send_text(struct http_server *s,
                      h2o_req_t *req,
                      int status,
                      const char *reason,
                      const char *body)
{
    size_t len = strlen(body);

    start_response(s, req, status, reason, "text/plain; charset=utf-8", len);
    h2o_send_inline(req, body, len);
}

/* Answers {"error": message}. */
static void send_error(struct http_server *s,
                       h2o_req_t *req,
                       int status,
                       const char *reason,
                       const char *message)
{
    json_t *obj;
    char *body = NULL;

    obj = json_pack("{s:s}", "error", message);
    if (obj != NULL) {
        body = json_dumps(obj, JSON_COMPACT);
        json_decref(obj);
    }
    if (body == NULL) {
        send_text(s, req, 500, "Internal Server Error", "out of memory\n");
        return;
    }
    start_response(s, req, status, reason, "application/json", strlen(body));
    h2o_send_inline(req, body, strlen(body));
    free(body);
}

/* ---------------------------------------------------------------------------
 * Routes. A handler answers the request before it returns (h2o's request
 * stays valid until the response is sent; an asynchronous handler must also
 * answer before close_grace_ms once qr_http_close started). */

typedef void (*route_fn)(struct http_server *s, h2o_req_t *req);

struct route {
    const char *method; /* "GET" also answers HEAD */
    const char *path;   /* exact match on the normalized path; a final
                           '*' matches any rest */
    route_fn handle;
};

static void handle_healthz(struct http_server *s, h2o_req_t *req)
{
    if (!s->hooks.serving(s->hooks.data)) {
        send_text(s, req, 503, "Service Unavailable", "starting\n");
        return;
    }
    send_text(s, req, 200, "OK", "ok\n");
}

static void handle_readyz(struct http_server *s, h2o_req_t *req)
{
    char why[QR_ERRMSG_BYTES];
    char line[QR_ERRMSG_BYTES + 1];

    why[0] = '\0';
    if (s->hooks.ready(s->hooks.data, why, sizeof(why))) {
        send_text(s, req, 200, "OK", "ready\n");
        return;
    }
    why[sizeof(why) - 1] = '\0';
    snprintf(line, sizeof(line), "%s\n", why[0] != '\0' ? why : "not ready");
    send_text(s, req, 503, "Service Unavailable", line);
}

/* Prometheus text exposition; no auth, like /healthz. */
static void handle_metrics(struct http_server *s, h2o_req_t *req)
{
    struct qr_metrics_gauges g;
    char *body;

    memset(&g, 0, sizeof(g));
    if (s->hooks.gauges != NULL) {
        s->hooks.gauges(s->hooks.data, &g);
    }
    body = qr_metrics_render(s->hooks.metrics, &g);
    if (body == NULL) {
        send_text(s, req, 500, "Internal Server Error", "out of memory\n");
        return;
    }
    start_response(s, req, 200, "OK",
                   "text/plain; version=0.0.4; charset=utf-8", strlen(body));
    h2o_send_inline(req, body, strlen(body));
    free(body);
}

/* The operator console's static files (console.h); no auth, like
 * /healthz: the console's own calls carry the token. */
static void handle_console(struct http_server *s, h2o_req_t *req)
{
    if (s->state != SERVER_RUNNING) {
        req->http1_is_persistent = 0;
    }
    qr_console_serve(req);
}

static const struct route routes[] = {
    {"GET", "/healthz", handle_healthz},
    {"GET", "/readyz", handle_readyz},
    {"GET", "/metrics", handle_metrics},
    {"GET", "/", handle_console},
    {"GET", QR_CONSOLE_PREFIX, handle_console},
    {"GET", QR_CONSOLE_PREFIX "/*", handle_console},
};

#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))

static bool method_is(const h2o_iovec_t *method, const char *name)
{
    return h2o_memis(method->base, method->len, name, strlen(name));
}

static bool route_matches(const struct route *route, const h2o_iovec_t *path)
{
    size_t len = strlen(route->path);

    if (len > 0 && route->path[len - 1] == '*') {
        return path->len >= len - 1 &&
               memcmp(path->base, route->path, len - 1) == 0;
    }
    return h2o_memis(path->base, path->len, route->path, len);
}

static bool route_accepts(const struct route *route, const h2o_iovec_t *method)
{
    if (method_is(method, route->method)) {
        return true;
    }
    return strcmp(route->method, "GET") == 0 && method_is(method, "HEAD");
}

/* Writes "GET, HEAD, POST" (the methods routed for path) into out. */
static void allowed_methods(const h2o_iovec_t *path, char *out, size_t len)
{
    size_t used = 0;

    out[0] = '\0';
    for (size_t i = 0; i < N_ROUTES && used < len; i++) {
        const struct route *route = &routes[i];
        if (!route_matches(route, path)) {
            continue;
        }
        used += (size_t)snprintf(
            out + used, len - used, "%s%s%s", used > 0 ? ", " : "",
            route->method, strcmp(route->method, "GET") == 0 ? ", HEAD" : "");
    }
}

/* A request's labels for qraft_http_requests_total, counted when h2o
 * frees the request (its status is final then): the route pattern, never
 * the raw path, so the label's values are the route table's. */
struct request_count {
    struct qr_metrics *metrics; /* borrowed: outlives every connection */
    const char *route;          /* static */
    h2o_req_t *req;
};

static void on_request_done(void *data)
{
    struct request_count *rc = data;
    char code[16];
    if (rc->req->res.status > 0) { /* 0: the connection went first */
        snprintf(code, sizeof code, "%d", rc->req->res.status);
        qr_metrics_count(&rc->metrics->http, rc->route, code);
    }
}

static const char *route_label(const h2o_iovec_t *path, const h2o_req_t *req)
{
    const char *rest = qr_rest_route_pattern(req);
    if (rest != NULL) {
        return rest;
    }
    for (size_t i = 0; i < N_ROUTES; i++) {
        if (h2o_memis(path->base, path->len, routes[i].path,
                      strlen(routes[i].path))) {
            return routes[i].path;
        }
    }
    return "(other)";
}

static void count_request(struct http_server *s, h2o_req_t *req)
{
    if (s->hooks.metrics == NULL) {
        return;
    }
    struct request_count *rc =
        h2o_mem_alloc_shared(&req->pool, sizeof *rc, on_request_done);
    rc->metrics = s->hooks.metrics;
    rc->route = route_label(&req->path_normalized, req);
    rc->req = req;
}

static int on_request(h2o_handler_t *self, h2o_req_t *req)
{
    struct http_server *s = ((struct route_handler *)self)->server;
    const h2o_iovec_t *path = &req->path_normalized;
    bool path_known = false;
    char allow[64];

    count_request(s, req);
    if (qr_rest_handle(&s->rest, req)) {
        return 0;
    }
    for (size_t i = 0; i < N_ROUTES; i++) {
        const struct route *route = &routes[i];
        if (!route_matches(route, path)) {
            continue;
        }
        path_known = true;
        if (route_accepts(route, &req->method)) {
            route->handle(s, req);
            return 0;
        }
    }
    if (!path_known) {
        send_error(s, req, 404, "Not Found", "not found");
        return 0;
    }
    allowed_methods(path, allow, sizeof(allow));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, allow,
                   strlen(allow));
    send_error(s, req, 405, "Method Not Allowed", "method not allowed");
    return 0;
}

/* ---------------------------------------------------------------------------
 * Connections. */

static void maybe_finish(struct http_server *s);
static void accept_conn(struct http_server *s);

static void link_conn(struct http_server *s, struct http_conn *c)
{
    LIST_INSERT_HEAD(&s->conns, c, link);
    s->n_conns++;
}

static void unlink_conn(struct http_server *s, struct http_conn *c)
{
    LIST_REMOVE(c, link);
    s->n_conns--;
}

static void on_conn_closed(uv_handle_t *handle)
{
    struct http_conn *c = (struct http_conn *)handle;
    struct http_server *s = c->server;

    unlink_conn(s, c);
    free(c);
    if (s->state != SERVER_RUNNING) {
        maybe_finish(s);
        return;
    }
    if (s->accept_paused && s->n_conns < s->limits.max_conns) {
        s->accept_paused = false;
        accept_conn(s);
    }
}

/* Takes the connection libuv holds for the listener and hands it to h2o. */
static void accept_conn(struct http_server *s)
{
    struct http_conn *c;
    h2o_socket_t *sock;
    int rv;

    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        /* Retried when a connection closes. */
        QR_ERROR("http", "accept: out of memory");
        s->accept_paused = true;
        return;
    }
    c->server = s;
    rv = uv_tcp_init(s->loop, &c->tcp);
    if (rv != 0) {
        QR_ERROR("http", "accept: %s", uv_strerror(rv));
        free(c);
        s->accept_paused = true;
        return;
    }
    link_conn(s, c);
    rv = uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&c->tcp);
    if (rv != 0) {
        QR_WARN("http", "accept: %s", uv_strerror(rv));
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    sock = h2o_uv_socket_create((uv_stream_t *)&c->tcp, on_conn_closed);
    c->sock = sock;
    h2o_accept(&s->accept_ctx, sock);
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct http_server *s = listener->data;

    if (status != 0) {
        QR_WARN("http", "accept: %s", uv_strerror(status));
        return;
    }
    if (s->n_conns >= s->limits.max_conns) {
        uint64_t now_ms = uv_now(s->loop);
        if (s->cap_logged_ms == 0 ||
            now_ms - s->cap_logged_ms >= CAP_LOG_INTERVAL_MS) {
            QR_WARN("http", "%u connections: accepting again when one closes",
                    s->n_conns);
            s->cap_logged_ms = now_ms;
        }
        s->accept_paused = true;
        return;
    }
    accept_conn(s);
}

/* shutdown(2) on every open connection: SHUT_RD makes h2o read EOF, so it
 * closes the connection once its response (if any) is sent; SHUT_RDWR also
 * fails writes in progress. */
static void shutdown_conns(struct http_server *s, int how)
{
    struct http_conn *c;
    LIST_FOREACH(c, &s->conns, link)
    {
        uv_os_fd_t fd;
        if (uv_is_closing((uv_handle_t *)&c->tcp)) {
            continue;
        }
        if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) {
            shutdown(fd, how);
        }
    }
}

/* Whether h2o waits on a write callback that libuv will never call (see
 * the top of this file). */
static bool write_stuck(struct http_conn *c)
{
    uv_stream_t *stream = (uv_stream_t *)&c->tcp;

    return c->sock != NULL && !uv_is_closing((uv_handle_t *)stream) &&
           !uv_is_readable(stream) && !uv_is_writable(stream) &&
           stream->write_queue_size == 0 && c->sock->_cb.write != NULL;
}

static void on_sweep(uv_timer_t *timer)
{
    struct http_server *s = timer->data;
    struct http_conn *c;
    struct http_conn *next;

    /* Failing a write may close (not yet free) connections: the list
     * stays valid, freeing waits for on_conn_closed. */
    for (c = LIST_FIRST(&s->conns); c != NULL; c = next) {
        next = LIST_NEXT(c, link);
        if (!write_stuck(c)) {
            c->stuck_sweeps = 0;
            continue;
        }
        if (++c->stuck_sweeps < STUCK_SWEEPS) {
            continue;
        }
        c->stuck_sweeps = 0;
        h2o_socket_cb cb = c->sock->_cb.write;
        c->sock->_cb.write = NULL;
        cb(c->sock, h2o_socket_error_io);
    }
}

/* ---------------------------------------------------------------------------
 * Close. */

static void on_sentinel_closed(uv_handle_t *handle)
{
    struct http_server *s = handle->data;
    struct qr_http *h = s->owner;
    qr_http_close_cb cb = s->close_cb;

    h->server = NULL;
    free(s);
    if (cb != NULL) {
        cb(h);
    }
}

static void on_grace_timer_closed(uv_handle_t *handle)
{
    struct http_server *s = handle->data;

    uv_close((uv_handle_t *)&s->sentinel, on_sentinel_closed);
}

static void maybe_finish(struct http_server *s)
{
    if (s->state != SERVER_CLOSING || !s->listener_closed || s->n_conns > 0) {
        return;
    }
    s->state = SERVER_FINISHING;
    SSL_CTX_free(s->accept_ctx.ssl_ctx);
    s->accept_ctx.ssl_ctx = NULL;
    h2o_context_dispose(&s->ctx);
    h2o_config_dispose(&s->globalconf);
    uv_close((uv_handle_t *)&s->sweep_timer, NULL);
    uv_close((uv_handle_t *)&s->grace_timer, on_grace_timer_closed);
}

static void on_listener_closed(uv_handle_t *handle)
{
    struct http_server *s = handle->data;

    s->listener_closed = true;
    maybe_finish(s);
}

static void on_grace_timeout(uv_timer_t *timer)
{
    struct http_server *s = timer->data;

    QR_WARN("http", "closing: shutting down %u connections still busy",
            s->n_conns);
    qr_rest_abort(&s->rest);
    shutdown_conns(s, SHUT_RDWR);
}

void qr_http_close(struct qr_http *h, qr_http_close_cb cb)
{
    struct http_server *s = h->server;

    if (s == NULL || s->state != SERVER_RUNNING) {
        return;
    }
    s->state = SERVER_CLOSING;
    s->close_cb = cb;
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    shutdown_conns(s, SHUT_RD);
    if (s->n_conns > 0) {
        uv_timer_start(&s->grace_timer, on_grace_timeout,
                       s->limits.close_grace_ms, 0);
    }
}

/* ---------------------------------------------------------------------------
 * Init. */

/* Splits "host:port" or "[v6]:port" into host and port. */
static int split_hostport(const char *in,
                          char host[HOST_MAX],
                          char port[PORT_MAX])
{
    const char *colon;
    const char *host_start = in;
    size_t host_len;

    if (in[0] == '[') {
        const char *close = strchr(in, ']');
        if (close == NULL || close[1] != ':') {
            return -EINVAL;
        }
        host_start = in + 1;
        host_len = (size_t)(close - host_start);
        colon = close + 1;
    } else {
        colon = strrchr(in, ':');
        if (colon == NULL) {
            return -EINVAL;
        }
        host_len = (size_t)(colon - in);
    }
    if (host_len == 0 || host_len >= HOST_MAX) {
        return -EINVAL;
    }
    if (colon[1] == '\0' || strlen(colon + 1) >= PORT_MAX ||
        strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
        atoi(colon + 1) > 65535) {
        return -EINVAL;
    }
    memcpy(host, host_start, host_len);
    host[host_len] = '\0';
    strcpy(port, colon + 1);
    return 0;
}

static int resolve_listen(const char *hostport,
                          struct sockaddr_storage *addr,
                          char *errmsg)
{
    char host[HOST_MAX];
    char port[PORT_MAX];
    struct addrinfo hints;
    struct addrinfo *res;
    int rv;

    if (split_hostport(hostport, host, port) != 0) {
        snprintf(errmsg, QR_ERRMSG_BYTES,
                 "http: listen address '%s' is not HOST:PORT", hostport);
        return -EINVAL;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    rv = getaddrinfo(host, port, &hints, &res);
    if (rv != 0) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "http: listen address '%s': %s",
                 hostport, gai_strerror(rv));
        return -EINVAL;
    }
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

/* ALPN: HTTP/1.1 only (a client that offers only h2 gets no ALPN answer
 * and may go on with HTTP/1.1 or give up). */
static const h2o_iovec_t alpn_http1[] = {{H2O_STRLIT("http/1.1")}, {NULL, 0}};

static void use_tls(struct http_server *s, SSL_CTX *tls)
{
    SSL_CTX_up_ref(tls);
    SSL_CTX_set_num_tickets(tls, 0);
    h2o_ssl_register_alpn_protocols(tls, alpn_http1);
    SSL_CTX_free(s->accept_ctx.ssl_ctx);
    s->accept_ctx.ssl_ctx = tls;
}

static void init_h2o(struct http_server *s, SSL_CTX *tls)
{
    h2o_hostconf_t *host;
    h2o_pathconf_t *path;
    struct route_handler *handler;

    h2o_config_init(&s->globalconf);
    s->globalconf.server_name = h2o_iovec_init(H2O_STRLIT("qraft"));
    s->globalconf.max_request_entity_size = s->limits.max_body_bytes;
    s->globalconf.http1.req_timeout = s->limits.req_timeout_ms;
    s->globalconf.handshake_timeout = s->limits.req_timeout_ms;
    /* HTTP/1.1 only: no h2c upgrade, no prior-knowledge HTTP/2. */
    s->globalconf.http1.upgrade_to_http2 = 0;
    host = h2o_config_register_host(
        &s->globalconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    path = h2o_config_register_path(host, "/", 0);
    handler =
        (struct route_handler *)h2o_create_handler(path, sizeof(*handler));
    handler->super.on_req = on_request;
    handler->server = s;
    h2o_context_init(&s->ctx, s->loop, &s->globalconf);
    s->accept_ctx.ctx = &s->ctx;
    s->accept_ctx.hosts = s->globalconf.hosts;
    if (tls != NULL) {
        use_tls(s, tls);
    }
}

static void set_limits(struct qr_http_limits *out,
                       const struct qr_http_limits *in)
{
    static const struct qr_http_limits none = {0};

    if (in == NULL) {
        in = &none;
    }
    out->max_conns = in->max_conns ? in->max_conns : QR_HTTP_DEFAULT_MAX_CONNS;
    out->req_timeout_ms = in->req_timeout_ms ? in->req_timeout_ms
                                             : QR_HTTP_DEFAULT_REQ_TIMEOUT_MS;
    out->max_body_bytes = in->max_body_bytes ? in->max_body_bytes
                                             : QR_HTTP_DEFAULT_MAX_BODY_BYTES;
    out->close_grace_ms = in->close_grace_ms ? in->close_grace_ms
                                             : QR_HTTP_DEFAULT_CLOSE_GRACE_MS;
}

static void on_failed_listener_closed(uv_handle_t *handle)
{
    free(handle->data);
}

int qr_http_init(struct qr_http *h,
                 uv_loop_t *loop,
                 const char *listen_hostport,
                 SSL_CTX *tls,
                 const struct qr_http_limits *limits,
                 const struct qr_http_hooks *hooks,
                 char *errmsg)
{
    struct http_server *s;
    struct sockaddr_storage addr;
    int rv;

    h->server = NULL;
    errmsg[0] = '\0';
    if (hooks == NULL || hooks->serving == NULL || hooks->ready == NULL) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "http: hooks missing");
        return -EINVAL;
    }
    rv = resolve_listen(listen_hostport, &addr, errmsg);
    if (rv != 0) {
        return rv;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "http: out of memory");
        return -ENOMEM;
    }
    s->owner = h;
    s->loop = loop;
    s->hooks = *hooks;
    qr_rest_init(&s->rest, hooks->ops, hooks->tokens);
    set_limits(&s->limits, limits);

    rv = uv_tcp_init(loop, &s->listener);
    if (rv != 0) {
        goto err_after_alloc;
    }
    s->listener.data = s;
    rv = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
    if (rv != 0) {
        goto err_after_tcp_init;
    }
    rv = uv_listen((uv_stream_t *)&s->listener, LISTEN_BACKLOG, on_connection);
    if (rv != 0) {
        goto err_after_tcp_init;
    }

    /* Neither can fail. */
    uv_timer_init(loop, &s->grace_timer);
    s->grace_timer.data = s;
    uv_timer_init(loop, &s->sweep_timer);
    s->sweep_timer.data = s;
    uv_timer_start(&s->sweep_timer, on_sweep, SWEEP_INTERVAL_MS,
                   SWEEP_INTERVAL_MS);
    uv_idle_init(loop, &s->sentinel);
    s->sentinel.data = s;
    init_h2o(s, tls);
    s->state = SERVER_RUNNING;
    h->server = s;
    return 0;

err_after_tcp_init:
    snprintf(errmsg, QR_ERRMSG_BYTES, "http: listen on %s: %s", listen_hostport,
             uv_strerror(rv));
    uv_close((uv_handle_t *)&s->listener, on_failed_listener_closed);
    return rv;
err_after_alloc:
    snprintf(errmsg, QR_ERRMSG_BYTES, "http: %s", uv_strerror(rv));
    free(s);
    return rv;
}

int qr_http_port(const struct qr_http *h)
{
    struct sockaddr_storage addr;
    int len = sizeof(addr);
    int rv;

    if (h->server == NULL) {
        return -EBADF;
    }
    rv = uv_tcp_getsockname(&h->server->listener, (struct sockaddr *)&addr,
                            &len);
    if (rv != 0) {
        return rv;
    }
    if (addr.ss_family == AF_INET6) {
        return ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
    }
    return ntohs(((struct sockaddr_in *)&addr)->sin_port);
}

unsigned qr_http_n_conns(const struct qr_http *h)
{
    return h->server != NULL ? h->server->n_conns : 0;
}

int qr_http_set_tls(struct qr_http *h, SSL_CTX *tls)
{
    struct http_server *s = h->server;

    if (s == NULL || s->state != SERVER_RUNNING) {
        return -EBADF;
    }
    if (tls == NULL || s->accept_ctx.ssl_ctx == NULL) {
        return -EINVAL;
    }
    use_tls(s, tls);
    return 0;
}

bool qr_http_tls(const struct qr_http *h)
{
    return h->server != NULL && h->server->accept_ctx.ssl_ctx != NULL;
}
