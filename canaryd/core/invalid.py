"""What canaryd says about a Canary it cannot parse.

The CRD schema and the models agree, so this happens when the installed CRD
is older or newer than the controller. Such a Canary gets no decision, only a
report: Ready=False with reason InvalidSpec and the validation message, and one
Warning Event; the same problem is reported once, not on every look. The
object may be malformed anywhere, including its status, so everything here
reads it as plain JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from canaryd.api.constants import ConditionType, Reason
from canaryd.api.timestamps import format_rfc3339
from canaryd.core.effects import RecordEvent


@dataclass(frozen=True)
class InvalidCanaryReport:
    #: A merge patch for the Canary's status subresource.
    status_patch: dict[str, Any]
    event: RecordEvent


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def invalid_canary_report(raw: Mapping[str, Any], problem: str, now: datetime) -> InvalidCanaryReport | None:
    """The status patch and Event for an unparseable Canary, or None when its status already says so.

    Other conditions are kept; Ready keeps its lastTransitionTime when it was
    already False.
    """
    meta = _mapping(raw.get("metadata"))
    status = _mapping(raw.get("status"))
    listed = status.get("conditions")
    conditions = [c for c in listed if isinstance(c, dict)] if isinstance(listed, list) else []
    ready = next((c for c in conditions if c.get("type") == ConditionType.READY), None)
    text = f"the Canary cannot be processed: {problem}"
    if ready is not None and ready.get("reason") == Reason.INVALID_SPEC and ready.get("message") == text:
        return None
    stamp = format_rfc3339(now)
    generation = int(meta.get("generation") or 0)
    condition = {
        "type": ConditionType.READY.value,
        "status": "False",
        "reason": Reason.INVALID_SPEC.value,
        "message": text,
        "lastTransitionTime": stamp
        if ready is None or ready.get("status") != "False"
        else ready.get("lastTransitionTime", stamp),
        "observedGeneration": generation,
    }
    others = [c for c in conditions if c.get("type") != ConditionType.READY]
    return InvalidCanaryReport(
        status_patch={"conditions": [condition, *others], "observedGeneration": generation},
        event=RecordEvent(type="Warning", reason=Reason.INVALID_SPEC.value, message=text),
    )
