"""The Canary lifecycle as one pure function.

``decide(canary, observations, now)`` returns the status canaryd should write,
the effects to apply, and when to look at the Canary again. It is the only
place where canaryd decides anything about a rollout.

A Canary that may not act at all (``core.claims.refusal``: its target is
canaryd's own, another Canary comes first on it, or its names cannot exist)
touches nothing: its status says why (Ready=False, with a Warning Event) and
its deletion only gives up what it owns before its finalizer goes.
A suspended Canary (``spec.suspend``) is left as it is: no transition, no
effect on its Deployments or routes, only its own finalizer is managed; its
deletion still returns all traffic to the primary before the finalizer goes.
A deleted Canary first scales the target back up (``spec.revertOnDeletion``),
then leaves ``<target>-primary`` and both Services behind, released from its
ownership, because the app team's routes still send traffic to them
(``core.leaving``).
Otherwise a decision first answers a pending manual action, then lets the phases
advance as far as the observations allow (several transitions may happen in
one decision, e.g. a run that starts and takes its first step at once), then
derives the conditions and the effects from the resulting status. Because
effects and conditions depend only on that status and the observations, a
decision handed its own result (with the analysis round and the action
already used) changes nothing and emits no Event.

The effects come in the order the runtime applies them: the Events first
(they describe the status written just before, so they go out even if a later
effect fails), then the changes to the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from canaryd.api.constants import GATE_HOOKS, ConditionType, HookOutcome, HookType, Phase, Reason
from canaryd.api.models import Canary, CanaryStatus, action_pending
from canaryd.core import hooks, schedule, traffic_share
from canaryd.core.actions import handle_action
from canaryd.core.claims import Refusal, claim_of, refusal
from canaryd.core.conditions import DesiredCondition, merge_conditions
from canaryd.core.convergence import autoscaler_effects, converge, converge_suspended
from canaryd.core.draft import Draft
from canaryd.core.effects import CallWebhooks, Effect, Notify, ReleaseOwned, RemoveFinalizer, SetRouteWeights
from canaryd.core.notices import notices
from canaryd.core.observations import Observations
from canaryd.core.phases import advance, progress_blocker
from canaryd.core.readiness import canary_ready, routes_carry, step_weight_missing
from canaryd.core.reporting import conditions, problem_events
from canaryd.core.routes import record_weight_write
from canaryd.core.traffic import traffic_status

#: More transitions than any real decision makes; reaching it means a cycle, which is a bug.
MAX_TRANSITIONS = 32


@dataclass(frozen=True)
class Decision:
    status: CanaryStatus
    effects: tuple[Effect, ...] = ()
    #: When to decide again even if nothing changes; None: only on a change.
    next_wakeup: datetime | None = None


def _action_pending(canary: Canary, observations: Observations) -> bool:
    request = observations.action
    answered = canary.status.last_action
    return request is not None and action_pending(request.id, answered.id if answered else None)


def _run_can_measure(canary: Canary, observations: Observations) -> bool:
    """A run at step 1 or later that is neither paused nor blocked, and has no action waiting."""
    status = canary.status
    target = observations.target
    return not (
        status.phase is not Phase.PROGRESSING
        or canary.spec.suspend
        or canary.spec.skip_analysis
        or status.paused
        or observations.deleting
        or target is None
        or target.template_hash != status.revision
        or not canary_ready(target)
        or not observations.routes_usable
        or observations.config_problems
        or _action_pending(canary, observations)
        or refusal(claim_of(canary), observations) is not None
    )


def analysis_due(canary: Canary, observations: Observations, now: datetime) -> bool:
    """Whether the runtime should run an analysis round before calling ``decide``.

    True when a run at step 1 or later is neither paused nor blocked (canary
    ready, routes usable, no configuration problem), runs the revision under
    analysis, its step's weight is verified on the data plane (where the
    Canary asks for that), and one interval has passed since the last step,
    round or resume. A pending manual action goes first: no round is due until
    it is answered. A round judges the step's weight, so none is due until
    every route carries it (a weight patch lost to a conflict is written again
    first). ``decide`` uses a round only when this holds.
    """
    status = canary.status
    if (
        not _run_can_measure(canary, observations)
        or traffic_share.pending(canary, status)
        or not routes_carry(observations, 100 - status.canary_weight, status.canary_weight)
        or step_weight_missing(status, observations)
    ):
        return False
    due = schedule.next_analysis_at(canary, canary.status)
    return due is not None and now >= due


def traffic_share_due(canary: Canary, observations: Observations, now: datetime) -> bool:
    """Whether the runtime should measure the canary's share of the requests before calling ``decide``.

    True for a run that could take an analysis round (see ``analysis_due``)
    at a weight step not yet verified on the data plane, once a full window
    has passed since the step (see ``core.traffic_share``).
    """
    return _run_can_measure(canary, observations) and traffic_share.due(canary, canary.status, now)


def decide(canary: Canary, observations: Observations, now: datetime) -> Decision:
    """The next status, the effects to apply, and the next wake-up."""
    refused = refusal(claim_of(canary), observations)
    if refused is not None:
        return _refuse(canary, observations, now, refused)
    draft = Draft(
        canary=canary,
        observations=observations,
        now=now,
        status=canary.status,
        analysis=observations.analysis if analysis_due(canary, observations, now) else None,
        action=observations.action,
        hooks=hooks.accepted_results(canary, observations, now),
        share=observations.traffic_share if traffic_share_due(canary, observations, now) else None,
    )
    handle_action(draft)
    _record_webhook_round(draft)
    if canary.spec.suspend and not observations.deleting:
        effects = converge_suspended(observations)
    else:
        for _ in range(MAX_TRANSITIONS):
            before = draft.status
            advance(draft)
            if draft.status == before:
                break
        else:  # pragma: no cover - a cycle between phases is a bug, not an input problem
            raise RuntimeError(f"lifecycle did not settle after {MAX_TRANSITIONS} transitions")
        effects = converge(
            draft.status,
            observations,
            last_canary=canary.status.canary_weight,
            revert_on_deletion=canary.spec.revert_on_deletion,
            keep_canary=_inspection_until(draft) is not None,
            canary=canary,
        )
        effects += autoscaler_effects(draft.status, observations)
    draft.analysis = draft.share = None
    share = draft.status.traffic.share if draft.status.traffic is not None else None
    draft.update(traffic=traffic_status(canary, draft.status, observations.routes, share))
    draft.update(
        conditions=conditions(draft, canary.status.phase),
        observed_generation=canary.metadata.generation,
    )
    for write in (e for e in effects if isinstance(e, SetRouteWeights)):
        records = record_weight_write(
            draft.status.route_generations, observations.routes, write.primary, write.canary, write.shape
        )
        draft.update(route_generations=records)
    events = [*draft.events, *problem_events(canary.status, draft.status, {e.reason for e in draft.events})]
    background: list[Effect] = [*_background_webhooks(draft), *(Notify(n) for n in notices(draft))]
    return Decision(
        status=draft.status,
        effects=(*events, *effects, *background),
        next_wakeup=_next_wakeup(draft, bool(effects)),
    )


def _refuse(canary: Canary, observations: Observations, now: datetime, refused: Refusal) -> Decision:
    """A Canary that may not act: say why, touch nothing, look again soon (the conflict may go away)."""
    status = canary.status
    desired = [
        DesiredCondition(ConditionType.READY, "False", refused.reason.value, refused.message),
        DesiredCondition(
            ConditionType.PROGRESSING,
            "False",
            refused.reason.value,
            f"canaryd leaves Deployment {canary.spec.target_ref.name} and the routes alone: no run",
        ),
    ]
    reconciled = status.condition(ConditionType.RECONCILED)
    if reconciled is not None:
        desired.append(
            DesiredCondition(reconciled.type, reconciled.status, reconciled.reason, reconciled.message)
        )
    new = status.model_copy(
        update={
            "conditions": merge_conditions(status.conditions, desired, now, canary.metadata.generation),
            "observed_generation": canary.metadata.generation,
        }
    )
    effects: list[Effect] = list(problem_events(status, new, set()))
    if observations.deleting and observations.has_finalizer:
        # What it may still own (from before it was refused) must outlive it, as on any deletion.
        if observations.owns_workloads:
            effects.append(ReleaseOwned())
        effects.append(RemoveFinalizer())
    return Decision(status=new, effects=tuple(effects), next_wakeup=schedule.later(now, schedule.MAX_RECHECK))
def _record_webhook_round(draft: Draft) -> None:
    """Keep this decision's webhook calls in status, with an Event when a gate's answer changed."""
    if not draft.hooks:
        return
    before = draft.status
    draft.update(webhooks=hooks.recorded(draft.canary, before, draft.hooks))
    for result in draft.hooks:
        if result.ok or result.type not in GATE_HOOKS or not hooks.answer_changed(before, result):
            continue
        held = hooks.GATE_HOLDS[result.type]
        draft.event(
            "Warning" if result.outcome is HookOutcome.NOT_SENT else "Normal",
            Reason.WAITING_FOR_CONFIRMATION,
            f"webhook {result.name} ({result.type.value}) answered {hooks.describe(result)}: {held} waits",
        )


def _background_webhooks(draft: Draft) -> list[Effect]:
    """post-rollout when a run ends, and rollback when it is rolled back (sent, never waited for)."""
    before, after = draft.canary.status.phase, draft.status.phase
    if after == before or draft.observations.deleting:
        return []
    kinds: list[HookType] = []
    if after is Phase.FAILED:
        kinds += [HookType.ROLLBACK, HookType.POST_ROLLOUT]
    elif after is Phase.SUCCEEDED:
        kinds.append(HookType.POST_ROLLOUT)
    return [CallWebhooks(kind) for kind in kinds if hooks.background_webhooks(draft.canary, kind)]


def _inspection_until(draft: Draft) -> datetime | None:
    """Until when a rolled-back canary keeps running (spec.abortScaleDownDelay), if it still does."""
    status = draft.status
    delay = draft.canary.spec.abort_scale_down_delta
    if status.phase is not Phase.FAILED or not delay or status.rolled_back_at is None:
        return None
    until = status.rolled_back_at + delay
    return until if draft.now < until else None


def _next_wakeup(draft: Draft, unsettled: bool) -> datetime | None:
    """When to look again without a watch event: the next due time, or a short recheck."""
    canary, status, now = draft.canary, draft.status, draft.now
    if canary.spec.suspend and not draft.observations.deleting:
        return None
    recheck = schedule.later(now, schedule.recheck_interval(canary))
    phase = status.phase
    call = hooks.next_call_at(canary, status)
    if phase is Phase.PROGRESSING:
        if status.paused:
            return recheck if unsettled else None
        deadline = schedule.progress_deadline_at(canary, status) if status.gate is None else None
        if progress_blocker(draft) is not None or status.step == 0:
            wake = recheck
        else:
            wake = schedule.next_analysis_at(canary, status) or recheck
        if call is not None:
            wake = min(wake, max(call, now))
        return min(wake, deadline) if deadline is not None else wake
    if phase is Phase.WAITING:
        interval_due = schedule.later(now, schedule.interval(canary))
        return min(interval_due, max(call, now)) if call else interval_due
    inspection = _inspection_until(draft)
    if inspection is not None:
        return min(recheck, inspection) if unsettled else inspection
    if phase in (Phase.INITIALIZING, Phase.PROMOTING, Phase.FINALIZING):
        return recheck
    if phase is Phase.TERMINATING:
        return recheck if unsettled and draft.observations.has_finalizer else None
    return recheck if unsettled else None
