"""Reservation pages (mounted at /t/ before the tenant pages, namespace ``reservations``):
a tenant's calendar and bookings under /t/<slug>/reservations/, operators' under
/t/operator/reservations/ (first: ``operator`` is not a tenant slug)."""

from django.urls import path

from reservations import views as v

app_name = "reservations"

urlpatterns = [
    # operators
    path("operator/reservations/", v.operator_list, name="operator_list"),
    path("operator/reservations/timeline/", v.operator_timeline, name="operator_timeline"),
    path("operator/reservations/capacity/", v.operator_heatmap, name="operator_heatmap"),
    # a tenant
    path("<slug:slug>/reservations/", v.calendar, name="calendar"),
    path("<slug:slug>/reservations/book/", v.book, name="book"),
    path("<slug:slug>/reservations/check/", v.check, name="check"),
    path("<slug:slug>/reservations/events/", v.events, name="events"),
    path("<slug:slug>/reservations/availability/", v.availability, name="availability"),
    path("<slug:slug>/reservations/feed/", v.feed_create, name="feed_create"),
    path("<slug:slug>/reservations/feed/rotate/", v.feed_rotate, name="feed_rotate"),
    path("<slug:slug>/reservations/<int:reservation_id>/", v.detail, name="detail"),
    path("<slug:slug>/reservations/<int:reservation_id>/cancel/", v.cancel, name="cancel"),
    path("<slug:slug>/reservations/<int:reservation_id>/release/", v.release, name="release"),
    path("<slug:slug>/reservations/<int:reservation_id>/extend/", v.extend, name="extend"),
]
