/* Admission control for space: the rule is in admit.h. */
#include "store/admit.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>

#include "lib/err.h"
#include "lib/logger.h"

/* The disk and the map are read again when the last reading is older. */
#define READ_EVERY_MS 10
/* The store's free list is counted at most this often (a read walk). */
#define COUNT_FREE_EVERY_MS 1000
#define LOG_EVERY_MS 60000
#define REFUSE_LOG_EVERY_MS 10000

static double mib(uint64_t bytes)
{
    return (double)bytes / (1024.0 * 1024.0);
}

static uint64_t sub_or_0(uint64_t a, uint64_t b)
{
    return a > b ? a - b : 0;
}

static int read_disk(const char *dir, uint64_t *size, uint64_t *avail)
{
    struct statvfs st;
    if (statvfs(dir, &st) != 0) {
        return -errno;
    }
    *size = (uint64_t)st.f_blocks * st.f_frsize;
    *avail = (uint64_t)st.f_bavail * st.f_frsize;
    return 0;
}

uint64_t qr_admit_map_bytes(const struct qr_config *cfg, const char *dir)
{
    uint64_t size = 0;
    uint64_t avail = 0;
    if (cfg->store_map_bytes != 0) {
        return cfg->store_map_bytes;
    }
    if (read_disk(dir, &size, &avail) != 0 || size == 0) {
        size = QR_STORE_DEFAULT_MAP_BYTES;
    }
    if (cfg->store_max_bytes > size) {
        size = cfg->store_max_bytes;
    }
    return size + QR_ADMIT_MAP_HEADROOM_BYTES;
}

/* Reads what is cheap (statvfs, the environment's info), and the free list
 * when count_free. */
static int read_space(struct qr_admit *a, bool count_free)
{
    struct qr_admit_space *sp = &a->space;
    int rv = read_disk(a->config->data_dir, &sp->disk_size_bytes,
                       &sp->disk_free_bytes);
    if (rv != 0) {
        return rv;
    }
    rv = qr_store_space(a->store, count_free, &a->store_space);
    if (rv != 0) {
        return rv;
    }
    const struct qr_store_space *ss = &a->store_space;
    sp->reserve_bytes = a->reserve_bytes;
    sp->store_map_bytes = ss->map_bytes;
    sp->store_file_bytes = ss->file_bytes;
    sp->store_reusable_bytes =
        ss->reusable_bytes < ss->file_bytes ? ss->reusable_bytes : 0;
    sp->store_used_bytes = ss->file_bytes - sp->store_reusable_bytes;
    a->have_reading = true;
    return 0;
}

enum verdict {
    ROOM,
    DISK_LOW,
    STORE_LIMIT,
    MAP_LOW,
};

/* Applies the rule to the reading; *room: how many more live bytes the
 * binding part of the rule allows. */
static enum verdict judge(const struct qr_admit *a,
                          uint64_t pending_bytes,
                          uint64_t *room)
{
    const struct qr_admit_space *sp = &a->space;
    uint64_t u = sp->store_used_bytes;
    uint64_t disk_have = sp->disk_free_bytes + sp->store_reusable_bytes;
    uint64_t disk_need = a->reserve_bytes + u + 2 * pending_bytes;
    uint64_t map_have = sub_or_0(sp->store_map_bytes, sp->store_file_bytes) +
                        sp->store_reusable_bytes;
    uint64_t map_need = a->reserve_bytes + 2 * pending_bytes;
    uint64_t disk_room = sub_or_0(disk_have, disk_need);
    uint64_t map_room = sub_or_0(map_have, map_need);
    uint64_t limit_room = UINT64_MAX;
    if (a->config->store_max_bytes != 0) {
        limit_room = sub_or_0(a->config->store_max_bytes, u);
    }
    enum verdict v = ROOM;
    uint64_t r = UINT64_MAX;
    /* Each byte the state gains costs the disk about three: in the store,
     * in the raft log, and in the room kept for the next snapshot. */
    if (disk_have < disk_need) {
        v = DISK_LOW;
    } else if (limit_room == 0) {
        v = STORE_LIMIT;
    } else if (map_have < map_need) {
        v = MAP_LOW;
    }
    if (disk_room / 3 < r) {
        r = disk_room / 3;
    }
    if (limit_room < r) {
        r = limit_room;
    }
    if (map_room < r) {
        r = map_room;
    }
    *room = v == ROOM ? r : 0;
    return v;
}

static void update_limit(struct qr_admit *a)
{
    uint64_t room;
    (void)judge(a, 0, &room);
    a->space.store_limit_bytes = a->space.store_used_bytes + room;
}

/* The client's sentence for a refusal. */
static void explain(const struct qr_admit *a,
                    enum verdict v,
                    uint64_t pending_bytes,
                    char *why,
                    size_t why_size)
{
    const struct qr_admit_space *sp = &a->space;
    const char *tail =
        "; nothing was written. Reads, cancels and deletes still work: free "
        "space (delete dead letters or other files on that disk) or add "
        "disk (docs/operations.md, \"Disk or store full\")";
    switch (v) {
        case DISK_LOW: {
            uint64_t have = sp->disk_free_bytes + sp->store_reusable_bytes;
            uint64_t need =
                a->reserve_bytes + sp->store_used_bytes + 2 * pending_bytes;
            snprintf(why, why_size,
                     "insufficient storage: the disk of %s has %.1f MiB free "
                     "(+%.1f MiB reusable in the store), below the %.1f MiB "
                     "it must keep (reserve %.1f MiB, room for a snapshot of "
                     "the %.1f MiB state, %.1f MiB of writes in flight): "
                     "short by %.1f MiB%s",
                     a->config->data_dir, mib(sp->disk_free_bytes),
                     mib(sp->store_reusable_bytes), mib(need),
                     mib(a->reserve_bytes), mib(sp->store_used_bytes),
                     mib(2 * pending_bytes), mib(need - have), tail);
            break;
        }
        case STORE_LIMIT:
            snprintf(why, why_size,
                     "insufficient storage: the store holds %.1f MiB, at its "
                     "limit of %.1f MiB (--store-max-bytes): over by %.1f "
                     "MiB%s, or raise --store-max-bytes",
                     mib(sp->store_used_bytes), mib(a->config->store_max_bytes),
                     mib(sp->store_used_bytes - a->config->store_max_bytes),
                     tail);
            break;
        case MAP_LOW:
            snprintf(why, why_size,
                     "insufficient storage: the store's map of %.1f MiB has "
                     "%.1f MiB left, below the %.1f MiB reserve; it grows "
                     "once no snapshot is being written; retry shortly",
                     mib(sp->store_map_bytes),
                     mib(sub_or_0(sp->store_map_bytes, sp->store_file_bytes) +
                         sp->store_reusable_bytes),
                     mib(a->reserve_bytes));
            break;
        case ROOM:
            snprintf(why, why_size, "room to write");
            break;
    }
}

int qr_admit_init(struct qr_admit *a,
                  const struct qr_config *cfg,
                  struct qr_store *store,
                  char *errmsg)
{
    memset(a, 0, sizeof *a);
    a->config = cfg;
    a->store = store;
    int rv = read_space(a, true);
    if (rv != 0) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "space: reading %s: %s",
                 cfg->data_dir,
                 rv == QR_ESTORE ? qr_store_errmsg(store) : qr_strerror(rv));
        return rv;
    }
    a->reserve_bytes = cfg->min_free_bytes;
    if (a->reserve_bytes == 0) {
        a->reserve_bytes = a->space.disk_size_bytes / 20;
        if (a->reserve_bytes < QR_ADMIT_MIN_RESERVE_BYTES) {
            a->reserve_bytes = QR_ADMIT_MIN_RESERVE_BYTES;
        }
        if (a->reserve_bytes > QR_ADMIT_MAX_RESERVE_BYTES) {
            a->reserve_bytes = QR_ADMIT_MAX_RESERVE_BYTES;
        }
    }
    a->space.reserve_bytes = a->reserve_bytes;
    update_limit(a);
    QR_INFO("admit",
            "space: disk %.1f MiB, %.1f MiB free; store %.1f MiB used, map "
            "%.1f MiB; writes are refused below a %.1f MiB reserve",
            mib(a->space.disk_size_bytes), mib(a->space.disk_free_bytes),
            mib(a->space.store_used_bytes), mib(a->space.store_map_bytes),
            mib(a->reserve_bytes));
    return 0;
}

/* Grows the map ahead of need: when its room is under a quarter of it or
 * under twice the reserve. */
static void maybe_grow(struct qr_admit *a, uint64_t now_ms)
{
    const struct qr_admit_space *sp = &a->space;
    uint64_t room = sub_or_0(sp->store_map_bytes, sp->store_file_bytes);
    if (room >= sp->store_map_bytes / 4 && room >= 2 * a->reserve_bytes) {
        return;
    }
    uint64_t old_bytes = sp->store_map_bytes;
    int rv = qr_store_grow(a->store, 0);
    if (rv == QR_EUNAVAIL) {
        return; /* a snapshot is open: next tick */
    }
    if (rv != 0) {
        if (now_ms - a->grow_log_ms >= LOG_EVERY_MS || a->grow_log_ms == 0) {
            a->grow_log_ms = now_ms;
            QR_WARN("admit", "growing the store's map: %s",
                    qr_store_errmsg(a->store));
        }
        return;
    }
    if (read_space(a, false) == 0) {
        QR_INFO("admit", "store map grown from %.1f MiB to %.1f MiB",
                mib(old_bytes), mib(a->space.store_map_bytes));
    }
}

void qr_admit_tick(struct qr_admit *a, uint64_t now_ms)
{
    bool count_free =
        now_ms - a->free_read_ms >= COUNT_FREE_EVERY_MS || a->free_read_ms == 0;
    if (read_space(a, count_free) != 0) {
        return; /* a failed store is reported by whoever met it */
    }
    a->read_ms = now_ms;
    if (count_free) {
        a->free_read_ms = now_ms;
    }
    maybe_grow(a, now_ms);
    update_limit(a);

    const struct qr_admit_space *sp = &a->space;
    bool high = sp->store_used_bytes * 100 >=
                sp->store_limit_bytes * QR_ADMIT_WARN_PERCENT;
    if (!high) {
        if (a->warned) {
            QR_INFO("admit", "space: store %.1f MiB of %.1f MiB, below %d%%",
                    mib(sp->store_used_bytes), mib(sp->store_limit_bytes),
                    QR_ADMIT_WARN_PERCENT);
        }
        a->warned = false;
        return;
    }
    if (!a->warned || now_ms - a->warn_log_ms >= LOG_EVERY_MS) {
        a->warned = true;
        a->warn_log_ms = now_ms;
        QR_WARN("admit",
                "space: the store holds %.1f MiB, %d%% or more of the %.1f "
                "MiB at which writes are refused (disk %.1f MiB free of "
                "%.1f MiB, reserve %.1f MiB); see docs/operations.md, \"Disk "
                "or store full\"",
                mib(sp->store_used_bytes), QR_ADMIT_WARN_PERCENT,
                mib(sp->store_limit_bytes), mib(sp->disk_free_bytes),
                mib(sp->disk_size_bytes), mib(a->reserve_bytes));
    }
}

int qr_admit_probe(struct qr_admit *a,
                   uint64_t now_ms,
                   uint64_t pending_bytes,
                   char *why,
                   size_t why_size)
{
    if (now_ms - a->read_ms >= READ_EVERY_MS || !a->have_reading) {
        if (read_space(a, false) == 0) {
            a->read_ms = now_ms;
        }
    }
    uint64_t room;
    enum verdict v = judge(a, pending_bytes, &room);
    if (v == ROOM) {
        return 0;
    }
    explain(a, v, pending_bytes, why, why_size);
    return QR_ENOSPACE;
}

void qr_admit_refused(struct qr_admit *a, uint64_t now_ms, const char *why)
{
    a->space.n_refused++;
    if (now_ms - a->refuse_log_ms >= REFUSE_LOG_EVERY_MS ||
        a->refuse_log_ms == 0) {
        a->refuse_log_ms = now_ms;
        QR_WARN("admit", "refusing writes (%llu so far): %s",
                (unsigned long long)a->space.n_refused, why);
    }
}

int qr_admit_check(struct qr_admit *a,
                   uint64_t now_ms,
                   uint64_t pending_bytes,
                   char *why,
                   size_t why_size)
{
    int rv = qr_admit_probe(a, now_ms, pending_bytes, why, why_size);
    if (rv != 0) {
        qr_admit_refused(a, now_ms, why);
    }
    return rv;
}

void qr_admit_get_space(const struct qr_admit *a, struct qr_admit_space *out)
{
    *out = a->space;
}
