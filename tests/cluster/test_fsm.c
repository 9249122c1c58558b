/* The FSM on raft_fixture: three in-memory raft servers, each applying to its
 * own LMDB store. Deterministic (the fixture drives time), no sockets.
 *
 * What a user relies on and these tests check: a committed publish is on
 * every replica; a partitioned leader's replacement keeps every committed
 * message and accepts new ones; an entry replayed after a restart is not
 * applied a second time; a snapshot restores a lagging replica to the same
 * state as the others; a schedule's slot fires once however often and by
 * whichever leader it is proposed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "fixture.h"
#include "lib/err.h"
#include "repl/redact.h"

static struct qr_packed publish_seq(struct fixture *f,
                                    uint64_t seq,
                                    const char *dedup_id,
                                    char id_out[QR_ID_BYTES])
{
    Qraft__PublishRequest req = QRAFT__PUBLISH_REQUEST__INIT;
    req.url = "http://127.0.0.1:9/hook";
    req.body.data = (uint8_t *)"hello";
    req.body.len = 5;
    req.delay_ms = 3600 * 1000;
    req.dedup_id = (char *)(dedup_id != NULL ? dedup_id : "");
    char id[QR_ID_BYTES];
    qr_command_message_id(id, 1000000 + seq, 1, (uint32_t)seq);
    struct qr_packed packed;
    assert_int_equal(qr_command_pack_publish(&req, id, &f->limits, &packed), 0);
    if (id_out != NULL) {
        memcpy(id_out, id, QR_ID_BYTES);
    }
    return packed;
}

/* A publish with a new message id. */
static struct qr_packed publish_cmd(struct fixture *f,
                                    const char *dedup_id,
                                    char id_out[QR_ID_BYTES])
{
    return publish_seq(f, f->next_seq++, dedup_id, id_out);
}

/* The cluster's feature level starts at the base level, rises on every
 * replica with SetFeatureLevel, never goes back down, and survives a
 * restart. */
static void test_feature_level_only_rises(void **state)
{
    struct fixture *f = *state;
    for (unsigned i = 0; i < f->n; i++) {
        assert_int_equal(f->servers[i].fsm.feature_level,
                         QR_FSM_BASE_FEATURE_LEVEL);
    }
    struct qr_packed cmd = fixture_feature_level_cmd(2);
    fixture_propose(f, 0, &cmd, 1, 1000, f->n);
    cmd = fixture_feature_level_cmd(1);
    fixture_propose(f, 0, &cmd, 1, 2000, f->n);
    for (unsigned i = 0; i < f->n; i++) {
        assert_int_equal(f->servers[i].fsm.feature_level, 2);
    }
    char dir[64];
    snprintf(dir, sizeof dir, "%s", f->servers[1].dir);
    fixture_server_close(&f->servers[1], false);
    fixture_server_open(&f->servers[1], dir);
    assert_int_equal(f->servers[1].fsm.feature_level, 2);
}

/* Cuts the leader, server 0, off and steps until the others elect one of
 * themselves. Returns the new leader's index. */
static unsigned cut_off_leader(struct fixture *f)
{
    fixture_partition(f, 0, true);
    assert_true(
        raft_fixture_step_until_has_no_leader(&f->raft, FIXTURE_STEP_MS) ||
        f->raft.leader_id != 1);
    assert_true(raft_fixture_step_until_has_leader(&f->raft, FIXTURE_STEP_MS));
    unsigned leader = raft_fixture_leader_index(&f->raft);
    assert_int_not_equal(leader, 0);
    return leader;
}

/* A committed publish is stored, pending, on every replica, with the
 * leader's stamp and defaults; a duplicate dedup id stores nothing more. */
static void test_publish_replicates(void **state)
{
    struct fixture *f = *state;
    char id[QR_ID_BYTES];
    struct qr_packed cmds[2];
    cmds[0] = publish_cmd(f, "order-42", id);
    cmds[1] = publish_cmd(f, "order-42", NULL);
    fixture_propose(f, 0, cmds, 2, 5000, FIXTURE_N_SERVERS);

    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        struct fixture_server *s = &f->servers[i];
        assert_int_equal(fixture_state_on(s, id),
                         QRAFT__MESSAGE_STATE__PENDING);
        assert_int_equal(fixture_count_on(s, QRAFT__MESSAGE_STATE__PENDING), 1);

        Qraft__Message *m = fixture_msg_on(s, id);
        assert_non_null(m);
        assert_int_equal(m->created_ms, 5000);
        assert_int_equal(m->not_before_ms, 5000 + 3600 * 1000);
        assert_int_equal(m->max_retries, f->limits.default_retries);
        assert_string_equal(m->method, "POST");
        assert_int_equal(m->shard, qr_fsm_shard_of(id));
        qraft__message__free_unpacked(m, NULL);
    }
}

/* The leader is cut off: the other two elect a new leader that has every
 * committed message and commits new ones; the old leader catches up once
 * it is back. */
static void test_leader_partitioned(void **state)
{
    struct fixture *f = *state;
    char first[QR_ID_BYTES];
    char second[QR_ID_BYTES];
    struct qr_packed cmd = publish_cmd(f, NULL, first);
    fixture_propose(f, 0, &cmd, 1, 1000, FIXTURE_N_SERVERS);

    unsigned leader = cut_off_leader(f);

    cmd = publish_cmd(f, NULL, second);
    fixture_propose(f, leader, &cmd, 1, 2000, leader);
    assert_int_equal(fixture_state_on(&f->servers[leader], first),
                     QRAFT__MESSAGE_STATE__PENDING);
    assert_int_equal(fixture_state_on(&f->servers[0], second), -1);

    fixture_partition(f, 0, false);
    cmd = fixture_cancel_cmd(first);
    fixture_propose(f, leader, &cmd, 1, 3000, FIXTURE_N_SERVERS);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        assert_int_equal(fixture_state_on(&f->servers[i], first),
                         QRAFT__MESSAGE_STATE__CANCELLED);
        assert_int_equal(fixture_state_on(&f->servers[i], second),
                         QRAFT__MESSAGE_STATE__PENDING);
    }
}

/* A restarted node replays its log through apply: entries at or below the
 * stored applied index must not apply again. Here a fresh one-node cluster
 * runs over server 0's store and commits the same commands at the same
 * indexes: apply must skip them, so the cancelled message stays cancelled
 * and no outcome is reported for those indexes. */
static void test_no_double_apply_after_restart(void **state)
{
    struct fixture *f = *state;
    char id[QR_ID_BYTES];
    uint64_t seq = f->next_seq;
    struct qr_packed cmd = publish_cmd(f, NULL, id);
    uint64_t publish_index =
        fixture_propose(f, 0, &cmd, 1, 1000, FIXTURE_N_SERVERS);
    cmd = fixture_cancel_cmd(id);
    uint64_t applied = fixture_propose(f, 0, &cmd, 1, 2000, FIXTURE_N_SERVERS);
    assert_int_equal(f->servers[0].fsm.applied_index, applied);
    assert_int_equal(fixture_state_on(&f->servers[0], id),
                     QRAFT__MESSAGE_STATE__CANCELLED);

    /* "Restart": a new raft over server 0's store alone. */
    raft_fixture_close(&f->raft);
    char dir[64];
    snprintf(dir, sizeof dir, "%s", f->servers[0].dir);
    fixture_server_close(&f->servers[0], false);
    for (unsigned i = 1; i < FIXTURE_N_SERVERS; i++) {
        fixture_server_close(&f->servers[i], true);
    }
    fixture_server_open(&f->servers[0], dir);
    assert_int_equal(f->servers[0].fsm.applied_index, applied);
    fixture_start(f, 1);

    /* The same publish, committed again up to the index it had: skipped. */
    uint64_t index = 0;
    while (index < publish_index) {
        cmd = publish_seq(f, seq, NULL, NULL);
        index = fixture_propose(f, 0, &cmd, 1, 1000, 0);
    }
    for (size_t i = 0; i < f->servers[0].n_applied; i++) {
        assert_true(f->servers[0].applied_indexes[i] > applied);
    }
    assert_int_equal(fixture_state_on(&f->servers[0], id),
                     QRAFT__MESSAGE_STATE__CANCELLED);
    assert_int_equal(
        fixture_count_on(&f->servers[0], QRAFT__MESSAGE_STATE__CANCELLED), 1);
    assert_int_equal(
        fixture_count_on(&f->servers[0], QRAFT__MESSAGE_STATE__PENDING), 0);

    /* Past the stored index, entries apply again. */
    while (index <= applied) {
        cmd = fixture_cancel_cmd("msg_none");
        index = fixture_propose(f, 0, &cmd, 1, 3000, 0);
    }
    char fresh[QR_ID_BYTES];
    cmd = publish_cmd(f, NULL, fresh);
    index = fixture_propose(f, 0, &cmd, 1, 4000, 0);
    assert_true(index > applied);
    assert_int_equal(f->servers[0].fsm.applied_index, index);
    assert_int_equal(fixture_state_on(&f->servers[0], fresh),
                     QRAFT__MESSAGE_STATE__PENDING);
}

/* A replica that was cut off while the leader took a snapshot and compacted
 * its log is brought back by installing that snapshot: it ends with the
 * same messages as the others. */
static ino_t data_file_inode(const struct fixture_server *sv)
{
    char path[128];
    struct stat st;
    snprintf(path, sizeof path, "%s/data.mdb", sv->dir);
    assert_int_equal(stat(path, &st), 0);
    return st.st_ino;
}

/* A follower cut off while the others compact their logs catches up from
 * a snapshot: in the pairs format below QR_FEATURE_LEVEL_IMAGE_SNAPSHOTS
 * (restored into its environment), as a page image at or above it (its
 * data.mdb replaced by the image's file). */
static void snapshot_catch_up(struct fixture *f, uint32_t level)
{
    char ids[40][QR_ID_BYTES];
    if (level > QR_FSM_BASE_FEATURE_LEVEL) {
        struct qr_packed cmd = fixture_feature_level_cmd(level);
        fixture_propose(f, 0, &cmd, 1, 500, FIXTURE_N_SERVERS);
    }
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        struct raft *r = raft_fixture_get(&f->raft, i);
        raft_set_snapshot_threshold(r, 8);
        raft_set_snapshot_trailing(r, 2);
    }
    for (unsigned i = 0; i < 2; i++) {
        raft_fixture_disconnect(&f->raft, i, 2);
        raft_fixture_disconnect(&f->raft, 2, i);
    }
    for (unsigned i = 0; i < 40; i++) {
        struct qr_packed cmd = publish_cmd(f, NULL, ids[i]);
        fixture_propose(f, 0, &cmd, 1, 1000 + i, 0);
    }
    assert_int_equal(fixture_state_on(&f->servers[2], ids[0]), -1);
    ino_t before = data_file_inode(&f->servers[2]);

    for (unsigned i = 0; i < 2; i++) {
        raft_fixture_reconnect(&f->raft, i, 2);
        raft_fixture_reconnect(&f->raft, 2, i);
    }
    struct qr_packed cmd = fixture_cancel_cmd(ids[0]);
    fixture_propose(f, 0, &cmd, 1, 5000, FIXTURE_N_SERVERS);

    for (unsigned i = 0; i < 40; i++) {
        int want = i == 0 ? QRAFT__MESSAGE_STATE__CANCELLED
                          : QRAFT__MESSAGE_STATE__PENDING;
        assert_int_equal(fixture_state_on(&f->servers[2], ids[i]), want);
    }
    assert_int_equal(
        fixture_count_on(&f->servers[2], QRAFT__MESSAGE_STATE__PENDING), 39);
    assert_int_equal(f->servers[2].fsm.applied_index,
                     f->servers[0].fsm.applied_index);
    assert_int_equal(f->servers[2].fsm.feature_level, level);
    bool image = level >= QR_FEATURE_LEVEL_IMAGE_SNAPSHOTS;
    assert_int_equal(data_file_inode(&f->servers[2]) != before, image);

    /* The follower's store goes on applying after the swap. */
    cmd = fixture_cancel_cmd(ids[1]);
    fixture_propose(f, 0, &cmd, 1, 6000, FIXTURE_N_SERVERS);
    assert_int_equal(fixture_state_on(&f->servers[2], ids[1]),
                     QRAFT__MESSAGE_STATE__CANCELLED);
}

static void test_snapshot_catch_up(void **state)
{
    snapshot_catch_up(*state, QR_FSM_BASE_FEATURE_LEVEL);
}

static void test_snapshot_catch_up_image(void **state)
{
    snapshot_catch_up(*state, QR_FEATURE_LEVEL_IMAGE_SNAPSHOTS);
}

/* ------------------------------------------------------------------------ */
/* Schedules */

#define SLOT(n) ((uint64_t)(n)*60000)

/* A schedule to a url group (topic) or, when topic is NULL, to one URL. */
static struct qr_packed schedule_upsert_to(const char *id,
                                           uint64_t next_ms,
                                           const char *topic)
{
    Qraft__PublishRequest tmpl = QRAFT__PUBLISH_REQUEST__INIT;
    if (topic != NULL) {
        tmpl.topic_name = (char *)topic;
    } else {
        tmpl.url = "http://127.0.0.1:9/tick";
    }
    Qraft__Schedule sc = QRAFT__SCHEDULE__INIT;
    sc.id = (char *)id;
    sc.cron = "* * * * *";
    sc.request = &tmpl;
    sc.next_slot_ms = next_ms;
    Qraft__ScheduleUpsert u = QRAFT__SCHEDULE_UPSERT__INIT;
    u.schedule = &sc;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_SCHEDULE_UPSERT;
    cmd.schedule_upsert = &u;
    return fixture_pack(&cmd);
}

static struct qr_packed schedule_upsert_cmd(const char *id, uint64_t next_ms)
{
    return schedule_upsert_to(id, next_ms, NULL);
}

static struct qr_packed schedule_fire_cmd(const char *id, uint64_t slot_ms)
{
    Qraft__ScheduleFire fire = QRAFT__SCHEDULE_FIRE__INIT;
    fire.schedule_id = (char *)id;
    fire.slot_ms = slot_ms;
    fire.next_slot_ms = slot_ms + 60000;
    fire.default_retries = 3;
    fire.default_timeout_ms = 30000;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_SCHEDULE_FIRE;
    cmd.schedule_fire = &fire;
    return fixture_pack(&cmd);
}

static struct qr_packed schedule_pause_cmd(const char *id,
                                           bool paused,
                                           uint64_t next_ms)
{
    Qraft__SchedulePause p = QRAFT__SCHEDULE_PAUSE__INIT;
    p.schedule_id = (char *)id;
    p.paused = paused;
    p.next_slot_ms = next_ms;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_SCHEDULE_PAUSE;
    cmd.schedule_pause = &p;
    return fixture_pack(&cmd);
}

struct ticks {
    const char *schedule_id;
    size_t n;
    char ids[8][QR_ID_BYTES];
};

static int collect_tick(void *arg, const Qraft__Message *m)
{
    struct ticks *t = arg;
    if (strcmp(m->schedule_id, t->schedule_id) == 0) {
        assert_true(t->n < 8);
        snprintf(t->ids[t->n++], QR_ID_BYTES, "%s", m->id);
    }
    return 0;
}

/* The messages schedule `id` created on one replica, in id order. */
static void ticks_on(struct fixture_server *s, const char *id, struct ticks *t)
{
    struct qr_store_txn *txn;
    memset(t, 0, sizeof *t);
    t->schedule_id = id;
    assert_int_equal(qr_store_txn_begin(s->store, false, &txn), 0);
    assert_int_equal(
        qr_store_msg_list(txn, QRAFT__MESSAGE_STATE__STATE_UNSPECIFIED, NULL,
                          SIZE_MAX, collect_tick, t),
        0);
    qr_store_txn_abort(txn);
}

static void expect_ticks(struct fixture *f, const char *id, size_t n)
{
    struct ticks first;
    ticks_on(&f->servers[0], id, &first);
    assert_int_equal(first.n, n);
    for (unsigned i = 1; i < FIXTURE_N_SERVERS; i++) {
        struct ticks t;
        ticks_on(&f->servers[i], id, &t);
        assert_int_equal(t.n, n);
        for (size_t k = 0; k < n; k++) {
            assert_string_equal(t.ids[k], first.ids[k]); /* same ids */
        }
    }
}

static void expect_slots(struct fixture_server *s,
                         const char *id,
                         uint64_t last_ms,
                         uint64_t next_ms)
{
    struct qr_store_txn *txn;
    Qraft__Schedule *sc = NULL;
    assert_int_equal(qr_store_txn_begin(s->store, false, &txn), 0);
    assert_int_equal(qr_store_schedule_get(txn, id, &sc), 0);
    qr_store_txn_abort(txn);
    assert_true(sc->last_slot_ms == last_ms);
    assert_true(sc->next_slot_ms == next_ms);
    qraft__schedule__free_unpacked(sc, NULL);
}

/* A slot fires once, however often it is proposed: twice in one entry,
 * again in a later entry, and again by the next leader after the first was
 * cut off. A paused schedule fires nothing; a resumed one fires from its
 * new next slot only; a replaced one keeps its fence; a deleted one fires
 * nothing. Every replica creates the same message ids. */
static void test_schedule_fires_once_per_slot(void **state)
{
    struct fixture *f = *state;
    struct qr_packed cmds[3];

    cmds[0] = schedule_upsert_cmd("nightly", SLOT(1));
    fixture_propose(f, 0, cmds, 1, 1000, FIXTURE_N_SERVERS);
    /* Not due yet at the entry's time: refused. */
    cmds[0] = schedule_fire_cmd("nightly", SLOT(1));
    fixture_propose(f, 0, cmds, 1, SLOT(1) - 1, FIXTURE_N_SERVERS);
    expect_ticks(f, "nightly", 0);

    cmds[0] = schedule_fire_cmd("nightly", SLOT(1));
    cmds[1] = schedule_fire_cmd("nightly", SLOT(1));
    fixture_propose(f, 0, cmds, 2, SLOT(1) + 500, FIXTURE_N_SERVERS);
    cmds[0] = schedule_fire_cmd("nightly", SLOT(1));
    fixture_propose(f, 0, cmds, 1, SLOT(1) + 900, FIXTURE_N_SERVERS);
    expect_ticks(f, "nightly", 1);
    expect_slots(&f->servers[1], "nightly", SLOT(1), SLOT(2));

    /* The leader is cut off after proposing slot 2; the next leader
     * proposes slot 2 as well (it cannot know whether the first will
     * commit). */
    unsigned leader = cut_off_leader(f);
    cmds[0] = schedule_fire_cmd("nightly", SLOT(2));
    cmds[1] = schedule_fire_cmd("nightly", SLOT(1)); /* stale */
    fixture_propose(f, leader, cmds, 2, SLOT(2) + 100, leader);
    fixture_partition(f, 0, false);
    cmds[0] = schedule_fire_cmd("nightly", SLOT(2));
    fixture_propose(f, leader, cmds, 1, SLOT(2) + 200, FIXTURE_N_SERVERS);
    expect_ticks(f, "nightly", 2);
    expect_slots(&f->servers[0], "nightly", SLOT(2), SLOT(3));

    /* Paused: slot 3 does not fire. Resumed with next slot 5: slot 4 (a
     * stale proposal) does not fire, slot 5 does. */
    cmds[0] = schedule_pause_cmd("nightly", true, 0);
    cmds[1] = schedule_fire_cmd("nightly", SLOT(3));
    fixture_propose(f, leader, cmds, 2, SLOT(3) + 100, FIXTURE_N_SERVERS);
    expect_ticks(f, "nightly", 2);
    cmds[0] = schedule_pause_cmd("nightly", false, SLOT(5));
    cmds[1] = schedule_fire_cmd("nightly", SLOT(4));
    cmds[2] = schedule_fire_cmd("nightly", SLOT(5));
    fixture_propose(f, leader, cmds, 3, SLOT(5) + 100, FIXTURE_N_SERVERS);
    expect_ticks(f, "nightly", 3);

    /* Replaced wholesale: the fence stays, slot 5 does not fire again. */
    cmds[0] = schedule_upsert_cmd("nightly", SLOT(5));
    cmds[1] = schedule_fire_cmd("nightly", SLOT(5));
    fixture_propose(f, leader, cmds, 2, SLOT(5) + 200, FIXTURE_N_SERVERS);
    expect_ticks(f, "nightly", 3);
    expect_slots(&f->servers[2], "nightly", SLOT(5), SLOT(5));

    /* Deleted: nothing fires. */
    Qraft__ScheduleDelete d = QRAFT__SCHEDULE_DELETE__INIT;
    d.schedule_id = "nightly";
    Qraft__Command del = QRAFT__COMMAND__INIT;
    del.body_case = QRAFT__COMMAND__BODY_SCHEDULE_DELETE;
    del.schedule_delete = &d;
    cmds[0] = fixture_pack(&del);
    cmds[1] = schedule_fire_cmd("nightly", SLOT(6));
    fixture_propose(f, leader, cmds, 2, SLOT(6) + 100, FIXTURE_N_SERVERS);
    expect_ticks(f, "nightly", 3);
}

/* A URL-group command, packed. */
static struct qr_packed group_cmd(int kind,
                                  const char *group,
                                  Qraft__UrlGroupEndpoint **eps,
                                  size_t n)
{
    Qraft__GroupAddEndpoints add = QRAFT__GROUP_ADD_ENDPOINTS__INIT;
    Qraft__GroupRemoveEndpoints rm = QRAFT__GROUP_REMOVE_ENDPOINTS__INIT;
    Qraft__GroupDelete del = QRAFT__GROUP_DELETE__INIT;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = (Qraft__Command__BodyCase)kind;
    switch (cmd.body_case) {
        case QRAFT__COMMAND__BODY_GROUP_ADD_ENDPOINTS:
            add.group = (char *)group;
            add.endpoints = eps;
            add.n_endpoints = n;
            add.max_endpoints = 3;
            cmd.group_add_endpoints = &add;
            break;
        case QRAFT__COMMAND__BODY_GROUP_REMOVE_ENDPOINTS:
            rm.group = (char *)group;
            rm.endpoints = eps;
            rm.n_endpoints = n;
            cmd.group_remove_endpoints = &rm;
            break;
        default:
            del.group = (char *)group;
            cmd.group_delete = &del;
            break;
    }
    return fixture_pack(&cmd);
}

/* The endpoints of group on one replica as "name=url;..." ("-" when the
 * group does not exist). */
static void group_on(struct fixture_server *s,
                     const char *group,
                     char *out,
                     size_t n)
{
    struct qr_store_txn *txn;
    Qraft__UrlGroup *g = NULL;
    assert_int_equal(qr_store_txn_begin(s->store, false, &txn), 0);
    int rv = qr_store_group_get(txn, group, &g);
    qr_store_txn_abort(txn);
    if (rv == QR_ENOTFOUND) {
        snprintf(out, n, "-");
        return;
    }
    assert_int_equal(rv, 0);
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < g->n_endpoints; i++) {
        used += (size_t)snprintf(out + used, n - used, "%s=%s;",
                                 g->endpoints[i]->name, g->endpoints[i]->url);
    }
    qraft__url_group__free_unpacked(g, NULL);
}

static void assert_group_everywhere(struct fixture *f,
                                    const char *group,
                                    const char *want)
{
    char got[512];
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        group_on(&f->servers[i], group, got, sizeof got);
        assert_string_equal(got, want);
    }
}

/* A schedule to a url group creates, at each tick, one message per endpoint
 * the group has at that point of the log, the same ids on every replica;
 * once the group is deleted its ticks create nothing. */
static void test_schedule_to_group_fans_out(void **state)
{
    struct fixture *f = *state;
    Qraft__UrlGroupEndpoint a = QRAFT__URL_GROUP_ENDPOINT__INIT;
    Qraft__UrlGroupEndpoint b = QRAFT__URL_GROUP_ENDPOINT__INIT;
    a.name = "a";
    a.url = "http://127.0.0.1:9/a";
    b.url = "http://127.0.0.1:9/b";
    Qraft__UrlGroupEndpoint *eps[] = {&a, &b};
    struct qr_packed cmds[1];

    cmds[0] =
        group_cmd(QRAFT__COMMAND__BODY_GROUP_ADD_ENDPOINTS, "fan", eps, 2);
    fixture_propose(f, 0, cmds, 1, 1000, FIXTURE_N_SERVERS);
    cmds[0] = schedule_upsert_to("to-fan", SLOT(1), "fan");
    fixture_propose(f, 0, cmds, 1, 1000, FIXTURE_N_SERVERS);
    cmds[0] = schedule_fire_cmd("to-fan", SLOT(1));
    fixture_propose(f, 0, cmds, 1, SLOT(1) + 10, FIXTURE_N_SERVERS);
    expect_ticks(f, "to-fan", 2);

    struct ticks t;
    ticks_on(&f->servers[2], "to-fan", &t);
    for (size_t k = 0; k < t.n; k++) {
        Qraft__Message *m = fixture_msg_on(&f->servers[2], t.ids[k]);
        assert_non_null(m);
        assert_string_equal(m->topic_name, "fan");
        assert_string_equal(m->url, k == 0 ? a.url : b.url);
        assert_string_equal(m->endpoint_name, k == 0 ? "a" : "");
        qraft__message__free_unpacked(m, NULL);
    }

    cmds[0] = group_cmd(QRAFT__COMMAND__BODY_GROUP_DELETE, "fan", NULL, 0);
    fixture_propose(f, 0, cmds, 1, SLOT(1) + 20, FIXTURE_N_SERVERS);
    cmds[0] = schedule_fire_cmd("to-fan", SLOT(2));
    fixture_propose(f, 0, cmds, 1, SLOT(2) + 10, FIXTURE_N_SERVERS);
    expect_ticks(f, "to-fan", 2);
    expect_slots(&f->servers[1], "to-fan", SLOT(2), SLOT(3));
}

/* URL groups apply the same on every replica: the same URL again replaces
 * (never duplicates), a name taken by another URL or a group over its
 * limit refuses the whole command, removing the last endpoint deletes the
 * group; a group publish member keeps its group and metadata. */
static void test_url_groups_replicate(void **state)
{
    struct fixture *f = *state;
    Qraft__UrlGroupEndpoint a = QRAFT__URL_GROUP_ENDPOINT__INIT;
    Qraft__UrlGroupEndpoint b = QRAFT__URL_GROUP_ENDPOINT__INIT;
    Qraft__UrlGroupEndpoint c = QRAFT__URL_GROUP_ENDPOINT__INIT;
    Qraft__UrlGroupEndpoint d = QRAFT__URL_GROUP_ENDPOINT__INIT;
    a.name = "a";
    a.url = "http://h/a";
    b.url = "http://h/b";
    c.name = "a"; /* a's name for another URL */
    c.url = "http://h/c";
    d.url = "http://h/d";
    Qraft__UrlGroupEndpoint *eps[4] = {&a, &b, &c, &d};
    const int add = QRAFT__COMMAND__BODY_GROUP_ADD_ENDPOINTS;
    const int rm = QRAFT__COMMAND__BODY_GROUP_REMOVE_ENDPOINTS;

    struct qr_packed cmd = group_cmd(add, "g", eps, 2);
    fixture_propose(f, 0, &cmd, 1, 1000, FIXTURE_N_SERVERS);
    assert_group_everywhere(f, "g", "a=http://h/a;=http://h/b;");

    /* b's URL again, now named: replaced in place. */
    Qraft__UrlGroupEndpoint b2 = QRAFT__URL_GROUP_ENDPOINT__INIT;
    b2.name = "bee";
    b2.url = "http://h/b";
    Qraft__UrlGroupEndpoint *again[1] = {&b2};
    struct qr_packed cmds[3];
    cmds[0] = group_cmd(add, "g", again, 1);
    cmds[1] = group_cmd(add, "g", &eps[2], 1); /* name taken: refused */
    cmds[2] = group_cmd(add, "g", &eps[2], 2); /* refused too: nothing of it */
    fixture_propose(f, 0, cmds, 3, 2000, FIXTURE_N_SERVERS);
    assert_group_everywhere(f, "g", "a=http://h/a;bee=http://h/b;");

    /* Over the command's limit (3): refused whole. */
    Qraft__UrlGroupEndpoint e = QRAFT__URL_GROUP_ENDPOINT__INIT;
    e.url = "http://h/e";
    Qraft__UrlGroupEndpoint *two[2] = {&d, &e};
    cmd = group_cmd(add, "g", two, 2);
    fixture_propose(f, 0, &cmd, 1, 3000, FIXTURE_N_SERVERS);
    assert_group_everywhere(f, "g", "a=http://h/a;bee=http://h/b;");

    /* Remove by name and by URL; an unknown one refuses the command. */
    Qraft__UrlGroupEndpoint by_name = QRAFT__URL_GROUP_ENDPOINT__INIT;
    by_name.name = "a";
    Qraft__UrlGroupEndpoint unknown = QRAFT__URL_GROUP_ENDPOINT__INIT;
    unknown.url = "http://h/zzz";
    Qraft__UrlGroupEndpoint *rm_bad[2] = {&by_name, &unknown};
    cmds[0] = group_cmd(rm, "g", rm_bad, 2);
    cmds[1] = group_cmd(rm, "g", rm_bad, 1);
    fixture_propose(f, 0, cmds, 2, 4000, FIXTURE_N_SERVERS);
    assert_group_everywhere(f, "g", "bee=http://h/b;");
    Qraft__UrlGroupEndpoint by_url = QRAFT__URL_GROUP_ENDPOINT__INIT;
    by_url.url = "http://h/b";
    Qraft__UrlGroupEndpoint *last[1] = {&by_url};
    cmd = group_cmd(rm, "g", last, 1);
    fixture_propose(f, 0, &cmd, 1, 5000, FIXTURE_N_SERVERS);
    assert_group_everywhere(f, "g", "-");

    cmds[0] = group_cmd(add, "h", eps, 1);
    cmds[1] = group_cmd(QRAFT__COMMAND__BODY_GROUP_DELETE, "h", NULL, 0);
    fixture_propose(f, 0, cmds, 2, 6000, FIXTURE_N_SERVERS);
    assert_group_everywhere(f, "h", "-");

    /* A group member's metadata is stored on every replica. */
    Qraft__PublishRequest req = QRAFT__PUBLISH_REQUEST__INIT;
    char *labels[2] = {"x", "y"};
    req.url = "http://h/a";
    req.topic_name = "g";
    req.endpoint_name = "a";
    req.labels = labels;
    req.n_labels = 2;
    req.caller_ip = "10.0.0.7";
    req.flow_control_key = "k";
    req.flow_rate = 5;
    req.flow_period_s = 60;
    char id[QR_ID_BYTES];
    qr_command_message_id(id, 7000, 1, 1);
    assert_int_equal(qr_command_pack_publish(&req, id, &f->limits, &cmd), 0);
    fixture_propose(f, 0, &cmd, 1, 7000, FIXTURE_N_SERVERS);
    for (unsigned i = 0; i < FIXTURE_N_SERVERS; i++) {
        Qraft__Message *m = fixture_msg_on(&f->servers[i], id);
        assert_non_null(m);
        assert_string_equal(m->topic_name, "g");
        assert_string_equal(m->endpoint_name, "a");
        assert_int_equal(m->n_labels, 2);
        assert_string_equal(m->labels[1], "y");
        assert_string_equal(m->caller_ip, "10.0.0.7");
        assert_string_equal(m->flow_control_key, "k");
        assert_int_equal(m->flow_rate, 5);
        assert_int_equal(m->flow_period_s, 60);
        qraft__message__free_unpacked(m, NULL);
    }
}

static void fail_on_fatal(void *data, const char *why)
{
    (void)data;
    fail_msg("apply stopped a replica: %s", why);
}

/* A DeliveryResults command of one result for message `id`. */
static struct qr_packed result_cmd(const char *id)
{
    Qraft__DeliveryResult r = QRAFT__DELIVERY_RESULT__INIT;
    Qraft__DeliveryResult *rs[] = {&r};
    r.message_id = (char *)id;
    r.attempt = 0;
    r.outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_DELIVERED;
    Qraft__DeliveryResults batch = QRAFT__DELIVERY_RESULTS__INIT;
    batch.n_results = 1;
    batch.results = rs;
    Qraft__Command cmd = QRAFT__COMMAND__INIT;
    cmd.body_case = QRAFT__COMMAND__BODY_DELIVERY_RESULTS;
    cmd.delivery_results = &batch;
    return fixture_pack(&cmd);
}

/* Apply is total: commands whose content no store can hold (a 600-byte or
 * empty message id, as one REST request or one peer frame could carry
 * past a face that forgot a check) are refused alike on every replica with
 * a bad-request result, change nothing, and stop nothing: the entry's
 * other commands apply, and so do the entries after it. */
static void test_poison_commands_are_refused(void **state)
{
    struct fixture *f = *state;
    for (unsigned i = 0; i < f->n; i++) {
        f->servers[i].fsm.on_fatal = fail_on_fatal;
    }
    char long_id[601];
    memset(long_id, 'm', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    char before[QR_ID_BYTES];
    char after[QR_ID_BYTES];
    char next[QR_ID_BYTES];
    struct qr_packed cmds[7];
    cmds[0] = publish_cmd(f, NULL, before);
    cmds[1] = fixture_cancel_cmd(long_id);
    cmds[2] = fixture_replay_cmd(long_id);
    cmds[3] = fixture_cancel_cmd("");
    cmds[4] = result_cmd("");
    cmds[5] = result_cmd(long_id);
    cmds[6] = publish_cmd(f, NULL, after);
    fixture_propose(f, 0, cmds, 7, 1000, f->n);

    for (unsigned i = 0; i < f->n; i++) {
        struct fixture_server *s = &f->servers[i];
        assert_int_equal(s->n_last, 7);
        assert_int_equal(s->last[0].status, 0);
        assert_int_equal(s->last[1].status, QR_EBADREQ);
        assert_non_null(strstr(s->last[1].error, "message id too long"));
        assert_int_equal(s->last[2].status, QR_EBADREQ);
        assert_int_equal(s->last[3].status, QR_EBADREQ);
        assert_non_null(strstr(s->last[3].error, "empty message id"));
        /* A result naming no message changes nothing, like one for a
         * message that is gone. */
        assert_int_equal(s->last[4].status, 0);
        assert_int_equal(s->last[5].status, 0);
        assert_int_equal(s->last[6].status, 0);
        assert_int_equal(fixture_count_on(s, QRAFT__MESSAGE_STATE__PENDING), 2);
    }
    assert_int_equal(fixture_state_of(f, before),
                     QRAFT__MESSAGE_STATE__PENDING);
    assert_int_equal(fixture_state_of(f, after), QRAFT__MESSAGE_STATE__PENDING);

    /* The log goes on past the poisoned entry. */
    struct qr_packed cmd = publish_cmd(f, NULL, next);
    fixture_propose(f, 0, &cmd, 1, 2000, f->n);
    cmd = fixture_cancel_cmd(before);
    fixture_propose(f, 0, &cmd, 1, 3000, f->n);
    assert_int_equal(fixture_state_of(f, next), QRAFT__MESSAGE_STATE__PENDING);
    assert_int_equal(fixture_state_of(f, before),
                     QRAFT__MESSAGE_STATE__CANCELLED);
}

/* A replica whose map fills up in the middle of an entry grows the map and
 * applies the entry again: a full map is this node's, not the entry's (the
 * others had room), so it neither refuses the command nor stops. */
static void test_full_map_grows_and_applies(void **state)
{
    struct fixture *f = *state;
    char dir[64];
    snprintf(dir, sizeof dir, "%s", f->servers[1].dir);
    fixture_server_close(&f->servers[1], false);
    fixture_map_bytes = 1u << 20;
    fixture_server_open(&f->servers[1], dir);
    fixture_map_bytes = 64ull << 20;
    f->servers[1].fsm.raft = raft_fixture_get(&f->raft, 1);
    for (unsigned i = 0; i < f->n; i++) {
        f->servers[i].fsm.on_fatal = fail_on_fatal;
    }

    static uint8_t body[256 * 1024];
    memset(body, 'b', sizeof body);
    char ids[8][QR_ID_BYTES];
    for (size_t i = 0; i < 8; i++) {
        Qraft__PublishRequest req = QRAFT__PUBLISH_REQUEST__INIT;
        req.url = "http://127.0.0.1:9/big";
        req.body.data = body;
        req.body.len = sizeof body;
        req.delay_ms = 3600 * 1000;
        qr_command_message_id(ids[i], 2000000 + i, 1, (uint32_t)i);
        struct qr_packed cmd;
        assert_int_equal(
            qr_command_pack_publish(&req, ids[i], &f->limits, &cmd), 0);
        fixture_propose(f, 0, &cmd, 1, 1000 + i, f->n);
    }
    for (size_t i = 0; i < 8; i++) {
        assert_int_equal(fixture_state_of(f, ids[i]),
                         QRAFT__MESSAGE_STATE__PENDING);
    }
    assert_false(qr_store_failed(f->servers[1].store));
}

/* A publish with flow control key "k" (parallelism 2). */
static struct qr_packed publish_flow_cmd(struct fixture *f,
                                         char id_out[QR_ID_BYTES])
{
    Qraft__PublishRequest req = QRAFT__PUBLISH_REQUEST__INIT;
    req.url = "http://127.0.0.1:9/hook";
    req.flow_control_key = "k";
    req.flow_parallelism = 2;
    uint64_t seq = f->next_seq++;
    qr_command_message_id(id_out, 1000000 + seq, 1, (uint32_t)seq);
    struct qr_packed packed;
    assert_int_equal(qr_command_pack_publish(&req, id_out, &f->limits, &packed),
                     0);
    return packed;
}

static Qraft__FlowControlKey *flow_key_on(struct fixture_server *s,
                                          const char *key)
{
    struct qr_store_txn *t = NULL;
    Qraft__FlowControlKey *k = NULL;
    assert_int_equal(qr_store_txn_begin(s->store, false, &t), 0);
    int rv = qr_store_flow_get(t, key, &k);
    assert_true(rv == 0 || rv == QR_ENOTFOUND);
    qr_store_txn_abort(t);
    return k;
}

/* Below feature level 5 a flow-controlled message is placed as older
 * nodes place it (by id, no waitlist) and FlowControlUpdate changes
 * nothing; at level 5 it is sharded by its key into the key's waitlist,
 * and pause and pin replicate: every replica holds the same record. */
static void test_flow_control_by_level(void **state)
{
    struct fixture *f = *state;
    char old_id[QR_ID_BYTES];
    char new_id[QR_ID_BYTES];
    Qraft__FlowControlUpdate u = QRAFT__FLOW_CONTROL_UPDATE__INIT;
    u.key = "k";
    u.action = QRAFT__FLOW_CONTROL_ACTION__FLOW_CONTROL_PAUSE;
    Qraft__Command cmd;
    qr_command_init_one(&cmd, QRAFT__COMMAND__BODY_FLOW_CONTROL_UPDATE,
                        &u.base);
    struct qr_packed cmds[2];
    cmds[0] = publish_flow_cmd(f, old_id);
    cmds[1] = fixture_pack(&cmd);
    fixture_propose(f, 0, cmds, 2, 5000, f->n);
    cmds[0] = fixture_feature_level_cmd(QR_FEATURE_LEVEL_FLOW_CONTROL);
    fixture_propose(f, 0, cmds, 1, 6000, f->n);
    u.action = QRAFT__FLOW_CONTROL_ACTION__FLOW_CONTROL_PIN;
    u.rate = 7;
    cmds[0] = publish_flow_cmd(f, new_id);
    cmds[1] = fixture_pack(&cmd);
    fixture_propose(f, 0, cmds, 2, 7000, f->n);

    for (unsigned i = 0; i < f->n; i++) {
        struct fixture_server *s = &f->servers[i];
        Qraft__Message *m = fixture_msg_on(s, old_id);
        assert_non_null(m);
        assert_false(m->flow_waitlist);
        assert_int_equal(m->shard, qr_fsm_shard_of(old_id));
        qraft__message__free_unpacked(m, NULL);
        m = fixture_msg_on(s, new_id);
        assert_non_null(m);
        assert_true(m->flow_waitlist);
        assert_int_equal(m->shard, qr_fsm_flow_shard_of("k"));
        qraft__message__free_unpacked(m, NULL);
        Qraft__FlowControlKey *k = flow_key_on(s, "k");
        assert_non_null(k);
        assert_int_equal(k->messages, 1); /* the level-5 one only */
        assert_int_equal(k->max_parallelism, 2);
        assert_false(k->paused); /* refused below level 5 */
        assert_true(k->pinned_rate);
        assert_int_equal(k->pin_rate, 7);
        assert_int_equal(k->pin_period_s, 1);
        assert_int_equal(k->rate_reset_ms, 7000);
        qraft__flow_control_key__free_unpacked(k, NULL);
    }
}

/* A publish that redacts the body and header names[0..n) (its other
 * checks pass). */
static struct qr_packed publish_redact_cmd(struct fixture *f,
                                           char **names,
                                           size_t n,
                                           char id_out[QR_ID_BYTES])
{
    Qraft__PublishRequest req = QRAFT__PUBLISH_REQUEST__INIT;
    Qraft__Header secret = QRAFT__HEADER__INIT;
    Qraft__Header *headers[] = {&secret};
    Qraft__Redact r = QRAFT__REDACT__INIT;
    secret.name = "X-Secret";
    secret.value = "abc";
    req.url = "http://127.0.0.1:9/hook";
    req.headers = headers;
    req.n_headers = 1;
    req.body.data = (uint8_t *)"abc";
    req.body.len = 3;
    r.body = true;
    r.headers = names;
    r.n_headers = n;
    req.redact = &r;
    uint64_t seq = f->next_seq++;
    qr_command_message_id(id_out, 1000000 + seq, 1, (uint32_t)seq);
    struct qr_packed packed;
    assert_int_equal(qr_command_pack_publish(&req, id_out, &f->limits, &packed),
                     0);
    return packed;
}

/* Below feature level 6 apply keeps no redact spec, as older nodes (which
 * do not know the field) do; at 6 every replica keeps it, refuses a spec
 * the face should have refused (a name that is no header name), and once
 * the message is delivered holds placeholders instead of the values. */
static void test_redact_by_level(void **state)
{
    struct fixture *f = *state;
    char *names[] = {"x-secret"};
    char *bad[] = {"not a name"};
    char old_id[QR_ID_BYTES], new_id[QR_ID_BYTES], bad_id[QR_ID_BYTES];
    struct qr_packed cmds[2];
    cmds[0] = publish_redact_cmd(f, names, 1, old_id);
    fixture_propose(f, 0, cmds, 1, 5000, f->n);
    cmds[0] = fixture_feature_level_cmd(QR_FEATURE_LEVEL_REDACT);
    fixture_propose(f, 0, cmds, 1, 6000, f->n);
    cmds[0] = publish_redact_cmd(f, names, 1, new_id);
    cmds[1] = publish_redact_cmd(f, bad, 1, bad_id);
    fixture_propose(f, 0, cmds, 2, 7000, f->n);
    cmds[0] = result_cmd(new_id);
    fixture_propose(f, 0, cmds, 1, 8000, f->n);

    char ph[QR_REDACT_PLACEHOLDER_BYTES];
    assert_int_equal(qr_redact_placeholder("abc", 3, ph), 0);
    for (unsigned i = 0; i < f->n; i++) {
        struct fixture_server *s = &f->servers[i];
        Qraft__Message *m = fixture_msg_on(s, old_id);
        assert_non_null(m);
        assert_null(m->redact);
        qraft__message__free_unpacked(m, NULL);
        assert_null(fixture_msg_on(s, bad_id));
        m = fixture_msg_on(s, new_id);
        assert_non_null(m);
        assert_int_equal(m->state, QRAFT__MESSAGE_STATE__DELIVERED);
        assert_non_null(m->redact);
        assert_true(m->redact->body);
        assert_int_equal(m->n_headers, 1);
        assert_string_equal(m->headers[0]->value, ph);
        assert_int_equal(m->body.len, 0); /* as any delivered message */
        qraft__message__free_unpacked(m, NULL);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_publish_replicates, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_leader_partitioned, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_no_double_apply_after_restart,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_catch_up, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_catch_up_image,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_redact_by_level, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_feature_level_only_rises,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_schedule_fires_once_per_slot,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_schedule_to_group_fans_out,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_url_groups_replicate,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_poison_commands_are_refused,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_flow_control_by_level,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_full_map_grows_and_applies,
                                        fixture_setup, fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
