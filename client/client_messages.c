/* libqraft's message reads and writes (include/qraft.h): get, cancel, list,
 * the dead-letter queue, and the conversions from protobuf to the public
 * structs. A converted struct owns copies of every string, never pointers
 * into the response. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "qraft.h"
#include "qraft.pb-c.h"

/* ----------------------------------------------------------------------
 * Conversions to the public structs */

enum qraft_state qr_client_to_state(Qraft__MessageState s)
{
    if ((int)s < 0 || (int)s >= QRAFT_N_STATES) {
        return QRAFT_STATE_UNSPECIFIED;
    }
    return (enum qraft_state)s;
}

static void message_fini(struct qraft_message *m)
{
    free(m->id);
    free(m->url);
    free(m->method);
    for (size_t i = 0; i < m->n_headers; i++) {
        free((char *)m->headers[i].name);
        free((char *)m->headers[i].value);
    }
    free(m->headers);
    free(m->body);
    free(m->retry_delay);
    free(m->callback);
    free(m->failure_callback);
    free(m->queue);
    free(m->dedup_id);
    free(m->last_error.category);
    free(m->last_error.message);
    free(m->dlq_hint);
    for (size_t i = 0; i < m->n_events; i++) {
        free(m->events[i].detail);
    }
    free(m->events);
}

/* Fills zeroed m from pm. On failure m holds what was copied: free it with
 * message_fini. */
static int message_from_pb(const Qraft__Message *pm, struct qraft_message *m)
{
    bool oom = false;
    m->id = qr_client_dup_str(pm->id, &oom);
    m->url = qr_client_dup_str(pm->url, &oom);
    m->method = qr_client_dup_str(pm->method, &oom);
    if (pm->n_headers > 0) {
        m->headers = calloc(pm->n_headers, sizeof *m->headers);
        if (m->headers == NULL) {
            return QRAFT_ENOMEM;
        }
        m->n_headers = pm->n_headers;
        for (size_t i = 0; i < pm->n_headers; i++) {
            m->headers[i].name = qr_client_dup_str(pm->headers[i]->name, &oom);
            m->headers[i].value =
                qr_client_dup_str(pm->headers[i]->value, &oom);
        }
    }
    m->body = malloc(pm->body.len + 1);
    if (m->body == NULL) {
        return QRAFT_ENOMEM;
    }
    if (pm->body.len > 0) {
        memcpy(m->body, pm->body.data, pm->body.len);
    }
    m->body[pm->body.len] = '\0';
    m->body_len = pm->body.len;
    m->state = qr_client_to_state(pm->state);
    m->max_retries = pm->max_retries;
    m->retry_delay = qr_client_dup_str(pm->retry_delay, &oom);
    m->timeout_ms = pm->timeout_ms;
    m->callback = qr_client_dup_str(pm->callback, &oom);
    m->failure_callback = qr_client_dup_str(pm->failure_callback, &oom);
    m->queue = qr_client_dup_str(pm->queue, &oom);
    m->dedup_id = qr_client_dup_str(pm->dedup_id, &oom);
    m->attempts = pm->attempts;
    m->not_before_ms = pm->not_before_ms;
    m->next_attempt_ms = pm->next_attempt_ms;
    m->created_ms = pm->created_ms;
    m->updated_ms = pm->updated_ms;
    const Qraft__LastError *le = pm->last_error;
    m->last_error.category =
        qr_client_dup_str(le != NULL ? le->category : "", &oom);
    m->last_error.status = le != NULL ? le->status : 0;
    m->last_error.message =
        qr_client_dup_str(le != NULL ? le->message : "", &oom);
    m->dead_lettered_ms = pm->dead_lettered_ms;
    m->dlq_hint = qr_client_dup_str(pm->dlq_hint, &oom);
    return oom ? QRAFT_ENOMEM : 0;
}

static int events_from_pb(Qraft__Event *const *pe,
                          size_t n,
                          struct qraft_message *m)
{
    if (n == 0) {
        return 0;
    }
    m->events = calloc(n, sizeof *m->events);
    if (m->events == NULL) {
        return QRAFT_ENOMEM;
    }
    m->n_events = n;
    bool oom = false;
    for (size_t i = 0; i < n; i++) {
        m->events[i].time_ms = pe[i]->time_ms;
        m->events[i].state = qr_client_to_state(pe[i]->state);
        m->events[i].attempt = pe[i]->attempt;
        m->events[i].detail = qr_client_dup_str(pe[i]->detail, &oom);
    }
    return oom ? QRAFT_ENOMEM : 0;
}

void qraft_message_free(struct qraft_message *m)
{
    if (m == NULL) {
        return;
    }
    message_fini(m);
    free(m);
}

void qraft_message_list_free(struct qraft_message_list *l)
{
    if (l == NULL) {
        return;
    }
    for (size_t i = 0; i < l->n_messages; i++) {
        message_fini(&l->messages[i]);
    }
    free(l->messages);
    free(l->cursor);
    free(l);
}

static int list_from_pb(Qraft__Message *const *pm,
                        size_t n,
                        const char *cursor,
                        struct qraft_message_list **out)
{
    struct qraft_message_list *l = calloc(1, sizeof *l);
    if (l == NULL) {
        return QRAFT_ENOMEM;
    }
    bool oom = false;
    l->cursor = qr_client_dup_str(cursor, &oom);
    if (n > 0) {
        l->messages = calloc(n, sizeof *l->messages);
        oom = oom || l->messages == NULL;
    }
    int rc = oom ? QRAFT_ENOMEM : 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        l->n_messages++;
        rc = message_from_pb(pm[i], &l->messages[i]);
    }
    if (rc != 0) {
        qraft_message_list_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

/* ----------------------------------------------------------------------
 * Reads and the other writes */

static int check_id(struct qraft_client *c, const char *id)
{
    if (id == NULL || id[0] == '\0') {
        return qr_client_fail(c, QRAFT_EINVAL, "a message id is required");
    }
    return 0;
}

int qraft_get(struct qraft_client *c,
              const char *id,
              struct qraft_message **out)
{
    int rc = check_id(c, id);
    if (rc != 0) {
        return rc;
    }
    Qraft__GetRequest get = QRAFT__GET_REQUEST__INIT;
    get.message_id = (char *)id;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_GET;
    req.get = &get;
    Qraft__Response *resp = NULL;
    rc = qr_client_call_expect(c, &req, RETRY_ANY, QRAFT__RESPONSE__BODY_GET,
                               &resp);
    if (rc != 0) {
        return rc;
    }
    const Qraft__GetResponse *g = resp->get;
    if (g->message == NULL) {
        qraft__response__free_unpacked(resp, NULL);
        return qr_client_fail(c, QRAFT_EPROTO,
                              "%s answered a get without a message", c->peer);
    }
    struct qraft_message *m = calloc(1, sizeof *m);
    if (m == NULL) {
        rc = QRAFT_ENOMEM;
    } else {
        rc = message_from_pb(g->message, m);
    }
    if (rc == 0) {
        rc = events_from_pb(g->events, g->n_events, m);
    }
    qraft__response__free_unpacked(resp, NULL);
    if (rc != 0) {
        qraft_message_free(m);
        return qr_client_fail(c, rc, "out of memory for a message");
    }
    *out = m;
    return 0;
}

int qraft_cancel(struct qraft_client *c, const char *id)
{
    int rc = check_id(c, id);
    if (rc != 0) {
        return rc;
    }
    Qraft__CancelRequest cancel = QRAFT__CANCEL_REQUEST__INIT;
    cancel.message_id = (char *)id;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_CANCEL;
    req.cancel = &cancel;
    Qraft__Response *resp = NULL;
    /* Cancelling twice leaves the message cancelled: RETRY_ANY. */
    bool ambiguous = false;
    rc = qr_client_call(c, &req, RETRY_ANY, &resp, &ambiguous);
    if (rc == QRAFT_ECONFLICT && ambiguous) {
        /* The node refuses to cancel a cancelled message; a lost earlier
         * attempt of ours may have done it: look before failing. */
        char why[QRAFT_ERRMSG_MAX];
        memcpy(why, c->errmsg, sizeof why);
        struct qraft_message *m = NULL;
        bool cancelled =
            qraft_get(c, id, &m) == 0 && m->state == QRAFT_STATE_CANCELLED;
        qraft_message_free(m);
        if (cancelled) {
            return 0;
        }
        return qr_client_fail(c, rc, "%s", why);
    }
    if (rc != 0) {
        return rc;
    }
    qraft__response__free_unpacked(resp, NULL);
    return 0;
}

int qraft_list(struct qraft_client *c,
               enum qraft_state state,
               const char *cursor,
               uint32_t limit,
               struct qraft_message_list **out)
{
    if ((int)state < 0 || (int)state >= QRAFT_N_STATES) {
        return qr_client_fail(c, QRAFT_EINVAL, "unknown state %d", (int)state);
    }
    Qraft__ListRequest list = QRAFT__LIST_REQUEST__INIT;
    list.state = (Qraft__MessageState)state;
    list.cursor = qr_client_or_empty(cursor);
    list.limit = limit;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_LIST;
    req.list = &list;
    Qraft__Response *resp = NULL;
    int rc = qr_client_call_expect(c, &req, RETRY_ANY,
                                   QRAFT__RESPONSE__BODY_LIST, &resp);
    if (rc != 0) {
        return rc;
    }
    rc = list_from_pb(resp->list->messages, resp->list->n_messages,
                      resp->list->cursor, out);
    qraft__response__free_unpacked(resp, NULL);
    if (rc != 0) {
        return qr_client_fail(c, rc, "out of memory for a list");
    }
    return 0;
}

int qraft_dlq_list(struct qraft_client *c,
                   const char *cursor,
                   uint32_t limit,
                   struct qraft_message_list **out)
{
    return qraft_dlq_list_matching(c, NULL, cursor, limit, out);
}

/* Matches the server's per-item results to ids: by id, else by position. */
static void bulk_results(const Qraft__BulkResponse *bulk,
                         const char *const *ids,
                         size_t n_ids,
                         struct qraft_item_result *results)
{
    for (size_t i = 0; i < n_ids; i++) {
        const Qraft__ItemResult *r = NULL;
        for (size_t j = 0; j < bulk->n_results && r == NULL; j++) {
            if (strcmp(bulk->results[j]->message_id, ids[i]) == 0) {
                r = bulk->results[j];
            }
        }
        if (r == NULL && bulk->n_results == n_ids &&
            bulk->results[i]->message_id[0] == '\0') {
            r = bulk->results[i];
        }
        struct qraft_item_result *out = &results[i];
        if (r == NULL) {
            out->rc = QRAFT_EPROTO;
            snprintf(out->error, sizeof out->error,
                     "the server sent no result for this id");
            continue;
        }
        out->rc = qr_client_status_code(r->status);
        snprintf(out->error, sizeof out->error, "%s",
                 r->error[0] != '\0' ? r->error : qraft_strerror(out->rc));
    }
}

static int bulk_call(struct qraft_client *c,
                     bool replay,
                     const char *const *ids,
                     size_t n_ids,
                     struct qraft_item_result *results)
{
    if (n_ids == 0 || ids == NULL || results == NULL) {
        return qr_client_fail(c, QRAFT_EINVAL,
                              "at least one message id is required");
    }
    for (size_t i = 0; i < n_ids; i++) {
        int rc = check_id(c, ids[i]);
        if (rc != 0) {
            return rc;
        }
    }
    Qraft__DlqReplayRequest rep = QRAFT__DLQ_REPLAY_REQUEST__INIT;
    Qraft__DlqDeleteRequest del = QRAFT__DLQ_DELETE_REQUEST__INIT;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    if (replay) {
        rep.n_message_ids = n_ids;
        rep.message_ids = (char **)ids;
        req.body_case = QRAFT__REQUEST__BODY_DLQ_REPLAY;
        req.dlq_replay = &rep;
    } else {
        del.n_message_ids = n_ids;
        del.message_ids = (char **)ids;
        req.body_case = QRAFT__REQUEST__BODY_DLQ_DELETE;
        req.dlq_delete = &del;
    }
    /* A replay repeated after the first went through could requeue a
     * message that already went round again; a delete cannot do harm. */
    Qraft__Response *resp = NULL;
    int rc = qr_client_call_expect(c, &req, replay ? RETRY_UNSENT : RETRY_ANY,
                                   QRAFT__RESPONSE__BODY_BULK, &resp);
    if (rc != 0) {
        return rc;
    }
    bulk_results(resp->bulk, ids, n_ids, results);
    qraft__response__free_unpacked(resp, NULL);
    return 0;
}

int qraft_dlq_replay(struct qraft_client *c,
                     const char *const *ids,
                     size_t n_ids,
                     struct qraft_item_result *results)
{
    return bulk_call(c, true, ids, n_ids, results);
}

int qraft_dlq_delete(struct qraft_client *c,
                     const char *const *ids,
                     size_t n_ids,
                     struct qraft_item_result *results)
{
    return bulk_call(c, false, ids, n_ids, results);
}

void qraft_bulk_free(struct qraft_bulk *b)
{
    if (b == NULL) {
        return;
    }
    for (size_t i = 0; i < b->n; i++) {
        free(b->ids[i]);
    }
    free(b->ids);
    free(b->results);
    free(b);
}

static int bulk_from_items(struct qraft_client *c,
                           Qraft__ItemResult *const *items,
                           size_t n,
                           struct qraft_bulk **out)
{
    struct qraft_bulk *b = calloc(1, sizeof *b);
    bool oom = b == NULL;
    if (!oom && n > 0) {
        b->ids = calloc(n, sizeof *b->ids);
        b->results = calloc(n, sizeof *b->results);
        oom = b->ids == NULL || b->results == NULL;
    }
    for (size_t i = 0; !oom && i < n; i++) {
        const Qraft__ItemResult *r = items[i];
        b->ids[i] = qr_client_dup_str(r->message_id, &oom);
        b->results[i].rc = qr_client_status_code(r->status);
        snprintf(
            b->results[i].error, sizeof b->results[i].error, "%s",
            r->error[0] != '\0' ? r->error : qraft_strerror(b->results[i].rc));
        b->n = i + 1;
    }
    if (oom) {
        qraft_bulk_free(b);
        return qr_client_fail(c, QRAFT_ENOMEM,
                              "out of memory for a bulk result");
    }
    *out = b;
    return 0;
}

int qr_client_call_bulk(struct qraft_client *c,
                        Qraft__Request *req,
                        enum retry_policy policy,
                        struct qraft_bulk **out)
{
    Qraft__Response *resp = NULL;
    int rc = qr_client_call(c, req, policy, &resp, NULL);
    if (rc != 0) {
        return rc;
    }
    if (resp->body_case == QRAFT__RESPONSE__BODY_BULK) {
        rc =
            bulk_from_items(c, resp->bulk->results, resp->bulk->n_results, out);
    } else if (resp->body_case == QRAFT__RESPONSE__BODY_BULK_PAGE) {
        rc = bulk_from_items(c, resp->bulk_page->results,
                             resp->bulk_page->n_results, out);
    } else {
        qr_client_drop_connection(c, QRAFT_EPROTO);
        rc = qr_client_fail(c, QRAFT_EPROTO, "%s answered with the wrong body",
                            c->peer);
    }
    qraft__response__free_unpacked(resp, NULL);
    return rc;
}

int qraft_dlq_replay_matching(struct qraft_client *c,
                              const struct qraft_dlq_filter *f,
                              struct qraft_bulk **out)
{
    if (f == NULL || out == NULL ||
        !(f->all || (f->url_prefix != NULL && f->url_prefix[0] != '\0') ||
          (f->category != NULL && f->category[0] != '\0') || f->since_ms != 0 ||
          f->until_ms != 0)) {
        return qr_client_fail(c, QRAFT_EINVAL,
                              "a filter needs `all` or at least one field set");
    }
    Qraft__DlqReplayRequest rep = QRAFT__DLQ_REPLAY_REQUEST__INIT;
    rep.all = f->all;
    rep.url_prefix = qr_client_or_empty(f->url_prefix);
    rep.category = qr_client_or_empty(f->category);
    rep.since_ms = f->since_ms;
    rep.until_ms = f->until_ms;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_DLQ_REPLAY;
    req.dlq_replay = &rep;
    return qr_client_call_bulk(c, &req, RETRY_UNSENT, out);
}

/* The MessageFilter of a DLQ filter (until is exclusive, to_ms inclusive). */
static void dlq_filter_to_pb(const struct qraft_dlq_filter *f,
                             Qraft__MessageFilter *pf)
{
    qraft__message_filter__init(pf);
    pf->url_prefix = qr_client_or_empty(f->url_prefix);
    pf->error_category = qr_client_or_empty(f->category);
    pf->from_ms = f->since_ms;
    pf->to_ms = f->until_ms > 0 ? f->until_ms - 1 : 0;
}

int qraft_dlq_list_matching(struct qraft_client *c,
                            const struct qraft_dlq_filter *f,
                            const char *cursor,
                            uint32_t limit,
                            struct qraft_message_list **out)
{
    Qraft__MessageFilter pf;
    Qraft__DlqListRequest list = QRAFT__DLQ_LIST_REQUEST__INIT;
    list.cursor = qr_client_or_empty(cursor);
    list.limit = limit;
    if (f != NULL) {
        dlq_filter_to_pb(f, &pf);
        list.filter = &pf;
    }
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_DLQ_LIST;
    req.dlq_list = &list;
    Qraft__Response *resp = NULL;
    int rc = qr_client_call_expect(c, &req, RETRY_ANY,
                                   QRAFT__RESPONSE__BODY_DLQ_LIST, &resp);
    if (rc != 0) {
        return rc;
    }
    rc = list_from_pb(resp->dlq_list->messages, resp->dlq_list->n_messages,
                      resp->dlq_list->cursor, out);
    qraft__response__free_unpacked(resp, NULL);
    if (rc != 0) {
        return qr_client_fail(c, rc, "out of memory for a list");
    }
    return 0;
}

int qraft_dlq_delete_matching(struct qraft_client *c,
                              const struct qraft_dlq_filter *f,
                              struct qraft_bulk **out)
{
    if (f == NULL || out == NULL) {
        return qr_client_fail(c, QRAFT_EINVAL, "a filter is required");
    }
    Qraft__MessageFilter pf;
    dlq_filter_to_pb(f, &pf);
    Qraft__DlqDeleteRequest del = QRAFT__DLQ_DELETE_REQUEST__INIT;
    del.filter = &pf;
    del.all = f->all;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_DLQ_DELETE;
    req.dlq_delete = &del;
    return qr_client_call_bulk(c, &req, RETRY_ANY, out);
}
