"""baremetal-operator, simulated: the BareMetalHost provisioning state machine.

States and transitions follow BMO v0.13 (metal3-facts.md §1, ``host_state_machine.go``)::

    (created) → registering → inspecting → preparing → available → provisioning → provisioned
                     │             ↑           (inspect.metal3.io)       │ (error)    │ (image cleared)
                     │             └──────────────── available           ↓            ↓
                     └─ unmanaged (no BMC address / credentials)    deprovisioning → available

One reconcile of a host, in order (one transition per call; :func:`..controllers.tick` repeats):

1. ``baremetalhost.metal3.io/paused`` present: nothing at all happens (not even deletion).
2. Deletion requested (``deletionTimestamp``): from ``""``/``registering``/``unmanaged`` straight
   to ``deleting``; from ``provisioning``/``provisioned`` through ``deprovisioning`` first (a
   detached host skips to ``deleting``); from anything else to ``powering off before delete``.
   ``deleting`` removes the finalizer after a short deregistration, the HardwareData with it.
3. ``baremetalhost.metal3.io/detached`` on an available or provisioned host: operationalStatus
   ``detached`` and no further action; removing the annotation restores OK (or error).
4. The state's handler:

   * ``""``: BMC address and a credentials Secret with username and password → ``registering``;
     otherwise ``unmanaged`` with operationalStatus ``discovered``. ``unmanaged`` → ``registering``
     once they exist.
   * ``registering`` (≈60 s): an unreachable BMC (profile or ``bmc_unreachable`` fault) gives
     ``registration error`` and a retry after a backoff. Success records ``goodCredentials``,
     marks the Secret as BMO does (label + owner reference) → ``inspecting`` (``preparing`` when
     ``spec.inspectionMode: disabled``).
   * ``inspecting`` (≈300 s): ``inspection_error`` → ``inspection error`` and a retry. Success
     fills ``status.hardware`` from the host's lab profile, writes the HardwareData, publishes
     the accelerators as the ``teapot.io/accelerators`` annotation, removes ``inspect.metal3.io``
     → ``preparing`` (≈30 s) → ``available``.
   * ``available``: ``inspect.metal3.io`` → ``inspecting``; an image → ``provisioning``;
     otherwise the power follows ``spec.online``.
   * ``provisioning`` (≈900 s, plus the first cleaning since inspection): image removed →
     ``deprovisioning``; ``provisioning_error`` → ``provisioning error``, then ``deprovisioning``
     (BMO's ``handleProvisioning``); success → ``provisioned`` with ``status.provisioning.image``.
   * ``provisioned``: image removed or changed → ``deprovisioning``; power follows ``spec.online``.
   * ``deprovisioning``: cleaning by ``automatedCleaningMode`` (metadata ≈600 s, or whole disks;
     ``disabled`` → key erase ≈60 s on encrypted hosts, nothing otherwise) → ``available`` with
     errors cleared, or ``powering off before delete`` when deleting.

5. Power (stable states): a mismatch between ``poweredOn`` and the desired power (``spec.online``,
   off while a ``reboot.metal3.io`` annotation asks) starts a change that lands ≈20 s later, or
   fails with ``power management error`` under ``power_error``/``bmc_unreachable`` faults.
6. ``operationalStatus``: ``detached`` > ``error`` (an ``errorType`` is set) > ``discovered``
   (unmanaged) > ``OK``. ``lastUpdated`` moves only when the status does.
"""

from __future__ import annotations

import contextlib
import copy
import json
import uuid
from datetime import datetime

from teapot_portal.gateway.base import ANNOTATION_DETACHED, ANNOTATION_INSPECT, ANNOTATION_PAUSED, ANNOTATION_REBOOT
from teapot_portal.gateway.lab import faults, profiles, store
from teapot_portal.gateway.lab.controllers import Ctx, at_time, ensure_owner, ts
from teapot_portal.gateway.lab.models import LabFault, LabObject

FINALIZER = "baremetalhost.metal3.io"
ANNOTATION_ACCELERATORS = "teapot.io/accelerators"
ANNOTATION_KEY_ERASE = "teapot.io/key-erase"
ANNOTATION_HARDWARE_DETAILS = "inspect.metal3.io/hardwaredetails"
SECRET_ENVIRONMENT_LABEL = "environment.metal3.io"  # noqa: S105 (a label key)

REGISTRATION_ERROR = "registration error"
INSPECTION_ERROR = "inspection error"
PROVISIONING_ERROR = "provisioning error"
POWER_ERROR = "power management error"

# The operationHistory entry each state is timed in (BMO's OperationMetricForState).
_HISTORY = {
    "registering": "register",
    "inspecting": "inspect",
    "provisioning": "provision",
    "deprovisioning": "deprovision",
}
_DETACHABLE = ("provisioned", "externally provisioned", "ready", "available")


def new_status() -> dict:
    return {
        "operationalStatus": "OK",
        "errorMessage": "",
        "errorCount": 0,
        "poweredOn": False,
        "provisioning": {"ID": "", "state": ""},
    }


class _Host:
    """One reconcile of one BareMetalHost: mutate ``obj``/``st``, then :meth:`save`."""

    def __init__(self, row: LabObject, ctx: Ctx):
        self.row, self.ctx, self.t = row, ctx, ctx.timings
        self.obj = store.to_dict(row)
        self.meta = self.obj["metadata"]
        self.spec = self.obj.setdefault("spec", {})
        self.original_status = copy.deepcopy(self.obj.get("status"))
        self.status = self.obj.setdefault("status", new_status())
        self.st = copy.deepcopy(row.internal)
        self.name, self.namespace = row.name, row.namespace
        self.stamp: datetime = ctx.now  # when the last change made here happened (simulated)
        self._profile: dict | None = None
        self.gone = False

    # ------------------------------------------------------------------ helpers

    @property
    def annotations(self) -> dict:
        return self.meta.setdefault("annotations", {})

    @property
    def state(self) -> str:
        return self.status["provisioning"].get("state", "")

    @property
    def profile(self) -> dict:
        if self._profile is None:
            self._profile = profiles.profile_for(self.name)
        return self._profile

    @property
    def slow(self) -> float:
        return faults.slow_factor(self.name)

    def draw(self) -> int:
        self.st["draw"] = int(self.st.get("draw", 0)) + 1
        return self.st["draw"]

    def strikes(self, kind: str) -> bool:
        self.ctx.checkpoint()  # a draw may spend a fault's count: only for real
        return faults.strikes(kind, self.name, str(self.st.get("draw", 0)), self.t.seed)

    def duration(self, phase: str, base: float | None = None) -> float:
        return self.t.duration(phase, self.name, self.draw(), self.slow, base)

    def due(self) -> float | None:
        """The deadline of the current phase when it has passed (else None: keep waiting)."""
        deadline = self.st.get("deadline")
        if deadline is None or deadline > self.ctx.now_ts:
            return None
        return float(deadline)

    def cleaning_mode(self) -> str:
        return self.spec.get("automatedCleaningMode") or "metadata"

    def credentials(self) -> dict | None:
        """The BMC credentials Secret (as a dict) when the host has everything BMO needs."""
        bmc = self.spec.get("bmc") or {}
        if not bmc.get("address") or not bmc.get("credentialsName"):
            return None
        secret = store.load("Secret", self.namespace, bmc["credentialsName"], for_update=False)
        if secret is None:
            return None
        data = secret.body.get("data") or {}
        if not data.get("username") or not data.get("password"):
            return None
        return store.to_dict(secret)

    def bmc_reachable(self) -> bool:
        return bool(self.profile.get("bmc_reachable", True)) and not self.strikes(LabFault.BMC_UNREACHABLE)

    # ------------------------------------------------------------------ status

    def enter(self, state: str, at: datetime, seconds: float | None = None) -> None:
        """Move to ``state`` at simulated time ``at``; its work (if timed) ends ``seconds`` later."""
        history = self.status.setdefault("operationHistory", {})
        previous = _HISTORY.get(self.state)
        if previous and history.get(previous, {}).get("start") and not history[previous].get("end"):
            history[previous]["end"] = store.iso(at)
        following = _HISTORY.get(state)
        if following and (not history.get(following, {}).get("start") or history[following].get("end")):
            history[following] = {"start": store.iso(at)}
        self.status["provisioning"]["state"] = state
        self.st.pop("power", None)
        if seconds is None:
            self.st.pop("deadline", None)
        else:
            self.st["deadline"] = ts(at) + seconds
        self.stamp = at

    def fail(self, error_type: str, message: str, at: datetime) -> float:
        """Record an error like BMO's ``setErrorMessage``; the backoff before the next attempt."""
        self.status["errorType"] = error_type
        self.status["errorMessage"] = message
        self.status["errorCount"] = int(self.status.get("errorCount") or 0) + 1
        self.stamp = at
        return self.t.backoff_after(self.status["errorCount"])

    def clear_error(self) -> None:
        self.status.pop("errorType", None)
        self.status["errorMessage"] = ""
        self.status["errorCount"] = 0

    def finish_status(self) -> None:
        status = self.status
        if self.state == "unmanaged":
            operational = "discovered"
        elif status.get("errorType"):
            operational = "error"
        else:
            operational = "OK"
        if ANNOTATION_DETACHED in self.annotations and self.state in _DETACHABLE:
            operational = "detached"
        status["operationalStatus"] = operational
        if not self.annotations:
            self.meta.pop("annotations", None)
        compare = {k: v for k, v in status.items() if k != "lastUpdated"}
        before = {k: v for k, v in (self.original_status or {}).items() if k != "lastUpdated"}
        if compare != before:
            status["lastUpdated"] = store.iso(min(self.stamp, self.ctx.now))

    # ------------------------------------------------------------------ the reconcile

    def run(self) -> None:
        if ANNOTATION_PAUSED in self.annotations:
            # Time stands still for a paused host: its deadlines move by the pause on resume.
            self.st.setdefault("paused_since", self.ctx.now_ts)
            return
        if "paused_since" in self.st:
            pause = self.ctx.now_ts - float(self.st.pop("paused_since"))
            for key in ("deadline", "failed_at"):
                if self.st.get(key) is not None:
                    self.st[key] += pause
            if self.st.get("power"):
                self.st["power"]["due"] += pause
        if self.meta.get("deletionTimestamp") and self.initiate_delete():
            return
        if self.detached():
            return
        handler = {
            "": self.handle_none,
            "unmanaged": self.handle_unmanaged,
            "registering": self.handle_registering,
            "inspecting": self.handle_inspecting,
            "match profile": self.handle_preparing,
            "preparing": self.handle_preparing,
            "available": self.handle_available,
            "ready": self.handle_available,
            "provisioning": self.handle_provisioning,
            "provisioned": self.handle_provisioned,
            "deprovisioning": self.handle_deprovisioning,
            "powering off before delete": self.handle_powering_off,
            "deleting": self.handle_deleting,
        }.get(self.state)
        if handler is not None:
            handler()

    def save(self) -> None:
        if self.gone:
            return
        if ANNOTATION_PAUSED in self.annotations:
            self.ctx.save(self.row, store.to_dict(self.row), internal=self.st)  # paused: nothing visible
            return
        self.finish_status()
        self.ctx.save(self.row, self.obj, internal=self.st)

    def initiate_delete(self) -> bool:
        """BMO's ``checkInitiateDelete``: True when it changed the state."""
        now, state = self.ctx.now, self.state
        if state in ("deprovisioning", "deleting", "powering off before delete"):
            return False
        if state in ("", "registering", "unmanaged"):
            self.enter("deleting", now, self.duration("deregister"))
        elif state in ("provisioning", "provisioned"):
            if ANNOTATION_DETACHED in self.annotations:
                self.enter("deleting", now, self.duration("deregister"))
            else:
                self.start_deprovisioning(now)
        else:
            self.start_powering_off(now)
        return True

    def detached(self) -> bool:
        # finish_status shows it; nothing else is managed while the annotation is there.
        return ANNOTATION_DETACHED in self.annotations and self.state in _DETACHABLE

    # ------------------------------------------------------------------ handlers

    def handle_none(self) -> None:
        if self.credentials() is not None:
            self.start_registering(self.ctx.now)
        else:
            self.enter("unmanaged", self.ctx.now)

    def handle_unmanaged(self) -> None:
        if self.credentials() is not None:
            self.start_registering(self.ctx.now)

    def start_registering(self, at: datetime) -> None:
        self.status["provisioning"]["ID"] = self.status["provisioning"].get("ID") or str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"ironic:{self.row.uid}")
        )
        self.status["provisioning"]["bootMode"] = self.spec.get("bootMode") or "UEFI"
        self.enter("registering", at, self.duration("register"))

    def handle_registering(self) -> None:
        at_ts = self.due()
        if at_ts is None:
            return
        at = at_time(at_ts)
        secret = self.credentials()
        if secret is None:
            backoff = self.fail(
                REGISTRATION_ERROR, "failed to read BMC credentials: the credentials Secret is missing or empty", at
            )
            self.st["deadline"] = at_ts + backoff
            return
        if not self.bmc_reachable():
            address = (self.spec.get("bmc") or {}).get("address", "")
            backoff = self.fail(
                REGISTRATION_ERROR,
                f"Failed to get power state for node {self.status['provisioning']['ID']}. Error: "
                f"IPMI call failed: power status. (BMC {address} is not reachable)",
                at,
            )
            self.st["deadline"] = at_ts + backoff + self.duration("register")
            return
        secret_rv = self.acquire_secret(secret)
        self.status["goodCredentials"] = {
            "credentials": {"name": secret["metadata"]["name"], "namespace": self.namespace},
            "credentialsVersion": secret_rv,
        }
        self.clear_error()
        if (self.spec.get("inspectionMode") or "") == "disabled":
            details = self.annotations.get(ANNOTATION_HARDWARE_DETAILS)
            if details:
                with contextlib.suppress(ValueError):  # a bad blob: inspection data stays empty
                    self.status["hardware"] = json.loads(details)
            self.enter("preparing", at, self.duration("prepare"))
        else:
            self.start_inspecting(at)

    def acquire_secret(self, secret: dict) -> str:
        """BMO's AcquireSecret: label the Secret and make the host its owner; its new resourceVersion."""
        row = store.load("Secret", self.namespace, secret["metadata"]["name"])
        obj = store.to_dict(row)
        obj["metadata"].setdefault("labels", {})[SECRET_ENVIRONMENT_LABEL] = "baremetal"
        ensure_owner(obj, self.obj, controller=False)
        self.ctx.save(row, obj)
        return str(row.resource_version)

    def start_inspecting(self, at: datetime) -> None:
        self.enter("inspecting", at, self.duration("inspect"))
        self.status["poweredOn"] = True  # Ironic boots the inspection ramdisk

    def handle_inspecting(self) -> None:
        at_ts = self.due()
        if at_ts is None:
            return
        at = at_time(at_ts)
        if self.strikes(LabFault.INSPECTION_ERROR):
            backoff = self.fail(INSPECTION_ERROR, "Introspection failed: timeout reached while inspecting the node", at)
            self.st["deadline"] = at_ts + backoff + self.duration("inspect")
            return
        hardware = copy.deepcopy(self.profile["hardware"])
        boot_mac = (self.spec.get("bootMACAddress") or "").lower()
        if boot_mac:
            for nic in hardware.get("nics") or []:
                if nic.get("pxe"):
                    nic["mac"] = boot_mac  # inspection finds the NIC the host PXE-boots from
        self.status["hardware"] = hardware
        self.write_hardware_data(hardware)
        accelerators = self.profile.get("accelerators") or []
        if accelerators:
            self.annotations[ANNOTATION_ACCELERATORS] = json.dumps(accelerators, separators=(",", ":"))
        else:
            self.annotations.pop(ANNOTATION_ACCELERATORS, None)
        # The site's convention for disks encrypted with a per-tenant key (hand-off by key erase).
        self.annotations[ANNOTATION_KEY_ERASE] = "true" if self.profile.get("encrypted_disks") else "false"
        self.annotations.pop(ANNOTATION_INSPECT, None)  # BMO removes it when inspection is done
        self.status["poweredOn"] = False
        self.clear_error()
        self.enter("preparing", at, self.duration("prepare"))

    def write_hardware_data(self, hardware: dict) -> None:
        obj = {
            "apiVersion": "metal3.io/v1alpha1",
            "kind": "HardwareData",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {"hardware": hardware},
        }
        ensure_owner(obj, self.obj)
        row = store.load("HardwareData", self.namespace, self.name)
        if row is None:
            self.ctx.create(obj)
            return
        current = store.to_dict(row)
        current["spec"] = obj["spec"]
        ensure_owner(current, self.obj)
        self.ctx.save(row, current)

    def handle_preparing(self) -> None:
        at_ts = self.due()
        if at_ts is None:
            return
        self.clear_error()
        self.enter("available", at_time(at_ts))

    def wants_image(self) -> bool:
        return bool((self.spec.get("image") or {}).get("url") or (self.spec.get("customDeploy") or {}).get("method"))

    def handle_available(self) -> None:
        now = self.ctx.now
        inspect = self.annotations.get(ANNOTATION_INSPECT)
        if inspect is not None and inspect != "disabled":
            self.start_inspecting(now)
            return
        if self.wants_image():
            self.clear_error()
            seconds = self.duration("provision")
            if not self.st.get("cleaned"):
                # Ironic cleans when the host is first made available for deploys (its "provide"
                # step); after a deprovision the disks were cleaned on the way out.
                seconds += self.duration("clean", base=self.t.cleaning(self.cleaning_mode(), self.profile))
            self.enter("provisioning", now, seconds)
            self.st["cleaned"] = False
            self.status["poweredOn"] = True
            if self.spec.get("rootDeviceHints"):
                self.status["provisioning"]["rootDeviceHints"] = copy.deepcopy(self.spec["rootDeviceHints"])
            return
        self.manage_power()

    def handle_provisioning(self) -> None:
        if self.status.get("errorType") == PROVISIONING_ERROR:
            at = at_time(min(float(self.st.get("failed_at", self.ctx.now_ts)), self.ctx.now_ts))
            self.start_deprovisioning(at)
            return
        if not self.wants_image():
            self.start_deprovisioning(self.ctx.now)
            return
        at_ts = self.due()
        if at_ts is None:
            return
        at = at_time(at_ts)
        if self.strikes(LabFault.PROVISIONING_ERROR):
            self.fail(
                PROVISIONING_ERROR,
                "Image provisioning failed: Deploy step deploy.deploy failed: "
                "Could not write the image to the root device",
                at,
            )
            self.st["failed_at"] = at_ts
            self.st.pop("deadline", None)
            return
        image = copy.deepcopy(self.spec.get("image") or {})
        if image:
            self.status["provisioning"]["image"] = image
        self.status["poweredOn"] = bool(self.spec.get("online"))
        self.st.pop("failed_at", None)
        self.clear_error()
        self.enter("provisioned", at)

    def handle_provisioned(self) -> None:
        deployed = (self.status["provisioning"].get("image") or {}).get("url", "")
        wanted = (self.spec.get("image") or {}).get("url", "")
        if not self.wants_image() or (deployed and wanted != deployed):
            self.start_deprovisioning(self.ctx.now)
            return
        self.manage_power()

    def start_deprovisioning(self, at: datetime) -> None:
        seconds = self.duration("deprovision") + self.duration(
            "clean", base=self.t.cleaning(self.cleaning_mode(), self.profile)
        )
        self.enter("deprovisioning", at, seconds)
        self.status["poweredOn"] = True  # the cleaning ramdisk runs on the host

    def handle_deprovisioning(self) -> None:
        at_ts = self.due()
        if at_ts is None:
            return
        at = at_time(at_ts)
        self.status["provisioning"].pop("image", None)
        self.status["provisioning"].pop("rootDeviceHints", None)
        self.status["poweredOn"] = False
        self.st["cleaned"] = True
        self.st.pop("failed_at", None)
        self.clear_error()
        if self.meta.get("deletionTimestamp"):
            self.start_powering_off(at)
        else:
            self.enter("available", at)

    def start_powering_off(self, at: datetime) -> None:
        seconds = self.duration("power") if self.status.get("poweredOn") else 0.0
        self.enter("powering off before delete", at, seconds)

    def handle_powering_off(self) -> None:
        at_ts = self.due()
        if at_ts is None:
            return
        # An unreachable BMC cannot power the host off: BMO gives up and deletes anyway.
        self.status["poweredOn"] = False
        self.enter("deleting", at_time(at_ts), self.duration("deregister"))

    def handle_deleting(self) -> None:
        if self.due() is None:
            return
        hardware = store.load("HardwareData", self.namespace, self.name)
        if hardware is not None:
            self.ctx.remove(hardware)
        credentials = self.st.get("delete_credentials")
        if credentials:
            secret = store.load("Secret", self.namespace, credentials)
            if secret is not None:
                self.ctx.remove(secret)
        self.ctx.remove(self.row)
        self.gone = True

    # ------------------------------------------------------------------ power

    def desired_power(self) -> bool:
        reboots = [k for k in self.annotations if k == ANNOTATION_REBOOT or k.startswith(ANNOTATION_REBOOT + "/")]
        if any(k != ANNOTATION_REBOOT for k in reboots):
            return False  # a suffixed reboot annotation keeps the host off while present
        if ANNOTATION_REBOOT in self.annotations and self.status.get("poweredOn"):
            return False  # a reboot: off first, then back to spec.online
        return bool(self.spec.get("online"))

    def manage_power(self) -> None:
        desired, powered = self.desired_power(), bool(self.status.get("poweredOn"))
        pending = self.st.get("power")
        if desired == powered:
            self.st.pop("power", None)
            if self.status.get("errorType") == POWER_ERROR:
                self.clear_error()
            return
        if not pending or pending.get("target") != desired:
            self.st["power"] = {"target": desired, "due": self.ctx.now_ts + self.duration("power")}
            return
        if pending["due"] > self.ctx.now_ts:
            return
        at = at_time(pending["due"])
        if not self.bmc_reachable() or self.strikes(LabFault.POWER_ERROR):
            backoff = self.fail(
                POWER_ERROR,
                f"Failed to set power state for node {self.status['provisioning'].get('ID', '')}: "
                f"power {'on' if desired else 'off'} failed (the BMC did not respond)",
                at,
            )
            pending["due"] = pending["due"] + backoff + self.duration("power")
            return
        self.status["poweredOn"] = desired
        self.stamp = at
        self.st.pop("power", None)
        if self.status.get("errorType") == POWER_ERROR:
            self.clear_error()
        if not desired:
            self.annotations.pop(ANNOTATION_REBOOT, None)  # the un-suffixed request is done once off


def reconcile_host(row: LabObject, ctx: Ctx) -> None:
    host = _Host(row, ctx)
    host.run()
    host.save()
