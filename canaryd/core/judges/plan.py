"""Which range queries a comparison metric needs at one check, for the canary and for the primary.

The metric's query (its template's, or the inline one) is rendered twice for
the same window:

- the canary: ``{{ service }}`` = ``<target>-canary``, ``{{ workload }}`` = ``<target>``;
- the primary: ``{{ service }}`` = ``<target>-primary``, ``{{ workload }}`` = ``<target>-primary``;

and ``{{ interval }}`` is the comparison's ``resolution``: each point of the
range query (one every resolution) is the metric over the window just before
it, so consecutive samples do not overlap. A template with ``counts`` adds its
two count queries for each side, used by the Sequential judge.

The window ends at the check's time. The MannWhitney judge looks back over
the metric's ``interval`` (``interval / resolution`` samples a side); the
Sequential judge over everything since the run started, up to
``MAX_POINTS`` samples, which is below Prometheus' limit of 11,000 points
per series.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from canaryd.api.constants import CANARY_SUFFIX, PRIMARY_SUFFIX, CompareJudge
from canaryd.api.durations import parse_duration
from canaryd.api.models import Canary, Comparison, MetricCheck, MetricTemplate
from canaryd.core.promql import analysis_variables, render

#: The most samples a comparison asks for per series.
MAX_POINTS = 10_000


@dataclass(frozen=True)
class RangeQuery:
    promql: str
    start: datetime
    end: datetime
    step: timedelta


@dataclass(frozen=True)
class SideQueries:
    """The queries for one side: its value, and its event counts when the judge uses them."""

    #: The metric's value per window (None when the judge uses the counts instead).
    value: RangeQuery | None
    matching: RangeQuery | None = None
    total: RangeQuery | None = None


@dataclass(frozen=True)
class ComparisonPlan:
    canary: SideQueries
    primary: SideQueries
    #: Samples per side the window holds (0: the window is shorter than one resolution).
    samples: int

    @property
    def uses_counts(self) -> bool:
        return self.canary.matching is not None


def sample_count(check: MetricCheck, comparison: Comparison, canary: Canary, now: datetime) -> int:
    """How many samples (one per resolution) the judge looks at, ending at ``now``."""
    resolution = comparison.resolution_delta
    started = canary.status.run_started_at
    if comparison.judge is CompareJudge.SEQUENTIAL and started is not None:
        span = now - started
    else:  # a fixed sample, or a run whose start is not known: the metric's interval
        span = parse_duration(check.interval or canary.spec.analysis.interval)
    if span < resolution:
        return 0
    return min(MAX_POINTS, int(span / resolution))


def plan_comparison(
    canary: Canary, check: MetricCheck, template: MetricTemplate | None, now: datetime
) -> ComparisonPlan:
    """The range queries of both sides; raises TemplateError (or ValueError) when a query cannot be built."""
    comparison = check.compare
    if comparison is None:
        raise ValueError(f"metric {check.name} is not a comparison")
    samples = sample_count(check, comparison, canary, now)
    step = comparison.resolution_delta
    start = now - step * max(samples - 1, 0)
    target = canary.spec.target_ref.name
    query = template.spec.query if template is not None else (check.query or "")
    counts = template.spec.counts if template is not None else None
    use_counts = counts is not None and comparison.judge is CompareJudge.SEQUENTIAL

    def side(service: str, workload: str) -> SideQueries:
        variables = analysis_variables(
            namespace=canary.metadata.namespace,
            target=target,
            service=service,
            workload=workload,
            route=canary.spec.route_refs[0].name,
            interval=step,
            template_defaults=template.spec.variables if template is not None else None,
            overrides=check.variables,
        )

        def ranged(promql: str) -> RangeQuery:
            return RangeQuery(render(promql, variables), start, now, step)

        if use_counts and counts is not None:
            return SideQueries(None, ranged(counts.matching), ranged(counts.total))
        return SideQueries(ranged(query))

    return ComparisonPlan(
        canary=side(target + CANARY_SUFFIX, target),
        primary=side(target + PRIMARY_SUFFIX, target + PRIMARY_SUFFIX),
        samples=samples,
    )


__all__ = ["MAX_POINTS", "ComparisonPlan", "RangeQuery", "SideQueries", "plan_comparison", "sample_count"]
