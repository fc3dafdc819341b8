"""An analysis round against a real Prometheus: a metric about the route is judged on every route.

The series are the Envoy Gateway ones in tests.fixtures.prometheus: route
``checkout`` carries the canary's traffic (95 % success), a second route
``ghost`` has no series at all.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryd.api.constants import Verdict
from canaryd.api.models import Canary, MetricCheck, MetricTemplate
from canaryd.runtime.analysis import PrometheusAnalyzer
from canaryd.runtime.metrics import ControllerMetrics
from canaryd.runtime.observe import ResolvedMetric
from canaryd.runtime.settings import Settings
from canaryd.sandbox.prometheus_server import PrometheusServer
from tests.fixtures.prometheus import EXPECTED_CANARY_SUCCESS_PERCENT, QUERY_TIME

ANALYSIS = Path(__file__).resolve().parents[2] / "analysis" / "envoy-gateway.yaml"


def _template() -> MetricTemplate:
    documents = [d for d in yaml.safe_load_all(ANALYSIS.read_text()) if d]
    raw = next(d for d in documents if d["metadata"]["name"] == "envoy-gateway-success-rate")
    return MetricTemplate.model_validate(raw)


def _canary(*routes: str) -> Canary:
    return Canary.model_validate(
        {
            "metadata": {"name": "checkout", "namespace": "shop"},
            "spec": {
                "targetRef": {"name": "checkout"},
                "service": {"port": 8080},
                "routeRefs": [{"kind": "HTTPRoute", "name": name} for name in routes],
                "analysis": {"interval": "1m", "stepWeights": [10, 50]},
            },
        }
    )


async def _round(server: PrometheusServer, minimum: float, *routes: str) -> Any:
    analyzer = PrometheusAnalyzer(
        Settings(prometheus_url=server.url, health_address="0", metrics_address="0"),
        ControllerMetrics(),
        None,  # type: ignore[arg-type]  # no template here reads a Secret, so no cluster is asked
    )
    check = MetricCheck.model_validate(
        {"name": "success-rate", "templateRef": {"name": "envoy-gateway-success-rate"},
         "thresholdRange": {"min": minimum}}
    )  # fmt: skip
    metrics = (ResolvedMetric(check, _template()),)
    try:
        at = datetime.fromtimestamp(QUERY_TIME, UTC)  # the analyzer takes the decision's datetime
        (result,) = await analyzer.analyze(_canary(*routes), metrics, at)
    finally:
        await analyzer.close()
    return result


async def test_one_route_is_judged_as_before(backfilled_prometheus: PrometheusServer) -> None:
    result = await _round(backfilled_prometheus, 90, "checkout")
    assert (result.verdict, result.value) == (Verdict.PASS, pytest.approx(EXPECTED_CANARY_SUCCESS_PERCENT))
    assert not result.message.startswith("route ")


async def test_every_route_is_asked_and_a_route_without_data_holds_the_check(
    backfilled_prometheus: PrometheusServer,
) -> None:
    result = await _round(backfilled_prometheus, 90, "checkout", "ghost")
    assert result.verdict is Verdict.NO_DATA
    assert result.message.startswith("route ghost: the query returned no series")


async def test_a_failure_on_one_route_fails_the_check(backfilled_prometheus: PrometheusServer) -> None:
    result = await _round(backfilled_prometheus, 99, "ghost", "checkout")
    assert (result.verdict, result.value) == (Verdict.FAIL, pytest.approx(EXPECTED_CANARY_SUCCESS_PERCENT))
    assert result.message == "route checkout: 95 is below the minimum 99"
