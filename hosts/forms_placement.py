"""The placement policy fields, declared once. The host selection page, the node-pool form and
the booking form carry the same names (``mode``, ``level``, ``hard``, ``max_per_bucket``), so
their templates read them alike and each form can post to the selection preview."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django import forms
from django.core.validators import MaxValueValidator

from hosts.allocator import PACK, SPREAD, Policy, PolicyError
from hosts.models import FleetSettings

MUST, PREFER = "must", "prefer"
PLACEMENT_FIELDS = ("mode", "level", "hard", "max_per_bucket", "together_level")
PLACEMENT_ERROR = "placement"  # the code of the policy's own refusal, added to ``mode``


def placement_policy(*, mode, level, hard, max_per_bucket, levels: Sequence[str], together_level=None) -> Policy:
    """A placement policy from form fields (as cleaned, or as posted for a live preview): raises
    :class:`hosts.allocator.PolicyError`, with the API's messages (:meth:`Policy.from_json`)."""
    mode = mode or None
    return Policy.from_json(
        {
            "mode": mode,
            # A level qualifies a mode or a cap: left set after both are cleared, it means nothing.
            "level": (level or None) if mode or max_per_bucket else None,
            "hard": mode is not None and hard == MUST,  # must/prefer qualifies a mode
            "max_per_bucket": max_per_bucket,
            "together_level": together_level or None,
        },
        levels,
    )


def level_choices(levels: Sequence[str], empty: str) -> list[tuple[str, str]]:
    return [("", empty), *((level, level) for level in levels)]


class PlacementFieldsMixin(forms.Form):
    """Spread or pack, across which level, must or prefer, and at most how many per level.

    ``levels`` are the fleet's topology levels (``FleetSettings.load().topology_levels`` unless
    given). After ``is_valid()``, ``cleaned_data["policy"]`` is the :class:`Policy`; a policy that
    does not hold together is an error on ``mode`` ("Placement: …", code :data:`PLACEMENT_ERROR`),
    where the templates show it. A form that also declares ``together_level`` ("all in one …")
    gets its choices filled and its value checked with the rest.
    """

    mode_empty_label = "no preference"  # what an empty mode means on this form
    max_per_bucket_max = 500  # the largest cap accepted (a form may allow up to its largest count)

    mode = forms.ChoiceField(required=False, label="Spread or pack")
    level = forms.ChoiceField(required=False, label="across each")
    hard = forms.ChoiceField(
        required=False,
        choices=[(PREFER, "prefer"), (MUST, "must")],
        initial=PREFER,
        widget=forms.RadioSelect,
        label="Strength",
        help_text="must: refuse rather than break it; prefer: only a tie-breaker after cost",
    )
    max_per_bucket = forms.IntegerField(required=False, min_value=1, label="At most per level")

    def __init__(self, *args, levels: Sequence[str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.levels = list(levels if levels is not None else FleetSettings.load().topology_levels)
        self.fields["mode"].choices = [("", self.mode_empty_label), (SPREAD, "spread"), (PACK, "pack")]
        self.fields["level"].choices = level_choices(self.levels, "—")
        if "together_level" in self.fields:
            self.fields["together_level"].choices = level_choices(self.levels, "anywhere")
        cap = self.fields["max_per_bucket"]
        cap.max_value = self.max_per_bucket_max
        cap.validators.append(MaxValueValidator(self.max_per_bucket_max))

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if any(name in self.errors for name in PLACEMENT_FIELDS):
            return data  # the field's own error says it; a policy made without it would mislead
        try:
            data["policy"] = placement_policy(
                mode=data.get("mode"),
                level=data.get("level"),
                hard=data.get("hard"),
                max_per_bucket=data.get("max_per_bucket"),
                together_level=data.get("together_level"),
                levels=self.levels,
            )
        except PolicyError as exc:
            self.add_error("mode", forms.ValidationError(f"Placement: {exc}.", code=PLACEMENT_ERROR))
        return data

    def policy_json(self) -> dict[str, Any]:
        """The policy as the services store it: ``{}`` for "no placement rule" (after is_valid())."""
        policy = self.cleaned_data["policy"]
        return policy.to_json() if policy != Policy() else {}
