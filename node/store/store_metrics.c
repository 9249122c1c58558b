#include "store/store_metrics.h"

#include <stdio.h>
#include <string.h>

#include "lib/err.h"
#include "store/store_int.h"

_Static_assert(QR_METRICS_N_STATES == QR_STORE_N_STATES,
               "metrics count every stored state");
_Static_assert(N_DBS <= QR_METRICS_MAX_DBS, "metrics show every database");

static int on_queue(void *arg, const Qraft__Queue *q)
{
    struct qr_metrics_gauges *g = arg;
    struct qr_metrics_queue *out = &g->other_queues;
    if (g->n_queues < QR_METRICS_MAX_QUEUES) {
        out = &g->queues[g->n_queues++];
        snprintf(out->name, sizeof out->name, "%s", q->name);
    } else {
        g->n_other_queues++;
    }
    out->waiting += q->waiting;
    out->active += q->active;
    return 0;
}

static int read_db_bytes(struct qr_store_txn *t, struct qr_metrics_gauges *g)
{
    for (unsigned i = 0; i < N_DBS; i++) {
        MDB_stat st;
        int rc = mdb_stat(t->txn, t->s->dbis[i], &st);
        if (rc != 0) {
            return store_fail_mdb(t->s, false, "stat", rc);
        }
        g->dbs[i].name = store_db_names[i];
        g->dbs[i].bytes = (uint64_t)(st.ms_branch_pages + st.ms_leaf_pages +
                                     st.ms_overflow_pages) *
                          st.ms_psize;
    }
    g->n_dbs = N_DBS;
    return 0;
}

int qr_store_read_gauges(struct qr_store_txn *t,
                         uint32_t n_shards,
                         uint64_t now_ms,
                         struct qr_metrics_gauges *g)
{
    int rv = qr_store_count_states(t, g->state_counts);
    if (rv != 0) {
        return rv;
    }
    g->have_counts = true;
    uint64_t earliest_ms = UINT64_MAX;
    for (uint32_t shard = 0; shard < n_shards; shard++) {
        uint64_t due_ms = 0;
        rv = qr_store_due_next(t, shard, 0, &due_ms);
        if (rv == 0 && due_ms < earliest_ms) {
            earliest_ms = due_ms;
        } else if (rv != 0 && rv != QR_ENOTFOUND) {
            return rv;
        }
    }
    g->oldest_due_age_ms = earliest_ms < now_ms ? now_ms - earliest_ms : 0;
    rv = qr_store_queue_list(t, NULL, SIZE_MAX, on_queue, g);
    if (rv != 0) {
        return rv;
    }
    return read_db_bytes(t, g);
}
