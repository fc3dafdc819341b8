"""The Canary lifecycle as one pure function.

``decide(canary, observations, now)`` returns the status canaryd should write,
the effects to apply, and when to look at the Canary again. It is the only
place where canaryd decides anything about a rollout.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from canaryd.api.models import Canary, CanaryStatus
from canaryd.core.effects import Effect
from canaryd.core.observations import Observations


@dataclass(frozen=True)
class Decision:
    status: CanaryStatus
    effects: tuple[Effect, ...] = ()
    #: When to decide again even if nothing changes; None: only on a change.
    next_wakeup: datetime | None = None


def analysis_due(canary: Canary, observations: Observations, now: datetime) -> bool:
    """Whether the runtime should run an analysis round before calling ``decide``."""
    raise NotImplementedError


def decide(canary: Canary, observations: Observations, now: datetime) -> Decision:
    """The next status, the effects to apply, and the next wake-up."""
    raise NotImplementedError
