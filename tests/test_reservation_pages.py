"""Reservation pages (/t/<slug>/reservations/…) and the operators' (/t/operator/reservations/…),
around the named people: alice owns physics, bob views it, carol owns genomics, olga operates.

physics has a cluster c1 with a pool ``train`` of class gpu-a100 (maximum 4, guaranteed 1) and
a pool ``cpu`` of class general, on a fleet of 4 A100 hosts and 6 general ones."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db.backends.postgresql.psycopg_any import DateTimeTZRange
from django.utils import timezone

from hosts.models import FleetSettings, Host
from reservations.forms import local_input
from reservations.models import HostBooking, Reservation
from reservations.selectors import capacity_heatmap
from reservations.services import reservation_create
from tenants.models import AuditEntry, NodePool
from tests.test_quota import a100s, cluster, fleet, generals, pool

pytestmark = pytest.mark.django_db

State = Reservation.State
HX = {"HX-Request": "true"}

# Query ceilings (STYLE.md §11), measured with 60 bookings over 10 hosts (see the tests). The
# heat-map asks once or twice per quota class (the hosts meeting it): three classes here.
CALENDAR_QUERIES = 13
EVENTS_QUERIES = 5
DETAIL_QUERIES = 10
OPERATOR_LIST_QUERIES = 6
TIMELINE_QUERIES = 5
HEATMAP_QUERIES = 9


def soon(hours: float = 24):
    base = timezone.now().replace(minute=0, second=0, microsecond=0)
    return base + timedelta(hours=hours)


@pytest.fixture
def lab(world):
    hosts = fleet(a100s(4) + generals(6))
    c1 = cluster(world)
    train = pool(world, c1, "train", "gpu-a100")
    cpu = pool(world, c1, "cpu", "general")
    return {"world": world, "cluster": c1, "train": train, "cpu": cpu, "hosts": hosts}


def book(lab, count=2, start=None, hours=6, **extra):
    world = lab["world"]
    extra.setdefault("node_pool", lab["train"])
    return reservation_create(
        acting_user=world.alice,
        tenant=world.physics,
        count=count,
        starts_at=start or soon(),
        duration=hours,
        **extra,
    )


def form_data(lab, **overrides) -> dict:
    data = {
        "target": str(lab["train"].pk),
        "count": "2",
        "starts_at": local_input(soon(24)),
        "end_mode": "for",
        "duration": "6",
        "tz_name": "UTC",
        "recurrence": "",
        "priority": "on_demand",
        "hard": "prefer",
        "name": "",
    }
    data.update(overrides)
    return data


def many(lab, n: int) -> list[Reservation]:
    """``n`` confirmed bookings of physics and genomics with a host each (no admission: the
    rows as the lifecycle leaves them), so an N+1 shows in the query counts."""
    world = lab["world"]
    genomics_pool = pool(world, cluster(world, world.genomics, "g1"), "seq", "general")
    hosts = list(Host.objects.filter(name__startswith="n").order_by("name"))  # the general ones
    rows = []
    base = soon(2)
    for i in range(n):
        start = base + timedelta(hours=7 * (i // len(hosts)))
        end = start + timedelta(hours=6)
        on = lab["cpu"] if i % 2 else genomics_pool
        rows.append(
            Reservation(
                tenant=on.cluster.tenant,
                node_pool=on,
                name=f"run {i}",
                count=1,
                starts_at=start,
                ends_at=end,
                original_ends_at=end,
                prepare_at=start - timedelta(minutes=20),
                occupancy=DateTimeTZRange(start - timedelta(minutes=20), end + timedelta(minutes=10), "[)"),
                state=State.CONFIRMED,
            )
        )
    rows = Reservation.objects.bulk_create(rows)
    HostBooking.objects.bulk_create(
        HostBooking(reservation=r, host=hosts[i % len(hosts)], during=r.occupancy, handoff_seconds=600)
        for i, r in enumerate(rows)
    )
    return rows


# ----------------------------------------------------------------------------------- the calendar


def test_alice_sees_the_calendar_the_form_and_her_bookings(client, lab):
    r = book(lab, name="training run")
    client.force_login(lab["world"].alice)
    response = client.get("/t/physics/reservations/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="booking-calendar"' in html and "vendor/fullcalendar/index.global.min.js" in html
    assert 'id="booking-form"' in html and "Book hosts" in html
    assert "training run" in html and f"/t/physics/reservations/{r.pk}/" in html
    assert 'aria-current="page">Reservations</a>' in html  # the tenant's tab
    for label in ("Every weekday (Monday to Friday)", "Custom rule (RRULE)…"):
        assert label in html  # the recurrence presets


def test_bob_sees_the_calendar_but_no_booking_form(client, lab):
    book(lab, name="training run")
    client.force_login(lab["world"].bob)
    html = client.get("/t/physics/reservations/").content.decode()
    assert "training run" in html
    assert 'id="booking-form"' not in html and "cannot book" in html


def test_the_top_navigation_links_to_the_tenants_calendar(client, lab):
    client.force_login(lab["world"].alice)
    html = client.get("/t/physics/").content.decode()
    assert 'href="/t/physics/reservations/"' in html
    client.force_login(lab["world"].olga)
    assert 'href="/t/operator/reservations/"' in client.get("/t/operator/tenants/").content.decode()


def test_a_book_this_link_prefills_the_form(client, lab):
    client.force_login(lab["world"].alice)
    start = local_input(soon(30))
    html = client.get(
        f"/t/physics/reservations/?count=3&starts_at={start}&duration=5&requirement=cores>=8&quota_class=gpu-a100"
    ).content.decode()
    assert 'name="count" value="3"' in html and f'value="{start}"' in html
    assert 'name="duration" value="5"' in html and "cores&gt;=8" in html


def test_the_events_are_the_tenants_bookings_in_the_range_coloured_by_state(client, lab):
    mine = book(lab, name="mine", start=soon(24))
    book(lab, name="later", start=soon(24 * 20))
    genomics = pool(lab["world"], cluster(lab["world"], lab["world"].genomics, "g1"), "seq", "general")
    reservation_create(
        acting_user=lab["world"].carol,
        tenant=lab["world"].genomics,
        node_pool=genomics,
        count=1,
        starts_at=soon(24),
        duration=2,
    )
    client.force_login(lab["world"].alice)
    start, end = (soon(-24)).isoformat(), (soon(24 * 7)).isoformat()
    events = client.get("/t/physics/reservations/events/", {"start": start, "end": end}).json()
    assert [e["id"] for e in events] == [str(mine.pk)]
    event = events[0]
    assert event["title"].startswith("mine") and "res-state-confirmed" in event["classNames"]
    assert event["durationEditable"] is True and event["url"] == f"/t/physics/reservations/{mine.pk}/"
    client.force_login(lab["world"].bob)
    events = client.get("/t/physics/reservations/events/", {"start": start, "end": end}).json()
    assert events[0]["durationEditable"] is False  # a viewer cannot extend


def test_a_plus_in_the_events_range_survives_the_query_string(client, lab):
    mine = book(lab, start=soon(24))
    client.force_login(lab["world"].alice)
    start = timezone.localtime(soon(-2)).isoformat().replace("+00:00", "+00:00")
    url = f"/t/physics/reservations/events/?start={start}&end={soon(48).isoformat()}"  # '+' unescaped: a space
    assert [e["id"] for e in client.get(url).json()] == [str(mine.pk)]


# ----------------------------------------------------------------------------------- the live check


def test_the_live_check_says_it_fits(client, lab):
    client.force_login(lab["world"].alice)
    response = client.post("/t/physics/reservations/check/", form_data(lab), headers=HX)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="check-fits"' in html and "Fits." in html
    assert not Reservation.objects.exists()  # a dry run


def test_the_live_check_gives_the_refusal_and_the_first_possible_start(client, lab):
    first = book(lab, count=3, start=soon(24), hours=6, name="big run")
    assert first.state == State.CONFIRMED
    client.force_login(lab["world"].alice)
    html = client.post(
        "/t/physics/reservations/check/", form_data(lab, count="2", starts_at=local_input(soon(25))), headers=HX
    ).content.decode()
    assert 'id="check-refused"' in html and "Does not fit" in html
    assert "First possible start" in html and "data-use-start=" in html
    assert "at most 4 hosts of gpu-a100; its bookings then take 3" in html


def test_the_live_check_lists_what_is_missing(client, lab):
    client.force_login(lab["world"].alice)
    html = client.post(
        "/t/physics/reservations/check/", form_data(lab, count="0", target=""), headers=HX
    ).content.decode()
    assert 'id="check-errors"' in html
    assert "How many hosts" in html and "Node pool" in html


def test_the_live_check_refuses_a_start_in_the_past(client, lab):
    client.force_login(lab["world"].alice)
    html = client.post(
        "/t/physics/reservations/check/", form_data(lab, starts_at=local_input(soon(-30))), headers=HX
    ).content.decode()
    assert "The start is in the past" in html


# ----------------------------------------------------------------------------------- booking


def test_alice_books_and_returns_to_the_calendar_at_the_bookings_week(client, lab):
    client.force_login(lab["world"].alice)
    start = soon(26)
    response = client.post(
        "/t/physics/reservations/book/",
        form_data(lab, starts_at=local_input(start), name="nightly", return_to="calendar"),
    )
    r = Reservation.objects.get()
    assert r.state == State.CONFIRMED and r.count == 2 and r.name == "nightly" and r.starts_at == start
    assert r.ends_at == start + timedelta(hours=6) and r.created_by == lab["world"].alice
    assert response.status_code == 302
    assert response["Location"] == f"/t/physics/reservations/?date={timezone.localtime(start).date().isoformat()}"
    page = client.get(response["Location"]).content.decode()
    assert "Booked: 2 hosts" in page and "nightly" in page


def test_a_booking_until_an_end_in_another_time_zone(client, lab):
    client.force_login(lab["world"].alice)
    client.post(
        "/t/physics/reservations/book/",
        form_data(
            lab, starts_at="2030-01-01T10:00", end_mode="until", ends_at="2030-01-01T14:00", tz_name="Europe/Zurich"
        ),
    )
    # 2030 is beyond the horizon: refused as a field error, nothing booked.
    assert not Reservation.objects.exists()
    start = timezone.localtime(soon(30))
    zurich = start.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Zurich"))
    client.post(
        "/t/physics/reservations/book/",
        form_data(
            lab,
            starts_at=zurich.strftime("%Y-%m-%dT%H:%M"),
            end_mode="until",
            ends_at=(zurich + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M"),
            tz_name="Europe/Zurich",
        ),
    )
    r = Reservation.objects.get()
    assert r.starts_at == start and r.ends_at == start + timedelta(hours=3)


def test_form_errors_keep_the_input(client, lab):
    client.force_login(lab["world"].alice)
    response = client.post(
        "/t/physics/reservations/book/",
        form_data(lab, count="0", requirement="cores>=banana", name="keep me", duration="7.5"),
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert 'value="keep me"' in html and 'name="duration" value="7.5"' in html and "cores&gt;=banana" in html
    assert "Nothing saved" in html
    assert not Reservation.objects.exists()


def test_a_service_refusal_is_shown_next_to_its_field(client, lab):
    client.force_login(lab["world"].alice)
    response = client.post("/t/physics/reservations/book/", form_data(lab, requirement="gpu:nvidia-a100>=banana"))
    assert response.status_code == 400
    assert "field-error" in response.content.decode()
    response = client.post("/t/physics/reservations/book/", form_data(lab, recurrence="custom", rrule="FREQ=SECONDLY"))
    assert response.status_code == 400 and "FREQ=SECONDLY" in response.content.decode()


def test_a_refused_booking_goes_to_its_page_saying_why(client, lab):
    client.force_login(lab["world"].alice)
    response = client.post("/t/physics/reservations/book/", form_data(lab, count="5"))
    r = Reservation.objects.get()
    assert r.state == State.REFUSED
    assert response["Location"] == f"/t/physics/reservations/{r.pk}/"
    html = client.get(response["Location"]).content.decode()
    assert "Not booked" in html and 'id="refused-banner"' in html and "at most 4 hosts of gpu-a100" in html


def test_a_booking_into_a_new_pool_creates_the_pool(client, lab):
    world = lab["world"]
    client.force_login(world.alice)
    data = form_data(
        lab, target="new:c1", pool_name="burst", quota_class="general", image=world.image.name, cleaning="standard"
    )
    response = client.post("/t/physics/reservations/book/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    r = Reservation.objects.get()
    assert r.state == State.CONFIRMED and r.node_pool.name == "burst" and r.node_pool.quota_class.name == "general"


def test_a_new_pool_needs_its_class_image_and_name(client, lab):
    client.force_login(lab["world"].alice)
    response = client.post("/t/physics/reservations/book/", form_data(lab, target="new:c1"))
    assert response.status_code == 400
    html = response.content.decode()
    assert "Choose the new pool&#x27;s quota class." in html and "Name the new pool." in html
    assert not NodePool.objects.filter(name="").exists()


def test_a_recurring_booking_with_a_custom_rule(client, lab):
    client.force_login(lab["world"].alice)
    client.post(
        "/t/physics/reservations/book/",
        form_data(lab, recurrence="custom", rrule="FREQ=DAILY;COUNT=3", tz_name="Europe/Zurich", count="1"),
    )
    first = Reservation.objects.order_by("starts_at").first()
    assert Reservation.objects.filter(series=first.series).count() == 3
    html = client.get(f"/t/physics/reservations/{first.pk}/").content.decode()
    assert "3 occurrences" in html and "Cancel this and later" in html
    # The calendar's list shows the series once, at its next occurrence.
    html = client.get("/t/physics/reservations/").content.decode()
    assert html.count(f'href="/t/physics/reservations/{first.pk}/"') == 1
    assert "↻ recurring, then 2 more" in html
    for later in Reservation.objects.filter(series=first.series).exclude(pk=first.pk):
        assert f'href="/t/physics/reservations/{later.pk}/"' not in html


# ----------------------------------------------------------------------------------- one booking


def test_the_booking_page_shows_the_plan_and_when_preparation_begins(client, lab):
    r = book(lab, name="training run")
    client.force_login(lab["world"].alice)
    html = client.get(f"/t/physics/reservations/{r.pk}/").content.decode()
    assert "Host plan" in html and "2 of 2 planned" in html
    for b in r.bookings.select_related("host"):
        assert b.host.name in html
    assert "Preparation" in html and "ahead, so the hosts are ready at the start" in html
    assert "Cancel…" in html and "Release early" not in html
    assert 'hx-trigger="every 5s"' not in html  # nothing to follow yet


def test_the_booking_fragment_polls_while_preparing_and_stops_after(client, lab):
    r = book(lab)
    client.force_login(lab["world"].alice)
    response = client.get(f"/t/physics/reservations/{r.pk}/", headers=HX)
    assert response.status_code == 286  # htmx stops polling
    Reservation.objects.filter(pk=r.pk).update(state=State.PREPARING)
    response = client.get(f"/t/physics/reservations/{r.pk}/", headers=HX)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'hx-trigger="every 5s"' in html and "<html" not in html
    assert 'id="reservation-state" hx-swap-oob="true"' in html


def test_a_banner_when_the_end_is_near(client, lab):
    r = book(lab)
    now = timezone.now()
    Reservation.objects.filter(pk=r.pk).update(
        state=State.ACTIVE, starts_at=now - timedelta(hours=1), ends_at=now + timedelta(minutes=30)
    )
    client.force_login(lab["world"].alice)
    html = client.get(f"/t/physics/reservations/{r.pk}/").content.decode()
    assert 'id="ending-banner"' in html and ("Ends in 29 minutes" in html or "Ends in 30 minutes" in html)
    assert "Release early" in html
    settings = FleetSettings.load()
    settings.reservation_reminder_minutes = 10
    settings.save()
    assert 'id="ending-banner"' not in client.get(f"/t/physics/reservations/{r.pk}/").content.decode()


def test_a_banner_says_why_it_was_preempted(client, lab):
    r = book(lab)
    Reservation.objects.filter(pk=r.pk).update(
        state=State.PREEMPTED, message="Pre-empted: genomics' guaranteed booking needed 2 hosts of gpu-a100."
    )
    client.force_login(lab["world"].alice)
    html = client.get(f"/t/physics/reservations/{r.pk}/").content.decode()
    assert 'id="preempted-banner"' in html and "genomics&#x27; guaranteed booking needed 2 hosts" in html


def test_alice_cancels_after_confirming(client, lab):
    r = book(lab)
    client.force_login(lab["world"].alice)
    page = client.get(f"/t/physics/reservations/{r.pk}/cancel/")
    assert page.status_code == 200 and "Cancel this booking?" in page.content.decode()
    response = client.post(f"/t/physics/reservations/{r.pk}/cancel/")
    assert response["Location"] == f"/t/physics/reservations/{r.pk}/"
    r.refresh_from_db()
    assert r.state == State.CANCELLED and not r.bookings.exists()
    again = client.post(f"/t/physics/reservations/{r.pk}/cancel/")
    assert again.status_code == 400 and "cannot be cancelled" in again.content.decode()


def test_alice_cancels_the_rest_of_a_series(client, lab):
    first = book(lab, count=1, rrule="FREQ=DAILY;COUNT=4", tz_name="UTC")
    second = Reservation.objects.filter(series=first.series).order_by("starts_at")[1]
    client.force_login(lab["world"].alice)
    page = client.get(f"/t/physics/reservations/{second.pk}/cancel/?series=1").content.decode()
    assert "3 occurrences from this one on" in page
    client.post(f"/t/physics/reservations/{second.pk}/cancel/", {"series": "1"})
    states = list(Reservation.objects.filter(series=first.series).order_by("starts_at").values_list("state", flat=True))
    assert states == [State.CONFIRMED, State.CANCELLED, State.CANCELLED, State.CANCELLED]


def test_alice_releases_an_active_booking_early(client, lab):
    r = book(lab)
    Reservation.objects.filter(pk=r.pk).update(state=State.ACTIVE, starts_at=timezone.now() - timedelta(hours=1))
    client.force_login(lab["world"].alice)
    assert "Release the hosts now?" in client.get(f"/t/physics/reservations/{r.pk}/release/").content.decode()
    client.post(f"/t/physics/reservations/{r.pk}/release/")
    r.refresh_from_db()
    assert r.state == State.COMPLETED and "Released early" in r.message


def test_extending_from_the_page_and_from_the_calendar(client, lab):
    r = book(lab, start=soon(4), hours=4)
    client.force_login(lab["world"].alice)
    # the page's form: a wall-clock time in the given zone
    new_end = r.ends_at + timedelta(hours=1)
    response = client.post(
        f"/t/physics/reservations/{r.pk}/extend/", {"ends_at": local_input(new_end, "UTC"), "tz_name": "UTC"}
    )
    assert response.status_code == 302
    r.refresh_from_db()
    assert r.ends_at == new_end
    # the calendar's drag: an ISO instant, answered in JSON
    later = r.ends_at + timedelta(hours=2)
    answer = client.post(
        f"/t/physics/reservations/{r.pk}/extend/",
        {"ends_at": later.isoformat()},
        headers={"Accept": "application/json"},
    )
    assert answer.status_code == 200 and answer.json()["ok"] is True
    r.refresh_from_db()
    assert r.ends_at == later
    assert AuditEntry.objects.filter(action="reservation.extend", target_id=str(r.pk)).count() == 2


def test_an_extension_refusal_comes_back_in_words(client, lab):
    r = book(lab, start=soon(24 * 5), hours=4)
    client.force_login(lab["world"].alice)
    answer = client.post(
        f"/t/physics/reservations/{r.pk}/extend/",
        {"ends_at": (r.ends_at + timedelta(hours=1)).isoformat()},
        headers={"Accept": "application/json"},
    )
    assert answer.status_code == 400
    assert answer.json() == {"ok": False, "message": answer.json()["message"]}
    assert "Extensions open 48 hours before the end" in answer.json()["message"]
    page = client.post(f"/t/physics/reservations/{r.pk}/extend/", {"ends_at": "soon"}, follow=True)
    assert "Not extended: Give the new end" in page.content.decode()


# ----------------------------------------------------------------------------------- access


@pytest.mark.parametrize(
    "method,path",
    [
        ("post", "/t/physics/reservations/book/"),
        ("post", "/t/physics/reservations/check/"),
        ("get", "/t/physics/reservations/{pk}/cancel/"),
        ("post", "/t/physics/reservations/{pk}/cancel/"),
        ("get", "/t/physics/reservations/{pk}/release/"),
        ("post", "/t/physics/reservations/{pk}/release/"),
        ("post", "/t/physics/reservations/{pk}/extend/"),
    ],
)
def test_bob_cannot_book_cancel_or_extend(client, lab, method, path):
    r = book(lab)
    client.force_login(lab["world"].bob)
    response = getattr(client, method)(path.format(pk=r.pk), form_data(lab) if method == "post" else None)
    assert response.status_code == 403
    r.refresh_from_db()
    assert r.state == State.CONFIRMED and Reservation.objects.count() == 1


@pytest.mark.parametrize(
    "path",
    [
        "/t/physics/reservations/",
        "/t/physics/reservations/events/",
        "/t/physics/reservations/availability/",
        "/t/physics/reservations/{pk}/",
        "/t/physics/reservations/{pk}/cancel/",
    ],
)
def test_carol_gets_404_and_anonymous_people_sign_in(client, lab, path):
    r = book(lab)
    url = path.format(pk=r.pk)
    assert client.get(url).status_code == 302 and "/accounts/login/" in client.get(url)["Location"]
    client.force_login(lab["world"].carol)
    assert client.get(url).status_code == 404


def test_a_booking_of_another_tenant_in_my_tenants_url_is_404(client, lab):
    world = lab["world"]
    genomics = pool(world, cluster(world, world.genomics, "g1"), "seq", "general")
    theirs = reservation_create(
        acting_user=world.carol, tenant=world.genomics, node_pool=genomics, count=1, starts_at=soon(), duration=2
    )
    client.force_login(world.alice)
    assert client.get(f"/t/physics/reservations/{theirs.pk}/").status_code == 404
    assert client.post(f"/t/physics/reservations/{theirs.pk}/cancel/").status_code == 404


# ----------------------------------------------------------------------------------- availability


def test_when_can_i_get_hosts_lists_windows_with_book_links(client, lab):
    book(lab, count=3, start=soon(3), hours=6, name="big run")
    client.force_login(lab["world"].alice)
    response = client.get(
        "/t/physics/reservations/availability/",
        {"requirement": "gpu:nvidia-a100>=1", "count": "2", "duration": "4", "priority": "on_demand"},
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "Earliest windows" in html and "in gpu-a100" in html
    assert html.count('class="window"') == 3 and html.count("Book this") == 3
    assert "/t/physics/reservations/?count=2" in html and "quota_class=gpu-a100" in html


def test_when_can_i_get_hosts_explains_bad_input(client, lab):
    client.force_login(lab["world"].alice)
    response = client.get(
        "/t/physics/reservations/availability/", {"requirement": "cores>=banana", "count": "2", "duration": "4"}
    )
    assert response.status_code == 400 and "field-error" in response.content.decode()
    assert 'value="2"' in response.content.decode()


def test_bob_sees_windows_but_no_book_links(client, lab):
    client.force_login(lab["world"].bob)
    html = client.get(
        "/t/physics/reservations/availability/",
        {"requirement": "", "quota_class": "general", "count": "1", "duration": "2", "priority": "on_demand"},
    ).content.decode()
    assert 'class="window"' in html and "Book this" not in html


# ----------------------------------------------------------------------------------- operators


@pytest.mark.parametrize(
    "url", ["/t/operator/reservations/", "/t/operator/reservations/timeline/", "/t/operator/reservations/capacity/"]
)
def test_operator_pages_are_for_operators_only(client, lab, url):
    assert "/accounts/login/" in client.get(url)["Location"]
    client.force_login(lab["world"].alice)
    assert client.get(url).status_code == 403
    client.force_login(lab["world"].olga)
    assert client.get(url).status_code == 200


def test_olga_lists_every_tenants_bookings_and_filters_them(client, lab):
    many(lab, 6)
    client.force_login(lab["world"].olga)
    html = client.get("/t/operator/reservations/").content.decode()
    assert "run 0" in html and "run 1" in html and "genomics" in html and "physics" in html
    fragment = client.get("/t/operator/reservations/", {"tenant": "genomics"}, headers=HX).content.decode()
    assert "<html" not in fragment and "run 0" in fragment and "run 1" not in fragment


def test_the_timeline_has_a_row_per_host_and_an_item_per_host_booking(client, lab):
    rows = many(lab, 4)
    client.force_login(lab["world"].olga)
    response = client.get("/t/operator/reservations/timeline/")
    html = response.content.decode()
    assert "vendor/vis-timeline/vis-timeline-graph2d.min.js" in html
    data = response.context["timeline_data"]
    assert len(data["groups"]) == Host.objects.count()
    assert len(data["items"]) == 4
    assert len({g["klass"] for g in data["groups"]}) == 2  # hardware classes: A100 servers, general ones
    assert [c["hosts"] for c in response.context["timeline"].classes] == [4, 6]
    tenants = {t["slug"] for t in response.context["timeline"].tenants}
    assert tenants == {"physics", "genomics"}
    assert json.loads(html.split('id="timeline-data" type="application/json">')[1].split("</script>")[0])["items"]
    assert rows[0].name in html


def test_capacity_heatmap_counts_free_hosts_per_class_and_block(lab):
    world = lab["world"]
    now = timezone.now()
    heat = capacity_heatmap(days=2, block_hours=6, now=now)
    gpu = next(r for r in heat.rows if r.quota_class.name == "gpu-a100")
    assert gpu.hosts == 4 and len(gpu.cells) == 8 and all(c.free == 4 for c in gpu.cells)
    start = heat.blocks[2][0] + timedelta(hours=1)
    r = book(lab, count=3, start=start, hours=2)
    assert r.state == State.CONFIRMED, r.message
    heat = capacity_heatmap(days=2, block_hours=6, now=now)
    gpu = next(r for r in heat.rows if r.quota_class.name == "gpu-a100")
    free = [c.free for c in gpu.cells]
    assert free[2] == 1 and free[0] == 4 and free[4] == 4
    assert gpu.cells[2].level == 2 and gpu.cells[0].level == 4  # a quarter free; all free
    general = next(r for r in heat.rows if r.quota_class.name == "general")
    assert all(c.free == general.hosts for c in general.cells)
    assert world


def test_the_heatmap_page_is_a_table_with_numbers(client, lab):
    assert book(lab, count=3, start=soon(30), hours=2).state == State.CONFIRMED
    client.force_login(lab["world"].olga)
    html = client.get("/t/operator/reservations/capacity/").content.decode()
    assert '<table class="heatmap block-6">' in html and "heat-2" in html and "heat-4" in html
    assert '1<span class="visually-hidden"> free of 4, 3 booked</span>' in html
    daily = client.get("/t/operator/reservations/capacity/", {"block": "24"}).content.decode()
    assert "block-24" in daily


# ----------------------------------------------------------------------------------- query counts


def test_the_calendar_page_takes_a_constant_number_of_queries(client, lab, django_assert_max_num_queries):
    many(lab, 60)
    client.force_login(lab["world"].alice)
    client.get("/t/physics/reservations/")  # warm the session and the time zone list
    with django_assert_max_num_queries(CALENDAR_QUERIES):
        assert client.get("/t/physics/reservations/").status_code == 200


def test_the_calendar_events_take_a_constant_number_of_queries(client, lab, django_assert_max_num_queries):
    many(lab, 60)
    client.force_login(lab["world"].alice)
    params = {"start": soon(-24).isoformat(), "end": soon(24 * 40).isoformat()}
    with django_assert_max_num_queries(EVENTS_QUERIES):
        events = client.get("/t/physics/reservations/events/", params).json()
    assert len(events) == 30


def test_a_booking_page_takes_a_constant_number_of_queries(client, lab, django_assert_max_num_queries):
    r = book(lab, count=2, rrule="FREQ=DAILY;COUNT=5", tz_name="UTC")
    many(lab, 60)  # over-promises the general hosts: booked after, they would refuse it
    client.force_login(lab["world"].alice)
    client.get(f"/t/physics/reservations/{r.pk}/")  # the session remembers the tenant once
    with django_assert_max_num_queries(DETAIL_QUERIES):
        html = client.get(f"/t/physics/reservations/{r.pk}/").content.decode()
    assert "5 occurrences" in html and "2 of 2 planned" in html


def test_the_operator_list_takes_a_constant_number_of_queries(client, lab, django_assert_max_num_queries):
    many(lab, 60)
    client.force_login(lab["world"].olga)
    with django_assert_max_num_queries(OPERATOR_LIST_QUERIES):
        assert client.get("/t/operator/reservations/", {"when": "all"}).status_code == 200


def test_the_timeline_takes_a_constant_number_of_queries(client, lab, django_assert_max_num_queries):
    many(lab, 60)
    client.force_login(lab["world"].olga)
    with django_assert_max_num_queries(TIMELINE_QUERIES):
        response = client.get("/t/operator/reservations/timeline/")
    assert len(response.context["timeline_data"]["items"]) > 10


def test_the_heatmap_takes_a_constant_number_of_queries(client, lab, django_assert_max_num_queries):
    many(lab, 60)
    client.force_login(lab["world"].olga)
    with django_assert_max_num_queries(HEATMAP_QUERIES):
        assert client.get("/t/operator/reservations/capacity/").status_code == 200


# ----------------------------------------------------------------------------------- the iCal feed

FEED_CREATE = "/t/physics/reservations/feed/"
FEED_ROTATE = "/t/physics/reservations/feed/rotate/"


def _feeds():
    from reservations.models import CalendarFeed

    return CalendarFeed.objects


def _feed_url(html: str) -> str:
    import re

    found = re.search(r'id="feed-url" class="feed-url" value="(http://testserver/calendar/[A-Za-z0-9_-]+\.ics)"', html)
    assert found, "no feed address on the page"
    return found[1]


def test_a_member_creates_the_feed_with_a_post_never_on_a_get(client, lab):
    client.force_login(lab["world"].dave)  # a member: may write, not manage
    page = client.get("/t/physics/reservations/")
    html = page.content.decode()
    assert 'id="subscribe"' in html and "Create feed URL" in html and 'id="feed-url"' not in html
    assert not _feeds().exists()  # the page did not make one
    response = client.post(FEED_CREATE)
    assert response.status_code == 302 and response["Location"] == "/t/physics/reservations/#subscribe"
    feed = _feeds().get(tenant=lab["world"].physics)
    page = client.get("/t/physics/reservations/")
    html = page.content.decode()
    assert _feed_url(html) == f"http://testserver/calendar/{feed.token}.ics"
    assert "Calendar feed created" in html and "Create feed URL" not in html
    assert page["Cache-Control"] == "no-store"  # the secret is on the page
    assert "Rotate" not in html and "ask an owner to rotate it" in html  # owners rotate, as in the API
    assert client.post(FEED_ROTATE).status_code == 403
    assert client.get(_feed_url(html).removeprefix("http://testserver")).status_code == 200
    client.post(FEED_CREATE)  # idempotent
    assert _feeds().get().token == feed.token
    assert AuditEntry.objects.filter(action="calendar_feed.create", actor=lab["world"].dave).count() == 1


def test_alice_rotates_the_feed_and_the_old_address_stops_working(client, lab):
    client.force_login(lab["world"].alice)
    client.post(FEED_CREATE)
    html = client.get("/t/physics/reservations/").content.decode()
    old = _feed_url(html).removeprefix("http://testserver")
    assert f'action="{FEED_ROTATE}"' in html and "data-confirm=" in html
    assert client.get(old).status_code == 200
    response = client.post(FEED_ROTATE)
    assert response.status_code == 302 and response["Location"].endswith("/reservations/#subscribe")
    html = client.get("/t/physics/reservations/").content.decode()
    new = _feed_url(html).removeprefix("http://testserver")
    assert new != old and "the old one no longer works" in html
    assert client.get(old).status_code == 404
    assert client.get(new).status_code == 200
    assert AuditEntry.objects.filter(action="calendar_feed.rotate", actor=lab["world"].alice).exists()


def test_rotating_before_any_feed_exists_makes_one(client, lab):
    client.force_login(lab["world"].alice)
    assert client.post(FEED_ROTATE).status_code == 302
    assert _feeds().filter(tenant=lab["world"].physics).exists()


def test_bob_sees_no_feed_address_and_cannot_create_or_rotate_it(client, lab):
    client.force_login(lab["world"].alice)
    client.post(FEED_CREATE)
    token = _feeds().get().token
    client.force_login(lab["world"].bob)
    html = client.get("/t/physics/reservations/").content.decode()
    assert token not in html and 'id="subscribe"' not in html
    assert client.post(FEED_ROTATE).status_code == 403
    assert client.post(FEED_CREATE).status_code == 403
    assert _feeds().get().token == token


def test_carol_gets_404_on_the_feed_of_physics_and_never_sees_its_address(client, lab):
    client.force_login(lab["world"].alice)
    client.post(FEED_CREATE)
    token = _feeds().get().token
    client.force_login(lab["world"].carol)
    assert client.post(FEED_CREATE).status_code == 404
    assert client.post(FEED_ROTATE).status_code == 404
    assert client.get(FEED_ROTATE).status_code == 405  # writes only, like a missing tenant's
    assert _feeds().get().token == token
    html = client.get("/t/genomics/reservations/").content.decode()
    assert token not in html and "Create feed URL" in html  # her own tenant has none yet
