"""The reservation lifecycle in the lab: bookings made real on time, with the lab's simulated
clock driving both the simulated controllers and the lifecycle (``now=`` the lab's time).

After each scenario, :func:`assert_every_host_accounted_for` checks the issue's invariant: every
host is free, allocated to exactly one pool, in cleaning, in maintenance or in error.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from hosts.models import FleetSettings, Host, HostStateChange
from reservations.lifecycle import reservations_reconcile
from reservations.models import HostBooking, Reservation
from reservations.services import reservation_cancel, reservation_create, reservation_release
from teapot_portal.gateway import builders, kinds
from tenants import provisioning
from tenants.clusters import cluster_create, node_pool_create, node_pool_delete, node_pool_scale
from tenants.models import AuditEntry, NodePool, PoolHost
from tests.inventory import ensure_rules
from tests.labfleet import Lab, assert_every_host_accounted_for, cache_crd_registry, eight_host_lab

pytestmark = pytest.mark.django_db

State = Reservation.State
TAINT = "teapot.io/reservation-pending"


@pytest.fixture(autouse=True)
def crd_registry(monkeypatch):
    return cache_crd_registry(monkeypatch)


@pytest.fixture
def lab(world):
    return eight_host_lab()


def settle(lab: Lab, rounds: int = 1, seconds: float = 60) -> None:
    """Every cluster and pool reconciled at the lab's time, then time passes."""
    for _ in range(rounds):
        provisioning.reconcile_all(gateway=lab.gw, now=lab.clock.now())
        lab.run(seconds)


def step(lab: Lab, seconds: float = 30) -> None:
    """What beat does, in the lab's time: the lifecycle, every reconcile, then time passes."""
    reservations_reconcile(now=lab.clock.now())
    settle(lab, 1, seconds)


def run_until(lab: Lab, moment, seconds: float = 30) -> None:
    while lab.clock.now() < moment:
        step(lab, min(seconds, max(1.0, (moment - lab.clock.now()).total_seconds())))
    reservations_reconcile(now=lab.clock.now())


def held(pool: NodePool) -> list[PoolHost]:
    return list(PoolHost.objects.filter(pool=pool, released_at__isnull=True).select_related("host"))


def taints(lab: Lab, pool: NodePool) -> list[str]:
    md = lab.gw.get(kinds.MACHINEDEPLOYMENT, pool.object_name)
    return [t["key"] for t in md["spec"]["template"]["spec"].get("taints") or []]


def reload(r: Reservation) -> Reservation:
    r.refresh_from_db()
    return r


def audit(action: str, **filters) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action=action, **filters))


def empty_pool(world, lab: Lab, tenant, name: str, quota_class: str, *, cluster_name: str = "vision", actor=None):
    cluster = cluster_create(tenant=tenant, name=cluster_name, actor=actor or world.alice)
    pool = node_pool_create(
        cluster=cluster, name=name, quota_class=quota_class, image=world.image, replicas=0, actor=actor or world.alice
    )
    settle(lab, 4, 60)  # the hosted control plane comes up; the pool has no workers
    return pool


def learned(prefix: str, seconds: list[float]) -> None:
    """The provisioning history the lead is learned from: past provisionings of these hosts (in
    the lab, metadata cleaning before the deployment makes them ~25 minutes, not 15)."""
    from django.core.cache import cache

    hosts = list(Host.objects.filter(name__startswith=prefix).order_by("name"))
    base = timezone.now() - timedelta(days=1)
    rows = []
    for i, (host, took) in enumerate(zip(hosts, seconds, strict=False)):
        start = base + timedelta(hours=i)
        rows.append(
            HostStateChange(host=host, field="provisioning_state", old="available", new="provisioning", at=start)
        )
        rows.append(
            HostStateChange(
                host=host,
                field="provisioning_state",
                old="provisioning",
                new="provisioned",
                at=start + timedelta(seconds=took),
            )
        )
    HostStateChange.objects.bulk_create(rows)
    cache.clear()


def book(world, lab: Lab, pool: NodePool, count: int, starts_in: timedelta, hours: float = 3, **extra):
    now = lab.clock.now()
    extra.setdefault("acting_user", world.alice)
    r = reservation_create(
        tenant=pool.cluster.tenant,
        node_pool=pool,
        count=count,
        starts_at=(now + starts_in).replace(microsecond=0),
        duration=hours,
        now=now,
        **extra,
    )
    assert r.state == State.CONFIRMED, r.message
    return r


# ============================================================================ on time


def test_a_booking_made_ahead_is_ready_at_its_start_tainted_until_then_and_handed_off_at_its_end(world, lab):
    pool = empty_pool(world, lab, world.physics, "train", "gpu-a100")
    learned("gpu-", [1500, 1520, 1560])
    r = book(world, lab, pool, 2, timedelta(hours=2), name="training run")
    assert r.starts_at - r.prepare_at == timedelta(seconds=1560 + 60)  # the p95, and a minute to notice
    planned = set(r.bookings.values_list("host__name", flat=True))
    assert len(planned) == 2 and r.prepare_at < r.starts_at

    # Nothing happens before preparation starts: no host is taken early.
    run_until(lab, r.prepare_at - timedelta(seconds=60), seconds=600)
    assert reload(r).state == State.CONFIRMED
    assert not held(pool)

    # Preparation: exactly the planned hosts, provisioned while tainted.
    run_until(lab, r.prepare_at)
    step(lab)
    assert reload(r).state == State.PREPARING
    assert "Preparing since" in r.message and all(name in r.message for name in planned)
    assert {ph.host.name for ph in held(pool)} == planned
    assert taints(lab, pool) == [TAINT]
    run_until(lab, r.starts_at - timedelta(seconds=1), seconds=20)
    pool.refresh_from_db()
    assert pool.ready == 2, pool.message  # Ready before the start...
    assert reload(r).state == State.PREPARING
    assert taints(lab, pool) == [TAINT]  # ... and still tainted
    assert_every_host_accounted_for()

    # The start: active, the taint goes.
    run_until(lab, r.starts_at + timedelta(seconds=30))
    step(lab)
    assert reload(r).state == State.ACTIVE
    assert taints(lab, pool) == []
    assert NodePool.objects.get(pk=pool.pk).ready == 2

    # The end: completed, the pool scales down, the hosts are handed off.
    run_until(lab, r.ends_at, seconds=1800)
    step(lab)
    assert reload(r).state == State.COMPLETED
    assert "hosts are handed off" in r.message
    for _ in range(40):
        step(lab, 60)
        if not held(pool):
            break
    assert not held(pool)
    lab.run(900)
    assert_every_host_accounted_for()
    actions = list(
        AuditEntry.objects.filter(target_type="reservation", target_id=str(r.pk))
        .order_by("pk")
        .values_list("action", flat=True)
    )
    assert actions[-3:] == ["reservation.preparing", "reservation.active", "reservation.completed"]


@pytest.fixture
def behind(db):
    """The lab's clock two hours behind the wall clock: an early release ends a booking at the
    wall clock's now, which must fall inside the window the lab's time booked."""
    from teapot_portal.gateway.lab.models import LabClock

    LabClock.objects.update_or_create(
        pk=1, defaults={"current": timezone.now().replace(microsecond=0) - timedelta(hours=2)}
    )


def test_an_early_release_hands_the_hosts_off_at_once(world, behind, lab):
    pool = empty_pool(world, lab, world.physics, "train", "gpu-a100")
    r = book(world, lab, pool, 1, timedelta(minutes=30), hours=4)
    run_until(lab, r.starts_at + timedelta(seconds=30), seconds=60)
    assert reload(r).state == State.ACTIVE
    assert r.starts_at < timezone.now() < r.ends_at
    reservation_release(reservation=r, acting_user=world.alice)
    assert reload(r).state == State.COMPLETED and "Released early" in r.message
    for _ in range(40):
        step(lab, 60)
        if not held(pool):
            break
    assert not held(pool) and NodePool.objects.get(pk=pool.pk).desired == 0
    lab.run(900)
    assert_every_host_accounted_for()


def test_cancelling_while_preparing_releases_the_hosts(world, lab):
    pool = empty_pool(world, lab, world.physics, "train", "gpu-a100")
    r = book(world, lab, pool, 2, timedelta(minutes=40))
    run_until(lab, r.prepare_at + timedelta(seconds=120), seconds=120)
    assert reload(r).state == State.PREPARING and len(held(pool)) == 2
    reservation_cancel(reservation=r, acting_user=world.alice)
    assert reload(r).state == State.CANCELLED and not r.bookings.exists()
    for _ in range(40):
        step(lab, 60)
        if not held(pool):
            break
    assert not held(pool)
    assert NodePool.objects.get(pk=pool.pk).desired == 0
    lab.run(900)
    assert_every_host_accounted_for()


# ============================================================================ pre-emption


def test_a_guaranteed_booking_takes_back_the_least_disruptive_spot_booking_after_notice(world, lab):
    """Four general hosts. genomics runs two pre-emptible bookings: "big" (2 hosts, started
    last) and "small" (1 host, started first); physics' standing pool holds the fourth, within
    its guarantee. A guaranteed physics booking then needs one host: "small" goes — a whole
    booking of one host disrupts less than one of two, however recently the other started."""
    FleetSettings.objects.filter(pk=1).update(preemption_notice_seconds=120)
    spot = empty_pool(world, lab, world.genomics, "spot", "general", cluster_name="seq", actor=world.carol)
    small = book(world, lab, spot, 1, timedelta(minutes=30), hours=6, priority="preemptible", acting_user=world.carol)
    big = book(world, lab, spot, 2, timedelta(minutes=45), hours=6, priority="preemptible", acting_user=world.carol)
    cluster = cluster_create(tenant=world.physics, name="vision", actor=world.alice)
    standing = node_pool_create(
        cluster=cluster, name="cpu", quota_class="general", image=world.image, replicas=1, actor=world.alice
    )
    mine = node_pool_create(
        cluster=cluster, name="train", quota_class="general", image=world.image, replicas=0, actor=world.alice
    )
    run_until(lab, big.starts_at + timedelta(seconds=30), seconds=120)
    assert (reload(small).state, reload(big).state) == (State.ACTIVE, State.ACTIVE)
    assert len(held(spot)) == 3 and len(held(standing)) == 1
    assert_every_host_accounted_for()

    guaranteed = book(world, lab, mine, 1, timedelta(hours=2), hours=2, priority="guaranteed")
    run_until(lab, guaranteed.prepare_at + timedelta(seconds=30), seconds=300)
    step(lab, 0)
    assert reload(guaranteed).state == State.PREPARING
    small_host = small.bookings.get().host_id
    noticed = PoolHost.objects.filter(pool=spot, released_at__isnull=True, preempt_at__isnull=False)
    assert list(noticed.values_list("host_id", flat=True)) == [small_host]
    assert noticed.get().preempted_for_id == mine.pk
    assert reload(small).state == State.PREEMPTED
    assert "Pre-empted for physics/vision/train" in small.message and "notice" in small.message
    assert reload(big).state == State.ACTIVE  # untouched
    assert PoolHost.objects.filter(pool=standing, released_at__isnull=True).count() == 1  # a guarantee stays
    notices = audit("host.preempt_notice", target_id=str(small_host))
    assert {e.tenant_id for e in notices} == {world.physics.pk, world.genomics.pk}
    assert audit("reservation.preempted", target_id=str(small.pk))
    # The notice began before the preparation by itself plus the cleaning, so at the preparation
    # the host has left the spot pool already and is being cleaned for physics.
    assert noticed.get().preempt_at <= lab.clock.now() and noticed.get().state == PoolHost.State.RELEASING
    assert NodePool.objects.get(pk=spot.pk).ready == 2

    # The notice runs out: the host leaves, is cleaned, and joins the guaranteed booking's pool.
    for _ in range(40):
        step(lab, 60)
        if NodePool.objects.get(pk=mine.pk).ready == 1:
            break
    assert [ph.host_id for ph in held(mine)] == [small_host]
    assert len(held(spot)) == 2 and reload(big).state == State.ACTIVE
    assert_every_host_accounted_for()


def test_a_planned_host_held_by_a_borrowed_standing_pool_is_reclaimed_before_preparation(world, lab):
    """genomics' standing pool holds two general hosts (its guarantee); physics books the other
    two for later; genomics then grows by one and borrows a planned host (the booking is hours
    away). It gets notice at prepare − notice − hand-off, and the host waits, free, for the
    preparation."""
    FleetSettings.objects.filter(pk=1).update(preemption_notice_seconds=120)
    mine = empty_pool(world, lab, world.physics, "train", "general")
    lending = cluster_create(tenant=world.genomics, name="seq", actor=world.carol)
    greedy = node_pool_create(
        cluster=lending, name="cpu", quota_class="general", image=world.image, replicas=2, actor=world.carol
    )
    settle(lab, 2, 60)
    r = book(world, lab, mine, 2, timedelta(hours=4), hours=2, priority="guaranteed")
    planned = set(r.bookings.values_list("host_id", flat=True))
    assert not planned & {ph.host_id for ph in held(greedy)}  # the plan prefers hosts free now
    node_pool_scale(pool=greedy, replicas=3, actor=world.carol)
    settle(lab, 2, 60)
    borrowed = PoolHost.objects.get(pool=greedy, host_id__in=planned, released_at__isnull=True)
    assert not borrowed.guaranteed

    notice, handoff = timedelta(seconds=120), timedelta(seconds=600)
    reservations_reconcile(now=r.prepare_at - notice - handoff - timedelta(minutes=5))
    assert PoolHost.objects.get(pk=borrowed.pk).preempt_at is None  # not yet
    run_until(lab, r.prepare_at - notice - handoff + timedelta(seconds=5), seconds=600)
    borrowed.refresh_from_db()
    assert borrowed.preempt_at is not None and borrowed.preempted_for_id == mine.pk
    assert borrowed.preempt_at >= r.prepare_at - handoff - timedelta(seconds=1)  # the full notice, and no earlier
    assert audit("host.preempt_notice", target_id=str(borrowed.host_id), tenant=world.genomics)
    assert audit("host.preempt_notice", target_id=str(borrowed.host_id), tenant=world.physics)

    run_until(lab, r.prepare_at - timedelta(seconds=1), seconds=30)
    borrowed.refresh_from_db()
    assert borrowed.state != PoolHost.State.READY  # it left greedy at the end of the notice
    assert not held(mine) and reload(r).state == State.CONFIRMED  # nothing joins before preparation
    # ... and greedy does not take it back: the booking needs it now.
    assert len([ph for ph in held(greedy) if ph.state != PoolHost.State.RELEASING]) == 2
    for _ in range(20):
        step(lab, 30)
        if {ph.host_id for ph in held(mine)} == planned:
            break
    assert reload(r).state == State.PREPARING
    assert {ph.host_id for ph in held(mine)} == planned
    assert_every_host_accounted_for()


# ============================================================================ reminders and failures


def test_the_reminder_is_emailed_once_to_owners_and_members(world, lab, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    FleetSettings.objects.filter(pk=1).update(reservation_reminder_minutes=30)
    pool = empty_pool(world, lab, world.physics, "train", "gpu-a100")
    r = book(world, lab, pool, 1, timedelta(minutes=30), hours=1, name="nightly")
    run_until(lab, r.starts_at + timedelta(seconds=30), seconds=120)
    assert reload(r).state == State.ACTIVE
    reservations_reconcile(now=r.ends_at - timedelta(minutes=31))
    assert not mail.outbox
    reservations_reconcile(now=r.ends_at - timedelta(minutes=29))
    reservations_reconcile(now=r.ends_at - timedelta(minutes=20))
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert sorted(message.to) == ["alice@physics.example", "dave@physics.example"]  # bob only views
    assert "nightly" in message.subject and "ends in" in message.subject
    assert reload(r).reminded_at is not None


def test_a_booking_whose_pool_is_deleted_fails_with_the_reason(world, lab):
    pool = empty_pool(world, lab, world.physics, "train", "gpu-a100")
    r = book(world, lab, pool, 2, timedelta(hours=2))
    node_pool_delete(pool=pool, actor=world.alice)
    step(lab)
    assert reload(r).state == State.FAILED
    assert "node pool train was deleted" in r.message
    assert not HostBooking.objects.filter(reservation=r).exists()
    assert audit("reservation.failed", target_id=str(r.pk))
    assert_every_host_accounted_for()


def test_a_lifecycle_run_twice_changes_nothing_more(world, lab):
    pool = empty_pool(world, lab, world.physics, "train", "gpu-a100")
    r = book(world, lab, pool, 1, timedelta(minutes=30))
    now = r.prepare_at + timedelta(seconds=5)
    first = reservations_reconcile(now=now)
    second = reservations_reconcile(now=now)
    assert first["preparing"] == 1 and second["preparing"] == 0
    assert AuditEntry.objects.filter(target_id=str(r.pk), action="reservation.preparing").count() == 1
    provisioning.reconcile_all(gateway=lab.gw)
    assert len(held(pool)) == 1


# ============================================================================ the real client


def test_the_pending_taint_is_applied_and_removed_through_the_real_client(world):
    """The taint on the MachineDeployment's template, written through the ``kubernetes``
    client to the strict fake API server (422 on anything the CRD refuses), and gone at the start
    (server-side apply drops a field its manager no longer sends)."""
    from hosts.services import hosts_resync
    from teapot_portal.gateway.kube import KubernetesGateway
    from tests.fakekube import FakeKubeServer
    from tests.test_provisioning_kube import NS as KUBE_NS
    from tests.test_provisioning_kube import bmh

    ensure_rules()
    with FakeKubeServer() as server:
        gateway = KubernetesGateway(server.api_client(), KUBE_NS, retries=1, backoff=0.01, sleep=lambda s: None)
        for i in range(2):
            server.put_object(bmh(f"gpu-{i}", profile="gpu-a100", state="available"))
        for i in range(4):  # the standing general guarantees are promised hosts too
            server.put_object(bmh(f"gen-{i}", profile="general", state="available"))
        hosts_resync(gateway=gateway)
        from hosts.classify import hosts_classify

        for i, host in enumerate(Host.objects.order_by("name")):
            host.location = {"site": "lab", "room": "a", "row": "1", "rack": f"r{i % 3}"}
            host.save(update_fields=["location"])
        hosts_classify()
        cluster = cluster_create(tenant=world.physics, name="vision", actor=world.alice)
        pool = node_pool_create(
            cluster=cluster, name="train", quota_class="gpu-a100", image=world.image, replicas=0, actor=world.alice
        )
        provisioning.cluster_reconcile(cluster.pk, gateway=gateway)
        now = timezone.now()
        r = reservation_create(
            tenant=world.physics,
            node_pool=pool,
            count=1,
            starts_at=now + timedelta(hours=1),
            duration=2,
            acting_user=world.alice,
            now=now,
        )
        assert r.state == State.CONFIRMED, r.message

        def template_taints():
            md = server.get_object("MachineDeployment", KUBE_NS, pool.object_name)
            return md["spec"]["replicas"], md["spec"]["template"]["spec"].get("taints")

        provisioning.node_pool_reconcile(pool.pk, gateway=gateway, now=r.prepare_at - timedelta(minutes=1))
        assert template_taints() == (0, None)
        reservations_reconcile(now=r.prepare_at + timedelta(seconds=1))
        provisioning.node_pool_reconcile(pool.pk, gateway=gateway, now=r.prepare_at + timedelta(seconds=2))
        assert template_taints() == (
            1,
            [{"key": TAINT, "effect": "NoSchedule", "propagation": "Always"}],
        )
        assert [ph.host_id for ph in held(pool)] == list(r.bookings.values_list("host_id", flat=True))
        reservations_reconcile(now=r.starts_at + timedelta(seconds=1))
        provisioning.node_pool_reconcile(pool.pk, gateway=gateway, now=r.starts_at + timedelta(seconds=2))
        assert reload(r).state == State.ACTIVE
        replicas, left = template_taints()
        assert replicas == 1 and not left


def test_at_the_end_the_booked_hosts_leave_and_the_standing_host_stays(world, lab):
    """A pool scaled up during its booking: its standing host is the newest Machine, the one
    Cluster API would delete first on its own. The booking's Machines are marked instead."""
    pool = empty_pool(world, lab, world.physics, "train", "gpu-a100")
    r = book(world, lab, pool, 2, timedelta(minutes=40), hours=2)
    planned = set(r.bookings.values_list("host__name", flat=True))
    run_until(lab, r.starts_at + timedelta(seconds=30), seconds=60)
    assert reload(r).state == State.ACTIVE
    node_pool_scale(pool=pool, replicas=1, actor=world.alice)
    for _ in range(40):
        step(lab, 60)
        if NodePool.objects.get(pk=pool.pk).ready == 3:
            break
    standing = {ph.host.name for ph in held(pool)} - planned
    assert len(standing) == 1, held(pool)

    run_until(lab, r.ends_at, seconds=600)
    step(lab)
    assert reload(r).state == State.COMPLETED
    marked = [
        m["metadata"]["name"]
        for m in lab.gw.list(kinds.MACHINE)
        if builders.DELETE_MACHINE in (m["metadata"].get("annotations") or {})
    ]
    assert len(marked) == 2
    for _ in range(40):
        step(lab, 60)
        if len(held(pool)) == 1:
            break
    assert {ph.host.name for ph in held(pool)} == standing
    assert NodePool.objects.get(pk=pool.pk).ready == 1
    lab.run(900)
    assert_every_host_accounted_for()


def test_a_booking_on_an_autoscaled_pool_scales_it_up_and_back_to_what_the_autoscaler_asked(world, lab):
    """The autoscaler owns replicas; a booking adds its hosts on top (Teapot scales the
    MachineDeployment, recording its part in teapot.io/reserved-replicas) and takes exactly
    them away at the end, whatever the autoscaler asked for meanwhile."""
    cluster = cluster_create(tenant=world.physics, name="vision", actor=world.alice)
    pool = node_pool_create(
        cluster=cluster,
        name="burst",
        quota_class="gpu-a100",
        image=world.image,
        replicas=None,
        autoscale_min=0,
        autoscale_max=2,
        actor=world.alice,
    )
    settle(lab, 4, 60)
    learned("gpu-", [1500, 1520, 1560])
    r = book(world, lab, pool, 2, timedelta(minutes=40), hours=2)
    planned = set(r.bookings.values_list("host__name", flat=True))

    def md() -> dict:
        return lab.gw.get(kinds.MACHINEDEPLOYMENT, pool.object_name)

    run_until(lab, r.prepare_at, seconds=600)
    run_until(lab, r.starts_at - timedelta(seconds=1), seconds=20)
    assert reload(r).state == State.PREPARING
    assert md()["spec"]["replicas"] == 2
    assert md()["metadata"]["annotations"][builders.RESERVED_REPLICAS] == "2"
    assert NodePool.objects.get(pk=pool.pk).ready == 2  # Ready at the start
    assert {ph.host.name for ph in held(pool)} == planned

    run_until(lab, r.starts_at + timedelta(minutes=5), seconds=60)
    assert reload(r).state == State.ACTIVE
    lab.gw.autoscaler_scale(pool.object_name, 3)  # pods pending: the autoscaler wants one more
    for _ in range(40):
        step(lab, 60)
        if NodePool.objects.get(pk=pool.pk).ready == 3:
            break
    standing = {ph.host.name for ph in held(pool)} - planned
    assert len(standing) == 1

    run_until(lab, r.ends_at, seconds=600)
    step(lab)
    assert reload(r).state == State.COMPLETED
    for _ in range(40):
        step(lab, 60)
        if len(held(pool)) == 1:
            break
    assert md()["spec"]["replicas"] == 1  # the autoscaler's own part stays
    assert md()["metadata"]["annotations"][builders.RESERVED_REPLICAS] == "0"
    assert {ph.host.name for ph in held(pool)} == standing
    lab.run(900)
    assert_every_host_accounted_for()
