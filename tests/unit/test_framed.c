/* Unit tests of node/lib/framed.c: a stream read in pieces of any size
 * comes out as the same whole frames, the buffer grows to hold a large
 * frame only when its announced length is within the limit, and the
 * memory a large frame needed is given back once it is handled. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "lib/framed.h"

/* Copies n bytes of src into f as one read (the room may be smaller: then
 * as several reads). */
static void feed(struct qr_framed *f, const uint8_t *src, size_t n)
{
    while (n > 0) {
        size_t room = 0;
        uint8_t *at = qr_framed_room(f, &room);
        assert_non_null(at);
        assert_true(room > 0);
        size_t k = n < room ? n : room;
        memcpy(at, src, k);
        qr_framed_filled(f, k);
        src += k;
        n -= k;
    }
}

static size_t put_frame(uint8_t *buf, const uint8_t *payload, size_t n)
{
    qr_frame_put_header(buf, (uint32_t)n);
    memcpy(buf + QR_FRAME_HEADER_BYTES, payload, n);
    return QR_FRAME_HEADER_BYTES + n;
}

static void test_frames_split_anywhere(void **state)
{
    (void)state;
    uint8_t stream[64];
    size_t len = put_frame(stream, (const uint8_t *)"abc", 3);
    len += put_frame(stream + len, (const uint8_t *)"", 0);
    len += put_frame(stream + len, (const uint8_t *)"hello", 5);
    for (size_t step = 1; step <= len; step++) {
        struct qr_framed f;
        qr_framed_init(&f, 16);
        const char *want[] = {"abc", "", "hello"};
        size_t got = 0;
        for (size_t at = 0; at < len; at += step) {
            feed(&f, stream + at, at + step <= len ? step : len - at);
            const uint8_t *payload;
            size_t payload_len;
            while (qr_framed_next(&f, &payload, &payload_len) ==
                   QR_FRAME_READY) {
                assert_true(got < 3);
                assert_int_equal(payload_len, strlen(want[got]));
                assert_memory_equal(payload, want[got], payload_len);
                got++;
            }
            qr_framed_compact(&f);
        }
        assert_int_equal(got, 3);
        assert_int_equal(f.len, 0);
        qr_framed_free(&f);
        qr_framed_free(&f); /* twice is safe */
    }
}

static void test_too_large_is_refused_without_growing(void **state)
{
    (void)state;
    struct qr_framed f;
    qr_framed_init(&f, 1000);
    uint8_t header[QR_FRAME_HEADER_BYTES];
    qr_frame_put_header(header, 10u * 1024u * 1024u);
    feed(&f, header, sizeof header);
    const uint8_t *payload;
    size_t payload_len;
    assert_int_equal(qr_framed_next(&f, &payload, &payload_len),
                     QR_FRAME_TOO_LARGE);
    size_t room = 0;
    assert_non_null(qr_framed_room(&f, &room));
    assert_true(f.cap < 1024u * 1024u);
    qr_framed_free(&f);
}

static void test_large_frame_grows_then_gives_back(void **state)
{
    (void)state;
    size_t n = 1024u * 1024u;
    uint8_t *stream = malloc(QR_FRAME_HEADER_BYTES + n);
    uint8_t *payload_in = calloc(1, n);
    assert_non_null(stream);
    assert_non_null(payload_in);
    payload_in[n - 1] = 7;
    size_t len = put_frame(stream, payload_in, n);
    struct qr_framed f;
    qr_framed_init(&f, 2 * n);
    feed(&f, stream, QR_FRAME_HEADER_BYTES);
    size_t room = 0;
    assert_non_null(qr_framed_room(&f, &room));
    assert_true(room >= n); /* the whole frame fits at once */
    feed(&f, stream + QR_FRAME_HEADER_BYTES, len - QR_FRAME_HEADER_BYTES);
    const uint8_t *payload;
    size_t payload_len;
    assert_int_equal(qr_framed_next(&f, &payload, &payload_len),
                     QR_FRAME_READY);
    assert_int_equal(payload_len, n);
    assert_int_equal(payload[n - 1], 7);
    qr_framed_compact(&f);
    assert_null(f.buf);
    assert_int_equal(f.cap, 0);
    qr_framed_free(&f);
    free(stream);
    free(payload_in);
}

struct drained {
    size_t n;
    bool stop_after_first;
    bool stop;
};

static void on_frame(void *data, const uint8_t *payload, size_t payload_len)
{
    struct drained *d = data;
    (void)payload;
    (void)payload_len;
    d->n++;
    d->stop = d->stop_after_first;
}

static void test_drain_stops_on_flag_and_on_too_large(void **state)
{
    (void)state;
    uint8_t stream[64];
    size_t len = put_frame(stream, (const uint8_t *)"a", 1);
    len += put_frame(stream + len, (const uint8_t *)"b", 1);
    qr_frame_put_header(stream + len, 1000);
    len += QR_FRAME_HEADER_BYTES;

    struct qr_framed f;
    qr_framed_init(&f, 16);
    feed(&f, stream, len);
    struct drained d = {.stop_after_first = true};
    assert_int_equal(qr_framed_drain(&f, &d.stop, on_frame, &d),
                     QR_FRAME_NEED_MORE);
    assert_int_equal(d.n, 1);
    d.stop = d.stop_after_first = false;
    assert_int_equal(qr_framed_drain(&f, &d.stop, on_frame, &d),
                     QR_FRAME_TOO_LARGE);
    assert_int_equal(d.n, 2);
    qr_framed_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frames_split_anywhere),
        cmocka_unit_test(test_too_large_is_refused_without_growing),
        cmocka_unit_test(test_large_frame_grows_then_gives_back),
        cmocka_unit_test(test_drain_stops_on_flag_and_on_too_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
