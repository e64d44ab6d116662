"""The production gateway: the management cluster through the ``kubernetes`` client.

1. Writes are server-side apply (field manager ``teapot``, ``force=True`` because Teapot owns
   the fields it sets): applying the same object twice changes nothing on the server.
2. Every call has a timeout (connect, read).
3. Errors are handled deliberately: 429 and 5xx (and connection trouble) are retried with
   exponential backoff, honouring ``Retry-After``; 404 → :class:`NotFound`; 409 →
   :class:`Conflict`; 422 → :class:`Invalid` with the field causes; 401/403 →
   :class:`Forbidden`; 410 on a watch → :class:`Expired` (the caller relists).
4. Configuration from a kubeconfig (``KUBECONFIG``) or the in-cluster service account.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterator

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from teapot_portal.gateway import builders, kinds
from teapot_portal.gateway.base import (
    Conflict,
    Expired,
    Forbidden,
    Gateway,
    GatewayError,
    HostRecord,
    Invalid,
    NotFound,
    Unavailable,
    WatchEvent,
)

log = logging.getLogger(__name__)

FIELD_MANAGER = "teapot"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
TRANSIENT = {429, 500, 502, 503, 504}


def _reason(exc: ApiException) -> tuple[str, list[dict]]:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") or exc.reason or f"HTTP {exc.status}"
    causes = (body.get("details") or {}).get("causes") or []
    return message, causes


def translate(exc: ApiException) -> GatewayError:
    message, causes = _reason(exc)
    if exc.status == 404:
        return NotFound(message)
    if exc.status == 409:
        return Conflict(message)
    if exc.status == 410:
        return Expired(message)
    if exc.status == 422:
        return Invalid(message, causes)
    if exc.status in (401, 403):
        return Forbidden(message)
    if exc.status in TRANSIENT:
        return Unavailable(f"the management cluster answered {exc.status}: {message}")
    return GatewayError(f"the management cluster refused the request ({exc.status}): {message}")


class KubernetesGateway(Gateway):
    def __init__(
        self,
        api_client: k8s.ApiClient,
        namespace: str,
        *,
        timeout: tuple[float, float] = (5.0, 30.0),
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.api_client = api_client
        self.namespace = namespace
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self.core = k8s.CoreV1Api(api_client)
        self.custom = k8s.CustomObjectsApi(api_client)

    @classmethod
    def from_settings(cls) -> KubernetesGateway:
        from django.conf import settings

        configuration = k8s.Configuration()
        if settings.TEAPOT_KUBECONFIG:
            k8s_config.load_kube_config(config_file=settings.TEAPOT_KUBECONFIG, client_configuration=configuration)
        else:
            k8s_config.load_incluster_config(client_configuration=configuration)
        # The gateway is the one place that retries (with backoff and logging); urllib3's own
        # silent retries would multiply the attempts.
        configuration.retries = False
        return cls(k8s.ApiClient(configuration), settings.TEAPOT_NAMESPACE)

    # ------------------------------------------------------------------ plumbing

    def _call(self, fn: Callable, *args, **kwargs):
        """Call the API with a timeout; retry transient failures with backoff and jitter."""
        kwargs.setdefault("_request_timeout", self.timeout)
        attempt = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except ApiException as exc:
                if exc.status not in TRANSIENT or attempt >= self.retries:
                    raise translate(exc) from exc
                delay = self._delay(attempt, (exc.headers or {}).get("Retry-After"))
                log.warning(
                    "management cluster busy, retrying",
                    extra={"status": exc.status, "attempt": attempt + 1, "delay": round(delay, 2)},
                )
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                if attempt >= self.retries:
                    raise Unavailable(f"the management cluster is unreachable: {exc}") from exc
                delay = self._delay(attempt, None)
                log.warning("management cluster unreachable, retrying", extra={"attempt": attempt + 1})
            self._sleep(delay)
            attempt += 1

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.max_backoff)
            except ValueError:
                pass
        base = min(self.backoff * (2**attempt), self.max_backoff)
        return base * (0.5 + random.random() / 2)  # jitter: many workers must not retry in step

    # ------------------------------------------------------------------ generic objects

    def apply(self, obj: dict) -> dict:
        kind = kinds.kind_of(obj)
        name = obj["metadata"]["name"]
        body = {**obj, "metadata": {**obj["metadata"], "namespace": self.namespace}}
        if kind is kinds.SECRET:
            result = self._call(
                self.core.patch_namespaced_secret,
                name,
                self.namespace,
                body,
                field_manager=FIELD_MANAGER,
                force=True,
                _content_type=APPLY,
            )
            result = self.api_client.sanitize_for_serialization(result)
        else:
            result = self._call(
                self.custom.patch_namespaced_custom_object,
                kind.group,
                kind.version,
                self.namespace,
                kind.plural,
                name,
                body,
                field_manager=FIELD_MANAGER,
                force=True,
                _content_type=APPLY,
            )
        # An apply that creates answers 201, which this client does not deserialise (None).
        return result or self.get(kind, name)

    def get(self, kind: kinds.Kind, name: str) -> dict:
        if kind is kinds.SECRET:
            secret = self._call(self.core.read_namespaced_secret, name, self.namespace)
            return self.api_client.sanitize_for_serialization(secret)
        return self._call(
            self.custom.get_namespaced_custom_object, kind.group, kind.version, self.namespace, kind.plural, name
        )

    def list(self, kind: kinds.Kind, label_selector: str = "") -> list[dict]:
        return self._list(kind, label_selector)[0]

    def _list(self, kind: kinds.Kind, label_selector: str = "") -> tuple[list[dict], str]:
        if kind is kinds.SECRET:
            result = self.api_client.sanitize_for_serialization(
                self._call(self.core.list_namespaced_secret, self.namespace, label_selector=label_selector or None)
            )
        else:
            result = self._call(
                self.custom.list_namespaced_custom_object,
                kind.group,
                kind.version,
                self.namespace,
                kind.plural,
                label_selector=label_selector or None,
            )
        items = result.get("items", [])
        for item in items:
            # Typed lists (Secrets) leave apiVersion/kind off their items; put them back.
            item.setdefault("apiVersion", kind.api_version)
            item.setdefault("kind", kind.kind)
        return items, str((result.get("metadata") or {}).get("resourceVersion", ""))

    def delete(self, kind: kinds.Kind, name: str) -> bool:
        try:
            if kind is kinds.SECRET:
                self._call(self.core.delete_namespaced_secret, name, self.namespace)
            else:
                self._call(
                    self.custom.delete_namespaced_custom_object,
                    kind.group,
                    kind.version,
                    self.namespace,
                    kind.plural,
                    name,
                )
        except NotFound:
            return False
        return True

    # ------------------------------------------------------------------ BareMetalHosts

    def list_hosts(self, label_selector: str = "") -> tuple[list[HostRecord], str]:
        items, resource_version = self._list(kinds.BAREMETALHOST, label_selector)
        return [HostRecord.from_object(item) for item in items], resource_version

    def get_host(self, name: str) -> HostRecord:
        return HostRecord.from_object(self.get(kinds.BAREMETALHOST, name))

    def get_hardware_data(self, name: str) -> dict | None:
        try:
            return (self.get(kinds.HARDWAREDATA, name).get("spec") or {}).get("hardware")
        except NotFound:
            return None

    def watch_hosts(self, resource_version: str, timeout_seconds: int = 60) -> Iterator[WatchEvent]:
        kind = kinds.BAREMETALHOST
        watcher = k8s_watch.Watch()
        stream = watcher.stream(
            self.custom.list_namespaced_custom_object,
            kind.group,
            kind.version,
            self.namespace,
            kind.plural,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout_seconds,
            _request_timeout=(self.timeout[0], timeout_seconds + self.timeout[1]),
        )
        try:
            for event in stream:
                kind_of_event = event["type"]
                obj = event["raw_object"] if "raw_object" in event else event["object"]
                if kind_of_event == "ERROR":
                    status = obj if isinstance(obj, dict) else {}
                    if status.get("code") == 410:
                        raise Expired(status.get("message", "resource version too old"))
                    raise GatewayError(f"watch failed: {status.get('message', status)}")
                rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
                if kind_of_event == "BOOKMARK":
                    yield WatchEvent("BOOKMARK", rv)
                else:
                    yield WatchEvent(kind_of_event, rv, HostRecord.from_object(obj))
        except ApiException as exc:
            raise translate(exc) from exc
        finally:
            watcher.stop()

    def patch_host_metadata(
        self,
        name: str,
        *,
        labels: dict[str, str | None] | None = None,
        annotations: dict[str, str | None] | None = None,
    ) -> HostRecord:
        # A merge patch, not apply: these keys are shared with BMO and CAPM3 (which set their
        # own labels and annotations on the same objects) and must not become Teapot-owned.
        metadata: dict = {}
        if labels:
            metadata["labels"] = labels
        if annotations:
            metadata["annotations"] = annotations
        if not metadata:
            return self.get_host(name)
        return self._merge_patch_host(name, {"metadata": metadata})

    def set_host_online(self, name: str, online: bool) -> HostRecord:
        return self._merge_patch_host(name, {"spec": {"online": bool(online)}})

    def _merge_patch_host(self, name: str, patch: dict) -> HostRecord:
        return HostRecord.from_object(self._merge_patch(kinds.BAREMETALHOST, name, patch))

    def _merge_patch(self, kind: kinds.Kind, name: str, patch: dict) -> dict:
        """A JSON merge patch: for fields other controllers own too (labels and annotations BMO
        and CAPM3 set, the replicas the autoscaler sets), which must not become Teapot's."""
        return self._call(
            self.custom.patch_namespaced_custom_object,
            kind.group,
            kind.version,
            self.namespace,
            kind.plural,
            name,
            patch,
            _content_type=MERGE,
        )

    def scale_for_bookings(self, machine_deployment: str, replicas: int, reserved: int) -> None:
        annotations = {builders.RESERVED_REPLICAS: str(int(reserved))}
        patch = {"metadata": {"annotations": annotations}, "spec": {"replicas": int(replicas)}}
        self._merge_patch(kinds.MACHINEDEPLOYMENT, machine_deployment, patch)

    def mark_machine_for_deletion(self, name: str, marked: bool = True) -> None:
        annotations = {builders.DELETE_MACHINE: "true" if marked else None}
        self._merge_patch(kinds.MACHINE, name, {"metadata": {"annotations": annotations}})

    def delete_host(self, name: str) -> None:
        host = self.get_host(name)
        credentials = (host.raw.get("spec", {}).get("bmc") or {}).get("credentialsName")
        self.delete(kinds.BAREMETALHOST, name)
        # BMO keeps a finalizer until it has deregistered the host; it still needs the
        # credentials until then, so the Secret goes only once the host is really gone.
        if credentials and not self._exists(kinds.BAREMETALHOST, name):
            self.delete(kinds.SECRET, credentials)

    def _exists(self, kind: kinds.Kind, name: str) -> bool:
        try:
            self.get(kind, name)
        except NotFound:
            return False
        return True

    # ------------------------------------------------------------------ health

    def check(self) -> list[tuple[str, bool, str]]:
        """Reachable? CRDs at the expected versions? RBAC sufficient? (name, ok, message)."""
        results: list[tuple[str, bool, str]] = []
        try:
            version = self._call(k8s.VersionApi(self.api_client).get_code)
            results.append(("reachable", True, f"Kubernetes {version.git_version}"))
        except GatewayError as exc:
            return [("reachable", False, str(exc))]
        try:
            groups = self._call(k8s.ApisApi(self.api_client).get_api_versions)
        except GatewayError as exc:
            return [*results, ("discovery", False, str(exc))]
        served = {(g.name, v.version) for g in groups.groups for v in g.versions}
        for kind in kinds.ALL:
            if not kind.group:
                continue
            ok = (kind.group, kind.version) in served
            results.append(
                (
                    f"crd {kind.resource}",
                    ok,
                    f"{kind.api_version} served"
                    if ok
                    else f"{kind.api_version} is not served: install the provider that owns {kind.resource}",
                )
            )
        for kind, verb, call in self._rbac_probes():
            try:
                call()
                results.append((f"rbac {verb} {kind.resource}", True, "allowed"))
            except Forbidden as exc:
                results.append((f"rbac {verb} {kind.resource}", False, f"{exc} (apply deploy/rbac.yaml)"))
            except NotFound:
                results.append((f"rbac {verb} {kind.resource}", True, "allowed (nothing there)"))
            except GatewayError as exc:
                results.append((f"rbac {verb} {kind.resource}", False, str(exc)))
        return results

    def _rbac_probes(self):
        # Lists are harmless probes of read access. Write access is not probed here (it would
        # need SelfSubjectAccessReview); a missing write permission surfaces as Forbidden on
        # the first write, with the same pointer to deploy/rbac.yaml.
        for kind in kinds.ALL:
            yield kind, "list", (lambda k=kind: self._list(k, "teapot.io/rbac-probe=1"))
