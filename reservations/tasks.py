"""Celery tasks of reservations (thin, id-based, idempotent: STYLE.md §7)."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="teapot.reservations.reconcile", ignore_result=True)
def reservations_reconcile_task() -> dict:
    """One pass of the reservation lifecycle (beat every 10 s, and after each booking change).
    Runs never overlap: a run that finds another holding the lock skips (the next beat comes
    in seconds, and every step is level-triggered)."""
    from hosts.tasks import single_run
    from reservations.lifecycle import LOCK_RESERVATIONS, reservations_reconcile

    with single_run(LOCK_RESERVATIONS) as mine:
        if not mine:
            return {"skipped": True}
        return reservations_reconcile()


@shared_task(name="teapot.reservations.demo-seed", ignore_result=True)
def reservations_demo_seed_task() -> list[str]:
    """Demo mode only (beat entry added by settings when TEAPOT_DEMO): book the demo
    reservations once the demo fleet is inspected. Idempotent."""
    from django.conf import settings

    if not settings.TEAPOT_DEMO:
        return []
    from reservations.demo import seed_demo_reservations

    return seed_demo_reservations()
