/* qraft group, status, cluster and keys: URL groups, the cluster's state,
 * membership changes and signing keys (cli.h). */
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

static const char usage_cluster[] =
    "usage: qraft cluster add ID RAFT_ADDR --rpc RPC_ADDR [--json]\n"
    "       qraft cluster remove ID [--json]\n"
    "       qraft cluster transfer [ID] [--json]\n"
    "\n"
    "Membership changes, one at a time. add: start the new node first with\n"
    "`qraftd --id ID --join --raft RAFT_ADDR --rpc RPC_ADDR ...` and the\n"
    "cluster's --peer-token. The leader checks it first (it answers at\n"
    "RPC_ADDR with the peer token, is node ID with raft at RAFT_ADDR, can\n"
    "apply the cluster's feature level) and changes nothing if not, saying\n"
    "what failed; then it joins as a standby, catches up and becomes a\n"
    "voter (the command returns then). add is safe to run again: an add\n"
    "cut short (exit 4, or the node left a standby) goes on from where it\n"
    "stopped, and a node already a voter at RAFT_ADDR is a no-op. remove:\n"
    "the node leaves the configuration, leaves a tombstone in its data dir\n"
    "and shuts itself down. transfer: hands leadership to ID, or to the\n"
    "most up-to-date voter. --json prints {\"node\": ID, \"done\": ...}\n"
    "once it is done (\"added\", \"removed\", \"transferred\" or\n"
    "\"already the leader\"; no node for a transfer to the best voter).\n"
    "\n"
    "example:\n"
    "  qraft cluster add 4 10.0.0.4:7000 --rpc 10.0.0.4:7100\n"
    "  qraft cluster transfer 2\n";

static const char usage_keys[] =
    "usage: qraft keys [--rotate] [--json]\n"
    "\n"
    "Prints the signing keys receivers verify Upstash-Signature with. With\n"
    "--rotate, the next key becomes current and a new next key is made:\n"
    "update receivers with both before rotating again.\n"
    "\n"
    "example:\n"
    "  qraft keys --json\n";

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
    "last one deletes the group.\n"
    "\n"
    "example:\n"
    "  qraft group add billing eu=https://eu.example.com/hook \\\n"
    "      https://us.example.com/hook\n"
    "  qraft publish --group billing --body hi\n";

static const char usage_status[] =
    "usage: qraft status [--local] [--json]\n"
    "\n"
    "Shows the cluster: the leader, and per node its role, liveness,\n"
    "applied index, shards and addresses. A follower knows little of the\n"
    "others (liveness and progress come from heartbeats to the leader), so\n"
    "the leader is asked when known. --local: only the node reached, as it\n"
    "sees itself and the cluster.\n"
    "\n"
    "example:\n"
    "  qraft status --endpoints 10.0.0.1:7100,10.0.0.2:7100\n";

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

int cmd_group(int argc, char **argv, struct globals *g)
{
    if (argc < 2) {
        return usage_error("group", "expected add, rm, delete, get or ls");
    }
    const char *sub = argv[1];
    if (is_help(sub)) {
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
    int ex = simple_options("group", usage_group, argc, argv, g);
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
    } else if (g->json) {
        json_t *o = json_object();
        json_object_set_new(o, "group", jstr(argv[optind]));
        json_object_set_new(o, "done",
                            json_string(add  ? "added"
                                        : rm ? "removed"
                                             : "deleted"));
        ex = print_json(o);
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

/* What a membership change did: nothing on stdout, or with --json
 * {"node": id (none when 0), "done": done}. */
static int print_member_done(const struct globals *g,
                             uint64_t id,
                             const char *done)
{
    if (!g->json) {
        return EXIT_OK;
    }
    json_t *o = json_object();
    if (id != 0) {
        json_object_set_new(o, "node", json_integer((json_int_t)id));
    }
    json_object_set_new(o, "done", json_string(done));
    return print_json(o);
}

/* cluster transfer: says so when id already leads or is not a node, and
 * when a lone voter has nobody to hand leadership to. */
static int cluster_transfer(struct qraft_client *c,
                            uint64_t id,
                            const struct globals *g)
{
    const char *cmd = "cluster transfer";
    struct qraft_status *s = NULL;
    size_t n_voters = 0;
    bool known = false;
    if (qraft_status(c, &s) == 0) {
        for (size_t i = 0; i < s->n_nodes; i++) {
            n_voters += strcmp(s->nodes[i].role, "voter") == 0;
            known = known || s->nodes[i].id == id;
        }
        if (id != 0 && id == s->leader_id) {
            if (!g->json) {
                printf("node %" PRIu64 " is already the leader\n", id);
            }
            qraft_status_free(s);
            return print_member_done(g, id, "already the leader");
        }
        if (id != 0 && s->n_nodes > 0 && !known) {
            char ids[256] = "";
            size_t off = 0;
            for (size_t i = 0; i < s->n_nodes && off < sizeof ids; i++) {
                int k = snprintf(ids + off, sizeof ids - off, "%s%" PRIu64,
                                 i > 0 ? ", " : "", s->nodes[i].id);
                off += k > 0 ? (size_t)k : 0;
            }
            fprintf(stderr,
                    "qraft: %s: there is no node %" PRIu64
                    " in the cluster (its nodes: %s)\n",
                    cmd, id, ids);
            qraft_status_free(s);
            return EXIT_ERROR;
        }
    }
    int rc = qraft_cluster_transfer(c, id);
    int ex = EXIT_OK;
    if (rc != 0 && id == 0 && s != NULL && n_voters <= 1) {
        fprintf(stderr,
                "qraft: %s: node %" PRIu64
                " is the only voter: there is no other node to hand "
                "leadership to\n",
                cmd, s->leader_id);
        ex = EXIT_ERROR;
    } else if (rc != 0) {
        ex = report(cmd, c, rc);
    } else {
        ex = print_member_done(g, id, "transferred");
    }
    qraft_status_free(s);
    return ex;
}

int cmd_cluster(int argc, char **argv, struct globals *g)
{
    if (argc < 2) {
        return usage_error("cluster", "expected add, remove or transfer");
    }
    const char *sub = argv[1];
    if (is_help(sub)) {
        fputs(usage_cluster, stdout);
        return EXIT_OK;
    }
    char cmd[32];
    snprintf(cmd, sizeof cmd, "cluster %s", sub);
    static const struct option cluster_opts[] = {
        GLOBAL_LONG_OPTIONS,
        {"rpc", required_argument, NULL, OPT_RPC},
        {"json", no_argument, NULL, OPT_JSON},
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
    bool remove = strcmp(sub, "remove") == 0 || strcmp(sub, "rm") == 0;
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
    if (transfer) {
        ex = cluster_transfer(c, id, g);
        qraft_client_free(c);
        return ex;
    }
    int rc = add ? qraft_cluster_add(c, id, args[1], rpc_addr)
                 : qraft_cluster_remove(c, id);
    if (rc != 0) {
        ex = report(cmd, c, rc);
        if (add && ex == EXIT_UNAVAILABLE) {
            fprintf(stderr,
                    "qraft: %s: the outcome is unknown (node %" PRIu64
                    " may be left a spare or a standby): run the same "
                    "command again, it goes on from where it stopped\n",
                    cmd, id);
        }
    } else {
        ex = print_member_done(g, id, add ? "added" : "removed");
    }
    qraft_client_free(c);
    return ex;
}

int cmd_keys(int argc, char **argv, struct globals *g)
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

int cmd_status(int argc, char **argv, struct globals *g)
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
