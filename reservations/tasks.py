"""Celery tasks of reservations (thin, id-based, idempotent: STYLE.md §7)."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="teapot.reservations.reconcile", ignore_result=True)
def reservations_reconcile_task() -> None:
    from reservations.lifecycle import reservations_reconcile

    reservations_reconcile()
