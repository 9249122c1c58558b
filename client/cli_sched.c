/* qraft queue ..., qraft schedule ... and qraft flow ...: the delivery
 * controls. Queues (parallelism, pause, lag) and cron schedules each have
 * ls, get, a write (queue set, schedule create), rm (remove and delete
 * accepted), pause and resume; flow control keys have ls, get, pause,
 * resume, pin, unpin and reset (cli.h). Every subcommand takes --json; a
 * write then prints what it did as JSON. */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage_queue[] =
    "usage: qraft queue ls [--json]\n"
    "       qraft queue get NAME [--json]\n"
    "       qraft queue set NAME [--parallelism N] [--paused] [--json]\n"
    "       qraft queue pause|resume NAME [--json]\n"
    "       qraft queue rm NAME [--json]\n"
    "\n"
    "Queues deliver their messages in order, at most PARALLELISM at a\n"
    "time (publish with --queue NAME). set creates a queue or changes it\n"
    "(parallelism 1 and running unless given). A paused queue holds its\n"
    "messages back. rm (or remove, delete) deletes the queue and cancels\n"
    "the messages still waiting in it. WAITING is the queue's lag: its\n"
    "messages not yet started.\n"
    "\n"
    "example:\n"
    "  qraft queue set orders --parallelism 2\n"
    "  qraft publish https://example.com/hook --queue orders --body hi\n"
    "  qraft queue ls\n";

static const char usage_schedule[] =
    "usage: qraft schedule ls [--json]\n"
    "       qraft schedule get ID [--json]\n"
    "       qraft schedule create URL --cron EXPR [--id ID] [PUBLISH OPTIONS]\n"
    "                             [--json]\n"
    "       qraft schedule pause|resume ID [--json]\n"
    "       qraft schedule rm ID [--json]\n"
    "\n"
    "Schedules publish a message to URL on every tick of a cron expression\n"
    "(5 fields, minute hour day month weekday, in UTC unless it starts with\n"
    "CRON_TZ=Zone). create prints the schedule's id (--id replaces the\n"
    "schedule of that id); it takes the options of `qraft publish` (body,\n"
    "headers, retries, queue, ...) for the messages. A paused schedule\n"
    "skips its ticks. rm (or remove, delete) deletes it; messages it\n"
    "already published stay.\n"
    "\n"
    "example:\n"
    "  qraft schedule create https://example.com/report --cron '0 6 * * *' "
    "\\\n"
    "      --body '{\"kind\":\"daily\"}'\n"
    "  qraft schedule pause scd_...\n";

static const char usage_flow[] =
    "usage: qraft flow ls [--json]\n"
    "       qraft flow get KEY [--json]\n"
    "       qraft flow pause|resume|reset KEY [--json]\n"
    "       qraft flow pin KEY [--parallelism N] [--rate N [--period DUR]]\n"
    "                      [--json]\n"
    "       qraft flow unpin KEY [--parallelism] [--rate] [--json]\n"
    "\n"
    "Flow control keys (publish with Upstash-Flow-Control-Key) limit how\n"
    "many of their messages are sent at once and how many start per\n"
    "period. ls and get show the limits, what is in flight and the\n"
    "waitlist (the counts are those of the node that owns the key: another\n"
    "node shows '?'). pause holds the key's messages (not dead-lettered;\n"
    "their retry budget waits too); pin fixes the limits over what\n"
    "publishes say, unpin lets them set it again; reset starts a new rate\n"
    "period. Writes need the admin scope.\n"
    "\n"
    "example:\n"
    "  qraft flow pause openai\n"
    "  qraft flow pin openai --parallelism 1 --rate 10 --period 1m\n"
    "  qraft flow ls\n";

/* The subcommand verbs of queue, schedule and flow. */
enum verb { V_LS, V_GET, V_SET, V_RM, V_PAUSE, V_RESUME, V_UNPIN, V_RESET };

/* Parses a verb; "rm", "remove" and "delete" are one. -1: unknown. */
static int parse_verb(const char *s, const char *write_verb)
{
    static const struct {
        const char *name;
        enum verb verb;
    } verbs[] = {
        {"ls", V_LS},       {"list", V_LS},       {"get", V_GET},
        {"rm", V_RM},       {"remove", V_RM},     {"delete", V_RM},
        {"pause", V_PAUSE}, {"resume", V_RESUME},
    };
    if (strcmp(s, write_verb) == 0) {
        return V_SET;
    }
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        if (strcmp(s, verbs[i].name) == 0) {
            return (int)verbs[i].verb;
        }
    }
    return -1;
}

/* "queue orders paused" and the like: one line, or {"name":..,"done":..}
 * with --json. */
static int print_done(const struct globals *g,
                      const char *what,
                      const char *name,
                      const char *done)
{
    if (g->json) {
        json_t *o = json_object();
        json_object_set_new(o, what, jstr(name));
        json_object_set_new(o, "done", json_string(done));
        return print_json(o);
    }
    printf("%s %s %s\n", what, name, done);
    return EXIT_OK;
}

static const char *verb_done(enum verb v)
{
    static const char *const done[] = {
        [V_SET] = "pinned",     [V_RM] = "deleted",     [V_PAUSE] = "paused",
        [V_RESUME] = "resumed", [V_UNPIN] = "unpinned", [V_RESET] = "reset",
    };
    return done[v] != NULL ? done[v] : "done";
}

/* ----------------------------------------------------------------------
 * Queues */

static json_t *queue_json(const struct qraft_queue *q)
{
    json_t *o = json_object();
    json_object_set_new(o, "name", jstr(q->name));
    json_object_set_new(o, "parallelism", json_integer(q->parallelism));
    json_object_set_new(o, "paused", json_boolean(q->paused));
    json_object_set_new(o, "active", json_integer(q->active));
    json_object_set_new(o, "lag", json_integer((json_int_t)q->waiting));
    json_object_set_new(o, "created_ms",
                        json_integer((json_int_t)q->created_ms));
    json_object_set_new(o, "updated_ms",
                        json_integer((json_int_t)q->updated_ms));
    return o;
}

static void print_queues(const struct qraft_queue *qs, size_t n, bool one)
{
    char t[64];
    if (one) {
        char buf[64];
        print_field("name:", qs->name);
        snprintf(buf, sizeof buf, "%" PRIu32 " at a time", qs->parallelism);
        print_field("parallelism:", buf);
        print_field("paused:", qs->paused ? "yes" : "no");
        snprintf(buf, sizeof buf, "%" PRIu32 " messages", qs->active);
        print_field("active:", buf);
        snprintf(buf, sizeof buf, "%" PRIu64 " messages", qs->waiting);
        print_field("waiting (lag):", buf);
        print_field("created:", iso_time(qs->created_ms, t, sizeof t));
        print_field("updated:", iso_time(qs->updated_ms, t, sizeof t));
        return;
    }
    printf("%-24s %-11s %-6s %-8s %s\n", "NAME", "PARALLELISM", "PAUSED",
           "ACTIVE", "WAITING");
    for (size_t i = 0; i < n; i++) {
        printf("%-24s %-11" PRIu32 " %-6s %-8" PRIu32 " %" PRIu64 "\n",
               qs[i].name, qs[i].parallelism, qs[i].paused ? "yes" : "no",
               qs[i].active, qs[i].waiting);
    }
}

/* Options of a queue or schedule subcommand; `extra` adds the write's.
 * Returns -1 to go on, else an exit code. */
static int sub_options(
    const char *cmd,
    const char *usage,
    const struct option *opts,
    int argc,
    char **argv,
    struct globals *g,
    int (*on_opt)(const char *cmd, int opt, char **argv, void *arg),
    void *arg)
{
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == OPT_HELP) {
            fputs(usage, stdout);
            return EXIT_OK;
        }
        if (global_option(opt, g)) {
            continue;
        }
        int ex = on_opt != NULL ? on_opt(cmd, opt, argv, arg) : -1;
        if (ex == -1) {
            return usage_error(cmd, "bad option '%s'", argv[optind - 1]);
        }
        if (ex != EXIT_OK) {
            return ex;
        }
    }
    return -1;
}

struct queue_set_args {
    uint32_t parallelism;
    bool paused;
};

static int queue_set_option(const char *cmd, int opt, char **argv, void *arg)
{
    (void)argv;
    struct queue_set_args *a = arg;
    uint64_t v;
    if (opt == OPT_PAUSED) {
        a->paused = true;
        return EXIT_OK;
    }
    if (opt != OPT_PARALLELISM) {
        return -1;
    }
    if (parse_u64(optarg, UINT32_MAX, &v) != 0 || v == 0) {
        return usage_error(cmd,
                           "--parallelism '%s': expected a count of 1 "
                           "or more",
                           optarg);
    }
    a->parallelism = (uint32_t)v;
    return EXIT_OK;
}

int cmd_queue(int argc, char **argv, struct globals *g)
{
    if (argc < 2) {
        return usage_error("queue",
                           "expected ls, get, set, pause, resume "
                           "or rm");
    }
    const char *sub = argv[1];
    if (is_help(sub)) {
        fputs(usage_queue, stdout);
        return EXIT_OK;
    }
    int verb = parse_verb(sub, "set");
    if (verb < 0) {
        return usage_error("queue", "unknown subcommand '%s'", sub);
    }
    char cmd[32];
    snprintf(cmd, sizeof cmd, "queue %s", sub);
    static const struct option opts[] = {
        GLOBAL_LONG_OPTIONS,
        {"json", no_argument, NULL, OPT_JSON},
        {"parallelism", required_argument, NULL, OPT_PARALLELISM},
        {"paused", no_argument, NULL, OPT_PAUSED},
        {NULL, 0, NULL, 0},
    };
    struct queue_set_args set = {0};
    int ex = sub_options(cmd, usage_queue, opts, argc - 1, argv + 1, g,
                         verb == V_SET ? queue_set_option : NULL, &set);
    if (ex != -1) {
        return ex;
    }
    int n_args = argc - 1 - optind;
    const char *name = argv[1 + optind];
    if (verb == V_LS ? n_args != 0 : n_args != 1) {
        return usage_error(cmd, verb == V_LS ? "takes no argument"
                                             : "expected one queue name");
    }
    struct qraft_client *c = NULL;
    ex = open_client(cmd, g, &c);
    if (ex != EXIT_OK) {
        return ex;
    }
    struct qraft_queue *qs = NULL;
    size_t n = 0;
    int rc;
    switch ((enum verb)verb) {
        case V_LS:
            rc = qraft_queue_list(c, &qs, &n);
            break;
        case V_GET:
            rc = qraft_queue_get(c, name, &qs);
            n = rc == 0 ? 1 : 0;
            break;
        case V_SET:
            rc = qraft_queue_upsert(c, name, set.parallelism, set.paused, &qs);
            n = rc == 0 ? 1 : 0;
            break;
        case V_RM:
            rc = qraft_queue_delete(c, name);
            break;
        default:
            rc = qraft_queue_pause(c, name, verb == V_PAUSE);
            break;
    }
    if (rc != 0) {
        ex = report(cmd, c, rc);
    } else if (verb == V_RM || verb == V_PAUSE || verb == V_RESUME) {
        ex = print_done(g, "queue", name, verb_done((enum verb)verb));
    } else if (g->json && verb == V_LS) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++) {
            json_array_append_new(a, queue_json(&qs[i]));
        }
        ex = print_json(a);
    } else if (g->json) {
        ex = print_json(queue_json(qs));
    } else {
        print_queues(qs, n, verb != V_LS);
    }
    qraft_queues_free(qs, n);
    qraft_client_free(c);
    return ex;
}

/* ----------------------------------------------------------------------
 * Schedules */

static json_t *schedule_json(const struct qraft_schedule *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", jstr(s->id));
    json_object_set_new(o, "cron", jstr(s->cron));
    json_object_set_new(o, "url", jstr(s->url));
    json_object_set_new(o, "method", jstr(s->method));
    json_object_set_new(o, "queue", jstr(s->queue));
    json_object_set_new(o, "paused", json_boolean(s->paused));
    json_object_set_new(o, "body_bytes", json_integer((json_int_t)s->body_len));
    json_object_set_new(o, "created_ms",
                        json_integer((json_int_t)s->created_ms));
    json_object_set_new(o, "updated_ms",
                        json_integer((json_int_t)s->updated_ms));
    json_object_set_new(o, "last_slot_ms",
                        json_integer((json_int_t)s->last_slot_ms));
    json_object_set_new(o, "next_slot_ms",
                        json_integer((json_int_t)s->next_slot_ms));
    json_t *fired = json_array();
    for (size_t i = 0; i < s->n_last_fired; i++) {
        json_t *f = json_object();
        json_object_set_new(f, "id", jstr(s->last_fired[i].message_id));
        json_object_set_new(
            f, "state", json_string(qraft_state_name(s->last_fired[i].state)));
        json_array_append_new(fired, f);
    }
    json_object_set_new(o, "last_fired", fired);
    return o;
}

static void print_schedule(const struct qraft_schedule *s)
{
    char t[64];
    char buf[128];
    print_field("id:", s->id);
    print_field("cron:", s->cron);
    print_field("url:", s->url);
    print_field("method:", s->method);
    print_field("paused:", s->paused ? "yes" : "no");
    if (s->queue[0] != '\0') {
        print_field("queue:", s->queue);
    }
    snprintf(buf, sizeof buf, "%zu bytes", s->body_len);
    print_field("body:", buf);
    print_field("next tick:", s->paused
                                  ? "- (paused)"
                                  : iso_time(s->next_slot_ms, t, sizeof t));
    print_field("last tick:", iso_time(s->last_slot_ms, t, sizeof t));
    print_field("created:", iso_time(s->created_ms, t, sizeof t));
    print_field("updated:", iso_time(s->updated_ms, t, sizeof t));
    if (s->n_last_fired > 0) {
        printf("last tick's messages:\n");
        for (size_t i = 0; i < s->n_last_fired; i++) {
            printf("  %-30s %s\n", s->last_fired[i].message_id,
                   qraft_state_name(s->last_fired[i].state));
        }
    }
}

static void print_schedules(const struct qraft_schedule *ss, size_t n)
{
    char t[64];
    printf("%-30s %-20s %-6s %-24s %s\n", "ID", "CRON", "PAUSED",
           "NEXT TICK (UTC)", "URL");
    for (size_t i = 0; i < n; i++) {
        printf("%-30s %-20s %-6s %-24s %s\n", ss[i].id, ss[i].cron,
               ss[i].paused ? "yes" : "no",
               ss[i].paused ? "-" : iso_time(ss[i].next_slot_ms, t, sizeof t),
               ss[i].url);
    }
}

struct schedule_create_args {
    struct publish_args pub;
    const char *cron;
    const char *id;
};

static int schedule_create_option(const char *cmd,
                                  int opt,
                                  char **argv,
                                  void *arg)
{
    struct schedule_create_args *a = arg;
    if (opt == OPT_CRON) {
        a->cron = optarg;
        return EXIT_OK;
    }
    if (opt == OPT_ID) {
        a->id = optarg;
        return EXIT_OK;
    }
    return publish_option(cmd, opt, argv, &a->pub);
}

int cmd_schedule(int argc, char **argv, struct globals *g)
{
    if (argc < 2) {
        return usage_error("schedule",
                           "expected ls, get, create, pause, "
                           "resume or rm");
    }
    const char *sub = argv[1];
    if (is_help(sub)) {
        fputs(usage_schedule, stdout);
        return EXIT_OK;
    }
    int verb = parse_verb(sub, "create");
    if (verb < 0) {
        return usage_error("schedule", "unknown subcommand '%s'", sub);
    }
    char cmd[32];
    snprintf(cmd, sizeof cmd, "schedule %s", sub);
    static const struct option opts[] = {
        GLOBAL_LONG_OPTIONS,
        PUBLISH_LONG_OPTIONS,
        {"json", no_argument, NULL, OPT_JSON},
        {"cron", required_argument, NULL, OPT_CRON},
        {"id", required_argument, NULL, OPT_ID},
        {NULL, 0, NULL, 0},
    };
    struct schedule_create_args create;
    memset(&create, 0, sizeof create);
    int ex =
        sub_options(cmd, usage_schedule, opts, argc - 1, argv + 1, g,
                    verb == V_SET ? schedule_create_option : NULL, &create);
    if (ex != -1) {
        publish_args_fini(&create.pub);
        return ex;
    }
    int n_args = argc - 1 - optind;
    const char *arg = argv[1 + optind];
    if (verb == V_LS ? n_args != 0 : n_args != 1) {
        publish_args_fini(&create.pub);
        return usage_error(cmd, verb == V_LS    ? "takes no argument"
                                : verb == V_SET ? "expected one URL"
                                                : "expected one schedule id");
    }
    if (verb == V_SET && create.cron == NULL) {
        publish_args_fini(&create.pub);
        return usage_error(cmd, "needs --cron EXPR, e.g. --cron '*/5 * * * *'");
    }
    struct qraft_client *c = NULL;
    ex = open_client(cmd, g, &c);
    if (ex != EXIT_OK) {
        publish_args_fini(&create.pub);
        return ex;
    }
    struct qraft_schedule *ss = NULL;
    size_t n = 0;
    char id[QRAFT_ID_MAX] = "";
    int rc;
    switch ((enum verb)verb) {
        case V_LS:
            rc = qraft_schedule_list(c, &ss, &n);
            break;
        case V_GET:
            rc = qraft_schedule_get(c, arg, &ss);
            n = rc == 0 ? 1 : 0;
            break;
        case V_SET:
            create.pub.p.url = arg;
            rc = qraft_schedule_create(c, create.id, create.cron, &create.pub.p,
                                       id);
            break;
        case V_RM:
            rc = qraft_schedule_delete(c, arg);
            break;
        default:
            rc = qraft_schedule_pause(c, arg, verb == V_PAUSE);
            break;
    }
    if (rc != 0) {
        ex = report(cmd, c, rc);
    } else if (verb == V_SET && g->json) {
        json_t *o = json_object();
        json_object_set_new(o, "id", jstr(id));
        ex = print_json(o);
    } else if (verb == V_SET) {
        puts(id);
    } else if (verb == V_RM || verb == V_PAUSE || verb == V_RESUME) {
        ex = print_done(g, "schedule", arg, verb_done((enum verb)verb));
    } else if (g->json && verb == V_LS) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++) {
            json_array_append_new(a, schedule_json(&ss[i]));
        }
        ex = print_json(a);
    } else if (g->json) {
        ex = print_json(schedule_json(ss));
    } else if (verb == V_LS) {
        print_schedules(ss, n);
    } else {
        print_schedule(ss);
    }
    qraft_schedules_free(ss, n);
    qraft_client_free(c);
    publish_args_fini(&create.pub);
    return ex;
}

/* ----------------------------------------------------------------------
 * Flow control keys */

static json_t *flow_json(const struct qraft_flow_key *k)
{
    json_t *o = json_object();
    json_object_set_new(o, "key", jstr(k->key));
    json_object_set_new(o, "paused", json_boolean(k->paused));
    json_object_set_new(o, "parallelism_max", json_integer(k->parallelism_max));
    json_object_set_new(o, "parallelism_count",
                        json_integer(k->parallelism_count));
    json_object_set_new(o, "rate_max", json_integer(k->rate_max));
    json_object_set_new(o, "rate_count", json_integer(k->rate_count));
    json_object_set_new(o, "rate_period_s",
                        json_integer((json_int_t)k->rate_period_s));
    json_object_set_new(o, "wait_list_size",
                        json_integer((json_int_t)k->wait_list_size));
    json_object_set_new(o, "pinned_parallelism",
                        json_boolean(k->pinned_parallelism));
    json_object_set_new(o, "pinned_rate", json_boolean(k->pinned_rate));
    json_object_set_new(o, "counts_known", json_boolean(k->counts_known));
    return o;
}

/* "3/10" (count of max), "?/10" when this node does not know the count,
 * "-" without a limit. */
static const char *of_max(uint32_t count,
                          uint32_t max,
                          bool known,
                          char *buf,
                          size_t size)
{
    if (max == 0) {
        return "-";
    }
    if (known) {
        snprintf(buf, size, "%" PRIu32 "/%" PRIu32, count, max);
    } else {
        snprintf(buf, size, "?/%" PRIu32, max);
    }
    return buf;
}

static void print_flow_keys(const struct qraft_flow_key *ks, size_t n)
{
    printf("%-24s %-6s %-12s %-16s %s\n", "KEY", "PAUSED", "IN FLIGHT",
           "RATE (PERIOD)", "WAITING");
    for (size_t i = 0; i < n; i++) {
        const struct qraft_flow_key *k = &ks[i];
        char par[32];
        char rate[32];
        char rate_period[48];
        snprintf(rate_period, sizeof rate_period, "%s (%" PRIu64 " s)%s",
                 of_max(k->rate_count, k->rate_max, k->counts_known, rate,
                        sizeof rate),
                 k->rate_period_s, k->pinned_rate ? "*" : "");
        char par_pin[40];
        snprintf(par_pin, sizeof par_pin, "%s%s",
                 of_max(k->parallelism_count, k->parallelism_max,
                        k->counts_known, par, sizeof par),
                 k->pinned_parallelism ? "*" : "");
        printf("%-24s %-6s %-12s %-16s %" PRIu64 "\n", k->key,
               k->paused ? "yes" : "no", par_pin,
               k->rate_max > 0 ? rate_period : "-", k->wait_list_size);
    }
    for (size_t i = 0; i < n; i++) {
        if (ks[i].pinned_parallelism || ks[i].pinned_rate) {
            printf("(* pinned by an operator)\n");
            break;
        }
    }
}

struct flow_args {
    struct qraft_flow_update u;
    bool any_value;
};

static int flow_option(const char *cmd, int opt, char **argv, void *arg)
{
    struct flow_args *a = arg;
    uint64_t v;
    bool unpin = a->u.action == QRAFT_FLOW_UNPIN;
    switch (opt) {
        case OPT_PARALLELISM:
        case OPT_RATE:
            if (unpin) {
                /* unpin's flags take no value: see flow_unpin_options */
                return -1;
            }
            if (parse_u64(optarg, UINT32_MAX, &v) != 0 || v == 0) {
                return usage_error(cmd,
                                   "%s '%s': expected a count of 1 or "
                                   "more",
                                   argv[optind - 2], optarg);
            }
            if (opt == OPT_PARALLELISM) {
                a->u.parallelism = (uint32_t)v;
            } else {
                a->u.rate = (uint32_t)v;
            }
            a->any_value = true;
            return EXIT_OK;
        case OPT_PERIOD:
            if (parse_duration_ms(optarg, &v) != 0 || v < 1000 ||
                v % 1000 != 0) {
                return usage_error(cmd,
                                   "--period '%s': expected whole "
                                   "seconds, like 1s, 60s or 1m",
                                   optarg);
            }
            a->u.period_s = v / 1000;
            return EXIT_OK;
        case OPT_UNPIN_PARALLELISM:
            a->u.unpin_parallelism = true;
            a->any_value = true;
            return EXIT_OK;
        case OPT_UNPIN_RATE:
            a->u.unpin_rate = true;
            a->any_value = true;
            return EXIT_OK;
        default:
            return -1;
    }
}

int cmd_flow(int argc, char **argv, struct globals *g)
{
    if (argc < 2) {
        return usage_error("flow",
                           "expected ls, get, pause, resume, pin, "
                           "unpin or reset");
    }
    const char *sub = argv[1];
    if (is_help(sub)) {
        fputs(usage_flow, stdout);
        return EXIT_OK;
    }
    int verb = strcmp(sub, "unpin") == 0   ? V_UNPIN
               : strcmp(sub, "reset") == 0 ? V_RESET
                                           : parse_verb(sub, "pin");
    if (verb < 0 || verb == V_RM) {
        return usage_error("flow", "unknown subcommand '%s'", sub);
    }
    char cmd[32];
    snprintf(cmd, sizeof cmd, "flow %s", sub);
    static const struct option pin_opts[] = {
        GLOBAL_LONG_OPTIONS,
        {"json", no_argument, NULL, OPT_JSON},
        {"parallelism", required_argument, NULL, OPT_PARALLELISM},
        {"rate", required_argument, NULL, OPT_RATE},
        {"period", required_argument, NULL, OPT_PERIOD},
        {NULL, 0, NULL, 0},
    };
    static const struct option unpin_opts[] = {
        GLOBAL_LONG_OPTIONS,
        {"json", no_argument, NULL, OPT_JSON},
        {"parallelism", no_argument, NULL, OPT_UNPIN_PARALLELISM},
        {"rate", no_argument, NULL, OPT_UNPIN_RATE},
        {NULL, 0, NULL, 0},
    };
    static const enum qraft_flow_action actions[] = {
        [V_SET] = QRAFT_FLOW_PIN,          [V_PAUSE] = QRAFT_FLOW_PAUSE,
        [V_RESUME] = QRAFT_FLOW_RESUME,    [V_UNPIN] = QRAFT_FLOW_UNPIN,
        [V_RESET] = QRAFT_FLOW_RESET_RATE,
    };
    struct flow_args a;
    memset(&a, 0, sizeof a);
    a.u.action = actions[verb];
    bool pin = verb == V_SET || verb == V_UNPIN;
    int ex =
        sub_options(cmd, usage_flow, verb == V_UNPIN ? unpin_opts : pin_opts,
                    argc - 1, argv + 1, g, pin ? flow_option : NULL, &a);
    if (ex != -1) {
        return ex;
    }
    int n_args = argc - 1 - optind;
    const char *key = argv[1 + optind];
    if (verb == V_LS ? n_args != 0 : n_args != 1) {
        return usage_error(cmd, verb == V_LS ? "takes no argument"
                                             : "expected one flow control key");
    }
    if (pin && !a.any_value) {
        return usage_error(cmd, verb == V_SET
                                    ? "needs --parallelism N and/or --rate N"
                                    : "needs --parallelism and/or --rate");
    }
    struct qraft_client *c = NULL;
    ex = open_client(cmd, g, &c);
    if (ex != EXIT_OK) {
        return ex;
    }
    struct qraft_flow_key *ks = NULL;
    size_t n = 0;
    int rc;
    if (verb == V_LS) {
        rc = qraft_flow_list(c, &ks, &n);
    } else if (verb == V_GET) {
        rc = qraft_flow_get(c, key, &ks);
        n = rc == 0 ? 1 : 0;
    } else {
        rc = qraft_flow_update(c, key, &a.u);
    }
    if (rc != 0) {
        ex = report(cmd, c, rc);
    } else if (verb != V_LS && verb != V_GET) {
        ex = print_done(g, "key", key, verb_done((enum verb)verb));
    } else if (g->json && verb == V_LS) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) {
            json_array_append_new(arr, flow_json(&ks[i]));
        }
        ex = print_json(arr);
    } else if (g->json) {
        ex = print_json(flow_json(ks));
    } else {
        print_flow_keys(ks, n);
    }
    qraft_flow_keys_free(ks, n);
    qraft_client_free(c);
    return ex;
}
