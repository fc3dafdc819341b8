"""`canaryctl` against the sandbox API server: every command, its output, exit code and effect.

The program runs for real (its own event loop, in a thread, or as a subprocess)
and talks HTTP to the sandbox. Where a test needs the controller's answer, a
small stand-in plays that part of the contract: it answers each pending
``status.requestedAction`` in ``status.lastAction`` the way the controller
does. Tests with the real controller are in test_canaryctl_controller.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryd.cli import canaryctl
from canaryd.sandbox.server.apiserver import SandboxApiServer

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "payments"
NAME = "payments-api"


@dataclass
class Run:
    code: int
    out: str
    err: str


def run_ctl(*argv: str) -> Run:
    out, err = io.StringIO(), io.StringIO()
    code = canaryctl.main(list(argv), stdout=out, stderr=err)
    return Run(code, out.getvalue(), err.getvalue())


def canary_object(name: str = NAME, namespace: str = NAMESPACE) -> dict[str, Any]:
    return {
        "apiVersion": "canaryd.io/v1alpha1",
        "kind": "Canary",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "service": {"port": 8080},
            "routeRefs": [{"kind": "HTTPRoute", "name": name}],
            "analysis": {
                "interval": "1m",
                "threshold": 5,
                "stepWeights": [5, 10, 25, 50],
                "metrics": [
                    {"name": "success-rate", "templateRef": {"name": "success-rate"},
                     "thresholdRange": {"min": 99}},
                    {"name": "latency-p99", "templateRef": {"name": "latency-p99"},
                     "thresholdRange": {"max": 500}},
                ],
            },
        },
    }


class Cluster:
    """The sandbox with canaryd's CRDs, a namespace, a Canary, and a kubeconfig defaulting to it."""

    def __init__(self, server: SandboxApiServer, kubeconfig: Path) -> None:
        self.server = server
        self.store = server.store
        self.kubeconfig = kubeconfig

    def ctl(self, *argv: str) -> list[str]:
        return ["--kubeconfig", str(self.kubeconfig), *argv]

    async def run(self, *argv: str) -> Run:
        return await asyncio.to_thread(run_ctl, *self.ctl(*argv))

    def canary(self, name: str = NAME, namespace: str = NAMESPACE) -> dict[str, Any]:
        return self.store.get("canaries", name, namespace)

    def status(self, name: str = NAME) -> dict[str, Any]:
        return dict(self.canary(name).get("status") or {})

    def set_status(self, name: str = NAME, **fields: Any) -> None:
        self.store.patch("canaries", name, {"status": fields}, NAMESPACE, subresource="status")


@pytest.fixture
async def cluster(sandbox_api: SandboxApiServer, tmp_path: Path) -> Cluster:
    for path in sorted((REPO / "manifests" / "crd").glob("*.canaryd.io.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                sandbox_api.store.create("customresourcedefinitions", doc)
    sandbox_api.store.ensure_namespace(NAMESPACE)
    sandbox_api.store.create("canaries", canary_object(), NAMESPACE)
    kubeconfig = sandbox_api.write_kubeconfig(tmp_path / "payments-kubeconfig", namespace=NAMESPACE)
    c = Cluster(sandbox_api, kubeconfig)
    c.set_status(phase="Progressing", canaryWeight=10, step=2, failedChecks=1, revision="7d9f8c6b5",
                 lastPromotedRevision="5b6c4d3e2",
                 metrics=[{"name": "success-rate", "verdict": "Pass", "value": 99.91},
                          {"name": "latency-p99", "verdict": "Fail", "value": 612.5}])
    return c


Handler = Callable[[dict[str, Any], dict[str, Any]], tuple[str, dict[str, Any]]]


def answer_like_the_controller(status: dict[str, Any], request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The controller's answers for the cases these tests need (see canaryd/core/actions.py)."""
    action, phase, paused = request["action"], status.get("phase"), bool(status.get("paused"))
    if action == "pause":
        if paused:
            return ("already paused", {})
        return (f"paused at step {status.get('step')}", {"paused": True})
    if action == "resume":
        return ("ignored: not paused", {}) if not paused else ("resumed", {"paused": False})
    if action in ("promote", "promote-step", "abort") and phase != "Progressing":
        return (f"ignored: no run in progress (phase {phase})", {})
    if action == "promote":
        return ("promoting revision 7d9f8c6b5", {"phase": "Promoting", "canaryWeight": 50})
    if action == "promote-step":
        return ("advanced to step 3 (25%)", {"step": 3, "canaryWeight": 25})
    if action == "abort":
        return ("rolled back revision 7d9f8c6b5", {"phase": "Failed", "canaryWeight": 0})
    if action == "retry" and phase == "Failed":
        return ("restarted the run of revision 7d9f8c6b5", {"phase": "Progressing", "failedChecks": 0})
    return (f"ignored: nothing to retry (phase {phase})", {})


@pytest.fixture
async def controller_stand_in(cluster: Cluster) -> AsyncIterator[list[dict[str, Any]]]:
    """Answers pending requests on the Canary every 20 ms; yields the list of requests it handled."""
    handled: list[dict[str, Any]] = []

    async def loop() -> None:
        while True:
            await asyncio.sleep(0.02)
            status = cluster.status()
            request, last = status.get("requestedAction"), status.get("lastAction") or {}
            if not request or request["id"] == last.get("id"):
                continue
            result, changes = answer_like_the_controller(status, request)
            handled.append(request)
            cluster.set_status(**changes, lastAction={"id": request["id"], "action": request["action"],
                                                      "result": result, "at": "2026-11-26T10:00:00Z"})

    task = asyncio.create_task(loop())
    try:
        yield handled
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# ---- list -------------------------------------------------------------------


async def test_list_uses_the_contexts_namespace_and_prints_the_columns(cluster: Cluster) -> None:
    result = await cluster.run("list")
    assert result.code == 0, result.err
    header, row = result.out.strip().splitlines()
    assert header.split() == ["NAME", "PHASE", "WEIGHT", "FAILED", "READY", "REASON", "SINCE", "AGE"]
    assert row.split()[:7] == [NAME, "Progressing", "10%", "1/5", "-", "-", "-"]


async def test_list_all_namespaces_wide_and_machine_output(cluster: Cluster) -> None:
    cluster.store.ensure_namespace("shop")
    cluster.store.create("canaries", canary_object("checkout", "shop"), "shop")
    wide = await cluster.run("list", "-A", "-o", "wide")
    assert wide.code == 0, wide.err
    lines = wide.out.strip().splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "PHASE", "WEIGHT", "FAILED", "READY", "REASON", "SINCE",
                                "AGE", "REVISION", "STEP", "TARGET", "ROUTES"]
    assert [line.split()[:2] for line in lines[1:]] == [[NAMESPACE, NAME], ["shop", "checkout"]]
    assert lines[1].split()[-4:] == ["7d9f8c6b5", "2/4", NAME, f"HTTPRoute/{NAME}"]
    as_json = json.loads((await cluster.run("list", "--all-namespaces", "-o", "json")).out)
    assert as_json["kind"] == "List"
    assert sorted(i["metadata"]["name"] for i in as_json["items"]) == ["checkout", NAME]
    as_yaml = yaml.safe_load((await cluster.run("list", "-n", "shop", "-o", "yaml")).out)
    assert [i["metadata"]["name"] for i in as_yaml["items"]] == ["checkout"]


async def test_list_of_an_empty_namespace_says_so_and_succeeds(cluster: Cluster) -> None:
    cluster.store.ensure_namespace("empty")
    result = await cluster.run("list", "-n", "empty")
    assert (result.code, result.out) == (0, "")
    assert result.err.strip() == "No canaries found in namespace empty."


# ---- status -----------------------------------------------------------------


async def test_status_shows_the_run_the_checks_and_the_canarys_events_only(cluster: Cluster) -> None:
    uid = cluster.canary()["metadata"]["uid"]
    cluster.store.create("events.events.k8s.io", {
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "e1", "namespace": NAMESPACE},
        "eventTime": "2026-11-26T10:00:00.000000Z", "reportingController": "canaryd.io/controller",
        "reportingInstance": "canaryd-0", "action": "Step", "type": "Normal", "reason": "StepAdvanced",
        "note": "weight 10 on HTTPRoute/payments-api",
        "regarding": {"apiVersion": "canaryd.io/v1alpha1", "kind": "Canary", "name": NAME,
                      "namespace": NAMESPACE, "uid": uid},
    }, NAMESPACE)
    cluster.store.create("events", {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e2", "namespace": NAMESPACE},
        "type": "Warning", "reason": "AnalysisFailed", "message": "latency-p99 612.5 is above 500",
        "lastTimestamp": "2026-11-26T10:00:05Z", "count": 2,
        "involvedObject": {"apiVersion": "canaryd.io/v1alpha1", "kind": "Canary", "name": NAME,
                           "namespace": NAMESPACE, "uid": uid},
    }, NAMESPACE)
    cluster.store.create("events", {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e3", "namespace": NAMESPACE},
        "type": "Normal", "reason": "ScalingReplicaSet", "message": "about the Deployment, not the canary",
        "involvedObject": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME,
                           "namespace": NAMESPACE},
    }, NAMESPACE)
    result = await cluster.run("status", NAME)
    assert result.code == 0, result.err
    assert "Phase:           Progressing" in result.out
    assert "Step:            2 of 4" in result.out
    assert "10/50%" in result.out
    assert "Failed checks:   1/5" in result.out
    latency = next(line for line in result.out.splitlines() if line.strip().startswith("latency-p99"))
    assert "612.5" in latency and "<= 500" in latency and "FAIL" in latency
    assert "weight 10 on HTTPRoute/payments-api" in result.out
    assert "(x2) latency-p99 612.5 is above 500" in result.out
    assert "about the Deployment" not in result.out


async def test_status_exits_3_when_the_canary_failed_and_prints_json(cluster: Cluster) -> None:
    cluster.set_status(phase="Failed", canaryWeight=0, failedChecks=5)
    text = await cluster.run("status", NAME)
    assert text.code == canaryctl.EXIT_CANARY_FAILED
    as_json = await cluster.run("status", NAME, "-o", "json")
    assert as_json.code == canaryctl.EXIT_CANARY_FAILED
    assert json.loads(as_json.out)["status"]["failedChecks"] == 5


class Following:
    """``canaryctl status --watch|--until-done`` running in a thread; its output read while it runs.

    The tests change the Canary only after the watcher has printed the line of
    the previous change, so that no two changes fall within one of its reads,
    however slow the machine.
    """

    def __init__(self, cluster: Cluster, *argv: str) -> None:
        self.out, self.err = io.StringIO(), io.StringIO()
        full = cluster.ctl(*argv)
        self.task = asyncio.create_task(
            asyncio.to_thread(canaryctl.main, full, stdout=self.out, stderr=self.err)
        )

    def lines(self) -> list[str]:
        return self.out.getvalue().splitlines()

    async def until_lines(self, count: int, timeout: float = 30) -> list[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.lines()) < count:
            assert not self.task.done(), f"the watch ended early: {self.out.getvalue()}{self.err.getvalue()}"
            assert loop.time() < deadline, f"no line {count} within {timeout}s: {self.lines()}"
            await asyncio.sleep(0.02)
        return self.lines()

    async def result(self, timeout: float = 30) -> Run:
        code = await asyncio.wait_for(self.task, timeout)
        return Run(code, self.out.getvalue(), self.err.getvalue())


async def test_status_until_done_follows_the_run_until_it_succeeds(cluster: Cluster) -> None:
    watching = Following(cluster, "status", NAME, "--until-done", "--timeout", "60s")
    changes = [
        {"canaryWeight": 25, "step": 3},
        {"canaryWeight": 50, "step": 4},
        {"phase": "Promoting"},
        {"phase": "Succeeded", "canaryWeight": 0},
    ]
    for shown, change in enumerate(changes, start=1):
        await watching.until_lines(shown)
        cluster.set_status(**change)
    result = await watching.result()
    assert result.code == 0, result.err
    lines = result.out.strip().splitlines()  # not a terminal: one line per change
    assert [line.split()[1] for line in lines] == ["Progressing", "Progressing", "Progressing", "Promoting",
                                                   "Succeeded"]
    assert "[###############---------------] 25/50%" in lines[1]
    assert "step 4/4" in lines[2]


async def test_status_until_done_exits_3_on_failure_and_7_on_its_timeout(cluster: Cluster) -> None:
    watching = Following(cluster, "status", NAME, "--until-done")
    await watching.until_lines(1)
    cluster.set_status(phase="Failed", canaryWeight=0, failedChecks=5)
    assert (await watching.result()).code == canaryctl.EXIT_CANARY_FAILED
    cluster.set_status(phase="Progressing")
    timed = await cluster.run("status", NAME, "--until-done", "--timeout", "0.5")
    assert timed.code == canaryctl.EXIT_TIMEOUT
    assert "did not finish within 0.5s" in timed.err


async def test_status_watch_with_a_timeout_stops_watching_and_exits_as_status_does(cluster: Cluster) -> None:
    watched = await cluster.run("status", NAME, "--watch", "--timeout", "0.5")
    assert watched.code == 0, watched.err
    assert watched.out.split()[1] == "Progressing" and watched.err == ""
    cluster.set_status(phase="Failed", canaryWeight=0)
    assert (await cluster.run("status", NAME, "-w", "--timeout", "0.5")).code == canaryctl.EXIT_CANARY_FAILED
    alone = await cluster.run("status", NAME, "--timeout", "5s")
    assert alone.code == canaryctl.EXIT_USAGE
    assert alone.err == (
        f"error: --timeout needs --watch or --until-done (e.g. canaryctl status {NAME} -n {NAMESPACE} "
        "--until-done --timeout 5s)\n"
    )


def target_deployment(image: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": NAME}},
                 "template": {"metadata": {"labels": {"app": NAME}},
                              "spec": {"containers": [{"name": "app", "image": image}]}}},
    }


async def test_status_watch_waits_for_the_run_of_the_deployments_new_revision(cluster: Cluster) -> None:
    from canaryd.core.revision import deployment_template_hash

    new = deployment_template_hash(cluster.store.create("deployments", target_deployment("app:2"), NAMESPACE))
    # Just after the Deployment changed: the Canary still shows the previous run's success.
    cluster.set_status(phase="Succeeded", canaryWeight=0, step=0, revision="0ld0ld0ld0",
                       lastPromotedRevision="0ld0ld0ld0")
    watching = Following(cluster, "status", NAME, "--until-done", "--timeout", "60s")
    await watching.until_lines(1)
    await asyncio.sleep(0.5)
    assert not watching.task.done(), "the old run's Succeeded ended the watch"
    cluster.set_status(phase="Progressing", canaryWeight=5, step=1, revision=new)
    await watching.until_lines(2)
    cluster.set_status(phase="Succeeded", canaryWeight=0, lastPromotedRevision=new)
    result = await watching.result()
    assert result.code == 0, result.err
    lines = result.out.strip().splitlines()
    assert lines[0].endswith(f"waiting for the controller to start revision {new}")
    assert lines[-1].split()[1] == "Succeeded" and "waiting" not in lines[-1]
    page = await cluster.run("status", NAME)
    assert "New revision" not in page.out
    # Nothing to roll out: the primary already runs the Deployment's revision.
    cluster.set_status(phase="Initialized", revision=new)
    idle = await cluster.run("status", NAME, "--until-done", "--timeout", "20s")
    assert idle.code == 0 and idle.out.strip().splitlines()[-1].split()[1] == "Initialized"


class Terminal:
    """The program in a pseudo-terminal of a given size, its screen read as it draws."""

    def __init__(self, cluster: Cluster, *argv: str, columns: int = 80, lines: int = 24) -> None:
        self.argv = cluster.ctl(*argv)
        self.columns, self.lines = columns, lines
        self.chunks: list[bytes] = []

    async def __aenter__(self) -> Terminal:
        import fcntl
        import pty
        import struct
        import termios

        self.main_fd, terminal_fd = pty.openpty()
        fcntl.ioctl(terminal_fd, termios.TIOCSWINSZ, struct.pack("HHHH", self.lines, self.columns, 0, 0))
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "canaryd.cli.canaryctl", *self.argv,
            stdin=subprocess.DEVNULL, stdout=terminal_fd, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        )  # fmt: skip
        os.close(terminal_fd)

        def read_all() -> None:
            while True:
                try:
                    data = os.read(self.main_fd, 65536)
                except OSError:  # EIO once the program has exited
                    return
                if not data:
                    return
                self.chunks.append(data)

        self.reader = asyncio.create_task(asyncio.to_thread(read_all))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        await asyncio.wait_for(self.reader, 10)
        os.close(self.main_fd)

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")

    async def until(self, wanted: str, timeout: float = 30) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while wanted not in self.text:
            assert loop.time() < deadline, f"{wanted!r} never drawn: {self.text[-2000:]}"
            await asyncio.sleep(0.02)

    def screens(self) -> list[list[str]]:
        """Each drawn page as its lines (what follows a clear-screen)."""
        pages = self.text.split(canaryctl.CLEAR_SCREEN)[1:] or [self.text]
        return [page.replace("\r\n", "\n").rstrip("\n").split("\n") for page in pages]

    def assert_fits(self) -> None:
        for page in self.screens():
            assert len(page) <= self.lines, f"{len(page)} lines: {page}"
            too_wide = [line for line in page if len(line) > self.columns]
            assert not too_wide, too_wide


def many_events(cluster: Cluster, count: int) -> None:
    uid = cluster.canary()["metadata"]["uid"]
    for i in range(count):
        cluster.store.create("events", {
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": f"step-{i}", "namespace": NAMESPACE},
            "type": "Normal", "reason": "StepAdvanced", "lastTimestamp": f"2026-11-26T10:00:{i:02d}Z",
            "message": f"step {i}: canary weight moved on HTTPRoute/payments-api and GRPCRoute/rpc, "
                       "with every metric within its range",
            "involvedObject": {"apiVersion": "canaryd.io/v1alpha1", "kind": "Canary", "name": NAME,
                               "namespace": NAMESPACE, "uid": uid},
        }, NAMESPACE)  # fmt: skip


async def test_status_in_an_80x24_terminal_fits_and_wide_shows_the_rest(cluster: Cluster) -> None:
    many_events(cluster, 30)
    cluster.store.create("deployments", target_deployment("registry.example/payments:1.5.0"), NAMESPACE)
    async with Terminal(cluster, "status", NAME) as terminal:
        assert await asyncio.wait_for(terminal.process.wait(), 30) == 0
    terminal.assert_fits()
    (page,) = terminal.screens()
    assert "Phase:           Progressing" in page
    assert "Weight:          10% [######------------------------] 10/50%" in page
    assert "Canary:          0/0 ready  registry.example/payments:1.5.0  (rev 7d9f8c6b5)" in page
    assert "Primary:         Deployment payments-api-primary not found" in page
    assert any(line.startswith("  latency-p99") and "612.5" in line and "<= 500" in line for line in page)
    assert "step 29: canary weight" in terminal.text
    wide = await cluster.run("status", NAME, "-o", "wide")
    assert wide.code == 0 and wide.out != (await cluster.run("status", NAME)).out
    assert "Conditions:" in wide.out and "step 20: canary weight" in wide.out
    assert max(len(line) for line in wide.out.splitlines()) > 80  # wide does not cut


async def test_status_until_done_on_a_terminal_redraws_a_page_that_fits(cluster: Cluster) -> None:
    many_events(cluster, 12)
    async with Terminal(cluster, "status", NAME, "--until-done") as terminal:
        await terminal.until("watching; Ctrl-C to stop")
        cluster.set_status(canaryWeight=25, step=3)
        await terminal.until("[###############---------------] 25/50%")
        cluster.set_status(phase="Succeeded", canaryWeight=0)
        assert await asyncio.wait_for(terminal.process.wait(), 30) == 0
    screen = terminal.text
    assert screen.count(canaryctl.CLEAR_SCREEN) >= 2
    assert "Step:            3 of 4" in screen
    assert screen.rstrip().endswith("run ended: Succeeded")
    # Each page and its "(watching...)" line within 80x24; "run ended" replaces the prompt's line.
    for page in terminal.screens()[:-1]:
        assert len(page) <= 24 and max(len(line) for line in page) <= 80, page


async def test_status_watch_on_a_terminal_says_the_run_ended_and_keeps_watching(cluster: Cluster) -> None:
    async with Terminal(cluster, "status", NAME, "--watch") as terminal:
        await terminal.until("watching; Ctrl-C to stop")
        cluster.set_status(phase="Succeeded", canaryWeight=0)
        await terminal.until("(run ended: Succeeded; watching; Ctrl-C to stop)")
        await asyncio.sleep(2.5)  # a redraw, at least
        assert terminal.process.returncode is None
        terminal.process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(terminal.process.wait(), 30) == canaryctl.EXIT_INTERRUPTED
    terminal.assert_fits()


async def test_a_watch_outlives_the_run_and_ctrl_c_stops_it_with_130(cluster: Cluster) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "canaryd.cli.canaryctl", *cluster.ctl("status", NAME, "--watch"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    first = await asyncio.wait_for(process.stdout.readline(), 30)
    assert b"Progressing" in first
    # The run ends; the watch does not: it shows the next run too, until Ctrl-C.
    cluster.set_status(phase="Succeeded", canaryWeight=0, lastPromotedRevision="7d9f8c6b5")
    assert b" Succeeded " in await asyncio.wait_for(process.stdout.readline(), 30)
    cluster.set_status(phase="Progressing", canaryWeight=5, step=1, revision="8e0a9d7c6")
    assert b" Progressing " in await asyncio.wait_for(process.stdout.readline(), 30)
    assert process.returncode is None
    process.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == canaryctl.EXIT_INTERRUPTED
    assert err.decode() == "interrupted\n"


# ---- actions ----------------------------------------------------------------


async def test_pause_writes_the_request_to_status_and_reports_the_controllers_answer(
    cluster: Cluster, controller_stand_in: list[dict[str, Any]]
) -> None:
    generation = cluster.canary()["metadata"]["generation"]
    result = await cluster.run("pause", NAME)
    assert result.code == 0, result.err
    assert result.out.strip() == (f"canary {NAMESPACE}/{NAME}: pause acknowledged by the controller: "
                                  "paused at step 2 (phase Progressing, weight 10%)")  # "paused" once
    request = cluster.status()["requestedAction"]
    assert request["action"] == "pause" and len(request["id"]) >= 16 and "@" in request["requestedBy"]
    assert request["requestedAt"].endswith("Z")
    assert cluster.status()["lastAction"]["id"] == request["id"]
    assert cluster.canary()["metadata"]["generation"] == generation  # spec untouched
    assert [r["id"] for r in controller_stand_in] == [request["id"]]
    status_patches = cluster.server.audit.entries(verb="patch", user_agent="canaryctl")
    assert [e.subresource for e in status_patches] == ["status"]


async def test_pause_twice_is_harmless_and_every_action_maps_to_its_request(
    cluster: Cluster, controller_stand_in: list[dict[str, Any]]
) -> None:
    assert (await cluster.run("pause", NAME)).code == 0
    again = await cluster.run("pause", NAME)
    assert again.code == 0 and "already paused" in again.out
    resumed = await cluster.run("resume", NAME, "-o", "json")
    assert resumed.code == 0
    document = json.loads(resumed.out)
    assert document["outcome"] == "acknowledged" and document["state"]["paused"] is False
    not_paused = await cluster.run("resume", NAME)
    assert not_paused.code == 0 and "ignored: not paused" in not_paused.out  # wanted state holds
    step = await cluster.run("promote", NAME, "--step")
    assert step.code == 0 and cluster.status()["canaryWeight"] == 25
    promote = await cluster.run("promote", NAME)
    assert promote.code == 0 and cluster.status()["phase"] == "Promoting"
    assert [r["action"] for r in controller_stand_in] == [
        "pause", "pause", "resume", "resume", "promote-step", "promote",
    ]


async def test_abort_then_retry_and_a_refused_promote(
    cluster: Cluster, controller_stand_in: list[dict[str, Any]]
) -> None:
    abort = await cluster.run("abort", NAME)
    assert abort.code == 0 and "rolled back" in abort.out
    assert cluster.status()["phase"] == "Failed"
    refused = await cluster.run("promote", NAME)
    assert refused.code == canaryctl.EXIT_REFUSED and refused.out == ""
    # One line on stderr: error:, what the controller said (the phase once), and the next step.
    assert refused.err == (
        f"error: canary {NAMESPACE}/{NAME}: the controller did not apply promote: ignored: no run in "
        f"progress (phase Failed) (weight 0%). Next: the run Failed; to analyse 7d9f8c6b5 again: "
        f"canaryctl retry {NAME} -n {NAMESPACE}\n"
    )
    retry = await cluster.run("retry", NAME)
    assert retry.code == 0 and cluster.status()["phase"] == "Progressing"
    # Retry on a run in progress is refused, as the docs say (exit 8), and says what to look at.
    again = await cluster.run("retry", NAME)
    assert again.code == canaryctl.EXIT_REFUSED
    assert again.err.startswith("error: ") and again.err.count("phase Progressing") == 1
    assert again.err.rstrip().endswith(
        f"Next: retry applies only to a Failed canary (this one is Progressing); see canaryctl status {NAME} "
        f"-n {NAMESPACE}"
    )


async def test_without_a_controller_the_request_stays_pending(cluster: Cluster) -> None:
    timed = await cluster.run("abort", NAME, "--timeout", "0.4")
    assert timed.code == canaryctl.EXIT_TIMEOUT
    assert "not acknowledged within 0.4s; it stays pending" in timed.out
    pending = cluster.status()["requestedAction"]
    assert pending["action"] == "abort" and "lastAction" not in cluster.status()
    shown = await cluster.run("status", NAME)
    assert "Pending action:  abort by" in shown.out


async def test_the_same_pending_action_is_not_written_twice(cluster: Cluster) -> None:
    first = await cluster.run("pause", NAME, "--no-wait")
    assert first.code == 0 and "not waiting for the controller" in first.out
    request = cluster.status()["requestedAction"]
    version = cluster.canary()["metadata"]["resourceVersion"]
    second = await cluster.run("pause", NAME, "--no-wait")
    assert second.code == 0
    assert f"pause is already requested (id {request['id']}" in second.err
    assert cluster.canary()["metadata"]["resourceVersion"] == version
    assert cluster.status()["requestedAction"] == request


async def test_a_different_action_replaces_a_pending_one_and_says_so(cluster: Cluster) -> None:
    await cluster.run("promote", NAME, "--no-wait")
    promote_id = cluster.status()["requestedAction"]["id"]
    abort = await cluster.run("abort", NAME, "--no-wait")
    assert abort.code == 0
    assert f"replacing the pending promote request (id {promote_id}" in abort.err
    assert cluster.status()["requestedAction"]["action"] == "abort"


async def test_a_waiting_command_whose_request_is_replaced_exits_1(cluster: Cluster) -> None:
    waiting = asyncio.create_task(cluster.run("promote", NAME, "--timeout", "10s"))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if cluster.status().get("requestedAction"):
            break
    await asyncio.sleep(0.2)
    replaced = await cluster.run("abort", NAME, "--no-wait")
    assert replaced.code == 0
    result = await asyncio.wait_for(waiting, 15)
    assert result.code == canaryctl.EXIT_ERROR
    assert "replaced before the controller handled it by abort" in result.err


async def test_a_request_id_makes_a_retried_command_idempotent(
    cluster: Cluster, controller_stand_in: list[dict[str, Any]]
) -> None:
    first = await cluster.run("pause", NAME, "--request-id", "ci-job-42")
    assert first.code == 0
    version = cluster.canary()["metadata"]["resourceVersion"]
    again = await cluster.run("pause", NAME, "--request-id", "ci-job-42")
    assert again.code == 0 and "already acknowledged; nothing written" in again.err
    assert cluster.canary()["metadata"]["resourceVersion"] == version
    assert [r["id"] for r in controller_stand_in] == ["ci-job-42"]


# ---- errors -----------------------------------------------------------------


def one_line_error(run: Run) -> str:
    assert run.out == ""
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.err
    assert "Traceback" not in run.err
    return lines[0]


async def test_a_missing_canary_and_a_wrong_namespace_exit_4(cluster: Cluster) -> None:
    missing = await cluster.run("status", "nope")
    assert missing.code == canaryctl.EXIT_NOT_FOUND
    assert one_line_error(missing) == (
        f'error: canary "nope" in namespace "{NAMESPACE}" not found; canaryctl list -A shows every canary'
    )
    cluster.store.ensure_namespace("other")
    wrong = await cluster.run("pause", NAME, "-n", "other")
    assert wrong.code == canaryctl.EXIT_NOT_FOUND
    # Where the name does exist, as the command to run.
    assert one_line_error(wrong) == (
        f'error: canary "{NAME}" in namespace "other" not found; it exists in namespace {NAMESPACE}: '
        f"canaryctl status {NAME} -n {NAMESPACE}"
    )
    typo = await cluster.run("status", "payment-api")
    assert one_line_error(typo) == (
        f'error: canary "payment-api" in namespace "{NAMESPACE}" not found; did you mean {NAME}? '
        f"(canaryctl list -n {NAMESPACE})"
    )


async def test_output_name_prints_kubectls_resource_names(cluster: Cluster) -> None:
    listed = await cluster.run("list", "-o", "name")
    assert (listed.code, listed.out) == (0, f"canary.canaryd.io/{NAME}\n")
    one = await cluster.run("status", NAME, "-o", "name")
    assert (one.code, one.out) == (0, f"canary.canaryd.io/{NAME}\n")


async def test_an_unreachable_cluster_exits_6(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    from canaryd.sandbox.server.kubeconfig import write_kubeconfig

    kubeconfig = write_kubeconfig(tmp_path / "closed", f"http://127.0.0.1:{port}")
    result = await asyncio.to_thread(run_ctl, "--kubeconfig", str(kubeconfig), "list")
    assert result.code == canaryctl.EXIT_UNREACHABLE
    assert one_line_error(result).startswith(f"error: cannot reach the cluster at 127.0.0.1:{port}")
    missing = await asyncio.to_thread(run_ctl, "--kubeconfig", str(tmp_path / "absent"), "list")
    assert missing.code == canaryctl.EXIT_UNREACHABLE and "no kubeconfig found" in one_line_error(missing)
    context = await asyncio.to_thread(run_ctl, "--kubeconfig", str(kubeconfig), "--context", "prod", "list")
    assert context.code == canaryctl.EXIT_UNREACHABLE
    assert one_line_error(context).startswith('error: context "prod" does not exist')


async def test_kubeconfig_env_path_list_and_context_choose_the_cluster_and_namespace(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "elsewhere",
        "clusters": [{"name": "gone", "cluster": {"server": f"http://127.0.0.1:{closed_port}"}},
                     {"name": "sandbox", "cluster": {"server": cluster.server.url}}],
        "users": [{"name": "me", "user": {}}],
        "contexts": [
            {"name": "elsewhere", "context": {"cluster": "gone", "user": "me"}},
            {"name": "payments", "context": {"cluster": "sandbox", "user": "me", "namespace": NAMESPACE}},
        ],
    }
    path = tmp_path / "two-contexts"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'not-there'}{os.pathsep}{path}")
    chosen = await asyncio.to_thread(run_ctl, "--context", "payments", "list")
    assert chosen.code == 0, chosen.err
    assert chosen.out.splitlines()[1].split()[0] == NAME
    current = await asyncio.to_thread(run_ctl, "list")
    assert current.code == canaryctl.EXIT_UNREACHABLE
    assert f"127.0.0.1:{closed_port}" in one_line_error(current)


async def test_a_read_only_token_may_look_but_gets_5_on_actions(cluster: Cluster, tmp_path: Path) -> None:
    cluster.server.add_read_only_token("viewer-token", "viewer")
    kubeconfig = cluster.server.write_kubeconfig(tmp_path / "viewer", token="viewer-token",
                                                 namespace=NAMESPACE)
    listing = await asyncio.to_thread(run_ctl, "--kubeconfig", str(kubeconfig), "list")
    assert listing.code == 0 and NAME in listing.out
    refused = await asyncio.to_thread(run_ctl, "--kubeconfig", str(kubeconfig), "pause", NAME)
    assert refused.code == canaryctl.EXIT_FORBIDDEN
    line = one_line_error(refused)
    assert 'User "viewer" cannot patch resource "canaries' in line
    assert "requestedAction" not in cluster.status()


async def test_patch_on_canaries_status_alone_is_enough_to_act(cluster: Cluster, tmp_path: Path) -> None:
    cluster.server.add_user("operator-token", "on-call", ["get canaries", "list canaries", "watch canaries",
                                                         "patch canaries/status"])
    kubeconfig = cluster.server.write_kubeconfig(tmp_path / "oncall", token="operator-token",
                                                 namespace=NAMESPACE)
    result = await asyncio.to_thread(run_ctl, "--kubeconfig", str(kubeconfig), "pause", NAME, "--no-wait")
    assert result.code == 0, result.err
    assert cluster.status()["requestedAction"]["action"] == "pause"


async def test_a_cluster_without_canaryd_an_unknown_token_and_a_server_error(
    sandbox_api: SandboxApiServer, cluster: Cluster, tmp_path: Path
) -> None:
    bare = SandboxApiServer()
    await bare.start()
    try:
        kubeconfig = bare.write_kubeconfig(tmp_path / "bare")
        missing_api = await asyncio.to_thread(run_ctl, "--kubeconfig", str(kubeconfig), "list")
    finally:
        await bare.stop()
    assert missing_api.code == canaryctl.EXIT_NOT_FOUND
    assert one_line_error(missing_api) == (
        "error: this cluster does not serve canaries.canaryd.io: is canaryd installed?"
    )

    sandbox_api.add_read_only_token("viewer-token")
    stranger = sandbox_api.write_kubeconfig(tmp_path / "stranger", token="not-a-known-token")
    unauthorized = await asyncio.to_thread(run_ctl, "--kubeconfig", str(stranger), "list")
    assert unauthorized.code == canaryctl.EXIT_FORBIDDEN
    assert one_line_error(unauthorized).startswith("error: the cluster refused the credentials (401)")

    sandbox_api.faults.add("error", resource="canaries", code=500)
    broken = await cluster.run("status", NAME)
    assert broken.code == canaryctl.EXIT_ERROR
    assert one_line_error(broken).startswith("error: the API server answered 500: ")


async def test_usage_errors_exit_2(cluster: Cluster) -> None:
    result = await cluster.run("frobnicate")
    assert result.code == canaryctl.EXIT_USAGE


# ---- the installed program --------------------------------------------------


def _bin_dir() -> Path:
    return Path(sys.executable).parent


async def test_the_program_as_a_subprocess_prints_no_traceback(cluster: Cluster) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "canaryd.cli.canaryctl", *cluster.ctl("status", "missing"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == canaryctl.EXIT_NOT_FOUND
    assert err.decode().strip() == (
        f'error: canary "missing" in namespace "{NAMESPACE}" not found; canaryctl list -A shows every canary'
    )
    assert out == b""


async def test_kubectl_runs_it_as_the_canary_plugin(cluster: Cluster, kubectl: Any) -> None:
    if not (_bin_dir() / "kubectl-canary").exists():
        pytest.skip("kubectl-canary is not installed next to this Python")
    env = {**os.environ, "PATH": f"{_bin_dir()}{os.pathsep}{os.environ.get('PATH', '')}",
           "KUBECONFIG": str(cluster.kubeconfig)}
    if kubectl.binary is None:
        pytest.skip("kubectl is not installed")
    # kubectl hands everything after the plugin name to the plugin; KUBECONFIG passes through.
    for argv in (["canary", "list"], ["canary", "list", "--kubeconfig", str(cluster.kubeconfig)]):
        process = await asyncio.create_subprocess_exec(
            kubectl.binary, *argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()
        lines = out.decode().splitlines()
        assert len(lines) == 2, (argv, out, err)
        assert lines[1].split()[:2] == [NAME, "Progressing"]
    helped = subprocess.run([str(_bin_dir() / "kubectl-canary"), "--help"], capture_output=True, text=True,
                            env=env, timeout=30)
    assert helped.stdout.startswith("usage: kubectl canary")
    assert "7    timed out" in helped.stdout
