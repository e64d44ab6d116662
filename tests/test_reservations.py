"""Reservations: booking, admission control, the host plan, extension, cancellation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.backends.postgresql.psycopg_any import DateTimeTZRange
from django.utils import timezone

from hosts.models import FleetSettings
from reservations.models import HostBooking, Reservation
from reservations.services import (
    reservation_cancel,
    reservation_check,
    reservation_create,
    reservation_extend,
    reservation_release,
)
from tenants.models import AuditEntry
from tests.test_quota import a100s, cluster, fleet, generals, pool

pytestmark = pytest.mark.django_db

State = Reservation.State


def soon(hours: float = 24) -> timezone.datetime:
    """A round hour far enough ahead for any lead."""
    base = timezone.now().replace(minute=0, second=0, microsecond=0)
    return base + timedelta(hours=hours)


@pytest.fixture
def gpu_pool(world):
    fleet(a100s(4) + generals(4))
    return pool(world, cluster(world), "train", "gpu-a100")


def book(world, on, count, start, hours=6, **extra):
    extra.setdefault("acting_user", world.alice)
    return reservation_create(
        tenant=on.cluster.tenant, node_pool=on, count=count, starts_at=start, duration=hours, **extra
    )


def test_a_booking_that_fits_is_confirmed_and_planned_onto_hosts(world, gpu_pool):
    r = book(world, gpu_pool, 3, soon())
    assert r.state == State.CONFIRMED, r.message
    assert r.bookings.count() == 3
    assert r.prepare_at < r.starts_at and r.occupancy.upper > r.ends_at
    actions = list(
        AuditEntry.objects.filter(target_type="reservation", target_id=str(r.pk))
        .order_by("pk")
        .values_list("action", flat=True)
    )
    assert actions == ["reservation.request", "reservation.confirmed"]


def test_a_booking_beyond_the_maximum_is_refused_with_the_numbers(world, gpu_pool):
    r = book(world, gpu_pool, 5, soon())  # physics may hold at most 4 gpu-a100
    assert r.state == State.REFUSED
    assert "at most 4 hosts of gpu-a100" in r.message
    assert r.bookings.count() == 0 and r.occupancy is None


def test_the_fleet_refusal_names_the_competing_booking_and_the_first_possible_start(world, gpu_pool):
    start = soon()
    first = book(world, gpu_pool, 3, start, name="training run")
    assert first.state == State.CONFIRMED
    # 4 A100 hosts, 3 booked, physics' own standing guarantee of 1 gpu-a100 keeps one back:
    # genomics has no gpu quota, so physics books again — its maximum (4) would allow 1 more,
    # but the fleet holds 3 for the first booking and 1 for the guarantee.
    second = book(world, gpu_pool, 1, start + timedelta(hours=2), name="second")
    assert second.state == State.REFUSED, second.message
    assert "physics" in second.message or "at most" in second.message


def test_the_exclusion_constraint_makes_double_booking_impossible(world, gpu_pool):
    r = book(world, gpu_pool, 1, soon())
    host_id = r.bookings.get().host_id
    other = book(world, gpu_pool, 1, soon(48))
    with pytest.raises(IntegrityError), transaction.atomic():
        HostBooking.objects.create(reservation=other, host_id=host_id, during=r.occupancy, handoff_seconds=60)


def test_bad_input_is_a_field_error_and_writes_nothing(world, gpu_pool):
    for bad, field in [
        ({"count": 0}, "count"),
        ({"count": "three"}, "count"),
        ({"starts_at": "tomorrow"}, "starts_at"),
        ({"duration": "-2h"}, "duration"),
        ({"rrule": "FREQ=SECONDLY", "tz_name": "Europe/Zurich"}, "rrule"),
        ({"rrule": "FREQ=DAILY", "tz_name": "Mars/Olympus"}, "rrule"),
        ({"requirement": "gpu:nvidia-a100>=banana"}, "requirement"),
    ]:
        fields = {"count": 1, "starts_at": soon(), "duration": 6, **bad}
        with pytest.raises(ValidationError) as caught:
            reservation_create(tenant=world.physics, node_pool=gpu_pool, acting_user=world.alice, **fields)
        assert field in caught.value.message_dict, (bad, caught.value.message_dict)
    assert not Reservation.objects.exists()


def test_a_recurring_booking_is_admitted_as_a_whole(world, gpu_pool):
    r = book(world, gpu_pool, 2, soon(), hours=8, rrule="FREQ=DAILY;COUNT=5", tz_name="Europe/Zurich")
    series = Reservation.objects.filter(series=r.series).order_by("starts_at")
    assert [x.state for x in series] == [State.CONFIRMED] * 5
    assert HostBooking.objects.filter(reservation__series=r.series).count() == 10


def test_cancel_drops_the_plan_and_frees_the_hosts(world, gpu_pool):
    r = book(world, gpu_pool, 3, soon())
    assert reservation_cancel(reservation=r, acting_user=world.alice) == 1
    r.refresh_from_db()
    assert r.state == State.CANCELLED and not r.bookings.exists()
    assert book(world, gpu_pool, 3, soon()).state == State.CONFIRMED


def test_extension_only_within_the_window_before_the_end(world, gpu_pool):
    r = book(world, gpu_pool, 2, soon(72))
    with pytest.raises(ValidationError, match="Extensions open 48 hours before the end"):
        reservation_extend(reservation=r, ends_at=r.ends_at + timedelta(hours=2), acting_user=world.alice)
    settings = FleetSettings.load()
    settings.reservation_extend_window_hours = 100
    settings.save()
    extended = reservation_extend(reservation=r, ends_at=r.ends_at + timedelta(hours=2), acting_user=world.alice)
    assert extended.ends_at == r.ends_at + timedelta(hours=2)
    assert all(b.during.upper > extended.ends_at for b in extended.bookings.all())
    with pytest.raises(ValidationError, match="at most 168 hours"):
        reservation_extend(reservation=r, ends_at=r.starts_at + timedelta(days=8), acting_user=world.alice)


def test_extension_refused_when_the_same_hosts_are_booked_right_after(world, gpu_pool):
    settings = FleetSettings.load()
    settings.reservation_extend_window_hours = 1000
    settings.save()
    start = soon()
    first = book(world, gpu_pool, 3, start, hours=4)
    after = book(world, gpu_pool, 3, first.occupancy.upper + timedelta(hours=1), hours=4)
    assert after.state == State.CONFIRMED, after.message
    with pytest.raises(ValidationError, match="Cannot extend"):
        reservation_extend(reservation=first, ends_at=first.ends_at + timedelta(hours=3), acting_user=world.alice)


def test_release_early_only_when_active(world, gpu_pool):
    r = book(world, gpu_pool, 1, soon())
    with pytest.raises(ValidationError, match="preparing or active"):
        reservation_release(reservation=r, acting_user=world.alice)


def test_dry_run_writes_nothing(world, gpu_pool):
    verdict = reservation_check(tenant=world.physics, node_pool=gpu_pool, count=2, starts_at=soon(), duration=6)
    assert verdict.ok and not Reservation.objects.exists()
    verdict = reservation_check(tenant=world.physics, node_pool=gpu_pool, count=9, starts_at=soon(), duration=6)
    assert not verdict.ok


def test_occupancy_range_field_round_trips(world, gpu_pool):
    r = book(world, gpu_pool, 1, soon())
    assert isinstance(r.occupancy, tuple | DateTimeTZRange)


# =============================================================================== admin


def test_olga_sees_reservations_in_the_admin_and_can_cancel_them(world, gpu_pool, client):
    from django.urls import reverse

    from reservations.feeds import calendar_feed_ensure

    r = book(world, gpu_pool, 2, soon(), rrule="FREQ=DAILY;COUNT=2", tz_name="Europe/Zurich")
    feed = calendar_feed_ensure(world.physics)
    client.force_login(world.olga)
    objects = {
        "reservation": r,
        "reservationseries": r.series,
        "hostbooking": r.bookings.first(),
        "calendarfeed": feed,
    }
    for model, obj in objects.items():
        assert client.get(reverse(f"admin:reservations_{model}_changelist")).status_code == 200, model
        change = client.get(reverse(f"admin:reservations_{model}_change", args=[obj.pk]))
        assert change.status_code == 200, model
        assert feed.token not in change.content.decode(), model
        assert client.get(reverse(f"admin:reservations_{model}_add")).status_code == 403, model
    response = client.post(
        reverse("admin:reservations_reservation_changelist"),
        {"action": "cancel_reservations", "_selected_action": [r.pk]},
        follow=True,
    )
    assert response.status_code == 200
    r.refresh_from_db()
    assert r.state == State.CANCELLED and "operator olga@teapot.example" in r.message


# =============================================================================== demo


def test_demo_bookings_wait_for_the_fleet_then_are_made_once(db):
    from reservations.demo import seed_demo_reservations
    from tenants.demo import seed_demo_tenants
    from tests.inventory import make_fleet

    seed_demo_tenants()
    assert seed_demo_reservations() == []  # no inspected hosts yet: nothing could be admitted
    make_fleet(160)
    made = seed_demo_reservations()
    assert len(made) == 4 and all(line.endswith("confirmed") for line in made), made
    states = dict(Reservation.objects.order_by("tenant__slug", "starts_at").values_list("tenant__slug", "state"))
    assert set(states) == {"ml-research", "physics", "genomics", "finance"}
    assert seed_demo_reservations() == []  # idempotent
    nightly = Reservation.objects.filter(tenant__slug="ml-research").order_by("starts_at")
    assert nightly.count() > 10 and nightly[0].series.timezone == "Europe/Zurich"
