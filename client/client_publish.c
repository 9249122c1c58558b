/* libqraft's publishes (include/qraft.h): qraft_publish, and pipelined
 * publishes (qraft_publish_send/recv) that share one connection with many
 * requests in flight. Every publish carries an idempotency key, drawn here
 * when the caller gives none, so a retried publish is never a second
 * message. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "qraft.h"
#include "qraft.pb-c.h"

/* ----------------------------------------------------------------------
 * Publish */

void qr_client_publish_req_fini(struct qr_client_publish_req *r)
{
    free(r->headers);
    free(r->header_ptrs);
    free(r->redact_spec);
    free(r->redact_names);
}

/* Trims blanks around s in place. */
static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t') {
        s++;
    }
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) {
        s[--n] = '\0';
    }
    return s;
}

/* Cuts spec (Upstash-Redact-Fields syntax) into r->redact; the server
 * checks the names. */
static int parse_redact(struct qraft_client *c,
                        const char *spec,
                        struct qr_client_publish_req *r)
{
    size_t n_items = 1;
    for (const char *q = spec; *q; q++) {
        n_items += *q == ',';
    }
    r->redact_spec = strdup(spec);
    r->redact_names = calloc(n_items, sizeof *r->redact_names);
    if (r->redact_spec == NULL || r->redact_names == NULL) {
        return qr_client_fail(c, QRAFT_ENOMEM, "out of memory for redact");
    }
    qraft__redact__init(&r->redact);
    r->redact.headers = r->redact_names;
    char *save = NULL;
    for (char *item = strtok_r(r->redact_spec, ",", &save); item != NULL;
         item = strtok_r(NULL, ",", &save)) {
        item = trim(item);
        size_t len = strlen(item);
        size_t skip = strncasecmp(item, "header[", 7) == 0    ? 7
                      : strncasecmp(item, "headers[", 8) == 0 ? 8
                                                              : 0;
        if (len == 0) {
            continue;
        } else if (strcasecmp(item, "body") == 0) {
            r->redact.body = true;
        } else if (strcasecmp(item, "header") == 0 ||
                   strcasecmp(item, "headers") == 0) {
            r->redact.all_headers = true;
        } else if (skip != 0 && item[len - 1] == ']' && len - 1 > skip) {
            item[len - 1] = '\0';
            r->redact_names[r->redact.n_headers++] = item + skip;
        } else {
            return qr_client_fail(
                c, QRAFT_EINVAL,
                "redact: '%s' is not body, header or header[Name]", item);
        }
    }
    return 0;
}

int qr_client_publish_req_init(struct qraft_client *c,
                               const struct qraft_publish *p,
                               const char *group,
                               struct qr_client_publish_req *r)
{
    memset(r, 0, sizeof *r);
    qraft__publish_request__init(&r->pr);
    bool to_group = group != NULL && group[0] != '\0';
    bool has_url = p != NULL && p->url != NULL && p->url[0] != '\0';
    if (p == NULL || (!to_group && !has_url)) {
        return qr_client_fail(c, QRAFT_EINVAL, "a url is required");
    }
    if (to_group && has_url) {
        return qr_client_fail(c, QRAFT_EINVAL,
                              "give a url or a url group, not both");
    }
    if (p->body == NULL && p->body_len > 0) {
        return qr_client_fail(c, QRAFT_EINVAL,
                              "body is NULL but body_len is %zu", p->body_len);
    }
    if (p->n_headers > 0 && p->headers == NULL) {
        return qr_client_fail(c, QRAFT_EINVAL,
                              "headers is NULL but n_headers is %zu",
                              p->n_headers);
    }
    for (size_t i = 0; i < p->n_headers; i++) {
        if (p->headers[i].name == NULL || p->headers[i].name[0] == '\0') {
            return qr_client_fail(c, QRAFT_EINVAL, "header %zu has no name", i);
        }
    }
    if (p->idempotency_key != NULL) {
        if (strlen(p->idempotency_key) >= QRAFT_KEY_MAX) {
            return qr_client_fail(c, QRAFT_EINVAL,
                                  "idempotency_key is longer than %d bytes",
                                  QRAFT_KEY_MAX - 1);
        }
        strcpy(r->key, p->idempotency_key);
    } else if (p->dedup_id == NULL || p->dedup_id[0] == '\0') {
        int rc = qr_client_make_key(c, r->key);
        if (rc != 0) {
            return rc;
        }
        r->generated_key = true;
    }
    if (p->n_headers > 0) {
        r->headers = calloc(p->n_headers, sizeof *r->headers);
        r->header_ptrs = calloc(p->n_headers, sizeof *r->header_ptrs);
        if (r->headers == NULL || r->header_ptrs == NULL) {
            qr_client_publish_req_fini(r);
            return qr_client_fail(c, QRAFT_ENOMEM, "out of memory for headers");
        }
    }
    for (size_t i = 0; i < p->n_headers; i++) {
        qraft__header__init(&r->headers[i]);
        r->headers[i].name = (char *)p->headers[i].name;
        r->headers[i].value = qr_client_or_empty(p->headers[i].value);
        r->header_ptrs[i] = &r->headers[i];
    }
    if (p->redact != NULL) {
        int rc = parse_redact(c, p->redact, r);
        if (rc != 0) {
            qr_client_publish_req_fini(r);
            return rc;
        }
        r->pr.redact = &r->redact;
    }
    Qraft__PublishRequest *pr = &r->pr;
    pr->url = qr_client_or_empty(p->url);
    pr->topic_name = qr_client_or_empty(group);
    pr->method = qr_client_or_empty(p->method);
    pr->n_headers = p->n_headers;
    pr->headers = r->header_ptrs;
    pr->body.data = (uint8_t *)p->body;
    pr->body.len = p->body_len;
    pr->delay_ms = p->delay_ms;
    pr->not_before_ms = p->not_before_ms;
    if (p->has_retries) {
        pr->retries_set = true; /* protoc-c 1.4 has no proto3 `optional` */
        pr->retries = p->retries;
    }
    pr->retry_delay = qr_client_or_empty(p->retry_delay);
    pr->timeout_ms = p->timeout_ms;
    pr->dedup_id = qr_client_or_empty(p->dedup_id);
    pr->content_dedup = p->content_dedup;
    pr->callback = qr_client_or_empty(p->callback);
    pr->failure_callback = qr_client_or_empty(p->failure_callback);
    pr->queue = qr_client_or_empty(p->queue);
    pr->idempotency_key = r->key;
    const struct qraft_retry_options *o = &p->retry_options;
    if (o->strict || o->min_backoff_ms != 0 || o->max_backoff_ms != 0 ||
        o->max_doublings != 0 || o->max_retry_duration_ms != 0) {
        qraft__retry_options__init(&r->retry_options);
        r->retry_options.strict = o->strict;
        r->retry_options.min_backoff_ms = o->min_backoff_ms;
        r->retry_options.max_backoff_ms = o->max_backoff_ms;
        r->retry_options.max_doublings = o->max_doublings;
        r->retry_options.max_retry_duration_ms = o->max_retry_duration_ms;
        pr->retry_options = &r->retry_options;
    }
    return 0;
}

static int copy_id(struct qraft_client *c,
                   const Qraft__Response *resp,
                   char id[QRAFT_ID_MAX],
                   bool *deduplicated)
{
    if (resp->body_case != QRAFT__RESPONSE__BODY_PUBLISH ||
        resp->publish->message_id == NULL ||
        resp->publish->message_id[0] == '\0' ||
        strlen(resp->publish->message_id) >= QRAFT_ID_MAX) {
        return qr_client_fail(c, QRAFT_EPROTO,
                              "%s answered a publish without an id", c->peer);
    }
    strcpy(id, resp->publish->message_id);
    *deduplicated = resp->publish->deduplicated;
    return 0;
}

int qraft_publish(struct qraft_client *c,
                  const struct qraft_publish *p,
                  char id[QRAFT_ID_MAX],
                  bool *deduplicated)
{
    struct qr_client_publish_req r;
    int rc = qr_client_publish_req_init(c, p, NULL, &r);
    if (rc != 0) {
        return rc;
    }
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_PUBLISH;
    req.publish = &r.pr;
    Qraft__Response *resp = NULL;
    bool ambiguous = false;
    rc = qr_client_call(c, &req, RETRY_ANY, &resp, &ambiguous);
    if (rc != 0) {
        goto out;
    }
    bool dedup = false;
    rc = copy_id(c, resp, id, &dedup);
    if (rc == 0 && deduplicated != NULL) {
        /* Only our own earlier attempt can match a key we just drew. */
        bool own = r.generated_key && ambiguous && !p->content_dedup;
        *deduplicated = dedup && !own;
    }
    qraft__response__free_unpacked(resp, NULL);
out:
    qr_client_publish_req_fini(&r);
    return rc;
}

void qraft_group_publish_free(struct qraft_published *msgs, size_t n)
{
    if (msgs == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        free(msgs[i].id);
        free(msgs[i].url);
        free(msgs[i].endpoint);
    }
    free(msgs);
}

int qraft_publish_group(struct qraft_client *c,
                        const char *group,
                        const struct qraft_publish *p,
                        struct qraft_published **out,
                        size_t *n)
{
    if (group == NULL || group[0] == '\0') {
        return qr_client_fail(c, QRAFT_EINVAL, "a url group name is required");
    }
    struct qr_client_publish_req r;
    int rc = qr_client_publish_req_init(c, p, group, &r);
    if (rc != 0) {
        return rc;
    }
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_PUBLISH;
    req.publish = &r.pr;
    Qraft__Response *resp = NULL;
    rc = qr_client_call_expect(c, &req, RETRY_ANY,
                               QRAFT__RESPONSE__BODY_PUBLISH, &resp);
    qr_client_publish_req_fini(&r);
    if (rc != 0) {
        return rc;
    }
    const Qraft__PublishResponse *pr = resp->publish;
    struct qraft_published *msgs =
        calloc(pr->n_messages > 0 ? pr->n_messages : 1, sizeof *msgs);
    bool oom = msgs == NULL;
    for (size_t i = 0; !oom && i < pr->n_messages; i++) {
        const Qraft__PublishedMessage *pm = pr->messages[i];
        msgs[i].id = qr_client_dup_str(pm->message_id, &oom);
        msgs[i].url = qr_client_dup_str(pm->url, &oom);
        msgs[i].endpoint = qr_client_dup_str(pm->endpoint_name, &oom);
        msgs[i].deduplicated = pm->deduplicated;
    }
    size_t got = pr->n_messages;
    qraft__response__free_unpacked(resp, NULL);
    if (oom) {
        qraft_group_publish_free(msgs, got);
        return qr_client_fail(c, QRAFT_ENOMEM, "out of memory for a publish");
    }
    *out = msgs;
    *n = got;
    return 0;
}

/* ----------------------------------------------------------------------
 * Pipelined publishes */

size_t qraft_publish_outstanding(const struct qraft_client *c)
{
    return c->n_pend;
}

int qraft_publish_send(struct qraft_client *c,
                       const struct qraft_publish *p,
                       uint64_t *ticket)
{
    if (c->n_pend == c->cap_pend) {
        size_t cap = c->cap_pend == 0 ? 64 : c->cap_pend * 2;
        struct pending *pend = realloc(c->pend, cap * sizeof *pend);
        if (pend == NULL) {
            return qr_client_fail(c, QRAFT_ENOMEM,
                                  "out of memory for a publish");
        }
        c->pend = pend;
        c->cap_pend = cap;
    }
    struct qr_client_publish_req r;
    int rc = qr_client_publish_req_init(c, p, NULL, &r);
    if (rc != 0) {
        return rc;
    }
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.token = c->token;
    req.body_case = QRAFT__REQUEST__BODY_PUBLISH;
    req.publish = &r.pr;
    rc = qr_client_check_size(c, &req);
    if (rc != 0) {
        goto out;
    }
    int64_t deadline = qr_client_now_ms() + c->opts.call_timeout_ms;
    if (c->fd < 0 || !qr_client_conn_alive(c)) {
        rc = qr_client_conn_open(c, deadline);
        if (rc != 0) {
            if (rc != QRAFT_ETLS) {
                qr_client_next_endpoint(c);
            }
            goto out;
        }
    }
    req.id = ++c->next_id;
    rc = qr_client_send_request(c, &req, deadline);
    if (rc != 0) {
        if (rc != QRAFT_ENOMEM) {
            qr_client_drop_connection(c, QRAFT_EUNKNOWN);
        }
        goto out;
    }
    struct pending *pe = &c->pend[c->n_pend++];
    pe->id = req.id;
    pe->lost_rc = 0;
    memcpy(pe->key, r.key, sizeof pe->key);
    *ticket = req.id;
out:
    qr_client_publish_req_fini(&r);
    return rc;
}

/* Hands out pend[i] as a reply with code rc and forgets it. */
static void reply_from(struct qraft_client *c,
                       size_t i,
                       int rc,
                       struct qraft_publish_reply *out)
{
    memset(out, 0, sizeof *out);
    out->ticket = c->pend[i].id;
    out->rc = rc;
    memcpy(out->idempotency_key, c->pend[i].key, sizeof out->idempotency_key);
    c->pend[i] = c->pend[--c->n_pend];
}

int qraft_publish_recv(struct qraft_client *c,
                       int timeout_ms,
                       struct qraft_publish_reply *out)
{
    if (c->n_pend == 0) {
        return qr_client_fail(c, QRAFT_EINVAL, "no publish is outstanding");
    }
    int64_t deadline = timeout_ms < 0 ? -1 : qr_client_now_ms() + timeout_ms;
    for (;;) {
        for (size_t i = 0; i < c->n_pend; i++) {
            if (c->pend[i].lost_rc != 0) {
                reply_from(c, i, c->pend[i].lost_rc, out);
                return 0;
            }
        }
        Qraft__Response *resp = NULL;
        int rc = qr_client_conn_recv(c, deadline, &resp);
        if (rc == QRAFT_ETIMEDOUT) {
            return rc;
        }
        if (rc != 0) {
            qr_client_drop_connection(c,
                                      rc == QRAFT_EPROTO ? rc : QRAFT_EUNKNOWN);
            continue;
        }
        size_t i = 0;
        while (i < c->n_pend && c->pend[i].id != resp->id) {
            i++;
        }
        if (i == c->n_pend) {
            uint64_t got = resp->id;
            qraft__response__free_unpacked(resp, NULL);
            qr_client_fail(c, QRAFT_EPROTO,
                           "%s answered request %" PRIu64
                           ", which is not outstanding",
                           c->peer, got);
            qr_client_drop_connection(c, QRAFT_EPROTO);
            continue;
        }
        if (resp->status != QRAFT__STATUS__OK) {
            reply_from(c, i, qr_client_fail_server(c, resp), out);
        } else {
            char id[QRAFT_ID_MAX];
            bool dedup = false;
            rc = copy_id(c, resp, id, &dedup);
            reply_from(c, i, rc, out);
            if (rc == 0) {
                memcpy(out->id, id, sizeof out->id);
                out->deduplicated = dedup;
            }
        }
        qraft__response__free_unpacked(resp, NULL);
        return 0;
    }
}
