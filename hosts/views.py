"""Operator pages of the inventory (``hosts:fleet``, ``hosts:list``, ``hosts:detail``) and the
detail page's actions. Operators only: anonymous people go to the login page, everyone else
gets 403.

Each page is one URL with two templates (STYLE.md §5): the full page, or — for an htmx request
— only the fragment the page itself includes. Writes go through :mod:`hosts.curation`.

Query budget (tests/test_host_pages.py measures it at 10 and 1,000 hosts): the fleet overview
is the fleet settings, one aggregate of the counts, one ``unnest`` of the traits and one slim
list of the active hosts for the rack view; the host list is the fleet settings, the count, one
page of rows without the big JSON columns, and the two look-ups feeding the filter suggestions.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from functools import wraps
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Count, F, Q, Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_POST

from hosts import handoff, topology
from hosts.classify import cost_lines
from hosts.curation import ACTIONS, action_refusal, host_action, host_update
from hosts.filters import CLUSTER_LABEL, STATES, TENANT_LABEL, HostFilterSet, location_label, state_q
from hosts.models import FleetSettings, Host, TraitRule

PAGE_SIZE = 50
TIMELINE_PAGE = 100
# BareMetalHost states in which something is happening: while any host is in one, the fleet
# overview keeps polling; once none is, the server answers 286 and htmx stops.
TRANSITIONAL = (
    "registering",
    "inspecting",
    "preparing",
    "provisioning",
    "deprovisioning",
    "deleting",
    "powering off before delete",
)
HTMX_STOP_POLLING = 286
# What the state badges and the rack view need of a host (never the big JSON columns).
STATE_FIELDS = (
    "id",
    "name",
    "provisioning_state",
    "operational_status",
    "error_type",
    "maintenance",
    "maintenance_reason",
    "deleting",
    "detached",
    "paused",
    "retired_at",
)
LIST_FIELDS = (
    *STATE_FIELDS,
    "traits",
    "cpu_count",
    "ram_mib",
    "accelerators",
    "location",
    "labels",
    "cost_per_hour",
    "cost_override",
    "key_erase_capable",
    "key_erase_seconds",
    "metadata_clean_seconds",
)


def operator_required(view: Callable) -> Callable:
    """Anonymous → login page; signed in but not staff → 403."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not request.user.is_staff:
            raise PermissionDenied("Operators only.")
        return view(request, *args, **kwargs)

    return wrapper


def _fragment_wanted(request: HttpRequest) -> bool:
    # A history restore (back button after a cache miss) needs the whole page, not the fragment.
    return bool(request.htmx) and not request.htmx.history_restore_request


def _vary(response: HttpResponse) -> HttpResponse:
    # Same URL, two bodies: caches must not hand a fragment to a full page load.
    patch_vary_headers(response, ("HX-Request",))
    return response


def _natural(value: str) -> tuple:
    """'r10' after 'r9': digits compare as numbers."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", value) if part)


def _location_query(path: Sequence[str], levels: Sequence[str]) -> str:
    return urlencode(dict(zip(levels, path, strict=False)))


# --------------------------------------------------------------------------- fleet overview


def fleet_counts() -> dict:
    """Every count of the overview in one aggregate query."""
    active = Q(retired_at__isnull=True)
    aggregates = {f"state_{i}": Count("id", filter=state_q(state)) for i, state in enumerate(STATES)}
    aggregates.update(
        total=Count("id", filter=active),
        cost=Sum("cost_per_hour", filter=active),
        transitional=Count("id", filter=active & (Q(provisioning_state__in=TRANSITIONAL) | Q(deleting=True))),
    )
    row = Host.objects.aggregate(**aggregates)
    return {
        "states": [(state, row[f"state_{i}"]) for i, state in enumerate(STATES)],
        "total": row["total"],
        "cost": row["cost"] or 0,
        "transitional": row["transitional"],
    }


def trait_counts() -> list[tuple[str, int]]:
    """(trait, active hosts carrying it), most common first: one ``unnest`` in SQL."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT trait, COUNT(*) FROM {Host._meta.db_table}, unnest(traits) AS trait "  # noqa: S608 (model's table)
            "WHERE retired_at IS NULL GROUP BY trait ORDER BY COUNT(*) DESC, trait"
        )
        return [(trait, count) for trait, count in cursor.fetchall()]


def trait_names() -> list[str]:
    """The traits hosts can carry (rule names and manual traits in use), for the filter suggestions:
    one small query instead of unnesting every host's traits."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT name FROM {TraitRule._meta.db_table} "  # noqa: S608 (the models' tables)
            f"UNION SELECT DISTINCT unnest(manual_traits) FROM {Host._meta.db_table} "
            "WHERE manual_traits <> '{}' AND retired_at IS NULL ORDER BY 1"
        )
        return [name for (name,) in cursor.fetchall()]


def rack_view(levels: Sequence[str]) -> dict:
    """The active hosts by rack (the deepest level), racks grouped by the level above, plus the
    counts per bucket of the upper levels. One query."""
    detail_url = reverse("hosts:detail", args=["host-name-placeholder"])
    deepest = levels[-1]
    groups: dict[tuple, dict[tuple, list]] = defaultdict(lambda: defaultdict(list))
    unplaced: list[dict] = []
    upper = list(levels[:-1]) or list(levels)
    per_level: dict[str, Counter] = {level: Counter() for level in upper}
    for host in Host.objects.filter(retired_at__isnull=True).only(*STATE_FIELDS, "location").order_by("name"):
        label = host.state_label
        cell = {
            "name": host.name,
            "url": detail_url.replace("host-name-placeholder", host.name),
            "label": label,
            "tone": state_tone(label),
            "maintenance": host.maintenance,
            "reason": host.maintenance_reason,
        }
        location = host.location or {}
        for level in upper:
            path = topology.bucket(location, level, levels)
            if path:
                per_level[level][path] += 1
        rack = topology.bucket(location, deepest, levels)
        if rack is None:
            unplaced.append(cell)
        else:
            groups[rack[:-1]][rack].append(cell)
    rack_groups = []
    for parent in sorted(groups, key=lambda p: tuple(_natural(v) for v in p)):
        racks = groups[parent]
        rack_groups.append(
            {
                "label": topology.label(parent, levels) if parent else "",
                "query": _location_query(parent, levels),
                "count": sum(len(cells) for cells in racks.values()),
                "racks": [
                    {
                        "label": f"{deepest} {path[-1]}",
                        "title": topology.label(path, levels),
                        "query": _location_query(path, levels),
                        "hosts": racks[path],
                    }
                    for path in sorted(racks, key=lambda p: _natural(p[-1]))
                ],
            }
        )
    if unplaced:
        rack_groups.append(
            {"unplaced": True, "count": len(unplaced), "racks": [{"label": "", "query": "", "hosts": unplaced}]}
        )
    locations = [
        {
            "level": level,
            "buckets": [
                {"label": topology.label(path, levels), "query": _location_query(path, levels), "count": count}
                for path, count in sorted(
                    per_level[level].items(), key=lambda item: tuple(_natural(v) for v in item[0])
                )
            ],
        }
        for level in upper
    ]
    return {"groups": rack_groups, "unplaced": len(unplaced), "locations": locations}


def state_tone(label: str) -> str:
    """The colour family of a state label (badges, rack cells and the legend share it)."""
    if label.startswith("error"):
        return "error"
    if label in ("available", "ready"):
        return "available"
    if label in ("provisioned", "externally provisioned"):
        return "inuse"
    if label in TRANSITIONAL:
        return "busy"
    if label in ("maintenance", "retired"):
        return label
    return "other"


# Always shown on the overview, even at zero; the other states only when some host is in them.
HEADLINE_STATES = ("available", "provisioned", "provisioning", "inspecting", "error", "maintenance")
LEGEND = (
    ("available", "available"),
    ("inuse", "provisioned (in use)"),
    ("busy", "in progress (registering, inspecting, provisioning…)"),
    ("error", "error"),
    ("maintenance", "maintenance"),
    ("other", "other (new, unmanaged, paused, detached)"),
)


@operator_required
@require_GET
def fleet(request: HttpRequest) -> HttpResponse:
    settings = FleetSettings.load()
    levels = list(settings.topology_levels)
    counts = fleet_counts()
    live = counts["transitional"] > 0
    context = {
        "counts": counts,
        "states": [
            {"state": state, "count": count, "tone": state_tone(state), "headline": state in HEADLINE_STATES}
            for state, count in counts["states"]
        ],
        "headline": sorted(
            ({"state": s, "count": n, "tone": state_tone(s)} for s, n in counts["states"] if s in HEADLINE_STATES),
            key=lambda item: HEADLINE_STATES.index(item["state"]),
        ),
        "traits": trait_counts(),
        "racks": rack_view(levels) if levels else {"groups": [], "unplaced": 0, "locations": []},
        "levels": levels,
        "cost_unit": settings.cost_unit,
        "live": live,
        "legend": LEGEND,
    }
    if _fragment_wanted(request):
        context["oob"] = True
        # 286 tells htmx to stop polling: nothing is moving, the page would not change.
        status = 200 if live else HTMX_STOP_POLLING
        return _vary(render(request, "hosts/partials/fleet_live.html", context, status=status))
    return _vary(render(request, "hosts/fleet.html", context))


# --------------------------------------------------------------------------- host list

SORTABLE = ("name", "state", "cost", "cores", "ram", "accelerators")


def _filter_form_widgets(filterset: HostFilterSet) -> None:
    """Shape the FilterSet's form for the page (the API uses the same filters without a form)."""
    fields = filterset.form.fields
    fields["state"].widget = forms.CheckboxSelectMultiple(choices=fields["state"].choices)
    fields["maintenance"].widget = forms.Select(
        choices=[("", "any"), ("true", "in maintenance"), ("false", "not in maintenance")]
    )
    placeholders = {
        "q": "name, serial, product or MAC",
        "trait": "e.g. nvme, gpu-a100",
        "tenant": "tenant, or none",
        "accelerator": "e.g. nvidia-a100",
        "location": f"e.g. {filterset.levels[0]}=…,{filterset.levels[-1]}=…" if filterset.levels else "",
    }
    for name, field in fields.items():
        field.widget.attrs["aria-describedby"] = f"err-{name}"
        if name in placeholders:
            field.widget.attrs["placeholder"] = placeholders[name]
        if name in filterset.levels:
            field.widget.attrs["list"] = f"options-{name}"
    fields["q"].widget.attrs["type"] = "search"
    fields["trait"].widget.attrs["list"] = "options-trait"


def _level_values(levels: Sequence[str]) -> dict[str, list[str]]:
    """The values in use at each level, for the filter suggestions (one query over distinct locations)."""
    seen: dict[str, set[str]] = {level: set() for level in levels}
    locations = Host.objects.filter(retired_at__isnull=True).order_by().values_list("location", flat=True).distinct()
    for location in locations:
        for level in levels:
            value = (location or {}).get(level)
            if value:
                seen[level].add(str(value))
    return {level: sorted(values, key=_natural) for level, values in seen.items()}


SUGGESTIONS_SECONDS = 60


def _suggestions(levels: Sequence[str]) -> dict:
    """Trait names and location values for the filter fields' suggestion lists, cached for a
    minute: two scans of the fleet that need not run on every keystroke."""
    key = f"hosts:suggestions:{','.join(levels)}"
    found = cache.get(key)
    if found is None:
        found = {"traits": trait_names(), "levels": _level_values(levels)}
        cache.set(key, found, SUGGESTIONS_SECONDS)
    return found


def _sort_headers(request: HttpRequest) -> dict[str, dict]:
    current = request.GET.get("ordering") or "name"
    headers = {}
    for key in SORTABLE:
        if current == key:
            aria, arrow, following = "ascending", "▲", f"-{key}"
        elif current == f"-{key}":
            aria, arrow, following = "descending", "▼", key
        else:
            aria, arrow, following = "", "", key
        query = request.GET.copy()
        query["ordering"] = following
        query.pop("page", None)
        headers[key] = {"aria": aria, "arrow": arrow, "url": f"?{query.urlencode()}"}
    return headers


def _page_urls(request: HttpRequest, page) -> dict[str, str]:
    def url(number: int) -> str:
        query = request.GET.copy()
        query["page"] = str(number)
        return f"?{query.urlencode()}"

    return {
        "first": url(1),
        "previous": url(page.previous_page_number()) if page.has_previous() else "",
        "next": url(page.next_page_number()) if page.has_next() else "",
        "last": url(page.paginator.num_pages),
    }


class ListedHost:
    """A row of the host list: the host plus what the row shows, computed once."""

    def __init__(self, host: Host, levels: Sequence[str]):
        self.host = host
        self.label = host.state_label
        self.tone = state_tone(self.label)
        self.location = location_label(host, levels)
        # The cells show the values; the column header names the levels, the title the whole label.
        self.location_values = [host.location[level] for level in levels if (host.location or {}).get(level)]
        self.tenant = (host.labels or {}).get(TENANT_LABEL, "")
        self.handoff_seconds = host.handoff_estimate_seconds
        self.handoff_mode = "key erase" if host.key_erase_capable else "metadata"


@operator_required
@require_GET
def host_list(request: HttpRequest) -> HttpResponse:
    settings = FleetSettings.load()
    levels = list(settings.topology_levels)
    filterset = HostFilterSet(request.GET or None, queryset=Host.objects.only(*LIST_FIELDS), levels=levels)
    suggestions = _suggestions(levels)
    traits = suggestions["traits"]
    _filter_form_widgets(filterset)
    valid = filterset.is_valid() if filterset.is_bound else True
    queryset = filterset.qs
    queryset = queryset.order_by(*queryset.query.order_by, "pk")  # stable pages when sorting by cost
    page = Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))
    form = filterset.form
    context = {
        "filterset": filterset,
        "form": form,
        "valid": valid,
        "level_fields": [form[level] for level in levels],
        "levels": levels,
        "level_values": suggestions["levels"],
        "trait_names": traits,
        "page": page,
        "rows": [ListedHost(host, levels) for host in page.object_list],
        "page_urls": _page_urls(request, page),
        "sort": _sort_headers(request),
        "cost_unit": settings.cost_unit,
        "filtered": bool(request.GET.keys() - {"page", "ordering"}),
    }
    if _fragment_wanted(request):
        return _vary(render(request, "hosts/partials/host_results.html", {**context, "oob": True}))
    return _vary(render(request, "hosts/host_list.html", context))


# --------------------------------------------------------------------------- host detail


class HostEditForm(forms.Form):
    """The operator's own fields of a host; the rules are :func:`hosts.curation.host_update`'s."""

    notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    manual_traits = forms.CharField(
        required=False,
        label="Manual traits",
        help_text="Comma-separated, on top of the rules' traits, e.g. spare, fast-network.",
    )
    cost_override = forms.CharField(
        required=False, label="Cost override per hour", help_text="Empty: the fleet's cost model decides."
    )
    key_erase_capable = forms.BooleanField(
        required=False,
        label="Key erase capable",
        help_text="Disks encrypted with a per-tenant key: hand-off erases the key instead of cleaning.",
    )

    def __init__(self, *args, levels: Sequence[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.levels = list(levels)
        self.location_errors: list[str] = []
        for level in self.levels:
            self.fields[f"location_{level}"] = forms.CharField(required=False, label=level.capitalize())

    @classmethod
    def for_host(cls, host: Host, levels: Sequence[str]) -> HostEditForm:
        initial = {
            "notes": host.notes,
            "manual_traits": ", ".join(host.manual_traits or []),
            "cost_override": "" if host.cost_override is None else f"{host.cost_override.normalize():f}",
            "key_erase_capable": host.key_erase_capable,
        }
        initial.update({f"location_{level}": (host.location or {}).get(level, "") for level in levels})
        return cls(initial=initial, levels=levels, auto_id="edit-%s")

    def location_fields(self) -> list:
        return [self[f"location_{level}"] for level in self.levels]

    def service_values(self) -> dict:
        data = self.cleaned_data
        return {
            "notes": data["notes"],
            "manual_traits": [t for t in (p.strip() for p in data["manual_traits"].split(",")) if t],
            "cost_override": data["cost_override"].strip() or None,
            "key_erase_capable": data["key_erase_capable"],
            "location": {level: data[f"location_{level}"].strip() for level in self.levels},
        }

    def add_service_errors(self, error: ValidationError) -> None:
        for key, errors in error.message_dict.items():
            if key == "location":
                self.location_errors.extend(errors)
            else:
                self.add_error(key if key in self.fields else None, errors)


def host_lookup(name: str) -> Host:
    """The active host of that name, else the most recently retired one; 404 when there is none."""
    host = Host.objects.filter(name=name).order_by(F("retired_at").desc(nulls_first=True), "-id").first()
    if host is None:
        raise Http404(f"No host named {name}.")
    return host


def _detail_context(
    request: HttpRequest,
    host: Host,
    *,
    edit_form: HostEditForm | None = None,
    notice: tuple[str, str] | None = None,
    maintenance_error: str = "",
    maintenance_reason: str = "",
) -> dict:
    settings = FleetSettings.load()
    levels = list(settings.topology_levels)
    changes = host.state_changes.order_by("-at", "-id")
    timeline = Paginator(changes, TIMELINE_PAGE).get_page(request.GET.get("changes"))
    cost = cost_lines(host, _cost_model(settings))
    labels = host.labels or {}
    path = tuple(host.location.get(level) for level in levels if (host.location or {}).get(level))
    rule_traits, manual_traits = set(host.rule_traits or ()), set(host.manual_traits or ())
    return {
        "host": host,
        "label": host.state_label,
        "tone": state_tone(host.state_label),
        "levels": levels,
        "location_steps": [
            {"level": level, "value": value, "query": _location_query(path[: i + 1], levels)}
            for i, (level, value) in enumerate(zip(levels, path, strict=False))
        ],
        "location_label": topology.label(path, levels),
        "traits": [
            {"name": t, "rule": t in rule_traits, "manual": t in manual_traits}
            for t in sorted(rule_traits | manual_traits | set(host.traits or ()))
        ],
        "cost": cost,
        "cost_unit": settings.cost_unit,
        "handoff": {
            "key_erase": host.key_erase_seconds if host.key_erase_seconds is not None else handoff.KEY_ERASE_SECONDS,
            "metadata": host.metadata_clean_seconds
            if host.metadata_clean_seconds is not None
            else handoff.METADATA_SECONDS,
            "full": host.full_clean_estimate_seconds,
            "best": host.handoff_estimate_seconds,
        },
        "tenant": labels.get(TENANT_LABEL, ""),
        "cluster": labels.get(CLUSTER_LABEL, ""),
        "actions": [
            {"action": action, "label": text, "refusal": action_refusal(host, action)}
            for action, text in ACTIONS.items()
        ],
        "timeline": timeline,
        "edit_form": edit_form or HostEditForm.for_host(host, levels),
        "notice": notice,
        "maintenance_error": maintenance_error,
        "maintenance_reason": maintenance_reason,
    }


def _cost_model(settings: FleetSettings):
    from hosts.costs import CostModel, CostModelError

    try:
        return settings.get_cost_model()
    except CostModelError:
        return CostModel()


def _render_detail(request: HttpRequest, host: Host, *, status: int = 200, **extra) -> HttpResponse:
    context = _detail_context(request, host, **extra)
    if _fragment_wanted(request):
        # htmx does not swap 4xx answers: a refusal is shown with 200, its message says why.
        return _vary(render(request, "hosts/partials/host_detail_body.html", context))
    return _vary(render(request, "hosts/host_detail.html", context, status=status))


def _done(request: HttpRequest, host: Host, message: str) -> HttpResponse:
    """After a successful write: htmx gets the re-rendered detail with the message, a plain
    form post is redirected (post/redirect/get) with the message in the session."""
    if _fragment_wanted(request):
        response = _render_detail(request, host, notice=("success", message))
        response["HX-Retarget"] = "#host-detail"
        response["HX-Reswap"] = "outerHTML show:top"
        return response
    messages.success(request, message)
    return redirect("hosts:detail", name=host.name)


@operator_required
@require_GET
def host_detail(request: HttpRequest, name: str) -> HttpResponse:
    return _render_detail(request, host_lookup(name))


@operator_required
@require_POST
def host_maintenance(request: HttpRequest, name: str) -> HttpResponse:
    host = host_lookup(name)
    on = request.POST.get("maintenance") == "on"
    reason = request.POST.get("reason", "")
    try:
        host = host_update(host, actor=request.user, maintenance=on, maintenance_reason=reason if on else "")
    except ValidationError as exc:
        why = "; ".join(f"{m}" for messages_ in exc.message_dict.values() for m in messages_)
        return _render_detail(
            request, host, status=400, maintenance_error=why, maintenance_reason=reason, notice=("error", why)
        )
    return _done(request, host, f"{host.name} is in maintenance." if on else f"{host.name} is out of maintenance.")


@operator_required
@require_POST
def host_action_view(request: HttpRequest, name: str, action: str) -> HttpResponse:
    host = host_lookup(name)
    if action not in ACTIONS:
        raise Http404(f"No action {action}.")
    try:
        host_action(host, action, actor=request.user)
    except ValidationError as exc:
        why = "; ".join(exc.message_dict.get("action", exc.messages))
        return _render_detail(request, host, status=400, notice=("error", f"{ACTIONS[action]} refused: {why}."))
    host.refresh_from_db()
    return _done(request, host, f"{ACTIONS[action]} of {host.name} requested: the page follows the BareMetalHost.")


@operator_required
@require_POST
def host_edit(request: HttpRequest, name: str) -> HttpResponse:
    host = host_lookup(name)
    levels = list(FleetSettings.load().topology_levels)
    form = HostEditForm(request.POST, levels=levels, auto_id="edit-%s")
    if form.is_valid():
        try:
            host = host_update(host, actor=request.user, **form.service_values())
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            return _done(request, host, f"{host.name} saved.")
    if _fragment_wanted(request):
        context = _detail_context(request, host, edit_form=form)
        return _vary(render(request, "hosts/partials/host_edit.html", context))
    return _render_detail(request, host, status=400, edit_form=form, notice=("error", "Nothing saved: see below."))
