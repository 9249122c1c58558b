/* qraft: the command-line client, a thin shell over libqraft: main, the
 * global options, the command table, and the helpers every command shares
 * (opening a client, parsing, output, exit codes).
 *
 * Every command makes one library call (or a few for bulk ids) and maps the
 * outcome to one of the documented exit codes; results go to stdout, errors
 * to stderr as one line "qraft: <command>: <why>". JSON output is built with
 * jansson, never by hand. */
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
#include <unistd.h>

#include "cli.h"

#ifndef QRAFT_VERSION
#define QRAFT_VERSION "unknown"
#endif

static const char usage_main[] =
    "usage: qraft [--endpoints H:P,...] [--token T] COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  publish URL [OPTIONS]   publish a message; prints its id\n"
    "  publish --group NAME    publish to every endpoint of a URL group\n"
    "  get ID                  show a message, its state and history\n"
    "  cancel ID | FILTERS     cancel a message (or every match) before\n"
    "                          delivery\n"
    "  logs [FILTERS]          the message log; --follow tails it\n"
    "  ls                      list messages\n"
    "  dlq ls                  list the dead-letter queue\n"
    "  dlq replay ID...        requeue dead letters (or --all, a filter)\n"
    "  dlq rm ID...            delete dead letters (or a filter)\n"
    "  status                  show the state of the node and cluster\n"
    "  keys [--rotate]         show (or rotate) the signing keys\n"
    "  group ...               URL groups: add, rm, delete, get, ls\n"
    "  queue ...               queues: ls, get, set, pause, resume, rm\n"
    "  schedule ...            cron schedules: ls, get, create, pause,\n"
    "                          resume, rm\n"
    "  flow ...                flow control keys: ls, get, pause, resume,\n"
    "                          pin, unpin, reset\n"
    "  workflow ...            workflow runs: ls, get, cancel, dlq resume,\n"
    "                          dlq restart\n"
    "  cluster add ID ADDR --rpc RPC\n"
    "                          add node ID (raft at ADDR) as a voter\n"
    "  cluster remove ID       remove node ID (it shuts down)\n"
    "  cluster transfer [ID]   hand leadership to ID (or the best voter)\n"
    "  context ls|use|show     named clusters (endpoints, token, TLS)\n"
    "  completion bash|zsh     print a shell completion script\n"
    "\n"
    "Run `qraft COMMAND --help` for a command's options. Every command but\n"
    "context and completion takes --json to print one JSON document,\n"
    "writes too.\n"
    "\n"
    "global options (also accepted after the command):\n"
    "  --endpoints H:P,...  nodes to talk to (env QRAFT_ENDPOINTS;\n"
    "                       default 127.0.0.1:7100)\n"
    "  --token T            API token (env QRAFT_TOKEN)\n"
    "  --context NAME       take endpoints, token and TLS files from this\n"
    "                       context (env QRAFT_CONTEXT; default: the\n"
    "                       current one, see qraft context --help)\n"
    "  --stale              reads answer from the node asked as it is, "
    "without\n"
    "                       confirming with the leader (env QRAFT_STALE=1):\n"
    "                       faster, answers while the leader is unreachable,\n"
    "                       may miss recent writes. Default: linearizable\n"
    "  --cacert PATH        speak TLS to the nodes, verifying their\n"
    "                       certificates against this CA (PEM; env\n"
    "                       QRAFT_CACERT); a certificate must name the\n"
    "                       endpoint's host or IP address\n"
    "  --cert PATH, --key PATH  a client certificate and its key (PEM; env\n"
    "                       QRAFT_CERT, QRAFT_KEY), presented when asked\n"
    "  --help, --version\n"
    "\n"
    "exit codes:\n"
    "  0  success\n"
    "  1  the server refused or failed the request (invalid, too large,\n"
    "     conflict, internal error, protocol error), or TLS failed (a\n"
    "     certificate that does not verify, a port that does or does not\n"
    "     speak TLS)\n"
    "  2  usage error\n"
    "  3  message not found\n"
    "  4  cluster unavailable: cannot connect, no leader, timed out, or\n"
    "     the connection was lost and the outcome is unknown\n"
    "  5  unauthorized: wrong or missing token\n"
    "\n"
    "durations: <number><unit> repeated, units ms s m h d (90s, 1d10h30m)\n";

bool is_help(const char *arg)
{
    return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

__attribute__((format(printf, 2, 3))) int usage_error(const char *cmd,
                                                      const char *fmt,
                                                      ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (strcmp(cmd, "qraft") == 0) {
        fprintf(stderr, "qraft: %s (see qraft --help)\n", msg);
    } else {
        fprintf(stderr, "qraft: %s: %s (see qraft %s --help)\n", cmd, msg, cmd);
    }
    return EXIT_USAGE;
}

int exit_for(int rc)
{
    switch (rc) {
        case 0:
            return EXIT_OK;
        case QRAFT_ENOTFOUND:
            return EXIT_NOTFOUND;
        case QRAFT_EUNAUTHORIZED:
        case QRAFT_EFORBIDDEN:
            return EXIT_UNAUTHORIZED;
        case QRAFT_EUNAVAILABLE:
        case QRAFT_ENOTLEADER:
        case QRAFT_ECONNECT:
        case QRAFT_ETIMEDOUT:
        case QRAFT_EUNKNOWN:
            return EXIT_UNAVAILABLE;
        default:
            return EXIT_ERROR;
    }
}

/* Prints "qraft: cmd: why" and returns the exit code for rc. */
int report(const char *cmd, const struct qraft_client *c, int rc)
{
    const char *why = c != NULL ? qraft_client_errmsg(c) : "";
    fprintf(stderr, "qraft: %s: %s\n", cmd,
            why[0] != '\0' ? why : qraft_strerror(rc));
    return exit_for(rc);
}

/* Handles the options every command takes. Returns true if opt was one. */
bool global_option(int opt, struct globals *g)
{
    switch (opt) {
        case OPT_ENDPOINTS:
            g->endpoints = optarg;
            return true;
        case OPT_TOKEN:
            g->token = optarg;
            return true;
        case OPT_JSON:
            g->json = true;
            return true;
        case OPT_STALE:
            g->stale = true;
            return true;
        case OPT_CACERT:
            g->cacert = optarg;
            return true;
        case OPT_CERT:
            g->cert = optarg;
            return true;
        case OPT_KEY:
            g->key = optarg;
            return true;
        case OPT_CONTEXT:
            g->context = optarg;
            return true;
        default:
            return false;
    }
}

/* The flag's value, else the environment's (NULL when neither or ""). */
static const char *flag_or_env(const char *flag, const char *env)
{
    const char *v = flag != NULL ? flag : getenv(env);
    return v != NULL && v[0] != '\0' ? v : NULL;
}

int open_client_with(const char *cmd,
                     const struct globals *flags,
                     const struct qraft_options *opts,
                     struct qraft_client **out)
{
    struct globals settings = *flags;
    const struct globals *g = &settings;
    int ex = context_settings(cmd, &settings);
    if (ex != EXIT_OK) {
        return ex;
    }
    const char *endpoints = g->endpoints;
    if (endpoints == NULL) {
        endpoints = getenv("QRAFT_ENDPOINTS");
    }
    if (endpoints == NULL || endpoints[0] == '\0') {
        endpoints = QRAFT_DEFAULT_ENDPOINTS;
    }
    const char *token = g->token != NULL ? g->token : getenv("QRAFT_TOKEN");
    struct qraft_options o = {0};
    if (opts != NULL) {
        o = *opts;
    }
    o.ca_file = flag_or_env(g->cacert, "QRAFT_CACERT");
    o.cert_file = flag_or_env(g->cert, "QRAFT_CERT");
    o.key_file = flag_or_env(g->key, "QRAFT_KEY");
    if ((o.cert_file != NULL) != (o.key_file != NULL)) {
        return usage_error(cmd, "--cert and --key go together");
    }
    int rc = qraft_client_new(endpoints, token, &o, out);
    if (rc == QRAFT_ETLS) {
        fprintf(stderr,
                "qraft: %s: TLS: cannot load %s%s%s%s%s (PEM files: the CA "
                "that signed the nodes' certificates; a certificate and its "
                "key)\n",
                cmd, o.ca_file != NULL ? "--cacert " : "",
                o.ca_file != NULL ? o.ca_file : "",
                o.cert_file != NULL ? " --cert " : "",
                o.cert_file != NULL ? o.cert_file : "",
                o.cert_file != NULL ? " --key ..." : "");
        return EXIT_ERROR;
    }
    const char *stale = getenv("QRAFT_STALE");
    if (rc == 0 && (g->stale || (stale != NULL && strcmp(stale, "1") == 0))) {
        qraft_client_set_stale_reads(*out, true);
    }
    if (rc == QRAFT_EINVAL) {
        return usage_error(cmd, "bad endpoints '%s': expected host:port,...",
                           endpoints);
    }
    if (rc != 0) {
        fprintf(stderr, "qraft: %s: %s\n", cmd, qraft_strerror(rc));
        return EXIT_ERROR;
    }
    return EXIT_OK;
}

int open_client(const char *cmd,
                const struct globals *g,
                struct qraft_client **out)
{
    return open_client_with(cmd, g, NULL, out);
}

/* ----------------------------------------------------------------------
 * Parsing */

/* Parses "<number><unit>" repeated, units ms s m h d, into milliseconds. */
int parse_duration_ms(const char *s, uint64_t *out)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {
        {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000},
    };
    uint64_t total = 0;
    if (*s == '\0') {
        return -1;
    }
    while (*s != '\0') {
        if (*s < '0' || *s > '9') {
            return -1;
        }
        uint64_t n = 0;
        while (*s >= '0' && *s <= '9') {
            if (n > (UINT64_MAX - 9) / 10) {
                return -1;
            }
            n = n * 10 + (uint64_t)(*s++ - '0');
        }
        size_t u = 0;
        size_t n_units = sizeof units / sizeof units[0];
        while (u < n_units &&
               strncmp(s, units[u].unit, strlen(units[u].unit)) != 0) {
            u++;
        }
        if (u == n_units) {
            return -1;
        }
        s += strlen(units[u].unit);
        if (n > UINT64_MAX / units[u].ms ||
            total > UINT64_MAX - n * units[u].ms) {
            return -1;
        }
        total += n * units[u].ms;
    }
    *out = total;
    return 0;
}

int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    if (*s < '0' || *s > '9') {
        return -1;
    }
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max) {
        return -1;
    }
    *out = v;
    return 0;
}

/* Reads all of f into a new buffer (free with free). */
int read_all(FILE *f, char **out, size_t *len_out)
{
    size_t cap = 4096;
    size_t len = 0;
    char *buf = malloc(cap);
    if (buf == NULL) {
        return -1;
    }
    for (;;) {
        if (len == cap) {
            char *bigger = realloc(buf, cap * 2);
            if (bigger == NULL) {
                free(buf);
                return -1;
            }
            buf = bigger;
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            break;
        }
    }
    if (ferror(f)) {
        free(buf);
        return -1;
    }
    *out = buf;
    *len_out = len;
    return 0;
}

/* ----------------------------------------------------------------------
 * Output helpers */

/* ISO-8601 UTC with milliseconds, or "-" for 0. */
const char *iso_time(uint64_t ms, char *buf, size_t size)
{
    if (ms == 0) {
        snprintf(buf, size, "-");
        return buf;
    }
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&secs, &tm) == NULL) {
        snprintf(buf, size, "%" PRIu64 " ms", ms);
        return buf;
    }
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, size, "%s.%03uZ", date, (unsigned)(ms % 1000));
    return buf;
}

/* A JSON string for s; bytes that are not UTF-8 become '?'. */
json_t *jstr(const char *s)
{
    json_t *j = json_string(s);
    if (j != NULL) {
        return j;
    }
    char *copy = strdup(s);
    if (copy == NULL) {
        return NULL;
    }
    for (char *p = copy; *p != '\0'; p++) {
        if ((unsigned char)*p >= 0x80) {
            *p = '?';
        }
    }
    j = json_string(copy);
    free(copy);
    return j;
}

json_t *base64(const uint8_t *data, size_t len)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (out == NULL) {
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < len) {
            v |= (uint32_t)data[i + 1] << 8;
        }
        if (i + 2 < len) {
            v |= data[i + 2];
        }
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < len ? tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? tab[v & 63] : '=';
    }
    out[o] = '\0';
    json_t *j = json_string(out);
    free(out);
    return j;
}

/* Prints j on stdout and frees it. */
int print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (s == NULL) {
        fprintf(stderr, "qraft: out of memory for JSON\n");
        return EXIT_ERROR;
    }
    puts(s);
    free(s);
    return EXIT_OK;
}

void print_field(const char *name, const char *value)
{
    printf("%-17s %s\n", name, value);
}

/* Parses the options of a command that takes only global ones and --json,
 * leaving optind at the first operand. Returns -1 to go on, else an exit
 * code. */
int simple_options(const char *cmd,
                   const char *usage,
                   int argc,
                   char **argv,
                   struct globals *g)
{
    static const struct option opts[] = {
        GLOBAL_LONG_OPTIONS,
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == OPT_HELP) {
            fputs(usage, stdout);
            return EXIT_OK;
        }
        if (!global_option(opt, g)) {
            return usage_error(cmd, "bad option '%s'", argv[optind - 1]);
        }
    }
    return -1;
}

/* ----------------------------------------------------------------------
 * Bulk output */

void bulk_out_init(struct bulk_out *o, const char *cmd, bool json)
{
    memset(o, 0, sizeof *o);
    o->cmd = cmd;
    o->json = json;
    o->done = json ? json_array() : NULL;
    o->failed = json ? json_array() : NULL;
    o->ex = EXIT_OK;
}

void bulk_out_item(struct bulk_out *o,
                   const char *id,
                   const struct qraft_item_result *r)
{
    if (r->rc == 0) {
        o->n_done++;
        if (o->json) {
            json_array_append_new(o->done, jstr(id));
        } else {
            printf("%s\n", id);
        }
        return;
    }
    o->n_failed++;
    if (o->json) {
        json_t *f = json_object();
        json_object_set_new(f, "id", jstr(id));
        json_object_set_new(f, "error", jstr(r->error));
        json_array_append_new(o->failed, f);
    }
    fprintf(stderr, "qraft: %s: %s: %s\n", o->cmd, id, r->error);
    if (o->ex == EXIT_OK) {
        o->ex = exit_for(r->rc);
    }
}

void bulk_out_progress(struct bulk_out *o, const char *verb, size_t total)
{
    /* Only where it shows alone: stderr a terminal, the ids elsewhere. */
    if (!isatty(STDERR_FILENO) || (!o->json && isatty(STDOUT_FILENO))) {
        return;
    }
    if (total > 0) {
        fprintf(stderr, "\rqraft: %s: %s %zu of %zu...", o->cmd, verb,
                o->n_done, total);
    } else {
        fprintf(stderr, "\rqraft: %s: %s %zu...", o->cmd, verb, o->n_done);
    }
    o->progress_shown = true;
}

/* Prints the count (and the JSON document); returns the exit code. */
int bulk_out_end(struct bulk_out *o, const char *verb, const char *noun)
{
    if (o->progress_shown) {
        fputs("\r\033[K", stderr); /* the progress line goes */
    }
    fprintf(stderr, "qraft: %s: %s %zu %s%s%s\n", o->cmd, verb, o->n_done, noun,
            o->n_done == 1 ? "" : "s", o->n_failed > 0 ? "; some failed" : "");
    if (!o->json) {
        return o->ex;
    }
    json_t *doc = json_object();
    json_object_set_new(doc, "count", json_integer((json_int_t)o->n_done));
    json_object_set_new(doc, verb, o->done);
    json_object_set_new(doc, "failed", o->failed);
    int jex = print_json(doc);
    return o->ex != EXIT_OK ? o->ex : jex;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        GLOBAL_LONG_OPTIONS,
        {"json", no_argument, NULL, OPT_JSON},
        {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    struct globals g = {0};
    int opt;
    opterr = 0; /* our own messages, with the command's name */
    /* "+": stop at the command; its own parser takes the rest. */
    while ((opt = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        if (global_option(opt, &g)) {
            continue;
        }
        switch (opt) {
            case OPT_HELP:
            case 'h':
                fputs(usage_main, stdout);
                return EXIT_OK;
            case OPT_VERSION:
                printf("qraft %s\n", QRAFT_VERSION);
                return EXIT_OK;
            default:
                return usage_error("qraft", "bad option '%s'",
                                   argv[optind - 1]);
        }
    }
    if (optind >= argc) {
        fputs(usage_main, stderr);
        return EXIT_USAGE;
    }
    static const struct {
        const char *name;
        int (*run)(int argc, char **argv, struct globals *g);
    } commands[] = {
        {"publish", cmd_publish},   {"get", cmd_get},
        {"cancel", cmd_cancel},     {"ls", cmd_ls},
        {"dlq", cmd_dlq},           {"status", cmd_status},
        {"keys", cmd_keys},         {"cluster", cmd_cluster},
        {"group", cmd_group},       {"queue", cmd_queue},
        {"schedule", cmd_schedule}, {"logs", cmd_logs},
        {"flow", cmd_flow},         {"workflow", cmd_workflow},
        {"context", cmd_context},   {"completion", cmd_completion},
    };
    const char *name = argv[optind];
    if (strcmp(name, "help") == 0) {
        fputs(usage_main, stdout);
        return EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(name, commands[i].name) == 0) {
            int sub_argc = argc - optind;
            char **sub_argv = argv + optind;
            optind = 0; /* glibc: start the next getopt afresh */
            return commands[i].run(sub_argc, sub_argv, &g);
        }
    }
    return usage_error("qraft", "unknown command '%s'", name);
}
