"""Durations and times at their limits: no decision overflows, whatever the status says.

A progress deadline of 2^62 seconds once made every reconcile of that Canary
raise OverflowError. The models now refuse it (and every other unbounded
duration or count); the times in status are not bounded by anything but the
calendar, and anyone allowed to write status may write year 9999 there.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from canaryd.api.constants import Phase
from canaryd.api.limits import MAX_CHECK_THRESHOLD, MAX_PROGRESS_DEADLINE_SECONDS
from canaryd.core import schedule
from canaryd.core.lifecycle import analysis_due, decide
from tests.core.world import make_canary, passing, progressing_world, with_status

EXTREME_TIMES = st.one_of(
    st.none(),
    st.datetimes(
        min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59), timezones=st.just(UTC)
    ),
    st.sampled_from(
        [
            datetime.max.replace(tzinfo=UTC),
            datetime.min.replace(tzinfo=UTC),
            datetime(9999, 12, 31, tzinfo=UTC),
        ]
    ),
)


@pytest.mark.parametrize(
    "changes",
    [
        {"progress_deadline_seconds": 2**62},
        {"progress_deadline_seconds": MAX_PROGRESS_DEADLINE_SECONDS + 1},
        {"interval": "2562047h"},
        {"interval": "25h"},
        {"threshold": MAX_CHECK_THRESHOLD + 1},
    ],
)
def test_unbounded_numbers_are_refused_with_the_limit(changes: dict) -> None:
    with pytest.raises(ValidationError) as refused:
        make_canary(**changes)
    text = str(refused.value)
    assert "less than or equal to" in text or "longer than 24h" in text


def test_the_largest_accepted_values_work() -> None:
    canary = make_canary(progress_deadline_seconds=MAX_PROGRESS_DEADLINE_SECONDS, interval="24h")
    world = progressing_world(canary=canary)
    assert world.status.phase is Phase.PROGRESSING
    deadline = schedule.progress_deadline_at(world.canary, world.status)
    assert deadline == world.status.last_progress_time + timedelta(hours=24, days=30)


def test_a_time_plus_a_duration_saturates_instead_of_overflowing() -> None:
    assert schedule.later(datetime(9999, 12, 31, tzinfo=UTC), timedelta(days=2)) == schedule.LATEST
    new_year = datetime(2026, 1, 1, tzinfo=UTC)
    assert schedule.later(new_year, timedelta(days=2)) == new_year + timedelta(days=2)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    phase=st.sampled_from([*Phase, None]),
    step=st.integers(0, 5),
    last_step=EXTREME_TIMES,
    started=EXTREME_TIMES,
    progress=EXTREME_TIMES,
    now=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
    analysis=st.booleans(),
)
def test_no_status_time_makes_a_decision_fail(
    phase: Phase | None,
    step: int,
    last_step: datetime | None,
    started: datetime | None,
    progress: datetime | None,
    now: datetime,
    analysis: bool,
) -> None:
    world = progressing_world(
        canary=make_canary(progress_deadline_seconds=MAX_PROGRESS_DEADLINE_SECONDS, interval="24h")
    )
    canary = with_status(
        world.canary,
        phase=phase,
        step=step,
        last_step_time=last_step,
        run_started_at=started,
        last_progress_time=progress,
    )
    observations = world.observations(passing() if analysis else None)
    due = analysis_due(canary, observations, now)
    decision = decide(canary, observations, now)
    assert isinstance(due, bool)
    assert decision.next_wakeup is None or decision.next_wakeup.tzinfo is not None
    # What is decided can be written and read back.
    assert type(decision.status).model_validate(decision.status.dump()) == decision.status
