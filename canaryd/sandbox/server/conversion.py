"""One object, several API versions: how the sandbox shows a stored object through each view.

A real API server stores each object once and converts it for every version
it serves. Here most views differ only in `apiVersion` (the Gateway API's
v1beta1 and v1), but events are the notable case: `events.k8s.io/v1` Events and
core `v1` Events are the same objects with renamed fields, so an Event the
controller records through events.k8s.io shows in `kubectl get events` and
`kubectl describe`, as on a cluster. Events are stored in the core shape
(with the zero values and precisions a kube-apiserver gives them, see
``kinds._default_event``), so both views show the same timestamps.
"""

from __future__ import annotations

from typing import Any

from canaryd.sandbox.server.resources import ResourceType

# events.k8s.io/v1 field -> core/v1 field
_EVENT_FIELDS = {
    "regarding": "involvedObject",
    "note": "message",
    "reportingController": "reportingComponent",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
}
_CORE_EVENT_FIELDS = {core: new for new, core in _EVENT_FIELDS.items()}


def _is_events_v1(rtype: ResourceType) -> bool:
    return rtype.group == "events.k8s.io" and rtype.kind == "Event"


def needs_conversion(rtype: ResourceType) -> bool:
    return _is_events_v1(rtype)


def to_view(rtype: ResourceType, stored: dict[str, Any]) -> dict[str, Any]:
    """The stored object as `rtype` shows it (never mutates `stored`)."""
    if _is_events_v1(rtype):
        view = {_CORE_EVENT_FIELDS.get(key, key): value for key, value in stored.items()}
        view["apiVersion"] = rtype.api_version
        return view
    if stored.get("apiVersion") == rtype.api_version:
        return stored
    return {**stored, "apiVersion": rtype.api_version}


def to_storage(rtype: ResourceType, obj: dict[str, Any], storage_type: ResourceType) -> dict[str, Any]:
    """An object written through `rtype`, in the shape of `storage_type` (what is stored)."""
    if _is_events_v1(rtype):
        stored = {_EVENT_FIELDS.get(key, key): value for key, value in obj.items()}
        stored["apiVersion"] = storage_type.api_version
        stored["kind"] = storage_type.kind
        return stored
    return obj
