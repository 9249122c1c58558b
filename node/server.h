/* The node: owns the libuv loop and every module on it, started in one order
 * and stopped in the reverse one (one unwind ladder). Everything that touches
 * raft or LMDB writes runs on this loop's thread. */
#ifndef QR_SERVER_H
#define QR_SERVER_H

#include <stdbool.h>
#include <stdio.h>
#include <uv.h>

#include "api/http_api.h"
#include "api/rpc.h"
#include "config.h"
#include "deliver/worker.h"
#include "lib/loopwatch.h"
#include "lib/tokens.h"
#include "ops/ops.h"
#include "repl/cluster.h"
#include "sched/scheduler.h"
#include "store/admit.h"
#include "store/store.h"

struct qr_server {
    const struct qr_config *config; /* borrowed */
    uv_loop_t loop;
    struct qr_store *store;
    struct qr_admit admit; /* space: refuses writes when the disk is low */
    struct qr_cluster cluster;
    struct qr_shards shards;
    struct qr_worker worker;
    struct qr_ops ops; /* what the rpc and http faces run requests on */
    struct qr_rpc rpc;
    struct qr_http http;
    /* --otlp-endpoint's exporter (deliver/trace.h); NULL: tracing off */
    struct qr_trace *trace;
    struct qr_metrics metrics;     /* this process's counters (/metrics) */
    struct qr_scheduler scheduler; /* fires schedules on the leader */
    struct qr_loopwatch loopwatch; /* counts the loop's stalls (metrics) */
    uv_signal_t sigterm;
    uv_signal_t sigint;
    uv_signal_t sighup; /* re-reads --token-file */
    uv_timer_t tick;    /* announces readiness, keeps signing keys present */
    uv_timer_t stop_deadline; /* bounds the hand-off and release on stop */
    bool modules_closing;
    int lock_fd;              /* flock on DATA/LOCK: one node per data dir */
    char token[QR_TOKEN_MAX]; /* --token, or --dev's; empty: none */
    /* --token (every scope) and --token-file's; the faces borrow it, a
     * SIGHUP replaces its contents */
    struct qr_tokens tokens;
    char errmsg[QR_ERRMSG_BYTES];
    FILE *announce_out; /* where --dev prints the QSTASH_* lines */
    bool announced;
    bool keys_proposed;
    bool prune_pending;
    char prune_cursor[64]; /* where the walk over finished messages is */
    uint64_t next_prune_mono_ms;
    /* On the leader: retention gives way to space pressure now (server_tick.c,
     * propose_prune; qraft_retention_pressure). */
    bool retention_pressure;
    /* The node certificate's notAfter, Unix time (0: no TLS, or unread);
     * qraft_tls_cert_expiry_seconds. Read at start and on SIGHUP. */
    int64_t tls_not_after;
    bool stopping;
    int exit_code;
};

/* Opens the data dir, the store, raft, the RPC and HTTP servers. On failure
 * s->errmsg says why and everything opened so far is closed again.
 * announce_out (borrowed) receives the --dev lines. */
int qr_server_init(struct qr_server *s,
                   const struct qr_config *cfg,
                   FILE *announce_out);

/* Runs the loop until a signal or qr_server_stop has closed every module.
 * Returns the process exit code. */
int qr_server_run(struct qr_server *s);

/* Starts a clean stop: HTTP, RPC, the worker, then raft; the loop ends when
 * all are closed. */
void qr_server_stop(struct qr_server *s, int exit_code);

/* Frees what outlives the loop (the store, the lock). After qr_server_run. */
void qr_server_close(struct qr_server *s);

#endif /* QR_SERVER_H */
