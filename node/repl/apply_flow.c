/* Apply of flow control (docs/architecture.md, "Flow control"): where a
 * new message goes (qr_apply_place), and FlowControlUpdate (pause, pin,
 * unpin, resetRate). The per-key counts and maxima are the store's
 * (store_flow.c); enforcing the limits is the key's owner's
 * (deliver/worker.c). */
#include <string.h>

#include "lib/err.h"
#include "lib/hash.h"
#include "repl/check.h"
#include "repl/command.h"
#include "repl/fsm_int.h"

/* qr_apply_place's check lets only keys the waitlist can hold through. */
_Static_assert(QR_COMMAND_MAX_FLOW_KEY_BYTES <= QR_STORE_MAX_FLOW_KEY_BYTES,
               "a flow control key apply accepts must fit the store's");

bool qr_apply_flow_on(const struct qr_apply_ctx *ctx)
{
    return ctx->fsm->feature_level >= QR_FEATURE_LEVEL_FLOW_CONTROL;
}

uint32_t qr_fsm_flow_shard_of(const char *key)
{
    return qr_hash_fnv1a32(key) % QR_FSM_N_SHARDS;
}

void qr_apply_place(const struct qr_apply_ctx *ctx, Qraft__Message *m)
{
    char err[128];
    /* The key was checked by the face; checked again, as apply trusts no
     * face: a key the waitlist cannot hold is sent unlimited. */
    if (qr_apply_flow_on(ctx) && m->flow_control_key[0] != '\0' &&
        qr_command_check_flow_key(m->flow_control_key, err, sizeof err) == 0) {
        m->flow_waitlist = true;
        m->shard = qr_fsm_flow_shard_of(m->flow_control_key);
        return;
    }
    m->flow_waitlist = false;
    m->shard = qr_fsm_shard_of(m->id);
}

int qr_apply_flow_control_update(struct qr_apply_ctx *ctx,
                                 const Qraft__FlowControlUpdate *u,
                                 struct qr_apply_result *res)
{
    char err[256];
    if (!qr_apply_flow_on(ctx)) {
        qr_apply_set_result(res, QR_EBADREQ,
                            "flow control needs feature level %u",
                            QR_FEATURE_LEVEL_FLOW_CONTROL);
        return 0;
    }
    if (qr_command_check_flow_update(u, err, sizeof err) != 0) {
        qr_apply_set_result(res, QR_EBADREQ, "%s", err);
        return 0;
    }
    Qraft__FlowControlKey *rec = NULL;
    int rv = qr_store_flow_get_or_new(ctx->txn, u->key, &rec);
    if (rv != 0) {
        return rv;
    }
    switch (u->action) {
        case QRAFT__FLOW_CONTROL_ACTION__FLOW_CONTROL_PAUSE:
            rec->paused = true;
            break;
        case QRAFT__FLOW_CONTROL_ACTION__FLOW_CONTROL_RESUME:
            rec->paused = false;
            break;
        case QRAFT__FLOW_CONTROL_ACTION__FLOW_CONTROL_PIN:
            if (u->parallelism != 0) {
                rec->pinned_parallelism = true;
                rec->pin_parallelism = u->parallelism;
            }
            if (u->rate != 0) {
                rec->pinned_rate = true;
                rec->pin_rate = u->rate;
                rec->pin_period_s = u->period_s != 0 ? u->period_s : 1;
                rec->rate_reset_ms = ctx->now_ms; /* a new period, pinned */
            }
            break;
        case QRAFT__FLOW_CONTROL_ACTION__FLOW_CONTROL_UNPIN:
            if (u->unpin_parallelism) {
                rec->pinned_parallelism = false;
                rec->pin_parallelism = 0;
            }
            if (u->unpin_rate) {
                rec->pinned_rate = false;
                rec->pin_rate = 0;
                rec->pin_period_s = 0;
            }
            break;
        default: /* RESET_RATE: the check allows nothing else */
            rec->rate_reset_ms = ctx->now_ms;
            break;
    }
    rv = qr_store_flow_put(ctx->txn, rec);
    qraft__flow_control_key__free_unpacked(rec, NULL);
    /* Resumed, unpinned or reset: the key's waitlist may move now. */
    qr_apply_note_due(ctx, ctx->now_ms);
    return rv;
}
