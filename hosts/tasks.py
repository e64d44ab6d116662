"""The inventory's periodic work: thin wrappers around :mod:`hosts.services`.

Both are run by Celery beat and are safe to overlap: each takes a PostgreSQL session
advisory lock (``pg_try_advisory_lock``) of its own, so a second run that starts while the
first is still going returns at once instead of queueing behind it. (The writes themselves
are serialised anyway by the mirror's transaction lock in ``hosts_sync``.) A management
cluster that does not answer is logged and left to the next run: the schedule is the retry.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from celery import shared_task
from django.db import DatabaseError, connection

from hosts.services import LOCK_CLASS, hosts_follow, hosts_resync
from teapot_portal.gateway.base import GatewayError

log = logging.getLogger(__name__)

LOCK_RESYNC = 2
LOCK_FOLLOW = 3
LOCK_LABELS = 4


@contextmanager
def single_run(lock_id: int) -> Iterator[bool]:
    """True when this process holds the task's lock for the block; False when another run does."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_CLASS, lock_id])
        acquired = bool(cursor.fetchone()[0])
    try:
        yield acquired
    finally:
        if acquired:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [LOCK_CLASS, lock_id])
            except DatabaseError:  # the connection is gone, and the session lock with it
                log.warning("hosts: could not release advisory lock %s", lock_id, exc_info=True)


@shared_task(name="teapot.hosts.resync", ignore_result=True)
def hosts_resync_task() -> dict:
    """Full resync of the Host mirror from the BareMetalHost list."""
    with single_run(LOCK_RESYNC) as mine:
        if not mine:
            log.info("hosts resync skipped: another run is in progress")
            return {"skipped": True}
        try:
            return hosts_resync().as_dict()
        except GatewayError as exc:
            log.warning("hosts resync failed: %s", exc)
            return {"error": str(exc)}


@shared_task(name="teapot.hosts.follow", ignore_result=True)
def hosts_follow_task(timeout_seconds: int = 8) -> dict:
    """Watch the BareMetalHosts for ``timeout_seconds`` from where the last run stopped."""
    with single_run(LOCK_FOLLOW) as mine:
        if not mine:
            return {"skipped": True}  # the previous watch is still open: it sees the changes
        try:
            return hosts_follow(timeout_seconds=timeout_seconds).as_dict()
        except GatewayError as exc:
            log.warning("hosts follow stopped: %s", exc)
            return {"error": str(exc)}


@shared_task(name="teapot.hosts.enrol", bind=True, max_retries=8, acks_late=True)
def host_enrolment_apply_task(self, enrolment_id: int) -> str:
    """Apply one pending enrolment; transient gateway trouble is retried with backoff."""
    from hosts.enrolment import host_enrolment_apply
    from teapot_portal.gateway import Unavailable

    if not isinstance(enrolment_id, int):
        log.warning("enrolment task ignored: bad id %r", enrolment_id)
        return "invalid"
    try:
        return host_enrolment_apply(enrolment_id=enrolment_id)
    except Unavailable as exc:
        raise self.retry(exc=exc, countdown=min(300, 5 * 2**self.request.retries)) from exc


@shared_task(name="teapot.hosts.classify", ignore_result=True)
def hosts_classify_task() -> dict:
    """Reclassify the whole fleet (a rule or the cost model changed), then write the trait labels."""
    from hosts.classify import hosts_classify

    changed = hosts_classify()
    if changed:
        trait_labels_task.delay()
    return {"changed": changed}


@shared_task(name="teapot.hosts.trait-labels", ignore_result=True)
def trait_labels_task() -> dict:
    """Write teapot.io/trait-<name> labels where the BareMetalHosts differ from the hosts' traits."""
    from hosts.curation import trait_labels_apply

    with single_run(LOCK_LABELS) as mine:
        if not mine:
            return {"skipped": True}
        try:
            return trait_labels_apply()
        except GatewayError as exc:
            log.warning("trait labels not written: %s", exc)
            return {"error": str(exc)}


@shared_task(name="teapot.hosts.action", bind=True, max_retries=5, acks_late=True)
def host_action_task(self, name: str, namespace: str, action: str) -> str:
    """Power on/off, re-inspect or retire (delete the BareMetalHost); transient errors retried."""
    from hosts.curation import host_action_apply
    from teapot_portal.gateway import NotFound, Unavailable

    if not all(isinstance(v, str) for v in (name, namespace, action)):
        log.warning("host action ignored: bad payload %r", (name, namespace, action))
        return "invalid"
    try:
        return host_action_apply(name=name, namespace=namespace, action=action)
    except Unavailable as exc:
        raise self.retry(exc=exc, countdown=min(120, 5 * 2**self.request.retries)) from exc
    except NotFound:
        return "gone"
    except GatewayError as exc:
        log.warning("host action failed: %s", exc, extra={"host": name, "action": action})
        return "failed"
