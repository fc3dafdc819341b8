"""The Canary lifecycle as one pure function.

``decide(canary, observations, now)`` returns the status canaryd should write,
the effects to apply, and when to look at the Canary again. It is the only
place where canaryd decides anything about a rollout.

A suspended Canary (``spec.suspend``) is left as it is: no transition, no
effect on its Deployments or routes, only its own finalizer is managed; its
deletion still returns all traffic to the primary before the finalizer goes.
A deleted Canary leaves ``<target>-primary`` and both Services behind, released
from its ownership, because the app team's routes still send traffic to them.
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

from canaryd.api.constants import Phase
from canaryd.api.models import Canary, CanaryStatus, action_pending
from canaryd.core import schedule, traffic_share
from canaryd.core.actions import handle_action
from canaryd.core.convergence import converge, converge_suspended
from canaryd.core.draft import Draft
from canaryd.core.effects import Effect, SetRouteWeights
from canaryd.core.observations import Observations
from canaryd.core.phases import advance, progress_blocker
from canaryd.core.readiness import canary_ready
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
        or status.paused
        or observations.deleting
        or target is None
        or target.template_hash != status.revision
        or not canary_ready(target)
        or not observations.routes_usable
        or observations.config_problems
        or _action_pending(canary, observations)
    )


def analysis_due(canary: Canary, observations: Observations, now: datetime) -> bool:
    """Whether the runtime should run an analysis round before calling ``decide``.

    True when a run at step 1 or later is neither paused nor blocked (canary
    ready, routes usable, no configuration problem), runs the revision under
    analysis, its step's weight is verified on the data plane (where the
    Canary asks for that), and one interval has passed since the last step,
    round or resume. A pending manual action goes first: no round is due until
    it is answered. ``decide`` uses a round only when this holds.
    """
    if not _run_can_measure(canary, observations) or traffic_share.pending(canary, canary.status):
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
    draft = Draft(
        canary=canary,
        observations=observations,
        now=now,
        status=canary.status,
        analysis=observations.analysis if analysis_due(canary, observations, now) else None,
        action=observations.action,
        share=observations.traffic_share if traffic_share_due(canary, observations, now) else None,
    )
    handle_action(draft)
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
        effects = converge(draft.status, observations, last_canary=canary.status.canary_weight, canary=canary)
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
    return Decision(
        status=draft.status,
        effects=(*events, *effects),
        next_wakeup=_next_wakeup(draft, bool(effects)),
    )


def _next_wakeup(draft: Draft, unsettled: bool) -> datetime | None:
    """When to look again without a watch event: the next due time, or a short recheck."""
    canary, status, now = draft.canary, draft.status, draft.now
    if canary.spec.suspend and not draft.observations.deleting:
        return None
    recheck = now + schedule.recheck_interval(canary)
    phase = status.phase
    if phase is Phase.PROGRESSING:
        if status.paused:
            return recheck if unsettled else None
        deadline = schedule.progress_deadline_at(canary, status)
        if progress_blocker(draft) is not None or status.step == 0:
            wake = recheck
        else:
            wake = schedule.next_analysis_at(canary, status) or recheck
        return min(wake, deadline) if deadline is not None else wake
    if phase is Phase.WAITING:
        return now + schedule.interval(canary)
    if phase in (Phase.INITIALIZING, Phase.PROMOTING, Phase.FINALIZING):
        return recheck
    if phase is Phase.TERMINATING:
        return recheck if unsettled and draft.observations.has_finalizer else None
    return recheck if unsettled else None
