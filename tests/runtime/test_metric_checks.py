"""A comparison metric checked against a real Prometheus: both sides queried, judged, explained.

The backfilled dataset holds the sandbox simulator's series for the canary
(10 requests/s, 5 % failing, p99 125 ms) and the primary (20 requests/s, no
failure, p99 49.5 ms) of Deployment ``checkout`` in namespace ``shop``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryd.adapters.prometheus import PrometheusEndpoint, PrometheusQuerier
from canaryd.api.constants import Classification, CompareJudge, Verdict
from canaryd.api.models import Canary, MetricTemplate
from canaryd.runtime.metric_checks import run_comparison, run_threshold
from canaryd.sandbox.prometheus_server import PrometheusServer, free_loopback_port
from tests.fixtures.prometheus import QUERY_TIME

NOW = datetime.fromtimestamp(QUERY_TIME, UTC)
TEMPLATES = {
    doc["metadata"]["name"]: MetricTemplate.model_validate(doc)
    for doc in yaml.safe_load_all((Path(__file__).parents[2] / "analysis" / "sandbox.yaml").read_text())
    if doc
}
RATE = (
    'sum(rate(canaryd_sandbox_requests_total{namespace="{{ namespace }}", service="{{ service }}"}'
    "[{{ interval }}]))"
)


def _canary(metric: dict[str, Any], started: datetime | None = None) -> Canary:
    status = {"runStartedAt": started.isoformat()} if started else {}
    return Canary.model_validate(
        {
            "metadata": {"name": "checkout", "namespace": "shop"},
            "spec": {
                "targetRef": {"name": "checkout"},
                "service": {"port": 8080},
                "routeRefs": [{"name": "checkout"}],
                "analysis": {"interval": "1m", "stepWeights": [10, 50], "metrics": [metric]},
            },
            "status": status,
        }
    )


@pytest.fixture
async def querier() -> AsyncIterator[PrometheusQuerier]:
    querier = PrometheusQuerier(max_in_flight=4, retries=0)
    yield querier
    querier.close()


async def _check(querier: PrometheusQuerier, server: PrometheusServer, metric: dict[str, Any],
                 started: datetime | None = None):  # type: ignore[no-untyped-def]  # fmt: skip
    canary = _canary(metric, started)
    check = canary.spec.analysis.metrics[0]
    template = TEMPLATES.get(check.template_ref.name) if check.template_ref else None
    return await run_comparison(querier, PrometheusEndpoint(server.url), canary, check, template, NOW)


def _templated(name: str, **compare: Any) -> dict[str, Any]:
    return {"name": name, "templateRef": {"name": name}, "compare": compare, "interval": "5m"}


async def test_the_fixed_sample_judge_fails_a_canary_with_more_errors_than_the_primary(
    backfilled_prometheus: PrometheusServer, querier: PrometheusQuerier
) -> None:
    result = await _check(querier, backfilled_prometheus, _templated("error-rate", resolution="15s"))
    assert result.verdict is Verdict.FAIL
    assert result.comparison is not None
    assert result.comparison.classification is Classification.HIGH
    assert result.comparison.canary == pytest.approx(5.0) and result.comparison.primary == pytest.approx(0.0)
    assert result.comparison.canary_samples == result.comparison.primary_samples == 20
    assert result.comparison.shift is None  # no relative shift over a primary at 0 %


async def test_the_sequential_judge_fails_it_from_the_counts_since_the_run_started(
    backfilled_prometheus: PrometheusServer, querier: PrometheusQuerier
) -> None:
    result = await _check(
        querier, backfilled_prometheus,
        {"name": "error-rate", "templateRef": {"name": "error-rate"},
         "compare": {"judge": "Sequential", "resolution": "15s"}},
        started=NOW - timedelta(minutes=2),
    )  # fmt: skip
    assert result.verdict is Verdict.FAIL
    assert result.comparison is not None and result.comparison.judge is CompareJudge.SEQUENTIAL
    assert result.comparison.canary_samples == 8  # 2 minutes of 15 s windows
    assert "60/1200 vs 0/2400 events" in result.message


async def test_latency_is_compared_window_by_window(
    backfilled_prometheus: PrometheusServer, querier: PrometheusQuerier
) -> None:
    result = await _check(querier, backfilled_prometheus, _templated("latency-p99", resolution="15s"))
    assert result.verdict is Verdict.FAIL
    assert result.comparison is not None
    assert result.comparison.canary == pytest.approx(125.0)
    assert result.comparison.primary == pytest.approx(49.5)
    assert result.comparison.shift == pytest.approx(125 / 49.5 - 1)


async def test_direction_says_which_way_is_bad(
    backfilled_prometheus: PrometheusServer, querier: PrometheusQuerier
) -> None:
    """The canary serves 10 requests/s, the primary 20: fine for "increase is bad", not for "decrease"."""
    metric = {"name": "throughput", "query": RATE, "interval": "5m", "compare": {"resolution": "15s"}}
    assert (await _check(querier, backfilled_prometheus, metric)).verdict is Verdict.PASS
    metric["compare"] = {"resolution": "15s", "direction": "decrease"}
    lower = await _check(querier, backfilled_prometheus, metric)
    assert lower.verdict is Verdict.FAIL
    assert lower.comparison is not None and lower.comparison.classification is Classification.LOW
    assert lower.comparison.shift == pytest.approx(-0.5)


async def test_a_canary_without_series_is_no_data_and_an_unreachable_prometheus_an_error(
    backfilled_prometheus: PrometheusServer, querier: PrometheusQuerier
) -> None:
    ghost = _canary(_templated("error-rate")).model_copy(deep=True)
    document = ghost.model_dump(by_alias=True, mode="json")
    document["spec"]["targetRef"]["name"] = "ghost"
    ghost = Canary.model_validate(document)
    check = ghost.spec.analysis.metrics[0]
    endpoint = PrometheusEndpoint(backfilled_prometheus.url)
    missing = await run_comparison(querier, endpoint, ghost, check, TEMPLATES["error-rate"], NOW)
    assert missing.verdict is Verdict.NO_DATA
    down = PrometheusEndpoint(f"http://127.0.0.1:{free_loopback_port()}", timeout=1)
    canary = _canary(_templated("error-rate"))
    error = await run_comparison(
        querier, down, canary, canary.spec.analysis.metrics[0], TEMPLATES["error-rate"], NOW
    )
    assert error.verdict is Verdict.ERROR and "unreachable" in error.message


async def test_a_threshold_metric_checks_the_canary_alone(
    backfilled_prometheus: PrometheusServer, querier: PrometheusQuerier
) -> None:
    canary = _canary({"name": "success-rate", "templateRef": {"name": "success-rate"},
                      "thresholdRange": {"min": 99}})  # fmt: skip
    result = await run_threshold(
        querier, PrometheusEndpoint(backfilled_prometheus.url), canary, canary.spec.analysis.metrics[0],
        TEMPLATES["success-rate"], NOW,
    )  # fmt: skip
    assert (result.verdict, result.value) == (Verdict.FAIL, pytest.approx(95.0))
