/* qraft-bench: publish throughput and latency against a running cluster.
 *
 * `qraft-bench publish` keeps IN_FLIGHT publishes outstanding, pipelined
 * over one or a few connections (one thread and libqraft handle each), until
 * N have been answered. Latency is measured per publish from the moment its
 * frame is handed to the socket to the moment its answer is read; the clock
 * runs from when every connection has found the leader until the last
 * answer. Messages carry a delay (1 h by default) so the node does not
 * deliver them during the run. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qraft.h"

#define DEFAULT_URL "http://127.0.0.1:9/qraft-bench"
#define DEFAULT_DELAY_MS (3600u * 1000u)
#define REPLY_TIMEOUT_MS 60000

static const char usage[] =
    "usage: qraft-bench publish -n N -c IN_FLIGHT -s BYTES [OPTIONS]\n"
    "\n"
    "Publishes N messages of BYTES bytes each, keeping IN_FLIGHT publishes\n"
    "outstanding (pipelined), and prints msgs/s and latency p50/p90/p99/max\n"
    "in ms, then a one-line summary. Exits 1 if any publish failed.\n"
    "\n"
    "  -n N                   messages to publish (default 10000)\n"
    "  -c IN_FLIGHT           publishes outstanding at once (default 64)\n"
    "  -s BYTES               body size (default 1024)\n"
    "  --connections K        spread IN_FLIGHT over K connections, one\n"
    "                         thread each (default 1)\n"
    "  --endpoints H:P,...    nodes (env QRAFT_ENDPOINTS; default\n"
    "                         127.0.0.1:7100)\n"
    "  --token T              API token (env QRAFT_TOKEN)\n"
    "  --url URL              destination (default " DEFAULT_URL
    ")\n"
    "  --delay DUR            delivery delay (default 1h): long enough that\n"
    "                         nothing is delivered during the run\n"
    "  --ids-out FILE         write each acknowledged message id to FILE,\n"
    "                         one per line (for loss checks; the first\n"
    "                         publish of each connection included)\n"
    "\n"
    "Each connection first makes one blocking publish to find the leader;\n"
    "it is not counted.\n";

struct config {
    uint64_t n;
    uint32_t in_flight;
    size_t size_bytes;
    uint32_t connections;
    const char *endpoints;
    const char *token;
    const char *url;
    uint64_t delay_ms;
    const char *ids_out; /* --ids-out: file of acknowledged ids */
};

/* One connection's share of the run. */
struct worker {
    const struct qraft_publish *pub;
    pthread_barrier_t *start;
    struct qraft_client *c;
    uint64_t quota;
    uint32_t slots;
    uint64_t *sent_ticket; /* [slots]: ticket of an outstanding publish */
    double *sent_ms;       /* [slots]: when it was sent; < 0: free slot */
    double *latency_ms;    /* [quota] */
    uint64_t n_ok;
    uint64_t n_failed;
    char first_error[QRAFT_ERRMSG_MAX];
    FILE *ids_out; /* shared by every worker; NULL: not asked for */
};

static pthread_mutex_t ids_lock = PTHREAD_MUTEX_INITIALIZER;

/* One acknowledged id per line, for tests that check none was lost. */
static void write_id(struct worker *w, const char *id)
{
    if (w->ids_out == NULL) {
        return;
    }
    pthread_mutex_lock(&ids_lock);
    fprintf(w->ids_out, "%s\n", id);
    pthread_mutex_unlock(&ids_lock);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int parse_duration_ms(const char *s, uint64_t *out)
{
    uint64_t total = 0;
    if (*s == '\0') {
        return -1;
    }
    while (*s != '\0') {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(s, &end, 10);
        if (end == s || errno != 0 || *s < '0' || *s > '9') {
            return -1;
        }
        s = end;
        uint64_t unit;
        if (strncmp(s, "ms", 2) == 0) {
            unit = 1;
            s += 2;
        } else if (*s == 's' || *s == 'm' || *s == 'h' || *s == 'd') {
            unit = *s == 's'   ? 1000
                   : *s == 'm' ? 60000
                   : *s == 'h' ? 3600000
                               : 86400000;
            s++;
        } else {
            return -1;
        }
        if (n > (UINT64_MAX - total) / unit) {
            return -1;
        }
        total += n * unit;
    }
    *out = total;
    return 0;
}

static int parse_count(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s < '0' || *s > '9' || *end != '\0' || errno != 0 || v == 0 ||
        v > max) {
        return -1;
    }
    *out = v;
    return 0;
}

static void record_failure(struct worker *w, const char *why)
{
    w->n_failed++;
    if (w->first_error[0] == '\0') {
        snprintf(w->first_error, sizeof w->first_error, "%s", why);
    }
}

/* Fills free slots with new publishes. */
static void send_more(struct worker *w, uint64_t *n_started)
{
    for (uint32_t i = 0; i < w->slots && *n_started < w->quota; i++) {
        if (w->sent_ms[i] >= 0) {
            continue;
        }
        (*n_started)++;
        double t0 = now_ms();
        uint64_t ticket;
        int rc = qraft_publish_send(w->c, w->pub, &ticket);
        if (rc != 0) {
            record_failure(w, qraft_client_errmsg(w->c));
            continue;
        }
        w->sent_ticket[i] = ticket;
        w->sent_ms[i] = t0;
    }
}

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    char id[QRAFT_ID_MAX];
    int rc = qraft_publish(w->c, w->pub, id, NULL);
    if (rc != 0) {
        record_failure(w, qraft_client_errmsg(w->c));
    } else {
        write_id(w, id); /* not timed, but acknowledged all the same */
    }
    pthread_barrier_wait(w->start);
    if (rc != 0) {
        w->n_failed = w->quota;
        return NULL;
    }
    uint64_t n_started = 0;
    send_more(w, &n_started);
    while (qraft_publish_outstanding(w->c) > 0) {
        struct qraft_publish_reply reply;
        rc = qraft_publish_recv(w->c, REPLY_TIMEOUT_MS, &reply);
        if (rc != 0) {
            /* No answer for a minute: count the rest as failed. */
            record_failure(w, qraft_client_errmsg(w->c));
            w->n_failed += w->quota - w->n_ok - w->n_failed;
            return NULL;
        }
        double t1 = now_ms();
        uint32_t slot = 0;
        while (slot < w->slots &&
               (w->sent_ms[slot] < 0 || w->sent_ticket[slot] != reply.ticket)) {
            slot++;
        }
        if (slot == w->slots) {
            record_failure(w, "a reply for an unknown ticket");
            continue;
        }
        if (reply.rc == 0) {
            w->latency_ms[w->n_ok++] = t1 - w->sent_ms[slot];
            write_id(w, reply.id);
        } else {
            record_failure(w, qraft_client_errmsg(w->c));
        }
        w->sent_ms[slot] = -1;
        send_more(w, &n_started);
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v[0..n). */
static double percentile(const double *v, size_t n, double p)
{
    if (n == 0) {
        return 0;
    }
    size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1) {
        rank = 1;
    }
    return v[(rank > n ? n : rank) - 1];
}

static int parse_args(int argc, char **argv, struct config *cfg)
{
    enum {
        OPT_ENDPOINTS = 1000,
        OPT_TOKEN,
        OPT_URL,
        OPT_DELAY,
        OPT_CONNECTIONS,
        OPT_IDS_OUT,
        OPT_HELP
    };
    static const struct option opts[] = {
        {"endpoints", required_argument, NULL, OPT_ENDPOINTS},
        {"token", required_argument, NULL, OPT_TOKEN},
        {"url", required_argument, NULL, OPT_URL},
        {"delay", required_argument, NULL, OPT_DELAY},
        {"connections", required_argument, NULL, OPT_CONNECTIONS},
        {"ids-out", required_argument, NULL, OPT_IDS_OUT},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    int opt;
    uint64_t v;
    while ((opt = getopt_long(argc, argv, "n:c:s:h", opts, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
            case 'n':
                bad = parse_count(optarg, UINT64_MAX / 2, &cfg->n);
                break;
            case 'c':
                bad = parse_count(optarg, 100000, &v);
                cfg->in_flight = (uint32_t)v;
                break;
            case 's':
                bad = parse_count(optarg, 64u * 1024 * 1024, &v);
                cfg->size_bytes = (size_t)v;
                break;
            case OPT_CONNECTIONS:
                bad = parse_count(optarg, 1024, &v);
                cfg->connections = (uint32_t)v;
                break;
            case OPT_ENDPOINTS:
                cfg->endpoints = optarg;
                break;
            case OPT_TOKEN:
                cfg->token = optarg;
                break;
            case OPT_URL:
                cfg->url = optarg;
                break;
            case OPT_DELAY:
                bad = parse_duration_ms(optarg, &cfg->delay_ms);
                break;
            case OPT_IDS_OUT:
                cfg->ids_out = optarg;
                break;
            case 'h':
            case OPT_HELP:
                fputs(usage, stdout);
                return 0;
            default:
                bad = -1;
                break;
        }
        if (bad != 0) {
            fprintf(stderr, "qraft-bench: bad value for an option\n%s", usage);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "qraft-bench: unexpected argument '%s'\n",
                argv[optind]);
        return 2;
    }
    if (cfg->connections > cfg->in_flight) {
        cfg->connections = cfg->in_flight;
    }
    return -1;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "publish") != 0) {
        if (argc >= 2 &&
            (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
            fputs(usage, stdout);
            return 0;
        }
        fputs(usage, stderr);
        return 2;
    }
    struct config cfg = {
        .n = 10000,
        .in_flight = 64,
        .size_bytes = 1024,
        .connections = 1,
        .endpoints = getenv("QRAFT_ENDPOINTS"),
        .token = getenv("QRAFT_TOKEN"),
        .url = DEFAULT_URL,
        .delay_ms = DEFAULT_DELAY_MS,
    };
    int ex = parse_args(argc - 1, argv + 1, &cfg);
    if (ex != -1) {
        return ex;
    }
    if (cfg.endpoints == NULL || cfg.endpoints[0] == '\0') {
        cfg.endpoints = QRAFT_DEFAULT_ENDPOINTS;
    }

    char *body = malloc(cfg.size_bytes + 1);
    struct worker *workers = calloc(cfg.connections, sizeof *workers);
    pthread_t *threads = calloc(cfg.connections, sizeof *threads);
    if (body == NULL || workers == NULL || threads == NULL) {
        fprintf(stderr, "qraft-bench: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < cfg.size_bytes; i++) {
        body[i] = (char)('a' + i % 26);
    }
    struct qraft_header header = {"Content-Type", "text/plain"};
    struct qraft_publish pub = {
        .url = cfg.url,
        .headers = &header,
        .n_headers = 1,
        .body = body,
        .body_len = cfg.size_bytes,
        .delay_ms = cfg.delay_ms,
    };
    struct qraft_options opts = {.call_timeout_ms = 30000};
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, cfg.connections + 1);

    FILE *ids_out = NULL;
    if (cfg.ids_out != NULL) {
        ids_out = fopen(cfg.ids_out, "w");
        if (ids_out == NULL) {
            fprintf(stderr, "qraft-bench: --ids-out %s: %s\n", cfg.ids_out,
                    strerror(errno));
            return 2;
        }
    }

    ex = 0;
    for (uint32_t i = 0; i < cfg.connections; i++) {
        struct worker *w = &workers[i];
        w->pub = &pub;
        w->ids_out = ids_out;
        w->start = &start;
        w->quota = cfg.n / cfg.connections + (i < cfg.n % cfg.connections);
        w->slots = cfg.in_flight / cfg.connections +
                   (i < cfg.in_flight % cfg.connections);
        w->sent_ticket = calloc(w->slots, sizeof *w->sent_ticket);
        w->sent_ms = malloc(w->slots * sizeof *w->sent_ms);
        w->latency_ms = malloc((w->quota + 1) * sizeof *w->latency_ms);
        if (w->sent_ticket == NULL || w->sent_ms == NULL ||
            w->latency_ms == NULL) {
            fprintf(stderr, "qraft-bench: out of memory\n");
            return 1;
        }
        for (uint32_t s = 0; s < w->slots; s++) {
            w->sent_ms[s] = -1;
        }
        int rc = qraft_client_new(cfg.endpoints, cfg.token, &opts, &w->c);
        if (rc != 0) {
            fprintf(stderr, "qraft-bench: bad endpoints '%s': %s\n",
                    cfg.endpoints, qraft_strerror(rc));
            return 2;
        }
        if (pthread_create(&threads[i], NULL, run_worker, w) != 0) {
            fprintf(stderr, "qraft-bench: cannot start a thread\n");
            return 1;
        }
    }
    pthread_barrier_wait(&start);
    double t0 = now_ms();
    for (uint32_t i = 0; i < cfg.connections; i++) {
        pthread_join(threads[i], NULL);
    }
    double elapsed_ms = now_ms() - t0;

    uint64_t n_ok = 0;
    uint64_t n_failed = 0;
    const char *first_error = NULL;
    for (uint32_t i = 0; i < cfg.connections; i++) {
        n_ok += workers[i].n_ok;
        n_failed += workers[i].n_failed;
        if (first_error == NULL && workers[i].first_error[0] != '\0') {
            first_error = workers[i].first_error;
        }
    }
    double *all = malloc((n_ok + 1) * sizeof *all);
    if (all == NULL) {
        fprintf(stderr, "qraft-bench: out of memory\n");
        return 1;
    }
    size_t k = 0;
    for (uint32_t i = 0; i < cfg.connections; i++) {
        memcpy(all + k, workers[i].latency_ms, workers[i].n_ok * sizeof *all);
        k += workers[i].n_ok;
    }
    qsort(all, k, sizeof *all, cmp_double);
    double rate = elapsed_ms > 0 ? (double)n_ok * 1000.0 / elapsed_ms : 0;
    double p50 = percentile(all, k, 50);
    double p90 = percentile(all, k, 90);
    double p99 = percentile(all, k, 99);
    double max = k > 0 ? all[k - 1] : 0;

    printf("qraft-bench publish: n=%" PRIu64 " in_flight=%" PRIu32
           " size=%zu connections=%" PRIu32 " endpoints=%s\n",
           cfg.n, cfg.in_flight, cfg.size_bytes, cfg.connections,
           cfg.endpoints);
    printf("throughput: %.1f msgs/s (%" PRIu64 " ok, %" PRIu64
           " failed in %.3f s)\n",
           rate, n_ok, n_failed, elapsed_ms / 1000.0);
    printf("latency ms: p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n", p50, p90,
           p99, max);
    printf("summary: n=%" PRIu64 " c=%" PRIu32 " s=%zu conns=%" PRIu32
           " ok=%" PRIu64 " failed=%" PRIu64
           " elapsed_s=%.3f msgs_per_s=%.1f p50_ms=%.2f p90_ms=%.2f "
           "p99_ms=%.2f max_ms=%.2f\n",
           cfg.n, cfg.in_flight, cfg.size_bytes, cfg.connections, n_ok,
           n_failed, elapsed_ms / 1000.0, rate, p50, p90, p99, max);
    if (n_failed > 0) {
        fprintf(stderr,
                "qraft-bench: %" PRIu64 " publishes failed; first: %s\n",
                n_failed, first_error != NULL ? first_error : "?");
        ex = 1;
    }

    for (uint32_t i = 0; i < cfg.connections; i++) {
        qraft_client_free(workers[i].c);
        free(workers[i].sent_ticket);
        free(workers[i].sent_ms);
        free(workers[i].latency_ms);
    }
    if (ids_out != NULL && fclose(ids_out) != 0) {
        fprintf(stderr, "qraft-bench: --ids-out %s: %s\n", cfg.ids_out,
                strerror(errno));
        ex = 1;
    }
    pthread_barrier_destroy(&start);
    free(all);
    free(threads);
    free(workers);
    free(body);
    return ex;
}
