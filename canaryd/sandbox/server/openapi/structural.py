"""Structural schemas: pruning, defaulting, and whether a CRD's schema is one the API server accepts.

kube-apiserver drops the fields a custom resource's schema does not declare
(unless ``x-kubernetes-preserve-unknown-fields``), fills in ``default``s
inside objects that exist, and refuses a CRD whose schema is not structural
or whose defaults and CEL rules are not valid. The root object (and any
``x-kubernetes-embedded-resource``) keeps ``apiVersion``, ``kind`` and
``metadata`` untouched.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from canaryd.sandbox.server.openapi.cel import (
    COST_BUDGET_MESSAGE,
    CelCompileError,
    compile_rule,
    has_unbounded_cost,
)
from canaryd.sandbox.server.openapi.fields import Schema, child, index
from canaryd.sandbox.server.openapi.validation import validate

_RESOURCE_FIELDS: Final = ("apiVersion", "kind", "metadata")


def crd_version_schema(crd: dict[str, Any], version: str) -> Schema:
    """The openAPIV3Schema of one version of a CustomResourceDefinition (KeyError if absent)."""
    for entry in crd.get("spec", {}).get("versions", []):
        if entry.get("name") == version:
            schema = entry.get("schema", {}).get("openAPIV3Schema")
            if schema is None:
                raise KeyError(f"version {version!r} of {crd.get('metadata', {}).get('name')} has no schema")
            return dict(schema)
    raise KeyError(f"{crd.get('metadata', {}).get('name')} has no version {version!r}")


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
                value[key] = _prune(properties[key], value[key], child(path, key), dropped, resource=False)
            elif isinstance(additional, dict):
                value[key] = _prune(additional, value[key], index(path, key), dropped, resource=False)
            elif additional is True or preserve:
                continue
            else:
                dropped.append(child(path, key))
                del value[key]
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            return [
                _prune(items, item, index(path, i), dropped, resource=False) for i, item in enumerate(value)
            ]
    return value


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


def check_schema(schema: Schema) -> list[str]:
    """Reasons the API server would refuse a CRD with this openAPIV3Schema; empty when it is acceptable.

    Checks what a structural schema requires and what this module can evaluate:
    every node has a type (unless int-or-string or preserving unknown fields; the
    root is an object), no node has both properties and additionalProperties,
    every default is valid and survives pruning, list-map keys are declared and
    required or defaulted, every CEL rule and messageExpression compiles, and
    none has a cost kube-apiserver's estimator cannot bound (see
    ``cel.has_unbounded_cost``; refused as over 100x the budget). Each message
    starts with the schema location, e.g.
    ``openAPIV3Schema.properties[spec].properties[size].default: ...``.
    """
    problems: list[str] = []
    over_budget = False
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
                        continue
                    if has_unbounded_cost(rule[key]):
                        nonlocal over_budget
                        over_budget = True
                        located = f"{where}.x-kubernetes-validations[{i}].{key}"
                        what = "rule" if key == "rule" else "messageExpression"
                        problems.append(f"{located}: Forbidden: {COST_BUDGET_MESSAGE.format(what=what)}")
                        problems.append(
                            f"{located}: Forbidden: contributed to estimated rule cost total exceeding cost "
                            "limit for entire OpenAPIv3 schema"
                        )
        for name, sub in (node.get("properties") or {}).items():
            walk(sub, f"{where}.properties[{name}]")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{where}.items")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{where}.additionalProperties")

    walk(schema, "openAPIV3Schema")
    if over_budget:
        whole = "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema"
        total = COST_BUDGET_MESSAGE.format(what="rule").replace("estimated rule cost", whole)
        problems.append(f"openAPIV3Schema: Forbidden: {total}")
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
