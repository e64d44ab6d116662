"""Label selectors, as the API server and ``labels.NewRequirement`` understand them.

Two inputs:

* the string form of ``list(label_selector=…)``: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``,
  ``k notin (a,b)``, ``k`` (exists), ``!k`` (does not exist), comma-joined (all must hold);
* a ``LabelSelector`` object (``matchLabels`` + ``matchExpressions``) as CAPM3 reads it from a
  Metal3MachineTemplate's ``hostSelector``: operators ``in``, ``notin``, ``=``, ``==``, ``!=``,
  ``exists``, ``!``, ``gt``, ``lt``, lower-cased first (metal3-facts.md §2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from teapot_portal.gateway.base import Invalid

_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]"
_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
LABEL_KEY_RE = re.compile(rf"^({_PREFIX}/)?{_NAME}$")
LABEL_VALUE_RE = re.compile(rf"^({_NAME})?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # in, notin, =, !=, exists, !, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.operator in ("in", "="):
            return present and value in self.values
        if self.operator in ("notin", "!="):
            return not present or value not in self.values
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        # gt / lt compare integers; a label that is not an integer never matches.
        try:
            number, bound = int(value or ""), int(self.values[0])
        except ValueError:
            return False
        return present and (number > bound if self.operator == "gt" else number < bound)


Selector = tuple[Requirement, ...]


def matches(selector: Selector, labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    return all(requirement.matches(labels) for requirement in selector)


def _requirement(key: str, operator: str, values: list[str] | tuple[str, ...]) -> Requirement:
    """Build and check one requirement the way ``labels.NewRequirement`` does."""
    operator = {"==": "=", "doesnotexist": "!"}.get(operator, operator)
    if not LABEL_KEY_RE.match(key or "") or len(key) > 317:
        raise ValueError(f"invalid label key {key!r}")
    values = tuple(values)
    if operator in ("in", "notin"):
        if not values:
            raise ValueError(f"{key}: for 'in' and 'notin' operators, values set can't be empty")
    elif operator in ("=", "!="):
        if len(values) != 1:
            raise ValueError(f"{key}: exact-match compatibility requires one single value")
    elif operator in ("exists", "!"):
        if values:
            raise ValueError(f"{key}: values set must be empty for exists and does not exist")
    elif operator in ("gt", "lt"):
        if len(values) != 1:
            raise ValueError(f"{key}: for 'Gt', 'Lt' operators, exactly one value is required")
        try:
            int(values[0])
        except ValueError as exc:
            raise ValueError(f"{key}: for 'Gt', 'Lt' operators, the value must be an integer") from exc
    else:
        raise ValueError(f"{key}: {operator!r} is not a valid label selector operator")
    for value in values:
        if not LABEL_VALUE_RE.match(value):
            raise ValueError(f"{key}: invalid label value {value!r}")
    return Requirement(key, operator, values)


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``( … )``."""
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


_SET_RE = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)$")
_EQ_RE = re.compile(r"^(?P<key>[^!=\s]+)\s*(?P<op>==|=|!=)\s*(?P<value>\S*)$")


def parse(text: str) -> Selector:
    """Parse the string form; raises :class:`Invalid` (400 in a real API server) on bad input."""
    requirements = []
    try:
        for part in _split_top_level(text or ""):
            if match := _SET_RE.match(part):
                values = [v.strip() for v in match["values"].split(",") if v.strip()]
                requirements.append(_requirement(match["key"], match["op"], values))
            elif match := _EQ_RE.match(part):
                requirements.append(_requirement(match["key"], match["op"], [match["value"]]))
            elif part.startswith("!"):
                requirements.append(_requirement(part[1:].strip(), "!", []))
            else:
                requirements.append(_requirement(part, "exists", []))
    except ValueError as exc:
        raise Invalid(f"unable to parse requirement: {exc}") from exc
    return tuple(requirements)


def from_label_selector(selector: dict | None) -> Selector:
    """A ``LabelSelector`` object → requirements; raises ``ValueError`` like CAPM3 would error."""
    selector = selector or {}
    requirements = [_requirement(k, "=", [str(v)]) for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        requirements.append(
            _requirement(
                expression.get("key", ""),
                str(expression.get("operator", "")).lower(),
                [str(v) for v in expression.get("values") or []],
            )
        )
    return tuple(requirements)


def metadata_causes(obj: dict) -> list[dict]:
    """What the API server's ObjectMeta validation says about names, labels and annotations."""
    causes: list[dict] = []
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    if not name:
        causes.append({"field": "metadata.name", "reason": "FieldValueRequired", "message": "name is required"})
    elif len(name) > 253 or not re.match(rf"^{_PREFIX}$", name):
        causes.append(
            {
                "field": "metadata.name",
                "reason": "FieldValueInvalid",
                "message": f"Invalid value: {name!r}: a lowercase RFC 1123 subdomain must consist of lower case "
                "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            }
        )
    for key, value in (meta.get("labels") or {}).items():
        if not LABEL_KEY_RE.match(key) or len(key.split("/")[-1]) > 63:
            causes.append(
                {
                    "field": f"metadata.labels.{key}",
                    "reason": "FieldValueInvalid",
                    "message": f"Invalid value: {key!r}: not a valid label key",
                }
            )
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE_RE.match(value):
            causes.append(
                {
                    "field": f"metadata.labels.{key}",
                    "reason": "FieldValueInvalid",
                    "message": f"Invalid value: {value!r}: a valid label must be an empty string or consist of "
                    "alphanumeric characters, '-', '_' or '.', at most 63, starting and ending with an alphanumeric",
                }
            )
    for key, value in (meta.get("annotations") or {}).items():
        if not LABEL_KEY_RE.match(key) or len(key.split("/")[-1]) > 63:
            causes.append(
                {
                    "field": f"metadata.annotations.{key}",
                    "reason": "FieldValueInvalid",
                    "message": f"Invalid value: {key!r}: not a valid annotation key",
                }
            )
        if not isinstance(value, str):
            causes.append(
                {
                    "field": f"metadata.annotations.{key}",
                    "reason": "FieldValueTypeInvalid",
                    "message": "annotation values must be strings",
                }
            )
    size = sum(len(k) + len(v) for k, v in (meta.get("annotations") or {}).items() if isinstance(v, str))
    if size > 256 * 1024:
        causes.append(
            {
                "field": "metadata.annotations",
                "reason": "FieldValueTooLong",
                "message": "annotations may not exceed 262144 bytes in total",
            }
        )
    return causes
