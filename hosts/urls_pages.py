"""Fleet overview, host list and host detail (with its actions), under /hosts/ (namespace ``hosts``).

``/hosts/<name>/`` would shadow the management pages' one-segment URLs (``hosts.urls_manage``
is included after this module): the host name converter declines those first segments, so
Django goes on to the next pattern. A host named like a management page is then reachable only
from the list's filters — names such as ``rules`` are not real host names.
"""

from __future__ import annotations

from functools import cache

from django.urls import URLPattern, URLResolver, path, register_converter

from hosts import views


@cache
def _manage_segments() -> frozenset[str]:
    from hosts import urls_manage

    segments = set()
    for pattern in getattr(urls_manage, "urlpatterns", []):
        if isinstance(pattern, URLPattern | URLResolver):
            first = str(pattern.pattern).split("/", 1)[0]
            if first and "<" not in first and not first.startswith("^"):
                segments.add(first)
    return frozenset(segments)


class HostNameConverter:
    # A BareMetalHost's name: an RFC 1123 subdomain.
    regex = r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?"

    def to_python(self, value: str) -> str:
        if value in _manage_segments() or value == "list":
            raise ValueError(value)  # not a host: let the next pattern have it
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(HostNameConverter, "hostname")

urlpatterns = [
    path("", views.fleet, name="fleet"),
    path("list/", views.host_list, name="list"),
    path("<hostname:name>/", views.host_detail, name="detail"),
    path("<hostname:name>/maintenance/", views.host_maintenance, name="maintenance"),
    path("<hostname:name>/edit/", views.host_edit, name="edit"),
    path("<hostname:name>/action/<slug:action>/", views.host_action_view, name="action"),
]
