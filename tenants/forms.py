"""Forms of the tenant pages. They check the shape of what was typed; the rules (quota, names,
versions, images, last owner…) are the services', whose refusals come back keyed by field and
are shown next to it (:func:`add_service_errors`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone

from hosts.forms_placement import PlacementFieldsMixin
from tenants.models import CLUSTER_NAME_MAX, POOL_NAME_MAX, TENANT_SLUG_MAX, Cluster, NodePool, Role
from tenants.models import RESERVED_NAMES as RESERVED_SLUGS  # URL segments under /t/ that are not tenants

FIXED, AUTOSCALE = "fixed", "autoscale"
ADDON_HELP = {
    Cluster.Addon.KUBEVIRT: "Run virtual machines next to containers; the nodes expose their hardware virtualisation.",
    Cluster.Addon.KATA: "Run untrusted pods in lightweight VMs (runtime class “kata”) for stronger isolation.",
}


class ApiTokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the token is for, e.g. “CI pipeline”.")
    expires_in_days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=3650,
        label="Expires in (days)",
        help_text="Leave empty for a token that does not expire.",
    )

    tenant = forms.ModelChoiceField(
        queryset=None,
        required=False,
        empty_label="All my tenants",
        label="Only for",
        help_text="A token for one tenant cannot see or touch any other (automation for one department).",
    )

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        from tenants.models import Tenant

        self.fields["tenant"].queryset = (
            Tenant.objects.visible_to(user).order_by("slug") if user is not None else Tenant.objects.none()
        )
        self.fields["tenant"].to_field_name = "slug"

    def expires_at(self):
        days = self.cleaned_data.get("expires_in_days")
        return timezone.now() + timedelta(days=days) if days else None


def add_service_errors(form: forms.Form, error: ValidationError, *, aliases: dict[str, str] | None = None) -> None:
    """A service's refusal next to the field it names (or above the form)."""
    aliases = aliases or {}
    if not hasattr(error, "error_dict"):
        form.add_error(None, error.messages)
        return
    for key, messages in error.message_dict.items():
        field = aliases.get(key, key)
        form.add_error(field if field in form.fields else None, messages)


# ----------------------------------------------------------------------------------- clusters


class ClusterForm(forms.Form):
    name = forms.CharField(
        max_length=CLUSTER_NAME_MAX,
        help_text=f"Lowercase letters, digits and '-', at most {CLUSTER_NAME_MAX} characters, e.g. batch.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "autocapitalize": "off", "spellcheck": "false"}),
    )
    kubernetes_version = forms.ChoiceField(label="Kubernetes version")
    control_plane_replicas = forms.IntegerField(
        min_value=1,
        max_value=5,
        initial=2,
        label="Control-plane replicas",
        help_text="API servers run as pods in the management cluster: 2 or 3 survive the loss of one.",
    )
    addons = forms.MultipleChoiceField(
        required=False, choices=Cluster.Addon.choices, widget=forms.CheckboxSelectMultiple, label="Add-ons"
    )

    def __init__(self, *args, versions: Sequence, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["kubernetes_version"].choices = [
            (v.version, f"{v.version} (default)" if v.is_default else v.version) for v in versions
        ]
        default = next((v.version for v in versions if v.is_default), None)
        if default and not self.is_bound:
            self.initial.setdefault("kubernetes_version", default)

    def clean_name(self):
        name = self.cleaned_data["name"].strip().lower()
        if name == "new":
            raise ValidationError("“new” is the address of this form; choose another name.")
        return name

    def addon_choices(self) -> list[dict]:
        chosen = set(self["addons"].value() or ())
        return [
            {"value": value, "label": label, "help": ADDON_HELP.get(value, ""), "checked": value in chosen}
            for value, label in Cluster.Addon.choices
        ]


class ConfirmNameForm(forms.Form):
    """Type the name to confirm a deletion."""

    confirm_name = forms.CharField(label="Type the name to confirm", required=True)

    def __init__(self, *args, expected: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.expected = expected

    def clean_confirm_name(self):
        value = self.cleaned_data["confirm_name"].strip()
        if value != self.expected:
            raise ValidationError(f"Type {self.expected} exactly to confirm.")
        return value


# ----------------------------------------------------------------------------------- node pools


class SizeFormMixin:
    """Fixed size or autoscaled bounds; zero is a valid size."""

    def size_values(self) -> dict:
        data = self.cleaned_data
        if data.get("sizing") == AUTOSCALE:
            return {
                "replicas": None,
                "autoscale_min": data.get("autoscale_min"),
                "autoscale_max": data.get("autoscale_max"),
            }
        return {"replicas": data.get("replicas"), "autoscale_min": None, "autoscale_max": None}

    def clean_size(self, data: dict) -> None:
        if data.get("sizing") == AUTOSCALE:
            low, high = data.get("autoscale_min"), data.get("autoscale_max")
            if low is None and "autoscale_min" not in self.errors:
                self.add_error("autoscale_min", "An autoscaled pool needs a minimum (0 is fine).")
            if high is None and "autoscale_max" not in self.errors:
                self.add_error("autoscale_max", "An autoscaled pool needs a maximum.")
            if low is not None and high is not None and low > high:
                self.add_error("autoscale_max", "The maximum must be at least the minimum.")
        elif data.get("replicas") is None and "replicas" not in self.errors:
            self.add_error("replicas", "How many hosts? 0 keeps the pool without workers.")


def _size_fields() -> dict:
    return {
        "sizing": forms.ChoiceField(
            choices=[(FIXED, "Fixed size"), (AUTOSCALE, "Autoscaled")],
            initial=FIXED,
            widget=forms.RadioSelect,
            label="Size",
        ),
        "replicas": forms.IntegerField(required=False, min_value=0, max_value=500, label="Hosts"),
        "autoscale_min": forms.IntegerField(required=False, min_value=0, max_value=500, label="At least"),
        "autoscale_max": forms.IntegerField(required=False, min_value=0, max_value=500, label="At most"),
    }


class NodePoolForm(SizeFormMixin, PlacementFieldsMixin):
    """A node pool. The requirement field carries the name of the selection preview's form
    (hosts.forms_select.SelectionForm); the placement fields are the mixin's, as there."""

    name = forms.CharField(
        max_length=POOL_NAME_MAX,
        help_text=f"Lowercase letters, digits and '-', at most {POOL_NAME_MAX} characters, e.g. workers.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "autocapitalize": "off", "spellcheck": "false"}),
    )
    quota_class = forms.ChoiceField(label="Quota class", widget=forms.RadioSelect)
    requirement = forms.CharField(
        required=False,
        strip=False,
        max_length=2000,
        label="Extra requirement",
        widget=forms.Textarea(
            attrs={"rows": 2, "spellcheck": "false", "class": "code", "autocomplete": "off", "autocapitalize": "off"}
        ),
        help_text="Optional, on top of the class's: terms separated by commas, e.g. cores>=64,nvme.",
    )
    image = forms.ChoiceField(label="OS image")
    cleaning = forms.ChoiceField(
        choices=NodePool.Cleaning.choices,
        initial=NodePool.Cleaning.STANDARD,
        widget=forms.RadioSelect,
        label="Cleaning when a host leaves",
    )
    workload_class = forms.ChoiceField(
        choices=NodePool.WorkloadClass.choices,
        initial=NodePool.WorkloadClass.ON_DEMAND,
        widget=forms.RadioSelect,
        label="Workload class",
    )

    def __init__(self, *args, classes: Sequence, images: Sequence, levels: Sequence[str], **kwargs):
        super().__init__(*args, levels=levels, **kwargs)
        self.fields.update(_size_fields())
        self.fields["quota_class"].choices = [(c.name, c.name) for c in classes]
        self.fields["image"].choices = [(i.name, i.name) for i in images]
        if not self.is_bound:
            if classes:
                self.initial.setdefault("quota_class", classes[0].name)
            if images:
                self.initial.setdefault("image", images[0].name)
            self.initial.setdefault("replicas", 1)

    def clean(self):
        data = super().clean()  # the placement policy too
        self.clean_size(data)
        return data

    def service_values(self) -> dict:
        data = self.cleaned_data
        return {
            "name": data["name"],
            "quota_class": data["quota_class"],
            "image": data["image"],
            "requirement": data["requirement"].strip(),
            "policy": self.policy_json(),
            "cleaning": data["cleaning"],
            "workload_class": data["workload_class"],
            **self.size_values(),
        }


class ScaleForm(SizeFormMixin, forms.Form):
    confirm = forms.BooleanField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields.update(_size_fields())

    @classmethod
    def for_pool(cls, pool: NodePool) -> ScaleForm:
        if pool.autoscaled:
            initial = {"sizing": AUTOSCALE, "autoscale_min": pool.autoscale_min, "autoscale_max": pool.autoscale_max}
        else:
            initial = {"sizing": FIXED, "replicas": pool.replicas}
        return cls(initial=initial)

    def clean(self):
        data = super().clean()
        self.clean_size(data)
        return data


# ----------------------------------------------------------------------------------- members


class MemberAddForm(forms.Form):
    email = forms.EmailField(widget=forms.EmailInput(attrs={"autocomplete": "off", "placeholder": "name@example.org"}))
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


ROLE_HELP = {
    Role.OWNER: "manages members and sees the audit log, and everything a member does",
    Role.MEMBER: "creates, scales and deletes clusters and node pools",
    Role.VIEWER: "sees everything, changes nothing",
}


# ----------------------------------------------------------------------------------- operators


class TenantForm(forms.Form):
    slug = forms.CharField(
        max_length=TENANT_SLUG_MAX,
        label="Short name",
        help_text="Used in URLs and in object names in the management cluster, e.g. physics. Cannot change later.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "autocapitalize": "off", "spellcheck": "false"}),
    )
    name = forms.CharField(max_length=100, help_text="The department's name, e.g. Physics.")
    description = forms.CharField(max_length=255, required=False)
    priority = forms.IntegerField(
        initial=0, help_text="Higher wins: when hosts must be pre-empted, lower-priority tenants' hosts go first."
    )
    owner_email = forms.EmailField(
        required=False,
        label="First owner's email",
        help_text="Optional: they can then add the others themselves.",
    )

    def clean_slug(self):
        slug = self.cleaned_data["slug"].strip().lower()
        if slug in RESERVED_SLUGS:
            raise ValidationError(f"“{slug}” is reserved for Teapot's own pages; choose another.")
        return slug


class QuotaForm(forms.Form):
    """Guaranteed and maximum per quota class: fields ``<class>-guaranteed`` and ``<class>-maximum``."""

    def __init__(self, *args, classes: Sequence, current: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.classes = list(classes)
        for klass in self.classes:
            guaranteed, maximum = current.get(klass.pk, (0, 0))
            self.fields[f"{klass.name}-guaranteed"] = forms.IntegerField(
                min_value=0, max_value=10000, initial=guaranteed, label="Guaranteed"
            )
            self.fields[f"{klass.name}-maximum"] = forms.IntegerField(
                min_value=0, max_value=10000, initial=maximum, label="Maximum"
            )
        self.current = current

    def clean(self):
        data = super().clean()
        for klass in self.classes:
            g, m = data.get(f"{klass.name}-guaranteed"), data.get(f"{klass.name}-maximum")
            if g is not None and m is not None and g > m:
                self.add_error(f"{klass.name}-guaranteed", "The guaranteed minimum cannot exceed the maximum.")
        return data

    def rows(self) -> list[dict]:
        return [
            {"klass": k, "guaranteed": self[f"{k.name}-guaranteed"], "maximum": self[f"{k.name}-maximum"]}
            for k in self.classes
        ]

    def changed_classes(self) -> list[tuple]:
        """(class, guaranteed, maximum) for each class whose numbers changed."""
        out = []
        for klass in self.classes:
            values = (self.cleaned_data[f"{klass.name}-guaranteed"], self.cleaned_data[f"{klass.name}-maximum"])
            if values != tuple(self.current.get(klass.pk, (0, 0))):
                out.append((klass, *values))
        return out


class AuditFilterForm(forms.Form):
    tenant = forms.ChoiceField(required=False, label="Tenant")
    action = forms.ChoiceField(required=False, label="Action")

    def __init__(self, *args, tenants: Sequence[str], actions: Sequence[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tenant"].choices = [("", "every tenant"), *((s, s) for s in tenants)]
        self.fields["action"].choices = [("", "every action"), *((a, a) for a in actions)]
