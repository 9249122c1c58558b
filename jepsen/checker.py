"""The total-queue checker of qraft's chaos suite (issue 6, item 4).

Pure functions over plain data, so jepsen/test_checker.py can feed it
synthetic histories. Python 3 standard library only.

Inputs:
  ops         one dict per client publish, as jepsen/run records them:
              {"process", "body", "type": "ok"|"fail"|"info",
               "message_id" (ok only), "deduplicated", "dedup_id" (or None),
               "delay_ms", "t_invoke" (unix s), "t_complete"}
  deliveries  one dict per request the sink received:
              {"message_id", "body", "retried", "time" (unix s),
               "status" (what the sink answered)}
  dlq_ids     ids of the messages in the dead-letter queue at the end

Semantics (Jepsen's total-queue, adapted to a delivery queue):
  lost              acked (ok) message ids never delivered with a 2xx answer
                    and not dead-lettered
  unexpected        bodies the sink received that no client ever attempted
  duplicated        2xx deliveries beyond the first, per message id (allowed)
  recovered         info ops whose body was delivered or dead-lettered
  dedup_violations  dedup ids that yielded two or more message ids
  early             messages whose first attempt came before the publish's
                    invoke time plus its delay (skipped with clock faults)
  fail_delivered    bodies of publishes answered with a definite failure
                    ("did nothing", docs/api.md 1.5 and 5.1) that were
                    delivered or dead-lettered all the same (a dedup repeat
                    of a delivered body is not counted: its body is new)
  valid  <=>  lost == unexpected == dedup_violations == early
              == fail_delivered == 0
"""

# A message id is stamped by the leader at or after the client's invoke, in
# ms; the sink stamps arrival after reading the body. Allow the rounding.
EARLY_TOLERANCE_S = 0.002

# How many example ids/bodies each list in the result keeps.
EXAMPLES = 20


def _is_2xx(status):
    return 200 <= int(status) < 300


def check(ops, deliveries, dlq_ids, check_early=True):
    """Returns the result dict (the figures of results.json, without the
    run's own keys such as seed and nemeses)."""
    dlq_ids = set(dlq_ids)
    by_body = {}
    for op in ops:
        by_body.setdefault(op["body"], []).append(op)

    ok_ops = [op for op in ops if op["type"] == "ok"]
    info_ops = [op for op in ops if op["type"] == "info"]
    acked_ids = {op["message_id"] for op in ok_ops}

    delivered = {}  # message id -> count of 2xx deliveries
    first_attempt = {}  # message id -> earliest delivery (any status)
    delivered_bodies = set()
    ids_of_body = {}  # body -> message ids the sink saw it under
    unexpected = []
    for d in deliveries:
        mid, body = d["message_id"], d["body"]
        if body not in by_body:
            unexpected.append({"message_id": mid, "body": body})
            continue
        ids_of_body.setdefault(body, set()).add(mid)
        prev = first_attempt.get(mid)
        if prev is None or d["time"] < prev["time"]:
            first_attempt[mid] = d
        if _is_2xx(d["status"]):
            delivered[mid] = delivered.get(mid, 0) + 1
            delivered_bodies.add(body)

    lost = sorted(m for m in acked_ids if m not in delivered and m not in dlq_ids)
    duplicated = sum(n - 1 for n in delivered.values())

    dlq_bodies = set()
    for body, mids in ids_of_body.items():
        if mids & dlq_ids:
            dlq_bodies.add(body)
    recovered = sorted(
        {op["body"] for op in info_ops}
        & (delivered_bodies | dlq_bodies)
    )

    # Dedup: every message id a dedup id produced, by acknowledgement or by
    # delivery of a body published with it.
    dedup_ids = {}
    for op in ops:
        key = op.get("dedup_id")
        if not key:
            continue
        ids = dedup_ids.setdefault(key, set())
        if op["type"] == "ok":
            ids.add(op["message_id"])
        ids.update(ids_of_body.get(op["body"], ()))
    dedup_violations = [
        {"dedup_id": key, "message_ids": sorted(ids)}
        for key, ids in sorted(dedup_ids.items())
        if len(ids) > 1
    ]

    early = []
    if check_early:
        for mid, d in first_attempt.items():
            # The body's first publish is the one that created the message
            # (a deduplicated repeat carries another body).
            op = min(by_body[d["body"]], key=lambda o: o["t_invoke"])
            due = op["t_invoke"] + op.get("delay_ms", 0) / 1000.0
            if d["time"] + EARLY_TOLERANCE_S < due:
                early.append(
                    {"message_id": mid, "due": due, "first_attempt": d["time"]}
                )

    # A definite failure must have done nothing: its body never arrives.
    # (Bodies are unique per op, so the body names the op.)
    fail_delivered = sorted(
        op["body"] for op in ops
        if op["type"] == "fail"
        and (op["body"] in delivered_bodies or op["body"] in dlq_bodies)
    )

    dead_lettered = len(acked_ids & dlq_ids)
    result = {
        "valid": not lost and not unexpected and not dedup_violations
        and not early and not fail_delivered,
        "attempted": len(ops),
        "acked": len(ok_ops),
        "acked_messages": len(acked_ids),
        "failed": sum(1 for op in ops if op["type"] == "fail"),
        "info": len(info_ops),
        "delivered": sum(1 for m in acked_ids if m in delivered),
        "deliveries": len(deliveries),
        "lost": len(lost),
        "unexpected": len(unexpected),
        "duplicated": duplicated,
        "recovered": len(recovered),
        "dead_lettered": dead_lettered,
        "dedup_violations": len(dedup_violations),
        "early": len(early) if check_early else None,
        "fail_delivered": len(fail_delivered),
        "lost_ids": lost[:EXAMPLES],
        "unexpected_examples": unexpected[:EXAMPLES],
        "dedup_violation_examples": dedup_violations[:EXAMPLES],
        "early_examples": early[:EXAMPLES],
        "fail_delivered_examples": fail_delivered[:EXAMPLES],
    }
    return result
