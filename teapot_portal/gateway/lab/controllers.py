"""The simulated controllers of the lab management cluster, and the tick that runs them.

:func:`tick` is one level-triggered pass of baremetal-operator (:mod:`.bmo`), CAPM3, Cluster
API and the Kamaji control-plane provider (:mod:`.capi`), plus the garbage collector. It is
idempotent: ticking twice at the same simulated time changes nothing the second time.

1. Each object is first reconciled *dry* against a snapshot of the store (one query, no
   locks): only objects that would write something are reconciled for real, each in its own
   transaction, under the store's lock, from a fresh read. Two workers ticking at once thus
   serialise object by object, and the second finds the first's transition already made (see
   :mod:`.store` for the conditional write). An idle lab costs a handful of queries a tick.
2. A pass is repeated until nothing moves (at most ``max_passes``), so a clock that jumped an
   hour catches up in one tick: every timed phase ends at its own deadline (start + duration),
   not at "now", and the next phase starts there. The timestamps an operator sees (operation
   history, lastUpdated) are the ones a real cluster would have written.
3. Durations are simulated seconds (:class:`Timings`), with seeded jitter per host and phase,
   so tests are deterministic; ``slow`` faults multiply them.
4. A failing object is logged and skipped (``strict=True`` re-raises, for tests): one bad
   object never stops the lab.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime

from django.conf import settings
from django.db import transaction

from teapot_portal.gateway.lab import store, watchlog
from teapot_portal.gateway.lab.models import LabClock, LabObject

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timings:
    """How long things take, in simulated seconds (``jitter`` is the ± fraction applied)."""

    register: float = 60
    inspect: float = 300
    prepare: float = 30
    provision: float = 900
    clean_metadata: float = 600  # Ironic's erase_devices_metadata
    key_erase: float = 60  # cleaning disabled + encrypted disks: the per-tenant key is destroyed
    deprovision: float = 20  # undeploy and power off, around any cleaning
    power: float = 20
    deregister: float = 5
    control_plane: float = 180  # Kamaji: TenantControlPlane pods up, endpoint served
    backoff: float = 10  # first retry after an error; doubles per error, up to backoff_max
    backoff_max: float = 600
    jitter: float = 0.1
    seed: int = 0
    # Ironic configured to overwrite whole disks (erase_devices) for every host; a host profile
    # can ask for it too. Time = the slowest disk at its type's throughput (disks in parallel).
    full_erase: bool = False
    erase_bytes_per_second: dict = field(default_factory=lambda: {"HDD": 200e6, "SSD": 500e6, "NVME": 2e9})

    def duration(self, phase: str, host: str, draw: int, factor: float = 1.0, base: float | None = None) -> float:
        """``phase``'s duration for ``host`` on its ``draw``-th scheduling, jittered and scaled."""
        seconds = getattr(self, phase) if base is None else base
        if seconds <= 0:
            return 0.0
        spread = random.Random(f"{self.seed}:{host}:{phase}:{draw}").uniform(-1, 1) * self.jitter
        return seconds * factor * (1 + spread)

    def backoff_after(self, error_count: int) -> float:
        return min(self.backoff * 2 ** max(error_count - 1, 0), self.backoff_max)

    def cleaning(self, mode: str, profile: dict) -> float:
        """Seconds Ironic spends cleaning the disks of a host with ``profile`` in ``mode``.

        ``disabled`` skips Ironic cleaning; a host with per-tenant encrypted disks then has its
        key erased instead (DESIGN.md: hand-off in about a minute). ``metadata`` erases
        partition tables and signatures, or whole disks when full erase is configured.
        """
        if mode == "disabled":
            return self.key_erase if profile.get("encrypted_disks") else 0.0
        if not (self.full_erase or profile.get("full_erase")):
            return self.clean_metadata
        slowest = 0.0
        for disk in (profile.get("hardware") or {}).get("storage") or []:
            rate = self.erase_bytes_per_second.get(disk.get("type") or "HDD", 200e6)
            slowest = max(slowest, float(disk.get("sizeBytes") or 0) / rate)
        return self.clean_metadata + slowest


DEFAULT_TIMINGS = Timings()


def configured_timings() -> Timings:
    """:data:`DEFAULT_TIMINGS`, overridden by the optional ``TEAPOT_LAB_TIMINGS`` setting (a dict)."""
    overrides = getattr(settings, "TEAPOT_LAB_TIMINGS", None) or {}
    known = {f.name for f in fields(Timings)}
    return replace(DEFAULT_TIMINGS, **{k: v for k, v in overrides.items() if k in known})


# --------------------------------------------------------------------------- reconcile context


def ts(moment: datetime) -> float:
    return moment.timestamp()


def at_time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=0)


class WouldWrite(Exception):
    """A dry reconcile reached a write: the object has work to do."""


@dataclass
class Ctx:
    """One pass: the simulated time, the timings, and what changed.

    A *dry* context (``dry=True``) writes nothing: the first write a step attempts raises
    :class:`WouldWrite`. :func:`_each` uses it to find the objects that have work, reading a
    snapshot, and locks only those.
    """

    now: datetime
    timings: Timings
    strict: bool = False
    transitions: int = 0  # visible writes (resourceVersion bumps)
    progressed: bool = False  # anything at all, including controller memory
    writes: int = 0  # every write, so readers know when their snapshot went stale
    dry: bool = False

    @property
    def now_ts(self) -> float:
        return ts(self.now)

    def checkpoint(self) -> None:
        """Call before anything with a side effect outside the store (spending a fault)."""
        if self.dry:
            raise WouldWrite

    def save(self, row: LabObject, obj: dict, internal: dict | None = None) -> bool:
        if self.dry:
            if store.would_change(row, obj, internal):
                raise WouldWrite
            return False
        before = row.internal
        changed = store.update(row, obj, internal=internal)
        if changed:
            self.transitions += 1
            self.progressed = True
            self.writes += 1
        elif internal is not None and internal != before:
            self.progressed = True
            self.writes += 1
        return changed

    def save_internal(self, row: LabObject, internal: dict) -> None:
        """Change only another object's controller memory (no resourceVersion)."""
        if internal == row.internal:
            return
        self.checkpoint()
        LabObject.objects.filter(pk=row.pk).update(internal=internal)
        row.internal = internal
        self.progressed = True
        self.writes += 1

    def create(self, obj: dict, **kwargs) -> LabObject:
        self.checkpoint()
        row = store.create(obj, now=self.now, **kwargs)
        self.transitions += 1
        self.progressed = True
        self.writes += 1
        return row

    def delete(self, row: LabObject) -> bool:
        if row.deletion_timestamp is not None:
            return False
        self.checkpoint()
        changed = store.request_delete(row, self.now)
        if changed:
            self.transitions += 1
            self.progressed = True
            self.writes += 1
        return changed

    def remove(self, row: LabObject) -> None:
        self.checkpoint()
        store.remove(row)
        self.transitions += 1
        self.progressed = True
        self.writes += 1


def load_dict(kind: str, namespace: str, name: str) -> dict | None:
    """A fresh read of another object (no row lock: the store's lock already serialises writers)."""
    if not name:
        return None
    row = store.load(kind, namespace, name, for_update=False)
    return store.to_dict(row) if row is not None else None


def owner_ref(obj: dict, *, controller: bool = True) -> dict:
    meta = obj["metadata"]
    ref = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"], "uid": meta["uid"]}
    if controller:
        ref.update(controller=True, blockOwnerDeletion=True)
    return ref


def ensure_owner(obj: dict, owner: dict, *, controller: bool = True) -> None:
    refs = obj["metadata"].setdefault("ownerReferences", [])
    if not any(r.get("uid") == owner["metadata"]["uid"] for r in refs):
        refs.append(owner_ref(owner, controller=controller))


def owner_of(obj: dict, kind: str) -> str:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == kind:
            return ref.get("name", "")
    return ""


def set_condition(
    status: dict,
    type_: str,
    ok: bool | None,
    reason: str,
    message: str,
    at: datetime,
    generation: int | None = None,
) -> None:
    """Set a metav1.Condition; lastTransitionTime moves only when the status does (idempotent)."""
    value = "Unknown" if ok is None else ("True" if ok else "False")
    conditions = status.setdefault("conditions", [])
    current = next((c for c in conditions if c.get("type") == type_), None)
    condition = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": current["lastTransitionTime"]
        if current and current.get("status") == value
        else store.iso(at),
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    if current is None:
        conditions.append(condition)
    else:
        current.clear()
        current.update(condition)


# --------------------------------------------------------------------------- the tick


Step = Callable[[LabObject, Ctx], None]


class _Pass:
    """The snapshot dry runs read, retaken when a write has made it stale."""

    def __init__(self) -> None:
        self.snapshot: store.Snapshot | None = None
        self.taken_at = -1

    def current(self, ctx: Ctx) -> store.Snapshot:
        if self.snapshot is None or ctx.writes != self.taken_at:
            self.snapshot, self.taken_at = store.Snapshot(), ctx.writes
        return self.snapshot


def _has_work(step: Step, row: LabObject, ctx: Ctx, snapshot: store.Snapshot) -> bool:
    """Run ``step`` dry on the snapshot: does it want to write? (Errors: let the real run tell.)"""
    dry = Ctx(now=ctx.now, timings=ctx.timings, dry=True)
    try:
        with store.reading(snapshot):
            step(row, dry)
    except WouldWrite:
        return True
    except Exception:
        return True
    return False


def _each(kind: str, step: Step, ctx: Ctx, reads: _Pass) -> None:
    """Run ``step`` on every object of ``kind`` that has work, each in its own locked transaction.

    The check is a dry run on a snapshot (no locks, few queries); a stale snapshot can only make
    an object wait for the next pass, which every write guarantees.
    """
    snapshot = reads.current(ctx)
    for candidate in list(snapshot.of_kind(kind)):
        if not _has_work(step, candidate, ctx, snapshot):
            continue
        pk = candidate.pk
        counters = ctx.transitions, ctx.progressed, ctx.writes
        try:
            with transaction.atomic():
                store.lock()
                row = LabObject.objects.select_for_update().filter(pk=pk).first()
                if row is not None:
                    step(row, ctx)
        except Exception:
            ctx.transitions, ctx.progressed, ctx.writes = counters  # rolled back with it
            if ctx.strict:
                raise
            log.exception("lab: reconciling a %s failed; the next tick retries", kind, extra={"kind": kind, "pk": pk})


def collect_garbage(ctx: Ctx) -> None:
    """Delete objects all of whose owners are gone (Kubernetes' background garbage collection)."""
    live = {str(uid) for uid in LabObject.objects.values_list("uid", flat=True)}
    for pk, owners in LabObject.objects.exclude(owner_references=[]).values_list("pk", "owner_references"):
        uids = [ref.get("uid") for ref in owners or [] if ref.get("uid")]
        if not uids or any(uid in live for uid in uids):
            continue
        counters = ctx.transitions, ctx.progressed, ctx.writes
        try:
            with transaction.atomic():
                store.lock()
                row = LabObject.objects.select_for_update().filter(pk=pk).first()
                if row is not None and row.deletion_timestamp is None:
                    ctx.delete(row)
        except Exception:
            ctx.transitions, ctx.progressed, ctx.writes = counters
            if ctx.strict:
                raise
            log.exception("lab: garbage collection failed", extra={"pk": pk})


def _steps() -> list[tuple[str, Step]]:
    from teapot_portal.gateway.lab import bmo, capi

    return [
        ("BareMetalHost", bmo.reconcile_host),
        ("Metal3Cluster", capi.reconcile_metal3cluster),
        ("KamajiControlPlane", capi.reconcile_kamajicontrolplane),
        ("Cluster", capi.reconcile_cluster),
        ("MachineDeployment", capi.reconcile_machinedeployment),
        ("Machine", capi.reconcile_machine),
        ("Metal3Machine", capi.reconcile_metal3machine),
        ("MachineHealthCheck", capi.reconcile_machinehealthcheck),
    ]


def tick(
    now: datetime | None = None,
    *,
    timings: Timings | None = None,
    strict: bool = False,
    max_passes: int = 50,
    keep_events: int = watchlog.EVENT_RETENTION,
) -> int:
    """Run every controller until nothing moves; the number of transitions (visible writes) made.

    ``now`` defaults to the lab clock (:class:`LabClock`); it is not moved here: the caller
    advances the clock (tests explicitly, the ``teapot.lab.tick`` task by real time * speed).
    """
    moment = (now or LabClock.get().now()).astimezone(UTC)
    chosen = timings or configured_timings()
    total = 0
    for _ in range(max_passes):
        ctx = Ctx(now=moment, timings=chosen, strict=strict)
        reads = _Pass()
        for kind, step in _steps():
            _each(kind, step, ctx, reads)
        collect_garbage(ctx)
        total += ctx.transitions
        if not ctx.progressed:
            break
    else:
        log.warning("lab: tick stopped after %d passes with work left", max_passes)
    watchlog.prune(keep_events)
    return total
