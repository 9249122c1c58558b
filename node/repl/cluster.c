#include "repl/cluster.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/clock.h"
#include "lib/err.h"
#include "lib/logger.h"
#include "lib/random.h"

/* raft-notes: the default of 32 halves throughput at 64+ entries in flight;
 * it is not backpressure (the queue caps below are). */
#define RAFT_MAX_INFLIGHT_ENTRIES 256

struct qr_proposal {
    struct qr_packed cmd;
    qr_cluster_propose_cb cb;
    void *data;
    struct qr_proposal *next;
};

/* One raft entry: the proposals it carries, in order. */
struct qr_batch {
    struct raft_apply req;
    struct qr_cluster *cluster;
    struct qr_proposal *proposals;
    size_t n;
    size_t bytes;
    struct qr_apply_result *results; /* copied in by on_applied */
    struct qr_batch *next;
};

/* ------------------------------------------------------------------------ */
/* Proposals and batches. */

static void free_proposals(struct qr_proposal *p)
{
    while (p != NULL) {
        struct qr_proposal *next = p->next;
        free(p->cmd.data);
        free(p);
        p = next;
    }
}

/* Fires and frees a list of proposals that all end with `status`. */
static void fail_proposals(struct qr_proposal *p, int status)
{
    for (struct qr_proposal *q = p; q != NULL; q = q->next) {
        q->cb(q->data, status, NULL);
    }
    free_proposals(p);
}

static void fail_queue(struct qr_cluster *c, int status)
{
    struct qr_proposal *p = c->queue_head;
    c->queue_head = c->queue_tail = NULL;
    c->queued_bytes = 0;
    fail_proposals(p, status);
}

static void unlink_batch(struct qr_cluster *c, struct qr_batch *b)
{
    struct qr_batch **pp = &c->inflight_head;
    struct qr_batch *prev = NULL;
    while (*pp != NULL && *pp != b) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp == NULL) {
        return;
    }
    *pp = b->next;
    if (c->inflight_tail == b) {
        c->inflight_tail = prev;
    }
    c->inflight_entries--;
    c->inflight_bytes -= b->bytes;
}

static void free_batch(struct qr_batch *b)
{
    free_proposals(b->proposals);
    free(b->results);
    free(b);
}

/* raft maps onto what a caller can act on. */
static int map_apply_status(int status)
{
    switch (status) {
        case RAFT_NOTLEADER:
            return QR_ENOTLEADER;
        case RAFT_NOSPACE:
            return QR_EUNAVAIL;
        default:
            /* LEADERSHIPLOST, SHUTDOWN and the rest: the entry may commit
             * anyway (raft-notes rule 9). */
            return QR_EUNKNOWN;
    }
}

static void on_apply(struct raft_apply *req, int status, void *result)
{
    struct qr_batch *b = req->data;
    struct qr_cluster *c = b->cluster;
    (void)result; /* outcomes arrive through on_applied, keyed by index */

    unlink_batch(c, b);
    if (status == 0 && b->results == NULL) {
        /* Committed but not applied here: cannot happen while this node
         * applies every entry; answer honestly if it ever does. */
        QR_WARN("cluster", "entry %" PRIu64 " committed without results",
                (uint64_t)b->req.index);
        status = RAFT_LEADERSHIPLOST;
    }
    if (status != 0) {
        QR_WARN("cluster", "entry %" PRIu64 " of %zu commands: %s",
                (uint64_t)b->req.index, b->n, raft_strerror(status));
        fail_proposals(b->proposals, map_apply_status(status));
        b->proposals = NULL;
    } else {
        size_t i = 0;
        c->answering_index = (uint64_t)b->req.index;
        for (struct qr_proposal *p = b->proposals; p != NULL; p = p->next) {
            p->cb(p->data, 0, &b->results[i++]);
        }
        c->answering_index = 0;
    }
    free_batch(b);
}

static void on_wait_timer(uv_timer_t *t);

/* Inside apply: keep the outcomes for the batch that proposed this index,
 * if it was ours. */
static void on_applied(void *data,
                       uint64_t index,
                       const struct qr_apply_result *results,
                       size_t n)
{
    struct qr_cluster *c = data;
    if (c->waits != NULL) {
        /* Woken right after this apply returns (not inside it: its store
         * transaction is open), even if no check follows this iteration. */
        uv_timer_start(&c->wait_timer, on_wait_timer, 0, 0);
    }
    for (struct qr_batch *b = c->inflight_head; b != NULL; b = b->next) {
        if (b->req.index != index) {
            continue;
        }
        if (n != b->n) {
            QR_ERROR("cluster",
                     "entry %" PRIu64
                     ": %zu results for %zu "
                     "commands",
                     index, n, b->n);
            return;
        }
        b->results = malloc((n > 0 ? n : 1) * sizeof *results);
        if (b->results != NULL) {
            memcpy(b->results, results, n * sizeof *results);
        }
        return;
    }
}

static uint64_t stamp_time(struct qr_cluster *c)
{
    uint64_t now = qr_clock_wall_ms();
    if (now < c->fsm.last_time_ms) {
        now = c->fsm.last_time_ms;
    }
    if (now < c->stamp_floor_ms) {
        now = c->stamp_floor_ms;
    }
    return now;
}

/* Takes proposals off the queue into one entry, up to the entry size cap
 * (a single larger command still goes, alone). */
static struct qr_batch *take_batch(struct qr_cluster *c)
{
    struct qr_batch *b = calloc(1, sizeof *b);
    if (b == NULL) {
        return NULL;
    }
    b->cluster = c;
    struct qr_proposal **tail = &b->proposals;
    while (c->queue_head != NULL) {
        struct qr_proposal *p = c->queue_head;
        if (b->n > 0 && b->bytes + p->cmd.len > c->config->max_entry_bytes) {
            break;
        }
        c->queue_head = p->next;
        c->queued_bytes -= p->cmd.len;
        p->next = NULL;
        *tail = p;
        tail = &p->next;
        b->n++;
        b->bytes += p->cmd.len;
    }
    if (c->queue_head == NULL) {
        c->queue_tail = NULL;
    }
    return b;
}

static int propose_batch(struct qr_cluster *c, struct qr_batch *b)
{
    struct qr_packed *cmds = calloc(b->n, sizeof *cmds);
    if (cmds == NULL) {
        return -ENOMEM;
    }
    size_t i = 0;
    for (struct qr_proposal *p = b->proposals; p != NULL; p = p->next) {
        cmds[i++] = p->cmd;
    }
    uint64_t now = stamp_time(c);
    size_t size = qr_command_entry_size(now, cmds, b->n);
    struct raft_buffer buf = {.base = raft_malloc(size), .len = size};
    if (buf.base == NULL) {
        free(cmds);
        return -ENOMEM;
    }
    qr_command_entry_write(now, cmds, b->n, buf.base, size);
    free(cmds);

    b->req.data = b;
    int rv = raft_apply(&c->raft, &b->req, &buf, 1, on_apply);
    if (rv != 0) {
        /* raft-notes rule 3: only after these two is the buffer still ours. */
        if (rv == RAFT_NOTLEADER || rv == RAFT_NOSPACE) {
            raft_free(buf.base);
        }
        QR_WARN("cluster", "raft_apply of %zu commands: %s", b->n,
                raft_strerror(rv));
        return rv == RAFT_NOTLEADER ? QR_ENOTLEADER : QR_EUNAVAIL;
    }
    c->stamp_floor_ms = now; /* stamps never go back */
    c->n_entries_proposed++;
    c->n_commands_proposed += b->n;
    if (c->inflight_tail != NULL) {
        c->inflight_tail->next = b;
    } else {
        c->inflight_head = b;
    }
    c->inflight_tail = b;
    c->inflight_entries++;
    c->inflight_bytes += b->bytes;
    return 0;
}

static void flush(struct qr_cluster *c)
{
    while (c->queue_head != NULL && c->serving &&
           c->inflight_entries < c->config->max_inflight_entries &&
           c->inflight_bytes < c->config->max_inflight_bytes) {
        struct qr_batch *b = take_batch(c);
        if (b == NULL) {
            fail_queue(c, QR_EUNAVAIL);
            return;
        }
        int rv = propose_batch(c, b);
        if (rv != 0) {
            fail_proposals(b->proposals, rv);
            b->proposals = NULL;
            free_batch(b);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Waiting for the applied index. */

struct qr_applied_wait {
    uint64_t index;
    uint64_t deadline_ms; /* uv_now */
    qr_cluster_wait_cb cb;
    void *data;
    struct qr_applied_wait *next; /* sorted by index */
};

uint64_t qr_cluster_applied(struct qr_cluster *c)
{
    /* The fsm's index counts commands only; raft's counts barriers and
     * configuration entries too. Either may be ahead for a moment. */
    uint64_t raft_applied = raft_last_applied(&c->raft);
    return raft_applied > c->fsm.applied_index ? raft_applied
                                               : c->fsm.applied_index;
}

uint64_t qr_cluster_fsm_applied(const struct qr_cluster *c)
{
    return c->fsm.applied_index;
}

uint32_t qr_cluster_feature_level(const struct qr_cluster *c)
{
    return c->fsm.feature_level;
}

uint64_t qr_cluster_last_time_ms(const struct qr_cluster *c)
{
    return c->fsm.last_time_ms;
}

void qr_cluster_set_due_hook(struct qr_cluster *c, qr_fsm_due_cb fn, void *data)
{
    c->fsm.on_due = fn;
    c->fsm.on_due_data = data;
}

uint64_t qr_cluster_answer_index(struct qr_cluster *c)
{
    return c->answering_index != 0 ? c->answering_index : qr_cluster_applied(c);
}

static void on_wait_timer(uv_timer_t *t);

static void arm_wait_timer(struct qr_cluster *c)
{
    uint64_t earliest = UINT64_MAX;
    for (struct qr_applied_wait *w = c->waits; w != NULL; w = w->next) {
        if (w->deadline_ms < earliest) {
            earliest = w->deadline_ms;
        }
    }
    if (earliest == UINT64_MAX) {
        uv_timer_stop(&c->wait_timer);
        return;
    }
    uint64_t now = uv_now(c->loop);
    uv_timer_start(&c->wait_timer, on_wait_timer,
                   earliest > now ? earliest - now : 0, 0);
}

/* Fires (and frees) every wait that is done: reached, or past its deadline
 * (status then), or all of them with status when all is set. Waits added by
 * the callbacks are left for the next round. */
static void fire_waits(struct qr_cluster *c, bool all, int status)
{
    uint64_t applied = qr_cluster_applied(c);
    uint64_t now = uv_now(c->loop);
    struct qr_applied_wait *done = NULL, **done_tail = &done;
    struct qr_applied_wait **pp = &c->waits;
    while (*pp != NULL) {
        struct qr_applied_wait *w = *pp;
        if (all || w->index <= applied || w->deadline_ms <= now) {
            *pp = w->next;
            w->next = NULL;
            *done_tail = w;
            done_tail = &w->next;
        } else {
            pp = &w->next;
        }
    }
    while (done != NULL) {
        struct qr_applied_wait *w = done;
        done = w->next;
        w->cb(w->data, all ? status : w->index <= applied ? 0 : QR_ETIMEOUT);
        free(w);
    }
    if (!c->closing) {
        arm_wait_timer(c);
    }
}

static void on_wait_timer(uv_timer_t *t)
{
    fire_waits(t->data, false, 0);
}

int qr_cluster_wait_applied(struct qr_cluster *c,
                            uint64_t index,
                            uint64_t timeout_ms,
                            qr_cluster_wait_cb cb,
                            void *data)
{
    if (c->closing) {
        return QR_ECANCELED;
    }
    struct qr_applied_wait *w = malloc(sizeof *w);
    if (w == NULL) {
        return -ENOMEM;
    }
    w->index = index;
    w->deadline_ms = uv_now(c->loop) + timeout_ms;
    w->cb = cb;
    w->data = data;
    struct qr_applied_wait **pp = &c->waits;
    while (*pp != NULL && (*pp)->index <= index) {
        pp = &(*pp)->next;
    }
    w->next = *pp;
    *pp = w;
    arm_wait_timer(c);
    /* Already reached: the next check fires it; make sure one comes. */
    if (index <= qr_cluster_applied(c)) {
        uv_timer_start(&c->wait_timer, on_wait_timer, 0, 0);
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Read barriers. */

static void on_read_barrier(struct raft_barrier *req, int status)
{
    struct qr_cluster *c = req->data;
    qr_cluster_read_cb cb = c->read_cb;
    void *data = c->read_data;
    c->read_barrier_pending = false;
    c->read_cb = NULL;
    c->read_data = NULL;
    if (status != 0 || c->closing) {
        QR_DEBUG("cluster", "read barrier: %s", raft_strerror(status));
        cb(data, c->closing ? QR_EUNAVAIL : QR_ENOTLEADER, 0);
        return;
    }
    /* The barrier committed in this term: this node led all along since
     * the read index was taken. The read index is the commit index when
     * the barrier was asked for (the ReadIndex of the Raft thesis), not the
     * barrier's own: a follower learns that the barrier committed only
     * with the next append, while the barrier's own append already told
     * it that everything up to the read index committed. */
    (void)req;
    cb(data, 0, c->read_index);
}

int qr_cluster_read_barrier(struct qr_cluster *c,
                            qr_cluster_read_cb cb,
                            void *data)
{
    if (c->closing) {
        return QR_EUNAVAIL;
    }
    if (!c->serving) {
        return QR_ENOTLEADER;
    }
    if (c->read_barrier_pending) {
        return QR_ECONFLICT;
    }
    c->read_barrier.data = c;
    c->read_index = raft_commit_index(&c->raft);
    int rv = raft_barrier(&c->raft, &c->read_barrier, on_read_barrier);
    if (rv != 0) {
        QR_DEBUG("cluster", "read barrier: %s", raft_strerror(rv));
        return rv == RAFT_NOTLEADER ? QR_ENOTLEADER : QR_EUNAVAIL;
    }
    c->read_barrier_pending = true;
    c->read_cb = cb;
    c->read_data = data;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Telling followers the commit index. */

/* raft tells followers the commit index only with the next append (an
 * entry, or the heartbeat every heartbeat timeout). An answer that makes a
 * follower wait for its own apply of a committed entry (a forwarded write,
 * delivery results) asks for an append now: a barrier, one at a time,
 * shared by every answer meanwhile, started from a zero timer (never from
 * inside raft's callbacks; and a timer makes the loop turn again even when
 * raft fires its callbacks after this iteration's check). */
static void on_push_timer(uv_timer_t *t);

static void on_commit_push(struct raft_barrier *req, int status)
{
    struct qr_cluster *c = req->data;
    (void)status; /* nobody waits for it: a failure only means no push */
    c->push_pending = false;
    if (c->push_wanted && !c->closing) {
        uv_timer_start(&c->push_timer, on_push_timer, 0, 0);
    }
}

static void on_push_timer(uv_timer_t *t)
{
    struct qr_cluster *c = t->data;
    if (!c->push_wanted || c->push_pending || !c->serving || c->closing) {
        return;
    }
    c->push_wanted = false;
    c->push_barrier.data = c;
    if (raft_barrier(&c->raft, &c->push_barrier, on_commit_push) == 0) {
        c->push_pending = true;
    }
}

void qr_cluster_push_commit(struct qr_cluster *c)
{
    c->push_wanted = true;
    if (!c->push_pending && !c->closing) {
        uv_timer_start(&c->push_timer, on_push_timer, 0, 0);
    }
}

/* ------------------------------------------------------------------------ */
/* Leadership. */

static void on_barrier(struct raft_barrier *req, int status)
{
    struct qr_cluster *c = req->data;
    c->barrier_pending = false;
    if (c->closing) {
        return;
    }
    if (status != 0) {
        QR_WARN("cluster", "barrier: %s", raft_strerror(status));
        return; /* the next poll sees that leadership went away */
    }
    if (raft_state(&c->raft) != RAFT_LEADER) {
        return;
    }
    c->serving = true;
    QR_INFO("cluster", "serving as leader (term %llu, applied %" PRIu64 ")",
            (unsigned long long)raft_current_term(&c->raft),
            c->fsm.applied_index);
    if (c->on_leader != NULL) {
        c->on_leader(c->on_leader_data);
    }
}

/* A node taken out of the configuration stops: it would otherwise linger,
 * unable to vote or be elected. A node that has not been added yet (it
 * started with --join) is not "removed".
 *
 * A node started with --join does not judge from its own configuration at
 * all: the log it copies (or replays after a restart) may hold an earlier
 * incarnation of the same id being added and then removed (a node rebuilt
 * under its old id, docs/operations.md 8), and replaying that removal would
 * stop the new one. It learns of a removal from the leader instead (the
 * heartbeat answer's `removed`, qr_shards), which judges by the current
 * configuration. */
static void poll_membership(struct qr_cluster *c)
{
    if (c->config->join) {
        return;
    }
    bool member = false;
    const struct raft_configuration *conf = &c->raft.configuration;
    for (unsigned i = 0; i < conf->n; i++) {
        member = member || conf->servers[i].id == c->config->id;
    }
    if (member) {
        c->was_member = true;
    } else if (c->was_member && conf->n > 0) {
        qr_cluster_note_removed(c);
    }
}

/* libraft 0.22.1 records a configuration entry that a follower receives
 * as uncommitted at the index of the first entry of its batch, not at its
 * own (replicationAppend passes `index`, not `index + i`). When the entry
 * commits, raft finds the two indexes differ and never marks it committed:
 * the node refuses every membership change with RAFT_CANTCHANGE once it
 * leads, and its snapshots carry the configuration from before (raft-notes
 * rule 16).
 *
 * The repair: when an uncommitted index appears, note the log's last index,
 * which the entry is at or before; once everything up to there is applied
 * the entry is committed, whatever its true index, so record the current
 * configuration as committed. A new term starts the watch again (a new
 * leader may have truncated the log). Never while this node's own change
 * is in flight: raft tracks those itself, and steps a leader that removed
 * itself down when the change commits. */
static void repair_config_index(struct qr_cluster *c)
{
    struct raft *r = &c->raft;
    raft_index u = r->configuration_uncommitted_index;
    if (u == 0) {
        c->conf_seen_index = 0;
        return;
    }
    if (u != c->conf_seen_index || raft_current_term(r) != c->conf_seen_term) {
        c->conf_seen_index = u;
        c->conf_seen_term = raft_current_term(r);
        c->conf_seen_last = raft_last_index(r);
        return;
    }
    if (c->change != NULL || raft_last_applied(r) < c->conf_seen_last ||
        (raft_state(r) == RAFT_LEADER && r->leader_state.promotee_id != 0)) {
        return;
    }
    struct raft_configuration committed;
    raft_configuration_init(&committed);
    for (unsigned i = 0; i < r->configuration.n; i++) {
        const struct raft_server *sv = &r->configuration.servers[i];
        if (raft_configuration_add(&committed, sv->id, sv->address, sv->role) !=
            0) {
            raft_configuration_close(&committed);
            return; /* out of memory: the next check tries again */
        }
    }
    raft_configuration_close(&r->configuration_committed);
    r->configuration_committed = committed;
    r->configuration_committed_index = u;
    r->configuration_uncommitted_index = 0;
    c->conf_seen_index = 0;
    QR_INFO("cluster",
            "configuration of %u node(s) committed (recorded by hand: "
            "libraft 0.22.1 misses it when the entry is not first in its "
            "batch)",
            r->configuration.n);
}

void qr_cluster_note_removed(struct qr_cluster *c)
{
    if (c->removed) {
        return;
    }
    c->removed = true;
    QR_WARN("cluster", "this node was removed from the cluster");
    if (c->on_removed != NULL) {
        c->on_removed(c->on_removed_data);
    }
}

bool qr_cluster_removed(struct qr_cluster *c, uint64_t id)
{
    const struct raft_configuration *conf = &c->raft.configuration;
    if (!c->serving || c->raft.configuration_uncommitted_index != 0) {
        return false;
    }
    for (unsigned i = 0; i < conf->n; i++) {
        if (conf->servers[i].id == id) {
            return false;
        }
    }
    return true;
}

static void poll_leadership(struct qr_cluster *c)
{
    repair_config_index(c);
    poll_membership(c);
    bool leader = raft_state(&c->raft) == RAFT_LEADER;
    raft_id leader_id = 0;
    const char *leader_addr = NULL;
    raft_leader(&c->raft, &leader_id, &leader_addr);
    if (leader_id != 0 && leader_id != c->last_leader_id) {
        c->last_leader_id = leader_id;
        c->n_leader_changes++;
    }
    if (leader && !c->leader) {
        c->leader = true;
        c->serving = false;
        QR_INFO("cluster", "became leader (term %llu)",
                (unsigned long long)raft_current_term(&c->raft));
    } else if (!leader && c->leader) {
        c->leader = false;
        c->serving = false;
        QR_INFO("cluster", "lost leadership (now %s)",
                raft_state_name(raft_state(&c->raft)));
        /* Queued proposals never reached raft: safe to refuse. */
        fail_queue(c, QR_ENOTLEADER);
    }
    /* raft-notes rule 10: 0.22 appends its own no-op only with an
     * uncommitted tail, so a barrier is how a new leader learns it has
     * applied every earlier term's entries. */
    if (c->leader && !c->serving && !c->barrier_pending) {
        c->barrier.data = c;
        int rv = raft_barrier(&c->raft, &c->barrier, on_barrier);
        if (rv == 0) {
            c->barrier_pending = true;
        } else {
            QR_WARN("cluster", "barrier: %s", raft_strerror(rv));
        }
    }
}

static void on_check(uv_check_t *check)
{
    struct qr_cluster *c = check->data;
    if (!c->started || c->closing) {
        return;
    }
    poll_leadership(c);
    flush(c);
    /* Waits are woken here, right after the I/O that applied entries, not
     * inside apply (its store transaction is still open there). */
    if (c->waits != NULL && c->waits->index <= qr_cluster_applied(c)) {
        fire_waits(c, false, 0);
    }
}

/* ------------------------------------------------------------------------ */
/* Life cycle. */

int qr_cluster_init(struct qr_cluster *c,
                    uv_loop_t *loop,
                    const struct qr_config *cfg,
                    struct qr_store *store)
{
    int rv;
    memset(c, 0, sizeof *c);
    c->loop = loop;
    c->config = cfg;
    c->store = store;

    rv = snprintf(c->raft_dir, sizeof c->raft_dir, "%s/raft", cfg->data_dir);
    if (rv < 0 || (size_t)rv >= sizeof c->raft_dir) {
        snprintf(c->errmsg, sizeof c->errmsg, "cluster: data dir too long");
        return QR_EBADREQ;
    }
    rv = qr_fsm_init(&c->fsm, store);
    if (rv != 0) {
        snprintf(c->errmsg, sizeof c->errmsg, "cluster: fsm: %s: %s",
                 qr_strerror(rv), qr_store_errmsg(store));
        return rv;
    }
    if (c->fsm.feature_level > QR_FEATURE_LEVEL) {
        snprintf(c->errmsg, sizeof c->errmsg,
                 "cluster: the data dir is at feature level %u and this "
                 "qraftd knows only up to %u: run a newer version",
                 c->fsm.feature_level, QR_FEATURE_LEVEL);
        return QR_ECONFLICT;
    }
    c->fsm.on_applied = on_applied;
    c->fsm.on_applied_data = c;

    rv = qr_transport_init(&c->transport, loop, cfg, c->errmsg,
                           sizeof c->errmsg);
    if (rv != 0) {
        goto err_after_fsm;
    }
    rv = raft_uv_init(&c->io, loop, c->raft_dir,
                      qr_transport_raft(&c->transport));
    if (rv != 0) {
        snprintf(c->errmsg, sizeof c->errmsg, "cluster: raft io: %s",
                 c->io.errmsg);
        goto err_after_transport;
    }
    /* raft-notes rule 6: with auto-recovery on, a follower that dropped a
     * corrupt segment silently stops replicating. */
    raft_uv_set_auto_recovery(&c->io, false);
    raft_uv_set_connect_retry_delay(&c->io, cfg->connect_retry_ms);
    qr_cluster_io_watch(c);
    rv = qr_snapsend_init(&c->snapsend, loop, &c->io);
    if (rv != 0) {
        snprintf(c->errmsg, sizeof c->errmsg, "cluster: snapshot sends: %s",
                 uv_strerror(rv));
        raft_uv_close(&c->io);
        goto err_after_transport;
    }

    rv = raft_init(&c->raft, &c->io, &c->fsm.raft_fsm, cfg->id, cfg->raft_addr);
    if (rv != 0) {
        snprintf(c->errmsg, sizeof c->errmsg, "cluster: raft: %s",
                 raft_errmsg(&c->raft));
        goto err_after_io;
    }
    c->fsm.raft = &c->raft;
    raft_set_election_timeout(&c->raft, cfg->election_timeout_ms);
    raft_set_heartbeat_timeout(&c->raft, cfg->heartbeat_timeout_ms);
    raft_set_pre_vote(&c->raft, true);
    raft_set_max_inflight_entries(&c->raft, RAFT_MAX_INFLIGHT_ENTRIES);
    qr_fsm_pace_snapshots(&c->fsm, cfg->snapshot_threshold,
                          cfg->snapshot_log_share);
    raft_set_snapshot_trailing(&c->raft, cfg->snapshot_trailing);

    uint32_t seed = 0;
    qr_random_bytes(&seed, sizeof seed);
    raft_seed(&c->raft, seed);
    qr_random_bytes(&c->id_seq, sizeof c->id_seq);

    uv_check_init(loop, &c->check);
    c->check.data = c;
    uv_timer_init(loop, &c->wait_timer);
    c->wait_timer.data = c;
    uv_timer_init(loop, &c->push_timer);
    c->push_timer.data = c;
    return 0;

err_after_io:
    qr_snapsend_close(&c->snapsend, NULL);
    raft_uv_close(&c->io);
err_after_transport:
    qr_transport_free(&c->transport);
err_after_fsm:
    qr_fsm_close(&c->fsm);
    return rv == 0 ? QR_ERAFT : (rv < 0 ? rv : QR_ERAFT);
}

int qr_cluster_reload_tls(struct qr_cluster *c, char *err, size_t err_len)
{
    return qr_transport_reload_tls(&c->transport, c->config, err, err_len);
}

uint64_t qr_cluster_tls_refused(const struct qr_cluster *c)
{
    return qr_transport_refused(&c->transport);
}

int qr_cluster_start(struct qr_cluster *c)
{
    const struct qr_config *cfg = c->config;
    struct raft_configuration conf;
    int rv;

    raft_configuration_init(&conf);
    if (cfg->join) {
        rv = 0; /* no bootstrap: wait to be added by the leader */
    } else if (cfg->n_peers == 0) {
        rv = raft_configuration_add(&conf, cfg->id, cfg->raft_addr, RAFT_VOTER);
    } else {
        rv = 0;
        for (size_t i = 0; i < cfg->n_peers && rv == 0; i++) {
            rv = raft_configuration_add(&conf, cfg->peers[i].id,
                                        cfg->peers[i].raft_addr, RAFT_VOTER);
        }
    }
    if (rv == 0 && !cfg->join) {
        rv = raft_bootstrap(&c->raft, &conf);
        if (rv == 0) {
            QR_INFO("cluster", "bootstrapped a new cluster of %u voter(s)",
                    conf.n);
        } else if (rv == RAFT_CANTBOOTSTRAP) {
            rv = 0; /* the data dir has a cluster already */
        }
    }
    raft_configuration_close(&conf);
    if (rv != 0) {
        snprintf(c->errmsg, sizeof c->errmsg, "cluster: bootstrap: %s",
                 raft_strerror(rv));
        return QR_ERAFT;
    }

    rv = raft_start(&c->raft);
    qr_fsm_started(&c->fsm);
    if (rv != 0) {
        const char *why = raft_errmsg(&c->raft);
        if (qr_transport_listen_error(&c->transport) != NULL) {
            why = qr_transport_listen_error(&c->transport);
        } else if (why == NULL || why[0] == '\0') {
            why = raft_strerror(rv);
        }
        snprintf(c->errmsg, sizeof c->errmsg, "cluster: start: %s", why);
        return QR_ERAFT;
    }
    c->started = true;
    uv_check_start(&c->check, on_check);
    QR_INFO("cluster",
            "node %" PRIu64 " started on %s (applied %" PRIu64
            ", last index %llu)",
            cfg->id, cfg->raft_addr, c->fsm.applied_index,
            (unsigned long long)raft_last_index(&c->raft));
    return 0;
}

static void close_step_done(struct qr_cluster *c)
{
    if (--c->pending_closes > 0) {
        return;
    }
    qr_fsm_close(&c->fsm);
    if (c->close_cb != NULL) {
        c->close_cb(c);
    }
}

/* The check and the two timers: each one close step. */
static void on_handle_close(uv_handle_t *h)
{
    close_step_done(h->data);
}

static void on_snapsend_close(uv_handle_t *h)
{
    close_step_done(
        (struct qr_cluster *)((char *)h -
                              offsetof(struct qr_cluster, snapsend.timer)));
}

static void on_raft_close(struct raft *r)
{
    struct qr_cluster *c = r->data;
    raft_uv_close(&c->io);
    qr_transport_free(&c->transport);
    close_step_done(c);
}

void qr_cluster_close(struct qr_cluster *c, qr_cluster_close_cb cb)
{
    if (c->closing) {
        return;
    }
    c->closing = true;
    c->close_cb = cb;
    c->serving = false;
    fail_queue(c, QR_EUNAVAIL);
    fire_waits(c, true, QR_ECANCELED);
    c->pending_closes = 5;
    uv_check_stop(&c->check);
    uv_close((uv_handle_t *)&c->check, on_handle_close);
    uv_close((uv_handle_t *)&c->wait_timer, on_handle_close);
    uv_close((uv_handle_t *)&c->push_timer, on_handle_close);
    /* Before raft_close: stand-ins still owed go to raft while it runs. */
    qr_snapsend_close(&c->snapsend, on_snapsend_close);
    /* raft fails the entries in flight (their callbacks answer "outcome
     * unknown") and closes its I/O; only then may the io be freed. */
    c->raft.data = c;
    raft_close(&c->raft, on_raft_close);
}

int qr_cluster_propose(struct qr_cluster *c,
                       struct qr_packed *cmd,
                       qr_cluster_propose_cb cb,
                       void *data)
{
    if (c->closing) {
        return QR_EUNAVAIL;
    }
    if (!c->leader) {
        return QR_ENOTLEADER;
    }
    if (c->queued_bytes + cmd->len > c->config->max_queued_bytes) {
        return QR_EUNAVAIL;
    }
    struct qr_proposal *p = malloc(sizeof *p);
    if (p == NULL) {
        return -ENOMEM;
    }
    p->cmd = *cmd;
    p->cb = cb;
    p->data = data;
    p->next = NULL;
    if (c->queue_tail != NULL) {
        c->queue_tail->next = p;
    } else {
        c->queue_head = p;
    }
    c->queue_tail = p;
    c->queued_bytes += cmd->len;
    cmd->data = NULL;
    cmd->len = 0;
    return 0;
}

int qr_cluster_check_level(const struct qr_cluster *c,
                           const Qraft__Command *cmd,
                           char *err,
                           size_t err_len)
{
    uint32_t need = qr_command_level(cmd);
    if (need <= c->fsm.feature_level) {
        return 0;
    }
    snprintf(err, err_len,
             "this needs cluster feature level %u and the cluster is at %u: "
             "it rises once every node runs a version that has it (see "
             "`qraft status`)",
             need, c->fsm.feature_level);
    return QR_EUNAVAIL;
}

int qr_cluster_propose_one(struct qr_cluster *c,
                           Qraft__Command__BodyCase body_case,
                           const ProtobufCMessage *body,
                           qr_cluster_propose_cb cb,
                           void *data)
{
    char why[256];
    Qraft__Command cmd;
    qr_command_init_one(&cmd, body_case, body);
    if (qr_cluster_check_level(c, &cmd, why, sizeof why) != 0) {
        QR_WARN("cluster", "not proposed: %s", why);
        return QR_EUNAVAIL;
    }
    struct qr_packed packed;
    int rv = qr_command_pack(&cmd, &packed);
    if (rv != 0) {
        return rv;
    }
    rv = qr_cluster_propose(c, &packed, cb, data);
    if (rv != 0) {
        free(packed.data);
    }
    return rv;
}

bool qr_cluster_serving(const struct qr_cluster *c)
{
    return c->serving;
}

void qr_cluster_leader(struct qr_cluster *c,
                       uint64_t *id,
                       const char **raft_addr)
{
    raft_id leader_id = 0;
    const char *address = NULL;
    raft_leader(&c->raft, &leader_id, &address);
    *id = leader_id;
    if (raft_addr != NULL) {
        *raft_addr = address;
    }
}

uint64_t qr_cluster_now_ms(struct qr_cluster *c)
{
    return stamp_time(c);
}

uint64_t qr_cluster_bound_ms(struct qr_cluster *c)
{
    uint64_t now = stamp_time(c);
    c->stamp_floor_ms = now + 1;
    return now;
}

void qr_cluster_new_message_id(struct qr_cluster *c, char out[QR_ID_BYTES])
{
    uint64_t ms = stamp_time(c);
    if (ms < c->last_id_ms) {
        ms = c->last_id_ms;
    }
    c->last_id_ms = ms;
    qr_command_message_id(out, ms, c->config->id, c->id_seq++);
}

bool qr_cluster_ready(struct qr_cluster *c, char *why, size_t why_len)
{
    if (!c->started || c->closing) {
        snprintf(why, why_len, "not started");
        return false;
    }
    uint64_t leader_id = 0;
    qr_cluster_leader(c, &leader_id, NULL);
    if (leader_id == 0) {
        snprintf(why, why_len, "no leader");
        return false;
    }
    if (c->leader && !c->serving) {
        snprintf(why, why_len, "leader catching up");
        return false;
    }
    if (raft_last_applied(&c->raft) < raft_commit_index(&c->raft)) {
        snprintf(why, why_len, "applying (%llu of %llu)",
                 (unsigned long long)raft_last_applied(&c->raft),
                 (unsigned long long)raft_commit_index(&c->raft));
        return false;
    }
    return true;
}

void qr_cluster_get_status(struct qr_cluster *c, struct qr_cluster_status *out)
{
    memset(out, 0, sizeof *out);
    enum raft_state state = raft_state(&c->raft);
    switch (state) {
        case RAFT_LEADER:
            out->state = "leader";
            break;
        case RAFT_FOLLOWER:
            out->state = "follower";
            break;
        case RAFT_CANDIDATE:
            out->state = "candidate";
            break;
        default:
            out->state = "unavailable";
            break;
    }
    qr_cluster_leader(c, &out->leader_id, NULL);
    out->term = raft_current_term(&c->raft);
    out->commit_index = raft_commit_index(&c->raft);
    out->applied_index = raft_last_applied(&c->raft);
    out->last_index = raft_last_index(&c->raft);
    out->entries_proposed = c->n_entries_proposed;
    out->commands_proposed = c->n_commands_proposed;
    out->snapshots = c->fsm.n_snapshots;
    out->snapshot_bytes = c->fsm.last_snapshot_bytes;
    out->snapshot_ms = c->fsm.last_snapshot_ms;
    out->leader_changes = c->n_leader_changes;
    const struct raft_configuration *conf = &c->raft.configuration;
    for (unsigned i = 0; i < conf->n && i < QR_CLUSTER_MAX_NODES; i++) {
        struct qr_cluster_node *n = &out->nodes[out->n_nodes++];
        n->id = conf->servers[i].id;
        n->role = conf->servers[i].role == RAFT_VOTER     ? "voter"
                  : conf->servers[i].role == RAFT_STANDBY ? "standby"
                                                          : "spare";
        snprintf(n->raft_addr, sizeof n->raft_addr, "%s",
                 conf->servers[i].address);
    }
}
