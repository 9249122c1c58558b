/* Unit tests of node/peer.c: a real uv loop running the peer and, on the
 * same loop, fake RPC servers on 127.0.0.1 written here. A server records
 * every request (id, token, and the GetRequest message id the tests use as
 * a label) and either answers at once (the label comes back as
 * PublishResponse.message_id) or holds the requests until the test answers
 * them, in any order, sends raw bytes, or drops its connections. Every test
 * checks that each callback fired at most once and every request carried
 * the token. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "frame.h"
#include "lib/clock.h"
#include "lib/err.h"
#include "lib/peer.h"

#define TOKEN "peer-test-token"
#define WAIT_MS 10000
#define MAX_REQS 256
#define MAX_CALLS 16
#define LABEL_BYTES 32

/* Runs the loop until cond holds, failing the test after WAIT_MS. The guard
 * timer of the fixture makes each turn return within a few ms. */
#define WAIT_UNTIL(f, cond)                                 \
    do {                                                    \
        uint64_t deadline_ = qr_clock_mono_ms() + WAIT_MS;  \
        while (!(cond) && qr_clock_mono_ms() < deadline_) { \
            uv_run(&(f)->loop, UV_RUN_ONCE);                \
        }                                                   \
        assert_true(cond);                                  \
    } while (0)

/* ------------------------------------------------------------------------ */
/* The fake server. */

struct server;

struct srv_conn {
    uv_tcp_t tcp;
    struct server *srv;
    struct srv_conn *next;
    uint8_t *buf;
    size_t len, cap;
    bool closing;
};

struct srv_req {
    uint64_t id;
    char label[LABEL_BYTES];
    struct srv_conn *conn; /* NULL once that connection closed */
};

struct server {
    uv_tcp_t listener;
    char addr[32];
    bool hold; /* record requests, answer only when the test says so */
    unsigned n_accepts;
    unsigned n_bad_tokens;
    unsigned n_undecodable;
    struct srv_req reqs[MAX_REQS];
    size_t n_reqs;
    struct srv_conn *conns;
    bool started;
};

struct srv_write {
    uv_write_t req;
    uint8_t data[];
};

static void on_srv_write(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

static void srv_send_raw(struct srv_conn *c, const void *bytes, size_t len)
{
    assert_non_null(c);
    struct srv_write *w = malloc(sizeof *w + len);
    assert_non_null(w);
    memcpy(w->data, bytes, len);
    uv_buf_t buf = uv_buf_init((char *)w->data, (unsigned)len);
    assert_int_equal(
        uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_srv_write), 0);
}

/* Sends one framed Response; error may be NULL. */
static void srv_send_response(struct srv_conn *c,
                              uint64_t id,
                              Qraft__Status status,
                              const char *label,
                              const char *error)
{
    Qraft__PublishResponse pr = QRAFT__PUBLISH_RESPONSE__INIT;
    Qraft__Response resp = QRAFT__RESPONSE__INIT;
    resp.id = id;
    resp.status = status;
    if (error != NULL) {
        resp.error = (char *)error;
    }
    if (label != NULL) {
        pr.message_id = (char *)label;
        resp.body_case = QRAFT__RESPONSE__BODY_PUBLISH;
        resp.publish = &pr;
    }
    size_t len = qraft__response__get_packed_size(&resp);
    uint8_t *frame = malloc(QR_FRAME_HEADER_BYTES + len);
    assert_non_null(frame);
    qr_frame_put_header(frame, (uint32_t)len);
    qraft__response__pack(&resp, frame + QR_FRAME_HEADER_BYTES);
    srv_send_raw(c, frame, QR_FRAME_HEADER_BYTES + len);
    free(frame);
}

/* Answers recorded request i with its label. */
static void srv_answer(struct server *srv, size_t i)
{
    assert_true(i < srv->n_reqs);
    srv_send_response(srv->reqs[i].conn, srv->reqs[i].id, QRAFT__STATUS__OK,
                      srv->reqs[i].label, NULL);
}

static void srv_handle_frame(struct srv_conn *c,
                             const uint8_t *payload,
                             size_t len)
{
    struct server *srv = c->srv;
    Qraft__Request *req = qraft__request__unpack(NULL, len, payload);
    if (req == NULL) {
        srv->n_undecodable++;
        return;
    }
    if (strcmp(req->token, TOKEN) != 0) {
        srv->n_bad_tokens++;
    }
    assert_true(srv->n_reqs < MAX_REQS);
    struct srv_req *r = &srv->reqs[srv->n_reqs++];
    r->id = req->id;
    r->conn = c;
    snprintf(
        r->label, sizeof r->label, "%s",
        req->body_case == QRAFT__REQUEST__BODY_GET ? req->get->message_id : "");
    qraft__request__free_unpacked(req, NULL);
    if (!srv->hold) {
        srv_answer(srv, srv->n_reqs - 1);
    }
}

static void on_srv_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct srv_conn *c = h->data;
    (void)suggested;
    if (c->cap - c->len < 65536) {
        c->cap += 65536;
        c->buf = realloc(c->buf, c->cap);
        assert_non_null(c->buf);
    }
    buf->base = (char *)c->buf + c->len;
    buf->len = c->cap - c->len;
}

static void on_srv_conn_close(uv_handle_t *h)
{
    struct srv_conn *c = h->data;
    struct server *srv = c->srv;
    for (struct srv_conn **pp = &srv->conns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    for (size_t i = 0; i < srv->n_reqs; i++) {
        if (srv->reqs[i].conn == c) {
            srv->reqs[i].conn = NULL;
        }
    }
    free(c->buf);
    free(c);
}

static void srv_conn_close(struct srv_conn *c)
{
    if (!c->closing) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, on_srv_conn_close);
    }
}

static void on_srv_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct srv_conn *c = s->data;
    (void)buf;
    if (nread < 0) {
        srv_conn_close(c);
        return;
    }
    c->len += (size_t)nread;
    size_t off = 0;
    for (;;) {
        const uint8_t *payload;
        size_t plen, consumed;
        enum qr_frame_status st = qr_frame_parse(c->buf + off, c->len - off,
                                                 QR_FRAME_DEFAULT_MAX_BYTES,
                                                 &payload, &plen, &consumed);
        assert_int_not_equal(st, QR_FRAME_TOO_LARGE);
        if (st == QR_FRAME_NEED_MORE) {
            break;
        }
        srv_handle_frame(c, payload, plen);
        off += consumed;
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
}

static void on_srv_connection(uv_stream_t *l, int status)
{
    struct server *srv = l->data;
    assert_int_equal(status, 0);
    struct srv_conn *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->srv = srv;
    c->tcp.data = c;
    uv_tcp_init(l->loop, &c->tcp);
    c->next = srv->conns;
    srv->conns = c;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&c->tcp), 0);
    srv->n_accepts++;
    uv_read_start((uv_stream_t *)&c->tcp, on_srv_alloc, on_srv_read);
}

/* Listens on 127.0.0.1:port (0: any free port). */
static void srv_start(struct server *srv, uv_loop_t *loop, int port)
{
    memset(srv, 0, sizeof *srv);
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", port, &addr);
    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    assert_int_equal(
        uv_tcp_bind(&srv->listener, (const struct sockaddr *)&addr, 0), 0);
    assert_int_equal(
        uv_listen((uv_stream_t *)&srv->listener, 16, on_srv_connection), 0);
    struct sockaddr_in bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &len);
    snprintf(srv->addr, sizeof srv->addr, "127.0.0.1:%d",
             ntohs(bound.sin_port));
    srv->started = true;
}

/* Closes every accepted connection (the listener stays). */
static void srv_drop(struct server *srv)
{
    for (struct srv_conn *c = srv->conns; c != NULL; c = c->next) {
        srv_conn_close(c);
    }
}

static void srv_stop(struct server *srv)
{
    if (!srv->started) {
        return;
    }
    srv_drop(srv);
    if (!uv_is_closing((uv_handle_t *)&srv->listener)) {
        uv_close((uv_handle_t *)&srv->listener, NULL);
    }
}

/* ------------------------------------------------------------------------ */
/* Fixture. */

struct result {
    unsigned fired;
    int status;
    bool has_resp;
    uint64_t resp_id;
    int resp_status;
    char label[LABEL_BYTES];
    size_t error_bytes;
    uint64_t fired_at_ms;
};

struct fx {
    uv_loop_t loop;
    uv_timer_t guard;
    struct server a, b, c; /* c: started by the test that needs it */
    struct qr_peer peer;
    bool peer_open;
    unsigned n_peer_closed;
    unsigned n_fired_at_close; /* callbacks fired when the close cb ran */
    struct result res[MAX_CALLS];
    /* What the reentrancy test's first callback does. */
    int (*reenter)(struct fx *f);
    int reenter_rv;
};

static struct fx *the_fx; /* for callbacks that need the fixture */

static unsigned n_fired(const struct fx *f)
{
    unsigned n = 0;
    for (size_t i = 0; i < MAX_CALLS; i++) {
        n += f->res[i].fired;
    }
    return n;
}

static void on_result(void *data, int status, const Qraft__Response *resp)
{
    struct result *r = data;
    r->fired++;
    r->status = status;
    r->fired_at_ms = qr_clock_mono_ms();
    r->has_resp = resp != NULL;
    if (status == 0) {
        assert_non_null(resp);
    } else {
        assert_null(resp);
    }
    if (resp != NULL) {
        r->resp_id = resp->id;
        r->resp_status = (int)resp->status;
        r->error_bytes = strlen(resp->error);
        snprintf(r->label, sizeof r->label, "%s",
                 resp->body_case == QRAFT__RESPONSE__BODY_PUBLISH
                     ? resp->publish->message_id
                     : "");
    }
    struct fx *f = the_fx;
    if (f->reenter != NULL && r == &f->res[0]) {
        f->reenter_rv = f->reenter(f);
    }
}

static void on_guard(uv_timer_t *t)
{
    (void)t;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->guard);
    uv_timer_start(&f->guard, on_guard, 5, 5);
    srv_start(&f->a, &f->loop, 0);
    srv_start(&f->b, &f->loop, 0);
    the_fx = f;
    *state = f;
    return 0;
}

static void peer_start(struct fx *f, const struct qr_peer_limits *limits)
{
    char errmsg[QR_ERRMSG_BYTES];
    assert_int_equal(qr_peer_init(&f->peer, &f->loop, TOKEN, limits, errmsg),
                     0);
    f->peer_open = true;
}

static void on_peer_closed(struct qr_peer *p)
{
    struct fx *f = the_fx;
    assert_ptr_equal(p, &f->peer);
    f->n_peer_closed++;
    f->n_fired_at_close = n_fired(f);
}

static void peer_stop(struct fx *f)
{
    if (!f->peer_open) {
        return;
    }
    qr_peer_close(&f->peer, on_peer_closed);
    WAIT_UNTIL(f, f->n_peer_closed == 1);
    f->peer_open = false;
}

static void close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) {
        uv_close(h, NULL);
    }
}

static int teardown(void **state)
{
    struct fx *f = *state;
    peer_stop(f);
    for (size_t i = 0; i < MAX_CALLS; i++) {
        assert_true(f->res[i].fired <= 1);
    }
    assert_int_equal(f->a.n_bad_tokens + f->b.n_bad_tokens + f->c.n_bad_tokens,
                     0);
    assert_int_equal(
        f->a.n_undecodable + f->b.n_undecodable + f->c.n_undecodable, 0);
    srv_stop(&f->a);
    srv_stop(&f->b);
    srv_stop(&f->c);
    uv_close((uv_handle_t *)&f->guard, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_walk(&f->loop, close_any, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

/* Calls with a GetRequest whose message id is label; res[i] gets the
 * outcome. */
static int call(struct fx *f, size_t i, const char *label, uint64_t timeout)
{
    Qraft__GetRequest g = QRAFT__GET_REQUEST__INIT;
    g.message_id = (char *)label;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_GET;
    req.get = &g;
    return qr_peer_call(&f->peer, &req, timeout, on_result, &f->res[i]);
}

static void on_tmp_closed(uv_handle_t *h)
{
    *(bool *)h->data = true;
}

/* A port on 127.0.0.1 where nothing listens (free a moment ago). */
static int free_port(struct fx *f)
{
    uv_tcp_t tmp;
    bool closed = false;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    uv_tcp_init(&f->loop, &tmp);
    tmp.data = &closed;
    assert_int_equal(uv_tcp_bind(&tmp, (const struct sockaddr *)&addr, 0), 0);
    int len = sizeof addr;
    uv_tcp_getsockname(&tmp, (struct sockaddr *)&addr, &len);
    uv_close((uv_handle_t *)&tmp, on_tmp_closed);
    WAIT_UNTIL(f, closed);
    return ntohs(addr.sin_port);
}

/* ------------------------------------------------------------------------ */
/* Tests. */

static void test_no_target(void **state)
{
    struct fx *f = *state;
    peer_start(f, NULL);
    assert_int_equal(call(f, 0, "x", 1000), QR_EUNAVAIL);
    assert_string_equal(qr_peer_target(&f->peer), "");
    assert_false(qr_peer_connected(&f->peer));
    assert_int_equal(qr_peer_set_target(&f->peer, "nonsense"), QR_EBADREQ);
    assert_int_equal(qr_peer_set_target(&f->peer, "127.0.0.1"), QR_EBADREQ);
    assert_int_equal(qr_peer_set_target(&f->peer, "127.0.0.1:0"), QR_EBADREQ);
    assert_int_equal(qr_peer_set_target(&f->peer, "127.0.0.1:70000"),
                     QR_EBADREQ);
    assert_int_equal(qr_peer_set_target(&f->peer, "example.com:80"),
                     QR_EBADREQ);
    assert_int_equal(qr_peer_set_target(&f->peer, NULL), 0);
    assert_int_equal(qr_peer_set_target(&f->peer, ""), 0);
    assert_int_equal(call(f, 0, "x", 1000), QR_EUNAVAIL);
    /* Back to no target after one. */
    assert_int_equal(qr_peer_set_target(&f->peer, f->a.addr), 0);
    assert_int_equal(qr_peer_set_target(&f->peer, NULL), 0);
    assert_int_equal(call(f, 0, "x", 1000), QR_EUNAVAIL);
    assert_int_equal(n_fired(f), 0);
}

static void test_call_answered(void **state)
{
    struct fx *f = *state;
    peer_start(f, NULL);
    const char *port = strchr(f->a.addr, ':') + 1;
    char local[32];
    snprintf(local, sizeof local, "localhost:%s", port);
    assert_int_equal(qr_peer_set_target(&f->peer, local), 0);
    assert_string_equal(qr_peer_target(&f->peer), local);

    Qraft__GetRequest g = QRAFT__GET_REQUEST__INIT;
    g.message_id = "one";
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.id = 77;
    req.token = "caller's";
    req.body_case = QRAFT__REQUEST__BODY_GET;
    req.get = &g;
    assert_int_equal(qr_peer_call(&f->peer, &req, 5000, on_result, &f->res[0]),
                     0);
    /* The request is left as it was, and nothing fired yet. */
    assert_int_equal(req.id, 77);
    assert_string_equal(req.token, "caller's");
    assert_int_equal(f->res[0].fired, 0);

    WAIT_UNTIL(f, f->res[0].fired == 1);
    assert_int_equal(f->res[0].status, 0);
    assert_int_equal(f->res[0].resp_status, QRAFT__STATUS__OK);
    assert_string_equal(f->res[0].label, "one");
    assert_int_equal(f->a.n_reqs, 1);
    assert_true(f->a.reqs[0].id != 0 && f->a.reqs[0].id != 77);
    assert_true(qr_peer_connected(&f->peer));

    /* A second call goes over the same connection with a new id. */
    assert_int_equal(call(f, 1, "two", 5000), 0);
    WAIT_UNTIL(f, f->res[1].fired == 1);
    assert_string_equal(f->res[1].label, "two");
    assert_int_equal(f->a.n_accepts, 1);
    assert_true(f->a.reqs[1].id > f->a.reqs[0].id);
}

static void test_pipelined_out_of_order(void **state)
{
    struct fx *f = *state;
    peer_start(f, NULL);
    f->a.hold = true;
    assert_int_equal(qr_peer_set_target(&f->peer, f->a.addr), 0);
    const char *labels[] = {"first", "second", "third", "fourth"};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(call(f, i, labels[i], 5000), 0);
    }
    WAIT_UNTIL(f, f->a.n_reqs == 4);
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(f->a.reqs[i].label, labels[i]);
    }
    assert_int_equal(n_fired(f), 0);
    srv_answer(&f->a, 2);
    srv_answer(&f->a, 0);
    WAIT_UNTIL(f, f->res[0].fired == 1 && f->res[2].fired == 1);
    srv_answer(&f->a, 3);
    srv_answer(&f->a, 1);
    WAIT_UNTIL(f, n_fired(f) == 4);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(f->res[i].status, 0);
        assert_string_equal(f->res[i].label, labels[i]);
        assert_int_equal(f->res[i].resp_id, f->a.reqs[i].id);
    }
    assert_int_equal(f->a.n_accepts, 1);
}

static void test_timeout_then_late_answer(void **state)
{
    struct fx *f = *state;
    peer_start(f, NULL);
    f->a.hold = true;
    assert_int_equal(qr_peer_set_target(&f->peer, f->a.addr), 0);
    uint64_t t0 = qr_clock_mono_ms();
    assert_int_equal(call(f, 0, "slow", 150), 0);
    assert_int_equal(call(f, 1, "patient", 0), 0); /* no deadline */
    WAIT_UNTIL(f, f->res[0].fired == 1);
    assert_int_equal(f->res[0].status, QR_ETIMEOUT);
    assert_true(f->res[0].fired_at_ms - t0 >= 140);
    assert_int_equal(f->res[1].fired, 0);
    assert_int_equal(f->a.n_reqs, 2);

    /* The late answer is dropped; the connection stays usable. */
    srv_answer(&f->a, 0);
    srv_answer(&f->a, 1);
    WAIT_UNTIL(f, f->res[1].fired == 1);
    assert_int_equal(f->res[1].status, 0);
    assert_string_equal(f->res[1].label, "patient");
    f->a.hold = false;
    assert_int_equal(call(f, 2, "next", 5000), 0);
    WAIT_UNTIL(f, f->res[2].fired == 1);
    assert_int_equal(f->res[2].status, 0);
    assert_string_equal(f->res[2].label, "next");
    assert_int_equal(f->res[0].fired, 1);
    assert_int_equal(f->a.n_accepts, 1);
}

static void test_server_closes_mid_call(void **state)
{
    struct fx *f = *state;
    peer_start(f, NULL);
    f->a.hold = true;
    assert_int_equal(qr_peer_set_target(&f->peer, f->a.addr), 0);
    assert_int_equal(call(f, 0, "lost", 5000), 0);
    WAIT_UNTIL(f, f->a.n_reqs == 1);
    srv_drop(&f->a);
    WAIT_UNTIL(f, f->res[0].fired == 1);
    assert_int_equal(f->res[0].status, QR_EUNAVAIL);

    /* The next call waits for the reconnection and succeeds. */
    f->a.hold = false;
    assert_int_equal(call(f, 1, "again", 5000), 0);
    WAIT_UNTIL(f, f->res[1].fired == 1);
    assert_int_equal(f->res[1].status, 0);
    assert_string_equal(f->res[1].label, "again");
    assert_int_equal(f->a.n_accepts, 2);
    assert_true(qr_peer_connected(&f->peer));
}

struct down_count {
    unsigned n;
    unsigned fired_before; /* calls already reported at the first one */
    struct fx *f;
};

static void on_down(void *data)
{
    struct down_count *d = data;
    if (d->n++ == 0) {
        d->fired_before = d->f->res[0].fired;
    }
}

/* The hook hears of a lost connection before the calls that ended with it
 * are reported, also when the connection was idle, and of a failed
 * connect. */
static void test_on_down(void **state)
{
    struct fx *f = *state;
    struct down_count down = {.f = f};
    peer_start(f, NULL);
    qr_peer_set_on_down(&f->peer, on_down, &down);
    assert_int_equal(qr_peer_set_target(&f->peer, f->a.addr), 0);
    WAIT_UNTIL(f, qr_peer_connected(&f->peer));
    assert_int_equal(down.n, 0);

    f->a.hold = true;
    assert_int_equal(call(f, 0, "lost", 5000), 0);
    WAIT_UNTIL(f, f->a.n_reqs == 1);
    srv_drop(&f->a);
    WAIT_UNTIL(f, f->res[0].fired == 1);
    assert_int_equal(f->res[0].status, QR_EUNAVAIL);
    assert_true(down.n >= 1);
    assert_int_equal(down.fired_before, 0);

    /* Idle: no call waits, the hook still hears of it. */
    WAIT_UNTIL(f, qr_peer_connected(&f->peer));
    unsigned before = down.n;
    srv_drop(&f->a);
    WAIT_UNTIL(f, down.n > before);

    /* A target where nobody listens: each failed connect. */
    int port = free_port(f);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    before = down.n;
    assert_int_equal(qr_peer_set_target(&f->peer, addr), 0);
    WAIT_UNTIL(f, down.n > before);
    assert_false(qr_peer_connected(&f->peer));
}

static void test_switch_target(void **state)
{
    struct fx *f = *state;
    peer_start(f, NULL);
    f->a.hold = true;
    assert_int_equal(qr_peer_set_target(&f->peer, f->a.addr), 0);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(call(f, i, "to-a", 5000), 0);
    }
    WAIT_UNTIL(f, f->a.n_reqs == 3);
    assert_int_equal(call(f, 3, "queued", 5000), 0); /* not written yet */
    assert_int_equal(qr_peer_set_target(&f->peer, f->b.addr), 0);
    assert_int_equal(n_fired(f), 0); /* not inside set_target */
    assert_string_equal(qr_peer_target(&f->peer), f->b.addr);
    WAIT_UNTIL(f, n_fired(f) == 4);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(f->res[i].status, QR_EUNAVAIL);
    }
    assert_int_equal(f->res[3].status, QR_ENOTSENT);

    assert_int_equal(call(f, 4, "to-b", 5000), 0);
    WAIT_UNTIL(f, f->res[4].fired == 1);
    assert_int_equal(f->res[4].status, 0);
    assert_string_equal(f->res[4].label, "to-b");
    assert_int_equal(f->b.n_reqs, 1);
    assert_int_equal(f->a.n_reqs, 3);

    /* The same target again changes nothing. */
    assert_int_equal(qr_peer_set_target(&f->peer, f->b.addr), 0);
    assert_true(qr_peer_connected(&f->peer));
    assert_int_equal(call(f, 5, "still-b", 5000), 0);
    WAIT_UNTIL(f, f->res[5].fired == 1);
    assert_int_equal(f->res[5].status, 0);
    assert_int_equal(f->b.n_accepts, 1);
    assert_int_equal(f->b.n_reqs, 2);
}

static void test_garbage_answer(void **state)
{
    struct fx *f = *state;
    peer_start(f, NULL);
    f->a.hold = true;
    assert_int_equal(qr_peer_set_target(&f->peer, f->a.addr), 0);
    assert_int_equal(call(f, 0, "g1", 5000), 0);
    assert_int_equal(call(f, 1, "g2", 5000), 0);
    WAIT_UNTIL(f, f->a.n_reqs == 2);
    /* A frame of 5 bytes that is no protobuf (wire type 7). */
    static const uint8_t garbage[] = {0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff};
    srv_send_raw(f->a.reqs[0].conn, garbage, sizeof garbage);
    WAIT_UNTIL(f, n_fired(f) == 2);
    assert_int_equal(f->res[0].status, QR_EPROTO);
    assert_int_equal(f->res[1].status, QR_EPROTO);

    f->a.hold = false;
    assert_int_equal(call(f, 2, "recovered", 5000), 0);
    WAIT_UNTIL(f, f->res[2].fired == 1);
    assert_int_equal(f->res[2].status, 0);
    assert_string_equal(f->res[2].label, "recovered");
    assert_int_equal(f->a.n_accepts, 2);
}

static void test_bad_ids(void **state)
{
    struct fx *f = *state;
    peer_start(f, NULL);
    f->a.hold = true;
    assert_int_equal(qr_peer_set_target(&f->peer, f->a.addr), 0);

    /* An id never issued. */
    assert_int_equal(call(f, 0, "b1", 5000), 0);
    WAIT_UNTIL(f, f->a.n_reqs == 1);
    srv_send_response(f->a.reqs[0].conn, f->a.reqs[0].id + 1000,
                      QRAFT__STATUS__OK, "x", NULL);
    WAIT_UNTIL(f, f->res[0].fired == 1);
    assert_int_equal(f->res[0].status, QR_EPROTO);

    /* Id 0 with status OK. */
    assert_int_equal(call(f, 1, "b2", 5000), 0);
    WAIT_UNTIL(f, f->a.n_reqs == 2 && f->a.reqs[1].conn != NULL);
    srv_send_response(f->a.reqs[1].conn, 0, QRAFT__STATUS__OK, "x", NULL);
    WAIT_UNTIL(f, f->res[1].fired == 1);
    assert_int_equal(f->res[1].status, QR_EPROTO);
    assert_int_equal(f->a.n_accepts, 2);
}

static void test_id_zero_answers_oldest(void **state)
{
    struct fx *f = *state;
    peer_start(f, NULL);
    f->a.hold = true;
    assert_int_equal(qr_peer_set_target(&f->peer, f->a.addr), 0);
    assert_int_equal(call(f, 0, "old", 5000), 0);
    assert_int_equal(call(f, 1, "new", 5000), 0);
    WAIT_UNTIL(f, f->a.n_reqs == 2);
    srv_send_response(f->a.reqs[0].conn, 0, QRAFT__STATUS__BAD_REQUEST, NULL,
                      "malformed request");
    WAIT_UNTIL(f, f->res[0].fired == 1);
    assert_int_equal(f->res[0].status, 0);
    assert_int_equal(f->res[0].resp_status, QRAFT__STATUS__BAD_REQUEST);
    assert_int_equal(f->res[0].resp_id, 0);
    assert_int_equal(f->res[1].fired, 0);
    srv_answer(&f->a, 1);
    WAIT_UNTIL(f, f->res[1].fired == 1);
    assert_int_equal(f->res[1].status, 0);
    assert_string_equal(f->res[1].label, "new");
    assert_int_equal(f->a.n_accepts, 1);
}

static void test_frame_sizes(void **state)
{
    struct fx *f = *state;
    struct qr_peer_limits limits = {.max_frame_bytes = 256 * 1024};
    peer_start(f, &limits);
    f->a.hold = true;
    assert_int_equal(qr_peer_set_target(&f->peer, f->a.addr), 0);

    /* An answer larger than one read chunk, under the limit, is read. */
    assert_int_equal(call(f, 0, "big", 5000), 0);
    WAIT_UNTIL(f, f->a.n_reqs == 1);
    size_t big = 200 * 1024;
    char *error = malloc(big + 1);
    assert_non_null(error);
    memset(error, 'e', big);
    error[big] = '\0';
    srv_send_response(f->a.reqs[0].conn, f->a.reqs[0].id,
                      QRAFT__STATUS__INTERNAL, "big", error);
    free(error);
    WAIT_UNTIL(f, f->res[0].fired == 1);
    assert_int_equal(f->res[0].status, 0);
    assert_int_equal(f->res[0].error_bytes, big);

    /* A header announcing 2 GiB: refused on the header alone (nothing
     * else is sent and the server keeps the connection open, so waiting
     * for or allocating the body would never end the call). */
    assert_int_equal(call(f, 1, "huge", 5000), 0);
    WAIT_UNTIL(f, f->a.n_reqs == 2);
    static const uint8_t huge[] = {0x7f, 0xff, 0xff, 0xff};
    srv_send_raw(f->a.reqs[1].conn, huge, sizeof huge);
    WAIT_UNTIL(f, f->res[1].fired == 1);
    assert_int_equal(f->res[1].status, QR_EPROTO);

    /* One byte over the limit. */
    assert_int_equal(call(f, 2, "over", 5000), 0);
    WAIT_UNTIL(f, f->a.n_reqs == 3 && f->a.reqs[2].conn != NULL);
    uint8_t over[QR_FRAME_HEADER_BYTES];
    qr_frame_put_header(over, 256 * 1024 + 1);
    srv_send_raw(f->a.reqs[2].conn, over, sizeof over);
    WAIT_UNTIL(f, f->res[2].fired == 1);
    assert_int_equal(f->res[2].status, QR_EPROTO);

    f->a.hold = false;
    assert_int_equal(call(f, 3, "fine", 5000), 0);
    WAIT_UNTIL(f, f->res[3].fired == 1);
    assert_int_equal(f->res[3].status, 0);
    assert_int_equal(f->a.n_accepts, 3);
}

static void test_close_cancels_every_call(void **state)
{
    struct fx *f = *state;
    peer_start(f, NULL);
    f->a.hold = true;
    assert_int_equal(qr_peer_set_target(&f->peer, f->a.addr), 0);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(call(f, i, "sent", 5000), 0);
    }
    WAIT_UNTIL(f, f->a.n_reqs == 4);
    assert_int_equal(call(f, 4, "queued", 5000), 0);
    assert_int_equal(call(f, 5, "queued", 0), 0);

    qr_peer_close(&f->peer, on_peer_closed);
    assert_int_equal(n_fired(f), 0);
    qr_peer_close(&f->peer, on_peer_closed); /* no-op */
    assert_int_equal(call(f, 6, "late", 5000), QR_ECANCELED);
    assert_int_equal(qr_peer_set_target(&f->peer, f->b.addr), QR_ECANCELED);
    WAIT_UNTIL(f, f->n_peer_closed == 1);
    f->peer_open = false;
    assert_int_equal(f->n_fired_at_close, 6);
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(f->res[i].fired, 1);
        assert_int_equal(f->res[i].status, QR_ECANCELED);
    }
    assert_int_equal(f->res[6].fired, 0);
    /* Nothing fires any more. */
    for (int i = 0; i < 5; i++) {
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    assert_int_equal(f->n_peer_closed, 1);
    assert_int_equal(n_fired(f), 6);
}

static void test_limits(void **state)
{
    struct fx *f = *state;
    struct qr_peer_limits limits = {
        .max_outstanding = 2,
        .max_queued_bytes = 300,
        .max_frame_bytes = 1000,
    };
    peer_start(f, &limits);
    f->a.hold = true;
    assert_int_equal(qr_peer_set_target(&f->peer, f->a.addr), 0);

    char label[2001];
    memset(label, 'l', sizeof label - 1);
    label[2000] = '\0';
    assert_int_equal(call(f, 0, label, 5000), QR_ETOOLARGE);
    label[500] = '\0';
    assert_int_equal(call(f, 0, label, 5000), QR_EUNAVAIL); /* > 300 queued */

    assert_int_equal(call(f, 0, "c1", 5000), 0);
    assert_int_equal(call(f, 1, "c2", 5000), 0);
    assert_int_equal(call(f, 2, "c3", 5000), QR_EUNAVAIL);
    WAIT_UNTIL(f, f->a.n_reqs == 2);
    assert_int_equal(call(f, 2, "c3", 5000), QR_EUNAVAIL);
    srv_answer(&f->a, 0);
    WAIT_UNTIL(f, f->res[0].fired == 1);
    assert_int_equal(call(f, 2, "c3", 5000), 0);
    srv_answer(&f->a, 1);
    WAIT_UNTIL(f, f->a.n_reqs == 3);
    srv_answer(&f->a, 2);
    WAIT_UNTIL(f, n_fired(f) == 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(f->res[i].status, 0);
    }
}

static void test_refused_then_reconnects(void **state)
{
    struct fx *f = *state;
    struct qr_peer_limits limits = {.backoff_min_ms = 20,
                                    .backoff_max_ms = 100};
    peer_start(f, &limits);
    int port = free_port(f);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    assert_int_equal(qr_peer_set_target(&f->peer, addr), 0);
    uint64_t t0 = qr_clock_mono_ms();
    assert_int_equal(call(f, 0, "nobody", 5000), 0);
    WAIT_UNTIL(f, f->res[0].fired == 1);
    assert_int_equal(f->res[0].status, QR_ENOTSENT);
    assert_true(f->res[0].fired_at_ms - t0 < 1000); /* well before 5 s */
    assert_false(qr_peer_connected(&f->peer));

    /* A server appears there: the peer reconnects by itself. */
    srv_start(&f->c, &f->loop, port);
    WAIT_UNTIL(f, qr_peer_connected(&f->peer));
    assert_int_equal(f->c.n_accepts, 1);
    assert_int_equal(call(f, 1, "somebody", 5000), 0);
    WAIT_UNTIL(f, f->res[1].fired == 1);
    assert_int_equal(f->res[1].status, 0);
    assert_string_equal(f->res[1].label, "somebody");
}

static void test_connect_timeout(void **state)
{
    struct fx *f = *state;
    struct qr_peer_limits limits = {.connect_timeout_ms = 200};
    peer_start(f, &limits);
    /* A listener with a full accept queue (backlog 0, one connection
     * waiting, never accepted): the kernel drops further SYNs, so a
     * connect neither succeeds nor fails. */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(lfd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(lfd, 0), 0);
    socklen_t sl = sizeof sa;
    getsockname(lfd, (struct sockaddr *)&sa, &sl);
    int filler = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(filler, (struct sockaddr *)&sa, sizeof sa), 0);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(sa.sin_port));

    assert_int_equal(qr_peer_set_target(&f->peer, addr), 0);
    uint64_t t0 = qr_clock_mono_ms();
    assert_int_equal(call(f, 0, "stuck", 5000), 0);
    WAIT_UNTIL(f, f->res[0].fired == 1);
    assert_int_equal(f->res[0].status, QR_ENOTSENT);
    uint64_t took = f->res[0].fired_at_ms - t0;
    assert_true(took >= 190 && took < 2000);
    assert_false(qr_peer_connected(&f->peer));
    peer_stop(f);
    close(filler);
    close(lfd);
}

/* The first callback switches the target away while the second call's
 * answer may already be in the same read. */
static int reenter_drop_target(struct fx *f)
{
    return qr_peer_set_target(&f->peer, NULL);
}

/* The first callback makes a new call from inside the callback. */
static int reenter_call(struct fx *f)
{
    return call(f, 2, "from-callback", 5000);
}

static void test_reentrant_callbacks(void **state)
{
    struct fx *f = *state;
    peer_start(f, NULL);
    f->a.hold = true;
    assert_int_equal(qr_peer_set_target(&f->peer, f->a.addr), 0);
    assert_int_equal(call(f, 0, "r1", 5000), 0);
    assert_int_equal(call(f, 1, "r2", 5000), 0);
    WAIT_UNTIL(f, f->a.n_reqs == 2);
    f->reenter = reenter_call;
    srv_answer(&f->a, 0);
    WAIT_UNTIL(f, f->a.n_reqs == 3);
    assert_int_equal(f->reenter_rv, 0);
    srv_answer(&f->a, 2);
    WAIT_UNTIL(f, f->res[2].fired == 1);
    assert_string_equal(f->res[2].label, "from-callback");

    /* Now r1's slot again, with a callback that drops the target. */
    memset(&f->res[0], 0, sizeof f->res[0]);
    f->reenter = reenter_drop_target;
    assert_int_equal(call(f, 0, "r3", 5000), 0);
    WAIT_UNTIL(f, f->a.n_reqs == 4);
    srv_answer(&f->a, 3); /* r3 */
    srv_answer(&f->a, 1); /* r2, right behind it */
    WAIT_UNTIL(f, f->res[0].fired == 1 && f->res[1].fired == 1);
    assert_int_equal(f->reenter_rv, 0);
    assert_int_equal(f->res[0].status, 0);
    assert_string_equal(f->res[0].label, "r3");
    /* r2's answer comes after r3's: the switch ended r2 first. */
    assert_int_equal(f->res[1].status, QR_EUNAVAIL);
    assert_string_equal(qr_peer_target(&f->peer), "");
    f->reenter = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_no_target, setup, teardown),
        cmocka_unit_test_setup_teardown(test_call_answered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_out_of_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_timeout_then_late_answer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_server_closes_mid_call, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_on_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_switch_target, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_id_zero_answers_oldest, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_frame_sizes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_cancels_every_call, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_then_reconnects, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_connect_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reentrant_callbacks, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
