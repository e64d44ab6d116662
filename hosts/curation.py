"""What operators do to hosts and to the fleet's settings: one service per action, used by the
operator pages, the admin and the API alike.

* Host fields that are the operator's own (maintenance, notes, location, manual traits, cost
  override, key erase): :func:`host_update` / :func:`hosts_set_maintenance` validate, save,
  record maintenance and trait changes in the host's history (with who and why), and
  reclassify the host.
* Actions on the BareMetalHost (power on/off, re-inspect, retire): :func:`host_action` checks
  the action makes sense now and queues ``teapot.hosts.action``; the worker asks the gateway
  (:func:`host_action_apply`) and mirrors the answer. Retiring deletes the BareMetalHost (Ironic
  deprovisions and forgets the node); the sync then marks the host retired — never deleted.
* Classification rules (:func:`trait_rule_save`, :func:`trait_rule_delete`) and the fleet settings
  (:func:`fleet_settings_update`: topology levels, cost model) reclassify the whole fleet after
  the commit.

Every refusal is a :class:`~django.core.exceptions.ValidationError` keyed by field.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from hosts import topology
from hosts.classify import CLASSIFY_FIELDS, host_facts, hosts_classify, reclassify_after_commit
from hosts.costs import CostModel, CostModelError
from hosts.enrolment import topology_levels
from hosts.models import TRAIT_NAME, FleetSettings, Host, HostStateChange, TraitRule
from hosts.rules import RuleError, compile_rule

log = logging.getLogger(__name__)

ACTIONS = {
    "power-on": "Power on",
    "power-off": "Power off",
    "inspect": "Re-inspect",
    "retire": "Retire",
}
# Provisioning states in which a re-inspection can be requested (the gateway refuses the others).
INSPECTABLE = {"available", "ready"}


def _actor(user) -> str:
    return getattr(user, "email", "") or str(user or "")


def _clean_traits(traits: Iterable[str]) -> list[str]:
    cleaned = sorted({str(t).strip().lower() for t in traits if str(t).strip()})
    for trait in cleaned:
        try:
            TRAIT_NAME(trait)
        except ValidationError as exc:
            raise ValidationError({"manual_traits": f"{trait!r}: {exc.messages[0]}"}) from exc
    return cleaned


# --------------------------------------------------------------------------- host fields


def host_update(host: Host, *, actor=None, reason: str = "", **fields: Any) -> Host:
    """Change the operator's fields of one host. Keys: maintenance, maintenance_reason, notes,
    location, manual_traits, cost_override (None clears), key_erase_capable."""
    allowed = {"maintenance", "maintenance_reason", "notes", "location", "manual_traits", "cost_override"}
    allowed.add("key_erase_capable")
    unknown = set(fields) - allowed
    if unknown:
        raise ValidationError(dict.fromkeys(unknown, "not an operator field"))
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    if "location" in fields:
        try:
            values["location"] = topology.validate_location(fields["location"] or {}, topology_levels())
        except (topology.TopologyError, AttributeError, TypeError) as exc:
            errors["location"] = str(exc) if isinstance(exc, topology.TopologyError) else "a mapping of level → value"
    if "manual_traits" in fields:
        try:
            values["manual_traits"] = _clean_traits(fields["manual_traits"] or [])
        except ValidationError as exc:
            errors.update(exc.message_dict)
    if "cost_override" in fields:
        raw = fields["cost_override"]
        if raw in (None, ""):
            values["cost_override"] = None
        else:
            try:
                amount = Decimal(str(raw))
                if not amount.is_finite() or amount < 0 or amount >= Decimal("1e8"):
                    raise InvalidOperation
                values["cost_override"] = amount.quantize(Decimal("0.0001"))
            except (InvalidOperation, ValueError):
                errors["cost_override"] = "a cost per hour ≥ 0 (empty: the cost model decides)"
    for name in ("notes", "maintenance_reason"):
        if name in fields:
            values[name] = str(fields[name] or "").strip()
    if len(values.get("maintenance_reason", "")) > 255:
        errors["maintenance_reason"] = "at most 255 characters"
    for name in ("maintenance", "key_erase_capable"):
        if name in fields:
            values[name] = bool(fields[name])
    if errors:
        raise ValidationError(errors)
    if host.retired_at is not None and set(values) - {"notes"}:
        raise ValidationError({"__all__": "the host is retired: only its notes can change"})
    with transaction.atomic():
        locked = Host.objects.select_for_update().get(pk=host.pk)
        changes = []
        now = timezone.now()
        if "maintenance" in values and values["maintenance"] != locked.maintenance:
            changes.append(
                HostStateChange(
                    host=locked,
                    field="maintenance",
                    old=str(locked.maintenance).lower(),
                    new=str(values["maintenance"]).lower(),
                    at=now,
                    actor=_actor(actor),
                    reason=(values.get("maintenance_reason") or reason)[:255],
                )
            )
            if not values["maintenance"]:
                values.setdefault("maintenance_reason", "")
        if "manual_traits" in values and values["manual_traits"] != locked.manual_traits:
            changes.append(
                HostStateChange(
                    host=locked,
                    field="traits",
                    old=",".join(locked.manual_traits)[:320],
                    new=",".join(values["manual_traits"])[:320],
                    at=now,
                    actor=_actor(actor),
                    reason=reason[:255] or "manual traits",
                )
            )
        for name, value in values.items():
            setattr(locked, name, value)
        locked.save(update_fields=[*values, "updated_at"])
        HostStateChange.objects.bulk_create(changes)
        if {"manual_traits", "cost_override", "key_erase_capable"} & set(values):
            hosts_classify(host_ids=[locked.pk])
            _labels_after_commit()
    locked.refresh_from_db()
    return locked


def hosts_set_maintenance(hosts: Iterable[Host], *, on: bool, reason: str = "", actor=None) -> int:
    """Put hosts in (or out of) maintenance in one transaction; returns how many changed."""
    reason = (reason or "").strip()[:255]
    ids = [h.pk for h in hosts]
    now = timezone.now()
    with transaction.atomic():
        changing = list(
            Host.objects.select_for_update()
            .filter(pk__in=ids, retired_at__isnull=True)
            .exclude(maintenance=on)
            .only("id", "maintenance")
        )
        Host.objects.filter(pk__in=[h.pk for h in changing]).update(
            maintenance=on, maintenance_reason=reason if on else "", updated_at=now
        )
        HostStateChange.objects.bulk_create(
            HostStateChange(
                host=h,
                field="maintenance",
                old=str(not on).lower(),
                new=str(on).lower(),
                at=now,
                actor=_actor(actor),
                reason=reason,
            )
            for h in changing
        )
    return len(changing)


# --------------------------------------------------------------------------- actions on the BMH


def action_refusal(host: Host, action: str) -> str | None:
    """Why ``action`` cannot be done to ``host`` now (None: it can)."""
    if action not in ACTIONS:
        return f"unknown action {action!r}; known: {', '.join(ACTIONS)}"
    if host.retired_at is not None:
        return "the host is retired"
    if host.deleting:
        return "the BareMetalHost is being deleted"
    if action in ("power-off", "retire") and host.consumer:
        return f"the host is in use by {host.consumer}: release it first"
    if action == "inspect" and host.provisioning_state not in INSPECTABLE:
        return f"a host can be re-inspected when available, not while {host.provisioning_state or 'new'}"
    if action == "power-on" and host.online:
        return "the host is already powered on"
    if action == "power-off" and not host.online:
        return "the host is already powered off"
    return None


def host_action(host: Host, action: str, *, actor=None, reason: str = "") -> None:
    """Check and queue an action; raises ValidationError({"action": why}) when it cannot be done."""
    from hosts.tasks import host_action_task

    why = action_refusal(host, action)
    if why:
        raise ValidationError({"action": why})
    log.info("host action requested", extra={"host": host.name, "action": action, "actor": _actor(actor)})
    if action == "retire":
        host_update(host, actor=actor, maintenance=True, maintenance_reason=reason or "retiring")
    name, namespace = host.name, host.namespace
    transaction.on_commit(lambda: host_action_task.delay(name, namespace, action))


def hosts_action(hosts: Sequence[Host], action: str, *, actor=None) -> tuple[int, list[str]]:
    """Queue ``action`` on each host that allows it; returns (queued, refusals as 'name: why')."""
    queued, refused = 0, []
    for host in hosts:
        try:
            host_action(host, action, actor=actor)
            queued += 1
        except ValidationError as exc:
            refused.append(f"{host.name}: {exc.message_dict['action'][0]}")
    return queued, refused


def host_action_apply(*, name: str, namespace: str, action: str, gateway=None) -> str:
    """The worker's half: ask the gateway, mirror what it answers."""
    from hosts.services import hosts_sync
    from teapot_portal.gateway.factory import get_gateway

    if action not in ACTIONS:
        return "invalid"
    host = Host.objects.filter(name=name, namespace=namespace, retired_at__isnull=True).first()
    if host is None:
        return "gone"
    why = action_refusal(host, action)
    if why and not (action in ("power-on", "power-off") and why.startswith("the host is already")):
        log.warning("host action dropped: %s", why, extra={"host": name, "action": action})
        return "refused"
    gateway = gateway or get_gateway()
    if action == "retire":
        gateway.delete_host(name)
        return "retiring"
    if action == "inspect":
        record = gateway.request_inspection(name)
    else:
        record = gateway.set_host_online(name, action == "power-on")
    hosts_sync(records=[record])
    return "done"


# --------------------------------------------------------------------------- labels on the BMHs


def _labels_after_commit() -> None:
    from hosts.tasks import trait_labels_task

    transaction.on_commit(lambda: trait_labels_task.delay())


def trait_labels_apply(*, gateway=None, limit: int = 500) -> dict:
    """Write the trait labels that differ from the mirror onto the BareMetalHosts (level-triggered)."""
    from hosts.classify import trait_labels_wanted
    from hosts.services import hosts_sync
    from teapot_portal.gateway import GatewayError, NotFound
    from teapot_portal.gateway.factory import get_gateway

    todo = []
    for host in Host.objects.filter(retired_at__isnull=True, deleting=False).only("id", "name", "labels", "traits"):
        patch = trait_labels_wanted(host.traits, host.labels)
        if patch:
            todo.append((host.name, patch))
    if not todo:
        return {"written": 0, "failed": 0, "left": 0}
    gateway = gateway or get_gateway()
    records, failed = [], 0
    for name, patch in todo[:limit]:
        try:
            records.append(gateway.set_host_labels(name, patch))
        except NotFound:
            continue  # gone: the sync retires it
        except GatewayError as exc:
            failed += 1
            log.warning("trait labels not written: %s", exc, extra={"host": name})
    if records:
        hosts_sync(records=records)
    return {"written": len(records), "failed": failed, "left": max(0, len(todo) - limit)}


# --------------------------------------------------------------------------- rules


def trait_rule_check(text: str) -> None:
    try:
        compile_rule(text)
    except RuleError as exc:
        raise ValidationError({"rule": f"{exc.message} (at character {exc.position + 1})"}) from exc


def trait_rule_preview(text: str, *, sample: int = 8) -> dict:
    """How many active hosts a rule matches now, and a few of their names (no save)."""
    rule = compile_rule(text)
    hosts = Host.objects.filter(retired_at__isnull=True, hardware__isnull=False).only(
        "name", "hardware", *CLASSIFY_FIELDS
    )
    names, count, total = [], 0, 0
    for host in hosts.iterator(chunk_size=2000):
        total += 1
        if rule.matches(host_facts(host)):
            count += 1
            if len(names) < sample:
                names.append(host.name)
    return {"matches": count, "inspected": total, "sample": names}


def trait_rule_save(
    *, name: str, rule: str, description: str = "", enabled: bool = True, instance: TraitRule | None = None
) -> TraitRule:
    name = (name or "").strip().lower()
    errors = {}
    try:
        TRAIT_NAME(name)
    except ValidationError as exc:
        errors["name"] = exc.messages[0]
    try:
        trait_rule_check(rule)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    clash = TraitRule.objects.filter(name=name).exclude(pk=getattr(instance, "pk", None)).exists()
    if clash:
        errors["name"] = f"a rule for trait {name!r} exists already"
    if len(description or "") > 255:
        errors["description"] = "at most 255 characters"
    if errors:
        raise ValidationError(errors)
    obj = instance or TraitRule()
    obj.name, obj.rule, obj.description, obj.enabled = name, rule.strip(), (description or "").strip(), bool(enabled)
    with transaction.atomic():
        obj.save()
        reclassify_after_commit()
    return obj


def trait_rule_delete(rule: TraitRule) -> None:
    with transaction.atomic():
        rule.delete()
        reclassify_after_commit()


# --------------------------------------------------------------------------- fleet settings


TENANCY_LIMITS = {
    "preemption_notice_seconds": (0, 86_400),
    "provisioning_attempts": (0, 20),
    # Reservations (reservations.services): when an extension may be asked, how long a booking
    # may last, how far ahead it may start, when its members are reminded of its end (0: never).
    "reservation_extend_window_hours": (0, 8_760),
    "reservation_max_hours": (1, 8_760),
    "reservation_horizon_days": (1, 1_095),
    "reservation_reminder_minutes": (0, 10_080),
}
CLEANING_MINIMUMS = ("standard", "key_erase")


def _tenancy_values(tenancy: dict[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, (low, high) in TENANCY_LIMITS.items():
        if tenancy.get(name) is None:
            continue
        try:
            number = int(tenancy[name])
            if isinstance(tenancy[name], float) and number != tenancy[name]:
                raise ValueError
        except (TypeError, ValueError):
            errors[name] = "a whole number"
            continue
        if not low <= number <= high:
            errors[name] = f"between {low} and {high:,}"
            continue
        values[name] = number
    if tenancy.get("minimum_cleaning") is not None:
        if tenancy["minimum_cleaning"] not in CLEANING_MINIMUMS:
            errors["minimum_cleaning"] = (
                "standard (every pool wipes disk metadata) or key_erase (pools may erase the key)"
            )
        else:
            values["minimum_cleaning"] = tenancy["minimum_cleaning"]
    return values


def _fleet_settings_values(
    *,
    topology_levels: Sequence[str] | None,
    cost_model: dict | None,
    cost_unit: str | None,
    tenancy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checked new values; raises ValidationError naming each bad one."""
    errors: dict[str, str] = {}
    values: dict[str, Any] = _tenancy_values(tenancy or {}, errors)
    if topology_levels is not None:
        try:
            levels = topology.validate_levels(topology_levels)
        except topology.TopologyError as exc:
            errors["topology_levels"] = str(exc)
        else:
            reserved = set(_RESERVED_FILTER_NAMES) & set(levels)
            broken = []
            for host_name, location in Host.objects.exclude(location={}).values_list("name", "location"):
                try:
                    topology.validate_location(location, levels)
                except topology.TopologyError:
                    broken.append(host_name)
            if reserved:
                errors["topology_levels"] = f"{', '.join(sorted(reserved))}: reserved (a host list filter)"
            elif broken:
                errors["topology_levels"] = (
                    f"{len(broken)} host(s) have locations these levels cannot hold "
                    f"(e.g. {', '.join(sorted(broken)[:5])}); change their locations first"
                )
            else:
                values["topology_levels"] = levels
    if cost_model is not None:
        try:
            values["cost_model"] = CostModel.from_dict(cost_model).to_dict()
        except (CostModelError, AttributeError, TypeError) as exc:
            errors["cost_model"] = str(exc) if isinstance(exc, CostModelError) else "a mapping of weights"
    if cost_unit is not None:
        unit = str(cost_unit).strip()
        if not unit or len(unit) > 16:
            errors["cost_unit"] = "1 to 16 characters, e.g. EUR or units"
        values["cost_unit"] = unit
    if errors:
        raise ValidationError(errors)
    return values


def fleet_settings_check(
    *,
    topology_levels: Sequence[str] | None = None,
    cost_model: dict | None = None,
    cost_unit: str | None = None,
    **tenancy: Any,
) -> None:
    """Raise ValidationError if these settings would be refused (the admin form's clean)."""
    _fleet_settings_values(topology_levels=topology_levels, cost_model=cost_model, cost_unit=cost_unit, tenancy=tenancy)


def fleet_settings_update(
    *,
    topology_levels: Sequence[str] | None = None,
    cost_model: dict | None = None,
    cost_unit: str | None = None,
    preemption_notice_seconds: int | None = None,
    minimum_cleaning: str | None = None,
    provisioning_attempts: int | None = None,
    reservation_extend_window_hours: int | None = None,
    reservation_max_hours: int | None = None,
    reservation_horizon_days: int | None = None,
    reservation_reminder_minutes: int | None = None,
    actor=None,
) -> FleetSettings:
    """Change the topology levels, the cost model and/or its unit, and the tenancy settings (the
    pre-emption notice, the least cleaning a pool may choose, how many failed hosts a pool may
    replace, the reservation rules). Levels that would leave a host's location invalid are refused, naming the hosts; a
    bad weight is named. A changed cost model reclassifies the fleet (costs) after the commit."""
    FleetSettings.load()
    tenancy = {
        "preemption_notice_seconds": preemption_notice_seconds,
        "minimum_cleaning": minimum_cleaning,
        "provisioning_attempts": provisioning_attempts,
        "reservation_extend_window_hours": reservation_extend_window_hours,
        "reservation_max_hours": reservation_max_hours,
        "reservation_horizon_days": reservation_horizon_days,
        "reservation_reminder_minutes": reservation_reminder_minutes,
    }
    with transaction.atomic():
        current = FleetSettings.objects.select_for_update().get(pk=1)
        values = _fleet_settings_values(
            topology_levels=topology_levels, cost_model=cost_model, cost_unit=cost_unit, tenancy=tenancy
        )
        cost_changed = "cost_model" in values and values["cost_model"] != current.cost_model
        for name, value in values.items():
            setattr(current, name, value)
        current.updated_by = _actor(actor)
        current.save()
        if cost_changed:
            reclassify_after_commit()
    return current


# Host list filter names a topology level may not take (the level filters share the query string).
_RESERVED_FILTER_NAMES = (
    "state",
    "trait",
    "location",
    "tenant",
    "maintenance",
    "q",
    "ordering",
    "lifecycle",
    "page",
    "limit",
    "offset",
    "format",
    "arch",
    "accelerator",
    "cost",
)
