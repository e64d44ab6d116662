"""Provisioning: clusters and node pools reconciled against the management cluster.

Level-triggered and idempotent (DESIGN.md, STYLE.md §7): each reconcile reads what the database
wants and what the management cluster has, and changes only the difference. Running one twice
changes nothing; a worker killed half-way loses nothing (the next run finds the difference).

**Cluster** (:func:`cluster_reconcile`): apply Cluster + KamajiControlPlane + Metal3Cluster
(hosted control plane, no servers); mirror the control plane's state into ``phase``. A
cluster being deleted waits for its pools, then deletes its objects.

**Node pool** (:func:`node_pool_reconcile`), in order:

1. **Read.** The pool's BareMetalHosts (by the ``teapot.io/node-pool`` label, plus any the pool
   still holds without it), the Machines of its MachineDeployment and the host each is bound to.
2. **Desired size.** Fixed pools: ``replicas``. Autoscaled pools: the MachineDeployment's
   ``spec.replicas`` (the Cluster Autoscaler's say) clamped to ``[min, quota ceiling]``. Plus
   the hosts of the pool's reservations that are preparing or active, and of its pre-empted
   ones whose hosts still serve their notice (:class:`_Reserved`) — on an autoscaled pool
   Teapot scales the MachineDeployment by those itself (:func:`_autoscaled_size`). A pool
   being deleted: 0.
3. **Follow each held host** (:class:`~tenants.models.PoolHost`): bound → provisioning → ready
   (a Machine with a Node); a host CAPI lets go (scale-down, deletion, remediation) → releasing
   as soon as its Machine is deleting, its pool label removed so CAPM3 cannot bind it again
   when it turns available; released once the BareMetalHost is
   ``available`` with no consumer — then its claim ends (or passes to the pool that pre-empted
   it). A host that fails to provision is replaced: its label removed, its Machine deleted
   (Cluster API makes a new one, which waits for a host), the host put in maintenance with the
   error for an operator; after ``FleetSettings.provisioning_attempts`` replacements the pool
   fails with the reason on its page.
4. **Pre-emption due.** Hosts whose notice (``preempt_at``) has passed leave: label removed,
   Machine deleted, host cleaned per the pool's policy, then handed to the pool that needed it.
5. **Surplus.** More hosts than desired: hosts not bound yet are released at once (borrowed
   before guaranteed); bound ones go when Cluster API deletes their Machines (it scales the
   MachineDeployment down itself).
6. **Allocate.** Fewer hosts than desired: first for the pool's preparing and active
   reservations (:func:`_allocate_reserved`): their planned hosts (the host plan) are claimed
   exactly when free; a planned host still cleaning is waited for; one held by another pool's
   borrowed or pre-emptible use is taken back with notice; one that cannot serve (maintenance,
   error, held by a guarantee) is dropped from the plan and replaced by a normal selection;
   a promised booking (guaranteed or on demand: admission counted neither borrowed nor spot use)
   that still lacks hosts takes them back from borrowed or pre-emptible use
   (:func:`_reclaim_for`), least disruptive first. Then the standing part: under the
   tenant's row lock, the quota budget
   (:func:`tenants.quota.allocation_budget`) caps how many; the allocator selects and claims
   them atomically (:func:`hosts.selection.hosts_claim`); each is marked guaranteed (within the
   tenant's guarantee) or borrowed. When the fleet has no free host and the need is within the
   tenant's guarantee, borrowed or pre-emptible hosts of other pools are chosen as victims —
   least disruptive first — and given notice (:func:`_preempt_for`).
7. **Guaranteed marks.** Within a tenant and class, the hosts marked guaranteed are exactly
   ``min(guaranteed, non-pre-emptible hosts held)`` (hosts of pre-emptible bookings are
   pre-emptible) — a borrowed host becomes guaranteed when a
   guaranteed one leaves (and any notice on it is withdrawn).
8. **Labels.** Every held host carries ``teapot.io/node-pool=<uid>`` and the tenant label; no
   other host carries the pool's label.
9. **Apply**: when the pool shrinks and bookings are involved, first mark the Machines that
   go (``cluster.x-k8s.io/delete-machine``: hosts another pool's booking needs, then those of
   this pool's ended bookings — never one a running booking uses while another can go); then
   the Metal3MachineTemplate, KubeadmConfigTemplate, MachineDeployment (replicas =
   desired; autoscaled: min/max annotations clamped by quota, no replicas, scale-from-zero
   capacity from the host the pool would get) and MachineHealthCheck; stale templates deleted.
   While the pool's only work is a booking that has not started (preparing, none active, no
   standing replicas) its nodes carry the ``teapot.io/reservation-pending:NoSchedule`` taint,
   so the hosts that are Ready early take no pods until the start.
10. **Status**: ready/desired, phase and a message in words.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from hosts import topology
from hosts.curation import hosts_set_maintenance
from hosts.handoff import METADATA_SECONDS
from hosts.models import FleetSettings, Host, HostClaim
from hosts.requirements import RequirementError
from hosts.selection import hosts_claim, hosts_claim_ids, hosts_select
from teapot_portal.gateway import builders, kinds
from teapot_portal.gateway.base import Gateway, HostRecord, NotFound
from teapot_portal.gateway.factory import get_gateway
from tenants.audit import audit_record
from tenants.clusters import mark_deleted
from tenants.models import Cluster, NodePool, PoolHost, Tenant

log = logging.getLogger(__name__)

LOCK_RECONCILE_ALL = 20
# "Now" for the reconcile's decisions (notices, allocation times, bookings due): the wall clock,
# or the time a caller drives (the lab's simulated clock in tests) — see node_pool_reconcile.
_NOW: ContextVar[datetime | None] = ContextVar("teapot_provisioning_now", default=None)


def _now() -> datetime:
    return _NOW.get() or timezone.now()


@contextlib.contextmanager
def _at(now: datetime | None):
    token = _NOW.set(now) if now is not None else None
    try:
        yield
    finally:
        if token is not None:
            _NOW.reset(token)


LIVE = (PoolHost.State.ALLOCATED, PoolHost.State.PROVISIONING, PoolHost.State.READY)
CLEANING_MODE = {NodePool.Cleaning.STANDARD: "metadata", NodePool.Cleaning.KEY_ERASE: "disabled"}
TAINT_RESERVATION_PENDING = builders.Taint(key="teapot.io/reservation-pending", effect="NoSchedule")
# A standing pool does not take a host a booking of another pool needs within this (plus the
# notice and the hand-off): it would be reclaimed before it had done any work.
STANDING_HORIZON = timedelta(hours=1)
POOL_KINDS = (
    kinds.MACHINEHEALTHCHECK,
    kinds.MACHINEDEPLOYMENT,
    kinds.METAL3MACHINETEMPLATE,
    kinds.KUBEADMCONFIGTEMPLATE,
)


# ============================================================================ clusters


def cluster_spec(cluster: Cluster) -> builders.ClusterSpec:
    return builders.ClusterSpec(
        tenant=cluster.tenant.slug,
        name=cluster.name,
        kubernetes_version=cluster.kubernetes_version.version,
        endpoint_host=str(cluster.endpoint_host),
        control_plane_replicas=cluster.control_plane_replicas,
        addons=tuple(cluster.addons),
    )


def _cluster_state(status: dict) -> tuple[str, bool, str]:
    """(phase, control plane ready, message) from the Cluster's status."""
    initialization = status.get("initialization") or {}
    initialized = bool(initialization.get("controlPlaneInitialized"))
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    available = conditions.get("ControlPlaneAvailable") or conditions.get("Available") or {}
    ready = initialized and available.get("status", "True") != "False"
    failing = [
        c.get("message")
        for c in conditions.values()
        if c.get("status") == "False" and c.get("reason", "").endswith("Failed")
    ]
    if ready:
        return Cluster.Phase.READY, True, ""
    if failing:
        return Cluster.Phase.PROVISIONING, False, failing[0][:500]
    return Cluster.Phase.PROVISIONING, False, "The hosted control plane is starting (about 3 minutes)."


def cluster_reconcile(cluster_id: int, *, gateway: Gateway | None = None) -> str:
    cluster = Cluster.objects.select_related("tenant", "kubernetes_version").filter(pk=cluster_id).first()
    if cluster is None:
        log.info("cluster gone; nothing to reconcile", extra={"cluster_id": cluster_id})
        return "gone"
    if cluster.deleted_at is not None:
        return "deleted"
    gw = gateway or get_gateway()
    name = cluster.object_name
    if cluster.phase == Cluster.Phase.DELETING:
        pending = NodePool.objects.live().filter(cluster=cluster).count()
        if pending:
            Cluster.objects.filter(pk=cluster.pk).update(
                message=f"Deleting: waiting for {pending} node pool(s) to release their hosts.",
                reconciled_at=timezone.now(),
            )
            return "waiting for pools"
        remaining = False
        for kind in (kinds.CLUSTER, kinds.KAMAJICONTROLPLANE, kinds.METAL3CLUSTER):
            try:
                gw.get(kind, name)
            except NotFound:
                continue
            remaining = True
            gw.delete(kind, name)
        if remaining:
            Cluster.objects.filter(pk=cluster.pk).update(
                message="Deleting: the control plane is shutting down.", reconciled_at=timezone.now()
            )
            return "deleting"
        mark_deleted(cluster)
        audit_record(actor=None, action="cluster.deleted", target=cluster, tenant=cluster.tenant)
        return "deleted"
    gw.apply_cluster(cluster_spec(cluster))
    try:
        status = gw.cluster_status(name)
    except NotFound:
        status = {}
    phase, ready, message = _cluster_state(status)
    Cluster.objects.filter(pk=cluster.pk).update(
        phase=phase, control_plane_ready=ready, message=message, reconciled_at=timezone.now()
    )
    if phase != cluster.phase:
        log.info("cluster phase", extra={"cluster": str(cluster), "phase": phase})
    return phase


# ============================================================================ node pools


@dataclass
class _View:
    """What the management cluster says about one pool's hosts and machines."""

    hosts: dict[str, HostRecord]  # BMH name -> record (labelled for the pool, or held by it)
    bound: dict[str, str]  # BMH name -> Machine name (machines of this pool's MachineDeployment)
    nodes: set[str]  # BMH names whose Machine has a Node
    machines: int
    md: dict | None
    unbound: list[str]  # Machines waiting for a host
    marked: set[str]  # Machines marked to go first on scale-down


def _read(gw: Gateway, pool: NodePool, held: Iterable[PoolHost]) -> _View:
    records, _ = gw.list_hosts(f"{builders.LABEL_NODE_POOL}={pool.uid}")
    hosts = {r.name: r for r in records}
    for ph in held:
        if ph.host.name not in hosts:
            with contextlib.suppress(NotFound):
                hosts[ph.host.name] = gw.get_host(ph.host.name)
    bound, nodes, machines, unbound, marked = {}, set(), 0, [], set()
    for binding in gw.machine_bindings(pool.cluster.object_name):
        if binding.deployment != pool.object_name:
            continue
        if binding.deleting:
            # Cluster API is letting its host go (it deprovisions, then CAPM3 frees it): the host
            # is no longer the pool's, and must be unlabelled now — once available it would be
            # bound again at once by a Machine waiting for a host (step 3).
            continue
        machines += 1
        if binding.marked:
            marked.add(binding.machine)
        if not binding.host:
            unbound.append(binding.machine)
        else:
            bound[binding.host] = binding.machine
            if binding.node:
                nodes.add(binding.host)
    try:
        md = gw.get(kinds.MACHINEDEPLOYMENT, pool.object_name)
    except NotFound:
        md = None
    return _View(hosts=hosts, bound=bound, nodes=nodes, machines=machines, md=md, unbound=unbound, marked=marked)


def _desired(pool: NodePool, view: _View) -> int:
    """The pool's own size, without its bookings: ``replicas``, or for an autoscaled pool the
    autoscaler's part of ``spec.replicas`` (less the bookings' part Teapot recorded, see
    :func:`_autoscaled_size`) clamped to ``[min, quota ceiling]``."""
    from tenants.quota import autoscale_ceiling

    if pool.phase == NodePool.Phase.DELETING:
        return 0
    if not pool.autoscaled:
        return pool.replicas
    ceiling = max(pool.autoscale_min, autoscale_ceiling(pool))
    wanted = ((view.md or {}).get("spec") or {}).get("replicas")
    if wanted is None:
        wanted = pool.desired or pool.autoscale_min
    return min(max(int(wanted) - _reserved_replicas(view.md), pool.autoscale_min), ceiling)


def _reserved_replicas(md: dict | None) -> int:
    """How many of the MachineDeployment's replicas are the bookings' (Teapot's annotation)."""
    annotations = ((md or {}).get("metadata") or {}).get("annotations") or {}
    try:
        return max(0, int(annotations.get(builders.RESERVED_REPLICAS) or 0))
    except ValueError:
        return 0


def _autoscaled_size(gw: Gateway, pool: NodePool, view: _View, own: int, booked: int) -> int:
    """Step 2 for an autoscaled pool: its size, ``own`` (the autoscaler's part, :func:`_desired`)
    plus ``booked``. The autoscaler owns ``spec.replicas``; bookings add their hosts on top of
    its part, and Teapot scales the MachineDeployment by them itself — up when a booking starts
    preparing, down at its end (its Machines marked to go, see :func:`_mark_leaving`) — recording
    how many replicas are the bookings' in the ``teapot.io/reserved-replicas`` annotation,
    written with ``spec.replicas`` in one patch, so the autoscaler's part is always
    ``replicas − reserved``. Raised bounds alone would not do: the autoscaler does not scale a
    node group up to a raised minimum."""
    md = view.md
    previous = _reserved_replicas(md)
    if md is None or (previous == 0 and booked == 0):
        return own + booked  # no booking involved: the autoscaler alone decides
    replicas = (md.get("spec") or {}).get("replicas")
    current = int(replicas) if replicas is not None else (pool.desired or pool.autoscale_min)
    target = own + booked
    if target != current or previous != booked:
        if target < current:
            _mark_leaving(gw, pool, target, view, teapot_scales=True)
        with contextlib.suppress(NotFound):
            gw.scale_for_bookings(pool.object_name, target, booked)
    return target


def _failed(record: HostRecord | None, state: str) -> bool:
    """A host that cannot become a worker: a provisioning error, or any error (a BMC that stopped
    answering, a power failure) before it serves a Node. A ready worker whose BMC fails keeps
    running: that is an operator's matter, not the pool's."""
    if record is None or record.operational_status != "error":
        return False
    return "provision" in record.error_type or state != PoolHost.State.READY


def _released_by_bmo(record: HostRecord | None) -> bool:
    """The host is back in the free pool as far as the management cluster goes."""
    return record is None or (record.provisioning_state == "available" and not record.consumer)


def _unlabel(gw: Gateway, name: str, uid: str, view: _View) -> None:
    record = view.hosts.get(name)
    if record is not None and record.labels.get(builders.LABEL_NODE_POOL) != uid:
        return
    try:
        view.hosts[name] = gw.set_host_labels(
            name, {builders.LABEL_NODE_POOL: None, builders.LABEL_TENANT: None, builders.LABEL_CLUSTER: None}
        )
    except NotFound:
        view.hosts.pop(name, None)


def _delete_machine(gw: Gateway, view: _View, host_name: str) -> None:
    machine = view.bound.get(host_name)
    if machine:
        gw.delete(kinds.MACHINE, machine)


def _end(ph: PoolHost, state: str, message: str = "") -> None:
    """The pool's hold on the host ends: its claim is released, or handed to the pool that
    pre-empted it (which then holds it: same transaction, so no one else can take it)."""
    now = _now()
    with transaction.atomic():
        ph = (
            PoolHost.objects.select_for_update(of=("self",))
            .select_related("claim", "preempted_for__cluster__tenant")
            .get(pk=ph.pk)
        )
        if ph.released_at is not None:
            return
        PoolHost.objects.filter(pk=ph.pk).update(state=state, released_at=now, message=message[:500])
        HostClaim.objects.filter(pk=ph.claim_id, released_at__isnull=True).update(released_at=now)
        taker = ph.preempted_for
        if (
            state == PoolHost.State.RELEASED
            and taker is not None
            and taker.deleted_at is None
            and taker.phase != NodePool.Phase.DELETING
            and ph.host_id not in _early_hosts(taker)
        ):
            claim = HostClaim.objects.create(
                host_id=ph.host_id, holder=taker.holder, tenant=taker.cluster.tenant.slug, claimed_at=now
            )
            PoolHost.objects.create(pool=taker, host_id=ph.host_id, claim=claim, guaranteed=True, allocated_at=now)
            from tenants.clusters import reconcile_pool_after_commit

            reconcile_pool_after_commit(taker.pk)


def _follow(gw: Gateway, pool: NodePool, held: list[PoolHost], view: _View, settings: FleetSettings) -> list[str]:
    """Step 3 and 4; returns events worth a message."""
    now = _now()
    notes = []
    for ph in held:
        name = ph.host.name
        record = view.hosts.get(name)
        bound = name in view.bound
        if ph.state == PoolHost.State.RELEASING:
            if not bound and _released_by_bmo(record):
                _end(ph, PoolHost.State.RELEASED, ph.message)
            continue
        if ph.preempt_at is not None and ph.preempt_at <= now:
            _unlabel(gw, name, pool.uid, view)
            _delete_machine(gw, view, name)
            taker = ph.preempted_for
            message = (
                f"Pre-empted for {taker.cluster.tenant.slug}/{taker.cluster.name}/{taker.name}"
                if taker
                else "Pre-empted"
            )
            if not bound and _released_by_bmo(record):
                _end(ph, PoolHost.State.RELEASED, message)
            else:
                PoolHost.objects.filter(pk=ph.pk).update(state=PoolHost.State.RELEASING, message=message)
            audit_record(
                actor=None,
                action="host.preempted",
                target_type="host",
                target_id=str(ph.host_id),
                target_repr=f"{name} from {pool}",
                tenant=pool.cluster.tenant,
                after={"pool": str(pool), "for": str(taker) if taker else ""},
            )
            notes.append(f"{name} pre-empted")
            continue
        if _failed(record, ph.state):
            _unlabel(gw, name, pool.uid, view)
            _delete_machine(gw, view, name)
            error = (record.error_message or record.error_type)[:300]
            hosts_set_maintenance(
                Host.objects.filter(pk=ph.host_id),
                on=True,
                reason=f"failed to provision for {pool}: {error}",
                actor=None,
            )
            _end(ph, PoolHost.State.FAILED, f"Failed to provision: {error}")
            NodePool.objects.filter(pk=pool.pk).update(replacements=F("replacements") + 1)
            pool.replacements += 1
            audit_record(
                actor=None,
                action="host.failed",
                target_type="host",
                target_id=str(ph.host_id),
                target_repr=f"{name} in {pool}",
                tenant=pool.cluster.tenant,
                after={"error": error, "replacements": pool.replacements},
            )
            notes.append(f"{name} failed to provision and was replaced")
            continue
        if bound:
            state = PoolHost.State.READY if name in view.nodes else PoolHost.State.PROVISIONING
            if state != ph.state:
                fields = {"state": state}
                if state == PoolHost.State.READY and ph.ready_at is None:
                    fields["ready_at"] = now
                PoolHost.objects.filter(pk=ph.pk).update(**fields)
                ph.state = state
        elif ph.state in (PoolHost.State.PROVISIONING, PoolHost.State.READY):
            # Cluster API let it go (scale-down, deletion, remediation): it must not be bound again.
            _unlabel(gw, name, pool.uid, view)
            if _released_by_bmo(record):
                _end(ph, PoolHost.State.RELEASED, "Released by Cluster API")
            else:
                PoolHost.objects.filter(pk=ph.pk).update(state=PoolHost.State.RELEASING, message="Cleaning")
    return notes


def _release_surplus(gw: Gateway, pool: NodePool, desired: int, view: _View) -> int:
    """Step 5: unbound hosts beyond the desired size go at once, borrowed before guaranteed."""
    live = list(
        PoolHost.objects.filter(pool=pool, released_at__isnull=True, state__in=LIVE, preempt_at__isnull=True)
        .select_related("host")
        .order_by("guaranteed", "-allocated_at")
    )
    surplus = len(live) - desired
    released = 0
    for ph in live:
        if surplus <= 0:
            break
        if ph.host.name in view.bound or ph.state != PoolHost.State.ALLOCATED:
            continue
        _unlabel(gw, ph.host.name, pool.uid, view)
        record = view.hosts.get(ph.host.name)
        if record is not None and record.consumer:
            continue  # CAPM3 took it meanwhile: Cluster API's scale-down will let it go
        _end(ph, PoolHost.State.RELEASED, "Released: the pool shrank")
        surplus -= 1
        released += 1
    return released


def _allocate(pool: NodePool, desired: int, settings: FleetSettings, reserved: _Reserved | None = None) -> str:
    """Step 6; returns what stops the pool from growing ("" when nothing does)."""
    from tenants.quota import allocation_budget

    with transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=pool.cluster.tenant_id)
        now = _now()
        live = PoolHost.objects.filter(pool=pool, released_at__isnull=True, state__in=LIVE)
        have = live.filter(preempt_at__isnull=True).count()
        # Hosts reclaimed early for a booking that has not started are not handed to the pool
        # (they wait, free, for its preparation): they are not on their way to it.
        incoming = (
            PoolHost.objects.filter(preempted_for=pool, released_at__isnull=True)
            .exclude(host_id__in=_early_hosts(pool))
            .count()
        )
        need = desired - have - incoming
        if need <= 0:
            return "" if not incoming else f"Waiting for {incoming} pre-empted host(s) to be handed over."
        notes: list[str] = []
        if reserved is not None and reserved.reservations:
            need, notes = _allocate_reserved(pool, tenant, reserved.reservations, need, settings, now)
            if need <= 0:
                return " ".join(notes)
        prefix = (" ".join(notes) + " ") if notes else ""
        budget = allocation_budget(tenant=tenant, quota_class=pool.quota_class, workload_class=pool.workload_class)
        take = min(need, budget.room)
        if take <= 0:
            return (
                f"{prefix}Quota: {tenant.slug} holds its maximum of {pool.quota_class.name} hosts; {need} more wanted."
            )
        try:
            requirement = pool.get_requirement()
        except RequirementError as exc:
            return f"{prefix}The pool's requirement cannot be used: {exc}"
        policy = _policy(pool, settings.topology_levels)
        key_erase = pool.cleaning == NodePool.Cleaning.KEY_ERASE
        occupied = _occupied(pool, settings.topology_levels)
        selection, claims = _claim_batch(
            pool,
            tenant,
            requirement,
            take,
            policy,
            key_erase=key_erase,
            occupied=occupied,
            exclude=_booked_soon(pool, now, settings),
        )
        guaranteed_left = budget.guaranteed_room
        for claim in claims:
            PoolHost.objects.create(
                pool=pool, host_id=claim.host_id, claim=claim, guaranteed=guaranteed_left > 0, allocated_at=now
            )
            guaranteed_left -= 1
        short = take - len(claims)
        if claims:
            audit_record(
                actor=None,
                action="node_pool.allocate",
                target=pool,
                tenant=tenant,
                after={"hosts": [h["name"] for h in (selection.hosts if selection else [])]},
            )
        if short <= 0:
            if take == need:
                return prefix.strip()
            return f"{prefix}Quota: {tenant.slug} may hold {take} more {pool.quota_class.name} host(s); {need} wanted."
        within_guarantee = min(short, max(0, budget.guaranteed_room - len(claims)))
        noticed = _preempt_for(pool, requirement, within_guarantee, settings) if within_guarantee else 0
        why = selection.allocation.explanation.message if selection and selection.allocation.explanation else ""
        if noticed:
            return f"{prefix}{noticed} host(s) pre-empted from other pools to honour {tenant.slug}'s guarantee; handed over after the notice."
        return f"{prefix}Waiting for capacity: {short} more host(s) wanted. {why}".strip()


def _claim_batch(pool, tenant, requirement, count, policy, *, key_erase, occupied, exclude):
    """Select and claim up to ``count`` hosts: as many as the fleet has, the policy holding for
    each batch. Returns (the last selection, the claims)."""
    claims: list = []
    selection = None
    while count > 0:
        selection, claims = hosts_claim(
            requirement,
            count,
            policy,
            holder=pool.holder,
            tenant=tenant.slug,
            key_erase=key_erase,
            occupied=occupied,
            exclude=exclude,
        )
        if claims:
            break
        # Fewer free hosts than asked: try what there is; the policy may still cost one more step down.
        count = min(count - 1, selection.free)
    return selection, claims


# ============================================================================ reservations


@dataclass
class _Reserved:
    """The pool's bookings that hold hosts now (step 2)."""

    reservations: list  # preparing or active, earliest start first
    leaving: int = 0  # hosts of its pre-empted bookings still serving their notice
    standing: int = 0  # the pool's own size, without bookings (set by the reconcile)

    @property
    def count(self) -> int:
        return sum(r.count for r in self.reservations) + self.leaving

    @property
    def pending(self) -> bool:
        """Nodes would be Ready before anything may run on them: taint them (step 9)."""
        states = {r.state for r in self.reservations}
        return "preparing" in states and "active" not in states and self.standing == 0


def _reserved(pool: NodePool) -> _Reserved:
    from reservations.models import HostBooking, Reservation

    reservations = list(
        Reservation.objects.filter(node_pool=pool, state__in=(Reservation.State.PREPARING, Reservation.State.ACTIVE))
        .select_related("tenant", "node_pool__quota_class", "node_pool__cluster__tenant")
        .order_by("starts_at", "pk")
    )
    # A pre-empted booking's hosts stay (and keep their Machines) until their notice ends.
    leaving = (
        PoolHost.objects.filter(pool=pool, released_at__isnull=True, state__in=LIVE, preempt_at__isnull=False)
        .filter(
            host_id__in=HostBooking.objects.filter(
                reservation__node_pool=pool, reservation__state=Reservation.State.PREEMPTED
            ).values("host_id")
        )
        .count()
    )
    return _Reserved(reservations=reservations, leaving=leaving)


def _early_hosts(pool: NodePool) -> set[int]:
    """Hosts planned for the pool's bookings that have not started preparing (and for none
    that has): reclaimed early, they wait free for the preparation rather than join the pool."""
    from reservations.models import HostBooking, Reservation

    bookings = HostBooking.objects.filter(reservation__node_pool=pool)
    early = set(bookings.filter(reservation__state=Reservation.State.CONFIRMED).values_list("host_id", flat=True))
    if not early:
        return early
    now_serving = set(
        bookings.filter(
            reservation__state__in=(Reservation.State.PREPARING, Reservation.State.ACTIVE), host_id__in=early
        ).values_list("host_id", flat=True)
    )
    return early - now_serving


def _booked_soon(pool: NodePool, now, settings: FleetSettings) -> set[int]:
    """Hosts other pools' bookings need soon: not for a standing allocation or another
    booking's fallback."""
    from django.db.backends.postgresql.psycopg_any import DateTimeTZRange

    from reservations.models import HostBooking, Reservation

    horizon = STANDING_HORIZON + timedelta(seconds=settings.preemption_notice_seconds + METADATA_SECONDS)
    return set(
        HostBooking.objects.filter(
            reservation__state__in=Reservation.HOLDING, during__overlap=DateTimeTZRange(now, now + horizon, "[)")
        )
        .exclude(reservation__node_pool=pool)
        .values_list("host_id", flat=True)
    )


def _serving(ph: PoolHost):
    """The preparing or active booking of ``ph``'s pool its host is planned for, if any."""
    from reservations.models import Reservation

    return (
        Reservation.objects.filter(
            node_pool_id=ph.pool_id,
            state__in=(Reservation.State.PREPARING, Reservation.State.ACTIVE),
            bookings__host_id=ph.host_id,
        )
        .select_related("tenant", "node_pool")
        .first()
    )


def _firm_q() -> Q:
    """PoolHosts serving a booking that is promised (not pre-emptible): never victims."""
    from django.db.models import Exists, OuterRef

    from reservations.models import HostBooking, Reservation

    firm = HostBooking.objects.filter(
        host_id=OuterRef("host_id"),
        reservation__node_pool_id=OuterRef("pool_id"),
        reservation__state__in=(Reservation.State.PREPARING, Reservation.State.ACTIVE),
    ).exclude(reservation__priority=Reservation.Priority.PREEMPTIBLE)
    return Exists(firm)


def _spot_booking_q() -> Q:
    """PoolHosts serving a pre-emptible booking — or leaving with one that was pre-empted: spot
    use, whatever their guaranteed mark (a guarantee never withdraws a pre-empted booking's notice)."""
    from django.db.models import Exists, OuterRef

    from reservations.models import HostBooking, Reservation

    same = HostBooking.objects.filter(host_id=OuterRef("host_id"), reservation__node_pool_id=OuterRef("pool_id"))
    serving = same.filter(
        reservation__state__in=(Reservation.State.PREPARING, Reservation.State.ACTIVE),
        reservation__priority=Reservation.Priority.PREEMPTIBLE,
    )
    leaving = same.filter(reservation__state=Reservation.State.PREEMPTED)
    return Exists(serving) | (Q(preempt_at__isnull=False) & Exists(leaving))


def _takeable_q() -> Q:
    """PoolHosts held by use a booking may take back with notice: borrowed (not within a
    guarantee), in a pre-emptible pool, or serving a pre-emptible booking — never one serving a
    promised booking. What is not takeable is *kept* (:func:`reservations.plan._kept`)."""
    spot = Q(guaranteed=False) | Q(pool__workload_class=NodePool.WorkloadClass.PREEMPTIBLE) | _spot_booking_q()
    return spot & ~_firm_q()


def _takeable_ids(holders: Iterable[PoolHost]) -> set[int]:
    """The pks of ``holders`` that are takeable (:func:`_takeable_q`), in one query."""
    pks = [ph.pk for ph in holders]
    if not pks:
        return set()
    return set(PoolHost.objects.filter(pk__in=pks).filter(_takeable_q()).values_list("pk", flat=True))


def _give_notice(victims: list[PoolHost], taker: NodePool | None, deadline, *, why: str = "") -> int:
    """Give ``victims`` notice: they leave at ``deadline`` (step 4 then hands them to ``taker``).
    Audited on both tenants. A pre-emptible booking one of them serves is pre-empted as a
    whole: state ``preempted`` with the reason, its other hosts leave at the same time, its
    plan ends then."""
    from reservations import plan
    from reservations.models import Reservation
    from reservations.services import reservation_transition
    from tenants.clusters import reconcile_pool_after_commit

    given = 0
    victim_reservations: dict[int, Reservation] = {}
    for victim in victims:
        moved = PoolHost.objects.filter(pk=victim.pk, preempt_at__isnull=True, released_at__isnull=True).update(
            preempt_at=deadline, preempted_for=taker
        )
        if not moved:
            continue
        given += 1
        victim.preempt_at, victim.preempted_for = deadline, taker
        tenants = {victim.pool.cluster.tenant} | ({taker.cluster.tenant} if taker is not None else set())
        for tenant in tenants:
            audit_record(
                actor=None,
                action="host.preempt_notice",
                target_type="host",
                target_id=str(victim.host_id),
                target_repr=f"{victim.host.name}: {victim.pool} → {taker or 'free'}",
                tenant=tenant,
                after={
                    "from": str(victim.pool),
                    "for": str(taker) if taker else "",
                    "leaves_at": deadline.isoformat(),
                    "why": why,
                },
            )
        reconcile_pool_after_commit(victim.pool_id)
        serving = _serving(victim)
        if serving is not None and serving.priority == Reservation.Priority.PREEMPTIBLE:
            victim_reservations[serving.pk] = serving
    for reservation in victim_reservations.values():
        leaves = timezone.localtime(deadline)
        who = f"{taker.cluster.tenant.slug}/{taker.cluster.name}/{taker.name}" if taker else "another booking"
        reason = (
            f"Pre-empted for {who}{f' ({why})' if why else ''}: its hosts leave at {leaves:%a %d %b %H:%M} "
            "(the notice), then are cleaned and handed over."
        )
        if reservation_transition(reservation, Reservation.State.PREEMPTED, reason):
            others = list(
                PoolHost.objects.filter(
                    pool_id=reservation.node_pool_id,
                    released_at__isnull=True,
                    state__in=LIVE,
                    preempt_at__isnull=True,
                    host_id__in=reservation.bookings.values("host_id"),
                ).select_related("pool__cluster__tenant", "host")
            )
            given += _give_notice(others, None, deadline, why=f"{reservation} was pre-empted")
            plan.plan_shorten(reservation, until=deadline)
    return given


def _hold_for_booking(pool: NodePool, claim, r, now) -> PoolHost:
    """A claimed host joins ``pool`` for booking ``r``: within the guarantee only when the
    booking is guaranteed."""
    from reservations.models import Reservation

    return PoolHost.objects.create(
        pool=pool,
        host_id=claim.host_id,
        claim=claim,
        guaranteed=r.priority == Reservation.Priority.GUARANTEED,
        allocated_at=now,
    )


def _allocate_reserved(pool, tenant, reservations, need: int, settings: FleetSettings, now) -> tuple[int, list[str]]:
    """Step 6, for the pool's preparing and active bookings (see the module docstring);
    returns the need left for the standing part and what is worth saying."""
    from django.db.backends.postgresql.psycopg_any import DateTimeTZRange

    from reservations.models import HostBooking, HostTaken, Reservation, booking_hosts

    notes: list[str] = []
    mine = set(
        PoolHost.objects.filter(
            pool=pool, released_at__isnull=True, state__in=LIVE, preempt_at__isnull=True
        ).values_list("host_id", flat=True)
    )
    notice = timedelta(seconds=settings.preemption_notice_seconds)
    for r in reservations:
        if need <= 0:
            break
        planned = set(HostBooking.objects.filter(reservation=r).values_list("host_id", flat=True))
        # A host the pool took without a plan (a fallback, a hand-over) joins the plan, so it is
        # protected like the planned ones; a conflict (booked later by someone else) is harmless.
        for host_id in sorted(mine - planned - _planned_now(pool)):
            if len(planned) >= r.count:
                break
            try:
                with booking_hosts():
                    HostBooking.objects.create(
                        reservation=r,
                        host_id=host_id,
                        during=DateTimeTZRange(min(now, r.occupancy.upper), r.occupancy.upper, "[)"),
                        handoff_seconds=int((r.occupancy.upper - r.ends_at).total_seconds()),
                    )
                planned.add(host_id)
            except HostTaken:
                continue
        todo = sorted(planned - mine)
        holders = {
            ph.host_id: ph
            for ph in PoolHost.objects.filter(host_id__in=todo, released_at__isnull=True).select_related(
                "pool__cluster__tenant", "host"
            )
        }
        free = [h for h in todo if h not in holders]
        claims = hosts_claim_ids(free[: max(need, 0)], holder=pool.holder, tenant=tenant.slug)
        for claim in claims:
            _hold_for_booking(pool, claim, r, now)
            mine.add(claim.host_id)
        need -= len(claims)
        claimed = {c.host_id for c in claims}
        unusable: list[int] = []
        waiting: list[str] = []
        for host in Host.objects.filter(pk__in=[h for h in free if h not in claimed]):
            if host.retired_at or host.maintenance or host.operational_status == "error":
                unusable.append(host.pk)
            else:
                waiting.append(host.name)  # cleaning after its last pool, or not ready yet: soon free
        need -= len(waiting)
        takeable = []
        takeable_ids = _takeable_ids(holders.values())
        for host_id, ph in holders.items():
            if ph.pool_id == pool.pk or ph.preempted_for_id == pool.pk:
                continue  # leaving this pool for another (and planned back), or on its way here
            if ph.preempt_at is None and ph.state in LIVE and ph.pk in takeable_ids:
                takeable.append(ph)
            elif ph.preempt_at is None and ph.state in LIVE:
                unusable.append(host_id)  # a guarantee or a promised booking holds it
            else:
                waiting.append(ph.host.name)  # leaving its pool already
        if takeable and need > 0:
            taking = takeable[:need]
            need -= _give_notice(taking, pool, now + notice, why=f"planned for {r}")
            notes.append(
                f"{len(taking)} planned host(s) of {r.name or 'the booking'} are being handed over after the notice."
            )
        if waiting:
            notes.append(f"Waiting for planned host(s) {', '.join(sorted(waiting)[:5])} to be cleaned and free.")
        if unusable:
            HostBooking.objects.filter(reservation=r, host_id__in=unusable).delete()
        unmet = r.count - (len(planned) - len(unusable))
        if unmet > 0 and need > 0:
            unmet, need = _fallback(pool, tenant, r, unmet, need, settings, now, mine)
        if unmet > 0 and need > 0 and r.priority != Reservation.Priority.PREEMPTIBLE:
            try:
                requirement = r.get_requirement()
            except RequirementError:
                requirement = None
            noticed = _reclaim_for(pool, r, requirement, min(unmet, need), settings, now) if requirement else 0
            if noticed:
                notes.append(
                    f"{noticed} host(s) taken back from borrowed or pre-emptible use for {r}; handed over after the notice."
                )
            unmet -= noticed
            need -= noticed
        if unmet > 0:
            notes.append(f"{r.name or 'A booking'} still lacks {unmet} host(s): no matching host is free.")
    return need, notes


def _planned_now(pool: NodePool) -> set[int]:
    """Hosts planned for any of the pool's bookings that hold hosts."""
    from reservations.models import HostBooking, Reservation

    return set(
        HostBooking.objects.filter(reservation__node_pool=pool, reservation__state__in=Reservation.HOLDING).values_list(
            "host_id", flat=True
        )
    )


def _fallback(pool, tenant, r, unmet: int, need: int, settings, now, mine: set[int]) -> tuple[int, int]:
    """Hosts of a booking its plan could not give: a normal selection, with the booking's own
    requirement and policy; what it takes joins the plan. Returns (unmet, need) left."""
    from django.db.backends.postgresql.psycopg_any import DateTimeTZRange

    from reservations.models import HostBooking, HostTaken, booking_hosts
    from reservations.plan import _policy as booking_policy

    try:
        requirement = r.get_requirement()
    except RequirementError:
        return unmet, need
    _, claims = _claim_batch(
        pool,
        tenant,
        requirement,
        min(unmet, need),
        booking_policy(r, settings.topology_levels),
        key_erase=pool.cleaning == NodePool.Cleaning.KEY_ERASE,
        occupied=_occupied(pool, settings.topology_levels),
        exclude=_booked_soon(pool, now, settings),
    )
    for claim in claims:
        _hold_for_booking(pool, claim, r, now)
        mine.add(claim.host_id)
        try:
            with booking_hosts():
                HostBooking.objects.create(
                    reservation=r,
                    host_id=claim.host_id,
                    during=DateTimeTZRange(min(now, r.occupancy.upper), r.occupancy.upper, "[)"),
                    handoff_seconds=int((r.occupancy.upper - r.ends_at).total_seconds()),
                )
        except HostTaken:
            pass  # booked later by another reservation: that one finds another host then
    if claims:
        audit_record(
            actor=None,
            action="node_pool.allocate",
            target=pool,
            tenant=tenant,
            after={
                "hosts": sorted(Host.objects.filter(pk__in=[c.host_id for c in claims]).values_list("name", flat=True)),
                "reservation": r.pk,
            },
        )
    return unmet - len(claims), need - len(claims)


def _reclaim_for(pool: NodePool, reservation, requirement, count: int, settings: FleetSettings, now) -> int:
    """A promised booking (guaranteed or on demand) short of hosts takes them back from borrowed
    or pre-emptible use, with notice: admission confirmed it counting neither, so they yield.
    Victims that disrupt least first:

    1. the lowest class: pre-emptible use (pre-emptible bookings, pre-emptible pools) before
       borrowed on-demand hosts;
    2. the fewest hosts disrupted: a pre-emptible booking is pre-empted as a whole, so taking one
       of its hosts disrupts all of them; a standing host disrupts itself;
    3. the most recently started (the least work lost).

    Hosts serving a promised (not pre-emptible) booking are never victims."""
    from tenants.quota import matching_host_ids

    candidates = list(
        PoolHost.objects.filter(released_at__isnull=True, state__in=LIVE, preempt_at__isnull=True)
        .exclude(pool=pool)
        .filter(_takeable_q())
        .select_related("pool__cluster__tenant", "host")
    )
    if not candidates:
        return 0
    meeting = matching_host_ids(requirement, Host.objects.filter(pk__in=[c.host_id for c in candidates]))
    units: dict[tuple, dict] = {}
    for c in candidates:
        if c.host_id not in meeting:
            continue
        serving = _serving(c)
        if serving is not None:
            key = ("reservation", serving.pk)
            unit = units.setdefault(key, {"rank": 0, "size": serving.count, "started": serving.starts_at, "hosts": []})
        else:
            rank = 0 if c.pool.workload_class == NodePool.WorkloadClass.PREEMPTIBLE else 1
            unit = units.setdefault(("host", c.pk), {"rank": rank, "size": 1, "started": c.allocated_at, "hosts": []})
        unit["hosts"].append(c)
    ranked = sorted(
        units.values(),
        key=lambda u: (u["rank"], u["size"], -u["started"].timestamp(), min(h.host.name for h in u["hosts"])),
    )
    chosen: list[PoolHost] = []
    for unit in ranked:
        for victim in sorted(unit["hosts"], key=lambda h: h.host.name):
            if len(chosen) < count:
                chosen.append(victim)
        if len(chosen) >= count:
            break
    if not chosen:
        return 0
    deadline = now + timedelta(seconds=settings.preemption_notice_seconds)
    log.info(
        "pre-emption notice for a booking",
        extra={"pool": str(pool), "reservation": reservation.pk, "hosts": [v.host.name for v in chosen]},
    )
    kind = "guaranteed" if reservation.priority == reservation.Priority.GUARANTEED else "on-demand"
    return _give_notice(chosen, pool, deadline, why=f"{kind} booking {reservation}")


def reservation_reclaim_early(reservation, *, now=None) -> int:
    """Start taking back a booking's planned hosts from standing use ahead of its preparation:
    called by the lifecycle from ``prepare_at − notice − hand-off``, so that the notice runs
    out and the host is cleaned by ``prepare_at``. Borrowed or pre-emptible holders get notice
    (leaving at ``prepare_at − hand-off``, or after the full notice if that is later); a
    planned host held by a guarantee or a promised booking is dropped from the plan, and
    :func:`reservations.plan.replan` finds another. Returns how many hosts changed."""
    from reservations.admission import handoff_seconds
    from reservations.models import HostBooking

    settings = FleetSettings.load()
    now = now or _now()
    notice = timedelta(seconds=settings.preemption_notice_seconds)
    taker = reservation.node_pool
    held = list(
        PoolHost.objects.filter(
            host_id__in=reservation.bookings.values("host_id"), released_at__isnull=True, state__in=LIVE
        )
        .exclude(pool=taker)
        .select_related("pool__cluster__tenant", "host")
    )
    changed = 0
    dropped = []
    takeable_ids = _takeable_ids(held)
    with transaction.atomic():
        for ph in held:
            if ph.preempt_at is not None:
                continue  # already leaving
            if ph.pk not in takeable_ids:
                dropped.append(ph.host_id)
                continue
            deadline = max(now + notice, reservation.prepare_at - timedelta(seconds=handoff_seconds(ph.pool)))
            changed += _give_notice([ph], taker, deadline, why=f"planned for {reservation}")
        if dropped:
            changed += HostBooking.objects.filter(reservation=reservation, host_id__in=dropped).delete()[0]
    return changed


def _occupied(pool: NodePool, levels) -> dict[tuple[str, ...], int]:
    """Where the pool's hosts already are (location paths along the fleet's levels): a pool
    that grows keeps its placement policy's hard rules across every host it holds."""
    occupied: dict[tuple[str, ...], int] = {}
    held = PoolHost.objects.filter(pool=pool, released_at__isnull=True, state__in=LIVE, preempt_at__isnull=True)
    for location in held.values_list("host__location", flat=True):
        key = topology.path(location or {}, levels)
        occupied[key] = occupied.get(key, 0) + 1
    return occupied


def _policy(pool: NodePool, levels):
    from hosts.allocator import Policy, PolicyError

    try:
        return Policy.from_json(pool.policy or {}, levels)
    except PolicyError:
        return Policy()


def _preempt_for(pool: NodePool, requirement, count: int, settings: FleetSettings) -> int:
    """Choose ``count`` victims for ``pool`` and give them notice; returns how many.

    Candidates: hosts held by other pools, not guaranteed (borrowed, or pre-emptible
    workloads), without notice yet, meeting the requirement. Least disruptive first:
    pre-emptible workloads before on-demand ones, lower tenant priority first, hosts not serving
    a Node yet before ready ones, then the pool with the most hosts (losing one of many), then
    the most recently allocated (the least work lost)."""
    from django.db.models import Count

    from tenants.quota import matching_host_ids

    candidates = list(
        PoolHost.objects.filter(released_at__isnull=True, state__in=LIVE, guaranteed=False, preempt_at__isnull=True)
        .exclude(pool=pool)
        .exclude(pool__cluster__tenant=pool.cluster.tenant_id)
        .exclude(_firm_q())  # a promised booking's hosts are not borrowed, whatever their mark says
        .select_related("pool__cluster__tenant", "host")
        .annotate(pool_size=Count("pool__pool_hosts", filter=Q(pool__pool_hosts__released_at__isnull=True)))
    )
    if not candidates:
        return 0
    meeting = matching_host_ids(requirement, Host.objects.filter(pk__in=[c.host_id for c in candidates]))
    ranked = sorted(
        (c for c in candidates if c.host_id in meeting),
        key=lambda c: (
            c.pool.workload_class != NodePool.WorkloadClass.PREEMPTIBLE,
            c.pool.cluster.tenant.priority,
            c.state == PoolHost.State.READY,
            -c.pool_size,
            -c.allocated_at.timestamp(),
            c.host.name,
        ),
    )[:count]
    deadline = _now() + timedelta(seconds=settings.preemption_notice_seconds)
    given = _give_notice(ranked, pool, deadline, why=f"{pool.cluster.tenant.slug}'s guarantee")
    if ranked:
        log.info("pre-emption notice", extra={"pool": str(pool), "hosts": [v.host.name for v in ranked]})
    return min(given, len(ranked))


def guaranteed_marks(tenant_id: int, quota_class_id: int) -> None:
    """Step 7: exactly ``min(guaranteed, non-pre-emptible hosts held)`` hosts are marked
    guaranteed in the tenant's class — ready hosts first, oldest first."""
    from tenants.models import Quota

    quota = Quota.objects.filter(tenant_id=tenant_id, quota_class_id=quota_class_id).first()
    guaranteed = quota.guaranteed if quota else 0
    held = list(
        PoolHost.objects.filter(
            pool__cluster__tenant_id=tenant_id,
            pool__quota_class_id=quota_class_id,
            released_at__isnull=True,
            state__in=LIVE,
        )
        .exclude(pool__workload_class=NodePool.WorkloadClass.PREEMPTIBLE)
        .exclude(_spot_booking_q())  # a pre-emptible booking is not promised: never within a guarantee
        .order_by("-guaranteed", "allocated_at", "pk")
    )
    promote = [ph.pk for ph in held[:guaranteed] if not ph.guaranteed]
    demote = [ph.pk for ph in held[guaranteed:] if ph.guaranteed]
    if promote:
        # A host that is now within the guarantee is no longer anyone's victim.
        PoolHost.objects.filter(pk__in=promote).update(guaranteed=True, preempt_at=None, preempted_for=None)
    if demote:
        PoolHost.objects.filter(pk__in=demote).update(guaranteed=False)
    PoolHost.objects.filter(
        pool__cluster__tenant_id=tenant_id,
        pool__quota_class_id=quota_class_id,
        released_at__isnull=True,
        guaranteed=True,
    ).filter(Q(pool__workload_class=NodePool.WorkloadClass.PREEMPTIBLE) | _spot_booking_q()).update(guaranteed=False)


def _ensure_labels(gw: Gateway, pool: NodePool, view: _View) -> None:
    """Step 8."""
    held = {
        ph.host.name
        for ph in PoolHost.objects.filter(
            pool=pool, released_at__isnull=True, state__in=LIVE, preempt_at__isnull=True
        ).select_related("host")
    }
    # Hosts under notice keep their label until they go: CAPM3 keeps them bound anyway.
    noticed = set(
        PoolHost.objects.filter(
            pool=pool, released_at__isnull=True, state__in=LIVE, preempt_at__isnull=False
        ).values_list("host__name", flat=True)
    )
    wanted = {
        builders.LABEL_NODE_POOL: pool.uid,
        builders.LABEL_TENANT: pool.cluster.tenant.slug,
        builders.LABEL_CLUSTER: pool.cluster.name,
    }
    for name in sorted(held):
        record = view.hosts.get(name)
        if record is None or any(record.labels.get(k) != v for k, v in wanted.items()):
            try:
                view.hosts[name] = gw.set_host_labels(name, dict(wanted))
            except NotFound:
                log.warning("a host the pool holds is gone", extra={"pool": str(pool), "host": name})
    for name, record in list(view.hosts.items()):
        if record.labels.get(builders.LABEL_NODE_POOL) == pool.uid and name not in held and name not in noticed:
            _unlabel(gw, name, pool.uid, view)


def _capacity(pool: NodePool) -> builders.Capacity | None:
    """What one host of the pool offers, from the host the pool would get now (or holds)."""
    host = Host.objects.filter(pool_hosts__pool=pool, pool_hosts__released_at__isnull=True).order_by("pk").first()
    if host is None:
        try:
            selection = hosts_select(pool.get_requirement(), 1, key_erase=pool.cleaning == NodePool.Cleaning.KEY_ERASE)
        except (RequirementError, ValueError):
            return None
        if not selection.hosts:
            return None
        host = Host.objects.filter(pk=selection.hosts[0]["id"]).first()
        if host is None:
            return None
    gpus = [a for a in (host.accelerators or []) if str(a.get("type", "")).lower().startswith("nvidia")]
    gpu_count = sum(int(a.get("count", 1) or 1) for a in gpus)
    return builders.Capacity(
        cpu=host.cpu_count or 0,
        memory_gib=(host.ram_mib or 0) // 1024,
        gpu_type="nvidia.com/gpu" if gpu_count else "",
        gpu_count=gpu_count,
        labels={builders.LABEL_TENANT: pool.cluster.tenant.slug, "teapot.io/pool": pool.name},
    )


def node_pool_spec(pool: NodePool, desired: int, reserved: _Reserved | None = None) -> builders.NodePoolSpec:
    """The pool's objects as the builders take them. ``reserved``: its bookings holding hosts
    now — they raise an autoscaled pool's bounds, and a booking not started yet taints the
    nodes (step 9)."""
    from tenants.quota import autoscale_ceiling

    extra = reserved.count if reserved is not None else 0
    taints = (TAINT_RESERVATION_PENDING,) if reserved is not None and reserved.pending else ()
    image = pool.image
    common = {
        "tenant": pool.cluster.tenant.slug,
        "cluster": pool.cluster.name,
        "name": pool.name,
        "pool_uid": pool.uid,
        "kubernetes_version": pool.cluster.kubernetes_version.version,
        "image_url": image.url,
        "image_checksum": image.checksum,
        "image_checksum_type": image.checksum_type,
        "image_format": image.format,
        "cleaning_mode": CLEANING_MODE[pool.cleaning],
        "taints": taints,
    }
    if pool.autoscaled:
        ceiling = max(pool.autoscale_min, autoscale_ceiling(pool))
        return builders.NodePoolSpec(
            **common,
            replicas=None,
            autoscale_min=pool.autoscale_min + extra,
            autoscale_max=ceiling + extra,
            capacity=_capacity(pool),
        )
    return builders.NodePoolSpec(**common, replicas=desired)


def _apply(gw: Gateway, pool: NodePool, desired: int, reserved: _Reserved | None = None) -> None:
    """Step 9."""
    spec = node_pool_spec(pool, desired, reserved)
    applied = gw.apply_node_pool(spec)
    current = {(obj["kind"], obj["metadata"]["name"]) for obj in applied}
    prefix = f"{pool.object_name}-"
    for kind in (kinds.METAL3MACHINETEMPLATE, kinds.KUBEADMCONFIGTEMPLATE):
        for obj in gw.list(kind, f"{builders.CAPI_CLUSTER_NAME}={pool.cluster.object_name}"):
            name = obj["metadata"]["name"]
            if name.startswith(prefix) and len(name) == len(prefix) + 8 and (kind.kind, name) not in current:
                gw.delete(kind, name)


def _mark_leaving(gw: Gateway, pool: NodePool, desired: int, view: _View, *, teapot_scales: bool = False) -> None:
    """Step 9, first: when the MachineDeployment is about to shrink and the pool has bookings,
    say which Machines go (Cluster API's ``delete-machine`` annotation) rather than leave the
    choice to Cluster API, which could keep a host the next booking needs elsewhere and let go
    of one a running booking still uses. Machines waiting for a host go first, then hosts other
    pools' bookings need (soonest first), then hosts of this pool's bookings that ended; never
    a host a preparing or active booking of this pool uses while another can go."""
    from reservations.models import HostBooking, Reservation

    if pool.autoscaled and not teapot_scales:
        return  # the Cluster Autoscaler picks the nodes it removes (it marks them itself)
    surplus = view.machines - desired
    if surplus <= 0 and not view.marked:
        return
    planned = list(
        HostBooking.objects.filter(host__name__in=list(view.bound))
        .filter(Q(reservation__node_pool=pool) | Q(reservation__state__in=Reservation.HOLDING))
        .values_list("host__name", "reservation__node_pool_id", "reservation__state", "during")
    )
    if not planned and not view.marked:
        return  # no booking involved: Cluster API's own order is as good as any
    serving = (Reservation.State.PREPARING, Reservation.State.ACTIVE)
    keep = {name for name, pool_id, state, _ in planned if pool_id == pool.pk and state in serving}
    elsewhere: dict[str, datetime] = {}
    ended = set()
    for name, pool_id, state, during in planned:
        if pool_id != pool.pk and state in Reservation.HOLDING:
            elsewhere[name] = min(during.lower, elsewhere.get(name, during.lower))
        elif pool_id == pool.pk and state not in Reservation.HOLDING:
            ended.add(name)

    def rank(name: str) -> tuple:
        return (name not in elsewhere, elsewhere.get(name) or _now(), name not in ended, name in view.nodes, name)

    order = list(view.unbound) + [view.bound[n] for n in sorted(set(view.bound) - keep, key=rank)]
    order += [view.bound[n] for n in sorted(keep & set(view.bound), key=rank)]
    chosen = set(order[: max(surplus, 0)])
    for machine in sorted(chosen - view.marked):
        with contextlib.suppress(NotFound):
            gw.mark_machine_for_deletion(machine)
    if pool.autoscaled:
        return  # marks on an autoscaled pool may be the autoscaler's own: never removed
    for machine in sorted(view.marked - chosen):
        with contextlib.suppress(NotFound):
            gw.mark_machine_for_deletion(machine, marked=False)


def _delete_objects(gw: Gateway, pool: NodePool) -> bool:
    """Delete the pool's objects; True while any is left."""
    left = False
    for kind in (kinds.MACHINEHEALTHCHECK, kinds.MACHINEDEPLOYMENT):
        try:
            gw.get(kind, pool.object_name)
        except NotFound:
            continue
        left = True
        gw.delete(kind, pool.object_name)
    prefix = f"{pool.object_name}-"
    for kind in (kinds.METAL3MACHINETEMPLATE, kinds.KUBEADMCONFIGTEMPLATE):
        for obj in gw.list(kind, f"{builders.CAPI_CLUSTER_NAME}={pool.cluster.object_name}"):
            name = obj["metadata"]["name"]
            if name.startswith(prefix) and len(name) == len(prefix) + 8:
                left = True
                gw.delete(kind, name)
    return left


def node_pool_reconcile(pool_id: int, *, gateway: Gateway | None = None, now: datetime | None = None) -> str:
    """One pool (see the module docstring). ``now``: the time its decisions are taken at (notices
    that end, bookings that need hosts soon); the wall clock unless a caller drives time."""
    with _at(now):
        return _node_pool_reconcile(pool_id, gateway=gateway)


def _node_pool_reconcile(pool_id: int, *, gateway: Gateway | None = None) -> str:
    pool = (
        NodePool.objects.select_related("cluster__tenant", "cluster__kubernetes_version", "quota_class", "image")
        .filter(pk=pool_id)
        .first()
    )
    if pool is None:
        log.info("node pool gone; nothing to reconcile", extra={"pool_id": pool_id})
        return "gone"
    if pool.deleted_at is not None:
        return "deleted"
    gw = gateway or get_gateway()
    settings = FleetSettings.load()
    held = list(
        PoolHost.objects.filter(pool=pool, released_at__isnull=True).select_related(
            "host", "preempted_for__cluster__tenant"
        )
    )
    view = _read(gw, pool, held)
    notes = _follow(gw, pool, held, view, settings)
    deleting = pool.phase == NodePool.Phase.DELETING
    # After step 3/4: a pre-empted booking's host whose notice just ended no longer counts.
    reserved = _reserved(pool)
    reserved.standing = _desired(pool, view)
    desired = 0 if deleting else reserved.standing + reserved.count
    if pool.autoscaled and not deleting:
        desired = _autoscaled_size(gw, pool, view, reserved.standing, reserved.count)
    if deleting:
        left = _delete_objects(gw, pool)
        _release_surplus(gw, pool, 0, view)
        holding = PoolHost.objects.filter(pool=pool, released_at__isnull=True).count()
        if not left and not holding:
            mark_deleted(pool)
            audit_record(actor=None, action="node_pool.deleted", target=pool, tenant=pool.cluster.tenant)
            return "deleted"
        NodePool.objects.filter(pk=pool.pk).update(
            desired=0,
            ready=len(view.nodes),
            message=f"Deleting: {holding} host(s) still being released (cleaned per the pool's policy).",
            reconciled_at=timezone.now(),
        )
        return "deleting"
    _release_surplus(gw, pool, desired, view)
    waiting = ""
    failed = pool.replacements > settings.provisioning_attempts
    if failed:
        waiting = (
            f"Failed: {pool.replacements} hosts failed to provision (the limit is {settings.provisioning_attempts}). "
            "An operator has been left the failed hosts in maintenance; scale the pool to retry."
        )
    elif pool.cluster.phase != Cluster.Phase.DELETING:
        waiting = _allocate(pool, desired, settings, reserved)
    guaranteed_marks(pool.cluster.tenant_id, pool.quota_class_id)
    _ensure_labels(gw, pool, view)
    _mark_leaving(gw, pool, desired, view)
    _apply(gw, pool, desired, reserved)
    ready = len(view.nodes)
    holding = PoolHost.objects.filter(pool=pool, released_at__isnull=True, state__in=LIVE).count()
    if failed:
        phase = NodePool.Phase.FAILED
    elif ready == desired and holding == desired and not waiting:
        phase = NodePool.Phase.READY
    else:
        phase = NodePool.Phase.SCALING
    message = waiting or ("; ".join(notes) if notes else "")
    if not message and phase == NodePool.Phase.SCALING:
        message = f"{ready} of {desired} workers ready; {holding} host(s) allocated."
    NodePool.objects.filter(pk=pool.pk).update(
        desired=desired, ready=ready, phase=phase, message=message[:500], reconciled_at=timezone.now()
    )
    return phase


# ============================================================================ all of them


def reconcile_all(*, gateway: Gateway | None = None, now: datetime | None = None) -> dict:
    """Every live cluster, then every live pool. One failure is logged and the rest go on.
    ``now``: as for :func:`node_pool_reconcile`."""
    gw = gateway or get_gateway()
    done = {"clusters": 0, "pools": 0, "errors": 0}
    for cluster_id in Cluster.objects.live().order_by("pk").values_list("pk", flat=True):
        try:
            cluster_reconcile(cluster_id, gateway=gw)
            done["clusters"] += 1
        except Exception:
            done["errors"] += 1
            log.exception("cluster reconcile failed", extra={"cluster_id": cluster_id})
    for pool_id in NodePool.objects.live().order_by("pk").values_list("pk", flat=True):
        try:
            node_pool_reconcile(pool_id, gateway=gw, now=now)
            done["pools"] += 1
        except Exception:
            done["errors"] += 1
            log.exception("node pool reconcile failed", extra={"pool_id": pool_id})
    return done
