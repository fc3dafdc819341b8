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
        # The default view's Ready line says what is wrong, in up to three lines.
        ready = out[out.index("Ready:") :].splitlines()[:3]
        assert "RouteMissingBackends" in ready[0]
        assert "ledger-canary" in " ".join(ready)
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


# -- A/B testing ---------------------------------------------------------------------------------------------

AB = {
    "stepWeights": None,
    "match": [{"headers": [{"name": "x-canary", "value": "insider"}]}],
}


def rule_names(store: Any, name: str) -> list[str | None]:
    return [r.get("name") for r in stored_route(store, name)["spec"]["rules"]]


def flows(cluster: Any, name: str) -> dict[str, float]:
    """The sandbox data plane's split of the route's requests: deployment -> share."""
    plan = next(
        p
        for p in cluster.traffic.plans
        if p.flows and p.flows[0].route == name and p.flows[0].namespace == NS
    )
    split: dict[str, float] = {}
    for flow in plan.flows:
        key = flow.deployment or f"gateway {flow.gateway_code}"
        key = f"{key} (mirrored)" if flow.mirrored else key
        split[key] = split.get(key, 0.0) + flow.share
    return split


async def ab_running(cluster: Any, name: str) -> dict[str, Any]:
    """Wait for the A/B rule to be on the route; return the route at that moment."""
    store = cluster.store
    await until_phase(store, name, "Initialized")
    world.new_revision(store, NS, name, "app:2.0")
    await world.wait_until(
        lambda: rule_names(store, name)[0] == "abtest-0.canaryd.io", timeout=10, message="the A/B rule added"
    )
    return stored_route(store, name)


async def test_ab_testing_sends_matching_requests_to_the_canary_only_and_takes_its_rule_away_on_promotion(
    cluster,
):
    store = cluster.store
    route = payments_route()
    route["metadata"]["annotations"]["sandbox.canaryd.io/header-share"] = "0.25"
    create_app(store, "payments-api", route, iterations=3, **AB)
    analysis = ScriptedAnalysis()
    recorder = world.WeightRecorder(store, NS, "payments-api")
    async with controller(cluster, analysis):
        await until_phase(store, "payments-api", "Initialized")
        as_written = stored_route(store, "payments-api")["spec"]
        during = await ab_running(cluster, "payments-api")
        rules = during["spec"]["rules"]
        assert [r.get("name") for r in rules] == ["abtest-0.canaryd.io", None, None]
        (match,) = rules[0]["matches"]  # the weighted rule's path and the Canary's header, combined
        assert match["path"] == {"type": "PathPrefix", "value": "/payments"}
        assert [(h["name"], h.get("type", "Exact"), h["value"]) for h in match["headers"]] == [
            ("x-canary", "Exact", "insider")
        ]
        assert [ref["name"] for ref in rules[0]["backendRefs"]] == ["payments-api-canary"]
        assert rules[0]["filters"] == as_written["rules"][0]["filters"]  # the team's filter applies too
        assert rules[1:] == as_written["rules"], "the team's rules changed"
        # The data plane: the header's share goes to the canary, every other request to the primary.
        split = await world.wait_until(
            lambda: (s := flows(cluster, "payments-api")).get("payments-api") and s, timeout=10
        )
        assert split == pytest.approx({"payments-api": 0.25, "payments-api-primary": 0.75})
        status = await world.wait_until(  # the status reports the route as the controller saw it last
            lambda: (s := world.status(store, NS, "payments-api")).get("traffic", {}).get("routes") and s,
            timeout=10,
            message="status.traffic.routes",
        )
        assert status["traffic"]["mode"] == "ABTest"
        assert status["traffic"]["routes"] == [
            {
                "kind": "HTTPRoute",
                "name": "payments-api",
                "addedRules": ["abtest-0.canaryd.io"],
                "mirror": False,
                "setsCookie": False,
            }
        ]
        await until_phase(store, "payments-api", "Succeeded")
        assert analysis.rounds["payments-api"] >= 3
    recorder.close()
    assert recorder.sequence == [(100, 0)], "A/B testing moved weights"
    assert stored_route(store, "payments-api")["spec"] == as_written
    assert flows(cluster, "payments-api") == pytest.approx({"payments-api-primary": 1.0})
    primary = store.get("deployments", "payments-api-primary", NS)
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"] == "app:2.0"


@pytest.mark.parametrize("way_out", ["rollback", "abort", "deletion"])
async def test_every_way_out_of_an_ab_run_takes_canaryds_rule_away(cluster, way_out):
    store = cluster.store
    create_app(store, "checkout", payments_route("checkout"), iterations=20, threshold=2, **AB)
    analysis = ScriptedAnalysis()
    async with controller(cluster, analysis):
        await until_phase(store, "checkout", "Initialized")
        as_written = stored_route(store, "checkout")["spec"]
        await ab_running(cluster, "checkout")
        if way_out == "rollback":
            analysis.verdict = Verdict.FAIL
        elif way_out == "abort":
            result = await asyncio.to_thread(
                run_ctl, "--kubeconfig", str(cluster.kubeconfig_path), "-n", NS, "abort", "checkout"
            )
            assert result.code == 0, result.err
        else:
            store.delete("canaries.canaryd.io", "checkout", NS)
        if way_out == "deletion":
            await world.wait_until(lambda: world.find(store, "canaries.canaryd.io", NS, "checkout") is None)
        else:
            await until_phase(store, "checkout", "Failed")
        await world.wait_until(
            lambda: stored_route(store, "checkout")["spec"] == as_written,
            timeout=10,
            message="the route back as the team wrote it",
        )
        if way_out != "deletion":
            await world.wait_until(
                lambda: not world.status(store, NS, "checkout").get("traffic", {}).get("routes"),
                timeout=10,
                message="status says nothing of canaryd's is left on the route",
            )


async def test_an_ab_run_survives_a_controller_restart_without_a_second_rule_or_a_rewrite(cluster):
    store = cluster.store
    create_app(store, "wallet", payments_route("wallet"), iterations=6, **AB)
    analysis = ScriptedAnalysis()
    async with controller(cluster, analysis):
        await until_phase(store, "wallet", "Initialized")
        as_written = stored_route(store, "wallet")["spec"]
        during = await ab_running(cluster, "wallet")
        await world.wait_until(lambda: world.status(store, NS, "wallet").get("step", 0) >= 2, timeout=10)
    stopped_at = world.status(store, NS, "wallet")
    assert stopped_at["phase"] == "Progressing"
    version = stored_route(store, "wallet")["metadata"]["resourceVersion"]
    assert stored_route(store, "wallet")["spec"] == during["spec"]
    async with controller(cluster, analysis):
        await world.wait_until(
            lambda: world.status(store, NS, "wallet").get("step", 0) > stopped_at["step"], timeout=10
        )
        assert stored_route(store, "wallet")["metadata"]["resourceVersion"] == version, (
            "the restarted controller rewrote the route"
        )
        await until_phase(store, "wallet", "Succeeded")
    assert rule_names(store, "wallet") == [None, None]
    assert stored_route(store, "wallet")["spec"] == as_written


# -- mirroring and session affinity --------------------------------------------------------------------------


class RouteHistory:
    """Every version of a route's rules the API server stored, from the store's change feed."""

    def __init__(self, store: Any, name: str) -> None:
        self.versions: list[list[dict[str, Any]]] = []
        self._name = name
        self._unsubscribe = store.subscribe(self._on_event)

    def _on_event(self, event: Any) -> None:
        obj = event.obj
        if event.storage_key[1] != "httproutes" or not isinstance(obj, dict):
            return
        if obj["metadata"]["name"] == self._name and obj["metadata"]["namespace"] == NS:
            rules = copy.deepcopy(obj["spec"]["rules"])
            if not self.versions or self.versions[-1] != rules:
                self.versions.append(rules)

    def close(self) -> None:
        self._unsubscribe()


def weighted_rule(rules: list[dict[str, Any]]) -> dict[str, Any]:
    return next(r for r in rules if not r.get("name") and len(r["backendRefs"]) == 2)


def weights_of(rules: list[dict[str, Any]]) -> tuple[int, int]:
    refs = weighted_rule(rules)["backendRefs"]
    return refs[0].get("weight", 1), refs[1].get("weight", 1)


def mirrors(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in weighted_rule(rules).get("filters") or [] if f["type"] == "RequestMirror"]


async def test_a_mirror_phase_copies_requests_to_the_canary_before_weights_move_and_is_gone_when_they_do(
    cluster,
):
    store = cluster.store
    create_app(
        store, "payments-api", payments_route(), iterations=2, mirror={"percent": 50}, stepWeights=[20, 60]
    )
    history = RouteHistory(store, "payments-api")
    async with controller(cluster, ScriptedAnalysis()):
        await until_phase(store, "payments-api", "Initialized")
        as_written = stored_route(store, "payments-api")["spec"]
        world.new_revision(store, NS, "payments-api", "app:2.0")
        mirrored = await world.wait_until(
            lambda: (
                (s := world.status(store, NS, "payments-api")).get("traffic", {}).get("mode") == "Mirror"
                and (s.get("traffic", {}).get("routes") or [{}])[0].get("mirror")
                and s
            ),
            timeout=10,
            message="status says the route mirrors to the canary",
        )
        assert mirrored["traffic"]["mirrorPercent"] == 50
        # The sandbox data plane: users are answered by the primary alone, the canary gets copies of half.
        split = await world.wait_until(
            lambda: (s := flows(cluster, "payments-api")).get("payments-api (mirrored)") and s, timeout=10
        )
        assert split == pytest.approx({"payments-api-primary": 1.0, "payments-api (mirrored)": 0.5})
        await until_phase(store, "payments-api", "Succeeded")
    history.close()
    with_mirror = [v for v in history.versions if mirrors(v)]
    assert with_mirror, "the mirror filter never reached the route"
    (mirror,) = mirrors(with_mirror[0])
    assert mirror["requestMirror"]["backendRef"]["name"] == "payments-api-canary"
    assert mirror["requestMirror"]["percent"] == 50
    assert weighted_rule(with_mirror[0])["filters"][0] == as_written["rules"][0]["filters"][0]
    assert all(weights_of(v) == (100, 0) for v in with_mirror), "weights moved while mirroring"
    weights = [weights_of(v) for v in history.versions]
    assert [w for i, w in enumerate(weights) if i == 0 or w != weights[i - 1]] == [
        (100, 0),
        (80, 20),
        (40, 60),
        (100, 0),
    ]
    assert stored_route(store, "payments-api")["spec"] == as_written


async def test_a_rollback_during_the_mirror_phase_takes_the_mirror_away(cluster):
    store = cluster.store
    analysis = ScriptedAnalysis()
    create_app(
        store, "refunds", payments_route("refunds"), iterations=20, threshold=1, mirror={}, stepWeights=[50]
    )
    async with controller(cluster, analysis):
        await until_phase(store, "refunds", "Initialized")
        as_written = stored_route(store, "refunds")["spec"]
        world.new_revision(store, NS, "refunds", "app:2.0")
        await world.wait_until(lambda: mirrors(stored_route(store, "refunds")["spec"]["rules"]), timeout=10)
        assert "percent" not in mirrors(stored_route(store, "refunds")["spec"]["rules"])[0]["requestMirror"]
        analysis.verdict = Verdict.FAIL
        await until_phase(store, "refunds", "Failed")
        await world.wait_until(lambda: stored_route(store, "refunds")["spec"] == as_written, timeout=10)


async def test_sticky_sessions_set_a_cookie_on_the_canarys_responses_and_keep_its_clients_until_the_run_ends(
    cluster,
):
    store = cluster.store
    analysis = ScriptedAnalysis()
    create_app(
        store, "cart", payments_route("cart"), stepWeights=[20, 40, 60], threshold=1,
        sessionAffinity={"cookieName": "canary-session", "maxAge": "1h"},
    )  # fmt: skip
    history = RouteHistory(store, "cart")
    async with controller(cluster, analysis):
        await until_phase(store, "cart", "Initialized")
        as_written = stored_route(store, "cart")["spec"]
        world.new_revision(store, NS, "cart", "app:2.0")
        await world.wait_until(
            lambda: weights_of(stored_route(store, "cart")["spec"]["rules"]) == (60, 40), 15
        )
        revision = world.status(store, NS, "cart")["revision"]
        rules = stored_route(store, "cart")["spec"]["rules"]
        assert [r.get("name") for r in rules] == ["sticky-0.canaryd.io", None, None]
        sticky = rules[0]
        assert [ref["name"] for ref in sticky["backendRefs"]] == ["cart-canary"]
        (match,) = sticky["matches"]
        assert match["path"] == {"type": "PathPrefix", "value": "/payments"}
        (cookie,) = match["headers"]
        assert cookie["name"] == "Cookie" and cookie["type"] == "RegularExpression"
        assert f"canary-session={revision}" in cookie["value"].replace("\\", "")
        canary_ref = rules[1]["backendRefs"][1]
        assert canary_ref["filters"] == [
            {
                "type": "ResponseHeaderModifier",
                "responseHeaderModifier": {
                    "add": [
                        {"name": "Set-Cookie", "value": f"canary-session={revision}; Max-Age=3600; Path=/"}
                    ]
                },
            }
        ]
        status = await world.wait_until(
            lambda: (s := world.status(store, NS, "cart")).get("traffic", {}).get("routes") and s, timeout=10
        )
        assert status["traffic"]["sessionCookie"] == f"canary-session={revision}"
        assert status["traffic"]["routes"][0]["setsCookie"] is True
        assert status["traffic"]["routes"][0]["addedRules"] == ["sticky-0.canaryd.io"]
        # A rollback pins everyone back to the primary: the rule that kept the cookie's clients is gone.
        analysis.verdict = Verdict.FAIL
        await until_phase(store, "cart", "Failed")
        await world.wait_until(lambda: stored_route(store, "cart")["spec"] == as_written, timeout=10)
    history.close()
    at_zero = [v for v in history.versions if weights_of(v) == (100, 0)]
    assert all(len(v) == 2 for v in at_zero), "canaryd's sticky rule was on the route at weight 0"


async def test_a_route_that_cannot_take_the_ab_rule_never_starts_a_run_and_says_which_and_why(cluster):
    store = cluster.store
    route = payments_route("quotes")
    route["spec"]["rules"][0]["matches"] = [
        {"path": {"type": "PathPrefix", "value": "/quotes"}, "method": "GET"}
    ]
    create_app(store, "quotes", route, iterations=3, stepWeights=None, match=[{"method": "POST"}])
    async with controller(cluster, ScriptedAnalysis()):
        await until_phase(store, "quotes", "Initialized")
        routes_ready = world.condition(store, NS, "quotes", "RoutesReady")
        assert routes_ready is not None
        assert (routes_ready["status"], routes_ready["reason"]) == ("False", "TrafficModeUnsupported")
        assert "HTTPRoute quotes cannot take canaryd's A/B testing: rule 0" in routes_ready["message"]
        world.new_revision(store, NS, "quotes", "app:2.0")
        progressing = await refused_start(store, "quotes")
        assert progressing["reason"] == "TrafficModeUnsupported"
        await world.wait_until(
            lambda: any(
                e["type"] == "Warning" and e["reason"] == "TrafficModeUnsupported"
                for e in world.events(store, NS, "quotes")
            ),
            timeout=10,
            message="a Warning Event",
        )
        await asyncio.sleep(2)
        assert world.status(store, NS, "quotes")["phase"] == "Initialized"
        assert [r.get("name") for r in stored_route(store, "quotes")["spec"]["rules"]] == [None, None]


def list_class_features(store: Any, names: list[str]) -> None:
    """Write the sandbox GatewayClass's status.supportedFeatures, as an implementation publishes them."""
    resource = "gatewayclasses.gateway.networking.k8s.io"
    gateway_class = store.get(resource, world.GATEWAY_CLASS)
    gateway_class.setdefault("status", {})["supportedFeatures"] = [{"name": n} for n in names]
    store.update_status(resource, gateway_class)


async def test_a_mirror_canary_on_a_gateway_whose_class_cannot_mirror_never_starts_nor_edits_the_route(
    cluster,
):
    store = cluster.store
    list_class_features(store, ["Gateway", "HTTPRoute", "GRPCRoute", "ReferenceGrant"])
    route = payments_route("ledger")
    create_app(store, "ledger", route, iterations=3, stepWeights=[50], mirror={"percent": 100})
    async with controller(cluster, ScriptedAnalysis()):
        await until_phase(store, "ledger", "Initialized")
        as_written = json.dumps(stored_route(store, "ledger")["spec"], sort_keys=True)
        world.new_revision(store, NS, "ledger", "app:2.0")
        progressing = await refused_start(store, "ledger")
        assert progressing["reason"] == "MirrorUnsupported"
        ready = world.condition(store, NS, "ledger", "Ready")
        routes_ready = world.condition(store, NS, "ledger", "RoutesReady")
        assert ready is not None and routes_ready is not None
        for reported in (ready, routes_ready):
            assert (reported["status"], reported["reason"]) == ("False", "MirrorUnsupported")
            assert (
                f"HTTPRoute ledger: Gateway {world.GATEWAY_NAMESPACE}/{world.GATEWAY_NAME} "
                f"(GatewayClass {world.GATEWAY_CLASS}) does not support HTTPRouteRequestMirror"
            ) in reported["message"]
        await asyncio.sleep(2)  # several passes later: still no run, the route as written
        assert phase(store, "ledger") == "Initialized"
        assert json.dumps(stored_route(store, "ledger")["spec"], sort_keys=True) == as_written
        warnings = [e for e in world.events(store, NS, "ledger") if e["type"] == "Warning"]
        assert [e["reason"] for e in warnings] == ["MirrorUnsupported"], warnings
        shown = await asyncio.to_thread(
            run_ctl, "--kubeconfig", str(cluster.kubeconfig_path), "-n", NS, "status", "ledger"
        )
        assert shown.code == 0, shown.err
        [line] = [line for line in shown.out.splitlines() if line.lstrip().startswith("Ready")]
        assert "False (MirrorUnsupported): HTTPRoute ledger: Gateway" in line, shown.out
        print(f"\nkubectl canary status ledger:\n{shown.out}")

        # The Gateway is upgraded and its class now lists mirroring: the run starts, with the mirror.
        list_class_features(store, ["Gateway", "HTTPRoute", "HTTPRouteRequestMirror"])
        await world.wait_until(
            lambda: any(
                f["type"] == "RequestMirror"
                for f in stored_route(store, "ledger")["spec"]["rules"][0]["filters"]
            ),
            timeout=15,
            message="canaryd's mirror filter once the class lists HTTPRouteRequestMirror",
        )
        await until_phase(store, "ledger", "Succeeded", timeout=60)
        assert json.dumps(stored_route(store, "ledger")["spec"], sort_keys=True) == as_written


async def refused_start(store, name: str) -> dict:
    """The Progressing condition once it says the new revision's run cannot start."""
    return await world.wait_until(
        lambda: (
            (c := world.condition(store, NS, name, "Progressing")) and "cannot start" in c["message"] and c
        ),
        timeout=10,
    )
