"""Writes for the hardware inventory: the sync of the Host mirror from the BareMetalHosts.

The sync is level-triggered: it compares what the management cluster says now with the
mirror and writes only the difference, so running it twice changes nothing. Two ways in:

* :func:`hosts_resync` — the periodic full list (Celery beat, ``teapot.hosts.resync``): a
  complete picture, so active hosts missing from it are retired;
* :func:`hosts_follow` — list-then-watch (``teapot.hosts.follow``): applies each watch event
  as it arrives and stores the last resourceVersion (:class:`~hosts.models.SyncCursor`), so
  the next run resumes; a RELIST (first run, expired watch) is applied as a complete sync.

Both end in :func:`hosts_sync`, which is built for fleets of ten thousand hosts — a constant
number of queries whatever the fleet size:

1. Take the mirror's transaction-scoped advisory lock: writers (a resync and a follower)
   take turns instead of interleaving.
2. Load the existing hosts in one query, only the columns needed to compare (the
   ``fingerprint`` stands for the rest).
3. Per record: the same resourceVersion as stored → unchanged, nothing computed. An *older*
   resourceVersion than stored (a list taken before a watch event that was already applied)
   is stale and skipped. Otherwise normalise (:mod:`hosts.hardware`), fingerprint the state
   and the hardware separately, and plan: create / update everything / update the state only /
   just note the new resourceVersion. Every change of a tracked field becomes a
   :class:`~hosts.models.HostStateChange` row. A record that cannot be read is logged with
   the host's name and counted as failed; the others go on.
4. A complete sync retires active hosts it did not see (``retired_at``, a ``retired``
   change) — unless the host's stored resourceVersion is newer than the list, i.e. a watch saw
   it after the list was taken. A retired host that reappears is un-retired. Nothing is deleted.
5. Write in bulk (per :data:`BATCH` rows): one INSERT of new hosts, one UPDATE per kind of
   change, one UPDATE of ``last_synced_at`` for the unchanged, one INSERT of the state
   changes. Should the database refuse the bulk write (a value no check foresaw), it is
   redone host by host so only the offending host fails.

resourceVersions are opaque to Kubernetes clients in principle; every real API server (etcd)
and the lab hand out increasing integers, so they are compared only when both are integers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db import DatabaseError, connection, models, transaction
from django.db.models import Case, Q, Value, When
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from hosts import hardware as hw
from hosts.classify import CLASSIFIED_FIELDS, hosts_classify
from hosts.models import RETIRED, TRACKED_FIELDS, Host, HostStateChange, SyncCursor
from teapot_portal.gateway.base import Gateway, HostRecord, Invalid, WatchEvent

log = logging.getLogger(__name__)

# Bump when the mapping from a BareMetalHost to the columns changes: every host is then
# rewritten once by the next sync (the resourceVersion shortcut does not apply).
SYNC_VERSION = "3"
# Advisory locks of the inventory: (class, id) pairs, apart from the lab's single-key lock.
LOCK_CLASS = 0x7EA9
LOCK_MIRROR = 1  # transaction-scoped, held by every hosts_sync
# Rows per bulk statement: a full fleet change of 10,000 hosts is five statements, not one of
# ~30 MB. Below this size the number of queries does not depend on the fleet at all.
BATCH = 2000
FOLLOW_CURSOR = "hosts"
RESYNC_CURSOR = "hosts-resync"

MIRROR_FIELDS = (
    "uid",
    "labels",
    "bmc_address",
    "boot_mac",
    "architecture",
    "online",
    "powered_on",
    "automated_cleaning_mode",
    "root_device_hints",
    "image_url",
    "consumer",
    "provisioning_state",
    "operational_status",
    "error_type",
    "error_message",
    "error_count",
    "paused",
    "detached",
    "deleting",
)
HARDWARE_FIELDS = (
    "cpu_model",
    "cpu_count",
    "cpu_mhz",
    "cpu_flags",
    "ram_mib",
    "disk_count",
    "disk_total_bytes",
    "disks",
    "nic_max_speed_gbps",
    "nics",
    "system_vendor",
    "system_product",
    "system_serial",
    "firmware",
    "accelerator_count",
    "accelerators",
    "hardware",
    "hardware_warnings",
)
_BOOKKEEPING = ("resource_version", "fingerprint", "sync_error", "last_synced_at", "retired_at", "updated_at")
_WRITES = {
    "full": MIRROR_FIELDS + HARDWARE_FIELDS + _BOOKKEEPING,
    "state": MIRROR_FIELDS + _BOOKKEEPING,
    "touch": ("resource_version", "last_synced_at"),
    "retire": ("retired_at", "updated_at"),
}
_LOAD_FIELDS = (
    "id",
    "namespace",
    "name",
    "resource_version",
    "fingerprint",
    "sync_error",
    "retired_at",
    "key_erase_capable",
    *TRACKED_FIELDS,
    # What classification needs besides the hardware (which a full update brings): no reload.
    *CLASSIFIED_FIELDS,
)
_STATUS_FIELDS = {"provisioning_state", "operational_status", "error_type", "powered_on"}
_MAX_LENGTH = {
    f.name: f.max_length for f in Host._meta.concrete_fields if isinstance(f, models.CharField) and f.max_length
}
_SMALLINT_MAX, _INT_MAX = 32767, 2**31 - 1


@dataclass
class SyncResult:
    """What a sync did. ``failed`` hosts could not be read or written completely: their state is
    still mirrored where it could be, and ``Host.sync_error`` or the log says why."""

    created: int = 0
    updated: int = 0
    retired: int = 0
    unchanged: int = 0
    failed: int = 0
    resource_version: str = ""
    seconds: float = 0.0

    def __add__(self, other: SyncResult) -> SyncResult:
        return SyncResult(
            created=self.created + other.created,
            updated=self.updated + other.updated,
            retired=self.retired + other.retired,
            unchanged=self.unchanged + other.unchanged,
            failed=self.failed + other.failed,
            resource_version=other.resource_version or self.resource_version,
            seconds=self.seconds + other.seconds,
        )

    def as_dict(self) -> dict:
        return asdict(self)

    def as_log(self) -> dict:
        """For ``extra=``: LogRecord has attributes of its own (``created``), so the keys are prefixed."""
        return {f"sync_{key}": value for key, value in asdict(self).items()}


@dataclass
class _Op:
    """The plan for one host: which columns to write (``kind``) and the state changes to record."""

    host: Host
    kind: str  # create | full | state | touch | retire | seen
    outcome: str  # created | updated | retired | unchanged | failed
    changes: list[HostStateChange] = field(default_factory=list)
    key_erase: bool | None = None  # a new value from the teapot.io/key-erase annotation


# --------------------------------------------------------------------------- helpers


def _rv_int(resource_version: str) -> int | None:
    try:
        return int(resource_version)
    except (TypeError, ValueError):
        return None


def _newer(resource_version: str, than: str) -> bool:
    """``resource_version`` is known to be newer than ``than`` (both integers, and greater)."""
    a, b = _rv_int(resource_version), _rv_int(than)
    return a is not None and b is not None and a > b


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value or "")


def _clip(values: dict) -> dict:
    """Strings cut to their column's length: one odd value must not fail a bulk write."""
    for name, value in values.items():
        limit = _MAX_LENGTH.get(name)
        if limit and isinstance(value, str) and len(value) > limit:
            values[name] = value[:limit]
    return values


def _digest(values: dict) -> str:
    blob = json.dumps(values, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(blob.encode(), digest_size=12).hexdigest()


def _reported_at(record: HostRecord) -> datetime | None:
    stamp = ((record.raw or {}).get("status") or {}).get("lastUpdated")
    if not isinstance(stamp, str):
        return None
    try:
        return parse_datetime(stamp)
    except ValueError:
        return None


def _mirror_values(record: HostRecord) -> dict:
    return _clip(
        {
            "uid": record.uid,
            "labels": dict(record.labels),
            "bmc_address": record.bmc_address,
            "boot_mac": (record.boot_mac or "").lower(),
            "architecture": record.architecture,
            "online": bool(record.online),
            "powered_on": bool(record.powered_on),
            "automated_cleaning_mode": record.automated_cleaning_mode,
            "root_device_hints": dict(record.root_device_hints or {}),
            "image_url": record.image_url,
            "consumer": record.consumer,
            "provisioning_state": record.provisioning_state,
            "operational_status": record.operational_status,
            "error_type": record.error_type,
            "error_message": record.error_message,
            "error_count": min(max(int(record.error_count or 0), 0), _INT_MAX),
            "paused": record.paused,
            "detached": record.detached,
            "deleting": record.deleting,
        }
    )


def _hardware_values(record: HostRecord) -> tuple[dict, bool | None]:
    """The hardware columns and the key-erase annotation's value; raises on unreadable hardware."""
    found = hw.normalize(record.hardware, record.annotations)
    values = {
        "cpu_model": found.cpu_model,
        "cpu_count": found.cpu_count,
        "cpu_mhz": found.cpu_mhz,
        "cpu_flags": list(found.cpu_flags),
        "ram_mib": found.ram_mib,
        "disk_count": min(len(found.disks), _SMALLINT_MAX),
        "disk_total_bytes": found.disk_total_bytes,
        "disks": found.disks_json(),
        "nic_max_speed_gbps": found.nic_max_speed_gbps,
        "nics": found.nics_json(),
        "system_vendor": found.system_vendor,
        "system_product": found.system_product,
        "system_serial": found.system_serial,
        "firmware": found.firmware_json(),
        "accelerator_count": min(found.accelerator_count, _SMALLINT_MAX),
        "accelerators": found.accelerators_json(),
        "hardware": record.hardware,
        "hardware_warnings": list(found.warnings),
    }
    return _clip(values), found.key_erase


def _lock_mirror() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [LOCK_CLASS, LOCK_MIRROR])


def _load(keys: set[tuple[str, str]], complete: bool) -> dict[tuple[str, str], Host]:
    names = {name for _, name in keys}
    wanted = Q(name__in=names)
    if complete:
        wanted |= Q(retired_at__isnull=True)
    hosts = Host.objects.only(*_LOAD_FIELDS).filter(wanted).order_by()
    return {(h.namespace, h.name): h for h in hosts}


def _change(host: Host, name: str, old, new, now: datetime, reported_at: datetime | None) -> HostStateChange:
    return HostStateChange(
        host=host,
        field=name,
        old=_text(old)[:320],
        new=_text(new)[:320],
        at=now,
        reported_at=reported_at if name in _STATUS_FIELDS else None,
    )


# --------------------------------------------------------------------------- planning


def _plan(record: HostRecord, host: Host | None, vanished: bool, now: datetime) -> _Op | None:
    """What to write for one host (None: a stale record, nothing to do)."""
    if host is not None:
        if _newer(host.resource_version, record.resource_version):
            return None  # older than what the mirror already has
        if (
            not vanished
            and host.retired_at is None
            and record.resource_version
            and record.resource_version == host.resource_version
            and host.fingerprint.startswith(f"{SYNC_VERSION}:")
            and not host.sync_error
        ):
            return _Op(host, "seen", "unchanged")
    mirror = _mirror_values(record)
    sync_error, key_erase = "", None
    try:
        hardware, key_erase = _hardware_values(record)
    except Exception as exc:  # any surprise in one host's data stays that host's problem
        hardware = None
        sync_error = f"hardware not read: {exc}"[:2000]
        log.warning("host sync: %s/%s: %s", record.namespace, record.name, sync_error, extra={"host": record.name})
    fingerprint = f"{SYNC_VERSION}:{_digest(mirror)}:{_digest(hardware) if hardware is not None else 'error'}"
    reported_at = _reported_at(record)
    outcome_if_written = "failed" if sync_error else "updated"

    if host is None:
        host = Host(
            namespace=record.namespace[:253],
            name=record.name[:253],
            resource_version=record.resource_version[:64],
            fingerprint=fingerprint,
            sync_error=sync_error,
            first_seen_at=now,
            last_synced_at=now,
            retired_at=now if vanished else None,
            **mirror,
            **(hardware or {}),
        )
        if key_erase is not None:
            host.key_erase_capable = key_erase
        changes = [
            _change(host, name, Host._meta.get_field(name).get_default(), mirror[name], now, reported_at)
            for name in TRACKED_FIELDS
            if mirror[name] != Host._meta.get_field(name).get_default()
        ]
        if vanished:
            changes.append(_change(host, RETIRED, False, True, now, None))
        outcome = "failed" if sync_error else "retired" if vanished else "created"
        return _Op(host, "create", outcome, changes)

    changes = [
        _change(host, name, getattr(host, name), mirror[name], now, reported_at)
        for name in TRACKED_FIELDS
        if getattr(host, name) != mirror[name]
    ]
    retired_at = host.retired_at
    if vanished and retired_at is None:
        retired_at = now
        changes.append(_change(host, RETIRED, False, True, now, None))
    elif not vanished and retired_at is not None:
        retired_at = None
        changes.append(_change(host, RETIRED, True, False, now, None))
    old_version, old_mirror, old_hardware = ([*host.fingerprint.split(":"), "", ""])[:3]
    new_mirror, new_hardware = fingerprint.split(":")[1:]
    key_erase = key_erase if key_erase is not None and key_erase != host.key_erase_capable else None
    # Unreadable hardware: the last good columns stay, only the state is written.
    same_hardware = hardware is None or (old_version == SYNC_VERSION and new_hardware == old_hardware)
    same_state = (
        old_version == SYNC_VERSION
        and new_mirror == old_mirror
        and retired_at == host.retired_at
        and sync_error == host.sync_error
    )
    if same_state and same_hardware:
        kind = "touch" if record.resource_version != host.resource_version else "seen"
        outcome = "failed" if sync_error else "updated" if key_erase is not None else "unchanged"
    else:
        kind = "state" if same_hardware else "full"
        outcome = "retired" if vanished and retired_at == now else outcome_if_written
    # Only the planned columns are written; the loaded instance lacks the others (deferred).
    host.resource_version = record.resource_version[:64]
    host.last_synced_at = now
    if kind in ("state", "full"):
        for name, value in mirror.items():
            setattr(host, name, value)
        if kind == "full":
            for name, value in hardware.items():
                setattr(host, name, value)
        host.fingerprint = fingerprint if hardware is not None else f"{SYNC_VERSION}:{new_mirror}:{old_hardware}"
        host.sync_error = sync_error
        host.retired_at = retired_at
        host.updated_at = timezone.now()  # bookkeeping: real time, even when ``now`` is simulated
    return _Op(host, kind, outcome, changes, key_erase)


def _plan_retire(host: Host, now: datetime) -> _Op:
    host.retired_at = now
    host.updated_at = timezone.now()
    return _Op(host, "retire", "retired", [_change(host, RETIRED, False, True, now, None)])


# --------------------------------------------------------------------------- writing


def _json_value(field: models.Field, value):
    """A column value as JSON for ``jsonb_to_recordset`` (which casts it to the column's type)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _recordset(objs: Sequence[models.Model], fields: Sequence[models.Field]) -> tuple[str, str]:
    """(JSON rows, the AS v(…) column list) for ``jsonb_to_recordset``."""
    quote = connection.ops.quote_name
    rows = [{f.column: _json_value(f, getattr(obj, f.attname)) for f in fields} for obj in objs]
    columns = ", ".join(f"{quote(f.column)} {f.db_type(connection)}" for f in fields)
    return json.dumps(rows, separators=(",", ":"), default=str), columns


def _bulk_update(hosts: list[Host], fields: Sequence[str]) -> None:
    """``UPDATE … FROM jsonb_to_recordset(%s)``: one statement and ONE parameter per :data:`BATCH` hosts.

    Django's ``bulk_update`` writes a ``CASE WHEN id=… THEN …`` per column, which PostgreSQL
    evaluates row by row against every WHEN: quadratic, minutes for 10,000 hosts. A VALUES list
    is linear in PostgreSQL but costs seconds on the client (the driver splits a query of tens of
    thousands of placeholders in Python). The rows travel as one JSON document instead.
    """
    columns = [Host._meta.pk, *(Host._meta.get_field(name) for name in fields)]
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(c.column)} = v.{quote(c.column)}" for c in columns[1:])
    with connection.cursor() as cursor:
        for start in range(0, len(hosts), BATCH):
            data, spec = _recordset(hosts[start : start + BATCH], columns)
            cursor.execute(
                f"UPDATE {quote(Host._meta.db_table)} AS h SET {assignments} "  # noqa: S608 (identifiers from the model)
                f"FROM jsonb_to_recordset(%s::jsonb) AS v({spec}) WHERE h.id = v.id",
                [data],
            )


def _bulk_insert(objs: Sequence[models.Model], *, key: Sequence[str] = (), batch: int = BATCH) -> None:
    """``INSERT … SELECT FROM jsonb_to_recordset(%s)`` — bulk_create without the per-placeholder
    cost (see :func:`_bulk_update`). With ``key`` (unique fields), sets each object's pk."""
    if not objs:
        return
    model = type(objs[0])
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    now = timezone.now()
    for obj in objs:
        for f in fields:
            if getattr(f, "auto_now", False) or (getattr(f, "auto_now_add", False) and getattr(obj, f.attname) is None):
                setattr(obj, f.attname, now)
    quote = connection.ops.quote_name
    names = ", ".join(quote(f.column) for f in fields)
    returning = f" RETURNING id, {', '.join(quote(model._meta.get_field(k).column) for k in key)}" if key else ""
    with connection.cursor() as cursor:
        for start in range(0, len(objs), batch):
            rows = objs[start : start + batch]
            data, spec = _recordset(rows, fields)
            cursor.execute(
                f"INSERT INTO {quote(model._meta.db_table)} ({names}) "  # noqa: S608 (identifiers from the model)
                f"SELECT {names} FROM jsonb_to_recordset(%s::jsonb) AS v({spec}){returning}",
                [data],
            )
            if key:
                ids = {tuple(row[1:]): row[0] for row in cursor.fetchall()}
                for obj in rows:
                    obj.pk = ids[tuple(getattr(obj, k) for k in key)]
                    obj._state.adding, obj._state.db = False, connection.alias


def _write(ops: list[_Op], now: datetime) -> None:
    creates = [op.host for op in ops if op.kind == "create"]
    if creates:
        _bulk_insert(creates, key=("namespace", "name"))
    for kind, fields in _WRITES.items():
        hosts = [op.host for op in ops if op.kind == kind]
        if hosts:
            _bulk_update(hosts, fields)
    seen = [op.host.pk for op in ops if op.kind == "seen"]
    if seen:
        Host.objects.filter(pk__in=seen).update(last_synced_at=now)
    key_erase = {op.host.pk: op.key_erase for op in ops if op.key_erase is not None and op.kind != "create"}
    if key_erase:
        # Its own UPDATE: bulk_update would write back the value read a moment ago over an
        # operator's edit made in between.
        Host.objects.filter(pk__in=key_erase).update(
            key_erase_capable=Case(
                *(When(pk=pk, then=Value(value)) for pk, value in key_erase.items()),
                output_field=models.BooleanField(),
            )
        )
    changes = [change for op in ops for change in op.changes]
    if changes:
        for change in changes:
            change.host_id = change.host.pk  # hosts created above got their pk after the change was built
        _bulk_insert(changes, batch=BATCH * 4)  # small rows


def _write_each(ops: list[_Op], now: datetime) -> None:
    """The bulk write failed: write host by host, so only the offending hosts fail."""
    for op in ops:
        try:
            with transaction.atomic():
                _write([op], now)
        except DatabaseError as exc:
            log.error(
                "host sync: %s/%s not written: %s",
                op.host.namespace,
                op.host.name,
                exc,
                extra={"host": op.host.name},
            )
            op.outcome = "failed"


# --------------------------------------------------------------------------- services


def hosts_sync(
    *,
    records: Sequence[HostRecord],
    complete: bool = False,
    deleted: Sequence[HostRecord] = (),
    resource_version: str = "",
    now: datetime | None = None,
) -> SyncResult:
    """Bring the mirror in line with ``records`` (see the module docstring for the steps).

    ``complete``: ``records`` are all the hosts there are (a list or RELIST taken at
    ``resource_version``), so active hosts not among them are retired. ``deleted``: hosts the
    watch reported gone, retired with their last state. ``now``: the observation time recorded
    in the state changes (default: the current time).
    """
    started = time.monotonic()
    now = now or timezone.now()
    result = SyncResult(resource_version=resource_version)
    wanted: dict[tuple[str, str], tuple[HostRecord, bool]] = {}
    for record, vanished in [*((r, False) for r in records), *((r, True) for r in deleted)]:
        key = (record.namespace, record.name)
        previous = wanted.get(key)
        if previous is None or not _newer(previous[0].resource_version, record.resource_version):
            wanted[key] = (record, vanished)
    with transaction.atomic():
        _lock_mirror()
        existing = _load(set(wanted), complete)
        ops: list[_Op] = []
        for key, (record, vanished) in wanted.items():
            try:
                op = _plan(record, existing.get(key), vanished, now)
            except Exception:  # one host never stops the sync of the others
                log.exception("host sync: %s/%s failed", *key, extra={"host": key[1]})
                result.failed += 1
                continue
            if op is None:
                result.unchanged += 1
            else:
                ops.append(op)
        if complete:
            ops.extend(
                _plan_retire(host, now)
                for key, host in existing.items()
                if key not in wanted and host.retired_at is None and not _newer(host.resource_version, resource_version)
            )
        try:
            with transaction.atomic():
                _write(ops, now)
        except DatabaseError:
            log.warning("host sync: the bulk write failed; writing host by host", exc_info=True)
            _write_each(ops, now)
        # Hardware (or the key-erase fact) changed: traits and cost follow, in the same transaction.
        # In memory when the hardware was just written (no reload); by id when only the
        # key-erase annotation changed (those hosts were loaded without their hardware).
        written = [op for op in ops if op.outcome != "failed" and op.host.pk]
        for op in written:
            if op.key_erase is not None:
                op.host.key_erase_capable = op.key_erase
        in_memory = [op.host for op in written if op.kind in ("create", "full")]
        by_id = [op.host.pk for op in written if op.kind not in ("create", "full") and op.key_erase is not None]
        if in_memory:
            hosts_classify(hosts=in_memory)
        if by_id:
            hosts_classify(host_ids=by_id)
    for op in ops:
        setattr(result, op.outcome, getattr(result, op.outcome) + 1)
    result.seconds = time.monotonic() - started
    return result


def host_sync_event(*, event: WatchEvent, now: datetime | None = None) -> SyncResult:
    """Apply one watch event: ADDED/MODIFIED update, DELETED retires, RELIST is a complete sync."""
    if event.type == "RELIST":
        return hosts_sync(records=event.hosts, complete=True, resource_version=event.resource_version, now=now)
    if event.type in ("ADDED", "MODIFIED") and event.host is not None:
        return hosts_sync(records=[event.host], resource_version=event.resource_version, now=now)
    if event.type == "DELETED" and event.host is not None:
        return hosts_sync(records=[], deleted=[event.host], resource_version=event.resource_version, now=now)
    return SyncResult(resource_version=event.resource_version)  # BOOKMARK: only the position moves


def sync_cursor_save(*, key: str, resource_version: str) -> None:
    if not resource_version:
        return
    if not SyncCursor.objects.filter(key=key).update(resource_version=resource_version, updated_at=timezone.now()):
        SyncCursor.objects.update_or_create(key=key, defaults={"resource_version": resource_version})


def _gateway(gateway: Gateway | None) -> Gateway:
    if gateway is not None:
        return gateway
    from teapot_portal.gateway.factory import get_gateway

    return get_gateway()


def hosts_resync(*, gateway: Gateway | None = None, now: datetime | None = None) -> SyncResult:
    """List every BareMetalHost and sync completely: creates, updates, retires the vanished."""
    gateway = _gateway(gateway)
    started = time.monotonic()
    records, resource_version = gateway.list_hosts()
    result = hosts_sync(records=records, complete=True, resource_version=resource_version, now=now)
    sync_cursor_save(key=RESYNC_CURSOR, resource_version=resource_version)
    result.seconds = time.monotonic() - started
    log.info("hosts resync", extra={"hosts": len(records), **result.as_log()})
    return result


def hosts_follow(
    *, gateway: Gateway | None = None, timeout_seconds: int = 50, now: datetime | None = None
) -> SyncResult:
    """Follow the BareMetalHosts from the stored cursor for ``timeout_seconds``; what changed.

    Each event is applied in its own transaction together with the cursor, so the cursor
    never runs ahead of what was applied: a crash replays at most the event it was on.
    """
    gateway = _gateway(gateway)
    started = time.monotonic()
    cursor = SyncCursor.objects.filter(key=FOLLOW_CURSOR).values_list("resource_version", flat=True).first() or ""
    total = SyncResult(resource_version=cursor)
    try:
        for event in gateway.follow_hosts(cursor, timeout_seconds=timeout_seconds):
            with transaction.atomic():
                part = host_sync_event(event=event, now=now)
                sync_cursor_save(key=FOLLOW_CURSOR, resource_version=event.resource_version)
            total = total + part
    except Invalid:
        # A cursor the API server cannot parse (another cluster's, a hand edit) would fail every
        # run: forget it, so the next run starts with a relist.
        SyncCursor.objects.filter(key=FOLLOW_CURSOR, resource_version=cursor).delete()
        raise
    total.seconds = time.monotonic() - started
    if total.created or total.updated or total.retired or total.failed:
        log.info("hosts follow", extra=total.as_log())
    return total
