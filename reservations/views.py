"""Reservation pages, mounted at /t/ before the tenant pages (namespace ``reservations``):

* a tenant's calendar ``/t/<slug>/reservations/`` — FullCalendar week and month views fed by
  :func:`events` (JSON), the bookings as a list, and the "Book hosts" form with live admission
  feedback (:func:`check`, an htmx fragment); dragging a range in the week view fills the form,
  dragging an event's end posts to :func:`extend`;
* a booking ``/t/<slug>/reservations/<id>/`` — its state and why, the host plan, its series,
  cancel / release / extend; polled while it is being prepared;
* ``/t/<slug>/reservations/availability/`` — "when can I get N hosts like this for D hours?";
* the calendar's "Subscribe (iCal)" control: owners and members see the tenant's secret feed
  address (:mod:`reservations.feeds`), create it with a POST (never on a GET) and owners rotate it;
* operators: every booking, the host timeline (vis-timeline) and the capacity heat-map.

Every view looks the tenant up through :mod:`tenants.access` (another tenant's booking is a
404, a viewer's write a 403) and writes only through :mod:`reservations.services`, whose
refusals are shown next to the field they name. One URL, two templates (STYLE.md §5).
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from hosts.models import FleetSettings
from hosts.views import operator_required
from reservations import admission, selectors
from reservations.feeds import calendar_feed_ensure, calendar_feed_rotate, calendar_feed_url
from reservations.forms import (
    CUSTOM,
    NEW_PREFIX,
    SERVICE_ALIASES,
    UNTIL,
    AvailabilityForm,
    BookingForm,
    local_input,
    zone_or_none,
)
from reservations.models import CalendarFeed, Reservation
from reservations.recurrence import PRESETS, describe, timezone_names
from reservations.services import (
    availability_ask,
    reservation_cancel,
    reservation_check,
    reservation_create,
    reservation_extend,
    reservation_release,
)
from tenants.access import TenantAccess, access_tenant
from tenants.forms import add_service_errors
from tenants.models import Cluster, NodePool, OsImage, QuotaClass, Tenant
from tenants.views_pages import (
    HTMX_STOP_POLLING,
    base_context,
    done,
    fragment_wanted,
    page_urls,
    remember_tenant,
    vary,
)

State = Reservation.State
UPCOMING_SHOWN = 100
PAST_SHOWN = 20
OPERATOR_PAGE = 50
EVENTS_MAX_DAYS = 100  # the widest range the calendar asks for (a month view is six weeks)
TIMELINE_DAYS_BEFORE, TIMELINE_DAYS_AFTER = 1, 14
CANCELLABLE = (State.REQUESTED, State.CONFIRMED, State.PREPARING)
RELEASABLE = (State.PREPARING, State.ACTIVE)


@functools.cache
def _zones() -> list[str]:
    return timezone_names()


def access_reservation(request: HttpRequest, slug: str, pk: int, *, write: bool = False):
    """(access, reservation) — the booking inside the tenant the requester may see (else 404);
    a viewer asking to write gets 403."""
    access = access_tenant(request, slug)
    reservation = (
        Reservation.objects.filter(tenant=access.tenant, pk=pk)
        .select_related("tenant", "node_pool__cluster", "node_pool__quota_class", "series", "created_by")
        .first()
    )
    if reservation is None:
        raise Http404("No such reservation.")
    if write and not access.can_write:
        raise PermissionDenied("Viewers can look but not change anything.")
    return access, reservation


def _label(r: Reservation) -> str:
    return r.name or f"{r.count} host{'s' if r.count != 1 else ''}"


def _duration_text(delta: timedelta | None) -> str:
    """25 minutes, 1 h 5 min, 3 h."""
    if not delta or delta.total_seconds() <= 0:
        return ""
    minutes = round(delta.total_seconds() / 60)
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{rest} minute{'s' if rest != 1 else ''}"
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def _when(moment: datetime | None) -> str:
    return f"{timezone.localtime(moment):%a %d %b %H:%M}" if moment else ""


# ----------------------------------------------------------------------------------- the booking form


def _form_parts(tenant: Tenant) -> dict[str, Any]:
    pools = list(
        NodePool.objects.live()
        .filter(cluster__tenant=tenant, cluster__deleted_at__isnull=True)
        .exclude(phase=NodePool.Phase.DELETING)
        .select_related("cluster", "quota_class")
        .order_by("cluster__name", "name")
    )
    clusters = list(Cluster.objects.live().filter(tenant=tenant).exclude(phase=Cluster.Phase.DELETING).order_by("name"))
    classes = list(QuotaClass.objects.order_by("order", "name"))
    images = list(OsImage.objects.filter(available=True).order_by("name"))
    rules = FleetSettings.load()
    levels = list(rules.topology_levels)
    return {
        "pools": pools,
        "clusters": clusters,
        "classes": classes,
        "images": images,
        "levels": levels,
        "rules": rules,
    }


def _booking_form(data, parts: dict[str, Any], initial: dict | None = None) -> BookingForm:
    return BookingForm(
        data,
        initial=initial or {},
        pools=parts["pools"],
        clusters=parts["clusters"],
        classes=parts["classes"],
        images=parts["images"],
        levels=parts["levels"],
    )


PREFILL = (
    "target",
    "count",
    "starts_at",
    "ends_at",
    "end_mode",
    "duration",
    "tz_name",
    "requirement",
    "priority",
    "quota_class",
    "name",
    "recurrence",
    "rrule",
)


def _prefill(query: QueryDict) -> dict[str, Any]:
    """The form's initial values from a "book this" link (availability) or a refusal's
    "book at the first possible start"."""
    initial = {key: query[key] for key in PREFILL if query.get(key)}
    if not initial.get("starts_at"):
        soon = timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)
        initial["starts_at"] = local_input(soon, initial.get("tz_name", ""))
    return initial


def _reservation_lists(tenant: Tenant) -> dict[str, Any]:
    now = timezone.now()
    rows = selectors.tenant_reservations(tenant)
    upcoming = _one_per_series(list(rows.filter(ends_at__gte=now).order_by("starts_at", "pk")[:UPCOMING_SHOWN]))
    past = list(rows.filter(ends_at__lt=now).order_by("-ends_at", "-pk")[:PAST_SHOWN])
    return {"upcoming": upcoming, "past": past, "tones": selectors.STATE_TONES}


def _one_per_series(rows: list[Reservation]) -> list[Reservation]:
    """A recurring booking once, at its next occurrence, with ``later`` = how many more follow
    (the calendar and the booking's page show them all): twenty nights are not twenty rows."""
    shown: dict[int, Reservation] = {}
    out = []
    for r in rows:
        if r.series_id is None:
            out.append(r)
        elif r.series_id in shown:
            shown[r.series_id].later += 1
        else:
            r.later = 0
            shown[r.series_id] = r
            out.append(r)
    return out


def _feed_context(request: HttpRequest, access: TenantAccess) -> dict[str, Any]:
    """The "Subscribe (iCal)" control. The address is a secret: owners and members (and
    operators) see it, as in the API; viewers do not."""
    if not access.can_write:
        return {}
    feed = CalendarFeed.objects.filter(tenant=access.tenant).first()
    return {"feed": feed, "feed_url": calendar_feed_url(request, feed) if feed else ""}


def _calendar_context(
    request: HttpRequest, access: TenantAccess, form: BookingForm, parts: dict[str, Any], **extra
) -> dict[str, Any]:
    return {
        **base_context(access, "reservations"),
        **parts,
        **_reservation_lists(access.tenant),
        **_feed_context(request, access),
        "form": form,
        "zones": _zones(),
        "presets": PRESETS,
        "custom": CUSTOM,
        "new_prefix": NEW_PREFIX,
        **extra,
    }


def _calendar_page(request: HttpRequest, context: dict[str, Any], status: int = 200) -> HttpResponse:
    response = render(request, "reservations/calendar.html", context, status=status)
    if context.get("feed_url"):
        response["Cache-Control"] = "no-store"  # the feed's secret address is on the page
    return response


@login_required
@require_GET
def calendar(request: HttpRequest, slug: str) -> HttpResponse:
    access = access_tenant(request, slug)
    remember_tenant(request, access)
    parts = _form_parts(access.tenant)
    form = _booking_form(None, parts, _prefill(request.GET))
    return _calendar_page(request, _calendar_context(request, access, form, parts))


def _subscribe_url(slug: str) -> str:
    return f"{reverse('reservations:calendar', args=[slug])}#subscribe"


@login_required
@require_POST
def feed_create(request: HttpRequest, slug: str) -> HttpResponse:
    """The "Create feed URL" button: the tenant's iCalendar address, made on a POST by an owner
    or a member (the calendar page never makes it on a GET)."""
    access = access_tenant(request, slug, write=True)
    calendar_feed_ensure(access.tenant, actor=request.user)
    return done(
        request, _subscribe_url(slug), "Calendar feed created: copy its address into your calendar application."
    )


@login_required
@require_POST
def feed_rotate(request: HttpRequest, slug: str) -> HttpResponse:
    """A new secret address for the feed (owners and operators, as in the API); the old one
    stops working at once."""
    access = access_tenant(request, slug, write=True)
    if not access.can_manage:
        raise PermissionDenied("Only the tenant's owners (and operators) change its calendar address.")
    calendar_feed_rotate(access.tenant, request.user)
    return done(
        request,
        _subscribe_url(slug),
        "The calendar feed has a new address: the old one no longer works, so subscribe again with this one.",
    )


@login_required
@require_POST
def book(request: HttpRequest, slug: str) -> HttpResponse:
    """The booking form's submit: confirmed → the booking's page; refused → its page, saying
    why and when it would fit; bad input → the form again, with the input kept."""
    access = access_tenant(request, slug, write=True)
    parts = _form_parts(access.tenant)
    form = _booking_form(request.POST, parts)
    if form.is_valid():
        try:
            reservation = reservation_create(acting_user=request.user, tenant=access.tenant, **form.service_values())
        except ValidationError as exc:
            add_service_errors(form, exc, aliases=SERVICE_ALIASES)
        else:
            url = reverse("reservations:detail", args=[slug, reservation.pk])
            if reservation.state == State.REFUSED:
                return done(request, url, f"Not booked: {reservation.message}", messages.WARNING)
            occurrences = reservation.series.occurrences.count() if reservation.series_id else 1
            many = f" ({occurrences} occurrences)" if occurrences > 1 else ""
            if request.POST.get("return_to") == "calendar":  # back to the calendar, at the booking's week
                day = timezone.localtime(reservation.starts_at).date().isoformat()
                url = f"{reverse('reservations:calendar', args=[slug])}?date={day}"
            return done(
                request,
                url,
                f"Booked{many}: {reservation.count} host{'s' if reservation.count != 1 else ''} from "
                f"{_when(reservation.starts_at)} to {_when(reservation.ends_at)}.",
            )
    context = _calendar_context(request, access, form, parts, problems=_problems(form))
    return _calendar_page(request, context, status=400)


def _problems(form) -> list[tuple[str, str]]:
    """The form's errors as (field label, message) for the check's summary."""
    if not form.is_bound:
        return []
    return [
        (form.fields[name].label if name in form.fields else "", message)
        for name, errors in form.errors.items()
        for message in errors
    ]


def _split_refusal(message: str) -> str:
    """The refusal without its "First possible start" sentence (shown with its own button)."""
    return message.split(". First possible start:")[0].rstrip(".")


@login_required
@require_POST
def check(request: HttpRequest, slug: str) -> HttpResponse:
    """The form's live admission feedback (a dry run, nothing written): fits, or why not and
    the first start that would."""
    access = access_tenant(request, slug, write=True)
    parts = _form_parts(access.tenant)
    form = _booking_form(request.POST, parts)
    context: dict[str, Any] = {"tenant": access.tenant, "form": form}
    if form.is_valid():
        values = form.service_values()
        try:
            verdict = reservation_check(tenant=access.tenant, **values)
        except ValidationError as exc:
            add_service_errors(form, exc, aliases=SERVICE_ALIASES)
        else:
            context["verdict"] = verdict
            data = form.cleaned_data
            end = data["ends_at"] if data.get("end_mode") == UNTIL else data["starts_at"] + values["duration"]
            context["summary"] = {
                "count": data["count"],
                "start": data["starts_at"],
                "end": end,
                "rule": describe(values["rrule"]) if values["rrule"] else "",
            }
            if verdict.refusal is not None:
                context["refusal"] = _split_refusal(verdict.refusal.message)
                earliest = verdict.refusal.earliest
                if earliest is not None:
                    context["earliest"] = earliest
                    context["earliest_input"] = local_input(earliest, data["tz_name"])
    context["problems"] = _problems(form)
    return vary(render(request, "reservations/partials/check_result.html", context))


def _range(request: HttpRequest) -> tuple[datetime, datetime]:
    def parse(name: str) -> datetime | None:
        # A "+" in a query string arrives as a space.
        text = (request.GET.get(name) or "").strip().replace(" ", "+")
        if not text:
            return None
        value = parse_datetime(text)
        if value is None and len(text) == 10:
            value = parse_datetime(text + "T00:00")
        if value is not None and timezone.is_naive(value):
            value = timezone.make_aware(value)
        return value

    now = timezone.now()
    start = parse("start") or now - timedelta(days=7)
    end = parse("end") or start + timedelta(days=42)
    if end <= start or end - start > timedelta(days=EVENTS_MAX_DAYS):
        end = start + timedelta(days=EVENTS_MAX_DAYS if end > start else 42)
    return start, end


@login_required
@require_GET
def events(request: HttpRequest, slug: str) -> HttpResponse:
    """The calendar's events in [start, end) (FullCalendar's query parameters), as JSON."""
    access = access_tenant(request, slug)
    start, end = _range(request)
    rows = selectors.reservations_between(access.tenant, start, end)
    data = selectors.calendar_events(
        rows, can_write=access.can_write, url_of=lambda r: reverse("reservations:detail", args=[slug, r.pk])
    )
    return JsonResponse(data, safe=False)


# ----------------------------------------------------------------------------------- one booking


def _live(reservation: Reservation, now: datetime) -> bool:
    """Poll while the hosts are being prepared (or about to be)."""
    if reservation.state == State.PREPARING:
        return True
    soon = reservation.prepare_at is not None and reservation.prepare_at <= now + timedelta(minutes=10)
    return reservation.state == State.CONFIRMED and soon


def detail_context(access: TenantAccess, reservation: Reservation) -> dict[str, Any]:
    now = timezone.now()
    settings = FleetSettings.load()
    r = reservation
    lead = (r.starts_at - r.prepare_at) if r.prepare_at else None
    handoff = (r.occupancy.upper - r.ends_at) if r.occupancy else None
    refusal = r.refusal or {}
    earliest = parse_datetime(refusal["earliest_start"]) if refusal.get("earliest_start") else None
    window_opens = r.ends_at - timedelta(hours=settings.reservation_extend_window_hours)
    latest_end = r.starts_at + timedelta(hours=settings.reservation_max_hours)
    plan = selectors.plan_rows(r) if r.state not in (State.REFUSED,) else []
    context = {
        **base_context(access, "reservations"),
        "reservation": r,
        "r": r,
        "now": now,
        "tone": selectors.STATE_TONES.get(r.state, "other"),
        "label": _label(r),
        "lead_text": _duration_text(lead),
        "handoff_text": _duration_text(handoff),
        "plan": plan,
        "planned": len(plan),
        "occurrences": selectors.series_occurrences(r),
        "rule": describe(r.series.rrule) if r.series_id else "",
        "live": _live(r, now),
        "ending_in": selectors.ending_soon(r, settings.reservation_reminder_minutes, now=now),
        "refusal": refusal,
        "refusal_text": _split_refusal(r.message) if r.state == State.REFUSED else "",
        "earliest": earliest,
        "rebook_url": _rebook_url(access.tenant, r, earliest) if earliest else "",
        "can_cancel": access.can_write and r.state in CANCELLABLE,
        "can_release": access.can_write and r.state in RELEASABLE,
        "can_extend": access.can_write and r.state in Reservation.HOLDING,
        "extend_open": now >= window_opens,
        "window_opens": window_opens,
        "latest_end": latest_end,
        "extend_default": local_input(r.ends_at + timedelta(hours=1)),
        "rules": settings,
        "server_zone": timezone.get_current_timezone_name(),
    }
    return context


def _rebook_url(tenant: Tenant, r: Reservation, start: datetime) -> str:
    query = QueryDict(mutable=True)
    hours = (r.ends_at - r.starts_at).total_seconds() / 3600
    query.update(
        {
            "target": str(r.node_pool_id),
            "count": str(r.count),
            "starts_at": local_input(start),
            "duration": f"{hours:g}",
            "priority": r.priority,
            "name": r.name,
        }
    )
    return f"{reverse('reservations:calendar', args=[tenant.slug])}?{query.urlencode()}#book"


@login_required
@require_GET
def detail(request: HttpRequest, slug: str, reservation_id: int) -> HttpResponse:
    access, reservation = access_reservation(request, slug, reservation_id)
    context = detail_context(access, reservation)
    if fragment_wanted(request):
        status = 200 if context["live"] else HTMX_STOP_POLLING
        return vary(render(request, "reservations/partials/reservation_live.html", context, status=status))
    remember_tenant(request, access)
    return vary(render(request, "reservations/detail.html", context))


@login_required
@require_http_methods(["GET", "POST"])
def cancel(request: HttpRequest, slug: str, reservation_id: int) -> HttpResponse:
    """GET: the confirmation (this one, or — ``?series=1`` — every later occurrence too);
    POST: cancel."""
    access, reservation = access_reservation(request, slug, reservation_id, write=True)
    series = (request.POST if request.method == "POST" else request.GET).get("series") == "1"
    series = series and bool(reservation.series_id)
    url = reverse("reservations:detail", args=[slug, reservation.pk])
    error = ""
    if request.method == "POST":
        try:
            n = reservation_cancel(reservation=reservation, acting_user=request.user, series=series)
        except ValidationError as exc:
            error = " ".join(exc.messages)
        else:
            what = f"{n} occurrence{'s' if n != 1 else ''} cancelled" if series else "Booking cancelled"
            return done(request, url, f"{what}: the hosts are free for others.")
    later = []
    if series:
        later = [
            o
            for o in selectors.series_occurrences(reservation)
            if o.starts_at >= reservation.starts_at and o.state in CANCELLABLE
        ]
    context = {
        **base_context(access, "reservations"),
        "r": reservation,
        "label": _label(reservation),
        "series": series,
        "later": later,
        "error": error,
    }
    return render(request, "reservations/cancel.html", context, status=400 if error else 200)


@login_required
@require_http_methods(["GET", "POST"])
def release(request: HttpRequest, slug: str, reservation_id: int) -> HttpResponse:
    """Release early: GET asks, POST ends the booking now (its hosts leave the pool)."""
    access, reservation = access_reservation(request, slug, reservation_id, write=True)
    url = reverse("reservations:detail", args=[slug, reservation.pk])
    error = ""
    if request.method == "POST":
        try:
            reservation_release(reservation=reservation, acting_user=request.user)
        except ValidationError as exc:
            error = " ".join(exc.messages)
        else:
            return done(request, url, "Released: the hosts leave the pool and are cleaned for the next booking.")
    context = {**base_context(access, "reservations"), "r": reservation, "label": _label(reservation), "error": error}
    return render(request, "reservations/release.html", context, status=400 if error else 200)


def _wants_json(request: HttpRequest) -> bool:
    return request.headers.get("Accept", "").startswith("application/json")


@login_required
@require_POST
def extend(request: HttpRequest, slug: str, reservation_id: int) -> HttpResponse:
    """A later end: from the detail page's form (a wall-clock time in ``tz_name``) or from the
    calendar's drag (an ISO 8601 instant, answered in JSON so the calendar can revert)."""
    _access, reservation = access_reservation(request, slug, reservation_id, write=True)
    text = (request.POST.get("ends_at") or "").strip()
    new_end = parse_datetime(text.replace(" ", "+")) if text else None
    error = ""
    if new_end is None:
        error = "Give the new end, a date and time."
    elif timezone.is_naive(new_end):
        zone = zone_or_none(request.POST.get("tz_name", "")) or timezone.get_current_timezone()
        new_end = new_end.replace(tzinfo=zone, fold=0)
    if not error:
        try:
            reservation = reservation_extend(reservation=reservation, ends_at=new_end, acting_user=request.user)
        except ValidationError as exc:
            error = (
                " ".join(m for ms in exc.message_dict.values() for m in ms)
                if hasattr(exc, "error_dict")
                else " ".join(exc.messages)
            )
    url = reverse("reservations:detail", args=[slug, reservation.pk])
    if _wants_json(request):
        if error:
            return JsonResponse({"ok": False, "message": error}, status=400)
        return JsonResponse(
            {
                "ok": True,
                "message": f"Extended: {_label(reservation)} now ends {_when(reservation.ends_at)}.",
                "ends_at": reservation.ends_at.isoformat(),
            }
        )
    if error:
        messages.error(request, f"Not extended: {error}")
        return redirect(url)
    return done(request, url, f"Extended: it now ends {_when(reservation.ends_at)}.")


# ----------------------------------------------------------------------------------- availability


@login_required
@require_GET
def availability(request: HttpRequest, slug: str) -> HttpResponse:
    """ "When can I get N hosts like this for D hours?": the first few windows that fit now
    (the API's question, :func:`reservations.services.availability_ask`)."""
    access = access_tenant(request, slug)
    classes = list(QuotaClass.objects.order_by("order", "name"))
    bound = "count" in request.GET
    form = AvailabilityForm(request.GET if bound else None, classes=classes)
    windows: list[dict[str, Any]] = []
    asked = False
    if bound and form.is_valid():
        data = form.cleaned_data
        try:
            ask, after, duration = availability_ask(
                tenant=access.tenant,
                requirement=data.get("requirement") or "",
                count=data["count"],
                duration=timedelta(hours=float(data["duration"])),
                quota_class=data.get("quota_class") or None,
                priority=data["priority"],
            )
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            asked = True
            for window in admission.availability(ask, after=after, duration=duration):
                windows.append(
                    {
                        "start": window.start,
                        "end": window.end,
                        "book_url": _book_url(slug, data, window, ask.quota_class.name),
                    }
                )
            context_class = ask.quota_class
    context = {
        **base_context(access, "reservations"),
        "form": form,
        "windows": windows,
        "asked": asked,
        "quota_class": context_class if asked else None,
        "server_zone": timezone.get_current_timezone_name(),
    }
    return render(request, "reservations/availability.html", context, status=400 if bound and form.errors else 200)


def _book_url(slug: str, data: dict[str, Any], window, quota_class: str) -> str:
    """The calendar's booking form, pre-filled with this window (the pool is the person's choice)."""
    query = QueryDict(mutable=True)
    values = {
        "count": str(data["count"]),
        "starts_at": local_input(window.start),
        "duration": f"{float(data['duration']):g}",
        "priority": data["priority"],
        "requirement": data.get("requirement") or "",
        "quota_class": quota_class,
        "tz_name": timezone.get_current_timezone_name(),
    }
    query.update({k: v for k, v in values.items() if v})
    return f"{reverse('reservations:calendar', args=[slug])}?{query.urlencode()}#book"


# ----------------------------------------------------------------------------------- operators


@operator_required
@require_GET
def operator_list(request: HttpRequest) -> HttpResponse:
    tenant = request.GET.get("tenant", "")
    state = request.GET.get("state", "")
    when = request.GET.get("when", "upcoming")
    if state not in State.values:
        state = ""
    if when not in ("upcoming", "past", "all"):
        when = "upcoming"
    rows = selectors.operator_reservations(tenant=tenant, state=state, when=when)
    page = Paginator(rows, OPERATOR_PAGE).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "rows": page.object_list,
        "page_urls": page_urls(request, page),
        "tenants": list(Tenant.objects.order_by("slug").values_list("slug", flat=True)),
        "states": State.choices,
        "tenant": tenant,
        "state": state,
        "when": when,
        "tones": selectors.STATE_TONES,
        "section": "list",
    }
    if fragment_wanted(request):
        return vary(render(request, "reservations/partials/operator_table.html", context))
    return vary(render(request, "reservations/operator/list.html", context))


@operator_required
@require_GET
def operator_timeline(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=TIMELINE_DAYS_BEFORE)
    end = start + timedelta(days=TIMELINE_DAYS_BEFORE + TIMELINE_DAYS_AFTER)
    timeline = selectors.host_timeline(start=start, end=end)
    data = {
        "groups": timeline.groups,
        "items": timeline.items,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "now": now.isoformat(),
    }
    context = {"timeline": timeline, "timeline_data": data, "section": "timeline"}
    return render(request, "reservations/operator/timeline.html", context)


@operator_required
@require_GET
def operator_heatmap(request: HttpRequest) -> HttpResponse:
    try:
        block = int(request.GET.get("block", 6))
    except ValueError:
        block = 6
    if block not in (6, 24):
        block = 6
    heatmap = selectors.capacity_heatmap(days=14, block_hours=block)
    context = {
        "heatmap": heatmap,
        "block_hours": block,
        "section": "heatmap",
        "server_zone": timezone.get_current_timezone_name(),
    }
    return render(request, "reservations/operator/heatmap.html", context)
