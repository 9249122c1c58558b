/* What the delivery worker's two files share, and no one else includes:
 * the in-flight entry (one attempt on its way, keyed by message id) and
 * its table, the scan's clock and wake-up, and the two hand-overs between
 * the rooms:
 *   worker.c          the due scan, dispatch, the in-flight table, the
 *                     drain and hand-overs, the life cycle
 *   worker_outcome.c  an attempt's outcome: the delivery's answer
 *                     classified, its delay chosen, the result proposed
 *                     and reported (held and reported again on failure)
 * The invariants are worker.h's. Everything runs on the loop's thread. */
#ifndef QR_WORKER_INT_H
#define QR_WORKER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "deliver/delivery.h"
#include "deliver/flow.h"
#include "deliver/trace.h"
#include "deliver/worker.h"
#include "repl/command.h"

/* One attempt on its way; keyed by message id. */
struct qr_worker_inflight {
    struct qr_worker_inflight *next; /* bucket chain */
    struct qr_worker *worker;
    char id[QR_ID_BYTES + 64];
    uint32_t attempt;    /* the message's attempts when sent: the fence */
    uint32_t generation; /* and its generation (replays) */
    uint32_t max_retries;
    uint64_t created_ms;
    char *retry_delay; /* the expression, or NULL */
    uint32_t shard;
    struct { /* the message's retry options; zero: unset */
        bool strict;
        uint64_t min_backoff_ms;
        uint64_t max_backoff_ms;
        uint32_t max_doublings;
        uint64_t max_retry_duration_ms;
    } options;
    uint64_t ticket;
    bool sending;     /* the delivery callback has not fired yet */
    size_t host_slot; /* its host's in the metrics (qr_metrics_host_slot) */
    uint64_t sent_us; /* qr_metrics_now_us when sent */
    struct qr_trace_span span; /* with tracing on: the attempt's */
    /* Its flow control key's state while sending (counted there), or
     * NULL: not flow-controlled, or answered. */
    struct qr_flow_key *flow;
    bool proposing; /* the result is on its way through raft */
    /* The packed result, kept until it is reported (NULL once it is, or
     * when it could not be packed). */
    uint8_t *result;
    size_t result_len;
    bool held; /* its report failed: sent again once a lease is back */
    unsigned report_failures;
    /* The result was answered (committed, or its outcome is unknown): the
     * entry stays until this replica shows the attempt counted, so a scan
     * on a follower that has not applied it yet does not send it again;
     * after SETTLE_MS it goes anyway (an unknown outcome that did not
     * commit is then sent again). */
    bool answered;
    uint64_t answered_mono_ms;
    uint64_t wait_index; /* remove once this replica applied this far */
};

/* The in-flight table: a chained hash of w->n_buckets buckets (FNV-1a of
 * the id). Inline: the scan and every result look an id up. */
static inline size_t worker_bucket_of(const struct qr_worker *w, const char *id)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++) {
        h = (h ^ *p) * 16777619u;
    }
    return h % w->n_buckets;
}

static inline struct qr_worker_inflight *worker_inflight_find(
    struct qr_worker *w,
    const char *id)
{
    struct qr_worker_inflight *f = w->buckets[worker_bucket_of(w, id)];
    while (f != NULL && strcmp(f->id, id) != 0) {
        f = f->next;
    }
    return f;
}

/* Unlinks f (when linked) and frees it. */
void worker_inflight_remove(struct qr_worker *w, struct qr_worker_inflight *f);

/* The scans' "now" (worker.h: never ahead of the leader's frame). */
uint64_t worker_now_ms(struct qr_worker *w);

/* Makes sure a scan happens by wall time at_ms. */
void worker_wake_at(struct qr_worker *w, uint64_t at_ms);

/* The delivery engine's answer for f (the data of qr_delivery_send):
 * frees f when nothing was learned, else proposes its result. */
void worker_on_delivered(void *data, const struct qr_delivery_response *resp);

/* Reports the held results again, while this node holds a lease. */
void worker_report_held(struct qr_worker *w);

#endif /* QR_WORKER_INT_H */
