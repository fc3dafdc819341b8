"""Does the data plane carry the weight? The canary's measured share of the requests, judged against it.

A route's ``Accepted`` condition says the route is valid, not that the
proxies have been programmed with the new weights. With
``analysis.trafficShare``, after every weight change canaryd measures the
canary's share of the requests with a MetricTemplate (percent, one query
per route where the template uses ``{{ route }}``) over a window that starts
after the change, and holds the step until the share is within ``tolerance``
percentage points of the weight on every route: until then no analysis round
counts (no failed check either), and past the progress deadline the run
fails with reason ``TrafficNotShifted``. With session affinity the canary
also keeps the clients it served at earlier steps, so its share may exceed the
weight: only the lower bound applies.

Only weight steps are checked: during A/B testing and mirroring the canary's
weight is 0 by design. The measurement is an observation like a metric: the
runtime fetches it when ``due`` says so, and ``judge`` turns it into the
``status.traffic.share`` record the decision keeps (so a restart neither
repeats nor forgets a verified step).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from canaryd.api.constants import Phase
from canaryd.api.durations import parse_duration
from canaryd.api.models import Canary, CanaryStatus, TrafficShareStatus
from canaryd.core import schedule
from canaryd.core.observations import ShareReading
from canaryd.core.traffic import CANARY, stage_at


def window(canary: Canary) -> timedelta:
    """The window the share is measured over (``{{ interval }}``): trafficShare.interval or the analysis's."""
    check = canary.spec.analysis.traffic_share
    if check is not None and check.interval is not None:
        return parse_duration(check.interval)
    return schedule.interval(canary)


def expected(canary: Canary, status: CanaryStatus) -> int | None:
    """The weight the current step must show on the data plane; None when there is nothing to verify."""
    if canary.spec.analysis.traffic_share is None or status.phase is not Phase.PROGRESSING:
        return None
    stage = stage_at(canary, status.step)
    if stage is None or stage.mode != CANARY or stage.weight <= 0:
        return None
    return stage.weight


def record_for_step(status: CanaryStatus) -> TrafficShareStatus | None:
    share = status.traffic.share if status.traffic is not None else None
    return share if share is not None and share.step == status.step else None


def pending(canary: Canary, status: CanaryStatus) -> bool:
    """The current step's weight is not verified on the data plane yet."""
    if expected(canary, status) is None:
        return False
    record = record_for_step(status)
    return record is None or not record.verified


def measurable_at(canary: Canary, status: CanaryStatus) -> datetime | None:
    """When the next measurement may be taken: a full window after the step, then one recheck apart."""
    if not pending(canary, status) or status.last_step_time is None:
        return None
    first = status.last_step_time + window(canary)
    record = record_for_step(status)
    if record is None or record.checked_at is None:
        return first
    return max(first, record.checked_at + schedule.recheck_interval(canary))


def due(canary: Canary, status: CanaryStatus, now: datetime) -> bool:
    when = measurable_at(canary, status)
    return when is not None and now >= when


def _describe(value: float) -> str:
    return f"{value:.3g}%" if value < 10 else f"{value:.1f}%"


def judge(
    canary: Canary, status: CanaryStatus, readings: tuple[ShareReading, ...], now: datetime
) -> TrafficShareStatus | None:
    """The record of one measurement of the current step (None when there is nothing to verify)."""
    weight = expected(canary, status)
    check = canary.spec.analysis.traffic_share
    if weight is None or check is None:
        return None
    tolerance = check.tolerance
    lower_bound_only = canary.spec.analysis.session_affinity is not None
    missing = [r for r in readings if r.value is None or not math.isfinite(r.value)]
    if not readings or missing:
        why = "; ".join(f"{r.route}: {r.message or 'no data'}" for r in missing) or "no route measured"
        return TrafficShareStatus(
            step=status.step,
            expected=weight,
            measured=None,
            tolerance=tolerance,
            verified=False,
            checked_at=now,
            message=f"the canary's share of the requests could not be measured ({why})"[:1024],
        )

    def off_by(value: float) -> float:
        return max(0.0, weight - value) if lower_bound_only else abs(value - weight)

    worst = max(readings, key=lambda r: off_by(r.value or 0.0))
    measured = worst.value or 0.0
    verified = off_by(measured) <= tolerance + 1e-9
    bound = f"at least {weight - tolerance:g}%" if lower_bound_only else f"{weight}% ± {tolerance:g}"
    where = f" on {worst.route}" if len(readings) > 1 else ""
    if verified:
        message = f"the canary receives {_describe(measured)} of the requests{where} (expected {bound})"
    else:
        message = (
            f"the canary receives {_describe(measured)} of the requests{where}, expected {bound}: the data "
            "plane does not carry the new weight yet"
        )
    return TrafficShareStatus(
        step=status.step,
        expected=weight,
        measured=measured,
        tolerance=tolerance,
        verified=verified,
        checked_at=now,
        message=message[:1024],
    )


def blocker_text(canary: Canary, status: CanaryStatus) -> str | None:
    """Why the step holds for the data plane, or None when it does not."""
    if not pending(canary, status):
        return None
    record = record_for_step(status)
    if record is not None:
        return record.message
    weight = expected(canary, status)
    seconds = int(window(canary).total_seconds())
    return f"measuring the canary's share of the requests over {seconds}s after the step to {weight}%"


__all__ = ["ShareReading", "blocker_text", "due", "expected", "judge", "measurable_at", "pending", "window"]
