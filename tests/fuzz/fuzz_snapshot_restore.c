/* libFuzzer target: restoring a snapshot (raft_fsm->restore, i.e.
 * qr_store_restore then the fsm's indexes), as a follower does with what
 * its leader sends.
 *
 * The input is the snapshot buffer. Invariants checked: a malformed buffer
 * is refused (RAFT_CORRUPT) and the store still works; after a successful
 * restore, the store's own snapshot restores again and gives the same
 * bytes (restore then snapshot is a fixed point). The store lives under
 * $QRAFT_FUZZ_STORE_BASE, else /dev/shm when it exists, else /tmp, and is
 * reused across inputs. */
#include <dirent.h>
#include <raft.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "lib/err.h"
#include "lib/logger.h"
#include "repl/fsm.h"
#include "store/store.h"

#define MAP_BYTES (256ull << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[256];
static struct qr_store *store;
static struct qr_fsm fsm;

static void cleanup(void)
{
    qr_fsm_close(&fsm);
    qr_store_close(store);
    DIR *d = opendir(dir);
    if (d != NULL) {
        struct dirent *de;
        char path[512];
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] != '.') {
                snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
                unlink(path);
            }
        }
        closedir(d);
    }
    rmdir(dir);
}

static void setup(void)
{
    char errmsg[QR_ERRMSG_BYTES];
    const char *base = getenv("QRAFT_FUZZ_STORE_BASE");
    if (base == NULL || base[0] == '\0') {
        base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    }
    snprintf(dir, sizeof dir, "%s/qraft-fuzz-restore-XXXXXX", base);
    FUZZ_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    if (qr_store_open(dir, MAP_BYTES, &store, errmsg) != 0) {
        fprintf(stderr, "fuzz_snapshot_restore: store: %s\n", errmsg);
        abort();
    }
    FUZZ_CHECK(qr_fsm_init(&fsm, store) == 0, "qr_fsm_init");
    /* Restore failures log at ERROR: expected here, not news. */
    qr_log_set_level(QR_LOG_ERROR + 1);
    atexit(cleanup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        setup();
        ready = 1;
    }
    struct raft_buffer buf = {.base = raft_malloc(size > 0 ? size : 1),
                              .len = size};
    FUZZ_CHECK(buf.base != NULL, "out of memory");
    if (size > 0) {
        memcpy(buf.base, data, size);
    }
    int rv = fsm.raft_fsm.restore(&fsm.raft_fsm, &buf);
    if (rv != 0) {
        FUZZ_CHECK(rv == RAFT_CORRUPT, "restore failed with another code");
        raft_free(buf.base); /* on failure it stays ours */
        /* A refused snapshot leaves the store as it was, working. */
        void *snap = NULL;
        size_t len = 0;
        FUZZ_CHECK(qr_store_snapshot(store, &snap, &len) == 0,
                   "a refused snapshot broke the store");
        free(snap);
        return 0;
    }
    /* Restore, snapshot, restore, snapshot: the two snapshots agree. */
    void *snap1 = NULL;
    size_t len1 = 0;
    FUZZ_CHECK(qr_store_snapshot(store, &snap1, &len1) == 0,
               "no snapshot of a restored store");
    FUZZ_CHECK(qr_store_restore(store, snap1, len1) == 0,
               "the store's own snapshot does not restore");
    void *snap2 = NULL;
    size_t len2 = 0;
    FUZZ_CHECK(qr_store_snapshot(store, &snap2, &len2) == 0,
               "no second snapshot");
    FUZZ_CHECK(len1 == len2 && memcmp(snap1, snap2, len1) == 0,
               "restore then snapshot is not a fixed point");
    free(snap1);
    free(snap2);
    return 0;
}
