"""Operators see the inventory and curate their own fields; the mirror and its history are read-only.

A host comes from its BareMetalHost and goes (retired) when that disappears, so the admin
neither adds nor deletes hosts. The state history is append-only — no add, change or delete
here, and PostgreSQL refuses UPDATE and DELETE on it anyway (migration 0002).
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from hosts.models import Host, HostEnrolment, HostStateChange, SyncCursor

OPERATOR_FIELDS = ("maintenance", "maintenance_reason", "notes", "location", "key_erase_capable")
RECENT_CHANGES = 20


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
    list_display = (
        "name",
        "state",
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
    )
    search_fields = ("name", "uid", "boot_mac", "bmc_address", "system_serial", "system_product", "consumer")
    list_per_page = 100
    fieldsets = (
        (None, {"fields": ("name", "namespace", "uid", "state", "sync_error")}),
        ("Operator", {"fields": OPERATOR_FIELDS}),
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
        return [f.name for f in Host._meta.concrete_fields if f.name not in editable] + ["state", "recent_changes"]

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
