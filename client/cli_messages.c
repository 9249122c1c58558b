/* qraft publish, get, cancel and ls: the commands on single messages and
 * message lists, with the message's text and JSON forms (cli.h). */
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

static const char usage_publish[] =
    "usage: qraft publish URL [OPTIONS]\n"
    "       qraft publish --group NAME [OPTIONS]\n"
    "\n"
    "Publishes a message for URL and prints its id alone on stdout; with\n"
    "--group, one message to each endpoint of URL group NAME, printing\n"
    "\"ID URL\" per message. --json prints {id, deduplicated} (a group:\n"
    "{group, messages: [{id, url, endpoint, deduplicated}]}).\n"
    "\n"
    "  --body STR | @FILE | -   body: the string, a file's content, or stdin\n"
    "  --header 'K: V'          forwarded header (repeatable)\n"
    "  --method M               HTTP method (default POST)\n"
    "  --retries N              retries after the first attempt\n"
    "  --retry-delay EXPR       retry delay expression in ms, e.g.\n"
    "                           '1000 * pow(2, retried)'\n"
    "  --strict                 retry every failure but a 489 with\n"
    "                           Upstash-NonRetryable-Error (QStash's rule;\n"
    "                           by default other 4xx are not retried)\n"
    "  --min-backoff DUR        never retry sooner than DUR\n"
    "  --max-backoff DUR        never wait longer than DUR between attempts\n"
    "  --max-doublings N        default backoff grows exponentially N times,\n"
    "                           then linearly\n"
    "  --max-retry-duration DUR stop retrying DUR after publishing\n"
    "  --delay DUR              deliver after DUR (30s, 5m, 1h, 1d10h30m)\n"
    "  --not-before UNIX_S      deliver at or after this unix time\n"
    "  --dedup-id ID            drop repeats with the same id\n"
    "  --content-dedup          drop repeats with the same content\n"
    "  --timeout DUR            per-attempt delivery timeout\n"
    "  --callback URL           told about the delivery\n"
    "  --failure-callback URL   told when delivery fails for good\n"
    "  --queue NAME             queue to publish into\n"
    "  --redact SPEC            never show these again (body, header,\n"
    "                           header[Name], comma separated): views show\n"
    "                           REDACTED:<sha256>; delivery gets the values\n"
    "\n"
    "example:\n"
    "  qraft publish https://example.com/hook --body '{\"a\":1}' \\\n"
    "      --header 'Content-Type: application/json' --retries 5 --delay 30s\n"
    "  qraft publish --group billing --body @invoice.json\n";

static const char usage_get[] =
    "usage: qraft get ID [--json]\n"
    "\n"
    "Shows a message: state (queued, pending, delivering, retrying,\n"
    "delivered, dead_lettered, cancelled), attempts, next attempt time (UTC), "
    "last\n"
    "error and history. Exits 3 when the id is unknown.\n"
    "\n"
    "example:\n"
    "  qraft get msg_01a20717539c00037e994b6a --json\n";

static const char usage_ls[] =
    "usage: qraft ls [--state S] [--limit N] [--cursor C] [--json]\n"
    "\n"
    "Lists one page of messages, optionally only those in state S\n"
    "(queued, pending, delivering, retrying, delivered, dead_lettered,\n"
    "cancelled). When there are more, stderr names the --cursor for the\n"
    "next page (JSON: the \"cursor\" field).\n"
    "\n"
    "example:\n"
    "  qraft ls --state retrying --limit 20\n";

json_t *message_json(const struct qraft_message *m)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", jstr(m->id));
    json_object_set_new(o, "state", json_string(qraft_state_name(m->state)));
    json_object_set_new(o, "url", jstr(m->url));
    json_object_set_new(o, "method", jstr(m->method));
    json_t *headers = json_array();
    for (size_t i = 0; i < m->n_headers; i++) {
        json_t *h = json_object();
        json_object_set_new(h, "name", jstr(m->headers[i].name));
        json_object_set_new(h, "value", jstr(m->headers[i].value));
        json_array_append_new(headers, h);
    }
    json_object_set_new(o, "headers", headers);
    json_object_set_new(o, "body_bytes", json_integer((json_int_t)m->body_len));
    json_object_set_new(o, "body_released",
                        json_boolean(m->state == QRAFT_STATE_DELIVERED));
    json_t *body = json_stringn((const char *)m->body, m->body_len);
    if (body != NULL) {
        json_object_set_new(o, "body", body);
    } else {
        json_object_set_new(o, "body_base64", base64(m->body, m->body_len));
    }
    json_object_set_new(o, "max_retries", json_integer(m->max_retries));
    json_object_set_new(o, "retry_delay", jstr(m->retry_delay));
    json_object_set_new(o, "timeout_ms",
                        json_integer((json_int_t)m->timeout_ms));
    json_object_set_new(o, "callback", jstr(m->callback));
    json_object_set_new(o, "failure_callback", jstr(m->failure_callback));
    json_object_set_new(o, "queue", jstr(m->queue));
    json_object_set_new(o, "dedup_id", jstr(m->dedup_id));
    json_object_set_new(o, "attempts", json_integer(m->attempts));
    json_object_set_new(o, "not_before_ms",
                        json_integer((json_int_t)m->not_before_ms));
    json_object_set_new(o, "next_attempt_ms",
                        json_integer((json_int_t)m->next_attempt_ms));
    json_object_set_new(o, "created_ms",
                        json_integer((json_int_t)m->created_ms));
    json_object_set_new(o, "updated_ms",
                        json_integer((json_int_t)m->updated_ms));
    if (m->last_error.category[0] != '\0') {
        json_t *le = json_object();
        json_object_set_new(le, "category", jstr(m->last_error.category));
        json_object_set_new(le, "status", json_integer(m->last_error.status));
        json_object_set_new(le, "message", jstr(m->last_error.message));
        json_object_set_new(o, "last_error", le);
    } else {
        json_object_set_new(o, "last_error", json_null());
    }
    json_object_set_new(o, "dead_lettered_ms",
                        json_integer((json_int_t)m->dead_lettered_ms));
    json_object_set_new(o, "dlq_hint", jstr(m->dlq_hint));
    return o;
}

json_t *events_json(const struct qraft_message *m)
{
    json_t *a = json_array();
    for (size_t i = 0; i < m->n_events; i++) {
        const struct qraft_event *e = &m->events[i];
        json_t *o = json_object();
        json_object_set_new(o, "time_ms", json_integer((json_int_t)e->time_ms));
        json_object_set_new(o, "state",
                            json_string(qraft_state_name(e->state)));
        json_object_set_new(o, "attempt", json_integer(e->attempt));
        json_object_set_new(o, "detail", jstr(e->detail));
        json_array_append_new(a, o);
    }
    return a;
}

/* Delivered, dead-lettered and cancelled messages have no next attempt. */
static bool finished(enum qraft_state s)
{
    return s == QRAFT_STATE_DELIVERED || s == QRAFT_STATE_DEAD_LETTERED ||
           s == QRAFT_STATE_CANCELLED;
}

/* "server_error, HTTP 503: ...": the status only when there was a
 * response, the message only when it says more than "HTTP <status>". */
static const char *last_error_text(const struct qraft_last_error *e,
                                   char *buf,
                                   size_t size)
{
    if (e->category[0] == '\0') {
        return "-";
    }
    char status[32] = "";
    if (e->status != 0) {
        snprintf(status, sizeof status, "HTTP %" PRId32, e->status);
    }
    bool same = strcmp(e->message, status) == 0 || e->message[0] == '\0';
    snprintf(buf, size, "%s%s%s%s%s", e->category, status[0] ? ", " : "",
             status,
             same        ? ""
             : status[0] ? ": "
                         : ", ",
             same ? "" : e->message);
    return buf;
}

static void print_message(const struct qraft_message *m)
{
    char t[64];
    char buf[1024];
    print_field("id:", m->id);
    print_field("state:", qraft_state_name(m->state));
    print_field("url:", m->url);
    print_field("method:", m->method);
    snprintf(buf, sizeof buf, "%" PRIu32 " of %" PRIu32, m->attempts,
             m->max_retries + 1);
    print_field("attempts:", buf);
    print_field("next attempt:",
                finished(m->state) ? "- (finished)"
                                   : iso_time(m->next_attempt_ms, t, sizeof t));
    print_field("last error:",
                last_error_text(&m->last_error, buf, sizeof buf));
    print_field("created:", iso_time(m->created_ms, t, sizeof t));
    print_field("updated:", iso_time(m->updated_ms, t, sizeof t));
    if (m->not_before_ms != 0) {
        print_field("not before:", iso_time(m->not_before_ms, t, sizeof t));
    }
    if (m->retry_delay[0] != '\0') {
        /* A bare number is milliseconds; an expression says its own. */
        bool number =
            strspn(m->retry_delay, "0123456789") == strlen(m->retry_delay);
        snprintf(buf, sizeof buf, "%s%s", m->retry_delay,
                 number ? " ms" : " (ms)");
        print_field("retry delay:", buf);
    }
    if (m->timeout_ms != 0) {
        snprintf(buf, sizeof buf, "%" PRIu64 " ms", m->timeout_ms);
        print_field("timeout:", buf);
    }
    if (m->queue[0] != '\0') {
        print_field("queue:", m->queue);
    }
    if (m->callback[0] != '\0') {
        print_field("callback:", m->callback);
    }
    if (m->failure_callback[0] != '\0') {
        print_field("failure callback:", m->failure_callback);
    }
    if (m->dedup_id[0] != '\0') {
        print_field("dedup id:", m->dedup_id);
    }
    if (m->dead_lettered_ms != 0) {
        print_field("dead lettered:",
                    iso_time(m->dead_lettered_ms, t, sizeof t));
    }
    if (m->dlq_hint[0] != '\0') {
        print_field("dlq hint:", m->dlq_hint);
    }
    if (m->state == QRAFT_STATE_DELIVERED) {
        print_field("body:", "released after delivery (the history stays)");
    } else {
        snprintf(buf, sizeof buf, "%zu bytes", m->body_len);
        print_field("body:", buf);
    }
    if (m->n_headers > 0) {
        printf("headers:\n");
        for (size_t i = 0; i < m->n_headers; i++) {
            printf("  %s: %s\n", m->headers[i].name, m->headers[i].value);
        }
    }
    if (m->n_events > 0) {
        printf("history:\n");
        for (size_t i = 0; i < m->n_events; i++) {
            const struct qraft_event *e = &m->events[i];
            printf("  %s  %-13s  attempt %" PRIu32 "%s%s\n",
                   iso_time(e->time_ms, t, sizeof t),
                   qraft_state_name(e->state), e->attempt,
                   e->detail[0] != '\0' ? "  " : "", e->detail);
        }
    }
}

static int add_header(struct publish_args *a, char *spec)
{
    char *colon = strchr(spec, ':');
    if (colon == NULL || colon == spec) {
        return -1;
    }
    char *name_end = colon;
    while (name_end > spec && (name_end[-1] == ' ' || name_end[-1] == '\t')) {
        name_end--;
    }
    *name_end = '\0';
    char *value = colon + 1;
    while (*value == ' ' || *value == '\t') {
        value++;
    }
    struct qraft_header *h =
        realloc(a->headers, (a->p.n_headers + 1) * sizeof *h);
    if (h == NULL) {
        return -1;
    }
    a->headers = h;
    h[a->p.n_headers].name = spec;
    h[a->p.n_headers].value = value;
    a->p.n_headers++;
    a->p.headers = a->headers;
    return 0;
}

static int set_body(struct publish_args *a, const char *arg)
{
    if (strcmp(arg, "-") != 0 && arg[0] != '@') {
        a->p.body = arg;
        a->p.body_len = strlen(arg);
        return EXIT_OK;
    }
    FILE *f = strcmp(arg, "-") == 0 ? stdin : fopen(arg + 1, "rb");
    if (f == NULL) {
        fprintf(stderr, "qraft: publish: cannot open %s: %s\n", arg + 1,
                strerror(errno));
        return EXIT_USAGE;
    }
    free(a->body);
    a->body = NULL;
    size_t len = 0;
    int rc = read_all(f, &a->body, &len);
    int err = errno;
    if (f != stdin) {
        fclose(f);
    }
    if (rc != 0) {
        fprintf(stderr, "qraft: publish: cannot read %s: %s\n",
                f == stdin ? "stdin" : arg + 1, strerror(err));
        return EXIT_USAGE;
    }
    a->p.body = a->body;
    a->p.body_len = len;
    return EXIT_OK;
}

/* Handles one publish option into a (cmd names the command in errors).
 * Returns -1 when opt is not one, else EXIT_OK or a usage error's code. */
int publish_option(const char *cmd,
                   int opt,
                   char **argv,
                   struct publish_args *a)
{
    uint64_t v;
    switch (opt) {
        case OPT_BODY:
            return set_body(a, optarg);
        case OPT_HEADER:
            if (add_header(a, optarg) != 0) {
                return usage_error(cmd, "--header '%s': expected 'Name: value'",
                                   optarg);
            }
            return EXIT_OK;
        case OPT_METHOD:
            a->p.method = optarg;
            return EXIT_OK;
        case OPT_RETRIES:
            if (parse_u64(optarg, UINT32_MAX, &v) != 0) {
                return usage_error(cmd, "--retries '%s': expected a count",
                                   optarg);
            }
            a->p.has_retries = true;
            a->p.retries = (uint32_t)v;
            return EXIT_OK;
        case OPT_RETRY_DELAY:
            a->p.retry_delay = optarg;
            return EXIT_OK;
        case OPT_DELAY:
            if (parse_duration_ms(optarg, &a->p.delay_ms) != 0) {
                return usage_error(cmd,
                                   "--delay '%s': expected a duration "
                                   "like 30s, 5m, 1h or 1d10h30m",
                                   optarg);
            }
            return EXIT_OK;
        case OPT_NOT_BEFORE:
            if (parse_u64(optarg, UINT64_MAX / 1000, &v) != 0) {
                return usage_error(cmd,
                                   "--not-before '%s': expected unix "
                                   "seconds",
                                   optarg);
            }
            a->p.not_before_ms = v * 1000;
            return EXIT_OK;
        case OPT_DEDUP_ID:
            a->p.dedup_id = optarg;
            return EXIT_OK;
        case OPT_CONTENT_DEDUP:
            a->p.content_dedup = true;
            return EXIT_OK;
        case OPT_TIMEOUT:
            if (parse_duration_ms(optarg, &a->p.timeout_ms) != 0) {
                return usage_error(cmd,
                                   "--timeout '%s': expected a duration "
                                   "like 30s or 2m",
                                   optarg);
            }
            return EXIT_OK;
        case OPT_CALLBACK:
            a->p.callback = optarg;
            return EXIT_OK;
        case OPT_FAILURE_CALLBACK:
            a->p.failure_callback = optarg;
            return EXIT_OK;
        case OPT_QUEUE:
            a->p.queue = optarg;
            return EXIT_OK;
        case OPT_REDACT:
            a->p.redact = optarg;
            return EXIT_OK;
        case OPT_STRICT:
            a->p.retry_options.strict = true;
            return EXIT_OK;
        case OPT_MIN_BACKOFF:
        case OPT_MAX_BACKOFF:
        case OPT_MAX_RETRY_DURATION:
            if (parse_duration_ms(optarg, &v) != 0) {
                return usage_error(cmd,
                                   "%s '%s': expected a duration like 30s, "
                                   "5m or 1h",
                                   argv[optind - 1], optarg);
            }
            if (opt == OPT_MIN_BACKOFF) {
                a->p.retry_options.min_backoff_ms = v;
            } else if (opt == OPT_MAX_BACKOFF) {
                a->p.retry_options.max_backoff_ms = v;
            } else {
                a->p.retry_options.max_retry_duration_ms = v;
            }
            return EXIT_OK;
        case OPT_MAX_DOUBLINGS:
            if (parse_u64(optarg, UINT32_MAX, &v) != 0) {
                return usage_error(
                    cmd, "--max-doublings '%s': expected a count", optarg);
            }
            a->p.retry_options.max_doublings = (uint32_t)v;
            return EXIT_OK;
        default:
            return -1;
    }
}

void publish_args_fini(struct publish_args *a)
{
    free(a->headers);
    free(a->body);
}

/* publish --group: one line "ID URL" per endpoint's message (JSON: the
 * group and its messages). */
static int publish_group(struct qraft_client *c,
                         const char *group,
                         const struct qraft_publish *p,
                         bool json)
{
    struct qraft_published *msgs = NULL;
    size_t n = 0;
    int rc = qraft_publish_group(c, group, p, &msgs, &n);
    if (rc != 0) {
        return report("publish", c, rc);
    }
    int ex = EXIT_OK;
    if (json) {
        json_t *o = json_object();
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) {
            json_t *m = json_object();
            json_object_set_new(m, "id", jstr(msgs[i].id));
            json_object_set_new(m, "url", jstr(msgs[i].url));
            json_object_set_new(m, "endpoint", jstr(msgs[i].endpoint));
            json_object_set_new(m, "deduplicated",
                                json_boolean(msgs[i].deduplicated));
            json_array_append_new(arr, m);
        }
        json_object_set_new(o, "group", jstr(group));
        json_object_set_new(o, "messages", arr);
        ex = print_json(o);
    } else {
        for (size_t i = 0; i < n; i++) {
            printf("%s %s\n", msgs[i].id, msgs[i].url);
        }
    }
    qraft_group_publish_free(msgs, n);
    return ex;
}

int cmd_publish(int argc, char **argv, struct globals *g)
{
    static const struct option opts[] = {
        GLOBAL_LONG_OPTIONS,
        PUBLISH_LONG_OPTIONS,
        {"json", no_argument, NULL, OPT_JSON},
        {"group", required_argument, NULL, OPT_GROUP},
        {NULL, 0, NULL, 0},
    };
    const char *group = NULL;
    struct publish_args a;
    memset(&a, 0, sizeof a);
    int ex = EXIT_OK;
    int opt;
    while (ex == EXIT_OK &&
           (opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (global_option(opt, g)) {
            continue;
        }
        if (opt == OPT_HELP) {
            fputs(usage_publish, stdout);
            goto out;
        }
        if (opt == OPT_GROUP) {
            group = optarg;
            continue;
        }
        ex = publish_option("publish", opt, argv, &a);
        if (ex == -1) {
            ex = usage_error("publish", "bad option '%s'", argv[optind - 1]);
        }
    }
    if (ex != EXIT_OK) {
        goto out;
    }
    if (argc - optind != (group != NULL ? 0 : 1)) {
        ex = usage_error("publish", group != NULL
                                        ? "--group takes the place of the URL"
                                        : "expected one URL (or --group "
                                          "NAME)");
        goto out;
    }
    a.p.url = group != NULL ? NULL : argv[optind];
    struct qraft_client *c = NULL;
    ex = open_client("publish", g, &c);
    if (ex != EXIT_OK) {
        goto out;
    }
    if (group != NULL) {
        ex = publish_group(c, group, &a.p, g->json);
        qraft_client_free(c);
        goto out;
    }
    char id[QRAFT_ID_MAX];
    bool dedup = false;
    int rc = qraft_publish(c, &a.p, id, &dedup);
    if (rc != 0) {
        ex = report("publish", c, rc);
    } else if (g->json) {
        json_t *o = json_object();
        json_object_set_new(o, "id", jstr(id));
        json_object_set_new(o, "deduplicated", json_boolean(dedup));
        ex = print_json(o);
    } else {
        puts(id);
        if (dedup) {
            fprintf(stderr,
                    "qraft: publish: deduplicated: %s already existed\n", id);
        }
    }
    qraft_client_free(c);
out:
    publish_args_fini(&a);
    return ex;
}

int cmd_get(int argc, char **argv, struct globals *g)
{
    int ex = simple_options("get", usage_get, argc, argv, g);
    if (ex != -1) {
        return ex;
    }
    if (argc - optind != 1) {
        return usage_error("get", "expected one message id");
    }
    struct qraft_client *c = NULL;
    ex = open_client("get", g, &c);
    if (ex != EXIT_OK) {
        return ex;
    }
    struct qraft_message *m = NULL;
    int rc = qraft_get(c, argv[optind], &m);
    if (rc != 0) {
        ex = report("get", c, rc);
    } else if (g->json) {
        json_t *o = message_json(m);
        json_object_set_new(o, "events", events_json(m));
        ex = print_json(o);
    } else {
        print_message(m);
    }
    qraft_message_free(m);
    qraft_client_free(c);
    return ex;
}

int print_list(const struct qraft_message_list *l, const char *cmd, bool json)
{
    if (json) {
        json_t *o = json_object();
        json_t *a = json_array();
        for (size_t i = 0; i < l->n_messages; i++) {
            json_array_append_new(a, message_json(&l->messages[i]));
        }
        json_object_set_new(o, "messages", a);
        json_object_set_new(o, "cursor", jstr(l->cursor));
        return print_json(o);
    }
    char t[64];
    if (strcmp(cmd, "dlq ls") == 0) {
        /* A dead letter says when and why it became one; the reason (its
         * category) is last, `get ID` has the whole error. */
        printf("%-30s %-24s %-8s %-6s %s %s\n", "ID", "DEAD LETTERED (UTC)",
               "ATTEMPTS", "STATUS", "URL", "REASON");
        for (size_t i = 0; i < l->n_messages; i++) {
            const struct qraft_message *m = &l->messages[i];
            char status[16] = "-";
            if (m->last_error.status != 0) {
                snprintf(status, sizeof status, "%" PRId32,
                         m->last_error.status);
            }
            printf("%-30s %-24s %-8" PRIu32 " %-6s %s %s\n", m->id,
                   iso_time(m->dead_lettered_ms, t, sizeof t), m->attempts,
                   status, m->url,
                   m->last_error.category[0] != '\0' ? m->last_error.category
                                                     : "-");
        }
    } else {
        printf("%-30s %-13s %-8s %-24s %s\n", "ID", "STATE", "ATTEMPTS",
               "NEXT ATTEMPT (UTC)", "URL");
        for (size_t i = 0; i < l->n_messages; i++) {
            const struct qraft_message *m = &l->messages[i];
            printf("%-30s %-13s %-8" PRIu32 " %-24s %s\n", m->id,
                   qraft_state_name(m->state), m->attempts,
                   finished(m->state)
                       ? "-"
                       : iso_time(m->next_attempt_ms, t, sizeof t),
                   m->url);
        }
    }
    if (l->cursor[0] != '\0') {
        fprintf(stderr, "qraft: %s: more: add --cursor %s\n", cmd, l->cursor);
    }
    return EXIT_OK;
}

/* Options of ls and dlq ls. */
int list_options(const char *cmd,
                 const char *usage,
                 bool with_state,
                 int argc,
                 char **argv,
                 struct globals *g,
                 enum qraft_state *state,
                 const char **cursor,
                 uint32_t *limit)
{
    static const struct option opts[] = {
        GLOBAL_LONG_OPTIONS,
        {"json", no_argument, NULL, OPT_JSON},
        {"state", required_argument, NULL, OPT_STATE},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {"cursor", required_argument, NULL, OPT_CURSOR},
        {NULL, 0, NULL, 0},
    };
    int opt;
    uint64_t v;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (global_option(opt, g)) {
            continue;
        }
        switch (opt) {
            case OPT_HELP:
                fputs(usage, stdout);
                return EXIT_OK;
            case OPT_STATE:
                if (!with_state || qraft_state_parse(optarg, state) != 0 ||
                    *state == QRAFT_STATE_UNSPECIFIED) {
                    return usage_error(cmd,
                                       "--state '%s': expected queued, "
                                       "pending, delivering, retrying, "
                                       "delivered, dead_lettered or "
                                       "cancelled",
                                       optarg);
                }
                break;
            case OPT_LIMIT:
                if (parse_u64(optarg, UINT32_MAX, &v) != 0 || v == 0) {
                    return usage_error(cmd, "--limit '%s': expected a count",
                                       optarg);
                }
                *limit = (uint32_t)v;
                break;
            case OPT_CURSOR:
                *cursor = optarg;
                break;
            default:
                return usage_error(cmd, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) {
        return usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    }
    return -1;
}

int cmd_ls(int argc, char **argv, struct globals *g)
{
    enum qraft_state state = QRAFT_STATE_UNSPECIFIED;
    const char *cursor = NULL;
    uint32_t limit = 0;
    int ex = list_options("ls", usage_ls, true, argc, argv, g, &state, &cursor,
                          &limit);
    if (ex != -1) {
        return ex;
    }
    struct qraft_client *c = NULL;
    ex = open_client("ls", g, &c);
    if (ex != EXIT_OK) {
        return ex;
    }
    struct qraft_message_list *l = NULL;
    int rc = qraft_list(c, state, cursor, limit, &l);
    ex = rc != 0 ? report("ls", c, rc) : print_list(l, "ls", g->json);
    qraft_message_list_free(l);
    qraft_client_free(c);
    return ex;
}
