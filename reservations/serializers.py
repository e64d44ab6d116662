"""The reservation API's representations and request bodies (reservations.api).

As in :mod:`tenants.serializers`: request bodies check the shape and refuse unknown keys by
name; the rules (count, times, horizon, requirement, recurrence, quota, admission) are the
services' (:mod:`reservations.services`), whose refusals the views turn into a 400 keyed by
field — or, when admission refuses a well-formed booking, a 409 carrying the refusal.

A node pool is named as the rest of the API names it: its cluster's name and its own,
written ``"cluster/pool"`` (e.g. ``"vision/gpu"``).

Representations never carry secrets; the calendar feed's URL (which is one) only ever appears
in the body of its own endpoint.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from hosts.serializers import StrictSerializer
from hosts.serializers_select import PolicyJSONField
from reservations.models import Reservation
from tenants.models import CLUSTER_NAME_MAX, POOL_NAME_MAX, NodePool
from tenants.serializers import RequirementInputField, _compact

# --------------------------------------------------------------------------- input fields


@extend_schema_field(
    {
        "oneOf": [
            {"type": "number", "description": "Hours, e.g. 6 or 1.5."},
            {"type": "string", "description": "'6h', '2d', a number of hours, or ISO 8601 (PT6H, P1DT2H)."},
        ],
        "description": "How long: hours as a number, or text such as 6h, 2d, PT6H.",
    }
)
class DurationInputField(serializers.Field):
    """Hours as a number, or text read by the service (``6h``, ``2d``, ISO 8601). A bare number
    in a string ("6") is hours too, as a form would mean it."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float | str):
            raise serializers.ValidationError("Hours as a number, or text such as 6h, 2d or PT6H.")
        if isinstance(data, str):
            text = data.strip()
            try:
                return float(text)
            except ValueError:
                return text
        return data

    def to_representation(self, value):
        return value


@extend_schema_field({"type": "string", "format": "date-time"})
class WhenField(serializers.CharField):
    """A date and time, read by the service (which words the error: "… is not a date and time")."""


class NewPoolSerializer(StrictSerializer):
    """A node pool created (empty) when the booking is confirmed."""

    cluster = serializers.CharField(max_length=CLUSTER_NAME_MAX, help_text="The name of one of the tenant's clusters.")
    name = serializers.CharField(max_length=POOL_NAME_MAX, help_text="The new pool's name (a DNS label).")
    quota_class = serializers.CharField(max_length=40, help_text="One of GET /quota-classes/.")
    image = serializers.CharField(max_length=63, help_text="One of GET /os-images/.")
    cleaning = serializers.ChoiceField(choices=NodePool.Cleaning.choices, required=False)


class ReservationCreateSerializer(StrictSerializer):
    """A booking: ``node_pool`` or ``new_pool`` (one), ``count``, ``starts_at`` and ``ends_at``
    or ``duration``. With ``rrule`` (and ``timezone``) it recurs: every occurrence is admitted
    together, all or none."""

    node_pool = serializers.CharField(
        required=False, max_length=80, help_text="The pool the hosts join, as 'cluster/pool' (e.g. vision/gpu)."
    )
    new_pool = NewPoolSerializer(required=False, help_text="A pool to create (empty) when the booking is confirmed.")
    count = serializers.IntegerField(help_text="How many hosts (from 1).")
    starts_at = WhenField(help_text="ISO 8601 with an offset, e.g. 2026-12-01T20:00+01:00.")
    ends_at = WhenField(required=False, allow_blank=True, help_text="ISO 8601; or give duration.")
    duration = DurationInputField(required=False, allow_null=True)
    requirement = RequirementInputField(required=False, allow_null=True)
    policy = PolicyJSONField(required=False, allow_null=True)
    priority = serializers.ChoiceField(choices=Reservation.Priority.choices, required=False)
    name = serializers.CharField(required=False, allow_blank=True, max_length=100, help_text="What it is for.")
    rrule = serializers.CharField(
        required=False, allow_blank=True, max_length=500, help_text="RFC 5545 RRULE, e.g. FREQ=WEEKLY;BYDAY=MO,WE."
    )
    timezone = serializers.CharField(
        required=False, allow_blank=True, max_length=64, help_text="IANA zone of the recurrence, e.g. Europe/Zurich."
    )

    def validate(self, data):
        if "node_pool" in data and "new_pool" in data:
            raise serializers.ValidationError({"new_pool": ["Give node_pool or new_pool, not both."]})
        return data


class ReservationCancelSerializer(StrictSerializer):
    series = serializers.BooleanField(
        required=False, default=False, help_text="Also cancel every later occurrence of its series not yet started."
    )


class ReservationExtendSerializer(StrictSerializer):
    ends_at = WhenField(help_text="The new end, ISO 8601 with an offset.")


class ReservationReleaseSerializer(StrictSerializer):
    pass


# --------------------------------------------------------------------------- representations


class RefusalSerializer(serializers.Serializer):
    """Why admission refused a booking (reservations.admission.Refusal.as_dict)."""

    message = serializers.CharField()
    slice_start = serializers.DateTimeField(allow_null=True, help_text="The first span found short.")
    slice_end = serializers.DateTimeField(allow_null=True)
    classes = serializers.ListField(child=serializers.CharField(), help_text="The hardware that is short.")
    competing = serializers.ListField(
        child=serializers.IntegerField(), help_text="Ids of the bookings competing for it (the tenant's own, or any)."
    )
    earliest_start = serializers.DateTimeField(
        allow_null=True, help_text="The first start at which the same booking would fit (null: none in the horizon)."
    )
    occurrence = serializers.IntegerField(allow_null=True, help_text="Which occurrence of a series (0-based).")

    def to_representation(self, instance):
        # Stored as JSON with ISO strings: passed through (missing keys as null).
        return {
            "message": instance.get("message", ""),
            "slice_start": instance.get("slice_start"),
            "slice_end": instance.get("slice_end"),
            "classes": list(instance.get("classes") or []),
            "competing": list(instance.get("competing") or []),
            "earliest_start": instance.get("earliest_start"),
            "occurrence": instance.get("occurrence"),
        }


# ``state`` names other choice sets too (pool hosts, hosts): the reservation's stays inline, as
# the cluster's phase does (tenants.serializers), so the schema's enum names do not collide.
RESERVATION_STATE_OPENAPI = {
    "allOf": [{"type": "string", "enum": list(Reservation.State.values)}],
    "description": ", ".join(f"{value}: {label}" for value, label in Reservation.State.choices),
}


@extend_schema_field(RESERVATION_STATE_OPENAPI)
class ReservationStateField(serializers.CharField):
    pass


RESERVATION_FIELDS = [
    "id",
    "name",
    "tenant",
    "node_pool",
    "cluster",
    "pool",
    "count",
    "requirement",
    "requirement_text",
    "policy",
    "priority",
    "starts_at",
    "ends_at",
    "original_ends_at",
    "prepare_at",
    "state",
    "message",
    "refusal",
    "series",
    "rrule",
    "timezone",
    "planned",
    "created_by",
    "created_at",
    "updated_at",
]


class ReservationSerializer(serializers.ModelSerializer):
    """A booking. Lists load its pool, cluster, series and creator joined and ``planned``
    annotated (one query per page)."""

    tenant = serializers.CharField(source="tenant.slug", read_only=True)
    state = ReservationStateField(read_only=True)
    node_pool = serializers.SerializerMethodField(help_text="The pool as 'cluster/pool'.")
    cluster = serializers.CharField(source="node_pool.cluster.name", read_only=True)
    pool = serializers.CharField(source="node_pool.name", read_only=True)
    requirement = serializers.JSONField(read_only=True, help_text="What it asks beyond its pool, as JSON.")
    requirement_text = serializers.SerializerMethodField(help_text="The same as compact text.")
    policy = PolicyJSONField(read_only=True)
    refusal = serializers.SerializerMethodField(help_text="Why admission refused it (null unless refused).")
    series = serializers.IntegerField(source="series_id", read_only=True, allow_null=True)
    rrule = serializers.SerializerMethodField(help_text="Its series' RRULE ('' for a one-off booking).")
    timezone = serializers.SerializerMethodField(help_text="Its series' time zone ('' for a one-off booking).")
    planned = serializers.SerializerMethodField(help_text="Hosts the plan holds for it.")
    created_by = serializers.EmailField(source="created_by.email", read_only=True, allow_null=True, default=None)

    class Meta:
        model = Reservation
        fields = RESERVATION_FIELDS
        read_only_fields = fields

    def get_node_pool(self, reservation: Reservation) -> str:
        return f"{reservation.node_pool.cluster.name}/{reservation.node_pool.name}"

    def get_requirement_text(self, reservation: Reservation) -> str:
        return _compact(reservation.requirement)

    @extend_schema_field(RefusalSerializer(allow_null=True))
    def get_refusal(self, reservation: Reservation) -> dict | None:
        return RefusalSerializer(reservation.refusal).data if reservation.refusal else None

    def get_rrule(self, reservation: Reservation) -> str:
        return reservation.series.rrule if reservation.series_id else ""

    def get_timezone(self, reservation: Reservation) -> str:
        return reservation.series.timezone if reservation.series_id else ""

    def get_planned(self, reservation: Reservation) -> int:
        # Lists annotate ``planned``; a single reservation counts the plan the view loaded.
        if hasattr(reservation, "planned"):
            return reservation.planned
        return len(self.context.get("plan", ()))


class DuringSerializer(serializers.Serializer):
    start = serializers.DateTimeField(help_text="When the host's preparation starts.")
    end = serializers.DateTimeField(help_text="When the host is handed back (cleaned).")


class PlannedHostSerializer(serializers.Serializer):
    """One host of the plan, over ``during`` = [preparation, end + hand-off)."""

    host = serializers.CharField(help_text="The host's name.")
    during = DuringSerializer()
    handoff_seconds = serializers.IntegerField(help_text="Cleaning after the end, inside during.")


class ReservationDetailSerializer(ReservationSerializer):
    plan = serializers.SerializerMethodField(help_text="The hosts planned for it, by name.")

    class Meta(ReservationSerializer.Meta):
        fields = [*RESERVATION_FIELDS, "plan"]
        read_only_fields = fields

    @extend_schema_field(PlannedHostSerializer(many=True))
    def get_plan(self, reservation: Reservation) -> list:
        stamp = serializers.DateTimeField()
        return [
            {
                "host": booking.host.name,
                "during": {
                    "start": stamp.to_representation(booking.during.lower),
                    "end": stamp.to_representation(booking.during.upper),
                },
                "handoff_seconds": booking.handoff_seconds,
            }
            for booking in self.context.get("plan", ())
        ]


class ReservationCancelResultSerializer(serializers.Serializer):
    cancelled = serializers.IntegerField(help_text="How many bookings were cancelled (more than 1 with series).")
    reservation = ReservationDetailSerializer()


class RefusedDetailsSerializer(serializers.Serializer):
    refusal = RefusalSerializer()
    reservation = serializers.IntegerField(
        allow_null=True, help_text="The refused booking's id (kept, state refused); null for a new pool's."
    )


class RefusedErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField(help_text="refused")
    message = serializers.CharField()
    details = RefusedDetailsSerializer()


class RefusedErrorSerializer(serializers.Serializer):
    """The API's one error shape, as admission's refusal of a booking fills it."""

    error = RefusedErrorBodySerializer()


class CheckResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField(help_text="Would the booking be confirmed now?")
    refusal = RefusalSerializer(allow_null=True, help_text="Why not (null when ok).")


class AvailabilityWindowSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()


class AvailabilitySerializer(serializers.Serializer):
    tenant = serializers.CharField(help_text="The tenant whose quota was applied.")
    quota_class = serializers.CharField(help_text="The quota class the hosts count in.")
    requirement = serializers.CharField(help_text="The requirement judged (the class's and the asked), in words.")
    count = serializers.IntegerField()
    duration_hours = serializers.FloatField()
    windows = AvailabilityWindowSerializer(many=True, help_text="Up to 3 earliest windows that fit, earliest first.")


class CalendarFeedSerializer(serializers.Serializer):
    url = serializers.URLField(help_text="The secret iCalendar address: anyone holding it reads the bookings.")
    webcal_url = serializers.CharField(help_text="The same as webcal:// (calendar applications subscribe to it).")
    created_at = serializers.DateTimeField()
    rotated_at = serializers.DateTimeField(allow_null=True, help_text="When the address last changed.")
