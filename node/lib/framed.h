/* A framed stream reader: the growable buffer a connection reads into, cut
 * into whole frames in the format proto/frame.h owns (a 4-byte big-endian
 * length, then the payload). Used by the RPC server's connections and by
 * the peer client.
 *
 * Invariants: the buffer grows to hold a whole frame only once its
 * announced length is within max_payload (a peer cannot make us reserve
 * memory by announcing a huge frame); a payload handed out by
 * qr_framed_next stays valid until qr_framed_compact or qr_framed_free. */
#ifndef QR_FRAMED_H
#define QR_FRAMED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "frame.h"

struct qr_tls_stream;

struct qr_framed {
    uint8_t *buf; /* owned */
    size_t len;   /* bytes read into buf */
    size_t cap;
    size_t offset; /* bytes of whole frames handed out since the compact */
    size_t max_payload;
};

/* An empty reader; nothing is allocated until the first read. */
void qr_framed_init(struct qr_framed *f, size_t max_payload);

/* Frees the buffer. Safe to call twice. */
void qr_framed_free(struct qr_framed *f);

/* Room for the next read (a uv_alloc_cb): returns where to read and sets
 * *room, growing the buffer to hold the frame being read; NULL (and *room
 * 0) when out of memory. */
uint8_t *qr_framed_room(struct qr_framed *f, size_t *room);

/* A stream's uv_alloc_cb for f: the ciphertext room of tls (the TLS
 * stream hands f the plaintext), or, with tls NULL (plaintext), f's room
 * (qr_framed_room; buf->len 0 when out of memory). */
void qr_framed_alloc(struct qr_framed *f,
                     struct qr_tls_stream *tls,
                     uv_buf_t *buf);

/* n bytes were read into the room. */
void qr_framed_filled(struct qr_framed *f, size_t n);

/* The next whole frame: QR_FRAME_READY with *payload (borrowed, see above)
 * and *payload_len; QR_FRAME_NEED_MORE; or QR_FRAME_TOO_LARGE (nothing is
 * consumed: the caller closes the stream). */
enum qr_frame_status qr_framed_next(struct qr_framed *f,
                                    const uint8_t **payload,
                                    size_t *payload_len);

/* Each whole frame's payload (borrowed for the call), in order. */
typedef void (*qr_framed_cb)(void *data,
                             const uint8_t *payload,
                             size_t payload_len);

/* Hands each whole frame to cb until none is left or *stop (a flag cb may
 * set, e.g. its connection closing) is true. Returns QR_FRAME_TOO_LARGE
 * when it stopped at a frame over the limit (the caller closes the
 * stream), else QR_FRAME_NEED_MORE. Compact afterwards. */
enum qr_frame_status qr_framed_drain(struct qr_framed *f,
                                     const bool *stop,
                                     qr_framed_cb cb,
                                     void *data);

/* Drops the frames handed out (their payloads go with them) and gives back
 * the memory a large frame needed once nothing is left. */
void qr_framed_compact(struct qr_framed *f);

#endif /* QR_FRAMED_H */
