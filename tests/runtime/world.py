"""Arranging a small world in a sandbox store: Gateway, app Deployments, routes, templates, Canaries.

Shared by the runtime tests, the end-to-end tests and the controller
benchmark, so every one of them builds the same realistic objects: a
Deployment per app, a route whose rule lists ``<app>-primary`` and
``<app>-canary`` (plus a rule the app team keeps for itself), and a Canary.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
GATEWAY_NAMESPACE = "infra"
GATEWAY_NAME = "public"
GATEWAY_CLASS = "sandbox"
SANDBOX_CONTROLLER = "canaryd.io/sandbox-gateway"


def install_crds(store: Any) -> None:
    for path in sorted((REPO / "manifests" / "crd").glob("*.canaryd.io.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                try:
                    store.create("customresourcedefinitions", doc)
                except Exception as exc:  # already installed by the cluster
                    if "AlreadyExists" not in repr(exc) and "already exists" not in str(exc):
                        raise


def install_gateway(store: Any, *, allowed_namespaces: str = "All") -> None:
    store.ensure_namespace(GATEWAY_NAMESPACE)
    try:
        store.create(
            "gatewayclasses.gateway.networking.k8s.io",
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "GatewayClass",
                "metadata": {"name": GATEWAY_CLASS},
                "spec": {"controllerName": SANDBOX_CONTROLLER},
            },
        )
    except Exception as exc:
        if "AlreadyExists" not in repr(exc) and "already exists" not in str(exc):
            raise
    store.create(
        "gateways.gateway.networking.k8s.io",
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE},
            "spec": {
                "gatewayClassName": GATEWAY_CLASS,
                "listeners": [
                    {
                        "name": "http",
                        "protocol": "HTTP",
                        "port": 80,
                        "allowedRoutes": {"namespaces": {"from": allowed_namespaces}},
                    },
                ],
            },
        },
    )


def deployment(namespace: str, name: str, *, image: str = "app:1.0", replicas: int = 2,
               annotations: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": dict(annotations or {})},
                "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 8080}]}]},
            },
        },
    }


def route(namespace: str, name: str, *, kind: str = "HTTPRoute", rps: float = 40, parent: str = GATEWAY_NAME,
          parent_namespace: str = GATEWAY_NAMESPACE) -> dict[str, Any]:  # fmt: skip
    ours = {
        "backendRefs": [
            {"name": f"{name}-primary", "port": 8080, "weight": 100},
            {"name": f"{name}-canary", "port": 8080, "weight": 0},
        ]
    }
    if kind == "HTTPRoute":
        ours["matches"] = [{"path": {"type": "PathPrefix", "value": "/"}}]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {"sandbox.canaryd.io/rps": str(rps)},
        },
        "spec": {
            "parentRefs": [{"name": parent, "namespace": parent_namespace}],
            "rules": [ours],
        },
    }


def canary(namespace: str, name: str, *, step_weights: list[int] | None = None, interval: str = "1s",
           threshold: int = 2, metrics: list[dict[str, Any]] | None = None, route_kind: str = "HTTPRoute",
           deadline: int = 600) -> dict[str, Any]:  # fmt: skip
    return {
        "apiVersion": "canaryd.io/v1alpha1",
        "kind": "Canary",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "service": {"port": 8080},
            "routeRefs": [{"kind": route_kind, "name": name}],
            "analysis": {
                "interval": interval,
                "threshold": threshold,
                "stepWeights": step_weights or [10, 30, 50],
                "metrics": metrics or [],
            },
            "progressDeadlineSeconds": deadline,
        },
    }


def app(store: Any, namespace: str, name: str, **canary_options: Any) -> None:
    """A Deployment, its route (kind from ``route_kind``) and its Canary."""
    store.ensure_namespace(namespace)
    store.create("deployments", deployment(namespace, name))
    kind = canary_options.get("route_kind", "HTTPRoute")
    store.create(f"{kind.lower()}s.gateway.networking.k8s.io", route(namespace, name, kind=kind))
    store.create("canaries.canaryd.io", canary(namespace, name, **canary_options))


def new_revision(store: Any, namespace: str, name: str, image: str,
                 annotations: dict[str, str] | None = None) -> None:  # fmt: skip
    current = store.get("deployments", name, namespace)
    template = copy.deepcopy(current["spec"]["template"])
    template["spec"]["containers"][0]["image"] = image
    template.setdefault("metadata", {})["annotations"] = dict(annotations or {})
    store.patch("deployments", name, {"spec": {"template": template}}, namespace)


def weights(store: Any, namespace: str, name: str, kind: str = "HTTPRoute") -> tuple[int, int]:
    obj = store.get(f"{kind.lower()}s.gateway.networking.k8s.io", name, namespace)
    for rule in obj["spec"]["rules"]:
        refs = {r["name"]: r.get("weight", 1) for r in rule.get("backendRefs", [])}
        if f"{name}-primary" in refs:
            return refs[f"{name}-primary"], refs[f"{name}-canary"]
    raise AssertionError("route lost its backendRefs")


def status(store: Any, namespace: str, name: str) -> dict[str, Any]:
    return store.get("canaries.canaryd.io", name, namespace).get("status") or {}


def condition(store: Any, namespace: str, name: str, type_: str) -> dict[str, Any] | None:
    return next((c for c in status(store, namespace, name).get("conditions", []) if c["type"] == type_), None)


def events(store: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    items, _ = store.list_refs("events.events.k8s.io", namespace=namespace)
    # The Canary's: a real cluster's Deployment controller also reports on the Deployment of that name.
    found = [e for e in items if (e.get("regarding") or {}).get("name") == name
             and (e.get("regarding") or {}).get("kind") == "Canary"]  # fmt: skip
    return sorted(found, key=lambda e: e["metadata"].get("resourceVersion", "0").zfill(20))


async def wait_until(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05,
                     message: str = "") -> Any:  # fmt: skip
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {message}")
        await asyncio.sleep(interval)


class WeightRecorder:
    """Every distinct (primary, canary) weight pair a route went through, from the store's change feed."""

    def __init__(self, store: Any, namespace: str, name: str, kind: str = "HTTPRoute") -> None:
        self.sequence: list[tuple[int, int]] = []
        #: (time.monotonic(), pair) for each entry of ``sequence``: when the change was seen.
        self.changes: list[tuple[float, tuple[int, int]]] = []
        self._key = (namespace, name, kind)
        self._unsubscribe = store.subscribe(self._on_event)

    def _on_event(self, event: Any) -> None:
        obj = event.obj
        if event.storage_key[1] != f"{self._key[2].lower()}s" or not isinstance(obj, dict):
            return
        meta = obj.get("metadata") or {}
        if (meta.get("namespace"), meta.get("name")) != self._key[:2]:
            return
        for rule in obj["spec"].get("rules", []):
            refs = {r["name"]: r.get("weight", 1) for r in rule.get("backendRefs", [])}
            name = self._key[1]
            if f"{name}-primary" in refs and f"{name}-canary" in refs:
                pair = (refs[f"{name}-primary"], refs[f"{name}-canary"])
                if not self.sequence or self.sequence[-1] != pair:
                    self.sequence.append(pair)
                    self.changes.append((time.monotonic(), pair))
                return

    def close(self) -> None:
        self._unsubscribe()


def find(store: Any, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The stored object, or None when it does not exist."""
    try:
        obj: dict[str, Any] = store.get(resource, name, namespace)
    except Exception:
        return None
    return obj
