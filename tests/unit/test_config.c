/* Unit tests of node/config.c and node/config_file.c: durations, and a
 * config file, QRAFT_* variables and flags folded into a struct qr_config.
 * Every bad input must fail with QR_EBADREQ and a message that names the
 * flag (or the file, line and key); good input must land in the right
 * field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "lib/err.h"
#include "repl/command.h"

#define SECOND_MS 1000ull
#define MINUTE_MS (60ull * SECOND_MS)
#define HOUR_MS (60ull * MINUTE_MS)
#define DAY_MS (24ull * HOUR_MS)

#define MAX_ARGS 32

/* One parse: the config, what it decided, its message and its output. */
struct run {
    struct qr_config c;
    enum qr_config_action action;
    char errmsg[QR_ERRMSG_BYTES];
    char *out; /* what was printed to `out` (--help, --version) */
    size_t out_len;
    int rv;
};

/* Parses argv (argc arguments, "qraftd" first) into a new run (free with
 * free_run). */
static struct run *parse_argv(int argc, char **argv)
{
    struct run *r = calloc(1, sizeof *r);
    assert_non_null(r);
    FILE *out = open_memstream(&r->out, &r->out_len);
    assert_non_null(out);
    qr_config_defaults(&r->c);
    r->action = (enum qr_config_action) - 1;
    r->rv = qr_config_parse(&r->c, argc, argv, out, &r->action, r->errmsg);
    assert_int_equal(fclose(out), 0);
    return r;
}

/* Parses "qraftd" followed by the NULL-terminated arguments into a new run
 * (free with free_run). */
static struct run *parse(const char *arg, ...)
{
    char *argv[MAX_ARGS + 2];
    int argc = 0;
    argv[argc++] = "qraftd";
    va_list ap;
    va_start(ap, arg);
    for (const char *a = arg; a != NULL; a = va_arg(ap, const char *)) {
        assert_true(argc <= MAX_ARGS);
        argv[argc++] = (char *)a;
    }
    va_end(ap);
    argv[argc] = NULL;
    return parse_argv(argc, argv);
}

static void free_run(struct run *r)
{
    free(r->out);
    free(r);
}

static void assert_parsed(const struct run *r)
{
    if (r->rv != 0) {
        fail_msg("parse failed (%d): %s", r->rv, r->errmsg);
    }
    assert_int_equal(r->action, QR_CONFIG_RUN);
}

/* Asserts the parse failed with a message mentioning `needle`. */
static void assert_refused(const struct run *r, const char *needle)
{
    if (r->rv != QR_EBADREQ) {
        fail_msg("expected QR_EBADREQ, got %d (errmsg '%s')", r->rv, r->errmsg);
    }
    if (strstr(r->errmsg, needle) == NULL) {
        fail_msg("errmsg '%s' does not mention '%s'", r->errmsg, needle);
    }
}

/* Parses and asserts a refusal naming `needle`, in one step. */
#define REFUSED(needle, ...)                 \
    do {                                     \
        struct run *r_ = parse(__VA_ARGS__); \
        assert_refused(r_, (needle));        \
        free_run(r_);                        \
    } while (0)

static int clear_env(void **state)
{
    (void)state;
    assert_int_equal(unsetenv("QRAFT_TOKEN"), 0);
    assert_int_equal(unsetenv("QRAFT_PEER_TOKEN"), 0);
    assert_int_equal(unsetenv("QRAFT_TOKEN_FILE"), 0);
    const char *tls[] = {"QRAFT_TLS_CERT", "QRAFT_TLS_KEY", "QRAFT_TLS_CA"};
    for (size_t i = 0; i < sizeof tls / sizeof tls[0]; i++) {
        assert_int_equal(unsetenv(tls[i]), 0);
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * qr_config_parse_duration_ms */

static void test_duration_good(void **state)
{
    (void)state;
    const struct {
        const char *s;
        uint64_t ms;
    } cases[] = {
        {"30s", 30 * SECOND_MS},
        {"5m", 5 * MINUTE_MS},
        {"1h", HOUR_MS},
        {"1d", DAY_MS},
        {"90d", 90 * DAY_MS},
        {"1d10h30m", DAY_MS + 10 * HOUR_MS + 30 * MINUTE_MS},
        {"1m30s", 90 * SECOND_MS},
        {"1h500ms", HOUR_MS + 500},
        {"1.5s", 1500},
        {"0.5m", 30 * SECOND_MS},
        {"500ms", 500},
        {"0ms", 0},
        {"3", 3 * SECOND_MS},
        {"1.5", 1500},
        {"007s", 7 * SECOND_MS},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t ms = 12345;
        int rv = qr_config_parse_duration_ms(cases[i].s, &ms);
        if (rv != 0) {
            fail_msg("'%s' refused (%d)", cases[i].s, rv);
        }
        if (ms != cases[i].ms) {
            fail_msg("'%s' gave %llu ms, want %llu", cases[i].s,
                     (unsigned long long)ms, (unsigned long long)cases[i].ms);
        }
    }
}

static void test_duration_bad(void **state)
{
    (void)state;
    const char *cases[] = {
        "",    "abc", "-1s",    "5x",   "1h-",          "s", "ms",     "1hh",
        " 1s", "1s ", "+1s",    "1 s",  "99999999999d", ".", "1.2.3s", "1sm",
        "nan", "inf", "1e999s", "1h30",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t ms = 12345;
        int rv = qr_config_parse_duration_ms(cases[i], &ms);
        if (rv != QR_EBADREQ) {
            fail_msg("'%s' gave %d (%llu ms), want QR_EBADREQ", cases[i], rv,
                     (unsigned long long)ms);
        }
    }
    uint64_t ms;
    assert_int_equal(qr_config_parse_duration_ms(NULL, &ms), QR_EBADREQ);
}

/* Numbers are digits with an optional decimal part: no exponents or hex
 * (which strtod would take), and a unit-less number only on its own. */
static void test_duration_rejects_exotic_numbers(void **state)
{
    (void)state;
    const char *cases[] = {"1e3s", "0x10s", "1E2m", "0h30"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t ms = 0;
        int rv = qr_config_parse_duration_ms(cases[i], &ms);
        if (rv != QR_EBADREQ) {
            fail_msg("'%s' gave %d (%llu ms), want QR_EBADREQ", cases[i], rv,
                     (unsigned long long)ms);
        }
    }
}

/* ------------------------------------------------------------------------
 * qr_config_parse */

static void test_dev_alone(void **state)
{
    (void)state;
    struct qr_config defaults;
    qr_config_defaults(&defaults);
    struct run *r = parse("--dev", NULL);
    assert_parsed(r);
    assert_true(r->c.dev);
    assert_string_equal(r->c.token, ""); /* generated later by the node */
    assert_string_equal(r->c.rpc_addr, defaults.rpc_addr);
    assert_string_equal(r->c.http_addr, defaults.http_addr);
    assert_string_equal(r->c.raft_addr, defaults.raft_addr);
    assert_string_equal(r->c.data_dir, defaults.data_dir);
    assert_int_equal(r->c.n_peers, 0);
    assert_int_equal(r->c.limits.max_body_bytes, 1048576);
    assert_int_equal(r->c.limits.dedup_window_ms, 10 * MINUTE_MS);
    /* A frame can carry any body the flags allow, so a body over the limit
     * gets an error naming the limit rather than a closed connection. */
    assert_true(r->c.max_frame_bytes > 16ull * 1024 * 1024);
    free_run(r);
}

static void test_dev_with_addresses(void **state)
{
    (void)state;
    struct run *r = parse("--dev", "--data", "/tmp/qd", "--rpc",
                          "127.0.0.1:7300", "--http", "localhost:8081",
                          "--raft", "127.0.0.3:7400", "--token", "tok", NULL);
    assert_parsed(r);
    assert_string_equal(r->c.data_dir, "/tmp/qd");
    assert_string_equal(r->c.rpc_addr, "127.0.0.1:7300");
    assert_string_equal(r->c.http_addr, "localhost:8081");
    assert_string_equal(r->c.raft_addr, "127.0.0.3:7400");
    assert_string_equal(r->c.token, "tok");
    free_run(r);

    r = parse("--dev", "--rpc=127.0.0.1:7301", NULL);
    assert_parsed(r);
    assert_string_equal(r->c.rpc_addr, "127.0.0.1:7301");
    free_run(r);
}

static void test_token_required_outside_dev(void **state)
{
    (void)state;
    REFUSED("--token", NULL);
    REFUSED("--token", "--id", "1", NULL);
    REFUSED("--token", "--dev", "--token", "", NULL);

    struct run *r = parse("--token", "s3cret", NULL);
    assert_parsed(r);
    assert_false(r->c.dev);
    assert_string_equal(r->c.token, "s3cret");
    free_run(r);
}

static void test_token_from_env(void **state)
{
    (void)state;
    assert_int_equal(setenv("QRAFT_TOKEN", "from-env", 1), 0);
    struct run *r = parse(NULL);
    assert_parsed(r);
    assert_string_equal(r->c.token, "from-env");
    free_run(r);

    /* The flag wins over the environment. */
    r = parse("--token", "from-flag", NULL);
    assert_parsed(r);
    assert_string_equal(r->c.token, "from-flag");
    free_run(r);

    /* An empty variable is no token. */
    assert_int_equal(setenv("QRAFT_TOKEN", "", 1), 0);
    REFUSED("--token", NULL);
    assert_int_equal(unsetenv("QRAFT_TOKEN"), 0);
}

/* The peer token comes from --peer-token or QRAFT_PEER_TOKEN; unset, it is
 * empty (the API token then authenticates nodes too). */
static void test_space_flags(void **state)
{
    (void)state;
    struct run *r = parse("--dev", NULL);
    assert_parsed(r);
    assert_int_equal(r->c.min_free_bytes, 0); /* from the disk */
    assert_int_equal(r->c.store_max_bytes, 0);
    assert_int_equal(r->c.store_map_bytes, 0);
    free_run(r);
    r = parse("--dev", "--min-free-bytes", "16m", "--store-max-bytes", "2G",
              NULL);
    assert_parsed(r);
    assert_int_equal(r->c.min_free_bytes, 16ull << 20);
    assert_int_equal(r->c.store_max_bytes, 2ull << 30);
    free_run(r);
    r = parse("--dev", "--min-free-bytes", "1048576", NULL);
    assert_parsed(r);
    assert_int_equal(r->c.min_free_bytes, 1048576);
    free_run(r);
    REFUSED("--min-free-bytes", "--dev", "--min-free-bytes", "1k", NULL);
    REFUSED("--min-free-bytes", "--dev", "--min-free-bytes", "5%", NULL);
    REFUSED("--store-max-bytes", "--dev", "--store-max-bytes", "2gb", NULL);
    REFUSED("--store-max-bytes", "--dev", "--store-max-bytes", "-1", NULL);
    REFUSED("--store-max-bytes", "--dev", "--store-max-bytes",
            "99999999999999999999", NULL);
    REFUSED("--store-max-bytes", "--dev", "--store-max-bytes", "9999999t",
            NULL);
}

static void test_peer_token(void **state)
{
    (void)state;
    struct run *r = parse("--dev", NULL);
    assert_parsed(r);
    assert_string_equal(r->c.peer_token, "");
    free_run(r);
    assert_int_equal(setenv("QRAFT_PEER_TOKEN", "peer-env", 1), 0);
    r = parse("--dev", NULL);
    assert_parsed(r);
    assert_string_equal(r->c.peer_token, "peer-env");
    free_run(r);
    r = parse("--dev", "--peer-token", "peer-flag", NULL);
    assert_parsed(r);
    assert_string_equal(r->c.peer_token, "peer-flag");
    assert_string_equal(r->c.token, "");
    free_run(r);
    REFUSED("--peer-token", "--dev", "--peer-token", "", NULL);
}

/* --token-file (or QRAFT_TOKEN_FILE) stands in for --token; without
 * --token it needs --peer-token, since nodes would otherwise have no
 * shared secret. The file itself is read by the server (test_tokens.c). */
static void test_token_file(void **state)
{
    (void)state;
    struct run *r =
        parse("--token-file", "/etc/qraft/tokens", "--peer-token", "p", NULL);
    assert_parsed(r);
    assert_string_equal(r->c.token_file, "/etc/qraft/tokens");
    assert_string_equal(r->c.token, "");
    free_run(r);
    r = parse("--token-file", "/t", "--token", "t", NULL);
    assert_parsed(r);
    free_run(r);
    r = parse("--dev", "--token-file", "/t", NULL);
    assert_parsed(r);
    free_run(r);
    REFUSED("--peer-token", "--token-file", "/t", NULL);
    REFUSED("--token-file", "--token-file", "", "--token", "t", NULL);
    assert_int_equal(setenv("QRAFT_TOKEN_FILE", "/from/env", 1), 0);
    r = parse("--peer-token", "p", NULL);
    assert_parsed(r);
    assert_string_equal(r->c.token_file, "/from/env");
    free_run(r);
    assert_int_equal(unsetenv("QRAFT_TOKEN_FILE"), 0);

    r = parse("--print-scopes", NULL);
    assert_int_equal(r->rv, 0);
    assert_int_equal(r->action, QR_CONFIG_PRINT_SCOPES);
    free_run(r);
}

/* --tls-cert and --tls-key go together (or QRAFT_TLS_CERT and
 * QRAFT_TLS_KEY); --tls-ca on its own is a CA for clients' certificates.
 * The files are read when the listeners start (test_tls_ctx.c). */
static void test_tls_files(void **state)
{
    (void)state;
    struct run *r = parse("--dev", "--tls-cert", "/c.pem", "--tls-key",
                          "/k.pem", "--tls-ca", "/ca.pem", NULL);
    assert_parsed(r);
    assert_string_equal(r->c.tls_cert, "/c.pem");
    assert_string_equal(r->c.tls_key, "/k.pem");
    assert_string_equal(r->c.tls_ca, "/ca.pem");
    free_run(r);
    r = parse("--dev", NULL);
    assert_parsed(r);
    assert_string_equal(r->c.tls_cert, "");
    free_run(r);
    REFUSED("--tls-key", "--dev", "--tls-cert", "/c.pem", NULL);
    REFUSED("--tls-key", "--dev", "--tls-key", "/k.pem", NULL);
    REFUSED("--tls-cert", "--dev", "--tls-cert", "", "--tls-key", "/k", NULL);
    assert_int_equal(setenv("QRAFT_TLS_CERT", "/env-c.pem", 1), 0);
    assert_int_equal(setenv("QRAFT_TLS_KEY", "/env-k.pem", 1), 0);
    r = parse("--dev", NULL);
    assert_parsed(r);
    assert_string_equal(r->c.tls_cert, "/env-c.pem");
    assert_string_equal(r->c.tls_key, "/env-k.pem");
    free_run(r);
    assert_int_equal(unsetenv("QRAFT_TLS_CERT"), 0);
    assert_int_equal(unsetenv("QRAFT_TLS_KEY"), 0);
}

static void test_peers(void **state)
{
    (void)state;
    struct run *r =
        parse("--token", "t", "--id", "2", "--peers",
              "1@127.0.0.1:7201,2@127.0.0.1:7202,3@localhost:7203", NULL);
    assert_parsed(r);
    assert_int_equal(r->c.id, 2);
    assert_int_equal(r->c.n_peers, 3);
    assert_int_equal(r->c.peers[0].id, 1);
    assert_string_equal(r->c.peers[0].raft_addr, "127.0.0.1:7201");
    assert_int_equal(r->c.peers[1].id, 2);
    assert_string_equal(r->c.peers[1].raft_addr, "127.0.0.1:7202");
    assert_int_equal(r->c.peers[2].id, 3);
    /* Host names are resolved: raft takes IPv4 dotted quads only. */
    assert_string_equal(r->c.peers[2].raft_addr, "127.0.0.1:7203");
    free_run(r);

    /* --id given after --peers counts as well. */
    r = parse("--token", "t", "--peers", "1@127.0.0.1:7201,2@127.0.0.1:7202",
              "--id", "1", NULL);
    assert_parsed(r);
    assert_int_equal(r->c.n_peers, 2);
    free_run(r);
}

static void test_peers_refusals(void **state)
{
    (void)state;
    /* The list must hold this node. */
    REFUSED("--id", "--token", "t", "--id", "3", "--peers",
            "1@127.0.0.1:7201,2@127.0.0.1:7202", NULL);
    REFUSED("--peers", "--token", "t", "--peers",
            "2@127.0.0.1:7202,3@127.0.0.1:7203", NULL);
    /* Ids are unique. */
    REFUSED("--peers", "--token", "t", "--peers",
            "1@127.0.0.1:7201,1@127.0.0.1:7202", NULL);
    /* Malformed entries. */
    const char *bad[] = {
        "x@y",    "1@y",        "127.0.0.1:7201", "0@127.0.0.1:7201",
        "1@:80",  "1@h:0",      "1@h:65536",      "1@h:",
        "-1@h:1", "1@h:80,x@y", "1@h:80x",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct run *r = parse("--token", "t", "--peers", bad[i], NULL);
        if (r->rv != QR_EBADREQ || strstr(r->errmsg, "--peers") == NULL) {
            fail_msg("--peers '%s': rv %d, errmsg '%s'", bad[i], r->rv,
                     r->errmsg);
        }
        free_run(r);
    }
    /* --dev is a one-node cluster. */
    REFUSED("--peers", "--dev", "--peers", "1@127.0.0.1:7201", NULL);
}

/* The message quotes the whole malformed entry. */
static void test_peers_error_quotes_whole_entry(void **state)
{
    (void)state;
    REFUSED("1@nohost", "--token", "t", "--peers", "1@nohost", NULL);
    REFUSED("x@y", "--token", "t", "--peers", "x@y", NULL);
}

static void test_addresses_refusals(void **state)
{
    (void)state;
    REFUSED("--rpc", "--dev", "--rpc", "nohost", NULL);
    REFUSED("nohost", "--dev", "--rpc", "nohost", NULL);
    REFUSED("--rpc", "--dev", "--rpc", ":7100", NULL);
    REFUSED("--rpc", "--dev", "--rpc", "host:0", NULL);
    REFUSED("--rpc", "--dev", "--rpc", "host:99999", NULL);
    REFUSED("--rpc", "--dev", "--rpc", "host:port", NULL);
    REFUSED("--http", "--dev", "--http", "nohost", NULL);
    REFUSED("--raft", "--dev", "--raft", "nohost", NULL);
    REFUSED("--data", "--dev", "--data", "", NULL);
    REFUSED("--id", "--dev", "--id", "0", NULL);
    REFUSED("--id", "--dev", "--id", "two", NULL);
    /* Message ids carry the node id in 16 bits. */
    REFUSED("1..65535", "--dev", "--id", "65536", NULL);
    REFUSED("--peers", "--token", "t", "--id", "1", "--peers",
            "1@127.0.0.1:7201,65536@127.0.0.1:7202", NULL);
}

static void test_max_body_bytes(void **state)
{
    (void)state;
    REFUSED("--max-body-bytes", "--dev", "--max-body-bytes", "0", NULL);
    REFUSED("--max-body-bytes", "--dev", "--max-body-bytes", "20000000", NULL);
    REFUSED("--max-body-bytes", "--dev", "--max-body-bytes", "-1", NULL);
    REFUSED("--max-body-bytes", "--dev", "--max-body-bytes", "1k", NULL);

    struct run *r = parse("--dev", "--max-body-bytes", "2048", NULL);
    assert_parsed(r);
    assert_int_equal(r->c.limits.max_body_bytes, 2048);
    free_run(r);

    r = parse("--dev", "--max-body-bytes", "16777216", NULL);
    assert_parsed(r);
    assert_int_equal(r->c.limits.max_body_bytes, 16777216);
    free_run(r);
}

static void test_dedup_window(void **state)
{
    (void)state;
    struct run *r = parse("--dev", "--dedup-window", "90d", NULL);
    assert_parsed(r);
    assert_int_equal(r->c.limits.dedup_window_ms, 90 * DAY_MS);
    free_run(r);

    r = parse("--dev", "--dedup-window", "30s", NULL);
    assert_parsed(r);
    assert_int_equal(r->c.limits.dedup_window_ms, 30 * SECOND_MS);
    free_run(r);

    REFUSED("--dedup-window", "--dev", "--dedup-window", "91d", NULL);
    REFUSED("--dedup-window", "--dev", "--dedup-window", "90d1ms", NULL);
    REFUSED("--dedup-window", "--dev", "--dedup-window", "0s", NULL);
    REFUSED("--dedup-window", "--dev", "--dedup-window", "soon", NULL);
}

static void test_raft_timeouts(void **state)
{
    (void)state;
    /* Not at or above the default election timeout (400 ms). */
    REFUSED("--heartbeat-timeout-ms", "--dev", "--heartbeat-timeout-ms", "400",
            NULL);
    REFUSED("--heartbeat-timeout-ms", "--dev", "--election-timeout-ms", "100",
            "--heartbeat-timeout-ms", "200", NULL);
    REFUSED("--election-timeout-ms", "--dev", "--election-timeout-ms", "0",
            NULL);

    struct run *r = parse("--dev", "--election-timeout-ms", "1000",
                          "--heartbeat-timeout-ms", "100", NULL);
    assert_parsed(r);
    assert_int_equal(r->c.election_timeout_ms, 1000);
    assert_int_equal(r->c.heartbeat_timeout_ms, 100);
    free_run(r);

    r = parse("--dev", "--snapshot-threshold", "1024", NULL);
    assert_parsed(r);
    assert_int_equal(r->c.snapshot_threshold, 1024);
    assert_int_equal(r->c.snapshot_log_share, 50);
    free_run(r);
    REFUSED("--snapshot-threshold", "--dev", "--snapshot-threshold", "1", NULL);
    r = parse("--dev", "--snapshot-log-share", "0", NULL);
    assert_parsed(r);
    assert_int_equal(r->c.snapshot_log_share, 0);
    free_run(r);
    REFUSED("--snapshot-log-share", "--dev", "--snapshot-log-share", "1001",
            NULL);
    REFUSED("--snapshot-log-share", "--dev", "--snapshot-log-share", "-1",
            NULL);
}

static void test_unknown_and_stray_arguments(void **state)
{
    (void)state;
    REFUSED("--bogus", "--dev", "--bogus", NULL);
    REFUSED("--bogus", "--bogus", "--dev", NULL);
    REFUSED("stray", "--dev", "stray", NULL);
    /* A flag missing its value is named too. */
    REFUSED("--rpc", "--dev", "--rpc", NULL);
    /* Value given to a flag that takes none. */
    REFUSED("--dev", "--dev=yes", NULL);
}

static void test_log_level(void **state)
{
    (void)state;
    REFUSED("--log-level", "--dev", "--log-level", "bogus", NULL);
    struct run *r = parse("--dev", "--log-level", "debug", NULL);
    assert_parsed(r);
    assert_int_equal(r->c.log_level, QR_LOG_DEBUG);
    free_run(r);
    r = parse("--dev", "--log-level", "error", NULL);
    assert_parsed(r);
    assert_int_equal(r->c.log_level, QR_LOG_ERROR);
    free_run(r);
}

static void test_help_and_version(void **state)
{
    (void)state;
    struct run *r = parse("--help", NULL);
    assert_int_equal(r->rv, 0);
    assert_int_equal(r->action, QR_CONFIG_EXIT_OK);
    assert_non_null(strstr(r->out, "usage"));
    assert_non_null(strstr(r->out, "--dev"));
    free_run(r);

    r = parse("--version", NULL);
    assert_int_equal(r->rv, 0);
    assert_int_equal(r->action, QR_CONFIG_EXIT_OK);
    assert_non_null(strstr(r->out, "qraftd"));
    assert_non_null(strstr(r->out, QRAFT_VERSION));
    free_run(r);

    /* --help wins even where the rest would be refused (no --token). */
    r = parse("--id", "3", "--help", NULL);
    assert_int_equal(r->rv, 0);
    assert_int_equal(r->action, QR_CONFIG_EXIT_OK);
    free_run(r);
}

static void test_repeated_parses_are_independent(void **state)
{
    (void)state;
    /* getopt keeps state between calls; each parse must start afresh. */
    REFUSED("--bogus", "--dev", "--bogus", NULL);
    struct run *r = parse("--dev", "--rpc", "127.0.0.1:7301", NULL);
    assert_parsed(r);
    assert_string_equal(r->c.rpc_addr, "127.0.0.1:7301");
    free_run(r);

    r = parse("--help", "--dev", NULL);
    assert_int_equal(r->action, QR_CONFIG_EXIT_OK);
    free_run(r);
    r = parse("--dev", NULL);
    assert_parsed(r);
    free_run(r);
}

/* A parse that failed inside a cluster of short options ("-xy") leaves no
 * getopt state behind for the next parse, and the message names the
 * offending option. */
static void test_short_option_cluster(void **state)
{
    (void)state;
    struct run *r = parse("--dev", "-xy", NULL);
    assert_int_equal(r->rv, QR_EBADREQ);
    free_run(r);
    r = parse("--dev", NULL);
    assert_parsed(r);
    free_run(r);
    REFUSED("-x", "--dev", "-xy", NULL);
}

/* Every raft timing is a flag. */
static void test_raft_timings(void **state)
{
    (void)state;
    struct run *r =
        parse("--dev", "--election-timeout-ms", "500", "--heartbeat-timeout-ms",
              "50", "--connect-retry-ms", "250", NULL);
    assert_parsed(r);
    assert_int_equal(r->c.election_timeout_ms, 500);
    assert_int_equal(r->c.heartbeat_timeout_ms, 50);
    assert_int_equal(r->c.connect_retry_ms, 250);
    free_run(r);
    REFUSED("--connect-retry-ms", "--dev", "--connect-retry-ms", "0", NULL);
}

/* Connection caps and the HTTP request timeout are flags. */
static void test_connection_limits(void **state)
{
    (void)state;
    struct run *r = parse("--dev", NULL);
    assert_parsed(r);
    assert_int_equal(r->c.max_connections, 4096);
    assert_int_equal(r->c.http_request_timeout_ms, 10000);
    free_run(r);
    r = parse("--dev", "--max-connections", "32", "--http-request-timeout-ms",
              "1500", NULL);
    assert_parsed(r);
    assert_int_equal(r->c.max_connections, 32);
    assert_int_equal(r->c.http_request_timeout_ms, 1500);
    free_run(r);
    REFUSED("--max-connections", "--dev", "--max-connections", "0", NULL);
    REFUSED("--http-request-timeout-ms", "--dev", "--http-request-timeout-ms",
            "50", NULL);
}

/* The advertised feature level defaults to the binary's and may only be
 * pinned lower. */
static void test_max_feature_level(void **state)
{
    (void)state;
    struct run *r = parse("--dev", NULL);
    assert_parsed(r);
    assert_int_equal(r->c.max_feature_level, QR_FEATURE_LEVEL);
    free_run(r);
    r = parse("--dev", "--max-feature-level", "1", NULL);
    assert_parsed(r);
    assert_int_equal(r->c.max_feature_level, 1);
    free_run(r);
    REFUSED("--max-feature-level", "--dev", "--max-feature-level", "0", NULL);
    REFUSED("--max-feature-level", "--dev", "--max-feature-level", "99", NULL);
}

/* Raft wants IPv4 dotted quads: host names are resolved at start. */
static void test_raft_host_names_resolved(void **state)
{
    (void)state;
    struct run *r = parse("--dev", "--raft", "localhost:7300", NULL);
    assert_parsed(r);
    assert_string_equal(r->c.raft_addr, "127.0.0.1:7300");
    free_run(r);
    r = parse("--token", "t", "--peers", "1@localhost:7201,2@127.0.0.2:7202",
              NULL);
    assert_parsed(r);
    assert_string_equal(r->c.peers[0].raft_addr, "127.0.0.1:7201");
    assert_string_equal(r->c.peers[1].raft_addr, "127.0.0.2:7202");
    free_run(r);
    REFUSED("cannot resolve", "--dev", "--raft", "no-such-host.invalid:7300",
            NULL);
    REFUSED("IPv4", "--dev", "--raft", "[::1]:7300", NULL);
}

/* The SSRF guard's policy: loopback is open by default only where one
 * machine runs it all (--dev, or every listener on loopback);
 * --allow-destinations, when given, is the whole list. */
static void test_allow_destinations(void **state)
{
    (void)state;
    struct run *r = parse("--token", "t", NULL); /* default listeners */
    assert_parsed(r);
    assert_false(r->c.destinations_set);
    assert_true(r->c.destinations.allow_loopback);
    assert_int_equal(r->c.destinations.n_nets, 0);
    free_run(r);

    r = parse("--token", "t", "--rpc", "[::1]:7100", "--http", "localhost:8080",
              "--raft", "127.0.0.3:7400", NULL);
    assert_parsed(r);
    assert_true(r->c.destinations.allow_loopback);
    free_run(r);

    /* One listener anyone may reach: a real network setup. */
    r = parse("--token", "t", "--http", "0.0.0.0:8080", NULL);
    assert_parsed(r);
    assert_false(r->c.destinations.allow_loopback);
    free_run(r);
    r = parse("--token", "t", "--rpc", "[::]:7100", NULL);
    assert_parsed(r);
    assert_false(r->c.destinations.allow_loopback);
    free_run(r);

    /* --dev opens loopback wherever it listens. */
    r = parse("--dev", "--http", "0.0.0.0:8080", NULL);
    assert_parsed(r);
    assert_true(r->c.destinations.allow_loopback);
    free_run(r);

    /* The flag replaces the default: none opens nothing. */
    r = parse("--dev", "--allow-destinations", "none", NULL);
    assert_parsed(r);
    assert_true(r->c.destinations_set);
    assert_false(r->c.destinations.allow_loopback);
    assert_int_equal(r->c.destinations.n_nets, 0);
    free_run(r);

    r = parse("--token", "t", "--allow-destinations",
              "10.0.0.0/8,fd00::/8,127.0.0.1", NULL);
    assert_parsed(r);
    assert_false(r->c.destinations.allow_loopback);
    assert_int_equal(r->c.destinations.n_nets, 3);
    assert_int_equal(r->c.destinations.nets[0].prefix, 8);
    assert_int_equal(r->c.destinations.nets[2].prefix, 32);
    free_run(r);

    REFUSED("--allow-destinations: '10.0.0.1/8'", "--dev",
            "--allow-destinations", "10.0.0.1/8", NULL);
    REFUSED("--allow-destinations: 'example.com'", "--dev",
            "--allow-destinations", "10.0.0.0/8,example.com", NULL);
    REFUSED("--allow-destinations", "--dev", "--allow-destinations", "", NULL);
}

/* ------------------------------------------------------------------------
 * --config FILE and --print-config */

/* Writes text to a new temporary file; returns its path (free it, and
 * unlink the file, with drop_file). */
static char *write_file(const char *text)
{
    char *path = strdup("/tmp/qraft-test-config-XXXXXX");
    assert_non_null(path);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    return path;
}

static void drop_file(char *path)
{
    unlink(path);
    free(path);
}

static void test_file_good(void **state)
{
    (void)state;
    char *path = write_file(
        "# a node of three\n"
        "id: 2\n"
        "peers:\n"
        "  - 1@127.0.0.1:7201\n"
        "  - 2@127.0.0.1:7202\n"
        "  - \"3@127.0.0.1:7203\"\n"
        "http: 127.0.0.1:9090\n"
        "data: '/var/lib/qraft'\n"
        "token: file-token\n"
        "allow-destinations: 10.0.0.0/8,127.0.0.1\n"
        "dedup-window: 1h\n"
        "max-queues: 250\n"
        "join: false\n"
        "log-level: warn\n"
        "log-format: json\n");
    struct run *r = parse("--config", path, NULL);
    assert_parsed(r);
    assert_int_equal(r->c.id, 2);
    assert_int_equal(r->c.n_peers, 3);
    assert_string_equal(r->c.peers[2].raft_addr, "127.0.0.1:7203");
    assert_string_equal(r->c.http_addr, "127.0.0.1:9090");
    assert_string_equal(r->c.data_dir, "/var/lib/qraft");
    assert_string_equal(r->c.token, "file-token");
    assert_int_equal(r->c.destinations.n_nets, 2);
    assert_int_equal(r->c.limits.dedup_window_ms, HOUR_MS);
    assert_int_equal(r->c.limits.max_queues, 250);
    assert_false(r->c.join);
    assert_int_equal(r->c.log_level, QR_LOG_WARN);
    assert_int_equal(r->c.log_format, QR_LOG_JSON);
    free_run(r);

    /* Empty, or comments only: no settings. */
    char *empty = write_file("# nothing yet\n");
    r = parse("--config", empty, "--dev", NULL);
    assert_parsed(r);
    assert_true(r->c.dev);
    free_run(r);
    drop_file(empty);
    drop_file(path);
}

/* Flags win over the environment, which wins over the file. */
static void test_file_precedence(void **state)
{
    (void)state;
    char *path = write_file(
        "dev: true\n"
        "max-queues: 200\n"
        "max-connections: 300\n"
        "token-file: /from/file\n");
    assert_int_equal(setenv("QRAFT_TOKEN_FILE", "/from/env", 1), 0);
    struct run *r = parse("--max-queues", "7", "--config", path, NULL);
    assert_parsed(r);
    assert_true(r->c.dev);
    assert_int_equal(r->c.limits.max_queues, 7);
    assert_int_equal(r->c.max_connections, 300);
    assert_string_equal(r->c.token_file, "/from/env");
    free_run(r);
    r = parse("--config", path, "--token-file", "/from/flag", NULL);
    assert_parsed(r);
    assert_string_equal(r->c.token_file, "/from/flag");
    free_run(r);
    REFUSED("--config: given twice", "--config", path, "--config", path, NULL);
    drop_file(path);
}

static void test_file_errors(void **state)
{
    (void)state;
    const struct {
        const char *text;
        const char *needle; /* after "PATH" in the message */
    } cases[] = {
        {"dev: true\nhttp-listen: 1.2.3.4:80\n",
         ":2: http-listen: not a setting"},
        {"dev: true\n\nmax-queues: lots\n",
         ":3: max-queues: 'lots' is not in 1..100000"},
        {"dev: true\nhttp: {host: a}\n", ":2: http: a mapping is not a value"},
        {"dev: true\nhttp:\n  - a:1\n  - b:2\n",
         ":2: http: takes one value, not a list"},
        {"dev: true\nid: 2\nid: 3\n", ":3: id: given twice (first on line 2)"},
        {"- dev\n- id\n", ":1: the file must be a mapping"},
        {"just words\n", ":1: the file must be a mapping"},
        {"dev: yes\n", ":1: dev: 'yes' is not true or false"},
        {"dev: true\ntoken:\n", ":2: token: has no value"},
        {"dev: true\nprint-config: true\n",
         ":2: print-config: --print-config is a command-line flag"},
        {"dev: true\npeers: [\"1@a:1,2@b:2\"]\n",
         ":2: peers: list item '1@a:1,2@b:2' on line 2 holds a comma"},
        {"dev: true\nhttp: [oops\n", ":3: not valid YAML"},
        {"dev: true\n---\nid: 2\n", ":2: a second YAML document"},
        {"dev: true\n[a]: b\n", ":2: a key must be a setting's name"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *path = write_file(cases[i].text);
        char needle[QR_ERRMSG_BYTES];
        snprintf(needle, sizeof needle, "%s%s", path, cases[i].needle);
        struct run *r = parse("--config", path, NULL);
        if (r->rv != QR_EBADREQ || strstr(r->errmsg, needle) == NULL) {
            fail_msg("case %zu: rv %d, errmsg '%s', expected '%s'", i, r->rv,
                     r->errmsg, needle);
        }
        free_run(r);
        drop_file(path);
    }
    struct run *r = parse("--config", "/nonexistent/qraft.yaml", NULL);
    assert_int_equal(r->rv, -ENOENT);
    assert_non_null(strstr(r->errmsg, "/nonexistent/qraft.yaml: cannot read"));
    free_run(r);
}

/* --print-config's output, read back with --config, prints the same; the
 * secret never shows. */
static void test_print_config_round_trip(void **state)
{
    (void)state;
    char *path = write_file(
        "dev: true\n"
        "peer-token: \"very secret\"\n"
        "allow-destinations: [10.0.0.0/8, 127.0.0.1]\n"
        "data: \"dir with \\\"quotes\\\" and \\\\\"\n");
    struct run *first =
        parse("--config", path, "--max-queues", "9", "--print-config", NULL);
    assert_int_equal(first->rv, 0);
    assert_int_equal(first->action, QR_CONFIG_EXIT_OK);
    assert_null(strstr(first->out, "very secret"));
    assert_non_null(strstr(first->out, "peer-token: \"***\"\n"));
    assert_non_null(strstr(first->out, "max-queues: 9\n"));
    assert_non_null(strstr(first->out, "  - \"127.0.0.1\"\n"));

    char *again = write_file(first->out);
    struct run *second = parse("--config", again, "--print-config", NULL);
    assert_int_equal(second->rv, 0);
    /* "***" sets nothing: the secret is not carried over. */
    char *mask = strstr(first->out, "peer-token: \"***\"\n");
    assert_non_null(mask);
    assert_non_null(strstr(second->out, "# peer-token: (not set"));
    struct run *loaded = parse("--config", again, NULL);
    assert_parsed(loaded);
    assert_string_equal(loaded->c.data_dir, "dir with \"quotes\" and \\");
    assert_int_equal(loaded->c.limits.max_queues, 9);
    assert_int_equal(loaded->c.peer_token[0], '\0');
    free_run(loaded);

    /* An empty list prints as one. */
    char *no_peers = write_file("dev: true\npeers: []\n");
    struct run *empty = parse("--config", no_peers, "--print-config", NULL);
    assert_int_equal(empty->rv, 0);
    assert_non_null(strstr(empty->out, "\npeers: []\n"));
    free_run(empty);
    drop_file(no_peers);

    /* With the secret from the environment, both print the same. */
    assert_int_equal(setenv("QRAFT_PEER_TOKEN", "env secret", 1), 0);
    struct run *third = parse("--config", again, "--print-config", NULL);
    assert_int_equal(third->rv, 0);
    assert_string_equal(third->out, first->out);
    free_run(third);
    free_run(second);
    free_run(first);
    drop_file(again);
    drop_file(path);
}

/* Every default --print-config shows, given as a flag, changes nothing:
 * the table's defaults and qr_config_defaults agree. */
static void test_print_config_defaults_agree(void **state)
{
    (void)state;
    struct run *shown = parse("--dev", "--print-config", NULL);
    assert_int_equal(shown->rv, 0);
    struct run *base = parse("--dev", NULL);
    assert_parsed(base);
    char *save = NULL;
    size_t n_checked = 0;
    for (char *line = strtok_r(shown->out, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char *colon = strstr(line, ": ");
        if (line[0] == '#' || line[0] == ' ' || colon == NULL ||
            strcmp(colon + 2, "true") == 0 || strcmp(colon + 2, "false") == 0) {
            continue;
        }
        *colon = '\0';
        char *value = colon + 2;
        if (value[0] == '"') {
            value++;
            value[strlen(value) - 1] = '\0';
        }
        char flag[64];
        snprintf(flag, sizeof flag, "--%s", line);
        char *argv[] = {"qraftd", "--dev", flag, value, NULL};
        struct run *r = parse_argv(4, argv);
        assert_parsed(r);
        if (memcmp(&r->c, &base->c, sizeof r->c) != 0) {
            fail_msg("%s %s is not the default", flag, value);
        }
        free_run(r);
        n_checked++;
    }
    if (n_checked < 20) {
        fail_msg("only %zu defaults checked", n_checked);
    }
    free_run(base);
    free_run(shown);
}

static void test_log_format(void **state)
{
    (void)state;
    REFUSED("--log-format: 'xml' is not text or json", "--dev", "--log-format",
            "xml", NULL);
    struct run *r = parse("--dev", NULL);
    assert_int_equal(r->c.log_format, QR_LOG_TEXT);
    free_run(r);
    r = parse("--dev", "--log-format", "json", NULL);
    assert_parsed(r);
    assert_int_equal(r->c.log_format, QR_LOG_JSON);
    free_run(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_raft_timings, clear_env,
                                        clear_env),
        cmocka_unit_test_setup_teardown(test_max_feature_level, clear_env,
                                        clear_env),
        cmocka_unit_test_setup_teardown(test_connection_limits, clear_env,
                                        clear_env),
        cmocka_unit_test_setup_teardown(test_raft_host_names_resolved,
                                        clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_allow_destinations, clear_env,
                                        clear_env),
        cmocka_unit_test(test_duration_good),
        cmocka_unit_test(test_duration_bad),
        cmocka_unit_test(test_duration_rejects_exotic_numbers),
        cmocka_unit_test_setup_teardown(test_dev_alone, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_dev_with_addresses, clear_env,
                                        clear_env),
        cmocka_unit_test_setup_teardown(test_token_required_outside_dev,
                                        clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_token_from_env, clear_env,
                                        clear_env),
        cmocka_unit_test_setup_teardown(test_peer_token, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_token_file, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_tls_files, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_space_flags, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_peers, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_peers_refusals, clear_env,
                                        clear_env),
        cmocka_unit_test_setup_teardown(test_peers_error_quotes_whole_entry,
                                        clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_addresses_refusals, clear_env,
                                        clear_env),
        cmocka_unit_test_setup_teardown(test_max_body_bytes, clear_env,
                                        clear_env),
        cmocka_unit_test_setup_teardown(test_dedup_window, clear_env,
                                        clear_env),
        cmocka_unit_test_setup_teardown(test_raft_timeouts, clear_env,
                                        clear_env),
        cmocka_unit_test_setup_teardown(test_unknown_and_stray_arguments,
                                        clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_log_level, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_log_format, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_file_good, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_file_precedence, clear_env,
                                        clear_env),
        cmocka_unit_test_setup_teardown(test_file_errors, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_print_config_round_trip, clear_env,
                                        clear_env),
        cmocka_unit_test_setup_teardown(test_print_config_defaults_agree,
                                        clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_help_and_version, clear_env,
                                        clear_env),
        cmocka_unit_test_setup_teardown(test_repeated_parses_are_independent,
                                        clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_short_option_cluster, clear_env,
                                        clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
