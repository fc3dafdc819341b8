"""Evaluation times are aligned so that Canaries due within the same span ask Prometheus the same thing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from canaryd.core.evaluation import evaluation_time

NOON = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def test_times_within_one_span_align_to_its_start() -> None:
    times = [NOON + timedelta(milliseconds=ms) for ms in (0, 1, 499, 999)]
    assert {evaluation_time(t, 1.0) for t in times} == {NOON}
    assert evaluation_time(NOON + timedelta(seconds=7.5), 5.0) == NOON + timedelta(seconds=5)


def test_the_next_span_gets_the_next_time_and_zero_keeps_the_exact_time() -> None:
    assert evaluation_time(NOON + timedelta(seconds=1.2), 1.0) == NOON + timedelta(seconds=1)
    exact = NOON + timedelta(microseconds=123_456)
    assert evaluation_time(exact, 0) == exact


def test_an_aligned_time_is_never_after_the_decision_time() -> None:
    for offset in range(0, 10_000, 137):
        now = NOON + timedelta(milliseconds=offset)
        aligned = evaluation_time(now, 2.0)
        assert aligned <= now < aligned + timedelta(seconds=2)
