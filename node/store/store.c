/* The core of the node's applied state in LMDB (node/store/ is the only
 * folder that includes <lmdb.h>; store_int.h lists its rooms): the
 * environment and its transactions, the FAILED state and errors, the value
 * framing every other file of the store writes and reads through, meta
 * records, space and map growth. It keeps the invariants listed in store.h
 * with the rest of the folder (the `due`, `dlq`, `qfifo` and `done`
 * indexes, the per-state counters and `dedupx` in step with their
 * records: store_msg.c), maps every MDB_* code to a QR_E* code at this
 * boundary, and hands out only decoded copies, never pointers into the map
 * (but for the buffers of an open snapshot, which its read transaction
 * keeps valid).
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
 * of its key. Writes seal a value (store_put_reserve + store_seal_value:
 * store_put_raw, store_put_packed); every read checks it (store_open_value:
 * store_get_raw, store_walk_db and the cursors of their own), so a byte
 * changed anywhere in a pair, key or value, is found the first time the
 * pair is read. A pair that fails, or that does not decode, is
 * store_corrupt_record: QR_ECORRUPT with errmsg naming the database and the
 * key (escaped), a count and a log line; in a write transaction the store
 * fails as for any other corrupt value. The exception is meta "format", 8
 * bytes with no CRC, which every version reads alike.
 *
 * Formats: store_migrate.c. qr_store_open with map_bytes 0 uses
 * QR_STORE_DEFAULT_MAP_BYTES. */
#include "store/store.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <lmdb.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/crc32c.h"
#include "lib/durable.h"
#include "lib/err.h"
#include "lib/logger.h"
#include "store/store_int.h"

/* The flags of every open of the environment (see store_env_open). */
#define STORE_ENV_FLAGS (MDB_NOSYNC | MDB_NOTLS)
#define MAX_READERS 256

const char *const store_db_names[N_DBS] = {
    "meta",   "msgs",  "due",       "dedup",  "dedupx", "dlq",    "events",
    "queues", "qfifo", "schedules", "groups", "runs",   "wsteps", "waiters",
    "wdue",   "rdone", "fcdue",     "fckeys", "done",
};

__attribute__((format(printf, 2, 3))) void store_set_errmsg(struct qr_store *s,
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
int store_fail_mdb(struct qr_store *s, bool write, const char *what, int rc)
{
    store_set_errmsg(s, "store: %s: %s", what, mdb_strerror(rc));
    if (rc == MDB_MAP_FULL) {
        return QR_ENOSPACE;
    }
    if (write) {
        atomic_store(&s->failed, true);
    }
    return map_mdb(rc);
}

/* Records a stored value that does not decode or an index out of step. */
int store_fail_corrupt(struct qr_store_txn *t,
                       const char *what,
                       const char *why)
{
    store_set_errmsg(t->s, "store: %s: %s", what, why);
    if (t->write) {
        atomic_store(&t->s->failed, true);
    }
    return QR_ECORRUPT;
}

/* Writes key (len bytes, any) into out (size bytes, terminated) as
 * printable text: printable ASCII as it is, but for '"' and '\\', every
 * other byte as \\xNN; a key too long to show ends with "...". */
void store_escape_key(char *out, size_t size, const uint8_t *key, size_t len)
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
int store_corrupt_record(struct qr_store_txn *t,
                         enum db db,
                         const MDB_val *k,
                         const char *what,
                         const char *why)
{
    struct qr_store *s = t->s;
    char key[KEY_SHOWN_BYTES];
    char msg[QR_ERRMSG_BYTES];

    store_escape_key(key, sizeof key, k->mv_data, k->mv_size);
    snprintf(msg, sizeof msg,
             "corrupt record in %s at key \"%s\" (%s: %s): run the "
             "rebuild-from-peers procedure",
             store_db_names[db], key, what, why);
    store_set_errmsg(s, "store: %s", msg);
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
bool store_unsummed(enum db db, const void *key, size_t key_len)
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
void store_seal_value(const void *key,
                      size_t key_len,
                      uint8_t *payload,
                      size_t payload_len)
{
    put_be32(payload - CRC_BYTES, pair_crc(key, key_len, payload, payload_len));
}

/* Whether a stored value (checksum and payload) matches its key. */
bool store_value_sound(const void *key,
                       size_t key_len,
                       const uint8_t *value,
                       size_t value_len)
{
    return value_len >= CRC_BYTES &&
           get_be32(value) ==
               pair_crc(key, key_len, value + CRC_BYTES, value_len - CRC_BYTES);
}

/* Checks a pair read from db against its checksum and narrows *v to its
 * payload; a mismatch is store_corrupt_record. Every read of a value goes
 * through here (store_get_raw, store_walk_db and the few cursors of their own).
 */
int store_open_value(struct qr_store_txn *t,
                     enum db db,
                     const MDB_val *k,
                     MDB_val *v,
                     const char *what)
{
    if (store_unsummed(db, k->mv_data, k->mv_size)) {
        return 0;
    }
    if (!store_value_sound(k->mv_data, k->mv_size, v->mv_data, v->mv_size)) {
        return store_corrupt_record(
            t, db, k, what,
            v->mv_size < CRC_BYTES ? "value too short" : "checksum mismatch");
    }
    v->mv_data = (uint8_t *)v->mv_data + CRC_BYTES;
    v->mv_size -= CRC_BYTES;
    return 0;
}

int store_bad_request(struct qr_store *s, const char *what, const char *why)
{
    store_set_errmsg(s, "store: %s: %s", what, why);
    return QR_EBADREQ;
}

int store_check_txn(struct qr_store_txn *t, bool need_write, const char *what)
{
    assert(t != NULL);
    if (atomic_load(&t->s->failed)) {
        return QR_ESTORE;
    }
    if (need_write && !t->write) {
        return store_bad_request(t->s, what, "read-only transaction");
    }
    return 0;
}

/* A key made of `text` after prefix_bytes of prefix: text must be
 * non-empty (else `empty`) and fit the maximum key size (else `too_long`). */
static int check_key_text(struct qr_store *s,
                          const char *text,
                          size_t prefix_bytes,
                          const char *empty,
                          const char *too_long,
                          const char *what)
{
    if (text == NULL || text[0] == '\0') {
        return store_bad_request(s, what, empty);
    }
    if (strlen(text) + prefix_bytes > s->max_key_bytes) {
        return store_bad_request(s, what, too_long);
    }
    return 0;
}

/* Message ids are used inside `due` keys, so they must leave room for the
 * prefix. */
int store_check_id(struct qr_store *s, const char *id, const char *what)
{
    return check_key_text(s, id, DUE_PREFIX_BYTES, "empty message id",
                          "message id too long", what);
}

int store_check_name(struct qr_store *s,
                     const char *name,
                     size_t prefix_bytes,
                     const char *what)
{
    return check_key_text(s, name, prefix_bytes, "empty key", "key too long",
                          what);
}

int store_check_key(struct qr_store_txn *t,
                    bool need_write,
                    const char *name,
                    size_t prefix_bytes,
                    const char *what)
{
    int rv = store_check_txn(t, need_write, what);
    if (rv != 0) {
        return rv;
    }
    return store_check_name(t->s, name, prefix_bytes, what);
}

int store_check_txn_id(struct qr_store_txn *t,
                       bool need_write,
                       const char *id,
                       const char *what)
{
    int rv = store_check_txn(t, need_write, what);
    if (rv != 0) {
        return rv;
    }
    return store_check_id(t->s, id, what);
}

/* Low-level accessors. `val` of store_get_raw points into the map: decode or
 * copy it before the next write. */
int store_get_raw(struct qr_store_txn *t,
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
        return store_fail_mdb(t->s, t->write, what, rc);
    }
    return store_open_value(t, db, &k, val, what);
}

/* Reserves room for a payload of payload_len bytes under `key`, after its
 * checksum, and returns where to write the payload. The caller writes it,
 * then seals it (store_seal_value) before the next write. */
int store_put_reserve(struct qr_store_txn *t,
                      enum db db,
                      const void *key,
                      size_t key_len,
                      size_t payload_len,
                      uint8_t **payload,
                      const char *what)
{
    MDB_val k = {key_len, (void *)key};
    MDB_val v = {CRC_BYTES + payload_len, NULL};
    assert(t->write);
    int rc = mdb_put(t->txn, t->s->dbis[db], &k, &v, MDB_RESERVE);
    if (rc != 0) {
        return store_fail_mdb(t->s, t->write, what, rc);
    }
    *payload = (uint8_t *)v.mv_data + CRC_BYTES;
    return 0;
}

/* Stores value_len bytes (value may be NULL when 0) under `key`, with
 * their checksum. */
int store_put_raw(struct qr_store_txn *t,
                  enum db db,
                  const void *key,
                  size_t key_len,
                  const void *value,
                  size_t value_len,
                  const char *what)
{
    uint8_t *payload;
    int rv;

    assert(t->write);
    if (store_unsummed(db, key, key_len)) {
        MDB_val k = {key_len, (void *)key};
        MDB_val v = {value_len, (void *)value};
        int rc = mdb_put(t->txn, t->s->dbis[db], &k, &v, 0);
        return rc != 0 ? store_fail_mdb(t->s, t->write, what, rc) : 0;
    }
    rv = store_put_reserve(t, db, key, key_len, value_len, &payload, what);
    if (rv != 0) {
        return rv;
    }
    if (value_len > 0) {
        memcpy(payload, value, value_len);
    }
    store_seal_value(key, key_len, payload, value_len);
    return 0;
}

/* Deletes `key`; an absent key is not an error (the end state is right). */
int store_del_raw(struct qr_store_txn *t,
                  enum db db,
                  const void *key,
                  size_t key_len,
                  const char *what)
{
    MDB_val k = {key_len, (void *)key};
    assert(t->write);
    int rc = mdb_del(t->txn, t->s->dbis[db], &k, NULL);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        return store_fail_mdb(t->s, t->write, what, rc);
    }
    return 0;
}

int store_cursor_open(struct qr_store_txn *t,
                      enum db db,
                      MDB_cursor **c,
                      const char *what)
{
    int rc = mdb_cursor_open(t->txn, t->s->dbis[db], c);
    if (rc != 0) {
        return store_fail_mdb(t->s, t->write, what, rc);
    }
    return 0;
}

int store_cursor_first(struct qr_store_txn *t,
                       MDB_cursor *c,
                       enum db db,
                       MDB_val *k,
                       MDB_val *v,
                       const char *what)
{
    int rc = mdb_cursor_get(c, k, v, MDB_FIRST);
    if (rc == MDB_NOTFOUND) {
        return QR_ENOTFOUND;
    }
    if (rc != 0) {
        return store_fail_mdb(t->s, t->write, what, rc);
    }
    return store_open_value(t, db, k, v, what);
}

int store_get_u64(struct qr_store_txn *t,
                  const char *name,
                  uint64_t *value,
                  const char *what)
{
    MDB_val v;
    int rv = store_get_raw(t, DB_META, name, strlen(name), &v, what);
    if (rv != 0) {
        return rv;
    }
    if (v.mv_size != 8) {
        MDB_val k = {strlen(name), (void *)name};
        return store_corrupt_record(t, DB_META, &k, what, "not 8 bytes");
    }
    *value = get_be64(v.mv_data);
    return 0;
}

int store_put_u64(struct qr_store_txn *t,
                  const char *name,
                  uint64_t value,
                  const char *what)
{
    uint8_t buf[8];
    put_be64(buf, value);
    return store_put_raw(t, DB_META, name, strlen(name), buf, sizeof buf, what);
}

/* Opens the environment in dir into s->env and s->dbis, bringing it to
 * STORE_FORMAT in the transaction that opens it (store_settle_format). Used by
 * qr_store_open and, on the same object, by an image restore's swap. On
 * failure s->env is NULL and errmsg says why. */
int store_env_open(struct qr_store *s, const char *dir, uint64_t map_bytes)
{
    MDB_txn *txn;
    int rc;
    int rv;

    rc = mdb_env_create(&s->env);
    if (rc != 0) {
        s->env = NULL;
        return store_fail_mdb(s, false, "create env", rc);
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
        rv = store_fail_mdb(s, false, "configure env", rc);
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
        rv = store_fail_mdb(s, false, what, rc);
        goto err_after_env;
    }
    /* Before anything writes: is LMDB at the transaction a clean close's
     * mark named? (A reopen after a restore never is: the mark is used up.) */
    MDB_envinfo info;
    s->opened_clean = s->clean_mark_txnid != 0 &&
                      mdb_env_info(s->env, &info) == 0 &&
                      info.me_last_txnid == s->clean_mark_txnid;
    s->clean_mark_txnid = 0;
    s->max_key_bytes = (size_t)mdb_env_get_maxkeysize(s->env);
    if (s->max_key_bytes > KEY_BUF_BYTES) {
        s->max_key_bytes = KEY_BUF_BYTES;
    }

    rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc != 0) {
        rv = store_fail_mdb(s, false, "begin open", rc);
        goto err_after_env;
    }
    for (int i = 0; i < N_DBS; i++) {
        rc = mdb_dbi_open(txn, store_db_names[i], MDB_CREATE, &s->dbis[i]);
        if (rc != 0) {
            rv = store_fail_mdb(s, false, "open dbs", rc);
            goto err_after_txn;
        }
    }
    rv = store_settle_format(s, txn);
    if (rv != 0) {
        goto err_after_txn;
    }
    rc = mdb_txn_commit(txn);
    if (rc != 0) {
        rv = store_fail_mdb(s, false, "commit open", rc);
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

/* ---------------------------------------------------------------------------
 * The clean-stop mark. The store runs with MDB_NOSYNC, and after a power loss
 * LMDB promises nothing for such a file, so by default a node restores its
 * last raft snapshot at every start and replays the log after it. A clean
 * close syncs the environment and then leaves a mark, CLEAN_MARK in the
 * environment's directory ("qraft-clean <LMDB's last transaction id>\n",
 * synced, and its directory synced). qr_store_open takes the mark away
 * (unlinked, the directory synced) before it opens the environment, so the
 * mark is on disk only while the file is exactly as that close left it, and
 * the open counts as clean only if LMDB's last transaction is still the one
 * the mark names (a binary that does not know the mark may have written
 * since). A mark that cannot be taken away fails the open: left behind, it
 * would vouch for a file written without syncs after it. */

#define CLEAN_MARK "clean-stop"
#define CLEAN_MARK_PREFIX "qraft-clean "

static int clean_mark_path(const struct qr_store *s, char path[PATH_MAX])
{
    int n = snprintf(path, PATH_MAX, "%s/%s", s->dir, CLEAN_MARK);
    return n > 0 && n < PATH_MAX ? 0 : -ENAMETOOLONG;
}

/* Reads and durably removes the mark: s->clean_mark_txnid is the
 * transaction it names, 0 when there is none (or it does not parse). */
static int take_clean_mark(struct qr_store *s)
{
    char path[PATH_MAX];
    char text[64];
    int rv = clean_mark_path(s, path);
    if (rv != 0) {
        store_set_errmsg(s, "store: open: %s/%s: path too long", s->dir,
                         CLEAN_MARK);
        return rv;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            return 0;
        }
        rv = -errno;
        store_set_errmsg(s, "store: open: reading the clean-stop mark %s: %s",
                         path, strerror(errno));
        return rv;
    }
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    uint64_t txnid = 0;
    size_t prefix = strlen(CLEAN_MARK_PREFIX);
    if (n > (ssize_t)prefix && memcmp(text, CLEAN_MARK_PREFIX, prefix) == 0) {
        text[n] = '\0';
        char *end = NULL;
        unsigned long long v = strtoull(text + prefix, &end, 10);
        if (end != text + prefix && *end == '\n') {
            txnid = v;
        }
    }
    if (unlink(path) != 0) {
        rv = -errno;
    } else {
        rv = qr_fsync_dir(s->dir);
    }
    if (rv != 0) {
        store_set_errmsg(s,
                         "store: open: taking away the clean-stop mark %s: "
                         "%s",
                         path, strerror(-rv));
        return rv;
    }
    s->clean_mark_txnid = txnid;
    return 0;
}

/* After a successful sync: leaves the mark for transaction txnid. A mark
 * that cannot be written whole and synced is removed (the next start then
 * restores the last snapshot, as after a crash). */
static void leave_clean_mark(struct qr_store *s, uint64_t txnid)
{
    char path[PATH_MAX];
    char text[64];
    if (clean_mark_path(s, path) != 0) {
        return;
    }
    int len =
        snprintf(text, sizeof text, CLEAN_MARK_PREFIX "%" PRIu64 "\n", txnid);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    bool ok = fd >= 0 && write(fd, text, (size_t)len) == len && fsync(fd) == 0;
    int err = errno;
    if (fd >= 0 && close(fd) != 0 && ok) {
        ok = false;
        err = errno;
    }
    if (ok) {
        int rv = qr_fsync_dir(s->dir);
        ok = rv == 0;
        err = -rv;
    }
    if (!ok) {
        QR_WARN("store",
                "close: leaving the clean-stop mark %s: %s (the next start "
                "restores the last snapshot)",
                path, strerror(err));
        unlink(path);
    }
}

bool qr_store_opened_clean(const struct qr_store *s)
{
    return s->opened_clean;
}

int store_check_idle(struct qr_store *s, const char *what)
{
    if (atomic_load(&s->n_txns) != 0 || atomic_load(&s->writing)) {
        store_set_errmsg(s, "store: %s: a transaction or snapshot is open",
                         what);
        return QR_ECONFLICT;
    }
    return 0;
}

int store_env_reopen(struct qr_store *s, uint64_t map_bytes, int rv)
{
    char errmsg[QR_ERRMSG_BYTES];
    snprintf(errmsg, sizeof errmsg, "%s", s->errmsg);
    int rv_open = store_env_open(s, s->dir, map_bytes);
    if (rv_open != 0) {
        atomic_store(&s->failed, true);
        return rv_open;
    }
    if (rv != 0) {
        snprintf(s->errmsg, sizeof s->errmsg, "%s", errmsg);
    }
    return rv;
}

int qr_store_clear(struct qr_store *s)
{
    char path[PATH_MAX];
    MDB_envinfo info;
    if (atomic_load(&s->failed)) {
        return QR_ESTORE;
    }
    int rv = store_check_idle(s, "clear");
    if (rv != 0) {
        return rv;
    }
    if (snprintf(path, sizeof path, "%s/data.mdb", s->dir) >=
        (int)sizeof path) {
        store_set_errmsg(s, "store: clear: path too long");
        return -ENAMETOOLONG;
    }
    int rc = mdb_env_info(s->env, &info);
    if (rc != 0) {
        return store_fail_mdb(s, false, "clear: env info", rc);
    }
    /* Not dropped database by database: that walks the old trees, which
     * are what is not trusted. A new file instead. */
    mdb_env_close(s->env);
    s->env = NULL;
    if (unlink(path) != 0 && errno != ENOENT) {
        rv = -errno;
        store_set_errmsg(s, "store: clear: unlink %s: %s", path,
                         strerror(errno));
    }
    if (rv == 0) {
        rv = qr_fsync_dir(s->dir);
        if (rv != 0) {
            store_set_errmsg(s, "store: clear: fsync %s: %s", s->dir,
                             strerror(-rv));
        }
    }
    /* A new file, or after a failed unlink the old one. */
    return store_env_reopen(s, info.me_mapsize, rv);
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
        store_set_errmsg(s, "store: open: out of memory");
        rv = -ENOMEM;
        goto err_after_alloc;
    }
    rv = take_clean_mark(s);
    if (rv == 0) {
        rv = store_env_open(s, dir, map_bytes);
    }
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
        MDB_envinfo info;
        bool clean = mdb_env_sync(s->env, 1) == 0 && !atomic_load(&s->failed) &&
                     atomic_load(&s->n_corrupt) == 0 &&
                     mdb_env_info(s->env, &info) == 0;
        mdb_env_close(s->env);
        if (clean) {
            leave_clean_mark(s, info.me_last_txnid);
        }
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
        return store_fail_mdb(s, false, "sync", rc);
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
        return store_fail_mdb(s, false, "space: begin", rc);
    }
    rc = mdb_cursor_open(txn, 0 /* FREE_DBI */, &c);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return store_fail_mdb(s, false, "space: free list", rc);
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
        return store_fail_mdb(s, false, "space: free list", rc);
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
        return store_fail_mdb(s, false, "space", rc);
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
        return store_fail_mdb(s, false, "grow", rc);
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
        store_set_errmsg(s,
                         "store: grow: %llu bytes do not fit the address space",
                         (unsigned long long)map_bytes);
        return -EINVAL;
    }
    /* Unmaps and maps again: legal only with no transaction open in this
     * process (checked above; everything runs on the store's thread). A
     * failure here leaves the environment without its map: the store
     * fails. */
    rc = mdb_env_set_mapsize(s->env, (size_t)map_bytes);
    if (rc != 0) {
        return store_fail_mdb(s, true, "grow", rc);
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
        store_set_errmsg(s,
                         "store: begin: a write transaction is already open");
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
        rv = store_fail_mdb(s, write, "begin", rc);
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

    /* Only the one write transaction holds the writing flag. */
    assert(!t->write || atomic_load(&s->writing));
    assert(atomic_load(&s->n_txns) > 0);
    if (atomic_load(&s->failed)) {
        mdb_txn_abort(t->txn);
        rv = QR_ESTORE;
    } else {
        int rc = mdb_txn_commit(t->txn);
        if (rc != 0) {
            rv = store_fail_mdb(s, t->write, "commit", rc);
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
    assert(!t->write || atomic_load(&t->s->writing));
    assert(atomic_load(&t->s->n_txns) > 0);
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
    int rv = store_check_key(t, false, name, 0, "get meta");
    if (rv != 0) {
        return rv;
    }
    return store_get_u64(t, name, value, "get meta");
}

int qr_store_meta_put_u64(struct qr_store_txn *t,
                          const char *name,
                          uint64_t value)
{
    int rv = store_check_key(t, true, name, 0, "put meta");
    if (rv != 0) {
        return rv;
    }
    return store_put_u64(t, name, value, "put meta");
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
    rv = store_check_key(t, false, name, 0, "get meta");
    if (rv == 0) {
        rv = store_get_raw(t, DB_META, name, strlen(name), &v, "get meta");
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
    int rv = store_check_key(t, true, name, 0, "put meta");
    if (rv != 0) {
        return rv;
    }
    return store_put_raw(t, DB_META, name, strlen(name), value, len,
                         "put meta");
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
        return store_corrupt_record(t, DB_META, &k, "get meta",
                                    "does not decode");
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
