/* libqraft's administration calls (include/qraft.h): signing keys, URL
 * groups, membership changes and the cluster's status. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "qraft.h"
#include "qraft.pb-c.h"

int qraft_keys(struct qraft_client *c, bool rotate, struct qraft_keys *out)
{
    Qraft__KeysRequest kr = QRAFT__KEYS_REQUEST__INIT;
    kr.rotate = rotate;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_KEYS;
    req.keys = &kr;
    Qraft__Response *resp = NULL;
    /* Two rotations instead of one would lock receivers out. */
    int rc = qr_client_call_expect(c, &req, rotate ? RETRY_UNSENT : RETRY_ANY,
                                   QRAFT__RESPONSE__BODY_KEYS, &resp);
    if (rc != 0) {
        return rc;
    }
    snprintf(out->current, sizeof out->current, "%s", resp->keys->current);
    snprintf(out->next, sizeof out->next, "%s", resp->keys->next);
    qraft__response__free_unpacked(resp, NULL);
    return 0;
}

/* ----------------------------------------------------------------------
 * URL groups */

static int group_change(struct qraft_client *c,
                        Qraft__GroupChangeKind kind,
                        const char *group,
                        const struct qraft_endpoint *endpoints,
                        size_t n)
{
    if (group == NULL || group[0] == '\0') {
        return qr_client_fail(c, QRAFT_EINVAL, "a url group name is required");
    }
    if (kind != QRAFT__GROUP_CHANGE_KIND__GROUP_DELETE &&
        (endpoints == NULL || n == 0)) {
        return qr_client_fail(c, QRAFT_EINVAL,
                              "at least one endpoint is required");
    }
    Qraft__UrlGroupEndpoint *eps = calloc(n > 0 ? n : 1, sizeof *eps);
    Qraft__UrlGroupEndpoint **ptrs = calloc(n > 0 ? n : 1, sizeof *ptrs);
    if (eps == NULL || ptrs == NULL) {
        free(eps);
        free(ptrs);
        return qr_client_fail(c, QRAFT_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        qraft__url_group_endpoint__init(&eps[i]);
        eps[i].name =
            (char *)(endpoints[i].name != NULL ? endpoints[i].name : "");
        eps[i].url = (char *)(endpoints[i].url != NULL ? endpoints[i].url : "");
        ptrs[i] = &eps[i];
    }
    Qraft__GroupChangeRequest gc = QRAFT__GROUP_CHANGE_REQUEST__INIT;
    gc.kind = kind;
    gc.name = (char *)group;
    gc.n_endpoints = n;
    gc.endpoints = ptrs;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_GROUP_CHANGE;
    req.group_change = &gc;
    Qraft__Response *resp = NULL;
    /* Adding the same endpoints again changes nothing; removing or deleting
     * twice answers NOT_FOUND the second time. */
    int rc = qr_client_call_expect(
        c, &req,
        kind == QRAFT__GROUP_CHANGE_KIND__GROUP_ADD_ENDPOINTS ? RETRY_ANY
                                                              : RETRY_UNSENT,
        QRAFT__RESPONSE__BODY__NOT_SET, &resp);
    if (rc == 0) {
        qraft__response__free_unpacked(resp, NULL);
    }
    free(eps);
    free(ptrs);
    return rc;
}

int qraft_group_add(struct qraft_client *c,
                    const char *group,
                    const struct qraft_endpoint *endpoints,
                    size_t n)
{
    return group_change(c, QRAFT__GROUP_CHANGE_KIND__GROUP_ADD_ENDPOINTS, group,
                        endpoints, n);
}

int qraft_group_remove(struct qraft_client *c,
                       const char *group,
                       const struct qraft_endpoint *endpoints,
                       size_t n)
{
    return group_change(c, QRAFT__GROUP_CHANGE_KIND__GROUP_REMOVE_ENDPOINTS,
                        group, endpoints, n);
}

int qraft_group_delete(struct qraft_client *c, const char *group)
{
    return group_change(c, QRAFT__GROUP_CHANGE_KIND__GROUP_DELETE, group, NULL,
                        0);
}

void qraft_groups_free(struct qraft_group *groups, size_t n)
{
    if (groups == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < groups[i].n_endpoints; j++) {
            free(groups[i].endpoints[j].name);
            free(groups[i].endpoints[j].url);
        }
        free(groups[i].endpoints);
        free(groups[i].name);
    }
    free(groups);
}

/* Fills g (zeroed) from pg; false when out of memory (g is then freed by
 * qraft_groups_free with what it holds). */
static bool group_from_pb(const Qraft__UrlGroup *pg, struct qraft_group *g)
{
    bool oom = false;
    g->name = qr_client_dup_str(pg->name, &oom);
    g->created_ms = pg->created_ms;
    g->updated_ms = pg->updated_ms;
    g->endpoints =
        calloc(pg->n_endpoints > 0 ? pg->n_endpoints : 1, sizeof *g->endpoints);
    if (g->endpoints == NULL) {
        return false;
    }
    for (size_t i = 0; i < pg->n_endpoints; i++) {
        g->endpoints[i].name = qr_client_dup_str(pg->endpoints[i]->name, &oom);
        g->endpoints[i].url = qr_client_dup_str(pg->endpoints[i]->url, &oom);
        g->n_endpoints++;
    }
    return !oom;
}

static int groups_from_pb(struct qraft_client *c,
                          Qraft__UrlGroup *const *pgs,
                          size_t n,
                          struct qraft_group **out)
{
    struct qraft_group *gs = calloc(n > 0 ? n : 1, sizeof *gs);
    bool ok = gs != NULL;
    for (size_t i = 0; ok && i < n; i++) {
        ok = group_from_pb(pgs[i], &gs[i]);
    }
    if (!ok) {
        qraft_groups_free(gs, n);
        return qr_client_fail(c, QRAFT_ENOMEM, "out of memory for url groups");
    }
    *out = gs;
    return 0;
}

int qraft_group_get(struct qraft_client *c,
                    const char *group,
                    struct qraft_group **out)
{
    if (group == NULL || group[0] == '\0') {
        return qr_client_fail(c, QRAFT_EINVAL, "a url group name is required");
    }
    Qraft__GroupGetRequest get = QRAFT__GROUP_GET_REQUEST__INIT;
    get.name = (char *)group;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_GROUP_GET;
    req.group_get = &get;
    Qraft__Response *resp = NULL;
    int rc = qr_client_call_expect(c, &req, RETRY_ANY,
                                   QRAFT__RESPONSE__BODY_GROUP, &resp);
    if (rc != 0) {
        return rc;
    }
    rc = groups_from_pb(c, &resp->group, 1, out);
    qraft__response__free_unpacked(resp, NULL);
    return rc;
}

int qraft_group_list(struct qraft_client *c,
                     struct qraft_group **out,
                     size_t *n)
{
    Qraft__GroupListRequest list = QRAFT__GROUP_LIST_REQUEST__INIT;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_GROUP_LIST;
    req.group_list = &list;
    Qraft__Response *resp = NULL;
    int rc = qr_client_call_expect(c, &req, RETRY_ANY,
                                   QRAFT__RESPONSE__BODY_GROUP_LIST, &resp);
    if (rc != 0) {
        return rc;
    }
    *n = resp->group_list->n_groups;
    rc = groups_from_pb(c, resp->group_list->groups, *n, out);
    qraft__response__free_unpacked(resp, NULL);
    return rc;
}

/* A membership change: answered with no body once done. Never repeated
 * after an ambiguous failure (a second remove is not the first); an add
 * is safe for the caller to repeat (the leader resumes or no-ops it). */
static int membership_call(struct qraft_client *c, Qraft__Request *req)
{
    Qraft__Response *resp = NULL;
    int rc = qr_client_call_expect(c, req, RETRY_UNSENT,
                                   QRAFT__RESPONSE__BODY__NOT_SET, &resp);
    if (rc == 0) {
        qraft__response__free_unpacked(resp, NULL);
    }
    return rc;
}

int qraft_cluster_add(struct qraft_client *c,
                      uint64_t id,
                      const char *raft_addr,
                      const char *rpc_addr)
{
    if (id == 0 || raft_addr == NULL || raft_addr[0] == '\0' ||
        rpc_addr == NULL || rpc_addr[0] == '\0') {
        return qr_client_fail(
            c, QRAFT_EINVAL,
            "add needs a node id, its raft address and its RPC "
            "address");
    }
    Qraft__MemberAddRequest a = QRAFT__MEMBER_ADD_REQUEST__INIT;
    a.id = id;
    a.raft_addr = (char *)raft_addr;
    a.rpc_addr = (char *)rpc_addr;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_MEMBER_ADD;
    req.member_add = &a;
    return membership_call(c, &req);
}

int qraft_cluster_remove(struct qraft_client *c, uint64_t id)
{
    if (id == 0) {
        return qr_client_fail(c, QRAFT_EINVAL, "remove needs a node id");
    }
    Qraft__MemberRemoveRequest r = QRAFT__MEMBER_REMOVE_REQUEST__INIT;
    r.id = id;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_MEMBER_REMOVE;
    req.member_remove = &r;
    return membership_call(c, &req);
}

int qraft_cluster_transfer(struct qraft_client *c, uint64_t id)
{
    Qraft__TransferRequest t = QRAFT__TRANSFER_REQUEST__INIT;
    t.id = id;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_TRANSFER;
    req.transfer = &t;
    return membership_call(c, &req);
}

void qraft_status_free(struct qraft_status *s)
{
    if (s == NULL) {
        return;
    }
    free(s->state);
    free(s->leader_rpc);
    free(s->version);
    free(s->problem);
    for (size_t i = 0; i < s->n_nodes; i++) {
        free(s->nodes[i].problem);
        free(s->nodes[i].role);
        free(s->nodes[i].raft);
        free(s->nodes[i].rpc);
        free(s->nodes[i].http);
        free(s->nodes[i].version);
    }
    free(s->nodes);
    free(s);
}

static int status_from_pb(const Qraft__StatusResponse *ps,
                          struct qraft_status *s)
{
    bool oom = false;
    s->node_id = ps->node_id;
    s->state = qr_client_dup_str(ps->state, &oom);
    s->leader_id = ps->leader_id;
    s->leader_rpc = qr_client_dup_str(ps->leader_rpc, &oom);
    s->term = ps->term;
    s->commit_index = ps->commit_index;
    s->applied_index = ps->applied_index;
    s->last_index = ps->last_index;
    for (size_t i = 0; i < ps->n_state_counts && i < QRAFT_N_STATES; i++) {
        s->state_counts[i] = ps->state_counts[i];
    }
    s->version = qr_client_dup_str(ps->version, &oom);
    s->feature_level = ps->feature_level;
    s->loop_stalls = ps->loop_stalls;
    s->loop_stall_max_ms = ps->loop_stall_max_ms;
    s->rss_bytes = ps->rss_bytes;
    s->store_used_bytes = ps->store_used_bytes;
    s->store_file_bytes = ps->store_file_bytes;
    s->problem = qr_client_dup_str(ps->problem, &oom);
    if (ps->n_nodes > 0) {
        s->nodes = calloc(ps->n_nodes, sizeof *s->nodes);
        if (s->nodes == NULL) {
            return QRAFT_ENOMEM;
        }
        s->n_nodes = ps->n_nodes;
    }
    for (size_t i = 0; i < ps->n_nodes; i++) {
        const Qraft__NodeStatus *pn = ps->nodes[i];
        struct qraft_node_status *n = &s->nodes[i];
        n->id = pn->id;
        n->role = qr_client_dup_str(pn->role, &oom);
        n->alive = pn->alive;
        n->applied = pn->applied;
        n->shards = pn->shards;
        n->raft = qr_client_dup_str(pn->raft, &oom);
        n->rpc = qr_client_dup_str(pn->rpc, &oom);
        n->http = qr_client_dup_str(pn->http, &oom);
        n->version = qr_client_dup_str(pn->version, &oom);
        n->feature_level = pn->feature_level;
        n->problem = qr_client_dup_str(pn->problem, &oom);
    }
    return oom ? QRAFT_ENOMEM : 0;
}

int qraft_status(struct qraft_client *c, struct qraft_status **out)
{
    Qraft__StatusRequest st = QRAFT__STATUS_REQUEST__INIT;
    /* The leader's view (a follower forwards the question) unless the
     * caller wants the node's own, as it is. */
    st.from_leader = !c->stale_reads;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_STATUS;
    req.status = &st;
    Qraft__Response *resp = NULL;
    int rc = qr_client_call_expect(c, &req, RETRY_ANY,
                                   QRAFT__RESPONSE__BODY_CLUSTER_STATUS, &resp);
    if (rc != 0) {
        return rc;
    }
    struct qraft_status *s = calloc(1, sizeof *s);
    rc = s != NULL ? status_from_pb(resp->cluster_status, s) : QRAFT_ENOMEM;
    qraft__response__free_unpacked(resp, NULL);
    if (rc != 0) {
        qraft_status_free(s);
        return qr_client_fail(c, rc, "out of memory for a status");
    }
    *out = s;
    return 0;
}
