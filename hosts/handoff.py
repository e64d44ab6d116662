"""How long handing a host to another tenant takes, by how its disks are cleaned.

* key erase — the disks are encrypted with a per-tenant key; erasing the key is ~1 minute;
* metadata cleaning — Ironic's automated cleaning (partition tables, signatures): ~10 minutes;
* full cleaning — every byte overwritten: capacity ÷ write throughput per disk, disks in parallel,
  so the biggest slowest disk decides (hours for large HDDs).

These are estimates for planning before the fleet has history; later issues replace them with
the p95 of the state history Teapot records per hardware class.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

KEY_ERASE_SECONDS = 60
METADATA_SECONDS = 600
# Sustained sequential write, bytes per second, conservative.
THROUGHPUT = {"HDD": 150e6, "SSD": 500e6, "NVME": 1500e6}


def full_clean_seconds(disks: Iterable[Mapping]) -> int:
    slowest = 0.0
    for disk in disks:
        size = float(disk.get("size_bytes", disk.get("sizeBytes", 0)) or 0)
        kind = str(disk.get("type", "HDD")).upper()
        slowest = max(slowest, size / THROUGHPUT.get(kind, THROUGHPUT["HDD"]))
    return int(slowest) + METADATA_SECONDS


def handoff_seconds(*, key_erase_capable: bool, mode: str, disks: Iterable[Mapping] = ()) -> int:
    """``mode``: "key-erase", "metadata" or "full". Key erase on a host that cannot do it falls
    back to metadata cleaning — never to handing over readable data."""
    if mode == "key-erase":
        return KEY_ERASE_SECONDS if key_erase_capable else METADATA_SECONDS
    if mode == "metadata":
        return METADATA_SECONDS
    if mode == "full":
        return full_clean_seconds(disks)
    raise ValueError(f"unknown cleaning mode {mode!r}: key-erase, metadata or full")


def best_handoff_seconds(*, key_erase_capable: bool) -> int:
    """The fastest safe hand-off this host offers (what the allocator prefers for back-to-back bookings)."""
    return KEY_ERASE_SECONDS if key_erase_capable else METADATA_SECONDS
