"""The Prometheus adapter against a real Prometheus: exact values, no data, errors, outages, retries."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from canaryd.adapters.prometheus import PrometheusEndpoint, PrometheusQuerier, QueryObservation
from canaryd.core.promql import NoData, NoDataReason, QueryError, QueryErrorKind, Value
from canaryd.sandbox.prometheus_server import PrometheusServer
from tests.fixtures.prometheus import QUERY_TIME, PrometheusFactory, gauge


@pytest.fixture
def observations() -> list[QueryObservation]:
    return []


@pytest.fixture
async def querier(observations: list[QueryObservation]) -> AsyncIterator[PrometheusQuerier]:
    querier = PrometheusQuerier(
        max_in_flight=4,
        retries=2,
        backoff_seconds=0.01,
        max_backoff_seconds=0.05,
        on_query=observations.append,
    )
    yield querier
    querier.close()


def _endpoint(server: PrometheusServer, **kwargs: object) -> PrometheusEndpoint:
    return PrometheusEndpoint(server.url, **kwargs)  # type: ignore[arg-type]


async def test_exact_value_at_a_fixed_time(
    backfilled_prometheus: PrometheusServer, querier: PrometheusQuerier
) -> None:
    endpoint = _endpoint(backfilled_prometheus)

    assert await querier.query(endpoint, 'canaryd_test_gauge{case="one"}', at=QUERY_TIME) == Value(42.5)
    as_datetime = datetime.fromtimestamp(QUERY_TIME, tz=UTC)
    total = await querier.query(
        endpoint,
        'sum(rate(canaryd_sandbox_requests_total{namespace="shop", service="checkout-canary"}[1m]))',
        at=as_datetime,
    )
    assert isinstance(total, Value) and total.value == pytest.approx(10.0, rel=1e-9)


async def test_without_a_time_the_query_runs_now(
    backfilled_prometheus: PrometheusServer, querier: PrometheusQuerier
) -> None:
    # The backfilled samples are years old, so "now" finds nothing.
    result = await querier.query(_endpoint(backfilled_prometheus), 'canaryd_test_gauge{case="one"}')

    assert result == NoData(NoDataReason.EMPTY)


@pytest.mark.parametrize(
    ("promql", "expected"),
    [
        ('canaryd_test_gauge{case="absent"}', NoData(NoDataReason.EMPTY)),
        ('canaryd_test_gauge{case="nan"}', NoData(NoDataReason.NAN)),
        ('canaryd_test_gauge{case="posinf"}', Value(math.inf)),
        ('canaryd_test_gauge{case="neginf"}', Value(-math.inf)),
        # An idle canary: 0 requests / 0 requests.
        (
            'sum(rate(canaryd_sandbox_requests_total{service="idle-canary", code!~"5.."}[1m]))'
            ' / sum(rate(canaryd_sandbox_requests_total{service="idle-canary"}[1m]))',
            NoData(NoDataReason.NAN),
        ),
        ('scalar(canaryd_test_gauge{case="one"})', Value(42.5)),
    ],
)
async def test_no_data_answers_are_typed(
    backfilled_prometheus: PrometheusServer, querier: PrometheusQuerier, promql: str, expected: object
) -> None:
    assert await querier.query(_endpoint(backfilled_prometheus), promql, at=QUERY_TIME) == expected


@pytest.mark.parametrize(
    ("promql", "status"),
    [
        ("sum(rate(canaryd_sandbox_requests_total[1m]", 400),
        # Parses, but cannot be executed: many-to-many matching.
        ('canaryd_test_gauge{case="pair"} + on(case) canaryd_test_gauge{case="pair"}', 422),
    ],
)
async def test_bad_queries_are_reported_and_not_retried(
    backfilled_prometheus: PrometheusServer,
    querier: PrometheusQuerier,
    observations: list[QueryObservation],
    promql: str,
    status: int,
) -> None:
    result = await querier.query(_endpoint(backfilled_prometheus), promql, at=QUERY_TIME)

    assert isinstance(result, QueryError)
    assert (result.kind, result.status) == (QueryErrorKind.BAD_QUERY, status)
    assert "parse error" in result.message or "many-to-many" in result.message
    assert observations[-1].attempts == 1
    assert observations[-1].outcome == "bad_query"


@pytest.mark.parametrize(
    "promql",
    ['canaryd_test_gauge{case="pair"}', 'canaryd_test_gauge{case="one"}[1m]'],
)
async def test_several_series_or_a_range_are_unexpected_shapes(
    backfilled_prometheus: PrometheusServer, querier: PrometheusQuerier, promql: str
) -> None:
    result = await querier.query(_endpoint(backfilled_prometheus), promql, at=QUERY_TIME)

    assert isinstance(result, QueryError)
    assert result.kind is QueryErrorKind.UNEXPECTED_SHAPE


async def test_prometheus_stopped_mid_run_is_unreachable_after_retries(
    prometheus_factory: PrometheusFactory,
    querier: PrometheusQuerier,
    observations: list[QueryObservation],
) -> None:
    server = prometheus_factory(series=[gauge("up_before_outage", {}, 1.0)])
    endpoint = _endpoint(server)
    assert await querier.query(endpoint, "up_before_outage", at=QUERY_TIME) == Value(1.0)

    server.stop()
    result = await querier.query(endpoint, "up_before_outage", at=QUERY_TIME)

    assert isinstance(result, QueryError)
    assert result.kind is QueryErrorKind.UNREACHABLE
    assert "after 3 attempts" in result.message
    assert observations[-1].attempts == 3
    assert observations[-1].server == endpoint.server


async def test_latency_is_reported_per_query(
    backfilled_prometheus: PrometheusServer, querier: PrometheusQuerier, observations: list[QueryObservation]
) -> None:
    started = time.perf_counter()
    await querier.query(_endpoint(backfilled_prometheus), 'canaryd_test_gauge{case="one"}', at=QUERY_TIME)
    elapsed = time.perf_counter() - started

    (observation,) = observations
    assert observation.outcome == "value"
    assert 0 < observation.seconds <= elapsed


async def test_many_concurrent_queries_all_answer_exactly(
    backfilled_prometheus: PrometheusServer, querier: PrometheusQuerier
) -> None:
    endpoint = _endpoint(backfilled_prometheus)

    results = await asyncio.gather(
        *(querier.query(endpoint, 'canaryd_test_gauge{case="one"}', at=QUERY_TIME) for _ in range(40))
    )

    assert results == [Value(42.5)] * 40
    assert 1 <= querier.max_in_flight_seen(endpoint.server) <= 4
    assert querier.in_flight(endpoint.server) == 0
