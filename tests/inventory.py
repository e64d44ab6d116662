"""Synthetic fleets for inventory tests: BareMetalHost dicts from the lab's hardware profiles,
written through the real sync (``hosts_sync``), then located and classified like a real fleet.

``make_fleet(n)`` is fast (one bulk sync): 1,000 hosts in a couple of seconds.
"""

from __future__ import annotations

import hashlib
import json

from hosts.classify import hosts_classify
from hosts.demo import DEFAULT_RULES
from hosts.models import Host, TraitRule
from hosts.services import hosts_sync
from teapot_portal.gateway.base import HostRecord
from teapot_portal.gateway.lab import profiles

NS = "teapot"
PROFILES = ("general", "general", "highmem", "gpu-a100", "gpu-l40s", "fpga-u250", "storage-dense", "general")
STATES = ("available", "available", "available", "provisioned", "provisioning", "inspecting", "available", "available")
# The demo's classification rules (without the demo's cost model: costs stay MAAS-like).
RULES = {name: rule for name, (rule, _) in DEFAULT_RULES.items()}
PASSWORD = "Sup3r-s3cret-BMC-pw"  # never stored by Teapot; tests scan for it anyway


def _mac(name: str) -> str:
    digest = hashlib.sha256(name.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def bmh(
    name: str,
    *,
    profile: str = "general",
    state: str = "available",
    rv: int = 1,
    labels=None,
    consumer=None,
    error: str = "",
) -> dict:
    data = profiles.build(profile, name)
    status = {
        "operationalStatus": "error" if error else "OK",
        "errorMessage": f"{error} on {name}" if error else "",
        "errorCount": 1 if error else 0,
        "poweredOn": state in ("provisioned", "provisioning"),
        "provisioning": {"ID": f"node-{name}", "state": state},
        "lastUpdated": "2026-11-01T00:00:00Z",
    }
    if error:
        status["errorType"] = error
    if state not in ("registering", "inspecting", ""):
        status["hardware"] = data["hardware"]
    annotations = {}
    if data.get("accelerators") and "hardware" in status:
        annotations["teapot.io/accelerators"] = json.dumps(data["accelerators"])
    if "hardware" in status:
        annotations["teapot.io/key-erase"] = "true" if data.get("encrypted_disks") else "false"
    obj = {
        "apiVersion": "metal3.io/v1alpha1",
        "kind": "BareMetalHost",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "resourceVersion": str(rv),
            "labels": dict(labels or {}),
            "annotations": annotations,
        },
        "spec": {
            "online": state in ("provisioned", "provisioning"),
            "bmc": {
                "address": f"redfish://10.9.0.1/redfish/v1/Systems/{name}",
                "credentialsName": f"{name}-bmc-secret",
            },
            "bootMACAddress": _mac(name),
        },
        "status": status,
    }
    if consumer:
        obj["spec"]["consumerRef"] = {
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
            "kind": "Metal3Machine",
            "name": consumer,
            "namespace": NS,
        }
    return obj


def location(index: int) -> dict:
    """2 rooms × 3 rows × 4 racks, 4 hosts per rack, then round again."""
    slot = index % 96
    room = "ab"[slot // 48]
    row = 1 + (slot % 48) // 16
    rack = 1 + (slot % 16) // 4
    return {"site": "lab", "room": room, "row": str(row), "rack": f"{room}{row}-{rack}"}


def ensure_rules() -> None:
    for name, text in RULES.items():
        TraitRule.objects.update_or_create(name=name, defaults={"rule": text})


def make_fleet(
    size: int, *, prefix: str = "h", rules: bool = True, tenants: dict[int, str] | None = None
) -> list[Host]:
    """``size`` hosts named ``{prefix}00000``…, mixed profiles and states, located and classified."""
    if rules:
        ensure_rules()
    objs = []
    for index in range(size):
        name = f"{prefix}{index:05d}"
        labels = {}
        consumer = None
        state = STATES[index % len(STATES)]
        if tenants and index in tenants:
            labels = {"teapot.io/tenant": tenants[index], "teapot.io/cluster": f"{tenants[index]}-c1"}
            consumer, state = f"{name}-m", "provisioned"
        objs.append(
            bmh(
                name,
                profile=PROFILES[index % len(PROFILES)],
                state=state,
                rv=index + 1,
                labels=labels,
                consumer=consumer,
            )
        )
    hosts_sync(records=[HostRecord.from_object(obj) for obj in objs])
    hosts = list(Host.objects.filter(name__startswith=prefix).order_by("name"))
    from hosts.services import _bulk_update

    for index, host in enumerate(hosts):
        host.location = location(index)
    _bulk_update(hosts, ("location",))
    hosts_classify(host_ids=[h.pk for h in hosts])
    return list(Host.objects.filter(name__startswith=prefix).order_by("name"))
