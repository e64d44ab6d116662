from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from tenants.services import user_ensure

DEMO_PASSWORD = "teapot-demo"  # noqa: S105 (public by design, demo mode only)
# The operator; the departments and their people come from tenants.demo.
DEMO_USERS = [
    {"email": "ops@teapot.example", "is_staff": True, "first_name": "Olga", "last_name": "Operator"},
]


class Command(BaseCommand):
    help = "Load the demo data (idempotent). Demo mode only: the passwords are public."

    def handle(self, *args, **options):
        if not settings.TEAPOT_DEMO:
            raise CommandError("seed_demo creates users with a public password; it runs only with TEAPOT_DEMO=1.")
        operator = None
        for spec in DEMO_USERS:
            user, created = user_ensure(password=DEMO_PASSWORD, **spec)
            operator = operator or (user if user.is_staff else None)
            self.stdout.write(
                f"{'created' if created else 'kept'} {'operator' if user.is_staff else 'user'} {user.email}"
            )
        from hosts.demo import seed_demo_fleet

        enrolled, kept = seed_demo_fleet(acting_user=operator)
        if settings.TEAPOT_PROVISIONER == "lab":
            self.stdout.write(f"demo fleet: {enrolled} host(s) enrolled into the lab, {kept} already there")
        from tenants.demo import seed_demo_tenants

        made = seed_demo_tenants(operator=operator)
        self.stdout.write("demo tenants: " + (", ".join(made) if made else "all there already"))
