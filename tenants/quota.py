"""Quota: what each tenant may hold of each class, and whether the fleet can keep every promise.

A :class:`~tenants.models.Quota` gives a tenant, per :class:`~tenants.models.QuotaClass`, a
**guaranteed** minimum (always obtainable: others' use of those hosts is pre-empted) and a
**maximum** (the cap, borrowing included). This module reads and writes them:

* usage — :func:`tenant_usage` / :func:`tenants_usage` (quota bars, operator pages) and
  :func:`usage_history` (host-hours per day);
* sizing — :func:`pool_size_refusal` (node pool create/scale, under the tenant row lock),
  :func:`autoscale_ceiling` (the autoscaler's max annotation) and :func:`allocation_budget`
  (the provisioning reconcile);
* admission — :func:`guarantees_check`: can the fleet carry every guarantee at once, traits
  considered? (:func:`fleet_capacity` is its per-class summary for the capacity page);
* writes — :func:`quota_update`, :func:`quota_delete`, :func:`quota_class_save`, each under one
  transaction-level advisory lock so two operators' changes are judged one after the other.

Decisions (beyond the brief):

* **Which hosts carry guarantees** (:func:`eligible_q`): active, inspected, not in maintenance
  and not in error (``operational_status == "error"``). A host in error cannot be handed out or
  serve a workload until someone repairs it, so a promise resting on it is a promise we cannot
  keep; hosts that are busy, provisioning or deprovisioning do count — a guarantee is kept by
  pre-emption, not by idle hosts.
* **Committed** counts live pools (``deleted_at`` null) that are not being deleted: a pool in
  phase ``deleting`` is going to zero, so its size no longer counts — but its hosts still count
  as **held** until they are released (every unreleased PoolHost of the tenant counts).
* **Raises refused only when they add to the shortfall.** A guarantee raise (or a change of a
  class's requirement) is refused when the fleet's total shortfall grows. When the fleet is
  already short elsewhere (a host failed), an unrelated raise the fleet can carry is allowed;
  lowering is always allowed.
* **A maximum below what the tenant holds is allowed** silently: its pools keep their hosts
  (nothing is pre-empted by a quota change); new allocations wait until holdings fall below it.
"""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, Count, F, IntegerField, Q, Sum, When
from django.utils import timezone

from hosts.models import Host
from hosts.requirements import Requirement, RequirementError
from hosts.selection import MATCH_FIELDS, _class_verdicts, _needs_class_check, free_q
from tenants.audit import audit_record
from tenants.models import TENANT_SLUG, NodePool, PoolHost, Quota, QuotaClass, Tenant

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key of quota admission ("teapot quota" in spirit; any constant works as
# long as every writer of guarantees and class requirements uses it).
ADVISORY_LOCK_KEY = 0x7EA9_0A0A
MAX_QUOTA = 100_000  # hosts; far above any fleet, well inside the integer column
CLASS_NAME_MAX = QuotaClass._meta.get_field("name").max_length


def _hosts(n: int) -> str:
    return f"{n} host{'s' if n != 1 else ''}"


def _class_hosts(n: int, klass: str) -> str:
    return f"{n} {klass} host{'s' if n != 1 else ''}"


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _class_order(klass: QuotaClass) -> tuple[int, str]:
    return (klass.order, klass.name)


def _pool_size() -> Case:
    """A pool's committed size: ``replicas`` when fixed, the autoscaler's ``desired`` otherwise."""
    return Case(When(autoscale_min__isnull=True, then=F("replicas")), default=F("desired"), output_field=IntegerField())


def _committing_pools():
    # A pool being deleted is going to zero: its size is no longer asked for (its hosts still
    # count as held until released).
    return NodePool.objects.live().exclude(phase=NodePool.Phase.DELETING)


# =============================================================================== usage


@dataclass(frozen=True)
class ClassUsage:
    quota_class: QuotaClass
    guaranteed: int
    maximum: int
    held: int  # hosts the tenant's pools of this class hold now (PoolHost.released_at is null)
    held_guaranteed: int  # of which counted within the guarantee
    committed: int  # the sizes of the tenant's live pools of this class (replicas, or desired if autoscaled)

    @property
    def borrowed(self) -> int:
        return self.held - self.held_guaranteed

    @property
    def room(self) -> int:
        return max(0, self.maximum - self.committed)


def _usage(tenant_id: int | None) -> dict[int, list[ClassUsage]]:
    """Usage per tenant (one tenant when ``tenant_id`` is given): three queries, a fourth only
    for classes a tenant has pools of but no quota for."""
    quotas = Quota.objects.select_related("quota_class")
    pools = _committing_pools()
    held = PoolHost.objects.filter(released_at__isnull=True)
    if tenant_id is not None:
        quotas = quotas.filter(tenant_id=tenant_id)
        pools = pools.filter(cluster__tenant_id=tenant_id)
        held = held.filter(pool__cluster__tenant_id=tenant_id)
    rows: dict[tuple[int, int], dict[str, int]] = defaultdict(
        lambda: {"guaranteed": 0, "maximum": 0, "held": 0, "held_guaranteed": 0, "committed": 0}
    )
    classes: dict[int, QuotaClass] = {}
    for quota in quotas:
        classes[quota.quota_class_id] = quota.quota_class
        row = rows[(quota.tenant_id, quota.quota_class_id)]
        row["guaranteed"], row["maximum"] = quota.guaranteed, quota.maximum
    for t, c, n in (
        pools.order_by()
        .values("cluster__tenant_id", "quota_class_id")
        .annotate(n=Sum(_pool_size()))
        .values_list("cluster__tenant_id", "quota_class_id", "n")
    ):
        rows[(t, c)]["committed"] = n or 0
    for t, c, n, g in (
        held.order_by()
        .values("pool__cluster__tenant_id", "pool__quota_class_id")
        .annotate(n=Count("id"), g=Count("id", filter=Q(guaranteed=True)))
        .values_list("pool__cluster__tenant_id", "pool__quota_class_id", "n", "g")
    ):
        rows[(t, c)]["held"], rows[(t, c)]["held_guaranteed"] = n, g
    missing = {c for _, c in rows} - set(classes)
    if missing:
        classes.update((k.pk, k) for k in QuotaClass.objects.filter(pk__in=missing))
    out: dict[int, list[ClassUsage]] = defaultdict(list)
    for (t, c), row in rows.items():
        out[t].append(ClassUsage(quota_class=classes[c], **row))
    for usages in out.values():
        usages.sort(key=lambda u: _class_order(u.quota_class))
    return out


def tenant_usage(tenant: Tenant) -> list[ClassUsage]:
    """Every class the tenant has a quota or a live pool (or held hosts) in, in class order."""
    return _usage(tenant.pk).get(tenant.pk, [])


def tenants_usage() -> dict[int, list[ClassUsage]]:
    """Tenant id → :func:`tenant_usage`, for every tenant (an empty list when it has nothing)."""
    usage = _usage(None)
    return {pk: usage.get(pk, []) for pk in Tenant.objects.values_list("pk", flat=True)}


def usage_history(tenant: Tenant, *, days: int = 30, now: datetime | None = None) -> list[dict[str, Any]]:
    """Host-hours per day and class, oldest first: ``days`` entries ending today (local time).

    Each PoolHost of the tenant is an interval from ``allocated_at`` to ``released_at`` (or now);
    it is clipped to each day it overlaps. Every class used in the window appears on every day
    (0.0 when unused), so charts line up."""
    if days < 1:
        raise ValueError("days must be at least 1")
    now = now or timezone.now()
    today = timezone.localdate(now)
    first = today - timedelta(days=days - 1)

    def start_of(day: date) -> datetime:
        return timezone.make_aware(datetime.combine(day, time.min))

    window_start = start_of(first)
    intervals = PoolHost.objects.filter(
        Q(released_at__isnull=True) | Q(released_at__gt=window_start),
        pool__cluster__tenant=tenant,
        allocated_at__lt=now,
    ).values_list("allocated_at", "released_at", "pool__quota_class__name")
    bounds = [start_of(first + timedelta(days=i)) for i in range(days)] + [now]
    hours: list[dict[str, float]] = [defaultdict(float) for _ in range(days)]
    names: set[str] = set()
    for allocated, released, name in intervals:
        begin, end = max(allocated, window_start), min(released or now, now)
        if end <= begin:
            continue
        names.add(name)
        index = max(0, (timezone.localdate(begin) - first).days)
        while index < days and bounds[index] < end:
            overlap = min(end, bounds[index + 1]) - max(begin, bounds[index])
            if overlap > timedelta(0):
                hours[index][name] += overlap.total_seconds() / 3600
            index += 1
    ordered = sorted(names)
    return [
        {"day": first + timedelta(days=i), "classes": {n: round(hours[i].get(n, 0.0), 6) for n in ordered}}
        for i in range(days)
    ]


# =============================================================================== pool sizing


def _others(tenant: Tenant, quota_class: QuotaClass, pool: NodePool | None) -> tuple[int, int]:
    """(committed, of which by guaranteed pools) of the tenant's other pools of the class."""
    pools = _committing_pools().filter(cluster__tenant=tenant, quota_class=quota_class)
    if pool is not None and pool.pk is not None:
        pools = pools.exclude(pk=pool.pk)
    totals = pools.aggregate(
        committed=Sum(_pool_size()),
        guaranteed=Sum(_pool_size(), filter=Q(workload_class=NodePool.WorkloadClass.GUARANTEED)),
    )
    return totals["committed"] or 0, totals["guaranteed"] or 0


def pool_size_refusal(
    *,
    tenant: Tenant,
    quota_class: QuotaClass,
    workload_class: str,
    size: int,
    ceiling: int | None,
    pool: NodePool | None,
) -> str | None:
    """Why a pool of ``size`` hosts (fixed size or autoscale minimum) is refused, or None.

    Called under the tenant row lock. Refused: no quota for the class; more than the maximum
    with the tenant's other pools; a guaranteed pool beyond the guarantee. The autoscale
    ``ceiling`` is never refused: :func:`autoscale_ceiling` clamps it. Size 0 is always fine."""
    if size <= 0:
        return None
    quota = Quota.objects.filter(tenant=tenant, quota_class=quota_class).first()
    t, k = tenant.slug, quota_class.name
    if quota is None:
        return f"{t} has no quota for {k}; ask an operator for one"
    others, others_guaranteed = _others(tenant, quota_class, pool)
    if others + size > quota.maximum:
        room = max(0, quota.maximum - others)
        can = f"at most {room}" if room else "none"
        if quota.maximum == 0:
            return f"{t} may hold no {k} hosts (its maximum is 0); ask an operator to raise it"
        if others:
            return (
                f"{t} may hold at most {_class_hosts(quota.maximum, k)}; "
                f"its other pools ask for {others}, so this pool can have {can}"
            )
        return f"{t} may hold at most {_class_hosts(quota.maximum, k)}, so this pool can have {can}"
    if workload_class == NodePool.WorkloadClass.GUARANTEED and others_guaranteed + size > quota.guaranteed:
        advice = "; choose on_demand to borrow beyond the guarantee (borrowed hosts can be reclaimed)"
        if quota.guaranteed == 0:
            return f"{t} has no guaranteed {k} hosts, so a guaranteed pool cannot have any{advice}"
        room = max(0, quota.guaranteed - others_guaranteed)
        can = f"at most {room}" if room else "none"
        mine = f"a guaranteed pool must fit the guarantee: {t} is guaranteed {_class_hosts(quota.guaranteed, k)}"
        if others_guaranteed:
            return f"{mine} and its other guaranteed pools ask for {others_guaranteed}, so this pool can have {can}{advice}"
        return f"{mine}, so this pool can have {can}{advice}"
    return None


def autoscale_ceiling(pool: NodePool) -> int:
    """The most the autoscaler may scale ``pool`` to now: its maximum, clamped to what the quota
    leaves after the tenant's other pools — never below the pool's minimum (a quota that shrank
    below it leaves the minimum in place; the allocation budget then holds it back). A fixed
    pool's ceiling is its size."""
    if not pool.autoscaled:
        return pool.replicas
    tenant = Tenant(pk=pool.cluster.tenant_id)
    maximum = (
        Quota.objects.filter(tenant=tenant, quota_class_id=pool.quota_class_id)
        .values_list("maximum", flat=True)
        .first()
    ) or 0
    others, _ = _others(tenant, pool.quota_class, pool)
    left = max(0, maximum - others)
    return max(0, pool.autoscale_min, min(pool.autoscale_max, left))


@dataclass(frozen=True)
class Budget:
    room: int  # hosts the tenant may still take in the class (maximum − held)
    guaranteed_room: int  # of which counted within the guarantee (guaranteed − held guaranteed, ≤ room)


def allocation_budget(*, tenant: Tenant, quota_class: QuotaClass, workload_class: str) -> Budget:
    """What the provisioning reconcile may take now (call under the tenant lock). Pre-emptible
    (spot) hosts never count within the guarantee."""
    quota = Quota.objects.filter(tenant=tenant, quota_class=quota_class).first()
    if quota is None:
        return Budget(room=0, guaranteed_room=0)
    held = PoolHost.objects.filter(
        released_at__isnull=True, pool__cluster__tenant=tenant, pool__quota_class=quota_class
    ).aggregate(n=Count("id"), g=Count("id", filter=Q(guaranteed=True)))
    room = max(0, quota.maximum - held["n"])
    if workload_class == NodePool.WorkloadClass.PREEMPTIBLE:
        return Budget(room=room, guaranteed_room=0)
    # "Of which": a tenant at its maximum with borrowed hosts takes nothing more, guaranteed or not.
    return Budget(room=room, guaranteed_room=min(room, max(0, quota.guaranteed - held["g"])))


# =============================================================================== fleet


def eligible_q() -> Q:
    """Hosts that carry guarantees: active, inspected, not in maintenance, not in error."""
    return Q(retired_at__isnull=True, hardware__isnull=False, maintenance=False) & ~Q(operational_status="error")


def matching_host_ids(requirement: Requirement, queryset=None) -> set[int]:
    """Active, inspected hosts (of ``queryset``) meeting ``requirement`` exactly: the SQL
    prefilter, then — when it is only a prefilter — one verdict per hardware class."""
    base = queryset if queryset is not None else Host.objects.all()
    hosts = base.filter(retired_at__isnull=True, hardware__isnull=False).filter(requirement.to_q())
    if not _needs_class_check(requirement):
        return set(hosts.values_list("id", flat=True))
    rows = list(hosts.order_by("id").values_list("id", "hardware_class"))
    representatives: dict[str, int] = {}
    unclassified: list[int] = []
    for pk, hardware_class in rows:
        if hardware_class:
            representatives.setdefault(hardware_class, pk)
        else:
            unclassified.append(pk)  # not classified yet: judged on its own
    verdicts = _class_verdicts(requirement, representatives) if representatives else {}
    ids = {pk for pk, hardware_class in rows if hardware_class and verdicts.get(hardware_class)}
    if unclassified:
        for host in Host.objects.filter(pk__in=unclassified).only(*MATCH_FIELDS):
            host.__dict__["hardware"] = {}  # inspected: the filter above said so
            if requirement.matches(host):
                ids.add(host.pk)
    return ids


@dataclass(frozen=True)
class ClassCapacity:
    quota_class: QuotaClass
    hosts: int  # eligible hosts meeting the class (active, inspected, not in maintenance or error)
    guaranteed_total: int  # all tenants' guarantees of the class
    maximum_total: int
    held_total: int  # hosts pools of the class hold now
    free: int  # hosts free now (hosts.selection.free_q) meeting the class


@dataclass(frozen=True)
class Shortfall:
    quota_class_name: str
    demand: int  # the class's guarantees
    capacity: int  # eligible hosts that can serve the class
    short_by: int  # how many hosts the set of classes it is short with lacks
    message: str


@dataclass(frozen=True)
class Admission:
    ok: bool
    shortfalls: list[Shortfall]
    classes: list[ClassCapacity]
    short_by: int = 0  # guarantees the fleet cannot carry, in all

    @property
    def messages(self) -> list[str]:
        """The shortfall messages, each once (classes short together share one)."""
        return list(dict.fromkeys(s.message for s in self.shortfalls))


# ----------------------------------------------------------------------------------- max flow

Node = Hashable
SOURCE, SINK = ("source",), ("sink",)


def _max_flow(capacity: Mapping[Node, Mapping[Node, int]], source: Node, sink: Node) -> tuple[int, dict]:
    """Edmonds–Karp: augment along shortest paths (BFS) until none is left. Returns the flow's
    value and the residual capacities (reverse edges included)."""
    residual = residual_graph(capacity)
    return augment(residual, source, sink), residual


def residual_graph(capacity: Mapping[Node, Mapping[Node, int]]) -> dict[Node, dict[Node, int]]:
    """The residual graph of the zero flow: every edge's capacity, and a reverse edge of 0."""
    residual: dict[Node, dict[Node, int]] = defaultdict(dict)
    for u, edges in capacity.items():
        for v, cap in edges.items():
            residual[u][v] = residual[u].get(v, 0) + cap
            residual[v].setdefault(u, 0)
    return residual


def augment(residual: dict[Node, dict[Node, int]], source: Node, sink: Node) -> int:
    """Push flow along shortest augmenting paths of ``residual`` (changed in place) until none
    is left; returns how much was pushed. A caller may start from a flow it found itself."""
    total = 0
    while True:
        parent: dict[Node, Node | None] = {source: None}
        queue = deque([source])
        while queue and sink not in parent:
            u = queue.popleft()
            for v, cap in residual[u].items():
                if cap > 0 and v not in parent:
                    parent[v] = u
                    queue.append(v)
        if sink not in parent:
            return total
        path = []
        v = sink
        while parent[v] is not None:
            path.append((parent[v], v))
            v = parent[v]
        push = min(residual[u][v] for u, v in path)
        for u, v in path:
            residual[u][v] -= push
            residual[v][u] += push
        total += push


def _reachable(residual: Mapping[Node, Mapping[Node, int]], source: Node) -> set[Node]:
    seen, queue = {source}, deque([source])
    while queue:
        u = queue.popleft()
        for v, cap in residual.get(u, {}).items():
            if cap > 0 and v not in seen:
                seen.add(v)
                queue.append(v)
    return seen


@dataclass(frozen=True)
class Tangle:
    """Classes that together guarantee more than the hosts able to serve any of them."""

    classes: tuple[Hashable, ...]
    demand: int
    hosts: int

    @property
    def short_by(self) -> int:
        return self.demand - self.hosts


def guarantee_flow(demand: Mapping[Hashable, int], groups: Mapping[frozenset, int]) -> tuple[int, list[Tangle]]:
    """The pure core of :func:`guarantees_check`: how much of ``demand`` (class → guarantees)
    the host ``groups`` (the classes a host can serve → how many such hosts) can carry, and,
    when not all, the tangles of classes that over-ask.

    1. Network: source → class (capacity: its guarantees) → group (unbounded: any host of the
       group may serve any class it meets) → sink (capacity: the group's size). One host can
       serve one class, so a flow is an assignment of hosts to guarantees.
    2. Max flow (Edmonds–Karp). Feasible iff it carries the whole demand.
    3. Min cut: the nodes still reachable from the source in the residual graph. Their classes
       C over-ask: every host that can serve C is a reachable group, all of them full, so
       ``demand(C) − hosts(C)`` is exactly the total shortfall (max-flow/min-cut). This is the
       smallest such set, i.e. no innocent class is blamed.
    4. Split C into connected pieces (classes linked by hosts both can use): each piece is short
       on its own, by its own amount, and makes one message.
    """
    wanted = {k: n for k, n in demand.items() if n > 0}
    total = sum(wanted.values())
    unbounded = total + 1  # more than any flow: these edges are never in a minimum cut
    capacity: dict[Node, dict[Node, int]] = defaultdict(dict)
    members: dict[Node, list[Hashable]] = {}
    for k, n in wanted.items():
        capacity[SOURCE][("class", k)] = n
    for index, (signature, size) in enumerate(groups.items()):
        serves = [k for k in signature if k in wanted]
        if not serves or size <= 0:
            continue
        group = ("group", index)
        members[group] = serves
        capacity[group][SINK] = size
        for k in serves:
            capacity[("class", k)][group] = unbounded
    flow, residual = _max_flow(capacity, SOURCE, SINK)
    if flow == total:
        return flow, []
    cut = _reachable(residual, SOURCE)
    short = [k for k in wanted if ("class", k) in cut]
    # Union-find over the cut's classes, joined through the cut's groups.
    parent = {k: k for k in short}

    def find(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    cut_groups = [(group, [k for k in serves if k in parent]) for group, serves in members.items() if group in cut]
    for _group, inside in cut_groups:
        for k in inside[1:]:
            parent[find(k)] = find(inside[0])
    pieces: dict[Hashable, list[Hashable]] = defaultdict(list)
    for k in short:
        pieces[find(k)].append(k)
    hosts: dict[Hashable, int] = defaultdict(int)
    for group, inside in cut_groups:
        # Every group in the cut is reached from a class in the cut, so ``inside`` is not empty.
        hosts[find(inside[0])] += capacity[group][SINK]
    tangles = [
        Tangle(classes=tuple(classes), demand=sum(wanted[k] for k in classes), hosts=hosts[root])
        for root, classes in pieces.items()
    ]
    return flow, tangles


# ----------------------------------------------------------------------------------- admission


def _alone(name: str, demand: int, hosts: int, *, prefix: bool) -> str:
    lead = f"{name}: guarantees total" if prefix else f"{name} alone guarantees"
    if hosts == 0:
        return f"{lead} {demand} but no host can serve it"
    return f"{lead} {demand} but only {_hosts(hosts)} can serve it"


def _tangle_message(tangle: Tangle, names: dict[int, str], capacities: dict[int, int], demand: dict[int, int]) -> str:
    classes = list(tangle.classes)
    if len(classes) == 1:
        k = classes[0]
        return _alone(names[k], tangle.demand, tangle.hosts, prefix=True)
    both = "both" if len(classes) == 2 else "them all"
    which = "the only host" if tangle.hosts == 1 else f"the {tangle.hosts} hosts"
    message = (
        f"{_and([names[k] for k in classes])} together guarantee {tangle.demand}, but {which} that can serve "
        f"them cannot cover {both} (short by {tangle.short_by})"
    )
    alone = [_alone(names[k], demand[k], capacities[k], prefix=False) for k in classes if demand[k] > capacities[k]]
    return "; ".join([message, *alone])


def guarantees_check(
    overrides: Mapping[tuple[Any, int], int] | None = None,
    *,
    requirements: Mapping[int, Requirement] | None = None,
) -> Admission:
    """Whether the fleet can carry every tenant's guarantee at once, traits considered.

    ``overrides``: ``{(tenant_id, quota_class_id): guaranteed}`` replacing the stored values
    (what an operator is about to save; a tenant id of None is a tenant not saved yet).
    ``requirements``: ``{quota_class_id: Requirement}`` replacing a class's stored requirement.

    1. Guarantees per class: every Quota, with the overrides applied.
    2. For each class, the eligible hosts (:func:`eligible_q`) meeting it
       (:func:`matching_host_ids`: one or two queries per class).
    3. Group the hosts by signature — the set of classes they meet — so thousands of hosts
       become a handful of interchangeable groups.
    4. :func:`guarantee_flow`: max flow class → group; feasible iff every guarantee is carried.
       When short, each tangle of classes becomes a :class:`Shortfall` per class, with the
       tangle's message ("gpu-a100: guarantees total 10 but only 8 hosts can serve it").
    """
    classes = list(QuotaClass.objects.all())
    names = {k.pk: k.name for k in classes}
    guaranteed: dict[tuple[Any, int], int] = {}
    maximum: dict[int, int] = defaultdict(int)
    for tenant_id, class_id, g, m in Quota.objects.values_list("tenant_id", "quota_class_id", "guaranteed", "maximum"):
        guaranteed[(tenant_id, class_id)] = g
        maximum[class_id] += m
    guaranteed.update(overrides or {})
    demand: dict[int, int] = defaultdict(int)
    for (_, class_id), g in guaranteed.items():
        demand[class_id] += g

    eligible = Host.objects.filter(eligible_q())
    serves: dict[int, set[int]] = defaultdict(set)  # host id → classes it meets
    capacities: dict[int, int] = {}
    matching: dict[int, set[int]] = {}
    for klass in classes:
        try:
            requirement = (requirements or {}).get(klass.pk) or klass.get_requirement()
        except RequirementError as exc:  # stored before a change of the language: it serves nothing
            log.warning("quota class has an invalid requirement", extra={"quota_class": klass.name, "error": str(exc)})
            requirement = None
        ids = matching_host_ids(requirement, eligible) if requirement is not None else set()
        matching[klass.pk] = ids
        capacities[klass.pk] = len(ids)
        for pk in ids:
            serves[pk].add(klass.pk)
    groups: dict[frozenset, int] = defaultdict(int)
    for signature in serves.values():
        groups[frozenset(signature)] += 1

    _, tangles = guarantee_flow(demand, groups)
    order = {k.pk: i for i, k in enumerate(classes)}
    shortfalls = []
    for tangle in sorted(tangles, key=lambda t: min(order[k] for k in t.classes)):
        tangle = Tangle(classes=tuple(sorted(tangle.classes, key=order.get)), demand=tangle.demand, hosts=tangle.hosts)
        message = _tangle_message(tangle, names, capacities, demand)
        for k in tangle.classes:
            shortfalls.append(
                Shortfall(
                    quota_class_name=names[k],
                    demand=demand[k],
                    capacity=capacities[k],
                    short_by=tangle.short_by,
                    message=message,
                )
            )

    held = dict(
        PoolHost.objects.filter(released_at__isnull=True)
        .order_by()
        .values("pool__quota_class_id")
        .annotate(n=Count("id"))
        .values_list("pool__quota_class_id", "n")
    )
    free = set(Host.objects.filter(free_q(), hardware__isnull=False).values_list("id", flat=True))
    capacity_rows = [
        ClassCapacity(
            quota_class=klass,
            hosts=capacities[klass.pk],
            guaranteed_total=demand.get(klass.pk, 0),
            maximum_total=maximum.get(klass.pk, 0),
            held_total=held.get(klass.pk, 0),
            free=len(matching[klass.pk] & free),
        )
        for klass in classes
    ]
    short_by = sum(t.short_by for t in tangles)
    return Admission(ok=not tangles, shortfalls=shortfalls, classes=capacity_rows, short_by=short_by)


def fleet_capacity() -> list[ClassCapacity]:
    """Per class (all classes, in order): eligible hosts, guarantees, maximums, held, free."""
    return guarantees_check().classes


def _refusal(
    after: Admission, raised_classes: Iterable[str], before: Admission | None = None
) -> dict[str, list[str]] | None:
    """Messages per raised class when ``after`` is short by more than ``before`` (None: fine)."""
    if after.ok:
        return None
    before = before if before is not None else guarantees_check()
    if after.short_by <= before.short_by:
        return None  # the raise is carried in full; the fleet was short elsewhere already
    raised = set(raised_classes)
    out: dict[str, list[str]] = defaultdict(list)
    for shortfall in after.shortfalls:
        if shortfall.quota_class_name in raised and shortfall.message not in out[shortfall.quota_class_name]:
            out[shortfall.quota_class_name].append(shortfall.message)
    # A raise that grows the shortfall is always in a short tangle (min-cut argument); this is
    # a safety net so a refusal never comes without words.
    return dict(out) or dict.fromkeys(raised, after.messages)


def guarantee_refusals(changes: Mapping[tuple[Any, QuotaClass], int]) -> dict[tuple[Any, QuotaClass], list[str]]:
    """Which of the guarantees about to be set — ``{(tenant_id, quota_class): guaranteed}``,
    tenant id None for a tenant not saved yet — the fleet cannot carry, with the messages.

    Only raises can be refused, and only when the fleet's shortfall grows with them; all the
    changes are judged together (an admin form may change several rows at once)."""
    stored = {
        (t, c): g
        for t, c, g in Quota.objects.filter(quota_class__in=[k for _, k in changes]).values_list(
            "tenant_id", "quota_class_id", "guaranteed"
        )
    }
    raises = {key: g for key, g in changes.items() if g > stored.get((key[0], key[1].pk), 0)}
    if not raises:
        return {}
    after = guarantees_check({(t, k.pk): g for (t, k), g in changes.items()})
    refused = _refusal(after, [k.name for _, k in raises])
    if not refused:
        return {}
    return {key: refused[key[1].name] for key in raises if key[1].name in refused}


# =============================================================================== writes


def _admission_lock() -> None:
    """Serialise every change that can affect admission (guarantees, class requirements) for
    the rest of the transaction: two operators' changes are judged one after the other."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])


def _count(value: Any, field: str, what: str) -> int:
    message = f"The {what} is a whole number of hosts, 0 or more."
    if isinstance(value, bool) or value is None or value == "":
        raise ValidationError({field: message})
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError({field: message}) from exc
    if isinstance(value, float) and value != number:
        raise ValidationError({field: message})
    if number < 0:
        raise ValidationError({field: message})
    if number > MAX_QUOTA:
        raise ValidationError({field: f"The {what} is at most {MAX_QUOTA:,} hosts."})
    return number


def quota_numbers(guaranteed: Any, maximum: Any) -> tuple[int, int]:
    """Both as whole numbers, guaranteed ≤ maximum; ValidationError keyed by field otherwise."""
    g = _count(guaranteed, "guaranteed", "guaranteed minimum")
    m = _count(maximum, "maximum", "maximum")
    if g > m:
        raise ValidationError(
            {"guaranteed": f"The guaranteed minimum ({g}) cannot exceed the maximum ({m}): raise the maximum too."}
        )
    return g, m


def quota_check(*, tenant: Tenant, quota_class: QuotaClass, guaranteed: Any, maximum: Any) -> tuple[int, int]:
    """What :func:`quota_update` checks, without saving (forms call it to show refusals as
    field errors): the numbers, then — for a raise — admission. Returns the numbers."""
    g, m = quota_numbers(guaranteed, maximum)
    refusals = guarantee_refusals({(tenant.pk, quota_class): g})
    if refusals:
        raise ValidationError({"guaranteed": next(iter(refusals.values()))})
    return g, m


def _quota_snapshot(quota: Quota | None) -> dict[str, Any] | None:
    if quota is None:
        return None
    return {"class": quota.quota_class.name, "guaranteed": quota.guaranteed, "maximum": quota.maximum}


def quota_update(*, tenant: Tenant, quota_class: QuotaClass, guaranteed: Any, maximum: Any, actor=None) -> Quota:
    """Set (create or change) the tenant's quota for a class.

    Under the admission lock, a raised guarantee must keep every guarantee carriable
    (:func:`guarantees_check`), else ValidationError({"guaranteed": [messages]}). Lowering is
    always allowed. A maximum below what the tenant holds is allowed: its pools keep their
    hosts. The tenant row is locked too, so pool sizing never reads a half-made change."""
    g, m = quota_numbers(guaranteed, maximum)
    with transaction.atomic():
        _admission_lock()
        tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
        quota = (
            Quota.objects.select_for_update()
            .select_related("quota_class")
            .filter(tenant=tenant, quota_class=quota_class)
            .first()
        )
        before = _quota_snapshot(quota)
        quota_check(tenant=tenant, quota_class=quota_class, guaranteed=g, maximum=m)
        if quota is None:
            quota = Quota(tenant=tenant, quota_class=quota_class)
        quota.guaranteed, quota.maximum = g, m
        quota.save()
        audit_record(
            actor=actor,
            action="quota.update",
            target=quota,
            tenant=tenant,
            before=before,
            after=_quota_snapshot(quota),
        )
    log.info("quota set", extra={"tenant": tenant.slug, "quota_class": quota_class.name, "guaranteed": g, "maximum": m})
    return quota


def quota_delete(*, quota: Quota, actor=None) -> None:
    """Remove a tenant's quota for a class (never refused: it only lowers guarantees). Pools of
    the class keep their hosts but cannot grow."""
    with transaction.atomic():
        _admission_lock()
        quota = Quota.objects.select_related("tenant", "quota_class").select_for_update().filter(pk=quota.pk).first()
        if quota is None:
            return
        audit_record(
            actor=actor, action="quota.delete", target=quota, tenant=quota.tenant, before=_quota_snapshot(quota)
        )
        quota.delete()


# ----------------------------------------------------------------------------------- classes


def _class_snapshot(klass: QuotaClass) -> dict[str, Any]:
    return {
        "name": klass.name,
        "requirement": klass.requirement,
        "description": klass.description,
        "order": klass.order,
    }


def _class_requirement(requirement: Any) -> Requirement:
    if isinstance(requirement, Requirement):
        return requirement
    try:
        if isinstance(requirement, str):
            return Requirement.parse(requirement)
        return Requirement.from_json(requirement if requirement is not None else {})
    except RequirementError as exc:
        raise ValidationError({"requirement": str(exc)}) from exc


def quota_class_check(*, name: Any, requirement: Any, instance: QuotaClass | None = None) -> tuple[str, Requirement]:
    """What :func:`quota_class_save` checks, without saving: the name (a short DNS label, not
    taken), the requirement (JSON or compact text), and — when an existing class's requirement
    changes — that the guarantees of the class stay carriable. Returns (name, requirement)."""
    name = str(name or "").strip().lower()
    if not name:
        raise ValidationError({"name": "Give the class a name, e.g. gpu-a100."})
    if len(name) > CLASS_NAME_MAX:
        raise ValidationError({"name": f"A class name is at most {CLASS_NAME_MAX} characters."})
    try:
        TENANT_SLUG(name)
    except ValidationError as exc:
        raise ValidationError({"name": exc.messages[0]}) from exc
    taken = QuotaClass.objects.filter(name=name)
    if instance is not None and instance.pk is not None:
        taken = taken.exclude(pk=instance.pk)
    if taken.exists():
        raise ValidationError({"name": f"A quota class named {name} exists."})
    value = _class_requirement(requirement)
    if instance is not None and instance.pk is not None:
        stored_name, stored = QuotaClass.objects.filter(pk=instance.pk).values_list("name", "requirement").get()
        try:
            unchanged = Requirement.from_json(stored) == value
        except RequirementError:  # stored before the language changed: any valid one is a change
            unchanged = False
        if not unchanged:
            after = guarantees_check(requirements={instance.pk: value})
            refused = _refusal(after, [stored_name])
            if refused:
                messages = [m for found in refused.values() for m in found]
                raise ValidationError(
                    {"requirement": ["With this requirement the fleet cannot keep the guarantees:", *messages]}
                )
    return name, value


def quota_class_save(
    *,
    name: str,
    requirement: Any,
    description: str = "",
    order: int = 0,
    instance: QuotaClass | None = None,
    actor=None,
) -> QuotaClass:
    """Create (``instance`` None) or change a quota class. ``requirement``: JSON, compact text
    or a Requirement; stored canonical. Changing an existing class's requirement is refused when
    the fleet could no longer carry the guarantees (hosts the class's pools hold are kept)."""
    try:
        order = int(order)
    except (TypeError, ValueError) as exc:
        raise ValidationError({"order": "A whole number."}) from exc
    description = str(description or "").strip()
    if len(description) > 255:
        raise ValidationError({"description": "At most 255 characters."})
    try:
        with transaction.atomic():
            _admission_lock()
            before = None
            if instance is not None and instance.pk is not None:
                klass = QuotaClass.objects.select_for_update().get(pk=instance.pk)
                before = _class_snapshot(klass)
            else:
                klass = QuotaClass()
            name, value = quota_class_check(name=name, requirement=requirement, instance=klass if klass.pk else None)
            klass.name, klass.requirement, klass.description, klass.order = name, value.to_json(), description, order
            klass.save()
            audit_record(
                actor=actor,
                action="quota_class.update" if before is not None else "quota_class.create",
                target=klass,
                before=before,
                after=_class_snapshot(klass),
            )
    except IntegrityError as exc:  # a concurrent save took the name
        raise ValidationError({"name": f"A quota class named {name} exists."}) from exc
    return klass
