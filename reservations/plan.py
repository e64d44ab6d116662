"""The host plan: confirmed reservations mapped onto concrete hosts over time.

Each planned host is a :class:`~reservations.models.HostBooking` over the reservation's
occupancy ``[start − lead, end + hand-off)``; PostgreSQL's exclusion constraint makes two
overlapping bookings of one host impossible, so a plan can be wrong only by being incomplete,
never by double-booking.

:func:`plan_reservation` (numbered as in the code):

1. **Candidates**: eligible hosts meeting the booking's requirement (key-erase-capable ones
   only when the pool cleans by key erase), with no booking overlapping the occupancy.
2. **Prefer hosts nobody holds now**, then any: a host held by a standing pool today may still
   be busy then (it would have to be pre-empted), a free one costs nothing to take.
3. **The allocator** (:func:`hosts.allocator.allocate`) picks the cheapest that satisfy the
   placement policy — with the host's best hand-off as its tie-breaker, so at equal cost it
   takes key-erase hosts, which make back-to-back bookings across tenants cheap (1 minute
   instead of 10 between them).
4. **Write** the bookings; a concurrent plan that took one of the hosts meanwhile makes the
   insert fail (exclusion constraint): the savepoint is rolled back and the next attempt leaves
   that host out.

A booking whose plan is short (``missing`` > 0) stays confirmed — admission has shown the
capacity exists at every instant — and :func:`replan` tries again (every reconcile, until
preparation starts), re-planning the other unprepared bookings of the window if it must.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef

from hosts import topology
from hosts.allocator import Candidate, Policy, PolicyError, allocate
from hosts.handoff import KEY_ERASE_SECONDS, METADATA_SECONDS
from hosts.models import FleetSettings, Host
from hosts.requirements import RequirementError
from reservations.models import HostBooking, Reservation
from tenants.models import NodePool, PoolHost
from tenants.quota import eligible_q, matching_host_ids

log = logging.getLogger(__name__)

ATTEMPTS = 4


@dataclass(frozen=True)
class PlanResult:
    planned: tuple[int, ...]  # host ids
    missing: int
    message: str = ""


def _policy(reservation: Reservation, levels) -> Policy:
    try:
        return Policy.from_json(reservation.policy or reservation.node_pool.policy or {}, levels)
    except PolicyError:
        return Policy()


def _candidates(reservation: Reservation, levels, skip: set[int], *, free_now_only: bool) -> list[Candidate]:
    """Step 1 (and 2): the hosts that could serve ``reservation`` over its whole occupancy."""
    requirement = reservation.get_requirement()
    overlapping = HostBooking.objects.filter(host=OuterRef("pk"), during__overlap=reservation.occupancy)
    hosts = Host.objects.filter(eligible_q()).exclude(pk__in=skip).filter(~Exists(overlapping))
    if reservation.node_pool.cleaning == NodePool.Cleaning.KEY_ERASE:
        hosts = hosts.filter(key_erase_capable=True)
    if free_now_only:
        held = PoolHost.objects.filter(host=OuterRef("pk"), released_at__isnull=True)
        hosts = hosts.filter(~Exists(held))
    ids = matching_host_ids(requirement, hosts)
    rows = Host.objects.filter(pk__in=ids).values_list("id", "name", "cost_per_hour", "key_erase_capable", "location")
    return [
        Candidate(
            id=pk,
            name=name,
            cost=cost or Decimal(0),
            handoff=KEY_ERASE_SECONDS if key_erase else METADATA_SECONDS,
            path=topology.path(location or {}, levels),
        )
        for pk, name, cost, key_erase, location in rows
    ]


def plan_reservation(reservation: Reservation, *, levels=None) -> PlanResult:
    """Plan the hosts ``reservation`` still lacks (see the module docstring). Call inside the
    transaction that confirmed it, or from :func:`replan`."""
    levels = list(levels if levels is not None else FleetSettings.load().topology_levels)
    have = list(reservation.bookings.values_list("host_id", flat=True))
    need = reservation.count - len(have)
    if need <= 0:
        return PlanResult(planned=tuple(have), missing=0)
    try:
        policy = _policy(reservation, levels).validate(levels)
    except PolicyError:
        policy = Policy()
    skip: set[int] = set(have)
    message = ""
    for _attempt in range(ATTEMPTS):
        try:
            chosen = _choose(reservation, levels, policy, need, skip, have)
        except RequirementError as exc:
            return PlanResult(planned=tuple(have), missing=need, message=f"The requirement cannot be used: {exc}")
        if not chosen:
            message = "No set of hosts is free for the whole window yet; hosts are found at preparation."
            break
        handoff = reservation.occupancy.upper - reservation.ends_at
        try:
            with transaction.atomic():  # a savepoint: a lost race undoes only this attempt
                HostBooking.objects.bulk_create(
                    HostBooking(
                        reservation=reservation,
                        host_id=pk,
                        during=reservation.occupancy,
                        handoff_seconds=int(handoff.total_seconds()),
                    )
                    for pk in chosen
                )
            have.extend(chosen)
            return PlanResult(planned=tuple(have), missing=reservation.count - len(have))
        except IntegrityError:
            # Another plan took one of them meanwhile: leave out every host now booked then.
            taken = set(
                HostBooking.objects.filter(host_id__in=chosen, during__overlap=reservation.occupancy).values_list(
                    "host_id", flat=True
                )
            )
            skip |= taken or set(chosen)
    return PlanResult(planned=tuple(have), missing=reservation.count - len(have), message=message)


def _choose(reservation, levels, policy, need, skip, have) -> list[int]:
    occupied: dict[tuple[str, ...], int] = {}
    for location in Host.objects.filter(pk__in=have).values_list("location", flat=True):
        key = topology.path(location or {}, levels)
        occupied[key] = occupied.get(key, 0) + 1
    for free_now_only in (True, False):
        candidates = _candidates(reservation, levels, skip, free_now_only=free_now_only)
        if len(candidates) < need:
            continue
        allocation = allocate(candidates, need, policy, levels, occupied=occupied or None)
        if allocation.feasible:
            return sorted(c.id for c in allocation.chosen)
    return []


def plan_release(reservation: Reservation) -> int:
    """Drop the plan of a reservation that will not run (refused, cancelled)."""
    return HostBooking.objects.filter(reservation=reservation).delete()[0]


def plan_shorten(reservation: Reservation, *, until) -> int:
    """A reservation that ends early keeps its hosts only until ``until`` + its hand-off."""
    from datetime import timedelta

    from django.db.backends.postgresql.psycopg_any import DateTimeTZRange

    count = 0
    for booking in HostBooking.objects.filter(reservation=reservation):
        end = until + timedelta(seconds=booking.handoff_seconds)
        if end < booking.during.upper:
            lower = min(booking.during.lower, end - timedelta(seconds=1))
            booking.during = DateTimeTZRange(lower, end, "[)")
            booking.save(update_fields=["during"])
            count += 1
    return count


def replan(*, window_end=None) -> dict[str, int]:
    """Complete the plans that are short, for confirmed reservations not yet preparing
    (re-plannable until preparation starts). Returns counts for the log."""
    from django.db.models import Count, F

    done = {"checked": 0, "completed": 0}
    short = (
        Reservation.objects.filter(state=Reservation.State.CONFIRMED)
        .annotate(n=Count("bookings"))
        .filter(n__lt=F("count"))
        .select_related("node_pool__quota_class")
        .order_by("prepare_at")[:100]
    )
    for reservation in short:
        done["checked"] += 1
        with transaction.atomic():
            result = plan_reservation(reservation)
        if not result.missing:
            done["completed"] += 1
    return done
