"""The sequential judge: anytime-valid tests of everything seen since the run started.

A fixed-sample test looked at again and again raises a false alarm sooner or
later; that is why a fixed-sample judge needs several failed checks before a
rollback, and why it cannot pass a good canary before its window is full.
The tests here (in the spirit of Lindon, Sanden and Shirikian, "Rapid
Regression Detection in Software Deployments through Sequential Testing",
KDD 2022, and Lindon and Malek, "Anytime-Valid Inference for Multinomial
Count Data", NeurIPS 2022) keep their error probability whatever the number
of looks: each check recomputes them over every window since the run
started, and a verdict reached at any check holds with probability
``confidence``. A bad canary is failed at the first check with enough
evidence, a good one passed as soon as the evidence says it is within
tolerance; until then the verdict is ``Inconclusive``.

Two tests, by what the template gives:

- **Counts** (the template has ``counts``: events and matching events per
  window, e.g. requests and failed requests). Matching events of each side
  form a Poisson process whose intensity is its traffic times its rate. Given
  a window's matching events on both sides, the canary's share of them is
  binomial with a probability fixed by the two traffic counts and the ratio
  of the rates, whatever the traffic does over time (so a drift that hits
  both sides alike cancels). The null "the canary's rate is (1 + tolerance)
  times the primary's" is tested against higher (fail) and lower (pass)
  ratios with a mixture of likelihood ratios over a grid of odds multipliers:
  a nonnegative supermartingale under the null, so by Ville's inequality it
  ever exceeds ``1 / alpha`` with probability at most ``alpha``. Windows
  without traffic on a side add nothing. Built for rare events such as
  errors; for a share near 1 (successes), compare its complement. A ratio
  says nothing while neither side has had a matching event (a service
  without errors): with an ``absolute_tolerance`` (a share of events) the
  canary also passes when its rate is confidently below the primary's times
  (1 + tolerance) plus that allowance, and fails only when it is
  confidently above it too. Those rate bounds are anytime-valid Poisson
  confidence sequences of each side (the same mixture over the grid), and
  the error probability is split between the two ways of passing.
- **Means** (any other metric, e.g. a latency percentile per window). The
  canary and primary values of the same window are paired, so a drift that
  moves both cancels, and the mean of ``canary - (1 + tolerance) x primary``
  gets an asymptotic confidence sequence (Robbins' normal mixture with the
  running standard deviation, Waudby-Smith et al. 2021). It is valid as the
  number of windows grows, so it decides nothing before
  ``MIN_PAIRED_WINDOWS`` pairs.

The shift's interval shown to people is the same confidence sequence
(inverted for counts) at the same level.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from canaryd.api.constants import Classification, CompareDirection
from canaryd.core.judges.judgement import Judgement, relative

#: Odds multipliers (as log ratios) the count test mixes over: a 5 % rise up to about 16 times.
LOG_RATIO_GRID = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8)
#: The means test decides nothing before this many windows with a value on both sides.
MIN_PAIRED_WINDOWS = 10
#: The number of windows the normal mixture is tuned for (its interval is tightest around there).
TUNED_WINDOWS = 30
_BISECTION_STEPS = 12
_LOG_RATIO_RANGE = 7.0


@dataclass(frozen=True)
class WindowCounts:
    """One window's events on both sides."""

    canary_matching: float
    canary_total: float
    primary_matching: float
    primary_total: float


def usable_windows(windows: Sequence[WindowCounts]) -> list[WindowCounts]:
    """Windows with traffic on both sides and finite counts; matching events clamped to [0, total]."""
    kept = []
    for w in windows:
        values = (w.canary_matching, w.canary_total, w.primary_matching, w.primary_total)
        if not all(math.isfinite(v) for v in values) or w.canary_total <= 0 or w.primary_total <= 0:
            continue
        kept.append(
            WindowCounts(
                min(max(w.canary_matching, 0.0), w.canary_total),
                w.canary_total,
                min(max(w.primary_matching, 0.0), w.primary_total),
                w.primary_total,
            )
        )
    return kept


def _log_mean_exp(values: Sequence[float]) -> float:
    top = max(values)
    if math.isinf(top):
        return top
    return top + math.log(sum(math.exp(v - top) for v in values) / len(values))


@dataclass(frozen=True)
class _Events:
    """The windows with matching events, as the test needs them."""

    canary_matching: float
    #: Matching events of both sides, and the canary's traffic over the primary's, per window.
    events: tuple[float, ...]
    traffic_ratios: tuple[float, ...]

    @classmethod
    def of(cls, windows: Sequence[WindowCounts]) -> _Events:
        kept = [w for w in windows if w.canary_matching + w.primary_matching > 0]
        return cls(
            canary_matching=sum(w.canary_matching for w in kept),
            events=tuple(w.canary_matching + w.primary_matching for w in kept),
            traffic_ratios=tuple(w.canary_total / w.primary_total for w in kept),
        )

    def log_e_value(self, ratio: float, upward: bool) -> float:
        if not self.events:
            return 0.0
        shares = [r * ratio / (r * ratio + 1) for r in self.traffic_ratios]
        pairs = list(zip(self.events, shares, strict=True))
        logs = []
        for step in LOG_RATIO_GRID:
            delta = step if upward else -step
            growth = math.expm1(delta)
            spent = sum(events * math.log1p(share * growth) for events, share in pairs)
            logs.append(self.canary_matching * delta - spent)
        return _log_mean_exp(logs)


def log_e_value(windows: Sequence[WindowCounts], ratio: float, upward: bool) -> float:
    """Log of the mixture e-value against "canary rate = ``ratio`` x primary rate".

    ``upward`` mixes over higher ratios (evidence that the canary's rate is
    above), else over lower ones. Windows must be :func:`usable_windows`.
    For each window with ``m`` matching events on the two sides, the canary's
    share of them is binomial with probability ``p0 = r t / (r t + 1)``
    under the null (``t``: the canary's traffic over the primary's, ``r``:
    the ratio); the likelihood ratio of an odds multiplier ``e^d`` is
    ``exp(d x canary's events - m x log(1 + p0 (e^d - 1)))``.
    """
    return _Events.of(windows).log_e_value(ratio, upward)


def _ratio_bound(events: _Events, log_threshold: float, upward: bool) -> float:
    """The edge of the confidence sequence for the rate ratio: the ratio where the test stops rejecting.

    Upward: the smallest ratio not rejected by the test for higher ratios
    (a lower bound); else the largest not rejected by the test for lower
    ratios (an upper bound). 0 or infinity when the data do not bound it.
    """
    low, high = -_LOG_RATIO_RANGE, _LOG_RATIO_RANGE

    def rejected(log_ratio: float) -> bool:
        return events.log_e_value(math.exp(log_ratio), upward) >= log_threshold

    if upward:
        if not rejected(low):
            return 0.0
        if rejected(high):
            return math.inf
    else:
        if not rejected(high):
            return math.inf
        if rejected(low):
            return 0.0
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        if rejected(middle) == upward:
            low = middle
        else:
            high = middle
    return math.exp(high if upward else low)


def _log_poisson_e_value(matching: float, exposure: float, rate: float, upward: bool) -> float:
    """Log mixture e-value against "matching events ~ Poisson(exposure x rate)", for higher or lower rates."""
    logs = []
    for step in LOG_RATIO_GRID:
        delta = step if upward else -step
        logs.append(delta * matching - exposure * rate * math.expm1(delta))
    return _log_mean_exp(logs)


def rate_bound(matching: float, exposure: float, alpha: float, upper: bool) -> float:
    """An anytime-valid bound on a Poisson rate per event (``matching`` of ``exposure``) at ``alpha``."""
    threshold = math.log(1 / alpha)
    if exposure <= 0:
        return 1.0 if upper else 0.0
    if not upper and matching <= 0:
        return 0.0
    low, high = math.log(1e-12), 0.0  # rates as shares of events: at most 1

    def rejected(log_rate: float) -> bool:
        # An upper bound: the rates so high that the data reject them (evidence of a lower rate).
        return _log_poisson_e_value(matching, exposure, math.exp(log_rate), upward=not upper) >= threshold

    if upper and not rejected(high):
        return 1.0
    if not upper and not rejected(low):
        return 0.0
    for _ in range(40):
        middle = (low + high) / 2
        if rejected(middle) == upper:
            high = middle
        else:
            low = middle
    return math.exp(high if upper else low)


@dataclass(frozen=True)
class _Totals:
    canary_matching: float
    canary_total: float
    primary_matching: float
    primary_total: float

    @classmethod
    def of(cls, windows: Sequence[WindowCounts]) -> _Totals:
        return cls(
            sum(w.canary_matching for w in windows),
            sum(w.canary_total for w in windows),
            sum(w.primary_matching for w in windows),
            sum(w.primary_total for w in windows),
        )

    def bounds(self, alpha: float) -> tuple[float, float, float, float]:
        """The canary's low and high rate bounds, then the primary's, each at ``alpha``."""
        return (
            rate_bound(self.canary_matching, self.canary_total, alpha, upper=False),
            rate_bound(self.canary_matching, self.canary_total, alpha, upper=True),
            rate_bound(self.primary_matching, self.primary_total, alpha, upper=False),
            rate_bound(self.primary_matching, self.primary_total, alpha, upper=True),
        )


def _classify_events(
    events: _Events,
    totals: _Totals,
    direction: CompareDirection,
    tolerance: float,
    confidence: float,
    absolute_tolerance: float = 0.0,
) -> Classification:
    sides = 2 if direction is CompareDirection.EITHER else 1
    alpha = (1 - confidence) / sides
    allowance = absolute_tolerance > 0
    # With an allowance there are two ways to pass (the ratio, or the rate bounds): each gets half the
    # error probability, and each of the four rate bounds a quarter of that half.
    log_threshold = math.log((2 if allowance else 1) / alpha)
    canary_low, canary_high, primary_low, primary_high = (
        totals.bounds(alpha / 8) if allowance else (0.0, 1.0, 0.0, 1.0)
    )

    def evidence(ratio: float, upward: bool) -> bool:
        if ratio <= 0:
            return upward  # every rate is at least 0 times the primary's
        return events.log_e_value(ratio, upward) >= log_threshold

    high_ratio, low_ratio = 1 + tolerance, 1 - tolerance
    beyond_high = not allowance or canary_low > high_ratio * primary_high + absolute_tolerance
    beyond_low = not allowance or canary_high < low_ratio * primary_low - absolute_tolerance
    if direction is not CompareDirection.DECREASE and beyond_high and evidence(high_ratio, upward=True):
        return Classification.HIGH
    if direction is not CompareDirection.INCREASE and beyond_low and evidence(low_ratio, upward=False):
        return Classification.LOW
    below_high = (
        direction is CompareDirection.DECREASE
        or evidence(high_ratio, upward=False)
        or (allowance and canary_high < high_ratio * primary_low + absolute_tolerance)
    )
    above_low = (
        direction is CompareDirection.INCREASE
        or evidence(low_ratio, upward=True)
        or (allowance and canary_low > low_ratio * primary_high - absolute_tolerance)
    )
    return Classification.PASS if below_high and above_low else Classification.INCONCLUSIVE


def classify_counts(
    windows: Sequence[WindowCounts],
    *,
    direction: CompareDirection,
    tolerance: float,
    confidence: float,
    absolute_tolerance: float = 0.0,
) -> Classification | None:
    """Only the classification of :func:`judge_counts` (None: no usable window), without the interval."""
    usable = usable_windows(windows)
    if not usable:
        return None
    return _classify_events(
        _Events.of(usable), _Totals.of(usable), direction, tolerance, confidence, absolute_tolerance
    )


def judge_counts(
    windows: Sequence[WindowCounts],
    *,
    direction: CompareDirection,
    tolerance: float,
    confidence: float,
    absolute_tolerance: float = 0.0,
) -> Judgement:
    """The sequential verdict on event counts (e.g. failed requests of all requests) per window.

    ``absolute_tolerance`` is a share of events (0.001: 0.1 percentage point).
    """
    usable = usable_windows(windows)
    if not usable:
        return Judgement(None, detail="no window with traffic on both sides since the run started")
    canary_matching = sum(w.canary_matching for w in usable)
    canary_total = sum(w.canary_total for w in usable)
    primary_matching = sum(w.primary_matching for w in usable)
    primary_total = sum(w.primary_total for w in usable)
    canary_share = canary_matching / canary_total
    primary_share = primary_matching / primary_total
    counted = f"{canary_matching:.0f}/{canary_total:.0f} vs {primary_matching:.0f}/{primary_total:.0f} events"
    events = _Events.of(usable)
    classification = _classify_events(
        events, _Totals.of(usable), direction, tolerance, confidence, absolute_tolerance
    )
    interval_threshold = math.log(2 / (1 - confidence))
    lower = _ratio_bound(events, interval_threshold, upward=True)
    upper = _ratio_bound(events, interval_threshold, upward=False)
    shift = canary_share / primary_share - 1 if primary_share > 0 else None
    if canary_matching + primary_matching <= 0:
        detail = f"no matching events on either side yet ({counted})"
    else:
        detail = f"Poisson test on {counted} over {len(usable)} windows"
    return Judgement(
        classification,
        canary=100 * canary_share,
        primary=100 * primary_share,
        shift=shift,
        shift_lower=lower - 1,
        shift_upper=upper - 1 if math.isfinite(upper) else math.inf,
        canary_samples=len(usable),
        primary_samples=len(usable),
        detail=detail,
    )


def _mixture_radius(count: int, deviation: float, alpha: float) -> float:
    """Half-width of the normal-mixture confidence sequence for a mean after ``count`` samples."""
    if deviation == 0:
        return 0.0
    log_term = -2 * math.log(alpha)
    rho_squared = (log_term + math.log(log_term + 1)) / TUNED_WINDOWS
    scale = count * rho_squared + 1
    return deviation * math.sqrt(
        2 * scale / (count * count * rho_squared) * math.log(math.sqrt(scale) / alpha)
    )


def _bounds(values: Sequence[float], alpha: float) -> tuple[float, float, float]:
    mean = statistics.fmean(values)
    radius = _mixture_radius(len(values), statistics.stdev(values), alpha)
    return mean, mean - radius, mean + radius


def judge_means(
    pairs: Sequence[tuple[float, float]],
    *,
    direction: CompareDirection,
    tolerance: float,
    confidence: float,
    absolute_tolerance: float = 0.0,
) -> Judgement:
    """The sequential verdict on per-window values, paired by window: ``(canary, primary)``.

    Each window's band is ``max(tolerance x |primary|, absolute_tolerance)``.
    """
    usable = [(c, p) for c, p in pairs if math.isfinite(c) and math.isfinite(p)]
    canary_count = sum(1 for c, _ in pairs if math.isfinite(c))
    primary_count = sum(1 for _, p in pairs if math.isfinite(p))
    if not usable:
        side = "canary" if canary_count == 0 else "primary" if primary_count == 0 else "both sides at once"
        return Judgement(
            None,
            canary_samples=canary_count,
            primary_samples=primary_count,
            detail=f"no window with a value for {side} since the run started",
        )
    canary_mean = statistics.fmean(c for c, _ in usable)
    primary_mean = statistics.fmean(p for _, p in usable)
    if len(usable) < MIN_PAIRED_WINDOWS:
        return Judgement(
            Classification.INCONCLUSIVE,
            canary=canary_mean,
            primary=primary_mean,
            shift=relative(canary_mean - primary_mean, primary_mean),
            canary_samples=len(usable),
            primary_samples=len(usable),
            detail=f"{len(usable)} paired windows so far; the test needs {MIN_PAIRED_WINDOWS}",
        )
    alpha = 1 - confidence
    sides = 2 if direction is CompareDirection.EITHER else 1
    side_alpha = alpha / sides
    # Above the band: canary - primary - band > 0; below it: primary - band - canary > 0.
    bands = [max(tolerance * abs(p), absolute_tolerance) for _, p in usable]
    above = [c - p - band for (c, p), band in zip(usable, bands, strict=True)]
    below = [p - band - c for (c, p), band in zip(usable, bands, strict=True)]
    _, above_lower, above_upper = _bounds(above, side_alpha)
    _, below_lower, below_upper = _bounds(below, side_alpha)
    high = direction is not CompareDirection.DECREASE and above_lower > 0
    low = direction is not CompareDirection.INCREASE and below_lower > 0
    within_high = direction is CompareDirection.DECREASE or above_upper <= 0
    within_low = direction is CompareDirection.INCREASE or below_upper <= 0
    if high:
        classification = Classification.HIGH
    elif low:
        classification = Classification.LOW
    elif within_high and within_low:
        classification = Classification.PASS
    else:
        classification = Classification.INCONCLUSIVE
    shift, lower, upper = _bounds([c - p for c, p in usable], alpha)
    return Judgement(
        classification,
        canary=canary_mean,
        primary=primary_mean,
        shift=relative(shift, primary_mean),
        shift_lower=relative(lower, primary_mean),
        shift_upper=relative(upper, primary_mean),
        canary_samples=len(usable),
        primary_samples=len(usable),
        detail=f"confidence sequence on {len(usable)} paired windows",
    )


__all__ = [
    "LOG_RATIO_GRID",
    "MIN_PAIRED_WINDOWS",
    "WindowCounts",
    "classify_counts",
    "judge_counts",
    "judge_means",
    "log_e_value",
    "rate_bound",
    "usable_windows",
]
