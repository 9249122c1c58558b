/* qraft queue ... and qraft schedule ...: queues (parallelism, pause, lag)
 * and cron schedules, each with ls, get, a write (queue set, schedule
 * create), rm (remove and delete accepted), pause and resume (cli.h). Every
 * subcommand takes --json; a write then prints what it did as JSON. */
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

/* The subcommand verbs of queue and schedule. */
enum verb { V_LS, V_GET, V_SET, V_RM, V_PAUSE, V_RESUME };

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
    return v == V_RM ? "deleted" : v == V_PAUSE ? "paused" : "resumed";
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
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
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
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
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
