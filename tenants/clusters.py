"""Writes for clusters and node pools (STYLE.md §1): one service per operation, used by the
pages, the API and the demo seed alike. Each checks the rules, saves, writes the audit row in
the same transaction and queues the reconcile with ``transaction.on_commit``.

* :func:`cluster_create` — a hosted control plane (no servers): a name, a Kubernetes version
  from the operators' list, control-plane replicas, add-ons. The control-plane address comes
  from ``TEAPOT_CONTROL_PLANE_ADDRESSES`` (first free; a partial unique constraint makes two
  concurrent creations unable to share one).
* :func:`node_pool_create` / :func:`node_pool_update` / :func:`node_pool_scale` — a quota class,
  an optional extra requirement and placement policy, an OS image, a cleaning policy, a workload
  class and a size (fixed, or autoscaled between a minimum and a maximum). Sizes are checked
  against the tenant's quota (:func:`tenants.quota.pool_size_refusal`).
* :func:`cluster_delete` / :func:`node_pool_delete` — mark for deletion; the reconcile removes
  the objects from the management cluster and releases the hosts (the pool's cleaning policy
  decides how their disks are cleaned).

Refusals are :class:`~django.core.exceptions.ValidationError` keyed by field.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from hosts.allocator import Policy, PolicyError
from hosts.models import FleetSettings
from hosts.requirements import Requirement, RequirementError
from teapot_portal.gateway import builders
from tenants.audit import audit_record
from tenants.models import (
    CLUSTER_NAME_MAX,
    POOL_NAME_MAX,
    RESERVED_NAMES,
    TENANT_SLUG,
    Cluster,
    KubernetesVersion,
    NodePool,
    OsImage,
    QuotaClass,
    Tenant,
)

log = logging.getLogger(__name__)

MAX_POOL_SIZE = 500


def _name(value: str, field: str, max_length: int, what: str) -> str:
    value = (value or "").strip().lower()
    if not value:
        raise ValidationError({field: f"Give the {what} a name."})
    if len(value) > max_length:
        raise ValidationError({field: f"A {what} name is at most {max_length} characters."})
    try:
        TENANT_SLUG(value)
    except ValidationError as exc:
        raise ValidationError({field: exc.messages[0]}) from exc
    if value in RESERVED_NAMES:
        raise ValidationError({field: f"{value!r} is a word the pages' addresses use; choose another."})
    return value


# ----------------------------------------------------------------------------------- snapshots


def cluster_snapshot(cluster: Cluster) -> dict[str, Any]:
    return {
        "name": cluster.name,
        "kubernetes_version": str(cluster.kubernetes_version),
        "control_plane_replicas": cluster.control_plane_replicas,
        "addons": list(cluster.addons),
        "endpoint_host": cluster.endpoint_host,
        "phase": cluster.phase,
    }


def node_pool_snapshot(pool: NodePool) -> dict[str, Any]:
    return {
        "name": pool.name,
        "quota_class": pool.quota_class.name,
        "requirement": pool.requirement,
        "policy": pool.policy,
        "image": pool.image.name,
        "cleaning": pool.cleaning,
        "workload_class": pool.workload_class,
        "replicas": None if pool.autoscaled else pool.replicas,
        "autoscale_min": pool.autoscale_min,
        "autoscale_max": pool.autoscale_max,
        "phase": pool.phase,
    }


# ----------------------------------------------------------------------------------- reconciles


def reconcile_cluster_after_commit(cluster_id: int) -> None:
    from tenants.tasks import cluster_reconcile_task

    transaction.on_commit(lambda: cluster_reconcile_task.delay(cluster_id))


def reconcile_pool_after_commit(pool_id: int) -> None:
    from tenants.tasks import node_pool_reconcile_task

    transaction.on_commit(lambda: node_pool_reconcile_task.delay(pool_id))


# ----------------------------------------------------------------------------------- clusters


def _version(value: KubernetesVersion | str | None) -> KubernetesVersion:
    if isinstance(value, KubernetesVersion):
        version = value
    elif value:
        version = KubernetesVersion.objects.filter(version=str(value).strip()).first()
    else:
        version = KubernetesVersion.objects.filter(is_default=True, available=True).first()
    if version is None or not version.available:
        offered = ", ".join(KubernetesVersion.objects.filter(available=True).values_list("version", flat=True))
        raise ValidationError({"kubernetes_version": f"Choose one of the offered versions: {offered or 'none yet'}."})
    return version


def _addons(addons) -> list[str]:
    chosen = sorted({str(a).strip().lower() for a in (addons or []) if str(a).strip()})
    unknown = [a for a in chosen if a not in Cluster.Addon.values]
    if unknown:
        raise ValidationError(
            {"addons": f"Unknown add-on {unknown[0]!r}; choose from {', '.join(Cluster.Addon.values)}."}
        )
    return chosen


def _free_endpoint() -> str:
    taken = set(Cluster.objects.live().exclude(endpoint_host=None).values_list("endpoint_host", flat=True))
    try:
        return builders.allocate_address(settings.TEAPOT_CONTROL_PLANE_ADDRESSES, taken)
    except builders.BuildError as exc:
        raise ValidationError({"__all__": f"No control-plane address is free: {exc}. Ask an operator."}) from exc


def cluster_create(
    *,
    tenant: Tenant,
    name: str,
    kubernetes_version: KubernetesVersion | str | None = None,
    control_plane_replicas: int = 2,
    addons=(),
    actor=None,
) -> Cluster:
    """A cluster with a hosted control plane and no workers yet."""
    name = _name(name, "name", CLUSTER_NAME_MAX, "cluster")
    version = _version(kubernetes_version)
    try:
        replicas = int(control_plane_replicas)
    except (TypeError, ValueError) as exc:
        raise ValidationError({"control_plane_replicas": "A whole number from 1 to 5."}) from exc
    if not 1 <= replicas <= 5:
        raise ValidationError({"control_plane_replicas": "A whole number from 1 to 5."})
    chosen = _addons(addons)
    if Cluster.objects.live().filter(tenant=tenant, name=name).exists():
        raise ValidationError({"name": f"{tenant.slug} already has a cluster named {name}."})
    for _attempt in range(3):
        try:
            with transaction.atomic():
                cluster = Cluster.objects.create(
                    tenant=tenant,
                    name=name,
                    kubernetes_version=version,
                    control_plane_replicas=replicas,
                    addons=chosen,
                    endpoint_host=_free_endpoint(),
                    created_by=actor if getattr(actor, "pk", None) else None,
                )
                audit_record(
                    actor=actor, action="cluster.create", target=cluster, tenant=tenant, after=cluster_snapshot(cluster)
                )
                reconcile_cluster_after_commit(cluster.pk)
            log.info("cluster created", extra={"tenant": tenant.slug, "cluster": name})
            return cluster
        except IntegrityError as exc:
            if "cluster_live_name_unique" in str(exc):
                raise ValidationError({"name": f"{tenant.slug} already has a cluster named {name}."}) from exc
            if "cluster_live_endpoint_unique" not in str(exc):
                raise
            # Another creation took the same address between our read and our write: pick again.
    raise ValidationError({"__all__": "Could not reserve a control-plane address; try again."})


def cluster_delete(*, cluster: Cluster, actor=None) -> Cluster:
    """Delete the cluster: its pools first (hosts released), then its control plane."""
    with transaction.atomic():
        cluster = Cluster.objects.select_for_update().get(pk=cluster.pk)
        if cluster.deleted_at is not None or cluster.phase == Cluster.Phase.DELETING:
            return cluster
        before = cluster_snapshot(cluster)
        cluster.phase = Cluster.Phase.DELETING
        cluster.message = "Deleting: node pools first, then the control plane."
        cluster.save(update_fields=["phase", "message", "updated_at"])
        for pool in NodePool.objects.live().filter(cluster=cluster).exclude(phase=NodePool.Phase.DELETING):
            pool.phase = NodePool.Phase.DELETING
            pool.save(update_fields=["phase", "updated_at"])
            reconcile_pool_after_commit(pool.pk)
        audit_record(
            actor=actor,
            action="cluster.delete",
            target=cluster,
            tenant=cluster.tenant,
            before=before,
            after=cluster_snapshot(cluster),
        )
        reconcile_cluster_after_commit(cluster.pk)
    return cluster


# ----------------------------------------------------------------------------------- node pools


def _quota_class(value: QuotaClass | str | None) -> QuotaClass:
    if isinstance(value, QuotaClass):
        return value
    found = QuotaClass.objects.filter(name=str(value or "").strip()).first()
    if found is None:
        offered = ", ".join(QuotaClass.objects.values_list("name", flat=True))
        raise ValidationError({"quota_class": f"Choose a class: {offered or 'none defined yet'}."})
    return found


def _image(value: OsImage | str | None, version: KubernetesVersion) -> OsImage:
    image = value if isinstance(value, OsImage) else OsImage.objects.filter(name=str(value or "").strip()).first()
    if image is None or not image.available:
        offered = ", ".join(OsImage.objects.filter(available=True).values_list("name", flat=True))
        raise ValidationError({"image": f"Choose one of the offered images: {offered or 'none yet'}."})
    if image.kubernetes_version_id is not None and image.kubernetes_version_id != version.pk:
        raise ValidationError(
            {"image": f"{image.name} carries Kubernetes {image.kubernetes_version}; the cluster runs {version}."}
        )
    return image


def _requirement(value) -> dict:
    if value in (None, "", {}):
        return {}
    try:
        requirement = Requirement.parse(value) if isinstance(value, str) else Requirement.from_json(value)
    except RequirementError as exc:
        raise ValidationError({"requirement": str(exc)}) from exc
    return requirement.to_json()


def _policy(value) -> dict:
    if value in (None, "", {}):
        return {}
    try:
        return Policy.from_json(value, FleetSettings.load().topology_levels).to_json()
    except (PolicyError, TypeError, AttributeError) as exc:
        raise ValidationError({"policy": str(exc)}) from exc


def _whole(value, field: str, *, allow_none: bool = False) -> int | None:
    if value is None or value == "":
        if allow_none:
            return None
        raise ValidationError({field: "A whole number is needed."})
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError({field: "A whole number is needed."}) from exc
    if isinstance(value, float) and value != number:
        raise ValidationError({field: "A whole number is needed."})
    if not 0 <= number <= MAX_POOL_SIZE:
        raise ValidationError({field: f"Between 0 and {MAX_POOL_SIZE}."})
    return number


def _size(replicas, autoscale_min, autoscale_max) -> tuple[int, int | None, int | None]:
    low = _whole(autoscale_min, "autoscale_min", allow_none=True)
    high = _whole(autoscale_max, "autoscale_max", allow_none=True)
    if (low is None) != (high is None):
        raise ValidationError({"autoscale_max": "Autoscaling needs both a minimum and a maximum."})
    if low is not None:
        if low > high:
            raise ValidationError({"autoscale_max": "The maximum must be at least the minimum."})
        if replicas not in (None, ""):
            raise ValidationError({"replicas": "An autoscaled pool has no fixed size: leave it to the autoscaler."})
        return low, low, high
    return _whole(replicas, "replicas"), None, None


def _cleaning(value: str, requirement: Requirement) -> str:
    cleaning = (value or NodePool.Cleaning.STANDARD).strip()
    if cleaning not in NodePool.Cleaning.values:
        raise ValidationError({"cleaning": f"Choose {' or '.join(NodePool.Cleaning.values)}."})
    if cleaning == NodePool.Cleaning.KEY_ERASE and FleetSettings.load().minimum_cleaning == "standard":
        raise ValidationError({"cleaning": "Operators require standard cleaning for every pool."})
    return cleaning


def _workload(value: str) -> str:
    workload = (value or NodePool.WorkloadClass.ON_DEMAND).strip()
    if workload not in NodePool.WorkloadClass.values:
        raise ValidationError({"workload_class": f"Choose {', '.join(NodePool.WorkloadClass.values)}."})
    return workload


def node_pool_create(
    *,
    cluster: Cluster,
    name: str,
    quota_class: QuotaClass | str,
    image: OsImage | str,
    requirement=None,
    policy=None,
    cleaning: str = NodePool.Cleaning.STANDARD,
    workload_class: str = NodePool.WorkloadClass.ON_DEMAND,
    replicas=0,
    autoscale_min=None,
    autoscale_max=None,
    actor=None,
) -> NodePool:
    from tenants.quota import pool_size_refusal

    if cluster.deleted_at is not None or cluster.phase == Cluster.Phase.DELETING:
        raise ValidationError({"__all__": "The cluster is being deleted."})
    name = _name(name, "name", POOL_NAME_MAX, "node pool")
    klass = _quota_class(quota_class)
    chosen_image = _image(image, cluster.kubernetes_version)
    extra = _requirement(requirement)
    try:
        effective = klass.get_requirement().merge(Requirement.from_json(extra)) if extra else klass.get_requirement()
    except RequirementError as exc:
        raise ValidationError({"requirement": str(exc)}) from exc
    placement = _policy(policy)
    size, low, high = _size(replicas, autoscale_min, autoscale_max)
    workload = _workload(workload_class)
    chosen_cleaning = _cleaning(cleaning, effective)
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=cluster.tenant_id)  # quota checks are serialised per tenant
        if NodePool.objects.live().filter(cluster=cluster, name=name).exists():
            raise ValidationError({"name": f"{cluster.name} already has a node pool named {name}."})
        refusal = pool_size_refusal(
            tenant=tenant, quota_class=klass, workload_class=workload, size=size, ceiling=high, pool=None
        )
        if refusal:
            raise ValidationError({"autoscale_max" if high is not None else "replicas": refusal})
        pool = NodePool.objects.create(
            cluster=cluster,
            name=name,
            uid=uuid.uuid4().hex,
            quota_class=klass,
            requirement=extra,
            policy=placement,
            image=chosen_image,
            cleaning=chosen_cleaning,
            workload_class=workload,
            replicas=size if low is None else 0,
            autoscale_min=low,
            autoscale_max=high,
            desired=size,
            created_by=actor if getattr(actor, "pk", None) else None,
        )
        audit_record(actor=actor, action="node_pool.create", target=pool, tenant=tenant, after=node_pool_snapshot(pool))
        reconcile_pool_after_commit(pool.pk)
    return pool


def node_pool_scale(*, pool: NodePool, replicas=None, autoscale_min=None, autoscale_max=None, actor=None) -> NodePool:
    """A new size: fixed (``replicas``; 0 scales to zero and keeps the pool) or autoscaled
    bounds. Switching between fixed and autoscaled is allowed."""
    from tenants.quota import pool_size_refusal

    size, low, high = _size(replicas, autoscale_min, autoscale_max)
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=pool.cluster.tenant_id)
        pool = NodePool.objects.select_for_update().select_related("quota_class", "image").get(pk=pool.pk)
        if pool.deleted_at is not None or pool.phase == NodePool.Phase.DELETING:
            raise ValidationError({"__all__": "The node pool is being deleted."})
        before = node_pool_snapshot(pool)
        refusal = pool_size_refusal(
            tenant=tenant,
            quota_class=pool.quota_class,
            workload_class=pool.workload_class,
            size=size,
            ceiling=high,
            pool=pool,
        )
        if refusal:
            raise ValidationError({"autoscale_max" if high is not None else "replicas": refusal})
        pool.replicas = size if low is None else 0
        pool.autoscale_min, pool.autoscale_max = low, high
        if low is None:
            pool.desired = size
        else:
            pool.desired = min(max(pool.desired, low), high)
        if pool.phase in (NodePool.Phase.READY, NodePool.Phase.FAILED):
            pool.phase = NodePool.Phase.SCALING
        pool.message = ""
        pool.save()
        audit_record(
            actor=actor,
            action="node_pool.scale",
            target=pool,
            tenant=tenant,
            before=before,
            after=node_pool_snapshot(pool),
        )
        reconcile_pool_after_commit(pool.pk)
    return pool


def node_pool_update(*, pool: NodePool, actor=None, **fields) -> NodePool:
    """Change the image, cleaning, placement policy or extra requirement (new hosts follow
    them; hosts the pool holds are kept)."""
    allowed = {"image", "cleaning", "policy", "requirement"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValidationError({sorted(unknown)[0]: "This cannot be changed on an existing pool."})
    with transaction.atomic():
        pool = (
            NodePool.objects.select_for_update()
            .select_related("cluster__tenant", "quota_class", "image")
            .get(pk=pool.pk)
        )
        before = node_pool_snapshot(pool)
        if "image" in fields:
            pool.image = _image(fields["image"], pool.cluster.kubernetes_version)
        if "requirement" in fields:
            pool.requirement = _requirement(fields["requirement"])
            try:
                pool.get_requirement()
            except RequirementError as exc:
                raise ValidationError({"requirement": str(exc)}) from exc
        if "policy" in fields:
            pool.policy = _policy(fields["policy"])
        if "cleaning" in fields:
            pool.cleaning = _cleaning(fields["cleaning"], pool.get_requirement())
        pool.save()
        audit_record(
            actor=actor,
            action="node_pool.update",
            target=pool,
            tenant=pool.cluster.tenant,
            before=before,
            after=node_pool_snapshot(pool),
        )
        reconcile_pool_after_commit(pool.pk)
    return pool


def node_pool_delete(*, pool: NodePool, actor=None) -> NodePool:
    with transaction.atomic():
        pool = (
            NodePool.objects.select_for_update()
            .select_related("cluster__tenant", "quota_class", "image")
            .get(pk=pool.pk)
        )
        if pool.deleted_at is not None or pool.phase == NodePool.Phase.DELETING:
            return pool
        before = node_pool_snapshot(pool)
        pool.phase = NodePool.Phase.DELETING
        pool.message = "Deleting: releasing its hosts."
        pool.save(update_fields=["phase", "message", "updated_at"])
        audit_record(
            actor=actor,
            action="node_pool.delete",
            target=pool,
            tenant=pool.cluster.tenant,
            before=before,
            after=node_pool_snapshot(pool),
        )
        reconcile_pool_after_commit(pool.pk)
    return pool


def mark_deleted(obj: Cluster | NodePool) -> None:
    """The reconcile's last step: the object is gone from the management cluster."""
    type(obj).objects.filter(pk=obj.pk).update(
        deleted_at=timezone.now(), phase=type(obj).Phase.DELETED, message="Deleted."
    )
