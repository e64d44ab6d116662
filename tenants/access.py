"""The one tenant-scoping primitive (STYLE.md §2-3): every page, API view, form and picker that
touches a tenant's objects looks them up here.

* ``Tenant.objects.visible_to(user, token=…)`` (and the same on clusters and node pools) is
  the queryset filter: every tenant for an operator, else the user's memberships; a
  tenant-scoped API token narrows it to its tenant.
* ``access_tenant(request, slug, write=…)``, ``access_cluster`` and ``access_node_pool`` look
  an object up **inside what the requester may see**: another tenant's object is a 404 exactly
  like a missing one; a viewer asking to write gets 403 (:class:`PermissionDenied`); only
  owners (and operators) manage members (``manage=True``).

``request`` is anything with ``.user`` and optionally ``.auth`` (a DRF request authenticated by
an API token carries the :class:`~tenants.models.ApiToken` there; a page request has none).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import PermissionDenied
from django.http import Http404

from tenants.models import ApiToken, Cluster, Membership, NodePool, Role, Tenant

SESSION_KEY = "teapot_tenant"


def token_of(request) -> ApiToken | None:
    auth = getattr(request, "auth", None)
    return auth if isinstance(auth, ApiToken) else None


def tenants_visible(request):
    return Tenant.objects.visible_to(request.user, token=token_of(request))


@dataclass(frozen=True)
class TenantAccess:
    """A tenant as the requester sees it: their role (None for an operator who is not a member)."""

    tenant: Tenant
    role: str | None
    operator: bool

    @property
    def can_write(self) -> bool:
        return self.operator or self.role in (Role.OWNER, Role.MEMBER)

    @property
    def can_manage(self) -> bool:
        return self.operator or self.role == Role.OWNER


def role_of(user, tenant: Tenant) -> str | None:
    return Membership.objects.filter(tenant=tenant, user=user).values_list("role", flat=True).first()


def access_tenant(request, slug: str, *, write: bool = False, manage: bool = False) -> TenantAccess:
    """The tenant ``slug`` if the requester may see it (else 404) and, with ``write`` or
    ``manage``, act on it (else 403)."""
    user = request.user
    tenant = tenants_visible(request).filter(slug=slug).first()
    if tenant is None:
        raise Http404("No such tenant.")
    access = TenantAccess(tenant=tenant, role=role_of(user, tenant), operator=bool(user.is_staff))
    if manage and not access.can_manage:
        raise PermissionDenied("Only the tenant's owners manage its members.")
    if write and not access.can_write:
        raise PermissionDenied("Viewers can look but not change anything.")
    return access


def access_cluster(request, slug: str, name: str, *, write: bool = False) -> tuple[TenantAccess, Cluster]:
    access = access_tenant(request, slug)
    cluster = (
        Cluster.objects.live()
        .filter(tenant=access.tenant, name=name)
        .select_related("tenant", "kubernetes_version", "created_by")
        .first()
    )
    if cluster is None:
        raise Http404("No such cluster.")
    if write and not access.can_write:
        raise PermissionDenied("Viewers can look but not change anything.")
    return access, cluster


def access_node_pool(
    request, slug: str, cluster_name: str, name: str, *, write: bool = False
) -> tuple[TenantAccess, NodePool]:
    access, cluster = access_cluster(request, slug, cluster_name)
    pool = (
        NodePool.objects.live()
        .filter(cluster=cluster, name=name)
        .select_related("cluster__tenant", "quota_class", "image")
        .first()
    )
    if pool is None:
        raise Http404("No such node pool.")
    if write and not access.can_write:
        raise PermissionDenied("Viewers can look but not change anything.")
    return access, pool


def current_tenant(request) -> Tenant | None:
    """The tenant the person is working in (pages): the one chosen in the switcher if still
    visible, else their first. None when they belong to none."""
    visible = tenants_visible(request)
    chosen = request.session.get(SESSION_KEY) if hasattr(request, "session") else None
    if chosen:
        tenant = visible.filter(slug=chosen).first()
        if tenant is not None:
            return tenant
    if request.user.is_authenticated and not request.user.is_staff:
        return visible.order_by("slug").first()
    return None
