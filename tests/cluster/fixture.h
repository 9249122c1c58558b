/* The cluster tests' shared harness: FIXTURE_N_SERVERS raft servers on
 * canonical raft's in-memory raft_fixture, each applying through its own
 * qr_fsm to its own LMDB store in a fresh directory under /tmp.
 * Deterministic: the fixture drives raft's time and every entry carries the
 * time the test stamps on it; nothing reads a clock, nothing opens a socket.
 *
 * What it offers a test program (cmocka):
 * - fixture_setup / fixture_teardown: cmocka setup and teardown of a
 *   struct fixture with every server open and server 0 elected leader;
 * - fixture_server_open / fixture_server_close / fixture_start: the parts,
 *   for tests that restart a store or run a smaller cluster;
 * - fixture_submit / fixture_propose: one entry of packed commands into the
 *   log, without or with stepping until it is applied;
 * - fixture_partition: cut one server off both ways, or heal that;
 * - readers of one replica's store (fixture_msg_on, fixture_state_on,
 *   fixture_count_on) and of all of them (fixture_state_of);
 * - the packed commands every program needs (fixture_pack and a few
 *   builders); test-specific commands stay in the test program.
 *
 * Invariants: f->servers[0 .. f->n) are open while the fixture runs; every
 * server's on_applied hook records what its fsm applied (last,
 * applied_indexes); a failed step or store call fails the running test (cmocka
 * asserts), so no function here returns an error. */
#ifndef QRAFT_TESTS_CLUSTER_FIXTURE_H
#define QRAFT_TESTS_CLUSTER_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <raft.h>
#include <raft/fixture.h>

#include "config.h"
#include "repl/command.h"
#include "repl/fsm.h"
#include "store/store.h"

#define FIXTURE_N_SERVERS 3
/* Fixture time (not wall time) a step until applied may take. */
#define FIXTURE_STEP_MS 10000
#define FIXTURE_MAX_RESULTS 8  /* command outcomes kept per applied entry */
#define FIXTURE_MAX_APPLIED 64 /* applied indexes kept per server */

struct fixture_server {
    char dir[64];
    struct qr_store *store;
    struct qr_fsm fsm;
    /* Outcomes of the commands of the last applied entry (at most
     * FIXTURE_MAX_RESULTS of them). */
    struct qr_apply_result last[FIXTURE_MAX_RESULTS];
    size_t n_last;
    /* Raft indexes of the entries applied since the server was opened, in
     * order (the first FIXTURE_MAX_APPLIED of them). */
    uint64_t applied_indexes[FIXTURE_MAX_APPLIED];
    size_t n_applied;
};

struct fixture {
    struct raft_fixture raft;
    struct fixture_server servers[FIXTURE_N_SERVERS];
    unsigned n;              /* servers in the running raft fixture */
    struct qr_limits limits; /* qr_config_defaults' limits */
    /* For the test program: the server it proposes on (fixture_setup: 0),
     * its message id sequence (fixture_setup: 1) and its clock (0). */
    unsigned leader;
    uint32_t next_seq;
    uint64_t now_ms;
};

/* One raft_apply in flight; the callback records how it ended. */
struct fixture_apply {
    struct raft_apply req;
    int status;
    bool done;
};

/* cmocka setup: a new fixture (*state) of FIXTURE_N_SERVERS fresh servers,
 * server 0 the leader. Always returns 0 (failures assert). */
int fixture_setup(void **state);

/* cmocka teardown: closes raft, then closes the f->n servers and removes
 * their directories, frees the fixture. */
int fixture_teardown(void **state);

/* The map size fixture_server_open gives a store (64 MiB unless a test
 * sets it). */
extern uint64_t fixture_map_bytes;

/* Opens s over dir, or over a fresh /tmp directory when dir is NULL, with
 * its fsm and on_applied hook (the records start empty). */
void fixture_server_open(struct fixture_server *s, const char *dir);

/* Closes s's fsm and store; removes its directory when remove_dir. */
void fixture_server_close(struct fixture_server *s, bool remove_dir);

/* Starts a raft fixture of n servers over f->servers[0 .. n), already open,
 * and steps until server 0 is the leader. */
void fixture_start(struct fixture *f, unsigned n);

/* Hands one entry of the n commands (freed here) stamped now_ms to server
 * `at`. Returns new (free with free() once done; after raft_fixture_close
 * it may never be done). */
struct fixture_apply *fixture_submit(struct fixture *f,
                                     unsigned at,
                                     struct qr_packed *cmds,
                                     size_t n,
                                     uint64_t now_ms);

/* As fixture_submit, then steps until server `until` (f->n: every server)
 * has applied the entry and asserts raft accepted it. Returns its index. */
uint64_t fixture_propose(struct fixture *f,
                         unsigned at,
                         struct qr_packed *cmds,
                         size_t n,
                         uint64_t now_ms,
                         unsigned until);

/* Cuts server i off from every other server, both ways, or heals that.
 * Saturated links drop messages silently, as a real partition does, and the
 * fixture leaves them out when it looks for a stable leader (its disconnect
 * is one-way and makes sends fail at once). */
void fixture_partition(struct fixture *f, unsigned i, bool cut);

/* Message id on one replica: new (free with qraft__message__free_unpacked)
 * or NULL if absent. */
Qraft__Message *fixture_msg_on(struct fixture_server *s, const char *id);

/* The state of message id on one replica; -1 if absent. */
int fixture_state_on(struct fixture_server *s, const char *id);

/* The state of message id on every running replica, which must all agree;
 * -1 if absent. */
int fixture_state_of(struct fixture *f, const char *id);

/* How many messages one replica holds in state. */
uint64_t fixture_count_on(struct fixture_server *s, Qraft__MessageState state);

/* Packs cmd (borrowed); the result's data is new (fixture_propose frees). */
struct qr_packed fixture_pack(Qraft__Command *cmd);

struct qr_packed fixture_cancel_cmd(const char *id);
struct qr_packed fixture_replay_cmd(const char *id);
struct qr_packed fixture_feature_level_cmd(uint32_t level);

#endif
