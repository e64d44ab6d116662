"""Operator pages of tenancy, under /t/operator/ (namespace ``tenant``): every tenant with its
members, clusters and quota use; creating a tenant; quotas per class (with admission control's
refusals); the fleet's capacity per class; the whole audit log. Operators only: anonymous people
go to the login page, everyone else gets 403.

Query budget: the tenants list is the tenants with two counts (one query), the usage of every
tenant (tenants.quota.tenants_usage: three queries) and the classes; the audit log one page.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from hosts.views import operator_required
from tenants.access import access_tenant
from tenants.forms import AuditFilterForm, QuotaForm, TenantForm, add_service_errors
from tenants.models import AuditEntry, Quota, QuotaClass, Role, Tenant
from tenants.services import membership_add, tenant_create
from tenants.views_pages import AUDIT_PAGE, audit_rows, done, fragment_wanted, page_urls, quota_bars, vary

TENANTS_SHOWN = 200


def tenants_overview() -> list[dict[str, Any]]:
    """Every tenant with its members, live clusters and quota bars (constant queries)."""
    from tenants.quota import tenants_usage

    tenants = Tenant.objects.annotate(
        member_count=Count("memberships", distinct=True),
        cluster_count=Count("clusters", filter=Q(clusters__deleted_at__isnull=True), distinct=True),
    ).order_by("slug")[:TENANTS_SHOWN]
    usage = tenants_usage()
    return [{"tenant": t, "quota": quota_bars(usage.get(t.pk, []))} for t in tenants]


@operator_required
@require_GET
def operator_tenants(request: HttpRequest) -> HttpResponse:
    return render(request, "tenants/operator/tenants.html", {"rows": tenants_overview(), "section": "tenants"})


@operator_required
@require_http_methods(["GET", "POST"])
def operator_tenant_new(request: HttpRequest) -> HttpResponse:
    form = TenantForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                with transaction.atomic():
                    tenant = tenant_create(
                        slug=data["slug"],
                        name=data["name"],
                        description=data["description"],
                        priority=data["priority"],
                        actor=request.user,
                    )
                    if data["owner_email"]:
                        try:
                            membership_add(
                                tenant=tenant, email=data["owner_email"], role=Role.OWNER, actor=request.user
                            )
                        except ValidationError as exc:
                            raise ValidationError({"owner_email": exc.message_dict.get("email", exc.messages)}) from exc
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                return done(
                    request,
                    reverse("tenant:operator_quota", args=[tenant.slug]),
                    f"Tenant {tenant.slug} created. Give it quotas next.",
                )
        status = 400
    return render(request, "tenants/operator/tenant_form.html", {"form": form, "section": "tenants"}, status=status)


def _quota_context(tenant: Tenant, form: QuotaForm) -> dict[str, Any]:
    from tenants.quota import tenant_usage

    usage = {u.quota_class.pk: u for u in tenant_usage(tenant)}
    rows = form.rows()
    for row in rows:
        row["usage"] = usage.get(row["klass"].pk)
    return {"tenant": tenant, "form": form, "rows": rows, "section": "tenants"}


@operator_required
@require_http_methods(["GET", "POST"])
def operator_quota(request: HttpRequest, slug: str) -> HttpResponse:
    """Guaranteed and maximum per class. All changes are saved together or not at all: when
    admission control refuses one, nothing is saved and each refusal is shown on its row."""
    from tenants.quota import quota_update

    tenant = access_tenant(request, slug).tenant  # operators see every tenant; a missing one is 404
    classes = list(QuotaClass.objects.order_by("order", "name"))
    current = {
        q.quota_class_id: (q.guaranteed, q.maximum)
        for q in Quota.objects.filter(tenant=tenant).only("quota_class_id", "guaranteed", "maximum")
    }
    form = QuotaForm(request.POST or None, classes=classes, current=current)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            changed = form.changed_classes()
            failed = False
            with transaction.atomic():
                for klass, guaranteed, maximum in changed:
                    try:
                        with transaction.atomic():
                            quota_update(
                                tenant=tenant,
                                quota_class=klass,
                                guaranteed=guaranteed,
                                maximum=maximum,
                                actor=request.user,
                            )
                    except ValidationError as exc:
                        failed = True
                        add_service_errors(
                            form,
                            exc,
                            aliases={"guaranteed": f"{klass.name}-guaranteed", "maximum": f"{klass.name}-maximum"},
                        )
                if failed:
                    transaction.set_rollback(True)
            if not failed:
                names = ", ".join(k.name for k, _, _ in changed)
                message = f"Quotas of {tenant.slug} saved ({names})." if changed else "Nothing changed."
                return done(request, reverse("tenant:operator_tenants"), message)
        status = 400
    return render(request, "tenants/operator/quota.html", _quota_context(tenant, form), status=status)


def capacity_chart(rows: list) -> dict[str, Any]:
    """Horizontal bars per class as SVG geometry: the hosts that can serve the class, those held,
    and marks at the guarantees' and maximums' totals."""
    width, label_w, right, row_h, gap = 640, 110, 16, 22, 16
    top = 8
    plot_w = width - label_w - right
    scale = max([1, *(max(r.hosts, r.guaranteed_total, r.held_total, r.maximum_total) for r in rows)])
    bars = []
    for i, r in enumerate(rows):
        y = top + i * (row_h + gap)

        def x(value: int) -> float:
            return round(label_w + plot_w * value / scale, 2)

        bars.append(
            {
                "row": r,
                "y": y,
                "label_y": y + row_h / 2 + 4,
                "capacity_w": round(plot_w * r.hosts / scale, 2),
                "held_w": round(plot_w * min(r.held_total, r.hosts) / scale, 2),
                "guaranteed_x": x(r.guaranteed_total),
                "maximum_x": x(r.maximum_total),
                "short": r.guaranteed_total > r.hosts,
            }
        )
    height = top + len(rows) * (row_h + gap) + 24
    ticks = []
    step = max(1, round(scale / 5))
    value = 0
    while value <= scale:
        ticks.append({"x": round(label_w + plot_w * value / scale, 2), "label": value})
        value += step
    return {
        "width": width,
        "height": height,
        "label_w": label_w,
        "row_h": row_h,
        "bars": bars,
        "ticks": ticks,
        "axis_y": height - 20,
    }


@operator_required
@require_GET
def operator_capacity(request: HttpRequest) -> HttpResponse:
    from tenants.quota import guarantees_check

    admission = guarantees_check()
    rows = admission.classes
    short = {s.quota_class_name: s.message for s in admission.shortfalls}
    context = {
        "rows": [{"capacity": r, "short": short.get(r.quota_class.name, "")} for r in rows],
        "chart": capacity_chart(rows),
        "admission": admission,
        "section": "capacity",
    }
    return render(request, "tenants/operator/capacity.html", context)


@operator_required
@require_GET
def operator_audit(request: HttpRequest) -> HttpResponse:
    slugs = list(Tenant.objects.order_by("slug").values_list("slug", flat=True))
    actions = list(AuditEntry.objects.order_by("action").values_list("action", flat=True).distinct())
    form = AuditFilterForm(request.GET or None, tenants=slugs, actions=actions)
    entries = AuditEntry.objects.select_related("tenant").order_by("-at", "-id")
    if form.is_valid():
        if form.cleaned_data["tenant"]:
            entries = entries.filter(tenant__slug=form.cleaned_data["tenant"])
        if form.cleaned_data["action"]:
            entries = entries.filter(action=form.cleaned_data["action"])
    page = Paginator(entries, AUDIT_PAGE).get_page(request.GET.get("page"))
    context = {
        "form": form,
        "page": page,
        "rows": audit_rows(page.object_list),
        "page_urls": page_urls(request, page),
        "section": "audit",
    }
    if fragment_wanted(request):
        return vary(render(request, "tenants/partials/audit_table.html", {**context, "show_tenant": True}))
    return vary(render(request, "tenants/operator/audit.html", {**context, "show_tenant": True}))
