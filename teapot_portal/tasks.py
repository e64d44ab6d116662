"""Platform-level tasks. ``ping`` proves the round trip web → broker → worker → database."""

from __future__ import annotations

import logging

from celery import shared_task
from django.utils import timezone

log = logging.getLogger(__name__)


@shared_task(name="teapot.heartbeat")
def heartbeat(source: str = "beat") -> None:
    """Record that a worker ran a task (used by /readyz's worker check and the broker test)."""
    from teapot_portal.models import WorkerHeartbeat

    if not isinstance(source, str) or not source or len(source) > 100:
        log.warning("heartbeat ignored: bad source %r", source)
        return
    WorkerHeartbeat.objects.update_or_create(source=source, defaults={"seen_at": timezone.now()})
