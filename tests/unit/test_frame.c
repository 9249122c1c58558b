/* Unit tests of proto/frame.c: what a reader of a byte stream relies on.
 * A frame is reported only once whole, its payload points into the caller's
 * buffer, and an oversized frame is refused from its header alone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "frame.h"

/* Appends one frame (header + payload) at buf[*len] and advances *len. */
static void put_frame(uint8_t *buf, size_t *len, const char *payload)
{
    size_t n = strlen(payload);
    qr_frame_put_header(buf + *len, (uint32_t)n);
    memcpy(buf + *len + QR_FRAME_HEADER_BYTES, payload, n);
    *len += QR_FRAME_HEADER_BYTES + n;
}

static enum qr_frame_status parse(const uint8_t *buf,
                                  size_t len,
                                  size_t max,
                                  const uint8_t **payload,
                                  size_t *payload_len,
                                  size_t *consumed)
{
    return qr_frame_parse(buf, len, max, payload, payload_len, consumed);
}

static void test_need_more_without_whole_header(void **state)
{
    (void)state;
    uint8_t buf[16];
    size_t len = 0;
    put_frame(buf, &len, "abc");
    for (size_t n = 0; n < QR_FRAME_HEADER_BYTES; n++) {
        const uint8_t *payload = NULL;
        size_t payload_len = 0;
        size_t consumed = 0;
        assert_int_equal(parse(buf, n, QR_FRAME_DEFAULT_MAX_BYTES, &payload,
                               &payload_len, &consumed),
                         QR_FRAME_NEED_MORE);
    }
}

static void test_need_more_on_partial_payload(void **state)
{
    (void)state;
    uint8_t buf[32];
    size_t len = 0;
    put_frame(buf, &len, "hello, world");
    for (size_t n = QR_FRAME_HEADER_BYTES; n < len; n++) {
        const uint8_t *payload = NULL;
        size_t payload_len = 0;
        size_t consumed = 0;
        assert_int_equal(parse(buf, n, QR_FRAME_DEFAULT_MAX_BYTES, &payload,
                               &payload_len, &consumed),
                         QR_FRAME_NEED_MORE);
    }
}

static void test_ready_on_exact_frame(void **state)
{
    (void)state;
    uint8_t buf[32];
    size_t len = 0;
    put_frame(buf, &len, "hello");
    const uint8_t *payload = NULL;
    size_t payload_len = 0;
    size_t consumed = 0;
    assert_int_equal(parse(buf, len, QR_FRAME_DEFAULT_MAX_BYTES, &payload,
                           &payload_len, &consumed),
                     QR_FRAME_READY);
    assert_ptr_equal(payload, buf + QR_FRAME_HEADER_BYTES);
    assert_int_equal(payload_len, 5);
    assert_int_equal(consumed, QR_FRAME_HEADER_BYTES + 5);
    assert_memory_equal(payload, "hello", 5);
}

static void test_back_to_back_frames(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t len = 0;
    put_frame(buf, &len, "first");
    put_frame(buf, &len, "the second one");
    /* A partial third frame: only its header and one byte. */
    qr_frame_put_header(buf + len, 10);
    buf[len + QR_FRAME_HEADER_BYTES] = 'x';
    len += QR_FRAME_HEADER_BYTES + 1;

    const uint8_t *payload = NULL;
    size_t payload_len = 0;
    size_t consumed = 0;
    size_t off = 0;
    assert_int_equal(parse(buf + off, len - off, QR_FRAME_DEFAULT_MAX_BYTES,
                           &payload, &payload_len, &consumed),
                     QR_FRAME_READY);
    assert_int_equal(payload_len, 5);
    assert_memory_equal(payload, "first", 5);
    assert_int_equal(consumed, QR_FRAME_HEADER_BYTES + 5);
    off += consumed;

    assert_int_equal(parse(buf + off, len - off, QR_FRAME_DEFAULT_MAX_BYTES,
                           &payload, &payload_len, &consumed),
                     QR_FRAME_READY);
    assert_int_equal(payload_len, 14);
    assert_memory_equal(payload, "the second one", 14);
    assert_ptr_equal(payload, buf + off + QR_FRAME_HEADER_BYTES);
    assert_int_equal(consumed, QR_FRAME_HEADER_BYTES + 14);
    off += consumed;

    assert_int_equal(parse(buf + off, len - off, QR_FRAME_DEFAULT_MAX_BYTES,
                           &payload, &payload_len, &consumed),
                     QR_FRAME_NEED_MORE);
}

static void test_zero_length_payload(void **state)
{
    (void)state;
    uint8_t buf[8];
    size_t len = 0;
    put_frame(buf, &len, "");
    assert_int_equal(len, QR_FRAME_HEADER_BYTES);
    const uint8_t *payload = NULL;
    size_t payload_len = 99;
    size_t consumed = 0;
    assert_int_equal(parse(buf, len, QR_FRAME_DEFAULT_MAX_BYTES, &payload,
                           &payload_len, &consumed),
                     QR_FRAME_READY);
    assert_int_equal(payload_len, 0);
    assert_int_equal(consumed, QR_FRAME_HEADER_BYTES);
}

static void test_too_large_from_header_alone(void **state)
{
    (void)state;
    uint8_t buf[QR_FRAME_HEADER_BYTES];
    const uint8_t *payload = NULL;
    size_t payload_len = 0;
    size_t consumed = 0;

    /* One byte over the limit: refused although no payload has arrived. */
    qr_frame_put_header(buf, 101);
    assert_int_equal(
        parse(buf, sizeof buf, 100, &payload, &payload_len, &consumed),
        QR_FRAME_TOO_LARGE);

    /* Exactly the limit is fine: it just waits for the payload. */
    qr_frame_put_header(buf, 100);
    assert_int_equal(
        parse(buf, sizeof buf, 100, &payload, &payload_len, &consumed),
        QR_FRAME_NEED_MORE);

    qr_frame_put_header(buf, 0xFFFFFFFFu);
    assert_int_equal(parse(buf, sizeof buf, QR_FRAME_DEFAULT_MAX_BYTES,
                           &payload, &payload_len, &consumed),
                     QR_FRAME_TOO_LARGE);

    qr_frame_put_header(buf, QR_FRAME_DEFAULT_MAX_BYTES + 1);
    assert_int_equal(parse(buf, sizeof buf, QR_FRAME_DEFAULT_MAX_BYTES,
                           &payload, &payload_len, &consumed),
                     QR_FRAME_TOO_LARGE);
}

static void test_max_zero_allows_only_empty_frames(void **state)
{
    (void)state;
    uint8_t buf[8] = {0};
    const uint8_t *payload = NULL;
    size_t payload_len = 0;
    size_t consumed = 0;
    qr_frame_put_header(buf, 0);
    assert_int_equal(parse(buf, 4, 0, &payload, &payload_len, &consumed),
                     QR_FRAME_READY);
    qr_frame_put_header(buf, 1);
    assert_int_equal(parse(buf, 5, 0, &payload, &payload_len, &consumed),
                     QR_FRAME_TOO_LARGE);
}

static void test_put_header_round_trip(void **state)
{
    (void)state;
    const uint32_t lengths[] = {
        0,          1,     0x7F,        0x80,
        0xFF,       0x100, 0x12345678u, QR_FRAME_DEFAULT_MAX_BYTES,
        0xFFFFFFFFu};
    for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++) {
        uint8_t hdr[QR_FRAME_HEADER_BYTES];
        qr_frame_put_header(hdr, lengths[i]);
        /* Big-endian on the wire. */
        assert_int_equal(hdr[0], (lengths[i] >> 24) & 0xFF);
        assert_int_equal(hdr[3], lengths[i] & 0xFF);
        /* The parser reads back the same length: with an unlimited max it
         * waits for exactly that many payload bytes. */
        const uint8_t *payload = NULL;
        size_t payload_len = 0;
        size_t consumed = 0;
        enum qr_frame_status st = parse(hdr, sizeof hdr, lengths[i], &payload,
                                        &payload_len, &consumed);
        if (lengths[i] == 0) {
            assert_int_equal(st, QR_FRAME_READY);
        } else {
            assert_int_equal(st, QR_FRAME_NEED_MORE);
            assert_int_equal(parse(hdr, sizeof hdr, lengths[i] - 1, &payload,
                                   &payload_len, &consumed),
                             QR_FRAME_TOO_LARGE);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_need_more_without_whole_header),
        cmocka_unit_test(test_need_more_on_partial_payload),
        cmocka_unit_test(test_ready_on_exact_frame),
        cmocka_unit_test(test_back_to_back_frames),
        cmocka_unit_test(test_zero_length_payload),
        cmocka_unit_test(test_too_large_from_header_alone),
        cmocka_unit_test(test_max_zero_allows_only_empty_frames),
        cmocka_unit_test(test_put_header_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
