"""`canaryd sandbox` as a user runs it: kubectl talks to it, a signal stops it, nothing is left behind."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import sys
from pathlib import Path

import pytest

READY_LINE = "Press Ctrl-C to stop."
APP = """
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "web:1"}]}
"""


async def start_sandbox(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "canaryd.cli.main",
        "sandbox",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        env=env,
    )


async def read_until_ready(process: asyncio.subprocess.Process, timeout: float = 30.0) -> str:
    assert process.stdout is not None
    output = ""
    async with asyncio.timeout(timeout):
        while READY_LINE not in output:
            line = await process.stdout.readline()
            if not line:
                stderr = await process.stderr.read() if process.stderr else b""
                raise AssertionError(f"canaryd sandbox exited early: {output}{stderr.decode()}")
            output += line.decode()
    return output


async def kubectl(kubeconfig: Path, cache: Path, *args: str, stdin: str | None = None) -> str:
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.skip("kubectl is not installed")
    process = await asyncio.create_subprocess_exec(
        binary,
        "--kubeconfig",
        str(kubeconfig),
        "--cache-dir",
        str(cache),
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(stdin.encode() if stdin else None), 20)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


def port_of(output: str, label: str) -> int:
    match = re.search(rf"{label}:\s+http://127\.0\.0\.1:(\d+)", output)
    assert match, output
    return int(match.group(1))


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.prometheus
async def test_sandbox_serves_kubectl_and_stops_prometheus_on_sigint(
    tmp_path: Path, prometheus_binary: str
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    process = await start_sandbox(
        "--port",
        "0",
        "--kubeconfig-out",
        str(kubeconfig),
        "--with-prometheus",
        "--prometheus-port",
        "0",
        "--ready-delay",
        "0.05",
    )
    try:
        output = await read_until_ready(process)
        pid_match = re.search(r"\(pid (\d+),", output)
        assert pid_match, output
        prometheus_pid = int(pid_match.group(1))
        os.kill(prometheus_pid, 0)  # running
        api_port, prometheus_port = port_of(output, "API server"), port_of(output, "Prometheus")
        assert str(kubeconfig) in output

        cache = tmp_path / "kube-cache"
        classes = json.loads(await kubectl(kubeconfig, cache, "get", "gatewayclasses", "-o", "json"))
        accepted = classes["items"][0]["status"]["conditions"][0]
        assert (accepted["type"], accepted["status"]) == ("Accepted", "True")
        await kubectl(kubeconfig, cache, "apply", "--validate=false", "-f", "-", stdin=APP)
        ready = ""
        for _ in range(100):
            ready = await kubectl(
                kubeconfig,
                cache,
                "get",
                "deployment",
                "web",
                "-n",
                "shop",
                "-o",
                "jsonpath={.status.readyReplicas}",
            )
            if ready == "2":
                break
            await asyncio.sleep(0.05)
        assert ready == "2"

        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stdout is not None
    assert "Stopped." in (await process.stdout.read()).decode()
    with pytest.raises(ProcessLookupError):
        os.kill(prometheus_pid, 0)
    assert not listening(api_port)
    assert not listening(prometheus_port)


async def test_sandbox_stops_on_sigterm_and_frees_its_ports(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    process = await start_sandbox("--port", "0", "--kubeconfig-out", str(kubeconfig))
    try:
        output = await read_until_ready(process)
        api_port, metrics_port = port_of(output, "API server"), port_of(output, "metrics")
        assert "Prometheus" not in output
        assert f"http://127.0.0.1:{api_port}" in kubeconfig.read_text()
        assert listening(api_port) and listening(metrics_port)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert not listening(api_port)
    assert not listening(metrics_port)


async def test_sandbox_explains_how_to_install_a_missing_prometheus(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no prometheus on PATH
    process = await start_sandbox(
        "--port", "0", "--kubeconfig-out", str(tmp_path / "kubeconfig"), "--with-prometheus", env=env
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert "apt-get install" in stderr.decode() and "prometheus" in stderr.decode()
    assert READY_LINE not in stdout.decode()


async def test_lean_sandbox_serves_the_api_without_a_metrics_endpoint(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    process = await start_sandbox("--port", "0", "--kubeconfig-out", str(kubeconfig), "--no-traffic")
    try:
        output = await read_until_ready(process)
        api_port = port_of(output, "API server")
        assert "metrics:" not in output
        assert listening(api_port)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_lean_sandbox_refuses_prometheus_in_one_line(tmp_path: Path) -> None:
    process = await start_sandbox(
        "--port", "0", "--kubeconfig-out", str(tmp_path / "kubeconfig"), "--no-traffic", "--with-prometheus"
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert stderr.decode().strip().splitlines()[-1].endswith("drop --no-traffic")
    assert READY_LINE not in stdout.decode()
