"""Reservation writes: the one place a Reservation is created, confirmed, changed or ended.

Every service validates its input into a :class:`django.core.exceptions.ValidationError` with
field names (forms and the API show it as is), runs in one transaction, writes the audit row of
every state transition with its reason, and queues follow-up work with ``on_commit``.

* :func:`reservation_check` — the dry run: would this booking be confirmed? (the booking
  form's live feedback, the calendar's drag, ``/availability/``);
* :func:`reservation_create` — book (once, or a recurring series: all occurrences admitted
  together, all or none); refused bookings are kept, state ``refused``, with the reason;
* :func:`reservation_cancel`, :func:`reservation_release` (early release),
  :func:`reservation_extend` (Chameleon-like rules: only within a window before the end, never
  past a maximum length, and only while the same hosts are free);
* :func:`reservation_transition` — the state machine's single writer (the lifecycle uses it).

Admission and planning are serialised by the quota admission's advisory lock: two bookings for
the last free slot are judged one after the other, and the exclusion constraint on the host
plan stops anything that slips past (STYLE.md §8).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.backends.postgresql.psycopg_any import DateTimeTZRange
from django.utils import timezone
from django.utils.dateparse import parse_datetime, parse_duration

from hosts.allocator import Policy, PolicyError
from hosts.models import FleetSettings
from hosts.requirements import Requirement, RequirementError
from reservations import admission, plan
from reservations.models import HostBooking, HostTaken, Reservation, ReservationSeries, booking_hosts
from reservations.recurrence import RecurrenceError, expand, normalise
from tenants.audit import audit_record
from tenants.models import NodePool, Tenant
from tenants.quota import _admission_lock

log = logging.getLogger(__name__)

MAX_COUNT = 10_000
State = Reservation.State

# Which transitions the state machine allows (anything else is a bug, and refused).
TRANSITIONS: dict[str, tuple[str, ...]] = {
    State.REQUESTED: (State.CONFIRMED, State.REFUSED, State.CANCELLED),
    State.CONFIRMED: (State.PREPARING, State.ACTIVE, State.CANCELLED, State.PREEMPTED, State.FAILED),
    State.PREPARING: (State.ACTIVE, State.CANCELLED, State.PREEMPTED, State.FAILED),
    State.ACTIVE: (State.COMPLETED, State.PREEMPTED, State.FAILED),
}


# ============================================================================ input


def _when(value: Any, field: str) -> datetime:
    if isinstance(value, str):
        parsed = parse_datetime(value.strip())
        if parsed is None:
            raise ValidationError({field: f"{value!r} is not a date and time (ISO 8601, e.g. 2026-12-01T20:00+01:00)."})
        value = parsed
    if not isinstance(value, datetime):
        raise ValidationError({field: "Give a date and time."})
    if timezone.is_naive(value):
        value = timezone.make_aware(value)
    return value


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(hours=value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text.replace(".", "", 1).isdigit():
            return timedelta(hours=float(text))  # a bare number is hours, as in the form
        if text.endswith("h") and text[:-1].replace(".", "", 1).isdigit():
            return timedelta(hours=float(text[:-1]))
        if text.endswith("d") and text[:-1].isdigit():
            return timedelta(days=int(text[:-1]))
        parsed = parse_duration(value)
        if parsed is not None:
            return parsed
    raise ValidationError(
        {"duration": f"{value!r} is not a duration: hours (6 or '6h'), days ('2d') or ISO 8601 (PT6H)."}
    )


def _count(value: Any) -> int:
    if isinstance(value, bool):
        raise ValidationError({"count": "Give how many hosts, a whole number from 1."})
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise ValidationError({"count": "Give how many hosts, a whole number from 1."}) from None
    if str(count) != str(value).strip() and not isinstance(value, int):
        raise ValidationError({"count": "Give how many hosts, a whole number from 1."})
    if not 1 <= count <= MAX_COUNT:
        raise ValidationError({"count": f"Book between 1 and {MAX_COUNT} hosts."})
    return count


def _priority(value: Any) -> str:
    if value in (None, ""):
        return Reservation.Priority.ON_DEMAND
    if value not in Reservation.Priority.values:
        raise ValidationError({"priority": f"{value!r}: one of {', '.join(Reservation.Priority.values)}."})
    return value


@dataclass(frozen=True)
class Booking:
    """A validated booking, ready for admission (what :func:`reservation_check` judged)."""

    tenant: Tenant
    pool: NodePool | None  # None: a new pool, created when the booking is confirmed
    new_pool: dict | None
    count: int
    windows: tuple[tuple[datetime, datetime], ...]
    requirement_json: dict
    policy_json: dict
    priority: str
    name: str
    rrule: str
    tz_name: str
    ask: admission.Ask


def _pool_requirement(pool: NodePool | None, new_pool: dict | None) -> tuple[Requirement, Any, str]:
    """(the pool's requirement, its quota class, its cleaning) of an existing or a new pool."""
    from tenants.clusters import _quota_class

    if pool is not None:
        return pool.get_requirement(), pool.quota_class, pool.cleaning
    klass = _quota_class(new_pool.get("quota_class"))
    base = klass.get_requirement()
    extra = new_pool.get("requirement") or {}
    if extra:
        base = base.merge(Requirement.from_json(extra))
    return base, klass, new_pool.get("cleaning") or NodePool.Cleaning.STANDARD


def booking_validate(
    *,
    tenant: Tenant,
    node_pool: NodePool | None = None,
    new_pool: dict | None = None,
    count: Any,
    starts_at: Any,
    ends_at: Any = None,
    duration: Any = None,
    requirement: Any = None,
    policy: Any = None,
    priority: Any = None,
    name: str = "",
    rrule: str = "",
    tz_name: str = "",
    now: datetime | None = None,
) -> Booking:
    """Every rule a booking must meet before admission, as field errors."""
    settings = FleetSettings.load()
    now = now or timezone.now()
    errors: dict[str, str] = {}
    if node_pool is None and not new_pool:
        errors["node_pool"] = "Choose the node pool the hosts join, or a cluster to create a pool in."
    if node_pool is not None and (node_pool.cluster.tenant_id != tenant.pk or node_pool.deleted_at is not None):
        errors["node_pool"] = "No such node pool in this tenant."
    if node_pool is not None and node_pool.phase == NodePool.Phase.DELETING:
        errors["node_pool"] = "The node pool is being deleted."
    if new_pool is not None:
        cluster = new_pool.get("cluster")
        if cluster is None or cluster.tenant_id != tenant.pk or cluster.deleted_at is not None:
            errors["cluster"] = "No such cluster in this tenant."
    if errors:
        raise ValidationError(errors)
    count = _count(count)
    start = _when(starts_at, "starts_at")
    if ends_at not in (None, ""):
        end = _when(ends_at, "ends_at")
    elif duration not in (None, ""):
        end = start + _duration(duration)
    else:
        raise ValidationError({"ends_at": "Give an end or a duration."})
    if end <= start:
        raise ValidationError({"ends_at": "The end must be after the start."})
    if start < now - timedelta(minutes=1):
        raise ValidationError({"starts_at": "The start is in the past."})
    horizon = now + timedelta(days=settings.reservation_horizon_days)
    if start > horizon:
        raise ValidationError(
            {
                "starts_at": f"Bookings may start at most {settings.reservation_horizon_days} days ahead (until {horizon:%Y-%m-%d})."
            }
        )
    if end - start > timedelta(hours=settings.reservation_max_hours):
        raise ValidationError(
            {
                "ends_at": f"A booking lasts at most {settings.reservation_max_hours} hours; this one lasts {_hours(end - start)}."
            }
        )
    priority = _priority(priority)
    try:
        base, klass, cleaning = _pool_requirement(node_pool, new_pool)
    except RequirementError as exc:
        raise ValidationError({"requirement": str(exc)}) from exc
    requirement_json = requirement if isinstance(requirement, dict) else {}
    if isinstance(requirement, str) and requirement.strip():
        try:
            requirement_json = Requirement.parse(requirement).to_json()
        except RequirementError as exc:
            raise ValidationError({"requirement": str(exc)}) from exc
    elif requirement not in (None, "", {}) and not isinstance(requirement, dict):
        raise ValidationError(
            {"requirement": "A requirement in the selection language (e.g. gpu:nvidia-a100>=1) or as JSON."}
        )
    try:
        effective = base.merge(Requirement.from_json(requirement_json)) if requirement_json else base
    except RequirementError as exc:
        raise ValidationError({"requirement": str(exc)}) from exc
    levels = settings.topology_levels
    try:
        policy_json = policy or {}
        placement = Policy.from_json(policy_json or (node_pool.policy if node_pool else {}) or {}, levels).validate(
            levels
        )
    except PolicyError as exc:
        raise ValidationError({"policy": str(exc)}) from exc
    rule = ""
    windows = ((start, end),)
    if rrule:
        try:
            rule = normalise(rrule)
            found = expand(rule=rule, first_start=start, duration=end - start, tz_name=tz_name, until=horizon)
        except RecurrenceError as exc:
            raise ValidationError({"rrule": str(exc)}) from exc
        windows = tuple((w.starts_at, w.ends_at) for w in found)
    name = (name or "").strip()
    if len(name) > 100:
        raise ValidationError({"name": "At most 100 characters."})
    handoff_s = admission.KEY_ERASE_SECONDS if cleaning == NodePool.Cleaning.KEY_ERASE else admission.METADATA_SECONDS
    ask = admission.Ask(
        tenant=tenant,
        quota_class=klass,
        priority=priority,
        count=count,
        requirement=effective,
        policy=placement,
        windows=windows,
        lead=timedelta(seconds=admission.lead_seconds(admission._Fleet().matching(effective))),
        handoff=timedelta(seconds=handoff_s),
        label=name or "this booking",
    )
    return Booking(
        tenant=tenant,
        pool=node_pool,
        new_pool=new_pool,
        count=count,
        windows=windows,
        requirement_json=requirement_json,
        policy_json=policy or {},
        priority=priority,
        name=name,
        rrule=rule,
        tz_name=tz_name,
        ask=ask,
    )


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g} hours" if hours != 1 else "1 hour"


# ============================================================================ check and create


def reservation_check(**fields) -> admission.Verdict:
    """Would this booking be confirmed now? Nothing is written. Raises ValidationError for bad
    input, like :func:`reservation_create`."""
    booking = booking_validate(**fields)
    return admission.check(booking.ask)


def reservation_transition(
    reservation: Reservation, to: str, reason: str, *, actor=None, action: str | None = None, **updates
) -> bool:
    """Move ``reservation`` to ``to`` if the state machine allows it and nobody moved it
    meanwhile (a conditional UPDATE); audit the transition with its reason. Returns whether it
    moved. ``updates``: other fields to write in the same UPDATE."""
    before = reservation.state
    if to not in TRANSITIONS.get(before, ()):
        log.warning("reservation transition refused", extra={"reservation": reservation.pk, "from": before, "to": to})
        return False
    moved = Reservation.objects.filter(pk=reservation.pk, state=before).update(
        state=to, message=reason[:500], updated_at=timezone.now(), **updates
    )
    if not moved:
        return False
    reservation.state, reservation.message = to, reason[:500]
    for key, value in updates.items():
        setattr(reservation, key, value)
    audit_record(
        actor=actor,
        action=action or f"reservation.{to}",
        target=reservation,
        tenant=reservation.tenant,
        before={"state": before},
        after={"state": to, "reason": reason},
    )
    return True


def reservation_create(*, acting_user=None, **fields) -> Reservation:
    """Book (see the module docstring). Returns the (first) reservation: ``confirmed`` with its
    plan, or ``refused`` with ``message`` and ``refusal`` saying why and when it would fit.
    Bad input raises ValidationError and writes nothing."""
    booking = booking_validate(**fields)
    with transaction.atomic():
        _admission_lock()
        Tenant.objects.select_for_update().filter(pk=booking.tenant.pk).first()
        verdict = admission.check(booking.ask)
        pool = booking.pool
        if pool is None and verdict.ok:
            from tenants.clusters import node_pool_create

            pool = node_pool_create(actor=acting_user, replicas=0, **booking.new_pool)
        series = None
        if booking.rrule:
            first_start, first_end = booking.windows[0]
            series = ReservationSeries.objects.create(
                tenant=booking.tenant,
                rrule=booking.rrule,
                timezone=booking.tz_name,
                first_start=first_start,
                duration=first_end - first_start,
            )
        if pool is None:  # refused, and the new pool was never made: keep the refusal on record without one
            return _refused_without_pool(booking, verdict, acting_user)
        created = []
        for start, end in booking.windows:
            occupancy = DateTimeTZRange(start - booking.ask.lead, end + booking.ask.handoff, "[)")
            reservation = Reservation.objects.create(
                tenant=booking.tenant,
                node_pool=pool,
                series=series,
                name=booking.name,
                count=booking.count,
                requirement=booking.requirement_json,
                policy=booking.policy_json,
                priority=booking.priority,
                starts_at=start,
                ends_at=end,
                original_ends_at=end,
                prepare_at=occupancy.lower,
                occupancy=occupancy,
                state=State.REQUESTED,
                created_by=acting_user if getattr(acting_user, "pk", None) else None,
            )
            reservation.node_pool = pool
            audit_record(
                actor=acting_user,
                action="reservation.request",
                target=reservation,
                tenant=booking.tenant,
                after=_snapshot(reservation),
            )
            created.append(reservation)
        if not verdict.ok:
            refusal = verdict.refusal
            for reservation in created:
                reservation_transition(
                    reservation,
                    State.REFUSED,
                    refusal.message,
                    actor=acting_user,
                    refusal=refusal.as_dict(),
                    occupancy=None,
                )
            return created[0]
        for reservation in created:
            result = plan.plan_reservation(reservation)
            planned = len(result.planned)
            reason = (
                f"Confirmed: {planned} of {reservation.count} hosts planned; preparation starts "
                f"{timezone.localtime(reservation.prepare_at):%a %d %b %H:%M} so they are ready at the start."
            )
            if result.missing:
                reason += f" {result.missing} more will be found before then."
            reservation_transition(reservation, State.CONFIRMED, reason, actor=acting_user)
        transaction.on_commit(_kick)
        return created[0]


class BookingRefused(ValidationError):
    """Admission refused a booking for a new pool. No pool was made, so no refused reservation
    is kept to say why: the refusal travels with the error instead (a form shows its message,
    the API answers 409 with all of it)."""

    def __init__(self, refusal: admission.Refusal):
        super().__init__({"__all__": [ValidationError(refusal.message, code="refused")]})
        self.refusal = refusal


def _refused_without_pool(booking: Booking, verdict: admission.Verdict, actor) -> Reservation:
    raise BookingRefused(verdict.refusal)


def _snapshot(reservation: Reservation) -> dict[str, Any]:
    return {
        "name": reservation.name,
        "node_pool": str(reservation.node_pool),
        "count": reservation.count,
        "priority": reservation.priority,
        "starts_at": reservation.starts_at,
        "ends_at": reservation.ends_at,
        "requirement": reservation.requirement,
        "policy": reservation.policy,
        "series": reservation.series.rrule if reservation.series_id else "",
    }


def _kick() -> None:
    """Let the lifecycle look now rather than at its next beat (a booking starting soon)."""
    try:
        from reservations.tasks import reservations_reconcile_task

        reservations_reconcile_task.delay()
    except Exception:  # the broker may be down; beat runs it within seconds anyway
        log.warning("could not queue the reservations reconcile", exc_info=True)


# ============================================================================ changes


def _locked(reservation: Reservation) -> Reservation:
    return (
        Reservation.objects.select_for_update()
        .select_related("tenant", "node_pool__quota_class")
        .get(pk=reservation.pk)
    )


def reservation_cancel(*, reservation: Reservation, acting_user=None, reason: str = "", series: bool = False) -> int:
    """Cancel a booking that has not started (and, with ``series``, every later occurrence of
    its series that has not started). An active booking is released early instead
    (:func:`reservation_release`). Returns how many were cancelled."""
    with transaction.atomic():
        current = _locked(reservation)
        targets = [current]
        if series and current.series_id:
            targets = list(
                Reservation.objects.select_for_update()
                .filter(series_id=current.series_id, starts_at__gte=current.starts_at)
                .select_related("tenant", "node_pool")
            )
        cancellable = [r for r in targets if r.state in (State.REQUESTED, State.CONFIRMED, State.PREPARING)]
        if not cancellable:
            if current.state == State.ACTIVE:
                raise ValidationError({"__all__": "It has started: release it early instead."})
            raise ValidationError(
                {"__all__": f"A {current.get_state_display().lower()} reservation cannot be cancelled."}
            )
        who = getattr(acting_user, "email", None) or "Teapot"
        for r in cancellable:
            reservation_transition(r, State.CANCELLED, reason or f"Cancelled by {who}.", actor=acting_user)
            plan.plan_release(r)
        transaction.on_commit(_kick)
        return len(cancellable)


def reservation_release(*, reservation: Reservation, acting_user=None) -> Reservation:
    """End an active (or preparing) booking now: its hosts leave the pool and are handed off."""
    with transaction.atomic():
        current = _locked(reservation)
        if current.state not in (State.ACTIVE, State.PREPARING):
            raise ValidationError({"__all__": "Only a booking that is preparing or active can be released early."})
        now = timezone.now()
        who = getattr(acting_user, "email", None) or "Teapot"
        if current.state == State.PREPARING:
            reservation_transition(current, State.CANCELLED, f"Released before its start by {who}.", actor=acting_user)
            plan.plan_release(current)
        else:
            reservation_transition(
                current,
                State.COMPLETED,
                f"Released early by {who} at {timezone.localtime(now):%a %d %b %H:%M}.",
                actor=acting_user,
                action="reservation.release",
                ends_at=max(now, current.starts_at + timedelta(seconds=1)),
            )
            plan.plan_shorten(current, until=now)
        transaction.on_commit(_kick)
        return current


def extension_refusal(reservation: Reservation, new_end: datetime, *, now: datetime | None = None) -> str | None:
    """Why the operator's rules refuse extending to ``new_end`` (None: they allow it)."""
    settings = FleetSettings.load()
    now = now or timezone.now()
    if reservation.state not in (State.CONFIRMED, State.PREPARING, State.ACTIVE):
        return f"A {reservation.get_state_display().lower()} reservation cannot be extended."
    if new_end <= reservation.ends_at:
        return "The new end must be after the current end."
    window = timedelta(hours=settings.reservation_extend_window_hours)
    if now < reservation.ends_at - window:
        opens = timezone.localtime(reservation.ends_at - window)
        return (
            f"Extensions open {settings.reservation_extend_window_hours} hours before the end "
            f"(from {opens:%a %d %b %H:%M})."
        )
    longest = timedelta(hours=settings.reservation_max_hours)
    if new_end - reservation.starts_at > longest:
        latest = timezone.localtime(reservation.starts_at + longest)
        return f"A booking lasts at most {settings.reservation_max_hours} hours: it can end {latest:%a %d %b %H:%M} at the latest."
    return None


def reservation_extend(*, reservation: Reservation, ends_at: Any, acting_user=None) -> Reservation:
    """Move the end later (see :func:`extension_refusal`), keeping the same hosts: refused
    when admission or the plan says they are needed elsewhere then."""
    new_end = _when(ends_at, "ends_at")
    with transaction.atomic():
        _admission_lock()
        current = _locked(reservation)
        why = extension_refusal(current, new_end)
        if why:
            raise ValidationError({"ends_at": why})
        handoff = current.occupancy.upper - current.ends_at
        try:
            requirement = current.get_requirement()
        except RequirementError as exc:
            raise ValidationError({"__all__": f"The booking's requirement cannot be used any more: {exc}"}) from exc
        levels = FleetSettings.load().topology_levels
        try:
            policy = Policy.from_json(current.policy or current.node_pool.policy or {}, levels)
        except PolicyError:
            policy = Policy()
        # Only the added time is new: judge [old end, new end) with no lead (the hosts are there).
        ask = admission.Ask(
            tenant=current.tenant,
            quota_class=current.node_pool.quota_class,
            priority=current.priority,
            count=current.count,
            requirement=requirement,
            policy=policy,
            windows=((current.ends_at + handoff, new_end),),
            lead=handoff,
            handoff=handoff,
        )
        verdict = admission.check(ask, exclude=[current.pk], suggest=False)
        if not verdict.ok:
            raise ValidationError({"ends_at": f"Cannot extend: {verdict.refusal.message}"})
        occupancy = DateTimeTZRange(current.occupancy.lower, new_end + handoff, "[)")
        try:
            with booking_hosts():
                for booking in HostBooking.objects.filter(reservation=current).select_related("host"):
                    booking.during = DateTimeTZRange(booking.during.lower, new_end + handoff, "[)")
                    booking.save(update_fields=["during"])
        except HostTaken as exc:
            taken = _first_conflict(current, new_end + handoff)
            raise ValidationError({"ends_at": f"Cannot extend: {taken}"}) from exc
        before = current.ends_at
        Reservation.objects.filter(pk=current.pk).update(
            ends_at=new_end, occupancy=occupancy, reminded_at=None, updated_at=timezone.now()
        )
        current.ends_at, current.occupancy = new_end, occupancy
        audit_record(
            actor=acting_user,
            action="reservation.extend",
            target=current,
            tenant=current.tenant,
            before={"ends_at": before},
            after={"ends_at": new_end},
        )
        return current


def _first_conflict(reservation: Reservation, until: datetime) -> str:
    hosts = list(reservation.bookings.values_list("host_id", flat=True))
    clash = (
        HostBooking.objects.filter(
            host_id__in=hosts, during__overlap=DateTimeTZRange(reservation.occupancy.upper, until, "[)")
        )
        .exclude(reservation=reservation)
        .select_related("host", "reservation")
        .order_by("during")
        .first()
    )
    if clash is None:
        return "its hosts are booked by another reservation then."
    return (
        f"host {clash.host.name} is booked by another reservation from "
        f"{timezone.localtime(clash.during.lower):%a %d %b %H:%M}."
    )


# ============================================================================ availability (the API's /availability/)


def availability_ask(
    *,
    tenant: Tenant,
    requirement: Any,
    count: Any,
    duration: Any,
    quota_class: Any = None,
    after: Any = None,
    priority: Any = None,
    now: datetime | None = None,
) -> tuple[admission.Ask, datetime, timedelta]:
    """The admission question behind "when can I get ``count`` hosts like this for
    ``duration``?": ``(ask, after, duration)`` for :func:`admission.availability`.

    No pool is named, so the quota class is ``quota_class`` (a name or a class) or, when it is
    not given, the first class (in the catalogue's order) whose requirement the asked one
    already contains — merging the class's requirement into it changes nothing ("gpu:nvidia-
    a100>=2" is in gpu-a100; "cores>=32" is in no class that forbids GPUs: name the class).

    The rules are :func:`booking_validate`'s (count, duration, horizon, requirement), judged
    as a booking for a new pool of that class in an unsaved stand-in cluster of the tenant;
    errors are keyed ``count``, ``duration``, ``after``, ``requirement``, ``quota_class``.
    """
    import re

    from tenants.clusters import _quota_class
    from tenants.models import Cluster, QuotaClass

    now = now or timezone.now()
    start = now if after in (None, "") else _when(after, "after")
    start = max(start, now)
    if isinstance(duration, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", duration):
        duration = float(duration)  # a bare number in a query string is hours (as in a form)
    if isinstance(requirement, str):
        try:
            asked = Requirement.parse(requirement)
        except RequirementError as exc:
            raise ValidationError({"requirement": str(exc)}) from exc
    elif isinstance(requirement, dict):
        try:
            asked = Requirement.from_json(requirement)
        except RequirementError as exc:
            raise ValidationError({"requirement": str(exc)}) from exc
    else:
        asked = Requirement()
    if quota_class not in (None, ""):
        klass = _quota_class(quota_class)
    else:
        klass = None
        for candidate in QuotaClass.objects.order_by("order", "name"):
            try:
                if candidate.get_requirement().merge(asked).to_json() == asked.to_json():
                    klass = candidate
                    break
            except RequirementError:
                continue
        if klass is None:
            raise ValidationError(
                {"quota_class": "No quota class contains this requirement: name the class (quota_class)."}
            )
    try:
        booking = booking_validate(
            tenant=tenant,
            new_pool={"cluster": Cluster(tenant=tenant), "quota_class": klass},
            count=count,
            starts_at=start,
            duration=duration if duration not in (None, "") else None,
            ends_at=None,
            requirement=asked.to_json(),
            priority=priority,
            now=now,
        )
    except ValidationError as exc:
        renamed = {"starts_at": "after", "ends_at": "duration"}
        raise ValidationError({renamed.get(k, k): v for k, v in exc.message_dict.items()}) from exc
    first_start, first_end = booking.windows[0]
    return booking.ask, first_start, first_end - first_start
