/* Shards and leases: which node delivers which part of the retry schedule.
 *
 * The schedule has QR_FSM_N_SHARDS shards. The leader assigns them to live
 * nodes with an AssignShards command (a growing epoch); a node is live while
 * it renews its lease with a heartbeat to the leader every HEARTBEAT_MS.
 *
 * The lease rule (the same for leader and followers): a node STARTS a
 * delivery only while it holds a lease, that is while it can commit the
 * result. Deliveries already started finish and their results are reported
 * (held and sent again once a lease is back, see worker.h); none is started
 * meanwhile, so the duplicates a fault causes are bounded by what was in
 * flight when it struck.
 * - A follower holds a lease from when it SENT a heartbeat that the serving
 *   leader answered, for the lease the leader granted minus a margin, so it
 *   always ends before the leader can consider it dead (last heartbeat
 *   RECEIVED + lease): a node that cannot renew stops before its shards can
 *   move. Any evidence that the leader cannot take its results ends the
 *   lease at once, before its time: a heartbeat unanswered or refused, a
 *   result that could not be reported. Only a heartbeat sent after that
 *   renews it. A lease also waits until this replica applied the map epoch
 *   the leader answered with.
 * - The leader's lease is raft's: it is leader only while a majority
 *   answered it within an election timeout (libraft steps down otherwise).
 * - Either way, results handed to raft must commit: when some have waited
 *   RESULT_STALL_MS with none committing, the node holds no lease (and a
 *   leader in that state grants none). A node that is not the serving
 *   leader grants none either.
 *
 * Invariants:
 * - A node dispatches a shard only while the applied map says it owns it
 *   AND it holds a lease (qr_shards_owns).
 * - A new leader moves no shard for a lease period after it starts serving:
 *   leases granted by the previous leader may still run.
 * - Assignment is sticky and balanced: a live owner keeps its shards up to
 *   its quota; only the rest move.
 * - A shard leaving a live owner (a node joined or came back; the first map
 *   takes shards from the leader) goes to nobody (owner 0) first: its owner
 *   starts no delivery of it and lets those running finish and report, so
 *   the next owner neither sends them again nor overlaps them (what flow
 *   control's parallelism needs). It reaches its next owner once every old
 *   owner said, in a heartbeat of that map's epoch, that none of its
 *   attempts of such shards runs or waits for its result to commit (the
 *   results are then before the next map in the log, so the next owner
 *   has applied them when it gets the shard); an old owner of an older
 *   version, which does not say, is waited for HANDOVER_MS; none longer
 *   than HANDOVER_MAX_MS (then what still runs is cancelled and sent
 *   again). A shard whose owner died moves at once.
 * - Shards whose owner died are re-sent by their new owner: their messages
 *   are still due in the store (at-least-once; see worker.h).
 * - A stopping node drains first (qr_shards_drain): it starts nothing, keeps
 *   its shards and lease while its running deliveries finish and their
 *   results commit, and only then gives its shards up (qr_shards_leave),
 *   which move at once: a SIGTERM sends nothing twice unless a delivery
 *   outlives the drain deadline (it is cancelled and sent again).
 * - Until the first assignment is applied, the serving leader owns every
 *   shard. */
#ifndef QR_SHARDS_H
#define QR_SHARDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "deliver/results.h"
#include "lib/peer.h"
#include "repl/cluster.h"
#include "repl/fsm.h"
#include "store/admit.h"
#include "store/store.h"

#define QR_SHARDS_SPACE_WHY_BYTES 512

/* What the leader knows of one node from its heartbeats. */
struct qr_shards_node {
    uint64_t id;
    uint64_t last_heartbeat_mono_ms; /* 0: none heard this term */
    uint64_t applied_index;
    char rpc[QR_ADDR_MAX];
    char http[QR_ADDR_MAX];
    /* Its last heartbeat's map epoch (0: an older node that does not say)
     * and whether it still had attempts of shards handed to nobody. */
    uint64_t map_epoch;
    bool handover_busy;
    /* Non-empty: its last heartbeat said it is short of space, and why. */
    char space_short[QR_SHARDS_SPACE_WHY_BYTES];
};

struct qr_shards {
    uv_loop_t *loop;                /* borrowed */
    const struct qr_config *config; /* borrowed */
    struct qr_cluster *cluster;     /* borrowed */
    struct qr_store *store;         /* borrowed */
    /* borrowed, may be NULL; set after init: heartbeats tell the leader
     * when this node is short of space (node/admit.h) */
    struct qr_admit *admit;
    struct qr_peer peer; /* to the leader */
    uv_timer_t timer;

    /* The applied shard map, refreshed every tick. */
    bool have_map;
    uint64_t epoch;
    uint64_t owners[QR_FSM_N_SHARDS];

    /* This node's lease (followers). */
    uint64_t lease_until_mono_ms;
    uint64_t lease_void_mono_ms; /* ended early then: only a heartbeat
                                    sent later renews it */
    uint64_t leader_epoch;       /* the map epoch of the last renewal */
    bool heartbeat_pending;
    uint64_t next_heartbeat_mono_ms;
    char last_leader_rpc[QR_ADDR_MAX]; /* heartbeats go here meanwhile */
    uint32_t probe_next; /* else to the members in turn, from here */
    /* The leader refused the last heartbeat for its token (0: it did
     * not): why, and the WARN's rate limit. */
    uint64_t refused_mono_ms;
    uint64_t refused_warned_mono_ms;
    uint64_t n_refused_since_warned;
    char refused_why[256];

    /* Leader side. */
    bool was_serving;
    uint64_t serving_since_mono_ms;
    struct qr_shards_node nodes[QR_CLUSTER_MAX_NODES];
    size_t n_nodes;
    bool assign_pending;
    /* A hand-over (shards given to nobody): its last epoch, the live
     * nodes that gave shards up, and until when the next owners wait for
     * an old owner that does not report (HANDOVER_MS) or for any
     * (HANDOVER_MAX_MS). */
    uint64_t handover_epoch;
    uint64_t handover_from[QR_CLUSTER_MAX_NODES];
    size_t n_handover_from;
    uint64_t handover_until_mono_ms;
    uint64_t handover_max_mono_ms;
    /* The worker's answer to: are attempts of shards handed to nobody
     * still running or unreported here? (NULL: none). */
    bool (*handover_busy)(void *data);
    void *handover_busy_data;
    bool info_pending;
    bool level_pending; /* a SetFeatureLevel is being proposed */

    /* Results handed to raft through this node (both roles). */
    struct qr_results results;

    bool draining;        /* stopping: starts no delivery, keeps its shards */
    bool leaving;         /* gave its shards up for a clean stop */
    bool leave_as_leader; /* and moves them itself (it leads) */
    void (*leave_cb)(void *data);
    void *leave_data;

    bool closing;
    unsigned pending_closes;
    void (*close_cb)(struct qr_shards *s);
    char errmsg[QR_ERRMSG_BYTES];
};

/* True while the leader refuses this node's heartbeats for their peer
 * token (the last answer said so): why, for /readyz and status. */
bool qr_shards_peer_refused(struct qr_shards *s, char *why, size_t why_size);

/* All pointers borrowed; they must outlive s. On failure s->errmsg says
 * why and nothing needs closing. */
int qr_shards_init(struct qr_shards *s,
                   uv_loop_t *loop,
                   const struct qr_config *cfg,
                   struct qr_cluster *cluster,
                   struct qr_store *store,
                   const char *token);

void qr_shards_close(struct qr_shards *s, void (*cb)(struct qr_shards *s));

/* SIGHUP: the peer connection to the leader reads the TLS files again
 * (lib/peer.h, qr_peer_use_tls), from its next connection on. Returns 0
 * (also without TLS), or QR_EBADREQ with errmsg (QR_ERRMSG_BYTES) saying
 * why, the files loaded before staying in use. */
int qr_shards_reload_tls(struct qr_shards *s, char *errmsg);

/* For a clean stop, first step: this node starts no delivery from now on
 * but keeps its shards and its lease, so the deliveries running finish and
 * their results commit before anyone else may send those messages (the
 * worker's drain, worker.h). */
void qr_shards_drain(struct qr_shards *s);

/* For a clean stop, after the drain: gives up every shard now (this node
 * stops dispatching) and tells the leader, so it reassigns them without
 * waiting for the lease to lapse. A leader moves them itself: cb fires once
 * a map where it owns none is applied (or at once when it cannot: it has
 * led less than a lease, or no other node is live; the next leader moves
 * them then). cb fires once: when the leader answered or moved them, or at
 * once when there is nobody to tell (no leader known). */
void qr_shards_leave(struct qr_shards *s, void (*cb)(void *data), void *data);

/* True when this node may start a delivery of `shard` now: it is assigned
 * the shard and holds a lease. */
bool qr_shards_owns(struct qr_shards *s, uint32_t shard);

/* True when the applied map gives `shard` to this node (or, before the
 * first map, this node is the serving leader), lease or not; false once it
 * is leaving or closing. Deliveries of a shard no longer assigned are
 * cancelled (its new owner sends them). */
bool qr_shards_assigned(struct qr_shards *s, uint32_t shard);

/* True when this node holds a lease (the rule above) and is not draining:
 * it may start deliveries. Cheap: the delivery engine asks before every
 * start. */
bool qr_shards_active(struct qr_shards *s);

/* True when this node holds a lease, draining or not: the results it
 * reports would commit (held ones may be reported again). */
bool qr_shards_leased(struct qr_shards *s);

/* True while the lease itself runs, even when this replica has not yet
 * applied the map its leader last assigned (qr_shards_leased is false
 * then, so nothing starts). What a running delivery needs to go on: while
 * this node's lease runs the leader counts it live, and a shard leaves a
 * live owner only through nobody, once the owner said, under the new map,
 * that none of its deliveries of that shard runs. */
bool qr_shards_lease_runs(struct qr_shards *s);

/* Hands one attempt's outcome to raft (qr_results_submit): proposed here on
 * the leader, sent to the leader otherwise. cb fires exactly once when 0 is
 * returned: status 0 once the result is committed and applied, else it may
 * or may not have been (the caller may submit it again: results are fenced
 * by attempt). On a follower, a failure (returned or reported) ends the
 * lease (see above). */
int qr_shards_submit_result(struct qr_shards *s,
                            const Qraft__DeliveryResult *r,
                            qr_results_cb cb,
                            void *data);

/* Leader side of a heartbeat: records the node and fills the answer. */
void qr_shards_on_heartbeat(struct qr_shards *s,
                            const Qraft__HeartbeatRequest *req,
                            Qraft__HeartbeatResponse *resp);

/* Proposes results a follower sent (leader side); cb as for submit. */
int qr_shards_propose_results(struct qr_shards *s,
                              Qraft__DeliveryResult **results,
                              size_t n,
                              qr_results_cb cb,
                              void *data);

/* False while this node is the serving leader and the cluster's feature
 * level is below what every member advertises (it is about to rise; until
 * then commands of the new level are refused). A fresh --dev node is ready
 * only once its level has risen. True on followers. */
bool qr_shards_level_settled(struct qr_shards *s);

/* What node `id` advertised (replicated): returns new (free with
 * qraft__node_info__free_unpacked(info, NULL)), or NULL when unknown. */
Qraft__NodeInfo *qr_shards_node_info(struct qr_shards *s, uint64_t id);

/* The RPC and HTTP addresses node `id` advertised (replicated), or "" when
 * unknown. out buffers hold QR_ADDR_MAX bytes; either may be NULL. */
void qr_shards_node_addrs(struct qr_shards *s,
                          uint64_t id,
                          char *rpc,
                          char *http);

/* On the serving leader: true when a live node's last heartbeat said it is
 * short of space; why (QR_SHARDS_SPACE_WHY_BYTES + 32 is enough) names the
 * first such node and quotes it. False elsewhere. */
bool qr_shards_space_short(struct qr_shards *s, char *why, size_t why_size);

/* The leader's view of node id (NULL when not the leader or unknown). */
const struct qr_shards_node *qr_shards_node(struct qr_shards *s, uint64_t id);

/* The assignment the leader proposes (pure): live[0..n_live) are node ids
 * in ascending order (1 <= n_live <= QR_CLUSTER_MAX_NODES); current is the
 * applied map or NULL. Each live node's quota is 256 / n_live, the first
 * 256 % n_live of them get one more; a live owner keeps its shards up to
 * its quota, and the rest go, in shard order, to the nodes under quota in
 * id order. */
void qr_shards_balance(const uint64_t *current,
                       const uint64_t *live,
                       size_t n_live,
                       uint64_t out[QR_FSM_N_SHARDS]);

/* The hand-over step (pure), applied to out, qr_shards_balance's map from
 * current: a shard moving away from a live owner goes to nobody (0)
 * instead; one with no owner stays so until handover_over. Returns true
 * when it gave some shard to nobody. */
bool qr_shards_hand_over(const uint64_t *current,
                         const uint64_t *live,
                         size_t n_live,
                         bool handover_over,
                         uint64_t out[QR_FSM_N_SHARDS]);

/* The worker registers how to tell whether attempts of shards handed to
 * nobody still run here or wait for their results to commit (busy NULL:
 * unregister). Heartbeats carry the answer; the leader ends a hand-over
 * when every old owner says no (see the invariants). */
void qr_shards_set_handover_probe(struct qr_shards *s,
                                  bool (*busy)(void *data),
                                  void *data);

/* True when the applied map gives shard to nobody: it is being handed from
 * one node to another (its deliveries running finish). */
bool qr_shards_handing_over(struct qr_shards *s, uint32_t shard);

/* Number of shards node id owns in the applied map (or every shard for the
 * serving leader before the first assignment). */
uint32_t qr_shards_count(struct qr_shards *s, uint64_t id);

#endif /* QR_SHARDS_H */
