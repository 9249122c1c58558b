/* Admission control for space: whether this node may accept one more write
 * that adds data (publish, enqueue, batch, schedule, queue or URL group
 * change), from the free space of the data dir's filesystem and the room in
 * the store. It refuses such writes (QR_ENOSPACE, HTTP 507) while the disk
 * is below its reserve, long before apply could run out of room, so that a
 * full disk stops new work with an error instead of stopping the node.
 * Reads, cancels and deletes are never refused: they are how an operator
 * frees space.
 *
 * The rule (docs/architecture.md, "Space"), with U the store's live bytes
 * (file high-water mark minus reusable free pages), P the bytes accepted
 * but not yet applied (cluster queue and in flight), R the reserve:
 *   disk:  disk free + store reusable >= R + U + 2P
 *          (U: the next raft snapshot is a copy of the state, written before
 *          the old one goes; 2P: what is accepted lands in the raft log and
 *          in the store; R: everything else, raft's next segments included)
 *   limit: U < --store-max-bytes, when set
 *   map:   map size - file + reusable >= R + 2P
 *
 * Everything runs on the loop thread. The module owns no handles: the
 * server calls qr_admit_tick from its timer, and qr_admit_check from the
 * RPC dispatch (which the REST face goes through too). */
#ifndef QR_ADMIT_H
#define QR_ADMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "store/store.h"

/* The reserve when --min-free-bytes is not given: 5% of the filesystem,
 * at least QR_ADMIT_MIN_RESERVE_BYTES (two raft segments), at most
 * QR_ADMIT_MAX_RESERVE_BYTES. */
#define QR_ADMIT_MIN_RESERVE_BYTES (16ull * 1024 * 1024)
#define QR_ADMIT_MAX_RESERVE_BYTES (256ull * 1024 * 1024)
/* Room added to the map beyond the disk's size, so that the disk fills (and
 * admission refuses) before the map could. */
#define QR_ADMIT_MAP_HEADROOM_BYTES (1024ull * 1024 * 1024)
/* Warn when the store's live bytes reach this share of its limit. */
#define QR_ADMIT_WARN_PERCENT 80

/* The latest reading, in bytes (what /metrics shows). */
struct qr_admit_space {
    uint64_t disk_size_bytes;  /* the data dir's filesystem */
    uint64_t disk_free_bytes;  /* free to this process (f_bavail) */
    uint64_t reserve_bytes;    /* R */
    uint64_t store_map_bytes;  /* the LMDB map */
    uint64_t store_file_bytes; /* its file's high-water mark */
    uint64_t store_reusable_bytes;
    uint64_t store_used_bytes; /* U */
    /* U at which writes are refused, were nothing else to change: an
     * estimate for dashboards (U + the smallest room left by the rule). */
    uint64_t store_limit_bytes;
    uint64_t n_refused; /* writes refused since the process started */
};

struct qr_admit {
    const struct qr_config *config; /* borrowed */
    struct qr_store *store;         /* borrowed */
    uint64_t reserve_bytes;
    struct qr_store_space store_space;
    struct qr_admit_space space;
    uint64_t read_ms;      /* when disk and map were last read */
    uint64_t free_read_ms; /* when the free list was last counted */
    uint64_t refuse_log_ms;
    uint64_t warn_log_ms;
    uint64_t grow_log_ms;
    bool warned;
    bool have_reading;
};

/* Sizes for the store before it is opened: the map for data dir `dir` (the
 * filesystem's size or --store-max-bytes, whichever is larger, plus
 * QR_ADMIT_MAP_HEADROOM_BYTES; cfg->store_map_bytes when set). */
uint64_t qr_admit_map_bytes(const struct qr_config *cfg, const char *dir);

/* Reads the disk and the store once. cfg and store are borrowed and must
 * outlive a. On failure errmsg (QR_ERRMSG_BYTES) says why. Needs no
 * close. */
int qr_admit_init(struct qr_admit *a,
                  const struct qr_config *cfg,
                  struct qr_store *store,
                  char *errmsg);

/* Refreshes the reading (the free list at most once a second), logs a WARN
 * (at most once a minute) while the store is at QR_ADMIT_WARN_PERCENT of its
 * limit or writes are refused, and grows the map when its room runs low (a
 * safe point: no transaction is open between loop callbacks; a snapshot
 * being written postpones it). now_ms: a monotonic clock. */
void qr_admit_tick(struct qr_admit *a, uint64_t now_ms);

/* 0 when a write that adds data may be proposed now, with pending_bytes
 * already accepted and not yet applied; else QR_ENOSPACE with why (a
 * sentence for the client: what is full, by how much, what still works).
 * Refreshes the disk reading when it is older than a few ms. */
int qr_admit_check(struct qr_admit *a,
                   uint64_t now_ms,
                   uint64_t pending_bytes,
                   char *why,
                   size_t why_size);

/* The same test without its side effects (no count, no log): whether this
 * node is short of space now, for what it tells the leader. */
int qr_admit_probe(struct qr_admit *a,
                   uint64_t now_ms,
                   uint64_t pending_bytes,
                   char *why,
                   size_t why_size);

/* Counts (and logs, rate-limited) a write refused for a reason found
 * elsewhere: another replica short of space, why. */
void qr_admit_refused(struct qr_admit *a, uint64_t now_ms, const char *why);

/* The latest reading. */
void qr_admit_get_space(const struct qr_admit *a, struct qr_admit_space *out);

#endif /* QR_ADMIT_H */
