#include "lib/loopwatch.h"

#include <inttypes.h>

#include "lib/logger.h"

#define NS_PER_MS UINT64_C(1000000)

static void log_stalls(struct qr_loopwatch *w, uint64_t now_ns)
{
    QR_WARN("loop",
            "the loop stalled %" PRIu64 " time(s) in the last %" PRIu64
            " s, the longest %" PRIu64
            " ms: requests and heartbeats waited that long (a leader loses "
            "its leadership past the election timeout)",
            w->unlogged, (now_ns - w->logged_ns) / (1000 * NS_PER_MS),
            w->unlogged_max_ms);
    w->unlogged = 0;
    w->unlogged_max_ms = 0;
    w->logged_ns = now_ns;
}

void qr_loopwatch_note(struct qr_loopwatch *w, uint64_t now_ns)
{
    uint64_t due_ns = w->last_ns + QR_LOOPWATCH_PERIOD_MS * NS_PER_MS;
    uint64_t late_ms = now_ns > due_ns ? (now_ns - due_ns) / NS_PER_MS : 0;
    w->last_ns = now_ns;
    if (late_ms >= QR_LOOPWATCH_STALL_MS) {
        if (w->metrics != NULL) {
            w->metrics->loop_stalls++;
            if (late_ms > w->metrics->loop_stall_max_ms) {
                w->metrics->loop_stall_max_ms = late_ms;
            }
        }
        w->unlogged++;
        if (late_ms > w->unlogged_max_ms) {
            w->unlogged_max_ms = late_ms;
        }
    }
    if (w->unlogged > 0 &&
        now_ns - w->logged_ns >= QR_LOOPWATCH_LOG_MS * NS_PER_MS) {
        log_stalls(w, now_ns);
    }
}

static void on_timer(uv_timer_t *t)
{
    qr_loopwatch_note(t->data, uv_hrtime());
}

int qr_loopwatch_start(struct qr_loopwatch *w,
                       uv_loop_t *loop,
                       struct qr_metrics *metrics)
{
    int rv = uv_timer_init(loop, &w->timer);
    if (rv != 0) {
        return rv;
    }
    w->timer.data = w;
    w->metrics = metrics;
    w->last_ns = uv_hrtime();
    /* The first stall is logged at once, later ones in batches. */
    w->logged_ns = w->last_ns - QR_LOOPWATCH_LOG_MS * NS_PER_MS;
    w->unlogged = 0;
    w->unlogged_max_ms = 0;
    /* Cannot fail on an initialised timer with a callback. */
    uv_timer_start(&w->timer, on_timer, QR_LOOPWATCH_PERIOD_MS,
                   QR_LOOPWATCH_PERIOD_MS);
    return 0;
}

void qr_loopwatch_close(struct qr_loopwatch *w, uv_close_cb close_cb)
{
    if (w->unlogged > 0) {
        log_stalls(w, uv_hrtime());
    }
    uv_close((uv_handle_t *)&w->timer, close_cb);
}
