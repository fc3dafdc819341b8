"""Both install paths on a real API server: `kubectl apply -f deploy/install.yaml` and `helm install`.

The sandbox stores what it is given; a real control plane also enforces the
"restricted" Pod Security Standard on canaryd-system, admits the CRDs and their
CEL rules, and runs the Deployment's ReplicaSet. Each path must be accepted
without a warning, make its CRDs Established, and get both controller pods
created in the restricted namespace (a pod the Pod Security admission refuses
never appears). Helm's uninstall then keeps the CRDs, as the chart promises.

These tests need a cluster of their own (they install cluster-wide objects and
remove them again): the `install_cluster` fixture of the cluster harness (not
the shared `real_cluster`, whose other tests rely on canaryd's CRDs), or a
kubeconfig in $CANARYD_TEST_CLUSTER_KUBECONFIG. Without either they are skipped,
saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.packaging.conftest import CHART, NAMESPACE, REPO, run_helm

INSTALL = REPO / "deploy" / "install.yaml"
CRDS = ("canaries.canaryd.io", "metrictemplates.canaryd.io")
NO_CLUSTER = (
    "no real cluster: these tests run on the cluster harness's `install_cluster` fixture, "
    "or on the cluster named by CANARYD_TEST_CLUSTER_KUBECONFIG"
)


def _kubeconfig_of(cluster: Any) -> Path:
    for attribute in ("kubeconfig", "kubeconfig_path"):
        value = getattr(cluster, attribute, None)
        if value:
            return Path(value)
    return Path(cluster)


@pytest.fixture
def cluster_kubeconfig(request: pytest.FixtureRequest) -> Path:
    try:
        return _kubeconfig_of(request.getfixturevalue("install_cluster"))
    except pytest.FixtureLookupError:
        pass
    given = os.environ.get("CANARYD_TEST_CLUSTER_KUBECONFIG")
    if not given:
        pytest.skip(NO_CLUSTER)
    path = Path(given)
    assert path.is_file(), f"CANARYD_TEST_CLUSTER_KUBECONFIG={given} is not a file"
    return path


class Cluster:
    def __init__(self, kubeconfig: Path) -> None:
        found = shutil.which("kubectl")
        assert found, "kubectl is missing"
        self.kubectl = found
        self.kubeconfig = kubeconfig

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.kubectl, "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if check:
            assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def wait_for_controller_pods(self, count: int, timeout: float = 120) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            pods = self.json("get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=canaryd")["items"]
            if len(pods) >= count:
                return list(pods)
            if time.monotonic() >= deadline:
                events = self.run("get", "events", "-n", NAMESPACE, check=False).stdout
                raise AssertionError(
                    f"{len(pods)} of {count} controller pods after {timeout:.0f}s:\n{events}"
                )
            time.sleep(1)

    def remove_install(self) -> None:
        self.run("delete", "--ignore-not-found", "--wait=true", "-f", str(INSTALL), check=False, timeout=300)
        for crd in CRDS:
            self.run("delete", "--ignore-not-found", "crd", crd, check=False)


@pytest.fixture
def cluster(cluster_kubeconfig: Path) -> Iterator[Cluster]:
    real = Cluster(cluster_kubeconfig)
    real.remove_install()
    try:
        yield real
    finally:
        real.remove_install()


def _assert_accepted(cluster: Cluster, output: str) -> None:
    assert "would violate PodSecurity" not in output, output
    assert "Warning:" not in output, output
    for crd in CRDS:
        cluster.run("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    pods = cluster.wait_for_controller_pods(2)
    for pod in pods:
        (container,) = pod["spec"]["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    namespace = cluster.json("get", "namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_install_yaml_applies_to_a_real_cluster(cluster: Cluster) -> None:
    applied = cluster.run("apply", "-f", str(INSTALL))
    _assert_accepted(cluster, applied.stdout + applied.stderr)
    again = cluster.run("apply", "-f", str(INSTALL))
    changed = [line for line in again.stdout.splitlines() if not line.endswith(" unchanged")]
    # kubectl always resends a PodDisruptionBudget's selector (patch strategy "replace").
    assert changed in ([], ["poddisruptionbudget.policy/canaryd configured"]), again.stdout


def test_helm_installs_and_uninstalls_on_a_real_cluster(cluster: Cluster, helm: str) -> None:
    kubeconfig = str(cluster.kubeconfig)
    # As the README says: the namespace first, labelled for the restricted Pod Security Standard.
    cluster.run("create", "namespace", NAMESPACE)
    cluster.run("label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted")
    installed = run_helm(
        helm, "install", "canaryd", str(CHART), "--kubeconfig", kubeconfig, "--namespace", NAMESPACE
    )
    _assert_accepted(cluster, installed.stdout + installed.stderr)
    status = run_helm(helm, "status", "canaryd", "--kubeconfig", kubeconfig, "-n", NAMESPACE, "-o", "json")
    assert json.loads(status.stdout)["info"]["status"] == "deployed"

    run_helm(helm, "uninstall", "canaryd", "--kubeconfig", kubeconfig, "-n", NAMESPACE, "--wait")
    for crd in CRDS:
        cluster.run("get", "crd", crd)  # kept: helm.sh/resource-policy keep
    remaining = cluster.json("get", "deployments", "-n", NAMESPACE)["items"]
    assert not remaining
