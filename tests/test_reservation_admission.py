"""Reservation admission by property, refusals in words, recurrences across DST, concurrency.

* The pure core (:func:`reservations.admission.slice_flow`, :func:`cut_slices`) against brute
  force: every way of giving distinct hosts to the demands, with the per-bucket caps.
* :func:`reservations.services.reservation_create` against a brute force over the real rows:
  at every instant, can the fleet's matching hosts serve every confirmed booking, the standing
  guarantees and the new booking at once (and does the tenant stay within its guarantee)?
* Refusals: the slice, the classes, the competing bookings, and an earliest start that works
  while no earlier one does.
* Recurrences in wall-clock time across the clock changes of Europe/Zurich and America/New_York.
* Concurrency from real processes: eight bookings for the last free hosts confirm exactly one,
  and the exclusion constraint alone refuses a double booking when the lock is bypassed.

Fleets: tests.test_quota's (a ``general`` host serves general, a ``highmem`` host general and
highmem, a ``gpu-a100`` host gpu-a100 only); people and quotas: tests.tenancy.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from reservations.admission import Demand, Interval, cut_slices, slice_flow
from reservations.models import HostBooking, Reservation, ReservationSeries
from reservations.recurrence import MAX_OCCURRENCES, RecurrenceError, expand, normalise
from reservations.services import booking_validate, reservation_check, reservation_create
from tests.processes import BASE_DIR, child_env, database_url
from tests.tenancy import quota
from tests.test_quota import a100s, cluster, fleet, generals, highmems, pool
from tests.test_reservations import soon

State = Reservation.State
ZURICH, NEW_YORK = ZoneInfo("Europe/Zurich"), ZoneInfo("America/New_York")


# =============================================================================== the pure core


def brute_force(demands: list[Demand], buckets: dict[int, tuple[str, ...]]) -> bool:
    """Try every way of giving each demand ``count`` distinct hosts it can use, within its cap."""

    def usable(demand: Demand, host: int) -> bool:
        return demand.cap is None or len(buckets.get(host, ())) > demand.level

    def give(index: int, used: frozenset[int]) -> bool:
        if index == len(demands):
            return True
        demand = demands[index]
        free = sorted(h for h in demand.hosts if h not in used and usable(demand, h))
        for chosen in itertools.combinations(free, demand.count):
            if demand.cap is not None:
                per_bucket = Counter(buckets[h][: demand.level + 1] for h in chosen)
                if max(per_bucket.values(), default=0) > demand.cap:
                    continue
            if give(index + 1, used | frozenset(chosen)):
                return True
        return False

    return give(0, frozenset())


HOSTS = range(6)
# Two levels (room > rack); a host may be placed only in a room, or nowhere.
paths = st.sampled_from([(), ("a",), ("a", "r1"), ("a", "r2"), ("b", "r1"), ("b", "r3")])


@st.composite
def demands(draw, keys=range(4)):
    out = []
    for key in draw(st.lists(st.sampled_from(list(keys)), unique=True, max_size=4)):
        capped = draw(st.booleans())
        out.append(
            Demand(
                key=key,
                count=draw(st.integers(0, 3)),
                hosts=frozenset(draw(st.sets(st.sampled_from(list(HOSTS)), max_size=6))),
                level=draw(st.integers(0, 1)) if capped else None,
                cap=draw(st.integers(1, 2)) if capped else None,
            )
        )
    return out


@settings(max_examples=400, deadline=None)
@given(demands=demands(), places=st.lists(paths, min_size=6, max_size=6))
def test_slice_flow_agrees_with_brute_force(demands, places):
    buckets = {host: places[host] for host in HOSTS}
    verdict = slice_flow(demands, buckets)
    assert verdict.ok == brute_force(demands, buckets)
    assert verdict.asked == sum(d.count for d in demands)
    assert verdict.ok == (verdict.carried == verdict.asked)
    if verdict.ok:
        return
    assert verdict.short, "a refusal names the demands that over-ask"
    if all(d.cap is None for d in demands):
        # Without caps the cut is exact: the short demands ask for more than all the hosts able
        # to serve any of them, by exactly the shortfall.
        short = [d for d in demands if d.key in verdict.short]
        able = set().union(*(d.hosts for d in short))
        assert verdict.short_hosts == len(able)
        assert sum(d.count for d in short) - verdict.short_hosts == verdict.asked - verdict.carried


def test_a_host_not_placed_as_deep_as_the_cap_serves_no_capped_demand():
    spread = Demand(key="x", count=2, hosts=frozenset({1, 2, 3}), level=1, cap=1)
    assert not slice_flow([spread], {1: ("a", "r1"), 2: ("a", "r1"), 3: ("a",)}).ok
    assert slice_flow([spread], {1: ("a", "r1"), 2: ("a", "r2"), 3: ("a",)}).ok
    # Same rack name in another room is another rack.
    assert slice_flow([spread], {1: ("a", "r1"), 2: ("b", "r1"), 3: ()}).ok


BASE = datetime(2026, 6, 1, tzinfo=UTC)
HORIZON = 12


def hour(n: int) -> datetime:
    return BASE + timedelta(hours=n)


@st.composite
def calendars(draw):
    """Up to 5 bookings, each a demand over [start, end) in whole hours of a 12-hour horizon."""
    booked = []
    for key in range(draw(st.integers(0, 5))):
        start = draw(st.integers(-2, HORIZON - 1))
        end = draw(st.integers(start + 1, HORIZON + 2))
        capped = draw(st.booleans())
        demand = Demand(
            key=key,
            count=draw(st.integers(1, 3)),
            hosts=frozenset(draw(st.sets(st.sampled_from(list(HOSTS)), min_size=1))),
            level=1 if capped else None,
            cap=1 if capped else None,
        )
        booked.append((Interval(key, hour(start), hour(end)), demand))
    return booked


@settings(max_examples=200, deadline=None)
@given(booked=calendars(), places=st.lists(paths, min_size=6, max_size=6), window=st.tuples(st.integers(0, 6)))
def test_slices_and_their_flows_agree_with_brute_force_at_every_instant(booked, places, window):
    buckets = {host: places[host] for host in HOSTS}
    lo, hi = hour(window[0]), hour(window[0] + 6)
    by_key = {interval.key: demand for interval, demand in booked}
    slices = cut_slices((lo, hi), [interval for interval, _ in booked])
    # The slices tile the window, in order.
    assert slices[0][0] == lo and slices[-1][1] == hi
    assert all(b == c for (_, b, _), (c, _, _) in itertools.pairwise(slices))
    for a, b, active in slices:
        verdict = slice_flow([by_key[k] for k in active], buckets)
        at = a
        while at < b:  # every whole hour inside the slice
            covering = {i.key for i, _ in booked if i.start <= at < i.end}
            assert active == covering, at
            assert verdict.ok == brute_force([by_key[k] for k in covering], buckets), at
            at += timedelta(hours=1)


def test_cut_slices_ignores_intervals_outside_the_window_and_clips_the_rest():
    inside = Interval("a", hour(1), hour(3))
    across = Interval("b", hour(-5), hour(2))
    before = Interval("c", hour(-5), hour(0))  # ends where the window starts: not in it
    after = Interval("d", hour(4), hour(9))  # starts where it ends
    slices = cut_slices((hour(0), hour(4)), [inside, across, before, after])
    assert slices == [
        (hour(0), hour(1), frozenset({"b"})),
        (hour(1), hour(2), frozenset({"a", "b"})),
        (hour(2), hour(3), frozenset({"a"})),
        (hour(3), hour(4), frozenset()),
    ]


# =============================================================================== against the rows

# Which quota classes a host of each lab profile serves (tests.tenancy's class requirements).
SERVES = {"general": {"general"}, "highmem": {"general", "highmem"}, "gpu-a100": {"gpu-a100"}}
SMALL_FLEET = generals(3) + highmems(1) + a100s(2)
# (tenant, class) of the four pools the bookings go to.
POOLS = (("physics", "general"), ("physics", "gpu-a100"), ("genomics", "general"), ("genomics", "highmem"))


def world_pools(world) -> list:
    """The fleet and one pool per entry of POOLS, made once (hypothesis reuses the test's world)."""
    if not getattr(world, "pools", None):
        fleet(SMALL_FLEET)
        tenants = {"physics": world.physics, "genomics": world.genomics}
        clusters = {slug: cluster(world, tenant) for slug, tenant in tenants.items()}
        world.pools = [pool(world, clusters[slug], f"{slug[:3]}-{klass}", klass) for slug, klass in POOLS]
    return world.pools


def shortfall(needs: list[tuple[int, str]], hosts: list[set[str]]) -> int:
    """Brute force, by Hall's deficiency theorem rather than a flow: the hosts the needs (count,
    the class it asks for) cannot get = the most any group of needs asks beyond the hosts able to
    serve one of them."""
    worst = 0
    for size in range(1, len(needs) + 1):
        for group in itertools.combinations(needs, size):
            classes = {klass for _, klass in group}
            able = sum(1 for serves in hosts if serves & classes)
            worst = max(worst, sum(n for n, _ in group) - able)
    return worst


def brute_admits(new: dict, held: list[dict], guarantees: dict, maximum: int, hosts: list[set[str]]) -> bool:
    """Whether ``new`` may join the confirmed ``held`` bookings: tenant limits at every instant
    of its occupancy, then the fleet at every instant of it: the fleet's shortfall (standing
    guarantees: what each tenant is guaranteed of a class, less its guaranteed bookings of it
    then) must not grow with ``new`` — zero when the fleet keeps its promises."""
    everyone = [*held, new]
    points = sorted({b[edge] for b in everyone for edge in ("lo", "hi")})
    for at in points:
        active = [b for b in everyone if b["lo"] <= at < b["hi"]]
        if new not in active:
            continue
        mine = [b for b in active if b is not new and (b["tenant"], b["class"]) == (new["tenant"], new["class"])]
        if new["priority"] == "guaranteed":
            booked = sum(b["count"] for b in mine if b["priority"] == "guaranteed")
            if booked + new["count"] > guarantees[(new["tenant"], new["class"])]:
                return False
        if sum(b["count"] for b in mine) + new["count"] > maximum:
            return False
    if new["priority"] == "preemptible":
        return True  # promised nothing: only the tenant's limits apply

    def needs(active: list[dict]) -> list[tuple[int, str]]:
        out = [(b["count"], b["class"]) for b in active]
        for (tenant, klass), g in guarantees.items():
            taken = sum(
                b["count"] for b in active if (b["tenant"], b["class"], b["priority"]) == (tenant, klass, "guaranteed")
            )
            out.append((max(0, g - taken), klass))
        return [n for n in out if n[0] > 0]

    for at in points:
        active = [b for b in everyone if b["lo"] <= at < b["hi"] and b["priority"] != "preemptible"]
        if new not in active:
            continue
        others = [b for b in active if b is not new]
        before = shortfall(needs(others), hosts)
        if shortfall(needs(active), hosts) > before:
            return False
        if before:
            event("beside a shortfall it does not deepen")
    return True


bookings = st.lists(
    st.tuples(
        st.integers(0, len(POOLS) - 1),  # pool
        st.integers(1, 3),  # count
        st.integers(0, 8),  # start, hours from the first
        st.integers(1, 6),  # length, hours
        st.sampled_from(["on_demand", "on_demand", "guaranteed", "preemptible"]),
    ),
    min_size=1,
    max_size=5,
)


# A guarantee of 3 may exceed what can serve it (2 A100s; 4 hosts for two general guarantees):
# the fleet is then already short of its promises, and only what deepens the shortfall is refused.
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(asks=bookings, guaranteed=st.lists(st.sampled_from([0, 1, 1, 3]), min_size=len(POOLS), max_size=len(POOLS)))
def test_reservation_create_confirms_exactly_what_brute_force_finds_feasible(world, asks, guaranteed):
    pools = world_pools(world)
    HostBooking.objects.all().delete()
    Reservation.objects.all().delete()
    maximum = 20  # the maximum is never what refuses here (5 bookings × 3 hosts at most)
    guarantees = {}
    for (slug, klass), g in zip(POOLS, guaranteed, strict=True):
        tenant = world.physics if slug == "physics" else world.genomics
        quota(tenant, world.classes[klass], g, maximum)
        guarantees[(slug, klass)] = g
    hosts = [SERVES[profile] for _, profile in SMALL_FLEET]
    first = soon(30)
    held: list[dict] = []
    for index, count, start, length, priority in asks:
        on = pools[index]
        fields = {
            "tenant": on.cluster.tenant,
            "node_pool": on,
            "count": count,
            "starts_at": first + timedelta(hours=start),
            "duration": length,
            "priority": priority,
        }
        lo, hi = booking_validate(**fields).ask.occupancies()[0]
        new = {"tenant": POOLS[index][0], "class": POOLS[index][1], "count": count, "priority": priority}
        new.update(lo=lo, hi=hi)
        expected = brute_admits(new, held, guarantees, maximum, hosts)
        r = reservation_create(acting_user=world.alice, **fields)
        assert r.state == (State.CONFIRMED if expected else State.REFUSED), (new, held, r.message)
        event(f"{priority} {r.state}")
        if r.state == State.CONFIRMED:
            assert (r.occupancy.lower, r.occupancy.upper) == (lo, hi)
            held.append(new)
    assert overlapping_host_bookings() == []


def overlapping_host_bookings() -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT a.id, b.id FROM reservations_hostbooking a JOIN reservations_hostbooking b "
            "ON a.host_id = b.host_id AND a.id < b.id AND a.during && b.during"
        )
        return cursor.fetchall()


# =============================================================================== refusals


@pytest.fixture
def gpus(world):
    """4 A100 hosts; physics is guaranteed 1 of them (a standing promise), genomics may book 4."""
    fleet(a100s(4) + generals(4))
    quota(world.genomics, world.classes["gpu-a100"], 0, 4)
    physics = pool(world, cluster(world), "train", "gpu-a100")
    genomics = pool(world, cluster(world, world.genomics), "infer", "gpu-a100")
    return physics, genomics


def create(world, on, count, start, hours=4, **extra):
    actor = world.alice if on.cluster.tenant == world.physics else world.carol
    return reservation_create(
        acting_user=actor, tenant=on.cluster.tenant, node_pool=on, count=count, starts_at=start, duration=hours, **extra
    )


def test_the_refusal_names_the_failing_slice_its_classes_and_the_competing_booking(world, gpus):
    physics, genomics = gpus
    start = soon(30)
    early = create(world, physics, 1, start, hours=3, name="warm-up")
    late = create(world, physics, 2, start + timedelta(hours=5), hours=4, name="training run")
    assert early.state == late.state == State.CONFIRMED, (early.message, late.message)
    # Over [1 h, 7 h): with the warm-up 1 + 2 + physics' standing 1 = 4 fit; with the training
    # run 2 + 2 + 1 = 5 do not. The first slice that fails is the training run's.
    r = create(world, genomics, 2, start + timedelta(hours=1), hours=6)
    assert r.state == State.REFUSED
    refusal = r.refusal
    assert refusal["competing"] == [late.pk]
    assert refusal["slice_start"] == late.occupancy.lower.isoformat()
    ask = booking_validate(
        tenant=world.genomics, node_pool=genomics, count=2, starts_at=start + timedelta(hours=1), duration=6
    ).ask
    assert refusal["slice_end"] == ask.occupancies()[0][1].isoformat()
    assert "standing guarantees of gpu-a100" in refusal["classes"]
    assert "does not fit from" in r.message and "short by 1 host" in r.message
    assert "physics: training run" in r.message and "warm-up" not in r.message


def test_the_earliest_start_offered_works_and_no_earlier_start_does(world, gpus):
    physics, genomics = gpus
    start = soon(30)
    first = create(world, physics, 1, start, hours=3, name="warm-up")
    second = create(world, physics, 2, start + timedelta(hours=5), hours=4, name="training run")
    assert first.state == second.state == State.CONFIRMED
    asked = start + timedelta(hours=1)
    r = create(world, genomics, 2, asked, hours=6)
    assert r.state == State.REFUSED
    earliest = datetime.fromisoformat(r.refusal["earliest_start"])
    assert "First possible start" in r.message
    # Feasibility changes only where a holding occupancy ends (plus the lead): every such
    # candidate before the offer, the asked start and a sweep every 20 minutes are refused.
    lead = booking_validate(tenant=world.genomics, node_pool=genomics, count=2, starts_at=asked, duration=6).ask.lead
    candidates = {asked, earliest - timedelta(minutes=1)}
    candidates |= {b.occupancy.upper + lead for b in (first, second) if asked <= b.occupancy.upper + lead < earliest}
    at = asked
    while at < earliest:
        candidates.add(at)
        at += timedelta(minutes=20)
    for candidate in sorted(candidates):
        verdict = reservation_check(tenant=world.genomics, node_pool=genomics, count=2, starts_at=candidate, duration=6)
        assert not verdict.ok, candidate
    assert earliest == second.occupancy.upper + lead
    booked = create(world, genomics, 2, earliest, hours=6)
    assert booked.state == State.CONFIRMED, booked.message


def test_a_guaranteed_booking_beyond_the_guarantee_is_refused_with_its_own_bookings_named(world, gpus):
    physics, _ = gpus
    start = soon(30)
    first = create(world, physics, 1, start, priority="guaranteed", name="inside the guarantee")
    assert first.state == State.CONFIRMED, first.message
    r = create(world, physics, 1, start + timedelta(hours=2), priority="guaranteed")
    assert r.state == State.REFUSED
    assert "physics is guaranteed 1 host of gpu-a100; 1 already booked as guaranteed then" in r.message
    assert r.refusal["competing"] == [first.pk] and r.refusal["classes"] == ["gpu-a100"]
    # On demand it fits: the guaranteed booking took physics' standing promise, so 3 are free.
    assert create(world, physics, 3, start + timedelta(hours=2)).state == State.CONFIRMED


def test_a_preemptible_booking_is_never_refused_by_the_fleet_and_makes_nobody_wait(world, gpus):
    physics, genomics = gpus
    start = soon(30)
    spot = create(world, genomics, 4, start, priority="preemptible")
    assert spot.state == State.CONFIRMED
    assert create(world, physics, 3, start).state == State.CONFIRMED


def test_a_series_refusal_names_the_occurrence_that_does_not_fit(world, gpus):
    physics, genomics = gpus
    start = soon(30)
    blocker = create(world, physics, 3, start + timedelta(days=2))
    assert blocker.state == State.CONFIRMED
    r = create(world, genomics, 1, start, rrule="FREQ=DAILY;COUNT=4", tz_name="Europe/Zurich")
    assert r.state == State.REFUSED and r.refusal["occurrence"] == 2
    assert r.refusal["competing"] == [blocker.pk]
    assert set(Reservation.objects.filter(series=r.series).values_list("state", flat=True)) == {State.REFUSED}
    assert not HostBooking.objects.filter(reservation__series=r.series).exists()


def test_a_fleet_already_short_of_its_promises_refuses_only_what_makes_it_worse(world):
    fleet(a100s(4) + generals(2))  # physics and genomics are guaranteed 2 general each: 4 > 2
    gpus = pool(world, cluster(world), "train", "gpu-a100")
    general = pool(world, cluster(world, name="c2"), "batch", "general")
    # A100 hosts are not what the fleet is short of: the booking does not deepen the shortfall.
    assert create(world, gpus, 1, soon(30)).state == State.CONFIRMED
    r = create(world, general, 1, soon(30))
    assert r.state == State.REFUSED
    assert "short by 1 host" in r.message, r.message
    assert "the fleet was already short by 2 hosts of its promises then" in r.message
    assert "standing guarantees of general" in r.refusal["classes"]


def test_a_remembered_verdict_does_not_outlive_a_change_of_a_class_requirement(world):
    """Verdicts are remembered per fleet version (the hosts table); a class whose requirement
    changes asks for other hosts, so its standing guarantee must be judged anew."""
    from tenants.models import QuotaClass

    fleet(a100s(2) + generals(2))
    quota(world.physics, world.classes["general"], 2, 6)
    quota(world.physics, world.classes["gpu-a100"], 0, 4)
    quota(world.genomics, world.classes["general"], 0, 6)
    quota(world.genomics, world.classes["gpu-a100"], 0, 2)
    genomics = pool(world, cluster(world, world.genomics), "infer", "gpu-a100")
    ask = {"tenant": world.genomics, "node_pool": genomics, "count": 2, "starts_at": soon(30), "duration": 4}
    assert reservation_check(**ask).ok
    # Physics' guarantee of 2 "general" hosts now needs A100 hosts: the two the booking wants.
    QuotaClass.objects.filter(pk=world.classes["general"].pk).update(requirement=world.classes["gpu-a100"].requirement)
    verdict = reservation_check(**ask)
    assert not verdict.ok and "standing guarantees of general" in verdict.refusal.message, verdict.refusal


# =============================================================================== recurrences


def local(windows, tz):
    return [(w.starts_at.astimezone(tz), w.ends_at.astimezone(tz)) for w in windows]


def hours_of(window) -> float:
    return (window.ends_at - window.starts_at).total_seconds() / 3600


@pytest.mark.parametrize(
    ("first", "changed", "length"),
    [
        (datetime(2026, 3, 23, 20), datetime(2026, 3, 28, 20), 9),
        (datetime(2026, 10, 19, 20), datetime(2026, 10, 24, 20), 11),
    ],
    ids=["spring", "autumn"],
)
def test_nights_keep_their_wall_clock_times_across_zurichs_clock_change(first, changed, length):
    until = datetime(first.year, first.month, first.day, tzinfo=UTC) + timedelta(days=14)
    weekdays = expand(
        rule="FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR",
        first_start=first.replace(tzinfo=ZURICH),
        duration=timedelta(hours=10),
        tz_name="Europe/Zurich",
        until=until,
    )
    assert len(weekdays) == 10
    for start, end in local(weekdays, ZURICH):
        assert (start.hour, start.minute, end.hour, end.minute) == (20, 0, 6, 0)
        assert start.weekday() < 5 and end.date() == start.date() + timedelta(days=1)
    # The clocks change on a Sunday at 02:00: no weekday night spans it, so all last 10 hours,
    # but the offset differs across the change.
    assert {hours_of(w) for w in weekdays} == {10}
    assert len({w.starts_at.astimezone(UTC).hour for w in weekdays}) == 2
    nightly = expand(
        rule="FREQ=DAILY",
        first_start=first.replace(tzinfo=ZURICH),
        duration=timedelta(hours=10),
        tz_name="Europe/Zurich",
        until=until,
    )
    for window, (start, end) in zip(nightly, local(nightly, ZURICH), strict=True):
        assert (start.hour, end.hour) == (20, 6)
        expected = length if start.replace(tzinfo=None) == changed else 10
        assert hours_of(window) == expected, start


def test_a_start_in_the_spring_gap_moves_forward_by_the_gap():
    windows = expand(
        rule="FREQ=DAILY;COUNT=3",
        first_start=datetime(2026, 3, 28, 2, 30, tzinfo=ZURICH),
        duration=timedelta(hours=2),
        tz_name="Europe/Zurich",
        until=datetime(2026, 6, 1, tzinfo=UTC),
    )
    starts = [s for s, _ in local(windows, ZURICH)]
    assert [(s.day, s.hour, s.minute) for (s,) in zip(starts, strict=True)] == [(28, 2, 30), (29, 3, 30), (30, 2, 30)]
    assert windows[1].starts_at == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_new_york_keeps_nine_oclock_and_takes_the_first_of_a_repeated_hour():
    mornings = expand(
        rule="FREQ=DAILY;COUNT=4",
        first_start=datetime(2026, 3, 6, 9, tzinfo=NEW_YORK),
        duration=timedelta(hours=8),
        tz_name="America/New_York",
        until=datetime(2026, 6, 1, tzinfo=UTC),
    )
    assert [w.starts_at.hour for w in mornings] == [14, 14, 13, 13]  # EST, then EDT from Sunday 8 March
    assert all(s.hour == 9 for s, _ in local(mornings, NEW_YORK))
    gap = expand(
        rule="FREQ=DAILY;COUNT=3",
        first_start=datetime(2026, 3, 7, 2, 30, tzinfo=NEW_YORK),
        duration=timedelta(hours=1),
        tz_name="America/New_York",
        until=datetime(2026, 6, 1, tzinfo=UTC),
    )
    assert gap[1].starts_at == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)  # 03:30 EDT
    fold = expand(
        rule="FREQ=DAILY;COUNT=3",
        first_start=datetime(2026, 10, 31, 1, 30, tzinfo=NEW_YORK),
        duration=timedelta(hours=1),
        tz_name="America/New_York",
        until=datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert fold[1].starts_at == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT, the first of the two


def test_count_includes_the_first_start_even_when_the_rule_would_not_produce_it():
    sunday = datetime(2026, 3, 1, 20, tzinfo=ZURICH)
    windows = expand(
        rule="FREQ=WEEKLY;BYDAY=MO;COUNT=3",
        first_start=sunday,
        duration=timedelta(hours=2),
        tz_name="Europe/Zurich",
        until=datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert [s.strftime("%a %d") for s, _ in local(windows, ZURICH)] == ["Sun 01", "Mon 02", "Mon 09"]
    daily = expand(
        rule="FREQ=DAILY;COUNT=5",
        first_start=sunday,
        duration=timedelta(hours=2),
        tz_name="Europe/Zurich",
        until=datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert len(daily) == 5


def test_until_in_utc_is_the_instant_it_names_and_the_horizon_bounds_an_endless_rule():
    first = datetime(2026, 3, 1, 20, tzinfo=ZURICH)
    # 19:00Z on 3 March is 20:00 in Zurich: the third night is included (UNTIL is inclusive).
    windows = expand(
        rule="FREQ=DAILY;UNTIL=20260303T190000Z",
        first_start=first,
        duration=timedelta(hours=10),
        tz_name="Europe/Zurich",
        until=datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert [s.day for s, _ in local(windows, ZURICH)] == [1, 2, 3]
    bounded = expand(
        rule="FREQ=DAILY",
        first_start=first,
        duration=timedelta(hours=10),
        tz_name="Europe/Zurich",
        until=datetime(2026, 3, 11, 19, tzinfo=UTC),  # the 11 March start (19:00Z) is not before it
    )
    assert len(bounded) == 10


@pytest.mark.parametrize(
    ("rule", "duration", "match"),
    [
        ("FREQ=HOURLY;COUNT=5", timedelta(hours=2), "occurrences overlap"),
        ("FREQ=DAILY", timedelta(hours=30), "occurrences overlap"),
        ("FREQ=HOURLY", timedelta(minutes=30), f"more than {MAX_OCCURRENCES}"),
        ("FREQ=DAILY;BYSECOND=5", timedelta(hours=1), "BYSECOND is not accepted"),
        ("DTSTART:20260301T200000;FREQ=DAILY", timedelta(hours=1), "cannot read|DTSTART"),
        ("FREQ=DAILY;DTSTART=20260301T200000", timedelta(hours=1), "DTSTART is not accepted"),
        ("FREQ=DAILY;BYMINUTE=15", timedelta(hours=1), "BYMINUTE is not accepted"),
        ("FREQ=MINUTELY", timedelta(minutes=5), "FREQ=MINUTELY"),
        ("FREQ=DAILY;COUNT=3;UNTIL=20260401T000000Z", timedelta(hours=1), "COUNT or UNTIL"),
        ("BYDAY=MO", timedelta(hours=1), "needs FREQ"),
    ],
)
def test_rules_that_cannot_be_booked_are_refused_in_words(rule, duration, match):
    with pytest.raises(RecurrenceError, match=match):
        expand(
            rule=rule,
            first_start=datetime(2026, 3, 1, 20, tzinfo=ZURICH),
            duration=duration,
            tz_name="Europe/Zurich",
            until=datetime(2026, 5, 30, tzinfo=UTC),
        )


def test_normalise_keeps_the_rule_body_only():
    assert normalise("rrule:freq=weekly; byday=mo,fr") == "FREQ=WEEKLY;BYDAY=MO,FR"
    assert normalise("") == ""


def test_a_nightly_series_is_booked_in_wall_clock_time_through_the_service(world, gpus):
    physics, _ = gpus
    first = (soon(30)).astimezone(ZURICH).replace(hour=20) + timedelta(days=1)
    r = create(
        world, physics, 1, first, hours=10, rrule="FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;COUNT=6", tz_name="Europe/Zurich"
    )
    series = list(Reservation.objects.filter(series=r.series).order_by("starts_at"))
    assert len(series) == 6 and {x.state for x in series} == {State.CONFIRMED}
    assert {x.starts_at.astimezone(ZURICH).hour for x in series} == {20}
    assert ReservationSeries.objects.get().rrule == "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;COUNT=6"
    with pytest.raises(ValidationError) as caught:
        create(world, physics, 1, first, hours=30, rrule="FREQ=DAILY", tz_name="Europe/Zurich")
    assert "overlap" in caught.value.message_dict["rrule"][0]


# =============================================================================== concurrency

CHILD_ENV = {
    "DJANGO_SETTINGS_MODULE": "teapot_portal.settings",
    "TEAPOT_EMBEDDED_AUTOSTART": "0",
    "DEBUG": "1",
    "LOG_LEVEL": "WARNING",
}

BOOKER = """
import json, sys, time
import django
django.setup()
from reservations import services
from tenants.models import NodePool
pool_id, starts_at, start = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
pool = NodePool.objects.select_related("cluster__tenant").get(pk=pool_id)
time.sleep(max(0.0, start - time.time()))
r = services.reservation_create(tenant=pool.cluster.tenant, node_pool=pool, count=2, starts_at=starts_at, duration=6)
print(json.dumps({"id": r.pk, "state": r.state}))
"""

INSERTER = """
import json, sys, time
import django
django.setup()
from django.db import transaction
from django.db.backends.postgresql.psycopg_any import DateTimeTZRange
from django.utils.dateparse import parse_datetime
from reservations.models import HostBooking, HostTaken, booking_hosts
reservation_id, host_id, lo, hi, start = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
time.sleep(max(0.0, start - time.time()))
try:
    with transaction.atomic():  # no advisory lock, no admission: only PostgreSQL stands in the way
        with booking_hosts():
            HostBooking.objects.create(
                reservation_id=reservation_id, host_id=host_id,
                during=DateTimeTZRange(parse_datetime(lo), parse_datetime(hi), "[)"), handoff_seconds=60,
            )
        time.sleep(1.0)  # hold the row uncommitted while the other process inserts
    print(json.dumps({"inserted": True}))
except HostTaken as exc:
    print(json.dumps({"inserted": False, "error": str(exc)}))
"""


def run_children(script: str, argvs: list[list[str]]) -> list[dict]:
    env = child_env(DATABASE_URL=database_url(connection.settings_dict), **CHILD_ENV)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, *argv],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    finished = [proc.communicate(timeout=120) for proc in procs]  # all of them, before judging any
    for proc, (_out, err) in zip(procs, finished, strict=True):
        assert proc.returncode == 0, err[-2000:]
    return [json.loads(out.strip().splitlines()[-1]) for out, _err in finished]


@pytest.mark.django_db(transaction=True)
def test_eight_processes_booking_the_last_free_hosts_confirm_exactly_one(world):
    fleet(a100s(5) + generals(4))  # the generals carry the world's standing general guarantees
    quota(world.physics, world.classes["gpu-a100"], 0, 8)
    quota(world.genomics, world.classes["gpu-a100"], 0, 8)
    physics = pool(world, cluster(world), "train", "gpu-a100")
    genomics = pool(world, cluster(world, world.genomics), "infer", "gpu-a100")
    start = soon(30)
    taken = create(world, physics, 3, start - timedelta(hours=2), hours=6)
    assert taken.state == State.CONFIRMED
    # Two of five A100 hosts are left for the window; eight processes of both tenants want them.
    at = time.time() + 4
    results = run_children(
        BOOKER, [[str((physics if i % 2 else genomics).pk), start.isoformat(), str(at)] for i in range(8)]
    )
    states = Counter(r["state"] for r in results)
    assert states == {State.CONFIRMED: 1, State.REFUSED: 7}, results
    winner = next(r["id"] for r in results if r["state"] == State.CONFIRMED)
    assert HostBooking.objects.filter(reservation_id=winner).count() == 2
    assert HostBooking.objects.count() == 5
    assert overlapping_host_bookings() == []
    for r in Reservation.objects.filter(state=State.REFUSED):
        assert "short by 2 hosts" in r.message and r.refusal["competing"]


@pytest.mark.django_db(transaction=True)
def test_the_exclusion_constraint_alone_refuses_a_double_booking_across_connections(world):
    hosts = fleet(a100s(2) + generals(4))
    physics = pool(world, cluster(world), "train", "gpu-a100")
    start = soon(30)
    one = create(world, physics, 1, start, hours=2)
    two = create(world, physics, 1, start + timedelta(hours=4), hours=2)
    assert one.state == two.state == State.CONFIRMED
    free = hosts["n1"]  # booked by neither: the two inserts below are the only claims on it
    at = time.time() + 3
    results = run_children(
        INSERTER,
        [
            [str(one.pk), str(free.pk), start.isoformat(), (start + timedelta(hours=3)).isoformat(), str(at)],
            [
                str(two.pk),
                str(free.pk),
                (start + timedelta(hours=2)).isoformat(),
                (start + timedelta(hours=5)).isoformat(),
                str(at + 0.3),  # usually while the first holds its row; on a busy machine, together
            ],
        ],
    )
    assert sorted(r["inserted"] for r in results) == [False, True], results
    # The second waits for the first and is refused by the constraint; when both rows reach the
    # index together, PostgreSQL fails one of them as a deadlock. booking_hosts() reads both as
    # "taken" (the one CI once saw, and the reason that helper exists).
    refused = next(r for r in results if not r["inserted"])
    assert "hostbooking_no_double_booking" in refused["error"]
    assert HostBooking.objects.filter(host=free).count() == 1
    assert overlapping_host_bookings() == []


@pytest.mark.django_db(transaction=True)
def test_two_inserts_that_deadlock_on_the_constraint_both_read_as_host_taken(world):
    """Made to deadlock on purpose: A books X, B's overlapping Y waits for A, then A's Z (which
    overlaps Y only) waits for B. PostgreSQL fails one of them; whichever it is, the loser
    raises HostTaken, nothing else escapes, and no host is double-booked."""
    import threading

    from django.db import connections, transaction
    from django.db.backends.postgresql.psycopg_any import DateTimeTZRange

    from reservations.models import HostTaken, booking_hosts

    hosts = fleet(a100s(2) + generals(4))
    physics = pool(world, cluster(world), "train", "gpu-a100")
    start = soon(30)
    one, two, three = (create(world, physics, 1, start + timedelta(hours=3 * i), hours=1) for i in range(3))
    free = hosts["n1"]  # booked by none of them

    def book(reservation, lo, hi):
        HostBooking.objects.create(
            reservation=reservation,
            host=free,
            during=DateTimeTZRange(start + timedelta(hours=lo), start + timedelta(hours=hi), "[)"),
            handoff_seconds=60,
        )

    outcomes: dict[str, str] = {}

    def b():
        try:
            with transaction.atomic(), booking_hosts():
                book(two, 2, 5)  # overlaps X: waits for A
            outcomes["B"] = "inserted"
        except HostTaken as exc:
            outcomes["B"] = f"taken: {exc}"
        except Exception as exc:  # reported by the assertion below
            outcomes["B"] = f"escaped: {exc!r}"
        finally:
            connections.close_all()

    with transaction.atomic():
        book(one, 0, 3)  # X
        thread = threading.Thread(target=b)
        thread.start()
        deadline = time.time() + 20
        with connection.cursor() as cursor:
            while time.time() < deadline:
                cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
                if cursor.fetchone()[0]:
                    break
                time.sleep(0.05)
        try:
            with booking_hosts():
                book(three, 4, 6)  # Z: overlaps B's uncommitted Y only
            outcomes["A"] = "inserted"
        except HostTaken as exc:
            outcomes["A"] = f"taken: {exc}"
    thread.join(30)
    assert not any(v.startswith("escaped") for v in outcomes.values()), outcomes
    assert any("deadlock" in v for v in outcomes.values()), outcomes
    assert "taken" in outcomes["B"], outcomes  # B loses either way: as the victim, or to X after
    assert overlapping_host_bookings() == []
    assert HostBooking.objects.filter(host=free, reservation=one).exists()
