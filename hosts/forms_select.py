"""The "What would I get?" form: a requirement (typed, or filled from a flavour), a count and a
placement policy. Node pool and reservation forms reuse its fields (same names), so they can
post to the same preview fragment (``select:preview``)."""

from __future__ import annotations

from collections.abc import Sequence

from django import forms

from hosts.allocator import PACK, SPREAD, Policy
from hosts.serializers_select import MAX_COUNT

MUST, PREFER = "must", "prefer"


def placement_policy(*, mode, level, hard, max_per_bucket, levels: Sequence[str], together_level=None) -> Policy:
    """A placement policy from form fields (the select page's, the node-pool form's): raises
    :class:`hosts.allocator.PolicyError`."""
    mode = mode or None
    return Policy(
        mode=mode,
        # A level qualifies a mode or a cap: left set after both are cleared, it means nothing.
        level=(level or None) if mode or max_per_bucket else None,
        hard=mode is not None and hard == MUST,  # must/prefer qualifies a mode
        max_per_bucket=max_per_bucket,
        together_level=together_level or None,
    ).validate(levels)


class SelectionForm(forms.Form):
    flavour = forms.CharField(
        required=False,
        widget=forms.Select,
        help_text="Optional: fills the requirement with the flavour's; change it freely afterwards.",
    )
    # The flavour whose requirement the text was last filled from: a newly chosen flavour fills
    # the text once, so what the person typed afterwards is kept (with or without JavaScript).
    flavour_applied = forms.CharField(required=False, widget=forms.HiddenInput)
    requirement = forms.CharField(
        required=False,
        strip=False,
        max_length=2000,
        widget=forms.Textarea(
            attrs={"rows": 2, "spellcheck": "false", "class": "code", "autocomplete": "off", "autocapitalize": "off"}
        ),
        help_text="Terms separated by commas, e.g. cores>=64,ram>=512Gi,gpu:nvidia-a100>=4. Empty: any host.",
    )
    count = forms.IntegerField(min_value=1, max_value=MAX_COUNT, initial=1, label="How many hosts")
    mode = forms.ChoiceField(
        required=False,
        choices=[("", "no preference"), (SPREAD, "spread"), (PACK, "pack")],
        label="Spread or pack",
    )
    level = forms.ChoiceField(required=False, label="across each")
    hard = forms.ChoiceField(
        required=False,
        choices=[(PREFER, "prefer"), (MUST, "must")],
        initial=PREFER,
        widget=forms.RadioSelect,
        label="Strength",
    )
    max_per_bucket = forms.IntegerField(
        required=False, min_value=1, max_value=MAX_COUNT, label="At most per level (cap)"
    )
    together_level = forms.ChoiceField(required=False, label="All in one")

    def __init__(self, *args, levels: Sequence[str], flavours: Sequence | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.levels = list(levels)
        self.fields["level"].choices = [("", "—"), *((level, level) for level in self.levels)]
        self.fields["together_level"].choices = [("", "anywhere"), *((level, level) for level in self.levels)]
        if flavours is not None:
            self.fields["flavour"].widget.choices = [
                ("", "— none: write the requirement —"),
                *((f.name, f"{f.name} — {f.description}" if f.description else f.name) for f in flavours),
            ]

    def policy(self) -> Policy:
        """The placement policy (raises :class:`hosts.allocator.PolicyError`); call after is_valid()."""
        data = self.cleaned_data
        return placement_policy(
            mode=data.get("mode"),
            level=data.get("level"),
            hard=data.get("hard"),
            max_per_bucket=data.get("max_per_bucket"),
            together_level=data.get("together_level"),
            levels=self.levels,
        )
