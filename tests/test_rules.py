"""The classification rule language: the MAAS-like examples work, mistakes are explained."""

from __future__ import annotations

import pytest

from hosts.rules import RuleError, compile_rule, facts_from_hardware

GPU_HOST = facts_from_hardware(
    cpu_count=128,
    cpu_mhz=2450.0,
    cpu_model="AMD EPYC 7763",
    cpu_flags=("sse4_2", "AVX512F", "avx2"),
    arch="x86_64",
    ram_mib=1024 * 1024,
    disks=[{"name": "/dev/nvme0n1", "type": "NVME", "size_bytes": 3_840_000_000_000, "rotational": False}],
    nics=[{"name": "eth0", "speed_gbps": 100}, {"name": "eth1", "speed_gbps": 25}],
    accelerators=[{"type": "nvidia-a100", "count": 8}],
    vendor="Supermicro",
    product="AS-4124GO-NART",
    key_erase=True,
)
HDD_HOST = facts_from_hardware(
    cpu_count=32,
    ram_mib=256 * 1024,
    arch="x86_64",
    disks=[
        {"name": f"/dev/sd{c}", "type": "HDD", "size_bytes": 16_000_000_000_000, "rotational": True}
        for c in "abcdefghijkl"
    ],
    nics=[{"name": "eth0", "speed_gbps": 25}],
    vendor="Dell Inc.",
)
UNINSPECTED = facts_from_hardware(cpu_count=None)


@pytest.mark.parametrize(
    "rule, gpu, hdd",
    [
        ('accelerator(type == "nvidia-a100")', True, False),
        ('accelerator(type == "nvidia-a100") >= 4', True, False),
        ('accelerator(type == "nvidia-a100") > 8', False, False),
        ('disk(type == "NVME")', True, False),
        ("ram_gib >= 512", True, False),
        ('flag("avx512f")', True, False),
        ('disk(type == "HDD" and size_gb >= 8000) >= 8', False, True),
        ('vendor ~ "dell"', False, True),
        ('arch == "X86_64" and not accelerator()', False, True),
        ("key_erase", True, False),
        ("not key_erase", False, True),
        ("nic_speed_gbps >= 100 or disk_total_tb > 100", True, True),
        ("(cores >= 64 or ram_gib >= 1000) and gpu_count == 8", True, False),
        ("disk_count == 12", False, True),
        ("nic(speed_gbps >= 25) == 2", True, False),
        ("key_erase == true", True, False),
    ],
)
def test_rules_classify_hosts(rule, gpu, hdd):
    compiled = compile_rule(rule)
    assert compiled.matches(GPU_HOST) is gpu
    assert compiled.matches(HDD_HOST) is hdd


def test_a_host_without_hardware_data_matches_no_threshold():
    assert not compile_rule("ram_gib >= 1").matches(UNINSPECTED)
    assert not compile_rule("cores < 1000").matches(UNINSPECTED)
    assert compile_rule("not disk()").matches(UNINSPECTED)


@pytest.mark.parametrize(
    "rule, message, position",
    [
        ("", "the rule is empty", 0),
        ("ram >= 512", "unknown fact 'ram'; did you mean 'ram_gib'?", 0),
        ("ram_gib >= ", "a value is missing", 10),
        ('ram_gib >= "lots"', "this fact is a number", 11),
        ('arch >= "x86"', ">= needs a number", 5),
        ("arch == x86_64", "expected a value", 8),
        ("ram_gib", "needs a comparison", 0),
        ('disk(colour == "red")', "unknown field 'colour'", 5),
        ('disk(type == "HDD"', "expected ')'", 18),
        ("ram_gib >= 512 cores >= 2", "join conditions with 'and' / 'or'", 15),
        ("ram_gib >= 512 and", "expected a condition, found the end of the rule", 18),
        ("__import__('os')", "unknown fact '__import__'", 0),
        ("ram_gib >= 512; drop", "unexpected character ';'", 14),
        ('gpu_count ~ "8"', "~ (contains) works on text only", 10),
        ("flag(avx512f)", "expected string", 5),
        ("key_erase == 1", "true or false", 13),
    ],
)
def test_mistakes_are_explained_with_a_position(rule, message, position):
    with pytest.raises(RuleError) as error:
        compile_rule(rule)
    assert message in error.value.message
    assert error.value.position == position
    assert error.value.pointer().endswith("^")


def test_rules_are_never_evaluated_as_python():
    # Anything that is not the grammar is refused before it could run.
    for attempt in ("open('/etc/passwd')", "[].__class__", "1 if True else 2", "lambda: 1"):
        with pytest.raises(RuleError):
            compile_rule(attempt)


def test_overlong_rules_are_refused():
    with pytest.raises(RuleError, match="longer than"):
        compile_rule("cores >= 1 or " * 200 + "cores >= 1")
