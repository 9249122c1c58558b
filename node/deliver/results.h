/* The delivery-results channel: hands each attempt's outcome to raft,
 * proposed here on the serving leader (a follower's results too, as they
 * arrive over the peer connection), sent to the leader otherwise (one
 * ResultsRequest in flight; results that come meanwhile wait and go
 * together in the next, so a busy follower sends one frame per batch,
 * not one per result); and
 * watches that what it handed over commits (qr_results_stalled), which the
 * lease rule in deliver/shards.h depends on. Owned by struct qr_shards;
 * the rest of the node calls qr_shards_submit_result and
 * qr_shards_propose_results. */
#ifndef QR_RESULTS_H
#define QR_RESULTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "lib/peer.h"
#include "repl/cluster.h"

/* status 0: committed and applied on the leader, and on this replica once
 * its applied index reaches applied_index. */
typedef void (*qr_results_cb)(void *data, int status, uint64_t applied_index);

/* A result this follower handed over did not reach the leader, or the
 * leader did not take it (why says which): the owner ends its lease. */
typedef void (*qr_results_refused_cb)(void *data, const char *why);

struct qr_results {
    const struct qr_config *config; /* borrowed */
    struct qr_cluster *cluster;     /* borrowed */
    struct qr_peer *peer;           /* borrowed: the connection to the leader */
    qr_results_refused_cb refused_cb;
    void *refused_data;
    /* Results handed to raft through this node (both roles): how many
     * are waiting, and when one last committed (or the first was
     * handed over after none waited). */
    size_t n_pending;
    uint64_t progress_mono_ms;
    bool closing; /* answers that fail now no longer call refused_cb */
    /* A follower's: whether a ResultsRequest is out, and the results
     * (owned copies) waiting for its answer to go in the next one. */
    bool sending;
    struct qr_results_queued *queued;
    size_t n_queued;
    size_t cap_queued;
};

/* All pointers borrowed; they must outlive r. Cannot fail. */
void qr_results_init(struct qr_results *r,
                     const struct qr_config *cfg,
                     struct qr_cluster *cluster,
                     struct qr_peer *peer,
                     qr_results_refused_cb refused_cb,
                     void *refused_data);

/* The owner is closing (call before closing the peer connection): results
 * still in flight complete, but their failures no longer end a lease;
 * results still waiting to be sent fail at once (QR_ECANCELED). */
void qr_results_close(struct qr_results *r);

/* True when results handed to raft have waited too long with none
 * committing: the node cannot commit, and holds no lease (shards.h). */
bool qr_results_stalled(const struct qr_results *r, uint64_t now_mono_ms);

/* Proposes a batch of results (this node's, or a follower's on the leader)
 * in one DeliveryResults command. cb fires exactly once when 0 is
 * returned; results are borrowed until this returns. */
int qr_results_propose(struct qr_results *r,
                       Qraft__DeliveryResult **results,
                       size_t n,
                       qr_results_cb cb,
                       void *data);

/* One result: proposed here on the serving leader, sent to the leader
 * otherwise (at once, or with the next batch while one is out: a copy is
 * kept). cb fires exactly once when 0 is returned: status 0 once the
 * result is committed and applied, else it may or may not have been (the
 * caller may submit it again: results are fenced by attempt). On a
 * follower, a failure (returned or reported) calls refused_cb. */
int qr_results_submit(struct qr_results *r,
                      const Qraft__DeliveryResult *result,
                      qr_results_cb cb,
                      void *data);

#endif /* QR_RESULTS_H */
