"""Range queries (for comparison metrics) against a real Prometheus: points, gaps, no data, errors."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from canaryd.adapters.prometheus import PrometheusEndpoint, PrometheusQuerier, QueryObservation
from canaryd.core.promql import NoData, NoDataReason, QueryError, QueryErrorKind, RangeSeries
from canaryd.sandbox.prometheus_server import PrometheusServer, free_loopback_port
from tests.fixtures.prometheus import QUERY_TIME

END = datetime.fromtimestamp(QUERY_TIME, UTC)
STEP = timedelta(seconds=15)


@pytest.fixture
async def querier() -> AsyncIterator[tuple[PrometheusQuerier, list[QueryObservation]]]:
    seen: list[QueryObservation] = []
    querier = PrometheusQuerier(max_in_flight=4, retries=1, backoff_seconds=0.01, on_query=seen.append)
    yield querier, seen
    querier.close()


async def test_a_rate_over_each_step_comes_back_point_by_point(
    backfilled_prometheus: PrometheusServer, querier: tuple[PrometheusQuerier, list[QueryObservation]]
) -> None:
    client, seen = querier
    result = await client.query_range(
        PrometheusEndpoint(backfilled_prometheus.url),
        'sum(increase(canaryd_sandbox_requests_total{namespace="shop", service="checkout-canary"}[15s]))',
        start=END - STEP * 9,
        end=END,
        step=STEP,
    )
    assert isinstance(result, RangeSeries)
    assert [t for t, _ in result.points] == [QUERY_TIME - 15 * i for i in range(9, -1, -1)]
    # 10 requests/s, sampled every 15 s: each 15 s window holds 150 requests.
    assert all(v == pytest.approx(150.0) for _, v in result.points)
    assert seen[-1].outcome == "value"


async def test_a_ratio_without_traffic_is_nan_at_each_point_and_no_series_is_no_data(
    backfilled_prometheus: PrometheusServer, querier: tuple[PrometheusQuerier, list[QueryObservation]]
) -> None:
    client, _ = querier
    endpoint = PrometheusEndpoint(backfilled_prometheus.url)
    idle = await client.query_range(
        endpoint,
        'sum(rate(canaryd_sandbox_requests_total{service="idle-canary", code="500"}[15s]) or vector(0))'
        ' / sum(rate(canaryd_sandbox_requests_total{service="idle-canary"}[15s]))',
        start=END - STEP * 3,
        end=END,
        step=STEP,
    )
    assert isinstance(idle, RangeSeries) and all(math.isnan(v) for _, v in idle.points)
    ghost = await client.query_range(
        endpoint, 'sum(rate(canaryd_sandbox_requests_total{service="ghost"}[15s]))',
        start=END - STEP * 3, end=END, step=STEP,
    )  # fmt: skip
    assert ghost == NoData(NoDataReason.EMPTY)


async def test_several_series_and_bad_queries_are_errors(
    backfilled_prometheus: PrometheusServer, querier: tuple[PrometheusQuerier, list[QueryObservation]]
) -> None:
    client, _ = querier
    endpoint = PrometheusEndpoint(backfilled_prometheus.url)
    several = await client.query_range(
        endpoint, 'canaryd_test_gauge{case="pair"}', start=END - STEP, end=END, step=STEP
    )
    assert isinstance(several, QueryError) and several.kind is QueryErrorKind.UNEXPECTED_SHAPE
    assert "2 series" in several.message
    bad = await client.query_range(endpoint, "sum(rate(x[5m]", start=END - STEP, end=END, step=STEP)
    assert isinstance(bad, QueryError) and bad.kind is QueryErrorKind.BAD_QUERY


async def test_an_unreachable_prometheus_is_an_error_after_the_retries(
    querier: tuple[PrometheusQuerier, list[QueryObservation]],
) -> None:
    client, seen = querier
    endpoint = PrometheusEndpoint(f"http://127.0.0.1:{free_loopback_port()}", timeout=2)
    result = await client.query_range(endpoint, "up", start=END - STEP, end=END, step=STEP)
    assert isinstance(result, QueryError) and result.kind is QueryErrorKind.UNREACHABLE
    assert "after 2 attempts" in result.message
    assert seen[-1].attempts == 2
