"""The iCalendar feed of a tenant's bookings: ``/calendar/<token>.ics``, for calendar clients.

A calendar application subscribes to a URL and fetches it every so often, without signing in:
the URL's token is the secret (:class:`~reservations.models.CalendarFeed`). So

* the token is looked up as is (an unknown or rotated one is a 404 like any missing page);
* it never reaches the logs — the access log and Django's request log show
  ``/calendar/***.ics`` (:func:`teapot_portal.logging.redact`) and the 404 below is logged
  without the path — nor the audit log (rotation records that it happened, not the token);
* the API and the calendar page hand the URL only to the tenant's owners and members
  (reservations.api, reservations.views), and owners rotate it (:func:`calendar_feed_rotate`),
  which cuts off every old subscription.

The feed (:func:`calendar_feed_render`): the tenant's bookings from 30 days ago to the booking
horizon, one VEVENT each (RFC 5545; the ``icalendar`` package escapes and folds). Confirmed,
preparing, active and completed bookings are ``STATUS:CONFIRMED``; cancelled, pre-empted and
failed ones stay in the feed as ``STATUS:CANCELLED`` (a client that showed them sees them
cancelled); refused ones were never in a calendar and are left out. ``SEQUENCE`` counts the
changes the audit log recorded after the booking was confirmed (extensions, transitions),
``LAST-MODIFIED`` is the latest of them.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.db.models import Count, Max
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET
from icalendar import Calendar, Event

from hosts.models import FleetSettings
from reservations.models import CalendarFeed, Reservation, new_feed_token
from tenants.audit import audit_record
from tenants.models import AuditEntry, Tenant

log = logging.getLogger(__name__)

State = Reservation.State
SHOWN = (State.CONFIRMED, State.PREPARING, State.ACTIVE, State.COMPLETED)
CANCELLED = (State.CANCELLED, State.PREEMPTED, State.FAILED)
PAST_DAYS = 30
# The audit entries every confirmed booking starts with (reservation.request, .confirmed):
# SEQUENCE counts what came after.
FIRST_ENTRIES = 2
PRODID = "-//Teapot//Reservations//EN"


# --------------------------------------------------------------------------- services


def calendar_feed_ensure(tenant: Tenant, *, actor=None) -> CalendarFeed:
    """The tenant's feed, made on first use (idempotent; the creation is audited, not the token)."""
    feed = CalendarFeed.objects.filter(tenant=tenant).first()
    if feed is not None:
        return feed
    with transaction.atomic():
        feed, created = CalendarFeed.objects.get_or_create(tenant=tenant)
        if created:
            audit_record(actor=actor, action="calendar_feed.create", target=feed, tenant=tenant)
    return feed


def calendar_feed_rotate(tenant: Tenant, actor) -> CalendarFeed:
    """A new secret address for the tenant's feed; the old one stops working at once."""
    with transaction.atomic():
        feed = calendar_feed_ensure(tenant, actor=actor)
        feed = CalendarFeed.objects.select_for_update().get(pk=feed.pk)
        feed.token = new_feed_token()
        feed.rotated_at = timezone.now()
        feed.save(update_fields=["token", "rotated_at"])
        audit_record(
            actor=actor,
            action="calendar_feed.rotate",
            target=feed,
            tenant=tenant,
            after={"rotated_at": feed.rotated_at},
        )
    return feed


def calendar_feed_url(request: HttpRequest, feed: CalendarFeed) -> str:
    return request.build_absolute_uri(reverse("feeds:calendar", args=[feed.token]))


# --------------------------------------------------------------------------- the feed


def _bookings(tenant: Tenant, now: datetime):
    """The tenant's bookings in the feed's window, with what each VEVENT shows (one query)."""
    horizon = now + timedelta(days=FleetSettings.load().reservation_horizon_days)
    return (
        Reservation.objects.filter(
            tenant=tenant,
            state__in=SHOWN + CANCELLED,
            ends_at__gte=now - timedelta(days=PAST_DAYS),
            starts_at__lte=horizon,
        )
        .select_related("node_pool__cluster")
        .annotate(planned=Count("bookings"))
        .order_by("starts_at", "pk")
    )


def _changes(ids: list[int]) -> dict[str, tuple[int, datetime]]:
    """reservation id (as the audit log writes it) → (audit entries, the latest's time)."""
    if not ids:
        return {}
    rows = (
        AuditEntry.objects.filter(target_type="reservation", target_id__in=[str(i) for i in ids])
        .values("target_id")
        .annotate(n=Count("id"), last=Max("at"))
        .order_by()
    )
    return {row["target_id"]: (row["n"], row["last"]) for row in rows}


def _summary(reservation: Reservation) -> str:
    label = reservation.name or f"{reservation.count} host{'s' if reservation.count != 1 else ''}"
    return f"{label} — {reservation.node_pool.cluster.name}/{reservation.node_pool.name}"


def _description(reservation: Reservation) -> str:
    lines = [
        f"State: {reservation.get_state_display().lower()}.",
        f"Plan: {reservation.planned} of {reservation.count} host{'s' if reservation.count != 1 else ''} planned.",
    ]
    if reservation.message:
        lines.append(reservation.message)
    return "\n".join(lines)


def calendar_feed_render(tenant: Tenant, *, now: datetime | None = None) -> bytes:
    """The tenant's bookings as an iCalendar document (see the module docstring)."""
    now = now or timezone.now()
    reservations = list(_bookings(tenant, now))
    changes = _changes([r.pk for r in reservations])
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("x-wr-calname", f"Teapot — {tenant.name or tenant.slug}")
    calendar.add("x-published-ttl", timedelta(minutes=15))
    stamp = now.astimezone(UTC)
    for reservation in reservations:
        count, last = changes.get(str(reservation.pk), (0, None))
        event = Event()
        event.add("uid", f"reservation-{reservation.pk}@teapot")
        event.add("dtstamp", stamp)
        event.add("dtstart", reservation.starts_at.astimezone(UTC))
        event.add("dtend", reservation.ends_at.astimezone(UTC))
        event.add("summary", _summary(reservation))
        event.add("description", _description(reservation))
        event.add("status", "CANCELLED" if reservation.state in CANCELLED else "CONFIRMED")
        event.add("sequence", max(0, count - FIRST_ENTRIES))
        event.add("created", reservation.created_at.astimezone(UTC))
        event.add("last-modified", max(filter(None, (last, reservation.updated_at))).astimezone(UTC))
        event.add("transp", "OPAQUE")
        calendar.add_component(event)
    return calendar.to_ical()


class _UnknownFeed(HttpResponseNotFound):
    # Django's request log writes the path of every 404, and this path is a (wrong or
    # rotated) secret: the view logs the miss itself, without it.
    _has_been_logged = True


@require_GET
def calendar_feed_view(request: HttpRequest, token: str) -> HttpResponse:
    feed = CalendarFeed.objects.select_related("tenant").filter(token=token).first()
    if feed is None:
        log.info("calendar feed: unknown address", extra={"path": "/calendar/***.ics"})
        return _UnknownFeed("No such calendar.", content_type="text/plain; charset=utf-8")
    response = HttpResponse(calendar_feed_render(feed.tenant), content_type="text/calendar; charset=utf-8")
    response["Content-Disposition"] = f'inline; filename="teapot-{feed.tenant.slug}.ics"'
    response["Cache-Control"] = "private, max-age=300"
    response["X-Robots-Tag"] = "noindex"
    return response
