"""Table responses: what `kubectl get` asks for (`Accept: ...;as=Table;g=meta.k8s.io;v=v1`).

kubectl prints whatever columns the server sends, so the sandbox renders the
same columns a real cluster does for the built-in kinds (READY, UP-TO-DATE
and AVAILABLE for Deployments, ...) and evaluates a CRD's
additionalPrinterColumns, whose JSONPaths may carry filters such as
`.status.conditions[?(@.type=="Ready")].status`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from canaryd.api.durations import human_duration
from canaryd.api.timestamps import parse_rfc3339
from canaryd.sandbox.server.resources import PrinterColumn, ResourceType

_NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although some resources "
    "may allow a client to request the generation of an appropriate name automatically."
)
_AGE_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object was created."
)


def evaluate_json_path(obj: Any, path: str) -> list[Any]:
    """Evaluate a simple JSONPath (`.a.b`, `[0]`, `[*]`, `[?(@.x.y=="v")]`, optional `{}`) to its values."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if path.startswith("$"):
        path = path[1:]
    tokens = re.findall(r"\.\.?[^.\[]+|\[[^\]]*\]", path)
    values = [obj]
    for token in tokens:
        next_values: list[Any] = []
        if token.startswith("["):
            inner = token[1:-1].strip()
            for value in values:
                if not isinstance(value, list):
                    continue
                if inner == "*":
                    next_values.extend(value)
                elif inner.startswith("?(") and inner.endswith(")"):
                    predicate = _parse_filter(inner[2:-1])
                    next_values.extend(item for item in value if predicate(item))
                elif re.fullmatch(r"-?\d+", inner):
                    index = int(inner)
                    if -len(value) <= index < len(value):
                        next_values.append(value[index])
                elif ":" in inner:
                    start, _, end = inner.partition(":")
                    next_values.extend(value[int(start) if start else None : int(end) if end else None])
        else:
            key = token.lstrip(".")
            for value in values:
                if isinstance(value, dict) and key in value:
                    next_values.append(value[key])
                elif isinstance(value, list) and key == "*":
                    next_values.extend(value)
        values = next_values
    return values


def _parse_filter(expression: str) -> Callable[[Any], bool]:
    match = re.fullmatch(
        r"\s*@((?:\.[A-Za-z0-9_\-]+)+)\s*(==|!=)\s*(\"[^\"]*\"|'[^']*'|[^\s]+)\s*", expression
    )
    if match:
        path, operator, literal = match.groups()
        expected = literal[1:-1] if literal[:1] in "\"'" else _literal(literal)

        def compare(item: Any) -> bool:
            found = evaluate_json_path(item, path)
            equal = bool(found) and found[0] == expected
            return equal if operator == "==" else not equal

        return compare
    exists = re.fullmatch(r"\s*@((?:\.[A-Za-z0-9_\-]+)+)\s*", expression)
    if exists:
        return lambda item: bool(evaluate_json_path(item, exists.group(1)))
    return lambda item: False


def _literal(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def age(timestamp: str | None, now: datetime) -> str:
    if not timestamp:
        return "<unknown>"
    created = parse_rfc3339(timestamp)
    if created is None:
        return "<unknown>"
    return human_duration((now - created).total_seconds())


def _cell(values: list[Any], column_type: str) -> Any:
    if not values:
        return None
    if len(values) == 1:
        value = values[0]
    else:
        return ",".join(_scalar_text(v) for v in values)
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if column_type == "integer" and isinstance(value, bool):
        return None
    return value


def _scalar_text(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _definition(
    name: str, type_: str = "string", fmt: str = "", description: str = "", priority: int = 0
) -> dict[str, Any]:
    return {"name": name, "type": type_, "format": fmt, "description": description, "priority": priority}


def _builtin_columns(
    rtype: ResourceType, now: datetime
) -> list[tuple[dict[str, Any], Callable[[dict[str, Any]], Any]]]:
    def created(o: dict[str, Any]) -> str:
        return age(o["metadata"].get("creationTimestamp"), now)

    name_col = (
        _definition("Name", fmt="name", description=_NAME_DESCRIPTION),
        lambda o: o["metadata"]["name"],
    )
    age_col = (_definition("Age", description=_AGE_DESCRIPTION), created)
    key = (rtype.group, rtype.kind)
    if key == ("apps", "Deployment"):

        def containers(o: dict[str, Any]) -> list[dict[str, Any]]:
            return ((o.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []

        def ready(o: dict[str, Any]) -> str:
            status = o.get("status") or {}
            return f"{status.get('readyReplicas', 0)}/{(o.get('spec') or {}).get('replicas', 0)}"

        return [
            name_col,
            (_definition("Ready", description="Number of the pod with ready state"), ready),
            (
                _definition(
                    "Up-to-date",
                    "integer",
                    description="Total number of non-terminated pods targeted by "
                    "this deployment that have the desired template spec.",
                ),
                lambda o: (o.get("status") or {}).get("updatedReplicas", 0),
            ),
            (
                _definition(
                    "Available",
                    "integer",
                    description="Total number of available pods (ready for at "
                    "least minReadySeconds) targeted by this deployment.",
                ),
                lambda o: (o.get("status") or {}).get("availableReplicas", 0),
            ),
            age_col,
            (
                _definition("Containers", priority=1, description="Names of each container in the template."),
                lambda o: ",".join(c.get("name", "") for c in containers(o)),
            ),
            (
                _definition(
                    "Images", priority=1, description="Images referenced by each container in the template."
                ),
                lambda o: ",".join(c.get("image", "") for c in containers(o)),
            ),
            (
                _definition("Selector", priority=1, description="Label selector for pods."),
                lambda o: ",".join(
                    f"{k}={v}"
                    for k, v in (
                        ((o.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
                    ).items()
                ),
            ),
        ]
    if key == ("", "Service"):

        def ports(o: dict[str, Any]) -> str:
            return (
                ",".join(
                    f"{p.get('port')}/{p.get('protocol', 'TCP')}"
                    for p in (o.get("spec") or {}).get("ports") or []
                )
                or "<none>"
            )

        return [
            name_col,
            (
                _definition("Type", description="The type of the service."),
                lambda o: (o.get("spec") or {}).get("type", "ClusterIP"),
            ),
            (
                _definition("Cluster-IP", description="The IP address of the service."),
                lambda o: (o.get("spec") or {}).get("clusterIP", "<none>"),
            ),
            (
                _definition("External-IP", description="The external IP address of the service."),
                lambda o: "<none>",
            ),
            (_definition("Port(s)", description="The ports that this service exposes."), ports),
            age_col,
            (
                _definition("Selector", priority=1, description="Pod labels selected by this service."),
                lambda o: (
                    ",".join(f"{k}={v}" for k, v in ((o.get("spec") or {}).get("selector") or {}).items())
                    or "<none>"
                ),
            ),
        ]
    if key == ("", "Pod"):

        def ready(o: dict[str, Any]) -> str:
            statuses = (o.get("status") or {}).get("containerStatuses") or []
            containers = (o.get("spec") or {}).get("containers") or []
            return f"{sum(1 for c in statuses if c.get('ready'))}/{len(containers)}"

        return [
            name_col,
            (_definition("Ready", description="The aggregate readiness state of this pod"), ready),
            (
                _definition("Status", description="The aggregate status of the containers in this pod."),
                lambda o: (o.get("status") or {}).get("phase", "Pending"),
            ),
            (
                _definition("Restarts", description="The number of times the containers were restarted"),
                lambda o: "0",
            ),
            age_col,
            (
                _definition("IP", priority=1, description="IP address allocated to the pod"),
                lambda o: (o.get("status") or {}).get("podIP") or "<none>",
            ),
            (
                _definition("Node", priority=1, description="Name of the Node the pod is assigned to"),
                lambda o: (o.get("spec") or {}).get("nodeName") or "<none>",
            ),
        ]
    if key == ("apps", "ReplicaSet"):

        def count(field: str) -> Callable[[dict[str, Any]], int]:
            return lambda o: int((o.get("status") or {}).get(field, 0) or 0)

        return [
            name_col,
            (
                _definition("Desired", "integer", description="Number of desired pods."),
                lambda o: int((o.get("spec") or {}).get("replicas", 1)),
            ),
            (
                _definition("Current", "integer", description="Number of actually running pods."),
                count("replicas"),
            ),
            (_definition("Ready", "integer", description="Number of ready pods."), count("readyReplicas")),
            age_col,
        ]
    if key == ("discovery.k8s.io", "EndpointSlice"):

        def slice_ports(o: dict[str, Any]) -> str:
            return ",".join(str(p.get("port")) for p in o.get("ports") or []) or "<unset>"

        def slice_endpoints(o: dict[str, Any]) -> str:
            return (
                ",".join(a for e in o.get("endpoints") or [] for a in e.get("addresses") or []) or "<unset>"
            )

        return [
            name_col,
            (
                _definition("AddressType", description="The type of addresses in this slice."),
                lambda o: o.get("addressType", ""),
            ),
            (_definition("Ports", description="The ports of the endpoints."), slice_ports),
            (_definition("Endpoints", description="The addresses of the endpoints."), slice_endpoints),
            age_col,
        ]
    if key == ("", "Namespace"):
        return [
            name_col,
            (
                _definition("Status", description="The status of the namespace"),
                lambda o: (o.get("status") or {}).get("phase", ""),
            ),
            age_col,
        ]
    if key == ("", "ConfigMap"):
        return [
            name_col,
            (
                _definition("Data", "integer", description="Number of data entries."),
                lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {}),
            ),
            age_col,
        ]
    if key == ("", "Secret"):
        return [
            name_col,
            (_definition("Type", description="The type of the secret"), lambda o: o.get("type", "Opaque")),
            (
                _definition("Data", "integer", description="Number of data entries."),
                lambda o: len(o.get("data") or {}),
            ),
            age_col,
        ]
    if rtype.kind == "Event":

        def involved(o: dict[str, Any]) -> str:
            ref = o.get("involvedObject") or o.get("regarding") or {}
            return f"{str(ref.get('kind', '')).lower()}/{ref.get('name', '')}"

        def last_seen(o: dict[str, Any]) -> str:
            stamp = o.get("lastTimestamp") or o.get("eventTime") or o["metadata"].get("creationTimestamp")
            if isinstance(stamp, str) and "." in stamp:
                stamp = stamp.split(".")[0] + "Z"
            return age(stamp, now)

        return [
            (_definition("Last Seen", description="Time when last event was observed"), last_seen),
            (_definition("Type", description="Type of this event"), lambda o: o.get("type", "")),
            (
                _definition("Reason", description="Reason why this event was generated"),
                lambda o: o.get("reason", ""),
            ),
            (_definition("Object", description="The object this event is about"), involved),
            (
                _definition("Message", description="A human-readable description"),
                lambda o: o.get("message") or o.get("note", ""),
            ),
        ]
    if key == ("coordination.k8s.io", "Lease"):
        return [
            name_col,
            (
                _definition("Holder", description="The holder of this lease"),
                lambda o: (o.get("spec") or {}).get("holderIdentity", ""),
            ),
            age_col,
        ]
    if key == ("apiextensions.k8s.io", "CustomResourceDefinition"):
        return [
            name_col,
            (
                _definition("Created At", "date", description=_AGE_DESCRIPTION),
                lambda o: o["metadata"].get("creationTimestamp"),
            ),
        ]
    return [name_col, age_col]


def _printer_columns(
    columns: tuple[PrinterColumn, ...], now: datetime
) -> list[tuple[dict[str, Any], Callable[[dict[str, Any]], Any]]]:
    result: list[tuple[dict[str, Any], Callable[[dict[str, Any]], Any]]] = [
        (_definition("Name", fmt="name", description=_NAME_DESCRIPTION), lambda o: o["metadata"]["name"])
    ]
    for column in columns:

        def extract(o: dict[str, Any], column: PrinterColumn = column) -> Any:
            value = _cell(evaluate_json_path(o, column.json_path), column.type)
            if column.type == "date" and isinstance(value, str):
                return age(value, now)
            return value

        result.append(
            (
                _definition(column.name, column.type, column.format, column.description, column.priority),
                extract,
            )
        )
    return result


_Column = tuple[dict[str, Any], Callable[[dict[str, Any]], Any]]


def columns_for(rtype: ResourceType, now: datetime) -> list[_Column]:
    if rtype.printer_columns:
        return _printer_columns(rtype.printer_columns, now)
    if rtype.crd_name is not None:
        return _printer_columns((PrinterColumn("Age", "date", ".metadata.creationTimestamp"),), now)
    return _builtin_columns(rtype, now)


def partial_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


def render_table(
    rtype: ResourceType,
    objects: list[dict[str, Any]],
    *,
    now: datetime,
    resource_version: str | None,
    include_object: str = "Metadata",
    table_version: str = "v1",
    no_headers: bool = False,
    continue_token: str | None = None,
) -> dict[str, Any]:
    """A meta.k8s.io Table of `objects`; `include_object` is None, Metadata or Object."""
    columns = columns_for(rtype, now)
    rows = []
    for obj in objects:
        cells = []
        for _, extract in columns:
            try:
                cells.append(extract(obj))
            except (KeyError, TypeError, AttributeError, ValueError):
                cells.append(None)
        row: dict[str, Any] = {"cells": cells}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = partial_metadata(obj)
        rows.append(row)
    metadata: dict[str, Any] = {}
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    if continue_token:
        metadata["continue"] = continue_token
    return {
        "kind": "Table",
        "apiVersion": f"meta.k8s.io/{table_version}",
        "metadata": metadata,
        "columnDefinitions": [] if no_headers else [definition for definition, _ in columns],
        "rows": rows,
    }
