"""The host plan: confirmed reservations mapped onto concrete hosts over time.

Each planned host is a :class:`~reservations.models.HostBooking` over the reservation's
occupancy ``[start − lead, end + hand-off)``; PostgreSQL's exclusion constraint makes two
overlapping bookings of one host impossible, so a plan can be wrong only by being incomplete,
never by double-booking.

:func:`plan_reservation` (numbered as in the code):

1. **Candidates**: eligible hosts meeting the booking's requirement (key-erase-capable ones
   only when the pool cleans by key erase), with no booking overlapping the occupancy.
2. **Prefer hosts nobody holds now**, then hosts held by use the booking can take back
   (borrowed or pre-emptible: the lifecycle reclaims them before the preparation); then, for a
   promised booking (guaranteed or on demand), hosts planned then only for pre-emptible
   bookings: those are not promised anything and never make another booking wait, so their
   plan gives way (:func:`_spot_gives_way`) and the lifecycle takes the host back before the
   preparation, pre-empting them. Last, any host — one held by a guarantee or a promised
   booking today may be free by then — but only while the booking's reclaim has not begun
   (``prepare_at − notice − hand-off``): from then on the lifecycle drops such a host from the
   plan at once, and planning it again would only repeat that until the preparation finds
   the plan short.
3. **The allocator** (:func:`hosts.allocator.allocate`) picks the cheapest that satisfy the
   placement policy — with the host's best hand-off as its tie-breaker, so at equal cost it
   takes key-erase hosts, which make back-to-back bookings across tenants cheap (1 minute
   instead of 10 between them).
4. **Write** the bookings (after the pre-emptible plans they overlap give way); a concurrent plan that took one of the hosts meanwhile makes the
   insert fail (exclusion constraint): the savepoint is rolled back and the next attempt leaves
   that host out.

A booking whose plan is short (``missing`` > 0) stays confirmed — admission has shown the
capacity exists at every instant — and :func:`replan` tries again (every reconcile, until
preparation starts), re-planning the other unprepared bookings of the window if it must.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from hosts import topology
from hosts.allocator import Candidate, Policy, PolicyError, allocate
from hosts.handoff import KEY_ERASE_SECONDS, METADATA_SECONDS
from hosts.models import FleetSettings, Host
from hosts.requirements import RequirementError
from reservations.models import HostBooking, HostTaken, Reservation, booking_hosts
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


def _candidates(
    reservation: Reservation,
    levels,
    skip: set[int],
    *,
    free_now_only: bool,
    takeable_only: bool = False,
    over_spot: bool = False,
) -> list[Candidate]:
    """Step 1 (and 2): the hosts that could serve ``reservation`` over its whole occupancy.
    ``free_now_only``: held by nobody now; ``takeable_only``: held by nobody now, or by use that
    can be taken back (not a guarantee, not a promised booking); ``over_spot``: also those
    planned then only for pre-emptible bookings that can give way."""
    requirement = reservation.get_requirement()
    overlapping = HostBooking.objects.filter(host=OuterRef("pk"), during__overlap=reservation.occupancy)
    if over_spot:
        overlapping = overlapping.exclude(_yielding(reservation))
    hosts = Host.objects.filter(eligible_q()).exclude(pk__in=skip).filter(~Exists(overlapping))
    if reservation.node_pool.cleaning == NodePool.Cleaning.KEY_ERASE:
        hosts = hosts.filter(key_erase_capable=True)
    if free_now_only:
        held = PoolHost.objects.filter(host=OuterRef("pk"), released_at__isnull=True)
        hosts = hosts.filter(~Exists(held))
    elif takeable_only:
        hosts = hosts.filter(~Exists(_kept().filter(host=OuterRef("pk"))))
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


def _kept():
    """Hosts held now by use no booking takes back: within a guarantee (and not spot use), or
    serving a promised booking (the lifecycle drops such a planned host)."""
    from tenants.provisioning import LIVE, _takeable_q

    return PoolHost.objects.filter(released_at__isnull=True, preempt_at__isnull=True, state__in=LIVE).exclude(
        _takeable_q()
    )


def _yielding(reservation: Reservation) -> Q:
    """Plans of pre-emptible bookings that can give way to ``reservation``'s: those that begin
    before its occupancy (they are cut short where it begins), or whose booking has not begun
    preparing (they are dropped). A pre-emptible booking already running on the host since
    after that moment keeps it: its plan is what marks the host as spot use."""
    return Q(reservation__priority=Reservation.Priority.PREEMPTIBLE) & (
        Q(during__startswith__lt=reservation.occupancy.lower) | Q(reservation__state=Reservation.State.CONFIRMED)
    )


def _spot_gives_way(reservation: Reservation, host_ids) -> int:
    """Step 4, first: where ``reservation`` (a promised booking) takes hosts planned for
    pre-emptible bookings, those plans end where its occupancy begins, or go. Returns how many
    changed."""
    from django.db.backends.postgresql.psycopg_any import DateTimeTZRange

    if reservation.priority == Reservation.Priority.PREEMPTIBLE:
        return 0
    begins = reservation.occupancy.lower
    changed = 0
    yielding = (
        HostBooking.objects.select_for_update()
        .filter(host_id__in=host_ids, during__overlap=reservation.occupancy)
        .exclude(reservation=reservation)
        .filter(_yielding(reservation))
    )
    for booking in yielding:
        if booking.during.lower < begins:
            booking.during = DateTimeTZRange(booking.during.lower, begins, "[)")
            booking.save(update_fields=["during"])
        else:
            booking.delete()
        changed += 1
    if changed:
        log.info("pre-emptible plans gave way", extra={"reservation": reservation.pk, "changed": changed})
    return changed


def plan_reservation(reservation: Reservation, *, levels=None, now=None) -> PlanResult:
    """Plan the hosts ``reservation`` still lacks (see the module docstring). Call inside the
    transaction that confirmed it, or from :func:`replan`. ``now``: the time the lifecycle runs
    at (the wall clock unless a caller drives time)."""
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
            chosen = _choose(reservation, levels, policy, need, skip, have, now or timezone.now())
        except RequirementError as exc:
            return PlanResult(planned=tuple(have), missing=need, message=f"The requirement cannot be used: {exc}")
        if not chosen:
            message = "No set of hosts is free for the whole window yet; hosts are found at preparation."
            break
        handoff = reservation.occupancy.upper - reservation.ends_at
        try:
            with booking_hosts():  # a savepoint: a lost race undoes only this attempt
                _spot_gives_way(reservation, chosen)
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
        except HostTaken:
            # Another plan took one of them meanwhile: leave out every host now booked then.
            taken = set(
                HostBooking.objects.filter(host_id__in=chosen, during__overlap=reservation.occupancy).values_list(
                    "host_id", flat=True
                )
            )
            skip |= taken or set(chosen)
    return PlanResult(planned=tuple(have), missing=reservation.count - len(have), message=message)


def reclaim_lead_in(fleet: FleetSettings | None = None) -> timedelta:
    """How long before its preparation a booking starts taking its planned hosts back from
    borrowed or pre-emptible use: the notice, then the cleaning."""
    fleet = fleet or FleetSettings.load()
    return timedelta(seconds=fleet.preemption_notice_seconds + METADATA_SECONDS)


def _choose(reservation, levels, policy, need, skip, have, now) -> list[int]:
    occupied: dict[tuple[str, ...], int] = {}
    for location in Host.objects.filter(pk__in=have).values_list("location", flat=True):
        key = topology.path(location or {}, levels)
        occupied[key] = occupied.get(key, 0) + 1
    tiers = [{"free_now_only": True}, {"free_now_only": False, "takeable_only": True}]
    if reservation.priority != Reservation.Priority.PREEMPTIBLE:
        tiers.append({"free_now_only": False, "takeable_only": True, "over_spot": True})
    if reservation.prepare_at is None or reservation.prepare_at - reclaim_lead_in() > now:
        tiers.append({"free_now_only": False})
    for tier in tiers:
        candidates = _candidates(reservation, levels, skip, **tier)
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


def replan(*, window_end=None, now=None) -> dict[str, int]:
    """Complete the plans that are short, for confirmed reservations not yet preparing
    (re-plannable until preparation starts). Returns counts for the log. ``now``: as for
    :func:`plan_reservation`."""
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
            result = plan_reservation(reservation, now=now)
        if not result.missing:
            done["completed"] += 1
    return done
