/* Contexts and shell completion for the qraft CLI (cli.h).
 *
 * A context names a cluster: its endpoints, a token file, TLS files. They
 * live in $XDG_CONFIG_HOME/qraft/contexts.yaml (default
 * ~/.config/qraft/contexts.yaml), read with libyaml: a mapping of context
 * names, each to its settings endpoints (a string or a list), token_file,
 * cacert, cert, key ("~/" is the home directory); anything else is an
 * error naming the line. The current context's name is in .../qraft/current
 * (`qraft context use NAME`); --context NAME or QRAFT_CONTEXT choose another
 * for one command. A flag or its environment variable always wins over the
 * context. The context is read once per process, when a client opens. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "cli.h"

#define PATH_BYTES 4096
#define LINE_BYTES 4096

static const char usage_context[] =
    "usage: qraft context ls\n"
    "       qraft context use NAME\n"
    "       qraft context show [NAME]\n"
    "\n"
    "Contexts name clusters, like kubectl's or nats': one per name in\n"
    "$XDG_CONFIG_HOME/qraft/contexts.yaml (~/.config/qraft/contexts.yaml):\n"
    "\n"
    "  prod:\n"
    "    endpoints: [10.0.0.1:7100, 10.0.0.2:7100]\n"
    "    token_file: ~/.config/qraft/prod.token\n"
    "    cacert: /etc/qraft/ca.pem\n"
    "    # cert: ..., key: ...: a client certificate and its key\n"
    "  staging:\n"
    "    endpoints: 10.1.0.1:7100\n"
    "\n"
    "use makes NAME the current context (kept in .../qraft/current); every\n"
    "command then uses its settings unless --context NAME (env\n"
    "QRAFT_CONTEXT) picks another. Flags and their environment variables\n"
    "(--endpoints, QRAFT_ENDPOINTS, ...) win over the context. show prints\n"
    "a context's settings (the token file's path, never the token).\n"
    "\n"
    "example:\n"
    "  qraft context use prod\n"
    "  qraft --context staging dlq ls\n";

static const char usage_completion[] =
    "usage: qraft completion bash|zsh\n"
    "\n"
    "Prints a completion script for the shell: commands, subcommands and\n"
    "each command's options (read from its --help as you type).\n"
    "\n"
    "example:\n"
    "  qraft completion bash > /etc/bash_completion.d/qraft\n"
    "  source <(qraft completion zsh)    # in ~/.zshrc\n";

struct context {
    char name[256];
    char endpoints[LINE_BYTES];
    char token_file[PATH_BYTES];
    char cacert[PATH_BYTES];
    char cert[PATH_BYTES];
    char key[PATH_BYTES];
    char token[LINE_BYTES]; /* read from token_file */
};

/* $XDG_CONFIG_HOME/qraft/<file>, else ~/.config/qraft/<file>. */
static int config_path(const char *file, char *buf, size_t size)
{
    const char *xdg = getenv("XDG_CONFIG_HOME");
    const char *home = getenv("HOME");
    int n;
    if (xdg != NULL && xdg[0] != '\0') {
        n = snprintf(buf, size, "%s/qraft/%s", xdg, file);
    } else if (home != NULL && home[0] != '\0') {
        n = snprintf(buf, size, "%s/.config/qraft/%s", home, file);
    } else {
        return -1;
    }
    return n > 0 && (size_t)n < size ? 0 : -1;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t') {
        s++;
    }
    size_t n = strlen(s);
    while (n > 0 && strchr(" \t\r\n", s[n - 1]) != NULL) {
        s[--n] = '\0';
    }
    return s;
}

/* value with a leading "~/" made the home directory. */
static void set_path(char *dst, size_t size, const char *value)
{
    const char *home = getenv("HOME");
    if (strncmp(value, "~/", 2) == 0 && home != NULL) {
        snprintf(dst, size, "%s/%s", home, value + 2);
    } else {
        snprintf(dst, size, "%s", value);
    }
}

/* One setting of a context into c; false for a key that is none. */
static bool set_setting(struct context *c, const char *key, const char *value)
{
    if (strcmp(key, "endpoints") == 0) {
        snprintf(c->endpoints, sizeof c->endpoints, "%s", value);
    } else if (strcmp(key, "token_file") == 0) {
        set_path(c->token_file, sizeof c->token_file, value);
    } else if (strcmp(key, "cacert") == 0) {
        set_path(c->cacert, sizeof c->cacert, value);
    } else if (strcmp(key, "cert") == 0) {
        set_path(c->cert, sizeof c->cert, value);
    } else if (strcmp(key, "key") == 0) {
        set_path(c->key, sizeof c->key, value);
    } else {
        return false; /* an unknown key is a mistake, not a no-op */
    }
    return true;
}

#define WHY_BYTES 160

/* Where the reader of contexts.yaml is: a mapping of context names, each
 * to a mapping of settings (or nothing), a setting's value a scalar or,
 * for endpoints, a list of scalars. */
enum ctx_at { AT_TOP, AT_NAMES, AT_CONTEXT, AT_KEYS, AT_VALUE, AT_LIST };

struct ctx_reader {
    enum ctx_at at;
    const char *want;
    struct context *out;
    bool in_want;
    bool *found;
    void (*on_section)(const char *name, void *arg);
    void *arg;
    char key[32];
    char list[LINE_BYTES];
    char *why;
};

/* A scalar that says nothing: `name:` alone, `~` or `null`. */
static bool is_null(const yaml_event_t *ev)
{
    const char *v = (const char *)ev->data.scalar.value;
    return ev->data.scalar.plain_implicit &&
           (v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0);
}

/* Takes one event; returns 0, or 1 with r->why set when it does not
 * belong there. */
static int take_event(struct ctx_reader *r, const yaml_event_t *ev)
{
    const char *v = ev->type == YAML_SCALAR_EVENT
                        ? (const char *)ev->data.scalar.value
                        : "";
    switch (r->at) {
        case AT_TOP:
            if (ev->type == YAML_MAPPING_START_EVENT) {
                r->at = AT_NAMES;
                return 0;
            }
            if (ev->type == YAML_STREAM_START_EVENT ||
                ev->type == YAML_DOCUMENT_START_EVENT ||
                ev->type == YAML_DOCUMENT_END_EVENT ||
                ev->type == YAML_STREAM_END_EVENT ||
                (ev->type == YAML_SCALAR_EVENT && is_null(ev))) {
                return 0;
            }
            snprintf(r->why, WHY_BYTES,
                     "expected context names, each with "
                     "its settings");
            return 1;
        case AT_NAMES:
            if (ev->type == YAML_MAPPING_END_EVENT) {
                r->at = AT_TOP;
                return 0;
            }
            if (ev->type != YAML_SCALAR_EVENT || v[0] == '\0') {
                snprintf(r->why, WHY_BYTES, "expected a context name");
                return 1;
            }
            r->in_want = r->want != NULL && strcmp(v, r->want) == 0;
            if (r->in_want) {
                *r->found = true;
                snprintf(r->out->name, sizeof r->out->name, "%s", v);
            }
            if (r->on_section != NULL) {
                r->on_section(v, r->arg);
            }
            r->at = AT_CONTEXT;
            return 0;
        case AT_CONTEXT:
            if (ev->type == YAML_MAPPING_START_EVENT) {
                r->at = AT_KEYS;
                return 0;
            }
            if (ev->type == YAML_SCALAR_EVENT && is_null(ev)) {
                r->at = AT_NAMES; /* a context with no settings */
                return 0;
            }
            snprintf(r->why, WHY_BYTES, "expected the context's settings");
            return 1;
        case AT_KEYS:
            if (ev->type == YAML_MAPPING_END_EVENT) {
                r->at = AT_NAMES;
                return 0;
            }
            struct context scratch; /* the key checked, the value not kept */
            if (ev->type != YAML_SCALAR_EVENT ||
                !set_setting(&scratch, v, "")) {
                snprintf(r->why, WHY_BYTES,
                         "unknown setting '%.32s': expected endpoints, "
                         "token_file, cacert, cert or key",
                         v);
                return 1;
            }
            snprintf(r->key, sizeof r->key, "%s", v);
            r->at = AT_VALUE;
            return 0;
        case AT_VALUE:
            if (ev->type == YAML_SEQUENCE_START_EVENT &&
                strcmp(r->key, "endpoints") == 0) {
                r->list[0] = '\0';
                r->at = AT_LIST;
                return 0;
            }
            if (ev->type != YAML_SCALAR_EVENT) {
                snprintf(r->why, WHY_BYTES, "%s: expected a value%s", r->key,
                         strcmp(r->key, "endpoints") == 0 ? " or a list" : "");
                return 1;
            }
            if (r->in_want) {
                set_setting(r->out, r->key, v);
            }
            r->at = AT_KEYS;
            return 0;
        case AT_LIST:
            if (ev->type == YAML_SEQUENCE_END_EVENT) {
                if (r->in_want) {
                    set_setting(r->out, r->key, r->list);
                }
                r->at = AT_KEYS;
                return 0;
            }
            if (ev->type != YAML_SCALAR_EVENT) {
                snprintf(r->why, WHY_BYTES,
                         "endpoints: expected HOST:PORT "
                         "items");
                return 1;
            }
            size_t n = strlen(r->list);
            snprintf(r->list + n, sizeof r->list - n, "%s%s", n > 0 ? "," : "",
                     v);
            return 0;
    }
    return 1;
}

/* Calls on_section(name, arg) for each context of contexts.yaml and reads
 * the one named `want` (NULL: none) into *out. Returns 0, -errno when the
 * file cannot be read, or 1 when it does not parse: *line_no says where
 * and why (WHY_BYTES) what. */
static int read_contexts(const char *path,
                         const char *want,
                         struct context *out,
                         bool *found,
                         void (*on_section)(const char *name, void *arg),
                         void *arg,
                         int *line_no,
                         char *why)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return -errno;
    }
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        fclose(f);
        return -ENOMEM;
    }
    yaml_parser_set_input_file(&p, f);
    struct ctx_reader r = {.at = AT_TOP,
                           .want = want,
                           .out = out,
                           .found = found,
                           .on_section = on_section,
                           .arg = arg,
                           .why = why};
    *found = false;
    *line_no = 0;
    int rc = 0;
    for (bool end = false; rc == 0 && !end;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            *line_no = (int)p.problem_mark.line + 1;
            snprintf(why, WHY_BYTES, "not YAML: %s",
                     p.problem != NULL ? p.problem : "?");
            rc = 1;
            break;
        }
        *line_no = (int)ev.start_mark.line + 1;
        end = ev.type == YAML_STREAM_END_EVENT;
        rc = take_event(&r, &ev);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    fclose(f);
    return rc;
}

/* The current context's name from .../qraft/current ("" when none). */
static void current_name(char *buf, size_t size)
{
    char path[PATH_BYTES];
    buf[0] = '\0';
    if (config_path("current", path, sizeof path) != 0) {
        return;
    }
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return;
    }
    char line[256];
    if (fgets(line, sizeof line, f) != NULL) {
        snprintf(buf, size, "%s", trim(line));
    }
    fclose(f);
}

/* Loads context `name` into *c; prints why not and returns an exit code
 * when it cannot. */
static int load_context(const char *cmd, const char *name, struct context *c)
{
    char path[PATH_BYTES];
    memset(c, 0, sizeof *c);
    if (config_path("contexts.yaml", path, sizeof path) != 0) {
        return usage_error(cmd,
                           "context '%s': neither XDG_CONFIG_HOME nor "
                           "HOME is set",
                           name);
    }
    bool found = false;
    int line_no = 0;
    char why[WHY_BYTES];
    int rc = read_contexts(path, name, c, &found, NULL, NULL, &line_no, why);
    if (rc < 0) {
        return usage_error(cmd, "context '%s': cannot read %s: %s", name, path,
                           strerror(-rc));
    }
    if (rc > 0) {
        fprintf(stderr, "qraft: %s: %s:%d: %s (see qraft context --help)\n",
                cmd, path, line_no, why);
        return EXIT_USAGE;
    }
    if (!found) {
        return usage_error(cmd, "no context '%s' in %s", name, path);
    }
    if (c->token_file[0] != '\0') {
        FILE *f = fopen(c->token_file, "r");
        if (f == NULL) {
            fprintf(stderr, "qraft: %s: context '%s': token_file %s: %s\n", cmd,
                    name, c->token_file, strerror(errno));
            return EXIT_USAGE;
        }
        if (fgets(c->token, sizeof c->token, f) != NULL) {
            memmove(c->token, trim(c->token), strlen(trim(c->token)) + 1);
        }
        fclose(f);
    }
    return EXIT_OK;
}

static struct context loaded;
static bool is_loaded;

int context_settings(const char *cmd, struct globals *g)
{
    if (!is_loaded) {
        const char *name = g->context;
        if (name == NULL || name[0] == '\0') {
            name = getenv("QRAFT_CONTEXT");
        }
        char cur[256];
        if (name == NULL || name[0] == '\0') {
            current_name(cur, sizeof cur);
            name = cur;
        }
        if (name[0] != '\0') {
            int ex = load_context(cmd, name, &loaded);
            if (ex != EXIT_OK) {
                return ex;
            }
        }
        is_loaded = true;
    }
    const struct context *c = &loaded;
    /* A flag or its variable wins; then the context. */
    struct {
        const char **field;
        const char *env;
        const char *value;
    } fill[] = {
        {&g->endpoints, "QRAFT_ENDPOINTS", c->endpoints},
        {&g->token, "QRAFT_TOKEN", c->token},
        {&g->cacert, "QRAFT_CACERT", c->cacert},
        {&g->cert, "QRAFT_CERT", c->cert},
        {&g->key, "QRAFT_KEY", c->key},
    };
    for (size_t i = 0; i < sizeof fill / sizeof fill[0]; i++) {
        const char *env = getenv(fill[i].env);
        if (*fill[i].field == NULL && (env == NULL || env[0] == '\0') &&
            fill[i].value[0] != '\0') {
            *fill[i].field = fill[i].value;
        }
    }
    return EXIT_OK;
}

/* ----------------------------------------------------------------------
 * qraft context */

static void print_section(const char *name, void *arg)
{
    const char *current = arg;
    printf("%s %s\n", strcmp(name, current) == 0 ? "*" : " ", name);
}

static int context_use(const char *name)
{
    const char *cmd = "context use";
    struct context c;
    int ex = load_context(cmd, name, &c);
    if (ex != EXIT_OK) {
        return ex;
    }
    char path[PATH_BYTES];
    if (config_path("current", path, sizeof path) != 0) {
        return usage_error(cmd, "neither XDG_CONFIG_HOME nor HOME is set");
    }
    FILE *f = fopen(path, "w");
    if (f == NULL || fprintf(f, "%s\n", name) < 0 || fclose(f) != 0) {
        fprintf(stderr, "qraft: %s: cannot write %s: %s\n", cmd, path,
                strerror(errno));
        return EXIT_ERROR;
    }
    printf("current context: %s\n", name);
    return EXIT_OK;
}

int cmd_context(int argc, char **argv, struct globals *g)
{
    (void)g;
    const char *sub = argc > 1 ? argv[1] : "";
    if (is_help(sub) || (argc > 2 && is_help(argv[2]))) {
        fputs(usage_context, stdout);
        return EXIT_OK;
    }
    char cur[256];
    current_name(cur, sizeof cur);
    if (strcmp(sub, "ls") == 0 && argc == 2) {
        char path[PATH_BYTES];
        struct context c;
        bool found;
        int line_no = 0;
        char why[WHY_BYTES];
        if (config_path("contexts.yaml", path, sizeof path) != 0) {
            return usage_error("context ls",
                               "neither XDG_CONFIG_HOME nor "
                               "HOME is set");
        }
        int rc = read_contexts(path, NULL, &c, &found, print_section, cur,
                               &line_no, why);
        if (rc == -ENOENT) {
            fprintf(stderr,
                    "qraft: context ls: no contexts yet: write %s "
                    "(see qraft context --help)\n",
                    path);
            return EXIT_OK;
        }
        if (rc != 0) {
            fprintf(stderr, "qraft: context ls: %s:%d: %s\n", path, line_no,
                    why);
            return EXIT_USAGE;
        }
        return EXIT_OK;
    }
    if (strcmp(sub, "use") == 0 && argc == 3) {
        return context_use(argv[2]);
    }
    if (strcmp(sub, "show") == 0 && argc <= 3) {
        const char *name = argc == 3 ? argv[2] : cur;
        if (name[0] == '\0') {
            return usage_error("context show",
                               "no current context: give a "
                               "name or `qraft context use`");
        }
        struct context c;
        int ex = load_context("context show", name, &c);
        if (ex != EXIT_OK) {
            return ex;
        }
        print_field("context:", c.name);
        print_field("endpoints:", c.endpoints[0] ? c.endpoints : "-");
        print_field("token file:", c.token_file[0] ? c.token_file : "-");
        print_field("cacert:", c.cacert[0] ? c.cacert : "-");
        print_field("cert:", c.cert[0] ? c.cert : "-");
        print_field("key:", c.key[0] ? c.key : "-");
        return EXIT_OK;
    }
    return usage_error("context", "expected ls, use NAME or show [NAME]");
}

/* ----------------------------------------------------------------------
 * qraft completion */

static const char completion_bash[] =
    "# qraft completion (qraft completion bash)\n"
    "_qraft() {\n"
    "    local cur=\"${COMP_WORDS[COMP_CWORD]}\" cmd=\"\" sub=\"\" i w\n"
    "    local globals=\"--endpoints --token --context --stale --cacert "
    "--cert --key --json --help --version\"\n"
    "    for ((i = 1; i < COMP_CWORD; i++)); do\n"
    "        w=\"${COMP_WORDS[i]}\"\n"
    "        case \"$w\" in\n"
    "            --endpoints|--token|--context|--cacert|--cert|--key) "
    "((i++)) ;;\n"
    "            -*) ;;\n"
    "            *) if [ -z \"$cmd\" ]; then cmd=\"$w\"; "
    "elif [ -z \"$sub\" ]; then sub=\"$w\"; fi ;;\n"
    "        esac\n"
    "    done\n"
    "    if [ -z \"$cmd\" ]; then\n"
    "        COMPREPLY=($(compgen -W \"" QRAFT_COMMANDS
    " $globals\" -- \"$cur\"))\n"
    "        return\n"
    "    fi\n"
    "    local subs=\"\"\n"
    "    case \"$cmd\" in\n"
    "        dlq) subs=\"ls replay rm\" ;;\n"
    "        group) subs=\"add rm delete get ls\" ;;\n"
    "        queue) subs=\"ls get set pause resume rm\" ;;\n"
    "        schedule) subs=\"ls get create pause resume rm\" ;;\n"
    "        flow) subs=\"ls get pause resume pin unpin reset\" ;;\n"
    "        workflow) subs=\"ls get cancel dlq\" ;;\n"
    "        cluster) subs=\"add remove transfer\" ;;\n"
    "        context) subs=\"ls use show\" ;;\n"
    "        completion) subs=\"bash zsh\" ;;\n"
    "    esac\n"
    "    if [ -n \"$subs\" ] && [ -z \"$sub\" ] && [[ \"$cur\" != -* ]]; then\n"
    "        COMPREPLY=($(compgen -W \"$subs\" -- \"$cur\"))\n"
    "    elif [ \"$cmd\" = context ] && [ \"$sub\" != ls ]; then\n"
    "        COMPREPLY=($(compgen -W \"$(qraft context ls 2>/dev/null | "
    "cut -c3-)\" -- \"$cur\"))\n"
    "    elif [[ \"$cur\" == -* ]]; then\n"
    "        local opts\n"
    "        opts=$(qraft \"$cmd\" --help 2>/dev/null | grep -o -- "
    "'--[a-z][a-z-]*' | sort -u)\n"
    "        COMPREPLY=($(compgen -W \"$opts $globals\" -- \"$cur\"))\n"
    "    fi\n"
    "}\n"
    "complete -o default -F _qraft qraft\n";

int cmd_completion(int argc, char **argv, struct globals *g)
{
    (void)g;
    const char *shell = argc == 2 ? argv[1] : "";
    if (is_help(shell)) {
        fputs(usage_completion, stdout);
        return EXIT_OK;
    }
    if (strcmp(shell, "bash") == 0) {
        fputs(completion_bash, stdout);
        return EXIT_OK;
    }
    if (strcmp(shell, "zsh") == 0) {
        /* zsh runs the bash function through its bashcompinit. */
        fputs(
            "# qraft completion (qraft completion zsh)\n"
            "autoload -U +X compinit && compinit\n"
            "autoload -U +X bashcompinit && bashcompinit\n",
            stdout);
        fputs(completion_bash, stdout);
        return EXIT_OK;
    }
    return usage_error("completion", "expected bash or zsh");
}
