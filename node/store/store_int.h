/* What the files of node/store/ share, and no one else includes: the
 * struct behind struct qr_store and struct qr_store_txn, the database
 * handles and key layouts, the value framing (every stored value behind
 * its CRC-32C: store.c, "Checksums") and the record and walk layers every
 * typed operation goes through. With it comes <lmdb.h>, which only
 * node/store/ includes. Pointers into LMDB memory (MDB_val) never leave
 * these files.
 *
 * The rooms:
 *   store.c          environment, transactions, FAILED state, errors, value
 *                    framing and raw accessors, meta, space, map growth
 *   store_record.c   protobuf records and ordered walks over a database
 *   store_msg.c      messages and their indexes (due, dlq, done, qfifo),
 *                    per-state counters, the index walks
 *   store_log.c      dedup records (dedup, dedupx) and events, pruned
 *                    oldest first
 *   store_config.c   queues, schedules, URL groups
 *   store_workflow.c workflow runs, their histories and waiters (runs,
 *                    wsteps, waiters, wdue, rdone)
 *   store_migrate.c  store formats: checksums added, `done` index built
 *   store_snapshot.c pair-stream snapshots and their restore
 *   store_image.c    image snapshots (the environment's pages) and restore
 */
#ifndef QR_STORE_INT_H
#define QR_STORE_INT_H

#include <lmdb.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"
#include "store/store.h"

/* Value of meta QR_META_FORMAT written by this code; newer is refused.
 * Format 1 values carry no checksum; format 2 values do (store.c,
 * "Checksums"), and a format 1 store is rewritten as format 2 when it is
 * opened (migrate_to_checksums) or restored from a format 1 snapshot. */
#define STORE_FORMAT 3
#define STORE_FORMAT_UNSUMMED 1
/* The last format without the `done` index (built on open or restore). */
#define STORE_FORMAT_UNDONE 2
/* Every value but meta "format" starts with the CRC-32C, big-endian, of
 * its key followed by the rest of the value (the payload). */
#define CRC_BYTES 4
/* How much of a corrupt record's key errmsg shows, escaped. */
#define KEY_SHOWN_BYTES 80

#define MAX_DBS 20
#define KEY_BUF_BYTES 512
#define N_STATES QR_STORE_N_STATES
#define DUE_PREFIX_BYTES 10 /* u16 shard | u64 next_attempt_ms */
#define DLQ_PREFIX_BYTES 8  /* u64 dead_lettered_ms */
#define DONE_PREFIX_BYTES 8 /* u64 done_ms (updated_ms) */
#define DEDUPX_PREFIX_BYTES 8
#define EVENT_KEY_BYTES 20 /* u64 time_ms | u64 index | u32 position */
#define QFIFO_SEQ_BYTES 8  /* after the queue name and its 0 byte */
/* Room a queue name leaves for the ids of its messages in qfifo keys. */
#define QR_STORE_MAX_ID_BYTES 128

enum db {
    DB_META,
    DB_MSGS,
    DB_DUE,
    DB_DEDUP,
    DB_DEDUPX,
    DB_DLQ,
    DB_EVENTS,
    DB_QUEUES,
    DB_QFIFO,
    DB_SCHEDULES,
    DB_GROUPS,
    DB_RUNS,    /* workflow runs (store_workflow.c) */
    DB_WSTEPS,  /* their history entries */
    DB_WAITERS, /* runs waiting for events */
    DB_WDUE,    /* waiters by deadline */
    DB_RDONE,   /* ended runs by end time */
    DB_FCDUE,   /* flow control waitlists (store_flow.c) */
    DB_FCKEYS,  /* flow control keys */
    DB_DONE,    /* last: not in snapshots (see N_SNAP_DBS) */
};
#define N_DBS 19
/* Snapshots carry the first N_SNAP_DBS databases: `done` is an index of
 * msgs that restore rebuilds, so a snapshot of format 3 lists the same
 * databases as one of format 2 (and a format 2 binary, meeting it, reads
 * its meta "format" and refuses it as newer, instead of "too many
 * databases"). */
#define N_SNAP_DBS 18
/* The databases a pair-stream snapshot carried before workflow runs: a
 * snapshot leaves out the databases after its last non-empty one (never
 * fewer than these), so a binary from before them (which refuses more
 * databases) restores it while they are empty. */
#define N_SNAP_DBS_BEFORE_RUNS 11

/* The databases' names in the environment (and in snapshots). */
extern const char *const store_db_names[N_DBS];

struct qr_store {
    MDB_env *env; /* NULL only after an image restore failed to reopen it */
    char *dir;    /* the environment's directory */
    MDB_dbi dbis[N_DBS];
    size_t max_key_bytes;
    atomic_bool failed;
    atomic_bool writing; /* a write transaction is open */
    /* Transactions open, snapshots' read transactions included: the map may
     * be resized (qr_store_grow) only while this is 0. */
    atomic_uint n_txns;
    char errmsg[QR_ERRMSG_BYTES];
    /* Corrupt records met since open (store_corrupt_record), and the first
     * one's message, readable once corrupt_noted is set. */
    atomic_uint_fast64_t n_corrupt;
    atomic_bool corrupt_claimed;
    atomic_bool corrupt_noted;
    char corrupt_first[QR_ERRMSG_BYTES];
    /* The clean-stop mark qr_store_open took away (store.c): the
     * transaction id it names, 0 for none; and whether the environment,
     * once open, was at that transaction (qr_store_opened_clean). */
    uint64_t clean_mark_txnid;
    bool opened_clean;
};

struct qr_store_txn {
    struct qr_store *s;
    MDB_txn *txn;
    bool write;
};

/* ---------------------------------------------------------------------------
 * Big-endian integers: every integer in a key, and the snapshot headers. */

static inline void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static inline void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static inline uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}

static inline uint64_t get_be64(const uint8_t *p)
{
    return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

/* ---------------------------------------------------------------------------
 * Errors and the FAILED state (store.c). */

__attribute__((format(printf, 2, 3))) void store_set_errmsg(struct qr_store *s,
                                                            const char *fmt,
                                                            ...);
int store_fail_mdb(struct qr_store *s, bool write, const char *what, int rc);
int store_fail_corrupt(struct qr_store_txn *t,
                       const char *what,
                       const char *why);
void store_escape_key(char *out, size_t size, const uint8_t *key, size_t len);
int store_corrupt_record(struct qr_store_txn *t,
                         enum db db,
                         const MDB_val *k,
                         const char *what,
                         const char *why);
int store_bad_request(struct qr_store *s, const char *what, const char *why);
/* QR_ESTORE on a failed store; need_write refuses a read transaction. */
int store_check_txn(struct qr_store_txn *t, bool need_write, const char *what);
int store_check_id(struct qr_store *s, const char *id, const char *what);
/* store_check_txn, then store_check_id: the checks of a call on one
 * message. */
int store_check_txn_id(struct qr_store_txn *t,
                       bool need_write,
                       const char *id,
                       const char *what);
int store_check_name(struct qr_store *s,
                     const char *name,
                     size_t prefix_bytes,
                     const char *what);
/* store_check_txn, then store_check_name. */
int store_check_key(struct qr_store_txn *t,
                    bool need_write,
                    const char *name,
                    size_t prefix_bytes,
                    const char *what);

/* ---------------------------------------------------------------------------
 * Value framing and raw accessors (store.c). */

bool store_unsummed(enum db db, const void *key, size_t key_len);
void store_seal_value(const void *key,
                      size_t key_len,
                      uint8_t *payload,
                      size_t payload_len);
bool store_value_sound(const void *key,
                       size_t key_len,
                       const uint8_t *value,
                       size_t value_len);
int store_open_value(struct qr_store_txn *t,
                     enum db db,
                     const MDB_val *k,
                     MDB_val *v,
                     const char *what);
int store_get_raw(struct qr_store_txn *t,
                  enum db db,
                  const void *key,
                  size_t key_len,
                  MDB_val *val,
                  const char *what);
int store_put_reserve(struct qr_store_txn *t,
                      enum db db,
                      const void *key,
                      size_t key_len,
                      size_t payload_len,
                      uint8_t **payload,
                      const char *what);
int store_put_raw(struct qr_store_txn *t,
                  enum db db,
                  const void *key,
                  size_t key_len,
                  const void *value,
                  size_t value_len,
                  const char *what);
int store_del_raw(struct qr_store_txn *t,
                  enum db db,
                  const void *key,
                  size_t key_len,
                  const char *what);
int store_cursor_open(struct qr_store_txn *t,
                      enum db db,
                      MDB_cursor **c,
                      const char *what);
/* The first pair of db through c, its value opened (store_open_value);
 * QR_ENOTFOUND when db is empty. */
int store_cursor_first(struct qr_store_txn *t,
                       MDB_cursor *c,
                       enum db db,
                       MDB_val *k,
                       MDB_val *v,
                       const char *what);
/* meta values of 8 bytes. */
int store_get_u64(struct qr_store_txn *t,
                  const char *name,
                  uint64_t *value,
                  const char *what);
int store_put_u64(struct qr_store_txn *t,
                  const char *name,
                  uint64_t value,
                  const char *what);
/* Opens (or, after an image restore, reopens) the environment at dir. */
int store_env_open(struct qr_store *s, const char *dir, uint64_t map_bytes);
/* 0, or QR_ECONFLICT with errmsg "store: WHAT: a transaction or snapshot is
 * open": the environment may be closed and its file replaced only when
 * nothing is open. */
int store_check_idle(struct qr_store *s, const char *what);
/* For a caller that closed the environment and then replaced (or removed)
 * data.mdb, with rv the outcome of that change: opens whichever file
 * data.mdb now is, with map_bytes. A failure to open fails the store and is
 * returned; else rv, with the errmsg the change left. */
int store_env_reopen(struct qr_store *s, uint64_t map_bytes, int rv);

/* ---------------------------------------------------------------------------
 * Records: the databases whose values are protobuf messages
 * (store_record.c). Every read of one decodes through
 * store_decode_record, every write packs through store_put_packed. */

/* One database of protobuf records: where it lives, the message type it
 * holds, and what errmsg calls a value that does not decode. `valid`, when
 * set, checks a decoded record's fields; a record it refuses is `invalid`. */
struct record_db {
    enum db db;
    const ProtobufCMessageDescriptor *desc;
    const char *corrupt;
    bool (*valid)(struct qr_store *s,
                  const ProtobufCMessage *msg,
                  const char *what);
    const char *invalid;
};

int store_decode_record(struct qr_store_txn *t,
                        const struct record_db *r,
                        const MDB_val *k,
                        const MDB_val *v,
                        ProtobufCMessage **out,
                        const char *what);
int store_load_record(struct qr_store_txn *t,
                      const struct record_db *r,
                      const void *key,
                      size_t key_len,
                      ProtobufCMessage **out,
                      const char *what);
int store_put_packed(struct qr_store_txn *t,
                     enum db db,
                     const void *key,
                     size_t key_len,
                     const ProtobufCMessage *msg,
                     const char *what);
int store_record_get(struct qr_store_txn *t,
                     const struct record_db *r,
                     const char *key,
                     ProtobufCMessage **out,
                     const char *what);
int store_record_put(struct qr_store_txn *t,
                     const struct record_db *r,
                     const char *key,
                     size_t key_room,
                     const ProtobufCMessage *msg,
                     const char *what);
int store_record_delete(struct qr_store_txn *t,
                        const struct record_db *r,
                        const char *key,
                        const char *what);

/* What one step of store_walk_db did with its pair. */
enum walk_step {
    STEP_VISITED, /* counts toward the walk's limit (the default) */
    STEP_SKIPPED, /* passed over: does not count */
    STEP_END,     /* the walk is done: stop and return 0 */
};

/* Looks at one pair of a walk (k and v point into the map, valid for the
 * call). A nonzero return stops the walk and is returned; otherwise *step
 * (STEP_VISITED on entry) says how the walk goes on. */
typedef int (*walk_fn)(struct qr_store_txn *t,
                       const MDB_val *k,
                       const MDB_val *v,
                       void *arg,
                       enum walk_step *step);

/* Positions c on the first key >= key (or the first key if key_len is 0);
 * with `exclusive`, skips a key equal to `key`. Returns an LMDB code. */
int store_cursor_seek(MDB_cursor *c,
                      const void *key,
                      size_t key_len,
                      bool exclusive,
                      MDB_val *k,
                      MDB_val *v);
/* Walks db in key order from `start` (store_cursor_seek: key_len 0 is the
 * first key; `exclusive` skips start itself), handing each pair to visit
 * until it stops the walk, `limit` pairs were visited (limit > 0), or the
 * keys run out. An LMDB error on the way is mapped and recorded
 * (store_fail_mdb). */
int store_walk_db(struct qr_store_txn *t,
                  enum db db,
                  const void *start,
                  size_t start_len,
                  bool exclusive,
                  size_t limit,
                  walk_fn visit,
                  void *arg,
                  const char *what);

/* A walk of r's records handing each that `keep` accepts (NULL: all) to the
 * typed callback in cb, through call(), which casts the record to the
 * callback's type. Records keep refuses do not count toward the limit. */
struct record_walk {
    const struct record_db *r;
    bool (*keep)(const struct record_walk *w, const ProtobufCMessage *msg);
    int (*call)(const struct record_walk *w, const ProtobufCMessage *msg);
    union {
        qr_store_msg_cb msg;
        qr_store_event_cb event;
        qr_store_queue_cb queue;
        qr_store_schedule_cb schedule;
        qr_store_group_cb group;
        qr_store_flow_cb flow;
        qr_store_run_cb run;
    } cb;
    void *arg;
    const char *what;
    size_t max_after_bytes;    /* a longer cursor is refused; 0: a key's max */
    Qraft__MessageState state; /* keep_in_state */
    const char *message_id;    /* keep_about */
};

int store_record_list(struct qr_store_txn *t,
                      const struct record_walk *w,
                      const char *after,
                      size_t limit);

/* ---------------------------------------------------------------------------
 * Flow control (store_flow.c): the `fcdue` waitlist index, and the
 * per-key counts that every write of a message keeps (reindex). */

/* Where a walk of a due-ordered index (`due`, `fcdue`: keys of a prefix,
 * a u64 due time and the id) starts: the key (len bytes: the prefix, a due
 * time and maybe an id), whose first prefix_len bytes every visited key
 * has. */
struct due_from {
    const uint8_t *key;
    size_t len;
    size_t prefix_len;
};

/* Visits the messages of the due-ordered index db from `from` in key
 * order as v says (qr_store_due_visit). A key naming a missing message is
 * corruption. */
int store_due_walk(struct qr_store_txn *t,
                   enum db db,
                   const struct due_from *from,
                   const struct qr_store_due_visit *v,
                   const char *what);

/* True when m waits in `fcdue` (not `due`) and counts in its key. */
bool store_flow_waits(const Qraft__Message *m);
/* The `fcdue` key of m (store_flow_waits) into buf; returns its length. */
size_t store_fcdue_key(uint8_t *buf, const Qraft__Message *m);
/* Keeps m's key record in step with a write of one message from old to m
 * (either may be NULL). */
int store_flow_note(struct qr_store_txn *t,
                    const Qraft__Message *old,
                    const Qraft__Message *m,
                    const char *what);

/* ---------------------------------------------------------------------------
 * Messages' `done` index (store_msg.c), which the format step and every
 * restore rebuild (store_migrate.c). */

bool store_in_done(Qraft__MessageState state);
size_t store_done_key(uint8_t *buf, const Qraft__Message *m);

/* ---------------------------------------------------------------------------
 * Formats (store_migrate.c). */

int store_settle_format(struct qr_store *s, MDB_txn *txn);
int store_build_done_index(struct qr_store_txn *t, uint64_t *n_keys);

/* ---------------------------------------------------------------------------
 * Snapshots (store_snapshot.c, store_image.c). */

/* One piece of a snapshot while it is built: a run of the arena (by offset:
 * the arena moves as it grows) or a value in the map. */
struct snap_piece {
    const uint8_t *ref; /* NULL: arena run at off */
    size_t off;
    size_t len;
};

struct qr_store_snap {
    struct qr_store *s;
    MDB_txn *txn;
    uint8_t *arena; /* headers, keys and short values */
    size_t arena_len, arena_cap;
    struct snap_piece *pieces;
    size_t n_pieces, pieces_cap;
    size_t run_start; /* arena offset where the open run began */
    size_t total;
    struct qr_store_snap_buf *bufs;
    void *map; /* an image's own read-only map of the file, or NULL */
    size_t map_len;
};

/* LMDB's default key order: bytes, then the shorter key first. */
int store_key_cmp(const uint8_t *a,
                  size_t a_len,
                  const uint8_t *b,
                  size_t b_len);
/* A new snapshot of s (free with qr_store_snapshot_close) holding its read
 * transaction, counted in n_txns; -ENOMEM or a mapped LMDB error. */
int store_snap_begin(struct qr_store *s, struct qr_store_snap **out);
/* Records a corrupt pair met by a restore's checks: QR_ECORRUPT, errmsg
 * naming the database and the key (escaped) and why. */
int store_restore_corrupt(struct qr_store *s,
                          enum db db,
                          const uint8_t *key,
                          size_t key_len,
                          const char *why);
int store_restore_image(struct qr_store *s, const uint8_t *buf, size_t len);

#endif
