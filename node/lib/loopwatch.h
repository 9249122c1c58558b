/* The loop watch: how long the loop thread was kept from its timers.
 *
 * Everything that touches raft or LMDB runs on one libuv loop, so a callback
 * that runs long (an apply batch, a store walk, a snapshot restore) delays
 * every other one: heartbeats, publishes, deliveries. A leader whose loop
 * stalls past the election timeout loses its leadership, so the election
 * timeout must stay well above the longest stall (docs/benchmarks.md).
 *
 * A repeating timer fires every QR_LOOPWATCH_PERIOD_MS and notes how late it
 * is. A delay of QR_LOOPWATCH_STALL_MS or more is a stall: it is counted,
 * the longest is kept (in the node's metrics, /metrics and `qraft status`),
 * and the stalls are logged at most once per QR_LOOPWATCH_LOG_MS, with
 * their count and the longest among them. A stall is seen once the loop
 * returns, so one that never ends is not reported. */
#ifndef QR_LOOPWATCH_H
#define QR_LOOPWATCH_H

#include <stdint.h>
#include <uv.h>

#include "lib/metrics.h"

#define QR_LOOPWATCH_PERIOD_MS 10
#define QR_LOOPWATCH_STALL_MS 50
#define QR_LOOPWATCH_LOG_MS 10000

struct qr_loopwatch {
    uv_timer_t timer;
    struct qr_metrics *metrics; /* borrowed; may be NULL */
    uint64_t last_ns;           /* uv_hrtime() of the last firing */
    /* Stalls not logged yet, and the longest of them. */
    uint64_t unlogged;
    uint64_t unlogged_max_ms;
    uint64_t logged_ns; /* when the last log line was written */
};

/* Starts watching loop; stalls are counted into metrics (borrowed, may be
 * NULL). Returns 0 or a libuv error (nothing to close then). */
int qr_loopwatch_start(struct qr_loopwatch *w,
                       uv_loop_t *loop,
                       struct qr_metrics *metrics);

/* Notes one firing at now_ns (uv_hrtime clock); the timer calls it, tests
 * call it with made-up times. */
void qr_loopwatch_note(struct qr_loopwatch *w, uint64_t now_ns);

/* Stops watching; close_cb (may be NULL) runs when the timer is closed. */
void qr_loopwatch_close(struct qr_loopwatch *w, uv_close_cb close_cb);

#endif /* QR_LOOPWATCH_H */
