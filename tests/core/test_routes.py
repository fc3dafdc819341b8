"""The routing contract: what canaryd accepts in a route and exactly what it changes."""

from __future__ import annotations

import copy

import jsonpatch
import pytest

from canaryd.core.routes import inspect_route, weight_patch, weights_match

PRIMARY, CANARY = "payments-api-primary", "payments-api-canary"


def route(**overrides):
    obj = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": "payments-api",
            "namespace": "payments",
            "resourceVersion": "42",
            "generation": 3,
        },
        "spec": {
            "parentRefs": [{"name": "public", "namespace": "infra"}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                    "backendRefs": [{"name": "admin", "port": 80}],
                },
                {
                    "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": []}}],
                    "backendRefs": [
                        {"name": PRIMARY, "port": 8080, "weight": 100},
                        {"name": CANARY, "port": 8080, "weight": 0},
                    ],
                },
            ],
        },
        "status": {
            "parents": [
                {
                    "parentRef": {"name": "public", "namespace": "infra"},
                    "controllerName": "example.com/gw",
                    "conditions": [
                        {"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": 3}
                    ],
                }
            ]
        },
    }
    obj.update(overrides)
    return obj


def test_usable_route_reports_current_weights():
    state = inspect_route("HTTPRoute", "payments-api", route(), PRIMARY, CANARY)
    assert state.usable and state.problem == ""
    assert (state.primary_weight, state.canary_weight) == (100, 0)
    assert weights_match(state, 100, 0) and not weights_match(state, 90, 10)


def test_missing_route_says_so():
    state = inspect_route("GRPCRoute", "orders", None, PRIMARY, CANARY)
    assert not state.exists and not state.usable
    assert "GRPCRoute orders not found" in state.problem


def test_rule_with_only_one_of_our_services_is_refused():
    obj = route()
    obj["spec"]["rules"][1]["backendRefs"].pop()
    state = inspect_route("HTTPRoute", "payments-api", obj, PRIMARY, CANARY)
    assert not state.has_backends and not state.usable
    assert "rule 1 must list" in state.problem and CANARY in state.problem


def test_route_without_our_services_is_refused():
    obj = route()
    obj["spec"]["rules"].pop()
    state = inspect_route("HTTPRoute", "payments-api", obj, PRIMARY, CANARY)
    assert not state.has_backends
    assert "no rule with backendRefs" in state.problem


def test_parent_refusal_is_reported_with_reason():
    obj = route()
    obj["status"]["parents"][0]["conditions"][0].update(
        status="False", reason="NotAllowedByListeners", message="namespace payments not allowed"
    )
    state = inspect_route("HTTPRoute", "payments-api", obj, PRIMARY, CANARY)
    assert state.has_backends and not state.accepted
    assert "NotAllowedByListeners" in state.problem and "infra/public" in state.problem


def test_parent_that_has_not_reported_blocks_traffic():
    obj = route()
    obj["status"] = {}
    state = inspect_route("HTTPRoute", "payments-api", obj, PRIMARY, CANARY)
    assert not state.accepted and "has not reported" in state.problem


def test_stale_observed_generation_blocks_only_when_set():
    stale = route()
    stale["status"]["parents"][0]["conditions"][0]["observedGeneration"] = 2
    assert not inspect_route("HTTPRoute", "r", stale, PRIMARY, CANARY).accepted
    unset = route()
    del unset["status"]["parents"][0]["conditions"][0]["observedGeneration"]
    assert inspect_route("HTTPRoute", "r", unset, PRIMARY, CANARY).accepted


def test_weight_patch_changes_only_the_two_weights():
    original = route()
    ops = weight_patch(original, PRIMARY, CANARY, 90, 10)
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "42"}
    assert {"op": "test", "path": "/spec/rules/1/backendRefs/0/name", "value": PRIMARY} in ops
    patched = jsonpatch.apply_patch(copy.deepcopy(original), ops)
    expected = copy.deepcopy(original)
    expected["spec"]["rules"][1]["backendRefs"][0]["weight"] = 90
    expected["spec"]["rules"][1]["backendRefs"][1]["weight"] = 10
    assert patched == expected


def test_weight_patch_is_empty_when_weights_already_match():
    assert weight_patch(route(), PRIMARY, CANARY, 100, 0) == []


def test_weight_patch_adds_missing_weight_fields():
    obj = route()
    for ref in obj["spec"]["rules"][1]["backendRefs"]:
        del ref["weight"]
    patched = jsonpatch.apply_patch(obj, weight_patch(obj, PRIMARY, CANARY, 100, 0))
    assert [r["weight"] for r in patched["spec"]["rules"][1]["backendRefs"]] == [100, 0]


def test_weight_patch_fails_against_a_concurrently_edited_route():
    original = route()
    ops = weight_patch(original, PRIMARY, CANARY, 75, 25)
    edited = copy.deepcopy(original)
    edited["metadata"]["resourceVersion"] = "43"
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(edited, ops)
    reordered = copy.deepcopy(original)
    reordered["spec"]["rules"][1]["backendRefs"].reverse()
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(reordered, ops)


def test_weights_in_every_rule_naming_our_services():
    obj = route()
    obj["spec"]["rules"].append(copy.deepcopy(obj["spec"]["rules"][1]))
    patched = jsonpatch.apply_patch(obj, weight_patch(obj, PRIMARY, CANARY, 50, 50))
    for rule in patched["spec"]["rules"][1:]:
        assert [r["weight"] for r in rule["backendRefs"]] == [50, 50]
    assert patched["spec"]["rules"][0] == obj["spec"]["rules"][0]


def test_disagreeing_rules_have_no_single_weight():
    obj = route()
    obj["spec"]["rules"].append(copy.deepcopy(obj["spec"]["rules"][1]))
    obj["spec"]["rules"][2]["backendRefs"][1]["weight"] = 5
    state = inspect_route("HTTPRoute", "r", obj, PRIMARY, CANARY)
    assert state.canary_weight is None and state.primary_weight == 100


def test_own_weight_patches_do_not_make_an_accepted_route_look_unaccepted():
    obj = route()
    obj["metadata"]["generation"] = 5  # canaryd's own weight patches made generations 4 and 5
    assert not inspect_route("HTTPRoute", "r", obj, PRIMARY, CANARY).accepted
    assert inspect_route("HTTPRoute", "r", obj, PRIMARY, CANARY, frozenset({4, 5})).accepted
    # A change canaryd did not make (generation 4 here) still waits for the Gateway.
    assert not inspect_route("HTTPRoute", "r", obj, PRIMARY, CANARY, frozenset({5})).accepted
