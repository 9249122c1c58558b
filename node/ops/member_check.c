/* Before the leader adds a node it checks the node, so that a mistake
 * fails with a reason and changes nothing, instead of leaving a spare or a
 * standby behind that never catches up or never delivers: the node must
 * answer a membership probe at its RPC address with this cluster's peer
 * token, be the node id asked for and listen for raft at the address
 * given, apply the cluster's feature level, and belong to no other
 * cluster; then its raft address is dialled.
 *
 * Steps, one after another on the loop: probe (a peer call), close the
 * peer, dial the raft address (with a deadline), close the socket and the
 * timer, answer. */
#include "ops/ops_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/addr.h"
#include "lib/logger.h"
#include "lib/peer.h"
#include "lib/tls_ctx.h"
#include "repl/cluster.h"

/* The probe is tried again while no connection could be made (a node
 * started a moment ago may not listen yet), until this deadline. */
#define PROBE_TIMEOUT_MS 5000
#define PROBE_CONNECT_TIMEOUT_MS 2000
#define PROBE_RETRY_MS 100
#define DIAL_TIMEOUT_MS 2000

struct member_check {
    struct qr_ops *ops;
    uint64_t id;
    char raft_addr[QR_ADDR_MAX];
    char rpc_addr[QR_ADDR_MAX];
    struct qr_peer peer;
    uint64_t probe_deadline_ms; /* uv_now */
    uv_timer_t timer;           /* the next step, then the dial's deadline */
    uv_tcp_t tcp;
    uv_connect_t connect;
    bool dialling;
    unsigned pending_closes;
    int status; /* the outcome so far: 0, or a QR_E* with why */
    char why[QR_ERRMSG_BYTES];
    qr_member_check_cb cb;
    void *data;
};

static void check_fail(struct member_check *m, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void check_fail(struct member_check *m, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->why, sizeof m->why, fmt, ap);
    va_end(ap);
    m->status = status;
}

/* The last handle is closed: answer and free. */
static void finish(struct member_check *m)
{
    if (m->status == 0) {
        QR_INFO("cluster", "node %" PRIu64 " checked: RPC %s, raft %s", m->id,
                m->rpc_addr, m->raft_addr);
    } else {
        QR_WARN("cluster", "not adding node %" PRIu64 ": %s", m->id, m->why);
    }
    if (m->cb != NULL) { /* NULL: the start failed and said so */
        m->cb(m->data, m->status, m->why);
    }
    free(m);
}

static void on_closed(uv_handle_t *h)
{
    struct member_check *m = h->data;
    if (--m->pending_closes == 0) {
        finish(m);
    }
}

static void end_dial(struct member_check *m)
{
    if (!m->dialling) {
        return;
    }
    m->dialling = false;
    uv_timer_stop(&m->timer);
    m->pending_closes = 2;
    uv_close((uv_handle_t *)&m->tcp, on_closed);
    uv_close((uv_handle_t *)&m->timer, on_closed);
}

static void on_dialled(uv_connect_t *req, int status)
{
    struct member_check *m = req->data;
    if (status != 0 && m->status == 0) {
        check_fail(m, QR_ECONFLICT,
                   "node %" PRIu64
                   " answers at %s but its raft address %s cannot be reached "
                   "from the leader (%s); nothing was changed",
                   m->id, m->rpc_addr, m->raft_addr, uv_strerror(status));
    }
    end_dial(m);
}

static void on_dial_deadline(uv_timer_t *t)
{
    struct member_check *m = t->data;
    check_fail(m, QR_ECONFLICT,
               "node %" PRIu64
               " answers at %s but its raft address %s does not accept a "
               "connection from the leader within %d ms; nothing was changed",
               m->id, m->rpc_addr, m->raft_addr, DIAL_TIMEOUT_MS);
    end_dial(m); /* the connect callback fires with UV_ECANCELED */
}

/* The probe passed: the raft address must take a connection too (what
 * raft will need). Connecting and closing at once is harmless to raft's
 * listener: it drops a connection that never sends its handshake. */
static void dial(struct member_check *m)
{
    struct sockaddr_in addr;
    int rv = qr_addr_parse_ipv4(m->raft_addr, &addr);
    if (rv == 0) {
        rv = uv_tcp_init(m->ops->loop, &m->tcp);
    }
    if (rv != 0) {
        check_fail(m, QR_ECONFLICT, "cannot dial %s: %s", m->raft_addr,
                   rv < 0 && rv > -1000 ? uv_strerror(rv) : qr_strerror(rv));
        m->pending_closes = 1;
        uv_close((uv_handle_t *)&m->timer, on_closed);
        return;
    }
    m->tcp.data = m;
    m->connect.data = m;
    m->dialling = true;
    rv = uv_tcp_connect(&m->connect, &m->tcp, (struct sockaddr *)&addr,
                        on_dialled);
    if (rv != 0) {
        check_fail(m, QR_ECONFLICT, "cannot dial %s: %s", m->raft_addr,
                   uv_strerror(rv));
        end_dial(m);
        return;
    }
    uv_timer_start(&m->timer, on_dial_deadline, DIAL_TIMEOUT_MS, 0);
}

static void on_peer_closed(struct qr_peer *p)
{
    struct member_check *m =
        (struct member_check *)((char *)p -
                                offsetof(struct member_check, peer));
    if (m->status == 0) {
        dial(m);
        return;
    }
    m->pending_closes = 1;
    uv_close((uv_handle_t *)&m->timer, on_closed);
}

/* Not from inside the peer's own callback: the peer is closed a loop turn
 * after it answered. */
static void on_close_peer(uv_timer_t *t)
{
    struct member_check *m = t->data;
    qr_peer_close(&m->peer, on_peer_closed);
}

/* Is the node in the leader's own configuration (a retried add)? */
static bool in_configuration(struct qr_cluster *c, uint64_t id)
{
    struct qr_cluster_status cs;
    qr_cluster_get_status(c, &cs);
    for (size_t i = 0; i < cs.n_nodes; i++) {
        if (cs.nodes[i].id == id) {
            return true;
        }
    }
    return false;
}

static void judge(struct member_check *m,
                  int status,
                  const Qraft__Response *resp)
{
    if (status != 0) {
        check_fail(m, QR_ECONFLICT,
                   "cannot reach node %" PRIu64
                   " at %s, its RPC address (%s): start it first with "
                   "`qraftd --id %" PRIu64
                   " --join ...`, and check the addresses; nothing was "
                   "changed",
                   m->id, m->rpc_addr,
                   status == QR_ETIMEOUT ? "no answer within 5 s"
                                         : "no connection within 5 s",
                   m->id);
        return;
    }
    if (resp->status == QRAFT__STATUS__UNAUTHORIZED) {
        check_fail(m, QR_ECONFLICT,
                   "node %" PRIu64
                   " at %s refuses this cluster's peer token: start it with "
                   "the cluster's --peer-token (QRAFT_PEER_TOKEN); nothing "
                   "was changed",
                   m->id, m->rpc_addr);
        return;
    }
    if (resp->status != QRAFT__STATUS__OK ||
        resp->body_case != QRAFT__RESPONSE__BODY_MEMBER_PROBE) {
        check_fail(m, QR_ECONFLICT,
                   "the node at %s does not answer the membership probe "
                   "(%s): is it a qraftd of this version?; nothing was "
                   "changed",
                   m->rpc_addr,
                   resp->error != NULL && resp->error[0] != '\0'
                       ? resp->error
                       : "an unexpected answer");
        return;
    }
    const Qraft__MemberProbeResponse *pr = resp->member_probe;
    if (pr->id != m->id) {
        check_fail(m, QR_ECONFLICT,
                   "the node at %s is node %" PRIu64 ", not %" PRIu64
                   "; nothing was changed",
                   m->rpc_addr, pr->id, m->id);
        return;
    }
    if (strcmp(pr->raft_addr, m->raft_addr) != 0) {
        check_fail(m, QR_ECONFLICT,
                   "node %" PRIu64
                   " listens for raft at %s, not %s; "
                   "nothing was changed",
                   m->id, pr->raft_addr, m->raft_addr);
        return;
    }
    uint32_t level = qr_cluster_feature_level(m->ops->cluster);
    if (pr->max_feature_level < level) {
        check_fail(m, QR_ECONFLICT,
                   "node %" PRIu64
                   " runs version %s, which applies feature "
                   "level %" PRIu32 " at most; the cluster is at %" PRIu32
                   ": upgrade it first; nothing was changed",
                   m->id, pr->version, pr->max_feature_level, level);
        return;
    }
    if (pr->n_configuration > 0 && !in_configuration(m->ops->cluster, m->id)) {
        check_fail(m, QR_ECONFLICT,
                   "node %" PRIu64
                   " already has a raft configuration of %" PRIu32
                   " node(s) (started without --join, or a member of "
                   "another cluster): start it with --join on an empty data "
                   "dir; nothing was changed",
                   m->id, pr->n_configuration);
        return;
    }
}

static void on_probe(void *data, int status, const Qraft__Response *resp);

static int send_probe(struct member_check *m)
{
    uint64_t now = uv_now(m->ops->loop);
    uint64_t left = m->probe_deadline_ms > now ? m->probe_deadline_ms - now : 1;
    Qraft__MemberProbeRequest probe = QRAFT__MEMBER_PROBE_REQUEST__INIT;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_MEMBER_PROBE;
    req.member_probe = &probe;
    return qr_peer_call(&m->peer, &req, left, on_probe, m);
}

static void on_retry_probe(uv_timer_t *t)
{
    struct member_check *m = t->data;
    int rv = send_probe(m);
    if (rv != 0) {
        check_fail(m, QR_ECONFLICT, "cannot probe %s: %s", m->rpc_addr,
                   qr_strerror(rv));
        uv_timer_start(&m->timer, on_close_peer, 0, 0);
    }
}

static void on_probe(void *data, int status, const Qraft__Response *resp)
{
    struct member_check *m = data;
    if (status == QR_ENOTSENT &&
        uv_now(m->ops->loop) + PROBE_RETRY_MS < m->probe_deadline_ms) {
        uv_timer_start(&m->timer, on_retry_probe, PROBE_RETRY_MS, 0);
        return;
    }
    judge(m, status, resp);
    uv_timer_start(&m->timer, on_close_peer, 0, 0);
}

int qr_ops_check_new_member(struct qr_ops *ops,
                            uint64_t id,
                            const char *raft_addr,
                            const char *rpc_addr,
                            qr_member_check_cb cb,
                            void *data)
{
    struct member_check *m = calloc(1, sizeof *m);
    if (m == NULL) {
        return -ENOMEM;
    }
    m->ops = ops;
    m->id = id;
    snprintf(m->raft_addr, sizeof m->raft_addr, "%s", raft_addr);
    snprintf(m->rpc_addr, sizeof m->rpc_addr, "%s", rpc_addr);
    m->cb = cb;
    m->data = data;
    char errmsg[QR_ERRMSG_BYTES];
    struct qr_peer_limits limits = {
        .connect_timeout_ms = PROBE_CONNECT_TIMEOUT_MS,
        .backoff_min_ms = PROBE_RETRY_MS,
        .backoff_max_ms = PROBE_RETRY_MS,
    };
    int rv = uv_timer_init(ops->loop, &m->timer);
    if (rv != 0) {
        free(m);
        return rv;
    }
    m->timer.data = m;
    rv = qr_peer_init(&m->peer, ops->loop,
                      ops->peer_token != NULL ? ops->peer_token : "", &limits,
                      errmsg);
    if (rv != 0) {
        goto err_after_timer;
    }
    m->probe_deadline_ms = uv_now(ops->loop) + PROBE_TIMEOUT_MS;
    /* The probe speaks TLS when this node does (the RPC port then
     * does on every node). */
    struct qr_tls_files files = {ops->config->tls_cert, ops->config->tls_key,
                                 ops->config->tls_ca};
    if (qr_tls_enabled(&files)) {
        rv = qr_peer_use_tls(&m->peer, &files, errmsg);
    }
    if (rv == 0) {
        rv = qr_peer_set_target(&m->peer, rpc_addr);
    }
    if (rv == 0) {
        rv = send_probe(m);
    }
    if (rv != 0) {
        /* The peer's close callback runs the rest of the ladder. */
        check_fail(m, rv, "cannot probe %s: %s", rpc_addr, qr_strerror(rv));
        m->cb = NULL;
        qr_peer_close(&m->peer, on_peer_closed);
        return rv;
    }
    return 0;

err_after_timer:
    m->cb = NULL;
    m->status = rv;
    m->pending_closes = 1;
    uv_close((uv_handle_t *)&m->timer, on_closed);
    return rv;
}
