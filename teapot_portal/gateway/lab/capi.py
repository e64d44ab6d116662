"""Cluster API, CAPM3 and the Kamaji control-plane provider, simulated.

A tenant cluster comes up like this (one step per controller; :func:`..controllers.tick` repeats):

1. **Cluster** (CAPI): owns its KamajiControlPlane and Metal3Cluster; phase ``Pending`` →
   ``Provisioning`` (references set) → ``Provisioned`` (infrastructure provisioned *and* control
   plane initialized). Upstream CAPI already says ``Provisioned`` when the infrastructure is
   ready and an endpoint is known, before the control plane answers: code that must run on both
   should read ``status.initialization.controlPlaneInitialized``, not the phase alone. Mirrors
   the control plane's and the workers' replica counters.
2. **Metal3Cluster** (CAPM3): provisioned as soon as a Cluster owns it and it has an endpoint.
3. **KamajiControlPlane** (Kamaji): a TenantControlPlane comes up ≈180 s after the Cluster
   owns the KCP; its endpoint is ``spec.network.serviceAddress`` : the Cluster's
   ``apiServerPort`` (6443). The provider only *checks* a Metal3Cluster's endpoint: a different
   host or port fails ``InfrastructureClusterPatched`` with upstream's "the Metal3Cluster cluster
   has been provisioned with a mismatching host" (or "port") and the control plane never
   initializes. Otherwise: initialized, ready, replicas, and Secret ``<cluster>-kubeconfig``.
4. **MachineDeployment** (CAPI, MachineSets folded in): keeps ``spec.replicas`` Machines, each
   with a Metal3Machine cloned from the Metal3MachineTemplate, named ``<md>-<5 chars>`` from a
   counter. A new template rolls out one surplus machine at a time (maxSurge 1, maxUnavailable 0).
   Scale-down deletes machines marked ``cluster.x-k8s.io/delete-machine`` first, then ones not
   running yet, then the newest. Status in v1beta2 terms (replicas, readyReplicas,
   availableReplicas, upToDateReplicas, phase ScalingUp/ScalingDown/Running).
5. **Machine** (CAPI + kubeadm bootstrap): join data (a bootstrap Secret) once the control plane
   is initialized; phases ``Pending`` → ``Provisioning`` (bootstrap data) → ``Provisioned``
   (providerID from the Metal3Machine) → ``Running`` (nodeRef, once the control plane is ready)
   → ``Deleting`` (Metal3Machine deleted first, then the bootstrap Secret, then the Machine).
6. **Metal3Machine** (CAPM3, metal3-facts.md §2): with bootstrap data, takes a host — an
   available, unconsumed, error-free, unpaused, not-deleting, not-unhealthy BareMetalHost in its
   namespace matching ``hostSelector``, chosen at random (seeded); none → it waits. Binding
   writes consumerRef, the owner reference and cluster-name label on the host, then image
   (``diskFormat`` → ``format``), the ``<m3m>-user-data`` Secret, ``automatedCleaningMode`` and
   ``online: true``; the Metal3Machine gets ``metal3.io/BareMetalHost: <ns>/<bmh>`` and, once the
   host is provisioned, ``providerID: metal3://<ns>/<bmh>/<m3m>``. Deleting it clears the host's
   image and user data and powers it off; when the host has deprovisioned, consumerRef, owner,
   label and CAPM3's pause are removed and the host is available again.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import math
import random
import uuid

from teapot_portal.gateway import builders, kinds
from teapot_portal.gateway.base import ANNOTATION_PAUSED, CAPM3_PAUSE_VALUE
from teapot_portal.gateway.lab import labels, store
from teapot_portal.gateway.lab.controllers import (
    Ctx,
    at_time,
    ensure_owner,
    load_dict,
    owner_of,
    owner_ref,
    set_condition,
)
from teapot_portal.gateway.lab.models import LabObject

CLUSTER_NAME = builders.CAPI_CLUSTER_NAME
DEPLOYMENT_NAME = builders.CAPI_DEPLOYMENT_NAME
MACHINE_FINALIZER = "machine.cluster.x-k8s.io"
M3M_FINALIZER = "metal3machine.infrastructure.cluster.x-k8s.io"
HOST_ANNOTATION = "metal3.io/BareMetalHost"
UNHEALTHY_ANNOTATIONS = ("capm3.metal3.io/unhealthy", "capi.metal3.io/unhealthy")
FAILURE_DOMAIN_LABEL = "infrastructure.cluster.x-k8s.io/failure-domain"
DELETE_MACHINE = builders.DELETE_MACHINE
CLONED_FROM_NAME = "cluster.x-k8s.io/cloned-from-name"
CLONED_FROM_GROUPKIND = "cluster.x-k8s.io/cloned-from-groupkind"
CAPI_SECRET_TYPE = "cluster.x-k8s.io/secret"  # noqa: S105 (a Secret type)
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' generateName alphabet: no vowels
_BUSY_HOST_STATES = ("preparing", "provisioning", "provisioned", "deprovisioning")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _status(obj: dict) -> dict:
    return copy.deepcopy(obj.get("status") or {})


def _initialization(obj: dict | None, key: str) -> bool:
    return bool((((obj or {}).get("status") or {}).get("initialization") or {}).get(key))


def _endpoint(obj: dict | None) -> tuple[str, int]:
    endpoint = ((obj or {}).get("spec") or {}).get("controlPlaneEndpoint") or {}
    return str(endpoint.get("host") or ""), int(endpoint.get("port") or 0)


def _ref_name(ref: dict | None) -> str:
    return (ref or {}).get("name", "")


# --------------------------------------------------------------------------- Metal3Cluster (CAPM3)


def reconcile_metal3cluster(row: LabObject, ctx: Ctx) -> None:
    obj = store.to_dict(row)
    status = _status(obj)
    host, port = _endpoint(obj)
    owner = owner_of(obj, "Cluster")
    provisioned = bool(owner and host and port)
    status["initialization"] = {"provisioned": provisioned}
    if not owner:
        reason, message = "WaitingForClusterOwnerReference", "waiting for Cluster API to set the Cluster as owner"
    elif not (host and port):
        reason, message = "ControlPlaneEndpointNotSet", "spec.controlPlaneEndpoint needs a host and a port"
    else:
        reason, message = "Ready", ""
    set_condition(status, "Ready", provisioned, reason, message, ctx.now, obj["metadata"]["generation"])
    obj["status"] = status
    ctx.save(row, obj)


# --------------------------------------------------------------------------- KamajiControlPlane


def _kubeconfig(cluster: str, host: str, port: int) -> str:
    token = hashlib.sha256(f"lab-kubeconfig:{cluster}".encode()).hexdigest()[:32]
    user = f"{cluster}-admin"
    return (
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        f"- name: {cluster}\n"
        "  cluster:\n"
        f"    server: https://{host}:{port}\n"
        "    insecure-skip-tls-verify: true\n"
        "contexts:\n"
        f"- name: {user}@{cluster}\n"
        "  context:\n"
        f"    cluster: {cluster}\n"
        f"    user: {user}\n"
        f"current-context: {user}@{cluster}\n"
        "users:\n"
        f"- name: {user}\n"
        "  user:\n"
        f"    token: lab-{token}\n"
    )


def _ensure_kubeconfig(ctx: Ctx, kcp: dict, cluster: str, host: str, port: int) -> None:
    namespace = kcp["metadata"]["namespace"]
    name = f"{cluster}-kubeconfig"
    wanted = {"value": _b64(_kubeconfig(cluster, host, port))}
    row = store.load("Secret", namespace, name)
    if row is None:
        ctx.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {CLUSTER_NAME: cluster},
                    "ownerReferences": [owner_ref(kcp)],
                },
                "type": CAPI_SECRET_TYPE,
                "data": wanted,
            }
        )
        return
    secret = store.to_dict(row)
    if secret.get("data") != wanted:
        secret["data"] = wanted
        ctx.save(row, secret)


def _service_address(kcp: dict) -> str:
    address = ((kcp.get("spec") or {}).get("network") or {}).get("serviceAddress")
    if address:
        return address
    # No address asked for: the LoadBalancer hands one out (a documentation range in the lab).
    digest = int(hashlib.sha256(kcp["metadata"]["uid"].encode()).hexdigest(), 16)
    return f"203.0.113.{digest % 250 + 1}"


def reconcile_kamajicontrolplane(row: LabObject, ctx: Ctx) -> None:
    obj = store.to_dict(row)
    meta, spec = obj["metadata"], obj.setdefault("spec", {})
    generation = meta["generation"]
    st = copy.deepcopy(row.internal)
    status = _status(obj)
    status["externalManagedControlPlane"] = True
    status.setdefault("ready", False)
    status["version"] = spec.get("version", "")
    obj["status"] = status
    cluster_name = owner_of(obj, "Cluster")
    cluster = load_dict("Cluster", meta["namespace"], cluster_name)
    if cluster is None:
        # The provider only reconciles control planes a Cluster owns.
        ctx.save(row, obj, internal=st)
        return
    if "tcp_ready_at" not in st:
        st["tcp_ready_at"] = ctx.now_ts + ctx.timings.duration("control_plane", f"kcp/{meta['name']}", 1)
        set_condition(status, "TenantControlPlaneCreated", True, "Succeeded", "", ctx.now, generation)
    if st["tcp_ready_at"] > ctx.now_ts:
        set_condition(
            status,
            "TenantControlPlaneAddressReady",
            False,
            "Failed",
            "Control Plane Endpoint is not yet available since unprocessed by Kamaji",
            ctx.now,
            generation,
        )
        ctx.save(row, obj, internal=st)
        return
    at = at_time(st["tcp_ready_at"])
    host = _service_address(obj)
    port = int(((cluster.get("spec") or {}).get("clusterNetwork") or {}).get("apiServerPort") or 6443)
    set_condition(status, "TenantControlPlaneAddressReady", True, "Succeeded", "", at, generation)
    spec["controlPlaneEndpoint"] = {"host": host, "port": port}
    set_condition(status, "ControlPlaneEndpointPatched", True, "Succeeded", "", at, generation)

    infra_ref = (cluster.get("spec") or {}).get("infrastructureRef") or {}
    infra_kind = infra_ref.get("kind", "Metal3Cluster")
    infra = load_dict(infra_kind, meta["namespace"], _ref_name(infra_ref))
    problem = ""
    if infra is None:
        problem = f"cannot retrieve the {infra_kind} resource"
    else:
        infra_host, infra_port = _endpoint(infra)
        if not infra_host and not infra_port:
            problem = f"the {infra_kind} cluster has no control plane address to check"
        elif infra_host != host:
            problem = f"the {infra_kind} cluster has been provisioned with a mismatching host"
        elif infra_port != port:
            problem = f"the {infra_kind} cluster has been provisioned with a mismatching port"
    set_condition(
        status,
        "InfrastructureClusterPatched",
        not problem,
        "Failed" if problem else "Succeeded",
        problem,
        at,
        generation,
    )
    cluster_host, _ = _endpoint(cluster)
    if problem or not cluster_host or not _initialization(cluster, "infrastructureProvisioned"):
        ctx.save(row, obj, internal=st)
        return
    replicas = int(spec.get("replicas", 2))
    status["initialization"] = {"controlPlaneInitialized": True}
    set_condition(status, "KamajiControlPlaneIsInitialized", True, "Succeeded", "", at, generation)
    status.update(
        replicas=replicas,
        readyReplicas=replicas,
        availableReplicas=replicas,
        upToDateReplicas=replicas,
        selector=",".join(f"{k}={v}" for k, v in sorted((meta.get("labels") or {}).items())),
    )
    _ensure_kubeconfig(ctx, obj, cluster_name, host, port)
    set_condition(status, "KubeadmResourcesCreated", True, "Succeeded", "", at, generation)
    status["ready"] = True
    set_condition(status, "KamajiControlPlaneIsReady", True, "Succeeded", "", at, generation)
    ctx.save(row, obj, internal=st)


# --------------------------------------------------------------------------- Cluster (CAPI)


def _workers(namespace: str, cluster: str) -> dict:
    desired = 0
    for md in store.rows("MachineDeployment", namespace):
        if (md.body.get("spec") or {}).get("clusterName") == cluster:
            desired += int((md.body.get("spec") or {}).get("replicas") or 0)
    machines = [m for m in store.rows("Machine", namespace) if m.labels.get(CLUSTER_NAME) == cluster]
    ready = sum(1 for m in machines if not m.deletion_timestamp and (m.status or {}).get("nodeRef"))
    up_to_date = sum(1 for m in machines if not m.deletion_timestamp and m.internal.get("up_to_date", True))
    return {
        "desiredReplicas": desired,
        "replicas": len(machines),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "upToDateReplicas": up_to_date,
    }


def reconcile_cluster(row: LabObject, ctx: Ctx) -> None:
    obj = store.to_dict(row)
    meta, spec = obj["metadata"], obj.setdefault("spec", {})
    namespace, generation = meta["namespace"], meta["generation"]
    status = _status(obj)
    children = {}
    for role in ("controlPlaneRef", "infrastructureRef"):
        ref = spec.get(role) or {}
        child_row = store.load(ref.get("kind", ""), namespace, _ref_name(ref)) if ref else None
        if child_row is not None and not any(r.get("uid") == meta["uid"] for r in child_row.owner_references):
            child = store.to_dict(child_row)
            ensure_owner(child, obj)
            ctx.save(child_row, child)
        children[role] = store.to_dict(child_row) if child_row is not None else None
    control_plane, infrastructure = children["controlPlaneRef"], children["infrastructureRef"]
    infra_ready = _initialization(infrastructure, "provisioned")
    cp_initialized = _initialization(control_plane, "controlPlaneInitialized")
    cp_ready = bool(((control_plane or {}).get("status") or {}).get("ready"))

    # CAPI copies the endpoint from the infrastructure cluster (else the control plane) once.
    host, port = _endpoint(obj)
    if not host:
        source = infrastructure if infra_ready else control_plane
        source_host, source_port = _endpoint(source)
        if source_host and source_port:
            spec["controlPlaneEndpoint"] = {"host": source_host, "port": source_port}
            host, port = source_host, source_port

    phase = "Pending"
    if spec.get("controlPlaneRef") or spec.get("infrastructureRef"):
        phase = "Provisioning"
    if infra_ready and cp_initialized and host and port:
        phase = "Provisioned"
    if meta.get("deletionTimestamp"):
        phase = "Deleting"
    status["phase"] = phase
    status["initialization"] = {"infrastructureProvisioned": infra_ready, "controlPlaneInitialized": cp_initialized}
    cp_status = (control_plane or {}).get("status") or {}
    status["controlPlane"] = {
        "desiredReplicas": int(((control_plane or {}).get("spec") or {}).get("replicas", 2)) if control_plane else 0,
        "replicas": int(cp_status.get("replicas") or 0),
        "readyReplicas": int(cp_status.get("readyReplicas") or 0),
        "availableReplicas": int(cp_status.get("availableReplicas") or 0),
        "upToDateReplicas": int(cp_status.get("upToDateReplicas") or 0),
    }
    workers = _workers(namespace, meta["name"])
    status["workers"] = workers
    now = ctx.now
    set_condition(
        status,
        "InfrastructureReady",
        infra_ready,
        "Ready" if infra_ready else "NotReady",
        "" if infra_ready else "the infrastructure cluster is not provisioned yet",
        now,
        generation,
    )
    cp_problem = next(
        (
            c.get("message", "")
            for c in (cp_status.get("conditions") or [])
            if c.get("status") == "False" and c.get("type") == "InfrastructureClusterPatched"
        ),
        "",
    )
    set_condition(
        status,
        "ControlPlaneInitialized",
        cp_initialized,
        "Initialized" if cp_initialized else "NotInitialized",
        "" if cp_initialized else (cp_problem or "the control plane is not initialized yet"),
        now,
        generation,
    )
    set_condition(
        status,
        "ControlPlaneAvailable",
        cp_ready,
        "Available" if cp_ready else "NotAvailable",
        "" if cp_ready else (cp_problem or "the control plane is not available yet"),
        now,
        generation,
    )
    workers_ok = workers["availableReplicas"] >= workers["desiredReplicas"]
    set_condition(
        status,
        "WorkersAvailable",
        workers_ok,
        "Available" if workers_ok else "NotAvailable",
        "" if workers_ok else f"{workers['availableReplicas']} of {workers['desiredReplicas']} workers available",
        now,
        generation,
    )
    available = infra_ready and cp_ready and workers_ok
    set_condition(
        status,
        "Available",
        available,
        "Available" if available else "NotAvailable",
        "" if available else "the cluster is not available yet",
        now,
        generation,
    )
    status["observedGeneration"] = generation
    obj["status"] = status
    ctx.save(row, obj)


# --------------------------------------------------------------------------- MachineDeployment (CAPI)


def _suffix(name: str, counter: int) -> str:
    digest = hashlib.sha256(f"{name}:{counter}".encode()).digest()
    return "".join(_NAME_ALPHABET[b % len(_NAME_ALPHABET)] for b in digest[:5])


def _template_key(md: dict) -> dict:
    template_spec = ((md.get("spec") or {}).get("template") or {}).get("spec") or {}
    return {
        "infrastructure": _ref_name(template_spec.get("infrastructureRef")),
        "bootstrap": _ref_name((template_spec.get("bootstrap") or {}).get("configRef")),
        "version": template_spec.get("version", ""),
    }


def desired_replicas(md: dict) -> int:
    spec = md.get("spec") or {}
    if spec.get("replicas") is not None:
        return int(spec["replicas"])
    try:  # the webhook normally set it; an object written around it still scales to its minimum
        return int(((md.get("metadata") or {}).get("annotations") or {})[builders.AUTOSCALER_MIN])
    except (KeyError, ValueError):
        return 1


def _create_machine(ctx: Ctx, md: dict, st: dict, m3mt: dict, key: dict) -> None:
    meta, spec = md["metadata"], md["spec"]
    namespace = meta["namespace"]
    counter = int(st.get("next", 0))
    while True:
        counter += 1
        name = f"{meta['name']}-{_suffix(meta['name'], counter)}"
        if store.load("Machine", namespace, name) is None and store.load("Metal3Machine", namespace, name) is None:
            break
    st["next"] = counter
    template = spec.get("template") or {}
    template_spec = template.get("spec") or {}
    machine_labels = {
        **((template.get("metadata") or {}).get("labels") or {}),
        CLUSTER_NAME: spec.get("clusterName", ""),
        DEPLOYMENT_NAME: meta["name"],
    }
    machine_spec: dict = {
        "clusterName": spec.get("clusterName", ""),
        "bootstrap": {
            "configRef": {"apiGroup": kinds.KUBEADMCONFIGTEMPLATE.group, "kind": "KubeadmConfig", "name": name}
        },
        "infrastructureRef": {"apiGroup": kinds.METAL3MACHINE.group, "kind": "Metal3Machine", "name": name},
    }
    for field in ("version", "taints", "failureDomain", "minReadySeconds", "deletion", "readinessGates"):
        if field in template_spec:
            machine_spec[field] = copy.deepcopy(template_spec[field])
    machine_row = ctx.create(
        {
            "apiVersion": kinds.MACHINE.api_version,
            "kind": "Machine",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": machine_labels,
                "ownerReferences": [owner_ref(md)],
            },
            "spec": machine_spec,
            "status": {"phase": "Pending"},
        },
        finalizers=[MACHINE_FINALIZER],
        internal={"template": key},
    )
    ctx.create(
        {
            "apiVersion": kinds.METAL3MACHINE.api_version,
            "kind": "Metal3Machine",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(machine_labels),
                "annotations": {
                    CLONED_FROM_NAME: m3mt["metadata"]["name"],
                    CLONED_FROM_GROUPKIND: f"Metal3MachineTemplate.{kinds.METAL3MACHINETEMPLATE.group}",
                },
                "ownerReferences": [owner_ref(store.to_dict(machine_row))],
            },
            "spec": copy.deepcopy(((m3mt.get("spec") or {}).get("template") or {}).get("spec") or {}),
        },
        finalizers=[M3M_FINALIZER],
    )


def _deletion_order(machine: LabObject) -> tuple:
    """Who goes first on scale-down: marked for deletion, then not yet a node, then the newest."""
    marked = DELETE_MACHINE in (machine.annotations or {})
    running = bool((machine.status or {}).get("nodeRef"))
    return (not marked, running, -machine.created_at.timestamp(), -machine.pk)


def reconcile_machinedeployment(row: LabObject, ctx: Ctx) -> None:
    """1. Own the templates (via the Cluster). 2. Create or delete Machines toward ``replicas``,
    rolling onto a new template with one surplus machine at a time. 3. Report the counters."""
    obj = store.to_dict(row)
    meta, spec = obj["metadata"], obj.setdefault("spec", {})
    if meta.get("deletionTimestamp"):
        return
    namespace, generation = meta["namespace"], meta["generation"]
    st = copy.deepcopy(row.internal)
    status = _status(obj)
    cluster = load_dict("Cluster", namespace, spec.get("clusterName", ""))
    key = _template_key(obj)
    if cluster is not None:
        ensure_owner(obj, cluster, controller=False)
        for kind, name in (
            ("Metal3MachineTemplate", key["infrastructure"]),
            ("KubeadmConfigTemplate", key["bootstrap"]),
        ):
            template_row = store.load(kind, namespace, name) if name else None
            if template_row is not None and not any(
                r.get("uid") == cluster["metadata"]["uid"] for r in template_row.owner_references
            ):
                template = store.to_dict(template_row)
                ensure_owner(template, cluster, controller=False)
                ctx.save(template_row, template)
    desired = desired_replicas(obj)
    m3mt = load_dict("Metal3MachineTemplate", namespace, key["infrastructure"])

    def machines() -> list[LabObject]:
        return [
            m
            for m in store.rows("Machine", namespace)
            if m.labels.get(DEPLOYMENT_NAME) == meta["name"]
            and any(r.get("uid") == meta["uid"] for r in m.owner_references)
        ]

    active = [m for m in machines() if not m.deletion_timestamp]
    current = [m for m in active if m.internal.get("template") == key]
    old = [m for m in active if m.internal.get("template") != key]
    surge = 1 if old else 0
    to_create = min(desired - len(current), desired + surge - len(active)) if m3mt is not None else 0
    for _ in range(max(to_create, 0)):
        _create_machine(ctx, obj, st, m3mt, key)
    victims: list[LabObject] = []
    if old:
        ready_current = sum(1 for m in current if (m.status or {}).get("nodeRef"))
        victims = sorted(old, key=_deletion_order)[: max(0, min(len(old), ready_current + len(old) - desired))]
    elif len(current) > desired:
        victims = sorted(current, key=_deletion_order)[: len(current) - desired]
    for machine in victims:
        ctx.delete(machine)
    for machine in old:
        if machine.internal.get("up_to_date", True):
            ctx.save_internal(machine, {**machine.internal, "up_to_date": False})

    every = machines()
    active = [m for m in every if not m.deletion_timestamp]
    ready = sum(1 for m in active if (m.status or {}).get("nodeRef"))
    up_to_date = sum(1 for m in active if m.internal.get("template") == key)
    replicas = len(every)
    if replicas > desired:
        phase = "ScalingDown"
    elif replicas < desired or ready < desired:
        phase = "ScalingUp"
    else:
        phase = "Running"
    status.update(
        replicas=replicas,
        readyReplicas=ready,
        availableReplicas=ready,
        upToDateReplicas=up_to_date,
        phase=phase,
        observedGeneration=generation,
        selector=",".join(
            f"{k}={v}" for k, v in sorted(((spec.get("selector") or {}).get("matchLabels") or {}).items())
        )
        or f"{DEPLOYMENT_NAME}={meta['name']}",
    )
    now = ctx.now
    set_condition(
        status,
        "Available",
        ready >= desired,
        "Available" if ready >= desired else "NotAvailable",
        "" if ready >= desired else f"{ready} available replicas, at least {desired} required",
        now,
        generation,
    )
    set_condition(
        status,
        "ScalingUp",
        replicas < desired,
        "ScalingUp" if replicas < desired else "NotScalingUp",
        f"scaling up from {replicas} to {desired} replicas" if replicas < desired else "",
        now,
        generation,
    )
    set_condition(
        status,
        "ScalingDown",
        replicas > desired,
        "ScalingDown" if replicas > desired else "NotScalingDown",
        f"scaling down from {replicas} to {desired} replicas" if replicas > desired else "",
        now,
        generation,
    )
    if m3mt is None:
        set_condition(
            status,
            "MachinesReady",
            False,
            "InfrastructureTemplateNotFound",
            f"Metal3MachineTemplate {key['infrastructure']!r} not found",
            now,
            generation,
        )
    else:
        status["conditions"] = [c for c in status.get("conditions", []) if c.get("type") != "MachinesReady"]
    obj["status"] = status
    ctx.save(row, obj, internal=st)


# --------------------------------------------------------------------------- Machine (CAPI + bootstrap)


def _bootstrap_secret(machine: dict, cluster: dict) -> dict:
    meta = machine["metadata"]
    host, port = _endpoint(cluster)
    token = hashlib.sha256(f"lab-join:{meta['uid']}".encode()).hexdigest()
    cloud_config = (
        "#cloud-config\n"
        "runcmd:\n"
        f"  - kubeadm join {host}:{port} --token {token[:6]}.{token[6:22]} "
        "--discovery-token-unsafe-skip-ca-verification\n"
    )
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": {CLUSTER_NAME: machine["spec"].get("clusterName", "")},
            "ownerReferences": [owner_ref(machine)],
        },
        "type": CAPI_SECRET_TYPE,
        "data": {"value": _b64(cloud_config), "format": _b64("cloud-config")},
    }


def _node_info(machine: dict, host: dict | None) -> dict:
    arch = ((((host or {}).get("status") or {}).get("hardware") or {}).get("cpu") or {}).get("arch", "x86_64")
    version = (machine.get("spec") or {}).get("version") or "v1.33.0"
    seed = machine["metadata"]["uid"]
    return {
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(arch, arch),
        "bootID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"boot:{seed}")),
        "containerRuntimeVersion": "containerd://1.7.27",
        "kernelVersion": "6.8.0-57-generic",
        "kubeProxyVersion": version,
        "kubeletVersion": version,
        "machineID": hashlib.sha256(f"machine:{seed}".encode()).hexdigest()[:32],
        "operatingSystem": "linux",
        "osImage": "Ubuntu 24.04.2 LTS",
        "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"system:{seed}")),
    }


def reconcile_machine(row: LabObject, ctx: Ctx) -> None:
    obj = store.to_dict(row)
    meta, spec = obj["metadata"], obj.setdefault("spec", {})
    namespace, generation = meta["namespace"], meta["generation"]
    status = _status(obj)
    old_phase = status.get("phase")
    infra_name = _ref_name(spec.get("infrastructureRef"))
    now = ctx.now

    if meta.get("deletionTimestamp"):
        # 1. the Metal3Machine (which releases its host), 2. the bootstrap data, 3. the Machine.
        status["phase"] = "Deleting"
        m3m_row = store.load("Metal3Machine", namespace, infra_name) if infra_name else None
        if m3m_row is not None:
            if m3m_row.deletion_timestamp is None:
                ctx.delete(m3m_row)
            set_condition(
                status, "Deleting", True, "WaitingForInfrastructureDeletion", "waiting for the Metal3Machine", now
            )
            if old_phase != "Deleting":
                status["lastUpdated"] = store.iso(now)
            obj["status"] = status
            ctx.save(row, obj)
            return
        data_secret = (spec.get("bootstrap") or {}).get("dataSecretName")
        secret_row = store.load("Secret", namespace, data_secret) if data_secret else None
        if secret_row is not None:
            ctx.remove(secret_row)
        meta["finalizers"] = [f for f in meta.get("finalizers", []) if f != MACHINE_FINALIZER]
        obj["status"] = status
        ctx.save(row, obj)
        return

    cluster = load_dict("Cluster", namespace, spec.get("clusterName", ""))
    cp_ref = ((cluster or {}).get("spec") or {}).get("controlPlaneRef") or {}
    control_plane = load_dict(cp_ref.get("kind", ""), namespace, _ref_name(cp_ref)) if cp_ref else None
    cp_initialized = _initialization(cluster, "controlPlaneInitialized")
    cp_ready = bool(((control_plane or {}).get("status") or {}).get("ready"))

    bootstrap = spec.setdefault("bootstrap", {})
    if not bootstrap.get("dataSecretName") and cp_initialized and cluster is not None:
        # kubeadm join data needs the control plane: workers wait for it to be initialized.
        if store.load("Secret", namespace, meta["name"]) is None:
            ctx.create(_bootstrap_secret(obj, cluster))
        bootstrap["dataSecretName"] = meta["name"]
    bootstrap_ready = bool(bootstrap.get("dataSecretName"))

    m3m = load_dict("Metal3Machine", namespace, infra_name)
    infra_ready = _initialization(m3m, "provisioned")
    provider_id = ((m3m or {}).get("spec") or {}).get("providerID")
    if infra_ready and provider_id and spec.get("providerID") != provider_id:
        spec["providerID"] = provider_id
    host_ref = (((m3m or {}).get("metadata") or {}).get("annotations") or {}).get(HOST_ANNOTATION, "")
    host_name = host_ref.split("/", 1)[-1] if host_ref else ""
    if infra_ready and cp_ready and not status.get("nodeRef"):
        host = load_dict("BareMetalHost", namespace, host_name)
        status["nodeRef"] = {"name": host_name or meta["name"]}
        status["nodeInfo"] = _node_info(obj, host)
        addresses = ((m3m or {}).get("status") or {}).get("addresses")
        if addresses:
            status["addresses"] = copy.deepcopy(addresses)
    if status.get("nodeRef"):
        phase = "Running"
    elif infra_ready and spec.get("providerID"):
        phase = "Provisioned"
    elif bootstrap_ready:
        phase = "Provisioning"
    else:
        phase = "Pending"
    status["phase"] = phase
    if phase != old_phase:
        status["lastUpdated"] = store.iso(now)
    status["initialization"] = {"bootstrapDataSecretCreated": bootstrap_ready, "infrastructureProvisioned": infra_ready}
    node_ready = bool(status.get("nodeRef"))
    set_condition(
        status,
        "BootstrapConfigReady",
        bootstrap_ready,
        "Ready" if bootstrap_ready else "NotReady",
        "" if bootstrap_ready else "waiting for the control plane to be initialized",
        now,
        generation,
    )
    set_condition(
        status,
        "InfrastructureReady",
        infra_ready,
        "Ready" if infra_ready else "NotReady",
        "" if infra_ready else ("waiting for a BareMetalHost" if not host_name else f"{host_name} is provisioning"),
        now,
        generation,
    )
    set_condition(
        status,
        "NodeReady",
        node_ready,
        "NodeReady" if node_ready else "NodeDoesNotExist",
        "" if node_ready else "waiting for the node to join",
        now,
        generation,
    )
    for condition in ("Ready", "Available"):
        set_condition(
            status,
            condition,
            node_ready,
            condition if node_ready else f"Not{condition}",
            "" if node_ready else f"the machine is {phase}",
            now,
            generation,
        )
    status["observedGeneration"] = generation
    obj["status"] = status
    ctx.save(row, obj)


# --------------------------------------------------------------------------- Metal3Machine (CAPM3)


def host_is_candidate(host: dict, m3m_name: str) -> bool:
    """CAPM3's ``chooseHost`` filters (metal3-facts.md §2), apart from the selector."""
    meta, spec, status = host["metadata"], host.get("spec") or {}, host.get("status") or {}
    consumer = spec.get("consumerRef")
    if consumer and not (consumer.get("kind") == "Metal3Machine" and consumer.get("name") == m3m_name):
        return False
    annotations = meta.get("annotations") or {}
    state = (status.get("provisioning") or {}).get("state", "")
    return not (
        meta.get("deletionTimestamp")
        or status.get("errorMessage")
        or ANNOTATION_PAUSED in annotations
        or any(a in annotations for a in UNHEALTHY_ANNOTATIONS)
        or state not in ("available", "ready")
    )


def choose_host(ctx: Ctx, m3m: dict, failure_domain: str = "") -> tuple[LabObject | None, str]:
    """A host for ``m3m``, at random among the candidates (seeded); (None, why) when there is none."""
    meta = m3m["metadata"]
    try:
        selector = labels.from_label_selector((m3m.get("spec") or {}).get("hostSelector"))
    except ValueError as exc:
        return None, f"invalid hostSelector: {exc}"
    candidates = []
    for row in store.rows("BareMetalHost", meta["namespace"]):
        host = store.to_dict(row)
        if not labels.matches(selector, row.labels) or not host_is_candidate(host, meta["name"]):
            continue
        consumer = (host.get("spec") or {}).get("consumerRef") or {}
        if consumer.get("name") == meta["name"]:
            return row, ""  # already ours (a retried association)
        candidates.append(row)
    if failure_domain:
        preferred = [r for r in candidates if r.labels.get(FAILURE_DOMAIN_LABEL) == failure_domain]
        candidates = preferred or candidates
    if not candidates:
        return None, "no available host matches the hostSelector"
    rng = random.Random(f"{ctx.timings.seed}:{meta['namespace']}/{meta['name']}")
    return rng.choice(sorted(candidates, key=lambda r: r.name)), ""


def _set_host_spec(host: dict, m3m: dict, user_data: str) -> None:
    """CAPM3's ``setHostSpec``: what makes BMO provision the host."""
    spec, m3m_spec = host.setdefault("spec", {}), m3m.get("spec") or {}
    image = m3m_spec.get("image") or {}
    if image.get("url"):
        wanted = {"url": image["url"]}
        if image.get("checksum"):
            wanted["checksum"] = image["checksum"]
        if image.get("checksumType"):
            wanted["checksumType"] = image["checksumType"]
        if image.get("diskFormat"):
            wanted["format"] = image["diskFormat"]
        spec["image"] = wanted
    if (m3m_spec.get("customDeploy") or {}).get("method"):
        spec["customDeploy"] = copy.deepcopy(m3m_spec["customDeploy"])
    spec["userData"] = {"name": user_data, "namespace": m3m["metadata"]["namespace"]}
    if m3m_spec.get("automatedCleaningMode"):
        spec["automatedCleaningMode"] = m3m_spec["automatedCleaningMode"]
    spec["online"] = True


def _label_bmc_secret(ctx: Ctx, host: dict, cluster: str | None) -> None:
    """CAPM3 puts the cluster-name label on the host's BMC Secret too (and takes it off)."""
    name = ((host.get("spec") or {}).get("bmc") or {}).get("credentialsName")
    row = store.load("Secret", host["metadata"]["namespace"], name) if name else None
    if row is None:
        return
    secret = store.to_dict(row)
    secret_labels = secret["metadata"].setdefault("labels", {})
    if cluster:
        secret_labels[CLUSTER_NAME] = cluster
    else:
        secret_labels.pop(CLUSTER_NAME, None)
    ctx.save(row, secret)


def _bind(ctx: Ctx, m3m: dict, host_row: LabObject, machine: dict, cluster_name: str) -> None:
    meta = m3m["metadata"]
    namespace = meta["namespace"]
    host = store.to_dict(host_row)
    host["spec"]["consumerRef"] = {
        "apiVersion": m3m["apiVersion"],
        "kind": "Metal3Machine",
        "name": meta["name"],
        "namespace": namespace,
        "uid": meta["uid"],
    }
    ensure_owner(host, m3m)
    host["metadata"].setdefault("labels", {})[CLUSTER_NAME] = cluster_name
    user_data = f"{meta['name']}-user-data"
    if store.load("Secret", namespace, user_data) is None:
        bootstrap_row = store.load("Secret", namespace, machine["spec"]["bootstrap"]["dataSecretName"])
        value = ((bootstrap_row.body.get("data") or {}) if bootstrap_row else {}).get("value", "")
        ctx.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": user_data,
                    "namespace": namespace,
                    "labels": {CLUSTER_NAME: cluster_name},
                    "ownerReferences": [owner_ref(m3m)],
                },
                "type": "Opaque",
                "data": {"userData": value},
            }
        )
    if not (host["spec"].get("image") or host["spec"].get("customDeploy")):
        _set_host_spec(host, m3m, user_data)
    ctx.save(host_row, host)
    _label_bmc_secret(ctx, host, cluster_name)
    meta.setdefault("annotations", {})[HOST_ANNOTATION] = f"{namespace}/{host_row.name}"
    m3m.setdefault("status", {})["userData"] = {"name": user_data, "namespace": namespace}


def _release(ctx: Ctx, m3m: dict, host_name: str) -> bool:
    """CAPM3's ``Delete``: True once the host is released (or was never ours)."""
    meta = m3m["metadata"]
    namespace = meta["namespace"]
    host_row = store.load("BareMetalHost", namespace, host_name) if host_name else None
    if host_row is not None:
        host = store.to_dict(host_row)
        spec = host.setdefault("spec", {})
        consumer = spec.get("consumerRef") or {}
        if consumer.get("kind") == "Metal3Machine" and consumer.get("name") == meta["name"]:
            dirty = False
            for key in ("image", "customDeploy", "userData", "metaData", "networkData"):
                if key in spec:
                    spec.pop(key)
                    dirty = True
            # Power: off, unless the host must never be powered off (fast track not simulated).
            online = bool(spec.get("disablePowerOff"))
            if spec.get("online") != online:
                spec["online"] = online
                dirty = True
            if dirty:
                ctx.save(host_row, host)
                return False
            state = ((host.get("status") or {}).get("provisioning") or {}).get("state", "")
            if state in _BUSY_HOST_STATES:
                return False  # BMO is still deprovisioning (cleaning) it
            spec.pop("consumerRef", None)
            host["metadata"]["ownerReferences"] = [
                r for r in host["metadata"].get("ownerReferences", []) if r.get("uid") != meta["uid"]
            ]
            host["metadata"].get("labels", {}).pop(CLUSTER_NAME, None)
            annotations = host["metadata"].get("annotations", {})
            if annotations.get(ANNOTATION_PAUSED) == CAPM3_PAUSE_VALUE:
                annotations.pop(ANNOTATION_PAUSED)
            ctx.save(host_row, host)
            _label_bmc_secret(ctx, host, None)
    user_data = store.load("Secret", namespace, f"{meta['name']}-user-data")
    if user_data is not None:
        ctx.remove(user_data)
    return True


def _addresses(host: dict) -> list[dict]:
    hardware = (host.get("status") or {}).get("hardware") or {}
    addresses = [{"type": "InternalIP", "address": nic["ip"]} for nic in hardware.get("nics") or [] if nic.get("ip")]
    name = host["metadata"]["name"]
    addresses += [{"type": "Hostname", "address": name}, {"type": "InternalDNS", "address": name}]
    return addresses


def reconcile_metal3machine(row: LabObject, ctx: Ctx) -> None:
    obj = store.to_dict(row)
    meta, spec = obj["metadata"], obj.setdefault("spec", {})
    namespace, generation = meta["namespace"], meta["generation"]
    status = _status(obj)
    obj["status"] = status
    now = ctx.now
    host_ref = (meta.get("annotations") or {}).get(HOST_ANNOTATION, "")
    host_name = host_ref.split("/", 1)[-1] if host_ref else ""

    if meta.get("deletionTimestamp"):
        if _release(ctx, obj, host_name):
            meta["finalizers"] = [f for f in meta.get("finalizers", []) if f != M3M_FINALIZER]
        else:
            set_condition(status, "Ready", False, "Deleting", f"waiting for {host_name} to deprovision", now)
        ctx.save(row, obj)
        return

    machine = load_dict("Machine", namespace, owner_of(obj, "Machine"))
    if machine is None:
        set_condition(status, "Ready", False, "WaitingForMachineOwnerReference", "no owning Machine yet", now)
        ctx.save(row, obj)
        return
    cluster_name = (machine.get("spec") or {}).get("clusterName", "")
    cluster = load_dict("Cluster", namespace, cluster_name)

    if not host_name:
        if not (machine["spec"].get("bootstrap") or {}).get("dataSecretName"):
            reason, message = "WaitingForBootstrapData", "waiting for the bootstrap data (the control plane)"
        elif not _initialization(cluster, "infrastructureProvisioned"):
            reason, message = "WaitingForClusterInfrastructure", "waiting for the cluster infrastructure"
        else:
            host_row, why = choose_host(ctx, obj, (machine.get("spec") or {}).get("failureDomain", ""))
            if host_row is not None:
                _bind(ctx, obj, host_row, machine, cluster_name)
                host_name = host_row.name
                reason, message = "", ""
            else:
                reason, message = "NoAvailableHost", why
        if reason:
            set_condition(status, "AssociateBMH", False, reason, message, now, generation)
            set_condition(status, "Ready", False, reason, message, now, generation)
            ctx.save(row, obj)
            return
        set_condition(status, "AssociateBMH", True, "Associated", f"associated with {host_name}", now, generation)

    host_row = store.load("BareMetalHost", namespace, host_name)
    if host_row is None:
        set_condition(status, "Ready", False, "HostNotFound", f"BareMetalHost {host_name} not found", now, generation)
        ctx.save(row, obj)
        return
    host = store.to_dict(host_row)
    consumer = (host.get("spec") or {}).get("consumerRef") or {}
    if consumer.get("name") != meta["name"]:
        set_condition(
            status, "Ready", False, "HostConsumedElsewhere", f"{host_name} is consumed by another machine", now
        )
        ctx.save(row, obj)
        return
    dirty = False
    user_data = (status.get("userData") or {}).get("name")
    if user_data and not (host["spec"].get("image") or host["spec"].get("customDeploy")):
        _set_host_spec(host, obj, user_data)
        dirty = True
    # CAPM3 pauses the hosts of a paused Cluster with its own value (metal3-facts.md §1).
    paused = bool(((cluster or {}).get("spec") or {}).get("paused"))
    annotations = host["metadata"].setdefault("annotations", {})
    if paused and ANNOTATION_PAUSED not in annotations:
        annotations[ANNOTATION_PAUSED] = CAPM3_PAUSE_VALUE
        dirty = True
    elif not paused and annotations.get(ANNOTATION_PAUSED) == CAPM3_PAUSE_VALUE:
        annotations.pop(ANNOTATION_PAUSED)
        dirty = True
    if dirty:
        ctx.save(host_row, host)
    state = ((host.get("status") or {}).get("provisioning") or {}).get("state", "")
    if state == "provisioned" or _initialization(obj, "provisioned"):
        spec["providerID"] = f"metal3://{namespace}/{host_name}/{meta['name']}"
        status["initialization"] = {"provisioned": True}
        status["addresses"] = _addresses(host)
        set_condition(status, "Ready", True, "Ready", "", now, generation)
    else:
        status["initialization"] = {"provisioned": False}
        set_condition(
            status, "Ready", False, "WaitingForHost", f"{host_name} is {state or 'not registered'}", now, generation
        )
    ctx.save(row, obj)


# --------------------------------------------------------------------------- MachineHealthCheck


def reconcile_machinehealthcheck(row: LabObject, ctx: Ctx) -> None:
    """Counts only: the lab's nodes never go unhealthy on their own, so nothing is remediated."""
    obj = store.to_dict(row)
    meta, spec = obj["metadata"], obj.get("spec") or {}
    status = _status(obj)
    cluster = load_dict("Cluster", meta["namespace"], spec.get("clusterName", ""))
    if cluster is not None:
        ensure_owner(obj, cluster, controller=False)  # CAPI: the health check goes with its cluster
    try:
        selector = labels.from_label_selector(spec.get("selector"))
    except ValueError:
        selector = None
    targets = []
    healthy = 0
    if selector is not None:
        for machine in store.rows("Machine", meta["namespace"]):
            if machine.deletion_timestamp or machine.labels.get(CLUSTER_NAME) != spec.get("clusterName"):
                continue
            if labels.matches(selector, machine.labels):
                targets.append(machine.name)
                healthy += 1 if (machine.status or {}).get("nodeRef") else 0
    expected = len(targets)
    limit = str(((spec.get("remediation") or {}).get("triggerIf") or {}).get("unhealthyLessThanOrEqualTo", "100%"))
    allowed = math.floor(expected * float(limit[:-1] or 0) / 100) if limit.endswith("%") else int(limit or 0)
    status.update(
        expectedMachines=expected,
        currentHealthy=healthy,
        remediationsAllowed=max(allowed, 0),
        observedGeneration=meta["generation"],
    )
    if targets:
        status["targets"] = sorted(targets)
    else:
        status.pop("targets", None)
    set_condition(status, "RemediationAllowed", True, "RemediationAllowed", "", ctx.now, meta["generation"])
    obj["status"] = status
    ctx.save(row, obj)
