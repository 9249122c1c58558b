/* Snapshot sends: one snapshot in memory for sending, one install in
 * flight.
 *
 * libraft 0.22.1 (its legacy raft_io layer) reads the whole snapshot into
 * memory for every InstallSnapshot it sends, and starts the install over
 * each time the follower, still writing and restoring the snapshot, rejects
 * a heartbeat anchored at the snapshot's index: once per heartbeat for as
 * long as the install runs. With a store of a few hundred MB that is a new
 * copy loaded and queued to the follower every 100 ms; a leader sending a
 * 2.9 GB image (a million pending messages) grew past 20 GB and was killed
 * by the kernel (docs/benchmarks.md, "A million pending").
 *
 * This module sits between raft and its raft_io (snapshot_get and send).
 * While a snapshot is being loaded or sent for real, and for a hold after
 * its send completed (the follower writes and restores it:
 * QR_SNAPSEND_HOLD_MS plus QR_SNAPSEND_HOLD_MS_PER_GIB of snapshot), a
 * snapshot_get is answered with a stand-in: the last real snapshot's
 * metadata and an empty body. A stand-in is never sent: its send fails at
 * once, which raft handles as a lost message (it tries again on a later
 * heartbeat, by then answered by the follower's finished install). A
 * snapshot's body is never empty, so an empty one is always a stand-in. */
#ifndef QR_SNAPSEND_H
#define QR_SNAPSEND_H

#include <raft.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define QR_SNAPSEND_HOLD_MS 2000
#define QR_SNAPSEND_HOLD_MS_PER_GIB 5000

/* A snapshot_get waiting for its stand-in. */
struct qr_snapsend_wait {
    struct raft_io_snapshot_get *req;
    raft_io_snapshot_get_cb cb;
};

struct qr_snapsend {
    struct raft_io *io; /* borrowed: its snapshot_get and send are ours */
    int (*io_get)(struct raft_io *io,
                  struct raft_io_snapshot_get *req,
                  raft_io_snapshot_get_cb cb);
    int (*io_send)(struct raft_io *io,
                   struct raft_io_send *req,
                   const struct raft_message *message,
                   raft_io_send_cb cb);
    uv_timer_t timer; /* answers waiting stand-ins outside raft's calls */
    bool closed;      /* calls go straight to the raft_io */

    /* The real load, then the real send, at most one of each. */
    struct raft_io_snapshot_get *load_req;
    raft_io_snapshot_get_cb load_cb;
    struct raft_io_send *send_req;
    raft_io_send_cb send_cb;
    uint64_t send_to;       /* server id */
    size_t send_bytes;      /* the body's size (sets the hold) */
    uint64_t hold_until_ms; /* monotonic: stand-ins until then */

    /* The last real snapshot's metadata, copied into every stand-in. */
    bool have_meta;
    raft_index index;
    raft_term term;
    struct raft_configuration conf;
    raft_index conf_index;

    struct qr_snapsend_wait *waits;
    size_t n_waits;
    size_t cap_waits;
    uint64_t n_standins; /* stand-ins answered since the last real send */
};

/* Takes over io's snapshot_get and send (call after raft_uv_init, before
 * raft_init). Returns 0 or a libuv error. */
int qr_snapsend_init(struct qr_snapsend *s,
                     uv_loop_t *loop,
                     struct raft_io *io);

/* Answers every waiting stand-in now (call before raft_close, while raft
 * can still take them) and hands later calls straight to the raft_io;
 * close_cb (may be NULL) runs once the timer is closed. */
void qr_snapsend_close(struct qr_snapsend *s, uv_close_cb close_cb);

#endif /* QR_SNAPSEND_H */
