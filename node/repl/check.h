/* Checks of request fields that every face runs before it proposes: the
 * REST API, the client RPC and the peer requests (delivery results) answer
 * a bad field with a 4xx and propose nothing. Also the parsing of the
 * REST API's header values (numbers, durations, flow control).
 *
 * These checks guard the faces, not apply: apply never trusts them (see
 * fsm.c, "Apply is total"), so a field one face forgot to check is refused
 * by apply on every replica alike instead of stopping them. Pure: no I/O,
 * no allocation (but qr_command_check_schedule, whose cron parser reads the
 * zone's tz database file). The qr_command_check_* and qr_command_parse_*
 * names are older than this file: the faces and tests call them by those
 * names. */
#ifndef QR_CHECK_H
#define QR_CHECK_H

#include <stdbool.h>
#include <stddef.h>

#include "qraft.pb-c.h"
#include "repl/command.h"

/* Cron expressions of schedules, in bytes. */
#define QR_COMMAND_MAX_CRON_BYTES 256

struct qr_cron;

/* When name[0..len) (any case) is a header qraft sets on every delivery
 * (Upstash-Message-Id, Upstash-Signature, Content-Length, Host...), its
 * canonical spelling; else NULL. A publish that carries one is refused
 * (qr_command_check_publish); the REST face drops one that comes as
 * Upstash-Forward-* (the workflow SDK copies its incoming request's
 * headers into those). */
const char *qr_command_header_reserved(const char *name, size_t len);

/* Workflow run ids: 1 to QR_COMMAND_MAX_RUN_ID_BYTES of [A-Za-z0-9._:-]
 * (the SDK's are "wfr_" and a nanoid). Apply checks them again. */
#define QR_COMMAND_MAX_RUN_ID_BYTES 128u
bool qr_command_is_run_id(const char *s);

/* Event ids (context.waitForEvent, notify): 1 to
 * QR_COMMAND_MAX_EVENT_ID_BYTES of UTF-8 without control characters. */
#define QR_COMMAND_MAX_EVENT_ID_BYTES 200u
bool qr_command_is_event_id(const char *s);

/* Whether a publish's Upstash-Workflow-CallType ("" or "step") makes it a
 * step of its run. */
bool qr_command_is_workflow_step(const char *call_type);

/* Whether it makes it a context.call ("toCallback"): a message to another
 * URL whose callback goes back to the run. */
bool qr_command_is_workflow_call(const char *call_type);

/* What a callback's Upstash-Callback-* (or a failure callback's
 * Upstash-Failure-Callback-*) headers set; the others are forwarded:
 * Forward-X as X, Workflow-Y as Upstash-Workflow-Y (repl/callback.h).
 * Strings are borrowed from the headers. */
struct qr_callback_settings {
    bool retries_set;
    uint32_t retries;
    uint64_t timeout_ms; /* 0: the default */
    const char *retry_delay;
    const char *method;
};

/* Reads one such header (name without the prefix) into cs: false when its
 * value is bad for the limits l (NULL: the fixed bounds apply uses, so
 * that every replica reads a stored value alike). Other names: true,
 * nothing set. */
bool qr_command_callback_setting(const Qraft__Header *h,
                                 const struct qr_limits *l,
                                 struct qr_callback_settings *cs);

/* The body of a context.invoke trigger: the invoking run, its endpoint,
 * the Invoke step it waits for (compact JSON), and the invoked run's
 * initial payload. Strings owned (free with qr_command_invoke_free). */
struct qr_invoke {
    char *run_id;
    char *url;
    char *step_json;
    char *body;
    size_t body_len;
};

/* Parses it (deterministic: apply reads it too). Returns 0, QR_EBADREQ
 * when it is not {"body"?: "...", "workflowRunId", "workflowUrl", "step":
 * {...}}, or -ENOMEM. */
int qr_command_parse_invoke(const uint8_t *body,
                            size_t len,
                            struct qr_invoke *out);
void qr_command_invoke_free(struct qr_invoke *inv);

/* Checks a wait (context.waitForEvent) against the limits: its URLs,
 * timeout headers, step size, and a timeout from 1 ms to the longest
 * delay. Returns 0 or QR_EBADREQ/QR_ETOOLARGE with why in err. */
int qr_command_check_wait(const Qraft__Waiter *w,
                          uint64_t timeout_ms,
                          const struct qr_limits *l,
                          char *err,
                          size_t err_len);

/* A redact spec (PublishRequest.redact, Upstash-Redact-Fields): NULL, or
 * something to redact, header names that are HTTP tokens of at most
 * QR_CHECK_REDACT_MAX_NAME_BYTES, at most QR_CHECK_REDACT_MAX_HEADERS of
 * them. Apply runs it too. Returns 0 or QR_EBADREQ with the reason in err. */
#define QR_CHECK_REDACT_MAX_HEADERS 64u
#define QR_CHECK_REDACT_MAX_NAME_BYTES 256u
int qr_command_check_redact(const Qraft__Redact *r, char *err, size_t err_len);

/* Checks a publish request against the limits, before any work is done.
 * now_ms is the leader's time (for not-before). Returns 0, QR_EBADREQ or
 * QR_ETOOLARGE with a one-line reason in err (err_len bytes) that names the
 * field and, for limits, the limit. */
int qr_command_check_publish(const Qraft__PublishRequest *req,
                             const struct qr_limits *limits,
                             uint64_t now_ms,
                             char *err,
                             size_t err_len);

/* Checks a queue upsert: the name (QR_EBADREQ, or QR_ETOOLARGE over the
 * name limit) and parallelism (0 means 1; above the limit: QR_ECONFLICT,
 * which the REST API answers 412 as QStash does), with the reason in err. */
int qr_command_check_queue(const char *name,
                           uint32_t parallelism,
                           const struct qr_limits *limits,
                           char *err,
                           size_t err_len);

/* Checks a flow control key (1..QR_COMMAND_MAX_FLOW_KEY_BYTES bytes of
 * UTF-8 without control characters) and what a FlowControlUpdate does
 * with it: a known action; PIN with a parallelism and/or a rate (the
 * period, 0 or 1 s .. QR_COMMAND_MAX_FLOW_PERIOD_S, goes with a rate);
 * UNPIN of the parallelism and/or the rate. The faces and apply run it.
 * Returns 0 or QR_EBADREQ with the reason in err. */
#define QR_COMMAND_MAX_FLOW_KEY_BYTES 256u
int qr_command_check_flow_key(const char *key, char *err, size_t err_len);
int qr_command_check_flow_update(const Qraft__FlowControlUpdate *u,
                                 char *err,
                                 size_t err_len);

/* Checks a URL-group change before it is proposed: a valid group name,
 * and for add/remove 1..limits->max_group_endpoints endpoints, each with a
 * valid optional name; added endpoints need an http(s) URL, removed ones a
 * name or a URL. Returns 0 or QR_EBADREQ / QR_ETOOLARGE with the reason in
 * err. Apply runs the same checks on the command. */
int qr_command_check_group_change(const Qraft__GroupChangeRequest *req,
                                  const struct qr_limits *limits,
                                  char *err,
                                  size_t err_len);

/* Parsing shared by the REST API (pure; unit-tested).
 *
 * qr_command_parse_uint: decimal digits only, at most max; -EINVAL or
 * -ERANGE.
 * qr_command_parse_duration: QStash's `<number><unit>` repeated, units s m
 * h d, decimals allowed ("1d10h30m", "1.5s"), at most
 * QR_COMMAND_MAX_DURATION_MS; -EINVAL or -ERANGE.
 * qr_command_parse_flow_control: an Upstash-Flow-Control-Value,
 * "parallelism=N, rate=N, period=<duration or seconds>" in any order, comma
 * separated, spaces optional, each at most once, at least one of
 * parallelism and rate (both >= 1); period defaults to 1 s and is 1 s .. 7
 * days. Returns 0 or -EINVAL with the reason in err. */
#define QR_COMMAND_MAX_DURATION_MS (3650ull * 24 * 3600 * 1000)
#define QR_COMMAND_MAX_FLOW_PERIOD_S (7ull * 24 * 3600)
int qr_command_parse_uint(const char *s,
                          size_t len,
                          uint64_t max,
                          uint64_t *out);
int qr_command_parse_duration(const char *s, size_t len, uint64_t *out_ms);
int qr_command_parse_flow_control(const char *s,
                                  size_t len,
                                  uint32_t *parallelism,
                                  uint32_t *rate,
                                  uint64_t *period_s,
                                  char *err,
                                  size_t err_len);

/* Checks a schedule create/replace request before any work is done: the id
 * (empty, or [A-Za-z0-9._-]+), the cron (parsed into *cron, which must fire
 * at least once: its first slot after now_ms goes to *first_slot_ms) and
 * the message template as qr_command_check_publish does (not-before is
 * refused: each tick's time comes from the cron). Returns 0, QR_EBADREQ or
 * QR_ETOOLARGE with a reason in err. */
int qr_command_check_schedule(const Qraft__ScheduleUpsertRequest *req,
                              const struct qr_limits *limits,
                              uint64_t now_ms,
                              struct qr_cron *cron,
                              uint64_t *first_slot_ms,
                              char *err,
                              size_t err_len);

/* Longest message id a request may name, in bytes (qraft's own ids are
 * QR_ID_BYTES - 1 long; the bound leaves room for longer ones). */
#define QR_CHECK_MAX_MESSAGE_ID_BYTES (QR_ID_BYTES + 63)

/* Whether id can name a message: 1 to QR_CHECK_MAX_MESSAGE_ID_BYTES bytes
 * of printable ASCII (what every id qraft gives out is). NULL is not. */
bool qr_check_message_id(const char *id);

/* The sentence a face answers when qr_check_message_id refused an id. */
#define QR_CHECK_MESSAGE_ID_RULE                                          \
    "a message id is 1 to 92 bytes of printable ASCII (qraft's ids look " \
    "like msg_...)"

/* Checks a peer's delivery results: each names a message by a valid id
 * and has a known outcome. Returns 0, or QR_EBADREQ with a one-line reason that
 * names the result's position in err (err_len bytes, NUL-terminated). */
int qr_check_delivery_results(Qraft__DeliveryResult *const *results,
                              size_t n,
                              char *err,
                              size_t err_len);

#endif /* QR_CHECK_H */
