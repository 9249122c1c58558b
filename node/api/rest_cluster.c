/* GET /v2/qraft/cluster: the cluster as the leader sees it, from the RPC
 * `status` operation (node/ops/admin.c), as JSON for the console and
 * scripts. Read-only. A follower forwards it to the leader, which alone
 * knows every node's liveness and applied index from heartbeats; with
 * `?local=true`, or when no leader is reachable, the node asked answers
 * from its own view (nodeId says which node answered). */
#include "api/rest_int.h"

#include "lib/json_text.h"

/* MessageState (proto/qraft.proto) by index; "" for STATE_UNSPECIFIED. */
static const char *const state_names[] = {
    "",          "pending",      "delivering", "retrying",
    "delivered", "deadLettered", "cancelled",  "queued",
};

#define N_STATE_NAMES (sizeof(state_names) / sizeof(state_names[0]))

/* o[key] = s unless s is empty (optional fields are omitted). */
static void set_text(json_t *o, const char *key, const char *s)
{
    if (s != NULL && s[0] != '\0') {
        json_object_set_new(o, key, qr_json_text(s));
    }
}

static json_t *node_json(const Qraft__NodeStatus *n)
{
    json_t *o =
        json_pack("{s:I,s:o,s:b,s:I,s:I,s:I}", "id", (json_int_t)n->id, "role",
                  qr_json_text(n->role), "alive", n->alive, "appliedIndex",
                  (json_int_t)n->applied, "shards", (json_int_t)n->shards,
                  "featureLevel", (json_int_t)n->feature_level);

    if (o == NULL) {
        return NULL;
    }
    set_text(o, "raft", n->raft);
    set_text(o, "rpc", n->rpc);
    set_text(o, "http", n->http);
    set_text(o, "version", n->version);
    set_text(o, "problem", n->problem);
    return o;
}

static json_t *cluster_json(struct rest_call *c, const Qraft__Response *resp)
{
    const Qraft__StatusResponse *sr = resp->cluster_status;
    json_t *messages = json_object();
    json_t *nodes = json_array();
    json_t *o;

    (void)c;
    if (messages == NULL || nodes == NULL) {
        goto err;
    }
    for (size_t i = 1; i < sr->n_state_counts && i < N_STATE_NAMES; i++) {
        json_object_set_new(messages, state_names[i],
                            json_integer((json_int_t)sr->state_counts[i]));
    }
    for (size_t i = 0; i < sr->n_nodes; i++) {
        json_t *n = node_json(sr->nodes[i]);
        if (n == NULL || json_array_append_new(nodes, n) != 0) {
            goto err;
        }
    }
    o = json_pack(
        "{s:I,s:o,s:I,s:I,s:I,s:I,s:I,s:o,s:I,s:o,s:o,s:I,s:I,s:I,s:I,s:I}",
        "nodeId", (json_int_t)sr->node_id, "state", qr_json_text(sr->state),
        "leaderId", (json_int_t)sr->leader_id, "term", (json_int_t)sr->term,
        "commitIndex", (json_int_t)sr->commit_index, "appliedIndex",
        (json_int_t)sr->applied_index, "lastIndex", (json_int_t)sr->last_index,
        "version", qr_json_text(sr->version), "featureLevel",
        (json_int_t)sr->feature_level, "messages", messages, "nodes", nodes,
        "loopStalls", (json_int_t)sr->loop_stalls, "loopStallMaxMs",
        (json_int_t)sr->loop_stall_max_ms, "rssBytes",
        (json_int_t)sr->rss_bytes, "storeUsedBytes",
        (json_int_t)sr->store_used_bytes, "storeFileBytes",
        (json_int_t)sr->store_file_bytes);
    if (o == NULL) {
        return NULL; /* json_pack took messages and nodes */
    }
    set_text(o, "leaderRpc", sr->leader_rpc);
    set_text(o, "problem", sr->problem);
    return o;

err:
    json_decref(messages);
    json_decref(nodes);
    return NULL;
}

/* GET /v2/qraft/cluster. */
void qr_rest_cluster(struct qr_rest *r,
                     h2o_req_t *req,
                     const struct rest_match *m)
{
    Qraft__StatusRequest status = QRAFT__STATUS_REQUEST__INIT;
    bool local;

    if (!qr_rest_query_bool(&req->pool, m->query, "local", false, &local)) {
        qr_rest_send_error(req, 400, "local must be true or false");
        return;
    }
    status.from_leader = !local;
    QR_REST_RUN(
        r, req, STATUS, status, &status,
        &(struct rest_answer){.want = QRAFT__RESPONSE__BODY_CLUSTER_STATUS,
                              .build = cluster_json});
}
