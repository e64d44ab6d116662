"""Normalising BareMetalHost hardware and the Teapot annotations (pure functions, no database)."""

from __future__ import annotations

import copy
import json

import pytest

from hosts import hardware
from hosts.hardware import Accelerator, Disk, HardwareError, Nic, normalize
from teapot_portal.gateway.lab import profiles

ACCELERATORS = hardware.ANNOTATION_ACCELERATORS


def lab_hardware(profile: str, host: str = "h1") -> dict:
    return profiles.build(profile, host)["hardware"]


def test_a_full_gpu_host_is_normalised():
    raw = lab_hardware("gpu-a100")
    found = normalize(raw, {ACCELERATORS: '[{"type":"nvidia-a100","count":8}]'})
    assert found.inspected
    assert (found.cpu_model, found.cpu_count, found.cpu_mhz, found.cpu_arch) == (
        "AMD EPYC 7763 64-Core Processor",
        128,
        2450.0,
        "x86_64",
    )
    assert "avx512f" in found.cpu_flags and list(found.cpu_flags) == sorted(found.cpu_flags)
    assert found.ram_mib == 1024 * 1024
    assert len(found.disks) == 6 and {d.type for d in found.disks} == {"NVME"}
    assert found.disks[0] == Disk("/dev/nvme0n1", "NVME", 1920 * profiles.GB, False, "SAMSUNG MZQL21T9HCJR")
    assert found.disk_total_bytes == 2 * 1920 * profiles.GB + 4 * 3840 * profiles.GB
    assert [n.speed_gbps for n in found.nics] == [25, 200, 200] and found.nic_max_speed_gbps == 200
    assert found.nics[0] == Nic("eno1", raw["nics"][0]["mac"], 25)
    assert (found.system_vendor, found.system_product) == ("Supermicro", "AS -4124GO-NART+")
    assert found.system_serial == raw["systemVendor"]["serialNumber"]
    assert found.firmware_json() == {"bios_vendor": "Supermicro", "bios_version": "2.19.1", "bios_date": "03/14/2025"}
    assert found.accelerators == (Accelerator("nvidia-a100", 8),) and found.accelerator_count == 8
    assert found.key_erase is None and found.warnings == ()
    assert found.disks_json()[0] == {
        "name": "/dev/nvme0n1",
        "type": "NVME",
        "size_bytes": 1920 * 10**9,
        "rotational": False,
        "model": "SAMSUNG MZQL21T9HCJR",
    }


@pytest.mark.parametrize("profile", sorted(profiles.CATALOGUE))
def test_every_lab_profile_normalises_without_warnings(profile):
    made = profiles.build(profile, "h1")
    annotations = {ACCELERATORS: json.dumps(made["accelerators"])} if made["accelerators"] else {}
    found = normalize(made["hardware"], annotations)
    assert found.warnings == ()
    assert found.cpu_count == made["hardware"]["cpu"]["count"]
    assert found.accelerator_count == sum(a["count"] for a in made["accelerators"])


def test_storage_dense_host_has_rotational_hdds():
    found = normalize(lab_hardware("storage-dense"), {})
    hdds = [d for d in found.disks if d.type == "HDD"]
    assert len(hdds) == 12 and all(d.rotational for d in hdds)
    assert {d.type for d in found.disks} == {"SSD", "HDD"}


def test_a_host_not_yet_inspected_has_empty_hardware():
    found = normalize(None, {})
    assert not found.inspected
    assert (found.cpu_count, found.ram_mib, found.disk_total_bytes, found.nic_max_speed_gbps) == (0, 0, 0, 0)
    assert found.disks == () and found.accelerators == () and found.warnings == ()


def test_partial_hardware_fills_what_is_there():
    found = normalize({"cpu": {"count": 4}, "storage": [{"name": "/dev/sda", "sizeBytes": 10}]}, {})
    assert found.inspected and found.cpu_count == 4 and found.cpu_model == "" and found.ram_mib == 0
    assert found.nics == () and found.system_vendor == "" and found.firmware == hardware.Firmware()
    # No type on the disk: derived from rotational (false → SSD), and said so.
    assert found.disks == (Disk("/dev/sda", "SSD", 10, False),)
    assert found.warnings == ("disk /dev/sda has no type; taken as SSD",)


def test_disk_types_are_derived_when_missing_or_unknown():
    found = normalize(
        {
            "storage": [
                {"name": "/dev/nvme0n1", "sizeBytes": 1},
                {"name": "/dev/sdb", "rotational": True, "sizeBytes": 2, "type": "spinning"},
                {"name": "/dev/sdc", "type": "ssd", "sizeBytes": 3},
            ]
        },
        {},
    )
    assert [d.type for d in found.disks] == ["NVME", "HDD", "SSD"]
    assert len(found.warnings) == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda hw: hw["cpu"].update(count="many"), "cpu.count"),
        (lambda hw: hw.update(ramMebibytes=-1), "ramMebibytes"),
        (lambda hw: hw.update(storage={"sda": {}}), "storage"),
        (lambda hw: hw["nics"][1].update(speedGbps=True), "nics[1].speedGbps"),
        (lambda hw: hw["cpu"].update(clockMegahertz="fast"), "cpu.clockMegahertz"),
        (lambda hw: hw.update(cpu=["x86"]), "cpu"),
        (lambda hw: hw["storage"][0].update(rotational="no"), "storage[0].rotational"),
    ],
)
def test_values_of_the_wrong_type_are_errors_naming_the_field(change, field):
    raw = copy.deepcopy(lab_hardware("gpu-l40s"))
    change(raw)
    with pytest.raises(HardwareError) as caught:
        normalize(raw, {})
    assert str(caught.value).startswith(field)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('[{"type": "nvidia-a100", "count": 8}]', (Accelerator("nvidia-a100", 8),)),
        ("[]", ()),
        ("", ()),
        (
            '[{"type": "xilinx-u250", "count": 2}, {"type": "nvidia-l40s", "count": 1}, {"type": "xilinx-u250", "count": 1}]',
            (Accelerator("nvidia-l40s", 1), Accelerator("xilinx-u250", 3)),
        ),
        ('[{"type": "amd-mi300x", "count": 8, "memoryGiB": 192}]', (Accelerator("amd-mi300x", 8),)),
    ],
)
def test_good_accelerator_annotations(value, expected):
    found = normalize(None, {ACCELERATORS: value})
    assert found.accelerators == expected and found.warnings == ()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("8x a100", "not valid JSON"),
        ('{"type": "nvidia-a100", "count": 8}', "expected a JSON list"),
        ('["nvidia-a100"]', "entry 1 is not an object"),
        ('[{"type": "NVIDIA A100", "count": 8}]', "entry 1 needs a type"),
        ('[{"type": "-a100", "count": 8}]', "entry 1 needs a type"),
        ('[{"count": 8}]', "entry 1 needs a type"),
        ('[{"type": "' + "a" * 64 + '", "count": 1}]', "entry 1 needs a type"),
        ('[{"type": "nvidia-a100", "count": 0}]', "count from 1 to 64"),
        ('[{"type": "nvidia-a100", "count": 65}]', "count from 1 to 64"),
        ('[{"type": "nvidia-a100", "count": "8"}]', "count from 1 to 64"),
        ('[{"type": "nvidia-a100", "count": true}]', "count from 1 to 64"),
        ('[{"type": "nvidia-a100", "count": 8}, {"type": "x", "count": 2.5}]', "entry 2 (x) needs a count"),
    ],
)
def test_a_bad_accelerator_annotation_gives_none_and_a_warning(value, says):
    found = normalize(lab_hardware("general"), {ACCELERATORS: value})
    assert found.accelerators == ()
    assert len(found.warnings) == 1 and says in found.warnings[0]
    assert found.warnings[0].startswith("teapot.io/accelerators ignored")
    assert found.cpu_count == 64  # the rest of the hardware is unaffected


@pytest.mark.parametrize(
    ("value", "expected", "warned"),
    [("true", True, False), ("False", False, False), (None, None, False), ("yes", None, True)],
)
def test_key_erase_annotation(value, expected, warned):
    annotations = {} if value is None else {hardware.ANNOTATION_KEY_ERASE: value}
    found = normalize(None, annotations)
    assert found.key_erase is expected
    assert bool(found.warnings) is warned
