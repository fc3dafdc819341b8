"""The automatic part of the lifecycle: what each phase does with what it observes.

:func:`advance` makes at most one transition; the caller repeats it until the
status stops changing, so one decision goes as far as the observations allow
and no further (every step that waits on the world waits for an observation
of it, never on the hope that an effect was applied).
"""

from __future__ import annotations

from canaryd.api.constants import ACTIVE_PHASES, InconclusivePolicy, Phase, Reason, Verdict
from canaryd.api.models import TrafficStatus
from canaryd.core import schedule, traffic_share
from canaryd.core.draft import Draft
from canaryd.core.observations import MetricResult, ShareReading
from canaryd.core.readiness import (
    canary_ready,
    primary_serves,
    replicas_text,
    routes_problem,
    start_blockers,
    traffic_on_primary,
)
from canaryd.core.traffic import shape_problems
from canaryd.core.verdicts import (
    RoundOutcome,
    decisive_failure,
    describe_result,
    describe_round,
    metric_statuses,
    round_outcome,
)


def advance(draft: Draft) -> None:
    """Make the one transition the observations call for, if any."""
    observations = draft.observations
    phase = draft.status.phase
    if observations.deleting:
        _begin_termination(draft)
        return
    if phase is Phase.TERMINATING:
        return  # a deletion that was withdrawn cannot happen; keep the phase until the object goes
    target = observations.target
    if target is None:
        _target_missing(draft)
        return
    if phase in (None, Phase.INITIALIZING) or observations.primary is None:
        _initialize(draft)
    elif phase in (Phase.INITIALIZED, Phase.SUCCEEDED, Phase.FAILED):
        _idle(draft)
    elif phase is Phase.WAITING:
        _waiting(draft)
    elif phase is Phase.PROGRESSING:
        _progressing(draft)
    elif phase is Phase.PROMOTING:
        _promoting(draft)
    elif phase is Phase.FINALIZING:
        _finalizing(draft)


def _begin_termination(draft: Draft) -> None:
    if draft.status.phase is Phase.TERMINATING:
        return
    message = (
        f"the Canary is being deleted: all traffic returns to {draft.primary_name} "
        "before the finalizer is removed"
    )
    if draft.observations.owns_workloads:
        message += (
            f"; traffic stays on {draft.primary_name}: Deployment {draft.primary_name} and Services "
            f"{draft.primary_name}, {draft.canary_service} are left in place: delete them after "
            "removing them from your routes"
        )
    draft.move(
        Reason.DELETING,
        message,
        phase=Phase.TERMINATING,
        weight=0,
        paused=False,
    )


def _target_missing(draft: Draft) -> None:
    status = draft.status
    lost_run = status.phase in (Phase.PROGRESSING, Phase.WAITING) or (
        status.phase is Phase.PROMOTING and not primary_serves(draft.observations.primary, status.revision)
    )
    if lost_run:
        draft.fail(
            Reason.TARGET_NOT_FOUND,
            f"Deployment {draft.canary.metadata.namespace}/{draft.target_name} disappeared during the run",
        )
    elif status.phase is Phase.PROMOTING:
        _promoting(draft)  # the primary already runs the revision: promotion needs no target
    elif status.phase is Phase.FINALIZING:
        _finalizing(draft)


def _initialize(draft: Draft) -> None:
    status = draft.status
    target = draft.observations.target
    assert target is not None
    revision = target.template_hash
    if status.phase is not Phase.INITIALIZING:
        recreating = status.phase is not None
        if recreating:
            message = (
                f"Deployment {draft.primary_name} is missing: recreating it from "
                f"{draft.target_name} (revision {revision})"
            )
        else:
            message = f"creating {draft.primary_name} from {draft.target_name} (revision {revision})"
        draft.move(
            Reason.INITIALIZING,
            message,
            phase=Phase.INITIALIZING,
            revision=revision,
            warning=recreating,
            paused=status.paused and status.phase not in ACTIVE_PHASES,
        )
        return
    if status.revision != revision:
        draft.update(revision=revision)
        return
    if primary_serves(draft.observations.primary, revision) and draft.observations.services_ready:
        draft.move(
            Reason.INITIALIZED,
            f"{draft.primary_name} serves revision {revision}; {draft.target_name} is scaled to 0 "
            "until a new revision arrives",
            phase=Phase.INITIALIZED,
            weight=0,
            step=0,
            last_promoted_revision=revision,
        )


def _idle(draft: Draft) -> None:
    status = draft.status
    target = draft.observations.target
    assert target is not None
    revision = target.template_hash
    if status.phase is Phase.FAILED and revision == status.revision:
        return  # a failed revision runs again only when someone asks (retry)
    if revision == status.last_promoted_revision:
        if status.phase is Phase.FAILED:
            draft.move(
                Reason.NO_NEW_REVISION,
                f"{draft.target_name} is back at the promoted revision {revision}: nothing to analyse",
                phase=Phase.INITIALIZED,
                revision=revision,
            )
        return
    if start_blockers(draft.canary, draft.observations) is not None:
        return  # the conditions (and a Warning Event) say what to fix before a run can start
    draft.start_run(
        revision, Reason.NEW_REVISION, f"new revision {revision} of {draft.target_name}: starting a run"
    )


def _waiting(draft: Draft) -> None:
    status = draft.status
    target = draft.observations.target
    assert target is not None
    revision = target.template_hash
    if revision == status.last_promoted_revision:
        draft.move(
            Reason.NO_NEW_REVISION,
            f"{draft.target_name} is back at the promoted revision {revision}: no run needed",
            phase=Phase.INITIALIZED,
            revision=revision,
        )
    elif revision != status.revision:
        draft.update(revision=revision)
    elif draft.observations.run_slot_available and start_blockers(draft.canary, draft.observations) is None:
        draft.start_run(revision, Reason.NEW_REVISION, f"a run slot is free: starting revision {revision}")


def _revision_moved_on(draft: Draft) -> bool:
    """Restart or stop the run when the target no longer runs the revision under analysis."""
    target = draft.observations.target
    assert target is not None
    if target.template_hash == draft.status.revision:
        return False
    if target.template_hash == draft.status.last_promoted_revision:
        draft.stop_run_reverted()
    else:
        draft.restart_run(target.template_hash)
    return True


def _progressing(draft: Draft) -> None:
    if _revision_moved_on(draft):
        return
    status = draft.status
    top = schedule.max_weight(draft.canary)
    if status.canary_weight > top or status.step > schedule.step_count(draft.canary):
        draft.move(
            Reason.STEP_ADVANCED,
            f"the step schedule changed: the canary weight is capped at maxWeight {top}%",
            weight=min(status.canary_weight, top),
            step=min(status.step, schedule.step_count(draft.canary)),
        )
        return
    if status.paused:
        return
    refused = next((r for r in draft.observations.routes if r.refused and r.has_additions), None)
    if refused is not None:
        draft.fail(
            Reason.ROUTE_REFUSED,
            f"{refused.problem}, with canaryd's traffic-mode rules or filters on it (does the Gateway "
            "implementation support them?)",
        )
        return
    if draft.share is not None:
        readings, draft.share = draft.share, None
        _record_share(draft, readings)
        return
    if draft.analysis is not None:
        results, draft.analysis = draft.analysis, None
        _judge(draft, results)
        return
    deadline = schedule.progress_deadline_at(draft.canary, status)
    if deadline is not None and draft.now >= deadline:
        seconds = draft.canary.spec.progress_deadline_seconds
        blocker = progress_blocker(draft)
        why = f": {blocker[1]}" if blocker else ""
        reason = Reason.TRAFFIC_NOT_SHIFTED if blocker and blocker[0] is Reason.TRAFFIC_NOT_SHIFTED else None
        draft.fail(
            reason or Reason.DEADLINE_EXCEEDED,
            f"no progress within progressDeadlineSeconds ({seconds}s){why}",
        )
        return
    if progress_blocker(draft) is None and status.step == 0:
        draft.take_step(Reason.STEP_ADVANCED, f"{draft.target_name} is ready")


def progress_blocker(draft: Draft) -> tuple[Reason, str] | None:
    """Why a run cannot move traffic right now, or None when nothing stands in the way."""
    observations = draft.observations
    target = observations.target
    if observations.config_problems:
        return observations.config_reason, "; ".join(observations.config_problems)
    if not canary_ready(target):
        if target is None:
            return Reason.CANARY_NOT_READY, f"Deployment {draft.target_name} not found"
        return (
            Reason.CANARY_NOT_READY,
            f"waiting for Deployment {draft.target_name} to be ready ({replicas_text(target)})",
        )
    if not observations.routes_usable:
        return Reason.ROUTE_NOT_ACCEPTED, f"no traffic moves: {routes_problem(observations)}"
    shapes = shape_problems(draft.canary, observations.routes)
    if shapes:
        return Reason.TRAFFIC_MODE_UNSUPPORTED, "; ".join(shapes)
    share = traffic_share.blocker_text(draft.canary, draft.status)
    if share is not None:
        record = traffic_share.record_for_step(draft.status)
        reason = Reason.TRAFFIC_NOT_SHIFTED if record is not None else Reason.MEASURING_TRAFFIC_SHARE
        return reason, share
    return None


def _record_share(draft: Draft, readings: tuple[ShareReading, ...]) -> None:
    """Keep one measurement of the canary's share; say so once when it first misses or meets the weight."""
    before = traffic_share.record_for_step(draft.status)
    record = traffic_share.judge(draft.canary, draft.status, readings, draft.now)
    if record is None:
        return
    current = draft.status.traffic or TrafficStatus()
    draft.update(traffic=current.model_copy(update={"share": record}))
    step = draft.status.step
    if record.verified:
        draft.event(
            "Normal", Reason.TRAFFIC_SHIFTED, f"step {step}: {record.message}; the analysis counts from now"
        )
    elif before is None:
        draft.event("Warning", Reason.TRAFFIC_NOT_SHIFTED, f"step {step} holds: {record.message}")


def _judge(draft: Draft, results: tuple[MetricResult, ...]) -> None:
    """Apply one analysis round to the run."""
    analysis = draft.canary.spec.analysis
    status = draft.status
    outcome = round_outcome(results, analysis.no_data_policy, analysis.scoring)
    draft.update(metrics=metric_statuses(results, draft.now))
    if outcome is RoundOutcome.ADVANCE:
        summary = f"analysis passed ({describe_round(results)})"
        if schedule.at_final_step(draft.canary, status):
            draft.begin_promotion(Reason.PROMOTING, f"{summary} at the final step")
        else:
            draft.take_step(Reason.ANALYSIS_PASSED, summary)
    elif outcome is RoundOutcome.FAILED_CHECK:
        failed = status.failed_checks + 1
        draft.update(failed_checks=failed)
        what = describe_round(results, Verdict.FAIL, Verdict.NO_DATA)
        draft.event(
            "Warning",
            Reason.ANALYSIS_FAILED,
            f"failed check {failed} of {analysis.threshold} at {status.canary_weight}%: {what}",
        )
        decisive = decisive_failure(results, analysis.scoring)
        if failed >= analysis.threshold:
            draft.fail(
                Reason.THRESHOLD_REACHED,
                f"{failed} failed checks reached the threshold of {analysis.threshold} ({what})",
            )
        elif decisive is not None:
            draft.fail(Reason.CRITICAL_METRIC_FAILED, f"{describe_result(decisive)} fails the run at once")
    elif outcome is RoundOutcome.ERROR:
        errors = status.analysis_errors + 1
        draft.update(analysis_errors=errors)
        what = describe_round(results, Verdict.ERROR)
        draft.event(
            "Warning",
            Reason.ANALYSIS_ERROR,
            f"analysis error {errors} of {analysis.error_threshold} (not counted as a failed check): {what}",
        )
        if errors >= analysis.error_threshold:
            draft.fail(
                Reason.ERROR_LIMIT_REACHED,
                f"{errors} analysis errors reached the limit of {analysis.error_threshold} ({what})",
            )
    elif outcome is RoundOutcome.INCONCLUSIVE:
        what = describe_round(results, Verdict.INCONCLUSIVE, Verdict.FAIL, Verdict.PASS)
        if analysis.inconclusive_policy is InconclusivePolicy.PAUSE:
            draft.update(paused=True)
            name = draft.canary.metadata.name
            draft.event(
                "Normal",
                Reason.ANALYSIS_INCONCLUSIVE,
                f"analysis inconclusive ({what}): paused at {status.canary_weight}% for a person to decide "
                f"(kubectl canary promote|abort|resume {name})",
            )
        else:
            deadline = schedule.progress_deadline_at(draft.canary, status)
            until = f" until the progress deadline at {deadline.isoformat()}" if deadline else ""
            draft.event(
                "Normal",
                Reason.ANALYSIS_INCONCLUSIVE,
                f"analysis inconclusive ({what}): holding at {status.canary_weight}% without counting "
                f"a failed check{until}",
            )
    else:
        deadline = schedule.progress_deadline_at(draft.canary, status)
        until = f" until the progress deadline at {deadline.isoformat()}" if deadline else ""
        draft.event(
            "Normal",
            Reason.ANALYSIS_NO_DATA,
            f"no data ({describe_round(results, Verdict.NO_DATA)}): holding at {status.canary_weight}% "
            f"without counting a failed check{until}",
        )


def _promoting(draft: Draft) -> None:
    status = draft.status
    primary = draft.observations.primary
    copied = primary is not None and primary.template_hash == status.revision
    if not copied and _revision_moved_on(draft):
        return  # the revision to copy is no longer in the target: analyse the new one instead
    if primary_serves(primary, status.revision):
        draft.move(
            Reason.FINALIZING,
            f"{draft.primary_name} serves revision {status.revision}: traffic returns to it",
            phase=Phase.FINALIZING,
            weight=0,
        )


def _finalizing(draft: Draft) -> None:
    target = draft.observations.target
    scaled_down = target is None or target.desired_replicas == 0
    if traffic_on_primary(draft.observations) and scaled_down:
        draft.move(
            Reason.SUCCEEDED,
            f"revision {draft.status.revision} promoted: {draft.primary_name} serves all traffic",
            phase=Phase.SUCCEEDED,
            last_promoted_revision=draft.status.revision,
        )
