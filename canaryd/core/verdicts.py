"""Turning one analysis round's per-metric verdicts into what the run does next.

A round is judged as a whole: any failing metric fails the round; otherwise
an error (Prometheus unreachable, a query that does not parse) is counted
apart from failures, since it says nothing about the new revision; a metric
with no data follows the Canary's no-data policy (Fail counts a failed check,
Hold neither advances nor counts, Pass lets the round pass).

A check asked once per route gets the worst of its verdicts, in the same
order: a failure on any route, else an error, else no data, else a pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum

from canaryd.api.constants import NoDataPolicy, Verdict
from canaryd.api.models import MetricStatus
from canaryd.core.observations import MetricResult


class RoundOutcome(StrEnum):
    """What a round means for the run."""

    ADVANCE = "Advance"
    FAILED_CHECK = "FailedCheck"
    ERROR = "Error"
    HOLD = "Hold"


def round_outcome(results: Sequence[MetricResult | MetricStatus], no_data: NoDataPolicy) -> RoundOutcome:
    """The outcome of a round; a Canary without metrics always advances."""
    verdicts = {r.verdict for r in results}
    if Verdict.FAIL in verdicts or (Verdict.NO_DATA in verdicts and no_data is NoDataPolicy.FAIL):
        return RoundOutcome.FAILED_CHECK
    if Verdict.ERROR in verdicts:
        return RoundOutcome.ERROR
    if Verdict.NO_DATA in verdicts and no_data is NoDataPolicy.HOLD:
        return RoundOutcome.HOLD
    return RoundOutcome.ADVANCE


#: Worst first: the order in which one route's verdict outweighs another's for the same check.
_SEVERITY = (Verdict.FAIL, Verdict.ERROR, Verdict.NO_DATA, Verdict.PASS)


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
    return MetricResult(name=first.name, verdict=first.verdict, value=first.value, message=message)


def describe_result(result: MetricResult | MetricStatus) -> str:
    """One metric's result in a few words, e.g. ``success-rate=93.2 (Fail: below min 99)``."""
    value = "no value" if result.value is None else f"{result.value:g}"
    text = f"{result.name}={value} ({result.verdict.value}"
    if result.message:
        text += f": {result.message}"
    return text + ")"


def describe_round(results: Iterable[MetricResult | MetricStatus], *only: Verdict) -> str:
    """The results worth naming, or all of them when ``only`` is empty."""
    chosen = [r for r in results if not only or r.verdict in only]
    return ", ".join(describe_result(r) for r in chosen) if chosen else "no metrics configured"


def metric_statuses(results: Sequence[MetricResult], checked_at: datetime) -> list[MetricStatus]:
    """The round as it is recorded in status.metrics."""
    return [
        MetricStatus(
            name=r.name,
            verdict=r.verdict,
            value=r.value,
            message=r.message,
            checked_at=checked_at,
        )
        for r in results
    ]
