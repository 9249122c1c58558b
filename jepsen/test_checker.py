"""Self-test of the chaos suite's checker: it must be able to say "invalid".

    python3 -m unittest discover -s jepsen -p 'test_checker.py'

Synthetic histories, no cluster. Each faulty history is what a broken qraft
would produce (an ack before commit loses the message; a replayed or forged
request arrives unexpected; a dedup id creating two messages; a delayed
message sent early), and each must be reported invalid with the right count.
"""

import unittest

import checker

T = 1_700_000_000.0


def op(body, kind="ok", mid=None, dedup_id=None, delay_ms=0, t=T, dedup=False):
    return {
        "process": 0,
        "body": body,
        "type": kind,
        "message_id": mid if kind == "ok" else None,
        "deduplicated": dedup,
        "dedup_id": dedup_id,
        "delay_ms": delay_ms,
        "t_invoke": t,
        "t_complete": t + 0.01,
    }


def delivery(mid, body, t=T + 0.1, status=200, retried=0):
    return {"message_id": mid, "body": body, "retried": retried, "time": t,
            "status": status}


class CheckerTest(unittest.TestCase):
    def test_a_clean_history_is_valid(self):
        ops = [op("p0-1", mid="m1"), op("p0-2", mid="m2"),
               op("p0-3", kind="fail"), op("p0-4", kind="info")]
        res = checker.check(ops, [delivery("m1", "p0-1"),
                                  delivery("m2", "p0-2")], [])
        self.assertTrue(res["valid"])
        self.assertEqual((res["acked"], res["delivered"], res["lost"]),
                         (2, 2, 0))

    def test_an_acked_message_never_delivered_is_lost(self):
        # What a build that acknowledges before commit produces under a
        # leader crash: an id the client holds and the cluster forgot.
        ops = [op("p0-1", mid="m1"), op("p0-2", mid="m2")]
        res = checker.check(ops, [delivery("m1", "p0-1")], [])
        self.assertFalse(res["valid"])
        self.assertEqual(res["lost"], 1)
        self.assertEqual(res["lost_ids"], ["m2"])

    def test_a_dead_lettered_message_is_not_lost(self):
        ops = [op("p0-1", mid="m1")]
        res = checker.check(ops, [delivery("m1", "p0-1", status=489)], ["m1"])
        self.assertTrue(res["valid"])
        self.assertEqual(res["dead_lettered"], 1)

    def test_a_failed_attempt_alone_is_not_a_delivery(self):
        ops = [op("p0-1", mid="m1")]
        res = checker.check(ops, [delivery("m1", "p0-1", status=500)], [])
        self.assertFalse(res["valid"])
        self.assertEqual(res["lost"], 1)

    def test_a_body_nobody_published_is_unexpected(self):
        ops = [op("p0-1", mid="m1")]
        res = checker.check(ops, [delivery("m1", "p0-1"),
                                  delivery("m9", "p7-99")], [])
        self.assertFalse(res["valid"])
        self.assertEqual(res["unexpected"], 1)

    def test_duplicates_are_counted_but_allowed(self):
        ops = [op("p0-1", mid="m1")]
        res = checker.check(ops, [delivery("m1", "p0-1"),
                                  delivery("m1", "p0-1", t=T + 1)], [])
        self.assertTrue(res["valid"])
        self.assertEqual(res["duplicated"], 1)

    def test_an_info_op_later_delivered_is_recovered(self):
        ops = [op("p0-1", kind="info")]
        res = checker.check(ops, [delivery("m1", "p0-1")], [])
        self.assertTrue(res["valid"])
        self.assertEqual(res["recovered"], 1)

    def test_a_dedup_id_with_two_message_ids_is_a_violation(self):
        ops = [op("p0-1", mid="m1", dedup_id="d1"),
               op("p0-2", mid="m2", dedup_id="d1")]
        res = checker.check(ops, [delivery("m1", "p0-1"),
                                  delivery("m2", "p0-2")], [])
        self.assertFalse(res["valid"])
        self.assertEqual(res["dedup_violations"], 1)

    def test_a_dedup_violation_seen_only_at_the_sink_counts(self):
        # The repeat timed out (info) but its body still arrived as a
        # second message.
        ops = [op("p0-1", mid="m1", dedup_id="d1"),
               op("p0-2", kind="info", dedup_id="d1")]
        res = checker.check(ops, [delivery("m1", "p0-1"),
                                  delivery("m2", "p0-2")], [])
        self.assertEqual(res["dedup_violations"], 1)
        self.assertFalse(res["valid"])

    def test_a_deduplicated_repeat_is_fine(self):
        ops = [op("p0-1", mid="m1", dedup_id="d1"),
               op("p0-2", mid="m1", dedup_id="d1", dedup=True)]
        res = checker.check(ops, [delivery("m1", "p0-1")], [])
        self.assertTrue(res["valid"])
        self.assertEqual(res["acked_messages"], 1)

    def test_a_delayed_message_sent_before_its_time_is_early(self):
        ops = [op("p0-1", mid="m1", delay_ms=2000)]
        res = checker.check(ops, [delivery("m1", "p0-1", t=T + 1.0)], [])
        self.assertFalse(res["valid"])
        self.assertEqual(res["early"], 1)
        on_time = checker.check(ops, [delivery("m1", "p0-1", t=T + 2.1)], [])
        self.assertTrue(on_time["valid"])

    def test_early_is_not_checked_when_asked_not_to(self):
        ops = [op("p0-1", mid="m1", delay_ms=2000)]
        res = checker.check(ops, [delivery("m1", "p0-1", t=T + 1.0)], [],
                            check_early=False)
        self.assertTrue(res["valid"])
        self.assertIsNone(res["early"])

    def test_a_failed_publish_that_arrives_anyway_is_invalid(self):
        # "fail" means "did nothing" (docs/api.md 1.5): a 503 whose
        # message is delivered all the same breaks that promise.
        ops = [op("p0-1", mid="m1"), op("p0-2", kind="fail")]
        res = checker.check(ops, [delivery("m1", "p0-1"),
                                  delivery("m2", "p0-2")], [])
        self.assertFalse(res["valid"])
        self.assertEqual(res["fail_delivered"], 1)
        self.assertEqual(res["fail_delivered_examples"], ["p0-2"])
        dead = checker.check(ops, [delivery("m1", "p0-1"),
                                   delivery("m2", "p0-2", status=489)],
                             ["m2"])
        self.assertEqual(dead["fail_delivered"], 1)


def trig(run, kind="ok", dead=False):
    return {"run": run, "type": kind, "dead": dead}


def wdel(run, steps, ran=None, mid=None, t=T + 1):
    """A delivery whose history holds `steps` (step ids), the entry of
    step k being message f"{run}-s{k}" (a list item (k, mid) names
    another message)."""
    entries = []
    for s in steps:
        k, m = s if isinstance(s, tuple) else (s, f"{run}-s{s}")
        entries.append([m, k])
    return {"run": run, "message_id": mid or f"{run}-d{len(steps)}",
            "time": t, "entries": entries, "ran": ran}


def result(run, k, mid=None, t=T + 1):
    return {"run": run, "step": k, "message_id": mid or f"{run}-s{k}",
            "deduplicated": False, "time": t}


def clean_run(run, n=3):
    """The deliveries and results of a run of n steps that went well."""
    dels = [wdel(run, list(range(1, k)), ran=k if k <= n else None)
            for k in range(1, n + 2)]
    return dels, [result(run, k) for k in range(1, n + 1)]


class WorkflowCheckerTest(unittest.TestCase):
    def test_finished_runs_are_valid(self):
        d1, r1 = clean_run("a")
        d2, r2 = clean_run("b")
        res = checker.check_workflow([trig("a"), trig("b")], d1 + d2, r1 + r2,
                                     {"a", "b"}, set(), 3)
        self.assertTrue(res["valid"], res)
        self.assertEqual((res["acked"], res["runs_finished"],
                          res["steps_stored"], res["reexecuted"]),
                         (2, 2, 6, 0))

    def test_an_acked_run_neither_finished_nor_dead_is_incomplete(self):
        dels, results = clean_run("a")
        res = checker.check_workflow([trig("a")], dels[:2], results[:1],
                                     set(), set(), 3)
        self.assertFalse(res["valid"])
        self.assertEqual(res["incomplete_runs"], ["a"])
        dead = checker.check_workflow([trig("a")], dels[:2], results[:1],
                                      set(), {"a"}, 3)
        self.assertTrue(dead["valid"], dead)
        self.assertEqual(dead["runs_dead_lettered"], 1)

    def test_a_run_the_endpoint_failed_must_not_finish(self):
        dels, results = clean_run("a")
        res = checker.check_workflow([trig("a", dead=True)], dels[:2],
                                     results[:1], set(), {"a"}, 3)
        self.assertTrue(res["valid"], res)
        self.assertEqual(res["runs_failing"], 1)
        res = checker.check_workflow([trig("a", dead=True)], dels, results,
                                     {"a"}, set(), 3)
        self.assertFalse(res["valid"])
        self.assertEqual(res["dead_finished_runs"], ["a"])

    def test_an_unacked_trigger_need_not_run(self):
        res = checker.check_workflow([trig("a", "info"), trig("b", "fail")],
                                     [], [], set(), set(), 3)
        self.assertTrue(res["valid"], res)
        self.assertEqual((res["info"], res["failed"]), (1, 1))

    def test_a_gap_in_the_history_is_out_of_order(self):
        dels, results = clean_run("a")
        dels.append(wdel("a", [1, 3], mid="x"))
        res = checker.check_workflow([trig("a")], dels, results, {"a"},
                                     set(), 3)
        self.assertFalse(res["valid"])
        self.assertEqual(res["out_of_order"], 1)
        self.assertEqual(res["out_of_order_examples"][0]["steps"], [1, 3])

    def test_swapped_steps_are_out_of_order(self):
        dels, results = clean_run("a")
        dels.append(wdel("a", [2, 1], mid="x"))
        res = checker.check_workflow([trig("a")], dels, results, {"a"},
                                     set(), 3)
        self.assertEqual(res["out_of_order"], 1)

    def test_a_step_stored_twice_is_allowed(self):
        # A publish retried after a lost answer: at least once.
        dels, results = clean_run("a")
        dels.append(wdel("a", [1, 2, (2, "a-s2b"), 3], mid="x"))
        results.append(result("a", 2, mid="a-s2b"))
        dels.append(wdel("a", [1, 2], ran=3, mid="a-s2"))  # re-sent
        res = checker.check_workflow([trig("a")], dels, results, {"a"},
                                     set(), 3)
        self.assertTrue(res["valid"], res)
        self.assertEqual(res["reexecuted"], 1)

    def test_more_steps_than_the_run_has_is_out_of_order(self):
        dels, results = clean_run("a")
        dels.append(wdel("a", [1, 2, 3, 4], mid="x"))
        res = checker.check_workflow([trig("a")], dels, results, {"a"},
                                     set(), 3)
        self.assertEqual(res["out_of_order"], 1)

    def test_an_acked_result_never_seen_again_is_lost(self):
        # Step 2's result was acknowledged, then forgotten: the endpoint
        # ran it again and the run went on with the second copy.
        dels, results = clean_run("a")
        results.append(result("a", 2, mid="a-s2-first", t=T))
        res = checker.check_workflow([trig("a")], dels, results, {"a"},
                                     set(), 3)
        self.assertFalse(res["valid"])
        self.assertEqual(res["lost_results"], 1)
        self.assertEqual(res["lost_result_examples"][0]["message_id"],
                         "a-s2-first")
        dead = checker.check_workflow([trig("a")], dels, results, {"a"},
                                      {"a"}, 3)
        self.assertEqual(dead["lost_results"], 0)

    def test_a_run_nobody_triggered_is_unexpected(self):
        dels, results = clean_run("a")
        res = checker.check_workflow([], dels, results, set(), set(), 3)
        self.assertFalse(res["valid"])
        self.assertEqual(res["unexpected"], len(dels))

    def test_a_failed_trigger_whose_run_ran_is_invalid(self):
        dels, results = clean_run("a")
        res = checker.check_workflow([trig("a", "fail")], dels, results,
                                     {"a"}, set(), 3)
        self.assertFalse(res["valid"])
        self.assertEqual(res["fail_ran"], 1)



class FlowCheckTest(unittest.TestCase):
    def flow(self, key, start, end):
        d = delivery("m", "b", t=T + start)
        d.update(key=key, t_end=None if end is None else T + end)
        return d

    def test_within_parallelism_is_valid(self):
        # Two at a time, back to back (an end at the instant of a start
        # frees its place); another key overlapping is no matter.
        ds = [self.flow("a", 0, 1), self.flow("a", 0, 1),
              self.flow("a", 1, 2), self.flow("a", 1.5, 3),
              self.flow("b", 0.5, 2), delivery("m2", "plain")]
        r = checker.check_flow(ds, 2)
        self.assertTrue(r["flow_valid"], r)
        self.assertEqual(r["flow_peak"], {"a": 2, "b": 1})

    def test_a_third_at_once_is_a_violation(self):
        # A new owner starting while the old one's requests still run; one
        # that never ended counts as open.
        ds = [self.flow("a", 0, 1), self.flow("a", 0, None),
              self.flow("a", 0.9, 2)]
        r = checker.check_flow(ds, 2)
        self.assertFalse(r["flow_valid"])
        self.assertEqual(r["flow_violations"], 1)
        self.assertEqual(r["flow_violation_examples"][0]["peak"], 3)
        self.assertAlmostEqual(r["flow_violation_examples"][0]["at"],
                               T + 0.9)


class UnavailabilityTest(unittest.TestCase):
    @staticmethod
    def acks(*times):
        return [{"type": "ok", "t_complete": T + t} for t in times]

    def test_the_gap_a_fault_opens_is_counted_from_its_start(self):
        # Acks every 0.1 s, none from 2.0 to 3.5: a leader kill at 2.05.
        ops = self.acks(*[i / 10 for i in range(0, 21)],
                        *[3.5 + i / 10 for i in range(10)])
        ops.append({"type": "fail", "t_complete": T + 3.0})
        nemesis = [{"f": "kill", "phase": "start", "time": T + 2.05,
                    "target": "leader"},
                   {"f": "kill", "phase": "end", "time": T + 2.5},
                   {"f": "pause", "phase": "start", "time": T + 3.6,
                    "target": "node"},
                   {"f": "pause", "phase": "end", "time": T + 3.7}]
        got = checker.unavailability(ops, nemesis, grace_s=0.2)
        # A fault's grace stops where the next one starts.
        nemesis.insert(0, {"f": "clock", "phase": "start", "time": T + 1.0})
        nemesis.insert(1, {"f": "clock", "phase": "end", "time": T + 1.5})
        early = checker.unavailability(ops, nemesis, grace_s=5.0)
        self.assertEqual(early["clock"]["max_ms"], 100)
        self.assertEqual(early["kill"]["max_ms"], 1450)
        self.assertEqual(got["kill"]["events"], 1)
        self.assertEqual(got["kill"]["max_ms"], 1450)
        self.assertEqual(got["kill"]["by_target"], {"leader": 1450})
        # No gap beyond the clients' own pace.
        self.assertEqual(got["pause"]["max_ms"], 100)

    def test_a_fault_with_no_ack_after_it_counts_to_its_end(self):
        ops = self.acks(0.0, 0.1) + [{"type": "info", "t_complete": T + 9}]
        nemesis = [{"f": "partition", "phase": "start", "time": T + 1.0},
                   {"f": "partition", "phase": "end", "time": T + 2.0}]
        got = checker.unavailability(ops, nemesis, grace_s=1.0)
        self.assertEqual(got["partition"]["max_ms"], 2000)
        self.assertEqual(got["partition"]["by_target"], {})
        # The clients' last answer ends every gap: the workload stopped.
        got = checker.unavailability(ops[:2], nemesis, grace_s=1.0)
        self.assertEqual(got["partition"]["max_ms"], 0)


if __name__ == "__main__":
    unittest.main()
