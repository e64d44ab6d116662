"""Operators see the inventory and curate their own fields; the mirror and its history are read-only.

A host comes from its BareMetalHost and goes (retired) when that disappears, so the admin
neither adds nor deletes hosts. The state history is append-only — no add, change or delete
here, and PostgreSQL refuses UPDATE and DELETE on it anyway (migration 0002).

Every change goes through :mod:`hosts.curation`, like the operator pages and the API: saving a
host records maintenance and trait changes with the operator's name and reclassifies it; the
bulk actions (maintenance on/off, power on/off, re-inspect, retire) queue the same work and say
which hosts refused and why. Saving or deleting a classification rule reclassifies the fleet.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from hosts import curation
from hosts.models import FleetSettings, Host, HostEnrolment, HostStateChange, SyncCursor, TraitRule

OPERATOR_FIELDS = (
    "maintenance",
    "maintenance_reason",
    "notes",
    "location",
    "manual_traits",
    "cost_override",
    "key_erase_capable",
)
RECENT_CHANGES = 20


def _report(modeladmin, request, verb: str, done: int, refused: list[str]) -> None:
    if done:
        modeladmin.message_user(request, f"{verb}: {done} host(s).", messages.SUCCESS)
    if refused:
        shown = "; ".join(refused[:10]) + (f"; and {len(refused) - 10} more" if len(refused) > 10 else "")
        modeladmin.message_user(request, f"Not done for {len(refused)} host(s): {shown}", messages.WARNING)


@admin.action(description="Put in maintenance (not allocatable)")
def maintenance_on(modeladmin, request, queryset):
    changed = curation.hosts_set_maintenance(queryset, on=True, reason="set in the admin", actor=request.user)
    _report(modeladmin, request, "In maintenance", changed, [])


@admin.action(description="Take out of maintenance")
def maintenance_off(modeladmin, request, queryset):
    changed = curation.hosts_set_maintenance(queryset, on=False, actor=request.user)
    _report(modeladmin, request, "Out of maintenance", changed, [])


def _bmh_action(action: str, description: str):
    def run(modeladmin, request, queryset):
        queued, refused = curation.hosts_action(list(queryset), action, actor=request.user)
        _report(modeladmin, request, f"{curation.ACTIONS[action]} queued", queued, refused)

    run.__name__ = f"action_{action.replace('-', '_')}"
    return admin.action(description=description)(run)


power_on = _bmh_action("power-on", "Power on")
power_off = _bmh_action("power-off", "Power off (refused for hosts in use)")
reinspect = _bmh_action("inspect", "Re-inspect hardware")
retire = _bmh_action("retire", "Retire (delete the BareMetalHost; refused for hosts in use)")


class HostAdminForm(forms.ModelForm):
    class Meta:
        model = Host
        fields = OPERATOR_FIELDS


class TraitFilter(admin.SimpleListFilter):
    title = "trait"
    parameter_name = "trait"

    def lookups(self, request, model_admin):
        names = set(TraitRule.objects.values_list("name", flat=True))
        for traits in Host.objects.exclude(manual_traits=[]).values_list("manual_traits", flat=True).distinct():
            names.update(traits)
        return [(name, name) for name in sorted(names)]

    def queryset(self, request, queryset):
        return queryset.filter(traits__contains=[self.value()]) if self.value() else queryset


class ActiveFilter(admin.SimpleListFilter):
    title = "lifecycle"
    parameter_name = "lifecycle"

    def lookups(self, request, model_admin):
        return [("active", "active"), ("retired", "retired")]

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(retired_at__isnull=True)
        if self.value() == "retired":
            return queryset.filter(retired_at__isnull=False)
        return queryset


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    form = HostAdminForm
    actions = (maintenance_on, maintenance_off, power_on, power_off, reinspect, retire)
    list_display = (
        "name",
        "state",
        "traits_label",
        "cost_per_hour",
        "provisioning_state",
        "operational_status",
        "error_type",
        "cpu_count",
        "ram",
        "accelerators_label",
        "consumer",
        "maintenance",
        "retired_at",
    )
    list_filter = (
        ActiveFilter,
        "provisioning_state",
        "operational_status",
        "error_type",
        "maintenance",
        "architecture",
        "key_erase_capable",
        "system_product",
        TraitFilter,
    )
    search_fields = ("name", "uid", "boot_mac", "bmc_address", "system_serial", "system_product", "consumer")
    list_per_page = 100
    fieldsets = (
        (None, {"fields": ("name", "namespace", "uid", "state", "sync_error")}),
        ("Operator", {"fields": OPERATOR_FIELDS}),
        ("Classification and cost", {"fields": ("rule_traits", "traits", "cost_per_hour", "cost_explained")}),
        (
            "BareMetalHost",
            {
                "fields": (
                    "provisioning_state",
                    "operational_status",
                    ("error_type", "error_count"),
                    "error_message",
                    ("online", "powered_on"),
                    ("paused", "detached", "deleting"),
                    "consumer",
                    "image_url",
                    "bmc_address",
                    "boot_mac",
                    "architecture",
                    "automated_cleaning_mode",
                    "root_device_hints",
                    "labels",
                    "resource_version",
                )
            },
        ),
        (
            "Hardware",
            {
                "fields": (
                    ("system_vendor", "system_product", "system_serial"),
                    ("cpu_model", "cpu_count", "cpu_mhz"),
                    "cpu_flags",
                    "ram_mib",
                    ("disk_count", "disk_total_bytes"),
                    "disks",
                    "nic_max_speed_gbps",
                    "nics",
                    ("accelerator_count", "accelerators"),
                    "firmware",
                    "hardware_warnings",
                    "hardware",
                )
            },
        ),
        ("Hand-off", {"fields": ("key_erase_seconds", "metadata_clean_seconds", "full_clean_seconds")}),
        ("History", {"fields": ("recent_changes", "first_seen_at", "last_synced_at", "retired_at", "updated_at")}),
    )

    def get_readonly_fields(self, request, obj=None):
        editable = set(OPERATOR_FIELDS)
        return [f.name for f in Host._meta.concrete_fields if f.name not in editable] + [
            "state",
            "recent_changes",
            "cost_explained",
        ]

    def save_model(self, request, obj, form, change):
        """Through hosts.curation.host_update: history with the operator's name, reclassification."""
        fields = {name: form.cleaned_data[name] for name in form.changed_data if name in OPERATOR_FIELDS}
        if not fields:
            return
        try:
            curation.host_update(obj, actor=request.user, **fields)
        except ValidationError as exc:  # the form checked types; the service checks meaning
            self.message_user(
                request, "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items()), messages.ERROR
            )

    @admin.display(description="traits")
    def traits_label(self, host: Host) -> str:
        return ", ".join(host.traits)

    @admin.display(description="cost explained")
    def cost_explained(self, host: Host) -> str:
        from hosts.classify import cost_lines

        cost = cost_lines(host)
        return format_html_join("", "<div>{}: {}</div>", ((text, amount) for text, amount in cost.lines))

    def has_add_permission(self, request) -> bool:
        return False  # hosts come from BareMetalHosts (enrolment is its own service)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # a vanished BareMetalHost retires its host; history keeps pointing at it

    @admin.display(description="state", ordering="provisioning_state")
    def state(self, host: Host) -> str:
        return host.state_label

    @admin.display(description="RAM", ordering="ram_mib")
    def ram(self, host: Host) -> str:
        return f"{host.ram_gib} GiB" if host.ram_mib else ""

    @admin.display(description="recent changes")
    def recent_changes(self, host: Host) -> str:
        changes = host.state_changes.order_by("-at", "-id")[:RECENT_CHANGES]
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((f"{c.at:%Y-%m-%d %H:%M:%S}", c.field, c.old, c.new) for c in changes),
        )
        url = reverse("admin:hosts_hoststatechange_changelist") + f"?host__id__exact={host.pk}"
        return format_html('<table>{}</table><a href="{}">all changes</a>', rows, url)


@admin.register(HostStateChange)
class HostStateChangeAdmin(admin.ModelAdmin):
    list_display = ("at", "host", "field", "old", "new", "reported_at")
    list_filter = ("field",)
    search_fields = ("host__name",)
    list_select_related = ("host",)
    date_hierarchy = "at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(SyncCursor)
class SyncCursorAdmin(admin.ModelAdmin):
    list_display = ("key", "resource_version", "updated_at")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(HostEnrolment)
class HostEnrolmentAdmin(admin.ModelAdmin):
    """Enrolment requests and their outcome. Credentials are never shown (they are sealed, then wiped)."""

    list_display = ["name", "bmc_address", "boot_mac", "state", "error", "attempts", "requested_by", "created_at"]
    list_filter = ["state"]
    search_fields = ["name", "boot_mac", "bmc_address"]
    exclude = ["sealed_credentials"]
    readonly_fields = [
        "name",
        "bmc_address",
        "boot_mac",
        "location",
        "notes",
        "key_erase_capable",
        "root_device_name",
        "state",
        "error",
        "attempts",
        "requested_by",
        "created_at",
        "applied_at",
    ]

    def has_add_permission(self, request) -> bool:
        return False  # enrolment goes through host_enrol (operator pages, API, import)


class TraitRuleForm(forms.ModelForm):
    class Meta:
        model = TraitRule
        fields = ("name", "rule", "description", "enabled")
        widgets = {"rule": forms.Textarea(attrs={"rows": 3, "style": "font-family: monospace"})}


@admin.register(TraitRule)
class TraitRuleAdmin(admin.ModelAdmin):
    """Automatic traits from hardware; saved through hosts.curation, so the fleet is reclassified."""

    form = TraitRuleForm
    list_display = ("name", "rule", "enabled", "hosts", "updated_at")
    list_filter = ("enabled",)
    search_fields = ("name", "rule", "description")
    actions = ("delete_and_reclassify",)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # deleting goes through the service (reclassifies)
        return actions

    def get_queryset(self, request):
        return super().get_queryset(request).with_host_counts()

    @admin.display(description="hosts with the trait", ordering="host_count")
    def hosts(self, rule: TraitRule) -> int:
        return rule.host_count

    def save_model(self, request, obj, form, change):
        curation.trait_rule_save(
            name=obj.name,
            rule=obj.rule,
            description=obj.description,
            enabled=obj.enabled,
            instance=obj if change else None,
        )

    def delete_model(self, request, obj):
        curation.trait_rule_delete(obj)

    @admin.action(description="Delete the rules and reclassify the fleet")
    def delete_and_reclassify(self, request, queryset):
        count = 0
        for rule in queryset:
            curation.trait_rule_delete(rule)
            count += 1
        self.message_user(request, f"Deleted {count} rule(s); the fleet is being reclassified.", messages.SUCCESS)


class FleetSettingsForm(forms.ModelForm):
    class Meta:
        model = FleetSettings
        fields = (
            "topology_levels",
            "cost_unit",
            "cost_model",
            "preemption_notice_seconds",
            "minimum_cleaning",
            "provisioning_attempts",
            "reservation_extend_window_hours",
            "reservation_max_hours",
            "reservation_horizon_days",
            "reservation_reminder_minutes",
        )

    def clean(self):
        data = super().clean()
        try:
            curation.fleet_settings_check(
                topology_levels=data.get("topology_levels"),
                cost_model=data.get("cost_model"),
                cost_unit=data.get("cost_unit"),
                preemption_notice_seconds=data.get("preemption_notice_seconds"),
                minimum_cleaning=data.get("minimum_cleaning"),
                provisioning_attempts=data.get("provisioning_attempts"),
                reservation_extend_window_hours=data.get("reservation_extend_window_hours"),
                reservation_max_hours=data.get("reservation_max_hours"),
                reservation_horizon_days=data.get("reservation_horizon_days"),
                reservation_reminder_minutes=data.get("reservation_reminder_minutes"),
            )
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, errors)
        return data


@admin.register(FleetSettings)
class FleetSettingsAdmin(admin.ModelAdmin):
    form = FleetSettingsForm
    list_display = ("__str__", "topology_levels", "cost_unit", "updated_at", "updated_by")

    def has_add_permission(self, request) -> bool:
        return False  # one row, created by migration 0004

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change):
        curation.fleet_settings_update(
            topology_levels=obj.topology_levels,
            cost_model=obj.cost_model,
            cost_unit=obj.cost_unit,
            preemption_notice_seconds=obj.preemption_notice_seconds,
            minimum_cleaning=obj.minimum_cleaning,
            provisioning_attempts=obj.provisioning_attempts,
            reservation_extend_window_hours=obj.reservation_extend_window_hours,
            reservation_max_hours=obj.reservation_max_hours,
            reservation_horizon_days=obj.reservation_horizon_days,
            reservation_reminder_minutes=obj.reservation_reminder_minutes,
            actor=request.user,
        )


# --------------------------------------------------------------------------- flavours (#5)

from hosts.flavours import flavour_delete, flavour_save  # noqa: E402 (appended section)
from hosts.models import Flavour  # noqa: E402
from hosts.requirements import Requirement, RequirementError  # noqa: E402


class FlavourForm(forms.ModelForm):
    """The requirement is written as compact text and stored as JSON."""

    requirement_text = forms.CharField(
        label="Requirement",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false", "style": "font-family: monospace"}),
        help_text="Compact text, e.g. cores>=64,ram>=512Gi,gpu:nvidia-a100>=4,disk:nvme>=2T,nic>=25,arch=x86_64,"
        "trait,!trait,a|b. Empty: any host.",
    )

    class Meta:
        model = Flavour
        fields = ("name", "description")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.requirement is None:  # a new flavour: valid until the text says otherwise
            self.instance.requirement = {}
        if self.instance.pk and not self.is_bound:
            try:
                self.initial["requirement_text"] = Requirement.from_json(self.instance.requirement).to_compact()
            except RequirementError:
                self.initial["requirement_text"] = ""

    def clean_requirement_text(self) -> str:
        text = self.cleaned_data["requirement_text"]
        try:
            requirement = Requirement.parse(text)
        except RequirementError as exc:
            where = f" (at character {exc.position + 1})" if exc.position is not None else ""
            raise ValidationError(
                format_html(
                    '{}{}<pre style="margin:.25rem 0 0;font-family:monospace;white-space:pre">{}</pre>',
                    exc.message,
                    where,
                    exc.pointer(),
                )
            ) from exc
        self.requirement = requirement
        self.instance.requirement = requirement.to_json()  # the model's clean() checks it too
        return requirement.to_compact()


@admin.register(Flavour)
class FlavourAdmin(admin.ModelAdmin):
    """Named requirements offered to tenants; saved through hosts.flavours."""

    form = FlavourForm
    list_display = ("name", "description", "requirement_described", "updated_at")
    search_fields = ("name", "description")
    readonly_fields = ("created_at", "updated_at")
    fields = ("name", "description", "requirement_text", "created_at", "updated_at")

    @admin.display(description="requirement")
    def requirement_described(self, flavour: Flavour) -> str:
        try:
            return Requirement.from_json(flavour.requirement).describe()
        except RequirementError as exc:
            return f"invalid: {exc.message}"

    def save_model(self, request, obj, form, change):
        flavour_save(name=obj.name, description=obj.description, requirement=form.requirement, instance=obj)

    def delete_model(self, request, obj):
        flavour_delete(obj)
