"""Tenant self-service pages, mounted at /t/ (namespace ``tenant``): the tenant dashboard, clusters
with their live progress, node pools, members and the audit log.

Every view looks the tenant and its objects up through :mod:`tenants.access` (another tenant's
object is a 404, a viewer's write a 403), and writes only through the services
(:mod:`tenants.clusters`, :mod:`tenants.services`), whose refusals are shown next to the field
they name. One URL, two templates (STYLE.md §5): an htmx request gets the fragment the page
includes. Every form also works as a plain POST followed by a redirect.

Query budget (tests/test_tenant_pages.py measures it with many clusters, pools and hosts): a
list is a constant handful of queries — the clusters, one aggregate of their pools, one of their
hosts' cost; the cluster's live fragment is its pools, their hosts (with host and pre-empting
pool joined), the hosts' last state changes, the incoming pre-emptions, the recorded latencies
(cached) and the events — nothing per pool or per host.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, F, Min, Q, Sum
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from hosts.allocator import Policy, PolicyError
from hosts.models import FleetSettings, HostStateChange
from hosts.requirements import Requirement, RequirementError
from tenants import progress
from tenants.access import SESSION_KEY, TenantAccess, access_cluster, access_node_pool, access_tenant
from tenants.audit import audit_record, changes
from tenants.clusters import cluster_create, cluster_delete, node_pool_create, node_pool_delete, node_pool_scale
from tenants.forms import (
    AUTOSCALE,
    ROLE_HELP,
    ClusterForm,
    ConfirmNameForm,
    MemberAddForm,
    MemberRoleForm,
    NodePoolForm,
    ScaleForm,
    add_service_errors,
)
from tenants.models import (
    AuditEntry,
    Cluster,
    KubernetesVersion,
    Membership,
    NodePool,
    OsImage,
    PoolHost,
    QuotaClass,
    Role,
)
from tenants.services import membership_add, membership_remove, membership_set_role

log = logging.getLogger(__name__)

HTMX_STOP_POLLING = 286
EVENTS_SHOWN = 20
AUDIT_PAGE = 50
USAGE_DAYS = 30
LIVE_POOL_PHASES = (NodePool.Phase.PENDING, NodePool.Phase.SCALING, NodePool.Phase.DELETING)
SETTLED_CLUSTER_PHASES = (Cluster.Phase.READY, Cluster.Phase.FAILED)
MOVING_HOST_STATES = (PoolHost.State.ALLOCATED, PoolHost.State.PROVISIONING, PoolHost.State.RELEASING)


# ----------------------------------------------------------------------------------- helpers


def fragment_wanted(request: HttpRequest) -> bool:
    # A history restore (back button after a cache miss) needs the whole page, not the fragment.
    return bool(getattr(request, "htmx", False)) and not request.htmx.history_restore_request


def vary(response: HttpResponse) -> HttpResponse:
    # Same URL, two bodies: caches must not hand a fragment to a full page load.
    patch_vary_headers(response, ("HX-Request",))
    return response


def done(request: HttpRequest, url: str, message: str = "", level: int = messages.SUCCESS) -> HttpResponse:
    """After a successful write: a plain POST is redirected (post/redirect/get); htmx is told to
    go there (``HX-Redirect``). The message is shown on the next page either way."""
    if message:
        messages.add_message(request, level, message)
    if fragment_wanted(request):
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return redirect(url)


def remember_tenant(request: HttpRequest, access: TenantAccess) -> None:
    """The tenant a person last looked at is the one the navigation's Clusters link opens."""
    if request.session.get(SESSION_KEY) != access.tenant.slug:
        request.session[SESSION_KEY] = access.tenant.slug


def base_context(access: TenantAccess, section: str) -> dict[str, Any]:
    return {"tenant": access.tenant, "access": access, "section": section}


def cost_unit() -> str:
    return FleetSettings.load().cost_unit


# ----------------------------------------------------------------------------------- tenant switch


@login_required
@require_GET
def tenant_home(request: HttpRequest) -> HttpResponse:
    """/t/: the current tenant's dashboard (operators without one: the tenants list)."""
    from tenants.access import current_tenant

    tenant = current_tenant(request)
    if tenant is not None:
        return redirect("tenant:dashboard", slug=tenant.slug)
    if request.user.is_staff:
        return redirect("tenant:operator_tenants")
    return redirect("dashboard")


@login_required
@require_POST
def tenant_switch(request: HttpRequest) -> HttpResponse:
    """The switcher in the navigation: work in another of my tenants."""
    access = access_tenant(request, request.POST.get("tenant", ""))
    remember_tenant(request, access)
    target = request.POST.get("next", "")
    if not target or not url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        target = reverse("tenant:dashboard", args=[access.tenant.slug])
    return redirect(target)


# ----------------------------------------------------------------------------------- clusters: rows


def clusters_with_totals(tenant, *, phase: str = "") -> list[Cluster]:
    """The tenant's live clusters, each with ``pool_count``, ``desired``, ``ready``, ``host_count``
    and ``cost`` (per hour) — three queries whatever their number."""
    clusters = Cluster.objects.live().filter(tenant=tenant).select_related("kubernetes_version").order_by("name")
    if phase:
        clusters = clusters.filter(phase=phase)
    clusters = list(clusters)
    ids = [c.pk for c in clusters]
    pools = {
        row["cluster_id"]: row
        for row in NodePool.objects.live()
        .filter(cluster_id__in=ids)
        .order_by()
        .values("cluster_id")
        .annotate(n=Count("id"), desired=Sum("desired"), ready=Sum("ready"))
    }
    held = {
        row["pool__cluster_id"]: row
        for row in PoolHost.objects.filter(pool__cluster_id__in=ids, released_at__isnull=True)
        .order_by()
        .values("pool__cluster_id")
        .annotate(n=Count("id"), cost=Sum("host__cost_per_hour"))
    }
    for cluster in clusters:
        p, h = pools.get(cluster.pk, {}), held.get(cluster.pk, {})
        cluster.pool_count = p.get("n", 0)
        cluster.desired = p.get("desired") or 0
        cluster.ready = p.get("ready") or 0
        cluster.host_count = h.get("n", 0)
        cluster.cost = h.get("cost") or Decimal(0)
    return clusters


# ----------------------------------------------------------------------------------- charts


SERIES = 6  # colour classes .series-0 … .series-5 in tenants.css


def _nice_ceiling(value: float) -> tuple[float, float]:
    """An axis maximum at or above ``value`` and its tick step: 1, 2 or 5 times a power of ten."""
    if value <= 0:
        return 4.0, 1.0
    raw = value / 4
    magnitude = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 1
    for factor in (1, 2, 2.5, 5, 10):
        step = factor * magnitude
        if step >= raw:
            break
    top = step * 4
    while top < value:
        top += step
    return top, step


def usage_chart(history: list[dict], classes: list[str]) -> dict[str, Any]:
    """A stacked bar per day (host-hours per class) as SVG geometry: bars, y ticks, x labels and
    the legend; plus the rows of the table that says the same in words."""
    width, height = 640, 240
    left, right, top, bottom = 48, 22, 10, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    seen = set(classes)
    extra = sorted({name for day in history for name in day["classes"]} - seen)
    names = [*classes, *extra]
    totals = [sum(day["classes"].values()) for day in history]
    ceiling, step = _nice_ceiling(max(totals, default=0))
    n = max(len(history), 1)
    slot = plot_w / n
    bar_w = max(slot * 0.72, 1.0)
    bars = []
    for i, day in enumerate(history):
        y = top + plot_h
        x = left + i * slot + (slot - bar_w) / 2
        for s, name in enumerate(names):
            value = float(day["classes"].get(name, 0) or 0)
            if value <= 0:
                continue
            h = plot_h * value / ceiling
            y -= h
            bars.append(
                {
                    "x": round(x, 2),
                    "y": round(y, 2),
                    "w": round(bar_w, 2),
                    "h": round(h, 2),
                    "series": s % SERIES,
                    "title": f"{day['day']:%d %b}: {value:g} host-hours of {name}",
                }
            )
    ticks = []
    value = 0.0
    while value <= ceiling + 1e-9:
        ticks.append({"y": round(top + plot_h - plot_h * value / ceiling, 2), "label": f"{value:g}"})
        value += step
    labels = []
    for i, day in enumerate(history):
        if i % 7 == 0 or i == len(history) - 1:
            labels.append(
                {"x": round(left + i * slot + slot / 2, 2), "label": f"{day['day']:%d %b}", "anchor": "middle"}
            )
    if len(labels) >= 2 and labels[-1]["x"] - labels[-2]["x"] < 60:
        labels.pop(-2)  # the last day's label would overlap the previous one
    if labels:  # the outer labels align with the plot's edges, so they never leave the picture
        labels[0].update(x=left, anchor="start")
        if len(labels) > 1:
            labels[-1].update(x=width - right, anchor="end")
    rows = [
        {"day": day["day"], "values": [day["classes"].get(name, 0) or 0 for name in names], "total": total}
        for day, total in zip(history, totals, strict=True)
    ]
    return {
        "width": width,
        "height": height,
        "left": left,
        "plot_right": width - right,
        "baseline": top + plot_h,
        "bars": bars,
        "ticks": ticks,
        "labels": labels,
        "legend": [{"name": name, "series": i % SERIES} for i, name in enumerate(names)],
        "names": names,
        "rows": rows,
        "total": sum(totals),
        "empty": not any(totals),
        "days": len(history),
    }


def quota_bars(usages: list) -> list[dict[str, Any]]:
    """Each class's quota as one bar scaled to its maximum (or what is held, if more): the held
    hosts within the guarantee, the borrowed ones, and a mark at the guarantee."""
    bars = []
    for usage in usages:
        scale = max(usage.maximum, usage.held, usage.guaranteed, 1)
        within = min(usage.held_guaranteed, usage.held)
        borrowed = max(usage.held - within, 0)
        bars.append(
            {
                "usage": usage,
                "name": usage.quota_class.name,
                "description": usage.quota_class.description,
                "within_pct": 100 * within / scale,
                "borrowed_pct": 100 * borrowed / scale,
                "guaranteed_pct": 100 * usage.guaranteed / scale,
                "borrowed": borrowed,
                "over": usage.held > usage.maximum,
            }
        )
    return bars


# ----------------------------------------------------------------------------------- dashboard


def dashboard_context(access: TenantAccess) -> dict[str, Any]:
    from tenants.quota import tenant_usage, usage_history

    tenant = access.tenant
    usages = tenant_usage(tenant)
    classes = [u.quota_class.name for u in usages]
    history = usage_history(tenant, days=USAGE_DAYS)
    clusters = clusters_with_totals(tenant)
    return {
        **base_context(access, "dashboard"),
        "clusters": clusters,
        "quota": quota_bars(usages),
        "chart": usage_chart(history, classes),
        "unit": cost_unit(),
        "total_cost": sum((c.cost for c in clusters), Decimal(0)),
        "workers_ready": sum(c.ready for c in clusters),
        "workers_desired": sum(c.desired for c in clusters),
    }


@login_required
@require_GET
def tenant_dashboard(request: HttpRequest, slug: str) -> HttpResponse:
    access = access_tenant(request, slug)
    remember_tenant(request, access)
    return render(request, "tenants/dashboard.html", dashboard_context(access))


# ----------------------------------------------------------------------------------- cluster list


@login_required
@require_GET
def cluster_list(request: HttpRequest, slug: str) -> HttpResponse:
    access = access_tenant(request, slug)
    remember_tenant(request, access)
    phase = request.GET.get("phase", "")
    if phase not in Cluster.Phase.values:
        phase = ""
    context = {
        **base_context(access, "clusters"),
        "clusters": clusters_with_totals(access.tenant, phase=phase),
        "phase": phase,
        "phases": [(v, label) for v, label in Cluster.Phase.choices if v != Cluster.Phase.DELETED],
        "unit": cost_unit(),
    }
    if fragment_wanted(request):
        return vary(render(request, "tenants/partials/cluster_table.html", context))
    return vary(render(request, "tenants/cluster_list.html", context))


# ----------------------------------------------------------------------------------- cluster create


def _versions() -> list[KubernetesVersion]:
    return list(KubernetesVersion.objects.filter(available=True).order_by("-is_default", "-version"))


@login_required
@require_http_methods(["GET", "POST"])
def cluster_new(request: HttpRequest, slug: str) -> HttpResponse:
    access = access_tenant(request, slug, write=True)
    versions = _versions()
    form = ClusterForm(request.POST or None, versions=versions)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                cluster = cluster_create(
                    tenant=access.tenant,
                    name=data["name"],
                    kubernetes_version=data["kubernetes_version"],
                    control_plane_replicas=data["control_plane_replicas"],
                    addons=data["addons"],
                    actor=request.user,
                )
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                url = reverse("tenant:cluster", args=[access.tenant.slug, cluster.name])
                return done(
                    request,
                    url,
                    f"Cluster {cluster.name} created: its control plane is starting (no servers needed). "
                    "Add a node pool for workers.",
                )
        status = 400
    context = {**base_context(access, "clusters"), "form": form}
    return render(request, "tenants/cluster_form.html", context, status=status)


# ----------------------------------------------------------------------------------- cluster detail


@dataclass
class HostRow:
    pool_host: PoolHost
    name: str
    state: str
    since: datetime
    guaranteed: bool
    cost: Decimal
    leaves_in: int | None = None  # seconds until a pre-emption takes it
    leaves_for: str = ""

    @property
    def tone(self) -> str:
        return {
            PoolHost.State.READY: "available",
            PoolHost.State.FAILED: "error",
            PoolHost.State.RELEASING: "other",
        }.get(self.state, "busy")


@dataclass
class PoolView:
    pool: NodePool
    hosts: list[HostRow] = field(default_factory=list)
    eta: progress.Eta | None = None
    incoming: int = 0  # hosts other pools will hand over when their notice ends
    incoming_in: int | None = None
    cost: Decimal = Decimal(0)

    @property
    def pct(self) -> float:
        if not self.pool.desired:
            return 0.0 if self.pool.ready else 100.0
        return min(100.0, 100 * self.pool.ready / self.pool.desired)

    @property
    def in_progress(self) -> bool:
        """Something is moving: hosts on their way in or out, a notice running, the pool short
        of its size (unless it failed: nothing moves until someone acts)."""
        pool = self.pool
        moving = any(h.state in MOVING_HOST_STATES or h.leaves_in is not None for h in self.hosts)
        short = pool.desired != pool.ready and pool.phase != NodePool.Phase.FAILED
        return moving or self.incoming > 0 or pool.phase in LIVE_POOL_PHASES or short

    @property
    def workload_label(self) -> str:
        return self.pool.get_workload_class_display().split(" (")[0].lower()

    @property
    def failed(self) -> bool:
        return self.pool.phase == NodePool.Phase.FAILED

    @property
    def size_label(self) -> str:
        pool = self.pool
        if pool.autoscaled:
            return f"autoscaled {pool.autoscale_min}–{pool.autoscale_max}"
        return f"{pool.replicas} host{'s' if pool.replicas != 1 else ''}"


def _whom(taker: NodePool | None, tenant) -> str:
    """Who a pre-empted host goes to: another tenant by its name only (their clusters are theirs)."""
    if taker is None:
        return "another pool"
    if taker.cluster.tenant_id != tenant.pk:
        return taker.cluster.tenant.slug
    return f"{taker.cluster.name}/{taker.name}"


def _last_changes(host_ids: list[int]) -> dict[int, tuple[str, datetime]]:
    """Each host's last provisioning-state change (one DISTINCT ON query)."""
    if not host_ids:
        return {}
    rows = (
        HostStateChange.objects.filter(host_id__in=host_ids, field="provisioning_state")
        .order_by("host_id", "-at", "-id")
        .distinct("host_id")
        .values_list("host_id", "new", "at")
    )
    return {host_id: (new, at) for host_id, new, at in rows}


def pool_views(cluster: Cluster, *, now: datetime | None = None) -> list[PoolView]:
    now = now or timezone.now()
    pools = list(
        NodePool.objects.live().filter(cluster=cluster).select_related("quota_class", "image").order_by("name")
    )
    views = {pool.pk: PoolView(pool=pool) for pool in pools}
    held = list(
        PoolHost.objects.filter(pool_id__in=views, released_at__isnull=True)
        .select_related("host", "preempted_for__cluster__tenant")
        .only(
            "pool_id",
            "state",
            "guaranteed",
            "preempt_at",
            "message",
            "allocated_at",
            "ready_at",
            "host__name",
            "host__hardware_class",
            "host__cost_per_hour",
            "preempted_for__name",
            "preempted_for__cluster__name",
            "preempted_for__cluster__tenant_id",
            "preempted_for__cluster__tenant__slug",
        )
        .order_by("pool_id", "host__name")
    )
    last = _last_changes([ph.host_id for ph in held])
    known = progress.latencies() if any(v.pool.desired != v.pool.ready for v in views.values()) else None
    remaining: dict[int, list[progress.Remaining]] = defaultdict(list)
    for ph in held:
        change = last.get(ph.host_id)
        changed_at = change[1] if change and change[1] >= ph.allocated_at else None
        if ph.state == PoolHost.State.READY:
            since = ph.ready_at or changed_at or ph.allocated_at
        else:
            since = changed_at or ph.allocated_at
        row = HostRow(
            pool_host=ph,
            name=ph.host.name,
            state=ph.state,
            since=since,
            guaranteed=ph.guaranteed,
            cost=ph.host.cost_per_hour,
        )
        if ph.preempt_at is not None and ph.state != PoolHost.State.RELEASING:
            row.leaves_in = max(0, int((ph.preempt_at - now).total_seconds()))
            row.leaves_for = _whom(ph.preempted_for, cluster.tenant)
        view = views[ph.pool_id]
        view.hosts.append(row)
        view.cost += ph.host.cost_per_hour
        if ph.state in (PoolHost.State.ALLOCATED, PoolHost.State.PROVISIONING) and ph.preempt_at is None:
            started = changed_at if change and change[0] == "provisioning" else None
            if ph.state == PoolHost.State.PROVISIONING and started is None:
                started = ph.allocated_at
            remaining[ph.pool_id].append(progress.Remaining(ph.host.hardware_class or None, started))
    incoming = (
        PoolHost.objects.filter(preempted_for_id__in=views, released_at__isnull=True)
        .order_by()
        .values("preempted_for_id")
        .annotate(n=Count("id"), first=Min("preempt_at"))
    )
    for row in incoming:
        view = views[row["preempted_for_id"]]
        view.incoming = row["n"]
        view.incoming_in = max(0, int((row["first"] - now).total_seconds())) if row["first"] else None
    for view in views.values():
        pool = view.pool
        if pool.desired != pool.ready and pool.phase != NodePool.Phase.DELETING:
            coming = sum(
                1
                for h in view.hosts
                if h.state in (PoolHost.State.ALLOCATED, PoolHost.State.PROVISIONING, PoolHost.State.READY)
                and h.leaves_in is None
            )
            unallocated = max(0, pool.desired - coming - view.incoming)
            view.eta = progress.pool_eta(remaining[pool.pk], unallocated=unallocated, known=known, now=now)
    return list(views.values())


def cluster_events(cluster: Cluster) -> list[dict[str, Any]]:
    """The cluster's story, newest first: its audit entries (and its pools' and hosts'), the
    hosts' state changes while the cluster held them, and the pools' hold on each host."""
    tenant = cluster.tenant
    all_pool_ids = list(NodePool.objects.filter(cluster=cluster).values_list("pk", flat=True))
    marker = f" {tenant.slug}/{cluster.name}/"
    audit = (
        AuditEntry.objects.filter(tenant=tenant)
        .filter(
            Q(target_type="cluster", target_id=str(cluster.pk))
            | Q(target_type="nodepool", target_id__in=[str(pk) for pk in all_pool_ids])
            | Q(target_type="host", target_repr__contains=marker)
        )
        .only("at", "actor_label", "action", "target_repr", "before", "after")
        .order_by("-at", "-id")[:EVENTS_SHOWN]
    )
    events = [
        {
            "at": e.at,
            "kind": "audit",
            "who": e.actor_label,
            "what": e.action,
            "target": e.target_repr,
            "changes": changes(e.before, e.after) if e.before else [],
        }
        for e in audit
    ]
    # A host's history belongs to this cluster only while one of its pools held it.
    hold = Q(host__pool_hosts__pool__cluster=cluster, at__gte=F("host__pool_hosts__allocated_at")) & (
        Q(host__pool_hosts__released_at__isnull=True) | Q(at__lte=F("host__pool_hosts__released_at"))
    )
    state_changes = (
        HostStateChange.objects.filter(hold, field="provisioning_state")
        .values("at", "old", "new", "host__name")
        .order_by("-at", "-id")[:EVENTS_SHOWN]
    )
    events += [
        {
            "at": c["at"],
            "kind": "host",
            "who": "",
            "what": f"{c['old'] or 'new'} → {c['new'] or '—'}",
            "target": c["host__name"],
            "changes": [],
        }
        for c in state_changes
    ]
    holds = (
        PoolHost.objects.filter(pool__cluster=cluster)
        .values("allocated_at", "ready_at", "released_at", "state", "message", "host__name", "pool__name")
        .order_by("-allocated_at", "-id")[:EVENTS_SHOWN]
    )
    for h in holds:
        events.append(
            {
                "at": h["allocated_at"],
                "kind": "pool",
                "who": "",
                "what": f"allocated to {h['pool__name']}",
                "target": h["host__name"],
                "changes": [],
            }
        )
        if h["ready_at"]:
            events.append(
                {
                    "at": h["ready_at"],
                    "kind": "pool",
                    "who": "",
                    "what": f"ready in {h['pool__name']}",
                    "target": h["host__name"],
                    "changes": [],
                }
            )
        if h["released_at"]:
            what = "failed" if h["state"] == PoolHost.State.FAILED else "released"
            events.append(
                {
                    "at": h["released_at"],
                    "kind": "pool",
                    "who": "",
                    "what": f"{what} from {h['pool__name']}" + (f": {h['message']}" if h["message"] else ""),
                    "target": h["host__name"],
                    "changes": [],
                }
            )
    events.sort(key=lambda e: e["at"], reverse=True)
    return events[:EVENTS_SHOWN]


def cluster_live_context(access: TenantAccess, cluster: Cluster) -> dict[str, Any]:
    now = timezone.now()
    pools = pool_views(cluster, now=now)
    cluster_moving = cluster.phase not in SETTLED_CLUSTER_PHASES
    live = cluster_moving or any(p.in_progress for p in pools)
    return {
        **base_context(access, "clusters"),
        "cluster": cluster,
        "pools": pools,
        "live": live,
        "events": cluster_events(cluster),
        "cost": sum((p.cost for p in pools), Decimal(0)),
        "hosts_total": sum(len(p.hosts) for p in pools),
        "ready_total": sum(p.pool.ready for p in pools),
        "desired_total": sum(p.pool.desired for p in pools),
        "unit": cost_unit(),
        "now": now,
    }


@login_required
@require_GET
def cluster_detail(request: HttpRequest, slug: str, name: str) -> HttpResponse:
    access, cluster = access_cluster(request, slug, name)
    context = cluster_live_context(access, cluster)
    if fragment_wanted(request):
        # 286 tells htmx to stop polling: nothing is moving, the fragment would not change.
        status = 200 if context["live"] else HTMX_STOP_POLLING
        context["oob"] = True  # the screen readers' one-line status, outside the fragment
        return vary(render(request, "tenants/partials/cluster_live.html", context, status=status))
    remember_tenant(request, access)
    return vary(render(request, "tenants/cluster_detail.html", context))


@login_required
@require_POST
def cluster_kubeconfig(request: HttpRequest, slug: str, name: str) -> HttpResponse:
    """The cluster's admin kubeconfig as a download (owners and members). Recorded in the audit
    log; the content is never logged, stored or shown in a page."""
    from teapot_portal.gateway.base import GatewayError, NotFound
    from teapot_portal.gateway.factory import get_gateway

    _access, cluster = access_cluster(request, slug, name, write=True)
    back = reverse("tenant:cluster", args=[slug, cluster.name])
    try:
        content = get_gateway().get_kubeconfig(cluster.object_name)
    except NotFound:
        messages.warning(
            request, f"The kubeconfig of {cluster.name} is not available yet: it appears once the control plane is up."
        )
        return redirect(back)
    except GatewayError as exc:
        log.warning("kubeconfig unavailable", extra={"cluster": cluster.object_name, "error": type(exc).__name__})
        messages.error(request, "The management cluster did not answer; try again in a minute.")
        return redirect(back)
    audit_record(actor=request.user, action="cluster.kubeconfig", target=cluster, tenant=cluster.tenant)
    response = HttpResponse(content, content_type="application/yaml; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{cluster.object_name}.kubeconfig"'
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_http_methods(["GET", "POST"])
def cluster_delete_view(request: HttpRequest, slug: str, name: str) -> HttpResponse:
    access, cluster = access_cluster(request, slug, name, write=True)
    form = ConfirmNameForm(request.POST or None, expected=cluster.name)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            cluster_delete(cluster=cluster, actor=request.user)
            return done(
                request,
                reverse("tenant:clusters", args=[slug]),
                f"Cluster {cluster.name} is being deleted: its pools release their hosts first.",
            )
        status = 400
    pools = list(NodePool.objects.live().filter(cluster=cluster).order_by("name").values("name", "cleaning", "ready"))
    for pool in pools:
        pool["cleaning_label"] = NodePool.Cleaning(pool["cleaning"]).label
    context = {**base_context(access, "clusters"), "cluster": cluster, "form": form, "pools": pools}
    return render(request, "tenants/cluster_delete.html", context, status=status)


# ----------------------------------------------------------------------------------- node pools


def _images(cluster: Cluster) -> list[OsImage]:
    return list(
        OsImage.objects.filter(available=True)
        .filter(Q(kubernetes_version__isnull=True) | Q(kubernetes_version=cluster.kubernetes_version_id))
        .order_by("name")
    )


def _class_rooms(tenant, classes: list[QuotaClass]) -> list[dict[str, Any]]:
    from tenants.quota import tenant_usage

    usage = {u.quota_class.pk: u for u in tenant_usage(tenant)}
    return [{"klass": k, "usage": usage.get(k.pk)} for k in classes]


def _pool_requirement(klass: QuotaClass | None, text: str) -> Requirement:
    extra = Requirement.parse(text) if text.strip() else None
    if klass is None:
        return extra or Requirement.parse("")
    base = klass.get_requirement()
    return base.merge(extra) if extra is not None else base


def pool_preview(
    data: QueryDict, *, classes: list[QuotaClass], rooms: dict[str, Any], levels: list[str], unit: str
) -> dict[str, Any]:
    """What the preview fragment shows for the node pool form as typed so far (never raises):
    the same shape as the selection preview (hosts.views_select.selection_preview), for the
    class's requirement merged with the pool's extra one."""
    from hosts.forms_placement import placement_policy
    from hosts.selection import hosts_select
    from hosts.serializers_select import selection_data
    from hosts.views_select import _availability, selection_result

    preview: dict[str, Any] = {"unit": unit, "errors": [], "notes": []}
    by_name = {k.name: k for k in classes}
    klass = by_name.get(data.get("quota_class", ""))
    text = data.get("requirement", "") or ""
    try:
        requirement = _pool_requirement(klass, text)
    except RequirementError as exc:
        where = exc.position + 1 if exc.position is not None else None
        preview["requirement_error"] = {"message": exc.message, "position": where, "pointer": exc.pointer()}
        return preview
    preview["description"] = requirement.describe()
    preview["compact"] = requirement.to_compact()

    def number(name: str) -> int | None:
        try:
            value = int(str(data.get(name, "")).strip())
        except ValueError:
            return None
        return value if 0 <= value <= 500 else None

    autoscaled = data.get("sizing") == AUTOSCALE
    count = number("autoscale_max") if autoscaled else number("replicas")
    if count is None:
        preview["errors"].append("Size: a whole number from 0 to 500.")
        return preview
    try:
        policy = placement_policy(
            mode=data.get("mode"),
            level=data.get("level"),
            hard=data.get("hard"),
            max_per_bucket=number("max_per_bucket") or None,
            levels=levels,
        )
    except PolicyError as exc:
        preview["errors"].append(f"Placement: {exc}")
        return preview
    if klass is not None and klass.name in rooms and rooms[klass.name] is not None:
        room = rooms[klass.name]
        if count > room.room:
            preview["notes"].append(
                f"Your quota in {klass.name} has room for {room.room} more host{'s' if room.room != 1 else ''}: "
                f"{count} would be refused."
            )
    elif klass is not None:
        preview["notes"].append(f"Your tenant has no quota in {klass.name}.")
    if autoscaled:
        preview["notes"].append(f"Shown at the pool's maximum of {count}; it starts at its minimum.")
    if count == 0:
        preview["zero"] = True
        selection = hosts_select(requirement, 1, policy, levels=levels)
        data_ = selection_data(selection, unit)
        preview.update({"selection": data_, "count": 0, "hosts": [], "chart": [], "handoff_max": 0})
        preview["availability"] = _availability(data_["matching"], data_["free"], data_["unavailable"])
        return preview
    preview.update(selection_result(requirement, count, policy, levels=levels, cost_unit=unit))
    return preview


def _pool_form_parts(access: TenantAccess, cluster: Cluster) -> dict[str, Any]:
    classes = list(QuotaClass.objects.order_by("order", "name"))
    fleet = FleetSettings.load()
    rooms = _class_rooms(access.tenant, classes)
    return {
        "classes": classes,
        "images": _images(cluster),
        "levels": list(fleet.topology_levels),
        "unit": fleet.cost_unit,
        "rooms": rooms,
        "room_by_name": {r["klass"].name: r["usage"] for r in rooms},
    }


@login_required
@require_http_methods(["GET", "POST"])
def pool_new(request: HttpRequest, slug: str, name: str) -> HttpResponse:
    access, cluster = access_cluster(request, slug, name, write=True)
    parts = _pool_form_parts(access, cluster)
    form = NodePoolForm(request.POST or None, classes=parts["classes"], images=parts["images"], levels=parts["levels"])
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                pool = node_pool_create(cluster=cluster, actor=request.user, **form.service_values())
            except ValidationError as exc:
                add_service_errors(form, exc, aliases={"policy": "mode"})
            else:
                return done(
                    request,
                    reverse("tenant:cluster", args=[slug, cluster.name]),
                    f"Node pool {pool.name} created: Teapot is choosing its hosts.",
                )
        status = 400
    data = form.data if form.is_bound else _initial_data(form)
    preview = pool_preview(
        data, classes=parts["classes"], rooms=parts["room_by_name"], levels=parts["levels"], unit=parts["unit"]
    )
    context = {**base_context(access, "clusters"), "cluster": cluster, "form": form, "preview": preview, **parts}
    return render(request, "tenants/pool_form.html", context, status=status)


def _initial_data(form) -> QueryDict:
    """The unbound form's initial values as the preview reads posted data."""
    data = QueryDict(mutable=True)
    for name in form.fields:
        value = form[name].value()
        if value not in (None, ""):
            data[name] = str(value)
    return data


@login_required
@require_POST
def pool_preview_view(request: HttpRequest, slug: str, name: str) -> HttpResponse:
    """The node pool form's live "What would I get?" fragment."""
    access, cluster = access_cluster(request, slug, name, write=True)
    parts = _pool_form_parts(access, cluster)
    preview = pool_preview(
        request.POST, classes=parts["classes"], rooms=parts["room_by_name"], levels=parts["levels"], unit=parts["unit"]
    )
    return vary(render(request, "tenants/partials/pool_preview.html", {"preview": preview}))


def _size_after(data: dict, pool: NodePool) -> tuple[int, int]:
    """(least, most) hosts the pool will have after the change."""
    if data.get("sizing") == AUTOSCALE:
        return data.get("autoscale_min") or 0, data.get("autoscale_max") or 0
    replicas = data.get("replicas") or 0
    return replicas, replicas


def scale_estimate(pool: NodePool, least: int, most: int) -> dict[str, Any]:
    """Cost per hour now and after: the hosts held now; more hosts at what the allocator would
    pick now (the cheapest that fit); fewer at the average of the hosts held."""
    from hosts.selection import hosts_select

    costs = list(
        PoolHost.objects.filter(pool=pool, released_at__isnull=True)
        .exclude(state=PoolHost.State.RELEASING)
        .values_list("host__cost_per_hour", flat=True)
    )
    before = sum(costs, Decimal(0))
    average = before / len(costs) if costs else None
    note = ""

    def cost_of(size: int) -> Decimal | None:
        nonlocal note
        if size <= len(costs):
            return (average or Decimal(0)) * size
        try:
            policy = Policy.from_json(pool.policy or {}, FleetSettings.load().topology_levels)
            selection = hosts_select(pool.get_requirement(), size - len(costs), policy)
        except (PolicyError, RequirementError, ValueError):
            return None
        if not selection.feasible:
            note = f"Not enough free hosts now for {size}: {selection.allocation.explanation.message}."
            return None
        return before + selection.cost

    low, high = cost_of(least), cost_of(most) if most != least else None
    return {
        "before": before,
        "before_hosts": len(costs),
        "after": low,
        "after_max": high,
        "least": least,
        "most": most,
        "note": note,
        "zero": most == 0,
    }


@login_required
@require_http_methods(["GET", "POST"])
def pool_scale(request: HttpRequest, slug: str, name: str, pool: str) -> HttpResponse:
    """Step 1: the new size (the estimate follows as it is typed, with htmx); step 2: the cost
    before → after and a confirmation; then the service. htmx requests only ever get the
    estimate fragment: the confirmation is a plain POST."""
    access, node_pool = access_node_pool(request, slug, name, pool, write=True)
    cluster = node_pool.cluster
    context = {**base_context(access, "clusters"), "cluster": cluster, "pool": node_pool, "unit": cost_unit()}
    if request.method == "GET":
        form = ScaleForm.for_pool(node_pool)
        least, most = _size_after(form.initial, node_pool)
        context.update({"form": form, "estimate": scale_estimate(node_pool, least, most), "confirming": False})
        return render(request, "tenants/pool_scale.html", context)
    form = ScaleForm(request.POST)
    valid = form.is_valid()
    estimate = scale_estimate(node_pool, *_size_after(form.cleaned_data, node_pool)) if valid else None
    context.update({"form": form, "estimate": estimate, "confirming": False})
    if fragment_wanted(request):
        return vary(render(request, "tenants/partials/scale_estimate.html", context))
    if not valid:
        return render(request, "tenants/pool_scale.html", context, status=400)
    if request.POST.get("confirm") != "yes":
        context["confirming"] = True
        return render(request, "tenants/pool_scale.html", context)
    try:
        node_pool_scale(pool=node_pool, actor=request.user, **form.size_values())
    except ValidationError as exc:
        add_service_errors(form, exc)
        return render(request, "tenants/pool_scale.html", context, status=400)
    least, most = estimate["least"], estimate["most"]
    size = f"{least}–{most} (autoscaled)" if form.cleaned_data["sizing"] == AUTOSCALE else str(most)
    extra = " The control plane stays up; the hosts are released." if most == 0 else ""
    return done(
        request,
        reverse("tenant:cluster", args=[slug, cluster.name]),
        f"Node pool {node_pool.name} scaled to {size}.{extra}",
    )


@login_required
@require_http_methods(["GET", "POST"])
def pool_delete_view(request: HttpRequest, slug: str, name: str, pool: str) -> HttpResponse:
    access, node_pool = access_node_pool(request, slug, name, pool, write=True)
    if request.method == "POST":
        node_pool_delete(pool=node_pool, actor=request.user)
        return done(
            request,
            reverse("tenant:cluster", args=[slug, name]),
            f"Node pool {node_pool.name} is being deleted: its hosts are released and cleaned "
            f"({node_pool.get_cleaning_display().lower()}).",
        )
    held = PoolHost.objects.filter(pool=node_pool, released_at__isnull=True).count()
    context = {**base_context(access, "clusters"), "cluster": node_pool.cluster, "pool": node_pool, "held": held}
    return render(request, "tenants/pool_delete.html", context)


# ----------------------------------------------------------------------------------- members


def _members_context(request: HttpRequest, access: TenantAccess, **extra) -> dict[str, Any]:
    memberships = list(Membership.objects.filter(tenant=access.tenant).select_related("user").order_by("user__email"))
    order = {"owner": 0, "member": 1, "viewer": 2}
    memberships.sort(key=lambda m: (order.get(m.role, 9), m.user.email))
    errors = extra.pop("errors", {})
    for m in memberships:
        m.error = errors.get(m.pk, "")
    return {
        **base_context(access, "members"),
        "memberships": memberships,
        "roles": Role.choices,
        "role_help": [(label, ROLE_HELP[value]) for value, label in Role.choices],
        "form": extra.pop("form", None) or MemberAddForm(),
        **extra,
    }


def _members_response(request: HttpRequest, access: TenantAccess, *, status: int = 200, **extra) -> HttpResponse:
    context = _members_context(request, access, **extra)
    if fragment_wanted(request):
        # htmx does not swap 4xx answers: a refusal comes back with 200 and says why.
        return vary(render(request, "tenants/partials/members_body.html", context))
    return vary(render(request, "tenants/members.html", context, status=status))


@login_required
@require_http_methods(["GET", "POST"])
def members(request: HttpRequest, slug: str) -> HttpResponse:
    if request.method == "GET":
        access = access_tenant(request, slug)
        return _members_response(request, access)
    access = access_tenant(request, slug, manage=True)
    form = MemberAddForm(request.POST)
    if form.is_valid():
        try:
            membership = membership_add(
                tenant=access.tenant,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                actor=request.user,
            )
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            message = f"{membership.user.email} added as {membership.get_role_display().lower()}."
            if fragment_wanted(request):
                return _members_response(request, access, notice=("success", message))
            messages.success(request, message)
            return redirect("tenant:members", slug=slug)
    return _members_response(request, access, status=400, form=form)


def _membership(access: TenantAccess, pk: int) -> Membership:
    membership = Membership.objects.filter(tenant=access.tenant, pk=pk).select_related("user", "tenant").first()
    if membership is None:
        raise Http404("No such member.")
    return membership


@login_required
@require_POST
def member_role(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    access = access_tenant(request, slug, manage=True)
    membership = _membership(access, pk)
    form = MemberRoleForm(request.POST)
    try:
        if not form.is_valid():
            raise ValidationError({"role": "Choose owner, member or viewer."})
        membership = membership_set_role(membership=membership, role=form.cleaned_data["role"], actor=request.user)
    except ValidationError as exc:
        why = "; ".join(m for ms in exc.message_dict.values() for m in ms)
        if fragment_wanted(request):
            return _members_response(request, access, errors={membership.pk: why})
        return _members_response(request, access, status=400, errors={membership.pk: why})
    message = f"{membership.user.email} is now {membership.get_role_display().lower()}."
    if fragment_wanted(request):
        return _members_response(request, access, notice=("success", message))
    messages.success(request, message)
    return redirect("tenant:members", slug=slug)


@login_required
@require_POST
def member_remove(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    access = access_tenant(request, slug, manage=True)
    membership = _membership(access, pk)
    try:
        membership_remove(membership=membership, actor=request.user)
    except ValidationError as exc:
        why = "; ".join(m for ms in exc.message_dict.values() for m in ms)
        if fragment_wanted(request):
            return _members_response(request, access, errors={membership.pk: why})
        return _members_response(request, access, status=400, errors={membership.pk: why})
    message = f"{membership.user.email} removed from {access.tenant.slug}."
    if membership.user_id == request.user.pk and not request.user.is_staff:
        messages.success(request, message)
        return done(request, reverse("dashboard"))
    if fragment_wanted(request):
        return _members_response(request, access, notice=("success", message))
    messages.success(request, message)
    return redirect("tenant:members", slug=slug)


# ----------------------------------------------------------------------------------- audit


EMPTY_VALUES = (None, "", [], {})


def audit_rows(entries) -> list[dict[str, Any]]:
    """Each entry with its fields before → after; a creation (or removal) lists only the fields
    that say something."""
    rows = []
    for e in entries:
        created = e.before is None and e.after is not None
        removed = e.after is None and e.before is not None
        fields = changes(e.before, e.after)
        if created:
            fields = [f for f in fields if f[2] not in EMPTY_VALUES]
        elif removed:
            fields = [f for f in fields if f[1] not in EMPTY_VALUES]
        rows.append({"entry": e, "changes": fields, "created": created, "removed": removed})
    return rows


def page_urls(request: HttpRequest, page) -> dict[str, str]:
    def url(number: int) -> str:
        query = request.GET.copy()
        query["page"] = str(number)
        return f"?{query.urlencode()}"

    return {
        "previous": url(page.previous_page_number()) if page.has_previous() else "",
        "next": url(page.next_page_number()) if page.has_next() else "",
    }


@login_required
@require_GET
def tenant_audit(request: HttpRequest, slug: str) -> HttpResponse:
    access = access_tenant(request, slug, manage=True)
    entries = AuditEntry.objects.filter(tenant=access.tenant).order_by("-at", "-id")
    page = Paginator(entries, AUDIT_PAGE).get_page(request.GET.get("page"))
    context = {
        **base_context(access, "audit"),
        "page": page,
        "rows": audit_rows(page.object_list),
        "page_urls": page_urls(request, page),
    }
    return render(request, "tenants/audit.html", context)
