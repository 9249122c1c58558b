/* Publishing: to a url, or to a URL group (one message per endpoint, all
 * answered together). A publish is answered once applied; test builds with
 * QRAFT_TEST_ACK_BEFORE_COMMIT answer it once queued, so node/CMakeLists.txt
 * compiles this file twice (QRAFT_ACK_SRC). */
#include "ops/ops_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repl/check.h"
#include "repl/command.h"

/* Test builds only (qraftd-test-ack-before-commit, for the chaos suite's
 * proof that its checker catches a broken queue): a publish is answered as
 * soon as it is queued, before raft commits it. Never in qraftd. */
#ifdef QRAFT_TEST_ACK_BEFORE_COMMIT
#define ACK_BEFORE_COMMIT true
#else
#define ACK_BEFORE_COMMIT false
#endif

static void on_publish_done(void *data,
                            int status,
                            const struct qr_apply_result *res)
{
    struct qr_call *call = data;
    if (call->answered) {
        qr_call_free(call);
        return;
    }
    if (status == 0 && res->status != 0) {
        status = res->status;
    }
    if (status != 0) {
        qr_op_error(call->op, call->id, qr_op_status_of(status), "%s",
                    res != NULL && res->status != 0 ? res->error
                    : status == QR_EUNKNOWN
                        ? "outcome unknown (leadership changed); retry with "
                          "the same idempotency key"
                        : qr_strerror(status));
    } else {
        Qraft__PublishResponse pr = QRAFT__PUBLISH_RESPONSE__INIT;
        pr.message_id = (char *)res->message_id;
        pr.deduplicated = res->deduplicated;
        if (!res->deduplicated) {
            QR_METRICS_INC(call->op->ops->metrics, publishes);
        }
        QR_OP_REPLY_BODY(call->op, call->id, PUBLISH, publish, &pr);
    }
    qr_call_free(call);
}

/* Whether publishing into `queue` may go ahead: it exists, or one more
 * queue stays within the limit. Apply creates a missing queue
 * unconditionally, so two publishes racing into two new queues at the
 * limit can both pass (documented). Answers req itself when it may not. */
static bool queue_room(struct qr_op *op,
                       const Qraft__Request *req,
                       const char *queue)
{
    struct qr_ops *ops = op->ops;
    uint32_t max = ops->config->limits.max_queues;
    struct qr_store_txn *txn = NULL;
    Qraft__Queue *q = NULL;
    size_t n = 0;
    int rv = qr_store_txn_begin(ops->store, false, &txn);
    if (rv == 0) {
        rv = qr_store_queue_get(txn, queue, &q);
        if (rv == QR_ENOTFOUND) {
            rv = qr_store_queue_count(txn, &n);
        }
        qr_store_txn_abort(txn);
    }
    if (q != NULL) {
        qraft__queue__free_unpacked(q, NULL);
        return true;
    }
    if (rv != 0) {
        qr_op_store_error(op, req->id, rv);
        return false;
    }
    if (n >= max) {
        qr_op_error(op, req->id, QRAFT__STATUS__CONFLICT,
                    "too many queues (the limit is %" PRIu32 ")", max);
        return false;
    }
    return true;
}

/* A publish into a queue or a workflow run, or one with redaction, needs
 * the cluster at that feature level (command.h), and one into a queue room for
 * the queue. A flow-controlled one waits while the level is about to rise to
 * flow control's (a new cluster's first second): below it apply would place it
 * unlimited, though every member could hold it; during a rolling upgrade
 * (a member below the level) it goes ahead, unlimited (docs/api.md 5.11).
 * True when p may go ahead; else answers req itself. */
static bool level_and_queue_ok(struct qr_op *op,
                               const Qraft__Request *req,
                               const Qraft__PublishRequest *p)
{
    char err[256];
    if (p->flow_control_key[0] != '\0' &&
        qr_cluster_feature_level(op->ops->cluster) <
            QR_FEATURE_LEVEL_FLOW_CONTROL &&
        !qr_shards_level_settled(op->ops->shards)) {
        qr_op_error(op, req->id, QRAFT__STATUS__UNAVAILABLE,
                    "the cluster is about to reach feature level %u (flow "
                    "control): nothing was published; retry in a moment",
                    QR_FEATURE_LEVEL_FLOW_CONTROL);
        return false;
    }
    if (p->queue[0] == '\0' && p->workflow == NULL && p->redact == NULL) {
        return true;
    }
    Qraft__Publish level_probe = QRAFT__PUBLISH__INIT;
    Qraft__Command level_cmd;
    level_probe.request = (Qraft__PublishRequest *)p;
    qr_command_init_one(&level_cmd, QRAFT__COMMAND__BODY_PUBLISH,
                        &level_probe.base);
    int rv =
        qr_cluster_check_level(op->ops->cluster, &level_cmd, err, sizeof err);
    if (rv != 0) {
        qr_op_error(op, req->id, qr_op_status_of(rv), "%s", err);
        return false;
    }
    return p->queue[0] == '\0' || queue_room(op, req, p->queue);
}

static void group_publish(struct qr_op *op, const Qraft__Request *req);

/* A workflow step must leave its run's history within the limit: checked
 * here against this node's copy of the run, before anything is proposed
 * (apply checks again). True when p may go ahead; else answers req. */
static bool history_room(struct qr_op *op,
                         const Qraft__Request *req,
                         const Qraft__PublishRequest *p)
{
    uint64_t max = op->ops->config->limits.max_run_history_bytes;
    if (p->workflow == NULL || p->workflow->init || max == 0) {
        return true;
    }
    struct qr_store_txn *txn = NULL;
    Qraft__WorkflowRun *run = NULL;
    uint64_t have = 0;
    if (qr_store_txn_begin(op->ops->store, false, &txn) == 0) {
        if (qr_store_run_get(txn, p->workflow->run_id, &run) == 0 &&
            run->state == QRAFT__WORKFLOW_RUN_STATE__RUN_RUNNING) {
            /* (one that is over is refused for that, by apply) */
            have = run->history_bytes;
        }
        if (run != NULL) {
            qraft__workflow_run__free_unpacked(run, NULL);
        }
        qr_store_txn_abort(txn);
    }
    if (have + p->body.len > max) {
        qr_op_error(op, req->id, QRAFT__STATUS__TOO_LARGE,
                    "workflow run %.64s's history would be %" PRIu64
                    " bytes; the limit is %" PRIu64
                    " (--max-run-history-bytes)",
                    p->workflow->run_id, have + p->body.len, max);
        return false;
    }
    return true;
}

void qr_op_publish(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_ops *ops = op->ops;
    const Qraft__PublishRequest *p = req->publish;
    char err[256];
    if (p->topic_name[0] != '\0' || p->endpoint_name[0] != '\0') {
        group_publish(op, req);
        return;
    }
    int rv = qr_command_check_publish(p, &ops->config->limits,
                                      qr_cluster_now_ms(ops->cluster), err,
                                      sizeof err);
    if (rv == 0) {
        rv = qr_ops_check_publish_destinations(ops, p, err, sizeof err);
    }
    if (rv != 0) {
        qr_op_error(op, req->id, qr_op_status_of(rv), "%s", err);
        return;
    }
    if (!level_and_queue_ok(op, req, p) || !history_room(op, req, p)) {
        return;
    }
    char id[QR_ID_BYTES];
    qr_cluster_new_message_id(ops->cluster, id);
    struct qr_packed cmd;
    rv = qr_command_pack_publish(p, id, &ops->config->limits, &cmd);
    if (rv != 0) {
        qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL,
                    "packing the command: %s", qr_strerror(rv));
        return;
    }
    struct qr_call *call = qr_call_new(op, req);
    if (call == NULL) {
        free(cmd.data);
        qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL, "out of memory");
        return;
    }
    if (qr_call_propose(op, call, &cmd, on_publish_done) && ACK_BEFORE_COMMIT) {
        Qraft__PublishResponse pr = QRAFT__PUBLISH_RESPONSE__INIT;
        pr.message_id = id;
        QR_OP_REPLY_BODY(op, req->id, PUBLISH, publish, &pr);
        call->answered = true;
    }
}

/* ------------------------------------------------------------------------ */
/* URL groups. */

static void finish_fanout(struct qr_call *call)
{
    if (call->fan_status != 0) {
        qr_op_error(
            call->op, call->id, qr_op_status_of(call->fan_status), "%s",
            call->fan_error != NULL ? call->fan_error : "out of memory");
    } else {
        Qraft__PublishResponse pr = QRAFT__PUBLISH_RESPONSE__INIT;
        pr.n_messages = call->n_items;
        pr.messages = call->published_ptrs;
        pr.topic_name = call->topic_name;
        QR_OP_REPLY_BODY(call->op, call->id, PUBLISH, publish, &pr);
    }
    qr_call_free(call);
}

/* Keeps the first failure: it is what the client hears. */
static void fanout_fail(struct qr_call *call, int status, const char *why)
{
    if (call->fan_status == 0) {
        call->fan_status = status;
        call->fan_error = strdup(why);
    }
}

static void on_fanout_item_done(void *data,
                                int status,
                                const struct qr_apply_result *res)
{
    struct qr_bulk_item *item = data;
    struct qr_call *call = item->call;
    Qraft__PublishedMessage *pm = &call->published[item->i];
    free(item);
    if (status == 0 && res->status != 0) {
        fanout_fail(call, res->status, res->error);
    } else if (status != 0) {
        fanout_fail(call, status,
                    status == QR_EUNKNOWN
                        ? "outcome unknown (leadership changed); retry with "
                          "a deduplication id"
                        : qr_strerror(status));
    } else {
        pm->message_id = strdup(res->message_id);
        pm->deduplicated = res->deduplicated;
    }
    if (++call->n_done == call->n_items) {
        finish_fanout(call);
    }
}

/* A publish to a URL group: one message per endpoint of the group as this
 * leader has applied it, each with its own id, url and endpoint name, all
 * answered together once every one is applied. */
static void group_publish(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_ops *ops = op->ops;
    const Qraft__PublishRequest *p = req->publish;
    uint64_t now_ms = qr_cluster_now_ms(ops->cluster);
    Qraft__UrlGroup *g = NULL;
    char err[256];

    if (p->url[0] != '\0' || p->endpoint_name[0] != '\0') {
        qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST, "%s",
                    p->endpoint_name[0] != '\0'
                        ? "endpoint name is set by the server, not the client"
                        : "give a url or a url group name, not both");
        return;
    }
    int rv = qr_command_check_publish(p, &ops->config->limits, now_ms, err,
                                      sizeof err);
    if (rv == 0) {
        rv = qr_ops_check_publish_destinations(ops, p, err, sizeof err);
    }
    if (rv == 0) {
        rv = qr_ops_load_group(ops, p->topic_name, &g);
        if (rv == QR_ENOTFOUND) {
            snprintf(err, sizeof err, "url group '%.64s' not found",
                     p->topic_name);
        } else if (rv != 0) {
            snprintf(err, sizeof err, "reading the store: %s", qr_strerror(rv));
        }
    }
    /* One copy per endpoint goes into the propose queue: refuse what could
     * not fit in half of it, rather than fail halfway through. */
    size_t total =
        rv == 0 ? g->n_endpoints * qraft__publish_request__get_packed_size(p)
                : 0;
    if (rv == 0 && total > ops->config->max_queued_bytes / 2) {
        rv = QR_ETOOLARGE;
        snprintf(err, sizeof err,
                 "a publish to url group '%.64s' (%zu endpoints) is %zu "
                 "bytes; the limit is %zu",
                 p->topic_name, g->n_endpoints, total,
                 ops->config->max_queued_bytes / 2);
    }
    /* Every copy is checked before anything is proposed. */
    for (size_t i = 0; rv == 0 && i < g->n_endpoints; i++) {
        Qraft__PublishRequest one = *p;
        one.url = g->endpoints[i]->url;
        one.endpoint_name = g->endpoints[i]->name;
        rv = qr_command_check_publish(&one, &ops->config->limits, now_ms, err,
                                      sizeof err);
        if (rv == 0) {
            /* An endpoint added through a node with other flags */
            rv = qr_ops_check_publish_destinations(ops, &one, err, sizeof err);
        }
    }
    if (rv == 0 && !level_and_queue_ok(op, req, p)) {
        qraft__url_group__free_unpacked(g, NULL);
        return;
    }
    struct qr_call *call = NULL;
    if (rv == 0) {
        call = qr_call_new(op, req);
        rv = -ENOMEM;
        snprintf(err, sizeof err, "out of memory");
    }
    if (call != NULL) {
        size_t n = g->n_endpoints;
        call->published = calloc(n, sizeof *call->published);
        call->published_ptrs = calloc(n, sizeof *call->published_ptrs);
        call->topic_name = strdup(p->topic_name);
        if (call->published != NULL && call->published_ptrs != NULL &&
            call->topic_name != NULL) {
            call->n_items = n;
            rv = 0;
        }
    }
    if (rv != 0) {
        qr_op_error(op, req->id, qr_op_status_of(rv), "%s", err);
        if (call != NULL) {
            qr_call_free(call);
        }
        if (g != NULL) {
            qraft__url_group__free_unpacked(g, NULL);
        }
        return;
    }
    for (size_t i = 0; i < call->n_items; i++) {
        Qraft__PublishedMessage *pm = &call->published[i];
        qraft__published_message__init(pm);
        call->published_ptrs[i] = pm;
        /* init points strings at protobuf-c's static "": ours are heap or
         * NULL, so qr_call_free can free them. */
        pm->message_id = NULL;
        pm->url = strdup(g->endpoints[i]->url);
        pm->endpoint_name = strdup(g->endpoints[i]->name);
    }
    /* Proposals complete from the loop, never before this returns; the
     * ones that fail here are counted at once. */
    for (size_t i = 0; i < call->n_items; i++) {
        Qraft__PublishRequest one = *p;
        one.url = g->endpoints[i]->url;
        one.endpoint_name = g->endpoints[i]->name;
        char id[QR_ID_BYTES];
        qr_cluster_new_message_id(ops->cluster, id);
        struct qr_packed packed = {NULL, 0};
        struct qr_bulk_item *item = malloc(sizeof *item);
        rv = item == NULL ? -ENOMEM
                          : qr_command_pack_publish(
                                &one, id, &ops->config->limits, &packed);
        if (rv == 0) {
            item->call = call;
            item->i = i;
            rv = qr_cluster_propose(ops->cluster, &packed, on_fanout_item_done,
                                    item);
        }
        if (rv != 0) {
            free(item);
            free(packed.data);
            fanout_fail(call, rv,
                        rv == QR_ENOTLEADER ? "not the leader any more"
                        : rv == QR_EUNAVAIL ? "overloaded or shutting down; "
                                              "retry shortly"
                                            : qr_strerror(rv));
            call->n_done++;
        }
    }
    qraft__url_group__free_unpacked(g, NULL);
    if (call->n_done == call->n_items) {
        finish_fanout(call);
    }
}
