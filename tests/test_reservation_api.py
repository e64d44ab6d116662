"""The reservation API, around the named people (STYLE.md §9): alice owns physics, dave is a
member, bob views it, carol owns genomics, olga operates.

Every tenant-scoped URL is in :data:`URLS` once with what it needs; the access matrix (carol
404, bob's writes 403, anonymous refused) is parametrized over it (the isolation sweep in
tests/test_isolation.py covers the routes again, from the resolver). Then the happy paths, the
refusal (409 with the earliest start), bad input as 400s per field, Idempotency-Key, the
calendar feed's address, availability, query counts and the schema.

The fleet: 4 A100 hosts and 4 general ones; physics may hold at most 4 gpu-a100 (1 guaranteed).
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import pytest
import yaml
from django.utils import timezone

from hosts.models import FleetSettings
from reservations.models import CalendarFeed, Reservation
from reservations.services import reservation_create, reservation_transition
from tenants.models import AuditEntry, NodePool
from tests.conftest import api_client, run_manage
from tests.test_host_api import _resolve
from tests.test_quota import a100s, cluster, fleet, generals, pool
from tests.test_reservations import soon

pytestmark = pytest.mark.django_db

State = Reservation.State
API = "/api/v1"
PHYSICS = f"{API}/tenants/physics"
RESERVATIONS = f"{PHYSICS}/reservations"
IMAGE = "ubuntu-24.04-k8s-1.31"


@pytest.fixture
def scene(world):
    """world + the fleet + physics/c1 with an empty gpu-a100 pool "train" + one confirmed
    booking of 1 host two days ahead (``world.booked``)."""
    fleet(a100s(4) + generals(4))
    world.train = pool(world, cluster(world), "train", "gpu-a100")
    world.booked = reservation_create(
        tenant=world.physics,
        node_pool=world.train,
        count=1,
        starts_at=soon(48),
        duration=4,
        name="warm-up",
        acting_user=world.alice,
    )
    assert world.booked.state == State.CONFIRMED, world.booked.message
    return world


def body(**change) -> dict:
    return {"node_pool": "c1/train", "count": 2, "starts_at": soon(24).isoformat(), "duration": 6, **change}


def _error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.content)
    data = response.json()
    assert set(data) == {"error"} and {"code", "message", "details"} <= set(data["error"]), data
    if code is not None:
        assert data["error"]["code"] == code, data
    return data["error"]


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _call(client, method: str, url: str, data=None, **kwargs):
    return getattr(client, method.lower())(url, data, format="json", **kwargs)


# --------------------------------------------------------------------------- the access matrix

# (method, url, body, need): "read" any member, "write" owners and members, "manage" owners.
# {r} is the scene's booking.
URLS = [
    ("GET", RESERVATIONS + "/", None, "read"),
    ("POST", RESERVATIONS + "/", body(), "write"),
    ("POST", RESERVATIONS + "/check/", body(), "write"),
    ("GET", RESERVATIONS + "/{r}/", None, "read"),
    ("POST", RESERVATIONS + "/{r}/cancel/", {}, "write"),
    ("POST", RESERVATIONS + "/{r}/extend/", {"ends_at": soon(60).isoformat()}, "write"),
    ("POST", RESERVATIONS + "/{r}/release/", {}, "write"),
    ("GET", PHYSICS + "/calendar-feed/", None, "write"),
    ("POST", PHYSICS + "/calendar-feed/rotate/", None, "manage"),
]
WRITES = [u for u in URLS if u[3] != "read"]


def _ids(urls):
    return [f"{method} {url.removeprefix(PHYSICS)}" for method, url, *_ in urls]


def _url(url: str, scene) -> str:
    return url.format(r=scene.booked.pk)


@pytest.mark.parametrize(("method", "url", "data", "need"), URLS, ids=_ids(URLS))
def test_carol_gets_404_on_every_physics_reservation_url(scene, method, url, data, need):
    error = _error(_call(api_client(scene.carol), method, _url(url, scene), data), 404, "not_found")
    assert "no such" in error["message"].lower()


@pytest.mark.parametrize(("method", "url", "data", "need"), URLS, ids=_ids(URLS))
def test_anonymous_is_refused_everywhere(scene, method, url, data, need):
    response = _call(api_client(), method, _url(url, scene), data)
    assert _error(response, response.status_code, "not_authenticated")
    assert response.status_code in (401, 403)


@pytest.mark.parametrize(("method", "url", "data", "need"), WRITES, ids=_ids(WRITES))
def test_viewer_bob_cannot_book_change_or_read_the_feed(scene, method, url, data, need):
    _error(_call(api_client(scene.bob), method, _url(url, scene), data), 403, "permission_denied")
    assert Reservation.objects.count() == 1 and not CalendarFeed.objects.exists()


def test_member_dave_cannot_rotate_the_feed_but_reads_it(scene):
    dave = api_client(scene.dave)
    _error(dave.post(PHYSICS + "/calendar-feed/rotate/"), 403, "permission_denied")
    assert dave.get(PHYSICS + "/calendar-feed/").status_code == 200


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("DELETE", RESERVATIONS + "/{r}/"),
        ("PATCH", RESERVATIONS + "/{r}/"),
        ("PUT", RESERVATIONS + "/{r}/"),
        ("GET", RESERVATIONS + "/check/"),
        ("GET", RESERVATIONS + "/{r}/cancel/"),
        ("DELETE", PHYSICS + "/calendar-feed/"),
        ("GET", PHYSICS + "/calendar-feed/rotate/"),
        ("POST", API + "/availability/"),
    ],
)
def test_wrong_method_is_405(scene, method, url):
    _error(_call(api_client(scene.alice), method, _url(url, scene), {}), 405, "method_not_allowed")


# --------------------------------------------------------------------------- booking


def test_member_books_hosts_and_gets_the_host_plan(scene):
    response = api_client(scene.dave).post(RESERVATIONS + "/", body(name="training run"), format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["state"] == "confirmed" and data["count"] == 2 and data["name"] == "training run"
    assert (data["node_pool"], data["cluster"], data["pool"], data["tenant"]) == ("c1/train", "c1", "train", "physics")
    assert data["planned"] == 2 and len(data["plan"]) == 2
    assert {h["host"] for h in data["plan"]} <= {"g1", "g2", "g3", "g4"}
    assert all(h["during"]["start"] == data["prepare_at"] for h in data["plan"])
    assert data["refusal"] is None and data["created_by"] == "dave@physics.example"
    assert response["Location"].endswith(f"/reservations/{data['id']}/")
    assert "token" not in response.content.decode().lower()


def test_a_booking_with_an_end_a_requirement_and_a_policy(scene):
    start = soon(24)
    response = api_client(scene.alice).post(
        RESERVATIONS + "/",
        body(
            starts_at=start.isoformat(),
            duration=None,
            ends_at=(start + timedelta(hours=3)).isoformat(),
            requirement="gpu:nvidia-a100>=1",
            policy={"mode": "spread", "level": "rack"},
            priority="guaranteed",
            count=1,
        ),
        format="json",
    )
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["priority"] == "guaranteed" and data["requirement"] == {
        "accelerators": [{"type": "nvidia-a100", "count": 1}]
    }
    assert data["policy"] == {"mode": "spread", "level": "rack"}


def test_a_recurring_booking_lists_its_series(scene):
    alice = api_client(scene.alice)
    response = alice.post(RESERVATIONS + "/", body(rrule="FREQ=DAILY;COUNT=3", timezone="Europe/Zurich"), format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["rrule"] == "FREQ=DAILY;COUNT=3" and data["timezone"] == "Europe/Zurich"
    listed = alice.get(RESERVATIONS + "/", {"series": data["series"]}).json()
    assert listed["count"] == 3 and [r["state"] for r in listed["results"]] == ["confirmed"] * 3


def test_a_refused_booking_is_409_with_the_refusal_and_the_earliest_start(scene):
    alice = api_client(scene.alice)
    start = soon(24)
    first = alice.post(RESERVATIONS + "/", body(count=3, starts_at=start.isoformat()), format="json").json()
    assert first["state"] == "confirmed"
    response = alice.post(RESERVATIONS + "/", body(count=2, starts_at=start.isoformat()), format="json")
    error = _error(response, 409, "refused")
    refusal, refused_id = error["details"]["refusal"], error["details"]["reservation"]
    assert error["message"] == refusal["message"] and "First possible start" in refusal["message"]
    assert first["id"] in refusal["competing"] and refusal["classes"]
    assert refusal["slice_start"] and refusal["slice_end"]
    assert when(refusal["earliest_start"]) > when(first["ends_at"])
    kept = Reservation.objects.get(pk=refused_id)
    assert kept.state == State.REFUSED and kept.refusal["earliest_start"] == refusal["earliest_start"]
    detail = alice.get(f"{RESERVATIONS}/{refused_id}/").json()
    assert detail["state"] == "refused" and detail["refusal"]["earliest_start"] == refusal["earliest_start"]
    assert detail["plan"] == []


def test_a_booking_for_a_new_pool_creates_the_pool(scene):
    new_pool = {"cluster": "c1", "name": "burst", "quota_class": "gpu-a100", "image": IMAGE, "cleaning": "key_erase"}
    data = body(count=1, new_pool=new_pool)
    del data["node_pool"]
    response = api_client(scene.dave).post(RESERVATIONS + "/", data, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["node_pool"] == "c1/burst"
    created = NodePool.objects.get(name="burst")
    assert created.cleaning == "key_erase" and created.replicas == 0


def test_a_refused_booking_for_a_new_pool_makes_nothing(scene):
    data = body(count=5, new_pool={"cluster": "c1", "name": "burst", "quota_class": "gpu-a100", "image": IMAGE})
    del data["node_pool"]
    error = _error(api_client(scene.alice).post(RESERVATIONS + "/", data, format="json"), 409, "refused")
    assert error["details"]["reservation"] is None and "at most 4 hosts" in error["details"]["refusal"]["message"]
    assert not NodePool.objects.filter(name="burst").exists() and Reservation.objects.count() == 1


NEW = {"cluster": "c1", "name": "burst", "quota_class": "gpu-a100", "image": IMAGE}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"count": 0}, "count"),
        ({"count": "three"}, "count"),
        ({"count": 10_001}, "count"),
        ({"starts_at": "tomorrow"}, "starts_at"),
        ({"starts_at": "2001-01-01T10:00:00+00:00"}, "starts_at"),
        ({"duration": "-2h"}, "duration"),
        ({"duration": "forever"}, "duration"),
        ({"duration": 500}, "ends_at"),
        ({"duration": None}, "ends_at"),
        ({"ends_at": "2001-01-01T10:00:00+00:00", "duration": None}, "ends_at"),
        ({"rrule": "FREQ=SECONDLY", "timezone": "Europe/Zurich"}, "rrule"),
        ({"rrule": "FREQ=DAILY;COUNT=2", "timezone": "Mars/Olympus"}, "rrule"),
        ({"requirement": "gpu:nvidia-a100>=banana"}, "requirement"),
        ({"requirement": 7}, "requirement"),
        ({"policy": {"mode": "scatter"}}, "policy"),
        ({"priority": "urgent"}, "priority"),
        ({"name": "x" * 101}, "name"),
        ({"node_pool": "c1/nope"}, "node_pool"),
        ({"node_pool": "train"}, "node_pool"),
        ({"colour": "blue"}, "colour"),
        ({"new_pool": NEW}, "new_pool"),
    ],
)
def test_bad_input_is_a_400_keyed_by_field_and_writes_nothing(scene, change, field):
    response = api_client(scene.alice).post(RESERVATIONS + "/", {**body(), **change}, format="json")
    error = _error(response, 400)
    assert field in error["details"], error
    assert Reservation.objects.count() == 1


@pytest.mark.parametrize(
    ("new_pool", "field"),
    [
        ({**NEW, "cluster": "nope"}, "cluster"),
        ({**NEW, "image": "windows-95"}, "image"),
        ({**NEW, "quota_class": "quantum"}, "quota_class"),
        ({**NEW, "name": "Not A Label!"}, "name"),
        ({**NEW, "cleaning": "bleach"}, "cleaning"),
    ],
)
def test_a_bad_new_pool_is_a_400_keyed_inside_new_pool(scene, new_pool, field):
    data = body(count=1, new_pool=new_pool)
    del data["node_pool"]
    error = _error(api_client(scene.alice).post(RESERVATIONS + "/", data, format="json"), 400)
    assert field in error["details"]["new_pool"], error
    assert not NodePool.objects.filter(name="burst").exists()


def test_idempotency_key_replays_the_first_booking(scene):
    alice = api_client(scene.alice)
    headers = {"Idempotency-Key": "book-7f3a"}
    data = body()
    first = alice.post(RESERVATIONS + "/", data, format="json", headers=headers)
    assert first.status_code == 201, first.content
    again = alice.post(RESERVATIONS + "/", data, format="json", headers=headers)
    assert again.status_code == 201 and again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert Reservation.objects.count() == 2
    other = alice.post(RESERVATIONS + "/", body(count=1), format="json", headers=headers)
    _error(other, 422, "idempotency_key_reused")


def test_idempotency_key_replays_a_refusal_without_a_second_refused_booking(scene):
    alice = api_client(scene.alice)
    headers = {"Idempotency-Key": "book-too-many"}
    first = alice.post(RESERVATIONS + "/", body(count=5), format="json", headers=headers)
    _error(first, 409, "refused")
    again = alice.post(RESERVATIONS + "/", body(count=5), format="json", headers=headers)
    assert again.status_code == 409 and again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert Reservation.objects.filter(state=State.REFUSED).count() == 1


def test_a_bad_booking_leaves_its_idempotency_key_free(scene):
    alice = api_client(scene.alice)
    headers = {"Idempotency-Key": "book-fixed"}
    _error(alice.post(RESERVATIONS + "/", body(count=0), format="json", headers=headers), 400)
    assert alice.post(RESERVATIONS + "/", body(count=0), format="json", headers=headers).status_code == 400
    assert Reservation.objects.count() == 1


# --------------------------------------------------------------------------- the dry run


def test_check_says_ok_or_why_not_and_writes_nothing(scene):
    dave = api_client(scene.dave)
    before = AuditEntry.objects.count()
    assert dave.post(RESERVATIONS + "/check/", body(), format="json").json() == {"ok": True, "refusal": None}
    data = dave.post(RESERVATIONS + "/check/", body(count=5), format="json").json()
    assert data["ok"] is False and "at most 4 hosts" in data["refusal"]["message"]
    assert Reservation.objects.count() == 1 and AuditEntry.objects.count() == before
    error = _error(dave.post(RESERVATIONS + "/check/", body(starts_at="soon"), format="json"), 400)
    assert "starts_at" in error["details"]


# --------------------------------------------------------------------------- reading


def test_list_filters_by_state_time_pool_and_series(scene):
    alice = api_client(scene.alice)
    other_pool = pool(scene, scene.train.cluster, "infer", "general")
    day1 = alice.post(RESERVATIONS + "/", body(count=1, starts_at=soon(24).isoformat()), format="json").json()
    day3 = alice.post(
        RESERVATIONS + "/",
        # general hosts are all promised to standing guarantees: book within physics' own
        body(node_pool="c1/infer", count=1, starts_at=soon(72).isoformat(), priority="guaranteed"),
        format="json",
    ).json()
    refused = alice.post(RESERVATIONS + "/", body(count=5), format="json").json()["error"]["details"]["reservation"]
    assert other_pool.name == "infer"

    def ids(**params):
        response = alice.get(RESERVATIONS + "/", params)
        assert response.status_code == 200, response.content
        return [r["id"] for r in response.json()["results"]]

    assert ids() == [day1["id"], refused, scene.booked.pk, day3["id"]]  # by start
    assert ids(state="refused") == [refused]
    assert ids(state=["confirmed", "refused"]) == [day1["id"], refused, scene.booked.pk, day3["id"]]
    assert ids(node_pool="c1/infer") == [day3["id"]]
    window = {"from": soon(40).isoformat(), "to": soon(60).isoformat()}
    assert ids(**window) == [scene.booked.pk]
    assert ids(**{"from": soon(60).isoformat()}) == [day3["id"]]
    assert ids(series=999999) == []
    _error(alice.get(RESERVATIONS + "/", {"state": "dreaming"}), 400)


def test_detail_has_the_plan_and_no_secrets(scene):
    CalendarFeed.objects.create(tenant=scene.physics)
    response = api_client(scene.bob).get(f"{RESERVATIONS}/{scene.booked.pk}/")
    data = response.json()
    assert data["state"] == "confirmed" and data["prepare_at"] and data["message"].startswith("Confirmed")
    assert [h["host"] for h in data["plan"]] == list(scene.booked.bookings.values_list("host__name", flat=True))
    assert when(data["plan"][0]["during"]["end"]) > when(data["ends_at"]) and data["plan"][0]["handoff_seconds"] > 0
    token = CalendarFeed.objects.get().token
    assert token not in response.content.decode()


def test_another_tenants_booking_is_404_inside_my_tenant_too(scene):
    theirs = pool(scene, cluster(scene, scene.genomics, "seq"), "cpu", "general")
    booking = reservation_create(
        tenant=scene.genomics, node_pool=theirs, count=1, starts_at=soon(30), duration=2, acting_user=scene.carol
    )
    _error(api_client(scene.alice).get(f"{RESERVATIONS}/{booking.pk}/"), 404, "not_found")
    _error(api_client(scene.olga).get(f"{RESERVATIONS}/{booking.pk}/"), 404, "not_found")
    assert api_client(scene.carol).get(f"{API}/tenants/genomics/reservations/{booking.pk}/").status_code == 200


def test_a_pool_of_another_tenant_cannot_be_booked(scene):
    pool(scene, cluster(scene, scene.genomics, "seq"), "cpu", "general")
    error = _error(api_client(scene.alice).post(RESERVATIONS + "/", body(node_pool="seq/cpu"), format="json"), 400)
    assert "node_pool" in error["details"]


# --------------------------------------------------------------------------- changing


def test_cancel_one_or_the_rest_of_a_series(scene):
    alice = api_client(scene.alice)
    first = alice.post(RESERVATIONS + "/", body(rrule="FREQ=DAILY;COUNT=3", timezone="UTC"), format="json").json()
    response = alice.post(f"{RESERVATIONS}/{first['id']}/cancel/", {"series": True}, format="json")
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["cancelled"] == 3 and data["reservation"]["state"] == "cancelled" and data["reservation"]["plan"] == []
    error = _error(alice.post(f"{RESERVATIONS}/{first['id']}/cancel/", {}, format="json"), 409, "conflict")
    assert "cannot be cancelled" in error["message"]
    single = api_client(scene.dave).post(f"{RESERVATIONS}/{scene.booked.pk}/cancel/", format="json")
    assert single.json()["cancelled"] == 1
    _error(alice.post(f"{RESERVATIONS}/{scene.booked.pk}/cancel/", {"series": "perhaps"}, format="json"), 400)


def test_extend_within_the_window(scene):
    alice = api_client(scene.alice)
    later = (scene.booked.ends_at + timedelta(hours=2)).isoformat()
    error = _error(alice.post(f"{RESERVATIONS}/{scene.booked.pk}/extend/", {"ends_at": later}, format="json"), 400)
    assert "Extensions open" in error["details"]["ends_at"][0]
    settings = FleetSettings.load()
    settings.reservation_extend_window_hours = 100
    settings.save()
    response = alice.post(f"{RESERVATIONS}/{scene.booked.pk}/extend/", {"ends_at": later}, format="json")
    assert response.status_code == 200, response.content
    data = response.json()
    assert when(data["ends_at"]) == scene.booked.ends_at + timedelta(hours=2)
    assert when(data["original_ends_at"]) == scene.booked.ends_at
    assert when(data["plan"][0]["during"]["end"]) > when(data["ends_at"])
    _error(alice.post(f"{RESERVATIONS}/{scene.booked.pk}/extend/", {"ends_at": "later"}, format="json"), 400)
    _error(alice.post(f"{RESERVATIONS}/{scene.booked.pk}/extend/", {}, format="json"), 400)


def test_release_only_when_preparing_or_active(scene):
    alice = api_client(scene.alice)
    error = _error(alice.post(f"{RESERVATIONS}/{scene.booked.pk}/release/", {}, format="json"), 409, "conflict")
    assert "preparing or active" in error["message"]
    # As the lifecycle leaves it once the start has passed and the hosts are ready.
    Reservation.objects.filter(pk=scene.booked.pk).update(starts_at=timezone.now() - timedelta(hours=1))
    scene.booked.refresh_from_db()
    assert reservation_transition(scene.booked, State.ACTIVE, "Its hosts are ready.")
    response = alice.post(f"{RESERVATIONS}/{scene.booked.pk}/release/", {}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "completed"


# --------------------------------------------------------------------------- availability


def test_availability_gives_the_earliest_windows_for_the_inferred_class(scene):
    params = {"requirement": "gpu:nvidia-a100>=1", "count": 3, "duration": 6, "tenant": "physics"}
    response = api_client(scene.bob).get(f"{API}/availability/", params)
    assert response.status_code == 200, response.content
    data = response.json()
    assert (data["tenant"], data["quota_class"], data["count"], data["duration_hours"]) == (
        "physics",
        "gpu-a100",
        3,
        6.0,
    )
    windows = data["windows"]
    assert len(windows) == 3
    assert all(when(a["end"]) <= when(b["start"]) for a, b in itertools.pairwise(windows))
    # 4 hosts: 1 booked two days ahead and physics' standing guarantee of 1 leave 2 for a
    # booking overlapping it, so 3 hosts asked from just before it start after it.
    around = api_client(scene.alice).get(f"{API}/availability/", {**params, "after": soon(44).isoformat()})
    first = around.json()["windows"][0]
    assert when(first["start"]) >= scene.booked.occupancy.upper


def test_availability_names_the_class_when_it_cannot_be_inferred(scene):
    alice = api_client(scene.alice)
    params = {"requirement": "cores>=1", "count": 1, "duration": "PT2H"}
    error = _error(alice.get(f"{API}/availability/", params), 400)
    assert "quota_class" in error["details"]
    # (every general host is promised to a standing guarantee: ask within physics' own)
    data = alice.get(f"{API}/availability/", {**params, "quota_class": "general", "priority": "guaranteed"}).json()
    assert data["quota_class"] == "general" and data["tenant"] == "physics"  # alice's one tenant
    assert len(data["windows"]) == 3 and data["duration_hours"] == 2.0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"count": 0}, "count"),
        ({"count": "lots"}, "count"),
        ({"duration": "forever"}, "duration"),
        ({"duration": ""}, "duration"),
        ({"requirement": "gpu:nvidia-a100>=banana"}, "requirement"),
        ({"quota_class": "quantum"}, "quota_class"),
        ({"after": "someday"}, "after"),
    ],
)
def test_availability_bad_input_is_a_400_per_field(scene, params, field):
    base = {"requirement": "gpu:nvidia-a100>=1", "count": 1, "duration": 6, "tenant": "physics"}
    error = _error(api_client(scene.alice).get(f"{API}/availability/", {**base, **params}), 400)
    assert field in error["details"], error


def test_availability_needs_a_tenant_the_requester_sees(scene):
    params = {"requirement": "gpu:nvidia-a100>=1", "count": 1, "duration": 6}
    _error(api_client(scene.olga).get(f"{API}/availability/", params), 400)  # sees both tenants
    _error(api_client(scene.carol).get(f"{API}/availability/", {**params, "tenant": "physics"}), 404)
    response = api_client().get(f"{API}/availability/", params)
    assert response.status_code in (401, 403)


def test_availability_within_the_tenants_quota(scene):
    # genomics has no gpu-a100 quota: nothing fits, however long one waits.
    params = {"requirement": "gpu:nvidia-a100>=1", "count": 1, "duration": 6, "tenant": "genomics"}
    assert api_client(scene.carol).get(f"{API}/availability/", params).json()["windows"] == []


# --------------------------------------------------------------------------- the calendar feed's address


def test_owner_reads_and_rotates_the_feed_address(scene, client):
    alice = api_client(scene.alice)
    response = alice.get(PHYSICS + "/calendar-feed/")
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    data = response.json()
    token = CalendarFeed.objects.get(tenant=scene.physics).token
    assert data["url"] == f"http://testserver/calendar/{token}.ics"
    assert data["webcal_url"] == f"webcal://testserver/calendar/{token}.ics" and data["rotated_at"] is None
    assert alice.get(PHYSICS + "/calendar-feed/").json()["url"] == data["url"]  # made once
    assert client.get(data["url"]).status_code == 200
    rotated = alice.post(PHYSICS + "/calendar-feed/rotate/").json()
    assert rotated["url"] != data["url"] and rotated["rotated_at"]
    assert client.get(data["url"]).status_code == 404 and client.get(rotated["url"]).status_code == 200
    entries = AuditEntry.objects.filter(action__startswith="calendar_feed.")
    assert [e.action for e in entries.order_by("pk")] == ["calendar_feed.create", "calendar_feed.rotate"]
    new_token = CalendarFeed.objects.get().token
    for entry in entries:
        text = f"{entry.target_repr} {entry.before} {entry.after}"
        assert token not in text and new_token not in text


# --------------------------------------------------------------------------- query counts


@pytest.fixture
def busy(scene):
    """physics with 12 bookings of 1 host (planned), 3 of them a series (an N+1 would show)."""
    for hours in range(24, 24 + 9 * 8, 8):
        reservation_create(
            tenant=scene.physics, node_pool=scene.train, count=1, starts_at=soon(hours), duration=2, acting_user=None
        )
    reservation_create(
        tenant=scene.physics,
        node_pool=scene.train,
        count=1,
        starts_at=soon(200),
        duration=2,
        rrule="FREQ=DAILY;COUNT=2",
        tz_name="UTC",
        acting_user=scene.alice,
    )
    assert Reservation.objects.filter(state=State.CONFIRMED).count() == 12
    return scene


def test_reservation_list_queries(busy, django_assert_max_num_queries):
    client = api_client(busy.alice)
    # tenant, role, count, page (pool, cluster, series, creator joined; planned annotated)
    with django_assert_max_num_queries(4):
        data = client.get(RESERVATIONS + "/").json()
    assert data["count"] == 12 and all(r["planned"] == 1 for r in data["results"])
    with django_assert_max_num_queries(4):
        assert client.get(RESERVATIONS + "/", {"state": "confirmed", "node_pool": "c1/train"}).json()["count"] == 12


def test_reservation_detail_queries(busy, django_assert_max_num_queries):
    client = api_client(busy.alice)
    # tenant, role, the booking (joined), its plan (hosts joined)
    with django_assert_max_num_queries(4):
        assert len(client.get(f"{RESERVATIONS}/{busy.booked.pk}/").json()["plan"]) == 1


# --------------------------------------------------------------------------- the schema


def test_schema_names_every_reservation_operation(tmp_path):
    result = run_manage("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    assert result.returncode == 0, result.stderr
    schema = yaml.safe_load((tmp_path / "schema.yaml").read_text())
    operations = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    assert {
        "reservations_list",
        "reservation_create",
        "reservation_retrieve",
        "reservation_check",
        "reservation_cancel",
        "reservation_extend",
        "reservation_release",
        "calendar_feed_retrieve",
        "calendar_feed_rotate",
        "availability",
    } <= operations
    create = schema["paths"]["/api/v1/tenants/{slug}/reservations/"]["post"]
    assert "Idempotency-Key" in {p["name"] for p in create["parameters"]}
    assert {"201", "400", "409", "422"} <= set(create["responses"])
    listing = schema["paths"]["/api/v1/tenants/{slug}/reservations/"]["get"]
    assert {"state", "from", "to", "node_pool", "series", "limit", "offset"} <= {
        p["name"] for p in listing["parameters"]
    }


def test_reservation_responses_match_the_schema(scene, alice_client):
    import jsonschema

    schema = yaml.safe_load(alice_client.get("/api/v1/schema/").content)
    components = schema["components"]["schemas"]

    def check(response, component, status=200):
        assert response.status_code == status, response.content
        jsonschema.validate(response.json(), _resolve(components[component], components))

    alice = api_client(scene.alice)
    check(alice.post(RESERVATIONS + "/", body(), format="json"), "ReservationDetail", 201)
    check(alice.post(RESERVATIONS + "/", body(count=5), format="json"), "RefusedError", 409)
    check(alice.get(RESERVATIONS + "/"), "PaginatedReservationList")
    check(alice.get(f"{RESERVATIONS}/{scene.booked.pk}/"), "ReservationDetail")
    check(alice.post(RESERVATIONS + "/check/", body(), format="json"), "CheckResult")
    check(alice.post(RESERVATIONS + "/check/", body(count=5), format="json"), "CheckResult")
    check(alice.post(RESERVATIONS + "/", body(count=0), format="json"), "Error", 400)
    check(alice.get(PHYSICS + "/calendar-feed/"), "CalendarFeed")
    check(alice.post(PHYSICS + "/calendar-feed/rotate/"), "CalendarFeed")
    params = {"requirement": "gpu:nvidia-a100>=1", "count": 1, "duration": 6}
    check(alice.get(f"{API}/availability/", params), "Availability")
    check(alice.post(f"{RESERVATIONS}/{scene.booked.pk}/cancel/", {}, format="json"), "ReservationCancelResult")
