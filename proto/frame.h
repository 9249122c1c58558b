/* Frame codec shared by the node and the client library.
 *
 * A frame is a 4-byte big-endian payload length followed by that many bytes
 * (one protobuf Request or Response). The length is checked against the
 * caller's maximum before anything is allocated, so a peer cannot make us
 * reserve memory by announcing a huge frame. */
#ifndef QR_FRAME_H
#define QR_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define QR_FRAME_HEADER_BYTES 4u
/* Default largest payload: a maximal body (1 MiB by default, at most 16 MiB
 * configurable) plus headers and fields. */
#define QR_FRAME_DEFAULT_MAX_BYTES (17u * 1024u * 1024u)

enum qr_frame_status {
    QR_FRAME_NEED_MORE = 0, /* not a whole frame yet */
    QR_FRAME_READY = 1,     /* *payload / *payload_len describe one frame */
    QR_FRAME_TOO_LARGE = -1 /* announced length exceeds max_payload */
};

/* Looks for one whole frame at the start of buf[0..len). On READY,
 * *payload points into buf (borrowed) and *consumed is the number of bytes
 * the frame takes, header included. */
enum qr_frame_status qr_frame_parse(const uint8_t *buf,
                                    size_t len,
                                    size_t max_payload,
                                    const uint8_t **payload,
                                    size_t *payload_len,
                                    size_t *consumed);

/* Writes the 4-byte header for a payload of payload_len bytes. */
void qr_frame_put_header(uint8_t out[QR_FRAME_HEADER_BYTES],
                         uint32_t payload_len);

#endif /* QR_FRAME_H */
