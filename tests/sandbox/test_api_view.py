"""The Gateway and traffic simulators as ordinary API clients: over HTTP they do what they do in-process.

Two sandbox API servers hold the same objects. On one the simulators run
in-process on its store (`StoreView`); on the other they run as clients of
its REST API through the controller's `KubeClient` (`ApiClusterView`), like
any Gateway implementation of a real cluster. Route and Gateway status, and
the traffic each route carries, must come out the same, also after changes
made through the API (new weights, a Service deleted, a ReferenceGrant added).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canaryd.adapters.kube import DEPLOYMENTS, HTTP_ROUTES, SERVICES, KubeClient
from canaryd.sandbox.server.apiserver import SandboxApiServer
from canaryd.sandbox.server.store import ObjectStore
from canaryd.sandbox.sim.api_view import ApiClusterView
from canaryd.sandbox.sim.cluster_view import GATEWAY_AND_TRAFFIC_RESOURCES, REFERENCE_GRANTS, ClusterView
from canaryd.sandbox.sim.gateway import CONTROLLER_NAME, SandboxGateway
from canaryd.sandbox.sim.knobs import ANNOTATION_ERROR_RATE, ANNOTATION_RPS
from canaryd.sandbox.sim.traffic import TrafficMetrics, TrafficSimulator
from canaryd.sandbox.store_view import StoreView
from tests.fixtures.waiting import eventually
from tests.runtime.world import deployment

GW = "gateway.networking.k8s.io"
GW_V1 = f"{GW}/v1"


def arrange(store: ObjectStore) -> None:
    """A sandbox Gateway; payments-api 80/20 with a bad canary; ledger refused; search across namespaces."""
    store.ensure_namespace("infra")
    store.create("namespaces", {"metadata": {"name": "payments", "labels": {"gateway-access": "yes"}}})
    store.ensure_namespace("shared")
    store.create(
        f"gatewayclasses.{GW}",
        {"apiVersion": GW_V1, "kind": "GatewayClass", "metadata": {"name": "sandbox"},
         "spec": {"controllerName": CONTROLLER_NAME}},
    )  # fmt: skip
    store.create(
        f"gateways.{GW}",
        {
            "apiVersion": GW_V1,
            "kind": "Gateway",
            "metadata": {"name": "public", "namespace": "infra"},
            "spec": {
                "gatewayClassName": "sandbox",
                "listeners": [
                    {"name": "http", "port": 80, "protocol": "HTTP",
                     "allowedRoutes": {"namespaces": {"from": "Selector",
                                                      "selector": {"matchLabels": {"gateway-access": "yes"}}},
                                       "kinds": [{"kind": "HTTPRoute"}]}},
                ],
            },
        },
    )  # fmt: skip
    for namespace, name, app, template_annotations in (
        ("payments", "payments-api-primary", "payments-api-primary", {}),
        ("payments", "payments-api-canary", "payments-api", {ANNOTATION_ERROR_RATE: "0.25"}),
        ("shared", "search", "search", {}),
    ):
        store.create("deployments", deployment(namespace, app, annotations=template_annotations))
        store.update_status(
            "deployments", {"metadata": {"name": app, "namespace": namespace}, "status": {"readyReplicas": 2}}
        )
        store.create(
            "services",
            {"metadata": {"name": name, "namespace": namespace},
             "spec": {"selector": {"app": app}, "ports": [{"port": 8080}]}},
        )  # fmt: skip
    routes = (
        ("payments-api", [("payments-api-primary", None, 80), ("payments-api-canary", None, 20)], "400"),
        ("search", [("search", "shared", 1)], "100"),
    )
    for name, backends, rps in routes:
        store.create(
            f"httproutes.{GW}",
            {
                "apiVersion": GW_V1,
                "kind": "HTTPRoute",
                "metadata": {"name": name, "namespace": "payments", "annotations": {ANNOTATION_RPS: rps}},
                "spec": {
                    "parentRefs": [{"name": "public", "namespace": "infra"}],
                    "rules": [
                        {"backendRefs": [
                            {"name": service, "port": 8080, "weight": weight,
                             **({"namespace": namespace} if namespace else {})}
                            for service, namespace, weight in backends
                        ]}
                    ],
                },
            },
        )  # fmt: skip
    store.create(
        f"grpcroutes.{GW}",
        {
            "apiVersion": GW_V1,
            "kind": "GRPCRoute",
            "metadata": {"name": "ledger", "namespace": "payments"},
            "spec": {
                "parentRefs": [{"name": "public", "namespace": "infra"}],
                "rules": [{"backendRefs": [{"name": "payments-api-primary", "port": 8080}]}],
            },
        },
    )


@dataclass
class Simulated:
    """One sandbox with the Gateway and traffic simulators attached to it one way or the other."""

    server: SandboxApiServer
    client: KubeClient
    view: ClusterView
    gateway: SandboxGateway
    traffic: TrafficSimulator

    def route_status(self, kind: str, name: str) -> list[dict[str, Any]]:
        """status.parents of a route, without the times (they differ between two runs)."""
        plural = "httproutes" if kind == "HTTPRoute" else "grpcroutes"
        route = self.server.store.get(f"{plural}.{GW}", name, "payments")
        return [
            {**parent, "conditions": [_timeless(c) for c in parent["conditions"]]}
            for parent in (route.get("status") or {}).get("parents") or []
        ]

    def attached_routes(self) -> int:
        gateway = self.server.store.get(f"gateways.{GW}", "public", "infra")
        listeners = (gateway.get("status") or {}).get("listeners") or [{}]
        return int(listeners[0].get("attachedRoutes", -1))

    def traffic_counts(self, seconds: float = 10.0) -> dict[tuple[str, ...], int]:
        """Requests by (namespace, route, service, deployment, code) under the current plans."""
        metrics = TrafficMetrics()
        metrics.record(self.traffic.plans, seconds)
        return dict(metrics.requests)

    def picture(self) -> tuple[Any, ...]:
        return (
            self.route_status("HTTPRoute", "payments-api"),
            self.route_status("HTTPRoute", "search"),
            self.route_status("GRPCRoute", "ledger"),
            self.attached_routes(),
            self.traffic_counts(),
        )


def _timeless(condition: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in condition.items() if k != "lastTransitionTime"}


@contextlib.asynccontextmanager
async def simulated(tmp_path: Path, over_http: bool) -> AsyncIterator[Simulated]:
    server = SandboxApiServer(seed=7)
    arrange(server.store)
    await server.start()
    client = await KubeClient.connect(
        str(server.write_kubeconfig(tmp_path / f"kubeconfig-{over_http}")), qps=1000, burst=1000
    )
    api_view = ApiClusterView(client, GATEWAY_AND_TRAFFIC_RESOURCES) if over_http else None
    view: ClusterView = api_view if api_view is not None else StoreView(server.store)
    if api_view is not None:
        await api_view.start(timeout=10)
    gateway = SandboxGateway(view, gateway_recount_delay=0.01)
    traffic = TrafficSimulator(view, tick_interval=3600)
    gateway.start()
    await traffic.start()
    try:
        yield Simulated(server, client, view, gateway, traffic)
    finally:
        await traffic.stop()
        gateway.stop()
        if api_view is not None:
            await api_view.stop()
        await client.close()
        await server.stop()


def accepted(status: list[dict[str, Any]]) -> tuple[str, str] | None:
    for parent in status:
        for condition in parent["conditions"]:
            if condition["type"] == "Accepted":
                return condition["status"], condition["reason"]
    return None


async def settle(run: Simulated, check: Callable[[Simulated], bool]) -> tuple[Any, ...]:
    """The run's picture once ``check`` holds and nothing changed for a moment."""
    await eventually(lambda: check(run))
    while True:
        before = run.picture()
        await asyncio.sleep(0.2)
        if run.picture() == before:
            return before


async def test_over_http_the_simulators_write_the_same_status_and_carry_the_same_traffic(
    tmp_path: Path,
) -> None:
    async with simulated(tmp_path, over_http=False) as local, simulated(tmp_path, over_http=True) as remote:

        def first_look(run: Simulated) -> bool:
            return (
                accepted(run.route_status("HTTPRoute", "payments-api")) == ("True", "Accepted")
                and accepted(run.route_status("GRPCRoute", "ledger")) is not None
                and run.attached_routes() == 2
            )

        here, there = await settle(local, first_look), await settle(remote, first_look)
        assert there == here
        assert accepted(remote.route_status("GRPCRoute", "ledger")) == ("False", "NotAllowedByListeners")
        (search,) = remote.route_status("HTTPRoute", "search")
        resolved = next(c for c in search["conditions"] if c["type"] == "ResolvedRefs")
        assert resolved["reason"] == "RefNotPermitted"
        counts = remote.traffic_counts()
        api = ("payments", "payments-api")
        assert counts[(*api, "payments-api-primary", "payments-api-primary", "200")] == 3200
        assert counts[(*api, "payments-api-canary", "payments-api", "200")] == 600
        assert counts[(*api, "payments-api-canary", "payments-api", "500")] == 200
        assert counts[("payments", "search", "search", "", "500")] == 1000

        for run in (local, remote):  # the same changes, made through the API as kubectl would
            await run.client.patch(
                HTTP_ROUTES, "payments", "payments-api",
                [{"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 80}],
                content_type="application/json-patch+json",
            )  # fmt: skip
            await run.client.create(
                REFERENCE_GRANTS,
                "shared",
                {
                    "apiVersion": f"{GW}/v1beta1",
                    "kind": "ReferenceGrant",
                    "metadata": {"name": "from-payments", "namespace": "shared"},
                    "spec": {"from": [{"group": GW, "kind": "HTTPRoute", "namespace": "payments"}],
                             "to": [{"group": "", "kind": "Service"}]},
                },
            )  # fmt: skip
            await run.client.patch(
                DEPLOYMENTS, "payments", "payments-api",
                {"spec": {"template": {"metadata": {"annotations": {ANNOTATION_ERROR_RATE: None}}}}},
            )  # fmt: skip
            await run.client.delete(SERVICES, "payments", "payments-api-primary")

        def second_look(run: Simulated) -> bool:
            (search,) = run.route_status("HTTPRoute", "search")
            resolved = {c["type"]: c["reason"] for c in search["conditions"]}["ResolvedRefs"]
            counts = run.traffic_counts()
            return resolved == "ResolvedRefs" and (*api, "payments-api-primary", "", "500") in counts

        here, there = await settle(local, second_look), await settle(remote, second_look)
        assert there == here
        (api_status,) = remote.route_status("HTTPRoute", "payments-api")
        resolved = next(c for c in api_status["conditions"] if c["type"] == "ResolvedRefs")
        assert resolved["reason"] == "BackendNotFound"
        counts = remote.traffic_counts()
        assert counts[(*api, "payments-api-primary", "", "500")] == 2000
        assert counts[(*api, "payments-api-canary", "payments-api", "200")] == 2000
        assert counts[("payments", "search", "search", "search", "200")] == 1000
        assert isinstance(remote.view, ApiClusterView)
        assert remote.view.writes > 0, "the remote simulators wrote status"
        assert remote.client.counts.get(("patch", 200), 0) >= remote.view.writes, "and did so over HTTP"
        assert remote.client.counts.get(("watch", 200), 0) >= len(GATEWAY_AND_TRAFFIC_RESOURCES)
