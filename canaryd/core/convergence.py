"""The effects that bring the cluster to what the decided status says.

Effects are derived from the new status and the observations alone, never
from the transition that led there. So a decision handed its own result
again asks for nothing new: it repeats only what has not been observed yet,
and every effect is safe to repeat.

Traffic rules live here: weight (or any rule or filter of canaryd's that
sends requests to the canary: A/B, mirror, sticky) moves toward the canary
only through routes that are usable and can take it, and only to a canary
that is ready; traffic moves back to the primary, and canaryd's rules and
filters come off, on every route that can be written. The canary Deployment
is scaled to 0 only once traffic is observed on the primary.

Deleting a Canary must not take the service down: ``core.leaving`` has the
order (traffic to the primary, the target back up and ready, the primary
and both Services released, then the finalizer).

A weight write also says which routes someone else had changed: weights that
are neither what canaryd wants nor what it last wrote (the status before the
decision) are reported with a Warning Event once put back. That report rides
on the effect and does not change it.

A HorizontalPodAutoscaler that scales the target is mirrored for the primary
(``<hpa>-primary``, scaling ``<target>-primary``) once the primary exists, and
kept in step with it; a copy whose source is gone is deleted. While an HPA
scales the target, canaryd only brings the canary up from 0 at the start of a
run and leaves its count to the HPA (it scales a target at 0 not at all).
A rolled-back canary stays up ``abortScaleDownDelay`` for inspection, without
traffic, before it goes to 0.
"""

from __future__ import annotations

from dataclasses import replace

from canaryd.api.constants import Phase, Reason
from canaryd.api.models import Canary, CanaryStatus
from canaryd.core.effects import (
    AddFinalizer,
    DeleteAutoscaler,
    Effect,
    EnsurePrimary,
    EnsureServices,
    MirrorAutoscaler,
    RecordEvent,
    RouteDrift,
    ScaleTarget,
    SetRouteWeights,
)
from canaryd.core.leaving import termination_effects
from canaryd.core.observations import Observations, RouteState, WorkloadState
from canaryd.core.readiness import canary_ready, routes_show, traffic_on_primary
from canaryd.core.route_plan import PLAIN, RouteShape
from canaryd.core.routes import weights_match
from canaryd.core.traffic import route_shape, shape_problems, traffic_refusal

#: Phases in which the canary Deployment runs and may carry traffic.
_RUNNING = (Phase.PROGRESSING, Phase.PROMOTING)


def run_replicas(primary: WorkloadState | None) -> int:
    """How many replicas the target runs during a run: as many as the primary, and never fewer than 1.

    A primary scaled to 0 (by a person or an autoscaler) must not leave the
    canary at 0 too: a canary without pods never becomes ready, and the run
    would sit until its progress deadline.
    """
    return max(primary.desired_replicas, 1) if primary is not None else 1


def route_drift(
    routes: tuple[RouteState, ...], primary: int, canary: int, last_canary: int
) -> tuple[RouteDrift, ...]:
    """The routes a write of these weights puts back after someone else changed them.

    ``last_canary`` is the canary weight canaryd itself last wrote; a route
    that carries it (or already the wanted weights) has not drifted.
    """
    drifted: list[RouteDrift] = []
    for route in routes:
        if not route.exists or not route.has_backends or weights_match(route, primary, canary):
            continue
        if weights_match(route, 100 - last_canary, last_canary):
            continue
        found = (
            f"primary {route.primary_weight}, canary {route.canary_weight}"
            if route.primary_weight is not None and route.canary_weight is not None
            else "different weights in different rules"
        )
        message = (
            f"{route.kind} {route.name} weights were changed outside canaryd ({found}); put back to "
            f"primary {primary}, canary {canary}. Other fields of the route were kept."
        )
        event = RecordEvent(type="Warning", reason=Reason.ROUTE_WEIGHTS_DRIFTED.value, message=message)
        drifted.append(RouteDrift(kind=route.kind, name=route.name, event=event))
    return tuple(drifted)


def converge(
    status: CanaryStatus,
    observations: Observations,
    last_canary: int = 0,
    revert_on_deletion: bool = True,
    *,
    keep_canary: bool = False,
    canary: Canary | None = None,
) -> list[Effect]:
    """Effects in the order they must be applied; the runtime stops at the first that fails.

    ``last_canary`` is the canary weight of the status before the decision,
    what canaryd last put on the routes (for the drift report only);
    ``revert_on_deletion`` is the Canary's ``spec.revertOnDeletion`` (see ``core.leaving``);
    ``keep_canary``: a rolled-back canary is kept up for inspection (no scale-down yet);
    ``canary`` gives the traffic mode (without it, only weights are written).
    """
    shape = route_shape(canary, status) if canary is not None else PLAIN
    fits = canary is None or not shape_problems(canary, observations.routes)
    if canary is not None and shape.mirror_percent is not None:
        refusal = traffic_refusal(canary, observations.routes)
        if refusal is not None and refusal[0] is Reason.MIRROR_UNSUPPORTED:
            shape = PLAIN  # a Gateway that says it cannot mirror gets no mirror filter (and loses one it has)
    effects = _converge(status, observations, revert_on_deletion, keep_canary, shape, fits)
    return [
        replace(e, drifted=route_drift(observations.routes, e.primary, e.canary, last_canary))
        if isinstance(e, SetRouteWeights)
        else e
        for e in effects
    ]


def _converge(
    status: CanaryStatus,
    observations: Observations,
    revert_on_deletion: bool,
    keep_canary: bool,
    shape: RouteShape,
    fits: bool,
) -> list[Effect]:
    if observations.deleting or status.phase is Phase.TERMINATING:
        return termination_effects(observations, revert_on_deletion)
    effects: list[Effect] = []
    if not observations.has_finalizer:
        effects.append(AddFinalizer())
    target = observations.target
    if status.phase is None:
        return effects
    if target is None:
        effects.extend(_return_to_primary(observations))
        return effects
    if not observations.services_ready:
        effects.append(EnsureServices())
    primary = observations.primary
    if status.phase is Phase.INITIALIZING:
        if status.revision is not None and (primary is None or primary.template_hash != status.revision):
            effects.append(EnsurePrimary(template_hash=status.revision))
        return effects
    if status.phase in _RUNNING:
        expected = primary.desired_replicas if primary is not None and primary.desired_replicas > 0 else None
        if observations.autoscaler is not None:
            expected = None  # the HPA sets the canary's count once it runs
        if target.desired_replicas == 0 or (expected is not None and target.desired_replicas != expected):
            effects.append(ScaleTarget(replicas=run_replicas(primary)))
        if (
            status.phase is Phase.PROMOTING
            and status.revision is not None
            and (primary is None or primary.template_hash != status.revision)
        ):
            effects.append(EnsurePrimary(template_hash=status.revision))
        effects.extend(_hold_weight(status.canary_weight, observations, shape, fits))
        return effects
    effects.extend(_return_to_primary(observations, keep_canary=keep_canary))
    return effects


def autoscaler_effects(status: CanaryStatus, observations: Observations) -> list[Effect]:
    """The primary's copy of the target's HPA, once the primary exists; stale copies deleted."""
    if observations.deleting or status.phase in (None, Phase.TERMINATING) or observations.primary is None:
        return []
    effects: list[Effect] = [DeleteAutoscaler(name) for name in observations.stale_autoscalers]
    autoscaler = observations.autoscaler
    if autoscaler is not None and not autoscaler.mirror_in_step:
        effects.append(MirrorAutoscaler(autoscaler.source))
    return effects


def _hold_weight(weight: int, observations: Observations, shape: RouteShape, fits: bool) -> list[Effect]:
    """Keep the routes at the run's weight and shape, where that is allowed."""
    if weight == 0 and shape.plain:
        return [SetRouteWeights(primary=100, canary=0)] if not traffic_on_primary(observations) else []
    allowed = observations.routes_usable and canary_ready(observations.target) and fits
    if allowed and not routes_show(observations, 100 - weight, weight, shape):
        return [SetRouteWeights(primary=100 - weight, canary=weight, shape=shape)]
    return []


def _return_to_primary(observations: Observations, *, keep_canary: bool = False) -> list[Effect]:
    """Traffic back to the primary first; only once that is observed, the canary down to 0."""
    if not traffic_on_primary(observations):
        return [SetRouteWeights(primary=100, canary=0)]
    target = observations.target
    if target is not None and target.desired_replicas != 0 and not keep_canary:
        return [ScaleTarget(replicas=0)]
    return []


def converge_suspended(observations: Observations) -> list[Effect]:
    """A suspended Canary leaves its target and routes alone; only its own finalizer is managed."""
    return [] if observations.has_finalizer else [AddFinalizer()]
