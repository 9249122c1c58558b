/* Replicated commands: how they are built and framed into raft entries,
 * and the feature level each needs: what apply needs to read an entry.
 * The checks a face runs on a request before it builds one are in
 * repl/check.h.
 *
 * One raft entry carries one qraft.Entry (many commands: group commit):
 *
 *   offset  size  field
 *   0       4     magic "QRE1"
 *   4       4     payload length N, big-endian
 *   8       N     payload: a packed qraft.Entry
 *   8+N     0..7  zero padding, so the entry is a multiple of 8 bytes
 *                 (the raft library refuses unaligned entries)
 *
 * The payload is assembled from commands that were packed one by one as they
 * arrived (a repeated field is its elements' encodings, each behind a tag and
 * a length), so a batch never holds the callers' object graphs. Every
 * request is checked (check.c) before any work is done; apply still never
 * trusts those checks (fsm.h). */
#ifndef QR_COMMAND_H
#define QR_COMMAND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "qraft.pb-c.h"

#define QR_COMMAND_FORMAT 1u
#define QR_ENTRY_HEADER_BYTES 8u
#define QR_ENTRY_MAGIC 0x51524531u /* "QRE1" */

/* Feature levels: what a cluster may propose. A node advertises the level
 * of its binary (or less, when pinned with --max-feature-level); the leader
 * raises the cluster's level to the lowest level its members advertise, and
 * proposes a command kind only once the cluster is at its level, so a node
 * never receives a command it does not know during a rolling upgrade.
 *   1  publish, cancel, DLQ replay/delete, keys, delivery results, prune,
 *      node info, shard assignment, the feature level itself
 *   2  url groups, queues, schedules
 *   3  no new command kind: snapshots as page images (a replica below it
 *      cannot restore one), and Prune removes finished messages oldest
 *      first from the store's `done` index (store format 3)
 *   4  workflow runs: a publish with Upstash-Workflow-* (apply keeps the
 *      run's history), WorkflowEnd, WaitCreate, Notify, WaitTimeout,
 *      WorkflowResume
 *   5  flow control: apply shards a message with a flow control key by
 *      the key and keeps it in the key's waitlist (`fcdue`, `fckeys`);
 *      FlowControlUpdate
 *   6  redaction: a publish (or a schedule's template) with
 *      Upstash-Redact-Fields; a node below it would store and show the
 *      redacted parts
 * A new command kind raises QR_FEATURE_LEVEL and is listed in
 * qr_command_level. */
#define QR_FEATURE_LEVEL 6u
/* Queues: the Queue* commands, and queue semantics in apply (a publish or a
 * DLQ replay into a queue); below it apply keeps the queue name only, as
 * nodes without queues do, so a mixed cluster does not diverge. */
#define QR_FEATURE_LEVEL_QUEUES 2u
/* Image snapshots (qr_store_snapshot_open_image): a leader takes its
 * snapshots as page images only once the cluster is at this level, so an
 * image is never sent to a node that only restores the pairs format; below
 * it, snapshots keep the pairs format, which every version restores. */
#define QR_FEATURE_LEVEL_IMAGE_SNAPSHOTS 3u
/* Workflow runs: below it apply would take a workflow publish for a plain
 * message, so the leader proposes none. */
#define QR_FEATURE_LEVEL_WORKFLOW 4u
/* Flow control: below it apply shards every message by its id and keeps
 * no waitlist, as nodes before it do, so a mixed cluster does not diverge;
 * such messages are sent without limits. */
#define QR_FEATURE_LEVEL_FLOW_CONTROL 5u
/* Redaction (PublishRequest.redact): below it apply keeps no redact spec,
 * as nodes before it do (they ignore the field), so a mixed cluster does
 * not diverge; the leader proposes none, so nothing is shown unredacted. */
#define QR_FEATURE_LEVEL_REDACT 6u
/* Prune by the `done` index (oldest finished first); below it apply walks
 * msgs in id order from the command's scan_after_id, as nodes before it do,
 * so a mixed cluster deletes the same messages everywhere. */
#define QR_FEATURE_LEVEL_DONE_INDEX 3u

/* "msg_" + 12 hex (ms) + 4 hex (node) + 8 hex (sequence) + NUL */
#define QR_ID_BYTES 29

/* Namespaces of dedup keys. */
#define QR_DEDUP_ID_PREFIX "id:"
#define QR_DEDUP_CONTENT_PREFIX "content:"
#define QR_DEDUP_REQUEST_PREFIX "req:"
#define QR_DEDUP_MAX_KEYS 3
/* A URL-group member's key: "ep:" + sha256 hex of (key, group, url). */
#define QR_DEDUP_ENDPOINT_PREFIX "ep:"

/* A command packed on its own; data is owned (free with free()). */
struct qr_packed {
    uint8_t *data;
    size_t len;
};

/* The longest queue name apply accepts, whatever the leader's limits say
 * (they are at most this). */
#define QR_COMMAND_MAX_QUEUE_NAME_BYTES 256u

/* True when s (borrowed) is one or more ASCII letters, digits and
 * characters of punct. */
bool qr_command_is_word(const char *s, const char *punct);

/* True when s is a queue, URL group or endpoint name: [A-Za-z0-9._-]+
 * (borrowed). */
bool qr_command_is_name(const char *s);

/* Writes a message id that sorts by time: ms, then node, then sequence. */
void qr_command_message_id(char out[QR_ID_BYTES],
                           uint64_t ms,
                           uint64_t node_id,
                           uint32_t seq);

/* Builds and packs the Publish command for a checked request (borrowed).
 * Computes the dedup keys (caller's dedup id, content hash, idempotency key);
 * for one endpoint's copy of a URL-group publish (topic_name and url both
 * set) each key is namespaced by the group and the endpoint URL, so every
 * endpoint dedups on its own.
 * On success out->data is new (free with free()). */
int qr_command_pack_publish(const Qraft__PublishRequest *req,
                            const char *message_id,
                            const struct qr_limits *limits,
                            struct qr_packed *out);

/* The feature level the cluster must be at before cmd may be proposed. */
uint32_t qr_command_level(const Qraft__Command *cmd);

/* The dedup keys of a publish request (caller's dedup id, content hash,
 * idempotency key), each new in keys[i] (free with
 * qr_command_dedup_keys_free); *n says how many. Returns 0 or -ENOMEM. */
int qr_command_dedup_keys(const Qraft__PublishRequest *req,
                          char *keys[QR_DEDUP_MAX_KEYS],
                          size_t *n);
void qr_command_dedup_keys_free(char *keys[QR_DEDUP_MAX_KEYS], size_t n);

/* Sets *cmd (caller's) to the command of one body: body (borrowed) in the
 * Qraft__Command oneof member whose case is body_case. body is the message
 * that case names (asserted), e.g. `&prune.base` for BODY_PRUNE. */
void qr_command_init_one(Qraft__Command *cmd,
                         Qraft__Command__BodyCase body_case,
                         const ProtobufCMessage *body);

/* Packs any command; out->data is new (free with free()). */
int qr_command_pack(const Qraft__Command *cmd, struct qr_packed *out);

/* Size of the framed entry holding these commands, padding included. */
size_t qr_command_entry_size(uint64_t proposed_at_ms,
                             const struct qr_packed *cmds,
                             size_t n);

/* Writes the framed entry into out, which has exactly the size
 * qr_command_entry_size returned for the same arguments. */
void qr_command_entry_write(uint64_t proposed_at_ms,
                            const struct qr_packed *cmds,
                            size_t n,
                            uint8_t *out,
                            size_t size);

/* Decodes a framed entry. Returns new in *out (free with
 * qraft__entry__free_unpacked(e, NULL)), or QR_ECORRUPT when the frame is
 * malformed and QR_EPROTO when its format is newer than this node knows. */
int qr_command_decode_entry(const void *buf, size_t len, Qraft__Entry **out);

#endif /* QR_COMMAND_H */
