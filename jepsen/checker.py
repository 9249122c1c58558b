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

unavailability(ops, nemesis) is not a verdict: per nemesis kind, the
longest time each fault left the clients without an acknowledged publish
(from the fault's start, or the last ack before a gap that overlaps it, to
the next ack), as docs/chaos.md's table of issue 14 reports it.

check_flow (--client flowcontrol) reads the deliveries that carry a flow
control "key" and "t_end" (the sink held each from "time" to "t_end"):
  flow_peak        the most requests of each key the sink held at once
  flow_violations  keys whose peak is over the parallelism
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


# After a fault ends, how long its consequences (a restarted node, a
# re-election after a heal) may still be counted as its own.
UNAVAILABILITY_GRACE_S = 5.0


def unavailability(ops, nemesis, grace_s=UNAVAILABILITY_GRACE_S):
    """{kind: {"events", "max_ms", "p50_ms", "by_target": {target: max_ms}}}
    over the nemesis "start" records (each with "f", "time", maybe
    "target": leader or node) and their next "end" of the same kind. A
    fault's figure is the longest gap between acknowledged publishes
    (ops of type ok, at "t_complete") that overlaps [start, end + grace],
    counted from the start at the earliest and up to the next fault's
    start at the latest; a fault with no ack after it counts to its end
    plus the grace."""
    acks = sorted(op["t_complete"] for op in ops if op["type"] == "ok")
    # Past the clients' last answer nothing is asked: not a gap.
    last = max((op["t_complete"] for op in ops), default=float("-inf"))
    events = sorted(nemesis, key=lambda e: e["time"])
    per_kind = {}
    for i, e in enumerate(events):
        if e.get("phase") != "start":
            continue
        end = next((x["time"] for x in events[i + 1:]
                    if x["f"] == e["f"] and x.get("phase") == "end"),
                   e["time"])
        # The grace ends where the next fault starts: that one's own.
        after = next((x["time"] for x in events[i + 1:]
                      if x.get("phase") == "start"), float("inf"))
        lo, hi = e["time"], max(end, min(end + grace_s, after))
        worst = 0.0
        prev = None
        for t in acks + [None]:
            if t is not None and t < lo:
                prev = t
                continue
            start = lo if prev is None else max(prev, lo)
            stop = min(hi if t is None else t, max(after, lo),
                       max(last, lo))
            worst = max(worst, stop - start)
            if t is None or t > hi:
                break
            prev = t
        kind = per_kind.setdefault(e["f"], {"gaps": [], "by_target": {}})
        kind["gaps"].append(worst)
        target = e.get("target")
        if target is not None:
            kind["by_target"][target] = max(
                kind["by_target"].get(target, 0.0), worst)
    result = {}
    for f, kind in sorted(per_kind.items()):
        gaps = sorted(kind["gaps"])
        result[f] = {
            "events": len(gaps),
            "max_ms": round(gaps[-1] * 1000),
            "p50_ms": round(gaps[(len(gaps) - 1) // 2] * 1000),
            "by_target": {t: round(g * 1000)
                          for t, g in sorted(kind["by_target"].items())},
        }
    return result


def peak_concurrency(intervals):
    """(most intervals [start, end) open at once, when that was first
    reached). An interval that ends as another starts frees its place
    first: ends sort before starts at the same instant. Also what
    tests/integration/test_flow_control.py counts with."""
    events = sorted([(s, 1) for s, _ in intervals]
                    + [(e, -1) for _, e in intervals])
    now = peak = 0
    at = None
    for t, step in events:
        now += step
        if now > peak:
            peak, at = now, t
    return peak, at


def check_flow(deliveries, parallelism):
    """Requests of one flow-control key the sink held at once, from a
    request's arrival ("time") to the end of its answer ("t_end"; None: it
    never ended, counted as open to the end). Returns flow_valid,
    flow_parallelism, flow_peak {key: (most at once)} and the violations
    (keys over parallelism, with when the peak was first reached)."""
    by_key = {}
    for d in deliveries:
        if d.get("key") is None:
            continue
        end = d.get("t_end")
        by_key.setdefault(d["key"], []).append(
            (d["time"], float("inf") if end is None else end))
    peaks = {}
    violations = []
    for key, spans in sorted(by_key.items()):
        peak, at = peak_concurrency(spans)
        peaks[key] = peak
        if peak > parallelism:
            violations.append({"key": key, "peak": peak, "at": at})
    return {
        "flow_valid": not violations,
        "flow_parallelism": parallelism,
        "flow_peak": peaks,
        "flow_violations": len(violations),
        "flow_violation_examples": violations[:EXAMPLES],
    }


def check_workflow(triggers, deliveries, results, finished, dlq_runs, steps):
    """The workflow client's checker (jepsen/run --client workflow): runs of
    `steps` steps driven by tests/lib/workflow_app.py. Returns the result
    dict, as check() does.

    Inputs:
      triggers    one dict per trigger op: {"run", "type": "ok"|"fail"|"info",
                  "dead": the endpoint fails the run (489, non-retryable)}
                  (ok: the node answered 200; fail: "did nothing")
      deliveries  one dict per delivery the endpoint received: {"run",
                  "message_id", "time", "entries": [[messageId, stepId], ...]
                  the step entries of the history it carried, in order (None:
                  the run was over, nothing read), "ran": the step it
                  executed or None}
      results     one dict per step publish acknowledged to the endpoint:
                  {"run", "step", "message_id", "deduplicated", "time"}
      finished    run ids whose finishing DELETE was acknowledged
      dlq_runs    run ids with a dead-lettered message in the workflow DLQ

    Semantics:
      incomplete      acked runs neither finished nor dead-lettered
      out_of_order    histories whose distinct step ids, in order of first
                      appearance, are not 1..m (m <= steps); a step id seen
                      again later is a duplicate, allowed (at least once)
      lost_results    acknowledged step results (by the message id the
                      publish answered) that no history the endpoint saw
                      afterwards contains, of runs not dead-lettered (every
                      stored result is either delivered itself or carried in
                      the histories after it, until the run ends)
      unexpected      deliveries of runs nobody triggered
      fail_ran        runs whose only trigger definitely failed that were
                      delivered all the same
      dead_finished   runs the endpoint failed that finished all the same
      reexecuted      step executions beyond the first per (run, step)
                      (allowed: counted)
      valid  <=>  incomplete == out_of_order == lost_results == unexpected
                  == fail_ran == dead_finished == 0
    """
    finished, dlq_runs = set(finished), set(dlq_runs)
    kinds = {}
    dead = set()
    for op in triggers:
        kinds.setdefault(op["run"], set()).add(op["type"])
        if op.get("dead"):
            dead.add(op["run"])
    acked = {run for run, k in kinds.items() if "ok" in k}
    failed_only = {run for run, k in kinds.items() if k == {"fail"}}
    info_runs = {run for run, k in kinds.items() if "ok" not in k
                 and "info" in k}

    delivered_runs = set()
    seen_ids = {}  # run -> message ids of every step entry any history held
    unexpected = []
    out_of_order = []
    executions = {}
    for d in deliveries:
        run = d["run"]
        delivered_runs.add(run)
        if run not in kinds:
            unexpected.append({"run": run, "message_id": d["message_id"]})
        if d.get("ran") is not None:
            key = (run, d["ran"])
            executions[key] = executions.get(key, 0) + 1
        if d.get("entries") is None:
            continue
        ids = seen_ids.setdefault(run, set())
        distinct = []
        for mid, step in d["entries"]:
            ids.add(mid)
            if step not in distinct:
                distinct.append(step)
        if distinct != list(range(1, len(distinct) + 1)) or \
                len(distinct) > steps:
            out_of_order.append({"run": run, "message_id": d["message_id"],
                                 "steps": [s for _, s in d["entries"]]})

    lost = []
    stored = set()
    for r in results:
        stored.add((r["run"], r["step"]))
        if r["run"] in dlq_runs:
            continue
        if r["message_id"] not in seen_ids.get(r["run"], ()):
            lost.append({"run": r["run"], "step": r["step"],
                         "message_id": r["message_id"], "time": r["time"]})

    incomplete = sorted(acked - finished - dlq_runs)
    fail_ran = sorted(failed_only & delivered_runs)
    dead_finished = sorted(dead & finished)
    reexecuted = sum(n - 1 for n in executions.values())
    return {
        "valid": not incomplete and not out_of_order and not lost
        and not unexpected and not fail_ran and not dead_finished,
        "attempted": len(triggers),
        "acked": len(acked),
        "failed": len(failed_only),
        "info": len(info_runs),
        "runs_finished": len(acked & finished),
        "runs_dead_lettered": len(acked & dlq_runs - finished),
        "runs_failing": len(acked & dead),
        "recovered": len(info_runs & (finished | dlq_runs)),
        "incomplete": len(incomplete),
        "steps_stored": len(stored),
        "step_executions": sum(executions.values()),
        "reexecuted": reexecuted,
        "deliveries": len(deliveries),
        "out_of_order": len(out_of_order),
        "lost_results": len(lost),
        "unexpected": len(unexpected),
        "fail_ran": len(fail_ran),
        "dead_finished": len(dead_finished),
        "incomplete_runs": incomplete[:EXAMPLES],
        "out_of_order_examples": out_of_order[:EXAMPLES],
        "lost_result_examples": lost[:EXAMPLES],
        "unexpected_examples": unexpected[:EXAMPLES],
        "fail_ran_runs": fail_ran[:EXAMPLES],
        "dead_finished_runs": dead_finished[:EXAMPLES],
    }
