/* Store formats (meta "format") and the steps between them, run in the
 * transaction that opens the store (store_settle_format) or that restores
 * a snapshot (store_build_done_index).
 *
 * Formats: 1, values without checksums (qraft up to e528cea); 2, values
 * with checksums; 3, with the `done` index (STORE_FORMAT). Opening a
 * format 1 store rewrites every value with its CRC in the transaction that
 * opens it (migrate_to_checksums), which, like a restore, needs the map to
 * hold about twice the state; opening a format 1 or 2 store builds the
 * `done` index in that transaction too (store_build_done_index). A newer
 * format is refused with QR_ECORRUPT, and so is format 0. */
#include <assert.h>
#include <errno.h>
#include <lmdb.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/clock.h"
#include "lib/err.h"
#include "lib/logger.h"
#include "store/store_int.h"

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
            rv = store_fail_mdb(s, false, "open: add checksums", rc);
            break;
        }
        for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            if (store_unsummed((enum db)db, k.mv_data, k.mv_size)) {
                continue;
            }
            if (k.mv_size > sizeof key) {
                store_set_errmsg(s,
                                 "store: open: add checksums: %s key too long",
                                 store_db_names[db]);
                rv = QR_ECORRUPT;
                break;
            }
            if (cap < CRC_BYTES + v.mv_size) {
                uint8_t *b = realloc(buf, CRC_BYTES + v.mv_size);
                if (b == NULL) {
                    store_set_errmsg(
                        s, "store: open: add checksums: out of memory");
                    rv = -ENOMEM;
                    break;
                }
                buf = b;
                cap = CRC_BYTES + v.mv_size;
            }
            /* Both point into the page the put rewrites: copy them. */
            memcpy(key, k.mv_data, k.mv_size);
            memcpy(buf + CRC_BYTES, v.mv_data, v.mv_size);
            store_seal_value(key, k.mv_size, buf + CRC_BYTES, v.mv_size);
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
            rv = store_fail_mdb(s, false, "open: add checksums", rc);
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
int store_build_done_index(struct qr_store_txn *t, uint64_t *n_keys)
{
    const char *what = "build done index";
    MDB_cursor *c;
    MDB_val k;
    MDB_val v;
    int rv;
    int rc;

    assert(t->write);
    *n_keys = 0;
    rc = mdb_drop(t->txn, t->s->dbis[DB_DONE], 0);
    if (rc != 0) {
        return store_fail_mdb(t->s, true, what, rc);
    }
    rc = mdb_cursor_open(t->txn, t->s->dbis[DB_MSGS], &c);
    if (rc != 0) {
        return store_fail_mdb(t->s, true, what, rc);
    }
    rv = 0;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (v.mv_size < CRC_BYTES ||
            !store_value_sound(k.mv_data, k.mv_size, v.mv_data, v.mv_size)) {
            continue;
        }
        Qraft__Message *m =
            qraft__message__unpack(NULL, v.mv_size - CRC_BYTES,
                                   (const uint8_t *)v.mv_data + CRC_BYTES);
        if (m == NULL) {
            continue;
        }
        if (store_in_done(m->state) && m->id != NULL &&
            strlen(m->id) + DUE_PREFIX_BYTES <= t->s->max_key_bytes) {
            uint8_t key[KEY_BUF_BYTES];
            size_t len = store_done_key(key, m);
            rv = store_put_raw(t, DB_DONE, key, len, NULL, 0, what);
            (*n_keys)++;
        }
        qraft__message__free_unpacked(m, NULL);
        if (rv != 0) {
            break;
        }
    }
    mdb_cursor_close(c);
    if (rv == 0 && rc != MDB_NOTFOUND) {
        rv = store_fail_mdb(t->s, true, what, rc);
    }
    return rv;
}

/* Brings the store in the open transaction txn to STORE_FORMAT: a new
 * store is stamped with it, a format 1 store gets its checksums, and a
 * format 1 or 2 store its `done` index. */
int store_settle_format(struct qr_store *s, MDB_txn *txn)
{
    struct qr_store_txn t = {s, txn, true};
    uint64_t format;
    int rv = store_get_u64(&t, QR_META_FORMAT, &format, "open: read format");
    if (rv == QR_ENOTFOUND) {
        return store_put_u64(&t, QR_META_FORMAT, STORE_FORMAT,
                             "open: write format");
    }
    if (rv != 0) {
        return rv;
    }
    if (format > STORE_FORMAT) {
        store_set_errmsg(s,
                         "store: open: data format %llu is newer than this "
                         "version supports (%d)",
                         (unsigned long long)format, STORE_FORMAT);
        return QR_ECORRUPT;
    }
    if (format < STORE_FORMAT_UNSUMMED) {
        store_set_errmsg(s,
                         "store: open: data format %llu is not one qraft wrote",
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
    rv = store_build_done_index(&t, &n);
    if (rv == 0) {
        rv = store_put_u64(&t, QR_META_FORMAT, STORE_FORMAT,
                           "open: write format");
    }
    if (rv == 0) {
        QR_INFO("store", "format %d: %llu finished messages indexed in %llu ms",
                STORE_FORMAT, (unsigned long long)n,
                (unsigned long long)(qr_clock_mono_ms() - start_ms));
    }
    return rv;
}
