"""The allocator core: which k hosts a tenant gets, under a placement policy — or why none can be given.

Pure Python on plain :class:`Candidate` records (no ORM): the database layer builds the candidates
(hosts that match the requirement and are free now, or free over the booking's window), calls
:func:`allocate`, then claims the chosen hosts under row locks. At fleet scale it should rather
build the :class:`Group` records itself (a GROUP BY cost, hand-off and location, with the first k
ids of each group) and call :func:`allocate_groups`: ten thousand Python records cost more than
the whole search.

Placement policy (:class:`Policy`)
----------------------------------
``mode`` spread or pack at a topology ``level``, ``hard`` (must) or soft (prefer), an optional
``max_per_bucket`` at that level, and an optional ``together_level`` (affinity, always a must).
Buckets are location *paths* (:func:`hosts.topology.bucket`): rack r1 in room a is not rack r1
in room b.

* spread, must, level L — at most ``max_per_bucket`` (default 1) chosen hosts per L-bucket.
* spread, prefer, level L — an explicit ``max_per_bucket`` is still a must; beyond it, prefer
  the smallest largest-bucket count, then the most distinct L-buckets.
* pack, must, level L — all chosen hosts in ONE L-bucket (the same as ``together_level=L``);
  a maximum per bucket is refused with it.
* pack, prefer, level L — prefer the fewest distinct L-buckets (with an explicit maximum as a must).
* no mode, level L, ``max_per_bucket`` m — only the cap: at most m per L-bucket.
* together L — all chosen hosts in one L-bucket; combinable with spread or pack at a strictly
  finer level ("all in one room, at most 2 per rack").

A host not placed as deep as a *hard* rule's level (together, pack must, or any cap) is
excluded: nobody can promise "at most 2 per rack" for a host whose rack is unknown. A *soft*
rule ignores such a host: it counts in no bucket, neither for nor against the preference (so at
equal cost a soft spread may well pick it: it does not crowd any rack).

Objective (lexicographic, smaller is better)
--------------------------------------------
1. every hard rule holds (otherwise: infeasible, with an :class:`Explanation`);
2. total cost (sum of ``cost``);
3. soft penalty — spread: ``(largest count in one L-bucket, -number of L-buckets used)``;
   pack: ``(number of L-buckets used,)``; no soft rule: ``()``. Only placed hosts count;
4. total hand-off seconds;
5. more spread at the finest level: more distinct location paths (a host's whole location)
   among the chosen;
6. deterministic: between answers equal on 1-5, the one in the smaller together-bucket, then
   the one drawing from smaller location paths; within a group, the lowest candidate ids. The
   input order never matters.

Algorithm (per scope: the whole pool, or each bucket of the together level)
---------------------------------------------------------------------------
1. Group interchangeable candidates (same cost, hand-off and path: :func:`group_candidates`);
   thousands of hosts collapse into tens of groups. Drop the groups not placed as deep as the
   hard rules need.
2. Split the groups into buckets of the policy level (one bucket when there is none; the hosts
   not placed that deep form an uncounted bucket of their own under a soft rule). Lay each
   bucket out as a *sequence* of host slots in the order it should be drawn from: by cost, then
   hand-off, then — within the same cost and hand-off — one host of each not-yet-used path
   first. The sequence stops at the bucket's cap (or k). Every prefix of the sequence is the
   best choice of that many hosts from the bucket for objectives 2, 4 and 5, and the slot
   values (cost, hand-off, -new path) never decrease along it.
3. Cost: the sets of k slots of least total cost are exactly those taking, in every bucket,
   all slots cheaper than c* (the k-th cheapest slot cost) and any y_b of its slots costing
   c*, with sum of y_b = R. With caps this is a partition matroid, whose minimum-cost bases
   are characterised the same way (for every cost c a minimum basis holds as many elements of
   cost <= c as the matroid's rank of them), so greedy by cost respecting the caps is optimal.
4. The soft rule only chooses the y_b (the marginal cost tier):
   * spread: water-fill — the smallest M with enough room when no bucket exceeds M; then open
     as many unused buckets as possible (min(R, buckets that can take one)), choosing the ones
     whose first slot has the least hand-off; then the remaining slots greedily.
   * pack: an exact dynamic programme over the buckets that would have to be opened (buckets
     already used and the uncounted bucket form one free pool, merged greedily), minimising
     (buckets opened, hand-off, -new paths).
   * none: the R smallest slots by (hand-off, -new path), merged across buckets.
   Each bucket's objective is convex along its sequence, so the greedy merges are exact.
5. Together: solve every bucket of the together level as a scope and keep the best by the
   whole objective, visiting scopes by a lower bound on their cost (their k cheapest hosts)
   and stopping once the bound exceeds the best cost found.

Cost is O(G log G) in the number of groups G, plus O(B·k²) for a soft pack over the B buckets
it may open (buckets with identical slots collapse to at most k copies).

Explanations (when no answer exists), the first that applies: ``none_match`` (no host matches;
the caller's ``unmatched_reasons``), ``not_enough`` / ``not_enough_free`` (fewer than k free;
the caller's ``unavailable`` counts by reason), ``unplaced`` (enough free hosts, but too few
placed as deep as a hard rule needs), ``together`` (no together-bucket — or rack, for pack
must — holds k), ``spread`` (the caps leave room for fewer than k, overall or in the best
together-bucket).
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from operator import attrgetter
from typing import Any, NamedTuple

from hosts.topology import label

SPREAD = "spread"
PACK = "pack"
MODES = (SPREAD, PACK)


class PolicyError(ValueError):
    pass


class Candidate(NamedTuple):
    """A host the requirement matches and that is free (now, or over the booking's window).

    A named tuple rather than a frozen dataclass: thousands are built per selection, and a
    tuple is several times cheaper to make."""

    id: int
    name: str
    cost: Decimal
    handoff: int
    path: tuple[str, ...]  # location values along the levels from the coarsest; shorter when not placed as deep


@dataclass(frozen=True, slots=True)
class Group:
    """Interchangeable candidates: same cost, hand-off and location path.

    ``members`` are the group's candidates by id; they may stop after the first k (the allocator
    never takes more than k from one group), which lets the database layer build groups with a
    GROUP BY instead of one record per host. ``size`` counts them all.
    """

    cost: Decimal
    handoff: int
    path: tuple[str, ...]
    size: int
    members: tuple[Candidate, ...]


_PLACE_KEY = attrgetter("handoff", "path")
_ID = attrgetter("id")
_COST = attrgetter("cost")


def group_candidates(candidates: Iterable[Candidate]) -> list[Group]:
    """Candidates grouped by (cost, hand-off, path), groups in that order, members by id."""
    if not isinstance(candidates, list | tuple):
        candidates = list(candidates)
    # By (hand-off, path) first, then by cost: hashing a Decimal costs ten times comparing two,
    # and the hosts of one place nearly always cost the same.
    by_place: dict[tuple[int, tuple[str, ...]], list[Candidate]] = {}
    for key, candidate in zip(map(_PLACE_KEY, candidates), candidates, strict=True):
        members = by_place.get(key)
        if members is None:
            by_place[key] = [candidate]
        else:
            members.append(candidate)
    groups = []
    for (handoff, path), members in by_place.items():
        first = members[0].cost
        if all(cost == first for cost in map(_COST, members)):
            by_cost = {first: members}
        else:
            by_cost = defaultdict(list)
            for candidate in members:
                by_cost[candidate.cost].append(candidate)
        for cost, same in by_cost.items():
            same.sort(key=_ID)
            groups.append(Group(cost, handoff, tuple(path), len(same), tuple(same)))
    groups.sort(key=lambda g: (g.cost, g.handoff, g.path))
    return groups


def _plural(word: str) -> str:
    if word.endswith("s"):  # chassis
        return word
    if word.endswith(("x", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _n(count: int, word: str) -> str:
    return f"{count} {word if count == 1 else _plural(word)}"


@dataclass(frozen=True)
class Policy:
    """Where the chosen hosts go relative to each other (semantics in the module docstring).
    JSON: ``{"mode": "spread", "level": "rack", "hard": true, "max_per_bucket": 2,
    "together_level": "room"}``; every field optional."""

    mode: str | None = None
    level: str | None = None
    hard: bool = False
    max_per_bucket: int | None = None
    together_level: str | None = None

    FIELDS = ("mode", "level", "hard", "max_per_bucket", "together_level")

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in MODES:
            raise PolicyError(f"mode {self.mode!r}: spread or pack")
        if not isinstance(self.hard, bool):
            raise PolicyError("hard: true (must) or false (prefer)")
        if self.max_per_bucket is not None and (
            isinstance(self.max_per_bucket, bool) or not isinstance(self.max_per_bucket, int) or self.max_per_bucket < 1
        ):
            raise PolicyError("max_per_bucket: a whole number, at least 1")
        if self.mode is not None and self.level is None:
            raise PolicyError(f"say at which level to {self.mode}, e.g. rack")
        if self.level is not None and self.mode is None and self.max_per_bucket is None:
            raise PolicyError(
                f"say whether to spread or pack across each {self.level}, or give a maximum per {self.level}"
            )
        if self.max_per_bucket is not None and self.level is None:
            raise PolicyError("a maximum per bucket needs a level, e.g. at most 2 per rack")
        if self.mode == PACK and self.hard and self.max_per_bucket is not None:
            raise PolicyError(
                f"pack (must) puts every host into one {self.level}: a maximum per {self.level} cannot go with it"
            )
        if self.mode is None and self.hard:
            raise PolicyError("must applies to spread or pack")

    def validate(self, levels: Sequence[str]) -> Policy:
        """Check the levels against the fleet's; returns the policy itself."""
        for name in (self.level, self.together_level):
            if name is not None and name not in levels:
                raise PolicyError(f"unknown level {name!r}; the levels are {' > '.join(levels)}")
        nested = self.level is not None and self.together_level is not None
        if nested and list(levels).index(self.level) <= list(levels).index(self.together_level):
            raise PolicyError(
                f"all in one {self.together_level} leaves nothing to {self.mode or 'limit'} across "
                f"{_plural(self.level)}: the {self.mode or 'maximum'} level must be finer than {self.together_level}"
            )
        return self

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None, levels: Sequence[str] | None = None) -> Policy:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise PolicyError("a placement policy is an object")
        unknown = set(data) - set(cls.FIELDS)
        if unknown:
            raise PolicyError(f"unknown field(s) {', '.join(sorted(unknown))}; the fields are {', '.join(cls.FIELDS)}")
        for name in ("mode", "level", "together_level"):
            if data.get(name) is not None and not isinstance(data[name], str):
                raise PolicyError(f"{name}: a string")
        policy = cls(
            mode=data.get("mode") or None,
            level=data.get("level") or None,
            hard=data.get("hard", False),
            max_per_bucket=data.get("max_per_bucket"),
            together_level=data.get("together_level") or None,
        )
        return policy.validate(levels) if levels is not None else policy

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}

    def describe(self) -> str:
        """For people: 'spread across racks (must), at most 2 per rack, all in one room'."""
        parts = []
        strength = "(must)" if self.hard else "(prefer)"
        if self.mode == SPREAD:
            parts.append(f"spread across {_plural(self.level)} {strength}")
        elif self.mode == PACK:
            parts.append(
                f"pack into one {self.level} (must)" if self.hard else f"pack into few {_plural(self.level)} (prefer)"
            )
        if self.max_per_bucket is not None:
            parts.append(f"at most {self.max_per_bucket} per {self.level}")
        if self.together_level is not None:
            parts.append(f"all in one {self.together_level}")
        return ", ".join(parts) or "no placement rule"


@dataclass(frozen=True)
class _Rules:
    """The policy as the solver uses it: level indexes, the hard cap, the soft mode."""

    together: int | None  # index of the level all hosts share a bucket of
    level: int | None  # index of the cap / soft-rule level
    cap: int | None  # hard maximum per bucket of ``level``
    soft: str | None  # SPREAD, PACK or None
    depth: int  # how many path values a host needs to be eligible
    # Hosts the caller already holds under this policy (a pool growing): per bucket of ``level``
    # how many count against the cap, and the bucket of ``together`` they are all in.
    held: Mapping[tuple[str, ...], int] = field(default_factory=dict)
    anchor: tuple[str, ...] | None = None

    def room(self, key: tuple[str, ...]) -> int:
        """How many more hosts bucket ``key`` of the cap level takes."""
        return max(0, self.cap - self.held.get(key, 0))

    def holding(self, occupied: Mapping[tuple[str, ...], int] | None) -> _Rules:
        """These rules with ``occupied`` (location path -> hosts already held) counted."""
        if not occupied:
            return self
        from dataclasses import replace

        held: dict[tuple[str, ...], int] = defaultdict(int)
        anchors = set()
        for path, count in occupied.items():
            if self.level is not None and self.cap is not None and len(path) > self.level:
                held[tuple(path[: self.level + 1])] += count
            if self.together is not None and len(path) > self.together:
                anchors.add(tuple(path[: self.together + 1]))
        return replace(self, held=dict(held), anchor=anchors.pop() if len(anchors) == 1 else None)

    @classmethod
    def of(cls, policy: Policy, levels: Sequence[str]) -> _Rules:
        levels = list(levels)
        li = levels.index(policy.level) if policy.level is not None else None
        ti = levels.index(policy.together_level) if policy.together_level is not None else None
        if policy.mode == PACK and policy.hard:
            together = max(i for i in (li, ti) if i is not None)
            return cls(together=together, level=None, cap=None, soft=None, depth=together + 1)
        cap = policy.max_per_bucket
        if cap is None and policy.mode == SPREAD and policy.hard:
            cap = 1
        soft = policy.mode if not policy.hard else None
        hard_depths = [ti] + ([li] if cap is not None else [])
        depth = max((i + 1 for i in hard_depths if i is not None), default=0)
        return cls(together=ti, level=li, cap=cap, soft=soft, depth=depth)


# ---------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Explanation:
    """Why no allocation exists: a code for programs, one sentence for people, the numbers for the API."""

    code: str  # none_match | not_enough | not_enough_free | unplaced | spread | together
    message: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "data": self.data}


@dataclass(frozen=True)
class Allocation:
    chosen: tuple[Candidate, ...]  # by id; empty when infeasible
    cost: Decimal
    handoff: int
    feasible: bool
    explanation: Explanation | None
    groups: int  # how many groups of interchangeable candidates the pool collapsed into
    penalty: tuple[int, ...] = ()  # the soft-rule penalty of ``chosen`` (see the module docstring)

    def to_json(self) -> dict[str, Any]:
        return {
            "feasible": self.feasible,
            "hosts": [c.name for c in self.chosen],
            "cost": str(self.cost),
            "handoff_seconds": self.handoff,
            "explanation": self.explanation.to_json() if self.explanation else None,
            "groups": self.groups,
        }


# ---------------------------------------------------------------------------------------------- solver

_UNCOUNTED = None  # the bucket of hosts not placed at a soft rule's level


@dataclass(slots=True)
class _Run:
    """``count`` consecutive slots of one bucket's sequence, all from ``group``."""

    cost: Decimal
    handoff: int
    gain: int  # 1: the slot adds a path not yet used in the bucket
    group: Group
    count: int


@dataclass(slots=True)
class _Bucket:
    key: tuple[str, ...] | None
    runs: list[_Run]
    counted: bool  # False for the uncounted bucket
    below: int = 0  # f_b: slots cheaper than c*
    tier: list[_Run] = field(default_factory=list)  # slots costing c*

    @property
    def tier_size(self) -> int:
        return sum(run.count for run in self.tier)


@dataclass(frozen=True)
class _Result:
    key: tuple  # the objective, compared lexicographically
    takes: list[tuple[Group, int]]  # how many members of each group


def _sequence(groups: list[Group], limit: int) -> list[_Run]:
    """A bucket's slots in drawing order (see the module docstring, step 2), at most ``limit``."""
    runs: list[_Run] = []
    used: set[tuple[str, ...]] = set()
    total = 0
    i = 0
    while i < len(groups) and total < limit:
        j = i
        while j < len(groups) and (groups[j].cost, groups[j].handoff) == (groups[i].cost, groups[i].handoff):
            j += 1
        rest: list[tuple[Group, int]] = []
        for group in groups[i:j]:
            if group.path not in used and total < limit:
                used.add(group.path)
                runs.append(_Run(group.cost, group.handoff, 1, group, 1))
                total += 1
                rest.append((group, group.size - 1))
            else:
                rest.append((group, group.size))
        for group, left in rest:
            if left > 0 and total < limit:
                take = min(left, limit - total)
                runs.append(_Run(group.cost, group.handoff, 0, group, take))
                total += take
        i = j
    return runs


def _smallest(buckets: list[_Bucket], caps: list[int], starts: list[int], count: int) -> list[int]:
    """How many tier slots each bucket gives when the ``count`` best (hand-off, -new path) are
    taken, bucket b offering its tier slots from ``starts[b]`` up to ``caps[b]``."""
    entries = []
    for b, bucket in enumerate(buckets):
        position = 0
        for r, run in enumerate(bucket.tier):
            lo, hi = max(position, starts[b]), min(position + run.count, caps[b])
            if hi > lo:
                entries.append((run.handoff, -run.gain, b, r, hi - lo))
            position += run.count
    entries.sort()
    taken = [0] * len(buckets)
    for _handoff, _gain, b, _r, available in entries:
        if count <= 0:
            break
        take = min(available, count)
        taken[b] += take
        count -= take
    return taken


def _tier_profile(bucket: _Bucket, limit: int) -> tuple[list[int], list[int]]:
    """Prefix sums of hand-off and new paths over the bucket's first ``limit`` tier slots."""
    handoffs, gains = [0], [0]
    for run in bucket.tier:
        for _ in range(run.count):
            if len(handoffs) > limit:
                return handoffs, gains
            handoffs.append(handoffs[-1] + run.handoff)
            gains.append(gains[-1] + run.gain)
    return handoffs, gains


def _spread_tier(buckets: list[_Bucket], need: int) -> list[int]:
    counted = [b for b, bucket in enumerate(buckets) if bucket.counted]
    sizes = [bucket.tier_size for bucket in buckets]
    uncounted_room = sum(sizes[b] for b, bucket in enumerate(buckets) if not bucket.counted)

    def room(most: int) -> int:
        return uncounted_room + sum(min(sizes[b], max(0, most - buckets[b].below)) for b in counted)

    lo = max((buckets[b].below for b in counted), default=0)
    hi = lo + need
    while lo < hi:  # the smallest largest-bucket count that leaves room for every host
        mid = (lo + hi) // 2
        if room(mid) >= need:
            hi = mid
        else:
            lo = mid + 1
    caps = [
        sizes[b] if not bucket.counted else min(sizes[b], max(0, lo - bucket.below)) for b, bucket in enumerate(buckets)
    ]
    unused = [b for b in counted if buckets[b].below == 0 and caps[b] > 0]
    if need <= len(unused):
        # One host in each of the ``need`` unused buckets whose first slot hands off soonest.
        best = heapq.nsmallest(need, unused, key=lambda b: (buckets[b].tier[0].handoff, b))
        taken = [0] * len(buckets)
        for b in best:
            taken[b] = 1
        return taken
    opened = set(unused)
    starts = [1 if b in opened else 0 for b in range(len(buckets))]
    more = _smallest(buckets, caps, starts, need - len(unused))
    return [more[b] + starts[b] for b in range(len(buckets))]


def _pack_tier(buckets: list[_Bucket], need: int) -> list[int]:
    # Buckets already used (or uncounted) open no new bucket: they form one pool, drawn greedily.
    free = [b for b, bucket in enumerate(buckets) if not bucket.counted or bucket.below > 0]
    entries = sorted((run.handoff, -run.gain, b, r, run.count) for b in free for r, run in enumerate(buckets[b].tier))
    pool_slots: list[int] = []
    pool_handoffs, pool_gains = [0], [0]
    for handoff, negative_gain, b, _r, count in entries:
        for _ in range(min(count, need - len(pool_slots))):
            pool_slots.append(b)
            pool_handoffs.append(pool_handoffs[-1] + handoff)
            pool_gains.append(pool_gains[-1] - negative_gain)
    stages: list[tuple[int | None, bool, tuple[list[int], list[int]]]] = [(None, False, (pool_handoffs, pool_gains))]
    # Buckets that would be opened. Those with the same slots are interchangeable: at most
    # ``need`` of them can be opened (each then holds a host), so keep the first ``need``.
    copies: dict[tuple, int] = defaultdict(int)
    for b, bucket in enumerate(buckets):
        if not bucket.counted or bucket.below > 0 or not bucket.tier:
            continue
        signature = tuple((run.handoff, run.gain, run.count) for run in bucket.tier)
        copies[signature] += 1
        if copies[signature] <= need:
            stages.append((b, True, _tier_profile(bucket, need)))
    # Exact dynamic programme: best[n] = least (buckets opened, hand-off, -new paths) placing n
    # hosts, packed into one integer (hand-off and path totals are bounded) so that comparing is cheap.
    paths_base = need + 1
    handoff_base = (sum(profile[0][-1] for _b, _opens, profile in stages) + 1) * paths_base
    opened_cost = handoff_base
    unreachable = -1
    best = [unreachable] * (need + 1)
    best[0] = need  # nothing opened, no hand-off, no new path (need - 0)
    choices = []
    for _b, opens, (handoffs, gains) in stages:
        steps = [
            handoffs[y] * paths_base - gains[y] + (opened_cost if opens and y else 0) for y in range(len(handoffs))
        ]
        nxt = best[:]  # taking nothing from this stage
        choice = [0] * (need + 1)
        for have, value in enumerate(best):
            if value == unreachable:
                continue
            for y in range(1, min(len(steps) - 1, need - have) + 1):
                candidate = value + steps[y]
                current = nxt[have + y]
                if current == unreachable or candidate < current:
                    nxt[have + y] = candidate
                    choice[have + y] = y
        choices.append(choice)
        best = nxt
    taken = [0] * len(buckets)
    have = need
    for (b, _opens, _profile), choice in zip(reversed(stages), reversed(choices), strict=True):
        y = choice[have]
        have -= y
        if b is None:
            for slot in pool_slots[:y]:
                taken[slot] += 1
        else:
            taken[b] += y
    return taken


def _cost_bound(groups: list[Group], k: int) -> Decimal | None:
    """The cost of the k cheapest hosts (``groups`` by cost), or None when there are fewer."""
    total, left = Decimal(0), k
    for group in groups:
        take = min(group.size, left)
        total += group.cost * take
        left -= take
        if not left:
            return total
    return None


def _solve(groups: list[Group], k: int, rules: _Rules, scope: tuple[str, ...]) -> _Result | None:
    """The best k hosts from ``groups`` (all eligible, by cost), or None when the caps leave too little room."""
    if rules.level is None:
        # One bucket, no cap: its sequence is the answer (step 2).
        runs = _sequence(groups, k)
        return _result(runs, k, (), scope)
    by_bucket: dict[tuple[str, ...] | None, list[Group]] = defaultdict(list)
    cut = rules.level + 1
    for group in groups:
        by_bucket[group.path[:cut] if len(group.path) >= cut else _UNCOUNTED].append(group)
    keys = sorted(by_bucket, key=lambda key: (key is None, key or ()))
    buckets = [
        _Bucket(
            key,
            _sequence(by_bucket[key], k if key is None or rules.cap is None else min(rules.room(key), k)),
            counted=key is not None,
        )
        for key in keys
    ]
    # Step 3: the marginal cost c*, the slots below it (forced) and at it (free to choose).
    per_cost: dict[Decimal, int] = defaultdict(int)
    for bucket in buckets:
        for run in bucket.runs:
            per_cost[run.cost] += run.count
    seen, marginal = 0, None
    for cost in sorted(per_cost):
        seen += per_cost[cost]
        if seen >= k:
            marginal = cost
            break
    if marginal is None:
        return None
    for bucket in buckets:
        bucket.below = sum(run.count for run in bucket.runs if run.cost < marginal)
        bucket.tier = [run for run in bucket.runs if run.cost == marginal]
    need = k - sum(bucket.below for bucket in buckets)
    # Step 4: the soft rule chooses within the marginal tier.
    if rules.soft == SPREAD:
        extra = _spread_tier(buckets, need)
    elif rules.soft == PACK:
        extra = _pack_tier(buckets, need)
    else:
        extra = _smallest(buckets, [b.tier_size for b in buckets], [0] * len(buckets), need)
    runs, counts = [], []
    for bucket, more in zip(buckets, extra, strict=True):
        left = bucket.below + more
        if bucket.counted:
            counts.append(left)
        for run in bucket.runs:
            if left <= 0:
                break
            take = min(run.count, left)
            left -= take
            runs.append(run if take == run.count else _Run(run.cost, run.handoff, run.gain, run.group, take))
    used = [count for count in counts if count]
    if rules.soft == SPREAD:
        penalty: tuple[int, ...] = (max(used, default=0), -len(used))
    elif rules.soft == PACK:
        penalty = (len(used),)
    else:
        penalty = ()
    return _result(runs, k, penalty, scope)


def _result(runs: list[_Run], k: int, penalty: tuple[int, ...], scope: tuple[str, ...]) -> _Result | None:
    if sum(run.count for run in runs) < k:
        return None
    takes: dict[tuple, list] = {}
    cost, handoff, paths = Decimal(0), 0, 0
    for run in runs:
        cost += run.cost * run.count
        handoff += run.handoff * run.count
        paths += run.gain
        key = (run.group.cost, run.group.handoff, run.group.path)
        if key in takes:
            takes[key][1] += run.count
        else:
            takes[key] = [run.group, run.count]
    return _Result((cost, penalty, handoff, -paths, scope), [(group, count) for group, count in takes.values()])


# ---------------------------------------------------------------------------------------------- explanations


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _capacity(groups: list[Group], rules: _Rules) -> tuple[int, int]:
    """(how many hosts the caps let through, how many buckets of the cap level have a host)."""
    per_bucket: dict[tuple[str, ...] | None, int] = defaultdict(int)
    for group in groups:
        key = group.path[: rules.level + 1] if len(group.path) > rules.level else None
        per_bucket[key] += group.size
    uncounted = per_bucket.pop(None, 0)
    open_buckets = {key: n for key, n in per_bucket.items() if rules.room(key)}
    return uncounted + sum(min(rules.room(key), n) for key, n in open_buckets.items()), len(open_buckets)


def _explain_caps(
    groups: list[Group], k: int, rules: _Rules, levels: Sequence[str], what: str, unplaced: int
) -> Explanation:
    level, cap = levels[rules.level], rules.cap
    room, buckets = _capacity(groups, rules)
    data = {
        "needed": k,
        "level": level,
        "max_per_bucket": cap,
        "buckets": buckets,
        "capacity": room,
        "unplaced": unplaced,
    }
    if cap == 1:
        message = f"only {_n(buckets, level)} {'has' if buckets == 1 else 'have'} a free {what}; spread across {_plural(level)} needs {k}"
    else:
        message = (
            f"{_plural(level)} with free {_plural(what)} can hold at most {room} ({cap} per {level}); {k} are needed"
        )
    return Explanation("spread", message, data)


def _explain_together(
    scopes: dict[tuple[str, ...], list[Group]], k: int, rules: _Rules, levels: Sequence[str], what: str, unplaced: int
) -> Explanation:
    level = levels[rules.together]
    sizes = {key: sum(g.size for g in groups) for key, groups in scopes.items()}
    best = min(sizes, key=lambda key: (-sizes[key], key))
    data: dict[str, Any] = {
        "needed": k,
        "level": level,
        "buckets": len(scopes),
        "best_bucket": list(best),
        "best_bucket_label": label(best, levels),
        "best_count": sizes[best],
        "unplaced": unplaced,
    }
    if sizes[best] < k:
        message = (
            f"no single {level} has {k} free {_plural(what)}; the most in one {level} is {sizes[best]} "
            f"({label(best, levels)})"
        )
        return Explanation("together", message, data)
    # Enough hosts in some bucket, but the finer cap lets too few through.
    rooms = {key: _capacity(groups, rules) for key, groups in scopes.items()}
    best = min(rooms, key=lambda key: (-rooms[key][0], key))
    inner, cap = levels[rules.level], rules.cap
    data.update(
        best_bucket=list(best),
        best_bucket_label=label(best, levels),
        best_count=sizes[best],
        inner_level=inner,
        max_per_bucket=cap,
        capacity=rooms[best][0],
    )
    if cap == 1:
        message = (
            f"no single {level} has {k} {_plural(inner)} with a free {what}; the most is {rooms[best][1]} "
            f"({label(best, levels)})"
        )
    else:
        message = (
            f"no single {level} can hold {k} free {_plural(what)} at most {cap} per {inner}; the most is "
            f"{rooms[best][0]} ({label(best, levels)})"
        )
    return Explanation("spread", message, data)


# ---------------------------------------------------------------------------------------------- entry point


def allocate(
    candidates: Iterable[Candidate],
    k: int,
    policy: Policy | None,
    levels: Sequence[str],
    *,
    what: str = "matching host",
    unavailable: Mapping[str, int] | None = None,
    unmatched_reasons: Sequence[str] = (),
    occupied: Mapping[tuple[str, ...], int] | None = None,
) -> Allocation:
    """The k candidates of least total cost satisfying ``policy`` (see the module docstring).

    ``what`` names one candidate for messages ("nvidia-a100 host"). ``unavailable``: how many
    hosts match the requirement but are not candidates, by reason ({"in use by other tenants": 10}).
    ``unmatched_reasons``: why no host matches at all, from the requirement language ("no host has
    ≥ 2 TiB RAM"). Never raises for a pool too small (the answer is infeasible, explained); raises
    ValueError for k < 1 and PolicyError for a policy the levels cannot carry.
    """
    if k < 1:
        raise ValueError("ask for at least one host")
    return allocate_groups(
        group_candidates(candidates),
        k,
        policy,
        levels,
        what=what,
        unavailable=unavailable,
        unmatched_reasons=unmatched_reasons,
        occupied=occupied,
    )


def allocate_groups(
    groups: Iterable[Group],
    k: int,
    policy: Policy | None,
    levels: Sequence[str],
    *,
    what: str = "matching host",
    unavailable: Mapping[str, int] | None = None,
    unmatched_reasons: Sequence[str] = (),
    occupied: Mapping[tuple[str, ...], int] | None = None,
) -> Allocation:
    """:func:`allocate` on candidates already grouped (each group's members by id, at least
    min(size, k) of them) — for a database layer that groups with a GROUP BY.

    ``occupied``: hosts the caller already holds under this policy, by location path (a node
    pool growing). They count against the hard caps (at most N per bucket) and pin "all in one
    bucket" to theirs; soft rules are judged on the new hosts alone."""
    if k < 1:
        raise ValueError("ask for at least one host")
    policy = (policy or Policy()).validate(levels)
    rules = _Rules.of(policy, levels).holding(occupied)
    groups = sorted(groups, key=lambda g: (g.cost, g.handoff, g.path))
    for group in groups:
        if group.size < 1 or len(group.members) < min(group.size, k):
            raise ValueError(f"group {group.path} of size {group.size} needs its first {min(group.size, k)} members")
    free = sum(group.size for group in groups)
    unavailable = {reason: n for reason, n in (unavailable or {}).items() if n > 0}

    def fail(explanation: Explanation) -> Allocation:
        return Allocation((), Decimal(0), 0, False, explanation, len(groups))

    if free + sum(unavailable.values()) == 0:
        reasons = list(unmatched_reasons)
        message = "; ".join(reasons) if reasons else f"no host is a {what}"
        return fail(Explanation("none_match", message, {"needed": k, "matching": 0, "reasons": reasons}))
    if free < k:
        if not unavailable:
            message = (
                f"only {_n(free, what)} {'exists' if free == 1 else 'exist'}; {k} {'is' if k == 1 else 'are'} needed"
            )
            return fail(Explanation("not_enough", message, {"needed": k, "matching": free, "free": free}))
        matching = free + sum(unavailable.values())
        ordered = sorted(unavailable.items(), key=lambda item: (-item[1], item[0]))
        held = _and([f"{n} {'is' if n == 1 else 'are'} {reason}" for reason, n in ordered])
        free_words = "none is free" if free == 0 else f"{free} {'is' if free == 1 else 'are'} free"
        message = f"{_n(matching, what)} exist but {held}; {free_words} and {k} {'is' if k == 1 else 'are'} needed"
        data = {"needed": k, "matching": matching, "free": free, "unavailable": dict(ordered)}
        return fail(Explanation("not_enough_free", message, data))

    eligible = [group for group in groups if len(group.path) >= rules.depth]
    placed = sum(group.size for group in eligible)
    unplaced = free - placed
    if placed < k:
        level = levels[rules.depth - 1]
        if placed == 0:
            message = f"none of the {_n(free, 'free ' + what)} has a {level} in its location; {k} {'is' if k == 1 else 'are'} needed"
        else:
            message = (
                f"only {_n(placed, 'free ' + what)} {'has' if placed == 1 else 'have'} a {level} in their location "
                f"({unplaced} {'has' if unplaced == 1 else 'have'} none); {k} {'is' if k == 1 else 'are'} needed"
            )
        data = {"needed": k, "free": free, "level": level, "placed": placed, "unplaced": unplaced}
        return fail(Explanation("unplaced", message, data))

    if rules.together is None:
        scopes: dict[tuple[str, ...], list[Group]] = {(): eligible}
    else:
        scopes = defaultdict(list)
        for group in eligible:
            scopes[group.path[: rules.together + 1]].append(group)
        if rules.anchor is not None:
            if rules.anchor not in scopes:
                level = levels[rules.together]
                message = (
                    f"the hosts already held are in {label(rules.anchor, levels)}, which has no free {what}; "
                    f"all must be in one {level}"
                )
                data = {"needed": k, "level": level, "held_in": label(rules.anchor, levels), "unplaced": unplaced}
                return fail(Explanation("together", message, data))
            scopes = {rules.anchor: scopes[rules.anchor]}
    best: _Result | None = None
    # Scopes in the order of a lower bound on their cost (the k cheapest, caps ignored): a scope
    # whose bound exceeds the best cost found cannot win, nor can any after it.
    bounds = sorted((bound, key) for key, scope in scopes.items() if (bound := _cost_bound(scope, k)) is not None)
    for bound, key in bounds:
        if best is not None and bound > best.key[0]:
            break
        result = _solve(scopes[key], k, rules, key)
        if result is not None and (best is None or result.key < best.key):
            best = result
    if best is None:
        if rules.together is None:
            return fail(_explain_caps(eligible, k, rules, levels, what, unplaced))
        return fail(_explain_together(scopes, k, rules, levels, what, unplaced))
    chosen = []
    for group, count in best.takes:
        chosen.extend(group.members[:count])
    chosen.sort(key=_ID)
    return Allocation(
        chosen=tuple(chosen),
        cost=sum((c.cost for c in chosen), Decimal(0)),
        handoff=sum(c.handoff for c in chosen),
        feasible=True,
        explanation=None,
        groups=len(groups),
        penalty=best.key[1],
    )
