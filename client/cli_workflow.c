/* qraft workflow ls|get|cancel|dlq: Upstash Workflow runs (cli.h). ls and
 * get read the run log (each run's steps with the state of the message
 * that delivers it); cancel ends running runs; dlq resume|restart takes a
 * failed run's dead letter. Cancelling more than one run asks first on a
 * terminal, as every bulk command does. */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage_workflow[] =
    "usage: qraft workflow ls [--run ID] [--url URL] [--state S]\n"
    "                         [--message ID] [--label L] [--since TIME]\n"
    "                         [--until TIME] [--limit N] [--cursor C] "
    "[--json]\n"
    "       qraft workflow get RUN_ID [--json]\n"
    "       qraft workflow cancel RUN_ID... [--yes] [--json]\n"
    "       qraft workflow dlq resume|restart MESSAGE_ID... [--json]\n"
    "\n"
    "Workflow runs (Upstash Workflow on qraft). ls lists runs by id with\n"
    "their state (running, success, failed, canceled), creation time and\n"
    "number of steps; get shows one run's steps, each with the state of\n"
    "the message that delivers it. cancel ends running runs. A failed run\n"
    "leaves its last message in the DLQ: dlq resume delivers that step\n"
    "again, dlq restart starts the run over from its initial payload.\n"
    "TIME is unix seconds or a duration ago (90s, 1h, 2d).\n"
    "\n"
    "example:\n"
    "  qraft workflow ls --state failed --since 1d\n"
    "  qraft workflow get wfr_checkout_42\n"
    "  qraft workflow dlq resume msg_01a20717539c00037e994b6a\n";

static json_t *run_json(const struct qraft_workflow_run *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", jstr(r->id));
    json_object_set_new(o, "url", jstr(r->url));
    json_object_set_new(o, "state", jstr(r->state));
    json_object_set_new(o, "created_ms",
                        json_integer((json_int_t)r->created_ms));
    json_object_set_new(o, "ended_ms", json_integer((json_int_t)r->ended_ms));
    json_object_set_new(o, "failed_message_id", jstr(r->failed_message_id));
    json_t *steps = json_array();
    for (size_t i = 0; i < r->n_steps; i++) {
        const struct qraft_workflow_step *s = &r->steps[i];
        json_t *so = json_object();
        json_object_set_new(so, "seq", json_integer(s->seq));
        json_object_set_new(so, "call_type", jstr(s->call_type));
        json_object_set_new(so, "step_id", json_integer(s->step_id));
        json_object_set_new(so, "message_id", jstr(s->message_id));
        json_object_set_new(so, "state",
                            s->state == QRAFT_STATE_UNSPECIFIED
                                ? json_null()
                                : json_string(qraft_state_name(s->state)));
        json_object_set_new(so, "created_ms",
                            json_integer((json_int_t)s->created_ms));
        json_array_append_new(steps, so);
    }
    json_object_set_new(o, "steps", steps);
    return o;
}

static void print_run(const struct qraft_workflow_run *r)
{
    char t[64];
    print_field("run:", r->id);
    print_field("state:", r->state);
    print_field("url:", r->url);
    print_field("created:", iso_time(r->created_ms, t, sizeof t));
    print_field("ended:", iso_time(r->ended_ms, t, sizeof t));
    if (r->failed_message_id[0] != '\0') {
        print_field("failed at:", r->failed_message_id);
    }
    printf("steps:\n  %-4s %-10s %-6s %-30s %-13s %s\n", "SEQ", "TYPE", "STEP",
           "MESSAGE", "STATE", "CREATED (UTC)");
    for (size_t i = 0; i < r->n_steps; i++) {
        const struct qraft_workflow_step *s = &r->steps[i];
        printf("  %-4" PRIu32 " %-10s %-6" PRIu32 " %-30s %-13s %s\n", s->seq,
               s->call_type[0] != '\0' ? s->call_type : "initial", s->step_id,
               s->message_id,
               s->state == QRAFT_STATE_UNSPECIFIED ? "(pruned)"
                                                   : qraft_state_name(s->state),
               iso_time(s->created_ms, t, sizeof t));
    }
}

static void print_runs(const struct qraft_workflow_page *p)
{
    char t[64];
    printf("%-32s %-9s %-24s %-5s %s\n", "RUN", "STATE", "CREATED (UTC)",
           "STEPS", "URL");
    for (size_t i = 0; i < p->n_runs; i++) {
        const struct qraft_workflow_run *r = &p->runs[i];
        printf("%-32s %-9s %-24s %-5zu %s\n", r->id, r->state,
               iso_time(r->created_ms, t, sizeof t), r->n_steps, r->url);
    }
}

struct run_args {
    struct qraft_workflow_filter f;
    const char *cursor;
    uint32_t limit;
    bool yes;
};

static int workflow_options(const char *cmd,
                            bool ls,
                            int argc,
                            char **argv,
                            struct globals *g,
                            struct run_args *a)
{
    static const struct option opts[] = {
        GLOBAL_LONG_OPTIONS,
        {"json", no_argument, NULL, OPT_JSON},
        {"run", required_argument, NULL, OPT_RUN},
        {"url", required_argument, NULL, OPT_URL},
        {"state", required_argument, NULL, OPT_STATE},
        {"message", required_argument, NULL, OPT_ID},
        {"label", required_argument, NULL, OPT_LABEL},
        {"since", required_argument, NULL, OPT_SINCE},
        {"until", required_argument, NULL, OPT_UNTIL},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {"cursor", required_argument, NULL, OPT_CURSOR},
        {"yes", no_argument, NULL, OPT_YES},
        {NULL, 0, NULL, 0},
    };
    int opt;
    uint64_t v;
    while ((opt = getopt_long(argc, argv, "y", opts, NULL)) != -1) {
        if (opt == OPT_HELP) {
            fputs(usage_workflow, stdout);
            return EXIT_OK;
        }
        if (global_option(opt, g)) {
            continue;
        }
        if (opt == OPT_YES || opt == 'y') {
            a->yes = true;
            continue;
        }
        if (!ls || opt == '?') {
            return usage_error(cmd, "bad option '%s'", argv[optind - 1]);
        }
        switch (opt) {
            case OPT_RUN:
                a->f.run_id = optarg;
                break;
            case OPT_URL:
                a->f.url = optarg;
                break;
            case OPT_STATE:
                if (qraft_workflow_state_check(optarg) != 0) {
                    return usage_error(cmd,
                                       "--state '%s': expected running, "
                                       "success, failed or canceled",
                                       optarg);
                }
                a->f.state = optarg;
                break;
            case OPT_ID:
                a->f.message_id = optarg;
                break;
            case OPT_LABEL:
                a->f.label = optarg;
                break;
            case OPT_SINCE:
            case OPT_UNTIL: {
                int ex =
                    time_option(cmd, opt, argv, &a->f.from_ms, &a->f.to_ms);
                if (ex != EXIT_OK) {
                    return ex;
                }
                break;
            }
            case OPT_LIMIT:
                if (parse_u64(optarg, 100, &v) != 0 || v == 0) {
                    return usage_error(cmd, "--limit '%s': expected 1 to 100",
                                       optarg);
                }
                a->limit = (uint32_t)v;
                break;
            case OPT_CURSOR:
                a->cursor = optarg;
                break;
            default:
                return usage_error(cmd, "bad option '%s'", argv[optind - 1]);
        }
    }
    return -1;
}

/* ls, or get (one run by id, exit 3 when unknown). */
static int workflow_read(struct qraft_client *c,
                         const char *cmd,
                         const struct run_args *a,
                         bool get,
                         bool json)
{
    struct qraft_workflow_page *p = NULL;
    int rc = qraft_workflow_runs(c, &a->f, a->cursor, get ? 1 : a->limit, &p);
    int ex = EXIT_OK;
    if (rc != 0) {
        ex = report(cmd, c, rc);
    } else if (get && p->n_runs == 0) {
        fprintf(stderr, "qraft: %s: workflow run %s not found\n", cmd,
                a->f.run_id);
        ex = EXIT_NOTFOUND;
    } else if (get) {
        ex = json ? print_json(run_json(&p->runs[0]))
                  : (print_run(&p->runs[0]), EXIT_OK);
    } else if (json) {
        json_t *o = json_object();
        json_t *arr = json_array();
        for (size_t i = 0; i < p->n_runs; i++) {
            json_array_append_new(arr, run_json(&p->runs[i]));
        }
        json_object_set_new(o, "runs", arr);
        json_object_set_new(o, "cursor", jstr(p->cursor));
        ex = print_json(o);
    } else {
        print_runs(p);
        if (p->cursor[0] != '\0') {
            fprintf(stderr, "qraft: %s: more: add --cursor %s\n", cmd,
                    p->cursor);
        }
    }
    qraft_workflow_page_free(p);
    return ex;
}

int cmd_workflow(int argc, char **argv, struct globals *g)
{
    if (argc < 2) {
        return usage_error("workflow", "expected ls, get, cancel or dlq");
    }
    const char *sub = argv[1];
    if (is_help(sub)) {
        fputs(usage_workflow, stdout);
        return EXIT_OK;
    }
    bool ls = strcmp(sub, "ls") == 0 || strcmp(sub, "list") == 0;
    bool get = strcmp(sub, "get") == 0;
    bool cancel = strcmp(sub, "cancel") == 0;
    bool dlq = strcmp(sub, "dlq") == 0;
    if (!ls && !get && !cancel && !dlq) {
        return usage_error("workflow", "unknown subcommand '%s'", sub);
    }
    bool restart = false;
    char cmd[40];
    snprintf(cmd, sizeof cmd, "workflow %s", sub);
    if (dlq) {
        const char *how = argc > 2 ? argv[2] : "";
        if (is_help(how)) {
            fputs(usage_workflow, stdout);
            return EXIT_OK;
        }
        restart = strcmp(how, "restart") == 0;
        if (!restart && strcmp(how, "resume") != 0) {
            return usage_error(cmd, "expected resume or restart, not '%s'",
                               how);
        }
        snprintf(cmd, sizeof cmd, "workflow dlq %s", how);
        argc--;
        argv++;
    }
    struct run_args a;
    memset(&a, 0, sizeof a);
    int ex = workflow_options(cmd, ls, argc - 1, argv + 1, g, &a);
    if (ex != -1) {
        return ex;
    }
    int n_args = argc - 1 - optind;
    char **args = argv + 1 + optind;
    if ((ls && n_args != 0) || (get && n_args != 1) ||
        ((cancel || dlq) && n_args < 1)) {
        return usage_error(cmd, ls    ? "takes no argument (filters are "
                                        "options)"
                                : get ? "expected one run id"
                                : dlq ? "expected dead letters' message ids"
                                      : "expected run ids");
    }
    if (get) {
        a.f.run_id = args[0];
    }
    char what[64];
    snprintf(what, sizeof what, "cancel %d workflow runs", n_args);
    if (cancel && n_args > 1 && !confirm(cmd, what, a.yes, &ex)) {
        return ex;
    }
    struct qraft_client *c = NULL;
    ex = open_client(cmd, g, &c);
    if (ex != EXIT_OK) {
        return ex;
    }
    if (ls || get) {
        ex = workflow_read(c, cmd, &a, get, g->json);
        qraft_client_free(c);
        return ex;
    }
    const char *const *ids = (const char *const *)args;
    struct qraft_bulk *b = NULL;
    int rc = cancel ? qraft_workflow_cancel(c, ids, (size_t)n_args, &b)
                    : qraft_workflow_dlq(c, ids, (size_t)n_args, restart, &b);
    if (rc != 0) {
        ex = report(cmd, c, rc);
    } else {
        struct bulk_out o;
        bulk_out_init(&o, cmd, g->json);
        for (size_t i = 0; i < b->n; i++) {
            bulk_out_item(&o, b->ids[i], &b->results[i]);
        }
        ex = bulk_out_end(&o,
                          cancel    ? "cancelled"
                          : restart ? "restarted"
                                    : "resumed",
                          "workflow run");
    }
    qraft_bulk_free(b);
    qraft_client_free(c);
    return ex;
}
