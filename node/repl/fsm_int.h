/* What fsm.c and the apply_*.c files share while an entry is applied: the
 * apply context, the helpers every command uses, and one function per
 * command kind (fsm.c's apply_command dispatches to them).
 *
 * Internal to repl/: no other module includes it. Every qr_apply_* function
 * runs inside apply, with ctx->txn the entry's open write transaction
 * (borrowed). The rules of fsm.h hold for each: it reads only the command,
 * ctx and the store; a command that fails for what it holds sets its
 * result (qr_apply_set_result) and returns 0 having changed nothing, or
 * returns a code fails_command (fsm.c) counts as the command's; any other
 * non-zero return is this node's trouble and stops it. */
#ifndef QR_FSM_INT_H
#define QR_FSM_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qraft.pb-c.h"
#include "repl/callback.h"
#include "repl/fsm.h"

/* Everything an entry's commands share while it is applied. */
struct qr_apply_ctx {
    struct qr_fsm *fsm;
    struct qr_store_txn *txn; /* open for writing while a command applies */
    uint64_t index;
    uint64_t now_ms; /* the leader's stamp: the only clock apply knows */
    uint32_t position;
    /* Events appended by this entry so far: their key's last part, so a
     * command that records several (a batch of results, a callback and its
     * source, a queue activating its next message) keeps them all. */
    uint32_t n_events;
    uint64_t earliest_due_ms; /* UINT64_MAX: nothing became due */
};

/* A message became due at due_ms: the entry's earliest goes to the due
 * hook once the entry is committed. */
static inline void qr_apply_note_due(struct qr_apply_ctx *ctx, uint64_t due_ms)
{
    if (due_ms < ctx->earliest_due_ms) {
        ctx->earliest_due_ms = due_ms;
    }
}

/* Sets the command's result: status and a printf-formatted reason. */
void qr_apply_set_result(struct qr_apply_result *res,
                         int status,
                         const char *fmt,
                         ...) __attribute__((format(printf, 3, 4)));

/* Appends m's event (its state now, detail borrowed) at the entry's time. */
int qr_apply_event(struct qr_apply_ctx *ctx,
                   const Qraft__Message *m,
                   const char *detail);

/* apply_msg.c: messages (publish, cancel, DLQ, delivery results and the
 * callbacks they create). */

/* Looks the dedup keys of a creating command (publish, schedule upsert) up
 * at the command's time. Returns 1 when one is live: res then answers the
 * id it created (res->message_id) as deduplicated, and the command must
 * change nothing. 0 when none is; a store error otherwise. */
int qr_apply_dedup_seen(struct qr_apply_ctx *ctx,
                        char **keys,
                        size_t n_keys,
                        struct qr_apply_result *res);
/* Cancels m (unpacked, not final): out of its queue's FIFO if it waits
 * there, its slot given back if it holds one. */
/* Delivered, dead-lettered or cancelled: nothing more happens to it. */
bool qr_apply_is_final(Qraft__MessageState s);

/* Creates the callback message of `kind` for src after its committed
 * result r (run: src's workflow run, for a failure callback, or NULL),
 * under the first free id qr_callback_seq derives. */
int qr_apply_create_callback(struct qr_apply_ctx *ctx,
                             uint64_t default_timeout_ms,
                             const Qraft__Message *src,
                             const Qraft__DeliveryResult *r,
                             Qraft__CallbackKind kind,
                             const struct qr_callback_run *run);

/* Marks m (not final) delivered now, as a committed 2xx would: a late
 * result of its attempt is then fenced out. */
int qr_apply_mark_delivered(struct qr_apply_ctx *ctx,
                            const Qraft__Message *m,
                            const char *detail);

int qr_apply_cancel_message(struct qr_apply_ctx *ctx,
                            const Qraft__Message *m,
                            const char *detail);
int qr_apply_publish(struct qr_apply_ctx *ctx,
                     const Qraft__Publish *p,
                     struct qr_apply_result *res);
int qr_apply_cancel(struct qr_apply_ctx *ctx,
                    const Qraft__Cancel *c,
                    struct qr_apply_result *res);
int qr_apply_dlq_replay(struct qr_apply_ctx *ctx,
                        const Qraft__DlqReplay *r,
                        struct qr_apply_result *res);
int qr_apply_dlq_delete(struct qr_apply_ctx *ctx,
                        const Qraft__DlqDelete *d,
                        struct qr_apply_result *res);
int qr_apply_delivery_results(struct qr_apply_ctx *ctx,
                              const Qraft__DeliveryResults *batch);

/* apply_workflow.c: workflow runs (docs/workflow.md). */

/* Flow control (apply_flow.c). Whether the cluster is at its feature
 * level; where a new message goes: at that level a message with a flow
 * control key is sharded by the key and waits in the key's waitlist
 * (flow_waitlist), otherwise it is sharded by its id. Every message apply
 * creates is placed (m->id and the flow fields set first). */
bool qr_apply_flow_on(const struct qr_apply_ctx *ctx);
void qr_apply_place(const struct qr_apply_ctx *ctx, Qraft__Message *m);
int qr_apply_flow_control_update(struct qr_apply_ctx *ctx,
                                 const Qraft__FlowControlUpdate *u,
                                 struct qr_apply_result *res);

/* Whether the cluster is at the workflow feature level: below it a
 * workflow publish applies as a plain message, as on nodes without
 * workflows. */
bool qr_apply_workflow_on(const struct qr_apply_ctx *ctx);

/* The run a workflow publish (p->request->workflow set) goes into: 1 with
 * *run the stored run (a step) or a new empty one (a trigger); 0 when res
 * says why not (a repeated trigger: deduplicated; a step into a run that
 * does not exist or is over: BAD_REQUEST); a store error otherwise. Free
 * *run with qr_apply_workflow_free. */
int qr_apply_workflow_begin(struct qr_apply_ctx *ctx,
                            const Qraft__Publish *p,
                            Qraft__WorkflowRun **run,
                            struct qr_apply_result *res);

/* A step's message takes the run's settings its own publish leaves unset
 * (the SDK's WF_TriggerOnConfig): retries, retry delay, timeout, failure
 * callback, labels, flow control. */
void qr_apply_workflow_inherit(const Qraft__WorkflowRun *run,
                               const Qraft__PublishRequest *req,
                               Qraft__Message *m);

/* A step result the run has stored already (the same step id and target
 * step in the recent history: the SDK retried a publish whose answer it
 * lost): 1 with res answering the first one's message as deduplicated,
 * 0 when m is new, or a store error. */
int qr_apply_workflow_duplicate(struct qr_apply_ctx *ctx,
                                const Qraft__WorkflowRun *run,
                                const Qraft__Message *m,
                                struct qr_apply_result *res);

/* Writes m's history entry (m->workflow_seq) and the run, in the entry's
 * transaction; a trigger's run is filled from req and m first (borrowing
 * their fields). */
int qr_apply_workflow_append(struct qr_apply_ctx *ctx,
                             Qraft__WorkflowRun *run,
                             const Qraft__PublishRequest *req,
                             const Qraft__Message *m);

/* Frees what qr_apply_workflow_begin returned (created: a trigger's). */
void qr_apply_workflow_free(Qraft__WorkflowRun *run, bool created);

int qr_apply_workflow_end(struct qr_apply_ctx *ctx,
                          const Qraft__WorkflowEnd *e,
                          struct qr_apply_result *res);

/* The run of a message that was dead-lettered, for its failure callback. */
struct qr_apply_failed_run {
    struct qr_callback_run cb; /* borrowed from run and first */
    Qraft__WorkflowRun *run;   /* NULL: m is no workflow step */
    Qraft__WorkflowStep *first;
};

/* m (a step of a workflow run, as it is going into the DLQ) failed for
 * good: a running run fails with it, and its other messages not delivered
 * yet are cancelled. out->run is then set, and out->cb says what the
 * failure callback reports; free with qr_apply_workflow_failed_free.
 * Returns 0 (out->run NULL when m has no run) or a store error. */
int qr_apply_workflow_failed(struct qr_apply_ctx *ctx,
                             const Qraft__Message *m,
                             struct qr_apply_failed_run *out);
void qr_apply_workflow_failed_free(struct qr_apply_failed_run *f);

/* m, a dead letter, is replayed: when it is a step of a workflow run that
 * failed, the run is running again (it failed with m). Returns 0 or a
 * store error. */
int qr_apply_workflow_reopen(struct qr_apply_ctx *ctx, const Qraft__Message *m);

/* Workflow DLQ resume (the dead letter replayed, its run running again)
 * or restart (the run from its first entry again). */
int qr_apply_workflow_resume(struct qr_apply_ctx *ctx,
                             const Qraft__WorkflowResume *r,
                             struct qr_apply_result *res);

/* cb (id set, not stored yet) is the callback of call: when call is a
 * context.call of a running run, cb joins the run (a fromCallback entry in
 * its history, written here). Returns 0 or a store error. */
int qr_apply_workflow_callback(struct qr_apply_ctx *ctx,
                               const Qraft__Message *call,
                               Qraft__Message *cb);

/* The word for a run's state in a refusal ("finished", "cancelled"). */
const char *qr_apply_run_state_word(Qraft__WorkflowRunState s);

/* apply_wait.c: context.waitForEvent and context.invoke's report. */

/* context.waitForEvent: a waiter created (the run running), notified
 * (those of the command's targets still waiting) or timed out (fenced by
 * its deadline); a fired waiter's run gets a Wait step. */
int qr_apply_wait_create(struct qr_apply_ctx *ctx,
                         const Qraft__WaitCreate *c,
                         struct qr_apply_result *res);
int qr_apply_notify(struct qr_apply_ctx *ctx,
                    const Qraft__Notify *n,
                    struct qr_apply_result *res);
int qr_apply_wait_timeout(struct qr_apply_ctx *ctx,
                          const Qraft__WaitTimeout *t,
                          struct qr_apply_result *res);

/* run (invoked by another run's context.invoke) has ended: the invoking
 * run gets its Invoke step, whose out is {"body": the result, "isFailed",
 * "isCanceled"} as JSON text, delivered to the invoking endpoint. An
 * invoking run that is over takes nothing. Returns 0 or a store error. */
int qr_apply_workflow_notify_invoker(struct qr_apply_ctx *ctx,
                                     const Qraft__WorkflowRun *run);

/* apply_queue.c: queues (their invariants are written there). */

/* Queue semantics apply once the cluster's feature level has them (a
 * replicated value, so every replica agrees). */
bool qr_apply_queues_on(const struct qr_apply_ctx *ctx);
/* What the leader checks (command.c), checked again: a name becomes part
 * of LMDB keys, and bad content must never stop apply. */
bool qr_apply_queue_name_ok(const char *name);
/* Puts m (a message that is new, or was not QUEUED) at the tail of its
 * queue, creating the queue if needed, then lets the queue fill: m may be
 * activated at once. Stores m. */
int qr_apply_queue_enqueue(struct qr_apply_ctx *ctx,
                           Qraft__Message *m,
                           const char *detail);
/* A message that holds a slot of its source's queue (m is a callback being
 * created for src): counts it on the queue. */
int qr_apply_queue_take_slot(struct qr_apply_ctx *ctx,
                             const Qraft__Message *src,
                             Qraft__Message *m);
/* m (a shallow copy, about to be stored) has become final: it gives back
 * the slot it holds, if any, and its queue fills. */
int qr_apply_queue_release(struct qr_apply_ctx *ctx, Qraft__Message *m);
/* m (a shallow copy, about to be stored) leaves its queue's FIFO without
 * being activated (cancelled). */
int qr_apply_queue_unlink(struct qr_apply_ctx *ctx, const Qraft__Message *m);
int qr_apply_queue_upsert(struct qr_apply_ctx *ctx,
                          const Qraft__QueueUpsert *u,
                          struct qr_apply_result *res);
int qr_apply_queue_pause(struct qr_apply_ctx *ctx,
                         const Qraft__QueuePause *p,
                         struct qr_apply_result *res);
int qr_apply_queue_delete(struct qr_apply_ctx *ctx,
                          const Qraft__QueueDelete *d,
                          struct qr_apply_result *res);

/* apply_config.c: the cluster's settings (signing keys, node info, feature
 * level, shards), retention (prune), schedules and URL groups. */
int qr_apply_set_signing_keys(struct qr_apply_ctx *ctx,
                              const Qraft__SetSigningKeys *s,
                              struct qr_apply_result *res);
int qr_apply_prune(struct qr_apply_ctx *ctx,
                   const Qraft__Prune *p,
                   struct qr_apply_result *res);
int qr_apply_set_node_info(struct qr_apply_ctx *ctx,
                           const Qraft__SetNodeInfo *s,
                           struct qr_apply_result *res);
int qr_apply_set_feature_level(struct qr_apply_ctx *ctx,
                               const Qraft__SetFeatureLevel *l,
                               struct qr_apply_result *res);
int qr_apply_assign_shards(struct qr_apply_ctx *ctx,
                           const Qraft__AssignShards *a,
                           struct qr_apply_result *res);
int qr_apply_schedule_upsert(struct qr_apply_ctx *ctx,
                             const Qraft__ScheduleUpsert *u,
                             struct qr_apply_result *res);
int qr_apply_schedule_delete(struct qr_apply_ctx *ctx,
                             const Qraft__ScheduleDelete *d,
                             struct qr_apply_result *res);
int qr_apply_schedule_pause(struct qr_apply_ctx *ctx,
                            const Qraft__SchedulePause *p,
                            struct qr_apply_result *res);
int qr_apply_schedule_fire(struct qr_apply_ctx *ctx,
                           const Qraft__ScheduleFire *f,
                           struct qr_apply_result *res);
int qr_apply_group_add(struct qr_apply_ctx *ctx,
                       const Qraft__GroupAddEndpoints *a,
                       struct qr_apply_result *res);
int qr_apply_group_remove(struct qr_apply_ctx *ctx,
                          const Qraft__GroupRemoveEndpoints *r,
                          struct qr_apply_result *res);
int qr_apply_group_delete(struct qr_apply_ctx *ctx,
                          const Qraft__GroupDelete *d,
                          struct qr_apply_result *res);

#endif /* QR_FSM_INT_H */
