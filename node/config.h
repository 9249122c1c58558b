/* Node configuration: a YAML config file (--config), QRAFT_* environment
 * variables and command-line flags folded into one struct that is filled
 * once at start-up and never changed afterwards. Every flag is also a file
 * key of the same name (one table in config.c); flags win over the
 * environment, which wins over the file. Every limit a request is checked
 * against lives here. */
#ifndef QR_CONFIG_H
#define QR_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config_values.h"
#include "lib/dest.h"
#include "lib/logger.h"

#define QR_ADDR_MAX 64
#define QR_TOKEN_MAX 128
#define QR_MAX_PEERS 16
/* Node ids are 1..65535: message ids carry the node id in 16 bits. */
#define QR_MAX_NODE_ID 65535u
#define QR_OTLP_URL_BYTES 1024
#define QR_OTLP_NAME_BYTES 128

/* Request limits, checked before any work is done. */
struct qr_limits {
    uint64_t max_body_bytes;     /* --max-body-bytes, default 1 MiB */
    uint32_t max_url_bytes;      /* 4 KiB */
    uint32_t max_headers;        /* 64 */
    uint32_t max_header_bytes;   /* name + value of one header: 8 KiB */
    uint32_t max_retries;        /* 100 */
    uint64_t max_delay_ms;       /* 365 days */
    uint64_t max_timeout_ms;     /* 6 hours */
    uint32_t max_expr_bytes;     /* retry-delay expression: 256 */
    uint32_t max_name_bytes;     /* queue, dedup id, idempotency key: 256 */
    uint32_t default_retries;    /* 3 */
    uint64_t default_timeout_ms; /* 30 s */
    uint64_t dedup_window_ms;    /* --dedup-window, default 10 min, max 90 d */
    uint32_t max_queues;         /* --max-queues, default 100 */
    uint32_t max_queue_parallelism; /* --max-queue-parallelism, default 100 */
    uint32_t max_group_endpoints;   /* endpoints of one URL group: 100 */
    uint32_t max_labels;            /* Upstash-Label values of a message: 16 */
    /* A workflow run's history, every entry's body summed:
     * --max-run-history-bytes, default 64 MiB (the SDK's lazy fetch reads
     * it whole). */
    uint32_t max_run_history_bytes;
};

struct qr_config_peer {
    uint64_t id;
    char raft_addr[QR_ADDR_MAX];
};

struct qr_config {
    bool dev;
    bool join; /* --join: start empty and wait to be added */
    uint64_t id;
    char data_dir[PATH_MAX];
    char raft_addr[QR_ADDR_MAX];
    /* --raft-bind: where raft listens when that is not raft_addr (an IPv4
     * address, same port: a container behind a stable service address);
     * empty: raft_addr */
    char raft_bind_addr[QR_ADDR_MAX];
    char rpc_addr[QR_ADDR_MAX];
    char http_addr[QR_ADDR_MAX];
    char token[QR_TOKEN_MAX]; /* empty: generated and persisted (--dev) */
    /* --token-file: scoped API tokens (lib/tokens.h), re-read on SIGHUP;
     * empty: none */
    char token_file[PATH_MAX];
    /* TLS (lib/tls_ctx.h): the node's certificate (with its chain) and
     * key, PEM, for every listener that serves TLS; the CA bundle that
     * verifies the other side where it must present a certificate. Empty:
     * none (plaintext). */
    char tls_cert[PATH_MAX];
    char tls_key[PATH_MAX];
    char tls_ca[PATH_MAX];
    /* Authenticates node-to-node requests (heartbeats, results); empty:
     * the API token does. */
    char peer_token[QR_TOKEN_MAX];
    struct qr_config_peer peers[QR_MAX_PEERS];
    size_t n_peers;

    struct qr_limits limits;

    /* Where deliveries may go (lib/dest.h, the SSRF guard): public
     * addresses, and the networks --allow-destinations lists. Without that
     * flag, loopback too under --dev or when every listener (--raft, --rpc,
     * --http) is on a loopback address: one machine runs it all. */
    struct qr_dest_policy destinations;
    bool destinations_set; /* --allow-destinations was given */
    /* --http is a loopback address (or a name all of whose addresses
     * are): a plaintext HTTP listener there draws no warning. */
    bool http_on_loopback;

    /* Raft. */
    unsigned election_timeout_ms;  /* 1000 */
    unsigned heartbeat_timeout_ms; /* 100 */
    unsigned connect_retry_ms;     /* 100 */
    unsigned max_feature_level;    /* advertised; QR_FEATURE_LEVEL */
    unsigned snapshot_threshold;   /* entries between snapshots: 8192 */
    unsigned snapshot_trailing;    /* entries kept after one: 8192 */
    uint32_t snapshot_log_share;   /* percent of the store (fsm.h): 50 */

    /* Group commit: caps on what is proposed but not yet applied. */
    size_t max_entry_bytes;      /* one raft entry: 4 MiB */
    size_t max_inflight_entries; /* 64 */
    size_t max_inflight_bytes;   /* 64 MiB */
    size_t max_queued_bytes;     /* waiting to be proposed: 64 MiB */

    /* RPC. */
    uint64_t max_frame_bytes; /* the body ceiling + 1 MiB */
    uint32_t max_connections; /* 4096, each for RPC and HTTP */
    /* An HTTP request's headers and body must arrive within this (h2o's
     * req_timeout; slow clients are closed). */
    uint32_t http_request_timeout_ms; /* 10000 */
    /* A TLS handshake on the RPC port must finish within this (a
     * half-open connection is closed then). */
    uint32_t tls_handshake_timeout_ms; /* 10000 */
    /* SIGTERM: deliveries running may finish and commit their results
     * this long before the node gives its shards up (0: cancel them at
     * once). */
    uint32_t drain_timeout_ms; /* 5000 */

    /* Housekeeping, proposed by the leader every few seconds. */
    uint64_t dlq_retention_ms;    /* --dlq-retention, default 7 d; 0 = keep */
    uint64_t events_retention_ms; /* --events-retention, default 7 d */
    uint64_t done_retention_ms;   /* --done-retention: delivered and
                                     cancelled messages, default 1 d */
    /* --pressure-retention: under space pressure the leader keeps
     * delivered and cancelled messages and events at most this long
     * (docs/architecture.md, "Space"), default 5 min */
    uint64_t pressure_retention_ms;

    /* Space (node/admit.h). */
    uint64_t store_map_bytes; /* the LMDB map; 0: sized from the disk */
    uint64_t store_max_bytes; /* --store-max-bytes: live store bytes at
                                 which writes are refused; 0: no limit but
                                 the disk's */
    uint64_t min_free_bytes;  /* --min-free-bytes: the disk reserve; 0: 5%
                                 of the disk, in 16 MiB..256 MiB */
    enum qr_log_level log_level;
    enum qr_log_format log_format; /* --log-format: text (default), json */

    /* Traces (deliver/trace.h): the OTLP/HTTP JSON collector's URL
     * (--otlp-endpoint; empty: tracing off, the default) and the
     * service.name the spans carry (--otlp-service-name, "qraft"). */
    char otlp_endpoint[QR_OTLP_URL_BYTES];
    char otlp_service_name[QR_OTLP_NAME_BYTES];
};

/* Outcome of parsing: run the node, or exit at once (help or version
 * printed) with the given status. */
enum qr_config_action {
    QR_CONFIG_RUN = 0,
    QR_CONFIG_EXIT_OK = 1,
    /* --print-scopes: print the scope table (api/scopes.h) and exit */
    QR_CONFIG_PRINT_SCOPES = 2,
};

void qr_config_defaults(struct qr_config *c);

/* Fills c from the file of --config, then the environment, then argv (the
 * later wins). On error returns QR_EBADREQ (or -errno when the file
 * cannot be read) with errmsg (QR_ERRMSG_BYTES) saying which flag, or
 * which file, line and key, and why. --help, --version and --print-config
 * (the settings as a config file, secrets masked) print to `out` and set
 * *action to EXIT_OK; --print-scopes sets it to PRINT_SCOPES (the caller
 * prints). */
int qr_config_parse(struct qr_config *c,
                    int argc,
                    char **argv,
                    FILE *out,
                    enum qr_config_action *action,
                    char *errmsg);

void qr_config_usage(FILE *out);

#endif /* QR_CONFIG_H */
