/* The cluster's own hooks on its raft_io (cluster_io.c), besides the
 * snapshot sends of snapsend.c. */
#ifndef QR_CLUSTER_IO_H
#define QR_CLUSTER_IO_H

#include <raft.h>
#include <stdint.h>

struct qr_cluster;

struct qr_cluster_io {
    /* The raft_io's own calls, which the hooks wrap. */
    int (*load)(struct raft_io *io,
                raft_term *term,
                raft_id *voted_for,
                struct raft_snapshot **snapshot,
                raft_index *start_index,
                struct raft_entry *entries[],
                size_t *n_entries);
    int (*snapshot_put)(struct raft_io *io,
                        unsigned trailing,
                        struct raft_io_snapshot_put *req,
                        const struct raft_snapshot *snapshot,
                        raft_io_snapshot_put_cb cb);
    /* The snapshot put in flight (raft has at most one): raft's callback
     * and what the log line says of it. */
    raft_io_snapshot_put_cb put_cb;
    void *put_data; /* raft's req->data, ours while the put runs */
    raft_index put_index;
    unsigned put_trailing; /* 0: an install sent by the leader */
};

/* Hooks c->io (after raft_uv_init, before raft_init): raft_start's load
 * tells the fsm what it loaded before any restore or replay
 * (qr_fsm_starting), and a snapshot raft fails to write is logged as
 * an error. Also warns when the raft directory's filesystem cannot hold a
 * snapshot at all (no O_TMPFILE, which raft 0.22 writes them with). */
void qr_cluster_io_watch(struct qr_cluster *c);

#endif /* QR_CLUSTER_IO_H */
