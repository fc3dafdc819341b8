"""Structural OpenAPI v3 schemas as kube-apiserver applies them to custom resources.

A CustomResourceDefinition's ``openAPIV3Schema`` is enforced by the API server
in three passes: unknown fields are pruned, defaults are filled in, and the
result is validated (OpenAPI value checks, list-type invariants, then the
``x-kubernetes-validations`` CEL rules). The sandbox API server serves any CRD
through this module, and the tests use it to prove that canaryd's own CRDs and
its pydantic models accept and reject the same objects, so it follows the API
server's behaviour rather than a generic JSON-schema library's:

- the root object (and any ``x-kubernetes-embedded-resource``) keeps
  ``apiVersion``, ``kind`` and ``metadata`` untouched;
- a null in a non-nullable field is dropped, then defaulted if it has a default;
- defaults apply inside objects that exist, recursively, also inside defaults;
- CEL rules see ``self`` typed by the schema (``number`` is always a double,
  ``format: date-time`` a timestamp, ``format: duration`` a duration, property
  names escaped like Kubernetes does) and are skipped, with one explanatory
  error, when the object already has type errors; rules using ``oldSelf``
  (transition rules) do not apply to a new object and are skipped;
- the Kubernetes CEL functions that cel-python lacks and our rules use are
  registered with the same semantics: ``duration()`` parses Go durations
  (cel-python truncates fractions), lists get ``isSorted()``, ``sum()``,
  ``min()``, ``max()``, ``indexOf()``, ``lastIndexOf()``, strings get
  ``lowerAscii()``, ``upperAscii()``, ``trim()``.

Compiled CEL programs are cached by rule text, so a busy API server parses
each rule once.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Final

import celpy
import re2  # google-re2, which cel-python depends on
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

from canaryd.api.durations import parse_duration_ns
from canaryd.api.timestamps import parse_rfc3339

Schema = dict[str, Any]

# Error types, spelled as Kubernetes prints them (field.ErrorType.String()).
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
#: The ``reason`` of an x-kubernetes-validations rule, mapped to the error type it produces.
_RULE_REASONS: Final = {
    "FieldValueInvalid": INVALID,
    "FieldValueForbidden": FORBIDDEN,
    "FieldValueRequired": REQUIRED,
    "FieldValueDuplicate": DUPLICATE,
}
_NO_VALUE: Final = object()
_RESOURCE_FIELDS: Final = ("apiVersion", "kind", "metadata")
UNCHECKED_RULES_MESSAGE: Final = (
    "some validation rules were not checked because the object was invalid; "
    "correct the existing errors to complete validation"
)


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
    value: Any = _NO_VALUE

    @property
    def cause_type(self) -> str:
        """The metav1.StatusCause type, e.g. ``FieldValueInvalid``."""
        return _CAUSE_TYPES.get(self.type, "FieldValueInvalid")

    def body(self) -> str:
        """The error without its path, as Kubernetes puts it in a StatusCause message."""
        parts = [self.type]
        if self.value is not _NO_VALUE and self.type not in (REQUIRED, FORBIDDEN, INTERNAL):
            parts.append(_render_value(self.value))
        if self.message:
            parts.append(self.message)
        return ": ".join(parts)

    def as_cause(self) -> dict[str, str]:
        """A metav1.StatusCause as JSON: ``{"reason": ..., "message": ..., "field": ...}``."""
        return {"reason": self.cause_type, "message": self.body(), "field": self.path}

    def __str__(self) -> str:
        return f"{self.path}: {self.body()}" if self.path else self.body()


def _render_value(value: Any) -> str:
    if value is None:
        return '"null"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    return repr(value)


# --------------------------------------------------------------------------- paths


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _index(path: str, index: int | str) -> str:
    return f"{path}[{index}]"


# --------------------------------------------------------------------------- CRD helpers


def crd_version_schema(crd: dict[str, Any], version: str) -> Schema:
    """The openAPIV3Schema of one version of a CustomResourceDefinition (KeyError if absent)."""
    for entry in crd.get("spec", {}).get("versions", []):
        if entry.get("name") == version:
            schema = entry.get("schema", {}).get("openAPIV3Schema")
            if schema is None:
                raise KeyError(f"version {version!r} of {crd.get('metadata', {}).get('name')} has no schema")
            return dict(schema)
    raise KeyError(f"{crd.get('metadata', {}).get('name')} has no version {version!r}")


# --------------------------------------------------------------------------- pruning


def unknown_fields(schema: Schema, obj: Any, *, resource: bool = True) -> list[str]:
    """Paths of the fields pruning would drop, e.g. ``["spec.analysis.stepWieghts"]``.

    This is what kube-apiserver reports for ``fieldValidation=Strict`` (an error:
    ``unknown field "spec.foo"``) or ``Warn`` (a warning header).
    """
    found: list[str] = []
    _prune(schema, copy.deepcopy(obj), "", found, resource=resource)
    return found


def prune(schema: Schema, obj: Any, *, resource: bool = True) -> Any:
    """A copy of ``obj`` without the fields the schema does not declare (structural pruning)."""
    return _prune(schema, copy.deepcopy(obj), "", [], resource=resource)


def _prune(schema: Schema, value: Any, path: str, dropped: list[str], *, resource: bool) -> Any:
    if isinstance(value, dict):
        properties: dict[str, Schema] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        keep_resource_fields = resource or bool(schema.get("x-kubernetes-embedded-resource"))
        for key in list(value):
            if keep_resource_fields and key in _RESOURCE_FIELDS and key not in properties:
                continue
            if keep_resource_fields and key == "metadata":
                continue  # ObjectMeta is validated by the API server itself, never pruned by the schema
            if key in properties:
                value[key] = _prune(properties[key], value[key], _child(path, key), dropped, resource=False)
            elif isinstance(additional, dict):
                value[key] = _prune(additional, value[key], _index(path, key), dropped, resource=False)
            elif additional is True or preserve:
                continue
            else:
                dropped.append(_child(path, key))
                del value[key]
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            return [
                _prune(items, item, _index(path, i), dropped, resource=False) for i, item in enumerate(value)
            ]
    return value


# --------------------------------------------------------------------------- defaulting


def apply_defaults(schema: Schema, obj: Any, *, resource: bool = True) -> Any:
    """A copy of ``obj`` pruned and defaulted the way the API server stores it.

    Unknown fields go (unless ``x-kubernetes-preserve-unknown-fields``), nulls in
    non-nullable fields go or take their default, and every ``default`` applies
    where its field is missing inside an object that exists, recursively (a
    defaulted object gets its own fields' defaults too).
    """
    pruned = prune(schema, obj, resource=resource)
    return _default(schema, pruned, resource=resource)


def _default(schema: Schema, value: Any, *, resource: bool) -> Any:
    if isinstance(value, dict):
        properties: dict[str, Schema] = schema.get("properties") or {}
        keep_resource_fields = resource or bool(schema.get("x-kubernetes-embedded-resource"))
        for key, prop in properties.items():
            if keep_resource_fields and key == "metadata":
                continue
            present = key in value
            if present and value[key] is None and not prop.get("nullable"):
                del value[key]
                present = False
            if not present and "default" in prop:
                value[key] = copy.deepcopy(prop["default"])
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            for key in list(value):
                if key in properties:
                    continue
                if value[key] is None and not additional.get("nullable"):
                    if "default" in additional:
                        value[key] = copy.deepcopy(additional["default"])
                    else:
                        del value[key]
                        continue
                value[key] = _default(additional, value[key], resource=False)
        for key, prop in properties.items():
            if key in value and not (keep_resource_fields and key == "metadata"):
                value[key] = _default(prop, value[key], resource=False)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            result = []
            for item in value:
                if item is None and not items.get("nullable") and "default" in items:
                    item = copy.deepcopy(items["default"])
                result.append(_default(items, item, resource=False))
            return result
    return value


# --------------------------------------------------------------------------- validation


def validate(schema: Schema, obj: Any, *, resource: bool = True) -> list[FieldError]:
    """Every reason ``obj`` breaks ``schema``; an empty list means the API server would accept it.

    ``resource`` says ``obj`` is a whole custom resource (its ``metadata`` is left to
    the API server's ObjectMeta checks); pass False to check any other value, such
    as a default, against a sub-schema. The same flag exists on :func:`prune`,
    :func:`unknown_fields` and :func:`apply_defaults`.

    Call it on the object as stored, that is after :func:`apply_defaults`. Runs the
    OpenAPI value checks and list-type invariants, then the CEL rules unless a
    type error makes them meaningless (then one root error says so, like
    kube-apiserver).
    """
    errors: list[FieldError] = []
    type_errors = _validate_node(schema, obj, "", errors, resource=resource)
    if type_errors:
        if _has_rules(schema):
            errors.append(FieldError("", INVALID, UNCHECKED_RULES_MESSAGE))
    else:
        _check_rules(schema, obj, "", errors, resource=resource)
    return errors


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


def _is_integer(value: Any) -> bool:
    """JSON integers; whole floats count too (go-openapi accepts 5.0 for an integer)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _type_matches(expected: str, value: Any) -> bool:
    if expected == "object":
        return isinstance(value, dict)
    if expected == "array":
        return isinstance(value, list)
    if expected == "string":
        return isinstance(value, str)
    if expected == "integer":
        return _is_integer(value)
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected == "boolean":
        return isinstance(value, bool)
    return True


def _validate_node(
    schema: Schema, value: Any, path: str, errors: list[FieldError], *, resource: bool
) -> bool:
    """Append the OpenAPI errors of one node and its children; return whether a type error occurred."""
    label = path or "<root>"
    if value is None:
        if schema.get("nullable") or not _declares_type(schema):
            return False
        errors.append(FieldError(path, INVALID, f"{label} in body must be of type {_expected(schema)}", None))
        return True
    if schema.get("x-kubernetes-int-or-string"):
        if not (_is_integer(value) or isinstance(value, str)):
            errors.append(
                FieldError(
                    path, INVALID, f"{label} in body must be of type integer or string", _json_type(value)
                )
            )
            return True
    elif "type" in schema and not _type_matches(schema["type"], value):
        errors.append(
            FieldError(path, INVALID, f"{label} in body must be of type {schema['type']}", _json_type(value))
        )
        return True

    type_error = False
    if "enum" in schema and not _in_enum(value, schema["enum"]):
        supported = ", ".join(_render_value(v) for v in schema["enum"])
        errors.append(FieldError(path, UNSUPPORTED, f"supported values: {supported}", value))

    if isinstance(value, str):
        _check_string(schema, value, path, errors)
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
    return "integer or string" if schema.get("x-kubernetes-int-or-string") else str(schema.get("type"))


def _in_enum(value: Any, allowed: Iterable[Any]) -> bool:
    for candidate in allowed:
        if isinstance(candidate, bool) != isinstance(value, bool):
            continue
        if candidate == value:
            return True
    return False


def parse_date_time(text: str) -> datetime | None:
    """Parse an RFC 3339 date-time as OpenAPI ``format: date-time`` requires; None if it is not one."""
    return parse_rfc3339(text)


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


def _check_string(schema: Schema, value: str, path: str, errors: list[FieldError]) -> None:
    label = path or "<root>"
    length = len(value)
    if "maxLength" in schema and length > schema["maxLength"]:
        errors.append(
            FieldError(path, TOO_LONG, f"may not be more than {schema['maxLength']} characters", value)
        )
    if "minLength" in schema and length < schema["minLength"]:
        errors.append(
            FieldError(
                path, INVALID, f"{label} in body should be at least {schema['minLength']} chars long", value
            )
        )
    if "pattern" in schema and not _compiled_pattern(schema["pattern"]).search(value):
        errors.append(FieldError(path, INVALID, f"{label} in body should match '{schema['pattern']}'", value))
    if "format" in schema:
        problem = _check_format(schema["format"], value)
        if problem:
            errors.append(FieldError(path, INVALID, f"{label} in body {problem}", value))


def _check_number(schema: Schema, value: float, path: str, errors: list[FieldError]) -> None:
    label = path or "<root>"
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
    label = path or "<root>"
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(FieldError(path, TOO_MANY, f"must have at most {schema['maxItems']} items", len(value)))
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(
            FieldError(
                path, INVALID, f"{label} in body should have at least {schema['minItems']} items", value
            )
        )
    type_error = False
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            type_error |= _validate_node(items, item, _index(path, i), errors, resource=False)
    if not type_error:
        _check_list_type(schema, value, path, errors)
    return type_error


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return (type(value) is bool, value)


def _check_list_type(schema: Schema, value: list[Any], path: str, errors: list[FieldError]) -> None:
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set":
        seen: set[Any] = set()
        for i, item in enumerate(value):
            key = _freeze(item)
            if key in seen:
                errors.append(FieldError(_index(path, i), DUPLICATE, "", item))
            seen.add(key)
    elif list_type == "map":
        keys: list[str] = schema.get("x-kubernetes-list-map-keys") or []
        seen_keys: set[Any] = set()
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            key = tuple(_freeze(item.get(k)) for k in keys)
            if key in seen_keys:
                shown = {k: item.get(k) for k in keys}
                rendered = ", ".join(f'"{k}":{_render_value(v)}' for k, v in shown.items())
                errors.append(FieldError(_index(path, i), DUPLICATE, "", "{" + rendered + "}"))
            seen_keys.add(key)


def _check_object(
    schema: Schema, value: dict[str, Any], path: str, errors: list[FieldError], *, resource: bool
) -> bool:
    label = path or "<root>"
    keep_resource_fields = resource or bool(schema.get("x-kubernetes-embedded-resource"))
    for name in schema.get("required") or []:
        if name not in value:
            errors.append(FieldError(_child(path, name), REQUIRED, ""))
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
                value,
            )
        )
    type_error = False
    properties: dict[str, Schema] = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        if keep_resource_fields and key == "metadata":
            if not isinstance(item, dict):
                errors.append(
                    FieldError(_child(path, key), INVALID, "must be of type object", _json_type(item))
                )
                type_error = True
            continue
        if key in properties:
            type_error |= _validate_node(properties[key], item, _child(path, key), errors, resource=False)
        elif isinstance(additional, dict):
            type_error |= _validate_node(additional, item, _index(path, key), errors, resource=False)
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


# --------------------------------------------------------------------------- CEL


_CEL_RESERVED: Final = frozenset(
    {
        "true",
        "false",
        "null",
        "in",
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    }
)


def escape_property_name(name: str) -> str:
    """The name under which CEL rules see a property, as Kubernetes escapes it.

    ``__`` becomes ``__underscores__``, ``.`` ``__dot__``, ``-`` ``__dash__``,
    ``/`` ``__slash__``, and a CEL reserved word ``w`` becomes ``__w__``.
    """
    if name in _CEL_RESERVED:
        return f"__{name}__"
    escaped = (
        name.replace("__", "__underscores__")
        .replace(".", "__dot__")
        .replace("-", "__dash__")
        .replace("/", "__slash__")
    )
    return escaped


def to_cel(schema: Schema, value: Any) -> Any:
    """``value`` as the CEL value a rule sees as ``self``, typed by ``schema``."""
    if value is None:
        return None
    if schema.get("x-kubernetes-int-or-string"):
        return celtypes.StringType(value) if isinstance(value, str) else celtypes.IntType(int(value))
    kind = schema.get("type")
    if kind == "integer" and _is_integer(value):
        return celtypes.IntType(int(value))
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return celtypes.DoubleType(float(value))
    if kind == "boolean" and isinstance(value, bool):
        return celtypes.BoolType(value)
    if kind == "string" and isinstance(value, str):
        return _string_to_cel(schema.get("format"), value)
    if isinstance(value, list):
        items = schema.get("items")
        item_schema: Schema = items if isinstance(items, dict) else {}
        return celtypes.ListType([to_cel(item_schema, item) for item in value])
    if isinstance(value, dict):
        properties: dict[str, Schema] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        result: dict[Any, Any] = {}
        for key, item in value.items():
            if key in properties:
                result[celtypes.StringType(escape_property_name(key))] = to_cel(properties[key], item)
            elif isinstance(additional, dict):
                result[celtypes.StringType(key)] = to_cel(additional, item)
            else:
                result[celtypes.StringType(key)] = json_to_cel(item)
        return celtypes.MapType(result)
    return json_to_cel(value)


def _string_to_cel(fmt: str | None, value: str) -> Any:
    if fmt == "date-time":
        parsed = parse_date_time(value)
        if parsed is not None:
            return celtypes.TimestampType(parsed)
    elif fmt == "duration":
        try:
            return _go_duration(parse_duration_ns(value))
        except ValueError:
            pass
    elif fmt == "byte":
        try:
            return celtypes.BytesType(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            pass
    return celtypes.StringType(value)


def _go_duration(nanoseconds: int) -> celtypes.DurationType:
    """A CEL duration; sub-microsecond parts are truncated toward zero (Python's timedelta resolution)."""
    micro = abs(nanoseconds) // 1000
    return celtypes.DurationType(timedelta(microseconds=-micro if nanoseconds < 0 else micro))


def _cel_duration(value: Any) -> Any:
    if isinstance(value, celtypes.DurationType):
        return value
    if isinstance(value, str):
        try:
            return _go_duration(parse_duration_ns(str(value)))
        except ValueError as error:
            return CELEvalError(str(error), ValueError, (str(error),))
    return CELEvalError(f"no such overload: duration({type(value).__name__})", TypeError, ())


def _list_function(name: str, body: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any) -> Any:
        try:
            return body(*args)
        except (TypeError, ValueError) as error:
            return CELEvalError(f"{name}: {error}", type(error), ())

    return wrapper


def _is_sorted(items: Any) -> Any:
    return celtypes.BoolType(all(a <= b for a, b in zip(items, list(items)[1:], strict=False)))


def _sum(items: Any) -> Any:
    if not items:
        return celtypes.IntType(0)
    total = items[0]
    for item in list(items)[1:]:
        total = total + item
    return total


def _minimum(items: Any) -> Any:
    if not items:
        raise ValueError("min called on an empty list")
    return min(items)


def _maximum(items: Any) -> Any:
    if not items:
        raise ValueError("max called on an empty list")
    return max(items)


def _index_of(target: Any, item: Any) -> Any:
    if isinstance(target, str):
        return celtypes.IntType(str(target).find(str(item)))
    for i, candidate in enumerate(target):
        if candidate == item:
            return celtypes.IntType(i)
    return celtypes.IntType(-1)


def _last_index_of(target: Any, item: Any) -> Any:
    if isinstance(target, str):
        return celtypes.IntType(str(target).rfind(str(item)))
    for i in range(len(target) - 1, -1, -1):
        if target[i] == item:
            return celtypes.IntType(i)
    return celtypes.IntType(-1)


#: Kubernetes CEL library functions cel-python lacks (or implements differently), same semantics.
KUBERNETES_CEL_FUNCTIONS: Final[dict[str, Callable[..., Any]]] = {
    "duration": _cel_duration,
    "isSorted": _list_function("isSorted", _is_sorted),
    "sum": _list_function("sum", _sum),
    "min": _list_function("min", _minimum),
    "max": _list_function("max", _maximum),
    "indexOf": _list_function("indexOf", _index_of),
    "lastIndexOf": _list_function("lastIndexOf", _last_index_of),
    "lowerAscii": lambda s: celtypes.StringType("".join(c.lower() if c.isascii() else c for c in str(s))),
    "upperAscii": lambda s: celtypes.StringType("".join(c.upper() if c.isascii() else c for c in str(s))),
    "trim": lambda s: celtypes.StringType(str(s).strip()),
}

_ENVIRONMENT: Final = celpy.Environment()


class CelCompileError(ValueError):
    """A rule that does not parse as CEL; the API server refuses such a CRD."""


@lru_cache(maxsize=4096)
def compile_rule(rule: str) -> celpy.Runner:
    """The runnable program of one CEL expression, compiled once and cached by its text."""
    try:
        ast = _ENVIRONMENT.compile(rule)
    except CELParseError as error:
        raise CelCompileError(f"compilation failed: {rule!r}: {error}") from error
    return _ENVIRONMENT.program(ast, functions=KUBERNETES_CEL_FUNCTIONS)


_OLD_SELF: Final = re.compile(r"\boldSelf\b")


def check_schema(schema: Schema) -> list[str]:
    """Reasons the API server would refuse a CRD with this openAPIV3Schema; empty when it is acceptable.

    Checks what a structural schema requires and what this module can evaluate:
    every node has a type (unless int-or-string or preserving unknown fields; the
    root is an object), no node has both properties and additionalProperties,
    every default is valid and survives pruning, list-map keys are declared and
    required or defaulted, and every CEL rule and messageExpression compiles.
    Each message starts with the schema location, e.g.
    ``openAPIV3Schema.properties[spec].properties[size].default: ...``.
    """
    problems: list[str] = []
    if schema.get("type") != "object":
        problems.append("openAPIV3Schema.type: Required value: must be object at the root")

    def walk(node: Any, where: str) -> None:
        if not isinstance(node, dict):
            return
        problems.extend(_structural_problems(node, where))
        for i, rule in enumerate(node.get("x-kubernetes-validations") or []):
            if not rule.get("rule"):
                problems.append(f"{where}.x-kubernetes-validations[{i}].rule: Required value")
            for key in ("rule", "messageExpression"):
                if rule.get(key):
                    try:
                        compile_rule(rule[key])
                    except CelCompileError as error:
                        problems.append(
                            f"{where}.x-kubernetes-validations[{i}].{key}: Invalid value: {error}"
                        )
        for name, sub in (node.get("properties") or {}).items():
            walk(sub, f"{where}.properties[{name}]")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{where}.items")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{where}.additionalProperties")

    walk(schema, "openAPIV3Schema")
    return problems


def _structural_problems(node: Schema, where: str) -> list[str]:
    problems: list[str] = []
    untyped_ok = node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    if "type" not in node and not untyped_ok:
        problems.append(f"{where}.type: Required value: must not be empty for specified object fields")
    if node.get("properties") and "additionalProperties" in node:
        problems.append(
            f"{where}.additionalProperties: Forbidden: "
            "additionalProperties and properties are mutual exclusive"
        )
    if "default" in node:
        default = node["default"]
        dropped = unknown_fields(node, default, resource=False)
        if dropped:
            problems.append(
                f"{where}.default: Invalid value: must not have unknown fields: {', '.join(dropped)}"
            )
        for error in validate(node, apply_defaults(node, default, resource=False), resource=False):
            problems.append(f"{where}.default: {error}")
    list_type = node.get("x-kubernetes-list-type")
    if list_type == "map":
        keys = node.get("x-kubernetes-list-map-keys") or []
        raw_items = node.get("items")
        items: Schema = raw_items if isinstance(raw_items, dict) else {}
        if not keys:
            problems.append(f"{where}.x-kubernetes-list-map-keys: Required value: when list-type is map")
        if items.get("type") != "object":
            problems.append(f"{where}.items.type: Invalid value: must be object when list-type is map")
        item_properties = items.get("properties") or {}
        for key in keys:
            prop = item_properties.get(key)
            if prop is None:
                problems.append(
                    f"{where}.x-kubernetes-list-map-keys: Invalid value: {key!r} is not a property"
                )
            elif key not in (items.get("required") or []) and "default" not in prop:
                problems.append(
                    f"{where}.items.properties[{key}]: Required value: "
                    "list-map keys must be required or defaulted"
                )
    elif list_type not in (None, "atomic", "set"):
        problems.append(f"{where}.x-kubernetes-list-type: Unsupported value: {list_type!r}")
    return problems


def _evaluate(rule: str, self_value: Any) -> Any:
    """Run a rule; return its result, or a CELEvalError (returned or raised by cel-python).

    Raises CelCompileError when the rule does not compile.
    """
    program = compile_rule(rule)
    try:
        return program.evaluate({"self": self_value})
    except CELEvalError as error:
        return error
    except (TypeError, ValueError, KeyError, ZeroDivisionError, AttributeError) as error:
        return CELEvalError(str(error), type(error), ())


def _eval_error_text(error: Any) -> str:
    args = getattr(error, "args", ())
    return str(args[0]) if args else str(error)


_FIELD_PATH_PART: Final = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\['([^']*)'\]|\[(\d+)\]")


def _join_field_path(path: str, field_path: str) -> str:
    """Append a rule's ``fieldPath`` (``.a.b``, ``['a-b']``, ``[0]``) to ``path``."""
    result = path
    position = 0
    while position < len(field_path):
        match = _FIELD_PATH_PART.match(field_path, position)
        if match is None:
            return _child(result, field_path.lstrip("."))
        name, quoted, index = match.groups()
        if name is not None:
            result = _child(result, name)
        elif quoted is not None:
            result = _child(result, quoted)
        else:
            result = _index(result, index)
        position = match.end()
    return result


def _check_rules(schema: Schema, value: Any, path: str, errors: list[FieldError], *, resource: bool) -> None:
    """Evaluate x-kubernetes-validations bottom-up: children first, then this node."""
    if value is None:
        return
    if isinstance(value, dict):
        properties: dict[str, Schema] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        keep_resource_fields = resource or bool(schema.get("x-kubernetes-embedded-resource"))
        for key, item in value.items():
            if keep_resource_fields and key == "metadata":
                continue
            if key in properties:
                _check_rules(properties[key], item, _child(path, key), errors, resource=False)
            elif isinstance(additional, dict):
                _check_rules(additional, item, _index(path, key), errors, resource=False)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _check_rules(schema["items"], item, _index(path, i), errors, resource=False)

    rules = schema.get("x-kubernetes-validations") or []
    if not rules:
        return
    for field_path, error_type, message in _node_rule_failures(schema, rules, value):
        target = _join_field_path(path, field_path) if field_path else path
        errors.append(FieldError(target, error_type, message, value))


#: Rule verdicts by (schema node, value): CEL is pure, and cel-python interprets a
#: rule in about a millisecond, so re-checking an unchanged spec on every status
#: write would dominate a busy API server. Entries hold their schema node, so its
#: id cannot be reused while cached; schemas are treated as immutable.
_RULE_MEMO: Final[OrderedDict[tuple[int, Any], tuple[Schema, list[tuple[str, str, str]]]]] = OrderedDict()
_RULE_MEMO_SIZE: Final = 8192


def _node_rule_failures(
    schema: Schema, rules: list[dict[str, Any]], value: Any
) -> list[tuple[str, str, str]]:
    """(fieldPath, error type, message) of each rule of one node that ``value`` breaks."""
    try:
        key: tuple[int, Any] | None = (id(schema), _freeze(value))
    except TypeError:  # an unhashable leaf: evaluate without the memo
        key = None
    if key is not None:
        cached = _RULE_MEMO.get(key)
        if cached is not None and cached[0] is schema:
            _RULE_MEMO.move_to_end(key)
            return cached[1]
    failures = _evaluate_rules(schema, rules, value)
    if key is not None:
        _RULE_MEMO[key] = (schema, failures)
        if len(_RULE_MEMO) > _RULE_MEMO_SIZE:
            _RULE_MEMO.popitem(last=False)
    return failures


def _evaluate_rules(schema: Schema, rules: list[dict[str, Any]], value: Any) -> list[tuple[str, str, str]]:
    failures: list[tuple[str, str, str]] = []
    self_value = to_cel(schema, value)
    for rule in rules:
        text = rule.get("rule", "")
        if _OLD_SELF.search(text):
            continue  # a transition rule: there is no old object on create
        field_path = str(rule.get("fieldPath") or "")
        try:
            outcome = _evaluate(text, self_value)
        except CelCompileError as error:
            failures.append(("", INTERNAL, str(error)))
            continue
        if isinstance(outcome, CELEvalError):
            failures.append((field_path, INVALID, f"{_eval_error_text(outcome)} evaluating rule: {text}"))
            continue
        if outcome is True or (isinstance(outcome, celtypes.BoolType) and bool(outcome)):
            continue
        if not isinstance(outcome, bool | celtypes.BoolType):
            failures.append((field_path, INVALID, f"rule did not evaluate to a bool: {text}"))
            continue
        error_type = _RULE_REASONS.get(rule.get("reason", "FieldValueInvalid"), INVALID)
        failures.append((field_path, error_type, _rule_message(rule, self_value)))
    return failures


def _rule_message(rule: dict[str, Any], self_value: Any) -> str:
    expression = rule.get("messageExpression")
    if expression:
        try:
            produced = _evaluate(expression, self_value)
        except CelCompileError:
            produced = None
        if isinstance(produced, str) and produced.strip() and "\n" not in produced:
            return str(produced)
    if rule.get("message"):
        return str(rule["message"])
    return f"failed rule: {rule.get('rule', '')}"
