/* Flags, config file, environment and defaults of qraftd. One table
 * (settings[]) names every flag, its file key and its environment variable;
 * one function (apply_option) gives each its meaning, whichever the source.
 * Parsing is strict: an unknown flag or key, a malformed value or an
 * out-of-range number is an error naming the flag (or file, line and key),
 * never a silent default. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "config_file.h"
#include "config_values.h"
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
    c->drain_timeout_ms = 5000;
    c->dlq_retention_ms = 7 * DAY_MS;
    c->events_retention_ms = 7 * DAY_MS;
    c->done_retention_ms = DAY_MS;
    c->pressure_retention_ms = 5 * MINUTE_MS;
    c->store_map_bytes = 0; /* sized from the disk: node/admit.c */
    c->log_level = QR_LOG_INFO;
    snprintf(c->otlp_service_name, sizeof c->otlp_service_name, "qraft");
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
        "  --drain-timeout-ms N   on SIGTERM, deliveries running may finish\n"
        "                         and commit their results this long; what\n"
        "                         still runs then is cancelled and sent\n"
        "                         again by the next owner (default 5000)\n"
        "  --max-feature-level N  advertise at most this feature level, so\n"
        "                         a rolling upgrade can still be rolled back\n"
        "                         (default: this binary's)\n"
        "  --log-level L          debug, info, warn or error (default info)\n"
        "  --log-format F         text or json: one JSON object per line\n"
        "                         (default text)\n"
        "  --otlp-endpoint URL    export trace spans (publish, delivery\n"
        "                         attempts) as OTLP/HTTP JSON to this URL,\n"
        "                         e.g. http://127.0.0.1:4318/v1/traces, and\n"
        "                         send a traceparent with every delivery\n"
        "                         (default: empty, tracing off)\n"
        "  --otlp-service-name N  the spans' service.name (default qraft)\n"
        "  --config FILE          read settings from a YAML file: each key a\n"
        "                         flag's name without --; the environment and\n"
        "                         flags override it\n"
        "  --print-config         print the settings (file, environment and\n"
        "                         flags merged) as YAML, secrets masked, and\n"
        "                         exit\n"
        "  --version, --help\n"
        "\n"
        "Durations are <number><unit>... with units ms, s, m, h, d "
        "(1d10h30m).\n",
        out);
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
            rv = qr_config_parse_u64(item, 1, QR_MAX_NODE_ID, &p->id);
            if (rv == 0) {
                rv = qr_config_check_hostport(at + 1);
            }
        }
        if (rv != 0) {
            snprintf(errmsg, QR_ERRMSG_BYTES,
                     "--peers: '%s' is not ID@HOST:PORT (ID 1..%u)", quoted,
                     QR_MAX_NODE_ID);
            break;
        }
        snprintf(p->raft_addr, sizeof p->raft_addr, "%s", at + 1);
        rv = qr_config_resolve_ipv4(p->raft_addr, sizeof p->raft_addr, errmsg,
                                    "--peers");
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
    OPT_DRAIN_TIMEOUT,
    OPT_LOG_LEVEL,
    OPT_LOG_FORMAT,
    OPT_OTLP_ENDPOINT,
    OPT_OTLP_SERVICE_NAME,
    OPT_CONFIG,
    OPT_PRINT_CONFIG,
    OPT_VERSION,
    OPT_HELP,
};

/* What a setting's value is, on the command line and in a config file. */
enum setting_kind {
    SET_BOOL,   /* a flag without a value; in a file true or false */
    SET_VALUE,  /* --name VALUE; in a file a scalar */
    SET_LIST,   /* --name A,B; in a file a sequence or a comma string */
    SET_SECRET, /* a value --print-config shows as "***" */
    SET_ACTION, /* command line only: what to do rather than how to run */
};

/* Every flag, in --help's order. Its long name is also its config file key
 * and its --print-config line: one row here is all a new flag needs beside
 * its case in apply_option (and its lines in qr_config_usage). */
static const struct setting {
    const char *name;
    int opt;
    enum setting_kind kind;
    const char *env; /* the environment variable that sets it, or NULL */
    /* The default as a value the flag takes, what --print-config shows
     * when nothing set it; NULL: none, or one computed at start-up (then
     * `unset` says which, in a comment). */
    const char *default_value;
    const char *unset;
} settings[] = {
    {"dev", OPT_DEV, SET_BOOL, NULL, "false", NULL},
    {"id", OPT_ID, SET_VALUE, NULL, "1", NULL},
    {"peers", OPT_PEERS, SET_LIST, NULL, NULL, "a cluster of one"},
    {"join", OPT_JOIN, SET_BOOL, NULL, "false", NULL},
    {"data", OPT_DATA, SET_VALUE, NULL, "qraft-data", NULL},
    {"raft", OPT_RAFT, SET_VALUE, NULL, "127.0.0.1:7200", NULL},
    {"raft-bind", OPT_RAFT_BIND, SET_VALUE, NULL, NULL, "the raft address"},
    {"rpc", OPT_RPC, SET_VALUE, NULL, "127.0.0.1:7100", NULL},
    {"http", OPT_HTTP, SET_VALUE, NULL, "127.0.0.1:8080", NULL},
    {"peer-token", OPT_PEER_TOKEN, SET_SECRET, "QRAFT_PEER_TOKEN", NULL,
     "the API token"},
    {"token", OPT_TOKEN, SET_SECRET, "QRAFT_TOKEN", NULL, NULL},
    {"token-file", OPT_TOKEN_FILE, SET_VALUE, "QRAFT_TOKEN_FILE", NULL, NULL},
    {"tls-cert", OPT_TLS_CERT, SET_VALUE, "QRAFT_TLS_CERT", NULL, "plaintext"},
    {"tls-key", OPT_TLS_KEY, SET_VALUE, "QRAFT_TLS_KEY", NULL, NULL},
    {"tls-ca", OPT_TLS_CA, SET_VALUE, "QRAFT_TLS_CA", NULL, NULL},
    {"print-scopes", OPT_PRINT_SCOPES, SET_ACTION, NULL, NULL, NULL},
    {"allow-destinations", OPT_ALLOW_DESTINATIONS, SET_LIST, NULL, NULL,
     "loopback under --dev or when every listener is on loopback, else "
     "public addresses only"},
    {"max-body-bytes", OPT_MAX_BODY, SET_VALUE, NULL, "1048576", NULL},
    {"dedup-window", OPT_DEDUP_WINDOW, SET_VALUE, NULL, "10m", NULL},
    {"max-run-history-bytes", OPT_MAX_RUN_HISTORY, SET_VALUE, NULL, "67108864",
     NULL},
    {"max-queues", OPT_MAX_QUEUES, SET_VALUE, NULL, "100", NULL},
    {"max-queue-parallelism", OPT_MAX_QUEUE_PARALLELISM, SET_VALUE, NULL, "100",
     NULL},
    {"snapshot-threshold", OPT_SNAPSHOT_THRESHOLD, SET_VALUE, NULL, "8192",
     NULL},
    {"snapshot-log-share", OPT_SNAPSHOT_LOG_SHARE, SET_VALUE, NULL, "50", NULL},
    {"dlq-retention", OPT_DLQ_RETENTION, SET_VALUE, NULL, "7d", NULL},
    {"events-retention", OPT_EVENTS_RETENTION, SET_VALUE, NULL, "7d", NULL},
    {"done-retention", OPT_DONE_RETENTION, SET_VALUE, NULL, "1d", NULL},
    {"pressure-retention", OPT_PRESSURE_RETENTION, SET_VALUE, NULL, "5m", NULL},
    {"min-free-bytes", OPT_MIN_FREE, SET_VALUE, NULL, NULL,
     "5% of the disk, 16 MiB..256 MiB"},
    {"store-max-bytes", OPT_STORE_MAX, SET_VALUE, NULL, NULL,
     "no limit but the disk's"},
    {"election-timeout-ms", OPT_ELECTION, SET_VALUE, NULL, "400", NULL},
    {"heartbeat-timeout-ms", OPT_HEARTBEAT, SET_VALUE, NULL, "40", NULL},
    {"connect-retry-ms", OPT_CONNECT_RETRY, SET_VALUE, NULL, "100", NULL},
    {"max-connections", OPT_MAX_CONNECTIONS, SET_VALUE, NULL, "4096", NULL},
    {"http-request-timeout-ms", OPT_HTTP_REQUEST_TIMEOUT, SET_VALUE, NULL,
     "10000", NULL},
    {"tls-handshake-timeout-ms", OPT_TLS_HANDSHAKE_TIMEOUT, SET_VALUE, NULL,
     "10000", NULL},
    {"drain-timeout-ms", OPT_DRAIN_TIMEOUT, SET_VALUE, NULL, "5000", NULL},
    {"max-feature-level", OPT_MAX_FEATURE_LEVEL, SET_VALUE, NULL, NULL,
     "this binary's feature level"},
    {"log-level", OPT_LOG_LEVEL, SET_VALUE, NULL, "info", NULL},
    {"log-format", OPT_LOG_FORMAT, SET_VALUE, NULL, "text", NULL},
    {"otlp-endpoint", OPT_OTLP_ENDPOINT, SET_VALUE, NULL, NULL, "tracing off"},
    {"otlp-service-name", OPT_OTLP_SERVICE_NAME, SET_VALUE, NULL, "qraft",
     NULL},
    {"config", OPT_CONFIG, SET_ACTION, NULL, NULL, NULL},
    {"print-config", OPT_PRINT_CONFIG, SET_ACTION, NULL, NULL, NULL},
    {"version", OPT_VERSION, SET_ACTION, NULL, NULL, NULL},
    {"help", OPT_HELP, SET_ACTION, NULL, NULL, NULL},
};

#define N_SETTINGS (sizeof settings / sizeof settings[0])

/* Actions that take a value. */
static bool action_takes_value(int opt)
{
    return opt == OPT_CONFIG;
}

static const struct setting *find_setting(const char *name)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        if (strcmp(settings[i].name, name) == 0) {
            return &settings[i];
        }
    }
    return NULL;
}

/* getopt_long's table, made from settings[]: out holds N_SETTINGS + 1. */
static void build_long_options(struct option *out)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const struct setting *s = &settings[i];
        bool no_value = s->kind == SET_BOOL ||
                        (s->kind == SET_ACTION && !action_takes_value(s->opt));
        out[i] = (struct option){
            s->name, no_value ? no_argument : required_argument, NULL, s->opt};
    }
    out[N_SETTINGS] = (struct option){NULL, 0, NULL, 0};
}

static int copy_addr(char *dst, const char *flag, const char *v, char *errmsg)
{
    if (qr_config_check_hostport(v) != 0) {
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
    if (qr_config_parse_u64(v, min, max, &n) != 0) {
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
        case OPT_DEV: /* v: NULL (a flag), "true" or "false" (a file) */
            c->dev = v == NULL || strcmp(v, "true") == 0;
            return 0;
        case OPT_JOIN:
            c->join = v == NULL || strcmp(v, "true") == 0;
            return 0;
        case OPT_ID:
            if (qr_config_parse_u64(v, 1, QR_MAX_NODE_ID, &c->id) != 0) {
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
                           : qr_config_resolve_ipv4(c->raft_addr,
                                                    sizeof c->raft_addr, errmsg,
                                                    "--raft");
        }
        case OPT_RAFT_BIND: {
            int rv = qr_config_check_ipv4_port(v, errmsg, "--raft-bind");
            return rv != 0
                       ? rv
                       : copy_addr(c->raft_bind_addr, "--raft-bind", v, errmsg);
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
            if (qr_config_parse_u64(v, 16, 1u << 30, &n) != 0) {
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
            if (qr_config_parse_bytes(v, 1 * MIB, 1ull << 50, &n) != 0) {
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
        case OPT_DRAIN_TIMEOUT:
            return parse_range("--drain-timeout-ms", v, 0, 600000, "",
                               &c->drain_timeout_ms, errmsg);
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
        case OPT_LOG_FORMAT:
            if (qr_log_parse_format(v, &c->log_format) != 0) {
                snprintf(errmsg, QR_ERRMSG_BYTES,
                         "--log-format: '%s' is not text or json", v);
                return QR_EBADREQ;
            }
            return 0;
        case OPT_OTLP_ENDPOINT:
            /* Empty turns tracing off; else a URL the delivery engine
             * takes (it says more if it cannot, at start). */
            if (v[0] != '\0' && ((strncmp(v, "http://", 7) != 0 &&
                                  strncmp(v, "https://", 8) != 0) ||
                                 strlen(v) >= sizeof c->otlp_endpoint)) {
                snprintf(errmsg, QR_ERRMSG_BYTES,
                         "--otlp-endpoint: '%.64s' is not an http:// or "
                         "https:// URL under %d bytes",
                         v, QR_OTLP_URL_BYTES);
                return QR_EBADREQ;
            }
            snprintf(c->otlp_endpoint, sizeof c->otlp_endpoint, "%s", v);
            return 0;
        case OPT_OTLP_SERVICE_NAME:
            if (v[0] == '\0' || strlen(v) >= sizeof c->otlp_service_name) {
                snprintf(errmsg, QR_ERRMSG_BYTES,
                         "--otlp-service-name: must be 1 to %d bytes",
                         QR_OTLP_NAME_BYTES - 1);
                return QR_EBADREQ;
            }
            snprintf(c->otlp_service_name, sizeof c->otlp_service_name, "%s",
                     v);
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

/* One parse: the config being filled, and the text each setting was last
 * given (from the file, the environment or a flag), for --print-config. */
struct parse_state {
    struct qr_config *c;
    FILE *out;
    enum qr_config_action *action;
    bool print_config;
    char *given[N_SETTINGS]; /* owned; NULL: not given */
};

static void parse_state_close(struct parse_state *st)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        free(st->given[i]);
        st->given[i] = NULL;
    }
}

/* Applies value v (NULL: a flag without one) to setting s and keeps its
 * text. */
static int apply_setting(struct parse_state *st,
                         const struct setting *s,
                         const char *v,
                         char *errmsg)
{
    int rv = apply_option(st->c, s->opt, v, st->out, st->action, errmsg);
    if (rv != 0 || s->kind == SET_ACTION) {
        return rv;
    }
    size_t i = (size_t)(s - settings);
    char *text = strdup(v != NULL ? v : "true");
    if (text == NULL) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "out of memory");
        return -ENOMEM;
    }
    free(st->given[i]);
    st->given[i] = text;
    return 0;
}

/* A config file's key: the flag of that name, given the key's value. */
static int on_file_entry(void *arg,
                         const struct qr_config_file_entry *e,
                         char *reason)
{
    struct parse_state *st = arg;
    const struct setting *s = find_setting(e->key);
    const char *v = e->value;
    if (s == NULL) {
        snprintf(reason, QR_ERRMSG_BYTES,
                 "not a setting (keys are qraftd's flags without the "
                 "leading --: see qraftd --help)");
        return QR_EBADREQ;
    }
    if (s->kind == SET_ACTION) {
        snprintf(reason, QR_ERRMSG_BYTES,
                 "--%s is a command-line flag, not a setting", s->name);
        return QR_EBADREQ;
    }
    if (e->sequence && s->kind != SET_LIST) {
        snprintf(reason, QR_ERRMSG_BYTES, "takes one value, not a list");
        return QR_EBADREQ;
    }
    if (!e->sequence && e->plain &&
        (v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0)) {
        snprintf(reason, QR_ERRMSG_BYTES,
                 "has no value (remove the line to keep the default)");
        return QR_EBADREQ;
    }
    if (s->kind == SET_BOOL && strcmp(v, "true") != 0 &&
        strcmp(v, "false") != 0) {
        snprintf(reason, QR_ERRMSG_BYTES, "'%.64s' is not true or false", v);
        return QR_EBADREQ;
    }
    if (s->kind == SET_SECRET && strcmp(v, "***") == 0) {
        return 0; /* --print-config's mask: the secret is set elsewhere */
    }
    char why[QR_ERRMSG_BYTES];
    int rv = apply_setting(st, s, v, why);
    if (rv != 0) {
        /* "--max-queues: 'x' is not ..." reads "'x' is not ..." here. */
        const char *text = why;
        size_t name_len = strlen(s->name);
        if (strncmp(text, "--", 2) == 0 &&
            strncmp(text + 2, s->name, name_len) == 0 &&
            strncmp(text + 2 + name_len, ": ", 2) == 0) {
            text += 4 + name_len;
        }
        snprintf(reason, QR_ERRMSG_BYTES, "%s", text);
    }
    return rv;
}

/* The settings of the environment's QRAFT_* variables. */
static int apply_environment(struct parse_state *st, char *errmsg)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const char *v = settings[i].env ? getenv(settings[i].env) : NULL;
        if (v != NULL && *v != '\0') {
            int rv = apply_setting(st, &settings[i], v, errmsg);
            if (rv != 0) {
                return rv;
            }
        }
    }
    return 0;
}

static const struct setting *setting_of_opt(int opt)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        if (settings[i].opt == opt) {
            return &settings[i];
        }
    }
    return NULL;
}

/* The flags' error for what getopt_long did not take. */
static int bad_flag(int argc, char **argv, char *errmsg)
{
    if (optopt != 0 && optopt < 256) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "unknown option '-%c' (see --help)",
                 optopt);
    } else {
        snprintf(errmsg, QR_ERRMSG_BYTES,
                 "unknown option or missing value: '%s' (see --help)",
                 optind - 1 < argc ? argv[optind - 1] : "");
    }
    return QR_EBADREQ;
}

/* A first look at the flags for --config FILE (*path, NULL: none): the
 * file is read before the environment and the other flags. --help and
 * --version need no file. Bad flags are left for the second pass. */
static int find_config_file(int argc,
                            char **argv,
                            const struct option *long_options,
                            const char **path,
                            char *errmsg)
{
    *path = NULL;
    optind = 0; /* 0, not 1: also resets glibc's place inside "-xy" */
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        if (opt == OPT_HELP || opt == OPT_VERSION) {
            *path = NULL;
            return 0;
        }
        if (opt == OPT_CONFIG) {
            if (*path != NULL) {
                snprintf(errmsg, QR_ERRMSG_BYTES, "--config: given twice");
                return QR_EBADREQ;
            }
            if (optarg[0] == '\0') {
                snprintf(errmsg, QR_ERRMSG_BYTES, "--config: an empty path");
                return QR_EBADREQ;
            }
            *path = optarg;
        }
    }
    return 0;
}

/* The settings that go together, once every source is in. */
static int check_combination(struct qr_config *c, char *errmsg)
{
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
    c->http_on_loopback = qr_config_on_loopback(c->http_addr);
    if (!c->destinations_set) {
        c->destinations.allow_loopback =
            c->dev ||
            (qr_config_on_loopback(c->raft_addr) &&
             qr_config_on_loopback(c->rpc_addr) && c->http_on_loopback);
    }
    return 0;
}

/* A value as YAML: digits and true/false plain, anything else quoted. */
static void print_yaml_value(FILE *out, const char *v)
{
    size_t digits = strspn(v, "0123456789");
    if ((digits > 0 && v[digits] == '\0') || strcmp(v, "true") == 0 ||
        strcmp(v, "false") == 0) {
        fputs(v, out);
        return;
    }
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)v; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\') {
            fprintf(out, "\\%c", *p);
        } else if (*p < 0x20 || *p == 0x7f) {
            fprintf(out, "\\x%02x", *p);
        } else {
            fputc(*p, out);
        }
    }
    fputc('"', out);
}

/* --print-config: every setting as a config file would hold it, secrets
 * masked; --config reads it back to the same settings. */
static void print_config(const struct parse_state *st, const char *problem)
{
    FILE *out = st->out;
    fputs(
        "# qraftd --print-config: the defaults, then the config file, the\n"
        "# environment and the flags (docs/operations.md, \"Configuration\n"
        "# file\"). Secrets show as \"***\": that value in a file sets\n"
        "# nothing, so give them in the environment or a token file.\n",
        out);
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const struct setting *s = &settings[i];
        const char *v = st->given[i] != NULL ? st->given[i] : s->default_value;
        if (s->kind == SET_ACTION) {
            continue;
        }
        if (v == NULL) {
            fprintf(out, "# %s: (not set%s%s)\n", s->name,
                    s->unset != NULL ? ": " : "",
                    s->unset != NULL ? s->unset : "");
        } else if (s->kind == SET_SECRET) {
            fprintf(out, "%s: \"***\"\n", s->name);
        } else if (s->kind == SET_LIST) {
            /* An empty list stays a list: "name:" alone has no value. */
            bool empty = strspn(v, ",") == strlen(v);
            fprintf(out, "%s:%s\n", s->name, empty ? " []" : "");
            char *copy = strdup(v);
            char *save = NULL;
            for (char *item = copy != NULL ? strtok_r(copy, ",", &save) : NULL;
                 item != NULL; item = strtok_r(NULL, ",", &save)) {
                fputs("  - ", out);
                print_yaml_value(out, item);
                fputc('\n', out);
            }
            free(copy);
        } else {
            fprintf(out, "%s: ", s->name);
            print_yaml_value(out, v);
            fputc('\n', out);
        }
    }
    if (problem != NULL) {
        fprintf(out, "# qraftd would not start with these alone: %s\n",
                problem);
    }
}

/* The file, the environment, then the flags; then the checks. */
static int parse_sources(struct parse_state *st,
                         int argc,
                         char **argv,
                         char *errmsg)
{
    struct option long_options[N_SETTINGS + 1];
    build_long_options(long_options);
    const char *path;
    int rv = find_config_file(argc, argv, long_options, &path, errmsg);
    if (rv == 0 && path != NULL) {
        rv = qr_config_file_read(path, on_file_entry, st, errmsg);
    }
    if (rv == 0) {
        rv = apply_environment(st, errmsg);
    }
    if (rv != 0) {
        return rv;
    }

    optind = 0;
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        const struct setting *s = setting_of_opt(opt);
        if (s == NULL) {
            return bad_flag(argc, argv, errmsg);
        }
        if (opt == OPT_CONFIG) {
            continue; /* read first */
        }
        if (opt == OPT_PRINT_CONFIG) {
            st->print_config = true;
            continue;
        }
        rv = apply_setting(st, s, optarg, errmsg);
        if (rv != 0 || *st->action != QR_CONFIG_RUN) {
            return rv;
        }
    }
    if (optind < argc) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "unexpected argument '%s'",
                 argv[optind]);
        return QR_EBADREQ;
    }
    return 0;
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
    struct parse_state st = {.c = c, .out = out, .action = action};
    int rv = parse_sources(&st, argc, argv, errmsg);
    if (rv == 0 && *action == QR_CONFIG_RUN) {
        rv = check_combination(c, errmsg);
        if (st.print_config) {
            /* Shown even when it would not start alone: the secrets may
             * come from an environment this shell does not have. */
            print_config(&st, rv != 0 ? errmsg : NULL);
            *action = QR_CONFIG_EXIT_OK;
            rv = 0;
            errmsg[0] = '\0';
        }
    }
    parse_state_close(&st);
    return rv;
}
