"""What the controller observes names each configuration problem with its own condition reason.

A Canary whose target Deployment cannot be split, or whose MetricTemplate is
missing or malformed, shows Ready=False; the reason is what a person filters
on (``kubectl get canary -o jsonpath=...``), so it must name the actual
problem, not a default.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from canaryd.api.constants import Reason
from canaryd.api.models import Canary
from canaryd.core.lifecycle import decide
from canaryd.core.routes import spec_hash
from canaryd.runtime.observe import Caches, observe
from tests.runtime import world

NS = "shop"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class DictCache:
    """Stands in for a list+watch cache: objects by (namespace, name)."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects}

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((namespace, name))

    def items(self) -> list[dict[str, Any]]:
        return list(self.objects.values())


def template(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "canaryd.io/v1alpha1",
        "kind": "MetricTemplate",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def ready_condition(target: dict[str, Any], *templates: dict[str, Any]) -> tuple[str, str, str]:
    raw = world.canary(
        NS, "shop", metrics=[{"name": "sr", "templateRef": {"name": "sr"}, "thresholdRange": {"min": 1}}]
    )
    raw["metadata"]["uid"] = "uid-shop"
    canary = Canary.model_validate(raw)
    caches = Caches(
        canaries=DictCache(raw),  # type: ignore[arg-type]
        templates=DictCache(*templates),  # type: ignore[arg-type]
        deployments=DictCache(target),  # type: ignore[arg-type]
        services=DictCache(),  # type: ignore[arg-type]
        routes={"HTTPRoute": DictCache(world.route(NS, "shop"))},  # type: ignore[dict-item]
    )
    observations = observe(canary, raw, caches).observations
    condition = decide(canary, observations, NOW).status.condition("Ready")
    assert condition is not None
    return condition.status, condition.reason, condition.message


def unsplittable_target() -> dict[str, Any]:
    """A Deployment whose pod template does not carry its selector's labels (canaryd cannot split it)."""
    target = copy.deepcopy(world.deployment(NS, "shop"))
    target["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    return target


def test_a_missing_template_reads_metric_template_not_found() -> None:
    status, reason, message = ready_condition(world.deployment(NS, "shop"))
    assert (status, reason) == ("False", Reason.TEMPLATE_NOT_FOUND)
    assert f"MetricTemplate {NS}/sr not found" in message


def test_a_malformed_template_reads_metric_template_invalid() -> None:
    status, reason, message = ready_condition(world.deployment(NS, "shop"), template("sr", {"query": ""}))
    assert (status, reason) == ("False", Reason.TEMPLATE_INVALID)
    assert f"MetricTemplate {NS}/sr is invalid" in message


def test_a_target_canaryd_cannot_split_reads_target_invalid_even_when_a_template_is_missing_too() -> None:
    status, reason, message = ready_condition(unsplittable_target())
    assert (status, reason) == ("False", Reason.TARGET_INVALID)
    assert "pod template labels do not match its selector" in message
    assert "MetricTemplate" in message  # every problem is listed, the first names the reason


def test_a_usable_target_and_template_only_wait_for_initialization() -> None:
    status, reason, message = ready_condition(
        world.deployment(NS, "shop"), template("sr", {"query": "vector(1)"})
    )
    assert (status, reason) == ("False", Reason.INITIALIZING)
    assert "creating Deployment shop-primary" in message


def _caches(canary: dict[str, Any], route: dict[str, Any]) -> Caches:
    return Caches(
        canaries=DictCache(canary),  # type: ignore[arg-type]
        templates=DictCache(),  # type: ignore[arg-type]
        deployments=DictCache(world.deployment(NS, "shop")),  # type: ignore[arg-type]
        services=DictCache(),  # type: ignore[arg-type]
        routes={"HTTPRoute": DictCache(route)},  # type: ignore[dict-item]
    )


def _accepted_at_generation_1(route: dict[str, Any]) -> None:
    """The Gateway's status on the route: Accepted, for generation 1."""
    accepted = {"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": 1}
    route["status"] = {
        "parents": [
            {
                "parentRef": {"name": world.GATEWAY_NAME, "namespace": world.GATEWAY_NAMESPACE},
                "controllerName": world.SANDBOX_CONTROLLER,
                "conditions": [accepted],
            }
        ]
    }


def _weighted_by_canaryd(route: dict[str, Any], first: int, last: int) -> dict[str, Any]:
    """What canaryd writes to status when it took generations ``first`` to ``last`` by its weight steps."""
    return {
        "kind": "HTTPRoute",
        "name": "shop",
        "uid": "route-uid",
        "first": first,
        "last": last,
        "specHash": spec_hash(route, "shop-primary", "shop-canary"),
    }


def test_a_route_weighted_twice_since_the_gateway_reported_is_still_accepted_after_a_restart() -> None:
    """What acceptance needs is in the Canary's status: a fresh controller (fresh caches) sees the same."""
    route = world.route(NS, "shop")
    route["metadata"].update(uid="route-uid", generation=3)
    _accepted_at_generation_1(route)
    raw = world.canary(NS, "shop")
    unaware = observe(Canary.model_validate(raw), raw, _caches(raw, route)).observations
    assert not unaware.routes[0].accepted and "accepted generation 1" in unaware.routes[0].problem

    raw["status"] = {"routeGenerations": [_weighted_by_canaryd(route, first=1, last=3)]}
    restarted = observe(Canary.model_validate(raw), raw, _caches(raw, route)).observations
    assert restarted.routes[0].accepted and restarted.routes[0].problem == ""


def test_a_route_kept_from_one_pass_to_the_next_is_judged_again_when_the_status_record_changes() -> None:
    """The route's state is remembered per resourceVersion, and per what the Canary's status says of it."""
    route = world.route(NS, "shop")
    route["metadata"].update(uid="route-uid", generation=3, resourceVersion="41")
    _accepted_at_generation_1(route)
    raw = world.canary(NS, "shop")
    raw["metadata"]["uid"] = "uid-shop"
    caches = _caches(raw, route)
    before = observe(Canary.model_validate(raw), raw, caches).observations
    assert not before.routes[0].accepted
    raw["status"] = {"routeGenerations": [_weighted_by_canaryd(route, first=1, last=3)]}
    after = observe(Canary.model_validate(raw), raw, caches).observations
    assert after.routes[0].accepted and after.routes[0].problem == ""


def test_what_is_made_of_an_object_is_made_once_per_resource_version() -> None:
    from canaryd.runtime.observe import ByVersion

    made: list[str] = []

    def make(obj: dict) -> str:
        made.append(obj["metadata"].get("resourceVersion", "-"))
        return f"parsed {len(made)}"

    parsed = ByVersion()
    obj = {"metadata": {"namespace": "shop", "name": "cart", "uid": "u1", "resourceVersion": "7"}}
    assert parsed.get("Canary", obj, make) == parsed.get("Canary", obj, make) == "parsed 1"
    changed = {"metadata": {**obj["metadata"], "resourceVersion": "8"}}
    assert parsed.get("Canary", changed, make) == "parsed 2"
    recreated = {"metadata": {**changed["metadata"], "uid": "u2"}}  # same name and version, a new object
    assert parsed.get("Canary", recreated, make) == "parsed 3"
    unversioned = {"metadata": {"namespace": "shop", "name": "cart"}}
    parsed.get("Canary", unversioned, make)
    parsed.get("Canary", unversioned, make)
    assert made == ["7", "8", "8", "-", "-"]
    parsed.forget("shop", "cart")
    assert parsed.get("Canary", recreated, make) == "parsed 6"


def test_the_claim_index_follows_targets_and_refusals_through_the_canary_events() -> None:
    """A retargeted or deleted Canary leaves its old entry; a refused one is found without a scan."""
    from canaryd.api.constants import Reason
    from canaryd.runtime.observe import ClaimIndex

    index = ClaimIndex()
    web = world.canary(NS, "web")
    index.track("ADDED", web)
    assert index.targeting(NS, {"web"}) == {(NS, "web")}
    retargeted = copy.deepcopy(web)
    retargeted["spec"]["targetRef"]["name"] = "shop"
    ready = {"type": "Ready", "status": "False", "reason": Reason.TARGET_CLAIMED.value}
    retargeted["status"] = {"conditions": [ready]}
    index.track("MODIFIED", retargeted)
    assert index.targeting(NS, {"web"}) == set()
    assert index.targeting(NS, {"shop", "other"}) == {(NS, "web")}
    assert index.refused(NS) == {(NS, "web")} and index.refused("elsewhere") == set()
    index.track("DELETED", retargeted)
    assert index.targeting(NS, {"shop"}) == set() and index.refused(NS) == set()


def test_a_routes_parent_gateways_come_with_what_their_classes_list_from_the_caches() -> None:
    """A Gateway in another namespace, one without a known class, and one not (yet) in the cache."""
    raw = world.canary(NS, "shop")
    canary = Canary.model_validate(raw)
    route = world.route(NS, "shop")
    route["spec"]["parentRefs"] = [
        {"name": "public", "namespace": "infra"},
        {"name": "internal"},
        {"name": "missing", "namespace": "infra"},
    ]

    def gateway(namespace: str, name: str, class_name: str) -> dict[str, Any]:
        return {"metadata": {"namespace": namespace, "name": name}, "spec": {"gatewayClassName": class_name}}

    classes = DictCache()
    classes.objects[("", "traefik")] = {
        "metadata": {"name": "traefik"},
        "status": {"supportedFeatures": [{"name": "HTTPRoute"}, {"name": "GRPCRoute"}]},
    }
    caches = Caches(
        canaries=DictCache(raw),  # type: ignore[arg-type]
        templates=DictCache(),  # type: ignore[arg-type]
        deployments=DictCache(),  # type: ignore[arg-type]
        services=DictCache(),  # type: ignore[arg-type]
        routes={"HTTPRoute": DictCache(route)},  # type: ignore[dict-item]
        gateways=DictCache(gateway("infra", "public", "traefik"), gateway(NS, "internal", "unknown")),  # type: ignore[arg-type]
        gateway_classes=classes,  # type: ignore[arg-type]
    )
    [state] = observe(canary, raw, caches).observations.routes
    assert [(p.gateway, p.gateway_class, p.features) for p in state.parents] == [
        ("infra/public", "traefik", frozenset({"HTTPRoute", "GRPCRoute"})),
        (f"{NS}/internal", "unknown", None),
        ("infra/missing", "", None),
    ]
