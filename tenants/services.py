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


def api_token_create(*, user: User, name: str, expires_at: datetime | None = None) -> tuple[ApiToken, str]:
    """Create a token for ``user``. Returns the row and the plaintext, which is never stored."""
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
            )
    except IntegrityError as exc:
        raise ValidationError({"name": "You already have an active token with this name."}) from exc
    log.info("api token created", extra={"user_id": user.pk, "token_id": token.pk})
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
