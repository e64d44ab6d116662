"""Every object the builders produce is valid against the upstream CRD schemas (shared/crds),
for every kind and the interesting variants; the CEL rules that apply are checked by hand."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest

from teapot_portal.gateway import builders, kinds
from teapot_portal.gateway.builders import BuildError, Capacity, ClusterSpec, HostEnrolment, NodePoolSpec, Taint
from teapot_portal.gateway.crdschema import CrdRegistry

NS = "teapot"


@pytest.fixture(scope="module")
def registry():
    from django.conf import settings

    return CrdRegistry.load(settings.TEAPOT_CRD_DIR)


ENROLMENT = HostEnrolment(
    name="r1-rack3-node07",
    bmc_address="redfish+https://10.0.3.7/redfish/v1/Systems/1",
    bmc_username="admin",
    bmc_password="s3cret-pw",
    boot_mac="52:54:00:AB:cd:07",
    root_device_hints={"deviceName": "/dev/nvme0n1", "minSizeGigabytes": 400, "rotational": False},
    labels={"teapot.io/trait-gpu-a100": "true"},
)
CLUSTER = ClusterSpec(tenant="physics", name="lab", kubernetes_version="1.33.1", endpoint_host="192.0.2.10")
POOL = NodePoolSpec(
    tenant="physics",
    cluster="lab",
    name="workers",
    pool_uid="9f0c6a52-4f7e-4c8e-9a43-1b2c3d4e5f60",
    kubernetes_version="v1.33.1",
    image_url="https://images.example.org/ubuntu-24.04.qcow2",
    image_checksum="0" * 64,
    replicas=3,
)
GPU_POOL = replace(
    POOL,
    name="gpu",
    node_labels={"cluster-api/accelerator": "nvidia-a100"},
    capacity=Capacity(cpu=128, memory_gib=1024, gpu_type="nvidia.com/gpu", gpu_count=8, labels={"gpu": "a100"}),
)
KEY_ERASE_POOL = replace(POOL, name="batch", cleaning_mode="disabled", image_format="raw")
AUTOSCALED_POOL = replace(
    POOL,
    name="auto",
    replicas=None,
    autoscale_min=0,
    autoscale_max=8,
    capacity=Capacity(cpu=64, memory_gib=256, taints=("teapot.io/early=true:NoSchedule",)),
    taints=(Taint("teapot.io/reserved-until", "NoSchedule", "1700000000"),),
)

VARIANTS = {
    "bmc-secret": lambda: [builders.bmc_secret(ENROLMENT, NS)],
    "baremetalhost": lambda: [builders.baremetalhost(ENROLMENT, NS)],
    "baremetalhost-ipmi-minimal": lambda: [
        builders.baremetalhost(HostEnrolment("n1", "ipmi://10.0.0.1", "u", "p", "52:54:00:00:00:01", online=False), NS)
    ],
    "cluster": lambda: builders.cluster_objects(CLUSTER, NS),
    "cluster-with-addons": lambda: builders.cluster_objects(
        replace(CLUSTER, addons=("kubevirt", "kata"), control_plane_replicas=3), NS
    ),
    "pool-fixed": lambda: builders.node_pool_objects(POOL, NS),
    "pool-gpu": lambda: builders.node_pool_objects(GPU_POOL, NS),
    "pool-key-erase": lambda: builders.node_pool_objects(KEY_ERASE_POOL, NS),
    "pool-autoscaled": lambda: builders.node_pool_objects(AUTOSCALED_POOL, NS),
    "pool-scaled-to-zero": lambda: builders.node_pool_objects(replace(POOL, replicas=0, health_check=False), NS),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_builder_output_is_valid_against_the_upstream_crds(registry, variant):
    objects = VARIANTS[variant]()
    assert objects
    for obj in objects:
        causes = registry.validate(obj)
        assert causes == [], f"{obj['kind']} {obj['metadata']['name']}: {causes}"
        assert obj["metadata"]["namespace"] == NS
        assert "status" not in obj  # desired state only
        # CEL (not checked by JSON schema): kubeletExtraArgs names must be unique.
        if obj["kind"] == "KubeadmConfigTemplate":
            args = obj["spec"]["template"]["spec"]["joinConfiguration"]["nodeRegistration"]["kubeletExtraArgs"]
            assert len({a["name"] for a in args}) == len(args)


def test_every_written_kind_is_covered():
    produced = {obj["kind"] for make in VARIANTS.values() for obj in make()}
    assert produced == {k.kind for k in kinds.WRITTEN}


def test_endpoint_is_written_in_both_places():
    cluster, kcp, m3c = builders.cluster_objects(CLUSTER, NS)
    assert kcp["spec"]["network"]["serviceAddress"] == m3c["spec"]["controlPlaneEndpoint"]["host"] == "192.0.2.10"
    assert cluster["spec"]["clusterNetwork"]["apiServerPort"] == m3c["spec"]["controlPlaneEndpoint"]["port"] == 6443
    assert cluster["spec"]["controlPlaneRef"] == {
        "apiGroup": "controlplane.cluster.x-k8s.io",
        "kind": "KamajiControlPlane",
        "name": "physics-lab",
    }
    assert kcp["spec"]["version"] == "v1.33.1"


def test_pool_selects_only_the_hosts_teapot_labelled():
    m3mt = builders.node_pool_objects(POOL, NS)[0]
    assert m3mt["spec"]["template"]["spec"]["hostSelector"] == {"matchLabels": {"teapot.io/node-pool": POOL.pool_uid}}


def test_key_erase_pool_disables_ironic_cleaning():
    m3mt = builders.node_pool_objects(KEY_ERASE_POOL, NS)[0]
    assert m3mt["spec"]["template"]["spec"]["automatedCleaningMode"] == "disabled"
    assert builders.node_pool_objects(POOL, NS)[0]["spec"]["template"]["spec"]["automatedCleaningMode"] == "metadata"


def test_autoscaled_pool_leaves_replicas_unset_and_carries_annotations():
    md = next(o for o in builders.node_pool_objects(AUTOSCALED_POOL, NS) if o["kind"] == "MachineDeployment")
    assert "replicas" not in md["spec"]
    notes = md["metadata"]["annotations"]
    assert notes[builders.AUTOSCALER_MIN] == "0" and notes[builders.AUTOSCALER_MAX] == "8"
    assert notes["capacity.cluster-autoscaler.kubernetes.io/cpu"] == "64"
    assert notes["capacity.cluster-autoscaler.kubernetes.io/memory"] == "256Gi"
    assert notes["capacity.cluster-autoscaler.kubernetes.io/taints"] == "teapot.io/early=true:NoSchedule"


def test_gpu_pool_capacity():
    md = next(o for o in builders.node_pool_objects(GPU_POOL, NS) if o["kind"] == "MachineDeployment")
    notes = md["metadata"]["annotations"]
    assert notes["capacity.cluster-autoscaler.kubernetes.io/gpu-type"] == "nvidia.com/gpu"
    assert notes["capacity.cluster-autoscaler.kubernetes.io/gpu-count"] == "8"


def test_template_names_follow_their_content():
    a = builders.node_pool_object_names(POOL)
    assert a == builders.node_pool_object_names(POOL)  # deterministic
    b = builders.node_pool_object_names(replace(POOL, image_checksum="1" * 64))
    assert a["Metal3MachineTemplate"] != b["Metal3MachineTemplate"]  # a new image rolls out
    assert a["KubeadmConfigTemplate"] == b["KubeadmConfigTemplate"]
    assert a["MachineDeployment"] == b["MachineDeployment"] == "physics-lab-workers"
    c = builders.node_pool_object_names(replace(POOL, replicas=7))
    assert a["Metal3MachineTemplate"] == c["Metal3MachineTemplate"]  # scaling is no rollout


def test_bmc_secret_holds_the_credentials_base64():
    secret = builders.bmc_secret(ENROLMENT, NS)
    assert base64.b64decode(secret["data"]["password"]).decode() == "s3cret-pw"
    assert "s3cret-pw" not in repr(ENROLMENT)  # the dataclass never prints the password
    bmh = builders.baremetalhost(ENROLMENT, NS)
    assert bmh["spec"]["bmc"]["credentialsName"] == secret["metadata"]["name"]
    assert "s3cret-pw" not in repr(bmh)
    assert bmh["spec"]["bootMACAddress"] == "52:54:00:ab:cd:07"


@pytest.mark.parametrize(
    "address, message",
    [
        ("10.0.0.1", "has no scheme"),
        ("http://10.0.0.1", "not supported"),
        ("ipmi+https://10.0.0.1", "only redfish variants"),
        ("redfish://", "give a host"),
        ("redfish://admin:pw@10.0.0.1/redfish/v1", "no credentials"),
    ],
)
def test_bad_bmc_addresses_are_clear_errors(address, message):
    with pytest.raises(BuildError, match=message):
        builders.validate_bmc_address(address)


@pytest.mark.parametrize(
    "address",
    [
        "ipmi://10.0.0.1",
        "ipmi://10.0.0.1:623",
        "redfish://bmc.example.org/redfish/v1/Systems/1",
        "redfish-virtualmedia+http://10.0.0.1/redfish/v1/Systems/1",
        "idrac-redfish://10.0.0.1/redfish/v1/Systems/System.Embedded.1",
        "ilo5-virtualmedia://10.0.0.1/redfish/v1/Systems/1",
    ],
)
def test_good_bmc_addresses(address):
    assert builders.validate_bmc_address(address) == address


@pytest.mark.parametrize("mac", ["52:54:00:12:34", "52-54-00-12-34-56", "zz:54:00:12:34:56", ""])
def test_bad_macs(mac):
    with pytest.raises(BuildError, match="MAC address"):
        builders.validate_mac(mac)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"image_url": "ftp://x/y.img"}, "image URL"),
        ({"image_checksum": ""}, "checksum is required"),
        ({"cleaning_mode": "wipe"}, "cleaning mode"),
        ({"replicas": None}, "fixed-size pool"),
        ({"autoscale_min": 3, "autoscale_max": 2, "replicas": None}, "0 ≤ min ≤ max"),
        ({"autoscale_min": 0, "autoscale_max": 2}, "leaves replicas"),
        ({"name": "GPU"}, "node pool name"),
        ({"kubernetes_version": "latest"}, "Kubernetes version"),
        ({"taints": (Taint("k", "Sometimes"),)}, "taint effect"),
    ],
)
def test_bad_pool_specs_are_clear_errors(change, message):
    with pytest.raises(BuildError, match=message):
        builders.node_pool_objects(replace(POOL, **change), NS)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"endpoint_host": "not-an-ip"}, "not an IP address"),
        ({"control_plane_replicas": 0}, "between 1 and 5"),
        ({"addons": ("istio",)}, "unknown add-on"),
        ({"pod_cidr": "10.0.0.0/33"}, "CIDR"),
    ],
)
def test_bad_cluster_specs_are_clear_errors(change, message):
    with pytest.raises(BuildError, match=message):
        builders.cluster_objects(replace(CLUSTER, **change), NS)


def test_addresses_are_allocated_from_the_pool_deterministically():
    pool = "192.0.2.10-192.0.2.12, 198.51.100.0/30"
    assert builders.allocate_address(pool, set()) == "192.0.2.10"
    assert builders.allocate_address(pool, {"192.0.2.10", "192.0.2.11"}) == "192.0.2.12"
    taken = {"192.0.2.10", "192.0.2.11", "192.0.2.12"}
    assert builders.allocate_address(pool, taken) == "198.51.100.1"  # hosts of a CIDR, no network address
    with pytest.raises(BuildError, match="exhausted"):
        builders.allocate_address(pool, taken | {"198.51.100.1", "198.51.100.2"})
    with pytest.raises(BuildError, match="not valid"):
        builders.allocate_address("192.0.2.20-192.0.2.10", set())
