/* The commands that take the message filter (the REST API's logs, DLQ and
 * bulk cancel filters): qraft logs (with --follow) and qraft cancel (one id,
 * or every match of a filter, confirmed first) (cli.h). A filter option the
 * command does not know is a usage error, never ignored. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define FILTER_HELP                                                          \
    "filters (each given must match; times are unix seconds or a duration\n" \
    "ago: 90s, 1h, 2d):\n"                                                   \
    "  --id ID  --url URL  --url-prefix P  --host H[:PORT]  --path P\n"      \
    "  --group NAME  --queue NAME  --schedule ID  --label L  --flow-key K\n" \
    "  --caller-ip IP  --category C  --status HTTP_STATUS  --run RUN_ID\n"   \
    "  --since TIME  --until TIME\n"

static const char usage_logs[] =
    "usage: qraft logs [FILTERS] [--state S]... [--limit N] [--cursor C]\n"
    "                  [--oldest-first] [--follow] [--json]\n"
    "\n"
    "Shows the message log, newest first: one line per step of a message\n"
    "(CREATED, ACTIVE, DELIVERED, ERROR, RETRY, FAILED, CANCEL_REQUESTED,\n"
    "CANCELLED; --state keeps those given). When there are more, stderr\n"
    "names the --cursor for the next page. --follow prints the last\n"
    "entries oldest first, then each new one as it happens, until\n"
    "interrupted (--json: one JSON object a line). Served by the node\n"
    "asked.\n"
    "\n" FILTER_HELP
    "\n"
    "example:\n"
    "  qraft logs --url https://example.com/hook --since 1h --state FAILED\n"
    "  qraft logs --follow --queue orders\n";

static const char usage_cancel[] =
    "usage: qraft cancel ID [--json]\n"
    "       qraft cancel FILTERS [--yes] [--dry-run] [--json]\n"
    "\n"
    "Cancels a message that has not been delivered yet, or every such\n"
    "message that matches the filters (1000 at a time until none is\n"
    "left), printing each id cancelled and the count on stderr. A cancel by\n"
    "filter asks for confirmation on a terminal; --yes skips it, and is\n"
    "required when stdin is not a terminal. --dry-run prints how many\n"
    "messages the filters take now and cancels nothing (the server counts\n"
    "with the cancel's own selection; `qraft logs` with the same filters\n"
    "shows them).\n"
    "\n" FILTER_HELP
    "\n"
    "example:\n"
    "  qraft cancel msg_01a20717539c00037e994b6a\n"
    "  qraft cancel --url https://old.example.com/hook --dry-run\n"
    "  qraft cancel --url https://old.example.com/hook --yes\n";

#define FILTER_LONG_OPTIONS                                      \
    {"id", required_argument, NULL, OPT_ID},                     \
        {"url", required_argument, NULL, OPT_URL},               \
        {"url-prefix", required_argument, NULL, OPT_URL_PREFIX}, \
        {"host", required_argument, NULL, OPT_HOST},             \
        {"path", required_argument, NULL, OPT_PATH},             \
        {"group", required_argument, NULL, OPT_GROUP},           \
        {"queue", required_argument, NULL, OPT_QUEUE},           \
        {"schedule", required_argument, NULL, OPT_SCHEDULE},     \
        {"label", required_argument, NULL, OPT_LABEL},           \
        {"flow-key", required_argument, NULL, OPT_FLOW_KEY},     \
        {"caller-ip", required_argument, NULL, OPT_CALLER_IP},   \
        {"category", required_argument, NULL, OPT_CATEGORY},     \
        {"status", required_argument, NULL, OPT_STATUS},         \
        {"run", required_argument, NULL, OPT_RUN},               \
        {"since", required_argument, NULL, OPT_SINCE},           \
    {                                                            \
        "until", required_argument, NULL, OPT_UNTIL              \
    }

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int parse_time_ms(const char *s, uint64_t *out)
{
    uint64_t v;
    if (parse_u64(s, UINT64_MAX / 1000, &v) == 0) {
        *out = v * 1000;
        return 0;
    }
    uint64_t now = wall_ms();
    if (parse_duration_ms(s, &v) != 0 || v > now) {
        return -1;
    }
    *out = now - v;
    return 0;
}

int time_option(const char *cmd,
                int opt,
                char **argv,
                uint64_t *since_ms,
                uint64_t *until_ms)
{
    uint64_t v;
    if (parse_time_ms(optarg, &v) != 0) {
        return usage_error(cmd,
                           "%s '%s': expected unix seconds or a duration ago "
                           "(90s, 1h, 2d)",
                           argv[optind - 2], optarg);
    }
    *(opt == OPT_SINCE ? since_ms : until_ms) = v;
    return EXIT_OK;
}

/* Handles one filter option into f; -1 when opt is not one. */
static int filter_option(const char *cmd,
                         int opt,
                         char **argv,
                         struct qraft_filter *f)
{
    uint64_t v;
    switch (opt) {
        case OPT_ID:
            f->message_id = optarg;
            return EXIT_OK;
        case OPT_URL:
            f->url = optarg;
            return EXIT_OK;
        case OPT_URL_PREFIX:
            f->url_prefix = optarg;
            return EXIT_OK;
        case OPT_HOST:
            f->host = optarg;
            return EXIT_OK;
        case OPT_PATH:
            f->path = optarg;
            return EXIT_OK;
        case OPT_GROUP:
            f->group = optarg;
            return EXIT_OK;
        case OPT_QUEUE:
            f->queue = optarg;
            return EXIT_OK;
        case OPT_SCHEDULE:
            f->schedule_id = optarg;
            return EXIT_OK;
        case OPT_LABEL:
            f->label = optarg;
            return EXIT_OK;
        case OPT_FLOW_KEY:
            f->flow_control_key = optarg;
            return EXIT_OK;
        case OPT_CALLER_IP:
            f->caller_ip = optarg;
            return EXIT_OK;
        case OPT_CATEGORY:
            f->category = optarg;
            return EXIT_OK;
        case OPT_RUN:
            f->workflow_run_id = optarg;
            return EXIT_OK;
        case OPT_STATUS:
            if (parse_u64(optarg, 599, &v) != 0 || v < 100) {
                return usage_error(
                    cmd, "--status '%s': expected an HTTP status", optarg);
            }
            f->response_status = (int32_t)v;
            return EXIT_OK;
        case OPT_SINCE:
        case OPT_UNTIL:
            return time_option(cmd, opt, argv, &f->from_ms, &f->to_ms);
        default:
            return -1;
    }
}

int print_dry_run(const char *cmd, uint64_t count, const char *what, bool json)
{
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "count", json_integer((json_int_t)count));
        json_object_set_new(o, "dry_run", json_true());
        return print_json(o);
    }
    printf("%" PRIu64 "\n", count);
    fprintf(stderr, "qraft: %s: dry run: would %s\n", cmd, what);
    return EXIT_OK;
}

bool confirm(const char *cmd, const char *what, bool yes, int *ex)
{
    if (yes) {
        return true;
    }
    if (!isatty(STDIN_FILENO)) {
        *ex = usage_error(cmd,
                          "this would %s; stdin is not a terminal to confirm "
                          "on: add --yes",
                          what);
        return false;
    }
    fprintf(stderr, "qraft: %s: %s? [y/N] ", cmd, what);
    fflush(stderr);
    char line[16];
    if (fgets(line, sizeof line, stdin) == NULL ||
        (line[0] != 'y' && line[0] != 'Y')) {
        fprintf(stderr, "qraft: %s: not confirmed; nothing done\n", cmd);
        *ex = EXIT_ERROR;
        return false;
    }
    return true;
}

/* ----------------------------------------------------------------------
 * logs */

static json_t *log_json(const struct qraft_log_entry *e)
{
    json_t *o = json_object();
    json_object_set_new(o, "time_ms", json_integer((json_int_t)e->time_ms));
    json_object_set_new(o, "state", jstr(e->state));
    json_object_set_new(o, "message_id", jstr(e->message_id));
    json_object_set_new(o, "attempt", json_integer(e->attempt));
    json_object_set_new(o, "url", jstr(e->url));
    json_object_set_new(o, "detail", jstr(e->detail));
    return o;
}

static void print_log_line(const struct qraft_log_entry *e, bool json)
{
    if (json) {
        json_t *o = log_json(e);
        char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(o);
        if (s != NULL) {
            puts(s);
            free(s);
        }
        return;
    }
    char t[64];
    printf("%-24s %-16s %-30s %-7" PRIu32 " %s%s%s\n",
           iso_time(e->time_ms, t, sizeof t), e->state, e->message_id,
           e->attempt, e->url, e->detail[0] != '\0' ? "  " : "", e->detail);
}

static void print_log_header(void)
{
    printf("%-24s %-16s %-30s %-7s %s\n", "TIME (UTC)", "STATE", "MESSAGE",
           "ATTEMPT", "URL  DETAIL");
}

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* Sleeps about ms, returning early when interrupted. */
static void nap(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000,
                          .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (!interrupted && nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A log entry's identity, to print each once while following. */
static bool same_entry(const struct qraft_log_entry *a,
                       const struct qraft_log_entry *b)
{
    return a->time_ms == b->time_ms && strcmp(a->state, b->state) == 0 &&
           strcmp(a->message_id, b->message_id) == 0 &&
           a->attempt == b->attempt;
}

struct logs_args {
    struct qraft_filter f;
    const char *states[16];
    size_t n_states;
    const char *cursor;
    uint32_t limit;
    bool oldest_first;
    bool follow;
};

/* --follow: the last `limit` entries oldest first, then every 500 ms the
 * ones at or after the newest printed, skipping those printed already (the
 * page at the newest time is kept to tell). Ends on SIGINT/SIGTERM. */
static int logs_follow(struct qraft_client *c, struct logs_args *a, bool json)
{
    signal(SIGINT, on_interrupt);
    signal(SIGTERM, on_interrupt);
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *const *states = a->n_states > 0 ? a->states : NULL;
    struct qraft_log_page *last = NULL; /* what was printed last */
    int rc = qraft_logs(c, &a->f, states, a->n_states, NULL,
                        a->limit != 0 ? a->limit : 20, false, &last);
    if (rc != 0) {
        return report("logs", c, rc);
    }
    if (!json) {
        print_log_header();
    }
    for (size_t i = last->n_entries; i > 0; i--) {
        print_log_line(&last->entries[i - 1], json);
    }
    uint64_t newest = last->n_entries > 0 ? last->entries[0].time_ms : 0;
    int ex = EXIT_OK;
    while (!interrupted) {
        nap(500);
        if (interrupted) {
            break;
        }
        struct qraft_filter f = a->f;
        if (newest > f.from_ms) {
            f.from_ms = newest;
        }
        struct qraft_log_page *p = NULL;
        rc = qraft_logs(c, &f, states, a->n_states, NULL, 1000, true, &p);
        if (rc != 0) {
            ex = report("logs", c, rc);
            break;
        }
        for (size_t i = 0; i < p->n_entries; i++) {
            bool seen = false;
            for (size_t j = 0; j < last->n_entries && !seen; j++) {
                seen = same_entry(&p->entries[i], &last->entries[j]);
            }
            if (!seen) {
                print_log_line(&p->entries[i], json);
            }
        }
        if (p->n_entries > 0) {
            newest = p->entries[p->n_entries - 1].time_ms;
            qraft_log_page_free(last);
            last = p;
        } else {
            qraft_log_page_free(p);
        }
    }
    qraft_log_page_free(last);
    return ex;
}

int cmd_logs(int argc, char **argv, struct globals *g)
{
    static const struct option opts[] = {
        GLOBAL_LONG_OPTIONS,
        FILTER_LONG_OPTIONS,
        {"json", no_argument, NULL, OPT_JSON},
        {"state", required_argument, NULL, OPT_STATE},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {"cursor", required_argument, NULL, OPT_CURSOR},
        {"oldest-first", no_argument, NULL, OPT_OLDEST_FIRST},
        {"follow", no_argument, NULL, OPT_FOLLOW},
        {NULL, 0, NULL, 0},
    };
    struct logs_args a;
    memset(&a, 0, sizeof a);
    int opt;
    uint64_t v;
    while ((opt = getopt_long(argc, argv, "f", opts, NULL)) != -1) {
        if (global_option(opt, g)) {
            continue;
        }
        int ex = filter_option("logs", opt, argv, &a.f);
        if (ex != -1) {
            if (ex != EXIT_OK) {
                return ex;
            }
            continue;
        }
        switch (opt) {
            case OPT_HELP:
                fputs(usage_logs, stdout);
                return EXIT_OK;
            case OPT_STATE:
                if (qraft_log_state_check(optarg) != 0) {
                    return usage_error("logs",
                                       "--state '%s': expected CREATED, "
                                       "ACTIVE, DELIVERED, ERROR, RETRY, "
                                       "FAILED, CANCEL_REQUESTED or CANCELLED",
                                       optarg);
                }
                if (a.n_states == sizeof a.states / sizeof a.states[0]) {
                    return usage_error("logs", "too many --state");
                }
                a.states[a.n_states++] = optarg;
                break;
            case OPT_LIMIT:
                if (parse_u64(optarg, 1000, &v) != 0 || v == 0) {
                    return usage_error(
                        "logs", "--limit '%s': expected 1 to 1000", optarg);
                }
                a.limit = (uint32_t)v;
                break;
            case OPT_CURSOR:
                a.cursor = optarg;
                break;
            case OPT_OLDEST_FIRST:
                a.oldest_first = true;
                break;
            case 'f':
            case OPT_FOLLOW:
                a.follow = true;
                break;
            default:
                return usage_error("logs", "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) {
        return usage_error("logs", "unexpected argument '%s'", argv[optind]);
    }
    if (a.follow && (a.cursor != NULL || a.oldest_first)) {
        return usage_error("logs",
                           "--follow takes no --cursor or "
                           "--oldest-first");
    }
    struct qraft_client *c = NULL;
    int ex = open_client("logs", g, &c);
    if (ex != EXIT_OK) {
        return ex;
    }
    if (a.follow) {
        ex = logs_follow(c, &a, g->json);
        qraft_client_free(c);
        return ex;
    }
    struct qraft_log_page *p = NULL;
    int rc = qraft_logs(c, &a.f, a.n_states > 0 ? a.states : NULL, a.n_states,
                        a.cursor, a.limit, a.oldest_first, &p);
    if (rc != 0) {
        ex = report("logs", c, rc);
    } else if (g->json) {
        json_t *o = json_object();
        json_t *arr = json_array();
        for (size_t i = 0; i < p->n_entries; i++) {
            json_array_append_new(arr, log_json(&p->entries[i]));
        }
        json_object_set_new(o, "entries", arr);
        json_object_set_new(o, "cursor", jstr(p->cursor));
        ex = print_json(o);
    } else {
        print_log_header();
        for (size_t i = 0; i < p->n_entries; i++) {
            print_log_line(&p->entries[i], false);
        }
        if (p->cursor[0] != '\0') {
            fprintf(stderr, "qraft: logs: more: add --cursor %s\n", p->cursor);
        }
    }
    qraft_log_page_free(p);
    qraft_client_free(c);
    return ex;
}

/* ----------------------------------------------------------------------
 * cancel */

/* Cancels every match, 1000 at a time. Stops at a batch with a failure:
 * its items would match again. */
static int cancel_matching(struct qraft_client *c,
                           const struct qraft_filter *f,
                           bool json)
{
    struct bulk_out o;
    bulk_out_init(&o, "cancel", json);
    int ex = EXIT_OK;
    for (;;) {
        struct qraft_bulk *b = NULL;
        int rc = qraft_cancel_matching(c, f, 0, &b);
        if (rc != 0) {
            ex = report("cancel", c, rc);
            break;
        }
        for (size_t i = 0; i < b->n; i++) {
            bulk_out_item(&o, b->ids[i], &b->results[i]);
        }
        bulk_out_progress(&o, "cancelled", 0);
        bool more = b->n > 0 && o.n_failed == 0;
        qraft_bulk_free(b);
        if (!more) {
            break;
        }
    }
    int end = bulk_out_end(&o, "cancelled", "message");
    return ex != EXIT_OK ? ex : end;
}

int cmd_cancel(int argc, char **argv, struct globals *g)
{
    static const struct option opts[] = {
        GLOBAL_LONG_OPTIONS,
        FILTER_LONG_OPTIONS,
        {"json", no_argument, NULL, OPT_JSON},
        {"yes", no_argument, NULL, OPT_YES},
        {"dry-run", no_argument, NULL, OPT_DRY_RUN},
        {NULL, 0, NULL, 0},
    };
    struct qraft_filter f;
    memset(&f, 0, sizeof f);
    bool filtered = false;
    bool yes = false;
    bool dry_run = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "y", opts, NULL)) != -1) {
        if (global_option(opt, g)) {
            continue;
        }
        int ex = filter_option("cancel", opt, argv, &f);
        if (ex != -1) {
            if (ex != EXIT_OK) {
                return ex;
            }
            filtered = true;
            continue;
        }
        switch (opt) {
            case OPT_HELP:
                fputs(usage_cancel, stdout);
                return EXIT_OK;
            case 'y':
            case OPT_YES:
                yes = true;
                break;
            case OPT_DRY_RUN:
                dry_run = true;
                break;
            default:
                return usage_error("cancel", "bad option '%s'",
                                   argv[optind - 1]);
        }
    }
    int n_args = argc - optind;
    if (filtered ? n_args != 0 : n_args != 1) {
        return usage_error("cancel", filtered ? "give a message id or filters, "
                                                "not both"
                                              : "expected one message id or "
                                                "filters");
    }
    if (dry_run && !filtered) {
        return usage_error("cancel",
                           "--dry-run counts what filters take; with an id "
                           "there is nothing to count");
    }
    struct qraft_client *c = NULL;
    int ex = open_client("cancel", g, &c);
    if (ex != EXIT_OK) {
        return ex;
    }
    /* Counted for --dry-run, and for the question on a terminal (an older
     * node cannot count: the question then says what, not how many). */
    char what[96] =
        "cancel every message not yet delivered that matches the filters";
    uint64_t n = 0;
    int rc = 0;
    if (dry_run || (filtered && !yes && isatty(STDIN_FILENO))) {
        rc = qraft_cancel_count(c, &f, &n);
        if (rc == 0) {
            snprintf(what, sizeof what,
                     "cancel %" PRIu64 " message%s (those that match now)", n,
                     n == 1 ? "" : "s");
        }
    }
    if (dry_run) {
        ex = rc != 0 ? report("cancel", c, rc)
                     : print_dry_run("cancel", n, what, g->json);
    } else if (filtered && !confirm("cancel", what, yes, &ex)) {
        /* confirm said why */
    } else if (filtered) {
        ex = cancel_matching(c, &f, g->json);
    } else {
        rc = qraft_cancel(c, argv[optind]);
        if (rc != 0) {
            ex = report("cancel", c, rc);
        } else if (g->json) {
            json_t *o = json_object();
            json_object_set_new(o, "id", jstr(argv[optind]));
            json_object_set_new(o, "done", json_string("cancelled"));
            ex = print_json(o);
        }
    }
    qraft_client_free(c);
    return ex;
}
