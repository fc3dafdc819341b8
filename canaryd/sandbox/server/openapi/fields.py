"""Field paths, field errors and JSON value kinds, spelled as kube-apiserver spells them.

What every other part of the schema machinery (pruning and defaulting,
validation, CEL) shares: the error types Kubernetes prints and the
metav1.StatusCause each maps to, how a field path is written
(``spec.routeRefs[0].name``, ``spec.variables[region]``), and how a JSON value
is rendered in a message, compared or typed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from canaryd.api.timestamps import parse_rfc3339

Schema = dict[str, Any]

REQUIRED: Final = "Required value"

INVALID: Final = "Invalid value"

UNSUPPORTED: Final = "Unsupported value"

TOO_LONG: Final = "Too long"

TOO_MANY: Final = "Too many"

DUPLICATE: Final = "Duplicate value"

FORBIDDEN: Final = "Forbidden"

INTERNAL: Final = "Internal error"

#: The metav1.StatusCause ``type`` (a.k.a. reason) for each error type.
_CAUSE_TYPES: Final = {
    REQUIRED: "FieldValueRequired",
    INVALID: "FieldValueInvalid",
    UNSUPPORTED: "FieldValueNotSupported",
    TOO_LONG: "FieldValueTooLong",
    TOO_MANY: "FieldValueTooMany",
    DUPLICATE: "FieldValueDuplicate",
    FORBIDDEN: "FieldValueForbidden",
    INTERNAL: "InternalError",
}

NO_VALUE: Final = object()


@dataclass(frozen=True)
class FieldError:
    """One reason an object is invalid, like Kubernetes' field.Error.

    ``path`` is the field path (``spec.analysis.stepWeights``, ``spec.routeRefs[0].name``,
    ``spec.variables[region]``; empty for the whole object), ``type`` the error type as
    Kubernetes prints it ("Invalid value", "Required value", "Unsupported value", "Too long",
    "Too many", "Duplicate value", "Forbidden", "Internal error"), ``message`` the detail and
    ``value`` the offending value (omitted from the text for Required/Forbidden/Internal).
    """

    path: str
    type: str
    message: str
    value: Any = NO_VALUE

    @property
    def cause_type(self) -> str:
        """The metav1.StatusCause type, e.g. ``FieldValueInvalid``."""
        return _CAUSE_TYPES.get(self.type, "FieldValueInvalid")

    def body(self) -> str:
        """The error without its path, as Kubernetes puts it in a StatusCause message."""
        parts = [self.type]
        shown = self.value is not NO_VALUE and not isinstance(self.value, dict | list)  # as Go omits them
        if shown and self.type not in (REQUIRED, FORBIDDEN, INTERNAL):
            parts.append(render_value(self.value))
        if self.message:
            parts.append(self.message)
        return ": ".join(parts)

    def as_cause(self) -> dict[str, str]:
        """A metav1.StatusCause as JSON: ``{"reason": ..., "message": ..., "field": ...}``."""
        return {"reason": self.cause_type, "message": self.body(), "field": self.path}

    def __str__(self) -> str:
        return f"{self.path}: {self.body()}" if self.path else self.body()


@dataclass(frozen=True)
class RawValue:
    """A value shown in a message exactly as given (a node's type, a list-map key as JSON)."""

    text: str


def render_value(value: Any) -> str:
    """A value as kube-apiserver prints it after "Invalid value: " (strings quoted and escaped)."""
    if isinstance(value, RawValue):
        return value.text
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    return repr(value)


def child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def index(path: str, index: int | str) -> str:
    return f"{path}[{index}]"


def is_integer(value: Any) -> bool:
    """JSON integers; whole floats count too (go-openapi accepts 5.0 for an integer)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return (type(value) is bool, value)


def parse_date_time(text: str) -> datetime | None:
    """Parse an RFC 3339 date-time as OpenAPI ``format: date-time`` requires; None if it is not one."""
    return parse_rfc3339(text)
