"""Status never says a weight the routes do not carry yet.

canaryd writes a Canary's status before it patches its routes: status is the
record of what it intends, so a controller killed between the two resumes
from it. But people and tools read ``status.canaryWeight`` as the share of
traffic the canary gets, and under 409 storms and API latency the routes could
carry 1 % for seconds while status already said 2 %.

So a weight change is written in two steps. The status written before the
route patch keeps ``canaryWeight`` at the weight the routes carry and says
``movingToWeight``: the weight canaryd is putting on them. Once every weight
patch of the pass has gone through (or a later pass sees the routes carry
it), ``canaryWeight`` takes that weight and ``movingToWeight`` goes. A
decision reads the weight a run is at from :func:`intended` (the weight being
moved to, if any), so a restart in between resumes the move, never takes the
step twice, and never goes back.

An ordinary step (:func:`weights_first`) is cheaper: one route, the same
phase, nothing to do but the weight write, Events and background calls. Its
route is patched first and status written once, after it, so a step costs
one status write, not two. Nothing is lost if the controller stops between
the two writes: status still says the step before, which the next pass
decides again from (a step decided again writes the weight the route already
carries, so it is taken once). If that pass decides otherwise (the Gateway
has not reported the route's new generation yet, or a check fails), status
first says the weight the route carries and that canaryd moves it back
(:func:`stage`), so status never says a weight the route does not carry. A
route patch that fails for another reason than a lost race leaves the
outcome unknown, so the status of the two-step write (``movingToWeight``) is
written then, before the pass's failure is handled. The step's interval
starts when its route patch went through (:func:`routed_at`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from canaryd.api.models import CanaryStatus
from canaryd.core.effects import CallWebhooks, Effect, Notify, RecordEvent, SetRouteWeights
from canaryd.core.observations import RouteState
from canaryd.core.routes import weights_match


@dataclass(frozen=True)
class Staged:
    """The status to write before the effects, and the one to write once all of them went through."""

    before_routes: CanaryStatus
    #: None: nothing left to record after the effects (the routes carry the weight already).
    once_routed: CanaryStatus | None


def intended(status: CanaryStatus) -> CanaryStatus:
    """The status as the decisions read it: at the weight canaryd is moving to, if it is moving."""
    if status.moving_to_weight is None:
        return status
    return status.model_copy(update={"canary_weight": status.moving_to_weight, "moving_to_weight": None})


def routes_carry(routes: tuple[RouteState, ...], canary_weight: int) -> bool:
    """Every route that carries canaryd's backendRefs has this canary weight (and the rest on the primary)."""
    return all(
        weights_match(route, 100 - canary_weight, canary_weight)
        for route in routes
        if route.exists and route.has_backends
    )


def confirmed(written: CanaryStatus, routes: tuple[RouteState, ...]) -> int:
    """The weight the routes are known to carry: the one being moved to once they carry it, else status's.

    A controller stopped between a route patch and the status write that
    confirms it leaves ``canaryWeight`` at the old weight while the routes
    may already carry ``movingToWeight``. Taking the old weight as confirmed
    then would let a decision that goes back to it (a rollback to 0 from the
    first step) write status at that weight before the routes are moved back.
    """
    moving = written.moving_to_weight
    if moving is not None and moving != written.canary_weight and routes_carry(routes, moving):
        has_routes = any(route.exists and route.has_backends for route in routes)
        if has_routes:
            return moving
    return written.canary_weight


def carried_weight(routes: tuple[RouteState, ...]) -> int | None:
    """The one canary weight all routes with canaryd's backendRefs carry; None if they differ or none has."""
    weights = {route.canary_weight for route in routes if route.exists and route.has_backends}
    if len(weights) != 1:
        return None
    return next(iter(weights))


def stage(
    decided: CanaryStatus, confirmed_weight: int, routes: tuple[RouteState, ...], effects: Sequence[Effect]
) -> Staged:
    """Split a decided status (at the weight the run is at) into what to write before and after routing.

    ``confirmed_weight`` is the weight the previous status said the routes
    carry; ``routes`` are the routes as observed before this pass's writes;
    ``effects`` are the decision's. Only a weight write of the new weight can
    confirm it: without one (a route that may not be written now) status keeps
    saying it is moving there. A route this pass writes back (someone else's
    weight on it, or a weight patch whose status write never happened) is said
    to carry what it carries until the write went through.
    """
    target = decided.canary_weight
    settled = decided.model_copy(update={"moving_to_weight": None})
    if routes_carry(routes, target):
        return Staged(before_routes=settled, once_routed=None)
    writes = any(isinstance(e, SetRouteWeights) and e.canary == target for e in effects)
    carried = carried_weight(routes) if writes else None
    start = carried if carried is not None else confirmed_weight
    if start == target:
        return Staged(before_routes=settled, once_routed=None)
    before = decided.model_copy(update={"canary_weight": start, "moving_to_weight": target})
    return Staged(before_routes=before, once_routed=settled if writes else None)


def routed_at(once_routed: CanaryStatus, written: CanaryStatus, when: datetime) -> CanaryStatus:
    """The status of an ordinary step whose route patch went through at ``when``.

    The step's interval starts when the route carries its weight, not when it
    was decided: a patch held up by a slow or restarting API server would
    otherwise leave the next analysis round a fraction of an interval of
    traffic at the new weight to judge.
    """
    decided_at = once_routed.last_step_time
    if decided_at is None or decided_at == written.last_step_time or when <= decided_at:
        return once_routed  # no step taken, or the route carried it at once
    return once_routed.model_copy(update={"last_step_time": when})


#: What an ordinary step may do besides its weight write for status to be written once, after the route.
_WITH_A_STEP = (SetRouteWeights, RecordEvent, CallWebhooks, Notify)


def weights_first(
    written: CanaryStatus, staged: Staged, effects: Sequence[Effect], route_count: int
) -> bool:
    """Whether this pass patches the route first and writes status once, after it (see the module).

    Only an ordinary step qualifies: one route (a second route's patch could
    fail after the first went through), the same phase (a restart decides
    again from the phase before, which must lead to the same place), a weight
    to confirm, and no effect but the weight write, Events and background calls
    (a Deployment or finalizer write must be recorded in status before it).
    """
    return (
        route_count == 1
        and staged.once_routed is not None
        and staged.once_routed.phase == written.phase
        and any(isinstance(e, SetRouteWeights) for e in effects)
        and all(isinstance(e, _WITH_A_STEP) for e in effects)
    )


__all__ = [
    "Staged",
    "carried_weight",
    "confirmed",
    "intended",
    "routed_at",
    "routes_carry",
    "stage",
    "weights_first",
]
