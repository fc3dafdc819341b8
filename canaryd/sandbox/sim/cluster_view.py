"""What the simulators may know of a cluster, and what they write to it.

A Deployment controller, an EndpointSlice controller, a Gateway
implementation and a data plane all work the same way: keep a picture of a
few kinds of objects current from a watch, decide, and write status (and,
for the controllers that own objects, the ReplicaSets, Pods, EndpointSlices
and Endpoints they make). `ClusterView` is that much of a Kubernetes client
and nothing more, so a simulator cannot tell (and need not care) whether it
runs in the sandbox's process against its store (`canaryd.sandbox.store_view`,
the fast path) or against any API server over HTTP (`api_view`, through the
controller's own client).

The contract, for both implementations:

- objects handed out (`list`, `get`, and a `Change`'s `obj` and `old`) are
  snapshots shared with the view: read them, never change them;
- `watch` reports every change of the named resources after the call, in
  the order the server made them, with the object before the change; the
  handler may run inside another client's write (in-process) or when the
  watch event arrives (HTTP), so it only takes note and returns;
- `write_status` replaces an object's status on the status subresource,
  conditioned on the resourceVersion of the object it was computed from. It
  says False when the write was refused at once (a conflict, or the object is
  gone): the change that made it stale arrives through `watch`, so the caller
  simply recomputes then;
- `write` creates an object (no resourceVersion in it) or replaces it
  (conditioned on its resourceVersion), `delete` deletes one (conditioned on
  its uid); both say False when refused at once, for the same reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from canaryd.adapters.kube import DEPLOYMENTS, GRPC_ROUTES, HTTP_ROUTES, ROUTE_RESOURCES, SERVICES, Resource
from canaryd.api.constants import GATEWAY_GROUP

Obj = Mapping[str, Any]

NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
GATEWAY_CLASSES = Resource(GATEWAY_GROUP, "v1", "gatewayclasses", "GatewayClass", namespaced=False)
GATEWAYS = Resource(GATEWAY_GROUP, "v1", "gateways", "Gateway")
#: v1beta1: the version every Gateway API release since ReferenceGrant's introduction serves.
REFERENCE_GRANTS = Resource(GATEWAY_GROUP, "v1beta1", "referencegrants", "ReferenceGrant")
PODS = Resource("", "v1", "pods", "Pod")
REPLICA_SETS = Resource("apps", "v1", "replicasets", "ReplicaSet")
ENDPOINT_SLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
ENDPOINTS = Resource("", "v1", "endpoints", "Endpoints")
#: Route kind -> its resource (ROUTE_RESOURCES, from the controller's adapter) and back.
ROUTE_KINDS: Mapping[Resource, str] = {resource: kind for kind, resource in ROUTE_RESOURCES.items()}
#: What the Gateway implementation and the traffic data plane read, together.
GATEWAY_AND_TRAFFIC_RESOURCES: tuple[Resource, ...] = (
    GATEWAY_CLASSES,
    GATEWAYS,
    HTTP_ROUTES,
    GRPC_ROUTES,
    REFERENCE_GRANTS,
    SERVICES,
    NAMESPACES,
    DEPLOYMENTS,
)

__all__ = [
    "DEPLOYMENTS",
    "ENDPOINTS",
    "ENDPOINT_SLICES",
    "GATEWAYS",
    "GATEWAY_AND_TRAFFIC_RESOURCES",
    "GATEWAY_CLASSES",
    "GRPC_ROUTES",
    "HTTP_ROUTES",
    "NAMESPACES",
    "PODS",
    "REFERENCE_GRANTS",
    "REPLICA_SETS",
    "ROUTE_KINDS",
    "ROUTE_RESOURCES",
    "SERVICES",
    "Change",
    "ChangeHandler",
    "ClusterView",
    "Obj",
    "Resource",
    "name_of",
]


@dataclass(frozen=True)
class Change:
    """One change of one object: `type` is ADDED, MODIFIED or DELETED.

    `obj` is the object after the change (for DELETED, as it was last);
    `old` the object before it (None for ADDED).
    """

    type: str
    resource: Resource
    obj: Obj
    old: Obj | None


ChangeHandler = Callable[[Change], None]


class ClusterView(Protocol):
    """The reads, the watch and the status write the simulators need (see the module docstring)."""

    def now(self) -> datetime:
        """The cluster's clock (aware, UTC)."""
        ...

    def list(self, resource: Resource) -> Sequence[Obj]:
        """Every object of ``resource``, in all namespaces."""
        ...

    def get(self, resource: Resource, namespace: str, name: str) -> Obj | None:
        """One object (namespace "" for cluster-scoped kinds), or None when there is none."""
        ...

    def watch(self, resources: Sequence[Resource], handler: ChangeHandler) -> Callable[[], None]:
        """Call ``handler`` for every later change of ``resources``; returns the function that stops it."""
        ...

    def write_status(self, resource: Resource, obj: Obj, status: Mapping[str, Any]) -> bool:
        """Replace ``obj``'s status if ``obj`` is still current; False when refused at once."""
        ...

    def write(self, resource: Resource, obj: Obj) -> bool:
        """Create ``obj`` (no resourceVersion) or replace it if still current; False when refused at once."""
        ...

    def delete(self, resource: Resource, obj: Obj) -> bool:
        """Delete ``obj`` (the object of its uid); False when refused at once (e.g. already gone)."""
        ...


def name_of(obj: Obj) -> tuple[str, str]:
    """(namespace or "", name) of an object."""
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
