/* The replicated state machine: applies committed entries to the store.
 *
 * Apply is deterministic: it reads only the entry and the store, never a
 * clock, randomness or node-local configuration (the leader stamps the time
 * and the defaults into the entry). Each entry is applied in one LMDB write
 * transaction that also records the entry's raft index, and an entry at or
 * below the recorded index is skipped, so replay after a crash never applies
 * twice.
 *
 * Apply is total over the entry's content: a command that fails for what it
 * holds (a key no store can hold, a record that is not there) is refused
 * alike on every replica, leaves nothing behind and the entry goes on (see
 * fsm_apply). Only what is not a property of the entry (an I/O error, a
 * failed store, a corrupt record, an undecodable entry, an unknown command
 * kind) calls the fatal hook (the node exits) rather than let this replica
 * diverge from the others.
 *
 * fsm.c holds the apply loop, the dispatch by command kind and snapshots;
 * each command's apply is in apply_msg.c, apply_queue.c or apply_config.c
 * (what they share: fsm_int.h). */
#ifndef QR_FSM_H
#define QR_FSM_H

#include <raft.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "repl/command.h"
#include "store/store.h"

struct qr_metrics_hist;

/* Number of shards of the retry schedule. Fixed: a message's shard is part of
 * its stored record. */
#define QR_FSM_N_SHARDS 256u

/* Outcome of one command of an applied entry. */
struct qr_apply_result {
    int status; /* 0, QR_ENOTFOUND, QR_ECONFLICT, ... */
    /* A message id, or a schedule's (caller-chosen ones are up to 256
     * bytes). */
    char message_id[QR_ID_BYTES + 260];
    bool deduplicated;
    /* Prune: some kind removed a full batch (max_items), so more of it may
     * be waiting (node/server_tick.c proposes the next one soon). */
    bool more;
    char error[128]; /* human-readable when status != 0 */
};

/* Called once per applied entry, synchronously inside apply, with the
 * outcome of each of its n commands (borrowed for the call). */
typedef void (*qr_fsm_applied_cb)(void *data,
                                  uint64_t index,
                                  const struct qr_apply_result *results,
                                  size_t n);

/* Called once per applied entry that made a message due (a publish, a
 * retry, a replay, a callback), with the earliest next_attempt_ms among
 * them: the worker uses it to wake up in time. */
typedef void (*qr_fsm_due_cb)(void *data, uint64_t earliest_due_ms);

/* Called when apply cannot go on (store failed, entry undecodable). The
 * default logs and exits the process. */
typedef void (*qr_fsm_fatal_cb)(void *data, const char *why);

struct qr_fsm {
    struct raft_fsm raft_fsm; /* handed to raft_init; data points here */
    struct raft *raft;        /* borrowed; set before raft_start */
    struct qr_store *store;   /* borrowed */
    uint64_t applied_index;   /* mirrors meta applied_index */
    uint64_t last_time_ms;    /* proposed_at_ms of the last applied entry */
    uint32_t feature_level;   /* mirrors meta feature_level (see command.h) */
    /* The snapshot raft is writing out (its buffers point into it), closed
     * by snapshot_finalize; NULL otherwise. */
    struct qr_store_snap *snapshot;
    uint64_t n_snapshots;         /* taken since the process started */
    uint64_t last_snapshot_bytes; /* the size of the last one */
    uint64_t last_snapshot_ms;    /* and the time it took to open */
    /* borrowed, may be NULL: each entry's apply time is observed in it */
    struct qr_metrics_hist *apply_seconds;
    /* Snapshot pacing (qr_fsm_pace_snapshots). */
    unsigned snapshot_threshold; /* --snapshot-threshold: at least these */
    unsigned snapshot_log_share; /* --snapshot-log-share, percent */
    uint64_t log_bytes_since_snapshot; /* entries seen since the last one */
    /* Between qr_fsm_starting (with a snapshot) and qr_fsm_started: the index
     * of the snapshot raft_start is about to restore; else 0 (a snapshot's
     * index never is). */
    uint64_t start_snapshot_index;
    bool failed;
    qr_fsm_applied_cb on_applied;
    void *on_applied_data;
    qr_fsm_fatal_cb on_fatal;
    void *on_fatal_data;
    qr_fsm_due_cb on_due;
    void *on_due_data;
};

/* Loads the applied index, last leader time and feature level from the
 * store. */
int qr_fsm_init(struct qr_fsm *f, struct qr_store *store);

/* raft_start has loaded its log, from start_index, and the snapshot at
 * snapshot_index (0: none), which it restores next. Decides what the store
 * starts from (docs/architecture.md, "Storage"):
 * - a store closed cleanly (qr_store_opened_clean) is kept: over a snapshot
 *   it is at or past, the restore keeps it; without a snapshot raft's
 *   replay skips what it has;
 * - any other store is not trusted (written without fsync, it may have
 *   been damaged by a power loss): raft restores the snapshot over it, or,
 *   when there is none, it is emptied (qr_store_clear) and raft replays its
 *   log from start_index, which must then be 1.
 * Emptying that fails is logged, and the store stays as the open left it
 * (FAILED when no file could be opened again: the first apply then stops
 * the node, naming why). */
void qr_fsm_starting(struct qr_fsm *f,
                     uint64_t snapshot_index,
                     uint64_t start_index);

/* raft_start has returned: every later restore is a snapshot the leader
 * sent, always restored. */
void qr_fsm_started(struct qr_fsm *f);
void qr_fsm_close(struct qr_fsm *f);

/* A snapshot is taken when raft has applied at least `threshold` entries
 * since the last one and, once the store's file is past
 * QR_FSM_SNAPSHOT_FREE_BYTES, when those entries add up to `log_share`
 * percent of the file beyond that (0: entries only). An image snapshot
 * writes the whole store; pacing by the log keeps a large store from being
 * written again every `threshold` entries, at the price of a longer log
 * (disk, raft's memory, replay at restart). Sets raft's threshold, before
 * raft_start and after each entry. */
#define QR_FSM_SNAPSHOT_FREE_BYTES (64u * 1024 * 1024)
void qr_fsm_pace_snapshots(struct qr_fsm *f,
                           unsigned threshold,
                           unsigned log_share);

/* The shard of a message id: FNV-1a of the id, modulo QR_FSM_N_SHARDS. */
uint32_t qr_fsm_shard_of(const char *message_id);
/* The shard of a flow control key's messages (feature level 5): FNV-1a of
 * the key, so one owner sends all of a key's messages. */
uint32_t qr_fsm_flow_shard_of(const char *key);

/* Longest URL group or endpoint name apply accepts: a fixed bound (the
 * configured limit is checked by the leader; apply reads no config). */
#define QR_FSM_MAX_GROUP_NAME_BYTES 256u

#define QR_META_LAST_TIME "last_time_ms"
#define QR_META_SHARDS "shards"               /* qraft.AssignShards */
#define QR_META_NODE_PREFIX "node."           /* + decimal id: qraft.NodeInfo */
#define QR_META_FEATURE_LEVEL "feature_level" /* u64; absent = base level */
#define QR_FSM_BASE_FEATURE_LEVEL 1u
#define QR_META_QUEUE_LAST_ID "queue.last_id" /* the last Queue.id given */

#endif /* QR_FSM_H */
