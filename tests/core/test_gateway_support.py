"""A mirror phase never starts on a Gateway whose class says it cannot mirror (and nothing else changes)."""

from __future__ import annotations

from typing import Any

import pytest

from canaryd.api.constants import Reason
from canaryd.core.effects import SetRouteWeights
from canaryd.core.gateway_support import listed_features, mirror_refusals, parent_gateways, parent_support
from canaryd.core.observations import ParentSupport, RouteState
from canaryd.core.traffic import route_shape
from tests.core.world import World, actions, events, initialized_world, make_canary

TRAEFIK_FEATURES = frozenset(
    {"Gateway", "HTTPRoute", "GRPCRoute", "ReferenceGrant", "HTTPRouteRequestTimeout"}
)
FULL_FEATURES = TRAEFIK_FEATURES | {"HTTPRouteRequestMirror", "HTTPRouteRequestPercentageMirror"}


def mirror_canary(percent: int = 100, **spec: Any) -> Any:
    canary = make_canary(spec=spec)
    analysis = canary.spec.analysis.model_dump(by_alias=True, exclude_none=True)
    analysis.update(mirror={"percent": percent}, iterations=3, stepWeights=[50])
    data = canary.model_dump(by_alias=True, exclude_none=True)
    data["spec"]["analysis"] = analysis
    return type(canary).model_validate(data)


def route(kind: str = "HTTPRoute", *parents: ParentSupport) -> RouteState:
    return RouteState(kind=kind, name="payments-api", exists=True, has_backends=True, parents=parents)


def parent(features: frozenset[str] | None, gateway: str = "infra/public") -> ParentSupport:
    return ParentSupport(gateway=gateway, gateway_class="traefik", features=features)


# -- reading the Gateway API objects --------------------------------------------------------------------


def test_parent_gateways_resolve_namespaces_and_skip_what_is_not_a_gateway():
    spec = {
        "parentRefs": [
            {"name": "public"},
            {"name": "edge", "namespace": "infra", "sectionName": "https"},
            {"name": "edge", "namespace": "infra", "sectionName": "http"},
            {"name": "mesh", "group": "", "kind": "Service"},
            {"name": ""},
            "not a ref",
        ]
    }
    assert parent_gateways({"spec": spec}, "shop") == (("shop", "public"), ("infra", "edge"))
    assert parent_gateways({}, "shop") == ()


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"supportedFeatures": [{"name": "HTTPRoute"}, {"name": "HTTPRouteRequestMirror"}]},
         frozenset({"HTTPRoute", "HTTPRouteRequestMirror"})),
        ({"supportedFeatures": ["HTTPRoute"]}, frozenset({"HTTPRoute"})),
        ({"supportedFeatures": []}, None),
        ({"supportedFeatures": "HTTPRoute"}, None),
        ({"conditions": []}, None),
        (None, None),
    ],
    ids=["objects", "strings", "empty", "malformed", "absent", "no-status"],
)  # fmt: skip
def test_a_class_lists_its_features_or_says_nothing(status, expected):
    assert listed_features({"status": status} if status is not None else {}) == expected


def test_a_parent_whose_gateway_is_not_cached_says_nothing():
    support = parent_support(("infra", "public"), None, None)
    assert (support.gateway, support.gateway_class, support.features) == ("infra/public", "", None)


# -- the decision ----------------------------------------------------------------------------------------


def test_a_class_without_request_mirror_refuses_the_mirror_and_says_which_gateway_and_class():
    [problem] = mirror_refusals(mirror_canary(), [route("HTTPRoute", parent(TRAEFIK_FEATURES))])
    assert "HTTPRoute payments-api: Gateway infra/public (GatewayClass traefik)" in problem
    assert "HTTPRouteRequestMirror" in problem


def test_a_class_that_lists_mirroring_or_lists_nothing_keeps_the_mirror():
    canary = mirror_canary()
    assert mirror_refusals(canary, [route("HTTPRoute", parent(FULL_FEATURES))]) == ()
    assert mirror_refusals(canary, [route("HTTPRoute", parent(None))]) == ()
    assert mirror_refusals(canary, [route("HTTPRoute")]) == ()


def test_a_canary_without_a_mirror_is_never_refused_for_one():
    assert mirror_refusals(make_canary(), [route("HTTPRoute", parent(TRAEFIK_FEATURES))]) == ()


def test_mirroring_part_of_the_requests_needs_percentage_mirroring_too():
    only_mirror = TRAEFIK_FEATURES | {"HTTPRouteRequestMirror"}
    assert mirror_refusals(mirror_canary(100), [route("HTTPRoute", parent(only_mirror))]) == ()
    [problem] = mirror_refusals(mirror_canary(25), [route("HTTPRoute", parent(only_mirror))])
    assert "HTTPRouteRequestPercentageMirror" in problem and "HTTPRouteRequestMirror," not in problem


def test_a_grpc_route_mirrors_where_the_class_lists_request_mirroring():
    canary = mirror_canary()
    assert mirror_refusals(canary, [route("GRPCRoute", parent(FULL_FEATURES))]) == ()
    [problem] = mirror_refusals(canary, [route("GRPCRoute", parent(TRAEFIK_FEATURES))])
    assert "GRPCRouteRequestMirror or HTTPRouteRequestMirror" in problem


def test_every_parent_is_checked_and_each_one_that_cannot_mirror_is_named():
    routes = [route("HTTPRoute", parent(FULL_FEATURES, "infra/public"), parent(TRAEFIK_FEATURES, "edge/lb"))]
    [problem] = mirror_refusals(mirror_canary(), routes)
    assert "Gateway edge/lb" in problem and "infra/public" not in problem


# -- through the lifecycle ---------------------------------------------------------------------------------


def test_a_mirror_run_on_a_gateway_that_cannot_mirror_never_starts_and_the_route_stays_as_written():
    world = initialized_world(canary=mirror_canary(), route_parents=(parent(TRAEFIK_FEATURES),))
    routes_ready = world.status.condition("RoutesReady")
    assert routes_ready is not None and routes_ready.reason == Reason.MIRROR_UNSUPPORTED
    world.new_revision("rev2")
    decision = world.reconcile()
    assert world.status.phase == "Initialized" and world.status.step == 0
    ready = world.status.condition("Ready")
    assert ready is not None and (ready.status, ready.reason) == ("False", Reason.MIRROR_UNSUPPORTED)
    assert "GatewayClass traefik" in ready.message
    progressing = world.status.condition("Progressing")
    assert progressing is not None and progressing.reason == Reason.MIRROR_UNSUPPORTED
    assert "revision rev2 cannot start" in progressing.message
    warnings = [e for d in world.history for e in events(d) if e.type == "Warning"]
    assert [e.reason for e in warnings] == [Reason.MIRROR_UNSUPPORTED]
    assert not [a for d in world.history for a in actions(d) if isinstance(a, SetRouteWeights)]
    assert world.route_weights == (100, 0) and decision is not None
    # Once the class lists the feature (an upgraded Gateway), the run starts with the mirror.
    world.route_parents = (parent(FULL_FEATURES),)
    world.reconcile()
    world.roll_out()
    world.reconcile()
    assert world.status.phase == "Progressing" and world.status.step == 1
    assert route_shape(world.canary, world.status).mirror_percent == 100


def test_a_class_that_says_nothing_keeps_todays_mirror_run():
    world = initialized_world(canary=mirror_canary(), route_parents=(parent(None),))
    world.new_revision("rev2")
    world.reconcile()
    world.roll_out()
    world.reconcile()
    assert world.status.phase == "Progressing"
    assert route_shape(world.canary, world.status).mirror_percent == 100


def test_a_gateway_that_stops_listing_mirroring_mid_run_loses_the_filter_and_the_run_holds():
    world = World(canary=mirror_canary(), route_parents=(parent(FULL_FEATURES),))
    world.reconcile()
    world.roll_out()
    world.reconcile()
    world.new_revision("rev2")
    world.reconcile()
    world.roll_out()
    world.reconcile()
    assert world.status.phase == "Progressing" and world.status.step == 1
    world.route_parents = (parent(TRAEFIK_FEATURES),)
    decision = world.decide()
    writes = [a for a in actions(decision) if isinstance(a, SetRouteWeights)]
    assert all(w.shape.plain for w in writes)
    progressing = world.status.condition("Progressing")
    assert progressing is not None and progressing.reason == Reason.MIRROR_UNSUPPORTED
