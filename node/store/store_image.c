/* Image snapshots: the environment's pages, as one read transaction sees
 * them (qr_store_snapshot_open_image), and their restore
 * (store_restore_image, reached through qr_store_restore).
 *
 * Image snapshot format (produced once the cluster is at
 * QR_FEATURE_LEVEL_IMAGE_SNAPSHOTS, restored by any version that knows
 * the magic; reasoning at "Image snapshots" below):
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
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <lmdb.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/durable.h"
#include "lib/err.h"
#include "store/store_int.h"

#define IMAGE_MAGIC "QRIMAGE1"
#define IMAGE_MAGIC_BYTES 8 /* as long as a pair stream's magic */
#define IMAGE_VERSION 1
#define IMAGE_HEADER_BYTES 40
#define IMAGE_META_PAGES 2
#define IMAGE_ORDER_MARK 0x01020304u

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
 * fsynced) and opens it again with the same flags through store_env_open, which
 * also upgrades an older format (store_settle_format). LMDB has no page
 * checksums: a byte changed in a free page goes unseen (it is never read);
 * a byte changed in a branch page may go unseen by the walk, but not in any
 * key or value it reaches. */

bool qr_store_snapshot_is_image(const void *buf, size_t len)
{
    return buf != NULL && len >= IMAGE_MAGIC_BYTES &&
           memcmp(buf, IMAGE_MAGIC, IMAGE_MAGIC_BYTES) == 0;
}

static int image_corrupt(struct qr_store *s, const char *why)
{
    store_set_errmsg(s, "store: restore: image: %s", why);
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
        store_set_errmsg(s, "store: snapshot: a write transaction is open");
        return QR_ECONFLICT;
    }
    struct qr_store_snap *sn;
    rv = store_snap_begin(s, &sn);
    if (rv != 0) {
        if (rv == -ENOMEM) {
            store_set_errmsg(s, "store: snapshot: out of memory");
        }
        return rv;
    }
    rc = mdb_env_stat(s->env, &st);
    if (rc == 0) {
        rc = mdb_env_info(s->env, &before);
    }
    if (rc == 0) {
        rc = mdb_env_get_fd(s->env, &fd);
    }
    if (rc != 0) {
        rv = store_fail_mdb(s, false, "snapshot", rc);
        goto err_after_txn;
    }
    size_t psize = st.ms_psize;
    uint64_t txnid = mdb_txn_id(sn->txn);
    uint64_t image_bytes = ((uint64_t)before.me_last_pgno + 1) * psize;
    if (fstat(fd, &file) != 0) {
        rv = -errno;
        store_set_errmsg(s, "store: snapshot: stat: %s", strerror(errno));
        goto err_after_txn;
    }
    if (before.me_last_pgno < IMAGE_META_PAGES ||
        (uint64_t)file.st_size < image_bytes || image_bytes > SIZE_MAX) {
        store_set_errmsg(s,
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
        store_set_errmsg(s, "store: snapshot: out of memory");
        rv = -ENOMEM;
        goto err_after_txn;
    }
    /* LMDB does not tell where its map is (me_mapaddr is only set for
     * MDB_FIXEDMAP), so the image maps the file itself, read-only and
     * shared: the same page cache that LMDB's map and its pwrites use. */
    void *m = mmap(NULL, (size_t)image_bytes, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        rv = -errno;
        store_set_errmsg(s, "store: snapshot: mmap: %s", strerror(errno));
        goto err_after_txn;
    }
    sn->map = m;
    sn->map_len = (size_t)image_bytes;
    const uint8_t *map = m;
    memcpy(sn->arena + IMAGE_HEADER_BYTES, map, IMAGE_META_PAGES * psize);
    rc = mdb_env_info(s->env, &after);
    if (rc != 0) {
        rv = store_fail_mdb(s, false, "snapshot", rc);
        goto err_after_txn;
    }
    /* The copied metas are T's only if no commit ran meanwhile. */
    if (before.me_last_txnid != txnid || after.me_last_txnid != txnid ||
        atomic_load(&s->writing)) {
        store_set_errmsg(s,
                         "store: snapshot: a write committed while the meta "
                         "pages were copied");
        rv = QR_ECONFLICT;
        goto err_after_txn;
    }
    uint8_t *h = sn->arena;
    memset(h, 0, IMAGE_HEADER_BYTES);
    memcpy(h, IMAGE_MAGIC, IMAGE_MAGIC_BYTES);
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
        store_set_errmsg(s, "store: restore: create %s: %s", path,
                         strerror(errno));
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
            store_set_errmsg(s, "store: restore: write %s: %s", path,
                             strerror(-rv));
            close(fd);
            return rv;
        }
        off += (size_t)n;
    }
    if (fsync(fd) != 0) {
        int rv = -errno;
        store_set_errmsg(s, "store: restore: fsync %s: %s", path,
                         strerror(errno));
        close(fd);
        return rv;
    }
    close(fd);
    return 0;
}

static int sync_dir(struct qr_store *s, const char *dir)
{
    int rv = qr_fsync_dir(dir);
    if (rv != 0) {
        store_set_errmsg(s, "store: restore: fsync %s: %s", dir, strerror(-rv));
    }
    return rv;
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
        return store_fail_mdb(s, false, "restore: image", rc);
    }
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        const char *why = NULL;
        if (k.mv_size == 0 || k.mv_size > s->max_key_bytes) {
            why = "bad key length";
        } else if (prev.mv_data != NULL &&
                   store_key_cmp(prev.mv_data, prev.mv_size, k.mv_data,
                                 k.mv_size) >= 0) {
            why = "keys out of order";
        } else if (sums && !store_unsummed(db, k.mv_data, k.mv_size) &&
                   !store_value_sound(k.mv_data, k.mv_size, v.mv_data,
                                      v.mv_size)) {
            why = "checksum mismatch";
        }
        if (why != NULL) {
            int rv = store_restore_corrupt(s, db, k.mv_data, k.mv_size, why);
            mdb_cursor_close(c);
            return rv;
        }
        prev = k;
    }
    mdb_cursor_close(c);
    if (rc != MDB_NOTFOUND) {
        return store_fail_mdb(s, false, "restore: image", rc);
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
        return store_fail_mdb(s, false, "restore: image: free list", rc);
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
        rv = store_fail_mdb(s, false, "restore: image: free list", rc);
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
        return store_fail_mdb(s, false, "restore: image", rc);
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
        store_set_errmsg(s, "store: restore: image does not open: %s",
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
        return store_fail_mdb(s, false, "restore: image", rc);
    }
    MDB_dbi dbis[N_DBS];
    bool present[N_DBS] = {false};
    for (int i = 0; i < N_DBS && rv == 0; i++) {
        rc = mdb_dbi_open(txn, store_db_names[i], 0, &dbis[i]);
        if (rc == 0) {
            present[i] = true;
        } else if (rc != MDB_NOTFOUND) {
            rv = store_fail_mdb(s, false, "restore: image: open dbs", rc);
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
            rv = store_fail_mdb(s, false, "restore: image", rc);
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
int store_restore_image(struct qr_store *s, const uint8_t *buf, size_t len)
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
        store_set_errmsg(s, "store: restore: path too long");
        return -ENAMETOOLONG;
    }
    if (mkdir(rdir, 0700) != 0 && errno != EEXIST) {
        rv = -errno;
        store_set_errmsg(s, "store: restore: mkdir %s: %s", rdir,
                         strerror(errno));
        return rv;
    }
    rv = write_file(s, rfile, buf + IMAGE_HEADER_BYTES, (size_t)image_bytes);
    if (rv == 0) {
        rv = verify_image(s, rdir, psize, image_bytes, txnid);
    }
    if (rv == 0) {
        rv = store_check_idle(s, "restore");
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
        store_set_errmsg(s, "store: restore: rename %s: %s", rfile,
                         strerror(errno));
        unlink(rfile);
    } else {
        swapped = true;
        rv = sync_dir(s, s->dir);
    }
    rmdir(rdir);
    /* The image, or after a failed rename the old state, unchanged. */
    rv = store_env_reopen(s, map_bytes, rv);
    if (rv != 0 && swapped) {
        /* The state is the image's, but not known to be durable. */
        atomic_store(&s->failed, true);
    }
    return rv;
}
