/* TLS over a libuv stream (tls_stream.h). */
#include "lib/tls_stream.h"

#include <inttypes.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/tls_ctx.h"

/* Ciphertext read at a time: a whole TLS record and its overhead. */
#define ROOM_BYTES (16u * 1024u + 512u)

/* One uv_write of the ciphertext waiting in the out BIO; the callers'
 * writes that it carries complete with it. */
struct out_write {
    uv_write_t req;
    struct qr_tls_stream *t;
    struct qr_tls_write *reqs;
    uint8_t data[];
};

static void on_timer(uv_timer_t *timer);

/* Schedules the timer to run now (a drain or an error report). */
static void soon(struct qr_tls_stream *t)
{
    if (!t->closing) {
        uv_timer_start(&t->timer, on_timer, 0, 0);
    }
}

/* Marks t failed with status and "what: OpenSSL's words" (once); the read
 * callback hears of it from the loop, or at once from report(). */
static void fail(struct qr_tls_stream *t, int status, const char *what)
{
    if (t->failed) {
        return;
    }
    char why[200];
    qr_tls_errors(why, sizeof why);
    t->failed = true;
    t->status = status;
    snprintf(t->errmsg, sizeof t->errmsg, "%s%s%s", what,
             why[0] != '\0' ? ": " : "", why);
    soon(t);
}

/* Tells the owner of the failure, once. */
static void report(struct qr_tls_stream *t)
{
    if (t->failed && !t->reported && !t->closing) {
        t->reported = true;
        t->read_cb(t->data, t->status);
    }
}

static void hold_front(struct qr_tls_stream *t, struct qr_tls_write *reqs)
{
    if (reqs == NULL) {
        return;
    }
    struct qr_tls_write *last = reqs;
    while (last->next != NULL) {
        last = last->next;
    }
    last->next = t->held_head;
    t->held_head = reqs;
    if (t->held_tail == NULL) {
        t->held_tail = last;
    }
}

static void on_out_write(uv_write_t *req, int status)
{
    struct out_write *w = (struct out_write *)req;
    struct qr_tls_stream *t = w->t;
    t->n_writes--;
    struct qr_tls_write *r = w->reqs;
    free(w);
    if (status < 0 && status != UV_ECANCELED && !t->closing) {
        char what[96];
        snprintf(what, sizeof what, "write: %s", uv_strerror(status));
        fail(t, status, what);
    }
    while (r != NULL) {
        struct qr_tls_write *next = r->next;
        r->cb(r, status);
        r = next;
    }
}

/* Writes what the SSL object produced (handshake messages, records) in one
 * uv_write that completes reqs (a list, may be NULL). */
static void flush_out(struct qr_tls_stream *t, struct qr_tls_write *reqs)
{
    size_t pending = BIO_ctrl_pending(t->out);
    if (pending == 0 && reqs == NULL) {
        return;
    }
    struct out_write *w = malloc(sizeof *w + pending + 1);
    if (w == NULL) {
        hold_front(t, reqs);
        fail(t, UV_ENOBUFS, "out of memory");
        return;
    }
    int n = pending > 0 ? BIO_read(t->out, w->data, (int)pending) : 0;
    w->t = t;
    w->reqs = reqs;
    uv_buf_t buf = uv_buf_init((char *)w->data, n > 0 ? (unsigned)n : 0);
    int rv = uv_write(&w->req, t->stream, &buf, 1, on_out_write);
    if (rv != 0) {
        free(w);
        hold_front(t, reqs);
        char what[96];
        snprintf(what, sizeof what, "write: %s", uv_strerror(rv));
        fail(t, rv, what);
        return;
    }
    t->n_writes++;
}

/* SSL_write of every buffer; false (t failed) when one does not go. */
static bool encrypt(struct qr_tls_stream *t, const uv_buf_t *bufs, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        if (bufs[i].len == 0) {
            continue;
        }
        int r = SSL_write(t->ssl, bufs[i].base, (int)bufs[i].len);
        if (r <= 0) {
            fail(t, UV_EPROTO, "TLS write");
            return false;
        }
    }
    return true;
}

/* Hands decrypted plaintext to the owner while it reads. */
static void drain(struct qr_tls_stream *t)
{
    while (t->reading && !t->failed && !t->closing) {
        size_t room = 0;
        uint8_t *dst = t->alloc_cb(t->data, &room);
        if (dst == NULL || room == 0) {
            fail(t, UV_ENOBUFS, "out of memory");
            break;
        }
        int n = SSL_read(t->ssl, dst, room > INT32_MAX ? INT32_MAX : (int)room);
        if (n > 0) {
            t->read_cb(t->data, n);
            continue;
        }
        int e = SSL_get_error(t->ssl, n);
        if (e == SSL_ERROR_WANT_READ) {
            break;
        }
        if (e == SSL_ERROR_ZERO_RETURN) {
            t->failed = true;
            t->status = UV_EOF;
            snprintf(t->errmsg, sizeof t->errmsg, "closed by the peer");
        } else {
            fail(t, UV_EPROTO, "TLS read");
        }
        break;
    }
    if (!t->closing && t->ssl != NULL) {
        flush_out(t, NULL); /* e.g. an answer to a key update */
    }
    report(t);
}

/* Advances the handshake; once done, sends what was held. */
static void handshake(struct qr_tls_stream *t)
{
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
    if (r != 1 && e != SSL_ERROR_WANT_READ) {
        long v = SSL_get_verify_result(t->ssl);
        char what[160];
        snprintf(what, sizeof what, "TLS handshake failed%s%s",
                 v != X509_V_OK ? ": certificate " : "",
                 v != X509_V_OK ? X509_verify_cert_error_string(v) : "");
        fail(t, UV_EPROTO, what);
        flush_out(t, NULL); /* the alert tells the peer why */
        return;
    }
    flush_out(t, NULL);
    if (r != 1) {
        return;
    }
    t->handshaken = true;
    uv_timer_stop(&t->timer);
    struct qr_tls_write *held = t->held_head;
    t->held_head = t->held_tail = NULL;
    for (struct qr_tls_write *w = held; w != NULL; w = w->next) {
        uv_buf_t b = uv_buf_init((char *)w->held, (unsigned)w->held_len);
        if (!encrypt(t, &b, 1)) {
            break;
        }
    }
    for (struct qr_tls_write *w = held; w != NULL; w = w->next) {
        free(w->held);
        w->held = NULL;
    }
    if (t->failed) {
        hold_front(t, held);
        return;
    }
    flush_out(t, held);
    if (t->ready_cb != NULL && !t->failed) {
        t->ready_cb(t->data);
    }
}

static void on_timer(uv_timer_t *timer)
{
    struct qr_tls_stream *t = timer->data;
    if (t->closing) {
        return;
    }
    if (!t->failed && !t->handshaken) {
        char what[96];
        snprintf(what, sizeof what,
                 "TLS handshake did not finish within %" PRIu64 " ms",
                 t->handshake_timeout_ms);
        ERR_clear_error();
        fail(t, UV_ETIMEDOUT, what);
    }
    if (t->failed) {
        report(t);
        return;
    }
    drain(t);
}

int qr_tls_stream_init(struct qr_tls_stream *t,
                       uv_loop_t *loop,
                       uv_stream_t *stream,
                       SSL_CTX *ctx,
                       bool server,
                       const char *expect_host,
                       uint64_t handshake_timeout_ms,
                       qr_tls_alloc_cb alloc_cb,
                       qr_tls_read_cb read_cb,
                       void *data)
{
    memset(t, 0, sizeof *t);
    t->stream = stream;
    t->server = server;
    t->handshake_timeout_ms = handshake_timeout_ms;
    t->alloc_cb = alloc_cb;
    t->read_cb = read_cb;
    t->data = data;
    ERR_clear_error();
    t->room = malloc(ROOM_BYTES);
    t->ssl = SSL_new(ctx);
    t->in = BIO_new(BIO_s_mem());
    t->out = BIO_new(BIO_s_mem());
    if (t->room == NULL || t->ssl == NULL || t->in == NULL || t->out == NULL) {
        goto err;
    }
    BIO_set_mem_eof_return(t->in, -1);
    BIO_set_mem_eof_return(t->out, -1);
    SSL_set_bio(t->ssl, t->in, t->out); /* the SSL owns them now */
    if (server) {
        SSL_set_accept_state(t->ssl);
    } else {
        SSL_set_connect_state(t->ssl);
        if (expect_host != NULL &&
            qr_tls_client_expect(t->ssl, expect_host) != 0) {
            SSL_free(t->ssl);
            t->ssl = NULL;
            free(t->room);
            t->room = NULL;
            snprintf(t->errmsg, sizeof t->errmsg,
                     "TLS: cannot expect the name '%s'", expect_host);
            return -1;
        }
    }
    uv_timer_init(loop, &t->timer);
    t->timer.data = t;
    uv_timer_start(&t->timer, on_timer, handshake_timeout_ms, 0);
    if (!server) {
        handshake(t); /* the ClientHello */
    }
    return 0;

err:
    /* Nothing owns the BIOs yet. */
    qr_tls_errors(t->errmsg, sizeof t->errmsg);
    if (t->errmsg[0] == '\0') {
        snprintf(t->errmsg, sizeof t->errmsg, "TLS: out of memory");
    }
    SSL_free(t->ssl);
    BIO_free(t->in);
    BIO_free(t->out);
    t->ssl = NULL;
    free(t->room);
    t->room = NULL;
    return -1;
}

void qr_tls_stream_room(struct qr_tls_stream *t, uv_buf_t *buf)
{
    *buf = uv_buf_init((char *)t->room, t->room != NULL ? ROOM_BYTES : 0);
}

void qr_tls_stream_feed(struct qr_tls_stream *t, ssize_t nread)
{
    if (t->closing || nread == 0) {
        return;
    }
    if (nread < 0) {
        if (!t->failed) {
            t->failed = true;
            t->status = (int)nread;
            snprintf(t->errmsg, sizeof t->errmsg, "%s%s",
                     t->handshaken ? "" : "during the TLS handshake: ",
                     uv_strerror((int)nread));
        }
        report(t);
        return;
    }
    if (t->failed) {
        return;
    }
    if (BIO_write(t->in, t->room, (int)nread) != (int)nread) {
        fail(t, UV_ENOBUFS, "out of memory");
        report(t);
        return;
    }
    if (!t->handshaken) {
        handshake(t);
    }
    if (t->failed) {
        report(t);
        return;
    }
    if (t->handshaken) {
        drain(t);
    }
}

void qr_tls_stream_read_start(struct qr_tls_stream *t)
{
    t->reading = true;
    if (t->closing) {
        return;
    }
    if ((t->failed && !t->reported) ||
        (t->handshaken && !t->failed &&
         (SSL_pending(t->ssl) > 0 || BIO_ctrl_pending(t->in) > 0))) {
        soon(t);
    }
}

void qr_tls_stream_read_stop(struct qr_tls_stream *t)
{
    t->reading = false;
}

int qr_tls_stream_write(struct qr_tls_stream *t,
                        struct qr_tls_write *req,
                        const uv_buf_t *bufs,
                        unsigned n,
                        qr_tls_write_cb cb)
{
    if (t->failed || t->closing) {
        return UV_ECANCELED;
    }
    req->cb = cb;
    req->next = NULL;
    req->held = NULL;
    req->held_len = 0;
    if (!t->handshaken) {
        size_t total = 0;
        for (unsigned i = 0; i < n; i++) {
            total += bufs[i].len;
        }
        req->held = malloc(total > 0 ? total : 1);
        if (req->held == NULL) {
            return -ENOMEM;
        }
        for (unsigned i = 0; i < n; i++) {
            memcpy(req->held + req->held_len, bufs[i].base, bufs[i].len);
            req->held_len += bufs[i].len;
        }
        if (t->held_tail != NULL) {
            t->held_tail->next = req;
        } else {
            t->held_head = req;
        }
        t->held_tail = req;
        return 0;
    }
    ERR_clear_error();
    if (!encrypt(t, bufs, n)) {
        return UV_EPROTO;
    }
    flush_out(t, req);
    return 0; /* a flush that failed left req held: it ends at the close */
}

void qr_tls_stream_on_ready(struct qr_tls_stream *t, void (*cb)(void *data))
{
    t->ready_cb = cb;
}

bool qr_tls_stream_ready(const struct qr_tls_stream *t)
{
    return t->handshaken && !t->failed;
}

static void on_timer_close(uv_handle_t *h)
{
    struct qr_tls_stream *t = h->data;
    struct qr_tls_write *w = t->held_head;
    t->held_head = t->held_tail = NULL;
    while (w != NULL) {
        struct qr_tls_write *next = w->next;
        free(w->held);
        w->held = NULL;
        w->cb(w, UV_ECANCELED);
        w = next;
    }
    free(t->room);
    t->room = NULL;
    if (t->close_cb != NULL) {
        t->close_cb(t);
    }
}

void qr_tls_stream_close(struct qr_tls_stream *t, qr_tls_close_cb cb)
{
    if (t->closing) {
        return;
    }
    t->closing = true;
    t->close_cb = cb;
    if (t->handshaken && !t->failed) {
        ERR_clear_error();
        if (SSL_shutdown(t->ssl) >= 0) {
            char bye[256];
            int n = BIO_read(t->out, bye, sizeof bye);
            if (n > 0) {
                uv_buf_t b = uv_buf_init(bye, (unsigned)n);
                (void)uv_try_write(t->stream, &b, 1); /* best effort */
            }
        }
    }
    ERR_clear_error();
    SSL_free(t->ssl);
    t->ssl = NULL;
    uv_timer_stop(&t->timer);
    uv_close((uv_handle_t *)&t->timer, on_timer_close);
}
