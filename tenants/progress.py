"""How long until a node pool is ready: an ETA from the fleet's recorded provisioning times.

The sync records every ``provisioning_state`` change of a host (:class:`hosts.models.HostStateChange`),
so Teapot knows how long provisioning really takes on each kind of hardware:

1. **Learn.** One query pairs each change *to* ``provisioned`` with the host's change just
   before it; where that one was *to* ``provisioning``, the difference is one provisioning's
   duration. Only the last :data:`HISTORY_DAYS` days count, newest first, at most
   :data:`SAMPLE_LIMIT` of them.
2. **Summarise.** Per ``hardware_class``: the median of its last :data:`PER_CLASS` durations;
   for the whole fleet: the median of all sampled. Both cached for :data:`CACHE_SECONDS`
   (the detail page polls every 2 s; the figures move over hours).
3. **Estimate.** A host being provisioned needs its class's median (else the fleet's, else
   :data:`DEFAULT_SECONDS`) minus the time it has already spent; a host not yet allocated needs
   the fleet median in full. Hosts provision in parallel, so the pool's ETA is the longest of
   its remaining hosts', not their sum.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import median

from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from hosts.models import Host, HostStateChange

DEFAULT_SECONDS = 15 * 60  # what Metal³ provisioning takes on typical hardware
HISTORY_DAYS = 30
PER_CLASS = 20
SAMPLE_LIMIT = 2000
CACHE_KEY = "tenants:provisioning-latencies"
CACHE_SECONDS = 60


@dataclass(frozen=True)
class Latencies:
    """Median provisioning seconds per hardware class, the fleet's median, and the samples."""

    by_class: dict[str, float]
    counts: dict[str, int]
    fleet: float | None
    fleet_count: int
    p95_by_class: dict[str, float] = field(default_factory=dict)
    fleet_p95: float | None = None

    def p95_for_class(self, hardware_class: str | None) -> tuple[float, str]:
        """The 95th percentile (what a reservation's lead is planned on: most hosts are ready
        before the start, not half of them)."""
        if hardware_class and hardware_class in self.p95_by_class:
            return self.p95_by_class[hardware_class], "p95 of recent provisionings of this hardware"
        if self.fleet_p95 is not None:
            return self.fleet_p95, "p95 of the fleet's recent provisionings"
        return float(DEFAULT_SECONDS), "typical provisioning time (no history yet)"

    def for_class(self, hardware_class: str | None) -> tuple[float, str]:
        """(seconds, where the figure comes from, in words)."""
        if hardware_class and hardware_class in self.by_class:
            n = self.counts[hardware_class]
            return self.by_class[
                hardware_class
            ], f"median of {n} recent provisioning{'s' if n != 1 else ''} of this hardware"
        if self.fleet is not None:
            n = self.fleet_count
            return self.fleet, f"fleet median of {n} recent provisioning{'s' if n != 1 else ''}"
        return float(DEFAULT_SECONDS), "typical provisioning time (no history yet)"


def _durations() -> list[tuple[str, float]]:
    """(hardware class, seconds) of recent provisionings, newest first (one query)."""
    changes = HostStateChange._meta.db_table
    hosts = Host._meta.db_table
    since = timezone.now() - timedelta(days=HISTORY_DAYS)
    sql = f"""
        SELECT h.hardware_class, EXTRACT(EPOCH FROM (c.at - c.prev_at))
        FROM (
            SELECT host_id, new, at,
                   LAG(new) OVER w AS prev_new,
                   LAG(at) OVER w AS prev_at
            FROM {changes}
            WHERE field = 'provisioning_state' AND at >= %s
            WINDOW w AS (PARTITION BY host_id ORDER BY at, id)
        ) c
        JOIN {hosts} h ON h.id = c.host_id
        WHERE c.new = 'provisioned' AND c.prev_new = 'provisioning'
        ORDER BY c.at DESC
        LIMIT %s
    """  # noqa: S608 (the models' own tables; values are parameters)
    with connection.cursor() as cursor:
        cursor.execute(sql, [since, SAMPLE_LIMIT])
        return [(klass or "", float(seconds)) for klass, seconds in cursor.fetchall() if seconds is not None]


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile (no interpolation: a figure that was really measured)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def latencies() -> Latencies:
    """The recorded provisioning latencies (cached for a minute)."""
    found = cache.get(CACHE_KEY)
    if found is not None:
        return found
    per_class: dict[str, list[float]] = {}
    every: list[float] = []
    for klass, seconds in _durations():
        if seconds < 0:
            continue
        every.append(seconds)
        samples = per_class.setdefault(klass, [])
        if len(samples) < PER_CLASS:
            samples.append(seconds)
    found = Latencies(
        by_class={k: median(v) for k, v in per_class.items() if k},
        counts={k: len(v) for k, v in per_class.items() if k},
        fleet=median(every) if every else None,
        fleet_count=len(every),
        p95_by_class={k: percentile(v, 95) for k, v in per_class.items() if k},
        fleet_p95=percentile(every, 95) if every else None,
    )
    cache.set(CACHE_KEY, found, CACHE_SECONDS)
    return found


@dataclass(frozen=True)
class Eta:
    seconds: int  # until the last remaining host should be ready; 0: any moment now
    basis: str  # where the figure comes from, in words
    overdue: bool  # a host has taken longer than expected


@dataclass(frozen=True)
class Remaining:
    """A host on its way to ready: its hardware class and when its provisioning started (None:
    not started yet)."""

    hardware_class: str | None
    started_at: datetime | None


def pool_eta(
    remaining: Iterable[Remaining], *, unallocated: int, known: Latencies | None = None, now: datetime | None = None
) -> Eta | None:
    """The ETA of a pool whose ``remaining`` hosts are on their way and ``unallocated`` more are
    still to be found (see the module docstring). None when nothing remains."""
    remaining = list(remaining)
    if not remaining and unallocated <= 0:
        return None
    known = known or latencies()
    now = now or timezone.now()
    longest, basis, overdue = 0.0, "", False
    for host in remaining:
        expected, why = known.for_class(host.hardware_class)
        elapsed = (now - host.started_at).total_seconds() if host.started_at else 0.0
        left = expected - elapsed
        if left < 0:
            overdue, left = True, 0.0
        if left >= longest:
            longest, basis = left, why
    if unallocated > 0:
        expected, why = known.for_class(None)
        if expected >= longest:
            longest, basis = expected, why
    return Eta(seconds=round(longest), basis=basis, overdue=overdue)
