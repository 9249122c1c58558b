/* What /metrics reads from the store (the gauges of node/lib/metrics.h):
 * messages by state, how overdue the most overdue message is, each queue's
 * depth and each database's size. One read transaction, one seek per shard,
 * a walk of the queues and a stat per database: cheap enough for a scrape,
 * not for every request. Reads only; changes nothing. */
#ifndef QR_STORE_METRICS_H
#define QR_STORE_METRICS_H

#include <stdint.h>

#include "lib/metrics.h"
#include "store/store.h"

/* Fills g's have_counts, state_counts, oldest_due_age_ms (now_ms, the
 * leader's clock, minus the earliest due time of shards 0..n_shards-1;
 * flow control waitlists are not looked at), queues and dbs from t.
 * Returns 0 or a negative QR_E* (g's store fields are then partly set:
 * have_counts says whether the counts are). */
int qr_store_read_gauges(struct qr_store_txn *t,
                         uint32_t n_shards,
                         uint64_t now_ms,
                         struct qr_metrics_gauges *g);

#endif /* QR_STORE_METRICS_H */
