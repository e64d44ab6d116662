"""Bulk import of hosts from CSV or YAML: every line checked, every error reported with its line.

Nothing is half-imported: :func:`parse_inventory` returns either rows (all valid) or errors
(all of them, not just the first); the enrolment service imports the rows in one transaction.

CSV: a header row, then one host per line. YAML: a list of mappings (or ``{hosts: [...]}``).
Columns / keys::

    name, bmc_address, bmc_username, bmc_password, boot_mac      required
    <one per topology level, e.g. site, room, row, rack>          optional, a path from the top
    key_erase (true/false), notes, root_device_name               optional

Passwords are carried to the enrolment service and never echoed in errors.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import yaml

from hosts.topology import TopologyError, validate_location
from teapot_portal.gateway.builders import BuildError, validate_bmc_address, validate_host_name, validate_mac

REQUIRED = ("name", "bmc_address", "bmc_username", "bmc_password", "boot_mac")
OPTIONAL = ("key_erase", "notes", "root_device_name")
MAX_ROWS = 5000
MAX_BYTES = 5 * 1024 * 1024
_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"", "0", "false", "no", "n", "off"}


@dataclass(frozen=True)
class ImportRow:
    line: int
    name: str
    bmc_address: str
    bmc_username: str
    bmc_password: str = field(repr=False)
    boot_mac: str
    location: dict[str, str]
    key_erase: bool = False
    notes: str = ""
    root_device_name: str = ""


@dataclass(frozen=True)
class ImportProblem:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "file"
        return f"{where}: {self.field + ': ' if self.field else ''}{self.message}"


@dataclass
class ImportResult:
    rows: list[ImportRow]
    errors: list[ImportProblem]

    @property
    def ok(self) -> bool:
        return not self.errors


def _records_csv(text: str) -> list[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        return []
    reader.fieldnames = [name.strip().lower() for name in reader.fieldnames]
    records = []
    for record in reader:
        if None in record:  # more cells than headers
            record["__extra__"] = record.pop(None)
        records.append((reader.line_num, record))
    return records


def _records_yaml(text: str) -> list[tuple[int, dict]]:
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is None:
        return []
    if isinstance(root, yaml.MappingNode):
        hosts = [value for key, value in root.value if getattr(key, "value", None) == "hosts"]
        if not hosts:
            raise ValueError("a YAML inventory is a list of hosts, or a mapping with a 'hosts' list")
        root = hosts[0]
    if not isinstance(root, yaml.SequenceNode):
        raise ValueError("a YAML inventory is a list of hosts, or a mapping with a 'hosts' list")
    data = yaml.safe_load(text)
    items = data["hosts"] if isinstance(data, dict) else data
    return [(node.start_mark.line + 1, item) for node, item in zip(root.value, items, strict=True)]


def check_record(
    line: int, record: Mapping[str, str], levels: Sequence[str], *, location: Mapping[str, str] | None = None
) -> tuple[ImportRow | None, list[ImportProblem]]:
    """One host's values, checked the one way every enrolment path checks them.

    ``record`` holds the columns as text; the location comes from its level columns, or from
    ``location`` when the caller has it as a mapping already (forms, the API).
    """
    problems: list[ImportProblem] = []
    for required in REQUIRED:
        if not record.get(required):
            problems.append(ImportProblem(line, required, "required"))
    cleaned: dict[str, str] = {}
    for name, check in (
        ("name", validate_host_name),
        ("bmc_address", validate_bmc_address),
        ("boot_mac", validate_mac),
    ):
        if record.get(name):
            try:
                cleaned[name] = check(record[name])
            except BuildError as exc:
                problems.append(ImportProblem(line, name, str(exc)))
    key_erase = str(record.get("key_erase", "")).lower()
    if key_erase not in _TRUE | _FALSE:
        problems.append(ImportProblem(line, "key_erase", "true or false"))
    if location is None:
        location = {lvl: record.get(lvl, "") for lvl in levels}
    try:
        clean_location = validate_location(location, levels)
    except TopologyError as exc:
        problems.append(ImportProblem(line, "location", str(exc)))
    if problems:
        return None, problems
    row = ImportRow(
        line=line,
        name=cleaned["name"],
        bmc_address=cleaned["bmc_address"],
        bmc_username=record["bmc_username"],
        bmc_password=record["bmc_password"],
        boot_mac=cleaned["boot_mac"],
        location=clean_location,
        key_erase=key_erase in _TRUE,
        notes=record.get("notes", ""),
        root_device_name=record.get("root_device_name", ""),
    )
    return row, []


def _valid_keys(record: Mapping[str, str]) -> dict[str, str]:
    """The name and MAC of a record that failed elsewhere, for the duplicate checks."""
    keys = {}
    for name, check in (("name", validate_host_name), ("boot_mac", validate_mac)):
        with contextlib.suppress(BuildError):
            keys[name] = check(record.get(name, ""))
    return keys


def parse_inventory(text: str, fmt: str, *, levels: Sequence[str]) -> ImportResult:
    """Check every record; return all rows or all errors (with their lines)."""
    if len(text.encode()) > MAX_BYTES:
        return ImportResult([], [ImportProblem(0, "", f"the file is larger than {MAX_BYTES // 1024 // 1024} MiB")])
    try:
        records = _records_csv(text) if fmt == "csv" else _records_yaml(text) if fmt == "yaml" else None
    except (yaml.YAMLError, ValueError, csv.Error) as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", -1) + 1
        return ImportResult([], [ImportProblem(max(line, 0), "", f"cannot read the file: {exc}".split("\n")[0])])
    if records is None:
        raise ValueError(f"unknown format {fmt!r}: csv or yaml")
    if not records:
        return ImportResult([], [ImportProblem(0, "", "the file has no hosts")])
    if len(records) > MAX_ROWS:
        return ImportResult([], [ImportProblem(0, "", f"at most {MAX_ROWS} hosts per import")])

    rows: list[ImportRow] = []
    errors: list[ImportProblem] = []
    seen_names: dict[str, int] = {}
    seen_macs: dict[str, int] = {}
    allowed = {*REQUIRED, *OPTIONAL, *levels}
    for line, record in records:
        if not isinstance(record, Mapping):
            errors.append(ImportProblem(line, "", "each host is a mapping of column → value"))
            continue
        record = {str(k).strip().lower(): ("" if v is None else str(v).strip()) for k, v in record.items()}
        line_errors: list[ImportProblem] = []
        if "__extra__" in record:
            line_errors.append(ImportProblem(line, "", "more cells than columns in the header"))
            record.pop("__extra__")
        for unknown in sorted(set(record) - allowed):
            line_errors.append(ImportProblem(line, unknown, f"unknown column; known: {', '.join(sorted(allowed))}"))
        row, problems = check_record(line, record, levels)
        line_errors.extend(problems)
        cleaned = {"name": row.name, "boot_mac": row.boot_mac} if row else _valid_keys(record)
        if "name" in cleaned:
            if cleaned["name"] in seen_names:
                line_errors.append(ImportProblem(line, "name", f"duplicate of line {seen_names[cleaned['name']]}"))
            seen_names.setdefault(cleaned["name"], line)
        if "boot_mac" in cleaned:
            if cleaned["boot_mac"] in seen_macs:
                line_errors.append(
                    ImportProblem(line, "boot_mac", f"duplicate of line {seen_macs[cleaned['boot_mac']]}")
                )
            seen_macs.setdefault(cleaned["boot_mac"], line)
        if line_errors:
            errors.extend(line_errors)
            continue
        rows.append(row)
    return ImportResult([] if errors else rows, errors)
