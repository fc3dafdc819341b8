"""What a decision asks the runtime to do, as data.

The runtime applies effects in the order given. Each effect is idempotent, so
re-applying a decision after a crash or a conflict is safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


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
    """Scale the target (canary) Deployment.

    ``replicas`` None means: as many as the primary, and at least 1 (see
    :func:`canaryd.core.workloads.canary_replicas`).
    """

    replicas: int | None


@dataclass(frozen=True)
class SetRouteWeights:
    """Write the two backendRef weights on every referenced route."""

    primary: int
    canary: int


@dataclass(frozen=True)
class ReleaseOwned:
    """Remove this Canary's ownerReference from ``<target>-primary`` and both Services.

    Applied while the Canary is being deleted, before its finalizer goes: the
    app team's routes still point at those Services, so the garbage collector
    must not delete them (and the primary serving the stable revision) along
    with the Canary. They stay, owned by nobody, until a person deletes them.
    """


@dataclass(frozen=True)
class RecordEvent:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


Effect = (
    AddFinalizer
    | RemoveFinalizer
    | EnsureServices
    | EnsurePrimary
    | ScaleTarget
    | SetRouteWeights
    | ReleaseOwned
    | RecordEvent
)
