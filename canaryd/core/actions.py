"""Manual actions: a person taking over from the automatic lifecycle.

A request arrives through ``status.requestedAction`` and is answered in
``status.lastAction`` with the same id and a result, plus an Event naming the
action. A request whose id was already answered is ignored, so handling is
idempotent however often the controller sees it. A request that makes no
sense in the current phase is still answered, with a result that says why
nothing happened.
"""

from __future__ import annotations

from canaryd.api.constants import Action, Phase, Reason
from canaryd.api.models import ActionAcknowledgement, ActionRequest, action_pending
from canaryd.api.timestamps import format_rfc3339
from canaryd.core import schedule
from canaryd.core.draft import Draft
from canaryd.core.readiness import canary_ready, replicas_text, routes_problem, start_blockers

_IGNORED = "ignored: "


def handle_action(draft: Draft) -> None:
    """Handle the pending action of this decision, once."""
    request, draft.action = draft.action, None
    if request is None:
        return
    answered = draft.status.last_action
    if not action_pending(request.id, answered.id if answered else None):
        return
    events_before = len(draft.events)
    result = _carry_out(draft, request)
    acknowledgement = ActionAcknowledgement(id=request.id, action=request.action, result=result, at=draft.now)
    draft.update(last_action=acknowledgement)
    reason = Reason.ACTION_IGNORED if result.startswith(_IGNORED) else _ACK_REASONS[request.action]
    if not any(e.reason == reason for e in draft.events[events_before:]):
        draft.event("Normal", reason, f"{_who(request)}: {result}")


_ACK_REASONS = {
    Action.PAUSE: Reason.PAUSED,
    Action.RESUME: Reason.RESUMED,
    Action.PROMOTE: Reason.PROMOTED_MANUALLY,
    Action.PROMOTE_STEP: Reason.STEPPED_MANUALLY,
    Action.RETRY: Reason.RETRIED,
    Action.ABORT: Reason.ABORTED,
}


def _who(request: ActionRequest) -> str:
    by = f" by {request.requested_by}" if request.requested_by else ""
    return f"{request.action.value} requested{by}"


def _carry_out(draft: Draft, request: ActionRequest) -> str:
    """Apply the action and say what became of it."""
    if draft.observations.deleting or draft.status.phase is Phase.TERMINATING:
        return _IGNORED + "the Canary is being deleted"
    if draft.canary.spec.suspend:
        return _IGNORED + "spec.suspend is true: canaryd leaves this Canary alone until it is false"
    handlers = {
        Action.PROMOTE: _promote,
        Action.PROMOTE_STEP: _promote_step,
        Action.ABORT: _abort,
        Action.PAUSE: _pause,
        Action.RESUME: _resume,
        Action.RETRY: _retry,
    }
    return handlers[request.action](draft, request)


def _run_obstacle(draft: Draft, need_routes: bool) -> str | None:
    """Why a manual promotion cannot happen now, or None."""
    status = draft.status
    phase = status.phase
    if phase in (Phase.PROMOTING, Phase.FINALIZING):
        return f"revision {status.revision} is already being promoted"
    if phase is not Phase.PROGRESSING:
        return f"no run in progress (phase {phase.value if phase else 'none'})"
    target = draft.observations.target
    if target is None:
        return f"Deployment {draft.target_name} not found"
    if target.template_hash != status.revision:
        return f"{draft.target_name} changed to revision {target.template_hash}; its run starts from step 0"
    if not canary_ready(target):
        return f"{draft.target_name} is not ready ({replicas_text(target)})"
    if need_routes and not draft.observations.routes_usable:
        return f"routes cannot take traffic: {routes_problem(draft.observations)}"
    return None


def _promote(draft: Draft, request: ActionRequest) -> str:
    status = draft.status
    if status.phase is Phase.WAITING and status.gate is not None and status.revision is not None:
        # A person confirms the rollout in the webhooks' place: the run starts (and is analysed).
        draft.start_run(
            status.revision, Reason.PROMOTED_MANUALLY, f"{_who(request)}: run started", confirmed=True
        )
        if draft.status.phase is Phase.WAITING:
            return f"revision {status.revision} waits for a free run slot"
        return f"started the run of revision {status.revision} without confirm-rollout"
    obstacle = _run_obstacle(draft, need_routes=False)
    if obstacle:
        return _IGNORED + obstacle
    skipped = schedule.step_count(draft.canary) - draft.status.step
    draft.begin_promotion(Reason.PROMOTED_MANUALLY, f"{_who(request)}: {skipped} remaining step(s) skipped")
    return f"promoting revision {draft.status.revision}"


def _promote_step(draft: Draft, request: ActionRequest) -> str:
    final = schedule.at_final_step(draft.canary, draft.status)
    obstacle = _run_obstacle(draft, need_routes=not final)
    if obstacle:
        return _IGNORED + obstacle
    draft.update(paused=False)
    if final:
        draft.begin_promotion(Reason.STEPPED_MANUALLY, f"{_who(request)} at the final step")
        return f"promoting revision {draft.status.revision}"
    draft.take_step(Reason.STEPPED_MANUALLY, f"{_who(request)}, without analysis")
    return f"advanced to step {draft.status.step} ({draft.status.canary_weight}%)"


def _abort(draft: Draft, request: ActionRequest) -> str:
    phase = draft.status.phase
    if phase in (Phase.PROMOTING, Phase.FINALIZING):
        return _IGNORED + f"revision {draft.status.revision} passed analysis and is already being promoted"
    if phase not in (Phase.PROGRESSING, Phase.WAITING):
        return _IGNORED + f"no run to abort (phase {phase.value if phase else 'none'})"
    draft.fail(Reason.ABORTED, _who(request))
    return f"rolled back revision {draft.status.revision}"


def _pause(draft: Draft, request: ActionRequest) -> str:
    status = draft.status
    if status.phase in (Phase.PROMOTING, Phase.FINALIZING):
        return _IGNORED + f"revision {status.revision} is already being promoted"
    if status.paused:
        return "already paused"
    draft.update(paused=True)
    if status.phase is Phase.PROGRESSING:
        return f"paused at step {status.step} ({status.canary_weight}%)"
    return "paused: the next run will hold at weight 0 until resumed"


def _resume(draft: Draft, request: ActionRequest) -> str:
    status = draft.status
    if not status.paused:
        return _IGNORED + "not paused"
    if status.phase is not Phase.PROGRESSING:
        draft.update(paused=False)
        return "resumed"
    draft.update(paused=False, last_progress_time=draft.now)
    if status.step >= 1:
        draft.update(last_step_time=draft.now)
        due = schedule.next_analysis_at(draft.canary, draft.status)
        when = format_rfc3339(due, "seconds") if due else "after one interval"
        return f"resumed: next analysis at {when}"
    return "resumed: the first step follows once the canary is ready"


def _retry(draft: Draft, request: ActionRequest) -> str:
    status = draft.status
    target = draft.observations.target
    if status.phase is not Phase.FAILED or status.revision is None:
        return _IGNORED + f"nothing to retry (phase {status.phase.value if status.phase else 'none'})"
    if target is None:
        return _IGNORED + f"Deployment {draft.target_name} not found"
    if target.template_hash != status.revision:
        return _IGNORED + (
            f"{draft.target_name} now runs revision {target.template_hash}, which gets a run of its own"
        )
    blocked = start_blockers(draft.canary, draft.observations)
    if blocked is not None:
        return _IGNORED + "; ".join(blocked[1])
    revision = status.revision
    draft.start_run(revision, Reason.RETRIED, f"{_who(request)}: analysing revision {revision} again")
    if draft.status.phase is Phase.WAITING:
        if draft.status.gate is not None:
            return f"revision {revision} waits for confirm-rollout"
        return f"revision {revision} waits for a free run slot"
    return f"restarted the run of revision {revision}"
