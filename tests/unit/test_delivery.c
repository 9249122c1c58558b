/* Unit tests of node/delivery.c: a real uv loop and libcurl against a small
 * HTTP/1.1 server on 127.0.0.1 written here (one accept thread, one thread
 * per connection, blocking sockets). The server answers by path:
 *   /ok            200 "hello" and an X-Test header
 *   /echo...       200 whose body is the raw request as received
 *   /status/N      status N with Retry-After: 7
 *   /slow          waits for a permit from the test, then 200 "slow"
 *   /hang          never answers (until the client or the test goes away)
 *   /close         closes the connection without a word
 *   /garbage       a line that is not HTTP, then closes
 *   /big           200 with a 50 MB body, streamed until the client stops
 *   /redirect      302 back to itself
 *   /headers       200 with 100 headers of ~200 bytes each
 * and counts connections and concurrent requests, so tests can assert what
 * went over the wire and how much of it at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "deliver/delivery.h"
#include "lib/dest.h"
#include "lib/err.h"

#define MAX_CONNS 64
#define REQ_MAX_BYTES (256u * 1024u)
#define BIG_BODY_BYTES (50ull * 1024 * 1024)
#define N_RESULTS 32
#define WAIT_MS 10000

/* ------------------------------------------------------------------------ */
/* The test server. */

struct server {
    int lfd;
    uint16_t port;
    pthread_t accept_thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    unsigned permits; /* /slow requests allowed to answer; UINT_MAX: all */
    unsigned n_conns; /* accepted, in total */
    unsigned live_conns, max_live_conns;
    unsigned live_threads;
    unsigned active_slow, max_active_slow;
    unsigned n_requests;
    uint64_t big_sent;
    int fds[MAX_CONNS];
};

struct conn {
    struct server *srv;
    int fd;
};

static void send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0) {
            return;
        }
        p += n;
        len -= (size_t)n;
    }
}

static void respond(int fd, int status, const char *extra, const char *body)
{
    char head[512];
    size_t len = strlen(body);
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n%s\r\n", status,
                     len, extra);
    send_all(fd, head, (size_t)n);
    send_all(fd, body, len);
}

/* Reads one request into buf: head and body. Returns its length, 0 when the
 * peer closed, -1 on error. */
static ssize_t read_request(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    char *end = NULL;
    while (end == NULL) {
        if (len + 1 >= cap) {
            return -1;
        }
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n <= 0) {
            return n == 0 && len == 0 ? 0 : -1;
        }
        len += (size_t)n;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    size_t head_len = (size_t)(end - buf) + 4;
    size_t body_len = 0;
    for (char *line = strstr(buf, "\r\n") + 2; line < end;
         line = strstr(line, "\r\n") + 2) {
        if (strncasecmp(line, "Content-Length:", 15) == 0) {
            body_len = strtoul(line + 15, NULL, 10);
        }
    }
    while (len < head_len + body_len) {
        if (len + 1 >= cap) {
            return -1;
        }
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n <= 0) {
            return -1;
        }
        len += (size_t)n;
    }
    buf[len] = '\0';
    return (ssize_t)len;
}

static void serve_big(struct server *srv, int fd)
{
    char head[128];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\nContent-Length: %llu\r\n\r\n",
                     (unsigned long long)BIG_BODY_BYTES);
    send_all(fd, head, (size_t)n);
    static char chunk[64 * 1024];
    memset(chunk, 'b', sizeof chunk);
    uint64_t sent = 0;
    while (sent < BIG_BODY_BYTES) {
        ssize_t w = send(fd, chunk, sizeof chunk, MSG_NOSIGNAL);
        if (w <= 0) {
            break;
        }
        sent += (uint64_t)w;
    }
    pthread_mutex_lock(&srv->mu);
    srv->big_sent = sent;
    pthread_mutex_unlock(&srv->mu);
}

static void serve_slow(struct server *srv, int fd)
{
    pthread_mutex_lock(&srv->mu);
    srv->active_slow++;
    if (srv->active_slow > srv->max_active_slow) {
        srv->max_active_slow = srv->active_slow;
    }
    pthread_cond_broadcast(&srv->cv);
    while (!srv->stopping && srv->permits == 0) {
        pthread_cond_wait(&srv->cv, &srv->mu);
    }
    if (srv->permits != UINT32_MAX && srv->permits > 0) {
        srv->permits--;
    }
    srv->active_slow--;
    pthread_mutex_unlock(&srv->mu);
    respond(fd, 200, "", "slow");
}

/* Returns false when the connection must close. */
static bool serve_one(struct server *srv, int fd, char *req, size_t len)
{
    char path[2048] = "";
    sscanf(req, "%*s %2047s", path);
    pthread_mutex_lock(&srv->mu);
    srv->n_requests++;
    pthread_mutex_unlock(&srv->mu);
    if (strcmp(path, "/ok") == 0) {
        respond(fd, 200, "X-Test: yes\r\n", "hello");
    } else if (strncmp(path, "/echo", 5) == 0) {
        char head[128];
        int n = snprintf(head, sizeof head,
                         "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", len);
        send_all(fd, head, (size_t)n);
        send_all(fd, req, len);
    } else if (strncmp(path, "/status/", 8) == 0) {
        respond(fd, atoi(path + 8), "Retry-After: 7\r\n", "err");
    } else if (strcmp(path, "/slow") == 0) {
        serve_slow(srv, fd);
    } else if (strcmp(path, "/hang") == 0) {
        char c;
        while (recv(fd, &c, 1, 0) > 0) {
        }
        return false;
    } else if (strcmp(path, "/close") == 0) {
        return false;
    } else if (strcmp(path, "/garbage") == 0) {
        send_all(fd, "this is not http at all\r\n\r\n", 27);
        return false;
    } else if (strcmp(path, "/big") == 0) {
        serve_big(srv, fd);
        return false;
    } else if (strcmp(path, "/redirect") == 0) {
        respond(fd, 302, "Location: /redirect\r\n", "");
    } else if (strcmp(path, "/headers") == 0) {
        char *extra = malloc(100 * 220 + 1);
        size_t off = 0;
        for (int i = 0; i < 100; i++) {
            off +=
                (size_t)sprintf(extra + off, "X-Filler-%03d: %0200d\r\n", i, 0);
        }
        char head[64];
        int n = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\n");
        send_all(fd, head, (size_t)n);
        send_all(fd, extra, off);
        send_all(fd, "Content-Length: 2\r\n\r\nok", 23);
        free(extra);
    } else {
        respond(fd, 404, "", "no such path");
    }
    return true;
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    struct server *srv = c->srv;
    char *buf = malloc(REQ_MAX_BYTES);
    for (;;) {
        ssize_t len = read_request(c->fd, buf, REQ_MAX_BYTES);
        if (len <= 0 || !serve_one(srv, c->fd, buf, (size_t)len)) {
            break;
        }
    }
    free(buf);
    pthread_mutex_lock(&srv->mu);
    for (int i = 0; i < MAX_CONNS; i++) {
        if (srv->fds[i] == c->fd) {
            srv->fds[i] = -1;
        }
    }
    close(c->fd);
    srv->live_conns--;
    srv->live_threads--;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
    free(c);
    return NULL;
}

static void *accept_main(void *arg)
{
    struct server *srv = arg;
    for (;;) {
        int fd = accept(srv->lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR) {
                continue;
            }
            return NULL;
        }
        struct conn *c = malloc(sizeof *c);
        c->srv = srv;
        c->fd = fd;
        pthread_mutex_lock(&srv->mu);
        srv->n_conns++;
        srv->live_conns++;
        if (srv->live_conns > srv->max_live_conns) {
            srv->max_live_conns = srv->live_conns;
        }
        srv->live_threads++;
        for (int i = 0; i < MAX_CONNS; i++) {
            if (srv->fds[i] == -1) {
                srv->fds[i] = fd;
                break;
            }
        }
        pthread_mutex_unlock(&srv->mu);
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, conn_main, c), 0);
        pthread_detach(t);
    }
}

static void server_start(struct server *srv)
{
    memset(srv, 0, sizeof *srv);
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->cv, NULL);
    for (int i = 0; i < MAX_CONNS; i++) {
        srv->fds[i] = -1;
    }
    srv->permits = UINT32_MAX;
    srv->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(srv->lfd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(srv->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(srv->lfd, 128), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(srv->lfd, (struct sockaddr *)&sa, &sl), 0);
    srv->port = ntohs(sa.sin_port);
    assert_int_equal(
        pthread_create(&srv->accept_thread, NULL, accept_main, srv), 0);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits (with a deadline) until the server has no connection left. */
static void server_wait_idle(struct server *srv)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&srv->mu);
    while (srv->live_conns > 0) {
        if (pthread_cond_timedwait(&srv->cv, &srv->mu, &deadline) ==
            ETIMEDOUT) {
            break;
        }
    }
    unsigned left = srv->live_conns;
    pthread_mutex_unlock(&srv->mu);
    assert_int_equal(left, 0);
}

static uint64_t server_big_sent(struct server *srv)
{
    pthread_mutex_lock(&srv->mu);
    uint64_t v = srv->big_sent;
    pthread_mutex_unlock(&srv->mu);
    return v;
}

static void server_stop(struct server *srv)
{
    shutdown(srv->lfd, SHUT_RDWR);
    pthread_join(srv->accept_thread, NULL);
    close(srv->lfd);
    pthread_mutex_lock(&srv->mu);
    srv->stopping = true;
    for (int i = 0; i < MAX_CONNS; i++) {
        if (srv->fds[i] != -1) {
            shutdown(srv->fds[i], SHUT_RDWR);
        }
    }
    pthread_cond_broadcast(&srv->cv);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    while (srv->live_threads > 0) {
        if (pthread_cond_timedwait(&srv->cv, &srv->mu, &deadline) ==
            ETIMEDOUT) {
            break;
        }
    }
    unsigned left = srv->live_threads;
    pthread_mutex_unlock(&srv->mu);
    assert_int_equal(left, 0);
    pthread_cond_destroy(&srv->cv);
    pthread_mutex_destroy(&srv->mu);
}

/* /slow requests wait until server_permit lets them answer. */
static void server_block(struct server *srv)
{
    pthread_mutex_lock(&srv->mu);
    srv->permits = 0;
    pthread_mutex_unlock(&srv->mu);
}

/* Lets n more /slow requests answer; UINT32_MAX: all from now on. */
static void server_permit(struct server *srv, unsigned n)
{
    pthread_mutex_lock(&srv->mu);
    srv->permits = n == UINT32_MAX ? n : srv->permits + n;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

static unsigned server_get(struct server *srv, const unsigned *field)
{
    pthread_mutex_lock(&srv->mu);
    unsigned v = *field;
    pthread_mutex_unlock(&srv->mu);
    return v;
}

/* ------------------------------------------------------------------------ */
/* The client side: a loop, an engine, recorded results. */

struct result {
    unsigned calls;
    enum qr_delivery_transport transport;
    char error[QR_DELIVERY_ERROR_BYTES];
    long status;
    char *body; /* NUL-terminated copy */
    size_t body_len;
    bool body_truncated;
    char headers[32768]; /* "name: value\n" lines */
    size_t n_headers;
    bool headers_truncated;
    uint64_t elapsed_ms;
    /* what the callback does on top of recording */
    struct env *env;
    bool send_from_cb;
    int send_from_cb_rv;
};

struct env {
    uv_loop_t loop;
    uv_timer_t tick;
    struct qr_delivery d;
    struct server srv;
    struct result res[N_RESULTS];
    unsigned n_done;
    bool closed;
};

static void on_response(void *data, const struct qr_delivery_response *resp)
{
    struct result *r = data;
    r->calls++;
    r->env->n_done++;
    r->transport = resp->transport;
    snprintf(r->error, sizeof r->error, "%s", resp->error);
    r->status = resp->status;
    free(r->body);
    r->body = malloc(resp->body_len + 1);
    assert_non_null(r->body);
    if (resp->body_len > 0) {
        memcpy(r->body, resp->body, resp->body_len);
    }
    r->body[resp->body_len] = '\0';
    r->body_len = resp->body_len;
    r->body_truncated = resp->body_truncated;
    size_t off = 0;
    r->headers[0] = '\0';
    for (size_t i = 0; i < resp->n_headers; i++) {
        off += (size_t)snprintf(r->headers + off, sizeof r->headers - off,
                                "%s: %s\n", resp->headers[i].name,
                                resp->headers[i].value);
        if (off >= sizeof r->headers) {
            off = sizeof r->headers - 1;
        }
    }
    r->n_headers = resp->n_headers;
    r->headers_truncated = resp->headers_truncated;
    r->elapsed_ms = resp->elapsed_ms;
    if (r->send_from_cb) {
        struct qr_delivery_request req = {.url = "http://127.0.0.1:1/",
                                          .method = "GET"};
        r->send_from_cb_rv =
            qr_delivery_send(&r->env->d, &req, on_response, r, NULL);
    }
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

static struct env *env_new(const struct qr_delivery_limits *limits)
{
    struct env *e = calloc(1, sizeof *e);
    assert_non_null(e);
    for (int i = 0; i < N_RESULTS; i++) {
        e->res[i].env = e;
    }
    assert_int_equal(uv_loop_init(&e->loop), 0);
    assert_int_equal(uv_timer_init(&e->loop, &e->tick), 0);
    server_start(&e->srv);
    struct qr_delivery_limits l;
    qr_delivery_limits_default(&l);
    l.max_response_body_bytes = 64 * 1024; /* room for echoed requests */
    char errmsg[QR_ERRMSG_BYTES] = "";
    int rv =
        qr_delivery_init(&e->d, &e->loop, limits != NULL ? limits : &l, errmsg);
    if (rv != 0) {
        fail_msg("qr_delivery_init: %s", errmsg);
    }
    return e;
}

typedef bool (*pred_fn)(struct env *e, const void *arg);

/* Runs the loop until pred holds; fails the test after WAIT_MS. */
static void run_until(struct env *e, pred_fn pred, const void *arg)
{
    uv_timer_start(&e->tick, on_tick, 5, 5);
    uint64_t deadline = now_ms() + WAIT_MS;
    while (!pred(e, arg) && now_ms() < deadline) {
        uv_run(&e->loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&e->tick);
    assert_true(pred(e, arg));
}

static bool done_count(struct env *e, const void *arg)
{
    return e->n_done >= *(const unsigned *)arg;
}

static void wait_done(struct env *e, unsigned n)
{
    run_until(e, done_count, &n);
}

struct field_at_least {
    const unsigned *field;
    unsigned value;
};

static bool server_field_at_least(struct env *e, const void *arg)
{
    const struct field_at_least *f = arg;
    return server_get(&e->srv, f->field) >= f->value;
}

static void wait_server(struct env *e, const unsigned *field, unsigned value)
{
    struct field_at_least f = {field, value};
    run_until(e, server_field_at_least, &f);
}

static void on_engine_closed(struct qr_delivery *d)
{
    struct env *e = (struct env *)((char *)d - offsetof(struct env, d));
    e->closed = true;
}

static bool is_closed(struct env *e, const void *arg)
{
    (void)arg;
    return e->closed;
}

static void close_engine(struct env *e)
{
    qr_delivery_close(&e->d, on_engine_closed);
    run_until(e, is_closed, NULL);
}

static void env_free(struct env *e)
{
    if (!e->closed) {
        close_engine(e);
    }
    server_stop(&e->srv);
    uv_close((uv_handle_t *)&e->tick, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    for (int i = 0; i < N_RESULTS; i++) {
        free(e->res[i].body);
    }
    free(e);
}

static void url_of(struct env *e, const char *path, char *out, size_t size)
{
    snprintf(out, size, "http://127.0.0.1:%u%s", e->srv.port, path);
}

/* Sends method path (on e's server) with body; cb records into res[i]. */
static uint64_t send_req(struct env *e,
                         int i,
                         const char *method,
                         const char *path,
                         const char *body,
                         uint64_t timeout_ms)
{
    char url[2048];
    url_of(e, path, url, sizeof url);
    struct qr_delivery_request req = {
        .url = url,
        .method = method,
        .body = (const uint8_t *)body,
        .body_len = body != NULL ? strlen(body) : 0,
        .timeout_ms = timeout_ms,
    };
    uint64_t ticket = 0;
    int rv = qr_delivery_send(&e->d, &req, on_response, &e->res[i], &ticket);
    if (rv != 0) {
        fail_msg("send %s: %s", path, e->d.errmsg);
    }
    return ticket;
}

/* ------------------------------------------------------------------------ */
/* Responses. */

static void test_ok(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    send_req(e, 0, "GET", "/ok", NULL, 0);
    assert_int_equal(qr_delivery_inflight(&e->d), 1);
    wait_done(e, 1);
    struct result *r = &e->res[0];
    assert_int_equal(r->calls, 1);
    assert_int_equal(r->transport, QR_DELIVERY_OK);
    assert_string_equal(r->error, "");
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "hello");
    assert_false(r->body_truncated);
    assert_non_null(strstr(r->headers, "X-Test: yes\n"));
    assert_non_null(strstr(r->headers, "Content-Length: 5\n"));
    assert_int_equal(qr_delivery_inflight(&e->d), 0);
    assert_int_equal(qr_delivery_queued(&e->d), 0);
    env_free(e);
}

static void test_status_and_retry_after(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    send_req(e, 0, "POST", "/status/500", "x", 0);
    send_req(e, 1, "POST", "/status/429", "x", 0);
    send_req(e, 2, "POST", "/status/489", "x", 0);
    wait_done(e, 3);
    assert_int_equal(e->res[0].transport, QR_DELIVERY_OK);
    assert_int_equal(e->res[0].status, 500);
    assert_string_equal(e->res[0].body, "err");
    assert_int_equal(e->res[1].status, 429);
    assert_non_null(strstr(e->res[1].headers, "Retry-After: 7\n"));
    assert_int_equal(e->res[2].status, 489);
    env_free(e);
}

static void test_keepalive_reuses_connection(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    for (unsigned i = 0; i < 3; i++) {
        send_req(e, (int)i, "GET", "/ok", NULL, 0);
        wait_done(e, i + 1);
        assert_int_equal(e->res[i].status, 200);
    }
    assert_int_equal(server_get(&e->srv, &e->srv.n_conns), 1);
    env_free(e);
}

static void test_redirect_not_followed(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    send_req(e, 0, "GET", "/redirect", NULL, 0);
    wait_done(e, 1);
    assert_int_equal(e->res[0].transport, QR_DELIVERY_OK);
    assert_int_equal(e->res[0].status, 302);
    assert_non_null(strstr(e->res[0].headers, "Location: /redirect\n"));
    assert_int_equal(server_get(&e->srv, &e->srv.n_requests), 1);
    env_free(e);
}

static void test_redirect_loop_when_following(void **state)
{
    (void)state;
    struct qr_delivery_limits l;
    qr_delivery_limits_default(&l);
    l.max_redirects = 3;
    struct env *e = env_new(&l);
    send_req(e, 0, "GET", "/redirect", NULL, 0);
    wait_done(e, 1);
    assert_int_equal(e->res[0].transport, QR_DELIVERY_TOO_MANY_REDIRECTS);
    assert_int_equal(server_get(&e->srv, &e->srv.n_requests), 4);
    env_free(e);
}

static void test_header_cap(void **state)
{
    (void)state;
    struct env *e = env_new(NULL); /* 16 KiB of headers */
    send_req(e, 0, "GET", "/headers", NULL, 0);
    wait_done(e, 1);
    struct result *r = &e->res[0];
    assert_int_equal(r->transport, QR_DELIVERY_OK);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "ok");
    assert_true(r->headers_truncated);
    /* Each filler counts 12 + 1 + 200 + 1 bytes: 76 fit in 16 KiB. The
     * ones that do not fit are dropped; the short one after them is kept. */
    assert_int_equal(r->n_headers, 77);
    assert_non_null(strstr(r->headers, "X-Filler-075: 000"));
    assert_null(strstr(r->headers, "X-Filler-076"));
    assert_non_null(strstr(r->headers, "\nContent-Length: 2\n"));
    env_free(e);
}

/* ------------------------------------------------------------------------ */
/* What goes over the wire. */

static const char *echoed_body(const struct result *r)
{
    const char *p = strstr(r->body, "\r\n\r\n");
    assert_non_null(p);
    return p + 4;
}

static void test_url_and_headers_exact(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    const char *path = "/echo//a/./b/../%2Fc%41?q=a%20b&r=/x//y&empty=";
    char url[256];
    url_of(e, path, url, sizeof url);
    struct qr_delivery_header hdrs[] = {
        {"X-One", "1"},
        {"Content-Type", "text/plain"},
        {"X-Empty", ""},
        {"User-Agent", "Upstash-QStash"},
        {"Content-Length", "999"}, /* dropped: the engine frames */
    };
    struct qr_delivery_request req = {
        .url = url,
        .method = "post",
        .headers = hdrs,
        .n_headers = 5,
        .body = (const uint8_t *)"payload",
        .body_len = 7,
    };
    assert_int_equal(
        qr_delivery_send(&e->d, &req, on_response, &e->res[0], NULL), 0);
    wait_done(e, 1);
    const char *got = e->res[0].body;
    char line[256];
    snprintf(line, sizeof line, "POST %s HTTP/1.1\r\n", path);
    assert_true(strncmp(got, line, strlen(line)) == 0);
    assert_non_null(strstr(got, "\r\nX-One: 1\r\n"));
    assert_non_null(strstr(got, "\r\nContent-Type: text/plain\r\n"));
    assert_non_null(strstr(got, "\r\nX-Empty:\r\n"));
    assert_non_null(strstr(got, "\r\nUser-Agent: Upstash-QStash\r\n"));
    assert_non_null(strstr(got, "\r\nContent-Length: 7\r\n"));
    assert_null(strstr(got, "999"));
    assert_null(strstr(got, "Expect:"));
    assert_null(strstr(got, "Accept:"));
    assert_string_equal(echoed_body(&e->res[0]), "payload");
    env_free(e);
}

static void test_get_and_delete_with_body(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    send_req(e, 0, "GET", "/echo", "abc", 0);
    send_req(e, 1, "DELETE", "/echo", "defg", 0);
    send_req(e, 2, "GET", "/echo", NULL, 0);
    send_req(e, 3, "PUT", "/echo", NULL, 0);
    wait_done(e, 4);
    const char *got = e->res[0].body;
    assert_true(strncmp(got, "GET /echo HTTP/1.1\r\n", 20) == 0);
    assert_non_null(strstr(got, "\r\nContent-Length: 3\r\n"));
    assert_string_equal(echoed_body(&e->res[0]), "abc");
    got = e->res[1].body;
    assert_true(strncmp(got, "DELETE /echo HTTP/1.1\r\n", 23) == 0);
    assert_string_equal(echoed_body(&e->res[1]), "defg");
    got = e->res[2].body;
    assert_true(strncmp(got, "GET /echo HTTP/1.1\r\n", 20) == 0);
    assert_null(strstr(got, "Content-Length"));
    got = e->res[3].body;
    assert_true(strncmp(got, "PUT /echo HTTP/1.1\r\n", 20) == 0);
    assert_non_null(strstr(got, "\r\nContent-Length: 0\r\n"));
    env_free(e);
}

static void test_large_post_no_expect_no_content_type(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    char *body = malloc(20001);
    memset(body, 'p', 20000);
    body[20000] = '\0';
    send_req(e, 0, "POST", "/echo", body, 0);
    wait_done(e, 1);
    const char *got = e->res[0].body;
    assert_null(strstr(got, "Expect"));
    assert_null(strstr(got, "Content-Type"));
    assert_non_null(strstr(got, "\r\nContent-Length: 20000\r\n"));
    assert_string_equal(echoed_body(&e->res[0]), body);
    free(body);
    env_free(e);
}

/* ------------------------------------------------------------------------ */
/* Destinations that misbehave. */

static void test_timeout(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    send_req(e, 0, "GET", "/ok", NULL, 0);
    wait_done(e, 1);
    /* on the kept-alive connection: the request went out, no answer */
    send_req(e, 1, "POST", "/hang", "x", 300);
    wait_done(e, 2);
    struct result *r = &e->res[1];
    assert_int_equal(r->transport, QR_DELIVERY_TIMEOUT);
    assert_string_not_equal(r->error, "");
    assert_true(r->elapsed_ms >= 250 && r->elapsed_ms < 5000);
    assert_int_equal(r->status, 0);
    assert_int_equal(server_get(&e->srv, &e->srv.n_conns), 1);
    env_free(e);
}

static void test_closed_without_answer(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    send_req(e, 0, "GET", "/close", NULL, 0);
    send_req(e, 1, "GET", "/garbage", NULL, 0);
    wait_done(e, 2);
    assert_int_equal(e->res[0].transport, QR_DELIVERY_PROTOCOL);
    assert_int_equal(e->res[1].transport, QR_DELIVERY_PROTOCOL);
    assert_string_not_equal(e->res[0].error, "");
    assert_string_not_equal(e->res[1].error, "");
    env_free(e);
}

static void test_closed_port_and_unknown_host(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/", ntohs(sa.sin_port));
    struct qr_delivery_request req = {.url = url, .method = "GET"};
    assert_int_equal(
        qr_delivery_send(&e->d, &req, on_response, &e->res[0], NULL), 0);
    req.url = "http://nonexistent.invalid/x";
    assert_int_equal(
        qr_delivery_send(&e->d, &req, on_response, &e->res[1], NULL), 0);
    wait_done(e, 2);
    assert_int_equal(e->res[0].transport, QR_DELIVERY_CONNECT);
    assert_int_equal(e->res[1].transport, QR_DELIVERY_DNS);
    assert_int_equal(e->res[0].status, 0);
    env_free(e);
}

/* The SSRF guard: the policy is applied to the address a connection is
 * made to, whatever spelled it (a literal, a name that resolves to it). */
static void test_destination_policy(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    struct qr_dest_policy policy = {0}; /* public addresses only */
    qr_delivery_set_destinations(&e->d, &policy);
    static const char *const hosts[] = {"127.0.0.1", "localhost",
                                        "[::ffff:127.0.0.1]", "2130706433"};
    char url[4][96];
    for (int i = 0; i < 4; i++) {
        snprintf(url[i], sizeof url[i], "http://%s:%u/ok", hosts[i],
                 e->srv.port);
        struct qr_delivery_request req = {.url = url[i], .method = "GET"};
        assert_int_equal(
            qr_delivery_send(&e->d, &req, on_response, &e->res[i], NULL), 0);
    }
    wait_done(e, 4);
    for (int i = 0; i < 4; i++) {
        if (e->res[i].transport != QR_DELIVERY_REFUSED) {
            fail_msg("%s: transport %s (%s)", url[i],
                     qr_delivery_transport_name(e->res[i].transport),
                     e->res[i].error);
        }
        assert_non_null(strstr(e->res[i].error, "is loopback"));
        assert_non_null(strstr(e->res[i].error, "--allow-destinations"));
    }
    assert_non_null(strstr(e->res[1].error, "localhost resolves to"));
    assert_int_equal(server_get(&e->srv, &e->srv.n_conns), 0);

    /* A network opens what it contains. */
    char err[256];
    assert_int_equal(
        qr_dest_parse_nets("127.0.0.1/32", &policy, err, sizeof err), 0);
    send_req(e, 4, "GET", "/ok", NULL, 0);
    wait_done(e, 5);
    assert_int_equal(e->res[4].transport, QR_DELIVERY_OK);
    assert_int_equal(e->res[4].status, 200);
    /* A name with several addresses (localhost: 127.0.0.1, and ::1 where
     * /etc/hosts has it) is served by the allowed one. */
    struct qr_delivery_request req = {.url = url[1], .method = "GET"};
    assert_int_equal(
        qr_delivery_send(&e->d, &req, on_response, &e->res[5], NULL), 0);
    wait_done(e, 6);
    assert_int_equal(e->res[5].transport, QR_DELIVERY_OK);
    assert_int_equal(e->res[5].status, 200);
    /* one connection per host name: 127.0.0.1's, then localhost's */
    assert_int_equal(server_get(&e->srv, &e->srv.n_conns), 2);
    env_free(e);
}

static void test_check_url(void **state)
{
    (void)state;
    struct qr_dest_policy p = {.allow_loopback = true};
    char err[256] = "";
    static const char *const refused[] = {
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/",
        "http://0xa9.0xfe.0xa9.0xfe/",
        "https://10.0.0.1:8443/x",
        "http://[fd00::1]/",
        "http://[::ffff:192.168.0.1]/",
        "http://[fe80::1%25eth0]/",
        "http://224.0.0.1/",
        "http://0.0.0.0:8080/",
        "http://0/",
        "http://u:p@10.1.1.1/",
        "http://%31%30.0.0.1/",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        err[0] = '\0';
        if (qr_delivery_check_url(&p, "url", refused[i], err, sizeof err) !=
            QR_EBADREQ) {
            fail_msg("%s was not refused", refused[i]);
        }
        assert_non_null(strstr(err, "url '"));
        assert_non_null(strstr(err, "--allow-destinations"));
    }
    static const char *const taken[] = {
        "http://127.0.0.1:8080/", /* loopback is open here */
        "http://[::1]/",
        "http://2130706433/",
        "http://8.8.8.8/",
        "https://example.com/",
        "http://metadata.internal/", /* a name: checked when it connects */
        "not a url",                 /* other checks refuse it */
    };
    for (size_t i = 0; i < sizeof taken / sizeof taken[0]; i++) {
        if (qr_delivery_check_url(&p, "url", taken[i], err, sizeof err) != 0) {
            fail_msg("%s was refused: %s", taken[i], err);
        }
    }
    p.allow_loopback = false;
    assert_int_equal(
        qr_delivery_check_url(&p, "callback", "http://[::ffff:127.0.0.1]:9/",
                              err, sizeof err),
        QR_EBADREQ);
    assert_non_null(strstr(err, "127.0.0.1 is loopback"));
    assert_int_equal(
        qr_delivery_check_url(NULL, "url", "http://10.0.0.1/", err, sizeof err),
        0);
}

static long max_rss_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static void test_enormous_body_cut_short(void **state)
{
    (void)state;
    struct qr_delivery_limits l;
    qr_delivery_limits_default(&l); /* 4 KiB kept, 1 MiB drained */
    struct env *e = env_new(&l);
    send_req(e, 0, "GET", "/big", NULL, 0);
    wait_done(e, 1);
    struct result *r = &e->res[0];
    assert_int_equal(r->transport, QR_DELIVERY_OK);
    assert_int_equal(r->status, 200);
    assert_int_equal(r->body_len, 4096);
    assert_true(r->body_truncated);
    assert_int_equal(r->body[0], 'b');
    /* curl dropped the connection mid-body: the server's sends fail */
    server_wait_idle(&e->srv);
    assert_true(server_big_sent(&e->srv) < BIG_BODY_BYTES);
    env_free(e);
}

static void test_enormous_body_read_in_bounded_memory(void **state)
{
    (void)state;
    struct qr_delivery_limits l;
    qr_delivery_limits_default(&l);
    l.max_drain_bytes = SIZE_MAX; /* read it all, keep 4 KiB */
    struct env *e = env_new(&l);
    long before = max_rss_kib();
    send_req(e, 0, "GET", "/big", NULL, 0);
    wait_done(e, 1);
    struct result *r = &e->res[0];
    assert_int_equal(r->transport, QR_DELIVERY_OK);
    assert_int_equal(r->body_len, 4096);
    assert_true(r->body_truncated);
    server_wait_idle(&e->srv);
    assert_int_equal(server_big_sent(&e->srv), BIG_BODY_BYTES);
    long grown_kib = max_rss_kib() - before;
    assert_true(grown_kib < 16 * 1024);
    env_free(e);
}

/* ------------------------------------------------------------------------ */
/* Refused requests. */

static void test_bad_input_refused(void **state)
{
    (void)state;
    struct env *e = env_new(NULL);
    const char *bad_urls[] = {"not a url", "ftp://127.0.0.1/x", "http://",
                              "/relative", "file:///etc/passwd"};
    for (size_t i = 0; i < sizeof bad_urls / sizeof bad_urls[0]; i++) {
        struct qr_delivery_request req = {.url = bad_urls[i], .method = "GET"};
        assert_int_equal(
            qr_delivery_send(&e->d, &req, on_response, &e->res[1], NULL),
            QR_EBADREQ);
        assert_string_not_equal(e->d.errmsg, "");
    }
    char url[64];
    url_of(e, "/ok", url, sizeof url);
    const char *bad_methods[] = {"TRACE", "HEAD", "", "CONNECT"};
    for (size_t i = 0; i < sizeof bad_methods / sizeof bad_methods[0]; i++) {
        struct qr_delivery_request req = {.url = url, .method = bad_methods[i]};
        assert_int_equal(
            qr_delivery_send(&e->d, &req, on_response, &e->res[1], NULL),
            QR_EBADREQ);
    }
    struct qr_delivery_header bad_hdrs[][1] = {
        {{"X-Bad", "a\r\nInjected: yes"}},
        {{"X Bad", "a"}},
        {{"X-Bad:", "a"}},
        {{"", "a"}},
    };
    for (size_t i = 0; i < sizeof bad_hdrs / sizeof bad_hdrs[0]; i++) {
        struct qr_delivery_request req = {.url = url,
                                          .method = "GET",
                                          .headers = bad_hdrs[i],
                                          .n_headers = 1};
        assert_int_equal(
            qr_delivery_send(&e->d, &req, on_response, &e->res[1], NULL),
            QR_EBADREQ);
    }
    assert_int_equal(qr_delivery_inflight(&e->d), 0);
    assert_int_equal(qr_delivery_queued(&e->d), 0);
    /* A good request after them completes; none of the refused ones ever
     * calls back. */
    send_req(e, 0, "GET", "/ok", NULL, 0);
    wait_done(e, 1);
    assert_int_equal(e->res[0].status, 200);
    assert_int_equal(e->res[1].calls, 0);
    env_free(e);
}

static void test_bad_limits_refused(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct qr_delivery d;
    struct qr_delivery_limits l;
    qr_delivery_limits_default(&l);
    l.max_inflight = 0;
    char errmsg[QR_ERRMSG_BYTES] = "";
    assert_int_equal(qr_delivery_init(&d, &loop, &l, errmsg), QR_EBADREQ);
    assert_non_null(strstr(errmsg, "max_inflight"));
    qr_delivery_close(&d, NULL); /* nothing to close: does nothing */
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ------------------------------------------------------------------------ */
/* Concurrency caps and fairness. */

static void test_per_host_cap(void **state)
{
    (void)state;
    struct qr_delivery_limits l;
    qr_delivery_limits_default(&l);
    l.max_per_host = 2;
    struct env *e = env_new(&l);
    server_block(&e->srv);
    for (int i = 0; i < 8; i++) {
        send_req(e, i, "GET", "/slow", NULL, 0);
    }
    assert_int_equal(qr_delivery_inflight(&e->d), 2);
    assert_int_equal(qr_delivery_queued(&e->d), 6);
    /* The host's backlog, by any URL of the host (the path aside). */
    char url[128];
    url_of(e, "/other?q=1", url, sizeof url);
    assert_int_equal(qr_delivery_host_queued(&e->d, url), 6);
    assert_int_equal(
        qr_delivery_host_queued(&e->d, "http://127.0.0.2:1/elsewhere"), 0);
    assert_int_equal(qr_delivery_host_queued(&e->d, "not a url"), 0);
    assert_int_equal(qr_delivery_host_queued(&e->d, "ftp://127.0.0.1/"), 0);
    wait_server(e, &e->srv.active_slow, 2);
    server_permit(&e->srv, UINT32_MAX);
    wait_done(e, 8);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(e->res[i].calls, 1);
        assert_int_equal(e->res[i].status, 200);
    }
    assert_int_equal(server_get(&e->srv, &e->srv.max_active_slow), 2);
    assert_true(server_get(&e->srv, &e->srv.max_live_conns) <= 2);
    assert_int_equal(qr_delivery_host_queued(&e->d, url), 0);
    env_free(e);
}

static void test_other_host_not_starved(void **state)
{
    (void)state;
    struct qr_delivery_limits l;
    qr_delivery_limits_default(&l);
    l.max_inflight = 2;
    l.max_per_host = 2;
    struct env *e = env_new(&l);
    struct server b;
    server_start(&b);
    server_block(&e->srv);
    /* Host A fills both global slots and queues 8 more. */
    for (int i = 0; i < 10; i++) {
        send_req(e, i, "GET", "/slow", NULL, 0);
    }
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/ok", b.port);
    struct qr_delivery_request req = {.url = url, .method = "GET"};
    assert_int_equal(
        qr_delivery_send(&e->d, &req, on_response, &e->res[10], NULL), 0);
    assert_int_equal(qr_delivery_queued(&e->d), 9);
    wait_server(e, &e->srv.active_slow, 2);
    /* Two of A's requests may finish: B's turn comes before A's third
     * (round-robin), so three completions happen, B among them. Were B
     * starved, only two would. */
    server_permit(&e->srv, 2);
    wait_done(e, 3);
    assert_int_equal(e->res[10].calls, 1);
    assert_int_equal(e->res[10].status, 200);
    unsigned a_done = 0;
    for (int i = 0; i < 10; i++) {
        a_done += e->res[i].calls;
    }
    assert_int_equal(a_done, 2);
    server_permit(&e->srv, UINT32_MAX);
    wait_done(e, 11);
    env_free(e);
    server_stop(&b);
}

static bool gate_of(void *data)
{
    return *(const bool *)data;
}

/* A closed gate holds what waits (a node without a lease starts nothing)
 * while running transfers finish; resume starts what it held; cancelling
 * what waits leaves running ones alone. */
static void test_gate_holds_queued_and_resume_starts_them(void **state)
{
    (void)state;
    struct qr_delivery_limits l;
    qr_delivery_limits_default(&l);
    l.max_per_host = 2;
    struct env *e = env_new(&l);
    bool open = true;
    qr_delivery_set_gate(&e->d, gate_of, &open);
    server_block(&e->srv);
    for (int i = 0; i < 6; i++) {
        send_req(e, i, "GET", "/slow", NULL, 0);
    }
    assert_int_equal(qr_delivery_inflight(&e->d), 2);
    assert_int_equal(qr_delivery_queued(&e->d), 4);
    wait_server(e, &e->srv.active_slow, 2);

    open = false;
    send_req(e, 6, "GET", "/ok", NULL, 0); /* a sent one waits too */
    assert_int_equal(qr_delivery_queued(&e->d), 5);
    server_permit(&e->srv, 2);
    wait_done(e, 2);
    assert_int_equal(e->res[0].status, 200);
    assert_int_equal(e->res[1].status, 200);
    assert_int_equal(qr_delivery_inflight(&e->d), 0);
    assert_int_equal(qr_delivery_queued(&e->d), 5);
    assert_int_equal(server_get(&e->srv, &e->srv.n_requests), 2);

    open = true;
    qr_delivery_resume(&e->d);
    assert_int_equal(qr_delivery_inflight(&e->d), 2);
    assert_int_equal(qr_delivery_queued(&e->d), 3);
    wait_server(e, &e->srv.active_slow, 2);
    open = false;
    assert_int_equal(qr_delivery_cancel_queued(&e->d), 3);
    assert_int_equal(qr_delivery_queued(&e->d), 0);
    for (int i = 4; i < 7; i++) {
        assert_int_equal(e->res[i].calls, 1);
        assert_int_equal(e->res[i].transport, QR_DELIVERY_CANCELLED);
    }
    server_permit(&e->srv, UINT32_MAX);
    wait_done(e, 7);
    assert_int_equal(e->res[2].status, 200);
    assert_int_equal(e->res[3].status, 200);
    assert_int_equal(server_get(&e->srv, &e->srv.n_requests), 4);
    env_free(e);
}

/* ------------------------------------------------------------------------ */
/* Cancel and close. */

static void test_cancel(void **state)
{
    (void)state;
    struct qr_delivery_limits l;
    qr_delivery_limits_default(&l);
    l.max_per_host = 1;
    l.max_response_body_bytes = 64 * 1024;
    struct env *e = env_new(&l);
    server_block(&e->srv);
    uint64_t running = send_req(e, 0, "GET", "/slow", NULL, 0);
    uint64_t queued = send_req(e, 1, "GET", "/slow", NULL, 0);
    send_req(e, 2, "GET", "/ok", NULL, 0);
    wait_server(e, &e->srv.active_slow, 1);
    assert_int_equal(qr_delivery_cancel(&e->d, queued), 0);
    assert_int_equal(e->res[1].calls, 1);
    assert_int_equal(e->res[1].transport, QR_DELIVERY_CANCELLED);
    assert_int_equal(qr_delivery_cancel(&e->d, running), 0);
    assert_int_equal(e->res[0].calls, 1);
    assert_int_equal(e->res[0].transport, QR_DELIVERY_CANCELLED);
    assert_int_equal(qr_delivery_cancel(&e->d, running), QR_ENOTFOUND);
    assert_int_equal(qr_delivery_cancel(&e->d, 12345), QR_ENOTFOUND);
    /* the third one takes the freed slot and completes */
    wait_done(e, 3);
    assert_int_equal(e->res[2].status, 200);
    assert_int_equal(e->res[0].calls, 1);
    assert_int_equal(e->res[1].calls, 1);
    env_free(e);
}

static void test_close_cancels_everything_once(void **state)
{
    (void)state;
    struct qr_delivery_limits l;
    qr_delivery_limits_default(&l);
    l.max_per_host = 2;
    struct env *e = env_new(&l);
    for (int i = 0; i < 5; i++) {
        send_req(e, i, "POST", "/hang", "x", 0);
    }
    e->res[3].send_from_cb = true;
    wait_server(e, &e->srv.n_requests, 2);
    assert_int_equal(qr_delivery_inflight(&e->d), 2);
    assert_int_equal(qr_delivery_queued(&e->d), 3);
    qr_delivery_close(&e->d, on_engine_closed);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(e->res[i].calls, 1);
        assert_int_equal(e->res[i].transport, QR_DELIVERY_CANCELLED);
    }
    assert_int_equal(e->res[3].send_from_cb_rv, QR_ECANCELED);
    assert_false(e->closed);                    /* handles close on the loop */
    qr_delivery_close(&e->d, on_engine_closed); /* twice: nothing */
    run_until(e, is_closed, NULL);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(e->res[i].calls, 1);
    }
    env_free(e);
}

static void test_many_requests(void **state)
{
    (void)state;
    struct qr_delivery_limits l;
    qr_delivery_limits_default(&l);
    l.max_per_host = 4;
    l.max_inflight = 8;
    struct env *e = env_new(&l);
    for (int i = 0; i < N_RESULTS; i++) {
        send_req(e, i, i % 2 == 0 ? "GET" : "POST", "/ok", "b", 0);
    }
    wait_done(e, N_RESULTS);
    for (int i = 0; i < N_RESULTS; i++) {
        assert_int_equal(e->res[i].calls, 1);
        assert_int_equal(e->res[i].status, 200);
    }
    assert_true(server_get(&e->srv, &e->srv.n_conns) <= 4);
    assert_int_equal(qr_delivery_inflight(&e->d), 0);
    env_free(e);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (qr_delivery_global_init() != 0) {
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok),
        cmocka_unit_test(test_status_and_retry_after),
        cmocka_unit_test(test_keepalive_reuses_connection),
        cmocka_unit_test(test_redirect_not_followed),
        cmocka_unit_test(test_destination_policy),
        cmocka_unit_test(test_check_url),
        cmocka_unit_test(test_redirect_loop_when_following),
        cmocka_unit_test(test_header_cap),
        cmocka_unit_test(test_url_and_headers_exact),
        cmocka_unit_test(test_get_and_delete_with_body),
        cmocka_unit_test(test_large_post_no_expect_no_content_type),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_closed_without_answer),
        cmocka_unit_test(test_closed_port_and_unknown_host),
        cmocka_unit_test(test_enormous_body_cut_short),
        cmocka_unit_test(test_enormous_body_read_in_bounded_memory),
        cmocka_unit_test(test_bad_input_refused),
        cmocka_unit_test(test_bad_limits_refused),
        cmocka_unit_test(test_per_host_cap),
        cmocka_unit_test(test_other_host_not_starved),
        cmocka_unit_test(test_gate_holds_queued_and_resume_starts_them),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_close_cancels_everything_once),
        cmocka_unit_test(test_many_requests),
    };
    int rv = cmocka_run_group_tests(tests, NULL, NULL);
    qr_delivery_global_cleanup();
    return rv;
}
