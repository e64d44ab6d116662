"""The requirement language: the issue's examples, every mistake explained, the three forms
round-trip, and matching is exact while the SQL prefilter never loses a matching host."""

from __future__ import annotations

import json
from types import SimpleNamespace

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hosts.requirements import (
    ACCELERATOR_TYPE_PATTERN,
    ARCH_PATTERN,
    MAX_TEXT_LENGTH,
    REQUIREMENT_SCHEMA,
    TRAIT_PATTERN,
    Clause,
    Requirement,
    RequirementError,
)

ISSUE_EXAMPLE = "cores>=64,ram>=512Gi,gpu:nvidia-a100>=4,!fpga"
FULL = "cores>=64,ram>=512Gi,gpu:nvidia-a100>=4,disk:nvme>=1.5T,nic>=25,arch=aarch64,nvme,gpu-a100|gpu-l40s,!fpga"
TB = 10**12


def host(**overrides) -> SimpleNamespace:
    """A Host-like object: an A100 machine unless told otherwise."""
    values = {
        "hardware": {"cpu": {}},
        "traits": ["gpu", "gpu-a100", "nvme"],
        "cpu_count": 128,
        "ram_mib": 1024 * 1024,
        "disks": [
            {"name": "/dev/nvme0n1", "type": "NVME", "size_bytes": 2 * TB, "rotational": False},
            {"name": "/dev/sda", "type": "HDD", "size_bytes": 16 * TB, "rotational": True},
        ],
        "nic_max_speed_gbps": 200,
        "accelerators": [{"type": "nvidia-a100", "count": 8}],
        "architecture": "x86_64",
    }
    values.update(overrides)
    return SimpleNamespace(**values)


# --------------------------------------------------------------------------- the issue's examples


def test_the_issue_example_parses_describes_and_round_trips():
    requirement = Requirement.parse(ISSUE_EXAMPLE)
    assert requirement == Requirement(
        forbidden=("fpga",), min_cores=64, min_ram_gib=512, accelerators=(("nvidia-a100", 4),)
    )
    assert requirement.describe() == "≥ 64 cores, ≥ 512 GiB RAM, 4× nvidia-a100, no fpga"
    assert requirement.to_compact() == ISSUE_EXAMPLE


def test_every_kind_of_term_together():
    requirement = Requirement.parse(FULL)
    assert requirement.to_compact() == FULL
    assert requirement.describe() == (
        "≥ 64 cores, ≥ 512 GiB RAM, 4× nvidia-a100, ≥ 1.5 TB NVMe disk, ≥ 25 Gbit/s NIC, aarch64, nvme, "
        "gpu-a100 or gpu-l40s, no fpga"
    )
    assert requirement.to_json() == {
        "traits": ["nvme"],
        "forbidden": ["fpga"],
        "any_of": [["gpu-a100", "gpu-l40s"]],
        "min_cores": 64,
        "min_ram_gib": 512,
        "accelerators": [{"type": "nvidia-a100", "count": 4}],
        "min_disk_tb": 1.5,
        "disk_type": "NVME",
        "min_nic_gbps": 25,
        "arch": "aarch64",
    }


@pytest.mark.parametrize(
    "text, expected, compact",
    [
        ("", Requirement.ANY, ""),
        ("   ", Requirement.ANY, ""),
        ("cores>=64", Requirement(min_cores=64), "cores>=64"),
        (" cores >= 64 ", Requirement(min_cores=64), "cores>=64"),
        ("CORES>=64", Requirement(min_cores=64), "cores>=64"),
        ("ram>=512", Requirement(min_ram_gib=512), "ram>=512Gi"),
        ("ram>=512gi", Requirement(min_ram_gib=512), "ram>=512Gi"),
        ("ram>=1Ti", Requirement(min_ram_gib=1024), "ram>=1Ti"),
        ("ram>=1.5Ti", Requirement(min_ram_gib=1536), "ram>=1536Gi"),
        ("ram >= 2 Ti", Requirement(min_ram_gib=2048), "ram>=2Ti"),
        ("gpu:nvidia-a100>=4", Requirement(accelerators=[("nvidia-a100", 4)]), "gpu:nvidia-a100>=4"),
        ("accel:xilinx-u250>=2", Requirement(accelerators=[("xilinx-u250", 2)]), "gpu:xilinx-u250>=2"),
        ("gpu:nvidia-a100", Requirement(accelerators=[("nvidia-a100", 1)]), "gpu:nvidia-a100"),
        ("gpu:nvidia-a100>=1", Requirement(accelerators=[("nvidia-a100", 1)]), "gpu:nvidia-a100"),
        (
            "gpu:nvidia-l40s>=2,gpu:nvidia-a100>=4",
            Requirement(accelerators=[("nvidia-a100", 4), ("nvidia-l40s", 2)]),
            "gpu:nvidia-a100>=4,gpu:nvidia-l40s>=2",
        ),
        ("disk>=2T", Requirement(min_disk_tb=2), "disk>=2T"),
        ("disk>=2", Requirement(min_disk_tb=2), "disk>=2T"),
        ("disk>=2TB", Requirement(min_disk_tb=2), "disk>=2T"),
        ("disk>=500G", Requirement(min_disk_tb=0.5), "disk>=500G"),
        ("disk>=1500G", Requirement(min_disk_tb=1.5), "disk>=1.5T"),
        ("disk:nvme>=1.5T", Requirement(min_disk_tb=1.5, disk_type="NVME"), "disk:nvme>=1.5T"),
        ("disk:NVMe", Requirement(disk_type="NVME"), "disk:nvme"),
        ("disk:hdd>=100T", Requirement(min_disk_tb=100, disk_type="HDD"), "disk:hdd>=100T"),
        ("nic>=25", Requirement(min_nic_gbps=25), "nic>=25"),
        ("nic>=100G", Requirement(min_nic_gbps=100), "nic>=100"),
        ("arch=aarch64", Requirement(arch="aarch64"), "arch=aarch64"),
        ("arch==x86_64", Requirement(arch="x86_64"), "arch=x86_64"),
        ("nvme", Requirement(traits=["nvme"]), "nvme"),
        ("nvme,nvme,avx512", Requirement(traits=["avx512", "nvme"]), "avx512,nvme"),
        ("!fpga", Requirement(forbidden=["fpga"]), "!fpga"),
        ("! fpga", Requirement(forbidden=["fpga"]), "!fpga"),
        ("gpu-l40s|gpu-a100", Requirement(any_of=[["gpu-a100", "gpu-l40s"]]), "gpu-a100|gpu-l40s"),
        ("gpu-a100 | gpu-l40s", Requirement(any_of=[["gpu-a100", "gpu-l40s"]]), "gpu-a100|gpu-l40s"),
        # A trait named like a key is still a trait (the demo has a "gpu" trait).
        ("gpu", Requirement(traits=["gpu"]), "gpu"),
        ("disk", Requirement(traits=["disk"]), "disk"),
        # One alternative is simply required; a group with a required trait is always met.
        ("nvme|nvme", Requirement(traits=["nvme"]), "nvme"),
        ("nvme,nvme|ssd", Requirement(traits=["nvme"]), "nvme"),
    ],
)
def test_compact_terms(text, expected, compact):
    requirement = Requirement.parse(text)
    assert requirement == expected
    assert hash(requirement) == hash(expected)
    assert requirement.to_compact() == compact
    assert Requirement.parse(compact) == requirement


@pytest.mark.parametrize(
    "text, description",
    [
        ("", "any host"),
        ("cores>=1", "≥ 1 core"),
        ("ram>=1Ti", "≥ 1 TiB RAM"),
        ("ram>=2048", "≥ 2 TiB RAM"),
        ("ram>=1536", "≥ 1536 GiB RAM"),
        ("gpu:nvidia-l40s", "1× nvidia-l40s"),
        ("disk>=2T", "≥ 2 TB disk"),
        ("disk>=500G", "≥ 500 GB disk"),
        ("disk:ssd", "an SSD disk"),
        ("disk:hdd>=96T", "≥ 96 TB HDD disk"),
        ("a|b|c", "a, b or c"),
        ("!fpga,!gpu", "no fpga, no gpu"),
    ],
)
def test_descriptions_for_people(text, description):
    assert Requirement.parse(text).describe() == description


def test_canonical_form_makes_equal_requirements_equal_and_hash_equal():
    one = Requirement(
        traits=["nvme", "avx512", "nvme"], any_of=[("b", "a"), ["a", "b"]], accelerators=[("y", 1), ("x", 2)]
    )
    other = Requirement(traits=("avx512", "nvme"), any_of=(("a", "b"),), accelerators=(("x", 2), ("y", 1)))
    assert one == other and hash(one) == hash(other)
    assert one.traits == ("avx512", "nvme") and one.accelerators == (("x", 2), ("y", 1))
    assert {one: "cached"}[other] == "cached"
    assert Requirement.parse("!fpga,cores>=8") == Requirement.parse("cores >= 8 , !fpga")
    assert Requirement(min_cores=64.0) == Requirement(min_cores=64) and Requirement(min_cores=64.0).min_cores == 64


def test_any_is_the_empty_requirement():
    assert Requirement() == Requirement.ANY and Requirement.ANY.is_any
    assert Requirement.ANY.to_json() == {} and Requirement.ANY.to_compact() == ""
    assert Requirement.from_json({}) == Requirement.ANY and Requirement.parse(None) == Requirement.ANY
    assert Requirement.ANY.clauses() == []
    assert Requirement.ANY.matches(host()) and Requirement.ANY.matches(host(hardware=None))
    assert not Requirement.parse("cores>=64").is_any


# --------------------------------------------------------------------------- compact mistakes


@pytest.mark.parametrize(
    "text, message, position",
    [
        ("core>=64", "unknown key 'core'; did you mean 'cores'?", 0),
        ("cores>=64, rma>=512Gi", "unknown key 'rma'; did you mean 'ram'?", 11),
        ("memory>=512Gi", "unknown key 'memory'; did you mean 'ram'?", 0),
        ("cpus>=8", "unknown key 'cpus'; did you mean 'cores'?", 0),
        ("gpux:nvidia-a100>=4", "unknown key 'gpux'; did you mean 'gpu'?", 0),
        ("colour=red", "unknown key 'colour'; known: accel, arch, cores, disk, gpu, nic, ram", 0),
        (">=64", "a key is missing", 0),
        ("cores>64", "only minimums: use cores>=64", 0),
        ("cores<=64", "only minimums: use cores>=64", 0),
        ("cores=64", "only minimums: use cores>=64", 0),
        ("cores=>64", "only minimums: use cores>=64", 0),
        ("ram<1Ti", "only minimums: use ram>=1Ti", 0),
        ("nvme,gpu:nvidia-a100>4", "only minimums: use gpu:nvidia-a100>=4", 5),
        ("disk:nvme<2T", "only minimums: use disk:nvme>=2T", 0),
        ("cores>=64,cores>=2", "cores is given twice (first at character 1)", 10),
        ("disk>=2T,disk:nvme", "disk is given twice", 9),
        ("gpu:x>=2,accel:x>=4", "gpu:x is given twice", 9),
        ("arch=x86_64,arch=aarch64", "arch is given twice", 12),
        (
            "ram>=512G",
            "ram: unknown unit 'G': RAM is in binary units Gi or Ti, e.g. ram>=512Gi; did you mean 'ram>=512Gi'?",
            0,
        ),
        ("ram>=1TB", "did you mean 'ram>=1Ti'?", 0),
        (
            "disk>=2Ti",
            "disk: unknown unit 'Ti': disk sizes are decimal, G or T, e.g. disk>=2T; did you mean 'disk>=2T'?",
            0,
        ),
        ("disk>=2P", "disk: unknown unit 'P'", 0),
        ("nic>=25Mb", "nic: unknown unit 'Mb': NIC speed is in Gbit/s", 0),
        ("cores>=64k", "cores: a plain number without a unit", 0),
        ("cores>=", "cores: a number is missing after >=", 0),
        ("cores>=lots", "cores: 'lots' is not a number, e.g. cores>=64", 0),
        ("cores>=-4", "cores: '-4' is not a number", 0),
        ("cores>=1e3", "cores: '1e3' is not a number", 0),
        ("cores>=0", "cores: must be a whole number ≥ 1", 0),
        ("cores>=2.5", "cores: must be a whole number ≥ 1", 0),
        ("cores>=100000", "cores: must be at most 65,536", 0),
        ("ram>=0.5", "ram: must be a whole number of GiB ≥ 1", 0),
        ("ram>=5000Ti", "ram: must be at most 1,024Ti", 0),
        ("disk>=1.2345T", "disk: must be a whole number of GB ≥ 1", 0),
        ("disk>=0", "disk: must be a whole number of GB ≥ 1", 0),
        ("disk>=200000T", "disk: must be at most 100,000T", 0),
        ("disk", None, None),  # a trait named disk: not an error (checked below)
        ("disk:nvm", "unknown disk type 'nvm'; did you mean 'nvme'?", 0),
        ("disk:tape>=1T", "unknown disk type 'tape'", 0),
        ("disk>", "only minimums: use disk>=…", 0),
        ("nic>=0", "nic: must be a whole number ≥ 1", 0),
        ("nic:eth0>=25", "nic takes no ':' part", 0),
        ("gpu>=4", "gpu needs an accelerator type, e.g. gpu:nvidia-a100>=4", 0),
        ("gpu:>=4", "gpu needs an accelerator type", 0),
        ("gpu:NVIDIA-A100>=4", "'NVIDIA-A100' is not an accelerator type", 0),
        ("gpu:nvidia-a100>=0", "gpu:nvidia-a100: must be a whole number ≥ 1", 0),
        ("gpu:nvidia-a100>=65", "gpu:nvidia-a100: must be at most 64", 0),
        ("arch>=aarch64", "arch takes '=': arch=aarch64", 0),
        ("arch=ARM 64", "arch: 'ARM 64' is not an architecture name", 0),
        ("cores 64", "cores needs a value: cores>=64", 0),
        ("cores", None, None),
        ("GPU A100", "'GPU A100' is not a trait name (lowercase letters, digits and '-')", 0),
        ("nvme,-fpga", "'-fpga' is not a trait name", 5),
        ("fpga,!fpga", "a trait cannot be both required and forbidden: fpga", 5),
        ("!fpga,cores>=2,fpga", "a trait cannot be both required and forbidden: fpga", 15),
        ("a|b,!b", "a trait cannot be both forbidden and one of a group: b", 4),
        ("!", "'' is not a trait name", 0),
        ("!a|b", "'!' forbids one trait: write !a,!b", 0),
        ("!cores>=64", "only traits can be forbidden", 0),
        ("a|!b", "a one-of group cannot forbid a trait", 0),
        ("a||b", "an empty alternative in a one-of group", 0),
        ("a|B", "'B' is not a trait name", 0),
        ("cores>=64,,nvme", "an empty term: remove the extra comma", 10),
        ("cores>=64,", "an empty term", 10),
        ("cores>=64;ram>=1", "cores: '64;ram>=1' is not a number", 0),
    ],
)
def test_compact_mistakes_are_explained_with_a_position(text, message, position):
    if message is None:
        Requirement.parse(text)  # a trait with a key's name
        return
    with pytest.raises(RequirementError) as error:
        Requirement.parse(text)
    assert message in error.value.message
    assert error.value.position == position
    assert str(error.value).endswith(f"(at character {position + 1})")
    assert error.value.pointer() == f"{text}\n{' ' * position}^"


def test_compact_errors_name_the_json_field_where_there_is_one():
    cases = {
        "cores>=0": "min_cores",
        "ram>=1G": "min_ram_gib",
        "disk:nvm": "disk_type",
        "nic>=25Mb": "min_nic_gbps",
        "gpu:a>=0": "accelerators",
        "arch=X": "arch",
        "fpga,!fpga": "forbidden",
        "GPU A100": "traits",
        "cores>=1,cores>=2": "min_cores",
        "core>=1": None,
    }
    for text, field in cases.items():
        with pytest.raises(RequirementError) as error:
            Requirement.parse(text)
        assert error.value.field == field, text


def test_overlong_text_is_refused():
    text = ",".join(f"trait-{i}" for i in range(400))
    assert len(text) > MAX_TEXT_LENGTH
    with pytest.raises(RequirementError, match="longer than 2,000 characters") as error:
        Requirement.parse(text)
    assert error.value.position == MAX_TEXT_LENGTH


def test_a_requirement_too_long_to_write_down_cannot_be_made():
    with pytest.raises(RequirementError, match="longer than 2,000 characters as text"):
        Requirement(traits=[f"{'t' * 50}-{i}" for i in range(40)])


def test_compact_text_must_be_text():
    with pytest.raises(RequirementError, match="must be text"):
        Requirement.parse(64)


# --------------------------------------------------------------------------- JSON mistakes


@pytest.mark.parametrize(
    "data, message, field",
    [
        ([], 'a requirement must be a JSON object, e.g. {"min_cores": 64}', None),
        ("cores>=64", "a requirement must be a JSON object", None),
        (None, "a requirement must be a JSON object", None),
        ({"trait": ["nvme"]}, "unknown key 'trait'; did you mean 'traits'?", "trait"),
        ({"min_cpus": 8}, "unknown key 'min_cpus'; did you mean 'min_cores'?", "min_cpus"),
        ({"colour": "red"}, "unknown key 'colour'; known: accelerators, any_of, arch,", "colour"),
        ({"min_ram_gib": 0}, "min_ram_gib: must be a whole number ≥ 1", "min_ram_gib"),
        ({"min_ram_gib": "512"}, "min_ram_gib: must be a whole number ≥ 1", "min_ram_gib"),
        ({"min_ram_gib": 1.5}, "min_ram_gib: must be a whole number ≥ 1", "min_ram_gib"),
        ({"min_ram_gib": True}, "min_ram_gib: must be a whole number ≥ 1", "min_ram_gib"),
        ({"min_cores": 10**6}, "min_cores: must be at most 65,536", "min_cores"),
        ({"min_nic_gbps": -1}, "min_nic_gbps: must be a whole number ≥ 1", "min_nic_gbps"),
        ({"traits": "nvme"}, "traits: must be a list of trait names", "traits"),
        (
            {"traits": ["GPU A100"]},
            "traits[0]: 'GPU A100' is not a trait name (lowercase letters, digits and '-')",
            "traits",
        ),
        ({"traits": ["nvme\n"]}, "traits: 'nvme\\n' is not a trait name", "traits"),
        ({"forbidden": ["ok", 5]}, "forbidden[1]: 5 is not a trait name", "forbidden"),
        (
            {"traits": ["fpga"], "forbidden": ["fpga"]},
            "a trait cannot be both required and forbidden: fpga",
            "forbidden",
        ),
        (
            {"any_of": [["a", "b"]], "forbidden": ["b"]},
            "a trait cannot be both forbidden and one of a group: b",
            "forbidden",
        ),
        ({"any_of": ["a", "b"]}, "any_of[0]: must be a list of trait names", "any_of"),
        ({"any_of": [[]]}, "any_of[0]: a group needs at least one trait", "any_of"),
        ({"any_of": [["ok", "Not OK"]]}, "any_of[0][1]: 'Not OK' is not a trait name", "any_of"),
        ({"accelerators": {"nvidia-a100": 4}}, "accelerators: must be a list like", "accelerators"),
        ({"accelerators": ["nvidia-a100"]}, "accelerators[0]: must be an object like", "accelerators"),
        ({"accelerators": [{"type": "nvidia-a100"}]}, "accelerators[0]: 'count' is missing", "accelerators"),
        (
            {"accelerators": [{"type": "x", "cnt": 2}]},
            "accelerators[0]: unknown key 'cnt'; did you mean 'count'?",
            "accelerators",
        ),
        (
            {"accelerators": [{"type": "NVIDIA", "count": 2}]},
            "accelerators[0].type: 'NVIDIA' is not an accelerator type",
            "accelerators",
        ),
        (
            {"accelerators": [{"type": "x", "count": 0}]},
            "accelerators[0].count: must be a whole number ≥ 1",
            "accelerators",
        ),
        ({"accelerators": [{"type": "x", "count": 65}]}, "accelerators[0].count: must be at most 64", "accelerators"),
        (
            {"accelerators": [{"type": "x", "count": 1}, {"type": "x", "count": 2}]},
            "accelerators: x is listed twice",
            "accelerators",
        ),
        ({"min_disk_tb": 0}, "min_disk_tb: must be a number of TB > 0", "min_disk_tb"),
        ({"min_disk_tb": "2T"}, "min_disk_tb: must be a number of TB > 0", "min_disk_tb"),
        ({"min_disk_tb": 1.2345}, "min_disk_tb: at most 3 decimals (whole GB)", "min_disk_tb"),
        ({"min_disk_tb": 10**9}, "min_disk_tb: must be at most 100,000", "min_disk_tb"),
        ({"disk_type": "nvme"}, "disk_type: 'nvme' is not a disk type (HDD, SSD or NVME)", "disk_type"),
        ({"arch": "X86_64"}, "arch: 'X86_64' is not an architecture name (lowercase, e.g. x86_64 or aarch64)", "arch"),
        ({"arch": 64}, "arch: 64 is not an architecture name", "arch"),
        ({"traits": [f"t{i}" for i in range(65)]}, "traits: at most 64 entries", "traits"),
    ],
)
def test_json_mistakes_name_the_field(data, message, field):
    with pytest.raises(RequirementError) as error:
        Requirement.from_json(data)
    assert message in error.value.message
    assert error.value.field == field
    assert error.value.position is None and error.value.pointer() == ""


def test_json_reports_the_first_field_first():
    with pytest.raises(RequirementError, match=r"^traits"):
        Requirement.from_json({"arch": "X", "min_cores": 0, "traits": ["Bad"]})


def test_json_nulls_mean_not_set_and_duplicates_collapse():
    data = {"min_cores": None, "arch": None, "disk_type": None, "traits": ["b", "a", "a"], "forbidden": []}
    assert Requirement.from_json(data) == Requirement(traits=["a", "b"])
    assert Requirement.from_json({"min_cores": 64.0}).to_json() == {"min_cores": 64}


def test_json_disk_type_alone_means_one_disk_of_that_type():
    requirement = Requirement.from_json({"disk_type": "SSD"})
    assert requirement.to_compact() == "disk:ssd" and requirement.describe() == "an SSD disk"
    assert requirement.matches(host(disks=[{"type": "SSD", "size_bytes": 1}]))
    assert not requirement.matches(host())


def test_the_schema_is_valid_draft_2020_12_and_matches_the_trait_rule():
    from hosts.models import TRAIT_NAME

    jsonschema.Draft202012Validator.check_schema(REQUIREMENT_SCHEMA)
    assert REQUIREMENT_SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert TRAIT_NAME.regex.pattern == f"^{TRAIT_PATTERN}$"
    json.dumps(REQUIREMENT_SCHEMA)  # a plain JSON document, publishable as is


def test_constructing_a_bad_requirement_directly_is_refused():
    with pytest.raises(RequirementError, match="traits: must be a list of trait names"):
        Requirement(traits="nvme")
    with pytest.raises(RequirementError, match="accelerators: the count of x: must be a whole number"):
        Requirement(accelerators=[("x", 0)])
    with pytest.raises(RequirementError, match="accelerators: must be a list of"):
        Requirement(accelerators=[("x",)])
    with pytest.raises(RequirementError, match="disk_type: 'nvme' is not a disk type"):
        Requirement(disk_type="nvme")


# --------------------------------------------------------------------------- matching (Python)


@pytest.mark.parametrize(
    "text, matches",
    [
        ("cores>=128", True),
        ("cores>=129", False),
        ("ram>=1Ti", True),
        ("ram>=1025", False),
        ("gpu:nvidia-a100>=8", True),
        ("gpu:nvidia-a100>=9", False),
        ("gpu:nvidia-l40s", False),
        ("disk>=18T", True),  # all disks together
        ("disk>=18.001T", False),
        ("disk:nvme>=2T", True),
        ("disk:nvme>=2.001T", False),  # only the NVMe disk counts
        ("disk:hdd>=16T", True),
        ("disk:ssd", False),
        ("nic>=200", True),
        ("nic>=400", False),
        ("arch=x86_64", True),
        ("arch=aarch64", False),
        ("nvme,gpu-a100", True),
        ("nvme,fpga", False),
        ("!fpga", True),
        ("!gpu", False),
        ("gpu-l40s|gpu-a100", True),
        ("gpu-l40s|fpga", False),
    ],
)
def test_matches_a_host(text, matches):
    requirement = Requirement.parse(text)
    assert requirement.matches(host()) is matches
    assert all(c.test(host()) for c in requirement.clauses()) is matches


def test_a_host_not_inspected_matches_only_any():
    uninspected = host(hardware=None)
    assert Requirement.ANY.matches(uninspected)
    for text in ("nvme", "!fpga", "cores>=1"):
        assert not Requirement.parse(text).matches(uninspected)


def test_architecture_is_compared_case_insensitively():
    assert Requirement.parse("arch=x86_64").matches(host(architecture="X86_64"))


def test_accelerator_entries_of_one_type_add_up():
    split = host(accelerators=[{"type": "nvidia-a100", "count": 4}, {"type": "nvidia-a100", "count": 4}])
    assert Requirement.parse("gpu:nvidia-a100>=8").matches(split)


def test_odd_host_data_does_not_match_instead_of_crashing():
    odd = host(cpu_count=None, ram_mib=None, disks=[None, {"type": "NVME", "size_bytes": "big"}], accelerators=None)
    assert not Requirement.parse("cores>=1").matches(odd)
    assert not Requirement.parse("ram>=1").matches(odd)
    assert not Requirement.parse("disk:nvme>=1T").matches(odd)
    assert Requirement.parse("disk:nvme").matches(odd)
    assert not Requirement.parse("gpu:x").matches(odd)


def test_clauses_explain_why_a_host_does_not_qualify():
    requirement = Requirement.parse("ram>=2Ti,gpu:nvidia-a100>=4,nvme,gpu-a100|gpu-l40s,!fpga,arch=x86_64")
    clauses = requirement.clauses()
    assert all(isinstance(c, Clause) for c in clauses)
    assert [(c.key, c.label) for c in clauses] == [
        ("inspected", "hardware inspected"),
        ("ram>=2Ti", "≥ 2 TiB RAM"),
        ("gpu:nvidia-a100>=4", "4× nvidia-a100"),
        ("arch=x86_64", "architecture x86_64"),
        ("nvme", "trait nvme"),
        ("gpu-a100|gpu-l40s", "one of gpu-a100, gpu-l40s"),
        ("!fpga", "not fpga"),
    ]
    small = host(ram_mib=512 * 1024, traits=["gpu-a100", "nvme", "fpga"])
    assert [c.label for c in clauses if not c.test(small)] == ["≥ 2 TiB RAM", "not fpga"]
    assert not requirement.matches(small)


# --------------------------------------------------------------------------- matching a real fleet (PostgreSQL)

FLEET_TEXTS = [
    "",
    "gpu:nvidia-a100>=8",
    "gpu:nvidia-a100>=9",
    "gpu:nvidia-l40s>=4,!gpu-a100",
    "gpu-a100|gpu-l40s",
    "cores>=96,ram>=1Ti",
    "ram>=512Gi,!gpu",
    "disk:hdd>=192T",
    "disk:hdd>=193T",
    "disk:nvme>=19.2T",
    "disk:nvme>=19.201T",
    "disk>=1.92T",
    "disk:ssd",
    "nic>=100,nvme",
    "nic>=201",
    "arch=x86_64,avx512",
    "arch=aarch64",
    "!nvme",
    "fpga",
    "hdd-dense|highmem,fast-net",
    "gpu:xilinx-u250",
]


@pytest.fixture
def fleet(db):
    from tests.inventory import make_fleet

    return make_fleet(16, prefix="req")


def _names(hosts) -> set[str]:
    return {h.name for h in hosts}


def test_the_fleet_selects_the_right_hosts(fleet):
    by_profile = {
        name: {f"req{i:05d}" for i in range(16) if i % 8 in indexes}
        for name, indexes in {
            "general": (0, 1, 7),
            "highmem": (2,),
            "gpu-a100": (3,),
            "gpu-l40s": (4,),
            "fpga": (5,),
            "storage": (6,),
        }.items()
    }

    def selected(text):
        return _names(h for h in fleet if Requirement.parse(text).matches(h))

    assert selected("gpu:nvidia-a100>=8") == by_profile["gpu-a100"]
    assert selected("gpu:nvidia-a100>=9") == set()
    assert selected("gpu-a100|gpu-l40s") == by_profile["gpu-a100"] | by_profile["gpu-l40s"]
    assert selected("disk:hdd>=192T") == by_profile["storage"]
    assert selected("ram>=1Ti") == by_profile["highmem"] | by_profile["gpu-a100"]
    # The FPGA hosts are still inspecting: only ANY selects them.
    assert selected("") == _names(fleet)
    assert selected("!nvme").isdisjoint(by_profile["fpga"])
    assert by_profile["fpga"] <= selected("")


def test_to_q_never_excludes_a_matching_host_and_matches_is_exact(fleet, django_assert_num_queries):
    from hosts.models import Host

    hosts = Host.objects.filter(name__startswith="req")
    for text in FLEET_TEXTS:
        requirement = Requirement.parse(text)
        exact = _names(h for h in fleet if requirement.matches(h))
        with django_assert_num_queries(1):
            prefiltered = list(hosts.filter(requirement.to_q()))
        assert exact <= _names(prefiltered), text
        assert _names(h for h in prefiltered if requirement.matches(h)) == exact, text
    # The prefilter does real work: accelerator counts are the only thing left to Python here.
    assert _names(hosts.filter(Requirement.parse("gpu:nvidia-a100>=9").to_q())) == _names(
        h for h in fleet if h.accelerators and h.accelerators[0]["type"] == "nvidia-a100"
    )
    assert not hosts.filter(Requirement.parse("cores>=96,!gpu-a100,!highmem").to_q()).exists()


# --------------------------------------------------------------------------- properties

SCHEMA_VALIDATOR = jsonschema.Draft202012Validator(REQUIREMENT_SCHEMA)
traits = st.from_regex(TRAIT_PATTERN, fullmatch=True)
accelerator_types = st.from_regex(ACCELERATOR_TYPE_PATTERN, fullmatch=True)
arches = st.from_regex(ARCH_PATTERN, fullmatch=True)


@st.composite
def requirements(draw):
    """Any valid requirement (names and numbers from their whole ranges)."""
    pool = draw(st.lists(traits, unique=True, max_size=10))
    return Requirement(**_trait_fields(draw, pool), **_other_fields(draw, accelerator_types, arches, WIDE))


# Thresholds around what the lab fleet has (64/96/128 cores; 256…1024 GiB; 2×1.92 TB NVMe…), so
# generated requirements select some hosts and miss others by a little.
WIDE = {
    "cores": st.integers(1, 65_536),
    "ram": st.integers(1, 1_048_576),
    "count": st.integers(1, 64),
    "disk_gb": st.integers(1, 100_000_000),
    "nic": st.integers(1, 10_000),
}
NEAR_FLEET = {
    "cores": st.sampled_from((1, 24, 25, 64, 65, 96, 128, 129)),
    "ram": st.sampled_from((1, 256, 257, 384, 512, 1024, 1025)),
    "count": st.sampled_from((1, 2, 3, 4, 5, 8, 9)),
    "disk_gb": st.sampled_from((1, 960, 1920, 1921, 3840, 19_200, 19_201, 192_000, 192_001)),
    "nic": st.sampled_from((1, 10, 25, 26, 100, 200, 201)),
}
FLEET_TRAITS = ("gpu", "gpu-a100", "gpu-l40s", "fpga", "nvme", "highmem", "avx512", "hdd-dense", "fast-net")
FLEET_ACCELERATORS = st.sampled_from(("nvidia-a100", "nvidia-l40s", "xilinx-u250"))


def _trait_fields(draw, pool) -> dict:
    roles = [draw(st.sampled_from(("traits", "forbidden", "group", "unused"))) for _ in pool]
    chosen = {
        role: [t for t, r in zip(pool, roles, strict=True) if r == role] for role in ("traits", "forbidden", "group")
    }
    groups = []
    if len(chosen["group"]) >= 2:
        groups = draw(st.lists(st.lists(st.sampled_from(chosen["group"]), min_size=1, max_size=3), max_size=3))
    return {"traits": chosen["traits"], "forbidden": chosen["forbidden"], "any_of": groups}


def _other_fields(draw, accelerator_names, arch_names, numbers) -> dict:
    def sometimes(strategy):
        return draw(st.none() | st.none() | strategy)

    accelerators = draw(st.dictionaries(accelerator_names, numbers["count"], max_size=2))
    disk_gb = sometimes(numbers["disk_gb"])
    return {
        "min_cores": sometimes(numbers["cores"]),
        "min_ram_gib": sometimes(numbers["ram"]),
        "accelerators": list(accelerators.items()),
        "min_disk_tb": None if disk_gb is None else disk_gb / 1000,
        "disk_type": sometimes(st.sampled_from(("HDD", "SSD", "NVME"))),
        "min_nic_gbps": sometimes(numbers["nic"]),
        "arch": sometimes(arch_names),
    }


@st.composite
def fleet_requirements(draw):
    """Requirements in the lab fleet's terms (its traits, accelerators and sizes)."""
    pool = draw(st.lists(st.sampled_from(FLEET_TRAITS), unique=True, max_size=4))
    return Requirement(
        **_trait_fields(draw, pool),
        **_other_fields(draw, FLEET_ACCELERATORS, st.sampled_from(("x86_64", "aarch64")), NEAR_FLEET),
    )


@settings(max_examples=300)
@given(requirements())
def test_compact_text_round_trips(requirement):
    text = requirement.to_compact()
    assert len(text) <= MAX_TEXT_LENGTH
    assert Requirement.parse(text) == requirement
    assert Requirement.parse(text.replace(",", " , ")) == requirement


@settings(max_examples=300)
@given(requirements())
def test_json_round_trips_and_follows_the_schema(requirement):
    data = requirement.to_json()
    SCHEMA_VALIDATOR.validate(data)
    assert Requirement.from_json(json.loads(json.dumps(data))) == requirement
    assert list(data) == [key for key in REQUIREMENT_SCHEMA["properties"] if key in data]
    assert Requirement.parse(Requirement.from_json(data).to_compact()) == requirement


@given(requirements())
def test_describe_and_clauses_never_crash(requirement):
    assert requirement.describe()
    assert len(requirement.clauses()) >= (0 if requirement.is_any else 1)
    assert str(requirement) == requirement.describe()


@given(requirements(), st.booleans())
def test_matches_is_all_clauses(requirement, inspected):
    subject = host(hardware={} if inspected else None)
    assert requirement.matches(subject) == all(c.test(subject) for c in requirement.clauses())


@settings(max_examples=500)
@given(st.text(max_size=200))
def test_garbage_text_raises_only_requirement_error(text):
    try:
        Requirement.parse(text)
    except RequirementError as error:
        assert error.message


@settings(max_examples=500)
@given(st.text(alphabet="cores ramgpuaccel:disknvmeicarch=<>!|,.0123456789GiTtB-_x", max_size=60))
def test_text_close_to_the_grammar_raises_only_requirement_error(text):
    try:
        requirement = Requirement.parse(text)
    except RequirementError as error:
        assert error.position is not None and 0 <= error.position <= len(text)
    else:
        assert Requirement.parse(requirement.to_compact()) == requirement


@settings(max_examples=300)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "traits",
                        "forbidden",
                        "any_of",
                        "min_cores",
                        "accelerators",
                        "type",
                        "count",
                        "min_disk_tb",
                        "disk_type",
                        "arch",
                        "x",
                    ]
                ),
                children,
                max_size=4,
            )
        ),
        max_leaves=10,
    )
)
def test_garbage_json_raises_only_requirement_error(data):
    try:
        Requirement.from_json(data)
    except RequirementError as error:
        assert error.message


def test_to_q_is_a_superset_for_generated_requirements(fleet):
    from hosts.models import Host

    hosts = Host.objects.filter(name__startswith="req")

    selective = []  # requirements that select some hosts but not all

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(fleet_requirements())
    def check(requirement):
        exact = _names(h for h in fleet if requirement.matches(h))
        prefiltered = list(hosts.filter(requirement.to_q()))
        assert exact <= _names(prefiltered)
        assert _names(h for h in prefiltered if requirement.matches(h)) == exact
        if 0 < len(exact) < len(fleet):
            selective.append(requirement)

    check()
    assert len(selective) >= 15  # the property was not proved on empty selections only


def test_merge_asks_for_both_and_names_a_contradiction():
    base = Requirement.parse("cores>=32,gpu:nvidia-a100>=4,!fpga")
    merged = base.merge(Requirement.parse("cores>=64,ram>=512Gi,gpu:nvidia-a100>=2,nvme"))
    assert merged == Requirement.parse("cores>=64,ram>=512Gi,gpu:nvidia-a100>=4,!fpga,nvme")
    assert base.merge(Requirement.ANY) == base
    with pytest.raises(RequirementError, match="required and forbidden"):
        base.merge(Requirement.parse("fpga"))
    with pytest.raises(RequirementError, match="architecture"):
        Requirement.parse("arch=x86_64").merge(Requirement.parse("arch=aarch64"))
