"""Traits and costs of hosts: derived columns, recomputed whenever what they depend on changes.

A host's ``traits`` are its ``rule_traits`` (every enabled :class:`~hosts.models.TraitRule`
whose rule matches its hardware) plus its ``manual_traits``; its ``cost_per_hour`` is the fleet's
cost model (:mod:`hosts.costs`) applied to its hardware and traits, or the operator's override.
Both are stored so the host list, the API and the allocator filter and sort in SQL.

:func:`hosts_classify` recomputes them for some hosts (after a sync, an operator's edit) or for
the whole fleet (a rule or the cost model changed): one query to load, one bulk UPDATE per
:data:`~hosts.services.BATCH` changed hosts. The rules are compiled once per call, so
reclassifying 10,000 hosts is a few hundred milliseconds of Python.

After a change of traits, :func:`trait_labels_wanted` says which ``teapot.io/trait-<name>``
labels each BareMetalHost should carry; the ``teapot.hosts.trait-labels`` task writes the
difference through the gateway (level-triggered: run it again and it writes nothing).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from hosts.costs import Cost, CostModel, CostModelError, host_cost
from hosts.models import TRAIT_LABEL_PREFIX, FleetSettings, Host, TraitRule
from hosts.rules import Rule, RuleError, compile_rule, facts_from_hardware

log = logging.getLogger(__name__)

# The host's own inputs and outputs of classification, besides its hardware.
CLASSIFIED_FIELDS = ("manual_traits", "rule_traits", "traits", "cost_override", "cost_per_hour", "hardware_class")
# Everything classification reads and writes.
CLASSIFY_FIELDS = (
    "id",
    "cpu_count",
    "cpu_mhz",
    "cpu_model",
    "cpu_flags",
    "architecture",
    "ram_mib",
    "disks",
    "nics",
    "accelerators",
    "system_vendor",
    "system_product",
    "key_erase_capable",
    "hardware",
    "disk_total_bytes",
    *CLASSIFIED_FIELDS,
)


@dataclass(frozen=True)
class Classifier:
    rules: tuple[tuple[str, Rule], ...]
    cost_model: CostModel

    @classmethod
    def current(cls) -> Classifier:
        """The enabled rules (a stored rule that no longer compiles is skipped and logged) and the cost model."""
        rules = []
        for name, text in TraitRule.objects.filter(enabled=True).values_list("name", "rule"):
            try:
                rules.append((name, compile_rule(text)))
            except RuleError as exc:
                log.error("trait rule %s cannot be used: %s", name, exc)
        try:
            model = FleetSettings.load().get_cost_model()
        except CostModelError as exc:
            log.error("fleet cost model cannot be used (%s); using the default", exc)
            model = CostModel()
        return cls(tuple(rules), model)

    def rule_traits(self, host: Host) -> list[str]:
        if host.hardware is None:
            return []  # not inspected: nothing is known, nothing matches
        facts = host_facts(host)
        return sorted(name for name, rule in self.rules if rule.matches(facts))

    def cost(self, host: Host, traits: Iterable[str] | None = None) -> Cost:
        return host_cost_of(host, self.cost_model, traits)


def host_facts(host: Host) -> dict:
    inspected = host.hardware is not None
    return facts_from_hardware(
        cpu_count=host.cpu_count if inspected else None,
        cpu_mhz=host.cpu_mhz if inspected else None,
        cpu_model=host.cpu_model,
        cpu_flags=host.cpu_flags or (),
        arch=host.architecture,
        ram_mib=host.ram_mib if inspected else None,
        disks=host.disks or (),
        nics=host.nics or (),
        accelerators=host.accelerators or (),
        vendor=host.system_vendor,
        product=host.system_product,
        key_erase=host.key_erase_capable,
    )


def host_cost_of(host: Host, model: CostModel, traits: Iterable[str] | None = None) -> Cost:
    return host_cost(
        model,
        cores=host.cpu_count,
        ram_gib=host.ram_mib / 1024 if host.ram_mib else 0,
        disk_tb=(host.disk_total_bytes or 0) / 1e12,
        accelerators=host.accelerators or (),
        traits=host.traits if traits is None else traits,
        override=host.cost_override,
    )


def hosts_classify(
    *,
    host_ids: Iterable[int] | None = None,
    hosts: Iterable[Host] | None = None,
    classifier: Classifier | None = None,
) -> int:
    """Recompute traits and cost; returns how many hosts changed.

    ``hosts``: these in-memory hosts (the sync's, with every column :data:`CLASSIFY_FIELDS` names
    loaded) — no query to load them. ``host_ids``: these hosts, loaded in one query. Neither:
    every active host. Hosts with the same hardware are classified once (most fleets are a few
    hardware models many times over).
    """
    from hosts.services import _bulk_update  # the linear UPDATE … FROM jsonb_to_recordset

    classifier = classifier or Classifier.current()
    whole_fleet = hosts is None and host_ids is None
    if hosts is None:
        queryset = Host.objects.filter(retired_at__isnull=True).only(*CLASSIFY_FIELDS)
        if host_ids is not None:
            ids = list(host_ids)
            if not ids:
                return 0
            queryset = queryset.filter(pk__in=ids)
        hosts = queryset.iterator(chunk_size=2000)
    now = timezone.now()
    changed = []
    memo: dict[str, tuple[list[str], list[str], Decimal, str]] = {}
    for host in hosts:
        hardware_key = _hardware_key(host)
        key = json.dumps([hardware_key, sorted(host.manual_traits or ()), str(host.cost_override)])
        if key not in memo:
            rule_traits = classifier.rule_traits(host)
            traits = sorted(set(rule_traits) | set(host.manual_traits or ()))
            hardware_class = hashlib.sha1(hardware_key.encode(), usedforsecurity=False).hexdigest()
            memo[key] = (rule_traits, traits, classifier.cost(host, traits).per_hour, hardware_class)
        rule_traits, traits, cost, hardware_class = memo[key]
        now_values = (host.rule_traits, host.traits, host.cost_per_hour, host.hardware_class)
        if (rule_traits, traits, cost, hardware_class) != now_values:
            host.rule_traits, host.traits, host.cost_per_hour = list(rule_traits), list(traits), cost
            host.hardware_class, host.classified_at = hardware_class, now
            changed.append(host)
    if changed:
        with transaction.atomic(savepoint=False):
            _bulk_update(changed, ("rule_traits", "traits", "cost_per_hour", "hardware_class", "classified_at"))
        # A whole-fleet reclassification (a rule or the cost model changed) is news; the sync's
        # host-by-host classification is not.
        log.log(logging.INFO if whole_fleet else logging.DEBUG, "classified hosts", extra={"changed": len(changed)})
    return len(changed)


def _hardware_key(host: Host) -> str:
    """Everything a rule, a requirement or the cost can see of the hardware, as one string
    (names, serials and MACs left out): its digest is the host's ``hardware_class``."""
    return json.dumps(
        [
            host.hardware is not None,
            host.cpu_count,
            host.cpu_mhz,
            host.cpu_model,
            sorted(host.cpu_flags or ()),
            host.architecture,
            host.ram_mib,
            [
                (d.get("type"), d.get("size_bytes"), d.get("rotational"), d.get("name"), d.get("model"))
                for d in host.disks or ()
            ],
            [(n.get("speed_gbps"), n.get("name")) for n in host.nics or ()],
            host.accelerators or [],
            host.system_vendor,
            host.system_product,
            host.key_erase_capable,
            host.disk_total_bytes,
        ],
        default=str,
    )


def reclassify_after_commit() -> None:
    """Reclassify the fleet once the current transaction commits, in the worker; then push the labels."""
    from hosts.tasks import hosts_classify_task

    transaction.on_commit(lambda: hosts_classify_task.delay())


def trait_labels_wanted(traits: Iterable[str], labels: Mapping[str, str]) -> dict[str, str | None]:
    """The label changes that make ``labels`` carry exactly ``traits`` (None removes a label)."""
    want = {f"{TRAIT_LABEL_PREFIX}{t}": "true" for t in traits}
    have = {k: v for k, v in (labels or {}).items() if k.startswith(TRAIT_LABEL_PREFIX)}
    patch: dict[str, str | None] = {k: v for k, v in want.items() if have.get(k) != v}
    patch.update({k: None for k in have if k not in want})
    return patch


def cost_lines(host: Host, model: CostModel | None = None) -> Cost:
    """The host's cost explained, for its page."""
    if model is None:
        try:
            model = FleetSettings.load().get_cost_model()
        except CostModelError:
            model = CostModel()
    return host_cost_of(host, model)
