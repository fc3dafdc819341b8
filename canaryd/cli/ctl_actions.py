"""Manual actions: ask the controller through status, wait for its answer, judge the outcome.

A request is written as ``status.requestedAction: {id, action, requestedAt,
requestedBy}`` with a JSON merge patch on the Canary's status subresource; the
controller answers with ``status.lastAction: {id, action, result, at}`` carrying
the same id, and an Event naming the action. docs/manual-actions.md explains
why (GitOps tools ignore status, the request survives a controller restart,
``patch canaries/status`` is a separate RBAC grant, the id makes it idempotent).

From the user's side:
- the same action already pending is not written again: the command waits for
  that request (two people pressing ``pause`` get one pause);
- a different pending action is replaced (the newest intention wins; the field
  holds one request) and the command says which request it replaced;
- ``--request-id ID`` makes a retried script idempotent: an id already
  acknowledged is reported without writing anything;
- the controller may answer ``ignored: <why>`` (e.g. ``resume`` when not
  paused); that is success when the state the person asked for already holds,
  and a refusal (its own exit code) when it does not (``promote`` on a Failed run).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from canaryd.adapters.ctl_client import CtlClient
from canaryd.api.constants import ACTIVE_PHASES, Action, Phase, Reason
from canaryd.api.models import action_pending
from canaryd.api.timestamps import format_rfc3339
from canaryd.cli import ctl_render as render


class Outcome:
    """How a manual action ended; each maps to an exit code in canaryctl."""

    DONE = "acknowledged"
    ALREADY_DONE = "already-acknowledged"
    REFUSED = "refused"
    NOT_WAITED = "requested"
    TIMED_OUT = "timed-out"
    SUPERSEDED = "superseded"


@dataclass
class ActionReport:
    namespace: str
    name: str
    request: dict[str, Any]
    outcome: str = Outcome.NOT_WAITED
    acknowledgement: dict[str, Any] | None = None
    #: Lines for stderr about what happened on the way (reused or replaced requests).
    notes: list[str] = field(default_factory=list)
    canary: dict[str, Any] | None = None

    def document(self) -> dict[str, Any]:
        """What ``-o json|yaml`` prints."""
        doc: dict[str, Any] = {
            "canary": {"namespace": self.namespace, "name": self.name},
            "request": self.request,
            "outcome": self.outcome,
            "acknowledgement": self.acknowledgement,
        }
        if self.canary is not None:
            st = render.status(self.canary)
            doc["state"] = {
                "phase": render.phase(self.canary) or None,
                "canaryWeight": st.get("canaryWeight", 0),
                "step": st.get("step", 0),
                "paused": bool(st.get("paused", False)),
            }
        return doc


class CanaryFollower:
    """The updates of one canary, readable with a timeout without breaking the underlying watch.

    ``CtlClient.follow_canary`` is an async generator; cancelling a pending
    ``__anext__`` (what a timeout does) would close it. A task pumps it into a
    queue instead, and ``next`` waits on the queue.
    """

    def __init__(self, ctl: CtlClient, namespace: str, name: str) -> None:
        self._updates = ctl.follow_canary(namespace, name)
        self._queue: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()
        self._task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        try:
            async for canary in self._updates:
                self._queue.put_nowait(canary)
        except Exception as exc:
            self._queue.put_nowait(exc)
        finally:
            await self._updates.aclose()

    async def next(self, timeout: float | None) -> dict[str, Any] | None:
        """The next version of the canary, or None when ``timeout`` seconds pass without one."""
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout=timeout)
        except TimeoutError:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    async def close(self) -> None:
        # Cancel until the pump is really gone: asyncio.wait_for (Python < 3.12) can swallow a
        # cancellation that arrives as the request it guards completes, and the pump would then
        # sit on an open watch stream.
        while not self._task.done():
            self._task.cancel()
            await asyncio.wait([self._task], timeout=0.1)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            self._task.result()


def requester() -> str:
    """Who asks, for people reading status; the API server's audit log has the authenticated identity."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def new_request(action: Action, request_id: str | None, now: datetime) -> dict[str, Any]:
    return {
        "id": request_id or uuid.uuid4().hex,
        "action": action.value,
        "requestedAt": format_rfc3339(now, "seconds"),
        "requestedBy": requester(),
    }


def was_ignored(result: str) -> bool:
    """Whether the controller answered without doing anything.

    The controller's result is a sentence for people (``paused at step 2 (10%)``);
    when the action did not apply it starts with ``ignored:`` (the Event's reason
    is then ActionIgnored, which is accepted here too).
    """
    head = result.split(":", 1)[0].strip().lower()
    return head in ("ignored", Reason.ACTION_IGNORED.value.lower())


def wanted_state_holds(action: str, canary: dict[str, Any]) -> bool:
    """Whether the canary is already where the person wanted it, whatever the controller did."""
    st = render.status(canary)
    phase = render.phase(canary)
    if action == Action.PAUSE.value:
        return bool(st.get("paused"))
    if action == Action.RESUME.value:
        return not st.get("paused")
    if action == Action.PROMOTE.value:
        return phase in (Phase.PROMOTING.value, Phase.FINALIZING.value, Phase.SUCCEEDED.value)
    if action == Action.ABORT.value:
        return phase not in {p.value for p in ACTIVE_PHASES} and phase != Phase.WAITING.value
    if action == Action.RETRY.value:
        return phase in (Phase.PROGRESSING.value, Phase.WAITING.value)
    return False


def next_step(action: str, canary: dict[str, Any], program: str) -> str:
    """What a person can do instead of a refused action, as a command to run."""
    meta = render.meta(canary)
    where = f"{meta.get('name', '?')} -n {meta.get('namespace', '?')}"
    phase = render.phase(canary)
    if phase == Phase.FAILED.value and action != Action.RETRY.value:
        revision = render.status(canary).get("revision") or "the failed revision"
        return f"the run Failed; to analyse {revision} again: {program} retry {where}"
    if action == Action.RETRY.value:
        return f"retry applies only to a Failed canary (this one is {phase or 'not reconciled yet'}); " \
            f"see {program} status {where}"
    if phase in ("", Phase.INITIALIZING.value, Phase.INITIALIZED.value, Phase.SUCCEEDED.value):
        return (f"no run in progress: a run starts when the pod template of Deployment "
                f"{render.target_name(canary)} changes; see {program} status {where}")
    return f"see {program} status {where}"


def judge(action: str, acknowledgement: dict[str, Any], canary: dict[str, Any]) -> str:
    """DONE unless the controller ignored the action and the wanted state does not hold.

    An ignored ``retry`` is always refused: a canary that is not Failed has no
    failed revision to analyse again, whatever its phase.
    """
    if was_ignored(str(acknowledgement.get("result", ""))) and (
        action == Action.RETRY.value or not wanted_state_holds(action, canary)
    ):
        return Outcome.REFUSED
    return Outcome.DONE


async def request_action(
    ctl: CtlClient,
    namespace: str,
    name: str,
    action: Action,
    *,
    wait: bool,
    timeout: float,
    request_id: str | None = None,
) -> ActionReport:
    """Ask for ``action`` on one canary and, when ``wait``, follow it until the controller answers."""
    canary = await ctl.get_canary(namespace, name)
    st = render.status(canary)
    last = render.as_dict(st.get("lastAction"))
    pending = render.pending_request(canary)
    now = datetime.now(UTC)

    if request_id and not action_pending(request_id, last.get("id")):
        report = ActionReport(namespace, name, dict(st.get("requestedAction") or {"id": request_id}))
        report.acknowledgement = dict(last)
        report.canary = canary
        report.outcome = Outcome.ALREADY_DONE if judge(action.value, last, canary) == Outcome.DONE \
            else Outcome.REFUSED
        report.notes.append(f"request {request_id} was already acknowledged; nothing written")
        return report

    if pending and pending.get("action") == action.value and (request_id in (None, pending.get("id"))):
        report = ActionReport(namespace, name, dict(pending))
        report.notes.append(
            f"{action.value} is already requested (id {pending.get('id')}, by "
            f"{pending.get('requestedBy') or 'someone'}); waiting for that request instead of adding another"
        )
    else:
        request = new_request(action, request_id, now)
        report = ActionReport(namespace, name, request)
        if pending:
            report.notes.append(
                f"replacing the pending {pending.get('action')} request (id {pending.get('id')}, by "
                f"{pending.get('requestedBy') or 'someone'}) that the controller had not acknowledged"
            )
        canary = await ctl.patch_canary_status(namespace, name, {"status": {"requestedAction": request}})
    report.canary = canary
    if not wait:
        report.outcome = Outcome.NOT_WAITED
        return report
    await _wait_for_acknowledgement(ctl, report, timeout)
    return report


async def _wait_for_acknowledgement(ctl: CtlClient, report: ActionReport, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    updates = CanaryFollower(ctl, report.namespace, report.name)
    try:
        while True:
            remaining = deadline - time.monotonic()
            canary = await updates.next(remaining) if remaining > 0 else None
            if canary is None:
                report.outcome = Outcome.TIMED_OUT
                return
            report.canary = canary
            st = render.status(canary)
            last = render.as_dict(st.get("lastAction"))
            requested = render.as_dict(st.get("requestedAction"))
            our_id = report.request["id"]
            if not action_pending(our_id, last.get("id")):
                report.acknowledgement = dict(last)
                report.outcome = judge(report.request["action"], last, canary)
                return
            if requested.get("id") and requested.get("id") != our_id:
                if requested.get("action") == report.request["action"]:
                    # Someone asked for the same thing at the same moment: their request is ours.
                    report.notes.append(
                        f"an identical request (id {requested['id']}) replaced ours; following it"
                    )
                    report.request = dict(requested)
                    continue
                report.acknowledgement = dict(last) if last else None
                report.outcome = Outcome.SUPERSEDED
                report.notes.append(
                    f"replaced before the controller handled it by {requested.get('action')} "
                    f"(id {requested.get('id')}, by {requested.get('requestedBy') or 'someone'})"
                )
                return
    finally:
        await updates.close()
