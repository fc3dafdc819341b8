"""What canaryd adds to a route for A/B testing, mirroring and sticky sessions, and that it takes it all away.

Every test applies canaryd's patch with a real JSON Patch implementation, and
checks the route a user would see: which rule takes a request, what the
team's rules look like afterwards (byte for byte), and that a second patch
after the API server filled in its defaults asks for nothing.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import jsonpatch
import pytest

from canaryd.core.route_plan import (
    RouteShape,
    ShapeError,
    StickyCookie,
    combine_match,
    cookie_match,
    normalized,
    route_patch,
    shape_problem,
    user_view,
)
from canaryd.core.routes import inspect_route, spec_hash

PRIMARY, CANARY = "payments-api-primary", "payments-api-canary"
HEADER = {"headers": [{"name": "x-canary", "value": "insider"}]}
AB = RouteShape(match=(HEADER,))
MIRROR = RouteShape(mirror_percent=100)
COOKIE = StickyCookie("canary", "7d9c5b6f4a", 86400)
STICKY = RouteShape(sticky=COOKIE)


def payments_route(kind: str = "HTTPRoute") -> dict[str, Any]:
    """The seed's payments-api as the API server stores it: /payments weighted, a health path pinned to
    the primary, an admin rule to a Service of another namespace."""
    weighted: dict[str, Any] = {
        "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-team",
                                                                                          "value": "pay"}]}}],
        "backendRefs": [
            {"name": PRIMARY, "port": 8080, "weight": 100},
            {"name": CANARY, "port": 8080, "weight": 0,
             "filters": [{"type": "ResponseHeaderModifier",
                          "responseHeaderModifier": {"set": [{"name": "x-served-by", "value": "canary"}]}}]},
        ],
    }  # fmt: skip
    if kind == "HTTPRoute":
        weighted["matches"] = [{"path": {"type": "PathPrefix", "value": "/payments"}}]
        weighted["timeouts"] = {"request": "10s"}
    else:
        weighted["matches"] = [{"method": {"type": "Exact", "service": "payments.v1.Payments"}}]
    rules: list[dict[str, Any]] = [
        weighted,
        {
            "matches": [{"path": {"type": "Exact", "value": "/healthz"}}] if kind == "HTTPRoute" else [],
            "backendRefs": [{"name": PRIMARY, "port": 8080, "weight": 1}],
        },
        {"backendRefs": [{"name": "admin", "namespace": "ops", "port": 80, "weight": 1}]},
    ]
    if kind != "HTTPRoute":
        del rules[1]["matches"]
    return stored_by_the_api_server(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": kind,
            "metadata": {
                "name": "payments-api",
                "namespace": "payments",
                "resourceVersion": "6",
                "generation": 3,
            },
            "spec": {"parentRefs": [{"name": "public", "namespace": "infra"}], "rules": rules},
        }
    )


def stored_by_the_api_server(route: dict[str, Any]) -> dict[str, Any]:
    """What a real API server makes of a written route: Gateway API's defaults filled in."""
    stored = copy.deepcopy(route)
    stored["spec"]["rules"] = [normalized(r, route["kind"]) for r in stored["spec"]["rules"]]
    stored["metadata"]["resourceVersion"] = str(int(route["metadata"]["resourceVersion"]) + 1)
    return stored


def written(route: dict[str, Any], weights: tuple[int, int], shape: RouteShape) -> dict[str, Any]:
    ops = route_patch(route, route["kind"], PRIMARY, CANARY, weights, shape)
    return jsonpatch.apply_patch(copy.deepcopy(route), ops)


def test_ab_testing_adds_one_canary_rule_ahead_of_the_weighted_rule_and_nothing_else():
    route = payments_route()
    after = written(route, (100, 0), AB)
    rules = after["spec"]["rules"]
    assert [r.get("name") for r in rules] == ["abtest-0.canaryd.io", None, None, None]
    ours = rules[0]
    # The weighted rule's path with the Canary's header: it wins over the weighted rule for those requests.
    assert ours["matches"] == [
        {
            "path": {"type": "PathPrefix", "value": "/payments"},
            "headers": [{"name": "x-canary", "value": "insider"}],
        }
    ]
    assert ours["backendRefs"] == [{**route["spec"]["rules"][0]["backendRefs"][1], "weight": 1}]
    assert ours["filters"] == route["spec"]["rules"][0]["filters"]
    assert ours["timeouts"] == {"request": "10s"}
    assert rules[1:] == route["spec"]["rules"]


def test_taking_the_rule_away_leaves_the_route_byte_for_byte_as_the_team_wrote_it():
    route = payments_route()
    with_rule = stored_by_the_api_server(written(route, (100, 0), AB))
    back = written(with_rule, (100, 0), RouteShape())
    assert back["spec"] == route["spec"]
    assert user_view(with_rule, PRIMARY, CANARY) == user_view(route, PRIMARY, CANARY)


@pytest.mark.parametrize("shape", [AB, MIRROR, STICKY, RouteShape()], ids=["ab", "mirror", "sticky", "plain"])
def test_a_route_that_has_the_shape_needs_no_patch_even_with_the_servers_defaults(shape):
    route = payments_route()
    stored = stored_by_the_api_server(written(route, (90, 10), shape))
    assert route_patch(stored, "HTTPRoute", PRIMARY, CANARY, (90, 10), shape) == []
    assert inspect_route("HTTPRoute", "payments-api", stored, PRIMARY, CANARY).weighted_rules == 1


@pytest.mark.parametrize("shape", [AB, MIRROR, STICKY], ids=["ab", "mirror", "sticky"])
def test_canaryds_parts_leave_the_spec_hash_as_it_was(shape):
    route = payments_route()
    stored = stored_by_the_api_server(written(route, (80, 20), shape))
    assert spec_hash(stored, PRIMARY, CANARY) == spec_hash(route, PRIMARY, CANARY)
    edited = copy.deepcopy(stored)
    edited["spec"]["rules"][-1]["backendRefs"][0]["port"] = 81
    assert spec_hash(edited, PRIMARY, CANARY) != spec_hash(route, PRIMARY, CANARY)


def test_every_weighted_rule_gets_its_own_canary_rule_just_ahead_of_it():
    route = payments_route()
    second = copy.deepcopy(route["spec"]["rules"][0])
    second["matches"] = [{"path": {"type": "PathPrefix", "value": "/refunds"}}]
    route["spec"]["rules"].append(second)
    rules = written(route, (100, 0), AB)["spec"]["rules"]
    assert [r.get("name") for r in rules] == [
        "abtest-0.canaryd.io",
        None,
        None,
        None,
        "abtest-1.canaryd.io",
        None,
    ]
    assert rules[4]["matches"][0]["path"]["value"] == "/refunds"


def test_the_weighted_rules_matches_are_combined_with_the_canarys_not_appended():
    rule_match = {"path": {"type": "PathPrefix", "value": "/payments"}, "method": "POST"}
    assert combine_match(rule_match, {"method": "POST", **HEADER}, "HTTPRoute") == {**rule_match, **HEADER}
    assert combine_match(rule_match, {"method": "GET"}, "HTTPRoute") is None
    narrower = {"path": {"type": "PathPrefix", "value": "/payments/v2"}}
    assert combine_match(rule_match, narrower, "HTTPRoute")["path"] == narrower["path"]
    assert (
        combine_match(rule_match, {"path": {"type": "PathPrefix", "value": "/paymentsx"}}, "HTTPRoute")
        is None
    )
    clash = {"headers": [{"name": "X-Canary", "value": "other"}]}
    assert combine_match({"headers": [{"name": "x-canary", "value": "insider"}]}, clash, "HTTPRoute") is None
    grpc = combine_match({"method": {"service": "payments.v1.Payments"}}, {"method": {"method": "Charge"}},
                         "GRPCRoute")  # fmt: skip
    assert grpc == {"method": {"service": "payments.v1.Payments", "method": "Charge"}}


def test_a_match_no_request_of_the_weighted_rule_can_meet_is_refused_with_the_reason():
    route = payments_route()
    shape = RouteShape(match=({"path": {"type": "Exact", "value": "/elsewhere"}},))
    assert "no request can match both" in shape_problem(route, "HTTPRoute", PRIMARY, CANARY, shape)
    with pytest.raises(ShapeError):
        route_patch(route, "HTTPRoute", PRIMARY, CANARY, (100, 0), shape)


def test_a_route_without_room_for_canaryds_rule_is_refused_with_the_limit():
    route = payments_route()
    route["spec"]["rules"] += [{"backendRefs": [{"name": f"s{i}", "port": 80}]} for i in range(13)]
    assert "more than the 16 a route may have" in shape_problem(route, "HTTPRoute", PRIMARY, CANARY, AB)
    assert shape_problem(route, "HTTPRoute", PRIMARY, CANARY, MIRROR) == ""
    crowded = payments_route()
    crowded["spec"]["rules"][0]["matches"] = [
        {"path": {"type": "PathPrefix", "value": f"/p{i}"}} for i in range(60)
    ]
    crowded["spec"]["rules"][2]["matches"] = [
        {"path": {"type": "PathPrefix", "value": f"/a{i}"}} for i in range(10)
    ]
    assert "more than the 128 a route may have" in shape_problem(crowded, "HTTPRoute", PRIMARY, CANARY, AB)
    two = RouteShape(match=tuple({"method": m} for m in ("GET", "PUT")))
    assert "more than the 64 a rule may have" in shape_problem(crowded, "HTTPRoute", PRIMARY, CANARY, two)


def test_each_route_kind_needs_its_own_matches():
    assert "needs analysis.grpcMatch" in shape_problem(payments_route("GRPCRoute"), "GRPCRoute", PRIMARY,
                                                       CANARY, AB)  # fmt: skip
    grpc = RouteShape(grpc_match=({"method": {"method": "Charge"}},))
    assert "needs analysis.match" in shape_problem(payments_route(), "HTTPRoute", PRIMARY, CANARY, grpc)
    rules = written(payments_route("GRPCRoute"), (100, 0), grpc)["spec"]["rules"]
    assert rules[0]["matches"] == [{"method": {"type": "Exact", "service": "payments.v1.Payments",
                                               "method": "Charge"}}]  # fmt: skip


def test_mirroring_adds_one_filter_to_the_weighted_rule_and_removing_it_restores_the_teams_filters():
    route = payments_route()
    route["spec"]["rules"][0]["filters"].append(
        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "audit", "port": 9000}}}
    )
    route = stored_by_the_api_server(route)
    mirrored = written(route, (100, 0), RouteShape(mirror_percent=25))
    filters = mirrored["spec"]["rules"][0]["filters"]
    assert filters[:2] == route["spec"]["rules"][0]["filters"]
    assert filters[2] == {
        "type": "RequestMirror",
        "requestMirror": {
            "backendRef": {"group": "", "kind": "Service", "name": CANARY, "port": 8080},
            "percent": 25,
        },
    }
    full = written(route, (100, 0), MIRROR)["spec"]["rules"][0]["filters"][2]
    assert (
        "percent" not in full["requestMirror"]
    )  # 100 %: the spec's default, for Gateway APIs without percent
    back = written(stored_by_the_api_server(mirrored), (90, 10), RouteShape())
    assert back["spec"]["rules"][0]["filters"] == route["spec"]["rules"][0]["filters"]
    assert mirrored["spec"]["rules"][1:] == route["spec"]["rules"][1:]


def test_a_mirror_on_a_rule_without_filters_leaves_no_empty_list_behind():
    route = payments_route()
    del route["spec"]["rules"][0]["filters"]
    back = written(stored_by_the_api_server(written(route, (100, 0), MIRROR)), (100, 0), RouteShape())
    assert "filters" not in back["spec"]["rules"][0]
    assert back["spec"]["rules"] == route["spec"]["rules"]


def test_session_affinity_sets_a_cookie_on_the_canarys_responses_and_a_rule_keeps_its_clients():
    route = payments_route()
    after = written(route, (90, 10), STICKY)
    sticky, weighted = after["spec"]["rules"][0], after["spec"]["rules"][1]
    assert sticky["name"] == "sticky-0.canaryd.io"
    assert sticky["matches"][0]["path"] == {"type": "PathPrefix", "value": "/payments"}
    canary_ref = weighted["backendRefs"][1]
    assert canary_ref["weight"] == 10
    assert canary_ref["filters"][0] == route["spec"]["rules"][0]["backendRefs"][1]["filters"][0]
    assert canary_ref["filters"][1] == {
        "type": "ResponseHeaderModifier",
        "responseHeaderModifier": {
            "add": [{"name": "Set-Cookie", "value": "canary=7d9c5b6f4a; Max-Age=86400; Path=/"}]
        },
    }
    # The sticky rule's canary backendRef carries the team's filter, not the cookie.
    assert sticky["backendRefs"][0]["filters"] == route["spec"]["rules"][0]["backendRefs"][1]["filters"]
    back = written(stored_by_the_api_server(after), (100, 0), RouteShape())
    assert back["spec"]["rules"] == route["spec"]["rules"]


def test_the_cookie_match_finds_the_cookie_among_others_and_only_for_this_revision():
    pattern = re.compile(cookie_match(COOKIE)["headers"][0]["value"])
    assert pattern.search("canary=7d9c5b6f4a")
    assert pattern.search("session=abc; canary=7d9c5b6f4a; theme=dark")
    assert not pattern.search("canary=0000000000")  # a cookie from an earlier run
    assert not pattern.search("mycanary=7d9c5b6f4a")


def test_a_rule_canaryd_added_and_someone_edited_is_put_back_and_a_team_rule_never_moves():
    route = payments_route()
    stored = stored_by_the_api_server(written(route, (100, 0), AB))
    tampered = copy.deepcopy(stored)
    tampered["spec"]["rules"][0]["backendRefs"][0]["weight"] = 0
    ops = route_patch(tampered, "HTTPRoute", PRIMARY, CANARY, (100, 0), AB)
    assert {"op": "test", "path": "/spec/rules/0/name", "value": "abtest-0.canaryd.io"} in ops
    repaired = jsonpatch.apply_patch(copy.deepcopy(tampered), ops)
    assert route_patch(stored_by_the_api_server(repaired), "HTTPRoute", PRIMARY, CANARY, (100, 0), AB) == []
    assert repaired["spec"]["rules"][1:] == tampered["spec"]["rules"][1:]


def test_the_patch_applies_only_to_the_route_canaryd_read():
    route = payments_route()
    ops = route_patch(route, "HTTPRoute", PRIMARY, CANARY, (100, 0), AB)
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    moved = copy.deepcopy(route)
    moved["metadata"]["resourceVersion"] = "9"
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(moved, ops)


def test_inspection_reports_what_canaryd_added():
    stored = stored_by_the_api_server(written(payments_route(), (90, 10), STICKY))
    state = inspect_route("HTTPRoute", "payments-api", stored, PRIMARY, CANARY)
    assert state.usable or not state.accepted  # no Gateway status in this test
    assert state.canaryd_rules == ("sticky-0.canaryd.io",) and state.sticky and not state.mirrored
    assert (state.primary_weight, state.canary_weight) == (90, 10)
