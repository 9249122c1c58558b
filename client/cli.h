/* The qraft CLI's internal interface: exit codes, the global options, the
 * option ids every command's getopt table uses, and the helpers shared by
 * the command files (cli.c, cli_messages.c, cli_dlq.c, cli_admin.c).
 * Helpers print their own errors and return an exit code; -1 from an option
 * parser means "go on". */
#ifndef QRAFT_CLI_H
#define QRAFT_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "qraft.h"

enum exit_code {
    EXIT_OK = 0,
    EXIT_ERROR = 1,       /* refused or failed by the server, bad reply */
    EXIT_USAGE = 2,       /* bad command line */
    EXIT_NOTFOUND = 3,    /* no such message */
    EXIT_UNAVAILABLE = 4, /* no connection, no leader, timed out, unknown */
    EXIT_UNAUTHORIZED = 5 /* wrong or missing token, or it lacks the scope */
};

/* Options shared by every command. */
struct globals {
    const char *endpoints;
    const char *token;
    bool json;
    bool stale;          /* --stale or QRAFT_STALE=1: stale reads */
    const char *cacert;  /* --cacert or QRAFT_CACERT: TLS */
    const char *cert;    /* --cert or QRAFT_CERT */
    const char *key;     /* --key or QRAFT_KEY */
    const char *context; /* --context or QRAFT_CONTEXT (cli_context.c) */
};

/* Every command's name, for the completion script. */
#define QRAFT_COMMANDS                                                 \
    "publish get cancel ls logs dlq status keys group queue schedule " \
    "flow workflow cluster context completion help"

enum {
    OPT_ENDPOINTS = 1000,
    OPT_TOKEN,
    OPT_JSON,
    OPT_HELP,
    OPT_VERSION,
    OPT_BODY,
    OPT_HEADER,
    OPT_METHOD,
    OPT_RETRIES,
    OPT_RETRY_DELAY,
    OPT_DELAY,
    OPT_NOT_BEFORE,
    OPT_DEDUP_ID,
    OPT_CONTENT_DEDUP,
    OPT_TIMEOUT,
    OPT_CALLBACK,
    OPT_FAILURE_CALLBACK,
    OPT_QUEUE,
    OPT_REDACT,
    OPT_STRICT,
    OPT_MIN_BACKOFF,
    OPT_MAX_BACKOFF,
    OPT_MAX_DOUBLINGS,
    OPT_MAX_RETRY_DURATION,
    OPT_ALL,
    OPT_URL_PREFIX,
    OPT_CATEGORY,
    OPT_SINCE,
    OPT_UNTIL,
    OPT_ROTATE,
    OPT_RPC,
    OPT_LOCAL,
    OPT_STATE,
    OPT_LIMIT,
    OPT_CURSOR,
    OPT_STALE,
    OPT_CACERT,
    OPT_CERT,
    OPT_KEY,
    OPT_CRON,
    OPT_ID,
    OPT_PARALLELISM,
    OPT_PAUSED,
    OPT_YES,
    OPT_DRY_RUN,
    OPT_URL,
    OPT_HOST,
    OPT_PATH,
    OPT_GROUP,
    OPT_SCHEDULE,
    OPT_LABEL,
    OPT_FLOW_KEY,
    OPT_CALLER_IP,
    OPT_STATUS,
    OPT_RUN,
    OPT_OLDEST_FIRST,
    OPT_FOLLOW,
    OPT_RATE,
    OPT_PERIOD,
    OPT_UNPIN_PARALLELISM,
    OPT_UNPIN_RATE,
    OPT_CONTEXT,
};

#define GLOBAL_LONG_OPTIONS                                \
    {"endpoints", required_argument, NULL, OPT_ENDPOINTS}, \
        {"token", required_argument, NULL, OPT_TOKEN},     \
        {"stale", no_argument, NULL, OPT_STALE},           \
        {"cacert", required_argument, NULL, OPT_CACERT},   \
        {"cert", required_argument, NULL, OPT_CERT},       \
        {"key", required_argument, NULL, OPT_KEY},         \
        {"context", required_argument, NULL, OPT_CONTEXT}, \
    {                                                      \
        "help", no_argument, NULL, OPT_HELP                \
    }

/* The options of a publish, also taken by schedule create. */
#define PUBLISH_LONG_OPTIONS                                                  \
    {"body", required_argument, NULL, OPT_BODY},                              \
        {"header", required_argument, NULL, OPT_HEADER},                      \
        {"method", required_argument, NULL, OPT_METHOD},                      \
        {"retries", required_argument, NULL, OPT_RETRIES},                    \
        {"retry-delay", required_argument, NULL, OPT_RETRY_DELAY},            \
        {"delay", required_argument, NULL, OPT_DELAY},                        \
        {"not-before", required_argument, NULL, OPT_NOT_BEFORE},              \
        {"dedup-id", required_argument, NULL, OPT_DEDUP_ID},                  \
        {"content-dedup", no_argument, NULL, OPT_CONTENT_DEDUP},              \
        {"timeout", required_argument, NULL, OPT_TIMEOUT},                    \
        {"callback", required_argument, NULL, OPT_CALLBACK},                  \
        {"failure-callback", required_argument, NULL, OPT_FAILURE_CALLBACK},  \
        {"queue", required_argument, NULL, OPT_QUEUE},                        \
        {"redact", required_argument, NULL, OPT_REDACT},                      \
        {"strict", no_argument, NULL, OPT_STRICT},                            \
        {"min-backoff", required_argument, NULL, OPT_MIN_BACKOFF},            \
        {"max-backoff", required_argument, NULL, OPT_MAX_BACKOFF},            \
        {"max-doublings", required_argument, NULL, OPT_MAX_DOUBLINGS},        \
    {                                                                         \
        "max-retry-duration", required_argument, NULL, OPT_MAX_RETRY_DURATION \
    }

/* A publish being built from options; the body is owned when read from a
 * file or stdin (free with publish_args_fini). */
struct publish_args {
    struct qraft_publish p;
    struct qraft_header *headers;
    char *body; /* owned when read from a file or stdin */
};

/* Handles one publish option into a (cmd names the command in errors).
 * Returns -1 when opt is not one, else EXIT_OK or a usage error's code. */
int publish_option(const char *cmd,
                   int opt,
                   char **argv,
                   struct publish_args *a);
void publish_args_fini(struct publish_args *a);

/* True when arg asks for help (--help or -h), where a subcommand or an
 * argument is expected. */
bool is_help(const char *arg);

__attribute__((format(printf, 2, 3))) int usage_error(const char *cmd,
                                                      const char *fmt,
                                                      ...);
/* The exit code for a libqraft code. */
int exit_for(int rc);
/* Prints "qraft: cmd: why" and returns the exit code for rc. */
int report(const char *cmd, const struct qraft_client *c, int rc);
/* Handles the options every command takes. Returns true if opt was one. */
bool global_option(int opt, struct globals *g);
/* Opens a client from the global options (opts may be NULL); an exit
 * code, EXIT_OK with *out set. */
int open_client_with(const char *cmd,
                     const struct globals *g,
                     const struct qraft_options *opts,
                     struct qraft_client **out);
int open_client(const char *cmd,
                const struct globals *g,
                struct qraft_client **out);
/* Parses the options of a command that takes only global ones and --json,
 * leaving optind at the first operand. */
int simple_options(const char *cmd,
                   const char *usage,
                   int argc,
                   char **argv,
                   struct globals *g);

/* Parses "<number><unit>" repeated, units ms s m h d, into milliseconds. */
int parse_duration_ms(const char *s, uint64_t *out);
/* A decimal number up to max. */
int parse_u64(const char *s, uint64_t max, uint64_t *out);
/* A point in time: unix seconds, or a duration ago ("1h"); unix ms. */
int parse_time_ms(const char *s, uint64_t *out);
/* --since / --until (opt) from optarg into *since_ms or *until_ms; a
 * usage error's exit code when it does not parse, else EXIT_OK. */
int time_option(const char *cmd,
                int opt,
                char **argv,
                uint64_t *since_ms,
                uint64_t *until_ms);
/* Asks "what?" on a terminal unless yes ("delete 3 dead letters");
 * without a terminal, refuses (a usage error naming --yes). False, with
 * *ex the exit code, when not confirmed. */
bool confirm(const char *cmd, const char *what, bool yes, int *ex);
/* A bulk command's --dry-run answer: the count on stdout and "dry run:
 * would <what>" on stderr, or JSON {count, dry_run: true}. Returns the
 * exit code. */
int print_dry_run(const char *cmd, uint64_t count, const char *what, bool json);
/* Reads all of f into a new buffer (free with free). */
int read_all(FILE *f, char **out, size_t *len_out);

/* ISO-8601 UTC with milliseconds, or "-" for 0. */
const char *iso_time(uint64_t ms, char *buf, size_t size);
/* A JSON string for s; bytes that are not UTF-8 become '?'. */
json_t *jstr(const char *s);
json_t *base64(const uint8_t *data, size_t len);
/* Prints j on stdout and frees it. */
int print_json(json_t *j);
/* "name:   value", the text output's aligned line. */
void print_field(const char *name, const char *value);

json_t *message_json(const struct qraft_message *m);
json_t *events_json(const struct qraft_message *m);
/* A page of messages as a table (or JSON); the next cursor on stderr. */
int print_list(const struct qraft_message_list *l, const char *cmd, bool json);
/* Options of ls and dlq ls. */
int list_options(const char *cmd,
                 const char *usage,
                 bool with_state,
                 int argc,
                 char **argv,
                 struct globals *g,
                 enum qraft_state *state,
                 const char **cursor,
                 uint32_t *limit);

/* What a bulk command did: ids on stdout (or in one JSON document at the
 * end: {count, <verb>: [ids], failed: [{id, error}]}), one stderr line per
 * failure, and "<verb> N <noun>s" on stderr at the end. ex is the exit
 * code of the first failure. */
struct bulk_out {
    const char *cmd;
    bool json;
    json_t *done;
    json_t *failed;
    size_t n_done;
    size_t n_failed;
    int ex;
    bool progress_shown;
};

void bulk_out_init(struct bulk_out *o, const char *cmd, bool json);
void bulk_out_item(struct bulk_out *o,
                   const char *id,
                   const struct qraft_item_result *r);
/* "verb N of TOTAL..." (TOTAL 0: unknown) on one line of a terminal's
 * stderr, between batches; nothing when stdout is that terminal too. */
void bulk_out_progress(struct bulk_out *o, const char *verb, size_t total);
/* Prints the count (and the JSON document); returns the exit code. */
int bulk_out_end(struct bulk_out *o, const char *verb, const char *noun);

/* The commands: argv[0] is the command's name. */
int cmd_publish(int argc, char **argv, struct globals *g);
int cmd_get(int argc, char **argv, struct globals *g);
int cmd_cancel(int argc, char **argv, struct globals *g);
int cmd_logs(int argc, char **argv, struct globals *g);
int cmd_ls(int argc, char **argv, struct globals *g);
int cmd_dlq(int argc, char **argv, struct globals *g);
int cmd_group(int argc, char **argv, struct globals *g);
int cmd_status(int argc, char **argv, struct globals *g);
int cmd_cluster(int argc, char **argv, struct globals *g);
int cmd_keys(int argc, char **argv, struct globals *g);
int cmd_queue(int argc, char **argv, struct globals *g);
int cmd_schedule(int argc, char **argv, struct globals *g);
int cmd_flow(int argc, char **argv, struct globals *g);
int cmd_workflow(int argc, char **argv, struct globals *g);
int cmd_context(int argc, char **argv, struct globals *g);
int cmd_completion(int argc, char **argv, struct globals *g);

/* Fills the settings g lacks (no flag, no environment variable) from the
 * chosen context: --context, QRAFT_CONTEXT, else the current one (none:
 * nothing). Prints why and returns an exit code when the context cannot
 * be read; EXIT_OK otherwise. */
int context_settings(const char *cmd, struct globals *g);

#endif
