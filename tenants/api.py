"""The tenancy REST API (/api/v1/): tenants, members, quota, clusters, node pools, the
operators' catalogue (quota classes, Kubernetes versions, OS images), fleet capacity and the
audit log.

Scoping (STYLE.md §2-3, §6). Every URL under ``/tenants/{slug}/`` resolves its tenant once,
in :class:`TenantScopedMixin`, through :func:`tenants.access.access_tenant`: a tenant the
requester cannot see — another department's, or any but its own for a tenant-scoped API
token — is a 404 exactly like a missing one, before anything else is looked at; then the
action's need is checked (viewers read, owners and members write, owners manage members and
read the audit log, operators change quotas and tenants) → 403. Clusters and pools are looked
up inside that tenant, through ``visible_to``. Operator-wide endpoints want an operator and a
token that is not tenant-scoped (a tenant token is automation for one tenant, not the fleet).

Writes go through the services (:mod:`tenants.services`, :mod:`tenants.clusters`,
:mod:`tenants.quota`); their ``ValidationError`` keyed by field is a 400 with those fields in
``details``. Every error has the API's one shape (``teapot_portal.api.exception_handler``).

Creating twice. The three creates (tenant, cluster, node pool) answer a name that exists with a
409 whose ``details.existing`` is the object, so a client that lost the first answer can carry
on. With an ``Idempotency-Key`` header the first successful response is stored
(:class:`tenants.models.IdempotencyKey`, 24 h) and replayed for the same key and the same
request; the same key with a different request is a 422. The key row is inserted in the
create's own transaction, so a concurrent retry waits for the first and then replays it.

Secrets. The kubeconfig is only ever in the body of its own endpoint (audited as
``cluster.kubeconfig``; never logged, never cached); no other response carries it or a token.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import timedelta

import django_filters
import yaml
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import Count, OuterRef, Prefetch, ProtectedError, Q, Subquery
from django.http import HttpResponse
from django.urls import reverse
from django.utils import timezone
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, permissions, renderers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from hosts.api import NAME_IN_URL, error_response, invalid
from teapot_portal.api import ErrorSerializer
from teapot_portal.gateway.base import GatewayError, NotFound
from tenants import serializers as s
from tenants.access import TenantAccess, access_tenant, tenants_visible, token_of
from tenants.audit import audit_record
from tenants.clusters import (
    cluster_create,
    cluster_delete,
    node_pool_create,
    node_pool_delete,
    node_pool_scale,
    node_pool_update,
)
from tenants.models import (
    IDEMPOTENCY_TTL_HOURS,
    AuditEntry,
    Cluster,
    IdempotencyKey,
    KubernetesVersion,
    Membership,
    NodePool,
    OsImage,
    PoolHost,
    QuotaClass,
    Tenant,
)
from tenants.services import membership_add, membership_remove, membership_set_role, tenant_create, tenant_update

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX = 255

# --------------------------------------------------------------------------- plumbing


def is_fleet_operator(request) -> bool:
    """An operator acting for the whole fleet: staff, and not through a tenant-scoped token."""
    user = request.user
    if not (user and user.is_authenticated and user.is_staff):
        return False
    token = token_of(request)
    return token is None or token.tenant_id is None


class IsFleetOperator(permissions.BasePermission):
    message = "Only operators can do this (and not with a tenant-scoped token)."

    def has_permission(self, request, view) -> bool:
        return is_fleet_operator(request)


class IsFleetOperatorOrReadOnly(IsFleetOperator):
    def has_permission(self, request, view) -> bool:
        return request.method in permissions.SAFE_METHODS or super().has_permission(request, view)


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


class GatewayUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The management cluster did not answer; try again in a minute."
    default_code = "unavailable"


class YAMLRenderer(renderers.BaseRenderer):
    """``Accept: application/yaml`` on the kubeconfig: its text as is; an error as YAML."""

    media_type = "application/yaml"
    format = "yaml"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, str):
            return data.encode()
        return yaml.safe_dump(data, sort_keys=False).encode()


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    what = {
        400: "Invalid input: details per field (a service's refusal is keyed by the field at fault).",
        403: "Not allowed: a viewer writing, a member managing, not an operator.",
        404: "No such object — or one in a tenant the requester cannot see.",
        409: "Refused in the current state: the message says why.",
        422: "The Idempotency-Key was used with a different request.",
        503: "The management cluster did not answer.",
    }
    return {code: OpenApiResponse(ErrorSerializer, description=what[code]) for code in codes}


def _exists(code: int = 409) -> dict[int, OpenApiResponse]:
    return {
        code: OpenApiResponse(
            ErrorSerializer,
            description="The name is taken: code 'exists', details.existing is the object as GET returns it.",
        )
    }


def exists_response(message: str, existing: dict) -> Response:
    return error_response(status.HTTP_409_CONFLICT, "exists", message, {"existing": existing})


SLUG = OpenApiParameter("slug", str, OpenApiParameter.PATH, description="The tenant's short name, e.g. physics.")
CLUSTER = OpenApiParameter("cluster", str, OpenApiParameter.PATH, description="The cluster's name.")
POOL = OpenApiParameter("pool", str, OpenApiParameter.PATH, description="The node pool's name.")
MEMBER = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The membership's id.")
CLASS_NAME = OpenApiParameter("class_name", str, OpenApiParameter.PATH, description="The quota class's name.")
IDEMPOTENCY_KEY = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="Any unique string (≤ 255 characters, e.g. a UUID). A retry with the same key and body "
    "within 24 hours gets the first response again (header Idempotent-Replayed: true) instead of a "
    "second object; the same key with another body is a 422.",
)


# --------------------------------------------------------------------------- idempotency


def _fingerprint(request) -> str:
    """SHA-256 of the body as canonical JSON: the same request with its keys in another order or
    other whitespace is the same request."""
    try:
        canonical = json.dumps(request.data, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder)
    except TypeError:  # an upload or some other body that is not JSON-shaped: its bytes
        canonical = request.body.decode("utf-8", "replace")
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotent(request, create: Callable[[], Response], *, keep: Callable[[Response], bool] | None = None) -> Response:
    """Run ``create`` once per ``Idempotency-Key`` (model docstring for the retention).

    1. No header: just create.
    2. Purge the requester's expired keys (older than the TTL): they may be reused.
    3. Insert the key in the create's transaction. Another request holding the same key waits
       on the unique index until that one commits (then replays its answer) or rolls back.
    4. The key exists: same method, path and body → the stored response; otherwise a 422.
    5. Create. A successful response (or one ``keep`` accepts: a refused booking, which is
       recorded) is stored with the key; anything else rolls the key back (nothing was
       created), so a retry is judged afresh.
    """
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return create()
    key = key.strip()
    if not key or len(key) > IDEMPOTENCY_KEY_MAX:
        raise exceptions.ValidationError({IDEMPOTENCY_HEADER: [f"From 1 to {IDEMPOTENCY_KEY_MAX} characters."]})
    user, path, fingerprint = request.user, request.path[:1024], _fingerprint(request)
    with transaction.atomic():
        IdempotencyKey.objects.filter(
            user=user, created_at__lt=timezone.now() - timedelta(hours=IDEMPOTENCY_TTL_HOURS)
        ).delete()
        try:
            with transaction.atomic():
                record = IdempotencyKey.objects.create(
                    user=user, key=key, method=request.method, path=path, fingerprint=fingerprint, response_status=0
                )
        except IntegrityError:
            record = None
        if record is None:
            first = IdempotencyKey.objects.get(user=user, key=key)
            if (first.method, first.path, first.fingerprint) != (request.method, path, fingerprint):
                return error_response(
                    status.HTTP_422_UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    f"This Idempotency-Key was first used with a different request ({first.method} {first.path}, "
                    "another body): use a new key for a new request.",
                    {"key": key, "first_used_at": first.created_at.isoformat()},
                )
            return Response(first.response_body, status=first.response_status, headers={"Idempotent-Replayed": "true"})
        response = create()
        if not (status.is_success(response.status_code) or (keep is not None and keep(response))):
            transaction.set_rollback(True)
            return response
        record.response_status = response.status_code
        record.response_body = json.loads(json.dumps(response.data, cls=DjangoJSONEncoder))
        record.save(update_fields=["response_status", "response_body"])
        return response


# --------------------------------------------------------------------------- the tenant of a URL


class TenantScopedMixin:
    """Resolves ``/tenants/{slug}/…`` once, before the handler: ``self.access`` (the tenant and
    the requester's role in it) and ``self.tenant``.

    ``tenant_needs`` maps an action to what it needs: "read" (anyone who sees the tenant, the
    default), "write" (owners and members), "manage" (owners) or "operator". The 404 of an
    invisible tenant comes before every 403."""

    tenant_url_kwarg = "slug"
    tenant_needs: dict[str, str] = {}
    manage_refusal = "Only the tenant's owners (and operators) can do this."
    access: TenantAccess
    tenant: Tenant

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        slug = kwargs.get(self.tenant_url_kwarg)
        if slug is None:
            return
        need = self.tenant_needs.get(self.action, "read")
        self.access = access_tenant(request, slug, write=need == "write")
        self.tenant = self.access.tenant
        if need == "manage" and not self.access.can_manage:
            raise exceptions.PermissionDenied(self.manage_refusal)
        if need == "operator" and not is_fleet_operator(request):
            raise exceptions.PermissionDenied(IsFleetOperator.message)

    # Clusters and pools of the tenant, through the one scoping primitive (STYLE.md §3).
    def clusters(self):
        request = self.request
        return Cluster.objects.visible_to(request.user, token=token_of(request)).live().filter(tenant=self.tenant)

    def cluster(self, name: str) -> Cluster:
        cluster = self.clusters().select_related("tenant", "kubernetes_version", "created_by").filter(name=name).first()
        if cluster is None:
            raise exceptions.NotFound("No such cluster.")
        return cluster

    def node_pools(self, cluster: Cluster):
        request = self.request
        return NodePool.objects.visible_to(request.user, token=token_of(request)).live().filter(cluster=cluster)


def _normal_name(value) -> str:
    """A name as the services store it (so the 409 finds what the service would refuse)."""
    return str(value or "").strip().lower()


# --------------------------------------------------------------------------- tenants


@extend_schema_view(
    list=extend_schema(
        operation_id="tenants_list",
        summary="Tenants I can see",
        description="Operators: every tenant; members: theirs; a tenant-scoped token: its one.",
        responses={200: s.TenantSerializer(many=True)},
    ),
    create=extend_schema(
        operation_id="tenant_create",
        summary="Create a tenant (operators)",
        parameters=[IDEMPOTENCY_KEY],
        request=s.TenantCreateSerializer,
        responses={201: s.TenantSerializer, **_errors(400, 403, 422), **_exists()},
    ),
    retrieve=extend_schema(
        operation_id="tenant_retrieve",
        summary="One tenant",
        responses={200: s.TenantSerializer, **_errors(404)},
    ),
    partial_update=extend_schema(
        operation_id="tenant_update",
        summary="Change a tenant (operators)",
        description="The name, description and priority; the slug names objects in the cluster and never changes.",
        request=s.TenantUpdateSerializer,
        responses={200: s.TenantSerializer, **_errors(400, 403, 404)},
    ),
)
class TenantViewSet(TenantScopedMixin, viewsets.GenericViewSet):
    """Departments. Seen by their members (and operators); created and changed by operators."""

    queryset = Tenant.objects.all()
    serializer_class = s.TenantSerializer
    lookup_field = "slug"
    lookup_value_regex = NAME_IN_URL
    filter_backends: list = []
    http_method_names = ["get", "post", "patch", "head", "options"]
    tenant_needs = {"partial_update": "operator"}

    def get_permissions(self):
        if self.action == "create":
            return [permissions.IsAuthenticated(), IsFleetOperator()]
        return super().get_permissions()

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Tenant.objects.none()
        my_role = Membership.objects.filter(tenant=OuterRef("pk"), user=self.request.user).values("role")[:1]
        return tenants_visible(self.request).annotate(my_role=Subquery(my_role)).order_by("slug")

    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(s.TenantSerializer(page, many=True).data)

    def retrieve(self, request, slug: str):
        return Response(s.TenantSerializer(self.tenant, context={"role": self.access.role}).data)

    def create(self, request):
        return idempotent(request, lambda: self._create(request))

    def _create(self, request) -> Response:
        body = s.TenantCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        slug = _normal_name(body.validated_data["slug"])
        existing = Tenant.objects.filter(slug=slug).first()  # operators see every tenant
        if existing is None:
            try:
                tenant = tenant_create(**body.validated_data, actor=request.user)
            except DjangoValidationError as exc:
                existing = Tenant.objects.filter(slug=slug).first()
                if existing is None:
                    raise invalid(exc) from exc
        if existing is not None:
            data = s.TenantSerializer(existing, context={"role": _role(request.user, existing)}).data
            return exists_response(f"A tenant named {slug} exists.", data)
        location = request.build_absolute_uri(reverse("api:tenant-detail", args=[tenant.slug]))
        return Response(s.TenantSerializer(tenant).data, status=status.HTTP_201_CREATED, headers={"Location": location})

    def partial_update(self, request, slug: str):
        body = s.TenantUpdateSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        try:
            tenant = tenant_update(tenant=self.tenant, **body.validated_data, actor=request.user)
        except DjangoValidationError as exc:
            raise invalid(exc) from exc
        return Response(s.TenantSerializer(tenant, context={"role": self.access.role}).data)


def _role(user, tenant: Tenant) -> str | None:
    return Membership.objects.filter(tenant=tenant, user=user).values_list("role", flat=True).first()


# --------------------------------------------------------------------------- members


@extend_schema(parameters=[SLUG])
@extend_schema_view(
    list=extend_schema(
        operation_id="tenant_members_list",
        summary="A tenant's members",
        responses={200: s.MembershipSerializer(many=True), **_errors(404)},
    ),
    create=extend_schema(
        operation_id="tenant_member_add",
        summary="Add a member (owners, operators)",
        description="Someone without an account gets one without a password (they reset it, or use SSO).",
        request=s.MembershipCreateSerializer,
        responses={201: s.MembershipSerializer, **_errors(400, 403, 404)},
    ),
    partial_update=extend_schema(
        operation_id="tenant_member_update",
        summary="Change a member's role (owners, operators)",
        description="The last owner cannot be demoted (400).",
        parameters=[MEMBER],
        request=s.MembershipUpdateSerializer,
        responses={200: s.MembershipSerializer, **_errors(400, 403, 404)},
    ),
    destroy=extend_schema(
        operation_id="tenant_member_remove",
        summary="Remove a member (owners, operators)",
        description="The last owner cannot be removed (400).",
        parameters=[MEMBER],
        responses={204: None, **_errors(400, 403, 404)},
    ),
)
class MembershipViewSet(TenantScopedMixin, viewsets.GenericViewSet):
    """Who belongs to a tenant, in which role. Any member reads; owners and operators manage."""

    queryset = Membership.objects.all()
    serializer_class = s.MembershipSerializer
    lookup_field = "pk"
    lookup_url_kwarg = "id"
    lookup_value_regex = r"[0-9]+"
    filter_backends: list = []
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    tenant_needs = {"create": "manage", "partial_update": "manage", "destroy": "manage"}
    manage_refusal = "Only the tenant's owners (and operators) manage its members."

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Membership.objects.none()
        return Membership.objects.filter(tenant=self.tenant).select_related("user").order_by("user__email")

    def get_object(self) -> Membership:
        membership = self.get_queryset().filter(pk=self.kwargs["id"]).first()
        if membership is None:
            raise exceptions.NotFound("No such member.")
        return membership

    def list(self, request, slug: str):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(s.MembershipSerializer(page, many=True).data)

    def create(self, request, slug: str):
        body = s.MembershipCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            membership = membership_add(tenant=self.tenant, **body.validated_data, actor=request.user)
        except DjangoValidationError as exc:
            raise invalid(exc) from exc
        return Response(s.MembershipSerializer(membership).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request, slug: str, id: str):
        membership = self.get_object()
        body = s.MembershipUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            membership = membership_set_role(
                membership=membership, role=body.validated_data["role"], actor=request.user
            )
        except DjangoValidationError as exc:
            raise invalid(exc) from exc
        return Response(s.MembershipSerializer(membership).data)

    def destroy(self, request, slug: str, id: str):
        membership = self.get_object()
        try:
            membership_remove(membership=membership, actor=request.user)
        except DjangoValidationError as exc:
            raise invalid(exc) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)


# --------------------------------------------------------------------------- quota


@extend_schema(parameters=[SLUG])
@extend_schema_view(
    list=extend_schema(
        operation_id="tenant_quota_list",
        summary="A tenant's quota and use, per class",
        responses={200: s.ClassUsageSerializer(many=True), **_errors(404)},
    ),
    update=extend_schema(
        operation_id="tenant_quota_update",
        summary="Set a tenant's quota of one class (operators)",
        description="Guarantees are admitted against the fleet: a guarantee the fleet cannot honour is "
        "refused (400, keyed guaranteed, with the shortfall).",
        parameters=[CLASS_NAME],
        request=s.QuotaUpdateSerializer,
        responses={200: s.QuotaSerializer, **_errors(400, 403, 404)},
    ),
)
class QuotaViewSet(TenantScopedMixin, viewsets.GenericViewSet):
    """A tenant's share of each quota class: read by its members, set by operators."""

    queryset = QuotaClass.objects.all()
    serializer_class = s.ClassUsageSerializer
    pagination_class = None
    filter_backends: list = []
    lookup_field = "name"
    lookup_url_kwarg = "class_name"
    lookup_value_regex = NAME_IN_URL
    http_method_names = ["get", "put", "head", "options"]
    tenant_needs = {"update": "operator"}

    def list(self, request, slug: str):
        from tenants.quota import tenant_usage

        return Response(s.ClassUsageSerializer(tenant_usage(self.tenant), many=True).data)

    def update(self, request, slug: str, class_name: str):
        from tenants.quota import quota_update

        klass = QuotaClass.objects.filter(name=class_name).first()
        if klass is None:
            raise exceptions.NotFound("No such quota class.")
        body = s.QuotaUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            quota = quota_update(tenant=self.tenant, quota_class=klass, **body.validated_data, actor=request.user)
        except DjangoValidationError as exc:
            raise invalid(exc) from exc
        return Response(s.QuotaSerializer(quota).data)


# --------------------------------------------------------------------------- clusters


def _clusters_for_list(queryset):
    live_pools = NodePool.objects.live().select_related("quota_class").order_by("name")
    return queryset.select_related("tenant", "kubernetes_version", "created_by").prefetch_related(
        Prefetch("node_pools", queryset=live_pools, to_attr="live_pools")
    )


@extend_schema(parameters=[SLUG])
@extend_schema_view(
    list=extend_schema(
        operation_id="clusters_list",
        summary="A tenant's clusters",
        responses={200: s.ClusterSerializer(many=True), **_errors(404)},
    ),
    create=extend_schema(
        operation_id="cluster_create",
        summary="Create a cluster (owners, members)",
        description="A hosted control plane and no workers yet; add node pools next. Follow phase until ready.",
        parameters=[IDEMPOTENCY_KEY],
        request=s.ClusterCreateSerializer,
        responses={201: s.ClusterSerializer, **_errors(400, 403, 404, 422), **_exists()},
    ),
    retrieve=extend_schema(
        operation_id="cluster_retrieve",
        summary="One cluster",
        parameters=[CLUSTER],
        responses={200: s.ClusterSerializer, **_errors(404)},
    ),
    destroy=extend_schema(
        operation_id="cluster_delete",
        summary="Delete a cluster (owners, members)",
        description="Marks it deleting: its pools release their hosts, then the control plane goes.",
        parameters=[CLUSTER],
        responses={202: s.ClusterSerializer, **_errors(403, 404)},
    ),
)
class ClusterViewSet(TenantScopedMixin, viewsets.GenericViewSet):
    """A tenant's Kubernetes clusters: hosted control planes with bare-metal node pools."""

    queryset = Cluster.objects.all()
    serializer_class = s.ClusterSerializer
    lookup_field = "name"
    lookup_url_kwarg = "cluster"
    lookup_value_regex = NAME_IN_URL
    filter_backends: list = []
    http_method_names = ["get", "post", "delete", "head", "options"]
    tenant_needs = {"create": "write", "destroy": "write", "kubeconfig": "write"}

    def list(self, request, slug: str):
        page = self.paginate_queryset(_clusters_for_list(self.clusters()).order_by("name"))
        return self.get_paginated_response(s.ClusterSerializer(page, many=True).data)

    def retrieve(self, request, slug: str, cluster: str):
        return Response(s.ClusterSerializer(self.cluster(cluster)).data)

    def create(self, request, slug: str):
        return idempotent(request, lambda: self._create(request))

    def _create(self, request) -> Response:
        body = s.ClusterCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        name = _normal_name(data["name"])
        existing = self.clusters().filter(name=name).first()
        if existing is None:
            try:
                cluster = cluster_create(
                    tenant=self.tenant,
                    name=data["name"],
                    kubernetes_version=data.get("kubernetes_version") or None,
                    control_plane_replicas=data["control_plane_replicas"],
                    addons=data["addons"],
                    actor=request.user,
                )
            except DjangoValidationError as exc:
                existing = self.clusters().filter(name=name).first()
                if existing is None:
                    raise invalid(exc) from exc
        if existing is not None:
            existing = _clusters_for_list(self.clusters()).get(pk=existing.pk)
            return exists_response(
                f"{self.tenant.slug} already has a cluster named {name}.", s.ClusterSerializer(existing).data
            )
        location = request.build_absolute_uri(reverse("api:cluster-detail", args=[self.tenant.slug, cluster.name]))
        return Response(
            s.ClusterSerializer(cluster).data, status=status.HTTP_201_CREATED, headers={"Location": location}
        )

    def destroy(self, request, slug: str, cluster: str):
        deleting = cluster_delete(cluster=self.cluster(cluster), actor=request.user)
        return Response(s.ClusterSerializer(self.cluster(deleting.name)).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        operation_id="cluster_kubeconfig",
        summary="The cluster's admin kubeconfig (owners, members)",
        description="A YAML attachment, once the control plane has written it (409 before). Every download "
        "is in the audit log; viewers cannot download it.",
        parameters=[CLUSTER],
        responses={
            (200, "application/yaml"): OpenApiResponse(OpenApiTypes.STR, description="The kubeconfig."),
            **_errors(403, 404, 409, 503),
        },
    )
    @action(
        detail=True,
        methods=["get"],
        url_path="kubeconfig",
        url_name="kubeconfig",
        renderer_classes=[renderers.JSONRenderer, YAMLRenderer],
    )
    def kubeconfig(self, request, slug: str, cluster: str):
        from teapot_portal.gateway.factory import get_gateway

        found = self.cluster(cluster)
        if found.phase == Cluster.Phase.DELETING:
            raise Conflict("The cluster is being deleted.")
        try:
            text = get_gateway().get_kubeconfig(found.object_name)
        except NotFound as exc:
            raise Conflict(
                "The kubeconfig is not available yet: the control plane has not written it. "
                f"Try again when the cluster is ready (phase: {found.phase})."
            ) from exc
        except GatewayError as exc:
            # Only the cluster's name is logged: the error text may quote the Secret.
            log.warning("kubeconfig unavailable", extra={"tenant": self.tenant.slug, "cluster": found.name})
            raise GatewayUnavailable() from exc
        audit_record(actor=request.user, action="cluster.kubeconfig", target=found, tenant=self.tenant)
        response = HttpResponse(text, content_type="application/yaml")
        response["Content-Disposition"] = f'attachment; filename="{found.object_name}-kubeconfig.yaml"'
        response["Cache-Control"] = "no-store"
        return response


# --------------------------------------------------------------------------- node pools


def _pool_hosts(pool: NodePool):
    return PoolHost.objects.filter(pool=pool, released_at__isnull=True).select_related("host").order_by("host__name")


@extend_schema(parameters=[SLUG, CLUSTER])
@extend_schema_view(
    list=extend_schema(
        operation_id="node_pools_list",
        summary="A cluster's node pools",
        responses={200: s.NodePoolSerializer(many=True), **_errors(404)},
    ),
    create=extend_schema(
        operation_id="node_pool_create",
        summary="Add a node pool (owners, members)",
        description="A fixed size (replicas) or autoscaling bounds (autoscale_min and autoscale_max), checked "
        "against the tenant's quota of the class; requirement as JSON or compact text.",
        parameters=[IDEMPOTENCY_KEY],
        request=s.NodePoolCreateSerializer,
        responses={201: s.NodePoolDetailSerializer, **_errors(400, 403, 404, 422), **_exists()},
    ),
    retrieve=extend_schema(
        operation_id="node_pool_retrieve",
        summary="One node pool, with the hosts it holds",
        parameters=[POOL],
        responses={200: s.NodePoolDetailSerializer, **_errors(404)},
    ),
    partial_update=extend_schema(
        operation_id="node_pool_update",
        summary="Change a node pool's image, cleaning, policy or requirement (owners, members)",
        description="New hosts follow the change; the hosts the pool holds are kept.",
        parameters=[POOL],
        request=s.NodePoolUpdateSerializer,
        responses={200: s.NodePoolDetailSerializer, **_errors(400, 403, 404)},
    ),
    destroy=extend_schema(
        operation_id="node_pool_delete",
        summary="Delete a node pool (owners, members)",
        description="Marks it deleting; its hosts are released and cleaned by the pool's cleaning policy.",
        parameters=[POOL],
        responses={202: s.NodePoolDetailSerializer, **_errors(403, 404)},
    ),
)
class NodePoolViewSet(TenantScopedMixin, viewsets.GenericViewSet):
    """Bare-metal workers of a cluster, one kind per pool."""

    queryset = NodePool.objects.all()
    serializer_class = s.NodePoolSerializer
    lookup_field = "name"
    lookup_url_kwarg = "pool"
    lookup_value_regex = NAME_IN_URL
    filter_backends: list = []
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    tenant_needs = {"create": "write", "partial_update": "write", "destroy": "write", "scale": "write"}

    def pool(self, cluster: Cluster, name: str) -> NodePool:
        pool = (
            self.node_pools(cluster)
            .select_related("cluster__tenant", "cluster__kubernetes_version", "quota_class", "image", "created_by")
            .filter(name=name)
            .first()
        )
        if pool is None:
            raise exceptions.NotFound("No such node pool.")
        return pool

    def pool_response(self, pool: NodePool, *, status_code: int = status.HTTP_200_OK) -> Response:
        hosts = list(_pool_hosts(pool))
        return Response(s.NodePoolDetailSerializer(pool, context={"hosts": hosts}).data, status=status_code)

    def list(self, request, slug: str, cluster: str):
        pools = (
            self.node_pools(self.cluster(cluster))
            .select_related("cluster", "quota_class", "image", "created_by")
            .annotate(held=Count("pool_hosts", filter=Q(pool_hosts__released_at__isnull=True)))
            .order_by("name")
        )
        page = self.paginate_queryset(pools)
        return self.get_paginated_response(s.NodePoolSerializer(page, many=True).data)

    def retrieve(self, request, slug: str, cluster: str, pool: str):
        return self.pool_response(self.pool(self.cluster(cluster), pool))

    def create(self, request, slug: str, cluster: str):
        return idempotent(request, lambda: self._create(request, self.cluster(cluster)))

    def _create(self, request, cluster: Cluster) -> Response:
        body = s.NodePoolCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        if "replicas" not in data and ("autoscale_min" in data or "autoscale_max" in data):
            data["replicas"] = None  # autoscaled: no fixed size
        name = _normal_name(data["name"])
        existing = self.node_pools(cluster).filter(name=name).first()
        if existing is None:
            try:
                pool = node_pool_create(cluster=cluster, **data, actor=request.user)
            except DjangoValidationError as exc:
                existing = self.node_pools(cluster).filter(name=name).first()
                if existing is None:
                    raise invalid(exc) from exc
        if existing is not None:
            existing = self.pool(cluster, existing.name)
            data = s.NodePoolDetailSerializer(existing, context={"hosts": list(_pool_hosts(existing))}).data
            return exists_response(f"{cluster.name} already has a node pool named {name}.", data)
        location = request.build_absolute_uri(
            reverse("api:node-pool-detail", args=[self.tenant.slug, cluster.name, pool.name])
        )
        response = self.pool_response(self.pool(cluster, pool.name), status_code=status.HTTP_201_CREATED)
        response["Location"] = location
        return response

    def partial_update(self, request, slug: str, cluster: str, pool: str):
        found = self.pool(self.cluster(cluster), pool)
        body = s.NodePoolUpdateSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        try:
            node_pool_update(pool=found, **body.validated_data, actor=request.user)
        except DjangoValidationError as exc:
            raise invalid(exc) from exc
        return self.pool_response(self.pool(found.cluster, found.name))

    def destroy(self, request, slug: str, cluster: str, pool: str):
        found = self.pool(self.cluster(cluster), pool)
        node_pool_delete(pool=found, actor=request.user)
        return self.pool_response(self.pool(found.cluster, found.name), status_code=status.HTTP_202_ACCEPTED)

    @extend_schema(
        operation_id="node_pool_scale",
        summary="Resize a node pool (owners, members)",
        description="replicas (0 keeps the pool, with no hosts) or autoscale_min and autoscale_max; switching "
        "between fixed and autoscaled is allowed. Checked against the quota (400 with the reason).",
        parameters=[POOL],
        request=s.NodePoolScaleSerializer,
        responses={202: s.NodePoolDetailSerializer, **_errors(400, 403, 404)},
    )
    @action(detail=True, methods=["post"], url_path="scale", url_name="scale")
    def scale(self, request, slug: str, cluster: str, pool: str):
        found = self.pool(self.cluster(cluster), pool)
        body = s.NodePoolScaleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            node_pool_scale(pool=found, **body.validated_data, actor=request.user)
        except DjangoValidationError as exc:
            raise invalid(exc) from exc
        return self.pool_response(self.pool(found.cluster, found.name), status_code=status.HTTP_202_ACCEPTED)


# --------------------------------------------------------------------------- audit


class AuditEntryFilterSet(django_filters.FilterSet):
    tenant = django_filters.CharFilter(field_name="tenant__slug", help_text="A tenant's slug.")
    action = django_filters.CharFilter(help_text="e.g. cluster.create; a prefix ending in '.' (cluster.) for a family.")
    actor = django_filters.CharFilter(field_name="actor_label", lookup_expr="iexact", help_text="An email or 'system'.")
    target_type = django_filters.CharFilter(help_text="e.g. cluster, nodepool, quota.")
    since = django_filters.IsoDateTimeFilter(field_name="at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="at", lookup_expr="lt")

    class Meta:
        model = AuditEntry
        fields = ["tenant", "action", "actor", "target_type", "since", "until"]

    def filter_queryset(self, queryset):
        # "cluster." is the family; anything else is one action.
        value = self.form.cleaned_data.get("action")
        if value and value.endswith("."):
            self.form.cleaned_data["action"] = None
            queryset = queryset.filter(action__startswith=value)
        return super().filter_queryset(queryset)


AUDIT_LIST = extend_schema(
    summary="Audit log",
    description="Newest first. Values that name secrets are recorded as (hidden).",
    responses={200: s.AuditEntrySerializer(many=True), **_errors(400, 403, 404)},
)


@extend_schema_view(list=extend_schema(operation_id="audit_list", summary="The whole audit log (operators)"))
@extend_schema_view(list=AUDIT_LIST)
class AuditEntryViewSet(viewsets.GenericViewSet):
    """Every change, by everyone (operators)."""

    queryset = AuditEntry.objects.select_related("tenant")
    serializer_class = s.AuditEntrySerializer
    permission_classes = [permissions.IsAuthenticated, IsFleetOperator]
    filter_backends = [DjangoFilterBackend]
    filterset_class = AuditEntryFilterSet

    def list(self, request):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(s.AuditEntrySerializer(page, many=True).data)


@extend_schema(parameters=[SLUG])
@extend_schema_view(list=extend_schema(operation_id="tenant_audit_list", summary="A tenant's audit log (owners)"))
@extend_schema_view(list=AUDIT_LIST)
class TenantAuditEntryViewSet(TenantScopedMixin, viewsets.GenericViewSet):
    """Every change in one tenant: its owners and operators."""

    queryset = AuditEntry.objects.all()
    serializer_class = s.AuditEntrySerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = AuditEntryFilterSet
    tenant_needs = {"list": "manage"}
    manage_refusal = "Only the tenant's owners (and operators) read its audit log."

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return AuditEntry.objects.none()
        return AuditEntry.objects.filter(tenant=self.tenant).select_related("tenant")

    def list(self, request, slug: str):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(s.AuditEntrySerializer(page, many=True).data)


# --------------------------------------------------------------------------- operators' catalogue


def _in_use(exc: ProtectedError, what: str) -> Conflict:
    users = sorted({str(obj) for obj in exc.protected_objects})
    shown = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
    return Conflict(f"The {what} is in use ({shown}): it cannot be deleted. Make it unavailable instead.")


@extend_schema_view(
    list=extend_schema(operation_id="quota_classes_list", summary="Quota classes"),
    retrieve=extend_schema(
        operation_id="quota_class_retrieve",
        summary="One quota class",
        responses={200: s.QuotaClassSerializer, **_errors(404)},
    ),
    create=extend_schema(
        operation_id="quota_class_create",
        summary="Add a quota class (operators)",
        description="The requirement as JSON (requirement) or compact text (requirement_text): exactly one.",
        responses={201: s.QuotaClassSerializer, **_errors(400, 403)},
    ),
    partial_update=extend_schema(
        operation_id="quota_class_update",
        summary="Change a quota class (operators)",
        responses={200: s.QuotaClassSerializer, **_errors(400, 403, 404)},
    ),
    destroy=extend_schema(
        operation_id="quota_class_delete",
        summary="Delete a quota class (operators)",
        description="Only a class no quota and no node pool uses (409 otherwise).",
        responses={204: None, **_errors(403, 404, 409)},
    ),
)
class QuotaClassViewSet(viewsets.GenericViewSet):
    """The classes of hardware quota is counted in: read by everyone, written by operators."""

    queryset = QuotaClass.objects.all()
    serializer_class = s.QuotaClassSerializer
    permission_classes = [permissions.IsAuthenticated, IsFleetOperatorOrReadOnly]
    filter_backends: list = []
    lookup_field = "name"
    lookup_value_regex = NAME_IN_URL
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(s.QuotaClassSerializer(page, many=True).data)

    def retrieve(self, request, name: str):
        return Response(s.QuotaClassSerializer(self.get_object()).data)

    def _save(self, request, instance: QuotaClass | None) -> QuotaClass:
        from tenants.quota import quota_class_save

        body = s.QuotaClassSerializer(data=request.data, partial=instance is not None)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        given = [name for name in ("requirement", "requirement_text") if name in data]
        if len(given) > 1:
            raise exceptions.ValidationError(
                {"requirement_text": ["Give the requirement as JSON or as text, not both."]}
            )
        if given:
            requirement = data[given[0]]  # the service reads JSON and compact text alike
        elif instance is not None:
            requirement = instance.requirement
        else:
            raise exceptions.ValidationError({"requirement": ["Give the requirement as JSON or as text."]})
        current = instance or QuotaClass(name="", description="", order=0)
        try:
            return quota_class_save(
                name=data.get("name", current.name),
                requirement=requirement,
                description=data.get("description", current.description),
                order=data.get("order", current.order),
                instance=instance,
                actor=request.user,
            )
        except DjangoValidationError as exc:
            raise invalid(exc, rename={"requirement": given[0] if given else "requirement"}) from exc

    def create(self, request):
        return Response(s.QuotaClassSerializer(self._save(request, None)).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request, name: str):
        return Response(s.QuotaClassSerializer(self._save(request, self.get_object())).data)

    def destroy(self, request, name: str):
        klass = self.get_object()
        try:
            with transaction.atomic():
                audit_record(
                    actor=request.user,
                    action="quota_class.delete",
                    target=klass,
                    before={"name": klass.name, "requirement": klass.requirement},
                )
                klass.delete()
        except ProtectedError as exc:
            raise _in_use(exc, "quota class") from exc
        return Response(status=status.HTTP_204_NO_CONTENT)


class CatalogueViewSet(viewsets.ModelViewSet):
    """Operator-maintained lists (versions, images): every change audited in its transaction;
    an entry in use cannot be deleted (make it unavailable instead)."""

    permission_classes = [permissions.IsAuthenticated, IsFleetOperatorOrReadOnly]
    filter_backends: list = []
    lookup_value_regex = NAME_IN_URL
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    audit_name = ""

    def _snapshot(self, obj) -> dict:
        return dict(self.get_serializer(obj).data)

    def perform_create(self, serializer):
        with transaction.atomic():
            self.before_save(serializer)
            obj = serializer.save()
            audit_record(
                actor=self.request.user, action=f"{self.audit_name}.create", target=obj, after=self._snapshot(obj)
            )

    def perform_update(self, serializer):
        with transaction.atomic():
            before = self._snapshot(serializer.instance)
            self.before_save(serializer)
            obj = serializer.save()
            audit_record(
                actor=self.request.user,
                action=f"{self.audit_name}.update",
                target=obj,
                before=before,
                after=self._snapshot(obj),
            )

    def perform_destroy(self, instance):
        try:
            with transaction.atomic():
                audit_record(
                    actor=self.request.user,
                    action=f"{self.audit_name}.delete",
                    target=instance,
                    before=self._snapshot(instance),
                )
                instance.delete()
        except ProtectedError as exc:
            raise _in_use(exc, self.audit_name.replace("_", " ")) from exc

    def before_save(self, serializer) -> None:
        pass


@extend_schema_view(
    list=extend_schema(operation_id="kubernetes_versions_list", summary="Kubernetes versions"),
    retrieve=extend_schema(
        operation_id="kubernetes_version_retrieve",
        summary="One Kubernetes version",
        responses={200: s.KubernetesVersionSerializer, **_errors(404)},
    ),
    create=extend_schema(
        operation_id="kubernetes_version_create",
        summary="Offer a Kubernetes version (operators)",
        description="is_default true makes it the default (the previous default stops being one).",
        responses={201: s.KubernetesVersionSerializer, **_errors(400, 403)},
    ),
    partial_update=extend_schema(
        operation_id="kubernetes_version_update",
        summary="Change a Kubernetes version (operators)",
        responses={200: s.KubernetesVersionSerializer, **_errors(400, 403, 404)},
    ),
    destroy=extend_schema(
        operation_id="kubernetes_version_delete",
        summary="Delete a Kubernetes version (operators)",
        description="Only one no cluster or image uses (409 otherwise: make it unavailable).",
        responses={204: None, **_errors(403, 404, 409)},
    ),
)
class KubernetesVersionViewSet(CatalogueViewSet):
    queryset = KubernetesVersion.objects.all()
    serializer_class = s.KubernetesVersionSerializer
    lookup_field = "version"
    audit_name = "kubernetes_version"

    def before_save(self, serializer) -> None:
        # One default at a time (a partial unique constraint): the new default takes over.
        if serializer.validated_data.get("is_default"):
            others = KubernetesVersion.objects.filter(is_default=True)
            if serializer.instance is not None:
                others = others.exclude(pk=serializer.instance.pk)
            others.update(is_default=False)


@extend_schema_view(
    list=extend_schema(operation_id="os_images_list", summary="OS images"),
    retrieve=extend_schema(
        operation_id="os_image_retrieve", summary="One OS image", responses={200: s.OsImageSerializer, **_errors(404)}
    ),
    create=extend_schema(
        operation_id="os_image_create",
        summary="Offer an OS image (operators)",
        responses={201: s.OsImageSerializer, **_errors(400, 403)},
    ),
    partial_update=extend_schema(
        operation_id="os_image_update",
        summary="Change an OS image (operators)",
        description="New hosts of the pools using it boot the change; hosts already provisioned keep theirs.",
        responses={200: s.OsImageSerializer, **_errors(400, 403, 404)},
    ),
    destroy=extend_schema(
        operation_id="os_image_delete",
        summary="Delete an OS image (operators)",
        description="Only one no node pool uses (409 otherwise: make it unavailable).",
        responses={204: None, **_errors(403, 404, 409)},
    ),
)
class OsImageViewSet(CatalogueViewSet):
    queryset = OsImage.objects.select_related("kubernetes_version")
    serializer_class = s.OsImageSerializer
    lookup_field = "name"
    audit_name = "os_image"


class CapacityView(APIView):
    """Per quota class: the fleet's hosts, the guarantees and maxima given, what is held and free."""

    permission_classes = [permissions.IsAuthenticated, IsFleetOperator]

    @extend_schema(
        operation_id="capacity",
        summary="Fleet capacity per quota class (operators)",
        responses={200: s.ClassCapacitySerializer(many=True), **_errors(403)},
    )
    def get(self, request):
        from tenants.quota import fleet_capacity

        return Response(s.ClassCapacitySerializer(fleet_capacity(), many=True).data)
