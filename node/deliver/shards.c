#include "deliver/shards.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/clock.h"
#include "lib/err.h"
#include "lib/logger.h"
#include "lib/tls_ctx.h"

#define TICK_MS 100
#define HEARTBEAT_MS 500
#define LEASE_MS 3000
/* A follower stops this long before its lease could end at the leader:
 * covers the request's time in flight and clock rate differences. */
#define LEASE_MARGIN_MS 500
/* A shard leaving a live owner belongs to nobody until its old owner says
 * nothing of it runs (see qr_shards_hand_over): this long when the old
 * owner does not say (an older version), at most HANDOVER_MAX_MS (the
 * default delivery timeout) when it does. */
#define HANDOVER_MS 5000
#define HANDOVER_MAX_MS 30000
#define PEER_TIMEOUT_MS 2000
/* A refused peer token is logged at WARN at most this often. */
#define REFUSED_WARN_EVERY_MS 10000

/* ------------------------------------------------------------------------ */
/* The replicated view: shard map and node infos. */

static void refresh_map(struct qr_shards *s)
{
    struct qr_store_txn *txn = NULL;
    Qraft__AssignShards *a = NULL;
    if (qr_store_txn_begin(s->store, false, &txn) != 0) {
        return;
    }
    int rv = qr_store_meta_get_msg(txn, QR_META_SHARDS,
                                   &qraft__assign_shards__descriptor,
                                   (ProtobufCMessage **)&a);
    qr_store_txn_abort(txn);
    if (rv == QR_ENOTFOUND) {
        return; /* no map yet */
    }
    if (rv != 0 || a->n_owners != QR_FSM_N_SHARDS) {
        if (a != NULL) {
            qraft__assign_shards__free_unpacked(a, NULL);
        }
        QR_ERROR("shards", "the stored shard map is unreadable");
        return;
    }
    if (!s->have_map || a->epoch != s->epoch) {
        memcpy(s->owners, a->owners, sizeof s->owners);
        s->epoch = a->epoch;
        s->have_map = true;
        QR_INFO("shards", "shard map epoch %" PRIu64 ": this node owns %u",
                s->epoch, qr_shards_count(s, s->config->id));
    }
    qraft__assign_shards__free_unpacked(a, NULL);
}

Qraft__NodeInfo *qr_shards_node_info(struct qr_shards *s, uint64_t id)
{
    char name[48];
    struct qr_store_txn *txn = NULL;
    Qraft__NodeInfo *info = NULL;
    snprintf(name, sizeof name, "%s%" PRIu64, QR_META_NODE_PREFIX, id);
    if (qr_store_txn_begin(s->store, false, &txn) != 0) {
        return NULL;
    }
    int rv = qr_store_meta_get_msg(txn, name, &qraft__node_info__descriptor,
                                   (ProtobufCMessage **)&info);
    qr_store_txn_abort(txn);
    return rv == 0 ? info : NULL;
}

void qr_shards_node_addrs(struct qr_shards *s,
                          uint64_t id,
                          char *rpc,
                          char *http)
{
    Qraft__NodeInfo *info = qr_shards_node_info(s, id);
    if (rpc != NULL) {
        snprintf(rpc, QR_ADDR_MAX, "%s", info != NULL ? info->rpc : "");
    }
    if (http != NULL) {
        snprintf(http, QR_ADDR_MAX, "%s", info != NULL ? info->http : "");
    }
    if (info != NULL) {
        qraft__node_info__free_unpacked(info, NULL);
    }
}

uint32_t qr_shards_count(struct qr_shards *s, uint64_t id)
{
    if (!s->have_map) {
        return qr_cluster_serving(s->cluster) && id == s->config->id
                   ? QR_FSM_N_SHARDS
                   : 0;
    }
    uint32_t n = 0;
    for (uint32_t i = 0; i < QR_FSM_N_SHARDS; i++) {
        n += s->owners[i] == id;
    }
    return n;
}

/* ------------------------------------------------------------------------ */
/* Ownership. */

bool qr_shards_lease_runs(struct qr_shards *s)
{
    if (s->closing || s->leaving) {
        return false;
    }
    uint64_t now = qr_clock_mono_ms();
    if (qr_results_stalled(&s->results, now)) {
        return false;
    }
    return qr_cluster_serving(s->cluster) || now < s->lease_until_mono_ms;
}

bool qr_shards_leased(struct qr_shards *s)
{
    if (!qr_shards_lease_runs(s)) {
        return false;
    }
    /* A lease from a leader whose map this replica has not applied yet
     * would dispatch by an old map: wait for it. */
    return qr_cluster_serving(s->cluster) ||
           (s->have_map && s->epoch >= s->leader_epoch);
}

bool qr_shards_active(struct qr_shards *s)
{
    return !s->draining && qr_shards_leased(s);
}

void qr_shards_drain(struct qr_shards *s)
{
    if (!s->draining) {
        QR_INFO("shards", "draining: no delivery starts from now on");
    }
    s->draining = true;
}

bool qr_shards_assigned(struct qr_shards *s, uint32_t shard)
{
    if (s->closing || s->leaving || shard >= QR_FSM_N_SHARDS) {
        return false;
    }
    if (!s->have_map) {
        return qr_cluster_serving(s->cluster);
    }
    return s->owners[shard] == s->config->id;
}

void qr_shards_set_handover_probe(struct qr_shards *s,
                                  bool (*busy)(void *data),
                                  void *data)
{
    s->handover_busy = busy;
    s->handover_busy_data = busy != NULL ? data : NULL;
}

bool qr_shards_handing_over(struct qr_shards *s, uint32_t shard)
{
    return !s->closing && !s->leaving && s->have_map &&
           shard < QR_FSM_N_SHARDS && s->owners[shard] == 0;
}

bool qr_shards_owns(struct qr_shards *s, uint32_t shard)
{
    return qr_shards_active(s) && qr_shards_assigned(s, shard);
}

/* A report to the leader failed, or the leader refused a heartbeat: the
 * lease ends now, and only a heartbeat sent from now on renews it. */
static void lease_void(struct qr_shards *s, const char *why)
{
    uint64_t now = qr_clock_mono_ms();
    if (now < s->lease_until_mono_ms) {
        QR_INFO("shards",
                "lease given up (%s): no delivery starts until the "
                "leader renews it",
                why);
    }
    s->lease_until_mono_ms = 0;
    s->lease_void_mono_ms = now;
    s->next_heartbeat_mono_ms = now; /* ask again at the next tick */
}

/* The connection to the leader dropped (or could not be made): until a
 * heartbeat goes through again, results could not be reported. */
static void on_leader_down(void *data)
{
    struct qr_shards *s = data;
    if (!s->closing && !s->leaving) {
        lease_void(s, "the connection to the leader dropped");
    }
}

/* A result could not be reported (results.c): see lease_void. */
static void on_result_refused(void *data, const char *why)
{
    lease_void(data, why);
}

/* ------------------------------------------------------------------------ */
/* Leader side: liveness and assignment. */

static struct qr_shards_node *find_node(struct qr_shards *s, uint64_t id)
{
    for (size_t i = 0; i < s->n_nodes; i++) {
        if (s->nodes[i].id == id) {
            return &s->nodes[i];
        }
    }
    return NULL;
}

const struct qr_shards_node *qr_shards_node(struct qr_shards *s, uint64_t id)
{
    return qr_cluster_serving(s->cluster) ? find_node(s, id) : NULL;
}

static void on_info_applied(void *data,
                            int status,
                            const struct qr_apply_result *res)
{
    struct qr_shards *s = data;
    (void)res;
    s->info_pending = false;
    if (status != 0) {
        QR_DEBUG("shards", "node info: %s", qr_strerror(status));
    }
}

/* What this node advertises about itself; borrows from s->config. */
static void own_info(struct qr_shards *s, Qraft__NodeInfo *info)
{
    qraft__node_info__init(info);
    info->id = s->config->id;
    info->rpc = (char *)s->config->rpc_addr;
    info->http = (char *)s->config->http_addr;
    info->version = QRAFT_VERSION;
    info->feature_level = s->config->max_feature_level;
}

/* Makes the replicated node info match what a node advertises (borrowed).
 * At most one such proposal in flight. */
static void sync_node_info(struct qr_shards *s, const Qraft__NodeInfo *info)
{
    if (s->info_pending) {
        return;
    }
    Qraft__NodeInfo *stored = qr_shards_node_info(s, info->id);
    bool same = stored != NULL && strcmp(stored->rpc, info->rpc) == 0 &&
                strcmp(stored->http, info->http) == 0 &&
                strcmp(stored->version, info->version) == 0 &&
                stored->feature_level == info->feature_level;
    if (stored != NULL) {
        qraft__node_info__free_unpacked(stored, NULL);
    }
    if (same) {
        return;
    }
    Qraft__SetNodeInfo set = QRAFT__SET_NODE_INFO__INIT;
    set.info = (Qraft__NodeInfo *)info;
    s->info_pending =
        qr_cluster_propose_one(s->cluster, QRAFT__COMMAND__BODY_SET_NODE_INFO,
                               &set.base, on_info_applied, s) == 0;
}

void qr_shards_on_heartbeat(struct qr_shards *s,
                            const Qraft__HeartbeatRequest *req,
                            Qraft__HeartbeatResponse *resp)
{
    resp->lease_ms = LEASE_MS;
    resp->epoch = s->epoch;
    /* A lease is this node's word that it leads and commits: one that no
     * longer leads (the heartbeat went to the last known leader), or whose
     * results do not commit, grants none. */
    if (!qr_cluster_serving(s->cluster) ||
        qr_results_stalled(&s->results, qr_clock_mono_ms())) {
        resp->lease_ms = 0;
    }
    if (req->info == NULL || req->info->id == 0) {
        return;
    }
    if (qr_cluster_removed(s->cluster, req->info->id)) {
        resp->lease_ms = 0;
        resp->removed = true;
        return;
    }
    struct qr_shards_node *n = find_node(s, req->info->id);
    if (n == NULL) {
        if (s->n_nodes == QR_CLUSTER_MAX_NODES) {
            return;
        }
        n = &s->nodes[s->n_nodes++];
        memset(n, 0, sizeof *n);
        n->id = req->info->id;
    }
    n->last_heartbeat_mono_ms = req->leaving ? 0 : qr_clock_mono_ms();
    n->applied_index = req->applied_index;
    n->map_epoch = req->map_epoch;
    n->handover_busy = req->handover_busy;
    if (req->leaving) {
        /* It stopped dispatching: its shards may move now. */
        resp->lease_ms = 0;
        QR_INFO("shards", "node %" PRIu64 " is leaving: moving its shards",
                n->id);
    }
    snprintf(n->rpc, sizeof n->rpc, "%s", req->info->rpc);
    snprintf(n->http, sizeof n->http, "%s", req->info->http);
    if (req->space_short[0] != '\0' && n->space_short[0] == '\0') {
        QR_WARN("shards",
                "node %" PRIu64 " is short of space: writes are refused",
                n->id);
    } else if (req->space_short[0] == '\0' && n->space_short[0] != '\0') {
        QR_INFO("shards", "node %" PRIu64 " has room again", n->id);
    }
    snprintf(n->space_short, sizeof n->space_short, "%s", req->space_short);
    sync_node_info(s, req->info);
}

static bool is_live(struct qr_shards *s, uint64_t id, uint64_t now)
{
    if (id == s->config->id) {
        return !s->leaving; /* a leaving leader gives its shards away */
    }
    const struct qr_shards_node *n = find_node(s, id);
    return n != NULL && n->last_heartbeat_mono_ms != 0 &&
           now - n->last_heartbeat_mono_ms < LEASE_MS;
}

bool qr_shards_space_short(struct qr_shards *s, char *why, size_t why_size)
{
    if (!qr_cluster_serving(s->cluster)) {
        return false;
    }
    uint64_t now = qr_clock_mono_ms();
    for (size_t i = 0; i < s->n_nodes; i++) {
        const struct qr_shards_node *n = &s->nodes[i];
        if (n->space_short[0] != '\0' && n->id != s->config->id &&
            is_live(s, n->id, now)) {
            snprintf(why, why_size, "node %" PRIu64 " (a replica) %s", n->id,
                     n->space_short);
            return true;
        }
    }
    return false;
}

void qr_shards_balance(const uint64_t *current,
                       const uint64_t *live,
                       size_t n_live,
                       uint64_t out[QR_FSM_N_SHARDS])
{
    assert(n_live >= 1 && n_live <= QR_CLUSTER_MAX_NODES);
    uint32_t quota[QR_CLUSTER_MAX_NODES];
    uint32_t have[QR_CLUSTER_MAX_NODES] = {0};
    for (size_t i = 0; i < n_live; i++) {
        quota[i] = QR_FSM_N_SHARDS / (uint32_t)n_live +
                   (i < QR_FSM_N_SHARDS % n_live ? 1 : 0);
    }
    for (uint32_t sh = 0; sh < QR_FSM_N_SHARDS; sh++) {
        out[sh] = 0;
        if (current == NULL) {
            continue;
        }
        for (size_t i = 0; i < n_live; i++) {
            if (current[sh] == live[i] && have[i] < quota[i]) {
                out[sh] = live[i];
                have[i]++;
                break;
            }
        }
    }
    size_t next = 0;
    for (uint32_t sh = 0; sh < QR_FSM_N_SHARDS; sh++) {
        if (out[sh] != 0) {
            continue;
        }
        while (have[next] >= quota[next]) {
            next++;
        }
        assert(next < n_live); /* the quotas add up to QR_FSM_N_SHARDS */
        out[sh] = live[next];
        have[next]++;
    }
}

bool qr_shards_hand_over(const uint64_t *current,
                         const uint64_t *live,
                         size_t n_live,
                         bool handover_over,
                         uint64_t out[QR_FSM_N_SHARDS])
{
    bool started = false;
    for (uint32_t sh = 0; sh < QR_FSM_N_SHARDS; sh++) {
        uint64_t cur = current[sh];
        if (cur == out[sh]) {
            continue;
        }
        if (cur == 0) {
            if (!handover_over) {
                out[sh] = 0; /* still handing over */
            }
            continue;
        }
        for (size_t i = 0; i < n_live; i++) {
            if (live[i] == cur) {
                out[sh] = 0;
                started = true;
                break;
            }
        }
    }
    return started;
}

static void on_assigned(void *data,
                        int status,
                        const struct qr_apply_result *res)
{
    struct qr_shards *s = data;
    s->assign_pending = false;
    if (status != 0 || (res != NULL && res->status != 0)) {
        QR_WARN("shards", "assignment: %s",
                status != 0 ? qr_strerror(status) : res->error);
        return;
    }
    refresh_map(s);
}

/* A map giving shards to nobody is proposed (epoch): remembers which live
 * owners gave shards up (with those of a hand-over still running: each
 * must say it is done) and restarts the clocks. */
static void note_handover(struct qr_shards *s,
                          const uint64_t *current,
                          const uint64_t *owners,
                          uint64_t epoch,
                          uint64_t now)
{
    bool running = false; /* a hand-over before this one still runs */
    for (uint32_t sh = 0; sh < QR_FSM_N_SHARDS; sh++) {
        running = running || current[sh] == 0;
    }
    if (!running) {
        s->n_handover_from = 0;
    }
    for (uint32_t sh = 0; sh < QR_FSM_N_SHARDS; sh++) {
        uint64_t from = current[sh];
        if (owners[sh] != 0 || from == 0) {
            continue;
        }
        bool known = false;
        for (size_t i = 0; i < s->n_handover_from; i++) {
            known = known || s->handover_from[i] == from;
        }
        if (!known && s->n_handover_from < QR_CLUSTER_MAX_NODES) {
            s->handover_from[s->n_handover_from++] = from;
        }
    }
    s->handover_epoch = epoch;
    s->handover_until_mono_ms = now + HANDOVER_MS;
    s->handover_max_mono_ms = now + HANDOVER_MAX_MS;
}

/* Whether the shards given to nobody may reach their next owners: every
 * old owner said, in a heartbeat of the hand-over's epoch or later, that
 * none of their attempts runs or waits to commit (the leader asks its
 * worker directly); one that is not live any more starts nothing; one
 * that does not say (an older version) is waited for HANDOVER_MS; none
 * longer than HANDOVER_MAX_MS. */
static bool handover_over(struct qr_shards *s, uint64_t now)
{
    if (now >= s->handover_max_mono_ms) {
        return true;
    }
    for (size_t i = 0; i < s->n_handover_from; i++) {
        uint64_t id = s->handover_from[i];
        bool done;
        if (id == s->config->id) {
            done = s->epoch >= s->handover_epoch &&
                   (s->handover_busy == NULL ||
                    !s->handover_busy(s->handover_busy_data));
        } else {
            const struct qr_shards_node *n = find_node(s, id);
            if (n == NULL || !is_live(s, id, now)) {
                done = true;
            } else if (n->map_epoch == 0) {
                done = now >= s->handover_until_mono_ms;
            } else {
                done = n->map_epoch >= s->handover_epoch && !n->handover_busy;
            }
        }
        if (!done) {
            return false;
        }
    }
    return true;
}

static void maybe_assign(struct qr_shards *s, uint64_t now)
{
    if (s->assign_pending ||
        now - s->serving_since_mono_ms < LEASE_MS + LEASE_MARGIN_MS) {
        return;
    }
    /* Candidates: the raft configuration's voters and standbys. */
    struct qr_cluster_status cs;
    qr_cluster_get_status(s->cluster, &cs);
    uint64_t live[QR_CLUSTER_MAX_NODES];
    size_t n_live = 0;
    for (size_t i = 0; i < cs.n_nodes; i++) {
        if (strcmp(cs.nodes[i].role, "spare") != 0 &&
            is_live(s, cs.nodes[i].id, now)) {
            live[n_live++] = cs.nodes[i].id;
        }
    }
    for (size_t i = 1; i < n_live; i++) { /* ids ascending */
        for (size_t j = i; j > 0 && live[j - 1] > live[j]; j--) {
            uint64_t t = live[j];
            live[j] = live[j - 1];
            live[j - 1] = t;
        }
    }
    if (n_live == 0) {
        return;
    }
    /* Before the first map the serving leader owns every shard. */
    uint64_t implicit[QR_FSM_N_SHARDS];
    const uint64_t *current = s->owners;
    if (!s->have_map) {
        for (uint32_t sh = 0; sh < QR_FSM_N_SHARDS; sh++) {
            implicit[sh] = s->config->id;
        }
        current = implicit;
    }
    uint64_t owners[QR_FSM_N_SHARDS];
    qr_shards_balance(current, live, n_live, owners);
    bool handing_over = qr_shards_hand_over(current, live, n_live,
                                            handover_over(s, now), owners);
    if (s->have_map && memcmp(owners, s->owners, sizeof owners) == 0) {
        return;
    }
    Qraft__AssignShards a = QRAFT__ASSIGN_SHARDS__INIT;
    a.epoch = s->epoch + 1;
    a.n_owners = QR_FSM_N_SHARDS;
    a.owners = owners;
    s->assign_pending =
        qr_cluster_propose_one(s->cluster, QRAFT__COMMAND__BODY_ASSIGN_SHARDS,
                               &a.base, on_assigned, s) == 0;
    if (s->assign_pending) {
        QR_INFO("shards", "assigning epoch %" PRIu64 " over %zu live node(s)%s",
                a.epoch, n_live,
                handing_over ? "; shards leaving a live node go to nobody first"
                             : "");
        if (handing_over) {
            note_handover(s, current, owners, a.epoch, now);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Follower side: the heartbeat. */

struct heartbeat_call {
    struct qr_shards *shards;
    uint64_t sent_mono_ms;
};

/* The leader refused a heartbeat for its token: this node delivers nothing
 * until an operator fixes it, so it says so loudly (rate-limited) and
 * /readyz fails (qr_shards_peer_refused). */
static void peer_refused(struct qr_shards *s, const char *error)
{
    uint64_t now = qr_clock_mono_ms();
    s->refused_mono_ms = now;
    snprintf(s->refused_why, sizeof s->refused_why,
             "the leader (%s) refuses this node's peer token: it must run "
             "with the cluster's --peer-token (QRAFT_PEER_TOKEN)",
             qr_peer_target(&s->peer));
    s->n_refused_since_warned++;
    if (s->refused_warned_mono_ms != 0 &&
        now - s->refused_warned_mono_ms < REFUSED_WARN_EVERY_MS) {
        return;
    }
    QR_WARN("shards",
            "heartbeat refused by the leader at %s: %s (%" PRIu64
            " refused since the last warning); this node gets no lease "
            "and delivers nothing until it runs with the cluster's "
            "--peer-token (QRAFT_PEER_TOKEN)",
            qr_peer_target(&s->peer), error != NULL ? error : "",
            s->n_refused_since_warned);
    s->refused_warned_mono_ms = now;
    s->n_refused_since_warned = 0;
}

bool qr_shards_peer_refused(struct qr_shards *s, char *why, size_t why_size)
{
    if (s->refused_mono_ms == 0 || qr_cluster_serving(s->cluster)) {
        return false; /* a leader sends no heartbeat */
    }
    snprintf(why, why_size, "%s", s->refused_why);
    return true;
}

static void on_heartbeat_answer(void *data,
                                int status,
                                const Qraft__Response *resp)
{
    struct heartbeat_call *hc = data;
    struct qr_shards *s = hc->shards;
    s->heartbeat_pending = false;
    if (s->closing || s->leaving) {
        free(hc);
        return;
    }
    if (status == 0 && resp->status != QRAFT__STATUS__UNAUTHORIZED &&
        s->refused_mono_ms != 0) {
        /* Answered, not refused: the token is right again. */
        QR_INFO("shards", "the leader accepts this node's peer token again");
        s->refused_mono_ms = 0;
        s->refused_warned_mono_ms = 0;
        s->n_refused_since_warned = 0;
    }
    if (status == 0 && resp->status == QRAFT__STATUS__OK &&
        resp->body_case == QRAFT__RESPONSE__BODY_HEARTBEAT &&
        resp->heartbeat->lease_ms > LEASE_MARGIN_MS) {
        if (hc->sent_mono_ms < s->lease_void_mono_ms) {
            /* Sent before a failure: it does not prove the leader still
             * hears us. The next one may. */
            s->next_heartbeat_mono_ms = qr_clock_mono_ms();
        } else {
            bool had = qr_clock_mono_ms() < s->lease_until_mono_ms;
            s->lease_until_mono_ms =
                hc->sent_mono_ms + resp->heartbeat->lease_ms - LEASE_MARGIN_MS;
            s->leader_epoch = resp->heartbeat->epoch;
            if (!had) {
                QR_INFO("shards", "lease granted by the leader");
            }
        }
    } else if (status == 0 &&
               resp->body_case == QRAFT__RESPONSE__BODY_HEARTBEAT &&
               resp->heartbeat->removed) {
        s->lease_until_mono_ms = 0;
        qr_cluster_note_removed(s->cluster);
    } else if (status == 0 && resp->status == QRAFT__STATUS__UNAUTHORIZED) {
        peer_refused(s, resp->error);
        lease_void(s, "the heartbeat was refused");
    } else if (status == 0) {
        QR_DEBUG("shards", "heartbeat refused: %s",
                 resp->status == QRAFT__STATUS__OK ? "no lease" : resp->error);
        if (resp->status == QRAFT__STATUS__NOT_LEADER) {
            /* Asked a node that does not lead: go where it points, or to
             * the next member (fallback_target). */
            snprintf(s->last_leader_rpc, sizeof s->last_leader_rpc, "%s",
                     resp->leader_rpc != NULL ? resp->leader_rpc : "");
        }
        lease_void(s, "the heartbeat was refused");
    } else {
        QR_DEBUG("shards", "heartbeat: %s", qr_strerror(status));
        s->last_leader_rpc[0] = '\0'; /* the next goes elsewhere */
        lease_void(s, "the heartbeat got no answer");
    }
    free(hc);
}

/* Where the heartbeat goes when the leader's own address is not known
 * here: the last node that led or named the leader, else each other member
 * whose address is known, in turn. A node removed moments after the new
 * leader took over may never have applied that leader's address, and hears
 * from nobody: a member it asks names the leader (NOT_LEADER, leader_rpc),
 * and the leader tells it it was removed. False: no address known yet. */
static bool fallback_target(struct qr_shards *s, char *rpc)
{
    if (s->last_leader_rpc[0] != '\0') {
        snprintf(rpc, QR_ADDR_MAX, "%s", s->last_leader_rpc);
        return true;
    }
    struct qr_cluster_status cs;
    qr_cluster_get_status(s->cluster, &cs);
    for (size_t k = 0; k < cs.n_nodes; k++) {
        uint64_t id = cs.nodes[(s->probe_next + k) % cs.n_nodes].id;
        if (id == s->config->id) {
            continue;
        }
        qr_shards_node_addrs(s, id, rpc, NULL);
        if (rpc[0] != '\0') {
            s->probe_next = (uint32_t)((s->probe_next + k + 1) % cs.n_nodes);
            return true;
        }
    }
    return false;
}

static void send_heartbeat(struct qr_shards *s, uint64_t now)
{
    uint64_t leader_id = 0;
    qr_cluster_leader(s->cluster, &leader_id, NULL);
    if (leader_id == s->config->id) {
        return;
    }
    char rpc[QR_ADDR_MAX] = "";
    if (leader_id != 0) {
        qr_shards_node_addrs(s, leader_id, rpc, NULL);
    }
    if (rpc[0] != '\0') {
        snprintf(s->last_leader_rpc, sizeof s->last_leader_rpc, "%s", rpc);
    } else if (!fallback_target(s, rpc)) {
        return; /* no other node has advertised itself yet */
    }
    qr_peer_set_target(&s->peer, rpc);
    if (s->heartbeat_pending || now < s->next_heartbeat_mono_ms) {
        return;
    }
    struct heartbeat_call *hc = malloc(sizeof *hc);
    if (hc == NULL) {
        return;
    }
    hc->shards = s;
    hc->sent_mono_ms = now;
    Qraft__NodeInfo info;
    own_info(s, &info);
    Qraft__HeartbeatRequest hb = QRAFT__HEARTBEAT_REQUEST__INIT;
    hb.info = &info;
    hb.applied_index = qr_cluster_fsm_applied(s->cluster);
    hb.map_epoch = s->epoch;
    hb.handover_busy =
        s->handover_busy != NULL && s->handover_busy(s->handover_busy_data);
    char space_why[QR_SHARDS_SPACE_WHY_BYTES];
    if (s->admit != NULL && qr_admit_probe(s->admit, uv_now(s->loop), 0,
                                           space_why, sizeof space_why) != 0) {
        hb.space_short = space_why;
    }
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_HEARTBEAT;
    req.heartbeat = &hb;
    if (qr_peer_call(&s->peer, &req, PEER_TIMEOUT_MS, on_heartbeat_answer,
                     hc) != 0) {
        free(hc);
        return;
    }
    s->heartbeat_pending = true;
    s->next_heartbeat_mono_ms = now + HEARTBEAT_MS;
}

/* ------------------------------------------------------------------------ */
/* Results: the channel is results.c; these keep the callers' names. */

int qr_shards_propose_results(struct qr_shards *s,
                              Qraft__DeliveryResult **results,
                              size_t n,
                              qr_results_cb cb,
                              void *data)
{
    return qr_results_propose(&s->results, results, n, cb, data);
}

int qr_shards_submit_result(struct qr_shards *s,
                            const Qraft__DeliveryResult *r,
                            qr_results_cb cb,
                            void *data)
{
    return qr_results_submit(&s->results, r, cb, data);
}

/* ------------------------------------------------------------------------ */
/* The tick. */

static void finish_leave(struct qr_shards *s);

/* A leaving leader gives its shards to the live followers itself (it
 * drained first: nothing of them is in flight, so they move at once, not
 * through nobody), and the stop goes on once a map where it owns none is
 * applied. A leader that has served less than a lease (plus margin) moves
 * no shard (shards.h), nor one alone: then the next leader moves them once
 * this node's lease is over, as before. */
static void leader_leave_step(struct qr_shards *s, uint64_t now)
{
    if (!s->leave_as_leader || s->leave_cb == NULL) {
        return;
    }
    bool too_new = now - s->serving_since_mono_ms < LEASE_MS + LEASE_MARGIN_MS;
    struct qr_cluster_status cs;
    qr_cluster_get_status(s->cluster, &cs);
    bool others = false; /* a node maybe_assign would give shards to */
    for (size_t i = 0; i < cs.n_nodes; i++) {
        others = others || (strcmp(cs.nodes[i].role, "spare") != 0 &&
                            is_live(s, cs.nodes[i].id, now));
    }
    if (too_new || !others) {
        QR_INFO("shards",
                "leaving as leader: %s; the next leader moves this "
                "node's shards",
                too_new ? "it has not led a lease long yet"
                        : "no other node is live");
        finish_leave(s);
        return;
    }
    if (!s->assign_pending && s->have_map &&
        qr_shards_count(s, s->config->id) == 0) {
        QR_INFO("shards",
                "leaving as leader: its shards moved (epoch %" PRIu64 ")",
                s->epoch);
        finish_leave(s);
    }
}

static void on_level_applied(void *data,
                             int status,
                             const struct qr_apply_result *res)
{
    struct qr_shards *s = data;
    s->level_pending = false;
    if (status == 0 && res->status == 0) {
        QR_INFO("shards", "the cluster is now at feature level %u",
                qr_cluster_feature_level(s->cluster));
    } else {
        QR_DEBUG("shards", "raising the feature level: %s",
                 qr_strerror(status != 0 ? status : res->status));
    }
}

/* The lowest feature level the members of the configuration advertise (a
 * member that has not advertised one counts as the base level). */
static uint32_t members_level(struct qr_shards *s)
{
    struct qr_cluster_status st;
    qr_cluster_get_status(s->cluster, &st);
    uint32_t level = s->config->max_feature_level;
    for (size_t i = 0; i < st.n_nodes; i++) {
        uint32_t l = QR_FSM_BASE_FEATURE_LEVEL;
        if (st.nodes[i].id == s->config->id) {
            l = s->config->max_feature_level;
        } else {
            Qraft__NodeInfo *info = qr_shards_node_info(s, st.nodes[i].id);
            if (info != NULL && info->feature_level > l) {
                l = info->feature_level;
            }
            if (info != NULL) {
                qraft__node_info__free_unpacked(info, NULL);
            }
        }
        if (l < level) {
            level = l;
        }
    }
    return level;
}

/* Leader: raises the cluster's feature level once every member runs at a
 * higher one (see command.h). */
static void maybe_raise_level(struct qr_shards *s)
{
    if (s->level_pending) {
        return;
    }
    uint32_t level = members_level(s);
    if (level <= qr_cluster_feature_level(s->cluster)) {
        return;
    }
    Qraft__SetFeatureLevel set = QRAFT__SET_FEATURE_LEVEL__INIT;
    set.level = level;
    s->level_pending = qr_cluster_propose_one(
                           s->cluster, QRAFT__COMMAND__BODY_SET_FEATURE_LEVEL,
                           &set.base, on_level_applied, s) == 0;
}

bool qr_shards_level_settled(struct qr_shards *s)
{
    return !qr_cluster_serving(s->cluster) ||
           members_level(s) <= qr_cluster_feature_level(s->cluster);
}

static void on_tick(uv_timer_t *t)
{
    struct qr_shards *s = t->data;
    uint64_t now = qr_clock_mono_ms();
    if (s->closing) {
        return;
    }
    refresh_map(s);
    bool serving = qr_cluster_serving(s->cluster);
    if (serving != s->was_serving) {
        s->was_serving = serving;
        /* A follower's lease from before this change proves nothing now:
         * after leading, only a new heartbeat gives one. */
        s->lease_until_mono_ms = 0;
        s->n_nodes = 0; /* liveness is learned anew each term */
        s->serving_since_mono_ms = now;
        s->assign_pending = false;
        s->info_pending = false;
        s->level_pending = false;
    }
    if (serving) {
        qr_peer_set_target(&s->peer, NULL);
        Qraft__NodeInfo info;
        own_info(s, &info);
        sync_node_info(s, &info);
        maybe_raise_level(s);
        maybe_assign(s, now);
        leader_leave_step(s, now);
    } else if (!s->leaving) {
        send_heartbeat(s, now);
    } else if (s->leave_as_leader) {
        QR_INFO("shards",
                "no longer leading while leaving: the next "
                "leader moves this node's shards");
        finish_leave(s);
    }
}

int qr_shards_init(struct qr_shards *s,
                   uv_loop_t *loop,
                   const struct qr_config *cfg,
                   struct qr_cluster *cluster,
                   struct qr_store *store,
                   const char *token)
{
    memset(s, 0, sizeof *s);
    s->loop = loop;
    s->config = cfg;
    s->cluster = cluster;
    s->store = store;
    int rv = qr_peer_init(&s->peer, loop, token, NULL, s->errmsg);
    if (rv != 0) {
        return rv;
    }
    /* Calls to the leader's RPC port speak TLS when this node does. */
    struct qr_tls_files files = {cfg->tls_cert, cfg->tls_key, cfg->tls_ca};
    if (qr_tls_enabled(&files)) {
        rv = qr_peer_use_tls(&s->peer, &files, s->errmsg);
        if (rv != 0) {
            qr_peer_close(&s->peer, NULL);
            return rv;
        }
    }
    qr_peer_set_on_down(&s->peer, on_leader_down, s);
    qr_results_init(&s->results, cfg, cluster, &s->peer, on_result_refused, s);
    refresh_map(s);
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    uv_timer_start(&s->timer, on_tick, TICK_MS, TICK_MS);
    return 0;
}

int qr_shards_reload_tls(struct qr_shards *s, char *errmsg)
{
    const struct qr_config *cfg = s->config;
    struct qr_tls_files files = {cfg->tls_cert, cfg->tls_key, cfg->tls_ca};
    if (!qr_tls_enabled(&files)) {
        return 0;
    }
    return qr_peer_use_tls(&s->peer, &files, errmsg);
}

static void close_step(struct qr_shards *s)
{
    if (--s->pending_closes == 0 && s->close_cb != NULL) {
        s->close_cb(s);
    }
}

static void on_timer_closed(uv_handle_t *h)
{
    close_step(h->data);
}

static void on_peer_closed(struct qr_peer *p)
{
    struct qr_shards *s =
        (struct qr_shards *)((char *)p - offsetof(struct qr_shards, peer));
    close_step(s);
}

void qr_shards_close(struct qr_shards *s, void (*cb)(struct qr_shards *s))
{
    if (s->closing) {
        return;
    }
    s->closing = true;
    qr_results_close(&s->results);
    s->close_cb = cb;
    s->pending_closes = 2;
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, on_timer_closed);
    qr_peer_close(&s->peer, on_peer_closed);
}

static void finish_leave(struct qr_shards *s)
{
    void (*cb)(void *data) = s->leave_cb;
    s->leave_cb = NULL;
    s->leave_as_leader = false;
    if (cb != NULL) {
        cb(s->leave_data);
    }
}

static void on_leave_answer(void *data, int status, const Qraft__Response *resp)
{
    struct qr_shards *s = data;
    (void)resp;
    if (status != 0) {
        QR_DEBUG("shards", "leave: %s", qr_strerror(status));
    }
    finish_leave(s);
}

void qr_shards_leave(struct qr_shards *s, void (*cb)(void *data), void *data)
{
    s->leaving = true;
    s->lease_until_mono_ms = 0;
    s->leave_cb = cb;
    s->leave_data = data;
    if (qr_cluster_serving(s->cluster)) {
        s->leave_as_leader = true; /* the tick moves them (leader_leave_step) */
        leader_leave_step(s, qr_clock_mono_ms());
        return;
    }
    uint64_t leader_id = 0;
    char rpc[QR_ADDR_MAX] = "";
    qr_cluster_leader(s->cluster, &leader_id, NULL);
    if (leader_id != 0 && leader_id != s->config->id) {
        qr_shards_node_addrs(s, leader_id, rpc, NULL);
    }
    if (rpc[0] == '\0' || qr_peer_set_target(&s->peer, rpc) != 0) {
        finish_leave(s);
        return;
    }
    Qraft__NodeInfo info;
    own_info(s, &info);
    Qraft__HeartbeatRequest hb = QRAFT__HEARTBEAT_REQUEST__INIT;
    hb.info = &info;
    hb.applied_index = qr_cluster_fsm_applied(s->cluster);
    hb.leaving = true;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_HEARTBEAT;
    req.heartbeat = &hb;
    if (qr_peer_call(&s->peer, &req, 1000, on_leave_answer, s) != 0) {
        finish_leave(s);
    }
}
