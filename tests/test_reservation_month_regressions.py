"""What the simulated month (``bench/reservations_month.py``) found, pinned in the lab.

Admission confirms a promised booking (guaranteed or on demand) counting the standing
guarantees and the promised bookings, not borrowed or spot use — pre-emptible bookings "are not
promised anything, so they never make another booking wait" (docs/reservations.md) — so when
nothing else is free, the hosts must come from that use, and in time for the start.

1. The host plan let a spot booking's plan block a promised one: a host planned for a
   pre-emptible booking was no candidate, so the promised booking's plan came out short, and
   the hosts it lacked were looked for only at its preparation (among free hosts).
2. The plan, short of free hosts, took any held host, cheapest first — also one held by a
   guarantee, which the lifecycle drops from the plan when it starts reclaiming (``prepare −
   notice − hand-off``); re-planning picked it again, and again, until the preparation found
   the plan short and took hosts back only then: Ready late by the notice and the cleaning.
   Borrowed or pre-emptible hosts now come first, and a host held by a guarantee is planned
   only while the reclaim has not begun.
3. At preparation, a promised booking still short of hosts (its planned host failed to
   provision, say) took them back from borrowed or pre-emptible use only when it was
   *guaranteed*; an on-demand one waited for the spot booking to end, hours later.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from hosts.classify import hosts_classify
from hosts.models import FleetSettings, Host
from reservations.models import Reservation
from teapot_portal.gateway.lab.models import LabFault
from tenants.clusters import cluster_create, node_pool_create
from tenants.models import NodePool
from tests.labfleet import assert_every_host_accounted_for, cache_crd_registry, eight_host_lab
from tests.tenancy import quota
from tests.test_reservation_lifecycle import book, empty_pool, held, reload, run_until, settle

pytestmark = pytest.mark.django_db

State = Reservation.State


@pytest.fixture(autouse=True)
def crd_registry(monkeypatch):
    return cache_crd_registry(monkeypatch)


@pytest.fixture
def lab(world):
    """Four A100 hosts and four general ones in three racks; genomics may use A100s (no guarantee)."""
    quota(world.genomics, world.classes["gpu-a100"], 0, 4)
    FleetSettings.objects.filter(pk=1).update(preemption_notice_seconds=120)
    return eight_host_lab()


def spot_on_every_a100(world, lab, count: int = 4) -> tuple[NodePool, Reservation]:
    pool = empty_pool(world, lab, world.genomics, "spot", "gpu-a100", cluster_name="seq", actor=world.carol)
    spot = book(
        world, lab, pool, count, timedelta(minutes=30), hours=8, priority="preemptible", acting_user=world.carol
    )
    run_until(lab, spot.starts_at + timedelta(seconds=30), seconds=120)
    assert reload(spot).state == State.ACTIVE and len(held(pool)) == count
    return pool, spot


def test_a_promised_booking_is_planned_on_a_spot_bookings_hosts_and_ready_at_its_start(world, lab):
    """Every A100 serves genomics' spot booking for 8 hours; physics books two, on demand, from
    in two hours. Its plan takes two of the spot booking's hosts (whose own plan now ends where
    physics' begins), the spot booking is pre-empted ahead of the preparation (notice, then
    hand-off) and physics' hosts are Ready at its start."""
    _spot_pool, spot = spot_on_every_a100(world, lab)
    mine = empty_pool(world, lab, world.physics, "train", "gpu-a100")
    r = book(world, lab, mine, 2, timedelta(hours=2), hours=2)
    planned = set(r.bookings.values_list("host_id", flat=True))
    assert len(planned) == 2, "the spot booking's plan must not keep a promised booking from planning"
    for booking in spot.bookings.filter(host_id__in=planned):
        assert booking.during.upper <= r.occupancy.lower  # the spot booking gives way where physics begins

    run_until(lab, r.starts_at - timedelta(seconds=1), seconds=60)
    assert reload(spot).state == State.PREEMPTED
    assert reload(r).state == State.PREPARING
    assert {ph.host_id for ph in held(mine)} == planned
    assert NodePool.objects.get(pk=mine.pk).ready == 2  # Ready at the start
    run_until(lab, r.starts_at + timedelta(seconds=30))
    assert reload(r).state == State.ACTIVE
    lab.run(900)
    assert_every_host_accounted_for()


def test_an_on_demand_booking_whose_host_fails_takes_a_replacement_from_spot_use(world, lab):
    """physics (no A100 guarantee: nothing but the booking can claim hosts for it) books one A100,
    on demand; genomics' spot booking then takes the three others for 8 hours. physics' planned
    host fails to provision during the preparation: the replacement is taken back from the spot
    booking after its notice, not waited for until the spot booking ends."""
    quota(world.physics, world.classes["gpu-a100"], 0, 4)
    mine = empty_pool(world, lab, world.physics, "train", "gpu-a100")
    r = book(world, lab, mine, 1, timedelta(hours=2), hours=3)
    (planned,) = r.bookings.values_list("host__name", flat=True)
    spot_pool, spot = spot_on_every_a100(world, lab, count=3)
    assert planned not in {ph.host.name for ph in held(spot_pool)}
    LabFault.objects.create(kind=LabFault.PROVISIONING_ERROR, host=planned, remaining=1)

    run_until(lab, r.starts_at + timedelta(minutes=45), seconds=60)
    assert reload(r).state == State.ACTIVE
    assert reload(spot).state == State.PREEMPTED, "a promised booking outranks pre-emptible use"
    assert NodePool.objects.get(pk=mine.pk).ready == 1
    assert Host.objects.get(name=planned).maintenance  # the failed host is left for an operator
    lab.run(900)
    assert_every_host_accounted_for()


def test_a_booking_is_planned_on_borrowed_hosts_rather_than_on_a_guarantees_and_ready_at_its_start(world, lab):
    """Every general host is held: physics' standing pool keeps the two cheapest within its
    guarantee, genomics (no guarantee) borrows the other two. physics books two, guaranteed,
    in two hours (its guarantee covers them, its standing pool is within its maximum). The plan
    takes the borrowed hosts — reclaimed ahead of the preparation — not the cheaper ones
    physics' own guarantee keeps, and the hosts are Ready at the start."""
    Host.objects.filter(name__in=["gen-0", "gen-1"]).update(cost_override=Decimal("0.10"))
    hosts_classify()
    quota(world.genomics, world.classes["general"], 0, 6)
    vision = cluster_create(tenant=world.physics, name="vision", actor=world.alice)
    cpu = node_pool_create(cluster=vision, name="cpu", quota_class="general", image=world.image, replicas=2)
    settle(lab, 4, 60)
    seq = cluster_create(tenant=world.genomics, name="seq", actor=world.carol)
    borrow = node_pool_create(cluster=seq, name="cpu", quota_class="general", image=world.image, replicas=2)
    settle(lab, 4, 60)
    assert {ph.host.name for ph in held(cpu)} == {"gen-0", "gen-1"}
    assert {ph.host.name for ph in held(borrow)} == {"gen-2", "gen-3"}
    assert not any(ph.guaranteed for ph in held(borrow))

    train = node_pool_create(cluster=vision, name="train", quota_class="general", image=world.image, replicas=0)
    r = book(world, lab, train, 2, timedelta(hours=2), hours=2, priority="guaranteed")
    assert set(r.bookings.values_list("host__name", flat=True)) == {"gen-2", "gen-3"}

    run_until(lab, r.starts_at - timedelta(seconds=1), seconds=60)
    assert reload(r).state == State.PREPARING
    assert {ph.host.name for ph in held(train)} == {"gen-2", "gen-3"}
    assert NodePool.objects.get(pk=train.pk).ready == 2  # Ready at the start
    assert {ph.host.name for ph in held(cpu)} == {"gen-0", "gen-1"}  # the guarantee kept its hosts
    lab.run(900)
    assert_every_host_accounted_for()
