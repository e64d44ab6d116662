"""Flavours — named requirements an operator offers (Nova-style) — and the one way to read a
requirement from what people send: JSON, compact text, or a flavour's name.

A flavour is a convenience, never the only way: every page and endpoint that takes a flavour
also takes the requirement written out (:func:`requirement_from_input`). Writes go through
:func:`flavour_save` and :func:`flavour_delete` (the API, the admin and later pages alike).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from hosts.models import Flavour
from hosts.requirements import Requirement, RequirementError

INPUTS = ("requirement", "requirement_text", "flavour")


class InputError(ValueError):
    """A requirement that cannot be read from the input: which input ``field`` is at fault, the
    message, and — for compact text — the position and the caret pointer."""

    def __init__(self, field: str, message: str, *, key: str | None = None, position: int | None = None, pointer=""):
        super().__init__(message)
        self.field, self.message, self.key, self.position, self.pointer = field, message, key, position, pointer

    @classmethod
    def of(cls, field: str, exc: RequirementError) -> InputError:
        return cls(field, exc.message, key=exc.field, position=exc.position, pointer=exc.pointer())

    def to_json(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "key": self.key,
            "message": self.message,
            "position": self.position,
            "pointer": self.pointer,
        }


def flavour_by_name(name: str) -> Flavour:
    """The flavour of that name; :class:`InputError` (naming the flavours there are) when none."""
    flavour = Flavour.objects.filter(name=name).first()
    if flavour is None:
        known = list(Flavour.objects.values_list("name", flat=True)[:20])
        hint = f"; the flavours are {', '.join(known)}" if known else "; no flavour is defined yet"
        raise InputError("flavour", f"no flavour named {name!r}{hint}")
    return flavour


def requirement_from_input(
    *, requirement: Any = None, requirement_text: str | None = None, flavour: str | None = None
) -> Requirement:
    """Exactly one of a JSON ``requirement``, a compact ``requirement_text`` or a ``flavour``
    name → a :class:`Requirement`; :class:`InputError` otherwise."""
    given = [
        name for name, value in zip(INPUTS, (requirement, requirement_text, flavour), strict=True) if value is not None
    ]
    if len(given) != 1:
        what = "none" if not given else " and ".join(given)
        raise InputError(given[-1] if given else "requirement", f"give exactly one of {', '.join(INPUTS)} (got {what})")
    if requirement is not None:
        try:
            return Requirement.from_json(requirement)
        except RequirementError as exc:
            raise InputError.of("requirement", exc) from exc
    if requirement_text is not None:
        try:
            return Requirement.parse(requirement_text)
        except RequirementError as exc:
            raise InputError.of("requirement_text", exc) from exc
    found = flavour_by_name(flavour)
    try:
        return found.get_requirement()
    except RequirementError as exc:  # stored before a rule changed: say so rather than fail
        raise InputError("flavour", f"flavour {found.name}: {exc.message}") from exc


def flavour_save(
    *, name: str, description: str = "", requirement: Requirement, instance: Flavour | None = None
) -> Flavour:
    """Create (``instance`` None) or change a flavour. A Django ``ValidationError`` keyed by
    field when the name is invalid or taken."""
    flavour = instance if instance is not None else Flavour()
    flavour.name, flavour.description, flavour.requirement = name, description, requirement.to_json()
    # The requirement is checked (and made canonical) by Flavour.clean(); {} (any host) is valid.
    flavour.full_clean(exclude=["requirement", "created_at", "updated_at"])
    try:
        with transaction.atomic():
            flavour.save()
    except IntegrityError as exc:  # a concurrent save of the same name
        raise ValidationError({"name": f"A flavour named {name!r} already exists."}) from exc
    return flavour


def flavour_delete(flavour: Flavour) -> None:
    flavour.delete()
