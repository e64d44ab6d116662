"""Provisioning work in Celery (STYLE.md §7): thin, id-based, idempotent wrappers around
:mod:`tenants.provisioning`. A gateway that does not answer is retried with backoff; the beat
task ``teapot.tenants.reconcile`` reconciles every live cluster and pool that has work, so a
lost message or a killed worker only delays what the next run does."""

from __future__ import annotations

import logging

from celery import shared_task

from teapot_portal.gateway.base import GatewayError, Unavailable

log = logging.getLogger(__name__)


def _reconcile(reconcile, object_id: int, what: str, id_field: str) -> str:
    """Run one reconcile; a management cluster that does not answer is retried (the task's
    autoretry), any other gateway error is logged and left to the next beat run."""
    try:
        return reconcile(object_id)
    except GatewayError as exc:
        if isinstance(exc, Unavailable):
            raise
        log.warning(f"{what} reconcile failed", extra={id_field: object_id, "error": str(exc)})
        return "error"


# A gateway that does not answer: retried with backoff, then left to the beat run.
RETRYING = {"autoretry_for": (Unavailable,), "retry_backoff": 5, "retry_backoff_max": 120, "max_retries": 8}


@shared_task(name="teapot.tenants.cluster-reconcile", bind=True, ignore_result=True, **RETRYING)
def cluster_reconcile_task(self, cluster_id: int) -> str:
    from tenants.provisioning import cluster_reconcile

    return _reconcile(cluster_reconcile, cluster_id, "cluster", "cluster_id")


@shared_task(name="teapot.tenants.node-pool-reconcile", bind=True, ignore_result=True, **RETRYING)
def node_pool_reconcile_task(self, pool_id: int) -> str:
    from tenants.provisioning import node_pool_reconcile

    return _reconcile(node_pool_reconcile, pool_id, "node pool", "pool_id")


@shared_task(name="teapot.tenants.reconcile", ignore_result=True)
def reconcile_all_task() -> dict:
    """Every live cluster and node pool, in this worker (level-triggered; skips when another
    run holds the lock)."""
    from hosts.tasks import single_run
    from tenants.provisioning import LOCK_RECONCILE_ALL, reconcile_all

    with single_run(LOCK_RECONCILE_ALL) as mine:
        if not mine:
            return {"skipped": True}
        return reconcile_all()


@shared_task(name="teapot.tenants.purge-idempotency-keys", ignore_result=True)
def idempotency_keys_purge_task() -> int:
    """Delete every idempotency key past its 24 hours (the API also purges a user's own when they
    send a key; this catches users who never come back)."""
    from datetime import timedelta

    from django.utils import timezone

    from tenants.models import IDEMPOTENCY_TTL_HOURS, IdempotencyKey

    deleted, _ = IdempotencyKey.objects.filter(
        created_at__lt=timezone.now() - timedelta(hours=IDEMPOTENCY_TTL_HOURS)
    ).delete()
    if deleted:
        log.info("idempotency keys purged", extra={"deleted": deleted})
    return deleted
