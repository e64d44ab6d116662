"""Host selection against the database: which hosts a requirement gets now, and the atomic claim.

:func:`hosts_select` answers "what would I get?" without taking anything:

1. **One scan.** The requirement's SQL prefilter (:meth:`Requirement.to_q`, exact for traits,
   cores, RAM, disk type, NIC speed and architecture) selects the active hosts; one ``GROUP BY``
   hardware class, free-or-why-not, cost, hand-off time and location returns each group's size
   and ids. The allocator (:func:`hosts.allocator.allocate_groups`) sees a few hundred groups,
   never ten thousand hosts.
2. **Hardware classes.** Hosts with the same ``hardware_class`` (a digest of everything a
   requirement can see of the hardware, :mod:`hosts.classify`) meet the same hardware clauses,
   so the checks SQL cannot do exactly (accelerator counts, disk capacity) run once per class,
   on one host of it.
3. **Why not.** Matching hosts that are not free are counted by reason (in use, maintenance,
   error, not ready) for the explanation; when nothing matches at all, each clause is checked
   on its own to name the one no host meets ("no host has ≥ 2 TiB RAM").

:func:`hosts_claim` selects and claims in one transaction: the chosen rows are locked with
``SELECT … FOR UPDATE SKIP LOCKED`` and re-checked; a host another transaction holds or has
just claimed is excluded and the selection redone. A partial unique constraint (one active
:class:`~hosts.models.HostClaim` per host) makes a double claim impossible even so.

A host is **free** when it is active, available (BMO ``available``, operational status OK), not
in maintenance, not paused, detached or being deleted, has no consumer and no active claim.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any

from django.contrib.postgres.aggregates import ArrayAgg
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, CharField, Count, Exists, IntegerField, Min, OuterRef, Q, TextField, Value, When
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from hosts import handoff, topology
from hosts.allocator import Allocation, Candidate, Group, Policy, allocate_groups
from hosts.models import FleetSettings, Host, HostClaim
from hosts.requirements import Requirement

log = logging.getLogger(__name__)

CLAIM_ATTEMPTS = 6
IN_USE = "in use"
REASONS = {
    "in_use": IN_USE,
    "maintenance": "in maintenance",
    "error": "in error",
    "not_ready": "not ready yet (registering, inspecting or being provisioned)",
}


# What the BareMetalHost must say for its host to be handed out (besides no consumer).
READY = {
    "provisioning_state": "available",
    "operational_status": "OK",
    "paused": False,
    "detached": False,
    "deleting": False,
}


def _active_claim():
    return HostClaim.objects.filter(host=OuterRef("pk"), released_at__isnull=True)


def free_q() -> Q:
    """Hosts that can be handed out now (see the module docstring)."""
    return Q(retired_at__isnull=True, maintenance=False, consumer="", **READY) & ~Exists(_active_claim())


def _is_trait_clause(requirement: Requirement, key: str) -> bool:
    return key.startswith("!") or "|" in key or key in requirement.traits


def _trait_q(key: str) -> Q:
    if key.startswith("!"):
        return ~Q(traits__contains=[key[1:]])
    if "|" in key:
        return Q(traits__overlap=key.split("|"))
    return Q(traits__contains=[key])


def _representatives(queryset) -> list[tuple[Host, int]]:
    """One host per hardware class of ``queryset``, with the class's size."""
    sizes = dict(queryset.order_by().values_list("hardware_class").annotate(n=Count("id")))
    reps = queryset.order_by("hardware_class", "id").distinct("hardware_class").defer("hardware")
    # A representative needs ``hardware`` only to know whether it was inspected.
    inspected = set(
        queryset.order_by().filter(hardware__isnull=False).values_list("hardware_class", flat=True).distinct()
    )
    out = []
    for host in reps:
        host.__dict__["hardware"] = {} if host.hardware_class in inspected else None
        out.append((host, sizes.get(host.hardware_class, 0)))
    return out


def unmatched_reasons(requirement: Requirement) -> list[str]:
    """Why no active host meets ``requirement``: the clauses no host meets on its own, else that
    no host meets them all at once."""
    active = Host.objects.filter(retired_at__isnull=True)
    reps = _representatives(active)
    reasons = []
    clauses = requirement.clauses()
    for clause in clauses:
        if _is_trait_clause(requirement, clause.key):
            meets = active.filter(_trait_q(clause.key)).exists()
        else:
            meets = any(size and clause.test(host) for host, size in reps)
        if not meets:
            if clause.key.startswith("!"):
                reasons.append(f"every host has {clause.key[1:]}")
            else:
                reasons.append(f"no host has {clause.label}")
    if not reasons and clauses:
        reasons.append(f"no host has all of {requirement.describe()} at once")
    return reasons


def what_of(requirement: Requirement) -> str:
    """One candidate for messages: "nvidia-a100 host", "nvme host", "matching host"."""
    if requirement.accelerators:
        return f"{requirement.accelerators[0][0]} host"
    if len(requirement.traits) == 1 and not requirement.any_of:
        return f"{requirement.traits[0]} host"
    return "matching host"


@dataclass
class Selection:
    requirement: Requirement
    count: int
    policy: Policy
    allocation: Allocation
    matching: int  # active hosts meeting the requirement, free or not
    free: int  # of which free now
    unavailable: dict[str, int] = field(default_factory=dict)
    hosts: list[dict[str, Any]] = field(default_factory=list)  # the chosen: name, cost, handoff, location

    @property
    def feasible(self) -> bool:
        return self.allocation.feasible

    @property
    def cost(self) -> Decimal:
        return self.allocation.cost

    def to_json(self) -> dict[str, Any]:
        explanation = self.allocation.explanation
        return {
            "requirement": self.requirement.to_json(),
            "requirement_text": self.requirement.to_compact(),
            "description": self.requirement.describe(),
            "count": self.count,
            "policy": self.policy.to_json(),
            "policy_description": self.policy.describe(),
            "matching": self.matching,
            "free": self.free,
            "unavailable": self.unavailable,
            "feasible": self.feasible,
            "cost_per_hour": str(self.cost),
            "handoff_seconds": self.allocation.handoff,
            "hosts": self.hosts,
            "explanation": explanation.to_json() if explanation else None,
            "groups": self.allocation.groups,
        }


@lru_cache(maxsize=4096)
def _path(place: str, levels: tuple[str, ...]) -> tuple[str, ...]:
    """A location (as JSON text) as its values along ``levels``, up to the first it lacks."""
    location = json.loads(place) if place else {}
    return topology.path(location if isinstance(location, dict) else {}, levels)


def _reason(exclude: Sequence[int] = ()) -> Case:
    """Why a matching host is or is not free, as one SQL expression (see :func:`free_q`); hosts
    in ``exclude`` count as in use."""
    in_use = Q(consumer__gt="") | Exists(_active_claim())
    if exclude:
        in_use |= Q(pk__in=list(exclude))
    return Case(
        When(in_use, then=Value("in_use")),
        When(maintenance=True, then=Value("maintenance")),
        When(operational_status="error", then=Value("error")),
        When(Q(**READY), then=Value("free")),
        default=Value("not_ready"),
        output_field=CharField(),
    )


def _handoff() -> Case:
    return Case(
        When(key_erase_capable=True, then=Coalesce("key_erase_seconds", Value(handoff.KEY_ERASE_SECONDS))),
        default=Coalesce("metadata_clean_seconds", Value(handoff.METADATA_SECONDS)),
        output_field=IntegerField(),
    )


def _needs_class_check(requirement: Requirement) -> bool:
    """Whether :meth:`Requirement.to_q` is only a prefilter for this requirement: accelerator
    counts and disk capacity are checked in Python, everything else is exact in SQL."""
    return bool(requirement.accelerators) or requirement.min_disk_tb is not None


# What Requirement.matches reads of a host (with ``hardware`` known to be inspected).
MATCH_FIELDS = (
    "id",
    "hardware_class",
    "traits",
    "cpu_count",
    "ram_mib",
    "disks",
    "nics",
    "nic_max_speed_gbps",
    "accelerators",
    "architecture",
)


def _class_verdicts(requirement: Requirement, representatives: dict[str, int]) -> dict[str, bool]:
    """Whether each hardware class meets the requirement, judged on one host of the class."""
    if not _needs_class_check(requirement):
        return dict.fromkeys(representatives, True)
    hosts = Host.objects.filter(pk__in=list(representatives.values())).only(*MATCH_FIELDS)
    verdicts = dict.fromkeys(representatives, False)
    for host in hosts:
        host.__dict__["hardware"] = {}  # the prefilter only lets inspected hosts through
        verdicts[host.hardware_class] = requirement.matches(host)
    return verdicts


class _Members(Sequence):
    """A group's first members, made into candidates only when the allocator takes them: a
    broad requirement has hundreds of groups, and it takes from a few."""

    __slots__ = ("cost", "handoff", "ids", "path")

    def __init__(self, ids: list[int], cost: Decimal, handoff: int, path: tuple[str, ...]):
        self.ids, self.cost, self.handoff, self.path = ids, cost, handoff, path

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(self._candidate(pk) for pk in self.ids[index])
        return self._candidate(self.ids[index])

    def _candidate(self, pk: int) -> Candidate:
        return Candidate(id=pk, name="", cost=self.cost, handoff=self.handoff, path=self.path)


@lru_cache(maxsize=256)
def _scan_sql(
    requirement: Requirement, by_class: bool, exclude: tuple[int, ...], key_erase: bool = False
) -> tuple[str, tuple]:
    """The scan's SQL, built once per requirement: building it through the ORM costs more than
    PostgreSQL takes to run it on a narrow requirement."""
    keys = ["reason", "cost_per_hour", "handoff_seconds", "place"] + (["hardware_class"] if by_class else [])
    queryset = (
        Host.objects.filter(retired_at__isnull=True)
        .filter(requirement.to_q())
        .filter(Q(key_erase_capable=True) if key_erase else Q())
        .order_by()
        .annotate(reason=_reason(exclude), handoff_seconds=_handoff(), place=Cast("location", TextField()))
        .values(*keys)
        .annotate(size=Count("id"), first=Min("id"), ids=ArrayAgg("id"))
    )
    sql, params = queryset.query.sql_with_params()
    return sql, tuple(params)


def _scan(requirement: Requirement, k: int, levels: Sequence[str], exclude: set[int], key_erase: bool = False):
    """One scan of the active hosts the prefilter lets through, grouped by why they are (not)
    free, cost, hand-off, location and — when SQL cannot judge the requirement exactly —
    hardware class: the free groups with their first k ids, and the others counted by reason."""
    by_class = _needs_class_check(requirement)
    levels = tuple(levels)
    sql, params = _scan_sql(requirement, by_class, tuple(sorted(exclude)), key_erase)
    with transaction.atomic(), connection.cursor() as cursor:
        # A hash aggregate over the few thousand rows beats sorting them by a jsonb location,
        # which the planner picks for lack of statistics on the grouping expressions; and it fits
        # in memory, which the planner doubts for the same reason (and would spill to disk).
        cursor.execute("SET LOCAL enable_sort = off; SET LOCAL work_mem = '32MB'")
        cursor.execute(sql, params)
        columns = [column.name for column in cursor.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        # Back to the defaults: inside a caller's transaction (a claim) SET LOCAL would outlast this.
        cursor.execute("SET LOCAL enable_sort TO DEFAULT; SET LOCAL work_mem TO DEFAULT")
    verdicts: dict[str, bool] = {}
    if by_class:
        representatives: dict[str, int] = {}
        for row in rows:
            first = row["first"]
            if first < representatives.get(row["hardware_class"], first + 1):
                representatives[row["hardware_class"]] = first
        verdicts = _class_verdicts(requirement, representatives)
    groups: dict[tuple, tuple[list[int], list[int]]] = {}  # key -> ([size], ids)
    unavailable: dict[str, int] = {}
    for row in rows:
        if by_class and not verdicts[row["hardware_class"]]:
            continue
        if row["reason"] != "free":
            reason = REASONS[row["reason"]]
            unavailable[reason] = unavailable.get(reason, 0) + row["size"]
            continue
        # Hosts of different classes with the same cost, hand-off and place are interchangeable.
        key = (row["cost_per_hour"], row["handoff_seconds"], _path(row["place"], levels))
        if key in groups:
            size, ids = groups[key]
            size[0] += row["size"]
            ids.extend(row["ids"])
        else:
            groups[key] = ([row["size"]], list(row["ids"]))
    built = []
    for (cost, handoff_seconds, path), (size, ids) in groups.items():
        ids.sort()
        members = _Members(ids[:k], cost, handoff_seconds, path)
        built.append(Group(cost=cost, handoff=handoff_seconds, path=path, size=size[0], members=members))
    return built, unavailable


def hosts_select(
    requirement: Requirement,
    count: int,
    policy: Policy | None = None,
    *,
    levels: Sequence[str] | None = None,
    exclude: Iterable[int] = (),
    key_erase: bool = False,
    occupied: Mapping[tuple[str, ...], int] | None = None,
) -> Selection:
    """The cheapest ``count`` free hosts meeting ``requirement`` under ``policy`` — nothing is
    claimed. ``exclude``: host ids to leave out (the claim's retries count them as in use).
    ``key_erase``: only hosts whose disks can be handed over by erasing the key (a pool whose
    cleaning policy is key erase). ``occupied``: hosts the caller already holds under this
    policy, by location path — they count against its hard rules (a node pool growing)."""
    if count < 1:
        raise ValueError("ask for at least one host")
    levels = list(levels if levels is not None else FleetSettings.load().topology_levels)
    policy = (policy or Policy()).validate(levels)
    groups, unavailable = _scan(requirement, count, levels, set(exclude), key_erase)
    free_count = sum(g.size for g in groups)
    reasons = unmatched_reasons(requirement) if not free_count and not unavailable else []
    allocation = allocate_groups(
        groups,
        count,
        policy,
        levels,
        what=what_of(requirement),
        unavailable=unavailable,
        unmatched_reasons=reasons,
        occupied=occupied,
    )
    names = dict(Host.objects.filter(pk__in=[c.id for c in allocation.chosen]).values_list("id", "name"))
    hosts = [
        {
            "id": c.id,
            "name": names.get(c.id, ""),
            "cost_per_hour": str(c.cost),
            "handoff_seconds": c.handoff,
            "location": dict(zip(levels, c.path, strict=False)),
        }
        for c in allocation.chosen
    ]
    return Selection(
        requirement=requirement,
        count=count,
        policy=policy,
        allocation=allocation,
        matching=free_count + sum(unavailable.values()),
        free=free_count,
        unavailable=unavailable,
        hosts=hosts,
    )


class _Taken(Exception):
    """Some chosen hosts were locked or claimed by another transaction meanwhile."""

    def __init__(self, ids: set[int]):
        self.ids = ids


def hosts_claim(
    requirement: Requirement,
    count: int,
    policy: Policy | None = None,
    *,
    holder: str,
    tenant: str = "",
    levels: Sequence[str] | None = None,
    key_erase: bool = False,
    occupied: Mapping[tuple[str, ...], int] | None = None,
    exclude: Iterable[int] = (),
) -> tuple[Selection, list[HostClaim]]:
    """Select and claim in one transaction (see the module docstring). Returns the selection
    and the claims (none when it is infeasible: the selection's explanation says why).
    ``exclude``: hosts not to take although free (booked by a reservation that starts soon)."""
    if not holder:
        raise ValueError("a claim needs a holder")
    skipped: set[int] = set(exclude)
    for _attempt in range(CLAIM_ATTEMPTS):
        try:
            with transaction.atomic():
                selection = hosts_select(
                    requirement,
                    count,
                    policy,
                    levels=levels,
                    exclude=skipped,
                    key_erase=key_erase,
                    occupied=occupied,
                )
                if not selection.feasible:
                    return selection, []
                ids = {host["id"] for host in selection.hosts}
                locked = set(
                    Host.objects.select_for_update(skip_locked=True, of=("self",))
                    .filter(pk__in=ids)
                    .filter(free_q())
                    .values_list("pk", flat=True)
                )
                if locked != ids:
                    raise _Taken(ids - locked)
                now = timezone.now()
                claims = HostClaim.objects.bulk_create(
                    HostClaim(host_id=pk, holder=holder, tenant=tenant, claimed_at=now) for pk in sorted(ids)
                )
                return selection, claims
        except _Taken as taken:
            skipped |= taken.ids
        except IntegrityError:
            log.info("host claim raced another; selecting again", extra={"holder": holder})
    # Every attempt lost a race: answer with what is free now, claiming nothing.
    final = hosts_select(
        requirement, count, policy, levels=levels, exclude=skipped, key_erase=key_erase, occupied=occupied
    )
    return final, []


def hosts_claim_ids(ids: Iterable[int], *, holder: str, tenant: str = "") -> list[HostClaim]:
    """Claim exactly these hosts — those of them that are free now — in one transaction (a
    reservation's planned hosts: the plan chose them, no selection is redone). Hosts another
    transaction holds (locked, or claimed meanwhile) are left out, never waited for; the
    partial unique constraint on active claims stops a double claim even so."""
    if not holder:
        raise ValueError("a claim needs a holder")
    wanted = sorted(set(ids))
    if not wanted:
        return []
    for _attempt in range(CLAIM_ATTEMPTS):
        try:
            with transaction.atomic():
                free = sorted(
                    Host.objects.select_for_update(skip_locked=True, of=("self",))
                    .filter(pk__in=wanted)
                    .filter(free_q())
                    .values_list("pk", flat=True)
                )
                now = timezone.now()
                return HostClaim.objects.bulk_create(
                    HostClaim(host_id=pk, holder=holder, tenant=tenant, claimed_at=now) for pk in free
                )
        except IntegrityError:
            log.info("planned host claim raced another; trying again", extra={"holder": holder})
    return []


def claims_release(*, holder: str, host_ids: Iterable[int] | None = None) -> int:
    """End ``holder``'s active claims (all, or those on ``host_ids``); returns how many."""
    claims = HostClaim.objects.filter(holder=holder, released_at__isnull=True)
    if host_ids is not None:
        claims = claims.filter(host_id__in=list(host_ids))
    return claims.update(released_at=timezone.now())
