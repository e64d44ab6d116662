"""The lab's object store: what an API server does with etcd, on PostgreSQL.

1. Every write runs inside a transaction that first takes one advisory lock
   (:func:`lock`). resourceVersions come from a sequence *under that lock*, so commit order
   equals resourceVersion order and a watch never misses a change that commits late.
2. A write re-reads the row under the lock, then updates it conditionally on the
   resourceVersion it read (``UPDATE … WHERE resource_version = <read>``): a stale writer gets
   :class:`Conflict`, never a lost update. Two workers ticking at once therefore cannot apply
   the same transition twice.
3. A write that changes nothing visible does not bump resourceVersion and logs no event.
   Changes to ``internal`` (controller memory) are saved silently.
4. Every visible change appends a :class:`LabEvent` with a snapshot of the object; deleting an
   object with finalizers only sets ``deletionTimestamp``; it goes when the last finalizer does.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

from django.db import connection

from teapot_portal.gateway import kinds
from teapot_portal.gateway.base import Conflict
from teapot_portal.gateway.lab.models import RESOURCE_VERSION_SEQUENCE, LabEvent, LabObject
from teapot_portal.gateway.lab.validation import _default, _validate

LOCK_KEY = 0x7EA907_1AB  # any constant; shared by every lab writer
_META_KEYS = ("apiVersion", "kind", "metadata", "status")


def iso(moment: datetime) -> str:
    """Kubernetes' metav1.Time: RFC 3339, UTC, whole seconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def lock() -> None:
    """Serialise lab writers until the end of the current transaction (re-entrant)."""
    if not connection.in_atomic_block:
        raise RuntimeError("store.lock() must be called inside transaction.atomic()")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])


def _next_rv() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval(%s)", [RESOURCE_VERSION_SEQUENCE])
        return int(cursor.fetchone()[0])


def has_status(api_version: str, kind: str) -> bool:
    try:
        return kinds.lookup(api_version, kind).has_status
    except ValueError:
        return True


# --------------------------------------------------------------------------- reading


def to_dict(row: LabObject) -> dict:
    """The object as the API would return it."""
    meta: dict = {
        "name": row.name,
        "namespace": row.namespace,
        "uid": str(row.uid),
        "resourceVersion": str(row.resource_version),
        "creationTimestamp": iso(row.created_at),
    }
    if row.api_version != "v1":  # core Secrets have no generation
        meta["generation"] = row.generation
    if row.labels:
        meta["labels"] = copy.deepcopy(row.labels)
    if row.annotations:
        meta["annotations"] = copy.deepcopy(row.annotations)
    if row.finalizers:
        meta["finalizers"] = list(row.finalizers)
    if row.owner_references:
        meta["ownerReferences"] = copy.deepcopy(row.owner_references)
    if row.deletion_timestamp:
        meta["deletionTimestamp"] = iso(row.deletion_timestamp)
    obj = {"apiVersion": row.api_version, "kind": row.kind, "metadata": meta, **copy.deepcopy(row.body)}
    if row.status:
        obj["status"] = copy.deepcopy(row.status)
    return obj


class Snapshot:
    """Every object, read in one query: what a dry (read-only) reconcile looks at."""

    def __init__(self) -> None:
        self.by_kind: dict[str, list[LabObject]] = defaultdict(list)
        self.by_key: dict[tuple[str, str, str], LabObject] = {}
        for row in LabObject.objects.order_by("kind", "namespace", "name"):
            self.by_kind[row.kind].append(row)
            self.by_key[(row.kind, row.namespace, row.name)] = row

    def get(self, kind: str, namespace: str, name: str) -> LabObject | None:
        return self.by_key.get((kind, namespace, name))

    def of_kind(self, kind: str, namespace: str | None = None) -> list[LabObject]:
        rows = self.by_kind.get(kind, [])
        return [r for r in rows if namespace is None or r.namespace == namespace]


_reading: ContextVar[Snapshot | None] = ContextVar("lab_snapshot", default=None)


@contextmanager
def reading(snapshot: Snapshot) -> Iterator[None]:
    """Serve :func:`load` and :func:`rows` from ``snapshot`` (no queries, no locks) inside the block."""
    token = _reading.set(snapshot)
    try:
        yield
    finally:
        _reading.reset(token)


def load(kind: str, namespace: str, name: str, *, for_update: bool = True) -> LabObject | None:
    snapshot = _reading.get()
    if snapshot is not None:
        return snapshot.get(kind, namespace, name)
    rows = LabObject.objects.filter(kind=kind, namespace=namespace, name=name)
    if for_update:
        rows = rows.select_for_update()
    return rows.first()


def rows(kind: str, namespace: str | None = None):
    snapshot = _reading.get()
    if snapshot is not None:
        return sorted(snapshot.of_kind(kind, namespace), key=lambda r: r.name)
    queryset = LabObject.objects.filter(kind=kind)
    if namespace is not None:
        queryset = queryset.filter(namespace=namespace)
    return queryset.order_by("name")


def body_of(obj: dict) -> dict:
    return {k: copy.deepcopy(v) for k, v in obj.items() if k not in _META_KEYS}


# --------------------------------------------------------------------------- writing


def without_secret_values(obj: dict) -> dict:
    """``obj`` with a Secret's values blanked (key names kept): for records that are not the Secret."""
    if obj.get("kind") != "Secret" or not isinstance(obj.get("data"), dict):
        return obj
    return {**obj, "data": dict.fromkeys(obj["data"], "")}


def _log(event_type: str, row: LabObject, snapshot: dict) -> None:
    # Only BareMetalHost events are ever watched; a Secret's values stay out of the log.
    snapshot = without_secret_values(snapshot)
    LabEvent.objects.create(
        resource_version=row.resource_version,
        type=event_type,
        kind=row.kind,
        namespace=row.namespace,
        name=row.name,
        object=snapshot,
    )


def create(
    obj: dict,
    *,
    now: datetime,
    finalizers: Iterable[str] = (),
    internal: dict | None = None,
    applied: dict | None = None,
    validate: bool = True,
) -> LabObject:
    """Create ``obj`` (status kept only for kinds that have one). Raises :class:`Conflict` if it exists."""
    lock()
    if validate:
        obj = _default(copy.deepcopy(obj))
    meta = obj["metadata"]
    if load(obj["kind"], meta["namespace"], meta["name"]) is not None:
        raise Conflict(f'{obj["kind"]} "{meta["name"]}" already exists')
    row = LabObject(
        api_version=obj["apiVersion"],
        kind=obj["kind"],
        namespace=meta["namespace"],
        name=meta["name"],
        resource_version=_next_rv(),
        generation=1,
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        finalizers=list(dict.fromkeys([*(meta.get("finalizers") or []), *finalizers])),
        owner_references=list(meta.get("ownerReferences") or []),
        body=body_of(obj),
        status=copy.deepcopy(obj.get("status")) if has_status(obj["apiVersion"], obj["kind"]) else None,
        created_at=now.replace(microsecond=0),
        applied=applied,
        internal=internal or {},
    )
    snapshot = to_dict(row)
    if validate:
        _validate(snapshot)
    row.save()
    _log(LabEvent.ADDED, row, snapshot)
    return row


def _changes(row: LabObject, obj: dict) -> dict:
    """The stored fields ``obj`` would change on ``row``."""
    meta = obj.get("metadata") or {}
    new = {
        "labels": dict(meta.get("labels") or {}),
        "annotations": dict(meta.get("annotations") or {}),
        "finalizers": list(meta.get("finalizers") or []),
        "owner_references": list(meta.get("ownerReferences") or []),
        "body": body_of(obj),
        "status": copy.deepcopy(obj.get("status")) if has_status(row.api_version, row.kind) else None,
    }
    if new["status"] == {}:
        new["status"] = None
    return {field: value for field, value in new.items() if getattr(row, field) != value}


def would_change(row: LabObject, obj: dict, internal: dict | None = None) -> bool:
    """Would :func:`update` write anything (visible or internal)? Reads only."""
    if _changes(row, _default(copy.deepcopy(obj))):
        return True
    return internal is not None and internal != row.internal


def update(row: LabObject, obj: dict, *, internal: dict | None = None, validate: bool = True) -> bool:
    """Make ``row`` hold ``obj``'s labels, annotations, finalizers, owners, body and status.

    True when something visible changed (resourceVersion bumped, event logged). A deleting
    object whose last finalizer is removed is deleted.
    """
    lock()
    if validate:
        obj = _default(copy.deepcopy(obj))
    changed = _changes(row, obj)
    internal_changed = internal is not None and internal != row.internal
    if not changed and not internal_changed:
        return False
    if not changed:
        LabObject.objects.filter(pk=row.pk).update(internal=internal)
        row.internal = internal
        return False
    if row.deletion_timestamp and not changed.get("finalizers", row.finalizers):
        remove(row)
        return True
    previous_rv = row.resource_version
    for field, value in changed.items():
        setattr(row, field, value)
    if "body" in changed and row.api_version != "v1":
        row.generation += 1
    if internal is not None:
        row.internal = internal
    snapshot = to_dict(row)
    if validate:
        _validate(snapshot)
    row.resource_version = _next_rv()
    snapshot["metadata"]["resourceVersion"] = str(row.resource_version)
    fields = {**{f: getattr(row, f) for f in changed}, "generation": row.generation, "internal": row.internal}
    written = LabObject.objects.filter(pk=row.pk, resource_version=previous_rv).update(
        resource_version=row.resource_version, **fields
    )
    if written != 1:
        raise Conflict(f'{row.kind} "{row.name}" was changed by someone else; read it again')
    _log(LabEvent.MODIFIED, row, snapshot)
    return True


def save_applied(row: LabObject, applied: dict) -> None:
    """Remember what the last apply sent (no visible change, no resourceVersion)."""
    if row.applied != applied:
        LabObject.objects.filter(pk=row.pk).update(applied=applied)
        row.applied = applied


def request_delete(row: LabObject, now: datetime) -> bool:
    """Delete ``row``, or mark it deleting when finalizers hold it. False if it was already deleting."""
    lock()
    if row.deletion_timestamp:
        return False
    if not row.finalizers:
        remove(row)
        return True
    previous_rv = row.resource_version
    row.deletion_timestamp = now.replace(microsecond=0)
    row.resource_version = _next_rv()
    written = LabObject.objects.filter(pk=row.pk, resource_version=previous_rv).update(
        deletion_timestamp=row.deletion_timestamp, resource_version=row.resource_version
    )
    if written != 1:
        raise Conflict(f'{row.kind} "{row.name}" was changed by someone else; read it again')
    _log(LabEvent.MODIFIED, row, to_dict(row))
    return True


def remove(row: LabObject) -> None:
    """Remove ``row`` for good and log DELETED (its last state, at a new resourceVersion)."""
    lock()
    row.resource_version = _next_rv()
    snapshot = to_dict(row)
    LabObject.objects.filter(pk=row.pk).delete()
    _log(LabEvent.DELETED, row, snapshot)
