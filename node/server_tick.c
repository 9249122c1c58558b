/* The server's tick (every TICK_MS): the housekeeping that a node, and
 * the leader above all, does over time. The first leader of a new cluster
 * generates the signing keys (replicated, so every node signs alike); once
 * the node serves, --dev prints the lines an app's env file needs; the
 * leader proposes Prune (dead letters, events and finished messages past
 * their retention) and shortens the retentions under space pressure.
 *
 * Invariants: what is pruned is decided by a command, never by a node on
 * its own, so every replica removes the same records at the same point in
 * the log; the retentions travel in the command (apply reads no local
 * setting). At most one Prune and one key proposal are in flight. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "deliver/sign.h"
#include "lib/clock.h"
#include "lib/err.h"
#include "lib/logger.h"
#include "server_int.h"

/* The leader proposes housekeeping this often, this much of each kind at a
 * time; when the last Prune removed a full batch of some kind (more is
 * waiting), the next one follows PRUNE_SOON_MS later: on the next tick. A
 * batch of 2,500 finished messages applies in ~15-25 ms (10,000, apply's
 * clamp, took 55-95 ms among 1M messages: too long a stall for the loop;
 * docs/benchmarks.md), so back to back batches prune ~20k messages/s,
 * ahead of ~10k deliveries/s. */
#define PRUNE_INTERVAL_MS 10000
#define PRUNE_SOON_MS TICK_MS
#define PRUNE_MAX_ITEMS 2500
/* A retention shorter than twice the interval prunes every half retention
 * instead, but not more often than this. */
#define PRUNE_MIN_INTERVAL_MS 1000
/* Space pressure starts when the store reaches QR_ADMIT_WARN_PERCENT of
 * its limit and ends below this share (hysteresis: no flapping at the
 * edge). */
#define PRESSURE_END_PERCENT (QR_ADMIT_WARN_PERCENT - 10)

/* Reads the replicated signing keys; QR_ENOTFOUND until they are applied. */
static int read_keys(struct qr_server *s, Qraft__SigningKeys **out)
{
    struct qr_store_txn *txn = NULL;
    int rv = qr_store_txn_begin(s->store, false, &txn);
    if (rv != 0) {
        return rv;
    }
    rv = qr_store_meta_get_msg(txn, QR_META_SIGNING_KEYS,
                               &qraft__signing_keys__descriptor,
                               (ProtobufCMessage **)out);
    qr_store_txn_abort(txn);
    return rv;
}

static void on_keys_applied(void *data,
                            int status,
                            const struct qr_apply_result *res)
{
    struct qr_server *s = data;
    if (status != 0 || res->status != 0) {
        QR_WARN("server", "installing signing keys: %s",
                status != 0 ? qr_strerror(status) : res->error);
        s->keys_proposed = false; /* the next tick tries again */
    }
}

/* The first leader of a new cluster generates the signing keys; they are
 * replicated like everything else, so every node signs with the same. */
static void ensure_signing_keys(struct qr_server *s)
{
    Qraft__SigningKeys *keys = NULL;
    if (s->keys_proposed || !qr_cluster_serving(&s->cluster)) {
        return;
    }
    int rv = read_keys(s, &keys);
    if (rv == 0) {
        qraft__signing_keys__free_unpacked(keys, NULL);
        return;
    }
    if (rv != QR_ENOTFOUND) {
        QR_ERROR("server", "reading signing keys: %s", qr_strerror(rv));
        return;
    }
    char current[QR_SIGN_KEY_BYTES];
    char next[QR_SIGN_KEY_BYTES];
    if (qr_sign_generate_key(current) != 0 || qr_sign_generate_key(next) != 0) {
        QR_ERROR("server", "no randomness for signing keys");
        return;
    }
    Qraft__SigningKeys k = QRAFT__SIGNING_KEYS__INIT;
    k.current = current;
    k.next = next;
    Qraft__SetSigningKeys set = QRAFT__SET_SIGNING_KEYS__INIT;
    set.keys = &k;
    rv = qr_cluster_propose_one(&s->cluster,
                                QRAFT__COMMAND__BODY_SET_SIGNING_KEYS,
                                &set.base, on_keys_applied, s);
    if (rv == 0) {
        s->keys_proposed = true;
    } else {
        QR_WARN("server", "proposing signing keys: %s", qr_strerror(rv));
    }
}

void server_on_leader(void *data)
{
    struct qr_server *s = data;
    s->keys_proposed = false;
    ensure_signing_keys(s);
    qr_worker_kick(&s->worker);
    qr_scheduler_kick(&s->scheduler);
}

/* Prints the lines a developer pastes into an app's env file, once the node
 * serves, the signing keys are applied and (on the leader) the feature level
 * has risen to what every member runs. */
static void announce(struct qr_server *s)
{
    char why[128];
    Qraft__SigningKeys *keys = NULL;
    if (s->announced || !qr_cluster_ready(&s->cluster, why, sizeof why) ||
        !qr_shards_level_settled(&s->shards) || read_keys(s, &keys) != 0) {
        return;
    }
    s->announced = true;
    QR_INFO("server", "serving: rpc %s, http %s", s->config->rpc_addr,
            s->config->http_addr);
    if (s->config->dev && s->announce_out != NULL) {
        fprintf(s->announce_out,
                "QSTASH_URL=%s://%s\n"
                "QSTASH_TOKEN=%s\n"
                "QSTASH_CURRENT_SIGNING_KEY=%s\n"
                "QSTASH_NEXT_SIGNING_KEY=%s\n"
                "QRAFT_ENDPOINTS=%s\n",
                qr_http_tls(&s->http) ? "https" : "http", s->config->http_addr,
                s->token, keys->current, keys->next, s->config->rpc_addr);
        fflush(s->announce_out);
    }
    qraft__signing_keys__free_unpacked(keys, NULL);
}

static void on_pruned(void *data, int status, const struct qr_apply_result *res)
{
    struct qr_server *s = data;
    s->prune_pending = false;
    if (status != 0) {
        QR_DEBUG("server", "prune: %s", qr_strerror(status));
        return;
    }
    snprintf(s->prune_cursor, sizeof s->prune_cursor, "%s", res->message_id);
    if (res->more) {
        uint64_t soon = qr_clock_mono_ms() + PRUNE_SOON_MS;
        if (soon < s->next_prune_mono_ms) {
            s->next_prune_mono_ms = soon;
        }
    }
}

/* Whether retention must give way now (the rule in docs/architecture.md,
 * "Space"): this node's store at QR_ADMIT_WARN_PERCENT of its limit (once
 * on, until below PRESSURE_END_PERCENT) or refusing writes, or another
 * node's heartbeat saying it is short of space. why says which. */
static bool space_pressure(struct qr_server *s,
                           uint64_t now,
                           char *why,
                           size_t why_size)
{
    struct qr_admit_space sp;
    qr_admit_get_space(&s->admit, &sp);
    unsigned percent =
        s->retention_pressure ? PRESSURE_END_PERCENT : QR_ADMIT_WARN_PERCENT;
    if (sp.store_limit_bytes > 0 &&
        sp.store_used_bytes * 100 >= sp.store_limit_bytes * percent) {
        snprintf(why, why_size,
                 "the store holds %" PRIu64
                 " bytes, %u%% or more of its "
                 "limit (%" PRIu64 ")",
                 sp.store_used_bytes, percent, sp.store_limit_bytes);
        return true;
    }
    if (qr_admit_probe(&s->admit, now, 0, why, why_size) != 0) {
        return true;
    }
    return qr_shards_space_short(&s->shards, why, why_size);
}

/* Under pressure a retention becomes --pressure-retention at most, and
 * "keep forever" (0) becomes it too. */
static uint64_t pressed(const struct qr_server *s, uint64_t retention_ms)
{
    uint64_t most = s->config->pressure_retention_ms;
    return retention_ms == 0 || retention_ms > most ? most : retention_ms;
}

/* Notes (and logs) when space pressure starts and ends, on the leader. */
static bool retention_pressure(struct qr_server *s, uint64_t now)
{
    char why[QR_SHARDS_SPACE_WHY_BYTES + 160];
    bool on = space_pressure(s, now, why, sizeof why);
    if (on && !s->retention_pressure) {
        QR_WARN("server",
                "space pressure: %s; delivered and cancelled messages and "
                "events are kept %" PRIu64
                " ms at most "
                "(--pressure-retention) until it passes; dead letters keep "
                "theirs",
                why, s->config->pressure_retention_ms);
        s->next_prune_mono_ms = now; /* prune at once */
    } else if (!on && s->retention_pressure) {
        QR_INFO("server",
                "space pressure over (store below %u%% of its limit, no "
                "node short of space): retention as configured",
                PRESSURE_END_PERCENT);
    }
    s->retention_pressure = on;
    return on;
}

/* Every PRUNE_INTERVAL_MS, or every half of the shortest retention when
 * that is sooner (at most once per PRUNE_MIN_INTERVAL_MS): what is kept
 * past its retention is then at most half of it, or 10 s of load. */
static uint64_t prune_interval_ms(const Qraft__Prune *p)
{
    uint64_t interval = PRUNE_INTERVAL_MS;
    uint64_t retentions[3] = {p->dlq_retention_ms, p->events_retention_ms,
                              p->done_retention_ms};
    for (int i = 0; i < 3; i++) {
        if (retentions[i] != 0 && retentions[i] / 2 < interval) {
            interval = retentions[i] / 2;
        }
    }
    return interval < PRUNE_MIN_INTERVAL_MS ? PRUNE_MIN_INTERVAL_MS : interval;
}

/* Dead letters and history past their retention are removed by a command,
 * so every replica removes the same ones at the same point in the log. The
 * retentions travel in the command, so the leader may shorten them under
 * space pressure and apply stays deterministic. */
static void propose_prune(struct qr_server *s)
{
    uint64_t now = qr_clock_mono_ms();
    if (!qr_cluster_serving(&s->cluster)) {
        s->retention_pressure = false;
        return;
    }
    bool pressure = retention_pressure(s, now);
    if (s->prune_pending || now < s->next_prune_mono_ms ||
        (!pressure && s->config->dlq_retention_ms == 0 &&
         s->config->events_retention_ms == 0 &&
         s->config->done_retention_ms == 0)) {
        return;
    }
    Qraft__Prune prune = QRAFT__PRUNE__INIT;
    prune.dlq_retention_ms = s->config->dlq_retention_ms;
    prune.events_retention_ms = s->config->events_retention_ms;
    prune.done_retention_ms = s->config->done_retention_ms;
    if (pressure) {
        prune.events_retention_ms = pressed(s, prune.events_retention_ms);
        prune.done_retention_ms = pressed(s, prune.done_retention_ms);
    }
    prune.max_items = PRUNE_MAX_ITEMS;
    s->next_prune_mono_ms = now + prune_interval_ms(&prune);
    /* The cursor of the walk that nodes below the done index's level do;
     * ignored at or above it. */
    prune.scan_after_id =
        s->cluster.fsm.feature_level < QR_FEATURE_LEVEL_DONE_INDEX
            ? s->prune_cursor
            : "";
    s->prune_pending =
        qr_cluster_propose_one(&s->cluster, QRAFT__COMMAND__BODY_PRUNE,
                               &prune.base, on_pruned, s) == 0;
}

void server_on_tick(uv_timer_t *t)
{
    struct qr_server *s = t->data;
    if (s->stopping) {
        return;
    }
    /* A read met a corrupt record (and answered the error naming it): this
     * replica's copy is not to be trusted. Stop, so that the leader moves
     * its shards to replicas whose copy is sound (store.h, what stops). */
    const char *corrupt = qr_store_corrupt_first(s->store);
    if (corrupt != NULL) {
        QR_ERROR("server", "stopping: %s", corrupt);
        qr_server_stop(s, 1);
        return;
    }
    qr_admit_tick(&s->admit, uv_now(&s->loop));
    ensure_signing_keys(s);
    announce(s);
    propose_prune(s);
}
