"""The token bucket's promise, in plain numbers: never more than the burst at once or the rate on average."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from canaryd.core.pacing import TokenBucket


def test_a_full_bucket_serves_the_burst_at_once_then_one_per_interval() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    assert [bucket.reserve(0.0) for _ in range(3)] == [0, 0, 0]
    assert [round(bucket.reserve(0.0), 6) for _ in range(3)] == [0.1, 0.2, 0.3]


def test_idle_time_refills_but_never_beyond_the_burst() -> None:
    bucket = TokenBucket(rate=2, burst=2)
    bucket.reserve(0.0)
    bucket.reserve(0.0)
    assert bucket.available(100.0) == 2
    assert bucket.reserve(100.0) == 0


def test_time_going_backwards_gives_nothing_back() -> None:
    bucket = TokenBucket(rate=1, burst=1)
    assert bucket.reserve(10.0) == 0
    assert bucket.reserve(5.0) == pytest.approx(1.0)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_nonsense_settings_are_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=rate, burst=burst)


@settings(deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=500),
    burst=st.integers(min_value=1, max_value=20),
    gaps=st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=200),
)
def test_callers_that_wait_as_told_never_exceed_burst_plus_rate_times_time(
    rate: float, burst: int, gaps: list[float]
) -> None:
    bucket = TokenBucket(rate=rate, burst=burst)
    now, starts = 0.0, []
    for gap in gaps:
        now += gap
        starts.append(now + bucket.reserve(now))
    starts.sort()
    for i, first in enumerate(starts):
        for j in range(i, len(starts)):
            window = starts[j] - first
            assert j - i + 1 <= burst + rate * window + 1e-6
