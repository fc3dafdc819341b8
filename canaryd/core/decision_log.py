"""The controller's log of a rollout: one structured line per thing that happened, derived from a decision.

A person following a rollout in the controller's logs (or a log pipeline
counting rollbacks) wants every phase change, step, analysis verdict with its
metric values, manual action and rollback, each as one line with the same
fields (canary, namespace, revision, phase, weight, step, reason), and nothing
for the reconciles in which nothing happened, so that the log of 1,000
Canaries stays readable: its volume follows what happens, not how often
canaryd looks.

Everything a decision changes is announced by its Events (``core.effects.
RecordEvent``: every move of phase or weight, every answered action, every
failed or unevaluable check, every new problem, every route put back), so
the lines are those Events, in the same order, classified and enriched from
the status before and after the decision. An analysis round is one line more
when no Event of it carries its verdict (a passed round's Event is the step it
led to): every round appears exactly once with each metric's verdict and value.

This is the only place that decides what the controller logs about a
rollout; the runtime writes the lines as they come.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from canaryd.api.constants import Phase, Reason, Verdict
from canaryd.api.models import Canary, CanaryStatus, MetricStatus
from canaryd.core import schedule
from canaryd.core.effects import Effect, RecordEvent, SetRouteWeights

Kind = Literal["phase changed", "step", "analysis", "manual action", "rolled back", "problem"]

#: Reasons of the Events that carry an analysis round's verdict when it is not a pass.
_VERDICT_REASONS = frozenset(
    {Reason.ANALYSIS_FAILED, Reason.ANALYSIS_ERROR, Reason.ANALYSIS_NO_DATA, Reason.ANALYSIS_INCONCLUSIVE}
)
#: Reasons of the Events that move the weight within a run.
_STEP_REASONS = frozenset({Reason.STEP_ADVANCED, Reason.ANALYSIS_PASSED, Reason.STEPPED_MANUALLY})
#: Reasons with which the controller answers a manual action (core.actions).
_ACTION_REASONS = frozenset(
    {
        Reason.PAUSED,
        Reason.RESUMED,
        Reason.PROMOTED_MANUALLY,
        Reason.STEPPED_MANUALLY,
        Reason.RETRIED,
        Reason.ABORTED,
        Reason.ACTION_IGNORED,
    }
)

LogValue = str | int | float | bool | None | Mapping[str, "LogValue"]


@dataclass(frozen=True)
class LogLine:
    """One line of the controller's log: what happened (``message``) and its fields."""

    kind: Kind
    message: str
    fields: Mapping[str, LogValue] = field(default_factory=dict)


def decision_log(
    canary: Canary, before: CanaryStatus, after: CanaryStatus, effects: tuple[Effect, ...]
) -> tuple[LogLine, ...]:
    """The lines for one decision: ``canary`` as it was read, its status ``before``, the decided ``after``."""
    events = [e for e in effects if isinstance(e, RecordEvent)]
    for write in (e for e in effects if isinstance(e, SetRouteWeights)):
        events.extend(drift.event for drift in write.drifted)
    common = _common_fields(canary, before, after)
    judged = _round_judged(before, after)
    answered = after.last_action if _action_answered(before, after) else None
    lines: list[LogLine] = []
    verdict_logged = False
    action_logged = False
    for event in events:
        reason = event.reason
        kind = _kind(event, before, after)
        extra: dict[str, LogValue] = {"reason": reason, "type": event.type}
        if judged and kind == "analysis" and not verdict_logged:
            extra.update(_round_fields(canary, after))
            verdict_logged = True
        if answered is not None and reason in _ACTION_REASONS and not action_logged:
            extra.update(
                action=answered.action.value,
                action_id=answered.id,
                result=answered.result,
                requested_by=_requested_by(before, answered.id),
            )
            action_logged = True
        lines.append(LogLine(kind, event.message, {**common, **extra}))
    if judged and not verdict_logged:
        fields = {**common, "reason": Reason.ANALYSIS_PASSED.value, "type": "Normal"}
        lines.insert(0, LogLine("analysis", "analysis passed", {**fields, **_round_fields(canary, after)}))
    return tuple(lines)


def _common_fields(canary: Canary, before: CanaryStatus, after: CanaryStatus) -> dict[str, LogValue]:
    fields: dict[str, LogValue] = {
        "canary": canary.metadata.name,
        "namespace": canary.metadata.namespace,
        "revision": after.revision,
        "phase": after.phase.value if after.phase else None,
        "weight": after.canary_weight,
        "step": after.step,
        "steps": schedule.step_count(canary),
    }
    if before.phase != after.phase:
        fields["phase_before"] = before.phase.value if before.phase else None
    if before.canary_weight != after.canary_weight:
        fields["weight_before"] = before.canary_weight
    return fields


def _kind(event: RecordEvent, before: CanaryStatus, after: CanaryStatus) -> Kind:
    reason = event.reason
    if reason in _VERDICT_REASONS:
        return "analysis"
    failed_now = after.phase is Phase.FAILED and before.phase is not Phase.FAILED
    if failed_now and event.type == "Warning" and reason != Reason.ROUTE_WEIGHTS_DRIFTED:
        return "rolled back"
    if reason in _ACTION_REASONS and reason not in _STEP_REASONS:
        return "manual action"
    if reason in _STEP_REASONS:
        return "step"
    if event.type == "Warning" and reason not in (Reason.INITIALIZING, Reason.REVISION_CHANGED):
        return "problem"
    return "phase changed"


def _round_judged(before: CanaryStatus, after: CanaryStatus) -> bool:
    """Whether this decision applied an analysis round (it writes the metrics with a newer check time)."""
    if not after.metrics or after.metrics == before.metrics:
        return False
    newest = max((m.checked_at for m in after.metrics if m.checked_at is not None), default=None)
    previous = max((m.checked_at for m in before.metrics if m.checked_at is not None), default=None)
    return newest is not None and (previous is None or newest > previous)


def _round_fields(canary: Canary, after: CanaryStatus) -> dict[str, LogValue]:
    analysis = canary.spec.analysis
    return {
        "verdict": _round_verdict(after.metrics),
        "metrics": {m.name: _metric_fields(m) for m in after.metrics},
        "failed_checks": after.failed_checks,
        "threshold": analysis.threshold,
        "analysis_errors": after.analysis_errors,
    }


def _round_verdict(metrics: list[MetricStatus]) -> str:
    """The worst verdict of the round, as ``describe_round`` orders them."""
    order = (Verdict.FAIL, Verdict.ERROR, Verdict.INCONCLUSIVE, Verdict.NO_DATA, Verdict.PASS)
    found = {m.verdict for m in metrics}
    return next((v.value for v in order if v in found), Verdict.PASS.value)


def _metric_fields(metric: MetricStatus) -> dict[str, LogValue]:
    fields: dict[str, LogValue] = {"verdict": metric.verdict.value, "value": metric.value}
    comparison = metric.comparison
    if comparison is not None:
        fields.update(primary=comparison.primary, shift=comparison.shift)
    return fields


def _action_answered(before: CanaryStatus, after: CanaryStatus) -> bool:
    new, old = after.last_action, before.last_action
    return new is not None and (old is None or old.id != new.id)


def _requested_by(before: CanaryStatus, action_id: str) -> str:
    request = before.requested_action
    return request.requested_by if request is not None and request.id == action_id else ""


__all__ = ["LogLine", "decision_log"]
