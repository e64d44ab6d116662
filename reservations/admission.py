"""Admission control for reservations: confirm a booking only if every instant stays feasible.

A booking holds hosts over its **occupancy** ``[start − lead, end + hand-off)``: the lead is the
learned provisioning time (the hosts are Ready at the start), the hand-off is the cleaning after
the end (key erase ~1 minute, metadata cleaning ~10). Admission asks, for every instant of the
new booking's occupancy: can the fleet serve at once

* every holding booking (confirmed, preparing, active) that is not pre-emptible — each with its
  own requirement and its hard placement caps ("at most 1 per rack");
* every tenant's standing guaranteed minimum per quota class — less what the tenant's own
  guaranteed bookings already take of it then (a guaranteed booking is *within* the guarantee);
* and the new booking?

Pre-emptible bookings are not promised anything, so they never make another booking wait.

Algorithm (:func:`check`, numbered as in the code):

1. **Slices.** The occupancy endpoints of every holding booking that overlaps the new one cut
   its occupancy into slices in which the set of active bookings does not change. Only those
   slices are checked (incremental: the rest of the calendar was feasible before and the new
   booking does not touch it). They are swept in time order with running totals
   (:class:`_Sweep`: uncapped demand summed per host set, capped demands apart); slices with
   the same demands are judged once, and where bookings only leave nothing is re-judged.
2. **Tenant limits** per slice: the tenant's guaranteed bookings of a class never exceed its
   guarantee; its standing pools plus its bookings never exceed its maximum.
3. **Fleet flow** per slice (:func:`slice_flow`): source → demand (its count) → [per-bucket cap
   node (the cap) when the demand has a hard cap] → host group (the hosts serving exactly the
   same demands, in the same bucket) → sink (the group's size). Feasible iff the maximum flow
   carries every demand — the same flow model as quota admission (:mod:`tenants.quota`), one
   network per slice. When short, the minimum cut names the demands that over-ask together.
   When the fleet is short *without* the new booking (hosts in maintenance under tight
   guarantees), the booking is refused only if it deepens the shortfall (:func:`_harmless`),
   as a guarantee raise is in quota admission.
4. **Refusal** in words: which slice, which hardware class, which bookings compete — and the
   earliest window that would work (:func:`earliest_start`).

Affinity rules ("all in one rack") cannot be written as a flow; the host plan
(:mod:`reservations.plan`) checks them on concrete hosts.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection
from django.utils import timezone

from hosts import topology
from hosts.allocator import Policy, PolicyError
from hosts.handoff import KEY_ERASE_SECONDS, METADATA_SECONDS
from hosts.models import FleetSettings, Host
from hosts.requirements import Requirement, RequirementError
from tenants.models import NodePool, Quota, QuotaClass, Tenant
from tenants.quota import (
    SINK,
    SOURCE,
    _committing_pools,
    _pool_size,
    _reachable,
    augment,
    eligible_q,
    matching_host_ids,
    residual_graph,
)

log = logging.getLogger(__name__)

INFINITY = 10**9
DEFAULT_LEAD_SECONDS = 15 * 60 + METADATA_SECONDS  # before any provisioning was recorded


# ============================================================================ the pure core


@dataclass(frozen=True)
class Demand:
    """Hosts asked for in one slice: ``count`` of ``hosts`` (the ids that can serve it), at most
    ``cap`` per bucket of ``level`` when the demand has a hard cap."""

    key: Hashable
    count: int
    hosts: frozenset[int]
    level: int | None = None  # index into the topology levels of the cap
    cap: int | None = None


@dataclass(frozen=True)
class SliceVerdict:
    ok: bool
    carried: int
    asked: int
    short: tuple[Hashable, ...] = ()  # demands in the minimum cut: they over-ask together
    short_hosts: int = 0  # hosts able to serve any of them


def slice_flow(
    demands: Sequence[Demand], buckets: Mapping[int, tuple[str, ...]] | None = None, *, memo: dict | None = None
) -> SliceVerdict:
    """Whether ``demands`` can all be served at once by distinct hosts (step 3 of the module
    docstring). ``buckets``: host id → location path, needed only for capped demands; a host not
    placed as deep as a cap's level cannot serve that demand (nobody can promise "1 per rack"
    for a host whose rack is unknown). ``memo``: a dict kept for as long as the host sets and
    ``buckets`` mean the same hosts (one fleet version), where the grouping of hosts is reused.

    1. The hosts are grouped into *atoms*: the hosts in exactly the same host sets (and, for the
       hosts a capped demand may use, the same bucket). The flow runs on atoms, not hosts.
    2. A fast yes (:func:`_components_fit`): components sharing no host judged apart, by
       Hall's condition when uncapped, by a remembered flow when capped.
    3. Otherwise the flow: uncapped demands on the same host set as one demand; only when that
       network is short is it rebuilt demand by demand, so the cut names the demands that
       over-ask. A greedy flow first, then shortest augmenting paths from it (Edmonds–Karp).
    """
    wanted = [d for d in demands if d.count > 0]
    asked = sum(d.count for d in wanted)
    if not wanted:
        return SliceVerdict(ok=True, carried=0, asked=0)
    distinct: dict[frozenset[int], None] = {}
    for demand in wanted:
        distinct.setdefault(demand.hosts, None)
    sets = tuple(sorted(distinct, key=lambda s: (hash(s), len(s))))
    index = {s: i for i, s in enumerate(sets)}
    capped = tuple(sorted({(index[d.hosts], d.level) for d in wanted if d.cap is not None and d.level is not None}))
    levels, atoms = _atoms(sets, capped, buckets, memo)
    if _components_fit(wanted, index, sets, capped, levels, atoms, memo):
        return SliceVerdict(ok=True, carried=asked, asked=asked)
    shared = Counter(index[d.hosts] for d in wanted if d.cap is None or d.level is None)
    merge = any(n > 1 for n in shared.values())
    verdict = _atom_flow(wanted, index, levels, atoms, asked, merge=merge)
    if merge and not verdict.ok:
        verdict = _atom_flow(wanted, index, levels, atoms, asked, merge=False)
    return verdict


MEMO_LIMIT = 100_000  # slice verdicts kept per fleet version before starting afresh


def _components_fit(wanted, index, sets, capped, levels, atoms, memo) -> bool:
    """A fast yes (False means "run the full flow"): the demands split into components that
    share no host (general and GPU bookings, say), each judged alone —

    * without a cap, by Hall's condition over its host sets: every union of sets has at least
      as many hosts as the demands on them ask (exact for this supply–demand network);
    * with a cap, by the flow on that component alone, remembered in ``memo`` by the
      component's demands (the GPU side changes far less often than the general side).
    """
    k = len(sets)
    parent = list(range(k))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for bits, _, _ in atoms:
        first = (bits & -bits).bit_length() - 1
        rest = bits & (bits - 1)
        while rest:
            other = (rest & -rest).bit_length() - 1
            parent[find(other)] = find(first)
            rest &= rest - 1
    members: dict[int, list[Demand]] = defaultdict(list)
    for demand in wanted:
        members[find(index[demand.hosts])].append(demand)
    for demands in members.values():
        if any(d.cap is not None and d.level is not None for d in demands):
            # By the demands themselves (their host sets, caps and counts), not by their place
            # among this slice's sets: a general booking coming or going leaves it as it was.
            key = ("component", frozenset(Counter((d.hosts, d.level, d.cap, d.count) for d in demands).items()))
            known = memo.get(key) if memo is not None else None
            if known is None:
                asked = sum(d.count for d in demands)
                known = _greedy_fits(demands, index, levels, atoms) or (
                    _atom_flow(demands, index, levels, atoms, asked, merge=True).ok
                )
                if memo is not None:
                    if len(memo) > MEMO_LIMIT:
                        memo.clear()
                    memo[key] = known
            if not known:
                return False
            continue
        asked_by_set: dict[int, int] = defaultdict(int)
        for d in demands:
            asked_by_set[index[d.hosts]] += d.count
        ids = sorted(asked_by_set)
        if len(ids) > 12:
            return False  # too many subsets to enumerate: let the flow judge
        for size in range(1, len(ids) + 1):
            for chosen in itertools.combinations(ids, size):
                mask = 0
                for i in chosen:
                    mask |= 1 << i
                hosts = sum(n for bits, _, n in atoms if bits & mask)
                if sum(asked_by_set[i] for i in chosen) > hosts:
                    return False
    return True


def _greedy_fits(demands, index, levels, atoms) -> bool:
    """A fast yes for a component with caps, without building a flow network: the capped
    demands, then the rest, each take hosts from the atoms it may use — those fewest other
    demands may use first, within its cap per bucket. True when every demand is served that
    way; False says nothing (the flow decides)."""
    free = [size for _, _, size in atoms]
    order = sorted(range(len(atoms)), key=lambda n: (atoms[n][0].bit_count(), -atoms[n][2]))
    for demand in sorted(demands, key=lambda d: (d.cap is None or d.level is None, len(d.hosts))):
        bit = 1 << index[demand.hosts]
        need = demand.count
        li = None if demand.cap is None or demand.level is None else levels.index(demand.level)
        used: dict = defaultdict(int)
        for n in order:
            if need == 0:
                break
            bits, place, _ = atoms[n]
            if not bits & bit or not free[n]:
                continue
            take = min(need, free[n])
            if li is not None:
                bucket = place[li]
                if bucket is None:
                    continue
                take = min(take, demand.cap - used[bucket])
                if take <= 0:
                    continue
                used[bucket] += take
            free[n] -= take
            need -= take
        if need:
            return False
    return True


def _atoms(sets, capped, buckets, memo) -> tuple[list[int], list[tuple[int, tuple, int]]]:
    """(capped levels, [(membership bit mask, bucket per capped level, size)]) — step 1."""
    key = (sets, capped)
    if memo is not None:
        found = memo.get(key)
        if found is not None:
            return found
    mask: dict[int, int] = defaultdict(int)
    for i, hosts in enumerate(sets):
        bit = 1 << i
        for host in hosts:
            mask[host] |= bit
    levels = sorted({level for _, level in capped})
    # Only the hosts a capped demand may use are told apart by bucket.
    need = {level: frozenset().union(*(sets[i] for i, lv in capped if lv == level)) for level in levels}
    groups: dict[tuple[int, tuple], int] = defaultdict(int)
    paths = buckets or {}
    for host, bits in mask.items():
        if levels:
            path = paths.get(host, ())
            place = tuple(
                (path[: level + 1] if len(path) > level else None) if host in need[level] else None for level in levels
            )
        else:
            place = ()
        groups[(bits, place)] += 1
    found = (levels, [(bits, place, size) for (bits, place), size in groups.items()])
    if memo is not None:
        memo[key] = found
    return found


def _atom_flow(wanted, index, levels, atoms, asked, *, merge: bool) -> SliceVerdict:
    """Steps 2 and 3 on the atoms."""
    capacity: dict[Hashable, dict[Hashable, int]] = defaultdict(dict)
    members: dict[Hashable, list[int]] = defaultdict(list)  # demand node → indices into wanted
    for number, (_, _, size) in enumerate(atoms):
        capacity[("atom", number)][SINK] = size
    for j, demand in enumerate(wanted):
        i = index[demand.hosts]
        uncapped = demand.cap is None or demand.level is None
        node = ("set", i) if merge and uncapped else ("demand", j)
        members[node].append(j)
        capacity[SOURCE][node] = capacity[SOURCE].get(node, 0) + demand.count
        if len(members[node]) > 1:
            continue  # the merged node's edges are made
        bit = 1 << i
        li = None if uncapped else levels.index(demand.level)
        edges = capacity[node]
        for number, (bits, place, _) in enumerate(atoms):
            if not bits & bit:
                continue
            if li is None:
                edges[("atom", number)] = INFINITY
                continue
            bucket = place[li]
            if bucket is None:
                continue  # not placed as deep as the cap's level
            cap_node = ("cap", j, bucket)
            edges[cap_node] = demand.cap
            capacity[cap_node][("atom", number)] = INFINITY
    carried, residual = _greedy_max_flow(capacity)
    if carried >= asked:
        return SliceVerdict(ok=True, carried=carried, asked=asked)
    cut = _reachable(residual, SOURCE)
    short = tuple(wanted[j].key for node, js in members.items() if node in cut for j in sorted(js))
    order = {key: n for n, key in enumerate(d.key for d in wanted)}
    short = tuple(sorted(short, key=order.__getitem__))
    short_hosts = sum(size for number, (_, _, size) in enumerate(atoms) if ("atom", number) in cut)
    return SliceVerdict(ok=False, carried=carried, asked=asked, short=short, short_hosts=short_hosts)


def _greedy_max_flow(capacity: Mapping[Hashable, Mapping[Hashable, int]]) -> tuple[int, dict]:
    """Maximum flow from SOURCE to SINK of a demand → [cap →] atom → sink network: a greedy
    flow (each demand takes what its atoms have left), then shortest augmenting paths from it.
    Returns the flow's value and the residual capacities (reverse edges included)."""
    residual = residual_graph(capacity)
    total = 0
    source = residual[SOURCE]
    for node in list(source):
        want = source[node]
        for v in list(residual[node]):
            if want == 0:
                break
            if v == SOURCE:
                continue
            if v[0] == "atom":
                hops = [(node, v)]
                room = min(want, residual[node][v], residual[v][SINK])
            else:  # a cap node: through it to its atoms
                room_cap = min(want, residual[node][v])
                for atom in list(residual[v]):
                    if room_cap == 0:
                        break
                    if atom == node:
                        continue
                    push = min(room_cap, residual[atom][SINK])
                    if push <= 0:
                        continue
                    for a, b in ((SOURCE, node), (node, v), (v, atom), (atom, SINK)):
                        residual[a][b] -= push
                        residual[b][a] += push
                    room_cap -= push
                    want -= push
                    total += push
                continue
            if room <= 0:
                continue
            for a, b in (*((SOURCE, node),), *hops, (v, SINK)):
                residual[a][b] -= room
                residual[b][a] += room
            want -= room
            total += room
    return total + augment(residual, SOURCE, SINK), residual


@dataclass(frozen=True)
class Interval:
    key: Hashable
    start: datetime
    end: datetime


def sweep_slices(
    window: tuple[datetime, datetime], intervals: Iterable[Interval]
) -> Iterable[tuple[datetime, datetime, list, list]]:
    """:func:`cut_slices` as changes: ``(start, end, keys entering, keys leaving)`` for each
    piece, so a caller keeps running totals instead of rebuilding them per slice (the first
    piece enters every interval covering the window's start)."""
    lo, hi = window
    inside = [i for i in intervals if i.start < hi and i.end > lo]
    points = sorted(
        {lo, hi, *(i.start for i in inside if lo < i.start < hi), *(i.end for i in inside if lo < i.end < hi)}
    )
    starts = sorted(inside, key=lambda i: i.start)
    ends = sorted(inside, key=lambda i: i.end)
    active: set = set()
    si = ei = 0
    for a, b in itertools.pairwise(points):
        entering, leaving = [], []
        while ei < len(ends) and ends[ei].end <= a:
            if ends[ei].key in active:
                active.discard(ends[ei].key)
                leaving.append(ends[ei].key)
            ei += 1
        while si < len(starts) and starts[si].start <= a:
            if starts[si].end > a:
                active.add(starts[si].key)
                entering.append(starts[si].key)
            si += 1
        yield a, b, entering, leaving


def cut_slices(
    window: tuple[datetime, datetime], intervals: Iterable[Interval]
) -> list[tuple[datetime, datetime, frozenset]]:
    """``window`` cut at every endpoint of ``intervals`` inside it: ``(start, end, active keys)``
    for each piece, active keys being the intervals covering it (step 1)."""
    active: set = set()
    out = []
    for a, b, entering, leaving in sweep_slices(window, intervals):
        active.difference_update(leaving)
        active.update(entering)
        out.append((a, b, frozenset(active)))
    return out


# ============================================================================ the database layer


def handoff_seconds(pool: NodePool) -> int:
    """The cleaning after a booking of ``pool``: key erase when the pool's policy is key erase
    (its hosts are then all capable of it), metadata cleaning otherwise."""
    return KEY_ERASE_SECONDS if pool.cleaning == NodePool.Cleaning.KEY_ERASE else METADATA_SECONDS


def lead_seconds(host_ids: Iterable[int] | None = None) -> int:
    """How long before its start a booking's hosts start provisioning: the p95 of the recorded
    provisioning times of the hardware it would get (the slowest class among ``host_ids``),
    plus a minute for the reconcile to notice (it runs every 10 s) and the notice a borrowed
    host gets is covered separately by the plan (see :mod:`reservations.lifecycle`)."""
    from tenants.progress import latencies

    known = latencies()
    classes = set()
    if host_ids is not None:
        ids = list(host_ids)
        if ids:
            classes = set(
                Host.objects.filter(pk__in=ids[:5000]).order_by().values_list("hardware_class", flat=True).distinct()
            )
    if known.fleet_p95 is None:
        # No history yet: a typical provisioning plus the metadata cleaning Ironic runs before
        # it (what the lab and most fleets spend), rather than a lead that is short for sure.
        return DEFAULT_LEAD_SECONDS + 60
    seconds = max((known.p95_for_class(c)[0] for c in classes), default=known.p95_for_class(None)[0])
    return int(seconds) + 60


@dataclass(frozen=True)
class Ask:
    """What is being booked: one or more windows (a series) of ``count`` hosts."""

    tenant: Tenant
    quota_class: QuotaClass
    priority: str
    count: int
    requirement: Requirement
    policy: Policy
    windows: tuple[tuple[datetime, datetime], ...]  # (start, end) of each occurrence
    lead: timedelta
    handoff: timedelta
    label: str = "this booking"

    def occupancies(self) -> list[tuple[datetime, datetime]]:
        return [(s - self.lead, e + self.handoff) for s, e in self.windows]


@dataclass
class Refusal:
    message: str
    slice_start: datetime | None = None
    slice_end: datetime | None = None
    classes: list[str] = field(default_factory=list)
    competing: list[int] = field(default_factory=list)  # reservation ids
    competing_labels: list[str] = field(default_factory=list)
    earliest: datetime | None = None
    occurrence: int | None = None  # which window of a series (0-based)

    def as_dict(self) -> dict:
        return {
            "message": self.message,
            "slice_start": self.slice_start.isoformat() if self.slice_start else None,
            "slice_end": self.slice_end.isoformat() if self.slice_end else None,
            "classes": self.classes,
            "competing": self.competing,
            "earliest_start": self.earliest.isoformat() if self.earliest else None,
            "occurrence": self.occurrence,
        }


@dataclass
class Verdict:
    ok: bool
    refusal: Refusal | None
    slices: int  # slices checked (after merging equal active sets)
    seconds: float = 0.0


# What admission reads of the hosts, kept across checks while the hosts table is unchanged (see
# :func:`_fleet_version`): the matching set per requirement, the location paths, the grouping
# of hosts per combination of sets (slice_flow's memo). A booking page's checks and the
# candidates of an earliest start then cost a query each instead of one per requirement.
_CACHE: dict = {"version": None}


def _fleet_version(levels) -> tuple:
    """Changes whenever a host row is inserted, updated or deleted: the number of rows and the
    sum of their ``xmin`` (the id of the transaction that wrote each row version; every write
    makes a new one). Cheaper than reading the hosts, and — unlike ``updated_at`` — also moved
    by a queryset ``.update()``."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), coalesce(sum(xmin::text::bigint), 0) FROM hosts_host")
        return (*cursor.fetchone(), tuple(levels))


class _Fleet:
    """What one admission check needs from the database: eligible hosts per requirement
    (cached by the requirement's JSON, across checks for one fleet version), host locations
    for caps, quotas."""

    def __init__(self) -> None:
        global _CACHE
        self.levels = list(FleetSettings.load().topology_levels)
        self.eligible = Host.objects.filter(eligible_q())
        version = _fleet_version(self.levels)
        if _CACHE.get("version") != version:
            _CACHE = {"version": version, "matching": {}, "paths": None, "memo": {}}
        self._cache = _CACHE
        self._matching: dict[str, frozenset[int]] = _CACHE["matching"]
        self.memo: dict = _CACHE["memo"]
        self.quotas = {(q.tenant_id, q.quota_class_id): q for q in Quota.objects.all()}
        self.classes = {k.pk: k for k in QuotaClass.objects.all()}
        self._class_req: dict[int, Requirement | None] = {}
        self.held_demand: dict[int, Demand] = {}  # per check (see check): a held booking's demand

    def matching(self, requirement: Requirement) -> frozenset[int]:
        key = requirement.to_compact()
        found = self._matching.get(key)
        if found is None:
            found = frozenset(matching_host_ids(requirement, self.eligible))
            self._matching[key] = found
        return found

    def class_requirement(self, class_id: int) -> Requirement | None:
        if class_id not in self._class_req:
            try:
                self._class_req[class_id] = self.classes[class_id].get_requirement()
            except (RequirementError, KeyError):
                self._class_req[class_id] = None
        return self._class_req[class_id]

    def paths(self) -> dict[int, tuple[str, ...]]:
        if self._cache["paths"] is None:
            self._cache["paths"] = {
                pk: topology.path(location or {}, self.levels)
                for pk, location in self.eligible.values_list("id", "location")
            }
        return self._cache["paths"]

    def cap(self, policy: Policy) -> tuple[int | None, int | None]:
        """(level index, max per bucket) of a policy's hard cap, if it has one."""
        if policy.level is None or policy.level not in self.levels:
            return None, None
        if policy.max_per_bucket is not None:
            return self.levels.index(policy.level), policy.max_per_bucket
        if policy.mode == "spread" and policy.hard:
            return self.levels.index(policy.level), 1
        return None, None


@dataclass(frozen=True)
class _Held:
    """A holding reservation as admission sees it."""

    id: int
    tenant_id: int
    quota_class_id: int
    priority: str
    count: int
    start: datetime
    end: datetime
    requirement: Requirement | None
    policy: Policy
    slug: str = ""
    name: str = ""
    starts_at: datetime | None = None

    @property
    def label(self) -> str:
        """How a refusal names it (made only for the few a refusal names)."""
        when = f" ({timezone.localtime(self.starts_at):%a %d %b %H:%M})" if self.starts_at else ""
        return f"{self.slug}: {self.name or str(self.count) + ' hosts'}{when}"


_HELD_SQL = """
SELECT r.id, r.tenant_id, t.slug, r.name, r.count, r.priority, r.requirement, r.policy,
       lower(r.occupancy), upper(r.occupancy), r.starts_at, r.node_pool_id,
       p.requirement, p.policy, p.quota_class_id, k.requirement
  FROM reservations_reservation r
  JOIN tenants_tenant t ON t.id = r.tenant_id
  JOIN tenants_nodepool p ON p.id = r.node_pool_id
  JOIN tenants_quotaclass k ON k.id = p.quota_class_id
 WHERE r.state = ANY(%s) AND r.occupancy && tstzrange(%s, %s) AND NOT (r.id = ANY(%s))
"""


def _json(value):
    return json.loads(value) if isinstance(value, str | bytes) else value


def _held(lo: datetime, hi: datetime, exclude: Iterable[int] = ()) -> list[_Held]:
    """Holding reservations whose occupancy overlaps [lo, hi) (one query, GiST index). Plain
    rows, not models, and each pool's requirement parsed once: a long window overlaps
    thousands at fleet scale."""
    from reservations.models import Reservation

    with connection.cursor() as cursor:
        cursor.execute(_HELD_SQL, [list(Reservation.HOLDING), lo, hi, [int(pk) for pk in exclude]])
        rows = cursor.fetchall()
    requirements: dict[tuple, Requirement | None] = {}
    policies: dict[tuple, Policy] = {}
    out = []
    for (
        pk,
        tenant_id,
        slug,
        name,
        count,
        priority,
        own,
        policy_json,
        start,
        end,
        starts_at,
        pool_id,
        pool_requirement,
        pool_policy,
        class_id,
        class_requirement,
    ) in rows:
        key = (pool_id, own or "")
        if key not in requirements:
            try:
                # As Reservation.get_requirement: the class's, the pool's own, the booking's own.
                requirement = Requirement.from_json(_json(class_requirement))
                if _json(pool_requirement):
                    requirement = requirement.merge(Requirement.from_json(_json(pool_requirement)))
                if _json(own):
                    requirement = requirement.merge(Requirement.from_json(_json(own)))
            except RequirementError:
                requirement = None  # it serves nothing new; it still counts against nobody
            requirements[key] = requirement
        policy_key = (pool_id, policy_json or "")
        if policy_key not in policies:
            try:
                policies[policy_key] = Policy.from_json(_json(policy_json) or _json(pool_policy) or {}, None)
            except PolicyError:
                policies[policy_key] = Policy()
        out.append(
            _Held(
                id=pk,
                tenant_id=tenant_id,
                quota_class_id=class_id,
                priority=priority,
                count=count,
                start=start,
                end=end,
                requirement=requirements[key],
                policy=policies[policy_key],
                slug=slug,
                name=name,
                starts_at=starts_at,
            )
        )
    return out


def _committed(tenant: Tenant, quota_class: QuotaClass) -> int:
    """The sizes of the tenant's standing pools of the class (what it holds around the clock)."""
    from django.db.models import Sum

    total = (
        _committing_pools().filter(cluster__tenant=tenant, quota_class=quota_class).aggregate(n=Sum(_pool_size()))["n"]
    )
    return total or 0


def _hosts(n: int) -> str:
    return f"{n} host{'s' if n != 1 else ''}"


def _when(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%a %d %b %H:%M")


def check(ask: Ask, *, exclude: Iterable[int] = (), suggest: bool = True, fleet: _Fleet | None = None) -> Verdict:
    """Admission for ``ask`` (every window of it), against the holding reservations other than
    ``exclude`` (a reservation being extended is judged without its old self)."""
    import time

    began = time.perf_counter()
    fleet = fleet or _Fleet()
    occupancies = ask.occupancies()
    lo, hi = min(s for s, _ in occupancies), max(e for _, e in occupancies)
    held = _held(lo, hi, exclude)
    fleet.held_demand = {}  # bookings may have changed since the fleet was loaded
    by_id = {h.id: h for h in held}
    ask_hosts = fleet.matching(ask.requirement)
    level, cap = fleet.cap(ask.policy)
    quota = fleet.quotas.get((ask.tenant.pk, ask.quota_class.pk))
    guaranteed = quota.guaranteed if quota else 0
    maximum = quota.maximum if quota else 0
    committed = _committed(ask.tenant, ask.quota_class)
    intervals = [Interval(h.id, h.start, h.end) for h in held]
    new = Demand(key=NEW, count=ask.count, hosts=ask_hosts, level=level, cap=cap)
    seen: dict[tuple, bool] = {}  # slice demands checked → whether everything fit
    slices = 0

    def refuse(refusal: Refusal, index: int) -> Verdict:
        refusal.occurrence = index if len(occupancies) > 1 else None
        if suggest and refusal.earliest is None and len(occupancies) == 1:
            start, end = ask.windows[0]
            refusal.earliest = earliest_start(ask, after=start, duration=end - start, fleet=fleet)
            if refusal.earliest is not None:
                refusal.message += f". First possible start: {_when(refusal.earliest)}"
        return Verdict(ok=False, refusal=refusal, slices=slices, seconds=time.perf_counter() - began)

    if quota is None:
        return refuse(Refusal(f"{ask.tenant.slug} has no quota for {ask.quota_class.name}; ask an operator for one"), 0)
    if ask.priority != "preemptible" and not ask_hosts:
        return Verdict(
            ok=False,
            refusal=Refusal(f"No host in the fleet meets the requirement ({ask.requirement.describe()})."),
            slices=0,
            seconds=time.perf_counter() - began,
        )
    for index, (o_start, o_end) in enumerate(occupancies):
        state = _Sweep(ask, fleet)
        fitted = False  # whether everything, the new booking included, fits in the previous slice
        for a, b, entering, leaving in sweep_slices((o_start, o_end), intervals):
            # Bookings only leaving: the demand only shrinks (a guaranteed booking's hosts go back
            # to its tenant's standing guarantee, a demand on a superset of its hosts), so what fit
            # still fits without a flow.
            shrinking = fitted and not entering and all(_shrinks(by_id[key]) for key in leaving)
            for key in leaving:
                state.leave(by_id[key])
            for key in entering:
                state.enter(by_id[key])
            # 2. Tenant limits.
            if ask.priority == "guaranteed" and state.mine_guaranteed + ask.count > guaranteed:
                mine = [h for h in state.mine() if h.priority == "guaranteed"]
                names = [h.label for h in mine]
                already = (
                    f"; {state.mine_guaranteed} already booked as guaranteed then ({'; '.join(names)})" if names else ""
                )
                return refuse(
                    Refusal(
                        f"{ask.tenant.slug} is guaranteed {_hosts(guaranteed)} of {ask.quota_class.name}{already}: "
                        f"a guaranteed booking of {ask.count} does not fit from {_when(a)} to {_when(b)}; "
                        "book on demand to use the maximum",
                        slice_start=a,
                        slice_end=b,
                        classes=[ask.quota_class.name],
                        competing=[h.id for h in mine],
                        competing_labels=names,
                    ),
                    index,
                )
            if committed + state.mine_total + ask.count > maximum:
                mine = state.mine()
                parts = []
                if committed:
                    parts.append(f"its standing pools ask for {committed}")
                if state.mine_total:
                    parts.append(f"its bookings then take {state.mine_total}")
                room = max(0, maximum - committed - state.mine_total)
                return refuse(
                    Refusal(
                        f"{ask.tenant.slug} may hold at most {_hosts(maximum)} of {ask.quota_class.name}"
                        + (f"; {' and '.join(parts)}" if parts else "")
                        + f", so from {_when(a)} to {_when(b)} it can book {room}, not {ask.count}",
                        slice_start=a,
                        slice_end=b,
                        classes=[ask.quota_class.name],
                        competing=[h.id for h in mine],
                        competing_labels=[h.label for h in mine],
                    ),
                    index,
                )
            if ask.priority == "preemptible":
                continue  # not promised: nothing to check against the fleet
            # 3. Fleet flow, once per distinct demand (not per distinct set of bookings).
            if shrinking:
                continue
            signature = state.signature()
            if signature in seen:
                fitted = seen[signature]
                continue
            slices += 1
            harmless, fitted = _harmless(new, signature, fleet)
            seen[signature] = fitted
            if not harmless:
                active = [by_id[k] for k in state.active]
                verdict, before = _fleet_slice(ask, ask_hosts, level, cap, active, fleet)
                return refuse(_fleet_refusal(ask, verdict, before, a, b, by_id, fleet), index)
    return Verdict(ok=True, refusal=None, slices=slices, seconds=time.perf_counter() - began)


class _Sweep:
    """Running totals of the bookings active in a slice, updated as bookings enter and leave
    along the sweep: the asking tenant's bookings of the class (its limits), the guaranteed
    bookings per tenant and class (they lower the standing guarantees), and the fleet demand
    aggregated — uncapped bookings summed per host set, capped ones each on their own."""

    def __init__(self, ask: Ask, fleet: _Fleet) -> None:
        self.ask = ask
        self.fleet = fleet
        self.active: set[int] = set()
        self._mine: dict[int, _Held] = {}
        self.mine_guaranteed = 0
        self.mine_total = 0
        self.guaranteed_booked: Counter = Counter()
        self.uncapped: Counter = Counter()  # host set → hosts asked
        self.capped: Counter = Counter()  # (host set, level, cap, count) → bookings
        self._standing: dict[bool, frozenset] = {}  # with_ask → standing, until a guaranteed booking moves

    def _demand(self, h: _Held) -> Demand | None:
        if h.priority == "preemptible" or h.requirement is None:
            return None
        demand = self.fleet.held_demand.get(h.id)
        if demand is None:
            h_level, h_cap = self.fleet.cap(h.policy)
            demand = Demand(key=h.id, count=h.count, hosts=self.fleet.matching(h.requirement), level=h_level, cap=h_cap)
            self.fleet.held_demand[h.id] = demand
        return demand

    def _apply(self, h: _Held, sign: int) -> None:
        if h.tenant_id == self.ask.tenant.pk and h.quota_class_id == self.ask.quota_class.pk:
            if sign > 0:
                self._mine[h.id] = h
            else:
                self._mine.pop(h.id, None)
            self.mine_total += sign * h.count
            if h.priority == "guaranteed":
                self.mine_guaranteed += sign * h.count
        if h.priority == "guaranteed":
            self.guaranteed_booked[(h.tenant_id, h.quota_class_id)] += sign * h.count
            self._standing = {}
        demand = self._demand(h)
        if demand is None:
            return
        if demand.cap is None or demand.level is None:
            self.uncapped[demand.hosts] += sign * demand.count
            if not self.uncapped[demand.hosts]:
                del self.uncapped[demand.hosts]
        else:
            key = (demand.hosts, demand.level, demand.cap, demand.count)
            self.capped[key] += sign
            if not self.capped[key]:
                del self.capped[key]

    def enter(self, h: _Held) -> None:
        self.active.add(h.id)
        self._apply(h, +1)

    def leave(self, h: _Held) -> None:
        self.active.discard(h.id)
        self._apply(h, -1)

    def mine(self) -> list[_Held]:
        return sorted(self._mine.values(), key=lambda h: (h.start, h.id))

    def standing(self, *, with_ask: bool) -> frozenset:
        """What the standing guarantees still ask (less the guaranteed bookings; the ask's own
        count too, with ``with_ask``, when it is guaranteed), per host set — not per class: a
        remembered verdict must not outlive a change of a class's requirement."""
        if with_ask in self._standing:
            return self._standing[with_ask]
        booked = self.guaranteed_booked
        mine = (self.ask.tenant.pk, self.ask.quota_class.pk)
        extra = self.ask.count if with_ask and self.ask.priority == "guaranteed" else 0
        out: Counter = Counter()
        for pair, quota in self.fleet.quotas.items():
            left = quota.guaranteed - booked.get(pair, 0) - (extra if pair == mine else 0)
            if left > 0:
                requirement = self.fleet.class_requirement(pair[1])
                if requirement is not None:
                    out[self.fleet.matching(requirement)] += left
        self._standing[with_ask] = frozenset(out.items())
        return self._standing[with_ask]

    def signature(self) -> tuple:
        return (
            frozenset(self.uncapped.items()),
            frozenset(self.capped.items()),
            self.standing(with_ask=False),
            self.standing(with_ask=True),
        )


def _aggregate(signature: tuple, *, standing: frozenset, fleet: _Fleet) -> list[Demand]:
    """The demands of a slice from its signature (see :class:`_Sweep`), the NEW one apart."""
    uncapped, capped, _, _ = signature
    demands = [Demand(key=("set", n), count=count, hosts=hosts) for n, (hosts, count) in enumerate(uncapped)]
    n = 0
    for (hosts, level, cap, count), times in capped:
        for _ in range(times):
            demands.append(Demand(key=("capped", n), count=count, hosts=hosts, level=level, cap=cap))
            n += 1
    for n, (hosts, count) in enumerate(standing):
        demands.append(Demand(key=("standing", n), count=count, hosts=hosts))
    return demands


def _shortfall(demands: list[Demand], fleet: _Fleet) -> tuple[int, SliceVerdict]:
    buckets = fleet.paths() if any(d.cap is not None for d in demands) else None
    verdict = slice_flow(demands, buckets, memo=fleet.memo)
    return verdict.asked - verdict.carried, verdict


def _shrinks(h: _Held) -> bool:
    """Whether the demand only shrinks when ``h`` leaves a slice (see :func:`check`)."""
    return h.priority != "guaranteed" or h.requirement is not None


def _harmless(new: Demand, signature: tuple, fleet: _Fleet) -> tuple[bool, bool]:
    """(harmless, fits): whether the new booking leaves the fleet's shortfall in this slice as it
    was — zero when everything fits (``fits``, the usual case), and, when the fleet is already
    short of its promises then (hosts went into maintenance under tight guarantees, say), not
    grown by it, as for a guarantee raise in quota admission. Remembered per fleet version by
    the slice's demands."""
    key = ("harmless", signature, new.hosts, new.level, new.cap, new.count)
    known = fleet.memo.get(key)
    if known is None:
        after, _ = _shortfall([*_aggregate(signature, standing=signature[3], fleet=fleet), new], fleet)
        if after == 0:
            known = (True, True)
        else:
            before, _ = _shortfall(_aggregate(signature, standing=signature[2], fleet=fleet), fleet)
            known = (after <= before, False)
        if len(fleet.memo) > MEMO_LIMIT:
            fleet.memo.clear()
        fleet.memo[key] = known
    return known


NEW = ("new",)


def _fleet_slice(ask: Ask, ask_hosts, level, cap, active: list[_Held], fleet: _Fleet) -> tuple[SliceVerdict, int]:
    """The slice booking by booking (a refusal names the competing bookings): the verdict with
    the new booking, and the shortfall there was without it."""
    demands: list[Demand] = []
    guaranteed_booked: dict[tuple[int, int], int] = defaultdict(int)
    state = _Sweep(ask, fleet)
    for h in active:
        if h.priority == "guaranteed":
            guaranteed_booked[(h.tenant_id, h.quota_class_id)] += h.count
        demand = state._demand(h)
        if demand is not None:
            demands.append(demand)

    def standing(extra: int) -> list[Demand]:
        per_class: dict[int, int] = defaultdict(int)
        for (tenant_id, class_id), quota in fleet.quotas.items():
            left = quota.guaranteed - guaranteed_booked.get((tenant_id, class_id), 0)
            if (tenant_id, class_id) == (ask.tenant.pk, ask.quota_class.pk):
                left -= extra
            if left > 0:
                per_class[class_id] += left
        out = []
        for class_id, n in per_class.items():
            requirement = fleet.class_requirement(class_id)
            if requirement is not None:
                out.append(Demand(key=("standing", class_id), count=n, hosts=fleet.matching(requirement)))
        return out

    extra = ask.count if ask.priority == "guaranteed" else 0
    new = Demand(key=NEW, count=ask.count, hosts=ask_hosts, level=level, cap=cap)
    before, _ = _shortfall([*demands, *standing(0)], fleet)
    _, verdict = _shortfall([*demands, *standing(extra), new], fleet)
    return verdict, before


def _fleet_refusal(
    ask: Ask, verdict: SliceVerdict, before: int, a: datetime, b: datetime, by_id, fleet: _Fleet
) -> Refusal:
    classes, competing, labels = [], [], []
    for key in verdict.short:
        if key == NEW:
            classes.append(ask.requirement.describe())
        elif isinstance(key, tuple) and key[0] == "standing":
            classes.append(f"standing guarantees of {fleet.classes[key[1]].name}")
        else:
            competing.append(key)
            labels.append(by_id[key].label)
    short_by = verdict.asked - verdict.carried - before
    spread = ""
    if ask.policy.level and (ask.policy.max_per_bucket or (ask.policy.mode == "spread" and ask.policy.hard)):
        spread = f", at most {ask.policy.max_per_bucket or 1} per {ask.policy.level}"
    what = f"{ask.count} × {ask.requirement.describe()}{spread}"
    message = f"{what} does not fit from {_when(a)} to {_when(b)}: short by {_hosts(short_by)}"
    if verdict.short_hosts:
        message += f" (the {_hosts(verdict.short_hosts)} able to serve it are promised"
    else:
        message += " (no host can serve it"
    others = [c for c in classes if c != ask.requirement.describe()]
    if labels or others:
        message += (
            " to " + "; ".join([*others, *labels[:5]]) + (f" and {len(labels) - 5} more" if len(labels) > 5 else "")
        )
    message += ")"
    if before:
        message += (
            f"; the fleet was already short by {_hosts(before)} of its promises then, and this booking "
            "would make it worse (an operator can bring hosts back or lower guarantees)"
        )
    return Refusal(
        message=message, slice_start=a, slice_end=b, classes=classes, competing=competing, competing_labels=labels
    )


# ============================================================================ earliest window


def earliest_start(
    ask: Ask, *, after: datetime, duration: timedelta, horizon: timedelta | None = None, fleet: _Fleet | None = None
) -> datetime | None:
    """The earliest start at or after ``after`` (and not before now + lead) at which ``ask``'s
    count, requirement and placement fit for ``duration``, within the booking horizon; None
    when nothing fits.

    Candidate starts are ``after`` and every moment a holding booking's occupancy ends (plus
    the lead): feasibility only changes there. Each candidate is judged by :func:`check`
    (with the tenant limits), cheapest first; slices already known feasible are not rechecked
    across candidates thanks to the per-check memo.
    """
    fleet = fleet or _Fleet()
    settings = FleetSettings.load()
    horizon = horizon or timedelta(days=settings.reservation_horizon_days)
    now = timezone.now()
    first = max(after, now + ask.lead)
    limit = now + horizon
    ends = _held_ends(first - ask.lead, limit)
    candidates = sorted({first, *(e + ask.lead for e in ends if e + ask.lead > first)})
    for tried, start in enumerate(candidates):
        if start > limit or tried > 500:
            return None
        probe = Ask(
            tenant=ask.tenant,
            quota_class=ask.quota_class,
            priority=ask.priority,
            count=ask.count,
            requirement=ask.requirement,
            policy=ask.policy,
            windows=((start, start + duration),),
            lead=ask.lead,
            handoff=ask.handoff,
        )
        if check(probe, suggest=False, fleet=fleet).ok:
            return start
    return None


def _held_ends(lo: datetime, hi: datetime) -> list[datetime]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT upper(occupancy) FROM reservations_reservation "
            "WHERE state = ANY(%s) AND occupancy && tstzrange(%s, %s) ORDER BY 1 LIMIT 2000",
            [["confirmed", "preparing", "active"], lo, hi],
        )
        return [row[0] for row in cursor.fetchall()]


@dataclass(frozen=True)
class Availability:
    start: datetime
    end: datetime


def availability(ask: Ask, *, after: datetime, duration: timedelta, windows: int = 3) -> list[Availability]:
    """ "When can I get N hosts like this for D hours?" — the first ``windows`` starts that work,
    each at least ``duration`` after the previous one's start."""
    fleet = _Fleet()
    found: list[Availability] = []
    start = after
    for _ in range(windows):
        at = earliest_start(ask, after=start, duration=duration, fleet=fleet)
        if at is None:
            break
        found.append(Availability(at, at + duration))
        start = at + duration
    return found
