"""The Kubernetes kinds Teapot reads and writes, with their API coordinates.

The versions are those of the pinned upstream CRDs (see shared/crds/SOURCES.md): CAPI v1.13
(v1beta2 contract), CAPM3 v1.13 (v1beta2), BMO v0.13 (v1alpha1), Kamaji provider v0.20.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    kind: str
    group: str  # "" for the core group
    version: str
    plural: str
    has_status: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:
        """``plural.group`` as Kubernetes names it in messages and RBAC."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


SECRET = Kind("Secret", "", "v1", "secrets", has_status=False)
BAREMETALHOST = Kind("BareMetalHost", "metal3.io", "v1alpha1", "baremetalhosts")
HARDWAREDATA = Kind("HardwareData", "metal3.io", "v1alpha1", "hardwaredata", has_status=False)
CLUSTER = Kind("Cluster", "cluster.x-k8s.io", "v1beta2", "clusters")
MACHINEDEPLOYMENT = Kind("MachineDeployment", "cluster.x-k8s.io", "v1beta2", "machinedeployments")
MACHINEHEALTHCHECK = Kind("MachineHealthCheck", "cluster.x-k8s.io", "v1beta2", "machinehealthchecks")
MACHINE = Kind("Machine", "cluster.x-k8s.io", "v1beta2", "machines")
KAMAJICONTROLPLANE = Kind("KamajiControlPlane", "controlplane.cluster.x-k8s.io", "v1alpha2", "kamajicontrolplanes")
METAL3CLUSTER = Kind("Metal3Cluster", "infrastructure.cluster.x-k8s.io", "v1beta2", "metal3clusters")
METAL3MACHINE = Kind("Metal3Machine", "infrastructure.cluster.x-k8s.io", "v1beta2", "metal3machines")
METAL3MACHINETEMPLATE = Kind(
    "Metal3MachineTemplate", "infrastructure.cluster.x-k8s.io", "v1beta2", "metal3machinetemplates", has_status=False
)
KUBEADMCONFIGTEMPLATE = Kind(
    "KubeadmConfigTemplate", "bootstrap.cluster.x-k8s.io", "v1beta2", "kubeadmconfigtemplates", has_status=False
)

ALL = [
    SECRET,
    BAREMETALHOST,
    HARDWAREDATA,
    CLUSTER,
    MACHINEDEPLOYMENT,
    MACHINEHEALTHCHECK,
    MACHINE,
    KAMAJICONTROLPLANE,
    METAL3CLUSTER,
    METAL3MACHINE,
    METAL3MACHINETEMPLATE,
    KUBEADMCONFIGTEMPLATE,
]
# What Teapot creates (the rest it only reads: Machines, Metal3Machines, HardwareData).
WRITTEN = [
    SECRET,
    BAREMETALHOST,
    CLUSTER,
    KAMAJICONTROLPLANE,
    METAL3CLUSTER,
    MACHINEDEPLOYMENT,
    METAL3MACHINETEMPLATE,
    KUBEADMCONFIGTEMPLATE,
    MACHINEHEALTHCHECK,
]
_BY_KIND = {(k.api_version, k.kind): k for k in ALL}


def kind_of(obj: dict) -> Kind:
    try:
        return _BY_KIND[(obj["apiVersion"], obj["kind"])]
    except KeyError as exc:
        raise ValueError(f"Teapot does not handle {obj.get('apiVersion')}/{obj.get('kind')}") from exc


def lookup(api_version: str, kind: str) -> Kind:
    return kind_of({"apiVersion": api_version, "kind": kind})
