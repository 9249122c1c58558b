#include "lib/metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A growing text buffer; on allocation failure it is freed and stays NULL. */
struct text {
    char *buf;
    size_t len;
    size_t cap;
};

static void add(struct text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void add(struct text *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (t->buf == NULL) {
        return;
    }
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = 2 * t->cap + (size_t)n;
        char *grown = realloc(t->buf, cap);
        if (grown == NULL) {
            free(t->buf);
            t->buf = NULL;
            return;
        }
        t->buf = grown;
        t->cap = cap;
    }
}

static void head(struct text *t,
                 const char *name,
                 const char *type,
                 const char *help)
{
    add(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void one(struct text *t,
                const char *name,
                const char *type,
                const char *help,
                uint64_t value)
{
    head(t, name, type, help);
    add(t, "%s %" PRIu64 "\n", name, value);
}

/* One metric with no labels, for the tables in qr_metrics_render. */
struct metric {
    const char *name;
    const char *type;
    const char *help;
    uint64_t value;
};

static void all(struct text *t, const struct metric *ms, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        one(t, ms[i].name, ms[i].type, ms[i].help, ms[i].value);
    }
}

uint64_t qr_metrics_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL) {
        return 0;
    }
    unsigned long long size_pages = 0, resident_pages = 0;
    int n = fscanf(f, "%llu %llu", &size_pages, &resident_pages);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    if (n != 2 || page <= 0) {
        return 0;
    }
    return (uint64_t)resident_pages * (uint64_t)page;
}

/* Indexed by MessageState (proto/qraft.proto). */
static const char *const state_names[QR_METRICS_N_STATES] = {
    "unspecified", "pending",       "delivering", "retrying",
    "delivered",   "dead_lettered", "cancelled",  "queued",
};

char *qr_metrics_render(const struct qr_metrics *m,
                        const struct qr_metrics_gauges *g)
{
    static const struct qr_metrics zero;
    struct text t = {.buf = malloc(4096), .cap = 4096};

    if (m == NULL) {
        m = &zero;
    }
    one(&t, "qraft_publishes_total", "counter",
        "Messages published through this node (proposed here, applied, not "
        "deduplicated), since the process started.",
        m->publishes);
    head(&t, "qraft_deliveries_total", "counter",
         "Delivery attempts this node made, by the outcome it reported, "
         "since the process started.");
    add(&t, "qraft_deliveries_total{outcome=\"delivered\"} %" PRIu64 "\n",
        m->deliveries_delivered);
    add(&t, "qraft_deliveries_total{outcome=\"retry\"} %" PRIu64 "\n",
        m->deliveries_retry);
    add(&t, "qraft_deliveries_total{outcome=\"dead\"} %" PRIu64 "\n",
        m->deliveries_dead);
    const struct metric process[] = {
        {"qraft_retries_total", "counter",
         "Attempts this node made that were retries (Upstash-Retried > 0), "
         "since the process started.",
         m->retries},
        {"qraft_http_requests_total", "counter",
         "HTTP requests this node served, since the process started.",
         m->http_requests},
        {"qraft_loop_stalls_total", "counter",
         "Times this node's event loop was kept from its timers 50 ms or "
         "more (requests, heartbeats and deliveries waited), since the "
         "process started.",
         m->loop_stalls},
        {"qraft_loop_stall_max_ms", "gauge",
         "The longest of those stalls, in milliseconds; keep it well below "
         "--election-timeout-ms.",
         m->loop_stall_max_ms},
        {"process_resident_memory_bytes", "gauge",
         "Resident memory size in bytes.", qr_metrics_rss_bytes()},
    };
    all(&t, process, sizeof process / sizeof process[0]);
    if (g->have_counts) {
        one(&t, "qraft_dlq_messages", "gauge",
            "Messages in the dead-letter queue (this node's replica).",
            g->state_counts[5] /* DEAD_LETTERED */);
        head(&t, "qraft_messages", "gauge",
             "Stored messages by state (this node's replica; delivering is "
             "counted as pending or retrying).");
        for (unsigned i = 1; i < QR_METRICS_N_STATES; i++) {
            add(&t, "qraft_messages{state=\"%s\"} %" PRIu64 "\n",
                state_names[i], g->state_counts[i]);
        }
    }
    if (g->have_space) {
        const struct metric space[] = {
            {"qraft_store_used_bytes", "gauge",
             "Bytes of live state in this node's store (its file's high-water "
             "mark minus reusable free pages).",
             g->store_used_bytes},
            {"qraft_store_limit_bytes", "gauge",
             "Estimated qraft_store_used_bytes at which writes that add data "
             "are refused (HTTP 507): from the disk's free space, the reserve, "
             "--store-max-bytes and the map; a WARN is logged at 80%.",
             g->store_limit_bytes},
            {"qraft_store_file_bytes", "gauge",
             "Size of the store's data file (it never shrinks; freed pages are "
             "reused).",
             g->store_file_bytes},
            {"qraft_store_map_bytes", "gauge",
             "Size of the store's LMDB map (address space; grown at run "
             "time).",
             g->store_map_bytes},
            {"qraft_disk_size_bytes", "gauge",
             "Size of the filesystem holding the data dir.",
             g->disk_size_bytes},
            {"qraft_disk_free_bytes", "gauge",
             "Free bytes on the filesystem holding the data dir.",
             g->disk_free_bytes},
            {"qraft_disk_reserve_bytes", "gauge",
             "Free bytes the node keeps on that filesystem "
             "(--min-free-bytes): writes that add data are refused below it.",
             g->disk_reserve_bytes},
            {"qraft_writes_refused_total", "counter",
             "Writes this node refused for want of space (HTTP 507, "
             "INSUFFICIENT_STORAGE), since the process started.",
             g->writes_refused},
        };
        all(&t, space, sizeof space / sizeof space[0]);
    }
    const struct metric node[] = {
        {"qraft_store_corrupt_records_total", "counter",
         "Reads that met a stored record failing its checksum, since the "
         "process started; above 0 the node is stopping: rebuild it from "
         "its peers (docs/operations.md).",
         g->store_corrupt_records},
        {"qraft_retention_pressure", "gauge",
         "1 while this node, the leader, shortens the retention of finished "
         "messages and events for want of space (a store at 80% of its "
         "limit, or a node short of space); 0 otherwise.",
         g->retention_pressure ? 1 : 0},
        {"qraft_raft_term", "gauge", "Current raft term.", g->term},
        {"qraft_raft_commit_index", "gauge",
         "Highest raft index known committed.", g->commit_index},
        {"qraft_raft_applied_index", "gauge",
         "Highest raft index applied to this node's store.", g->applied_index},
        {"qraft_raft_entries_proposed_total", "counter",
         "Raft entries this node proposed as leader, since the process "
         "started; each holds one or more commands (publishes, results...).",
         g->entries_proposed},
        {"qraft_raft_commands_proposed_total", "counter",
         "Commands in those entries: divided by the entries, how many "
         "requests share one entry (and one apply).",
         g->commands_proposed},
        {"qraft_snapshots_total", "counter",
         "Raft snapshots this node took, since the process started.",
         g->snapshots},
        {"qraft_snapshot_last_bytes", "gauge",
         "The size of the last one (an image snapshot is the whole store).",
         g->snapshot_bytes},
        {"qraft_leader", "gauge", "1 when this node is the raft leader.",
         g->leader ? 1 : 0},
        {"qraft_shards_owned", "gauge",
         "Shards of the retry schedule assigned to this node.",
         g->shards_owned},
    };
    all(&t, node, sizeof node / sizeof node[0]);
    if (g->tls_cert_expiry_seconds != 0) {
        const struct metric tls[] = {
            {"qraft_tls_cert_expiry_seconds", "gauge",
             "When this node's TLS certificate (--tls-cert) expires, as Unix "
             "time (its notAfter); re-read on SIGHUP.",
             g->tls_cert_expiry_seconds},
            {"qraft_raft_tls_refused_total", "counter",
             "Raft connections this node refused for their certificate "
             "(none, another CA's, no node id, or another node's), since "
             "the process started.",
             g->raft_tls_refused},
        };
        all(&t, tls, sizeof tls / sizeof tls[0]);
    }
    return t.buf;
}
