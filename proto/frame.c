#include "frame.h"

enum qr_frame_status qr_frame_parse(const uint8_t *buf,
                                    size_t len,
                                    size_t max_payload,
                                    const uint8_t **payload,
                                    size_t *payload_len,
                                    size_t *consumed)
{
    if (len < QR_FRAME_HEADER_BYTES) {
        return QR_FRAME_NEED_MORE;
    }
    uint32_t n = ((uint32_t)buf[0] << 24) | ((uint32_t)buf[1] << 16) |
                 ((uint32_t)buf[2] << 8) | (uint32_t)buf[3];
    if (n > max_payload) {
        return QR_FRAME_TOO_LARGE;
    }
    if (len - QR_FRAME_HEADER_BYTES < n) {
        return QR_FRAME_NEED_MORE;
    }
    *payload = buf + QR_FRAME_HEADER_BYTES;
    *payload_len = n;
    *consumed = QR_FRAME_HEADER_BYTES + (size_t)n;
    return QR_FRAME_READY;
}

void qr_frame_put_header(uint8_t out[QR_FRAME_HEADER_BYTES],
                         uint32_t payload_len)
{
    out[0] = (uint8_t)(payload_len >> 24);
    out[1] = (uint8_t)(payload_len >> 16);
    out[2] = (uint8_t)(payload_len >> 8);
    out[3] = (uint8_t)payload_len;
}
