"""Demo bookings (``make run``, demo mode only), made through reservation_create like any other.

They can only be admitted once the demo fleet is inspected (admission counts eligible hosts), so
:func:`seed_demo_reservations` waits for that and is called by the reservations reconcile in demo
mode until it has run once (it is idempotent: a tenant that already has bookings is skipped).

* ml-research — "nightly batch": 2 × gpu-a100, guaranteed (within its guarantee of 4), weekdays
  20:00–06:00 Europe/Zurich for four weeks, in a new pool ``nightly`` of cluster ``train``;
* physics — "training run": 2 × gpu-a100 spread across racks, on demand, 48 h from next Tuesday
  09:00, in its ``gpu`` pool;
* genomics — "weekend assembly": 6 general hosts every Saturday 08:00–20:00 for four weeks, in a
  new pool ``weekend`` of cluster ``seq``;
* finance — "quarter-end risk run": 4 general hosts in 20 minutes for 3 hours, in a new pool
  ``batch`` of cluster ``risk`` — so a newcomer sees a booking prepare and start.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError
from django.utils import timezone

log = logging.getLogger(__name__)
ZONE = "Europe/Zurich"
MIN_ELIGIBLE = 40  # most of the demo fleet inspected: the bookings would be refused before that


def _local(days: int, hour: int, *, weekday: int | None = None):
    zone = ZoneInfo(ZONE)
    today = timezone.now().astimezone(zone).replace(hour=hour, minute=0, second=0, microsecond=0)
    day = today + timedelta(days=days)
    if weekday is not None:
        day += timedelta(days=(weekday - day.weekday()) % 7)
    return day


def seed_demo_reservations() -> list[str]:
    """Make the demo bookings that do not exist yet; returns what happened, in words ([] while
    the fleet is still coming up)."""
    from hosts.models import Host
    from reservations.models import Reservation
    from reservations.services import reservation_create
    from tenants.models import Cluster, NodePool, User
    from tenants.quota import eligible_q

    if Host.objects.filter(eligible_q()).count() < MIN_ELIGIBLE:
        return []
    made: list[str] = []

    def book(slug: str, cluster: str, owner: str, *, pool: str | None = None, new_pool: dict | None = None, **fields):
        if Reservation.objects.filter(tenant__slug=slug).exists():
            return
        found = Cluster.objects.filter(tenant__slug=slug, name=cluster, deleted_at__isnull=True).first()
        user = User.objects.filter(email=owner).first()
        if found is None or user is None:
            return
        node_pool = NodePool.objects.live().filter(cluster=found, name=pool).first() if pool else None
        if new_pool is not None:
            node_pool = NodePool.objects.live().filter(cluster=found, name=new_pool["name"]).first()
            new_pool = None if node_pool else {**new_pool, "cluster": found}
        try:
            r = reservation_create(
                tenant=found.tenant, node_pool=node_pool, new_pool=new_pool, acting_user=user, **fields
            )
        except ValidationError as exc:
            made.append(f"{slug}: booking not made ({'; '.join(exc.messages)})")
            return
        made.append(f"{slug}: {r.name} {r.get_state_display().lower()}")

    image = "ubuntu-24.04-k8s-1.31"
    tonight = _local(0, 20)
    if tonight < timezone.now() + timedelta(hours=1):
        tonight = _local(1, 20)
    book(
        "ml-research",
        "train",
        "maya@ml-research.example",
        new_pool={"name": "nightly", "quota_class": "gpu-a100", "image": image},
        name="nightly batch",
        count=2,
        priority="guaranteed",
        starts_at=tonight,
        duration=timedelta(hours=10),
        rrule=f"FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;UNTIL={(_local(28, 0)).astimezone(ZoneInfo('UTC')):%Y%m%dT%H%M%SZ}",
        tz_name=ZONE,
    )
    book(
        "physics",
        "vision",
        "alice@physics.example",
        pool="gpu",
        name="training run",
        count=2,
        policy={"mode": "spread", "level": "rack", "hard": True},
        starts_at=_local(1, 9, weekday=1),
        duration=timedelta(hours=48),
    )
    book(
        "genomics",
        "seq",
        "carol@genomics.example",
        new_pool={"name": "weekend", "quota_class": "general", "image": image},
        name="weekend assembly",
        count=6,
        starts_at=_local(1, 8, weekday=5),
        duration=timedelta(hours=12),
        rrule="FREQ=WEEKLY;BYDAY=SA;COUNT=4",
        tz_name=ZONE,
    )
    book(
        "finance",
        "risk",
        "frank@finance.example",
        new_pool={"name": "batch", "quota_class": "general", "image": image},
        name="quarter-end risk run",
        count=4,
        starts_at=(timezone.now() + timedelta(minutes=20)).replace(second=0, microsecond=0),
        duration=timedelta(hours=3),
    )
    if made:
        log.info("demo reservations", extra={"made": made})
    return made
