"""The Helm chart installs what the kustomize install does, and its values do what they say.

Everything here runs the real helm (helm.sh/helm/v3, built from Go modules by
packaging/helm/build): `helm lint --strict`, `helm template`, the chart's
values schema. With the defaults (and the optional parts switched on) the
chart renders exactly the objects of manifests/default, manifests/prometheus
and manifests/grafana, object by object, apart from Helm's own labels.
"""

from __future__ import annotations

import argparse
import difflib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryd.cli import run as run_command
from canaryd.runtime.settings import Settings
from tests.manifests.rendering import MANIFESTS, render
from tests.packaging.conftest import CHART, NAMESPACE, REPO, HelmTemplate, run_helm

#: Labels Helm charts put on every object by convention; the kustomize install has none of them.
HELM_LABELS = {
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
}
#: Annotations only a Helm release means something with.
HELM_ANNOTATIONS = {"helm.sh/resource-policy"}
ALL_PARTS = (
    "namespace.create=true",
    "serviceMonitor.enabled=true",
    "prometheusRule.enabled=true",
    "grafanaDashboard.enabled=true",
)


def _key(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


def _without_helm_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    labels = {k: v for k, v in meta.get("labels", {}).items() if k not in HELM_LABELS}
    annotations = {k: v for k, v in meta.get("annotations", {}).items() if k not in HELM_ANNOTATIONS}
    cleaned = {k: v for k, v in meta.items() if k not in {"labels", "annotations"}}
    if labels:
        cleaned["labels"] = labels
    if annotations:
        cleaned["annotations"] = annotations
    return {**obj, "metadata": cleaned}


def _one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = _one(objects, "Deployment", "canaryd")["spec"]["template"]["spec"]["containers"]
    return container


def _settings(container: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """What `canaryd run` makes of the container's arguments and environment."""
    for variable in container["env"]:
        value = variable.get("value") or f"from-{next(iter(variable['valueFrom']))}"
        monkeypatch.setenv(variable["name"], value)
    parser = argparse.ArgumentParser()
    run_command.add_arguments(parser)
    return run_command.settings_from(parser.parse_args(container.get("args", [])))


def test_helm_is_the_version_pinned_in_go_mod(helm: str) -> None:
    go_mod = (REPO / "cluster" / "go" / "helm" / "go.mod").read_text()
    pinned = re.search(r"^\s*helm\.sh/helm/v3 (v\S+)", go_mod, flags=re.M)
    assert pinned, "cluster/go/helm/go.mod requires helm.sh/helm/v3"
    reported = run_helm(helm, "version", "--template", "{{.Version}}").stdout.strip()
    assert reported == pinned.group(1)


@pytest.mark.parametrize("settings", [(), ALL_PARTS], ids=["defaults", "every-part"])
def test_chart_lints_strict(helm: str, settings: tuple[str, ...]) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    for setting in settings:
        args += ["--set", setting]
    result = run_helm(helm, *args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_chart_renders_the_objects_kustomize_renders(helm_template: HelmTemplate) -> None:
    kustomized = [
        *render(MANIFESTS / "default"),
        *render(MANIFESTS / "prometheus"),
        *render(MANIFESTS / "grafana"),
    ]
    charted = helm_template(*ALL_PARTS)
    by_kustomize = {_key(o): o for o in kustomized}
    by_helm = {_key(o): _without_helm_metadata(o) for o in charted}
    assert len(by_kustomize) == len(kustomized) and len(by_helm) == len(charted), "duplicate objects"
    assert sorted(by_helm) == sorted(by_kustomize), (
        f"only in the chart: {sorted(set(by_helm) - set(by_kustomize))}; "
        f"only in kustomize: {sorted(set(by_kustomize) - set(by_helm))}"
    )
    for key, expected in by_kustomize.items():
        if by_helm[key] != expected:
            diff = difflib.unified_diff(
                yaml.safe_dump(expected).splitlines(), yaml.safe_dump(by_helm[key]).splitlines(),
                "kustomize", "helm", lineterm="",
            )  # fmt: skip
            pytest.fail(f"{key} differs:\n" + "\n".join(diff))
    # Helm's own labels are there, on every object.
    for obj in charted:
        assert set(obj["metadata"]["labels"]) >= HELM_LABELS, _key(obj)


def test_defaults_leave_out_the_parts_that_need_other_crds_and_the_namespace(
    helm_template: HelmTemplate,
) -> None:
    kinds = {o["kind"] for o in helm_template()}
    assert not kinds & {"Namespace", "ServiceMonitor", "PrometheusRule", "ConfigMap"}
    assert {"CustomResourceDefinition", "Deployment", "PodDisruptionBudget", "NetworkPolicy"} <= kinds


def test_crds_are_kept_on_uninstall_unless_told_otherwise(helm_template: HelmTemplate) -> None:
    for crd in [o for o in helm_template() if o["kind"] == "CustomResourceDefinition"]:
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for crd in [o for o in helm_template("crds.keep=false") if o["kind"] == "CustomResourceDefinition"]:
        assert "helm.sh/resource-policy" not in crd["metadata"].get("annotations", {})
    assert not [o for o in helm_template("crds.install=false") if o["kind"] == "CustomResourceDefinition"]


def test_values_reach_the_controller(
    helm_template: HelmTemplate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = helm_template(
        values={
            "image": {"repository": "registry.example/platform/canaryd", "tag": "0.1.0-rc1",
                      "pullPolicy": "Always"},
            "imagePullSecrets": [{"name": "registry-credentials"}],
            "replicas": 3,
            "leaderElection": {"leaseDuration": 30, "renewDeadline": 20, "retryPeriod": 4},
            "watchNamespaces": ["shop", "payments"],
            "prometheus": {"url": "http://prometheus.observability:9090", "timeoutSeconds": 20},
            "maxConcurrentRuns": 5,
            "log": {"level": "debug", "format": "console"},
            # Helm merges maps with the defaults; null removes a default key (here the CPU limit).
            "resources": {
                "requests": {"cpu": "250m", "memory": "256Mi"},
                "limits": {"cpu": None, "memory": "1Gi"},
            },
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "platform",
                             "effect": "NoSchedule"}],
            "priorityClassName": "system-cluster-critical",
            "podLabels": {"team": "platform"},
            "serviceAccount": {"annotations": {"iam.example/role": "canaryd"}},
        },
        tmp=tmp_path,
    )  # fmt: skip
    deployment = _one(objects, "Deployment", "canaryd")
    pod = deployment["spec"]["template"]
    container = _container(objects)
    assert deployment["spec"]["replicas"] == 3
    assert container["image"] == "registry.example/platform/canaryd:0.1.0-rc1"
    assert container["imagePullPolicy"] == "Always"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["spec"]["tolerations"][0]["key"] == "dedicated"
    assert pod["spec"]["priorityClassName"] == "system-cluster-critical"
    assert pod["metadata"]["labels"]["team"] == "platform"
    # The selector stays the same whatever labels the pods get (a changed selector breaks upgrades).
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "canaryd", "app.kubernetes.io/component": "controller",
    }  # fmt: skip
    account = _one(objects, "ServiceAccount", "canaryd")
    assert account["metadata"]["annotations"] == {"iam.example/role": "canaryd"}

    settings = _settings(container, monkeypatch)
    assert settings.leader_elect is True
    assert settings.namespaces == ["shop", "payments"]
    assert settings.prometheus_url == "http://prometheus.observability:9090"
    assert settings.prometheus_timeout_seconds == 20
    assert settings.max_concurrent_runs == 5
    election = (
        settings.lease_duration_seconds,
        settings.renew_deadline_seconds,
        settings.retry_period_seconds,
    )
    assert election == (30, 20, 4)
    assert settings.log_level == "debug" and settings.log_format == "console"


def test_image_by_digest(helm_template: HelmTemplate) -> None:
    digest = "sha256:" + "ab" * 32
    container = _container(
        helm_template("image.repository=registry.example/canaryd", f"image.digest={digest}")
    )
    assert container["image"] == f"registry.example/canaryd@{digest}"


def test_default_image_is_the_release_version(helm_template: HelmTemplate) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert _container(helm_template())["image"] == f"canaryd:{chart['appVersion']}"


def test_single_replica_without_leader_election(
    helm_template: HelmTemplate, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = helm_template("replicas=1", "leaderElection.enabled=false")
    assert _settings(_container(objects), monkeypatch).leader_elect is False
    assert not [o for o in objects if o["kind"] in {"Role", "RoleBinding"}], (
        "no Lease rights without election"
    )


def test_several_replicas_without_leader_election_are_refused(helm: str) -> None:
    result = run_helm(
        helm, "template", "canaryd", str(CHART), "--set", "leaderElection.enabled=false", check=False
    )
    assert result.returncode != 0
    assert "replicas > 1 needs leaderElection.enabled=true" in result.stderr


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("replicas=two", "/replicas"),
        ("prometheus.url=prometheus:9090", "/prometheus/url"),
        ("watchNamespaces={Shop}", "/watchNamespaces/0"),
        ("log.format=xml", "/log/format"),
        ("replica=2", "replica"),
    ],
)
def test_values_schema_refuses_mistakes(helm: str, setting: str, complaint: str) -> None:
    result = run_helm(helm, "template", "canaryd", str(CHART), "--set", setting, check=False)
    assert result.returncode != 0, f"{setting} was accepted"
    assert "schema" in result.stderr and complaint in result.stderr, result.stderr


def test_service_monitor_and_rule_carry_the_labels_prometheus_selects_on(helm_template: HelmTemplate) -> None:
    objects = helm_template(
        "serviceMonitor.enabled=true",
        "serviceMonitor.labels.release=kube-prometheus-stack",
        "serviceMonitor.interval=15s",
        "prometheusRule.enabled=true",
        "prometheusRule.labels.release=kube-prometheus-stack",
    )
    monitor = _one(objects, "ServiceMonitor", "canaryd")
    rule = _one(objects, "PrometheusRule", "canaryd")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["interval"] == "15s"
    service = _one(objects, "Service", "canaryd-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


def test_dashboard_config_map_for_the_grafana_sidecar(helm_template: HelmTemplate) -> None:
    objects = helm_template("grafanaDashboard.enabled=true", "grafanaDashboard.namespace=monitoring")
    config_map = _one(objects, "ConfigMap", "canaryd-dashboard")
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = (MANIFESTS / "grafana" / "canaryd-dashboard.json").read_text()
    assert config_map["data"]["canaryd-dashboard.json"] == shipped


def test_secrets_rule_can_be_left_out(helm_template: HelmTemplate) -> None:
    def resources(objects: list[dict[str, Any]]) -> set[str]:
        role = _one(objects, "ClusterRole", "canaryd-manager")
        return {resource for rule in role["rules"] for resource in rule["resources"]}

    assert "secrets" in resources(helm_template())
    assert "secrets" not in resources(helm_template("rbac.secrets=false"))


def test_network_policy_follows_the_prometheus_url(helm_template: HelmTemplate) -> None:
    def egress_ports(objects: list[dict[str, Any]]) -> set[int]:
        policy = _one(objects, "NetworkPolicy", "canaryd")
        return {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}

    assert 9090 in egress_ports(helm_template())
    assert 443 in egress_ports(helm_template("prometheus.url=https://mimir.example/prometheus",
                                             "networkPolicy.apiServerPorts={6443}"))  # fmt: skip
    assert {80, 10902} <= egress_ports(
        helm_template("prometheus.url=http://prometheus.monitoring", "networkPolicy.prometheusPorts={10902}")
    )
    assert not [o for o in helm_template("networkPolicy.enabled=false") if o["kind"] == "NetworkPolicy"]


@pytest.mark.parametrize(
    "settings",
    [(), ("podLabels.team=platform", "affinity.nodeAffinity=null", "extraArgs={--qps=20}")],
    ids=["defaults", "customised"],
)
def test_controller_stays_hardened(helm_template: HelmTemplate, settings: tuple[str, ...]) -> None:
    pod = _one(helm_template(*settings), "Deployment", "canaryd")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    hardening = container["securityContext"]
    assert hardening["allowPrivilegeEscalation"] is False
    assert hardening["readOnlyRootFilesystem"] is True
    assert hardening["capabilities"] == {"drop": ["ALL"]}
