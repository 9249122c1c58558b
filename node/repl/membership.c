/* Membership changes of the raft cluster, on the serving leader: add (a
 * spare, then a standby that catches up, then a voter), remove, and
 * leadership transfer. One change at a time: the one in progress is
 * cluster->change, set while raft holds its request and cleared just
 * before its callback fires. An add is resumable: one cut short (leader
 * lost, node not caught up in time) leaves the node a spare or a standby
 * at its address, and the same add again goes on from that role; an add
 * of a voter at its own address changes nothing. The API is in
 * repl/cluster.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/clock.h"
#include "lib/err.h"
#include "lib/logger.h"
#include "repl/cluster.h"

struct qr_membership {
    struct qr_cluster *cluster;
    uv_timer_t wait; /* transfer: polls for the new leader */
    uint64_t deadline_mono_ms;
    union {
        struct raft_change change;
        struct raft_transfer transfer;
    } req;
    uint64_t id;
    int step; /* add: 0 = adding, 1 = standby, 2 = voter */
    bool adding;
    qr_cluster_change_cb cb;
    void *data;
};

static void finish_change(struct qr_membership *m, int status, const char *why)
{
    struct qr_cluster *c = m->cluster;
    c->change = NULL;
    m->cb(m->data, status, why);
    free(m);
}

/* Why raft refuses a membership change now, in the log. */
static void log_cantchange(struct qr_cluster *c, const char *what)
{
    QR_INFO("cluster",
            "%s refused: a configuration change is pending (uncommitted "
            "configuration at index %llu, committed at %llu; commit index "
            "%llu, applied %llu, promoting node %llu)",
            what, (unsigned long long)c->raft.configuration_uncommitted_index,
            (unsigned long long)c->raft.configuration_committed_index,
            (unsigned long long)c->raft.commit_index,
            (unsigned long long)c->raft.last_applied,
            (unsigned long long)c->raft.leader_state.promotee_id);
}

static int change_status(int rv)
{
    switch (rv) {
        case RAFT_NOTLEADER:
        case RAFT_LEADERSHIPLOST:
            return QR_ENOTLEADER;
        case RAFT_CANTCHANGE:
            return QR_ECONFLICT;
        case RAFT_DUPLICATEID:
        case RAFT_DUPLICATEADDRESS:
        case RAFT_BADID:
        case RAFT_NOTFOUND:
        case RAFT_BADROLE:
            return QR_EBADREQ;
        default:
            return QR_EUNKNOWN;
    }
}

static void on_change(struct raft_change *req, int status);

static int add_step(struct qr_membership *m)
{
    struct qr_cluster *c = m->cluster;
    m->req.change.data = m;
    /* A spare first, then a standby (it replicates and catches up), then
     * a voter: raft promotes only once the node has caught up. */
    return raft_assign(&c->raft, &m->req.change, m->id,
                       m->step == 1 ? RAFT_STANDBY : RAFT_VOTER, on_change);
}

static void on_change(struct raft_change *req, int status)
{
    struct qr_membership *m = req->data;
    if (status == RAFT_NOCONNECTION && m->adding && m->step == 2) {
        /* Raft gave the promotion up: the node is a standby, not a
         * voter, a known outcome. */
        char why[256];
        snprintf(why, sizeof why,
                 "node %" PRIu64
                 " did not catch up with the leader's log in time and is "
                 "left a standby (%s): check that it runs and is reachable, "
                 "then run the same `qraft cluster add` again",
                 m->id, raft_strerror(status));
        finish_change(m, QR_ECONFLICT, why);
        return;
    }
    if (status != 0) {
        finish_change(m, change_status(status), raft_strerror(status));
        return;
    }
    if (m->step == 0 || m->step == 1) {
        m->step++;
        int rv = add_step(m);
        if (rv != 0) {
            finish_change(m, change_status(rv), raft_strerror(rv));
        }
        return;
    }
    finish_change(m, 0, "");
}

static struct qr_membership *new_change(struct qr_cluster *c,
                                        uint64_t id,
                                        qr_cluster_change_cb cb,
                                        void *data,
                                        int *rv)
{
    if (c->closing || !c->serving) {
        *rv = QR_ENOTLEADER;
        return NULL;
    }
    if (c->change != NULL) {
        *rv = QR_ECONFLICT;
        return NULL;
    }
    struct qr_membership *m = calloc(1, sizeof *m);
    if (m == NULL) {
        *rv = -ENOMEM;
        return NULL;
    }
    m->cluster = c;
    m->id = id;
    m->cb = cb;
    m->data = data;
    *rv = 0;
    return m;
}

/* The end of starting a change: raft's answer rv to the request m makes.
 * On 0, m is the cluster's change in progress (its callback will fire);
 * otherwise m is freed and rv mapped to a QR_E* code. */
static int started(struct qr_membership *m, int rv)
{
    if (rv != 0) {
        free(m);
        return change_status(rv);
    }
    m->cluster->change = m;
    return 0;
}

static const char *role_name(int role)
{
    return role == RAFT_VOTER     ? "voter"
           : role == RAFT_STANDBY ? "standby"
                                  : "spare";
}

static const struct raft_server *find_server(const struct qr_cluster *c,
                                             uint64_t id)
{
    const struct raft_configuration *conf = &c->raft.configuration;
    for (unsigned i = 0; i < conf->n; i++) {
        if (conf->servers[i].id == id) {
            return &conf->servers[i];
        }
    }
    return NULL;
}

enum qr_add_state qr_cluster_add_state(const struct qr_cluster *c,
                                       uint64_t id,
                                       const char *raft_addr,
                                       char *why,
                                       size_t why_len)
{
    const struct raft_configuration *conf = &c->raft.configuration;
    why[0] = '\0';
    for (unsigned i = 0; i < conf->n; i++) {
        const struct raft_server *sv = &conf->servers[i];
        bool same_id = sv->id == id;
        bool same_addr = strcmp(sv->address, raft_addr) == 0;
        if (same_id && same_addr) {
            return sv->role == RAFT_VOTER ? QR_ADD_DONE : QR_ADD_RESUME;
        }
        if (same_id || same_addr) {
            snprintf(why, why_len,
                     "%s is taken: node %" PRIu64
                     " is a %s at raft address %s; if it is gone, take it "
                     "out first with `qraft cluster remove %" PRIu64
                     "`; nothing was changed",
                     same_id ? "the node id" : "the raft address",
                     (uint64_t)sv->id, role_name(sv->role), sv->address,
                     (uint64_t)sv->id);
            return QR_ADD_CONFLICT;
        }
    }
    return QR_ADD_NEW;
}

static int start_add(struct qr_membership *m, const char *raft_addr)
{
    struct qr_cluster *c = m->cluster;
    uint64_t id = m->id;
    int rv;
    m->adding = true;
    m->req.change.data = m;
    const struct raft_server *sv = find_server(c, id); /* a resumed add? */
    if (sv != NULL && strcmp(sv->address, raft_addr) == 0 &&
        sv->role != RAFT_VOTER) {
        int role = sv->role; /* sv goes once raft changes the config */
        m->step = role == RAFT_SPARE ? 1 : 2;
        rv = add_step(m);
        if (rv == RAFT_CANTCHANGE) {
            log_cantchange(c, "resuming an add");
        }
        rv = started(m, rv);
        if (rv == 0) {
            QR_INFO("cluster",
                    "resuming the add of node %" PRIu64
                    " at %s: it is a %s, making it a %s",
                    id, raft_addr, role_name(role),
                    role == RAFT_SPARE ? "standby" : "voter");
        }
        return rv;
    }
    rv = started(m,
                 raft_add(&c->raft, &m->req.change, id, raft_addr, on_change));
    if (rv != 0) {
        return rv;
    }
    QR_INFO("cluster", "adding node %" PRIu64 " at %s", id, raft_addr);
    return 0;
}

static int start_remove(struct qr_membership *m)
{
    struct qr_cluster *c = m->cluster;
    uint64_t id = m->id;
    m->step = 2; /* done after this one change */
    m->req.change.data = m;
    int rv = raft_remove(&c->raft, &m->req.change, id, on_change);
    if (rv == RAFT_CANTCHANGE) {
        log_cantchange(c, "removing a node");
    }
    rv = started(m, rv);
    if (rv != 0) {
        return rv;
    }
    QR_INFO("cluster", "removing node %" PRIu64, id);
    return 0;
}

bool qr_cluster_is_member(const struct qr_cluster *c)
{
    if (c->removed) {
        return false;
    }
    const struct raft_configuration *conf = &c->raft.configuration;
    for (unsigned i = 0; i < conf->n; i++) {
        if (conf->servers[i].id == c->config->id) {
            return true;
        }
    }
    return false;
}

static void on_transfer_wait_closed(uv_handle_t *h)
{
    struct qr_membership *m = h->data;
    uint64_t leader = 0;
    qr_cluster_leader(m->cluster, &leader, NULL);
    if (leader != m->cluster->config->id && leader != 0 &&
        (m->id == 0 || leader == m->id)) {
        finish_change(m, 0, "");
    } else {
        finish_change(m, QR_EUNKNOWN,
                      "leadership did not move within the election timeout");
    }
}

/* The old leader steps down before it hears from the new one: wait until
 * it names a leader (or a deadline), then tell. */
static void on_transfer_poll(uv_timer_t *t)
{
    struct qr_membership *m = t->data;
    uint64_t leader = 0;
    qr_cluster_leader(m->cluster, &leader, NULL);
    if ((leader != 0 && leader != m->cluster->config->id) ||
        m->cluster->closing || qr_clock_mono_ms() >= m->deadline_mono_ms) {
        uv_timer_stop(t);
        uv_close((uv_handle_t *)t, on_transfer_wait_closed);
    }
}

static void on_transfer(struct raft_transfer *req)
{
    struct qr_membership *m = req->data;
    struct qr_cluster *c = m->cluster;
    m->deadline_mono_ms =
        qr_clock_mono_ms() + 2u * c->config->election_timeout_ms;
    uv_timer_init(c->loop, &m->wait);
    m->wait.data = m;
    uv_timer_start(&m->wait, on_transfer_poll, 0, 20);
}

static int start_transfer(struct qr_membership *m)
{
    struct qr_cluster *c = m->cluster;
    uint64_t id = m->id;
    m->req.transfer.data = m;
    int rv =
        started(m, raft_transfer(&c->raft, &m->req.transfer, id, on_transfer));
    if (rv != 0) {
        return rv;
    }
    QR_INFO("cluster", "transferring leadership to %s",
            id == 0 ? "the best voter" : "a chosen node");
    return 0;
}

int qr_cluster_change_membership(struct qr_cluster *c,
                                 const struct qr_membership_change *change,
                                 qr_cluster_change_cb cb,
                                 void *data)
{
    int rv;
    struct qr_membership *m = new_change(c, change->id, cb, data, &rv);
    if (m == NULL) {
        return rv;
    }
    switch (change->kind) {
        case QR_MEMBERSHIP_ADD:
            return start_add(m, change->raft_addr);
        case QR_MEMBERSHIP_REMOVE:
            return start_remove(m);
        case QR_MEMBERSHIP_TRANSFER:
            return start_transfer(m);
    }
    free(m);
    return QR_EBADREQ;
}
