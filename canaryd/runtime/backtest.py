"""Replaying a Canary's analysis over a past window of Prometheus data, without a cluster.

``canaryd backtest`` asks: had this Canary been running from ``start``, what
would each check have said, and would the run have been promoted or rolled
back, and when? The answer must be what the controller would have done, so
nothing of the lifecycle is re-implemented here: the replay hands the core's
own ``decide`` a world in which everything outside the analysis is ready
(the new revision's pods, the primary, the Services, the routes accepted and
carrying the weights asked for) and lets it run. The step schedule, the
failed-check threshold, the error threshold, the no-data and inconclusive
policies, the progress deadline and the judges are the core's; each round
queries Prometheus at the check's time through the same functions the
controller uses (``runtime.metric_checks``).

The replay stops at the first of:

- ``Promoting`` (the last step passed): decision ``Succeeded``;
- ``Failed``: decision ``Failed``;
- the end of the window, or a run paused waiting for a person: ``Undecided``.

The traffic in the past window is whatever it was: the replay does not move
any weight, so a replay of a period when the canary had a constant share (or
none) judges that data with this Canary's rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from canaryd.adapters.prometheus import PrometheusEndpoint, PrometheusQuerier
from canaryd.api.constants import Phase, Verdict
from canaryd.api.models import Canary, CanaryStatus, ComparisonStatus, MetricCheck, MetricTemplate
from canaryd.api.timestamps import format_rfc3339
from canaryd.core.effects import RecordEvent
from canaryd.core.lifecycle import analysis_due, decide
from canaryd.core.observations import MetricResult, Observations, RouteState, WorkloadState
from canaryd.runtime.metric_checks import run_comparison, run_threshold

#: Pod-template hashes the replay gives the promoted revision and the one under analysis.
STABLE_REVISION = "backtest-stable"
CANDIDATE_REVISION = "backtest-candidate"
#: The shortest step between two decisions, so a decision asking to look again at once cannot spin.
_MIN_STEP = timedelta(seconds=1)
#: JSON spelling of each verdict (``pass|fail|noData|error|inconclusive``).
VERDICT_NAMES = {
    Verdict.PASS: "pass",
    Verdict.FAIL: "fail",
    Verdict.NO_DATA: "noData",
    Verdict.ERROR: "error",
    Verdict.INCONCLUSIVE: "inconclusive",
}


class BacktestInputError(ValueError):
    """The Canary cannot be replayed as given (a template missing from the files); says what to add."""


@dataclass(frozen=True)
class ResolvedCheck:
    check: MetricCheck
    template: MetricTemplate | None


@dataclass(frozen=True)
class CheckRecord:
    """One metric's verdict at one check."""

    time: datetime
    metric: str
    verdict: Verdict
    canary: float | None
    primary: float | None
    message: str
    comparison: ComparisonStatus | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "time": format_rfc3339(self.time),
            "metric": self.metric,
            "verdict": VERDICT_NAMES[self.verdict],
            "canary": _number(self.canary),
            "primary": _number(self.primary),
            "message": self.message,
        }
        if self.comparison is not None:
            document.update(
                judge=self.comparison.judge.value,
                classification=self.comparison.classification.value,
                shift=_number(self.comparison.shift),
                shiftLower=_number(self.comparison.shift_lower),
                shiftUpper=_number(self.comparison.shift_upper),
                score=_number(self.comparison.score),
            )
        return document


def _number(value: float | None) -> float | None:
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return value


@dataclass(frozen=True)
class BacktestResult:
    #: ``Succeeded``, ``Failed`` or ``Undecided``.
    decision: str
    decided_at: datetime | None
    start: datetime
    end: datetime
    #: The reason and message of the Event that decided (or why nothing was decided).
    reason: str
    message: str
    checks: tuple[CheckRecord, ...] = field(default_factory=tuple)

    @property
    def seconds_to_decision(self) -> float | None:
        return (self.decided_at - self.start).total_seconds() if self.decided_at is not None else None

    def to_json(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "decidedAt": format_rfc3339(self.decided_at) if self.decided_at is not None else None,
            "start": format_rfc3339(self.start),
            "end": format_rfc3339(self.end),
            "reason": self.reason,
            "message": self.message,
            "checks": [c.to_json() for c in self.checks],
        }


def resolve_checks(
    canary: Canary, templates: Mapping[tuple[str, str], MetricTemplate]
) -> tuple[ResolvedCheck, ...]:
    """Each metric with the template it names, looked up by (namespace, name) among those given."""
    resolved = []
    for check in canary.spec.analysis.metrics:
        if check.template_ref is None:
            resolved.append(ResolvedCheck(check, None))
            continue
        namespace = check.template_ref.namespace or canary.metadata.namespace
        template = templates.get((namespace, check.template_ref.name))
        if template is None:
            raise BacktestInputError(
                f"metric {check.name}: MetricTemplate {namespace}/{check.template_ref.name} is not in the "
                "files given; add its file with another -f"
            )
        resolved.append(ResolvedCheck(check, template))
    return tuple(resolved)


def _world(canary: Canary, status: CanaryStatus) -> Observations:
    """Everything outside the analysis ready, and the routes carrying the weight the run asked for."""
    target = canary.spec.target_ref.name
    revision = CANDIDATE_REVISION

    def ready(name: str, template_hash: str) -> WorkloadState:
        return WorkloadState(
            name, template_hash, desired_replicas=1, ready_replicas=1, updated_replicas=1,
            available_replicas=1, generation=1, observed_generation=1,
        )  # fmt: skip

    weight = status.canary_weight
    routes = tuple(
        RouteState(
            kind=ref.kind,
            name=ref.name,
            exists=True,
            has_backends=True,
            accepted=True,
            primary_weight=100 - weight,
            canary_weight=weight,
        )
        for ref in canary.spec.route_refs
    )
    return Observations(
        target=ready(target, revision),
        primary=ready(f"{target}-primary", STABLE_REVISION),
        services_ready=True,
        routes=routes,
    )


EndpointFor = Callable[[ResolvedCheck], PrometheusEndpoint]


async def _round(
    querier: PrometheusQuerier, endpoint_for: EndpointFor, canary: Canary,
    checks: tuple[ResolvedCheck, ...], now: datetime,
) -> tuple[MetricResult, ...]:  # fmt: skip
    async def one(resolved: ResolvedCheck) -> MetricResult:
        endpoint = endpoint_for(resolved)
        if resolved.check.compare is not None:
            return await run_comparison(querier, endpoint, canary, resolved.check, resolved.template, now)
        return await run_threshold(querier, endpoint, canary, resolved.check, resolved.template, now)

    return tuple(await asyncio.gather(*(one(c) for c in checks)))


def endpoint_factory(prometheus_url: str, timeout: float = 10.0) -> EndpointFor:
    """Every metric asks ``prometheus_url`` (with its template's extra headers, e.g. a tenant)."""

    def endpoint_for(resolved: ResolvedCheck) -> PrometheusEndpoint:
        headers = dict(resolved.template.spec.provider.headers) if resolved.template is not None else {}
        return PrometheusEndpoint(address=prometheus_url, headers=headers, timeout=timeout)

    return endpoint_for


async def replay(
    canary: Canary,
    templates: Mapping[tuple[str, str], MetricTemplate],
    *,
    querier: PrometheusQuerier,
    endpoint_for: EndpointFor,
    start: datetime,
    end: datetime,
) -> BacktestResult:
    """Run the Canary's analysis from ``start`` (the run starts, step 1 at once) until it decides or
    ``end``; raises BacktestInputError when the Canary names a template that is not given."""
    if end <= start:
        raise BacktestInputError("--end must be after --start")
    checks = resolve_checks(canary, templates)
    status = CanaryStatus(
        phase=Phase.INITIALIZED, revision=STABLE_REVISION, last_promoted_revision=STABLE_REVISION
    )
    records: list[CheckRecord] = []
    last_event: RecordEvent | None = None
    now = start
    while True:
        current = canary.model_copy(update={"status": status})
        observations = _world(current, status)
        ran_round = analysis_due(current, observations, now)
        if ran_round:
            results = await _round(querier, endpoint_for, current, checks, now)
            observations = replace(observations, analysis=results)
        decision = decide(current, observations, now)
        status = decision.status
        events = [e for e in decision.effects if isinstance(e, RecordEvent)]
        last_event = events[-1] if events else last_event
        if ran_round:
            records.extend(
                CheckRecord(
                    time=now,
                    metric=m.name,
                    verdict=m.verdict,
                    canary=m.value,
                    primary=m.comparison.primary if m.comparison is not None else None,
                    message=m.message,
                    comparison=m.comparison,
                )
                for m in status.metrics
            )
        reason = last_event.reason if last_event else ""
        message = last_event.message if last_event else ""
        if status.phase is Phase.PROMOTING:
            return BacktestResult("Succeeded", now, start, end, reason, message, tuple(records))
        if status.phase is Phase.FAILED:
            return BacktestResult("Failed", now, start, end, reason, message, tuple(records))
        wake = decision.next_wakeup
        if status.paused or wake is None:
            return BacktestResult(
                "Undecided", None, start, end, reason, f"waiting for a person since {format_rfc3339(now)}: "
                f"{message}", tuple(records),
            )  # fmt: skip
        if wake > end:
            return BacktestResult(
                "Undecided", None, start, end, reason, f"no decision by the end of the window: {message}",
                tuple(records),
            )  # fmt: skip
        now = max(wake, now + _MIN_STEP)


__all__ = [
    "VERDICT_NAMES",
    "BacktestInputError",
    "BacktestResult",
    "CheckRecord",
    "ResolvedCheck",
    "endpoint_factory",
    "replay",
    "resolve_checks",
]
