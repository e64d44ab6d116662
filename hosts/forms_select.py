"""The "What would I get?" form: a requirement (typed, or filled from a flavour), a count and a
placement policy. The node pool and booking forms share its requirement field's name and the
placement fields (:class:`hosts.forms_placement.PlacementFieldsMixin`), so they can post to the
same preview fragment (``select:preview``)."""

from __future__ import annotations

from collections.abc import Sequence

from django import forms

from hosts.forms_placement import PlacementFieldsMixin
from hosts.serializers_select import MAX_COUNT


class SelectionForm(PlacementFieldsMixin):
    max_per_bucket_max = MAX_COUNT  # a cap as large as the largest count

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
    together_level = forms.ChoiceField(required=False, label="All in one")

    def __init__(self, *args, levels: Sequence[str], flavours: Sequence | None = None, **kwargs):
        super().__init__(*args, levels=levels, **kwargs)
        if flavours is not None:
            self.fields["flavour"].widget.choices = [
                ("", "— none: write the requirement —"),
                *((f.name, f"{f.name} — {f.description}" if f.description else f.name) for f in flavours),
            ]
