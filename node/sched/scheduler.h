/* The leader's firing loop: a timer that wakes at the earliest next slot
 * of any unpaused schedule or deadline of any waiter (and at least every
 * second), and on the serving leader proposes one ScheduleFire per due
 * schedule and one WaitTimeout per waiter whose deadline passed
 * (context.waitForEvent; apply fences it by the deadline, so a timeout
 * proposed twice, or after a notify, changes nothing).
 *
 * Invariants:
 * - Only the serving leader proposes, and it computes every slot with
 *   cron.c from its own time; apply stores what it is given.
 * - A slot fires at most once: apply takes a fire only for a slot at or
 *   after the schedule's stored next slot and after its last fired one, so
 *   a re-proposal, or the same slot proposed by the next leader, changes
 *   nothing.
 * - After downtime (no leader, or the schedule's slots passed while the
 *   cluster was down) a schedule fires once, for the latest slot that has
 *   passed, and then continues from the slot after it: missed slots are
 *   not caught up one by one. */
#ifndef QR_SCHEDULER_H
#define QR_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "repl/cluster.h"
#include "store/store.h"

struct qr_scheduler {
    uv_loop_t *loop;                /* borrowed */
    const struct qr_config *config; /* borrowed */
    struct qr_cluster *cluster;     /* borrowed */
    struct qr_store *store;         /* borrowed */
    uv_timer_t timer;
    unsigned n_inflight; /* fires proposed and not answered yet */
    bool closing;
    uint64_t n_fired;    /* fires proposed by this node */
    uint64_t n_missed;   /* slots skipped after downtime (not caught up) */
    uint64_t n_timeouts; /* wait timeouts proposed by this node */
};

/* Starts the timer; all pointers are borrowed and must outlive the
 * scheduler. Returns 0 or a uv error. */
int qr_scheduler_init(struct qr_scheduler *s,
                      uv_loop_t *loop,
                      const struct qr_config *cfg,
                      struct qr_cluster *cluster,
                      struct qr_store *store);

/* Looks at the schedules at the next loop iteration (e.g. a new leader). */
void qr_scheduler_kick(struct qr_scheduler *s);

/* Stops proposing and closes the timer (the loop finishes closing it).
 * Fires still in flight are answered by the cluster as it closes. Safe to
 * call twice. */
void qr_scheduler_close(struct qr_scheduler *s);

#endif /* QR_SCHEDULER_H */
