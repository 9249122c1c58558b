"""Self-test of the chaos suite's pure parts: the nemesis schedule, the
partition shapes, the clock plans and the data behind the graphs.

    python3 -m unittest discover -s jepsen -p 'test_*.py'

No cluster, no root. The graphs themselves are drawn only when
python3-matplotlib is importable (the render test is skipped otherwise).
"""

import random
import tempfile
import unittest
from pathlib import Path

import plot
import schedule

T = 1_700_000_000.0


class ScheduleTest(unittest.TestCase):
    def test_the_same_seed_gives_the_same_schedule(self):
        a = schedule.schedule(7, list(schedule.NEMESES), 90)
        b = schedule.schedule(7, list(schedule.NEMESES), 90)
        self.assertEqual(a, b)
        self.assertNotEqual(a, schedule.schedule(8, list(schedule.NEMESES),
                                                 90))

    def test_faults_stay_inside_the_run_and_never_overlap(self):
        for seed in range(20):
            plan = schedule.schedule(seed, list(schedule.NEMESES), 90)
            self.assertTrue(plan)
            prev_end = 0.0
            for ev in plan:
                self.assertIn(ev["f"], schedule.NEMESES)
                lo, hi = schedule.CALM_S
                self.assertTrue(lo <= ev["calm"] <= hi)
                self.assertGreaterEqual(ev["at"], prev_end)
                self.assertLess(ev["at"] + 1.0, 90)
                self.assertGreater(ev["dur"], 0)
                prev_end = ev["at"] + ev["dur"]

    def test_all_runs_every_nemesis_in_a_100s_run(self):
        for seed in range(20):
            plan = schedule.schedule(seed, list(schedule.NEMESES), 100)
            self.assertEqual({ev["f"] for ev in plan}, set(schedule.NEMESES),
                             f"seed {seed}: {[ev['f'] for ev in plan]}")

    def test_powerloss_takes_one_a_majority_or_all(self):
        seen = set()
        for seed in range(200):
            rng = random.Random(seed)
            ids, how = schedule.powerloss_targets(rng, [1, 2, 3, 4, 5], 2)
            seen.add(how)
            self.assertEqual(ids, sorted(set(ids)))
            want = {"one": 1, "majority": 3, "all": 5}[how]
            self.assertEqual(len(ids), want, f"seed {seed}")
        self.assertEqual(seen, {"one", "majority", "all"})
        self.assertEqual(schedule.powerloss_targets(random.Random(1), [], 1),
                         ([], "one"))
        for seed in range(20):
            self.assertEqual(schedule.powerloss_targets(
                random.Random(seed), [1, 2, 3], None, ("all",)),
                ([1, 2, 3], "all"))

    def test_only_the_kinds_asked_for(self):
        plan = schedule.schedule(1, ["kill", "partition"], 30)
        self.assertTrue(plan)
        self.assertLessEqual({ev["f"] for ev in plan}, {"kill", "partition"})
        self.assertEqual(schedule.schedule(1, [], 30), [])

    def test_parse_kinds(self):
        self.assertEqual(schedule.parse_kinds("all"), list(schedule.NEMESES))
        self.assertEqual(schedule.parse_kinds("none"), [])
        self.assertEqual(schedule.parse_kinds("clock,kill,clock"),
                         ["clock", "kill"])
        with self.assertRaises(ValueError):
            schedule.parse_kinds("kill,meteor")


class PartitionTest(unittest.TestCase):
    @staticmethod
    def connected(pairs, x, y):
        return (min(x, y), max(x, y)) not in pairs

    def test_isolate_leader_cuts_the_leader_from_everyone(self):
        mode, groups, pairs = schedule.partition_pairs(
            "isolate-leader", [1, 2, 3, 4, 5], 3, random.Random(1))
        self.assertEqual(mode, "isolate-leader")
        self.assertEqual(pairs, [(1, 3), (2, 3), (3, 4), (3, 5)])
        self.assertEqual(groups, [[3], [1, 2, 4, 5]])

    def test_without_a_leader_isolate_falls_back_to_halves(self):
        mode, groups, pairs = schedule.partition_pairs(
            "isolate-leader", [1, 2, 3], None, random.Random(1))
        self.assertEqual(mode, "halves")
        self.assertEqual(len(groups[0]) + len(groups[1]), 3)
        self.assertEqual(len(pairs), len(groups[0]) * len(groups[1]))

    def test_majorities_ring_every_node_sees_a_different_majority(self):
        for seed in range(10):
            ids = [1, 2, 3, 4, 5]
            mode, _, pairs = schedule.partition_pairs(
                "ring", ids, 1, random.Random(seed))
            self.assertEqual(mode, "ring")
            views = set()
            for x in ids:
                view = frozenset(y for y in ids
                                 if y == x or self.connected(pairs, x, y))
                self.assertEqual(len(view), 3)  # a bare majority
                views.add(view)
            self.assertEqual(len(views), 5)

    def test_bridge_one_node_talks_to_both_halves(self):
        ids = [1, 2, 3, 4, 5]
        mode, groups, pairs = schedule.partition_pairs(
            "bridge", ids, 1, random.Random(3))
        self.assertEqual(mode, "bridge")
        a, (bridge,), b = groups
        for x in ids:
            if x != bridge:
                self.assertTrue(self.connected(pairs, x, bridge))
        for x in a:
            for y in b:
                self.assertFalse(self.connected(pairs, x, y))
        self.assertEqual(sorted(a + b + [bridge]), ids)

    def test_pairs_are_ordered_and_never_self(self):
        for mode in schedule.PARTITION_MODES:
            for n in range(1, 8):
                _, _, pairs = schedule.partition_pairs(
                    mode, list(range(1, n + 1)), 1, random.Random(n))
                for x, y in pairs:
                    self.assertLess(x, y)
                self.assertEqual(len(pairs), len(set(pairs)))


class ClockPlanTest(unittest.TestCase):
    def test_skews_and_jumps_are_bounded_and_nonzero(self):
        rng = random.Random(5)
        signs = set()
        for _ in range(200):
            p = schedule.clock_plan(rng)
            for key, (lo, hi) in (("skew_s", schedule.SKEW_S),
                                  ("jump_s", schedule.JUMP_S)):
                self.assertTrue(lo <= abs(p[key]) <= hi, p)
            signs.add(p["skew_s"] > 0)
        self.assertEqual(signs, {True, False})


def op(t, kind="ok", latency_ms=5.0):
    return {"kind": "op", "type": kind, "t_invoke": t,
            "t_complete": t + latency_ms / 1000, "latency_ms": latency_ms}


def ev(f, phase, t):
    return {"kind": "nemesis", "f": f, "phase": phase, "time": t}


class PlotSeriesTest(unittest.TestCase):
    def test_windows_pair_starts_with_ends(self):
        events = [ev("kill", "start", T + 1), ev("kill", "end", T + 4),
                  ev("clock", "start", T + 5), ev("clock", "jump", T + 6),
                  ev("clock", "end", T + 8), ev("crash", "observed", T + 8),
                  ev("partition", "start", T + 9)]
        self.assertEqual(plot.nemesis_windows(events, T + 12), [
            ("kill", T + 1, T + 4), ("clock", T + 5, T + 8),
            ("partition", T + 9, T + 12)])

    def test_points_rates_and_windows_are_relative_to_the_first_op(self):
        ops = [op(T), op(T + 0.5, "info", 5000), op(T + 2.2, "fail", 1.0),
               op(T + 2.4)]
        events = [ev("pause", "start", T + 1), ev("pause", "end", T + 2)]
        data = plot.series(ops, events)
        self.assertEqual(data["t0"], T)
        self.assertEqual(data["points"]["ok"], [(0.0, 5.0), (2.4, 5.0)])
        self.assertEqual(data["points"]["info"], [(0.5, 5000)])
        self.assertEqual(data["windows"], [("pause", 1.0, 2.0)])
        # Completions: ok at 0.005 and 2.405, info at 5.5, fail at 2.201.
        self.assertEqual(len(data["rate"]["ok"]), 6)  # buckets 0..5
        self.assertEqual([v for _, v in data["rate"]["ok"]],
                         [1, 0, 1, 0, 0, 0])
        self.assertEqual(data["rate"]["info"][5], (5.0, 1.0))
        self.assertEqual(data["rate"]["fail"][2], (2.0, 1.0))

    def test_an_empty_history_gives_empty_series(self):
        data = plot.series([], [])
        self.assertEqual(data["points"], {"ok": [], "info": [], "fail": []})
        self.assertEqual(data["rate"], {"ok": [], "info": [], "fail": []})
        self.assertEqual(data["windows"], [])

    def test_render_writes_both_graphs(self):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            self.skipTest("python3-matplotlib is not installed")
        ops = [op(T + i / 10, "ok" if i % 7 else "info") for i in range(100)]
        events = [ev("kill", "start", T + 2), ev("kill", "end", T + 5)]
        with tempfile.TemporaryDirectory() as d:
            paths = plot.render(d, ops, events, title="test")
            self.assertEqual([Path(p).name for p in paths],
                             ["latency.png", "rate.png"])
            for p in paths:
                self.assertEqual(Path(p).read_bytes()[:4], b"\x89PNG")


if __name__ == "__main__":
    unittest.main()
