"""Enrolling hosts: one host from a form or the API, or hundreds from a CSV/YAML file.

1. :func:`host_enrol` / :func:`hosts_import` validate everything (addresses, MACs, names,
   locations, duplicates in the file, against the fleet and against pending enrolments), then
   save :class:`~hosts.models.HostEnrolment` rows in one transaction — all or nothing — with the
   BMC credentials sealed, and queue one Celery task per host after the commit.
2. :func:`host_enrolment_apply` (the task) claims the row, unseals the credentials, has the
   gateway create the Secret and the BareMetalHost, mirrors the host at once with the operator's
   location, notes and key-erase fact, and wipes the credentials. A transient gateway error is
   retried by the task; a refusal (422, conflict) fails the enrolment with the gateway's words.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from hosts.importing import ImportProblem, ImportRow, check_record, parse_inventory
from hosts.models import FleetSettings, Host, HostEnrolment
from teapot_portal.gateway import GatewayError, Unavailable, builders
from teapot_portal.sealing import seal, unseal

log = logging.getLogger(__name__)


def topology_levels() -> list[str]:
    """The fleet's levels (FleetSettings; first value from TEAPOT_TOPOLOGY_LEVELS)."""
    return list(FleetSettings.load().topology_levels)


@dataclass(frozen=True)
class ImportOutcome:
    enrolments: list[HostEnrolment]
    problems: list[ImportProblem]

    @property
    def ok(self) -> bool:
        return not self.problems


def _conflicts(rows: Sequence[ImportRow]) -> list[ImportProblem]:
    """Names and boot MACs already in the fleet or in a pending enrolment."""
    names = {row.name for row in rows}
    macs = {row.boot_mac for row in rows}
    taken_names = set(Host.objects.filter(name__in=names, retired_at__isnull=True).values_list("name", flat=True))
    taken_names |= set(HostEnrolment.objects.filter(name__in=names, state="pending").values_list("name", flat=True))
    taken_macs = set(Host.objects.filter(boot_mac__in=macs, retired_at__isnull=True).values_list("boot_mac", flat=True))
    taken_macs |= set(
        HostEnrolment.objects.filter(boot_mac__in=macs, state="pending").values_list("boot_mac", flat=True)
    )
    problems = []
    for row in rows:
        if row.name in taken_names:
            problems.append(ImportProblem(row.line, "name", f"a host named {row.name!r} is already enrolled"))
        if row.boot_mac in taken_macs:
            problems.append(ImportProblem(row.line, "boot_mac", f"{row.boot_mac} is already another host's boot MAC"))
    return problems


def _save(rows: Sequence[ImportRow], acting_user) -> list[HostEnrolment]:
    enrolments = [
        HostEnrolment(
            name=row.name,
            bmc_address=row.bmc_address,
            sealed_credentials=seal(json.dumps({"username": row.bmc_username, "password": row.bmc_password})),
            boot_mac=row.boot_mac,
            location=row.location,
            notes=row.notes,
            key_erase_capable=row.key_erase,
            root_device_name=row.root_device_name,
            requested_by=acting_user if getattr(acting_user, "pk", None) else None,
        )
        for row in rows
    ]
    with transaction.atomic():
        created = HostEnrolment.objects.bulk_create(enrolments)
        ids = [e.pk for e in created]

        def _queue() -> None:
            from hosts.tasks import host_enrolment_apply_task

            for pk in ids:
                host_enrolment_apply_task.delay(pk)

        transaction.on_commit(_queue)
    log.info("hosts enrolment requested", extra={"count": len(created)})
    return created


def hosts_import(*, text: str, fmt: str, acting_user=None) -> ImportOutcome:
    """All rows enrolled, or none and every problem with its line."""
    result = parse_inventory(text, fmt, levels=topology_levels())
    if not result.ok:
        return ImportOutcome([], result.errors)
    problems = _conflicts(result.rows)
    if problems:
        return ImportOutcome([], problems)
    try:
        return ImportOutcome(_save(result.rows, acting_user), [])
    except IntegrityError:  # a concurrent enrolment of the same name/MAC won the race
        return ImportOutcome([], [ImportProblem(0, "", "another enrolment of these hosts was requested meanwhile")])


def host_enrol(
    *,
    name: str,
    bmc_address: str,
    bmc_username: str,
    bmc_password: str,
    boot_mac: str,
    location: dict | None = None,
    notes: str = "",
    key_erase_capable: bool = False,
    root_device_name: str = "",
    acting_user=None,
) -> HostEnrolment:
    """Enrol one host; raises ValidationError keyed by field."""
    record = {
        "name": (name or "").strip(),
        "bmc_address": (bmc_address or "").strip(),
        "bmc_username": bmc_username,
        "bmc_password": bmc_password,
        "boot_mac": (boot_mac or "").strip(),
        "key_erase": "true" if key_erase_capable else "",
        "notes": notes,
        "root_device_name": root_device_name,
    }
    row, problems = check_record(0, record, topology_levels(), location=location or {})
    if problems:
        raise ValidationError({p.field: p.message for p in problems})
    problems = _conflicts([row])
    if problems:
        raise ValidationError({p.field: p.message for p in problems})
    try:
        return _save([row], acting_user)[0]
    except IntegrityError as exc:
        raise ValidationError({"name": "an enrolment of this host was requested meanwhile"}) from exc


def host_enrolment_apply(*, enrolment_id: int, gateway=None) -> str:
    """Create the Secret and BMH for a pending enrolment. Returns the enrolment's new state.

    Raises :class:`Unavailable` for the task to retry; everything else ends the enrolment.
    """
    from hosts.classify import hosts_classify
    from hosts.services import hosts_sync
    from teapot_portal.gateway.factory import get_gateway

    enrolment = HostEnrolment.objects.filter(pk=enrolment_id).first()
    if enrolment is None or enrolment.state != HostEnrolment.PENDING:
        return getattr(enrolment, "state", "gone")
    HostEnrolment.objects.filter(pk=enrolment.pk).update(attempts=enrolment.attempts + 1)
    try:
        credentials = json.loads(unseal(enrolment.sealed_credentials))
    except (ValueError, TypeError):
        _finish(enrolment, HostEnrolment.FAILED, "the sealed BMC credentials cannot be read (SECRET_KEY changed?)")
        return HostEnrolment.FAILED
    spec = builders.HostEnrolment(
        name=enrolment.name,
        bmc_address=enrolment.bmc_address,
        bmc_username=credentials["username"],
        bmc_password=credentials["password"],
        boot_mac=enrolment.boot_mac,
        root_device_hints={"deviceName": enrolment.root_device_name} if enrolment.root_device_name else None,
        description=enrolment.notes[:200],
    )
    gateway = gateway or get_gateway()
    try:
        record = gateway.enrol_host(spec)
    except Unavailable:
        raise
    except (GatewayError, builders.BuildError) as exc:
        _finish(enrolment, HostEnrolment.FAILED, str(exc))
        return HostEnrolment.FAILED
    with transaction.atomic():
        hosts_sync(records=[record])
        Host.objects.filter(name=enrolment.name, namespace=record.namespace).update(
            location=enrolment.location, notes=enrolment.notes, key_erase_capable=enrolment.key_erase_capable
        )
        hosts_classify(
            host_ids=Host.objects.filter(name=enrolment.name, namespace=record.namespace).values_list("pk", flat=True)
        )
        _finish(enrolment, HostEnrolment.APPLIED, "")
    return HostEnrolment.APPLIED


def _finish(enrolment: HostEnrolment, state: str, error: str) -> None:
    # The credentials are wiped whatever the outcome: the management cluster holds them now,
    # or the operator re-enters them with a corrected enrolment.
    HostEnrolment.objects.filter(pk=enrolment.pk).update(
        state=state, error=error[:2000], sealed_credentials="", applied_at=timezone.now()
    )
    if state == HostEnrolment.FAILED:
        log.warning("host enrolment failed", extra={"host": enrolment.name, "error": error[:300]})
