"""What a host is made of, normalised from its BareMetalHost: pure functions, no database.

:func:`normalize` turns ``status.hardware`` (metal3-facts.md §1: ``cpu``, ``ramMebibytes``,
``storage[]``, ``nics[]``, ``firmware.bios``, ``systemVendor``) and the host's annotations into
a :class:`Hardware`, the columns the inventory filters and selects on.

Rules:

* Missing hardware (a host not yet inspected) or missing parts give empty values (0, "", ()),
  never an error: inspection fills them in later.
* A value of the wrong type (``cpu.count: "many"``) raises :class:`HardwareError` naming the
  field: guessing a zero would misclassify the host. The sync then keeps the host's last good
  hardware and shows the error on the host (``sync_error``).
* A disk's ``type`` is HDD, SSD or NVME (the BMH enum); when it is missing or unknown it is
  derived (``/dev/nvme*`` → NVME, rotational → HDD, else SSD) and a warning says so.

**Accelerators.** BareMetalHost hardware details list no GPUs or FPGAs (Ironic's inspector
reports PCI devices only with extra collectors, and HardwareData has no field for them). Teapot
reads them from one annotation on the BareMetalHost::

    teapot.io/accelerators: '[{"type": "nvidia-a100", "count": 8}]'

a JSON list of ``{"type": <name>, "count": <1..64>}``; ``type`` is lower case
(``^[a-z0-9][a-z0-9.-]*$``, at most 63 characters: vendor-model, e.g. ``xilinx-u250``), so it
can become a trait and a label value. The lab's inspection sets it from the host's profile; on
a real fleet operators set it per host when enrolling (later also per hardware profile, which
stamps it on every host of the profile), or a site script derives it from PCI data. Entries of
the same type are added up. An annotation that is not valid as a whole gives no accelerators
and a warning (``Hardware.warnings``) that the sync stores on the host — never an exception:
a wrong GPU count must be visible, not half-applied.

**Key erase.** ``teapot.io/key-erase: "true" | "false"`` on the BareMetalHost says whether the
host's disks are encrypted with a per-tenant key, so a hand-off can erase the key (~1 minute)
instead of cleaning the disks. Absent → ``key_erase`` is None: the sync leaves the operator's
value alone. Any other value → None and a warning.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

ANNOTATION_ACCELERATORS = "teapot.io/accelerators"
ANNOTATION_KEY_ERASE = "teapot.io/key-erase"
ACCELERATOR_TYPE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
ACCELERATOR_TYPE_MAX_LENGTH = 63
ACCELERATOR_MAX_COUNT = 64
DISK_TYPES = ("HDD", "SSD", "NVME")
CPU_FLAG_MAX_LENGTH = 64  # the column's limit; real flags are short (avx512f, sse4_2)

# Bounds that keep every value inside its database column (PostgreSQL integer / bigint).
_INT_MAX = 2**31 - 1
_BIGINT_MAX = 2**63 - 1


class HardwareError(ValueError):
    """``status.hardware`` has a value of the wrong type; ``str()`` names the field."""


@dataclass(frozen=True)
class Disk:
    name: str
    type: str  # HDD | SSD | NVME
    size_bytes: int
    rotational: bool
    model: str = ""


@dataclass(frozen=True)
class Nic:
    name: str
    mac: str
    speed_gbps: int


@dataclass(frozen=True)
class Accelerator:
    type: str
    count: int


@dataclass(frozen=True)
class Firmware:
    bios_vendor: str = ""
    bios_version: str = ""
    bios_date: str = ""


@dataclass(frozen=True)
class Hardware:
    inspected: bool = False  # status.hardware was present
    cpu_model: str = ""
    cpu_count: int = 0  # logical CPUs (threads), as BMO reports cpu.count
    cpu_mhz: float = 0.0
    cpu_flags: tuple[str, ...] = ()
    cpu_arch: str = ""
    ram_mib: int = 0
    disks: tuple[Disk, ...] = ()
    nics: tuple[Nic, ...] = ()
    system_vendor: str = ""
    system_product: str = ""
    system_serial: str = ""
    firmware: Firmware = field(default_factory=Firmware)
    accelerators: tuple[Accelerator, ...] = ()
    key_erase: bool | None = None  # from teapot.io/key-erase; None: not said
    warnings: tuple[str, ...] = ()

    @property
    def disk_total_bytes(self) -> int:
        return min(sum(d.size_bytes for d in self.disks), _BIGINT_MAX)

    @property
    def nic_max_speed_gbps(self) -> int:
        return max((n.speed_gbps for n in self.nics), default=0)

    @property
    def accelerator_count(self) -> int:
        return sum(a.count for a in self.accelerators)

    # Flat dataclasses of scalars: their __dict__ is the JSON (dataclasses.asdict deep-copies
    # recursively, seconds for a 10,000-host sync).
    def disks_json(self) -> list[dict]:
        return [dict(d.__dict__) for d in self.disks]

    def nics_json(self) -> list[dict]:
        return [dict(n.__dict__) for n in self.nics]

    def accelerators_json(self) -> list[dict]:
        return [dict(a.__dict__) for a in self.accelerators]

    def firmware_json(self) -> dict:
        return dict(self.firmware.__dict__)


# --------------------------------------------------------------------------- typed reads


def _map(value, where: str) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise HardwareError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _list(value, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise HardwareError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _str(value, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise HardwareError(f"{where}: expected a string, got {value!r}")
    return value.strip()


def _int(value, where: str, maximum: int = _INT_MAX) -> int:
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise HardwareError(f"{where}: expected a whole number, got {value!r}")
    if not 0 <= value <= maximum:
        raise HardwareError(f"{where}: {value} is out of range")
    return value


def _float(value, where: str) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise HardwareError(f"{where}: expected a non-negative number, got {value!r}")
    return float(value)


def _bool(value, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise HardwareError(f"{where}: expected true or false, got {value!r}")
    return value


# --------------------------------------------------------------------------- the parts


def _disk(raw, index: int, warnings: list[str]) -> Disk:
    where = f"storage[{index}]"
    raw = _map(raw, where)
    name = _str(raw.get("name"), f"{where}.name")
    rotational = _bool(raw.get("rotational"), f"{where}.rotational")
    kind = _str(raw.get("type"), f"{where}.type").upper()
    if kind not in DISK_TYPES:
        derived = "NVME" if name.startswith("/dev/nvme") else "HDD" if rotational else "SSD"
        label = f"type {kind!r}" if kind else "no type"
        warnings.append(f"disk {name or index} has {label}; taken as {derived}")
        kind = derived
    return Disk(
        name=name,
        type=kind,
        size_bytes=_int(raw.get("sizeBytes"), f"{where}.sizeBytes", _BIGINT_MAX),
        rotational=rotational,
        model=_str(raw.get("model"), f"{where}.model"),
    )


def _nic(raw, index: int) -> Nic:
    where = f"nics[{index}]"
    raw = _map(raw, where)
    return Nic(
        name=_str(raw.get("name"), f"{where}.name"),
        mac=_str(raw.get("mac"), f"{where}.mac").lower(),
        speed_gbps=_int(raw.get("speedGbps"), f"{where}.speedGbps"),
    )


def parse_accelerators(value: str | None) -> tuple[tuple[Accelerator, ...], str]:
    """The ``teapot.io/accelerators`` annotation → (accelerators, warning). Never raises.

    Valid as a whole or not at all: on any problem, no accelerators and a warning saying why.
    """
    if value is None or not value.strip():
        return (), ""
    prefix = f"{ANNOTATION_ACCELERATORS} ignored"
    try:
        entries = json.loads(value)
    except ValueError:
        return (), f"{prefix}: not valid JSON"
    if not isinstance(entries, list):
        return (), f'{prefix}: expected a JSON list like [{{"type": "nvidia-a100", "count": 8}}]'
    counts: dict[str, int] = {}
    for index, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            return (), f"{prefix}: entry {index} is not an object"
        kind, count = entry.get("type"), entry.get("count")
        if not isinstance(kind, str) or not ACCELERATOR_TYPE.match(kind) or len(kind) > ACCELERATOR_TYPE_MAX_LENGTH:
            return (), (
                f"{prefix}: entry {index} needs a type of lower-case letters, digits, '.' and '-' "
                f"(e.g. nvidia-a100), got {kind!r}"
            )
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= ACCELERATOR_MAX_COUNT:
            return (
                (),
                f"{prefix}: entry {index} ({kind}) needs a count from 1 to {ACCELERATOR_MAX_COUNT}, got {count!r}",
            )
        counts[kind] = counts.get(kind, 0) + count
    return tuple(Accelerator(kind, counts[kind]) for kind in sorted(counts)), ""


def parse_key_erase(value: str | None) -> tuple[bool | None, str]:
    """The ``teapot.io/key-erase`` annotation → (True/False, or None when absent or bad; warning)."""
    if value is None:
        return None, ""
    word = value.strip().lower()
    if word in ("true", "false"):
        return word == "true", ""
    return None, f'{ANNOTATION_KEY_ERASE} ignored: expected "true" or "false", got {value!r}'


# --------------------------------------------------------------------------- normalize


def normalize(hardware: dict | None, annotations: Mapping[str, str] | None = None) -> Hardware:
    """``status.hardware`` plus the Teapot annotations → :class:`Hardware` (see the module doc)."""
    annotations = annotations or {}
    warnings: list[str] = []
    accelerators, warning = parse_accelerators(annotations.get(ANNOTATION_ACCELERATORS))
    if warning:
        warnings.append(warning)
    key_erase, warning = parse_key_erase(annotations.get(ANNOTATION_KEY_ERASE))
    if warning:
        warnings.append(warning)
    if hardware is None:
        return Hardware(accelerators=accelerators, key_erase=key_erase, warnings=tuple(warnings))
    hw = _map(hardware, "hardware")
    cpu = _map(hw.get("cpu"), "cpu")
    system = _map(hw.get("systemVendor"), "systemVendor")
    bios = _map(_map(hw.get("firmware"), "firmware").get("bios"), "firmware.bios")
    flags = {_str(f, "cpu.flags[]") for f in _list(cpu.get("flags"), "cpu.flags")} - {""}
    if any(len(f) > CPU_FLAG_MAX_LENGTH for f in flags):
        warnings.append(f"CPU flags longer than {CPU_FLAG_MAX_LENGTH} characters ignored")
        flags = {f for f in flags if len(f) <= CPU_FLAG_MAX_LENGTH}
    return Hardware(
        inspected=True,
        cpu_model=_str(cpu.get("model"), "cpu.model"),
        cpu_count=_int(cpu.get("count"), "cpu.count"),
        cpu_mhz=_float(cpu.get("clockMegahertz"), "cpu.clockMegahertz"),
        cpu_flags=tuple(sorted(flags)),
        cpu_arch=_str(cpu.get("arch"), "cpu.arch"),
        ram_mib=_int(hw.get("ramMebibytes"), "ramMebibytes"),
        disks=tuple(_disk(d, i, warnings) for i, d in enumerate(_list(hw.get("storage"), "storage"))),
        nics=tuple(_nic(n, i) for i, n in enumerate(_list(hw.get("nics"), "nics"))),
        system_vendor=_str(system.get("manufacturer"), "systemVendor.manufacturer"),
        system_product=_str(system.get("productName"), "systemVendor.productName"),
        system_serial=_str(system.get("serialNumber"), "systemVendor.serialNumber"),
        firmware=Firmware(
            bios_vendor=_str(bios.get("vendor"), "firmware.bios.vendor"),
            bios_version=_str(bios.get("version"), "firmware.bios.version"),
            bios_date=_str(bios.get("date"), "firmware.bios.date"),
        ),
        accelerators=accelerators,
        key_erase=key_erase,
        warnings=tuple(warnings),
    )
