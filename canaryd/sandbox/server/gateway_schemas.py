"""The parts of the Gateway API CRD schemas that change what a cluster stores or accepts.

On a real cluster the Gateway API kinds are CRDs, so the API server fills in
their defaults and enforces their bounds. Code that works here must work
there, so the sandbox applies the ones canaryd and its users meet: a
backendRef's weight defaults to 1 (a JSON Patch `test` on a weight the user
never wrote finds 1, not nothing) and stays within 0..1,000,000, its kind to
Service and group to ""; a parentRef's kind to Gateway; a listener's
allowedRoutes to namespaces from Same; ports within 1..65535; at most 16
rules and 16 backendRefs per rule. Everything else is kept as written
(x-kubernetes-preserve-unknown-fields), since the full schemas are not
vendored. The values follow the standard channel of Gateway API v1.2.
"""

from __future__ import annotations

from typing import Any

_KEEP: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}
_NAME = {"type": "string", "minLength": 1, "maxLength": 253}
_PORT = {"type": "integer", "format": "int32", "minimum": 1, "maximum": 65535}
_GROUP = {"type": "string", "maxLength": 253}


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", **_KEEP, "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def _array(items: dict[str, Any], max_items: int) -> dict[str, Any]:
    return {"type": "array", "maxItems": max_items, "items": items}


BACKEND_REF = _object(
    {
        "name": _NAME,
        "group": {**_GROUP, "default": ""},
        "kind": {"type": "string", "default": "Service", "minLength": 1, "maxLength": 63},
        "namespace": {"type": "string", "minLength": 1, "maxLength": 63},
        "port": _PORT,
        "weight": {"type": "integer", "format": "int32", "default": 1, "minimum": 0, "maximum": 1_000_000},
    },
    required=("name",),
)

PARENT_REF = _object(
    {
        "name": _NAME,
        "group": {**_GROUP, "default": "gateway.networking.k8s.io"},
        "kind": {"type": "string", "default": "Gateway", "minLength": 1, "maxLength": 63},
        "namespace": {"type": "string", "minLength": 1, "maxLength": 63},
        "sectionName": {"type": "string", "minLength": 1, "maxLength": 253},
        "port": _PORT,
    },
    required=("name",),
)


def _route(max_rules: int = 16) -> dict[str, Any]:
    rule = _object({"backendRefs": _array(BACKEND_REF, 16)})
    spec = _object(
        {
            "parentRefs": _array(PARENT_REF, 32),
            "hostnames": _array({"type": "string", "minLength": 1, "maxLength": 253}, 16),
            "rules": _array(rule, max_rules),
        }
    )
    return {"type": "object", "properties": {"spec": spec, "status": {"type": "object", **_KEEP}}}


HTTP_ROUTE = _route()
GRPC_ROUTE = _route()

_LISTENER = _object(
    {
        "name": {"type": "string", "minLength": 1, "maxLength": 253},
        "port": _PORT,
        "protocol": {"type": "string", "minLength": 1, "maxLength": 255},
        "allowedRoutes": {
            "type": "object",
            **_KEEP,
            "default": {"namespaces": {"from": "Same"}},
            "properties": {
                "namespaces": {
                    "type": "object",
                    **_KEEP,
                    "default": {"from": "Same"},
                    "properties": {
                        "from": {"type": "string", "default": "Same", "enum": ["All", "Selector", "Same"]}
                    },
                },
            },
        },
    },
    required=("name", "port", "protocol"),
)

GATEWAY = {
    "type": "object",
    "properties": {
        "spec": _object(
            {"gatewayClassName": _NAME, "listeners": {**_array(_LISTENER, 64), "minItems": 1}},
            required=("gatewayClassName", "listeners"),
        ),
        "status": {"type": "object", **_KEEP},
    },
}

GATEWAY_CLASS = {
    "type": "object",
    "properties": {
        "spec": _object(
            {"controllerName": {"type": "string", "minLength": 1, "maxLength": 253}},
            required=("controllerName",),
        ),
        "status": {"type": "object", **_KEEP},
    },
}

_GRANT_PEER = _object(
    {"group": _GROUP, "kind": {"type": "string", "minLength": 1, "maxLength": 63}}, required=("group", "kind")
)

REFERENCE_GRANT = {
    "type": "object",
    "properties": {
        "spec": _object(
            {
                "from": {**_array(_GRANT_PEER, 16), "minItems": 1},
                "to": {**_array(_GRANT_PEER, 16), "minItems": 1},
            },
            required=("from", "to"),
        ),
    },
}

#: kind -> schema, for the built-in Gateway API resource types
SCHEMAS: dict[str, dict[str, Any]] = {
    "HTTPRoute": HTTP_ROUTE,
    "GRPCRoute": GRPC_ROUTE,
    "Gateway": GATEWAY,
    "GatewayClass": GATEWAY_CLASS,
    "ReferenceGrant": REFERENCE_GRANT,
}
