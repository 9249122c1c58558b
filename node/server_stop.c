/* The stop sequence (docs/architecture.md, "Stopping"): qr_server_stop
 * drains the worker (nothing new starts; running deliveries finish and
 * their results commit, at most --drain-timeout-ms), gives the shards up,
 * hands leadership off when this node leads, then closes the modules in
 * the reverse order of their opening, each from the previous one's close
 * callback: HTTP, RPC, ops, the worker, the shards, raft, and the
 * server's own handles last.
 *
 * Invariants: the stop runs once (later calls are ignored); a deadline
 * (stop_deadline) bounds the drain and the hand-off, so a node whose
 * cluster is gone still stops; the loop ends only once every handle is
 * closed. */
#include <inttypes.h>
#include <stddef.h>
#include <string.h>

#include "lib/logger.h"
#include "server_int.h"

/* The server a module's close callback is about: p (a variable) points at
 * the module's field. */
#define SERVER_OF(p, field) \
    ((struct qr_server *)((char *)p - offsetof(struct qr_server, field)))

/* Stop ladder: HTTP, then RPC, then raft; handles of the server last. */
void server_on_handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void on_cluster_closed(struct qr_cluster *c)
{
    struct qr_server *s = SERVER_OF(c, cluster);
    qr_trace_close(s->trace); /* nothing makes spans any more */
    s->trace = NULL;
    uv_close((uv_handle_t *)&s->tick, server_on_handle_closed);
    qr_loopwatch_close(&s->loopwatch, server_on_handle_closed);
    qr_scheduler_close(&s->scheduler);
    uv_close((uv_handle_t *)&s->stop_deadline, server_on_handle_closed);
    uv_close((uv_handle_t *)&s->sigterm, server_on_handle_closed);
    uv_close((uv_handle_t *)&s->sigint, server_on_handle_closed);
    uv_close((uv_handle_t *)&s->sighup, server_on_handle_closed);
}

static void on_shards_closed(struct qr_shards *sh)
{
    struct qr_server *s = SERVER_OF(sh, shards);
    qr_cluster_close(&s->cluster, on_cluster_closed);
}

static void on_worker_closed(struct qr_worker *w)
{
    struct qr_server *s = SERVER_OF(w, worker);
    qr_shards_close(&s->shards, on_shards_closed);
}

static void on_ops_closed(struct qr_ops *ops)
{
    struct qr_server *s = SERVER_OF(ops, ops);
    qr_worker_close(&s->worker, on_worker_closed);
}

static void on_rpc_closed(struct qr_rpc *rpc)
{
    struct qr_server *s = SERVER_OF(rpc, rpc);
    qr_ops_close(&s->ops, on_ops_closed);
}

static void on_http_closed(struct qr_http *h)
{
    struct qr_server *s = SERVER_OF(h, http);
    qr_rpc_close(&s->rpc, on_rpc_closed);
}

/* How long a stop may spend handing leadership off and releasing shards
 * before it closes anyway (e.g. the whole cluster stopping at once: a leader
 * that loses its quorum never hears back about its transfer). */
#define STOP_HANDOFF_MS 3000

static void close_modules(struct qr_server *s)
{
    if (s->modules_closing) {
        return;
    }
    s->modules_closing = true;
    uv_timer_stop(&s->stop_deadline);
    qr_http_close(&s->http, on_http_closed);
}

static void on_stop_deadline(uv_timer_t *t)
{
    struct qr_server *s = t->data;
    QR_WARN("server",
            "the drain and hand-off did not finish in time; stopping");
    close_modules(s);
}

static void on_handed_off(void *data, int status, const char *why)
{
    struct qr_server *s = data;
    if (status == 0) {
        QR_INFO("server", "leadership handed off");
    } else {
        QR_WARN("server", "leadership hand-off: %s; stopping anyway", why);
    }
    close_modules(s);
}

/* The shards are given up (a follower told the leader, a leader moved them
 * itself): a leader now hands leadership to the most up-to-date voter (no
 * election timeout to wait out), then the modules close. */
static void on_left(void *data)
{
    struct qr_server *s = data;
    struct qr_cluster_status cs;
    qr_cluster_get_status(&s->cluster, &cs);
    size_t voters = 0;
    for (size_t i = 0; i < cs.n_nodes; i++) {
        voters += strcmp(cs.nodes[i].role, "voter") == 0;
    }
    /* id 0: to the most up-to-date voter */
    struct qr_membership_change handoff = {.kind = QR_MEMBERSHIP_TRANSFER};
    if (qr_cluster_serving(&s->cluster) && voters > 1 &&
        qr_cluster_change_membership(&s->cluster, &handoff, on_handed_off, s) ==
            0) {
        QR_INFO("server", "handing leadership off before stopping");
        return;
    }
    close_modules(s);
}

/* The deliveries that were running have finished and their results are
 * committed (or the drain's deadline cancelled them): the shards may move
 * now, at once, with nothing of them in flight here. */
static void on_drained(void *data)
{
    struct qr_server *s = data;
    uv_timer_start(&s->stop_deadline, on_stop_deadline, STOP_HANDOFF_MS, 0);
    qr_shards_leave(&s->shards, on_left, s);
}

/* A clean stop, for rolling restarts (docs/architecture.md, "Stopping"):
 * the node starts no delivery, lets those running finish and waits until
 * their results are committed (at most --drain-timeout-ms, then cancels
 * the rest), gives its shards up (a follower tells the leader, which moves
 * them at once; a leader moves them itself), hands leadership off if it
 * leads, then closes the modules. */
void qr_server_stop(struct qr_server *s, int exit_code)
{
    if (s->stopping) {
        return;
    }
    s->stopping = true;
    s->exit_code = exit_code;
    uv_timer_stop(&s->tick);
    /* A backstop: the drain has its own deadline, then the hand-off its. */
    uv_timer_start(&s->stop_deadline, on_stop_deadline,
                   (uint64_t)s->config->drain_timeout_ms + 2 * STOP_HANDOFF_MS,
                   0);
    qr_shards_drain(&s->shards);
    qr_worker_drain(&s->worker, s->config->drain_timeout_ms, on_drained, s);
}
