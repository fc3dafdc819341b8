"""The chaos runner: randomized rollouts under random faults, canaryd's promises checked after every event.

An episode is one sandbox, one stand-in Prometheus and one or two real
``canaryd run`` processes (with leader election when two) carrying many runs
at once: each run is one Canary in its own namespace with its own random steps
and threshold, a good or bad revision started at its own moment, and its own
second writer (putting the weights back to the primary) and app-team edits of
its route. The episode's faults hit every run in progress: a replica killed
with SIGKILL and restarted or frozen with SIGSTOP and resumed, the leader
killed, watches dropped, stalled or answered with 410, 409 storms on routes,
5xx and latency on every verb, Prometheus killed and restarted.

After every change the sandbox commits to a route or a Canary, that run's
invariants are checked (``Invariants``); at the end each run must have ended
as its revision deserves, with all traffic on the primary and the canary at 0,
and the team's route as the team left it. Each run counts as one run in the
table. Everything random is drawn from the episode's seed (the episode's
faults) and from the seed with the run's index (the run's own schedule), so a
run that breaks an invariant is saved as JSON with both
(``CANARYD_CHAOS_DIR``, by default ``/tmp/canaryd-chaos``) and its episode
replays the same schedule with ``python bench/bench_chaos.py --seed N
--canaries C`` (the schedule replays exactly; the interleaving of processes
does not).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from canaryd.sandbox.cluster import SandboxCluster
from tests.runtime import world

NAMESPACE_PREFIX = "chaos"
APP = "shop"
CANARIES = "canaries.canaryd.io"
HTTPROUTES = "httproutes.gateway.networking.k8s.io"
LEASE_NAMESPACE = "canaryd-system"
LEASE_NAME = "canaryd-chaos"
#: Faults of the episode: they hit every run in progress.
EPISODE_FAULTS = (
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
)
#: Faults of one run: its route's second writer and its app team.
RUN_FAULTS = ("second_writer", "team_edit")
FAULTS = EPISODE_FAULTS + RUN_FAULTS
DEFAULT_CANARIES = 40
#: The metric every run is judged on; the stand-in Prometheus reads the namespace from the query.
METRIC = {
    "name": "quality",
    "query": 'quality{namespace="{{ namespace }}",service="{{ service }}"}',
    "thresholdRange": {"max": 50},
}
RESULTS_DIR = Path(os.environ.get("CANARYD_CHAOS_DIR", "/tmp/canaryd-chaos"))


# -- what an episode and a run are ----------------------------------------------------------


@dataclass(frozen=True)
class FaultEvent:
    at: float
    kind: str
    seconds: float


@dataclass(frozen=True)
class RunPlan:
    """Everything random about one run, drawn from the episode's seed and the run's index."""

    seed: int
    index: int
    namespace: str
    steps: list[int]
    threshold: int
    good: bool
    #: Seconds after the episode's start when the new revision is rolled out.
    starts_at: float
    #: This run's own faults (second writer, team edits), in episode time.
    faults: list[FaultEvent]


@dataclass(frozen=True)
class EpisodePlan:
    seed: int
    replicas: int
    faults: list[FaultEvent]
    runs: list[RunPlan]


def run_plan(seed: int, index: int) -> RunPlan:
    """Run ``index`` of episode ``seed``: the same whatever the episode's size."""
    rng = random.Random(f"{seed}/{index}")
    steps = sorted(rng.sample(range(5, 91, 5), rng.randint(1, 4)))
    threshold = rng.randint(1, 3)
    good = rng.random() < 0.6
    starts_at = round(rng.uniform(0.0, 6.0), 2)
    faults = sorted(
        (
            FaultEvent(round(rng.uniform(0.2, 12.0), 2), rng.choice(RUN_FAULTS), 0.0)
            for _ in range(rng.choice((0, 0, 1, 1, 2, 3)))
        ),
        key=lambda f: f.at,
    )
    return RunPlan(seed, index, f"{NAMESPACE_PREFIX}-{index}", steps, threshold, good, starts_at, faults)


def plan_for(
    seed: int, canaries: int = DEFAULT_CANARIES, fault_count: tuple[int, int] = (4, 10)
) -> EpisodePlan:
    rng = random.Random(seed)
    replicas = 2 if rng.random() < 0.3 else 1
    kinds = [k for k in EPISODE_FAULTS if replicas == 2 or k != "leader_kill"]
    faults = sorted(
        (
            FaultEvent(round(rng.uniform(0.3, 10.0), 2), rng.choice(kinds), round(rng.uniform(0.5, 4.0), 2))
            for _ in range(rng.randint(*fault_count))
        ),
        key=lambda f: f.at,
    )
    return EpisodePlan(seed, replicas, faults, [run_plan(seed, index) for index in range(canaries)])


# -- the stand-in Prometheus, which can be killed ------------------------------------------------------

_NAMESPACE_IN_QUERY = re.compile(r'namespace="([^"]+)"')


class KillablePrometheus:
    """Answers each run's metric from the image of its canary Deployment: good 1, bad 100."""

    def __init__(self, store: Any, image_of: Callable[[str], str | None] | None = None) -> None:
        self.store = store
        #: The canary Deployment's image in a namespace (default: read from the store).
        self.image_of = image_of or self._stored_image
        self._placeholder: socket.socket | None = _reserved_port()
        self.port = self._placeholder.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        #: Answers given, per namespace (one namespace per run).
        self.answered: Counter[str] = Counter()
        self.up = False
        #: Outages in progress (they may overlap).
        self.outages = 0
        self._runner: web.AppRunner | None = None
        self._switching = asyncio.Lock()

    async def _handle(self, request: web.Request) -> web.Response:
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST":
            params.update(await request.post())
        found = _NAMESPACE_IN_QUERY.search(str(params.get("query", "")))
        namespace = found.group(1) if found else ""
        image = self.image_of(namespace)
        value = "100" if str(image).endswith(":bad") else "1"
        self.answered[namespace] += 1
        body = {
            "status": "success",
            "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, value]}]},
        }
        return web.json_response(body)

    def _stored_image(self, namespace: str) -> str | None:
        target = world.find(self.store, "deployments", namespace, APP) or {}
        containers = target.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or [{}]
        image = containers[0].get("image")
        return str(image) if image is not None else None

    async def start(self) -> None:
        async with self._switching:  # a kill while the site starts would bind the port first
            if self._runner is not None:
                return
            if self._placeholder is not None:
                self._placeholder.close()
                self._placeholder = None
            app = web.Application()
            app.router.add_route("*", "/api/v1/{what}", self._handle)
            runner = web.AppRunner(app)
            self._runner = runner
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start()
            self.up = True

    async def kill(self) -> None:
        """Down: connections are refused, and the port stays ours (bound, not listening) until ``start``.

        The machine's other processes pick free ports too; one that took ours while we were down would
        make the restart fail.
        """
        async with self._switching:
            self.up = False
            runner, self._runner = self._runner, None
            if runner is not None:
                await runner.cleanup()
                if self._placeholder is None:
                    placeholder = socket.socket()
                    placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    placeholder.bind(("127.0.0.1", self.port))
                    self._placeholder = placeholder

    def close(self) -> None:
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None


def _reserved_port() -> socket.socket:
    """A socket bound (not listening) to a free port below Linux's ephemeral range: the port is ours."""
    rng = random.Random()
    for _ in range(200):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", rng.randint(20000, 32000)))
        except OSError:
            sock.close()
            continue
        return sock
    raise RuntimeError("no free port for the stand-in Prometheus")


# -- the controller processes ------------------------------------------------------------------


class Replicas:
    """``canaryd run`` processes against the sandbox; each can be killed, frozen and restarted."""

    def __init__(self, kubeconfig: Path, prometheus_url: str, count: int, log_dir: Path,
                 extra_args: Iterable[str] = ()) -> None:  # fmt: skip
        self.kubeconfig, self.prometheus_url, self.count = kubeconfig, prometheus_url, count
        self.extra_args = list(extra_args)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.log_dir = log_dir
        self.stopped: set[str] = set()
        #: Every process started, so that none outlives the episode.
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, identity: str) -> None:
        """Start replica ``identity`` unless it runs already (two overlapping kills restart it once)."""
        running = self.processes.get(identity)
        if running is not None and running.poll() is None:
            return
        args = [
            sys.executable, "-m", "canaryd.cli.main", "run", "--kubeconfig", str(self.kubeconfig),
            "--prometheus-url", self.prometheus_url, "--health-address", "127.0.0.1:0",
            "--metrics-address", "127.0.0.1:0", "--log-format", "console", "--qps", "500", "--burst", "1000",
            "--prometheus-timeout", "2", "--log-level", os.environ.get("CANARYD_CHAOS_LOG_LEVEL", "info"),
            *self.extra_args,
        ]  # fmt: skip
        if self.count > 1:
            args += [
                "--leader-elect", "--leader-election-id", LEASE_NAME, "--leader-election-identity", identity,
                "--lease-duration", "3", "--renew-deadline", "2", "--retry-period", "0.5",
            ]  # fmt: skip
        else:
            args.append("--no-leader-elect")
        if "--leader-election-namespace" not in args:
            args += ["--leader-election-namespace", LEASE_NAMESPACE]
        log = (self.log_dir / f"{identity}.log").open("ab")
        self.processes[identity] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.started.append(self.processes[identity])

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
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
        for process in self.started:
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


def _status_and_route_weights(
    canary: dict[str, Any], route: dict[str, Any]
) -> tuple[dict[str, Any], set[int]]:
    """The Canary's status, and the canary weights of the route's rules that weight this run's Services."""
    return canary.get("status") or {}, {r.get(f"{APP}-canary", 0) for r in _our_rules(route)}


def _without_weights(route: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(route.get("spec", {}))
    for rule in spec.get("rules", []):
        for ref in rule.get("backendRefs", []):
            ref.pop("weight", None)
    return {"spec": spec, "annotations": route.get("metadata", {}).get("annotations", {})}


@dataclass
class Invariants:
    """Checked after every event; ``violations`` says which broke, when, and with what."""

    plan: RunPlan
    prometheus: KillablePrometheus
    violations: list[str] = field(default_factory=list)
    checks: Counter[str] = field(default_factory=Counter)
    team_route: dict[str, Any] | None = None
    foreign_weights: bool = False
    last_step: int = 0
    answers_at_last_step: int = 0
    #: The status of the last Canary version checked: a version with the same status wrote none.
    last_status: dict[str, Any] | None = None
    #: The route's canary weights while it is ahead of status (canaryd patches a step's route first).
    route_ahead: list[int] | None = None
    started: float = field(default_factory=time.monotonic)
    #: The last versions checked (time, what), kept for a failing run's record.
    trace: list[str] = field(default_factory=list)

    def _note(self, what: str) -> None:
        self.trace.append(f"t={time.monotonic() - self.started:.2f}s {what}")
        del self.trace[:-60]

    def _fail(self, what: str) -> None:
        self.violations.append(f"t={time.monotonic() - self.started:.2f}s {what}")

    def route_changed(self, route: dict[str, Any], canary: dict[str, Any] | None) -> None:
        """The route of this run changed: weight rules, then status against it."""
        self._note(f"route {_our_rules(route)} rv {route.get('metadata', {}).get('resourceVersion')}")
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
            self._route_vs_status(canary, route)

    def _route_vs_status(self, canary: dict[str, Any], route: dict[str, Any]) -> None:
        """A route change may put the route ahead of status (an ordinary step), never for good."""
        status, on_route = _status_and_route_weights(canary, route)
        if not on_route or "canaryWeight" not in status:
            return
        if self.foreign_weights:
            # Only a status write clears it: canaryd's write of the step it had routed before the other
            # writer came may still land, and the status before it may match the other writer's weights.
            return
        if on_route == {status["canaryWeight"]} or status.get("movingToWeight") is not None:
            self.route_ahead = None
        else:
            self.route_ahead = sorted(on_route)

    def canary_changed(
        self, canary: dict[str, Any], route: dict[str, Any] | None, answers: int | None = None
    ) -> bool:
        """The Canary of this run changed: no bad promotion, no unjudged step, status against the route.

        ``answers``: Prometheus's answers for this run when the change was committed (default: now; -1:
        unknown, as for a version a broken watch delivered late). Returns False when the step check had
        to be skipped because the answers at the step before were unknown.
        """
        status = canary.get("status") or {}
        self._note(
            f"canary {status.get('phase')} step {status.get('step')} weight {status.get('canaryWeight')} "
            f"moving {status.get('movingToWeight')} rv {canary.get('metadata', {}).get('resourceVersion')}"
        )
        checked = True
        now_answers = self.prometheus.answered[self.plan.namespace] if answers is None else answers
        self.checks["no promotion of a bad revision"] += 1
        if (
            not self.plan.good
            and status.get("phase") in ("Promoting", "Succeeded")
            and status.get("revision")
        ):
            self._fail(f"bad revision promoted: phase {status.get('phase')}")
        step = status.get("step", 0)
        if status.get("phase") == "Progressing" and step > self.last_step and self.last_step > 0:
            if self.answers_at_last_step < 0 or now_answers < 0:
                checked = False
            else:
                self.checks["no step without an answer from Prometheus"] += 1
                if now_answers <= self.answers_at_last_step:
                    self._fail(
                        f"step {step} taken with no answer from Prometheus since step {self.last_step}"
                    )
        if step != self.last_step:
            self.last_step, self.answers_at_last_step = step, now_answers
        written = status != self.last_status
        self.last_status = status
        if route is not None and written:
            self._status_vs_route(canary, route)
        return checked

    def _status_vs_route(self, canary: dict[str, Any], route: dict[str, Any]) -> None:
        status, on_route = _status_and_route_weights(canary, route)
        if not on_route or "canaryWeight" not in status:
            return
        if self.foreign_weights:
            # Until canaryd has put back what it says (a move it was confirming when the other writer
            # came may still land on status: then status is stale until canaryd sees the drift).
            if on_route == {status["canaryWeight"]} and status.get("movingToWeight") is None:
                self.foreign_weights = False
            return
        self.checks["status never ahead of the route"] += 1
        if on_route != {status["canaryWeight"]} and status.get("movingToWeight") is None:
            self._fail(f"status says {status['canaryWeight']}% while the route carries {sorted(on_route)}")
        else:
            self.route_ahead = None

    def finished(self, store: Any, phase: str | None) -> None:
        """The end of the run: the phase its revision deserves, the primary carrying everything."""
        wanted = "Succeeded" if self.plan.good else "Failed"
        self.checks["ends as its revision deserves"] += 1
        if phase != wanted:
            self._fail(f"ended in {phase}, expected {wanted}")
        namespace = self.plan.namespace
        route = world.find(store, HTTPROUTES, namespace, APP)
        self.checks["all traffic on the primary, canary at 0"] += 1
        if route is None or any(r.get(f"{APP}-canary", 0) != 0 for r in _our_rules(route)):
            self._fail(f"route does not carry everything on the primary: {route and _our_rules(route)}")
        self.checks["status caught up with the route"] += 1
        if self.route_ahead is not None:
            self._fail(f"the route carries {self.route_ahead} and status never said so")
        target = world.find(store, "deployments", namespace, APP) or {}
        if target.get("spec", {}).get("replicas") != 0:
            self._fail(f"the canary runs {target.get('spec', {}).get('replicas')} replicas after the run")
        self.checks["foreign fields as the team left them"] += 1
        if route is not None and self.team_route is not None and _without_weights(route) != self.team_route:
            self._fail("the route's other fields differ from what the team wrote")


# -- one episode ---------------------------------------------------------------------------


@dataclass
class RunResult:
    seed: int
    index: int
    good: bool
    replicas: int
    #: Faults that hit this run while it was in progress (its own, and the episode's).
    faults: Counter[str]
    checks: Counter[str]
    violations: list[str]
    seconds: float
    phase: str | None


@dataclass
class EpisodeResult:
    seed: int
    replicas: int
    #: Faults injected, each counted once for the episode.
    injected: Counter[str]
    runs: list[RunResult]
    seconds: float


def _in_progress(store: Any, run: RunPlan, started: set[str]) -> bool:
    if run.namespace not in started:
        return False
    status = world.find(store, CANARIES, run.namespace, APP) or {}
    return (status.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


async def _apply_fault(event: FaultEvent, cluster: Any, replicas: Replicas, prometheus: KillablePrometheus,
                       rng: random.Random) -> None:  # fmt: skip
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


def weights_back_to_primary(route: dict[str, Any]) -> dict[str, Any]:
    """What a second writer does to the route: every weight of canaryd's backendRefs back on the primary."""
    for rule in route["spec"]["rules"]:
        for ref in rule.get("backendRefs", []):
            if ref["name"] == f"{APP}-primary":
                ref["weight"] = 100
            elif ref["name"] == f"{APP}-canary":
                ref["weight"] = 0
    return route


def _second_writer(store: Any, namespace: str, invariants: Invariants) -> None:
    route = weights_back_to_primary(store.get(HTTPROUTES, APP, namespace))
    invariants.foreign_weights = True
    store.update(HTTPROUTES, route, namespace)


def _team_edit(store: Any, namespace: str, invariants: Invariants, rng: random.Random) -> None:
    route = store.get(HTTPROUTES, APP, namespace)
    route["metadata"].setdefault("annotations", {})["team/edited"] = str(rng.randint(0, 10**6))
    rule = route["spec"]["rules"][0]
    header = {"name": "x-team", "value": str(rng.randint(0, 99))}
    rule["filters"] = [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [header]}}]
    updated = store.update(HTTPROUTES, route, namespace)
    invariants.team_route = _without_weights(updated)


def _leader(store: Any) -> str | None:
    lease = world.find(store, "leases.coordination.k8s.io", LEASE_NAMESPACE, LEASE_NAME)
    return ((lease or {}).get("spec") or {}).get("holderIdentity")


def _initialized(store: Any, namespace: str) -> bool:
    return world.status(store, namespace, APP).get("phase") == "Initialized"


def _settled(store: Any, namespace: str) -> tuple[bool, str | None]:
    status = world.status(store, namespace, APP)
    phase = status.get("phase")
    target = world.find(store, "deployments", namespace, APP) or {}
    done = phase in ("Succeeded", "Failed") and target.get("spec", {}).get("replicas") == 0
    return done and "movingToWeight" not in status, phase


#: One entry of an episode's timeline: when (seconds after the start), the order among entries at the same
#: moment, what happens, the run it belongs to (None: the whole episode) and the fault (None: a revision).
TimelineEntry = tuple[float, int, str, RunPlan | None, FaultEvent | None]


def episode_timeline(plan: EpisodePlan, runs: list[RunPlan]) -> list[TimelineEntry]:
    """Every run's new revision and faults and the episode's faults, in the order they happen."""
    timeline: list[TimelineEntry] = []
    for run in runs:
        timeline.append((run.starts_at, 0, "revision", run, None))
        timeline += [(f.at, 1, f.kind, run, f) for f in run.faults]
    timeline += [(f.at, 2, f.kind, None, f) for f in plan.faults]
    timeline.sort(key=lambda entry: (entry[0], entry[1]))
    return timeline


async def run_episode(
    seed: int,
    canaries: int = DEFAULT_CANARIES,
    timeout: float = 120.0,
    keep_logs: bool = False,
    only: Iterable[int] | None = None,
) -> EpisodeResult:
    """Episode ``seed`` with ``canaries`` runs (``only``: just these indexes, under the same faults)."""
    plan = plan_for(seed, canaries)
    chosen = set(only) if only is not None else None
    runs = [r for r in plan.runs if chosen is None or r.index in chosen]
    rng = random.Random(seed ^ 0x5EED)
    started_at = time.monotonic()
    log_dir = RESULTS_DIR / "logs" / f"episode-{seed}"
    log_dir.mkdir(parents=True, exist_ok=True)
    sandbox = SandboxCluster(ready_delay=0.05, tick_interval=0.5, seed=seed, simulate_traffic=False)
    async with sandbox as cluster:
        store = cluster.store
        world.install_crds(store)
        world.install_gateway(store)
        store.ensure_namespace(LEASE_NAMESPACE)
        prometheus = KillablePrometheus(store)
        await prometheus.start()
        checkers = {run.namespace: Invariants(run, prometheus) for run in runs}
        for run in runs:
            world.app(store, run.namespace, APP, step_weights=run.steps, threshold=run.threshold,
                      metrics=[METRIC], interval="1s")  # fmt: skip
            checkers[run.namespace].team_route = _without_weights(store.get(HTTPROUTES, APP, run.namespace))

        def on_event(event: Any) -> None:
            obj = event.obj if isinstance(event.obj, dict) else {}
            meta = obj.get("metadata") or {}
            invariants = checkers.get(meta.get("namespace", ""))
            if invariants is None or meta.get("name") != APP or event.type == "DELETED":
                return
            namespace = meta["namespace"]
            if event.storage_key == ("gateway.networking.k8s.io", "httproutes"):
                invariants.route_changed(obj, world.find(store, CANARIES, namespace, APP))
            elif event.storage_key == ("canaryd.io", "canaries"):
                invariants.canary_changed(obj, world.find(store, HTTPROUTES, namespace, APP))

        unsubscribe = store.subscribe(on_event)
        replicas = Replicas(cluster.kubeconfig_path, prometheus.url, plan.replicas, log_dir)
        replicas.start_all()
        injected: Counter[str] = Counter()
        hit: dict[str, Counter[str]] = {run.namespace: Counter() for run in runs}
        phases: dict[str, str | None] = {}
        started: set[str] = set()
        try:
            await world.wait_until(
                lambda: all(_initialized(store, r.namespace) for r in runs),
                timeout=90,
                message="every Canary Initialized",
            )
            timeline = episode_timeline(plan, runs)
            began = time.monotonic()
            pending: list[asyncio.Task[None]] = []
            for at, _, kind, planned, event in timeline:
                await asyncio.sleep(max(0.0, began + at - time.monotonic()))
                if kind == "revision" and planned is not None:
                    world.new_revision(
                        store, planned.namespace, APP, "app:good" if planned.good else "app:bad"
                    )
                    started.add(planned.namespace)
                elif planned is not None:
                    injected[kind] += 1
                    if planned.namespace in started:
                        hit[planned.namespace][kind] += 1
                    if kind == "second_writer":
                        _second_writer(store, planned.namespace, checkers[planned.namespace])
                    else:
                        _team_edit(store, planned.namespace, checkers[planned.namespace], rng)
                elif event is not None:
                    injected[kind] += 1
                    for other in runs:
                        if _in_progress(store, other, started):
                            hit[other.namespace][kind] += 1
                    fault = _apply_fault(event, cluster, replicas, prometheus, rng)
                    pending.append(asyncio.create_task(fault))
            await asyncio.gather(*pending)
            cluster.api_server.faults.clear()
            if not prometheus.up:
                await prometheus.start()
            deadline = time.monotonic() + timeout
            settled_since: dict[str, float] = {}
            while time.monotonic() < deadline:
                now = time.monotonic()
                for run in runs:
                    done, phases[run.namespace] = _settled(store, run.namespace)
                    if done:
                        settled_since.setdefault(run.namespace, now)
                    else:
                        settled_since.pop(run.namespace, None)
                if len(settled_since) == len(runs) and all(now - t > 1.0 for t in settled_since.values()):
                    break
                await asyncio.sleep(0.2)
            crashed = replicas.crashed()
            for run in runs:
                checkers[run.namespace].finished(store, phases.get(run.namespace))
                for identity in crashed:
                    checkers[run.namespace].violations.append(f"replica {identity} exited on its own")
        finally:
            unsubscribe()
            replicas.stop_all()
            await prometheus.kill()
            prometheus.close()
    seconds = time.monotonic() - started_at
    results = [
        RunResult(
            seed,
            run.index,
            run.good,
            plan.replicas,
            hit[run.namespace],
            checkers[run.namespace].checks,
            checkers[run.namespace].violations,
            seconds,
            phases.get(run.namespace),
        )
        for run in runs
    ]
    for result, run in zip(results, runs, strict=True):
        if result.violations:
            save_failure(result, run, plan, canaries, checkers[run.namespace].trace)
    if not keep_logs and not any(r.violations for r in results):
        for log in log_dir.glob("*.log"):
            log.unlink()
        with contextlib.suppress(OSError):
            log_dir.rmdir()
    return EpisodeResult(seed, plan.replicas, injected, results, seconds)


def save_failure(
    result: RunResult,
    run: RunPlan,
    episode: EpisodePlan,
    canaries: int,
    trace: list[str] | None = None,
    details: dict[str, Any] | None = None,
) -> Path:
    """Write a failing run's record; ``details`` (the end state, the controller's log) are kept with it."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"failed-{result.seed}-{result.index}.json"
    record = {
        "seed": result.seed,
        "index": result.index,
        "run": asdict(run),
        "episode": {"replicas": episode.replicas, "faults": [asdict(f) for f in episode.faults]},
        "violations": result.violations,
        "trace": trace,
        "replay": f"python bench/bench_chaos.py --seed {result.seed} --canaries {canaries}",
        "replay_alone": f"python bench/bench_chaos.py --seed {result.seed} --only {result.index}",
        "logs": str(RESULTS_DIR / "logs" / f"episode-{result.seed}"),
        **(details or {}),
    }
    path.write_text(json.dumps(record, indent=2))
    return path


def table(
    episodes: list[EpisodeResult],
    *,
    faults: tuple[str, ...] = FAULTS,
    where: str = "",
    notes: tuple[str, ...] = (),
) -> str:
    """Faults injected and invariants checked over a set of episodes (each run counted once).

    ``faults`` are the kinds listed (the real cluster has its own), ``where`` prefixes the first line
    and ``notes`` follow the invariants.
    """
    injected: Counter[str] = Counter()
    runs_hit: Counter[str] = Counter()
    checks: Counter[str] = Counter()
    results = [run for episode in episodes for run in episode.runs]
    for episode in episodes:
        injected.update(episode.injected)
    for result in results:
        runs_hit.update({kind: 1 for kind in result.faults})
        checks.update(result.checks)
    violated = [r for r in results if r.violations]
    good = sum(r.good for r in results)
    lines = [
        f"{where}runs {len(results)} in {len(episodes)} episodes (good revisions {good}, "
        f"bad {len(results) - good}, under two replicas {sum(r.replicas == 2 for r in results)}); "
        f"runs with a violation: {len(violated)}; "
        f"invariant violations: {sum(len(r.violations) for r in violated)}",
        f"{'fault':<28}{'injected':>10}{'runs hit':>10}",
        *(f"{kind:<28}{injected.get(kind, 0):>10}{runs_hit.get(kind, 0):>10}" for kind in faults),
        f"{'invariant':<45}{'checked':>10}",
        *(f"{name:<45}{count:>10}" for name, count in sorted(checks.items())),
        *notes,
    ]
    for result in violated:
        lines.append(f"seed {result.seed} run {result.index}: {'; '.join(result.violations)[:500]}")
    return "\n".join(lines)


__all__ = [
    "FAULTS",
    "EpisodePlan",
    "EpisodeResult",
    "RunPlan",
    "RunResult",
    "episode_timeline",
    "plan_for",
    "run_episode",
    "table",
]
