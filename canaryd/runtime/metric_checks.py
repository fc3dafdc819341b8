"""Running one metric check against Prometheus: a fixed range, or a comparison with the primary.

The controller's analysis round (``runtime.analysis``) and ``canaryd
backtest`` both check metrics through these functions, so a backtest judges
exactly as the controller would: the same rendering, the same queries, the
same core verdicts. Only the I/O lives here; what to query
(``core.judges.plan``) and what the answers mean (``core.promql.judge``,
``core.judges.compare``) are pure.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from canaryd.adapters.prometheus import PrometheusEndpoint, PrometheusQuerier
from canaryd.api.constants import Verdict
from canaryd.api.models import Canary, MetricCheck, MetricTemplate
from canaryd.api.naming import workload_names
from canaryd.core import traffic_share
from canaryd.core.judges.compare import SideData, judge_comparison
from canaryd.core.judges.plan import RangeQuery, SideQueries, plan_comparison
from canaryd.core.observations import MetricResult, ShareReading
from canaryd.core.promql import NoData, QueryError, RangeResult, TemplateError, Value, check_queries, judge
from canaryd.core.verdicts import worst_per_route


def threshold_queries(
    canary: Canary, check: MetricCheck, template: MetricTemplate | None
) -> list[tuple[str, str]]:
    """The PromQL of a threshold check for the canary, as (route, query): one per route when the
    template uses ``{{ route }}`` (see ``core.promql.check_queries``). Raises TemplateError."""
    target = canary.spec.target_ref.name
    return check_queries(
        template.spec.query if template is not None else (check.query or ""),
        namespace=canary.metadata.namespace,
        target=target,
        service=workload_names(target).canary_service,
        routes=[ref.name for ref in canary.spec.route_refs],
        interval=check.interval or canary.spec.analysis.interval,
        template_defaults=template.spec.variables if template is not None else None,
        overrides=check.variables,
    )


async def run_threshold(
    querier: PrometheusQuerier,
    endpoint: PrometheusEndpoint,
    canary: Canary,
    check: MetricCheck,
    template: MetricTemplate | None,
    now: datetime,
) -> MetricResult:
    """Instant queries at ``now`` (one per route where the template asks), each judged against the
    check's thresholdRange; the check's result is the worst route's."""
    if check.threshold_range is None:
        raise ValueError(f"metric {check.name} has no thresholdRange")
    try:
        queries = threshold_queries(canary, check, template)
    except (TemplateError, ValueError) as exc:
        return MetricResult(check.name, Verdict.ERROR, None, f"cannot build the query: {exc}")
    answers = await asyncio.gather(*(querier.query(endpoint, promql, at=now) for _, promql in queries))
    return worst_per_route(
        [
            (route, judge(check.name, answer, check.threshold_range, check.inconclusive_range))
            for (route, _), answer in zip(queries, answers, strict=True)
        ]
    )


async def run_comparison(
    querier: PrometheusQuerier,
    endpoint: PrometheusEndpoint,
    canary: Canary,
    check: MetricCheck,
    template: MetricTemplate | None,
    now: datetime,
) -> MetricResult:
    """Range queries for the canary and the primary over the judge's window, and the judge's verdict."""
    try:
        plan = plan_comparison(canary, check, template, now)
    except (TemplateError, ValueError) as exc:
        return MetricResult(check.name, Verdict.ERROR, None, f"cannot build the queries: {exc}")
    if plan.samples <= 0:
        return judge_comparison(check, SideData(), SideData(), samples=0)

    async def ask(query: RangeQuery | None) -> RangeResult | None:
        if query is None:
            return None
        return await querier.query_range(
            endpoint, query.promql, start=query.start, end=query.end, step=query.step
        )

    async def side(queries: SideQueries) -> SideData:
        value, matching, total = await asyncio.gather(
            ask(queries.value), ask(queries.matching), ask(queries.total)
        )
        return SideData(value, matching, total)

    canary_data, primary_data = await asyncio.gather(side(plan.canary), side(plan.primary))
    return judge_comparison(check, canary_data, primary_data, samples=plan.samples)


async def measure_share(
    querier: PrometheusQuerier,
    endpoint: PrometheusEndpoint,
    canary: Canary,
    template: MetricTemplate,
    now: datetime,
) -> tuple[ShareReading, ...]:
    """The canary's share of the requests (percent) with the trafficShare template, one reading per route
    when the template uses ``{{ route }}``, over the window ``core.traffic_share`` gives, at ``now``."""
    check = canary.spec.analysis.traffic_share
    target = canary.spec.target_ref.name
    routes = [ref.name for ref in canary.spec.route_refs]
    try:
        queries = check_queries(
            template.spec.query,
            namespace=canary.metadata.namespace,
            target=target,
            service=workload_names(target).canary_service,
            routes=routes,
            interval=traffic_share.window(canary),
            template_defaults=template.spec.variables,
            overrides=check.variables if check is not None else None,
        )
    except (TemplateError, ValueError) as exc:
        return (ShareReading(routes[0] if routes else "", None, f"cannot build the query: {exc}"),)
    answers = await asyncio.gather(*(querier.query(endpoint, promql, at=now) for _, promql in queries))
    readings = []
    for (route, _), answer in zip(queries, answers, strict=True):
        if isinstance(answer, Value):
            readings.append(ShareReading(route, answer.value))
        elif isinstance(answer, NoData):
            readings.append(ShareReading(route, None, f"no data ({answer.message})"))
        elif isinstance(answer, QueryError):
            readings.append(ShareReading(route, None, f"query error: {answer.message}"))
    return tuple(readings)


__all__ = ["measure_share", "run_comparison", "run_threshold", "threshold_queries"]
