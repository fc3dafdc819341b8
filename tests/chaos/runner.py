"""The chaos runner: randomized rollouts under random faults, canaryd's promises checked after every event.

One run is fully described by its seed: the rollout (steps, threshold), a
good or bad revision, and a schedule of faults drawn from ``FAULTS`` at
random times: the controller (a real ``canaryd run`` process, one or two
replicas with leader election) killed with SIGKILL and restarted, or frozen
with SIGSTOP and resumed, the leader killed, watches dropped, stalled or
answered with 410, 409 storms on the route, 5xx and latency on every verb,
Prometheus killed and restarted, a second writer putting the weights back to
the primary, and the app team editing its route.

After every change the sandbox commits to the route or the Canary, the run
checks the invariants (``Invariants``); at the end it checks that the run
ended as its revision deserves, with all traffic on the primary and the canary
at 0 after a rollback, and the team's route as the team left it. A run that
breaks one is saved as JSON with its seed (``CANARYD_CHAOS_DIR``, by default
``/tmp/canaryd-chaos``) and replays with ``python bench/bench_chaos.py --seed N``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from canaryd.sandbox.cluster import SandboxCluster
from tests.runtime import world

NS = "chaos"
APP = "shop"
CANARIES = "canaries.canaryd.io"
HTTPROUTES = "httproutes.gateway.networking.k8s.io"
LEASE_NAMESPACE = "canaryd-system"
LEASE_NAME = "canaryd-chaos"
FAULTS = (
    "controller_kill",
    "controller_stop",
    "leader_kill",
    "watch_drop",
    "watch_stall",
    "watch_gone",
    "conflict_storm",
    "server_errors",
    "latency",
    "prometheus_kill",
    "second_writer",
    "team_edit",
)
RESULTS_DIR = Path(os.environ.get("CANARYD_CHAOS_DIR", "/tmp/canaryd-chaos"))


# -- what a run is -------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultEvent:
    at: float
    kind: str
    seconds: float


@dataclass(frozen=True)
class Plan:
    """Everything random about a run, drawn from its seed."""

    seed: int
    steps: list[int]
    threshold: int
    good: bool
    replicas: int
    faults: list[FaultEvent]


def plan_for(seed: int, fault_count: tuple[int, int] = (2, 6)) -> Plan:
    rng = random.Random(seed)
    count = rng.randint(1, 4)
    steps = sorted(rng.sample(range(5, 91, 5), count))
    replicas = 2 if rng.random() < 0.3 else 1
    kinds = [k for k in FAULTS if replicas == 2 or k != "leader_kill"]
    faults = sorted(
        (
            FaultEvent(round(rng.uniform(0.2, 8.0), 2), rng.choice(kinds), round(rng.uniform(0.5, 4.0), 2))
            for _ in range(rng.randint(*fault_count))
        ),
        key=lambda f: f.at,
    )
    return Plan(seed, steps, rng.randint(1, 3), rng.random() < 0.6, replicas, faults)


# -- the stand-in Prometheus, which can be killed ------------------------------------------------------


class KillablePrometheus:
    """Answers the run's one metric from the image of the canary Deployment: good 1, bad 100."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.answered = 0
        self.up = False
        #: Outages in progress (they may overlap).
        self.outages = 0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        target = world.find(self.store, "deployments", NS, APP) or {}
        image = (
            target.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])[0].get("image")
        )
        value = "100" if str(image).endswith(":bad") else "1"
        self.answered += 1
        body = {
            "status": "success",
            "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, value]}]},
        }
        return web.json_response(body)

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_route("*", "/api/v1/{what}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()
        self.up = True

    async def kill(self) -> None:
        self.up = False
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _free_port() -> int:
    """A free port below Linux's ephemeral range, so that no client connection takes it while it is down."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port for the stand-in Prometheus")


# -- the controller processes ------------------------------------------------------------------


class Replicas:
    """``canaryd run`` processes against the sandbox; each can be killed, frozen and restarted."""

    def __init__(self, kubeconfig: Path, prometheus_url: str, count: int, log_dir: Path) -> None:
        self.kubeconfig, self.prometheus_url, self.count = kubeconfig, prometheus_url, count
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.log_dir = log_dir
        self.stopped: set[str] = set()

    def start(self, identity: str) -> None:
        args = [
            sys.executable, "-m", "canaryd.cli.main", "run", "--kubeconfig", str(self.kubeconfig),
            "--prometheus-url", self.prometheus_url, "--health-address", "127.0.0.1:0",
            "--metrics-address", "127.0.0.1:0", "--log-format", "console", "--qps", "500", "--burst", "1000",
            "--prometheus-timeout", "2",
        ]  # fmt: skip
        if self.count > 1:
            args += [
                "--leader-elect", "--leader-election-id", LEASE_NAME, "--leader-election-namespace",
                LEASE_NAMESPACE, "--leader-election-identity", identity, "--lease-duration", "3",
                "--renew-deadline", "2", "--retry-period", "0.5",
            ]  # fmt: skip
        else:
            args.append("--no-leader-elect")
        log = (self.log_dir / f"{identity}.log").open("ab")
        self.processes[identity] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    def start_all(self) -> None:
        for index in range(self.count):
            self.start(f"replica-{index}")

    def signal(self, identity: str, signum: int) -> None:
        process = self.processes.get(identity)
        if process is not None and process.poll() is None:
            process.send_signal(signum)
        if signum == signal.SIGSTOP:
            self.stopped.add(identity)
        elif signum == signal.SIGCONT:
            self.stopped.discard(identity)

    def kill(self, identity: str) -> None:
        self.signal(identity, signal.SIGCONT)
        self.signal(identity, signal.SIGKILL)
        process = self.processes.get(identity)
        if process is not None:
            process.wait()

    def stop_all(self) -> None:
        for identity, process in self.processes.items():
            if process.poll() is None:
                self.signal(identity, signal.SIGCONT)
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def crashed(self) -> list[str]:
        """Replicas that exited on their own (never killed by the runner)."""
        return [
            i
            for i, p in self.processes.items()
            if p.poll() not in (None, -signal.SIGKILL, 0, -signal.SIGTERM)
        ]


# -- the invariants ------------------------------------------------------------------------------


def _our_rules(route: dict[str, Any]) -> list[dict[str, int]]:
    found = []
    for rule in route.get("spec", {}).get("rules", []):
        refs = {r.get("name"): r.get("weight", 1) for r in rule.get("backendRefs", [])}
        if f"{APP}-primary" in refs or f"{APP}-canary" in refs:
            found.append(refs)
    return found


def _without_weights(route: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(route.get("spec", {}))
    for rule in spec.get("rules", []):
        for ref in rule.get("backendRefs", []):
            ref.pop("weight", None)
    return {"spec": spec, "annotations": route.get("metadata", {}).get("annotations", {})}


@dataclass
class Invariants:
    """Checked after every event; ``violations`` says which broke, when, and with what."""

    plan: Plan
    prometheus: KillablePrometheus
    violations: list[str] = field(default_factory=list)
    checks: Counter[str] = field(default_factory=Counter)
    team_route: dict[str, Any] | None = None
    foreign_weights: bool = False
    last_step: int = 0
    answers_at_last_step: int = 0
    started: float = field(default_factory=time.monotonic)

    def _fail(self, what: str) -> None:
        self.violations.append(f"t={time.monotonic() - self.started:.2f}s {what}")

    def route_changed(self, route: dict[str, Any], canary: dict[str, Any] | None) -> None:
        top = max(self.plan.steps)
        for refs in _our_rules(route):
            self.checks["weights sum to the total"] += 1
            primary, canary_weight = refs.get(f"{APP}-primary", 0), refs.get(f"{APP}-canary", 0)
            if primary + canary_weight != 100:
                self._fail(f"weights {primary}+{canary_weight} do not sum to 100")
            self.checks["canary weight within the max"] += 1
            if canary_weight > top:
                self._fail(f"canary weight {canary_weight} above the max step {top}")
        if canary is not None:
            self._status_vs_route(canary, route)

    def canary_changed(self, canary: dict[str, Any], route: dict[str, Any] | None) -> None:
        status = canary.get("status") or {}
        self.checks["no promotion of a bad revision"] += 1
        if (
            not self.plan.good
            and status.get("phase") in ("Promoting", "Succeeded")
            and status.get("revision")
        ):
            self._fail(f"bad revision promoted: phase {status.get('phase')}")
        step = status.get("step", 0)
        if status.get("phase") == "Progressing" and step > self.last_step and self.last_step > 0:
            self.checks["no step without an answer from Prometheus"] += 1
            if self.prometheus.answered <= self.answers_at_last_step:
                self._fail(f"step {step} taken with no answer from Prometheus since step {self.last_step}")
        if step != self.last_step:
            self.last_step, self.answers_at_last_step = step, self.prometheus.answered
        if route is not None:
            self._status_vs_route(canary, route)

    def _status_vs_route(self, canary: dict[str, Any], route: dict[str, Any]) -> None:
        status = canary.get("status") or {}
        rules = _our_rules(route)
        if not rules or "canaryWeight" not in status:
            return
        on_route = {r.get(f"{APP}-canary", 0) for r in rules}
        if self.foreign_weights:
            # Until canaryd has put back what it says (a move it was confirming when the other writer
            # came may still land on status: then status is stale until canaryd sees the drift).
            if on_route == {status["canaryWeight"]} and status.get("movingToWeight") is None:
                self.foreign_weights = False
            return
        self.checks["status never ahead of the route"] += 1
        if on_route != {status["canaryWeight"]} and status.get("movingToWeight") is None:
            self._fail(f"status says {status['canaryWeight']}% while the route carries {sorted(on_route)}")

    def finished(self, store: Any, phase: str | None) -> None:
        wanted = "Succeeded" if self.plan.good else "Failed"
        self.checks["ends as its revision deserves"] += 1
        if phase != wanted:
            self._fail(f"ended in {phase}, expected {wanted}")
        route = world.find(store, HTTPROUTES, NS, APP)
        self.checks["all traffic on the primary, canary at 0"] += 1
        if route is None or any(r.get(f"{APP}-canary", 0) != 0 for r in _our_rules(route)):
            self._fail(f"route does not carry everything on the primary: {route and _our_rules(route)}")
        target = world.find(store, "deployments", NS, APP) or {}
        if target.get("spec", {}).get("replicas") != 0:
            self._fail(f"the canary runs {target.get('spec', {}).get('replicas')} replicas after the run")
        self.checks["foreign fields as the team left them"] += 1
        if route is not None and self.team_route is not None and _without_weights(route) != self.team_route:
            self._fail("the route's other fields differ from what the team wrote")


# -- one run -----------------------------------------------------------------------------------


@dataclass
class RunResult:
    seed: int
    good: bool
    replicas: int
    faults: Counter[str]
    checks: Counter[str]
    violations: list[str]
    seconds: float
    phase: str | None


async def _apply_fault(event: FaultEvent, cluster: Any, replicas: Replicas, prometheus: KillablePrometheus,
                       invariants: Invariants, rng: random.Random) -> None:  # fmt: skip
    faults, store = cluster.api_server.faults, cluster.store
    live = [i for i in replicas.processes if i not in replicas.stopped]
    if event.kind == "controller_kill" or (event.kind == "leader_kill" and replicas.count > 1):
        victim = _leader(store) if event.kind == "leader_kill" else rng.choice(live or ["replica-0"])
        victim = victim or "replica-0"
        replicas.kill(victim)
        await asyncio.sleep(min(event.seconds, 2.0))
        replicas.start(victim)
    elif event.kind == "controller_stop":
        victim = rng.choice(live or ["replica-0"])
        replicas.signal(victim, signal.SIGSTOP)
        await asyncio.sleep(event.seconds)
        replicas.signal(victim, signal.SIGCONT)
    elif event.kind in ("watch_drop", "watch_stall"):
        scope = {"after_seconds": 0.2} if event.kind == "watch_drop" else {}
        fault = faults.add(event.kind, verb="watch", **scope)
        await asyncio.sleep(event.seconds)
        faults.remove(fault.id)
        if event.kind == "watch_stall":
            store.close_watches()  # a stalled watch the client did not notice yet ends with the fault
    elif event.kind == "watch_gone":
        faults.add("watch_gone", remaining=rng.randint(1, 4))
    elif event.kind == "conflict_storm":
        fault = faults.add("conflict", resource="httproutes", rate=0.8)
        await asyncio.sleep(event.seconds)
        faults.remove(fault.id)
    elif event.kind == "server_errors":
        fault = faults.add("error", rate=0.3, code=rng.choice([500, 503, 504]))
        await asyncio.sleep(event.seconds)
        faults.remove(fault.id)
    elif event.kind == "latency":
        fault = faults.add("latency", latency_ms=rng.uniform(100, 800))
        await asyncio.sleep(event.seconds)
        faults.remove(fault.id)
    elif event.kind == "prometheus_kill":
        prometheus.outages += 1
        await prometheus.kill()
        await asyncio.sleep(event.seconds)
        prometheus.outages -= 1
        if prometheus.outages == 0:  # overlapping outages: up again when the last one ends
            await prometheus.start()
    elif event.kind == "second_writer":
        route = store.get(HTTPROUTES, APP, NS)
        for rule in route["spec"]["rules"]:
            for ref in rule.get("backendRefs", []):
                if ref["name"] == f"{APP}-primary":
                    ref["weight"] = 100
                elif ref["name"] == f"{APP}-canary":
                    ref["weight"] = 0
        invariants.foreign_weights = True
        store.update(HTTPROUTES, route, NS)
    elif event.kind == "team_edit":
        route = store.get(HTTPROUTES, APP, NS)
        route["metadata"].setdefault("annotations", {})["team/edited"] = str(rng.randint(0, 10**6))
        rule = route["spec"]["rules"][0]
        header = {"name": "x-team", "value": str(rng.randint(0, 99))}
        rule["filters"] = [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [header]}}]
        updated = store.update(HTTPROUTES, route, NS)
        invariants.team_route = _without_weights(updated)


def _leader(store: Any) -> str | None:
    lease = world.find(store, "leases.coordination.k8s.io", LEASE_NAMESPACE, LEASE_NAME)
    return ((lease or {}).get("spec") or {}).get("holderIdentity")


async def run_once(seed: int, timeout: float = 90.0, keep_logs: bool = False) -> RunResult:
    plan = plan_for(seed)
    rng = random.Random(seed ^ 0x5EED)
    started = time.monotonic()
    log_dir = RESULTS_DIR / "logs" / str(seed)
    log_dir.mkdir(parents=True, exist_ok=True)
    async with SandboxCluster(ready_delay=0.05, tick_interval=0.5, seed=seed) as cluster:
        store = cluster.store
        world.install_crds(store)
        world.install_gateway(store)
        store.ensure_namespace(LEASE_NAMESPACE)
        prometheus = KillablePrometheus(store)
        await prometheus.start()
        invariants = Invariants(plan, prometheus)
        metric = [
            {"name": "quality", "query": 'quality{service="{{ service }}"}', "thresholdRange": {"max": 50}}
        ]
        world.app(
            store, NS, APP, step_weights=plan.steps, threshold=plan.threshold, metrics=metric, interval="1s"
        )
        invariants.team_route = _without_weights(store.get(HTTPROUTES, APP, NS))

        def on_event(event: Any) -> None:
            obj = event.obj if isinstance(event.obj, dict) else {}
            meta = obj.get("metadata") or {}
            if meta.get("namespace") != NS or meta.get("name") != APP or event.type == "DELETED":
                return
            if event.storage_key == ("gateway.networking.k8s.io", "httproutes"):
                invariants.route_changed(obj, world.find(store, CANARIES, NS, APP))
            elif event.storage_key == ("canaryd.io", "canaries"):
                invariants.canary_changed(obj, world.find(store, HTTPROUTES, NS, APP))

        unsubscribe = store.subscribe(on_event)
        replicas = Replicas(cluster.kubeconfig_path, prometheus.url, plan.replicas, log_dir)
        replicas.start_all()
        injected: Counter[str] = Counter()
        phase: str | None = None
        try:
            await world.wait_until(
                lambda: world.status(store, NS, APP).get("phase") == "Initialized", timeout=60, message="init"
            )
            world.new_revision(store, NS, APP, "app:good" if plan.good else "app:bad")
            began = time.monotonic()
            pending = []
            for event in plan.faults:
                await asyncio.sleep(max(0.0, began + event.at - time.monotonic()))
                injected[event.kind] += 1
                pending.append(
                    asyncio.create_task(_apply_fault(event, cluster, replicas, prometheus, invariants, rng))
                )
            await asyncio.gather(*pending)
            cluster.api_server.faults.clear()
            if not prometheus.up:
                await prometheus.start()
            deadline = time.monotonic() + timeout
            settled_since: float | None = None
            while time.monotonic() < deadline:
                status = world.status(store, NS, APP)
                phase = status.get("phase")
                target = world.find(store, "deployments", NS, APP) or {}
                done = phase in ("Succeeded", "Failed") and target.get("spec", {}).get("replicas") == 0
                if done and "movingToWeight" not in status:
                    settled_since = settled_since or time.monotonic()
                    if time.monotonic() - settled_since > 1.0:
                        break
                else:
                    settled_since = None
                await asyncio.sleep(0.2)
            invariants.finished(store, phase)
            for identity in replicas.crashed():
                invariants.violations.append(f"replica {identity} exited on its own")
        except TimeoutError as exc:
            invariants.violations.append(f"timed out: {exc}")
        finally:
            unsubscribe()
            replicas.stop_all()
            await prometheus.kill()
    result = RunResult(seed, plan.good, plan.replicas, injected, invariants.checks, invariants.violations,
                       time.monotonic() - started, phase)  # fmt: skip
    if result.violations:
        save_failure(result, plan)
    elif not keep_logs:
        for log in log_dir.glob("*.log"):
            log.unlink()
        with contextlib.suppress(OSError):
            log_dir.rmdir()
    return result


def save_failure(result: RunResult, plan: Plan) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"failed-{result.seed}.json"
    record = {"seed": result.seed, "plan": asdict(plan), "violations": result.violations,
              "replay": f"python bench/bench_chaos.py --seed {result.seed}",
              "logs": str(RESULTS_DIR / "logs" / str(result.seed))}  # fmt: skip
    path.write_text(json.dumps(record, indent=2))
    return path


def table(results: list[RunResult]) -> str:
    """Faults injected and invariants checked over a set of runs."""
    faults: Counter[str] = Counter()
    checks: Counter[str] = Counter()
    for result in results:
        faults.update(result.faults)
        checks.update(result.checks)
    violated = [r for r in results if r.violations]
    good = sum(r.good for r in results)
    lines = [
        f"runs {len(results)} (good revisions {good}, bad {len(results) - good}, "
        f"two replicas {sum(r.replicas == 2 for r in results)}); runs with a violation: {len(violated)}",
        f"{'fault':<28}{'injected':>10}",
        *(f"{kind:<28}{faults.get(kind, 0):>10}" for kind in FAULTS),
        f"{'invariant':<45}{'checked':>10}",
        *(f"{name:<45}{count:>10}" for name, count in sorted(checks.items())),
    ]
    for result in violated:
        lines.append(f"seed {result.seed}: {'; '.join(result.violations)[:500]}")
    return "\n".join(lines)


__all__ = ["FAULTS", "Plan", "RunResult", "plan_for", "run_once", "table"]
