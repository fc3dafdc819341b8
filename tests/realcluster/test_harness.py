"""Smoke tests of the real-cluster harness: the control plane does what the controller will rely on.

Each test checks one thing a later real-cluster test depends on: the built version answers, a
Deployment becomes a ReplicaSet, Ready pods with IPs from the pod CIDR and an EndpointSlice; namespaces
are deleted; ServiceAccount tokens go through RBAC; the audit log records requests; kube-apiserver can
be restarted; and stopping leaves no process behind, even after the owner was killed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cluster import build
from cluster.harness import (
    COMPONENTS,
    Cluster,
    ClusterConfig,
    ClusterError,
    PortInUse,
    _pid_alive,
    cleanup_stale,
)
from tests.runtime import world

REPO = Path(__file__).resolve().parents[2]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def test_api_server_reports_the_built_version(real_cluster: Cluster) -> None:
    status, body = real_cluster.api("GET", "/version")
    assert status == 200
    assert body["gitVersion"] == real_cluster.version == build.TOOLS["kubernetes"].version
    out = subprocess.run(
        [str(build.binary("kube-apiserver")), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == f"Kubernetes {real_cluster.version}"
    client = json.loads(real_cluster.kubectl("version", "-o", "json").stdout)
    assert client["clientVersion"]["gitVersion"] == real_cluster.version
    assert client["serverVersion"]["gitVersion"] == real_cluster.version


def test_gateway_api_crds_are_established(real_cluster: Cluster) -> None:
    for plural in ("gatewayclasses", "gateways", "httproutes", "grpcroutes", "referencegrants"):
        status, body = real_cluster.api("GET", f"/apis/gateway.networking.k8s.io/v1/{plural}")
        assert status == 200, (plural, body)
    status, body = real_cluster.api("GET", "/apis/gateway.networking.k8s.io/v1/backendtlspolicies")
    assert status == 200, body


def test_deployment_gets_ready_pods_and_endpoints(real_cluster: Cluster, real_namespace: str) -> None:
    ns = real_namespace
    labels = {"app": "web"}
    deployment = world.deployment(ns, "web", image="web:1", replicas=2)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    # A new namespace gets its default ServiceAccount a moment after it exists; pods wait for it.
    wait_for(
        "the default ServiceAccount",
        lambda: real_cluster.api("GET", f"/api/v1/namespaces/{ns}/serviceaccounts/default")[0] == 200,
    )
    assert real_cluster.api("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment)[0] == 201
    assert real_cluster.api("POST", f"/api/v1/namespaces/{ns}/services", service)[0] == 201

    def replicasets() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = real_cluster.api("GET", f"/apis/apps/v1/namespaces/{ns}/replicasets")[
            1
        ]["items"]
        return items

    (replicaset,) = wait_for("a ReplicaSet", replicasets)
    assert replicaset["metadata"]["ownerReferences"][0]["name"] == "web"

    def ready_pods() -> list[dict[str, Any]]:
        pods = real_cluster.api("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3Dweb")[1]["items"]
        ready = [
            pod
            for pod in pods
            if pod["status"].get("phase") == "Running"
            and pod["status"].get("podIP")
            and any(
                c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
            )
        ]
        return ready if len(ready) == 2 else []

    pods = wait_for("2 Running, Ready pods", ready_pods)
    pod_cidr = ipaddress.ip_network(real_cluster.pod_cidr)
    pod_ips = {pod["status"]["podIP"] for pod in pods}
    assert all(ipaddress.ip_address(ip) in pod_cidr for ip in pod_ips), pod_ips
    assert {pod["spec"]["nodeName"] for pod in pods} <= set(real_cluster.node_names)

    def slice_ips() -> set[str]:
        selector = "labelSelector=kubernetes.io%2Fservice-name%3Dweb"
        path = f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices?{selector}"
        items = real_cluster.api("GET", path)[1]["items"]
        ips = {
            address
            for item in items
            for endpoint in item.get("endpoints") or []
            if endpoint.get("conditions", {}).get("ready")
            for address in endpoint["addresses"]
        }
        return ips if ips == pod_ips else set()

    wait_for("an EndpointSlice with both pod IPs", slice_ips)


def test_a_pod_marked_not_ready_by_the_node_controller_is_ready_again(
    real_cluster: Cluster, real_namespace: str
) -> None:
    """kube-controller-manager marks every pod of a Node whose heartbeat it missed not Ready (seen after
    kube-apiserver and etcd restarts on a loaded machine); a kubelet reports them Ready again on its next
    status sync, and so must kwok, or a Deployment with such a pod never finishes its rollout."""
    ns = real_namespace
    deployment = world.deployment(ns, "steady", image="steady:1", replicas=1)
    wait_for(
        "the default ServiceAccount",
        lambda: real_cluster.api("GET", f"/api/v1/namespaces/{ns}/serviceaccounts/default")[0] == 200,
    )
    assert real_cluster.api("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment)[0] == 201

    def available() -> bool:
        status = real_cluster.api("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/steady")[1].get("status")
        return bool(status) and status.get("availableReplicas") == 1

    wait_for("the Deployment available", available)
    (pod,) = real_cluster.api("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3Dsteady")[1]["items"]
    name = pod["metadata"]["name"]
    # What the node lifecycle controller writes into each pod of a Node it takes for lost:
    not_ready = {"type": "Ready", "status": "False", "reason": "NodeNotReady"}
    status, marked = real_cluster.api(
        "PATCH",
        f"/api/v1/namespaces/{ns}/pods/{name}/status",
        {"status": {"conditions": [not_ready]}},
        content_type="application/strategic-merge-patch+json",
    )
    assert status == 200, marked
    assert {c["type"]: c["status"] for c in marked["status"]["conditions"]}["Ready"] == "False"

    def ready_again() -> bool:
        current = real_cluster.api("GET", f"/api/v1/namespaces/{ns}/pods/{name}")[1]
        conditions = {c["type"]: c["status"] for c in current["status"].get("conditions", [])}
        return conditions.get("Ready") == "True" and current["status"].get("phase") == "Running"

    wait_for("the pod Ready again", ready_again, timeout=30)
    wait_for("the Deployment available again", available, timeout=30)


def test_namespace_deletion_completes(real_cluster: Cluster) -> None:
    name = f"gone-{uuid.uuid4().hex[:8]}"
    assert real_cluster.api("POST", "/api/v1/namespaces", {"metadata": {"name": name}})[0] == 201
    configmap = {"metadata": {"name": "cm"}, "data": {"a": "b"}}
    assert real_cluster.api("POST", f"/api/v1/namespaces/{name}/configmaps", configmap)[0] == 201
    assert real_cluster.api("DELETE", f"/api/v1/namespaces/{name}")[0] == 200
    wait_for(
        "the namespace to be gone", lambda: real_cluster.api("GET", f"/api/v1/namespaces/{name}")[0] == 404
    )


def test_service_account_token_goes_through_rbac(real_cluster: Cluster, real_namespace: str) -> None:
    ns = real_namespace
    assert (
        real_cluster.api("POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": "bot"}})[0]
        == 201
    )
    token = real_cluster.create_token("bot", ns)
    status, body = real_cluster.api("GET", f"/api/v1/namespaces/{ns}/pods", token=token)
    assert status == 403, body
    assert f"system:serviceaccount:{ns}:bot" in body["message"]
    role = {
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
    }
    binding = {
        "metadata": {"name": "bot-reads-pods"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": ns}],
    }
    assert (
        real_cluster.api("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles", role)[0] == 201
    )
    assert (
        real_cluster.api("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", binding)[
            0
        ]
        == 201
    )
    wait_for(
        "RBAC to allow the list",
        lambda: real_cluster.api("GET", f"/api/v1/namespaces/{ns}/pods", token=token)[0] == 200,
    )
    assert real_cluster.api("GET", f"/api/v1/namespaces/{ns}/secrets", token=token)[0] == 403


def test_watch_delivers_events(real_cluster: Cluster, real_namespace: str) -> None:
    import urllib.request

    ns = real_namespace
    # A consistent LIST is served from the watch cache only if etcd supports progress requests.
    status, listing = real_cluster.api("GET", f"/api/v1/namespaces/{ns}/configmaps")
    assert status == 200, listing
    request = urllib.request.Request(
        f"{real_cluster.server}/api/v1/namespaces/{ns}/configmaps?watch=1&timeoutSeconds=10"
        f"&resourceVersion={listing['metadata']['resourceVersion']}",
        headers={"Authorization": f"Bearer {real_cluster.admin_token}"},
    )
    with urllib.request.urlopen(request, timeout=15, context=real_cluster.ssl_context()) as stream:
        assert (
            real_cluster.api("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "w"}})[0]
            == 201
        )
        event = json.loads(stream.readline())
    assert event["type"] == "ADDED" and event["object"]["metadata"]["name"] == "w"


def test_audit_log_records_requests(real_cluster: Cluster) -> None:
    marker = f"audit-{uuid.uuid4().hex[:8]}"
    assert real_cluster.api("GET", f"/api/v1/namespaces/default/configmaps/{marker}")[0] == 404

    def logged() -> list[dict[str, Any]]:
        return [e for e in real_cluster.audit_events() if e.get("objectRef", {}).get("name") == marker]

    (event, *_) = wait_for("the audit event", logged, timeout=10)
    assert event["user"]["username"] == "admin"
    assert event["verb"] == "get" and event["responseStatus"]["code"] == 404


def test_restarted_api_server_answers_again(real_cluster: Cluster) -> None:
    old_pid = real_cluster.pid("kube-apiserver")
    real_cluster.stop_apiserver()
    with pytest.raises(OSError):
        real_cluster.api("GET", "/readyz", timeout=2)
    real_cluster.start_apiserver()
    assert real_cluster.pid("kube-apiserver") not in (None, old_pid)
    assert real_cluster.api("GET", "/api/v1/nodes")[0] == 200
    name = f"after-restart-{uuid.uuid4().hex[:6]}"
    assert (
        real_cluster.api("POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": name}})[0]
        == 201
    )
    assert all(real_cluster.alive(component) for component in COMPONENTS)


def _run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / "scripts" / "cluster"), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def test_cli_up_env_status_down_leaves_no_process(tmp_path: Path, real_cluster: Cluster) -> None:
    run_dir = tmp_path / "cli-run"
    up = _run_cli("up", "--dir", str(run_dir), "--nodes", "1", "--no-gateway-api")
    assert up.returncode == 0, up.stderr
    cluster = Cluster.load(run_dir)
    pids = [cluster.pid(component) for component in COMPONENTS]
    assert all(pids), pids
    env = _run_cli("env", "--dir", str(run_dir))
    assert f"export KUBECONFIG={cluster.kubeconfig}" in env.stdout
    assert _run_cli("status", "--dir", str(run_dir)).returncode == 0
    nodes = _run_cli("kubectl", "--dir", str(run_dir), "get", "nodes", "-o", "name")
    assert nodes.stdout.split() == ["node/kwok-node-0"], nodes
    down = _run_cli("down", "--dir", str(run_dir))
    assert down.returncode == 0, down.stderr
    assert not run_dir.exists()
    assert not any(_pid_alive(pid) for pid in pids if pid)


def test_leftovers_of_a_killed_run_are_cleaned_up(tmp_path: Path, real_cluster: Cluster) -> None:
    runs = tmp_path / "runs"
    script = (
        "import sys, time\n"
        "from cluster.harness import Cluster, ClusterConfig\n"
        "c = Cluster.create(ClusterConfig(nodes=1, gateway_api=None), sys.argv[1])\n"
        "c.start()\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script, str(runs / "killed")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "ready"
        leftover = Cluster.load(runs / "killed")
        pids = [leftover.pid(component) for component in COMPONENTS]
        assert all(pids)
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        assert all(_pid_alive(pid) for pid in pids if pid)  # the SIGKILL left the cluster running
        assert cleanup_stale(runs) == [runs / "killed"]
        assert not any(_pid_alive(pid) for pid in pids if pid)
        assert not (runs / "killed").exists()
    finally:
        owner.kill()
        owner.wait(10)
        cleanup_stale(runs)


def test_a_component_that_crashes_at_start_is_named_with_its_log(
    real_cluster: Cluster, tmp_path: Path
) -> None:
    config = ClusterConfig(nodes=1, gateway_api=None, extra_args={"kube-apiserver": ["--no-such-flag"]})
    cluster = Cluster.create(config, tmp_path / "crash")
    try:
        with pytest.raises(ClusterError) as error:
            cluster.start()
    finally:
        cluster.stop(remove=True)
    first, *rest = str(error.value).splitlines()
    assert first.startswith("kube-apiserver exited (code 1) while starting; last lines of ")
    assert any("unknown flag: --no-such-flag" in line for line in rest)
    assert not any(cluster.alive(component) for component in COMPONENTS)


def test_a_port_in_use_is_named(real_cluster: Cluster, tmp_path: Path) -> None:
    cluster = Cluster.create(ClusterConfig(nodes=1, gateway_api=None), tmp_path / "busy")
    port = cluster.ports["etcd-client"]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        try:
            with pytest.raises(PortInUse, match=rf"^etcd: port 127.0.0.1:{port} is already in use"):
                cluster.start()
        finally:
            cluster.stop(remove=True)
