"""Recurring bookings: an RFC 5545 RRULE expanded into windows, wall-clock times kept across DST.

"Weekdays 20:00–06:00 in Europe/Zurich" means 20:00 local on each weekday, ending at 06:00
local the next morning — also on the night the clocks change, when that window lasts 9 or 11
hours. So the rule is expanded in *local wall-clock time* (dateutil's ``rrule`` on naive
datetimes) and each start and end is then placed in the zone:

* a wall-clock time that does not exist (the spring-forward gap, 02:30 on the last Sunday of
  March in Europe) is read with the offset before the gap, i.e. it moves forward by the gap
  (RFC 5545 §3.3.5: "the DATE-TIME value is interpreted using the UTC offset before the gap");
* a wall-clock time that happens twice (the autumn fold) is the first of the two (``fold=0``).

Only the RRULE body is accepted (``FREQ=…;BYDAY=…``): DTSTART comes from the booking's first
start, so the two cannot disagree. Rules are bounded: at most :data:`MAX_OCCURRENCES` windows,
and never past the horizon the caller gives (the operator's booking horizon).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from dateutil.rrule import rrulestr

MAX_OCCURRENCES = 400
# Sub-hourly rules make no sense for bare metal that takes 15 minutes to provision.
ALLOWED_FREQ = ("HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY")
FORBIDDEN_PARTS = ("DTSTART", "BYSECOND", "BYMINUTE")

# Named presets offered by the pages (the API takes any RRULE).
PRESETS = {
    "": "Once",
    "FREQ=DAILY": "Every day",
    "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR": "Every weekday (Monday to Friday)",
    "FREQ=WEEKLY": "Every week on the same day",
    "FREQ=WEEKLY;BYDAY=SA": "Every Saturday",
    "FREQ=WEEKLY;BYDAY=SA,SU": "Every weekend day",
}


class RecurrenceError(ValueError):
    pass


@dataclass(frozen=True)
class Window:
    starts_at: datetime  # aware, UTC
    ends_at: datetime


def zone(name: str) -> ZoneInfo:
    if not name:
        raise RecurrenceError("give the time zone the times are in, e.g. Europe/Zurich")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise RecurrenceError(f"unknown time zone {name!r}; use an IANA name such as Europe/Zurich") from exc


def timezone_names() -> list[str]:
    return sorted(available_timezones())


def _place(naive: datetime, tz: ZoneInfo) -> datetime:
    """The instant a local wall-clock time names (gap: moved forward; fold: the first)."""
    return naive.replace(tzinfo=tz, fold=0).astimezone(UTC)


def normalise(rule: str) -> str:
    """The RRULE body, upper-cased and checked; raises :class:`RecurrenceError` in words."""
    body = (rule or "").strip()
    if body.upper().startswith("RRULE:"):
        body = body[6:]
    body = body.upper().replace(" ", "")
    if not body:
        return ""
    parts = dict(part.split("=", 1) if "=" in part else (part, "") for part in body.split(";") if part)
    if "FREQ" not in parts:
        raise RecurrenceError("a recurrence needs FREQ, e.g. FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR")
    if parts["FREQ"] not in ALLOWED_FREQ:
        raise RecurrenceError(f"FREQ={parts['FREQ']}: use one of {', '.join(ALLOWED_FREQ)}")
    for forbidden in FORBIDDEN_PARTS:
        if forbidden in parts:
            raise RecurrenceError(f"{forbidden} is not accepted: the first start of the booking sets the time")
    if "COUNT" in parts and "UNTIL" in parts:
        raise RecurrenceError("give COUNT or UNTIL, not both")
    return ";".join(f"{k}={v}" for k, v in parts.items())


def expand(*, rule: str, first_start: datetime, duration: timedelta, tz_name: str, until: datetime) -> list[Window]:
    """The windows of ``rule`` from ``first_start`` (aware) while they start before ``until``.

    The first window is always ``first_start`` itself (as RFC 5545 counts DTSTART), even when
    the rule would not produce it. Raises :class:`RecurrenceError` for a rule that cannot be
    parsed, overlapping windows, or more than :data:`MAX_OCCURRENCES` windows.
    """
    if duration <= timedelta(0):
        raise RecurrenceError("each occurrence must last longer than zero")
    tz = zone(tz_name)
    body = normalise(rule)
    local_start = first_start.astimezone(tz).replace(tzinfo=None)
    if not body:
        return [Window(first_start.astimezone(UTC), first_start.astimezone(UTC) + duration)]
    try:
        recurrence = rrulestr(_local_until(body, tz), dtstart=local_start, ignoretz=True)
    except (ValueError, TypeError) as exc:
        raise RecurrenceError(f"cannot read the recurrence {body!r}: {exc}") from exc
    count = _count(body)
    # The bound is compared in local time (the rule's own); a day of slack covers any offset.
    local_until = until.astimezone(tz).replace(tzinfo=None) + timedelta(days=1)
    windows: list[Window] = []
    starts = [local_start]
    for occurrence in recurrence.xafter(local_start, inc=True):
        if occurrence > local_until:
            break
        if occurrence != local_start:
            starts.append(occurrence)
        if len(starts) > MAX_OCCURRENCES + 1:
            break
    if count is not None:
        # DTSTART counts as the first occurrence (RFC 5545 §3.3.10) even when the rule would
        # not produce it: COUNT=5 is five windows, not the first start plus five more.
        starts = starts[:count]
    for naive in starts:
        start = _place(naive, tz)
        if start >= until:
            break
        end = _place(naive + duration, tz)  # wall-clock length: 20:00–06:00 stays 20:00–06:00
        if end <= start:  # a window shorter than the clock change: keep its real length instead
            end = start + duration
        windows.append(Window(start, end))
        if len(windows) > MAX_OCCURRENCES:
            raise RecurrenceError(
                f"the recurrence makes more than {MAX_OCCURRENCES} bookings before {until:%Y-%m-%d}; "
                "add COUNT or UNTIL, or book fewer"
            )
    for before, after in pairwise(windows):
        if after.starts_at < before.ends_at:
            raise RecurrenceError(
                f"occurrences overlap: the one starting {before.starts_at:%Y-%m-%d %H:%M} UTC lasts until "
                f"{before.ends_at:%Y-%m-%d %H:%M} UTC, after the next one starts; shorten it or space them out"
            )
    return windows


def _count(body: str) -> int | None:
    for part in body.split(";"):
        name, _, value = part.partition("=")
        if name == "COUNT" and value.isdigit():
            return int(value)
    return None


def _local_until(body: str, tz: ZoneInfo) -> str:
    """The rule with a UTC UNTIL (``…Z``, as RFC 5545 requires when the start has a zone)
    turned into the zone's wall-clock time: the rule is expanded on naive local times, and
    dateutil would otherwise read ``19:00Z`` as 19:00 local (an hour off in Zurich)."""
    parts = []
    for part in body.split(";"):
        name, _, value = part.partition("=")
        if name == "UNTIL" and value.endswith("Z"):
            try:
                moment = datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            except ValueError as exc:
                raise RecurrenceError(f"UNTIL={value}: give it as 20261231T235959Z") from exc
            part = f"UNTIL={moment.astimezone(tz):%Y%m%dT%H%M%S}"
        parts.append(part)
    return ";".join(parts)


def describe(rule: str) -> str:
    """The rule in words where it is a preset; else the rule itself."""
    body = normalise(rule) if rule else ""
    return PRESETS.get(body, body or "Once")
