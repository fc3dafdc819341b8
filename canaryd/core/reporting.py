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

from canaryd.api.constants import ConditionType, HookType, Phase, Reason, Verdict
from canaryd.api.models import CanaryStatus, Condition
from canaryd.api.timestamps import format_rfc3339
from canaryd.core import hooks, schedule, traffic_share
from canaryd.core.conditions import ConditionStatus, DesiredCondition, merge_conditions
from canaryd.core.draft import Draft
from canaryd.core.effects import RecordEvent
from canaryd.core.leaving import termination_note
from canaryd.core.observations import Observations
from canaryd.core.phases import progress_blocker
from canaryd.core.readiness import primary_serves, replicas_text, routes_problem, start_blockers
from canaryd.core.traffic import traffic_refusal
from canaryd.core.verdicts import RoundOutcome, describe_round, pauses_for_a_person, round_outcome


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
    reconciled = draft.status.condition(ConditionType.RECONCILED)
    if reconciled is not None:
        # Written by the runtime about the passes themselves (``core.failures``): kept as it is.
        kept = DesiredCondition(reconciled.type, reconciled.status, reconciled.reason, reconciled.message)
        desired.append(kept)
    gated = _gated(draft)
    if gated is not None:
        desired.append(gated)
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
        if not primary_serves(primary, status.revision, draft.ready_percent):
            return false(
                Reason.PRIMARY_NOT_READY,
                f"waiting for Deployment {draft.primary_name} to roll out revision {status.revision} "
                f"({replicas_text(primary, draft.ready_percent)})",
            )
        return false(
            Reason.INITIALIZING,
            f"waiting for Services {draft.primary_name} and {draft.canary_service}",
        )
    if not observations.routes_usable:
        # A Canary whose routes canaryd cannot weight is not ready for its next run, though the
        # primary serves: the Ready column of `kubectl get canaries` says so, not only RoutesReady.
        return false(_routes_reason(observations), routes_problem(observations))
    refusal = traffic_refusal(draft.canary, observations.routes)
    if refusal is not None:
        # Nor is one whose routes or Gateways cannot carry its traffic mode: no run would start.
        return false(refusal[0], "; ".join(refusal[1]))
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
        return state(False, Reason.DELETING, termination_note(draft.canary, draft.observations))
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
        if status.gate is not None:
            return state(False, Reason.WAITING_FOR_CONFIRMATION, gate_message(draft))
        return state(
            False,
            Reason.WAITING_FOR_SLOT,
            f"revision {status.revision} waits for a free run slot (max concurrent runs reached)",
        )
    if phase is Phase.PROMOTING:
        primary = draft.observations.primary
        progress = f" ({replicas_text(primary, draft.ready_percent)})" if primary is not None else ""
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
        meta = draft.canary.metadata
        return DesiredCondition(
            kind,
            "True",
            Reason.PAUSED.value,
            f"paused at {where}; resume with: kubectl canary resume {meta.name} -n {meta.namespace}",
        )
    blocker = progress_blocker(draft)
    if blocker is not None:
        return DesiredCondition(kind, "True", blocker[0].value, f"{where}; {blocker[1]}")
    if status.gate is not None:
        return DesiredCondition(
            kind, "True", Reason.WAITING_FOR_CONFIRMATION.value, f"{where}; {gate_message(draft)}"
        )
    analysis = draft.canary.spec.analysis
    counts = (
        f"failed checks {status.failed_checks}/{analysis.threshold}, "
        f"errors {status.analysis_errors}/{analysis.error_threshold}"
    )
    due = schedule.next_analysis_at(draft.canary, status)
    next_text = f"; next analysis at {format_rfc3339(due, 'seconds')}" if due is not None else ""
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
    refusal = traffic_refusal(draft.canary, observations.routes)
    if observations.routes_usable and refusal is not None:
        return DesiredCondition(kind, "False", refusal[0].value, "; ".join(refusal[1]))
    if observations.routes_usable:
        names = ", ".join(f"{r.kind} {r.name}" for r in observations.routes)
        return DesiredCondition(
            kind, "True", Reason.ROUTES_ACCEPTED.value, f"{names}: accepted, both backendRefs present"
        )
    return DesiredCondition(kind, "False", _routes_reason(observations).value, routes_problem(observations))


def _routes_reason(observations: Observations) -> Reason:
    """The reason of the first route canaryd cannot weight."""
    for route in observations.routes:
        if route.usable:
            continue
        if not route.exists:
            return Reason.ROUTE_NOT_FOUND
        if not route.has_backends:
            return Reason.ROUTE_MISSING_BACKENDS
        if route.port_problem:
            return Reason.ROUTE_PORT_MISMATCH
        return Reason.ROUTE_NOT_ACCEPTED
    return Reason.ROUTE_NOT_FOUND


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
            status.metrics
            and round_outcome(status.metrics, analysis.no_data_policy, analysis.scoring)
            is RoundOutcome.INCONCLUSIVE
            and pauses_for_a_person(status.metrics, analysis.inconclusive_policy)
        ):
            meta = draft.canary.metadata
            what = describe_round(status.metrics, Verdict.INCONCLUSIVE)
            return DesiredCondition(
                kind,
                "True",
                Reason.ANALYSIS_INCONCLUSIVE.value,
                f"paused because the analysis is inconclusive ({what}): "
                f"kubectl canary promote, abort or resume {meta.name} -n {meta.namespace}",
            )
        return DesiredCondition(kind, "True", Reason.PAUSED.value, "paused by a manual action")
    if draft.status.condition(kind) is not None:
        return DesiredCondition(kind, "False", Reason.RESUMED.value, "not paused")
    return None


def gate_message(draft: Draft) -> str:
    """What holds the run at its gate, in words a person can act on."""
    status = draft.status
    assert status.gate is not None
    kind = HookType(status.gate.type)
    waiting = hooks.pending(draft.canary, status, kind)
    answers = []
    for webhook in waiting:
        record = status.webhook_record(webhook.name)
        if record is not None and record.called_at >= status.gate.since:
            answers.append(f"webhook {webhook.name} answered {hooks.describe(record)}")
        else:
            answers.append(f"webhook {webhook.name} not asked yet")
    held = hooks.GATE_HOLDS[kind]
    name = draft.canary.metadata.name
    return (
        f"{held} waits for {kind.value} ({'; '.join(answers) or 'all confirmed'}); "
        f"a person can still decide: kubectl canary promote|abort|pause {name}"
    )


def _gated(draft: Draft) -> DesiredCondition | None:
    kind = ConditionType.GATED
    status = draft.status
    if status.gate is not None:
        return DesiredCondition(kind, "True", Reason.WAITING_FOR_CONFIRMATION.value, gate_message(draft))
    if status.condition(kind) is not None:
        return DesiredCondition(kind, "False", Reason.GATE_OPEN.value, "no gate holds the run")
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
        if any(event.reason == now.reason for event in found):
            continue  # Ready repeats the route's problem: one Event for it
        # Already announced, by this condition or by another one that carried the same problem.
        shown_before = [old.condition(other) for other in _WATCHED_CONDITIONS]
        if any(
            before is not None and (before.status, before.reason, before.message) == (
                now.status,
                now.reason,
                now.message,
            )
            for before in shown_before
        ):
            continue
        found.append(RecordEvent(type="Warning", reason=now.reason, message=now.message))
    return found
