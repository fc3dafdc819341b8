"""The install manifests render offline and say what the README promises.

`kubectl apply -k manifests/default` is the whole install, so every
kustomization must build with nothing but kubectl, and the rendered controller
must be the hardened, leader-elected, probed Deployment the docs describe.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from canaryd.cli import run as run_command
from canaryd.runtime.settings import Settings, parse_address
from tests.manifests.rendering import MANIFESTS, kustomizations, render

INSTALL_NAMESPACE = "canaryd-system"


def _one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def test_every_install_directory_is_a_kustomization() -> None:
    names = {path.relative_to(MANIFESTS).as_posix() for path in kustomizations()}
    assert {"crd", "rbac", "manager", "default", "prometheus"} <= names


@pytest.mark.parametrize("directory", kustomizations(), ids=lambda p: p.relative_to(MANIFESTS).as_posix())
def test_kustomization_renders_offline(directory: Path) -> None:
    objects = render(directory)
    assert objects, f"{directory} rendered nothing"
    for obj in objects:
        assert obj.get("apiVersion") and obj.get("kind") and obj.get("metadata", {}).get("name")


def test_default_install_holds_crds_rbac_and_controller_in_its_namespace() -> None:
    objects = render(MANIFESTS / "default")
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert ("CustomResourceDefinition", "canaries.canaryd.io") in kinds
    assert ("CustomResourceDefinition", "metrictemplates.canaryd.io") in kinds
    assert ("Namespace", INSTALL_NAMESPACE) in kinds
    for kind, name in [
        ("ServiceAccount", "canaryd"),
        ("ClusterRole", "canaryd-manager"),
        ("ClusterRoleBinding", "canaryd-manager"),
        ("Role", "canaryd-leader-election"),
        ("RoleBinding", "canaryd-leader-election"),
        ("ClusterRole", "canaryd-view"),
        ("ClusterRole", "canaryd-operate"),
        ("Deployment", "canaryd"),
        ("Service", "canaryd-metrics"),
    ]:
        assert (kind, name) in kinds, f"{kind}/{name} missing from manifests/default"
    for obj in objects:
        if obj["kind"] in {"ServiceAccount", "Role", "RoleBinding", "Deployment", "Service"}:
            assert obj["metadata"]["namespace"] == INSTALL_NAMESPACE, obj["metadata"]
    binding = _one(objects, "ClusterRoleBinding", "canaryd-manager")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "canaryd", "namespace": INSTALL_NAMESPACE}
    ]


def test_controller_deployment_is_leader_elected_probed_and_hardened() -> None:
    deployment = _one(render(MANIFESTS / "default"), "Deployment", "canaryd")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "canaryd"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert "--leader-elect" in container.get("args", [])
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {p["name"] for p in container["ports"]} >= {"metrics", "health"}
    hardening = container["securityContext"]
    assert hardening["allowPrivilegeEscalation"] is False
    assert hardening["readOnlyRootFilesystem"] is True
    assert hardening["capabilities"]["drop"] == ["ALL"]
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert set(container["resources"]["limits"]) >= {"memory"}


def test_service_monitor_scrapes_the_metrics_service() -> None:
    install = render(MANIFESTS / "default")
    service = _one(install, "Service", "canaryd-metrics")
    (monitor,) = [o for o in render(MANIFESTS / "prometheus") if o["kind"] == "ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [INSTALL_NAMESPACE]
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
    deployment = _one(install, "Deployment", "canaryd")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_people_roles_aggregate_as_documented() -> None:
    objects = render(MANIFESTS / "rbac")
    view = _one(objects, "ClusterRole", "canaryd-view")
    operate = _one(objects, "ClusterRole", "canaryd-operate")
    aggregate = "rbac.authorization.k8s.io/aggregate-to-"
    assert {k.removeprefix(aggregate) for k in view["metadata"]["labels"] if k.startswith(aggregate)} == {
        "view", "edit", "admin",
    }  # fmt: skip
    assert {k.removeprefix(aggregate) for k in operate["metadata"]["labels"] if k.startswith(aggregate)} == {
        "edit", "admin",
    }  # fmt: skip
    for role in (view, operate):
        for rule in role["rules"]:
            assert rule["apiGroups"] == ["canaryd.io"]
            # Neither role may change a Canary's spec: only operate may patch status.
            writes = set(rule["verbs"]) - {"get", "list", "watch"}
            assert not writes or (
                role is operate and rule["resources"] == ["canaries/status"] and writes == {"patch"}
            )
    operate_status = [r for r in operate["rules"] if "canaries/status" in r["resources"]]
    assert operate_status and "patch" in operate_status[0]["verbs"]


def test_controller_configuration_is_what_canaryd_run_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = _one(render(MANIFESTS / "default"), "Deployment", "canaryd")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    known = {f"CANARYD_{name.upper()}" for name in Settings.model_fields}
    for variable in container["env"]:
        assert variable["name"] in known, f"{variable['name']} is not a canaryd setting"
        value = variable.get("value") or f"from-{next(iter(variable['valueFrom']))}"
        monkeypatch.setenv(variable["name"], value)
    parser = argparse.ArgumentParser()
    run_command.add_arguments(parser)
    settings = run_command.settings_from(parser.parse_args(container.get("args", [])))
    assert settings.leader_elect is True
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert parse_address(settings.health_address)[1] == ports["health"]
    assert parse_address(settings.metrics_address)[1] == ports["metrics"]
