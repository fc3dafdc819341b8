"""Which range queries a comparison asks, for which window, with which variables per side."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from canaryd.api.models import Canary, MetricTemplate
from canaryd.core.judges.plan import MAX_POINTS, plan_comparison
from canaryd.core.promql import TemplateError

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
QUERY = (
    'sum(rate(x{service="{{ service }}", deployment="{{ workload }}", target="{{ target }}"}'
    "[{{ interval }}]))"
)


def _canary(compare: dict[str, Any], interval: str | None = "5m", started: datetime | None = None) -> Canary:
    metric: dict[str, Any] = {"name": "errors", "query": QUERY, "compare": compare}
    if interval:
        metric["interval"] = interval
    status = {"runStartedAt": started.isoformat()} if started else {}
    return Canary.model_validate(
        {
            "metadata": {"name": "api", "namespace": "shop"},
            "spec": {
                "targetRef": {"name": "api"},
                "service": {"port": 80},
                "routeRefs": [{"name": "api-route"}],
                "analysis": {"interval": "1m", "stepWeights": [10, 50], "metrics": [metric]},
            },
            "status": status,
        }
    )


def test_the_query_is_rendered_once_for_each_side_with_the_resolution_as_interval() -> None:
    canary = _canary({"resolution": "20s"})
    plan = plan_comparison(canary, canary.spec.analysis.metrics[0], None, NOW)
    assert plan.canary.value is not None and plan.primary.value is not None
    assert plan.canary.value.promql == (
        'sum(rate(x{service="api-canary", deployment="api", target="api"}[20s]))'
    )
    assert plan.primary.value.promql == (
        'sum(rate(x{service="api-primary", deployment="api-primary", target="api"}[20s]))'
    )
    assert not plan.uses_counts


def test_the_fixed_sample_judge_looks_back_over_the_metric_interval() -> None:
    canary = _canary({"judge": "MannWhitney", "resolution": "20s"}, interval="5m")
    plan = plan_comparison(canary, canary.spec.analysis.metrics[0], None, NOW)
    assert plan.samples == 15
    assert plan.canary.value is not None
    assert plan.canary.value.end == NOW
    assert plan.canary.value.start == NOW - timedelta(seconds=20 * 14)
    assert plan.canary.value.step == timedelta(seconds=20)
    default = _canary({"resolution": "10s"}, interval=None)
    assert plan_comparison(default, default.spec.analysis.metrics[0], None, NOW).samples == 6  # analysis 1m


def test_the_sequential_judge_looks_back_to_the_start_of_the_run() -> None:
    canary = _canary({"judge": "Sequential", "resolution": "30s"}, started=NOW - timedelta(minutes=7))
    plan = plan_comparison(canary, canary.spec.analysis.metrics[0], None, NOW)
    assert plan.samples == 14
    young = _canary({"judge": "Sequential", "resolution": "30s"}, started=NOW - timedelta(seconds=10))
    assert plan_comparison(young, young.spec.analysis.metrics[0], None, NOW).samples == 0
    old = _canary({"judge": "Sequential", "resolution": "1s"}, started=NOW - timedelta(days=30))
    assert plan_comparison(old, old.spec.analysis.metrics[0], None, NOW).samples == MAX_POINTS


def test_a_template_with_counts_gives_the_sequential_judge_count_queries_only() -> None:
    template = MetricTemplate.model_validate(
        {
            "metadata": {"name": "error-rate", "namespace": "canaryd-system"},
            "spec": {
                "query": QUERY,
                "counts": {
                    "total": 'sum(increase(r{service="{{ service }}"}[{{ interval }}]))',
                    "matching": 'sum(increase(r{service="{{ service }}", code="500"}[{{ interval }}]))',
                },
            },
        }
    )
    sequential = _canary({"judge": "Sequential", "resolution": "20s"}, started=NOW - timedelta(minutes=2))
    plan = plan_comparison(sequential, sequential.spec.analysis.metrics[0], template, NOW)
    assert plan.uses_counts and plan.canary.value is None
    assert plan.primary.total is not None and plan.primary.matching is not None
    assert plan.primary.total.promql == 'sum(increase(r{service="api-primary"}[20s]))'
    assert plan.canary.matching is not None
    assert plan.canary.matching.promql == 'sum(increase(r{service="api-canary", code="500"}[20s]))'
    fixed = _canary({"judge": "MannWhitney", "resolution": "20s"})
    assert not plan_comparison(fixed, fixed.spec.analysis.metrics[0], template, NOW).uses_counts


def test_a_variable_without_a_value_cannot_be_planned() -> None:
    canary = _canary({})
    check = canary.spec.analysis.metrics[0].model_copy(update={"query": "x{a='{{ missing }}'}"})
    with pytest.raises(TemplateError, match="missing"):
        plan_comparison(canary, check, None, NOW)
