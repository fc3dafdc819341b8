"""What a decision asks the runtime to do, as data.

The runtime applies effects in the order given. Each effect is idempotent, so
re-applying a decision after a crash or a conflict is safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from canaryd.api.constants import HookType
from canaryd.core.notifications import Notification
from canaryd.core.route_plan import PLAIN, RouteShape


@dataclass(frozen=True)
class AddFinalizer:
    pass


@dataclass(frozen=True)
class RemoveFinalizer:
    pass


@dataclass(frozen=True)
class EnsureServices:
    """Create or repair ``<target>-primary`` and ``<target>-canary`` Services."""


@dataclass(frozen=True)
class EnsurePrimary:
    """Create ``<target>-primary`` from the target's pod template, or copy the template onto it.

    ``template_hash`` is the revision the primary must end up running.
    """

    template_hash: str


@dataclass(frozen=True)
class ScaleTarget:
    """Scale the target (canary) Deployment to ``replicas`` (see ``convergence.run_replicas``)."""

    replicas: int


@dataclass(frozen=True)
class SetRouteWeights:
    """Write the two backendRef weights on every referenced route, and canaryd's rules and filters.

    ``shape`` is what canaryd adds besides the weights (its A/B or sticky
    rules, its mirror and cookie filters; nothing by default): every route
    ends up with exactly that, and whatever else of canaryd's it carried is
    removed (see ``core.route_plan``). ``drifted`` holds a Warning Event for each route whose weights someone
    other than canaryd changed; the runtime records it once it has written
    that route. It reports on the write and is not part of what is written,
    so it takes no part in comparing two effects.
    """

    primary: int
    canary: int
    drifted: tuple[RouteDrift, ...] = field(default=(), compare=False)
    shape: RouteShape = PLAIN


@dataclass(frozen=True)
class ReleaseOwned:
    """Remove this Canary's ownerReference from ``<target>-primary`` and both Services.

    Applied while the Canary is being deleted, before its finalizer goes: the
    app team's routes still point at those Services, so the garbage collector
    must not delete them (and the primary serving the stable revision) along
    with the Canary. They stay, owned by nobody, until a person deletes them.
    """


@dataclass(frozen=True)
class MirrorAutoscaler:
    """Create or update ``<source>-primary``: the HPA ``source`` (scaling the target), for the primary."""

    source: str


@dataclass(frozen=True)
class DeleteAutoscaler:
    """Delete canaryd's copy ``name`` of an HPA that no longer exists."""

    name: str


@dataclass(frozen=True)
class CallWebhooks:
    """Send the Canary's webhooks of this type (post-rollout, rollback) in the background, never waited for.

    The payload describes the status just written; a failure is reported (log, metric, Event) only.
    """

    type: HookType


@dataclass(frozen=True)
class Notify:
    """Queue a chat notification; sent in the background, paced, never holding up the run."""

    notification: Notification


@dataclass(frozen=True)
class RecordEvent:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class RouteDrift:
    """A route (by kind and name) whose weights were changed outside canaryd, and the Event saying so."""

    kind: str
    name: str
    event: RecordEvent


Effect = (
    AddFinalizer
    | RemoveFinalizer
    | EnsureServices
    | EnsurePrimary
    | ScaleTarget
    | SetRouteWeights
    | ReleaseOwned
    | MirrorAutoscaler
    | DeleteAutoscaler
    | RecordEvent
    | CallWebhooks
    | Notify
)
