"""Routes as app teams write them, and canaryd's traffic modes, through the controller on the sandbox.

The controller runs in-process against the sandbox cluster (its API server,
Deployment simulator and Gateway), with a scripted analysis that passes, so
what decides each run is the routes and the Canary: every assertion is on
what a user sees in the stored route, the Canary's status and Events, and
``kubectl canary status``.
"""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import datetime
from typing import Any

import pytest

from canaryd.api.constants import Verdict
from canaryd.core.observations import MetricResult
from canaryd.runtime.controller import running_controller
from canaryd.runtime.settings import Settings
from canaryd.sandbox.cluster import SandboxCluster
from tests.cli.test_canaryctl import run_ctl
from tests.runtime import world

NS = "payments"
HTTP = "httproutes.gateway.networking.k8s.io"
GRPC = "grpcroutes.gateway.networking.k8s.io"
METRIC = [{"name": "ok", "query": "vector(1)", "thresholdRange": {"min": 0}}]


class ScriptedAnalysis:
    """Answers every round with ``verdict``; counts the rounds per Canary."""

    def __init__(self) -> None:
        self.verdict = Verdict.PASS
        self.rounds: dict[str, int] = {}

    async def __call__(self, canary: Any, metrics: Any, now: datetime) -> tuple[MetricResult, ...]:
        key = canary.metadata.name
        self.rounds[key] = self.rounds.get(key, 0) + 1
        return tuple(MetricResult(name=m.check.name, verdict=self.verdict, value=1.0) for m in metrics)


@pytest.fixture
async def cluster() -> Any:
    async with SandboxCluster(ready_delay=0.05, tick_interval=0.5) as sandbox:
        world.install_crds(sandbox.store)
        world.install_gateway(sandbox.store)
        sandbox.store.ensure_namespace(NS)
        yield sandbox


def controller(cluster: Any, analysis: ScriptedAnalysis) -> Any:
    settings = Settings(
        kubeconfig=str(cluster.kubeconfig_path), health_address="127.0.0.1:0",
        metrics_address="127.0.0.1:0", prometheus_url="http://127.0.0.1:9", qps=500, burst=1000,
    )  # fmt: skip
    return running_controller(settings, analyzer=analysis)


def payments_route(name: str = "payments-api") -> dict[str, Any]:
    """The seed's payments-api shape: /payments weighted between both Services, /healthz on the primary."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": NS, "annotations": {"sandbox.canaryd.io/rps": "40"}},
        "spec": {
            "parentRefs": [{"name": world.GATEWAY_NAME, "namespace": world.GATEWAY_NAMESPACE}],
            "hostnames": ["payments.example.com"],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/payments"}}],
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"set": [{"name": "x-team", "value": "payments"}]},
                        }
                    ],
                    "backendRefs": [
                        {"name": f"{name}-primary", "port": 8080, "weight": 100},
                        {"name": f"{name}-canary", "port": 8080, "weight": 0},
                    ],
                },
                {
                    "matches": [{"path": {"type": "Exact", "value": "/healthz"}}],
                    "backendRefs": [{"name": f"{name}-primary", "port": 8080}],
                },
            ],
        },
    }


def create_app(store: Any, name: str, route: dict[str, Any], **analysis: Any) -> None:
    store.create("deployments", world.deployment(NS, name))
    store.create(HTTP if route["kind"] == "HTTPRoute" else GRPC, route)
    canary = world.canary(NS, name, interval="1s", metrics=copy.deepcopy(METRIC), route_kind=route["kind"])
    canary["spec"]["analysis"].update(analysis)
    for key in [k for k, v in canary["spec"]["analysis"].items() if v is None]:
        del canary["spec"]["analysis"][key]
    store.create("canaries.canaryd.io", canary)


def stored_route(store: Any, name: str, kind: str = "HTTPRoute") -> dict[str, Any]:
    route: dict[str, Any] = store.get(HTTP if kind == "HTTPRoute" else GRPC, name, NS)
    return route


def phase(store: Any, name: str) -> str | None:
    return world.status(store, NS, name).get("phase")


async def until_phase(store: Any, name: str, wanted: str, timeout: float = 30) -> None:
    await world.wait_until(
        lambda: phase(store, name) == wanted,
        timeout=timeout,
        message=f"{name} in {wanted} (is {phase(store, name)})",
    )


async def ctl_status(cluster: Any, name: str) -> str:
    result = await asyncio.to_thread(
        run_ctl, "--kubeconfig", str(cluster.kubeconfig_path), "-n", NS, "status", name
    )
    assert result.code in (0, 3), result.err
    return result.out


async def test_the_payments_api_shape_runs_and_promotes_with_the_primary_only_rule_unchanged(cluster):
    store = cluster.store
    create_app(store, "payments-api", payments_route())
    recorder = world.WeightRecorder(store, NS, "payments-api")
    health_rules: list[str] = []

    def on_event(event: Any) -> None:
        obj = event.obj
        if event.storage_key[1] == "httproutes" and isinstance(obj, dict):
            health_rules.append(json.dumps(obj["spec"]["rules"][1], sort_keys=True))

    unsubscribe = store.subscribe(on_event)
    async with controller(cluster, ScriptedAnalysis()):
        await until_phase(store, "payments-api", "Initialized")
        written = json.dumps(stored_route(store, "payments-api")["spec"]["rules"][1], sort_keys=True)
        routes_ready = world.condition(store, NS, "payments-api", "RoutesReady")
        assert routes_ready is not None and routes_ready["status"] == "True", routes_ready
        world.new_revision(store, NS, "payments-api", "app:2.0")
        await until_phase(store, "payments-api", "Succeeded")
    unsubscribe()
    recorder.close()
    assert recorder.sequence == [(100, 0), (90, 10), (70, 30), (50, 50), (100, 0)]
    assert set(health_rules) == {written}, "the rule that names only the primary was edited"
    route = stored_route(store, "payments-api")
    assert route["spec"]["rules"][1]["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "payments-api-primary", "port": 8080, "weight": 1}
    ]
    assert route["spec"]["rules"][0]["filters"][0]["requestHeaderModifier"]["set"][0]["value"] == "payments"
    primary = store.get("deployments", "payments-api-primary", NS)
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"] == "app:2.0"


async def test_a_route_canaryd_cannot_weight_never_starts_a_run_and_says_why_at_once(cluster):
    store = cluster.store
    route = payments_route("ledger")
    route["spec"]["rules"][0]["backendRefs"] = [{"name": "ledger-primary", "port": 8080}]
    create_app(store, "ledger", route)
    async with controller(cluster, ScriptedAnalysis()):
        await until_phase(store, "ledger", "Initialized")
        world.new_revision(store, NS, "ledger", "app:2.0")
        progressing = await world.wait_until(
            lambda: (
                (c := world.condition(store, NS, "ledger", "Progressing"))
                and "cannot start" in c["message"]
                and c
            ),
            timeout=10,
            message="Progressing says the revision cannot start",
        )
        assert progressing["status"] == "False"
        assert progressing["reason"] == "RouteMissingBackends"
        assert "has no rule with backendRefs ledger-primary and ledger-canary" in progressing["message"]
        routes_ready = world.condition(store, NS, "ledger", "RoutesReady")
        assert routes_ready is not None
        assert (routes_ready["status"], routes_ready["reason"]) == ("False", "RouteMissingBackends")
        warning = await world.wait_until(
            lambda: [
                e for e in world.events(store, NS, "ledger")
                if e["type"] == "Warning" and e["reason"] == "RouteMissingBackends"
            ],
            timeout=10,
            message="a Warning Event",
        )  # fmt: skip
        assert "ledger-canary" in warning[0]["note"]
        out = await ctl_status(cluster, "ledger")
        line = next(ln for ln in out.splitlines() if ln.strip().startswith("Progressing"))
        assert "cannot start" in line and "ledger-canary" in line
        await asyncio.sleep(2.5)  # several intervals: still no run, no step, no weight moved
        status = world.status(store, NS, "ledger")
        assert status["phase"] == "Initialized"
        assert status.get("step", 0) == 0 and status.get("canaryWeight", 0) == 0
        assert store.get("deployments", "ledger", NS)["spec"]["replicas"] == 0

        # Fixing the route lets the waiting revision start, with nothing restarted.
        fixed = stored_route(store, "ledger")
        fixed["spec"]["rules"][0]["backendRefs"] = [
            {"name": "ledger-primary", "port": 8080, "weight": 100},
            {"name": "ledger-canary", "port": 8080, "weight": 0},
        ]
        store.update(HTTP, fixed, NS)
        await until_phase(store, "ledger", "Succeeded")
