"""Turning one analysis round's per-metric verdicts into what the run does next.

A round is judged as a whole: any failing metric fails the round; otherwise
an error (Prometheus unreachable, a query that does not parse) is counted
apart from failures, since it says nothing about the new revision; a metric
with no data follows the Canary's no-data policy (Fail counts a failed check,
Hold neither advances nor counts, Pass lets the round pass).

Metrics compared with the primary are judged together, as Kayenta does, by
a weighted score: 100 x the weight of those that passed over the weight of
those decided (passed or failed). Below ``scoreThresholds.marginal`` the
round fails; a failed critical metric makes the score 0. At or above
``pass`` with nothing inconclusive, the comparison passes; otherwise (a
marginal score, or a metric without enough evidence yet) the round is
inconclusive and follows ``inconclusivePolicy``. A round failed by a
critical metric, or by a Sequential one (whose verdict already accounts
for every look), is decisive: the run fails without waiting for
``threshold`` failed checks.

A threshold metric whose value is outside ``thresholdRange`` but inside its
``inconclusiveRange`` is inconclusive too; that one always pauses the run for
a person (it says the value needs a human look, not more evidence), whatever
``inconclusivePolicy`` says. A dry-run metric is recorded and shown and takes
no part in any of this. A metric with a ``failureLimit`` fails the run once it
has failed that many checks in it.

A check asked once per route gets the worst of its verdicts: a failure on
any route, else an error, else an inconclusive comparison, else no data,
else a pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from enum import StrEnum

from canaryd.api.constants import CompareJudge, InconclusivePolicy, NoDataPolicy, Verdict
from canaryd.api.models import Analysis, MetricStatus, ScoreThresholds
from canaryd.core.observations import MetricResult
from canaryd.core.promql import format_number

Result = MetricResult | MetricStatus


class RoundOutcome(StrEnum):
    """What a round means for the run."""

    ADVANCE = "Advance"
    FAILED_CHECK = "FailedCheck"
    ERROR = "Error"
    HOLD = "Hold"
    #: Comparison metrics without enough evidence, or a marginal score: no step, no failed check.
    INCONCLUSIVE = "Inconclusive"


def counted(results: Sequence[Result]) -> list[Result]:
    """The results that count: every one but the dry-run metrics'."""
    return [r for r in results if not r.dry_run]


def _decided_comparisons(results: Sequence[Result]) -> list[Result]:
    return [
        r for r in counted(results) if r.comparison is not None and r.verdict in (Verdict.PASS, Verdict.FAIL)
    ]


def comparison_score(results: Sequence[Result]) -> float | None:
    """The weighted score (0-100) of the comparison metrics that passed or failed; None if none did."""
    decided = _decided_comparisons(results)
    if not decided:
        return None
    if any(r.verdict is Verdict.FAIL and r.comparison is not None and r.comparison.critical for r in decided):
        return 0.0
    weights = [(r.comparison.weight, r.verdict is Verdict.PASS) for r in decided if r.comparison is not None]
    total = sum(weight for weight, _ in weights)
    passed = sum(weight for weight, ok in weights if ok)
    return 100.0 * passed / total if total > 0 else None


def _comparison_outcome(results: Sequence[Result], scoring: ScoreThresholds) -> RoundOutcome | None:
    """What the comparison metrics alone say; None when there are none with a verdict to weigh."""
    results = counted(results)
    inconclusive = any(r.comparison is not None and r.verdict is Verdict.INCONCLUSIVE for r in results)
    score = comparison_score(results)
    if score is None:
        return RoundOutcome.INCONCLUSIVE if inconclusive else None
    critical = any(
        r.verdict is Verdict.FAIL and r.comparison is not None and r.comparison.critical for r in results
    )
    if critical or score < scoring.marginal:
        return RoundOutcome.FAILED_CHECK
    if inconclusive or score < scoring.pass_:
        return RoundOutcome.INCONCLUSIVE
    return RoundOutcome.ADVANCE


def round_outcome(
    results: Sequence[Result], no_data: NoDataPolicy, scoring: ScoreThresholds | None = None
) -> RoundOutcome:
    """The outcome of a round; a Canary without metrics always advances (dry-run metrics do not count)."""
    compared = _comparison_outcome(results, scoring or ScoreThresholds())
    verdicts = {r.verdict for r in counted(results) if r.comparison is None}
    if (
        Verdict.FAIL in verdicts
        or (Verdict.NO_DATA in verdicts and no_data is NoDataPolicy.FAIL)
        or compared is RoundOutcome.FAILED_CHECK
    ):
        return RoundOutcome.FAILED_CHECK
    if Verdict.ERROR in verdicts:
        return RoundOutcome.ERROR
    if Verdict.NO_DATA in verdicts and no_data is NoDataPolicy.HOLD:
        return RoundOutcome.HOLD
    if compared is RoundOutcome.INCONCLUSIVE or Verdict.INCONCLUSIVE in verdicts:
        return RoundOutcome.INCONCLUSIVE
    return RoundOutcome.ADVANCE


def pauses_for_a_person(results: Sequence[Result], policy: InconclusivePolicy) -> bool:
    """Whether an inconclusive round pauses the run: by policy, or for a value in an inconclusiveRange."""
    if policy is InconclusivePolicy.PAUSE:
        return True
    return any(r.comparison is None and r.verdict is Verdict.INCONCLUSIVE for r in counted(results))


def mark_dry_run(analysis: Analysis, results: Sequence[MetricResult]) -> tuple[MetricResult, ...]:
    """The round's results with the dry-run metrics marked as such (from the Canary's spec)."""
    dry = {m.name for m in analysis.metrics if m.dry_run}
    return tuple(replace(r, dry_run=True) if r.name in dry and not r.dry_run else r for r in results)


def failure_limit_reached(analysis: Analysis, statuses: Sequence[MetricStatus]) -> MetricStatus | None:
    """The first counted metric that has failed as many checks as its failureLimit, if any."""
    limits = {
        m.name: m.failure_limit for m in analysis.metrics if m.failure_limit is not None and not m.dry_run
    }
    for status in statuses:
        limit = limits.get(status.name)
        if limit is not None and status.failures >= limit:
            return status
    return None


def decisive_failure(results: Sequence[Result], scoring: ScoreThresholds | None = None) -> Result | None:
    """The comparison metric that fails the run at once, if the round failed because of one.

    A failed critical metric always does; a failed Sequential metric does
    when the comparison metrics together fail the round.
    """
    failed = [r for r in counted(results) if r.comparison is not None and r.verdict is Verdict.FAIL]
    for result in failed:
        if result.comparison is not None and result.comparison.critical:
            return result
    if _comparison_outcome(results, scoring or ScoreThresholds()) is RoundOutcome.FAILED_CHECK:
        for result in failed:
            if result.comparison is not None and result.comparison.judge is CompareJudge.SEQUENTIAL:
                return result
    return None


#: Worst first: the order in which one route's verdict outweighs another's for the same check.
_SEVERITY = (Verdict.FAIL, Verdict.ERROR, Verdict.INCONCLUSIVE, Verdict.NO_DATA, Verdict.PASS)


def worst_per_route(per_route: Sequence[tuple[str, MetricResult]]) -> MetricResult:
    """One check's result from its results on each route: the worst verdict, naming the route(s).

    With a single route the result is that route's, unchanged.
    """
    if len(per_route) == 1:
        return per_route[0][1]
    worst = min(_SEVERITY.index(result.verdict) for _, result in per_route)
    deciding = [(route, result) for route, result in per_route if _SEVERITY.index(result.verdict) == worst]
    first = deciding[0][1]
    message = "; ".join(f"route {route}: {result.message}" for route, result in deciding)
    return MetricResult(
        name=first.name,
        verdict=first.verdict,
        value=first.value,
        message=message,
        comparison=first.comparison,
    )


def describe_result(result: Result) -> str:
    """One metric's result in a few words, e.g. ``success-rate=93.2 (Fail: below min 99)``."""
    value = "no value" if result.value is None else format_number(result.value)
    text = f"{result.name}={value} ({result.verdict.value}"
    if result.dry_run:
        text += ", dry-run"
    if result.message:
        text += f": {result.message}"
    return text + ")"


def describe_round(results: Iterable[Result], *only: Verdict) -> str:
    """The results worth naming, or all of them when ``only`` is empty."""
    chosen = [r for r in results if not only or r.verdict in only]
    return ", ".join(describe_result(r) for r in chosen) if chosen else "no metrics configured"


def metric_statuses(
    results: Sequence[MetricResult], checked_at: datetime, previous: Sequence[MetricStatus] = ()
) -> list[MetricStatus]:
    """The round as it is recorded in status.metrics (each comparison with the round's score).

    ``previous`` (the status before the round) carries each metric's count of failed checks on.
    """
    score = comparison_score(results)
    failures = {m.name: m.failures for m in previous}
    return [
        MetricStatus(
            name=r.name,
            verdict=r.verdict,
            value=r.value,
            message=r.message,
            checked_at=checked_at,
            comparison=r.comparison.model_copy(update={"score": score}) if r.comparison is not None else None,
            dry_run=r.dry_run,
            failures=failures.get(r.name, 0) + (1 if r.verdict is Verdict.FAIL else 0),
        )
        for r in results
    ]
