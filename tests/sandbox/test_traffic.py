"""The sandbox traffic simulator: weighted splits, outcomes from annotations, metrics Prometheus reads."""

from __future__ import annotations

import math
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from canaryd.sandbox.cluster import SandboxCluster
from canaryd.sandbox.server.store import ObjectStore
from canaryd.sandbox.sim.gateway import CONTROLLER_NAME, GatewayWorld
from canaryd.sandbox.sim.knobs import ANNOTATION_ERROR_RATE, ANNOTATION_LATENCY_MS, ANNOTATION_RPS
from canaryd.sandbox.sim.traffic import (
    ANNOTATION_HEADER_SHARE,
    DURATION_BUCKETS,
    LATENCY_MULTIPLIERS,
    Flow,
    RoutePlan,
    TrafficMetrics,
    TrafficSimulator,
    TrafficWorld,
    flows_by_series,
    plan_traffic,
    render_text,
)
from canaryd.sandbox.store_view import StoreView
from tests.fixtures.waiting import eventually

GW = "gateway.networking.k8s.io"
ACCEPTED_STATUS = {
    "parents": [
        {
            "parentRef": {"name": "public"},
            "controllerName": CONTROLLER_NAME,
            "conditions": [
                {
                    "type": "Accepted",
                    "status": "True",
                    "reason": "Accepted",
                    "message": "",
                    "lastTransitionTime": "2026-05-01T10:00:00Z",
                }
            ],
        }
    ]
}


def deployment(
    name: str,
    *,
    ready: int = 2,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    labels = labels or {"app": name}
    return {
        "metadata": {"name": name, "namespace": "payments"},
        "spec": {
            "replicas": ready,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations or {}},
                "spec": {"containers": [{"name": "app", "image": "x:1"}]},
            },
        },
        "status": {"readyReplicas": ready} if ready else {},
    }


def service(name: str, selector: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "payments"}, "spec": {"selector": selector}}


def route(
    rules: list[dict[str, Any]],
    *,
    rps: str | None = "100",
    accepted: bool = True,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    all_annotations = dict(annotations or {})
    if rps is not None:
        all_annotations[ANNOTATION_RPS] = rps
    r: dict[str, Any] = {
        "metadata": {"name": "payments-api", "namespace": "payments", "annotations": all_annotations},
        "spec": {"parentRefs": [{"name": "public"}], "rules": rules},
    }
    if accepted:
        r["status"] = ACCEPTED_STATUS
    return r


def canary_rule(primary: int | None = 80, canary: int | None = 20) -> dict[str, Any]:
    refs: list[dict[str, Any]] = [
        {"name": "payments-api-primary", "port": 8080},
        {"name": "payments-api-canary", "port": 8080},
    ]
    for ref, weight in zip(refs, (primary, canary), strict=True):
        if weight is not None:
            ref["weight"] = weight
    return {"backendRefs": refs}


def world(*deployments: dict[str, Any], services: list[dict[str, Any]] | None = None) -> TrafficWorld:
    if services is None:
        services = [
            service("payments-api-primary", {"app": "payments-api-primary"}),
            service("payments-api-canary", {"app": "payments-api"}),
        ]
    if not deployments:
        deployments = (deployment("payments-api-primary"), deployment("payments-api"))
    return TrafficWorld(
        gateway=GatewayWorld(services={("payments", s["metadata"]["name"]): s for s in services}),
        deployments={"payments": {d["metadata"]["name"]: d for d in deployments}},
    )


def rates(
    r: dict[str, Any], w: TrafficWorld | None = None, kind: str = "HTTPRoute"
) -> dict[tuple[str, str], float]:
    """(service, deployment) -> requests per second."""
    plans = plan_traffic([(kind, r)], w or world())
    return {(s, d): round(rate, 9) for (_, _, s, d), rate in flows_by_series(plans).items()}


def codes(plans: list[RoutePlan]) -> dict[tuple[str, str], str | None]:
    return {(f.service, f.deployment): f.gateway_code for p in plans for f in p.flows}


# --------------------------------------------------------------------------- the split


def test_weights_split_the_route_rate_between_the_deployments_behind_the_services() -> None:
    assert rates(route([canary_rule(80, 20)])) == {
        ("payments-api-primary", "payments-api-primary"): 80.0,
        ("payments-api-canary", "payments-api"): 20.0,
    }


def test_weight_defaults_to_one_and_zero_weight_gets_nothing() -> None:
    assert rates(route([canary_rule(None, None)])) == {
        ("payments-api-primary", "payments-api-primary"): 50.0,
        ("payments-api-canary", "payments-api"): 50.0,
    }
    assert rates(route([canary_rule(100, 0)])) == {("payments-api-primary", "payments-api-primary"): 100.0}


def test_grpc_routes_carry_traffic_too_and_rps_defaults_to_twenty() -> None:
    assert sum(rates(route([canary_rule()], rps=None), kind="GRPCRoute").values()) == 20.0


def test_only_accepted_routes_carry_traffic() -> None:
    assert plan_traffic([("HTTPRoute", route([canary_rule()], accepted=False))], world()) == []
    refused = route([canary_rule()])
    refused["status"] = {
        "parents": [
            {
                **ACCEPTED_STATUS["parents"][0],
                "conditions": [{"type": "Accepted", "status": "False", "reason": "NotAllowedByListeners"}],
            }
        ]
    }
    assert plan_traffic([("HTTPRoute", refused)], world()) == []
    foreign = route([canary_rule()])
    foreign["status"] = {
        "parents": [{**ACCEPTED_STATUS["parents"][0], "controllerName": "example.com/other"}]
    }
    assert plan_traffic([("HTTPRoute", foreign)], world()) == []


def test_gateway_answers_itself_when_backends_are_missing_unready_or_all_weights_zero() -> None:
    w = world(deployment("payments-api-primary"), deployment("payments-api", ready=0))
    plans = plan_traffic([("HTTPRoute", route([canary_rule(50, 50)]))], w)
    assert codes(plans) == {
        ("payments-api-primary", "payments-api-primary"): None,
        ("payments-api-canary", ""): "503",
    }
    no_service = world(services=[service("payments-api-primary", {"app": "payments-api-primary"})])
    assert (
        codes(plan_traffic([("HTTPRoute", route([canary_rule(50, 50)]))], no_service))[
            ("payments-api-canary", "")
        ]
        == "500"
    )
    assert codes(plan_traffic([("HTTPRoute", route([canary_rule(0, 0)]))], world())) == {("", ""): "500"}


def test_service_endpoints_split_by_ready_replicas_across_selected_deployments() -> None:
    stable = deployment("web-v1", ready=3, labels={"app": "web", "version": "v1"})
    preview = deployment("web-v2", ready=1, labels={"app": "web", "version": "v2"})
    unrelated = deployment("other", ready=5, labels={"app": "other"})
    w = world(stable, preview, unrelated, services=[service("web", {"app": "web"})])
    r = route([{"backendRefs": [{"name": "web", "port": 80}]}])
    assert rates(r, w) == {("web", "web-v1"): 75.0, ("web", "web-v2"): 25.0}


def test_header_matching_rule_gets_the_configured_share_of_requests() -> None:
    header_rule = {
        "matches": [{"headers": [{"name": "x-canary", "value": "always"}]}],
        "backendRefs": [{"name": "payments-api-canary", "port": 8080}],
    }
    r = route([header_rule, canary_rule(100, 0)], annotations={ANNOTATION_HEADER_SHARE: "0.3"})
    assert rates(r) == {
        ("payments-api-primary", "payments-api-primary"): 70.0,
        ("payments-api-canary", "payments-api"): 30.0,
    }
    only_headers = route([header_rule])
    plans = plan_traffic([("HTTPRoute", only_headers)], world())
    assert codes(plans) == {("", ""): "404", ("payments-api-canary", "payments-api"): None}
    assert rates(only_headers) == {("", ""): 90.0, ("payments-api-canary", "payments-api"): 10.0}


def test_a_request_mirror_copies_a_share_of_the_rules_requests_to_its_service_and_answers_nothing() -> None:
    mirrored = canary_rule(100, 0)
    mirror_ref = {"name": "payments-api-canary", "port": 8080}
    mirrored["filters"] = [
        {"type": "RequestMirror", "requestMirror": {"backendRef": mirror_ref, "percent": 40}}
    ]
    plans = plan_traffic([("HTTPRoute", route([mirrored]))], world())
    answered = [f for p in plans for f in p.flows if not f.mirrored]
    copies = [f for p in plans for f in p.flows if f.mirrored]
    assert sum(f.share for f in answered) == pytest.approx(1.0)
    assert [(f.service, f.deployment, f.share) for f in answered] == [
        ("payments-api-primary", "payments-api-primary", 1.0)
    ]
    assert [(f.service, f.deployment, f.share) for f in copies] == [
        ("payments-api-canary", "payments-api", 0.4)
    ]
    assert rates(route([mirrored])) == {
        ("payments-api-primary", "payments-api-primary"): 100.0,
        ("payments-api-canary", "payments-api"): 40.0,
    }
    # A fraction works like a percent; a mirror that does not resolve or has no endpoints costs nothing.
    mirrored["filters"][0]["requestMirror"] = {
        "backendRef": mirror_ref,
        "fraction": {"numerator": 1, "denominator": 4},
    }
    assert rates(route([mirrored]))[("payments-api-canary", "payments-api")] == 25.0
    unready = world(deployment("payments-api-primary"), deployment("payments-api", ready=0))
    assert codes(plan_traffic([("HTTPRoute", route([mirrored]))], unready)) == {
        ("payments-api-primary", "payments-api-primary"): None
    }
    mirrored["filters"][0]["requestMirror"] = {"backendRef": {"name": "nowhere", "port": 80}}
    assert rates(route([mirrored])) == {("payments-api-primary", "payments-api-primary"): 100.0}


def test_outcomes_come_from_the_pod_template_annotations() -> None:
    bad = deployment(
        "payments-api", annotations={ANNOTATION_ERROR_RATE: "0.25", ANNOTATION_LATENCY_MS: "400"}
    )
    plans = plan_traffic(
        [("HTTPRoute", route([canary_rule()]))], world(deployment("payments-api-primary"), bad)
    )
    flows = {f.deployment: f for p in plans for f in p.flows}
    assert (flows["payments-api"].error_rate, flows["payments-api"].latency_ms) == (0.25, 400.0)
    assert (flows["payments-api-primary"].error_rate, flows["payments-api-primary"].latency_ms) == (0.0, 20.0)


# --------------------------------------------------------------------------- exact accounting


def plan(rps: float, *flows: Flow) -> list[RoutePlan]:
    return [RoutePlan(rps, flows)]


def test_counts_are_exact_even_with_fractional_requests_per_tick() -> None:
    metrics = TrafficMetrics()
    flows = (
        Flow("payments", "r", "primary", "p", 0.8),
        Flow("payments", "r", "canary", "c", 0.2, error_rate=0.25),
    )
    for _ in range(1000):  # 10 s in ticks of 10 ms: 0.2 canary requests per tick
        metrics.record(plan(100, *flows), 0.01)
    assert metrics.requests == {
        ("payments", "r", "primary", "p", "200"): 800,
        ("payments", "r", "canary", "c", "200"): 150,
        ("payments", "r", "canary", "c", "500"): 50,
    }


def test_latency_histogram_has_the_configured_mean_and_a_bounded_tail() -> None:
    metrics = TrafficMetrics()
    metrics.record(plan(1000, Flow("ns", "r", "s", "d", 1.0, latency_ms=40)), 1.0)
    histogram = metrics.durations[("ns", "r", "s", "d")]
    assert histogram.count == 1000
    assert math.isclose(histogram.total / histogram.count, 0.040, rel_tol=1e-9)
    cumulative = 0
    p99_bucket = None
    for bound, count in zip(DURATION_BUCKETS, histogram.bucket_counts, strict=False):
        cumulative += count
        if p99_bucket is None and cumulative >= 990:
            p99_bucket = bound
    assert p99_bucket == 0.075  # p99 ~ 1.8 x the 40 ms mean
    assert max(LATENCY_MULTIPLIERS) < 2.0


def test_metrics_exposition_uses_the_contract_names_and_labels() -> None:
    metrics = TrafficMetrics()
    metrics.record(
        plan(10, Flow("payments", "payments-api", "payments-api-canary", "payments-api", 1.0)), 1.0
    )
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    text = generate_latest(registry).decode()
    assert (
        'canaryd_sandbox_requests_total{code="200",deployment="payments-api",namespace="payments",'
        'route="payments-api",service="payments-api-canary"} 10.0'
    ) in text
    assert (
        'canaryd_sandbox_request_duration_seconds_bucket{deployment="payments-api",le="+Inf",'
        'namespace="payments",route="payments-api",service="payments-api-canary"} 10.0'
    ) in text
    assert 'le="0.005"' in text and 'le="5.0"' in text
    assert "canaryd_sandbox_request_duration_seconds_count" in text


def test_fast_exposition_is_identical_to_prometheus_client_output() -> None:
    metrics = TrafficMetrics()
    flows = (
        Flow("payments", "payments-api", "payments-api-primary", "payments-api-primary", 0.7, latency_ms=12),
        Flow("payments", "payments-api", "payments-api-canary", "", 0.2, gateway_code="503"),
        Flow("odd", 'quote"back\\slash\nnewline', "s", "d", 0.1, error_rate=0.3, latency_ms=900),
    )
    for _ in range(7):
        metrics.record(plan(1_234_567, *flows), 1.3)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    assert render_text(metrics) == generate_latest(registry)


# --------------------------------------------------------------------------- through a real Prometheus


def populate(store: ObjectStore) -> None:
    store.ensure_namespace("payments")
    store.create(
        f"gatewayclasses.{GW}",
        {
            "apiVersion": f"{GW}/v1",
            "kind": "GatewayClass",
            "metadata": {"name": "sandbox"},
            "spec": {"controllerName": CONTROLLER_NAME},
        },
    )
    store.create(
        f"gateways.{GW}",
        {
            "apiVersion": f"{GW}/v1",
            "kind": "Gateway",
            "metadata": {"name": "public", "namespace": "payments"},
            "spec": {
                "gatewayClassName": "sandbox",
                "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
            },
        },
    )
    bad = {ANNOTATION_ERROR_RATE: "0.25", ANNOTATION_LATENCY_MS: "40"}
    for name, template_annotations in (("payments-api-primary", {}), ("payments-api", bad)):
        body = deployment(name, annotations=template_annotations)
        del body["status"]
        store.create("deployments", body)
    for name, app in (
        ("payments-api-primary", "payments-api-primary"),
        ("payments-api-canary", "payments-api"),
    ):
        store.create(
            "services",
            {
                "metadata": {"name": name, "namespace": "payments"},
                "spec": {"selector": {"app": app}, "ports": [{"port": 8080}]},
            },
        )
    body = route([canary_rule(80, 20)], rps="400", accepted=False)
    store.create(f"httproutes.{GW}", body)


def plan_rates(traffic: TrafficSimulator) -> dict[tuple[str, str, str], float]:
    return {(ns, s, d): round(rate, 6) for (ns, _, s, d), rate in flows_by_series(traffic.plans).items()}


async def test_simulator_replans_when_routes_services_deployments_or_grants_change() -> None:
    store = ObjectStore()
    store.ensure_namespace("payments")
    store.ensure_namespace("shared")
    traffic = TrafficSimulator(StoreView(store))
    await traffic.start()
    try:
        store.create(
            "deployments", {**deployment("backend"), "metadata": {"name": "backend", "namespace": "shared"}}
        )
        store.create(
            "services",
            {
                "metadata": {"name": "backend", "namespace": "shared"},
                "spec": {"selector": {"app": "backend"}, "ports": [{"port": 80}]},
            },
        )
        body = route(
            [{"backendRefs": [{"name": "backend", "namespace": "shared", "port": 80}]}],
            rps="10",
            accepted=False,
        )
        store.create(f"httproutes.{GW}", body)
        assert traffic.plans == []  # not accepted yet
        current = store.get(f"httproutes.{GW}", "payments-api", "payments")
        store.update_status(f"httproutes.{GW}", {"metadata": current["metadata"], "status": ACCEPTED_STATUS})
        assert plan_rates(traffic) == {("payments", "backend", ""): 10.0}  # 500: no ReferenceGrant
        assert codes(traffic.plans) == {("backend", ""): "500"}
        store.create(
            f"referencegrants.{GW}",
            {
                "metadata": {"name": "from-payments", "namespace": "shared"},
                "spec": {
                    "from": [{"group": GW, "kind": "HTTPRoute", "namespace": "payments"}],
                    "to": [{"group": "", "kind": "Service"}],
                },
            },
        )
        assert codes(traffic.plans) == {("backend", ""): "503"}  # permitted, but no ready pods yet
        store.update_status(
            "deployments",
            {"metadata": {"name": "backend", "namespace": "shared"}, "status": {"readyReplicas": 2}},
            "shared",
        )
        assert codes(traffic.plans) == {("backend", "backend"): None}
        store.patch(
            "deployments",
            "backend",
            {"spec": {"template": {"metadata": {"annotations": {ANNOTATION_ERROR_RATE: "0.5"}}}}},
            "shared",
        )
        assert [f.error_rate for p in traffic.plans for f in p.flows] == [0.5]
        store.delete("services", "backend", "shared")
        assert codes(traffic.plans) == {("backend", ""): "500"}
        store.delete(f"httproutes.{GW}", "payments-api", "payments")
        assert traffic.plans == []
    finally:
        await traffic.stop()


@pytest.mark.prometheus
async def test_real_prometheus_sees_the_weighted_split_and_the_error_share(prometheus_binary: str) -> None:
    async with SandboxCluster(
        with_prometheus=True, scrape_interval=0.1, ready_delay=0.0, tick_interval=0.05
    ) as cluster:
        populate(cluster.store)
        prometheus = cluster.prometheus
        assert prometheus is not None

        def query(promql: str) -> dict[str, float]:
            result = prometheus.query(promql)["result"]
            return {"/".join(sample["metric"].values()): float(sample["value"][1]) for sample in result}

        by_service = 'sum by (service) (rate(canaryd_sandbox_requests_total{route="payments-api"}[1s]))'
        # wait until the 1 s window is full of 0.1 s scrapes, so rate() needs no extrapolation
        full_window = 'min(count_over_time(canaryd_sandbox_requests_total{route="payments-api"}[1s]))'
        await eventually(lambda: next(iter(query(full_window).values()), 0) >= 10, timeout=15)
        split = query(by_service)
        ratio = split["payments-api-primary"] / split["payments-api-canary"]
        assert ratio == pytest.approx(4.0, rel=0.1)
        assert split["payments-api-primary"] + split["payments-api-canary"] == pytest.approx(400, rel=0.15)

        error_share = query(
            'sum(rate(canaryd_sandbox_requests_total{service="payments-api-canary",code=~"5.."}[1s]))'
            ' / sum(rate(canaryd_sandbox_requests_total{service="payments-api-canary"}[1s]))'
        )
        assert list(error_share.values()) == [pytest.approx(0.25, abs=0.05)]
        primary_errors = query(
            'sum(rate(canaryd_sandbox_requests_total{service="payments-api-primary",code=~"5.."}[1s]))'
        )
        assert primary_errors in ({}, {"": 0.0})

        p99 = query(
            "histogram_quantile(0.99, sum by (le) (rate(canaryd_sandbox_request_duration_seconds_bucket"
            '{deployment="payments-api"}[1s])))'
        )
        assert 0.05 < next(iter(p99.values())) <= 0.075
