/* Per-node counters and their Prometheus text exposition (/metrics).
 *
 * The counters live in memory: they start at 0 when the process starts and
 * count what this node did (a cluster-wide figure is the sum over nodes).
 * Each is incremented by the module that does the counted thing, on the
 * loop thread, through a pointer that may be NULL (then nothing counts).
 * Gauges (raft indexes, message counts by state) are read when rendered. */
#ifndef QR_METRICS_H
#define QR_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct qr_metrics {
    uint64_t publishes;            /* rpc.c: new messages this node proposed
                                      and saw applied (not deduplicated) */
    uint64_t deliveries_delivered; /* worker.c: this node's attempts, by */
    uint64_t deliveries_retry;     /* the outcome it reported */
    uint64_t deliveries_dead;
    uint64_t retries;           /* worker.c: attempts that were retries
                                   (Upstash-Retried > 0) */
    uint64_t http_requests;     /* http_api.c: requests served */
    uint64_t loop_stalls;       /* loopwatch.c: the loop kept from its timers
                                   QR_LOOPWATCH_STALL_MS or more */
    uint64_t loop_stall_max_ms; /* the longest of those */
};

#define QR_METRICS_N_STATES 8 /* QR_STORE_N_STATES: UNSPECIFIED..QUEUED */

/* What /metrics reads from the node's state at render time. */
struct qr_metrics_gauges {
    uint64_t term;
    uint64_t commit_index;
    uint64_t applied_index;
    uint64_t entries_proposed;  /* raft entries this node proposed as leader */
    uint64_t commands_proposed; /* the commands they held */
    uint64_t snapshots;         /* raft snapshots this node took */
    uint64_t snapshot_bytes;    /* the last one's size */
    bool leader;
    uint32_t shards_owned;
    bool have_counts; /* false: the store could not be read */
    uint64_t state_counts[QR_METRICS_N_STATES]; /* by MessageState */
    bool have_space; /* false: no space reading (node/admit.h) */
    uint64_t disk_size_bytes;
    uint64_t disk_free_bytes;
    uint64_t disk_reserve_bytes;
    uint64_t store_used_bytes;
    uint64_t store_limit_bytes;
    uint64_t store_file_bytes;
    uint64_t store_map_bytes;
    uint64_t writes_refused;
    uint64_t store_corrupt_records; /* qr_store_corrupt_count */
    bool retention_pressure; /* the leader shortens retention (server.c) */
    /* TLS: the node certificate's notAfter (Unix time; 0: no TLS) and the
     * raft connections refused for their certificate. */
    uint64_t tls_cert_expiry_seconds;
    uint64_t raft_tls_refused;
};

/* Increments *counter unless m is NULL (modules run without metrics in
 * tests). */
#define QR_METRICS_INC(m, field) \
    do {                         \
        if ((m) != NULL) {       \
            (m)->field++;        \
        }                        \
    } while (0)

/* This process's resident memory in bytes (/proc/self/statm), 0 when it
 * cannot be read. */
uint64_t qr_metrics_rss_bytes(void);

/* Renders the Prometheus text format (version 0.0.4), HELP and TYPE lines
 * included. Returns new (free with free()) or NULL when out of memory. */
char *qr_metrics_render(const struct qr_metrics *m,
                        const struct qr_metrics_gauges *g);

#endif /* QR_METRICS_H */
