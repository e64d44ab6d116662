"""Forms of the reservation pages. They check the shape of what was typed and turn it into the
keyword arguments of :func:`reservations.services.reservation_create` (and ``_check``); the rules
(quota, horizon, admission…) are the service's, whose refusals come back keyed by field and are
shown next to it (:func:`tenants.forms.add_service_errors`).

Times are typed as wall-clock times (``<input type=datetime-local>``) in the form's time zone:
the calendar fills the browser's zone, so what the person dragged is what is booked.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from hosts.forms_placement import PlacementFieldsMixin
from reservations.models import Reservation
from reservations.recurrence import PRESETS
from tenants.models import POOL_NAME_MAX, Cluster, NodePool

NEW_PREFIX = "new:"  # the pool picker's value for "a new pool in cluster C"
CUSTOM = "custom"  # the recurrence select's value for "write an RRULE"
UNTIL, FOR = "until", "for"
LOCAL_FORMAT = "%Y-%m-%dT%H:%M"  # what <input type=datetime-local> sends and shows
MAX_HOURS = 24 * 366


def local_input(moment: datetime | None, tz_name: str = "") -> str:
    """An aware datetime as a datetime-local input's value, in ``tz_name`` (or the server's)."""
    if moment is None:
        return ""
    return moment.astimezone(zone_or_none(tz_name) or ZoneInfo(settings.TIME_ZONE)).strftime(LOCAL_FORMAT)


def zone_or_none(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name) if name else None
    except (ZoneInfoNotFoundError, ValueError):
        return None


def pool_choices(pools: Sequence[NodePool], clusters: Sequence[Cluster]) -> list:
    """The pool picker: the tenant's live pools, then "a new pool in cluster C" for each cluster."""
    existing = [(str(p.pk), f"{p.cluster.name} / {p.name} ({p.quota_class.name})") for p in pools]
    new = [(f"{NEW_PREFIX}{c.name}", f"New pool in cluster {c.name}…") for c in clusters]
    choices: list = [("", "— choose —")]
    if existing:
        choices.append(("Node pools", existing))
    if new:
        choices.append(("Or create one when the booking is confirmed", new))
    return choices


class PoolPickerMixin:
    """The pool picker and the new pool's class, image and cleaning (shown for a new pool only)."""

    def _setup_picker(self, pools, clusters, classes, images) -> None:
        self.pools = {str(p.pk): p for p in pools}
        self.clusters = {c.name: c for c in clusters}
        self.fields["target"].choices = pool_choices(pools, clusters)
        self.fields["quota_class"].choices = [("", "—"), *((k.name, k.name) for k in classes)]
        if "image" in self.fields:
            self.fields["image"].choices = [("", "—"), *((i.name, i.name) for i in images)]

    def clean_target_fields(self, data: dict) -> None:
        target = data.get("target") or ""
        data["node_pool"], data["new_pool"] = None, None
        if target.startswith(NEW_PREFIX):
            cluster = self.clusters.get(target[len(NEW_PREFIX) :])
            if cluster is None:
                self.add_error("target", "No such cluster in this tenant.")
                return
            if not data.get("quota_class"):
                self.add_error("quota_class", "Choose the new pool's quota class.")
            new_pool = {"cluster": cluster, "quota_class": data.get("quota_class") or None}
            if "image" in self.fields:
                if not data.get("image"):
                    self.add_error("image", "Choose the new pool's OS image.")
                if not data.get("pool_name"):
                    self.add_error("pool_name", "Name the new pool.")
                new_pool.update(
                    name=data.get("pool_name") or "",
                    image=data.get("image") or None,
                    cleaning=data.get("cleaning") or NodePool.Cleaning.STANDARD,
                )
            data["new_pool"] = new_pool
        elif target:
            pool = self.pools.get(target)
            if pool is None:
                self.add_error("target", "No such node pool in this tenant.")
            data["node_pool"] = pool


def _target_field() -> forms.ChoiceField:
    return forms.ChoiceField(
        label="Node pool",
        help_text="The booked hosts join this pool for the booking's time; a new pool is created (empty) when the booking is confirmed.",
    )


def _requirement_field() -> forms.CharField:
    return forms.CharField(
        required=False,
        strip=False,
        max_length=2000,
        label="Extra requirement",
        widget=forms.Textarea(
            attrs={"rows": 2, "spellcheck": "false", "class": "code", "autocomplete": "off", "autocapitalize": "off"}
        ),
        help_text="Optional, on top of the pool's: terms separated by commas, e.g. cores>=64,gpu:nvidia-a100>=4.",
    )


class BookingForm(PoolPickerMixin, PlacementFieldsMixin):
    """Book hosts: which pool, how many, when (once or recurring), what else they must have,
    where they go, at which priority."""

    mode_empty_label = "the pool's"  # no mode: the booked hosts follow the pool's placement

    target = _target_field()
    pool_name = forms.CharField(
        required=False,
        max_length=POOL_NAME_MAX,
        label="New pool's name",
        widget=forms.TextInput(attrs={"autocomplete": "off", "autocapitalize": "off", "spellcheck": "false"}),
    )
    quota_class = forms.ChoiceField(required=False, label="Quota class")
    image = forms.ChoiceField(required=False, label="OS image")
    cleaning = forms.ChoiceField(
        required=False,
        choices=NodePool.Cleaning.choices,
        initial=NodePool.Cleaning.STANDARD,
        label="Cleaning when a host leaves",
    )
    count = forms.IntegerField(min_value=1, max_value=10_000, initial=1, label="How many hosts")
    starts_at = forms.DateTimeField(
        label="Start",
        input_formats=[LOCAL_FORMAT, "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format=LOCAL_FORMAT),
    )
    end_mode = forms.ChoiceField(
        choices=[(FOR, "For"), (UNTIL, "Until")], initial=FOR, widget=forms.RadioSelect, label="End"
    )
    duration = forms.DecimalField(
        required=False,
        min_value=Decimal("0.25"),
        max_value=MAX_HOURS,
        decimal_places=2,
        initial=Decimal(4),
        label="Hours",
        widget=forms.NumberInput(attrs={"step": "0.25", "inputmode": "decimal"}),
    )
    ends_at = forms.DateTimeField(
        required=False,
        label="End",
        input_formats=[LOCAL_FORMAT, "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format=LOCAL_FORMAT),
    )
    tz_name = forms.CharField(
        max_length=64,
        label="Time zone",
        widget=forms.TextInput(attrs={"list": "time-zones", "autocomplete": "off", "spellcheck": "false"}),
        help_text="The start and end are wall-clock times in this zone (a recurring booking keeps them across daylight saving changes).",
    )
    recurrence = forms.ChoiceField(
        required=False, choices=[*PRESETS.items(), (CUSTOM, "Custom rule (RRULE)…")], label="Repeat"
    )
    rrule = forms.CharField(
        required=False,
        max_length=500,
        label="RRULE",
        widget=forms.TextInput(attrs={"class": "code", "spellcheck": "false", "autocomplete": "off"}),
        help_text="RFC 5545, e.g. FREQ=WEEKLY;BYDAY=MO,WE;COUNT=6. Every occurrence is admitted together, or none.",
    )
    requirement = _requirement_field()
    priority = forms.ChoiceField(
        choices=Reservation.Priority.choices,
        initial=Reservation.Priority.ON_DEMAND,
        widget=forms.RadioSelect,
        label="Priority",
    )
    name = forms.CharField(
        required=False,
        max_length=100,
        label="What it is for",
        widget=forms.TextInput(attrs={"placeholder": "e.g. nightly batch", "autocomplete": "off"}),
    )

    def __init__(
        self,
        *args,
        pools: Sequence[NodePool],
        clusters: Sequence[Cluster],
        classes: Sequence,
        images: Sequence,
        levels: Sequence[str],
        **kwargs,
    ):
        super().__init__(*args, levels=levels, **kwargs)
        self._setup_picker(pools, clusters, classes, images)
        self.initial.setdefault("tz_name", settings.TIME_ZONE)
        if not self.is_bound and len(pools) == 1:
            self.initial.setdefault("target", str(pools[0].pk))

    def clean_tz_name(self) -> str:
        name = (self.cleaned_data.get("tz_name") or "").strip()
        if zone_or_none(name) is None:
            raise ValidationError(f"Unknown time zone {name!r}: use an IANA name such as Europe/Zurich.")
        return name

    def _aware(self, value: datetime | None, tz: ZoneInfo) -> datetime | None:
        if value is None:
            return None
        naive = value.replace(tzinfo=None) if value.tzinfo is not None else value
        return naive.replace(tzinfo=tz, fold=0)

    def clean(self) -> dict[str, Any]:
        data = super().clean()  # the placement policy too
        self.clean_target_fields(data)
        tz = zone_or_none(data.get("tz_name") or "")
        if tz is not None:
            # Django read the inputs in the server's zone: they are wall-clock times of the form's.
            data["starts_at"] = self._aware(data.get("starts_at"), tz)
            data["ends_at"] = self._aware(data.get("ends_at"), tz)
        if data.get("end_mode") == UNTIL:
            if data.get("ends_at") is None and "ends_at" not in self.errors:
                self.add_error("ends_at", "Give the end.")
        elif data.get("duration") is None and "duration" not in self.errors:
            self.add_error("duration", "Give how many hours.")
        recurrence = data.get("recurrence") or ""
        data["rule"] = (data.get("rrule") or "").strip() if recurrence == CUSTOM else recurrence
        if recurrence == CUSTOM and not data["rule"]:
            self.add_error("rrule", "Write the rule, or choose a preset.")
        return data

    def service_values(self) -> dict[str, Any]:
        """The keyword arguments of reservation_create / reservation_check (after is_valid())."""
        data = self.cleaned_data
        values: dict[str, Any] = {
            "node_pool": data["node_pool"],
            "new_pool": data["new_pool"],
            "count": data["count"],
            "starts_at": data["starts_at"],
            "requirement": data.get("requirement") or "",
            "policy": self.policy_json(),
            "priority": data["priority"],
            "name": data.get("name") or "",
            "rrule": data["rule"],
            "tz_name": data["tz_name"],
        }
        if data.get("end_mode") == UNTIL:
            values["ends_at"] = data["ends_at"]
        else:
            values["duration"] = timedelta(hours=float(data["duration"]))
        return values


SERVICE_ALIASES = {
    "node_pool": "target",
    "cluster": "target",
    "policy": "mode",
    "duration": "duration",
    "name": "name",
}


class AvailabilityForm(forms.Form):
    """ "When can I get N hosts like this for D hours?" — a requirement (and the quota class it
    counts against, found from the requirement when not given), a count and a length."""

    requirement = _requirement_field()
    quota_class = forms.ChoiceField(required=False, label="Quota class")
    count = forms.IntegerField(min_value=1, max_value=10_000, initial=1, label="How many hosts")
    duration = forms.DecimalField(
        min_value=Decimal("0.25"),
        max_value=MAX_HOURS,
        decimal_places=2,
        initial=Decimal(4),
        label="For how many hours",
        widget=forms.NumberInput(attrs={"step": "0.25", "inputmode": "decimal"}),
    )
    priority = forms.ChoiceField(
        choices=Reservation.Priority.choices, initial=Reservation.Priority.ON_DEMAND, label="Priority"
    )

    def __init__(self, *args, classes, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["requirement"].label = "Hosts with"
        self.fields[
            "requirement"
        ].help_text = "Terms separated by commas, e.g. gpu:nvidia-a100>=1 or cores>=64. Empty: any host of the class."
        self.fields["quota_class"].choices = [
            ("", "— the class the requirement belongs to —"),
            *((k.name, f"{k.name} — {k.description}" if k.description else k.name) for k in classes),
        ]
