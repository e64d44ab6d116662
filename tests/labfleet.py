"""The lab with its clock in a test's hands, and Teapot's mirror of it (provisioning tests and
the end-to-end browser test): enrol hosts, run the simulated controllers, sync the Host mirror,
reconcile every cluster and pool; and the issue's invariant on where every host is."""

from __future__ import annotations

from hosts.classify import hosts_classify
from hosts.models import Host, HostClaim
from hosts.services import hosts_sync
from teapot_portal.gateway.builders import HostEnrolment
from teapot_portal.gateway.lab import profiles, validation
from teapot_portal.gateway.lab.controllers import Timings, tick
from teapot_portal.gateway.lab.gateway import LabGateway
from teapot_portal.gateway.lab.models import LabClock
from tenants import provisioning
from tenants.models import PoolHost

NS = "teapot"
T = Timings(jitter=0.0)


class Lab:
    """The lab with its clock in the test's hands, and Teapot's mirror of it."""

    def __init__(self):
        self.clock = LabClock.get()
        self.gw = LabGateway(NS, self.clock)
        self._where: dict[str, dict] = {}

    def enrol(self, name: str, profile: str, location: dict) -> None:
        profiles.lab_host_profile_set(name, profile)
        index = sum(name.encode()) % 250
        self.gw.enrol_host(
            HostEnrolment(
                name=name,
                bmc_address=f"redfish+https://10.0.4.{index}/redfish/v1/Systems/1",
                bmc_username="admin",
                bmc_password="lab-bmc-pw",
                boot_mac=f"52:54:00:12:34:{index:02x}",
            )
        )
        self._where[name] = location

    def run(self, seconds: float = 0) -> None:
        if seconds:
            self.clock.advance(seconds)
        tick(timings=T, strict=True)
        self.sync()

    def sync(self) -> None:
        records, _ = self.gw.list_hosts()
        hosts_sync(records=records, complete=True)
        for host in Host.objects.filter(name__in=list(self._where), location={}):
            host.location = self._where[host.name]
            host.save(update_fields=["location"])
        hosts_classify()

    def reconcile(self, rounds: int = 1, seconds: float = 60) -> None:
        for _ in range(rounds):
            provisioning.reconcile_all(gateway=self.gw)
            self.run(seconds)


def eight_host_lab() -> Lab:
    """Four A100 hosts (gpu-0…3) and four general ones (gen-0…3) in three racks, available."""
    from tests.inventory import ensure_rules

    ensure_rules()
    lab = Lab()
    racks = ("r1", "r2", "r3")
    for i in range(4):
        lab.enrol(f"gpu-{i}", "gpu-a100", {"site": "lab", "room": "a", "row": "1", "rack": racks[i % 3]})
        lab.enrol(f"gen-{i}", "general", {"site": "lab", "room": "a", "row": "2", "rack": racks[i % 3]})
    lab.run()
    lab.run(400)  # register, inspect, prepare: available
    assert set(Host.objects.values_list("provisioning_state", flat=True)) == {"available"}
    return lab


def cache_crd_registry(monkeypatch):
    """The CRD schemas loaded once for a test (every lab write is still validated)."""
    registry = validation._registry()
    monkeypatch.setattr(validation, "_registry", lambda: registry)
    return registry


def assert_every_host_accounted_for() -> None:
    """Free, in exactly one pool, cleaning, in maintenance, or in error — nothing else."""
    live = PoolHost.objects.filter(released_at__isnull=True)
    held = list(live.values_list("host_id", flat=True))
    assert len(held) == len(set(held)), "a host is in two pools"
    claims = set(HostClaim.objects.filter(released_at__isnull=True).values_list("host_id", flat=True))
    assert set(held) <= claims, "a pool holds a host without a claim"
    for host in Host.objects.filter(retired_at__isnull=True):
        if host.pk in held or host.maintenance or host.operational_status == "error":
            continue
        if host.provisioning_state == "deprovisioning":  # cleaning
            continue
        assert host.provisioning_state == "available" and not host.consumer, (
            f"{host.name} is {host.provisioning_state} (consumer {host.consumer!r}) but in no pool"
        )
        assert host.pk not in claims, f"{host.name} is claimed but in no pool"
