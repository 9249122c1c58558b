/* /v2/topics: URL groups (QStash's "topics"): list, get, delete, and
 * endpoints added or removed. */
#include "api/rest_int.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/json_text.h"

/* UrlGroup as the SDK reads it: endpoints carry only name (if set) and
 * url, which the SDK's tests compare with deep equality. */
static json_t *group_json(const Qraft__UrlGroup *g)
{
    json_t *eps = json_array();
    json_t *o;

    for (size_t i = 0; eps != NULL && i < g->n_endpoints; i++) {
        json_t *e = json_object();
        qr_rest_set_opt_string(e, "name", g->endpoints[i]->name);
        json_object_set_new(e, "url", qr_json_text(g->endpoints[i]->url));
        json_array_append_new(eps, e);
    }
    o = json_pack("{s:o,s:I,s:I,s:o}", "name", qr_json_text(g->name),
                  "createdAt", (json_int_t)g->created_ms, "updatedAt",
                  (json_int_t)g->updated_ms, "endpoints", eps);
    return o;
}

/* One url group (GET /v2/topics/{name}), or all of them. */
static json_t *groups_json(struct rest_call *c, const Qraft__Response *resp)
{
    json_t *all;

    (void)c;
    if (resp->body_case == QRAFT__RESPONSE__BODY_GROUP) {
        return group_json(resp->group);
    }
    all = json_array();
    for (size_t i = 0; all != NULL && i < resp->group_list->n_groups; i++) {
        json_array_append_new(all, group_json(resp->group_list->groups[i]));
    }
    return all;
}

/* A change: QStash answers 200 with an empty body. */
static void on_group_changed(struct rest_call *c,
                             size_t index,
                             const Qraft__Response *resp)
{
    (void)index;
    if (!qr_rest_reply_ok(c, resp, QRAFT__RESPONSE__BODY__NOT_SET)) {
        return;
    }
    c->req->res.status = 200;
    c->req->res.reason = "OK";
    c->req->res.content_length = 0;
    h2o_send_inline(c->req, "", 0);
}

/* Fills change->endpoints (pool memory) from {"endpoints": [{"name"?,
 * "url"?}, ...]}; on bad input writes why into err and returns -EINVAL. */
int qr_rest_parse_endpoints(h2o_req_t *req,
                            Qraft__GroupChangeRequest *change,
                            char *err)
{
    json_error_t jerr;
    json_t *in;
    json_t *list;
    const char *key;
    json_t *value;
    size_t n;
    int rv = -EINVAL;

    in = json_loadb(req->entity.base != NULL ? req->entity.base : "",
                    req->entity.base != NULL ? req->entity.len : 0, 0, &jerr);
    if (in == NULL) {
        snprintf(err, ERR_BYTES, "invalid JSON: %s (line %d, column %d)",
                 jerr.text, jerr.line, jerr.column);
        return -EINVAL;
    }
    list = json_object_get(in, "endpoints");
    if (!json_is_object(in) || json_object_size(in) != 1 ||
        !json_is_array(list) || json_array_size(list) == 0) {
        snprintf(err, ERR_BYTES,
                 "body must be {\"endpoints\": [{\"name\"?, \"url\"}, "
                 "...]} with at least one endpoint");
        goto out;
    }
    n = json_array_size(list);
    change->endpoints =
        h2o_mem_alloc_pool(&req->pool, sizeof(*change->endpoints) * n);
    change->n_endpoints = n;
    for (size_t i = 0; i < n; i++) {
        json_t *el = json_array_get(list, i);
        Qraft__UrlGroupEndpoint *e = h2o_mem_alloc_pool(&req->pool, sizeof(*e));
        qraft__url_group_endpoint__init(e);
        change->endpoints[i] = e;
        if (!json_is_object(el)) {
            snprintf(err, ERR_BYTES, "endpoint %zu is not an object", i + 1);
            goto out;
        }
        json_object_foreach(el, key, value)
        {
            bool name = strcmp(key, "name") == 0;
            if ((!name && strcmp(key, "url") != 0) || !json_is_string(value)) {
                snprintf(err, ERR_BYTES,
                         "endpoint %zu: unknown field or not a string: "
                         "'%.64s'",
                         i + 1, key);
                goto out;
            }
            char *text = qr_rest_pool_str(&req->pool, json_string_value(value),
                                          json_string_length(value));
            if (strlen(text) != json_string_length(value)) {
                snprintf(err, ERR_BYTES, "endpoint %zu: NUL in '%s'", i + 1,
                         key);
                goto out;
            }
            if (name) {
                e->name = text;
            } else {
                e->url = text;
            }
        }
    }
    rv = 0;
out:
    json_decref(in);
    return rv;
}

/* The url group the route names (pool memory), or NULL having answered
 * 400 when it is no name. */
static char *group_name(h2o_req_t *req, const struct rest_match *m)
{
    if (!qr_rest_valid_name(m->capture.base, m->capture.len)) {
        qr_rest_send_error(req, 400,
                           "url group name must match [A-Za-z0-9._-]+");
        return NULL;
    }
    return qr_rest_capture(req, m);
}

static void run_group_change(struct qr_rest *r,
                             h2o_req_t *req,
                             Qraft__GroupChangeRequest *change)
{
    QR_REST_RUN(r, req, GROUP_CHANGE, group_change, change,
                &(struct rest_answer){.on_reply = on_group_changed});
}

/* GET /v2/topics (all) and /v2/topics/{name}; DELETE /v2/topics/{name}. */
void qr_rest_topic(struct qr_rest *r,
                   h2o_req_t *req,
                   const struct rest_match *m)
{
    Qraft__GroupListRequest list = QRAFT__GROUP_LIST_REQUEST__INIT;
    Qraft__GroupGetRequest get = QRAFT__GROUP_GET_REQUEST__INIT;
    Qraft__GroupChangeRequest change = QRAFT__GROUP_CHANGE_REQUEST__INIT;

    if (m->capture.base == NULL) {
        QR_REST_RUN(
            r, req, GROUP_LIST, group_list, &list,
            &(struct rest_answer){.want = QRAFT__RESPONSE__BODY_GROUP_LIST,
                                  .build = groups_json});
        return;
    }
    change.name = group_name(req, m);
    if (change.name == NULL) {
        return;
    }
    if (m->op == REST_DELETE) {
        change.kind = QRAFT__GROUP_CHANGE_KIND__GROUP_DELETE;
        run_group_change(r, req, &change);
        return;
    }
    get.name = change.name;
    QR_REST_RUN(r, req, GROUP_GET, group_get, &get,
                &(struct rest_answer){.want = QRAFT__RESPONSE__BODY_GROUP,
                                      .build = groups_json});
}

/* POST (REST_ADD) and DELETE /v2/topics/{name}/endpoints: endpoints added
 * or removed. */
void qr_rest_topic_endpoints(struct qr_rest *r,
                             h2o_req_t *req,
                             const struct rest_match *m)
{
    Qraft__GroupChangeRequest change = QRAFT__GROUP_CHANGE_REQUEST__INIT;
    char err[ERR_BYTES];

    change.name = group_name(req, m);
    if (change.name == NULL) {
        return;
    }
    change.kind = m->op == REST_ADD
                      ? QRAFT__GROUP_CHANGE_KIND__GROUP_ADD_ENDPOINTS
                      : QRAFT__GROUP_CHANGE_KIND__GROUP_REMOVE_ENDPOINTS;
    if (qr_rest_parse_endpoints(req, &change, err) != 0) {
        qr_rest_send_error(req, 400, err);
        return;
    }
    run_group_change(r, req, &change);
}
