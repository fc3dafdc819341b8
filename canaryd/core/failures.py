"""What a Canary's status says when canaryd could not finish a pass for it.

A pass can fail after the decision: the API server refuses a write (a 422
for a name it cannot hold, a 403 for a missing permission), stops answering,
or the controller meets a bug. Retrying with a growing backoff is the
runtime's part; saying so where a person looks is this module's: the
condition ``Reconciled=False`` names what canaryd was doing and what it got
back, and one Warning Event announces each new problem. A problem that
repeats rewrites nothing, and the first pass that goes through sets
``Reconciled=True`` again.

Not every failure is worth a person's attention at once: a conflict, a 5xx
or a timeout usually goes away on the next try, so those are reported only
once they have lasted ``PERSISTENT_ATTEMPTS`` passes. An answer that no
retry changes (400, 403, 422, ...) and an unexpected exception are reported
at once.

Like ``core.invalid``, everything reads the status as plain JSON: the report
must be writable even for a Canary whose decision could not be made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from canaryd.api.constants import ConditionType, Reason
from canaryd.api.naming import workload_names
from canaryd.api.timestamps import format_rfc3339
from canaryd.core import effects as fx
from canaryd.core.effects import RecordEvent

#: Failed passes in a row after which a transient failure is reported too.
PERSISTENT_ATTEMPTS = 5
#: Answers no retry changes: reported at the first failure.
_LASTING_STATUSES = frozenset({400, 401, 403, 405, 406, 413, 415, 422})
#: Longest message kept in the condition (the API server's messages can be long).
MAX_MESSAGE = 2000


@dataclass(frozen=True)
class PassFailure:
    """Why one pass failed, as the runtime saw it."""

    #: What canaryd was doing, e.g. ``creating Deployment shop/web-primary``.
    doing: str
    #: The API server's HTTP status (0: no answer), or None for an exception inside canaryd.
    status: int | None
    #: The API server's message, or the exception's text.
    detail: str
    #: How many passes in a row have failed, this one included.
    attempts: int = 1


@dataclass(frozen=True)
class FailureReport:
    #: A merge patch for the Canary's status subresource.
    status_patch: dict[str, Any]
    event: RecordEvent


def worth_reporting(failure: PassFailure) -> bool:
    """Whether a person should hear about this failure now (see the module docstring)."""
    if failure.status is None or failure.status in _LASTING_STATUSES:
        return True
    return failure.attempts >= PERSISTENT_ATTEMPTS


def _reason(failure: PassFailure) -> Reason:
    if failure.status is None:
        return Reason.RECONCILE_ERROR
    if failure.status in _LASTING_STATUSES:
        return Reason.API_REJECTED
    return Reason.API_UNAVAILABLE


def failure_message(failure: PassFailure) -> str:
    """One line a person can act on: what was being done, what came back, and that it is retried."""
    if failure.status is None:
        got = f"canaryd failed: {failure.detail}"
    elif failure.status == 0:
        got = f"the API server did not answer ({failure.detail})"
    else:
        got = f"the API server answered {failure.status}: {failure.detail}"
    text = f"{failure.doing}: {got}"
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 1] + "…"
    return f"{text} (retried with backoff)"


def _conditions(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    listed = status.get("conditions")
    return [c for c in listed if isinstance(c, dict)] if isinstance(listed, list) else []


def _with_condition(conditions: list[dict[str, Any]], condition: dict[str, Any]) -> list[dict[str, Any]]:
    others = [c for c in conditions if c.get("type") != condition["type"]]
    return [*others, condition]


def _condition(
    existing: Mapping[str, Any] | None,
    state: str,
    reason: Reason,
    message: str,
    now: datetime,
    generation: int,
) -> dict[str, Any]:
    stamp = format_rfc3339(now)
    kept = existing is not None and existing.get("status") == state and existing.get("lastTransitionTime")
    return {
        "type": ConditionType.RECONCILED.value,
        "status": state,
        "reason": reason.value,
        "message": message,
        "lastTransitionTime": existing.get("lastTransitionTime") if kept and existing else stamp,
        "observedGeneration": generation,
    }


def failure_report(
    status: Mapping[str, Any], failure: PassFailure, now: datetime, generation: int
) -> FailureReport | None:
    """The status patch and Warning Event for a failed pass; None when status already says it."""
    conditions = _conditions(status)
    existing = next((c for c in conditions if c.get("type") == ConditionType.RECONCILED), None)
    reason = _reason(failure)
    message = failure_message(failure)
    if existing is not None and (existing.get("status"), existing.get("reason"), existing.get("message")) == (
        "False",
        reason.value,
        message,
    ):
        return None
    condition = _condition(existing, "False", reason, message, now, generation)
    event = RecordEvent(type="Warning", reason=reason.value, message=message)
    return FailureReport({"conditions": _with_condition(conditions, condition)}, event)


def recovery_patch(status: Mapping[str, Any], now: datetime, generation: int) -> dict[str, Any] | None:
    """After a pass that went through: ``Reconciled=True`` where it said False; None otherwise."""
    conditions = _conditions(status)
    existing = next((c for c in conditions if c.get("type") == ConditionType.RECONCILED), None)
    if existing is None or existing.get("status") == "True":
        return None
    condition = _condition(
        existing, "True", Reason.RECONCILED, "the last pass applied every change it decided", now, generation
    )
    return {"conditions": _with_condition(conditions, condition)}


def describe_effect(effect: fx.Effect, namespace: str, target: str) -> str:
    """What applying ``effect`` does, in words for a condition message."""
    names = workload_names(target)
    if isinstance(effect, fx.EnsurePrimary):
        return f"creating or updating Deployment {namespace}/{names.primary}"
    if isinstance(effect, fx.EnsureServices):
        return f"creating or repairing Services {namespace}/{names.primary} and {names.canary_service}"
    if isinstance(effect, fx.ScaleTarget):
        return f"scaling Deployment {namespace}/{target} to {effect.replicas}"
    if isinstance(effect, fx.SetRouteWeights):
        return f"writing route weights primary {effect.primary}, canary {effect.canary}"
    if isinstance(effect, fx.ReleaseOwned):
        return f"releasing {names.primary} and its Services from the Canary's ownership"
    if isinstance(effect, fx.AddFinalizer):
        return "adding canaryd's finalizer to the Canary"
    if isinstance(effect, fx.RemoveFinalizer):
        return "removing canaryd's finalizer from the Canary"
    if isinstance(effect, fx.RecordEvent):
        return f"recording an Event ({effect.reason})"
    return f"applying {type(effect).__name__}"


__all__ = [
    "PERSISTENT_ATTEMPTS",
    "FailureReport",
    "PassFailure",
    "describe_effect",
    "failure_message",
    "failure_report",
    "recovery_patch",
    "worth_reporting",
]
