#include "rpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"
#include "frame.h"
#include "lib/addr.h"
#include "lib/clock.h"
#include "logger.h"
#include "sign.h"

/* Read buffer growth step, and the most requests one connection may have
 * waiting for an answer before we stop reading from it (backpressure). */
#define READ_CHUNK_BYTES (64u * 1024u)
#define MAX_PENDING_PER_CONN 4096u
/* Test builds only (qraftd-test-ack-before-commit, for the chaos suite's
 * proof that its checker catches a broken queue): a publish is answered as
 * soon as it is queued, before raft commits it. Never in qraftd. */
#ifdef QRAFT_TEST_ACK_BEFORE_COMMIT
#define ACK_BEFORE_COMMIT true
#else
#define ACK_BEFORE_COMMIT false
#endif

#define LIST_DEFAULT_LIMIT 100u
#define LIST_MAX_LIMIT 1000u
/* A page stops early once its messages reach this many bytes (bodies are up
 * to 16 MiB each): the cursor then continues where it stopped. */
#define LIST_MAX_PAGE_BYTES (8u * 1024u * 1024u)
#define EVENTS_PER_GET 100u
#define MAX_BULK_IDS 1000u

struct qr_rpc_conn {
    uv_tcp_t tcp;
    struct qr_rpc *rpc;
    struct qr_rpc_conn *prev, *next;
    uint8_t *buf;
    size_t len, cap;
    unsigned refs;    /* the handle itself + one per call in progress */
    unsigned pending; /* calls waiting for an answer */
    bool reading;
    bool closing;
    /* Local connections (qr_rpc_submit) have no socket: their one answer
     * goes to this callback. */
    qr_rpc_reply_cb reply_cb;
    void *reply_data;
};

/* A request whose answer comes later (it went through raft). */
struct call {
    struct qr_rpc_conn *conn;
    uint64_t id;
    Qraft__Request__BodyCase kind;
    bool answered; /* test builds: answered before commit */
    /* Bulk calls (DLQ replay/delete): one proposal per id. */
    size_t n_items;
    size_t n_done;
    Qraft__ItemResult *items;
    Qraft__ItemResult **item_ptrs;
    char **item_ids;
};

typedef void (*handler_fn)(struct qr_rpc_conn *conn, const Qraft__Request *req);

struct route {
    Qraft__Request__BodyCase kind;
    const char *name;
    handler_fn handler;
    bool needs_leader; /* writes: only the serving leader proposes */
    /* A follower forwards it to the leader (client writes); peer traffic
     * is for the leader itself and is never forwarded. */
    bool forward;
};

/* ------------------------------------------------------------------------ */
/* Connections and responses. */

static void conn_unref(struct qr_rpc_conn *conn)
{
    if (--conn->refs > 0) {
        return;
    }
    free(conn->buf);
    free(conn);
}

static void on_conn_close(uv_handle_t *h)
{
    struct qr_rpc_conn *conn = h->data;
    struct qr_rpc *rpc = conn->rpc;
    if (conn->prev != NULL) {
        conn->prev->next = conn->next;
    } else {
        rpc->conns = conn->next;
    }
    if (conn->next != NULL) {
        conn->next->prev = conn->prev;
    }
    rpc->n_conns--;
    bool last = rpc->closing && rpc->n_conns == 0;
    conn_unref(conn);
    if (last && --rpc->pending_closes == 0 && rpc->close_cb != NULL) {
        rpc->close_cb(rpc);
    }
}

/* A local connection (qr_rpc_submit) never had a socket. */
static bool is_local(const struct qr_rpc_conn *conn)
{
    return conn->tcp.loop == NULL;
}

static void conn_close(struct qr_rpc_conn *conn)
{
    if (conn->closing) {
        return;
    }
    conn->closing = true;
    if (!is_local(conn)) {
        uv_close((uv_handle_t *)&conn->tcp, on_conn_close);
    }
}

struct write_req {
    uv_write_t req;
    struct qr_rpc_conn *conn;
    bool close_after;
    uint8_t data[];
};

static void on_write(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    struct qr_rpc_conn *conn = w->conn;
    if (status != 0 && status != UV_ECANCELED) {
        QR_DEBUG("rpc", "write: %s", uv_strerror(status));
        conn_close(conn);
    } else if (w->close_after) {
        conn_close(conn);
    }
    free(w);
    conn_unref(conn);
}

static void send_response(struct qr_rpc_conn *conn,
                          const Qraft__Response *resp,
                          bool close_after)
{
    if (conn->closing) {
        return;
    }
    if (is_local(conn)) {
        qr_rpc_reply_cb cb = conn->reply_cb;
        conn->reply_cb = NULL;
        conn->closing = true; /* one request, one answer */
        if (cb != NULL) {
            cb(conn->reply_data, resp);
        }
        return;
    }
    size_t len = qraft__response__get_packed_size(resp);
    struct write_req *w = malloc(sizeof *w + QR_FRAME_HEADER_BYTES + len);
    if (w == NULL) {
        QR_ERROR("rpc", "out of memory answering request %" PRIu64, resp->id);
        conn_close(conn);
        return;
    }
    qr_frame_put_header(w->data, (uint32_t)len);
    qraft__response__pack(resp, w->data + QR_FRAME_HEADER_BYTES);
    w->conn = conn;
    w->close_after = close_after;
    uv_buf_t buf =
        uv_buf_init((char *)w->data, (unsigned)(QR_FRAME_HEADER_BYTES + len));
    conn->refs++;
    int rv = uv_write(&w->req, (uv_stream_t *)&conn->tcp, &buf, 1, on_write);
    if (rv != 0) {
        QR_DEBUG("rpc", "write: %s", uv_strerror(rv));
        free(w);
        conn_unref(conn);
        conn_close(conn);
    }
}

static void send_error(struct qr_rpc_conn *conn,
                       uint64_t id,
                       Qraft__Status status,
                       const char *fmt,
                       ...) __attribute__((format(printf, 4, 5)));

static void send_error(struct qr_rpc_conn *conn,
                       uint64_t id,
                       Qraft__Status status,
                       const char *fmt,
                       ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    Qraft__Response resp = QRAFT__RESPONSE__INIT;
    resp.id = id;
    resp.status = status;
    resp.error = msg;
    send_response(conn, &resp, false);
}

/* Maps a node error onto the status a client acts on. */
static Qraft__Status status_of(int rv)
{
    switch (rv) {
        case 0:
            return QRAFT__STATUS__OK;
        case QR_EBADREQ:
            return QRAFT__STATUS__BAD_REQUEST;
        case QR_ETOOLARGE:
            return QRAFT__STATUS__TOO_LARGE;
        case QR_ENOTFOUND:
            return QRAFT__STATUS__NOT_FOUND;
        case QR_ENOTLEADER:
            return QRAFT__STATUS__NOT_LEADER;
        case QR_EUNAVAIL:
            return QRAFT__STATUS__UNAVAILABLE;
        case QR_ECONFLICT:
            return QRAFT__STATUS__CONFLICT;
        case QR_EUNKNOWN:
            return QRAFT__STATUS__UNKNOWN_OUTCOME;
        case QR_EAUTH:
            return QRAFT__STATUS__UNAUTHORIZED;
        default:
            return QRAFT__STATUS__INTERNAL;
    }
}

static void send_not_leader(struct qr_rpc_conn *conn, uint64_t id)
{
    struct qr_rpc *rpc = conn->rpc;
    char leader_rpc[QR_ADDR_MAX];
    uint64_t leader_id = 0;
    qr_cluster_leader(rpc->cluster, &leader_id, NULL);
    Qraft__Response resp = QRAFT__RESPONSE__INIT;
    resp.id = id;
    if (leader_id == 0) {
        resp.status = QRAFT__STATUS__UNAVAILABLE;
        resp.error = "no leader at the moment; retry shortly";
    } else if (leader_id == rpc->config->id) {
        resp.status = QRAFT__STATUS__UNAVAILABLE;
        resp.error = "the leader is catching up; retry shortly";
    } else {
        /* The leader's advertised address, when it has been applied here;
         * else the client tries its other endpoints. */
        resp.status = QRAFT__STATUS__NOT_LEADER;
        resp.error = "not the leader";
        resp.leader_id = leader_id;
        qr_shards_node_addrs(rpc->shards, leader_id, leader_rpc, NULL);
        resp.leader_rpc = leader_rpc;
    }
    send_response(conn, &resp, false);
}

static struct call *call_new(struct qr_rpc_conn *conn,
                             const Qraft__Request *req)
{
    struct call *call = calloc(1, sizeof *call);
    if (call == NULL) {
        return NULL;
    }
    call->conn = conn;
    call->id = req->id;
    call->kind = req->body_case;
    conn->refs++;
    conn->pending++;
    return call;
}

static void resume_reading(struct qr_rpc_conn *conn);

static void call_free(struct call *call)
{
    struct qr_rpc_conn *conn = call->conn;
    for (size_t i = 0; i < call->n_items; i++) {
        if (call->item_ids != NULL) {
            free(call->item_ids[i]);
        }
        if (call->items != NULL) {
            free(call->items[i].error);
        }
    }
    free(call->items);
    free(call->item_ptrs);
    free(call->item_ids);
    free(call);
    conn->pending--;
    resume_reading(conn);
    conn_unref(conn);
}

/* ------------------------------------------------------------------------ */
/* Handlers. */

static void on_publish_done(void *data,
                            int status,
                            const struct qr_apply_result *res)
{
    struct call *call = data;
    if (call->answered) {
        call_free(call);
        return;
    }
    if (status == 0 && res->status != 0) {
        status = res->status;
    }
    if (status != 0) {
        send_error(call->conn, call->id, status_of(status), "%s",
                   res != NULL && res->status != 0 ? res->error
                   : status == QR_EUNKNOWN
                       ? "outcome unknown (leadership changed); retry with "
                         "the same idempotency key"
                       : qr_strerror(status));
    } else {
        Qraft__PublishResponse pr = QRAFT__PUBLISH_RESPONSE__INIT;
        pr.message_id = (char *)res->message_id;
        pr.deduplicated = res->deduplicated;
        Qraft__Response resp = QRAFT__RESPONSE__INIT;
        resp.id = call->id;
        resp.body_case = QRAFT__RESPONSE__BODY_PUBLISH;
        resp.publish = &pr;
        send_response(call->conn, &resp, false);
    }
    call_free(call);
}

/* Proposes one packed command for a call; answers the call on failure. */
static bool propose(struct qr_rpc_conn *conn,
                    struct call *call,
                    struct qr_packed *cmd,
                    qr_cluster_propose_cb cb)
{
    int rv = qr_cluster_propose(conn->rpc->cluster, cmd, cb, call);
    if (rv == 0) {
        return true;
    }
    free(cmd->data);
    if (rv == QR_ENOTLEADER) {
        send_not_leader(conn, call->id);
    } else {
        send_error(conn, call->id, status_of(rv), "%s",
                   rv == QR_EUNAVAIL ? "overloaded or shutting down; retry "
                                       "shortly"
                                     : qr_strerror(rv));
    }
    call_free(call);
    return false;
}

/* Packs cmd (borrowed) and proposes it for req; answers req itself when
 * that fails, else cb answers once the command is applied. */
static void propose_command(struct qr_rpc_conn *conn,
                            const Qraft__Request *req,
                            const Qraft__Command *cmd,
                            qr_cluster_propose_cb cb)
{
    char why[256];
    if (qr_cluster_check_level(conn->rpc->cluster, cmd, why, sizeof why) != 0) {
        send_error(conn, req->id, QRAFT__STATUS__UNAVAILABLE, "%s", why);
        return;
    }
    struct qr_packed packed;
    struct call *call = call_new(conn, req);
    if (call == NULL || qr_command_pack(cmd, &packed) != 0) {
        send_error(conn, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
        if (call != NULL) {
            call_free(call);
        }
        return;
    }
    propose(conn, call, &packed, cb);
}

static void handle_publish(struct qr_rpc_conn *conn, const Qraft__Request *req)
{
    struct qr_rpc *rpc = conn->rpc;
    const Qraft__PublishRequest *p = req->publish;
    char err[256];
    int rv = qr_command_check_publish(p, &rpc->config->limits,
                                      qr_cluster_now_ms(rpc->cluster), err,
                                      sizeof err);
    if (rv != 0) {
        send_error(conn, req->id, status_of(rv), "%s", err);
        return;
    }
    char id[QR_ID_BYTES];
    qr_cluster_new_message_id(rpc->cluster, id);
    struct qr_packed cmd;
    rv = qr_command_pack_publish(p, id, &rpc->config->limits, &cmd);
    if (rv != 0) {
        send_error(conn, req->id, QRAFT__STATUS__INTERNAL,
                   "packing the command: %s", qr_strerror(rv));
        return;
    }
    struct call *call = call_new(conn, req);
    if (call == NULL) {
        free(cmd.data);
        send_error(conn, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
        return;
    }
    if (propose(conn, call, &cmd, on_publish_done) && ACK_BEFORE_COMMIT) {
        Qraft__PublishResponse pr = QRAFT__PUBLISH_RESPONSE__INIT;
        pr.message_id = id;
        Qraft__Response resp = QRAFT__RESPONSE__INIT;
        resp.id = req->id;
        resp.body_case = QRAFT__RESPONSE__BODY_PUBLISH;
        resp.publish = &pr;
        send_response(conn, &resp, false);
        call->answered = true;
    }
}

static void on_single_done(void *data,
                           int status,
                           const struct qr_apply_result *res)
{
    struct call *call = data;
    if (status == 0 && res->status != 0) {
        send_error(call->conn, call->id, status_of(res->status), "%s",
                   res->error);
    } else if (status != 0) {
        send_error(call->conn, call->id, status_of(status), "%s",
                   qr_strerror(status));
    } else {
        Qraft__CancelResponse cr = QRAFT__CANCEL_RESPONSE__INIT;
        Qraft__Response resp = QRAFT__RESPONSE__INIT;
        resp.id = call->id;
        resp.body_case = QRAFT__RESPONSE__BODY_CANCEL;
        resp.cancel = &cr;
        send_response(call->conn, &resp, false);
    }
    call_free(call);
}

static void handle_cancel(struct qr_rpc_conn *conn, const Qraft__Request *req)
{
    const char *id = req->cancel->message_id;
    if (id[0] == '\0' || strlen(id) >= QR_ID_BYTES + 64) {
        send_error(conn, req->id, QRAFT__STATUS__BAD_REQUEST,
                   "message id is missing or too long");
        return;
    }
    Qraft__Cancel c = QRAFT__CANCEL__INIT;
    c.message_id = (char *)id;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_CANCEL;
    cmd.cancel = &c;
    propose_command(conn, req, &cmd, on_single_done);
}

static void on_bulk_item_done(void *data,
                              int status,
                              const struct qr_apply_result *res);

static void finish_bulk(struct call *call)
{
    Qraft__BulkResponse br = QRAFT__BULK_RESPONSE__INIT;
    br.n_results = call->n_items;
    br.results = call->item_ptrs;
    Qraft__Response resp = QRAFT__RESPONSE__INIT;
    resp.id = call->id;
    resp.body_case = QRAFT__RESPONSE__BODY_BULK;
    resp.bulk = &br;
    send_response(call->conn, &resp, false);
    call_free(call);
}

/* Per-item context: the call and which item. */
struct bulk_item {
    struct call *call;
    size_t i;
};

static void set_item(struct call *call, size_t i, int status, const char *error)
{
    call->items[i].status = status_of(status);
    free(call->items[i].error);
    /* NULL packs as "" (protobuf-c treats it as the zero value). */
    call->items[i].error = status != 0 ? strdup(error) : NULL;
    call->n_done++;
}

static void on_bulk_item_done(void *data,
                              int status,
                              const struct qr_apply_result *res)
{
    struct bulk_item *item = data;
    struct call *call = item->call;
    size_t i = item->i;
    free(item);
    if (status == 0 && res->status != 0) {
        set_item(call, i, res->status, res->error);
    } else {
        set_item(call, i, status, qr_strerror(status));
    }
    if (call->n_done == call->n_items) {
        finish_bulk(call);
    }
}

static void handle_bulk(struct qr_rpc_conn *conn,
                        const Qraft__Request *req,
                        size_t n_ids,
                        char **ids,
                        bool replay)
{
    const char *what = replay ? "dlq replay" : "dlq delete";
    if (n_ids == 0 || n_ids > MAX_BULK_IDS) {
        send_error(conn, req->id, QRAFT__STATUS__BAD_REQUEST,
                   "%s takes 1 to %u message ids", what, MAX_BULK_IDS);
        return;
    }
    struct call *call = call_new(conn, req);
    if (call == NULL) {
        send_error(conn, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
        return;
    }
    call->items = calloc(n_ids, sizeof *call->items);
    call->item_ptrs = calloc(n_ids, sizeof *call->item_ptrs);
    call->item_ids = calloc(n_ids, sizeof *call->item_ids);
    if (call->items == NULL || call->item_ptrs == NULL ||
        call->item_ids == NULL) {
        send_error(conn, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
        call_free(call);
        return;
    }
    call->n_items = n_ids;
    for (size_t i = 0; i < n_ids; i++) {
        qraft__item_result__init(&call->items[i]);
        call->item_ptrs[i] = &call->items[i];
        call->item_ids[i] = strdup(ids[i]); /* NULL packs as "" */
        call->items[i].message_id = call->item_ids[i];
        /* init points strings at protobuf-c's static "": ours are heap or
         * NULL, so call_free can free them. */
        call->items[i].error = NULL;
    }
    /* Every item is answered: proposed ones by their callback (never
     * before this function returns: proposals complete from the loop), the
     * others right here. */
    for (size_t i = 0; i < n_ids; i++) {
        Qraft__DlqReplay r = QRAFT__DLQ_REPLAY__INIT;
        Qraft__DlqDelete d = QRAFT__DLQ_DELETE__INIT;
        Qraft__Command cmd = QRAFT__COMMAND__INIT;
        if (replay) {
            r.message_id = ids[i];
            cmd.body_case = QRAFT__COMMAND__BODY_DLQ_REPLAY;
            cmd.dlq_replay = &r;
        } else {
            d.message_id = ids[i];
            cmd.body_case = QRAFT__COMMAND__BODY_DLQ_DELETE;
            cmd.dlq_delete = &d;
        }
        struct qr_packed packed = {NULL, 0};
        struct bulk_item *item = malloc(sizeof *item);
        int rv = item == NULL ? -ENOMEM : qr_command_pack(&cmd, &packed);
        if (rv == 0) {
            item->call = call;
            item->i = i;
            rv = qr_cluster_propose(conn->rpc->cluster, &packed,
                                    on_bulk_item_done, item);
        }
        if (rv != 0) {
            free(item);
            free(packed.data);
            set_item(call, i, rv, qr_strerror(rv));
        }
    }
    if (call->n_done == call->n_items) {
        finish_bulk(call);
    }
}

/* A DLQ filter: what `dlq replay` without ids selects. */
struct dlq_filter {
    const Qraft__DlqReplayRequest *r;
    char **ids;
    size_t n;
    int rv;
};

static int collect_matching(void *arg, const Qraft__Message *m)
{
    struct dlq_filter *f = arg;
    const Qraft__DlqReplayRequest *r = f->r;
    if (r->until_ms != 0 && m->dead_lettered_ms >= r->until_ms) {
        return 1; /* oldest first: nothing later matches */
    }
    if (m->dead_lettered_ms < r->since_ms ||
        strncmp(m->url, r->url_prefix, strlen(r->url_prefix)) != 0 ||
        (r->category[0] != '\0' &&
         (m->last_error == NULL ||
          (strcmp(m->last_error->category, r->category) != 0 &&
           strcmp(m->last_error->cause, r->category) != 0)))) {
        return 0;
    }
    f->ids[f->n] = strdup(m->id);
    if (f->ids[f->n] == NULL) {
        f->rv = -ENOMEM;
        return 1;
    }
    return ++f->n == MAX_BULK_IDS;
}

static void handle_dlq_replay(struct qr_rpc_conn *conn,
                              const Qraft__Request *req)
{
    const Qraft__DlqReplayRequest *r = req->dlq_replay;
    bool filtered = r->all || r->url_prefix[0] != '\0' ||
                    r->category[0] != '\0' || r->since_ms != 0 ||
                    r->until_ms != 0;
    if (r->n_message_ids > 0 || !filtered) {
        if (filtered) {
            send_error(conn, req->id, QRAFT__STATUS__BAD_REQUEST,
                       "give message ids or a filter, not both");
            return;
        }
        handle_bulk(conn, req, r->n_message_ids, r->message_ids, true);
        return;
    }
    struct dlq_filter f = {.r = r, .ids = calloc(MAX_BULK_IDS, sizeof(char *))};
    struct qr_store_txn *txn = NULL;
    int rv = f.ids == NULL ? -ENOMEM
                           : qr_store_txn_begin(conn->rpc->store, false, &txn);
    if (rv == 0) {
        rv = qr_store_dlq_list(txn, NULL, SIZE_MAX, collect_matching, &f);
        qr_store_txn_abort(txn);
        rv = rv == 1 ? f.rv : rv;
    }
    if (rv != 0) {
        send_error(conn, req->id, QRAFT__STATUS__INTERNAL,
                   "reading the DLQ: %s", qr_strerror(rv));
    } else if (f.n == 0) {
        Qraft__BulkResponse br = QRAFT__BULK_RESPONSE__INIT;
        Qraft__Response resp = QRAFT__RESPONSE__INIT;
        resp.id = req->id;
        resp.body_case = QRAFT__RESPONSE__BODY_BULK;
        resp.bulk = &br;
        send_response(conn, &resp, false);
    } else {
        handle_bulk(conn, req, f.n, f.ids, true);
    }
    for (size_t i = 0; i < f.n; i++) {
        free(f.ids[i]);
    }
    free(f.ids);
}

static bool forward(struct qr_rpc_conn *conn, Qraft__Request *req);

static void send_keys(struct qr_rpc_conn *conn, uint64_t id)
{
    struct qr_store_txn *txn = NULL;
    Qraft__SigningKeys *keys = NULL;
    int rv = qr_store_txn_begin(conn->rpc->store, false, &txn);
    if (rv == 0) {
        rv = qr_store_meta_get_msg(txn, QR_META_SIGNING_KEYS,
                                   &qraft__signing_keys__descriptor,
                                   (ProtobufCMessage **)&keys);
        qr_store_txn_abort(txn);
    }
    if (rv != 0) {
        send_error(conn, id, QRAFT__STATUS__UNAVAILABLE,
                   "no signing keys yet: the cluster is starting");
        return;
    }
    Qraft__Response resp = QRAFT__RESPONSE__INIT;
    resp.id = id;
    resp.body_case = QRAFT__RESPONSE__BODY_KEYS;
    resp.keys = keys;
    send_response(conn, &resp, false);
    qraft__signing_keys__free_unpacked(keys, NULL);
}

static void on_rotated(void *data,
                       int status,
                       const struct qr_apply_result *res)
{
    struct call *call = data;
    if (status == 0 && res->status != 0) {
        status = res->status;
    }
    if (status != 0) {
        send_error(
            call->conn, call->id, status_of(status), "%s",
            res != NULL && res->status != 0 ? res->error : qr_strerror(status));
    } else {
        send_keys(call->conn, call->id);
    }
    call_free(call);
}

static void handle_keys(struct qr_rpc_conn *conn, const Qraft__Request *req)
{
    if (!req->keys->rotate) {
        send_keys(conn, req->id);
        return;
    }
    if (!qr_cluster_serving(conn->rpc->cluster)) {
        if (!forward(conn, (Qraft__Request *)req)) {
            send_not_leader(conn, req->id);
        }
        return;
    }
    char next[QR_SIGN_KEY_BYTES];
    if (qr_sign_generate_key(next) != 0) {
        send_error(conn, req->id, QRAFT__STATUS__UNAVAILABLE,
                   "no randomness for a new key");
        return;
    }
    Qraft__SigningKeys keys = QRAFT__SIGNING_KEYS__INIT;
    keys.next = next;
    Qraft__SetSigningKeys set = QRAFT__SET_SIGNING_KEYS__INIT;
    set.keys = &keys;
    set.rotate = true;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_SET_SIGNING_KEYS;
    cmd.set_signing_keys = &set;
    propose_command(conn, req, &cmd, on_rotated);
}

static void handle_dlq_delete(struct qr_rpc_conn *conn,
                              const Qraft__Request *req)
{
    handle_bulk(conn, req, req->dlq_delete->n_message_ids,
                req->dlq_delete->message_ids, false);
}

/* Reads: a list of deep copies taken from one read transaction. */
struct msg_list {
    Qraft__Message **items;
    size_t n, cap;
    size_t bytes;
    bool full; /* stopped at the page's limit or LIST_MAX_PAGE_BYTES */
    int rv;
    /* Filter on the reported state (see reported_state), when set. */
    Qraft__MessageState want;
    uint64_t now_ms;
    size_t limit;
};

/* "delivering" is not stored: a pending or retrying message whose time has
 * come is in flight (or about to be), and is reported so. */
static Qraft__MessageState reported_state(const Qraft__Message *m,
                                          uint64_t now_ms)
{
    bool waiting = m->state == QRAFT__MESSAGE_STATE__PENDING ||
                   m->state == QRAFT__MESSAGE_STATE__RETRYING;
    return waiting && m->next_attempt_ms <= now_ms
               ? QRAFT__MESSAGE_STATE__DELIVERING
               : m->state;
}

static Qraft__Message *copy_message(const Qraft__Message *m)
{
    size_t len = qraft__message__get_packed_size(m);
    uint8_t *buf = malloc(len > 0 ? len : 1);
    if (buf == NULL) {
        return NULL;
    }
    qraft__message__pack(m, buf);
    Qraft__Message *copy = qraft__message__unpack(NULL, len, buf);
    free(buf);
    return copy;
}

static int collect_message(void *arg, const Qraft__Message *m)
{
    struct msg_list *l = arg;
    Qraft__MessageState state = reported_state(m, l->now_ms);
    if (l->want != QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED &&
        state != l->want) {
        return 0;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        Qraft__Message **items = realloc(l->items, cap * sizeof *items);
        if (items == NULL) {
            l->rv = -ENOMEM;
            return 1;
        }
        l->items = items;
        l->cap = cap;
    }
    Qraft__Message *copy = copy_message(m);
    if (copy == NULL) {
        l->rv = -ENOMEM;
        return 1;
    }
    copy->state = state;
    l->items[l->n++] = copy;
    l->bytes += qraft__message__get_packed_size(copy);
    if (l->bytes >= LIST_MAX_PAGE_BYTES || l->n == l->limit) {
        l->full = true;
        return 1;
    }
    return 0;
}

static void msg_list_free(struct msg_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        qraft__message__free_unpacked(l->items[i], NULL);
    }
    free(l->items);
}

static uint32_t clamp_limit(uint32_t limit)
{
    if (limit == 0) {
        return LIST_DEFAULT_LIMIT;
    }
    return limit > LIST_MAX_LIMIT ? LIST_MAX_LIMIT : limit;
}

static void handle_list(struct qr_rpc_conn *conn, const Qraft__Request *req)
{
    struct qr_rpc *rpc = conn->rpc;
    const Qraft__ListRequest *lr = req->list;
    bool dlq = req->body_case == QRAFT__REQUEST__BODY_DLQ_LIST;
    const char *cursor = dlq ? req->dlq_list->cursor : lr->cursor;
    uint32_t limit = clamp_limit(dlq ? req->dlq_list->limit : lr->limit);
    if ((unsigned)(dlq ? 0 : lr->state) > QRAFT__MESSAGE_STATE__CANCELLED) {
        send_error(conn, req->id, QRAFT__STATUS__BAD_REQUEST,
                   "unknown state %d", (int)lr->state);
        return;
    }

    struct msg_list l = {.now_ms = qr_cluster_now_ms(rpc->cluster),
                         .limit = limit};
    struct qr_store_txn *txn = NULL;
    int rv = qr_store_txn_begin(rpc->store, false, &txn);
    if (rv == 0) {
        if (dlq) {
            rv = qr_store_dlq_list(txn, cursor, limit, collect_message, &l);
        } else {
            /* The store filters on the stored state; "delivering" and the
             * waiting states it is computed from are filtered here. */
            Qraft__MessageState stored = lr->state;
            if (stored == QRAFT__MESSAGE_STATE__DELIVERING ||
                stored == QRAFT__MESSAGE_STATE__PENDING ||
                stored == QRAFT__MESSAGE_STATE__RETRYING) {
                l.want = stored;
                if (stored == QRAFT__MESSAGE_STATE__DELIVERING) {
                    stored = QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED;
                }
            }
            rv = qr_store_msg_list(txn, stored, cursor, SIZE_MAX,
                                   collect_message, &l);
        }
        qr_store_txn_abort(txn);
    }
    if (rv == 1 && (l.full || l.rv != 0)) {
        rv = l.rv; /* the callback stopped the walk */
    }
    if (rv == 0 && l.rv != 0) {
        rv = l.rv;
    }
    if (rv != 0) {
        send_error(conn, req->id, QRAFT__STATUS__INTERNAL,
                   "reading the store: %s", qr_strerror(rv));
        msg_list_free(&l);
        return;
    }

    char *next = l.n > 0 && l.full ? l.items[l.n - 1]->id : "";
    Qraft__Response resp = QRAFT__RESPONSE__INIT;
    Qraft__ListResponse list = QRAFT__LIST_RESPONSE__INIT;
    Qraft__DlqListResponse dlq_list = QRAFT__DLQ_LIST_RESPONSE__INIT;
    resp.id = req->id;
    if (dlq) {
        dlq_list.n_messages = l.n;
        dlq_list.messages = l.items;
        dlq_list.cursor = next;
        resp.body_case = QRAFT__RESPONSE__BODY_DLQ_LIST;
        resp.dlq_list = &dlq_list;
    } else {
        list.n_messages = l.n;
        list.messages = l.items;
        list.cursor = next;
        resp.body_case = QRAFT__RESPONSE__BODY_LIST;
        resp.list = &list;
    }
    send_response(conn, &resp, false);
    msg_list_free(&l);
}

struct event_list {
    Qraft__Event **items;
    size_t n;
    int rv;
};

static int collect_event(void *arg, const Qraft__Event *e)
{
    struct event_list *l = arg;
    if (l->n == EVENTS_PER_GET) {
        /* Keep the newest: drop the oldest kept. */
        qraft__event__free_unpacked(l->items[0], NULL);
        memmove(l->items, l->items + 1, (l->n - 1) * sizeof *l->items);
        l->n--;
    }
    size_t len = qraft__event__get_packed_size(e);
    uint8_t *buf = malloc(len > 0 ? len : 1);
    if (buf == NULL) {
        l->rv = -ENOMEM;
        return 1;
    }
    qraft__event__pack(e, buf);
    l->items[l->n] = qraft__event__unpack(NULL, len, buf);
    free(buf);
    if (l->items[l->n] == NULL) {
        l->rv = -ENOMEM;
        return 1;
    }
    l->n++;
    return 0;
}

static void handle_get(struct qr_rpc_conn *conn, const Qraft__Request *req)
{
    struct qr_rpc *rpc = conn->rpc;
    const char *id = req->get->message_id;
    if (id[0] == '\0') {
        send_error(conn, req->id, QRAFT__STATUS__BAD_REQUEST,
                   "message id is missing");
        return;
    }
    Qraft__Message *m = NULL;
    Qraft__Event *events[EVENTS_PER_GET];
    struct event_list el = {.items = events};
    struct qr_store_txn *txn = NULL;
    int rv = qr_store_txn_begin(rpc->store, false, &txn);
    if (rv == 0) {
        rv = qr_store_msg_get(txn, id, &m);
        if (rv == 0) {
            rv = qr_store_event_list(txn, id, SIZE_MAX, collect_event, &el);
            if (rv == 0) {
                rv = el.rv;
            }
        }
        qr_store_txn_abort(txn);
    }
    if (rv == QR_ENOTFOUND) {
        send_error(conn, req->id, QRAFT__STATUS__NOT_FOUND,
                   "message %.64s not found", id);
    } else if (rv != 0) {
        send_error(conn, req->id, QRAFT__STATUS__INTERNAL,
                   "reading the store: %s", qr_strerror(rv));
    } else {
        Qraft__GetResponse gr = QRAFT__GET_RESPONSE__INIT;
        m->state = reported_state(m, qr_cluster_now_ms(rpc->cluster));
        gr.message = m;
        gr.n_events = el.n;
        gr.events = events;
        Qraft__Response resp = QRAFT__RESPONSE__INIT;
        resp.id = req->id;
        resp.body_case = QRAFT__RESPONSE__BODY_GET;
        resp.get = &gr;
        send_response(conn, &resp, false);
    }
    for (size_t i = 0; i < el.n; i++) {
        qraft__event__free_unpacked(events[i], NULL);
    }
    if (m != NULL) {
        qraft__message__free_unpacked(m, NULL);
    }
}

static void handle_status(struct qr_rpc_conn *conn, const Qraft__Request *req)
{
    struct qr_rpc *rpc = conn->rpc;
    struct qr_cluster_status cs;
    qr_cluster_get_status(rpc->cluster, &cs);

    uint64_t counts[7] = {0};
    struct qr_store_txn *txn = NULL;
    int rv = qr_store_txn_begin(rpc->store, false, &txn);
    if (rv == 0) {
        rv = qr_store_count_states(txn, counts);
        qr_store_txn_abort(txn);
    }
    if (rv != 0) {
        send_error(conn, req->id, QRAFT__STATUS__INTERNAL,
                   "reading the store: %s", qr_strerror(rv));
        return;
    }

    Qraft__NodeStatus nodes[QR_CLUSTER_MAX_NODES];
    Qraft__NodeStatus *node_ptrs[QR_CLUSTER_MAX_NODES];
    Qraft__NodeInfo *infos[QR_CLUSTER_MAX_NODES];
    uint64_t now = qr_clock_mono_ms();
    for (size_t i = 0; i < cs.n_nodes; i++) {
        uint64_t nid = cs.nodes[i].id;
        qraft__node_status__init(&nodes[i]);
        nodes[i].id = nid;
        nodes[i].role = (char *)cs.nodes[i].role;
        nodes[i].raft = cs.nodes[i].raft_addr;
        nodes[i].shards = qr_shards_count(rpc->shards, nid);
        infos[i] = qr_shards_node_info(rpc->shards, nid);
        if (infos[i] != NULL) {
            nodes[i].rpc = infos[i]->rpc;
            nodes[i].http = infos[i]->http;
            nodes[i].version = infos[i]->version;
            nodes[i].feature_level = infos[i]->feature_level != 0
                                         ? infos[i]->feature_level
                                         : QR_FSM_BASE_FEATURE_LEVEL;
        }
        if (nid == rpc->config->id) {
            nodes[i].alive = true;
            nodes[i].applied = cs.applied_index;
        } else {
            /* Known on the leader, from heartbeats. */
            const struct qr_shards_node *n = qr_shards_node(rpc->shards, nid);
            nodes[i].alive = n != NULL && n->last_heartbeat_mono_ms != 0 &&
                             now - n->last_heartbeat_mono_ms < 3000;
            nodes[i].applied = n != NULL ? n->applied_index : 0;
        }
        node_ptrs[i] = &nodes[i];
    }
    Qraft__StatusResponse sr = QRAFT__STATUS_RESPONSE__INIT;
    sr.node_id = rpc->config->id;
    sr.state = (char *)cs.state;
    sr.leader_id = cs.leader_id;
    char leader_rpc[QR_ADDR_MAX] = "";
    if (cs.leader_id != 0) {
        qr_shards_node_addrs(rpc->shards, cs.leader_id, leader_rpc, NULL);
    }
    sr.leader_rpc = leader_rpc;
    sr.term = cs.term;
    sr.commit_index = cs.commit_index;
    sr.applied_index = cs.applied_index;
    sr.last_index = cs.last_index;
    sr.n_nodes = cs.n_nodes;
    sr.nodes = node_ptrs;
    sr.n_state_counts = 7;
    sr.state_counts = counts;
    sr.version = QRAFT_VERSION;
    sr.feature_level = rpc->cluster->fsm.feature_level;
    Qraft__Response resp = QRAFT__RESPONSE__INIT;
    resp.id = req->id;
    resp.body_case = QRAFT__RESPONSE__BODY_CLUSTER_STATUS;
    resp.cluster_status = &sr;
    send_response(conn, &resp, false);
    for (size_t i = 0; i < cs.n_nodes; i++) {
        if (infos[i] != NULL) {
            qraft__node_info__free_unpacked(infos[i], NULL);
        }
    }
}

static void handle_heartbeat(struct qr_rpc_conn *conn,
                             const Qraft__Request *req)
{
    Qraft__HeartbeatResponse hb = QRAFT__HEARTBEAT_RESPONSE__INIT;
    qr_shards_on_heartbeat(conn->rpc->shards, req->heartbeat, &hb);
    Qraft__Response resp = QRAFT__RESPONSE__INIT;
    resp.id = req->id;
    resp.body_case = QRAFT__RESPONSE__BODY_HEARTBEAT;
    resp.heartbeat = &hb;
    send_response(conn, &resp, false);
}

static void on_results_applied(void *data, int status, uint64_t applied)
{
    struct call *call = data;
    if (status != 0) {
        send_error(call->conn, call->id, status_of(status), "%s",
                   qr_strerror(status));
    } else {
        Qraft__ResultsResponse rr = QRAFT__RESULTS_RESPONSE__INIT;
        rr.applied_index = applied;
        Qraft__Response resp = QRAFT__RESPONSE__INIT;
        resp.id = call->id;
        resp.body_case = QRAFT__RESPONSE__BODY_RESULTS;
        resp.results = &rr;
        send_response(call->conn, &resp, false);
    }
    call_free(call);
}

/* A follower's worker hands over outcomes: the leader proposes them and
 * answers once they are applied. */
static void handle_results(struct qr_rpc_conn *conn, const Qraft__Request *req)
{
    const Qraft__ResultsRequest *r = req->results;
    if (r->n_results == 0) {
        send_error(conn, req->id, QRAFT__STATUS__BAD_REQUEST, "no results");
        return;
    }
    struct call *call = call_new(conn, req);
    if (call == NULL) {
        send_error(conn, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
        return;
    }
    int rv = qr_shards_propose_results(conn->rpc->shards, r->results,
                                       r->n_results, on_results_applied, call);
    if (rv != 0) {
        if (rv == QR_ENOTLEADER) {
            send_not_leader(conn, req->id);
        } else {
            send_error(conn, req->id, status_of(rv), "%s", qr_strerror(rv));
        }
        call_free(call);
    }
}

static void on_membership_done(void *data, int status, const char *why)
{
    struct call *call = data;
    if (status != 0) {
        send_error(call->conn, call->id, status_of(status), "%s", why);
    } else {
        Qraft__Response resp = QRAFT__RESPONSE__INIT;
        resp.id = call->id;
        send_response(call->conn, &resp, false);
    }
    call_free(call);
}

static void handle_membership(struct qr_rpc_conn *conn,
                              const Qraft__Request *req)
{
    struct qr_cluster *c = conn->rpc->cluster;
    if (req->body_case == QRAFT__REQUEST__BODY_MEMBER_ADD) {
        struct sockaddr_in addr;
        const Qraft__MemberAddRequest *a = req->member_add;
        if (a->id == 0 || a->id > QR_MAX_NODE_ID ||
            qr_addr_parse_ipv4(a->raft_addr, &addr) != 0) {
            send_error(conn, req->id, QRAFT__STATUS__BAD_REQUEST,
                       "add needs an id in 1..%u and an IPv4 HOST:PORT raft "
                       "address",
                       QR_MAX_NODE_ID);
            return;
        }
    }
    struct call *call = call_new(conn, req);
    if (call == NULL) {
        send_error(conn, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
        return;
    }
    int rv;
    switch (req->body_case) {
        case QRAFT__REQUEST__BODY_MEMBER_ADD:
            rv = qr_cluster_add(c, req->member_add->id,
                                req->member_add->raft_addr, on_membership_done,
                                call);
            break;
        case QRAFT__REQUEST__BODY_MEMBER_REMOVE:
            rv = qr_cluster_remove(c, req->member_remove->id,
                                   on_membership_done, call);
            break;
        default:
            rv = qr_cluster_transfer(c, req->transfer->id, on_membership_done,
                                     call);
            break;
    }
    if (rv != 0) {
        if (rv == QR_ENOTLEADER) {
            send_not_leader(conn, req->id);
        } else {
            send_error(conn, req->id, status_of(rv), "%s",
                       rv == QR_ECONFLICT
                           ? "another membership change is in progress"
                       : rv == QR_EBADREQ
                           ? "no such node, or the id or address is taken"
                           : qr_strerror(rv));
        }
        call_free(call);
    }
}

static const struct route routes[] = {
    /* kind, name, handler, needs_leader, forward */
    {QRAFT__REQUEST__BODY_PUBLISH, "publish", handle_publish, true, true},
    {QRAFT__REQUEST__BODY_GET, "get", handle_get, false, false},
    {QRAFT__REQUEST__BODY_CANCEL, "cancel", handle_cancel, true, true},
    {QRAFT__REQUEST__BODY_LIST, "list", handle_list, false, false},
    {QRAFT__REQUEST__BODY_DLQ_LIST, "dlq list", handle_list, false, false},
    {QRAFT__REQUEST__BODY_DLQ_REPLAY, "dlq replay", handle_dlq_replay, true,
     true},
    {QRAFT__REQUEST__BODY_DLQ_DELETE, "dlq delete", handle_dlq_delete, true,
     true},
    {QRAFT__REQUEST__BODY_STATUS, "status", handle_status, false, false},
    /* Reading keys is local; rotating checks for the leader itself. */
    {QRAFT__REQUEST__BODY_KEYS, "keys", handle_keys, false, false},
    /* An add waits for the new node to catch up, longer than a relay may
     * wait: the client goes to the leader itself. */
    {QRAFT__REQUEST__BODY_MEMBER_ADD, "add", handle_membership, true, false},
    {QRAFT__REQUEST__BODY_MEMBER_REMOVE, "remove", handle_membership, true,
     true},
    /* Not forwarded: the leader changes, so a relay's peer connection would
     * move away before the answer; the client goes to the leader. */
    {QRAFT__REQUEST__BODY_TRANSFER, "transfer", handle_membership, true, false},
    /* Peer traffic, for the leader itself. */
    {QRAFT__REQUEST__BODY_HEARTBEAT, "heartbeat", handle_heartbeat, true,
     false},
    {QRAFT__REQUEST__BODY_RESULTS, "results", handle_results, true, false},
};

/* Node-to-node requests: they need the peer token. */
static bool is_peer_request(Qraft__Request__BodyCase kind)
{
    return kind == QRAFT__REQUEST__BODY_HEARTBEAT ||
           kind == QRAFT__REQUEST__BODY_RESULTS;
}

/* Compares without an early exit, so timing does not reveal the token. */
static bool token_matches(const char *want, const char *got)
{
    size_t want_len = strlen(want);
    size_t got_len = strlen(got);
    unsigned char diff = want_len != got_len;
    for (size_t i = 0; i < want_len; i++) {
        diff |= (unsigned char)(want[i] ^ (i < got_len ? got[i] : 0));
    }
    return diff == 0;
}

/* Write forwarding: a follower passes a client's write to the leader over
 * its peer connection and relays the answer under the client's request id.
 * When the peer call fails the request may or may not have reached the
 * leader, so the client hears UNKNOWN_OUTCOME (libqraft retries a publish
 * with its idempotency key); when it was never sent, UNAVAILABLE. */
static void on_forwarded(void *data, int status, const Qraft__Response *resp)
{
    struct call *call = data;
    if (status == 0) {
        Qraft__Response relay = *resp;
        relay.id = call->id;
        send_response(call->conn, &relay, false);
    } else if (status == QR_ECANCELED) {
        send_error(call->conn, call->id, QRAFT__STATUS__UNAVAILABLE,
                   "shutting down");
    } else if (status == QR_ENOTSENT) {
        /* Never reached the leader (it may have just died): nothing was
         * applied, so the client may simply retry. */
        send_error(call->conn, call->id, QRAFT__STATUS__UNAVAILABLE,
                   "the leader could not be reached; nothing was applied; "
                   "retry shortly");
    } else {
        send_error(call->conn, call->id, QRAFT__STATUS__UNKNOWN_OUTCOME,
                   "forwarding to the leader failed (%s); the request may "
                   "or may not have been applied",
                   qr_strerror(status));
    }
    call_free(call);
}

/* Forwarding waits at most this long for the leader's answer. */
#define FORWARD_TIMEOUT_MS 30000

static bool forward(struct qr_rpc_conn *conn, Qraft__Request *req)
{
    struct qr_rpc *rpc = conn->rpc;
    uint64_t leader_id = 0;
    qr_cluster_leader(rpc->cluster, &leader_id, NULL);
    char leader_rpc[QR_ADDR_MAX];
    if (leader_id == 0 || leader_id == rpc->config->id) {
        return false;
    }
    qr_shards_node_addrs(rpc->shards, leader_id, leader_rpc, NULL);
    if (leader_rpc[0] == '\0' ||
        qr_peer_set_target(&rpc->shards->peer, leader_rpc) != 0) {
        return false; /* not advertised yet: the client is redirected */
    }
    struct call *call = call_new(conn, req);
    if (call == NULL) {
        return false;
    }
    if (qr_peer_call(&rpc->shards->peer, req, FORWARD_TIMEOUT_MS, on_forwarded,
                     call) != 0) {
        call_free(call);
        return false;
    }
    return true;
}

/* Routes one decoded request (borrowed) to its handler, which answers on
 * conn now or later. as_peer: it carried the peer token. */
static void dispatch(struct qr_rpc_conn *conn,
                     Qraft__Request *req,
                     bool as_peer)
{
    struct qr_rpc *rpc = conn->rpc;
    const struct route *route = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (routes[i].kind == req->body_case) {
            route = &routes[i];
        }
    }
    if (route == NULL) {
        send_error(conn, req->id, QRAFT__STATUS__BAD_REQUEST,
                   "unknown request kind %d", (int)req->body_case);
        return;
    }
    if (is_peer_request(req->body_case) && !as_peer) {
        send_error(conn, req->id, QRAFT__STATUS__UNAUTHORIZED,
                   "unauthorized: %s is a node-to-node request and needs the "
                   "peer token",
                   route->name);
        return;
    }
    if (route->needs_leader && !qr_cluster_serving(rpc->cluster)) {
        if (!route->forward || !forward(conn, req)) {
            send_not_leader(conn, req->id);
        }
        return;
    }
    route->handler(conn, req);
}

static void handle_frame(struct qr_rpc_conn *conn,
                         const uint8_t *payload,
                         size_t len)
{
    struct qr_rpc *rpc = conn->rpc;
    rpc->n_requests++;
    Qraft__Request *req = qraft__request__unpack(NULL, len, payload);
    if (req == NULL) {
        send_error(conn, 0, QRAFT__STATUS__BAD_REQUEST,
                   "malformed request (%zu bytes do not decode)", len);
        return;
    }
    bool as_peer = token_matches(rpc->peer_token, req->token);
    if (!as_peer && !token_matches(rpc->token, req->token)) {
        send_error(conn, req->id, QRAFT__STATUS__UNAUTHORIZED,
                   "unauthorized: wrong or missing token");
    } else {
        dispatch(conn, req, as_peer);
    }
    qraft__request__free_unpacked(req, NULL);
}

int qr_rpc_submit(struct qr_rpc *rpc,
                  Qraft__Request *req,
                  qr_rpc_reply_cb cb,
                  void *data)
{
    if (rpc->closing) {
        return QR_ECANCELED;
    }
    struct qr_rpc_conn *conn = calloc(1, sizeof *conn);
    if (conn == NULL) {
        return -ENOMEM;
    }
    conn->rpc = rpc;
    conn->refs = 1;
    conn->reply_cb = cb;
    conn->reply_data = data;
    rpc->n_requests++;
    dispatch(conn, req, false);
    conn_unref(conn); /* calls in progress hold their own references */
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Reading. */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct qr_rpc_conn *conn = h->data;
    (void)suggested;
    if (conn->cap - conn->len < READ_CHUNK_BYTES) {
        size_t cap = conn->cap + READ_CHUNK_BYTES;
        /* Grow to hold the whole frame being read, once its length is
         * known (it was checked against the limit in on_read). */
        if (conn->len >= QR_FRAME_HEADER_BYTES) {
            const uint8_t *p = conn->buf;
            size_t want = QR_FRAME_HEADER_BYTES +
                          (((size_t)p[0] << 24) | ((size_t)p[1] << 16) |
                           ((size_t)p[2] << 8) | (size_t)p[3]);
            if (want > cap) {
                cap = want;
            }
        }
        uint8_t *grown = realloc(conn->buf, cap);
        if (grown == NULL) {
            buf->base = NULL;
            buf->len = 0;
            return;
        }
        conn->buf = grown;
        conn->cap = cap;
    }
    buf->base = (char *)conn->buf + conn->len;
    buf->len = conn->cap - conn->len;
}

static void pause_reading(struct qr_rpc_conn *conn)
{
    if (conn->reading) {
        uv_read_stop((uv_stream_t *)&conn->tcp);
        conn->reading = false;
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void resume_reading(struct qr_rpc_conn *conn)
{
    if (is_local(conn)) {
        return;
    }
    if (!conn->reading && !conn->closing &&
        conn->pending < MAX_PENDING_PER_CONN) {
        if (uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read) == 0) {
            conn->reading = true;
        }
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct qr_rpc_conn *conn = s->data;
    (void)buf;
    if (nread == 0) {
        return;
    }
    if (nread < 0) {
        if (nread != UV_EOF && nread != UV_ECONNRESET) {
            QR_DEBUG("rpc", "read: %s", uv_strerror((int)nread));
        }
        if (nread == UV_ENOBUFS) {
            QR_ERROR("rpc", "out of memory reading a request");
        }
        conn_close(conn);
        return;
    }
    conn->len += (size_t)nread;

    size_t offset = 0;
    conn->refs++; /* handlers may close the connection */
    while (!conn->closing) {
        const uint8_t *payload;
        size_t payload_len, consumed;
        enum qr_frame_status st =
            qr_frame_parse(conn->buf + offset, conn->len - offset,
                           conn->rpc->config->max_frame_bytes, &payload,
                           &payload_len, &consumed);
        if (st == QR_FRAME_NEED_MORE) {
            break;
        }
        if (st == QR_FRAME_TOO_LARGE) {
            QR_WARN("rpc",
                    "closing a connection that sent a frame over "
                    "%" PRIu64 " bytes",
                    conn->rpc->config->max_frame_bytes);
            Qraft__Response resp = QRAFT__RESPONSE__INIT;
            char msg[128];
            snprintf(msg, sizeof msg,
                     "frame exceeds the limit of %" PRIu64 " bytes",
                     conn->rpc->config->max_frame_bytes);
            resp.status = QRAFT__STATUS__TOO_LARGE;
            resp.error = msg;
            pause_reading(conn);
            send_response(conn, &resp, true);
            break;
        }
        handle_frame(conn, payload, payload_len);
        offset += consumed;
    }
    if (offset > 0 && !conn->closing) {
        memmove(conn->buf, conn->buf + offset, conn->len - offset);
        conn->len -= offset;
    }
    /* Give back memory a large frame needed once it has been handled. */
    if (conn->len == 0 && conn->cap > 4 * READ_CHUNK_BYTES) {
        free(conn->buf);
        conn->buf = NULL;
        conn->cap = 0;
    }
    if (conn->pending >= MAX_PENDING_PER_CONN) {
        pause_reading(conn);
    }
    conn_unref(conn);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct qr_rpc *rpc = server->data;
    if (status != 0) {
        QR_WARN("rpc", "accept: %s", uv_strerror(status));
        return;
    }
    struct qr_rpc_conn *conn = calloc(1, sizeof *conn);
    if (conn == NULL) {
        QR_ERROR("rpc", "out of memory accepting a connection");
        return;
    }
    conn->rpc = rpc;
    conn->refs = 1;
    uv_tcp_init(rpc->loop, &conn->tcp);
    conn->tcp.data = conn;
    conn->next = rpc->conns;
    if (rpc->conns != NULL) {
        rpc->conns->prev = conn;
    }
    rpc->conns = conn;
    rpc->n_conns++;
    if (uv_accept(server, (uv_stream_t *)&conn->tcp) != 0) {
        conn_close(conn);
        return;
    }
    if (rpc->n_conns > rpc->config->max_connections) {
        QR_WARN("rpc", "refusing a connection: %zu open, the limit is %u",
                rpc->n_conns - 1, rpc->config->max_connections);
        conn_close(conn);
        return;
    }
    uv_tcp_nodelay(&conn->tcp, 1);
    resume_reading(conn);
}

/* ------------------------------------------------------------------------ */
/* Life cycle. */

int qr_rpc_init(struct qr_rpc *rpc,
                uv_loop_t *loop,
                const struct qr_config *cfg,
                const char *token,
                struct qr_cluster *cluster,
                struct qr_store *store,
                struct qr_shards *shards)
{
    memset(rpc, 0, sizeof *rpc);
    rpc->shards = shards;
    rpc->loop = loop;
    rpc->config = cfg;
    rpc->token = token;
    rpc->peer_token = cfg->peer_token[0] != '\0' ? cfg->peer_token : token;
    rpc->cluster = cluster;
    rpc->store = store;

    struct sockaddr_in addr;
    if (qr_addr_parse_ipv4(cfg->rpc_addr, &addr) != 0) {
        snprintf(rpc->errmsg, sizeof rpc->errmsg,
                 "rpc: '%s' is not an IPv4 HOST:PORT", cfg->rpc_addr);
        return QR_EBADREQ;
    }
    uv_tcp_init(loop, &rpc->listener);
    rpc->listener.data = rpc;
    int rv = uv_tcp_bind(&rpc->listener, (const struct sockaddr *)&addr, 0);
    if (rv == 0) {
        rv = uv_listen((uv_stream_t *)&rpc->listener, 511, on_connection);
    }
    if (rv != 0) {
        snprintf(rpc->errmsg, sizeof rpc->errmsg, "rpc: listen on %s: %s",
                 cfg->rpc_addr, uv_strerror(rv));
        uv_close((uv_handle_t *)&rpc->listener, NULL);
        return rv;
    }
    return 0;
}

static void on_listener_close(uv_handle_t *h)
{
    struct qr_rpc *rpc = h->data;
    if (--rpc->pending_closes == 0 && rpc->close_cb != NULL) {
        rpc->close_cb(rpc);
    }
}

void qr_rpc_close(struct qr_rpc *rpc, qr_rpc_close_cb cb)
{
    if (rpc->closing) {
        return;
    }
    rpc->closing = true;
    rpc->close_cb = cb;
    rpc->pending_closes = 1 + (rpc->n_conns > 0 ? 1 : 0);
    uv_close((uv_handle_t *)&rpc->listener, on_listener_close);
    for (struct qr_rpc_conn *c = rpc->conns; c != NULL; c = c->next) {
        conn_close(c);
    }
}
