"""Topology levels and locations, the cost model, hand-off estimates: pure functions."""

from __future__ import annotations

from decimal import Decimal

import pytest

from hosts.costs import CostModel, CostModelError, host_cost
from hosts.handoff import handoff_seconds
from hosts.topology import TopologyError, bucket, label, validate_levels, validate_location

LEVELS = ["site", "room", "row", "rack"]


def test_levels_are_validated():
    assert validate_levels([" Site", "room", "row", "rack"]) == LEVELS
    with pytest.raises(TopologyError, match="at least one"):
        validate_levels([])
    with pytest.raises(TopologyError, match="once"):
        validate_levels(["rack", "rack"])
    with pytest.raises(TopologyError, match="lowercase"):
        validate_levels(["Rack 1"])


def test_a_location_is_a_path_from_the_top():
    assert validate_location({"rack": "r3", "site": "ams", "room": "a", "row": "2"}, LEVELS) == {
        "site": "ams",
        "room": "a",
        "row": "2",
        "rack": "r3",
    }
    assert validate_location({"site": "ams"}, LEVELS) == {"site": "ams"}
    with pytest.raises(TopologyError, match="rack 'r3' is given but room is not"):
        validate_location({"site": "ams", "rack": "r3"}, LEVELS)
    with pytest.raises(TopologyError, match="unknown level"):
        validate_location({"building": "b1"}, LEVELS)
    with pytest.raises(TopologyError, match="letters, digits"):
        validate_location({"site": "a b"}, LEVELS)


def test_buckets_are_paths_so_equal_rack_names_in_two_rooms_differ():
    a = {"site": "ams", "room": "a", "row": "1", "rack": "r1"}
    b = {"site": "ams", "room": "b", "row": "1", "rack": "r1"}
    assert bucket(a, "rack", LEVELS) != bucket(b, "rack", LEVELS)
    assert bucket(a, "site", LEVELS) == bucket(b, "site", LEVELS) == ("ams",)
    assert bucket({"site": "ams"}, "rack", LEVELS) is None
    assert label(bucket(a, "rack", LEVELS), LEVELS) == "site ams / room a / row 1 / rack r1"


def test_default_cost_is_cores_plus_gib_like_maas():
    cost = host_cost(CostModel(), cores=64, ram_gib=256)
    assert cost.per_hour == Decimal("320.0000")
    assert [text for text, _ in cost.lines] == ["64 cores × 1", "256 GiB RAM × 1"]


def test_weights_accelerators_traits_and_override():
    model = CostModel.from_dict(
        {
            "per_core": "0.01",
            "per_gib_ram": "0.002",
            "per_tb_disk": "0.05",
            "per_accelerator": {"nvidia-a100": "2.5"},
            "per_trait": {"nvme": "0.1"},
        }
    )
    cost = host_cost(
        model,
        cores=128,
        ram_gib=1024,
        disk_tb=3.84,
        accelerators=[{"type": "nvidia-a100", "count": 8}, {"type": "unpriced", "count": 1}],
        traits=["nvme", "gpu-a100"],
    )
    assert cost.per_hour == Decimal("1.28") + Decimal("2.048") + Decimal("0.192") + Decimal("20") + Decimal("0.1")
    override = host_cost(model, cores=128, ram_gib=1024, override=Decimal("9.99"))
    assert override.per_hour == Decimal("9.9900") and override.overridden
    assert CostModel.from_dict(model.to_dict()) == model


@pytest.mark.parametrize(
    "data, message",
    [
        ({"per_core": "-1"}, "≥ 0"),
        ({"per_core": "lots"}, "not a number"),
        ({"per_gpu": "1"}, "unknown weight"),
        ({"per_accelerator": ["a100"]}, "mapping"),
        ({"per_trait": {"nvme": "nan"}}, "≥ 0"),
    ],
)
def test_bad_cost_models_are_named(data, message):
    with pytest.raises(CostModelError, match=message):
        CostModel.from_dict(data)


def test_handoff_estimates():
    hdd = [{"type": "HDD", "size_bytes": 16e12}] * 12
    nvme = [{"type": "NVME", "size_bytes": 3.84e12}]
    assert handoff_seconds(key_erase_capable=True, mode="key-erase") == 60
    assert handoff_seconds(key_erase_capable=False, mode="key-erase") == 600  # never readable data
    assert handoff_seconds(key_erase_capable=False, mode="metadata") == 600
    assert handoff_seconds(key_erase_capable=False, mode="full", disks=hdd) > 24 * 3600  # a day for 16 TB HDDs
    assert handoff_seconds(key_erase_capable=False, mode="full", disks=nvme) < 3600
    with pytest.raises(ValueError, match="unknown cleaning mode"):
        handoff_seconds(key_erase_capable=True, mode="shred")
