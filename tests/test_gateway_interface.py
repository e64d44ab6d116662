"""One interface suite, run against both gateway implementations: the `kubernetes` one
through the real client over HTTP to the strict fake API server, and the lab simulation."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest

from teapot_portal.gateway import Expired, Invalid, NotFound, builders, kinds
from teapot_portal.gateway.builders import ClusterSpec, HostEnrolment, NodePoolSpec

NS = "teapot"
ENROLMENT = HostEnrolment(
    name="node-1",
    bmc_address="redfish://10.0.0.1/redfish/v1/Systems/1",
    bmc_username="admin",
    bmc_password="hunter2-bmc",
    boot_mac="52:54:00:00:00:01",
)
CLUSTER = ClusterSpec(tenant="physics", name="lab", kubernetes_version="1.33.1", endpoint_host="192.0.2.10")
POOL = NodePoolSpec(
    tenant="physics",
    cluster="lab",
    name="workers",
    pool_uid="pool-1",
    kubernetes_version="1.33.1",
    image_url="https://images.example.org/ubuntu.qcow2",
    image_checksum="a" * 64,
    replicas=0,
)


class Harness:
    """Implementation-specific hooks the interface tests need (and nothing else)."""

    def __init__(self, gateway, expire, server=None):
        self.gateway = gateway
        self.expire = expire  # make every earlier resourceVersion too old to watch from
        self.server = server


# The lab keeps its objects in PostgreSQL: its parameter is marked (a fixture asking for "db" by
# itself runs too late when it is the first database user of a session).
@pytest.fixture(params=["kubernetes", pytest.param("lab", marks=pytest.mark.django_db)])
def harness(request, tmp_path):
    if request.param == "kubernetes":
        from teapot_portal.gateway.kube import KubernetesGateway
        from tests.fakekube import FakeKubeServer

        with FakeKubeServer() as server:
            client = server.api_client()
            yield Harness(KubernetesGateway(client, NS, retries=2, backoff=0.01), server.compact, server)
    else:
        request.getfixturevalue("db")
        from teapot_portal.gateway.lab import watchlog
        from teapot_portal.gateway.lab.gateway import LabGateway

        yield Harness(LabGateway(NS), watchlog.prune_all)


def test_enrol_creates_the_credentials_secret_and_the_host(harness):
    gw = harness.gateway
    host = gw.enrol_host(ENROLMENT)
    assert host.name == "node-1"
    assert host.bmc_address == ENROLMENT.bmc_address
    assert host.boot_mac == "52:54:00:00:00:01"
    assert host.online is True
    assert "hunter2-bmc" not in repr(host)
    secret = gw.get(kinds.SECRET, "node-1-bmc-secret")
    assert base64.b64decode(secret["data"]["password"]).decode() == "hunter2-bmc"
    hosts, resource_version = gw.list_hosts()
    assert [h.name for h in hosts] == ["node-1"] and resource_version


def test_applying_twice_writes_nothing(harness):
    gw = harness.gateway
    first = gw.enrol_host(ENROLMENT)
    again = gw.enrol_host(ENROLMENT)
    assert again.resource_version == first.resource_version
    changed = gw.enrol_host(replace(ENROLMENT, online=False))
    assert changed.resource_version != first.resource_version
    assert changed.online is False


def test_labels_and_annotations_are_set_and_removed(harness):
    gw = harness.gateway
    gw.enrol_host(ENROLMENT)
    host = gw.patch_host_metadata("node-1", labels={"teapot.io/node-pool": "pool-1", "teapot.io/trait-nvme": "true"})
    assert host.labels["teapot.io/node-pool"] == "pool-1"
    host = gw.patch_host_metadata("node-1", labels={"teapot.io/trait-nvme": None})
    assert "teapot.io/trait-nvme" not in host.labels and host.labels["teapot.io/node-pool"] == "pool-1"
    assert [h.name for h in gw.list_hosts("teapot.io/node-pool=pool-1")[0]] == ["node-1"]
    assert gw.list_hosts("teapot.io/node-pool=other")[0] == []
    host = gw.set_host_detached("node-1", True)
    assert host.detached
    assert not gw.set_host_detached("node-1", False).detached
    assert gw.set_host_paused("node-1", True).paused


def test_power(harness):
    gw = harness.gateway
    gw.enrol_host(ENROLMENT)
    assert gw.set_host_online("node-1", False).online is False
    assert gw.set_host_online("node-1", True).online is True


def test_missing_objects(harness):
    gw = harness.gateway
    with pytest.raises(NotFound):
        gw.get_host("ghost")
    with pytest.raises(NotFound):
        gw.get(kinds.CLUSTER, "ghost")
    assert gw.delete(kinds.CLUSTER, "ghost") is False
    assert gw.get_hardware_data("ghost") is None
    with pytest.raises(NotFound):
        gw.get_kubeconfig("ghost")


def test_an_invalid_object_is_refused_with_the_field(harness):
    bmh = builders.baremetalhost(ENROLMENT, NS)
    bmh["spec"]["automatedCleaningMode"] = "sometimes"
    with pytest.raises(Invalid) as error:
        harness.gateway.apply(bmh)
    assert any(c.get("field") == "spec.automatedCleaningMode" for c in error.value.causes)


def test_cluster_and_node_pool_objects(harness):
    gw = harness.gateway
    applied = gw.apply_cluster(CLUSTER) + gw.apply_node_pool(POOL)
    assert [o["kind"] for o in applied] == [
        "Cluster",
        "KamajiControlPlane",
        "Metal3Cluster",
        "Metal3MachineTemplate",
        "KubeadmConfigTemplate",
        "MachineDeployment",
        "MachineHealthCheck",
    ]
    md = gw.get(kinds.MACHINEDEPLOYMENT, "physics-lab-workers")
    assert md["spec"]["replicas"] == 0
    before = md["metadata"]["resourceVersion"]
    gw.apply_node_pool(POOL)
    assert gw.get(kinds.MACHINEDEPLOYMENT, "physics-lab-workers")["metadata"]["resourceVersion"] == before
    gw.apply_node_pool(replace(POOL, replicas=2))
    assert gw.get(kinds.MACHINEDEPLOYMENT, "physics-lab-workers")["spec"]["replicas"] == 2
    assert [o["metadata"]["name"] for o in gw.list(kinds.CLUSTER, "teapot.io/tenant=physics")] == ["physics-lab"]
    assert gw.machine_bindings("physics-lab") == []
    assert gw.delete(kinds.MACHINEHEALTHCHECK, "physics-lab-workers") is True
    assert gw.delete(kinds.MACHINEHEALTHCHECK, "physics-lab-workers") is False


def test_watch_reports_changes_after_a_resource_version(harness):
    gw = harness.gateway
    gw.enrol_host(ENROLMENT)
    _, resource_version = gw.list_hosts()
    gw.patch_host_metadata("node-1", labels={"teapot.io/trait-gpu": "true"})
    for event in gw.watch_hosts(resource_version, timeout_seconds=2):
        if event.type == "MODIFIED" and event.host and "teapot.io/trait-gpu" in event.host.labels:
            assert int(event.resource_version) > int(resource_version)
            break
    else:
        pytest.fail("no MODIFIED event for the label change")


def test_a_too_old_watch_is_expired_so_the_caller_relists(harness):
    gw = harness.gateway
    gw.enrol_host(ENROLMENT)
    _, old = gw.list_hosts()
    gw.patch_host_metadata("node-1", labels={"a": "b"})
    harness.expire()
    gw.patch_host_metadata("node-1", labels={"a": "c"})
    with pytest.raises(Expired):
        for _ in gw.watch_hosts(old, timeout_seconds=2):
            pass
    hosts, fresh = gw.list_hosts()  # the relist gives a usable resourceVersion
    assert hosts[0].labels["a"] == "c" and int(fresh) >= int(old)


def test_follow_relists_after_an_expired_watch_and_carries_on(harness):
    gw = harness.gateway
    gw.enrol_host(ENROLMENT)
    first = next(iter(gw.follow_hosts(timeout_seconds=1)))
    assert first.type == "RELIST" and [h.name for h in first.hosts] == ["node-1"]
    old = first.resource_version
    gw.patch_host_metadata("node-1", labels={"x": "1"})
    harness.expire()
    gw.enrol_host(replace(ENROLMENT, name="node-2", boot_mac="52:54:00:00:00:02"))
    events = gw.follow_hosts(old, timeout_seconds=1)
    relist = next(events)
    assert relist.type == "RELIST"
    assert sorted(h.name for h in relist.hosts) == ["node-1", "node-2"]
    assert int(relist.resource_version) > int(old)
    gw.patch_host_metadata("node-2", labels={"y": "2"})
    for event in events:
        if event.type == "MODIFIED" and event.host.name == "node-2" and event.host.labels.get("y") == "2":
            break
    else:
        pytest.fail("the watch did not go on after the relist")


def test_a_machine_is_marked_to_go_first_and_unmarked(harness):
    gw = harness.gateway
    gw.apply_cluster(CLUSTER)
    labels = {builders.CAPI_CLUSTER_NAME: "physics-lab", builders.CAPI_DEPLOYMENT_NAME: "physics-lab-workers"}
    gw.apply(
        {
            "apiVersion": kinds.MACHINE.api_version,
            "kind": "Machine",
            "metadata": {"name": "physics-lab-workers-m0", "namespace": NS, "labels": labels},
            "spec": {
                "clusterName": "physics-lab",
                "bootstrap": {"dataSecretName": "physics-lab-workers-m0-bootstrap"},
                "infrastructureRef": {"apiGroup": kinds.METAL3MACHINE.group, "kind": "Metal3Machine", "name": "m3m0"},
            },
        }
    )
    assert [b.marked for b in gw.machine_bindings("physics-lab")] == [False]
    gw.mark_machine_for_deletion("physics-lab-workers-m0")
    machine = gw.get(kinds.MACHINE, "physics-lab-workers-m0")
    assert machine["metadata"]["annotations"][builders.DELETE_MACHINE] == "true"
    assert machine["spec"]["clusterName"] == "physics-lab"  # nothing else changed
    assert [b.marked for b in gw.machine_bindings("physics-lab")] == [True]
    gw.mark_machine_for_deletion("physics-lab-workers-m0", marked=False)
    assert builders.DELETE_MACHINE not in (
        gw.get(kinds.MACHINE, "physics-lab-workers-m0")["metadata"].get("annotations") or {}
    )
    with pytest.raises(NotFound):
        gw.mark_machine_for_deletion("nobody")


def test_scaling_for_bookings_writes_replicas_and_the_reserved_count_together(harness):
    gw = harness.gateway
    gw.apply_cluster(CLUSTER)
    autoscaled = replace(POOL, replicas=None, autoscale_min=0, autoscale_max=3)
    gw.apply_node_pool(autoscaled)
    gw.scale_for_bookings("physics-lab-workers", 2, 2)
    md = gw.get(kinds.MACHINEDEPLOYMENT, "physics-lab-workers")
    assert md["spec"]["replicas"] == 2
    assert md["metadata"]["annotations"][builders.RESERVED_REPLICAS] == "2"
    assert md["metadata"]["annotations"][builders.AUTOSCALER_MAX] == "3"  # the rest is left alone
    gw.apply_node_pool(autoscaled)  # Teapot's next apply keeps both (it sets neither)
    md = gw.get(kinds.MACHINEDEPLOYMENT, "physics-lab-workers")
    assert (md["spec"]["replicas"], md["metadata"]["annotations"][builders.RESERVED_REPLICAS]) == (2, "2")
    with pytest.raises(NotFound):
        gw.scale_for_bookings("nobody", 1, 1)
