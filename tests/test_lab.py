"""The lab management cluster: a simulated BMO, CAPM3, Cluster API and Kamaji behind the Gateway.

Time never passes by itself here: each test moves the simulated clock (``lab.run(seconds)``)
and ticks the controllers once, which catches up on everything due. Durations have no jitter
(``T``), so phase lengths can be asserted exactly from the hosts' operation history.
Every object the lab writes is validated against the upstream CRDs (the shared validator).
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import replace
from datetime import datetime

import pytest
from django.db import connection, transaction

from teapot_portal.gateway import builders, kinds
from teapot_portal.gateway.base import Conflict, Expired, HostRecord, Invalid, NotFound
from teapot_portal.gateway.builders import ClusterSpec, HostEnrolment, NodePoolSpec
from teapot_portal.gateway.lab import capi, faults, labels, profiles, store, validation, watchlog
from teapot_portal.gateway.lab.controllers import Timings, tick
from teapot_portal.gateway.lab.gateway import LabGateway
from teapot_portal.gateway.lab.models import LabClock, LabEvent, LabFault, LabObject

NS = "teapot"
T = Timings(jitter=0.0)
POOL_UID = "9f0c6a52-4f7e-4c8e-9a43-1b2c3d4e5f60"
READY_AFTER = 60 + 300 + 30  # register + inspect + prepare


def _registry():
    """The shared CRD validator (``teapot_portal.gateway.crdschema``), or None where it is unavailable."""
    return validation._registry()


@pytest.fixture(autouse=True)
def crd_registry(monkeypatch):
    """Every lab write (status included) is validated and defaulted like a real API server would."""
    registry = _registry()
    monkeypatch.setattr(validation, "_registry", lambda: registry)
    return registry


class Lab:
    def __init__(self, gateway: LabGateway, clock: LabClock):
        self.gw, self.clock = gateway, clock

    def run(self, seconds: float = 0) -> int:
        """Advance simulated time by ``seconds`` and tick once (which catches up)."""
        if seconds:
            self.clock.advance(seconds)
        return tick(timings=T, strict=True)

    def host(self, name: str) -> HostRecord:
        return self.gw.get_host(name)

    def state(self, name: str) -> str:
        return self.host(name).provisioning_state

    def enrol(self, name: str, profile: str | dict | None = None, *, secret: bool = True, **fields) -> HostRecord:
        if profile is not None:
            profiles.lab_host_profile_set(name, profile)
        index = sum(name.encode()) % 250
        enrolment = HostEnrolment(
            name=name,
            bmc_address=f"redfish+https://10.0.3.{index}/redfish/v1/Systems/1",
            bmc_username="admin",
            bmc_password="s3cret-pw",
            boot_mac=f"52:54:00:ab:cd:{index:02x}",
            **fields,
        )
        if secret:
            return self.gw.enrol_host(enrolment)
        return HostRecord.from_object(self.gw.apply(builders.baremetalhost(enrolment, NS)))

    def patch_spec(self, name: str, **changes) -> None:
        """Change a host's spec as another controller (or a person with kubectl) would."""
        with transaction.atomic():
            store.lock()
            row = store.load("BareMetalHost", NS, name)
            obj = store.to_dict(row)
            for key, value in changes.items():
                if value is None:
                    obj["spec"].pop(key, None)
                else:
                    obj["spec"][key] = value
            store.update(row, obj)

    def states(self, name: str) -> list[str]:
        """The provisioning states the host went through, from the watch log."""
        seen: list[str] = []
        for event in LabEvent.objects.filter(kind="BareMetalHost", name=name).order_by("resource_version"):
            state = ((event.object.get("status") or {}).get("provisioning") or {}).get("state", "")
            if state and (not seen or seen[-1] != state):
                seen.append(state)
        return seen


@pytest.fixture
def clock(db):
    return LabClock.get()


@pytest.fixture
def lab(clock):
    return Lab(LabGateway(NS, clock), clock)


def took(host: HostRecord, operation: str) -> float:
    history = host.raw["status"]["operationHistory"][operation]
    start, end = (datetime.strptime(history[k], "%Y-%m-%dT%H:%M:%SZ") for k in ("start", "end"))
    return (end - start).total_seconds()


def image() -> dict:
    return {"url": "https://images.example.org/ubuntu-24.04.qcow2", "checksum": "0" * 64, "checksumType": "sha256"}


# --------------------------------------------------------------------------- the host lifecycle


def test_enrolled_host_registers_inspects_prepares_and_becomes_available(lab, crd_registry):
    lab.enrol("gpu-01", "gpu-a100")
    assert lab.state("gpu-01") == ""  # nothing happens until the controllers run
    lab.run()
    assert lab.state("gpu-01") == "registering"
    lab.run(59)
    assert lab.state("gpu-01") == "registering"
    lab.run(1)
    assert lab.state("gpu-01") == "inspecting"
    assert lab.host("gpu-01").powered_on  # the inspection ramdisk runs on it
    lab.run(300)
    assert lab.state("gpu-01") == "preparing"
    lab.run(30)
    host = lab.host("gpu-01")
    assert host.provisioning_state == "available"
    assert host.operational_status == "OK" and host.error_type == "" and host.error_count == 0
    assert lab.states("gpu-01") == ["registering", "inspecting", "preparing", "available"]
    assert took(host, "register") == 60 and took(host, "inspect") == 300

    hardware = host.hardware
    assert hardware["cpu"]["count"] == 128 and hardware["ramMebibytes"] == 1024 * 1024
    assert {nic["mac"] for nic in hardware["nics"] if nic["pxe"]} == {host.boot_mac}
    assert lab.gw.get_hardware_data("gpu-01") == hardware
    assert json.loads(host.annotations["teapot.io/accelerators"]) == [{"type": "nvidia-a100", "count": 8}]
    assert host.architecture == "x86_64"
    assert host.raw["status"]["goodCredentials"]["credentials"]["name"] == "gpu-01-bmc-secret"

    # Power follows spec.online in stable states, after the power delay.
    assert not host.powered_on
    lab.run()
    lab.run(20)
    assert lab.host("gpu-01").powered_on
    lab.gw.set_host_online("gpu-01", False)
    lab.run()
    assert lab.host("gpu-01").powered_on
    lab.run(20)
    assert not lab.host("gpu-01").powered_on

    # BMO acquired the credentials: labelled and owned by the host (so they go with it).
    secret = lab.gw.get(kinds.SECRET, "gpu-01-bmc-secret")
    assert secret["metadata"]["labels"]["environment.metal3.io"] == "baremetal"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == host.uid
    if crd_registry is not None:
        for row in LabObject.objects.all():
            assert crd_registry.validate(store.to_dict(row)) == [], row


def test_host_without_profile_gets_a_small_default_machine(lab):
    lab.enrol("plain-01")
    lab.run()
    lab.run(READY_AFTER)
    host = lab.host("plain-01")
    assert host.provisioning_state == "available"
    assert host.hardware["cpu"]["count"] == 8 and host.hardware["ramMebibytes"] == 32 * 1024
    assert "teapot.io/accelerators" not in host.annotations


def test_host_without_bmc_secret_is_unmanaged_until_the_secret_appears(lab):
    lab.enrol("n1", secret=False)
    lab.run(600)
    host = lab.host("n1")
    assert host.provisioning_state == "unmanaged"
    assert host.operational_status == "discovered"
    lab.gw.apply(builders.bmc_secret(HostEnrolment("n1", "ipmi://10.0.0.1", "admin", "pw", "52:54:00:00:00:01"), NS))
    lab.run()
    assert lab.state("n1") == "registering"
    assert lab.host("n1").operational_status == "OK"


def test_unreachable_bmc_is_a_registration_error_until_it_answers(lab):
    faults.inject("bmc_unreachable", host="n1")
    lab.enrol("n1")
    lab.run()
    lab.run(60)
    host = lab.host("n1")
    assert host.provisioning_state == "registering"
    assert host.operational_status == "error"
    assert host.error_type == "registration error"
    assert "IPMI call failed" in host.error_message
    assert host.error_count == 1
    lab.run(10 + 60)  # backoff, then another attempt
    assert lab.host("n1").error_count == 2
    faults.clear("bmc_unreachable", host="n1")
    lab.run(20 + 60)
    host = lab.host("n1")
    assert host.provisioning_state == "inspecting"
    assert host.error_type == "" and host.error_message == "" and host.operational_status == "OK"


def test_a_host_whose_profile_says_the_bmc_is_unreachable_never_registers(lab):
    profiles.lab_host_profile_set("dead-01", {"bmc_reachable": False})
    lab.enrol("dead-01")
    lab.run()
    lab.run(3600)
    host = lab.host("dead-01")
    assert host.provisioning_state == "registering" and host.error_type == "registration error"


def test_inspection_error_is_retried(lab):
    faults.inject("inspection_error", host="n1", count=1)
    lab.enrol("n1")
    lab.run()
    lab.run(60 + 300)
    host = lab.host("n1")
    assert (host.provisioning_state, host.error_type, host.operational_status) == (
        "inspecting",
        "inspection error",
        "error",
    )
    assert not LabFault.objects.exists()  # the one-shot fault is spent
    lab.run(10 + 300)
    host = lab.host("n1")
    assert host.provisioning_state == "preparing" and host.error_type == "" and host.error_count == 0


def test_provisioning_error_deprovisions_then_retries(lab):
    lab.enrol("n1")
    lab.run()
    lab.run(READY_AFTER)
    faults.inject("provisioning_error", host="n1", count=1)
    lab.patch_spec("n1", image=image())
    lab.run()
    assert lab.state("n1") == "provisioning"
    lab.run(900 + 600)  # deploy + the first (metadata) cleaning
    host = lab.host("n1")
    assert host.provisioning_state == "deprovisioning"
    assert host.error_type == "provisioning error" and host.operational_status == "error"
    assert "Deploy step" in host.error_message
    lab.run(600 + 20)  # cleaning on the way out, then BMO tries again with the same image
    host = lab.host("n1")
    assert host.provisioning_state == "provisioning" and host.error_type == ""
    lab.run(900)  # the disks were just cleaned: no second cleaning
    host = lab.host("n1")
    assert host.provisioning_state == "provisioned"
    assert host.raw["status"]["provisioning"]["image"]["url"] == image()["url"]
    assert lab.states("n1")[3:] == [
        "available",
        "provisioning",
        "deprovisioning",  # BMO's handleProvisioning: an errorType sends the host back
        "available",
        "provisioning",
        "provisioned",
    ]


def test_power_error_is_reported_and_cleared(lab):
    lab.enrol("n1")
    lab.run()
    lab.run(READY_AFTER)
    faults.inject("power_error", host="n1", count=1)
    lab.run()  # spec.online is true: a power-on starts
    lab.run(20)
    host = lab.host("n1")
    assert host.error_type == "power management error" and host.operational_status == "error"
    assert not host.powered_on
    assert host.provisioning_state == "available"
    lab.run(10 + 20)
    host = lab.host("n1")
    assert host.powered_on and host.error_type == "" and host.operational_status == "OK"


def test_slow_host_takes_longer(lab):
    faults.inject("slow", host="slow-01", multiplier=3)
    lab.enrol("slow-01")
    lab.enrol("fast-01")
    lab.run()
    lab.run(3 * READY_AFTER)
    slow, fast = lab.host("slow-01"), lab.host("fast-01")
    assert took(fast, "register") == 60 and took(slow, "register") == 180
    assert took(fast, "inspect") == 300 and took(slow, "inspect") == 900
    assert slow.provisioning_state == fast.provisioning_state == "available"


def test_reinspection_through_the_annotation(lab):
    lab.enrol("n1")
    lab.run()
    lab.run(READY_AFTER)
    profiles.lab_host_profile_set("n1", "highmem")  # someone added memory
    lab.gw.request_inspection("n1")
    lab.run()
    assert lab.state("n1") == "inspecting"
    lab.run(300)
    host = lab.host("n1")
    assert host.provisioning_state == "preparing"
    assert "inspect.metal3.io" not in host.annotations  # BMO removes it when done
    assert host.hardware["ramMebibytes"] == 1024 * 1024
    lab.run(30)
    assert lab.state("n1") == "available"


def test_reinspection_is_refused_unless_available(lab):
    lab.enrol("n1")
    lab.run()
    with pytest.raises(Conflict, match="only available hosts"):
        lab.gw.request_inspection("n1")


def test_paused_host_makes_no_transitions(lab):
    lab.enrol("n1")
    lab.run()
    lab.run(30)
    lab.gw.set_host_paused("n1", True)
    before = lab.host("n1").resource_version
    lab.run()  # BMO notices the pause at once
    lab.run(3600)
    host = lab.host("n1")
    assert host.provisioning_state == "registering" and host.paused
    assert host.resource_version == before  # not a single write
    lab.gw.set_host_paused("n1", False)
    lab.run()
    assert lab.state("n1") == "registering"  # time stood still for it: 30 s of registering left
    lab.run(30)
    assert lab.state("n1") == "inspecting"


def test_detached_host_reports_detached_and_stays_put(lab):
    lab.enrol("n1")
    lab.run()
    lab.run(READY_AFTER + 20)
    lab.gw.set_host_detached("n1", True)
    lab.run()
    host = lab.host("n1")
    assert host.operational_status == "detached" and host.detached
    lab.patch_spec("n1", image=image())
    lab.run(3600)
    assert lab.state("n1") == "available"  # not managed while detached
    lab.gw.set_host_detached("n1", False)
    lab.run()
    host = lab.host("n1")
    assert host.operational_status == "OK" and host.provisioning_state == "provisioning"


def test_reboot_annotation_powers_off_then_on(lab):
    lab.enrol("n1")
    lab.run()
    lab.run(READY_AFTER)
    lab.run()
    lab.run(20)
    assert lab.host("n1").powered_on
    lab.gw.request_reboot("n1")
    lab.run()
    lab.run(20)
    host = lab.host("n1")
    assert not host.powered_on and "reboot.metal3.io" not in host.annotations
    lab.run()
    lab.run(20)
    assert lab.host("n1").powered_on


def test_deleting_a_host_powers_off_deregisters_and_removes_its_secret(lab):
    lab.enrol("n1")
    lab.run()
    lab.run(READY_AFTER)
    lab.run()
    lab.run(20)
    assert lab.host("n1").powered_on
    lab.gw.delete_host("n1")
    assert lab.host("n1").deleting
    lab.run()
    assert lab.state("n1") == "powering off before delete"
    lab.run(20)
    host = lab.host("n1")
    assert host.provisioning_state == "deleting" and not host.powered_on
    lab.run(5)
    with pytest.raises(NotFound):
        lab.gw.get_host("n1")
    assert lab.gw.get_hardware_data("n1") is None
    with pytest.raises(NotFound):
        lab.gw.get(kinds.SECRET, "n1-bmc-secret")
    assert lab.gw.delete(kinds.BAREMETALHOST, "n1") is False
    with pytest.raises(NotFound):
        lab.gw.delete_host("n1")


def test_deleting_a_provisioned_host_deprovisions_it_first(lab):
    lab.enrol("n1")
    lab.run()
    lab.run(READY_AFTER)
    lab.patch_spec("n1", image=image())
    lab.run()
    lab.run(1500)
    assert lab.state("n1") == "provisioned"
    lab.gw.delete_host("n1")
    lab.run()
    assert lab.state("n1") == "deprovisioning"
    lab.run(620 + 20 + 5)
    assert not LabObject.objects.filter(kind="BareMetalHost", name="n1").exists()
    assert lab.states("n1")[-4:] == ["provisioned", "deprovisioning", "powering off before delete", "deleting"]
    assert not LabObject.objects.filter(kind="Secret", name="n1-bmc-secret").exists()


@pytest.mark.parametrize(
    "profile, mode, seconds",
    [
        ("general", "metadata", 600 + 20),  # Ironic erases partition metadata
        ("general", "disabled", 60 + 20),  # encrypted disks: the tenant's key is erased
        ("fpga-u250", "disabled", 20),  # nothing to erase: straight back
        ({**profiles.build("storage-dense", "big-01"), "full_erase": True}, "metadata", 600 + 80_000 + 20),
    ],
    ids=["metadata", "key-erase", "disabled-unencrypted", "full-erase-16tb-hdd"],
)
def test_deprovisioning_time_follows_the_cleaning_mode(lab, profile, mode, seconds):
    lab.enrol("big-01", profile, automated_cleaning_mode=mode)
    lab.run()
    lab.run(READY_AFTER)
    lab.patch_spec("big-01", image=image())
    lab.run()
    lab.run(200_000)
    assert lab.state("big-01") == "provisioned"
    lab.patch_spec("big-01", image=None, online=False)
    lab.run()
    assert lab.state("big-01") == "deprovisioning"
    lab.run(200_000)
    host = lab.host("big-01")
    assert host.provisioning_state == "available"
    assert took(host, "deprovision") == seconds
    assert "image" not in host.raw["status"]["provisioning"]


# --------------------------------------------------------------------------- clusters and node pools

CLUSTER = ClusterSpec(tenant="physics", name="lab", kubernetes_version="1.33.1", endpoint_host="192.0.2.10")
CLUSTER_NAME = CLUSTER.object_name
POOL = NodePoolSpec(
    tenant="physics",
    cluster="lab",
    name="workers",
    pool_uid=POOL_UID,
    kubernetes_version="v1.33.1",
    image_url="https://images.example.org/ubuntu-24.04.qcow2",
    image_checksum="0" * 64,
    replicas=2,
)
POOL_LABEL = {builders.LABEL_NODE_POOL: POOL_UID}
PROVISION = 900 + 600  # deploy + the first metadata cleaning


def ready_hosts(lab: Lab, *names: str, labels: dict | None = None) -> None:
    for name in names:
        lab.enrol(name, labels=POOL_LABEL if labels is None else labels)
    lab.run()
    lab.run(READY_AFTER)
    lab.run()
    lab.run(20)  # powered on: spec.online is true


def ready_cluster(lab: Lab) -> None:
    lab.gw.apply_cluster(CLUSTER)
    lab.run()
    lab.run(180)


def machines(lab: Lab) -> list[dict]:
    return lab.gw.list(kinds.MACHINE, f"{builders.CAPI_CLUSTER_NAME}={CLUSTER_NAME}")


def md_status(lab: Lab, pool: NodePoolSpec = POOL) -> dict:
    return lab.gw.get(kinds.MACHINEDEPLOYMENT, pool.object_name).get("status") or {}


def condition(obj: dict, type_: str) -> dict:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def test_cluster_becomes_provisioned_and_its_kubeconfig_appears(lab):
    lab.gw.apply_cluster(CLUSTER)
    lab.run()
    status = lab.gw.cluster_status(CLUSTER_NAME)
    assert status["phase"] == "Provisioning"
    assert status["initialization"] == {"infrastructureProvisioned": True, "controlPlaneInitialized": False}
    with pytest.raises(NotFound):
        lab.gw.get_kubeconfig(CLUSTER_NAME)
    lab.run(179)
    assert lab.gw.cluster_status(CLUSTER_NAME)["phase"] == "Provisioning"
    lab.run(1)
    status = lab.gw.cluster_status(CLUSTER_NAME)
    assert status["phase"] == "Provisioned"
    assert status["initialization"] == {"infrastructureProvisioned": True, "controlPlaneInitialized": True}
    assert status["controlPlane"]["desiredReplicas"] == status["controlPlane"]["readyReplicas"] == 2
    assert {c["type"]: c["status"] for c in status["conditions"]}["Available"] == "True"
    kcp = lab.gw.get(kinds.KAMAJICONTROLPLANE, CLUSTER_NAME)
    assert kcp["status"]["ready"] is True and kcp["status"]["initialization"]["controlPlaneInitialized"] is True
    assert kcp["spec"]["controlPlaneEndpoint"] == {"host": "192.0.2.10", "port": 6443}
    assert kcp["metadata"]["ownerReferences"][0]["kind"] == "Cluster"
    kubeconfig = lab.gw.get_kubeconfig(CLUSTER_NAME)
    assert "server: https://192.0.2.10:6443" in kubeconfig
    cluster = lab.gw.get(kinds.CLUSTER, CLUSTER_NAME)
    assert cluster["spec"]["controlPlaneEndpoint"] == {"host": "192.0.2.10", "port": 6443}
    assert lab.run() == 0  # settled: ticking again changes nothing


@pytest.mark.parametrize(
    "endpoint, message",
    [
        ({"host": "192.0.2.99", "port": 6443}, "has been provisioned with a mismatching host"),
        ({"host": "192.0.2.10", "port": 16443}, "has been provisioned with a mismatching port"),
    ],
)
def test_endpoint_mismatch_never_becomes_ready(lab, endpoint, message):
    objects = builders.cluster_objects(CLUSTER, NS)
    objects[2]["spec"]["controlPlaneEndpoint"] = endpoint
    for obj in objects:
        lab.gw.apply(obj)
    lab.run()
    lab.run(3600)
    kcp = lab.gw.get(kinds.KAMAJICONTROLPLANE, CLUSTER_NAME)
    patched = condition(kcp, "InfrastructureClusterPatched")
    assert patched["status"] == "False" and patched["reason"] == "Failed"
    assert patched["message"] == f"the Metal3Cluster cluster {message}"
    assert kcp["status"]["ready"] is False
    status = lab.gw.cluster_status(CLUSTER_NAME)
    assert status["phase"] == "Provisioning"
    assert message in condition({"status": status}, "ControlPlaneInitialized")["message"]
    with pytest.raises(NotFound):
        lab.gw.get_kubeconfig(CLUSTER_NAME)
    lab.gw.apply(builders.cluster_objects(CLUSTER, NS)[2])  # Teapot writes the right endpoint
    lab.run()
    assert lab.gw.cluster_status(CLUSTER_NAME)["phase"] == "Provisioned"


def test_capm3_binds_only_matching_eligible_hosts(lab):
    ready_cluster(lab)
    ready_hosts(lab, "ok-1", "paused-1", "unhealthy-1", "erroring-1", "consumed-1")
    ready_hosts(lab, "other-pool-1", labels={builders.LABEL_NODE_POOL: "another-pool"})
    lab.gw.set_host_paused("paused-1", True)
    lab.gw.patch_host_metadata("unhealthy-1", annotations={"capm3.metal3.io/unhealthy": ""})
    faults.inject("power_error", host="erroring-1")
    lab.gw.set_host_online("erroring-1", False)
    lab.run()
    lab.run(20)
    assert lab.host("erroring-1").error_message  # available, but with an error
    lab.patch_spec(
        "consumed-1",
        consumerRef={"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "Metal3Machine", "name": "x"},
    )
    lab.enrol("busy-1", labels=POOL_LABEL)  # still registering
    lab.run()

    pool = replace(POOL, replicas=1, cleaning_mode="disabled")  # a key-erase pool
    lab.gw.apply_node_pool(pool)
    lab.run()
    (binding,) = lab.gw.machine_bindings(CLUSTER_NAME)
    assert binding.host == "ok-1"
    host = lab.host("ok-1")
    assert host.consumer == f"Metal3Machine/{binding.metal3machine}"
    assert host.labels[builders.CAPI_CLUSTER_NAME] == CLUSTER_NAME
    assert host.image_url == POOL.image_url and host.online
    assert host.raw["spec"]["image"]["format"] == "qcow2"
    assert host.raw["spec"]["userData"] == {"name": f"{binding.metal3machine}-user-data", "namespace": NS}
    assert host.automated_cleaning_mode == "disabled"  # copied from the template
    assert host.provisioning_state == "provisioning"
    secret = lab.gw.get(kinds.SECRET, "ok-1-bmc-secret")
    assert secret["metadata"]["labels"][builders.CAPI_CLUSTER_NAME] == CLUSTER_NAME

    lab.gw.apply_node_pool(replace(pool, replicas=2))
    lab.run(60)
    waiting = [b for b in lab.gw.machine_bindings(CLUSTER_NAME) if not b.host]
    assert len(waiting) == 1 and waiting[0].phase == "Provisioning"
    m3m = lab.gw.get(kinds.METAL3MACHINE, waiting[0].metal3machine)
    associate = condition(m3m, "AssociateBMH")
    assert associate["status"] == "False" and associate["reason"] == "NoAvailableHost"
    for name in ("paused-1", "unhealthy-1", "erroring-1", "other-pool-1", "busy-1"):
        assert lab.host(name).consumer == "", name
    assert lab.host("consumed-1").consumer == "Metal3Machine/x"


def test_node_pool_scales_up_and_down_releasing_hosts(lab, crd_registry):
    ready_cluster(lab)
    ready_hosts(lab, "w1", "w2", "w3")
    lab.gw.apply_node_pool(POOL)
    lab.run()
    bindings = lab.gw.machine_bindings(CLUSTER_NAME)
    assert len(bindings) == 2 and {b.phase for b in bindings} == {"Provisioning"}
    assert all(b.host in {"w1", "w2", "w3"} for b in bindings) and len({b.host for b in bindings}) == 2
    assert all(
        b.machine.startswith(f"{POOL.object_name}-") and len(b.machine) == len(POOL.object_name) + 6 for b in bindings
    )
    assert md_status(lab)["phase"] == "ScalingUp"

    lab.run(PROVISION)
    bindings = lab.gw.machine_bindings(CLUSTER_NAME)
    assert {b.phase for b in bindings} == {"Running"}
    for machine in machines(lab):
        addresses = {a["type"]: a["address"] for a in machine["status"]["addresses"]}
        assert (
            addresses["InternalIP"].startswith("172.22.")
            and addresses["Hostname"] == machine["status"]["nodeRef"]["name"]
        )
        assert machine["status"]["nodeInfo"]["kubeletVersion"] == "v1.33.1"
    for b in bindings:
        assert b.provider_id == f"metal3://{NS}/{b.host}/{b.metal3machine}"
        assert b.node == b.host
        assert lab.state(b.host) == "provisioned"
    status = md_status(lab)
    assert (status["replicas"], status["readyReplicas"], status["availableReplicas"], status["upToDateReplicas"]) == (
        2,
        2,
        2,
        2,
    )
    assert status["phase"] == "Running"
    assert lab.gw.cluster_status(CLUSTER_NAME)["workers"]["readyReplicas"] == 2

    newest = max(machines(lab), key=lambda m: LabObject.objects.get(kind="Machine", name=m["metadata"]["name"]).pk)
    victim = next(b for b in bindings if b.machine == newest["metadata"]["name"])
    keeper = next(b for b in bindings if b is not victim)
    lab.gw.apply_node_pool(replace(POOL, replicas=1))
    lab.run()
    assert lab.gw.get(kinds.MACHINE, victim.machine)["status"]["phase"] == "Deleting"
    host = lab.host(victim.host)
    assert host.provisioning_state == "deprovisioning" and host.image_url == "" and not host.online
    assert host.consumer == f"Metal3Machine/{victim.metal3machine}"  # still held until clean
    assert md_status(lab)["phase"] == "ScalingDown"

    lab.run(600 + 20)
    host = lab.host(victim.host)
    assert host.provisioning_state == "available" and host.consumer == ""
    assert builders.CAPI_CLUSTER_NAME not in host.labels
    assert not host.raw["metadata"].get("ownerReferences")
    for kind, name in (
        (kinds.MACHINE, victim.machine),
        (kinds.METAL3MACHINE, victim.metal3machine),
        (kinds.SECRET, victim.machine),  # bootstrap data
        (kinds.SECRET, f"{victim.metal3machine}-user-data"),
    ):
        with pytest.raises(NotFound):
            lab.gw.get(kind, name)
    assert [b.machine for b in lab.gw.machine_bindings(CLUSTER_NAME)] == [keeper.machine]
    status = md_status(lab)
    assert (status["replicas"], status["readyReplicas"], status["phase"]) == (1, 1, "Running")
    assert lab.run() == 0
    if crd_registry is not None:
        for row in LabObject.objects.all():
            assert crd_registry.validate(store.to_dict(row)) == [], (row, crd_registry.validate(store.to_dict(row)))


def test_autoscaled_pool_starts_at_its_minimum(lab):
    pool = replace(POOL, replicas=None, autoscale_min=2, autoscale_max=5)
    lab.gw.apply_node_pool(pool)
    md = lab.gw.get(kinds.MACHINEDEPLOYMENT, pool.object_name)
    assert md["spec"]["replicas"] == 2  # Cluster API's webhook defaults it from the min size
    lab.run()
    assert len(machines(lab)) == 2
    again = lab.gw.apply_node_pool(pool)
    assert next(o for o in again if o["kind"] == "MachineDeployment")["spec"]["replicas"] == 2
    assert md_status(lab)["phase"] == "ScalingUp"


def test_deleting_a_pool_releases_its_hosts(lab):
    ready_cluster(lab)
    ready_hosts(lab, "w1", "w2")
    lab.gw.apply_node_pool(POOL)
    lab.run()
    lab.run(PROVISION)
    assert lab.gw.delete(kinds.MACHINEDEPLOYMENT, POOL.object_name) is True
    lab.run()
    assert {m["status"]["phase"] for m in machines(lab)} == {"Deleting"}
    lab.run(620)
    assert machines(lab) == []
    for name in ("w1", "w2"):
        host = lab.host(name)
        assert host.provisioning_state == "available" and host.consumer == ""


def test_deleting_a_cluster_collects_everything_and_frees_the_hosts(lab):
    ready_cluster(lab)
    ready_hosts(lab, "w1", "w2")
    lab.gw.apply_node_pool(POOL)
    lab.run()
    lab.run(PROVISION)
    assert lab.gw.delete(kinds.CLUSTER, CLUSTER_NAME) is True
    lab.run()  # garbage collection: control plane, infrastructure, pools, templates; machines drain
    lab.run(620)
    left = sorted({row.kind for row in LabObject.objects.all()})
    assert left == ["BareMetalHost", "HardwareData", "Secret"]
    assert sorted(LabObject.objects.filter(kind="Secret").values_list("name", flat=True)) == [
        "w1-bmc-secret",
        "w2-bmc-secret",
    ]
    for name in ("w1", "w2"):
        host = lab.host(name)
        assert host.provisioning_state == "available" and host.consumer == "" and not host.online


def test_a_new_template_rolls_out_one_machine_at_a_time(lab):
    ready_cluster(lab)
    ready_hosts(lab, "w1", "w2", "w3")
    lab.gw.apply_node_pool(POOL)
    lab.run()
    lab.run(PROVISION)
    first = {b.machine for b in lab.gw.machine_bindings(CLUSTER_NAME)}
    lab.gw.apply_node_pool(replace(POOL, image_checksum="1" * 64))  # a new image: a new template
    lab.run()
    assert len(machines(lab)) == 3  # one surplus machine (maxSurge 1), on the spare host
    status = md_status(lab)
    assert (status["upToDateReplicas"], status["readyReplicas"]) == (1, 2)
    lab.run(PROVISION)  # it runs: one old machine goes, a second new one waits for that host
    assert [m["status"]["phase"] for m in machines(lab)].count("Deleting") == 1
    assert md_status(lab)["readyReplicas"] == 2  # maxUnavailable 0: never fewer than asked for
    lab.run(620)  # the old host is clean and taken
    lab.run(900)  # the second new machine runs: the last old one goes
    assert md_status(lab)["readyReplicas"] == 2
    lab.run(620)
    now = {b.machine for b in lab.gw.machine_bindings(CLUSTER_NAME)}
    assert len(now) == 2 and not now & first
    status = md_status(lab)
    assert (status["replicas"], status["upToDateReplicas"], status["readyReplicas"], status["phase"]) == (
        2,
        2,
        2,
        "Running",
    )


# --------------------------------------------------------------------------- API semantics


def test_apply_twice_changes_nothing(lab):
    first = lab.gw.apply_cluster(CLUSTER)
    second = lab.gw.apply_cluster(CLUSTER)
    assert [o["metadata"]["resourceVersion"] for o in first] == [o["metadata"]["resourceVersion"] for o in second]
    events = LabEvent.objects.count()
    lab.gw.apply_node_pool(POOL)
    lab.gw.apply_node_pool(POOL)
    assert LabEvent.objects.count() == events + 4  # four objects created once
    host = lab.enrol("n1")
    assert lab.enrol("n1").resource_version == host.resource_version


def test_apply_merges_like_server_side_apply(lab):
    obj = builders.cluster_objects(CLUSTER, NS)[0]
    created = lab.gw.apply(obj)
    assert created["metadata"]["generation"] == 1
    lab.run()  # controllers add status and the endpoint
    current = lab.gw.get(kinds.CLUSTER, CLUSTER_NAME)
    assert current["status"]["phase"] in ("Provisioning", "Pending")
    # Status in an applied object is ignored; labels others set survive; dropped labels go.
    changed = json.loads(json.dumps(obj))
    changed["status"] = {"phase": "Failed"}
    changed["metadata"]["labels"].pop(builders.LABEL_MANAGED)
    changed["metadata"]["labels"]["teapot.io/extra"] = "yes"
    with transaction.atomic():  # another controller labels the Cluster
        store.lock()
        row = store.load("Cluster", NS, CLUSTER_NAME)
        other = store.to_dict(row)
        other["metadata"]["labels"]["someone.else/owns"] = "this"
        store.update(row, other)
    result = lab.gw.apply(changed)
    assert result["status"]["phase"] != "Failed"
    assert result["metadata"]["labels"]["teapot.io/extra"] == "yes"
    assert result["metadata"]["labels"]["someone.else/owns"] == "this"
    assert builders.LABEL_MANAGED not in result["metadata"]["labels"]
    assert result["metadata"]["generation"] == current["metadata"]["generation"]  # metadata only
    respec = json.loads(json.dumps(changed))
    respec["spec"]["clusterNetwork"]["apiServerPort"] = 7443
    assert lab.gw.apply(respec)["metadata"]["generation"] == current["metadata"]["generation"] + 1


def test_apply_with_a_stale_resource_version_conflicts(lab):
    obj = lab.gw.apply(builders.cluster_objects(CLUSTER, NS)[1])
    lab.gw.apply({**obj, "spec": {**obj["spec"], "replicas": 3}})
    with pytest.raises(Conflict, match="has been modified"):
        lab.gw.apply({**obj, "spec": {**obj["spec"], "replicas": 1}})


def test_invalid_objects_are_refused_with_causes(lab, crd_registry):
    bmh = builders.baremetalhost(HostEnrolment("n1", "ipmi://10.0.0.1", "u", "p", "52:54:00:00:00:01"), NS)
    bad_label = json.loads(json.dumps(bmh))
    bad_label["metadata"]["labels"]["teapot.io/bad"] = "not a label value!"
    with pytest.raises(Invalid) as caught:
        lab.gw.apply(bad_label)
    assert any("labels" in c["field"] for c in caught.value.causes)
    with pytest.raises(Invalid, match="does not handle"):
        lab.gw.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
    if crd_registry is None:
        pytest.skip("no CRD validator importable")
    bad_mode = json.loads(json.dumps(bmh))
    bad_mode["spec"]["automatedCleaningMode"] = "shred"
    with pytest.raises(Invalid) as caught:
        lab.gw.apply(bad_mode)
    assert [c["field"] for c in caught.value.causes] == ["spec.automatedCleaningMode"]
    assert not LabObject.objects.filter(kind="BareMetalHost").exists()
    secret = builders.bmc_secret(HostEnrolment("n1", "ipmi://10.0.0.1", "u", "p", "52:54:00:00:00:01"), NS)
    secret["data"]["password"] = "hunter2 is not base64"
    with pytest.raises(Invalid) as caught:
        lab.gw.apply(secret)
    assert [c["field"] for c in caught.value.causes] == ["data[password]"]
    assert "hunter2" not in str(caught.value) and "hunter2" not in repr(caught.value.causes)


def test_secrets_are_stored_like_the_api_server_does(lab):
    stored = lab.gw.apply(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token"}, "stringData": {"token": "abc"}}
    )
    assert stored["data"] == {"token": base64.b64encode(b"abc").decode()} and stored["type"] == "Opaque"
    assert "stringData" not in stored and "generation" not in stored["metadata"]
    assert stored["metadata"]["namespace"] == NS
    # Re-applying without a key removes it; the values never reach the watch log.
    again = lab.gw.apply(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token"}, "stringData": {"other": "xyz"}}
    )
    assert again["data"] == {"other": base64.b64encode(b"xyz").decode()}
    assert lab.gw.get(kinds.SECRET, "token")["data"] == again["data"]
    logged = json.dumps(list(LabEvent.objects.filter(kind="Secret").values_list("object", flat=True)))
    assert base64.b64encode(b"xyz").decode() not in logged and "token" in logged
    assert base64.b64encode(b"xyz").decode() not in json.dumps(LabObject.objects.get(kind="Secret").applied)


def test_get_and_delete_of_missing_objects(lab):
    with pytest.raises(NotFound, match=r'clusters\.cluster\.x-k8s\.io "nope" not found'):
        lab.gw.get(kinds.CLUSTER, "nope")
    assert lab.gw.delete(kinds.CLUSTER, "nope") is False
    lab.gw.apply_cluster(CLUSTER)
    assert lab.gw.delete(kinds.METAL3CLUSTER, CLUSTER_NAME) is True
    assert lab.gw.delete(kinds.METAL3CLUSTER, CLUSTER_NAME) is False


def test_list_with_label_selectors(lab):
    for name, extra in (("a1", {"rack": "r1", "gpu": "a100"}), ("a2", {"rack": "r2"}), ("a3", {"rack": "r3"})):
        lab.enrol(name, labels=extra)
    names = lambda selector: sorted(h.name for h in lab.gw.list_hosts(selector)[0])  # noqa: E731
    assert names("") == ["a1", "a2", "a3"]
    assert names("rack=r1") == names("rack==r1") == ["a1"]
    assert names("rack!=r1") == ["a2", "a3"]
    assert names("rack in (r1, r2)") == ["a1", "a2"]
    assert names("rack notin (r1,r2)") == ["a3"]
    assert names("gpu") == ["a1"] and names("!gpu") == ["a2", "a3"]
    assert names("rack in (r1,r2),!gpu") == ["a2"]
    assert [o["metadata"]["name"] for o in lab.gw.list(kinds.SECRET, "app.kubernetes.io/managed-by=teapot")] == [
        "a1-bmc-secret",
        "a2-bmc-secret",
        "a3-bmc-secret",
    ]
    with pytest.raises(Invalid):
        lab.gw.list_hosts("rack in ()")


def test_host_selector_operators_follow_capm3():
    selector = labels.from_label_selector(
        {
            "matchLabels": {"pool": "p"},
            "matchExpressions": [
                {"key": "rack", "operator": "In", "values": ["r1", "r2"]},
                {"key": "drained", "operator": "!", "values": []},
                {"key": "gen", "operator": "gt", "values": ["3"]},
            ],
        }
    )
    assert labels.matches(selector, {"pool": "p", "rack": "r1", "gen": "4"})
    assert not labels.matches(selector, {"pool": "p", "rack": "r1", "gen": "3"})
    assert not labels.matches(selector, {"pool": "p", "rack": "r1", "gen": "4", "drained": ""})
    assert not labels.matches(selector, {"pool": "q", "rack": "r1", "gen": "4"})
    for bad in (
        {"matchExpressions": [{"key": "k", "operator": "exists", "values": ["x"]}]},
        {"matchExpressions": [{"key": "k", "operator": "in", "values": []}]},
        {"matchExpressions": [{"key": "k", "operator": "lt", "values": ["x"]}]},
        {"matchExpressions": [{"key": "k", "operator": "near", "values": []}]},
    ):
        with pytest.raises(ValueError):
            labels.from_label_selector(bad)
    assert labels.matches(
        labels.from_label_selector({"matchExpressions": [{"key": "k", "operator": "Exists", "values": []}]}), {"k": ""}
    )


def test_host_candidates_follow_capm3():
    def host(state="available", **meta):
        return {
            "metadata": {"name": "h", "annotations": meta.pop("annotations", {}), **meta},
            "spec": {},
            "status": {"provisioning": {"state": state}, "errorMessage": ""},
        }

    assert capi.host_is_candidate(host(), "m")
    assert capi.host_is_candidate(host("ready"), "m")
    assert not capi.host_is_candidate(host("provisioned"), "m")
    assert not capi.host_is_candidate(host(deletionTimestamp="2026-01-01T00:00:00Z"), "m")
    assert not capi.host_is_candidate(host(annotations={"baremetalhost.metal3.io/paused": ""}), "m")
    assert not capi.host_is_candidate(host(annotations={"capi.metal3.io/unhealthy": ""}), "m")
    erroring = host()
    erroring["status"]["errorMessage"] = "boom"
    assert not capi.host_is_candidate(erroring, "m")
    mine, theirs = host(), host()
    mine["spec"]["consumerRef"] = {"kind": "Metal3Machine", "name": "m"}
    theirs["spec"]["consumerRef"] = {"kind": "Metal3Machine", "name": "other"}
    assert capi.host_is_candidate(mine, "m") and not capi.host_is_candidate(theirs, "m")


def test_watch_returns_the_changes_after_a_resource_version(lab):
    lab.enrol("n1")
    _, resource_version = lab.gw.list_hosts()
    lab.run()
    lab.run(60)
    events = list(lab.gw.watch_hosts(resource_version, timeout_seconds=0))
    changes = [e for e in events if e.type != "BOOKMARK"]
    assert [(e.type, e.host.provisioning_state) for e in changes] == [
        ("MODIFIED", "registering"),
        ("MODIFIED", "inspecting"),
    ]
    assert all(int(e.resource_version) > int(resource_version) for e in events)
    # Resuming from the last one gives nothing new (a bookmark at most).
    resumed = list(lab.gw.watch_hosts(events[-1].resource_version, timeout_seconds=0))
    assert [e for e in resumed if e.type != "BOOKMARK"] == []
    lab.gw.delete_host("n1")
    lab.run()
    lab.run(20 + 5)
    tail = [e for e in lab.gw.watch_hosts(events[-1].resource_version, timeout_seconds=0) if e.type != "BOOKMARK"]
    assert tail[-1].type == "DELETED" and tail[-1].host.name == "n1"
    # No resourceVersion: the current hosts as ADDED first.
    lab.enrol("n2")
    first = next(iter(lab.gw.watch_hosts("", timeout_seconds=0)))
    assert (first.type, first.host.name) == ("ADDED", "n2")


def test_watch_from_before_the_retained_log_is_expired(lab):
    lab.enrol("n1")
    _, resource_version = lab.gw.list_hosts()
    lab.run()
    lab.run(READY_AFTER)
    watchlog.prune(keep=2)
    with pytest.raises(Expired, match="too old resource version"):
        list(lab.gw.watch_hosts(resource_version, timeout_seconds=0))
    _, fresh = lab.gw.list_hosts()  # relist, then watch again
    assert list(lab.gw.watch_hosts(fresh, timeout_seconds=0)) == []


def test_watch_waits_for_its_timeout_when_asked(lab):
    _, resource_version = lab.gw.list_hosts()
    import time

    started = time.monotonic()
    assert list(lab.gw.watch_hosts(resource_version, timeout_seconds=1)) == []
    assert 0.9 <= time.monotonic() - started < 3


def test_a_stale_write_is_refused(lab):
    lab.enrol("n1")
    stale = store.load("BareMetalHost", NS, "n1", for_update=False)
    with transaction.atomic():
        store.lock()
        fresh = store.load("BareMetalHost", NS, "n1")
        obj = store.to_dict(fresh)
        obj["spec"]["online"] = False
        store.update(fresh, obj)
    obj = store.to_dict(stale)
    obj["metadata"]["labels"]["late"] = "writer"
    with transaction.atomic(), pytest.raises(Conflict, match="changed by someone else"):
        store.update(stale, obj)


def test_tick_is_idempotent(lab):
    lab.enrol("n1")
    assert lab.run() == 1
    assert lab.run() == 0
    lab.clock.advance(60)
    moved = lab.run()
    assert moved >= 2 and lab.run() == 0


@pytest.mark.django_db(transaction=True)
def test_two_workers_ticking_at_once_make_each_transition_once():
    clock = LabClock.get()
    lab = Lab(LabGateway(NS, clock), clock)
    for index in range(6):
        lab.enrol(f"n{index}")
    results: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker() -> None:
        try:
            barrier.wait()
            results.append(tick(timings=T, strict=True))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    def both() -> int:
        start = LabEvent.objects.order_by("-resource_version").values_list("resource_version", flat=True).first()
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        assert sum(results[-2:]) == LabEvent.objects.filter(resource_version__gt=start).count()
        return sum(results[-2:])

    assert both() == 6  # each host: "" → registering, once
    clock.advance(60)
    assert both() == 12  # each: registering → inspecting, and its Secret acquired, once
    for index in range(6):
        assert lab.states(f"n{index}") == ["registering", "inspecting"]


# --------------------------------------------------------------------------- faults, profiles, the task


def test_fault_api():
    with pytest.raises(ValueError, match="unknown fault"):
        faults.inject("meteor")
    with pytest.raises(ValueError):
        faults.inject("power_error", probability=2)


@pytest.mark.django_db
def test_probabilistic_faults_are_seeded():
    faults.inject("power_error", probability=0.5)
    draws = [faults.strikes("power_error", "h1", str(n)) for n in range(40)]
    assert draws == [faults.strikes("power_error", "h1", str(n)) for n in range(40)]
    assert 5 < sum(draws) < 35
    faults.inject("power_error", host="h2", count=2)
    assert [faults.strikes("power_error", "h2", "x") for _ in range(3)][:2] == [True, True]
    assert not LabFault.objects.filter(host="h2").exists()
    faults.inject("slow", host="h3", multiplier=2)
    faults.inject("slow", multiplier=1.5)
    assert faults.slow_factor("h3") == 3.0 and faults.slow_factor("h4") == 1.5
    assert faults.clear(kind="slow") == 2
    assert faults.clear() == 1


@pytest.mark.django_db
def test_profile_catalogue(crd_registry):
    assert set(profiles.CATALOGUE) == {"general", "highmem", "gpu-a100", "gpu-l40s", "fpga-u250", "storage-dense"}
    a, b = profiles.build("gpu-a100", "g1"), profiles.build("gpu-a100", "g2")
    assert a["accelerators"] == [{"type": "nvidia-a100", "count": 8}]
    assert a["hardware"]["systemVendor"]["serialNumber"] != b["hardware"]["systemVendor"]["serialNumber"]
    assert profiles.build("general", "x")["hardware"]["cpu"]["count"] == 64
    assert profiles.build("highmem", "x")["hardware"]["ramMebibytes"] == 1024 * 1024
    assert profiles.build("gpu-l40s", "x")["accelerators"] == [{"type": "nvidia-l40s", "count": 4}]
    assert profiles.build("fpga-u250", "x")["accelerators"] == [{"type": "xilinx-u250", "count": 2}]
    dense = profiles.build("storage-dense", "x")["hardware"]["storage"]
    assert sum(1 for d in dense if d["type"] == "HDD" and d["sizeBytes"] == 16 * 10**12) == 12
    with pytest.raises(ValueError, match="unknown lab profile"):
        profiles.build("mainframe", "x")
    profiles.lab_host_profile_set("g1", "gpu-a100")
    assert profiles.profile_for("g1")["profile"] == "gpu-a100"
    assert profiles.profile_for("nobody")["hardware"]["cpu"]["count"] == 8
    if crd_registry is not None:
        for name in profiles.CATALOGUE:
            data = {
                "apiVersion": "metal3.io/v1alpha1",
                "kind": "HardwareData",
                "metadata": {"name": "x", "namespace": NS},
                "spec": {"hardware": profiles.build(name, "x")["hardware"]},
            }
            assert crd_registry.validate(data) == [], name


def test_lab_tick_task_follows_real_time_times_speed(lab, settings):
    from datetime import timedelta

    from django.utils import timezone

    from teapot_portal.gateway.lab.tasks import lab_tick

    settings.TEAPOT_LAB_SPEED = 60
    lab.enrol("n1")
    assert lab_tick() == 1  # the first call only anchors the clock to real time
    before = lab.clock.now()
    LabClock.objects.filter(pk=1).update(real_anchor=timezone.now() - timedelta(seconds=2))
    lab_tick()  # ~2 real seconds * 60 = ~120 simulated seconds: registration (60 s) is done
    assert 119 <= (lab.clock.now() - before).total_seconds() <= 180
    assert lab.state("n1") == "inspecting"
    settings.TEAPOT_PROVISIONER = "kubernetes"
    assert lab_tick() == 0


def test_export_manifests_from_the_lab_is_valid_and_secret_free(lab, settings, crd_registry):
    import io

    import yaml
    from django.core.management import call_command

    from teapot_portal.gateway.builders import HostEnrolment

    settings.TEAPOT_PROVISIONER = "lab"
    settings.TEAPOT_NAMESPACE = lab.gw.namespace
    lab.gw.enrol_host(HostEnrolment("export-1", "ipmi://10.9.0.1", "root", "lab-secret-pw", "52:54:00:09:00:01"))
    out = io.StringIO()
    call_command("export_manifests", stdout=out, stderr=io.StringIO())
    assert "lab-secret-pw" not in out.getvalue()
    documents = list(yaml.safe_load_all(out.getvalue()))
    assert {d["kind"] for d in documents} >= {"Secret", "BareMetalHost"}
    for document in documents:
        assert "status" not in document
        if crd_registry is not None:
            assert crd_registry.validate(document) == [], document["metadata"]["name"]
