"""Step and time arithmetic of a run, kept apart so it can be checked on its own.

A run goes through the stages of ``core.traffic`` (mirror or A/B iterations
at weight 0, then the weights of ``Analysis.weights()``): ``status.step``
counts the steps taken (0 means none yet, weight 0), and step ``n`` puts
``weights[n-1]`` on the canary. Every due time is computed from status fields,
so a controller that restarts resumes on time without replaying a step.

The durations are bounded (``canaryd.api.limits``) but the times they are
added to come from status, which anyone allowed to write it may set to year
9999: every sum of a time and a duration goes through :func:`later`, which
saturates at the latest representable time instead of raising.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from canaryd.api.models import Canary, CanaryStatus
from canaryd.core.traffic import stages

#: The shortest and longest pause between re-checks while waiting for a Deployment or a route.
MIN_RECHECK = timedelta(seconds=1)
MAX_RECHECK = timedelta(seconds=10)
#: The longest wait before a pass that failed (API error, crash) is tried again.
MAX_RETRY_BACKOFF = timedelta(seconds=60)


#: The latest time a due time can be: "never", for practical purposes.
LATEST = datetime.max.replace(tzinfo=UTC)


def later(moment: datetime, delta: timedelta) -> datetime:
    """``moment + delta``, or ``LATEST`` when the sum is beyond what a datetime can hold."""
    try:
        return moment + delta
    except OverflowError:
        return LATEST if delta >= timedelta(0) else datetime.min.replace(tzinfo=UTC)


def retry_backoff(attempts: int) -> timedelta:
    """How long to wait before trying a failed pass again: 0.5s, doubling per failed attempt, up to 60s."""
    if attempts > 16:
        return MAX_RETRY_BACKOFF
    return min(timedelta(seconds=0.5 * 2 ** (max(attempts, 1) - 1)), MAX_RETRY_BACKOFF)


def step_weights(canary: Canary) -> tuple[int, ...]:
    """The canary weight of each step, in order (0 for a mirror or A/B iteration)."""
    return tuple(stage.weight for stage in stages(canary))


def max_weight(canary: Canary) -> int:
    weights = step_weights(canary)
    return max(weights) if weights else 0


def step_count(canary: Canary) -> int:
    return len(step_weights(canary))


def weight_of_step(canary: Canary, step: int) -> int:
    """The weight step ``step`` puts on the canary (0 before the first step)."""
    if step <= 0:
        return 0
    weights = step_weights(canary)
    return weights[min(step, len(weights)) - 1]


def at_final_step(canary: Canary, status: CanaryStatus) -> bool:
    return status.step >= step_count(canary)


def interval(canary: Canary) -> timedelta:
    return canary.spec.analysis.interval_delta


def recheck_interval(canary: Canary) -> timedelta:
    """How soon to look again while waiting on something outside canaryd (readiness, routes)."""
    return max(MIN_RECHECK, min(MAX_RECHECK, interval(canary) / 4))


def last_check_time(status: CanaryStatus) -> datetime | None:
    """When the last analysis round ran (its results carry the time)."""
    times = [m.checked_at for m in status.metrics if m.checked_at is not None]
    return max(times) if times else None


def step_clock(status: CanaryStatus) -> datetime | None:
    """The moment the wait for the next analysis round started: the last step, resume or round."""
    candidates = [t for t in (status.last_step_time, last_check_time(status)) if t is not None]
    return max(candidates) if candidates else None


def next_analysis_at(canary: Canary, status: CanaryStatus) -> datetime | None:
    """When the next analysis round is due; None before the first step (it needs no analysis).

    One interval after the last step, round or resume, and never before the longest
    ``initialDelay`` of the metrics has passed since the last step.
    """
    if status.step <= 0:
        return None
    clock = step_clock(status) or status.last_progress_time or status.run_started_at
    if clock is None:
        return None
    due = later(clock, interval(canary))
    delay = canary.spec.analysis.initial_delay
    if delay and status.last_step_time is not None:
        due = max(due, later(status.last_step_time, delay))
    return due


def progress_deadline_at(canary: Canary, status: CanaryStatus) -> datetime | None:
    """When a run that keeps making no progress fails.

    Progress means a step taken (or the run started or resumed). After a step
    the next one cannot come before an interval has passed, so the deadline
    counts from the moment the next step was expected, not from the step
    itself: a long interval never fails a healthy run on its own.
    """
    anchor = status.last_progress_time or status.run_started_at
    if anchor is None:
        return None
    expected = later(anchor, interval(canary)) if status.step >= 1 else anchor
    return later(expected, timedelta(seconds=canary.spec.progress_deadline_seconds))
