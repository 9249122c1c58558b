/* Snapshots of the store as a stream of its pairs (qr_store_snapshot_open,
 * qr_store_snapshot), and the restore of any snapshot (qr_store_restore,
 * which hands an image to store_image.c). Restore keeps the old pages
 * until it commits, so it first grows the map to hold both states (when no
 * transaction is open; qr_store_grow).
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
 * msgs, whatever the snapshot's format. The databases after the last
 * non-empty one are left out, down to N_SNAP_DBS_BEFORE_RUNS: a binary
 * from before workflows restores a snapshot of a cluster that has run
 * none, and one from before flow control (`fcdue`, `fckeys`) a snapshot
 * of a cluster that has no flow-controlled message yet.
 *
 * Values are copied as stored, checksums included: a snapshot's format is
 * its meta "format". Restore checks every value of a format 2 or 3
 * snapshot before it touches anything, and gives each value of a format 1
 * snapshot (or one without a format) its checksum as it lands. */
#include <assert.h>
#include <errno.h>
#include <lmdb.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "lib/err.h"
#include "store/store_int.h"

#define SNAP_MAGIC "QRSNAP01"
#define SNAP_MAGIC_BYTES 8
#define SNAP_VERSION 1
#define SNAP_HEADER_BYTES (SNAP_MAGIC_BYTES + 4 + 4)
#define SNAP_PAIR_HEADER_BYTES 8

/* Where a snapshot's pairs for one database start, found by validation. */
struct snap_db {
    const uint8_t *pairs;
    uint64_t n_pairs;
    bool present;
};

/* Values at least this long are not copied into a snapshot: its buffer
 * points at them in the map (the snapshot's read transaction keeps them in
 * place). Shorter ones are copied with their keys. */
#define SNAP_REF_MIN_BYTES 256

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
    size_t name_len = strlen(store_db_names[db]);
    size_t head = snap_reserve(sn, 4 + name_len + 8);
    if (head == SIZE_MAX) {
        return -ENOMEM;
    }
    put_be32(sn->arena + head, (uint32_t)name_len);
    memcpy(sn->arena + head + 4, store_db_names[db], name_len);

    MDB_cursor *c;
    MDB_val k;
    MDB_val v;
    uint64_t n = 0;
    int rv = 0;
    int rc = mdb_cursor_open(sn->txn, s->dbis[db], &c);
    if (rc != 0) {
        return store_fail_mdb(s, false, "snapshot", rc);
    }
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (v.mv_size > UINT32_MAX) {
            store_set_errmsg(s, "store: snapshot: %s value too large",
                             store_db_names[db]);
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
        return store_fail_mdb(s, false, "snapshot", rc);
    }
    put_be64(sn->arena + head + 4 + name_len, n);
    return 0;
}

int store_snap_begin(struct qr_store *s, struct qr_store_snap **out)
{
    *out = NULL;
    struct qr_store_snap *sn = calloc(1, sizeof *sn);
    if (sn == NULL) {
        return -ENOMEM;
    }
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &sn->txn);
    if (rc != 0) {
        free(sn);
        return store_fail_mdb(s, false, "snapshot", rc);
    }
    sn->s = s;
    atomic_fetch_add(&s->n_txns, 1);
    *out = sn;
    return 0;
}

int qr_store_snapshot_open(struct qr_store *s, struct qr_store_snap **out)
{
    struct qr_store_snap *sn;

    *out = NULL;
    if (atomic_load(&s->failed)) {
        return QR_ESTORE;
    }
    int rv = store_snap_begin(s, &sn);
    if (rv != 0) {
        return rv;
    }
    /* Sized once from the databases' statistics (leaf pages hold every key
     * and every value short enough to be copied), so the walk never moves
     * the arena. */
    size_t arena_bytes = SNAP_HEADER_BYTES;
    size_t n_entries = 0;
    int n_dbs = N_SNAP_DBS_BEFORE_RUNS;
    for (int i = 0; i < N_SNAP_DBS; i++) {
        MDB_stat st;
        if (mdb_stat(sn->txn, s->dbis[i], &st) == 0) {
            if (i >= N_SNAP_DBS_BEFORE_RUNS && st.ms_entries > 0) {
                n_dbs = i + 1;
            }
            arena_bytes += 12 + strlen(store_db_names[i]) +
                           st.ms_entries * SNAP_PAIR_HEADER_BYTES +
                           (size_t)st.ms_psize * st.ms_leaf_pages;
            n_entries += st.ms_entries;
        }
    }
    sn->arena = malloc(arena_bytes);
    sn->arena_cap = sn->arena != NULL ? arena_bytes : 0;
    sn->pieces = malloc((2 * n_entries + 2) * sizeof *sn->pieces);
    sn->pieces_cap = sn->pieces != NULL ? 2 * n_entries + 2 : 0;

    rv = -ENOMEM;
    size_t head = snap_reserve(sn, SNAP_HEADER_BYTES);
    if (head != SIZE_MAX) {
        memcpy(sn->arena, SNAP_MAGIC, SNAP_MAGIC_BYTES);
        put_be32(sn->arena + SNAP_MAGIC_BYTES, SNAP_VERSION);
        put_be32(sn->arena + SNAP_MAGIC_BYTES + 4, (uint32_t)n_dbs);
        rv = 0;
    }
    for (int i = 0; rv == 0 && i < n_dbs; i++) {
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
            store_set_errmsg(s, "store: snapshot: out of memory");
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
        store_set_errmsg(s, "store: snapshot: out of memory (%zu bytes)",
                         total);
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

int store_key_cmp(const uint8_t *a,
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

int store_restore_corrupt(struct qr_store *s,
                          enum db db,
                          const uint8_t *key,
                          size_t key_len,
                          const char *why)
{
    char shown[KEY_SHOWN_BYTES];
    store_escape_key(shown, sizeof shown, key, key_len);
    store_set_errmsg(s,
                     "store: restore: corrupt record in %s at key \"%s\": %s",
                     store_db_names[db], shown, why);
    return QR_ECORRUPT;
}

static int snap_corrupt(struct qr_store *s, const char *why)
{
    store_set_errmsg(s, "store: restore: %s", why);
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
        if (prev != NULL && store_key_cmp(prev, prev_len, key, key_len) >= 0) {
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
            if (strlen(store_db_names[j]) == name_len &&
                memcmp(store_db_names[j], buf + off, name_len) == 0) {
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
            if (!store_unsummed((enum db)db, key, key_len) &&
                !store_value_sound(key, key_len, key + key_len, value_len)) {
                return store_restore_corrupt(s, (enum db)db, key, key_len,
                                             "checksum mismatch");
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
        return store_fail_mdb(s, true, "restore", rc);
    }
    for (uint64_t i = 0; i < sd->n_pairs; i++) {
        MDB_val k = {get_be32(p), (void *)(p + SNAP_PAIR_HEADER_BYTES)};
        MDB_val v = {get_be32(p + 4),
                     (void *)(p + SNAP_PAIR_HEADER_BYTES + k.mv_size)};
        const void *payload = v.mv_data;
        size_t payload_len = v.mv_size;
        bool seal = add_crc && !store_unsummed(db, k.mv_data, k.mv_size);
        if (seal) {
            v.mv_size = CRC_BYTES + payload_len;
            v.mv_data = NULL;
        }
        rc = mdb_cursor_put(c, &k, &v,
                            seal ? MDB_APPEND | MDB_RESERVE : MDB_APPEND);
        if (rc != 0) {
            mdb_cursor_close(c);
            return store_fail_mdb(s, true, "restore", rc);
        }
        if (seal) {
            uint8_t *dst = (uint8_t *)v.mv_data + CRC_BYTES;
            if (payload_len > 0) {
                memcpy(dst, payload, payload_len);
            }
            store_seal_value(k.mv_data, k.mv_size, dst, payload_len);
        }
        p += SNAP_PAIR_HEADER_BYTES + k.mv_size + payload_len;
    }
    mdb_cursor_close(c);
    return 0;
}

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
        return store_restore_image(s, buf, len);
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
        store_set_errmsg(s, "store: restore: a write transaction is open");
        return QR_ECONFLICT;
    }
    rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc != 0) {
        rv = store_fail_mdb(s, true, "restore", rc);
        goto err_after_flag;
    }
    for (int i = 0; i < N_DBS; i++) {
        rc = mdb_drop(txn, s->dbis[i], 0);
        if (rc != 0) {
            rv = store_fail_mdb(s, true, "restore: empty", rc);
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
    rv = store_build_done_index(&t, &n_done);
    if (rv == 0 && format != STORE_FORMAT) {
        rv = store_put_u64(&t, QR_META_FORMAT, STORE_FORMAT, "restore");
    }
    if (rv != 0) {
        goto err_after_txn;
    }
    rc = mdb_txn_commit(txn);
    if (rc != 0) {
        rv = store_fail_mdb(s, true, "restore: commit", rc);
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
