/* Raft glue: the uv I/O on the data dir, a TCP transport with TCP_NODELAY,
 * bootstrap, leadership tracking and the propose queue with group commit.
 *
 * Invariants:
 * - A proposal's callback fires exactly once, and with status 0 only after
 *   its entry was committed and applied (the result is apply's).
 * - Proposals that arrive in the same loop iteration share one raft entry
 *   (one disk write); entries and bytes in flight are capped, and what does
 *   not fit waits in the queue, itself capped (then QR_EUNAVAIL).
 * - Nothing is proposed before the barrier of the current term has applied,
 *   so a new leader serves only once it has applied everything committed.
 * - Entries are stamped with the leader's time, never decreasing. */
#ifndef QR_CLUSTER_H
#define QR_CLUSTER_H

#include <raft.h>
#include <raft/uv.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "lib/err.h"
#include "repl/cluster_io.h"
#include "repl/command.h"
#include "repl/fsm.h"
#include "repl/snapsend.h"
#include "repl/transport.h"
#include "store/store.h"

/* Fires once per proposal. status: 0 (res is apply's outcome, borrowed for
 * the call), QR_ENOTLEADER (never reached raft), QR_EUNAVAIL (refused:
 * overloaded or closing; never reached raft) or QR_EUNKNOWN (may or may not
 * have committed: leadership was lost; retry with the same dedup key). */
typedef void (*qr_cluster_propose_cb)(void *data,
                                      int status,
                                      const struct qr_apply_result *res);

/* Fires when this node has become leader and applied everything committed
 * in earlier terms (the barrier), once per term. */
typedef void (*qr_cluster_leader_cb)(void *data);

/* Fires once when this node finds itself removed from the configuration
 * (it was a member before): the node should shut down. */
typedef void (*qr_cluster_removed_cb)(void *data);

/* Outcome of a membership change or transfer: 0, or QR_E* with a reason. */
typedef void (*qr_cluster_change_cb)(void *data, int status, const char *why);

struct qr_membership; /* one change in progress (membership.c) */

struct qr_cluster;
typedef void (*qr_cluster_close_cb)(struct qr_cluster *c);

struct qr_proposal;
struct qr_batch;
struct qr_applied_wait;

/* Fires once per qr_cluster_wait_applied: status 0 (this node has applied
 * the index), QR_ETIMEOUT (not within the timeout) or QR_ECANCELED
 * (closing). */
typedef void (*qr_cluster_wait_cb)(void *data, int status);

/* Fires once per qr_cluster_read_barrier: status 0 with index, the raft
 * index every entry committed before the barrier was asked for is at or
 * below (this leader has applied it), or QR_ENOTLEADER / QR_EUNAVAIL (no
 * longer leader, or closing: nothing is known) with index 0. */
typedef void (*qr_cluster_read_cb)(void *data, int status, uint64_t index);

struct qr_cluster {
    uv_loop_t *loop;                /* borrowed */
    const struct qr_config *config; /* borrowed */
    struct qr_store *store;         /* borrowed */
    struct qr_fsm fsm;
    struct raft raft;
    struct raft_io io;
    struct qr_snapsend snapsend;   /* between raft and io: snapshot sends */
    struct qr_cluster_io io_watch; /* raft_io hooks: cluster_io.c */
    struct qr_transport transport;
    uv_check_t check; /* per-iteration: leadership poll and flush */
    char raft_dir[PATH_MAX];
    char errmsg[QR_ERRMSG_BYTES];

    /* Leadership. */
    bool leader;  /* raft_state() said leader at the last poll */
    bool serving; /* leader and the term's barrier applied */
    bool barrier_pending;
    struct raft_barrier barrier;
    /* Every later stamp is at least this: the last entry's stamp, or one
     * past a bound handed out (qr_cluster_bound_ms). */
    uint64_t stamp_floor_ms;
    qr_cluster_leader_cb on_leader;
    void *on_leader_data;
    qr_cluster_removed_cb on_removed;
    void *on_removed_data;
    bool was_member; /* seen itself in the configuration */
    bool removed;

    /* Membership: one change at a time. */
    struct qr_membership *change;
    /* An uncommitted configuration seen in raft (repair_config_index):
     * its index as raft records it, the term then, and the log's last
     * index then, which its entry is at or before. */
    uint64_t conf_seen_index;
    uint64_t conf_seen_term;
    uint64_t conf_seen_last;

    /* Message ids. */
    uint64_t last_id_ms;
    uint32_t id_seq;

    /* Group commit. */
    struct qr_proposal *queue_head, *queue_tail;
    size_t queued_bytes;
    struct qr_batch *inflight_head, *inflight_tail;
    size_t inflight_entries;
    size_t inflight_bytes;

    /* The entry whose proposals' callbacks are running, else 0. */
    uint64_t answering_index;

    /* Waits for the applied index (qr_cluster_wait_applied), by index. */
    struct qr_applied_wait *waits;
    uv_timer_t wait_timer; /* armed for the earliest wait deadline */

    /* Read barriers (qr_cluster_read_barrier): one at a time. */
    struct raft_barrier read_barrier;
    bool read_barrier_pending;
    qr_cluster_read_cb read_cb;
    void *read_data;
    uint64_t read_index; /* the commit index when it was asked for */

    /* Commit pushes (qr_cluster_push_commit): one barrier at a time. */
    struct raft_barrier push_barrier;
    uv_timer_t push_timer;
    bool push_wanted;
    bool push_pending;

    /* Counters for status and metrics. */
    uint64_t n_entries_proposed;
    uint64_t n_commands_proposed;
    uint64_t n_leader_changes; /* leaders seen taking over */
    uint64_t last_leader_id;   /* the last one seen, 0: none yet */

    bool started;
    bool closing;
    unsigned pending_closes;
    qr_cluster_close_cb close_cb;
};

/* Sets up raft on cfg's data dir (cfg->data_dir/raft, which must exist:
 * server.c lays the data dir out) over loop, with the fsm
 * on store (borrowed; must outlive the cluster). On failure c->errmsg says
 * why and nothing needs closing. */
int qr_cluster_init(struct qr_cluster *c,
                    uv_loop_t *loop,
                    const struct qr_config *cfg,
                    struct qr_store *store);

/* SIGHUP: the raft transport's TLS contexts from the config's files again
 * (0 without TLS; -1 with err set keeps the ones in use). */
int qr_cluster_reload_tls(struct qr_cluster *c, char *err, size_t err_len);

/* Raft connections refused for their certificate (0 without TLS). */
uint64_t qr_cluster_tls_refused(const struct qr_cluster *c);

/* Bootstraps a new cluster from cfg (--dev: itself; else --peers) unless the
 * data dir has one already, then starts raft. */
int qr_cluster_start(struct qr_cluster *c);

/* Fails queued proposals, closes raft and its I/O; cb fires once everything
 * is closed. Safe to call twice (the second call does nothing). */
void qr_cluster_close(struct qr_cluster *c, qr_cluster_close_cb cb);

/* Takes ownership of cmd->data on success (0: cb will fire once). On error
 * (QR_ENOTLEADER, QR_EUNAVAIL) the caller keeps cmd and cb never fires. */
int qr_cluster_propose(struct qr_cluster *c,
                       struct qr_packed *cmd,
                       qr_cluster_propose_cb cb,
                       void *data);

/* Where an add of node id at raft_addr stands in this node's (the
 * leader's) configuration: QR_ADD_NEW (neither is there), QR_ADD_RESUME
 * (id is there at raft_addr as a spare or a standby: an add that was cut
 * short), QR_ADD_DONE (id is a voter at raft_addr), or QR_ADD_CONFLICT (id
 * is there at another address, or raft_addr is another node's; why says
 * which node holds it and how to free it). */
enum qr_add_state {
    QR_ADD_NEW,
    QR_ADD_RESUME,
    QR_ADD_DONE,
    QR_ADD_CONFLICT,
};
enum qr_add_state qr_cluster_add_state(const struct qr_cluster *c,
                                       uint64_t id,
                                       const char *raft_addr,
                                       char *why,
                                       size_t why_len);

/* A membership change (qr_cluster_change_membership). */
enum qr_membership_kind {
    /* Joins id at raft_addr as a standby, waits for it to catch up, then
     * promotes it to voter; an add of a node already there as a spare or
     * standby at raft_addr (QR_ADD_RESUME) goes on from where it stopped,
     * one already a voter finishes at once. */
    QR_MEMBERSHIP_ADD,
    /* Takes id out (the node shuts itself down when it notices). */
    QR_MEMBERSHIP_REMOVE,
    /* Hands leadership to id (0: the most up-to-date voter). */
    QR_MEMBERSHIP_TRANSFER,
};
struct qr_membership_change {
    enum qr_membership_kind kind;
    uint64_t id;
    const char *raft_addr; /* an add's, borrowed for the call */
};

/* Starts a membership change (change borrowed for the call), on the
 * serving leader; one at a time (QR_ECONFLICT while another runs). cb
 * fires once when 0 is returned. */
int qr_cluster_change_membership(struct qr_cluster *c,
                                 const struct qr_membership_change *change,
                                 qr_cluster_change_cb cb,
                                 void *data);

/* On the leader: true when node id is absent from the configuration and no
 * configuration change is pending (its removal is committed). */
bool qr_cluster_removed(struct qr_cluster *c, uint64_t id);

/* Reports that the leader says this node was removed (see on_removed). */
void qr_cluster_note_removed(struct qr_cluster *c);

/* True when this node is in its own configuration and has not learnt that
 * it was removed: only then may it answer reads from its replica (a node
 * not yet added, or taken out, holds a state that no longer moves). */
bool qr_cluster_is_member(const struct qr_cluster *c);

/* QR_EUNAVAIL, with why in err, when the cluster's feature level is below
 * the one cmd needs (some member runs an older version); else 0. */
int qr_cluster_check_level(const struct qr_cluster *c,
                           const Qraft__Command *cmd,
                           char *err,
                           size_t err_len);

/* Proposes the command of one body (borrowed; see qr_command_init_one):
 * qr_cluster_propose for a command not packed yet. On error (QR_EUNAVAIL
 * too when the feature level is below the command's) nothing is left to
 * free and cb never fires. */
int qr_cluster_propose_one(struct qr_cluster *c,
                           Qraft__Command__BodyCase body_case,
                           const ProtobufCMessage *body,
                           qr_cluster_propose_cb cb,
                           void *data);

/* The highest raft index this node has applied (commands and raft's own
 * entries alike). */
uint64_t qr_cluster_applied(struct qr_cluster *c);

/* The last entry the state machine applied (entries of commands only:
 * raft's barriers and configurations do not count, see
 * qr_cluster_applied). */
uint64_t qr_cluster_fsm_applied(const struct qr_cluster *c);

/* The cluster's feature level (see repl/command.h), as last applied. */
uint32_t qr_cluster_feature_level(const struct qr_cluster *c);

/* The leader's stamp (proposed_at_ms) on the last applied entry: the
 * replicated clock, never behind. */
uint64_t qr_cluster_last_time_ms(const struct qr_cluster *c);

/* Registers the hook apply calls once per entry that made a message due
 * (see qr_fsm_due_cb); fn NULL unregisters. data is borrowed. */
void qr_cluster_set_due_hook(struct qr_cluster *c,
                             qr_fsm_due_cb fn,
                             void *data);

/* What an answer sent now must tell a node that will wait to apply as
 * much: inside a proposal's callback the index of its entry (raft fires
 * them late, when later entries, a commit push's barrier among them, may
 * have applied: a follower would wait for that one's commit too, which it
 * learns only at the next heartbeat); elsewhere qr_cluster_applied. */
uint64_t qr_cluster_answer_index(struct qr_cluster *c);

/* Calls cb once this node has applied index, or after timeout_ms. cb fires
 * from the loop (the check after apply, never inside apply nor inside this
 * call), even when index is applied already. Returns 0 (cb will fire),
 * QR_ECANCELED (closing) or -ENOMEM; cb never fires then. */
int qr_cluster_wait_applied(struct qr_cluster *c,
                            uint64_t index,
                            uint64_t timeout_ms,
                            qr_cluster_wait_cb cb,
                            void *data);

/* On the serving leader: takes the commit index as the read index, then
 * proves it still leads by committing a raft barrier in its term (a
 * majority accepted it, so no other leader committed anything meanwhile),
 * then tells cb the read index: what a linearizable read must wait for
 * (applied here by then). One at a time: QR_ECONFLICT while one is in flight
 * (callers batch their reads on it); QR_ENOTLEADER when not serving.
 * Returns 0 and cb fires once, later. */
int qr_cluster_read_barrier(struct qr_cluster *c,
                            qr_cluster_read_cb cb,
                            void *data);

/* On the leader: makes raft send an append soon (a barrier, at the next
 * loop check; one at a time, shared), so that followers learn the commit
 * index now rather than at the next heartbeat. For answers that a
 * follower holds until it has applied what they report. */
void qr_cluster_push_commit(struct qr_cluster *c);

/* True when this node is the leader and may propose. */
bool qr_cluster_serving(const struct qr_cluster *c);

/* The leader as this node knows it: id 0 when unknown. raft_addr is
 * borrowed until the next loop iteration. */
void qr_cluster_leader(struct qr_cluster *c,
                       uint64_t *id,
                       const char **raft_addr);

/* Leader time for a new proposal's checks: what the next entry will be
 * stamped with at the earliest. */
uint64_t qr_cluster_now_ms(struct qr_cluster *c);

/* A bound for a selection by stamp (a paged bulk operation): the time now,
 * and every entry proposed after this call is stamped later than it, so
 * what the operation's own effects add (a replayed message dead-lettered
 * again at once) is never within the bound. */
uint64_t qr_cluster_bound_ms(struct qr_cluster *c);

/* A new unique, time-ordered message id. */
void qr_cluster_new_message_id(struct qr_cluster *c, char out[QR_ID_BYTES]);

#define QR_CLUSTER_MAX_NODES 32

struct qr_cluster_node {
    uint64_t id;
    const char *role; /* voter, standby, spare (static strings) */
    char raft_addr[QR_ADDR_MAX];
};

struct qr_cluster_status {
    const char *state; /* leader, follower, candidate, unavailable */
    uint64_t leader_id;
    uint64_t term;
    uint64_t commit_index;
    uint64_t applied_index;
    uint64_t last_index;
    uint64_t entries_proposed;  /* by this node as leader, since it started */
    uint64_t commands_proposed; /* in those entries */
    uint64_t snapshots;         /* taken by this node, since it started */
    uint64_t snapshot_bytes;    /* the last one's size */
    uint64_t snapshot_ms;       /* and the time it took */
    uint64_t leader_changes;    /* leaders seen taking over, since start */
    size_t n_nodes;
    struct qr_cluster_node nodes[QR_CLUSTER_MAX_NODES];
};

/* Fills out with what this node knows of the cluster now. */
void qr_cluster_get_status(struct qr_cluster *c, struct qr_cluster_status *out);

/* True when this node has a leader and has applied all it knows committed. */
bool qr_cluster_ready(struct qr_cluster *c, char *why, size_t why_len);

#endif /* QR_CLUSTER_H */
