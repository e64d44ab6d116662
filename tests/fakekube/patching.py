"""Patch formats and field-path helpers the fake apiserver needs, without new dependencies.

* RFC 7386 JSON merge patch (also used for strategic merge patch of core Secrets, which have no
  lists with merge keys);
* RFC 6902 JSON patch (add, remove, replace, move, copy, test);
* label and field selectors;
* leaf field paths of an object, used for server-side-apply ownership (``managedFields``).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from teapot_portal.gateway.crdschema import label_value_errors, qualified_name_errors

Path = tuple[str, ...]


class PatchError(Exception):
    """A patch that cannot be applied; the apiserver answers 422 (or 400 when malformed)."""

    def __init__(self, message: str, *, malformed: bool = False) -> None:
        super().__init__(message)
        self.malformed = malformed


def canonical(value: Any) -> str:
    """JSON text with sorted keys: equality that tells ``true`` from ``1``, as JSON does."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def json_equal(left: Any, right: Any) -> bool:
    return canonical(left) == canonical(right)


# --------------------------------------------------------------------------------------------
# RFC 7386


def merge_patch(target: Any, patch: Any) -> Any:
    """Return ``target`` merged with ``patch`` (``null`` deletes, objects merge, the rest replaces)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --------------------------------------------------------------------------------------------
# RFC 6902


def _pointer(text: Any) -> list[str]:
    if not isinstance(text, str):
        raise PatchError(f"invalid JSON pointer: {text!r}", malformed=True)
    if text == "":
        return []
    if not text.startswith("/"):
        raise PatchError(f'JSON pointer must be empty or start with a "/": {text!r}', malformed=True)
    return [token.replace("~1", "/").replace("~0", "~") for token in text[1:].split("/")]


def _index(token: str, size: int, *, allow_end: bool, path: str, op: str) -> int:
    if allow_end and token == "-":
        return size
    if not re.fullmatch(r"0|[1-9][0-9]*", token):
        raise PatchError(f"{op} operation does not apply: doc is missing path: {path}")
    index = int(token)
    if index > size or (not allow_end and index >= size):
        raise PatchError(f"{op} operation does not apply: doc is missing path: {path}: index out of range")
    return index


def _get(doc: Any, tokens: list[str], path: str, op: str) -> Any:
    node = doc
    for token in tokens:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(token, len(node), allow_end=False, path=path, op=op)]
        else:
            raise PatchError(f"{op} operation does not apply: doc is missing path: {path}: missing value")
    return node


def _add(doc: Any, tokens: list[str], value: Any, path: str, op: str = "add") -> Any:
    if not tokens:
        return value
    parent = _get(doc, tokens[:-1], path, op)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(last, len(parent), allow_end=True, path=path, op=op), value)
    else:
        raise PatchError(f"{op} operation does not apply: doc is missing path: {path}: missing value")
    return doc


def _remove(doc: Any, tokens: list[str], path: str, op: str = "remove") -> Any:
    if not tokens:
        raise PatchError(f"{op} operation does not apply: cannot remove the whole document")
    parent = _get(doc, tokens[:-1], path, op)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(last, len(parent), allow_end=False, path=path, op=op))
    raise PatchError(f"{op} operation does not apply: doc is missing key: {path}: missing value")


def json_patch(doc: Any, operations: Any) -> Any:
    """Apply an RFC 6902 patch to a deep copy of ``doc`` and return the result."""
    if not isinstance(operations, list):
        raise PatchError("json patch must be a JSON array of operations", malformed=True)
    result = copy.deepcopy(doc)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation:
            raise PatchError(f"invalid JSON patch operation: {operation!r}", malformed=True)
        op = operation["op"]
        path = operation.get("path")
        tokens = _pointer(path)
        if op in ("add", "replace", "test") and "value" not in operation:
            raise PatchError(f"{op} operation does not apply: missing value", malformed=True)
        if op == "add":
            result = _add(result, tokens, copy.deepcopy(operation["value"]), path)
        elif op == "remove":
            _remove(result, tokens, path)
        elif op == "replace":
            if tokens:
                _get(result, tokens, path, "replace")
                _remove(result, tokens, path, "replace")
            result = _add(result, tokens, copy.deepcopy(operation["value"]), path, "replace")
        elif op == "test":
            if not json_equal(_get(result, tokens, path, "test"), operation["value"]):
                raise PatchError(f"testing value {path} failed: test failed")
        elif op in ("move", "copy"):
            source = operation.get("from")
            from_tokens = _pointer(source)
            value = _get(result, from_tokens, source, op)
            if op == "move":
                if tokens[: len(from_tokens)] == from_tokens and len(tokens) > len(from_tokens):
                    raise PatchError(f"move operation does not apply: cannot move {source} into its own child {path}")
                _remove(result, from_tokens, source, op)
            result = _add(result, tokens, copy.deepcopy(value), path, op)
        else:
            raise PatchError(f"Unexpected kind: {op}", malformed=True)
    return result


# --------------------------------------------------------------------------------------------
# Selectors


class SelectorError(ValueError):
    """An unparsable label or field selector (HTTP 400)."""


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # =, !=, in, notin, exists, !, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.operator in ("=", "in"):
            return present and value in self.values
        if self.operator in ("!=", "notin"):
            return not present or value not in self.values
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if not present:
            return False
        try:
            number = int(str(value))
        except ValueError:
            return False
        limit = int(self.values[0])
        return number > limit if self.operator == "gt" else number < limit


def _split_terms(text: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [term.strip() for term in terms if term.strip()]


_KEY = r"[^\s!=<>(),]+"
_SET_RE = re.compile(rf"^({_KEY})\s+(in|notin)\s*\(([^()]*)\)$")
_EQ_RE = re.compile(rf"^({_KEY})\s*(==|=|!=|>|<)\s*([^\s!=<>(),]*)$")
_EXISTS_RE = re.compile(rf"^(!?)\s*({_KEY})$")


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Equality (``=``, ``==``, ``!=``), set (``in``, ``notin``), existence (``k``, ``!k``), ``>``/``<``."""
    requirements = []
    for term in _split_terms(text or ""):
        if match := _SET_RE.match(term):
            key, op, raw = match.groups()
            values = tuple(v.strip() for v in raw.split(",") if v.strip())
            requirement = Requirement(key, op, values)
        elif match := _EQ_RE.match(term):
            key, op, value = match.groups()
            if op in (">", "<"):
                if not re.fullmatch(r"-?[0-9]+", value):
                    raise SelectorError(
                        f"unable to parse requirement: for 'gt', 'lt' operators, the value must be an integer: {term}"
                    )
                requirement = Requirement(key, "gt" if op == ">" else "lt", (value,))
            else:
                requirement = Requirement(key, "!=" if op == "!=" else "=", (value,))
        elif match := _EXISTS_RE.match(term):
            bang, key = match.groups()
            requirement = Requirement(key, "!" if bang else "exists")
        else:
            raise SelectorError(
                f"unable to parse requirement: found '{term}', expected: key, '=', '!=', 'in' or 'notin'"
            )
        problems = qualified_name_errors(requirement.key)
        if requirement.operator not in ("gt", "lt"):
            for value in requirement.values:
                problems += label_value_errors(value)
        if problems:
            raise SelectorError(f"unable to parse requirement: {term}: {'; '.join(problems)}")
        requirements.append(requirement)
    return requirements


def labels_match(requirements: Iterable[Requirement], labels: Mapping[str, str] | None) -> bool:
    return all(requirement.matches(labels or {}) for requirement in requirements)


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    equal: bool
    value: str


def parse_field_selector(text: str | None, supported: Iterable[str]) -> list[FieldRequirement]:
    """``metadata.name=x,metadata.namespace!=y``; fields outside ``supported`` are a 400."""
    allowed = set(supported)
    result = []
    for term in _split_terms(text or ""):
        match = re.fullmatch(r"([^=!]+?)\s*(==|=|!=)\s*(.*)", term)
        if not match:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        name, op, value = match.groups()
        if name not in allowed:
            raise SelectorError(f"field label not supported: {name}")
        result.append(FieldRequirement(name, op != "!=", value))
    return result


def fields_match(requirements: Iterable[FieldRequirement], fields: Mapping[str, str]) -> bool:
    return all((fields.get(r.field, "") == r.value) == r.equal for r in requirements)


# --------------------------------------------------------------------------------------------
# Leaf paths, the unit of field ownership

SYSTEM_METADATA = frozenset(
    {
        "name",
        "namespace",
        "generateName",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    }
)


def leaf_paths(obj: Mapping[str, Any], *, include_status: bool = True, only_status: bool = False) -> dict[Path, Any]:
    """Map every leaf (scalar, list, or empty map) of ``obj`` to its value.

    Lists are leaves (we treat every list as atomic); ``apiVersion``, ``kind`` and system-managed
    metadata are not fields anyone owns.
    """
    result: dict[Path, Any] = {}

    def walk(value: Any, path: Path) -> None:
        if isinstance(value, dict) and value:
            for key, child in value.items():
                walk(child, (*path, key))
        else:
            result[path] = value

    for key, value in obj.items():
        if key in ("apiVersion", "kind"):
            continue
        if only_status and key != "status":
            continue
        if key == "status" and not include_status:
            continue
        if key == "metadata" and isinstance(value, dict):
            for meta_key, meta_value in value.items():
                if meta_key not in SYSTEM_METADATA:
                    walk(meta_value, ("metadata", meta_key))
            continue
        walk(value, (key,))
    return result


def get_path(obj: Any, path: Path) -> tuple[bool, Any]:
    node = obj
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def set_path(obj: dict[str, Any], path: Path, value: Any) -> None:
    """Set a leaf; an empty map leaf only makes sure a map exists (it must not wipe others' keys)."""
    node = obj
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    if isinstance(value, dict) and not value:
        if not isinstance(node.get(path[-1]), dict):
            node[path[-1]] = {}
        return
    node[path[-1]] = copy.deepcopy(value)


def delete_path(obj: dict[str, Any], path: Path, keep: set[Path]) -> None:
    """Remove a leaf, then parents left empty unless they are in ``keep``."""
    found, _ = get_path(obj, path)
    if not found:
        return
    parent_found, parent = get_path(obj, path[:-1])
    if parent_found and isinstance(parent, dict):
        del parent[path[-1]]
    for depth in range(len(path) - 1, 0, -1):
        prefix = path[:depth]
        found, node = get_path(obj, prefix)
        if not found or node or prefix in keep:
            break
        _, grand = get_path(obj, prefix[:-1])
        del grand[prefix[-1]]


def fields_v1(paths: Iterable[Path]) -> dict[str, Any]:
    """``managedFields[].fieldsV1`` for a set of leaf paths."""
    root: dict[str, Any] = {}
    for path in sorted(paths):
        node = root
        for key in path:
            node = node.setdefault(f"f:{key}", {})
    return root
