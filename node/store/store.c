/* The node's applied state in LMDB, and the only file that includes <lmdb.h>.
 * It keeps the invariants listed in store.h (the `due`, `dlq`, `qfifo` and
 * `done` indexes, the per-state counters and `dedupx` in step with their
 * records), maps every MDB_* code to a QR_E* code at this boundary, and
 * hands out only decoded copies, never pointers into the map (but for the
 * buffers of an open snapshot, which its read transaction keeps valid).
 *
 * Errors. MDB_NOTFOUND becomes QR_ENOTFOUND; MDB_CORRUPTED, MDB_PAGE_NOTFOUND
 * and MDB_INVALID become QR_ECORRUPT; MDB_READERS_FULL becomes QR_EUNAVAIL;
 * MDB_MAP_FULL becomes QR_ENOSPACE (and spoils only its transaction); system
 * errors pass through as -errno; every other MDB_* code becomes QR_ESTORE. A
 * stored value that does not decode, or an index entry whose record is missing,
 * is QR_ECORRUPT. Any LMDB error or corrupt value met inside a write
 * transaction (and any failure to begin or commit one) marks the store FAILED
 * for good, a full map excepted: from then on every call returns QR_ESTORE.
 * Invalid arguments (QR_EBADREQ) and QR_ENOTFOUND never fail the store.
 * errmsg is written by whichever thread met the error.
 *
 * Checksums. Every stored value but one starts with 4 bytes, the CRC-32C
 * (big-endian) of its key followed by the rest of the value; an index entry
 * (due, dedupx, dlq, qfifo, done), whose payload is empty, is just the CRC
 * of its key. Writes seal a value (put_reserve + seal_value: put_raw,
 * put_packed); every read checks it (open_value: get_raw, walk_db and the
 * cursors of their own), so a byte changed anywhere in a pair, key or
 * value, is found the first time the pair is read. A pair that fails, or that
 * does not decode, is corrupt_record: QR_ECORRUPT with errmsg naming the
 * database and the key (escaped), a count and a log line; in a write
 * transaction the store fails as for any other corrupt value. The exception is
 * meta "format", 8 bytes with no CRC, which every version reads alike.
 *
 * Formats (meta "format"): 1, values without checksums (qraft up to
 * e528cea); 2, values with checksums; 3, with the `done` index
 * (STORE_FORMAT). Opening a format 1 store rewrites every value with its
 * CRC in the transaction that opens it (migrate_to_checksums), which, like
 * a restore, needs the map to hold about twice the state; opening a format
 * 1 or 2 store builds the `done` index in that transaction too
 * (build_done_index). A newer format is refused with QR_ECORRUPT, and so is
 * format 0. qr_store_open with map_bytes 0 uses QR_STORE_DEFAULT_MAP_BYTES.
 * Restore keeps the old pages until it commits, so it first grows the map
 * to hold both states (when no transaction is open; qr_store_grow).
 *
 * Iterators visit at most `limit` items: a limit of 0 visits nothing. A
 * callback must not write through the transaction it is iterating. The
 * dlq_list cursor is a message id; if that message is gone or no longer
 * dead-lettered, listing starts again from the oldest entry, so a page may
 * repeat entries but never skips one.
 *
 * Snapshot format (all integers big-endian):
 *
 *   size   field
 *   8      magic "QRSNAP01"
 *   4      snapshot format version (SNAP_VERSION, 1)
 *   4      number of databases that follow (each name at most once)
 *   then per database:
 *   4      name length n
 *   n      name, no terminator: one of meta msgs due dedup dedupx dlq events
 *          queues qfifo schedules groups
 *   8      number of pairs
 *   then per pair:
 *   4      key length k (1 .. the environment's max key size)
 *   4      value length v
 *   k      key
 *   v      value
 *
 * Within a database keys are strictly increasing in LMDB's order (memcmp,
 * then shorter first), which lets restore append. Nothing follows the last
 * database. A database absent from a snapshot is restored empty. The
 * `done` index is never in a snapshot (N_SNAP_DBS): restore builds it from
 * msgs, whatever the snapshot's format.
 *
 * Values are copied as stored, checksums included: a snapshot's format is
 * its meta "format". Restore checks every value of a format 2 or 3
 * snapshot before it touches anything, and gives each value of a format 1
 * snapshot (or one without a format) its checksum as it lands.
 *
 * Image snapshot format (qr_store_snapshot_open_image; produced once the
 * cluster is at QR_FEATURE_LEVEL_IMAGE_SNAPSHOTS, restored by any version
 * that knows the magic; reasoning at "Image snapshots" below):
 *
 *   size   field
 *   8      magic "QRIMAGE1"
 *   4      image format version (IMAGE_VERSION, 1), big-endian
 *   4      LMDB page size P, big-endian
 *   8      image length L = (last page + 1) * P, big-endian
 *   8      LMDB transaction id of the snapshot, big-endian
 *   4      0x01020304 in the writer's byte order (LMDB pages are native)
 *   4      sizeof(size_t) of the writer, big-endian
 *   L      the environment's file: pages 0 and 1 (the meta pages, copied
 *          when the snapshot was taken), then pages 2 .. last as they were
 *          for that transaction (free pages excepted: any content)
 *
 * Restored, the L bytes are a data.mdb that LMDB opens as it is. */
#include "store/store.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <lmdb.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/crc32c.h"
#include "lib/err.h"
#include "lib/logger.h"

/* Value of meta QR_META_FORMAT written by this code; newer is refused.
 * Format 1 values carry no checksum; format 2 values do (see "Checksums"
 * above), and a format 1 store is rewritten as format 2 when it is opened
 * (migrate_to_checksums) or restored from a format 1 snapshot. */
#define STORE_FORMAT 3
#define STORE_FORMAT_UNSUMMED 1
/* The last format without the `done` index (built on open or restore). */
#define STORE_FORMAT_UNDONE 2
/* Every value but meta "format" starts with the CRC-32C, big-endian, of
 * its key followed by the rest of the value (the payload). */
#define CRC_BYTES 4
/* How much of a corrupt record's key errmsg shows, escaped. */
#define KEY_SHOWN_BYTES 80
#define SNAP_MAGIC "QRSNAP01"
#define SNAP_MAGIC_BYTES 8
#define SNAP_VERSION 1
#define SNAP_HEADER_BYTES (SNAP_MAGIC_BYTES + 4 + 4)
#define SNAP_PAIR_HEADER_BYTES 8
/* Image snapshots (see "Image snapshot format" above). */
#define IMAGE_MAGIC "QRIMAGE1"
#define IMAGE_VERSION 1
#define IMAGE_HEADER_BYTES 40
#define IMAGE_META_PAGES 2
#define IMAGE_ORDER_MARK 0x01020304u

#define MAX_DBS 16
/* The flags of every open of the environment (see env_open). */
#define STORE_ENV_FLAGS (MDB_NOSYNC | MDB_NOTLS)
#define MAX_READERS 256
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
    DB_DONE, /* last: not in snapshots (see N_SNAP_DBS) */
};
#define N_DBS 12
/* Snapshots carry the first N_SNAP_DBS databases: `done` is an index of
 * msgs that restore rebuilds, so a snapshot of format 3 lists the same
 * databases as one of format 2 (and a format 2 binary, meeting it, reads
 * its meta "format" and refuses it as newer, instead of "too many
 * databases"). */
#define N_SNAP_DBS 11

static const char *const db_names[N_DBS] = {
    "meta",   "msgs",   "due",   "dedup",     "dedupx", "dlq",
    "events", "queues", "qfifo", "schedules", "groups", "done",
};

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
    /* Corrupt records met since open (corrupt_record), and the first one's
     * message, readable once corrupt_noted is set. */
    atomic_uint_fast64_t n_corrupt;
    atomic_bool corrupt_claimed;
    atomic_bool corrupt_noted;
    char corrupt_first[QR_ERRMSG_BYTES];
};

struct qr_store_txn {
    struct qr_store *s;
    MDB_txn *txn;
    bool write;
};

/* Where a snapshot's pairs for one database start, found by validation. */
struct snap_db {
    const uint8_t *pairs;
    uint64_t n_pairs;
    bool present;
};

static void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}

static uint64_t get_be64(const uint8_t *p)
{
    return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

__attribute__((format(printf, 2, 3))) static void set_errmsg(struct qr_store *s,
                                                             const char *fmt,
                                                             ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->errmsg, sizeof s->errmsg, fmt, ap);
    va_end(ap);
}

static int map_mdb(int rc)
{
    switch (rc) {
        case MDB_NOTFOUND:
            return QR_ENOTFOUND;
        case MDB_CORRUPTED:
        case MDB_PAGE_NOTFOUND:
        case MDB_INVALID:
            return QR_ECORRUPT;
        case MDB_READERS_FULL:
            return QR_EUNAVAIL;
        default:
            break;
    }
    if (rc > 0) {
        return -rc;
    }
    return QR_ESTORE;
}

/* Records an LMDB error; on the write path the store fails for good, but
 * for MDB_MAP_FULL: that transaction is spoilt (LMDB refuses any further use
 * of it, and a later failure would fail the store), but the store is sound
 * and the caller may abort, qr_store_grow and try again (QR_ENOSPACE). */
static int fail_mdb(struct qr_store *s, bool write, const char *what, int rc)
{
    set_errmsg(s, "store: %s: %s", what, mdb_strerror(rc));
    if (rc == MDB_MAP_FULL) {
        return QR_ENOSPACE;
    }
    if (write) {
        atomic_store(&s->failed, true);
    }
    return map_mdb(rc);
}

/* Records a stored value that does not decode or an index out of step. */
static int fail_corrupt(struct qr_store_txn *t,
                        const char *what,
                        const char *why)
{
    set_errmsg(t->s, "store: %s: %s", what, why);
    if (t->write) {
        atomic_store(&t->s->failed, true);
    }
    return QR_ECORRUPT;
}

/* Writes key (len bytes, any) into out (size bytes, terminated) as
 * printable text: printable ASCII as it is, but for '"' and '\\', every
 * other byte as \\xNN; a key too long to show ends with "...". */
static void escape_key(char *out, size_t size, const uint8_t *key, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    assert(size >= 8);
    for (size_t i = 0; i < len; i++) {
        uint8_t b = key[i];
        bool plain = b >= 0x20 && b < 0x7f && b != '"' && b != '\\';
        if (o + (plain ? 1 : 4) + 4 > size) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (plain) {
            out[o++] = (char)b;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[b >> 4];
            out[o++] = hex[b & 0xf];
        }
    }
    out[o] = '\0';
}

/* Records a pair of db that fails its checksum or does not decode, met
 * while doing `what`: errmsg names the database and the key, the store
 * counts it (qr_store_corrupt_count) and keeps the first one's message,
 * the log says so (on the 1st, 2nd, 4th, 8th... so a scan that meets it
 * again and again does not flood the log), and in a write transaction the
 * store fails for good. */
static int corrupt_record(struct qr_store_txn *t,
                          enum db db,
                          const MDB_val *k,
                          const char *what,
                          const char *why)
{
    struct qr_store *s = t->s;
    char key[KEY_SHOWN_BYTES];
    char msg[QR_ERRMSG_BYTES];

    escape_key(key, sizeof key, k->mv_data, k->mv_size);
    snprintf(msg, sizeof msg,
             "corrupt record in %s at key \"%s\" (%s: %s): run the "
             "rebuild-from-peers procedure",
             db_names[db], key, what, why);
    set_errmsg(s, "store: %s", msg);
    uint64_t n = atomic_fetch_add(&s->n_corrupt, 1) + 1;
    if (!atomic_exchange(&s->corrupt_claimed, true)) {
        snprintf(s->corrupt_first, sizeof s->corrupt_first, "store: %s", msg);
        atomic_store(&s->corrupt_noted, true);
    }
    if ((n & (n - 1)) == 0) {
        QR_ERROR("store", "%s (%llu corrupt reads so far)", msg,
                 (unsigned long long)n);
    }
    if (t->write) {
        atomic_store(&s->failed, true);
    }
    return QR_ECORRUPT;
}

/* meta "format" is the one value kept without a checksum: 8 bytes that
 * every version reads the same way, so an older binary can say that the
 * data is newer than it supports. */
static bool unsummed(enum db db, const void *key, size_t key_len)
{
    return db == DB_META && key_len == sizeof QR_META_FORMAT - 1 &&
           memcmp(key, QR_META_FORMAT, key_len) == 0;
}

static uint32_t pair_crc(const void *key,
                         size_t key_len,
                         const void *payload,
                         size_t payload_len)
{
    return qr_crc32c(qr_crc32c(0, key, key_len), payload, payload_len);
}

/* Writes the checksum of key and of the payload_len bytes at payload into
 * the CRC_BYTES before payload. */
static void seal_value(const void *key,
                       size_t key_len,
                       uint8_t *payload,
                       size_t payload_len)
{
    put_be32(payload - CRC_BYTES, pair_crc(key, key_len, payload, payload_len));
}

/* Whether a stored value (checksum and payload) matches its key. */
static bool value_sound(const void *key,
                        size_t key_len,
                        const uint8_t *value,
                        size_t value_len)
{
    return value_len >= CRC_BYTES &&
           get_be32(value) ==
               pair_crc(key, key_len, value + CRC_BYTES, value_len - CRC_BYTES);
}

/* Checks a pair read from db against its checksum and narrows *v to its
 * payload; a mismatch is corrupt_record. Every read of a value goes
 * through here (get_raw, walk_db and the few cursors of their own). */
static int open_value(struct qr_store_txn *t,
                      enum db db,
                      const MDB_val *k,
                      MDB_val *v,
                      const char *what)
{
    if (unsummed(db, k->mv_data, k->mv_size)) {
        return 0;
    }
    if (!value_sound(k->mv_data, k->mv_size, v->mv_data, v->mv_size)) {
        return corrupt_record(
            t, db, k, what,
            v->mv_size < CRC_BYTES ? "value too short" : "checksum mismatch");
    }
    v->mv_data = (uint8_t *)v->mv_data + CRC_BYTES;
    v->mv_size -= CRC_BYTES;
    return 0;
}

static int bad_request(struct qr_store *s, const char *what, const char *why)
{
    set_errmsg(s, "store: %s: %s", what, why);
    return QR_EBADREQ;
}

static int check_txn(struct qr_store_txn *t, bool need_write, const char *what)
{
    assert(t != NULL);
    if (atomic_load(&t->s->failed)) {
        return QR_ESTORE;
    }
    if (need_write && !t->write) {
        return bad_request(t->s, what, "read-only transaction");
    }
    return 0;
}

/* Message ids are used inside `due` keys, so they must leave room for the
 * prefix. */
static int check_id(struct qr_store *s, const char *id, const char *what)
{
    if (id == NULL || id[0] == '\0') {
        return bad_request(s, what, "empty message id");
    }
    if (strlen(id) + DUE_PREFIX_BYTES > s->max_key_bytes) {
        return bad_request(s, what, "message id too long");
    }
    return 0;
}

static int check_name(struct qr_store *s,
                      const char *name,
                      size_t prefix_bytes,
                      const char *what)
{
    if (name == NULL || name[0] == '\0') {
        return bad_request(s, what, "empty key");
    }
    if (strlen(name) + prefix_bytes > s->max_key_bytes) {
        return bad_request(s, what, "key too long");
    }
    return 0;
}

static bool in_due(Qraft__MessageState state)
{
    return state == QRAFT__MESSAGE_STATE__PENDING ||
           state == QRAFT__MESSAGE_STATE__DELIVERING ||
           state == QRAFT__MESSAGE_STATE__RETRYING;
}

static bool in_dlq(Qraft__MessageState state)
{
    return state == QRAFT__MESSAGE_STATE__DEAD_LETTERED;
}

static bool in_done(Qraft__MessageState state)
{
    return state == QRAFT__MESSAGE_STATE__DELIVERED ||
           state == QRAFT__MESSAGE_STATE__CANCELLED;
}

static bool in_qfifo(Qraft__MessageState state)
{
    return state == QRAFT__MESSAGE_STATE__QUEUED;
}

/* queue name | 0 | u64 seq [| id]: the 0 byte ends the name (names never
 * hold one), so one queue's keys are contiguous and ordered by seq. */
static size_t qfifo_prefix(uint8_t *buf, const char *queue)
{
    size_t n = strlen(queue);
    memcpy(buf, queue, n);
    buf[n] = 0;
    return n + 1;
}

static size_t qfifo_key(uint8_t *buf, const Qraft__Message *m)
{
    size_t off = qfifo_prefix(buf, m->queue);
    size_t n = strlen(m->id);
    put_be64(buf + off, m->queue_seq);
    memcpy(buf + off + QFIFO_SEQ_BYTES, m->id, n);
    return off + QFIFO_SEQ_BYTES + n;
}

static size_t due_key(uint8_t *buf, const Qraft__Message *m)
{
    size_t n = strlen(m->id);
    put_be16(buf, (uint16_t)m->shard);
    put_be64(buf + 2, m->next_attempt_ms);
    memcpy(buf + DUE_PREFIX_BYTES, m->id, n);
    return DUE_PREFIX_BYTES + n;
}

static size_t dlq_key(uint8_t *buf, const Qraft__Message *m)
{
    size_t n = strlen(m->id);
    put_be64(buf, m->dead_lettered_ms);
    memcpy(buf + DLQ_PREFIX_BYTES, m->id, n);
    return DLQ_PREFIX_BYTES + n;
}

/* done_ms is the record's updated_ms: the time it became DELIVERED or
 * CANCELLED, as no later write of a finished message changes it (and a
 * write that did would move its key with it). */
static size_t done_key(uint8_t *buf, const Qraft__Message *m)
{
    size_t n = strlen(m->id);
    put_be64(buf, m->updated_ms);
    memcpy(buf + DONE_PREFIX_BYTES, m->id, n);
    return DONE_PREFIX_BYTES + n;
}

static size_t dedupx_key(uint8_t *buf, uint64_t expires_ms, const char *key)
{
    size_t n = strlen(key);
    put_be64(buf, expires_ms);
    memcpy(buf + DEDUPX_PREFIX_BYTES, key, n);
    return DEDUPX_PREFIX_BYTES + n;
}

/* Low-level accessors. `val` of get_raw points into the map: decode or copy
 * it before the next write. */
static int get_raw(struct qr_store_txn *t,
                   enum db db,
                   const void *key,
                   size_t key_len,
                   MDB_val *val,
                   const char *what)
{
    MDB_val k = {key_len, (void *)key};
    int rc = mdb_get(t->txn, t->s->dbis[db], &k, val);
    if (rc == MDB_NOTFOUND) {
        return QR_ENOTFOUND;
    }
    if (rc != 0) {
        return fail_mdb(t->s, t->write, what, rc);
    }
    return open_value(t, db, &k, val, what);
}

/* Reserves room for a payload of payload_len bytes under `key`, after its
 * checksum, and returns where to write the payload. The caller writes it,
 * then seals it (seal_value) before the next write. */
static int put_reserve(struct qr_store_txn *t,
                       enum db db,
                       const void *key,
                       size_t key_len,
                       size_t payload_len,
                       uint8_t **payload,
                       const char *what)
{
    MDB_val k = {key_len, (void *)key};
    MDB_val v = {CRC_BYTES + payload_len, NULL};
    int rc = mdb_put(t->txn, t->s->dbis[db], &k, &v, MDB_RESERVE);
    if (rc != 0) {
        return fail_mdb(t->s, t->write, what, rc);
    }
    *payload = (uint8_t *)v.mv_data + CRC_BYTES;
    return 0;
}

/* Stores value_len bytes (value may be NULL when 0) under `key`, with
 * their checksum. */
static int put_raw(struct qr_store_txn *t,
                   enum db db,
                   const void *key,
                   size_t key_len,
                   const void *value,
                   size_t value_len,
                   const char *what)
{
    uint8_t *payload;
    int rv;

    if (unsummed(db, key, key_len)) {
        MDB_val k = {key_len, (void *)key};
        MDB_val v = {value_len, (void *)value};
        int rc = mdb_put(t->txn, t->s->dbis[db], &k, &v, 0);
        return rc != 0 ? fail_mdb(t->s, t->write, what, rc) : 0;
    }
    rv = put_reserve(t, db, key, key_len, value_len, &payload, what);
    if (rv != 0) {
        return rv;
    }
    if (value_len > 0) {
        memcpy(payload, value, value_len);
    }
    seal_value(key, key_len, payload, value_len);
    return 0;
}

/* Deletes `key`; an absent key is not an error (the end state is right). */
static int del_raw(struct qr_store_txn *t,
                   enum db db,
                   const void *key,
                   size_t key_len,
                   const char *what)
{
    MDB_val k = {key_len, (void *)key};
    int rc = mdb_del(t->txn, t->s->dbis[db], &k, NULL);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        return fail_mdb(t->s, t->write, what, rc);
    }
    return 0;
}

static int cursor_open(struct qr_store_txn *t,
                       enum db db,
                       MDB_cursor **c,
                       const char *what)
{
    int rc = mdb_cursor_open(t->txn, t->s->dbis[db], c);
    if (rc != 0) {
        return fail_mdb(t->s, t->write, what, rc);
    }
    return 0;
}

/* ---------------------------------------------------------------------------
 * Records: the databases whose values are protobuf messages. Every read of
 * one decodes through decode_record, every write packs through put_packed. */

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

/* A message must have a known state, a shard that fits in a due key and an
 * id check_id accepts. */
static bool message_valid(struct qr_store *s,
                          const ProtobufCMessage *msg,
                          const char *what)
{
    const Qraft__Message *m = (const Qraft__Message *)msg;
    return (unsigned)m->state < N_STATES && m->shard <= UINT16_MAX &&
           check_id(s, m->id, what) == 0;
}

static const struct record_db msg_records = {
    DB_MSGS, &qraft__message__descriptor, "message does not decode",
    message_valid, "message has invalid fields"};
static const struct record_db dedup_records = {
    DB_DEDUP, &qraft__dedup_record__descriptor, "dedup record does not decode",
    NULL, NULL};
static const struct record_db event_records = {
    DB_EVENTS, &qraft__event__descriptor, "event does not decode", NULL, NULL};
static const struct record_db queue_records = {
    DB_QUEUES, &qraft__queue__descriptor, "queue does not decode", NULL, NULL};
static const struct record_db schedule_records = {
    DB_SCHEDULES, &qraft__schedule__descriptor, "schedule does not decode",
    NULL, NULL};
static const struct record_db group_records = {
    DB_GROUPS, &qraft__url_group__descriptor, "url group does not decode", NULL,
    NULL};

/* Decodes v, the payload of a value of r stored under k (its checksum
 * already checked: open_value), into *out (new; free with
 * protobuf_c_message_free_unpacked). A value that does not decode, or
 * whose fields r->valid refuses, is QR_ECORRUPT (corrupt_record); *out is
 * then left alone. */
static int decode_record(struct qr_store_txn *t,
                         const struct record_db *r,
                         const MDB_val *k,
                         const MDB_val *v,
                         ProtobufCMessage **out,
                         const char *what)
{
    ProtobufCMessage *msg =
        protobuf_c_message_unpack(r->desc, NULL, v->mv_size, v->mv_data);
    if (msg == NULL) {
        return corrupt_record(t, r->db, k, what, r->corrupt);
    }
    if (r->valid != NULL && !r->valid(t->s, msg, what)) {
        protobuf_c_message_free_unpacked(msg, NULL);
        return corrupt_record(t, r->db, k, what, r->invalid);
    }
    *out = msg;
    return 0;
}

/* Gets the record of r stored under `key` into *out (new), or NULL with
 * QR_ENOTFOUND (or another error). */
static int load_record(struct qr_store_txn *t,
                       const struct record_db *r,
                       const void *key,
                       size_t key_len,
                       ProtobufCMessage **out,
                       const char *what)
{
    MDB_val k = {key_len, (void *)key};
    MDB_val v;
    *out = NULL;
    int rv = get_raw(t, r->db, key, key_len, &v, what);
    if (rv != 0) {
        return rv;
    }
    return decode_record(t, r, &k, &v, out, what);
}

/* Stores msg packed as the value of `key` (insert or replace). */
static int put_packed(struct qr_store_txn *t,
                      enum db db,
                      const void *key,
                      size_t key_len,
                      const ProtobufCMessage *msg,
                      const char *what)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *payload = NULL;
    int rv = put_reserve(t, db, key, key_len, len, &payload, what);
    if (rv == 0) {
        protobuf_c_message_pack(msg, payload);
        seal_value(key, key_len, payload, len);
    }
    return rv;
}

static int load_message(struct qr_store_txn *t,
                        const void *id,
                        size_t id_len,
                        Qraft__Message **out,
                        const char *what)
{
    ProtobufCMessage *m;
    int rv = load_record(t, &msg_records, id, id_len, &m, what);
    *out = (Qraft__Message *)m;
    return rv;
}

static int load_dedup(struct qr_store_txn *t,
                      const char *key,
                      Qraft__DedupRecord **out,
                      const char *what)
{
    ProtobufCMessage *r;
    int rv = load_record(t, &dedup_records, key, strlen(key), &r, what);
    *out = (Qraft__DedupRecord *)r;
    return rv;
}

static int get_u64(struct qr_store_txn *t,
                   const char *name,
                   uint64_t *value,
                   const char *what)
{
    MDB_val v;
    int rv = get_raw(t, DB_META, name, strlen(name), &v, what);
    if (rv != 0) {
        return rv;
    }
    if (v.mv_size != 8) {
        MDB_val k = {strlen(name), (void *)name};
        return corrupt_record(t, DB_META, &k, what, "not 8 bytes");
    }
    *value = get_be64(v.mv_data);
    return 0;
}

static int put_u64(struct qr_store_txn *t,
                   const char *name,
                   uint64_t value,
                   const char *what)
{
    uint8_t buf[8];
    put_be64(buf, value);
    return put_raw(t, DB_META, name, strlen(name), buf, sizeof buf, what);
}

static void counter_name(char *buf, size_t size, Qraft__MessageState state)
{
    snprintf(buf, size, "count.%u", (unsigned)state);
}

static int count_add(struct qr_store_txn *t,
                     Qraft__MessageState state,
                     int delta,
                     const char *what)
{
    char name[16];
    uint64_t n = 0;
    counter_name(name, sizeof name, state);
    int rv = get_u64(t, name, &n, what);
    if (rv != 0 && rv != QR_ENOTFOUND) {
        return rv;
    }
    if (delta < 0 && n == 0) {
        return fail_corrupt(t, what, "state counter below zero");
    }
    return put_u64(t, name, delta < 0 ? n - 1 : n + 1, what);
}

/* Replaces one index key by another in db; NULL means none. Does nothing
 * when both are the same key. */
static int move_index_key(struct qr_store_txn *t,
                          enum db db,
                          const uint8_t *old_key,
                          size_t old_len,
                          const uint8_t *new_key,
                          size_t new_len,
                          const char *what)
{
    if (old_key != NULL && new_key != NULL && old_len == new_len &&
        memcmp(old_key, new_key, old_len) == 0) {
        return 0;
    }
    if (old_key != NULL) {
        int rv = del_raw(t, db, old_key, old_len, what);
        if (rv != 0) {
            return rv;
        }
    }
    if (new_key != NULL) {
        return put_raw(t, db, new_key, new_len, NULL, 0, what);
    }
    return 0;
}

/* Moves the index entries and counters of one message from its old record
 * to its new one; either may be NULL (insert, delete). */
/* The message indexes: which states each holds a key for, and the key. */
static const struct message_index {
    enum db db;
    bool (*holds)(Qraft__MessageState state);
    size_t (*key)(uint8_t *buf, const Qraft__Message *m);
} message_indexes[] = {
    {DB_DUE, in_due, due_key},
    {DB_DLQ, in_dlq, dlq_key},
    {DB_DONE, in_done, done_key},
    {DB_QFIFO, in_qfifo, qfifo_key},
};

static int reindex(struct qr_store_txn *t,
                   const Qraft__Message *old,
                   const Qraft__Message *m,
                   const char *what)
{
    uint8_t old_buf[KEY_BUF_BYTES];
    uint8_t new_buf[KEY_BUF_BYTES];
    int rv;

    for (size_t i = 0; i < sizeof message_indexes / sizeof message_indexes[0];
         i++) {
        const struct message_index *ix = &message_indexes[i];
        const uint8_t *old_key = NULL;
        const uint8_t *new_key = NULL;
        size_t old_len = 0;
        size_t new_len = 0;
        if (old != NULL && ix->holds(old->state)) {
            old_len = ix->key(old_buf, old);
            old_key = old_buf;
        }
        if (m != NULL && ix->holds(m->state)) {
            new_len = ix->key(new_buf, m);
            new_key = new_buf;
        }
        rv =
            move_index_key(t, ix->db, old_key, old_len, new_key, new_len, what);
        if (rv != 0) {
            return rv;
        }
    }

    if (old != NULL && m != NULL && old->state == m->state) {
        return 0;
    }
    if (old != NULL) {
        rv = count_add(t, old->state, -1, what);
        if (rv != 0) {
            return rv;
        }
    }
    if (m != NULL) {
        rv = count_add(t, m->state, 1, what);
    }
    return rv;
}

/* Rewrites every value of a format 1 store (no checksums) with its
 * checksum, in txn, the transaction that opens the store: either the whole
 * store becomes format 2 or, on any error, none of it does. Like a
 * restore, it keeps the old pages until it commits, so the map must hold
 * about twice the state. Sets *n_values to the number rewritten. */
static int migrate_to_checksums(struct qr_store *s,
                                MDB_txn *txn,
                                uint64_t *n_values)
{
    uint8_t key[KEY_BUF_BYTES];
    uint8_t *buf = NULL;
    size_t cap = 0;
    int rv = 0;

    *n_values = 0;
    for (int db = 0; db < N_DBS && rv == 0; db++) {
        MDB_cursor *c;
        MDB_val k;
        MDB_val v;
        int rc = mdb_cursor_open(txn, s->dbis[db], &c);
        if (rc != 0) {
            rv = fail_mdb(s, false, "open: add checksums", rc);
            break;
        }
        for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            if (unsummed((enum db)db, k.mv_data, k.mv_size)) {
                continue;
            }
            if (k.mv_size > sizeof key) {
                set_errmsg(s, "store: open: add checksums: %s key too long",
                           db_names[db]);
                rv = QR_ECORRUPT;
                break;
            }
            if (cap < CRC_BYTES + v.mv_size) {
                uint8_t *b = realloc(buf, CRC_BYTES + v.mv_size);
                if (b == NULL) {
                    set_errmsg(s, "store: open: add checksums: out of memory");
                    rv = -ENOMEM;
                    break;
                }
                buf = b;
                cap = CRC_BYTES + v.mv_size;
            }
            /* Both point into the page the put rewrites: copy them. */
            memcpy(key, k.mv_data, k.mv_size);
            memcpy(buf + CRC_BYTES, v.mv_data, v.mv_size);
            seal_value(key, k.mv_size, buf + CRC_BYTES, v.mv_size);
            MDB_val nk = {k.mv_size, key};
            MDB_val nv = {CRC_BYTES + v.mv_size, buf};
            rc = mdb_cursor_put(c, &nk, &nv, MDB_CURRENT);
            if (rc != 0) {
                break;
            }
            (*n_values)++;
        }
        mdb_cursor_close(c);
        if (rv == 0 && rc != MDB_NOTFOUND) {
            rv = fail_mdb(s, false, "open: add checksums", rc);
        }
    }
    free(buf);
    return rv;
}

/* Builds the `done` index from msgs, in t (a write transaction whose
 * values all carry their checksums): empties it, then adds the key of
 * every DELIVERED or CANCELLED message. One decode per message: the step
 * from format 2 on open, and the end of every restore (snapshots do not
 * carry the index). A record that fails its checksum or does not decode is
 * passed over, not indexed: the build does not fail the store for it, and
 * the first read of it reports it, naming the key, as for any other
 * (store.h, what stops). Sets *n_keys to the number added. */
static int build_done_index(struct qr_store_txn *t, uint64_t *n_keys)
{
    const char *what = "build done index";
    MDB_cursor *c;
    MDB_val k;
    MDB_val v;
    int rv;
    int rc;

    *n_keys = 0;
    rc = mdb_drop(t->txn, t->s->dbis[DB_DONE], 0);
    if (rc != 0) {
        return fail_mdb(t->s, true, what, rc);
    }
    rc = mdb_cursor_open(t->txn, t->s->dbis[DB_MSGS], &c);
    if (rc != 0) {
        return fail_mdb(t->s, true, what, rc);
    }
    rv = 0;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (v.mv_size < CRC_BYTES ||
            !value_sound(k.mv_data, k.mv_size, v.mv_data, v.mv_size)) {
            continue;
        }
        Qraft__Message *m =
            qraft__message__unpack(NULL, v.mv_size - CRC_BYTES,
                                   (const uint8_t *)v.mv_data + CRC_BYTES);
        if (m == NULL) {
            continue;
        }
        if (in_done(m->state) && m->id != NULL &&
            strlen(m->id) + DUE_PREFIX_BYTES <= t->s->max_key_bytes) {
            uint8_t key[KEY_BUF_BYTES];
            size_t len = done_key(key, m);
            rv = put_raw(t, DB_DONE, key, len, NULL, 0, what);
            (*n_keys)++;
        }
        qraft__message__free_unpacked(m, NULL);
        if (rv != 0) {
            break;
        }
    }
    mdb_cursor_close(c);
    if (rv == 0 && rc != MDB_NOTFOUND) {
        rv = fail_mdb(t->s, true, what, rc);
    }
    return rv;
}

/* Brings the store in the open transaction txn to STORE_FORMAT: a new
 * store is stamped with it, a format 1 store gets its checksums, and a
 * format 1 or 2 store its `done` index. */
static int settle_format(struct qr_store *s, MDB_txn *txn)
{
    struct qr_store_txn t = {s, txn, true};
    uint64_t format;
    int rv = get_u64(&t, QR_META_FORMAT, &format, "open: read format");
    if (rv == QR_ENOTFOUND) {
        return put_u64(&t, QR_META_FORMAT, STORE_FORMAT, "open: write format");
    }
    if (rv != 0) {
        return rv;
    }
    if (format > STORE_FORMAT) {
        set_errmsg(s,
                   "store: open: data format %llu is newer than this "
                   "version supports (%d)",
                   (unsigned long long)format, STORE_FORMAT);
        return QR_ECORRUPT;
    }
    if (format < STORE_FORMAT_UNSUMMED) {
        set_errmsg(s, "store: open: data format %llu is not one qraft wrote",
                   (unsigned long long)format);
        return QR_ECORRUPT;
    }
    if (format == STORE_FORMAT) {
        return 0;
    }
    uint64_t n = 0;
    uint64_t start_ms = qr_clock_mono_ms();
    if (format == STORE_FORMAT_UNSUMMED) {
        QR_INFO("store", "format %llu: adding a checksum to every value",
                (unsigned long long)format);
        rv = migrate_to_checksums(s, txn, &n);
        if (rv != 0) {
            return rv;
        }
        QR_INFO("store", "format %d: %llu values checksummed in %llu ms",
                STORE_FORMAT_UNDONE, (unsigned long long)n,
                (unsigned long long)(qr_clock_mono_ms() - start_ms));
        start_ms = qr_clock_mono_ms();
    }
    QR_INFO("store", "format %d: building the index of finished messages",
            STORE_FORMAT_UNDONE);
    rv = build_done_index(&t, &n);
    if (rv == 0) {
        rv = put_u64(&t, QR_META_FORMAT, STORE_FORMAT, "open: write format");
    }
    if (rv == 0) {
        QR_INFO("store", "format %d: %llu finished messages indexed in %llu ms",
                STORE_FORMAT, (unsigned long long)n,
                (unsigned long long)(qr_clock_mono_ms() - start_ms));
    }
    return rv;
}

/* Opens the environment in dir into s->env and s->dbis, bringing it to
 * STORE_FORMAT in the transaction that opens it (settle_format). Used by
 * qr_store_open and, on the same object, by an image restore's swap. On
 * failure s->env is NULL and errmsg says why. */
static int env_open(struct qr_store *s, const char *dir, uint64_t map_bytes)
{
    MDB_txn *txn;
    int rc;
    int rv;

    rc = mdb_env_create(&s->env);
    if (rc != 0) {
        s->env = NULL;
        return fail_mdb(s, false, "create env", rc);
    }
    rc = mdb_env_set_maxdbs(s->env, MAX_DBS);
    if (rc == 0) {
        rc = mdb_env_set_maxreaders(s->env, MAX_READERS);
    }
    if (rc == 0 && map_bytes > SIZE_MAX) {
        rc = EINVAL;
    }
    if (rc == 0) {
        rc = mdb_env_set_mapsize(s->env, (size_t)map_bytes);
    }
    if (rc != 0) {
        rv = fail_mdb(s, false, "configure env", rc);
        goto err_after_env;
    }
    /* No MDB_WRITEMAP, on purpose. With it, commits store into a shared
     * writable map of a sparse file as large as the map, and a page first
     * touched when the filesystem is full kills the process with SIGBUS (no
     * error, no log line). Without it, LMDB writes dirty pages with pwrite,
     * the file grows only as pages are used, a full disk is ENOSPC from
     * commit (an error the node reports), the map is only address space (so
     * it may be sized well beyond the state, see qr_store_open's callers),
     * and nested transactions stay possible. Cost measured in
     * docs/benchmarks.md ("Store without MDB_WRITEMAP"). fallocating a
     * WRITEMAP file to its full map would also avoid SIGBUS, but only on
     * filesystems that honour preallocation for mmap writes (not on
     * copy-on-write ones), and it spends the whole map's disk up front.
     * MDB_NOSYNC: see store.h. */
    rc = mdb_env_open(s->env, dir, STORE_ENV_FLAGS, 0600);
    if (rc != 0) {
        char what[QR_ERRMSG_BYTES / 2];
        snprintf(what, sizeof what, "open %s", dir);
        rv = fail_mdb(s, false, what, rc);
        goto err_after_env;
    }
    s->max_key_bytes = (size_t)mdb_env_get_maxkeysize(s->env);
    if (s->max_key_bytes > KEY_BUF_BYTES) {
        s->max_key_bytes = KEY_BUF_BYTES;
    }

    rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc != 0) {
        rv = fail_mdb(s, false, "begin open", rc);
        goto err_after_env;
    }
    for (int i = 0; i < N_DBS; i++) {
        rc = mdb_dbi_open(txn, db_names[i], MDB_CREATE, &s->dbis[i]);
        if (rc != 0) {
            rv = fail_mdb(s, false, "open dbs", rc);
            goto err_after_txn;
        }
    }
    rv = settle_format(s, txn);
    if (rv != 0) {
        goto err_after_txn;
    }
    rc = mdb_txn_commit(txn);
    if (rc != 0) {
        rv = fail_mdb(s, false, "commit open", rc);
        goto err_after_env;
    }
    return 0;

err_after_txn:
    mdb_txn_abort(txn);
err_after_env:
    mdb_env_close(s->env);
    s->env = NULL;
    return rv;
}

int qr_store_open(const char *dir,
                  uint64_t map_bytes,
                  struct qr_store **out,
                  char *errmsg)
{
    struct qr_store *s;
    int rv;

    *out = NULL;
    if (map_bytes == 0) {
        map_bytes = QR_STORE_DEFAULT_MAP_BYTES;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        if (errmsg != NULL) {
            snprintf(errmsg, QR_ERRMSG_BYTES, "store: open: out of memory");
        }
        return -ENOMEM;
    }
    atomic_init(&s->failed, false);
    atomic_init(&s->writing, false);
    atomic_init(&s->n_txns, 0);
    atomic_init(&s->n_corrupt, 0);
    atomic_init(&s->corrupt_claimed, false);
    atomic_init(&s->corrupt_noted, false);
    s->dir = strdup(dir);
    if (s->dir == NULL) {
        set_errmsg(s, "store: open: out of memory");
        rv = -ENOMEM;
        goto err_after_alloc;
    }
    rv = env_open(s, dir, map_bytes);
    if (rv != 0) {
        goto err_after_alloc;
    }
    *out = s;
    return 0;

err_after_alloc:
    if (errmsg != NULL) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "%s", s->errmsg);
    }
    free(s->dir);
    free(s);
    return rv;
}

void qr_store_close(struct qr_store *s)
{
    if (s == NULL) {
        return;
    }
    assert(!atomic_load(&s->writing));
    if (s->env != NULL) { /* NULL after a failed image restore's reopen */
        mdb_env_sync(s->env, 1);
        mdb_env_close(s->env);
    }
    free(s->dir);
    free(s);
}

int qr_store_sync(struct qr_store *s)
{
    if (atomic_load(&s->failed)) {
        return QR_ESTORE;
    }
    int rc = mdb_env_sync(s->env, 1);
    if (rc != 0) {
        return fail_mdb(s, false, "sync", rc);
    }
    return 0;
}

const char *qr_store_errmsg(const struct qr_store *s)
{
    return s->errmsg;
}

bool qr_store_failed(const struct qr_store *s)
{
    return atomic_load(&s->failed);
}

/* Pages in LMDB's free list: what the file holds but the state no longer
 * uses (the way mdb_stat -f counts them: each record of the free database
 * is a page list whose first word is its length). */
static int count_free_pages(struct qr_store *s, uint64_t *n_pages)
{
    MDB_txn *txn;
    MDB_cursor *c;
    MDB_val k;
    MDB_val v;
    uint64_t n = 0;

    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        return fail_mdb(s, false, "space: begin", rc);
    }
    rc = mdb_cursor_open(txn, 0 /* FREE_DBI */, &c);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return fail_mdb(s, false, "space: free list", rc);
    }
    while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0) {
        if (v.mv_size >= sizeof(size_t)) {
            size_t len;
            memcpy(&len, v.mv_data, sizeof len);
            n += len;
        }
    }
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    if (rc != MDB_NOTFOUND) {
        return fail_mdb(s, false, "space: free list", rc);
    }
    *n_pages = n;
    return 0;
}

int qr_store_space(struct qr_store *s,
                   bool count_free,
                   struct qr_store_space *out)
{
    MDB_envinfo info;
    MDB_stat st;

    if (atomic_load(&s->failed)) {
        return QR_ESTORE;
    }
    int rc = mdb_env_info(s->env, &info);
    if (rc == 0) {
        rc = mdb_env_stat(s->env, &st);
    }
    if (rc != 0) {
        return fail_mdb(s, false, "space", rc);
    }
    out->page_bytes = st.ms_psize;
    out->map_bytes = info.me_mapsize;
    out->file_bytes = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
    if (count_free) {
        uint64_t n_free = 0;
        int rv = count_free_pages(s, &n_free);
        if (rv != 0) {
            return rv;
        }
        out->reusable_bytes = n_free * st.ms_psize;
        if (out->reusable_bytes > out->file_bytes) {
            out->reusable_bytes = out->file_bytes;
        }
    }
    return 0;
}

int qr_store_grow(struct qr_store *s, uint64_t map_bytes)
{
    MDB_envinfo info;

    if (atomic_load(&s->failed)) {
        return QR_ESTORE;
    }
    if (atomic_load(&s->n_txns) != 0) {
        return QR_EUNAVAIL;
    }
    int rc = mdb_env_info(s->env, &info);
    if (rc != 0) {
        return fail_mdb(s, false, "grow", rc);
    }
    uint64_t now_bytes = info.me_mapsize;
    if (map_bytes == 0) {
        map_bytes = now_bytes + (now_bytes / 2 > QR_STORE_GROW_MIN_BYTES
                                     ? now_bytes / 2
                                     : QR_STORE_GROW_MIN_BYTES);
    }
    if (map_bytes <= now_bytes) {
        return 0;
    }
    if (map_bytes > SIZE_MAX) {
        set_errmsg(s, "store: grow: %llu bytes do not fit the address space",
                   (unsigned long long)map_bytes);
        return -EINVAL;
    }
    /* Unmaps and maps again: legal only with no transaction open in this
     * process (checked above; everything runs on the store's thread). A
     * failure here leaves the environment without its map: the store
     * fails. */
    rc = mdb_env_set_mapsize(s->env, (size_t)map_bytes);
    if (rc != 0) {
        return fail_mdb(s, true, "grow", rc);
    }
    return 0;
}

uint64_t qr_store_corrupt_count(const struct qr_store *s)
{
    return atomic_load(&s->n_corrupt);
}

const char *qr_store_corrupt_first(const struct qr_store *s)
{
    return atomic_load(&s->corrupt_noted) ? s->corrupt_first : NULL;
}

int qr_store_txn_begin(struct qr_store *s,
                       bool write,
                       struct qr_store_txn **out)
{
    struct qr_store_txn *t;
    int rc;
    int rv;

    *out = NULL;
    if (atomic_load(&s->failed)) {
        return QR_ESTORE;
    }
    if (write && atomic_exchange(&s->writing, true)) {
        set_errmsg(s, "store: begin: a write transaction is already open");
        return QR_ECONFLICT;
    }
    t = malloc(sizeof *t);
    if (t == NULL) {
        rv = -ENOMEM;
        goto err_after_flag;
    }
    t->s = s;
    t->write = write;
    rc = mdb_txn_begin(s->env, NULL, write ? 0 : MDB_RDONLY, &t->txn);
    if (rc != 0) {
        rv = fail_mdb(s, write, "begin", rc);
        goto err_after_alloc;
    }
    atomic_fetch_add(&s->n_txns, 1);
    *out = t;
    return 0;

err_after_alloc:
    free(t);
err_after_flag:
    if (write) {
        atomic_store(&s->writing, false);
    }
    return rv;
}

int qr_store_txn_commit(struct qr_store_txn *t)
{
    struct qr_store *s = t->s;
    int rv = 0;

    if (atomic_load(&s->failed)) {
        mdb_txn_abort(t->txn);
        rv = QR_ESTORE;
    } else {
        int rc = mdb_txn_commit(t->txn);
        if (rc != 0) {
            rv = fail_mdb(s, t->write, "commit", rc);
        }
    }
    if (t->write) {
        atomic_store(&s->writing, false);
    }
    atomic_fetch_sub(&s->n_txns, 1);
    free(t);
    return rv;
}

void qr_store_txn_abort(struct qr_store_txn *t)
{
    if (t == NULL) {
        return;
    }
    mdb_txn_abort(t->txn);
    if (t->write) {
        atomic_store(&t->s->writing, false);
    }
    atomic_fetch_sub(&t->s->n_txns, 1);
    free(t);
}

int qr_store_meta_get_u64(struct qr_store_txn *t,
                          const char *name,
                          uint64_t *value)
{
    int rv = check_txn(t, false, "get meta");
    if (rv == 0) {
        rv = check_name(t->s, name, 0, "get meta");
    }
    if (rv != 0) {
        return rv;
    }
    return get_u64(t, name, value, "get meta");
}

int qr_store_meta_put_u64(struct qr_store_txn *t,
                          const char *name,
                          uint64_t value)
{
    int rv = check_txn(t, true, "put meta");
    if (rv == 0) {
        rv = check_name(t->s, name, 0, "put meta");
    }
    if (rv != 0) {
        return rv;
    }
    return put_u64(t, name, value, "put meta");
}

int qr_store_meta_get(struct qr_store_txn *t,
                      const char *name,
                      void **value,
                      size_t *len)
{
    MDB_val v;
    int rv;

    *value = NULL;
    *len = 0;
    rv = check_txn(t, false, "get meta");
    if (rv == 0) {
        rv = check_name(t->s, name, 0, "get meta");
    }
    if (rv == 0) {
        rv = get_raw(t, DB_META, name, strlen(name), &v, "get meta");
    }
    if (rv != 0) {
        return rv;
    }
    /* malloc(0) may return NULL; always hand out a pointer to free. */
    *value = malloc(v.mv_size > 0 ? v.mv_size : 1);
    if (*value == NULL) {
        return -ENOMEM;
    }
    memcpy(*value, v.mv_data, v.mv_size);
    *len = v.mv_size;
    return 0;
}

int qr_store_meta_put(struct qr_store_txn *t,
                      const char *name,
                      const void *value,
                      size_t len)
{
    int rv = check_txn(t, true, "put meta");
    if (rv == 0) {
        rv = check_name(t->s, name, 0, "put meta");
    }
    if (rv != 0) {
        return rv;
    }
    return put_raw(t, DB_META, name, strlen(name), value, len, "put meta");
}

int qr_store_meta_get_msg(struct qr_store_txn *t,
                          const char *name,
                          const ProtobufCMessageDescriptor *desc,
                          ProtobufCMessage **out)
{
    void *buf = NULL;
    size_t len = 0;
    int rv = qr_store_meta_get(t, name, &buf, &len);
    if (rv != 0) {
        return rv;
    }
    *out = protobuf_c_message_unpack(desc, NULL, len, buf);
    free(buf);
    if (*out == NULL) {
        MDB_val k = {strlen(name), (void *)name};
        return corrupt_record(t, DB_META, &k, "get meta", "does not decode");
    }
    return 0;
}

int qr_store_meta_put_msg(struct qr_store_txn *t,
                          const char *name,
                          const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len > 0 ? len : 1);
    if (buf == NULL) {
        return -ENOMEM;
    }
    protobuf_c_message_pack(msg, buf);
    int rv = qr_store_meta_put(t, name, buf, len);
    free(buf);
    return rv;
}

int qr_store_msg_get(struct qr_store_txn *t,
                     const char *id,
                     Qraft__Message **out)
{
    int rv;

    *out = NULL;
    rv = check_txn(t, false, "get msgs");
    if (rv == 0) {
        rv = check_id(t->s, id, "get msgs");
    }
    if (rv != 0) {
        return rv;
    }
    return load_message(t, id, strlen(id), out, "get msgs");
}

int qr_store_msg_put(struct qr_store_txn *t, const Qraft__Message *m)
{
    const char *what = "put msgs";
    Qraft__Message *old = NULL;
    int rv;

    rv = check_txn(t, true, what);
    if (rv != 0) {
        return rv;
    }
    assert(m != NULL && m->base.descriptor == &qraft__message__descriptor);
    rv = check_id(t->s, m->id, what);
    if (rv != 0) {
        return rv;
    }
    if ((unsigned)m->state >= N_STATES) {
        return bad_request(t->s, what, "unknown message state");
    }
    if (m->shard > UINT16_MAX) {
        return bad_request(t->s, what, "shard out of range");
    }
    if (in_qfifo(m->state)) {
        rv = check_name(t->s, m->queue, 1 + QFIFO_SEQ_BYTES + strlen(m->id),
                        what);
        if (rv != 0) {
            return rv;
        }
    }

    rv = load_message(t, m->id, strlen(m->id), &old, what);
    if (rv != 0 && rv != QR_ENOTFOUND) {
        return rv;
    }
    rv = reindex(t, old, m, what);
    if (rv == 0) {
        rv = put_packed(t, DB_MSGS, m->id, strlen(m->id), &m->base, what);
    }
    if (old != NULL) {
        qraft__message__free_unpacked(old, NULL);
    }
    return rv;
}

int qr_store_msg_delete(struct qr_store_txn *t, const char *id)
{
    const char *what = "delete msgs";
    Qraft__Message *old = NULL;
    int rv;

    rv = check_txn(t, true, what);
    if (rv == 0) {
        rv = check_id(t->s, id, what);
    }
    if (rv == 0) {
        rv = load_message(t, id, strlen(id), &old, what);
    }
    if (rv != 0) {
        return rv;
    }
    rv = reindex(t, old, NULL, what);
    if (rv == 0) {
        rv = del_raw(t, DB_MSGS, id, strlen(id), what);
    }
    qraft__message__free_unpacked(old, NULL);
    return rv;
}

/* Positions c on the first key >= key (or the first key if key_len is 0);
 * with `exclusive`, skips a key equal to `key`. Returns an LMDB code. */
static int cursor_seek(MDB_cursor *c,
                       const void *key,
                       size_t key_len,
                       bool exclusive,
                       MDB_val *k,
                       MDB_val *v)
{
    int rc;

    if (key_len == 0) {
        return mdb_cursor_get(c, k, v, MDB_FIRST);
    }
    k->mv_size = key_len;
    k->mv_data = (void *)key;
    rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE);
    if (rc == 0 && exclusive && k->mv_size == key_len &&
        memcmp(k->mv_data, key, key_len) == 0) {
        rc = mdb_cursor_get(c, k, v, MDB_NEXT);
    }
    return rc;
}

/* What one step of walk_db did with its pair. */
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

/* Walks db in key order from `start` (cursor_seek: key_len 0 is the first
 * key; `exclusive` skips start itself), handing each pair to visit until it
 * stops the walk, `limit` pairs were visited (limit > 0), or the keys run
 * out. An LMDB error on the way is mapped and recorded (fail_mdb). */
static int walk_db(struct qr_store_txn *t,
                   enum db db,
                   const void *start,
                   size_t start_len,
                   bool exclusive,
                   size_t limit,
                   walk_fn visit,
                   void *arg,
                   const char *what)
{
    MDB_cursor *c;
    MDB_val k;
    MDB_val v;
    size_t n = 0;
    int rv = cursor_open(t, db, &c, what);
    if (rv != 0) {
        return rv;
    }
    int rc = cursor_seek(c, start, start_len, exclusive, &k, &v);
    while (rc == 0) {
        enum walk_step step = STEP_VISITED;
        rv = open_value(t, db, &k, &v, what);
        if (rv != 0) {
            goto out;
        }
        rv = visit(t, &k, &v, arg, &step);
        if (rv != 0 || step == STEP_END ||
            (step == STEP_VISITED && ++n >= limit)) {
            goto out;
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    if (rc != MDB_NOTFOUND) {
        rv = fail_mdb(t->s, t->write, what, rc);
    }
out:
    mdb_cursor_close(c);
    return rv;
}

/* Gets the record `key` (a non-empty name) into *out, new, or NULL with
 * QR_ENOTFOUND. */
static int record_get(struct qr_store_txn *t,
                      const struct record_db *r,
                      const char *key,
                      ProtobufCMessage **out,
                      const char *what)
{
    *out = NULL;
    int rv = check_txn(t, false, what);
    if (rv == 0) {
        rv = check_name(t->s, key, 0, what);
    }
    if (rv != 0) {
        return rv;
    }
    return load_record(t, r, key, strlen(key), out, what);
}

/* Inserts or replaces msg (of r's type) under `key`, a non-empty name that
 * leaves key_room bytes of the maximum key size free. */
static int record_put(struct qr_store_txn *t,
                      const struct record_db *r,
                      const char *key,
                      size_t key_room,
                      const ProtobufCMessage *msg,
                      const char *what)
{
    int rv = check_txn(t, true, what);
    if (rv != 0) {
        return rv;
    }
    assert(msg != NULL && msg->descriptor == r->desc);
    rv = check_name(t->s, key, key_room, what);
    if (rv != 0) {
        return rv;
    }
    return put_packed(t, r->db, key, strlen(key), msg, what);
}

/* Deletes the record `key`; QR_ENOTFOUND when there is none. */
static int record_delete(struct qr_store_txn *t,
                         const struct record_db *r,
                         const char *key,
                         const char *what)
{
    MDB_val v;
    int rv = check_txn(t, true, what);
    if (rv == 0) {
        rv = check_name(t->s, key, 0, what);
    }
    if (rv == 0) {
        rv = get_raw(t, r->db, key, strlen(key), &v, what);
    }
    if (rv != 0) {
        return rv;
    }
    return del_raw(t, r->db, key, strlen(key), what);
}

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
    } cb;
    void *arg;
    const char *what;
    Qraft__MessageState state; /* keep_in_state */
    const char *message_id;    /* keep_about */
};

static bool keep_in_state(const struct record_walk *w,
                          const ProtobufCMessage *msg)
{
    const Qraft__Message *m = (const Qraft__Message *)msg;
    return w->state == QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED ||
           m->state == w->state;
}

static bool keep_about(const struct record_walk *w, const ProtobufCMessage *msg)
{
    const Qraft__Event *e = (const Qraft__Event *)msg;
    return strcmp(e->message_id, w->message_id) == 0;
}

static int call_msg_cb(const struct record_walk *w, const ProtobufCMessage *msg)
{
    return w->cb.msg(w->arg, (const Qraft__Message *)msg);
}

static int call_event_cb(const struct record_walk *w,
                         const ProtobufCMessage *msg)
{
    return w->cb.event(w->arg, (const Qraft__Event *)msg);
}

static int call_queue_cb(const struct record_walk *w,
                         const ProtobufCMessage *msg)
{
    return w->cb.queue(w->arg, (const Qraft__Queue *)msg);
}

static int call_schedule_cb(const struct record_walk *w,
                            const ProtobufCMessage *msg)
{
    return w->cb.schedule(w->arg, (const Qraft__Schedule *)msg);
}

static int call_group_cb(const struct record_walk *w,
                         const ProtobufCMessage *msg)
{
    return w->cb.group(w->arg, (const Qraft__UrlGroup *)msg);
}

static int walk_records(struct qr_store_txn *t,
                        const MDB_val *k,
                        const MDB_val *v,
                        void *arg,
                        enum walk_step *step)
{
    const struct record_walk *w = arg;
    ProtobufCMessage *msg;
    int rv = decode_record(t, w->r, k, v, &msg, w->what);
    if (rv != 0) {
        return rv;
    }
    if (w->keep == NULL || w->keep(w, msg)) {
        rv = w->call(w, msg);
    } else {
        *step = STEP_SKIPPED;
    }
    protobuf_c_message_free_unpacked(msg, NULL);
    return rv;
}

/* Visits w's records in key order after `after` (NULL or "": from the
 * first), at most limit (0: none); a nonzero return of the callback stops
 * the walk and is returned. */
static int record_list(struct qr_store_txn *t,
                       const struct record_walk *w,
                       const char *after,
                       size_t limit)
{
    size_t after_len = after != NULL ? strlen(after) : 0;
    int rv = check_txn(t, false, w->what);
    if (rv != 0) {
        return rv;
    }
    if (after_len > t->s->max_key_bytes) {
        return bad_request(t->s, w->what, "cursor too long");
    }
    if (limit == 0) {
        return 0;
    }
    return walk_db(t, w->r->db, after, after_len, true, limit, walk_records,
                   (void *)w, w->what);
}

int qr_store_msg_list(struct qr_store_txn *t,
                      Qraft__MessageState state,
                      const char *after_id,
                      size_t limit,
                      qr_store_msg_cb cb,
                      void *arg)
{
    const char *what = "list msgs";
    struct record_walk w = {.r = &msg_records,
                            .keep = keep_in_state,
                            .call = call_msg_cb,
                            .cb.msg = cb,
                            .arg = arg,
                            .what = what,
                            .state = state};
    int rv = check_txn(t, false, what);
    if (rv != 0) {
        return rv;
    }
    if ((unsigned)state >= N_STATES) {
        return bad_request(t->s, what, "unknown message state");
    }
    return record_list(t, &w, after_id, limit);
}

/* A walk of an index (due, dlq) handing the messages it names to cb. The
 * due walk stops after until_ms and at the end of its shard's keys
 * (`shard`, the first 2 bytes of a due key), and passes over the ids skip
 * answers true for. */
struct index_walk {
    size_t id_offset; /* the id follows this many bytes of key prefix */
    qr_store_msg_cb cb;
    void *arg;
    const char *what;
    const uint8_t *shard;
    uint64_t until_ms;
    qr_store_due_skip_cb skip;
};

/* Loads the message an index key names and hands it to cb. A missing
 * message means the index is out of step with msgs. */
static int walk_index(struct qr_store_txn *t,
                      const MDB_val *k,
                      const MDB_val *v,
                      void *arg,
                      enum walk_step *step)
{
    const struct index_walk *w = arg;
    Qraft__Message *m;
    int rv;

    (void)v;
    (void)step;
    if (k->mv_size <= w->id_offset) {
        return fail_corrupt(t, w->what, "index key too short");
    }
    rv = load_message(t, (const uint8_t *)k->mv_data + w->id_offset,
                      k->mv_size - w->id_offset, &m, w->what);
    if (rv == QR_ENOTFOUND) {
        return fail_corrupt(t, w->what, "index names a missing message");
    }
    if (rv != 0) {
        return rv;
    }
    rv = w->cb(w->arg, m);
    qraft__message__free_unpacked(m, NULL);
    return rv;
}

static int walk_due(struct qr_store_txn *t,
                    const MDB_val *k,
                    const MDB_val *v,
                    void *arg,
                    enum walk_step *step)
{
    const struct index_walk *w = arg;
    const uint8_t *key = k->mv_data;
    if (k->mv_size < DUE_PREFIX_BYTES || memcmp(key, w->shard, 2) != 0 ||
        get_be64(key + 2) > w->until_ms) {
        *step = STEP_END;
        return 0;
    }
    if (w->skip != NULL && k->mv_size > DUE_PREFIX_BYTES &&
        k->mv_size - DUE_PREFIX_BYTES < KEY_BUF_BYTES) {
        /* Decide from the id alone, before loading the message. */
        char id[KEY_BUF_BYTES];
        size_t id_len = k->mv_size - DUE_PREFIX_BYTES;
        memcpy(id, key + DUE_PREFIX_BYTES, id_len);
        id[id_len] = '\0';
        if (w->skip(w->arg, id)) {
            *step = STEP_SKIPPED;
            return 0;
        }
    }
    return walk_index(t, k, v, arg, step);
}

int qr_store_due_scan_skipping(struct qr_store_txn *t,
                               uint32_t shard,
                               uint64_t until_ms,
                               size_t limit,
                               qr_store_due_skip_cb skip,
                               qr_store_msg_cb cb,
                               void *arg)
{
    const char *what = "scan due";
    uint8_t start[DUE_PREFIX_BYTES];
    struct index_walk w = {
        .id_offset = DUE_PREFIX_BYTES,
        .cb = cb,
        .arg = arg,
        .what = what,
        .shard = start,
        .until_ms = until_ms,
        .skip = skip,
    };
    int rv;

    rv = check_txn(t, false, what);
    if (rv != 0) {
        return rv;
    }
    if (shard > UINT16_MAX) {
        return bad_request(t->s, what, "shard out of range");
    }
    if (limit == 0) {
        return 0;
    }
    put_be16(start, (uint16_t)shard);
    put_be64(start + 2, 0);
    return walk_db(t, DB_DUE, start, sizeof start, false, limit, walk_due, &w,
                   what);
}

int qr_store_due_scan(struct qr_store_txn *t,
                      uint32_t shard,
                      uint64_t until_ms,
                      size_t limit,
                      qr_store_msg_cb cb,
                      void *arg)
{
    return qr_store_due_scan_skipping(t, shard, until_ms, limit, NULL, cb, arg);
}

int qr_store_due_next(struct qr_store_txn *t,
                      uint32_t shard,
                      uint64_t after_ms,
                      uint64_t *next_ms)
{
    const char *what = "next due";
    uint8_t start[DUE_PREFIX_BYTES];
    MDB_cursor *c;
    MDB_val k;
    MDB_val v;
    int rc;
    int rv;

    rv = check_txn(t, false, what);
    if (rv != 0) {
        return rv;
    }
    if (shard > UINT16_MAX) {
        return bad_request(t->s, what, "shard out of range");
    }
    if (after_ms == UINT64_MAX) {
        return QR_ENOTFOUND;
    }
    put_be16(start, (uint16_t)shard);
    put_be64(start + 2, after_ms + 1);
    rv = cursor_open(t, DB_DUE, &c, what);
    if (rv != 0) {
        return rv;
    }
    rc = cursor_seek(c, start, sizeof start, false, &k, &v);
    if (rc == 0) {
        rv = open_value(t, DB_DUE, &k, &v, what);
    }
    if (rc == 0 && rv == 0) {
        const uint8_t *key = k.mv_data;
        if (k.mv_size < DUE_PREFIX_BYTES || memcmp(key, start, 2) != 0) {
            rv = QR_ENOTFOUND;
        } else {
            *next_ms = get_be64(key + 2);
        }
    } else if (rc == MDB_NOTFOUND) {
        rv = QR_ENOTFOUND;
    } else if (rc != 0) {
        rv = fail_mdb(t->s, t->write, what, rc);
    }
    mdb_cursor_close(c);
    return rv;
}

static int dlq_walk(struct qr_store_txn *t,
                    const uint8_t *start,
                    size_t start_len,
                    size_t limit,
                    qr_store_msg_cb cb,
                    void *arg);

int qr_store_dlq_list(struct qr_store_txn *t,
                      const char *after_id,
                      size_t limit,
                      qr_store_msg_cb cb,
                      void *arg)
{
    const char *what = "list dlq";
    uint8_t start[KEY_BUF_BYTES];
    size_t start_len = 0;
    int rv;

    rv = check_txn(t, false, what);
    if (rv != 0) {
        return rv;
    }
    if (after_id != NULL && after_id[0] != '\0') {
        Qraft__Message *m;
        rv = check_id(t->s, after_id, what);
        if (rv != 0) {
            return rv;
        }
        rv = load_message(t, after_id, strlen(after_id), &m, what);
        if (rv != 0 && rv != QR_ENOTFOUND) {
            return rv;
        }
        /* A cursor message that left the DLQ restarts from the oldest. */
        if (rv == 0) {
            if (in_dlq(m->state)) {
                start_len = dlq_key(start, m);
            }
            qraft__message__free_unpacked(m, NULL);
        }
        rv = 0;
    }
    return dlq_walk(t, start, start_len, limit, cb, arg);
}

int qr_store_dlq_list_at(struct qr_store_txn *t,
                         uint64_t after_ms,
                         const char *after_id,
                         size_t limit,
                         qr_store_msg_cb cb,
                         void *arg)
{
    uint8_t start[KEY_BUF_BYTES];
    size_t n = after_id != NULL ? strlen(after_id) : 0;
    int rv = check_txn(t, false, "list dlq");

    if (rv != 0) {
        return rv;
    }
    if (n == 0) {
        return dlq_walk(t, NULL, 0, limit, cb, arg);
    }
    rv = check_id(t->s, after_id, "list dlq");
    if (rv != 0) {
        return rv;
    }
    put_be64(start, after_ms);
    memcpy(start + DLQ_PREFIX_BYTES, after_id, n);
    return dlq_walk(t, start, DLQ_PREFIX_BYTES + n, limit, cb, arg);
}

/* Visits the dead letters after the dlq key start (none: from the
 * oldest), at most limit. */
static int dlq_walk(struct qr_store_txn *t,
                    const uint8_t *start,
                    size_t start_len,
                    size_t limit,
                    qr_store_msg_cb cb,
                    void *arg)
{
    const char *what = "list dlq";
    struct index_walk w = {
        .id_offset = DLQ_PREFIX_BYTES, .cb = cb, .arg = arg, .what = what};

    if (limit == 0) {
        return 0;
    }
    return walk_db(t, DB_DLQ, start, start_len, true, limit, walk_index, &w,
                   what);
}

int qr_store_done_list(struct qr_store_txn *t,
                       size_t limit,
                       qr_store_msg_cb cb,
                       void *arg)
{
    const char *what = "list done";
    struct index_walk w = {
        .id_offset = DONE_PREFIX_BYTES, .cb = cb, .arg = arg, .what = what};
    int rv = check_txn(t, false, what);

    if (rv != 0 || limit == 0) {
        return rv;
    }
    return walk_db(t, DB_DONE, NULL, 0, false, limit, walk_index, &w, what);
}

/* The oldest `done` key, copied into key (KEY_BUF_BYTES) and *key_len;
 * QR_ENOTFOUND when the index is empty. */
static int done_first(struct qr_store_txn *t,
                      uint8_t *key,
                      size_t *key_len,
                      const char *what)
{
    MDB_cursor *c;
    MDB_val k;
    MDB_val v;
    int rv = cursor_open(t, DB_DONE, &c, what);
    if (rv != 0) {
        return rv;
    }
    int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    if (rc == MDB_NOTFOUND) {
        rv = QR_ENOTFOUND;
    } else if (rc != 0) {
        rv = fail_mdb(t->s, t->write, what, rc);
    } else {
        rv = open_value(t, DB_DONE, &k, &v, what);
    }
    if (rv == 0 &&
        (k.mv_size <= DONE_PREFIX_BYTES || k.mv_size > KEY_BUF_BYTES)) {
        rv = corrupt_record(t, DB_DONE, &k, what, "bad index key");
    }
    if (rv == 0) {
        memcpy(key, k.mv_data, k.mv_size);
        *key_len = k.mv_size;
    }
    mdb_cursor_close(c);
    return rv;
}

int qr_store_done_prune(struct qr_store_txn *t,
                        uint64_t before_ms,
                        size_t max,
                        size_t *n_pruned)
{
    const char *what = "prune done";
    uint8_t key[KEY_BUF_BYTES];
    uint8_t want[KEY_BUF_BYTES];
    size_t key_len;
    int rv;

    *n_pruned = 0;
    rv = check_txn(t, true, what);
    while (rv == 0 && *n_pruned < max) {
        Qraft__Message *m;
        rv = done_first(t, key, &key_len, what);
        if (rv == QR_ENOTFOUND) {
            return 0;
        }
        if (rv != 0 || get_be64(key) >= before_ms) {
            break;
        }
        rv = load_message(t, key + DONE_PREFIX_BYTES,
                          key_len - DONE_PREFIX_BYTES, &m, what);
        if (rv == QR_ENOTFOUND) {
            return fail_corrupt(t, what, "index names a missing message");
        }
        if (rv != 0) {
            break;
        }
        /* The record must name this very key, or the walk would not move
         * on. */
        if (!in_done(m->state) || done_key(want, m) != key_len ||
            memcmp(want, key, key_len) != 0) {
            qraft__message__free_unpacked(m, NULL);
            return fail_corrupt(t, what, "done index out of step with msgs");
        }
        rv = reindex(t, m, NULL, what);
        if (rv == 0) {
            rv = del_raw(t, DB_MSGS, m->id, strlen(m->id), what);
        }
        qraft__message__free_unpacked(m, NULL);
        if (rv == 0) {
            (*n_pruned)++;
        }
    }
    return rv;
}

int qr_store_count_states(struct qr_store_txn *t,
                          uint64_t counts[QR_STORE_N_STATES])
{
    int rv = check_txn(t, false, "count states");
    if (rv != 0) {
        return rv;
    }
    for (unsigned i = 0; i < N_STATES; i++) {
        char name[16];
        counter_name(name, sizeof name, (Qraft__MessageState)i);
        counts[i] = 0;
        rv = get_u64(t, name, &counts[i], "count states");
        if (rv != 0 && rv != QR_ENOTFOUND) {
            return rv;
        }
    }
    return 0;
}

int qr_store_queue_get(struct qr_store_txn *t,
                       const char *name,
                       Qraft__Queue **out)
{
    ProtobufCMessage *q;
    int rv = record_get(t, &queue_records, name, &q, "get queues");
    *out = (Qraft__Queue *)q;
    return rv;
}

int qr_store_queue_put(struct qr_store_txn *t, const Qraft__Queue *q)
{
    /* The name is also a qfifo key prefix, with a message id after it. */
    return record_put(t, &queue_records, q->name,
                      1 + QFIFO_SEQ_BYTES + QR_STORE_MAX_ID_BYTES, &q->base,
                      "put queues");
}

int qr_store_queue_delete(struct qr_store_txn *t, const char *name)
{
    /* Unlike schedules and groups, an absent queue is not an error. */
    int rv = record_delete(t, &queue_records, name, "delete queues");
    return rv == QR_ENOTFOUND ? 0 : rv;
}

int qr_store_queue_list(struct qr_store_txn *t,
                        const char *after_name,
                        size_t limit,
                        qr_store_queue_cb cb,
                        void *arg)
{
    struct record_walk w = {.r = &queue_records,
                            .call = call_queue_cb,
                            .cb.queue = cb,
                            .arg = arg,
                            .what = "list queues"};
    return record_list(t, &w, after_name, limit);
}

int qr_store_queue_count(struct qr_store_txn *t, size_t *n)
{
    MDB_stat st;
    int rv = check_txn(t, false, "count queues");
    if (rv != 0) {
        return rv;
    }
    int rc = mdb_stat(t->txn, t->s->dbis[DB_QUEUES], &st);
    if (rc != 0) {
        return fail_mdb(t->s, t->write, "count queues", rc);
    }
    *n = st.ms_entries;
    return 0;
}

/* The message id at the end of qfifo key k (after a prefix of plen
 * bytes), new in *id. */
static int qfifo_id(struct qr_store_txn *t,
                    const MDB_val *k,
                    size_t plen,
                    char **id,
                    const char *what)
{
    if (k->mv_size <= plen + QFIFO_SEQ_BYTES) {
        return fail_corrupt(t, what, "qfifo key too short");
    }
    size_t n = k->mv_size - plen - QFIFO_SEQ_BYTES;
    *id = malloc(n + 1);
    if (*id == NULL) {
        return -ENOMEM;
    }
    memcpy(*id, (const uint8_t *)k->mv_data + plen + QFIFO_SEQ_BYTES, n);
    (*id)[n] = '\0';
    return 0;
}

int qr_store_queue_head(struct qr_store_txn *t, const char *name, char **id)
{
    const char *what = "queue head";
    uint8_t prefix[KEY_BUF_BYTES];
    MDB_cursor *c;
    MDB_val k;
    MDB_val v;
    *id = NULL;
    int rv = check_txn(t, false, what);
    if (rv == 0) {
        rv = check_name(t->s, name, 1, what);
    }
    if (rv != 0) {
        return rv;
    }
    size_t plen = qfifo_prefix(prefix, name);
    rv = cursor_open(t, DB_QFIFO, &c, what);
    if (rv != 0) {
        return rv;
    }
    int rc = cursor_seek(c, prefix, plen, false, &k, &v);
    if (rc == MDB_NOTFOUND ||
        (rc == 0 && (k.mv_size < plen || memcmp(k.mv_data, prefix, plen)))) {
        rv = QR_ENOTFOUND;
    } else if (rc != 0) {
        rv = fail_mdb(t->s, t->write, what, rc);
    } else {
        rv = open_value(t, DB_QFIFO, &k, &v, what);
        if (rv == 0) {
            rv = qfifo_id(t, &k, plen, id, what);
        }
    }
    mdb_cursor_close(c);
    return rv;
}

int qr_store_dedup_get(struct qr_store_txn *t,
                       const char *key,
                       uint64_t now_ms,
                       char **message_id)
{
    const char *what = "get dedup";
    Qraft__DedupRecord *r;
    int rv;

    *message_id = NULL;
    rv = check_txn(t, false, what);
    if (rv == 0) {
        rv = check_name(t->s, key, DEDUPX_PREFIX_BYTES, what);
    }
    if (rv == 0) {
        rv = load_dedup(t, key, &r, what);
    }
    if (rv != 0) {
        return rv;
    }
    if (r->expires_ms <= now_ms) {
        rv = QR_ENOTFOUND;
    } else {
        *message_id = strdup(r->message_id);
        rv = *message_id != NULL ? 0 : -ENOMEM;
    }
    qraft__dedup_record__free_unpacked(r, NULL);
    return rv;
}

int qr_store_dedup_put(struct qr_store_txn *t,
                       const char *key,
                       const char *message_id,
                       uint64_t expires_ms)
{
    const char *what = "put dedup";
    Qraft__DedupRecord r = QRAFT__DEDUP_RECORD__INIT;
    Qraft__DedupRecord *old = NULL;
    uint8_t xkey[KEY_BUF_BYTES];
    size_t len;
    int rv;

    rv = check_txn(t, true, what);
    if (rv == 0) {
        rv = check_name(t->s, key, DEDUPX_PREFIX_BYTES, what);
    }
    if (rv == 0) {
        rv = check_id(t->s, message_id, what);
    }
    if (rv != 0) {
        return rv;
    }
    rv = load_dedup(t, key, &old, what);
    if (rv != 0 && rv != QR_ENOTFOUND) {
        return rv;
    }
    if (old != NULL) {
        uint64_t old_expires_ms = old->expires_ms;
        qraft__dedup_record__free_unpacked(old, NULL);
        if (old_expires_ms != expires_ms) {
            len = dedupx_key(xkey, old_expires_ms, key);
            rv = del_raw(t, DB_DEDUPX, xkey, len, what);
            if (rv != 0) {
                return rv;
            }
        }
    }
    r.message_id = (char *)message_id;
    r.expires_ms = expires_ms;
    rv = put_packed(t, DB_DEDUP, key, strlen(key), &r.base, what);
    if (rv != 0) {
        return rv;
    }
    len = dedupx_key(xkey, expires_ms, key);
    return put_raw(t, DB_DEDUPX, xkey, len, NULL, 0, what);
}

int qr_store_event_prune(struct qr_store_txn *t,
                         uint64_t before_ms,
                         size_t max,
                         size_t *n_pruned)
{
    const char *what = "prune events";
    MDB_cursor *c;
    MDB_val k;
    MDB_val v;
    int rc;
    int rv;

    *n_pruned = 0;
    rv = check_txn(t, true, what);
    if (rv != 0) {
        return rv;
    }
    rv = cursor_open(t, DB_EVENTS, &c, what);
    if (rv != 0) {
        return rv;
    }
    /* Keys start with the event's time: the oldest come first. */
    while (*n_pruned < max) {
        rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
        if (rc == MDB_NOTFOUND) {
            break;
        }
        if (rc != 0) {
            rv = fail_mdb(t->s, t->write, what, rc);
            break;
        }
        rv = open_value(t, DB_EVENTS, &k, &v, what);
        if (rv != 0) {
            break;
        }
        if (k.mv_size < 8) {
            rv = fail_corrupt(t, what, "event key too short");
            break;
        }
        if (get_be64(k.mv_data) >= before_ms) {
            break;
        }
        rc = mdb_cursor_del(c, 0);
        if (rc != 0) {
            rv = fail_mdb(t->s, t->write, what, rc);
            break;
        }
        (*n_pruned)++;
    }
    mdb_cursor_close(c);
    return rv;
}

int qr_store_dedup_prune(struct qr_store_txn *t,
                         uint64_t now_ms,
                         size_t max,
                         size_t *n_pruned)
{
    const char *what = "prune dedup";
    MDB_cursor *c;
    MDB_val k;
    MDB_val v;
    int rc;
    int rv;

    *n_pruned = 0;
    rv = check_txn(t, true, what);
    if (rv != 0) {
        return rv;
    }
    rv = cursor_open(t, DB_DEDUPX, &c, what);
    if (rv != 0) {
        return rv;
    }
    /* Each round takes the smallest expiry, which the last round deleted. */
    for (size_t i = 0; i < max; i++) {
        char name[KEY_BUF_BYTES];
        Qraft__DedupRecord *r;
        uint64_t expires_ms;
        size_t name_len;

        rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
        if (rc == MDB_NOTFOUND) {
            break;
        }
        if (rc != 0) {
            rv = fail_mdb(t->s, t->write, what, rc);
            goto out;
        }
        rv = open_value(t, DB_DEDUPX, &k, &v, what);
        if (rv != 0) {
            goto out;
        }
        if (k.mv_size <= DEDUPX_PREFIX_BYTES) {
            rv = fail_corrupt(t, what, "dedupx key too short");
            goto out;
        }
        expires_ms = get_be64(k.mv_data);
        if (expires_ms > now_ms) {
            break;
        }
        name_len = k.mv_size - DEDUPX_PREFIX_BYTES;
        memcpy(name, (const uint8_t *)k.mv_data + DEDUPX_PREFIX_BYTES,
               name_len);
        name[name_len] = '\0';
        rc = mdb_cursor_del(c, 0);
        if (rc != 0) {
            rv = fail_mdb(t->s, t->write, what, rc);
            goto out;
        }
        /* Delete the record only if this index entry is its own. */
        rv = load_dedup(t, name, &r, what);
        if (rv == QR_ENOTFOUND) {
            rv = 0;
            continue;
        }
        if (rv != 0) {
            goto out;
        }
        if (r->expires_ms == expires_ms) {
            rv = del_raw(t, DB_DEDUP, name, name_len, what);
            (*n_pruned)++;
        }
        qraft__dedup_record__free_unpacked(r, NULL);
        if (rv != 0) {
            goto out;
        }
    }
out:
    mdb_cursor_close(c);
    return rv;
}

int qr_store_event_append(struct qr_store_txn *t,
                          uint64_t index,
                          uint32_t position,
                          const Qraft__Event *e)
{
    const char *what = "append events";
    uint8_t key[EVENT_KEY_BYTES];
    int rv;

    rv = check_txn(t, true, what);
    if (rv != 0) {
        return rv;
    }
    assert(e != NULL && e->base.descriptor == &qraft__event__descriptor);
    put_be64(key, e->time_ms);
    put_be64(key + 8, index);
    put_be32(key + 16, position);
    return put_packed(t, DB_EVENTS, key, sizeof key, &e->base, what);
}

int qr_store_event_list(struct qr_store_txn *t,
                        const char *message_id,
                        size_t limit,
                        qr_store_event_cb cb,
                        void *arg)
{
    const char *what = "list events";
    struct record_walk w = {.r = &event_records,
                            .keep = keep_about,
                            .call = call_event_cb,
                            .cb.event = cb,
                            .arg = arg,
                            .what = what,
                            .message_id = message_id};
    int rv = check_txn(t, false, what);
    if (rv == 0) {
        rv = check_id(t->s, message_id, what);
    }
    if (rv != 0) {
        return rv;
    }
    return record_list(t, &w, NULL, limit);
}

static void event_key(uint8_t key[EVENT_KEY_BYTES],
                      const struct qr_store_event_pos *pos)
{
    put_be64(key, pos->time_ms);
    put_be64(key + 8, pos->index);
    put_be32(key + 16, pos->position);
}

/* Positions c for a scan from `from` (see qr_store_event_scan). */
static int event_seek(MDB_cursor *c,
                      const struct qr_store_event_pos *from,
                      bool inclusive,
                      bool descending,
                      MDB_val *k,
                      MDB_val *v)
{
    uint8_t key[EVENT_KEY_BYTES];
    int rc;

    if (from == NULL) {
        return mdb_cursor_get(c, k, v, descending ? MDB_LAST : MDB_FIRST);
    }
    event_key(key, from);
    if (!descending) {
        return cursor_seek(c, key, sizeof key, !inclusive, k, v);
    }
    k->mv_size = sizeof key;
    k->mv_data = key;
    rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND) {
        return mdb_cursor_get(c, k, v, MDB_LAST);
    }
    if (rc != 0) {
        return rc;
    }
    /* At the first key >= from: step back unless it is from itself and
     * that is wanted. */
    if (!(inclusive && k->mv_size == sizeof key &&
          memcmp(k->mv_data, key, sizeof key) == 0)) {
        rc = mdb_cursor_get(c, k, v, MDB_PREV);
    }
    return rc;
}

int qr_store_event_scan(struct qr_store_txn *t,
                        const struct qr_store_event_pos *from,
                        bool inclusive,
                        bool descending,
                        qr_store_event_pos_cb cb,
                        void *arg)
{
    const char *what = "scan events";
    MDB_cursor *c;
    MDB_val k;
    MDB_val v;
    int rc;
    int rv;

    rv = check_txn(t, false, what);
    if (rv != 0) {
        return rv;
    }
    rv = cursor_open(t, DB_EVENTS, &c, what);
    if (rv != 0) {
        return rv;
    }
    rc = event_seek(c, from, inclusive, descending, &k, &v);
    while (rc == 0) {
        struct qr_store_event_pos pos;
        ProtobufCMessage *e;

        if (k.mv_size != EVENT_KEY_BYTES) {
            rv = fail_corrupt(t, what, "event key of the wrong size");
            goto out;
        }
        pos.time_ms = get_be64(k.mv_data);
        pos.index = get_be64((const uint8_t *)k.mv_data + 8);
        pos.position = get_be32((const uint8_t *)k.mv_data + 16);
        rv = open_value(t, DB_EVENTS, &k, &v, what);
        if (rv != 0) {
            goto out;
        }
        rv = decode_record(t, &event_records, &k, &v, &e, what);
        if (rv != 0) {
            goto out;
        }
        rv = cb(arg, &pos, (const Qraft__Event *)e);
        protobuf_c_message_free_unpacked(e, NULL);
        if (rv != 0) {
            goto out;
        }
        rc = mdb_cursor_get(c, &k, &v, descending ? MDB_PREV : MDB_NEXT);
    }
    if (rc != MDB_NOTFOUND) {
        rv = fail_mdb(t->s, t->write, what, rc);
    }
out:
    mdb_cursor_close(c);
    return rv;
}

/* ---------------------------------------------------------------------------
 * URL groups. */

int qr_store_group_get(struct qr_store_txn *t,
                       const char *name,
                       Qraft__UrlGroup **out)
{
    ProtobufCMessage *g;
    int rv = record_get(t, &group_records, name, &g, "get groups");
    *out = (Qraft__UrlGroup *)g;
    return rv;
}

int qr_store_group_put(struct qr_store_txn *t, const Qraft__UrlGroup *g)
{
    return record_put(t, &group_records, g->name, 0, &g->base, "put groups");
}

int qr_store_group_delete(struct qr_store_txn *t, const char *name)
{
    return record_delete(t, &group_records, name, "delete groups");
}

int qr_store_group_list(struct qr_store_txn *t, qr_store_group_cb cb, void *arg)
{
    struct record_walk w = {.r = &group_records,
                            .call = call_group_cb,
                            .cb.group = cb,
                            .arg = arg,
                            .what = "list groups"};
    return record_list(t, &w, NULL, SIZE_MAX);
}

/* Values at least this long are not copied into a snapshot: its buffer
 * points at them in the map (the snapshot's read transaction keeps them in
 * place). Shorter ones are copied with their keys. */
#define SNAP_REF_MIN_BYTES 256

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

/* Reserves n bytes at the arena's end; returns their offset or SIZE_MAX. */
static size_t snap_reserve(struct qr_store_snap *sn, size_t n)
{
    if (sn->arena_cap - sn->arena_len < n) {
        size_t cap = sn->arena_cap < 4096 ? 4096 : sn->arena_cap;
        while (cap - sn->arena_len < n) {
            if (cap > SIZE_MAX / 2) {
                return SIZE_MAX;
            }
            cap *= 2;
        }
        uint8_t *a = realloc(sn->arena, cap);
        if (a == NULL) {
            return SIZE_MAX;
        }
        sn->arena = a;
        sn->arena_cap = cap;
    }
    size_t off = sn->arena_len;
    sn->arena_len += n;
    sn->total += n;
    return off;
}

static int snap_add_piece(struct qr_store_snap *sn, struct snap_piece p)
{
    if (sn->n_pieces == sn->pieces_cap) {
        size_t cap = sn->pieces_cap == 0 ? 64 : sn->pieces_cap * 2;
        struct snap_piece *ps = realloc(sn->pieces, cap * sizeof *ps);
        if (ps == NULL) {
            return -ENOMEM;
        }
        sn->pieces = ps;
        sn->pieces_cap = cap;
    }
    sn->pieces[sn->n_pieces++] = p;
    return 0;
}

/* Ends the arena run that is open, if it holds anything. */
static int snap_close_run(struct qr_store_snap *sn)
{
    if (sn->arena_len == sn->run_start) {
        return 0;
    }
    struct snap_piece p = {.off = sn->run_start,
                           .len = sn->arena_len - sn->run_start};
    sn->run_start = sn->arena_len;
    return snap_add_piece(sn, p);
}

/* Adds db's section: its header, then every pair in key order. */
static int snap_add_db(struct qr_store *s, struct qr_store_snap *sn, enum db db)
{
    size_t name_len = strlen(db_names[db]);
    size_t head = snap_reserve(sn, 4 + name_len + 8);
    if (head == SIZE_MAX) {
        return -ENOMEM;
    }
    put_be32(sn->arena + head, (uint32_t)name_len);
    memcpy(sn->arena + head + 4, db_names[db], name_len);

    MDB_cursor *c;
    MDB_val k;
    MDB_val v;
    uint64_t n = 0;
    int rv = 0;
    int rc = mdb_cursor_open(sn->txn, s->dbis[db], &c);
    if (rc != 0) {
        return fail_mdb(s, false, "snapshot", rc);
    }
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (v.mv_size > UINT32_MAX) {
            set_errmsg(s, "store: snapshot: %s value too large", db_names[db]);
            rv = QR_ETOOLARGE;
            break;
        }
        bool ref = v.mv_size >= SNAP_REF_MIN_BYTES;
        size_t inline_len = SNAP_PAIR_HEADER_BYTES + k.mv_size;
        size_t off = snap_reserve(sn, inline_len + (ref ? 0 : v.mv_size));
        if (off == SIZE_MAX) {
            rv = -ENOMEM;
            break;
        }
        uint8_t *p = sn->arena + off;
        put_be32(p, (uint32_t)k.mv_size);
        put_be32(p + 4, (uint32_t)v.mv_size);
        memcpy(p + SNAP_PAIR_HEADER_BYTES, k.mv_data, k.mv_size);
        if (!ref) {
            memcpy(p + inline_len, v.mv_data, v.mv_size);
        } else {
            struct snap_piece piece = {.ref = v.mv_data, .len = v.mv_size};
            rv = snap_close_run(sn);
            if (rv == 0) {
                rv = snap_add_piece(sn, piece);
            }
            if (rv != 0) {
                break;
            }
            sn->total += v.mv_size;
        }
        n++;
    }
    mdb_cursor_close(c);
    if (rv != 0) {
        return rv;
    }
    if (rc != MDB_NOTFOUND) {
        return fail_mdb(s, false, "snapshot", rc);
    }
    put_be64(sn->arena + head + 4 + name_len, n);
    return 0;
}

int qr_store_snapshot_open(struct qr_store *s, struct qr_store_snap **out)
{
    *out = NULL;
    if (atomic_load(&s->failed)) {
        return QR_ESTORE;
    }
    struct qr_store_snap *sn = calloc(1, sizeof *sn);
    if (sn == NULL) {
        return -ENOMEM;
    }
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &sn->txn);
    if (rc != 0) {
        free(sn);
        return fail_mdb(s, false, "snapshot", rc);
    }
    sn->s = s;
    atomic_fetch_add(&s->n_txns, 1);
    /* Sized once from the databases' statistics (leaf pages hold every key
     * and every value short enough to be copied), so the walk never moves
     * the arena. */
    size_t arena_bytes = SNAP_HEADER_BYTES;
    size_t n_entries = 0;
    for (int i = 0; i < N_SNAP_DBS; i++) {
        MDB_stat st;
        if (mdb_stat(sn->txn, s->dbis[i], &st) == 0) {
            arena_bytes += 12 + strlen(db_names[i]) +
                           st.ms_entries * SNAP_PAIR_HEADER_BYTES +
                           (size_t)st.ms_psize * st.ms_leaf_pages;
            n_entries += st.ms_entries;
        }
    }
    sn->arena = malloc(arena_bytes);
    sn->arena_cap = sn->arena != NULL ? arena_bytes : 0;
    sn->pieces = malloc((2 * n_entries + 2) * sizeof *sn->pieces);
    sn->pieces_cap = sn->pieces != NULL ? 2 * n_entries + 2 : 0;

    int rv = -ENOMEM;
    size_t head = snap_reserve(sn, SNAP_HEADER_BYTES);
    if (head != SIZE_MAX) {
        memcpy(sn->arena, SNAP_MAGIC, SNAP_MAGIC_BYTES);
        put_be32(sn->arena + SNAP_MAGIC_BYTES, SNAP_VERSION);
        put_be32(sn->arena + SNAP_MAGIC_BYTES + 4, N_SNAP_DBS);
        rv = 0;
    }
    for (int i = 0; rv == 0 && i < N_SNAP_DBS; i++) {
        rv = snap_add_db(s, sn, (enum db)i);
    }
    if (rv == 0) {
        rv = snap_close_run(sn);
    }
    if (rv == 0) {
        sn->bufs =
            malloc((sn->n_pieces > 0 ? sn->n_pieces : 1) * sizeof *sn->bufs);
        rv = sn->bufs == NULL ? -ENOMEM : 0;
    }
    if (rv != 0) {
        if (rv == -ENOMEM) {
            set_errmsg(s, "store: snapshot: out of memory");
        }
        qr_store_snapshot_close(sn);
        return rv;
    }
    /* The arena stops moving: its runs become pointers. */
    for (size_t i = 0; i < sn->n_pieces; i++) {
        const struct snap_piece *p = &sn->pieces[i];
        sn->bufs[i].base = p->ref != NULL ? p->ref : sn->arena + p->off;
        sn->bufs[i].len = p->len;
    }
    free(sn->pieces);
    sn->pieces = NULL;
    *out = sn;
    return 0;
}

const struct qr_store_snap_buf *qr_store_snapshot_bufs(
    const struct qr_store_snap *sn,
    size_t *n_bufs,
    size_t *total_bytes)
{
    *n_bufs = sn->n_pieces;
    *total_bytes = sn->total;
    return sn->bufs;
}

void qr_store_snapshot_close(struct qr_store_snap *sn)
{
    if (sn == NULL) {
        return;
    }
    if (sn->map != NULL) {
        munmap(sn->map, sn->map_len);
    }
    mdb_txn_abort(sn->txn);
    atomic_fetch_sub(&sn->s->n_txns, 1);
    free(sn->bufs);
    free(sn->pieces);
    free(sn->arena);
    free(sn);
}

int qr_store_snapshot(struct qr_store *s, void **buf, size_t *len)
{
    struct qr_store_snap *sn;
    *buf = NULL;
    *len = 0;
    int rv = qr_store_snapshot_open(s, &sn);
    if (rv != 0) {
        return rv;
    }
    size_t n;
    size_t total;
    const struct qr_store_snap_buf *bufs =
        qr_store_snapshot_bufs(sn, &n, &total);
    uint8_t *out = malloc(total > 0 ? total : 1);
    if (out == NULL) {
        set_errmsg(s, "store: snapshot: out of memory (%zu bytes)", total);
        qr_store_snapshot_close(sn);
        return -ENOMEM;
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(out + off, bufs[i].base, bufs[i].len);
        off += bufs[i].len;
    }
    assert(off == total);
    qr_store_snapshot_close(sn);
    *buf = out;
    *len = total;
    return 0;
}

/* LMDB's default key order: bytes, then the shorter key first. */
static int key_cmp(const uint8_t *a,
                   size_t a_len,
                   const uint8_t *b,
                   size_t b_len)
{
    int c = memcmp(a, b, a_len < b_len ? a_len : b_len);
    if (c != 0) {
        return c;
    }
    return a_len < b_len ? -1 : a_len > b_len ? 1 : 0;
}

static int snap_corrupt(struct qr_store *s, const char *why)
{
    set_errmsg(s, "store: restore: %s", why);
    return QR_ECORRUPT;
}

/* Checks the pairs of one database section starting at *off, advancing it
 * past them. In meta, also reads the stored format version into *format. */
static int parse_pairs(struct qr_store *s,
                       const uint8_t *buf,
                       size_t len,
                       size_t *off,
                       uint64_t n_pairs,
                       bool meta,
                       uint64_t *format)
{
    const uint8_t *prev = NULL;
    size_t prev_len = 0;
    size_t pos = *off;

    for (uint64_t i = 0; i < n_pairs; i++) {
        size_t key_len;
        size_t value_len;
        const uint8_t *key;
        if (len - pos < SNAP_PAIR_HEADER_BYTES) {
            return snap_corrupt(s, "truncated pair header");
        }
        key_len = get_be32(buf + pos);
        value_len = get_be32(buf + pos + 4);
        pos += SNAP_PAIR_HEADER_BYTES;
        if (key_len == 0 || key_len > s->max_key_bytes) {
            return snap_corrupt(s, "bad key length");
        }
        if (len - pos < key_len || len - pos - key_len < value_len) {
            return snap_corrupt(s, "truncated pair");
        }
        key = buf + pos;
        if (prev != NULL && key_cmp(prev, prev_len, key, key_len) >= 0) {
            return snap_corrupt(s, "keys out of order");
        }
        if (meta && key_len == strlen(QR_META_FORMAT) &&
            memcmp(key, QR_META_FORMAT, key_len) == 0) {
            if (value_len != 8) {
                return snap_corrupt(s, "bad format value");
            }
            *format = get_be64(key + key_len);
            if (*format > STORE_FORMAT) {
                return snap_corrupt(s, "data format newer than supported");
            }
            if (*format < STORE_FORMAT_UNSUMMED) {
                return snap_corrupt(s, "bad format value");
            }
        }
        prev = key;
        prev_len = key_len;
        pos += key_len + value_len;
    }
    *off = pos;
    return 0;
}

/* Validates a whole snapshot and finds each database's pairs and its
 * format (0 when meta holds none). */
static int parse_snapshot(struct qr_store *s,
                          const uint8_t *buf,
                          size_t len,
                          struct snap_db dbs[N_DBS],
                          uint64_t *format)
{
    size_t off = SNAP_HEADER_BYTES;
    uint32_t n_dbs;

    memset(dbs, 0, N_DBS * sizeof dbs[0]);
    *format = 0;
    if (buf == NULL || len < SNAP_HEADER_BYTES) {
        return snap_corrupt(s, "truncated header");
    }
    if (memcmp(buf, SNAP_MAGIC, SNAP_MAGIC_BYTES) != 0) {
        return snap_corrupt(s, "bad magic");
    }
    if (get_be32(buf + SNAP_MAGIC_BYTES) != SNAP_VERSION) {
        return snap_corrupt(s, "unsupported snapshot version");
    }
    n_dbs = get_be32(buf + SNAP_MAGIC_BYTES + 4);
    if (n_dbs > N_SNAP_DBS) {
        return snap_corrupt(s, "too many databases");
    }
    for (uint32_t i = 0; i < n_dbs; i++) {
        size_t name_len;
        int db = -1;
        if (len - off < 4) {
            return snap_corrupt(s, "truncated database name");
        }
        name_len = get_be32(buf + off);
        off += 4;
        if (len - off < name_len) {
            return snap_corrupt(s, "truncated database name");
        }
        for (int j = 0; j < N_SNAP_DBS; j++) {
            if (strlen(db_names[j]) == name_len &&
                memcmp(db_names[j], buf + off, name_len) == 0) {
                db = j;
            }
        }
        if (db < 0) {
            return snap_corrupt(s, "unknown database");
        }
        if (dbs[db].present) {
            return snap_corrupt(s, "database listed twice");
        }
        off += name_len;
        if (len - off < 8) {
            return snap_corrupt(s, "truncated pair count");
        }
        dbs[db].present = true;
        dbs[db].n_pairs = get_be64(buf + off);
        off += 8;
        dbs[db].pairs = buf + off;
        int rv = parse_pairs(s, buf, len, &off, dbs[db].n_pairs, db == DB_META,
                             format);
        if (rv != 0) {
            return rv;
        }
    }
    if (off != len) {
        return snap_corrupt(s, "trailing bytes");
    }
    return 0;
}

/* Checks every value of a validated format 2 snapshot against its
 * checksum, before restore touches anything: a snapshot that carries a
 * corrupt record is refused, naming it. */
static int verify_snapshot(struct qr_store *s, const struct snap_db dbs[N_DBS])
{
    for (int db = 0; db < N_DBS; db++) {
        const uint8_t *p = dbs[db].pairs;
        for (uint64_t i = 0; dbs[db].present && i < dbs[db].n_pairs; i++) {
            size_t key_len = get_be32(p);
            size_t value_len = get_be32(p + 4);
            const uint8_t *key = p + SNAP_PAIR_HEADER_BYTES;
            if (!unsummed((enum db)db, key, key_len) &&
                !value_sound(key, key_len, key + key_len, value_len)) {
                char shown[KEY_SHOWN_BYTES];
                escape_key(shown, sizeof shown, key, key_len);
                set_errmsg(s,
                           "store: restore: corrupt record in %s at key "
                           "\"%s\": checksum mismatch",
                           db_names[db], shown);
                return QR_ECORRUPT;
            }
            p += SNAP_PAIR_HEADER_BYTES + key_len + value_len;
        }
    }
    return 0;
}

/* Appends one validated database section to its emptied database; with
 * add_crc (a format 1 snapshot) each value gains its checksum. */
static int restore_db(struct qr_store *s,
                      MDB_txn *txn,
                      enum db db,
                      const struct snap_db *sd,
                      bool add_crc)
{
    const uint8_t *p = sd->pairs;
    MDB_cursor *c;
    int rc;

    rc = mdb_cursor_open(txn, s->dbis[db], &c);
    if (rc != 0) {
        return fail_mdb(s, true, "restore", rc);
    }
    for (uint64_t i = 0; i < sd->n_pairs; i++) {
        MDB_val k = {get_be32(p), (void *)(p + SNAP_PAIR_HEADER_BYTES)};
        MDB_val v = {get_be32(p + 4),
                     (void *)(p + SNAP_PAIR_HEADER_BYTES + k.mv_size)};
        const void *payload = v.mv_data;
        size_t payload_len = v.mv_size;
        bool seal = add_crc && !unsummed(db, k.mv_data, k.mv_size);
        if (seal) {
            v.mv_size = CRC_BYTES + payload_len;
            v.mv_data = NULL;
        }
        rc = mdb_cursor_put(c, &k, &v,
                            seal ? MDB_APPEND | MDB_RESERVE : MDB_APPEND);
        if (rc != 0) {
            mdb_cursor_close(c);
            return fail_mdb(s, true, "restore", rc);
        }
        if (seal) {
            uint8_t *dst = (uint8_t *)v.mv_data + CRC_BYTES;
            if (payload_len > 0) {
                memcpy(dst, payload, payload_len);
            }
            seal_value(k.mv_data, k.mv_size, dst, payload_len);
        }
        p += SNAP_PAIR_HEADER_BYTES + k.mv_size + payload_len;
    }
    mdb_cursor_close(c);
    return 0;
}

static int restore_image(struct qr_store *s, const uint8_t *buf, size_t len);

int qr_store_restore(struct qr_store *s, const void *buf, size_t len)
{
    struct snap_db dbs[N_DBS];
    uint64_t format;
    MDB_txn *txn;
    int rc;
    int rv;

    if (atomic_load(&s->failed)) {
        return QR_ESTORE;
    }
    if (qr_store_snapshot_is_image(buf, len)) {
        return restore_image(s, buf, len);
    }
    rv = parse_snapshot(s, buf, len, dbs, &format);
    if (rv == 0 && format >= STORE_FORMAT_UNDONE) {
        rv = verify_snapshot(s, dbs);
    }
    if (rv != 0) {
        return rv;
    }
    /* The old pages stay until the commit: make room for both states
     * first, when nothing is open (else try as is: a full map is then
     * QR_ENOSPACE, and the store stays sound). */
    struct qr_store_space sp = {0};
    if (qr_store_space(s, false, &sp) == 0) {
        uint64_t need =
            sp.file_bytes + 2 * (uint64_t)len + QR_STORE_GROW_MIN_BYTES;
        if (need > sp.map_bytes) {
            (void)qr_store_grow(s, need);
        }
    }
    /* A snapshot without a format is as old as format 1. */
    bool add_crc = format < STORE_FORMAT_UNDONE;
    if (atomic_exchange(&s->writing, true)) {
        set_errmsg(s, "store: restore: a write transaction is open");
        return QR_ECONFLICT;
    }
    rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc != 0) {
        rv = fail_mdb(s, true, "restore", rc);
        goto err_after_flag;
    }
    for (int i = 0; i < N_DBS; i++) {
        rc = mdb_drop(txn, s->dbis[i], 0);
        if (rc != 0) {
            rv = fail_mdb(s, true, "restore: empty", rc);
            goto err_after_txn;
        }
    }
    for (int i = 0; i < N_DBS; i++) {
        if (dbs[i].present) {
            rv = restore_db(s, txn, (enum db)i, &dbs[i], add_crc);
            if (rv != 0) {
                goto err_after_txn;
            }
        }
    }
    /* Snapshots do not carry the `done` index: build it from msgs. */
    struct qr_store_txn t = {s, txn, true};
    uint64_t n_done;
    rv = build_done_index(&t, &n_done);
    if (rv == 0 && format != STORE_FORMAT) {
        rv = put_u64(&t, QR_META_FORMAT, STORE_FORMAT, "restore");
    }
    if (rv != 0) {
        goto err_after_txn;
    }
    rc = mdb_txn_commit(txn);
    if (rc != 0) {
        rv = fail_mdb(s, true, "restore: commit", rc);
        goto err_after_flag;
    }
    atomic_store(&s->writing, false);
    return 0;

err_after_txn:
    mdb_txn_abort(txn);
err_after_flag:
    atomic_store(&s->writing, false);
    return rv;
}

/* ---------------------------------------------------------------------------
 * Image snapshots: the environment's pages, as one read transaction sees
 * them (format in the header comment at the top of this file).
 *
 * Why the pages may be read after the loop goes on writing. LMDB is
 * copy-on-write: a commit never writes a page that a live read transaction
 * can reach; it writes new pages (fresh ones past the last page, or pages
 * from the free list) and, last, one of the two meta pages (the older one).
 * A page freed by transaction X is reused only once no reader is older than
 * X (mdb_find_oldest in mdb_page_alloc). So while the snapshot's read
 * transaction T is open, every page reachable from T's meta (the B-trees of
 * every database, the free database itself included) stays as it was; that
 * is what lets the buffers point into the map until snapshot_finalize.
 *
 * What may change while raft copies: (1) the meta pages, rewritten by every
 * commit, so the image carries a copy of both taken at once, with no write
 * transaction open (checked: the writing flag, and the newest meta's txnid
 * read before and after the copy equals T's); the newer copy is T's meta,
 * and LMDB opens an environment at its newer meta. (2) Pages that were on
 * the free list at T (or past T's last page: not in the image): later
 * commits may reuse and rewrite them mid-copy. Harmless: T's meta reaches
 * them only through T's free list, as free pages, and LMDB never reads a
 * free page's content (it allocates one and writes it whole). The image
 * thus holds garbage in its free pages, never in a page it will read. This
 * is exactly how mdb_env_copy without MDB_CP_COMPACT copies a live
 * environment (it copies the two meta pages with writers blocked, then
 * pages 2 .. T's last page from the map with writers running).
 *
 * The buffers point into a read-only shared map of data.mdb that the
 * snapshot makes itself (LMDB's mdb_env_info gives its map's address only
 * with MDB_FIXEDMAP), so they do not move even if LMDB remaps; still, the
 * snapshot's read transaction counts in n_txns like any other, so
 * qr_store_grow refuses while it is open. LMDB never truncates the file,
 * and the mapped length is within it (checked), so reading it cannot
 * fault.
 *
 * Restore writes the pages to <dir>/restore/data.mdb, opens that
 * environment read-only and checks it (the meta "format", every value of
 * every database against its checksum, keys in order, the free list's page
 * numbers) without touching the live store; then it closes the live
 * environment, renames the checked file over data.mdb (file and directory
 * fsynced) and opens it again with the same flags through env_open, which
 * also upgrades an older format (settle_format). LMDB has no page
 * checksums: a byte changed in a free page goes unseen (it is never read);
 * a byte changed in a branch page may go unseen by the walk, but not in any
 * key or value it reaches. */

bool qr_store_snapshot_is_image(const void *buf, size_t len)
{
    return buf != NULL && len >= SNAP_MAGIC_BYTES &&
           memcmp(buf, IMAGE_MAGIC, SNAP_MAGIC_BYTES) == 0;
}

static int image_corrupt(struct qr_store *s, const char *why)
{
    set_errmsg(s, "store: restore: image: %s", why);
    return QR_ECORRUPT;
}

int qr_store_snapshot_open_image(struct qr_store *s, struct qr_store_snap **out)
{
    MDB_envinfo before;
    MDB_envinfo after;
    MDB_stat st;
    mdb_filehandle_t fd;
    struct stat file;
    int rc;
    int rv;

    *out = NULL;
    if (atomic_load(&s->failed)) {
        return QR_ESTORE;
    }
    if (atomic_load(&s->writing)) {
        set_errmsg(s, "store: snapshot: a write transaction is open");
        return QR_ECONFLICT;
    }
    struct qr_store_snap *sn = calloc(1, sizeof *sn);
    if (sn == NULL) {
        set_errmsg(s, "store: snapshot: out of memory");
        return -ENOMEM;
    }
    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &sn->txn);
    if (rc != 0) {
        free(sn);
        return fail_mdb(s, false, "snapshot", rc);
    }
    sn->s = s;
    atomic_fetch_add(&s->n_txns, 1);
    rc = mdb_env_stat(s->env, &st);
    if (rc == 0) {
        rc = mdb_env_info(s->env, &before);
    }
    if (rc == 0) {
        rc = mdb_env_get_fd(s->env, &fd);
    }
    if (rc != 0) {
        rv = fail_mdb(s, false, "snapshot", rc);
        goto err_after_txn;
    }
    size_t psize = st.ms_psize;
    uint64_t txnid = mdb_txn_id(sn->txn);
    uint64_t image_bytes = ((uint64_t)before.me_last_pgno + 1) * psize;
    if (fstat(fd, &file) != 0) {
        rv = -errno;
        set_errmsg(s, "store: snapshot: stat: %s", strerror(errno));
        goto err_after_txn;
    }
    if (before.me_last_pgno < IMAGE_META_PAGES ||
        (uint64_t)file.st_size < image_bytes || image_bytes > SIZE_MAX) {
        set_errmsg(s,
                   "store: snapshot: the file (%lld bytes) does not hold "
                   "its last page (%zu)",
                   (long long)file.st_size, before.me_last_pgno);
        rv = QR_ESTORE;
        goto err_after_txn;
    }
    size_t head_bytes = IMAGE_HEADER_BYTES + IMAGE_META_PAGES * psize;
    sn->arena = malloc(head_bytes);
    sn->bufs = malloc(2 * sizeof *sn->bufs);
    if (sn->arena == NULL || sn->bufs == NULL) {
        set_errmsg(s, "store: snapshot: out of memory");
        rv = -ENOMEM;
        goto err_after_txn;
    }
    /* LMDB does not tell where its map is (me_mapaddr is only set for
     * MDB_FIXEDMAP), so the image maps the file itself, read-only and
     * shared: the same page cache that LMDB's map and its pwrites use. */
    void *m = mmap(NULL, (size_t)image_bytes, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        rv = -errno;
        set_errmsg(s, "store: snapshot: mmap: %s", strerror(errno));
        goto err_after_txn;
    }
    sn->map = m;
    sn->map_len = (size_t)image_bytes;
    const uint8_t *map = m;
    memcpy(sn->arena + IMAGE_HEADER_BYTES, map, IMAGE_META_PAGES * psize);
    rc = mdb_env_info(s->env, &after);
    if (rc != 0) {
        rv = fail_mdb(s, false, "snapshot", rc);
        goto err_after_txn;
    }
    /* The copied metas are T's only if no commit ran meanwhile. */
    if (before.me_last_txnid != txnid || after.me_last_txnid != txnid ||
        atomic_load(&s->writing)) {
        set_errmsg(s,
                   "store: snapshot: a write committed while the meta "
                   "pages were copied");
        rv = QR_ECONFLICT;
        goto err_after_txn;
    }
    uint8_t *h = sn->arena;
    memset(h, 0, IMAGE_HEADER_BYTES);
    memcpy(h, IMAGE_MAGIC, SNAP_MAGIC_BYTES);
    put_be32(h + 8, IMAGE_VERSION);
    put_be32(h + 12, (uint32_t)psize);
    put_be64(h + 16, image_bytes);
    put_be64(h + 24, txnid);
    uint32_t order = IMAGE_ORDER_MARK;
    memcpy(h + 32, &order, 4); /* native order: LMDB's pages are native */
    put_be32(h + 36, (uint32_t)sizeof(size_t));

    sn->bufs[0].base = sn->arena;
    sn->bufs[0].len = head_bytes;
    sn->n_pieces = 1;
    if (image_bytes > IMAGE_META_PAGES * psize) {
        sn->bufs[1].base = map + IMAGE_META_PAGES * psize;
        sn->bufs[1].len = (size_t)image_bytes - IMAGE_META_PAGES * psize;
        sn->n_pieces = 2;
    }
    sn->total = IMAGE_HEADER_BYTES + (size_t)image_bytes;
    *out = sn;
    return 0;

err_after_txn:
    qr_store_snapshot_close(sn);
    return rv;
}

/* Writes len bytes at buf to a new file at path and syncs it. */
static int write_file(struct qr_store *s,
                      const char *path,
                      const uint8_t *buf,
                      size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        int rv = -errno;
        set_errmsg(s, "store: restore: create %s: %s", path, strerror(errno));
        return rv;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, buf + off, len - off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            int rv = n < 0 ? -errno : -EIO;
            set_errmsg(s, "store: restore: write %s: %s", path, strerror(-rv));
            close(fd);
            return rv;
        }
        off += (size_t)n;
    }
    if (fsync(fd) != 0) {
        int rv = -errno;
        set_errmsg(s, "store: restore: fsync %s: %s", path, strerror(errno));
        close(fd);
        return rv;
    }
    close(fd);
    return 0;
}

static int sync_dir(struct qr_store *s, const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        int rv = -errno;
        set_errmsg(s, "store: restore: fsync %s: %s", dir, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return rv;
    }
    close(fd);
    return 0;
}

/* Checks every pair of one database of the image (txn, dbi): keys in
 * order, values against their checksums (with sums: format 2 on). */
static int verify_image_db(struct qr_store *s,
                           MDB_txn *txn,
                           MDB_dbi dbi,
                           enum db db,
                           bool sums)
{
    MDB_cursor *c;
    MDB_val k;
    MDB_val v;
    MDB_val prev = {0, NULL};
    int rc = mdb_cursor_open(txn, dbi, &c);
    if (rc != 0) {
        return fail_mdb(s, false, "restore: image", rc);
    }
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        const char *why = NULL;
        if (k.mv_size == 0 || k.mv_size > s->max_key_bytes) {
            why = "bad key length";
        } else if (prev.mv_data != NULL && key_cmp(prev.mv_data, prev.mv_size,
                                                   k.mv_data, k.mv_size) >= 0) {
            why = "keys out of order";
        } else if (sums && !unsummed(db, k.mv_data, k.mv_size) &&
                   !value_sound(k.mv_data, k.mv_size, v.mv_data, v.mv_size)) {
            why = "checksum mismatch";
        }
        if (why != NULL) {
            char shown[KEY_SHOWN_BYTES];
            escape_key(shown, sizeof shown, k.mv_data, k.mv_size);
            set_errmsg(s,
                       "store: restore: corrupt record in %s at key \"%s\": "
                       "%s",
                       db_names[db], shown, why);
            mdb_cursor_close(c);
            return QR_ECORRUPT;
        }
        prev = k;
    }
    mdb_cursor_close(c);
    if (rc != MDB_NOTFOUND) {
        return fail_mdb(s, false, "restore: image", rc);
    }
    return 0;
}

/* Checks the image's free list: each record a length-prefixed list of page
 * numbers, each a page of the image but for the meta pages. */
static int verify_image_free(struct qr_store *s, MDB_txn *txn, size_t last)
{
    MDB_cursor *c;
    MDB_val k;
    MDB_val v;
    int rc = mdb_cursor_open(txn, 0 /* FREE_DBI */, &c);
    if (rc != 0) {
        return fail_mdb(s, false, "restore: image: free list", rc);
    }
    int rv = 0;
    while (rv == 0 && (rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0) {
        size_t n;
        if (v.mv_size < sizeof n) {
            rv = image_corrupt(s, "free list record too short");
            break;
        }
        memcpy(&n, v.mv_data, sizeof n);
        if (n > v.mv_size / sizeof n - 1) {
            rv = image_corrupt(s, "free list record too long");
            break;
        }
        for (size_t i = 1; i <= n; i++) {
            size_t pg;
            memcpy(&pg, (const uint8_t *)v.mv_data + i * sizeof pg, sizeof pg);
            if (pg < IMAGE_META_PAGES || pg > last) {
                rv = image_corrupt(s, "free list names a page out of range");
                break;
            }
        }
    }
    mdb_cursor_close(c);
    if (rv == 0 && rc != MDB_NOTFOUND) {
        rv = fail_mdb(s, false, "restore: image: free list", rc);
    }
    return rv;
}

/* Opens the environment written at dir read-only and checks it whole. */
static int verify_image(struct qr_store *s,
                        const char *dir,
                        size_t psize,
                        uint64_t image_bytes,
                        uint64_t txnid)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_envinfo info;
    int rv = 0;

    int rc = mdb_env_create(&env);
    if (rc != 0) {
        return fail_mdb(s, false, "restore: image", rc);
    }
    rc = mdb_env_set_maxdbs(env, MAX_DBS);
    if (rc == 0) {
        rc = mdb_env_set_mapsize(env, (size_t)image_bytes);
    }
    if (rc == 0) {
        rc = mdb_env_open(env, dir, MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0600);
    }
    if (rc == 0) {
        rc = mdb_env_info(env, &info);
    }
    if (rc != 0) {
        mdb_env_close(env);
        set_errmsg(s, "store: restore: image does not open: %s",
                   mdb_strerror(rc));
        return QR_ECORRUPT;
    }
    if (info.me_last_txnid != txnid ||
        ((uint64_t)info.me_last_pgno + 1) * psize > image_bytes) {
        mdb_env_close(env);
        return image_corrupt(s, "its meta page is not the snapshot's");
    }
    rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        mdb_env_close(env);
        return fail_mdb(s, false, "restore: image", rc);
    }
    MDB_dbi dbis[N_DBS];
    bool present[N_DBS] = {false};
    for (int i = 0; i < N_DBS && rv == 0; i++) {
        rc = mdb_dbi_open(txn, db_names[i], 0, &dbis[i]);
        if (rc == 0) {
            present[i] = true;
        } else if (rc != MDB_NOTFOUND) {
            rv = fail_mdb(s, false, "restore: image: open dbs", rc);
        }
    }
    /* meta "format": what the values are (no checksums in 1). */
    uint64_t format = STORE_FORMAT_UNSUMMED;
    if (rv == 0 && present[DB_META]) {
        MDB_val k = {strlen(QR_META_FORMAT), (void *)QR_META_FORMAT};
        MDB_val v;
        rc = mdb_get(txn, dbis[DB_META], &k, &v);
        if (rc == 0 && v.mv_size == 8) {
            format = get_be64(v.mv_data);
        } else if (rc == 0) {
            rv = image_corrupt(s, "bad format value");
        } else if (rc != MDB_NOTFOUND) {
            rv = fail_mdb(s, false, "restore: image", rc);
        }
    }
    if (rv == 0 && format > STORE_FORMAT) {
        rv = image_corrupt(s, "data format newer than supported");
    } else if (rv == 0 && format < STORE_FORMAT_UNSUMMED) {
        rv = image_corrupt(s, "bad format value");
    }
    for (int i = 0; i < N_DBS && rv == 0; i++) {
        if (present[i]) {
            rv = verify_image_db(s, txn, dbis[i], (enum db)i,
                                 format > STORE_FORMAT_UNSUMMED);
        }
    }
    if (rv == 0) {
        rv = verify_image_free(s, txn, info.me_last_pgno);
    }
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return rv;
}

/* Restores an image (magic IMAGE_MAGIC): see above. */
static int restore_image(struct qr_store *s, const uint8_t *buf, size_t len)
{
    char rdir[PATH_MAX];
    char rfile[PATH_MAX];
    char live[PATH_MAX];
    MDB_envinfo info;
    int rv;

    if (len < IMAGE_HEADER_BYTES) {
        return image_corrupt(s, "truncated header");
    }
    if (get_be32(buf + 8) != IMAGE_VERSION) {
        return image_corrupt(s, "unsupported image version");
    }
    uint32_t order;
    memcpy(&order, buf + 32, 4);
    if (order != IMAGE_ORDER_MARK || get_be32(buf + 36) != sizeof(size_t)) {
        return image_corrupt(s,
                             "made on a machine of another byte order or "
                             "word size");
    }
    size_t psize = get_be32(buf + 12);
    uint64_t image_bytes = get_be64(buf + 16);
    uint64_t txnid = get_be64(buf + 24);
    if (psize < 512 || (psize & (psize - 1)) != 0 ||
        image_bytes != len - IMAGE_HEADER_BYTES || image_bytes % psize != 0 ||
        image_bytes <= IMAGE_META_PAGES * psize) {
        return image_corrupt(s, "bad page size or length");
    }
    if (snprintf(rdir, sizeof rdir, "%s/restore", s->dir) >= (int)sizeof rdir ||
        snprintf(rfile, sizeof rfile, "%s/data.mdb", rdir) >=
            (int)sizeof rfile ||
        snprintf(live, sizeof live, "%s/data.mdb", s->dir) >=
            (int)sizeof live) {
        set_errmsg(s, "store: restore: path too long");
        return -ENAMETOOLONG;
    }
    if (mkdir(rdir, 0700) != 0 && errno != EEXIST) {
        rv = -errno;
        set_errmsg(s, "store: restore: mkdir %s: %s", rdir, strerror(errno));
        return rv;
    }
    rv = write_file(s, rfile, buf + IMAGE_HEADER_BYTES, (size_t)image_bytes);
    if (rv == 0) {
        rv = verify_image(s, rdir, psize, image_bytes, txnid);
    }
    if (rv == 0 && (atomic_load(&s->n_txns) != 0 || atomic_load(&s->writing))) {
        set_errmsg(s, "store: restore: a transaction or snapshot is open");
        rv = QR_ECONFLICT;
    }
    if (rv == 0) {
        rv = mdb_env_info(s->env, &info) == 0 ? 0 : QR_ESTORE;
    }
    if (rv != 0) {
        unlink(rfile);
        rmdir(rdir);
        return rv;
    }
    /* The swap: nothing is open (checked above; the store's thread). */
    uint64_t map_bytes = info.me_mapsize;
    if (map_bytes < image_bytes + QR_STORE_GROW_MIN_BYTES) {
        map_bytes = image_bytes + QR_STORE_GROW_MIN_BYTES;
    }
    mdb_env_sync(s->env, 1);
    mdb_env_close(s->env);
    s->env = NULL;
    bool swapped = false;
    if (rename(rfile, live) != 0) {
        rv = -errno;
        set_errmsg(s, "store: restore: rename %s: %s", rfile, strerror(errno));
        unlink(rfile);
    } else {
        swapped = true;
        rv = sync_dir(s, s->dir);
    }
    rmdir(rdir);
    /* Opens whichever file data.mdb now is: the image, or after a failed
     * rename the old state, unchanged. */
    char errmsg[QR_ERRMSG_BYTES];
    snprintf(errmsg, sizeof errmsg, "%s", s->errmsg);
    int rv_open = env_open(s, s->dir, map_bytes);
    if (rv_open != 0) {
        atomic_store(&s->failed, true);
        return rv_open;
    }
    if (rv != 0) {
        snprintf(s->errmsg, sizeof s->errmsg, "%s", errmsg);
        if (swapped) {
            /* The state is the image's, but not known to be durable. */
            atomic_store(&s->failed, true);
        }
    }
    return rv;
}

/* ---------------------------------------------------------------------------
 * schedules */

int qr_store_schedule_get(struct qr_store_txn *t,
                          const char *id,
                          Qraft__Schedule **out)
{
    ProtobufCMessage *sc;
    int rv = record_get(t, &schedule_records, id, &sc, "get schedules");
    *out = (Qraft__Schedule *)sc;
    return rv;
}

int qr_store_schedule_put(struct qr_store_txn *t, const Qraft__Schedule *sc)
{
    return record_put(t, &schedule_records, sc->id, 0, &sc->base,
                      "put schedules");
}

int qr_store_schedule_delete(struct qr_store_txn *t, const char *id)
{
    return record_delete(t, &schedule_records, id, "delete schedules");
}

int qr_store_schedule_list(struct qr_store_txn *t,
                           qr_store_schedule_cb cb,
                           void *arg)
{
    struct record_walk w = {.r = &schedule_records,
                            .call = call_schedule_cb,
                            .cb.schedule = cb,
                            .arg = arg,
                            .what = "list schedules"};
    return record_list(t, &w, NULL, SIZE_MAX);
}
