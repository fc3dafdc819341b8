"""When a cache change tells a Canary nothing new (its own write's answer, a Gateway catching up with it),
and when the writing pass must look at its Canary again.

A look skipped wrongly loses someone's change (a `kubectl canary promote`, a
team's route edit) until the next due step; a look kept needlessly costs one
pass per step. Both halves are checked here.
"""

from __future__ import annotations

import copy

from canaryd.api.constants import Phase
from canaryd.api.models import RouteGenerations
from canaryd.core import effects as fx
from canaryd.core.observations import RouteState
from canaryd.core.own_writes import is_json_patch_echo, is_status_echo, look_again, merge_patched
from canaryd.core.route_plan import RouteShape
from canaryd.core.routes import reads_alike, spec_hash

CANARY = {
    "apiVersion": "canaryd.io/v1alpha1",
    "kind": "Canary",
    "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "41", "generation": 3,
                 "managedFields": [{"manager": "kubectl"}]},
    "spec": {"targetRef": {"name": "web"}, "analysis": {"interval": "30s"}},
    "status": {"phase": "Progressing", "step": 1, "canaryWeight": 10,
               "traffic": {"mode": "weighted", "share": {"step": 1}}},
}  # fmt: skip

ROUTE = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "42", "generation": 7},
    "spec": {
        "parentRefs": [{"name": "public"}],
        "hostnames": ["shop.example"],
        "rules": [
            {"backendRefs": [{"name": "web-primary", "weight": 90}, {"name": "web-canary", "weight": 10}]}
        ],
    },
    "status": {
        "parents": [
            {
                "parentRef": {"name": "public"},
                "conditions": [{"type": "Accepted", "status": "True", "observedGeneration": 7}],
            }
        ]
    },
}
STEP_OPS = [
    {"op": "test", "path": "/spec/rules/0/backendRefs/0/name", "value": "web-primary"},
    {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 80},
    {"op": "test", "path": "/spec/rules/0/backendRefs/1/name", "value": "web-canary"},
    {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 20},
]


def server_answer(obj: dict, *, resource_version: str = "57", **changes: object) -> dict:
    answer = copy.deepcopy(obj)
    answer["metadata"]["resourceVersion"] = resource_version
    answer["metadata"]["managedFields"] = [{"manager": "canaryd"}]
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = answer
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return answer


def test_a_merge_patch_merges_objects_removes_nulls_and_replaces_the_rest():
    original = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]}
    assert merge_patched(original, {"b": {"c": None, "x": 4}, "e": [3], "a": None}) == {
        "b": {"d": 3, "x": 4},
        "e": [3],
    }
    assert original == {"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]}


def test_the_answer_to_a_status_patch_that_shows_only_the_patch_is_an_echo():
    patch = {"step": 2, "movingToWeight": 20, "traffic": {"share": None}}
    answer = server_answer(
        CANARY, status__step=2, status__movingToWeight=20, status__traffic={"mode": "weighted"}
    )
    assert is_status_echo(CANARY, patch, answer)
    answer.pop("apiVersion")  # some answers leave the kind out: no difference
    assert is_status_echo(CANARY, patch, answer)


def test_a_status_answer_that_carries_anyone_elses_change_is_not_an_echo():
    patch = {"step": 2}
    # a person's `kubectl canary promote` that landed between the decision and the write
    assert not is_status_echo(
        CANARY, patch, server_answer(CANARY, status__step=2, status__requestedAction="promote")
    )
    # a spec edit, an annotation, a deletion under way
    assert not is_status_echo(CANARY, patch, server_answer(CANARY, status__step=2, spec__suspend=True))
    assert not is_status_echo(
        CANARY, patch, server_answer(CANARY, status__step=2, metadata__annotations={"team": "x"})
    )
    assert not is_status_echo(
        CANARY,
        patch,
        server_answer(CANARY, status__step=2, metadata__deletionTimestamp="2026-01-01T00:00:00Z"),
    )
    # the server did not store what was asked (a default filled in, a field pruned)
    assert not is_status_echo(CANARY, patch, server_answer(CANARY, status__step=3))
    assert not is_status_echo(CANARY, {"step": 2, "x": 1}, server_answer(CANARY, status__step=2))
    assert not is_status_echo(CANARY, patch, None)  # type: ignore[arg-type]


def test_the_answer_to_a_route_patch_that_shows_only_the_new_weights_is_an_echo():
    answer = server_answer(ROUTE, metadata__generation=8)
    answer["spec"]["rules"][0]["backendRefs"][0]["weight"] = 80
    answer["spec"]["rules"][0]["backendRefs"][1]["weight"] = 20
    assert is_json_patch_echo(ROUTE, STEP_OPS, answer)
    assert ROUTE["spec"]["rules"][0]["backendRefs"][0]["weight"] == 90  # the base is left as it was


def test_a_route_answer_with_a_team_edit_or_a_new_status_is_not_an_echo():
    stepped = server_answer(ROUTE, metadata__generation=8)
    stepped["spec"]["rules"][0]["backendRefs"][0]["weight"] = 80
    stepped["spec"]["rules"][0]["backendRefs"][1]["weight"] = 20
    edited = copy.deepcopy(stepped)
    edited["spec"]["hostnames"] = ["shop.example", "new.example"]
    assert not is_json_patch_echo(ROUTE, STEP_OPS, edited)
    rejected = copy.deepcopy(stepped)
    rejected["status"]["parents"][0]["conditions"][0]["status"] = "False"
    assert not is_json_patch_echo(ROUTE, STEP_OPS, rejected)
    unchanged = server_answer(ROUTE)  # the weights did not move as asked
    assert not is_json_patch_echo(ROUTE, STEP_OPS, unchanged)
    broken = [{"op": "test", "path": "/spec/rules/0/backendRefs/0/name", "value": "someone-else"}]
    assert not is_json_patch_echo(ROUTE, broken, stepped)


WEIGHTS = fx.SetRouteWeights(primary=80, canary=20)
EVENT = fx.RecordEvent("Normal", "Progressing", "Advanced canary weight to 20")


def test_a_weight_step_within_progressing_needs_no_second_look():
    assert not look_again(Phase.PROGRESSING, Phase.PROGRESSING, [EVENT, WEIGHTS])
    assert not look_again(Phase.PROGRESSING, Phase.PROGRESSING, [])


def test_a_new_phase_or_an_effect_a_decision_reads_gets_a_second_look():
    assert look_again(Phase.INITIALIZED, Phase.PROGRESSING, [EVENT, WEIGHTS])
    assert look_again(Phase.PROGRESSING, Phase.PROMOTING, [EVENT])
    assert look_again(Phase.PROMOTING, Phase.FINALIZING, [WEIGHTS])
    assert look_again(Phase.FINALIZING, Phase.FINALIZING, [WEIGHTS])  # waits for the routes' answer
    assert look_again(Phase.PROGRESSING, Phase.PROGRESSING, [EVENT, fx.ScaleTarget(replicas=0)])
    assert look_again(Phase.PROGRESSING, Phase.PROGRESSING, [fx.AddFinalizer()])


def gateway_caught_up(route: dict, observed: int) -> dict:
    """The route after its Gateway reported on generation ``observed``: status moves, nothing else."""
    after = server_answer(route)
    for condition in after["status"]["parents"][0]["conditions"]:
        condition["observedGeneration"] = observed
    return after


def test_a_gateway_catching_up_with_a_weight_step_reads_alike_but_not_with_a_team_edit():
    route = server_answer(ROUTE, metadata__generation=8)
    route["metadata"]["uid"] = "u1"
    route["status"]["parents"][0]["conditions"][0]["observedGeneration"] = 7
    lag_of_weights = RouteGenerations(
        kind="HTTPRoute", name="web", uid="u1", first=7, last=8,
        spec_hash=spec_hash(route, "web-primary", "web-canary"),
    )  # fmt: skip
    caught_up = gateway_caught_up(route, 8)
    assert reads_alike("HTTPRoute", "web", route, caught_up, "web-primary", "web-canary", lag_of_weights)
    # Without the record, generation 8 is a change of the team's that waited for the Gateway: now accepted.
    assert not reads_alike("HTTPRoute", "web", route, caught_up, "web-primary", "web-canary", None)


def test_a_refusal_a_spec_or_a_label_change_does_not_read_alike():
    route = server_answer(ROUTE)
    refused = gateway_caught_up(route, 7)
    refused["status"]["parents"][0]["conditions"][0].update(status="False", reason="NotAllowedByListeners")
    assert not reads_alike("HTTPRoute", "web", route, refused, "web-primary", "web-canary")
    edited = server_answer(route, spec__hostnames=["other.example"])
    assert not reads_alike("HTTPRoute", "web", route, edited, "web-primary", "web-canary")
    labelled = server_answer(route, metadata__labels={"team": "shop"})
    assert not reads_alike("HTTPRoute", "web", route, labelled, "web-primary", "web-canary")
    assert reads_alike("HTTPRoute", "web", route, server_answer(route), "web-primary", "web-canary")


def test_a_step_that_adds_or_removes_canaryds_rules_gets_a_second_look():
    mirrored = fx.SetRouteWeights(primary=100, canary=0, shape=RouteShape(mirror_percent=20))
    assert look_again(Phase.PROGRESSING, Phase.PROGRESSING, [mirrored])
    # the routes carry canaryd's mirror filter, which this plain weight step takes off
    carrying = RouteState(kind="HTTPRoute", name="web", exists=True, mirrored=True)
    assert look_again(Phase.PROGRESSING, Phase.PROGRESSING, [WEIGHTS], [carrying])
    plain = RouteState(kind="HTTPRoute", name="web", exists=True)
    assert not look_again(Phase.PROGRESSING, Phase.PROGRESSING, [WEIGHTS], [plain])
