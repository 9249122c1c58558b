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


if __name__ == "__main__":
    unittest.main()
