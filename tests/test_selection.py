"""Host selection against PostgreSQL: what a requirement gets, why not, and the atomic claim.

Fleets are synthetic BareMetalHosts written through the real sync (``tests.inventory``), placed
in a site > room > row > rack topology. The concurrency test runs real processes against the
test database and proves no host is ever claimed twice.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction

from hosts.allocator import Policy
from hosts.classify import hosts_classify
from hosts.models import Host, HostClaim
from hosts.requirements import Requirement
from hosts.selection import claims_release, hosts_claim, hosts_select
from hosts.services import _bulk_update, hosts_sync
from teapot_portal.gateway.base import HostRecord
from tests.inventory import bmh, ensure_rules
from tests.processes import BASE_DIR, child_env, database_url


def fleet(spec: list[tuple[str, str, str, dict]]) -> None:
    """(name, profile, state, location) each; classified with the demo rules."""
    ensure_rules()
    hosts_sync(
        records=[HostRecord.from_object(bmh(n, profile=p, state=s, rv=i + 1)) for i, (n, p, s, _) in enumerate(spec)]
    )
    hosts = list(Host.objects.filter(name__in=[n for n, *_ in spec]))
    where = {n: loc for n, _, _, loc in spec}
    for host in hosts:
        host.location = where[host.name]
    _bulk_update(hosts, ("location",))
    hosts_classify()


def loc(room: str, rack: str) -> dict:
    return {"site": "lab", "room": room, "row": "1", "rack": rack}


def gpu_fleet() -> None:
    """Six a100 hosts in three racks of room a, two in room b; one busy, one in maintenance; generals."""
    spec = [
        ("g1", "gpu-a100", "available", loc("a", "a1")),
        ("g2", "gpu-a100", "available", loc("a", "a1")),
        ("g3", "gpu-a100", "available", loc("a", "a2")),
        ("g4", "gpu-a100", "available", loc("a", "a2")),
        ("g5", "gpu-a100", "available", loc("a", "a3")),
        ("g6", "gpu-a100", "provisioned", loc("a", "a3")),
        ("g7", "gpu-a100", "available", loc("b", "b1")),
        ("g8", "gpu-a100", "available", loc("b", "b1")),
        ("n1", "general", "available", loc("a", "a1")),
        ("n2", "general", "available", loc("b", "b1")),
        ("m1", "highmem", "available", loc("b", "b2")),
    ]
    fleet(spec)
    Host.objects.filter(name="g8").update(maintenance=True)


pytestmark = pytest.mark.django_db

A100 = Requirement.parse("gpu:nvidia-a100>=8")


def names(selection) -> list[str]:
    return sorted(h["name"] for h in selection.hosts)


def test_the_cheapest_hosts_that_meet_the_requirement():
    gpu_fleet()
    general = hosts_select(Requirement.parse("cores>=64"), 2)
    assert general.feasible and names(general) == ["n1", "n2"]  # general hosts are cheaper than a100s
    assert general.cost == sum(Decimal(h["cost_per_hour"]) for h in general.hosts)
    a100 = hosts_select(A100, 3)
    assert a100.feasible and a100.matching == 8 and a100.free == 6
    assert a100.unavailable == {"in maintenance": 1, "not ready yet (registering, inspecting or being provisioned)": 1}


def test_hard_rack_spread_and_its_explanation():
    gpu_fleet()
    spread = Policy(mode="spread", level="rack", hard=True)
    got = hosts_select(A100, 4, spread)
    racks = [h["location"]["rack"] for h in got.hosts]
    assert got.feasible and len(set(racks)) == 4
    refused = hosts_select(A100, 5, spread)
    assert not refused.feasible
    assert refused.allocation.explanation.code == "spread"
    assert refused.allocation.explanation.message == (
        "only 4 racks have a free nvidia-a100 host; spread across racks needs 5"
    )


def test_affinity_in_one_room_and_why_not():
    gpu_fleet()
    together = Policy(together_level="room")
    got = hosts_select(A100, 5, together)
    assert got.feasible and {h["location"]["room"] for h in got.hosts} == {"a"}
    refused = hosts_select(A100, 6, together)
    assert refused.allocation.explanation.code == "together"
    assert "the most in one room is 5" in refused.allocation.explanation.message


def test_nothing_matches_names_the_clause_no_host_meets():
    gpu_fleet()
    none = hosts_select(Requirement.parse("ram>=4Ti,cores>=64"), 1)
    assert not none.feasible and none.allocation.explanation.code == "none_match"
    assert none.allocation.explanation.message == "no host has ≥ 4 TiB RAM"
    both = hosts_select(Requirement.parse("gpu:nvidia-a100>=1,hdd-dense"), 1)
    assert both.allocation.explanation.message.startswith("no host has")


def test_not_enough_free_says_how_many_are_busy():
    gpu_fleet()
    refused = hosts_select(A100, 8)
    explanation = refused.allocation.explanation
    assert explanation.code == "not_enough_free"
    assert "8 nvidia-a100 hosts exist" in explanation.message and "1 is in maintenance" in explanation.message


def test_claims_take_hosts_out_of_the_free_pool_until_released():
    gpu_fleet()
    selection, claims = hosts_claim(A100, 4, holder="pool:1", tenant="physics")
    assert selection.feasible and len(claims) == 4
    taken = {c.host_id for c in claims}
    _, more = hosts_claim(A100, 2, holder="pool:2")
    assert len(more) == 2 and taken.isdisjoint(c.host_id for c in more)
    third, none = hosts_claim(A100, 1, holder="pool:3")
    assert none == [] and third.allocation.explanation.code == "not_enough_free"
    assert "6 are in use" in third.allocation.explanation.message
    assert claims_release(holder="pool:1") == 4
    assert hosts_select(A100, 4).feasible


def test_hosts_a_claim_lost_to_another_transaction_count_as_in_use_on_the_retry():
    gpu_fleet()
    first = hosts_select(A100, 2)
    lost = {h["id"] for h in first.hosts}
    retry = hosts_select(A100, 2, exclude=lost)
    assert retry.feasible and not lost & {h["id"] for h in retry.hosts}
    assert retry.unavailable["in use"] == first.unavailable.get("in use", 0) + 2
    assert retry.free == first.free - 2 and retry.matching == first.matching
    assert hosts_select(A100, 2).hosts == first.hosts  # the next selection is not excluding anything


def test_a_claimed_host_is_not_selected_even_by_a_stale_selection():
    gpu_fleet()
    first, claims = hosts_claim(Requirement.parse("cores>=64"), 1, holder="a")
    assert names(first) == ["n1"]
    second = hosts_select(Requirement.parse("cores>=64"), 1)
    assert names(second) == ["n2"]
    with pytest.raises(IntegrityError, match="hostclaim_one_active_per_host"), transaction.atomic():
        HostClaim.objects.create(host_id=claims[0].host_id, holder="b")


CLAIMER = """
import json, os, sys, time
import django
django.setup()
from hosts.requirements import Requirement
from hosts.selection import hosts_claim
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
selection, claims = hosts_claim(Requirement.parse("gpu:nvidia-a100>=8"), 2, holder=sys.argv[1])
print(json.dumps({"holder": sys.argv[1], "hosts": sorted(c.host_id for c in claims)}))
"""


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_from_several_processes_never_share_a_host():
    gpu_fleet()  # six free a100 hosts: three claims of two can succeed, no more
    env = child_env(
        DATABASE_URL=database_url(connection.settings_dict),
        DJANGO_SETTINGS_MODULE="teapot_portal.settings",
        TEAPOT_EMBEDDED_AUTOSTART="0",
        DEBUG="1",
        LOG_LEVEL="WARNING",
    )
    start = time.time() + 4
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, f"p{i}", str(start)],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    winners = [r for r in results if r["hosts"]]
    assert len(winners) == 3
    claimed = [pk for r in winners for pk in r["hosts"]]
    assert len(claimed) == len(set(claimed)) == 6
    active = HostClaim.objects.filter(released_at__isnull=True)
    assert active.count() == 6 and active.values("host").distinct().count() == 6
