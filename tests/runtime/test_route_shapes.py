"""Route shapes app teams write, through the controller on the sandbox: several weighted rules and routes.

One Canary over an HTTPRoute with two weighted rules (one with filters, a timeout and a backendRef
filter), a rule to a foreign Service and a rule pinned to the primary, plus a GRPCRoute attached to a
Gateway in another namespace. Plain weight steps and A/B testing (HTTP header and gRPC method) both
leave every part canaryd does not own as written.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.runtime import world
from tests.runtime.test_traffic_modes import (
    GRPC,
    HTTP,
    METRIC,
    NS,
    ScriptedAnalysis,
    cluster,  # noqa: F401 - the fixture
    controller,
    stored_route,
    until_phase,
)

NAME = "orders"


def http_route() -> dict[str, Any]:
    both = [
        {"name": f"{NAME}-primary", "port": 8080, "weight": 100},
        {
            "name": f"{NAME}-canary",
            "port": 8080,
            "weight": 0,
            "filters": [
                {
                    "type": "RequestHeaderModifier",
                    "requestHeaderModifier": {"add": [{"name": "x-backend", "value": "canary"}]},
                }
            ],
        },
    ]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": NAME, "namespace": NS, "annotations": {"sandbox.canaryd.io/rps": "40"}},
        "spec": {
            "parentRefs": [{"name": world.GATEWAY_NAME, "namespace": world.GATEWAY_NAMESPACE}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/orders"}}],
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"set": [{"name": "x-team", "value": "orders"}]},
                        }
                    ],
                    "timeouts": {"request": "10s"},
                    "backendRefs": both,
                },
                {"matches": [{"path": {"type": "PathPrefix", "value": "/docs"}}],
                 "backendRefs": [{"name": "docs", "port": 80}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/v2/orders"}, "method": "POST"}],
                 "backendRefs": [{k: v for k, v in r.items() if k != "filters"} for r in both]},
                {"matches": [{"path": {"type": "Exact", "value": "/healthz"}}],
                 "backendRefs": [{"name": f"{NAME}-primary", "port": 8080}]},
            ],
        },
    }  # fmt: skip


def grpc_route() -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GRPCRoute",
        "metadata": {"name": f"{NAME}-rpc", "namespace": NS},
        "spec": {
            "parentRefs": [{"name": "internal", "namespace": "edge"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": f"{NAME}-primary", "port": 8080, "weight": 100},
                        {"name": f"{NAME}-canary", "port": 8080, "weight": 0},
                    ]
                }
            ],
        },
    }


def create(store: Any, **analysis: Any) -> None:
    store.ensure_namespace("edge")
    gateway = copy.deepcopy(store.get("gateways.gateway.networking.k8s.io", world.GATEWAY_NAME, "infra"))
    store.create(
        "gateways.gateway.networking.k8s.io",
        {"apiVersion": gateway["apiVersion"], "kind": "Gateway",
         "metadata": {"name": "internal", "namespace": "edge"}, "spec": gateway["spec"]},
    )  # fmt: skip
    store.create("deployments", world.deployment(NS, NAME))
    store.create(HTTP, http_route())
    store.create(GRPC, grpc_route())
    canary = world.canary(NS, NAME, interval="1s", metrics=copy.deepcopy(METRIC))
    canary["spec"]["routeRefs"] = [
        {"kind": "HTTPRoute", "name": NAME},
        {"kind": "GRPCRoute", "name": f"{NAME}-rpc"},
    ]
    canary["spec"]["analysis"].update(analysis)
    canary["spec"]["analysis"] = {k: v for k, v in canary["spec"]["analysis"].items() if v is not None}
    store.create("canaries.canaryd.io", canary)


def both_routes(store: Any) -> str:
    return json.dumps(
        [stored_route(store, NAME)["spec"], stored_route(store, f"{NAME}-rpc", "GRPCRoute")["spec"]],
        sort_keys=True,
    )


@pytest.mark.parametrize("mode", ["weights", "ab"])
async def test_every_weighted_rule_of_every_route_moves_and_nothing_else_does(cluster, mode):  # noqa: F811
    store = cluster.store
    if mode == "ab":
        create(
            store, stepWeights=None, iterations=3,
            match=[{"headers": [{"name": "x-canary", "value": "insider"}]}],
            grpcMatch=[{"method": {"service": "orders.v1.Orders", "method": "Place"}}],
        )  # fmt: skip
    else:
        create(store, stepWeights=[25, 50])
    recorder = world.WeightRecorder(store, NS, NAME)
    seen: list[list[dict[str, Any]]] = []
    grpc_weights: list[tuple[int, int]] = []
    grpc_seen: list[list[dict[str, Any]]] = []

    def on_event(event: Any) -> None:
        if event.storage_key[1] == "httproutes" and event.obj["metadata"]["name"] == NAME:
            seen.append(copy.deepcopy(event.obj["spec"]["rules"]))
        if event.storage_key[1] == "grpcroutes" and event.obj["metadata"]["name"] == f"{NAME}-rpc":
            grpc_seen.append(copy.deepcopy(event.obj["spec"]["rules"]))
            refs = event.obj["spec"]["rules"][-1]["backendRefs"]
            pair = (refs[0]["weight"], refs[1]["weight"])
            if not grpc_weights or grpc_weights[-1] != pair:
                grpc_weights.append(pair)

    unsubscribe = store.subscribe(on_event)
    async with controller(cluster, ScriptedAnalysis()):
        await until_phase(store, NAME, "Initialized")
        as_written = both_routes(store)
        teams = [r for r in stored_route(store, NAME)["spec"]["rules"]]
        world.new_revision(store, NS, NAME, "app:2.0")
        await until_phase(store, NAME, "Succeeded")
    unsubscribe()
    recorder.close()
    assert both_routes(store) == as_written
    foreign, pinned = json.dumps(teams[1], sort_keys=True), json.dumps(teams[3], sort_keys=True)
    for rules in seen:
        theirs = [r for r in rules if not str(r.get("name", "")).endswith(".canaryd.io")]
        assert (
            json.dumps(theirs[1], sort_keys=True) == foreign
            and json.dumps(theirs[3], sort_keys=True) == pinned
        )
        refs = [[(b["name"], b.get("weight")) for b in theirs[i]["backendRefs"]] for i in (0, 2)]
        assert refs[0] == [(n, w) for n, w in refs[1]], "the two weighted rules moved apart"
        assert theirs[0]["filters"] == teams[0]["filters"] and theirs[0]["timeouts"] == teams[0]["timeouts"]
        assert theirs[0]["backendRefs"][1]["filters"] == teams[0]["backendRefs"][1]["filters"]
    if mode == "weights":
        assert recorder.sequence == [(100, 0), (75, 25), (50, 50), (100, 0)]
        assert grpc_weights == [(100, 0), (75, 25), (50, 50), (100, 0)]
    else:
        added = [[r.get("name") for r in rules] for rules in seen if any(r.get("name") for r in rules)]
        assert added and added[0] == ["abtest-0.canaryd.io", None, None, "abtest-1.canaryd.io", None, None]
        ab_rules = next(rules for rules in seen if rules[0].get("name") == "abtest-0.canaryd.io")
        second = ab_rules[3]
        assert second["matches"][0]["method"] == "POST"
        assert second["matches"][0]["path"] == {"type": "PathPrefix", "value": "/v2/orders"}
        assert recorder.sequence == [(100, 0)] and set(grpc_weights) <= {(100, 0)}
        grpc_ab = next(rules for rules in grpc_seen if rules[0].get("name") == "abtest-0.canaryd.io")
        assert len(grpc_ab) == 2 and [b["name"] for b in grpc_ab[0]["backendRefs"]] == [f"{NAME}-canary"]
        method = grpc_ab[0]["matches"][0]["method"]
        assert (method["service"], method["method"]) == ("orders.v1.Orders", "Place")
