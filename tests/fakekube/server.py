"""A strict, in-memory fake kube-apiserver that the real ``kubernetes`` client talks to over HTTP.

Teapot's management-cluster gateway is tested against this instead of mocks, so that the tests
exercise real URLs, real content types, real ``Status`` errors, real watch streams and real
validation against the upstream CRD schemas in ``shared/crds``. Behaviour follows kube-apiserver
for everything Teapot uses; the deliberate differences are listed in ``DEVIATIONS``.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import random
import socket
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from teapot_portal.gateway.crdschema import (
    Cause,
    CrdRegistry,
    CrdVersion,
    forbidden,
    normalize_secret,
    validate_object_meta,
    validate_secret,
    validate_secret_update,
)

from .patching import (
    SYSTEM_METADATA,
    PatchError,
    SelectorError,
    canonical,
    delete_path,
    fields_match,
    fields_v1,
    get_path,
    json_patch,
    labels_match,
    leaf_paths,
    merge_patch,
    parse_field_selector,
    parse_label_selector,
    set_path,
)

DEFAULT_CRD_DIR = Path(__file__).resolve().parents[3] / "shared" / "crds"
"""``<checkout>/../shared/crds``: CI clones the repository next to ``shared/``."""

DEFAULT_USER = "system:serviceaccount:teapot:teapot"

DEVIATIONS = """\
Deliberate differences from kube-apiserver (v1.33):
* Unknown fields are always rejected with 422 Invalid (cause FieldValueInvalid, message
  'unknown field "spec.foo"'); the real apiserver prunes them (fieldValidation Ignore/Warn) or
  answers 400 BadRequest 'strict decoding error' (fieldValidation=Strict). Strict by default is
  the point: it proves Teapot's builders never emit fields the CRD does not know.
* Malformed Secret data (bad base64, non-string stringData) is a 422 with a cause per key; the
  real apiserver fails earlier, while decoding, with a 400 and no causes.
* CEL rules (x-kubernetes-validations) are not evaluated.
* Multi-version CRDs behave like conversion strategy None: one object per name, stored as
  written, served at any version with only apiVersion rewritten (no conversion webhooks).
* Server-side apply treats every list as atomic (no merging of list-type=map/set items) and
  tracks ownership per leaf path; managedFields are plausible, not byte-identical.
* propagationPolicy and gracePeriodSeconds are ignored; there is no garbage collector.
* Deleting a Namespace removes it and everything in it at once (no Terminating phase).
* Namespaces auto-created on demand are materialized without an event or a resourceVersion bump.
* Lists are served from live data: continue tokens page by key, not from a snapshot.
* The 'scale' subresource is neither served nor advertised; 'status' is.
* Only Secrets and Namespaces of the core group exist, plus read-only CustomResourceDefinitions.
Faithful on purpose, and easy to trip over with kubernetes==37 (see tests/test_fakekube.py):
* An apply that creates answers 201; CustomObjectsApi.patch_* maps only 200, so it returns None.
* urllib3 retries GET/PUT/DELETE answered 429/503 with Retry-After itself (up to 3 times).
* Watch.stream turns the 410 ERROR event into ApiException(410) when timeout_seconds is given;
  without it the client first retries once from the same resourceVersion.
* Validation ratcheting: on update, schema errors on values left unchanged are tolerated.
"""

CR_VERBS = ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"]
REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
DEFAULT_MESSAGES = {
    400: "the server rejected our request for an unknown reason",
    401: "Unauthorized",
    403: "forbidden",
    404: "the server could not find the requested resource",
    405: "the server does not allow this method on the requested resource",
    409: "the server reported a conflict",
    410: "too old resource version",
    415: "the server does not support the media type of the request",
    422: "the server rejected our request due to an error in our request",
    429: "Too many requests, please try again later.",
    500: "Internal error occurred: injected fault",
    503: "the server is currently unable to handle the request",
    504: "the server was unable to return a response in the time allotted, but may still be processing the request",
}
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(
    code: int, message: str, reason: str | None = None, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A ``metav1.Status`` failure body exactly as the apiserver shapes it."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason if reason is not None else REASONS.get(code, ""),
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


class ApiError(Exception):
    """Raised anywhere in request handling; becomes a ``Status`` response."""

    def __init__(
        self,
        code: int,
        message: str | None = None,
        *,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.code = code
        self.message = message if message is not None else DEFAULT_MESSAGES.get(code, "error")
        self.reason = reason if reason is not None else REASONS.get(code, "")
        self.details = details
        self.headers = headers or {}
        super().__init__(f"{code} {self.reason}: {self.message}")

    def body(self) -> dict[str, Any]:
        return status_body(self.code, self.message, self.reason, self.details)


# --------------------------------------------------------------------------------------------
# Resource types


@dataclass(frozen=True)
class ResourceType:
    """One servable (group, version, resource) — a CRD version or one of the few core types."""

    group: str
    version: str
    plural: str
    kind: str
    singular: str
    namespaced: bool
    status_subresource: bool = False
    crd: CrdVersion | None = None
    verbs: tuple[str, ...] = tuple(CR_VERBS)
    short_names: tuple[str, ...] = ()
    read_only: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """``baremetalhosts.metal3.io`` / ``secrets``: how errors name the resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def group_kind(self) -> str:
        """``BareMetalHost.metal3.io`` / ``Secret``: how Invalid errors name the kind."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def is_secret(self) -> bool:
        return not self.group and self.plural == "secrets"

    @property
    def is_namespace(self) -> bool:
        return not self.group and self.plural == "namespaces"

    @property
    def has_generation(self) -> bool:
        return self.crd is not None

    @property
    def list_kind(self) -> str:
        return self.crd.list_kind if self.crd else self.kind + "List"

    def field_labels(self) -> tuple[str, ...]:
        labels = ("metadata.name", "metadata.namespace")
        return (*labels, "type") if self.is_secret else labels

    def validate(self, obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[Cause]:
        if self.crd is not None:
            return self.crd.validate(obj, old)
        if self.is_secret:
            return validate_secret(obj)
        return validate_object_meta(obj.get("metadata"), namespaced=self.namespaced, name_rule="label")


SECRET_TYPE = ResourceType("", "v1", "secrets", "Secret", "secret", namespaced=True)
NAMESPACE_TYPE = ResourceType(
    "",
    "v1",
    "namespaces",
    "Namespace",
    "namespace",
    namespaced=False,
    verbs=("create", "delete", "get", "list", "watch"),
    short_names=("ns",),
)
CRD_TYPE = ResourceType(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    "CustomResourceDefinition",
    "customresourcedefinition",
    namespaced=False,
    verbs=("get", "list"),
    short_names=("crd", "crds"),
    read_only=True,
)


# --------------------------------------------------------------------------------------------
# Internal records


class RecordedRequest(NamedTuple):
    """What the server saw, for assertions: ``(method, path, query, content_type)``."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None


@dataclass
class _Manager:
    fields: set[tuple[str, ...]]
    time: str
    api_version: str


ManagerKey = tuple[str, str, str]  # (manager, operation, subresource)


@dataclass
class _Stored:
    obj: dict[str, Any]  # never mutated after commit: events share it
    managers: dict[ManagerKey, _Manager] = field(default_factory=dict)


@dataclass(frozen=True)
class _Event:
    rv: int
    group: str
    plural: str
    namespace: str
    type: str
    obj: dict[str, Any]
    old: dict[str, Any] | None


@dataclass
class _Fault:
    code: int
    remaining: int
    method: str | None
    path_contains: str | None
    retry_after: int | None
    message: str | None


@dataclass
class _Request:
    method: str
    path: str
    raw_path: str
    query: dict[str, str]
    content_type: str
    body: bytes
    headers: dict[str, str]


@dataclass
class _Response:
    code: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _WatchPlan:
    rt: ResourceType
    namespace: str | None
    labels: list[Any]
    fields: list[Any]
    cursor: int
    deadline: float
    bookmarks: bool
    initial: list[dict[str, Any]]
    expired: dict[str, Any] | None = None


@dataclass
class _Target:
    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


# --------------------------------------------------------------------------------------------
# HTTP plumbing


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fakekube/1.0"
    fake: FakeKubeServer  # set on the per-server subclass

    def setup(self) -> None:
        super().setup()
        with self.fake._lock:
            self.fake._connections.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.fake._lock:
            self.fake._connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log; ``FakeKubeServer.requests`` records requests."""

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        raw_type = self.headers.get("Content-Type")
        request = _Request(
            method=self.command,
            path=unquote(parts.path),
            raw_path=self.path,
            query=query,
            content_type=(raw_type or "").split(";")[0].strip().lower(),
            body=body,
            headers={key.lower(): value for key, value in self.headers.items()},
        )
        result: _Response | _WatchPlan
        try:
            result = self.fake._handle(request, raw_type)
        except ApiError as error:
            result = _Response(error.code, error.body(), error.headers)
        except Exception as error:
            self.fake.internal_errors.append(traceback.format_exc())
            result = _Response(500, status_body(500, f"Internal error occurred: {error!r}"))
        if isinstance(result, _WatchPlan):
            self.fake._stream_watch(self, result)
        else:
            self._send(result)

    def _send(self, response: _Response) -> None:
        data = json.dumps(response.body).encode()
        with contextlib.suppress(OSError):
            self.send_response(response.code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Audit-Id", str(uuid.uuid4()))
            for key, value in response.headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

    def write_chunk(self, data: bytes) -> bool:
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except OSError:
            return False
        return True


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


# --------------------------------------------------------------------------------------------
# The server


class FakeKubeServer:
    """In-memory kube-apiserver on ``127.0.0.1:<random port>``; see the module docstring.

    Use as a context manager (or ``start()``/``stop()``). Test hooks: ``writes``, ``requests``,
    ``internal_errors``, ``latency``, :meth:`inject_errors`, :meth:`deny`, :meth:`remove_group`,
    :meth:`compact`, :meth:`objects`, :meth:`get_object`, :meth:`put_object`, :meth:`set_status`.
    """

    def __init__(
        self,
        crd_dir: str | Path = DEFAULT_CRD_DIR,
        *,
        namespace_auto_create: bool = True,
        token: str | None = None,
        bookmark_interval: float = 1.0,
        watch_timeout: float = 30.0,
        history_size: int = 1000,
        user: str = DEFAULT_USER,
        registry: CrdRegistry | None = None,
    ) -> None:
        self.registry = registry or CrdRegistry.load_cached(crd_dir)
        self.namespace_auto_create = namespace_auto_create
        self.token = token
        self.bookmark_interval = bookmark_interval
        self.watch_timeout = watch_timeout
        self.history_size = history_size
        self.user = user
        self.latency = 0.0
        self.writes = 0
        self.requests: list[RecordedRequest] = []
        self.internal_errors: list[str] = []

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._rv = 1
        self._objects: dict[tuple[str, str, str, str], _Stored] = {}
        self._history: deque[_Event] = deque()
        self._floor = 0  # highest resourceVersion whose event is no longer in the history
        self._faults: list[_Fault] = []
        self._denied: set[tuple[str, str, str, str | None]] = set()
        self._removed_groups: set[str] = set()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._started_at = now_rfc3339()

        self._types: dict[tuple[str, str, str], ResourceType] = {}
        for item in self.registry.versions():
            self._types[(item.group, item.version, item.plural)] = ResourceType(
                group=item.group,
                version=item.version,
                plural=item.plural,
                kind=item.kind,
                singular=item.singular,
                namespaced=item.namespaced,
                status_subresource=item.status_subresource,
                crd=item,
                short_names=tuple(item.short_names),
            )
        for core in (SECRET_TYPE, NAMESPACE_TYPE, CRD_TYPE):
            self._types[(core.group, core.version, core.plural)] = core

        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeKubeServer:
        handler = type("FakeKubeHandler", (_Handler,), {"fake": self})
        self._httpd = _HTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fakekube", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: ends watch streams and closes idle keep-alive connections too."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeKubeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def resource_version(self) -> int:
        """The current global resourceVersion."""
        with self._lock:
            return self._rv

    def write_kubeconfig(self, path: str | Path, namespace: str = "teapot", token: str | None = None) -> Path:
        """Write a kubeconfig for this server (bearer token; the server's own token if it requires one)."""
        token = token or self.token or "test-token"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fakekube", "cluster": {"server": self.url}}],
            "users": [{"name": "teapot", "user": {"token": token}}],
            "contexts": [
                {"name": "fakekube", "context": {"cluster": "fakekube", "user": "teapot", "namespace": namespace}}
            ],
            "current-context": "fakekube",
            "preferences": {},
        }
        target = Path(path)
        target.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return target

    def api_client(self, token: str | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` pointed at this server."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        configuration.api_key = {"authorization": f"Bearer {token or self.token or 'test-token'}"}
        return client.ApiClient(configuration)

    # ---- test hooks ----------------------------------------------------------------------------

    def inject_errors(
        self,
        code: int,
        count: int = 1,
        method: str | None = None,
        path_contains: str | None = None,
        retry_after: int | None = None,
        message: str | None = None,
    ) -> None:
        """Make the next ``count`` matching requests fail with ``code`` (a proper ``Status`` body).

        ``path_contains`` is matched against the raw request target (path and query string).
        """
        with self._lock:
            self._faults.append(
                _Fault(code, count, method.upper() if method else None, path_contains, retry_after, message)
            )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def deny(self, verb: str, group: str, plural: str, namespace: str | None = None) -> None:
        """Answer 403 to ``verb`` on ``plural`` (``"*"`` wildcards; ``"x/status"`` for the subresource)."""
        with self._lock:
            self._denied.add((verb, group, plural, namespace))

    def allow(self, verb: str, group: str, plural: str, namespace: str | None = None) -> None:
        with self._lock:
            self._denied.discard((verb, group, plural, namespace))

    def remove_group(self, group: str) -> None:
        """Pretend the CRDs of ``group`` are not installed: gone from discovery, every path 404."""
        with self._lock:
            self._removed_groups.add(group)

    def restore_group(self, group: str) -> None:
        with self._lock:
            self._removed_groups.discard(group)

    def compact(self) -> None:
        """Drop the whole watch history, like etcd compaction: older resourceVersions become 410."""
        with self._lock:
            self._history.clear()
            self._floor = self._rv

    def objects(self, kind: str | None = None, namespace: str | None = None) -> list[dict[str, Any]]:
        """Deep copies of what is stored (as last written), optionally one kind / one namespace."""
        with self._lock:
            result = [
                copy.deepcopy(stored.obj)
                for (_, _, ns, _), stored in sorted(self._objects.items())
                if (kind is None or stored.obj.get("kind") == kind) and (namespace is None or ns == namespace)
            ]
        return result

    def get_object(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        with self._lock:
            for (_, _, ns, obj_name), stored in self._objects.items():
                if stored.obj.get("kind") == kind and obj_name == name and ns == (namespace or ""):
                    return copy.deepcopy(stored.obj)
        return None

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._create_namespace(name, labels=labels, silent=False))

    def put_object(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Seed or overwrite an object as a controller would: no validation, status kept as given.

        Still bumps the resourceVersion, counts as a write and emits a watch event.
        """
        rt = self._type_for(obj.get("apiVersion", ""), obj.get("kind", ""))
        new = copy.deepcopy(obj)
        meta = new.setdefault("metadata", {})
        namespace = meta.get("namespace", "") if rt.namespaced else ""
        if rt.namespaced and not namespace:
            raise ValueError("put_object needs metadata.namespace for a namespaced kind")
        key = (rt.group, rt.plural, namespace, meta["name"])
        if rt.is_secret:
            normalize_secret(new)
        if rt.crd is not None:
            rt.crd.default(new)
        with self._lock:
            if rt.namespaced:
                self._ensure_namespace(namespace, create=True)
            stored = self._objects.get(key)
            if stored is None:
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", now_rfc3339())
                if rt.has_generation:
                    meta.setdefault("generation", 1)
                meta.pop("managedFields", None)
                return copy.deepcopy(self._store_new(rt, key, new, {}))
            old = stored.obj
            for name in ("uid", "creationTimestamp", "deletionTimestamp"):
                if name in old["metadata"]:
                    meta.setdefault(name, old["metadata"][name])
            if rt.has_generation and "generation" not in meta:
                meta["generation"] = old["metadata"].get("generation", 1) + (
                    1 if self._spec_changed(rt, old, new) else 0
                )
            meta.pop("managedFields", None)
            return copy.deepcopy(self._store_update(rt, key, stored, new, stored.managers))

    def set_status(self, api_version: str, kind: str, namespace: str | None, name: str, status: Any) -> dict[str, Any]:
        """Replace ``status`` like a controller's status update (no validation); emits MODIFIED."""
        rt = self._type_for(api_version, kind)
        key = (rt.group, rt.plural, (namespace or "") if rt.namespaced else "", name)
        with self._lock:
            stored = self._objects.get(key)
            if stored is None:
                raise KeyError(f"{rt.group_resource} {namespace}/{name} not found")
            new = copy.deepcopy(stored.obj)
            new["status"] = copy.deepcopy(status)
            if rt.crd is not None:
                rt.crd.default(new)
            return copy.deepcopy(self._store_update(rt, key, stored, new, stored.managers))

    # ---- storage primitives (lock held) --------------------------------------------------------

    def _bump(self) -> int:
        self._rv += 1
        return self._rv

    def _emit(
        self, rt: ResourceType, namespace: str, kind: str, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        self._history.append(
            _Event(int(obj["metadata"]["resourceVersion"]), rt.group, rt.plural, namespace, kind, obj, old)
        )
        while len(self._history) > self.history_size:
            self._floor = self._history.popleft().rv
        self._cond.notify_all()

    def _render_managed(self, obj: dict[str, Any], managers: dict[ManagerKey, _Manager]) -> None:
        entries = []
        for (manager, operation, subresource), entry in managers.items():
            item: dict[str, Any] = {
                "manager": manager,
                "operation": operation,
                "apiVersion": entry.api_version,
                "time": entry.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_v1(entry.fields),
            }
            if subresource:
                item["subresource"] = subresource
            entries.append(item)
        if entries:
            obj["metadata"]["managedFields"] = entries
        else:
            obj["metadata"].pop("managedFields", None)

    def _store_new(
        self,
        rt: ResourceType,
        key: tuple[str, str, str, str],
        obj: dict[str, Any],
        managers: dict[ManagerKey, _Manager],
    ) -> dict[str, Any]:
        obj["metadata"]["resourceVersion"] = str(self._bump())
        self._render_managed(obj, managers)
        self._objects[key] = _Stored(obj, managers)
        self.writes += 1
        self._emit(rt, key[2], "ADDED", obj, None)
        return obj

    def _store_update(
        self,
        rt: ResourceType,
        key: tuple[str, str, str, str],
        stored: _Stored,
        obj: dict[str, Any],
        managers: dict[ManagerKey, _Manager],
    ) -> dict[str, Any]:
        old = stored.obj
        obj["metadata"]["resourceVersion"] = str(self._bump())
        self._render_managed(obj, managers)
        self._objects[key] = _Stored(obj, managers)
        self.writes += 1
        self._emit(rt, key[2], "MODIFIED", obj, old)
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(rt, key)
        return obj

    def _remove(self, rt: ResourceType, key: tuple[str, str, str, str]) -> dict[str, Any]:
        stored = self._objects.pop(key)
        gone = copy.deepcopy(stored.obj)
        gone["metadata"]["resourceVersion"] = str(self._bump())
        self.writes += 1
        self._emit(rt, key[2], "DELETED", gone, stored.obj)
        return gone

    def _spec_changed(self, rt: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> bool:
        """Generation semantics: anything but metadata (and status, when it is a subresource)."""
        skip = {"metadata", "apiVersion", "kind"} | ({"status"} if rt.status_subresource else set())
        return canonical({k: v for k, v in old.items() if k not in skip}) != canonical(
            {k: v for k, v in new.items() if k not in skip}
        )

    def _namespace_key(self, name: str) -> tuple[str, str, str, str]:
        return ("", "namespaces", "", name)

    def _create_namespace(self, name: str, *, labels: dict[str, str] | None = None, silent: bool) -> dict[str, Any]:
        key = self._namespace_key(name)
        existing = self._objects.get(key)
        if existing is not None:
            return existing.obj
        obj = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": now_rfc3339(),
                "labels": {**(labels or {}), "kubernetes.io/metadata.name": name},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }
        if silent:
            obj["metadata"]["resourceVersion"] = str(self._rv)
            self._objects[key] = _Stored(obj)
            return obj
        return self._store_new(NAMESPACE_TYPE, key, obj, {})

    def _ensure_namespace(self, name: str, *, create: bool) -> None:
        if self._namespace_key(name) in self._objects:
            return
        if self.namespace_auto_create:
            if create:
                self._create_namespace(name, silent=True)
            return
        raise ApiError(404, f'namespaces "{name}" not found', details={"name": name, "kind": "namespaces"})

    def _type_for(self, api_version: str, kind: str) -> ResourceType:
        for rt in self._types.values():
            if rt.api_version == api_version and rt.kind == kind:
                return rt
        raise KeyError(f"unknown apiVersion={api_version!r} kind={kind!r}")

    def _view(self, obj: dict[str, Any], rt: ResourceType) -> dict[str, Any]:
        """The object as served at ``rt``'s version (conversion strategy None)."""
        view = {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": copy.deepcopy(obj.get("metadata") or {})}
        for key, value in obj.items():
            if key not in view:
                view[key] = copy.deepcopy(value)
        return view

    # ---- request entry point --------------------------------------------------------------------

    def _handle(self, request: _Request, raw_content_type: str | None) -> _Response | _WatchPlan:
        with self._lock:
            self.requests.append(RecordedRequest(request.method, request.path, dict(request.query), raw_content_type))
        if self.latency:
            time.sleep(self.latency)
        if self.token is not None and request.headers.get("authorization") != f"Bearer {self.token}":
            raise ApiError(401, "Unauthorized")
        self._check_faults(request)
        return self._route(request)

    def _check_faults(self, request: _Request) -> None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining <= 0:
                    continue
                if fault.method and fault.method != request.method:
                    continue
                if fault.path_contains and fault.path_contains not in request.raw_path:
                    continue
                fault.remaining -= 1
                break
            else:
                return
            self._faults = [f for f in self._faults if f.remaining > 0]
        headers = {}
        details = None
        if fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
            details = {"retryAfterSeconds": fault.retry_after}
        message = fault.message or DEFAULT_MESSAGES.get(fault.code, "injected fault")
        if fault.code == 500 and details is None:
            details = {"causes": [{"message": "injected fault"}]}
        raise ApiError(fault.code, message, details=details, headers=headers)

    # ---- routing ---------------------------------------------------------------------------------

    def _route(self, request: _Request) -> _Response | _WatchPlan:
        parts = [p for p in request.path.split("/") if p]
        if request.path.rstrip("/") == "/version":
            return self._only_get(request, self._version_info)
        if not parts or parts[0] not in ("api", "apis"):
            raise ApiError(404)
        if parts[0] == "api":
            if len(parts) == 1:
                return self._only_get(request, self._api_versions)
            if parts[1] != "v1":
                raise ApiError(404)
            group, version, rest = "", "v1", parts[2:]
        else:
            if len(parts) == 1:
                return self._only_get(request, self._group_list)
            group = parts[1]
            versions = self._group_versions().get(group)
            if versions is None:
                raise ApiError(404)
            if len(parts) == 2:
                return self._only_get(request, lambda: self._group_doc(group, versions))
            version = parts[2]
            if version not in versions:
                raise ApiError(404)
            rest = parts[3:]
        if not rest:
            return self._only_get(request, lambda: self._resource_list(group, version))
        return self._dispatch(request, self._target(group, version, rest))

    def _only_get(self, request: _Request, build: Any) -> _Response:
        if request.method != "GET":
            raise ApiError(405)
        return _Response(200, build())

    def _target(self, group: str, version: str, rest: list[str]) -> _Target:
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        rt = self._types.get((group, version, rest[0]))
        if rt is None or len(rest) > 3:
            raise ApiError(404)
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        if subresource is not None and (subresource != "status" or not rt.status_subresource):
            raise ApiError(404)
        if namespace is not None and not rt.namespaced:
            raise ApiError(404)
        if rt.namespaced and name is not None and namespace is None:
            raise ApiError(404)
        return _Target(rt, namespace, name, subresource)

    def _verb(self, request: _Request, target: _Target) -> str:
        if request.method == "GET":
            if target.name is not None:
                return "get"
            return "watch" if request.query.get("watch", "").lower() in ("true", "1") else "list"
        if request.method == "DELETE":
            return "delete" if target.name is not None else "deletecollection"
        return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(request.method, request.method.lower())

    def _authorize(self, verb: str, target: _Target) -> None:
        rt = target.rt
        resource = rt.plural + (f"/{target.subresource}" if target.subresource else "")
        for d_verb, d_group, d_plural, d_ns in self._denied:
            if (
                d_verb in ("*", verb)
                and d_group in ("*", rt.group)
                and d_plural in ("*", resource)
                and (d_ns is None or d_ns == target.namespace)
            ):
                break
        else:
            return
        subject = f'{rt.group_resource} "{target.name}"' if target.name else rt.group_resource
        scope = f'in the namespace "{target.namespace}"' if target.namespace else "at the cluster scope"
        message = (
            f'{subject} is forbidden: User "{self.user}" cannot {verb} resource "{resource}" '
            f'in API group "{rt.group}" {scope}'
        )
        details: dict[str, Any] = {"group": rt.group, "kind": rt.plural}
        if target.name:
            details = {"name": target.name, **details}
        if not rt.group:
            details.pop("group")
        raise ApiError(403, message, details=details)

    def _dispatch(self, request: _Request, target: _Target) -> _Response | _WatchPlan:
        verb = self._verb(request, target)
        with self._lock:
            self._authorize(verb, target)
        rt = target.rt
        if verb not in rt.verbs and not (target.subresource and verb in ("get", "update", "patch")):
            raise ApiError(405)
        if verb in ("get", "list", "watch") and rt is CRD_TYPE:
            return self._crd_read(request, target)
        if verb == "get":
            return self._get(target)
        if verb == "list":
            return self._list(request, target)
        if verb == "watch":
            return self._watch_plan(request, target)
        dry_run = self._dry_run(request)
        if verb == "create":
            if target.subresource:
                raise ApiError(405)
            return self._create(request, target, dry_run)
        if verb == "update":
            return self._replace(request, target, dry_run)
        if verb == "patch":
            return self._patch(request, target, dry_run)
        if verb == "delete":
            if target.subresource:
                raise ApiError(405)
            return self._delete(request, target, dry_run)
        if verb == "deletecollection":
            return self._delete_collection(request, target, dry_run)
        raise ApiError(405)

    def _dry_run(self, request: _Request) -> bool:
        value = request.query.get("dryRun")
        if value in (None, ""):
            return False
        if value != "All":
            raise ApiError(
                422,
                f'DryRunOptions "" is invalid: dryRun: Unsupported value: "{value}": supported values: "All"',
                reason="Invalid",
            )
        return True

    # ---- discovery -------------------------------------------------------------------------------

    def _version_info(self) -> dict[str, Any]:
        return {
            "major": "1",
            "minor": "33",
            "emulationMajor": "1",
            "emulationMinor": "33",
            "minCompatibilityMajor": "1",
            "minCompatibilityMinor": "32",
            "gitVersion": "v1.33.0-fakekube",
            "gitCommit": "0" * 40,
            "gitTreeState": "clean",
            "buildDate": "2025-04-23T00:00:00Z",
            "goVersion": "go1.24.2",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    def _api_versions(self) -> dict[str, Any]:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}],
        }

    def _group_versions(self) -> dict[str, list[str]]:
        with self._lock:
            removed = set(self._removed_groups)
        groups = {group: versions for group, versions in self.registry.groups().items() if group not in removed}
        if CRD_TYPE.group not in removed:
            groups[CRD_TYPE.group] = [CRD_TYPE.version]
        return dict(sorted(groups.items()))

    def _group_doc(self, group: str, versions: list[str]) -> dict[str, Any]:
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": entries,
            "preferredVersion": entries[0],
        }

    def _group_list(self) -> dict[str, Any]:
        groups = []
        for group, versions in self._group_versions().items():
            doc = self._group_doc(group, versions)
            groups.append({"name": group, "versions": doc["versions"], "preferredVersion": doc["preferredVersion"]})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        resources = []
        for (g, v, _), rt in sorted(self._types.items()):
            if g != group or v != version:
                continue
            entry: dict[str, Any] = {
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": list(rt.verbs),
            }
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            if rt.crd is not None:
                if rt.crd.categories:
                    entry["categories"] = list(rt.crd.categories)
                entry["storageVersionHash"] = base64.b64encode(rt.group_resource.encode()[:8]).decode()
            resources.append(entry)
            if rt.status_subresource:
                resources.append(
                    {
                        "name": f"{rt.plural}/status",
                        "singularName": "",
                        "namespaced": rt.namespaced,
                        "kind": rt.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        body: dict[str, Any] = {"kind": "APIResourceList", "groupVersion": f"{group}/{version}" if group else version}
        if group:
            body["apiVersion"] = "v1"
        body["resources"] = resources
        return body

    # ---- reads -----------------------------------------------------------------------------------

    def _not_found(self, target: _Target, name: str | None = None) -> ApiError:
        name = name or target.name or ""
        details: dict[str, Any] = {"name": name, "group": target.rt.group, "kind": target.rt.plural}
        if not target.rt.group:
            details.pop("group")
        return ApiError(404, f'{target.rt.group_resource} "{name}" not found', details=details)

    def _key(self, target: _Target, name: str | None = None) -> tuple[str, str, str, str]:
        return (target.rt.group, target.rt.plural, target.namespace or "", name or target.name or "")

    def _get(self, target: _Target) -> _Response:
        with self._lock:
            if target.rt.is_namespace and self.namespace_auto_create:
                self._ensure_namespace(target.name or "", create=True)
            stored = self._objects.get(self._key(target))
            if stored is None:
                raise self._not_found(target)
            return _Response(200, self._view(stored.obj, target.rt))

    def _selectors(self, request: _Request, rt: ResourceType) -> tuple[list[Any], list[Any]]:
        try:
            labels = parse_label_selector(request.query.get("labelSelector"))
            fields = parse_field_selector(request.query.get("fieldSelector"), rt.field_labels())
        except SelectorError as error:
            raise ApiError(400, str(error)) from None
        return labels, fields

    @staticmethod
    def _matches(obj: dict[str, Any] | None, labels: list[Any], fields: list[Any]) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        values = {"metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", "")}
        if "type" in obj:
            values["type"] = obj["type"]
        return labels_match(labels, meta.get("labels")) and fields_match(fields, values)

    def _matching(self, target: _Target, labels: list[Any], fields: list[Any]) -> list[tuple[tuple[str, ...], _Stored]]:
        rt = target.rt
        return [
            (key, stored)
            for key, stored in sorted(self._objects.items())
            if key[0] == rt.group
            and key[1] == rt.plural
            and (target.namespace is None or key[2] == target.namespace)
            and self._matches(stored.obj, labels, fields)
        ]

    def _list(self, request: _Request, target: _Target) -> _Response:
        labels, fields = self._selectors(request, target.rt)
        limit = int(request.query.get("limit") or 0)
        token = request.query.get("continue") or ""
        start = None
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
                start, token_rv = tuple(decoded["start"]), int(decoded["rv"])
            except (ValueError, KeyError, TypeError):
                raise ApiError(400, "continue key is not valid: incorrect encoded start resourceVersion") from None
            if token_rv < self._floor:
                raise ApiError(
                    410,
                    "The provided continue parameter is too old to display a consistent list result. You can start a "
                    "new list without the continue parameter, or use the continue token in this response to retrieve "
                    "the remainder of the results. Continuing with the provided token results in an inconsistent list "
                    "- objects that were created, modified, or deleted between the time the first chunk was returned "
                    "and now may show up in the list.",
                    reason="Expired",
                )
        with self._lock:
            matching = self._matching(target, labels, fields)
            if start is not None:
                matching = [(key, stored) for key, stored in matching if key > start]
            meta: dict[str, Any] = {"resourceVersion": str(self._rv)}
            if limit and len(matching) > limit:
                last_key = matching[limit - 1][0]
                meta["continue"] = base64.urlsafe_b64encode(
                    json.dumps({"start": list(last_key), "rv": self._rv}).encode()
                ).decode()
                meta["remainingItemCount"] = len(matching) - limit
                matching = matching[:limit]
            items = []
            for _, stored in matching:
                item = self._view(stored.obj, target.rt)
                if not target.rt.group:  # typed core lists omit apiVersion/kind per item
                    item.pop("apiVersion", None)
                    item.pop("kind", None)
                items.append(item)
        return _Response(
            200, {"apiVersion": target.rt.api_version, "kind": target.rt.list_kind, "metadata": meta, "items": items}
        )

    def _crd_read(self, request: _Request, target: _Target) -> _Response:
        if request.query.get("watch", "").lower() in ("true", "1"):
            raise ApiError(405)
        with self._lock:
            removed = set(self._removed_groups)
        docs = {}
        for crd in self.registry.crds:
            if crd["spec"]["group"] in removed:
                continue
            doc = copy.deepcopy(crd)
            name = doc["metadata"]["name"]
            doc["metadata"].update(
                {
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
                    "resourceVersion": "1",
                    "generation": 1,
                    "creationTimestamp": self._started_at,
                }
            )
            stored = [v["name"] for v in doc["spec"]["versions"] if v.get("storage")]
            doc["status"] = {
                "acceptedNames": doc["spec"]["names"],
                "storedVersions": stored,
                "conditions": [
                    {
                        "type": kind,
                        "status": "True",
                        "lastTransitionTime": self._started_at,
                        "reason": reason,
                        "message": message,
                    }
                    for kind, reason, message in (
                        ("NamesAccepted", "NoConflicts", "no conflicts found"),
                        ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                    )
                ],
            }
            docs[name] = doc
        if target.name is not None:
            if target.name not in docs:
                raise self._not_found(target)
            return _Response(200, docs[target.name])
        labels, fields = self._selectors(request, target.rt)
        items = [doc for _, doc in sorted(docs.items()) if self._matches(doc, labels, fields)]
        body = {
            "apiVersion": CRD_TYPE.api_version,
            "kind": "CustomResourceDefinitionList",
            "metadata": {"resourceVersion": str(self.resource_version)},
            "items": items,
        }
        return _Response(200, body)

    # ---- request body helpers --------------------------------------------------------------------

    @staticmethod
    def _json_body(request: _Request) -> Any:
        try:
            return json.loads(request.body or b"null")
        except ValueError as error:
            raise ApiError(400, f"couldn't get version/kind; json parse error: {error}") from None

    def _object_body(self, request: _Request, target: _Target) -> dict[str, Any]:
        body = self._json_body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "the body of the request was not a JSON object")
        self._check_type_meta(body, target.rt, require=target.rt.crd is not None)
        return body

    @staticmethod
    def _check_type_meta(body: dict[str, Any], rt: ResourceType, *, require: bool) -> None:
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if require and not kind:
            raise ApiError(400, f"Object 'Kind' is missing in '{json.dumps(body)[:200]}'")
        if require and not api_version:
            raise ApiError(400, f"Object 'apiVersion' is missing in '{json.dumps(body)[:200]}'")
        if api_version and api_version != rt.api_version:
            raise ApiError(
                400,
                f"the API version in the data ({api_version}) does not match the expected API version ({rt.api_version})",
            )
        if kind and kind != rt.kind:
            raise ApiError(400, f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")
        body["apiVersion"], body["kind"] = rt.api_version, rt.kind

    @staticmethod
    def _check_identity(body: dict[str, Any], target: _Target) -> dict[str, Any]:
        meta = body.get("metadata")
        if meta is None:
            meta = body["metadata"] = {}
        if not isinstance(meta, dict):
            raise ApiError(
                422,
                f'{target.rt.group_kind} "{target.name or ""}" is invalid: metadata: Invalid value: must be an object',
            )
        namespace = meta.get("namespace")
        if target.rt.namespaced:
            if namespace and namespace != target.namespace:
                raise ApiError(
                    400, "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = target.namespace
        if target.name is not None:
            name = meta.get("name")
            if name and name != target.name:
                raise ApiError(
                    400, f"the name of the object ({name}) does not match the name on the URL ({target.name})"
                )
            meta["name"] = target.name
        return meta

    def _manager_name(self, request: _Request) -> str:
        manager = request.query.get("fieldManager")
        if manager:
            if len(manager) > 128:
                raise ApiError(422, "fieldManager: Too long: may not be more than 128 bytes", reason="Invalid")
            return manager
        agent = request.headers.get("user-agent", "unknown")
        return agent.split("/")[0] or "unknown"

    def _invalid(self, rt: ResourceType, name: str, causes: list[Cause]) -> ApiError:
        """The apiserver's 422: one cause inline, several as ``[a, b]``."""
        rendered = [str(cause) for cause in causes]
        summary = rendered[0] if len(rendered) == 1 else "[" + ", ".join(rendered) + "]"
        details: dict[str, Any] = {
            "name": name,
            "group": rt.group,
            "kind": rt.kind,
            "causes": [c.to_dict() for c in causes],
        }
        if not rt.group:
            details.pop("group")
        return ApiError(422, f'{rt.group_kind} "{name}" is invalid: {summary}', details=details)

    def _conflict(self, rt: ResourceType, name: str, detail: str) -> ApiError:
        details: dict[str, Any] = {"name": name, "group": rt.group, "kind": rt.plural}
        if not rt.group:
            details.pop("group")
        return ApiError(
            409, f'Operation cannot be fulfilled on {rt.group_resource} "{name}": {detail}', details=details
        )

    def _stale(self, rt: ResourceType, name: str) -> ApiError:
        return self._conflict(
            rt, name, "the object has been modified; please apply your changes to the latest version and try again"
        )

    # ---- writes ----------------------------------------------------------------------------------

    def _prepare(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
        """Normalize (stringData, defaults) and validate ``obj`` in place; returns the causes."""
        if rt.is_secret:
            causes = validate_secret(obj)
            if causes:
                return causes
            normalize_secret(obj)
            return validate_secret_update(obj, old) if old is not None else []
        if rt.crd is not None:
            rt.crd.default(obj)
            if old is not None:  # the apiserver defaults what it reads from etcd, too
                old = rt.crd.default(copy.deepcopy(old))
        return rt.validate(obj, old)

    def _managers_for_update(
        self,
        stored_managers: dict[ManagerKey, _Manager],
        old: dict[str, Any] | None,
        new: dict[str, Any],
        acting: ManagerKey,
        api_version: str,
    ) -> dict[ManagerKey, _Manager]:
        """An Update operation owns what it changed; nobody owns what no longer exists."""
        old_paths = leaf_paths(old) if old is not None else {}
        new_paths = leaf_paths(new)
        changed = {p for p, v in new_paths.items() if p not in old_paths or canonical(old_paths[p]) != canonical(v)}
        result: dict[ManagerKey, _Manager] = {}
        for key, entry in stored_managers.items():
            fields = (entry.fields - changed) & set(new_paths) if key != acting else entry.fields & set(new_paths)
            if fields:
                result[key] = _Manager(fields, entry.time, entry.api_version)
        if changed:
            entry = result.get(acting)
            result[acting] = _Manager((entry.fields if entry else set()) | changed, now_rfc3339(), api_version)
        return result

    @staticmethod
    def _same_managers(left: dict[ManagerKey, _Manager], right: dict[ManagerKey, _Manager]) -> bool:
        return {k: v.fields for k, v in left.items()} == {k: v.fields for k, v in right.items()}

    def _create(self, request: _Request, target: _Target, dry_run: bool) -> _Response:
        body = self._object_body(request, target)
        manager = (self._manager_name(request), "Update", "")
        return self._create_object(target, body, manager, None, dry_run)

    def _create_object(
        self,
        target: _Target,
        body: dict[str, Any],
        manager: ManagerKey,
        applied: set[tuple[str, ...]] | None,
        dry_run: bool,
    ) -> _Response:
        rt = target.rt
        meta = self._check_identity(body, target)
        if meta.get("resourceVersion") and applied is None:
            raise ApiError(400, "resourceVersion should not be set on objects to be created")
        for name in SYSTEM_METADATA - {"name", "namespace", "generateName"}:
            meta.pop(name, None)
        with self._lock:
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = self._generate_name(rt, target.namespace, meta["generateName"])
            name = meta.get("name") or ""
            if rt.status_subresource:
                body.pop("status", None)
            causes = self._prepare(rt, body, None)
            if rt.is_namespace and not causes:
                body.setdefault("spec", {"finalizers": ["kubernetes"]})
                body["status"] = {"phase": "Active"}
                meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
            if causes:
                raise self._invalid(rt, name, causes)
            if rt.namespaced:
                self._ensure_namespace(target.namespace or "", create=False)
            key = self._key(target, name)
            if key in self._objects:
                details: dict[str, Any] = {"name": name, "group": rt.group, "kind": rt.plural}
                if not rt.group:
                    details.pop("group")
                raise ApiError(
                    409, f'{rt.group_resource} "{name}" already exists', reason="AlreadyExists", details=details
                )
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            if rt.has_generation:
                meta["generation"] = 1
            paths = set(leaf_paths(body))
            owned = paths if applied is None else applied & paths
            managers = {manager: _Manager(owned, now_rfc3339(), rt.api_version)} if owned else {}
            if dry_run:
                meta["resourceVersion"] = str(self._rv)
                self._render_managed(body, managers)
                return _Response(201, body)
            if rt.namespaced:
                self._ensure_namespace(target.namespace or "", create=True)
            stored = self._store_new(rt, key, body, managers)
            return _Response(201, self._view(stored, rt))

    def _generate_name(self, rt: ResourceType, namespace: str | None, prefix: str) -> str:
        alphabet = "bcdfghjklmnpqrstvwxz2456789"
        prefix = prefix[:58]
        for _ in range(100):
            name = prefix + "".join(random.choice(alphabet) for _ in range(5))
            if (rt.group, rt.plural, namespace or "", name) not in self._objects:
                return name
        raise ApiError(500, "could not generate a unique name")

    def _replace(self, request: _Request, target: _Target, dry_run: bool) -> _Response:
        if target.name is None:
            raise ApiError(405)
        body = self._object_body(request, target)
        self._check_identity(body, target)
        manager = (self._manager_name(request), "Update", target.subresource or "")
        return self._update(target, body, manager, None, dry_run, require_rv=target.rt.crd is not None)

    def _update(
        self,
        target: _Target,
        candidate: dict[str, Any],
        manager: ManagerKey,
        apply_managers: dict[ManagerKey, _Manager] | None,
        dry_run: bool,
        *,
        require_rv: bool = False,
    ) -> _Response:
        """The common tail of PUT, PATCH and apply: merge system fields, validate, commit if changed."""
        rt = target.rt
        name = target.name or ""
        if rt.read_only or rt.is_namespace:
            raise ApiError(405)
        with self._lock:
            key = self._key(target)
            stored = self._objects.get(key)
            if stored is None:
                raise self._not_found(target)
            old = self._view(stored.obj, rt)
            old_meta = old["metadata"]
            meta = candidate.get("metadata") or {}
            requested_rv = meta.get("resourceVersion")
            if requested_rv and requested_rv != old_meta.get("resourceVersion"):
                raise self._stale(rt, name)
            uid = meta.get("uid")
            if uid and uid != old_meta.get("uid"):
                raise self._conflict(
                    rt,
                    name,
                    f"Precondition failed: UID in precondition: {uid}, UID in object meta: {old_meta.get('uid')}",
                )
            if target.subresource == "status":
                new = copy.deepcopy(old)
                if "status" in candidate:
                    new["status"] = copy.deepcopy(candidate["status"])
                else:
                    new.pop("status", None)
            else:
                new = copy.deepcopy(candidate)
                new_meta = new.setdefault("metadata", {})
                for field_name in (
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "generation",
                ):
                    if field_name in old_meta:
                        new_meta[field_name] = old_meta[field_name]
                    else:
                        new_meta.pop(field_name, None)
                new_meta.pop("managedFields", None)
                new_meta.pop("selfLink", None)
                if rt.status_subresource:
                    if "status" in old:
                        new["status"] = copy.deepcopy(old["status"])
                    else:
                        new.pop("status", None)
            new["metadata"]["resourceVersion"] = old_meta.get("resourceVersion")
            causes = self._prepare(rt, new, old)
            if require_rv and not requested_rv:
                causes.append(
                    Cause(
                        "metadata.resourceVersion",
                        "FieldValueInvalid",
                        "Invalid value: 0x0: must be specified for an update",
                    )
                )
            if old_meta.get("deletionTimestamp"):
                added = [
                    f for f in new["metadata"].get("finalizers") or [] if f not in (old_meta.get("finalizers") or [])
                ]
                if added:
                    causes.append(
                        forbidden(
                            "metadata.finalizers",
                            f"no new finalizers can be added if the object is being deleted, found new finalizers {json.dumps(added)}",
                        )
                    )
            if causes:
                raise self._invalid(rt, name, causes)
            if apply_managers is None:
                managers = self._managers_for_update(stored.managers, old, new, manager, rt.api_version)
            else:
                paths = set(leaf_paths(new))
                managers = {}
                for mkey, entry in apply_managers.items():
                    if entry.fields & paths:
                        managers[mkey] = _Manager(entry.fields & paths, entry.time, entry.api_version)
            strip = {"resourceVersion", "managedFields"}
            same_obj = canonical(_without_meta(old, strip)) == canonical(_without_meta(new, strip))
            if same_obj and self._same_managers(stored.managers, managers):
                return _Response(200, old)  # nothing changed: no write, no new resourceVersion
            if rt.has_generation and self._spec_changed(rt, old, new):
                new["metadata"]["generation"] = old_meta.get("generation", 1) + 1
            if manager in managers:
                managers[manager].time = now_rfc3339()
            if dry_run:
                self._render_managed(new, managers)
                return _Response(200, new)
            stored_obj = self._store_update(rt, key, stored, new, managers)
            return _Response(200, self._view(stored_obj, rt))

    def _patch(self, request: _Request, target: _Target, dry_run: bool) -> _Response:
        rt = target.rt
        if target.name is None:
            raise ApiError(405)
        ctype = request.content_type
        accepted = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH]
        if rt.crd is None:
            accepted.insert(2, STRATEGIC_PATCH)
        if ctype not in accepted:
            raise ApiError(
                415,
                "the body of the request was in an unknown format - accepted media types include: "
                + ", ".join(accepted),
            )
        force = request.query.get("force")
        if ctype != APPLY_PATCH and force not in (None, ""):
            raise ApiError(
                422,
                'PatchOptions.meta.k8s.io "" is invalid: force: Forbidden: may not be specified for non-apply patch',
            )
        if ctype == APPLY_PATCH:
            return self._apply(request, target, dry_run, force=(force or "").lower() in ("true", "1"))
        try:
            patch = json.loads(request.body or b"null")
        except ValueError as error:
            raise ApiError(400, f"error decoding patch: {error}") from None
        with self._lock:
            stored = self._objects.get(self._key(target))
            if stored is None:
                raise self._not_found(target)
            current = self._view(stored.obj, rt)
        try:
            if ctype == JSON_PATCH:
                candidate = json_patch(current, patch)
            else:
                if not isinstance(patch, dict):
                    raise PatchError("merge patch must be a JSON object", malformed=True)
                candidate = merge_patch(current, patch)
        except PatchError as error:
            if error.malformed:
                raise ApiError(400, str(error)) from None
            raise ApiError(
                422,
                "the server rejected our request due to an error in our request",
                details={"causes": [{"reason": "UnexpectedServerResponse", "message": str(error)}]},
            ) from None
        if not isinstance(candidate, dict):
            raise ApiError(400, "the patched object is not a JSON object")
        self._check_type_meta(candidate, rt, require=True)
        self._check_identity(candidate, target)
        meta = candidate["metadata"]
        if meta.get("resourceVersion") == current["metadata"].get("resourceVersion") and not _patch_sets_rv(
            patch, ctype
        ):
            meta.pop("resourceVersion", None)  # the patch did not ask for a precondition
        manager = (self._manager_name(request), "Update", target.subresource or "")
        return self._update(target, candidate, manager, None, dry_run)

    def _apply(self, request: _Request, target: _Target, dry_run: bool, *, force: bool) -> _Response:
        """Server-side apply with per-manager field sets (lists atomic)."""
        rt = target.rt
        manager_name = request.query.get("fieldManager")
        if not manager_name:
            raise ApiError(
                422,
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
                details={
                    "group": "meta.k8s.io",
                    "kind": "PatchOptions",
                    "causes": [
                        {
                            "reason": "FieldValueRequired",
                            "message": "Required value: is required for apply patch",
                            "field": "fieldManager",
                        }
                    ],
                },
            )
        try:
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            applied = yaml.load(request.body or b"", Loader=loader)  # noqa: S506 - a safe loader
        except yaml.YAMLError as error:
            raise ApiError(400, f"error decoding YAML: {error}") from None
        if not isinstance(applied, dict):
            raise ApiError(400, "the apply configuration must be an object")
        self._check_type_meta(applied, rt, require=True)
        self._check_identity(applied, target)
        subresource = target.subresource or ""
        if subresource == "status":
            scope = {"only_status": True}
        else:
            scope = {"include_status": not rt.status_subresource}
            if rt.status_subresource:
                applied.pop("status", None)
        applied_paths = leaf_paths(applied, **scope)
        mkey: ManagerKey = (manager_name, "Apply", subresource)
        with self._lock:
            stored = self._objects.get(self._key(target))
            if stored is None and subresource:
                raise self._not_found(target)
            if stored is None:
                body = copy.deepcopy(applied)
                body["metadata"].pop("resourceVersion", None)
                return self._create_object(target, body, mkey, set(applied_paths), dry_run)
            live = self._view(stored.obj, rt)
            requested_rv = applied["metadata"].get("resourceVersion")
            if requested_rv and requested_rv != live["metadata"].get("resourceVersion"):
                raise self._stale(rt, target.name or "")
            managers = {k: _Manager(set(v.fields), v.time, v.api_version) for k, v in stored.managers.items()}
            conflicts: dict[ManagerKey, list[tuple[str, ...]]] = {}
            for path, value in applied_paths.items():
                found, live_value = get_path(live, path)
                if not found or canonical(live_value) == canonical(value):
                    continue
                for other, entry in managers.items():
                    if other != mkey and any(owned[: len(path)] == path for owned in entry.fields):
                        conflicts.setdefault(other, []).append(path)
            if conflicts and not force:
                raise self._apply_conflict(managers, conflicts)
            for other, paths in conflicts.items():
                managers[other].fields = {
                    owned for owned in managers[other].fields if not any(owned[: len(p)] == p for p in paths)
                }
            previous = managers[mkey].fields if mkey in managers else set()
            candidate = copy.deepcopy(live)
            keep = {path[:depth] for path in applied_paths for depth in range(1, len(path) + 1)}
            for path in sorted(previous - set(applied_paths), key=len, reverse=True):
                owned_elsewhere = any(
                    any(owned[: len(path)] == path for owned in entry.fields)
                    for k, entry in managers.items()
                    if k != mkey
                )
                if not owned_elsewhere:
                    delete_path(candidate, path, keep)
            for path, value in applied_paths.items():
                set_path(candidate, path, value)
            managers[mkey] = _Manager(set(applied_paths), now_rfc3339(), rt.api_version)
            managers = {k: v for k, v in managers.items() if v.fields}
            if requested_rv:
                candidate["metadata"]["resourceVersion"] = requested_rv
            else:
                candidate["metadata"].pop("resourceVersion", None)
            return self._update(target, candidate, mkey, managers, dry_run)

    @staticmethod
    def _apply_conflict(
        managers: dict[ManagerKey, _Manager], conflicts: dict[ManagerKey, list[tuple[str, ...]]]
    ) -> ApiError:
        """The 409 of a conflicting apply, worded like k8s.io/apiserver's ``NewConflictError``."""
        causes = []
        lines = []
        for key, paths in conflicts.items():
            manager, operation, subresource = key
            who = f'"{manager}"'
            if subresource:
                who += f' with subresource "{subresource}"'
            if operation == "Update":
                who += f" using {managers[key].api_version} at {managers[key].time}"
            for path in paths:
                rendered = "." + ".".join(path)
                causes.append({"reason": "FieldManagerConflict", "message": f"conflict with {who}", "field": rendered})
                lines.append(f"conflict with {who}: {rendered}")
        count = len(causes)
        noun = "conflict" if count == 1 else "conflicts"
        return ApiError(409, f"Apply failed with {count} {noun}: " + "\n".join(lines), details={"causes": causes})

    def _delete_options(self, request: _Request) -> dict[str, Any]:
        if not request.body:
            return {}
        body = self._json_body(request)
        return body if isinstance(body, dict) else {}

    def _delete(self, request: _Request, target: _Target, dry_run: bool) -> _Response:
        rt = target.rt
        if rt.read_only:
            raise ApiError(405)
        options = self._delete_options(request)
        with self._lock:
            key = self._key(target)
            stored = self._objects.get(key)
            if stored is None:
                if rt.is_namespace and self.namespace_auto_create:
                    return _Response(200, self._delete_namespace_contents(target.name or "", dry_run, None))
                raise self._not_found(target)
            meta = stored.obj["metadata"]
            preconditions = options.get("preconditions") or {}
            if preconditions.get("uid") and preconditions["uid"] != meta.get("uid"):
                raise self._conflict(
                    rt,
                    target.name or "",
                    f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in object meta: {meta.get('uid')}",
                )
            if preconditions.get("resourceVersion") and preconditions["resourceVersion"] != meta.get("resourceVersion"):
                raise self._conflict(
                    rt,
                    target.name or "",
                    "Precondition failed: ResourceVersion in precondition: "
                    f"{preconditions['resourceVersion']}, ResourceVersion in object meta: {meta.get('resourceVersion')}",
                )
            if rt.is_namespace:
                return _Response(200, self._delete_namespace_contents(target.name or "", dry_run, stored))
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp") or dry_run:
                    return _Response(200, self._view(stored.obj, rt))
                new = copy.deepcopy(stored.obj)
                new["metadata"]["deletionTimestamp"] = now_rfc3339()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                if rt.has_generation:
                    new["metadata"]["generation"] = meta.get("generation", 1) + 1
                return _Response(200, self._view(self._store_update(rt, key, stored, new, stored.managers), rt))
            gone = self._view(stored.obj, rt) if dry_run else self._view(self._remove(rt, key), rt)
            if rt.crd is not None:
                return _Response(200, gone)
            return _Response(200, _success(target.name or "", rt.plural, meta.get("uid"), rt.group))

    def _delete_namespace_contents(self, name: str, dry_run: bool, stored: _Stored | None) -> dict[str, Any]:
        if not dry_run:
            for key in [k for k in self._objects if k[2] == name]:
                self._remove(self._types_by_key(key), key)
            if stored is not None:
                self._remove(NAMESPACE_TYPE, self._namespace_key(name))
        return _success(name, "namespaces", stored.obj["metadata"].get("uid") if stored else None, "")

    def _types_by_key(self, key: tuple[str, str, str, str]) -> ResourceType:
        for rt in self._types.values():
            if rt.group == key[0] and rt.plural == key[1]:
                return rt
        raise KeyError(key)

    def _delete_collection(self, request: _Request, target: _Target, dry_run: bool) -> _Response:
        rt = target.rt
        if rt.read_only or rt.is_namespace:
            raise ApiError(405)
        labels, fields = self._selectors(request, rt)
        items = []
        with self._lock:
            for key, stored in self._matching(target, labels, fields):
                meta = stored.obj["metadata"]
                if dry_run:
                    items.append(self._view(stored.obj, rt))
                elif meta.get("finalizers"):
                    if not meta.get("deletionTimestamp"):
                        new = copy.deepcopy(stored.obj)
                        new["metadata"]["deletionTimestamp"] = now_rfc3339()
                        new["metadata"]["deletionGracePeriodSeconds"] = 0
                        if rt.has_generation:
                            new["metadata"]["generation"] = meta.get("generation", 1) + 1
                        items.append(self._view(self._store_update(rt, key, stored, new, stored.managers), rt))
                else:
                    items.append(self._view(self._remove(rt, key), rt))
            rv = str(self._rv)
        return _Response(
            200,
            {"apiVersion": rt.api_version, "kind": rt.list_kind, "metadata": {"resourceVersion": rv}, "items": items},
        )

    # ---- watch -------------------------------------------------------------------------------------

    def _watch_plan(self, request: _Request, target: _Target) -> _WatchPlan:
        rt = target.rt
        labels, fields = self._selectors(request, rt)
        raw_rv = request.query.get("resourceVersion") or ""
        timeout = self.watch_timeout
        if request.query.get("timeoutSeconds"):
            try:
                timeout = float(request.query["timeoutSeconds"])
            except ValueError:
                raise ApiError(400, f"invalid timeoutSeconds: {request.query['timeoutSeconds']}") from None
        bookmarks = request.query.get("allowWatchBookmarks", "").lower() in ("true", "1")
        plan = _WatchPlan(rt, target.namespace, labels, fields, 0, time.monotonic() + timeout, bookmarks, [])
        with self._lock:
            if raw_rv in ("", "0"):
                plan.cursor = self._rv
                for _, stored in self._matching(target, labels, fields):
                    plan.initial.append({"type": "ADDED", "object": self._view(stored.obj, rt)})
                return plan
            try:
                requested = int(raw_rv)
            except ValueError:
                raise ApiError(
                    400, f'resourceVersion: Invalid value: "{raw_rv}": must be a non-negative integer'
                ) from None
            plan.cursor = requested
            if requested < self._floor:
                plan.expired = _expired_event(requested, self._floor)
        return plan

    def _watch_event(self, plan: _WatchPlan, event: _Event) -> dict[str, Any] | None:
        rt = plan.rt
        if event.group != rt.group or event.plural != rt.plural:
            return None
        if plan.namespace is not None and event.namespace != plan.namespace:
            return None
        now_match = self._matches(event.obj, plan.labels, plan.fields)
        if event.type == "ADDED":
            kind = "ADDED" if now_match else None
        elif event.type == "DELETED":
            kind = "DELETED" if self._matches(event.old, plan.labels, plan.fields) else None
        else:
            was_match = self._matches(event.old, plan.labels, plan.fields)
            kind = {(True, True): "MODIFIED", (False, True): "ADDED", (True, False): "DELETED"}.get(
                (was_match, now_match)
            )
        if kind is None:
            return None
        obj = dict(event.obj)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        return {"type": kind, "object": obj}

    def _stream_watch(self, handler: _Handler, plan: _WatchPlan) -> None:
        """Serve one watch on the handler's connection until timeout, shutdown, or a broken pipe."""
        handler.close_connection = True
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Transfer-Encoding", "chunked")
            handler.send_header("Cache-Control", "no-cache, private")
            handler.send_header("Connection", "close")
            handler.end_headers()
        except OSError:
            return

        def send(event: dict[str, Any]) -> bool:
            return handler.write_chunk(json.dumps(event).encode() + b"\n")

        for event in plan.initial:
            if not send(event):
                return
        if plan.expired is not None:
            send(plan.expired)
            handler.write_chunk(b"")
            return
        next_bookmark = time.monotonic() + self.bookmark_interval
        while True:
            outgoing: list[dict[str, Any]] = []
            expired = None
            bookmark = None
            with self._cond:
                while True:
                    now = time.monotonic()
                    if self._stopping.is_set() or now >= plan.deadline:
                        break
                    if plan.cursor < self._floor:
                        expired = _expired_event(plan.cursor, self._floor)
                        break
                    if self._history and self._history[-1].rv > plan.cursor:
                        break
                    if plan.bookmarks and now >= next_bookmark:
                        break
                    wake = min(plan.deadline, next_bookmark if plan.bookmarks else plan.deadline)
                    self._cond.wait(timeout=max(0.0, wake - now))
                for event in self._history:
                    if event.rv > plan.cursor:
                        rendered = self._watch_event(plan, event)
                        if rendered is not None:
                            outgoing.append(rendered)
                if expired is None and not self._stopping.is_set():
                    plan.cursor = max(plan.cursor, self._rv)
                if plan.bookmarks and time.monotonic() >= next_bookmark:
                    bookmark = {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": plan.rt.kind,
                            "apiVersion": plan.rt.api_version,
                            "metadata": {"resourceVersion": str(plan.cursor)},
                        },
                    }
                    next_bookmark = time.monotonic() + self.bookmark_interval
                finished = self._stopping.is_set() or time.monotonic() >= plan.deadline
            for event in outgoing:
                if not send(event):
                    return
            if expired is not None:
                send(expired)
                break
            if bookmark is not None and not send(bookmark):
                return
            if finished:
                break
        handler.write_chunk(b"")


def _without_meta(obj: dict[str, Any], names: set[str]) -> dict[str, Any]:
    result = dict(obj)
    result["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in names}
    return result


def _patch_sets_rv(patch: Any, ctype: str) -> bool:
    """Whether a merge/JSON patch explicitly carries ``metadata.resourceVersion`` (a precondition)."""
    if ctype == JSON_PATCH:
        return isinstance(patch, list) and any(
            isinstance(op, dict) and op.get("path") == "/metadata/resourceVersion" for op in patch
        )
    return (
        isinstance(patch, dict) and isinstance(patch.get("metadata"), dict) and "resourceVersion" in patch["metadata"]
    )


def _expired_event(requested: int, oldest: int) -> dict[str, Any]:
    return {"type": "ERROR", "object": status_body(410, f"too old resource version: {requested} ({oldest})", "Expired")}


def _success(name: str, plural: str, uid: str | None, group: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "group": group, "kind": plural}
    if not group:
        details.pop("group")
    if uid:
        details["uid"] = uid
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


def iter_watch_lines(raw: bytes) -> Iterator[dict[str, Any]]:
    """Decode a newline-delimited watch body (handy for raw-HTTP assertions)."""
    for line in raw.splitlines():
        if line.strip():
            yield json.loads(line)
