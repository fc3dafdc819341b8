"""Whether the Gateways a route attaches to implement what a run would put on it.

Gateway API lets an implementation accept a route whose extended features it
does not implement: Traefik 3.7 keeps a route with a ``RequestMirror`` filter
Accepted, logs "unsupported filter" and answers that rule's requests itself
with errors. Route status cannot warn canaryd, but the GatewayClass can: since
Gateway API v1.2 an implementation lists what it supports in
``status.supportedFeatures``. Before a run with a mirror phase starts, every
parent Gateway's class that lists features must list request mirroring (and
percentage mirroring when the Canary mirrors less than every request);
otherwise the run is refused and the route is left as written. A class that
lists no features says nothing either way, so canaryd mirrors as before.

Gateway API v1.6 names no GRPCRoute mirroring feature: a GRPCRoute counts as
supported when its parents' classes list ``GRPCRouteRequestMirror`` (should a
later version name it) or ``HTTPRouteRequestMirror``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from canaryd.api.models import Canary
from canaryd.core.observations import ParentSupport, RouteState

GATEWAY_GROUP = "gateway.networking.k8s.io"
HTTP_MIRROR = "HTTPRouteRequestMirror"
HTTP_PERCENTAGE_MIRROR = "HTTPRouteRequestPercentageMirror"
GRPC_MIRROR = "GRPCRouteRequestMirror"


def parent_gateways(route: Mapping[str, Any], route_namespace: str) -> tuple[tuple[str, str], ...]:
    """(namespace, name) of each distinct Gateway in the route's parentRefs, in order."""
    found: dict[tuple[str, str], None] = {}
    for ref in (route.get("spec") or {}).get("parentRefs") or []:
        if not isinstance(ref, dict):
            continue
        group = ref.get("group", GATEWAY_GROUP)
        kind = ref.get("kind", "Gateway")
        name = ref.get("name")
        if (group or GATEWAY_GROUP) != GATEWAY_GROUP or (kind or "Gateway") != "Gateway":
            continue
        if not isinstance(name, str) or not name:
            continue
        namespace = ref.get("namespace") or route_namespace
        found[(str(namespace), name)] = None
    return tuple(found)


def gateway_class_name(gateway: Mapping[str, Any] | None) -> str:
    name = ((gateway or {}).get("spec") or {}).get("gatewayClassName")
    return name if isinstance(name, str) else ""


def listed_features(gateway_class: Mapping[str, Any] | None) -> frozenset[str] | None:
    """The names in a GatewayClass's ``status.supportedFeatures``; None when it lists none.

    Entries are ``{name: ...}`` objects since v1.2 (plain strings in v1.1's experimental channel:
    both are read). An empty list is read as listing nothing, like a missing one.
    """
    status = (gateway_class or {}).get("status")
    features = status.get("supportedFeatures") if isinstance(status, dict) else None
    if not isinstance(features, list):
        return None
    names = {
        str(f.get("name")) if isinstance(f, dict) else f
        for f in features
        if (isinstance(f, dict) and isinstance(f.get("name"), str)) or isinstance(f, str)
    }
    return frozenset(names) or None


def parent_support(
    gateway_key: tuple[str, str],
    gateway: Mapping[str, Any] | None,
    gateway_class: Mapping[str, Any] | None,
) -> ParentSupport:
    return ParentSupport(
        gateway=f"{gateway_key[0]}/{gateway_key[1]}",
        gateway_class=gateway_class_name(gateway),
        features=listed_features(gateway_class),
    )


def features_for_mirror(kind: str, percent: int) -> tuple[tuple[str, ...], ...]:
    """What a class must list for canaryd's mirror on a route of this kind: each entry, one of its names."""
    if kind == "GRPCRoute":
        return ((GRPC_MIRROR, HTTP_MIRROR),)
    needed: tuple[tuple[str, ...], ...] = ((HTTP_MIRROR,),)
    return (*needed, (HTTP_PERCENTAGE_MIRROR,)) if percent < 100 else needed


def mirror_refusals(canary: Canary, routes: Sequence[RouteState]) -> tuple[str, ...]:
    """For a Canary with a mirror phase: each route parent whose GatewayClass says it cannot mirror."""
    mirror = canary.spec.analysis.mirror
    if mirror is None or canary.spec.analysis.ab_testing:
        return ()
    problems: list[str] = []
    for route in routes:
        for parent in route.parents:
            if parent.features is None:
                continue
            missing = [
                " or ".join(names)
                for names in features_for_mirror(route.kind, mirror.percent)
                if not parent.features.intersection(names)
            ]
            if missing:
                where = f"Gateway {parent.gateway} (GatewayClass {parent.gateway_class})"
                problems.append(
                    f"{route.kind} {route.name}: {where} does not support {', '.join(missing)} "
                    "(status.supportedFeatures), so a mirror could fail the rule's requests; remove "
                    "analysis.mirror or attach the route to a Gateway that mirrors"
                )
    return tuple(problems)


__all__ = [
    "GATEWAY_GROUP",
    "features_for_mirror",
    "gateway_class_name",
    "listed_features",
    "mirror_refusals",
    "parent_gateways",
    "parent_support",
]
