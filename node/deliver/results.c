/* The delivery-results channel (see results.h): a batch proposed on the
 * leader, one result per peer call from a follower, and the count of
 * results waiting to commit that tells shards.c whether this node can
 * commit at all. */
#include "deliver/results.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>

#include "lib/clock.h"
#include "lib/err.h"

#define PEER_TIMEOUT_MS 2000
/* Results this node handed to raft (its own, or a follower's on the
 * leader) that waited this long with none committing mean the node cannot
 * commit: it holds no lease (see shards.h). Commits take milliseconds; a
 * leader that lost its majority steps down only after one to two election
 * timeouts, and this is how it stops starting deliveries sooner. A false
 * alarm (a slow disk, a busy loop) only pauses new deliveries until
 * results commit again. */
#define RESULT_STALL_MS 300

void qr_results_init(struct qr_results *r,
                     const struct qr_config *cfg,
                     struct qr_cluster *cluster,
                     struct qr_peer *peer,
                     qr_results_refused_cb refused_cb,
                     void *refused_data)
{
    *r = (struct qr_results){
        .config = cfg,
        .cluster = cluster,
        .peer = peer,
        .refused_cb = refused_cb,
        .refused_data = refused_data,
    };
}

void qr_results_close(struct qr_results *r)
{
    r->closing = true;
}

bool qr_results_stalled(const struct qr_results *r, uint64_t now_mono_ms)
{
    return r->n_pending > 0 &&
           now_mono_ms - r->progress_mono_ms >= RESULT_STALL_MS;
}

/* Results handed to raft: progress is a commit (or the first of a run). */
static void results_begin(struct qr_results *r)
{
    if (r->n_pending++ == 0) {
        r->progress_mono_ms = qr_clock_mono_ms();
    }
}

static void results_end(struct qr_results *r, bool committed)
{
    assert(r->n_pending > 0);
    r->n_pending--;
    if (committed) {
        r->progress_mono_ms = qr_clock_mono_ms();
    }
}

struct result_call {
    struct qr_results *results;
    qr_results_cb cb;
    void *data;
};

static struct result_call *new_call(struct qr_results *r,
                                    qr_results_cb cb,
                                    void *data)
{
    struct result_call *rc = malloc(sizeof *rc);
    if (rc != NULL) {
        rc->results = r;
        rc->cb = cb;
        rc->data = data;
    }
    return rc;
}

static void on_result_proposed(void *data,
                               int status,
                               const struct qr_apply_result *res)
{
    struct result_call *rc = data;
    struct qr_results *r = rc->results;
    (void)res;
    results_end(r, status == 0);
    /* Here the result is applied already: this replica is the leader's. */
    rc->cb(rc->data, status, qr_cluster_fsm_applied(r->cluster));
    free(rc);
}

int qr_results_propose(struct qr_results *r,
                       Qraft__DeliveryResult **results,
                       size_t n,
                       qr_results_cb cb,
                       void *data)
{
    Qraft__DeliveryResults batch = QRAFT__DELIVERY_RESULTS__INIT;
    batch.n_results = n;
    batch.results = results;
    batch.default_retries = r->config->limits.default_retries;
    batch.default_timeout_ms = r->config->limits.default_timeout_ms;
    struct result_call *rc = new_call(r, cb, data);
    if (rc == NULL) {
        return -ENOMEM;
    }
    /* Results of one loop iteration share one raft entry (group commit). */
    int rv = qr_cluster_propose_one(r->cluster,
                                    QRAFT__COMMAND__BODY_DELIVERY_RESULTS,
                                    &batch.base, on_result_proposed, rc);
    if (rv != 0) {
        free(rc);
        return rv;
    }
    results_begin(r);
    return 0;
}

static void on_result_sent(void *data, int status, const Qraft__Response *resp)
{
    struct result_call *rc = data;
    struct qr_results *r = rc->results;
    int rv = status;
    uint64_t applied = 0;
    if (rv == 0 && resp->status != QRAFT__STATUS__OK) {
        rv = resp->status == QRAFT__STATUS__NOT_LEADER ? QR_ENOTLEADER
                                                       : QR_EUNKNOWN;
    }
    if (rv == 0 && resp->body_case == QRAFT__RESPONSE__BODY_RESULTS) {
        applied = resp->results->applied_index;
    }
    results_end(r, rv == 0);
    if (rv != 0 && !r->closing) {
        /* The leader did not take it (gone, deposed, or unable to commit):
         * starting more deliveries would only make more such results. */
        r->refused_cb(r->refused_data, "a result could not be reported");
    }
    rc->cb(rc->data, rv, applied);
    free(rc);
}

int qr_results_submit(struct qr_results *r,
                      const Qraft__DeliveryResult *result,
                      qr_results_cb cb,
                      void *data)
{
    Qraft__DeliveryResult *one = (Qraft__DeliveryResult *)result;
    if (qr_cluster_serving(r->cluster)) {
        return qr_results_propose(r, &one, 1, cb, data);
    }
    struct result_call *rc = new_call(r, cb, data);
    if (rc == NULL) {
        return -ENOMEM;
    }
    Qraft__ResultsRequest rr = QRAFT__RESULTS_REQUEST__INIT;
    rr.n_results = 1;
    rr.results = &one;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_RESULTS;
    req.results = &rr;
    int rv =
        qr_peer_call(r->peer, &req, PEER_TIMEOUT_MS * 5, on_result_sent, rc);
    if (rv != 0) {
        free(rc);
        r->refused_cb(r->refused_data, "a result could not be sent");
        return rv;
    }
    results_begin(r);
    return 0;
}
