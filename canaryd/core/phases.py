"""The automatic part of the lifecycle: what each phase does with what it observes.

:func:`advance` makes at most one transition; the caller repeats it until the
status stops changing, so one decision goes as far as the observations allow
and no further (every step that waits on the world waits for an observation
of it, never on the hope that an effect was applied).
"""

from __future__ import annotations

from datetime import datetime

from canaryd.api.constants import ACTIVE_PHASES, HookType, Phase, Reason, Verdict
from canaryd.api.models import MetricStatus, TrafficStatus
from canaryd.api.timestamps import format_rfc3339
from canaryd.core import hooks, schedule, traffic_share
from canaryd.core.draft import Draft
from canaryd.core.leaving import deletion_plan
from canaryd.core.observations import MetricResult, ShareReading
from canaryd.core.readiness import (
    canary_ready,
    primary_serves,
    replicas_text,
    routes_problem,
    start_blockers,
    step_weight_missing,
    traffic_on_primary,
)
from canaryd.core.traffic import traffic_refusal
from canaryd.core.verdicts import (
    RoundOutcome,
    decisive_failure,
    describe_result,
    describe_round,
    failure_limit_reached,
    mark_dry_run,
    metric_statuses,
    pauses_for_a_person,
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


def _clock(when: datetime) -> str:
    """A time in a message: RFC 3339 to the second (``kubectl canary status`` shows it as "in 12s")."""
    return format_rfc3339(when, "seconds")


def _begin_termination(draft: Draft) -> None:
    if draft.status.phase is Phase.TERMINATING:
        return
    draft.move(
        Reason.DELETING,
        deletion_plan(draft.canary, draft.observations),
        phase=Phase.TERMINATING,
        weight=0,
        paused=False,
    )


def _target_missing(draft: Draft) -> None:
    status = draft.status
    lost_run = status.phase in (Phase.PROGRESSING, Phase.WAITING) or (
        status.phase is Phase.PROMOTING
        and not primary_serves(draft.observations.primary, status.revision, draft.ready_percent)
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
    if primary_serves(draft.observations.primary, revision, draft.ready_percent) and (
        draft.observations.services_ready
    ):
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
        gate = status.gate
        # A confirmation was for the revision it was asked about: a new one is asked about afresh.
        draft.update(revision=revision, gate=hooks.gate_at(HookType(gate.type), draft.now) if gate else None)
    elif draft.observations.run_slot_available and start_blockers(draft.canary, draft.observations) is None:
        why = "confirmed" if status.gate is not None else "a run slot is free"
        draft.start_run(revision, Reason.NEW_REVISION, f"{why}: starting revision {revision}")


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
    gate = HookType(status.gate.type) if status.gate is not None else None
    if (
        draft.canary.spec.skip_analysis
        and gate is not HookType.CONFIRM_PROMOTION
        and progress_blocker(draft) is None
    ):
        draft.event(
            "Normal",
            Reason.ANALYSIS_SKIPPED,
            f"spec.skipAnalysis is true: revision {status.revision} is promoted without steps, checks "
            "or rollout webhooks",
        )
        draft.promote_or_gate(Reason.ANALYSIS_SKIPPED, f"analysis skipped at {status.canary_weight}%")
        return
    if gate in (HookType.CONFIRM_TRAFFIC_INCREASE, HookType.CONFIRM_PROMOTION):
        _at_gate(draft, gate)
        return  # a gate holds without a progress deadline: it waits for a decision, as a pause does
    if _restart_lapsed_step(draft):
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
        _first_step(draft)


def _at_gate(draft: Draft, gate: HookType) -> None:
    """A confirm-traffic-increase or confirm-promotion gate: go on once all its webhooks said yes."""
    if progress_blocker(draft) is not None or not hooks.confirmed(draft.canary, draft.status, gate):
        return
    webhooks = hooks.names(draft.canary.spec.analysis.webhooks_of(gate))
    if gate is HookType.CONFIRM_PROMOTION:
        draft.begin_promotion(Reason.CONFIRMED, f"webhook(s) {webhooks} confirmed the promotion")
    else:
        draft.take_step(Reason.CONFIRMED, f"webhook(s) {webhooks} confirmed the traffic increase")


def _first_step(draft: Draft) -> None:
    """Step 0 with a ready canary: the pre-rollout webhooks, then (through its gate) the first step."""
    canary, status = draft.canary, draft.status
    pre = canary.spec.analysis.webhooks_of(HookType.PRE_ROLLOUT)
    if pre:
        called = [r for r in draft.hooks if r.type is HookType.PRE_ROLLOUT]
        draft.hooks = tuple(r for r in draft.hooks if r.type is not HookType.PRE_ROLLOUT)  # used once
        if called:
            draft.update(metrics=metric_statuses(hooks.pre_rollout_results(canary, status), draft.now))
        failed = [r for r in called if not r.ok]
        if failed:
            _count_failed_check(draft, tuple(hooks.as_metric(r) for r in failed))
            return
        if not hooks.pre_rollout_passed(canary, draft.status):
            return  # the pre-rollout webhooks are asked before traffic moves
        draft.step_or_gate(
            Reason.STEP_ADVANCED,
            f"{draft.target_name} is ready; pre-rollout webhook(s) {hooks.names(pre)} passed",
        )
        return
    draft.step_or_gate(Reason.STEP_ADVANCED, f"{draft.target_name} is ready")


def _count_failed_check(
    draft: Draft, failures: tuple[MetricResult, ...], decisive: MetricResult | MetricStatus | None = None
) -> None:
    """One failed check of the run; the run fails at the threshold, on a decisive result or a failureLimit."""
    analysis = draft.canary.spec.analysis
    status = draft.status
    failed = status.failed_checks + 1
    what = describe_round(failures)
    draft.update(failed_checks=failed, gate=None)
    draft.event(
        "Warning",
        Reason.ANALYSIS_FAILED,
        f"failed check {failed} of {analysis.threshold} at {status.canary_weight}%: {what}",
    )
    limited = failure_limit_reached(analysis, draft.status.metrics)
    if failed >= analysis.threshold:
        draft.fail(
            Reason.THRESHOLD_REACHED,
            f"{failed} failed checks reached the threshold of {analysis.threshold} ({what})",
        )
    elif decisive is not None:
        draft.fail(Reason.CRITICAL_METRIC_FAILED, f"{describe_result(decisive)} fails the run at once")
    elif limited is not None:
        draft.fail(
            Reason.FAILURE_LIMIT_REACHED,
            f"metric {limited.name} failed {limited.failures} checks, its failureLimit ({what})",
        )


def _restart_lapsed_step(draft: Draft) -> bool:
    """A step whose interval passed without its weight on the routes starts its interval again now.

    That happens when a replica dies between writing a step's status and its
    route weights and another takes over after the interval: the weight goes
    on now (``converge`` holds it), and no round judges an interval in which the
    step's weight carried no traffic, so no step is skipped.
    """
    status = draft.status
    if not step_weight_missing(status, draft.observations) or progress_blocker(draft) is not None:
        return False
    due = schedule.next_analysis_at(draft.canary, status)
    if due is None or draft.now < due:
        return False
    draft.update(last_step_time=draft.now)
    return True


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
    refusal = traffic_refusal(draft.canary, observations.routes)
    if refusal is not None:
        return refusal[0], "; ".join(refusal[1])
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
    """Apply one analysis round, with the rollout webhooks' calls of its interval, to the run."""
    canary = draft.canary
    analysis = canary.spec.analysis
    status = draft.status
    since = schedule.step_clock(status)
    results = (*mark_dry_run(analysis, results), *hooks.rollout_results(canary, status, since))
    outcome = round_outcome(results, analysis.no_data_policy, analysis.scoring)
    draft.update(metrics=metric_statuses(results, draft.now, status.metrics))
    if outcome is RoundOutcome.ADVANCE:
        summary = f"analysis passed ({describe_round(results)})"
        if schedule.at_final_step(canary, status):
            draft.promote_or_gate(Reason.PROMOTING, f"{summary} at the final step")
        else:
            draft.step_or_gate(Reason.ANALYSIS_PASSED, summary)
    elif outcome is RoundOutcome.FAILED_CHECK:
        failures = tuple(r for r in results if not r.dry_run and r.verdict in (Verdict.FAIL, Verdict.NO_DATA))
        _count_failed_check(draft, failures or results, decisive_failure(results, analysis.scoring))
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
        if pauses_for_a_person(results, analysis.inconclusive_policy):
            draft.update(paused=True)
            meta = draft.canary.metadata
            draft.event(
                "Normal",
                Reason.ANALYSIS_INCONCLUSIVE,
                f"analysis inconclusive ({what}): paused at {status.canary_weight}% for a person to decide "
                f"(kubectl canary promote|abort|resume {meta.name} -n {meta.namespace})",
            )
        else:
            deadline = schedule.progress_deadline_at(draft.canary, status)
            until = f" until the progress deadline at {_clock(deadline)}" if deadline else ""
            draft.event(
                "Normal",
                Reason.ANALYSIS_INCONCLUSIVE,
                f"analysis inconclusive ({what}): holding at {status.canary_weight}% without counting "
                f"a failed check{until}",
            )
    else:
        deadline = schedule.progress_deadline_at(draft.canary, status)
        until = f" until the progress deadline at {_clock(deadline)}" if deadline else ""
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
    if primary_serves(primary, status.revision, draft.ready_percent):
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
