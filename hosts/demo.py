"""The demo fleet: ~100 hosts in 2 rooms × 3 rows × 4 racks, six hardware profiles, half with
key-erase disks, a few with faults — enrolled into the lab through the same enrolment service
operators use, so `make run` shows them register, inspect and become available."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from hosts.enrolment import host_enrol
from hosts.models import FleetSettings, Host, HostEnrolment, TraitRule

ROOMS, ROWS, RACKS, PER_RACK = ("a", "b"), 3, 4, 4
# Per rack position: most racks are general purpose; accelerators sit in row 1, storage in row 3.
PROFILE_BY_ROW = {
    1: ["gpu-a100", "gpu-l40s", "general", "fpga-u250"],
    2: ["general", "general", "highmem", "general"],
    3: ["storage-dense", "general", "general", "highmem"],
}
# Hosts that misbehave, so operators can see what errors look like.
FAULTS = {"a-r2-k3-n4": "bmc_unreachable", "b-r1-k2-n3": "inspection_error", "b-r3-k4-n1": "slow"}


# Classification rules of the demo (the MAAS-tag-like examples of the inventory issue).
DEFAULT_RULES = {
    "gpu-a100": ('accelerator(type == "nvidia-a100")', "NVIDIA A100 GPUs"),
    "gpu-l40s": ('accelerator(type == "nvidia-l40s")', "NVIDIA L40S GPUs"),
    "gpu": ("gpu_count >= 1", "any accelerator"),
    "fpga": ('accelerator(type ~ "xilinx") or accelerator(type ~ "fpga")', "FPGA cards"),
    "nvme": ('disk(type == "NVME")', "at least one NVMe disk"),
    "highmem": ("ram_gib >= 512", "512 GiB of RAM or more"),
    "avx512": ('flag("avx512f")', "CPUs with AVX-512"),
    "hdd-dense": ('disk(type == "HDD") >= 8', "eight or more hard disks"),
    "fast-net": ("nic_speed_gbps >= 100", "a 100 Gbit/s NIC or faster"),
}
# The demo's prices: the MAAS-like default (cores + GiB) plus what accelerators and NVMe add.
DEMO_COST_MODEL = {
    "per_core": "1",
    "per_gib_ram": "1",
    "per_tb_disk": "2",
    "per_accelerator": {"nvidia-a100": "400", "nvidia-l40s": "150", "xilinx-u250": "200"},
    "per_trait": {"nvme": "20"},
}


def seed_demo_rules() -> int:
    """Create the demo's rules that do not exist yet and set the demo cost model when none is set."""
    created = 0
    for name, (rule, description) in DEFAULT_RULES.items():
        _, made = TraitRule.objects.get_or_create(name=name, defaults={"rule": rule, "description": description})
        created += made
    fleet = FleetSettings.load()
    if not fleet.cost_model:
        fleet.cost_model = DEMO_COST_MODEL
        fleet.save(update_fields=["cost_model", "updated_at"])
    return created


def demo_hosts() -> list[dict]:
    hosts = []
    index = 0
    for room in ROOMS:
        for row in range(1, ROWS + 1):
            for rack in range(1, RACKS + 1):
                for slot in range(1, PER_RACK + 1):
                    index += 1
                    name = f"{room}-r{row}-k{rack}-n{slot}"
                    hosts.append(
                        {
                            "name": name,
                            "profile": PROFILE_BY_ROW[row][slot - 1],
                            "key_erase": index % 2 == 0,
                            "location": {"site": "lab", "room": room, "row": str(row), "rack": f"{room}{row}-{rack}"},
                            "bmc_address": f"redfish://10.{10 + ROOMS.index(room)}.{row}{rack}.{slot}/redfish/v1/Systems/1",
                            "boot_mac": f"52:54:00:{ROOMS.index(room):02x}:{row * 16 + rack:02x}:{slot:02x}",
                        }
                    )
    return hosts


def seed_demo_fleet(*, acting_user=None) -> tuple[int, int]:
    """Enrol the demo fleet into the lab (idempotent). Returns (enrolled now, already there)."""
    if settings.TEAPOT_PROVISIONER != "lab":
        return 0, 0  # never invent BMCs on a real management cluster
    from teapot_portal.gateway.lab import faults, profiles

    seed_demo_rules()
    known = set(Host.objects.values_list("name", flat=True)) | set(
        HostEnrolment.objects.exclude(state=HostEnrolment.FAILED).values_list("name", flat=True)
    )
    enrolled = 0
    with transaction.atomic():
        for spec in demo_hosts():
            if spec["name"] in known:
                continue
            profile = profiles.build(spec["profile"], spec["name"])
            profile["encrypted_disks"] = spec["key_erase"]
            profiles.lab_host_profile_set(spec["name"], profile)
            if spec["name"] in FAULTS:
                faults.inject(FAULTS[spec["name"]], host=spec["name"])
            try:
                host_enrol(
                    name=spec["name"],
                    bmc_address=spec["bmc_address"],
                    bmc_username="admin",
                    bmc_password="demo-bmc-password",  # noqa: S106 (lab BMCs are simulated)
                    boot_mac=spec["boot_mac"],
                    location=spec["location"],
                    key_erase_capable=spec["key_erase"],
                    notes=f"demo {spec['profile']} host",
                    acting_user=acting_user,
                )
            except ValidationError:
                continue
            enrolled += 1
    return enrolled, len(known)
