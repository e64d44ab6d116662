"""Operator pages that change the inventory: enrol a host, import many, follow the enrolments,
write classification rules, set the fleet's topology levels and cost model.

Every page is for operators (staff): anonymous people go to the login page, anyone else gets
403. Writes go through the services (:mod:`hosts.enrolment`, :mod:`hosts.curation`); the views
shape forms and pages. htmx fragments are the templates the pages include (STYLE.md §5).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from functools import wraps

import yaml
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from hosts import curation, enrolment, importing, rules
from hosts.classify import host_cost_of
from hosts.costs import CostModel, CostModelError
from hosts.forms import FleetSettingsForm, HostEnrolForm, HostImportForm, TraitRuleForm
from hosts.models import FleetSettings, Host, HostEnrolment, TraitRule
from teapot_portal.gateway.builders import BMC_SCHEMES

PAGE_SIZE = 50
# Provisioning states a freshly enrolled host passes through before it is available.
SETTLING_STATES = ("", "registering", "inspecting", "preparing", "match profile")
POLL_STOP = 286  # htmx stops polling on this status
RECLASSIFYING = "Reclassifying the fleet; traits update within seconds."
PREVIEW_HOSTS = 8


def operator_required(view: Callable) -> Callable:
    """Anonymous → login; logged in but not staff → 403."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        if not request.user.is_staff:
            raise PermissionDenied("operators only")
        return view(request, *args, **kwargs)

    return wrapper


# --------------------------------------------------------------------------- enrol one host


@operator_required
@require_http_methods(["GET", "POST"])
def enrol(request: HttpRequest) -> HttpResponse:
    levels = curation.topology_levels()
    form = HostEnrolForm(request.POST or None, levels=levels)
    if request.method == "POST" and form.is_valid():
        try:
            created = enrolment.host_enrol(**form.service_values(), acting_user=request.user)
        except ValidationError as exc:
            form.add_enrol_errors(exc)
        else:
            messages.success(request, f"Enrolment of {created.name} queued: follow it below.")
            return redirect(f"{reverse('hosts:enrolments')}?ids={created.pk}")
    status = 400 if form.is_bound else 200
    return render(
        request,
        "hosts/manage/enrol.html",
        {"form": form, "section": "enrol", "levels": levels, "schemes": BMC_SCHEMES},
        status=status,
    )


# --------------------------------------------------------------------------- bulk import


def _import_columns(levels: list[str]) -> list[dict]:
    meaning = {
        "name": "the BareMetalHost's name: lowercase letters, digits, '-' and '.'",
        "bmc_address": f"scheme://host[/path]; schemes: {', '.join(BMC_SCHEMES)} (redfish variants also +http/+https)",
        "bmc_username": "the BMC user",
        "bmc_password": "the BMC password (sealed, then wiped once the cluster holds it)",
        "boot_mac": "MAC of the provisioning NIC, e.g. 52:54:00:12:34:56",
        "key_erase": "true/false: disks encrypted with a per-tenant key",
        "notes": "free text",
        "root_device_name": "root device hint, e.g. /dev/nvme0n1",
    }
    columns = [{"name": c, "required": True, "meaning": meaning[c]} for c in importing.REQUIRED]
    columns += [
        {"name": level, "required": False, "meaning": f"location: {level} (a path from {levels[0]})"}
        for level in levels
    ]
    columns += [{"name": c, "required": False, "meaning": meaning[c]} for c in importing.OPTIONAL]
    return columns


def _template_rows(levels: list[str]) -> list[dict]:
    rows = []
    for index in (1, 2):
        row = {
            "name": f"r1-node-{index:02d}",
            "bmc_address": f"redfish://10.0.1.{index}/redfish/v1/Systems/1" if index == 1 else "ipmi://10.0.1.2",
            "bmc_username": "admin",
            "bmc_password": "change-me",
            "boot_mac": f"52:54:00:00:01:{index:02x}",
        }
        sample_location = {"site": "site1", "room": "a", "row": "1", "rack": "r1"}
        for position, level in enumerate(levels):
            row[level] = sample_location.get(level, f"{level}{position + 1}")
        row.update({"key_erase": "true" if index == 1 else "false", "notes": "", "root_device_name": ""})
        rows.append(row)
    return rows


@operator_required
@require_http_methods(["GET", "POST"])
def import_hosts(request: HttpRequest) -> HttpResponse:
    levels = curation.topology_levels()
    form = HostImportForm(request.POST or None, request.FILES or None)
    problems: list[importing.ImportProblem] = []
    uploaded = False
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        uploaded = bool(data["source"])
        outcome = enrolment.hosts_import(text=data["inventory"], fmt=data["detected"], acting_user=request.user)
        if outcome.ok:
            count = len(outcome.enrolments)
            messages.success(request, f"{count} host{'s' if count != 1 else ''} queued for enrolment.")
            ids = ",".join(str(e.pk) for e in outcome.enrolments)
            return redirect(f"{reverse('hosts:enrolments')}?ids={ids}")
        problems = outcome.problems
    elif request.method == "POST":
        uploaded = bool(request.FILES.get("file"))
    context = {
        "form": form,
        "section": "import",
        "problems": problems,
        "uploaded": uploaded,
        "columns": _import_columns(levels),
        "levels": levels,
        "example_csv": _template_text("csv", levels),
    }
    return render(request, "hosts/manage/import.html", context, status=400 if form.is_bound else 200)


def _template_text(fmt: str, levels: list[str]) -> str:
    rows = _template_rows(levels)
    if fmt == "yaml":
        return "# Teapot host inventory: a list of hosts (or a mapping with a 'hosts' list).\n" + yaml.safe_dump(
            rows, sort_keys=False, default_flow_style=False
        )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


@operator_required
@require_GET
def import_template(request: HttpRequest) -> HttpResponse:
    fmt = request.GET.get("format", "csv")
    if fmt not in ("csv", "yaml"):
        return HttpResponse("format: csv or yaml", status=400, content_type="text/plain")
    content_type = "text/csv" if fmt == "csv" else "application/yaml"
    response = HttpResponse(
        _template_text(fmt, curation.topology_levels()), content_type=f"{content_type}; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="teapot-hosts.{fmt}"'
    return response


# --------------------------------------------------------------------------- enrolment progress


def _batch_filter(request: HttpRequest) -> tuple[Q, dict]:
    """The batch asked for: ?ids=1,2,3 (an import) — the state filter is applied separately."""
    query, shown = Q(), {}
    raw_ids = request.GET.get("ids", "")
    ids = [int(part) for part in raw_ids.split(",") if part.strip().isdigit()]
    if ids:
        query &= Q(pk__in=ids)
        shown["ids"] = ",".join(str(i) for i in ids)
    return query, shown


@operator_required
@require_GET
def enrolments(request: HttpRequest) -> HttpResponse:
    batch, shown = _batch_filter(request)
    state = request.GET.get("state", "")
    if state not in dict(HostEnrolment.STATES):
        state = ""
    in_batch = HostEnrolment.objects.filter(batch)
    counts = in_batch.aggregate(
        total=Count("id"),
        pending=Count("id", filter=Q(state=HostEnrolment.PENDING)),
        applied=Count("id", filter=Q(state=HostEnrolment.APPLIED)),
        failed=Count("id", filter=Q(state=HostEnrolment.FAILED)),
    )
    listed = in_batch.filter(state=state) if state else in_batch
    listed = listed.select_related("requested_by").defer("sealed_credentials").order_by("-created_at", "-id")
    page = Paginator(listed, PAGE_SIZE).get_page(request.GET.get("page"))
    rows = list(page.object_list)
    applied_names = [e.name for e in rows if e.state == HostEnrolment.APPLIED]
    host_states = dict(
        Host.objects.filter(name__in=applied_names, retired_at__isnull=True).values_list("name", "provisioning_state")
    )
    settling = sum(1 for name in applied_names if host_states.get(name, "") in SETTLING_STATES)
    for row in rows:
        row.host_state = host_states.get(row.name) if row.state == HostEnrolment.APPLIED else None
    done = counts["applied"] + counts["failed"]
    polling = bool(counts["pending"] or settling)
    context = {
        "section": "enrolments",
        "page": page,
        "rows": rows,
        "counts": counts,
        "done": done,
        "percent": round(100 * done / counts["total"]) if counts["total"] else 100,
        "settling": settling,
        "polling": polling,
        "state": state,
        "states": [s for s, _ in HostEnrolment.STATES],
        "shown": shown,
        "poll_url": request.get_full_path(),
    }
    if request.htmx and not request.htmx.boosted:
        return render(
            request, "hosts/manage/partials/enrolment_table.html", context, status=200 if polling else POLL_STOP
        )
    return render(request, "hosts/manage/enrolments.html", context)


# --------------------------------------------------------------------------- classification rules


def _rule_reference() -> dict:
    doc = rules.__doc__ or ""
    examples = []
    block = doc.split("like MAAS automatic tags::", 1)[-1].split("Grammar", 1)[0]
    for line in block.strip().splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            examples.append({"name": parts[0], "rule": parts[1].strip()})
    return {
        "scalars": [
            {"name": name, "type": kind.__name__, "meaning": meaning} for name, (kind, meaning) in rules.SCALARS.items()
        ],
        "collections": [
            {"name": name, "fields": [{"name": f, "type": t.__name__} for f, t in fields.items()]}
            for name, fields in rules.COLLECTIONS.items()
        ],
        "operators": rules.OPERATORS,
        "examples": examples,
    }


@operator_required
@require_GET
def rule_list(request: HttpRequest) -> HttpResponse:
    trait_rules = list(TraitRule.objects.with_host_counts())
    active = Host.objects.filter(retired_at__isnull=True)
    manual = Counter(
        trait for traits in active.exclude(manual_traits=[]).values_list("manual_traits", flat=True) for trait in traits
    )
    context = {
        "section": "rules",
        "rules": trait_rules,
        "manual_traits": sorted(manual.items()),
        "reference": _rule_reference(),
    }
    return render(request, "hosts/manage/rules.html", context)


def _rule_form_page(request: HttpRequest, instance: TraitRule | None) -> HttpResponse:
    if instance is None:
        initial = {"enabled": True}
    else:
        initial = {
            "name": instance.name,
            "rule": instance.rule,
            "description": instance.description,
            "enabled": instance.enabled,
        }
    form = TraitRuleForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            saved = curation.trait_rule_save(
                name=data["name"],
                rule=data["rule"],
                description=data["description"],
                enabled=data["enabled"],
                instance=instance,
            )
        except ValidationError as exc:
            for key, errors in exc.message_dict.items():
                form.add_error(key if key in form.fields else None, errors)
        else:
            messages.success(request, f"Rule “{saved.name}” saved. {RECLASSIFYING}")
            return redirect("hosts:rules")
    rule_text = form["rule"].value() or ""
    context = {
        "section": "rules",
        "form": form,
        "instance": instance,
        "preview": _preview(rule_text) if rule_text.strip() else None,
        "reference": _rule_reference(),
    }
    return render(request, "hosts/manage/rule_form.html", context, status=400 if form.is_bound else 200)


@operator_required
@require_http_methods(["GET", "POST"])
def rule_new(request: HttpRequest) -> HttpResponse:
    return _rule_form_page(request, None)


@operator_required
@require_http_methods(["GET", "POST"])
def rule_edit(request: HttpRequest, pk: int) -> HttpResponse:
    return _rule_form_page(request, get_object_or_404(TraitRule, pk=pk))


@operator_required
@require_http_methods(["GET", "POST"])
def rule_delete(request: HttpRequest, pk: int) -> HttpResponse:
    rule = get_object_or_404(TraitRule, pk=pk)
    if request.method == "POST":
        curation.trait_rule_delete(rule)
        messages.success(request, f"Rule “{rule.name}” deleted. {RECLASSIFYING}")
        return redirect("hosts:rules")
    carrying = Host.objects.filter(retired_at__isnull=True, rule_traits__contains=[rule.name]).count()
    return render(request, "hosts/manage/rule_delete.html", {"section": "rules", "rule": rule, "carrying": carrying})


def _preview(text: str) -> dict:
    try:
        result = curation.trait_rule_preview(text)
    except rules.RuleError as exc:
        return {"error": exc.message, "pointer": exc.pointer(), "position": exc.position + 1}
    return result


@operator_required
@require_POST
def rule_preview(request: HttpRequest) -> HttpResponse:
    text = request.POST.get("rule", "")
    preview = _preview(text) if text.strip() else None
    return render(request, "hosts/manage/partials/rule_preview.html", {"preview": preview})


# --------------------------------------------------------------------------- fleet settings


def _representative_hosts() -> list[Host]:
    """The cheapest and the dearest inspected host of each hardware product (at most PREVIEW_HOSTS)."""
    fields = (
        "id",
        "name",
        "system_product",
        "cpu_count",
        "ram_mib",
        "disk_total_bytes",
        "accelerators",
        "traits",
        "cost_override",
        "cost_per_hour",
    )
    inspected = Host.objects.filter(retired_at__isnull=True, hardware__isnull=False).only(*fields)
    cheapest = inspected.order_by("system_product", "cost_per_hour", "name").distinct("system_product")
    dearest = inspected.order_by("system_product", "-cost_per_hour", "name").distinct("system_product")
    chosen = {host.pk: host for host in [*cheapest, *dearest]}
    hosts = sorted(chosen.values(), key=lambda h: (h.cost_per_hour, h.name))
    if len(hosts) <= PREVIEW_HOSTS:
        return hosts
    # Evenly spread over the range, keeping the cheapest and the dearest.
    step = (len(hosts) - 1) / (PREVIEW_HOSTS - 1)
    return [hosts[round(i * step)] for i in range(PREVIEW_HOSTS)]


def _cost_preview(model: CostModel | None, current: CostModel) -> dict:
    rows = []
    for host in _representative_hosts():
        now = host_cost_of(host, current).per_hour
        new = host_cost_of(host, model).per_hour if model is not None else None
        rows.append({"host": host, "now": now, "new": new, "overridden": host.cost_override is not None})
    top = max([r["now"] for r in rows] + [r["new"] for r in rows if r["new"] is not None] + [Decimal("0")])
    for row in rows:
        row["now_pct"] = float(100 * row["now"] / top) if top else 0
        row["new_pct"] = float(100 * row["new"] / top) if top and row["new"] is not None else 0
        row["change_pct"] = None
        if row["new"] is not None and row["now"]:
            row["change_pct"] = round(float(100 * (row["new"] - row["now"]) / row["now"]))
    return {"rows": rows, "valid": model is not None}


def _current_model(fleet: FleetSettings) -> CostModel:
    try:
        return fleet.get_cost_model()
    except CostModelError:
        return CostModel()


def _proposed_model(form: FleetSettingsForm) -> CostModel | None:
    """The weights typed so far as a CostModel, or None while any weight is invalid."""
    form.is_valid()
    weight_fields = ("base", "per_core", "per_gib_ram", "per_tb_disk", "per_accelerator", "per_trait")
    if any(name in form.errors for name in weight_fields):
        return None
    try:
        return CostModel.from_dict(form.cost_model_dict())
    except CostModelError:
        return None


@operator_required
@require_http_methods(["GET", "POST"])
def fleet_settings(request: HttpRequest) -> HttpResponse:
    fleet = FleetSettings.load()
    current = _current_model(fleet)
    form = FleetSettingsForm(request.POST or None, initial=FleetSettingsForm.initial_from(fleet))
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            curation.fleet_settings_update(
                topology_levels=data["topology_levels"],
                cost_model=form.cost_model_dict(),
                cost_unit=data["cost_unit"],
                preemption_notice_seconds=data["preemption_notice_seconds"],
                minimum_cleaning=data["minimum_cleaning"],
                provisioning_attempts=data["provisioning_attempts"],
                reservation_extend_window_hours=data["reservation_extend_window_hours"],
                reservation_max_hours=data["reservation_max_hours"],
                reservation_horizon_days=data["reservation_horizon_days"],
                reservation_reminder_minutes=data["reservation_reminder_minutes"],
                actor=request.user,
            )
        except ValidationError as exc:
            form.add_settings_errors(exc)
        else:
            messages.success(request, f"Fleet settings saved. {RECLASSIFYING}")
            return redirect("hosts:settings")
    proposed = _proposed_model(form) if form.is_bound else current
    context = {
        "section": "settings",
        "form": form,
        "fleet": fleet,
        "unit": fleet.cost_unit,
        "preview": _cost_preview(proposed, current),
    }
    return render(request, "hosts/manage/settings.html", context, status=400 if form.is_bound else 200)


@operator_required
@require_POST
def settings_preview(request: HttpRequest) -> HttpResponse:
    fleet = FleetSettings.load()
    form = FleetSettingsForm(request.POST)
    context = {"preview": _cost_preview(_proposed_model(form), _current_model(fleet)), "unit": fleet.cost_unit}
    return render(request, "hosts/manage/partials/cost_preview.html", context)
