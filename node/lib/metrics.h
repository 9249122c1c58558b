/* Per-node counters, histograms and their Prometheus text exposition
 * (/metrics; docs/operations.md "Metrics" is the reference table).
 *
 * The counters and histograms live in memory: they start at 0 when the
 * process starts and count what this node did (a cluster-wide figure is the
 * sum over nodes). Each is changed by the module that does the counted
 * thing, on the loop thread, through a pointer that may be NULL (then
 * nothing counts). Gauges (raft indexes, message counts by state, queues,
 * space) are read from the node's state when rendered.
 *
 * Invariants: every family is rendered with HELP and TYPE lines, names carry
 * their unit (_seconds, _bytes, _total); every label's values are bounded:
 * routes and RPC kinds come from fixed tables, codes from what the node
 * answers, hosts and queues are capped (QR_METRICS_MAX_HOSTS,
 * QR_METRICS_MAX_QUEUES; the rest is summed under "(other)"). Observing
 * costs no system call beyond a clock read. */
#ifndef QR_METRICS_H
#define QR_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The upper bounds of every histogram's buckets, in microseconds (rendered
 * in seconds: 0.0005 .. 300, then +Inf). */
#define QR_METRICS_HIST_BOUNDS 17

/* A histogram: counts[i] holds the observations in bucket i alone (not
 * cumulative; index QR_METRICS_HIST_BOUNDS is +Inf), sum_us their sum. */
struct qr_metrics_hist {
    uint64_t counts[QR_METRICS_HIST_BOUNDS + 1];
    uint64_t count;
    uint64_t sum_us;
};

/* A counter with two label values (a route and a code, an RPC kind and a
 * status). a is a static string (compared by address, then by text); b is
 * copied. Pairs past QR_METRICS_MAX_PAIRS are counted under "(other)". */
#define QR_METRICS_MAX_PAIRS 256
#define QR_METRICS_LABEL_BYTES 32
struct qr_metrics_pair {
    const char *a;
    char b[QR_METRICS_LABEL_BYTES];
    uint64_t n;
};
struct qr_metrics_pairs {
    struct qr_metrics_pair pairs[QR_METRICS_MAX_PAIRS + 1]; /* + "(other)" */
    size_t n_pairs;
};

/* Per destination host ("host:port" of the URL, lower case): the first
 * QR_METRICS_MAX_HOSTS hosts this process delivered to keep a slot for its
 * life; later ones share slot QR_METRICS_MAX_HOSTS, "(other)". */
#define QR_METRICS_MAX_HOSTS 100
#define QR_METRICS_HOST_BYTES 128
struct qr_metrics_host {
    char host[QR_METRICS_HOST_BYTES];
    uint64_t in_flight; /* attempts sent and not answered yet */
    uint64_t failures;  /* attempts that were not a success */
};

struct qr_metrics {
    uint64_t publishes; /* ops/publish.c: new messages this node
                           proposed and saw applied (not
                           deduplicated) */
    uint64_t
        deliveries_delivered;  /* worker_outcome.c: this node's attempts, by */
    uint64_t deliveries_retry; /* the outcome it reported */
    uint64_t deliveries_dead;
    uint64_t retries;             /* worker.c: attempts that were retries
                                     (Upstash-Retried > 0) */
    uint64_t loop_stalls;         /* loopwatch.c: the loop kept from its timers
                                     QR_LOOPWATCH_STALL_MS or more */
    uint64_t loop_stall_max_ms;   /* the longest of those */
    struct qr_metrics_pairs http; /* http_api.c: {route, code} */
    struct qr_metrics_pairs rpc;  /* rpc.c, ops.c: {kind, code} */
    /* rpc.c: connections whose requests were held (backpressure) because
     * their client had not read its answers, or had too many requests
     * waiting for one */
    uint64_t rpc_held_unread;
    uint64_t rpc_held_pending;
    /* ops.c: publish request to its answer, on the node that took it */
    struct qr_metrics_hist publish_seconds;
    /* worker_outcome.c: an attempt's send to its answer */
    struct qr_metrics_hist attempt_seconds;
    /* worker.c: a message's due time to its attempt's start */
    struct qr_metrics_hist due_lag_seconds;
    /* fsm.c: one raft entry's apply (one store transaction) */
    struct qr_metrics_hist apply_seconds;
    struct qr_metrics_host hosts[QR_METRICS_MAX_HOSTS + 1];
    size_t n_hosts;
    /* deliver/trace.c (--otlp-endpoint): spans the collector took, and
     * spans dropped (buffer full, a batch that failed, or the stop) */
    uint64_t trace_spans_exported;
    uint64_t trace_spans_dropped;
};

#define QR_METRICS_N_STATES 8 /* QR_STORE_N_STATES: UNSPECIFIED..QUEUED */
#define QR_METRICS_MAX_QUEUES 100
#define QR_METRICS_QUEUE_BYTES 257 /* QR_COMMAND_MAX_QUEUE_NAME_BYTES + 1 */

/* One queue's depth (its record's counters). */
struct qr_metrics_queue {
    char name[QR_METRICS_QUEUE_BYTES];
    uint64_t waiting; /* queued behind its parallelism */
    uint64_t active;  /* holding one of its slots */
};

#define QR_METRICS_MAX_DBS 24 /* >= the store's databases */

/* One LMDB database's pages, in bytes. */
struct qr_metrics_db {
    const char *name; /* static */
    uint64_t bytes;
};

/* What /metrics reads from the node's state at render time. */
struct qr_metrics_gauges {
    const char *version; /* build_info labels (static strings) */
    const char *commit;
    unsigned max_feature_level; /* the highest this binary runs */
    uint32_t feature_level;     /* the cluster's, as applied here */
    uint64_t term;
    uint64_t commit_index;
    uint64_t applied_index;
    uint64_t leader_changes;    /* leaders this node has seen take over */
    uint64_t entries_proposed;  /* raft entries this node proposed as leader */
    uint64_t commands_proposed; /* the commands they held */
    uint64_t snapshots;         /* raft snapshots this node took */
    uint64_t snapshot_bytes;    /* the last one's size */
    uint64_t snapshot_ms;       /* the time the last one took */
    bool leader;
    bool has_leader; /* this node knows a leader */
    uint32_t shards_owned;
    uint64_t deliveries_in_flight; /* the worker's in-flight table */
    bool have_counts;              /* false: the store could not be read */
    uint64_t state_counts[QR_METRICS_N_STATES]; /* by MessageState */
    uint64_t oldest_due_age_ms; /* now - the earliest due time, 0 if later */
    /* Queues in name order, the first QR_METRICS_MAX_QUEUES; the others'
     * counters summed in other_queues (n_other_queues of them). */
    struct qr_metrics_queue queues[QR_METRICS_MAX_QUEUES];
    size_t n_queues;
    size_t n_other_queues;
    struct qr_metrics_queue other_queues;
    struct qr_metrics_db dbs[QR_METRICS_MAX_DBS];
    size_t n_dbs;
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

/* A monotonic clock in microseconds for the histograms (CLOCK_MONOTONIC:
 * read through the vDSO, no system call). */
uint64_t qr_metrics_now_us(void);

/* Counts one observation of us microseconds into h (NULL: nothing). */
void qr_metrics_observe(struct qr_metrics_hist *h, uint64_t us);

/* Counts one under the labels (a, b) (p NULL: nothing). a is borrowed for
 * the life of p (a static string); b is copied (cut at
 * QR_METRICS_LABEL_BYTES - 1). */
void qr_metrics_count(struct qr_metrics_pairs *p, const char *a, const char *b);

/* Writes url's "host:port" (lower case, port 80 or 443 from the scheme
 * when none, cut at len - 1 bytes) into out; false when it names no host
 * (its attempts count under "(other)"; trace spans name none). */
bool qr_metrics_url_host(const char *url, char *out, size_t len);

/* The host slot of url (its "host:port", lower case; port 80 or 443 from
 * the scheme when none), taken on first sight; m NULL: 0. */
size_t qr_metrics_host_slot(struct qr_metrics *m, const char *url);

/* An attempt to slot's host started; ended, a failure or not. */
void qr_metrics_host_started(struct qr_metrics *m, size_t slot);
void qr_metrics_host_ended(struct qr_metrics *m, size_t slot, bool failed);

/* This process's resident memory in bytes (/proc/self/statm), 0 when it
 * cannot be read. */
uint64_t qr_metrics_rss_bytes(void);

/* Renders the Prometheus text format (version 0.0.4), HELP and TYPE lines
 * included. m may be NULL (every counter 0). Returns new (free with free())
 * or NULL when out of memory. */
char *qr_metrics_render(const struct qr_metrics *m,
                        const struct qr_metrics_gauges *g);

#endif /* QR_METRICS_H */
