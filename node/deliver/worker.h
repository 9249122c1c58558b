/* The delivery worker: finds due messages in the shards this node owns,
 * sends each through the delivery engine, and proposes the outcome.
 *
 * Invariants:
 * - A message is in flight from the moment it is due until the result of
 *   that attempt is committed; nothing in the store marks it. The in-flight
 *   table (memory only) keeps this node from sending it twice meanwhile.
 *   After a crash the table is gone and the message is still due, so it is
 *   sent again: at least once, with duplicates only around faults.
 * - Every result carries the attempt number and the generation (replays)
 *   it answers (the fence): apply takes the first committed result for an
 *   attempt and ignores the rest.
 * - Nothing is sent before its time: "now" is the earlier of this node's
 *   clock and the leader's last stamp plus the monotonic time since.
 * - No lease, no new delivery (the lease rule, shards.h): only shards this
 *   node owns are scanned, and only while it holds a lease; the delivery
 *   engine's gate asks the lease again right before each transfer starts,
 *   so one queued behind the per-destination cap does not start once the
 *   lease is gone. Without a lease for HOLD_QUEUED_MS, transfers not
 *   started are cancelled (the messages stay due); running ones finish and
 *   their outcome is reported. When the map gives a shard to another node (or
 * this node is leaving) its transfers are cancelled (the new owner re-sends
 * them). A stopping node drains first (qr_worker_drain), so it gives its
 * shards up with nothing running.
 * - Outcomes go to raft through the leader (qr_shards_submit_result). A
 *   result whose report failed is held in its entry and reported again
 *   once the node holds a lease: a message whose result for attempt k is
 *   unreported is never sent again as attempt k by this node. After
 *   MAX_REPORTS failed reports the result is given up and the message is
 *   sent again once SETTLE_MS passed (its outcome is then unknown).
 *   Started-but-unreported messages are bounded by MAX_INFLIGHT (held
 *   results count).
 * - Flow control (deliver/flow.h): a message waiting in its key's
 *   waitlist starts only while its key's parallelism and rate allow, and
 *   its delivery lives only as long as the lease: once this node holds
 *   none, its flow-controlled transfers are cancelled at once (the next
 *   owner counts from zero, and its lease starts after ours ended).
 * - No destination host takes that bound: once half of MAX_INFLIGHT is in
 *   flight, a due message whose host has MAX_HOST_QUEUED (96) attempts
 *   waiting in the engine already, behind the 32 it runs, is left due for
 *   a later scan (qr_delivery_host_queued), so a host that hangs holds at
 *   most half of the MAX_INFLIGHT attempts (512), and the other hosts
 *   always have the rest. A
 *   scan that has left MAX_DEFERRED_PER_SCAN such messages stops there and
 *   the next one, 10 ms later or at the next result, goes on from that
 *   message round every shard: each load is paid once per round, and every
 *   due message to another host is reached within one round. */
#ifndef QR_WORKER_H
#define QR_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "deliver/delivery.h"
#include "deliver/flow.h"
#include "deliver/shards.h"
#include "deliver/trace.h"
#include "lib/metrics.h"
#include "repl/cluster.h"
#include "store/store.h"

struct qr_worker_inflight;

struct qr_worker_stats {
    uint64_t dispatched;
    uint64_t delivered;
    uint64_t retried;
    uint64_t dead_lettered;
    uint64_t results_dropped; /* given up (MAX_REPORTS failures); the
                                 message is sent again */
    uint64_t results_held;    /* a report failed: held for another */
    uint64_t results_resent;  /* held results reported again */
};

struct qr_worker {
    uv_loop_t *loop;                /* borrowed */
    const struct qr_config *config; /* borrowed */
    struct qr_cluster *cluster;     /* borrowed */
    struct qr_store *store;         /* borrowed */
    struct qr_shards *shards;       /* borrowed */
    struct qr_delivery delivery;
    uv_timer_t timer;
    uint64_t wake_at_ms; /* wall ms the timer is set for; UINT64_MAX: none */
    bool active;         /* dispatching (holds a lease) */
    uint64_t inactive_since_mono_ms; /* when active last changed */
    bool closing;
    unsigned pending_closes;
    void (*close_cb)(struct qr_worker *w);

    /* A clean stop's drain (qr_worker_drain): until drain_cb fired. */
    bool draining;
    uint64_t drain_started_mono_ms;
    uint64_t drain_deadline_mono_ms;
    size_t drain_n_running; /* attempts running when it started */
    void (*drain_cb)(void *data);
    void *drain_data;

    /* In flight, by message id (chained hash table). */
    struct qr_worker_inflight **buckets;
    size_t n_buckets;
    size_t n_inflight;
    size_t n_flow_sending; /* of them, flow-controlled and sending */

    /* Flow control keys this node sends for, with their counts, and since
     * when (leader frame) the map gives each shard to this node (0: it
     * does not). */
    struct qr_flow_table flow;
    uint64_t assigned_since_ms[QR_FSM_N_SHARDS];
    uint64_t assigned_since_mono_ms[QR_FSM_N_SHARDS]; /* the same, monotonic */

    /* The leader's stamp the scans' time counts from, and when
     * (monotonic) we took it (effective_now_ms). */
    uint64_t leader_time_ms;
    uint64_t leader_time_seen_mono_ms;

    /* Monotonic ms of the last WARN about a message that cannot be signed
     * (logged at most once a minute: every scan meets it again). */
    uint64_t unsignable_warn_mono_ms;

    /* Where the next scan starts (the due position of the message where
     * the last one stopped, having left MAX_DEFERRED_PER_SCAN messages for
     * busy hosts), so that every due message gets its turn. */
    bool scan_from_set;
    uint64_t cut_mono_ms; /* when that scan stopped */
    uint32_t scan_from_shard;
    uint64_t scan_from_ms;
    char scan_from_id[QR_ID_BYTES + 64];

    struct qr_worker_stats stats;
    struct qr_metrics *metrics; /* borrowed, may be NULL; set after init */
    /* borrowed, may be NULL (tracing off); set after init: every attempt
     * gets a span and a traceparent header (deliver/trace.h) */
    struct qr_trace *trace;
    char errmsg[QR_ERRMSG_BYTES];
};

/* All pointers are borrowed and must outlive the worker. Registers the
 * fsm's due hook. On failure w->errmsg says why and nothing needs closing. */
int qr_worker_init(struct qr_worker *w,
                   uv_loop_t *loop,
                   const struct qr_config *cfg,
                   struct qr_cluster *cluster,
                   struct qr_store *store,
                   struct qr_shards *shards);

/* A clean stop's first step (the shards are draining, qr_shards_drain:
 * nothing new starts): cancels the transfers not started yet (they never
 * reached their destination; the messages stay due), lets the running ones
 * finish and report, and calls cb once every attempt's result is committed
 * (or given up), or at the deadline, timeout_ms from now, when those still
 * running are cancelled (their messages stay due: the next owner sends
 * them again, at least once). cb fires once, from the loop. */
void qr_worker_drain(struct qr_worker *w,
                     uint64_t timeout_ms,
                     void (*cb)(void *data),
                     void *data);

/* Scans soon: call when ownership may have changed (leadership, leases). */
void qr_worker_kick(struct qr_worker *w);

/* What this node counts for flow control key `key` now: false when it does
 * not own the key's shard (the counts are another node's). rate_reset_ms is
 * the key record's; period_start_ms is on the wall clock (0: no period
 * running), though periods are timed by the monotonic clock. */
struct qr_worker_flow_counts {
    uint32_t sending;
    uint32_t rate_count;
    uint64_t period_start_ms;
};
bool qr_worker_flow_counts(struct qr_worker *w,
                           const char *key,
                           uint64_t rate_reset_ms,
                           struct qr_worker_flow_counts *out);

/* Deliveries this node has awaiting a response, and the most it holds. */
size_t qr_worker_sending(const struct qr_worker *w);
size_t qr_worker_max_inflight(void);

/* Cancels what is in flight (those messages stay due), stops, and closes
 * the delivery engine; cb fires once everything is closed. */
void qr_worker_close(struct qr_worker *w, void (*cb)(struct qr_worker *w));

#endif /* QR_WORKER_H */
