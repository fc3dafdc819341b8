"""When a Canary's webhooks are called, and what their answers mean for the run.

The calls themselves happen in the runtime, before a decision, like the
analysis round; this module says which webhooks that round calls
(:func:`due_webhooks`) and how their answers are kept and read, so that every
gating rule is a pure function the lifecycle's property tests exercise.

Which webhooks are due (none while a manual action waits, the Canary is
suspended or deleted, or the run is paused):

- ``confirm-rollout``: while a new revision waits at that gate
  (phase Waiting, ``status.gate``), with a run slot free;
- ``pre-rollout``: at step 0 of a run, once the canary is ready and the routes
  usable, until each has answered 2xx once in the run; a failed one is asked
  again one interval later;
- ``confirm-traffic-increase`` and ``confirm-promotion``: while ``status.gate``
  names them (the analysis passed and the step or the promotion waits), each
  webhook that has not answered 2xx since the gate was reached, again every
  interval;
- ``rollout``: once per interval from step 1, at its start (right after a step
  or an analysis round), so a load tester it calls sends load through the
  interval the next round judges; not in the round that first asks a
  confirm-traffic-increase or confirm-promotion gate (a gate that opens at
  once starts the next interval with its step), so a gated run calls it once
  per step, and again through the intervals a closed gate holds.

What the answers mean: a gate opens when every webhook of its type has
answered 2xx since the gate was reached; a failed ``pre-rollout`` call is a
failed check at once; ``rollout`` calls are judged with the analysis round
that ends their interval (a failure makes the round a failed check). The
background hooks (``post-rollout``, ``rollback``, ``event``) are never waited
for and never kept in status.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from canaryd.api.constants import BACKGROUND_HOOKS, HookType, Phase, Verdict
from canaryd.api.models import (
    Canary,
    CanaryStatus,
    GateStatus,
    Webhook,
    WebhookStatus,
    action_pending,
)
from canaryd.core import schedule
from canaryd.core.observations import HookResult, MetricResult, Observations
from canaryd.core.readiness import canary_ready

#: The name a rollout or pre-rollout webhook's result has among the metrics of a round.
METRIC_PREFIX = "webhook/"
#: The longest message kept in status for one call.
MAX_MESSAGE = 1024

GATE_OF_PHASE = {
    HookType.CONFIRM_ROLLOUT: Phase.WAITING,
    HookType.CONFIRM_TRAFFIC_INCREASE: Phase.PROGRESSING,
    HookType.CONFIRM_PROMOTION: Phase.PROGRESSING,
}
#: What a gate holds, for messages.
GATE_HOLDS = {
    HookType.CONFIRM_ROLLOUT: "the run",
    HookType.CONFIRM_TRAFFIC_INCREASE: "the next step",
    HookType.CONFIRM_PROMOTION: "the promotion",
}


def names(webhooks: Iterable[Webhook]) -> str:
    return ", ".join(w.name for w in webhooks)


def describe(record: WebhookStatus | HookResult) -> str:
    """One call in a few words, e.g. ``http-error 403 after 1 attempt: not yet``."""
    head = record.outcome.value if record.code is None else f"{record.outcome.value} {record.code}"
    tries = "1 attempt" if record.attempts == 1 else f"{record.attempts} attempts"
    text = head if record.attempts == 0 else f"{head} after {tries}"
    return text + (f": {record.message}" if record.message else "")


def _since(record: WebhookStatus | None, moment: datetime | None) -> bool:
    """The webhook was called at or after ``moment``."""
    return record is not None and moment is not None and record.called_at >= moment


def answered_ok_since(status: CanaryStatus, webhook: Webhook, moment: datetime | None) -> bool:
    record = status.webhook_record(webhook.name)
    return _since(record, moment) and record is not None and record.ok


def _asked_again(
    canary: Canary, record: WebhookStatus | None, moment: datetime | None, now: datetime
) -> bool:
    """A webhook that must answer 2xx since ``moment`` is due: never asked since, or one interval ago."""
    if record is None or not _since(record, moment):
        return True
    if record.ok:
        return False
    return now >= record.called_at + schedule.interval(canary)


def pending(canary: Canary, status: CanaryStatus, kind: HookType) -> tuple[Webhook, ...]:
    """The webhooks of a gate that have not answered 2xx since the gate was reached."""
    since = status.gate.since if status.gate is not None and status.gate.type == kind.value else None
    return tuple(w for w in canary.spec.analysis.webhooks_of(kind) if not answered_ok_since(status, w, since))


def confirmed(canary: Canary, status: CanaryStatus, kind: HookType) -> bool:
    """Every webhook of gate ``kind`` answered 2xx since the run reached the gate (True when it has none)."""
    hooks = canary.spec.analysis.webhooks_of(kind)
    if not hooks:
        return True
    return status.gate is not None and status.gate.type == kind.value and not pending(canary, status, kind)


def gate_at(kind: HookType, now: datetime) -> GateStatus:
    return GateStatus.model_validate({"type": kind.value, "since": now})


def pre_rollout_passed(canary: Canary, status: CanaryStatus) -> bool:
    """Every pre-rollout webhook answered 2xx in this run."""
    return all(
        answered_ok_since(status, w, status.run_started_at)
        for w in canary.spec.analysis.webhooks_of(HookType.PRE_ROLLOUT)
    )


def _run_can_move(canary: Canary, observations: Observations) -> bool:
    """What a run needs before any webhook of it is asked: the revision ready, the routes usable."""
    target = observations.target
    return (
        target is not None
        and target.template_hash == canary.status.revision
        and canary_ready(target)
        and observations.routes_usable
        and not observations.config_problems
    )


def due_webhooks(canary: Canary, observations: Observations, now: datetime) -> tuple[Webhook, ...]:
    """The gate and check webhooks the runtime calls before this decision (see the module's rules)."""
    status = canary.status
    webhooks = canary.spec.analysis.webhooks
    request = observations.action
    answered = status.last_action
    if (
        not webhooks
        or canary.spec.suspend
        or observations.deleting
        or status.paused
        or (request is not None and action_pending(request.id, answered.id if answered else None))
    ):
        return ()
    gate = HookType(status.gate.type) if status.gate is not None else None
    due: list[Webhook] = []
    if status.phase is Phase.WAITING:
        target = observations.target
        if (
            gate is HookType.CONFIRM_ROLLOUT
            and observations.run_slot_available
            and not observations.config_problems
            and target is not None
            and target.template_hash == status.revision
        ):
            due.extend(_gate_due(canary, status, gate, now))
        return tuple(due)
    if status.phase is not Phase.PROGRESSING or canary.spec.skip_analysis:
        return ()
    if not _run_can_move(canary, observations):
        return ()
    asking_gate_first = False
    if gate in (HookType.CONFIRM_TRAFFIC_INCREASE, HookType.CONFIRM_PROMOTION):
        assert gate is not None and status.gate is not None
        asked = _gate_due(canary, status, gate, now)
        due.extend(asked)
        asking_gate_first = bool(asked) and not any(
            _since(status.webhook_record(w.name), status.gate.since) for w in asked
        )
    if status.step == 0 and gate is None:
        for webhook in canary.spec.analysis.webhooks_of(HookType.PRE_ROLLOUT):
            record = status.webhook_record(webhook.name)
            if _asked_again(canary, record, status.run_started_at, now):
                due.append(webhook)
    # The first call of a gate may open it at once: the step it allows starts the next interval, whose
    # rollout calls follow the step. Calling them now too would send a load tester twice per step.
    if status.step >= 1 and not asking_gate_first:
        clock = schedule.step_clock(status)
        for webhook in canary.spec.analysis.webhooks_of(HookType.ROLLOUT):
            record = status.webhook_record(webhook.name)
            if clock is None or not _since(record, clock):
                due.append(webhook)
    return tuple(due)


def _gate_due(canary: Canary, status: CanaryStatus, kind: HookType, now: datetime) -> list[Webhook]:
    assert status.gate is not None
    return [
        w
        for w in canary.spec.analysis.webhooks_of(kind)
        if _asked_again(canary, status.webhook_record(w.name), status.gate.since, now)
    ]


def next_call_at(canary: Canary, status: CanaryStatus) -> datetime | None:
    """When a gate or pre-rollout webhook that answered no falls due again (None: none waits)."""
    times: list[datetime] = []
    if status.gate is not None:
        for webhook in pending(canary, status, HookType(status.gate.type)):
            record = status.webhook_record(webhook.name)
            if _since(record, status.gate.since) and record is not None:
                times.append(record.called_at + schedule.interval(canary))
    if status.phase is Phase.PROGRESSING and status.step == 0:
        for webhook in canary.spec.analysis.webhooks_of(HookType.PRE_ROLLOUT):
            record = status.webhook_record(webhook.name)
            if _since(record, status.run_started_at) and record is not None and not record.ok:
                times.append(record.called_at + schedule.interval(canary))
    return min(times) if times else None


def accepted_results(canary: Canary, observations: Observations, now: datetime) -> tuple[HookResult, ...]:
    """The round's results a decision uses: those of webhooks that are due (others are stale)."""
    if not observations.hooks:
        return ()
    due = {w.name for w in due_webhooks(canary, observations, now)}
    return tuple(r for r in observations.hooks if r.name in due)


def recorded(canary: Canary, status: CanaryStatus, results: Sequence[HookResult]) -> list[WebhookStatus]:
    """``status.webhooks`` with this round's results: the latest call of each gate or check webhook."""
    by_name = {w.name: w for w in status.webhooks}
    for result in results:
        by_name[result.name] = WebhookStatus(
            name=result.name,
            type=result.type,
            outcome=result.outcome,
            code=result.code if result.code is not None and 100 <= result.code <= 599 else None,
            message=result.message[:MAX_MESSAGE],
            attempts=max(0, result.attempts),
            called_at=result.called_at,
        )
    return [
        by_name[w.name]
        for w in canary.spec.analysis.webhooks
        if w.type not in BACKGROUND_HOOKS and w.name in by_name and by_name[w.name].type is w.type
    ]


def as_metric(record: WebhookStatus | HookResult) -> MetricResult:
    """A check webhook's call as a result of the round it belongs to (a failure fails the round)."""
    return MetricResult(
        name=f"{METRIC_PREFIX}{record.name}",
        verdict=Verdict.PASS if record.ok else Verdict.FAIL,
        value=float(record.code) if record.code is not None else None,
        message=f"{record.type.value} webhook: {describe(record)}",
    )


def rollout_results(canary: Canary, status: CanaryStatus, since: datetime | None) -> tuple[MetricResult, ...]:
    """The rollout webhooks' calls of the interval a round ends (called at or after ``since``)."""
    found: list[MetricResult] = []
    for webhook in canary.spec.analysis.webhooks_of(HookType.ROLLOUT):
        record = status.webhook_record(webhook.name)
        if record is not None and (since is None or record.called_at >= since):
            found.append(as_metric(record))
    return tuple(found)


def pre_rollout_results(canary: Canary, status: CanaryStatus) -> tuple[MetricResult, ...]:
    """The pre-rollout webhooks' latest calls in this run, as results."""
    found: list[MetricResult] = []
    for webhook in canary.spec.analysis.webhooks_of(HookType.PRE_ROLLOUT):
        record = status.webhook_record(webhook.name)
        if record is not None and _since(record, status.run_started_at):
            found.append(as_metric(record))
    return tuple(found)


def answer_changed(before: CanaryStatus, result: HookResult) -> bool:
    """The call answered differently from the webhook's previous call (worth an Event)."""
    previous = before.webhook_record(result.name)
    if previous is None:
        return True
    return (previous.outcome, previous.code, previous.message) != (
        result.outcome,
        result.code,
        result.message,
    )


def background_webhooks(canary: Canary, kind: HookType) -> tuple[Webhook, ...]:
    return canary.spec.analysis.webhooks_of(kind) if kind in BACKGROUND_HOOKS else ()
