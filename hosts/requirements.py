"""The requirement language of host selection: what a tenant asks of the hosts it gets.

Node pools, reservations, quotas, the API and the pages all say which hosts will do with one
:class:`Requirement` — a different language from the operator's classification rules
(:mod:`hosts.rules`): rules *make* traits out of hardware, requirements *ask* for traits and
minimums. A requirement has three forms that carry the same meaning:

* the value, :class:`Requirement` — frozen and canonical (traits sorted and de-duplicated,
  accelerators sorted by type…), so equal requirements compare and hash equal and serve as
  cache keys; :data:`Requirement.ANY` is the empty one and matches every host;
* JSON, what the database and the API store: :meth:`Requirement.to_json` /
  :meth:`Requirement.from_json`, checked against :data:`REQUIREMENT_SCHEMA` (JSON Schema
  draft 2020-12), then for meaning;
* the compact text of the API and CLI: :meth:`Requirement.parse` / :meth:`Requirement.to_compact`,
  which round-trip (``Requirement.parse(r.to_compact()) == r`` for every valid ``r``)::

      cores>=64,ram>=512Gi,gpu:nvidia-a100>=4,disk:nvme>=1.5T,nic>=25,arch=aarch64,nvme,gpu-a100|gpu-l40s,!fpga

and, for people, :meth:`Requirement.describe`: "≥ 64 cores, ≥ 512 GiB RAM, 4× nvidia-a100, …".

The compact grammar (terms separated by commas; whitespace around terms, operators and units
is ignored; keys, units and disk types are case-insensitive, other names are not)::

    term     := "cores>=" INT                        logical CPUs (threads), as Host.cpu_count
              | "ram>=" NUM [Gi | Ti]                GiB (bare number) or TiB = 1024 GiB; whole GiB
              | ("gpu" | "accel") ":" TYPE [">=" INT]   that many accelerators of TYPE (bare: ≥ 1)
              | "disk" [":" DISKTYPE] ">=" NUM [G | GB | T | TB]   capacity, decimal; bare = TB
              | "disk:" DISKTYPE                     at least one disk of that type
              | "nic>=" INT [G]                      fastest NIC, Gbit/s
              | "arch=" ARCH                         e.g. x86_64, aarch64 ("==" accepted too)
              | TRAIT                                a required trait
              | "!" TRAIT                            a forbidden trait
              | TRAIT ("|" TRAIT)+                   at least one of these traits
    DISKTYPE := nvme | ssd | hdd

A term with an operator or a ':' is a key term; any other term is a trait, so traits named like
a key (``gpu``, ``disk``) stay expressible. Only minimums exist: ``cores>64`` or ``ram<=1Ti`` is
refused with "only minimums: use cores>=64". A key given twice, an unknown key ("did you mean
'cores'?"), a bad unit or number raises :class:`RequirementError` with the 0-based ``position``
of the offending term. Empty text is :data:`Requirement.ANY`; text is at most 2,000 characters.

Details decided here (beyond the issue):

* A ``disk`` minimum with a type counts only disks of that type (their sizes summed); without a
  type, all disks. Disk sizes are whole GB (``min_disk_tb`` has at most 3 decimals), so the size
  survives every form exactly. Only one ``disk`` term is allowed.
* Canonicalisation is semantic where it is cheap: a one-trait any-of group is a required trait,
  and a group that contains a required trait is dropped (it is always met). A trait both
  required and forbidden, or both forbidden and in a group, is an error.
* Every valid requirement's compact text fits in 2,000 characters (the constructor checks), so
  the round trip holds for all of them.
* JSON scalars may be ``null`` (= not set); ``to_json`` leaves unset keys out. JSON
  accelerators have the host's shape, ``[{"type": "nvidia-a100", "count": 4}]``.

Matching. :meth:`Requirement.matches` decides for a Host (or any object with its attributes);
:meth:`Requirement.clauses` splits it into independent :class:`Clause` s with labels, so pages
can explain why a host does not qualify; :meth:`Requirement.to_q` is a SQL *prefilter* that
never excludes a matching host (disk capacity and accelerator counts are then checked exactly
in Python by ``matches``). A host whose ``hardware`` is None (not inspected) matches only ANY.
Disk and accelerator types are compared exactly as stored (the sync normalises disk types to
HDD/SSD/NVME), which is what the JSONB containment of ``to_q`` does too; architecture is
compared case-insensitively in both.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

import jsonschema
from django.db.models import Q

from hosts.hardware import ACCELERATOR_MAX_COUNT, DISK_TYPES

# Same as hosts.models.TRAIT_NAME (not imported: this module is usable without Django's app registry).
TRAIT_PATTERN = r"[a-z0-9]([a-z0-9-]{0,55}[a-z0-9])?"
ACCELERATOR_TYPE_PATTERN = r"[a-z0-9][a-z0-9._-]{0,62}"
ARCH_PATTERN = r"[a-z0-9][a-z0-9_-]{0,31}"  # Host.architecture is 32 characters
_TRAIT = re.compile(TRAIT_PATTERN)
_ACCELERATOR_TYPE = re.compile(ACCELERATOR_TYPE_PATTERN)
_ARCH = re.compile(ARCH_PATTERN)

MAX_TEXT_LENGTH = 2000
MAX_CORES = 65_536
MAX_RAM_GIB = 1_048_576  # 1 PiB: still fits Host.ram_mib (an integer column) once in MiB
MAX_DISK_TB = 100_000
MAX_NIC_GBPS = 10_000
MAX_ACCELERATORS = ACCELERATOR_MAX_COUNT  # more of one type than a host can report never matches
MAX_LIST = 64  # traits, forbidden traits, groups, members of a group, accelerator types

TRAIT_HINT = "lowercase letters, digits and '-'"
DISK_LABELS = {"NVME": "NVMe", "SSD": "SSD", "HDD": "HDD"}


class RequirementError(ValueError):
    """A requirement that cannot be used.

    ``field`` names the JSON field at fault (None when it is the whole); ``position`` is the
    0-based offset of the offending term in compact text (None for JSON).
    """

    def __init__(self, message: str, *, field: str | None = None, position: int | None = None, text: str = ""):
        self.message, self.field, self.position, self.text = message, field, position, text
        super().__init__(message if position is None else f"{message} (at character {position + 1})")

    def pointer(self) -> str:
        """The text with a caret under the problem, for pages and the CLI ('' without a position)."""
        if self.position is None:
            return ""
        return f"{self.text}\n{' ' * self.position}^"


def _suggest(name: str, known: Iterable[str], synonyms: Mapping[str, str] | None = None) -> str:
    known = list(known)
    if synonyms and name in synonyms:
        return f"; did you mean {synonyms[name]!r}?"
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(known))}"


# --------------------------------------------------------------------------- JSON Schema

_TRAIT_ITEM = {"type": "string", "pattern": f"^{TRAIT_PATTERN}$", "description": f"A trait name ({TRAIT_HINT})."}
_TRAIT_LIST = {"type": "array", "items": _TRAIT_ITEM, "maxItems": MAX_LIST}

REQUIREMENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Host requirement",
    "description": "What a host must have to be selected. Every key is optional; {} matches every host.",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "traits": {**_TRAIT_LIST, "description": "Traits a host must all carry."},
        "forbidden": {**_TRAIT_LIST, "description": "Traits a host must not carry."},
        "any_of": {
            "type": "array",
            "maxItems": MAX_LIST,
            "items": {"type": "array", "items": _TRAIT_ITEM, "minItems": 1, "maxItems": MAX_LIST},
            "description": "Groups of traits: a host carries at least one trait of every group.",
        },
        "min_cores": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_CORES, "description": "Logical CPUs."},
        "min_ram_gib": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_RAM_GIB, "description": "GiB."},
        "accelerators": {
            "type": "array",
            "maxItems": MAX_LIST,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["type", "count"],
                "properties": {
                    "type": {"type": "string", "pattern": f"^{ACCELERATOR_TYPE_PATTERN}$"},
                    "count": {"type": "integer", "minimum": 1, "maximum": MAX_ACCELERATORS},
                },
            },
            "description": "At least `count` accelerators of each `type`.",
        },
        "min_disk_tb": {
            "type": ["number", "null"],
            "exclusiveMinimum": 0,
            "maximum": MAX_DISK_TB,
            "description": "Disk capacity in TB (decimal, whole GB), of disk_type's disks when it is set.",
        },
        "disk_type": {
            "enum": [*DISK_TYPES, None],
            "description": "Count only disks of this type; alone: at least one such disk.",
        },
        "min_nic_gbps": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_NIC_GBPS, "description": "Gbit/s."},
        "arch": {"type": ["string", "null"], "pattern": f"^{ARCH_PATTERN}$", "description": "e.g. x86_64, aarch64."},
    },
}
_VALIDATOR = jsonschema.Draft202012Validator(REQUIREMENT_SCHEMA)
_FIELDS = tuple(REQUIREMENT_SCHEMA["properties"])

# What a leaf must be, by its path with list indexes as "*" (for schema error messages).
_WHOLE = "a whole number ≥ 1"
_MUST_BE = {
    "traits": "a list of trait names",
    "forbidden": "a list of trait names",
    "any_of": "a list of groups (lists) of trait names",
    "any_of.*": "a list of trait names",
    "accelerators": 'a list like [{"type": "nvidia-a100", "count": 4}]',
    "accelerators.*": 'an object like {"type": "nvidia-a100", "count": 4}',
    "accelerators.*.count": _WHOLE,
    "min_cores": _WHOLE,
    "min_ram_gib": _WHOLE,
    "min_nic_gbps": _WHOLE,
    "min_disk_tb": "a number of TB > 0",
}
_NAME_OF = {
    "traits.*": f"a trait name ({TRAIT_HINT})",
    "forbidden.*": f"a trait name ({TRAIT_HINT})",
    "any_of.*.*": f"a trait name ({TRAIT_HINT})",
    "accelerators.*.type": "an accelerator type (lowercase letters, digits, '.', '_' and '-', e.g. nvidia-a100)",
    "arch": "an architecture name (lowercase, e.g. x86_64 or aarch64)",
    "disk_type": "a disk type (HDD, SSD or NVME)",
}


def _where(path: list) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _schema_error(error: jsonschema.ValidationError) -> RequirementError:
    path = list(error.absolute_path)
    field = str(path[0]) if path else None
    where = _where(path)
    shape = ".".join("*" if isinstance(p, int) else str(p) for p in path)
    value, kind = error.instance, error.validator
    if kind == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        unknown = sorted(str(k) for k in value if k not in known)[0]
        prefix = f"{where}: " if path else ""
        return RequirementError(f"{prefix}unknown key {unknown!r}{_suggest(unknown, known)}", field=field or unknown)
    if not path:
        return RequirementError('a requirement must be a JSON object, e.g. {"min_cores": 64}')
    if kind == "required":
        missing = next(k for k in error.validator_value if k not in value)
        return RequirementError(f"{where}: {missing!r} is missing", field=field)
    if kind == "maxItems":
        return RequirementError(f"{where}: at most {error.validator_value} entries", field=field)
    if kind == "minItems":
        return RequirementError(f"{where}: a group needs at least one trait", field=field)
    if kind == "maximum":
        return RequirementError(f"{where}: must be at most {error.validator_value:,}", field=field)
    if shape in _NAME_OF:
        return RequirementError(f"{where}: {value!r} is not {_NAME_OF[shape]}", field=field)
    if shape in _MUST_BE:
        return RequirementError(f"{where}: must be {_MUST_BE[shape]}", field=field)
    return RequirementError(f"{where}: {error.message}", field=field)  # pragma: no cover - every leaf is named above


def _first_error(errors: Iterable[jsonschema.ValidationError]) -> jsonschema.ValidationError | None:
    """The error a person should fix first: in the schema's field order, outermost first."""

    def order(error: jsonschema.ValidationError):
        path = list(error.absolute_path)
        index = _FIELDS.index(path[0]) if path and path[0] in _FIELDS else -1
        return (index, len(path), [str(p) for p in path], error.validator)

    return min(errors, key=order, default=None)


# --------------------------------------------------------------------------- checks shared by every form


def _whole(value: Any, field: str, maximum: int, label: str | None = None) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    label = label or field
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequirementError(f"{label}: must be {_WHOLE}", field=field)
    if value > maximum:
        raise RequirementError(f"{label}: must be at most {maximum:,}", field=field)
    return value


def _names(value: Any, field: str, pattern: re.Pattern, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise RequirementError(f"{field}: must be a list of {what}s", field=field)
    names = tuple(value)
    if len(names) > MAX_LIST:
        raise RequirementError(f"{field}: at most {MAX_LIST} entries", field=field)
    for name in names:
        if not isinstance(name, str) or not pattern.fullmatch(name):
            hint = TRAIT_HINT if pattern is _TRAIT else "lowercase letters, digits, '.', '_' and '-'"
            raise RequirementError(f"{field}: {name!r} is not a {what} ({hint})", field=field)
    return names


def _disk_gb(value: Any) -> int | None:
    """``min_disk_tb`` in whole GB (the exact quantity behind the float)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_DISK_TB:
        raise RequirementError(f"min_disk_tb: must be a number of TB > 0 and ≤ {MAX_DISK_TB:,}", field="min_disk_tb")
    gb = round(value * 1000)
    if abs(value * 1000 - gb) > 1e-6 * max(1, gb) or gb < 1:
        raise RequirementError("min_disk_tb: at most 3 decimals (whole GB)", field="min_disk_tb")
    return gb


def _tb_text(gb: int) -> str:
    return str(gb // 1000) if gb % 1000 == 0 else f"{gb // 1000}.{gb % 1000:03d}".rstrip("0")


def _ram_text(gib: int, *, compact: bool) -> str:
    if gib >= 1024 and gib % 1024 == 0:
        return f"{gib // 1024}Ti" if compact else f"{gib // 1024} TiB"
    return f"{gib}Gi" if compact else f"{gib} GiB"


def _disk_size_text(gb: int, *, compact: bool) -> str:
    if gb < 1000:
        return f"{gb}G" if compact else f"{gb} GB"
    return f"{_tb_text(gb)}T" if compact else f"{_tb_text(gb)} TB"


def _one_of_text(names: tuple[str, ...]) -> str:
    return f"{', '.join(names[:-1])} or {names[-1]}"


# --------------------------------------------------------------------------- matching helpers


@dataclass(frozen=True)
class Clause:
    """One independent condition of a requirement: ``key`` is its compact term (e.g. ``cores>=64``,
    ``!fpga``; ``inspected`` for the hardware-inspected condition), ``label`` its words for people."""

    key: str
    label: str
    test: Callable[[Any], bool]


def _inspected(host) -> bool:
    return getattr(host, "hardware", True) is not None


def _host_traits(host) -> set[str]:
    return set(getattr(host, "traits", None) or ())


def _accelerator_count(host, kind: str) -> int:
    total = 0
    for entry in getattr(host, "accelerators", None) or ():
        if isinstance(entry, Mapping) and entry.get("type") == kind:
            count = entry.get("count", 1)
            total += count if isinstance(count, int) and not isinstance(count, bool) else 0
    return total


def _disk_bytes(disk: Mapping) -> int:
    size = disk.get("size_bytes", disk.get("sizeBytes", 0))
    return size if isinstance(size, int) and not isinstance(size, bool) else 0


def _disks(host, disk_type: str | None) -> list[Mapping]:
    disks = [d for d in getattr(host, "disks", None) or () if isinstance(d, Mapping)]
    return disks if disk_type is None else [d for d in disks if d.get("type") == disk_type]


def _at_least(value: Any, minimum: int) -> bool:
    return isinstance(value, int | float) and value >= minimum


# --------------------------------------------------------------------------- the value


@dataclass(frozen=True)
class Requirement:
    """What a host must have. Construct with keywords (lists are fine: the value is made canonical
    and checked on construction, raising :class:`RequirementError`)."""

    traits: tuple[str, ...] = ()
    forbidden: tuple[str, ...] = ()
    any_of: tuple[tuple[str, ...], ...] = ()
    min_cores: int | None = None
    min_ram_gib: int | None = None
    accelerators: tuple[tuple[str, int], ...] = ()
    min_disk_tb: float | None = None
    disk_type: str | None = None
    min_nic_gbps: int | None = None
    arch: str | None = None

    ANY: ClassVar[Requirement]

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        # 1. Traits: names checked, each list sorted and de-duplicated.
        traits = set(_names(self.traits, "traits", _TRAIT, "trait name"))
        forbidden = set(_names(self.forbidden, "forbidden", _TRAIT, "trait name"))
        if isinstance(self.any_of, str) or not isinstance(self.any_of, Iterable):
            raise RequirementError("any_of: must be a list of groups (lists) of trait names", field="any_of")
        raw_groups = list(self.any_of)
        if len(raw_groups) > MAX_LIST:
            raise RequirementError(f"any_of: at most {MAX_LIST} entries", field="any_of")
        groups: set[tuple[str, ...]] = set()
        for raw in raw_groups:
            group = tuple(sorted(set(_names(raw, "any_of", _TRAIT, "trait name"))))
            if not group:
                raise RequirementError("any_of: a group needs at least one trait", field="any_of")
            if len(group) == 1:
                traits.add(group[0])  # one alternative: simply required
            else:
                groups.add(group)
        clash = sorted(traits & forbidden)
        if clash:
            raise RequirementError(f"a trait cannot be both required and forbidden: {clash[0]}", field="forbidden")
        for group in groups:
            clash = sorted(forbidden.intersection(group))
            if clash:
                raise RequirementError(
                    f"a trait cannot be both forbidden and one of a group: {clash[0]}", field="forbidden"
                )
        put("traits", tuple(sorted(traits)))
        put("forbidden", tuple(sorted(forbidden)))
        # A group with a required trait is always met.
        put("any_of", tuple(sorted(g for g in groups if traits.isdisjoint(g))))

        # 2. Minimums.
        put("min_cores", _whole(self.min_cores, "min_cores", MAX_CORES))
        put("min_ram_gib", _whole(self.min_ram_gib, "min_ram_gib", MAX_RAM_GIB))
        put("min_nic_gbps", _whole(self.min_nic_gbps, "min_nic_gbps", MAX_NIC_GBPS))
        accelerators: dict[str, int] = {}
        if isinstance(self.accelerators, str | Mapping) or not isinstance(self.accelerators, Iterable):
            raise RequirementError("accelerators: must be a list of (type, count) pairs", field="accelerators")
        for entry in self.accelerators:
            if isinstance(entry, str) or not isinstance(entry, Iterable) or len(entry := tuple(entry)) != 2:
                raise RequirementError("accelerators: must be a list of (type, count) pairs", field="accelerators")
            kind, count = entry
            if not isinstance(kind, str) or not _ACCELERATOR_TYPE.fullmatch(kind):
                raise RequirementError(
                    f"accelerators: {kind!r} is not an accelerator type "
                    "(lowercase letters, digits, '.', '_' and '-', e.g. nvidia-a100)",
                    field="accelerators",
                )
            if kind in accelerators:
                raise RequirementError(f"accelerators: {kind} is listed twice", field="accelerators")
            accelerators[kind] = _whole(count, "accelerators", MAX_ACCELERATORS, f"accelerators: the count of {kind}")
        if len(accelerators) > MAX_LIST:
            raise RequirementError(f"accelerators: at most {MAX_LIST} entries", field="accelerators")
        put("accelerators", tuple(sorted(accelerators.items())))
        gb = _disk_gb(self.min_disk_tb)
        put("min_disk_tb", None if gb is None else round(gb / 1000, 3))
        if self.disk_type is not None and self.disk_type not in DISK_TYPES:
            raise RequirementError(
                f"disk_type: {self.disk_type!r} is not a disk type (HDD, SSD or NVME)", field="disk_type"
            )
        if self.arch is not None and (not isinstance(self.arch, str) or not _ARCH.fullmatch(self.arch)):
            raise RequirementError(
                f"arch: {self.arch!r} is not an architecture name (lowercase, e.g. x86_64 or aarch64)", field="arch"
            )

        # 3. Every valid requirement has a compact form that parses back.
        if len(self.to_compact()) > MAX_TEXT_LENGTH:
            raise RequirementError(f"the requirement is longer than {MAX_TEXT_LENGTH:,} characters as text")

    # ------------------------------------------------------------------ properties

    @property
    def is_any(self) -> bool:
        return self == Requirement.ANY

    @property
    def _disk_size_gb(self) -> int | None:
        return None if self.min_disk_tb is None else round(self.min_disk_tb * 1000)

    # ------------------------------------------------------------------ JSON

    def to_json(self) -> dict[str, Any]:
        """The set keys only, in the schema's order."""
        data: dict[str, Any] = {}
        if self.traits:
            data["traits"] = list(self.traits)
        if self.forbidden:
            data["forbidden"] = list(self.forbidden)
        if self.any_of:
            data["any_of"] = [list(group) for group in self.any_of]
        for name in ("min_cores", "min_ram_gib"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        if self.accelerators:
            data["accelerators"] = [{"type": kind, "count": count} for kind, count in self.accelerators]
        if self.min_disk_tb is not None:
            data["min_disk_tb"] = int(self.min_disk_tb) if self.min_disk_tb.is_integer() else self.min_disk_tb
        for name in ("disk_type", "min_nic_gbps", "arch"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return data

    def merge(self, other: Requirement) -> Requirement:
        """Both requirements at once (a node pool's own on top of its quota class's): traits and
        groups together, the higher of each minimum. Raises :class:`RequirementError` when they
        contradict each other (a trait required by one and forbidden by the other, two disk types
        or architectures)."""

        def higher(a, b):
            return b if a is None else a if b is None else max(a, b)

        for name, label in (("disk_type", "disk type"), ("arch", "architecture")):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine is not None and theirs is not None and mine != theirs:
                raise RequirementError(f"{name}: asks for {label} {theirs} but the class needs {mine}", field=name)
        accelerators = dict(self.accelerators)
        for kind, count in other.accelerators:
            accelerators[kind] = max(count, accelerators.get(kind, 0))
        return Requirement(
            traits=self.traits + other.traits,
            forbidden=self.forbidden + other.forbidden,
            any_of=self.any_of + other.any_of,
            min_cores=higher(self.min_cores, other.min_cores),
            min_ram_gib=higher(self.min_ram_gib, other.min_ram_gib),
            accelerators=tuple(accelerators.items()),
            min_disk_tb=higher(self.min_disk_tb, other.min_disk_tb),
            disk_type=self.disk_type or other.disk_type,
            min_nic_gbps=higher(self.min_nic_gbps, other.min_nic_gbps),
            arch=self.arch or other.arch,
        )

    @classmethod
    def from_json(cls, data: Any) -> Requirement:
        """Check ``data`` against :data:`REQUIREMENT_SCHEMA`, then for meaning; raises :class:`RequirementError`."""
        error = _first_error(_VALIDATOR.iter_errors(data))
        if error is not None:
            raise _schema_error(error)
        return cls(
            traits=tuple(data.get("traits") or ()),
            forbidden=tuple(data.get("forbidden") or ()),
            any_of=tuple(tuple(group) for group in data.get("any_of") or ()),
            min_cores=data.get("min_cores"),
            min_ram_gib=data.get("min_ram_gib"),
            accelerators=tuple((a["type"], a["count"]) for a in data.get("accelerators") or ()),
            min_disk_tb=data.get("min_disk_tb"),
            disk_type=data.get("disk_type"),
            min_nic_gbps=data.get("min_nic_gbps"),
            arch=data.get("arch"),
        )

    # ------------------------------------------------------------------ compact text

    @classmethod
    def parse(cls, text: str | None) -> Requirement:
        """The compact text (module docstring) → a Requirement; raises :class:`RequirementError`."""
        return _CompactParser(text if text is not None else "").parse()

    def to_compact(self) -> str:
        return ",".join(self._terms())

    def _terms(self) -> list[str]:
        terms = []
        if self.min_cores is not None:
            terms.append(f"cores>={self.min_cores}")
        if self.min_ram_gib is not None:
            terms.append(f"ram>={_ram_text(self.min_ram_gib, compact=True)}")
        for kind, count in self.accelerators:
            terms.append(f"gpu:{kind}" if count == 1 else f"gpu:{kind}>={count}")
        gb = self._disk_size_gb
        if self.disk_type is not None or gb is not None:
            key = "disk" if self.disk_type is None else f"disk:{self.disk_type.lower()}"
            terms.append(key if gb is None else f"{key}>={_disk_size_text(gb, compact=True)}")
        if self.min_nic_gbps is not None:
            terms.append(f"nic>={self.min_nic_gbps}")
        if self.arch is not None:
            terms.append(f"arch={self.arch}")
        terms.extend(self.traits)
        terms.extend("|".join(group) for group in self.any_of)
        terms.extend(f"!{name}" for name in self.forbidden)
        return terms

    # ------------------------------------------------------------------ for people

    def describe(self) -> str:
        """E.g. "≥ 64 cores, ≥ 512 GiB RAM, 4× nvidia-a100, no fpga"; "any host" for ANY."""
        parts = [clause.label for clause in self._minimum_clauses()]
        if self.arch is not None:
            parts.append(self.arch)
        parts.extend(self.traits)
        parts.extend(_one_of_text(group) for group in self.any_of)
        parts.extend(f"no {name}" for name in self.forbidden)
        return ", ".join(parts) or "any host"

    def __str__(self) -> str:
        return self.describe()

    # ------------------------------------------------------------------ matching

    def _minimum_clauses(self) -> list[Clause]:
        clauses = []
        if (cores := self.min_cores) is not None:
            clauses.append(
                Clause(
                    f"cores>={cores}",
                    f"≥ {cores} core{'s' if cores != 1 else ''}",
                    lambda h: _at_least(getattr(h, "cpu_count", None), cores),
                )
            )
        if (gib := self.min_ram_gib) is not None:
            clauses.append(
                Clause(
                    f"ram>={_ram_text(gib, compact=True)}",
                    f"≥ {_ram_text(gib, compact=False)} RAM",
                    lambda h: _at_least(getattr(h, "ram_mib", None), gib * 1024),
                )
            )
        for kind, count in self.accelerators:
            clauses.append(
                Clause(
                    f"gpu:{kind}" if count == 1 else f"gpu:{kind}>={count}",
                    f"{count}× {kind}",
                    lambda h, kind=kind, count=count: _accelerator_count(h, kind) >= count,
                )
            )
        gb, disk_type = self._disk_size_gb, self.disk_type
        if gb is not None or disk_type is not None:
            key = "disk" if disk_type is None else f"disk:{disk_type.lower()}"
            kind_label = f"{DISK_LABELS[disk_type]} disk" if disk_type else "disk"
            if gb is None:
                clauses.append(Clause(key, f"an {kind_label}", lambda h: bool(_disks(h, disk_type))))
            else:
                clauses.append(
                    Clause(
                        f"{key}>={_disk_size_text(gb, compact=True)}",
                        f"≥ {_disk_size_text(gb, compact=False)} {kind_label}",
                        lambda h: sum(_disk_bytes(d) for d in _disks(h, disk_type)) >= gb * 10**9,
                    )
                )
        if (gbps := self.min_nic_gbps) is not None:
            clauses.append(
                Clause(
                    f"nic>={gbps}",
                    f"≥ {gbps} Gbit/s NIC",
                    lambda h: _at_least(getattr(h, "nic_max_speed_gbps", None), gbps),
                )
            )
        return clauses

    def clauses(self) -> list[Clause]:
        """Independent conditions, each with a label; ``matches(h) == all(c.test(h) for c in clauses())``."""
        if self.is_any:
            return []
        clauses = [Clause("inspected", "hardware inspected", _inspected), *self._minimum_clauses()]
        if (arch := self.arch) is not None:
            clauses.append(
                Clause(
                    f"arch={arch}",
                    f"architecture {arch}",
                    lambda h: str(getattr(h, "architecture", "") or "").lower() == arch,
                )
            )
        for name in self.traits:
            clauses.append(Clause(name, f"trait {name}", lambda h, name=name: name in _host_traits(h)))
        for group in self.any_of:
            clauses.append(
                Clause(
                    "|".join(group),
                    f"one of {', '.join(group)}",
                    lambda h, group=group: not _host_traits(h).isdisjoint(group),
                )
            )
        for name in self.forbidden:
            clauses.append(Clause(f"!{name}", f"not {name}", lambda h, name=name: name not in _host_traits(h)))
        return clauses

    def matches(self, host) -> bool:
        """Whether ``host`` (a Host, or anything with its attributes) meets every clause."""
        return all(clause.test(host) for clause in self.clauses())

    def to_q(self) -> Q:
        """A prefilter on Host columns that never excludes a matching host; finish with :meth:`matches`."""
        if self.is_any:
            return Q()
        q = Q(hardware__isnull=False)
        if self.traits:
            q &= Q(traits__contains=list(self.traits))
        if self.forbidden:
            q &= ~Q(traits__overlap=list(self.forbidden))
        for group in self.any_of:
            q &= Q(traits__overlap=list(group))
        if self.min_cores is not None:
            q &= Q(cpu_count__gte=self.min_cores)
        if self.min_ram_gib is not None:
            q &= Q(ram_mib__gte=self.min_ram_gib * 1024)
        for kind, _count in self.accelerators:
            q &= Q(accelerators__contains=[{"type": kind}])
        if self.disk_type is not None:
            q &= Q(disks__contains=[{"type": self.disk_type}])
        if self.min_nic_gbps is not None:
            q &= Q(nic_max_speed_gbps__gte=self.min_nic_gbps)
        if self.arch is not None:
            q &= Q(architecture__iexact=self.arch)
        return q


Requirement.ANY = Requirement()


# --------------------------------------------------------------------------- the compact parser

KEYS = ("cores", "ram", "gpu", "accel", "disk", "nic", "arch")
# Words people reach for that difflib would not connect to a key.
_SYNONYMS = {
    "cpu": "cores",
    "cpus": "cores",
    "threads": "cores",
    "memory": "ram",
    "mem": "ram",
    "gpus": "gpu",
    "accelerator": "accel",
    "accelerators": "accel",
    "storage": "disk",
    "disks": "disk",
    "net": "nic",
    "network": "nic",
    "architecture": "arch",
}
_EXAMPLES = {
    "cores": "cores>=64",
    "ram": "ram>=512Gi",
    "gpu": "gpu:nvidia-a100>=4",
    "accel": "accel:nvidia-a100>=4",
    "disk": "disk>=2T",
    "nic": "nic>=25",
    "arch": "arch=aarch64",
}
_KEY_FIELDS = {"cores": "min_cores", "ram": "min_ram_gib", "disk": "min_disk_tb", "nic": "min_nic_gbps", "arch": "arch"}
_OPERATOR = re.compile(r"\s*(>=|<=|==|!=|=>|=<|>|<|=)\s*")
_NUMBER = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z/]*)")
_KEY_CHARS = re.compile(r"[<>=!:]")


class _CompactParser:
    def __init__(self, text: str):
        self.text = text
        self.fields: dict[str, Any] = {}
        self.seen: dict[str, int] = {}  # key term → where it was first given
        self.traits: dict[str, int] = {}
        self.forbidden: dict[str, int] = {}
        self.groups: list[tuple[tuple[str, ...], int]] = []
        self.accelerators: dict[str, int] = {}

    def error(self, message: str, position: int, field: str | None = None) -> RequirementError:
        return RequirementError(message, field=field, position=position, text=self.text)

    def parse(self) -> Requirement:
        text = self.text
        if not isinstance(text, str):
            raise RequirementError("a requirement must be text, e.g. cores>=64,ram>=512Gi")
        if len(text) > MAX_TEXT_LENGTH:
            raise self.error(f"the requirement is longer than {MAX_TEXT_LENGTH:,} characters", MAX_TEXT_LENGTH)
        if not text.strip():
            return Requirement.ANY
        offset = 0
        for raw in text.split(","):
            start = offset + len(raw) - len(raw.lstrip())
            offset += len(raw) + 1
            term = raw.strip()
            if not term:
                raise self.error("an empty term: remove the extra comma", start)
            self.term(term, start)
        self.check_clashes()
        try:
            return Requirement(
                traits=tuple(self.traits),
                forbidden=tuple(self.forbidden),
                any_of=tuple(group for group, _ in self.groups),
                accelerators=tuple(self.accelerators.items()),
                **self.fields,
            )
        except RequirementError as exc:  # limits that only the whole can break (length)
            raise self.error(exc.message, 0, exc.field) from exc

    # -- traits

    def trait(self, name: str, start: int, field: str, *, forbidden: bool = False) -> str:
        if _TRAIT.fullmatch(name):
            return name
        if forbidden and _KEY_CHARS.search(name):
            raise self.error("only traits can be forbidden, e.g. !fpga; minimums cannot be negated", start, field)
        # "cores 64": a key whose operator is missing, not a strange trait.
        head = re.match(r"([A-Za-z]+)\s*[0-9]", name)
        if head and head.group(1).lower() in KEYS and not forbidden:
            key = head.group(1).lower()
            raise self.error(f"{key} needs a value: {_EXAMPLES[key]}", start, field)
        raise self.error(f"{name!r} is not a trait name ({TRAIT_HINT})", start, field)

    def check_clashes(self) -> None:
        for name, where in self.forbidden.items():
            if name in self.traits:
                where = max(where, self.traits[name])
                raise self.error(f"a trait cannot be both required and forbidden: {name}", where, "forbidden")
            for group, group_at in self.groups:
                if name in group:
                    where = max(where, group_at)
                    raise self.error(f"a trait cannot be both forbidden and one of a group: {name}", where, "forbidden")

    # -- terms

    def term(self, term: str, start: int) -> None:
        if term.startswith("!"):
            if "|" in term:
                raise self.error("'!' forbids one trait: write !a,!b", start, "forbidden")
            name = self.trait(term[1:].strip(), start, "forbidden", forbidden=True)
            self.forbidden.setdefault(name, start)
            return
        if "|" in term:
            names = []
            for part in term.split("|"):
                part = part.strip()
                if not part:
                    raise self.error("an empty alternative in a one-of group", start, "any_of")
                if part.startswith("!"):
                    raise self.error("a one-of group cannot forbid a trait: write !a as its own term", start, "any_of")
                names.append(self.trait(part, start, "any_of"))
            self.groups.append((tuple(names), start))
            return
        if not _KEY_CHARS.search(term):
            self.traits.setdefault(self.trait(term, start, "traits"), start)
            return
        self.key_term(term, start)

    def key_term(self, term: str, start: int) -> None:
        match = _KEY_CHARS.search(term)
        key, rest = term[: match.start()].strip().lower(), term[match.start() :]
        if not key:
            raise self.error(f"a key is missing before {rest[0]!r}, e.g. cores>=64", start)
        if key not in KEYS:
            raise self.error(f"unknown key {key!r}{_suggest(key, KEYS, _SYNONYMS)}", start)
        arg = None
        if rest.startswith(":"):
            op_at = re.search(r"[<>=!]", rest)
            arg = (rest[1 : op_at.start()] if op_at else rest[1:]).strip()
            rest = rest[op_at.start() :] if op_at else ""
        op_match = _OPERATOR.match(rest) if rest else None
        if rest and not op_match:
            raise self.error(f"unexpected {rest.strip()!r}: {_EXAMPLES.get(key, 'cores>=64')}", start)
        op = op_match.group(1) if op_match else None
        value = rest[op_match.end() :].strip() if op_match else ""
        if key == "arch":
            self.arch(arg, op, value, start)
            return
        if key in ("gpu", "accel"):
            self.accelerator(key, arg, op, value, start)
            return
        if key == "disk":
            self.disk(arg, op, value, start)
            return
        if arg is not None:
            raise self.error(f"{key} takes no ':' part, e.g. {_EXAMPLES[key]}", start)
        if op is None:
            raise self.error(f"{key} needs a minimum, e.g. {_EXAMPLES[key]}", start)
        self.only_minimums(key, op, value, start)
        self.once(key, start)
        if key == "cores":
            number = self.number(key, value, start, units={"": 1})
            self.fields["min_cores"] = self.whole(key, number, start, MAX_CORES, "min_cores")
        elif key == "ram":
            number = self.number(key, value, start, units={"": 1, "gi": 1, "gib": 1, "ti": 1024, "tib": 1024})
            self.fields["min_ram_gib"] = self.whole(
                key, number, start, MAX_RAM_GIB, "min_ram_gib", unit=" of GiB", largest=f"{MAX_RAM_GIB // 1024:,}Ti"
            )
        else:  # nic
            number = self.number(key, value, start, units={"": 1, "g": 1})
            self.fields["min_nic_gbps"] = self.whole(key, number, start, MAX_NIC_GBPS, "min_nic_gbps")

    def once(self, key: str, start: int) -> None:
        if key in self.seen:
            field = _KEY_FIELDS.get(key, "accelerators")
            raise self.error(f"{key} is given twice (first at character {self.seen[key] + 1})", start, field)
        self.seen[key] = start

    def only_minimums(self, key: str, op: str, value: str, start: int) -> None:
        if op != ">=":
            shown = value or "…"
            raise self.error(f"only minimums: use {key}>={shown}", start, _KEY_FIELDS.get(key, "accelerators"))

    def number(self, key: str, value: str, start: int, *, units: dict[str, int]) -> Decimal:
        if not value:
            raise self.error(f"{key}: a number is missing after >=", start, _KEY_FIELDS.get(key))
        match = _NUMBER.fullmatch(value)
        if not match:
            raise self.error(f"{key}: {value!r} is not a number, e.g. {_EXAMPLES[key]}", start, _KEY_FIELDS.get(key))
        digits, unit = match.group(1), match.group(2).lower()
        if unit not in units:
            raise self.error(self.unit_message(key, digits, unit, match.group(2)), start, _KEY_FIELDS.get(key))
        try:
            return Decimal(digits) * units[unit]
        except InvalidOperation as exc:  # pragma: no cover - the regex admits only plain decimals
            raise self.error(f"{key}: {value!r} is not a number", start) from exc

    def unit_message(self, key: str, digits: str, unit: str, shown: str) -> str:
        if key == "ram":
            better = {"g": "Gi", "gb": "Gi", "t": "Ti", "tb": "Ti"}.get(unit)
            hint = f"; did you mean 'ram>={digits}{better}'?" if better else ""
            return f"ram: unknown unit {shown!r}: RAM is in binary units Gi or Ti, e.g. ram>=512Gi{hint}"
        if key == "disk":
            better = {"gi": "G", "gib": "G", "ti": "T", "tib": "T"}.get(unit)
            hint = f"; did you mean 'disk>={digits}{better}'?" if better else ""
            return f"disk: unknown unit {shown!r}: disk sizes are decimal, G or T, e.g. disk>=2T{hint}"
        if key == "nic":
            return f"nic: unknown unit {shown!r}: NIC speed is in Gbit/s, e.g. nic>=25 or nic>=25G"
        return f"{key}: a plain number without a unit, e.g. {_EXAMPLES[key]}"

    def whole(
        self, key: str, number: Decimal, start: int, maximum: int, field: str, unit: str = "", largest: str = ""
    ) -> int:
        if number != number.to_integral_value() or number < 1:
            raise self.error(f"{key}: must be a whole number{unit} ≥ 1", start, field)
        if number > maximum:
            raise self.error(f"{key}: must be at most {largest or f'{maximum:,}'}", start, field)
        return int(number)

    def arch(self, arg: str | None, op: str | None, value: str, start: int) -> None:
        if arg is not None or op not in ("=", "=="):
            raise self.error("arch takes '=': arch=aarch64", start, "arch")
        if not _ARCH.fullmatch(value):
            raise self.error(
                f"arch: {value!r} is not an architecture name (lowercase, e.g. x86_64 or aarch64)", start, "arch"
            )
        self.once("arch", start)
        self.fields["arch"] = value

    def accelerator(self, key: str, arg: str | None, op: str | None, value: str, start: int) -> None:
        if not arg:
            raise self.error(f"{key} needs an accelerator type, e.g. {_EXAMPLES[key]}", start, "accelerators")
        if not _ACCELERATOR_TYPE.fullmatch(arg):
            raise self.error(
                f"{arg!r} is not an accelerator type (lowercase letters, digits, '.', '_' and '-', e.g. nvidia-a100)",
                start,
                "accelerators",
            )
        if op is not None:
            self.only_minimums(f"{key}:{arg}", op, value, start)
            number = self.number(key, value, start, units={"": 1})
            count = self.whole(f"{key}:{arg}", number, start, MAX_ACCELERATORS, "accelerators")
        else:
            count = 1
        self.once(f"gpu:{arg}", start)
        self.accelerators[arg] = count

    def disk(self, arg: str | None, op: str | None, value: str, start: int) -> None:
        disk_type = None
        key = "disk"
        if arg is not None:
            disk_type = arg.upper()
            if disk_type not in DISK_TYPES:
                known = [t.lower() for t in DISK_TYPES]
                raise self.error(f"unknown disk type {arg!r}{_suggest(arg.lower(), known)}", start, "disk_type")
            key = f"disk:{arg.lower()}"
        if op is None:
            if disk_type is None:
                raise self.error("disk needs a minimum or a type, e.g. disk>=2T or disk:nvme", start, "min_disk_tb")
        else:
            if op != ">=":
                raise self.error(f"only minimums: use {key}>={value or '…'}", start, "min_disk_tb")
            number = self.number("disk", value, start, units={"": 1000, "t": 1000, "tb": 1000, "g": 1, "gb": 1})
            gb = self.whole(
                "disk", number, start, MAX_DISK_TB * 1000, "min_disk_tb", unit=" of GB", largest=f"{MAX_DISK_TB:,}T"
            )
            self.fields["min_disk_tb"] = gb / 1000
        self.once("disk", start)
        self.fields["disk_type"] = disk_type
