"""The inventory's REST API (/api/v1/): hosts, enrolments, trait rules and fleet settings.

Reads are for any signed-in user, in the representation their role allows
(:mod:`hosts.serializers`); writes are for operators and go through the services
(:mod:`hosts.enrolment`, :mod:`hosts.curation`) that the pages use too. A service's
``ValidationError`` keyed by field becomes a 400 with those fields in ``details``; a refused
action is a 409. Every error has the API's one shape (``teapot_portal.api.exception_handler``).

Query budget of the host list: the fleet settings once per request (levels for the filters,
cost unit and model for the representation), the count and the page — the big ``hardware``
column deferred. Nothing is loaded per host.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.db.models import F
from django.urls import reverse
from django.utils.functional import SimpleLazyObject, cached_property
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
)
from rest_framework import exceptions, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from hosts import serializers as s
from hosts import serializers_select as ss
from hosts.allocator import Policy, PolicyError
from hosts.costs import CostModel, CostModelError
from hosts.curation import fleet_settings_update, host_action, host_update, trait_rule_delete, trait_rule_save
from hosts.curation import trait_rule_preview as preview_rule
from hosts.enrolment import host_enrol, hosts_import
from hosts.filters import HostFilterSet
from hosts.flavours import INPUTS, InputError, flavour_delete, flavour_save, requirement_from_input
from hosts.models import Flavour, FleetSettings, Host, HostEnrolment, TraitRule
from hosts.rules import RuleError
from hosts.selection import hosts_select
from teapot_portal.api import ErrorSerializer

# --------------------------------------------------------------------------- plumbing

# A name in a URL: anything but a slash, and never NUL (PostgreSQL refuses it in text: a 500).
NAME_IN_URL = r"[^/\x00]+"


class IsOperator(permissions.BasePermission):
    message = "Only operators can do this."

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)


class IsOperatorOrReadOnly(IsOperator):
    def has_permission(self, request, view) -> bool:
        return request.method in permissions.SAFE_METHODS or super().has_permission(request, view)


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


def invalid(exc: DjangoValidationError, *, rename: dict[str, str] | None = None) -> exceptions.ValidationError:
    """A service's ValidationError (keyed by field) as the API's 400."""
    rename = {"__all__": "non_field_errors", **(rename or {})}
    if hasattr(exc, "error_dict"):
        return exceptions.ValidationError({rename.get(k, k): v for k, v in exc.message_dict.items()})
    return exceptions.ValidationError({"non_field_errors": exc.messages})


def error_response(status_code: int, code: str, message: str, details: dict) -> Response:
    """The error shape, for details that keep their types (line numbers, positions)."""
    return Response({"error": {"code": code, "message": message, "details": details}}, status=status_code)


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    what = {
        400: "Invalid input: details per field.",
        403: "Not an operator.",
        404: "No such object.",
        409: "Refused in the current state: the message says why.",
    }
    return {code: OpenApiResponse(ErrorSerializer, description=what[code]) for code in codes}


class FleetMixin:
    """The fleet settings, loaded at most once per request and only when something needs them."""

    @cached_property
    def fleet(self) -> FleetSettings:
        return FleetSettings.load()

    @cached_property
    def cost_model(self) -> CostModel:
        try:
            return self.fleet.get_cost_model()
        except CostModelError:
            return CostModel()

    def get_serializer_context(self) -> dict:
        context = super().get_serializer_context()
        context["fleet"] = SimpleLazyObject(lambda: self.fleet)
        context["cost_model"] = SimpleLazyObject(lambda: self.cost_model)
        return context


# --------------------------------------------------------------------------- hosts


class HostFilterBackend(DjangoFilterBackend):
    """The shared HostFilterSet, with the request's topology levels (no second settings query)."""

    def get_filterset_kwargs(self, request, queryset, view):
        kwargs = super().get_filterset_kwargs(request, queryset, view)
        kwargs["levels"] = list(view.fleet.topology_levels)
        kwargs["operator"] = bool(getattr(request.user, "is_staff", False))
        return kwargs


def host_by_name(name: str) -> Host:
    """The active host of that name, else the most recently retired one; 404 when none."""
    host = (
        Host.objects.defer("hardware").filter(name=name).order_by(F("retired_at").desc(nulls_first=True), "-id").first()
    )
    if host is None:
        raise exceptions.NotFound(f"No host named {name!r}.")
    return host


HOST = PolymorphicProxySerializer(
    component_name="Host",
    serializers={"tenant": s.HostTenantSerializer, "operator": s.HostOperatorSerializer},
    resource_type_field_name="representation",
)
HOSTS = PolymorphicProxySerializer(
    component_name="Host",
    serializers={"tenant": s.HostTenantSerializer, "operator": s.HostOperatorSerializer},
    resource_type_field_name="representation",
    many=True,
)
LEVELS_NOTE = (
    "Each topology level of the fleet (GET /fleet-settings/) is also a parameter, e.g. ?room=a&rack=r3. "
    "Tenant members cannot filter by tenant, and q matches names and products only."
)


@extend_schema_view(
    list=extend_schema(
        operation_id="hosts_list",
        summary="List hosts",
        description="Active hosts unless state or lifecycle says otherwise. " + LEVELS_NOTE,
        parameters=[
            OpenApiParameter(
                "trait",
                str,
                many=True,
                explode=True,
                description="Repeatable, or comma-separated: a host must carry every trait.",
            )
        ],
        responses={200: HOSTS, **_errors(400)},
    ),
    retrieve=extend_schema(
        operation_id="host_retrieve",
        summary="One host by name",
        description="The active host of that name, else the most recently retired one.",
        responses={200: HOST, **_errors(404)},
    ),
    create=extend_schema(
        operation_id="host_enrol",
        summary="Enrol a host",
        description="Queues the creation of its BMC Secret and BareMetalHost; follow it at the Location.",
        request=s.HostEnrolSerializer,
        responses={202: s.HostEnrolmentSerializer, **_errors(400, 403)},
    ),
    partial_update=extend_schema(
        operation_id="host_update",
        summary="Curate a host",
        description="Change the operator's fields; any other field is refused by name.",
        request=s.HostUpdateSerializer,
        responses={200: s.HostOperatorSerializer, **_errors(400, 403, 404)},
    ),
)
class HostViewSet(FleetMixin, viewsets.GenericViewSet):
    """The fleet's hosts: read by everyone, in the representation their role allows; curated by operators."""

    queryset = Host.objects.defer("hardware")
    lookup_field = "name"
    lookup_value_regex = NAME_IN_URL
    filterset_class = HostFilterSet
    filter_backends = [HostFilterBackend]
    permission_classes = [permissions.IsAuthenticated, IsOperatorOrReadOnly]
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_serializer_class(self):
        if self.request is not None and self.request.user.is_staff:
            return s.HostOperatorSerializer
        return s.HostTenantSerializer

    def get_object(self) -> Host:
        host = host_by_name(self.kwargs[self.lookup_field])
        self.check_object_permissions(self.request, host)
        return host

    def list(self, request):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def retrieve(self, request, name: str):
        return Response(self.get_serializer(self.get_object()).data)

    def create(self, request):
        body = s.HostEnrolSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            enrolment = host_enrol(**body.validated_data, acting_user=request.user)
        except DjangoValidationError as exc:
            raise invalid(exc, rename={"key_erase": "key_erase_capable"}) from exc
        location = request.build_absolute_uri(reverse("api:host-enrolment-detail", args=[enrolment.pk]))
        return Response(
            s.HostEnrolmentSerializer(enrolment).data, status=status.HTTP_202_ACCEPTED, headers={"Location": location}
        )

    def partial_update(self, request, name: str):
        host = self.get_object()
        body = s.HostUpdateSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        try:
            host = host_update(host, actor=request.user, **body.validated_data)
        except DjangoValidationError as exc:
            raise invalid(exc) from exc
        return Response(s.HostOperatorSerializer(host, context=self.get_serializer_context()).data)

    @extend_schema(
        operation_id="hosts_import",
        summary="Import hosts from CSV or YAML",
        description="All hosts are enrolled, or none and every problem with its line.",
        request={"application/json": s.HostImportSerializer, "multipart/form-data": s.HostImportSerializer},
        responses={
            202: s.HostImportResultSerializer,
            400: OpenApiResponse(s.ImportErrorSerializer, description="Problems of the file, with their lines."),
            **_errors(403),
        },
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="import",
        url_name="import",
        parser_classes=[JSONParser, MultiPartParser, FormParser],
        filter_backends=[],
        pagination_class=None,
    )
    def import_hosts(self, request):
        body = s.HostImportSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        outcome = hosts_import(
            text=body.validated_data["text"], fmt=body.validated_data["format"], acting_user=request.user
        )
        if not outcome.ok:
            problems = [{"line": p.line, "field": p.field, "message": p.message} for p in outcome.problems]
            return error_response(
                400, "invalid", f"Nothing was imported: {len(problems)} problem(s).", {"problems": problems}
            )
        return Response(
            s.HostImportResultSerializer({"enrolments": outcome.enrolments}).data, status=status.HTTP_202_ACCEPTED
        )

    @extend_schema(
        operation_id="host_action",
        summary="Power on/off, re-inspect or retire a host",
        request=s.HostActionSerializer,
        responses={202: s.HostActionQueuedSerializer, **_errors(400, 403, 404, 409)},
    )
    @action(detail=True, methods=["post"], url_path="actions", url_name="actions", filter_backends=[])
    def act(self, request, name: str):
        host = self.get_object()
        body = s.HostActionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        verb = body.validated_data["action"]
        try:
            with transaction.atomic():  # retiring is a maintenance change and a queued task: both or neither
                host_action(host, verb, actor=request.user, reason=body.validated_data["reason"])
        except DjangoValidationError as exc:
            raise Conflict(" ".join(exc.message_dict.get("action", exc.messages))) from exc
        return Response({"queued": verb}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        operation_id="host_history",
        summary="A host's state history",
        description="Every tracked change, newest first.",
        responses={200: s.HostStateChangeSerializer(many=True), **_errors(403, 404)},
    )
    @action(
        detail=True,
        methods=["get"],
        url_path="history",
        url_name="history",
        filter_backends=[],
        permission_classes=[permissions.IsAuthenticated, IsOperator],
    )
    def history(self, request, name: str):
        host = self.get_object()
        changes = host.state_changes.order_by("-at", "-id")
        page = self.paginate_queryset(changes)
        return self.get_paginated_response(s.HostStateChangeSerializer(page, many=True).data)


# --------------------------------------------------------------------------- enrolments


@extend_schema_view(
    list=extend_schema(
        operation_id="host_enrolments_list",
        summary="Enrolments",
        responses={200: s.HostEnrolmentSerializer(many=True), **_errors(400, 403)},
    ),
    retrieve=extend_schema(
        operation_id="host_enrolment_retrieve",
        summary="One enrolment",
        responses={200: s.HostEnrolmentSerializer, **_errors(403, 404)},
    ),
)
class HostEnrolmentViewSet(viewsets.ReadOnlyModelViewSet):
    """The progress of enrolments (operators; never their credentials)."""

    queryset = HostEnrolment.objects.select_related("requested_by").defer("sealed_credentials")
    serializer_class = s.HostEnrolmentSerializer
    permission_classes = [permissions.IsAuthenticated, IsOperator]
    filter_backends = [DjangoFilterBackend]
    filterset_fields = ["state"]
    lookup_value_regex = r"[0-9]+"


# --------------------------------------------------------------------------- trait rules


@extend_schema_view(
    list=extend_schema(operation_id="trait_rules_list", summary="Trait rules"),
    retrieve=extend_schema(
        operation_id="trait_rule_retrieve",
        summary="One trait rule",
        responses={200: s.TraitRuleSerializer, **_errors(404)},
    ),
    create=extend_schema(
        operation_id="trait_rule_create",
        summary="Add a trait rule",
        responses={201: s.TraitRuleSerializer, **_errors(400, 403)},
    ),
    update=extend_schema(
        operation_id="trait_rule_replace",
        summary="Replace a trait rule",
        responses={200: s.TraitRuleSerializer, **_errors(400, 403, 404)},
    ),
    partial_update=extend_schema(
        operation_id="trait_rule_update",
        summary="Change a trait rule",
        responses={200: s.TraitRuleSerializer, **_errors(400, 403, 404)},
    ),
    destroy=extend_schema(
        operation_id="trait_rule_delete", summary="Delete a trait rule", responses={204: None, **_errors(403, 404)}
    ),
)
class TraitRuleViewSet(viewsets.ModelViewSet):
    """Automatic traits: saving or deleting a rule reclassifies the fleet (in the worker)."""

    queryset = TraitRule.objects.all()
    serializer_class = s.TraitRuleSerializer
    permission_classes = [permissions.IsAuthenticated, IsOperatorOrReadOnly]
    filter_backends: list = []
    lookup_field = "name"
    lookup_value_regex = NAME_IN_URL

    def _save(self, request, instance: TraitRule | None, *, partial: bool) -> TraitRule:
        body = self.get_serializer(instance, data=request.data, partial=partial)
        body.is_valid(raise_exception=True)
        values = body.validated_data
        if instance is not None:
            current = {"name": instance.name, "rule": instance.rule, "description": instance.description}
            values = {**current, "enabled": instance.enabled, **values}
        try:
            return trait_rule_save(**values, instance=instance)
        except DjangoValidationError as exc:
            raise invalid(exc) from exc

    def create(self, request):
        rule = self._save(request, None, partial=False)
        return Response(self.get_serializer(rule).data, status=status.HTTP_201_CREATED)

    def update(self, request, name: str, partial: bool = False):
        rule = self._save(request, self.get_object(), partial=partial)
        return Response(self.get_serializer(rule).data)

    def destroy(self, request, name: str):
        trait_rule_delete(self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        operation_id="trait_rule_preview",
        summary="Which hosts a rule would match",
        request=s.TraitRulePreviewSerializer,
        responses={
            200: s.TraitRulePreviewResultSerializer,
            400: OpenApiResponse(s.RuleErrorSerializer, description="The rule cannot be used: what and where."),
            **_errors(403),
        },
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="preview",
        url_name="preview",
        permission_classes=[permissions.IsAuthenticated, IsOperator],
    )
    def preview(self, request):
        body = s.TraitRulePreviewSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            result = preview_rule(body.validated_data["rule"])
        except RuleError as exc:
            return error_response(400, "invalid", str(exc), {"rule": exc.message, "position": exc.position})
        return Response(s.TraitRulePreviewResultSerializer(result).data)


# --------------------------------------------------------------------------- fleet settings


class FleetSettingsView(APIView):
    """The fleet's topology levels and cost model: read by everyone, changed by operators."""

    permission_classes = [permissions.IsAuthenticated, IsOperatorOrReadOnly]

    @extend_schema(
        operation_id="fleet_settings_retrieve", summary="Fleet settings", responses=s.FleetSettingsSerializer
    )
    def get(self, request):
        return Response(s.FleetSettingsSerializer(FleetSettings.load()).data)

    @extend_schema(
        operation_id="fleet_settings_update",
        summary="Change the fleet settings",
        description="Levels that would leave a host's location invalid are refused, naming the hosts.",
        request=s.FleetSettingsUpdateSerializer,
        responses={200: s.FleetSettingsSerializer, **_errors(400, 403)},
    )
    def patch(self, request):
        body = s.FleetSettingsUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            fleet = fleet_settings_update(**body.validated_data, actor=request.user)
        except DjangoValidationError as exc:
            raise invalid(exc) from exc
        return Response(s.FleetSettingsSerializer(fleet).data)


# --------------------------------------------------------------------------- flavours (#5)

REQUIREMENT_400 = OpenApiResponse(
    ErrorSerializer,
    description="Invalid input. A requirement, flavour or policy that cannot be used has details "
    "{field, key, message, position, pointer} (RequirementProblem); other fields have a list of messages each.",
)


def input_error(exc: InputError) -> Response:
    """A requirement that cannot be read, as the error shape with where the problem is."""
    return error_response(400, "invalid", f"{exc.field}: {exc.message}", exc.to_json())


@extend_schema_view(
    list=extend_schema(operation_id="flavours_list", summary="Flavours: named requirements"),
    retrieve=extend_schema(
        operation_id="flavour_retrieve", summary="One flavour", responses={200: ss.FlavourSerializer, **_errors(404)}
    ),
    create=extend_schema(
        operation_id="flavour_create",
        summary="Add a flavour",
        description="The requirement as JSON (requirement) or compact text (requirement_text): exactly one.",
        responses={201: ss.FlavourSerializer, 400: REQUIREMENT_400, **_errors(403)},
    ),
    update=extend_schema(
        operation_id="flavour_replace",
        summary="Replace a flavour",
        responses={200: ss.FlavourSerializer, 400: REQUIREMENT_400, **_errors(403, 404)},
    ),
    partial_update=extend_schema(
        operation_id="flavour_update",
        summary="Change a flavour",
        responses={200: ss.FlavourSerializer, 400: REQUIREMENT_400, **_errors(403, 404)},
    ),
    destroy=extend_schema(
        operation_id="flavour_delete", summary="Delete a flavour", responses={204: None, **_errors(403, 404)}
    ),
)
class FlavourViewSet(viewsets.ModelViewSet):
    """Named requirements (Nova-style): read by everyone, written by operators. A convenience —
    every endpoint that takes a flavour also takes the requirement written out."""

    queryset = Flavour.objects.all()
    serializer_class = ss.FlavourSerializer
    permission_classes = [permissions.IsAuthenticated, IsOperatorOrReadOnly]
    filter_backends: list = []
    lookup_field = "name"
    lookup_value_regex = NAME_IN_URL

    def _save(self, request, instance: Flavour | None, *, partial: bool) -> Flavour | Response:
        body = self.get_serializer(instance, data=request.data, partial=partial)
        body.is_valid(raise_exception=True)
        values = body.validated_data
        given = {name: values[name] for name in ("requirement", "requirement_text") if name in values}
        if given or not partial:
            try:
                requirement = requirement_from_input(**given)
            except InputError as exc:
                return input_error(exc)
        else:
            requirement = instance.get_requirement()
        try:
            return flavour_save(
                name=values.get("name", instance.name if instance else ""),
                description=values.get("description", instance.description if instance else ""),
                requirement=requirement,
                instance=instance,
            )
        except DjangoValidationError as exc:
            raise invalid(exc) from exc

    def create(self, request):
        flavour = self._save(request, None, partial=False)
        if isinstance(flavour, Response):
            return flavour
        return Response(self.get_serializer(flavour).data, status=status.HTTP_201_CREATED)

    def update(self, request, name: str, partial: bool = False):
        flavour = self._save(request, self.get_object(), partial=partial)
        if isinstance(flavour, Response):
            return flavour
        return Response(self.get_serializer(flavour).data)

    def destroy(self, request, name: str):
        flavour_delete(self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


# --------------------------------------------------------------------------- what would I get? (#5)


class SelectPreviewView(APIView):
    """The cheapest feasible set of hosts now, or why there is none — nothing is claimed. For
    everyone signed in: host names, costs, locations and hand-off, never BMCs or allocations."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(
        operation_id="hosts_select_preview",
        summary="What would I get?",
        description="Exactly one of requirement (JSON), requirement_text (compact) and flavour (a name); "
        "count hosts under policy. Answers with the hosts that would be chosen now and their cost, or "
        "the explanation (none_match, not_enough, not_enough_free, unplaced, spread, together).",
        request=ss.SelectPreviewSerializer,
        responses={200: ss.SelectionSerializer, 400: REQUIREMENT_400},
    )
    def post(self, request):
        body = ss.SelectPreviewSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        fleet = FleetSettings.load()
        levels = list(fleet.topology_levels)
        try:
            requirement = requirement_from_input(**{name: data.get(name) for name in INPUTS})
        except InputError as exc:
            return input_error(exc)
        try:
            policy = Policy.from_json(data["policy"], levels)
        except PolicyError as exc:
            return input_error(InputError("policy", str(exc)))
        selection = hosts_select(requirement, data["count"], policy, levels=levels)
        return Response(ss.SelectionSerializer(ss.selection_data(selection, fleet.cost_unit)).data)
