"""Reservation admission benchmark: ``admission.check`` against a year of bookings on 10,000 hosts.

    make bench-reservations       # or: .venv/bin/python bench/reservations_admission.py [--runs 50] [--quick]

Runs against a throw-away database (``<name>_bench_reservations``, created, migrated and dropped
like the other benchmarks'). Not part of ``make test``: figures are printed, not asserted.

The fleet is the selection benchmark's (:func:`selection.build_fleet`: 12 hardware classes,
site > room > row > rack, 85 % free, the rest in use, in maintenance, in error…). On it:

* 8 tenants, each with a general, a gpu-a100 and a highmem pool; small standing guarantees
  (the fleet carries them), maxima large enough that the fleet, not the quota, decides;
* 50,000 holding bookings over the next year, bulk-inserted with their occupancy (the plan is
  not made: admission does not read it), a realistic mix kept under ~75 % of each class's
  hosts at every hour: nightly batch runs (20:00–06:00, 10–60 general hosts), daytime
  interactive bookings (2–8 h, 1–16 general or highmem hosts), long training runs (1–7 days,
  4–32 A100 hosts, some spread across racks), a few pre-emptible ones.

Timed (``--runs`` each, random starts over the year, after two warm-ups): ``admission.check``
of new bookings of three shapes — 4 × general for 4 h; 8 × gpu-a100 spread across racks
(must) for 12 h; 16 × general for 3 days — p50, p95, slices checked, refusals. The naive
baseline in the same run: every occupancy boundary inside the window is a check of its own,
with the bookings active then loaded by a query, a fresh matching set per requirement and a
fresh flow (no merged slices, no caching) — what one would write first.

Target (issue #7): p50 ≤ 50 ms per check at 10,000 hosts.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import p95, throwaway_database

TARGET_MS = 50.0
TENANTS = 8
BOOKINGS = 50_000
DAYS = 365


def setup_tenancy():
    """Tenants, clusters, pools and quotas (through the services, as the demo seed does)."""
    from unittest import mock

    from reservations.admission import _Fleet
    from tenants.clusters import cluster_create, node_pool_create
    from tenants.models import Tenant
    from tests.tenancy import catalogue, quota

    cat = catalogue()
    matching = {name: len(_Fleet().matching(k.get_requirement())) for name, k in cat.classes.items()}
    pools = {}
    with mock.patch("tenants.clusters.transaction.on_commit"):  # no reconcile queued for a throw-away database
        for n in range(TENANTS):
            tenant, _ = Tenant.objects.get_or_create(slug=f"t{n}", defaults={"name": f"Tenant {n}"})
            cluster = cluster_create(tenant=tenant, name="c1", actor="bench")
            for name, klass in cat.classes.items():
                # Guarantees: a few per cent of each class in all; maxima: the fleet decides.
                quota(tenant, klass, max(1, matching[name] // (TENANTS * 40)), 100_000)
                pools[(n, name)] = node_pool_create(
                    cluster=cluster, name=name, quota_class=klass, image=cat.image, actor="bench"
                )
    return cat, pools, matching


def a100_racks(cat) -> int:
    """Racks holding A100 hosts (a spread training run takes at most one from each)."""
    from reservations.admission import _Fleet

    fleet = _Fleet()
    paths = fleet.paths()
    return len({paths[pk] for pk in fleet.matching(cat.classes["gpu-a100"].get_requirement())}) or 1


def make_bookings(pools, matching, racks: int, rng: random.Random) -> dict:
    """BOOKINGS holding reservations over the next DAYS, kept under ~75 % of each class at every hour."""
    from django.db.backends.postgresql.psycopg_any import DateTimeTZRange
    from django.utils import timezone

    from reservations.models import Reservation

    lead, handoff = timedelta(minutes=16), timedelta(minutes=10)
    now = timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)
    hours = DAYS * 24 + 24 * 8
    # general is served by general and highmem hosts: one budget for both classes.
    budget = {k: int(0.75 * matching[k]) for k in ("general", "gpu-a100", "highmem")}
    used = {k: [0] * hours for k in budget}
    spread = {"mode": "spread", "level": "rack", "hard": True}
    rows, kinds = [], {"nightly": 0, "interactive": 0, "training": 0, "preemptible": 0}
    attempts = 0
    while len(rows) < BOOKINGS and attempts < BOOKINGS * 4:
        attempts += 1
        draw = rng.random()
        tenant = rng.randrange(TENANTS)
        day = rng.randrange(DAYS)
        policy = {}
        priority = "on_demand"
        if draw < 0.30:
            kind, klass, budget_class = "nightly", "general", "general"
            start_h, length, count = day * 24 + 20, 10, rng.randint(10, 60)
        elif draw < 0.93:
            kind = "interactive"
            klass = "highmem" if rng.random() < 0.2 else "general"
            budget_class = "general"
            start_h, length, count = day * 24 + rng.randint(7, 17), rng.randint(2, 8), rng.randint(1, 16)
        elif draw < 0.96:
            kind, klass, budget_class = "training", "gpu-a100", "gpu-a100"
            start_h, length, count = day * 24 + rng.randint(0, 23), rng.randint(24, 168), rng.randint(4, 32)
            if rng.random() < 0.5:
                policy = spread
                count = max(1, min(count, racks // 2))  # one per rack: never more than the racks hold
        else:
            kind, klass, budget_class = "preemptible", "general", "general"
            start_h, length, count = day * 24 + rng.randint(0, 23), rng.randint(1, 12), rng.randint(1, 32)
            priority = "preemptible"
        if priority == "on_demand" and rng.random() < 0.1:
            priority = "guaranteed"
            count = min(count, 2)
        span = range(start_h, min(hours, start_h + length + 1))
        if priority != "preemptible":
            # A highmem host also serves general: a highmem booking uses both budgets.
            budgets = {budget_class, klass}
            if any(used[b][h] + count > budget[b] for b in budgets for h in span):
                continue
            for b in budgets:
                for h in span:
                    used[b][h] += count
        pool = pools[(tenant, klass)]
        starts = now + timedelta(hours=start_h)
        ends = starts + timedelta(hours=length)
        rows.append(
            Reservation(
                tenant_id=pool.cluster.tenant_id,
                node_pool=pool,
                name=kind,
                count=count,
                policy=policy,
                priority=priority,
                starts_at=starts,
                ends_at=ends,
                original_ends_at=ends,
                prepare_at=starts - lead,
                occupancy=DateTimeTZRange(starts - lead, ends + handoff, "[)"),
                state=Reservation.State.CONFIRMED,
            )
        )
        kinds[kind] += 1
    Reservation.objects.bulk_create(rows, batch_size=5000)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE reservations_reservation")
    return {"now": now, "kinds": kinds, "peak": {k: max(v) for k, v in used.items()}, "budget": budget}


def shapes(cat, pools):
    from hosts.allocator import Policy

    return {
        "4 × general, 4 h": (pools[(0, "general")], 4, timedelta(hours=4), Policy(), "day"),
        "8 × gpu-a100 spread racks, 12 h": (
            pools[(1, "gpu-a100")],
            8,
            timedelta(hours=12),
            Policy(mode="spread", level="rack", hard=True),
            "any",
        ),
        "16 × general, 3 days": (pools[(2, "general")], 16, timedelta(days=3), Policy(), "any"),
    }


def ask_for(pool, count, duration, policy, start):
    from reservations import admission

    return admission.Ask(
        tenant=pool.cluster.tenant,
        quota_class=pool.quota_class,
        priority="on_demand",
        count=count,
        requirement=pool.get_requirement(),
        policy=policy,
        windows=((start, start + duration),),
        lead=timedelta(minutes=16),
        handoff=timedelta(minutes=10),
    )


def starts(now, when: str, n: int, rng: random.Random):
    out = []
    for _ in range(n):
        day = rng.randrange(7, DAYS - 10)
        hour = rng.randint(8, 15) if when == "day" else rng.randint(0, 23)
        out.append(now + timedelta(days=day, hours=hour - now.hour))
    return out


# ---------------------------------------------------------------------------------------------- the baseline


def naive_check(ask) -> tuple[bool, int]:
    """Every occupancy boundary inside the window checked on its own: the bookings active then
    (a query), a fresh matching set per requirement, a fresh flow. Returns (ok, points)."""
    from django.db import connection

    from hosts.models import FleetSettings, Host
    from reservations.admission import NEW, Demand, _held, slice_flow
    from tenants.models import Quota
    from tenants.quota import eligible_q, matching_host_ids

    levels = list(FleetSettings.load().topology_levels)
    lo, hi = ask.occupancies()[0]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT p FROM (SELECT lower(occupancy) p FROM reservations_reservation WHERE state = 'confirmed' "
            "AND occupancy && tstzrange(%s, %s) UNION SELECT upper(occupancy) FROM reservations_reservation "
            "WHERE state = 'confirmed' AND occupancy && tstzrange(%s, %s)) x WHERE p > %s AND p < %s",
            [lo, hi, lo, hi, lo, hi],
        )
        points = sorted([lo, *(row[0] for row in cursor.fetchall())])
    from hosts import topology

    paths = {
        pk: topology.path(loc or {}, levels)
        for pk, loc in Host.objects.filter(eligible_q()).values_list("id", "location")
    }
    quotas = list(Quota.objects.select_related("quota_class"))
    for point in points:
        active = _held(point, point + timedelta(microseconds=1))
        demands = []
        for h in active:
            if h.priority == "preemptible" or h.requirement is None:
                continue
            hosts = frozenset(matching_host_ids(h.requirement, Host.objects.filter(eligible_q())))
            cap = (levels.index(h.policy.level), h.policy.max_per_bucket or 1) if h.policy.hard else (None, None)
            demands.append(Demand(key=h.id, count=h.count, hosts=hosts, level=cap[0], cap=cap[1]))
        for q in quotas:
            left = q.guaranteed - sum(
                h.count
                for h in active
                if (h.tenant_id, h.quota_class_id, h.priority) == (q.tenant_id, q.quota_class_id, "guaranteed")
            )
            if left > 0:
                hosts = frozenset(matching_host_ids(q.quota_class.get_requirement(), Host.objects.filter(eligible_q())))
                demands.append(Demand(key=("standing", q.pk), count=left, hosts=hosts))
        hosts = frozenset(matching_host_ids(ask.requirement, Host.objects.filter(eligible_q())))
        level = levels.index(ask.policy.level) if ask.policy.hard else None
        demands.append(Demand(key=NEW, count=ask.count, hosts=hosts, level=level, cap=1 if ask.policy.hard else None))
        if not slice_flow(demands, paths).ok:
            return False, len(points)
    return True, len(points)


# ---------------------------------------------------------------------------------------------- measuring


def measure(name, shape, now, runs, base_runs, rng) -> dict:
    from reservations import admission

    pool, count, duration, policy, when = shape
    at = starts(now, when, runs + 2, rng)
    times, slices, refused, agree, why = [], [], 0, 0, ""
    for i, start in enumerate(at):
        ask = ask_for(pool, count, duration, policy, start)
        began = time.perf_counter()
        verdict = admission.check(ask, suggest=False)
        elapsed = time.perf_counter() - began
        if i < 2:
            continue  # warm-ups
        times.append(elapsed * 1000)
        slices.append(verdict.slices)
        refused += not verdict.ok
        why = why or (verdict.refusal.message if verdict.refusal else "")
    base_times, points = [], []
    for start in at[2 : 2 + base_runs]:
        ask = ask_for(pool, count, duration, policy, start)
        began = time.perf_counter()
        ok, n = naive_check(ask)
        base_times.append((time.perf_counter() - began) * 1000)
        points.append(n)
        agree += ok == admission.check(ask, suggest=False).ok
    return {
        "name": name,
        "p50": statistics.median(times),
        "p95": p95(times),
        "slices": statistics.mean(slices),
        "refused": refused,
        "runs": len(times),
        "base_p50": statistics.median(base_times),
        "base_points": statistics.mean(points),
        "base_runs": len(base_times),
        "agree": agree,
        "why": why,
    }


def profile(shape, now, rng) -> list[str]:
    import cProfile
    import io
    import pstats

    from reservations import admission

    pool, count, duration, policy, when = shape
    asks = [ask_for(pool, count, duration, policy, s) for s in starts(now, when, 20, rng)]
    profiler = cProfile.Profile()
    profiler.enable()
    for ask in asks:
        admission.check(ask, suggest=False)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(18)
    return out.getvalue().splitlines()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=10_000, help="hosts")
    parser.add_argument("--runs", type=int, default=50, help="timed checks per shape (after 2 warm-ups)")
    parser.add_argument("--baseline-runs", type=int, default=3, help="timed baseline checks per shape")
    parser.add_argument("--quick", action="store_true", help="1,000 hosts, 10 runs (development)")
    parser.add_argument("--profile", action="store_true", help="also print where a check's time goes (cProfile)")
    args = parser.parse_args()
    if args.quick:
        args.size, args.runs, args.baseline_runs = 1_000, 10, 1
    global BOOKINGS
    if args.quick:
        BOOKINGS = 5_000
    rng = random.Random(7)
    with throwaway_database("bench_reservations") as pg_version:
        from selection import build_fleet, set_cost_model, settle

        from tests.inventory import ensure_rules

        started = time.perf_counter()
        ensure_rules()
        figures = build_fleet(args.size)
        set_cost_model()
        settle()
        print(f"{args.size:,} hosts built in {figures['seconds']:.0f} s; booking a year…", file=sys.stderr)
        cat, pools, matching = setup_tenancy()
        began = time.perf_counter()
        calendar = make_bookings(pools, matching, a100_racks(cat), rng)
        booked_in = time.perf_counter() - began
        gc.collect()
        print(f"{BOOKINGS:,} bookings in {booked_in:.0f} s; measuring…", file=sys.stderr)
        results = [
            measure(name, shape, calendar["now"], args.runs, args.baseline_runs, rng)
            for name, shape in shapes(cat, pools).items()
        ]
        lines = profile(shapes(cat, pools)["16 × general, 3 days"], calendar["now"], rng) if args.profile else []
        total = time.perf_counter() - started

    print(
        f"\nTeapot reservation-admission benchmark — {args.size:,} hosts, PostgreSQL {pg_version}, "
        f"{os.cpu_count()} CPUs, {total:.0f} s"
    )
    kinds = ", ".join(f"{n:,} {k}" for k, n in calendar["kinds"].items())
    print(f"calendar: {sum(calendar['kinds'].values()):,} holding bookings over {DAYS} days ({kinds})")
    print(
        "matching hosts per class: "
        + ", ".join(f"{k} {n:,}" for k, n in matching.items())
        + "; peak booked per hour: "
        + ", ".join(f"{k} {calendar['peak'][k]:,} of {calendar['budget'][k]:,} allowed" for k in calendar["peak"])
    )
    print(
        f"\n{'shape':34} {'p50 ms':>8} {'p95 ms':>8} {'slices':>7} {'refused':>8} │ {'naive p50':>10} {'points':>7} agree"
    )
    for r in results:
        print(
            f"{r['name']:34} {r['p50']:8.1f} {r['p95']:8.1f} {r['slices']:7.0f} {r['refused']:>4}/{r['runs']:<3} │ "
            f"{r['base_p50']:8.0f} ms {r['base_points']:7.0f} {r['agree']}/{r['base_runs']}"
        )
    for r in results:
        if r["why"]:
            print(f"  a refusal of {r['name']}: {r['why'][:240]}")
    worst = max(r["p50"] for r in results)
    print(
        "\nslices: distinct slice demands judged by a flow (a refusal stops at the first short one); naive: every occupancy "
        "boundary in the window checked with a fresh query, fresh matching sets and a fresh flow; agree: same verdict."
    )
    print(f"target: p50 ≤ {TARGET_MS:.0f} ms — worst shape {worst:.1f} ms: {'met' if worst <= TARGET_MS else 'MISSED'}")
    if lines:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
