"""Provisioning end to end in the lab: clusters and node pools reconciled against the simulated
management cluster (baremetal-operator, CAPM3, Cluster API, Kamaji), with its clock driven by
the test. Every object Teapot and the lab write is validated against the upstream CRDs.

After each scenario, :func:`assert_every_host_accounted_for` checks the issue's invariant: every
host is free, allocated to exactly one pool, in cleaning, in maintenance or in error.
"""

from __future__ import annotations

import pytest
from django.utils import timezone

from hosts.models import FleetSettings, Host, HostClaim
from teapot_portal.gateway import builders, kinds
from teapot_portal.gateway.lab import faults
from teapot_portal.gateway.lab.controllers import Timings
from teapot_portal.gateway.lab.models import LabEvent
from tenants import provisioning
from tenants.clusters import cluster_create, cluster_delete, node_pool_create, node_pool_scale
from tenants.models import Cluster, NodePool, PoolHost
from tests.labfleet import Lab, assert_every_host_accounted_for, cache_crd_registry, eight_host_lab
from tests.tenancy import quota

NS = "teapot"
T = Timings(jitter=0.0)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def crd_registry(monkeypatch):
    return cache_crd_registry(monkeypatch)


@pytest.fixture
def lab(world):
    return eight_host_lab()


def pool_hosts(pool: NodePool) -> list[PoolHost]:
    return list(PoolHost.objects.filter(pool=pool, released_at__isnull=True).select_related("host"))


def until(lab: Lab, check, *, rounds: int = 40, seconds: float = 60) -> None:
    for _ in range(rounds):
        lab.reconcile(1, seconds)
        if check():
            return
    raise AssertionError("the lab never got there")


def test_a_gpu_pool_comes_up_scales_to_zero_and_back(world, lab):
    cluster = cluster_create(tenant=world.physics, name="vision", actor=world.alice)
    pool = node_pool_create(
        cluster=cluster, name="gpu", quota_class="gpu-a100", image=world.image, replicas=2, actor=world.alice
    )
    until(lab, lambda: NodePool.objects.get(pk=pool.pk).phase == NodePool.Phase.READY)
    cluster.refresh_from_db()
    pool.refresh_from_db()
    assert cluster.phase == Cluster.Phase.READY and cluster.control_plane_ready
    assert (pool.ready, pool.desired) == (2, 2)
    held = pool_hosts(pool)
    assert {ph.host.name[:3] for ph in held} == {"gpu"} and {ph.state for ph in held} == {PoolHost.State.READY}
    # physics is guaranteed 1 gpu-a100 host: one is guaranteed, the other borrowed.
    assert sorted(ph.guaranteed for ph in held) == [False, True]
    labelled = {r.name for r in lab.gw.list_hosts(f"{builders.LABEL_NODE_POOL}={pool.uid}")[0]}
    assert labelled == {ph.host.name for ph in held}
    md = lab.gw.get(kinds.MACHINEDEPLOYMENT, pool.object_name)
    assert md["spec"]["replicas"] == 2
    assert_every_host_accounted_for()

    node_pool_scale(pool=pool, replicas=0, actor=world.alice)
    until(lab, lambda: not pool_hosts(pool) and NodePool.objects.get(pk=pool.pk).phase == NodePool.Phase.READY)
    cluster.refresh_from_db()
    assert cluster.phase == Cluster.Phase.READY  # the hosted control plane stays up with no workers
    assert not lab.gw.list_hosts(f"{builders.LABEL_NODE_POOL}={pool.uid}")[0]
    assert_every_host_accounted_for()

    node_pool_scale(pool=pool, replicas=1, actor=world.alice)
    until(lab, lambda: NodePool.objects.get(pk=pool.pk).ready == 1)
    assert_every_host_accounted_for()


def test_a_reconcile_of_a_settled_pool_changes_nothing(world, lab):
    cluster = cluster_create(tenant=world.physics, name="vision", actor=world.alice)
    pool = node_pool_create(
        cluster=cluster, name="cpu", quota_class="general", image=world.image, replicas=2, actor=world.alice
    )
    until(lab, lambda: NodePool.objects.get(pk=pool.pk).phase == NodePool.Phase.READY)
    events = LabEvent.objects.count()
    claims = HostClaim.objects.count()
    provisioning.reconcile_all(gateway=lab.gw)
    provisioning.reconcile_all(gateway=lab.gw)
    assert LabEvent.objects.count() == events  # no write to the management cluster
    assert HostClaim.objects.count() == claims


def test_a_host_whose_machine_is_deleted_is_let_go_and_not_bound_again(world, lab):
    """Someone (a MachineHealthCheck, an admin) deletes a worker's Machine; Cluster API makes a
    replacement, which waits for a host. The old host deprovisions for minutes, then is
    available: had it kept the pool's label, CAPM3 would bind it again at once and the pool
    would wait a whole cleaning and provisioning for it. Teapot unlabels it as soon as the
    Machine is deleting, lets it go, and gives the replacement another host."""
    cluster = cluster_create(tenant=world.physics, name="vision", actor=world.alice)
    pool = node_pool_create(
        cluster=cluster, name="cpu", quota_class="general", image=world.image, replicas=1, actor=world.alice
    )
    until(lab, lambda: NodePool.objects.get(pk=pool.pk).phase == NodePool.Phase.READY)
    (first,) = pool_hosts(pool)
    (binding,) = [b for b in lab.gw.machine_bindings(cluster.object_name) if b.host == first.host.name]
    lab.gw.delete(kinds.MACHINE, binding.machine)
    lab.run(1)  # Cluster API: the Machine is deleting, its replacement waits for a host
    until(lab, lambda: NodePool.objects.get(pk=pool.pk).phase == NodePool.Phase.READY)
    first.refresh_from_db()
    assert first.released_at is not None and first.state == PoolHost.State.RELEASED
    (now,) = pool_hosts(pool)
    assert now.host_id != first.host_id and now.state == PoolHost.State.READY
    assert not PoolHost.objects.filter(state=PoolHost.State.PROVISIONING, ready_at__isnull=False).exists()
    assert_every_host_accounted_for()


def test_a_host_that_fails_to_provision_is_replaced_and_left_in_maintenance(world, lab):
    cluster = cluster_create(tenant=world.physics, name="vision", actor=world.alice)
    faults.inject("provisioning_error", host="gen-0", count=5)
    pool = node_pool_create(
        cluster=cluster, name="cpu", quota_class="general", image=world.image, replicas=4, actor=world.alice
    )
    # Four general hosts and one fails: the pool can only reach 3.
    until(lab, lambda: NodePool.objects.get(pk=pool.pk).ready == 3)
    pool.refresh_from_db()
    assert pool.replacements == 1
    failed = Host.objects.get(name="gen-0")
    assert failed.maintenance and "failed to provision" in failed.maintenance_reason
    assert PoolHost.objects.filter(pool=pool, host=failed, state=PoolHost.State.FAILED).exists()
    assert "Waiting for capacity" in pool.message
    assert_every_host_accounted_for()


def test_too_many_failures_fail_the_pool_with_the_reason(world, lab):
    FleetSettings.objects.filter(pk=1).update(provisioning_attempts=1)
    faults.inject("provisioning_error", probability=1.0)
    cluster = cluster_create(tenant=world.physics, name="vision", actor=world.alice)
    pool = node_pool_create(
        cluster=cluster, name="cpu", quota_class="general", image=world.image, replicas=1, actor=world.alice
    )
    until(lab, lambda: NodePool.objects.get(pk=pool.pk).phase == NodePool.Phase.FAILED, rounds=40, seconds=120)
    pool.refresh_from_db()
    assert "failed to provision" in pool.message and "limit is 1" in pool.message
    assert_every_host_accounted_for()


def test_a_guarantee_pre_empts_borrowed_hosts_after_notice(world, lab):
    FleetSettings.objects.filter(pk=1).update(preemption_notice_seconds=120)
    quota(world.genomics, world.classes["general"], 2, 4)
    quota(world.physics, world.classes["general"], 2, 4)
    lending = cluster_create(tenant=world.genomics, name="seq", actor=world.carol)
    greedy = node_pool_create(
        cluster=lending, name="cpu", quota_class="general", image=world.image, replicas=4, actor=world.carol
    )
    until(lab, lambda: NodePool.objects.get(pk=greedy.pk).ready == 4)
    assert sorted(ph.guaranteed for ph in pool_hosts(greedy)) == [False, False, True, True]

    cluster = cluster_create(tenant=world.physics, name="vision", actor=world.alice)
    mine = node_pool_create(
        cluster=cluster, name="cpu", quota_class="general", image=world.image, replicas=2, actor=world.alice
    )
    lab.reconcile(1, 0)
    noticed = PoolHost.objects.filter(pool=greedy, preempt_at__isnull=False)
    assert noticed.count() == 2 and all(not ph.guaranteed for ph in noticed)
    assert set(noticed.values_list("preempted_for", flat=True)) == {mine.pk}
    assert NodePool.objects.get(pk=greedy.pk).ready == 4  # notice first: nothing leaves yet
    PoolHost.objects.filter(pool=greedy, preempt_at__isnull=False).update(
        preempt_at=timezone.now() - timezone.timedelta(seconds=1)
    )
    until(lab, lambda: NodePool.objects.get(pk=mine.pk).ready == 2)
    assert len(pool_hosts(greedy)) == 2 and all(ph.guaranteed for ph in pool_hosts(greedy))
    assert all(ph.guaranteed for ph in pool_hosts(mine))
    assert_every_host_accounted_for()


def test_an_autoscaled_pool_gets_a_host_when_the_autoscaler_asks(world, lab):
    cluster = cluster_create(tenant=world.physics, name="batch", actor=world.alice)
    pool = node_pool_create(
        cluster=cluster,
        name="gpu",
        quota_class="gpu-a100",
        image=world.image,
        replicas=None,
        autoscale_min=0,
        autoscale_max=10,
        actor=world.alice,
    )
    lab.reconcile(2, 60)
    md = lab.gw.get(kinds.MACHINEDEPLOYMENT, pool.object_name)
    annotations = md["metadata"]["annotations"]
    assert annotations[builders.AUTOSCALER_MIN] == "0"
    assert annotations[builders.AUTOSCALER_MAX] == "4"  # clamped: physics may hold 4 gpu-a100 hosts
    assert annotations[f"{builders.CAPACITY_PREFIX}gpu-count"] == "8"
    assert annotations[f"{builders.CAPACITY_PREFIX}gpu-type"] == "nvidia.com/gpu"
    assert int(annotations[f"{builders.CAPACITY_PREFIX}cpu"]) > 0
    assert not pool_hosts(pool)
    lab.gw.autoscaler_scale(pool.object_name, 2)
    until(lab, lambda: NodePool.objects.get(pk=pool.pk).ready == 2)
    assert NodePool.objects.get(pk=pool.pk).desired == 2
    assert_every_host_accounted_for()


def test_deleting_a_cluster_releases_every_host_and_removes_its_objects(world, lab):
    cluster = cluster_create(tenant=world.physics, name="vision", actor=world.alice)
    pool = node_pool_create(
        cluster=cluster, name="cpu", quota_class="general", image=world.image, replicas=2, actor=world.alice
    )
    until(lab, lambda: NodePool.objects.get(pk=pool.pk).ready == 2)
    cluster_delete(cluster=cluster, actor=world.alice)
    until(lab, lambda: Cluster.objects.get(pk=cluster.pk).deleted_at is not None)
    assert NodePool.objects.get(pk=pool.pk).deleted_at is not None
    assert not PoolHost.objects.filter(released_at__isnull=True).exists()
    assert not lab.gw.list(kinds.MACHINEDEPLOYMENT) and not lab.gw.list(kinds.CLUSTER)
    lab.run(900)
    assert_every_host_accounted_for()


def test_a_worker_killed_mid_reconcile_loses_nothing(world, lab, monkeypatch):
    cluster = cluster_create(tenant=world.physics, name="vision", actor=world.alice)
    pool = node_pool_create(
        cluster=cluster, name="cpu", quota_class="general", image=world.image, replicas=2, actor=world.alice
    )
    lab.reconcile(1, 60)

    def killed(*args, **kwargs):
        raise SystemExit("worker killed")

    # Hosts are claimed (committed), then the worker dies before labelling them.
    scale = node_pool_scale(pool=pool, replicas=3, actor=world.alice)
    original = provisioning._ensure_labels
    monkeypatch.setattr(provisioning, "_ensure_labels", killed)
    with pytest.raises(SystemExit):
        provisioning.node_pool_reconcile(scale.pk, gateway=lab.gw)
    monkeypatch.setattr(provisioning, "_ensure_labels", original)
    until(lab, lambda: NodePool.objects.get(pk=pool.pk).ready == 3)
    assert len(pool_hosts(pool)) == 3
    assert_every_host_accounted_for()


def test_under_faults_every_pool_reaches_its_size_or_says_why(world, lab):
    """10 % provisioning errors, a BMC that stops answering mid-provisioning: the pool still
    reaches its size, and no host is lost."""
    for i in range(4, 10):
        lab.enrol(f"gen-{i}", "general", {"site": "lab", "room": "b", "row": "1", "rack": f"b{i % 3}"})
    lab.run()
    lab.run(400)
    quota(world.physics, world.classes["general"], 2, 10)
    faults.inject("provisioning_error", probability=0.1)
    cluster = cluster_create(tenant=world.physics, name="vision", actor=world.alice)
    pool = node_pool_create(
        cluster=cluster, name="cpu", quota_class="general", image=world.image, replicas=6, actor=world.alice
    )
    lab.reconcile(3, 60)
    victim = pool_hosts(pool)[0].host.name
    faults.inject("bmc_unreachable", host=victim)
    lab.gw.request_reboot(victim)  # the next thing the BMC is asked fails
    until(
        lab,
        lambda: (p := NodePool.objects.get(pk=pool.pk)).ready == 6 or p.phase == NodePool.Phase.FAILED,
        rounds=80,
    )
    pool.refresh_from_db()
    assert pool.ready == 6, pool.message  # seeded draws: one host fails to provision and is replaced
    assert pool.replacements == 1 and Host.objects.filter(maintenance=True).count() == 1
    assert_every_host_accounted_for()


def test_lab_autoscale_is_the_autoscaler_asking(world, lab, settings):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    settings.TEAPOT_PROVISIONER = "lab"
    cluster = cluster_create(tenant=world.physics, name="batch", actor=world.alice)
    pool = node_pool_create(
        cluster=cluster,
        name="gpu",
        quota_class="gpu-a100",
        image=world.image,
        replicas=None,
        autoscale_min=0,
        autoscale_max=2,
        actor=world.alice,
    )
    lab.reconcile(1, 60)
    with pytest.raises(CommandError, match="between 0 and 2"):
        call_command("lab_autoscale", "physics", "batch", "gpu", "5")
    with pytest.raises(CommandError, match="no node pool"):
        call_command("lab_autoscale", "genomics", "batch", "gpu", "1")
    call_command("lab_autoscale", "physics", "batch", "gpu", "1")
    until(lab, lambda: NodePool.objects.get(pk=pool.pk).ready == 1)


def test_a_growing_pool_keeps_its_hard_spread_across_all_its_hosts(world, lab):
    cluster = cluster_create(tenant=world.physics, name="vision", actor=world.alice)
    pool = node_pool_create(
        cluster=cluster,
        name="cpu",
        quota_class="general",
        image=world.image,
        replicas=2,
        policy={"mode": "spread", "level": "rack", "hard": True},
        actor=world.alice,
    )
    lab.reconcile(1, 60)
    node_pool_scale(pool=pool, replicas=3, actor=world.alice)
    lab.reconcile(1, 60)
    racks = [ph.host.location["rack"] for ph in pool_hosts(pool)]
    assert len(racks) == 3 and len(set(racks)) == 3  # one per rack, the first two included
    node_pool_scale(pool=pool, replicas=4, actor=world.alice)  # a fourth host, but only three racks
    lab.reconcile(1, 60)
    pool.refresh_from_db()
    assert len(pool_hosts(pool)) == 3
    assert "Waiting for capacity" in pool.message and "rack" in pool.message
