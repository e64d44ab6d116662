"""Operators inject faults and give lab hosts hardware from the Django admin."""

from __future__ import annotations

from django.contrib import admin

from teapot_portal.gateway.lab.models import LabClock, LabFault, LabHostProfile


@admin.register(LabFault)
class LabFaultAdmin(admin.ModelAdmin):
    list_display = ("kind", "host", "probability", "remaining", "multiplier", "created_at")
    list_filter = ("kind",)
    search_fields = ("host",)


@admin.register(LabHostProfile)
class LabHostProfileAdmin(admin.ModelAdmin):
    list_display = ("name", "profile", "encrypted_disks", "bmc_reachable", "full_erase")
    list_filter = ("profile", "encrypted_disks", "bmc_reachable")
    search_fields = ("name",)


@admin.register(LabClock)
class LabClockAdmin(admin.ModelAdmin):
    list_display = ("current", "real_anchor", "compacted_rv")
    readonly_fields = ("real_anchor", "compacted_rv")

    def has_add_permission(self, request) -> bool:
        return False  # a singleton, created on first use
