/* Flow control in the store (docs/architecture.md, "Flow control"):
 * - `fcdue` is the waitlist index: one key for each message that
 *   store_flow_waits and whose state is PENDING, DELIVERING or RETRYING,
 *   at (u16 shard | flow control key | 0x00 | u64 next_attempt_ms | id),
 *   in place of its `due` key. The 0 byte ends the key (keys never hold
 *   one: check.c refuses control characters), so one key's messages are
 *   contiguous and in due order, and the keys of a shard can be walked
 *   one seek each.
 * - `fckeys` holds one FlowControlKey per key that has messages not yet
 *   final, is paused, or has a pin. Its `messages` count and maxima are
 *   kept here, by every write of a message (store_flow_note, from
 *   reindex); pause, pins and the rate reset are apply's. A record that
 *   holds nothing is deleted. */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "store/store_int.h"

static const struct record_db flow_records = {
    DB_FCKEYS, &qraft__flow_control_key__descriptor,
    "flow control key does not decode", NULL, NULL};

bool store_flow_waits(const Qraft__Message *m)
{
    return m->flow_waitlist && m->flow_control_key[0] != '\0';
}

/* u16 shard | key | 0x00: the start of the key's entries in its shard. */
static size_t fcdue_prefix(uint8_t *buf, uint32_t shard, const char *key)
{
    size_t n = strlen(key);
    put_be16(buf, (uint16_t)shard);
    memcpy(buf + 2, key, n);
    buf[2 + n] = 0;
    return 3 + n;
}

size_t store_fcdue_key(uint8_t *buf, const Qraft__Message *m)
{
    size_t off = fcdue_prefix(buf, m->shard, m->flow_control_key);
    size_t n = strlen(m->id);
    put_be64(buf + off, m->next_attempt_ms);
    memcpy(buf + off + 8, m->id, n);
    return off + 8 + n;
}

static bool is_final(Qraft__MessageState s)
{
    return s == QRAFT__MESSAGE_STATE__DELIVERED ||
           s == QRAFT__MESSAGE_STATE__CANCELLED ||
           s == QRAFT__MESSAGE_STATE__DEAD_LETTERED;
}

static bool counts(const Qraft__Message *m)
{
    return m != NULL && store_flow_waits(m) && !is_final(m->state);
}

static int check_flow_key(struct qr_store_txn *t,
                          bool write,
                          const char *key,
                          const char *what)
{
    int rv = store_check_txn(t, write, what);
    if (rv == 0 &&
        (key[0] == '\0' || strlen(key) > QR_STORE_MAX_FLOW_KEY_BYTES)) {
        rv =
            store_bad_request(t->s, what, "flow control key empty or too long");
    }
    return rv;
}

int qr_store_flow_get(struct qr_store_txn *t,
                      const char *key,
                      Qraft__FlowControlKey **out)
{
    const char *what = "get flow control key";
    ProtobufCMessage *msg = NULL;
    *out = NULL;
    int rv = check_flow_key(t, false, key, what);
    if (rv == 0) {
        rv = store_load_record(t, &flow_records, key, strlen(key), &msg, what);
    }
    *out = (Qraft__FlowControlKey *)msg;
    return rv;
}

int qr_store_flow_get_or_new(struct qr_store_txn *t,
                             const char *key,
                             Qraft__FlowControlKey **out)
{
    int rv = qr_store_flow_get(t, key, out);
    if (rv != QR_ENOTFOUND) {
        return rv;
    }
    Qraft__FlowControlKey *k = malloc(sizeof *k);
    char *copy = strdup(key);
    if (k == NULL || copy == NULL) {
        free(k);
        free(copy);
        return -ENOMEM;
    }
    qraft__flow_control_key__init(k);
    k->key = copy;
    *out = k;
    return 0;
}

static bool holds_nothing(const Qraft__FlowControlKey *k)
{
    return k->messages == 0 && !k->paused && !k->pinned_parallelism &&
           !k->pinned_rate;
}

int qr_store_flow_put(struct qr_store_txn *t, const Qraft__FlowControlKey *k)
{
    const char *what = "put flow control key";
    int rv = check_flow_key(t, true, k->key, what);
    if (rv != 0) {
        return rv;
    }
    if (holds_nothing(k)) {
        rv = store_del_raw(t, DB_FCKEYS, k->key, strlen(k->key), what);
        return rv == QR_ENOTFOUND ? 0 : rv;
    }
    return store_put_packed(t, DB_FCKEYS, k->key, strlen(k->key), &k->base,
                            what);
}

int store_flow_note(struct qr_store_txn *t,
                    const Qraft__Message *old,
                    const Qraft__Message *m,
                    const char *what)
{
    bool was = counts(old);
    bool now = counts(m);
    if (was == now) {
        return 0; /* a message's limits never change while it counts */
    }
    const Qraft__Message *msg = now ? m : old;
    Qraft__FlowControlKey *rec = NULL;
    int rv = qr_store_flow_get_or_new(t, msg->flow_control_key, &rec);
    if (rv != 0) {
        return rv;
    }
    if (now) {
        rec->messages++;
        if (msg->flow_parallelism > rec->max_parallelism) {
            rec->max_parallelism = msg->flow_parallelism;
        }
        if (msg->flow_rate > rec->max_rate) {
            rec->max_rate = msg->flow_rate;
            rec->rate_period_s = msg->flow_period_s;
        }
    } else if (rec->messages == 0) {
        rv = store_fail_corrupt(t, what, "flow control key count below zero");
    } else if (--rec->messages == 0) {
        /* The last one ended: the next message's limits apply. */
        rec->max_parallelism = 0;
        rec->max_rate = 0;
        rec->rate_period_s = 0;
    }
    if (rv == 0) {
        rv = qr_store_flow_put(t, rec);
    }
    qraft__flow_control_key__free_unpacked(rec, NULL);
    return rv;
}

static int call_flow_cb(const struct record_walk *w,
                        const ProtobufCMessage *msg)
{
    return w->cb.flow(w->arg, (const Qraft__FlowControlKey *)msg);
}

int qr_store_flow_list(struct qr_store_txn *t,
                       const char *after_key,
                       size_t limit,
                       qr_store_flow_cb cb,
                       void *arg)
{
    struct record_walk w = {.r = &flow_records,
                            .call = call_flow_cb,
                            .cb.flow = cb,
                            .arg = arg,
                            .what = "list flow control keys"};
    return store_record_list(t, &w, after_key, limit);
}

/* ------------------------------------------------------------------------ */
/* The waitlists. */

struct due_keys_walk {
    uint8_t shard[2];
    qr_store_flow_due_key_cb cb;
    void *arg;
    const char *what;
    /* The key just visited: the walk goes on after its entries. */
    uint8_t next[KEY_BUF_BYTES];
    size_t next_len;
    bool more;
};

/* One step of the walk over a shard's keys: k is the first entry of a key,
 * which holds its earliest due time. */
static int visit_due_key(struct qr_store_txn *t,
                         const MDB_val *k,
                         const MDB_val *v,
                         void *arg,
                         enum walk_step *step)
{
    struct due_keys_walk *w = arg;
    const uint8_t *key = k->mv_data;
    (void)v;
    *step = STEP_END;
    if (k->mv_size < 2 || memcmp(key, w->shard, 2) != 0) {
        return 0;
    }
    const uint8_t *end = memchr(key + 2, 0, k->mv_size - 2);
    size_t name_len = end != NULL ? (size_t)(end - key - 2) : 0;
    if (end == NULL || name_len == 0 ||
        name_len > QR_STORE_MAX_FLOW_KEY_BYTES ||
        k->mv_size < 3 + name_len + 8) {
        return store_fail_corrupt(t, w->what, "bad waitlist key");
    }
    char name[QR_STORE_MAX_FLOW_KEY_BYTES + 1];
    memcpy(name, key + 2, name_len);
    name[name_len] = '\0';
    int rv = w->cb(w->arg, name, get_be64(end + 1));
    if (rv == 0) {
        /* Past every entry of this key: its prefix with the 0 byte made 1. */
        memcpy(w->next, key, 3 + name_len);
        w->next[2 + name_len] = 1;
        w->next_len = 3 + name_len;
        w->more = true;
    }
    return rv;
}

int qr_store_flow_due_keys(struct qr_store_txn *t,
                           uint32_t shard,
                           qr_store_flow_due_key_cb cb,
                           void *arg)
{
    const char *what = "walk flow control waitlists";
    int rv = store_check_txn(t, false, what);
    if (rv == 0 && shard > UINT16_MAX) {
        rv = store_bad_request(t->s, what, "shard out of range");
    }
    if (rv != 0) {
        return rv;
    }
    struct due_keys_walk w = {.cb = cb, .arg = arg, .what = what};
    put_be16(w.shard, (uint16_t)shard);
    memcpy(w.next, w.shard, 2);
    w.next_len = 2;
    do {
        uint8_t start[KEY_BUF_BYTES];
        size_t start_len = w.next_len;
        memcpy(start, w.next, start_len);
        w.more = false;
        rv = store_walk_db(t, DB_FCDUE, start, start_len, false, 1,
                           visit_due_key, &w, what);
    } while (rv == 0 && w.more);
    return rv;
}

int qr_store_flow_due_scan(struct qr_store_txn *t,
                           uint32_t shard,
                           const char *key,
                           const struct qr_store_due_visit *v)
{
    const char *what = "scan flow control waitlist";
    int rv = check_flow_key(t, false, key, what);
    if (rv == 0 && shard > UINT16_MAX) {
        rv = store_bad_request(t->s, what, "shard out of range");
    }
    if (rv != 0 || v->limit == 0) {
        return rv;
    }
    uint8_t prefix[KEY_BUF_BYTES];
    size_t len = fcdue_prefix(prefix, shard, key);
    struct due_from from = {prefix, len, len};
    return store_due_walk(t, DB_FCDUE, &from, v, what);
}
