/* The delivery-results channel (see results.h): a batch proposed on the
 * leader, batches sent from a follower (one call out at a time), and the
 * count of results waiting to commit that tells shards.c whether this node
 * can commit at all. */
#include "deliver/results.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lib/clock.h"
#include "lib/err.h"

#define PEER_TIMEOUT_MS 2000
/* A follower's batch: results submitted while a ResultsRequest is out go
 * together in the next one, up to this many and this many packed bytes (a
 * result larger than that goes alone). The leader proposes a batch as one
 * command; raft splits entries by --max-entry-bytes, not commands. */
#define BATCH_MAX_RESULTS 256
#define BATCH_MAX_BYTES (1024u * 1024u)

/* A result waiting for the next batch: an owned copy. */
struct qr_results_queued {
    Qraft__DeliveryResult *result;
    size_t bytes;
    qr_results_cb cb;
    void *data;
};

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

/* Fails the first n queued results with status (their callbacks fire)
 * and takes them off the queue. */
static void fail_queued(struct qr_results *r, size_t n, int status);

void qr_results_close(struct qr_results *r)
{
    r->closing = true;
    fail_queued(r, r->n_queued, QR_ECANCELED);
    free(r->queued);
    r->queued = NULL;
    r->cap_queued = 0;
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

/* One ResultsRequest out: the callbacks of the results it carries. */
struct batch_call {
    struct qr_results *results;
    size_t n;
    struct batch_waiter {
        qr_results_cb cb;
        void *data;
    } waiters[];
};

/* Takes the first n queued results off the queue (their copies freed)
 * into out, callbacks and all. */
static void take_queued(struct qr_results *r,
                        size_t n,
                        struct qr_results_queued *out)
{
    assert(n <= r->n_queued);
    for (size_t i = 0; i < n; i++) {
        qraft__delivery_result__free_unpacked(r->queued[i].result, NULL);
        r->queued[i].result = NULL;
        if (out != NULL) {
            out[i] = r->queued[i];
        }
    }
    memmove(r->queued, r->queued + n, (r->n_queued - n) * sizeof *r->queued);
    r->n_queued -= n;
}

static void fail_queued(struct qr_results *r, size_t n, int status)
{
    /* Off the queue before any callback runs (one may submit again). */
    struct qr_results_queued *gone = n > 0 ? malloc(n * sizeof *gone) : NULL;
    if (gone != NULL) {
        take_queued(r, n, gone);
        for (size_t i = 0; i < n; i++) {
            gone[i].cb(gone[i].data, status, 0);
        }
        free(gone);
        return;
    }
    for (; n > 0; n--) { /* out of memory: one at a time */
        struct qr_results_queued one;
        take_queued(r, 1, &one);
        one.cb(one.data, status, 0);
    }
}

static void send_queued(struct qr_results *r);

/* Tells every result of bc how it went, and frees bc: the answer to a
 * ResultsRequest, or the callback of a batch proposed here. */
static void answer_batch(void *data, int status, uint64_t applied)
{
    struct batch_call *bc = data;
    for (size_t i = 0; i < bc->n; i++) {
        bc->waiters[i].cb(bc->waiters[i].data, status, applied);
    }
    free(bc);
}

static void on_batch_sent(void *data, int status, const Qraft__Response *resp)
{
    struct batch_call *bc = data;
    struct qr_results *r = bc->results;
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
    r->sending = false;
    if (rv != 0 && !r->closing) {
        /* The leader did not take it (gone, deposed, or unable to commit):
         * starting more deliveries would only make more such results. */
        r->refused_cb(r->refused_data, "a result could not be reported");
    }
    answer_batch(bc, rv, applied);
    if (rv != 0) {
        /* The ones that waited would meet the same leader: their owners
         * hold them and report them again (worker.h). */
        fail_queued(r, r->n_queued, rv);
    } else {
        send_queued(r);
    }
}

/* Sends rs[0..n) (borrowed until this returns) in one ResultsRequest whose
 * answer calls bc's waiters. On failure nothing is sent and no callback
 * has fired: the caller keeps bc. */
static int send_batch(struct qr_results *r,
                      Qraft__DeliveryResult **rs,
                      size_t n,
                      struct batch_call *bc)
{
    Qraft__ResultsRequest rr = QRAFT__RESULTS_REQUEST__INIT;
    rr.n_results = n;
    rr.results = rs;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_RESULTS;
    req.results = &rr;
    int rv =
        qr_peer_call(r->peer, &req, PEER_TIMEOUT_MS * 5, on_batch_sent, bc);
    if (rv != 0) {
        r->refused_cb(r->refused_data, "a result could not be sent");
        return rv;
    }
    results_begin(r);
    r->sending = true;
    return 0;
}

static struct batch_call *new_batch_call(struct qr_results *r, size_t n)
{
    struct batch_call *bc =
        malloc(sizeof *bc + n * sizeof(struct batch_waiter));
    if (bc != NULL) {
        bc->results = r;
        bc->n = n;
    }
    return bc;
}

/* Hands the queue on, batch by batch from the front: to the leader (one
 * call out, the rest wait for its answer), or proposed here if this node
 * leads now. A batch that cannot go fails the whole queue: nothing out
 * would ever answer for the rest. */
static void send_queued(struct qr_results *r)
{
    while (r->n_queued > 0 && !r->sending && !r->closing) {
        size_t n = 0;
        size_t bytes = 0;
        while (n < r->n_queued && n < BATCH_MAX_RESULTS &&
               (n == 0 || bytes + r->queued[n].bytes <= BATCH_MAX_BYTES)) {
            bytes += r->queued[n].bytes;
            n++;
        }
        struct batch_call *bc = new_batch_call(r, n);
        Qraft__DeliveryResult **rs = malloc(n * sizeof *rs);
        int rv = -ENOMEM;
        if (bc != NULL && rs != NULL) {
            for (size_t i = 0; i < n; i++) {
                rs[i] = r->queued[i].result;
                bc->waiters[i].cb = r->queued[i].cb;
                bc->waiters[i].data = r->queued[i].data;
            }
            rv = qr_cluster_serving(r->cluster)
                     ? qr_results_propose(r, rs, n, answer_batch, bc)
                     : send_batch(r, rs, n, bc);
        }
        free(rs);
        if (rv != 0) {
            free(bc);
            fail_queued(r, r->n_queued, rv);
            return;
        }
        /* Packed and on its way: the copies go; the callbacks live in
         * bc. */
        take_queued(r, n, NULL);
    }
}

/* Keeps a copy of result for the next batch. */
static int enqueue(struct qr_results *r,
                   const Qraft__DeliveryResult *result,
                   qr_results_cb cb,
                   void *data)
{
    if (r->n_queued == r->cap_queued) {
        size_t cap = r->cap_queued == 0 ? 64 : r->cap_queued * 2;
        struct qr_results_queued *q = realloc(r->queued, cap * sizeof *q);
        if (q == NULL) {
            return -ENOMEM;
        }
        r->queued = q;
        r->cap_queued = cap;
    }
    size_t len = qraft__delivery_result__get_packed_size(result);
    uint8_t *buf = malloc(len > 0 ? len : 1);
    if (buf == NULL) {
        return -ENOMEM;
    }
    qraft__delivery_result__pack(result, buf);
    Qraft__DeliveryResult *copy =
        qraft__delivery_result__unpack(NULL, len, buf);
    free(buf);
    if (copy == NULL) {
        return -ENOMEM;
    }
    r->queued[r->n_queued++] = (struct qr_results_queued){
        .result = copy, .bytes = len, .cb = cb, .data = data};
    return 0;
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
    if (r->closing) {
        return QR_ECANCELED;
    }
    if (r->sending || r->n_queued > 0) {
        int rv = enqueue(r, result, cb, data);
        if (rv == 0 && !r->sending) {
            send_queued(r); /* a failure reaches cb */
        }
        return rv;
    }
    struct batch_call *bc = new_batch_call(r, 1);
    if (bc == NULL) {
        return -ENOMEM;
    }
    bc->waiters[0].cb = cb;
    bc->waiters[0].data = data;
    int rv = send_batch(r, &one, 1, bc);
    if (rv != 0) {
        free(bc);
    }
    return rv;
}
