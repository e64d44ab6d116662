"""The interface the rest of Teapot uses for the management cluster.

Everything is namespaced to one configurable namespace (``TEAPOT_NAMESPACE``): CAPM3 only
binds hosts in its Metal3Machine's own namespace, so BareMetalHosts and every tenant cluster
object live together there; tenant isolation is Teapot's job (object names carry the tenant).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field

from teapot_portal.gateway import builders, kinds

# Annotations and labels Teapot reads or writes on BareMetalHosts (metal3-facts.md §1).
ANNOTATION_PAUSED = "baremetalhost.metal3.io/paused"
ANNOTATION_DETACHED = "baremetalhost.metal3.io/detached"
ANNOTATION_INSPECT = "inspect.metal3.io"
ANNOTATION_REBOOT = "reboot.metal3.io"
CAPM3_PAUSE_VALUE = "metal3.io/capm3"  # CAPM3's own pause: never removed by Teapot


class GatewayError(Exception):
    """A management-cluster operation failed; ``str()`` is a message fit for an operator."""


class NotFound(GatewayError):
    pass


class Conflict(GatewayError):
    """Already exists, or changed since it was read (stale resourceVersion)."""


class Invalid(GatewayError):
    """The API server refused the object (422); ``causes`` name the fields."""

    def __init__(self, message: str, causes: list[dict] | None = None):
        super().__init__(message)
        self.causes = causes or []


class Forbidden(GatewayError):
    """Teapot's service account lacks a permission (see deploy/rbac.yaml)."""


class Unavailable(GatewayError):
    """Transient trouble that outlived the retries (429, 5xx, timeouts): try again later."""


class Expired(GatewayError):
    """A watch's resourceVersion is too old (410): relist, then watch again."""


@dataclass(frozen=True)
class HostRecord:
    """A BareMetalHost as Teapot sees it: spec, status, labels. Never BMC credentials."""

    name: str
    namespace: str
    uid: str
    resource_version: str
    labels: dict[str, str]
    annotations: dict[str, str]
    online: bool
    bmc_address: str
    boot_mac: str
    automated_cleaning_mode: str
    root_device_hints: dict
    consumer: str  # "<kind>/<name>" of consumerRef, or ""
    image_url: str
    provisioning_state: str
    operational_status: str
    error_type: str
    error_message: str
    error_count: int
    powered_on: bool
    hardware: dict | None
    architecture: str
    deleting: bool
    raw: dict = field(repr=False, compare=False, hash=False, default_factory=dict)

    @property
    def paused(self) -> bool:
        return ANNOTATION_PAUSED in self.annotations

    @property
    def detached(self) -> bool:
        return ANNOTATION_DETACHED in self.annotations

    @classmethod
    def from_object(cls, obj: dict) -> HostRecord:
        meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status") or {}
        consumer = spec.get("consumerRef") or {}
        hardware = status.get("hardware")
        return cls(
            name=meta["name"],
            namespace=meta.get("namespace", ""),
            uid=meta.get("uid", ""),
            resource_version=str(meta.get("resourceVersion", "")),
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
            online=bool(spec.get("online", False)),
            bmc_address=(spec.get("bmc") or {}).get("address", ""),
            boot_mac=spec.get("bootMACAddress", ""),
            automated_cleaning_mode=spec.get("automatedCleaningMode", "metadata"),
            root_device_hints=dict(spec.get("rootDeviceHints") or {}),
            consumer=f"{consumer.get('kind')}/{consumer.get('name')}" if consumer else "",
            image_url=(spec.get("image") or {}).get("url", ""),
            provisioning_state=(status.get("provisioning") or {}).get("state", ""),
            operational_status=status.get("operationalStatus", ""),
            error_type=status.get("errorType", ""),
            error_message=status.get("errorMessage", ""),
            error_count=int(status.get("errorCount", 0) or 0),
            powered_on=bool(status.get("poweredOn", False)),
            hardware=hardware,
            architecture=spec.get("architecture") or ((hardware or {}).get("cpu") or {}).get("arch", ""),
            deleting=bool(meta.get("deletionTimestamp")),
            raw=obj,
        )


@dataclass(frozen=True)
class WatchEvent:
    """``type`` is ADDED, MODIFIED, DELETED, BOOKMARK or RELIST.

    ``host`` is the changed host (None for bookmarks); a RELIST carries every host in ``hosts``:
    the complete state to reconcile against, after a start or an expired watch.
    """

    type: str
    resource_version: str
    host: HostRecord | None = None
    hosts: tuple[HostRecord, ...] = ()


@dataclass(frozen=True)
class MachineBinding:
    """A Machine of a tenant cluster and the BareMetalHost CAPM3 bound it to (if any yet)."""

    machine: str
    cluster: str
    deployment: str
    phase: str
    metal3machine: str
    host: str  # BMH name, "" while the Metal3Machine waits for a host
    provider_id: str
    node: str
    marked: bool = False  # carries cluster.x-k8s.io/delete-machine: goes first on scale-down
    deleting: bool = False  # has a deletionTimestamp: its host is deprovisioning, then let go


class Gateway(ABC):
    """What Teapot may do in the management cluster. Both implementations pass one suite."""

    namespace: str

    # ------------------------------------------------------------------ BareMetalHosts

    @abstractmethod
    def list_hosts(self, label_selector: str = "") -> tuple[list[HostRecord], str]:
        """All BMHs in the namespace and the list's resourceVersion (to watch from)."""

    @abstractmethod
    def watch_hosts(self, resource_version: str, timeout_seconds: int = 60) -> Iterator[WatchEvent]:
        """Changes after ``resource_version``. Raises :class:`Expired` when it is too old."""

    def follow_hosts(self, resource_version: str = "", *, timeout_seconds: int = 60) -> Iterator[WatchEvent]:
        """List-then-watch, the way informers do, for a level-triggered sync.

        1. Without a resourceVersion (first run), list and yield one RELIST with every host.
        2. Watch from the resourceVersion, yielding each change.
        3. When the resourceVersion has expired (410), relist — yield RELIST — and watch on.
        The stream ends when the watch window (``timeout_seconds``) does; the caller keeps the
        last ``resource_version`` it saw and calls again.
        """
        if not resource_version:
            hosts, resource_version = self.list_hosts()
            yield WatchEvent("RELIST", resource_version, hosts=tuple(hosts))
        try:
            yield from self.watch_hosts(resource_version, timeout_seconds)
        except Expired:
            hosts, resource_version = self.list_hosts()
            yield WatchEvent("RELIST", resource_version, hosts=tuple(hosts))
            yield from self.watch_hosts(resource_version, timeout_seconds)

    @abstractmethod
    def get_host(self, name: str) -> HostRecord: ...

    @abstractmethod
    def get_hardware_data(self, name: str) -> dict | None:
        """The HardwareData ``spec.hardware`` written at inspection, or None before it."""

    def enrol_host(self, enrolment: builders.HostEnrolment) -> HostRecord:
        """Create the BMC credentials Secret, then the BareMetalHost. Idempotent.

        A host CAPM3 has bound is left alone: re-applying its enrolment would take back
        ``online`` and ``automatedCleaningMode``, which CAPM3 sets while the host serves a pool.
        """
        try:
            existing = self.get_host(enrolment.name)
        except NotFound:
            existing = None
        if existing is not None and existing.consumer:
            raise Conflict(
                f"{enrolment.name} is in use by {existing.consumer}; its enrolment can change once it is released"
            )
        self.apply(builders.bmc_secret(enrolment, self.namespace))
        return HostRecord.from_object(self.apply(builders.baremetalhost(enrolment, self.namespace)))

    @abstractmethod
    def patch_host_metadata(
        self,
        name: str,
        *,
        labels: dict[str, str | None] | None = None,
        annotations: dict[str, str | None] | None = None,
    ) -> HostRecord:
        """Set (value) or remove (None) labels and annotations, leaving the others alone."""

    @abstractmethod
    def set_host_online(self, name: str, online: bool) -> HostRecord:
        """Power on (True) or off (False): BMO makes the power match ``spec.online``."""

    def set_host_labels(self, name: str, labels: dict[str, str | None]) -> HostRecord:
        return self.patch_host_metadata(name, labels=labels)

    def request_inspection(self, name: str) -> HostRecord:
        host = self.get_host(name)
        if host.provisioning_state not in ("available", "ready"):
            raise Conflict(
                f"{name} is {host.provisioning_state or 'not registered'}: only available hosts can be re-inspected."
            )
        return self.patch_host_metadata(name, annotations={ANNOTATION_INSPECT: ""})

    def request_reboot(self, name: str, *, hard: bool = False) -> HostRecord:
        value = json.dumps({"mode": "hard"}) if hard else ""
        return self.patch_host_metadata(name, annotations={ANNOTATION_REBOOT: value})

    def set_host_paused(self, name: str, paused: bool) -> HostRecord:
        host = self.get_host(name)
        if not paused and host.annotations.get(ANNOTATION_PAUSED) == CAPM3_PAUSE_VALUE:
            raise Conflict(f"{name} is paused by CAPM3 (its cluster is paused); Teapot leaves that pause alone.")
        return self.patch_host_metadata(name, annotations={ANNOTATION_PAUSED: "teapot" if paused else None})

    def set_host_detached(self, name: str, detached: bool) -> HostRecord:
        return self.patch_host_metadata(name, annotations={ANNOTATION_DETACHED: "" if detached else None})

    @abstractmethod
    def delete_host(self, name: str) -> None:
        """Delete the BMH (BMO powers it off and deregisters it) and its credentials Secret."""

    # ------------------------------------------------------------------ generic objects

    @abstractmethod
    def apply(self, obj: dict) -> dict:
        """Create or update ``obj`` (a builder's output) so it matches; no write when it does."""

    @abstractmethod
    def get(self, kind: kinds.Kind, name: str) -> dict:
        """Raises :class:`NotFound`."""

    @abstractmethod
    def list(self, kind: kinds.Kind, label_selector: str = "") -> list[dict]: ...

    @abstractmethod
    def delete(self, kind: kinds.Kind, name: str) -> bool:
        """Delete; False when it was already gone."""

    @abstractmethod
    def scale_for_bookings(self, machine_deployment: str, replicas: int, reserved: int) -> None:
        """Set an autoscaled MachineDeployment's ``spec.replicas`` and its
        ``teapot.io/reserved-replicas`` annotation (how many of them are for bookings) in one
        write, so the two never disagree. Not an apply: ``spec.replicas`` stays the autoscaler's
        field otherwise. Raises NotFound."""

    @abstractmethod
    def mark_machine_for_deletion(self, name: str, marked: bool = True) -> None:
        """Set (or remove) Cluster API's ``cluster.x-k8s.io/delete-machine`` annotation on a
        Machine: on scale-down its MachineSet deletes marked Machines first. Raises NotFound."""

    # ------------------------------------------------------------------ tenant clusters

    def apply_cluster(self, spec: builders.ClusterSpec) -> list[dict]:
        return [self.apply(obj) for obj in builders.cluster_objects(spec, self.namespace)]

    def apply_node_pool(self, spec: builders.NodePoolSpec) -> list[dict]:
        return [self.apply(obj) for obj in builders.node_pool_objects(spec, self.namespace)]

    def cluster_status(self, cluster_name: str) -> dict:
        """The Cluster's ``status`` (phase, conditions, controlPlane/workers counters)."""
        return self.get(kinds.CLUSTER, cluster_name).get("status") or {}

    def machine_bindings(self, cluster_name: str) -> list[MachineBinding]:
        """Each Machine of the cluster with the Metal3Machine and BMH bound to it."""
        selector = f"cluster.x-k8s.io/cluster-name={cluster_name}"
        m3ms = {m["metadata"]["name"]: m for m in self.list(kinds.METAL3MACHINE, selector)}
        bindings = []
        for machine in self.list(kinds.MACHINE, selector):
            spec, status = machine.get("spec", {}), machine.get("status") or {}
            infra = (spec.get("infrastructureRef") or {}).get("name", "")
            m3m = m3ms.get(infra, {})
            host = ((m3m.get("metadata") or {}).get("annotations") or {}).get("metal3.io/BareMetalHost", "")
            bindings.append(
                MachineBinding(
                    machine=machine["metadata"]["name"],
                    cluster=cluster_name,
                    deployment=(machine["metadata"].get("labels") or {}).get("cluster.x-k8s.io/deployment-name", ""),
                    phase=status.get("phase", ""),
                    metal3machine=infra,
                    host=host.split("/", 1)[-1] if host else "",
                    provider_id=spec.get("providerID", ""),
                    node=(status.get("nodeRef") or {}).get("name", ""),
                    marked=builders.DELETE_MACHINE in (machine["metadata"].get("annotations") or {}),
                    deleting=bool(machine["metadata"].get("deletionTimestamp")),
                )
            )
        return bindings

    def get_kubeconfig(self, cluster_name: str) -> str:
        """The admin kubeconfig Cluster API writes to Secret ``<cluster>-kubeconfig`` (key ``value``)."""
        import base64

        secret = self.get(kinds.SECRET, f"{cluster_name}-kubeconfig")
        try:
            return base64.b64decode(secret["data"]["value"]).decode()
        except (KeyError, ValueError) as exc:
            raise NotFound(f"the kubeconfig Secret of {cluster_name} has no 'value' yet") from exc
