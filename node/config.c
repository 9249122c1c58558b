/* Flags, environment and defaults of qraftd. Parsing is strict: an unknown
 * flag, a malformed value or an out-of-range number is an error naming the
 * flag, never a silent default. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "repl/command.h"

#define KIB (1024ull)
#define MIB (1024ull * KIB)
#define SECOND_MS 1000ull
#define MINUTE_MS (60ull * SECOND_MS)
#define HOUR_MS (60ull * MINUTE_MS)
#define DAY_MS (24ull * HOUR_MS)

/* Hard ceilings for what flags may configure. */
#define MAX_BODY_BYTES_CEILING (16ull * MIB)
#define DEDUP_WINDOW_CEILING_MS (90ull * DAY_MS)

void qr_config_defaults(struct qr_config *c)
{
    memset(c, 0, sizeof *c);
    c->id = 1;
    snprintf(c->data_dir, sizeof c->data_dir, "qraft-data");
    snprintf(c->raft_addr, sizeof c->raft_addr, "127.0.0.1:7200");
    snprintf(c->rpc_addr, sizeof c->rpc_addr, "127.0.0.1:7100");
    snprintf(c->http_addr, sizeof c->http_addr, "127.0.0.1:8080");

    struct qr_limits *l = &c->limits;
    l->max_body_bytes = 1 * MIB;
    l->max_url_bytes = 4 * KIB;
    l->max_headers = 64;
    l->max_header_bytes = 8 * KIB;
    l->max_retries = 100;
    l->max_delay_ms = 365 * DAY_MS;
    l->max_timeout_ms = 6 * HOUR_MS;
    l->max_expr_bytes = 256;
    l->max_name_bytes = 256;
    l->default_retries = 3;
    l->default_timeout_ms = 30 * SECOND_MS;
    l->dedup_window_ms = 10 * MINUTE_MS;
    l->max_queues = 100;
    l->max_queue_parallelism = 100;
    l->max_group_endpoints = 100;
    l->max_labels = 16;
    l->max_run_history_bytes = 64 * MIB;

    /* A leader kill is noticed within 0.4-0.8 s (raft draws the timeout
     * up to 2x): the next publish is acknowledged 0.6-0.8 s after the kill
     * (docs/benchmarks.md, "Failover"). The longest loop stall measured
     * on a leader, with a million messages pending, was 86 ms; snapshots
     * no longer stall it (images). */
    c->election_timeout_ms = 400;
    c->heartbeat_timeout_ms = 40;
    c->connect_retry_ms = 100;
    c->max_feature_level = QR_FEATURE_LEVEL;
    c->snapshot_threshold = 8192;
    c->snapshot_trailing = 8192;
    c->snapshot_log_share = 50;

    c->max_entry_bytes = 4 * MIB;
    c->max_inflight_entries = 64;
    c->max_inflight_bytes = 64 * MIB;
    c->max_queued_bytes = 64 * MIB;

    c->max_connections = 4096;
    c->http_request_timeout_ms = 10000;
    c->tls_handshake_timeout_ms = 10000;
    c->dlq_retention_ms = 7 * DAY_MS;
    c->events_retention_ms = 7 * DAY_MS;
    c->done_retention_ms = DAY_MS;
    c->pressure_retention_ms = 5 * MINUTE_MS;
    c->store_map_bytes = 0; /* sized from the disk: node/admit.c */
    c->log_level = QR_LOG_INFO;
}

void qr_config_usage(FILE *out)
{
    fputs(
        "usage: qraftd --dev [options]\n"
        "       qraftd --id N --peers 1@HOST:PORT,2@HOST:PORT,... [options]\n"
        "\n"
        "  --dev                  one-node cluster for development; prints\n"
        "                         the QSTASH_* and QRAFT_ENDPOINTS lines\n"
        "  --id N                 this node's id, 1..65535 (default 1)\n"
        "  --peers LIST           the cluster's voters as ID@RAFT_ADDR,...\n"
        "  --join                 start with an empty data dir and wait to be\n"
        "                         added (qraft cluster add ID RAFT_ADDR\n"
        "                         --rpc RPC_ADDR)\n"
        "  --data DIR             data directory (default ./qraft-data)\n"
        "  --raft HOST:PORT       raft address (default 127.0.0.1:7200)\n"
        "  --raft-bind IP:PORT    listen for raft here instead (same port;\n"
        "                         e.g. 0.0.0.0:7200 behind a service\n"
        "                         address that --raft names)\n"
        "  --rpc HOST:PORT        client RPC address (default 127.0.0.1:7100)\n"
        "  --http HOST:PORT       HTTP address (default 127.0.0.1:8080)\n"
        "  --peer-token T         secret for node-to-node requests (env\n"
        "                         QRAFT_PEER_TOKEN; default: the API token)\n"
        "  --token T              API token with every scope (env\n"
        "                         QRAFT_TOKEN); --dev generates one and\n"
        "                         keeps it in DIR\n"
        "  --token-file PATH      scoped API tokens, one NAME SCOPES SECRET\n"
        "                         line each (env QRAFT_TOKEN_FILE); SIGHUP\n"
        "                         re-reads it\n"
        "  --tls-cert PATH, --tls-key PATH  the node's certificate (PEM, with\n"
        "                         its chain) and key: its listeners serve TLS\n"
        "                         (env QRAFT_TLS_CERT, QRAFT_TLS_KEY)\n"
        "  --tls-ca PATH          CA certificates (PEM) that verify the other\n"
        "                         side where it must present one (env\n"
        "                         QRAFT_TLS_CA)\n"
        "  --print-scopes         print the scope every REST route and RPC\n"
        "                         kind needs, and exit\n"
        "  --allow-destinations LIST  networks deliveries may reach beyond\n"
        "                         public addresses: CIDR,... (10.0.0.0/8,\n"
        "                         fd00::/8, 127.0.0.1) or none; default:\n"
        "                         loopback under --dev or when every\n"
        "                         listener is on loopback, else nothing\n"
        "  --max-body-bytes N     largest message body (default 1048576,\n"
        "                         at most 16777216)\n"
        "  --dedup-window DUR     dedup window (default 10m, at most 90d)\n"
        "  --max-run-history-bytes N  largest workflow run history (default\n"
        "                         67108864, at most 4294967295)\n"
        "  --max-queues N         most queues (default 100, at most 100000)\n"
        "  --max-queue-parallelism N  highest queue parallelism (default\n"
        "                         100, at most 10000)\n"
        "  --snapshot-threshold N entries between snapshots (default 8192)\n"
        "  --snapshot-log-share PCT  past 64 MiB of store, a snapshot also\n"
        "                         waits for this percent of the store in log\n"
        "                         (default 50; 0: entries only)\n"
        "  --dlq-retention DUR    how long dead letters are kept (default 7d;\n"
        "                         0 keeps them until deleted)\n"
        "  --events-retention DUR how long message history is kept (default\n"
        "                         7d; 0 keeps it)\n"
        "  --done-retention DUR   how long delivered and cancelled messages\n"
        "                         stay readable (default 1d; 0 keeps them)\n"
        "  --pressure-retention DUR  while a store is at 80% of its limit or\n"
        "                         a node is short of space, keep those and\n"
        "                         history at most this long (default 5m)\n"
        "  --min-free-bytes N     refuse writes that add data (HTTP 507)\n"
        "                         while the data dir's disk has less than\n"
        "                         N bytes free beyond the state's needs\n"
        "                         (default 5% of the disk, 16 MiB..256 MiB;\n"
        "                         suffixes k, m, g, t: KiB, MiB, GiB, TiB)\n"
        "  --store-max-bytes N    also refuse them once the store holds N\n"
        "                         bytes (default: no limit but the disk's)\n"
        "  --election-timeout-ms N  (default 400)\n"
        "  --heartbeat-timeout-ms N (default 40)\n"
        "  --connect-retry-ms N   raft reconnect delay (default 100)\n"
        "  --max-connections N    client connections per listener, RPC and\n"
        "                         HTTP each (default 4096)\n"
        "  --http-request-timeout-ms N  an HTTP request's headers and body\n"
        "                         must arrive within this (default 10000)\n"
        "  --tls-handshake-timeout-ms N  a TLS handshake on the RPC port must\n"
        "                         finish within this (default 10000)\n"
        "  --max-feature-level N  advertise at most this feature level, so\n"
        "                         a rolling upgrade can still be rolled back\n"
        "                         (default: this binary's)\n"
        "  --log-level L          debug, info, warn or error (default info)\n"
        "  --version, --help\n"
        "\n"
        "Durations are <number><unit>... with units ms, s, m, h, d "
        "(1d10h30m).\n",
        out);
}

/* Reads "<digits>[.<digits>]" and nothing else: no sign, exponent or hex
 * (strtod would take those). */
static int read_number(const char **p, double *out)
{
    const char *q = *p;
    double v = 0;
    bool any = false;
    while (*q >= '0' && *q <= '9') {
        v = v * 10 + (*q++ - '0');
        any = true;
    }
    if (*q == '.') {
        double scale = 0.1;
        q++;
        while (*q >= '0' && *q <= '9') {
            v += (*q++ - '0') * scale;
            scale /= 10;
            any = true;
        }
    }
    if (!any || v > 1e15) {
        return QR_EBADREQ;
    }
    *p = q;
    *out = v;
    return 0;
}

int qr_config_parse_duration_ms(const char *s, uint64_t *out)
{
    if (s == NULL || *s == '\0') {
        return QR_EBADREQ;
    }
    const char *p = s;
    double total = 0;
    double v;
    if (read_number(&p, &v) != 0) {
        return QR_EBADREQ;
    }
    if (*p == '\0') {
        total = v * SECOND_MS; /* a bare number, alone, is seconds */
    } else {
        for (;;) {
            double unit_ms;
            if (strncmp(p, "ms", 2) == 0) {
                unit_ms = 1;
                p += 2;
            } else if (*p == 's') {
                unit_ms = SECOND_MS;
                p++;
            } else if (*p == 'm') {
                unit_ms = MINUTE_MS;
                p++;
            } else if (*p == 'h') {
                unit_ms = HOUR_MS;
                p++;
            } else if (*p == 'd') {
                unit_ms = DAY_MS;
                p++;
            } else {
                return QR_EBADREQ;
            }
            total += v * unit_ms;
            if (total > 1e15) { /* ~31,000 years: surely a mistake */
                return QR_EBADREQ;
            }
            if (*p == '\0') {
                break;
            }
            if (read_number(&p, &v) != 0) {
                return QR_EBADREQ;
            }
        }
    }
    *out = (uint64_t)llround(total);
    return 0;
}

/* The power of two a byte count's suffix stands for: k, m, g, t (binary
 * multiples, either case), 0 for none, -1 for anything else. */
static int suffix_shift(char c)
{
    switch (c) {
        case '\0':
            return 0;
        case 'k':
        case 'K':
            return 10;
        case 'm':
        case 'M':
            return 20;
        case 'g':
        case 'G':
            return 30;
        case 't':
        case 'T':
            return 40;
        default:
            return -1;
    }
}

/* Digits in min..max; with `suffixed`, optionally followed by one byte
 * count suffix (see suffix_shift) that scales them. */
static int parse_number(const char *s,
                        bool suffixed,
                        uint64_t min,
                        uint64_t max,
                        uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9') {
        return QR_EBADREQ;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    int shift = suffixed ? suffix_shift(*end) : (*end == '\0' ? 0 : -1);
    if (errno != 0 || shift < 0 || (shift != 0 && end[1] != '\0') ||
        v > (UINT64_MAX >> shift)) {
        return QR_EBADREQ;
    }
    v <<= shift;
    if (v < min || v > max) {
        return QR_EBADREQ;
    }
    *out = v;
    return 0;
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    return parse_number(s, false, min, max, out);
}

/* A byte count: digits, then optionally one of k, m, g, t (binary
 * multiples, either case); in min..max. */
static int parse_bytes(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    return parse_number(s, true, min, max, out);
}

/* "HOST:PORT" with a non-empty host and a port in 1..65535. */
static int check_hostport(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || strlen(s) >= QR_ADDR_MAX) {
        return QR_EBADREQ;
    }
    uint64_t port;
    return parse_u64(colon + 1, 1, 65535, &port);
}

/* The raft library takes IPv4 dotted quads: a host name is resolved here,
 * once, to its first IPv4 address. */
static int resolve_ipv4(char *hostport,
                        size_t size,
                        char *errmsg,
                        const char *flag)
{
    char host[QR_ADDR_MAX];
    const char *colon = strrchr(hostport, ':');
    size_t host_len = (size_t)(colon - hostport);
    struct in_addr a;
    memcpy(host, hostport, host_len);
    host[host_len] = '\0';
    if (inet_pton(AF_INET, host, &a) == 1) {
        return 0;
    }
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rv = getaddrinfo(host, NULL, &hints, &res);
    if (rv != 0 || res == NULL) {
        snprintf(errmsg, QR_ERRMSG_BYTES,
                 "%s: cannot resolve '%s' to an IPv4 address: %s", flag, host,
                 rv != 0 ? gai_strerror(rv) : "no address");
        return QR_EBADREQ;
    }
    char ip[INET_ADDRSTRLEN];
    const struct sockaddr_in *sin = (const struct sockaddr_in *)res->ai_addr;
    inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof ip);
    freeaddrinfo(res);
    char port[8];
    snprintf(port, sizeof port, "%s", colon + 1);
    snprintf(hostport, size, "%s:%s", ip, port);
    return 0;
}

/* Whether a listener on hostport ("HOST:PORT", "[V6]:PORT") takes
 * connections from this machine only: HOST is a loopback address, or a name
 * all of whose addresses are. An empty host (every interface) is not. */
static bool on_loopback(const char *hostport)
{
    char host[QR_ADDR_MAX];
    const char *colon = strrchr(hostport, ':');
    size_t len = colon != NULL ? (size_t)(colon - hostport) : 0;
    if (len == 0 || len >= sizeof host) {
        return false;
    }
    memcpy(host, hostport, len);
    host[len] = '\0';
    struct qr_dest_addr a;
    if (qr_dest_parse_addr(host, &a) == 0) {
        return qr_dest_classify(&a) == QR_DEST_LOOPBACK;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL) {
        return false;
    }
    bool loopback = true;
    for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        loopback =
            loopback &&
            qr_dest_from_sockaddr(ai->ai_addr, ai->ai_addrlen, &a) == 0 &&
            qr_dest_classify(&a) == QR_DEST_LOOPBACK;
    }
    freeaddrinfo(res);
    return loopback;
}

/* "1@127.0.0.1:7201,2@127.0.0.1:7202" */
static int parse_peers(struct qr_config *c, const char *list, char *errmsg)
{
    char *copy = strdup(list);
    if (copy == NULL) {
        return -ENOMEM;
    }
    int rv = 0;
    char *save = NULL;
    c->n_peers = 0;
    for (char *item = strtok_r(copy, ",", &save); item != NULL;
         item = strtok_r(NULL, ",", &save)) {
        char *at = strchr(item, '@');
        if (c->n_peers == QR_MAX_PEERS) {
            snprintf(errmsg, QR_ERRMSG_BYTES, "--peers: more than %d peers",
                     QR_MAX_PEERS);
            rv = QR_EBADREQ;
            break;
        }
        struct qr_config_peer *p = &c->peers[c->n_peers];
        char quoted[QR_ADDR_MAX + 24];
        snprintf(quoted, sizeof quoted, "%s", item);
        if (at == NULL) {
            rv = QR_EBADREQ;
        } else {
            *at = '\0';
            rv = parse_u64(item, 1, QR_MAX_NODE_ID, &p->id);
            if (rv == 0) {
                rv = check_hostport(at + 1);
            }
        }
        if (rv != 0) {
            snprintf(errmsg, QR_ERRMSG_BYTES,
                     "--peers: '%s' is not ID@HOST:PORT (ID 1..%u)", quoted,
                     QR_MAX_NODE_ID);
            break;
        }
        snprintf(p->raft_addr, sizeof p->raft_addr, "%s", at + 1);
        rv = resolve_ipv4(p->raft_addr, sizeof p->raft_addr, errmsg, "--peers");
        if (rv != 0) {
            break;
        }
        for (size_t i = 0; i < c->n_peers; i++) {
            if (c->peers[i].id == p->id) {
                snprintf(errmsg, QR_ERRMSG_BYTES, "--peers: id %llu twice",
                         (unsigned long long)p->id);
                rv = QR_EBADREQ;
            }
        }
        if (rv != 0) {
            break;
        }
        c->n_peers++;
    }
    free(copy);
    return rv;
}

enum {
    OPT_DEV = 256,
    OPT_JOIN,
    OPT_ID,
    OPT_PEERS,
    OPT_DATA,
    OPT_RAFT,
    OPT_RAFT_BIND,
    OPT_RPC,
    OPT_HTTP,
    OPT_TOKEN,
    OPT_PEER_TOKEN,
    OPT_TOKEN_FILE,
    OPT_TLS_CERT,
    OPT_TLS_KEY,
    OPT_TLS_CA,
    OPT_PRINT_SCOPES,
    OPT_ALLOW_DESTINATIONS,
    OPT_MAX_BODY,
    OPT_DEDUP_WINDOW,
    OPT_MAX_RUN_HISTORY,
    OPT_MAX_QUEUES,
    OPT_MAX_QUEUE_PARALLELISM,
    OPT_SNAPSHOT_THRESHOLD,
    OPT_SNAPSHOT_LOG_SHARE,
    OPT_DLQ_RETENTION,
    OPT_EVENTS_RETENTION,
    OPT_DONE_RETENTION,
    OPT_PRESSURE_RETENTION,
    OPT_MIN_FREE,
    OPT_STORE_MAX,
    OPT_ELECTION,
    OPT_HEARTBEAT,
    OPT_CONNECT_RETRY,
    OPT_MAX_FEATURE_LEVEL,
    OPT_MAX_CONNECTIONS,
    OPT_HTTP_REQUEST_TIMEOUT,
    OPT_TLS_HANDSHAKE_TIMEOUT,
    OPT_LOG_LEVEL,
    OPT_VERSION,
    OPT_HELP,
};

static const struct option long_options[] = {
    {"dev", no_argument, NULL, OPT_DEV},
    {"join", no_argument, NULL, OPT_JOIN},
    {"id", required_argument, NULL, OPT_ID},
    {"peers", required_argument, NULL, OPT_PEERS},
    {"data", required_argument, NULL, OPT_DATA},
    {"raft", required_argument, NULL, OPT_RAFT},
    {"raft-bind", required_argument, NULL, OPT_RAFT_BIND},
    {"rpc", required_argument, NULL, OPT_RPC},
    {"http", required_argument, NULL, OPT_HTTP},
    {"token", required_argument, NULL, OPT_TOKEN},
    {"peer-token", required_argument, NULL, OPT_PEER_TOKEN},
    {"token-file", required_argument, NULL, OPT_TOKEN_FILE},
    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
    {"tls-key", required_argument, NULL, OPT_TLS_KEY},
    {"tls-ca", required_argument, NULL, OPT_TLS_CA},
    {"print-scopes", no_argument, NULL, OPT_PRINT_SCOPES},
    {"allow-destinations", required_argument, NULL, OPT_ALLOW_DESTINATIONS},
    {"max-body-bytes", required_argument, NULL, OPT_MAX_BODY},
    {"dedup-window", required_argument, NULL, OPT_DEDUP_WINDOW},
    {"max-run-history-bytes", required_argument, NULL, OPT_MAX_RUN_HISTORY},
    {"max-queues", required_argument, NULL, OPT_MAX_QUEUES},
    {"max-queue-parallelism", required_argument, NULL,
     OPT_MAX_QUEUE_PARALLELISM},
    {"snapshot-threshold", required_argument, NULL, OPT_SNAPSHOT_THRESHOLD},
    {"snapshot-log-share", required_argument, NULL, OPT_SNAPSHOT_LOG_SHARE},
    {"dlq-retention", required_argument, NULL, OPT_DLQ_RETENTION},
    {"events-retention", required_argument, NULL, OPT_EVENTS_RETENTION},
    {"done-retention", required_argument, NULL, OPT_DONE_RETENTION},
    {"pressure-retention", required_argument, NULL, OPT_PRESSURE_RETENTION},
    {"min-free-bytes", required_argument, NULL, OPT_MIN_FREE},
    {"store-max-bytes", required_argument, NULL, OPT_STORE_MAX},
    {"election-timeout-ms", required_argument, NULL, OPT_ELECTION},
    {"heartbeat-timeout-ms", required_argument, NULL, OPT_HEARTBEAT},
    {"connect-retry-ms", required_argument, NULL, OPT_CONNECT_RETRY},
    {"max-feature-level", required_argument, NULL, OPT_MAX_FEATURE_LEVEL},
    {"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
    {"http-request-timeout-ms", required_argument, NULL,
     OPT_HTTP_REQUEST_TIMEOUT},
    {"tls-handshake-timeout-ms", required_argument, NULL,
     OPT_TLS_HANDSHAKE_TIMEOUT},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"version", no_argument, NULL, OPT_VERSION},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static int copy_addr(char *dst, const char *flag, const char *v, char *errmsg)
{
    if (check_hostport(v) != 0) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "%s: '%s' is not HOST:PORT", flag, v);
        return QR_EBADREQ;
    }
    snprintf(dst, QR_ADDR_MAX, "%s", v);
    return 0;
}

/* A file's path (non-empty, under PATH_MAX) into dst[PATH_MAX]. */
static int parse_path(const char *flag, const char *v, char *dst, char *errmsg)
{
    if (v[0] == '\0' || strlen(v) >= PATH_MAX) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "%s: '%.64s' is not a usable path",
                 flag, v);
        return QR_EBADREQ;
    }
    snprintf(dst, PATH_MAX, "%s", v);
    return 0;
}

/* An integer option in min..max into *out, set only when v is in range;
 * the message names flag, the range and its unit ("" or " ms"). */
static int parse_range(const char *flag,
                       const char *v,
                       uint32_t min,
                       uint32_t max,
                       const char *unit,
                       uint32_t *out,
                       char *errmsg)
{
    uint64_t n;
    if (parse_u64(v, min, max, &n) != 0) {
        snprintf(errmsg, QR_ERRMSG_BYTES,
                 "%s: '%s' is not in %" PRIu32 "..%" PRIu32 "%s", flag, v, min,
                 max, unit);
        return QR_EBADREQ;
    }
    *out = (uint32_t)n;
    return 0;
}

static int apply_option(struct qr_config *c,
                        int opt,
                        const char *v,
                        FILE *out,
                        enum qr_config_action *action,
                        char *errmsg)
{
    uint64_t n;
    switch (opt) {
        case OPT_DEV:
            c->dev = true;
            return 0;
        case OPT_JOIN:
            c->join = true;
            return 0;
        case OPT_ID:
            if (parse_u64(v, 1, QR_MAX_NODE_ID, &c->id) != 0) {
                snprintf(errmsg, QR_ERRMSG_BYTES,
                         "--id: '%s' is not an integer in 1..%u", v,
                         QR_MAX_NODE_ID);
                return QR_EBADREQ;
            }
            return 0;
        case OPT_PEERS:
            return parse_peers(c, v, errmsg);
        case OPT_DATA:
            if (strlen(v) == 0 || strlen(v) >= sizeof c->data_dir - 32) {
                snprintf(errmsg, QR_ERRMSG_BYTES, "--data: bad directory");
                return QR_EBADREQ;
            }
            snprintf(c->data_dir, sizeof c->data_dir, "%s", v);
            return 0;
        case OPT_RAFT: {
            int rv = copy_addr(c->raft_addr, "--raft", v, errmsg);
            return rv != 0 ? rv
                           : resolve_ipv4(c->raft_addr, sizeof c->raft_addr,
                                          errmsg, "--raft");
        }
        case OPT_RAFT_BIND: {
            struct in_addr a;
            const char *colon = strrchr(v, ':');
            char ip[INET_ADDRSTRLEN] = "";
            if (colon != NULL && (size_t)(colon - v) < sizeof ip) {
                memcpy(ip, v, (size_t)(colon - v));
                ip[colon - v] = '\0';
            }
            if (inet_pton(AF_INET, ip, &a) != 1) {
                snprintf(errmsg, QR_ERRMSG_BYTES,
                         "--raft-bind: '%s' is not IPV4:PORT", v);
                return QR_EBADREQ;
            }
            return copy_addr(c->raft_bind_addr, "--raft-bind", v, errmsg);
        }
        case OPT_RPC:
            return copy_addr(c->rpc_addr, "--rpc", v, errmsg);
        case OPT_HTTP:
            return copy_addr(c->http_addr, "--http", v, errmsg);
        case OPT_TOKEN:
        case OPT_PEER_TOKEN: {
            char *dst = opt == OPT_TOKEN ? c->token : c->peer_token;
            if (strlen(v) == 0 || strlen(v) >= QR_TOKEN_MAX) {
                snprintf(errmsg, QR_ERRMSG_BYTES, "%s: must be 1 to %d bytes",
                         opt == OPT_TOKEN ? "--token" : "--peer-token",
                         QR_TOKEN_MAX - 1);
                return QR_EBADREQ;
            }
            snprintf(dst, QR_TOKEN_MAX, "%s", v);
            return 0;
        }
        case OPT_TOKEN_FILE:
            if (strlen(v) == 0 || strlen(v) >= sizeof c->token_file) {
                snprintf(errmsg, QR_ERRMSG_BYTES, "--token-file: bad path");
                return QR_EBADREQ;
            }
            snprintf(c->token_file, sizeof c->token_file, "%s", v);
            return 0;
        case OPT_TLS_CERT:
            return parse_path("--tls-cert", v, c->tls_cert, errmsg);
        case OPT_TLS_KEY:
            return parse_path("--tls-key", v, c->tls_key, errmsg);
        case OPT_TLS_CA:
            return parse_path("--tls-ca", v, c->tls_ca, errmsg);
        case OPT_PRINT_SCOPES:
            *action = QR_CONFIG_PRINT_SCOPES;
            return 0;
        case OPT_ALLOW_DESTINATIONS: {
            char why[QR_ERRMSG_BYTES - 32];
            if (qr_dest_parse_nets(v, &c->destinations, why, sizeof why) != 0) {
                snprintf(errmsg, QR_ERRMSG_BYTES, "--allow-destinations: %s",
                         why);
                return QR_EBADREQ;
            }
            c->destinations_set = true;
            return 0;
        }
        case OPT_MAX_BODY: {
            uint32_t bytes;
            int rv = parse_range("--max-body-bytes", v, 1,
                                 MAX_BODY_BYTES_CEILING, "", &bytes, errmsg);
            if (rv == 0) {
                c->limits.max_body_bytes = bytes;
            }
            return rv;
        }
        case OPT_DEDUP_WINDOW:
            if (qr_config_parse_duration_ms(v, &n) != 0 || n == 0 ||
                n > DEDUP_WINDOW_CEILING_MS) {
                snprintf(errmsg, QR_ERRMSG_BYTES,
                         "--dedup-window: '%s' is not a duration in 1ms..90d",
                         v);
                return QR_EBADREQ;
            }
            c->limits.dedup_window_ms = n;
            return 0;
        case OPT_MAX_RUN_HISTORY:
            return parse_range("--max-run-history-bytes", v, 1, UINT32_MAX, "",
                               &c->limits.max_run_history_bytes, errmsg);
        case OPT_MAX_QUEUES:
            return parse_range("--max-queues", v, 1, 100000, "",
                               &c->limits.max_queues, errmsg);
        case OPT_MAX_QUEUE_PARALLELISM:
            return parse_range("--max-queue-parallelism", v, 1, 10000, "",
                               &c->limits.max_queue_parallelism, errmsg);
        case OPT_SNAPSHOT_THRESHOLD:
            if (parse_u64(v, 16, 1u << 30, &n) != 0) {
                snprintf(errmsg, QR_ERRMSG_BYTES,
                         "--snapshot-threshold: '%s' is not in 16..2^30", v);
                return QR_EBADREQ;
            }
            c->snapshot_threshold = (unsigned)n;
            c->snapshot_trailing = (unsigned)n;
            return 0;
        case OPT_SNAPSHOT_LOG_SHARE:
            return parse_range("--snapshot-log-share", v, 0, 1000, "",
                               &c->snapshot_log_share, errmsg);
        case OPT_DLQ_RETENTION:
        case OPT_EVENTS_RETENTION:
        case OPT_DONE_RETENTION:
            n = 0; /* "0": keep forever */
            if ((strcmp(v, "0") != 0 &&
                 qr_config_parse_duration_ms(v, &n) != 0) ||
                n > 10 * 365 * DAY_MS) {
                snprintf(errmsg, QR_ERRMSG_BYTES,
                         "%s: '%s' is not a duration up to 3650d (or 0)",
                         opt == OPT_DLQ_RETENTION      ? "--dlq-retention"
                         : opt == OPT_EVENTS_RETENTION ? "--events-retention"
                                                       : "--done-retention",
                         v);
                return QR_EBADREQ;
            }
            if (opt == OPT_DLQ_RETENTION) {
                c->dlq_retention_ms = n;
            } else if (opt == OPT_EVENTS_RETENTION) {
                c->events_retention_ms = n;
            } else {
                c->done_retention_ms = n;
            }
            return 0;
        case OPT_PRESSURE_RETENTION:
            if (qr_config_parse_duration_ms(v, &n) != 0 || n == 0 ||
                n > 10 * 365 * DAY_MS) {
                snprintf(errmsg, QR_ERRMSG_BYTES,
                         "--pressure-retention: '%s' is not a duration from "
                         "1ms to 3650d",
                         v);
                return QR_EBADREQ;
            }
            c->pressure_retention_ms = n;
            return 0;
        case OPT_MIN_FREE:
        case OPT_STORE_MAX:
            if (parse_bytes(v, 1 * MIB, 1ull << 50, &n) != 0) {
                snprintf(errmsg, QR_ERRMSG_BYTES,
                         "%s: '%s' is not a byte count from 1m to 1024t",
                         opt == OPT_MIN_FREE ? "--min-free-bytes"
                                             : "--store-max-bytes",
                         v);
                return QR_EBADREQ;
            }
            if (opt == OPT_MIN_FREE) {
                c->min_free_bytes = n;
            } else {
                c->store_max_bytes = n;
            }
            return 0;
        case OPT_CONNECT_RETRY:
            return parse_range("--connect-retry-ms", v, 1, 60000, "",
                               &c->connect_retry_ms, errmsg);
        case OPT_MAX_CONNECTIONS:
            return parse_range("--max-connections", v, 1, 1000000, "",
                               &c->max_connections, errmsg);
        case OPT_HTTP_REQUEST_TIMEOUT:
            return parse_range("--http-request-timeout-ms", v, 100, 3600000, "",
                               &c->http_request_timeout_ms, errmsg);
        case OPT_TLS_HANDSHAKE_TIMEOUT:
            return parse_range("--tls-handshake-timeout-ms", v, 50, 600000, "",
                               &c->tls_handshake_timeout_ms, errmsg);
        case OPT_MAX_FEATURE_LEVEL:
            return parse_range("--max-feature-level", v, 1, QR_FEATURE_LEVEL,
                               "", &c->max_feature_level, errmsg);
        case OPT_ELECTION:
            return parse_range("--election-timeout-ms", v, 1, 60000, " ms",
                               &c->election_timeout_ms, errmsg);
        case OPT_HEARTBEAT:
            return parse_range("--heartbeat-timeout-ms", v, 1, 60000, " ms",
                               &c->heartbeat_timeout_ms, errmsg);
        case OPT_LOG_LEVEL:
            if (qr_log_parse_level(v, &c->log_level) != 0) {
                snprintf(errmsg, QR_ERRMSG_BYTES,
                         "--log-level: '%s' is not debug, info, warn or "
                         "error",
                         v);
                return QR_EBADREQ;
            }
            return 0;
        case OPT_VERSION:
            fprintf(out, "qraftd %s\n", QRAFT_VERSION);
            *action = QR_CONFIG_EXIT_OK;
            return 0;
        case OPT_HELP:
            qr_config_usage(out);
            *action = QR_CONFIG_EXIT_OK;
            return 0;
        default:
            snprintf(errmsg, QR_ERRMSG_BYTES,
                     "unknown or incomplete option (see --help)");
            return QR_EBADREQ;
    }
}

int qr_config_parse(struct qr_config *c,
                    int argc,
                    char **argv,
                    FILE *out,
                    enum qr_config_action *action,
                    char *errmsg)
{
    *action = QR_CONFIG_RUN;
    errmsg[0] = '\0';

    static const struct {
        const char *name;
        int opt;
    } env_options[] = {{"QRAFT_TOKEN", OPT_TOKEN},
                       {"QRAFT_PEER_TOKEN", OPT_PEER_TOKEN},
                       {"QRAFT_TOKEN_FILE", OPT_TOKEN_FILE},
                       {"QRAFT_TLS_CERT", OPT_TLS_CERT},
                       {"QRAFT_TLS_KEY", OPT_TLS_KEY},
                       {"QRAFT_TLS_CA", OPT_TLS_CA}};
    for (size_t i = 0; i < sizeof env_options / sizeof env_options[0]; i++) {
        const char *v = getenv(env_options[i].name);
        if (v != NULL && *v != '\0') {
            int rv =
                apply_option(c, env_options[i].opt, v, out, action, errmsg);
            if (rv != 0) {
                return rv;
            }
        }
    }

    optind = 0; /* 0, not 1: also resets glibc's place inside "-xy" */
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        if (opt == '?' || opt == ':') {
            if (optopt != 0 && optopt < 256) {
                snprintf(errmsg, QR_ERRMSG_BYTES,
                         "unknown option '-%c' (see --help)", optopt);
            } else {
                snprintf(errmsg, QR_ERRMSG_BYTES,
                         "unknown option or missing value: '%s' (see --help)",
                         argv[optind - 1]);
            }
            return QR_EBADREQ;
        }
        int rv = apply_option(c, opt, optarg, out, action, errmsg);
        if (rv != 0) {
            return rv;
        }
        if (*action != QR_CONFIG_RUN) {
            return 0;
        }
    }
    if (optind < argc) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "unexpected argument '%s'",
                 argv[optind]);
        return QR_EBADREQ;
    }

    if (c->join && (c->dev || c->n_peers > 0)) {
        snprintf(errmsg, QR_ERRMSG_BYTES,
                 "--join starts a node outside any cluster: no --dev or "
                 "--peers");
        return QR_EBADREQ;
    }
    if (c->dev && c->n_peers > 0) {
        snprintf(errmsg, QR_ERRMSG_BYTES,
                 "--dev and --peers exclude each "
                 "other");
        return QR_EBADREQ;
    }
    if (c->n_peers > 0) {
        bool self = false;
        for (size_t i = 0; i < c->n_peers; i++) {
            self = self || c->peers[i].id == c->id;
        }
        if (!self) {
            snprintf(errmsg, QR_ERRMSG_BYTES,
                     "--peers does not list this node's --id %llu",
                     (unsigned long long)c->id);
            return QR_EBADREQ;
        }
    }
    if (!c->dev && c->token[0] == '\0' && c->token_file[0] == '\0') {
        snprintf(errmsg, QR_ERRMSG_BYTES,
                 "--token (QRAFT_TOKEN) or --token-file (QRAFT_TOKEN_FILE) "
                 "is required outside --dev");
        return QR_EBADREQ;
    }
    /* Node-to-node requests fall back to the API token, which a token file
     * alone does not give. */
    if (!c->dev && c->token[0] == '\0' && c->peer_token[0] == '\0') {
        snprintf(errmsg, QR_ERRMSG_BYTES,
                 "--token-file without --token needs --peer-token "
                 "(QRAFT_PEER_TOKEN) for node-to-node requests");
        return QR_EBADREQ;
    }
    if ((c->tls_cert[0] == '\0') != (c->tls_key[0] == '\0')) {
        snprintf(errmsg, QR_ERRMSG_BYTES,
                 "--tls-cert and --tls-key go together: a certificate needs "
                 "its key");
        return QR_EBADREQ;
    }
    const char *bind_port = strrchr(c->raft_bind_addr, ':');
    if (bind_port != NULL &&
        strcmp(bind_port, strrchr(c->raft_addr, ':')) != 0) {
        snprintf(errmsg, QR_ERRMSG_BYTES,
                 "--raft-bind %s: its port must be --raft's (%s)",
                 c->raft_bind_addr, c->raft_addr);
        return QR_EBADREQ;
    }
    if (c->heartbeat_timeout_ms >= c->election_timeout_ms) {
        snprintf(errmsg, QR_ERRMSG_BYTES,
                 "--heartbeat-timeout-ms must be below --election-timeout-ms");
        return QR_EBADREQ;
    }
    /* Frames may carry bodies up to the configurable ceiling, so that a body
     * over the configured limit still reaches the request check and gets an
     * error that names the limit, rather than a closed connection. */
    c->max_frame_bytes = MAX_BODY_BYTES_CEILING + 1 * MIB;
    c->http_on_loopback = on_loopback(c->http_addr);
    if (!c->destinations_set) {
        c->destinations.allow_loopback =
            c->dev || (on_loopback(c->raft_addr) && on_loopback(c->rpc_addr) &&
                       c->http_on_loopback);
    }
    return 0;
}
