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
