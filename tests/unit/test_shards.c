/* Shard assignment (qr_shards_balance): balanced, sticky, and moving only
 * what it must when nodes come and go. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "deliver/shards.h"

static void counts(const uint64_t map[QR_FSM_N_SHARDS],
                   uint64_t id,
                   uint32_t *n)
{
    *n = 0;
    for (uint32_t i = 0; i < QR_FSM_N_SHARDS; i++) {
        *n += map[i] == id;
    }
}

static uint32_t moved(const uint64_t *a, const uint64_t *b)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < QR_FSM_N_SHARDS; i++) {
        n += a[i] != b[i];
    }
    return n;
}

/* A first map spreads the shards evenly: 86/85/85. */
static void test_first_map_is_balanced(void **state)
{
    (void)state;
    uint64_t live[] = {1, 2, 3};
    uint64_t map[QR_FSM_N_SHARDS];
    qr_shards_balance(NULL, live, 3, map);
    uint32_t n1, n2, n3;
    counts(map, 1, &n1);
    counts(map, 2, &n2);
    counts(map, 3, &n3);
    assert_int_equal(n1, 86);
    assert_int_equal(n2, 85);
    assert_int_equal(n3, 85);
}

/* The same live set keeps the same map: nothing moves. */
static void test_stable_when_nothing_changes(void **state)
{
    (void)state;
    uint64_t live[] = {1, 2, 3};
    uint64_t a[QR_FSM_N_SHARDS];
    uint64_t b[QR_FSM_N_SHARDS];
    qr_shards_balance(NULL, live, 3, a);
    qr_shards_balance(a, live, 3, b);
    assert_int_equal(moved(a, b), 0);
}

/* A node dies: only its shards move, and they spread over the others. */
static void test_dead_node_shards_move_only(void **state)
{
    (void)state;
    uint64_t three[] = {1, 2, 3};
    uint64_t two[] = {1, 3};
    uint64_t a[QR_FSM_N_SHARDS];
    uint64_t b[QR_FSM_N_SHARDS];
    qr_shards_balance(NULL, three, 3, a);
    qr_shards_balance(a, two, 2, b);
    uint32_t n2;
    counts(a, 2, &n2);
    assert_int_equal(moved(a, b), n2);
    uint32_t n1, n3;
    counts(b, 1, &n1);
    counts(b, 3, &n3);
    assert_int_equal(n1 + n3, QR_FSM_N_SHARDS);
    assert_int_equal(n1, 128);
    assert_int_equal(n3, 128);
    for (uint32_t i = 0; i < QR_FSM_N_SHARDS; i++) {
        if (a[i] != 2) {
            assert_int_equal(a[i], b[i]);
        }
    }
}

/* A node joins: it gets its quota, taken from the others, and no more
 * shards move than that. */
static void test_new_node_takes_its_quota(void **state)
{
    (void)state;
    uint64_t three[] = {1, 2, 3};
    uint64_t four[] = {1, 2, 3, 4};
    uint64_t a[QR_FSM_N_SHARDS];
    uint64_t b[QR_FSM_N_SHARDS];
    qr_shards_balance(NULL, three, 3, a);
    qr_shards_balance(a, four, 4, b);
    uint32_t n4;
    counts(b, 4, &n4);
    assert_int_equal(n4, 64);
    assert_int_equal(moved(a, b), 64);
    for (uint64_t id = 1; id <= 3; id++) {
        uint32_t n;
        counts(b, id, &n);
        assert_int_equal(n, 64);
    }
}

/* A node joins: the shards it takes from live owners go to nobody first,
 * and to it once the hand-over is over; a dead owner's shards move at once
 * (they go to nobody only while the hand-over waits). */
static void test_join_hands_over_through_nobody(void **state)
{
    (void)state;
    uint64_t three[] = {1, 2, 3};
    uint64_t four[] = {1, 2, 3, 4};
    uint64_t a[QR_FSM_N_SHARDS];
    uint64_t b[QR_FSM_N_SHARDS];
    uint64_t c[QR_FSM_N_SHARDS];
    qr_shards_balance(NULL, three, 3, a);
    qr_shards_balance(a, four, 4, b);
    assert_true(qr_shards_hand_over(a, four, 4, false, b));
    uint32_t nobody, n4;
    counts(b, 0, &nobody);
    counts(b, 4, &n4);
    assert_int_equal(nobody, 64);
    assert_int_equal(n4, 0);
    /* Still waiting: nothing more moves. */
    qr_shards_balance(b, four, 4, c);
    assert_false(qr_shards_hand_over(b, four, 4, false, c));
    assert_int_equal(moved(b, c), 0);
    /* Over: the new node gets them, and only them. */
    qr_shards_balance(b, four, 4, c);
    assert_false(qr_shards_hand_over(b, four, 4, true, c));
    counts(c, 4, &n4);
    assert_int_equal(n4, 64);
    assert_int_equal(moved(b, c), 64);
    /* A dead owner's shards move without a hand-over. */
    uint64_t two[] = {1, 3};
    qr_shards_balance(a, two, 2, c);
    assert_false(qr_shards_hand_over(a, two, 2, true, c));
    counts(c, 0, &nobody);
    assert_int_equal(nobody, 0);
}

/* One node alone owns everything; a map naming nodes that are gone is
 * replaced entirely. */
static void test_single_node_and_all_gone(void **state)
{
    (void)state;
    uint64_t old_live[] = {7, 8};
    uint64_t one[] = {1};
    uint64_t a[QR_FSM_N_SHARDS];
    uint64_t b[QR_FSM_N_SHARDS];
    qr_shards_balance(NULL, old_live, 2, a);
    qr_shards_balance(a, one, 1, b);
    for (uint32_t i = 0; i < QR_FSM_N_SHARDS; i++) {
        assert_int_equal(b[i], 1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_map_is_balanced),
        cmocka_unit_test(test_stable_when_nothing_changes),
        cmocka_unit_test(test_dead_node_shards_move_only),
        cmocka_unit_test(test_new_node_takes_its_quota),
        cmocka_unit_test(test_join_hands_over_through_nobody),
        cmocka_unit_test(test_single_node_and_all_gone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
