"""Reservation reads for the pages (STYLE.md §2): a tenant's bookings in a time range, the
calendar's events, the operators' host timeline and the capacity heat-map. Each is a constant
number of queries whatever the number of bookings or hosts (the page tests measure it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.backends.postgresql.psycopg_any import DateTimeTZRange
from django.db.models import Q, QuerySet
from django.utils import timezone

from hosts.models import Host
from hosts.requirements import RequirementError
from reservations.models import HostBooking, Reservation
from tenants.models import QuotaClass, Tenant
from tenants.quota import eligible_q, matching_host_ids

State = Reservation.State

# The calendar's colour per state (reservations.css has the same, for the list's badges).
STATE_TONES = {
    State.REQUESTED: "busy",
    State.CONFIRMED: "inuse",
    State.PREPARING: "busy",
    State.ACTIVE: "available",
    State.COMPLETED: "retired",
    State.REFUSED: "error",
    State.CANCELLED: "retired",
    State.PREEMPTED: "error",
    State.FAILED: "error",
}
TENANT_COLOURS = 8  # .tenant-0 … .tenant-7 in reservations.css


def tenant_reservations(tenant: Tenant) -> QuerySet[Reservation]:
    return Reservation.objects.filter(tenant=tenant).select_related("node_pool__cluster", "series")


def reservations_between(tenant: Tenant, start: datetime, end: datetime) -> QuerySet[Reservation]:
    """The tenant's bookings overlapping [start, end) (the calendar's visible range), less the
    refused and cancelled ones: they hold nothing (the list below the calendar keeps them)."""
    return (
        tenant_reservations(tenant)
        .filter(starts_at__lt=end, ends_at__gt=start)
        .exclude(state__in=(State.REFUSED, State.CANCELLED))
        .order_by("starts_at", "pk")
    )


def calendar_events(reservations, *, can_write: bool, url_of) -> list[dict[str, Any]]:
    """FullCalendar's event objects: coloured by state; the end can be dragged later (an
    extension) only on a booking that still holds its hosts, by someone who may write."""
    events = []
    for r in reservations:
        label = r.name or f"{r.count} host{'s' if r.count != 1 else ''}"
        events.append(
            {
                "id": str(r.pk),
                "title": f"{label} · {r.node_pool.cluster.name}/{r.node_pool.name}",
                "start": r.starts_at.isoformat(),
                "end": r.ends_at.isoformat(),
                "url": url_of(r),
                "classNames": [f"res-state-{r.state}"],
                "startEditable": False,
                "durationEditable": bool(can_write and r.state in Reservation.HOLDING),
                "extendedProps": {"state": r.get_state_display(), "count": r.count, "message": r.message},
            }
        )
    return events


# ----------------------------------------------------------------------------------- timeline


@dataclass
class Timeline:
    groups: list[dict[str, Any]]
    items: list[dict[str, Any]]
    classes: list[dict[str, Any]]
    tenants: list[dict[str, Any]]
    start: datetime
    end: datetime
    bookings: int


def host_timeline(*, start: datetime, end: datetime) -> Timeline:
    """One row per host (eligible hosts, and any other host booked in the window), grouped by
    hardware class; one item per host booking overlapping [start, end), coloured by tenant.
    Three queries."""
    window = DateTimeTZRange(start, end, "[)")
    rows = list(
        HostBooking.objects.filter(during__overlap=window)
        .select_related("reservation__tenant", "reservation__node_pool__cluster", "host")
        .only(
            "during",
            "host_id",
            "host__name",
            "host__hardware_class",
            "reservation__id",
            "reservation__name",
            "reservation__count",
            "reservation__state",
            "reservation__starts_at",
            "reservation__ends_at",
            "reservation__tenant__slug",
            "reservation__node_pool__name",
            "reservation__node_pool__cluster__name",
        )
        .order_by("host__name", "during")
    )
    found = Host.objects.filter(Q(eligible_q()) | Q(pk__in={b.host_id for b in rows})).values_list(
        "id", "name", "hardware_class", "system_product", "cpu_count", "ram_mib", "accelerators", "key_erase_capable"
    )
    hosts: dict[int, tuple[str, str]] = {}
    labels: dict[str, str] = {}
    for pk, name, klass, product, cpus, ram_mib, accelerators, key_erase in found:
        klass = klass or "unclassified"
        hosts[pk] = (name, klass)
        if klass not in labels:
            labels[klass] = class_label(product, cpus, ram_mib, accelerators, key_erase=key_erase)
    slugs = sorted({b.reservation.tenant.slug for b in rows})
    colour = {slug: i % TENANT_COLOURS for i, slug in enumerate(slugs)}
    # Within a class, the hosts with bookings in the window first: they are what one looks for.
    booked = {b.host_id for b in rows}
    ordered = sorted(hosts.items(), key=lambda kv: (labels[kv[1][1]], kv[0] not in booked, kv[1][0]))
    class_names = sorted(labels, key=lambda k: labels[k])
    groups = [
        {"id": pk, "content": name, "klass": klass, "title": f"{name}: {labels[klass]}", "className": "host-row"}
        for pk, (name, klass) in ordered
    ]
    items = []
    for b in rows:
        r = b.reservation
        label = f"{r.tenant.slug}: {r.name or str(r.count) + ' hosts'}"
        lower = b.during.lower
        upper = b.during.upper
        items.append(
            {
                "id": f"{b.host_id}-{r.id}",
                "group": b.host_id,
                "start": lower.isoformat(),
                "end": upper.isoformat(),
                "content": label,
                "title": (
                    f"{label} · {r.node_pool.cluster.name}/{r.node_pool.name} · {r.get_state_display()} · "
                    f"{timezone.localtime(r.starts_at):%a %d %b %H:%M} – {timezone.localtime(r.ends_at):%a %d %b %H:%M} "
                    f"(with preparation and hand-off: {timezone.localtime(lower):%H:%M} – {timezone.localtime(upper):%H:%M})"
                ),
                "className": f"tenant-{colour[r.tenant.slug]} res-state-{r.state}",
            }
        )
    counts: dict[str, int] = {}
    for _, (_, klass) in ordered:
        counts[klass] = counts.get(klass, 0) + 1
    return Timeline(
        groups=groups,
        items=items,
        classes=[{"name": k, "label": labels[k], "hosts": counts[k]} for k in class_names],
        tenants=[{"slug": s, "colour": colour[s]} for s in slugs],
        start=start,
        end=end,
        bookings=len({b.reservation_id for b in rows}),
    )


def class_label(product: str, cpus: int, ram_mib: int, accelerators, *, key_erase: bool = False) -> str:
    """A hardware class in words, from one of its hosts: "2× nvidia-a100 · 64 CPUs · 512 GiB"
    (and "key erase" when its disks are encrypted: the same model without is another class)."""
    parts = [", ".join(f"{a.get('count', 1)}× {a.get('type', '?')}" for a in accelerators or [])]
    parts += [f"{cpus} CPUs" if cpus else "", f"{ram_mib // 1024} GiB" if ram_mib else ""]
    parts.append("key erase" if key_erase else "")
    words = " · ".join(p for p in parts if p)
    return f"{product} ({words})" if product and words else product or words or "uninspected"


# ----------------------------------------------------------------------------------- heat-map


@dataclass
class HeatCell:
    start: datetime
    end: datetime
    hosts: int
    booked: int

    @property
    def free(self) -> int:
        return max(0, self.hosts - self.booked)

    @property
    def level(self) -> int | str:
        """0 (nothing free) … 4 (all free): the cell's colour class; "none" when no host can
        serve the class at all (nothing to book, but nothing taken either)."""
        if self.hosts <= 0:
            return "none"
        if self.free <= 0:
            return 0
        share = self.free / self.hosts
        return 4 if share >= 0.999 else 3 if share >= 0.5 else 2 if share >= 0.25 else 1


@dataclass
class HeatRow:
    quota_class: QuotaClass
    hosts: int
    cells: list[HeatCell] = field(default_factory=list)
    error: str = ""


@dataclass
class HeatMap:
    blocks: list[tuple[datetime, datetime]]
    days: list[tuple[datetime, int]]  # (day start, number of blocks in it) for the header
    rows: list[HeatRow]
    block_hours: int


def capacity_heatmap(days: int = 14, block_hours: int = 6, *, now: datetime | None = None) -> HeatMap:
    """Free hosts per quota class per block for the next ``days`` days: the eligible hosts that
    meet the class's requirement, minus the host counts of the holding bookings of the class
    whose occupancy overlaps the block (a booking counts for the whole block it touches: the
    map shows what is certainly free). Queries: the classes, the matching hosts of each class
    (one or two each), the overlapping bookings (one)."""
    if block_hours <= 0 or 24 % block_hours:
        raise ValueError("block_hours must divide a day: 1, 2, 3, 4, 6, 8, 12 or 24")
    now = timezone.localtime(now or timezone.now())
    first = now.replace(hour=(now.hour // block_hours) * block_hours, minute=0, second=0, microsecond=0)
    step = timedelta(hours=block_hours)
    per_day = 24 // block_hours
    count = days * per_day
    blocks = [(first + i * step, first + (i + 1) * step) for i in range(count)]
    end = blocks[-1][1] if blocks else first
    header: list[tuple[datetime, int]] = []
    for start, _ in blocks:
        day = start.replace(hour=0)
        if header and header[-1][0] == day:
            header[-1] = (day, header[-1][1] + 1)
        else:
            header.append((day, 1))
    classes = list(QuotaClass.objects.order_by("order", "name"))
    eligible = Host.objects.filter(eligible_q())
    held = list(
        Reservation.objects.holding()
        .filter(occupancy__overlap=DateTimeTZRange(first, end, "[)"))
        .values_list("node_pool__quota_class_id", "count", "occupancy")
    )
    rows = []
    for klass in classes:
        try:
            hosts = len(matching_host_ids(klass.get_requirement(), eligible))
            error = ""
        except RequirementError as exc:
            hosts, error = 0, f"The class's requirement cannot be used: {exc}"
        row = HeatRow(quota_class=klass, hosts=hosts, error=error)
        mine = [(count_, occ.lower, occ.upper) for class_id, count_, occ in held if class_id == klass.pk]
        for start, stop in blocks:
            booked = sum(n for n, lo, hi in mine if lo < stop and hi > start)
            row.cells.append(HeatCell(start=start, end=stop, hosts=hosts, booked=booked))
        rows.append(row)
    return HeatMap(blocks=blocks, days=header, rows=rows, block_hours=block_hours)


def operator_reservations(*, tenant: str = "", state: str = "", when: str = "") -> QuerySet[Reservation]:
    """Every tenant's bookings for the operators' list, filtered."""
    rows = Reservation.objects.select_related("tenant", "node_pool__cluster", "node_pool__quota_class", "series")
    if tenant:
        rows = rows.filter(tenant__slug=tenant)
    if state:
        rows = rows.filter(state=state)
    now = timezone.now()
    if when == "upcoming":
        rows = rows.filter(ends_at__gte=now).order_by("starts_at", "pk")
    elif when == "past":
        rows = rows.filter(ends_at__lt=now).order_by("-starts_at", "-pk")
    else:
        rows = rows.order_by("-starts_at", "-pk")
    return rows


def series_occurrences(reservation: Reservation) -> list[Reservation]:
    if not reservation.series_id:
        return []
    return list(Reservation.objects.filter(series_id=reservation.series_id).order_by("starts_at", "pk"))


def plan_rows(reservation: Reservation) -> list[dict[str, Any]]:
    """The host plan of one booking, with each host's state in the pool when it holds it (two
    queries)."""
    from tenants.models import PoolHost

    bookings = list(reservation.bookings.select_related("host").order_by("host__name"))
    held = {
        ph.host_id: ph
        for ph in PoolHost.objects.filter(
            pool_id=reservation.node_pool_id, host_id__in=[b.host_id for b in bookings], released_at__isnull=True
        ).only("host_id", "state")
    }
    return [
        {
            "host": b.host,
            "hardware": class_label(
                b.host.system_product,
                b.host.cpu_count,
                b.host.ram_mib,
                b.host.accelerators,
                key_erase=b.host.key_erase_capable,
            ),
            "from": b.during.lower,
            "until": b.during.upper,
            "pool_state": held[b.host_id].get_state_display() if b.host_id in held else "",
            "pool_state_value": held[b.host_id].state if b.host_id in held else "",
        }
        for b in bookings
    ]


def ending_soon(reservation: Reservation, minutes: int, *, now: datetime | None = None) -> int | None:
    """Minutes left when an active (or preparing) booking ends within ``minutes``; else None."""
    now = now or timezone.now()
    if reservation.state not in (State.ACTIVE, State.PREPARING):
        return None
    left = reservation.ends_at - now
    if timedelta(0) <= left <= timedelta(minutes=minutes):
        return max(0, int(left.total_seconds() // 60))
    return None
