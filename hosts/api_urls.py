"""REST API of the inventory (mounted under /api/v1/, namespace ``api``).

hosts/ (+ import/, {name}/actions/, {name}/history/), host-enrolments/, trait-rules/ (+ preview/),
fleet-settings/.
"""

from django.urls import path
from rest_framework.routers import SimpleRouter

from hosts import api

router = SimpleRouter()
router.register("hosts", api.HostViewSet, basename="host")
router.register("host-enrolments", api.HostEnrolmentViewSet, basename="host-enrolment")
router.register("trait-rules", api.TraitRuleViewSet, basename="trait-rule")

urlpatterns = [
    path("fleet-settings/", api.FleetSettingsView.as_view(), name="fleet-settings"),
    *router.urls,
]

# Flavours and "What would I get?" (#5). The preview goes first: hosts/{name}/ would take it.
flavour_router = SimpleRouter()
flavour_router.register("flavours", api.FlavourViewSet, basename="flavour")
urlpatterns = [
    path("hosts/select-preview/", api.SelectPreviewView.as_view(), name="hosts-select-preview"),
    *urlpatterns,
    *flavour_router.urls,
]
