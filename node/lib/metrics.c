#include "lib/metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/ascii.h"

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

/* ------------------------------------------------------------------------ */
/* Observing. */

/* Bucket bounds in microseconds; rendered in seconds. */
static const uint64_t bounds_us[QR_METRICS_HIST_BOUNDS] = {
    500,     1000,     2500,     5000,     10000,     25000,
    50000,   100000,   250000,   500000,   1000000,   2500000,
    5000000, 10000000, 30000000, 60000000, 300000000,
};

static const char other_label[] = "(other)";

uint64_t qr_metrics_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void qr_metrics_observe(struct qr_metrics_hist *h, uint64_t us)
{
    if (h == NULL) {
        return;
    }
    size_t i = 0;
    while (i < QR_METRICS_HIST_BOUNDS && us > bounds_us[i]) {
        i++;
    }
    h->counts[i]++;
    h->count++;
    h->sum_us += us;
}

/* The pair (a, b) of p, NULL when p has none. by_address: a compared by
 * address only (the common case: a static string seen before), else by
 * text. */
static struct qr_metrics_pair *find_pair(struct qr_metrics_pairs *p,
                                         const char *a,
                                         const char *b,
                                         bool by_address)
{
    for (size_t i = 0; i < p->n_pairs; i++) {
        struct qr_metrics_pair *e = &p->pairs[i];
        if ((e->a == a || (!by_address && strcmp(e->a, a) == 0)) &&
            strncmp(e->b, b, sizeof e->b - 1) == 0) {
            return e;
        }
    }
    return NULL;
}

void qr_metrics_count(struct qr_metrics_pairs *p, const char *a, const char *b)
{
    if (p == NULL) {
        return;
    }
    struct qr_metrics_pair *e = find_pair(p, a, b, true);
    if (e == NULL) {
        e = find_pair(p, a, b, false);
    }
    if (e == NULL && p->n_pairs < QR_METRICS_MAX_PAIRS) {
        e = &p->pairs[p->n_pairs++];
        e->a = a;
        snprintf(e->b, sizeof e->b, "%s", b);
    } else if (e == NULL) {
        e = &p->pairs[QR_METRICS_MAX_PAIRS];
        e->a = other_label;
        snprintf(e->b, sizeof e->b, "%s", other_label);
    }
    e->n++;
}

bool qr_metrics_url_host(const char *url, char *out, size_t len)
{
    const char *p = strstr(url, "://");
    if (p == NULL || len == 0) {
        return false;
    }
    bool https = (size_t)(p - url) == 5 && strncasecmp(url, "https", 5) == 0;
    p += 3;
    size_t end = strcspn(p, "/?#");
    const char *at = memchr(p, '@', end); /* user:password@ is not the host */
    if (at != NULL) {
        end -= (size_t)(at + 1 - p);
        p = at + 1;
    }
    const char *bracket = p[0] == '[' ? memchr(p, ']', end) : NULL;
    const char *colon = memchr(bracket != NULL ? bracket : p, ':',
                               end - (size_t)((bracket ? bracket : p) - p));
    size_t n = 0;
    for (size_t i = 0; i < end && n + 1 < len; i++) {
        out[n++] = qr_ascii_to_lower(p[i]);
    }
    out[n] = '\0';
    if (n == 0) {
        return false;
    }
    if (colon == NULL) {
        snprintf(out + n, len - n, ":%s", https ? "443" : "80");
    }
    return true;
}

size_t qr_metrics_host_slot(struct qr_metrics *m, const char *url)
{
    char host[QR_METRICS_HOST_BYTES];
    if (m == NULL) {
        return 0;
    }
    if (qr_metrics_url_host(url, host, sizeof host)) {
        for (size_t i = 0; i < m->n_hosts; i++) {
            if (strcmp(m->hosts[i].host, host) == 0) {
                return i;
            }
        }
        if (m->n_hosts < QR_METRICS_MAX_HOSTS) {
            struct qr_metrics_host *h = &m->hosts[m->n_hosts];
            snprintf(h->host, sizeof h->host, "%s", host);
            return m->n_hosts++;
        }
    }
    struct qr_metrics_host *other = &m->hosts[QR_METRICS_MAX_HOSTS];
    snprintf(other->host, sizeof other->host, "%s", other_label);
    return QR_METRICS_MAX_HOSTS;
}

void qr_metrics_host_started(struct qr_metrics *m, size_t slot)
{
    if (m != NULL && slot <= QR_METRICS_MAX_HOSTS) {
        m->hosts[slot].in_flight++;
    }
}

void qr_metrics_host_ended(struct qr_metrics *m, size_t slot, bool failed)
{
    if (m == NULL || slot > QR_METRICS_MAX_HOSTS) {
        return;
    }
    if (m->hosts[slot].in_flight > 0) {
        m->hosts[slot].in_flight--;
    }
    if (failed) {
        m->hosts[slot].failures++;
    }
}

/* ------------------------------------------------------------------------ */
/* Rendering. */

/* A label value as the text format wants it: \, " and newline escaped. */
static void add_value(struct text *t, const char *v)
{
    for (const char *p = v; *p != '\0'; p++) {
        if (*p == '\\' || *p == '"') {
            add(t, "\\%c", *p);
        } else if (*p == '\n') {
            add(t, "\\n");
        } else {
            add(t, "%c", *p);
        }
    }
}

/* name{label="value"} n, value escaped. */
static void add_labelled(struct text *t,
                         const char *name,
                         const char *label,
                         const char *value,
                         uint64_t n)
{
    add(t, "%s{%s=\"", name, label);
    add_value(t, value);
    add(t, "\"} %" PRIu64 "\n", n);
}

static void add_hist(struct text *t,
                     const char *name,
                     const char *help,
                     const struct qr_metrics_hist *h)
{
    uint64_t below = 0;
    head(t, name, "histogram", help);
    for (size_t i = 0; i < QR_METRICS_HIST_BOUNDS; i++) {
        below += h->counts[i];
        add(t, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name,
            (double)bounds_us[i] / 1e6, below);
    }
    add(t, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, h->count);
    add(t, "%s_sum %.6f\n", name, (double)h->sum_us / 1e6);
    add(t, "%s_count %" PRIu64 "\n", name, h->count);
}

static void add_pairs(struct text *t,
                      const char *name,
                      const char *help,
                      const char *label_a,
                      const char *label_b,
                      const struct qr_metrics_pairs *p)
{
    head(t, name, "counter", help);
    for (size_t i = 0; i <= QR_METRICS_MAX_PAIRS; i++) {
        const struct qr_metrics_pair *e = &p->pairs[i];
        if (i < p->n_pairs || (i == QR_METRICS_MAX_PAIRS && e->a != NULL)) {
            add(t, "%s{%s=\"", name, label_a);
            add_value(t, e->a);
            add(t, "\",%s=\"", label_b);
            add_value(t, e->b);
            add(t, "\"} %" PRIu64 "\n", e->n);
        }
    }
}

/* Indexed by MessageState (proto/qraft.proto); NULL: not shown (nothing is
 * stored as UNSPECIFIED or DELIVERING: an attempt in flight is counted in
 * qraft_deliveries_in_flight). */
static const char *const state_names[QR_METRICS_N_STATES] = {
    NULL,        "pending",       NULL,        "retrying",
    "delivered", "dead_lettered", "cancelled", "queued",
};

/* One sample per host slot in use: its failures or its attempts in flight. */
static void add_hosts(struct text *t,
                      const char *name,
                      const struct qr_metrics *m,
                      bool failures)
{
    for (size_t i = 0; i <= QR_METRICS_MAX_HOSTS; i++) {
        const struct qr_metrics_host *h = &m->hosts[i];
        if (i < m->n_hosts ||
            (i == QR_METRICS_MAX_HOSTS && h->host[0] != '\0')) {
            add_labelled(t, name, "host", h->host,
                         failures ? h->failures : h->in_flight);
        }
    }
}

static void render_counters(struct text *t, const struct qr_metrics *m)
{
    one(t, "qraft_publishes_total", "counter",
        "Messages published through this node (proposed here, applied, not "
        "deduplicated), since the process started.",
        m->publishes);
    head(t, "qraft_deliveries_total", "counter",
         "Delivery attempts this node made, by the outcome it reported, "
         "since the process started.");
    add(t, "qraft_deliveries_total{outcome=\"delivered\"} %" PRIu64 "\n",
        m->deliveries_delivered);
    add(t, "qraft_deliveries_total{outcome=\"retry\"} %" PRIu64 "\n",
        m->deliveries_retry);
    add(t, "qraft_deliveries_total{outcome=\"dead\"} %" PRIu64 "\n",
        m->deliveries_dead);
    add_pairs(t, "qraft_http_requests_total",
              "HTTP requests this node answered, by route pattern and status "
              "code, since the process started.",
              "route", "code", &m->http);
    add_pairs(t, "qraft_rpc_requests_total",
              "RPC requests this node answered (clients and other nodes), "
              "by kind and status, since the process started.",
              "kind", "code", &m->rpc);
    head(t, "qraft_rpc_held_total", "counter",
         "Times an RPC connection's requests were held (not read) until "
         "its client caught up: it had not read 4 MiB of answers, or 4096 "
         "of its requests (16 reads) waited for one; since the process "
         "started.");
    add_labelled(t, "qraft_rpc_held_total", "reason", "unread_answers",
                 m->rpc_held_unread);
    add_labelled(t, "qraft_rpc_held_total", "reason", "pending_requests",
                 m->rpc_held_pending);
    add_hist(t, "qraft_publish_duration_seconds",
             "A publish from its arrival at this node to its answer (applied "
             "on a majority), by the node that took it, since the process "
             "started.",
             &m->publish_seconds);
    add_hist(t, "qraft_delivery_attempt_duration_seconds",
             "An attempt from its send to the destination's answer (a wait "
             "behind the host's connection limit included), since the "
             "process started.",
             &m->attempt_seconds);
    add_hist(t, "qraft_delivery_start_lag_seconds",
             "An attempt's start after its message was due (the leader's "
             "clock), since the process started.",
             &m->due_lag_seconds);
    add_hist(t, "qraft_apply_duration_seconds",
             "The apply of one raft entry (one store transaction, one or "
             "more commands) on this node, since the process started.",
             &m->apply_seconds);
    head(t, "qraft_host_deliveries_in_flight", "gauge",
         "Attempts sent to a destination host (host:port) and not answered "
         "yet; the first 100 hosts this process met, the others under "
         "host=\"(other)\".");
    add_hosts(t, "qraft_host_deliveries_in_flight", m, false);
    head(t, "qraft_host_delivery_failures_total", "counter",
         "Attempts to a destination host that did not succeed (retried or "
         "dead-lettered), since the process started; hosts as above.");
    add_hosts(t, "qraft_host_delivery_failures_total", m, true);
    const struct metric process[] = {
        {"qraft_retries_total", "counter",
         "Attempts this node made that were retries (Upstash-Retried > 0), "
         "since the process started.",
         m->retries},
        {"qraft_loop_stalls_total", "counter",
         "Times this node's event loop was kept from its timers 50 ms or "
         "more (requests, heartbeats and deliveries waited), since the "
         "process started.",
         m->loop_stalls},
        {"qraft_trace_spans_exported_total", "counter",
         "Trace spans the OTLP collector (--otlp-endpoint) accepted, since "
         "the process started (0 with tracing off).",
         m->trace_spans_exported},
        {"qraft_trace_spans_dropped_total", "counter",
         "Trace spans dropped: the buffer of 2048 was full, a batch failed "
         "or timed out, or the node stopped with spans unsent; since the "
         "process started.",
         m->trace_spans_dropped},
        {"process_resident_memory_bytes", "gauge",
         "Resident memory size in bytes.", qr_metrics_rss_bytes()},
    };
    all(t, process, sizeof process / sizeof process[0]);
    head(t, "qraft_loop_stall_max_seconds", "gauge",
         "The longest of those stalls; keep it well below "
         "--election-timeout-ms.");
    add(t, "qraft_loop_stall_max_seconds %.3f\n",
        (double)m->loop_stall_max_ms / 1e3);
}

static void render_messages(struct text *t, const struct qr_metrics_gauges *g)
{
    one(t, "qraft_dlq_messages", "gauge",
        "Deprecated: the same as qraft_messages{state=\"dead_lettered\"} "
        "(this node's replica).",
        g->state_counts[5] /* DEAD_LETTERED */);
    head(t, "qraft_messages", "gauge",
         "Stored messages by state (this node's replica; an attempt in flight "
         "is still pending or retrying: see qraft_deliveries_in_flight).");
    for (unsigned i = 0; i < QR_METRICS_N_STATES; i++) {
        if (state_names[i] != NULL) {
            add(t, "qraft_messages{state=\"%s\"} %" PRIu64 "\n", state_names[i],
                g->state_counts[i]);
        }
    }
    head(t, "qraft_oldest_pending_age_seconds", "gauge",
         "How long the most overdue pending or retrying message has been "
         "due (its next attempt's time passed, by this node's clock), on this "
         "replica; 0 when none is overdue. Grows while deliveries fall "
         "behind.");
    add(t, "qraft_oldest_pending_age_seconds %.3f\n",
        (double)g->oldest_due_age_ms / 1e3);
    head(t, "qraft_queue_messages", "gauge",
         "Messages of a queue by state: waiting (behind its parallelism) or "
         "active (holding a slot); the first 100 queues by name, the others "
         "summed under queue=\"(other)\".");
    for (size_t i = 0; i <= g->n_queues; i++) {
        const struct qr_metrics_queue *q =
            i < g->n_queues ? &g->queues[i] : &g->other_queues;
        if (i == g->n_queues && g->n_other_queues == 0) {
            break;
        }
        const char *name = i < g->n_queues ? q->name : other_label;
        add(t, "qraft_queue_messages{queue=\"");
        add_value(t, name);
        add(t, "\",state=\"waiting\"} %" PRIu64 "\n", q->waiting);
        add(t, "qraft_queue_messages{queue=\"");
        add_value(t, name);
        add(t, "\",state=\"active\"} %" PRIu64 "\n", q->active);
    }
    one(t, "qraft_queues", "gauge", "Queues defined (this node's replica).",
        g->n_queues + g->n_other_queues);
}

static void render_space(struct text *t, const struct qr_metrics_gauges *g)
{
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
         "Size of the store's LMDB map (address space; grown at run time).",
         g->store_map_bytes},
        {"qraft_disk_size_bytes", "gauge",
         "Size of the filesystem holding the data dir.", g->disk_size_bytes},
        {"qraft_disk_free_bytes", "gauge",
         "Free bytes on the filesystem holding the data dir.",
         g->disk_free_bytes},
        {"qraft_disk_reserve_bytes", "gauge",
         "Free bytes the node keeps on that filesystem (--min-free-bytes): "
         "writes that add data are refused below it.",
         g->disk_reserve_bytes},
        {"qraft_writes_refused_total", "counter",
         "Writes this node refused for want of space (HTTP 507, "
         "INSUFFICIENT_STORAGE), since the process started.",
         g->writes_refused},
    };
    all(t, space, sizeof space / sizeof space[0]);
}

static void render_dbs(struct text *t, const struct qr_metrics_gauges *g)
{
    head(t, "qraft_store_db_bytes", "gauge",
         "Bytes of pages each of the store's LMDB databases holds (msgs: "
         "messages, events: the logs, ...; free pages not included).");
    for (size_t i = 0; i < g->n_dbs; i++) {
        add_labelled(t, "qraft_store_db_bytes", "db", g->dbs[i].name,
                     g->dbs[i].bytes);
    }
}

static void render_node(struct text *t, const struct qr_metrics_gauges *g)
{
    head(t, "qraft_build_info", "gauge",
         "Always 1; the labels name this binary: its version, the commit "
         "it was built from and the highest feature level it runs.");
    add(t, "qraft_build_info{version=\"");
    add_value(t, g->version != NULL ? g->version : "");
    add(t, "\",commit=\"");
    add_value(t, g->commit != NULL ? g->commit : "");
    add(t, "\",feature_level=\"%u\"} 1\n", g->max_feature_level);
    head(t, "qraft_snapshot_last_duration_seconds", "gauge",
         "The time the last raft snapshot took to open (the loop waits for "
         "it), 0 before the first.");
    add(t, "qraft_snapshot_last_duration_seconds %.3f\n",
        (double)g->snapshot_ms / 1e3);
    uint64_t lag = g->commit_index > g->applied_index
                       ? g->commit_index - g->applied_index
                       : 0;
    const struct metric node[] = {
        {"qraft_feature_level", "gauge",
         "The cluster's feature level, as this node has applied it.",
         g->feature_level},
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
        {"qraft_raft_apply_lag_entries", "gauge",
         "Entries known committed and not applied here yet.", lag},
        {"qraft_raft_leader_changes_total", "counter",
         "Times this node saw a new leader take over (elections won by "
         "another node or by itself), since the process started.",
         g->leader_changes},
        {"qraft_raft_has_leader", "gauge",
         "1 when this node knows a leader; 0 during an election or when cut "
         "off from a majority.",
         g->has_leader ? 1 : 0},
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
        {"qraft_deliveries_in_flight", "gauge",
         "Attempts this node has sent or is about to send and whose result "
         "is not applied yet (at most 1,024).",
         g->deliveries_in_flight},
    };
    all(t, node, sizeof node / sizeof node[0]);
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
        all(t, tls, sizeof tls / sizeof tls[0]);
    }
}

char *qr_metrics_render(const struct qr_metrics *m,
                        const struct qr_metrics_gauges *g)
{
    static const struct qr_metrics zero;
    struct text t = {.buf = malloc(16384), .cap = 16384};

    if (m == NULL) {
        m = &zero;
    }
    render_counters(&t, m);
    if (g->have_counts) {
        render_messages(&t, g);
    }
    if (g->n_dbs > 0) {
        render_dbs(&t, g);
    }
    if (g->have_space) {
        render_space(&t, g);
    }
    render_node(&t, g);
    return t.buf;
}
