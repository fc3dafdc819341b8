"""Status conditions in the metav1.Condition shape, with its transition rule.

``lastTransitionTime`` moves only when a condition's status changes; reason,
message and observedGeneration are refreshed in place. Conditions are kept in
one fixed order so that two identical decisions write identical status.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from canaryd.api.constants import ConditionType
from canaryd.api.models import Condition

ConditionStatus = Literal["True", "False", "Unknown"]

#: The order in which conditions appear in status.
CONDITION_ORDER: tuple[str, ...] = (
    ConditionType.READY,
    ConditionType.PROGRESSING,
    ConditionType.ROUTES_READY,
    ConditionType.TRAFFIC_SHIFTED,
    ConditionType.ANALYSIS_HEALTHY,
    ConditionType.PAUSED,
    ConditionType.RECONCILED,
    ConditionType.GATED,
)


@dataclass(frozen=True)
class DesiredCondition:
    """A condition as a decision wants it, before transition times are worked out."""

    type: str
    status: ConditionStatus
    reason: str
    message: str


def merge_condition(
    existing: Condition | None, desired: DesiredCondition, now: datetime, generation: int
) -> Condition:
    """The condition to store: the transition time is kept unless the status changed."""
    if existing is not None and existing.status == desired.status:
        transition = existing.last_transition_time
    else:
        transition = now
    return Condition(
        type=desired.type,
        status=desired.status,
        reason=desired.reason,
        message=desired.message,
        last_transition_time=transition,
        observed_generation=generation,
    )


def merge_conditions(
    existing: Sequence[Condition],
    desired: Sequence[DesiredCondition],
    now: datetime,
    generation: int,
) -> list[Condition]:
    """Apply ``desired`` over ``existing``; types not mentioned in ``desired`` are dropped."""
    by_type = {c.type: c for c in existing}
    merged = [merge_condition(by_type.get(d.type), d, now, generation) for d in desired]

    def order(condition: Condition) -> tuple[int, str]:
        if condition.type in CONDITION_ORDER:
            return (CONDITION_ORDER.index(condition.type), condition.type)
        return (len(CONDITION_ORDER), condition.type)

    return sorted(merged, key=order)
