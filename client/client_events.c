/* libqraft's message log and bulk cancel (include/qraft.h): qraft_logs
 * over the events RPC, qraft_cancel_matching over cancel_many and
 * qraft_cancel_count over cancel_count, all taking a struct qraft_filter,
 * which becomes the RPC's MessageFilter with one value in each repeated
 * field that is set. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "qraft.h"
#include "qraft.pb-c.h"

/* The LogState names, indexed by Qraft__LogState. */
static const char *const log_states[] = {
    "UNSPECIFIED", "CREATED", "ACTIVE",           "DELIVERED", "ERROR",
    "RETRY",       "FAILED",  "CANCEL_REQUESTED", "CANCELLED",
};
#define N_LOG_STATES (sizeof log_states / sizeof log_states[0])

static int log_state_parse(const char *name)
{
    return qr_client_name_index(log_states, N_LOG_STATES, name);
}

int qraft_log_state_check(const char *name)
{
    return log_state_parse(name) < 0 ? QRAFT_EINVAL : 0;
}

/* A MessageFilter borrowing f's strings: each repeated field that is set
 * points at its one slot here. */
struct filter_pb {
    Qraft__MessageFilter pf;
    char *one[11];
    int32_t status;
};

static bool set(const char *s)
{
    return s != NULL && s[0] != '\0';
}

/* Points *field at slot (holding s) and sets its count, when s is set. */
static void one_value(const char *s, char **slot, char ***field, size_t *n)
{
    if (set(s)) {
        *slot = (char *)s;
        *field = slot;
        *n = 1;
    }
}

static void filter_to_pb(const struct qraft_filter *f, struct filter_pb *out)
{
    Qraft__MessageFilter *pf = &out->pf;
    qraft__message_filter__init(pf);
    if (f == NULL) {
        return;
    }
    char **s = out->one;
    one_value(f->message_id, &s[0], &pf->message_ids, &pf->n_message_ids);
    one_value(f->url, &s[1], &pf->urls, &pf->n_urls);
    one_value(f->host, &s[2], &pf->hosts, &pf->n_hosts);
    one_value(f->path, &s[3], &pf->paths, &pf->n_paths);
    one_value(f->group, &s[4], &pf->topic_names, &pf->n_topic_names);
    one_value(f->queue, &s[5], &pf->queue_names, &pf->n_queue_names);
    one_value(f->schedule_id, &s[6], &pf->schedule_ids, &pf->n_schedule_ids);
    one_value(f->label, &s[7], &pf->labels, &pf->n_labels);
    one_value(f->flow_control_key, &s[8], &pf->flow_control_keys,
              &pf->n_flow_control_keys);
    one_value(f->caller_ip, &s[9], &pf->caller_ips, &pf->n_caller_ips);
    one_value(f->workflow_run_id, &s[10], &pf->workflow_run_ids,
              &pf->n_workflow_run_ids);
    if (f->response_status != 0) {
        out->status = f->response_status;
        pf->response_statuses = &out->status;
        pf->n_response_statuses = 1;
    }
    pf->from_ms = f->from_ms;
    pf->to_ms = f->to_ms;
    pf->url_prefix = qr_client_or_empty(f->url_prefix);
    pf->error_category = qr_client_or_empty(f->category);
}

static bool filter_is_empty(const struct qraft_filter *f)
{
    return f == NULL ||
           !(set(f->message_id) || set(f->url) || set(f->url_prefix) ||
             set(f->host) || set(f->path) || set(f->group) || set(f->queue) ||
             set(f->schedule_id) || set(f->label) || set(f->flow_control_key) ||
             set(f->caller_ip) || set(f->category) || set(f->workflow_run_id) ||
             f->response_status != 0 || f->from_ms != 0 || f->to_ms != 0);
}

void qraft_log_page_free(struct qraft_log_page *p)
{
    if (p == NULL) {
        return;
    }
    for (size_t i = 0; i < p->n_entries; i++) {
        struct qraft_log_entry *e = &p->entries[i];
        free(e->message_id);
        free(e->state);
        free(e->detail);
        free(e->url);
    }
    free(p->entries);
    free(p->cursor);
    free(p);
}

static int log_page_from_pb(struct qraft_client *c,
                            const Qraft__EventsResponse *r,
                            struct qraft_log_page **out)
{
    struct qraft_log_page *p = calloc(1, sizeof *p);
    bool oom = p == NULL;
    if (!oom && r->n_entries > 0) {
        p->entries = calloc(r->n_entries, sizeof *p->entries);
        oom = p->entries == NULL;
    }
    for (size_t i = 0; !oom && i < r->n_entries; i++) {
        const Qraft__EventEntry *pe = r->entries[i];
        const Qraft__Event *ev = pe->event;
        struct qraft_log_entry *e = &p->entries[i];
        p->n_entries = i + 1;
        size_t st = (size_t)pe->state < N_LOG_STATES ? (size_t)pe->state : 0;
        e->message_id = qr_client_dup_str(ev ? ev->message_id : "", &oom);
        e->state = qr_client_dup_str(log_states[st], &oom);
        e->detail = qr_client_dup_str(ev ? ev->detail : "", &oom);
        e->url = qr_client_dup_str(pe->message ? pe->message->url : "", &oom);
        e->time_ms = ev ? ev->time_ms : 0;
        e->attempt = ev ? ev->attempt : 0;
    }
    if (!oom) {
        p->cursor = qr_client_dup_str(r->cursor, &oom);
    }
    if (oom) {
        qraft_log_page_free(p);
        return qr_client_fail(c, QRAFT_ENOMEM, "out of memory for logs");
    }
    *out = p;
    return 0;
}

int qraft_logs(struct qraft_client *c,
               const struct qraft_filter *f,
               const char *const *states,
               size_t n_states,
               const char *cursor,
               uint32_t limit,
               bool oldest_first,
               struct qraft_log_page **out)
{
    Qraft__LogState *want = NULL;
    if (n_states > 0) {
        want = calloc(n_states, sizeof *want);
        if (want == NULL) {
            return qr_client_fail(c, QRAFT_ENOMEM, "out of memory for logs");
        }
    }
    for (size_t i = 0; i < n_states; i++) {
        int s = log_state_parse(states[i]);
        if (s < 0) {
            free(want);
            return qr_client_fail(c, QRAFT_EINVAL,
                                  "unknown log state '%s': expected CREATED, "
                                  "ACTIVE, DELIVERED, ERROR, RETRY, FAILED, "
                                  "CANCEL_REQUESTED or CANCELLED",
                                  states[i] != NULL ? states[i] : "");
        }
        want[i] = (Qraft__LogState)s;
    }
    struct filter_pb fpb;
    filter_to_pb(f, &fpb);
    Qraft__EventsRequest ev = QRAFT__EVENTS_REQUEST__INIT;
    ev.filter = &fpb.pf;
    ev.states = want;
    ev.n_states = n_states;
    ev.cursor = qr_client_or_empty(cursor);
    ev.limit = limit;
    ev.oldest_first = oldest_first;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_EVENTS;
    req.events = &ev;
    Qraft__Response *resp = NULL;
    int rc = qr_client_call_expect(c, &req, RETRY_ANY,
                                   QRAFT__RESPONSE__BODY_EVENTS, &resp);
    free(want);
    if (rc != 0) {
        return rc;
    }
    rc = log_page_from_pb(c, resp->events, out);
    qraft__response__free_unpacked(resp, NULL);
    return rc;
}

/* The MessageFilter of a cancel by filter (into fpb), which names at least
 * one field: none would be everything. */
static int cancel_filter(struct qraft_client *c,
                         const struct qraft_filter *f,
                         struct filter_pb *fpb)
{
    if (filter_is_empty(f)) {
        return qr_client_fail(c, QRAFT_EINVAL,
                              "a cancel by filter needs at least one field "
                              "set");
    }
    filter_to_pb(f, fpb);
    return 0;
}

int qraft_cancel_count(struct qraft_client *c,
                       const struct qraft_filter *f,
                       uint64_t *count)
{
    struct filter_pb fpb;
    int rc = cancel_filter(c, f, &fpb);
    if (rc != 0) {
        return rc;
    }
    Qraft__CancelCountRequest cc = QRAFT__CANCEL_COUNT_REQUEST__INIT;
    cc.filter = &fpb.pf;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_CANCEL_COUNT;
    req.cancel_count = &cc;
    Qraft__Response *resp = NULL;
    rc = qr_client_call_expect(c, &req, RETRY_ANY, QRAFT__RESPONSE__BODY_COUNT,
                               &resp);
    if (rc != 0) {
        return rc;
    }
    *count = resp->count->count;
    qraft__response__free_unpacked(resp, NULL);
    return 0;
}

int qraft_cancel_matching(struct qraft_client *c,
                          const struct qraft_filter *f,
                          uint32_t limit,
                          struct qraft_bulk **out)
{
    struct filter_pb fpb;
    int rc = cancel_filter(c, f, &fpb);
    if (rc != 0) {
        return rc;
    }
    Qraft__CancelManyRequest cm = QRAFT__CANCEL_MANY_REQUEST__INIT;
    cm.filter = &fpb.pf;
    cm.limit = limit;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_CANCEL_MANY;
    req.cancel_many = &cm;
    return qr_client_call_bulk(c, &req, RETRY_ANY, out);
}
