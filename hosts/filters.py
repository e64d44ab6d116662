"""The host list's filters: one FilterSet for the operator pages and the API (``?state=…&trait=…``).

* ``state`` — one or more of :data:`STATES`: the BareMetalHost provisioning states, plus
  ``error`` (operational status error), ``maintenance`` and ``retired``. Without ``state`` or
  ``lifecycle`` only active hosts are listed.
* ``trait`` — repeatable; a host must carry every one (GIN index on ``traits``).
* ``location`` — ``room=a,rack=r3`` (any subset of the levels); each level is also its own
  parameter (``?room=a&rack=r3``), added from the fleet's current topology levels.
* ``tenant`` — the tenant a host is allocated to (the ``teapot.io/tenant`` label Teapot puts on
  the BareMetalHosts it hands out); ``tenant=none`` lists unallocated hosts.
* ``maintenance`` — true/false; ``q`` — name, serial, product or boot MAC contains (tenant
  members: name and product only; they cannot filter by ``tenant`` either — ``operator=False``);
  ``lifecycle`` — active (default), retired or all; ``accelerator`` — an accelerator type.
* ``ordering`` — name, state, cost, cores, ram, accelerators, last_synced (``-`` for descending).
"""

from __future__ import annotations

import django_filters as df
from django.core.exceptions import ValidationError
from django.db.models import Q

from hosts import topology
from hosts.models import FleetSettings, Host

TENANT_LABEL = "teapot.io/tenant"
CLUSTER_LABEL = "teapot.io/cluster"

PROVISIONING_STATES = (
    "registering",
    "inspecting",
    "preparing",
    "available",
    "provisioning",
    "provisioned",
    "deprovisioning",
    "externally provisioned",
    "powering off before delete",
    "deleting",
    "unmanaged",
)
STATES = (*PROVISIONING_STATES, "error", "maintenance", "retired")
ORDERING = {
    "name": "name",
    "state": "provisioning_state",
    "cost": "cost_per_hour",
    "cores": "cpu_count",
    "ram": "ram_mib",
    "accelerators": "accelerator_count",
    "last_synced": "last_synced_at",
}


def state_q(state: str) -> Q:
    if state == "error":
        return Q(operational_status="error", retired_at__isnull=True)
    if state == "maintenance":
        return Q(maintenance=True, retired_at__isnull=True)
    if state == "retired":
        return Q(retired_at__isnull=False)
    return Q(provisioning_state=state, retired_at__isnull=True)


def parse_location(value: str, levels: list[str]) -> dict[str, str]:
    """``room=a,rack=r3`` → {"room": "a", "rack": "r3"}; unknown levels are refused by name."""
    out = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        level, sep, val = part.partition("=")
        level, val = level.strip().lower(), val.strip()
        if not sep or not val:
            raise ValidationError(f"{part!r}: write level=value, e.g. {levels[-1]}=r1")
        if level not in levels:
            raise ValidationError(f"unknown level {level!r}; the levels are {' > '.join(levels)}")
        out[level] = val
    return out


class HostFilterSet(df.FilterSet):
    state = df.MultipleChoiceFilter(choices=[(s, s) for s in STATES], method="filter_state", label="State")
    trait = df.CharFilter(method="filter_trait", label="Trait")
    location = df.CharFilter(method="filter_location", label="Location (level=value,…)")
    tenant = df.CharFilter(method="filter_tenant", label="Tenant")
    maintenance = df.BooleanFilter(field_name="maintenance", label="In maintenance")
    accelerator = df.CharFilter(method="filter_accelerator", label="Accelerator type")
    lifecycle = df.ChoiceFilter(
        choices=[("active", "active"), ("retired", "retired"), ("all", "all")],
        method="filter_lifecycle",
        empty_label="active (default)",
        label="Lifecycle",
    )
    q = df.CharFilter(method="filter_q", label="Search")
    ordering = df.OrderingFilter(fields={v: k for k, v in ORDERING.items()}, label="Order by")

    class Meta:
        model = Host
        fields: list[str] = []

    def __init__(self, data=None, *args, levels: list[str] | None = None, operator: bool = True, **kwargs):
        super().__init__(data, *args, **kwargs)
        # Tenant members may filter too, but allocations and identifiers are not theirs to probe:
        # ``tenant`` is refused and ``q`` matches names and products only (not serials or MACs).
        self.operator = operator
        self.levels = levels if levels is not None else list(FleetSettings.load().topology_levels)
        for level in self.levels:
            if level not in self.filters:
                self.filters[level] = df.CharFilter(method="filter_level", label=level.capitalize())
                self.filters[level].field_name = level
                self.filters[level].parent = self

    # ------------------------------------------------------------------ the queryset

    @property
    def qs(self):
        qs = super().qs
        data = self.form.cleaned_data if self.is_bound and hasattr(self.form, "cleaned_data") else {}
        if not data.get("state") and not data.get("lifecycle"):
            qs = qs.filter(retired_at__isnull=True)
        if not data.get("ordering"):
            qs = qs.order_by("name")
        return qs

    def filter_state(self, queryset, name, value):
        if not value:
            return queryset
        q = Q()
        for state in value:
            q |= state_q(state)
        return queryset.filter(q)

    def filter_trait(self, queryset, name, value):
        traits = [t for t in (self.data.getlist("trait") if hasattr(self.data, "getlist") else [value]) if t]
        traits = sorted({t.strip().lower() for t in ",".join(traits).split(",") if t.strip()})
        return queryset.filter(traits__contains=traits) if traits else queryset

    def get_form_class(self):
        levels, operator, base = self.levels, self.operator, super().get_form_class()

        class HostFilterForm(base):
            def clean_tenant(self):
                if self.cleaned_data.get("tenant") and not operator:
                    raise ValidationError("Only operators can filter by tenant.")
                return self.cleaned_data.get("tenant") or ""

            def clean_location(self):
                value = self.cleaned_data.get("location") or ""
                if value:
                    parse_location(value, levels)  # a ValidationError becomes the field's error
                return value

        return HostFilterForm

    def filter_location(self, queryset, name, value):
        location = parse_location(value, self.levels)
        return queryset.filter(**{f"location__{level}": val for level, val in location.items()})

    def filter_level(self, queryset, name, value):
        return queryset.filter(**{f"location__{name}": value}) if value else queryset

    def filter_tenant(self, queryset, name, value):
        if value.strip().lower() == "none":
            return queryset.exclude(labels__has_key=TENANT_LABEL)
        return queryset.filter(**{f"labels__{TENANT_LABEL}": value.strip()})

    def filter_accelerator(self, queryset, name, value):
        return queryset.filter(accelerators__contains=[{"type": value.strip()}]) if value.strip() else queryset

    def filter_lifecycle(self, queryset, name, value):
        if value == "retired":
            return queryset.filter(retired_at__isnull=False)
        if value == "all":
            return queryset
        return queryset.filter(retired_at__isnull=True)

    def filter_q(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        q = Q(name__icontains=value) | Q(system_product__icontains=value)
        if self.operator:
            q |= Q(system_serial__icontains=value) | Q(boot_mac__iexact=value.lower())
        return queryset.filter(q)


def location_label(host: Host, levels: list[str]) -> str:
    path = tuple(host.location.get(level) for level in levels if host.location.get(level))
    return topology.label(path, levels)
