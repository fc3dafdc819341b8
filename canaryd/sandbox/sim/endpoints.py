"""The sandbox's EndpointSlice and Endpoints controllers: a Service's addresses, from the pods it selects.

A Gateway implementation does not send requests to a Service but to the
addresses its EndpointSlices list (Traefik reads ``discovery.k8s.io/v1``
EndpointSlices; older clients the ``v1`` Endpoints), so the sandbox keeps
both as kube-controller-manager does, from the pods the Deployment simulator
makes: for every Service with a selector, the pods of its namespace that
match and have an IP, each ready or not as its Ready condition says, with
the Service's ports resolved against the pod (a named targetPort is looked
up in its containers' ports).

- EndpointSlices ``<service>-<5 characters>``, labelled
  ``kubernetes.io/service-name`` and ``endpointslice.kubernetes.io/managed-by:
  endpointslice-controller.k8s.io``, owned by the Service; one per set of
  resolved ports (pods that resolve a named port differently get their own);
- Endpoints named like the Service, ``subsets`` grouped the same way, with
  not-ready pods under ``notReadyAddresses``.

`desired_endpoint_slices` and `desired_endpoints` are pure;
`EndpointsController` runs them against a `ClusterView`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from canaryd.api.timestamps import format_rfc3339
from canaryd.sandbox.labels import matches_label_selector
from canaryd.sandbox.sim.cluster_view import (
    ENDPOINT_SLICES,
    ENDPOINTS,
    PODS,
    SERVICES,
    Change,
    ClusterView,
    Resource,
    name_of,
)
from canaryd.sandbox.sim.pods import owner_reference, pod_ip, pod_ready, suffix

log = logging.getLogger(__name__)

Obj = Mapping[str, Any]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
ENDPOINTS_MANAGED_BY_LABEL = "endpoints.kubernetes.io/managed-by"
ENDPOINTS_MANAGED_BY = "endpoint-controller"
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"

PortKey = tuple[tuple[str, int, str], ...]  # (name, port, protocol) per Service port


def selected_pods(service: Obj, pods: Sequence[Obj]) -> list[Obj]:
    """Of ``pods``, those in the Service's namespace that its selector matches and that have an IP."""
    selector = (service.get("spec") or {}).get("selector")
    if not selector:
        return []
    namespace = (service.get("metadata") or {}).get("namespace")
    chosen = [
        pod
        for pod in pods
        if (pod.get("metadata") or {}).get("namespace") == namespace
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
        and pod_ip(pod)
        and matches_label_selector({"matchLabels": selector}, (pod.get("metadata") or {}).get("labels"))
    ]
    return sorted(chosen, key=lambda pod: str((pod.get("metadata") or {}).get("name")))


def resolved_ports(service: Obj, pod: Obj) -> PortKey:
    """The Service's ports with targetPort resolved for this pod (a named port the pod lacks is left out)."""
    # The sandbox keeps Deployments a real API server would refuse (a port that is a string): skip those.
    container_ports = {
        str(port.get("name")): int(port.get("containerPort", 0))
        for container in (pod.get("spec") or {}).get("containers") or []
        if isinstance(container, dict)
        for port in container.get("ports") or []
        if isinstance(port, dict) and port.get("name") and isinstance(port.get("containerPort", 0), int)
    }
    resolved = []
    for port in (service.get("spec") or {}).get("ports") or []:
        target = port.get("targetPort", port.get("port"))
        if isinstance(target, str):
            if target.isdigit():
                target = int(target)
            elif target in container_ports:
                target = container_ports[target]
            else:
                continue
        resolved.append((str(port.get("name") or ""), int(target), str(port.get("protocol") or "TCP")))
    return tuple(resolved)


def _grouped(service: Obj, pods: Sequence[Obj]) -> dict[PortKey, list[Obj]]:
    groups: dict[PortKey, list[Obj]] = {}
    for pod in selected_pods(service, pods):
        groups.setdefault(resolved_ports(service, pod), []).append(pod)
    return groups


def _target_ref(pod: Obj) -> dict[str, Any]:
    metadata = pod.get("metadata") or {}
    return {
        "kind": "Pod",
        "namespace": metadata.get("namespace", ""),
        "name": metadata.get("name", ""),
        "uid": metadata.get("uid", ""),
    }


def _service_labels(service: Obj) -> dict[str, str]:
    return dict((service.get("metadata") or {}).get("labels") or {})


def desired_endpoint_slices(service: Obj, pods: Sequence[Obj], changed_at: str) -> list[dict[str, Any]]:
    """The EndpointSlices (without server-set metadata) the controller keeps for ``service``."""
    metadata = service.get("metadata") or {}
    name = str(metadata.get("name", ""))
    if not (service.get("spec") or {}).get("selector"):
        return []
    # A Service that selects no pod still has one slice, with neither endpoints nor ports.
    groups = _grouped(service, pods) or {(): []}
    slices = []
    for ports, members in groups.items():
        key = ",".join(f"{n}:{p}/{proto}" for n, p, proto in ports)
        slices.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-{suffix(f'{name}/{key}')}",
                    "generateName": f"{name}-",
                    "namespace": metadata.get("namespace", ""),
                    "labels": {
                        **_service_labels(service),
                        SERVICE_NAME_LABEL: name,
                        MANAGED_BY_LABEL: MANAGED_BY,
                    },
                    "annotations": {TRIGGER_TIME_ANNOTATION: changed_at},
                    "ownerReferences": [owner_reference(service)],
                },
                "addressType": "IPv4",
                "endpoints": [
                    {
                        "addresses": [pod_ip(pod)],
                        "conditions": {
                            "ready": pod_ready(pod),
                            "serving": pod_ready(pod),
                            "terminating": False,
                        },
                        "nodeName": (pod.get("spec") or {}).get("nodeName"),
                        "targetRef": _target_ref(pod),
                    }
                    for pod in members
                ]
                or None,
                "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports] or None,
            }
        )
    return slices


def desired_endpoints(service: Obj, pods: Sequence[Obj], changed_at: str) -> dict[str, Any] | None:
    """The v1 Endpoints of ``service`` (None for a Service without a selector)."""
    metadata = service.get("metadata") or {}
    if not (service.get("spec") or {}).get("selector"):
        return None
    subsets = []
    for ports, members in _grouped(service, pods).items():
        if not ports:
            continue  # the v1 controller leaves out pods whose ports do not resolve
        subset: dict[str, Any] = {}
        for field, wanted in (("addresses", True), ("notReadyAddresses", False)):
            addresses = [
                {
                    "ip": pod_ip(pod),
                    "nodeName": (pod.get("spec") or {}).get("nodeName"),
                    "targetRef": _target_ref(pod),
                }
                for pod in members
                if pod_ready(pod) is wanted
            ]
            if addresses:
                subset[field] = addresses
        subset["ports"] = [
            {"name": n, "port": p, "protocol": proto} if n else {"port": p, "protocol": proto}
            for n, p, proto in ports
        ]
        subsets.append(subset)
    endpoints: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": metadata.get("name", ""),
            "namespace": metadata.get("namespace", ""),
            "labels": {**_service_labels(service), ENDPOINTS_MANAGED_BY_LABEL: ENDPOINTS_MANAGED_BY},
            "annotations": {TRIGGER_TIME_ANNOTATION: changed_at},
        },
    }
    if subsets:
        endpoints["subsets"] = subsets
    return endpoints


def _content(obj: Obj) -> dict[str, Any]:
    """What the controller decides of an object: all but server-set metadata and the trigger time."""
    metadata = obj.get("metadata") or {}
    kept = {
        key: metadata.get(key)
        for key in ("name", "namespace", "labels", "ownerReferences")
        if metadata.get(key) is not None
    }
    annotations = {
        k: v for k, v in (metadata.get("annotations") or {}).items() if k != TRIGGER_TIME_ANNOTATION
    }
    if annotations:
        kept["annotations"] = annotations
    body = {key: value for key, value in obj.items() if key not in ("metadata", "apiVersion", "kind")}
    return {"metadata": kept, **body}


class EndpointsController:
    """Keeps every selecting Service's EndpointSlices and Endpoints current through a `ClusterView`.

    Pods and Services are indexed by namespace and label, so a pod's change
    recomputes only the Services that select it (before or after the change).
    """

    def __init__(self, view: ClusterView) -> None:
        self.view = view
        self.writes = 0
        self._dirty: set[tuple[str, str]] = set()
        self._flush_scheduled = False
        self._stop_watching: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._services: dict[str, dict[str, Obj]] = {}  # namespace -> name -> Service
        self._pods: dict[str, dict[str, Obj]] = {}  # namespace -> name -> Pod
        self._pods_by_label: dict[tuple[str, str, str], set[str]] = {}  # (namespace, key, value) -> names
        self._slices: dict[tuple[str, str], dict[str, Obj]] = {}  # (namespace, service) -> name -> slice

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_watching = self.view.watch([SERVICES, PODS, ENDPOINT_SLICES, ENDPOINTS], self._on_change)
        for pod in self.view.list(PODS):
            self._index_pod(pod, None)
        for endpoint_slice in self.view.list(ENDPOINT_SLICES):
            self._index_slice(endpoint_slice, deleted=False)
        for service in self.view.list(SERVICES):
            self._services.setdefault(name_of(service)[0], {})[name_of(service)[1]] = service
            self._mark(name_of(service))

    def stop(self) -> None:
        if self._stop_watching is not None:
            self._stop_watching()
            self._stop_watching = None
        self._loop = None

    # -- indexes ---------------------------------------------------------------------------------------------

    def _index_pod(self, pod: Obj | None, old: Obj | None) -> None:
        for obj, adding in ((old, False), (pod, True)):
            if obj is None:
                continue
            namespace, name = name_of(obj)
            labels = (obj.get("metadata") or {}).get("labels") or {}
            for key, value in labels.items():
                names = self._pods_by_label.setdefault((namespace, key, str(value)), set())
                if adding:
                    names.add(name)
                else:
                    names.discard(name)
                    if not names:
                        del self._pods_by_label[(namespace, key, str(value))]
            if adding:
                self._pods.setdefault(namespace, {})[name] = obj
            else:
                self._pods.get(namespace, {}).pop(name, None)

    def _index_slice(self, endpoint_slice: Obj, *, deleted: bool) -> None:
        labels = (endpoint_slice.get("metadata") or {}).get("labels") or {}
        if labels.get(MANAGED_BY_LABEL) != MANAGED_BY or not labels.get(SERVICE_NAME_LABEL):
            return
        namespace, name = name_of(endpoint_slice)
        slices = self._slices.setdefault((namespace, str(labels[SERVICE_NAME_LABEL])), {})
        if deleted:
            slices.pop(name, None)
        else:
            slices[name] = endpoint_slice

    def _selected(self, namespace: str, selector: Mapping[str, Any]) -> list[Obj]:
        names: set[str] | None = None
        for key, value in selector.items():
            found = self._pods_by_label.get((namespace, key, str(value)), set())
            names = set(found) if names is None else names & found
            if not names:
                return []
        pods = self._pods.get(namespace, {})
        return [pods[name] for name in sorted(names or ()) if name in pods]

    # -- events ----------------------------------------------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        namespace, name = name_of(change.obj)
        if change.resource == SERVICES:
            services = self._services.setdefault(namespace, {})
            if change.type == "DELETED":
                services.pop(name, None)
            else:
                services[name] = change.obj
            self._mark((namespace, name))
        elif change.resource == PODS:
            self._index_pod(None if change.type == "DELETED" else change.obj, change.old)
            labels = [(o.get("metadata") or {}).get("labels") or {} for o in (change.obj, change.old) if o]
            for service_name, service in self._services.get(namespace, {}).items():
                selector = (service.get("spec") or {}).get("selector")
                if selector and any(all(lab.get(k) == v for k, v in selector.items()) for lab in labels):
                    self._mark((namespace, service_name))
        elif change.resource == ENDPOINT_SLICES:
            self._index_slice(change.obj, deleted=change.type == "DELETED")
            owner = ((change.obj.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
            if owner and (change.type == "DELETED" or change.old is not None):
                self._mark((namespace, str(owner)))  # someone changed what this controller keeps
        elif change.type == "DELETED" or change.old is not None:
            self._mark((namespace, name))

    def _mark(self, key: tuple[str, str]) -> None:
        self._dirty.add(key)
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, set()
        for key in sorted(dirty):
            try:
                self.reconcile(key)
            except Exception:  # one bad object must not stop the controller
                log.exception("endpoints controller failed on %s/%s", *key)

    # -- reconciling -----------------------------------------------------------------------------------------

    def reconcile(self, key: tuple[str, str]) -> None:
        """Bring one Service's EndpointSlices and Endpoints up to date."""
        namespace, name = key
        service = self._services.get(namespace, {}).get(name)
        if service is None or (service.get("metadata") or {}).get("deletionTimestamp"):
            return  # the garbage collector removes what the Service owned
        selector = (service.get("spec") or {}).get("selector") or {}
        pods = self._selected(namespace, selector) if selector else []
        changed_at = format_rfc3339(self.view.now().replace(microsecond=0))
        existing = dict(self._slices.get(key, {}))
        wanted = {s["metadata"]["name"]: s for s in desired_endpoint_slices(service, pods, changed_at)}
        for slice_name, current in existing.items():
            if slice_name not in wanted:
                self._count(self.view.delete(ENDPOINT_SLICES, current))
        for slice_name, desired in wanted.items():
            self._put(ENDPOINT_SLICES, existing.get(slice_name), desired)
        current_v1 = self.view.get(ENDPOINTS, namespace, name)
        desired_v1 = desired_endpoints(service, pods, changed_at)
        if desired_v1 is None:
            managed = ((current_v1 or {}).get("metadata") or {}).get("labels") or {}
            if current_v1 is not None and managed.get(ENDPOINTS_MANAGED_BY_LABEL) == ENDPOINTS_MANAGED_BY:
                self._count(self.view.delete(ENDPOINTS, current_v1))
            return
        self._put(ENDPOINTS, current_v1, desired_v1)

    def _put(self, resource: Resource, current: Obj | None, desired: dict[str, Any]) -> None:
        if current is None:
            self._count(self.view.write(resource, desired))
        elif _content(current) != _content(desired):
            version = (current.get("metadata") or {}).get("resourceVersion")
            self._count(
                self.view.write(
                    resource, {**desired, "metadata": {**desired["metadata"], "resourceVersion": version}}
                )
            )

    def _count(self, written: bool) -> None:
        if written:
            self.writes += 1
