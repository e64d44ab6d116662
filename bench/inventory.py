"""Inventory benchmark: the sync of 10,000 BareMetalHosts, and the host list page and API at 10,000 hosts.

    make bench                    # or: .venv/bin/python bench/inventory.py [--hosts 10000]

Runs against a throw-away database (``<name>_bench``, created and migrated like the test
suite's, dropped at the end) on the same PostgreSQL as everything else (the embedded one unless
``DATABASE_URL`` says otherwise). Not part of ``make test``: figures are printed, not asserted.

Measured, each with a baseline in the same run:

* **sync** — Teapot's bulk ``hosts_sync`` of the synthetic fleet: all new, unchanged (same
  resourceVersions), every host changed state. Baseline: the obvious per-host ORM loop
  (``update_or_create`` per BareMetalHost), timed on ``--baseline-hosts`` and scaled to the fleet.
* **list** — server time (Django test client: middleware, view, template) and queries of the
  operator host list page and of ``GET /api/v1/hosts/`` (operator and tenant views), first page,
  a filtered page, a sorted deep page. Baseline: the naive list — every host loaded as a full
  model instance (with its hardware JSON) and filtered/sorted in Python.

Targets (issue #4): full resync of 10,000 hosts < 30 s; host list < 150 ms with ≤ 15 queries.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import p95, throwaway_database


def _records(size: int, rv: int, state: str = "available"):
    from teapot_portal.gateway.base import HostRecord
    from tests.inventory import PROFILES, bmh

    templates = {p: bmh("template", profile=p, state=state, rv=rv) for p in set(PROFILES)}
    out = []
    for index in range(size):
        obj = _clone(templates[PROFILES[index % len(PROFILES)]])
        name = f"bench-{index:05d}"
        obj["metadata"].update(name=name, uid=f"uid-{name}", resourceVersion=str(rv * 1_000_000 + index))
        out.append(HostRecord.from_object(obj))
    return out


def _clone(obj):
    import copy

    return copy.deepcopy(obj)


def timed(fn, *args, **kwargs):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        seconds = time.perf_counter() - started
    return result, seconds, len(queries.captured_queries)


def bench_sync(size: int, baseline_hosts: int) -> list[tuple]:
    from django.db import transaction

    from hosts.models import Host
    from hosts.services import _hardware_values, _mirror_values, hosts_sync

    rows = []
    for label, rv, state in (
        ("all new", 1, "available"),
        ("unchanged", 1, "available"),
        ("every host changed state", 2, "provisioning"),
    ):
        records = _records(size, rv, state)
        result, seconds, queries = timed(hosts_sync, records=records, complete=True, resource_version=str(rv))
        rows.append((f"sync {size:,}: {label}", seconds, queries, f"{result.created} new, {result.updated} updated"))

    # Baseline: one update_or_create per BareMetalHost, in a transaction, rolled back after.
    records = _records(baseline_hosts, 3, "available")
    with transaction.atomic():
        started = time.perf_counter()
        for record in records:
            values = {**_mirror_values(record), **_hardware_values(record)[0]}
            Host.objects.update_or_create(namespace=record.namespace, name=record.name, defaults=values)
        seconds = time.perf_counter() - started
        transaction.set_rollback(True)
    scaled = seconds * size / baseline_hosts
    rows.append(
        (f"baseline: per-host update_or_create ({baseline_hosts:,} hosts, scaled to {size:,})", scaled, None, "")
    )
    return rows


def bench_lists(size: int, repeat: int) -> list[tuple]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from hosts.models import Host
    from tenants.services import user_ensure

    operator, _ = user_ensure(email="bench-ops@teapot.example", is_staff=True)
    member, _ = user_ensure(email="bench-member@physics.example")
    ops, tenant = Client(raise_request_exception=False), Client(raise_request_exception=False)
    ops.force_login(operator)
    tenant.force_login(member)
    deep = max(1, size // 50 - 1)
    cases = [
        ("host list page, first page", ops, "/hosts/list/"),
        ("host list page, trait + room filter", ops, "/hosts/list/?trait=nvme&room=a"),
        (f"host list page, by cost, page {deep}", ops, f"/hosts/list/?ordering=-cost&page={deep}"),
        ("API list (operator), first 100", ops, "/api/v1/hosts/"),
        ("API list (operator), trait + state", ops, "/api/v1/hosts/?trait=gpu-a100&state=available"),
        ("API list (tenant member), first 100", tenant, "/api/v1/hosts/"),
        ("fleet overview page", ops, "/hosts/"),
    ]
    rows = []
    for label, client, url in cases:
        times, queries, status = [], 0, None
        for _ in range(repeat):
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                response = client.get(url)
                times.append(time.perf_counter() - started)
            queries, status = len(captured.captured_queries), response.status_code
        rows.append((label, statistics.median(times), queries, f"HTTP {status}, p95 {p95(times) * 1000:.0f} ms"))

    def naive():
        hosts = [h for h in Host.objects.all() if h.retired_at is None and "nvme" in h.traits]
        hosts.sort(key=lambda h: h.cost_per_hour, reverse=True)
        return hosts[:50]

    times = []
    for _ in range(max(1, repeat // 3)):
        _, seconds, queries = timed(naive)
        times.append(seconds)
    rows.append(
        ("baseline: naive list (all hosts as models, filter + sort in Python)", statistics.median(times), queries, "")
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--baseline-hosts", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=15, help="requests per list case (median and p95 reported)")
    args = parser.parse_args()

    with throwaway_database("bench") as pg_version:
        from hosts.classify import hosts_classify
        from hosts.models import Host
        from hosts.services import _bulk_update
        from tests.inventory import ensure_rules, location

        ensure_rules()
        started = time.perf_counter()
        sync_rows = bench_sync(args.hosts, args.baseline_hosts)
        hosts = list(Host.objects.only("id").order_by("name"))
        for index, host in enumerate(hosts):
            host.location = location(index)
        _bulk_update(hosts, ("location",))
        hosts_classify()
        del hosts
        gc.collect()  # the sync's garbage is not a web worker's: measure requests on a clean heap
        list_rows = bench_lists(args.hosts, args.repeat)
        total = time.perf_counter() - started

    print(
        f"\nTeapot inventory benchmark — {args.hosts:,} hosts, PostgreSQL {pg_version}, "
        f"{os.cpu_count()} CPUs, {total:.0f} s\n"
    )
    width = max(len(r[0]) for r in sync_rows + list_rows)
    print(f"{'case':<{width}}  {'time':>10}  {'queries':>7}  note")
    print("-" * (width + 40))
    for label, seconds, queries, note in sync_rows:
        print(f"{label:<{width}}  {seconds:>8.2f} s  {'' if queries is None else queries:>7}  {note}")
    print()
    for label, seconds, queries, note in list_rows:
        print(f"{label:<{width}}  {seconds * 1000:>7.1f} ms  {queries:>7}  {note}")
    print("\ntargets: full resync of 10,000 hosts < 30 s; host list < 150 ms with <= 15 queries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
