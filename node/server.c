#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/dest.h"
#include "lib/durable.h"
#include "lib/err.h"
#include "lib/logger.h"
#include "lib/random.h"
#include "lib/tls_ctx.h"
#include "server_int.h"
#include "store/store_metrics.h"

#define TOKEN_FILE "token"
/* Written when the node learns it was removed from the cluster; while it
 * exists the node refuses to start on that data dir (docs/operations.md,
 * "Removing a node"). */
#define TOMBSTONE_FILE "REMOVED"

/* Creates the directory path unless it exists; a new one's entry is made
 * durable (its parent fsynced), or a power loss soon after a first start
 * could lose raft/ with the log in it. */
static int make_dir(const char *path, char *errmsg)
{
    if (mkdir(path, 0700) != 0) {
        int err = errno;
        if (err == EEXIST) {
            return 0;
        }
        snprintf(errmsg, QR_ERRMSG_BYTES, "mkdir %s: %s", path, strerror(err));
        return -err;
    }
    int rv = qr_fsync_parent(path);
    if (rv != 0) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "mkdir %s: fsync of its parent: %s",
                 path, strerror(-rv));
    }
    return rv;
}

/* One node per data dir: two would corrupt each other's raft log. */
static int lock_data_dir(struct qr_server *s)
{
    char path[PATH_MAX + 8];
    snprintf(path, sizeof path, "%s/LOCK", s->config->data_dir);
    s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (s->lock_fd < 0) {
        int err = errno;
        snprintf(s->errmsg, sizeof s->errmsg, "open %s: %s", path,
                 strerror(err));
        return -err;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        snprintf(s->errmsg, sizeof s->errmsg,
                 "data dir %s is in use by another qraftd (%s)",
                 s->config->data_dir, strerror(err));
        close(s->lock_fd);
        s->lock_fd = -1;
        return -err;
    }
    return 0;
}

/* A data dir whose node was removed from the cluster is not started again:
 * its raft log says it is a member, so it would campaign and serve reads
 * of a state that no longer moves. */
static int check_tombstone(struct qr_server *s)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/%s", s->config->data_dir, TOMBSTONE_FILE);
    if (access(path, F_OK) != 0) {
        return 0;
    }
    QR_ERROR("server",
             "%s exists: this node was removed from the cluster, and a "
             "removed node must not run on its old data dir. To bring it "
             "back, start it with an empty --data dir and --join, then run "
             "`qraft cluster add ID RAFT_ADDR --rpc RPC_ADDR` on the "
             "cluster; or delete this data dir",
             path);
    snprintf(s->errmsg, sizeof s->errmsg,
             "%s exists: this node was removed from the cluster; start it "
             "with an empty --data dir and --join to add it back",
             path);
    return QR_EBADREQ;
}

/* Leaves the tombstone (see check_tombstone): one line saying when and
 * which node, fsynced with its directory entry. */
static void write_tombstone(struct qr_server *s)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/%s", s->config->data_dir, TOMBSTONE_FILE);
    char line[160];
    int len = snprintf(line, sizeof line,
                       "node %" PRIu64
                       " removed from the cluster at unix "
                       "time %" PRIu64 " ms\n",
                       s->config->id, qr_clock_wall_ms());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    bool ok = fd >= 0 && write(fd, line, (size_t)len) == len && fsync(fd) == 0;
    int err = ok ? 0 : errno;
    if (fd >= 0) {
        close(fd);
    }
    if (ok) {
        err = -qr_fsync_dir(s->config->data_dir);
        ok = err == 0;
    }
    if (!ok) {
        QR_ERROR("server",
                 "could not write the tombstone %s (%s): do not start this "
                 "node on its data dir again; stopping",
                 path, strerror(err));
        return;
    }
    QR_WARN("server",
            "removed from the cluster: wrote %s, so this data dir will not "
            "start again; stopping",
            path);
}

/* --dev without --token: the token generated at first start is kept in the
 * data dir, so an app's env file keeps working across restarts. */
static int load_or_create_token(struct qr_server *s)
{
    if (s->config->token[0] != '\0') {
        snprintf(s->token, sizeof s->token, "%s", s->config->token);
        return 0;
    }
    char path[PATH_MAX + 8];
    snprintf(path, sizeof path, "%s/%s", s->config->data_dir, TOKEN_FILE);
    FILE *f = fopen(path, "r");
    if (f != NULL) {
        bool ok = fgets(s->token, sizeof s->token, f) != NULL;
        fclose(f);
        s->token[strcspn(s->token, "\r\n")] = '\0';
        if (ok && s->token[0] != '\0') {
            return 0;
        }
        snprintf(s->errmsg, sizeof s->errmsg, "%s is empty or unreadable",
                 path);
        return QR_ECORRUPT;
    }
    uint8_t raw[24];
    int rv = qr_random_bytes(raw, sizeof raw);
    if (rv != 0) {
        snprintf(s->errmsg, sizeof s->errmsg, "no randomness for a token");
        return rv;
    }
    char *p = s->token;
    p += sprintf(p, "qr_");
    for (size_t i = 0; i < sizeof raw; i++) {
        p += sprintf(p, "%02x", raw[i]);
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        int err = errno;
        snprintf(s->errmsg, sizeof s->errmsg, "create %s: %s", path,
                 strerror(err));
        return -err;
    }
    size_t len = strlen(s->token);
    bool ok = write(fd, s->token, len) == (ssize_t)len &&
              write(fd, "\n", 1) == 1 && fsync(fd) == 0;
    close(fd);
    if (!ok || qr_fsync_dir(s->config->data_dir) != 0) {
        snprintf(s->errmsg, sizeof s->errmsg, "write %s failed", path);
        return QR_ESTORE;
    }
    return 0;
}

/* The name the --token (QRAFT_TOKEN, --dev's) token goes by in the table:
 * not a name a token file may use. */
#define MAIN_TOKEN_NAME "(--token)"

/* Fills out (empty) with the API tokens: --token-file's, and s->token with
 * every scope. On failure errmsg (size bytes) says why, out stays empty,
 * and the secrets are not in it. */
static int build_tokens(const struct qr_server *s,
                        const char *peer_token,
                        struct qr_tokens *out,
                        char *errmsg,
                        size_t size)
{
    const struct qr_config *cfg = s->config;
    int rv;

    qr_tokens_init(out);
    if (cfg->token_file[0] != '\0') {
        rv = qr_tokens_load(out, cfg->token_file, errmsg, size);
        if (rv != 0) {
            return rv;
        }
        /* A file token that is the peer token would act as a node. */
        if (strcmp(peer_token, s->token) != 0 &&
            qr_tokens_find(out, peer_token, strlen(peer_token)) != NULL) {
            snprintf(errmsg, size,
                     "%s: token '%s' has the peer token's secret "
                     "(--peer-token): give it its own",
                     cfg->token_file,
                     qr_tokens_find(out, peer_token, strlen(peer_token))->name);
            qr_tokens_free(out);
            return QR_EBADREQ;
        }
    }
    if (s->token[0] != '\0') {
        rv = qr_tokens_add(out, MAIN_TOKEN_NAME, s->token, QR_SCOPE_ALL);
        if (rv != 0) {
            snprintf(errmsg, size, "%s: %s", cfg->token_file,
                     rv == -ENOMEM ? "out of memory"
                                   : "a token has the same secret as --token "
                                     "(QRAFT_TOKEN)");
            qr_tokens_free(out);
            return rv;
        }
    }
    return 0;
}

/* The peer token: --peer-token, else the API token. */
static const char *peer_token_of(const struct qr_server *s)
{
    return s->config->peer_token[0] != '\0' ? s->config->peer_token : s->token;
}

/* The certificate files of the node's TLS listeners. */
static struct qr_tls_files tls_files_of(const struct qr_config *cfg)
{
    struct qr_tls_files f = {
        .cert = cfg->tls_cert,
        .key = cfg->tls_key,
        .ca = cfg->tls_ca,
    };
    return f;
}

/* A certificate expiring within this is warned about (at start and on
 * SIGHUP). */
#define TLS_EXPIRY_WARN_S (30 * 24 * 3600)

/* Logs WARN when the PEM file's (first) certificate expires within 30
 * days, ERROR once it has; returns its notAfter (0: unread, said why). */
static int64_t check_expiry(const char *what, const char *path)
{
    int64_t not_after = 0;
    char why[QR_ERRMSG_BYTES];
    if (qr_tls_file_not_after(path, &not_after, why, sizeof why) != 0) {
        QR_WARN("server", "TLS: cannot read the expiry of the %s: %s", what,
                why);
        return 0;
    }
    int64_t left = not_after - (int64_t)time(NULL);
    if (left <= 0) {
        QR_ERROR("server",
                 "TLS: the %s %s has EXPIRED (%" PRId64
                 " s ago): other nodes and clients refuse it; renew it and "
                 "send SIGHUP (docs/operations.md, \"Rotating certificates\")",
                 what, path, -left);
    } else if (left < TLS_EXPIRY_WARN_S) {
        QR_WARN("server",
                "TLS: the %s %s expires in %" PRId64
                " days: renew it and send SIGHUP (docs/operations.md, "
                "\"Rotating certificates\")",
                what, path, left / 86400);
    }
    return not_after;
}

/* The node certificate's and the CA's expiry, checked (check_expiry). */
static void check_tls_expiry(struct qr_server *s)
{
    s->tls_not_after = check_expiry("certificate", s->config->tls_cert);
    if (s->config->tls_ca[0] != '\0') {
        check_expiry("CA certificate", s->config->tls_ca);
    }
}

/* SIGHUP, part one: re-reads --token-file. A file that does not load
 * leaves the tokens as they were. */
static void reload_tokens(struct qr_server *s)
{
    struct qr_tokens fresh;
    char why[QR_ERRMSG_BYTES];

    if (build_tokens(s, peer_token_of(s), &fresh, why, sizeof why) != 0) {
        QR_ERROR("server",
                 "SIGHUP: token file not reloaded, the %zu tokens loaded "
                 "before stay in use: %s",
                 s->tokens.n, why);
        return;
    }
    qr_tokens_free(&s->tokens);
    s->tokens = fresh;
    QR_INFO("server", "SIGHUP: %zu API tokens loaded from %s", s->tokens.n,
            s->config->token_file);
}

/* SIGHUP, part two: re-reads --tls-cert, --tls-key and --tls-ca.
 * Connections the HTTP and RPC listeners accept, and the calls to other
 * nodes made, from now on use the new files; open ones keep theirs. Files
 * that do not load leave the ones in use. */
static void reload_tls(struct qr_server *s)
{
    struct qr_tls_files files = tls_files_of(s->config);
    SSL_CTX *tls = NULL;
    char why[QR_ERRMSG_BYTES];

    if (qr_tls_server_ctx(&files, QR_TLS_CLIENT_CERT_NONE, &tls, why,
                          sizeof why) != 0) {
        QR_ERROR("server",
                 "SIGHUP: TLS certificate not reloaded, the one loaded "
                 "before stays in use: %s",
                 why);
        return;
    }
    /* The peer side first: it reads the CA file too. */
    if (qr_shards_reload_tls(&s->shards, why) != 0 ||
        qr_rpc_reload_tls(&s->rpc, why, sizeof why) != 0 ||
        qr_cluster_reload_tls(&s->cluster, why, sizeof why) != 0) {
        SSL_CTX_free(tls);
        QR_ERROR("server",
                 "SIGHUP: TLS certificate not reloaded (the ones loaded "
                 "before stay in use): %s",
                 why);
        return;
    }
    int rv = qr_http_set_tls(&s->http, tls);
    SSL_CTX_free(tls);
    if (rv != 0) {
        QR_ERROR("server", "SIGHUP: HTTP listener's TLS not reloaded: %s",
                 qr_strerror(rv));
        return;
    }
    QR_INFO("server",
            "SIGHUP: TLS certificate reloaded from %s and %s (HTTP, RPC, "
            "calls to other nodes%s)",
            s->config->tls_cert, s->config->tls_key,
            qr_tls_mutual(&files) ? " and raft" : "");
    check_tls_expiry(s);
}

/* SIGHUP: re-reads --token-file and the TLS certificate and key. */
static void on_sighup(uv_signal_t *h, int signum)
{
    struct qr_server *s = h->data;
    bool tls = qr_tls_enabled(&(struct qr_tls_files){
        .cert = s->config->tls_cert, .key = s->config->tls_key});
    (void)signum;

    if (s->config->token_file[0] == '\0' && !tls) {
        QR_INFO("server",
                "SIGHUP: no --token-file and no --tls-cert, nothing to "
                "reload");
        return;
    }
    if (s->config->token_file[0] != '\0') {
        reload_tokens(s);
    }
    if (tls) {
        reload_tls(s);
    }
}

static bool http_serving(void *data)
{
    struct qr_server *s = data;
    char why[128];
    return !s->stopping && qr_cluster_ready(&s->cluster, why, sizeof why);
}

static bool http_ready(void *data, char *why, size_t why_len)
{
    struct qr_server *s = data;
    /* A replica that met a corrupt record says which while it stops
     * (on_tick). */
    const char *corrupt = qr_store_corrupt_first(s->store);
    if (corrupt != NULL) {
        snprintf(why, why_len, "%s", corrupt);
        return false;
    }
    if (s->stopping) {
        snprintf(why, why_len, "shutting down");
        return false;
    }
    if (!qr_cluster_ready(&s->cluster, why, why_len)) {
        return false;
    }
    /* Raft does not use the peer token: such a node replicates, yet
     * delivers nothing. */
    if (qr_shards_peer_refused(&s->shards, why, why_len)) {
        return false;
    }
    if (!s->announced) {
        snprintf(why, why_len, "waiting for signing keys");
        return false;
    }
    if (!qr_shards_level_settled(&s->shards)) {
        snprintf(why, why_len, "raising the feature level");
        return false;
    }
    /* A follower forwards writes to the leader's advertised RPC address;
     * until it has applied that, a write sent here would answer 503. */
    uint64_t leader_id = 0;
    qr_cluster_leader(&s->cluster, &leader_id, NULL);
    if (leader_id != s->config->id) {
        char rpc[QR_ADDR_MAX];
        qr_shards_node_addrs(&s->shards, leader_id, rpc, NULL);
        if (rpc[0] == '\0') {
            snprintf(why, why_len, "the leader's address is not known yet");
            return false;
        }
    }
    return true;
}

/* /metrics reads raft's and the store's figures when it is asked. */
static void http_gauges(void *data, struct qr_metrics_gauges *g)
{
    struct qr_server *s = data;
    struct qr_cluster_status cs;
    struct qr_store_txn *txn = NULL;

    qr_cluster_get_status(&s->cluster, &cs);
    g->term = cs.term;
    g->commit_index = cs.commit_index;
    g->applied_index = cs.applied_index;
    g->entries_proposed = cs.entries_proposed;
    g->commands_proposed = cs.commands_proposed;
    g->snapshots = cs.snapshots;
    g->snapshot_bytes = cs.snapshot_bytes;
    g->leader = strcmp(cs.state, "leader") == 0;
    g->shards_owned = qr_shards_count(&s->shards, s->config->id);
    g->store_corrupt_records = qr_store_corrupt_count(s->store);
    g->retention_pressure = s->retention_pressure;
    g->tls_cert_expiry_seconds =
        s->tls_not_after > 0 ? (uint64_t)s->tls_not_after : 0;
    g->raft_tls_refused = qr_cluster_tls_refused(&s->cluster);
    struct qr_admit_space sp;
    qr_admit_get_space(&s->admit, &sp);
    g->have_space = true;
    g->disk_size_bytes = sp.disk_size_bytes;
    g->disk_free_bytes = sp.disk_free_bytes;
    g->disk_reserve_bytes = sp.reserve_bytes;
    g->store_used_bytes = sp.store_used_bytes;
    g->store_limit_bytes = sp.store_limit_bytes;
    g->store_file_bytes = sp.store_file_bytes;
    g->store_map_bytes = sp.store_map_bytes;
    g->writes_refused = sp.n_refused;
    g->version = QRAFT_VERSION;
    g->commit = QRAFT_COMMIT;
    g->max_feature_level = QR_FEATURE_LEVEL;
    g->feature_level = qr_cluster_feature_level(&s->cluster);
    g->leader_changes = cs.leader_changes;
    g->snapshot_ms = cs.snapshot_ms;
    g->has_leader = cs.leader_id != 0;
    g->deliveries_in_flight = s->worker.n_inflight;
    if (qr_store_txn_begin(s->store, false, &txn) == 0) {
        qr_store_read_gauges(txn, QR_FSM_N_SHARDS, qr_clock_wall_ms(), g);
        qr_store_txn_abort(txn);
    }
}

static void on_removed(void *data)
{
    struct qr_server *s = data;
    write_tombstone(s);
    qr_server_stop(s, 0);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct qr_server *s = h->data;
    QR_INFO("server", "%s: stopping", strsignal(signum));
    qr_server_stop(s, 0);
}

/* Catches signum with cb; on failure h is closing. */
static int open_signal(struct qr_server *s,
                       uv_signal_t *h,
                       uv_signal_cb cb,
                       int signum)
{
    int rv = uv_signal_init(&s->loop, h);
    if (rv != 0) {
        return rv;
    }
    h->data = s;
    rv = uv_signal_start(h, cb, signum);
    if (rv != 0) {
        uv_close((uv_handle_t *)h, server_on_handle_closed);
    }
    return rv;
}

/* The server's own handles: the tick, the stop deadline, the signals. On
 * failure s->errmsg says which and why, and what was opened is closing (the
 * ladder runs the loop). */
static int open_handles(struct qr_server *s)
{
    const char *what = "tick timer";
    int rv = uv_timer_init(&s->loop, &s->tick);
    if (rv != 0) {
        goto err;
    }
    s->tick.data = s;
    what = "stop timer";
    rv = uv_timer_init(&s->loop, &s->stop_deadline);
    if (rv != 0) {
        goto err_after_tick;
    }
    s->stop_deadline.data = s;
    what = "SIGTERM handler";
    rv = open_signal(s, &s->sigterm, on_signal, SIGTERM);
    if (rv != 0) {
        goto err_after_stop_deadline;
    }
    what = "SIGINT handler";
    rv = open_signal(s, &s->sigint, on_signal, SIGINT);
    if (rv != 0) {
        goto err_after_sigterm;
    }
    what = "SIGHUP handler";
    rv = open_signal(s, &s->sighup, on_sighup, SIGHUP);
    if (rv != 0) {
        goto err_after_sigint;
    }
    what = "loop watch timer";
    rv = qr_loopwatch_start(&s->loopwatch, &s->loop, &s->metrics);
    if (rv != 0) {
        goto err_after_sighup;
    }
    uv_timer_start(&s->tick, server_on_tick, TICK_MS, TICK_MS);
    return 0;

err_after_sighup:
    uv_close((uv_handle_t *)&s->sighup, server_on_handle_closed);
err_after_sigint:
    uv_close((uv_handle_t *)&s->sigint, server_on_handle_closed);
err_after_sigterm:
    uv_close((uv_handle_t *)&s->sigterm, server_on_handle_closed);
err_after_stop_deadline:
    uv_close((uv_handle_t *)&s->stop_deadline, server_on_handle_closed);
err_after_tick:
    uv_close((uv_handle_t *)&s->tick, server_on_handle_closed);
err:
    snprintf(s->errmsg, sizeof s->errmsg, "%s: %s", what, uv_strerror(rv));
    return rv;
}

/* One line at start: where deliveries may go beyond public addresses (the
 * SSRF guard, lib/dest.h), and why loopback is open when the operator did
 * not say. */
static void log_destinations(const struct qr_config *cfg)
{
    char open[QR_DEST_POLICY_TEXT_BYTES];
    qr_dest_policy_format(&cfg->destinations, open, sizeof open);
    if (cfg->destinations_set && cfg->destinations.n_nets == 0) {
        QR_INFO("server",
                "deliveries go to public addresses only "
                "(--allow-destinations none): loopback, private, link-local, "
                "multicast and unspecified ones are refused");
    } else if (cfg->destinations_set) {
        QR_INFO("server",
                "deliveries go to public addresses and to %s "
                "(--allow-destinations)",
                open);
    } else if (cfg->destinations.allow_loopback) {
        QR_INFO(
            "server",
            "deliveries go to public and loopback addresses: %s; "
            "private, link-local, multicast and unspecified ones are "
            "refused (--allow-destinations opens them)",
            cfg->dev ? "--dev" : "every listener is on loopback (one machine)");
    } else {
        QR_INFO("server",
                "deliveries go to public addresses only; loopback, private, "
                "link-local, multicast and unspecified ones are refused "
                "(--allow-destinations opens them)");
    }
}

int qr_server_init(struct qr_server *s,
                   const struct qr_config *cfg,
                   FILE *announce_out)
{
    char path[PATH_MAX + 8];
    int rv;

    memset(s, 0, sizeof *s);
    s->config = cfg;
    s->announce_out = announce_out;
    s->lock_fd = -1;

    /* TLS (lib/tls_ctx.h): the HTTP listener (api/http_api.c) and the RPC
     * port serve it, and node-to-node calls to RPC ports speak it
     * (api/rpc.c, lib/peer.c); with --tls-ca too, raft and peer requests
     * go over mutual TLS (repl/transport.h, api/rpc.c). A CA alone would
     * verify nothing: refuse rather than look secure. */
    if (cfg->tls_cert[0] == '\0' && cfg->tls_ca[0] != '\0') {
        snprintf(s->errmsg, sizeof s->errmsg,
                 "--tls-ca without --tls-cert/--tls-key: a node verifies "
                 "its peers only when it speaks TLS itself");
        return QR_EBADREQ;
    }
    if (cfg->tls_cert[0] != '\0') {
        QR_INFO("server",
                "TLS on the HTTP API %s, the RPC port %s and calls to other "
                "nodes' RPC ports%s",
                cfg->http_addr, cfg->rpc_addr,
                cfg->tls_ca[0] != '\0'
                    ? ""
                    : " (verified against the system's CA store: give "
                      "--tls-ca for a private CA)");
        if (cfg->tls_ca[0] != '\0') {
            QR_INFO("server",
                    "mutual TLS between nodes: the raft port %s and "
                    "node-to-node requests need a certificate from %s bound "
                    "to the node's id",
                    cfg->raft_addr, cfg->tls_ca);
        } else {
            QR_WARN("server",
                    "the raft port (%s) speaks plaintext without --tls-ca "
                    "(mutual TLS between nodes needs the cluster CA): keep it "
                    "on a private network",
                    cfg->raft_addr);
        }
        check_tls_expiry(s);
    }

    rv = make_dir(cfg->data_dir, s->errmsg);
    if (rv != 0) {
        return rv;
    }
    rv = lock_data_dir(s);
    if (rv != 0) {
        return rv;
    }
    rv = check_tombstone(s);
    if (rv != 0) {
        goto err_after_lock;
    }
    rv = load_or_create_token(s);
    if (rv != 0) {
        goto err_after_lock;
    }
    rv = build_tokens(s, peer_token_of(s), &s->tokens, s->errmsg,
                      sizeof s->errmsg);
    if (rv != 0) {
        goto err_after_lock;
    }
    if (cfg->token_file[0] != '\0') {
        QR_INFO("server", "%zu API tokens loaded from %s", s->tokens.n,
                cfg->token_file);
    }
    /* The data dir's layout: LOCK, token, raft/ (the raft log and
     * snapshots), state/ (LMDB), and REMOVED once the node was removed. */
    snprintf(path, sizeof path, "%s/raft", cfg->data_dir);
    rv = make_dir(path, s->errmsg);
    if (rv != 0) {
        goto err_after_lock;
    }
    snprintf(path, sizeof path, "%s/state", cfg->data_dir);
    rv = make_dir(path, s->errmsg);
    if (rv != 0) {
        goto err_after_lock;
    }
    rv = qr_store_open(path, qr_admit_map_bytes(cfg, path), &s->store,
                       s->errmsg);
    if (rv != 0) {
        goto err_after_lock;
    }
    rv = qr_admit_init(&s->admit, cfg, s->store, s->errmsg);
    if (rv != 0) {
        goto err_after_store;
    }
    rv = uv_loop_init(&s->loop);
    if (rv != 0) {
        snprintf(s->errmsg, sizeof s->errmsg, "uv loop: %s", uv_strerror(rv));
        goto err_after_store;
    }
    rv = qr_cluster_init(&s->cluster, &s->loop, cfg, s->store);
    if (rv != 0) {
        snprintf(s->errmsg, sizeof s->errmsg, "%s", s->cluster.errmsg);
        goto err_after_loop;
    }
    s->cluster.on_leader = server_on_leader;
    s->cluster.on_leader_data = s;
    s->cluster.on_removed = on_removed;
    s->cluster.on_removed_data = s;
    rv = qr_cluster_start(&s->cluster);
    if (rv != 0) {
        snprintf(s->errmsg, sizeof s->errmsg, "%s", s->cluster.errmsg);
        goto err_after_cluster;
    }
    const char *peer_token = peer_token_of(s);
    if (!cfg->dev && cfg->peer_token[0] == '\0') {
        QR_WARN("server",
                "node-to-node requests use the API token, so any "
                "API client could pose as a node: give every node "
                "the same --peer-token (QRAFT_PEER_TOKEN)");
    }
    rv = qr_shards_init(&s->shards, &s->loop, cfg, &s->cluster, s->store,
                        peer_token);
    if (rv != 0) {
        snprintf(s->errmsg, sizeof s->errmsg, "%s", s->shards.errmsg);
        goto err_after_cluster;
    }
    log_destinations(cfg);
    rv = qr_worker_init(&s->worker, &s->loop, cfg, &s->cluster, s->store,
                        &s->shards);
    if (rv != 0) {
        snprintf(s->errmsg, sizeof s->errmsg, "%s", s->worker.errmsg);
        goto err_after_shards;
    }
    rv = qr_ops_init(&s->ops, &s->loop, cfg, &s->cluster, s->store, &s->shards);
    if (rv != 0) {
        snprintf(s->errmsg, sizeof s->errmsg, "ops: %s", qr_strerror(rv));
        goto err_after_worker;
    }
    rv = qr_rpc_init(&s->rpc, &s->loop, cfg, &s->tokens, peer_token, &s->ops);
    if (rv != 0) {
        snprintf(s->errmsg, sizeof s->errmsg, "%s", s->rpc.errmsg);
        goto err_after_ops;
    }
    memset(&s->metrics, 0, sizeof s->metrics);
    s->worker.metrics = &s->metrics;
    s->cluster.fsm.apply_seconds = &s->metrics.apply_seconds;
    s->ops.worker = &s->worker;
    s->ops.metrics = &s->metrics;
    s->ops.admit = &s->admit;
    s->ops.peer_token = peer_token;
    s->shards.admit = &s->admit;
    struct qr_http_hooks hooks = {
        .data = s,
        .serving = http_serving,
        .ready = http_ready,
        .ops = &s->ops,
        .tokens = &s->tokens,
        .metrics = &s->metrics,
        .gauges = http_gauges,
    };
    struct qr_http_limits limits = {
        .max_conns = cfg->max_connections,
        .max_body_bytes = cfg->limits.max_body_bytes,
        .req_timeout_ms = cfg->http_request_timeout_ms,
    };
    SSL_CTX *http_tls = NULL;
    struct qr_tls_files tls_files = tls_files_of(cfg);
    if (qr_tls_enabled(&tls_files)) {
        if (qr_tls_server_ctx(&tls_files, QR_TLS_CLIENT_CERT_NONE, &http_tls,
                              s->errmsg, sizeof s->errmsg) != 0) {
            rv = QR_EBADREQ;
            goto err_after_rpc;
        }
    } else if (!cfg->http_on_loopback) {
        QR_WARN("server",
                "the HTTP API on %s is plaintext and not on loopback: API "
                "tokens and message bodies cross the network in clear; give "
                "--tls-cert and --tls-key (docs/operations.md, \"TLS\")",
                cfg->http_addr);
    }
    rv = qr_http_init(&s->http, &s->loop, cfg->http_addr, http_tls, &limits,
                      &hooks, s->errmsg);
    SSL_CTX_free(http_tls); /* the server holds its own reference */
    if (rv != 0) {
        goto err_after_rpc;
    }
    if (http_tls != NULL) {
        QR_INFO("server", "the HTTP API on %s serves TLS (%s)", cfg->http_addr,
                cfg->tls_cert);
    }
    rv = qr_scheduler_init(&s->scheduler, &s->loop, cfg, &s->cluster, s->store);
    if (rv != 0) {
        snprintf(s->errmsg, sizeof s->errmsg, "scheduler: %s", uv_strerror(rv));
        goto err_after_http;
    }
    if (cfg->otlp_endpoint[0] != '\0') {
        struct qr_trace_options trace = {
            .endpoint = cfg->otlp_endpoint,
            .service_name = cfg->otlp_service_name,
            .node_id = cfg->id,
            .metrics = &s->metrics,
        };
        rv = qr_trace_open(&s->loop, &trace, &s->trace, s->errmsg);
        if (rv != 0) {
            goto err_after_scheduler;
        }
        s->worker.trace = s->trace;
        s->ops.trace = s->trace;
    }
    rv = open_handles(s);
    if (rv != 0) {
        goto err_after_trace;
    }
    return 0;

    /* The unwind ladder: each step closes what the steps above opened, and
     * runs the loop so that closing handles can finish. */
err_after_trace:
    qr_trace_close(s->trace);
    s->trace = NULL;
err_after_scheduler:
    qr_scheduler_close(&s->scheduler);
err_after_http:
    qr_http_close(&s->http, NULL);
err_after_rpc:
    qr_rpc_close(&s->rpc, NULL);
err_after_ops:
    qr_ops_close(&s->ops, NULL);
err_after_worker:
    qr_worker_close(&s->worker, NULL);
err_after_shards:
    qr_shards_close(&s->shards, NULL);
err_after_cluster:
    qr_cluster_close(&s->cluster, NULL);
    uv_run(&s->loop, UV_RUN_DEFAULT);
err_after_loop:
    uv_run(&s->loop, UV_RUN_DEFAULT);
    uv_loop_close(&s->loop);
err_after_store:
    qr_store_close(s->store);
    s->store = NULL;
err_after_lock:
    qr_tokens_free(&s->tokens);
    close(s->lock_fd);
    s->lock_fd = -1;
    return rv;
}

int qr_server_run(struct qr_server *s)
{
    uv_run(&s->loop, UV_RUN_DEFAULT);
    int rv = uv_loop_close(&s->loop);
    if (rv != 0) {
        QR_WARN("server", "loop closed with handles open: %s", uv_strerror(rv));
    }
    return s->exit_code;
}

void qr_server_close(struct qr_server *s)
{
    if (s->store != NULL) {
        qr_store_sync(s->store);
        qr_store_close(s->store);
        s->store = NULL;
    }
    if (s->lock_fd >= 0) {
        close(s->lock_fd);
        s->lock_fd = -1;
    }
    qr_tokens_free(&s->tokens);
}
