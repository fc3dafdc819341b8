"""What a judge found, and the one rule that turns an interval into a classification.

Both judges estimate how far the canary is from the primary and give an
interval for it; the classification depends only on where that interval lies
against the tolerance band, so they agree on what "within tolerance" means:

- entirely beyond the band on the bad side: ``High`` (or ``Low``);
- entirely inside it on the bad side: ``Pass``;
- straddling its edge: ``Inconclusive`` (more data would tell).

Identical canary and primary samples give an interval around 0, which lies
inside any band, so they never fail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from canaryd.api.constants import Classification, CompareDirection


@dataclass(frozen=True)
class Judgement:
    """A judge's answer for one metric at one check."""

    #: None when there was nothing to judge (no samples on one side).
    classification: Classification | None
    #: What each side measured over the judged samples (mean, or the share of events in percent).
    canary: float | None = None
    primary: float | None = None
    #: The canary's estimated shift relative to the primary (0.2 = 20 % higher) and its interval.
    shift: float | None = None
    shift_lower: float | None = None
    shift_upper: float | None = None
    canary_samples: int = 0
    primary_samples: int = 0
    #: How the judge got there, in a few words (the test's statistic, why it could not decide).
    detail: str = ""


def classify(lower: float, upper: float, band: float, direction: CompareDirection) -> Classification:
    """Where the interval ``[lower, upper]`` of ``canary - primary`` lies against ``[-band, +band]``."""
    high = lower > band
    low = upper < -band
    within_above = upper <= band
    within_below = lower >= -band
    if direction is CompareDirection.INCREASE:
        if high:
            return Classification.HIGH
        return Classification.PASS if within_above else Classification.INCONCLUSIVE
    if direction is CompareDirection.DECREASE:
        if low:
            return Classification.LOW
        return Classification.PASS if within_below else Classification.INCONCLUSIVE
    if high:
        return Classification.HIGH
    if low:
        return Classification.LOW
    return Classification.PASS if within_above and within_below else Classification.INCONCLUSIVE


def relative(value: float, baseline: float) -> float | None:
    """``value`` as a share of ``|baseline|``; None when the baseline is 0 (no relative shift exists)."""
    if baseline == 0 or not math.isfinite(baseline):
        return None
    if math.isinf(value):
        return value
    return value / abs(baseline)


def percent(share: float | None) -> str:
    """A relative shift for people: ``+42%``, ``-3.1%``, ``unbounded``."""
    if share is None:
        return "n/a"
    if math.isinf(share):
        return "+inf" if share > 0 else "-inf"
    if abs(share) >= 10:
        return f"{share * 100:+.0f}%"
    return f"{share * 100:+.3g}%"


__all__ = ["Judgement", "classify", "percent", "relative"]
