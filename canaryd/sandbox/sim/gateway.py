"""The sandbox's Gateway API implementation: it accepts Gateways and writes route status.

canaryd refuses to send traffic through a route its parents have not accepted,
so the stand-in cluster must answer the questions a real implementation (Envoy
Gateway, Istio, Cilium) answers through status: is this GatewayClass mine, is
this Gateway programmed, did this HTTPRoute or GRPCRoute attach to its parent,
and do its backendRefs resolve. The refusals matter as much as the acceptance:
a missing Gateway or listener (`NoMatchingParent`), a listener whose
`allowedRoutes` does not admit the route's namespace or kind
(`NotAllowedByListeners`), no common hostname (`NoMatchingListenerHostname`),
a backendRef to a missing Service (`BackendNotFound`), to something that is not
a Service (`InvalidKind`), or across namespaces without a ReferenceGrant
(`RefNotPermitted`). Reasons and messages follow the Gateway API spec.

The decisions are pure functions over a `GatewayWorld` snapshot (tested without
a server); `SandboxGateway` wires them to a `ClusterView`, re-evaluating when
routes, gateways, gateway classes, services, namespaces or reference grants
change. It owns only the `status.parents` entries carrying its controllerName,
and leaves entries written by other controllers untouched.

One deliberate difference from most implementations: a parentRef naming a
Gateway that does not exist gets an entry from the sandbox (Accepted=False,
NoMatchingParent) unless another controller already reports on it, because the
sandbox is the only Gateway implementation in its cluster and a silent route is
harder to debug than a refused one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from canaryd.api.constants import GATEWAY_GROUP, GRPC_ROUTE, HTTP_ROUTE
from canaryd.api.timestamps import format_rfc3339
from canaryd.sandbox.labels import matches_label_selector
from canaryd.sandbox.sim.cluster_view import (
    GATEWAY_CLASSES,
    GATEWAYS,
    NAMESPACES,
    REFERENCE_GRANTS,
    ROUTE_KINDS,
    ROUTE_RESOURCES,
    SERVICES,
    Change,
    ClusterView,
    Obj,
    Resource,
    name_of,
)

log = logging.getLogger(__name__)

CONTROLLER_NAME = "canaryd.io/sandbox-gateway"
#: The address every sandbox Gateway reports (the data plane is simulated in-process).
GATEWAY_ADDRESS = "127.0.0.1"

# Condition types and reasons, as spelled by the Gateway API spec (v1).
ACCEPTED = "Accepted"
PROGRAMMED = "Programmed"
RESOLVED_REFS = "ResolvedRefs"
CONFLICTED = "Conflicted"
SUPPORTED_VERSION = "SupportedVersion"

REASON_ACCEPTED = "Accepted"
REASON_PROGRAMMED = "Programmed"
REASON_RESOLVED_REFS = "ResolvedRefs"
REASON_NO_CONFLICTS = "NoConflicts"
REASON_SUPPORTED_VERSION = "SupportedVersion"
REASON_LISTENERS_NOT_VALID = "ListenersNotValid"
REASON_INVALID = "Invalid"
REASON_UNSUPPORTED_PROTOCOL = "UnsupportedProtocol"
REASON_INVALID_ROUTE_KINDS = "InvalidRouteKinds"
REASON_NO_MATCHING_PARENT = "NoMatchingParent"
REASON_NOT_ALLOWED_BY_LISTENERS = "NotAllowedByListeners"
REASON_NO_MATCHING_LISTENER_HOSTNAME = "NoMatchingListenerHostname"
REASON_BACKEND_NOT_FOUND = "BackendNotFound"
REASON_REF_NOT_PERMITTED = "RefNotPermitted"
REASON_INVALID_KIND = "InvalidKind"

#: Listener protocols the sandbox serves, and the route kinds each one carries.
PROTOCOL_ROUTE_KINDS: Mapping[str, tuple[str, ...]] = {
    "HTTP": (HTTP_ROUTE, GRPC_ROUTE),
    "HTTPS": (HTTP_ROUTE, GRPC_ROUTE),
}
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

Key = tuple[str, str]


# --------------------------------------------------------------------------- helpers


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _spec(obj: Obj) -> Obj:
    return obj.get("spec") or {}


def condition(
    type_: str,
    status: bool,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: datetime,
    previous: Sequence[Obj] | None = None,
) -> dict[str, Any]:
    """A metav1.Condition; lastTransitionTime is kept from `previous` when the status did not change."""
    status_text = "True" if status else "False"
    transition = format_rfc3339(now.replace(microsecond=0))  # metav1.Time: whole seconds
    for old in previous or ():
        if old.get("type") == type_ and old.get("status") == status_text and old.get("lastTransitionTime"):
            transition = str(old["lastTransitionTime"])
    result: dict[str, Any] = {
        "type": type_,
        "status": status_text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        result["observedGeneration"] = generation
    return result


def is_condition_true(conditions: Iterable[Obj] | None, type_: str) -> bool:
    return any(c.get("type") == type_ and c.get("status") == "True" for c in conditions or ())


def hostname_matches(pattern: str, hostname: str) -> bool:
    """Whether two Gateway API hostnames overlap; either side may be a `*.` wildcard."""
    pattern, hostname = pattern.lower(), hostname.lower()
    if pattern == hostname:
        return True
    if pattern.startswith("*.") and hostname.startswith("*."):
        return pattern.endswith(hostname[1:]) or hostname.endswith(pattern[1:])
    if pattern.startswith("*."):
        return hostname.endswith(pattern[1:]) and len(hostname) > len(pattern) - 1
    if hostname.startswith("*."):
        return pattern.endswith(hostname[1:]) and len(pattern) > len(hostname) - 1
    return False


def hostnames_intersect(listener_hostname: str | None, route_hostnames: Sequence[str] | None) -> bool:
    """A listener without hostname takes every route; a route without hostnames fits every listener."""
    if not listener_hostname or not route_hostnames:
        return True
    return any(hostname_matches(listener_hostname, h) for h in route_hostnames)


# --------------------------------------------------------------------------- the world snapshot


@dataclass
class GatewayWorld:
    """What the Gateway implementation reads: a snapshot of the objects it depends on."""

    gateway_classes: dict[str, Obj] = field(default_factory=dict)
    gateways: dict[Key, Obj] = field(default_factory=dict)
    namespaces: dict[str, Obj] = field(default_factory=dict)
    services: dict[Key, Obj] = field(default_factory=dict)
    reference_grants: list[Obj] = field(default_factory=list)

    def is_ours(self, gateway: Obj) -> bool:
        gateway_class = self.gateway_classes.get(_spec(gateway).get("gatewayClassName", ""))
        return gateway_class is not None and _spec(gateway_class).get("controllerName") == CONTROLLER_NAME

    def namespace_labels(self, name: str) -> dict[str, str]:
        labels = dict(_meta(self.namespaces.get(name) or {}).get("labels") or {})
        labels.setdefault(NAMESPACE_NAME_LABEL, name)
        return labels


# --------------------------------------------------------------------------- GatewayClass


def gateway_class_status(gateway_class: Obj, now: datetime) -> dict[str, Any] | None:
    """The status the sandbox writes on a GatewayClass it implements (None when not ours)."""
    if _spec(gateway_class).get("controllerName") != CONTROLLER_NAME:
        return None
    previous = (gateway_class.get("status") or {}).get("conditions") or []
    generation = _meta(gateway_class).get("generation")
    return {
        "conditions": [
            condition(
                ACCEPTED,
                True,
                REASON_ACCEPTED,
                "Handled by the canaryd sandbox gateway",
                generation=generation,
                now=now,
                previous=previous,
            ),
            condition(
                SUPPORTED_VERSION,
                True,
                REASON_SUPPORTED_VERSION,
                "Gateway API v1 is supported",
                generation=generation,
                now=now,
                previous=previous,
            ),
        ]
    }


# --------------------------------------------------------------------------- listeners


def listener_supported_kinds(listener: Obj) -> tuple[list[dict[str, str]], list[str]]:
    """(supportedKinds, kinds asked for in allowedRoutes.kinds that the listener cannot carry)."""
    protocol_kinds = PROTOCOL_ROUTE_KINDS.get(str(listener.get("protocol", "")), ())
    wanted = (listener.get("allowedRoutes") or {}).get("kinds")
    if not wanted:
        return [{"group": GATEWAY_GROUP, "kind": k} for k in protocol_kinds], []
    supported: list[dict[str, str]] = []
    invalid: list[str] = []
    for entry in wanted:
        group = entry.get("group", GATEWAY_GROUP)
        kind = entry.get("kind", "")
        if group == GATEWAY_GROUP and kind in protocol_kinds:
            supported.append({"group": GATEWAY_GROUP, "kind": kind})
        else:
            invalid.append(f"{group}/{kind}" if group else kind)
    return supported, invalid


def listener_admits_namespace(
    listener: Obj, gateway_namespace: str, route_namespace: str, world: GatewayWorld
) -> bool:
    namespaces = (listener.get("allowedRoutes") or {}).get("namespaces") or {}
    source = namespaces.get("from", "Same")
    if source == "All":
        return True
    if source == "Same":
        return route_namespace == gateway_namespace
    if source == "Selector":
        selector = namespaces.get("selector")
        return matches_label_selector(selector, world.namespace_labels(route_namespace))
    return False


def listener_admits_kind(listener: Obj, route_kind: str) -> bool:
    supported, _ = listener_supported_kinds(listener)
    return any(k["kind"] == route_kind for k in supported)


# --------------------------------------------------------------------------- backendRefs


@dataclass(frozen=True)
class BackendProblem:
    reason: str
    message: str


def reference_granted(
    grants: Iterable[Obj],
    *,
    from_kind: str,
    from_namespace: str,
    to_namespace: str,
    to_group: str,
    to_kind: str,
    to_name: str,
) -> bool:
    """Whether a ReferenceGrant in `to_namespace` lets `from_kind` objects of `from_namespace` refer there."""
    for grant in grants:
        if _meta(grant).get("namespace") != to_namespace:
            continue
        spec = _spec(grant)
        from_ok = any(
            f.get("group", "") == GATEWAY_GROUP
            and f.get("kind") == from_kind
            and f.get("namespace") == from_namespace
            for f in spec.get("from") or []
        )
        to_ok = any(
            t.get("group", "") == to_group
            and t.get("kind") == to_kind
            and (not t.get("name") or t["name"] == to_name)
            for t in spec.get("to") or []
        )
        if from_ok and to_ok:
            return True
    return False


def backend_ref_problem(
    route: Obj, route_kind: str, backend_ref: Obj, world: GatewayWorld
) -> BackendProblem | None:
    """Why a backendRef does not resolve (None when it points at an existing, permitted Service)."""
    route_namespace = _meta(route).get("namespace", "")
    group = backend_ref.get("group", "")
    kind = backend_ref.get("kind", "Service")
    name = backend_ref.get("name", "")
    namespace = backend_ref.get("namespace") or route_namespace
    if group != "" or kind != "Service":
        return BackendProblem(
            REASON_INVALID_KIND,
            f"backendRef {name}: kind {group}/{kind} is not supported; only core Services are",
        )
    if namespace != route_namespace and not reference_granted(
        world.reference_grants,
        from_kind=route_kind,
        from_namespace=route_namespace,
        to_namespace=namespace,
        to_group="",
        to_kind="Service",
        to_name=name,
    ):
        return BackendProblem(
            REASON_REF_NOT_PERMITTED,
            f"backendRef to Service {namespace}/{name} is not permitted by any ReferenceGrant "
            f"in namespace {namespace}",
        )
    if (namespace, name) not in world.services:
        return BackendProblem(REASON_BACKEND_NOT_FOUND, f"Service {namespace}/{name} not found")
    return None


def route_backend_refs(route: Obj) -> list[Obj]:
    return [ref for rule in _spec(route).get("rules") or [] for ref in rule.get("backendRefs") or []]


def resolved_refs_problem(route: Obj, route_kind: str, world: GatewayWorld) -> BackendProblem | None:
    for backend_ref in route_backend_refs(route):
        problem = backend_ref_problem(route, route_kind, backend_ref, world)
        if problem is not None:
            return problem
    return None


# --------------------------------------------------------------------------- route attachment


def normalized_parent_ref(parent_ref: Obj, route_namespace: str) -> tuple[str, str, str, str, str, int]:
    """A parentRef with its defaults filled in, usable as a key."""
    return (
        parent_ref.get("group", GATEWAY_GROUP) if parent_ref.get("group") is not None else GATEWAY_GROUP,
        parent_ref.get("kind") or "Gateway",
        parent_ref.get("namespace") or route_namespace,
        parent_ref.get("name", ""),
        parent_ref.get("sectionName") or "",
        int(parent_ref.get("port") or 0),
    )


@dataclass(frozen=True)
class Attachment:
    """Whether a route attaches to one parentRef, and through which listeners."""

    accepted: bool
    reason: str
    message: str
    listener_names: tuple[str, ...] = ()


def _listener_valid(listener: Obj) -> bool:
    return str(listener.get("protocol", "")) in PROTOCOL_ROUTE_KINDS


def attach(route: Obj, route_kind: str, parent_ref: Obj, gateway: Obj, world: GatewayWorld) -> Attachment:
    """Attach a route to a Gateway of ours through the listeners the parentRef selects."""
    route_namespace = _meta(route).get("namespace", "")
    gateway_namespace = _meta(gateway).get("namespace", "")
    gateway_name = _meta(gateway).get("name", "")
    section = parent_ref.get("sectionName") or ""
    port = int(parent_ref.get("port") or 0)
    listeners = [
        listener
        for listener in _spec(gateway).get("listeners") or []
        if (not section or listener.get("name") == section)
        and (not port or int(listener.get("port") or 0) == port)
    ]
    listeners = [listener for listener in listeners if _listener_valid(listener)]
    if not listeners:
        wanted = " and ".join(p for p in (section and f"sectionName {section}", port and f"port {port}") if p)
        return Attachment(
            False,
            REASON_NO_MATCHING_PARENT,
            f"Gateway {gateway_namespace}/{gateway_name} has no usable listener"
            + (f" matching {wanted}" if wanted else ""),
        )
    admitting = [
        listener
        for listener in listeners
        if listener_admits_kind(listener, route_kind)
        and listener_admits_namespace(listener, gateway_namespace, route_namespace, world)
    ]
    if not admitting:
        return Attachment(
            False,
            REASON_NOT_ALLOWED_BY_LISTENERS,
            f"no listener of Gateway {gateway_namespace}/{gateway_name} allows {route_kind} "
            f"routes from namespace {route_namespace}",
        )
    route_hostnames = _spec(route).get("hostnames") or []
    matching = [
        listener for listener in admitting if hostnames_intersect(listener.get("hostname"), route_hostnames)
    ]
    if not matching:
        return Attachment(
            False,
            REASON_NO_MATCHING_LISTENER_HOSTNAME,
            f"no listener of Gateway {gateway_namespace}/{gateway_name} matches the route's hostnames",
        )
    return Attachment(
        True,
        REASON_ACCEPTED,
        f"Route attached to Gateway {gateway_namespace}/{gateway_name}",
        tuple(str(listener.get("name", "")) for listener in matching),
    )


def route_parent_statuses(
    route: Obj, route_kind: str, world: GatewayWorld, now: datetime
) -> list[dict[str, Any]]:
    """The `status.parents` entries the sandbox owns for this route, one per parentRef it answers for."""
    route_namespace = _meta(route).get("namespace", "")
    generation = _meta(route).get("generation")
    existing = (route.get("status") or {}).get("parents") or []
    others = {
        normalized_parent_ref(entry.get("parentRef") or {}, route_namespace)
        for entry in existing
        if entry.get("controllerName") != CONTROLLER_NAME
    }
    previous_ours = {
        normalized_parent_ref(entry.get("parentRef") or {}, route_namespace): entry.get("conditions") or []
        for entry in existing
        if entry.get("controllerName") == CONTROLLER_NAME
    }
    problem = resolved_refs_problem(route, route_kind, world)
    entries: list[dict[str, Any]] = []
    for parent_ref in _spec(route).get("parentRefs") or []:
        key = normalized_parent_ref(parent_ref, route_namespace)
        group, kind, namespace, name = key[0], key[1], key[2], key[3]
        if group != GATEWAY_GROUP or kind != "Gateway":
            continue
        gateway = world.gateways.get((namespace, name))
        if gateway is None:
            if key in others:
                continue
            attachment = Attachment(False, REASON_NO_MATCHING_PARENT, f"Gateway {namespace}/{name} not found")
        elif not world.is_ours(gateway):
            continue
        else:
            attachment = attach(route, route_kind, parent_ref, gateway, world)
        previous = previous_ours.get(key, [])
        conditions = [
            condition(
                ACCEPTED,
                attachment.accepted,
                attachment.reason,
                attachment.message,
                generation=generation,
                now=now,
                previous=previous,
            ),
            condition(
                RESOLVED_REFS,
                problem is None,
                REASON_RESOLVED_REFS if problem is None else problem.reason,
                "All backendRefs resolved" if problem is None else problem.message,
                generation=generation,
                now=now,
                previous=previous,
            ),
        ]
        entries.append(
            {"parentRef": dict(parent_ref), "controllerName": CONTROLLER_NAME, "conditions": conditions}
        )
    return entries


def merged_route_parents(route: Obj, ours: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Other controllers' entries kept as they are, followed by the sandbox's current ones."""
    existing = (route.get("status") or {}).get("parents") or []
    return [dict(e) for e in existing if e.get("controllerName") != CONTROLLER_NAME] + ours


def route_is_accepted(route: Obj) -> bool:
    """Whether the sandbox gateway accepted the route on at least one parent (read from route status)."""
    return any(
        entry.get("controllerName") == CONTROLLER_NAME
        and is_condition_true(entry.get("conditions"), ACCEPTED)
        for entry in (route.get("status") or {}).get("parents") or []
    )


# --------------------------------------------------------------------------- Gateway


def attached_route_counts(
    gateway: Obj, routes: Iterable[tuple[str, Obj]], world: GatewayWorld
) -> dict[str, int]:
    """Listener name -> how many routes attached through it."""
    gateway_namespace = _meta(gateway).get("namespace", "")
    gateway_name = _meta(gateway).get("name", "")
    counts: dict[str, int] = {}
    for route_kind, route in routes:
        route_namespace = _meta(route).get("namespace", "")
        listeners: set[str] = set()
        for parent_ref in _spec(route).get("parentRefs") or []:
            group, kind, namespace, name, _, _ = normalized_parent_ref(parent_ref, route_namespace)
            if (group, kind, namespace, name) != (GATEWAY_GROUP, "Gateway", gateway_namespace, gateway_name):
                continue
            attachment = attach(route, route_kind, parent_ref, gateway, world)
            listeners.update(attachment.listener_names)
        for listener_name in listeners:
            counts[listener_name] = counts.get(listener_name, 0) + 1
    return counts


def route_attachments(route: Obj, route_kind: str, world: GatewayWorld) -> dict[Key, frozenset[str]]:
    """(Gateway namespace, name) -> names of the listeners of that sandbox Gateway the route attached to."""
    route_namespace = _meta(route).get("namespace", "")
    result: dict[Key, set[str]] = {}
    for parent_ref in _spec(route).get("parentRefs") or []:
        group, kind, namespace, name, _, _ = normalized_parent_ref(parent_ref, route_namespace)
        gateway = world.gateways.get((namespace, name))
        if group != GATEWAY_GROUP or kind != "Gateway" or gateway is None or not world.is_ours(gateway):
            continue
        attachment = attach(route, route_kind, parent_ref, gateway, world)
        if attachment.listener_names:
            result.setdefault((namespace, name), set()).update(attachment.listener_names)
    return {key: frozenset(names) for key, names in result.items()}


def gateway_status(
    gateway: Obj,
    world: GatewayWorld,
    routes: Iterable[tuple[str, Obj]],
    now: datetime,
    *,
    attached_counts: Mapping[str, int] | None = None,
) -> dict[str, Any] | None:
    """The status the sandbox writes on one of its Gateways (None when the Gateway is not ours).

    `attached_counts` (listener name -> routes attached) saves recomputing every route's attachment.
    """
    if not world.is_ours(gateway):
        return None
    generation = _meta(gateway).get("generation")
    status = gateway.get("status") or {}
    previous_listeners = {
        entry.get("name"): entry.get("conditions") or [] for entry in status.get("listeners") or []
    }
    counts = attached_counts if attached_counts is not None else attached_route_counts(gateway, routes, world)
    listeners_status: list[dict[str, Any]] = []
    valid_count = 0
    listeners = _spec(gateway).get("listeners") or []
    for listener in listeners:
        name = str(listener.get("name", ""))
        previous = previous_listeners.get(name, [])
        supported, invalid_kinds = listener_supported_kinds(listener)
        protocol_ok = _listener_valid(listener)
        if protocol_ok:
            valid_count += 1
            accepted = condition(
                ACCEPTED,
                True,
                REASON_ACCEPTED,
                "Listener accepted",
                generation=generation,
                now=now,
                previous=previous,
            )
            programmed = condition(
                PROGRAMMED,
                True,
                REASON_PROGRAMMED,
                "Listener programmed",
                generation=generation,
                now=now,
                previous=previous,
            )
        else:
            message = f"protocol {listener.get('protocol')} is not supported by the sandbox gateway"
            accepted = condition(
                ACCEPTED,
                False,
                REASON_UNSUPPORTED_PROTOCOL,
                message,
                generation=generation,
                now=now,
                previous=previous,
            )
            programmed = condition(
                PROGRAMMED, False, REASON_INVALID, message, generation=generation, now=now, previous=previous
            )
        if invalid_kinds:
            resolved = condition(
                RESOLVED_REFS,
                False,
                REASON_INVALID_ROUTE_KINDS,
                f"unsupported route kinds: {', '.join(invalid_kinds)}",
                generation=generation,
                now=now,
                previous=previous,
            )
        else:
            resolved = condition(
                RESOLVED_REFS,
                True,
                REASON_RESOLVED_REFS,
                "References resolved",
                generation=generation,
                now=now,
                previous=previous,
            )
        conflicted = condition(
            CONFLICTED,
            False,
            REASON_NO_CONFLICTS,
            "No conflicts",
            generation=generation,
            now=now,
            previous=previous,
        )
        listeners_status.append(
            {
                "name": name,
                "supportedKinds": supported if protocol_ok else [],
                "attachedRoutes": counts.get(name, 0),
                "conditions": [accepted, programmed, resolved, conflicted],
            }
        )
    previous = status.get("conditions") or []
    if valid_count == len(listeners) and listeners:
        accepted = condition(
            ACCEPTED,
            True,
            REASON_ACCEPTED,
            "Gateway accepted by the canaryd sandbox gateway",
            generation=generation,
            now=now,
            previous=previous,
        )
    else:
        accepted = condition(
            ACCEPTED,
            valid_count > 0,
            REASON_LISTENERS_NOT_VALID,
            f"{len(listeners) - valid_count} of {len(listeners)} listeners are not valid",
            generation=generation,
            now=now,
            previous=previous,
        )
    if valid_count:
        programmed = condition(
            PROGRAMMED,
            True,
            REASON_PROGRAMMED,
            f"Address {GATEWAY_ADDRESS} assigned",
            generation=generation,
            now=now,
            previous=previous,
        )
    else:
        programmed = condition(
            PROGRAMMED,
            False,
            REASON_INVALID,
            "No valid listener",
            generation=generation,
            now=now,
            previous=previous,
        )
    return {
        "addresses": [{"type": "IPAddress", "value": GATEWAY_ADDRESS}] if valid_count else [],
        "conditions": [accepted, programmed],
        "listeners": listeners_status,
    }


# --------------------------------------------------------------------------- wiring to a cluster

#: What route status depends on besides the routes themselves.
_WORLD_RESOURCES = (GATEWAY_CLASSES, GATEWAYS, REFERENCE_GRANTS, SERVICES, NAMESPACES)
RouteKey = tuple[str, str, str]  # (kind, namespace, name)


def _only_status_changed(change: Change) -> bool:
    """A MODIFIED change whose spec, labels and generation did not change (e.g. a status write)."""
    if change.type != "MODIFIED" or change.old is None:
        return False
    old, new = change.old, change.obj
    return (
        old.get("spec") == new.get("spec")
        and _meta(old).get("labels") == _meta(new).get("labels")
        and _meta(old).get("generation") == _meta(new).get("generation")
        and _meta(old).get("deletionTimestamp") == _meta(new).get("deletionTimestamp")
    )


def _route_namespaces(route: Obj) -> set[str]:
    """Namespaces whose Services, labels or ReferenceGrants can change this route's status."""
    namespace = str(_meta(route).get("namespace", ""))
    return {namespace, *(str(ref.get("namespace") or namespace) for ref in route_backend_refs(route))}


class SandboxGateway:
    """Keeps GatewayClass, Gateway, HTTPRoute and GRPCRoute status current through a `ClusterView`.

    It keeps its own view of gateway classes, gateways, namespaces, Services and
    ReferenceGrants from watched changes. A route change re-evaluates that route
    at once (and recounts the Gateways' attached routes shortly after); a
    Service, namespace-label or ReferenceGrant change re-evaluates the routes
    that depend on that namespace; a gateway class or Gateway change
    re-evaluates everything. Status is written through the status subresource
    with the read resourceVersion, and only when it differs.
    """

    def __init__(self, view: ClusterView, *, gateway_recount_delay: float = 0.2) -> None:
        self.view = view
        self.gateway_recount_delay = gateway_recount_delay
        self.status_writes = 0
        self._world = GatewayWorld()
        self._grants: dict[Key, Obj] = {}
        self._route_namespaces: dict[RouteKey, set[str]] = {}
        self._routes_by_namespace: dict[str, set[RouteKey]] = {}
        #: each route -> the sandbox Gateways' listeners it attached to
        self._attachments: dict[RouteKey, dict[Key, frozenset[str]]] = {}
        self._dirty_routes: set[RouteKey] = set()
        self._everything_dirty = False
        self._gateways_dirty = False
        self._flush_scheduled = False
        self._gateway_timer: asyncio.TimerHandle | None = None
        self._stop_watching: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._load()
        self._stop_watching = self.view.watch([*_WORLD_RESOURCES, *ROUTE_KINDS], self._on_change)
        self._everything_dirty = True
        self._schedule_flush()

    def stop(self) -> None:
        if self._stop_watching is not None:
            self._stop_watching()
            self._stop_watching = None
        if self._gateway_timer is not None:
            self._gateway_timer.cancel()
            self._gateway_timer = None
        self._loop = None

    def world(self) -> GatewayWorld:
        """The gateway classes, gateways, namespaces, Services and ReferenceGrants as last seen."""
        return self._world

    # -- the view --------------------------------------------------------------------------------------------

    def _load(self) -> None:
        for resource in _WORLD_RESOURCES:
            for obj in self.view.list(resource):
                self._remember(resource, obj, deleted=False)
        for kind, route in self.routes():
            self._index_route((kind, *name_of(route)), route)

    def _remember(self, resource: Resource, obj: Obj, *, deleted: bool) -> None:
        namespace, name = name_of(obj)
        table: dict[Any, Obj]
        key: Any = (namespace, name)
        if resource == GATEWAY_CLASSES:
            table, key = self._world.gateway_classes, name
        elif resource == GATEWAYS:
            table = self._world.gateways
        elif resource == SERVICES:
            table = self._world.services
        elif resource == NAMESPACES:
            table, key = self._world.namespaces, name
        else:
            table = self._grants
        if deleted:
            table.pop(key, None)
        else:
            table[key] = obj
        if resource == REFERENCE_GRANTS:
            self._world.reference_grants = list(self._grants.values())

    def _index_route(self, key: RouteKey, route: Obj | None) -> None:
        for namespace in self._route_namespaces.pop(key, set()):
            self._routes_by_namespace.get(namespace, set()).discard(key)
        if route is None:
            if self._attachments.pop(key, None):
                self._gateways_dirty = True
            return
        namespaces = _route_namespaces(route)
        self._route_namespaces[key] = namespaces
        for namespace in namespaces:
            self._routes_by_namespace.setdefault(namespace, set()).add(key)

    # -- changes ---------------------------------------------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        resource = change.resource
        deleted = change.type == "DELETED"
        route_kind = ROUTE_KINDS.get(resource)
        if route_kind is not None:
            route_key = (route_kind, *name_of(change.obj))
            self._index_route(route_key, None if deleted else change.obj)
            if not deleted:
                self._dirty_routes.add(route_key)
            self._schedule_flush()
            return
        self._remember(resource, change.obj, deleted=deleted)
        if _only_status_changed(change):
            return
        if resource in (GATEWAY_CLASSES, GATEWAYS):
            self._everything_dirty = True
        else:
            namespace, name = name_of(change.obj)
            self._dirty_routes.update(
                self._routes_by_namespace.get(name if resource == NAMESPACES else namespace, ())
            )
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        try:
            if self._everything_dirty:
                self._everything_dirty = False
                self._dirty_routes.clear()
                self.reconcile_all()
            elif self._dirty_routes:
                dirty, self._dirty_routes = self._dirty_routes, set()
                for kind, namespace, name in sorted(dirty):
                    self._reconcile_route(kind, namespace, name, self._world)
        except Exception:  # one bad object must not stop the gateway
            log.exception("sandbox gateway failed to reconcile")
        if self._gateways_dirty and self._gateway_timer is None and self._loop is not None:
            self._gateway_timer = self._loop.call_later(self.gateway_recount_delay, self._recount_gateways)

    def _recount_gateways(self) -> None:
        self._gateway_timer = None
        self._gateways_dirty = False
        try:
            self._reconcile_gateways(self._world)
        except Exception:
            log.exception("sandbox gateway failed to update Gateway status")

    # -- evaluation ------------------------------------------------------------------------------------------

    def routes(self) -> list[tuple[str, Obj]]:
        return [
            (kind, route) for kind, resource in ROUTE_RESOURCES.items() for route in self.view.list(resource)
        ]

    def reconcile_all(self) -> None:
        world = self._world
        now = self.view.now()
        for gateway_class in self.view.list(GATEWAY_CLASSES):
            status = gateway_class_status(gateway_class, now)
            if status is not None:
                merged = {**(gateway_class.get("status") or {}), **status}
                self._write_status(GATEWAY_CLASSES, gateway_class, merged)
        self._attachments.clear()
        for kind, route in self.routes():
            self._reconcile_route(kind, *name_of(route), world)
        self._reconcile_gateways(world)

    def _reconcile_gateways(self, world: GatewayWorld) -> None:
        now = self.view.now()
        counts: dict[Key, dict[str, int]] = {}
        for attachments in self._attachments.values():
            for gateway_key, listener_names in attachments.items():
                per_listener = counts.setdefault(gateway_key, {})
                for listener_name in listener_names:
                    per_listener[listener_name] = per_listener.get(listener_name, 0) + 1
        for gateway in self.view.list(GATEWAYS):  # read again: their status changes too
            status = gateway_status(gateway, world, (), now, attached_counts=counts.get(name_of(gateway), {}))
            if status is not None:
                self._write_status(GATEWAYS, gateway, {**(gateway.get("status") or {}), **status})

    def _reconcile_route(self, kind: str, namespace: str, name: str, world: GatewayWorld) -> None:
        resource = ROUTE_RESOURCES[kind]
        route = self.view.get(resource, namespace, name)
        if route is None:
            if self._attachments.pop((kind, namespace, name), None):
                self._gateways_dirty = True
            return
        attachments = route_attachments(route, kind, world)
        if self._attachments.get((kind, namespace, name), {}) != attachments:
            self._attachments[(kind, namespace, name)] = attachments
            self._gateways_dirty = True
        ours = route_parent_statuses(route, kind, world, self.view.now())
        parents = merged_route_parents(route, ours)
        current = route.get("status") or {}
        if parents == (current.get("parents") or []):
            return
        self._write_status(resource, route, {**current, "parents": parents})

    def _write_status(self, resource: Resource, obj: Obj, status: dict[str, Any]) -> None:
        if status == obj.get("status"):
            return
        try:
            if self.view.write_status(resource, obj, status):
                self.status_writes += 1
        except Exception as error:  # refused: the change that caused it brings us back here
            log.debug("status write for %s %s failed: %s", resource.plural, name_of(obj)[1], error)
