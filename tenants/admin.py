from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.utils import timezone

from tenants.models import ApiToken, User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["email"]
    list_display = ["email", "first_name", "last_name", "is_staff", "is_active", "last_login"]
    search_fields = ["email", "first_name", "last_name"]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Name", {"fields": ("first_name", "last_name")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2", "is_staff")}),)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "user__email", "prefix"]
    # The hash is useless to a reader and the plaintext is never stored; nothing to edit.
    readonly_fields = ["user", "name", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at"]
    exclude = ["key_hash"]
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False  # tokens are created by their owner (profile page) or create_api_token

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} token(s).")


# =============================================================================== tenancy
#
# Operators manage tenants, quotas and the catalogue here. Quota and quota-class writes go
# through tenants.quota (the admission check runs in the forms' clean(), so a refusal is a form
# error and nothing is saved; the service checks again under its lock when saving). Tenants,
# memberships and the catalogue are plain saves, each with an audit entry in the same
# transaction (the admin's change view is atomic). Clusters, node pools and their hosts are
# shown, not edited: their writes need the reconcile (tenants.clusters); the audit log is
# append-only.

from django import forms  # noqa: E402 (appended section)
from django.contrib import messages  # noqa: E402
from django.core.exceptions import ValidationError  # noqa: E402
from django.db.models import Count  # noqa: E402
from django.forms.models import BaseInlineFormSet  # noqa: E402
from django.utils.html import format_html, format_html_join  # noqa: E402

from hosts.requirements import Requirement, RequirementError  # noqa: E402
from tenants import clusters as cluster_services  # noqa: E402
from tenants import quota as quota_services  # noqa: E402
from tenants.audit import audit_record, changes  # noqa: E402
from tenants.models import (  # noqa: E402
    AuditEntry,
    Cluster,
    KubernetesVersion,
    Membership,
    NodePool,
    OsImage,
    PoolHost,
    Quota,
    QuotaClass,
    Tenant,
)


def _errors_to_form(form: forms.BaseForm, exc: ValidationError) -> None:
    """A service's ValidationError as form errors, on the field it names when the form has it
    (and has no error there yet: the field's own validation said it first)."""
    for field, errors in exc.message_dict.items():
        target = field if field in form.fields else None
        if target is None or target not in form.errors:
            form.add_error(target, errors)


def _error_text(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items())
    return " ".join(exc.messages)


class AuditedAdmin(admin.ModelAdmin):
    """Plain saves and deletes, each recorded in the audit log (``<audit_name>.create`` …)."""

    audit_name = ""
    audit_skip = ("id", "created_at", "updated_at")

    def audit_snapshot(self, obj) -> dict:
        return {
            f.name: getattr(obj, f.name) for f in obj._meta.concrete_fields if f.name not in self.audit_skip
        }  # related objects are recorded as their names (tenants.audit)

    def audit_tenant(self, obj) -> Tenant | None:
        return None

    def save_model(self, request, obj, form, change):
        before = self.audit_snapshot(type(obj).objects.get(pk=obj.pk)) if change else None
        super().save_model(request, obj, form, change)
        audit_record(
            actor=request.user,
            action=f"{self.audit_name}.{'update' if change else 'create'}",
            target=obj,
            tenant=self.audit_tenant(obj),
            before=before,
            after=self.audit_snapshot(obj),
        )

    def delete_model(self, request, obj):
        audit_record(
            actor=request.user,
            action=f"{self.audit_name}.delete",
            target=obj,
            tenant=self.audit_tenant(obj),
            before=self.audit_snapshot(obj),
        )
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:  # one audit entry each
            self.delete_model(request, obj)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


# ----------------------------------------------------------------------------------- tenants


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ("user", "role", "created_at")
    readonly_fields = ("created_at",)
    autocomplete_fields = ("user",)


class QuotaInlineForm(forms.ModelForm):
    class Meta:
        model = Quota
        fields = ("quota_class", "guaranteed", "maximum")

    def clean(self):
        data = super().clean()
        if self.instance.pk and "quota_class" in self.changed_data:
            self.add_error(
                "quota_class", "A quota stays in its class: delete this row and add one for the other class."
            )
        if "guaranteed" in data and "maximum" in data:
            try:
                quota_services.quota_numbers(data["guaranteed"], data["maximum"])
            except ValidationError as exc:
                _errors_to_form(self, exc)
        return data


class QuotaInlineFormSet(BaseInlineFormSet):
    def clean(self):
        """Admission for all the rows together: the rows may raise several guarantees at once."""
        super().clean()
        wanted, forms_of = {}, {}
        for form in self.forms:
            data = getattr(form, "cleaned_data", None)
            if not data or data.get("DELETE") or form.errors or not form.has_changed():
                continue
            if data.get("quota_class") is None or data.get("guaranteed") is None:
                continue
            key = (self.instance.pk, data["quota_class"])
            wanted[key], forms_of[key] = data["guaranteed"], form
        for key, refusal in quota_services.guarantee_refusals(wanted).items():
            forms_of[key].add_error("guaranteed", refusal)


class QuotaInline(admin.TabularInline):
    model = Quota
    form = QuotaInlineForm
    formset = QuotaInlineFormSet
    extra = 0
    fields = ("quota_class", "guaranteed", "maximum", "updated_at")
    readonly_fields = ("updated_at",)


@admin.register(Tenant)
class TenantAdmin(AuditedAdmin):
    audit_name = "tenant"
    inlines = (MembershipInline, QuotaInline)
    list_display = ("slug", "name", "priority", "member_count", "created_at")
    search_fields = ("slug", "name", "description")
    fields = ("slug", "name", "description", "priority", "usage", "created_at")

    def get_readonly_fields(self, request, obj=None):
        # The slug names the tenant's objects in the management cluster: fixed once created.
        return ("slug", "usage", "created_at") if obj is not None else ("usage", "created_at")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(member_count=Count("memberships"))

    def audit_tenant(self, obj) -> Tenant | None:
        return obj if obj.pk else None

    @admin.display(description="members", ordering="member_count")
    def member_count(self, tenant: Tenant) -> int:
        return tenant.member_count

    @admin.display(description="usage now")
    def usage(self, tenant: Tenant) -> str:
        if tenant.pk is None:
            return "—"
        rows = quota_services.tenant_usage(tenant)
        if not rows:
            return "No quota and no pools."
        return format_html(
            "<table><tr><th>class</th><th>guaranteed</th><th>maximum</th><th>pools ask for</th>"
            "<th>holds</th><th>of which borrowed</th></tr>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                ((u.quota_class.name, u.guaranteed, u.maximum, u.committed, u.held, u.borrowed) for u in rows),
            ),
        )

    def save_formset(self, request, form, formset, change):
        if formset.model is Quota:
            self._save_quotas(request, form.instance, formset)
        elif formset.model is Membership:
            self._save_memberships(request, form.instance, formset)
        else:
            super().save_formset(request, form, formset, change)

    def _save_quotas(self, request, tenant: Tenant, formset) -> None:
        """Through tenants.quota: deletions first, then lowered guarantees, then raised ones
        (a raise may rely on a lowering in the same form)."""
        formset.save(commit=False)
        for quota in formset.deleted_objects:
            quota_services.quota_delete(quota=quota, actor=request.user)
        stored = dict(Quota.objects.filter(tenant=tenant).values_list("quota_class_id", "guaranteed"))
        rows = [*formset.new_objects, *(quota for quota, _ in formset.changed_objects)]
        rows.sort(key=lambda q: q.guaranteed - stored.get(q.quota_class_id, 0))
        for quota in rows:
            try:
                saved = quota_services.quota_update(
                    tenant=tenant,
                    quota_class=quota.quota_class,
                    guaranteed=quota.guaranteed,
                    maximum=quota.maximum,
                    actor=request.user,
                )
            except ValidationError as exc:  # another operator's change came first
                self.message_user(request, f"{quota.quota_class.name}: {_error_text(exc)}", messages.ERROR)
                continue
            quota.pk = saved.pk

    def _save_memberships(self, request, tenant: Tenant, formset) -> None:
        formset.save(commit=False)

        def record(action: str, membership: Membership, before=None, after=None) -> None:
            audit_record(
                actor=request.user,
                action=action,
                target=membership,
                target_repr=f"{membership.user.email} in {tenant.slug}",
                tenant=tenant,
                before=before,
                after=after,
            )

        for membership in formset.deleted_objects:
            record("membership.remove", membership, before={"email": membership.user.email, "role": membership.role})
            membership.delete()
        for membership, _ in formset.changed_objects:
            old = Membership.objects.select_related("user").get(pk=membership.pk)
            membership.save()
            record(
                "membership.role",
                membership,
                before={"email": old.user.email, "role": old.role},
                after={"email": membership.user.email, "role": membership.role},
            )
        for membership in formset.new_objects:
            membership.save()
            record("membership.add", membership, after={"email": membership.user.email, "role": membership.role})


# ----------------------------------------------------------------------------------- quota


class QuotaAdminForm(forms.ModelForm):
    class Meta:
        model = Quota
        fields = ("tenant", "quota_class", "guaranteed", "maximum")

    def clean(self):
        """The service's checks, so a refusal (e.g. guarantees the fleet cannot carry) is a form
        error and nothing is saved."""
        data = super().clean()
        tenant = data.get("tenant") or (self.instance.tenant if self.instance.tenant_id else None)
        klass = data.get("quota_class") or (self.instance.quota_class if self.instance.quota_class_id else None)
        if tenant is None or klass is None or data.get("guaranteed") is None or data.get("maximum") is None:
            return data
        try:
            quota_services.quota_check(
                tenant=tenant, quota_class=klass, guaranteed=data["guaranteed"], maximum=data["maximum"]
            )
        except ValidationError as exc:
            _errors_to_form(self, exc)
        return data


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    form = QuotaAdminForm
    list_display = ("tenant", "quota_class", "guaranteed", "maximum", "updated_at")
    list_filter = ("quota_class", "tenant")
    list_select_related = ("tenant", "quota_class")
    search_fields = ("tenant__slug", "tenant__name", "quota_class__name")

    def get_readonly_fields(self, request, obj=None):
        # Another tenant or class is another quota: delete this one and add that.
        return ("tenant", "quota_class", "updated_at") if obj is not None else ("updated_at",)

    def save_model(self, request, obj, form, change):
        try:
            saved = quota_services.quota_update(
                tenant=obj.tenant,
                quota_class=obj.quota_class,
                guaranteed=obj.guaranteed,
                maximum=obj.maximum,
                actor=request.user,
            )
        except ValidationError as exc:  # another operator's change came first
            self.message_user(request, _error_text(exc), messages.ERROR)
            return
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        quota_services.quota_delete(quota=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for quota in queryset:
            quota_services.quota_delete(quota=quota, actor=request.user)


class QuotaClassForm(forms.ModelForm):
    """The requirement is written as compact text and stored as canonical JSON."""

    requirement_text = forms.CharField(
        label="Requirement",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false", "style": "font-family: monospace"}),
        help_text="Compact text, e.g. gpu:nvidia-a100, or highmem,!gpu. Empty: any host.",
    )

    class Meta:
        model = QuotaClass
        fields = ("name", "description", "order")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.requirement is None:
            self.instance.requirement = {}
        if self.instance.pk and not self.is_bound:
            try:
                self.initial["requirement_text"] = Requirement.from_json(self.instance.requirement).to_compact()
            except RequirementError:
                self.initial["requirement_text"] = ""

    def clean_requirement_text(self) -> str:
        try:
            self.requirement = Requirement.parse(self.cleaned_data["requirement_text"])
        except RequirementError as exc:
            where = f" (at character {exc.position + 1})" if exc.position is not None else ""
            raise ValidationError(f"{exc.message}{where}") from exc
        return self.requirement.to_compact()

    def clean(self):
        """The service's checks (name, and for a changed requirement: the guarantees still fit)."""
        data = super().clean()
        if "name" in data and hasattr(self, "requirement"):
            try:
                quota_services.quota_class_check(
                    name=data["name"],
                    requirement=self.requirement,
                    instance=self.instance if self.instance.pk else None,
                )
            except ValidationError as exc:
                errors = exc.message_dict  # a new dict each time it is read
                if "requirement" in errors:
                    self.add_error("requirement_text", errors.pop("requirement"))
                if errors:
                    _errors_to_form(self, ValidationError(errors))
        return data


@admin.register(QuotaClass)
class QuotaClassAdmin(admin.ModelAdmin):
    form = QuotaClassForm
    list_display = ("name", "requirement_described", "description", "order", "updated_at")
    search_fields = ("name", "description")
    fields = ("name", "description", "requirement_text", "order", "capacity", "created_at", "updated_at")
    readonly_fields = ("capacity", "created_at", "updated_at")

    @admin.display(description="requirement")
    def requirement_described(self, klass: QuotaClass) -> str:
        try:
            return klass.get_requirement().describe()
        except RequirementError as exc:
            return f"invalid: {exc.message}"

    @admin.display(description="capacity now")
    def capacity(self, klass: QuotaClass) -> str:
        if klass.pk is None:
            return "—"
        row = next((c for c in quota_services.fleet_capacity() if c.quota_class.pk == klass.pk), None)
        if row is None:
            return "—"
        return (
            f"{row.hosts} eligible hosts meet it ({row.free} free now); guarantees total {row.guaranteed_total}, "
            f"maximums {row.maximum_total}; pools hold {row.held_total}"
        )

    def save_model(self, request, obj, form, change):
        try:
            saved = quota_services.quota_class_save(
                name=obj.name,
                requirement=form.requirement,
                description=obj.description,
                order=obj.order,
                instance=obj if change else None,
                actor=request.user,
            )
        except ValidationError as exc:  # another operator's change came first
            self.message_user(request, _error_text(exc), messages.ERROR)
            return
        obj.pk, obj.requirement = saved.pk, saved.requirement

    def delete_model(self, request, obj):
        # Only a class no quota and no pool uses can be deleted (PROTECT): no guarantee changes.
        audit_record(
            actor=request.user,
            action="quota_class.delete",
            target=obj,
            before={"name": obj.name, "requirement": obj.requirement, "description": obj.description},
        )
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for klass in queryset:
            self.delete_model(request, klass)


# ----------------------------------------------------------------------------------- catalogue


@admin.register(KubernetesVersion)
class KubernetesVersionAdmin(AuditedAdmin):
    audit_name = "kubernetes_version"
    list_display = ("version", "available", "is_default", "notes")
    list_filter = ("available",)
    search_fields = ("version", "notes")


@admin.register(OsImage)
class OsImageAdmin(AuditedAdmin):
    audit_name = "os_image"
    list_display = ("name", "kubernetes_version", "format", "available", "created_at")
    list_filter = ("available", "format", "kubernetes_version")
    list_select_related = ("kubernetes_version",)
    search_fields = ("name", "url")


# ----------------------------------------------------------------------------------- clusters


@admin.action(description="Delete the selected clusters (pools first, hosts released)")
def delete_clusters(modeladmin, request, queryset):
    count = 0
    for cluster in queryset.filter(deleted_at__isnull=True):
        cluster_services.cluster_delete(cluster=cluster, actor=request.user)
        count += 1
    modeladmin.message_user(request, f"Deleting {count} cluster(s).", messages.SUCCESS)


@admin.register(Cluster)
class ClusterAdmin(ReadOnlyAdmin):
    """Shown, not edited: a cluster's writes go through tenants.clusters (they need the reconcile)."""

    actions = (delete_clusters,)
    list_display = ("__str__", "tenant", "kubernetes_version", "phase", "endpoint_host", "created_at", "deleted_at")
    list_filter = ("phase", "tenant", "kubernetes_version")
    list_select_related = ("tenant", "kubernetes_version")
    search_fields = ("name", "tenant__slug")


@admin.action(description="Delete the selected node pools (hosts released)")
def delete_node_pools(modeladmin, request, queryset):
    count = 0
    for pool in queryset.filter(deleted_at__isnull=True):
        cluster_services.node_pool_delete(pool=pool, actor=request.user)
        count += 1
    modeladmin.message_user(request, f"Deleting {count} node pool(s).", messages.SUCCESS)


@admin.register(NodePool)
class NodePoolAdmin(ReadOnlyAdmin):
    """Shown, not edited: sizes are checked against quota by tenants.clusters."""

    actions = (delete_node_pools,)
    list_display = (
        "__str__",
        "quota_class",
        "workload_class",
        "size",
        "desired",
        "ready",
        "phase",
        "created_at",
        "deleted_at",
    )
    list_filter = ("phase", "workload_class", "quota_class", "cluster__tenant")
    list_select_related = ("cluster__tenant", "quota_class")
    search_fields = ("name", "uid", "cluster__name", "cluster__tenant__slug")

    @admin.display(description="size")
    def size(self, pool: NodePool) -> str:
        return f"{pool.autoscale_min}–{pool.autoscale_max}" if pool.autoscaled else str(pool.replicas)


@admin.register(PoolHost)
class PoolHostAdmin(ReadOnlyAdmin):
    list_display = ("host", "pool", "state", "guaranteed", "allocated_at", "ready_at", "preempt_at", "released_at")
    list_filter = ("state", "guaranteed", "pool__quota_class")
    list_select_related = ("host", "pool__cluster__tenant")
    search_fields = ("host__name", "pool__name", "pool__cluster__name", "pool__cluster__tenant__slug")
    date_hierarchy = "allocated_at"


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """The audit log: append-only (a trigger refuses UPDATE and DELETE), so read-only here."""

    list_display = ("at", "actor_label", "tenant", "action", "target_type", "target_repr")
    list_filter = ("action", "target_type")
    list_select_related = ("tenant",)
    search_fields = ("actor_label", "action", "target_repr", "tenant__slug")
    date_hierarchy = "at"
    fields = ("at", "actor_label", "tenant", "action", "target_type", "target_id", "target_repr", "what_changed")
    readonly_fields = fields

    @admin.display(description="changes")
    def what_changed(self, entry: AuditEntry) -> str:
        rows = changes(entry.before, entry.after)
        if not rows:
            return "—"
        return format_html(
            "<table><tr><th>field</th><th>before</th><th>after</th></tr>{}</table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )
