"""The lab's periodic work: move the simulated clock, then run the controllers.

Scheduled by Celery beat (``teapot.lab.tick``, every few seconds) when ``TEAPOT_PROVISIONER`` is
``lab``. Safe to run on several workers at once: the clock sync counts real time once (row
lock) and each object's transition is made once (see :mod:`.controllers`).
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

log = logging.getLogger(__name__)


@shared_task(name="teapot.lab.tick", ignore_result=True)
def lab_tick() -> int:
    """Advance the lab clock by real elapsed time * ``TEAPOT_LAB_SPEED`` and tick; transitions made."""
    if getattr(settings, "TEAPOT_PROVISIONER", "lab") != "lab":
        return 0
    from teapot_portal.gateway.lab.controllers import tick
    from teapot_portal.gateway.lab.models import LabClock

    clock = LabClock.get()
    moved = clock.sync(settings.TEAPOT_LAB_SPEED)
    transitions = tick()
    if transitions:
        log.info("lab tick", extra={"simulated_seconds": round(moved, 1), "transitions": transitions})
    return transitions
