/* libFuzzer target: message filters and log states (node/filter.c).
 *
 * Input: a 2-byte big-endian length L, L bytes of a packed
 * qraft.MessageFilter, and the rest, decoded both as a qraft.Message and as
 * a qraft.Event. The whole input is also parsed as a log state name.
 * Invariants checked: an empty filter matches every message; a filter with
 * a field this build cannot evaluate matches nothing; an event gives at
 * most QR_FILTER_MAX_LOG_STATES states, each with a name; a parsed state
 * name gives 1..QR_FILTER_MAX_LOG_STATES states. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "ops/filter.h"
#include "qraft.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Qraft__LogState states[QR_FILTER_MAX_LOG_STATES];
    int n = qr_filter_parse_log_state((const char *)data, size, states);
    FUZZ_CHECK(n == -1 || (n >= 1 && n <= QR_FILTER_MAX_LOG_STATES),
               "parse_log_state count");
    for (int i = 0; i < n; i++) {
        FUZZ_CHECK(qr_filter_log_state_name(states[i]) != NULL, "state name");
    }
    if (size < 2) {
        return 0;
    }
    size_t flen = ((size_t)data[0] << 8) | data[1];
    if (flen > size - 2) {
        flen = size - 2;
    }
    const uint8_t *rest = data + 2 + flen;
    size_t rest_len = size - 2 - flen;

    Qraft__MessageFilter *f =
        qraft__message_filter__unpack(NULL, flen, data + 2);
    Qraft__Message *m = qraft__message__unpack(NULL, rest_len, rest);
    Qraft__Event *e = qraft__event__unpack(NULL, rest_len, rest);

    const char *unsupported = qr_filter_unsupported(f);
    bool empty = qr_filter_is_empty(f);
    FUZZ_CHECK(!(empty && unsupported != NULL),
               "an empty filter has an unsupported field");
    if (m != NULL) {
        bool fields = qr_filter_match_fields(f, m);
        bool all = qr_filter_match(f, m);
        FUZZ_CHECK(!all || fields, "match without its fields matching");
        if (empty) {
            FUZZ_CHECK(fields && all, "an empty filter refused a message");
        }
        if (unsupported != NULL) {
            FUZZ_CHECK(!all, "an unsupported field matched a message");
        }
    }
    (void)qr_filter_match_time(f, 1767225600000ull);
    if (e != NULL) {
        size_t k = qr_filter_log_states(e, states);
        FUZZ_CHECK(k <= QR_FILTER_MAX_LOG_STATES, "log_states count");
        for (size_t i = 0; i < k; i++) {
            FUZZ_CHECK(qr_filter_log_state_name(states[i]) != NULL,
                       "state name");
        }
        qraft__event__free_unpacked(e, NULL);
    }
    if (m != NULL) {
        qraft__message__free_unpacked(m, NULL);
    }
    if (f != NULL) {
        qraft__message_filter__free_unpacked(f, NULL);
    }
    return 0;
}
