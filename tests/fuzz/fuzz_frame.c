/* libFuzzer target: what the RPC listener does with bytes from a socket.
 *
 * The input is a byte stream: it is cut into frames as rpc.c cuts what it
 * reads (qr_frame_parse), and each payload (or, when the input holds no whole
 * frame, the input itself) is decoded as a qraft.Request and put through the
 * checks the RPC face runs before it proposes anything: publish, schedule,
 * queue and URL-group checks, filter support. A publish that passes is packed
 * into a command and framed into an entry that must decode again: what the
 * face accepts, the entry codec carries.
 *
 * Invariants checked: no memory error or undefined behaviour (ASan, UBSan);
 * a READY frame lies inside the input and is header + payload; a decoded
 * request packs to bytes that decode to the same packing; an accepted
 * publish makes an entry that decodes to one Publish command. */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "deliver/retry.h"
#include "frame.h"
#include "fuzz_util.h"
#include "lib/cron.h"
#include "lib/err.h"
#include "lib/pb.h"
#include "ops/filter.h"
#include "qraft.pb-c.h"
#include "repl/check.h"
#include "repl/command.h"

#define NOW_MS 1767225600000ull /* 2026-01-01T00:00:00Z */
/* Small enough that the fuzzer meets QR_FRAME_TOO_LARGE. */
#define MAX_PAYLOAD (64u * 1024u)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct qr_limits limits;

static void check_repack(const Qraft__Request *req)
{
    size_t len = qraft__request__get_packed_size(req);
    uint8_t *buf = malloc(len > 0 ? len : 1);
    FUZZ_CHECK(buf != NULL, "out of memory");
    FUZZ_CHECK(qraft__request__pack(req, buf) == len, "packed size");
    Qraft__Request *again = qraft__request__unpack(NULL, len, buf);
    /* The face dropped the unknown fields (lib/pb.h): what it keeps, it
     * can pack and decode again (forwarded, or copied into a command).
     * F1 in docs/fuzzing.md was a field 0 that did not. */
    FUZZ_CHECK(again != NULL, "a packed request does not decode");
    FUZZ_CHECK(qraft__request__get_packed_size(again) == len,
               "repacking changes the size");
    uint8_t *buf2 = malloc(len > 0 ? len : 1);
    FUZZ_CHECK(buf2 != NULL, "out of memory");
    qraft__request__pack(again, buf2);
    FUZZ_CHECK(memcmp(buf, buf2, len) == 0, "repacking changes the bytes");
    free(buf2);
    qraft__request__free_unpacked(again, NULL);
    free(buf);
}

/* A checked publish becomes a command and an entry that decodes. */
static void check_publish_entry(const Qraft__PublishRequest *p)
{
    char id[QR_ID_BYTES];
    struct qr_packed cmd;
    qr_command_message_id(id, NOW_MS, 1, 7);
    if (qr_command_pack_publish(p, id, &limits, &cmd) != 0) {
        return; /* out of memory only */
    }
    size_t size = qr_command_entry_size(NOW_MS, &cmd, 1);
    FUZZ_CHECK(size % 8 == 0, "entry not padded to 8 bytes");
    uint8_t *entry = malloc(size);
    FUZZ_CHECK(entry != NULL, "out of memory");
    qr_command_entry_write(NOW_MS, &cmd, 1, entry, size);
    Qraft__Entry *e = NULL;
    /* An entry that does not decode stops every replica that applies it
     * (F1 was one). */
    FUZZ_CHECK(qr_command_decode_entry(entry, size, &e) == 0,
               "an accepted publish makes an entry that does not decode");
    FUZZ_CHECK(e->n_commands == 1 &&
                   e->commands[0]->body_case == QRAFT__COMMAND__BODY_PUBLISH,
               "the entry does not hold the publish");
    FUZZ_CHECK(strcmp(e->commands[0]->publish->message_id, id) == 0,
               "the publish lost its id");
    qraft__entry__free_unpacked(e, NULL);
    free(entry);
    free(cmd.data);
}

static void check_filter(const Qraft__MessageFilter *f)
{
    (void)qr_filter_unsupported(f);
    (void)qr_filter_is_empty(f);
    (void)qr_filter_match_time(f, NOW_MS);
}

static void check_request(const uint8_t *payload, size_t len)
{
    char err[256];
    Qraft__Request *req = qraft__request__unpack(NULL, len, payload);
    if (req == NULL) {
        return; /* the face answers BAD_REQUEST */
    }
    qr_pb_drop_unknown(&req->base); /* as the face does (rpc.c) */
    switch (req->body_case) {
        case QRAFT__REQUEST__BODY_PUBLISH:
            if (qr_command_check_publish(req->publish, &limits, NOW_MS, err,
                                         sizeof err) == 0) {
                /* Issue 10 finding 4 and F2: text that is not UTF-8 is
                 * refused at the face. */
                FUZZ_CHECK(fuzz_all_utf8(&req->publish->base),
                           "an accepted publish holds text that is not "
                           "UTF-8 (F2)");
                check_publish_entry(req->publish);
            }
            break;
        case QRAFT__REQUEST__BODY_SCHEDULE_UPSERT: {
            struct qr_cron cron;
            uint64_t first = 0;
            if (qr_command_check_schedule(req->schedule_upsert, &limits, NOW_MS,
                                          &cron, &first, err,
                                          sizeof err) == 0) {
                FUZZ_CHECK(first > NOW_MS, "first slot not after now");
            }
            break;
        }
        case QRAFT__REQUEST__BODY_QUEUE_UPSERT:
            (void)qr_command_check_queue(req->queue_upsert->name,
                                         req->queue_upsert->parallelism,
                                         &limits, err, sizeof err);
            break;
        case QRAFT__REQUEST__BODY_GROUP_CHANGE:
            (void)qr_command_check_group_change(req->group_change, &limits, err,
                                                sizeof err);
            break;
        case QRAFT__REQUEST__BODY_DLQ_LIST:
            check_filter(req->dlq_list->filter);
            break;
        case QRAFT__REQUEST__BODY_DLQ_REPLAY:
            check_filter(req->dlq_replay->filter);
            break;
        case QRAFT__REQUEST__BODY_DLQ_DELETE:
            check_filter(req->dlq_delete->filter);
            break;
        case QRAFT__REQUEST__BODY_CANCEL_MANY:
            check_filter(req->cancel_many->filter);
            break;
        case QRAFT__REQUEST__BODY_EVENTS:
            check_filter(req->events->filter);
            break;
        default:
            break;
    }
    check_repack(req);
    qraft__request__free_unpacked(req, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        struct qr_config cfg;
        qr_config_defaults(&cfg);
        limits = cfg.limits;
        fuzz_quiet_logs();
        ready = 1;
    }
    size_t off = 0;
    unsigned n_frames = 0;
    while (off < size) {
        const uint8_t *payload = NULL;
        size_t payload_len = 0;
        size_t consumed = 0;
        enum qr_frame_status st =
            qr_frame_parse(data + off, size - off, MAX_PAYLOAD, &payload,
                           &payload_len, &consumed);
        if (st != QR_FRAME_READY) {
            break; /* NEED_MORE waits; TOO_LARGE closes the connection */
        }
        FUZZ_CHECK(consumed == QR_FRAME_HEADER_BYTES + payload_len &&
                       consumed <= size - off &&
                       payload == data + off + QR_FRAME_HEADER_BYTES,
                   "frame outside the input");
        check_request(payload, payload_len);
        off += consumed;
        n_frames++;
    }
    if (n_frames == 0) {
        check_request(data, size);
    }
    return 0;
}
