/* qraft dlq ls|replay|rm: the dead-letter queue (cli.h). ls, replay and rm
 * take one filter (--all, --url PREFIX, --category, --since, --until); a
 * bulk replay or delete asks for confirmation on a terminal (--yes skips
 * it, and is required without one), --dry-run counts instead, and the
 * count is printed when done. A replay by filter takes only letters dead
 * before it started, so a message that fails again is never replayed twice
 * by one command. */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static const char usage_dlq[] =
    "usage: qraft dlq ls [FILTER] [--limit N] [--cursor C] [--json]\n"
    "       qraft dlq replay ID... | FILTER [--yes] [--dry-run] [--json]\n"
    "       qraft dlq rm ID... | FILTER [--yes] [--dry-run] [--json]\n"
    "\n"
    "Lists the dead-letter queue (oldest first: when, the last HTTP status,\n"
    "the reason), requeues dead letters with a fresh attempt budget (the\n"
    "same ids), or deletes them (remove and delete are aliases of rm).\n"
    "FILTER: --all, or any of --url PREFIX (destination prefix), --category\n"
    "C (client_error, non_retryable, budget_exhausted, destination_refused,\n"
    "or a cause: connect, timeout, throttled, server_error), --since TIME,\n"
    "--until TIME (dead-lettered in [since, until); unix seconds or a\n"
    "duration ago: 90s, 1h, 2d). replay and rm print each id done and the\n"
    "count on stderr. By filter or for more than one id they ask first on a\n"
    "terminal; --yes skips that and is required when stdin is not one.\n"
    "--dry-run prints how many dead letters a filter takes and does\n"
    "nothing.\n"
    "\n"
    "example:\n"
    "  qraft dlq ls --category server_error --since 1h\n"
    "  qraft dlq replay --url https://api.example.com/ --since 1d --yes\n"
    "  qraft dlq rm msg_01a20717539c00037e994b6a\n";

/* The error categories and causes a filter may name. */
static const char *const categories[] = {
    "client_error", "non_retryable", "budget_exhausted", "destination_refused",
    "connect",      "timeout",       "throttled",        "server_error",
};

static bool known_category(const char *s)
{
    for (size_t i = 0; i < sizeof categories / sizeof categories[0]; i++) {
        if (strcmp(s, categories[i]) == 0) {
            return true;
        }
    }
    return false;
}

struct dlq_args {
    struct qraft_dlq_filter f;
    bool filtered;
    bool yes;
    bool dry_run;
    const char *cursor;
    uint32_t limit;
};

/* Options of every dlq subcommand; ls takes --limit and --cursor, the
 * others --yes and --dry-run. Returns -1 to go on, else an exit code. */
static int dlq_options(const char *cmd,
                       bool ls,
                       int argc,
                       char **argv,
                       struct globals *g,
                       struct dlq_args *a)
{
    static const struct option opts[] = {
        GLOBAL_LONG_OPTIONS,
        {"json", no_argument, NULL, OPT_JSON},
        {"all", no_argument, NULL, OPT_ALL},
        {"url", required_argument, NULL, OPT_URL_PREFIX},
        {"category", required_argument, NULL, OPT_CATEGORY},
        {"since", required_argument, NULL, OPT_SINCE},
        {"until", required_argument, NULL, OPT_UNTIL},
        {"yes", no_argument, NULL, OPT_YES},
        {"dry-run", no_argument, NULL, OPT_DRY_RUN},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {"cursor", required_argument, NULL, OPT_CURSOR},
        {NULL, 0, NULL, 0},
    };
    int opt;
    uint64_t v;
    while ((opt = getopt_long(argc, argv, "y", opts, NULL)) != -1) {
        if (opt == OPT_HELP) {
            fputs(usage_dlq, stdout);
            return EXIT_OK;
        }
        if (global_option(opt, g)) {
            continue;
        }
        bool ls_only = opt == OPT_LIMIT || opt == OPT_CURSOR;
        bool bulk_only = opt == OPT_YES || opt == 'y' || opt == OPT_DRY_RUN;
        if (opt == '?' || (ls && bulk_only) || (!ls && ls_only)) {
            return usage_error(cmd, "bad option '%s'", argv[optind - 1]);
        }
        switch (opt) {
            case OPT_ALL:
                a->f.all = true;
                break;
            case OPT_URL_PREFIX:
                a->f.url_prefix = optarg;
                break;
            case OPT_CATEGORY:
                if (!known_category(optarg)) {
                    return usage_error(cmd,
                                       "--category '%s': expected "
                                       "client_error, non_retryable, "
                                       "budget_exhausted, destination_refused, "
                                       "connect, timeout, throttled or "
                                       "server_error",
                                       optarg);
                }
                a->f.category = optarg;
                break;
            case OPT_SINCE:
            case OPT_UNTIL: {
                int ex =
                    time_option(cmd, opt, argv, &a->f.since_ms, &a->f.until_ms);
                if (ex != EXIT_OK) {
                    return ex;
                }
                break;
            }
            case OPT_YES:
            case 'y':
                a->yes = true;
                continue;
            case OPT_DRY_RUN:
                a->dry_run = true;
                continue;
            case OPT_LIMIT:
                if (parse_u64(optarg, UINT32_MAX, &v) != 0 || v == 0) {
                    return usage_error(cmd, "--limit '%s': expected a count",
                                       optarg);
                }
                a->limit = (uint32_t)v;
                continue;
            case OPT_CURSOR:
                a->cursor = optarg;
                continue;
            default:
                return usage_error(cmd, "bad option '%s'", argv[optind - 1]);
        }
        a->filtered = true;
    }
    return -1;
}

static int dlq_ls(int argc, char **argv, struct globals *g)
{
    struct dlq_args a;
    memset(&a, 0, sizeof a);
    int ex = dlq_options("dlq ls", true, argc, argv, g, &a);
    if (ex != -1) {
        return ex;
    }
    if (optind != argc) {
        return usage_error("dlq ls", "unexpected argument '%s'", argv[optind]);
    }
    struct qraft_client *c = NULL;
    ex = open_client("dlq ls", g, &c);
    if (ex != EXIT_OK) {
        return ex;
    }
    struct qraft_message_list *l = NULL;
    int rc = qraft_dlq_list_matching(c, a.filtered ? &a.f : NULL, a.cursor,
                                     a.limit, &l);
    ex = rc != 0 ? report("dlq ls", c, rc) : print_list(l, "dlq ls", g->json);
    qraft_message_list_free(l);
    qraft_client_free(c);
    return ex;
}

/* How many dead letters f takes now (pages through the list). */
static int dlq_count(struct qraft_client *c,
                     const struct qraft_dlq_filter *f,
                     size_t *n)
{
    *n = 0;
    char *cursor = NULL;
    for (;;) {
        struct qraft_message_list *l = NULL;
        int rc = qraft_dlq_list_matching(c, f, cursor, 1000, &l);
        free(cursor);
        cursor = NULL;
        if (rc != 0) {
            return rc;
        }
        *n += l->n_messages;
        bool more = l->cursor[0] != '\0';
        cursor = more ? strdup(l->cursor) : NULL;
        qraft_message_list_free(l);
        if (!more || cursor == NULL) {
            return 0;
        }
    }
}

/* dlq replay / rm with a filter: batches until nothing more matches or a
 * batch has a failure (its items would match again). total: how many
 * matched when counted (0: not counted), for the progress line. */
static int dlq_matching(struct qraft_client *c,
                        const struct qraft_dlq_filter *f,
                        bool replay,
                        size_t total,
                        struct bulk_out *o)
{
    /* Only letters that were in the DLQ when we started: a replayed message
     * that fails again re-enters it and must not be replayed twice. */
    struct qraft_dlq_filter bounded = *f;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t start_ms =
        (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 + 1;
    if (bounded.until_ms == 0 || bounded.until_ms > start_ms) {
        bounded.until_ms = start_ms;
    }
    for (;;) {
        struct qraft_bulk *b = NULL;
        int rc = replay ? qraft_dlq_replay_matching(c, &bounded, &b)
                        : qraft_dlq_delete_matching(c, &bounded, &b);
        if (rc != 0) {
            return report(o->cmd, c, rc);
        }
        size_t failed_before = o->n_failed;
        for (size_t i = 0; i < b->n; i++) {
            bulk_out_item(o, b->ids[i], &b->results[i]);
        }
        bulk_out_progress(o, replay ? "replayed" : "deleted", total);
        bool more = b->n > 0 && o->n_failed == failed_before;
        qraft_bulk_free(b);
        if (!more) {
            return EXIT_OK;
        }
    }
}

static int dlq_ids(struct qraft_client *c,
                   const char *const *ids,
                   size_t n,
                   bool replay,
                   struct bulk_out *o)
{
    struct qraft_item_result *results = calloc(n, sizeof *results);
    if (results == NULL) {
        fprintf(stderr, "qraft: %s: out of memory\n", o->cmd);
        return EXIT_ERROR;
    }
    int rc = replay ? qraft_dlq_replay(c, ids, n, results)
                    : qraft_dlq_delete(c, ids, n, results);
    int ex = EXIT_OK;
    if (rc != 0) {
        ex = report(o->cmd, c, rc);
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        bulk_out_item(o, ids[i], &results[i]);
    }
    free(results);
    return ex;
}

/* dlq replay / dlq rm, by ids or by filter. */
static int dlq_bulk(int argc, char **argv, struct globals *g, bool replay)
{
    const char *cmd = replay ? "dlq replay" : "dlq rm";
    struct dlq_args a;
    memset(&a, 0, sizeof a);
    int ex = dlq_options(cmd, false, argc, argv, g, &a);
    if (ex != -1) {
        return ex;
    }
    size_t n = (size_t)(argc - optind);
    if (a.filtered && n > 0) {
        return usage_error(cmd, "give message ids or a filter, not both");
    }
    if (!a.filtered && n == 0) {
        return usage_error(cmd,
                           "expected message ids or a filter (--all, "
                           "--url, --category, --since, --until)");
    }
    if (a.dry_run && !a.filtered) {
        return usage_error(cmd,
                           "--dry-run counts what a filter takes; "
                           "with ids there is nothing to count");
    }
    struct qraft_client *c = NULL;
    ex = open_client(cmd, g, &c);
    if (ex != EXIT_OK) {
        return ex;
    }
    const char *verb = replay ? "replayed" : "deleted";
    size_t count = n;
    int rc = 0;
    if (a.filtered && (a.dry_run || !a.yes)) {
        rc = dlq_count(c, &a.f, &count);
    }
    char what[128];
    snprintf(what, sizeof what, "%s %zu dead letter%s%s",
             replay ? "replay" : "delete", count, count == 1 ? "" : "s",
             a.filtered ? " (those that match now)" : "");
    if (rc != 0) {
        ex = report(cmd, c, rc);
    } else if (a.dry_run) {
        ex = print_dry_run(cmd, count, what, g->json);
    } else if ((a.filtered || n > 1) && !confirm(cmd, what, a.yes, &ex)) {
        /* confirm said why */
    } else {
        struct bulk_out o;
        bulk_out_init(&o, cmd, g->json);
        ex = a.filtered ? dlq_matching(c, &a.f, replay, a.yes ? 0 : count, &o)
                        : dlq_ids(c, (const char *const *)(argv + optind), n,
                                  replay, &o);
        int end = bulk_out_end(&o, verb, "dead letter");
        ex = ex != EXIT_OK ? ex : end;
    }
    qraft_client_free(c);
    return ex;
}

int cmd_dlq(int argc, char **argv, struct globals *g)
{
    if (argc < 2) {
        return usage_error("dlq", "expected ls, replay or rm");
    }
    const char *sub = argv[1];
    if (is_help(sub)) {
        fputs(usage_dlq, stdout);
        return EXIT_OK;
    }
    if (strcmp(sub, "ls") == 0 || strcmp(sub, "list") == 0) {
        return dlq_ls(argc - 1, argv + 1, g);
    }
    if (strcmp(sub, "replay") == 0) {
        return dlq_bulk(argc - 1, argv + 1, g, true);
    }
    if (strcmp(sub, "rm") == 0 || strcmp(sub, "remove") == 0 ||
        strcmp(sub, "delete") == 0) {
        return dlq_bulk(argc - 1, argv + 1, g, false);
    }
    return usage_error("dlq", "unknown subcommand '%s'", sub);
}
