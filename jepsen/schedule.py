"""The nemesis schedule of qraft's chaos suite: pure, seeded, testable.

jepsen/run asks this module what to do and when; it decides the targets
that depend on the cluster's state (who leads) with the per-fault seed this
module hands out, so a seed always gives the same faults in the same order
(not the same interleaving with the clients: timing is real).

Invariants:
  - schedule() is a pure function of (seed, kinds, time_s): same arguments,
    same list.
  - Faults never overlap: each is healed before the next calm starts.
  - With several kinds, they are drawn from shuffled bags (every kind once
    per bag), so a run long enough for len(kinds) faults has every kind.
  - partition_pairs() returns each cut pair once, (low id, high id), and
    never cuts a node from itself; the sink (root namespace) is never cut.
"""

import math
import random

NEMESES = ("kill", "partition", "pause", "clock", "transfer", "membership",
           "powerloss", "restart")
PARTITION_MODES = ("isolate-leader", "halves", "ring", "bridge")
POWERLOSS_HOWS = ("one", "majority", "all")

CALM_S = (2.0, 5.0)
# Seconds the fault stays applied (transfer: how long the storm lasts;
# membership: how long the node stays out of the cluster).
DURATION_S = {
    "kill": (3.0, 8.0),
    "partition": (3.0, 8.0),
    "pause": (3.0, 8.0),
    "clock": (5.0, 10.0),
    "transfer": (4.0, 8.0),
    "membership": (4.0, 8.0),
    "powerloss": (3.0, 8.0),
    "restart": (1.0, 4.0),
}
# Seconds a fault typically takes on top of its duration (restarts, the
# remove and add of a membership change); only used to lay out the nominal
# timeline, the runner waits for the real end.
OVERHEAD_S = {"clock": 2.0, "membership": 10.0, "powerloss": 2.0,
              "restart": 2.0}
# Clock faults: the skew a node restarts with, and the jump in the middle.
SKEW_S = (5, 30)
JUMP_S = (5, 20)


def parse_kinds(spec):
    """'all' -> every nemesis; 'none' -> []; 'a,b' -> [a, b]. Raises
    ValueError naming the unknown ones."""
    if spec == "all":
        return list(NEMESES)
    if spec in ("none", ""):
        return []
    kinds = []
    for k in spec.split(","):
        if k and k not in kinds:
            kinds.append(k)
    bad = [k for k in kinds if k not in NEMESES]
    if bad:
        raise ValueError(f"unknown nemesis {bad} (known: "
                         f"{', '.join(NEMESES)}, all, none)")
    return kinds


def schedule(seed, kinds, time_s):
    """The faults of a run: a list of {"calm", "f", "dur", "seed", "at"}.
    calm: seconds to wait after the previous fault healed; dur: seconds the
    fault stays; seed: for the fault's own choices; at: nominal start
    (seconds from the run's start, assuming nominal overheads)."""
    rng = random.Random(f"{seed}-schedule")
    out = []
    if not kinds:
        return out
    t = 0.0
    bag = []
    for _ in range(100000):
        calm = rng.uniform(*CALM_S)
        if not bag:
            bag = sorted(kinds)
            rng.shuffle(bag)
        kind = bag.pop()
        dur = rng.uniform(*DURATION_S[kind])
        fault_seed = rng.randrange(2**32)
        start = t + calm
        if start + 1.0 >= time_s:
            break
        dur = min(dur, max(0.5, time_s - start))
        out.append({"calm": round(calm, 3), "f": kind, "dur": round(dur, 3),
                    "seed": fault_seed, "at": round(start, 3)})
        t = start + dur + OVERHEAD_S.get(kind, 0.0)
    return out


def _pairs_between(a, b):
    return sorted({(min(x, y), max(x, y)) for x in a for y in b if x != y})


def partition_pairs(mode, ids, leader, rng):
    """(mode actually used, description, pairs to cut). ids: node ids;
    leader: the leader's id or None. Modes that need more nodes or a
    leader fall back to halves."""
    ids = sorted(ids)
    n = len(ids)
    if mode == "isolate-leader" and leader in ids and n > 1:
        rest = [i for i in ids if i != leader]
        return mode, [[leader], rest], _pairs_between([leader], rest)
    if mode == "ring" and n >= 4:
        # Majorities ring: in a random ring, each node keeps its d nearest
        # on each side (a majority with itself); no two see the same one.
        order = ids[:]
        rng.shuffle(order)
        d = math.ceil((n // 2) / 2)
        pairs = []
        for i in range(n):
            for j in range(i + 1, n):
                dist = min(j - i, n - (j - i))
                if dist > d:
                    x, y = order[i], order[j]
                    pairs.append((min(x, y), max(x, y)))
        return mode, [order], sorted(pairs)
    if mode == "bridge" and n >= 3:
        # Two halves that cannot talk, and one node that talks to both.
        order = ids[:]
        rng.shuffle(order)
        bridge, rest = order[0], order[1:]
        a = sorted(rest[:len(rest) // 2])
        b = sorted(rest[len(rest) // 2:])
        return mode, [a, [bridge], b], _pairs_between(a, b)
    order = ids[:]
    rng.shuffle(order)
    a = sorted(order[:n // 2])
    b = sorted(order[n // 2:])
    return "halves", [a, b], _pairs_between(a, b)


def powerloss_targets(rng, ids, leader, hows=POWERLOSS_HOWS):
    """The nodes a power loss takes down at once: one (the leader half of
    those times), a bare majority or all of them, drawn from hows (with
    all three: 50 %, 30 %, 20 %). ids: the running members; leader: its id
    or None. Returns (sorted ids, how); a majority of fewer than 3 nodes is
    all of them."""
    ids = sorted(ids)
    if not ids:
        return [], hows[0]
    weights = {"one": 5, "majority": 3, "all": 2}
    how = rng.choices(list(hows), [weights[h] for h in hows])[0]
    if how == "one" or len(ids) == 1:
        if leader in ids and rng.random() < 0.5:
            return [leader], "one"
        return [rng.choice(ids)], "one"
    if how == "majority" and len(ids) >= 3:
        return sorted(rng.sample(ids, len(ids) // 2 + 1)), "majority"
    return ids, "all"


def clock_plan(rng):
    """The skew a node restarts with and the jump it takes in the middle of
    the fault (seconds, either sign, never 0)."""
    def signed(lo_hi):
        v = rng.randint(*lo_hi)
        return v if rng.random() < 0.5 else -v
    skew = signed(SKEW_S)
    return {"skew_s": skew, "jump_s": signed(JUMP_S)}
