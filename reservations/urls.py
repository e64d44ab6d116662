"""Reservation pages (mounted at /t/ before the tenant pages, namespace ``reservations``):
a tenant's calendar and bookings under /t/<slug>/reservations/, operators' under
/t/operator/reservations/."""


app_name = "reservations"

urlpatterns: list = []
