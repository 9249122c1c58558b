/* The node's applied state in LMDB: the only module that includes <lmdb.h>.
 *
 * Invariants kept here, so no caller has to:
 * - `due` holds exactly one key for each message in state PENDING,
 *   DELIVERING or RETRYING, at (shard, next_attempt_ms, id); none otherwise.
 * - `dlq` holds exactly one key for each DEAD_LETTERED message, at
 *   (dead_lettered_ms, id); none otherwise.
 * - `done` holds exactly one key for each DELIVERED or CANCELLED message,
 *   at (done_ms, id), done_ms being the record's updated_ms (the time it
 *   was finished: a finished message's record is not written again); none
 *   otherwise. Retention prunes it oldest first (qr_store_done_prune).
 *   Snapshots do not carry it: restore builds it from msgs.
 * - `fcdue` holds exactly one key for each message in state PENDING,
 *   DELIVERING or RETRYING that waits for its flow control key (flow
 *   waitlist set, a key), at (shard, key, next_attempt_ms, id); `due`
 *   holds none for it. `fckeys` "messages" of a key equals the number of
 *   its flow waitlist messages that are not final (store_flow.c).
 * - `qfifo` holds exactly one key for each QUEUED message, at (queue,
 *   queue_seq, id); none otherwise. (What a Queue record's counters say
 *   about its messages is apply's invariant: see node/repl/fsm.c.)
 * - meta "count.<state>" counters equal the number of messages per state
 *   (QR_STORE_N_STATES of them, QUEUED included).
 * - After any LMDB error in a write transaction the store is FAILED for good:
 *   every later call returns QR_ESTORE and errmsg says what broke. Apply must
 *   not continue on a failed store (the node exits rather than diverge).
 *   One exception: a full map (QR_ENOSPACE) spoils only its transaction,
 *   which the caller must abort; it may then qr_store_grow and try again.
 * - A full disk is an error, never a signal: the environment is written with
 *   pwrite (no MDB_WRITEMAP), so it shows as -ENOSPC from commit (which fails
 *   the store like any I/O error); node/store/admit.c refuses writes
 *   long before.
 * - Every stored value carries a CRC-32C of its key and value, checked on
 *   every read (store.c, "Checksums"). A read that finds a corrupt record
 *   returns QR_ECORRUPT and errmsg names the database and the key:
 *   "store: corrupt record in msgs at key "m_1" (get msgs: checksum
 *   mismatch): run the rebuild-from-peers procedure". What stops:
 *   - in a write transaction (apply) the store FAILS, as for any store
 *     error: the node stops rather than diverge from the replicas whose
 *     copy is sound;
 *   - in a read transaction the store does not fail: the read answers the
 *     error (a REST GET or list: HTTP 500 with that message; a due scan
 *     stops at the record, so it is never delivered), and the store counts
 *     it (qr_store_corrupt_count, qr_store_corrupt_first). The server then
 *     stops the node (exit status 1; /readyz answers 503 with the message
 *     meanwhile, qraft_store_corrupt_records_total counts it), so the
 *     leader moves its shards to replicas whose copy is sound.
 *   The record is never served or delivered as if sound. The fix is
 *   docs/operations.md's rebuild-from-peers procedure.
 * Pointers into LMDB memory never leave node/store/ (every value handed out is
 * a copy the caller frees), with one exception: the buffers of an open snapshot
 * (qr_store_snapshot_open).
 *
 * Named databases and their keys (integers big-endian, so keys sort by
 * number); every value below is preceded by its 4-byte CRC ("empty": the
 * CRC alone), but for meta "format", 8 bytes that every version reads:
 *   meta    name (string)                               -> bytes
 *   msgs    message id (string)                         -> qraft.Message
 *   due     u16 shard | u64 next_attempt_ms | id        -> empty
 *   fcdue   u16 shard | flow key | 0x00 | u64 next_attempt_ms | id -> empty
 *   fckeys  flow control key (string)                   -> qraft.FlowControlKey
 *   dedup   dedup key (string)                          -> qraft.DedupRecord
 *   dedupx  u64 expires_ms | dedup key                  -> empty (expiry index)
 *   dlq     u64 dead_lettered_ms | id                   -> empty
 *   events  u64 time_ms | u64 raft index | u32 n        -> qraft.Event
 *           (n: the event's number among those of its entry)
 *   queues  queue name (string)                         -> qraft.Queue
 *   qfifo   queue name | 0x00 | u64 queue_seq | id      -> empty
 *   schedules schedule id (string)                    -> qraft.Schedule
 *   groups  URL group name (string)                     -> qraft.UrlGroup
 *   done    u64 done_ms | id                            -> empty
 *           (format 3; built from msgs on open of a format 1 or 2 store
 *           and on every restore)
 */
#ifndef QR_STORE_H
#define QR_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qraft.pb-c.h"

struct qr_store;
struct qr_store_txn;

/* Message states, UNSPECIFIED (0) .. QUEUED (7): the size of a counts
 * array. */
#define QR_STORE_N_STATES 8

/* Meta names used by several modules. */
#define QR_META_APPLIED_INDEX "applied_index"
#define QR_META_FORMAT "format"
#define QR_META_SIGNING_KEYS "keys"

/* Default map size, when the caller names none: address space only (the
 * store writes with pwrite, never through the map, so the file grows only
 * as pages are used and the map is no allocation). qraftd sizes the map
 * from the disk instead (node/store/admit.h). */
#define QR_STORE_DEFAULT_MAP_BYTES (8ull * 1024 * 1024 * 1024)

/* The least qr_store_grow adds when asked for one step. */
#define QR_STORE_GROW_MIN_BYTES (64ull * 1024 * 1024)

/* Opens (creating if needed) the environment in directory `dir`, which must
 * exist. Returns new in *out; free with qr_store_close. On failure *out is
 * NULL and errmsg (QR_ERRMSG_BYTES, may be NULL) says why. */
int qr_store_open(const char *dir,
                  uint64_t map_bytes,
                  struct qr_store **out,
                  char *errmsg);

/* Flushes and closes. Safe on NULL. Every transaction must be finished. */
void qr_store_close(struct qr_store *s);

/* Forces the environment to disk (the store runs with MDB_NOSYNC: raft's log
 * and snapshots are the durable record; see docs/architecture.md). */
int qr_store_sync(struct qr_store *s);

/* True when the environment was opened exactly as a clean close left it:
 * qr_store_close synced it and left a mark naming its last transaction,
 * and qr_store_open found that mark and that transaction. Its content is
 * then as durable as raft's log, so the node may keep it rather than
 * restore its last snapshot (docs/architecture.md, "Storage"). False after
 * a crash, a power loss, a failed or corrupt store, or a store last written
 * by a binary that does not leave the mark. */
bool qr_store_opened_clean(const struct qr_store *s);

/* Replaces the environment with an empty one (a new file, as a new store):
 * for a start that cannot trust the file and has no snapshot to restore
 * (raft replays its whole log). Nothing may be open (else QR_ECONFLICT).
 * A failure to open the new file fails the store. */
int qr_store_clear(struct qr_store *s);

/* How much room the environment takes and has (bytes). */
struct qr_store_space {
    uint64_t page_bytes;
    uint64_t map_bytes;      /* the map's size: the most the file may reach */
    uint64_t file_bytes;     /* pages up to the last one used: the file's
                                high-water mark (it never shrinks) */
    uint64_t reusable_bytes; /* pages in the free list, inside file_bytes:
                                reused before the file grows */
};

/* Fills *out from the environment's info (cheap: no transaction), and
 * reusable_bytes too when count_free (a read transaction over LMDB's free
 * list, a few ms for a large store: call it on a timer, not per request;
 * without count_free *out's reusable_bytes is left as it was). */
int qr_store_space(struct qr_store *s,
                   bool count_free,
                   struct qr_store_space *out);

/* Resizes the map to map_bytes (0: one step, half again its size and at
 * least QR_STORE_GROW_MIN_BYTES); never shrinks it. Legal only while no
 * transaction and no snapshot is open (LMDB unmaps and maps again, which
 * would leave their pointers dangling): returns QR_EUNAVAIL, changing
 * nothing, when one is. The safe points are on the loop between callbacks:
 * node/store/admit.c's tick grows the map ahead of need, and apply, after a
 * QR_ENOSPACE, aborts its transaction, grows and retries the entry. */
int qr_store_grow(struct qr_store *s, uint64_t map_bytes);

/* Last error context, e.g. "store: put msgs: MDB_MAP_FULL". Borrowed. */
const char *qr_store_errmsg(const struct qr_store *s);
bool qr_store_failed(const struct qr_store *s);

/* Corrupt records met by reads since open (each read that met one counts,
 * so a record read twice counts twice), and the errmsg of the first one,
 * borrowed, or NULL when there was none. Any thread. */
uint64_t qr_store_corrupt_count(const struct qr_store *s);
const char *qr_store_corrupt_first(const struct qr_store *s);

/* Transactions. One write transaction at a time (apply is single-threaded);
 * read transactions may be open alongside it. Returns new in *out: finish with
 * qr_store_txn_commit (write) or qr_store_txn_abort (either kind). */
int qr_store_txn_begin(struct qr_store *s,
                       bool write,
                       struct qr_store_txn **out);
int qr_store_txn_commit(struct qr_store_txn *t);
void qr_store_txn_abort(struct qr_store_txn *t);

/* meta */
int qr_store_meta_get_u64(struct qr_store_txn *t,
                          const char *name,
                          uint64_t *value); /* QR_ENOTFOUND if absent */
int qr_store_meta_put_u64(struct qr_store_txn *t,
                          const char *name,
                          uint64_t value);
/* Returns new in *value (free with free()); QR_ENOTFOUND if absent. */
int qr_store_meta_get(struct qr_store_txn *t,
                      const char *name,
                      void **value,
                      size_t *len);
int qr_store_meta_put(struct qr_store_txn *t,
                      const char *name,
                      const void *value,
                      size_t len);

/* meta values that are packed protobufs (keys, the shard map, node infos).
 * get returns new in *out (free with protobuf_c_message_free_unpacked(*out,
 * NULL)), QR_ENOTFOUND if absent, QR_ECORRUPT if it does not decode as
 * desc. */
int qr_store_meta_get_msg(struct qr_store_txn *t,
                          const char *name,
                          const ProtobufCMessageDescriptor *desc,
                          ProtobufCMessage **out);
int qr_store_meta_put_msg(struct qr_store_txn *t,
                          const char *name,
                          const ProtobufCMessage *msg);

/* msgs. get returns new in *out (free with qraft__message__free_unpacked(m,
 * NULL)) or QR_ENOTFOUND. put inserts or replaces and keeps the indexes
 * (`due`, `dlq`, `qfifo`, `done`) and the counters in step with the old and
 * new record. */
int qr_store_msg_get(struct qr_store_txn *t,
                     const char *id,
                     Qraft__Message **out);
int qr_store_msg_put(struct qr_store_txn *t, const Qraft__Message *m);
int qr_store_msg_delete(struct qr_store_txn *t, const char *id);

/* Called for each message visited; m is borrowed for the call only. Return
 * nonzero to stop early (that value is returned by the iterator). */
typedef int (*qr_store_msg_cb)(void *arg, const Qraft__Message *m);

/* Visits messages in id order (= creation order) starting strictly after
 * `after_id` (NULL or "" = from the start), only those in `state` unless it
 * is QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED, at most `limit` of them. */
int qr_store_msg_list(struct qr_store_txn *t,
                      Qraft__MessageState state,
                      const char *after_id,
                      size_t limit,
                      qr_store_msg_cb cb,
                      void *arg);

/* Visits messages of `shard` whose next_attempt_ms <= until_ms, in due
 * order, at most `limit`. */
int qr_store_due_scan(struct qr_store_txn *t,
                      uint32_t shard,
                      uint64_t until_ms,
                      size_t limit,
                      qr_store_msg_cb cb,
                      void *arg);

/* What a due scan visits (qr_store_due_scan_skipping, _from, and
 * qr_store_flow_due_scan): the messages due at or before until_ms, at most
 * limit, each handed to cb with arg; skip(arg, id) (may be NULL) is asked
 * first, from the index alone: a message it says to skip is not loaded
 * (nor counted against limit). id is borrowed for the call. */
typedef bool (*qr_store_due_skip_cb)(void *arg, const char *id);
struct qr_store_due_visit {
    uint64_t until_ms;
    size_t limit;
    qr_store_due_skip_cb skip;
    qr_store_msg_cb cb;
    void *arg;
};

/* Like qr_store_due_scan, visiting as v (borrowed for the call) says. */
int qr_store_due_scan_skipping(struct qr_store_txn *t,
                               uint32_t shard,
                               const struct qr_store_due_visit *v);

/* Like qr_store_due_scan_skipping, from the due position (from_ms,
 * from_id) on, that message included: where an earlier walk stopped.
 * from_id NULL or "": from the first message due at from_ms. */
int qr_store_due_scan_from(struct qr_store_txn *t,
                           uint32_t shard,
                           uint64_t from_ms,
                           const char *from_id,
                           const struct qr_store_due_visit *v);

/* The earliest next_attempt_ms in `shard` that is > after_ms, in *next_ms;
 * QR_ENOTFOUND when there is none. */
int qr_store_due_next(struct qr_store_txn *t,
                      uint32_t shard,
                      uint64_t after_ms,
                      uint64_t *next_ms);

/* Visits DEAD_LETTERED messages oldest first, after the cursor message id
 * (NULL or "" = from the start), at most `limit`. */
int qr_store_dlq_list(struct qr_store_txn *t,
                      const char *after_id,
                      size_t limit,
                      qr_store_msg_cb cb,
                      void *arg);

/* Like qr_store_dlq_list, from a position instead of a message: the dead
 * letters strictly after (after_ms, after_id) in DLQ order (after_id NULL
 * or "": from the oldest). The position stays valid when that message has
 * left the DLQ (the cursor of paged DLQ deletes and replays). */
int qr_store_dlq_list_at(struct qr_store_txn *t,
                         uint64_t after_ms,
                         const char *after_id,
                         size_t limit,
                         qr_store_msg_cb cb,
                         void *arg);

/* Visits DELIVERED and CANCELLED messages oldest first (by done_ms, the
 * `done` index), at most `limit`. */
int qr_store_done_list(struct qr_store_txn *t,
                       size_t limit,
                       qr_store_msg_cb cb,
                       void *arg);

/* Deletes the finished (DELIVERED or CANCELLED) messages whose done_ms is
 * before before_ms, oldest first, at most max of them, and sets *n_pruned:
 * O(what it deletes), from the `done` index, however many messages are
 * pending. The same store gives the same result on every replica. */
int qr_store_done_prune(struct qr_store_txn *t,
                        uint64_t before_ms,
                        size_t max,
                        size_t *n_pruned);

/* Number of messages in each state, counts[state] for state 0..7. */
int qr_store_count_states(struct qr_store_txn *t,
                          uint64_t counts[QR_STORE_N_STATES]);

/* queues. get returns new in *out (free with qraft__queue__free_unpacked(q,
 * NULL)) or QR_ENOTFOUND. put inserts or replaces; delete of an absent name
 * is not an error. Neither touches the queue's messages: `qfifo` follows
 * the messages themselves (qr_store_msg_put). */
int qr_store_queue_get(struct qr_store_txn *t,
                       const char *name,
                       Qraft__Queue **out);
int qr_store_queue_put(struct qr_store_txn *t, const Qraft__Queue *q);
int qr_store_queue_delete(struct qr_store_txn *t, const char *name);

/* Visits queues in name order after after_name (NULL or "" = from the
 * start), at most limit; q is borrowed for the call. Nonzero from cb stops
 * the walk and is returned. */
typedef int (*qr_store_queue_cb)(void *arg, const Qraft__Queue *q);
int qr_store_queue_list(struct qr_store_txn *t,
                        const char *after_name,
                        size_t limit,
                        qr_store_queue_cb cb,
                        void *arg);

/* The number of queues, in *n. */
int qr_store_queue_count(struct qr_store_txn *t, size_t *n);

/* The id of the oldest QUEUED message of queue `name` (new in *id; free
 * with free()), or QR_ENOTFOUND when none waits. */
int qr_store_queue_head(struct qr_store_txn *t, const char *name, char **id);

/* dedup. get returns the message id (new; free()) for a key whose record has
 * not expired at now_ms, else QR_ENOTFOUND. put inserts or replaces and keeps
 * `dedupx` in step. prune deletes up to max records expired at now_ms and
 * sets *n_pruned. */
int qr_store_dedup_get(struct qr_store_txn *t,
                       const char *key,
                       uint64_t now_ms,
                       char **message_id);
int qr_store_dedup_put(struct qr_store_txn *t,
                       const char *key,
                       const char *message_id,
                       uint64_t expires_ms);
int qr_store_dedup_prune(struct qr_store_txn *t,
                         uint64_t now_ms,
                         size_t max,
                         size_t *n_pruned);

/* events. Appends one; (index, position) make the key unique. list visits the
 * events of one message, oldest first (a scan; fine for bounded retention). */
int qr_store_event_append(struct qr_store_txn *t,
                          uint64_t index,
                          uint32_t position,
                          const Qraft__Event *e);
/* Deletes up to max events older than before_ms, oldest first; sets
 * *n_pruned. */
int qr_store_event_prune(struct qr_store_txn *t,
                         uint64_t before_ms,
                         size_t max,
                         size_t *n_pruned);
typedef int (*qr_store_event_cb)(void *arg, const Qraft__Event *e);
int qr_store_event_list(struct qr_store_txn *t,
                        const char *message_id,
                        size_t limit,
                        qr_store_event_cb cb,
                        void *arg);

/* A place in `events`: the parts of its key. */
struct qr_store_event_pos {
    uint64_t time_ms;
    uint64_t index;
    uint32_t position;
};

/* e and pos are borrowed for the call only; return nonzero to stop (that
 * value is returned by the scan). */
typedef int (*qr_store_event_pos_cb)(void *arg,
                                     const struct qr_store_event_pos *pos,
                                     const Qraft__Event *e);

/* Visits events in key order (time, raft index, position): oldest first,
 * or newest first with `descending`. Starts at `from` (NULL: at the oldest
 * or newest end), including the event at `from` itself only when
 * `inclusive`; `from` need not name an existing event. Stops when cb
 * returns nonzero or the db ends. The cursor-paged read behind the logs
 * API. */
int qr_store_event_scan(struct qr_store_txn *t,
                        const struct qr_store_event_pos *from,
                        bool inclusive,
                        bool descending,
                        qr_store_event_pos_cb cb,
                        void *arg);

/* schedules. get returns new in *out (free with
 * qraft__schedule__free_unpacked(sc, NULL)) or QR_ENOTFOUND; put inserts or
 * replaces; delete answers QR_ENOTFOUND for an unknown id. list visits every
 * schedule in id order; sc is borrowed for the call; a nonzero return of cb
 * stops the walk and is returned. */
int qr_store_schedule_get(struct qr_store_txn *t,
                          const char *id,
                          Qraft__Schedule **out);
int qr_store_schedule_put(struct qr_store_txn *t, const Qraft__Schedule *sc);
int qr_store_schedule_delete(struct qr_store_txn *t, const char *id);
typedef int (*qr_store_schedule_cb)(void *arg, const Qraft__Schedule *sc);
int qr_store_schedule_list(struct qr_store_txn *t,
                           qr_store_schedule_cb cb,
                           void *arg);

/* groups (URL groups, by name). get returns new in *out (free with
 * qraft__url_group__free_unpacked(g, NULL)) or QR_ENOTFOUND. put inserts or
 * replaces; delete answers QR_ENOTFOUND when there is no such group. list
 * visits every group in name order (g is borrowed for the call; a nonzero
 * return stops the walk and is returned). */
int qr_store_group_get(struct qr_store_txn *t,
                       const char *name,
                       Qraft__UrlGroup **out);
int qr_store_group_put(struct qr_store_txn *t, const Qraft__UrlGroup *g);
int qr_store_group_delete(struct qr_store_txn *t, const char *name);
typedef int (*qr_store_group_cb)(void *arg, const Qraft__UrlGroup *g);
int qr_store_group_list(struct qr_store_txn *t,
                        qr_store_group_cb cb,
                        void *arg);

/* Flow control (store_flow.c). A key is 1..QR_STORE_MAX_FLOW_KEY_BYTES
 * bytes without a 0 byte. flow_get returns new in *out (free with
 * qraft__flow_control_key__free_unpacked) or QR_ENOTFOUND; flow_put
 * inserts or replaces the record, or deletes it when it holds nothing (no
 * messages, not paused, nothing pinned). Message writes keep "messages"
 * and the maxima; callers change the rest. */
#define QR_STORE_MAX_FLOW_KEY_BYTES 256
int qr_store_flow_get(struct qr_store_txn *t,
                      const char *key,
                      Qraft__FlowControlKey **out);
/* As flow_get, but a key without a record gets a new empty one. */
int qr_store_flow_get_or_new(struct qr_store_txn *t,
                             const char *key,
                             Qraft__FlowControlKey **out);
int qr_store_flow_put(struct qr_store_txn *t, const Qraft__FlowControlKey *k);
/* Visits key records in key order after after_key (NULL or "": from the
 * start), at most limit; k borrowed for the call. */
typedef int (*qr_store_flow_cb)(void *arg, const Qraft__FlowControlKey *k);
int qr_store_flow_list(struct qr_store_txn *t,
                       const char *after_key,
                       size_t limit,
                       qr_store_flow_cb cb,
                       void *arg);
/* Visits each key with a waitlist in `shard`, in key order, with the
 * earliest next_attempt_ms among its messages: one seek per key, however
 * long its waitlist. key is borrowed for the call. */
typedef int (*qr_store_flow_due_key_cb)(void *arg,
                                        const char *key,
                                        uint64_t first_due_ms);
int qr_store_flow_due_keys(struct qr_store_txn *t,
                           uint32_t shard,
                           qr_store_flow_due_key_cb cb,
                           void *arg);
/* Visits key's waitlist in `shard` in due order as v (borrowed for the
 * call) says. */
int qr_store_flow_due_scan(struct qr_store_txn *t,
                           uint32_t shard,
                           const char *key,
                           const struct qr_store_due_visit *v);

/* Workflow runs (`runs`, by id) and their histories (`wsteps`: one
 * WorkflowStep per entry under the run id, a 0 byte and the entry's seq,
 * big-endian). A run id is a name of at most QR_STORE_MAX_RUN_ID_BYTES.
 * run_get and step_get answer QR_ENOTFOUND when there is none; step_put
 * inserts or replaces entry seq; steps visits entries from_seq..to_seq
 * (inclusive) in order, st borrowed for the call, and a nonzero return
 * from cb stops the walk and is returned. run_delete removes the run and
 * every entry of it (an absent run is not an error). */
#define QR_STORE_MAX_RUN_ID_BYTES 128
int qr_store_run_get(struct qr_store_txn *t,
                     const char *id,
                     Qraft__WorkflowRun **out);
int qr_store_run_put(struct qr_store_txn *t, const Qraft__WorkflowRun *run);
int qr_store_run_delete(struct qr_store_txn *t, const char *id);
/* Visits runs in id order after after_id (NULL or "": from the first), at
 * most limit (0: none); run is borrowed for the call, and a nonzero return
 * from cb stops the walk and is returned. */
typedef int (*qr_store_run_cb)(void *arg, const Qraft__WorkflowRun *run);
int qr_store_run_list(struct qr_store_txn *t,
                      const char *after_id,
                      size_t limit,
                      qr_store_run_cb cb,
                      void *arg);
int qr_store_run_step_put(struct qr_store_txn *t,
                          const char *run_id,
                          uint32_t seq,
                          const Qraft__WorkflowStep *st);
/* Deletes the entries from from_seq on (a restarted run's). */
int qr_store_run_steps_truncate(struct qr_store_txn *t,
                                const char *run_id,
                                uint32_t from_seq);
int qr_store_run_step_get(struct qr_store_txn *t,
                          const char *run_id,
                          uint32_t seq,
                          Qraft__WorkflowStep **out);
typedef int (*qr_store_run_step_cb)(void *arg,
                                    uint32_t seq,
                                    const Qraft__WorkflowStep *st);
int qr_store_run_steps(struct qr_store_txn *t,
                       const char *run_id,
                       uint32_t from_seq,
                       uint32_t to_seq,
                       qr_store_run_step_cb cb,
                       void *arg);

/* Deletes up to max ended runs (failed ones, or finished and cancelled
 * ones) that ended before before_ms, oldest first, each with its history;
 * sets *n_pruned. */
int qr_store_run_prune(struct qr_store_txn *t,
                       bool failed,
                       uint64_t before_ms,
                       size_t max,
                       size_t *n_pruned);

/* Waiters (context.waitForEvent): a run waiting for an event, one per
 * (event id, run id), with its deadline indexed in `wdue`. put inserts or
 * replaces (the index follows); delete removes one (absent: not an
 * error). list visits an event's waiters by run id, at most limit. due
 * visits the waiters whose deadline is at or before now_ms, earliest
 * first, at most limit, and sets *next_ms to the first deadline after
 * now_ms it met (UINT64_MAX: none, or the limit stopped it first). w is
 * borrowed for the call; a nonzero return from cb stops the walk and is
 * returned. An event id is a name that leaves room for the index's
 * deadline and a run id. */
typedef int (*qr_store_waiter_cb)(void *arg, const Qraft__Waiter *w);
int qr_store_waiter_get(struct qr_store_txn *t,
                        const char *event_id,
                        const char *run_id,
                        Qraft__Waiter **out);
int qr_store_waiter_put(struct qr_store_txn *t, const Qraft__Waiter *w);
int qr_store_waiter_delete(struct qr_store_txn *t,
                           const char *event_id,
                           const char *run_id);
int qr_store_waiter_list(struct qr_store_txn *t,
                         const char *event_id,
                         size_t limit,
                         qr_store_waiter_cb cb,
                         void *arg);
int qr_store_waiter_due(struct qr_store_txn *t,
                        uint64_t now_ms,
                        size_t limit,
                        qr_store_waiter_cb cb,
                        void *arg,
                        uint64_t *next_ms);

/* Snapshots: every named database but `done` (which restore builds from
 * msgs) as seen by one read transaction (format
 * in store_snapshot.c's header comment: magic, version, then per database its
 * name and length-prefixed key/value pairs).
 *
 * qr_store_snapshot_open does not copy the state: it walks it once, copying
 * headers, keys and short values, and hands out buffers whose concatenation
 * is the snapshot; the long values (message bodies) are pointers into the
 * map, kept in place by the snapshot's read transaction. This is the one
 * place where pointers into LMDB memory leave node/store/, on purpose: raft
 * writes the buffers to disk from its thread pool while the loop goes on
 * applying. The buffers are read-only and valid until
 * qr_store_snapshot_close; any thread may read them; open and close run on
 * the store's thread. Returns new in *out. */
struct qr_store_snap;
struct qr_store_snap_buf {
    const void *base;
    size_t len;
};
int qr_store_snapshot_open(struct qr_store *s, struct qr_store_snap **out);
/* The same, as a page image of the environment (format in store_image.c's
 * header comment, "Image snapshot format"): O(1) work, whatever the state's
 * size. Copies a small header and the two meta pages; the other buffer points
 * at the pages of the map, which the read transaction pins (free pages in the
 * image may change while raft reads them: harmless, see store_image.c). Larger
 * than the pairs format by the free pages the file holds. Only for
 * replicas that can restore it (a node of QR_FEATURE_LEVEL_IMAGE_SNAPSHOTS
 * or later). QR_ECONFLICT while a write transaction is open. Returns new in
 * *out; close with qr_store_snapshot_close. */
int qr_store_snapshot_open_image(struct qr_store *s,
                                 struct qr_store_snap **out);
/* Borrowed from the snapshot: n_bufs buffers of total_bytes in all. */
const struct qr_store_snap_buf *qr_store_snapshot_bufs(
    const struct qr_store_snap *sn,
    size_t *n_bufs,
    size_t *total_bytes);
/* Ends the read transaction and frees the buffers. Safe on NULL. */
void qr_store_snapshot_close(struct qr_store_snap *sn);

/* The same snapshot copied into one buffer: returns new in *buf (free with
 * free()). */
int qr_store_snapshot(struct qr_store *s, void **buf, size_t *len);

/* Replaces the whole state with a snapshot's; either all of it lands or
 * none. Recognises both formats by their magic.
 * Pairs format: in one write transaction; grows the map first, when no
 * transaction is open, to hold the old state and the new one (QR_ENOSPACE if
 * it still does not fit: the store stays sound).
 * Image format: writes the image to <dir>/restore/data.mdb, checks it whole
 * (every value against its checksum), then, with no transaction or snapshot
 * open (else QR_ECONFLICT, changing nothing), closes the environment,
 * renames the image over data.mdb and opens it again: s stays the same
 * object. A failure to open it again fails the store.
 * Rejects a malformed buffer, or one carrying a corrupt record (errmsg names
 * the database and the key), with QR_ECORRUPT before touching anything. */
int qr_store_restore(struct qr_store *s, const void *buf, size_t len);

/* Whether buf (len bytes) starts as an image snapshot does. */
bool qr_store_snapshot_is_image(const void *buf, size_t len);

#endif /* QR_STORE_H */
