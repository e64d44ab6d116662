""" "What would I get?" (/select/): the hosts a requirement gets now, and their cost — nothing is
claimed. For everyone signed in, tenant members and operators alike.

One URL, two templates (STYLE.md §5): ``/select/`` renders the page, or — for an htmx request —
only the preview fragment the page includes. ``/select/preview/`` always answers with the
fragment, so node pool and reservation forms with the same field names
(:class:`hosts.forms_select.SelectionForm`) can post to it. Without JavaScript a plain POST
renders the page with the result.

Query budget of the fragment: the session and the user, the fleet settings, the flavour when
one is newly chosen, and the selection's own few GROUP BY queries — nothing per host.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_http_methods, require_POST

from hosts.allocator import Policy
from hosts.flavours import InputError, flavour_by_name
from hosts.forms_placement import PLACEMENT_ERROR, PLACEMENT_FIELDS
from hosts.forms_select import SelectionForm
from hosts.models import Flavour, FleetSettings
from hosts.requirements import Requirement, RequirementError
from hosts.selection import hosts_select
from hosts.serializers_select import selection_data

SHOWN_HOSTS = 20  # rows of the chosen hosts' table and bars of the chart
TRAITS_SECONDS = 60
# Reasons a matching host is not free (hosts.selection.REASONS), in the chart's order, with a colour class.
REASON_CLASSES = {
    "in use": "in-use",
    "in maintenance": "maintenance",
    "in error": "error",
    "not ready yet (registering, inspecting or being provisioned)": "not-ready",
}
TERMS = [
    ("cores>=64", "at least 64 logical CPUs (threads)"),
    ("ram>=512Gi", "at least 512 GiB of RAM; Ti for TiB (ram>=1Ti)"),
    ("gpu:nvidia-a100>=4", "at least 4 accelerators of that type; gpu:TYPE alone is at least one"),
    ("disk>=2T", "at least 2 TB of disk in all; G for GB"),
    ("disk:nvme>=1.5T", "at least 1.5 TB of NVMe disks (nvme, ssd or hdd); disk:nvme alone: one NVMe disk"),
    ("nic>=25", "a NIC of at least 25 Gbit/s"),
    ("arch=aarch64", "that CPU architecture (x86_64, aarch64…)"),
    ("nvme", "a trait the host must carry"),
    ("!fpga", "a trait the host must not carry"),
    ("gpu-a100|gpu-l40s", "at least one of these traits"),
]


def _location_path(location: dict[str, str], levels: list[str]) -> str:
    values = [str(location[level]) for level in levels if location.get(level)]
    return " › ".join(values) or "not placed"


def _chart_rows(hosts: list[dict], levels: list[str]) -> list[dict]:
    """Bars of the chosen hosts' cost per hour: one per host, or — for many hosts — one per
    location (their sum), the dearest first; widths relative to the largest."""
    if len(hosts) <= SHOWN_HOSTS:
        rows = [{"label": h["name"], "value": Decimal(h["cost_per_hour"]), "hosts": 1} for h in hosts]
    else:
        by_place: dict[str, dict[str, Any]] = defaultdict(lambda: {"value": Decimal(0), "hosts": 0})
        for host in hosts:
            place = by_place[_location_path(host["location"], levels)]
            place["value"] += Decimal(host["cost_per_hour"])
            place["hosts"] += 1
        rows = [{"label": label, **values} for label, values in by_place.items()]
    rows.sort(key=lambda r: (-r["value"], r["label"]))
    rows = rows[:SHOWN_HOSTS]
    top = max((r["value"] for r in rows), default=Decimal(0))
    for row in rows:
        row["pct"] = float(100 * row["value"] / top) if top else 0.0
    return rows


def _availability(matching: int, free: int, unavailable: dict[str, int]) -> list[dict]:
    """Segments of one stacked bar: free, then each reason a matching host is not free."""
    if not matching:
        return []
    segments = [{"label": "free", "count": free, "css": "free"}]
    for reason, css in REASON_CLASSES.items():
        if unavailable.get(reason):
            segments.append({"label": reason, "count": unavailable[reason], "css": css})
    for segment in segments:
        segment["pct"] = 100 * segment["count"] / matching
    return [s for s in segments if s["count"]]


def selection_preview(form: SelectionForm, *, cost_unit: str, flavour_error: str = "") -> dict[str, Any]:
    """What the preview fragment shows for the form as typed so far (never raises)."""
    form.is_valid()
    text = form.data.get("requirement", "") or ""
    preview: dict[str, Any] = {"unit": cost_unit, "errors": [], "text": text}
    if flavour_error:
        preview["errors"].append(flavour_error)
    try:
        requirement = Requirement.parse(text)
    except RequirementError as exc:
        where = exc.position + 1 if exc.position is not None else None
        preview["requirement_error"] = {"message": exc.message, "position": where, "pointer": exc.pointer()}
        return preview
    preview["description"] = requirement.describe()
    preview["compact"] = requirement.to_compact()
    errors = form.errors.as_data()
    for name in ("count", *PLACEMENT_FIELDS):
        for error in errors.get(name, ()):
            for message in error:  # the policy's own refusal already says "Placement: …"
                label = form.fields[name].label or name
                preview["errors"].append(message if error.code == PLACEMENT_ERROR else f"{label}: {message}")
    if preview["errors"]:
        return preview
    data = form.cleaned_data
    preview.update(
        selection_result(requirement, data["count"], data["policy"], levels=form.levels, cost_unit=cost_unit)
    )
    return preview


def selection_result(
    requirement: Requirement, count: int, policy: Policy, *, levels: Sequence[str], cost_unit: str
) -> dict[str, Any]:
    """The preview fragment's answer for a valid requirement, count and policy (the select page
    and the node-pool form share it)."""
    data = selection_data(hosts_select(requirement, count, policy, levels=levels), cost_unit)
    hosts = sorted(data["hosts"], key=lambda h: (_location_path(h["location"], levels), h["name"]))
    for host in hosts:
        host["path"] = _location_path(host["location"], levels)
    return {
        "selection": data,
        "count": count,
        "policy_description": data["policy_description"],
        "hosts": hosts[:SHOWN_HOSTS],
        # Hosts are handed over in parallel: the slowest one decides when all are ready.
        "handoff_max": max((h["handoff_seconds"] for h in hosts), default=0),
        "more_hosts": max(0, len(hosts) - SHOWN_HOSTS),
        "chart": _chart_rows(hosts, levels),
        "chart_by_place": len(hosts) > SHOWN_HOSTS,
        "availability": _availability(data["matching"], data["free"], data["unavailable"]),
        "levels": " › ".join(levels),
    }


def _apply_flavour(data: QueryDict) -> tuple[QueryDict, bool, str]:
    """A newly chosen flavour fills the requirement once. Returns the data to use, whether the
    requirement field changed, and an error for a flavour that is gone."""
    chosen, applied = data.get("flavour", ""), data.get("flavour_applied", "")
    if chosen == applied:
        return data, False, ""
    data = data.copy()
    data["flavour_applied"] = chosen
    if not chosen:
        return data, True, ""
    try:
        data["requirement"] = flavour_by_name(chosen).get_requirement().to_compact()
    except InputError as exc:
        return data, True, f"Flavour: {exc.message}"
    except RequirementError as exc:
        return data, True, f"Flavour {chosen}: {exc.message}"
    return data, True, ""


def _trait_names() -> list[str]:
    from hosts.views import trait_names

    names = cache.get("select:traits")
    if names is None:
        names = trait_names()
        cache.set("select:traits", names, TRAITS_SECONDS)
    return names


def _fragment(request: HttpRequest, fleet: FleetSettings) -> HttpResponse:
    data, refilled, flavour_error = _apply_flavour(request.POST)
    form = SelectionForm(data, levels=fleet.topology_levels)
    context = {
        "form": form,
        "preview": selection_preview(form, cost_unit=fleet.cost_unit, flavour_error=flavour_error),
        "refill": refilled,  # out-of-band: the requirement field, filled from the flavour
    }
    response = render(request, "select/partials/preview.html", context)
    patch_vary_headers(response, ("HX-Request",))
    return response


@login_required
@require_http_methods(["GET", "POST"])
def select_page(request: HttpRequest) -> HttpResponse:
    fleet = FleetSettings.load()
    if request.method == "POST" and request.htmx and not request.htmx.history_restore_request:
        return _fragment(request, fleet)
    flavours = list(Flavour.objects.only("name", "description"))
    if request.method == "POST":
        data, _, flavour_error = _apply_flavour(request.POST)
        form = SelectionForm(data, levels=fleet.topology_levels, flavours=flavours)
        preview = selection_preview(form, cost_unit=fleet.cost_unit, flavour_error=flavour_error)
    else:  # the defaults, or what a link says (/select/?requirement=gpu:nvidia-a100&count=4)
        data = QueryDict(mutable=True)
        data.update({"count": "1", "hard": "prefer"})
        for name, value in request.GET.items():
            data[name] = value
        data, _, flavour_error = _apply_flavour(data)
        form = SelectionForm(data, levels=fleet.topology_levels, flavours=flavours)
        preview = selection_preview(form, cost_unit=fleet.cost_unit, flavour_error=flavour_error)
    context = {
        "form": form,
        "preview": preview,
        "terms": TERMS,
        "traits": _trait_names(),
        "levels": fleet.topology_levels,
        "unit": fleet.cost_unit,
    }
    response = render(request, "select/select.html", context)
    patch_vary_headers(response, ("HX-Request",))
    return response


@login_required
@require_POST
def select_preview(request: HttpRequest) -> HttpResponse:
    return _fragment(request, FleetSettings.load())
