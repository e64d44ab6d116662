"""Reservation API routes (under /api/v1/, namespace ``api``).

tenants/{slug}/reservations/ (+ check/, {reservation}/ + cancel/, extend/, release/),
tenants/{slug}/calendar-feed/ (+ rotate/), availability/.
"""

from django.urls import path
from rest_framework.routers import SimpleRouter

from reservations import api
from tenants.api_urls import TENANT

router = SimpleRouter()
router.register(rf"{TENANT}/reservations", api.ReservationViewSet, basename="reservation")
router.register(rf"{TENANT}/calendar-feed", api.CalendarFeedViewSet, basename="calendar-feed")

urlpatterns = [
    path("availability/", api.AvailabilityView.as_view(), name="availability"),
    *router.urls,
]
