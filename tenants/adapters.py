from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.conf import settings


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request) -> bool:
        # A private cloud invites its users: operators create them (admin, seed, invitations).
        return settings.TEAPOT_ALLOW_SIGNUP


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    def is_open_for_signup(self, request, sociallogin) -> bool:
        # SSO logs in users whose verified email is already known; creating accounts on first
        # SSO login is opt-in (TEAPOT_SSO_AUTO_SIGNUP).
        return settings.TEAPOT_SSO_AUTO_SIGNUP
