/* qraft: the command-line client, a thin shell over libqraft.
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

#include "qraft.h"

enum exit_code {
    EXIT_OK = 0,
    EXIT_ERROR = 1,       /* refused or failed by the server, bad reply */
    EXIT_USAGE = 2,       /* bad command line */
    EXIT_NOTFOUND = 3,    /* no such message */
    EXIT_UNAVAILABLE = 4, /* no connection, no leader, timed out, unknown */
    EXIT_UNAUTHORIZED = 5 /* wrong or missing token, or it lacks the scope */
};

#ifndef QRAFT_VERSION
#define QRAFT_VERSION "unknown"
#endif

static const char usage_main[] =
    "usage: qraft [--endpoints H:P,...] [--token T] COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  publish URL [OPTIONS]   publish a message; prints its id\n"
    "  get ID                  show a message, its state and history\n"
    "  cancel ID               cancel a message before delivery\n"
    "  ls                      list messages\n"
    "  dlq ls                  list the dead-letter queue\n"
    "  dlq replay ID...        requeue dead letters (or --all, a filter)\n"
    "  dlq rm ID...            delete dead letters\n"
    "  status                  show the state of the node and cluster\n"
    "  keys [--rotate]         show (or rotate) the signing keys\n"
    "  group ...               URL groups: add, rm, delete, get, ls\n"
    "  cluster add ID ADDR --rpc RPC\n"
    "                          add node ID (raft at ADDR) as a voter\n"
    "  cluster remove ID       remove node ID (it shuts down)\n"
    "  cluster transfer [ID]   hand leadership to ID (or the best voter)\n"
    "\n"
    "Run `qraft COMMAND --help` for a command's options. get, ls, dlq ls,\n"
    "status, keys, group get and group ls take --json to print one JSON\n"
    "document.\n"
    "\n"
    "global options (also accepted after the command):\n"
    "  --endpoints H:P,...  nodes to talk to (env QRAFT_ENDPOINTS;\n"
    "                       default 127.0.0.1:7100)\n"
    "  --token T            API token (env QRAFT_TOKEN)\n"
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

static const char usage_publish[] =
    "usage: qraft publish URL [OPTIONS]\n"
    "\n"
    "Publishes a message for URL and prints its id alone on stdout.\n"
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
    "                           REDACTED:<sha256>; delivery gets the values\n";

static const char usage_get[] =
    "usage: qraft get ID [--json]\n"
    "\n"
    "Shows a message: state (queued, pending, delivering, retrying,\n"
    "delivered, dead_lettered, cancelled), attempts, next attempt time (UTC), "
    "last\n"
    "error and history. Exits 3 when the id is unknown.\n";

static const char usage_cancel[] =
    "usage: qraft cancel ID\n"
    "\n"
    "Cancels a message that has not been delivered yet.\n";

static const char usage_ls[] =
    "usage: qraft ls [--state S] [--limit N] [--cursor C] [--json]\n"
    "\n"
    "Lists one page of messages, optionally only those in state S\n"
    "(queued, pending, delivering, retrying, delivered, dead_lettered,\n"
    "cancelled). When there are more, stderr names the --cursor for the\n"
    "next page (JSON: the \"cursor\" field).\n";

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

static const char usage_cluster[] =
    "usage: qraft cluster add ID RAFT_ADDR --rpc RPC_ADDR\n"
    "       qraft cluster remove ID\n"
    "       qraft cluster transfer [ID]\n"
    "\n"
    "Membership changes, one at a time. add: start the new node first with\n"
    "`qraftd --id ID --join --raft RAFT_ADDR --rpc RPC_ADDR ...` and the\n"
    "cluster's --peer-token. The leader checks it first (it answers at\n"
    "RPC_ADDR with the peer token, is node ID with raft at RAFT_ADDR, can\n"
    "apply the cluster's feature level) and changes nothing if not, saying\n"
    "what failed; then it joins as a standby, catches up and becomes a\n"
    "voter (the command returns then). remove: the node leaves the\n"
    "configuration, leaves a tombstone in its data dir and shuts itself\n"
    "down. transfer: hands leadership to ID, or to the most up-to-date\n"
    "voter.\n";

static const char usage_keys[] =
    "usage: qraft keys [--rotate] [--json]\n"
    "\n"
    "Prints the signing keys receivers verify Upstash-Signature with. With\n"
    "--rotate, the next key becomes current and a new next key is made:\n"
    "update receivers with both before rotating again.\n";

static const char usage_group[] =
    "usage: qraft group add GROUP [NAME=]URL...\n"
    "       qraft group rm GROUP NAME|URL...\n"
    "       qraft group delete GROUP\n"
    "       qraft group get GROUP [--json]\n"
    "       qraft group ls [--json]\n"
    "\n"
    "URL groups (QStash \"topics\"): a REST publish to the group's name\n"
    "creates one message per endpoint. add creates the group if needed; an\n"
    "endpoint whose URL is there already is replaced (NAME= names it). rm\n"
    "takes endpoints by URL (http:// or https://) or by name; removing the\n"
    "last one deletes the group.\n";

static const char usage_status[] =
    "usage: qraft status [--local] [--json]\n"
    "\n"
    "Shows the cluster: the leader, and per node its role, liveness,\n"
    "applied index, shards and addresses. A follower knows little of the\n"
    "others (liveness and progress come from heartbeats to the leader), so\n"
    "the leader is asked when known. --local: only the node reached, as it\n"
    "sees itself and the cluster.\n";

/* Options shared by every command. */
struct globals {
    const char *endpoints;
    const char *token;
    bool json;
    bool stale;         /* --stale or QRAFT_STALE=1: stale reads */
    const char *cacert; /* --cacert or QRAFT_CACERT: TLS */
    const char *cert;   /* --cert or QRAFT_CERT */
    const char *key;    /* --key or QRAFT_KEY */
};

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
};

__attribute__((format(printf, 2, 3))) static int usage_error(const char *cmd,
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

static int exit_for(int rc)
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
static int report(const char *cmd, const struct qraft_client *c, int rc)
{
    const char *why = c != NULL ? qraft_client_errmsg(c) : "";
    fprintf(stderr, "qraft: %s: %s\n", cmd,
            why[0] != '\0' ? why : qraft_strerror(rc));
    return exit_for(rc);
}

/* Handles the options every command takes. Returns true if opt was one. */
static bool global_option(int opt, struct globals *g)
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

static int open_client_with(const char *cmd,
                            const struct globals *g,
                            const struct qraft_options *opts,
                            struct qraft_client **out)
{
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

static int open_client(const char *cmd,
                       const struct globals *g,
                       struct qraft_client **out)
{
    return open_client_with(cmd, g, NULL, out);
}

/* ----------------------------------------------------------------------
 * Parsing */

/* Parses "<number><unit>" repeated, units ms s m h d, into milliseconds. */
static int parse_duration_ms(const char *s, uint64_t *out)
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

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
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
static int read_all(FILE *f, char **out, size_t *len_out)
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
static const char *iso_time(uint64_t ms, char *buf, size_t size)
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
static json_t *jstr(const char *s)
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

static json_t *base64(const uint8_t *data, size_t len)
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

static json_t *message_json(const struct qraft_message *m)
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

static json_t *events_json(const struct qraft_message *m)
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

/* Prints j on stdout and frees it. */
static int print_json(json_t *j)
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

static void print_field(const char *name, const char *value)
{
    printf("%-17s %s\n", name, value);
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
    print_field("next attempt:", iso_time(m->next_attempt_ms, t, sizeof t));
    if (m->last_error.category[0] != '\0') {
        snprintf(buf, sizeof buf, "%s, HTTP %" PRId32 ": %s",
                 m->last_error.category, m->last_error.status,
                 m->last_error.message);
        print_field("last error:", buf);
    } else {
        print_field("last error:", "-");
    }
    print_field("created:", iso_time(m->created_ms, t, sizeof t));
    print_field("updated:", iso_time(m->updated_ms, t, sizeof t));
    if (m->not_before_ms != 0) {
        print_field("not before:", iso_time(m->not_before_ms, t, sizeof t));
    }
    if (m->retry_delay[0] != '\0') {
        print_field("retry delay:", m->retry_delay);
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
    snprintf(buf, sizeof buf, "%zu bytes", m->body_len);
    print_field("body:", buf);
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

/* ----------------------------------------------------------------------
 * Commands */

#define GLOBAL_LONG_OPTIONS                                \
    {"endpoints", required_argument, NULL, OPT_ENDPOINTS}, \
        {"token", required_argument, NULL, OPT_TOKEN},     \
        {"stale", no_argument, NULL, OPT_STALE},           \
        {"cacert", required_argument, NULL, OPT_CACERT},   \
        {"cert", required_argument, NULL, OPT_CERT},       \
        {"key", required_argument, NULL, OPT_KEY},         \
    {                                                      \
        "help", no_argument, NULL, OPT_HELP                \
    }

struct publish_args {
    struct qraft_publish p;
    struct qraft_header *headers;
    char *body; /* owned when read from a file or stdin */
};

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

static int cmd_publish(int argc, char **argv, struct globals *g)
{
    static const struct option opts[] = {
        GLOBAL_LONG_OPTIONS,
        {"body", required_argument, NULL, OPT_BODY},
        {"header", required_argument, NULL, OPT_HEADER},
        {"method", required_argument, NULL, OPT_METHOD},
        {"retries", required_argument, NULL, OPT_RETRIES},
        {"retry-delay", required_argument, NULL, OPT_RETRY_DELAY},
        {"delay", required_argument, NULL, OPT_DELAY},
        {"not-before", required_argument, NULL, OPT_NOT_BEFORE},
        {"dedup-id", required_argument, NULL, OPT_DEDUP_ID},
        {"content-dedup", no_argument, NULL, OPT_CONTENT_DEDUP},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"callback", required_argument, NULL, OPT_CALLBACK},
        {"failure-callback", required_argument, NULL, OPT_FAILURE_CALLBACK},
        {"queue", required_argument, NULL, OPT_QUEUE},
        {"redact", required_argument, NULL, OPT_REDACT},
        {"strict", no_argument, NULL, OPT_STRICT},
        {"min-backoff", required_argument, NULL, OPT_MIN_BACKOFF},
        {"max-backoff", required_argument, NULL, OPT_MAX_BACKOFF},
        {"max-doublings", required_argument, NULL, OPT_MAX_DOUBLINGS},
        {"max-retry-duration", required_argument, NULL, OPT_MAX_RETRY_DURATION},
        {NULL, 0, NULL, 0},
    };
    struct publish_args a;
    memset(&a, 0, sizeof a);
    int ex = EXIT_OK;
    int opt;
    uint64_t v;
    while (ex == EXIT_OK &&
           (opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (global_option(opt, g)) {
            continue;
        }
        switch (opt) {
            case OPT_HELP:
                fputs(usage_publish, stdout);
                goto out;
            case OPT_BODY:
                ex = set_body(&a, optarg);
                break;
            case OPT_HEADER:
                if (add_header(&a, optarg) != 0) {
                    ex = usage_error("publish",
                                     "--header '%s': expected 'Name: value'",
                                     optarg);
                }
                break;
            case OPT_METHOD:
                a.p.method = optarg;
                break;
            case OPT_RETRIES:
                if (parse_u64(optarg, UINT32_MAX, &v) != 0) {
                    ex = usage_error(
                        "publish", "--retries '%s': expected a count", optarg);
                }
                a.p.has_retries = true;
                a.p.retries = (uint32_t)v;
                break;
            case OPT_RETRY_DELAY:
                a.p.retry_delay = optarg;
                break;
            case OPT_DELAY:
                if (parse_duration_ms(optarg, &a.p.delay_ms) != 0) {
                    ex = usage_error("publish",
                                     "--delay '%s': expected a duration "
                                     "like 30s, 5m, 1h or 1d10h30m",
                                     optarg);
                }
                break;
            case OPT_NOT_BEFORE:
                if (parse_u64(optarg, UINT64_MAX / 1000, &v) != 0) {
                    ex = usage_error("publish",
                                     "--not-before '%s': expected unix "
                                     "seconds",
                                     optarg);
                }
                a.p.not_before_ms = v * 1000;
                break;
            case OPT_DEDUP_ID:
                a.p.dedup_id = optarg;
                break;
            case OPT_CONTENT_DEDUP:
                a.p.content_dedup = true;
                break;
            case OPT_TIMEOUT:
                if (parse_duration_ms(optarg, &a.p.timeout_ms) != 0) {
                    ex = usage_error("publish",
                                     "--timeout '%s': expected a duration "
                                     "like 30s or 2m",
                                     optarg);
                }
                break;
            case OPT_CALLBACK:
                a.p.callback = optarg;
                break;
            case OPT_FAILURE_CALLBACK:
                a.p.failure_callback = optarg;
                break;
            case OPT_QUEUE:
                a.p.queue = optarg;
                break;
            case OPT_REDACT:
                a.p.redact = optarg;
                break;
            case OPT_STRICT:
                a.p.retry_options.strict = true;
                break;
            case OPT_MIN_BACKOFF:
            case OPT_MAX_BACKOFF:
            case OPT_MAX_RETRY_DURATION:
                if (parse_duration_ms(optarg, &v) != 0) {
                    ex = usage_error("publish",
                                     "%s '%s': expected a duration like 30s, "
                                     "5m or 1h",
                                     argv[optind - 1], optarg);
                } else if (opt == OPT_MIN_BACKOFF) {
                    a.p.retry_options.min_backoff_ms = v;
                } else if (opt == OPT_MAX_BACKOFF) {
                    a.p.retry_options.max_backoff_ms = v;
                } else {
                    a.p.retry_options.max_retry_duration_ms = v;
                }
                break;
            case OPT_MAX_DOUBLINGS:
                if (parse_u64(optarg, UINT32_MAX, &v) != 0) {
                    ex = usage_error("publish",
                                     "--max-doublings '%s': expected a count",
                                     optarg);
                }
                a.p.retry_options.max_doublings = (uint32_t)v;
                break;
            default:
                ex =
                    usage_error("publish", "bad option '%s'", argv[optind - 1]);
                break;
        }
    }
    if (ex != EXIT_OK) {
        goto out;
    }
    if (g->json) {
        ex = usage_error("publish", "--json is for read commands");
        goto out;
    }
    if (argc - optind != 1) {
        ex = usage_error("publish", "expected one URL");
        goto out;
    }
    a.p.url = argv[optind];
    struct qraft_client *c = NULL;
    ex = open_client("publish", g, &c);
    if (ex != EXIT_OK) {
        goto out;
    }
    char id[QRAFT_ID_MAX];
    bool dedup = false;
    int rc = qraft_publish(c, &a.p, id, &dedup);
    if (rc != 0) {
        ex = report("publish", c, rc);
    } else {
        puts(id);
        if (dedup) {
            fprintf(stderr,
                    "qraft: publish: deduplicated: %s already existed\n", id);
        }
    }
    qraft_client_free(c);
out:
    free(a.headers);
    free(a.body);
    return ex;
}

/* Parses the options of a command that takes only global ones (plus --json
 * where `json_ok`), leaving optind at the first operand. Returns -1 to go on,
 * else an exit code. */
static int simple_options(const char *cmd,
                          const char *usage,
                          bool json_ok,
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
    if (g->json && !json_ok) {
        return usage_error(cmd, "--json is for read commands");
    }
    return -1;
}

static int cmd_get(int argc, char **argv, struct globals *g)
{
    int ex = simple_options("get", usage_get, true, argc, argv, g);
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

static int cmd_cancel(int argc, char **argv, struct globals *g)
{
    int ex = simple_options("cancel", usage_cancel, false, argc, argv, g);
    if (ex != -1) {
        return ex;
    }
    if (argc - optind != 1) {
        return usage_error("cancel", "expected one message id");
    }
    struct qraft_client *c = NULL;
    ex = open_client("cancel", g, &c);
    if (ex != EXIT_OK) {
        return ex;
    }
    int rc = qraft_cancel(c, argv[optind]);
    if (rc != 0) {
        ex = report("cancel", c, rc);
    }
    qraft_client_free(c);
    return ex;
}

static int print_list(const struct qraft_message_list *l,
                      const char *cmd,
                      bool json)
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
    /* A dead letter says why it is one: its category, last (get ID has
     * the whole error). */
    bool dlq = strcmp(cmd, "dlq ls") == 0;
    printf("%-30s %-13s %-8s %-24s %s%s\n", "ID", "STATE", "ATTEMPTS",
           "NEXT ATTEMPT (UTC)", "URL", dlq ? " ERROR" : "");
    for (size_t i = 0; i < l->n_messages; i++) {
        const struct qraft_message *m = &l->messages[i];
        printf("%-30s %-13s %-8" PRIu32 " %-24s %s%s%s\n", m->id,
               qraft_state_name(m->state), m->attempts,
               iso_time(m->next_attempt_ms, t, sizeof t), m->url,
               dlq ? " " : "",
               !dlq                                ? ""
               : m->last_error.category[0] != '\0' ? m->last_error.category
                                                   : "-");
    }
    if (l->cursor[0] != '\0') {
        fprintf(stderr, "qraft: %s: more: add --cursor %s\n", cmd, l->cursor);
    }
    return EXIT_OK;
}

/* Options of ls and dlq ls. */
static int list_options(const char *cmd,
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

static int cmd_ls(int argc, char **argv, struct globals *g)
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

static int cmd_dlq(int argc, char **argv, struct globals *g)
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

/* "[NAME=]URL" (add) or "NAME|URL" (rm) into e; an argument that starts
 * with a scheme is a URL as a whole (URLs may hold '='). */
static void parse_endpoint(char *arg, bool add, struct qraft_endpoint *e)
{
    bool url =
        strncmp(arg, "http://", 7) == 0 || strncmp(arg, "https://", 8) == 0;
    char *eq = add && !url ? strchr(arg, '=') : NULL;
    e->name = NULL;
    e->url = NULL;
    if (url) {
        e->url = arg;
    } else if (eq != NULL) {
        *eq = '\0';
        e->name = arg;
        e->url = eq + 1;
    } else if (add) {
        e->url = arg; /* the server says what is wrong with it */
    } else {
        e->name = arg;
    }
}

static json_t *group_json(const struct qraft_group *g)
{
    json_t *o = json_object();
    json_t *eps = json_array();
    for (size_t i = 0; i < g->n_endpoints; i++) {
        json_t *e = json_object();
        if (g->endpoints[i].name[0] != '\0') {
            json_object_set_new(e, "name", jstr(g->endpoints[i].name));
        }
        json_object_set_new(e, "url", jstr(g->endpoints[i].url));
        json_array_append_new(eps, e);
    }
    json_object_set_new(o, "name", jstr(g->name));
    json_object_set_new(o, "created_ms",
                        json_integer((json_int_t)g->created_ms));
    json_object_set_new(o, "updated_ms",
                        json_integer((json_int_t)g->updated_ms));
    json_object_set_new(o, "endpoints", eps);
    return o;
}

static void print_group(const struct qraft_group *g)
{
    printf("%s (%zu endpoint%s)\n", g->name, g->n_endpoints,
           g->n_endpoints == 1 ? "" : "s");
    for (size_t i = 0; i < g->n_endpoints; i++) {
        printf("  %-20s %s\n",
               g->endpoints[i].name[0] != '\0' ? g->endpoints[i].name : "-",
               g->endpoints[i].url);
    }
}

static int cmd_group(int argc, char **argv, struct globals *g)
{
    if (argc < 2) {
        return usage_error("group", "expected add, rm, delete, get or ls");
    }
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        fputs(usage_group, stdout);
        return EXIT_OK;
    }
    bool add = strcmp(sub, "add") == 0;
    bool rm = strcmp(sub, "rm") == 0;
    bool del = strcmp(sub, "delete") == 0;
    bool get = strcmp(sub, "get") == 0;
    bool ls = strcmp(sub, "ls") == 0;
    if (!add && !rm && !del && !get && !ls) {
        return usage_error("group", "unknown subcommand '%s'", sub);
    }
    argc--;
    argv++;
    int ex = simple_options("group", usage_group, get || ls, argc, argv, g);
    if (ex != -1) {
        return ex;
    }
    int n_args = argc - optind;
    if ((ls && n_args != 0) || ((del || get) && n_args != 1) ||
        ((add || rm) && n_args < 2)) {
        return usage_error("group", ls ? "ls takes no argument"
                                    : del || get
                                        ? "expected one group name"
                                        : "expected a group and endpoints");
    }
    struct qraft_client *c = NULL;
    ex = open_client("group", g, &c);
    if (ex != EXIT_OK) {
        return ex;
    }
    int rc = 0;
    struct qraft_group *groups = NULL;
    size_t n_groups = 0;
    if (add || rm) {
        size_t n = (size_t)n_args - 1;
        struct qraft_endpoint *eps = calloc(n, sizeof *eps);
        if (eps == NULL) {
            qraft_client_free(c);
            fprintf(stderr, "qraft: group: out of memory\n");
            return EXIT_ERROR;
        }
        for (size_t i = 0; i < n; i++) {
            parse_endpoint(argv[optind + 1 + (int)i], add, &eps[i]);
        }
        rc = add ? qraft_group_add(c, argv[optind], eps, n)
                 : qraft_group_remove(c, argv[optind], eps, n);
        free(eps);
    } else if (del) {
        rc = qraft_group_delete(c, argv[optind]);
    } else if (get) {
        rc = qraft_group_get(c, argv[optind], &groups);
        n_groups = rc == 0 ? 1 : 0;
    } else {
        rc = qraft_group_list(c, &groups, &n_groups);
    }
    if (rc != 0) {
        ex = report("group", c, rc);
    } else if (get && g->json) {
        ex = print_json(group_json(&groups[0]));
    } else if (ls && g->json) {
        json_t *a = json_array();
        for (size_t i = 0; i < n_groups; i++) {
            json_array_append_new(a, group_json(&groups[i]));
        }
        ex = print_json(a);
    } else {
        for (size_t i = 0; i < n_groups; i++) {
            print_group(&groups[i]);
        }
    }
    qraft_groups_free(groups, n_groups);
    qraft_client_free(c);
    return ex;
}

static json_t *status_json(const struct qraft_status *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "node_id", json_integer((json_int_t)s->node_id));
    json_object_set_new(o, "state", jstr(s->state));
    /* "leader" is the documented key; "leader_id" stays for scripts that
     * used it first. */
    json_object_set_new(o, "leader", json_integer((json_int_t)s->leader_id));
    json_object_set_new(o, "leader_id", json_integer((json_int_t)s->leader_id));
    json_object_set_new(o, "leader_rpc", jstr(s->leader_rpc));
    json_object_set_new(o, "term", json_integer((json_int_t)s->term));
    json_object_set_new(o, "commit_index",
                        json_integer((json_int_t)s->commit_index));
    json_object_set_new(o, "applied_index",
                        json_integer((json_int_t)s->applied_index));
    json_object_set_new(o, "last_index",
                        json_integer((json_int_t)s->last_index));
    json_object_set_new(o, "version", jstr(s->version));
    json_object_set_new(o, "feature_level", json_integer(s->feature_level));
    json_object_set_new(o, "loop_stalls",
                        json_integer((json_int_t)s->loop_stalls));
    json_object_set_new(o, "loop_stall_max_ms",
                        json_integer((json_int_t)s->loop_stall_max_ms));
    json_object_set_new(o, "rss_bytes", json_integer((json_int_t)s->rss_bytes));
    json_object_set_new(o, "store_used_bytes",
                        json_integer((json_int_t)s->store_used_bytes));
    json_object_set_new(o, "store_file_bytes",
                        json_integer((json_int_t)s->store_file_bytes));
    json_object_set_new(o, "problem", jstr(s->problem));
    json_t *counts = json_object();
    for (int i = 1; i < QRAFT_N_STATES; i++) {
        json_object_set_new(counts, qraft_state_name((enum qraft_state)i),
                            json_integer((json_int_t)s->state_counts[i]));
    }
    json_object_set_new(o, "messages", counts);
    json_t *nodes = json_array();
    for (size_t i = 0; i < s->n_nodes; i++) {
        const struct qraft_node_status *n = &s->nodes[i];
        json_t *no = json_object();
        json_object_set_new(no, "id", json_integer((json_int_t)n->id));
        json_object_set_new(no, "role", jstr(n->role));
        json_object_set_new(no, "alive", json_boolean(n->alive));
        json_object_set_new(no, "applied",
                            json_integer((json_int_t)n->applied));
        json_object_set_new(no, "shards", json_integer(n->shards));
        json_object_set_new(no, "raft", jstr(n->raft));
        json_object_set_new(no, "rpc", jstr(n->rpc));
        json_object_set_new(no, "http", jstr(n->http));
        json_object_set_new(no, "version", jstr(n->version));
        json_object_set_new(no, "feature_level",
                            json_integer(n->feature_level));
        json_object_set_new(no, "problem", jstr(n->problem));
        json_array_append_new(nodes, no);
    }
    json_object_set_new(o, "nodes", nodes);
    return o;
}

static void print_status(const struct qraft_status *s)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%" PRIu64, s->node_id);
    print_field("node:", buf);
    print_field("state:", s->state);
    if (s->leader_id != 0) {
        snprintf(buf, sizeof buf, "%" PRIu64 " (%s)", s->leader_id,
                 s->leader_rpc[0] != '\0' ? s->leader_rpc : "address unknown");
    } else {
        snprintf(buf, sizeof buf, "unknown");
    }
    print_field("leader:", buf);
    snprintf(buf, sizeof buf, "%" PRIu64, s->term);
    print_field("term:", buf);
    snprintf(buf, sizeof buf,
             "commit %" PRIu64 ", applied %" PRIu64 ", last %" PRIu64,
             s->commit_index, s->applied_index, s->last_index);
    print_field("log index:", buf);
    if (s->version[0] != '\0') {
        print_field("version:", s->version);
    }
    snprintf(buf, sizeof buf, "%" PRIu32, s->feature_level);
    print_field("feature level:", buf);
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 1; i < QRAFT_N_STATES && off < sizeof buf; i++) {
        int n = snprintf(
            buf + off, sizeof buf - off, "%s%s %" PRIu64, i > 1 ? ", " : "",
            qraft_state_name((enum qraft_state)i), s->state_counts[i]);
        off += n > 0 ? (size_t)n : 0;
    }
    print_field("messages:", buf);
    snprintf(buf, sizeof buf,
             "%" PRIu64 " over 50 ms, the longest %" PRIu64 " ms",
             s->loop_stalls, s->loop_stall_max_ms);
    print_field("loop stalls:", buf);
    snprintf(buf, sizeof buf, "rss %.1f MiB", (double)s->rss_bytes / 1048576.0);
    print_field("memory:", buf);
    snprintf(buf, sizeof buf, "%.1f MiB used, file %.1f MiB",
             (double)s->store_used_bytes / 1048576.0,
             (double)s->store_file_bytes / 1048576.0);
    print_field("store:", buf);
    if (s->problem != NULL && s->problem[0] != '\0') {
        print_field("problem:", s->problem);
    }
    if (s->n_nodes > 0) {
        printf("nodes:\n");
        printf("  %-4s %-8s %-6s %-10s %-6s %-22s %-22s %-22s %s\n", "ID",
               "ROLE", "ALIVE", "APPLIED", "SHARDS", "RAFT", "RPC", "HTTP",
               "VERSION/LEVEL");
    }
    for (size_t i = 0; i < s->n_nodes; i++) {
        const struct qraft_node_status *n = &s->nodes[i];
        char version[64] = "?";
        if (n->version[0] != '\0') {
            snprintf(version, sizeof version, "%s/%" PRIu32, n->version,
                     n->feature_level);
        }
        printf("  %-4" PRIu64 " %-8s %-6s %-10" PRIu64 " %-6" PRIu32
               " %-22s %-22s %-22s %s\n",
               n->id, n->role, n->alive ? "yes" : "no", n->applied, n->shards,
               n->raft, n->rpc, n->http, version);
    }
    for (size_t i = 0; i < s->n_nodes; i++) {
        const struct qraft_node_status *n = &s->nodes[i];
        if (n->problem != NULL && n->problem[0] != '\0') {
            printf("  node %" PRIu64 ": %s\n", n->id, n->problem);
        }
    }
}

static int cmd_cluster(int argc, char **argv, struct globals *g)
{
    if (argc < 2) {
        return usage_error("cluster", "expected add, remove or transfer");
    }
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        fputs(usage_cluster, stdout);
        return EXIT_OK;
    }
    char cmd[32];
    snprintf(cmd, sizeof cmd, "cluster %s", sub);
    static const struct option cluster_opts[] = {
        GLOBAL_LONG_OPTIONS,
        {"rpc", required_argument, NULL, OPT_RPC},
        {NULL, 0, NULL, 0},
    };
    const char *rpc_addr = NULL;
    int opt;
    while ((opt = getopt_long(argc - 1, argv + 1, "", cluster_opts, NULL)) !=
           -1) {
        if (opt == OPT_HELP) {
            fputs(usage_cluster, stdout);
            return EXIT_OK;
        }
        if (opt == OPT_RPC) {
            rpc_addr = optarg;
        } else if (!global_option(opt, g)) {
            return usage_error(cmd, "bad option '%s'", argv[optind]);
        }
    }
    int ex;
    int n_args = argc - 1 - optind;
    char **args = argv + 1 + optind;
    uint64_t id = 0;
    bool add = strcmp(sub, "add") == 0;
    bool remove = strcmp(sub, "remove") == 0;
    bool transfer = strcmp(sub, "transfer") == 0;
    if (!add && !remove && !transfer) {
        return usage_error("cluster", "unknown subcommand '%s'", sub);
    }
    int want = add ? 2 : 1;
    if ((transfer && n_args > 1) || (!transfer && n_args != want)) {
        return usage_error(cmd, "wrong arguments (see qraft cluster --help)");
    }
    if (add != (rpc_addr != NULL)) {
        return usage_error(cmd, add ? "needs --rpc RPC_ADDR, the new node's "
                                      "RPC address (the leader checks the "
                                      "node there first)"
                                    : "--rpc is for add");
    }
    if (n_args > 0 && parse_u64(args[0], 65535, &id) != 0) {
        return usage_error(cmd, "'%s' is not a node id", args[0]);
    }
    /* Adding a node waits for it to catch up: a large state takes long. */
    struct qraft_options opts = {.call_timeout_ms = 10 * 60 * 1000};
    struct qraft_client *c = NULL;
    ex = open_client_with(cmd, g, &opts, &c);
    if (ex != EXIT_OK) {
        return ex;
    }
    int rc = add      ? qraft_cluster_add(c, id, args[1], rpc_addr)
             : remove ? qraft_cluster_remove(c, id)
                      : qraft_cluster_transfer(c, id);
    if (rc != 0) {
        ex = report(cmd, c, rc);
    }
    qraft_client_free(c);
    return ex;
}

static int cmd_keys(int argc, char **argv, struct globals *g)
{
    static const struct option opts[] = {
        GLOBAL_LONG_OPTIONS,
        {"json", no_argument, NULL, OPT_JSON},
        {"rotate", no_argument, NULL, OPT_ROTATE},
        {NULL, 0, NULL, 0},
    };
    bool rotate = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == OPT_HELP) {
            fputs(usage_keys, stdout);
            return EXIT_OK;
        }
        if (opt == OPT_ROTATE) {
            rotate = true;
        } else if (!global_option(opt, g)) {
            return usage_error("keys", "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) {
        return usage_error("keys", "unexpected argument '%s'", argv[optind]);
    }
    struct qraft_client *c = NULL;
    int ex = open_client("keys", g, &c);
    if (ex != EXIT_OK) {
        return ex;
    }
    struct qraft_keys k;
    int rc = qraft_keys(c, rotate, &k);
    if (rc != 0) {
        ex = report("keys", c, rc);
    } else if (g->json) {
        json_t *o = json_object();
        json_object_set_new(o, "current", json_string(k.current));
        json_object_set_new(o, "next", json_string(k.next));
        ex = print_json(o);
    } else {
        printf("QSTASH_CURRENT_SIGNING_KEY=%s\nQSTASH_NEXT_SIGNING_KEY=%s\n",
               k.current, k.next);
    }
    qraft_client_free(c);
    return ex;
}

static int cmd_status(int argc, char **argv, struct globals *g)
{
    static const struct option opts[] = {
        GLOBAL_LONG_OPTIONS,
        {"json", no_argument, NULL, OPT_JSON},
        {"local", no_argument, NULL, OPT_LOCAL},
        {NULL, 0, NULL, 0},
    };
    bool local = false;
    int ex;
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == OPT_HELP) {
            fputs(usage_status, stdout);
            return EXIT_OK;
        }
        if (opt == OPT_LOCAL) {
            local = true;
        } else if (!global_option(opt, g)) {
            return usage_error("status", "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) {
        return usage_error("status", "unexpected argument '%s'", argv[optind]);
    }
    struct qraft_client *c = NULL;
    ex = open_client("status", g, &c);
    if (ex != EXIT_OK) {
        return ex;
    }
    if (local) {
        /* The node's own view, as it is: also while it has no leader. */
        qraft_client_set_stale_reads(c, true);
    }
    struct qraft_status *s = NULL;
    int rc = qraft_status(c, &s);
    /* A follower knows little of the others (liveness and applied indexes
     * come from heartbeats): ask the leader when it is named. */
    if (rc == 0 && !local && strcmp(s->state, "leader") != 0 &&
        s->leader_rpc != NULL && s->leader_rpc[0] != '\0') {
        struct qraft_client *lc = NULL;
        struct qraft_status *ls = NULL;
        const char *token = g->token != NULL ? g->token : getenv("QRAFT_TOKEN");
        if (qraft_client_new(s->leader_rpc, token, NULL, &lc) == 0 &&
            qraft_status(lc, &ls) == 0) {
            qraft_status_free(s);
            s = ls;
        }
        qraft_client_free(lc);
    }
    if (rc != 0) {
        ex = report("status", c, rc);
    } else if (g->json) {
        ex = print_json(status_json(s));
    } else {
        print_status(s);
    }
    qraft_status_free(s);
    qraft_client_free(c);
    return ex;
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
        {"publish", cmd_publish}, {"get", cmd_get},
        {"cancel", cmd_cancel},   {"ls", cmd_ls},
        {"dlq", cmd_dlq},         {"status", cmd_status},
        {"keys", cmd_keys},       {"cluster", cmd_cluster},
        {"group", cmd_group},
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
