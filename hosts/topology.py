"""Failure-domain topology: operator-defined levels and each host's place along them.

Levels are deployment-specific and ordered from the coarsest (e.g. ``site > room > row > rack``
or ``datacenter > pod > rack > chassis``). A location gives a value per level, always a prefix of
the levels: a rack is only meaningful inside its room, so "rack r1" without a room is refused.
Buckets are the *path* down to a level — rack ``r1`` in room ``a`` and rack ``r1`` in room ``b``
are different racks — which is what spread and affinity rules count.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

LEVEL_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class TopologyError(ValueError):
    pass


def validate_levels(levels: Sequence[str]) -> list[str]:
    levels = [str(level).strip().lower() for level in levels]
    if not levels:
        raise TopologyError("define at least one level, e.g. site, room, row, rack")
    for level in levels:
        if not LEVEL_NAME.match(level):
            raise TopologyError(f"level {level!r}: lowercase letters, digits and '-', starting with a letter")
    if len(set(levels)) != len(levels):
        raise TopologyError("each level may appear once")
    return levels


def validate_location(location: Mapping[str, str], levels: Sequence[str]) -> dict[str, str]:
    """Check a host's location against the levels; returns it cleaned, in level order."""
    unknown = set(location) - set(levels)
    if unknown:
        raise TopologyError(f"unknown level(s) {', '.join(sorted(unknown))}; the levels are {' > '.join(levels)}")
    cleaned: dict[str, str] = {}
    missing_from = None
    for level in levels:
        value = str(location.get(level, "") or "").strip()
        if not value:
            missing_from = missing_from or level
            continue
        if missing_from:
            raise TopologyError(
                f"{level} {value!r} is given but {missing_from} is not: a location is a path from {levels[0]}"
            )
        if not VALUE.match(value):
            raise TopologyError(f"{level} {value!r}: letters, digits, '.', '_' and '-', at most 64")
        cleaned[level] = value
    return cleaned


def bucket(location: Mapping[str, str], level: str, levels: Sequence[str]) -> tuple[str, ...] | None:
    """The host's bucket at ``level`` (its path down to that level), or None when it is not located that deep."""
    if level not in levels:
        raise TopologyError(f"unknown level {level!r}; the levels are {' > '.join(levels)}")
    path = []
    for current in levels:
        value = location.get(current)
        if not value:
            return None
        path.append(value)
        if current == level:
            return tuple(path)
    return None  # unreachable: level is in levels


def path(location: Mapping[str, object], levels: Sequence[str]) -> tuple[str, ...]:
    """The location's values along ``levels`` from the coarsest, up to the first it lacks."""
    values = []
    for level in levels:
        value = location.get(level)
        if not value:
            break
        values.append(str(value))
    return tuple(values)


def label(path: tuple[str, ...] | None, levels: Sequence[str]) -> str:
    """'room a / rack r1' for people."""
    if not path:
        return "unplaced"
    return " / ".join(f"{lvl} {val}" for lvl, val in zip(levels, path, strict=False))
