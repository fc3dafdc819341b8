"""A comparison metric's verdict, from Prometheus' answers for both sides.

This is where the answers to the range queries of :mod:`plan` become the
judges' inputs (values per side, windows paired by time, or event counts per
window), and where a judgement becomes the metric's verdict, its message and
the explanation kept in status:

- ``Pass`` and ``Fail`` (``High``/``Low``) as the judge classified (an
  ``absoluteTolerance`` is in the metric's unit; the Sequential judge on
  counts reads it as percentage points of events);
- ``Inconclusive`` while the evidence says neither;
- ``NoData`` when a side has no sample at all (no traffic), which follows
  the Canary's ``noDataPolicy``;
- ``Error`` when a query failed, counted against ``errorThreshold``.

A count query without any series (e.g. no failed request yet, so no 5xx
series exists) counts as 0 events in every window; a window without a total
on both sides is no window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from canaryd.api.constants import Classification, CompareDirection, CompareJudge, Verdict
from canaryd.api.models import ComparisonStatus, MetricCheck
from canaryd.core.judges import mann_whitney, sequential
from canaryd.core.judges.judgement import Judgement, percent
from canaryd.core.observations import MetricResult
from canaryd.core.promql import NoData, QueryError, RangeResult, RangeSeries


@dataclass(frozen=True)
class SideData:
    """Prometheus' answers for one side: its value series, and its count series when asked."""

    #: None when the judge uses the counts instead.
    value: RangeResult | None = None
    matching: RangeResult | None = None
    total: RangeResult | None = None


def _points(result: RangeResult | None) -> dict[float, float]:
    return result.by_time() if isinstance(result, RangeSeries) else {}


def _first_error(canary: SideData, primary: SideData) -> str | None:
    for side_name, side in (("canary", canary), ("primary", primary)):
        parts = (("", side.value), (" matching-count", side.matching), (" total-count", side.total))
        for part, result in parts:
            if isinstance(result, QueryError):
                return f"{side_name}{part} query: {result.kind.value}: {result.message}"
    return None


def _count_windows(canary: SideData, primary: SideData) -> list[sequential.WindowCounts]:
    canary_total, primary_total = _points(canary.total), _points(primary.total)
    canary_matching, primary_matching = _points(canary.matching), _points(primary.matching)
    return [
        sequential.WindowCounts(
            canary_matching.get(t, 0.0), canary_total[t], primary_matching.get(t, 0.0), primary_total[t]
        )
        for t in sorted(canary_total.keys() & primary_total.keys())
    ]


def _pairs(canary: SideData, primary: SideData) -> list[tuple[float, float]]:
    canary_points, primary_points = _points(canary.value), _points(primary.value)
    return [
        (canary_points.get(t, math.nan), primary_points.get(t, math.nan))
        for t in sorted(canary_points.keys() | primary_points.keys())
    ]


def _band_text(direction: CompareDirection, tolerance: float, absolute: float, counts: bool) -> str:
    sign = {CompareDirection.INCREASE: "+", CompareDirection.DECREASE: "-"}.get(direction, "±")
    text = f"{sign}{tolerance * 100:.3g}%"
    if absolute > 0:
        text += f" (or {sign}{absolute:g}{' points' if counts else ''})"
    return text


_FOUND = {
    Classification.PASS: "within the tolerance of {band}",
    Classification.HIGH: "above the tolerance of {band}",
    Classification.LOW: "below the tolerance of {band}",
    Classification.INCONCLUSIVE: "not yet clear against the tolerance of {band}",
}


def _number(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"


def describe(judgement: Judgement, judge: CompareJudge, counts: bool, direction: CompareDirection,
             tolerance: float, confidence: float, absolute: float = 0.0) -> str:  # fmt: skip
    """The judgement in one line for status, Events and ``kubectl canary status``."""
    if judgement.classification is None:
        return judgement.detail
    unit = "%" if counts else ""
    if counts:
        sides = f"canary {_number(judgement.canary)}{unit} vs primary {_number(judgement.primary)}{unit}"
    else:
        sides = (
            f"canary {_number(judgement.canary)} vs primary {_number(judgement.primary)} "
            f"(means of {judgement.canary_samples} and {judgement.primary_samples} samples)"
        )
    level = f"{confidence:.3g}" if confidence < 0.9 else f"{confidence:.1%}".replace(".0%", "%")
    kind = "anytime " if judge is CompareJudge.SEQUENTIAL else ""
    interval = (
        f"{percent(judgement.shift_lower)} … {percent(judgement.shift_upper)} at {kind}{level}"
    )
    band = _band_text(direction, tolerance, absolute, counts)
    found = _FOUND[judgement.classification].format(band=band)
    return f"{sides}: shift {percent(judgement.shift)} ({interval}), {found}; {judgement.detail}"


_VERDICTS = {
    Classification.PASS: Verdict.PASS,
    Classification.HIGH: Verdict.FAIL,
    Classification.LOW: Verdict.FAIL,
    Classification.INCONCLUSIVE: Verdict.INCONCLUSIVE,
}


def judge_comparison(
    check: MetricCheck, canary: SideData, primary: SideData, *, samples: int
) -> MetricResult:
    """The verdict of a comparison metric on its two sides' answers (``samples``: per side asked for)."""
    comparison = check.compare
    if comparison is None:
        raise ValueError(f"metric {check.name} is not a comparison")
    error = _first_error(canary, primary)
    if error is not None:
        return MetricResult(check.name, Verdict.ERROR, None, error)
    if samples <= 0:
        return MetricResult(
            check.name,
            Verdict.NO_DATA,
            None,
            f"the window is shorter than one resolution ({comparison.resolution}): no sample yet",
        )
    direction, tolerance = comparison.direction, comparison.tolerance
    confidence, absolute = comparison.effective_confidence, comparison.absolute_tolerance
    counts = comparison.judge is CompareJudge.SEQUENTIAL and canary.total is not None
    if counts:
        judgement = sequential.judge_counts(
            _count_windows(canary, primary), direction=direction, tolerance=tolerance, confidence=confidence,
            absolute_tolerance=absolute / 100,  # percentage points of events
        )  # fmt: skip
    elif comparison.judge is CompareJudge.SEQUENTIAL:
        judgement = sequential.judge_means(
            _pairs(canary, primary), direction=direction, tolerance=tolerance, confidence=confidence,
            absolute_tolerance=absolute,
        )  # fmt: skip
    else:
        judgement = mann_whitney.judge(
            list(_points(canary.value).values()),
            list(_points(primary.value).values()),
            direction=direction,
            tolerance=tolerance,
            confidence=confidence,
            outliers=comparison.outliers,
            absolute_tolerance=absolute,
        )
    message = describe(judgement, comparison.judge, counts, direction, tolerance, confidence, absolute)
    if judgement.classification is None:
        empty = [s.value for s in (canary, primary) if isinstance(s.value, NoData)]
        reason = f" ({empty[0].message})" if empty else ""
        return MetricResult(check.name, Verdict.NO_DATA, None, message + reason)
    return MetricResult(
        check.name,
        _VERDICTS[judgement.classification],
        judgement.canary,
        message,
        comparison=ComparisonStatus(
            judge=comparison.judge,
            classification=judgement.classification,
            direction=direction,
            canary=judgement.canary,
            primary=judgement.primary,
            shift=judgement.shift,
            shift_lower=judgement.shift_lower,
            shift_upper=judgement.shift_upper,
            tolerance=tolerance,
            confidence=confidence,
            canary_samples=judgement.canary_samples,
            primary_samples=judgement.primary_samples,
            critical=comparison.critical,
            weight=comparison.weight,
        ),
    )


__all__ = ["SideData", "describe", "judge_comparison"]
