"""Validation of objects against upstream CRD ``openAPIV3Schema``s, the way kube-apiserver does it.

Teapot's tests use this to prove that every object its builders emit would be accepted by a real
management cluster. The checks follow the apiserver closely where that is cheap:

* structural-schema defaulting (``default``) and pruning of ``null`` for non-nullable fields;
* OpenAPI value validation (type, enum, pattern, lengths, bounds, item counts, formats), done by a
  ``jsonschema`` Draft 7 validator whose keyword functions are replaced by ones that speak the
  Kubernetes dialect (``nullable``, ``x-kubernetes-int-or-string``, OpenAPI v3 boolean
  ``exclusiveMinimum``) and emit Kubernetes ``StatusCause`` reasons and messages;
* ``x-kubernetes-list-type: set|map`` uniqueness;
* **strict unknown fields**: a property the schema does not declare (where
  ``x-kubernetes-preserve-unknown-fields`` is not set) is an error, as with
  ``fieldValidation=Strict``, instead of being silently pruned;
* ``ObjectMeta`` rules (names, labels, annotations, finalizers, owner references);
* the shape of core ``v1`` ``Secret`` objects.

CEL rules (``x-kubernetes-validations``) are not evaluated.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError

__all__ = [
    "Cause",
    "CrdRegistry",
    "CrdVersion",
    "apply_defaults",
    "format_value",
    "normalize_secret",
    "ratchet",
    "validate_object_meta",
    "validate_secret",
    "validate_secret_update",
    "version_priority",
]

# --------------------------------------------------------------------------------------------
# Causes


@dataclass(frozen=True)
class Cause:
    """One ``details.causes[]`` entry of a Kubernetes ``Status``: which field, why, and the message."""

    field: str
    reason: str
    message: str
    segments: tuple[str | int, ...] | None = field(default=None, compare=False, repr=False)
    """The structured path (schema causes only), used for validation ratcheting on updates."""

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def format_value(value: Any) -> str:
    """Render a value the way Go's ``field.Error`` does: strings quoted, numbers and bools bare."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def required(path: str, detail: str = "") -> Cause:
    return Cause(path, "FieldValueRequired", f"Required value: {detail}" if detail else "Required value")


def invalid(path: str, value: Any, detail: str) -> Cause:
    return Cause(path, "FieldValueInvalid", f"Invalid value: {format_value(value)}: {detail}")


def type_invalid(path: str, value: Any, detail: str) -> Cause:
    return Cause(path, "FieldValueTypeInvalid", f"Invalid value: {format_value(value)}: {detail}")


def not_supported(path: str, value: Any, supported: list[Any]) -> Cause:
    values = ", ".join(format_value(v) for v in supported)
    return Cause(
        path, "FieldValueNotSupported", f"Unsupported value: {format_value(value)}: supported values: {values}"
    )


def too_long(path: str, limit: int) -> Cause:
    unit = "byte" if limit == 1 else "bytes"
    return Cause(path, "FieldValueTooLong", f"Too long: may not be more than {limit} {unit}")


def too_many(path: str, actual: int, limit: int) -> Cause:
    return Cause(path, "FieldValueTooMany", f"Too many: {actual}: must have at most {limit} items")


def duplicate(path: str, value: Any) -> Cause:
    return Cause(path, "FieldValueDuplicate", f"Duplicate value: {format_value(value)}")


def forbidden(path: str, detail: str) -> Cause:
    return Cause(path, "FieldValueForbidden", f"Forbidden: {detail}")


def unknown_field(path: str) -> Cause:
    """Strict field validation: the apiserver would prune this field, we refuse it instead."""
    return Cause(path, "FieldValueInvalid", f'unknown field "{path}"')


def join_path(base: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f"{base}.{key}" if base else key


# --------------------------------------------------------------------------------------------
# Name and label syntax (k8s.io/apimachinery/pkg/util/validation)

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*"
_DNS1123_SUBDOMAIN_RE = re.compile(rf"^{_DNS1123_SUBDOMAIN}$")
_DNS1123_LABEL_RE = re.compile(rf"^{_DNS1123_LABEL}$")
_QUALIFIED_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QUALIFIED_NAME_RE = re.compile(rf"^{_QUALIFIED_NAME}$")
_LABEL_VALUE = rf"({_QUALIFIED_NAME})?"
_LABEL_VALUE_RE = re.compile(rf"^{_LABEL_VALUE}$")
_CONFIG_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")

_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    f"validation is '{_DNS1123_SUBDOMAIN}')"
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    f"start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
    f"validation is '{_DNS1123_LABEL}')"
)
_QUALIFIED_NAME_FMT = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation "
    f"is '{_QUALIFIED_NAME}')"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
    f"'12345', regex used for validation is '{_LABEL_VALUE}')"
)
_CONFIG_KEY_MSG = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  "
    "or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
)


def dns1123_subdomain_errors(value: str) -> list[str]:
    errors = []
    if len(value) > 253:
        errors.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN_RE.match(value):
        errors.append(_SUBDOMAIN_MSG)
    return errors


def dns1123_label_errors(value: str) -> list[str]:
    errors = []
    if len(value) > 63:
        errors.append("must be no more than 63 characters")
    if not _DNS1123_LABEL_RE.match(value):
        errors.append(_LABEL_MSG)
    return errors


def qualified_name_errors(value: str) -> list[str]:
    """``IsQualifiedName``: optional DNS-subdomain prefix, '/', then a name part of at most 63."""
    errors: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            errors.extend("prefix part " + msg for msg in dns1123_subdomain_errors(prefix))
    else:
        return [
            "a qualified name "
            + _QUALIFIED_NAME_FMT
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append("name part must be no more than 63 characters")
    if name and not _QUALIFIED_NAME_RE.match(name):
        errors.append("name part " + _QUALIFIED_NAME_FMT)
    return errors


def label_value_errors(value: str) -> list[str]:
    errors = []
    if len(value) > 63:
        errors.append("must be no more than 63 characters")
    if not _LABEL_VALUE_RE.match(value):
        errors.append(_LABEL_VALUE_MSG)
    return errors


# --------------------------------------------------------------------------------------------
# ObjectMeta

_META_FIELDS = {
    "name": str,
    "generateName": str,
    "namespace": str,
    "selfLink": str,
    "uid": str,
    "resourceVersion": str,
    "generation": int,
    "creationTimestamp": str,
    "deletionTimestamp": str,
    "deletionGracePeriodSeconds": int,
    "labels": dict,
    "annotations": dict,
    "ownerReferences": list,
    "finalizers": list,
    "managedFields": list,
}
_OWNER_REF_FIELDS = {
    "apiVersion": str,
    "kind": str,
    "name": str,
    "uid": str,
    "controller": bool,
    "blockOwnerDeletion": bool,
}
_JSON_TYPE_NAMES = {str: "string", int: "integer", dict: "object", list: "array", bool: "boolean"}
TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _typed(value: Any, expected: type) -> bool:
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def validate_object_meta(meta: Any, *, namespaced: bool, name_rule: str = "subdomain") -> list[Cause]:
    """``ValidateObjectMeta``: the apiserver checks the top-level ``metadata`` itself, not the CRD schema.

    ``name_rule`` is ``"subdomain"`` (custom resources, Secrets) or ``"label"`` (Namespaces).
    """
    if not isinstance(meta, dict):
        return [
            type_invalid("metadata", json_type(meta), f'metadata in body must be of type object: "{json_type(meta)}"')
        ]
    causes: list[Cause] = []
    for key, value in meta.items():
        path = f"metadata.{key}"
        expected = _META_FIELDS.get(key)
        if expected is None:
            causes.append(unknown_field(path))
        elif value is not None and not _typed(value, expected):
            tname = _JSON_TYPE_NAMES[expected]
            causes.append(
                type_invalid(path, json_type(value), f'{path} in body must be of type {tname}: "{json_type(value)}"')
            )
    if causes:
        return causes

    name = meta.get("name") or ""
    if not name and not meta.get("generateName"):
        causes.append(required("metadata.name", "name or generateName is required"))
    elif name:
        check = dns1123_label_errors if name_rule == "label" else dns1123_subdomain_errors
        causes.extend(invalid("metadata.name", name, msg) for msg in check(name))
    if not namespaced and meta.get("namespace"):
        causes.append(forbidden("metadata.namespace", "not allowed on this type"))

    labels = meta.get("labels") or {}
    for key, value in labels.items():
        causes.extend(invalid("metadata.labels", key, msg) for msg in qualified_name_errors(key))
        if not isinstance(value, str):
            causes.append(type_invalid(f"metadata.labels.{key}", json_type(value), "must be a string"))
            continue
        causes.extend(invalid("metadata.labels", value, msg) for msg in label_value_errors(value))

    annotations = meta.get("annotations") or {}
    total = 0
    for key, value in annotations.items():
        causes.extend(invalid("metadata.annotations", key, msg) for msg in qualified_name_errors(key.lower()))
        if not isinstance(value, str):
            causes.append(type_invalid(f"metadata.annotations.{key}", json_type(value), "must be a string"))
            continue
        total += len(key.encode()) + len(value.encode())
    if total > TOTAL_ANNOTATION_SIZE_LIMIT:
        causes.append(too_long("metadata.annotations", TOTAL_ANNOTATION_SIZE_LIMIT))

    for index, finalizer in enumerate(meta.get("finalizers") or []):
        path = f"metadata.finalizers[{index}]"
        if not isinstance(finalizer, str):
            causes.append(
                type_invalid(
                    path, json_type(finalizer), f'{path} in body must be of type string: "{json_type(finalizer)}"'
                )
            )
            continue
        causes.extend(invalid(path, finalizer, msg) for msg in qualified_name_errors(finalizer))

    controllers = []
    for index, ref in enumerate(meta.get("ownerReferences") or []):
        path = f"metadata.ownerReferences[{index}]"
        if not isinstance(ref, dict):
            causes.append(
                type_invalid(path, json_type(ref), f'{path} in body must be of type object: "{json_type(ref)}"')
            )
            continue
        for key, value in ref.items():
            expected = _OWNER_REF_FIELDS.get(key)
            if expected is None:
                causes.append(unknown_field(f"{path}.{key}"))
            elif value is not None and not _typed(value, expected):
                causes.append(
                    type_invalid(f"{path}.{key}", json_type(value), f"must be of type {_JSON_TYPE_NAMES[expected]}")
                )
        for key, what in (("apiVersion", "version"), ("kind", "kind"), ("name", "name"), ("uid", "uid")):
            if not ref.get(key):
                causes.append(invalid(f"metadata.ownerReferences.{key}", "", f"{what} must not be empty"))
        if ref.get("controller"):
            controllers.append(f"{ref.get('kind')}/{ref.get('name')}")
    if len(controllers) > 1:
        causes.append(
            invalid(
                "metadata.ownerReferences",
                meta.get("ownerReferences"),
                f'Only one reference can have Controller set to true. Found "true" in references for {", ".join(controllers)}',
            )
        )
    return causes


# --------------------------------------------------------------------------------------------
# Secrets

SECRET_FIELDS = ("apiVersion", "kind", "metadata", "data", "stringData", "type", "immutable")
SECRET_SIZE_LIMIT = 1024 * 1024


def _base64_error(value: str) -> str | None:
    """Go's ``base64.StdEncoding`` (padding required) error text, or ``None`` if valid."""
    alphabet = re.compile(r"[A-Za-z0-9+/]")
    stripped = value.replace("\r", "").replace("\n", "")
    for index, char in enumerate(stripped):
        if char == "=":
            break
        if not alphabet.match(char):
            return f"illegal base64 data at input byte {index}"
    try:
        base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        return f"illegal base64 data at input byte {len(stripped) - len(stripped) % 4}"
    return None


def validate_secret(obj: Mapping[str, Any]) -> list[Cause]:
    """The ``v1`` Secret shape as sent: known fields only, base64 ``data``, string ``stringData``."""
    causes = [unknown_field(key) for key in obj if key not in SECRET_FIELDS]
    causes += validate_object_meta(obj.get("metadata"), namespaced=True)
    total = 0
    for section in ("data", "stringData"):
        values = obj.get(section)
        if values is None:
            continue
        if not isinstance(values, dict):
            causes.append(
                type_invalid(
                    section, json_type(values), f'{section} in body must be of type object: "{json_type(values)}"'
                )
            )
            continue
        for key, value in values.items():
            path = f"{section}[{key}]"
            if len(key) > 253:
                causes.append(invalid(path, key, "must be no more than 253 characters"))
            if not _CONFIG_KEY_RE.match(key):
                causes.append(invalid(path, key, _CONFIG_KEY_MSG))
            if key in (".", ".."):
                causes.append(invalid(path, key, f"must not be '{key}'"))
            if not isinstance(value, str):
                causes.append(
                    type_invalid(path, json_type(value), f'{path} in body must be of type string: "{json_type(value)}"')
                )
                continue
            if section == "data":
                error = _base64_error(value)
                if error:
                    causes.append(invalid(path, value, error))
                    continue
                total += len(value) * 3 // 4
            else:
                total += len(value.encode())
    if total > SECRET_SIZE_LIMIT:
        causes.append(too_long("data", SECRET_SIZE_LIMIT))
    if obj.get("type") is not None and not isinstance(obj["type"], str):
        causes.append(type_invalid("type", json_type(obj["type"]), "type in body must be of type string"))
    if obj.get("immutable") is not None and not isinstance(obj["immutable"], bool):
        causes.append(
            type_invalid("immutable", json_type(obj["immutable"]), "immutable in body must be of type boolean")
        )
    return causes


def validate_secret_update(new: Mapping[str, Any], old: Mapping[str, Any]) -> list[Cause]:
    """Update rules of a normalized Secret: ``type`` is immutable, and so is everything once ``immutable``."""
    causes = []
    if (old.get("type") or "Opaque") != (new.get("type") or "Opaque"):
        causes.append(invalid("type", new.get("type"), "field is immutable"))
    if old.get("immutable"):
        if not new.get("immutable"):
            causes.append(forbidden("immutable", "field is immutable when `immutable` is set"))
        if (old.get("data") or {}) != (new.get("data") or {}):
            causes.append(forbidden("data", "field is immutable when `immutable` is set"))
    return causes


def normalize_secret(obj: dict[str, Any]) -> None:
    """Merge ``stringData`` into ``data`` (base64) and default ``type``, like the apiserver does on write."""
    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.get("data") or {}
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data
    if not obj.get("type"):
        obj["type"] = "Opaque"


# --------------------------------------------------------------------------------------------
# Structural defaulting


def apply_defaults(value: Any, schema: Mapping[str, Any]) -> Any:
    """Apply ``default``s and prune non-nullable ``null``s, in place; returns the (possibly new) value.

    This is apiextensions' structural defaulting: a missing property with a ``default`` gets a deep
    copy of it, a ``null`` for a non-nullable property is replaced by its default or dropped, and
    defaulted values are themselves defaulted further down.
    """
    if isinstance(value, dict):
        props = schema.get("properties")
        if isinstance(props, dict):
            for key, sub in props.items():
                if key in value and value[key] is None and not sub.get("nullable"):
                    del value[key]
                if key not in value and "default" in sub:
                    value[key] = copy.deepcopy(sub["default"])
                if key in value:
                    value[key] = apply_defaults(value[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in list(value):
                if value[key] is None and not extra.get("nullable"):
                    del value[key]
                else:
                    value[key] = apply_defaults(value[key], extra)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for index, item in enumerate(value):
                value[index] = apply_defaults(item, items)
    return value


# --------------------------------------------------------------------------------------------
# Schema conversion + jsonschema validator speaking the Kubernetes dialect

_KNOWN_KEY = "x-fakekube-known-fields"
_COPIED_KEYWORDS = (
    "type",
    "enum",
    "pattern",
    "maxLength",
    "minLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxProperties",
    "minProperties",
    "required",
    "format",
    "nullable",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
)


def convert_schema(node: Mapping[str, Any], *, root: bool = False) -> dict[str, Any]:
    """Turn a structural schema into the dialect our validator class understands.

    The only semantic addition is the unknown-field keyword: every object node that does not
    preserve unknown fields and has no ``additionalProperties`` lists the property names it knows.
    """
    out: dict[str, Any] = {key: node[key] for key in _COPIED_KEYWORDS if key in node}
    props = node.get("properties")
    if isinstance(props, dict):
        out["properties"] = {key: convert_schema(sub) for key, sub in props.items()}
    if isinstance(node.get("items"), dict):
        out["items"] = convert_schema(node["items"])
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        out["additionalProperties"] = convert_schema(extra)
    for keyword in ("allOf", "anyOf", "oneOf"):
        if keyword in node and not node.get("x-kubernetes-int-or-string"):
            out[keyword] = [convert_schema(sub) for sub in node[keyword]]
    if "not" in node:
        out["not"] = convert_schema(node["not"])
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    preserve = bool(node.get("x-kubernetes-preserve-unknown-fields"))
    embedded = bool(node.get("x-kubernetes-embedded-resource"))
    is_object = node.get("type") == "object" or isinstance(props, dict) or embedded
    if is_object and not preserve and extra in (None, False):
        known = list(props or {})
        if embedded or root:
            known += [key for key in ("apiVersion", "kind", "metadata") if key not in known]
        out[_KNOWN_KEY] = known
    if root:
        # The apiserver validates the top-level ObjectMeta itself (validate_object_meta).
        out.get("properties", {}).pop("metadata", None)
    return out


def _err(reason: str, message: Any, *, path: tuple[Any, ...] = ()) -> ValidationError:
    """A ValidationError carrying a Kubernetes reason and a message builder taking the field path."""
    error = ValidationError("kubernetes validation error", path=path)
    error.k8s_reason = reason  # type: ignore[attr-defined]
    error.k8s_message = message  # type: ignore[attr-defined]
    return error


def _is_null_ok(instance: Any, schema: Mapping[str, Any]) -> bool:
    return instance is None and bool(schema.get("nullable"))


def _kw_type(validator: Any, types: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if _is_null_ok(instance, schema):
        return
    types = [types] if isinstance(types, str) else list(types)
    if any(validator.is_type(instance, kind) for kind in types):
        return
    actual = json_type(instance)
    wanted = ",".join(types)
    yield _err(
        "FieldValueTypeInvalid",
        lambda p: f'Invalid value: "{actual}": {p} in body must be of type {wanted}: "{actual}"',
    )


def _kw_required(validator: Any, names: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if not isinstance(instance, dict):
        return
    for name in names:
        if name not in instance:
            yield _err("FieldValueRequired", lambda p: "Required value", path=(name,))


def _kw_known(validator: Any, known: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if not isinstance(instance, dict):
        return
    for name in instance:
        if name not in known:
            yield _err("FieldValueInvalid", lambda p: f'unknown field "{p}"', path=(name,))


def _kw_enum(validator: Any, values: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if _is_null_ok(instance, schema):
        return
    if not any(instance == v and type(instance) is type(v) for v in values):
        yield _err("FieldValueNotSupported", lambda p: not_supported(p, instance, values).message)


def _kw_pattern(validator: Any, pattern: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if isinstance(instance, str) and not re.search(pattern, instance):
        yield _err(
            "FieldValueInvalid",
            lambda p: f"Invalid value: {format_value(instance)}: {p} in body should match '{pattern}'",
        )


def _kw_max_length(validator: Any, limit: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if isinstance(instance, str) and len(instance) > limit:
        yield _err("FieldValueTooLong", lambda p: too_long(p, limit).message)


def _kw_min_length(validator: Any, limit: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if isinstance(instance, str) and len(instance) < limit:
        yield _err(
            "FieldValueInvalid",
            lambda p: f"Invalid value: {format_value(instance)}: {p} in body should be at least {limit} chars long",
        )


def _is_number(instance: Any) -> bool:
    return isinstance(instance, int | float) and not isinstance(instance, bool)


def _kw_minimum(validator: Any, limit: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if not _is_number(instance):
        return
    exclusive = schema.get("exclusiveMinimum") is True
    if instance < limit or (exclusive and instance == limit):
        relation = "greater than" if exclusive else "greater than or equal to"
        yield _err(
            "FieldValueInvalid",
            lambda p: f"Invalid value: {format_value(instance)}: {p} in body should be {relation} {limit}",
        )


def _kw_maximum(validator: Any, limit: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if not _is_number(instance):
        return
    exclusive = schema.get("exclusiveMaximum") is True
    if instance > limit or (exclusive and instance == limit):
        relation = "less than" if exclusive else "less than or equal to"
        yield _err(
            "FieldValueInvalid",
            lambda p: f"Invalid value: {format_value(instance)}: {p} in body should be {relation} {limit}",
        )


def _kw_multiple_of(validator: Any, factor: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if _is_number(instance) and factor and (instance / factor) != int(instance / factor):
        yield _err(
            "FieldValueInvalid",
            lambda p: f"Invalid value: {format_value(instance)}: {p} in body should be a multiple of {factor}",
        )


def _kw_max_items(validator: Any, limit: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if isinstance(instance, list) and len(instance) > limit:
        yield _err("FieldValueTooMany", lambda p: too_many(p, len(instance), limit).message)


def _kw_min_items(validator: Any, limit: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if isinstance(instance, list) and len(instance) < limit:
        yield _err(
            "FieldValueInvalid",
            lambda p: f"Invalid value: {len(instance)}: {p} in body should have at least {limit} items",
        )


def _kw_max_properties(
    validator: Any, limit: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if isinstance(instance, dict) and len(instance) > limit:
        yield _err("FieldValueTooMany", lambda p: too_many(p, len(instance), limit).message)


def _kw_min_properties(
    validator: Any, limit: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if isinstance(instance, dict) and len(instance) < limit:
        yield _err(
            "FieldValueInvalid",
            lambda p: f"Invalid value: {len(instance)}: {p} in body should have at least {limit} properties",
        )


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _kw_unique_items(
    validator: Any, unique: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if unique and isinstance(instance, list) and len({_canonical(v) for v in instance}) != len(instance):
        yield _err(
            "FieldValueInvalid",
            lambda p: f"Invalid value: {format_value(instance)}: {p} in body shouldn't contain duplicates",
        )


def _kw_list_type(
    validator: Any, list_type: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not isinstance(instance, list) or list_type not in ("set", "map"):
        return
    seen: set[str] = set()
    keys = schema.get("x-kubernetes-list-map-keys") or []
    for index, item in enumerate(instance):
        if list_type == "map":
            if not isinstance(item, dict):
                continue
            identity: Any = {key: item.get(key) for key in keys if key in item}
        else:
            identity = item
        marker = _canonical(identity)
        if marker in seen:
            yield _err("FieldValueDuplicate", lambda p, v=identity: duplicate(p, v).message, path=(index,))
        seen.add(marker)


_DATE_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _format_ok(fmt: str, value: str) -> bool:
    if fmt == "date-time":
        return bool(_DATE_TIME_RE.match(value))
    if fmt == "date":
        return bool(_DATE_RE.match(value))
    if fmt == "byte":
        return _base64_error(value) is None
    if fmt == "uri":
        parsed = urlparse(value)
        return bool(parsed.scheme) or value.startswith("/")
    return True  # int32, int64, double, ... are not string formats; unknown ones are accepted


def _kw_format(validator: Any, fmt: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if isinstance(instance, str) and not _format_ok(fmt, instance):
        yield _err(
            "FieldValueTypeInvalid",
            lambda p: (
                f"Invalid value: {format_value(instance)}: {p} in body must be of type {fmt}: {format_value(instance)}"
            ),
        )


def _combinator(keyword: str, detail: str) -> Any:
    base = jsonschema.Draft7Validator.VALIDATORS[keyword]

    def check(validator: Any, value: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
        for _error in base(validator, value, instance, schema):
            yield _err("FieldValueInvalid", lambda p: f"Invalid value: {format_value(instance)}: {p} in body {detail}")
            return

    return check


KubernetesValidator = jsonschema.validators.extend(
    jsonschema.Draft7Validator,
    validators={
        "type": _kw_type,
        "required": _kw_required,
        _KNOWN_KEY: _kw_known,
        "enum": _kw_enum,
        "pattern": _kw_pattern,
        "maxLength": _kw_max_length,
        "minLength": _kw_min_length,
        "minimum": _kw_minimum,
        "maximum": _kw_maximum,
        "exclusiveMinimum": lambda *args: iter(()),
        "exclusiveMaximum": lambda *args: iter(()),
        "multipleOf": _kw_multiple_of,
        "maxItems": _kw_max_items,
        "minItems": _kw_min_items,
        "maxProperties": _kw_max_properties,
        "minProperties": _kw_min_properties,
        "uniqueItems": _kw_unique_items,
        "x-kubernetes-list-type": _kw_list_type,
        "format": _kw_format,
        "anyOf": _combinator("anyOf", "must validate at least one schema (anyOf)"),
        "oneOf": _combinator("oneOf", "must validate one and only one schema (oneOf)"),
        "not": _combinator("not", "must not validate the schema (not)"),
        "const": lambda *args: iter(()),
        "dependencies": lambda *args: iter(()),
    },
)
"""Draft 7 traversal (properties/items/additionalProperties/allOf) with Kubernetes keyword semantics."""


def _error_path(error: ValidationError) -> str:
    path = ""
    for element in error.absolute_path:
        path = join_path(path, element)
    return path


def schema_causes(obj: Any, schema: Mapping[str, Any]) -> list[Cause]:
    """Validate ``obj`` against a converted schema; one Cause per violation, sorted by field."""
    causes = []
    for error in KubernetesValidator(schema).iter_errors(obj):
        reason = getattr(error, "k8s_reason", None)
        path = _error_path(error)
        if reason is None:  # a keyword we did not translate; still report it plainly
            causes.append(Cause(path, "FieldValueInvalid", error.message))
            continue
        segments = tuple(error.absolute_path)
        causes.append(Cause(path, reason, error.k8s_message(path), segments))  # type: ignore[attr-defined]
    return sorted(set(causes), key=lambda c: (c.field, c.message))


def _value_at(obj: Any, segments: tuple[str | int, ...]) -> tuple[bool, Any]:
    node = obj
    for segment in segments:
        in_map = isinstance(node, dict) and isinstance(segment, str) and segment in node
        in_list = isinstance(node, list) and isinstance(segment, int) and segment < len(node)
        if in_map or in_list:
            node = node[segment]
        else:
            return False, None
    return True, node


def ratchet(causes: list[Cause], new: Any, old: Any) -> list[Cause]:
    """Drop schema causes about values an update left unchanged (CRD validation ratcheting).

    kube-apiserver (CRDValidationRatcheting, on by default since 1.30) tolerates invalid values
    that were already stored, so a controller's partial status does not block later spec updates.
    A missing required field is judged by its parent object.
    """
    kept = []
    for cause in causes:
        if cause.segments is None:
            kept.append(cause)
            continue
        segments = cause.segments[:-1] if cause.reason == "FieldValueRequired" else cause.segments
        found_new, value_new = _value_at(new, segments)
        found_old, value_old = _value_at(old, segments)
        if found_new and found_old and _canonical(value_new) == _canonical(value_old):
            continue
        kept.append(cause)
    return kept


# --------------------------------------------------------------------------------------------
# The registry


_VERSION_RE = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Kubernetes' version ordering (GA > beta > alpha, higher numbers first), as a sort key."""
    match = _VERSION_RE.match(version)
    if not match:
        return (3, 0, 0, version)
    major, stage, minor = match.groups()
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (rank, -int(major), -int(minor or 0), version)


@dataclass
class CrdVersion:
    """One served version of one CRD, with everything the server needs to expose and validate it."""

    group: str
    version: str
    kind: str
    list_kind: str
    plural: str
    singular: str
    namespaced: bool
    served: bool
    storage: bool
    deprecated: bool
    status_subresource: bool
    scale_subresource: bool
    short_names: list[str]
    categories: list[str]
    schema: dict[str, Any]
    crd: dict[str, Any] = field(repr=False)
    _validator_schema: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"

    def converted_schema(self) -> dict[str, Any]:
        if self._validator_schema is None:
            self._validator_schema = convert_schema(self.schema, root=True)
        return self._validator_schema

    def default(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Apply the schema's defaults to ``obj`` in place (metadata excluded)."""
        meta = obj.pop("metadata", None)
        apply_defaults(obj, self.schema)
        if meta is not None:
            obj["metadata"] = meta
        return obj

    def validate(self, obj: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> list[Cause]:
        """ObjectMeta rules first, then the schema (everything but ``metadata``).

        With ``old`` (an update), schema errors on unchanged values are ratcheted away.
        """
        causes = validate_object_meta(obj.get("metadata"), namespaced=self.namespaced)
        body = {key: value for key, value in obj.items() if key != "metadata"}
        found = schema_causes(body, self.converted_schema())
        if old is not None:
            found = ratchet(found, body, {key: value for key, value in old.items() if key != "metadata"})
        return causes + found


_CACHE: dict[tuple[str, tuple[tuple[str, int, int], ...]], CrdRegistry] = {}
_CACHE_LOCK = threading.Lock()


class CrdRegistry:
    """Every served version of every CRD found in a directory of upstream CRD YAML files."""

    def __init__(self, crds: list[dict[str, Any]]) -> None:
        self.crds = crds
        self._by_resource: dict[tuple[str, str, str], CrdVersion] = {}
        self._by_kind: dict[tuple[str, str], CrdVersion] = {}
        for crd in crds:
            spec = crd["spec"]
            names = spec["names"]
            for entry in spec["versions"]:
                if not entry.get("served", False):
                    continue
                subresources = entry.get("subresources") or {}
                item = CrdVersion(
                    group=spec["group"],
                    version=entry["name"],
                    kind=names["kind"],
                    list_kind=names.get("listKind") or names["kind"] + "List",
                    plural=names["plural"],
                    singular=names.get("singular") or names["kind"].lower(),
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    served=True,
                    storage=bool(entry.get("storage")),
                    deprecated=bool(entry.get("deprecated")),
                    status_subresource="status" in subresources,
                    scale_subresource="scale" in subresources,
                    short_names=list(names.get("shortNames") or []),
                    categories=list(names.get("categories") or []),
                    schema=(entry.get("schema") or {}).get("openAPIV3Schema") or {"type": "object"},
                    crd=crd,
                )
                self._by_resource[(item.group, item.version, item.plural)] = item
                self._by_kind[(item.api_version, item.kind)] = item

    @classmethod
    def load(cls, directory: str | Path) -> CrdRegistry:
        """Read every ``*.yaml``/``*.yml`` file (multi-document allowed) holding CRDs."""
        crds = []
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~8x faster on 2.4 MB of CRDs
        for path in sorted(Path(directory).glob("*.y*ml")):
            with path.open(encoding="utf-8") as handle:
                for doc in yaml.load_all(handle, Loader=loader):
                    if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                        crds.append(doc)
        if not crds:
            raise FileNotFoundError(f"no CustomResourceDefinition found in {directory}")
        return cls(crds)

    @classmethod
    def load_cached(cls, directory: str | Path) -> CrdRegistry:
        """:meth:`load`, memoised per directory content, so every test's server does not re-parse 2.4 MB."""
        root = Path(directory).resolve()
        stamp = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.glob("*.y*ml")))
        key = (str(root), stamp)
        with _CACHE_LOCK:
            registry = _CACHE.get(key)
            if registry is None:
                registry = _CACHE[key] = cls.load(root)
        return registry

    def versions(self) -> list[CrdVersion]:
        return list(self._by_resource.values())

    def lookup(self, group: str, version: str, plural: str) -> CrdVersion | None:
        return self._by_resource.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> CrdVersion | None:
        return self._by_kind.get((api_version, kind))

    def groups(self) -> dict[str, list[str]]:
        """Group → served versions, most preferred first (Kubernetes version priority)."""
        result: dict[str, set[str]] = {}
        for item in self._by_resource.values():
            result.setdefault(item.group, set()).add(item.version)
        return {group: sorted(versions, key=version_priority) for group, versions in sorted(result.items())}

    def validate(self, obj: Mapping[str, Any]) -> list[Cause]:
        """All causes that would make the apiserver reject ``obj`` (a custom resource or a v1 Secret).

        The object is validated as sent: call :meth:`default` first to get what the apiserver
        validates after defaulting.
        """
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if api_version == "v1" and kind == "Secret":
            return validate_secret(obj)
        item = self.by_kind(str(api_version), str(kind))
        if item is None:
            raise KeyError(f"no served CRD for apiVersion={api_version!r} kind={kind!r}")
        return item.validate(obj)

    def default(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Apply the CRD's defaults to ``obj`` in place and return it."""
        item = self.by_kind(str(obj.get("apiVersion")), str(obj.get("kind")))
        if item is None:
            raise KeyError(f"no served CRD for apiVersion={obj.get('apiVersion')!r} kind={obj.get('kind')!r}")
        return item.default(obj)
