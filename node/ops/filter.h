/* Message filters (proto MessageFilter) and the QStash log states of an
 * event: pure functions, no store, no clock.
 *
 * Invariants: a filter field that is set is never ignored. A field this
 * build cannot evaluate yet (the message has no such data) is refused by
 * qr_filter_check, so a caller answers 400 instead of matching too much;
 * qr_filter_match treats such a field as "no message matches". An empty
 * filter matches every message. */
#ifndef QR_FILTER_H
#define QR_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qraft.pb-c.h"

/* Most entries one event gives in the logs (ACTIVE, ERROR, RETRY). */
#define QR_FILTER_MAX_LOG_STATES 3

/* NULL when every field that is set can be evaluated; else the QStash
 * query name of the first one that cannot ("topicName", ...). f may be
 * NULL (no filter). Returns a static string. */
const char *qr_filter_unsupported(const Qraft__MessageFilter *f);

/* True when f (may be NULL) sets no condition at all. */
bool qr_filter_is_empty(const Qraft__MessageFilter *f);

/* Every condition but the time bounds. f may be NULL (matches). */
bool qr_filter_match_fields(const Qraft__MessageFilter *f,
                            const Qraft__Message *m);

/* The time bounds alone (from_ms..to_ms, inclusive; 0 = open). */
bool qr_filter_match_time(const Qraft__MessageFilter *f, uint64_t time_ms);

/* Fields and time; the time of m is its dead-letter time while it is
 * dead-lettered, else its creation time. */
bool qr_filter_match(const Qraft__MessageFilter *f, const Qraft__Message *m);

/* The QStash log states event e stands for, oldest first, into out;
 * returns how many (0: the event has no QStash counterpart, e.g. a DLQ
 * deletion). */
size_t qr_filter_log_states(const Qraft__Event *e,
                            Qraft__LogState out[QR_FILTER_MAX_LOG_STATES]);

/* The QStash name of s ("CREATED", ...; "CANCELLED" for LOG_CANCELLED). */
const char *qr_filter_log_state_name(Qraft__LogState s);

/* Parses a state filter value, case-insensitively: a QStash state,
 * "CANCELED" (= CANCELLED) or "IN_PROGRESS" (= ACTIVE, RETRY and ERROR).
 * Writes up to QR_FILTER_MAX_LOG_STATES states into out and returns how
 * many, or -1 for an unknown name. */
int qr_filter_parse_log_state(const char *name,
                              size_t len,
                              Qraft__LogState out[QR_FILTER_MAX_LOG_STATES]);

#endif /* QR_FILTER_H */
