"""The routing contract: what canaryd accepts in a route and exactly what it changes."""

from __future__ import annotations

import copy

import jsonpatch
import pytest
from hypothesis import given
from hypothesis import strategies as st

from canaryd.core.routes import inspect_route, record_weight_write, weight_patch, weights_match

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


def test_a_route_whose_only_rule_names_just_the_primary_cannot_be_weighted():
    obj = route()
    obj["spec"]["rules"][1]["backendRefs"].pop()
    state = inspect_route("HTTPRoute", "payments-api", obj, PRIMARY, CANARY)
    assert not state.has_backends and not state.usable
    assert "no rule with backendRefs" in state.problem and CANARY in state.problem


def test_a_rule_sending_traffic_to_the_canary_alone_is_refused():
    obj = route()
    obj["spec"]["rules"][1]["backendRefs"].pop(0)
    state = inspect_route("HTTPRoute", "payments-api", obj, PRIMARY, CANARY)
    assert not state.has_backends
    assert "rule 1 sends traffic to payments-api-canary without payments-api-primary" in state.problem


def test_a_rule_listing_one_of_our_services_twice_is_refused():
    obj = route()
    obj["spec"]["rules"][1]["backendRefs"].append({"name": CANARY, "port": 9090, "weight": 0})
    state = inspect_route("HTTPRoute", "payments-api", obj, PRIMARY, CANARY)
    assert not state.has_backends and "must list" in state.problem and "once each" in state.problem


def test_a_rule_pinned_to_the_primary_is_left_as_written_beside_a_weighted_rule():
    """The seed's payments-api: /payments to both Services, a health path to the primary only."""
    obj = route()
    obj["spec"]["rules"].append(
        {
            "matches": [{"path": {"type": "Exact", "value": "/healthz"}}],
            "backendRefs": [{"name": PRIMARY, "port": 8080, "weight": 1}],
        }
    )
    state = inspect_route("HTTPRoute", "payments-api", obj, PRIMARY, CANARY)
    assert state.usable and state.weighted_rules == 1
    patched = jsonpatch.apply_patch(copy.deepcopy(obj), weight_patch(obj, PRIMARY, CANARY, 90, 10))
    assert patched["spec"]["rules"][2] == obj["spec"]["rules"][2]
    assert [r["weight"] for r in patched["spec"]["rules"][1]["backendRefs"]] == [90, 10]


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


def _written(obj, primary, canary):
    """The route after a weight patch: the API server makes a new generation."""
    patched = jsonpatch.apply_patch(copy.deepcopy(obj), weight_patch(obj, PRIMARY, CANARY, primary, canary))
    patched["metadata"]["generation"] = obj["metadata"]["generation"] + 1
    return patched


def test_weight_only_generations_do_not_make_an_accepted_route_look_unaccepted():
    obj = route()  # the Gateway accepted generation 3
    obj["metadata"]["uid"] = "route-uid"
    records = []
    for primary, canary in ((90, 10), (80, 20)):
        state = inspect_route("HTTPRoute", "r", obj, PRIMARY, CANARY)
        records = record_weight_write(records, [state], primary, canary)
        obj = _written(obj, primary, canary)
    assert obj["metadata"]["generation"] == 5
    assert [(r.first, r.last) for r in records] == [(3, 5)]
    assert not inspect_route("HTTPRoute", "r", obj, PRIMARY, CANARY).accepted
    state = inspect_route("HTTPRoute", "r", obj, PRIMARY, CANARY, records[0])
    assert state.accepted and (state.primary_weight, state.canary_weight) == (80, 20)
    # A change canaryd did not make (a new filter here) still waits for the Gateway.
    edited = copy.deepcopy(obj)
    edited["spec"]["rules"][1]["filters"] = []
    edited["metadata"]["generation"] = 6
    assert not inspect_route("HTTPRoute", "r", edited, PRIMARY, CANARY, records[0]).accepted
    # Nor for a Gateway that has not reached the first generation the record vouches for.
    behind = copy.deepcopy(obj)
    behind["status"]["parents"][0]["conditions"][0]["observedGeneration"] = 2
    assert not inspect_route("HTTPRoute", "r", behind, PRIMARY, CANARY, records[0]).accepted
    # Nor is the record trusted for another object of the same name.
    recreated = copy.deepcopy(obj)
    recreated["metadata"]["uid"] = "other-uid"
    assert not inspect_route("HTTPRoute", "r", recreated, PRIMARY, CANARY, records[0]).accepted


def test_a_weight_write_that_never_happened_leaves_no_false_acceptance():
    obj = route()
    obj["metadata"]["uid"] = "route-uid"
    records = record_weight_write([], [inspect_route("HTTPRoute", "r", obj, PRIMARY, CANARY)], 90, 10)
    # The status was written, the patch lost a race: someone else made generation 4 with other changes.
    theirs = copy.deepcopy(obj)
    theirs["spec"]["rules"][0]["backendRefs"][0]["port"] = 81
    theirs["metadata"]["generation"] = 4
    assert not inspect_route("HTTPRoute", "r", theirs, PRIMARY, CANARY, records[0]).accepted
    # Had they changed nothing but the two weights, the Gateway's older acceptance would hold.
    weights_only = _written(obj, 95, 5)
    assert inspect_route("HTTPRoute", "r", weights_only, PRIMARY, CANARY, records[0]).accepted
    # The next decision starts a new range from what it sees.
    state = inspect_route("HTTPRoute", "r", theirs, PRIMARY, CANARY, records[0])
    again = record_weight_write(records, [state], 90, 10)
    assert [(r.first, r.last) for r in again] == [(4, 5)] and again[0].spec_hash != records[0].spec_hash


_other_ref = st.fixed_dictionaries(
    {"name": st.sampled_from(["admin", "legacy", "search"]), "port": st.integers(1, 65535)},
    optional={"weight": st.integers(0, 1000)},
)
_filter = st.fixed_dictionaries(
    {"type": st.sampled_from(["RequestHeaderModifier", "URLRewrite", "RequestMirror"])}
)


@st.composite
def _routes(draw):
    rules = []
    for _ in range(draw(st.integers(1, 4))):
        refs = draw(st.lists(_other_ref, max_size=2))
        if draw(st.booleans()):
            ours = [
                {"name": PRIMARY, "port": 8080, "weight": draw(st.integers(0, 100))},
                {"name": CANARY, "port": 8080, "weight": draw(st.integers(0, 100))},
            ]
            if draw(st.booleans()):
                del ours[draw(st.integers(0, 1))]["weight"]
            refs = draw(st.permutations(refs + ours))
        rule = {"backendRefs": refs}
        if draw(st.booleans()):
            rule["filters"] = draw(st.lists(_filter, max_size=2))
        rules.append(rule)
    obj = route()
    obj["spec"]["rules"] = rules
    return obj


@given(_routes(), st.integers(0, 100))
def test_weight_patch_never_touches_anything_but_our_two_weights(original, canary_weight):
    patched = jsonpatch.apply_patch(
        copy.deepcopy(original), weight_patch(original, PRIMARY, CANARY, 100 - canary_weight, canary_weight)
    )
    for before, after in zip(original["spec"]["rules"], patched["spec"]["rules"], strict=True):
        assert before.get("filters") == after.get("filters")
        for ref_before, ref_after in zip(before["backendRefs"], after["backendRefs"], strict=True):
            if ref_before["name"] == PRIMARY:
                assert ref_after == {**ref_before, "weight": 100 - canary_weight}
            elif ref_before["name"] == CANARY:
                assert ref_after == {**ref_before, "weight": canary_weight}
            else:
                assert ref_after == ref_before
    assert {k: v for k, v in patched.items() if k != "spec"} == {
        k: v for k, v in original.items() if k != "spec"
    }
