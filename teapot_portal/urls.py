from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from teapot_portal import api, views

api_v1 = [
    path("me/", api.MeView.as_view(), name="me"),
    path("", include("hosts.api_urls")),
    path("", include("tenants.api_urls")),
    path("", include("reservations.api_urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
]

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("account/", include("tenants.urls")),
    path("hosts/", include("hosts.urls")),
    path("select/", include("hosts.urls_select")),
    path("t/", include("reservations.urls")),
    path("t/", include("tenants.urls_pages")),
    path("calendar/", include("reservations.urls_feed")),
    path("api/v1/", include((api_v1, "api"))),
]

admin.site.site_header = "Teapot operations"
admin.site.site_title = "Teapot admin"
admin.site.index_title = "Fleet, tenants and reservations"
