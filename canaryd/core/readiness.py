"""Questions about the observed world that several decisions ask the same way.

Is the canary Deployment able to take traffic? Has traffic observably gone
back to the primary? What exactly is wrong with a route? Answering them in one
place keeps the rule "no traffic to a canary that is not ready, nor through a
route that is not accepted" in one place too.
"""

from __future__ import annotations

from canaryd.api.constants import Reason
from canaryd.api.models import Canary, CanaryStatus
from canaryd.core.observations import Observations, RouteState, WorkloadState
from canaryd.core.route_plan import PLAIN, RouteShape
from canaryd.core.routes import shows, weights_match
from canaryd.core.traffic import traffic_refusal


def canary_ready(target: WorkloadState | None) -> bool:
    """The target Deployment runs at least one replica and has finished rolling out."""
    return target is not None and target.desired_replicas > 0 and target.rolled_out


def primary_serves(
    primary: WorkloadState | None, template_hash: str | None, ready_percent: int = 100
) -> bool:
    """The primary has rolled out the given revision, with ``ready_percent`` % of its replicas ready."""
    return (
        primary is not None
        and template_hash is not None
        and primary.template_hash == template_hash
        and primary.rolled_out_at(ready_percent)
    )


def writable(route: RouteState) -> bool:
    """canaryd can write this route: it weights it, or its own rules or filters are on it to remove.

    Moving traffic back to the primary needs no more than that.
    """
    return route.exists and (route.has_backends or route.has_additions)


def routes_show(observations: Observations, primary: int, canary: int, shape: RouteShape = PLAIN) -> bool:
    """Every route canaryd can write already carries these weights, and exactly this shape."""
    return all(shows(r, primary, canary, shape) for r in observations.routes if writable(r))


def routes_carry(observations: Observations, primary: int, canary: int) -> bool:
    """Every route canaryd can write carries these weights on the rules it weights.

    Only the weights: canaryd's own rules and filters (A/B, mirror, sticky) do not change which
    weight a step's analysis judges.
    """
    return all(weights_match(r, primary, canary) for r in observations.routes if writable(r))


def step_weight_missing(status: CanaryStatus, observations: Observations) -> bool:
    """A run past its first step whose routes do not carry the step's weight (it never reached them)."""
    weight = status.canary_weight
    return status.step >= 1 and weight > 0 and not routes_carry(observations, 100 - weight, weight)


def traffic_on_primary(observations: Observations) -> bool:
    """All traffic observably goes to the primary: weights 100/0 and nothing of canaryd's on any route."""
    return routes_show(observations, 100, 0)


def route_problem(route: RouteState) -> str:
    """What is wrong with a route, in words a person can act on."""
    if route.problem:
        return route.problem
    if not route.exists:
        return f"{route.kind} {route.name} not found"
    if not route.has_backends:
        return f"{route.kind} {route.name} has no rule listing both the -primary and -canary Services"
    if route.port_problem:
        return route.port_problem
    if not route.accepted:
        return f"{route.kind} {route.name} is not Accepted by all of its parent Gateways"
    return ""


def routes_problem(observations: Observations) -> str:
    if not observations.routes:
        return "no routes observed: spec.routeRefs names none that canaryd could read"
    return "; ".join(route_problem(r) for r in observations.routes if not r.usable)


def replicas_text(workload: WorkloadState, ready_percent: int = 100) -> str:
    """How far a Deployment is, e.g. ``2/3 ready, 3/3 updated``; with a ready threshold below 100 %
    also how many ready replicas it needs, e.g. ``1/4 ready, 4/4 updated; 2 ready needed
    (primaryReadyThreshold 50%)``."""
    want = workload.desired_replicas
    text = f"{workload.ready_replicas}/{want} ready, {workload.updated_replicas}/{want} updated"
    if workload.old_replicas:
        text += f", {workload.old_replicas} of the previous revision still running"
    if workload.observed_generation < workload.generation:
        text += ", spec change not yet observed by the Deployment controller"
    if ready_percent < 100:
        needed = workload.ready_needed(ready_percent)
        text += f"; {needed} ready needed (primaryReadyThreshold {ready_percent}%)"
    return text


def route_structure_problems(observations: Observations) -> tuple[Reason, tuple[str, ...]] | None:
    """Routes canaryd cannot weight at all (missing, or no rule lists both Services), with the reason."""
    missing = [r for r in observations.routes if not r.exists]
    unweightable = [r for r in observations.routes if r.exists and not r.has_backends]
    if missing:
        return Reason.ROUTE_NOT_FOUND, tuple(route_problem(r) for r in missing + unweightable)
    if unweightable:
        return Reason.ROUTE_MISSING_BACKENDS, tuple(route_problem(r) for r in unweightable)
    return None


def start_blockers(canary: Canary, observations: Observations) -> tuple[Reason, tuple[str, ...]] | None:
    """Why a run of a new revision must not start (and the condition reason), or None.

    A configuration problem, a route canaryd cannot weight at all, or a route
    that cannot take the rules or filters of the Canary's traffic mode (or
    whose Gateway says it cannot mirror, for a Canary that mirrors): no
    retry fixes those, so the run does not start and sit until its deadline;
    it starts once they are fixed. A route the Gateway has not Accepted yet is
    not among them: the run starts and waits for the Gateway at weight 0.
    """
    if observations.config_problems:
        return observations.config_reason, observations.config_problems
    structure = route_structure_problems(observations)
    if structure is not None:
        return structure
    return traffic_refusal(canary, observations.routes)
