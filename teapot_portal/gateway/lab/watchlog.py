"""The watch log: every visible change, in resourceVersion order, for watches to resume from.

Like etcd's compaction, the log is pruned to a retention window (the newest
:data:`EVENT_RETENTION` events, after every tick). The highest pruned resourceVersion is kept
(``LabClock.compacted_rv``): a watch from before it raises ``Expired``, and the caller relists.
"""

from __future__ import annotations

from django.db import transaction

from teapot_portal.gateway.lab.models import LabClock, LabEvent

EVENT_RETENTION = 10_000  # etcd keeps about five minutes of history; the lab keeps a count


def latest_rv() -> int:
    """The newest committed resourceVersion (what a list returns to watch from)."""
    newest = LabEvent.objects.order_by("-resource_version").values_list("resource_version", flat=True).first()
    compacted = LabClock.objects.filter(pk=1).values_list("compacted_rv", flat=True).first() or 0
    return max(newest or 0, compacted)


def compacted_rv() -> int:
    return LabClock.objects.filter(pk=1).values_list("compacted_rv", flat=True).first() or 0


def _compact_through(resource_version: int) -> int:
    with transaction.atomic():
        deleted, _ = LabEvent.objects.filter(resource_version__lte=resource_version).delete()
        clock = LabClock.get()
        if resource_version > clock.compacted_rv:
            LabClock.objects.filter(pk=clock.pk, compacted_rv__lt=resource_version).update(
                compacted_rv=resource_version
            )
    return deleted


def prune(keep: int = EVENT_RETENTION) -> int:
    """Drop all but the newest ``keep`` events; watches from before them then get Expired."""
    threshold = (
        LabEvent.objects.order_by("-resource_version").values_list("resource_version", flat=True)[keep : keep + 1]
    ).first()
    if threshold is None:
        return 0
    return _compact_through(threshold)


def prune_all() -> int:
    """Forget the whole log: every resourceVersion handed out so far is too old to watch from."""
    return _compact_through(latest_rv())
