"""analysis/sandbox.yaml on live data: simulated traffic, scraped by the sandbox Prometheus, judged.

This checks the contract between the traffic simulator's series and the
sandbox templates end to end: a canary given a 20 % error rate and 100 ms
latency reads as about 80 % success and a p99 near 180 ms, while the primary
beside it reads as 100 % and about 18 ms.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from canaryd.adapters.prometheus import PrometheusEndpoint, PrometheusQuerier
from canaryd.api.models import MetricTemplate
from canaryd.core.promql import QueryResult, Value, analysis_variables, render
from canaryd.sandbox.cluster import SandboxCluster
from canaryd.sandbox.sim.knobs import ANNOTATION_ERROR_RATE, ANNOTATION_LATENCY_MS, ANNOTATION_RPS

pytestmark = [pytest.mark.e2e, pytest.mark.prometheus]

GW = "gateway.networking.k8s.io"
SANDBOX_YAML = Path(__file__).resolve().parents[2] / "analysis" / "sandbox.yaml"


def _templates() -> dict[str, MetricTemplate]:
    docs = [MetricTemplate.model_validate(d) for d in yaml.safe_load_all(SANDBOX_YAML.read_text()) if d]
    return {t.metadata.name: t for t in docs}


def _deployment(name: str, annotations: dict[str, str]) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": f"{name}:1"}]},
            },
        },
    }


def _service(name: str, app: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": app}, "ports": [{"port": 8080}]},
    }


@pytest.fixture
async def live_sandbox(prometheus_binary: str) -> AsyncIterator[SandboxCluster]:
    async with SandboxCluster(
        with_prometheus=True,
        scrape_interval=0.2,
        ready_delay=0.0,
        tick_interval=0.05,
        gateway_class="canaryd-sandbox",
    ) as cluster:
        api = await k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig_path))
        async with api:
            core, apps = k8s_client.CoreV1Api(api), k8s_client.AppsV1Api(api)
            custom = k8s_client.CustomObjectsApi(api)
            await core.create_namespace({"metadata": {"name": "shop"}})
            await apps.create_namespaced_deployment(
                "shop", _deployment("checkout", {ANNOTATION_ERROR_RATE: "0.2", ANNOTATION_LATENCY_MS: "100"})
            )
            await apps.create_namespaced_deployment(
                "shop", _deployment("checkout-primary", {ANNOTATION_LATENCY_MS: "10"})
            )
            await core.create_namespaced_service("shop", _service("checkout-canary", "checkout"))
            await core.create_namespaced_service("shop", _service("checkout-primary", "checkout-primary"))
            gateway = {
                "apiVersion": f"{GW}/v1",
                "kind": "Gateway",
                "metadata": {"name": "public", "namespace": "shop"},
                "spec": {
                    "gatewayClassName": "canaryd-sandbox",
                    "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
                },
            }
            route = {
                "apiVersion": f"{GW}/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": "checkout", "namespace": "shop", "annotations": {ANNOTATION_RPS: "200"}},
                "spec": {
                    "parentRefs": [{"name": "public"}],
                    "rules": [
                        {
                            "backendRefs": [
                                {"name": "checkout-primary", "port": 8080, "weight": 50},
                                {"name": "checkout-canary", "port": 8080, "weight": 50},
                            ]
                        }
                    ],
                },
            }
            await custom.create_namespaced_custom_object(GW, "v1", "shop", "gateways", gateway)
            await custom.create_namespaced_custom_object(GW, "v1", "shop", "httproutes", route)
        yield cluster


async def _eventually_value(
    querier: PrometheusQuerier, url: str, template: MetricTemplate, service: str
) -> QueryResult:
    variables = analysis_variables(
        namespace="shop", target="checkout", service=service, route="checkout", interval="3s"
    )
    promql = render(template.spec.query, variables)
    deadline = asyncio.get_running_loop().time() + 30
    result: QueryResult
    while True:
        result = await querier.query(PrometheusEndpoint(url), promql)
        if isinstance(result, Value) or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(0.3)


async def test_sandbox_templates_read_the_simulated_traffic(live_sandbox: SandboxCluster) -> None:
    templates = _templates()
    url = live_sandbox.prometheus_url
    assert url is not None
    querier = PrometheusQuerier(retries=0)
    try:
        # Wait for a full 3s window of scrapes before reading the figures.
        await _eventually_value(querier, url, templates["success-rate"], "checkout-canary")
        await asyncio.sleep(3.5)
        canary_success = await _eventually_value(querier, url, templates["success-rate"], "checkout-canary")
        primary_success = await _eventually_value(querier, url, templates["success-rate"], "checkout-primary")
        canary_p99 = await _eventually_value(querier, url, templates["latency-p99"], "checkout-canary")
        primary_p99 = await _eventually_value(querier, url, templates["latency-p99"], "checkout-primary")
    finally:
        querier.close()

    assert isinstance(canary_success, Value) and canary_success.value == pytest.approx(80.0, abs=2.5)
    # A ratio of two rates: 100 up to float rounding (99.99999999999999 was seen).
    assert isinstance(primary_success, Value) and primary_success.value == pytest.approx(100.0)
    # Log-normal latencies with p99 about 1.8x the mean, read through the simulator's buckets.
    assert isinstance(canary_p99, Value) and 150.0 <= canary_p99.value <= 200.0
    assert isinstance(primary_p99, Value) and 10.0 <= primary_p99.value <= 25.0
