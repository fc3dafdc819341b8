"""Every MetricTemplate in analysis/ renders with canaryd's variables and answers right on real series.

The series in tests.fixtures.prometheus are shaped like each data plane's
(same metric and label names, the canary beside its primary), so a template
that selects the wrong labels, forgets to filter the primary out or turns
"no traffic" into 0 % fails here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryd.adapters.prometheus import PrometheusEndpoint, PrometheusQuerier
from canaryd.api.models import MetricTemplate
from canaryd.core.promql import (
    BUILTIN_VARIABLES,
    NoData,
    NoDataReason,
    QueryResult,
    Value,
    analysis_variables,
    placeholders,
    render,
)
from canaryd.sandbox.prometheus_server import PrometheusServer
from tests.fixtures.prometheus import (
    EXPECTED_CANARY_P99_MS,
    EXPECTED_CANARY_SUCCESS_PERCENT,
    EXPECTED_MESH_P99_MS,
    QUERY_TIME,
)

ANALYSIS_DIR = Path(__file__).resolve().parents[2] / "analysis"

#: (file, template) -> the value its query must return for the "checkout" canary in namespace "shop".
EXPECTED = {
    ("sandbox.yaml", "success-rate"): EXPECTED_CANARY_SUCCESS_PERCENT,
    ("sandbox.yaml", "latency-p99"): EXPECTED_CANARY_P99_MS,
    ("sandbox.yaml", "error-rate"): 100 - EXPECTED_CANARY_SUCCESS_PERCENT,
    ("app-metrics.yaml", "app-success-rate"): EXPECTED_CANARY_SUCCESS_PERCENT,
    ("app-metrics.yaml", "app-latency-p99"): EXPECTED_CANARY_P99_MS,
    ("app-metrics.yaml", "app-error-rate"): 100 - EXPECTED_CANARY_SUCCESS_PERCENT,
    ("envoy-gateway.yaml", "envoy-gateway-success-rate"): EXPECTED_CANARY_SUCCESS_PERCENT,
    ("envoy-gateway.yaml", "envoy-gateway-latency-p99"): EXPECTED_MESH_P99_MS,
    ("istio.yaml", "istio-success-rate"): EXPECTED_CANARY_SUCCESS_PERCENT,
    ("istio.yaml", "istio-latency-p99"): EXPECTED_MESH_P99_MS,
    ("traefik.yaml", "traefik-success-rate"): EXPECTED_CANARY_SUCCESS_PERCENT,
    ("traefik.yaml", "traefik-latency-p99"): EXPECTED_CANARY_P99_MS,
    # The canary's share of the route's requests to its two Services: 10 of 30 per second.
    ("sandbox.yaml", "traffic-share"): 100 * 10 / 30,
    ("traefik.yaml", "traefik-traffic-share"): 100 * 10 / 30,
    ("envoy-gateway.yaml", "envoy-gateway-traffic-share"): 100 * 10 / 50,
    ("istio.yaml", "istio-traffic-share"): 100 * 10 / 40,
}


def _load() -> dict[tuple[str, str], MetricTemplate]:
    templates: dict[tuple[str, str], MetricTemplate] = {}
    for path in sorted(ANALYSIS_DIR.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                template = MetricTemplate.model_validate(document)
                templates[(path.name, template.metadata.name)] = template
    return templates


TEMPLATES = _load()


def _variables(template: MetricTemplate, **builtins: Any) -> dict[str, str]:
    """What the controller passes for the canary of Deployment ``target`` behind ``route``."""
    target = builtins.get("target", "checkout")
    return analysis_variables(
        namespace=builtins.get("namespace", "shop"),
        target=target,
        service=builtins.get("service", f"{target}-canary"),
        route=builtins.get("route", "checkout"),
        interval=builtins.get("interval", "1m"),
        template_defaults=template.spec.variables,
        overrides=builtins.get("overrides"),
    )


@pytest.fixture
async def querier() -> AsyncIterator[PrometheusQuerier]:
    querier = PrometheusQuerier(max_in_flight=4, retries=0)
    yield querier
    querier.close()


async def _run(
    querier: PrometheusQuerier, server: PrometheusServer, template: MetricTemplate, **builtins: Any
) -> QueryResult:
    promql = render(template.spec.query, _variables(template, **builtins))
    return await querier.query(PrometheusEndpoint(server.url), promql, at=QUERY_TIME)


def test_every_template_file_is_covered_and_names_are_unique() -> None:
    assert set(TEMPLATES) == set(EXPECTED)
    names = [name for _, name in TEMPLATES]
    assert len(names) == len(set(names))
    assert all(t.metadata.namespace == "canaryd-system" for t in TEMPLATES.values())


def test_the_sandbox_file_holds_the_contracted_templates() -> None:
    sandbox = {name: t for (file, name), t in TEMPLATES.items() if file == "sandbox.yaml"}
    assert sandbox["success-rate"].spec.unit == "percent"
    assert sandbox["latency-p99"].spec.unit == "milliseconds"


@pytest.mark.parametrize("path", sorted(ANALYSIS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_each_file_documents_the_labels_it_relies_on(path: Path) -> None:
    header = path.read_text().split("apiVersion:", 1)[0]
    assert "relied on" in header.lower()
    assert "kubectl apply -f analysis/" in header


@pytest.mark.parametrize("key", sorted(TEMPLATES), ids=lambda k: k[1])
def test_templates_use_only_variables_canaryd_or_the_template_provides(key: tuple[str, str]) -> None:
    template = TEMPLATES[key]
    known = set(BUILTIN_VARIABLES) | set(template.spec.variables)

    assert set(placeholders(template.spec.query)) <= known
    assert "{{" not in render(template.spec.query, _variables(template))


@pytest.mark.parametrize("key", sorted(TEMPLATES), ids=lambda k: k[1])
async def test_templates_return_the_canarys_value(
    key: tuple[str, str], backfilled_prometheus: PrometheusServer, querier: PrometheusQuerier
) -> None:
    result = await _run(querier, backfilled_prometheus, TEMPLATES[key])

    assert isinstance(result, Value), result
    assert result.value == pytest.approx(EXPECTED[key], rel=1e-9)


@pytest.mark.parametrize("key", sorted(TEMPLATES), ids=lambda k: k[1])
async def test_a_canary_without_series_is_no_data(
    key: tuple[str, str], backfilled_prometheus: PrometheusServer, querier: PrometheusQuerier
) -> None:
    result = await _run(querier, backfilled_prometheus, TEMPLATES[key], target="ghost", route="ghost")

    assert result == NoData(NoDataReason.EMPTY)


async def test_sandbox_success_rate_without_traffic_is_no_data_and_all_failures_are_zero(
    backfilled_prometheus: PrometheusServer, querier: PrometheusQuerier
) -> None:
    success = TEMPLATES[("sandbox.yaml", "success-rate")]
    latency = TEMPLATES[("sandbox.yaml", "latency-p99")]

    idle = await _run(querier, backfilled_prometheus, success, target="idle", service="idle-canary")
    idle_latency = await _run(querier, backfilled_prometheus, latency, target="idle", service="idle-canary")
    broken = await _run(querier, backfilled_prometheus, success, target="broken", service="broken-canary")

    assert idle == NoData(NoDataReason.NAN)
    assert idle_latency == NoData(NoDataReason.NAN)
    assert broken == Value(0.0)


async def test_sandbox_templates_see_only_the_service_they_are_given(
    backfilled_prometheus: PrometheusServer, querier: PrometheusQuerier
) -> None:
    success = TEMPLATES[("sandbox.yaml", "success-rate")]
    latency = TEMPLATES[("sandbox.yaml", "latency-p99")]

    primary_success = await _run(querier, backfilled_prometheus, success, service="checkout-primary")
    primary_latency = await _run(querier, backfilled_prometheus, latency, service="checkout-primary")
    other_namespace = await _run(querier, backfilled_prometheus, success, namespace="other")

    assert primary_success == Value(100.0)
    assert isinstance(primary_latency, Value) and primary_latency.value == pytest.approx(49.5)
    assert other_namespace == Value(100.0)


async def test_a_user_variable_cannot_widen_the_selection(
    backfilled_prometheus: PrometheusServer, querier: PrometheusQuerier
) -> None:
    template = TEMPLATES[("envoy-gateway.yaml", "envoy-gateway-success-rate")]
    injected = '1", envoy_cluster_name=~".+'

    result = await _run(querier, backfilled_prometheus, template, overrides={"backend_index": injected})

    assert result == NoData(NoDataReason.EMPTY)


async def test_a_custom_status_label_is_honoured(
    backfilled_prometheus: PrometheusServer, querier: PrometheusQuerier
) -> None:
    template = TEMPLATES[("app-metrics.yaml", "app-success-rate")]

    # The app series have a `method` label too: counting "non-5xx methods" means counting everything.
    result = await _run(querier, backfilled_prometheus, template, overrides={"code_label": "method"})

    assert result == Value(100.0)


COMPARISON_TEMPLATES = [("sandbox.yaml", "error-rate"), ("app-metrics.yaml", "app-error-rate")]


@pytest.mark.parametrize("key", COMPARISON_TEMPLATES, ids=lambda k: k[1])
async def test_comparison_templates_measure_each_side_and_count_its_events(
    key: tuple[str, str], backfilled_prometheus: PrometheusServer, querier: PrometheusQuerier
) -> None:
    """Rendered for the primary they see the primary's traffic; their counts are the window's events."""
    template = TEMPLATES[key]
    assert template.spec.counts is not None
    primary = {"service": "checkout-primary", "workload": "checkout-primary"}
    primary_value = await _run_with(querier, backfilled_prometheus, template.spec.query, template, **primary)
    assert primary_value == Value(0.0)
    endpoint = PrometheusEndpoint(backfilled_prometheus.url)
    canary_vars = _variables(template)
    counts = template.spec.counts
    total = await querier.query(endpoint, render(counts.total, canary_vars), at=QUERY_TIME)
    matching = await querier.query(endpoint, render(counts.matching, canary_vars), at=QUERY_TIME)
    assert isinstance(total, Value) and total.value == pytest.approx(600.0)  # 10 requests/s over 1m
    assert isinstance(matching, Value) and matching.value == pytest.approx(30.0)  # 5 % of them


async def _run_with(querier: PrometheusQuerier, server: PrometheusServer, query: str,
                    template: MetricTemplate, service: str, workload: str) -> QueryResult:  # fmt: skip
    variables = analysis_variables(
        namespace="shop", target="checkout", service=service, workload=workload, route="checkout",
        interval="1m", template_defaults=template.spec.variables,
    )  # fmt: skip
    return await querier.query(PrometheusEndpoint(server.url), render(query, variables), at=QUERY_TIME)
