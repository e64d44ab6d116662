"""What lab hosts are made of: the hardware inspection finds, their accelerators, their disks.

A profile is a dict::

    {"profile": "gpu-a100",             # catalogue key, or "" for a custom one
     "hardware": {...},                 # BareMetalHost status.hardware shape
     "accelerators": [{"type": "nvidia-a100", "count": 8}],
     "encrypted_disks": True,           # per-tenant disk key: hand-off by key erase (~1 min)
     "bmc_reachable": True,             # False: registration never succeeds
     "full_erase": False}               # Ironic overwrites whole disks instead of metadata

:func:`lab_host_profile_set` stores one for a host name (before or after the host is enrolled:
inspection reads it when it finishes). A host with none gets :func:`default_profile`. Serial
numbers and MACs are derived from the host name, so every host looks like a distinct machine
and the same name always gets the same hardware.
"""

from __future__ import annotations

import copy
import hashlib

from teapot_portal.gateway.lab.models import LabHostProfile

GB = 1000**3
TB = 1000**4


def _digest(host: str, what: str) -> str:
    return hashlib.sha256(f"{host}:{what}".encode()).hexdigest()


def _mac(host: str, index: int) -> str:
    digest = _digest(host, f"nic{index}")
    # 52:54:00 is a locally administered prefix: never a real vendor's MAC.
    return "52:54:00:" + ":".join(digest[i : i + 2] for i in (0, 2, 4))


def _serial(host: str, what: str, length: int = 10) -> str:
    return _digest(host, what)[:length].upper()


def _cpu(model: str, count: int, mhz: float, arch: str = "x86_64") -> dict:
    flags = ["aes", "avx", "avx2", "avx512f", "fma", "sse4_2", "vmx"] if arch == "x86_64" else ["aes", "asimd", "sve"]
    return {"arch": arch, "model": model, "clockMegahertz": mhz, "flags": flags, "count": count}


def _disks(host: str, specs: list[tuple[int, str, int, str]]) -> list[dict]:
    """(how many, type HDD|SSD|NVME, bytes each, model) → BMH storage entries."""
    disks, index = [], 0
    for count, kind, size, model in specs:
        for _ in range(count):
            name = f"/dev/nvme{index}n1" if kind == "NVME" else f"/dev/sd{chr(ord('a') + index)}"
            disks.append(
                {
                    "name": name,
                    "rotational": kind == "HDD",
                    "type": kind,
                    "sizeBytes": size,
                    "model": model,
                    "serialNumber": _serial(host, f"disk{index}"),
                }
            )
            index += 1
    return disks


def _nics(host: str, speeds: list[int]) -> list[dict]:
    nics = [
        {
            "name": f"eno{index + 1}",
            "model": "0x15b3 0x101d" if speed >= 100 else "0x8086 0x159b",
            "mac": _mac(host, index),
            "speedGbps": speed,
            "pxe": index == 0,
        }
        for index, speed in enumerate(speeds)
    ]
    # The provisioning NIC has the address DHCP gave it during inspection (172.22.0.0/16, as in
    # metal3-dev-env); it becomes the Machine's InternalIP.
    digest = int(_digest(host, "ip"), 16)
    nics[0]["ip"] = f"172.22.{digest % 254 + 1}.{digest // 254 % 253 + 2}"
    return nics


def _hardware(host: str, *, vendor: str, product: str, cpu: dict, ram_gib: int, disks: list, nics: list) -> dict:
    return {
        "cpu": cpu,
        "ramMebibytes": ram_gib * 1024,
        "storage": disks,
        "nics": nics,
        "systemVendor": {"manufacturer": vendor, "productName": product, "serialNumber": _serial(host, "system")},
        "firmware": {"bios": {"vendor": vendor, "version": "2.19.1", "date": "03/14/2025"}},
        "hostname": host.split(".")[0],
    }


def _general(host: str) -> dict:
    return {
        "hardware": _hardware(
            host,
            vendor="Dell Inc.",
            product="PowerEdge R6625",
            cpu=_cpu("AMD EPYC 9354 32-Core Processor", 64, 3250.0),
            ram_gib=256,
            disks=_disks(host, [(2, "NVME", 960 * GB, "Dell Ent NVMe P5520 RI 0.96TB")]),
            nics=_nics(host, [25, 25]),
        ),
        "accelerators": [],
        "encrypted_disks": True,
    }


def _highmem(host: str) -> dict:
    return {
        "hardware": _hardware(
            host,
            vendor="Dell Inc.",
            product="PowerEdge R7625",
            cpu=_cpu("AMD EPYC 9454 48-Core Processor", 96, 2750.0),
            ram_gib=1024,
            disks=_disks(host, [(2, "NVME", 1920 * GB, "Dell Ent NVMe P5520 RI 1.92TB")]),
            nics=_nics(host, [25, 25]),
        ),
        "accelerators": [],
        "encrypted_disks": True,
    }


def _gpu_a100(host: str) -> dict:
    return {
        "hardware": _hardware(
            host,
            vendor="Supermicro",
            product="AS -4124GO-NART+",
            cpu=_cpu("AMD EPYC 7763 64-Core Processor", 128, 2450.0),
            ram_gib=1024,
            disks=_disks(
                host, [(2, "NVME", 1920 * GB, "SAMSUNG MZQL21T9HCJR"), (4, "NVME", 3840 * GB, "SAMSUNG MZQL23T8HCLS")]
            ),
            nics=_nics(host, [25, 200, 200]),
        ),
        "accelerators": [{"type": "nvidia-a100", "count": 8}],
        "encrypted_disks": True,
    }


def _gpu_l40s(host: str) -> dict:
    return {
        "hardware": _hardware(
            host,
            vendor="Lenovo",
            product="ThinkSystem SR675 V3",
            cpu=_cpu("AMD EPYC 9334 32-Core Processor", 64, 2700.0),
            ram_gib=512,
            disks=_disks(host, [(2, "NVME", 1920 * GB, "ThinkSystem 2.5 U.2 P5620 1.92TB")]),
            nics=_nics(host, [25, 100]),
        ),
        "accelerators": [{"type": "nvidia-l40s", "count": 4}],
        "encrypted_disks": False,
    }


def _fpga_u250(host: str) -> dict:
    return {
        "hardware": _hardware(
            host,
            vendor="HPE",
            product="ProLiant DL380 Gen11",
            cpu=_cpu("Intel(R) Xeon(R) Gold 6430", 64, 2100.0),
            ram_gib=384,
            disks=_disks(host, [(2, "SSD", 960 * GB, "MZ7L3960HCJR")]),
            nics=_nics(host, [25, 100]),
        ),
        "accelerators": [{"type": "xilinx-u250", "count": 2}],
        "encrypted_disks": False,
    }


def _storage_dense(host: str) -> dict:
    return {
        "hardware": _hardware(
            host,
            vendor="Supermicro",
            product="SSG-640P-E1CR36H",
            cpu=_cpu("Intel(R) Xeon(R) Silver 4410Y", 24, 2000.0),
            ram_gib=256,
            disks=_disks(
                host, [(2, "SSD", 480 * GB, "SAMSUNG MZ7L3480HCHQ"), (12, "HDD", 16 * TB, "ST16000NM001G-2KK103")]
            ),
            nics=_nics(host, [25, 100]),
        ),
        "accelerators": [],
        "encrypted_disks": False,
    }


CATALOGUE = {
    "general": _general,
    "highmem": _highmem,
    "gpu-a100": _gpu_a100,
    "gpu-l40s": _gpu_l40s,
    "fpga-u250": _fpga_u250,
    "storage-dense": _storage_dense,
}


def build(profile: str, host: str) -> dict:
    """The catalogue profile ``profile`` as host ``host`` would have it (its own serials and MACs)."""
    try:
        make = CATALOGUE[profile]
    except KeyError as exc:
        raise ValueError(f"unknown lab profile {profile!r}; known: {', '.join(CATALOGUE)}") from exc
    return {"profile": profile, "bmc_reachable": True, "full_erase": False, **make(host)}


def default_profile(host: str) -> dict:
    """A small machine, for hosts enrolled without a profile."""
    return {
        "profile": "",
        "hardware": _hardware(
            host,
            vendor="QEMU",
            product="Standard PC (Q35 + ICH9, 2009)",
            cpu=_cpu("Intel Xeon Processor (Icelake)", 8, 2600.0),
            ram_gib=32,
            disks=_disks(host, [(1, "SSD", 480 * GB, "QEMU HARDDISK")]),
            nics=_nics(host, [10]),
        ),
        "accelerators": [],
        "encrypted_disks": False,
        "bmc_reachable": True,
        "full_erase": False,
    }


def lab_host_profile_set(name: str, profile: dict | str) -> LabHostProfile:
    """Give host ``name`` a profile: a catalogue key, or a dict (missing keys from the default)."""
    data = build(profile, name) if isinstance(profile, str) else {**default_profile(name), **profile}
    record, _ = LabHostProfile.objects.update_or_create(
        name=name,
        defaults={
            "profile": data.get("profile", ""),
            "hardware": data["hardware"],
            "accelerators": list(data.get("accelerators") or []),
            "encrypted_disks": bool(data.get("encrypted_disks")),
            "bmc_reachable": bool(data.get("bmc_reachable", True)),
            "full_erase": bool(data.get("full_erase")),
        },
    )
    return record


def profile_for(name: str) -> dict:
    """Host ``name``'s profile as a dict (the default one when none was set)."""
    record = LabHostProfile.objects.filter(name=name).first()
    if record is None:
        return default_profile(name)
    return {
        "profile": record.profile,
        "hardware": copy.deepcopy(record.hardware),
        "accelerators": copy.deepcopy(record.accelerators),
        "encrypted_disks": record.encrypted_disks,
        "bmc_reachable": record.bmc_reachable,
        "full_erase": record.full_erase,
    }
