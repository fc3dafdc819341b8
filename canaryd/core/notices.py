"""Which chat notifications a decision sends: a run started, a step, a promotion, a rollback, a gate.

Each is read off the change the decision makes to the status, so a decision
handed its own result again sends nothing, and every one names what a person
in the channel needs: the revision, the weight and step, for a rollback the
check that failed with its value and the range it had to be in, for a gate
the webhook it waits for. Which of them reach a channel (steps are off by
default) is the runtime's to filter with :func:`canaryd.core.notifications.wanted`.
"""

from __future__ import annotations

from canaryd.api.constants import HookType, NotificationKind, Phase, Verdict
from canaryd.api.models import Analysis, MetricStatus
from canaryd.core import hooks
from canaryd.core.draft import Draft
from canaryd.core.notifications import Notification


def _threshold(analysis: Analysis, metric: MetricStatus) -> str | None:
    """The range a failed check had to be in, e.g. ``>= 99`` or ``within 25% of the primary``."""
    check = next((m for m in analysis.metrics if m.name == metric.name), None)
    if check is None:
        return None
    if check.threshold_range is not None:
        low, high = check.threshold_range.min, check.threshold_range.max
        if low is not None and high is not None:
            return f"{low:g} to {high:g}"
        return f">= {low:g}" if low is not None else f"<= {high:g}"
    if check.compare is not None:
        return f"{check.compare.direction.value} within {check.compare.tolerance:g}x of the primary"
    return None


def _failed_metric(analysis: Analysis, metrics: list[MetricStatus]) -> MetricStatus | None:
    return next((m for m in metrics if m.verdict is Verdict.FAIL and not m.dry_run), None)


def notices(draft: Draft) -> list[Notification]:
    """The notifications this decision's change of status calls for, in the order they happened."""
    canary, before, after = draft.canary, draft.canary.status, draft.status
    if canary.spec.suspend or draft.observations.deleting:
        return []

    def notification(kind: NotificationKind, **extra: object) -> Notification:
        return Notification(
            kind=kind,
            name=canary.metadata.name,
            namespace=canary.metadata.namespace,
            at=draft.now,
            revision=after.revision,
            weight=after.canary_weight,
            step=after.step,
            phase=after.phase.value if after.phase is not None else None,
            **extra,  # type: ignore[arg-type]
        )

    found: list[Notification] = []
    new_run = after.phase is Phase.PROGRESSING and after.run_started_at != before.run_started_at
    if new_run:
        found.append(
            notification(NotificationKind.RUN_STARTED, message=f"analysing revision {after.revision}")
        )
    if after.phase is Phase.PROGRESSING and after.step > (0 if new_run else before.step):
        found.append(notification(NotificationKind.STEP, message=f"canary weight {after.canary_weight}%"))
    if after.gate is not None and (before.gate is None or before.gate != after.gate):
        kind = HookType(after.gate.type)
        waiting = hooks.pending(canary, after, kind) or canary.spec.analysis.webhooks_of(kind)
        found.append(
            notification(
                NotificationKind.WAITING_ON_GATE,
                gate=hooks.names(waiting),
                gate_type=kind.value,
                message=f"{hooks.GATE_HOLDS[kind]} waits for {kind.value}",
            )
        )
    if after.phase is Phase.SUCCEEDED and before.phase is not Phase.SUCCEEDED:
        found.append(
            notification(NotificationKind.PROMOTED, message=f"revision {after.revision} serves all traffic")
        )
    if after.phase is Phase.FAILED and before.phase is not Phase.FAILED:
        failed = _failed_metric(canary.spec.analysis, after.metrics)
        note = draft.progress_note
        found.append(
            notification(
                NotificationKind.ROLLED_BACK,
                message=note.message if note is not None else f"revision {after.revision} rolled back",
                failed_metric=failed.name if failed is not None else None,
                failed_value=failed.value if failed is not None else None,
                threshold=_threshold(canary.spec.analysis, failed) if failed is not None else None,
            )
        )
    return found
