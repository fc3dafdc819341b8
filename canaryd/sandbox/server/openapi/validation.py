"""Validation of a value against an OpenAPI v3 schema, with the API server's messages.

The value checks (types, enums, formats, lengths, bounds, required fields,
combinators) and the list-type invariants run first; the CEL rules only
when none of them found a wrong type, a missing required field, an
unsupported value or too long or too many of something, as in
kube-apiserver, which then reports one root error instead. Messages and
field paths are worded as a v1.35 kube-apiserver words them (checked against
one by tests/api/test_crd_conformance.py).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import datetime
from functools import lru_cache
from typing import Any, Final

import re2  # google-re2, which cel-python depends on

from canaryd.api.durations import parse_duration_ns
from canaryd.sandbox.server.openapi.cel import check_rules
from canaryd.sandbox.server.openapi.fields import (
    DUPLICATE,
    INVALID,
    REQUIRED,
    TOO_LONG,
    TOO_MANY,
    UNSUPPORTED,
    FieldError,
    RawValue,
    Schema,
    child,
    freeze,
    index,
    is_integer,
    parse_date_time,
    render_value,
)

UNCHECKED_RULES_MESSAGE: Final = (
    "some validation rules were not checked because the object was invalid; "
    "correct the existing errors to complete validation"
)


def validate(
    schema: Schema, obj: Any, *, resource: bool = True, status_subresource: bool = False
) -> list[FieldError]:
    """Every reason ``obj`` breaks ``schema``; an empty list means the API server would accept it.

    ``resource`` says ``obj`` is a whole custom resource (its ``metadata`` is left to
    the API server's ObjectMeta checks); pass False to check any other value, such
    as a default, against a sub-schema. The same flag exists on :func:`prune`,
    :func:`unknown_fields` and :func:`apply_defaults`.

    Call it on the object as stored, that is after :func:`apply_defaults`. Runs the
    OpenAPI value checks and list-type invariants, then the CEL rules unless a
    type error makes them meaningless (then one root error says so, like
    kube-apiserver). With ``status_subresource`` (a kind whose status is a
    subresource), messages about ``status`` fields name them from the status
    down ("canaryWeight in body ..."), as kube-apiserver, which validates the
    status on its own, does; field paths stay whole.
    """
    token = _STATUS_LABELS.set(status_subresource)
    try:
        return _validate(schema, obj, resource=resource)
    finally:
        _STATUS_LABELS.reset(token)


_STATUS_LABELS: Final[ContextVar[bool]] = ContextVar("status_labels", default=False)


def _label(path: str) -> str:
    """How a message names the field at ``path``."""
    if _STATUS_LABELS.get() and path.startswith("status."):
        return path[len("status.") :]
    return path or "<root>"


def _validate(schema: Schema, obj: Any, *, resource: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    type_errors = _validate_node(schema, obj, "", errors, resource=resource)
    if type_errors or any(error.type in _BLOCKING for error in errors):
        if _has_rules(schema):
            errors.append(FieldError("", INVALID, UNCHECKED_RULES_MESSAGE, None))
    else:
        check_rules(schema, obj, "", errors, resource=resource)
    return errors


#: Errors that keep kube-apiserver from evaluating CEL rules at all (with type errors).
_BLOCKING: Final = frozenset({UNSUPPORTED, REQUIRED, TOO_LONG, TOO_MANY})


def _has_rules(schema: Any) -> bool:
    """Whether any node of ``schema`` carries x-kubernetes-validations."""
    if not isinstance(schema, dict):
        return False
    if schema.get("x-kubernetes-validations"):
        return True
    children = list((schema.get("properties") or {}).values())
    children += [schema.get("items"), schema.get("additionalProperties")]
    return any(_has_rules(child) for child in children)


def _json_type(value: Any) -> str:
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
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return type(value).__name__


def _type_matches(expected: str, value: Any) -> bool:
    if expected == "object":
        return isinstance(value, dict)
    if expected == "array":
        return isinstance(value, list)
    if expected == "string":
        return isinstance(value, str)
    if expected == "integer":
        return is_integer(value)
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected == "boolean":
        return isinstance(value, bool)
    return True


def _validate_node(
    schema: Schema, value: Any, path: str, errors: list[FieldError], *, resource: bool
) -> bool:
    """Append the OpenAPI errors of one node and its children; return whether a type error occurred."""
    label = _label(path)
    if value is None:
        if schema.get("nullable") or not _declares_type(schema):
            return False
        expected = _expected(schema)
        errors.append(FieldError(path, INVALID, f'{label} in body must be of type {expected}: "null"', None))
        return True
    if schema.get("x-kubernetes-int-or-string"):
        if not (is_integer(value) or isinstance(value, str)):
            errors.append(
                FieldError(
                    path,
                    INVALID,
                    f'{label} in body must be of type integer,string: "{_json_type(value)}"',
                    _json_type(value),
                )
            )
            return True
    elif schema.get("type") == "string" and "format" in schema and not isinstance(value, str):
        # go-openapi names the format, and the Go type the JSON decoder gave the value
        actual = _go_type(value)
        message = f'{label} in body must be of type {schema["format"]}: "{actual}"'
        errors.append(FieldError(path, INVALID, message, actual))
        return True
    elif "type" in schema and not _type_matches(schema["type"], value):
        actual = _json_type(value)
        errors.append(
            FieldError(path, INVALID, f'{label} in body must be of type {schema["type"]}: "{actual}"', actual)
        )
        return True

    type_error = False
    if "enum" in schema and not _in_enum(value, schema["enum"]):
        supported = ", ".join(render_value(v) for v in schema["enum"])
        errors.append(FieldError(path, UNSUPPORTED, f"supported values: {supported}", value))

    if isinstance(value, str):
        type_error |= _check_string(schema, value, path, errors)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _check_number(schema, value, path, errors)
    elif isinstance(value, list):
        type_error |= _check_array(schema, value, path, errors)
    elif isinstance(value, dict):
        type_error |= _check_object(schema, value, path, errors, resource=resource)

    for combinator in ("allOf", "anyOf", "oneOf", "not"):
        if combinator in schema:
            _check_combinator(combinator, schema[combinator], value, path, errors)
    return type_error


def _declares_type(schema: Schema) -> bool:
    return "type" in schema or bool(schema.get("x-kubernetes-int-or-string"))


def _expected(schema: Schema) -> str:
    return "integer,string" if schema.get("x-kubernetes-int-or-string") else str(schema.get("type"))


def _in_enum(value: Any, allowed: Iterable[Any]) -> bool:
    for candidate in allowed:
        if isinstance(candidate, bool) != isinstance(value, bool):
            continue
        if candidate == value:
            return True
    return False


def _check_format(fmt: str, value: str) -> str | None:
    """The message for a string breaking its format, or None. Unknown formats pass, as in Kubernetes."""
    if fmt == "date-time" and parse_date_time(value) is None:
        return "must be of type date-time"
    if fmt == "date":
        try:
            datetime.strptime(value, "%Y-%m-%d")
        except ValueError:
            return "must be of type date"
    if fmt == "byte":
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return "must be of type byte"
    if fmt == "duration":
        try:
            parse_duration_ns(value)
        except ValueError:
            return "must be of type duration"
    return None


@lru_cache(maxsize=1024)
def _compiled_pattern(pattern: str) -> Any:
    """``pattern`` compiled with RE2, the engine and syntax Kubernetes uses (``$`` is end of text only)."""
    return re2.compile(pattern)


def _check_string(schema: Schema, value: str, path: str, errors: list[FieldError]) -> bool:
    """Length, pattern and format checks; returns whether the format was broken (a type error)."""
    label = _label(path)
    length = len(value)
    # Length and pattern stop at the first failure (go-openapi's string validator); format is apart.
    if "maxLength" in schema and length > schema["maxLength"]:
        errors.append(FieldError(path, TOO_LONG, f"may not be more than {schema['maxLength']} bytes"))
    elif "minLength" in schema and length < schema["minLength"]:
        errors.append(
            FieldError(
                path, INVALID, f"{label} in body should be at least {schema['minLength']} chars long", value
            )
        )
    elif "pattern" in schema and not _compiled_pattern(schema["pattern"]).search(value):
        errors.append(FieldError(path, INVALID, f"{label} in body should match '{schema['pattern']}'", value))
    if "format" in schema:
        problem = _check_format(schema["format"], value)
        if problem:
            message = f"{label} in body {problem}: {render_value(value)}"
            errors.append(FieldError(path, INVALID, message, value))
            return True
    return False


def _check_number(schema: Schema, value: float, path: str, errors: list[FieldError]) -> None:
    label = _label(path)
    if "minimum" in schema:
        bound = schema["minimum"]
        if schema.get("exclusiveMinimum") is True and value <= bound:
            errors.append(FieldError(path, INVALID, f"{label} in body should be greater than {bound}", value))
        elif value < bound:
            errors.append(
                FieldError(
                    path, INVALID, f"{label} in body should be greater than or equal to {bound}", value
                )
            )
    if "maximum" in schema:
        bound = schema["maximum"]
        if schema.get("exclusiveMaximum") is True and value >= bound:
            errors.append(FieldError(path, INVALID, f"{label} in body should be less than {bound}", value))
        elif value > bound:
            errors.append(
                FieldError(path, INVALID, f"{label} in body should be less than or equal to {bound}", value)
            )
    if "multipleOf" in schema:
        factor = schema["multipleOf"]
        quotient = value / factor
        if abs(quotient - round(quotient)) > 1e-9:
            errors.append(
                FieldError(path, INVALID, f"{label} in body should be a multiple of {factor}", value)
            )


def _check_array(schema: Schema, value: list[Any], path: str, errors: list[FieldError]) -> bool:
    label = _label(path)
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(FieldError(path, TOO_MANY, f"must have at most {schema['maxItems']} items", len(value)))
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(
            FieldError(
                path, INVALID, f"{label} in body should have at least {schema['minItems']} items", len(value)
            )
        )
    type_error = False
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            type_error |= _validate_node(items, item, index(path, i), errors, resource=False)
    if not type_error:
        _check_list_type(schema, value, path, errors)
    return type_error


def _check_list_type(schema: Schema, value: list[Any], path: str, errors: list[FieldError]) -> None:
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set":
        seen: set[Any] = set()
        for i, item in enumerate(value):
            key = freeze(item)
            if key in seen:
                errors.append(FieldError(index(path, i), DUPLICATE, "", item))
            seen.add(key)
    elif list_type == "map":
        keys: list[str] = schema.get("x-kubernetes-list-map-keys") or []
        seen_keys: set[Any] = set()
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            key = tuple(freeze(item.get(k)) for k in keys)
            if key in seen_keys:
                shown = {k: item[k] for k in keys if k in item}
                rendered = json.dumps(shown, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
                errors.append(FieldError(index(path, i), DUPLICATE, "", RawValue(rendered)))
            seen_keys.add(key)


def _check_object(
    schema: Schema, value: dict[str, Any], path: str, errors: list[FieldError], *, resource: bool
) -> bool:
    label = _label(path)
    keep_resource_fields = resource or bool(schema.get("x-kubernetes-embedded-resource"))
    for name in schema.get("required") or []:
        if name not in value:
            errors.append(FieldError(child(path, name), REQUIRED, ""))
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append(
            FieldError(path, TOO_MANY, f"must have at most {schema['maxProperties']} items", len(value))
        )
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        errors.append(
            FieldError(
                path,
                INVALID,
                f"{label} in body should have at least {schema['minProperties']} properties",
                len(value),
            )
        )
    type_error = False
    properties: dict[str, Schema] = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        if keep_resource_fields and key == "metadata":
            if not isinstance(item, dict):
                errors.append(
                    FieldError(child(path, key), INVALID, "must be of type object", _json_type(item))
                )
                type_error = True
            continue
        if key in properties:
            type_error |= _validate_node(properties[key], item, child(path, key), errors, resource=False)
        elif isinstance(additional, dict):  # kube-openapi names map entries like fields: path.key
            type_error |= _validate_node(additional, item, child(path, key), errors, resource=False)
    return type_error


def _check_combinator(kind: str, operand: Any, value: Any, path: str, errors: list[FieldError]) -> None:
    def passes(sub: Schema) -> bool:
        found: list[FieldError] = []
        _validate_node(sub, value, path, found, resource=False)
        return not found

    if kind == "allOf":
        for sub in operand:
            _validate_node(sub, value, path, errors, resource=False)
    elif kind == "anyOf":
        if not any(passes(sub) for sub in operand):
            errors.append(FieldError(path, INVALID, "must validate at least one schema (anyOf)", value))
    elif kind == "oneOf":
        if sum(passes(sub) for sub in operand) != 1:
            errors.append(FieldError(path, INVALID, "must validate one and only one schema (oneOf)", value))
    elif kind == "not" and passes(operand):
        errors.append(FieldError(path, INVALID, "must not validate the schema (not)", value))
