"""The reservation REST API (/api/v1/): bookings, their dry run, availability, the calendar feed.

* ``tenants/{slug}/reservations/`` — list (filters: state, from/to, node_pool, series) and
  book; ``{id}/`` with its host plan; ``{id}/cancel/``, ``{id}/extend/``, ``{id}/release/``;
  ``check/`` — would this booking be confirmed now? (nothing is written);
* ``tenants/{slug}/calendar-feed/`` — the secret iCalendar address (owners and members), and
  ``rotate/`` (owners);
* ``availability/`` — the earliest windows for N hosts like this for D hours.

Scoping, roles, errors and Idempotency-Key are the tenancy API's (:mod:`tenants.api`): the
tenant of the URL is resolved once (another tenant's is a 404), viewers read, owners and
members book and change bookings; a service's ``ValidationError`` is a 400 keyed by field.

Refusals. A well-formed booking that admission refuses is kept (state ``refused``, with the
reason) and answered **409**, code ``refused``: ``details.refusal`` says which span and which
hardware is short, which bookings compete, and the earliest start that would fit;
``details.reservation`` is the refused booking's id (null for a booking of a new pool, which
is not made when refused). Because the refused booking is recorded, an ``Idempotency-Key``
keeps and replays that 409 as it does a 201 (:func:`idempotent_booking`).
"""

from __future__ import annotations

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Count
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from hosts.api import error_response, invalid
from reservations import admission
from reservations import serializers as s
from reservations.feeds import calendar_feed_ensure, calendar_feed_rotate, calendar_feed_url
from reservations.models import HostBooking, Reservation
from reservations.services import (
    BookingRefused,
    availability_ask,
    reservation_cancel,
    reservation_check,
    reservation_create,
    reservation_extend,
    reservation_release,
)
from tenants.access import access_tenant, tenants_visible, token_of
from tenants.api import (
    IDEMPOTENCY_KEY,
    SLUG,
    Conflict,
    TenantScopedMixin,
    _errors,
    idempotent,
)

RESERVATION = OpenApiParameter("reservation", int, OpenApiParameter.PATH, description="The reservation's id.")
# What a new pool's own fields are called in the services' errors: nested under new_pool.
NEW_POOL_FIELDS = frozenset({"cluster", "name", "quota_class", "image", "cleaning", "replicas"})


def _refused(code: int = 409) -> dict[int, OpenApiResponse]:
    return {
        code: OpenApiResponse(
            s.RefusedErrorSerializer,
            description="Admission refused the booking: code 'refused'; details.refusal says why and when it "
            "would fit (earliest_start), details.reservation is the refused booking's id (kept, state refused).",
        )
    }


# --------------------------------------------------------------------------- idempotency


def idempotent_booking(request, create) -> Response:
    """:func:`tenants.api.idempotent`, keeping a refusal too: a refused booking is recorded
    (state refused), so its 409 is the request's one answer and is replayed like a 201."""
    return idempotent(request, create, keep=_is_refusal)


def _is_refusal(response: Response) -> bool:
    if response.status_code != status.HTTP_409_CONFLICT:
        return False
    error = (response.data or {}).get("error") if isinstance(response.data, dict) else None
    return bool(error) and error.get("code") == "refused" and error["details"].get("reservation") is not None


# --------------------------------------------------------------------------- filters


class ReservationFilterSet(django_filters.FilterSet):
    state = django_filters.MultipleChoiceFilter(
        choices=Reservation.State.choices, help_text="One or more states (repeat the parameter)."
    )
    from_ = django_filters.IsoDateTimeFilter(
        field_name="ends_at", lookup_expr="gt", help_text="Bookings still running after this time (ISO 8601)."
    )
    to = django_filters.IsoDateTimeFilter(
        field_name="starts_at", lookup_expr="lt", help_text="Bookings starting before this time (ISO 8601)."
    )
    node_pool = django_filters.CharFilter(method="filter_node_pool", help_text="A pool as 'cluster/pool'.")
    series = django_filters.NumberFilter(field_name="series_id", help_text="The id of a recurring booking's series.")

    class Meta:
        model = Reservation
        fields = ["state", "node_pool", "series"]

    def filter_node_pool(self, queryset, name, value):
        cluster, _, pool = value.partition("/")
        return queryset.filter(node_pool__cluster__name=cluster.strip().lower(), node_pool__name=pool.strip().lower())


# ``from`` is a Python keyword: declared as from_, offered as from (with ``to``, an overlap).
ReservationFilterSet.base_filters["from"] = ReservationFilterSet.base_filters.pop("from_")


# --------------------------------------------------------------------------- reservations


@extend_schema(parameters=[SLUG])
@extend_schema_view(
    list=extend_schema(
        operation_id="reservations_list",
        summary="A tenant's bookings",
        description="Ordered by start. from and to select the bookings overlapping [from, to).",
        responses={200: s.ReservationSerializer(many=True), **_errors(400, 404)},
    ),
    create=extend_schema(
        operation_id="reservation_create",
        summary="Book hosts (owners, members)",
        description="count hosts for node_pool ('cluster/pool') or a new_pool, from starts_at to ends_at (or for "
        "duration); requirement (selection language or JSON) narrows the pool's; rrule and timezone make it "
        "recur (all occurrences admitted together). 201 confirmed, with the host plan; 409 refused, with why "
        "and the earliest start that would fit.",
        parameters=[IDEMPOTENCY_KEY],
        request=s.ReservationCreateSerializer,
        responses={201: s.ReservationDetailSerializer, **_errors(400, 403, 404, 422), **_refused()},
    ),
    retrieve=extend_schema(
        operation_id="reservation_retrieve",
        summary="One booking, with its host plan",
        parameters=[RESERVATION],
        responses={200: s.ReservationDetailSerializer, **_errors(404)},
    ),
)
class ReservationViewSet(TenantScopedMixin, viewsets.GenericViewSet):
    """A tenant's calendar bookings: N hosts for a node pool, from a start to an end."""

    queryset = Reservation.objects.all()
    serializer_class = s.ReservationSerializer
    lookup_field = "pk"
    lookup_url_kwarg = "reservation"
    lookup_value_regex = r"[0-9]+"
    filter_backends = [django_filters.rest_framework.DjangoFilterBackend]
    filterset_class = ReservationFilterSet
    http_method_names = ["get", "post", "head", "options"]
    tenant_needs = {"create": "write", "check": "write", "cancel": "write", "extend": "write", "release": "write"}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Reservation.objects.none()
        request = self.request
        return (
            Reservation.objects.visible_to(request.user, token=token_of(request))
            .filter(tenant=self.tenant)
            .select_related("tenant", "node_pool__cluster", "series", "created_by")
        )

    def reservation(self, pk) -> Reservation:
        found = self.get_queryset().filter(pk=pk).first()
        if found is None:
            raise exceptions.NotFound("No such reservation.")
        return found

    def detail_data(self, reservation: Reservation) -> dict:
        plan = list(HostBooking.objects.filter(reservation=reservation).select_related("host").order_by("host__name"))
        return s.ReservationDetailSerializer(reservation, context={"plan": plan}).data

    def detail_response(self, reservation: Reservation, *, status_code: int = status.HTTP_200_OK) -> Response:
        return Response(self.detail_data(self.reservation(reservation.pk)), status=status_code)

    # The booking's fields, from the body, with the pool looked up inside the tenant.
    def booking_fields(self, request) -> dict:
        body = s.ReservationCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        fields = {
            "tenant": self.tenant,
            "count": data["count"],
            "starts_at": data["starts_at"],
            "ends_at": data.get("ends_at") or None,
            "duration": data.get("duration"),
            "requirement": data.get("requirement"),
            "policy": data.get("policy"),
            "priority": data.get("priority"),
            "name": data.get("name", ""),
            "rrule": data.get("rrule", ""),
            "tz_name": data.get("timezone", ""),
        }
        if "node_pool" in data:
            cluster_name, _, pool_name = data["node_pool"].partition("/")
            cluster = self.clusters().filter(name=cluster_name.strip().lower()).first()
            pool = None
            if cluster is not None and pool_name:
                pool = (
                    self.node_pools(cluster)
                    .select_related("cluster", "quota_class")
                    .filter(name=pool_name.strip().lower())
                    .first()
                )
            if pool is None:
                raise exceptions.ValidationError(
                    {"node_pool": [f"No node pool {data['node_pool']!r} in {self.tenant.slug} (give 'cluster/pool')."]}
                )
            fields["node_pool"] = pool
        elif "new_pool" in data:
            new = dict(data["new_pool"])
            cluster = self.clusters().filter(name=new["cluster"].strip().lower()).first()
            if cluster is None:
                raise exceptions.ValidationError({"new_pool": {"cluster": ["No such cluster in this tenant."]}})
            fields["new_pool"] = {**new, "cluster": cluster}
        else:
            raise exceptions.ValidationError(
                {"node_pool": ["Choose the node pool the hosts join ('cluster/pool'), or a new_pool."]}
            )
        return fields

    def service_error(self, exc: DjangoValidationError, fields: dict) -> exceptions.ValidationError:
        rename = {"tz_name": "timezone"}
        if "new_pool" in fields and hasattr(exc, "error_dict"):
            # A new pool's own errors (its name, image, class) come from creating it: nest them.
            messages = exc.message_dict
            nested = {k: v for k, v in messages.items() if k in NEW_POOL_FIELDS}
            if nested:
                rest = {rename.get(k, k): v for k, v in messages.items() if k not in NEW_POOL_FIELDS}
                return exceptions.ValidationError({**rest, "new_pool": nested})
        return invalid(exc, rename=rename)

    def list(self, request, slug: str):
        queryset = self.filter_queryset(self.get_queryset().annotate(planned=Count("bookings")))
        page = self.paginate_queryset(queryset.order_by("starts_at", "pk"))
        return self.get_paginated_response(s.ReservationSerializer(page, many=True).data)

    def retrieve(self, request, slug: str, reservation: str):
        return Response(self.detail_data(self.reservation(reservation)))

    def create(self, request, slug: str):
        return idempotent_booking(request, lambda: self._create(request))

    def _create(self, request) -> Response:
        fields = self.booking_fields(request)
        try:
            booking = reservation_create(acting_user=request.user, **fields)
        except BookingRefused as exc:  # a booking for a new pool: neither pool nor booking was made
            return error_response(
                status.HTTP_409_CONFLICT,
                "refused",
                exc.refusal.message,
                {"refusal": s.RefusalSerializer(exc.refusal.as_dict()).data, "reservation": None},
            )
        except DjangoValidationError as exc:
            raise self.service_error(exc, fields) from exc
        if booking.state == Reservation.State.REFUSED:
            return error_response(
                status.HTTP_409_CONFLICT,
                "refused",
                booking.message,
                {
                    "refusal": s.RefusalSerializer(booking.refusal or {"message": booking.message}).data,
                    "reservation": booking.pk,
                },
            )
        location = request.build_absolute_uri(reverse("api:reservation-detail", args=[self.tenant.slug, booking.pk]))
        response = self.detail_response(booking, status_code=status.HTTP_201_CREATED)
        response["Location"] = location
        return response

    @extend_schema(
        operation_id="reservation_check",
        summary="Would this booking be confirmed now? (owners, members)",
        description="The dry run of a create (the same body): nothing is written. ok false comes with the "
        "refusal: which span and hardware is short, the competing bookings, the earliest start that fits.",
        request=s.ReservationCreateSerializer,
        responses={200: s.CheckResultSerializer, **_errors(400, 403, 404)},
    )
    @action(detail=False, methods=["post"], url_path="check", url_name="check")
    def check(self, request, slug: str):
        fields = self.booking_fields(request)
        try:
            verdict = reservation_check(**fields)
        except DjangoValidationError as exc:
            raise self.service_error(exc, fields) from exc
        refusal = s.RefusalSerializer(verdict.refusal.as_dict()).data if verdict.refusal else None
        return Response({"ok": verdict.ok, "refusal": refusal})

    @extend_schema(
        operation_id="reservation_cancel",
        summary="Cancel a booking that has not started (owners, members)",
        description="With series true, also every later occurrence of its series that has not started. An "
        "active booking is released instead (409).",
        parameters=[RESERVATION],
        request=s.ReservationCancelSerializer,
        responses={200: s.ReservationCancelResultSerializer, **_errors(400, 403, 404, 409)},
    )
    @action(detail=True, methods=["post"], url_path="cancel", url_name="cancel")
    def cancel(self, request, slug: str, reservation: str):
        found = self.reservation(reservation)
        body = s.ReservationCancelSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            cancelled = reservation_cancel(
                reservation=found, acting_user=request.user, series=body.validated_data["series"]
            )
        except DjangoValidationError as exc:
            raise Conflict(" ".join(exc.messages)) from exc
        return Response({"cancelled": cancelled, "reservation": self.detail_data(self.reservation(found.pk))})

    @extend_schema(
        operation_id="reservation_extend",
        summary="Move a booking's end later (owners, members)",
        description="Only within the operators' window before the end, never past the longest booking, and "
        "only while the same hosts are free: refused as a 400 keyed ends_at, with the reason.",
        parameters=[RESERVATION],
        request=s.ReservationExtendSerializer,
        responses={200: s.ReservationDetailSerializer, **_errors(400, 403, 404)},
    )
    @action(detail=True, methods=["post"], url_path="extend", url_name="extend")
    def extend(self, request, slug: str, reservation: str):
        found = self.reservation(reservation)
        body = s.ReservationExtendSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            reservation_extend(reservation=found, ends_at=body.validated_data["ends_at"], acting_user=request.user)
        except DjangoValidationError as exc:
            raise invalid(exc) from exc
        return self.detail_response(found)

    @extend_schema(
        operation_id="reservation_release",
        summary="End a preparing or active booking now (owners, members)",
        description="Its hosts leave the pool and are cleaned. 409 for a booking that is not preparing or active.",
        parameters=[RESERVATION],
        request=s.ReservationReleaseSerializer,
        responses={200: s.ReservationDetailSerializer, **_errors(403, 404, 409)},
    )
    @action(detail=True, methods=["post"], url_path="release", url_name="release")
    def release(self, request, slug: str, reservation: str):
        found = self.reservation(reservation)
        s.ReservationReleaseSerializer(data=request.data).is_valid(raise_exception=True)
        try:
            reservation_release(reservation=found, acting_user=request.user)
        except DjangoValidationError as exc:
            raise Conflict(" ".join(exc.messages)) from exc
        return self.detail_response(found)


# --------------------------------------------------------------------------- the calendar feed


@extend_schema(parameters=[SLUG])
@extend_schema_view(
    list=extend_schema(
        operation_id="calendar_feed_retrieve",
        summary="The tenant's iCalendar address (owners, members)",
        description="A secret URL any calendar application can subscribe to (no sign-in: the URL is the key). "
        "Viewers cannot read it; owners rotate it.",
        responses={200: s.CalendarFeedSerializer, **_errors(403, 404)},
    ),
)
class CalendarFeedViewSet(TenantScopedMixin, viewsets.GenericViewSet):
    """The secret address of a tenant's bookings as iCalendar (reservations.feeds)."""

    serializer_class = s.CalendarFeedSerializer
    pagination_class = None
    filter_backends: list = []
    http_method_names = ["get", "post", "head", "options"]
    tenant_needs = {"list": "write", "rotate": "manage"}
    manage_refusal = "Only the tenant's owners (and operators) change its calendar address."

    def feed_response(self, feed) -> Response:
        url = calendar_feed_url(self.request, feed)
        data = {
            "url": url,
            "webcal_url": "webcal://" + url.split("://", 1)[1],
            "created_at": feed.created_at,
            "rotated_at": feed.rotated_at,
        }
        response = Response(s.CalendarFeedSerializer(data).data)
        response["Cache-Control"] = "no-store"
        return response

    def list(self, request, slug: str):
        return self.feed_response(calendar_feed_ensure(self.tenant, actor=request.user))

    @extend_schema(
        operation_id="calendar_feed_rotate",
        summary="Give the tenant's iCalendar feed a new address (owners)",
        description="The old address stops working at once: subscribers need the new one.",
        request=None,
        responses={200: s.CalendarFeedSerializer, **_errors(403, 404)},
    )
    @action(detail=False, methods=["post"], url_path="rotate", url_name="rotate")
    def rotate(self, request, slug: str):
        return self.feed_response(calendar_feed_rotate(self.tenant, request.user))


# --------------------------------------------------------------------------- availability


class AvailabilityView(APIView):
    """When can I get N hosts like this for D hours? (reservations.admission.availability)"""

    @extend_schema(
        operation_id="availability",
        summary="The earliest windows for N hosts meeting a requirement",
        description="Judged as a booking of the tenant (its quota applies): up to 3 windows, earliest first, "
        "each starting after the previous one's end. The quota class is quota_class, or else the first class "
        "(catalogue order) whose requirement the asked one contains (name it when none does: 400).",
        parameters=[
            OpenApiParameter("requirement", str, description="Selection language, e.g. gpu:nvidia-a100>=1,cores>=32."),
            OpenApiParameter("count", int, required=True, description="How many hosts."),
            OpenApiParameter("duration", str, required=True, description="Hours (6, 1.5), or 6h, 2d, ISO 8601 (PT6H)."),
            OpenApiParameter(
                "tenant", str, description="A tenant's slug (needed unless the requester sees exactly one)."
            ),
            OpenApiParameter("quota_class", str, description="The quota class (default: inferred, see above)."),
            OpenApiParameter("after", OpenApiTypes.DATETIME, description="Not before this time (default: now)."),
            OpenApiParameter(
                "priority",
                str,
                enum=list(Reservation.Priority.values),
                description="As a booking's (default on_demand).",
            ),
        ],
        responses={200: s.AvailabilitySerializer, **_errors(400, 404)},
    )
    def get(self, request):
        params = request.query_params
        slug = params.get("tenant", "").strip()
        if not slug:
            visible = list(tenants_visible(request).order_by("slug")[:2])
            if len(visible) != 1:
                raise exceptions.ValidationError({"tenant": ["Give the tenant (its slug) whose quota applies."]})
            slug = visible[0].slug
        tenant = access_tenant(request, slug).tenant
        try:
            ask, after, duration = availability_ask(
                tenant=tenant,
                requirement=params.get("requirement", ""),
                count=params.get("count"),
                duration=params.get("duration"),
                quota_class=params.get("quota_class") or None,
                after=params.get("after") or None,
                priority=params.get("priority") or None,
            )
        except DjangoValidationError as exc:
            raise invalid(exc) from exc
        windows = admission.availability(ask, after=after, duration=duration)
        data = {
            "tenant": tenant.slug,
            "quota_class": ask.quota_class.name,
            "requirement": ask.requirement.describe(),
            "count": ask.count,
            "duration_hours": duration.total_seconds() / 3600,
            "windows": [{"start": w.start, "end": w.end} for w in windows],
        }
        return Response(s.AvailabilitySerializer(data).data)
