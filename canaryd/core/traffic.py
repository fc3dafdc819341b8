"""The traffic modes of a run: what each step does with the requests, and the shape it asks of the routes.

A run is a list of steps, each a *stage*:

- a plain canary moves the canary's weight through ``stepWeights`` (or
  ``stepWeight`` up to ``maxWeight``);
- A/B testing (``analysis.match`` / ``analysis.grpcMatch``) runs
  ``iterations`` checks at weight 0 while canaryd's rule sends the matching
  requests to the canary only, then promotes;
- mirroring (``analysis.mirror``) runs ``iterations`` checks at weight 0
  while each weighted rule mirrors a share of its requests to the canary, and
  then moves weights (or promotes, without weight steps); the mirror filter is
  gone from the routes in the same write that moves the first weight;
- session affinity (``analysis.sessionAffinity``) adds, to every weight step,
  a cookie set on the canary's responses and a rule that keeps a client
  carrying it on the canary; the cookie's value is the revision, so a cookie
  from an earlier run pins nobody.

What the routes carry follows from the status alone (``route_shape``): the
current stage while Progressing, the last stage while Promoting (without the
mirror), and nothing canaryd added in any other phase, so promotion, rollback,
abort and deletion all take canaryd's rules and filters away with the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from canaryd.api.constants import Phase, Reason
from canaryd.api.models import (
    Canary,
    CanaryStatus,
    RouteAdditions,
    RouteKind,
    TrafficMode,
    TrafficShareStatus,
    TrafficStatus,
)
from canaryd.core.gateway_support import mirror_refusals
from canaryd.core.observations import RouteState
from canaryd.core.route_plan import PLAIN, RouteShape, StickyCookie, cookie_header, shape_problem

CANARY: TrafficMode = "Canary"
AB_TEST: TrafficMode = "ABTest"
MIRROR: TrafficMode = "Mirror"


@dataclass(frozen=True)
class Stage:
    """One step of a run: its traffic mode and the canary's weight."""

    mode: TrafficMode
    weight: int


def stages(canary: Canary) -> tuple[Stage, ...]:
    analysis = canary.spec.analysis
    iterations = analysis.iterations or 0
    if analysis.ab_testing:
        return (Stage(AB_TEST, 0),) * iterations
    mirrored = (Stage(MIRROR, 0),) * iterations if analysis.mirror is not None else ()
    return mirrored + tuple(Stage(CANARY, weight) for weight in analysis.weights())


def stage_at(canary: Canary, step: int) -> Stage | None:
    """The stage of step ``step`` (1-based; None before the first step or past the last)."""
    all_stages = stages(canary)
    return all_stages[step - 1] if 1 <= step <= len(all_stages) else None


def mode_of(canary: Canary, status: CanaryStatus) -> TrafficMode:
    """The mode of the current step; before the first one, the mode the run starts with."""
    stage = stage_at(canary, status.step) if status.step >= 1 else None
    if stage is None:
        first = stages(canary)
        return first[0].mode if first else CANARY
    return stage.mode


def sticky_cookie(canary: Canary, revision: str | None) -> StickyCookie | None:
    affinity = canary.spec.analysis.session_affinity
    if affinity is None or not revision:
        return None
    return StickyCookie(affinity.cookie_name, revision, affinity.max_age_seconds)


def _ab_shape(canary: Canary) -> RouteShape:
    analysis = canary.spec.analysis
    return RouteShape(
        match=tuple(m.dump() for m in analysis.match or ()),
        grpc_match=tuple(m.dump() for m in analysis.grpc_match or ()),
    )


def _stage_shape(canary: Canary, stage: Stage, revision: str | None, promoting: bool) -> RouteShape:
    if stage.mode == AB_TEST:
        return _ab_shape(canary)
    if stage.mode == MIRROR:
        mirror = canary.spec.analysis.mirror
        return RouteShape(mirror_percent=mirror.percent) if mirror is not None and not promoting else PLAIN
    cookie = sticky_cookie(canary, revision)
    return RouteShape(sticky=cookie) if cookie is not None and stage.weight > 0 else PLAIN


def route_shape(canary: Canary, status: CanaryStatus) -> RouteShape:
    """What canaryd adds to the routes in this status, besides the weights (see the module docstring)."""
    if status.phase not in (Phase.PROGRESSING, Phase.PROMOTING) or status.step < 1:
        return PLAIN
    stage = stage_at(canary, status.step)
    if stage is None:
        return PLAIN
    return _stage_shape(canary, stage, status.revision, promoting=status.phase is Phase.PROMOTING)


def shapes_needed(canary: Canary) -> list[tuple[TrafficMode, RouteShape]]:
    """Every shape a run of this Canary may ask of its routes (to check them before a run starts)."""
    found: list[tuple[TrafficMode, RouteShape]] = []
    for stage in dict.fromkeys(stages(canary)):
        shape = _stage_shape(canary, stage, "0" * 10, promoting=False)
        if not shape.plain and all(shape != known for _, known in found):
            found.append((stage.mode, shape))
    return found


_MODE_WORDS = {AB_TEST: "A/B testing", MIRROR: "mirroring", CANARY: "session affinity"}


def shape_problems(canary: Canary, routes: Sequence[RouteState]) -> tuple[str, ...]:
    """Why a route cannot carry what this Canary's run would add to it (its rules and filters)."""
    problems: list[str] = []
    for route in routes:
        if not (route.exists and route.has_backends) or route.route is None:
            continue
        for mode, shape in shapes_needed(canary):
            problem = shape_problem(
                route.route, route.kind, route.primary_service, route.canary_service, shape
            )
            if problem:
                problems.append(
                    f"{route.kind} {route.name} cannot take canaryd's {_MODE_WORDS[mode]}: {problem}"
                )
                break
    return tuple(problems)


def traffic_refusal(canary: Canary, routes: Sequence[RouteState]) -> tuple[Reason, tuple[str, ...]] | None:
    """Why the routes cannot carry this Canary's traffic mode, with the condition reason; None if they can.

    A route whose rules cannot take canaryd's additions comes first
    (``TrafficModeUnsupported``), then a parent Gateway whose class says it does
    not mirror (``MirrorUnsupported``, see ``core.gateway_support``).
    """
    shapes = shape_problems(canary, routes)
    if shapes:
        return Reason.TRAFFIC_MODE_UNSUPPORTED, shapes
    mirror = mirror_refusals(canary, [r for r in routes if r.exists and r.has_backends])
    if mirror:
        return Reason.MIRROR_UNSUPPORTED, mirror
    return None


def traffic_status(
    canary: Canary, status: CanaryStatus, routes: Sequence[RouteState], share: TrafficShareStatus | None
) -> TrafficStatus | None:
    """``status.traffic``: the mode, what the routes carry of canaryd's, the cookie and the measured share.

    None for a plain canary whose routes carry nothing of canaryd's and that
    does not verify traffic shares, so such a Canary's status is as before.
    """
    mode = mode_of(canary, status)
    analysis = canary.spec.analysis
    added = [
        RouteAdditions(
            kind=cast(RouteKind, route.kind),
            name=route.name,
            added_rules=list(route.canaryd_rules),
            mirror=route.mirrored,
            sets_cookie=route.sticky,
        )
        for route in routes
        if route.has_additions
    ]
    plain_spec = mode == CANARY and analysis.session_affinity is None and analysis.traffic_share is None
    if plain_spec and not added and share is None:
        return None
    shape = route_shape(canary, status)
    cookie = cookie_header(shape.sticky).split(";", 1)[0] if shape.sticky is not None else None
    mirror = analysis.mirror.percent if analysis.mirror is not None else None
    return TrafficStatus(mode=mode, routes=added, mirror_percent=mirror, session_cookie=cookie, share=share)


__all__ = [
    "AB_TEST",
    "CANARY",
    "MIRROR",
    "Stage",
    "mode_of",
    "route_shape",
    "shape_problems",
    "shapes_needed",
    "stage_at",
    "stages",
    "sticky_cookie",
    "traffic_refusal",
    "traffic_status",
]
