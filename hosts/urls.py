"""Operator pages of the inventory, mounted at /hosts/ (namespace ``hosts``).

``hosts.urls_pages``: host list, host detail, fleet overview and rack view.
``hosts.urls_manage``: enrolment, bulk import, classification rules, fleet settings.
"""

from django.urls import include, path

app_name = "hosts"

urlpatterns = [
    path("", include("hosts.urls_pages")),
    path("", include("hosts.urls_manage")),
]
