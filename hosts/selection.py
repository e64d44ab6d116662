"""Host selection against the database: which hosts a requirement gets now, and the atomic claim.

:func:`hosts_select` answers "what would I get?" without taking anything:

1. **Hardware classes.** Hosts with the same ``hardware_class`` (a digest of everything a
   requirement can see of the hardware, :mod:`hosts.classify`) meet the same hardware clauses,
   so the exact checks (disk capacity per type, accelerator counts) run once per class on one
   representative — a few dozen hosts, not ten thousand. Trait clauses are exact in SQL.
2. **Groups in SQL.** The free matching hosts are grouped by cost, hand-off time and location
   with a ``GROUP BY`` returning each group's size and its first k ids: the allocator
   (:func:`hosts.allocator.allocate_groups`) never sees more than a few hundred records.
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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, CharField, Count, Exists, OuterRef, Q, Value, When
from django.utils import timezone

from hosts import handoff
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


def _active_claim():
    return HostClaim.objects.filter(host=OuterRef("pk"), released_at__isnull=True)


def free_q() -> Q:
    """Hosts that can be handed out now (see the module docstring)."""
    return Q(
        retired_at__isnull=True,
        maintenance=False,
        provisioning_state="available",
        operational_status="OK",
        consumer="",
        paused=False,
        detached=False,
        deleting=False,
    ) & ~Exists(_active_claim())


def _handoff_sql() -> str:
    return (
        f"CASE WHEN key_erase_capable THEN COALESCE(key_erase_seconds, {handoff.KEY_ERASE_SECONDS}) "
        f"ELSE COALESCE(metadata_clean_seconds, {handoff.METADATA_SECONDS}) END"
    )


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


def matching_classes(requirement: Requirement, queryset) -> list[str] | None:
    """The hardware classes whose hosts meet the requirement's hardware clauses (None: all do)."""
    if requirement.is_any:
        return None
    hardware = [c for c in requirement.clauses() if not _is_trait_clause(requirement, c.key)]
    return [host.hardware_class for host, _ in _representatives(queryset) if all(c.test(host) for c in hardware)]


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


def _groups(queryset, k: int, levels: Sequence[str]) -> list[Group]:
    try:
        sql, params = queryset.values("id").query.sql_with_params()
    except EmptyResultSet:  # e.g. no hardware class matches
        return []
    table = Host._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT cost_per_hour, {_handoff_sql()} AS handoff, location, COUNT(*), "  # noqa: S608 (model's table)
            f"(array_agg(id ORDER BY id))[1:%s], (array_agg(name ORDER BY id))[1:%s] "
            f"FROM {table} WHERE id IN ({sql}) GROUP BY 1, 2, 3",
            [k, k, *params],
        )
        rows = cursor.fetchall()
    groups = []
    for cost, handoff_seconds, raw_location, size, ids, names in rows:
        # Django has psycopg hand jsonb over as text (JSONField decodes it itself).
        location = json.loads(raw_location) if isinstance(raw_location, str) else raw_location
        path = []
        for level in levels:
            value = (location or {}).get(level)
            if not value:
                break
            path.append(str(value))
        path = tuple(path)
        members = tuple(
            Candidate(id=pk, name=name, cost=cost, handoff=handoff_seconds, path=path)
            for pk, name in zip(ids, names, strict=True)
        )
        groups.append(Group(cost=cost, handoff=handoff_seconds, path=path, size=size, members=members))
    return groups


def _unavailable(queryset) -> dict[str, int]:
    reason = Case(
        When(Q(consumer__gt="") | Exists(_active_claim()), then=Value("in_use")),
        When(maintenance=True, then=Value("maintenance")),
        When(operational_status="error", then=Value("error")),
        default=Value("not_ready"),
        output_field=CharField(),
    )
    counts = queryset.annotate(reason=reason).order_by().values_list("reason").annotate(n=Count("id"))
    return {REASONS[key]: n for key, n in counts}


def hosts_select(
    requirement: Requirement,
    count: int,
    policy: Policy | None = None,
    *,
    levels: Sequence[str] | None = None,
    exclude: Iterable[int] = (),
) -> Selection:
    """The cheapest ``count`` free hosts meeting ``requirement`` under ``policy`` — nothing is
    claimed. ``exclude``: host ids to leave out (the claim's retries)."""
    if count < 1:
        raise ValueError("ask for at least one host")
    levels = list(levels if levels is not None else FleetSettings.load().topology_levels)
    policy = (policy or Policy()).validate(levels)
    active = Host.objects.filter(retired_at__isnull=True).filter(requirement.to_q())
    classes = matching_classes(requirement, active)
    matching = active if classes is None else active.filter(hardware_class__in=classes)
    free = matching.filter(free_q())
    exclude = list(exclude)
    if exclude:
        free = free.exclude(pk__in=exclude)
    groups = _groups(free, count, levels)
    free_count = sum(g.size for g in groups)
    unavailable = _unavailable(matching.exclude(free_q()))
    if exclude:
        unavailable[IN_USE] = unavailable.get(IN_USE, 0) + len(exclude)
    reasons = unmatched_reasons(requirement) if not free_count and not unavailable else []
    allocation = allocate_groups(
        groups,
        count,
        policy,
        levels,
        what=what_of(requirement),
        unavailable=unavailable,
        unmatched_reasons=reasons,
    )
    hosts = [
        {
            "id": c.id,
            "name": c.name,
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
) -> tuple[Selection, list[HostClaim]]:
    """Select and claim in one transaction (see the module docstring). Returns the selection
    and the claims (none when it is infeasible: the selection's explanation says why)."""
    if not holder:
        raise ValueError("a claim needs a holder")
    skipped: set[int] = set()
    for _attempt in range(CLAIM_ATTEMPTS):
        try:
            with transaction.atomic():
                selection = hosts_select(requirement, count, policy, levels=levels, exclude=skipped)
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
    return hosts_select(requirement, count, policy, levels=levels, exclude=skipped), []


def claims_release(*, holder: str, host_ids: Iterable[int] | None = None) -> int:
    """End ``holder``'s active claims (all, or those on ``host_ids``); returns how many."""
    claims = HostClaim.objects.filter(holder=holder, released_at__isnull=True)
    if host_ids is not None:
        claims = claims.filter(host_id__in=list(host_ids))
    return claims.update(released_at=timezone.now())
