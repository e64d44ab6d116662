"""The lab gateway: :class:`~teapot_portal.gateway.base.Gateway` on the PostgreSQL store.

It behaves as the management cluster's API server would; the simulated controllers
(:mod:`.controllers`) play baremetal-operator, CAPM3, Cluster API and Kamaji behind it.

* ``apply`` is server-side-apply-like: create when missing; otherwise a three-way merge of what
  Teapot applied last time, what it applies now and what is stored — fields Teapot stops sending
  are removed, fields set by others (controllers, metadata patches, the defaulting webhook) are
  kept, lists are replaced whole. Nothing changes → no write, same resourceVersion.
  ``metadata.generation`` moves on spec changes only; ``status`` in the applied object is ignored.
  Objects are checked as the API server would (names, labels, the upstream CRD schema → 422).
* Admission, as a real cluster has it: BMO's finalizer on every BareMetalHost (so deletion goes
  through ``powering off before delete`` → ``deleting``); Cluster API's webhook defaults an
  unset ``MachineDeployment.spec.replicas`` (autoscaler min-size, else 1).
* ``watch_hosts`` reads the event log after the given resourceVersion. It drains what is there,
  then polls (every 0.5 s of real time) until ``timeout_seconds`` have passed — so
  ``timeout_seconds=0`` returns at once, which is what tests use. It ends with a BOOKMARK at the
  newest resourceVersion so the caller can resume from there. A resourceVersion older than the
  retained log raises :class:`Expired` (relist, then watch again).
* Secrets are stored as given (``data`` base64) and never logged.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator

from django.conf import settings
from django.db import transaction

from teapot_portal.gateway import builders, kinds
from teapot_portal.gateway.base import (
    Conflict,
    Expired,
    Gateway,
    HostRecord,
    Invalid,
    NotFound,
    WatchEvent,
)
from teapot_portal.gateway.lab import labels, store, watchlog
from teapot_portal.gateway.lab.bmo import FINALIZER as BMH_FINALIZER
from teapot_portal.gateway.lab.models import LabClock, LabEvent

WATCH_POLL_SECONDS = 0.5
_BMH = kinds.BAREMETALHOST


def _merge(current, last, applied):
    """Three-way merge of maps: drop what ``last`` had and ``applied`` lacks; set what ``applied`` has."""
    if not isinstance(applied, dict) or not isinstance(current, dict):
        return copy.deepcopy(applied)
    last = last if isinstance(last, dict) else {}
    result = copy.deepcopy(current)
    for key in last:
        if key not in applied:
            result.pop(key, None)
    for key, value in applied.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], last.get(key), value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _autoscaler_bounds(annotations: dict) -> tuple[int | None, int | None]:
    try:
        low = int(annotations[builders.AUTOSCALER_MIN])
        high = int(annotations[builders.AUTOSCALER_MAX])
    except (KeyError, ValueError):
        return None, None
    return low, high


def default_replicas(obj: dict, previous: int | None) -> None:
    """Cluster API's MachineDeployment webhook: an unset ``spec.replicas`` gets a value.

    With both autoscaler annotations: the min size on create, the previous value clamped to
    [min, max] on update; without them: 1 (metal3-facts.md §3).
    """
    spec = obj.setdefault("spec", {})
    if spec.get("replicas") is not None:
        return
    low, high = _autoscaler_bounds((obj.get("metadata") or {}).get("annotations") or {})
    if low is not None and high is not None:
        spec["replicas"] = low if previous is None else min(max(previous, low), high)
    else:
        spec["replicas"] = 1 if previous is None else previous


def _not_found(kind: kinds.Kind, name: str) -> NotFound:
    return NotFound(f'{kind.resource} "{name}" not found')


class LabGateway(Gateway):
    def __init__(self, namespace: str, clock: LabClock | None = None):
        self.namespace = namespace
        self._clock = clock

    @classmethod
    def from_settings(cls) -> LabGateway:
        return cls(settings.TEAPOT_NAMESPACE)

    @property
    def clock(self) -> LabClock:
        # Resolved on first use: constructing a gateway must not touch the database.
        if self._clock is None:
            self._clock = LabClock.get()
        return self._clock

    # ------------------------------------------------------------------ generic objects

    def apply(self, obj: dict) -> dict:
        try:
            kind = kinds.kind_of(obj)
        except ValueError as exc:
            raise Invalid(str(exc)) from exc
        meta = obj.get("metadata") or {}
        name = meta.get("name") or ""
        desired = {k: copy.deepcopy(v) for k, v in obj.items() if k != "status"}
        if kind is kinds.SECRET:
            desired = _secret_data(desired)
        applied = {
            "labels": dict(meta.get("labels") or {}),
            "annotations": dict(meta.get("annotations") or {}),
            "body": store.body_of(desired),
        }
        # The next merge needs only which keys were applied: a Secret's values are not kept twice.
        record = {**applied, "body": store.body_of(store.without_secret_values(desired))}
        with transaction.atomic():
            store.lock()
            row = store.load(kind.kind, self.namespace, name) if name else None
            now = self.clock.now()
            if row is None:
                new = {
                    **desired,
                    "metadata": {
                        "name": name,
                        "namespace": self.namespace,
                        **{k: copy.deepcopy(v) for k, v in meta.items() if k in ("labels", "annotations")},
                    },
                }
                if kind is kinds.MACHINEDEPLOYMENT:
                    default_replicas(new, None)
                finalizers = [BMH_FINALIZER] if kind is _BMH else []
                row = store.create(new, now=now, finalizers=finalizers, applied=record)
                return store.to_dict(row)
            wanted_rv = str(meta.get("resourceVersion") or "")
            if wanted_rv and wanted_rv != str(row.resource_version):
                raise Conflict(
                    f'Operation cannot be fulfilled on {kind.resource} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again"
                )
            current = store.to_dict(row)
            last = row.applied or {}
            merged_meta = copy.deepcopy(current["metadata"])
            for key in ("labels", "annotations"):
                value = _merge(current["metadata"].get(key) or {}, last.get(key), applied[key])
                if value:
                    merged_meta[key] = value
                else:
                    merged_meta.pop(key, None)
            body = _merge(store.body_of(current), last.get("body"), applied["body"])
            merged = {"apiVersion": current["apiVersion"], "kind": current["kind"], "metadata": merged_meta, **body}
            if current.get("status"):
                merged["status"] = current["status"]
            if kind is kinds.MACHINEDEPLOYMENT:
                default_replicas(merged, (current.get("spec") or {}).get("replicas"))
            store.update(row, merged)
            store.save_applied(row, record)
            return store.to_dict(row)

    def get(self, kind: kinds.Kind, name: str) -> dict:
        row = store.load(kind.kind, self.namespace, name, for_update=False)
        if row is None:
            raise _not_found(kind, name)
        return store.to_dict(row)

    def list(self, kind: kinds.Kind, label_selector: str = "") -> list[dict]:
        selector = labels.parse(label_selector)
        return [
            store.to_dict(row) for row in store.rows(kind.kind, self.namespace) if labels.matches(selector, row.labels)
        ]

    def delete(self, kind: kinds.Kind, name: str) -> bool:
        with transaction.atomic():
            store.lock()
            row = store.load(kind.kind, self.namespace, name)
            if row is None:
                return False
            store.request_delete(row, self.clock.now())
            return True

    # ------------------------------------------------------------------ BareMetalHosts

    def list_hosts(self, label_selector: str = "") -> tuple[list[HostRecord], str]:
        # The resourceVersion first: a change committed between the two reads is then replayed
        # by the watch rather than lost.
        resource_version = watchlog.latest_rv()
        selector = labels.parse(label_selector)
        hosts = [
            HostRecord.from_object(store.to_dict(row))
            for row in store.rows(_BMH.kind, self.namespace)
            if labels.matches(selector, row.labels)
        ]
        return hosts, str(resource_version)

    def get_host(self, name: str) -> HostRecord:
        return HostRecord.from_object(self.get(_BMH, name))

    def get_hardware_data(self, name: str) -> dict | None:
        row = store.load(kinds.HARDWAREDATA.kind, self.namespace, name, for_update=False)
        if row is None:
            return None
        return copy.deepcopy((row.body.get("spec") or {}).get("hardware"))

    def watch_hosts(self, resource_version: str, timeout_seconds: int = 60) -> Iterator[WatchEvent]:
        try:
            since = int(resource_version or 0)
        except ValueError as exc:
            raise Invalid(f"invalid resourceVersion {resource_version!r}") from exc
        compacted = watchlog.compacted_rv()
        if since and since < compacted:
            raise Expired(f"too old resource version: {since} ({compacted})")
        return self._watch(since, timeout_seconds)

    def _watch(self, since: int, timeout_seconds: int) -> Iterator[WatchEvent]:
        if not since:
            # No resourceVersion: like Kubernetes, start with the current objects as ADDED.
            hosts, latest = self.list_hosts()
            for host in hosts:
                yield WatchEvent("ADDED", host.resource_version, host)
            since = int(latest)
        deadline = time.monotonic() + max(timeout_seconds, 0)
        last_sent = since
        while True:
            batch = list(
                LabEvent.objects.filter(kind=_BMH.kind, namespace=self.namespace, resource_version__gt=since).order_by(
                    "resource_version"
                )[:500]
            )
            for event in batch:
                since = last_sent = event.resource_version
                yield WatchEvent(event.type, str(event.resource_version), HostRecord.from_object(event.object))
            if len(batch) == 500:
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(WATCH_POLL_SECONDS, remaining))
        newest = watchlog.latest_rv()
        if newest > last_sent:
            yield WatchEvent("BOOKMARK", str(newest))

    def patch_host_metadata(
        self,
        name: str,
        *,
        labels: dict[str, str | None] | None = None,
        annotations: dict[str, str | None] | None = None,
    ) -> HostRecord:
        def change(obj: dict) -> None:
            for key, values in (("labels", labels), ("annotations", annotations)):
                target = obj["metadata"].setdefault(key, {})
                for k, v in (values or {}).items():
                    if v is None:
                        target.pop(k, None)
                    else:
                        target[k] = v

        return self._patch_host(name, change)

    def set_host_online(self, name: str, online: bool) -> HostRecord:
        def change(obj: dict) -> None:
            obj.setdefault("spec", {})["online"] = bool(online)

        return self._patch_host(name, change)

    def _patch_host(self, name: str, change) -> HostRecord:
        return HostRecord.from_object(self._patch(_BMH, name, change))

    def _patch(self, kind: kinds.Kind, name: str, change) -> dict:
        """``change(obj)`` made to the stored object (what a merge patch does): no write when
        it changes nothing. Raises NotFound."""
        with transaction.atomic():
            store.lock()
            row = store.load(kind.kind, self.namespace, name)
            if row is None:
                raise _not_found(kind, name)
            obj = store.to_dict(row)
            change(obj)
            store.update(row, obj)
            return store.to_dict(row)

    def scale_for_bookings(self, machine_deployment: str, replicas: int, reserved: int) -> None:
        def change(obj: dict) -> None:
            obj["metadata"].setdefault("annotations", {})[builders.RESERVED_REPLICAS] = str(int(reserved))
            obj.setdefault("spec", {})["replicas"] = int(replicas)

        self._patch(kinds.MACHINEDEPLOYMENT, machine_deployment, change)

    def mark_machine_for_deletion(self, name: str, marked: bool = True) -> None:
        def change(obj: dict) -> None:
            annotations = obj["metadata"].setdefault("annotations", {})
            if marked:
                annotations[builders.DELETE_MACHINE] = "true"
            else:
                annotations.pop(builders.DELETE_MACHINE, None)

        self._patch(kinds.MACHINE, name, change)

    def autoscaler_scale(self, machine_deployment: str, replicas: int) -> dict:
        """What the Cluster Autoscaler does to a node group: set ``spec.replicas`` of the
        MachineDeployment, within its min/max annotations. Another field manager than Teapot's
        apply, so Teapot's next apply (which leaves replicas unset on autoscaled pools) keeps
        it — the lab's stand-in for a real autoscaler asking for more nodes."""

        def change(obj: dict) -> None:
            low, high = _autoscaler_bounds(obj["metadata"].get("annotations") or {})
            if low is None:
                raise Invalid(f"{machine_deployment} is not autoscaled (no min/max size annotations)")
            if not low <= replicas <= high:
                raise Invalid(f"the autoscaler keeps {machine_deployment} between {low} and {high} nodes")
            obj["spec"]["replicas"] = int(replicas)

        return self._patch(kinds.MACHINEDEPLOYMENT, machine_deployment, change)

    def delete_host(self, name: str) -> None:
        with transaction.atomic():
            store.lock()
            row = store.load(_BMH.kind, self.namespace, name)
            if row is None:
                raise _not_found(_BMH, name)
            credentials = ((row.body.get("spec") or {}).get("bmc") or {}).get("credentialsName")
            if credentials:
                # BMO still needs the credentials to power the host off and deregister it: the
                # Secret goes when the host does (the lab's BMO removes it at the end).
                store.update(row, store.to_dict(row), internal={**row.internal, "delete_credentials": credentials})
            store.request_delete(row, self.clock.now())
            if credentials and store.load(_BMH.kind, self.namespace, name) is None:
                secret = store.load(kinds.SECRET.kind, self.namespace, credentials)
                if secret is not None:
                    store.remove(secret)


def _secret_data(obj: dict) -> dict:
    """The API server folds ``stringData`` into ``data`` (base64) and defaults ``type``."""
    import base64

    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
    obj.setdefault("type", "Opaque")
    return obj
