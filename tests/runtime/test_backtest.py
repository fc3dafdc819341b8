"""``canaryd backtest``'s replay on a few generated runs written into a real Prometheus.

The runs come from tests.fixtures.scenarios (the bench's corpus generator):
a healthy canary and one with ten times the errors at 100 requests/s, a bad
day that hits both sides alike, and no traffic at all. Each is replayed with
fixed thresholds, the Mann-Whitney judge and the sequential judge, exactly as
``canaryd backtest`` and the bench replay them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from canaryd.adapters.prometheus import PrometheusQuerier
from canaryd.api.constants import Verdict
from canaryd.api.models import Canary, MetricTemplate
from canaryd.runtime.backtest import BacktestInputError, BacktestResult, endpoint_factory, replay
from canaryd.sandbox.prometheus_server import PrometheusServer, free_loopback_port
from tests.fixtures.scenarios import JUDGES, RUN_MINUTES, judged_canary, openmetrics, reduced_corpus

START_STAMP = 1_700_000_040
START = datetime.fromtimestamp(START_STAMP, UTC)
END = START + timedelta(minutes=RUN_MINUTES)
SCENARIOS = {s.name: s for s in reduced_corpus()}
TEMPLATES = {
    (doc["metadata"]["namespace"], doc["metadata"]["name"]): MetricTemplate.model_validate(doc)
    for doc in yaml.safe_load_all((Path(__file__).parents[2] / "analysis" / "sandbox.yaml").read_text())
    if doc
}


@pytest.fixture(scope="module")
def corpus_prometheus(prometheus_binary: str) -> Iterator[PrometheusServer]:
    server = PrometheusServer()
    try:
        server.backfill("\n".join(openmetrics(SCENARIOS.values(), START_STAMP)) + "\n")
        server.start()
        yield server
    finally:
        server.close()


async def _replay_all(url: str) -> dict[tuple[str, str], BacktestResult]:
    found: dict[tuple[str, str], BacktestResult] = {}
    async with PrometheusQuerier() as querier:
        for name, scenario in SCENARIOS.items():
            for judge in JUDGES:
                found[(name, judge)] = await replay(
                    Canary.model_validate(judged_canary(scenario, judge)),
                    TEMPLATES,
                    querier=querier,
                    endpoint_for=endpoint_factory(url),
                    start=START,
                    end=END,
                )
    return found


@pytest.fixture(scope="module")
def outcomes(corpus_prometheus: PrometheusServer) -> dict[tuple[str, str], BacktestResult]:
    return asyncio.run(_replay_all(corpus_prometheus.url))


def test_a_healthy_canary_is_never_rolled_back_and_thresholds_promote_it_on_schedule(outcomes) -> None:
    assert {j: outcomes[("healthy", j)].decision for j in JUDGES} == {
        "thresholds": "Succeeded", "mann-whitney": "Succeeded", "sequential": "Succeeded",
    }  # fmt: skip
    fixed = outcomes[("healthy", "thresholds")]
    assert fixed.decided_at == START + timedelta(minutes=5)  # five steps, one a minute
    assert fixed.reason == "Promoting"
    assert len(fixed.checks) == 10 and {c.metric for c in fixed.checks} == {"success-rate", "latency-p99"}


def test_ten_times_the_errors_is_rolled_back_by_every_judge_and_first_by_the_sequential_one(
    outcomes,
) -> None:
    results = {j: outcomes[("errors", j)] for j in JUDGES}
    assert {j: r.decision for j, r in results.items()} == dict.fromkeys(JUDGES, "Failed")
    sequential, fixed_sample = results["sequential"], results["mann-whitney"]
    assert sequential.decided_at == START + timedelta(minutes=1)
    assert sequential.reason == "CriticalMetricFailed"
    assert fixed_sample.reason == "FailedChecksThresholdReached"
    assert sequential.decided_at is not None and fixed_sample.decided_at is not None
    assert sequential.decided_at < fixed_sample.decided_at
    failing = [c for c in sequential.checks if c.metric == "error-rate"]
    assert failing[-1].verdict is Verdict.FAIL
    assert failing[-1].canary is not None and failing[-1].primary is not None
    assert failing[-1].canary > 5 * failing[-1].primary


def test_a_bad_day_for_both_sides_fails_fixed_thresholds_but_no_comparison(outcomes) -> None:
    assert outcomes[("drift", "thresholds")].decision == "Failed"
    assert outcomes[("drift", "mann-whitney")].decision != "Failed"
    assert outcomes[("drift", "sequential")].decision != "Failed"


def test_no_traffic_decides_nothing_and_says_so(outcomes) -> None:
    for judge in JUDGES:
        result = outcomes[("idle", judge)]
        assert result.decision == "Undecided" and result.decided_at is None
        assert {c.verdict for c in result.checks} == {Verdict.NO_DATA}
        assert result.message.startswith("no decision by the end of the window")


def test_the_json_document_has_the_documented_shape(outcomes) -> None:
    document = outcomes[("errors", "sequential")].to_json()
    assert set(document) >= {"decision", "decidedAt", "checks"}
    assert document["decision"] == "Failed" and document["decidedAt"] == "2023-11-14T22:15:00Z"
    check = document["checks"][0]
    assert set(check) >= {"time", "metric", "verdict", "canary", "primary"}
    assert {c["verdict"] for c in document["checks"]} <= {"pass", "fail", "noData", "error", "inconclusive"}
    assert check["judge"] == "Sequential" and "shiftLower" in check and "score" in check


async def test_an_unreachable_prometheus_is_counted_as_analysis_errors_until_the_limit() -> None:
    canary = Canary.model_validate(judged_canary(SCENARIOS["healthy"], "sequential"))
    async with PrometheusQuerier(retries=0) as querier:
        result = await replay(
            canary, TEMPLATES, querier=querier,
            endpoint_for=endpoint_factory(f"http://127.0.0.1:{free_loopback_port()}", timeout=1),
            start=START, end=END,
        )  # fmt: skip
    assert result.decision == "Failed" and result.reason == "AnalysisErrorLimitReached"
    assert result.decided_at == START + timedelta(minutes=5)  # errorThreshold 5, one check a minute
    assert {c.verdict for c in result.checks} == {Verdict.ERROR}


async def test_a_template_missing_from_the_files_is_refused_with_what_to_add() -> None:
    canary = Canary.model_validate(judged_canary(SCENARIOS["healthy"], "thresholds"))
    async with PrometheusQuerier() as querier:
        with pytest.raises(BacktestInputError, match="canaryd-system/success-rate is not in the files given"):
            await replay(canary, {}, querier=querier, endpoint_for=endpoint_factory("http://127.0.0.1:1"),
                         start=START, end=END)  # fmt: skip
