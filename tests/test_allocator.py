"""The allocator core (hosts.allocator): pure, no database. Unit tests per policy and explanation,
then hypothesis comparing every answer with brute force over all k-subsets of small fleets."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from decimal import Decimal

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from hosts.allocator import Candidate, Group, Policy, PolicyError, allocate, allocate_groups, group_candidates

LEVELS = ["room", "rack"]
SPREAD_RACKS = Policy(mode="spread", level="rack", hard=True)


def host(id_: int, path: str, cost: str = "1", handoff: int = 600) -> Candidate:
    return Candidate(id_, f"h{id_:02}", Decimal(cost), handoff, tuple(path.split("/")) if path else ())


def names(allocation) -> list[str]:
    return [c.name for c in allocation.chosen]


# ---------------------------------------------------------------------------------------------- policies


def test_without_a_rule_the_cheapest_hosts_win():
    pool = [host(1, "a/r1", "3"), host(2, "a/r1", "1"), host(3, "b/r1", "2"), host(4, "b/r2", "1")]
    allocation = allocate(pool, 2, None, LEVELS)
    assert allocation.feasible and allocation.explanation is None
    assert names(allocation) == ["h02", "h04"]
    assert allocation.cost == Decimal(2)
    assert allocation.handoff == 1200


def test_at_equal_cost_quicker_handoff_then_more_spread_then_lower_id():
    pool = [host(1, "a/r1"), host(2, "a/r1"), host(3, "a/r2"), host(4, "a/r3", handoff=60)]
    # h04 hands off fastest; then h01 or h03 — different racks beat the same rack twice.
    assert names(allocate(pool, 2, None, LEVELS)) == ["h01", "h04"]
    assert names(allocate(pool, 3, None, LEVELS)) == ["h01", "h03", "h04"]


def test_must_spread_takes_at_most_one_per_rack():
    pool = [host(1, "a/r1", "1"), host(2, "a/r1", "1"), host(3, "a/r2", "2"), host(4, "a/r3", "3")]
    allocation = allocate(pool, 2, SPREAD_RACKS, LEVELS)
    assert names(allocation) == ["h01", "h03"]
    assert allocation.cost == Decimal(3)


def test_must_spread_with_a_maximum_per_rack():
    pool = [host(i, "a/r1", "1") for i in range(1, 4)] + [host(4, "a/r2", "2"), host(5, "a/r3", "1")]
    policy = Policy(mode="spread", level="rack", hard=True, max_per_bucket=2)
    assert names(allocate(pool, 4, policy, LEVELS)) == ["h01", "h02", "h04", "h05"]


def test_cost_comes_before_a_preference_to_spread():
    pool = [host(1, "a/r1", "1"), host(2, "a/r1", "1"), host(3, "a/r2", "2")]
    allocation = allocate(pool, 2, Policy(mode="spread", level="rack"), LEVELS)
    assert names(allocation) == ["h01", "h02"]
    assert allocation.penalty == (2, -1)


def test_a_preference_to_spread_chooses_among_equal_costs():
    pool = [host(i, "a/r1") for i in range(1, 5)] + [host(5, "a/r2"), host(6, "b/r1")]
    allocation = allocate(pool, 3, Policy(mode="spread", level="rack"), LEVELS)
    assert names(allocation) == ["h01", "h05", "h06"]
    assert allocation.penalty == (1, -3)
    # More hosts than racks: level the counts (2, 1, 1), never (3, 1, 0).
    allocation = allocate(pool, 4, Policy(mode="spread", level="rack"), LEVELS)
    assert names(allocation) == ["h01", "h02", "h05", "h06"]
    assert allocation.penalty == (2, -3)


def test_a_preference_to_spread_opens_the_racks_that_hand_off_soonest():
    pool = [host(1, "a/r1", handoff=60), host(2, "a/r2"), host(3, "a/r3"), host(4, "a/r4", handoff=60)]
    allocation = allocate(pool, 2, Policy(mode="spread", level="rack"), LEVELS)
    assert names(allocation) == ["h01", "h04"]
    assert allocation.handoff == 120


def test_a_maximum_is_a_must_even_when_spreading_is_a_preference():
    pool = [host(i, "a/r1", "1") for i in range(1, 4)] + [host(4, "a/r2", "5")]
    allocation = allocate(pool, 3, Policy(mode="spread", level="rack", max_per_bucket=2), LEVELS)
    assert names(allocation) == ["h01", "h02", "h04"]


def test_must_pack_takes_the_cheapest_single_rack():
    pool = [
        host(1, "a/r1", "1"),
        host(2, "a/r2", "2"),
        host(3, "a/r2", "2"),
        host(4, "b/r1", "3"),
        host(5, "b/r1", "1"),
    ]
    allocation = allocate(pool, 2, Policy(mode="pack", level="rack", hard=True), LEVELS)
    # a/r1 is too small; a/r2 and b/r1 both cost 4 for two hosts: the tie goes to the smaller path.
    assert names(allocation) == ["h02", "h03"]


def test_must_pack_prefers_the_cheaper_rack():
    pool = [host(1, "a/r1", "1"), host(2, "a/r1", "4"), host(3, "a/r2", "2"), host(4, "a/r2", "2")]
    allocation = allocate(pool, 2, Policy(mode="pack", level="rack", hard=True), LEVELS)
    assert names(allocation) == ["h03", "h04"]


def test_a_preference_to_pack_uses_the_fewest_racks_at_equal_cost():
    pool = [host(1, "a/r1"), host(2, "a/r2"), host(3, "a/r2"), host(4, "a/r3"), host(5, "a/r3"), host(6, "a/r3")]
    allocation = allocate(pool, 3, Policy(mode="pack", level="rack"), LEVELS)
    assert names(allocation) == ["h04", "h05", "h06"]
    assert allocation.penalty == (1,)
    allocation = allocate(pool, 5, Policy(mode="pack", level="rack"), LEVELS)
    assert names(allocation) == ["h02", "h03", "h04", "h05", "h06"]
    assert allocation.penalty == (2,)


def test_together_in_one_room_with_at_most_two_per_rack():
    levels = ["room", "row", "rack"]
    pool = [
        *(host(i, "a/1/r1", "1") for i in range(1, 4)),
        host(4, "a/1/r2", "1"),
        host(5, "a/2/r1", "3"),
        *(host(i, "b/1/r1", "2") for i in range(6, 10)),
        host(10, "b/1/r2", "2"),
    ]
    policy = Policy(mode="spread", level="rack", hard=True, max_per_bucket=2, together_level="room")
    allocation = allocate(pool, 4, policy, levels)
    # Room b holds only 3 at 2 per rack (2 in r1, 1 in r2); room a holds 4 for 1 + 1 + 1 + 3.
    assert names(allocation) == ["h01", "h02", "h04", "h05"]
    assert allocation.cost == Decimal(6)


def test_buckets_are_paths_not_names():
    # Rack r1 in room a and rack r1 in room b are two racks.
    pool = [host(1, "a/r1"), host(2, "b/r1")]
    assert names(allocate(pool, 2, SPREAD_RACKS, LEVELS)) == ["h01", "h02"]


def test_a_must_rule_excludes_hosts_not_placed_that_deep_and_a_preference_ignores_them():
    pool = [host(1, "a", "1"), host(2, "", "1"), host(3, "a/r1", "2"), host(4, "a/r2", "2")]
    assert names(allocate(pool, 2, SPREAD_RACKS, LEVELS)) == ["h03", "h04"]
    assert names(allocate(pool, 2, Policy(together_level="room", mode="spread", level="rack"), LEVELS)) == [
        "h01",
        "h03",
    ]
    allocation = allocate(pool, 2, Policy(mode="spread", level="rack"), LEVELS)
    assert names(allocation) == ["h01", "h02"]
    assert allocation.penalty == (0, 0)


def test_the_answer_does_not_depend_on_the_order_of_the_pool():
    pool = [host(i, f"{'ab'[i % 2]}/r{i % 3}", str(1 + i % 2), (60, 600)[i % 4 == 0]) for i in range(1, 30)]
    policies = [None, SPREAD_RACKS, Policy(mode="pack", level="rack"), Policy(mode="spread", level="rack")]
    for policy in policies:
        expected = allocate(pool, 5, policy, LEVELS)
        for seed in range(5):
            shuffled = pool[:]
            random.Random(seed).shuffle(shuffled)
            assert allocate(shuffled, 5, policy, LEVELS) == expected


def test_interchangeable_hosts_are_grouped():
    pool = [host(i, f"a/r{i % 2}") for i in range(100)] + [host(100, "a/r0", "2")]
    groups = group_candidates(pool)
    assert [(g.cost, g.path, g.size) for g in groups] == [
        (Decimal(1), ("a", "r0"), 50),
        (Decimal(1), ("a", "r1"), 50),
        (Decimal(2), ("a", "r0"), 1),
    ]
    assert [c.id for c in groups[0].members][:3] == [0, 2, 4]
    assert allocate(pool, 3, SPREAD_RACKS, LEVELS).groups == 3


def test_groups_built_by_the_database_need_only_their_first_k_members():
    # What a GROUP BY gives: the size, and the lowest ids of each group.
    groups = [
        Group(Decimal(1), 600, ("a", "r1"), 500, (host(1, "a/r1"), host(7, "a/r1"))),
        Group(Decimal(1), 600, ("a", "r2"), 300, (host(2, "a/r2"), host(3, "a/r2"))),
    ]
    allocation = allocate_groups(groups, 2, SPREAD_RACKS, LEVELS)
    assert names(allocation) == ["h01", "h02"]
    assert (
        allocate_groups(groups, 2, None, LEVELS).chosen
        == allocate([host(1, "a/r1"), host(7, "a/r1"), host(2, "a/r2"), host(3, "a/r2")], 2, None, LEVELS).chosen
    )
    with pytest.raises(ValueError, match="first 3 members"):
        allocate_groups(groups, 3, None, LEVELS)


def test_asking_for_no_host_is_an_error_and_more_than_the_pool_is_explained():
    with pytest.raises(ValueError, match="at least one"):
        allocate([host(1, "a/r1")], 0, None, LEVELS)
    allocation = allocate([host(1, "a/r1")], 10**6, None, LEVELS)
    assert not allocation.feasible and allocation.chosen == ()


# ---------------------------------------------------------------------------------------------- explanations


def explain(pool, k, policy=None, levels=LEVELS, **kwargs):
    allocation = allocate(pool, k, policy, levels, **kwargs)
    assert not allocation.feasible and allocation.chosen == ()
    return allocation.explanation


def test_no_host_matches_says_why():
    explanation = explain([], 2, unmatched_reasons=["no host has ≥ 2 TiB RAM"])
    assert (explanation.code, explanation.message) == ("none_match", "no host has ≥ 2 TiB RAM")
    assert explanation.data == {"needed": 2, "matching": 0, "reasons": ["no host has ≥ 2 TiB RAM"]}
    assert explain([], 1, what="nvidia-a100 host").message == "no host is a nvidia-a100 host"


def test_too_few_hosts_exist():
    explanation = explain([host(1, "a/r1"), host(2, "a/r2")], 3)
    assert (explanation.code, explanation.message) == ("not_enough", "only 2 matching hosts exist; 3 are needed")


def test_too_few_hosts_are_free():
    pool = [host(1, "a/r1"), host(2, "a/r2")]
    explanation = explain(pool, 8, unavailable={"in use by other tenants": 10, "in maintenance": 1, "retired": 0})
    assert explanation.code == "not_enough_free"
    assert explanation.message == (
        "13 matching hosts exist but 10 are in use by other tenants and 1 is in maintenance; 2 are free and 8 are needed"
    )
    assert explanation.data == {
        "needed": 8,
        "matching": 13,
        "free": 2,
        "unavailable": {"in use by other tenants": 10, "in maintenance": 1},
    }
    assert explain([], 1, unavailable={"in use by other tenants": 3}).message == (
        "3 matching hosts exist but 3 are in use by other tenants; none is free and 1 is needed"
    )


def test_too_few_racks_for_a_must_spread():
    pool = [host(i, f"a/r{i % 3}") for i in range(10)]
    explanation = explain(pool, 4, SPREAD_RACKS, what="nvidia-a100 host")
    assert explanation.code == "spread"
    assert explanation.message == "only 3 racks have a free nvidia-a100 host; spread across racks needs 4"
    assert explanation.data == {
        "needed": 4,
        "level": "rack",
        "max_per_bucket": 1,
        "buckets": 3,
        "capacity": 3,
        "unplaced": 0,
    }


def test_too_little_room_under_a_maximum_per_rack():
    pool = [host(i, f"a/r{i % 3}") for i in range(10)]
    policy = Policy(mode="spread", level="rack", max_per_bucket=2)
    explanation = explain(pool, 8, policy, what="host")
    assert explanation.code == "spread"
    assert explanation.message == "racks with free hosts can hold at most 6 (2 per rack); 8 are needed"
    assert explanation.data["capacity"] == 6


def test_no_single_room_is_big_enough():
    pool = [host(i, "a/r1") for i in range(3)] + [host(i, f"b/r{i}") for i in range(3, 8)]
    explanation = explain(pool, 8, Policy(together_level="room"))
    assert explanation.code == "together"
    assert explanation.message == "no single room has 8 free matching hosts; the most in one room is 5 (room b)"
    assert explanation.data == {
        "needed": 8,
        "level": "room",
        "buckets": 2,
        "best_bucket": ["b"],
        "best_bucket_label": "room b",
        "best_count": 5,
        "unplaced": 0,
    }


def test_no_single_rack_for_a_must_pack():
    pool = [host(1, "a/r1"), host(2, "a/r1"), host(3, "b/r1")]
    explanation = explain(pool, 3, Policy(mode="pack", level="rack", hard=True))
    assert explanation.code == "together"
    assert explanation.message == (
        "no single rack has 3 free matching hosts; the most in one rack is 2 (room a / rack r1)"
    )


def test_a_room_is_big_enough_but_has_too_few_racks():
    pool = [host(i, f"a/r{i % 2}") for i in range(6)] + [host(i, f"b/r{i}") for i in range(6, 9)]
    policy = Policy(mode="spread", level="rack", hard=True, together_level="room")
    explanation = explain(pool, 4, policy)
    assert explanation.code == "spread"
    assert explanation.message == "no single room has 4 racks with a free matching host; the most is 3 (room b)"
    policy = Policy(mode="spread", level="rack", hard=True, max_per_bucket=2, together_level="room")
    explanation = explain(pool, 5, policy)
    assert explanation.message == (
        "no single room can hold 5 free matching hosts at most 2 per rack; the most is 4 (room a)"
    )
    assert explanation.data["capacity"] == 4


def test_hosts_without_a_rack_cannot_be_spread_across_racks():
    pool = [host(1, "a/r1"), host(2, "a"), host(3, ""), host(4, "b/r2")]
    explanation = explain(pool, 3, SPREAD_RACKS)
    assert explanation.code == "unplaced"
    assert explanation.message == "only 2 free matching hosts have a rack in their location (2 have none); 3 are needed"
    assert explanation.data == {"needed": 3, "free": 4, "level": "rack", "placed": 2, "unplaced": 2}
    explanation = explain([host(1, "")], 1, Policy(together_level="room"))
    assert explanation.message == "none of the 1 free matching host has a room in its location; 1 is needed"


# ---------------------------------------------------------------------------------------------- the policy itself


def test_a_policy_round_trips_through_json_and_reads_as_a_sentence():
    policy = Policy.from_json(
        {"mode": "spread", "level": "rack", "hard": True, "max_per_bucket": 2, "together_level": "room"}, LEVELS
    )
    assert Policy.from_json(policy.to_json(), LEVELS) == policy
    assert policy.describe() == "spread across racks (must), at most 2 per rack, all in one room"
    assert Policy(mode="spread", level="rack").describe() == "spread across racks (prefer)"
    assert Policy(mode="pack", level="rack", hard=True).describe() == "pack into one rack (must)"
    assert (
        Policy(mode="pack", level="rack", max_per_bucket=4).describe()
        == "pack into few racks (prefer), at most 4 per rack"
    )
    assert Policy(level="rack", max_per_bucket=2).describe() == "at most 2 per rack"
    assert Policy().describe() == "no placement rule"
    assert Policy.from_json(None) == Policy()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"mode": "spread", "level": "shelf"}, "unknown level 'shelf'; the levels are room > rack"),
        ({"together_level": "site"}, "unknown level 'site'"),
        ({"mode": "scatter", "level": "rack"}, "spread or pack"),
        ({"mode": "spread"}, "at which level"),
        ({"level": "rack"}, "spread or pack across each rack"),
        ({"max_per_bucket": 2}, "needs a level"),
        ({"level": "rack", "max_per_bucket": 0}, "at least 1"),
        ({"level": "rack", "max_per_bucket": True}, "whole number"),
        ({"mode": "pack", "level": "rack", "hard": True, "max_per_bucket": 2}, "cannot go with it"),
        ({"mode": "spread", "level": "room", "together_level": "rack"}, "must be finer than rack"),
        ({"hard": "yes", "mode": "spread", "level": "rack"}, "true"),
        ({"hard": True}, "must applies"),
        ({"spread": "rack"}, "unknown field"),
        (["rack"], "an object"),
    ],
)
def test_a_policy_the_fleet_cannot_carry_is_refused(data, error):
    with pytest.raises(PolicyError, match=error):
        Policy.from_json(data, LEVELS)


def test_an_unknown_level_is_refused_by_allocate_too():
    with pytest.raises(PolicyError, match="the levels are room > rack"):
        allocate([host(1, "a/r1")], 1, Policy(together_level="row"), LEVELS)


# ---------------------------------------------------------------------------------------------- brute force


def hard_ok(chosen, policy: Policy, levels) -> bool:
    """Every hard rule, written independently of the allocator."""
    li = levels.index(policy.level) if policy.level else None
    ti = levels.index(policy.together_level) if policy.together_level else None
    if ti is not None and (any(len(c.path) <= ti for c in chosen) or len({c.path[: ti + 1] for c in chosen}) > 1):
        return False
    if policy.mode == "pack" and policy.hard:
        return all(len(c.path) > li for c in chosen) and len({c.path[: li + 1] for c in chosen}) == 1
    cap = policy.max_per_bucket or (1 if policy.mode == "spread" and policy.hard else None)
    if cap is not None:
        if any(len(c.path) <= li for c in chosen):
            return False
        return max(Counter(c.path[: li + 1] for c in chosen).values()) <= cap
    return True


def penalty(chosen, policy: Policy, levels) -> tuple[int, ...]:
    if policy.mode is None or policy.hard:
        return ()
    li = levels.index(policy.level)
    counts = Counter(c.path[: li + 1] for c in chosen if len(c.path) > li)
    if policy.mode == "spread":
        return (max(counts.values(), default=0), -len(counts))
    return (len(counts),)


def objective(chosen, policy, levels):
    return (
        sum(c.cost for c in chosen),
        penalty(chosen, policy, levels),
        sum(c.handoff for c in chosen),
        -len({c.path for c in chosen}),
    )


def brute_force(pool, k, policy, levels):
    objectives = [objective(s, policy, levels) for s in itertools.combinations(pool, k) if hard_ok(s, policy, levels)]
    return min(objectives, default=None)


def random_problem(rng: random.Random, *, soft: bool = False):
    """A small fleet, k and a policy, drawn so that ties (where the rules bite) are common:
    a few locations shared by several hosts, few distinct costs. Values repeat across parents
    ("1" under every room), so only paths tell buckets apart; some hosts are not placed all the
    way down."""
    levels = ["site", "room", "rack"][: rng.choice([2, 3])]
    places = []
    for _ in range(rng.randint(1, 5)):
        depth = len(levels) if rng.random() < 0.8 else rng.randrange(len(levels))
        places.append(tuple(rng.choice("12") for _ in range(depth)))
    pool = [
        Candidate(
            id_, f"h{id_:02}", Decimal(rng.choice(["1", "1", "2", "2.5"])), rng.choice([60, 600]), rng.choice(places)
        )
        for id_ in range(1, rng.randint(4, 10) + 1)
    ]
    k = rng.randint(1, min(5, len(pool)))
    together = None if rng.random() < 0.6 else rng.randrange(len(levels) - 1)
    mode = rng.choice(["spread", "pack"] if soft else ["spread", "spread", "pack", "pack", None])
    level = levels[rng.randrange(0 if together is None else together + 1, len(levels))]
    hard = mode is not None and not soft and rng.random() < 0.4
    maximum = None if (mode == "pack" and hard) else rng.choice([None, None, 1, 2])
    if mode is None and maximum is None:
        level = None
    together_level = levels[together] if together is not None else None
    policy = Policy(mode=mode, level=level, hard=hard, max_per_bucket=maximum, together_level=together_level)
    return levels, pool, k, policy


# A seed rather than st.randoms(): hypothesis steers its own randoms towards small, simple
# values, which left the soft rules almost untested. A failure prints the problem (see note()).
problems = st.integers(0, 2**64).map(lambda seed: random_problem(random.Random(seed)))
soft_problems = st.integers(0, 2**64).map(lambda seed: random_problem(random.Random(seed), soft=True))


def check_against_brute_force(problem):
    levels, pool, k, policy = problem
    note(f"levels={levels} k={k} policy={policy!r}\npool={pool!r}")
    allocation = allocate(pool, k, policy, levels)
    best = brute_force(pool, k, policy, levels)
    assert allocation.feasible == (best is not None)
    if best is None:
        assert allocation.explanation is not None and allocation.explanation.message
        return
    chosen = allocation.chosen
    assert len(chosen) == k and len({c.id for c in chosen}) == k and set(chosen) <= set(pool)
    assert hard_ok(chosen, policy, levels)
    assert allocation.cost == best[0]  # least total cost
    assert allocation.penalty == penalty(chosen, policy, levels)
    assert objective(chosen, policy, levels) == best  # then soft rules, hand-off, finest spread


@settings(max_examples=300, deadline=None)
@given(problems)
def test_every_answer_is_optimal_and_keeps_every_hard_rule(problem):
    check_against_brute_force(problem)


@settings(max_examples=200, deadline=None)
@given(soft_problems)
def test_soft_rules_choose_the_best_among_the_cheapest(problem):
    check_against_brute_force(problem)


@settings(max_examples=100, deadline=None)
@given(problems, st.randoms(use_true_random=False))
def test_every_answer_is_deterministic(problem, rng):
    levels, pool, k, policy = problem
    shuffled = pool[:]
    rng.shuffle(shuffled)
    assert allocate(shuffled, k, policy, levels) == allocate(pool, k, policy, levels)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.sampled_from([1, 2, 3])), min_size=1, max_size=14))
def test_greedy_under_caps_is_cost_optimal_on_larger_pools(rows):
    # The partition-matroid case alone, on pools too big for the general property: at most 2 per rack.
    pool = [host(i, f"a/r{rack}", str(cost)) for i, (rack, cost) in enumerate(rows)]
    policy = Policy(level="rack", max_per_bucket=2)
    for k in (1, 3, 6):
        if k > len(pool):
            continue
        allocation = allocate(pool, k, policy, LEVELS)
        feasible = [sum(c.cost for c in s) for s in itertools.combinations(pool, k) if hard_ok(s, policy, LEVELS)]
        assert allocation.feasible == bool(feasible)
        if feasible:
            assert allocation.cost == min(feasible)


# ---------------------------------------------------------------------------------------------- scale


def test_ten_thousand_hosts_in_fifty_groups():
    levels = ["site", "room", "row", "rack"]
    pool = []
    for i in range(10_000):
        rack = i % 25
        cost = ("1.5", "2.25")[i % 2]
        pool.append(Candidate(i, f"node-{i:05}", Decimal(cost), 600, ("ams", "a", str(rack // 5), f"r{rack}")))
    allocation = allocate(pool, 8, Policy(mode="spread", level="rack", hard=True), levels)
    assert allocation.groups == 50
    assert allocation.feasible and len(allocation.chosen) == 8
    assert len({c.path for c in allocation.chosen}) == 8
    assert allocation.cost == 8 * Decimal("1.5")


def random_growth(seed: int):
    """A problem plus hosts already held (a pool growing), all placed to the finest level and,
    when the policy keeps hosts together, all in one bucket."""
    rng = random.Random(seed)
    levels, pool, k, policy = random_problem(rng)
    places = sorted({c.path for c in pool if len(c.path) == len(levels)})
    if not places:
        return levels, pool, k, policy, {}
    together = levels.index(policy.together_level) if policy.together_level else None
    if policy.mode == "pack" and policy.hard:
        together = levels.index(policy.level)
    first = rng.choice(places)
    if together is not None:
        places = [p for p in places if p[: together + 1] == first[: together + 1]]
    occupied: Counter = Counter()
    for _ in range(rng.randint(1, 3)):  # held hosts keep the hard rules themselves
        path = rng.choice(places)
        held = [Candidate(-j, "", Decimal(0), 0, p) for j, p in enumerate([*occupied.elements(), path], 1)]
        if hard_ok(held, policy, levels):
            occupied[path] += 1
    return levels, pool, k, policy, dict(occupied)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**64).map(random_growth))
def test_hosts_already_held_count_against_the_hard_rules(problem):
    levels, pool, k, policy, occupied = problem
    note(f"levels={levels} k={k} policy={policy!r} occupied={occupied}\npool={pool!r}")
    held = [Candidate(-i, f"held{i}", Decimal(0), 0, path) for i, path in enumerate(Counter(occupied).elements(), 1)]
    allocation = allocate(pool, k, policy, levels, occupied=occupied)
    candidates = [s for s in itertools.combinations(pool, k) if hard_ok(list(s) + held, policy, levels)]
    best = min((objective(s, policy, levels) for s in candidates), default=None)
    assert allocation.feasible == (best is not None)
    if best is None:
        assert allocation.explanation is not None and allocation.explanation.message
        return
    assert hard_ok(list(allocation.chosen) + held, policy, levels)
    assert allocation.cost == best[0]  # still the least total cost
