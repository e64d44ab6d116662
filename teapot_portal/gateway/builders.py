"""Pure functions: Teapot's own data in, Kubernetes objects (dicts) out.

Nothing here does I/O. Every object is checked in tests against the upstream CRD schemas
(``shared/crds``), including the CEL rules the JSON schema cannot express.

Naming: every tenant object carries the tenant slug, ``<tenant>-<cluster>`` for cluster-level
objects and ``<tenant>-<cluster>-<pool>`` for a node pool's MachineDeployment. Machine
templates are immutable in practice (Cluster API rolls a MachineDeployment out when its
template *reference* changes), so their names end in a hash of their content: a changed image
or cleaning mode gives a new template and a rollout, an unchanged one the same name.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field

from teapot_portal.gateway import kinds

LABEL_TENANT = "teapot.io/tenant"
LABEL_CLUSTER = "teapot.io/cluster"
LABEL_NODE_POOL = "teapot.io/node-pool"  # on BMHs Teapot picked for a pool: the pool's uid
LABEL_MANAGED = "app.kubernetes.io/managed-by"
LABEL_TRAIT_PREFIX = "teapot.io/trait-"
LABEL_ADDON_PREFIX = "teapot.io/addon-"
CAPI_CLUSTER_NAME = "cluster.x-k8s.io/cluster-name"
# On a Machine: its MachineSet deletes it first on scale-down (which hosts leave a pool).
DELETE_MACHINE = "cluster.x-k8s.io/delete-machine"
# On an autoscaled pool's MachineDeployment: how many of its replicas Teapot added for bookings
# (written with spec.replicas in one patch; the autoscaler owns the rest).
RESERVED_REPLICAS = "teapot.io/reserved-replicas"
CAPI_DEPLOYMENT_NAME = "cluster.x-k8s.io/deployment-name"
AUTOSCALER_MIN = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size"
AUTOSCALER_MAX = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size"
CAPACITY_PREFIX = "capacity.cluster-autoscaler.kubernetes.io/"

BMC_SCHEMES = (
    "ipmi",
    "libvirt",
    "redfish",
    "redfish-virtualmedia",
    "redfish-uefihttp",
    "idrac-redfish",
    "idrac-virtualmedia",
    "ilo5-redfish",
    "ilo5-virtualmedia",
)
_REDFISH_SUFFIXABLE = {s for s in BMC_SCHEMES if "redfish" in s or "virtualmedia" in s or "uefihttp" in s}
MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")


class BuildError(ValueError):
    """Teapot's data cannot make a valid object; the message names the field."""


# --------------------------------------------------------------------------- validation helpers


def validate_bmc_address(address: str) -> str:
    """Check a BMC address the way BMO will: a scheme with a registered driver, then a host."""
    address = (address or "").strip()
    if "://" not in address:
        raise BuildError(
            f"BMC address {address!r} has no scheme: use e.g. ipmi://10.0.0.5 or redfish://10.0.0.5/redfish/v1/Systems/1"
        )
    scheme, rest = address.split("://", 1)
    base = scheme
    for suffix in ("+https", "+http"):
        if scheme.endswith(suffix):
            base = scheme[: -len(suffix)]
            if base not in _REDFISH_SUFFIXABLE:
                raise BuildError(f"BMC scheme {scheme!r}: only redfish variants take a +http/+https suffix")
    if base not in BMC_SCHEMES:
        raise BuildError(f"BMC scheme {scheme!r} is not supported; use one of: {', '.join(BMC_SCHEMES)}")
    host = rest.split("/", 1)[0]
    if not host or "@" in host:
        raise BuildError(f"BMC address {address!r}: give a host (and no credentials: they go in the username/password)")
    return address


def validate_mac(mac: str) -> str:
    mac = (mac or "").strip().lower()
    if not MAC_RE.match(mac):
        raise BuildError(f"MAC address {mac!r} is not valid: six hex pairs separated by colons, e.g. 52:54:00:12:34:56")
    return mac


def validate_name(name: str, what: str = "name", max_length: int = 63) -> str:
    if not name or len(name) > max_length or not DNS_LABEL_RE.match(name):
        raise BuildError(
            f"{what} {name!r} must be at most {max_length} lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return name


def validate_host_name(name: str) -> str:
    # A DNS subdomain, with room for the "-bmc-secret" suffix of its credentials Secret.
    if not name or len(name) > 242 or not DNS_SUBDOMAIN_RE.match(name):
        raise BuildError(
            f"host name {name!r} must be lowercase letters, digits, '-' and '.', at most 242 characters, "
            "starting and ending with a letter or digit"
        )
    return name


def k8s_version(version: str) -> str:
    """'1.33.0' or 'v1.33.0' → 'v1.33.0' (Cluster API's form)."""
    match = VERSION_RE.match((version or "").strip())
    if not match:
        raise BuildError(f"Kubernetes version {version!r} must look like v1.33.0")
    return "v{}.{}.{}".format(*match.groups())


def content_hash(obj: dict, length: int = 8) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:length]


def _labels(tenant: str, cluster: str | None = None, **extra: str) -> dict[str, str]:
    labels = {LABEL_MANAGED: "teapot", LABEL_TENANT: tenant}
    if cluster is not None:
        labels[LABEL_CLUSTER] = cluster
    labels.update(extra)
    return labels


def _meta(name: str, namespace: str, labels: dict, annotations: dict | None = None) -> dict:
    meta = {"name": name, "namespace": namespace, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    return meta


# --------------------------------------------------------------------------- hosts


@dataclass(frozen=True)
class HostEnrolment:
    name: str
    bmc_address: str
    bmc_username: str
    bmc_password: str = field(repr=False)
    boot_mac: str
    online: bool = True
    automated_cleaning_mode: str = "metadata"
    root_device_hints: dict | None = None
    disable_certificate_verification: bool = False
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def secret_name(self) -> str:
        return f"{self.name}-bmc-secret"


def bmc_secret(enrolment: HostEnrolment, namespace: str) -> dict:
    """The BMC credentials Secret BMO reads (keys ``username`` and ``password``)."""
    if not enrolment.bmc_username or not enrolment.bmc_password:
        raise BuildError("BMC username and password are both required")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(enrolment.secret_name, namespace, {LABEL_MANAGED: "teapot"}),
        "type": "Opaque",
        "data": {
            "username": base64.b64encode(enrolment.bmc_username.encode()).decode(),
            "password": base64.b64encode(enrolment.bmc_password.encode()).decode(),
        },
    }


_ROOT_HINT_KEYS = {
    "deviceName": str,
    "hctl": str,
    "model": str,
    "vendor": str,
    "serialNumber": str,
    "minSizeGigabytes": int,
    "wwn": str,
    "wwnWithExtension": str,
    "wwnVendorExtension": str,
    "rotational": bool,
}


def baremetalhost(enrolment: HostEnrolment, namespace: str) -> dict:
    validate_host_name(enrolment.name)
    if enrolment.automated_cleaning_mode not in ("metadata", "disabled"):
        raise BuildError("automatedCleaningMode must be 'metadata' or 'disabled'")
    spec: dict = {
        "online": bool(enrolment.online),
        "bootMACAddress": validate_mac(enrolment.boot_mac),
        "bmc": {
            "address": validate_bmc_address(enrolment.bmc_address),
            "credentialsName": enrolment.secret_name,
        },
        "automatedCleaningMode": enrolment.automated_cleaning_mode,
    }
    if enrolment.disable_certificate_verification:
        spec["bmc"]["disableCertificateVerification"] = True
    if enrolment.root_device_hints:
        hints = {}
        for key, value in enrolment.root_device_hints.items():
            if key not in _ROOT_HINT_KEYS:
                raise BuildError(f"unknown root device hint {key!r}; known: {', '.join(sorted(_ROOT_HINT_KEYS))}")
            if not isinstance(value, _ROOT_HINT_KEYS[key]) or isinstance(value, bool) != (_ROOT_HINT_KEYS[key] is bool):
                raise BuildError(f"root device hint {key!r} must be a {_ROOT_HINT_KEYS[key].__name__}")
            hints[key] = value
        spec["rootDeviceHints"] = hints
    if enrolment.description:
        spec["description"] = enrolment.description
    labels = {LABEL_MANAGED: "teapot", **enrolment.labels}
    return {
        "apiVersion": kinds.BAREMETALHOST.api_version,
        "kind": "BareMetalHost",
        "metadata": _meta(enrolment.name, namespace, labels),
        "spec": spec,
    }


# --------------------------------------------------------------------------- clusters


@dataclass(frozen=True)
class ClusterSpec:
    tenant: str
    name: str
    kubernetes_version: str
    endpoint_host: str  # the control-plane VIP Teapot allocated
    endpoint_port: int = 6443
    control_plane_replicas: int = 2
    pod_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/12"
    data_store: str = "default"
    addons: tuple[str, ...] = ()  # "kubevirt", "kata"

    @property
    def object_name(self) -> str:
        return f"{self.tenant}-{self.name}"


ADDONS = ("kubevirt", "kata")


def cluster_objects(spec: ClusterSpec, namespace: str) -> list[dict]:
    """Cluster + KamajiControlPlane + Metal3Cluster: a hosted control plane, no servers.

    The control-plane endpoint is written twice, as the Kamaji provider checks
    (metal3-facts.md §4): ``KamajiControlPlane.spec.network.serviceAddress`` and
    ``Metal3Cluster.spec.controlPlaneEndpoint`` — and the port in ``clusterNetwork.apiServerPort``.
    """
    validate_name(spec.tenant, "tenant slug")
    validate_name(spec.name, "cluster name")
    name = validate_name(spec.object_name, "cluster object name")
    try:
        ipaddress.ip_address(spec.endpoint_host)
    except ValueError as exc:
        raise BuildError(f"control-plane endpoint {spec.endpoint_host!r} is not an IP address") from exc
    if not 1 <= spec.endpoint_port <= 65535:
        raise BuildError("control-plane port must be between 1 and 65535")
    if not 1 <= spec.control_plane_replicas <= 5:
        raise BuildError("control-plane replicas must be between 1 and 5")
    for cidr in (spec.pod_cidr, spec.service_cidr):
        try:
            ipaddress.ip_network(cidr)
        except ValueError as exc:
            raise BuildError(f"{cidr!r} is not a network in CIDR form") from exc
    unknown = set(spec.addons) - set(ADDONS)
    if unknown:
        raise BuildError(f"unknown add-on(s) {', '.join(sorted(unknown))}; available: {', '.join(ADDONS)}")
    # Add-ons are installed by ClusterResourceSets that select clusters by these labels
    # (docs/management-cluster.md); the label is the whole contract.
    addon_labels = {f"{LABEL_ADDON_PREFIX}{addon}": "enabled" for addon in sorted(spec.addons)}
    labels = _labels(spec.tenant, spec.name)
    cluster = {
        "apiVersion": kinds.CLUSTER.api_version,
        "kind": "Cluster",
        "metadata": _meta(name, namespace, {**labels, **addon_labels}),
        "spec": {
            "clusterNetwork": {
                "apiServerPort": spec.endpoint_port,
                "pods": {"cidrBlocks": [spec.pod_cidr]},
                "services": {"cidrBlocks": [spec.service_cidr]},
            },
            "controlPlaneRef": {"apiGroup": kinds.KAMAJICONTROLPLANE.group, "kind": "KamajiControlPlane", "name": name},
            "infrastructureRef": {"apiGroup": kinds.METAL3CLUSTER.group, "kind": "Metal3Cluster", "name": name},
        },
    }
    control_plane = {
        "apiVersion": kinds.KAMAJICONTROLPLANE.api_version,
        "kind": "KamajiControlPlane",
        "metadata": _meta(name, namespace, {**labels, CAPI_CLUSTER_NAME: name}),
        "spec": {
            "version": k8s_version(spec.kubernetes_version),
            "replicas": spec.control_plane_replicas,
            "dataStoreName": spec.data_store,
            "network": {"serviceType": "LoadBalancer", "serviceAddress": spec.endpoint_host},
            "addons": {"coreDNS": {}, "kubeProxy": {}, "konnectivity": {}},
        },
    }
    infrastructure = {
        "apiVersion": kinds.METAL3CLUSTER.api_version,
        "kind": "Metal3Cluster",
        "metadata": _meta(name, namespace, {**labels, CAPI_CLUSTER_NAME: name}),
        "spec": {
            "controlPlaneEndpoint": {"host": spec.endpoint_host, "port": spec.endpoint_port},
            "cloudProviderEnabled": False,
        },
    }
    return [cluster, control_plane, infrastructure]


# --------------------------------------------------------------------------- node pools


@dataclass(frozen=True)
class Capacity:
    """What one host of the pool offers, for the autoscaler's scale-from-zero annotations."""

    cpu: int
    memory_gib: int
    gpu_type: str = ""  # e.g. "nvidia.com/gpu"
    gpu_count: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[str, ...] = ()  # "key=value:Effect"


@dataclass(frozen=True)
class Taint:
    key: str
    effect: str = "NoSchedule"
    value: str = ""


@dataclass(frozen=True)
class NodePoolSpec:
    tenant: str
    cluster: str
    name: str
    pool_uid: str  # the label value CAPM3's hostSelector matches (Teapot labels the chosen BMHs)
    kubernetes_version: str
    image_url: str
    image_checksum: str
    image_checksum_type: str = "sha256"
    image_format: str = "qcow2"
    cleaning_mode: str = "metadata"  # BMH automatedCleaningMode: "metadata" or "disabled" (key erase)
    replicas: int | None = 0  # None when autoscaled
    autoscale_min: int | None = None
    autoscale_max: int | None = None
    capacity: Capacity | None = None
    taints: tuple[Taint, ...] = ()
    node_labels: dict[str, str] = field(default_factory=dict)
    health_check: bool = True

    @property
    def cluster_object_name(self) -> str:
        return f"{self.tenant}-{self.cluster}"

    @property
    def object_name(self) -> str:
        return f"{self.tenant}-{self.cluster}-{self.name}"

    @property
    def autoscaled(self) -> bool:
        return self.autoscale_min is not None


def _node_pool_checks(spec: NodePoolSpec) -> None:
    validate_name(spec.name, "node pool name")
    validate_name(spec.object_name, "node pool object name", 63 - 9)  # room for "-<hash8>"
    if not spec.pool_uid or not re.match(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$", spec.pool_uid):
        raise BuildError(f"pool uid {spec.pool_uid!r} is not a valid label value")
    if not re.match(r"^(https?|file|oci)://", spec.image_url or ""):
        raise BuildError(f"image URL {spec.image_url!r} must be http(s)://, file:// or oci://")
    if spec.image_checksum_type not in ("md5", "sha256", "sha512"):
        raise BuildError("image checksum type must be md5, sha256 or sha512")
    if spec.image_format not in ("raw", "qcow2", "vdi", "vmdk", "live-iso"):
        raise BuildError("image format must be raw, qcow2, vdi, vmdk or live-iso")
    if not spec.image_checksum and spec.image_format != "live-iso" and not spec.image_url.startswith("oci://"):
        raise BuildError("an image checksum is required (except for live-iso and oci:// images)")
    if spec.cleaning_mode not in ("metadata", "disabled"):
        raise BuildError("cleaning mode must be 'metadata' or 'disabled'")
    if spec.autoscaled:
        if spec.autoscale_max is None or not 0 <= spec.autoscale_min <= spec.autoscale_max:
            raise BuildError("autoscaling needs 0 ≤ min ≤ max")
        if spec.replicas is not None:
            raise BuildError("an autoscaled pool leaves replicas to the autoscaler (replicas=None)")
    elif spec.replicas is None or spec.replicas < 0:
        raise BuildError("a fixed-size pool needs replicas ≥ 0")
    for taint in spec.taints:
        if taint.effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise BuildError(f"taint effect {taint.effect!r} must be NoSchedule, PreferNoSchedule or NoExecute")


def node_pool_objects(spec: NodePoolSpec, namespace: str) -> list[dict]:
    """Metal3MachineTemplate + KubeadmConfigTemplate + MachineDeployment (+ MachineHealthCheck).

    1. The Metal3MachineTemplate's ``hostSelector`` matches ``teapot.io/node-pool=<pool uid>``:
       CAPM3 can only bind hosts Teapot labelled for this pool (DESIGN.md, Placement).
    2. ``automatedCleaningMode`` on the template is propagated by CAPM3 to the BMHs: ``disabled``
       for key-erase pools (Teapot erases the disk key itself), ``metadata`` otherwise.
    3. An autoscaled MachineDeployment carries min/max annotations and no ``replicas``, plus the
       scale-from-zero capacity annotations (CAPM3 reports no capacity, metal3-facts.md §3).
    """
    _node_pool_checks(spec)
    cluster = spec.cluster_object_name
    md_name = spec.object_name
    labels = _labels(spec.tenant, spec.cluster, **{CAPI_CLUSTER_NAME: cluster})
    version = k8s_version(spec.kubernetes_version)

    m3mt_spec = {
        "template": {
            "spec": {
                "hostSelector": {"matchLabels": {LABEL_NODE_POOL: spec.pool_uid}},
                "automatedCleaningMode": spec.cleaning_mode,
                "image": {
                    "url": spec.image_url,
                    "checksum": spec.image_checksum,
                    "checksumType": spec.image_checksum_type,
                    "diskFormat": spec.image_format,
                },
            }
        }
    }
    m3mt_name = f"{md_name}-{content_hash(m3mt_spec)}"
    node_labels = {LABEL_TENANT: spec.tenant, "teapot.io/pool": spec.name, **spec.node_labels}
    kubelet_args = [
        {"name": "provider-id", "value": "metal3://{{ ds.meta_data.providerid }}"},
        {"name": "node-labels", "value": ",".join(f"{k}={v}" for k, v in sorted(node_labels.items()))},
    ]
    kct_spec = {
        "template": {
            "spec": {
                "joinConfiguration": {
                    "nodeRegistration": {
                        "name": "{{ ds.meta_data.name }}",
                        "kubeletExtraArgs": kubelet_args,
                    }
                },
            }
        }
    }
    kct_name = f"{md_name}-{content_hash(kct_spec)}"

    annotations: dict[str, str] = {}
    if spec.autoscaled:
        annotations[AUTOSCALER_MIN] = str(spec.autoscale_min)
        annotations[AUTOSCALER_MAX] = str(spec.autoscale_max)
    if spec.capacity is not None:
        annotations.update(capacity_annotations(spec.capacity))
    md_spec: dict = {
        "clusterName": cluster,
        "selector": {"matchLabels": {CAPI_DEPLOYMENT_NAME: md_name}},
        "template": {
            "metadata": {"labels": {**labels, CAPI_DEPLOYMENT_NAME: md_name}},
            "spec": {
                "clusterName": cluster,
                "version": version,
                "bootstrap": {
                    "configRef": {
                        "apiGroup": kinds.KUBEADMCONFIGTEMPLATE.group,
                        "kind": "KubeadmConfigTemplate",
                        "name": kct_name,
                    }
                },
                "infrastructureRef": {
                    "apiGroup": kinds.METAL3MACHINETEMPLATE.group,
                    "kind": "Metal3MachineTemplate",
                    "name": m3mt_name,
                },
            },
        },
    }
    if not spec.autoscaled:
        md_spec["replicas"] = spec.replicas
    if spec.taints:
        md_spec["template"]["spec"]["taints"] = [
            {"key": t.key, **({"value": t.value} if t.value else {}), "effect": t.effect, "propagation": "Always"}
            for t in spec.taints
        ]
    objects = [
        {
            "apiVersion": kinds.METAL3MACHINETEMPLATE.api_version,
            "kind": "Metal3MachineTemplate",
            "metadata": _meta(m3mt_name, namespace, labels),
            "spec": m3mt_spec,
        },
        {
            "apiVersion": kinds.KUBEADMCONFIGTEMPLATE.api_version,
            "kind": "KubeadmConfigTemplate",
            "metadata": _meta(kct_name, namespace, labels),
            "spec": kct_spec,
        },
        {
            "apiVersion": kinds.MACHINEDEPLOYMENT.api_version,
            "kind": "MachineDeployment",
            "metadata": _meta(md_name, namespace, labels, annotations),
            "spec": md_spec,
        },
    ]
    if spec.health_check:
        objects.append(
            {
                "apiVersion": kinds.MACHINEHEALTHCHECK.api_version,
                "kind": "MachineHealthCheck",
                "metadata": _meta(md_name, namespace, labels),
                "spec": {
                    "clusterName": cluster,
                    "selector": {"matchLabels": {CAPI_DEPLOYMENT_NAME: md_name}},
                    "checks": {
                        # Bare metal is slow to boot: provisioning alone takes ~15 minutes.
                        "nodeStartupTimeoutSeconds": 3600,
                        "unhealthyNodeConditions": [
                            {"type": "Ready", "status": "Unknown", "timeoutSeconds": 600},
                            {"type": "Ready", "status": "False", "timeoutSeconds": 600},
                        ],
                    },
                    # Never remediate a pool that is mostly down: that is an outage, not a bad node.
                    "remediation": {"triggerIf": {"unhealthyLessThanOrEqualTo": "40%"}},
                },
            }
        )
    return objects


def capacity_annotations(capacity: Capacity) -> dict[str, str]:
    annotations = {
        f"{CAPACITY_PREFIX}cpu": str(capacity.cpu),
        f"{CAPACITY_PREFIX}memory": f"{capacity.memory_gib}Gi",
    }
    if capacity.gpu_count:
        annotations[f"{CAPACITY_PREFIX}gpu-type"] = capacity.gpu_type or "nvidia.com/gpu"
        annotations[f"{CAPACITY_PREFIX}gpu-count"] = str(capacity.gpu_count)
    if capacity.labels:
        annotations[f"{CAPACITY_PREFIX}labels"] = ",".join(f"{k}={v}" for k, v in sorted(capacity.labels.items()))
    if capacity.taints:
        annotations[f"{CAPACITY_PREFIX}taints"] = ",".join(capacity.taints)
    return annotations


def node_pool_object_names(spec: NodePoolSpec) -> dict[str, str]:
    """Kind → name of the pool's current objects (to find stale templates to delete)."""
    return {obj["kind"]: obj["metadata"]["name"] for obj in node_pool_objects(spec, "_")}


# --------------------------------------------------------------------------- control-plane VIPs


def _pool_addresses(pool: str):
    for part in (p.strip() for p in pool.split(",")):
        if not part:
            continue
        if "-" in part:
            first, last = (ipaddress.ip_address(x.strip()) for x in part.split("-", 1))
            if type(first) is not type(last) or last < first:
                raise BuildError(f"address range {part!r} is not first-last of one family")
            current = first
            while current <= last:
                yield current
                current += 1
        else:
            network = ipaddress.ip_network(part, strict=False)
            yield from (network.hosts() if network.num_addresses > 2 else network)


def allocate_address(pool: str, taken: set[str]) -> str:
    """The first free address of an operator-configured pool ("192.0.2.10-192.0.2.50", CIDRs,
    comma-separated). Deterministic, so a retried allocation picks the same address."""
    try:
        for address in _pool_addresses(pool):
            if str(address) not in taken:
                return str(address)
    except ValueError as exc:
        raise BuildError(f"control-plane address pool {pool!r} is not valid: {exc}") from exc
    raise BuildError(f"the control-plane address pool {pool!r} is exhausted ({len(taken)} in use)")
