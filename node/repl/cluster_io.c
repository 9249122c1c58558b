/* The cluster's hooks on its raft_io: what raft_start loads, and whether
 * raft's snapshot writes succeed. The wrappers get only the raft_io, which
 * is embedded in struct qr_cluster, so they find their cluster from it.
 *
 * The put watch logs every snapshot write raft reports as failed (the
 * fsm's snapshot_finalize is not told). It cannot see the worst case:
 * libraft 0.22.1 writes a snapshot through a file opened with O_TMPFILE,
 * and on a filesystem without it (NFS, FUSE ones such as tools/powerfs)
 * the write never completes, raft never calls back and never takes another
 * snapshot, so the raft log grows without bound and every restart after a
 * crash replays all of it. The start-up probe warns of that instead. */
#include "repl/cluster_io.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include "lib/logger.h"
#include "repl/cluster.h"

static struct qr_cluster *cluster_of(struct raft_io *io)
{
    return (struct qr_cluster *)((char *)io - offsetof(struct qr_cluster, io));
}

/* raft_start loads the log and the last snapshot, then restores that
 * snapshot: the fsm is told what was loaded first (qr_fsm_starting). */
static int load(struct raft_io *io,
                raft_term *term,
                raft_id *voted_for,
                struct raft_snapshot **snapshot,
                raft_index *start_index,
                struct raft_entry *entries[],
                size_t *n_entries)
{
    struct qr_cluster *c = cluster_of(io);
    int rv = c->io_watch.load(io, term, voted_for, snapshot, start_index,
                              entries, n_entries);
    if (rv == 0) {
        qr_fsm_starting(&c->fsm, *snapshot != NULL ? (*snapshot)->index : 0,
                        *start_index);
    }
    return rv;
}

static void on_put(struct raft_io_snapshot_put *req, int status)
{
    struct qr_cluster *c = req->data; /* set by snapshot_put */
    struct qr_cluster_io *w = &c->io_watch;
    raft_io_snapshot_put_cb cb = w->put_cb;
    if (status != 0) {
        QR_ERROR(
            "cluster",
            "raft could not write the %s at index %" PRIu64
            " to %s: %s (raft error %d)",
            w->put_trailing == 0 ? "snapshot sent by the leader" : "snapshot",
            (uint64_t)w->put_index, c->raft_dir, raft_strerror(status), status);
    }
    w->put_cb = NULL;
    req->data = w->put_data;
    cb(req, status);
}

static int snapshot_put(struct raft_io *io,
                        unsigned trailing,
                        struct raft_io_snapshot_put *req,
                        const struct raft_snapshot *snapshot,
                        raft_io_snapshot_put_cb cb)
{
    struct qr_cluster *c = cluster_of(io);
    struct qr_cluster_io *w = &c->io_watch;
    if (w->put_cb != NULL) { /* a second one at once: not watched */
        return w->snapshot_put(io, trailing, req, snapshot, cb);
    }
    /* raft's callback finds its own data in req->data; ours, the cluster. */
    w->put_cb = cb;
    w->put_data = req->data;
    w->put_index = snapshot->index;
    w->put_trailing = trailing;
    req->data = c;
    int rv = w->snapshot_put(io, trailing, req, snapshot, on_put);
    if (rv != 0) {
        QR_ERROR("cluster",
                 "raft could not start writing a snapshot at index %" PRIu64
                 " to %s: %s (raft error %d)",
                 (uint64_t)snapshot->index, c->raft_dir, raft_strerror(rv), rv);
        w->put_cb = NULL;
        req->data = w->put_data;
    }
    return rv;
}

/* Warns when dir's filesystem has no O_TMPFILE. */
static void probe_tmpfile(const char *dir)
{
    int fd = open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    if (fd >= 0) {
        close(fd);
        return;
    }
    if (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL) {
        QR_WARN("cluster",
                "the filesystem of %s has no O_TMPFILE, which raft 0.22 "
                "writes snapshots with: no snapshot will be kept, the raft "
                "log grows without bound and a restart after a crash "
                "replays all of it (use ext4, xfs or another local "
                "filesystem)",
                dir);
    }
}

void qr_cluster_io_watch(struct qr_cluster *c)
{
    struct qr_cluster_io *w = &c->io_watch;
    memset(w, 0, sizeof *w);
    w->load = c->io.load;
    c->io.load = load;
    w->snapshot_put = c->io.snapshot_put;
    c->io.snapshot_put = snapshot_put;
    probe_tmpfile(c->raft_dir);
}
