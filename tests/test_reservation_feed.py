"""The iCalendar feed (/calendar/<token>.ics): what calendar clients read, and the secret it is.

Parsed back with the ``icalendar`` package (RFC 5545: escaping, folding, UTC times), times
checked across a daylight-saving change, unknown and rotated addresses 404, and the token in
no log line and no audit entry.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar

from hosts.models import FleetSettings
from reservations.feeds import calendar_feed_ensure, calendar_feed_rotate
from reservations.models import Reservation
from reservations.services import reservation_cancel, reservation_create, reservation_extend
from teapot_portal.logging import LogfmtFormatter, RedactingGunicornLogger, RedactSecretsFilter, redact
from tenants.models import AuditEntry
from tests.test_quota import a100s, cluster, fleet, generals, pool
from tests.test_reservations import soon

pytestmark = pytest.mark.django_db

ZURICH = ZoneInfo("Europe/Zurich")


@pytest.fixture
def train(world):
    fleet(a100s(4) + generals(4))
    return pool(world, cluster(world), "train", "gpu-a100")


def _feed(client, feed) -> tuple:
    response = client.get(f"/calendar/{feed.token}.ics")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/calendar; charset=utf-8"
    return response, Calendar.from_ical(response.content)


def _events(calendar) -> dict[str, object]:
    return {str(e["UID"]): e for e in calendar.walk("VEVENT")}


def test_the_feed_lists_the_tenants_bookings_as_events(client, world, train):
    start = soon(24)
    booked = reservation_create(
        tenant=world.physics,
        node_pool=train,
        count=2,
        starts_at=start,
        duration=6,
        name='nightly, batch; "run" \\ two',
        acting_user=world.alice,
    )
    plain = reservation_create(
        tenant=world.physics, node_pool=train, count=1, starts_at=soon(48), duration=2, acting_user=world.alice
    )
    refused = reservation_create(
        tenant=world.physics, node_pool=train, count=9, starts_at=soon(72), duration=2, acting_user=world.alice
    )
    theirs = pool(world, cluster(world, world.genomics, "seq"), "cpu", "general")
    reservation_create(
        tenant=world.genomics,
        node_pool=theirs,
        count=1,
        starts_at=soon(30),
        duration=2,
        priority="guaranteed",
        acting_user=world.carol,
    )
    response, calendar = _feed(client, calendar_feed_ensure(world.physics))
    assert calendar["VERSION"] == "2.0" and "Teapot" in str(calendar["PRODID"])
    events = _events(calendar)
    assert set(events) == {f"reservation-{booked.pk}@teapot", f"reservation-{plain.pk}@teapot"}  # not refused
    assert refused.state == Reservation.State.REFUSED
    event = events[f"reservation-{booked.pk}@teapot"]
    assert str(event["SUMMARY"]) == 'nightly, batch; "run" \\ two — c1/train'
    assert event.decoded("DTSTART") == start and event.decoded("DTEND") == start + timedelta(hours=6)
    assert str(event["STATUS"]) == "CONFIRMED" and int(event["SEQUENCE"]) == 0
    assert "State: confirmed." in str(event["DESCRIPTION"]) and "Plan: 2 of 2 hosts planned." in str(
        event["DESCRIPTION"]
    )
    assert str(events[f"reservation-{plain.pk}@teapot"]["SUMMARY"]) == "1 host — c1/train"
    raw = response.content.decode()
    # RFC 5545: UTC times end in Z, text is escaped, lines are CRLF and at most 75 octets.
    assert f"DTSTART:{start.astimezone(UTC):%Y%m%dT%H%M%S}Z" in raw
    assert 'SUMMARY:nightly\\, batch\\; "run" \\\\ two — c1/train' in raw
    lines = response.content.split(b"\r\n")
    assert all(len(line) <= 75 for line in lines)
    assert any(line.startswith(b" ") for line in lines)  # the long DESCRIPTION is folded


def test_times_stay_on_the_wall_clock_across_a_daylight_saving_change(client, world, train):
    """A nightly booking at 20:00 in Zurich is 19:00 UTC in winter and 18:00 UTC in summer."""
    settings = FleetSettings.load()
    settings.reservation_horizon_days = 400
    settings.save()
    day = datetime.now(ZURICH).replace(hour=20, minute=0, second=0, microsecond=0) + timedelta(days=1)
    while (day + timedelta(days=1)).utcoffset() == day.utcoffset():  # the day before the next change
        day += timedelta(days=1)
    first = reservation_create(
        tenant=world.physics,
        node_pool=train,
        count=1,
        starts_at=day,
        duration=2,
        rrule="FREQ=DAILY;COUNT=3",
        tz_name="Europe/Zurich",
        acting_user=world.alice,
    )
    assert first.state == Reservation.State.CONFIRMED, first.message
    _response, calendar = _feed(client, calendar_feed_ensure(world.physics))
    starts = sorted(e.decoded("DTSTART") for e in calendar.walk("VEVENT"))
    assert len(starts) == 3
    assert all(s.utcoffset() == timedelta(0) for s in starts)  # written in UTC
    assert [s.astimezone(ZURICH).hour for s in starts] == [20, 20, 20]
    assert {s.astimezone(UTC).hour for s in starts} == {18, 19}  # the UTC hour moved with the change


def test_changes_raise_the_sequence_and_cancelled_bookings_say_so(client, world, train):
    settings = FleetSettings.load()
    settings.reservation_extend_window_hours = 1000
    settings.save()
    kept = reservation_create(
        tenant=world.physics, node_pool=train, count=1, starts_at=soon(24), duration=2, acting_user=world.alice
    )
    dropped = reservation_create(
        tenant=world.physics, node_pool=train, count=1, starts_at=soon(30), duration=2, acting_user=world.alice
    )
    reservation_extend(reservation=kept, ends_at=kept.ends_at + timedelta(hours=1), acting_user=world.alice)
    reservation_cancel(reservation=dropped, acting_user=world.alice)
    _response, calendar = _feed(client, calendar_feed_ensure(world.physics))
    events = _events(calendar)
    extended = events[f"reservation-{kept.pk}@teapot"]
    assert int(extended["SEQUENCE"]) == 1 and extended.decoded("DTEND") == kept.ends_at + timedelta(hours=1)
    cancelled = events[f"reservation-{dropped.pk}@teapot"]
    assert str(cancelled["STATUS"]) == "CANCELLED" and int(cancelled["SEQUENCE"]) == 1
    assert cancelled.decoded("LAST-MODIFIED") >= cancelled.decoded("CREATED")


def test_an_unknown_or_rotated_address_is_404(client, world):
    feed = calendar_feed_ensure(world.physics)
    old = feed.token
    assert client.get(f"/calendar/{old}.ics").status_code == 200
    assert client.get("/calendar/" + "x" * 32 + ".ics").status_code == 404
    assert client.get("/calendar/short.ics").status_code == 404
    rotated = calendar_feed_rotate(world.physics, world.alice)
    assert rotated.token != old
    assert client.get(f"/calendar/{old}.ics").status_code == 404
    assert client.get(f"/calendar/{rotated.token}.ics").status_code == 200
    assert client.post(f"/calendar/{rotated.token}.ics").status_code == 405


def test_an_empty_calendar_is_still_a_calendar(client, world):
    _response, calendar = _feed(client, calendar_feed_ensure(world.genomics))
    assert calendar.walk("VEVENT") == [] and "genomics" in str(calendar["X-WR-CALNAME"]).lower()


def test_the_token_is_in_no_log_line_and_no_audit_entry(client, world, caplog):
    caplog.set_level(logging.DEBUG)
    feed = calendar_feed_ensure(world.physics, actor=world.alice)
    old = feed.token
    client.get(f"/calendar/{old}.ics")
    new = calendar_feed_rotate(world.physics, world.alice).token
    client.get(f"/calendar/{old}.ics")  # now unknown: a 404
    client.get(f"/calendar/{new}.ics")
    formatter = LogfmtFormatter()
    for record in caplog.records:
        RedactSecretsFilter().filter(record)
        line = formatter.format(record)
        assert old not in line and new not in line, line
    for entry in AuditEntry.objects.all():
        text = f"{entry.target_repr} {entry.before} {entry.after}"
        assert old not in text and new not in text
    assert AuditEntry.objects.filter(action="calendar_feed.rotate", actor=world.alice).exists()


def test_feed_paths_are_redacted_wherever_they_are_logged(world):
    token = "Abc_def-0123456789abcdefghij"
    assert token not in redact(f'"GET /calendar/{token}.ics HTTP/1.1" 200 512')
    assert redact(f"Not Found: /calendar/{token}.ics") == "Not Found: /calendar/***.ics"
    # Django's request log carries the request, whose repr has the path.
    record = logging.LogRecord("django.request", logging.WARNING, __file__, 1, "Not Found: %s", ("/x",), None)
    record.request = f"<WSGIRequest: GET '/calendar/{token}.ics'>"
    assert token not in LogfmtFormatter().format(record)
    # gunicorn's access log (--logger-class teapot_portal.logging.RedactingGunicornLogger).
    from gunicorn.config import Config

    gunicorn_log = RedactingGunicornLogger(Config())
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": f"/calendar/{token}.ics",
        "PATH_INFO": f"/calendar/{token}.ics",
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_REFERER": f"https://teapot.example/calendar/{token}.ics",
    }

    class Response:
        status = "200 OK"
        sent = 10
        headers = ()

    atoms = gunicorn_log.atoms(Response(), {}, environ, timedelta(seconds=1))
    assert token not in repr(atoms)
    assert atoms["r"] == "GET /calendar/***.ics HTTP/1.1"
