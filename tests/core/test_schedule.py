"""Step weights and due times, computed from status alone."""

from __future__ import annotations

from datetime import timedelta

import pytest

from canaryd.api.constants import Verdict
from canaryd.api.models import CanaryStatus, MetricStatus
from canaryd.core import schedule
from tests.core.world import T0, make_canary


@pytest.mark.parametrize(
    ("kwargs", "weights"),
    [
        ({"step_weights": [5, 10, 25, 50]}, (5, 10, 25, 50)),
        ({"step_weight": 10, "max_weight": 50}, (10, 20, 30, 40, 50)),
        ({"step_weight": 20, "max_weight": 50}, (20, 40, 50)),
        ({"step_weight": 30}, (30, 50)),
    ],
)
def test_schedules(kwargs: dict[str, object], weights: tuple[int, ...]) -> None:
    canary = make_canary(**kwargs)  # type: ignore[arg-type]
    assert schedule.step_weights(canary) == weights
    assert schedule.max_weight(canary) == weights[-1]
    assert [schedule.weight_of_step(canary, n) for n in range(len(weights) + 2)] == [
        0,
        *weights,
        weights[-1],
    ]


def test_no_analysis_is_due_before_the_first_step() -> None:
    canary = make_canary()
    assert schedule.next_analysis_at(canary, CanaryStatus(step=0, run_started_at=T0)) is None


def test_the_next_round_is_one_interval_after_the_later_of_step_and_last_round() -> None:
    canary = make_canary(interval="30s")
    status = CanaryStatus(step=1, last_step_time=T0)
    assert schedule.next_analysis_at(canary, status) == T0 + timedelta(seconds=30)
    checked = T0 + timedelta(seconds=31)
    status = status.model_copy(
        update={"metrics": [MetricStatus(name="m", verdict=Verdict.FAIL, checked_at=checked)]}
    )
    assert schedule.next_analysis_at(canary, status) == checked + timedelta(seconds=30)


def test_the_progress_deadline_counts_from_when_progress_was_expected() -> None:
    canary = make_canary(interval="1m", progress_deadline_seconds=300)
    waiting_for_first_step = CanaryStatus(step=0, run_started_at=T0, last_progress_time=T0)
    assert schedule.progress_deadline_at(canary, waiting_for_first_step) == T0 + timedelta(seconds=300)
    after_a_step = CanaryStatus(step=2, run_started_at=T0, last_progress_time=T0 + timedelta(minutes=5))
    assert schedule.progress_deadline_at(canary, after_a_step) == T0 + timedelta(minutes=11)


@pytest.mark.parametrize(("interval", "seconds"), [("1s", 1), ("20s", 5), ("1m", 10), ("1h", 10)])
def test_rechecks_are_a_fraction_of_the_interval_within_bounds(interval: str, seconds: float) -> None:
    assert schedule.recheck_interval(make_canary(interval=interval)) == timedelta(seconds=seconds)


def test_a_failing_pass_is_retried_sooner_first_then_at_most_every_minute() -> None:
    delays = [schedule.retry_backoff(n).total_seconds() for n in range(1, 11)]
    assert delays == [0.5, 1, 2, 4, 8, 16, 32, 60, 60, 60]
