"""Writes for accounts and tokens. Every write goes through a named service (STYLE.md §1)."""

from __future__ import annotations

import logging
import secrets
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from tenants.models import ApiToken, User, hash_token

log = logging.getLogger(__name__)

TOKEN_PREFIX = "tpt_"  # noqa: S105 (a recognisable prefix, not a secret)


def api_token_create(*, user: User, name: str, expires_at: datetime | None = None, tenant=None) -> tuple[ApiToken, str]:
    """Create a token for ``user``. Returns the row and the plaintext, which is never stored.

    With ``tenant`` the token acts only within that tenant (automation for one department): it
    must be one the user may see (a member's, or any for an operator)."""
    if tenant is not None:
        from tenants.models import Tenant

        if not Tenant.objects.visible_to(user).filter(pk=tenant.pk).exists():
            raise ValidationError({"tenant": "You can only scope a token to a tenant you belong to."})
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "Give the token a name, e.g. 'CI pipeline'."})
    if len(name) > 100:
        raise ValidationError({"name": "The name can be at most 100 characters."})
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "The expiry must be in the future."})
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            token = ApiToken.objects.create(
                user=user,
                name=name,
                prefix=plaintext[:12],
                key_hash=hash_token(plaintext),
                expires_at=expires_at,
                tenant=tenant,
            )
    except IntegrityError as exc:
        raise ValidationError({"name": "You already have an active token with this name."}) from exc
    log.info(
        "api token created",
        extra={"user_id": user.pk, "token_id": token.pk, "tenant": tenant.slug if tenant is not None else ""},
    )
    return token, plaintext


def api_token_revoke(*, token: ApiToken, acting_user: User) -> ApiToken:
    updated = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    if updated:
        log.info("api token revoked", extra={"user_id": acting_user.pk, "token_id": token.pk})
    token.refresh_from_db()
    return token


def user_ensure(*, email: str, password: str | None = None, is_staff: bool = False, **names) -> tuple[User, bool]:
    """Create the user if missing (idempotent); make the email a verified primary address."""
    from allauth.account.models import EmailAddress

    email = email.strip().lower()
    with transaction.atomic():
        user, created = User.objects.get_or_create(
            email=email, defaults={"is_staff": is_staff, "is_superuser": is_staff, **names}
        )
        if created:
            if password:
                user.set_password(password)
            else:
                user.set_unusable_password()
            user.save()
        EmailAddress.objects.update_or_create(user=user, email=email, defaults={"verified": True, "primary": True})
    return user, created


# =============================================================================== tenants and members


def _tenant_snapshot(tenant) -> dict:
    return {"slug": tenant.slug, "name": tenant.name, "description": tenant.description, "priority": tenant.priority}


def tenant_create(*, slug: str, name: str, description: str = "", priority: int = 0, actor=None):
    """A department (operators only: the views check). Quotas and members come next."""
    from tenants.audit import audit_record
    from tenants.models import RESERVED_NAMES, TENANT_SLUG, TENANT_SLUG_MAX, Tenant

    slug = (slug or "").strip().lower()
    name = (name or "").strip()
    if not slug:
        raise ValidationError({"slug": "Give the tenant a short name (used in URLs and object names)."})
    if len(slug) > TENANT_SLUG_MAX:
        raise ValidationError({"slug": f"At most {TENANT_SLUG_MAX} characters."})
    try:
        TENANT_SLUG(slug)
    except ValidationError as exc:
        raise ValidationError({"slug": exc.messages[0]}) from exc
    if slug in RESERVED_NAMES:
        raise ValidationError({"slug": f"{slug!r} is a word the pages' addresses use; choose another."})
    if not name:
        raise ValidationError({"name": "Give the tenant a name, e.g. Physics."})
    try:
        priority = int(priority)
    except (TypeError, ValueError) as exc:
        raise ValidationError({"priority": "A whole number."}) from exc
    try:
        with transaction.atomic():
            tenant = Tenant.objects.create(slug=slug, name=name[:100], description=description[:255], priority=priority)
            audit_record(
                actor=actor, action="tenant.create", target=tenant, tenant=tenant, after=_tenant_snapshot(tenant)
            )
    except IntegrityError as exc:
        raise ValidationError({"slug": f"A tenant named {slug} exists."}) from exc
    return tenant


def tenant_update(*, tenant, actor=None, **fields):
    from tenants.audit import audit_record

    allowed = {"name", "description", "priority"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValidationError({sorted(unknown)[0]: "This cannot be changed (the slug names objects in the cluster)."})
    before = _tenant_snapshot(tenant)
    if "name" in fields:
        name = (fields["name"] or "").strip()
        if not name:
            raise ValidationError({"name": "Give the tenant a name."})
        tenant.name = name[:100]
    if "description" in fields:
        tenant.description = (fields["description"] or "")[:255]
    if "priority" in fields:
        try:
            tenant.priority = int(fields["priority"])
        except (TypeError, ValueError) as exc:
            raise ValidationError({"priority": "A whole number."}) from exc
    with transaction.atomic():
        tenant.save()
        audit_record(
            actor=actor,
            action="tenant.update",
            target=tenant,
            tenant=tenant,
            before=before,
            after=_tenant_snapshot(tenant),
        )
    return tenant


def membership_add(*, tenant, email: str, role: str = "member", actor=None):
    """Invite ``email`` into ``tenant`` with ``role`` (owners and operators: the views check).
    A person without an account gets one without a password: they sign in by resetting it
    (or through single sign-on)."""
    from django.core.validators import validate_email

    from tenants.audit import audit_record
    from tenants.models import Membership, Role

    email = (email or "").strip().lower()
    try:
        validate_email(email)
    except ValidationError as exc:
        raise ValidationError({"email": "Enter a valid email address."}) from exc
    if role not in Role.values:
        raise ValidationError({"role": f"Choose {', '.join(Role.values)}."})
    with transaction.atomic():
        user, created = user_ensure(email=email)
        membership, made = Membership.objects.get_or_create(tenant=tenant, user=user, defaults={"role": role})
        if not made:
            raise ValidationError({"email": f"{email} is already a {membership.role} of {tenant.slug}."})
        audit_record(
            actor=actor,
            action="membership.add",
            target=membership,
            target_repr=f"{email} in {tenant.slug}",
            tenant=tenant,
            after={"email": email, "role": role, "new_account": created},
        )
    log.info("member added", extra={"tenant": tenant.slug, "user_id": user.pk, "role": role})
    return membership


def _owners_left(membership) -> int:
    from tenants.models import Membership, Role

    return Membership.objects.filter(tenant=membership.tenant, role=Role.OWNER).exclude(pk=membership.pk).count()


def membership_set_role(*, membership, role: str, actor=None):
    from tenants.audit import audit_record
    from tenants.models import Membership, Role

    if role not in Role.values:
        raise ValidationError({"role": f"Choose {', '.join(Role.values)}."})
    with transaction.atomic():
        membership = Membership.objects.select_for_update().select_related("tenant", "user").get(pk=membership.pk)
        before = {"email": membership.user.email, "role": membership.role}
        if membership.role == Role.OWNER and role != Role.OWNER and not _owners_left(membership):
            raise ValidationError({"role": "A tenant keeps at least one owner: make someone else owner first."})
        membership.role = role
        membership.save(update_fields=["role"])
        audit_record(
            actor=actor,
            action="membership.role",
            target=membership,
            target_repr=f"{membership.user.email} in {membership.tenant.slug}",
            tenant=membership.tenant,
            before=before,
            after={"email": membership.user.email, "role": role},
        )
    return membership


def membership_remove(*, membership, actor=None) -> None:
    from tenants.audit import audit_record
    from tenants.models import Membership, Role

    with transaction.atomic():
        membership = Membership.objects.select_for_update().select_related("tenant", "user").get(pk=membership.pk)
        if membership.role == Role.OWNER and not _owners_left(membership):
            raise ValidationError({"__all__": "A tenant keeps at least one owner: make someone else owner first."})
        audit_record(
            actor=actor,
            action="membership.remove",
            target=membership,
            target_repr=f"{membership.user.email} in {membership.tenant.slug}",
            tenant=membership.tenant,
            before={"email": membership.user.email, "role": membership.role},
        )
        membership.delete()
