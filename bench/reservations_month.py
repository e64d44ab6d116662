"""A simulated month of bookings in the lab: Ready at the start, utilisation, pre-emptions, waits.

    make bench-reservations-month   # or: .venv/bin/python bench/reservations_month.py [--days 30] [--quick] [--seed 7]

One command, two runs of the **same demand trace** on the same lab fleet, each in its own
throw-away database (``<name>_bench_month_<run>_<pid>``, created, migrated and dropped like the other
benchmarks'; one run after the other, each in a child process, so that no cache or module state
leaks from one into the other):

* **teapot** — Teapot as it is: a booking's hosts start provisioning at ``start − lead``, the
  lead learned from the fleet's recorded provisioning times (p95 + a minute).
* **no anticipation** — the baseline: the same code with ``reservations.admission.lead_seconds``
  patched to return 0, so a booking's occupancy begins at its start and its hosts start
  provisioning then (the lifecycle skips *preparing* and makes it active at once).

Not part of ``make test``: figures are printed, nothing is asserted.

**The lab** (:mod:`teapot_portal.gateway.lab`) runs with its default, realistic timings —
provisioning ~15 min, metadata cleaning ~10 min, key erase ~1 min, ±10 % jitter per host and
phase — on 38 hosts (24 general, 8 gpu-a100, 6 highmem, in four racks). Before the month every
host is provisioned once and handed back (a fleet in service; see :meth:`Sim.burn_in`).

**The demand** (seeded, identical in both runs), four tenants with guaranteed minimums and maxima:

* **genomics** books its *nightly batch* (8 general hosts, guaranteed, weekdays 20:00–06:00
  Europe/Zurich, key-erase cleaning) as one RRULE series for the whole period, the afternoon
  before it begins; and each Monday–Thursday at ~17:00 a *GPU night* (2 × A100, guaranteed,
  22:00–04:00) for that night;
* **physics** and **ml-research** make *interactive* bookings with little notice (asked between
  08:00 and 17:00 for 30 min–3 h later, 2–6 h long; on demand, or guaranteed within the tenant's
  guarantee; fewer at weekends); physics keeps a standing pool of 2 general hosts;
* **analytics** is the *spot* user: a standing pool of 8 general hosts, 6 of them borrowed
  beyond its guarantee (taken back with notice when a booking needs them), and pre-emptible
  bookings at any hour (30 min–2 h notice, 2–8 h).

A refused request takes the refusal's *first possible start* when it is within the requester's
patience (12 h interactive, 24 h spot); that delay is reported.

**Time** is driven event by event, as Celery beat would drive it, all at the lab's time. A step
first lets the lab catch up (its controllers' ``tick``, then the host mirror's sync), then runs
rounds of beat — the reservation lifecycle (:func:`reservations.lifecycle.reservations_reconcile`),
the cluster and pool reconciles (:mod:`tenants.provisioning`), the lab again — until nothing
moves, so Teapot reacts within the same simulated moment (beat runs every 10 s). Then time jumps
to the next event: a request; a booking's reclaim, preparation, start or end; a notice running
out; a simulated controller's deadline (lab deadlines within ``--coalesce`` seconds are one
step); never further than ``--idle-step``. A host done provisioning gets a *mirror* step only
(the lab's first pass and the sync: the lead is learned from the times the sync records).
Starts are events: each booking's readiness is sampled at its exact start.

Two shortcuts keep a month within ~15 minutes per run on 2 cores, neither meant to change what
happens (both can be switched off to compare): a round reconciles the pools that were kicked (what
``reconcile_pool_after_commit`` queues in production) or are not settled, plus every pool and
cluster every ``--full-every`` simulated seconds (``--every-pool``: all, always); and a lab tick
is skipped when nothing was written to the lab and no deadline has come since the last one
(``--every-tick``).

Figures per run: bookings confirmed (at the asked start, or later), refused, completed,
pre-empted; **Ready at start** — the share of bookings whose pool had, at their start, at least
its standing size plus every booking of the pool then running as Ready workers (Nodes in the
lab) — for the promised bookings (guaranteed and on demand: the target) and, apart, for spot
bookings (promised nothing: they may wait for capacity by design); the wait from the start until
Ready (0 when on time; mean, p95, max); host utilisation (host-hours held by tenant pools, and of
them serving as Ready workers, over the fleet's host-hours; booked host-hours over the fleet's);
hosts taken with notice (from borrowed use, from spot bookings, from anything else); the lead
given and the lead learned at the end; steps and wall time.

Target (the issue): ≥ 99 % of bookings with all their hosts Ready at their start.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import p95, throwaway_database

TARGET = 0.99
ZONE = ZoneInfo("Europe/Zurich")
RACKS = ("r1", "r2", "r3", "r4")
RUNS = {
    "teapot": "Teapot (learned lead)",
    "baseline": "no anticipation (lead 0)",
}

# Tenants: (name, priority) and quotas per class: (guaranteed, maximum). genomics' general
# guarantee is its nightly batch's size (Fleet.nightly).
TENANTS = {
    "genomics": ("Genomics", 5, {"general": (None, 14), "gpu-a100": (2, 4)}),
    "physics": ("Physics", 10, {"general": (4, 12), "gpu-a100": (1, 6)}),
    "ml-research": ("ML research", 10, {"general": (0, 6), "gpu-a100": (2, 8), "highmem": (2, 6)}),
    "analytics": ("Analytics", 1, {"general": (2, 24)}),
}
GUARANTEED = {"physics-gpu": 1, "ml-gpu": 2, "ml-highmem": 2}  # interactive pools with a guarantee
# Pools: key -> (tenant, cluster, name, class, standing replicas, workload class, cleaning).
POOLS = {
    "nightly": ("genomics", "batch", "nightly", "general", 0, "on_demand", "key_erase"),
    "gpu-nightly": ("genomics", "batch", "gpu", "gpu-a100", 0, "on_demand", "standard"),
    "physics-cpu": ("physics", "vision", "cpu", "general", 2, "on_demand", "standard"),
    "physics-interactive": ("physics", "vision", "interactive", "general", 0, "on_demand", "standard"),
    "physics-gpu": ("physics", "vision", "gpu", "gpu-a100", 0, "on_demand", "standard"),
    "ml-gpu": ("ml-research", "ml", "gpu", "gpu-a100", 0, "on_demand", "standard"),
    "ml-highmem": ("ml-research", "ml", "highmem", "highmem", 0, "on_demand", "standard"),
    "borrow": ("analytics", "spot", "borrow", "general", 10, "on_demand", "standard"),
    "spot": ("analytics", "spot", "spot", "general", 0, "preemptible", "standard"),
}


@dataclass
class Request:
    """One request of the demand trace (the same in both runs)."""

    at: str  # ISO: when it is asked
    kind: str  # nightly, gpu-nightly, interactive, spot
    pool: str  # a key of POOLS
    count: int
    starts_at: str  # ISO: the asked start
    hours: float
    priority: str
    rrule: str = ""
    patience_hours: float = 0  # how much later a refused request accepts to start


@dataclass
class Fleet:
    general: int
    gpu: int
    highmem: int
    borrow: int  # analytics' standing pool size
    nightly: int  # the nightly batch's hosts (and genomics' general guarantee)

    @property
    def hosts(self) -> int:
        return self.general + self.gpu + self.highmem


# ============================================================================================ the trace


def _local(day: datetime, hour: float) -> datetime:
    """``hour`` o'clock (fractions are minutes) on the local date of ``day``, as an aware datetime."""
    base = datetime(day.year, day.month, day.day, tzinfo=ZONE)
    return (base + timedelta(hours=hour)).replace(tzinfo=None).replace(tzinfo=ZONE)


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _ceil5(moment: datetime) -> datetime:
    moment = moment.replace(second=0, microsecond=0)
    return moment + timedelta(minutes=(-moment.minute) % 5)


def make_trace(start: datetime, days: int, seed: int, nightly: int) -> list[Request]:
    """The demand trace from ``start`` (a Monday 00:00 in Europe/Zurich) for ``days`` days."""
    rng = random.Random(seed)
    out: list[Request] = []
    end = start + timedelta(days=days)
    local_days = [(start + timedelta(days=d)).astimezone(ZONE) for d in range(days)]
    weekdays = [d for d in local_days if d.weekday() < 5]
    # Nightly batch: one series for the whole period, booked the afternoon before it begins.
    if weekdays:
        first = _local(weekdays[0], 20)
        out.append(
            Request(
                at=(start - timedelta(hours=10)).isoformat(),
                kind="nightly",
                pool="nightly",
                count=nightly,
                starts_at=first.isoformat(),
                hours=10,
                priority="guaranteed",
                rrule=f"FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;COUNT={len(weekdays)}",
            )
        )
    for day in local_days:
        weekday = day.weekday() < 5
        # GPU night, Monday to Thursday, booked at ~17:00 for 22:00–04:00.
        if day.weekday() < 4:
            asked = _local(day, 17) + timedelta(minutes=rng.randint(0, 60))
            out.append(
                Request(
                    at=asked.isoformat(),
                    kind="gpu-nightly",
                    pool="gpu-nightly",
                    count=2,
                    starts_at=_local(day, 22).isoformat(),
                    hours=6,
                    priority="guaranteed",
                )
            )
        # Interactive daytime bookings with little notice.
        for _ in range(_poisson(rng, 6.0 if weekday else 1.5)):
            opens, span = (8, 9) if weekday else (10, 8)
            asked = _local(day, opens) + timedelta(minutes=rng.randint(0, span * 60))
            pool = rng.choices(["physics-interactive", "physics-gpu", "ml-gpu", "ml-highmem"], [45, 20, 25, 10])[0]
            count = {"physics-interactive": rng.randint(1, 6)}.get(pool)
            count = count or (rng.randint(1, 3) if pool.endswith("gpu") else rng.randint(1, 2))
            # Within its guarantee a tenant often books it guaranteed; beyond it, on demand.
            guaranteed = count <= GUARANTEED.get(pool, 0) and rng.random() < 0.5
            out.append(
                Request(
                    at=asked.isoformat(),
                    kind="interactive",
                    pool=pool,
                    count=count,
                    starts_at=_ceil5(asked + timedelta(minutes=rng.randint(30, 180))).isoformat(),
                    hours=rng.choice([2, 3, 4, 5, 6]),
                    priority="guaranteed" if guaranteed else "on_demand",
                    patience_hours=12,
                )
            )
        # Spot: pre-emptible bookings at any hour.
        for _ in range(_poisson(rng, 3.0)):
            asked = _local(day, 0) + timedelta(minutes=rng.randint(0, 24 * 60 - 1))
            out.append(
                Request(
                    at=asked.isoformat(),
                    kind="spot",
                    pool="spot",
                    count=rng.randint(2, 5),
                    starts_at=_ceil5(asked + timedelta(minutes=rng.randint(30, 120))).isoformat(),
                    hours=rng.randint(2, 8),
                    priority="preemptible",
                    patience_hours=24,
                )
            )
    out = [r for r in out if datetime.fromisoformat(r.at) < end]
    out.sort(key=lambda r: (r.at, r.kind))
    return out


def first_monday(after: datetime) -> datetime:
    """The first Monday 00:00 (Europe/Zurich) at least a day after ``after``."""
    day = (after + timedelta(days=1)).astimezone(ZONE)
    day = day + timedelta(days=(7 - day.weekday()) % 7)
    return datetime(day.year, day.month, day.day, tzinfo=ZONE)


# ============================================================================================ one run


@dataclass
class Track:
    """One booking (a reservation) as the benchmark follows it."""

    id: int
    kind: str
    pool: str
    count: int
    starts_at: datetime
    ends_at: datetime
    asked_at: datetime
    pushed_seconds: float = 0  # how much later than asked it starts (a refused request rebooked)
    sampled: bool = False
    sample_lag: float = 0  # how long after its start it was sampled (the step granularity)
    ready_at_start: bool | None = None
    ready_after: float | None = None  # seconds from the start until all its hosts were Ready
    preempted_at: datetime | None = None
    preempted_before_start: bool = False
    never_ready: bool = False
    state: str = ""  # "over" once its end has passed; a state when it never ran


@dataclass
class Result:
    run: str
    days: int
    hosts: int
    requests: int = 0
    bookings: int = 0
    refused: int = 0  # requests refused for good (no start within the requester's patience)
    refusals: int = 0  # refusals seen, including those rebooked later
    pushed: list = field(default_factory=list)  # seconds later than asked, per rebooked request
    started: int = 0
    completed: int = 0
    preempted: int = 0
    preempted_before_start: int = 0
    samples: list = field(default_factory=list)  # [kind, Ready at its start, wait (s), never Ready] per booking
    max_sample_lag: float = 0
    fleet_hours: float = 0
    held_hours: float = 0
    serving_hours: float = 0
    booked_hours: float = 0
    taken: dict = field(default_factory=dict)  # hosts taken with notice, by the use they left: borrowed, spot, other
    lead_default: float = 0
    lead_learned: dict = field(default_factory=dict)
    lead_used: dict = field(default_factory=dict)
    steps: int = 0
    rounds: int = 0
    ticks_skipped: int = 0
    pool_reconciles: int = 0
    phases: dict = field(default_factory=dict)
    step_ms: float = 0
    setup_seconds: float = 0
    sim_seconds: float = 0
    stuck: list = field(default_factory=list)
    errors: int = 0


class Sim:
    """The lab, Teapot on top of it, and the trace, at the lab's time."""

    def __init__(self, args, run: str, start: datetime, fleet: Fleet):
        from reservations import admission
        from teapot_portal.gateway.lab.controllers import Timings

        self.args = args
        self.run_name = run
        self.start = start
        self.end = start + timedelta(days=args.days)
        self.fleet = fleet
        self.timings = Timings()  # the realistic defaults, jitter on
        self.real_lead = admission.lead_seconds
        self.result = Result(run=run, days=args.days, hosts=fleet.hosts)
        self.tracks: dict[int, Track] = {}
        self.pools: dict = {}
        self.fingerprint = None
        self.kicked: set[int] = set()
        self.queue: list[Request] = []
        self.next_full = start - timedelta(days=1)  # the first step reconciles everything
        self.deadlines: list[float] = []  # the lab's timed phases, as of the last tick
        self.reactions: list[float] = []  # those Teapot reacts to (a host done cleaning, say)
        self.reasons: dict[str, int] = {}  # why each step came, for --verbose
        self.last_tick = 0.0
        self.last_rv = None
        self.notice = 120

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        from django.core.cache import cache

        from hosts.classify import hosts_classify
        from hosts.models import FleetSettings, Host
        from teapot_portal.gateway.builders import HostEnrolment
        from teapot_portal.gateway.lab import profiles
        from teapot_portal.gateway.lab.gateway import LabGateway
        from teapot_portal.gateway.lab.models import LabClock
        from tenants.clusters import cluster_create, node_pool_create
        from tenants.models import Tenant
        from tests.inventory import ensure_rules
        from tests.tenancy import catalogue, quota

        began = time.perf_counter()
        # The lab's clock starts Sunday noon before the month: the fleet is inspected, the
        # clusters come up, standing pools fill, and the nightly series is booked at 14:00.
        LabClock.objects.update_or_create(pk=1, defaults={"current": self.start - timedelta(hours=12)})
        self.clock = LabClock.get()
        self.gw = LabGateway("teapot", self.clock)
        FleetSettings.objects.filter(pk=1).update(preemption_notice_seconds=120, reservation_reminder_minutes=60)
        ensure_rules()
        where: dict[str, dict] = {}
        kinds = [("gen", "general", self.fleet.general), ("gpu", "gpu-a100", self.fleet.gpu)]
        kinds.append(("hm", "highmem", self.fleet.highmem))
        n = 0
        for prefix, profile, count in kinds:
            for i in range(count):
                name = f"{prefix}-{i:02d}"
                profiles.lab_host_profile_set(name, profile)
                self.gw.enrol_host(
                    HostEnrolment(
                        name=name,
                        bmc_address=f"redfish+https://10.0.4.{n + 10}/redfish/v1/Systems/1",
                        bmc_username="admin",
                        bmc_password="lab-bmc-pw",  # noqa: S106 (the lab's simulated BMC)
                        boot_mac=f"52:54:00:12:35:{n:02x}",
                    )
                )
                where[name] = {"site": "lab", "room": "a", "row": "1", "rack": RACKS[i % len(RACKS)]}
                n += 1
        for _ in range(60):
            self.tick(force=True)
            for host in Host.objects.filter(name__in=list(where), location={}):
                host.location = where[host.name]
                host.save(update_fields=["location"])
            hosts_classify()
            states = set(Host.objects.values_list("provisioning_state", flat=True))
            if states == {"available"} and Host.objects.count() == len(where):
                break
            self.clock.advance(60)
        else:
            raise SystemExit(f"the lab fleet did not become available: {states}")

        cat = catalogue()
        self.burn_in(cat)
        clusters = {}
        for slug, (name, priority, quotas) in TENANTS.items():
            tenant, _ = Tenant.objects.get_or_create(slug=slug, defaults={"name": name, "priority": priority})
            for klass, (guaranteed, maximum) in quotas.items():
                quota(tenant, cat.classes[klass], self.fleet.nightly if guaranteed is None else guaranteed, maximum)
        for key, (slug, cluster, name, klass, replicas, workload, cleaning) in POOLS.items():
            tenant = Tenant.objects.get(slug=slug)
            if (slug, cluster) not in clusters:
                clusters[(slug, cluster)] = cluster_create(tenant=tenant, name=cluster, actor="bench")
            if key == "borrow":
                replicas = self.fleet.borrow
            self.pools[key] = node_pool_create(
                cluster=clusters[(slug, cluster)],
                name=name,
                quota_class=cat.classes[klass],
                image=cat.image,
                replicas=replicas,
                workload_class=workload,
                cleaning=cleaning,
                actor="bench",
            )
        cache.clear()
        self.clusters = clusters
        self.result.setup_seconds = time.perf_counter() - began

    def burn_in(self, cat) -> None:
        """Every host provisioned once and handed back before the month, as in a fleet in service
        (and the provisioning history the lead is learned from starts there). The lab charges a
        host's first cleaning since inspection to its first provisioning (~25 min instead of
        ~15), which a real Metal³ does when the host becomes available: without this, a host
        used for the first time late in the month is late against a lead learned from
        re-provisionings."""
        from hosts.models import Host
        from tenants.clusters import cluster_create, cluster_delete, node_pool_create
        from tenants.models import Cluster, Tenant
        from tests.tenancy import quota

        tenant, _ = Tenant.objects.get_or_create(slug="burn-in", defaults={"name": "Burn-in", "priority": 0})
        sizes = {"highmem": self.fleet.highmem, "gpu-a100": self.fleet.gpu, "general": self.fleet.general}
        cluster = cluster_create(tenant=tenant, name="burn-in", actor="bench")
        for klass, n in sizes.items():  # highmem first: a highmem host also serves general
            quota(tenant, cat.classes[klass], 0, self.fleet.hosts)
            node_pool_create(
                cluster=cluster, name=klass, quota_class=cat.classes[klass], image=cat.image, replicas=n, actor="bench"
            )
        self.settle(lambda: not Host.objects.exclude(provisioning_state="provisioned").exists())
        cluster_delete(cluster=Cluster.objects.get(pk=cluster.pk), actor="bench")
        self.settle(
            lambda: (
                not Host.objects.exclude(provisioning_state="available").exists()
                and not Cluster.objects.filter(pk=cluster.pk, deleted_at__isnull=True).exists()
            )
        )

    def settle(self, done, limit: timedelta = timedelta(hours=3)) -> None:
        """Steps (event to event, at most 5 minutes apart) until ``done()``."""
        now = self.now()
        until = now + limit
        while not done():
            if now > until:
                raise SystemExit("the lab did not settle during the setup")
            self.step(now)
            nxt, _ = self.next_event(now)
            nxt = min(nxt or now + timedelta(minutes=5), now + timedelta(minutes=5))
            self.clock.advance(max(1.0, (nxt - now).total_seconds()))
            now = self.now()

    # ------------------------------------------------------------------ one step (what beat does)

    def now(self) -> datetime:
        return self.clock.now()

    def tick(self, *, force: bool = False, passes: int = 50) -> int:
        """The lab's controllers at the lab's time, then the host mirror's sync (observed then).

        Skipped when it cannot do anything: nothing was written to the lab since the last tick
        (its resource version did not move) and no simulated deadline has come since — the lab is
        level-triggered and its only clocks are those deadlines, so that tick would be a no-op."""
        from django.db import connection

        from hosts.services import hosts_sync
        from teapot_portal.gateway.lab.controllers import tick
        from teapot_portal.gateway.lab.models import RESOURCE_VERSION_SEQUENCE, LabObject

        now = self.now()
        with self.timed("lab tick + sync"):
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT last_value FROM {RESOURCE_VERSION_SEQUENCE}")  # noqa: S608 (a constant)
                rv = cursor.fetchone()[0]
            due = any(self.last_tick < d <= now.timestamp() for d in self.deadlines)
            if not force and not self.args.every_tick and rv == self.last_rv and not due:
                self.result.ticks_skipped += 1
                return 0
            moved = tick(now=now, timings=self.timings, max_passes=passes)
            records, _ = self.gw.list_hosts()
            hosts_sync(records=records, complete=True, now=now)
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT last_value FROM {RESOURCE_VERSION_SEQUENCE}")  # noqa: S608
                self.last_rv = cursor.fetchone()[0] if passes > 1 else None  # a partial tick: the next one runs
            self.last_tick = now.timestamp()
            self.deadlines, self.reactions = [], []
            for internal, status in LabObject.objects.filter(
                kind__in=("BareMetalHost", "KamajiControlPlane")
            ).values_list("internal", "status"):
                state = ((status or {}).get("provisioning") or {}).get("state")
                for value, react in (
                    (internal.get("deadline"), state != "provisioning"),
                    ((internal.get("power") or {}).get("due"), False),
                    (internal.get("tcp_ready_at"), True),
                ):
                    if value is not None and float(value) > self.last_tick:
                        self.deadlines.append(float(value))
                        if react:
                            self.reactions.append(float(value))
        return moved

    def kick(self, pool_id: int) -> None:
        """What ``reconcile_pool_after_commit`` queues in production: this pool's reconcile."""
        self.kicked.add(pool_id)

    def unsettled(self) -> set[int]:
        """Pools whose reconcile may have something to do: not Ready, short or over, hosts on
        their way in or out, under notice, or incoming from a pre-emption. A settled pool's
        reconcile changes nothing (it is level-triggered), so the loop may skip it."""
        from django.db.models import F, Q

        from tenants.models import NodePool, PoolHost

        live = Q(pool_hosts__released_at__isnull=True)
        moving = (PoolHost.State.ALLOCATED, PoolHost.State.PROVISIONING, PoolHost.State.RELEASING)
        return set(
            NodePool.objects.live()
            .filter(
                ~Q(phase=NodePool.Phase.READY)
                | ~Q(desired=F("ready"))
                | (live & Q(pool_hosts__state__in=moving))
                | (live & Q(pool_hosts__preempt_at__isnull=False))
                | Q(preempting__released_at__isnull=True, preempting__isnull=False)
            )
            .values_list("pk", flat=True)
            .distinct()
        )

    def beat(self, now: datetime, *, full: bool) -> bool:
        """One round of what beat does at ``now``: the lifecycle, the reconciles, the lab's
        controllers and the mirror; whether anything moved. ``full``: every cluster and pool
        (as ``reconcile_all``); otherwise the pools kicked since the last round and those
        not settled."""
        from reservations.lifecycle import reservations_reconcile
        from tenants import provisioning
        from tenants.models import Cluster

        with self.timed("reservations lifecycle"):
            done = reservations_reconcile(now=now)
        if os.environ.get("MONTH_DEBUG"):
            self.debug_short(now)
        with self.timed("cluster + pool reconciles"):
            if full or self.args.every_pool:
                provisioning.reconcile_all(gateway=self.gw, now=now)
                self.kicked.clear()
            else:
                for pk in Cluster.objects.live().exclude(phase=Cluster.Phase.READY).values_list("pk", flat=True):
                    provisioning.cluster_reconcile(pk, gateway=self.gw)
                pools, self.kicked = self.kicked | self.unsettled(), set()
                for pk in sorted(pools):
                    provisioning.node_pool_reconcile(pk, gateway=self.gw, now=now)
                self.result.pool_reconciles += len(pools)
        moved = self.tick()
        with self.timed("bookkeeping"):
            before, self.fingerprint = self.fingerprint, self._fingerprint()
        return bool(moved) or any(done.values()) or before != self.fingerprint or bool(self.kicked)

    def debug_short(self, now: datetime) -> None:
        from django.db.models import Count, F

        from hosts.models import FleetSettings
        from reservations import plan
        from reservations.models import Reservation

        levels = list(FleetSettings.load().topology_levels)
        short = (
            Reservation.objects.filter(state="confirmed", prepare_at__lte=now + timedelta(minutes=15))
            .annotate(n=Count("bookings"))
            .filter(n__lt=F("count"))
        )
        for r in short:
            have = set(r.bookings.values_list("host_id", flat=True))
            tiers = []
            for free_now_only, over_spot in ((True, False), (False, False), (False, True)):
                c = plan._candidates(r, levels, have, free_now_only=free_now_only, over_spot=over_spot)
                tiers.append(len(c))
            print(
                f"  DEBUG {now.astimezone(ZONE):%a %H:%M:%S} short plan #{r.pk} {r.name} {len(have)}/{r.count} "
                f"prio {r.priority} candidates per tier {tiers}",
                file=sys.stderr,
            )

    def step(self, now: datetime, *, mirror_only: bool = False) -> int:
        """The lab catches up to ``now`` (its controllers, then the mirror's sync), then rounds
        of beat until nothing moves (Teapot reacts to the lab within the same simulated moment:
        beat runs every 10 s); returns the rounds run. ``mirror_only``: only the lab and the
        mirror (a host done provisioning needs nothing from Teapot, but the sync must see it
        when it happens: the lead is learned from the times the sync records)."""
        if mirror_only:
            # One pass: the BareMetalHosts (reconciled first) reach their new state and the sync
            # records it now; the rest of the controllers' work waits for the next full tick.
            quiet = logging.getLogger("teapot_portal.gateway.lab.controllers")
            level, quiet.level = quiet.level, logging.ERROR  # "tick stopped after 1 passes with work left"
            try:
                self.tick(passes=1)
            finally:
                quiet.level = level
            return 0
        self.tick()
        full = now >= self.next_full
        if full:
            self.next_full = now + timedelta(seconds=self.args.full_every)
        for rounds in range(1, 7):
            if not self.beat(now, full=full and rounds == 1):
                return rounds
        return rounds

    def _fingerprint(self) -> tuple:
        from django.db.models import Count, Max, Q, Sum

        from reservations.models import HostBooking
        from tenants.models import NodePool, PoolHost

        hosts = PoolHost.objects.aggregate(
            n=Count("pk"),
            last=Max("pk"),
            released=Count("released_at"),
            noticed=Count("preempt_at"),
            ready=Count("pk", filter=Q(state=PoolHost.State.READY)),
            releasing=Count("pk", filter=Q(state=PoolHost.State.RELEASING)),
            guaranteed=Count("pk", filter=Q(guaranteed=True, released_at__isnull=True)),
        )
        pools = NodePool.objects.aggregate(desired=Sum("desired"), ready=Sum("ready"))
        return (*hosts.values(), *pools.values(), HostBooking.objects.count())

    def next_event(self, now: datetime) -> tuple[datetime | None, str]:
        """The next moment anything is due, and what: a request, a booking's reclaim / prepare /
        start / end, a notice running out, a simulated controller's deadline that Teapot reacts
        to (a host done cleaning or inspecting, a control plane up — a host done provisioning
        needs nothing from Teapot, so it is an event only while a booking waits for its hosts);
        the deadlines within ``--coalesce`` seconds of the first one are taken together."""
        from django.db.models import Exists, Min, OuterRef, Q

        from hosts.handoff import METADATA_SECONDS
        from reservations.models import Reservation
        from tenants.models import PoolHost

        found: list[tuple[datetime, str]] = []
        if self.queue:
            found.append((datetime.fromisoformat(self.queue[0].at), "request"))
        reclaim = timedelta(seconds=self.notice + METADATA_SECONDS)
        # Reclaiming early matters only to a booking whose planned hosts another pool holds.
        held_elsewhere = PoolHost.objects.filter(
            released_at__isnull=True, host__bookings__reservation=OuterRef("pk")
        ).exclude(pool=OuterRef("node_pool"))
        marks = Reservation.objects.filter(state__in=Reservation.HOLDING).aggregate(
            reclaim=Min(
                "prepare_at", filter=Q(state="confirmed", prepare_at__gt=now + reclaim) & Q(Exists(held_elsewhere))
            ),
            prepare=Min("prepare_at", filter=Q(state="confirmed", prepare_at__gt=now)),
            start=Min("starts_at", filter=Q(starts_at__gt=now)),
            end=Min("ends_at", filter=Q(ends_at__gt=now)),
        )
        if marks["reclaim"]:
            marks["reclaim"] -= reclaim
        found += [(m, what) for what, m in marks.items() if m]
        notice = PoolHost.objects.filter(released_at__isnull=True, preempt_at__gt=now).aggregate(m=Min("preempt_at"))
        if notice["m"]:
            found.append((notice["m"], "notice"))
        deadlines = [d for d in self.deadlines if d > now.timestamp()]
        if deadlines:
            first = min(deadlines)
            window = [d for d in deadlines if d <= first + self.args.coalesce]
            waiting = any(t.sampled and t.ready_after is None for t in self.tracks.values())
            react = waiting or any(d in self.reactions for d in window)
            found.append(
                (
                    datetime.fromtimestamp(max(window), now.tzinfo) + timedelta(milliseconds=1),
                    "lab" if react else "mirror",
                )
            )
        later = [f for f in found if f[0] > now]
        return min(later) if later else (None, "")

    @contextmanager
    def timed(self, what: str):
        began = time.perf_counter()
        try:
            yield
        finally:
            self.result.phases[what] = self.result.phases.get(what, 0.0) + time.perf_counter() - began

    # ------------------------------------------------------------------ requests

    def request(self, req: Request, now: datetime) -> None:
        from django.core.exceptions import ValidationError

        from reservations.models import Reservation
        from reservations.services import reservation_create

        pool = self.pools[req.pool]
        starts_at = datetime.fromisoformat(req.starts_at)
        asked = starts_at
        self.result.requests += 1
        for _attempt in range(4):
            try:
                r = reservation_create(
                    tenant=pool.cluster.tenant,
                    node_pool=pool,
                    count=req.count,
                    starts_at=starts_at,
                    duration=req.hours,
                    priority=req.priority,
                    name=req.kind,
                    rrule=req.rrule,
                    tz_name="Europe/Zurich" if req.rrule else "",
                    now=now,
                )
            except ValidationError as exc:
                print(f"  invalid request {req}: {exc}", file=sys.stderr)
                self.result.refused += 1
                return
            if r.state == Reservation.State.CONFIRMED:
                if starts_at > asked:
                    self.result.pushed.append((starts_at - asked).total_seconds())
                rows = Reservation.objects.filter(series_id=r.series_id) if r.series_id else [r]
                for row in rows:
                    self.tracks[row.pk] = Track(
                        id=row.pk,
                        kind=req.kind,
                        pool=req.pool,
                        count=row.count,
                        starts_at=row.starts_at,
                        ends_at=row.ends_at,
                        asked_at=now,
                        pushed_seconds=(starts_at - asked).total_seconds(),
                    )
                    self.result.bookings += 1
                return
            self.result.refusals += 1
            if self.args.verbose:
                print(f"  [{self.run_name}] {now:%a %H:%M} refused {req.kind} {req.pool}: {r.message}", file=sys.stderr)
            earliest = (r.refusal or {}).get("earliest_start")
            if not earliest or req.rrule:
                break
            later = datetime.fromisoformat(earliest)
            if later - asked > timedelta(hours=req.patience_hours) or later <= starts_at:
                break
            starts_at = later
        self.result.refused += 1

    # ------------------------------------------------------------------ measuring

    def _ready_hosts(self) -> dict[int, set[str]]:
        """Pool id → the hosts serving it as Ready workers (Machines with a Node), from the lab."""
        ready: dict[int, set[str]] = {}
        by_name = {p.object_name: p.pk for p in self.pools.values()}
        for cluster in self.clusters.values():
            for binding in self.gw.machine_bindings(cluster.object_name):
                if binding.node and binding.deployment in by_name:
                    ready.setdefault(by_name[binding.deployment], set()).add(binding.host)
        return ready

    def sample(self, now: datetime) -> None:
        """Readiness of the bookings whose start has come, and pre-emptions.

        A booking is Ready when its pool has, as Ready workers, at least its standing size plus
        every booking of the pool running then — not counting hosts under notice (leaving), nor
        the hosts Ready early for a booking of the pool that has not started (those are its)."""
        from reservations.models import HostBooking, Reservation
        from tenants.models import PoolHost

        open_ = [
            t
            for t in self.tracks.values()
            if t.starts_at <= now and t.starts_at < self.end and t.preempted_at is None and t.state == ""
        ]
        if not open_:
            return
        states = dict(Reservation.objects.filter(pk__in=[t.id for t in open_]).values_list("pk", "state"))
        for t in open_:
            if states.get(t.id) == Reservation.State.PREEMPTED:
                t.preempted_at = now
                if not t.sampled:
                    t.preempted_before_start = t.sampled = True
                if t.ready_after is None:
                    t.ready_after = -1.0  # not measured further
            elif now >= t.ends_at:
                t.state = "over"
        due = [t for t in open_ if t.ready_after is None and t.preempted_at is None]
        if not due:
            return
        held = Reservation.objects.filter(state__in=(Reservation.State.PREPARING, Reservation.State.ACTIVE))
        running: dict[int, int] = {}
        for pool_id, count in held.filter(starts_at__lte=now, ends_at__gt=now).values_list("node_pool_id", "count"):
            running[pool_id] = running.get(pool_id, 0) + count
        early: dict[int, set[str]] = {}
        for pool_id, name in HostBooking.objects.filter(reservation__in=held.filter(starts_at__gt=now)).values_list(
            "reservation__node_pool_id", "host__name"
        ):
            early.setdefault(pool_id, set()).add(name)
        leaving = set(
            PoolHost.objects.filter(released_at__isnull=True, preempt_at__isnull=False).values_list(
                "host__name", flat=True
            )
        )
        ready_hosts = self._ready_hosts()
        for t in due:
            state = states.get(t.id, "")
            pool = self.pools[t.pool]
            if state not in (Reservation.State.ACTIVE, Reservation.State.PREPARING, Reservation.State.COMPLETED):
                t.ready_after = -1.0
                t.state = state or "gone"
                continue
            ready = len(ready_hosts.get(pool.pk, set()) - leaving - early.get(pool.pk, set()))
            need = pool.replicas + running.get(pool.pk, 0)
            ok = ready >= need and state != Reservation.State.COMPLETED
            if not t.sampled:
                t.sampled = True
                t.sample_lag = (now - t.starts_at).total_seconds()
                t.ready_at_start = ok
                if not ok and self.args.verbose:
                    self.explain(t, now, need, ready)
            if ok:
                t.ready_after = 0.0 if t.ready_at_start else (now - t.starts_at).total_seconds()
            elif now >= t.ends_at or state == Reservation.State.COMPLETED:
                t.ready_after = (t.ends_at - t.starts_at).total_seconds()
                t.never_ready = True

    def explain(self, t: Track, now: datetime, need: int, ready: int) -> None:
        """Why a booking is not Ready at its start (``--verbose``): its plan, its pool's hosts."""
        from django.db.models import Q

        from reservations.models import Reservation
        from tenants.models import NodePool, PoolHost

        r = Reservation.objects.get(pk=t.id)
        pool = NodePool.objects.get(pk=r.node_pool_id)
        local = now.astimezone(ZONE)
        print(
            f"  [{self.run_name}] {local:%a %H:%M} NOT READY {t.kind} #{r.pk} {pool.name} ×{r.count} "
            f"(lead {(r.starts_at - r.prepare_at).total_seconds() / 60:.1f} min, asked "
            f"{(r.starts_at - t.asked_at).total_seconds() / 60:.0f} min ahead): {ready}/{need} Ready; "
            f"pool {pool.phase} {pool.ready}/{pool.desired}: {pool.message[:200]}",
            file=sys.stderr,
        )
        from collections import Counter

        from reservations.models import HostBooking

        others = Counter(
            HostBooking.objects.filter(during__overlap=r.occupancy)
            .exclude(reservation=r)
            .values_list("reservation__priority", flat=True)
        )
        print(f"      other plans overlapping its occupancy: {dict(others)}", file=sys.stderr)
        for b in r.bookings.select_related("host"):
            print(
                f"      planned {b.host.name} {b.during.lower.astimezone(ZONE):%H:%M}–{b.during.upper.astimezone(ZONE):%H:%M}"
                f" bmh {b.host.provisioning_state}",
                file=sys.stderr,
            )
        for ph in PoolHost.objects.filter(pool=pool, released_at__isnull=True).select_related("host"):
            print(
                f"      holds {ph.host.name} {ph.state} since {ph.allocated_at.astimezone(ZONE):%H:%M}"
                f" bmh {ph.host.provisioning_state} preempt_at {ph.preempt_at}",
                file=sys.stderr,
            )
        if os.environ.get("MONTH_DEBUG"):
            from tenants.models import AuditEntry

            ids = [str(i) for i in PoolHost.objects.filter(pool=pool).values_list("host_id", flat=True)]
            for e in AuditEntry.objects.filter(
                Q(target_id__in=ids, target_type="host") | Q(target_type="node_pool", target_id=str(pool.pk))
            ).order_by("pk"):
                print(f"      audit {e.at} {e.action} {e.target_repr} {e.after}", file=sys.stderr)
            for ph in PoolHost.objects.filter(pool=pool).select_related("host").order_by("pk"):
                print(
                    f"      poolhost {ph.pk} {ph.host.name} {ph.state} alloc {ph.allocated_at} rel {ph.released_at}"
                    f" g={ph.guaranteed} msg={ph.message}",
                    file=sys.stderr,
                )
            for rr in Reservation.objects.filter(node_pool=pool).order_by("starts_at")[:4]:
                print(f"      res {rr.pk} {rr.state} {rr.starts_at}–{rr.ends_at}: {rr.message[:160]}", file=sys.stderr)

    def account(self, now: datetime, until: datetime) -> None:
        """Host-hours from ``now`` to ``until`` (the state holds between steps)."""
        from django.db.models import Count, Q

        from tenants.models import PoolHost

        lo, hi = max(now, self.start), min(until, self.end)
        if hi <= lo:
            return
        hours = (hi - lo).total_seconds() / 3600
        held = PoolHost.objects.filter(released_at__isnull=True).aggregate(
            n=Count("pk"), ready=Count("pk", filter=Q(state=PoolHost.State.READY))
        )
        self.result.fleet_hours += self.fleet.hosts * hours
        self.result.held_hours += held["n"] * hours
        self.result.serving_hours += held["ready"] * hours

    # ------------------------------------------------------------------ the month

    def simulate(self) -> Result:
        from reservations import admission

        if self.run_name == "baseline":
            admission.lead_seconds = lambda host_ids=None: 0  # provisioning starts at the start
        self.queue = make_trace(self.start, self.args.days, self.args.seed, self.fleet.nightly)
        idle_step = timedelta(seconds=self.args.idle_step)
        began = time.perf_counter()
        last_report = began
        now = self.now()
        self.next_full = now
        why = "start"
        while now < self.end:
            with self.timed("requests (admission + plan)"):
                while self.queue and datetime.fromisoformat(self.queue[0].at) <= now:
                    self.request(self.queue.pop(0), now)
            self.result.rounds += self.step(now, mirror_only=why == "mirror")
            with self.timed("bookkeeping"):
                self.sample(now)
                nxt, why = self.next_event(now)
                if nxt is None or nxt > now + idle_step:
                    nxt, why = now + idle_step, "idle"
                nxt = max(nxt, now + timedelta(seconds=1))
                self.reasons[why] = self.reasons.get(why, 0) + 1
                self.account(now, nxt)
            self.result.steps += 1
            self.clock.advance((nxt - now).total_seconds())
            now = self.now()
            if time.perf_counter() - last_report > 60:
                last_report = time.perf_counter()
                done = (now - self.start) / (self.end - self.start)
                print(
                    f"  [{self.run_name}] {max(0.0, done):5.1%} simulated ({now.astimezone(ZONE):%a %d %b %H:%M}), "
                    f"{self.result.steps} steps, {time.perf_counter() - began:.0f} s",
                    file=sys.stderr,
                )
        self.result.sim_seconds = time.perf_counter() - began
        self.result.phases.update({f"steps for {k}": float(v) for k, v in self.reasons.items()})
        self.result.step_ms = self.result.sim_seconds / max(1, self.result.steps) * 1000
        admission.lead_seconds = self.real_lead
        self.finish(now)
        return self.result

    def finish(self, now: datetime) -> None:
        from django.core.cache import cache

        from reservations import admission
        from reservations.models import Reservation
        from tenants.models import AuditEntry

        res = self.result
        states = dict(Reservation.objects.filter(pk__in=list(self.tracks)).values_list("pk", "state"))
        for t in self.tracks.values():
            if t.starts_at >= self.end:
                continue
            state = states.get(t.id, "")
            if state == Reservation.State.PREEMPTED:
                res.preempted += 1
                res.preempted_before_start += t.preempted_before_start
            if state == Reservation.State.COMPLETED:
                res.completed += 1
            if t.sampled and not t.preempted_before_start:
                res.started += 1
            # Booked host-hours: the window within the period, until a pre-emption.
            lo = max(t.starts_at, self.start)
            hi = min(t.ends_at, self.end, t.preempted_at or self.end)
            if hi > lo and (t.sampled and not t.preempted_before_start):
                res.booked_hours += t.count * (hi - lo).total_seconds() / 3600
            if not t.sampled or t.preempted_before_start or t.ready_at_start is None:
                continue
            res.max_sample_lag = max(res.max_sample_lag, t.sample_lag)
            wait = 0.0
            if not t.ready_at_start:
                wait = t.ready_after if t.ready_after is not None and t.ready_after >= 0 else None
                if wait is None:  # still waiting when the simulation ended, or pre-empted while waiting
                    wait = (min(now, t.ends_at, t.preempted_at or now) - t.starts_at).total_seconds()
            res.samples.append([t.kind, bool(t.ready_at_start), wait, t.never_ready])
        # Pre-emptions: hosts that left a pool at the end of a notice (the audit says which pool).
        kinds = {str(self.pools["spot"]): "spot", str(self.pools["borrow"]): "borrowed"}
        for entry, host_id in AuditEntry.objects.filter(action="host.preempted").values_list("after", "target_id"):
            kind = kinds.get((entry or {}).get("pool"), "other")
            res.taken[kind] = res.taken.get(kind, 0) + 1
            if kind == "other" and self.args.verbose:
                notices = AuditEntry.objects.filter(action="host.preempt_notice", target_id=host_id)
                why = [n.after for n in notices if (n.after or {}).get("from") == entry.get("pool")]
                print(f"  [{self.run_name}] a host taken from {entry}: {why[-1:]}", file=sys.stderr)
        # The lead: learned now (whatever the run used) vs the default before any history.
        cache.clear()
        res.lead_default = admission.DEFAULT_LEAD_SECONDS + 60
        for klass in ("general", "gpu-a100", "highmem"):
            from tenants.models import QuotaClass

            hosts = admission._Fleet().matching(QuotaClass.objects.get(name=klass).get_requirement())
            res.lead_learned[klass] = self.real_lead(hosts)
        # The lead the bookings were given (start − prepare_at), per kind.
        used: dict[str, list[float]] = {}
        for pk, prepare_at, starts_at in Reservation.objects.filter(pk__in=list(self.tracks)).values_list(
            "pk", "prepare_at", "starts_at"
        ):
            used.setdefault(self.tracks[pk].kind, []).append((starts_at - prepare_at).total_seconds())
        res.lead_used = {kind: statistics.mean(values) for kind, values in used.items()}
        res.stuck = self.stuck(now)

    def stuck(self, now: datetime) -> list[str]:
        """What looks stuck at the end: holding bookings past their end, hosts held by no booking's pool."""
        from reservations.models import Reservation

        out = []
        for r in Reservation.objects.filter(state__in=Reservation.HOLDING, ends_at__lt=now - timedelta(minutes=5)):
            out.append(f"reservation {r.pk} ({r.name}) still {r.state} {now - r.ends_at} after its end")
        return out[:10]


def child(args) -> int:
    """One run in its own throw-away database; the result as JSON on the last line of stdout."""
    from unittest import mock

    os.environ.setdefault("TEAPOT_LAB_SPEED", "0")
    start = datetime.fromisoformat(args.start)
    fleet = Fleet(**json.loads(args.fleet))
    with throwaway_database(f"bench_month_{args.child}_{os.getpid()}"):  # runs may overlap
        from django.conf import settings

        from teapot_portal.gateway.lab import validation

        settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"  # the reminders
        registry = validation._registry()  # the CRD schemas, parsed once (as the lifecycle tests do)
        errors = _ErrorCount()
        logging.getLogger().addHandler(errors)
        with (
            mock.patch.object(validation, "_registry", lambda: registry),
            mock.patch("django.db.transaction.on_commit", lambda *a, **k: None),  # no Celery: the loop is beat
        ):
            sim = Sim(args, args.child, start, fleet)
            with mock.patch("tenants.clusters.reconcile_pool_after_commit", sim.kick):
                sim.setup()
                result = sim.simulate()
            result.errors = errors.count
    if args.verbose:
        for what, value in sorted(result.phases.items(), key=lambda kv: -kv[1]):
            unit = "" if what.startswith("steps for") else " s"
            print(f"  [{args.child}] {what}: {value:.{0 if not unit else 1}f}{unit}", file=sys.stderr)
    print("RESULT " + json.dumps(asdict(result), default=str))
    return 0


class _ErrorCount(logging.Handler):
    """Counts the errors logged (a reconcile that failed and is retried on the next step)."""

    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.count = 0

    def emit(self, record):
        self.count += 1


# ============================================================================================ the report


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


PROMISED = ("nightly", "gpu-nightly", "interactive")  # guaranteed or on demand; spot is promised nothing


def _share(samples: list, kinds: tuple[str, ...]) -> tuple[int, int]:
    chosen = [s for s in samples if s[0] in kinds]
    return sum(1 for s in chosen if s[1]), len(chosen)


def report(results: dict[str, dict], args, fleet: Fleet, wall: dict[str, float], trace: list[Request]) -> None:
    kinds: dict[str, int] = {}
    for r in trace:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
    print(
        f"\nTeapot simulated-month benchmark — {args.days} days from {args.start[:10]}, {fleet.hosts} lab hosts "
        f"({fleet.general} general, {fleet.gpu} gpu-a100, {fleet.highmem} highmem, {len(RACKS)} racks), "
        f"seed {args.seed}, {os.cpu_count()} CPUs"
    )
    print(
        "trace: "
        + ", ".join(f"{n} {k}" for k, n in kinds.items())
        + " requests (the nightly batch is one series: a booking per weekday night)"
    )
    cols = list(results)
    get = {c: results[c] for c in cols}

    def row(label: str, values: list[str]) -> None:
        print(f"{label:46}" + "".join(f"{v:>27}" for v in values))

    def pct(a, b) -> str:
        return f"{a / b:.1%}" if b else "–"

    def share(c, kinds) -> str:
        on_time, n = _share(get[c]["samples"], kinds)
        return f"{on_time}/{n} = {pct(on_time, n)}"

    def waits(c, kinds=PROMISED) -> list[float]:
        return [s[2] for s in get[c]["samples"] if s[0] in kinds]

    row("", [RUNS[c] for c in cols])
    row("bookings confirmed", [str(get[c]["bookings"]) for c in cols])
    row("  of them at a later start than asked", [str(len(get[c]["pushed"])) for c in cols])
    row(
        "  mean delay of those",
        [_minutes(statistics.mean(get[c]["pushed"])) if get[c]["pushed"] else "–" for c in cols],
    )
    row("requests refused for good", [str(get[c]["refused"]) for c in cols])
    row("bookings started in the period", [str(get[c]["started"]) for c in cols])
    row("  completed", [str(get[c]["completed"]) for c in cols])
    row(
        "  pre-empted (of them before their start)",
        [f"{get[c]['preempted']} ({get[c]['preempted_before_start']})" for c in cols],
    )
    row("Ready at start: promised bookings", [share(c, PROMISED) for c in cols])
    for kind in PROMISED:
        row(f"  {kind}", [share(c, (kind,)) for c in cols])
    row("  spot (pre-emptible: promised nothing)", [share(c, ("spot",)) for c in cols])
    row("wait from start until Ready (promised): mean", [_minutes(statistics.mean(waits(c) or [0])) for c in cols])
    row("  p95", [_minutes(p95(waits(c) or [0])) for c in cols])
    row("  max", [_minutes(max(waits(c) or [0])) for c in cols])
    row(
        "  mean of the late ones",
        [_minutes(statistics.mean([w for w in waits(c) if w > 0])) if any(waits(c)) else "–" for c in cols],
    )
    row("  spot bookings: mean wait", [_minutes(statistics.mean(waits(c, ("spot",)) or [0])) for c in cols])
    row(
        "  never Ready before their end (all)",
        [str(sum(1 for s in get[c]["samples"] if s[3])) for c in cols],
    )
    row("host utilisation: held by tenant pools", [pct(get[c]["held_hours"], get[c]["fleet_hours"]) for c in cols])
    row("  serving as Ready workers", [pct(get[c]["serving_hours"], get[c]["fleet_hours"]) for c in cols])
    row("  booked (bookings' host-hours)", [pct(get[c]["booked_hours"], get[c]["fleet_hours"]) for c in cols])
    row("hosts taken with notice: from borrowed use", [str(get[c]["taken"].get("borrowed", 0)) for c in cols])
    row("  from spot bookings", [str(get[c]["taken"].get("spot", 0)) for c in cols])
    row("  from other pools", [str(get[c]["taken"].get("other", 0)) for c in cols])
    row(
        "lead given to promised bookings (mean)",
        [_minutes(statistics.mean([v for k, v in get[c]["lead_used"].items() if k in PROMISED] or [0])) for c in cols],
    )
    for klass in ("general", "gpu-a100", "highmem"):
        row(f"learned lead at the end: {klass}", [_minutes(get[c]["lead_learned"].get(klass, 0)) for c in cols])
    row("  default lead (no history yet)", [_minutes(get[cols[0]]["lead_default"]) for c in cols])
    row("simulated steps (rounds of beat)", [f"{get[c]['steps']} ({get[c]['rounds']})" for c in cols])
    row(
        "  pool reconciles; lab ticks skipped",
        [f"{get[c]['pool_reconciles']}; {get[c]['ticks_skipped']}" for c in cols],
    )
    row("  mean step", [f"{get[c]['step_ms']:.0f} ms" for c in cols])
    row("  sampled after the start by at most", [f"{get[c]['max_sample_lag']:.0f} s" for c in cols])
    row("  errors logged", [str(get[c]["errors"]) for c in cols])
    row("wall time (setup + simulation)", [f"{wall[c]:.0f} s" for c in cols])
    for c in cols:
        for line in get[c]["stuck"]:
            print(f"  [{c}] stuck: {line}")
    print(
        "\nReady at start: at the booking's start its pool has, as Ready workers (Nodes in the lab), at least its "
        "standing size plus every booking of the pool running then (hosts under notice and hosts Ready early for a "
        "later booking not counted); sampled at the exact start, a start being an event of the step loop. Promised: "
        "guaranteed and on-demand bookings (the nightly batch, GPU nights, interactive); spot bookings are "
        "pre-emptible, promised nothing, and may wait for capacity by design. Baseline: the same code and trace "
        "with reservations.admission.lead_seconds patched to return 0, so a booking's hosts start provisioning at "
        "its start."
    )
    if "teapot" in get:
        on_time, n = _share(get["teapot"]["samples"], PROMISED)
        verdict = "met" if n and on_time / n >= TARGET else "MISSED"
        print(f"target: Ready at start ≥ {TARGET:.0%} of promised bookings — Teapot {pct(on_time, n)}: {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=30, help="simulated days (default 30)")
    parser.add_argument("--quick", action="store_true", help="3 days on 26 hosts (development)")
    parser.add_argument("--seed", type=int, default=7, help="the demand trace's seed")
    parser.add_argument("--idle-step", type=float, default=4 * 3600, help="the longest jump between steps, in seconds")
    parser.add_argument(
        "--coalesce", type=float, default=60, help="lab deadlines this close to the next one are one step (seconds)"
    )
    parser.add_argument(
        "--full-every", type=float, default=6 * 3600, help="simulated seconds between full reconcile_all rounds"
    )
    parser.add_argument("--every-tick", action="store_true", help="never skip a lab tick (slow; to compare)")
    parser.add_argument(
        "--every-pool", action="store_true", help="reconcile every cluster and pool in every round (slow; to compare)"
    )
    parser.add_argument("--verbose", action="store_true", help="say why requests are refused, where time goes")
    parser.add_argument("--only", choices=list(RUNS), help="one run only (development)")
    parser.add_argument("--start", help=argparse.SUPPRESS)
    parser.add_argument("--fleet", help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=list(RUNS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    fleet = Fleet(general=24, gpu=8, highmem=6, borrow=8, nightly=8)
    if args.quick:
        args.days = 3 if args.days == 30 else args.days
        fleet = Fleet(general=16, gpu=6, highmem=4, borrow=4, nightly=6)
    args.start = args.start or first_monday(datetime.now(ZONE)).isoformat()
    results, wall = {}, {}
    for run in [args.only] if args.only else list(RUNS):
        print(f"run {run}: {RUNS[run]}…", file=sys.stderr)
        began = time.perf_counter()
        command = [
            sys.executable,
            __file__,
            "--child",
            run,
            "--days",
            str(args.days),
            "--seed",
            str(args.seed),
            "--idle-step",
            str(args.idle_step),
            "--coalesce",
            str(args.coalesce),
            "--full-every",
            str(args.full_every),
            *(["--every-pool"] if args.every_pool else []),
            *(["--every-tick"] if args.every_tick else []),
            *(["--verbose"] if args.verbose else []),
            "--start",
            args.start,
            "--fleet",
            json.dumps(asdict(fleet)),
        ]
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
        wall[run] = time.perf_counter() - began
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not lines:
            print(done.stdout, file=sys.stderr)
            print(f"run {run} failed (exit {done.returncode})", file=sys.stderr)
            return 1
        results[run] = json.loads(lines[-1][len("RESULT ") :])
    report(
        results, args, fleet, wall, make_trace(datetime.fromisoformat(args.start), args.days, args.seed, fleet.nightly)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
