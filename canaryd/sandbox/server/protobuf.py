"""Decoding the protobuf bodies kubectl sends for a few built-in kinds.

`kubectl create namespace|configmap|secret|deployment|service` build the
object with client-go's typed clients, which send it as Kubernetes protobuf
(`application/vnd.kubernetes.protobuf`) with no JSON fallback. The sandbox
speaks JSON, so it decodes those bodies here: the `k8s\\0` envelope
(runtime.Unknown), then the object by a field table of the Kubernetes API
types, limited to the kinds and fields those commands write. A field the
table does not know makes the request fail with 415 rather than be dropped
silently; responses stay JSON (kubectl's Accept header allows it).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from canaryd.api.timestamps import format_rfc3339
from canaryd.sandbox.server.errors import ApiError

PROTOBUF = "application/vnd.kubernetes.protobuf"
_MAGIC = b"k8s\x00"

# A field: (json name, kind, nested table). Kinds: string, int (a pointer in Go: kept when 0), int0
# (a plain Go int: 0 means unset), bool, bool0, message, time, map (string -> string), bytesmap
# (string -> bytes, as base64), strings (repeated string), messages (repeated message), intstr,
# quantities (string -> Quantity). Go's marshaller writes plain fields even when empty, so empty
# strings, zero int0/bool0 values and zero times are dropped, as JSON's omitempty would.
Table = dict[int, tuple[str, str, Any]]

_TIME: Table = {}
_LABEL_SELECTOR_REQUIREMENT: Table = {
    1: ("key", "string", None),
    2: ("operator", "string", None),
    3: ("values", "strings", None),
}
_LABEL_SELECTOR: Table = {
    1: ("matchLabels", "map", None),
    2: ("matchExpressions", "messages", _LABEL_SELECTOR_REQUIREMENT),
}
_OWNER_REFERENCE: Table = {
    1: ("kind", "string", None),
    3: ("name", "string", None),
    4: ("uid", "string", None),
    5: ("apiVersion", "string", None),
    6: ("controller", "bool", None),
    7: ("blockOwnerDeletion", "bool", None),
}
_OBJECT_META: Table = {
    1: ("name", "string", None),
    2: ("generateName", "string", None),
    3: ("namespace", "string", None),
    5: ("uid", "string", None),
    6: ("resourceVersion", "string", None),
    7: ("generation", "int0", None),
    8: ("creationTimestamp", "time", None),
    11: ("labels", "map", None),
    12: ("annotations", "map", None),
    13: ("ownerReferences", "messages", _OWNER_REFERENCE),
    14: ("finalizers", "strings", None),
}
_CONTAINER_PORT: Table = {
    1: ("name", "string", None),
    2: ("hostPort", "int0", None),
    3: ("containerPort", "int0", None),
    4: ("protocol", "string", None),
}
_ENV_VAR: Table = {1: ("name", "string", None), 2: ("value", "string", None)}
_RESOURCES: Table = {1: ("limits", "quantities", None), 2: ("requests", "quantities", None)}
_CONTAINER: Table = {
    1: ("name", "string", None),
    2: ("image", "string", None),
    3: ("command", "strings", None),
    4: ("args", "strings", None),
    5: ("workingDir", "string", None),
    6: ("ports", "messages", _CONTAINER_PORT),
    7: ("env", "messages", _ENV_VAR),
    8: ("resources", "message", _RESOURCES),
    14: ("imagePullPolicy", "string", None),
}
_POD_SPEC: Table = {
    2: ("containers", "messages", _CONTAINER),
    3: ("restartPolicy", "string", None),
    4: ("terminationGracePeriodSeconds", "int", None),
    6: ("dnsPolicy", "string", None),
    8: ("serviceAccountName", "string", None),
}
_POD_TEMPLATE: Table = {1: ("metadata", "message", _OBJECT_META), 2: ("spec", "message", _POD_SPEC)}
_ROLLING_UPDATE: Table = {1: ("maxUnavailable", "intstr", None), 2: ("maxSurge", "intstr", None)}
_STRATEGY: Table = {1: ("type", "string", None), 2: ("rollingUpdate", "message", _ROLLING_UPDATE)}
_DEPLOYMENT_SPEC: Table = {
    4: ("strategy", "message", _STRATEGY),
    1: ("replicas", "int", None),
    2: ("selector", "message", _LABEL_SELECTOR),
    3: ("template", "message", _POD_TEMPLATE),
    5: ("minReadySeconds", "int0", None),
    6: ("revisionHistoryLimit", "int", None),
    7: ("paused", "bool0", None),
    9: ("progressDeadlineSeconds", "int", None),
}
_SERVICE_PORT: Table = {
    1: ("name", "string", None),
    2: ("protocol", "string", None),
    3: ("port", "int0", None),
    4: ("targetPort", "intstr", None),
    5: ("nodePort", "int0", None),
}
_SERVICE_SPEC: Table = {
    1: ("ports", "messages", _SERVICE_PORT),
    2: ("selector", "map", None),
    3: ("clusterIP", "string", None),
    4: ("type", "string", None),
    10: ("externalName", "string", None),
}
_NAMESPACE_SPEC: Table = {1: ("finalizers", "strings", None)}
_EMPTY: Table = {}

_KINDS: dict[str, Table] = {
    "Namespace": {
        1: ("metadata", "message", _OBJECT_META),
        2: ("spec", "message", _NAMESPACE_SPEC),
        3: ("status", "message", _EMPTY),
    },
    "ConfigMap": {
        1: ("metadata", "message", _OBJECT_META),
        2: ("data", "map", None),
        3: ("binaryData", "bytesmap", None),
        4: ("immutable", "bool", None),
    },
    "Secret": {
        1: ("metadata", "message", _OBJECT_META),
        2: ("data", "bytesmap", None),
        3: ("type", "string", None),
        4: ("stringData", "map", None),
        5: ("immutable", "bool", None),
    },
    "Deployment": {
        1: ("metadata", "message", _OBJECT_META),
        2: ("spec", "message", _DEPLOYMENT_SPEC),
        3: ("status", "message", _EMPTY),
    },
    "Service": {
        1: ("metadata", "message", _OBJECT_META),
        2: ("spec", "message", _SERVICE_SPEC),
        3: ("status", "message", _EMPTY),
    },
}


class _Unsupported(Exception):
    pass


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(data):
            raise _Unsupported("truncated varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) in order; value is an int or bytes."""
    position, result = 0, []
    while position < len(data):
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, position = _varint(data, position)
        elif wire == 2:
            length, position = _varint(data, position)
            value, position = data[position : position + length], position + length
        elif wire == 1:
            value, position = int.from_bytes(data[position : position + 8], "little"), position + 8
        elif wire == 5:
            value, position = int.from_bytes(data[position : position + 4], "little"), position + 4
        else:
            raise _Unsupported(f"wire type {wire}")
        result.append((number, wire, value))
    return result


def _only_empty_fields(data: bytes) -> bool:
    """True for a message whose fields are all empty (what Go writes for an unset plain struct)."""
    try:
        fields = _fields(data)
    except (_Unsupported, IndexError):
        return False
    return all(
        (v == 0) if w == 0 else (w == 2 and (len(v) == 0 or _only_empty_fields(bytes(v))))
        for _n, w, v in fields
    )


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _decode(data: bytes, table: Table, path: str) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for number, _wire, value in _fields(data):
        empty = value == 0 if _wire == 0 else (isinstance(value, bytes | memoryview) and len(value) == 0)
        if number not in table:
            if empty or (_wire == 2 and _only_empty_fields(bytes(value))):
                continue
            raise _Unsupported(f"field {number} of {path or 'the object'}")
        name, kind, nested = table[number]
        where = f"{path}.{name}" if path else name
        if empty and kind in ("string", "int0", "bool0", "time", "intstr"):
            continue
        if kind == "string":
            obj[name] = bytes(value).decode()
        elif kind in ("int", "int0"):
            obj[name] = _signed(value)
        elif kind in ("bool", "bool0"):
            obj[name] = bool(value)
        elif kind == "message":
            obj[name] = _decode(value, nested, where)
        elif kind == "messages":
            obj.setdefault(name, []).append(_decode(value, nested, where))
        elif kind == "strings":
            obj.setdefault(name, []).append(bytes(value).decode())
        elif kind in ("map", "bytesmap", "quantities"):
            entry = {n: v for n, _w, v in _fields(value)}
            key = bytes(entry.get(1, b"")).decode()
            raw = entry.get(2, b"")
            if kind == "map":
                obj.setdefault(name, {})[key] = bytes(raw).decode()
            elif kind == "bytesmap":
                obj.setdefault(name, {})[key] = base64.b64encode(bytes(raw)).decode()
            else:
                quantity = {n: v for n, _w, v in _fields(raw)}
                obj.setdefault(name, {})[key] = bytes(quantity.get(1, b"")).decode()
        elif kind == "time":
            parts = {n: v for n, _w, v in _fields(value)}
            if not parts.get(1):
                continue
            obj[name] = format_rfc3339(datetime.fromtimestamp(_signed(parts.get(1, 0)), UTC))
        elif kind == "intstr":
            parts = {n: v for n, _w, v in _fields(value)}
            obj[name] = bytes(parts[3]).decode() if parts.get(1) == 1 else _signed(parts.get(2, 0))
        else:  # pragma: no cover - the tables only use the kinds above
            raise _Unsupported(kind)
    return obj


def decode(body: bytes) -> dict[str, Any]:
    """The JSON-shaped object in a Kubernetes protobuf body; ApiError 415 when it cannot be decoded."""
    try:
        if not body.startswith(_MAGIC):
            raise _Unsupported("missing the k8s protobuf prefix")
        envelope = {n: v for n, _w, v in _fields(body[len(_MAGIC) :])}
        type_meta = {n: bytes(v).decode() for n, _w, v in _fields(envelope.get(1, b""))}
        api_version, kind = type_meta.get(1, ""), type_meta.get(2, "")
        table = _KINDS.get(kind)
        if table is None:
            raise _Unsupported(f"kind {kind or '(none)'}")
        obj = _decode(envelope.get(2, b""), table, "")
    except (_Unsupported, UnicodeDecodeError, KeyError, ValueError) as error:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"the sandbox decodes {PROTOBUF} only for {', '.join(sorted(_KINDS))} and their common fields "
            f"({error}); send JSON instead (e.g. kubectl apply -f)",
        ) from None
    if obj.get("status") == {}:
        del obj["status"]
    return {"apiVersion": api_version, "kind": kind, **obj}
