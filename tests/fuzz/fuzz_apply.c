/* libFuzzer target: entry decode + apply on a throw-away LMDB store.
 *
 * The invariant fuzzed is the one node/fsm.c states: apply is total, so no
 * entry of decodable commands of known kinds makes it call its fatal hook
 * (the hook aborts here, which libFuzzer reports as a crash).
 *
 * Input: a sequence of records, each a 2-byte big-endian length and that
 * many bytes of a packed qraft.Command. A record of length 0 ends the
 * current entry; the byte after it moves the leader's clock on by that many
 * times 10 s. Up to MAX_ENTRIES entries of up to MAX_COMMANDS commands each.
 * A record that does not decode as a Command, or whose kind this build does
 * not know (a kind from a newer version stops a replica, by design), is left
 * out; the rest are packed again (as the leader packs them) into an entry
 * framed by qr_command_entry_write and handed to raft_fsm->apply, with a fake
 * struct raft whose last_applied the target keeps. The raw input is also fed
 * to qr_command_decode_entry on its own.
 *
 * The store (under $QRAFT_FUZZ_STORE_BASE, else /dev/shm when it exists,
 * else /tmp; a crash leaves its directory behind) persists from one input to
 * the next so that state-dependent paths are reached (a cancel of a message an
 * earlier input published), and starts afresh every RESET_EVERY inputs.
 * Environment:
 *   QRAFT_FUZZ_APPLY_FRESH=1     a fresh store for every input (to replay a
 *                                crash file on its own);
 *   QRAFT_FUZZ_TOLERATE_KNOWN=1  report a fatal apply on stderr and go on
 *                                (fresh store) instead of aborting (to
 *                                survey many findings in one run);
 *   QRAFT_FUZZ_APPLY_SAVE=<dir>  when tolerating: write the first input of
 *                                each distinct fatal reason (digits left
 *                                out) to <dir>/fatal-<hash>, and the
 *                                reason to fatal-<hash>.txt;
 *   QRAFT_FUZZ_APPLY_VERBOSE=1   print each command's result (triage). */
#include <dirent.h>
#include <inttypes.h>
#include <raft.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "lib/err.h"
#include "lib/pb.h"
#include "repl/command.h"
#include "repl/fsm.h"
#include "store/store.h"

#define NOW_MS 1767225600000ull /* 2026-01-01T00:00:00Z */
#define MAX_ENTRIES 16
#define MAX_COMMANDS 64
#define RESET_EVERY 2000
#define MAP_BYTES (256ull << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[256];
static struct qr_store *store;
static struct qr_fsm fsm;
static struct raft fake_raft;
static uint64_t now_ms;
static unsigned n_inputs;
static int fresh;
static int verbose;
static int tolerate;
static int fatal_seen;
static unsigned long n_tolerated;
static const char *save_dir;
static const uint8_t *cur_data;
static size_t cur_size;

/* Writes the current input under a name derived from why, digits left out,
 * unless one is there already. */
static void save_input(const char *why)
{
    uint64_t h = 14695981039346656037ull;
    for (const char *p = why; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            h = (h ^ (uint8_t)*p) * 1099511628211ull;
        }
    }
    char path[512];
    snprintf(path, sizeof path, "%s/fatal-%016" PRIx64, save_dir, h);
    if (access(path, F_OK) == 0) {
        return;
    }
    FILE *f = fopen(path, "wb");
    if (f != NULL) {
        fwrite(cur_data, 1, cur_size, f);
        fclose(f);
    }
    snprintf(path, sizeof path, "%s/fatal-%016" PRIx64 ".txt", save_dir, h);
    f = fopen(path, "w");
    if (f != NULL) {
        fprintf(f, "%s\n", why);
        fclose(f);
    }
}

static void on_fatal(void *data, const char *why)
{
    (void)data;
    if (tolerate) {
        fatal_seen = 1;
        n_tolerated++;
        fprintf(stderr, "fuzz: TOLERATED known finding: fatal apply #%lu: %s\n",
                n_tolerated, why);
        if (save_dir != NULL) {
            save_input(why);
        }
        return;
    }
    fprintf(stderr, "fuzz_apply: apply stopped the replica: %s\n", why);
    abort();
}

static void on_applied(void *data,
                       uint64_t index,
                       const struct qr_apply_result *results,
                       size_t n)
{
    (void)data;
    for (size_t i = 0; i < n; i++) {
        fprintf(stderr, "fuzz_apply: entry %" PRIu64 " command %zu: %d %s %s\n",
                index, i, results[i].status, results[i].message_id,
                results[i].error);
    }
}

static void remove_dir(void)
{
    DIR *d = opendir(dir);
    if (d != NULL) {
        struct dirent *de;
        char path[512];
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
                continue;
            }
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

static void close_store(void)
{
    if (store != NULL) {
        qr_fsm_close(&fsm);
        qr_store_close(store);
        store = NULL;
        remove_dir();
    }
}

static void open_store(void)
{
    char errmsg[QR_ERRMSG_BYTES];
    const char *base = getenv("QRAFT_FUZZ_STORE_BASE");
    if (base == NULL || base[0] == '\0') {
        base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    }
    snprintf(dir, sizeof dir, "%s/qraft-fuzz-apply-XXXXXX", base);
    FUZZ_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    if (qr_store_open(dir, MAP_BYTES, &store, errmsg) != 0) {
        fprintf(stderr, "fuzz_apply: store: %s\n", errmsg);
        abort();
    }
    FUZZ_CHECK(qr_fsm_init(&fsm, store) == 0, "qr_fsm_init");
    fsm.raft = &fake_raft;
    fsm.on_fatal = on_fatal;
    if (verbose) {
        fsm.on_applied = on_applied;
    }
    memset(&fake_raft, 0, sizeof fake_raft);
    now_ms = NOW_MS;
    fatal_seen = 0;
}

static void setup(void)
{
    const char *v = getenv("QRAFT_FUZZ_APPLY_FRESH");
    fresh = v != NULL && strcmp(v, "1") == 0;
    v = getenv("QRAFT_FUZZ_APPLY_VERBOSE");
    verbose = v != NULL && strcmp(v, "1") == 0;
    tolerate = fuzz_tolerate_known();
    save_dir = getenv("QRAFT_FUZZ_APPLY_SAVE");
    fuzz_quiet_logs();
    open_store();
    atexit(close_store);
}

/* Every kind apply knows; an unknown kind stops a replica on purpose. */
static int known_kind(Qraft__Command__BodyCase c)
{
    switch (c) {
        case QRAFT__COMMAND__BODY_PUBLISH:
        case QRAFT__COMMAND__BODY_CANCEL:
        case QRAFT__COMMAND__BODY_DLQ_REPLAY:
        case QRAFT__COMMAND__BODY_DLQ_DELETE:
        case QRAFT__COMMAND__BODY_SET_SIGNING_KEYS:
        case QRAFT__COMMAND__BODY_DELIVERY_RESULTS:
        case QRAFT__COMMAND__BODY_PRUNE:
        case QRAFT__COMMAND__BODY_SET_NODE_INFO:
        case QRAFT__COMMAND__BODY_ASSIGN_SHARDS:
        case QRAFT__COMMAND__BODY_GROUP_ADD_ENDPOINTS:
        case QRAFT__COMMAND__BODY_GROUP_REMOVE_ENDPOINTS:
        case QRAFT__COMMAND__BODY_GROUP_DELETE:
        case QRAFT__COMMAND__BODY_QUEUE_UPSERT:
        case QRAFT__COMMAND__BODY_QUEUE_DELETE:
        case QRAFT__COMMAND__BODY_QUEUE_PAUSE:
        case QRAFT__COMMAND__BODY_SCHEDULE_UPSERT:
        case QRAFT__COMMAND__BODY_SCHEDULE_DELETE:
        case QRAFT__COMMAND__BODY_SCHEDULE_PAUSE:
        case QRAFT__COMMAND__BODY_SCHEDULE_FIRE:
        case QRAFT__COMMAND__BODY_SET_FEATURE_LEVEL:
        case QRAFT__COMMAND__BODY_WORKFLOW_END:
        case QRAFT__COMMAND__BODY_WAIT_CREATE:
        case QRAFT__COMMAND__BODY_NOTIFY:
        case QRAFT__COMMAND__BODY_WAIT_TIMEOUT:
        case QRAFT__COMMAND__BODY_WORKFLOW_RESUME:
            return 1;
        default:
            return 0;
    }
}

/* Applies the n packed commands (freed here) as one entry. */
static void apply_entry(struct qr_packed *cmds, size_t n)
{
    size_t size = qr_command_entry_size(now_ms, cmds, n);
    struct raft_buffer buf = {.base = raft_malloc(size), .len = size};
    FUZZ_CHECK(buf.base != NULL, "out of memory");
    qr_command_entry_write(now_ms, cmds, n, buf.base, size);
    for (size_t i = 0; i < n; i++) {
        free(cmds[i].data);
    }
    void *result = NULL;
    uint64_t before = fsm.applied_index;
    fake_raft.last_applied = fsm.applied_index;
    int rv = fsm.raft_fsm.apply(&fsm.raft_fsm, &buf, &result);
    raft_free(buf.base);
    if (fatal_seen) {
        return;
    }
    FUZZ_CHECK(rv == 0, "apply failed without calling the fatal hook");
    FUZZ_CHECK(fsm.applied_index == before + 1,
               "apply did not record the entry's index");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        setup();
        ready = 1;
    }
    cur_data = data;
    cur_size = size;
    if (fresh || fatal_seen || ++n_inputs % RESET_EVERY == 0) {
        close_store();
        open_store();
    }

    Qraft__Entry *raw = NULL;
    if (qr_command_decode_entry(data, size, &raw) == 0) {
        qraft__entry__free_unpacked(raw, NULL);
    }

    struct qr_packed cmds[MAX_COMMANDS];
    size_t n = 0;
    unsigned n_entries = 0;
    size_t off = 0;
    while (off + 2 <= size && n_entries < MAX_ENTRIES && !fatal_seen) {
        size_t len = ((size_t)data[off] << 8) | data[off + 1];
        off += 2;
        if (len == 0) {
            if (n > 0) {
                apply_entry(cmds, n);
                n = 0;
                n_entries++;
            }
            if (off < size) {
                now_ms += (uint64_t)data[off++] * 10000;
            }
            continue;
        }
        if (len > size - off) {
            len = size - off;
        }
        Qraft__Command *cmd = qraft__command__unpack(NULL, len, data + off);
        off += len;
        if (cmd == NULL) {
            continue;
        }
        /* The leader packs commands from requests its face decoded, which
         * drops unknown fields (lib/pb.h; F1 in docs/fuzzing.md). */
        qr_pb_drop_unknown(&cmd->base);
        if (known_kind(cmd->body_case) && n < MAX_COMMANDS &&
            qr_command_pack(cmd, &cmds[n]) == 0) {
            if (verbose) {
                fprintf(stderr, "fuzz_apply: command %zu: kind %d, %zu bytes\n",
                        n, (int)cmd->body_case, cmds[n].len);
            }
            n++;
        }
        qraft__command__free_unpacked(cmd, NULL);
    }
    if (n > 0) {
        if (!fatal_seen) {
            apply_entry(cmds, n);
        } else {
            for (size_t i = 0; i < n; i++) {
                free(cmds[i].data);
            }
        }
    }
    return 0;
}
