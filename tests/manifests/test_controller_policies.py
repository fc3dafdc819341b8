"""The controller's PodDisruptionBudget and NetworkPolicy let it do its work and nothing more.

Checked on the rendered install: the budget and the policy select exactly the
controller's pods; the budget lets a drain evict one replica at a time (the
standby takes the Lease over); the policy admits the probes and Prometheus on
the ports the container listens on, and lets out DNS, the API server and the
Prometheus named by CANARYD_PROMETHEUS_URL, on their ports only.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from tests.manifests.rendering import MANIFESTS, render


def _install() -> list[dict[str, Any]]:
    return render(MANIFESTS / "default")


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def _pod_labels(objects: list[dict[str, Any]]) -> dict[str, str]:
    labels: dict[str, str] = _one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def test_disruption_budget_lets_a_drain_take_one_replica_at_a_time() -> None:
    objects = _install()
    budget = _one(objects, "PodDisruptionBudget")
    deployment = _one(objects, "Deployment")
    assert budget["apiVersion"] == "policy/v1"
    assert budget["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= _pod_labels(objects).items()
    # maxUnavailable 1: never blocks a drain (even at one replica), never lets both go at once.
    assert budget["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in budget["spec"]
    assert deployment["spec"]["replicas"] >= 2


def test_network_policy_selects_the_controller_and_restricts_both_directions() -> None:
    objects = _install()
    policy = _one(objects, "NetworkPolicy")
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= _pod_labels(objects).items()
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]


def _ports(rules: list[dict[str, Any]]) -> set[tuple[int, str]]:
    return {(port["port"], port.get("protocol", "TCP")) for rule in rules for port in rule.get("ports", [])}


def test_network_policy_admits_probes_and_scrapes_on_the_container_ports_only() -> None:
    objects = _install()
    policy = _one(objects, "NetworkPolicy")
    (container,) = _one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    listening = {(p["containerPort"], p.get("protocol", "TCP")) for p in container["ports"]}
    ingress = policy["spec"]["ingress"]
    assert all(rule.get("ports") for rule in ingress), "every ingress rule names its ports"
    assert _ports(ingress) == listening
    probe_ports = {container[probe]["httpGet"]["port"] for probe in ("livenessProbe", "readinessProbe")}
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert {(named[port], "TCP") for port in probe_ports} <= _ports(ingress)


def test_network_policy_lets_out_dns_the_api_server_and_prometheus() -> None:
    objects = _install()
    egress = _one(objects, "NetworkPolicy")["spec"]["egress"]
    assert all(rule.get("ports") for rule in egress), "every egress rule names its ports"
    allowed = _ports(egress)
    assert {(53, "UDP"), (53, "TCP")} <= allowed
    # The kubernetes Service listens on 443 and usually forwards to the API server's 6443.
    assert {(443, "TCP"), (6443, "TCP")} <= allowed
    (container,) = _one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    prometheus = urlsplit(env["CANARYD_PROMETHEUS_URL"])
    default_port = 443 if prometheus.scheme == "https" else 80
    assert (prometheus.port or default_port, "TCP") in allowed
    assert len(allowed) == 5, f"nothing else is let out: {sorted(allowed)}"
