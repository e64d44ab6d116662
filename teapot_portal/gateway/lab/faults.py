"""Faults on demand: make lab hosts fail the way real ones do.

``inject("provisioning_error", host="r1-n07", count=1)`` makes the next provisioning of that
host fail once; ``inject("power_error", probability=0.1)`` makes one power change in ten fail
on every host; ``inject("slow", host="r1-n07", multiplier=4)`` makes that host take four times
as long for everything. Draws are seeded per host and attempt, so a test sees the same
failures on every run.

Kinds (:class:`LabFault`): ``bmc_unreachable`` (registration error; power changes fail too),
``inspection_error``, ``provisioning_error``, ``power_error`` (power management error) and
``slow``.
"""

from __future__ import annotations

import random

from django.db import transaction
from django.db.models import F, Q

from teapot_portal.gateway.lab.models import LabFault

KINDS = {kind for kind, _ in LabFault.KINDS}


def inject(
    kind: str,
    host: str | None = None,
    probability: float | None = None,
    count: int | None = None,
    multiplier: float = 3.0,
) -> LabFault:
    """Add a fault: on ``host`` (or every host), always or with ``probability``, ``count`` times or until cleared."""
    if kind not in KINDS:
        raise ValueError(f"unknown fault {kind!r}; known: {', '.join(sorted(KINDS))}")
    if probability is not None and not 0 <= probability <= 1:
        raise ValueError("probability must be between 0 and 1")
    if count is not None and count < 1:
        raise ValueError("count must be at least 1")
    if multiplier <= 0:
        raise ValueError("multiplier must be positive")
    return LabFault.objects.create(
        kind=kind, host=host or "", probability=probability, remaining=count, multiplier=multiplier
    )


def clear(kind: str | None = None, host: str | None = None) -> int:
    """Remove faults (of ``kind``, on ``host``; both None: all of them). Returns how many."""
    faults = LabFault.objects.all()
    if kind is not None:
        faults = faults.filter(kind=kind)
    if host is not None:
        faults = faults.filter(host=host)
    return faults.delete()[0]


def _matching(kind: str, host: str):
    return LabFault.objects.filter(Q(host=host) | Q(host=""), kind=kind).order_by("-host", "pk")


def strikes(kind: str, host: str, draw: str, seed: int = 0) -> bool:
    """Does a ``kind`` fault hit ``host`` on this attempt (``draw`` names it)? Consumes a count."""
    for fault in _matching(kind, host):
        if fault.probability is not None:
            rng = random.Random(f"{seed}:{kind}:{host}:{draw}")
            if rng.random() >= fault.probability:
                continue
        if fault.remaining is None:
            return True
        with transaction.atomic():
            # A conditional decrement: two workers cannot both spend the last count.
            if LabFault.objects.filter(pk=fault.pk, remaining__gte=1).update(remaining=F("remaining") - 1):
                LabFault.objects.filter(pk=fault.pk, remaining=0).delete()
                return True
    return False


def slow_factor(host: str) -> float:
    """The product of the ``slow`` multipliers that apply to ``host`` (1.0 when none)."""
    factor = 1.0
    for fault in _matching(LabFault.SLOW, host):
        factor *= fault.multiplier
    return factor
