from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from tenants.models import User
from tenants.services import api_token_create


class Command(BaseCommand):
    help = "Create a personal API token for a user and print it (shown once, only its hash is kept)."

    def add_arguments(self, parser):
        parser.add_argument("email")
        parser.add_argument("--name", default="automation", help="what the token is for")
        parser.add_argument("--tenant", default="", help="scope the token to this tenant (its slug)")

    def handle(self, *args, email: str, name: str, tenant: str = "", **options):
        user = User.objects.filter(email__iexact=email.strip()).first()
        if user is None:
            raise CommandError(f"No user with email {email!r}.")
        scope = None
        if tenant:
            from tenants.models import Tenant

            scope = Tenant.objects.filter(slug=tenant.strip()).first()
            if scope is None:
                raise CommandError(f"No tenant {tenant!r}.")
        try:
            _, plaintext = api_token_create(user=user, name=name, tenant=scope)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(plaintext)
