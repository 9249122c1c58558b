/* The framed stream reader (framed.h). */
#include "lib/framed.h"

#include <stdlib.h>
#include <string.h>

#include "lib/tls_stream.h"

/* Read buffer growth step; a buffer over four of them is given back once
 * it is empty. */
#define READ_CHUNK_BYTES (64u * 1024u)

void qr_framed_init(struct qr_framed *f, size_t max_payload)
{
    memset(f, 0, sizeof *f);
    f->max_payload = max_payload;
}

void qr_framed_free(struct qr_framed *f)
{
    free(f->buf);
    f->buf = NULL;
    f->len = f->cap = f->offset = 0;
}

static size_t announced_bytes(const uint8_t *b)
{
    return ((size_t)b[0] << 24) | ((size_t)b[1] << 16) | ((size_t)b[2] << 8) |
           (size_t)b[3];
}

uint8_t *qr_framed_room(struct qr_framed *f, size_t *room)
{
    if (f->cap - f->len < READ_CHUNK_BYTES) {
        size_t cap = f->cap + READ_CHUNK_BYTES;
        /* Room for the whole frame being read, once its announced length
         * passed the limit (the caller closes the stream otherwise). */
        if (f->len - f->offset >= QR_FRAME_HEADER_BYTES) {
            size_t announced = announced_bytes(f->buf + f->offset);
            size_t want = f->offset + QR_FRAME_HEADER_BYTES + announced;
            if (announced <= f->max_payload && want > cap) {
                cap = want;
            }
        }
        uint8_t *grown = realloc(f->buf, cap);
        if (grown == NULL) {
            *room = 0;
            return NULL;
        }
        f->buf = grown;
        f->cap = cap;
    }
    *room = f->cap - f->len;
    return f->buf + f->len;
}

void qr_framed_alloc(struct qr_framed *f,
                     struct qr_tls_stream *tls,
                     uv_buf_t *buf)
{
    if (tls != NULL) {
        qr_tls_stream_room(tls, buf); /* ciphertext */
        return;
    }
    size_t room = 0;
    buf->base = (char *)qr_framed_room(f, &room);
    buf->len = room;
}

void qr_framed_filled(struct qr_framed *f, size_t n)
{
    f->len += n;
}

enum qr_frame_status qr_framed_next(struct qr_framed *f,
                                    const uint8_t **payload,
                                    size_t *payload_len)
{
    size_t consumed = 0;
    enum qr_frame_status st =
        qr_frame_parse(f->buf + f->offset, f->len - f->offset, f->max_payload,
                       payload, payload_len, &consumed);
    if (st == QR_FRAME_READY) {
        f->offset += consumed;
    }
    return st;
}

enum qr_frame_status qr_framed_drain(struct qr_framed *f,
                                     const bool *stop,
                                     qr_framed_cb cb,
                                     void *data)
{
    while (!*stop) {
        const uint8_t *payload;
        size_t payload_len;
        enum qr_frame_status st = qr_framed_next(f, &payload, &payload_len);
        if (st != QR_FRAME_READY) {
            return st;
        }
        cb(data, payload, payload_len);
    }
    return QR_FRAME_NEED_MORE;
}

void qr_framed_compact(struct qr_framed *f)
{
    if (f->offset > 0) {
        memmove(f->buf, f->buf + f->offset, f->len - f->offset);
        f->len -= f->offset;
        f->offset = 0;
    }
    if (f->len == 0 && f->cap > 4 * READ_CHUNK_BYTES) {
        free(f->buf);
        f->buf = NULL;
        f->cap = 0;
    }
}
