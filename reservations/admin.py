"""Reservations in the Django admin: shown, not edited — every write goes through
reservations.services (admission, the plan, the audit). Operators can cancel bookings from the
list (an action that calls the service, one audit entry each)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from reservations.models import CalendarFeed, HostBooking, Reservation, ReservationSeries
from reservations.services import reservation_cancel
from tenants.admin import ReadOnlyAdmin


@admin.action(description="Cancel the selected reservations (those not started yet)")
def cancel_reservations(modeladmin, request, queryset):
    done, refused = 0, 0
    for reservation in queryset:
        try:
            done += reservation_cancel(
                reservation=reservation, acting_user=request.user, reason=f"Cancelled by operator {request.user.email}."
            )
        except ValidationError:
            refused += 1
    modeladmin.message_user(request, f"Cancelled {done} reservation(s).", messages.SUCCESS)
    if refused:
        modeladmin.message_user(request, f"{refused} could not be cancelled (started or ended).", messages.WARNING)


class HostBookingInline(admin.TabularInline):
    model = HostBooking
    extra = 0
    fields = ("host", "during", "handoff_seconds")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Reservation)
class ReservationAdmin(ReadOnlyAdmin):
    actions = (cancel_reservations,)
    list_display = ("__str__", "tenant", "node_pool", "count", "priority", "starts_at", "ends_at", "state")
    list_filter = ("state", "priority", "tenant", "node_pool__quota_class")
    list_select_related = ("tenant", "node_pool__cluster__tenant")
    search_fields = ("name", "tenant__slug", "node_pool__name", "node_pool__cluster__name")
    date_hierarchy = "starts_at"
    inlines = (HostBookingInline,)


@admin.register(ReservationSeries)
class ReservationSeriesAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "tenant", "first_start", "duration", "created_at")
    list_select_related = ("tenant",)


@admin.register(HostBooking)
class HostBookingAdmin(ReadOnlyAdmin):
    list_display = ("host", "reservation", "during", "handoff_seconds")
    list_select_related = ("host", "reservation__tenant")
    search_fields = ("host__name", "reservation__tenant__slug")


@admin.register(CalendarFeed)
class CalendarFeedAdmin(ReadOnlyAdmin):
    """The token is a secret: only the tenant and when it was rotated are shown."""

    list_display = ("tenant", "created_at", "rotated_at")
    fields = ("tenant", "created_at", "rotated_at")
    readonly_fields = fields
