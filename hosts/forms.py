"""Forms of the operator pages (:mod:`hosts.views_manage`).

The forms only shape what a person typed; the rules live in the services they feed
(:func:`hosts.enrolment.host_enrol`, :func:`hosts.curation.trait_rule_save`,
:func:`hosts.curation.fleet_settings_update`), whose ``ValidationError`` keyed by field is put
back on the form by :func:`add_service_errors`. Django renders ``aria-invalid`` and
``aria-describedby`` (``<id>_error`` / ``<id>_helptext``) on the widgets; the templates render
the matching ids.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path

from django import forms
from django.core.exceptions import ValidationError

from hosts.importing import MAX_BYTES
from teapot_portal.gateway.builders import BMC_SCHEMES

LOCATION_PREFIX = "location_"


def bmc_help_text() -> str:
    return (
        f"scheme://host[/path]. Schemes: {', '.join(BMC_SCHEMES)}; the redfish variants also take "
        "+http or +https (e.g. redfish+https://…). Examples: ipmi://10.0.0.5, "
        "redfish://10.0.0.5/redfish/v1/Systems/1, idrac-virtualmedia://10.0.0.6/redfish/v1/Systems/System.Embedded.1. "
        "No credentials in the address."
    )


def add_service_errors(form: forms.Form, error: ValidationError, field_map: Mapping[str, str] | None = None) -> None:
    """Put a service's ValidationError (keyed by field) on the form; unknown keys are form-wide."""
    field_map = field_map or {}
    for key, messages in error.message_dict.items():
        field = field_map.get(key, key)
        form.add_error(field if field in form.fields else None, messages)


# --------------------------------------------------------------------------- enrol one host


class HostEnrolForm(forms.Form):
    name = forms.CharField(
        max_length=242,
        help_text="The BareMetalHost's name: lowercase letters, digits, '-' and '.', e.g. r1-node-07.",
    )
    bmc_address = forms.CharField(label="BMC address", max_length=2048, help_text=bmc_help_text())
    bmc_username = forms.CharField(label="BMC username", max_length=255)
    bmc_password = forms.CharField(
        label="BMC password",
        max_length=1024,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Sealed until the management cluster holds it, then wiped; never shown again — "
        "re-enter it after an error.",
    )
    boot_mac = forms.CharField(
        label="Boot MAC",
        max_length=17,
        help_text="The MAC of the provisioning (PXE) NIC, never the BMC's, e.g. 52:54:00:12:34:56.",
    )
    key_erase_capable = forms.BooleanField(
        label="Key-erase capable",
        required=False,
        help_text="Disks encrypted with a per-tenant key: hand-off erases the key instead of cleaning the disks.",
    )
    root_device_name = forms.CharField(
        label="Root device name",
        max_length=255,
        required=False,
        help_text="Optional root device hint, e.g. /dev/nvme0n1 (empty: the provisioner chooses).",
    )
    notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))

    def __init__(self, *args, levels: Sequence[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.levels = list(levels)
        # One field per topology level, inserted after the boot MAC in the fleet's order.
        fields = list(self.fields.items())
        at = [name for name, _ in fields].index("boot_mac") + 1
        location_fields = [
            (
                f"{LOCATION_PREFIX}{level}",
                forms.CharField(label=level.capitalize(), max_length=64, required=False),
            )
            for level in self.levels
        ]
        self.fields = dict(fields[:at] + location_fields + fields[at:])

    def location_fields(self) -> list[forms.BoundField]:
        return [self[f"{LOCATION_PREFIX}{level}"] for level in self.levels]

    def other_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in ("key_erase_capable", "root_device_name", "notes")]

    def location(self) -> dict[str, str]:
        return {level: self.cleaned_data.get(f"{LOCATION_PREFIX}{level}", "") for level in self.levels}

    def service_values(self) -> dict:
        data = self.cleaned_data
        return {
            "name": data["name"],
            "bmc_address": data["bmc_address"],
            "bmc_username": data["bmc_username"],
            "bmc_password": data["bmc_password"],
            "boot_mac": data["boot_mac"],
            "location": self.location(),
            "notes": data["notes"],
            "key_erase_capable": data["key_erase_capable"],
            "root_device_name": data["root_device_name"],
        }

    def add_enrol_errors(self, error: ValidationError) -> None:
        """The service's errors by field; a location error goes to the level it names (else the first)."""
        for key, messages in error.message_dict.items():
            if key == "location" and self.levels:
                first_word = messages[0].split(" ", 1)[0]
                level = first_word if first_word in self.levels else self.levels[0]
                self.add_error(f"{LOCATION_PREFIX}{level}", messages)
            elif key == "key_erase":
                self.add_error("key_erase_capable", messages)
            else:
                self.add_error(key if key in self.fields else None, messages)


# --------------------------------------------------------------------------- bulk import

FORMATS = [("auto", "Detect (from the file's extension or the text)"), ("csv", "CSV"), ("yaml", "YAML")]


class HostImportForm(forms.Form):
    file = forms.FileField(
        required=False,
        help_text="A .csv, .yaml or .yml file (at most 5 MiB). After an error, choose the file again.",
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,.yaml,.yml,text/csv,application/yaml"}),
    )
    text = forms.CharField(
        label="Or paste the inventory",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "false", "class": "code"}),
        help_text="Used when no file is chosen. Kept here after an error so you can fix it.",
    )
    fmt = forms.ChoiceField(label="Format", choices=FORMATS, initial="auto")

    def clean(self):
        data = super().clean()
        upload = data.get("file")
        text = data.get("text") or ""
        if upload:
            if upload.size > MAX_BYTES:
                raise ValidationError({"file": f"the file is larger than {MAX_BYTES // 1024 // 1024} MiB"})
            try:
                data["inventory"] = upload.read().decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise ValidationError({"file": "the file is not UTF-8 text"}) from exc
            data["source"] = upload.name
        elif text.strip():
            data["inventory"] = text
            data["source"] = ""
        else:
            raise ValidationError("Choose a file or paste the inventory.")
        data["detected"] = detect_format(data.get("fmt") or "auto", data["source"], data["inventory"])
        if data["detected"] is None:
            raise ValidationError({"fmt": "Cannot tell CSV from YAML here: choose the format."})
        return data


def detect_format(chosen: str, filename: str, text: str) -> str | None:
    """The chosen format; else the file's extension; else a guess from the text (None: cannot tell)."""
    if chosen in ("csv", "yaml"):
        return chosen
    suffix = Path(filename or "").suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    first = next((line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")), "")
    if first.startswith(("-", "hosts:", "---")):
        return "yaml"
    if "," in first and ":" not in first.split(",", 1)[0]:
        return "csv"
    return None


# --------------------------------------------------------------------------- classification rules


class TraitRuleForm(forms.Form):
    name = forms.CharField(
        label="Trait",
        max_length=57,
        help_text="The trait hosts matching the rule carry (and their label teapot.io/trait-<name>): "
        "lowercase letters, digits and '-'.",
    )
    rule = forms.CharField(
        strip=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "class": "code"}),
        help_text='e.g. accelerator(type == "nvidia-a100") or ram_gib >= 512 — the preview below updates as you type.',
    )
    description = forms.CharField(max_length=255, required=False)
    enabled = forms.BooleanField(required=False, initial=True, help_text="Disabled rules give no host their trait.")


# --------------------------------------------------------------------------- fleet settings

_LEVEL_SPLIT = re.compile(r"[,>]")
_WEIGHTS = ("base", "per_core", "per_gib_ram", "per_tb_disk")


def parse_levels(text: str) -> list[str]:
    return [part.strip() for part in _LEVEL_SPLIT.split(text or "") if part.strip()]


def parse_prices(text: str, what: str) -> dict[str, str]:
    """'name = price' lines → {name: price}; blank lines and '#' comments are skipped."""
    prices: dict[str, str] = {}
    errors = []
    for number, raw in enumerate((text or "").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, price = (part.strip() for part in line.partition("="))
        if not sep or not name or not price:
            errors.append(f"line {number}: write “{what} = price”")
            continue
        try:
            amount = Decimal(price)
            if not amount.is_finite() or amount < 0:
                raise InvalidOperation
        except InvalidOperation:
            errors.append(f"line {number}: {price!r} is not a price ≥ 0")
            continue
        if name in prices:
            errors.append(f"line {number}: {name} is given twice")
        prices[name] = str(amount)
    if errors:
        raise ValidationError(errors)
    return prices


def format_prices(prices: Mapping[str, object]) -> str:
    return "\n".join(f"{name} = {price}" for name, price in sorted((prices or {}).items()))


def _weight(label: str, help_text: str) -> forms.DecimalField:
    return forms.DecimalField(
        label=label, min_value=0, max_digits=12, decimal_places=4, help_text=help_text, localize=False
    )


class FleetSettingsForm(forms.Form):
    topology_levels = forms.CharField(
        label="Topology levels",
        max_length=400,
        help_text="From the coarsest, separated by “>” or commas, e.g. site > room > row > rack. "
        "Removing or reordering a level that a host's location uses is refused: change those locations first.",
    )
    cost_unit = forms.CharField(
        label="Cost unit", max_length=16, help_text="What costs are counted in, e.g. EUR or units."
    )
    base = _weight("Base per host", "A fixed amount per host and hour.")
    per_core = _weight("Per core", "Per CPU thread.")
    per_gib_ram = _weight("Per GiB RAM", "Per GiB of memory.")
    per_tb_disk = _weight("Per TB disk", "Per TB of total disk capacity.")
    per_accelerator = forms.CharField(
        label="Per accelerator (by type)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "code"}),
        help_text="One “type = price per device” per line, e.g. nvidia-a100 = 40.",
    )
    per_trait = forms.CharField(
        label="Premium per trait",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "code"}),
        help_text="One “trait = premium” per line, e.g. nvme = 4.",
    )
    preemption_notice_seconds = forms.IntegerField(
        label="Pre-emption notice (seconds)",
        min_value=0,
        max_value=86_400,
        help_text="How long a host reclaimed for another tenant's guarantee stays with its pool; "
        "both tenants see the countdown.",
    )
    minimum_cleaning = forms.ChoiceField(
        label="Least cleaning a node pool may choose",
        choices=[
            ("key_erase", "Key erase allowed (encrypted disks: the key is destroyed, ~1 minute)"),
            ("standard", "Standard only (Ironic wipes disk metadata between tenants)"),
        ],
    )
    provisioning_attempts = forms.IntegerField(
        label="Replacements per pool",
        min_value=0,
        max_value=20,
        help_text="Hosts a node pool may replace after they fail to provision before it reports a failure.",
    )
    reservation_extend_window_hours = forms.IntegerField(
        label="Extensions open (hours before the end)",
        min_value=0,
        max_value=8_760,
        help_text="A reservation may be extended only within this many hours before its end.",
    )
    reservation_max_hours = forms.IntegerField(
        label="Longest reservation (hours)",
        min_value=1,
        max_value=8_760,
        help_text="The longest a single reservation may last, extensions included.",
    )
    reservation_horizon_days = forms.IntegerField(
        label="Booking horizon (days)",
        min_value=1,
        max_value=1_095,
        help_text="How far ahead bookings may start, and how far a recurrence is expanded.",
    )
    reservation_reminder_minutes = forms.IntegerField(
        label="Reminder before the end (minutes)",
        min_value=0,
        max_value=10_080,
        help_text="Members are reminded (page banner, email) this long before a reservation ends; 0: no reminder.",
    )

    @classmethod
    def initial_from(cls, fleet) -> dict:
        model = fleet.get_cost_model().to_dict()
        return {
            "topology_levels": " > ".join(fleet.topology_levels),
            "cost_unit": fleet.cost_unit,
            "preemption_notice_seconds": fleet.preemption_notice_seconds,
            "minimum_cleaning": fleet.minimum_cleaning,
            "provisioning_attempts": fleet.provisioning_attempts,
            "reservation_extend_window_hours": fleet.reservation_extend_window_hours,
            "reservation_max_hours": fleet.reservation_max_hours,
            "reservation_horizon_days": fleet.reservation_horizon_days,
            "reservation_reminder_minutes": fleet.reservation_reminder_minutes,
            **{key: Decimal(model[key]).normalize() for key in _WEIGHTS},
            "per_accelerator": format_prices(model["per_accelerator"]),
            "per_trait": format_prices(model["per_trait"]),
        }

    def clean_topology_levels(self) -> list[str]:
        levels = parse_levels(self.cleaned_data["topology_levels"])
        if not levels:
            raise ValidationError("Name at least one level, e.g. site > room > row > rack.")
        return levels

    def clean_per_accelerator(self) -> dict[str, str]:
        return parse_prices(self.cleaned_data["per_accelerator"], "type")

    def clean_per_trait(self) -> dict[str, str]:
        return parse_prices(self.cleaned_data["per_trait"], "trait")

    def cost_model_dict(self) -> dict:
        """What :meth:`hosts.costs.CostModel.from_dict` accepts (only the fields that are valid)."""
        data = self.cleaned_data
        model: dict = {key: str(data[key]) for key in _WEIGHTS if data.get(key) is not None}
        for key in ("per_accelerator", "per_trait"):
            if isinstance(data.get(key), dict):
                model[key] = data[key]
        return model

    def add_settings_errors(self, error: ValidationError) -> None:
        """'cost_model' errors name the weight first ("per_core: …", "per_trait[x]: …")."""
        for key, messages in error.message_dict.items():
            if key == "cost_model":
                for message in messages:
                    weight = re.split(r"[:\[]", message, maxsplit=1)[0].strip()
                    self.add_error(weight if weight in self.fields else None, message)
            else:
                self.add_error(key if key in self.fields else None, messages)
