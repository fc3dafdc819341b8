"""A change to anything a Canary names wakes that Canary, even when the Canary does not parse."""

from __future__ import annotations

from typing import Any

from canaryd.core.references import references


def test_a_canary_depends_on_its_target_what_canaryd_keeps_beside_it_its_routes_and_templates() -> None:
    canary: dict[str, Any] = {
        "metadata": {"name": "shop", "namespace": "web"},
        "spec": {
            "targetRef": {"name": "shop"},
            "routeRefs": [{"name": "shop"}, {"kind": "GRPCRoute", "name": "shop-rpc"}],
            "analysis": {
                "metrics": [
                    {"name": "a", "templateRef": {"name": "success-rate", "namespace": "canaryd-system"}},
                    {"name": "b", "templateRef": {"name": "local"}},
                    {"name": "c", "query": "up"},
                ]
            },
        },
    }
    assert references(canary) == {
        ("Deployment", "web", "shop"),
        ("Deployment", "web", "shop-primary"),
        ("Service", "web", "shop-primary"),
        ("Service", "web", "shop-canary"),
        ("HTTPRoute", "web", "shop"),
        ("GRPCRoute", "web", "shop-rpc"),
        ("MetricTemplate", "canaryd-system", "success-rate"),
        ("MetricTemplate", "web", "local"),
    }


def test_a_malformed_canary_yields_what_can_be_read_and_never_fails() -> None:
    assert references({"metadata": {"namespace": "web"}, "spec": "text"}) == set()
    odd = {"spec": {"targetRef": "shop", "routeRefs": {"name": "x"}, "analysis": {"metrics": ["m", 3]}}}
    assert references(odd) == set()
    partial = {"metadata": {"namespace": "web"}, "spec": {"routeRefs": [{"name": "r"}, {"name": 5}]}}
    assert references(partial) == {("HTTPRoute", "web", "r")}
