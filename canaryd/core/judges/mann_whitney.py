"""The fixed-sample judge: Mann-Whitney U with a Hodges-Lehmann shift, in the style of Kayenta.

One check judges the samples of the metric's last interval, canary against
primary, the way Kayenta's NetflixACAJudge does:

1. NaN and infinite samples are dropped (a ratio over a window without
   traffic is 0/0, which says nothing about either side);
2. with ``outliers: Remove``, samples beyond 3 interquartile ranges of their
   own side's quartiles are dropped (never when the interquartile range is 0:
   that would discard every window that differs from the bulk, e.g. each
   window with an error);
3. the Hodges-Lehmann estimate of the shift (the median of all pairwise
   differences canary - primary) and its distribution-free confidence
   interval (order statistics of those differences, cut where the Mann-Whitney
   U distribution puts ``(1 - confidence) / 2`` in each tail: exact for small
   samples, the normal approximation beyond);
4. the interval against the tolerance band ``tolerance x |mean of the
   primary|`` (or ``absoluteTolerance`` when that is wider): ``High``/``Low``
   when it lies beyond, ``Pass`` when it lies within, ``Inconclusive`` when
   it straddles the edge (too few samples to tell). Unlike Kayenta, a side
   with more than half its samples on one value (and others besides) never
   passes: windows that are mostly 0 (no error in a window of a few
   requests) give a median shift of 0 whatever the error rate does, so a
   rank test on them cannot see a regression of a rare event.

The test is a fixed-sample test: each check has its own false alarm
probability, so repeated checks add up, which is what ``analysis.threshold``
(several failed checks before a rollback) is for. Mann-Whitney's normal
approximation also reports a two-sided p-value (with the tie correction) in
the detail, for people.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from functools import lru_cache
from statistics import NormalDist

from canaryd.api.constants import Classification, CompareDirection, OutlierStrategy
from canaryd.core.judges.judgement import Judgement, classify, relative

#: Kayenta's default: a sample is an outlier beyond 3 interquartile ranges from the quartiles.
OUTLIER_IQR_FACTOR = 3.0
#: Up to this many pairs (n * m), the confidence interval uses the exact U distribution.
EXACT_PAIRS_LIMIT = 2500
#: A side with more than this share of its samples on one value cannot pass (see ``judge``).
MAX_TIED_SHARE = 0.5

_NORMAL = NormalDist()


def finite(values: Sequence[float]) -> list[float]:
    """The values that are numbers (NaN and ±Inf dropped)."""
    return [v for v in values if math.isfinite(v)]


def without_outliers(values: Sequence[float], factor: float = OUTLIER_IQR_FACTOR) -> list[float]:
    """``values`` without those beyond ``factor`` interquartile ranges of the quartiles.

    Fewer than four values, or an interquartile range of 0, keep everything.
    """
    if len(values) < 4:
        return list(values)
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    spread = q3 - q1
    if spread <= 0:
        return list(values)
    low, high = q1 - factor * spread, q3 + factor * spread
    return [v for v in values if low <= v <= high]


@lru_cache(maxsize=512)
def _u_cumulative(n: int, m: int) -> tuple[int, ...]:
    """Counts of arrangements with U <= u, for u = 0..n*m (U of the first sample, no ties)."""
    # The generating function of U is the Gaussian binomial [n+m, n]_q = prod_{i=1..n} (1-q^(m+i))/(1-q^i).
    size = n * m + 1
    coefficients = [0] * size
    coefficients[0] = 1
    for i in range(1, n + 1):
        shift = m + i
        for power in range(size - 1, shift - 1, -1):  # multiply by (1 - q^(m+i))
            coefficients[power] -= coefficients[power - shift]
        for power in range(i, size):  # divide by (1 - q^i)
            coefficients[power] += coefficients[power - i]
    cumulative = []
    total = 0
    for count in coefficients:
        total += count
        cumulative.append(total)
    return tuple(cumulative)


def _cut(n: int, m: int, alpha: float) -> int:
    """The largest c with P(U <= c - 1) <= alpha / 2; the interval is [d_(c), d_(nm-c+1)] (0: none)."""
    pairs = n * m
    if pairs <= EXACT_PAIRS_LIMIT:
        cumulative = _u_cumulative(n, m)
        arrangements = cumulative[-1]
        c = 0
        while c < pairs and cumulative[c] / arrangements <= alpha / 2:
            c += 1
        return c
    sigma = math.sqrt(pairs * (n + m + 1) / 12)
    c = math.floor(pairs / 2 + 0.5 + _NORMAL.inv_cdf(alpha / 2) * sigma)
    return max(0, min(c, pairs // 2))


def hodges_lehmann(
    canary: Sequence[float], primary: Sequence[float], confidence: float
) -> tuple[float, float, float]:
    """The shift estimate (median of pairwise differences) and its confidence interval.

    With too few samples for the confidence asked, the interval is infinite.
    """
    differences = sorted(c - p for c in canary for p in primary)
    estimate = statistics.median(differences)
    cut = _cut(len(canary), len(primary), 1 - confidence)
    if cut < 1:
        return estimate, -math.inf, math.inf
    return estimate, differences[cut - 1], differences[len(differences) - cut]


def tied_share(values: Sequence[float]) -> float:
    """The share of ``values`` equal to the most common one, when they are not all equal (else 0).

    All equal values hide nothing (their mean is their median); mostly equal
    ones with a few others (windows without errors, and some with) do.
    """
    counts: dict[float, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    if len(counts) < 2:
        return 0.0
    return max(counts.values()) / len(values)


def u_test_p_value(canary: Sequence[float], primary: Sequence[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test (normal approximation with tie correction)."""
    n, m = len(canary), len(primary)
    pooled = sorted([(v, 0) for v in canary] + [(v, 1) for v in primary])
    rank_sum = 0.0
    tie_term = 0.0
    index = 0
    while index < len(pooled):
        end = index
        while end + 1 < len(pooled) and pooled[end + 1][0] == pooled[index][0]:
            end += 1
        ties = end - index + 1
        average_rank = (index + end) / 2 + 1
        rank_sum += average_rank * sum(1 for k in range(index, end + 1) if pooled[k][1] == 0)
        tie_term += ties**3 - ties
        index = end + 1
    u = rank_sum - n * (n + 1) / 2
    total = n + m
    variance = n * m / 12 * ((total + 1) - tie_term / (total * (total - 1))) if total > 1 else 0.0
    if variance <= 0:
        return 1.0
    z = (abs(u - n * m / 2) - 0.5) / math.sqrt(variance)
    return min(1.0, 2 * (1 - _NORMAL.cdf(max(z, 0.0))))


def judge(
    canary: Sequence[float],
    primary: Sequence[float],
    *,
    direction: CompareDirection,
    tolerance: float,
    confidence: float,
    outliers: OutlierStrategy = OutlierStrategy.KEEP,
    absolute_tolerance: float = 0.0,
) -> Judgement:
    """The fixed-sample verdict on one interval's samples of each side.

    The band is ``max(tolerance x |mean of the primary|, absolute_tolerance)``.
    """
    canary_values, primary_values = finite(canary), finite(primary)
    if outliers is OutlierStrategy.REMOVE:
        canary_values, primary_values = without_outliers(canary_values), without_outliers(primary_values)
    if not canary_values or not primary_values:
        side = "canary" if not canary_values else "primary"
        return Judgement(
            None,
            canary_samples=len(canary_values),
            primary_samples=len(primary_values),
            detail=f"no {side} samples in the interval",
        )
    canary_mean = statistics.fmean(canary_values)
    primary_mean = statistics.fmean(primary_values)
    estimate, lower, upper = hodges_lehmann(canary_values, primary_values, confidence)
    band = max(tolerance * abs(primary_mean), absolute_tolerance)
    classification = classify(lower, upper, band, direction)
    p_value = u_test_p_value(canary_values, primary_values)
    detail = f"Mann-Whitney p={p_value:.3g}"
    if math.isinf(lower) or math.isinf(upper):
        detail += f"; too few samples for a {confidence:.0%} interval"
    tied = max(tied_share(canary_values), tied_share(primary_values))
    if classification is Classification.PASS and tied > MAX_TIED_SHARE:
        # Mostly equal samples (typically windows without a single error) hide any change of the
        # mean from a rank test: the median shift is 0 whatever the rate. No pass on them.
        classification = Classification.INCONCLUSIVE
        detail += (
            f"; {tied:.0%} of one side's samples are equal, which hides a shift from a rank test "
            "(use a longer resolution, or the Sequential judge with counts)"
        )
    return Judgement(
        classification,
        canary=canary_mean,
        primary=primary_mean,
        shift=relative(estimate, primary_mean),
        shift_lower=relative(lower, primary_mean),
        shift_upper=relative(upper, primary_mean),
        canary_samples=len(canary_values),
        primary_samples=len(primary_values),
        detail=detail,
    )


__all__ = ["finite", "hodges_lehmann", "judge", "u_test_p_value", "without_outliers"]
