from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tenants.models import User


@pytest.mark.django_db
def test_seed_demo_is_idempotent(settings):
    settings.TEAPOT_DEMO = True
    call_command("seed_demo")
    call_command("seed_demo")
    assert User.objects.filter(email="ops@teapot.example", is_staff=True).count() == 1
    alice = User.objects.get(email="alice@physics.example")
    assert alice.check_password("teapot-demo") and not alice.is_staff


@pytest.mark.django_db
def test_seed_demo_refuses_outside_demo_mode(settings):
    settings.TEAPOT_DEMO = False
    with pytest.raises(CommandError, match="TEAPOT_DEMO=1"):
        call_command("seed_demo")
    assert not User.objects.exists()
