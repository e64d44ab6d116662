"""The Celery app. Workers and beat: ``celery -A teapot_portal worker`` / ``beat``."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "teapot_portal.settings")

app = Celery("teapot_portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def _use_django_logging(**kwargs):
    # Workers log through Django's LOGGING (logfmt/JSON on stdout, secrets redacted).
    import logging.config

    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
