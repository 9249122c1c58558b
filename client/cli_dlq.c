/* qraft dlq ls|replay|rm: the dead-letter queue (cli.h). A replay by
 * filter takes only letters dead before it started, so a message that
 * fails again is never replayed twice by one command. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static const char usage_dlq[] =
    "usage: qraft dlq ls [--limit N] [--cursor C] [--json]\n"
    "       qraft dlq replay ID...\n"
    "       qraft dlq replay --all | [--url PREFIX] [--category C]\n"
    "                        [--since UNIX_S] [--until UNIX_S]\n"
    "       qraft dlq rm ID...\n"
    "\n"
    "Lists the dead-letter queue (oldest first), requeues dead letters\n"
    "with a fresh attempt budget (the same ids), or deletes them.\n"
    "With a filter, replay takes every dead letter that matches all given\n"
    "fields (destination prefix, error category such as server_error or\n"
    "client_error, dead-lettered in [since, until)) and prints each id\n"
    "it replayed.\n";

static int dlq_ls(int argc, char **argv, struct globals *g)
{
    enum qraft_state state = QRAFT_STATE_UNSPECIFIED;
    const char *cursor = NULL;
    uint32_t limit = 0;
    int ex = list_options("dlq ls", usage_dlq, false, argc, argv, g, &state,
                          &cursor, &limit);
    if (ex != -1) {
        return ex;
    }
    struct qraft_client *c = NULL;
    ex = open_client("dlq ls", g, &c);
    if (ex != EXIT_OK) {
        return ex;
    }
    struct qraft_message_list *l = NULL;
    int rc = qraft_dlq_list(c, cursor, limit, &l);
    ex = rc != 0 ? report("dlq ls", c, rc) : print_list(l, "dlq ls", g->json);
    qraft_message_list_free(l);
    qraft_client_free(c);
    return ex;
}

/* dlq replay with a filter: batches until nothing more matches; each id
 * replayed on stdout, each failure on stderr. */
static int dlq_replay_matching(struct globals *g,
                               const struct qraft_dlq_filter *f)
{
    const char *cmd = "dlq replay";
    struct qraft_client *c = NULL;
    int ex = open_client(cmd, g, &c);
    if (ex != EXIT_OK) {
        return ex;
    }
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
        int rc = qraft_dlq_replay_matching(c, &bounded, &b);
        if (rc != 0) {
            ex = report(cmd, c, rc);
            break;
        }
        bool failed = false;
        for (size_t i = 0; i < b->n; i++) {
            if (b->results[i].rc == 0) {
                printf("%s\n", b->ids[i]);
            } else {
                fprintf(stderr, "qraft: %s: %s: %s\n", cmd, b->ids[i],
                        b->results[i].error);
                failed = true;
                if (ex == EXIT_OK) {
                    ex = exit_for(b->results[i].rc);
                }
            }
        }
        /* A failed item stays in the DLQ and would match again: stop. */
        bool more = b->n > 0 && !failed;
        qraft_bulk_free(b);
        if (!more) {
            break;
        }
    }
    qraft_client_free(c);
    return ex;
}

/* Options of dlq replay / rm; a filter only for replay. Returns -1 to go
 * on, else the exit code. */
static int dlq_bulk_options(const char *cmd,
                            bool replay,
                            int argc,
                            char **argv,
                            struct globals *g,
                            struct qraft_dlq_filter *f,
                            bool *filtered)
{
    static const struct option opts[] = {
        GLOBAL_LONG_OPTIONS,
        {"json", no_argument, NULL, OPT_JSON},
        {"all", no_argument, NULL, OPT_ALL},
        {"url", required_argument, NULL, OPT_URL_PREFIX},
        {"category", required_argument, NULL, OPT_CATEGORY},
        {"since", required_argument, NULL, OPT_SINCE},
        {"until", required_argument, NULL, OPT_UNTIL},
        {NULL, 0, NULL, 0},
    };
    int opt;
    uint64_t v;
    *filtered = false;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == OPT_HELP) {
            fputs(usage_dlq, stdout);
            return EXIT_OK;
        }
        if (global_option(opt, g)) {
            continue;
        }
        if (!replay || opt == OPT_JSON || opt == '?') {
            return usage_error(cmd, "bad option '%s'", argv[optind - 1]);
        }
        *filtered = true;
        switch (opt) {
            case OPT_ALL:
                f->all = true;
                break;
            case OPT_URL_PREFIX:
                f->url_prefix = optarg;
                break;
            case OPT_CATEGORY:
                f->category = optarg;
                break;
            case OPT_SINCE:
            case OPT_UNTIL:
                if (parse_u64(optarg, UINT64_MAX / 1000, &v) != 0) {
                    return usage_error(cmd, "%s '%s': expected unix seconds",
                                       argv[optind - 2], optarg);
                }
                if (opt == OPT_SINCE) {
                    f->since_ms = v * 1000;
                } else {
                    f->until_ms = v * 1000;
                }
                break;
            default:
                return usage_error(cmd, "bad option '%s'", argv[optind - 1]);
        }
    }
    return -1;
}

/* dlq replay / dlq rm: one line on stderr per failed id; the exit code is
 * that of the first failure. */
static int dlq_bulk(int argc, char **argv, struct globals *g, bool replay)
{
    const char *cmd = replay ? "dlq replay" : "dlq rm";
    struct qraft_dlq_filter filter;
    bool filtered;
    memset(&filter, 0, sizeof filter);
    int ex = dlq_bulk_options(cmd, replay, argc, argv, g, &filter, &filtered);
    if (ex != -1) {
        return ex;
    }
    size_t n = (size_t)(argc - optind);
    if (filtered) {
        if (n > 0) {
            return usage_error(cmd, "give message ids or a filter, not both");
        }
        return dlq_replay_matching(g, &filter);
    }
    if (n == 0) {
        return usage_error(cmd, "expected one or more message ids");
    }
    const char *const *ids = (const char *const *)(argv + optind);
    struct qraft_item_result *results = calloc(n, sizeof *results);
    if (results == NULL) {
        fprintf(stderr, "qraft: %s: out of memory\n", cmd);
        return EXIT_ERROR;
    }
    struct qraft_client *c = NULL;
    ex = open_client(cmd, g, &c);
    if (ex != EXIT_OK) {
        free(results);
        return ex;
    }
    int rc = replay ? qraft_dlq_replay(c, ids, n, results)
                    : qraft_dlq_delete(c, ids, n, results);
    if (rc != 0) {
        ex = report(cmd, c, rc);
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (results[i].rc != 0) {
            fprintf(stderr, "qraft: %s: %s: %s\n", cmd, ids[i],
                    results[i].error);
            if (ex == EXIT_OK) {
                ex = exit_for(results[i].rc);
            }
        }
    }
    qraft_client_free(c);
    free(results);
    return ex;
}

int cmd_dlq(int argc, char **argv, struct globals *g)
{
    if (argc < 2) {
        return usage_error("dlq", "expected ls, replay or rm");
    }
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        fputs(usage_dlq, stdout);
        return EXIT_OK;
    }
    if (strcmp(sub, "ls") == 0) {
        return dlq_ls(argc - 1, argv + 1, g);
    }
    if (strcmp(sub, "replay") == 0) {
        return dlq_bulk(argc - 1, argv + 1, g, true);
    }
    if (strcmp(sub, "rm") == 0) {
        return dlq_bulk(argc - 1, argv + 1, g, false);
    }
    return usage_error("dlq", "unknown subcommand '%s'", sub);
}
