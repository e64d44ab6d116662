"""Calendar reservations: N hosts meeting a requirement, for a node pool, from start to end.

* :class:`Reservation` — one window. A recurring booking (RFC 5545 RRULE) is a
  :class:`ReservationSeries` whose occurrences are Reservations created and admitted together
  (all or none), each with its own state, so one night of a nightly batch can be cancelled,
  extended or pre-empted alone.
* :class:`HostBooking` — the host plan: which host serves which reservation, over which time
  range. ``during`` runs from when preparation starts (``start − lead``) to when the host is
  handed back (``end + hand-off``). An exclusion constraint makes two overlapping bookings of
  one host impossible, whatever the application does (DESIGN.md: no ``btree_gist`` in the
  embedded PostgreSQL, so the host id is compared as a one-point ``int8range``).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from django.conf import settings
from django.contrib.postgres.constraints import ExclusionConstraint
from django.contrib.postgres.fields import DateTimeRangeField, RangeOperators
from django.contrib.postgres.indexes import GistIndex
from django.db import IntegrityError, OperationalError, models, transaction
from django.db.models import F, Func, Q, Value

from tenants.models import NodePool, Tenant


class ReservationQuerySet(models.QuerySet):
    def visible_to(self, user, *, token=None) -> ReservationQuerySet:
        return self.filter(tenant__in=Tenant.objects.visible_to(user, token=token))

    def holding(self) -> ReservationQuerySet:
        """Reservations whose window still holds capacity (admission counts these)."""
        return self.filter(state__in=Reservation.HOLDING)


class ReservationSeries(models.Model):
    """A recurring booking: the RRULE, the time zone its wall-clock times are in, and the
    length of each occurrence. The occurrences are :class:`Reservation` rows."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="reservation_series")
    rrule = models.CharField(max_length=500, help_text="RFC 5545 RRULE, e.g. FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR")
    timezone = models.CharField(max_length=64, help_text="IANA time zone of the wall-clock times, e.g. Europe/Zurich")
    first_start = models.DateTimeField()
    duration = models.DurationField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.rrule} ({self.timezone})"


class Reservation(models.Model):
    class State(models.TextChoices):
        REQUESTED = "requested", "Requested"
        CONFIRMED = "confirmed", "Confirmed"
        PREPARING = "preparing", "Preparing"
        ACTIVE = "active", "Active"
        COMPLETED = "completed", "Completed"
        REFUSED = "refused", "Refused"
        CANCELLED = "cancelled", "Cancelled"
        PREEMPTED = "preempted", "Pre-empted"
        FAILED = "failed", "Failed"

    class Priority(models.TextChoices):
        GUARANTEED = "guaranteed", "Guaranteed (within the tenant's guaranteed minimum)"
        ON_DEMAND = "on_demand", "On demand (within the tenant's maximum)"
        PREEMPTIBLE = "preemptible", "Pre-emptible (spot: not promised, first to go)"

    # Admission holds capacity for these; the plan keeps their hosts.
    HOLDING = (State.CONFIRMED, State.PREPARING, State.ACTIVE)
    # A state no transition leaves.
    FINAL = (State.COMPLETED, State.REFUSED, State.CANCELLED, State.PREEMPTED, State.FAILED)

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="reservations")
    node_pool = models.ForeignKey(NodePool, on_delete=models.PROTECT, related_name="reservations")
    series = models.ForeignKey(
        ReservationSeries, null=True, blank=True, on_delete=models.CASCADE, related_name="occurrences"
    )
    name = models.CharField(max_length=100, blank=True, help_text="What it is for, e.g. 'nightly batch'.")
    count = models.PositiveIntegerField(help_text="How many hosts.")
    requirement = models.JSONField(default=dict, blank=True, help_text="More than the pool asks, if anything.")
    policy = models.JSONField(default=dict, blank=True, help_text="Placement policy; empty: the pool's.")
    priority = models.CharField(max_length=16, choices=Priority.choices, default=Priority.ON_DEMAND)
    starts_at = models.DateTimeField(db_index=True)
    ends_at = models.DateTimeField(db_index=True)
    original_ends_at = models.DateTimeField(help_text="The end as first booked (extensions move ends_at).")
    prepare_at = models.DateTimeField(
        null=True, blank=True, help_text="When preparation starts (start − lead), from the host plan."
    )
    occupancy = DateTimeRangeField(
        null=True, blank=True, help_text="[start − lead, end + hand-off): what admission and the plan hold."
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.REQUESTED, db_index=True)
    message = models.CharField(max_length=500, blank=True, help_text="Why it is in its state, in words.")
    refusal = models.JSONField(
        null=True, blank=True, help_text="Why admission refused it: slice, classes, competing bookings, earliest start."
    )
    reminded_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ReservationQuerySet.as_manager()

    class Meta:
        ordering = ["starts_at", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(starts_at__lt=F("ends_at")),
                name="reservation_starts_before_end",
                violation_error_message="A reservation must end after it starts.",
            ),
            models.CheckConstraint(
                condition=Q(count__gte=1),
                name="reservation_count_positive",
                violation_error_message="Book one host or more.",
            ),
        ]
        indexes = [
            models.Index(fields=["tenant", "starts_at"], name="reservation_tenant_start"),
            models.Index(fields=["state", "prepare_at"], name="reservation_state_prepare"),
            GistIndex(fields=["occupancy"], name="reservation_occupancy", condition=Q(occupancy__isnull=False)),
        ]

    def __str__(self) -> str:
        label = self.name or f"{self.count} host{'s' if self.count != 1 else ''}"
        return f"{self.tenant.slug}/{label} {self.starts_at:%Y-%m-%d %H:%M}"

    @property
    def holding(self) -> bool:
        return self.state in self.HOLDING

    def get_requirement(self):
        """The pool's requirement (its class's and its own) and the booking's own, together."""
        from hosts.requirements import Requirement

        base = self.node_pool.get_requirement()
        return base.merge(Requirement.from_json(self.requirement)) if self.requirement else base


class HostBooking(models.Model):
    """One host of one reservation's plan, over ``during`` = [prepare, end + hand-off)."""

    reservation = models.ForeignKey(Reservation, on_delete=models.CASCADE, related_name="bookings")
    host = models.ForeignKey("hosts.Host", on_delete=models.PROTECT, related_name="bookings")
    during = DateTimeRangeField()
    handoff_seconds = models.PositiveIntegerField(help_text="Cleaning after the end, inside ``during``.")

    class Meta:
        ordering = ["reservation_id", "host__name"]
        constraints = [
            ExclusionConstraint(
                name="hostbooking_no_double_booking",
                expressions=[
                    (Func(F("host_id"), F("host_id"), Value("[]"), function="int8range"), RangeOperators.OVERLAPS),
                    ("during", RangeOperators.OVERLAPS),
                ],
                violation_error_message="This host is already booked for an overlapping time.",
            ),
            models.UniqueConstraint("reservation", "host", name="hostbooking_once_per_reservation"),
        ]
        indexes = [models.Index(fields=["host"], name="hostbooking_host")]

    def __str__(self) -> str:
        return f"host {self.host_id} for reservation {self.reservation_id}"


class HostTaken(Exception):
    """A host booking lost a race: another transaction booked one of its hosts for an
    overlapping time first."""


@contextmanager
def booking_hosts() -> Iterator[None]:
    """A savepoint around writes of :class:`HostBooking` rows; a lost race undoes only them and
    raises :class:`HostTaken`. Two inserts that overlap can lose in two ways: the exclusion
    constraint refuses the second (IntegrityError), or — when both rows are in the index before
    either is checked — each waits for the other and PostgreSQL breaks the deadlock by failing
    one of them. Both mean the same thing: someone else has the host."""
    try:
        with transaction.atomic():
            yield
    except IntegrityError as exc:
        raise HostTaken(str(exc).splitlines()[0]) from exc
    except OperationalError as exc:
        if isinstance(exc.__cause__, psycopg.errors.DeadlockDetected):
            raise HostTaken("deadlock detected while checking hostbooking_no_double_booking") from exc
        raise


def new_feed_token() -> str:
    return secrets.token_urlsafe(24)


class CalendarFeed(models.Model):
    """A tenant's iCalendar feed: a secret URL any calendar client can subscribe to. Rotating
    the token invalidates the old URL. The token is a secret: shown to the tenant's owners and
    members (page and API, never cached), never to viewers, never in logs or the audit log."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="calendar_feed")
    token = models.CharField(max_length=64, unique=True, default=new_feed_token)
    created_at = models.DateTimeField(auto_now_add=True)
    rotated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"calendar feed of {self.tenant.slug}"
