"""Small formatting filters of the inventory pages (durations, sizes, money)."""

from __future__ import annotations

from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def duration(seconds) -> str:
    """600 → '10 min'; 8130 → '2 h 15 min'; 45 → '45 s'."""
    if seconds in (None, ""):
        return "—"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@register.filter
def bytes_si(value) -> str:
    """Disk sizes as vendors print them (decimal): 1920000000000 → '1.92 TB'."""
    if not value:
        return "—"
    amount = float(value)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if amount < 1000:
            return f"{amount:.3g} {unit}"
        amount /= 1000
    return f"{amount:.3g} PB"


@register.filter
def money(value) -> str:
    """A cost: two decimals, up to four when they matter (0.0125), thousands separated."""
    if value in (None, ""):
        return "—"
    text = f"{Decimal(value):,.4f}".rstrip("0")
    whole, _, decimals = text.partition(".")
    return f"{whole}.{decimals.ljust(2, '0')}"


@register.filter
def gib(mib) -> str:
    return f"{int(mib or 0) // 1024}"


@register.filter
def dictget(mapping, key):
    return (mapping or {}).get(key, ())
