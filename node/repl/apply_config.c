/* Apply of the commands that set the cluster's state beside its messages:
 * signing keys, node info, the feature level, the shard map, retention
 * (prune), schedules (their ticks publish through apply_msg.c) and URL
 * groups. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "lib/hash.h"
#include "repl/callback.h"
#include "repl/fsm_int.h"

/* Most items one Prune removes per kind (the leader asks for up to this
 * many; docs/benchmarks.md has the apply time of a full batch). */
#define QR_FSM_MAX_PRUNE_ITEMS 10000u
/* Workflow runs one Prune deletes at most: each takes its whole history. */
#define QR_FSM_MAX_PRUNE_RUNS 100u

/* Installs the first keys, or rotates: the stored next key becomes current
 * and the command's next key becomes next. Taking "current" from the store,
 * not the command, keeps two racing rotations from undoing each other. */
int qr_apply_set_signing_keys(struct qr_apply_ctx *ctx,
                              const Qraft__SetSigningKeys *s,
                              struct qr_apply_result *res)
{
    Qraft__SigningKeys *stored = NULL;
    Qraft__SigningKeys keys = QRAFT__SIGNING_KEYS__INIT;
    int rv = qr_store_meta_get_msg(ctx->txn, QR_META_SIGNING_KEYS,
                                   &qraft__signing_keys__descriptor,
                                   (ProtobufCMessage **)&stored);
    if (rv != 0 && rv != QR_ENOTFOUND) {
        return rv;
    }
    if (s->keys == NULL || s->keys->next[0] == '\0' ||
        (stored == NULL && s->keys->current[0] == '\0')) {
        qr_apply_set_result(res, QR_EBADREQ, "signing keys are missing");
        rv = 0;
        goto out;
    }
    if (stored != NULL && !s->rotate) {
        rv = 0; /* the first keys win; a second proposal is a no-op */
        goto out;
    }
    keys.current = stored != NULL ? stored->next : s->keys->current;
    keys.next = s->keys->next;
    rv = qr_store_meta_put_msg(ctx->txn, QR_META_SIGNING_KEYS, &keys.base);
out:
    if (stored != NULL) {
        qraft__signing_keys__free_unpacked(stored, NULL);
    }
    return rv;
}

/* The ids of the messages a prune's walk found to delete: new strings in
 * a new array of room for the walk's max. */
struct id_list {
    char **ids;
    size_t n;
};

static int id_list_add(struct id_list *l, const char *id)
{
    l->ids[l->n] = strdup(id);
    if (l->ids[l->n] == NULL) {
        return -ENOMEM;
    }
    l->n++;
    return 0;
}

/* The end of a prune's walk: when the walk ended with rv 0, deletes the
 * messages l names, until one fails; frees l either way. Returns the
 * walk's error or the delete's. */
static int id_list_delete(struct qr_apply_ctx *ctx, struct id_list *l, int rv)
{
    for (size_t i = 0; i < l->n && rv == 0; i++) {
        rv = qr_store_msg_delete(ctx->txn, l->ids[i]);
    }
    for (size_t i = 0; i < l->n; i++) {
        free(l->ids[i]);
    }
    free(l->ids);
    return rv;
}

struct expired {
    uint64_t cutoff_ms;
    size_t max;
    struct id_list got;
};

static int collect_expired(void *arg, const Qraft__Message *m)
{
    struct expired *e = arg;
    if (m->dead_lettered_ms >= e->cutoff_ms || e->got.n == e->max) {
        return 1; /* oldest first: the rest are younger */
    }
    return id_list_add(&e->got, m->id);
}

struct done_walk {
    uint64_t cutoff_ms;
    struct id_list got; /* finished and old enough: to delete */
    size_t visited;
    char last[QR_ID_BYTES + 64];
};

static int collect_done(void *arg, const Qraft__Message *m)
{
    struct done_walk *w = arg;
    w->visited++;
    snprintf(w->last, sizeof w->last, "%s", m->id);
    bool done = m->state == QRAFT__MESSAGE_STATE__DELIVERED ||
                m->state == QRAFT__MESSAGE_STATE__CANCELLED;
    if (done && m->updated_ms < w->cutoff_ms) {
        return id_list_add(&w->got, m->id);
    }
    return 0;
}

/* Below QR_FEATURE_LEVEL_DONE_INDEX, what nodes before it do: a walk of
 * max messages in id order after scan_after_id; res->message_id tells the
 * leader where the walk stopped. */
static int prune_done_walk(struct qr_apply_ctx *ctx,
                           const Qraft__Prune *p,
                           size_t max,
                           size_t *n_pruned,
                           struct qr_apply_result *res)
{
    struct done_walk w = {
        .cutoff_ms = ctx->now_ms - p->done_retention_ms,
        .got.ids = calloc(max, sizeof(char *)),
    };
    if (w.got.ids == NULL) {
        return -ENOMEM;
    }
    int rv =
        qr_store_msg_list(ctx->txn, QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED,
                          p->scan_after_id, max, collect_done, &w);
    rv = id_list_delete(ctx, &w.got, rv);
    /* A short walk reached the end: start over next time. */
    snprintf(res->message_id, sizeof res->message_id, "%s",
             w.visited == max ? w.last : "");
    *n_pruned = w.got.n;
    return rv;
}

/* Delivered and cancelled messages finished longer ago than the done
 * retention go, oldest first, from the store's `done` index: the work is
 * what is deleted, however many messages are pending, and the same on
 * every replica. (The command's scan_after_id is ignored.) Below
 * QR_FEATURE_LEVEL_DONE_INDEX, the walk older nodes do instead. */
static int prune_done(struct qr_apply_ctx *ctx,
                      const Qraft__Prune *p,
                      size_t max,
                      size_t *n_pruned,
                      struct qr_apply_result *res)
{
    if (ctx->fsm->feature_level < QR_FEATURE_LEVEL_DONE_INDEX) {
        return prune_done_walk(ctx, p, max, n_pruned, res);
    }
    return qr_store_done_prune(ctx->txn, ctx->now_ms - p->done_retention_ms,
                               max, n_pruned);
}

/* Dead letters past the DLQ retention, finished messages past theirs and
 * events past theirs go, at most max of each kind. res->more tells the
 * leader a kind removed a full batch: more may be waiting. */
int qr_apply_prune(struct qr_apply_ctx *ctx,
                   const Qraft__Prune *p,
                   struct qr_apply_result *res)
{
    int rv = 0;
    /* The walk's size is the command's, bounded here: what apply allocates
     * must not be the command's to choose. */
    size_t max = p->max_items < QR_FSM_MAX_PRUNE_ITEMS ? p->max_items
                                                       : QR_FSM_MAX_PRUNE_ITEMS;
    if (p->dlq_retention_ms != 0 && ctx->now_ms > p->dlq_retention_ms &&
        max > 0) {
        struct expired e = {
            .cutoff_ms = ctx->now_ms - p->dlq_retention_ms,
            .max = max,
            .got.ids = calloc(max, sizeof(char *)),
        };
        if (e.got.ids == NULL) {
            return -ENOMEM;
        }
        rv = qr_store_dlq_list(ctx->txn, NULL, max, collect_expired, &e);
        if (rv == 1) {
            rv = 0;
        }
        rv = id_list_delete(ctx, &e.got, rv);
        if (rv != 0) {
            return rv;
        }
        res->more = res->more || e.got.n == max;
    }
    if (p->done_retention_ms != 0 && ctx->now_ms > p->done_retention_ms &&
        max > 0) {
        size_t n = 0;
        rv = prune_done(ctx, p, max, &n, res);
        if (rv != 0) {
            return rv;
        }
        res->more = res->more || n == max;
    }
    /* Workflow runs: finished and cancelled ones go with finished
     * messages, failed ones (which a DLQ action may resume) with dead
     * letters. Each takes its history with it, so fewer go at once. */
    size_t max_runs = max < QR_FSM_MAX_PRUNE_RUNS ? max : QR_FSM_MAX_PRUNE_RUNS;
    for (int failed = 0; failed < 2 && qr_apply_workflow_on(ctx); failed++) {
        uint64_t keep = failed ? p->dlq_retention_ms : p->done_retention_ms;
        size_t n = 0;
        if (keep == 0 || ctx->now_ms <= keep || max_runs == 0) {
            continue;
        }
        rv = qr_store_run_prune(ctx->txn, failed, ctx->now_ms - keep, max_runs,
                                &n);
        if (rv != 0) {
            return rv;
        }
        res->more = res->more || n == max_runs;
    }
    if (p->events_retention_ms != 0 && ctx->now_ms > p->events_retention_ms &&
        max > 0) {
        size_t n = 0;
        rv = qr_store_event_prune(
            ctx->txn, ctx->now_ms - p->events_retention_ms, max, &n);
        res->more = res->more || (rv == 0 && n == max);
    }
    return rv;
}

int qr_apply_set_node_info(struct qr_apply_ctx *ctx,
                           const Qraft__SetNodeInfo *s,
                           struct qr_apply_result *res)
{
    if (s->info == NULL || s->info->id == 0) {
        qr_apply_set_result(res, QR_EBADREQ, "node info without a node id");
        return 0;
    }
    char name[48];
    snprintf(name, sizeof name, "%s%" PRIu64, QR_META_NODE_PREFIX, s->info->id);
    return qr_store_meta_put_msg(ctx->txn, name, &s->info->base);
}

/* The feature level only goes up: a late or repeated proposal of a lower
 * level changes nothing. */
int qr_apply_set_feature_level(struct qr_apply_ctx *ctx,
                               const Qraft__SetFeatureLevel *l,
                               struct qr_apply_result *res)
{
    uint64_t level = QR_FSM_BASE_FEATURE_LEVEL;
    int rv = qr_store_meta_get_u64(ctx->txn, QR_META_FEATURE_LEVEL, &level);
    if (rv != 0 && rv != QR_ENOTFOUND) {
        return rv;
    }
    if (l->level <= level) {
        qr_apply_set_result(res, QR_ECONFLICT,
                            "feature level %u is not above %" PRIu64, l->level,
                            level);
        return 0;
    }
    rv = qr_store_meta_put_u64(ctx->txn, QR_META_FEATURE_LEVEL, l->level);
    if (rv == 0) {
        ctx->fsm->feature_level = l->level;
    }
    return rv;
}

/* A new shard map replaces the stored one only if its epoch is newer: an
 * assignment never goes back in time. */
int qr_apply_assign_shards(struct qr_apply_ctx *ctx,
                           const Qraft__AssignShards *a,
                           struct qr_apply_result *res)
{
    Qraft__AssignShards *stored = NULL;
    int rv = qr_store_meta_get_msg(ctx->txn, QR_META_SHARDS,
                                   &qraft__assign_shards__descriptor,
                                   (ProtobufCMessage **)&stored);
    if (rv == 0) {
        uint64_t epoch = stored->epoch;
        qraft__assign_shards__free_unpacked(stored, NULL);
        if (a->epoch <= epoch) {
            qr_apply_set_result(res, QR_ECONFLICT,
                                "shard epoch %" PRIu64 " is not after %" PRIu64,
                                a->epoch, epoch);
            return 0;
        }
    } else if (rv != QR_ENOTFOUND) {
        return rv;
    }
    if (a->n_owners != QR_FSM_N_SHARDS) {
        qr_apply_set_result(res, QR_EBADREQ, "%zu shard owners for %u shards",
                            a->n_owners, QR_FSM_N_SHARDS);
        return 0;
    }
    return qr_store_meta_put_msg(ctx->txn, QR_META_SHARDS, &a->base);
}

/* ---------------------------------------------------------------------------
 * Schedules. Apply evaluates no cron and reads no clock: the leader computed
 * every slot it proposes. */

int qr_apply_schedule_upsert(struct qr_apply_ctx *ctx,
                             const Qraft__ScheduleUpsert *u,
                             struct qr_apply_result *res)
{
    const Qraft__Schedule *sc = u->schedule;
    int rv;

    if (sc == NULL || sc->id[0] == '\0' || sc->request == NULL) {
        qr_apply_set_result(res, QR_EBADREQ,
                            "schedule without an id or a request");
        return 0;
    }
    /* A create seen within its dedup window answers the schedule it made
     * and changes nothing. */
    rv = qr_apply_dedup_seen(ctx, u->dedup_keys, u->n_dedup_keys, res);
    if (rv != 0) {
        return rv < 0 ? rv : 0;
    }
    Qraft__Schedule *old = NULL;
    rv = qr_store_schedule_get(ctx->txn, sc->id, &old);
    if (rv != 0 && rv != QR_ENOTFOUND) {
        return rv;
    }
    /* Replace wholesale, but keep when it was created and what it fired:
     * the slot fence must survive a replacement. */
    Qraft__Schedule upd = *sc;
    upd.created_ms = old != NULL ? old->created_ms : ctx->now_ms;
    upd.updated_ms = ctx->now_ms;
    upd.last_slot_ms = old != NULL ? old->last_slot_ms : 0;
    upd.n_last_fired = old != NULL ? old->n_last_fired : 0;
    upd.last_fired = old != NULL ? old->last_fired : NULL;
    rv = qr_store_schedule_put(ctx->txn, &upd);
    for (size_t i = 0; i < u->n_dedup_keys && rv == 0; i++) {
        rv = qr_store_dedup_put(ctx->txn, u->dedup_keys[i], sc->id,
                                ctx->now_ms + u->dedup_window_ms);
    }
    if (old != NULL) {
        qraft__schedule__free_unpacked(old, NULL);
    }
    snprintf(res->message_id, sizeof res->message_id, "%s", sc->id);
    return rv;
}

/* Whether rv, from a store call on schedule `id`, says there is no such
 * schedule (QR_ENOTFOUND, or QR_EBADREQ: an id no schedule can have); sets
 * that as the command's result then (not an apply failure). */
static bool schedule_missing(int rv,
                             const char *id,
                             struct qr_apply_result *res)
{
    if (rv != QR_ENOTFOUND && rv != QR_EBADREQ) {
        return false;
    }
    qr_apply_set_result(res, QR_ENOTFOUND, "schedule %.64s not found", id);
    return true;
}

/* Loads the schedule a command names: 1 when *out was loaded (new), 0
 * when res says there is none, or a store error. */
static int schedule_load_target(struct qr_apply_ctx *ctx,
                                const char *id,
                                Qraft__Schedule **out,
                                struct qr_apply_result *res)
{
    int rv = qr_store_schedule_get(ctx->txn, id, out);
    if (schedule_missing(rv, id, res)) {
        return 0;
    }
    return rv == 0 ? 1 : rv;
}

int qr_apply_schedule_delete(struct qr_apply_ctx *ctx,
                             const Qraft__ScheduleDelete *d,
                             struct qr_apply_result *res)
{
    int rv = qr_store_schedule_delete(ctx->txn, d->schedule_id);
    return schedule_missing(rv, d->schedule_id, res) ? 0 : rv;
}

int qr_apply_schedule_pause(struct qr_apply_ctx *ctx,
                            const Qraft__SchedulePause *p,
                            struct qr_apply_result *res)
{
    Qraft__Schedule *sc = NULL;
    int rv = schedule_load_target(ctx, p->schedule_id, &sc, res);
    if (rv <= 0) {
        return rv;
    }
    rv = 0;
    if (sc->paused != p->paused) {
        /* Resuming starts from the slot after the leader's time: the slots
         * of the pause are skipped, not caught up. */
        sc->paused = p->paused;
        if (!p->paused) {
            sc->next_slot_ms = p->next_slot_ms;
        }
        sc->updated_ms = ctx->now_ms;
        rv = qr_store_schedule_put(ctx->txn, sc);
    }
    qraft__schedule__free_unpacked(sc, NULL);
    return rv;
}

/* First sequence number of a tick's message id: FNV-1a of the schedule id,
 * so ticks of different schedules in the same minute rarely probe. */
static uint32_t schedule_seq(const char *schedule_id)
{
    return qr_hash_fnv1a32(schedule_id);
}

/* One tick: the fence (not paused, slot_ms at or after the stored next slot
 * and after the last fired one, and due at the entry's time) makes a slot
 * fire at most once, however many times and by whichever leader it is
 * proposed. The message goes through qr_apply_publish like any publish, with
 * an id derived from (schedule, slot) and schedule_id set. */
int qr_apply_schedule_fire(struct qr_apply_ctx *ctx,
                           const Qraft__ScheduleFire *f,
                           struct qr_apply_result *res)
{
    Qraft__Schedule *sc = NULL;
    int rv = schedule_load_target(ctx, f->schedule_id, &sc, res);
    if (rv <= 0) {
        return rv;
    }
    rv = 0;
    if (sc->paused || sc->request == NULL || f->slot_ms < sc->next_slot_ms ||
        f->slot_ms <= sc->last_slot_ms || f->slot_ms > ctx->now_ms ||
        f->next_slot_ms <= f->slot_ms) {
        qr_apply_set_result(res, QR_ECONFLICT,
                            "schedule %.64s: slot %" PRIu64
                            " is not due or fired",
                            sc->id, f->slot_ms);
        goto out;
    }
    /* A schedule to a url group fans out, at each tick, to the endpoints
     * the group has at this point of the log (replicated state, so every
     * replica creates the same messages); a group deleted since then
     * yields none. */
    Qraft__UrlGroup *g = NULL;
    size_t n = 1;
    if (sc->request->topic_name[0] != '\0') {
        rv = qr_store_group_get(ctx->txn, sc->request->topic_name, &g);
        if (rv != 0 && rv != QR_ENOTFOUND) {
            goto out;
        }
        n = rv == 0 ? g->n_endpoints : 0;
    }
    Qraft__ScheduleFired *fired = calloc(n + 1, sizeof *fired);
    Qraft__ScheduleFired **fired_ptrs = calloc(n + 1, sizeof *fired_ptrs);
    char(*ids)[QR_ID_BYTES] = calloc(n + 1, sizeof *ids);
    if (fired == NULL || fired_ptrs == NULL || ids == NULL) {
        rv = -ENOMEM;
        goto out_fired;
    }
    uint32_t seq = schedule_seq(sc->id);
    for (size_t i = 0; i < n; i++) {
        for (;;) {
            Qraft__Message *taken = NULL;
            qr_command_message_id(ids[i], f->slot_ms, QR_CALLBACK_NODE_ID,
                                  seq++);
            rv = qr_store_msg_get(ctx->txn, ids[i], &taken);
            if (rv != 0) {
                break;
            }
            qraft__message__free_unpacked(taken, NULL);
        }
        if (rv != QR_ENOTFOUND) {
            goto out_fired;
        }
        Qraft__PublishRequest req = *sc->request;
        req.schedule_id = sc->id;
        if (g != NULL) {
            req.url = g->endpoints[i]->url;
            req.endpoint_name = g->endpoints[i]->name;
        }
        Qraft__Publish p = QRAFT__PUBLISH__INIT;
        p.message_id = ids[i];
        p.request = &req;
        p.default_retries = f->default_retries;
        p.default_timeout_ms = f->default_timeout_ms;
        rv = qr_apply_publish(ctx, &p, res);
        if (rv != 0) {
            goto out_fired;
        }
        qraft__schedule_fired__init(&fired[i]);
        fired[i].message_id = ids[i];
        fired_ptrs[i] = &fired[i];
    }
    Qraft__Schedule upd = *sc;
    upd.last_slot_ms = f->slot_ms;
    upd.next_slot_ms = f->next_slot_ms;
    upd.n_last_fired = n;
    upd.last_fired = fired_ptrs;
    rv = qr_store_schedule_put(ctx->txn, &upd);
out_fired:
    free(ids);
    free(fired_ptrs);
    free(fired);
    if (g != NULL) {
        qraft__url_group__free_unpacked(g, NULL);
    }
out:
    qraft__schedule__free_unpacked(sc, NULL);
    return rv;
}

/* URL groups. The command is checked again here with the same pure checks
 * the leader ran (command.c): a bad one is refused, never half applied. */
static bool group_name_ok(const char *name)
{
    return strlen(name) <= QR_FSM_MAX_GROUP_NAME_BYTES &&
           qr_command_is_name(name);
}

/* Whether rv, from a store call on url group `name`, says there is no such
 * group; sets that as the command's result then (not an apply failure). */
static bool group_missing(int rv, const char *name, struct qr_apply_result *res)
{
    if (rv != QR_ENOTFOUND) {
        return false;
    }
    qr_apply_set_result(res, QR_ENOTFOUND, "url group '%.64s' not found", name);
    return true;
}

/* Whether an add or remove names no group a store can hold, or no
 * endpoint; sets that as the command's result then. */
static bool group_change_refused(const char *group,
                                 size_t n_endpoints,
                                 struct qr_apply_result *res)
{
    if (group_name_ok(group) && n_endpoints > 0) {
        return false;
    }
    qr_apply_set_result(res, QR_EBADREQ, "invalid url group change");
    return true;
}

static Qraft__UrlGroupEndpoint *find_endpoint(Qraft__UrlGroupEndpoint **eps,
                                              size_t n,
                                              const char *name,
                                              const char *url,
                                              size_t *at)
{
    for (size_t i = 0; i < n; i++) {
        bool hit = name != NULL ? strcmp(eps[i]->name, name) == 0
                                : strcmp(eps[i]->url, url) == 0;
        if (hit) {
            *at = i;
            return eps[i];
        }
    }
    return NULL;
}

int qr_apply_group_add(struct qr_apply_ctx *ctx,
                       const Qraft__GroupAddEndpoints *a,
                       struct qr_apply_result *res)
{
    Qraft__UrlGroup *stored = NULL;
    Qraft__UrlGroupEndpoint **eps = NULL;
    size_t n = 0;

    if (group_change_refused(a->group, a->n_endpoints, res)) {
        return 0;
    }
    int rv = qr_store_group_get(ctx->txn, a->group, &stored);
    if (rv != 0 && rv != QR_ENOTFOUND) {
        return rv;
    }
    size_t n_old = stored != NULL ? stored->n_endpoints : 0;
    eps = calloc(n_old + a->n_endpoints, sizeof *eps);
    if (eps == NULL) {
        rv = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n_old; i++) {
        eps[n++] = stored->endpoints[i];
    }
    rv = 0;
    for (size_t i = 0; i < a->n_endpoints; i++) {
        Qraft__UrlGroupEndpoint *e = a->endpoints[i];
        size_t at = 0;
        if (e->url[0] == '\0' ||
            (e->name[0] != '\0' && !group_name_ok(e->name))) {
            qr_apply_set_result(res, QR_EBADREQ, "invalid endpoint %zu", i + 1);
            goto out;
        }
        /* The same URL replaces; a name held by another URL is refused. */
        Qraft__UrlGroupEndpoint *named =
            e->name[0] != '\0' ? find_endpoint(eps, n, e->name, NULL, &at)
                               : NULL;
        if (named != NULL && strcmp(named->url, e->url) != 0) {
            qr_apply_set_result(
                res, QR_EBADREQ,
                "endpoint name '%.64s' is taken in url group '%.64s' "
                "by another url",
                e->name, a->group);
            goto out;
        }
        if (find_endpoint(eps, n, NULL, e->url, &at) != NULL) {
            eps[at] = e;
        } else {
            eps[n++] = e;
        }
    }
    if (n > a->max_endpoints) {
        qr_apply_set_result(
            res, QR_EBADREQ,
            "url group '%.64s' would have %zu endpoints; the limit is "
            "%" PRIu32,
            a->group, n, a->max_endpoints);
        goto out;
    }
    Qraft__UrlGroup g = QRAFT__URL_GROUP__INIT;
    g.name = a->group;
    g.created_ms = stored != NULL ? stored->created_ms : ctx->now_ms;
    g.updated_ms = ctx->now_ms;
    g.n_endpoints = n;
    g.endpoints = eps;
    rv = qr_store_group_put(ctx->txn, &g);
out:
    free(eps);
    if (stored != NULL) {
        qraft__url_group__free_unpacked(stored, NULL);
    }
    return rv;
}

int qr_apply_group_remove(struct qr_apply_ctx *ctx,
                          const Qraft__GroupRemoveEndpoints *r,
                          struct qr_apply_result *res)
{
    Qraft__UrlGroup *stored = NULL;
    Qraft__UrlGroupEndpoint **eps = NULL;

    if (group_change_refused(r->group, r->n_endpoints, res)) {
        return 0;
    }
    int rv = qr_store_group_get(ctx->txn, r->group, &stored);
    if (group_missing(rv, r->group, res)) {
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    size_t n = stored->n_endpoints;
    eps = calloc(n > 0 ? n : 1, sizeof *eps);
    if (eps == NULL) {
        rv = -ENOMEM;
        goto out;
    }
    memcpy(eps, stored->endpoints, n * sizeof *eps);
    for (size_t i = 0; i < r->n_endpoints; i++) {
        const Qraft__UrlGroupEndpoint *e = r->endpoints[i];
        bool by_name = e->name[0] != '\0';
        size_t at = 0;
        if (!by_name && e->url[0] == '\0') {
            qr_apply_set_result(res, QR_EBADREQ, "invalid endpoint %zu", i + 1);
            goto out;
        }
        if (find_endpoint(eps, n, by_name ? e->name : NULL, e->url, &at) ==
            NULL) {
            qr_apply_set_result(res, QR_ENOTFOUND,
                                "url group '%.64s' has no endpoint %s '%.64s'",
                                r->group, by_name ? "named" : "with url",
                                by_name ? e->name : e->url);
            goto out;
        }
        memmove(eps + at, eps + at + 1, (n - at - 1) * sizeof *eps);
        n--;
    }
    if (n == 0) {
        rv = qr_store_group_delete(ctx->txn, r->group);
        goto out;
    }
    Qraft__UrlGroup g = *stored;
    g.updated_ms = ctx->now_ms;
    g.n_endpoints = n;
    g.endpoints = eps;
    rv = qr_store_group_put(ctx->txn, &g);
out:
    free(eps);
    qraft__url_group__free_unpacked(stored, NULL);
    return rv;
}

int qr_apply_group_delete(struct qr_apply_ctx *ctx,
                          const Qraft__GroupDelete *d,
                          struct qr_apply_result *res)
{
    if (!group_name_ok(d->group)) {
        qr_apply_set_result(res, QR_EBADREQ, "invalid url group name");
        return 0;
    }
    int rv = qr_store_group_delete(ctx->txn, d->group);
    return group_missing(rv, d->group, res) ? 0 : rv;
}
