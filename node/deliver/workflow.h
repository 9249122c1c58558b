/* What the delivery of a workflow step carries beyond its message
 * (docs/workflow.md, "Deliveries"): the run's history up to and including
 * the message's own entry as the body, and the Upstash-Workflow-* headers
 * the SDK reads, after the run's forwarded headers. Built at send time
 * from this node's store: a run's entries never change once written, and
 * the owner of the message's shard has applied them with the message. */
#ifndef QR_DELIVER_WORKFLOW_H
#define QR_DELIVER_WORKFLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deliver/delivery.h"
#include "qraft.pb-c.h"
#include "store/store.h"

/* Headers qr_workflow_delivery adds after the run's. */
#define QR_WORKFLOW_EXTRA_HEADERS 4

struct qr_workflow_delivery {
    Qraft__WorkflowRun *run; /* NULL: the run is gone; send m as it is */
    uint8_t *body;           /* owned; NULL with body_len 0: lazy fetch */
    size_t body_len;
    char created_ms[24];
};

/* Whether m (a workflow message) is delivered with its run's history: a
 * step, not a context.call or its callback. */
bool qr_workflow_delivery_is_step(const Qraft__Message *m);

/* Loads m's run and builds the history body (empty when it would pass
 * max_body_bytes: the SDK then fetches the history itself). Returns 0 (out
 * filled; free with qr_workflow_delivery_free) or a store error / -ENOMEM.
 * A run that is gone is 0 with out->run NULL. */
int qr_workflow_delivery_build(struct qr_store_txn *txn,
                               const Qraft__Message *m,
                               size_t max_body_bytes,
                               struct qr_workflow_delivery *out);

/* Appends to headers (room for run->n_headers + m->n_headers +
 * QR_WORKFLOW_EXTRA_HEADERS) the run's forwarded headers that m does not
 * set itself, m's headers, and the Upstash-Workflow-* ones; returns how
 * many. The strings are borrowed from wd, m and static storage. */
size_t qr_workflow_delivery_headers(const struct qr_workflow_delivery *wd,
                                    const Qraft__Message *m,
                                    struct qr_delivery_header *headers);

void qr_workflow_delivery_free(struct qr_workflow_delivery *wd);

#endif /* QR_DELIVER_WORKFLOW_H */
