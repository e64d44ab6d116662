"""The cost model: a cost per hour per host from operator-set weights, explained line by line.

The default follows MAAS, which ranks machines by cores + GiB of RAM: one unit per core and one
per GiB. Operators add weights per TB of disk, per accelerator type and premiums per trait, and
may override a host's cost outright. Costs are Decimals (money) rounded to 4 places.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

QUANTUM = Decimal("0.0001")


class CostModelError(ValueError):
    pass


def _money(value: Any, what: str) -> Decimal:
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise CostModelError(f"{what}: {value!r} is not a number") from exc
    if not amount.is_finite() or amount < 0:
        raise CostModelError(f"{what}: must be a number ≥ 0")
    return amount


@dataclass(frozen=True)
class CostModel:
    base: Decimal = Decimal("0")
    per_core: Decimal = Decimal("1")
    per_gib_ram: Decimal = Decimal("1")
    per_tb_disk: Decimal = Decimal("0")
    per_accelerator: Mapping[str, Decimal] = field(default_factory=dict)  # type → per device
    per_trait: Mapping[str, Decimal] = field(default_factory=dict)  # trait → premium

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CostModel:
        """Build from operator input (admin JSON, API); every bad value is named."""
        known = {"base", "per_core", "per_gib_ram", "per_tb_disk", "per_accelerator", "per_trait"}
        unknown = set(data) - known
        if unknown:
            raise CostModelError(f"unknown weight(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        scalars = {k: _money(data[k], k) for k in ("base", "per_core", "per_gib_ram", "per_tb_disk") if k in data}
        maps = {}
        for key in ("per_accelerator", "per_trait"):
            value = data.get(key) or {}
            if not isinstance(value, Mapping):
                raise CostModelError(f"{key}: a mapping of name → price")
            maps[key] = {str(name): _money(price, f"{key}[{name}]") for name, price in value.items()}
        return cls(**scalars, **maps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": str(self.base),
            "per_core": str(self.per_core),
            "per_gib_ram": str(self.per_gib_ram),
            "per_tb_disk": str(self.per_tb_disk),
            "per_accelerator": {k: str(v) for k, v in self.per_accelerator.items()},
            "per_trait": {k: str(v) for k, v in self.per_trait.items()},
        }


@dataclass(frozen=True)
class Cost:
    per_hour: Decimal
    lines: tuple[tuple[str, Decimal], ...]  # ("64 cores × 1", 64) … for the host page
    overridden: bool = False


def host_cost(
    model: CostModel,
    *,
    cores: int | None,
    ram_gib: float | None,
    disk_tb: float = 0.0,
    accelerators: Iterable[Mapping[str, Any]] = (),
    traits: Iterable[str] = (),
    override: Decimal | None = None,
) -> Cost:
    if override is not None:
        amount = _money(override, "override").quantize(QUANTUM, ROUND_HALF_UP)
        return Cost(amount, (("set by an operator", amount),), overridden=True)
    lines: list[tuple[str, Decimal]] = []
    if model.base:
        lines.append(("base", model.base))
    if cores and model.per_core:
        lines.append((f"{cores} cores × {model.per_core}", cores * model.per_core))
    if ram_gib and model.per_gib_ram:
        gib = Decimal(str(round(ram_gib, 2)))
        lines.append((f"{gib.normalize():f} GiB RAM × {model.per_gib_ram}", gib * model.per_gib_ram))
    if disk_tb and model.per_tb_disk:
        tb = Decimal(str(round(disk_tb, 3)))
        lines.append((f"{tb.normalize():f} TB disk × {model.per_tb_disk}", tb * model.per_tb_disk))
    for accelerator in accelerators:
        price = model.per_accelerator.get(accelerator.get("type", ""))
        count = int(accelerator.get("count", 1))
        if price:
            lines.append((f"{count}× {accelerator['type']} × {price}", count * price))
    for trait in sorted(set(traits)):
        premium = model.per_trait.get(trait)
        if premium:
            lines.append((f"trait {trait}", premium))
    total = sum((amount for _, amount in lines), Decimal("0")).quantize(QUANTUM, ROUND_HALF_UP)
    return Cost(total, tuple((text, amount.quantize(QUANTUM, ROUND_HALF_UP)) for text, amount in lines))
