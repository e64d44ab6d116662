"""Provisioning through the real ``kubernetes`` client against the strict fake API server: every
object the reconciles write (labels on BareMetalHosts, the cluster's and the pool's Cluster API
objects) is validated by the server against the upstream CRD schemas (422 otherwise).

Controllers do not run here: the test plays CAPM3 and Cluster API by writing their objects
(``put_object``) where the lab would, and checks Teapot follows them.
"""

from __future__ import annotations

import pytest

from hosts.classify import hosts_classify
from hosts.models import Host
from hosts.services import hosts_resync
from teapot_portal.gateway import builders, kinds
from teapot_portal.gateway.kube import KubernetesGateway
from tenants import provisioning
from tenants.clusters import cluster_create, node_pool_create, node_pool_scale
from tenants.models import NodePool, PoolHost
from tests.fakekube import FakeKubeServer
from tests.inventory import bmh, ensure_rules

NS = "teapot"

pytestmark = pytest.mark.django_db


@pytest.fixture
def server():
    with FakeKubeServer() as srv:
        yield srv


@pytest.fixture
def gateway(server):
    return KubernetesGateway(server.api_client(), NS, retries=1, backoff=0.01, sleep=lambda s: None)


@pytest.fixture
def fleet(server, gateway, world):
    ensure_rules()
    for i in range(3):
        server.put_object(bmh(f"gpu-{i}", profile="gpu-a100", state="available"))
        server.put_object(bmh(f"gen-{i}", profile="general", state="available"))
    hosts_resync(gateway=gateway)
    for i, host in enumerate(Host.objects.order_by("name")):
        host.location = {"site": "lab", "room": "a", "row": "1", "rack": f"r{i % 3}"}
        host.save(update_fields=["location"])
    hosts_classify()
    return server


def labelled(server, uid: str) -> set[str]:
    return {
        o["metadata"]["name"]
        for o in server.objects("BareMetalHost", NS)
        if (o["metadata"].get("labels") or {}).get(builders.LABEL_NODE_POOL) == uid
    }


def bind(server, pool: NodePool, host: str, index: int, *, node: bool) -> None:
    """What CAPM3 and Cluster API do when a Machine of the pool takes ``host``."""
    cluster = pool.cluster.object_name
    machine, m3m = f"{pool.object_name}-m{index}", f"{pool.object_name}-m3m{index}"
    labels = {builders.CAPI_CLUSTER_NAME: cluster, builders.CAPI_DEPLOYMENT_NAME: pool.object_name}
    server.put_object(
        {
            "apiVersion": kinds.METAL3MACHINE.api_version,
            "kind": "Metal3Machine",
            "metadata": {
                "name": m3m,
                "namespace": NS,
                "labels": labels,
                "annotations": {"metal3.io/BareMetalHost": f"{NS}/{host}"},
            },
            "spec": {"image": {"url": pool.image.url, "checksum": pool.image.checksum}},
        }
    )
    machine_obj = {
        "apiVersion": kinds.MACHINE.api_version,
        "kind": "Machine",
        "metadata": {"name": machine, "namespace": NS, "labels": labels},
        "spec": {
            "clusterName": cluster,
            "bootstrap": {"dataSecretName": f"{machine}-bootstrap"},
            "infrastructureRef": {
                "apiGroup": kinds.METAL3MACHINE.group,
                "kind": "Metal3Machine",
                "name": m3m,
            },
        },
        "status": {"phase": "Running" if node else "Provisioning"},
    }
    if node:
        machine_obj["status"]["nodeRef"] = {"name": host}
    server.put_object(machine_obj)
    obj = server.get_object("BareMetalHost", NS, host)
    obj["spec"]["consumerRef"] = {
        "apiVersion": kinds.METAL3MACHINE.api_version,
        "kind": "Metal3Machine",
        "name": m3m,
        "namespace": NS,
    }
    obj["status"]["provisioning"]["state"] = "provisioned" if node else "provisioning"
    server.put_object(obj)


def test_a_pool_is_labelled_applied_and_followed_through_the_real_client(fleet, gateway, world):
    cluster = cluster_create(tenant=world.physics, name="vision", actor=world.alice)
    pool = node_pool_create(
        cluster=cluster, name="gpu", quota_class="gpu-a100", image=world.image, replicas=2, actor=world.alice
    )
    assert provisioning.cluster_reconcile(cluster.pk, gateway=gateway) == "provisioning"
    for kind in ("Cluster", "KamajiControlPlane", "Metal3Cluster"):
        assert fleet.get_object(kind, NS, cluster.object_name) is not None

    provisioning.node_pool_reconcile(pool.pk, gateway=gateway)
    held = {ph.host.name for ph in PoolHost.objects.filter(pool=pool).select_related("host")}
    assert len(held) == 2 and all(name.startswith("gpu-") for name in held)
    assert labelled(fleet, pool.uid) == held  # exactly the hosts Teapot chose, nothing else
    md = fleet.get_object("MachineDeployment", NS, pool.object_name)
    assert md["spec"]["replicas"] == 2
    template = md["spec"]["template"]["spec"]["infrastructureRef"]["name"]
    m3mt = fleet.get_object("Metal3MachineTemplate", NS, template)
    assert m3mt["spec"]["template"]["spec"]["hostSelector"]["matchLabels"] == {builders.LABEL_NODE_POOL: pool.uid}
    assert fleet.get_object("MachineHealthCheck", NS, pool.object_name) is not None

    first, second = sorted(held)
    bind(fleet, pool, first, 0, node=True)
    bind(fleet, pool, second, 1, node=False)
    hosts_resync(gateway=gateway)
    provisioning.node_pool_reconcile(pool.pk, gateway=gateway)
    states = dict(PoolHost.objects.filter(pool=pool).values_list("host__name", "state"))
    assert states == {first: PoolHost.State.READY, second: PoolHost.State.PROVISIONING}
    pool.refresh_from_db()
    assert (pool.ready, pool.desired, pool.phase) == (1, 2, NodePool.Phase.SCALING)

    writes = fleet.resource_version
    provisioning.node_pool_reconcile(pool.pk, gateway=gateway)
    assert fleet.resource_version == writes  # level-triggered: nothing left to change


def test_an_autoscaled_pool_carries_bounds_and_capacity_but_no_replicas(fleet, gateway, world):
    cluster = cluster_create(tenant=world.physics, name="batch", actor=world.alice)
    pool = node_pool_create(
        cluster=cluster,
        name="gpu",
        quota_class="gpu-a100",
        image=world.image,
        replicas=None,
        autoscale_min=0,
        autoscale_max=3,
        actor=world.alice,
    )
    provisioning.cluster_reconcile(cluster.pk, gateway=gateway)
    provisioning.node_pool_reconcile(pool.pk, gateway=gateway)
    md = fleet.get_object("MachineDeployment", NS, pool.object_name)
    annotations = md["metadata"]["annotations"]
    assert annotations[builders.AUTOSCALER_MIN] == "0" and annotations[builders.AUTOSCALER_MAX] == "3"
    assert annotations[f"{builders.CAPACITY_PREFIX}gpu-count"] == "8"
    assert "replicas" not in md["spec"] or md["spec"]["replicas"] in (None, 0)
    assert not PoolHost.objects.filter(pool=pool).exists()

    node_pool_scale(pool=pool, replicas=0, actor=world.alice)  # to a fixed size of zero
    provisioning.node_pool_reconcile(pool.pk, gateway=gateway)
    md = fleet.get_object("MachineDeployment", NS, pool.object_name)
    assert md["spec"]["replicas"] == 0
