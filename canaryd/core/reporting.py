"""What the status tells a person: conditions built from the decided status and the observations.

Each condition is a function of the new status and of what was observed, so
the same situation always reads the same way and a decision repeated on its
own result rewrites nothing. The one exception is why a run failed, which
only the failing transition knows: it is written once and then kept.

A problem that newly shows in a condition (a missing target, route or
template) is also announced once with a Warning Event (``problem_events``),
so that it reaches ``kubectl describe`` and ``kubectl get events``.
"""

from __future__ import annotations

from collections.abc import Set

from canaryd.api.constants import ConditionType, InconclusivePolicy, Phase, Reason
from canaryd.api.models import CanaryStatus, Condition
from canaryd.core import schedule, traffic_share
from canaryd.core.conditions import ConditionStatus, DesiredCondition, merge_conditions
from canaryd.core.draft import Draft
from canaryd.core.effects import RecordEvent
from canaryd.core.phases import progress_blocker
from canaryd.core.readiness import primary_serves, replicas_text, routes_problem, start_blockers
from canaryd.core.traffic import shape_problems
from canaryd.core.verdicts import RoundOutcome, describe_round, round_outcome


def conditions(draft: Draft, phase_before: Phase | None) -> list[Condition]:
    desired = [_ready(draft), _progressing(draft, phase_before), _routes(draft)]
    shifted = _traffic_shifted(draft)
    if shifted is not None:
        desired.append(shifted)
    analysis = _analysis(draft)
    if analysis is not None:
        desired.append(analysis)
    paused = _paused(draft)
    if paused is not None:
        desired.append(paused)
    return merge_conditions(draft.status.conditions, desired, draft.now, draft.canary.metadata.generation)


def _ready(draft: Draft) -> DesiredCondition:
    observations = draft.observations
    status = draft.status
    kind = ConditionType.READY

    def false(reason: Reason, message: str) -> DesiredCondition:
        return DesiredCondition(kind, "False", reason.value, message)

    if observations.deleting or status.phase is Phase.TERMINATING:
        return false(Reason.DELETING, "the Canary is being deleted")
    if observations.target is None:
        namespace = draft.canary.metadata.namespace
        return false(
            Reason.TARGET_NOT_FOUND,
            f"Deployment {namespace}/{draft.target_name} named in spec.targetRef was not found: "
            "create it or correct spec.targetRef.name",
        )
    if observations.config_problems:
        return false(observations.config_reason, "; ".join(observations.config_problems))
    if status.phase in (None, Phase.INITIALIZING):
        primary = observations.primary
        if primary is None:
            return false(
                Reason.INITIALIZING,
                f"creating Deployment {draft.primary_name} and Services {draft.primary_name}, "
                f"{draft.canary_service}",
            )
        if not primary_serves(primary, status.revision):
            return false(
                Reason.PRIMARY_NOT_READY,
                f"waiting for Deployment {draft.primary_name} to roll out revision {status.revision} "
                f"({replicas_text(primary)})",
            )
        return false(
            Reason.INITIALIZING,
            f"waiting for Services {draft.primary_name} and {draft.canary_service}",
        )
    return DesiredCondition(
        kind,
        "True",
        Reason.INITIALIZED.value,
        f"{draft.primary_name} serves the promoted revision {status.last_promoted_revision}",
    )


def _progressing(draft: Draft, phase_before: Phase | None) -> DesiredCondition:
    status = draft.status
    phase = status.phase
    kind = ConditionType.PROGRESSING
    existing = status.condition(kind)

    def state(value: bool, reason: Reason, message: str) -> DesiredCondition:
        return DesiredCondition(kind, "True" if value else "False", reason.value, message)

    if draft.canary.spec.suspend and not draft.observations.deleting:
        return state(
            False,
            Reason.SUSPENDED,
            f"spec.suspend is true: canaryd leaves {draft.target_name} and its routes alone "
            f"(phase {phase.value if phase else 'none'}, canary weight {status.canary_weight}%)",
        )
    if phase is Phase.FAILED:
        if draft.progress_note is not None:
            return draft.progress_note
        if existing is not None and phase_before is Phase.FAILED:
            return DesiredCondition(kind, existing.status, existing.reason, existing.message)
        return state(False, Reason.ROLLED_BACK, f"revision {status.revision} was rolled back")
    if phase is Phase.TERMINATING or draft.observations.deleting:
        return state(False, Reason.DELETING, "the Canary is being deleted")
    if phase in (None, Phase.INITIALIZING):
        return state(False, Reason.INITIALIZING, "no run until initialization completes")
    target = draft.observations.target
    if phase in (Phase.INITIALIZED, Phase.SUCCEEDED) and target is not None:
        blocked = start_blockers(draft.canary, draft.observations)
        if target.template_hash != status.last_promoted_revision and blocked is not None:
            why = "; ".join(blocked[1])
            return state(False, blocked[0], f"revision {target.template_hash} cannot start: {why}")
    if phase in (Phase.INITIALIZED, Phase.SUCCEEDED):
        if phase is Phase.SUCCEEDED:
            return state(False, Reason.SUCCEEDED, f"revision {status.revision} promoted")
        return state(False, Reason.INITIALIZED, f"no run: waiting for a new revision of {draft.target_name}")
    if phase is Phase.WAITING:
        return state(
            False,
            Reason.WAITING_FOR_SLOT,
            f"revision {status.revision} waits for a free run slot (max concurrent runs reached)",
        )
    if phase is Phase.PROMOTING:
        primary = draft.observations.primary
        progress = f" ({replicas_text(primary)})" if primary is not None else ""
        return state(
            True,
            Reason.PROMOTING,
            f"waiting for {draft.primary_name} to roll out revision {status.revision}{progress}",
        )
    if phase is Phase.FINALIZING:
        return state(
            True,
            Reason.FINALIZING,
            f"returning all traffic to {draft.primary_name}, then scaling {draft.target_name} to 0",
        )
    return _run_state(draft)


def _run_state(draft: Draft) -> DesiredCondition:
    """The Progressing condition while a run is under way."""
    status = draft.status
    kind = ConditionType.PROGRESSING
    total = schedule.step_count(draft.canary)
    where = f"step {status.step} of {total} at {status.canary_weight}%"
    if status.paused:
        name = draft.canary.metadata.name
        return DesiredCondition(
            kind, "True", Reason.PAUSED.value, f"paused at {where}; resume with: kubectl canary resume {name}"
        )
    blocker = progress_blocker(draft)
    if blocker is not None:
        return DesiredCondition(kind, "True", blocker[0].value, f"{where}; {blocker[1]}")
    analysis = draft.canary.spec.analysis
    counts = (
        f"failed checks {status.failed_checks}/{analysis.threshold}, "
        f"errors {status.analysis_errors}/{analysis.error_threshold}"
    )
    due = schedule.next_analysis_at(draft.canary, status)
    next_text = f"; next analysis at {due.isoformat()}" if due is not None else ""
    outcome = (
        round_outcome(status.metrics, analysis.no_data_policy, analysis.scoring) if status.metrics else None
    )
    reason = {
        None: Reason.STEP_ADVANCED,
        RoundOutcome.ADVANCE: Reason.STEP_ADVANCED,
        RoundOutcome.FAILED_CHECK: Reason.ANALYSIS_FAILED,
        RoundOutcome.ERROR: Reason.ANALYSIS_ERROR,
        RoundOutcome.HOLD: Reason.ANALYSIS_NO_DATA,
        RoundOutcome.INCONCLUSIVE: Reason.ANALYSIS_INCONCLUSIVE,
    }[outcome]
    if outcome is RoundOutcome.INCONCLUSIVE:
        counts += "; waiting for enough evidence to compare the canary with the primary"
    if status.step == 0:
        reason = Reason.NEW_REVISION
    return DesiredCondition(kind, "True", reason.value, f"{where}; {counts}{next_text}")


def _routes(draft: Draft) -> DesiredCondition:
    observations = draft.observations
    kind = ConditionType.ROUTES_READY
    shapes = shape_problems(draft.canary, observations.routes)
    if observations.routes_usable and shapes:
        return DesiredCondition(kind, "False", Reason.TRAFFIC_MODE_UNSUPPORTED.value, "; ".join(shapes))
    if observations.routes_usable:
        names = ", ".join(f"{r.kind} {r.name}" for r in observations.routes)
        return DesiredCondition(
            kind, "True", Reason.ROUTES_ACCEPTED.value, f"{names}: accepted, both backendRefs present"
        )
    reason = Reason.ROUTE_NOT_FOUND
    for route in observations.routes:
        if route.usable:
            continue
        if not route.exists:
            reason = Reason.ROUTE_NOT_FOUND
        elif not route.has_backends:
            reason = Reason.ROUTE_MISSING_BACKENDS
        else:
            reason = Reason.ROUTE_NOT_ACCEPTED
        break
    return DesiredCondition(kind, "False", reason.value, routes_problem(observations))


def _traffic_shifted(draft: Draft) -> DesiredCondition | None:
    """TrafficShifted, with analysis.trafficShare: does the data plane carry the current step's weight?"""
    canary, status = draft.canary, draft.status
    if canary.spec.analysis.traffic_share is None:
        return None
    kind = ConditionType.TRAFFIC_SHIFTED
    record = traffic_share.record_for_step(status)
    if traffic_share.expected(canary, status) is not None:
        if record is not None and record.verified:
            return DesiredCondition(kind, "True", Reason.TRAFFIC_SHIFTED.value, record.message)
        if record is not None:
            return DesiredCondition(kind, "False", Reason.TRAFFIC_NOT_SHIFTED.value, record.message)
        text = traffic_share.blocker_text(canary, status) or ""
        return DesiredCondition(kind, "Unknown", Reason.MEASURING_TRAFFIC_SHARE.value, text)
    last = status.traffic.share if status.traffic is not None else None
    if last is not None and status.phase in (Phase.PROGRESSING, Phase.PROMOTING, Phase.FINALIZING):
        reason = Reason.TRAFFIC_SHIFTED if last.verified else Reason.TRAFFIC_NOT_SHIFTED
        verdict: ConditionStatus = "True" if last.verified else "False"
        return DesiredCondition(kind, verdict, reason.value, f"step {last.step}: {last.message}")
    if last is not None and status.phase is Phase.FAILED and not last.verified:
        return DesiredCondition(
            kind, "False", Reason.TRAFFIC_NOT_SHIFTED.value, f"step {last.step}: {last.message}"
        )
    return None


def _analysis(draft: Draft) -> DesiredCondition | None:
    status = draft.status
    if not status.metrics:
        return None
    analysis = draft.canary.spec.analysis
    kind = ConditionType.ANALYSIS_HEALTHY
    counts = (
        f"failed checks {status.failed_checks}/{analysis.threshold}, "
        f"errors {status.analysis_errors}/{analysis.error_threshold}"
    )
    message = f"last round: {describe_round(status.metrics)}; {counts}"
    outcome = round_outcome(status.metrics, analysis.no_data_policy, analysis.scoring)
    if outcome is RoundOutcome.INCONCLUSIVE:
        return DesiredCondition(kind, "Unknown", Reason.ANALYSIS_INCONCLUSIVE.value, message)
    if outcome is RoundOutcome.ADVANCE:
        return DesiredCondition(kind, "True", Reason.ANALYSIS_PASSED.value, message)
    if outcome is RoundOutcome.FAILED_CHECK:
        return DesiredCondition(kind, "False", Reason.ANALYSIS_FAILED.value, message)
    if outcome is RoundOutcome.ERROR:
        return DesiredCondition(kind, "False", Reason.ANALYSIS_ERROR.value, message)
    return DesiredCondition(kind, "Unknown", Reason.ANALYSIS_NO_DATA.value, message)


def _paused(draft: Draft) -> DesiredCondition | None:
    kind = ConditionType.PAUSED
    status = draft.status
    if status.paused:
        analysis = draft.canary.spec.analysis
        if (
            analysis.inconclusive_policy is InconclusivePolicy.PAUSE
            and status.metrics
            and round_outcome(status.metrics, analysis.no_data_policy, analysis.scoring)
            is RoundOutcome.INCONCLUSIVE
        ):
            name = draft.canary.metadata.name
            return DesiredCondition(
                kind,
                "True",
                Reason.ANALYSIS_INCONCLUSIVE.value,
                "paused because the comparison with the primary is inconclusive: "
                f"kubectl canary promote, abort or resume {name}",
            )
        return DesiredCondition(kind, "True", Reason.PAUSED.value, "paused by a manual action")
    if draft.status.condition(kind) is not None:
        return DesiredCondition(kind, "False", Reason.RESUMED.value, "not paused")
    return None


#: Conditions whose turning False (or changing reason while False) a person must hear about.
_WATCHED_CONDITIONS = (ConditionType.READY, ConditionType.ROUTES_READY)
#: False for a while in every healthy life, or already announced by the lifecycle's own Event.
_ROUTINE_REASONS = frozenset(
    {Reason.INITIALIZING, Reason.PRIMARY_NOT_READY, Reason.DELETING, Reason.ROLLED_BACK}
)


def problem_events(old: CanaryStatus, new: CanaryStatus, already: Set[str]) -> list[RecordEvent]:
    """Warning Events for problems that newly appear in conditions, once per new problem.

    A watched condition that is False with a reason that is not routine gets
    an Event when its status, reason or message differs from before, unless
    the decision already emits an Event with that reason (``already``).
    """
    found: list[RecordEvent] = []
    for type_ in _WATCHED_CONDITIONS:
        now = new.condition(type_)
        if now is None or now.status != "False" or now.reason in already or now.reason in _ROUTINE_REASONS:
            continue
        before = old.condition(type_)
        if before is not None and (before.status, before.reason, before.message) == (
            now.status,
            now.reason,
            now.message,
        ):
            continue
        found.append(RecordEvent(type="Warning", reason=now.reason, message=now.message))
    return found
