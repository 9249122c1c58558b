/* Unit tests of node/lib/tls_stream.c over a real loopback TCP pair on a
 * libuv loop: a client's writes made before the handshake arrive and are
 * echoed; a peer that is not TLS, or never finishes its handshake, is
 * told apart with a clear reason; a client that does not trust the
 * server's CA fails verification; a clean close reaches the other side as
 * EOF. Certificates are made here with OpenSSL, as in test_tls_ctx.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <uv.h>

#include "lib/tls_ctx.h"
#include "lib/tls_stream.h"
#include "tls_test_certs.h"

/* ------------------------------------------------------------------------ */
/* One end of a loopback connection, TLS or plain. */

struct end {
    uv_tcp_t tcp;
    struct qr_tls_stream tls;
    bool use_tls;
    bool echo;  /* writes back what it reads */
    bool pause; /* stops reading after the first bytes, for a while */
    uv_timer_t resume;
    uint8_t in[256]; /* plaintext read */
    size_t len;
    ssize_t status; /* the error the read side ended with, 0 while none */
    char why[256];
    int writes_done;
    int handles_open;
};

struct write {
    struct qr_tls_write req;
    struct end *e;
    uint8_t data[64];
};

static uv_loop_t loop;
static uv_tcp_t listener;
static struct end srv, cli;
static SSL_CTX *server_ctx, *client_ctx;
static uint64_t handshake_ms;

static uint8_t *on_plain_alloc(void *data, size_t *room)
{
    struct end *e = data;
    *room = sizeof e->in - e->len;
    return e->in + e->len;
}

static void on_handle_close(uv_handle_t *h)
{
    (void)h;
}

static void on_tls_close(struct qr_tls_stream *t)
{
    (void)t;
}

static void end_close(struct end *e)
{
    if (uv_is_closing((uv_handle_t *)&e->tcp)) {
        return;
    }
    if (e->use_tls) {
        qr_tls_stream_close(&e->tls, on_tls_close);
    }
    uv_close((uv_handle_t *)&e->tcp, on_handle_close);
}

static void on_written(struct qr_tls_write *req, int status)
{
    struct write *w = (struct write *)req;
    if (status == 0) {
        w->e->writes_done++;
    }
    free(w);
}

static void send_text(struct end *e, const char *text)
{
    struct write *w = calloc(1, sizeof *w);
    assert_non_null(w);
    w->e = e;
    size_t n = strlen(text);
    memcpy(w->data, text, n);
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)n);
    assert_int_equal(qr_tls_stream_write(&e->tls, &w->req, &b, 1, on_written),
                     0);
}

static void on_resume(uv_timer_t *t)
{
    struct end *e = t->data;
    qr_tls_stream_read_start(&e->tls);
    uv_close((uv_handle_t *)t, NULL);
}

static void on_plain_read(void *data, ssize_t nread)
{
    struct end *e = data;
    if (e->pause && nread > 0) {
        /* What arrives meanwhile waits in the SSL object; it is handed
         * over from the loop once reading starts again. */
        e->pause = false;
        qr_tls_stream_read_stop(&e->tls);
        uv_timer_init(&loop, &e->resume);
        e->resume.data = e;
        uv_timer_start(&e->resume, on_resume, 100, 0);
    }
    if (nread < 0) {
        e->status = nread;
        snprintf(e->why, sizeof e->why, "%s", e->tls.errmsg);
        end_close(e);
        return;
    }
    if (e->echo) {
        char text[64];
        snprintf(text, sizeof text, "%.*s", (int)nread, e->in + e->len);
        send_text(e, text);
    }
    e->len += (size_t)nread;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct end *e = h->data;
    (void)suggested;
    if (e->use_tls) {
        qr_tls_stream_room(&e->tls, buf);
    } else {
        *buf = uv_buf_init((char *)e->in + e->len,
                           (unsigned)(sizeof e->in - e->len));
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct end *e = s->data;
    (void)buf;
    if (e->use_tls) {
        qr_tls_stream_feed(&e->tls, nread);
    } else if (nread < 0) {
        e->status = nread;
        end_close(e);
    } else {
        e->len += (size_t)nread;
    }
}

static void start_tls(struct end *e, bool server, const char *host)
{
    e->use_tls = true;
    assert_int_equal(
        qr_tls_stream_init(&e->tls, &loop, (uv_stream_t *)&e->tcp,
                           server ? server_ctx : client_ctx, server, host,
                           handshake_ms, on_plain_alloc, on_plain_read, e),
        0);
    qr_tls_stream_read_start(&e->tls);
}

static void on_connection(uv_stream_t *l, int status)
{
    assert_int_equal(status, 0);
    uv_tcp_init(&loop, &srv.tcp);
    srv.tcp.data = &srv;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&srv.tcp), 0);
    start_tls(&srv, true, NULL);
    assert_int_equal(uv_read_start((uv_stream_t *)&srv.tcp, on_alloc, on_read),
                     0);
}

static const char *cli_host;
static const char *cli_plain_text; /* a plain client sends this */

static void on_plain_written(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

static void on_connect(uv_connect_t *req, int status)
{
    assert_int_equal(status, 0);
    free(req);
    cli.tcp.data = &cli;
    if (cli_plain_text == NULL) {
        start_tls(&cli, false, cli_host);
        send_text(&cli, "hello ");
        send_text(&cli, "there");
    } else if (cli_plain_text[0] != '\0') {
        uv_write_t *w = malloc(sizeof *w);
        uv_buf_t b = uv_buf_init((char *)cli_plain_text,
                                 (unsigned)strlen(cli_plain_text));
        assert_int_equal(
            uv_write(w, (uv_stream_t *)&cli.tcp, &b, 1, on_plain_written), 0);
    }
    assert_int_equal(uv_read_start((uv_stream_t *)&cli.tcp, on_alloc, on_read),
                     0);
}

/* Runs a connection from a client (TLS expecting host, or plain sending
 * plain_text) to a TLS server until both ends closed or deadline_ms. */
static void run_pair(const char *host, const char *plain_text, bool echo)
{
    memset(&srv, 0, sizeof srv);
    memset(&cli, 0, sizeof cli);
    srv.echo = echo;
    cli_host = host;
    cli_plain_text = plain_text;
    assert_int_equal(uv_loop_init(&loop), 0);
    uv_tcp_init(&loop, &listener);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(uv_tcp_bind(&listener, (struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&listener, 8, on_connection), 0);
    struct sockaddr_storage bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&listener, (struct sockaddr *)&bound, &len);
    uv_tcp_init(&loop, &cli.tcp);
    uv_connect_t *req = malloc(sizeof *req);
    assert_int_equal(
        uv_tcp_connect(req, &cli.tcp, (struct sockaddr *)&bound, on_connect),
        0);
}

/* Runs the loop until done() or 5 s. */
static void run_until(bool (*done)(void))
{
    uint64_t deadline = uv_now(&loop) + 5000;
    while (!done() && uv_now(&loop) < deadline) {
        uv_run(&loop, UV_RUN_ONCE);
    }
}

static void finish(void)
{
    end_close(&srv);
    end_close(&cli);
    uv_close((uv_handle_t *)&listener, on_handle_close);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static bool echoed(void)
{
    return cli.len >= strlen("hello there");
}

static bool server_failed(void)
{
    return srv.status != 0;
}

static bool client_failed(void)
{
    return cli.status != 0;
}

static void make_ctxs(const char *trust)
{
    char err[512];
    struct qr_tls_files sf = {node_pem, node_key, NULL};
    struct qr_tls_files cf = {NULL, NULL, trust};
    assert_int_equal(
        qr_tls_server_ctx(&sf, false, &server_ctx, err, sizeof err), 0);
    assert_int_equal(qr_tls_client_ctx(&cf, &client_ctx, err, sizeof err), 0);
}

static void free_ctxs(void)
{
    SSL_CTX_free(server_ctx);
    SSL_CTX_free(client_ctx);
    server_ctx = client_ctx = NULL;
}

/* Writes made before the handshake go out after it, in order; the echo
 * comes back; closing one side is EOF on the other. */
static void test_echo_and_close(void **state)
{
    (void)state;
    make_ctxs(ca_pem);
    handshake_ms = 5000;
    run_pair("127.0.0.1", NULL, true);
    run_until(echoed);
    assert_int_equal(cli.len, strlen("hello there"));
    assert_memory_equal(cli.in, "hello there", cli.len);
    assert_true(qr_tls_stream_ready(&cli.tls));
    assert_int_equal(cli.writes_done, 2);
    end_close(&cli);
    run_until(server_failed);
    assert_int_equal(srv.status, UV_EOF);
    finish();
    free_ctxs();
}

static bool server_got_all(void)
{
    return srv.len >= strlen("hello there");
}

/* A reader that pauses gets the rest once it reads again. */
static void test_pause_and_resume(void **state)
{
    (void)state;
    make_ctxs(ca_pem);
    handshake_ms = 5000;
    uint64_t t0 = uv_hrtime();
    run_pair("127.0.0.1", NULL, false);
    srv.pause = true;
    run_until(server_got_all);
    assert_true((uv_hrtime() - t0) / 1000000 >= 90); /* it did pause */
    assert_int_equal(srv.len, strlen("hello there"));
    assert_memory_equal(srv.in, "hello there", srv.len);
    finish();
    free_ctxs();
}

/* A client that speaks plaintext gets a clear TLS error on the server
 * side, not a hang. */
static void test_plaintext_client(void **state)
{
    (void)state;
    make_ctxs(ca_pem);
    handshake_ms = 5000;
    run_pair(NULL, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", false);
    run_until(server_failed);
    assert_int_equal(srv.status, UV_EPROTO);
    assert_non_null(strstr(srv.why, "TLS handshake failed"));
    run_until(client_failed); /* the server closed */
    assert_true(cli.status < 0);
    finish();
    free_ctxs();
}

/* A connection that sends nothing ends at the handshake deadline. */
static void test_handshake_deadline(void **state)
{
    (void)state;
    make_ctxs(ca_pem);
    handshake_ms = 100;
    uint64_t t0 = uv_hrtime();
    run_pair(NULL, "", false);
    run_until(server_failed);
    assert_int_equal(srv.status, UV_ETIMEDOUT);
    assert_non_null(strstr(srv.why, "did not finish within 100 ms"));
    assert_true((uv_hrtime() - t0) / 1000000 >= 90);
    finish();
    free_ctxs();
}

/* A client trusting another CA refuses the server, saying why; the
 * writes it held never go out. */
static void test_wrong_ca(void **state)
{
    (void)state;
    make_ctxs(other_ca_pem);
    handshake_ms = 5000;
    run_pair("127.0.0.1", NULL, true);
    run_until(client_failed);
    assert_int_equal(cli.status, UV_EPROTO);
    assert_non_null(strstr(cli.why, "certificate"));
    assert_int_equal(cli.writes_done, 0);
    run_until(server_failed);
    assert_int_equal(srv.len, 0);
    finish();
    free_ctxs();
}

/* The right CA but another name: refused too. */
static void test_wrong_name(void **state)
{
    (void)state;
    make_ctxs(ca_pem);
    handshake_ms = 5000;
    run_pair("127.0.0.2", NULL, true);
    run_until(client_failed);
    assert_int_equal(cli.status, UV_EPROTO);
    assert_non_null(strstr(cli.why, "certificate"));
    finish();
    free_ctxs();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_echo_and_close),
        cmocka_unit_test(test_pause_and_resume),
        cmocka_unit_test(test_plaintext_client),
        cmocka_unit_test(test_handshake_deadline),
        cmocka_unit_test(test_wrong_ca),
        cmocka_unit_test(test_wrong_name),
    };
    return cmocka_run_group_tests(tests, tls_certs_setup, tls_certs_teardown);
}
