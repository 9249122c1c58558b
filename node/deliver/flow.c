#include "deliver/flow.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "lib/hash.h"

void qr_flow_limits_of(const Qraft__FlowControlKey *k,
                       struct qr_flow_limits *out)
{
    uint64_t period_s;
    out->paused = k->paused;
    out->parallelism =
        k->pinned_parallelism ? k->pin_parallelism : k->max_parallelism;
    out->rate = k->pinned_rate ? k->pin_rate : k->max_rate;
    period_s = k->pinned_rate ? k->pin_period_s : k->rate_period_s;
    out->period_ms = (period_s != 0 ? period_s : 1) * 1000;
}

static size_t bucket_of(const char *key)
{
    return qr_hash_fnv1a32(key) % QR_FLOW_BUCKETS;
}

struct qr_flow_key *qr_flow_find(struct qr_flow_table *t,
                                 const char *key,
                                 bool create)
{
    size_t b = bucket_of(key);
    struct qr_flow_key *k = t->buckets[b];
    while (k != NULL && strcmp(k->key, key) != 0) {
        k = k->next;
    }
    if (k != NULL || !create || strlen(key) >= sizeof k->key) {
        return k;
    }
    k = calloc(1, sizeof *k);
    if (k == NULL) {
        return NULL;
    }
    memcpy(k->key, key, strlen(key) + 1);
    k->next = t->buckets[b];
    t->buckets[b] = k;
    t->n_keys++;
    return k;
}

static bool period_running(const struct qr_flow_key *k, uint64_t now_ms)
{
    return k->period_start_ms != 0 &&
           now_ms < k->period_start_ms + k->period_ms;
}

/* resetRate (or a pin of the rate) the key has not acted on: a new period
 * starts with the next delivery. */
static void take_reset(struct qr_flow_key *k, uint64_t rate_reset_ms)
{
    if (rate_reset_ms > k->seen_reset_ms) {
        k->seen_reset_ms = rate_reset_ms;
        k->period_start_ms = 0;
        k->period_count = 0;
    }
}

uint32_t qr_flow_capacity(struct qr_flow_key *k,
                          const struct qr_flow_limits *lim,
                          uint64_t rate_reset_ms,
                          uint64_t now_ms,
                          uint64_t *retry_ms)
{
    take_reset(k, rate_reset_ms);
    if (lim->paused) {
        return 0;
    }
    uint32_t cap = UINT32_MAX;
    if (lim->parallelism != 0) {
        cap = lim->parallelism > k->sending ? lim->parallelism - k->sending : 0;
    }
    if (lim->rate != 0) {
        uint32_t used = period_running(k, now_ms) ? k->period_count : 0;
        uint32_t left = lim->rate > used ? lim->rate - used : 0;
        if (left == 0) {
            *retry_ms = k->period_start_ms + k->period_ms;
        }
        if (left < cap) {
            cap = left;
        }
    }
    return cap;
}

void qr_flow_adopt(struct qr_flow_key *k,
                   const struct qr_flow_limits *lim,
                   uint64_t rate_reset_ms,
                   uint64_t assigned_ms,
                   uint64_t assigned_mono_ms,
                   uint64_t now_mono_ms)
{
    /* A resetRate since the shard came ends that period as it would. */
    k->seen_reset_ms = rate_reset_ms;
    if (lim->rate == 0 || lim->period_ms > QR_FLOW_ADOPT_MAX_PERIOD_MS ||
        rate_reset_ms > assigned_ms ||
        now_mono_ms >= assigned_mono_ms + lim->period_ms) {
        return;
    }
    k->period_start_ms = assigned_mono_ms;
    k->period_ms = lim->period_ms;
    k->period_count = lim->rate;
}

void qr_flow_started(struct qr_flow_key *k,
                     const struct qr_flow_limits *lim,
                     uint64_t now_ms)
{
    k->sending++;
    if (!period_running(k, now_ms)) {
        k->period_start_ms = now_ms;
        k->period_ms = lim->period_ms;
        k->period_count = 0;
    }
    k->period_count++;
}

void qr_flow_finished(struct qr_flow_key *k)
{
    assert(k->sending > 0);
    k->sending--;
}

uint32_t qr_flow_rate_count(const struct qr_flow_key *k,
                            uint64_t rate_reset_ms,
                            uint64_t now_ms,
                            uint64_t *period_start_ms)
{
    if (rate_reset_ms > k->seen_reset_ms || !period_running(k, now_ms)) {
        *period_start_ms = 0;
        return 0;
    }
    *period_start_ms = k->period_start_ms;
    return k->period_count;
}

void qr_flow_sweep(struct qr_flow_table *t, uint64_t now_ms, bool all)
{
    for (size_t b = 0; b < QR_FLOW_BUCKETS; b++) {
        struct qr_flow_key **pp = &t->buckets[b];
        while (*pp != NULL) {
            struct qr_flow_key *k = *pp;
            if (all || (k->sending == 0 && !period_running(k, now_ms))) {
                *pp = k->next;
                free(k);
                t->n_keys--;
            } else {
                pp = &k->next;
            }
        }
    }
}
