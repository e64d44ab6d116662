"""The reservation lifecycle: bookings made real in the management cluster, on time.

:func:`reservations_reconcile` runs every 10 seconds (Celery beat, ``reservations-reconcile``)
and after every booking change. It is level-triggered and idempotent like the provisioning
reconciles: each step selects the reservations whose time has come *by their state*, moves them
with :func:`reservations.services.reservation_transition` (a conditional UPDATE: two runs at
once move each reservation once, and each move is audited with its reason), and queues the node
pool's reconcile, which does the actual work (:mod:`tenants.provisioning`: a pool's desired size
is its standing size plus its preparing and active bookings). A run that was missed — a worker
down for an hour — catches up on the next one.

Steps (numbered as in the code):

1. **Orphans.** A holding booking (confirmed, preparing, active) whose node pool was deleted, or
   is being deleted, fails with the reason; its plan is dropped.
2. **Reclaim early.** A confirmed booking whose planned hosts are held by another pool's
   borrowed or pre-emptible use starts taking them back at ``prepare_at − notice − hand-off``
   (:func:`tenants.provisioning.reservation_reclaim_early`): the notice runs out at
   ``prepare_at − hand-off``, the host is cleaned by ``prepare_at``, and is waiting, free, when
   preparation starts. A planned host held by a guarantee (or a promised booking) cannot be
   taken: it is dropped from the plan and step 6 plans another.
3. **Prepare.** A confirmed booking whose ``prepare_at`` has come becomes *preparing*: its pool
   grows by its count, its planned hosts are claimed exactly (others chosen where the plan is
   short) and provisioned; while the pool has nothing else running, its nodes carry the
   ``teapot.io/reservation-pending:NoSchedule`` taint so that hosts Ready early run nothing.
4. **Start.** A preparing (or, if preparation was skipped, confirmed) booking whose start has
   come becomes *active*; the taint goes.
5. **End.** An active booking whose end has come is *completed*: the pool's desired size drops,
   and the surplus path hands the hosts off (cleaned per the pool's policy: key erase or
   metadata cleaning). A confirmed or preparing booking whose whole window passed without it
   starting (the lifecycle was not running) fails, rather than starting after its end.
6. **Reminder.** ``FleetSettings.reservation_reminder_minutes`` before the end of an active
   booking, its tenant's owners and members get one email (``reminded_at`` is set first, with a
   conditional UPDATE, so two runs cannot both send it; a failed send clears it for the next
   run). 0 minutes: no reminder. An extension clears ``reminded_at``.
7. **Re-plan** the confirmed bookings whose plan is short (:func:`reservations.plan.replan`).

Timing, and why:

* ``prepare_at = start − lead``; the lead is the p95 of the recorded provisioning times of the
  hardware class the booking gets (:func:`reservations.admission.lead_seconds`, from
  :class:`tenants.progress.Latencies`) plus a minute for the reconcile to notice. p95, not the
  median: one late host of twenty spoils a start; the lead is paid by the hosts sitting Ready
  (and tainted) a few minutes early, which is cheap.
* The hand-off (cleaning after the end: key erase ~1 minute, metadata ~10) is inside the
  booking's occupancy, so the next booking of the same host starts its own lead after it.
* Reclaiming from standing use starts ``notice + hand-off`` before ``prepare_at`` (step 2), so
  the borrowed host's notice is the fleet's full ``preemption_notice_seconds`` and preparation
  still starts on time. A booking made late (inside that window) gives the full notice anyway
  and starts late by what is missing; the pool's page says so.
* A standing pool does not take a host another pool's booking needs within the hour (plus the
  notice and hand-off): it would be reclaimed before doing any work.
* ``now`` is a parameter so tests (and the lab's compressed clock) drive time explicitly.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings as django_settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from hosts.models import FleetSettings
from reservations import plan
from reservations.models import Reservation
from reservations.services import reservation_transition
from tenants.models import Membership, NodePool, Role

log = logging.getLogger(__name__)

State = Reservation.State
LOCK_RESERVATIONS = 21  # the advisory lock of the beat task (hosts.tasks.single_run's class)
BATCH = 500  # per step and run: a backlog is worked off over a few runs, never in one huge one


def _when(moment: datetime) -> str:
    return f"{timezone.localtime(moment):%a %d %b %H:%M}"


def _hosts(reservation: Reservation) -> str:
    names = sorted(reservation.bookings.values_list("host__name", flat=True))
    if not names:
        return "hosts chosen now"
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return shown


def _kick_pool(reservation: Reservation) -> None:
    from tenants.clusters import reconcile_pool_after_commit

    reconcile_pool_after_commit(reservation.node_pool_id)


def _move(reservation: Reservation, to: str, reason: str, **updates) -> bool:
    with transaction.atomic():
        moved = reservation_transition(reservation, to, reason, **updates)
        if moved:
            if to in (State.FAILED,):
                plan.plan_release(reservation)
            _kick_pool(reservation)
    return moved


def _holding(*states: str):
    return (
        Reservation.objects.filter(state__in=states)
        .select_related("tenant", "node_pool__cluster__tenant", "node_pool__quota_class")
        .order_by("starts_at", "pk")
    )


def reservations_reconcile(now: datetime | None = None) -> dict[str, int]:
    """One pass of the lifecycle (see the module docstring); returns counts for the log."""
    from tenants.provisioning import reservation_reclaim_early

    now = now or timezone.now()
    fleet = FleetSettings.load()
    done = {"failed": 0, "reclaimed": 0, "preparing": 0, "active": 0, "completed": 0, "reminded": 0}

    # 1. Orphans: the pool is gone or going.
    gone = Q(node_pool__deleted_at__isnull=False) | Q(node_pool__phase=NodePool.Phase.DELETING)
    for r in _holding(*Reservation.HOLDING).filter(gone)[:BATCH]:
        reason = (
            f"Failed: its node pool {r.node_pool.name} was deleted, so the booked hosts have nowhere to go. "
            "Book again for another pool."
        )
        if _move(r, State.FAILED, reason):
            done["failed"] += 1

    # 2. Reclaim early: notice + hand-off before preparation.
    lead_in = plan.reclaim_lead_in(fleet)
    for r in _holding(State.CONFIRMED).filter(prepare_at__lte=now + lead_in, starts_at__gt=now)[:BATCH]:
        with transaction.atomic():
            changed = reservation_reclaim_early(r, now=now)
        done["reclaimed"] += changed

    # 3. Prepare.
    for r in _holding(State.CONFIRMED).filter(prepare_at__lte=now, starts_at__gt=now)[:BATCH]:
        reason = (
            f"Preparing since {_when(now)}: {r.count} host{'s' if r.count != 1 else ''} "
            f"({_hosts(r)}) are being provisioned to be Ready at the start, {_when(r.starts_at)}. "
            "Until then the nodes are tainted teapot.io/reservation-pending."
        )
        if _move(r, State.PREPARING, reason):
            done["preparing"] += 1

    # 5 before 4 for a window that passed entirely: it must not start after its end.
    for r in _holding(State.CONFIRMED, State.PREPARING).filter(ends_at__lte=now)[:BATCH]:
        reason = (
            f"Failed: its window ({_when(r.starts_at)} – {_when(r.ends_at)}) passed before it could start "
            "(the reservation lifecycle was not running)."
        )
        if _move(r, State.FAILED, reason):
            done["failed"] += 1

    # 4. Start.
    for r in _holding(State.CONFIRMED, State.PREPARING).filter(starts_at__lte=now, ends_at__gt=now)[:BATCH]:
        reason = f"Active since {_when(r.starts_at)} on {_hosts(r)}."  # the end may move: not in words
        if _move(r, State.ACTIVE, reason):
            done["active"] += 1

    # 5. End.
    for r in _holding(State.ACTIVE).filter(ends_at__lte=now)[:BATCH]:
        reason = f"Completed at {_when(r.ends_at)}: the pool scales down and hosts are handed off."
        if _move(r, State.COMPLETED, reason):
            done["completed"] += 1

    # 6. Reminder.
    if fleet.reservation_reminder_minutes:
        soon = now + timedelta(minutes=fleet.reservation_reminder_minutes)
        due = _holding(State.ACTIVE).filter(ends_at__lte=soon, ends_at__gt=now, reminded_at__isnull=True)
        for r in due[:BATCH]:
            if _remind(r, now):
                done["reminded"] += 1

    # 7. Re-plan what is short.
    replanned = plan.replan(now=now)
    done["replanned"] = replanned.get("completed", 0)
    if any(done.values()):
        log.info("reservations reconciled", extra=done)
    return done


def _recipients(reservation: Reservation) -> list[str]:
    return sorted(
        {
            email
            for email in Membership.objects.filter(
                tenant=reservation.tenant, role__in=(Role.OWNER, Role.MEMBER), user__is_active=True
            ).values_list("user__email", flat=True)
            if email
        }
    )


def _remind(reservation: Reservation, now: datetime) -> bool:
    """Step 6: claim the reminder (conditional UPDATE), then send it; a failed send un-claims."""
    claimed = Reservation.objects.filter(pk=reservation.pk, reminded_at__isnull=True, state=State.ACTIVE).update(
        reminded_at=now
    )
    if not claimed:
        return False
    to = _recipients(reservation)
    if not to:
        return True
    pool = reservation.node_pool
    minutes = max(0, int((reservation.ends_at - now).total_seconds() // 60))
    label = reservation.name or f"{reservation.count} host{'s' if reservation.count != 1 else ''}"
    subject = f"[Teapot] {reservation.tenant.slug}: your reservation '{label}' ends in {minutes} minutes"
    body = (
        f"The reservation '{label}' of {reservation.tenant.name} ({reservation.count} host(s) in node pool "
        f"{pool.cluster.name}/{pool.name}) ends at {_when(reservation.ends_at)}, in {minutes} minutes.\n\n"
        "At the end the pool scales down and its hosts are cleaned and handed to the next booking: "
        "save your work before then.\n"
        "Need longer? Extend it from the reservation's page while its hosts are free.\n"
    )
    try:
        send_mail(subject, body, django_settings.DEFAULT_FROM_EMAIL, to, fail_silently=False)
    except Exception:
        log.warning("reservation reminder not sent; retried next run", extra={"reservation": reservation.pk})
        Reservation.objects.filter(pk=reservation.pk, reminded_at=now).update(reminded_at=None)
        return False
    return True
