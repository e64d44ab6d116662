"""The reservation pages in headless Chromium: alice drags across the week view, the form is
filled in, the live check says it fits, she books and the booking appears in the calendar; she
drags its end later to extend it (refused first, reverted with the reason; then allowed). Every
page on a desktop and on a phone, with a screenshot and no horizontal overflow."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from hosts.models import FleetSettings
from reservations.models import Reservation
from reservations.services import reservation_create
from tests.browser import ARTIFACTS, shot
from tests.test_quota import a100s, cluster, fleet, generals, pool
from tests.test_tenant_pages_browser import PHONE, no_horizontal_overflow, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = Path("/tmp/shots")


def keep(page, name: str) -> None:
    """A screenshot under test-artifacts/screenshots/ and a copy under /tmp/shots/ to look at."""
    shot(page, name)
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(ARTIFACTS / f"{name}.png", SHOTS / f"{name}.png")


@pytest.fixture(autouse=True)
def _no_reconciles(monkeypatch):
    """Provisioning is not under test here."""
    monkeypatch.setattr("tenants.clusters.reconcile_cluster_after_commit", lambda pk: None)
    monkeypatch.setattr("tenants.clusters.reconcile_pool_after_commit", lambda pk: None)
    monkeypatch.setattr("reservations.services._kick", lambda: None)


@pytest.fixture
def lab(world):
    fleet(a100s(4) + generals(6))
    c1 = cluster(world)
    return {"world": world, "train": pool(world, c1, "train", "gpu-a100"), "cpu": pool(world, c1, "cpu", "general")}


def _drag(page, from_box, to_box) -> None:
    page.mouse.move(from_box["x"] + from_box["width"] / 2, from_box["y"] + from_box["height"] / 2)
    page.mouse.down()
    page.mouse.move(to_box["x"] + to_box["width"] / 2, to_box["y"] + to_box["height"] / 2, steps=12)
    page.mouse.up()


def _slot(page, day: str, hhmm: str) -> dict:
    """The box of the week view's cell for ``day`` (YYYY-MM-DD) at ``hhmm`` (its hour row)."""
    column = page.locator(f'td.fc-timegrid-col[data-date="{day}"]').bounding_box()
    row = page.locator(f'td.fc-timegrid-slot-lane[data-time="{hhmm}:00"]').bounding_box()
    return {"x": column["x"], "y": row["y"], "width": column["width"], "height": row["height"]}


def test_alice_drags_to_book_and_drags_the_end_to_extend(page, live_server, lab):
    tomorrow = (timezone.localtime() + timedelta(days=1)).date()
    day = tomorrow.isoformat()
    sign_in(page, live_server, "alice@physics.example")
    page.goto(f"{live_server.url}/t/physics/reservations/?date={day}")
    page.locator(f'td.fc-timegrid-col[data-date="{day}"]').wait_for()
    page.evaluate("window.__noReload = true")
    page.get_by_label("Node pool").select_option(label="c1 / train (gpu-a100)")
    page.get_by_label("How many hosts").fill("2")

    # Drag from 10:00 to 13:00 (the 13:00 row's end is 14:00).
    # In the middle of the screen: the calendar's sticky day headers cover the top.
    page.locator('td.fc-timegrid-slot-lane[data-time="11:00:00"]').evaluate(
        "el => el.scrollIntoView({block: 'center'})"
    )
    _drag(page, _slot(page, day, "10:00"), _slot(page, day, "13:00"))
    page.wait_for_function("document.getElementById('id_starts_at').value.endsWith('T10:00')")
    page.locator("#check-fits").wait_for()
    assert page.get_by_label("Start").input_value() == f"{day}T10:00"
    assert page.locator("#id_ends_at").input_value() == f"{day}T14:00"
    assert page.locator('input[name="end_mode"][value="until"]').is_checked()
    assert "Fits." in page.locator("#booking-check").inner_text()
    assert page.evaluate("window.__noReload") is True  # the check came by htmx
    keep(page, "reservations-form-filled-by-drag")

    page.get_by_role("button", name="Book", exact=True).click()
    page.wait_for_url(f"{live_server.url}/t/physics/reservations/?date={day}")
    assert page.get_by_text("Booked: 2 hosts").is_visible()
    r = Reservation.objects.get()
    assert r.state == Reservation.State.CONFIRMED and r.count == 2
    event = page.locator(f'.fc-timegrid-event-harness a.fc-event[href="/t/physics/reservations/{r.pk}/"]')
    event.wait_for()
    assert "2 hosts" in event.inner_text()
    keep(page, "reservations-calendar-booked")

    # Drag the end an hour later while extensions are closed: refused, reverted, said why.
    settings = FleetSettings.load()
    settings.reservation_extend_window_hours = 1
    settings.save()
    event.evaluate("el => el.scrollIntoView({block: 'center'})")
    before = event.bounding_box()
    event.hover()
    resizer = event.locator(".fc-event-resizer-end")
    resizer.wait_for()
    slot_h = _slot(page, day, "14:00")["height"]
    box = resizer.bounding_box()
    _drag(page, box, {**box, "y": box["y"] + slot_h})
    page.locator(".calendar-status.is-error").wait_for()
    assert "Not extended: Extensions open 1 hours before the end" in page.locator("#calendar-status").inner_text()
    assert abs(event.bounding_box()["height"] - before["height"]) < 2  # reverted
    r.refresh_from_db()
    assert timezone.localtime(r.ends_at).hour == 14

    # Open again: the same drag extends it.
    settings.reservation_extend_window_hours = 48
    settings.save()
    event = page.locator(f'.fc-timegrid-event-harness a.fc-event[href="/t/physics/reservations/{r.pk}/"]')
    event.evaluate("el => el.scrollIntoView({block: 'center'})")
    event.hover()
    resizer = event.locator(".fc-event-resizer-end")
    resizer.wait_for()
    box = resizer.bounding_box()
    _drag(page, box, {**box, "y": box["y"] + slot_h})
    page.locator(".calendar-status.is-ok").wait_for()
    assert "Extended" in page.locator("#calendar-status").inner_text()
    r.refresh_from_db()
    assert timezone.localtime(r.ends_at).hour == 15
    keep(page, "reservations-calendar-extended")


def _busy(lab) -> Reservation:
    """A few bookings of physics (one recurring, one refused) and one of genomics."""
    world = lab["world"]
    soon = timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=3)
    first = reservation_create(
        acting_user=world.alice,
        tenant=world.physics,
        node_pool=lab["train"],
        count=2,
        starts_at=soon,
        duration=6,
        name="training run",
    )
    reservation_create(
        acting_user=world.alice,
        tenant=world.physics,
        node_pool=lab["cpu"],
        count=2,
        starts_at=soon + timedelta(days=1),
        duration=8,
        name="nightly batch",
        rrule="FREQ=DAILY;COUNT=4",
        tz_name="Europe/Zurich",
    )
    reservation_create(
        acting_user=world.alice, tenant=world.physics, node_pool=lab["train"], count=9, starts_at=soon, duration=2
    )
    genomics = pool(world, cluster(world, world.genomics, "g1"), "seq", "general")
    reservation_create(
        acting_user=world.carol,
        tenant=world.genomics,
        node_pool=genomics,
        count=2,
        starts_at=soon + timedelta(hours=5),
        duration=10,
        name="assembly",
    )
    return first


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_every_reservation_page_on_a_desktop_and_a_phone(page, live_server, lab, device):
    first = _busy(lab)
    refused = Reservation.objects.get(state=Reservation.State.REFUSED, count=9)
    assert Reservation.objects.filter(name="nightly batch", state=Reservation.State.CONFIRMED).count() == 4
    series = Reservation.objects.filter(name="nightly batch").order_by("starts_at")[1]
    if device == "phone":
        page.set_viewport_size(PHONE)
    sign_in(page, live_server, "alice@physics.example")
    base = f"{live_server.url}/t/physics/reservations"
    tenant_pages = [
        ("calendar", f"{base}/", ".fc-event"),
        ("detail", f"{base}/{first.pk}/", "#plan-heading"),
        ("detail-series", f"{base}/{series.pk}/", "#series-heading"),
        ("detail-refused", f"{base}/{refused.pk}/", "#refused-banner"),
        ("cancel-series", f"{base}/{series.pk}/cancel/?series=1", "h1"),
        (
            "availability",
            f"{base}/availability/?requirement=gpu:nvidia-a100>=1&count=2&duration=4&priority=on_demand",
            ".window-list",
        ),
    ]
    for name, url, ready in tenant_pages:
        page.goto(url)
        page.locator(ready).first.wait_for()
        keep(page, f"reservations-{name}-{device}")
        no_horizontal_overflow(page)
    if device == "desktop":
        # Refused (the training run holds the A100 hosts then): the first possible start fills the form.
        page.goto(f"{base}/")
        page.get_by_label("Node pool").select_option(label="c1 / train (gpu-a100)")
        page.get_by_label("How many hosts").fill("3")
        page.get_by_label("Start").fill(timezone.localtime(first.starts_at).strftime("%Y-%m-%dT%H:%M"))
        page.locator("#check-refused").wait_for()
        keep(page, "reservations-check-refused")
        page.get_by_role("button", name="Use this start").click()
        page.locator("#check-fits").wait_for()
        assert page.get_by_label("Start").input_value() > timezone.localtime(first.starts_at).strftime("%Y-%m-%dT%H:%M")
    page.goto(f"{base}/")
    page.get_by_role("button", name="month").click()
    page.locator(".fc-daygrid-event").first.wait_for()
    keep(page, f"reservations-calendar-month-{device}")
    no_horizontal_overflow(page)

    page.context.clear_cookies()
    sign_in(page, live_server, "olga@teapot.example")
    operator = f"{live_server.url}/t/operator/reservations"
    for name, url, ready in [
        ("operator-list", f"{operator}/", "#operator-bookings table"),
        ("operator-timeline", f"{operator}/timeline/", ".vis-item"),
        ("operator-heatmap", f"{operator}/capacity/", "table.heatmap"),
    ]:
        page.goto(url)
        page.locator(ready).first.wait_for()
        keep(page, f"reservations-{name}-{device}")
        no_horizontal_overflow(page)
    if device == "desktop":
        # Hiding a hardware class hides its rows.
        page.goto(f"{operator}/timeline/")
        page.locator(".vis-item").first.wait_for()
        rows = page.locator(".vis-label").count()
        page.locator("[data-class-toggle]").first.uncheck()
        page.wait_for_function(f"document.querySelectorAll('.vis-label').length < {rows}")
