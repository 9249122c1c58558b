#include "deliver/workflow.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/base64.h"
#include "lib/err.h"

/* The history's JSON, grown as entries are added; `over` once it would
 * pass max (then it is dropped: lazy fetch). */
struct history {
    uint8_t *buf;
    size_t len, cap, max;
    bool over;
};

static int history_reserve(struct history *h, size_t more)
{
    if (h->len + more > h->max) {
        h->over = true;
        return 1; /* stops the walk */
    }
    if (h->len + more > h->cap) {
        size_t cap = h->cap > 0 ? h->cap : 4096;
        while (cap < h->len + more) {
            cap *= 2;
        }
        uint8_t *grown = realloc(h->buf, cap);
        if (grown == NULL) {
            return -ENOMEM;
        }
        h->buf = grown;
        h->cap = cap;
    }
    return 0;
}

static void history_put(struct history *h, const char *s)
{
    size_t n = strlen(s);
    memcpy(h->buf + h->len, s, n);
    h->len += n;
}

/* Appends {"messageId":..., "body": base64, "callType":...}. Ids and call
 * types are plain ASCII words (apply and the store keep them so), so they
 * need no escaping. */
static int add_entry(void *arg, uint32_t seq, const Qraft__WorkflowStep *st)
{
    struct history *h = arg;
    size_t b64 = qr_base64_len(st->body.len, true);
    size_t need = 64 + strlen(st->message_id) + strlen(st->call_type) + b64;
    int rv = history_reserve(h, need);
    if (rv != 0) {
        return rv;
    }
    history_put(h, seq == 0 ? "[" : ",");
    history_put(h, "{\"messageId\":\"");
    history_put(h, st->message_id);
    history_put(h, "\",\"body\":\"");
    qr_base64_encode_into(st->body.data, st->body.len, false, true,
                          (char *)h->buf + h->len);
    h->len += b64;
    history_put(h, "\",\"callType\":\"");
    history_put(h, st->call_type);
    history_put(h, "\"}");
    return 0;
}

bool qr_workflow_delivery_is_step(const Qraft__Message *m)
{
    return m->workflow_call_type[0] == '\0' ||
           strcmp(m->workflow_call_type, "step") == 0;
}

int qr_workflow_delivery_build(struct qr_store_txn *txn,
                               const Qraft__Message *m,
                               size_t max_body_bytes,
                               struct qr_workflow_delivery *out)
{
    memset(out, 0, sizeof *out);
    int rv = qr_store_run_get(txn, m->workflow_run_id, &out->run);
    if (rv == QR_ENOTFOUND) {
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    snprintf(out->created_ms, sizeof out->created_ms, "%" PRIu64,
             out->run->created_ms);
    struct history h = {.max = max_body_bytes};
    rv = qr_store_run_steps(txn, m->workflow_run_id, 0, m->workflow_seq,
                            add_entry, &h);
    if (rv == 0 && history_reserve(&h, 1) == 0) {
        history_put(&h, "]");
    }
    if (rv != 0 && !h.over) {
        free(h.buf);
        qr_workflow_delivery_free(out);
        return rv;
    }
    if (h.over) {
        free(h.buf); /* too big to send: the SDK fetches it (lazy fetch) */
        h.buf = NULL;
        h.len = 0;
    }
    out->body = h.buf;
    out->body_len = h.len;
    return 0;
}

static bool message_sets(const Qraft__Message *m, const char *name)
{
    for (size_t i = 0; i < m->n_headers; i++) {
        if (strcasecmp(m->headers[i]->name, name) == 0) {
            return true;
        }
    }
    return false;
}

size_t qr_workflow_delivery_headers(const struct qr_workflow_delivery *wd,
                                    const Qraft__Message *m,
                                    struct qr_delivery_header *headers)
{
    const Qraft__WorkflowRun *run = wd->run;
    size_t n = 0;
    for (size_t i = 0; i < run->n_headers; i++) {
        if (!message_sets(m, run->headers[i]->name)) {
            headers[n++] = (struct qr_delivery_header){run->headers[i]->name,
                                                       run->headers[i]->value};
        }
    }
    for (size_t i = 0; i < m->n_headers; i++) {
        headers[n++] = (struct qr_delivery_header){m->headers[i]->name,
                                                   m->headers[i]->value};
    }
    headers[n++] =
        (struct qr_delivery_header){"Upstash-Workflow-RunId", run->id};
    headers[n++] =
        (struct qr_delivery_header){"Upstash-Workflow-Url", run->url};
    headers[n++] = (struct qr_delivery_header){"Upstash-Workflow-CreatedAt",
                                               wd->created_ms};
    if (!message_sets(m, "Upstash-Workflow-Sdk-Version")) {
        headers[n++] =
            (struct qr_delivery_header){"Upstash-Workflow-Sdk-Version", "1"};
    }
    return n;
}

void qr_workflow_delivery_free(struct qr_workflow_delivery *wd)
{
    if (wd->run != NULL) {
        qraft__workflow_run__free_unpacked(wd->run, NULL);
    }
    free(wd->body);
    memset(wd, 0, sizeof *wd);
}
