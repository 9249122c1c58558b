/* TLS over a libuv stream: one SSL object joined to the stream by memory
 * BIOs, in the server or the client role, on the loop, no threads. The
 * owner keeps reading and closing the stream its own way: it reads the
 * ciphertext into qr_tls_stream_room and hands it over with
 * qr_tls_stream_feed, and gets the plaintext through its alloc and read
 * callbacks, as from uv_read_start; so a frame reader (lib/framed.h) sits
 * on top unchanged.
 *
 * Invariants:
 * - The handshake finishes within the deadline given to init, or the read
 *   callback is told UV_ETIMEDOUT; a peer that sends something that is not
 *   TLS, or fails verification, gets UV_EPROTO; errmsg then holds
 *   OpenSSL's words. After an error nothing more is read or written.
 * - Writes made before the handshake finished wait, in order, and go out
 *   once it has; every accepted write's callback fires exactly once, from
 *   the loop (UV_ECANCELED when the stream closed first).
 * - Plaintext is handed over only while the owner reads (read_start):
 *   what arrives meanwhile waits in the SSL object. */
#ifndef QR_TLS_STREAM_H
#define QR_TLS_STREAM_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

/* Where the next plaintext goes: returns room for *room bytes (NULL, or
 * *room 0, when out of memory). */
typedef uint8_t *(*qr_tls_alloc_cb)(void *data, size_t *room);

/* nread > 0: that many plaintext bytes were put in the last room. < 0: the
 * stream is done: UV_EOF (the peer closed), UV_ETIMEDOUT (no handshake in
 * time), UV_EPROTO (TLS failed: errmsg), UV_ENOBUFS, or the stream's own
 * error. The owner closes then. */
typedef void (*qr_tls_read_cb)(void *data, ssize_t nread);

struct qr_tls_write;
typedef void (*qr_tls_write_cb)(struct qr_tls_write *req, int status);

/* A write, caller-allocated; live until its callback. */
struct qr_tls_write {
    qr_tls_write_cb cb;
    uint8_t *held; /* private: plaintext kept until the handshake */
    size_t held_len;
    struct qr_tls_write *next;
};

struct qr_tls_stream;
typedef void (*qr_tls_close_cb)(struct qr_tls_stream *t);

/* Caller-allocated; fields private but for errmsg and data. */
struct qr_tls_stream {
    uv_stream_t *stream; /* borrowed: the owner's */
    SSL *ssl;            /* owned */
    BIO *in, *out;       /* owned by ssl: ciphertext read, to be written */
    uv_timer_t timer;    /* the handshake deadline, then plaintext drains */
    uint64_t handshake_timeout_ms;
    qr_tls_alloc_cb alloc_cb;
    qr_tls_read_cb read_cb;
    void *data;                   /* the owner's, for the callbacks */
    void (*ready_cb)(void *data); /* qr_tls_stream_on_ready */
    struct qr_tls_write *held_head, *held_tail; /* before the handshake */
    uint8_t *room;                              /* ciphertext read buffer */
    size_t n_writes;                            /* uv writes in flight */
    bool server;
    bool handshaken;
    bool failed;
    bool reading;
    bool closing;
    bool reported; /* the failure was told to read_cb */
    int status;    /* why it failed (a UV_* code) */
    qr_tls_close_cb close_cb;
    char errmsg[256];
};

/* Joins t to stream (borrowed; connected or accepted already) with a new
 * SSL of ctx (which must outlive t). server picks the role; a client
 * checks the server's certificate for expect_host (qr_tls_client_expect;
 * NULL: no name check) and starts the handshake at once. data is handed to
 * the callbacks. Returns 0, or -1 with errmsg set and nothing to close. */
int qr_tls_stream_init(struct qr_tls_stream *t,
                       uv_loop_t *loop,
                       uv_stream_t *stream,
                       SSL_CTX *ctx,
                       bool server,
                       const char *expect_host,
                       uint64_t handshake_timeout_ms,
                       qr_tls_alloc_cb alloc_cb,
                       qr_tls_read_cb read_cb,
                       void *data);

/* Room for the owner's next read of ciphertext (its uv_alloc_cb). */
void qr_tls_stream_room(struct qr_tls_stream *t, uv_buf_t *buf);

/* The owner read nread bytes of ciphertext into the room (its uv_read_cb's
 * nread; <0 is passed on to read_cb). Drives the handshake, answers the
 * peer and hands plaintext over while reading. */
void qr_tls_stream_feed(struct qr_tls_stream *t, ssize_t nread);

/* Starts and stops handing plaintext over; what is already decrypted is
 * handed over from the loop, not inside read_start. */
void qr_tls_stream_read_start(struct qr_tls_stream *t);
void qr_tls_stream_read_stop(struct qr_tls_stream *t);

/* Encrypts n buffers (borrowed for the call only) and writes them; before
 * the handshake they are copied and wait. Returns 0: req->cb fires once,
 * from the loop, when the ciphertext is written (or with an error). Else
 * (the stream failed or is closing: UV_ECANCELED; -ENOMEM) it never
 * fires. */
int qr_tls_stream_write(struct qr_tls_stream *t,
                        struct qr_tls_write *req,
                        const uv_buf_t *bufs,
                        unsigned n,
                        qr_tls_write_cb cb);

/* cb (NULL: none) is told once, with t->data, when the handshake has
 * finished (from qr_tls_stream_feed, after the held writes went out). */
void qr_tls_stream_on_ready(struct qr_tls_stream *t, void (*cb)(void *data));

/* True once the handshake has finished. */
bool qr_tls_stream_ready(const struct qr_tls_stream *t);

/* Says goodbye (close_notify, when the handshake finished and nothing
 * failed; written without waiting), fails waiting writes with UV_ECANCELED
 * and frees the SSL; cb fires from the loop once t's own handle has
 * closed. The owner closes its stream itself, after this call; t must
 * stay allocated until both cb and the stream's write callbacks have run
 * (i.e. until the stream's own close callback). Safe to call twice. */
void qr_tls_stream_close(struct qr_tls_stream *t, qr_tls_close_cb cb);

#endif /* QR_TLS_STREAM_H */
