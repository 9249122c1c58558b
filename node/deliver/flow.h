/* Flow control on the key's owner (docs/architecture.md, "Flow control"):
 * what a key's limits are, and the counts that hold them.
 *
 * A flow-controlled message is sharded by its key (repl/apply_flow.c), so
 * one node at a time sends all of a key's messages and holds its counts
 * here, in memory: the deliveries awaiting a response (parallelism) and
 * the starts in the current rate period (rate). The waitlist itself is in
 * the store (`fcdue`): a key's backlog costs no memory.
 *
 * Times (now_ms, a period's start) are this node's monotonic clock: the
 * counts are its alone, and the scan's time (the leader's frame) can lag
 * and then jump, which would end a period early. rate_reset_ms and
 * assigned_ms are the leader's frame, compared only with each other.
 *
 * Invariants:
 * - A key's state exists while a delivery of it is sending or its rate
 *   period runs; qr_flow_sweep frees the rest.
 * - sending counts every delivery of the key this node started and whose
 *   engine callback has not fired (a queued one too): the worker calls
 *   qr_flow_started before a send and qr_flow_finished exactly once after.
 * - Limits are re-read from the replicated record at every scan: a pin,
 *   pause or resetRate takes effect at the next scan of the owner.
 * - A new owner: the node that owned a key's shard before (or this node
 *   before a restart) may have started up to the rate in the period still
 *   running, and its counts are gone. So a key first seen less than one
 *   period (of at most QR_FLOW_ADOPT_MAX_PERIOD_MS) after its shard came
 *   to this node starts as if that period had begun when the shard came
 *   and were used up: the rate is never exceeded across a move, at the
 *   cost of up to one period's delay. Longer periods start afresh (up to
 *   twice the rate in the period of a move). Parallelism needs no such
 *   care: the previous owner's deliveries ended with its lease. */
#ifndef QR_FLOW_H
#define QR_FLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qraft.pb-c.h"
#include "store/store.h"

/* What holds a key now: parallelism and rate per period (0: no limit). */
struct qr_flow_limits {
    uint32_t parallelism;
    uint32_t rate;
    uint64_t period_ms;
    bool paused;
};

/* The key's limits from its record: a pinned value wins over the highest
 * its messages carry. */
void qr_flow_limits_of(const Qraft__FlowControlKey *k,
                       struct qr_flow_limits *out);

struct qr_flow_key {
    struct qr_flow_key *next; /* bucket chain */
    uint32_t sending;
    uint64_t period_start_ms; /* 0: no period running */
    uint64_t period_ms;       /* of the running period */
    uint32_t period_count;    /* starts in it */
    uint64_t seen_reset_ms;   /* the record's rate_reset_ms acted on */
    char key[QR_STORE_MAX_FLOW_KEY_BYTES + 1];
};

#define QR_FLOW_BUCKETS 1024u

struct qr_flow_table {
    struct qr_flow_key *buckets[QR_FLOW_BUCKETS];
    size_t n_keys;
};

/* The state of key (NULL when it has none; with create, NULL only when out
 * of memory or the key is too long). */
struct qr_flow_key *qr_flow_find(struct qr_flow_table *t,
                                 const char *key,
                                 bool create);

/* How many deliveries of k may start at now_ms under lim (with the
 * record's rate_reset_ms acted on first). When the rate is what holds it,
 * *retry_ms is when its period ends; otherwise it is left alone. */
uint32_t qr_flow_capacity(struct qr_flow_key *k,
                          const struct qr_flow_limits *lim,
                          uint64_t rate_reset_ms,
                          uint64_t now_ms,
                          uint64_t *retry_ms);

#define QR_FLOW_ADOPT_MAX_PERIOD_MS 10000u

/* Sets up k, a key this node has no counts for, whose shard it was given
 * at assigned_ms (the leader's frame, as rate_reset_ms) = assigned_mono_ms
 * (this node's monotonic clock, as the periods; invariant "A new owner"). */
void qr_flow_adopt(struct qr_flow_key *k,
                   const struct qr_flow_limits *lim,
                   uint64_t rate_reset_ms,
                   uint64_t assigned_ms,
                   uint64_t assigned_mono_ms,
                   uint64_t now_mono_ms);

/* A delivery of k started (counts toward both limits), or its engine
 * callback fired. */
void qr_flow_started(struct qr_flow_key *k,
                     const struct qr_flow_limits *lim,
                     uint64_t now_ms);
void qr_flow_finished(struct qr_flow_key *k);

/* The starts counted in k's rate period at now_ms (0 once it ended or a
 * newer reset than k saw happened), and when the period started (0:
 * none). */
uint32_t qr_flow_rate_count(const struct qr_flow_key *k,
                            uint64_t rate_reset_ms,
                            uint64_t now_ms,
                            uint64_t *period_start_ms);

/* Frees the states that hold nothing at now_ms; all of them with all. */
void qr_flow_sweep(struct qr_flow_table *t, uint64_t now_ms, bool all);

#endif
