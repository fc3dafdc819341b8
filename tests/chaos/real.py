"""The chaos runner's faults on the real control plane: kube-apiserver, etcd, the controller killed mid-run.

Why this module exists: the sandbox episodes (``tests.chaos.runner``) fake the
API server's faults; on the real cluster (``cluster.harness``, Traefik as the
Gateway) the faults are real processes dying: kube-apiserver SIGKILLed and
started again, etcd SIGKILLed and started again with its data, and the
controller SIGKILLed and restarted, each in the middle of the runs' steps. The
runs and their invariants are the sandbox episodes' (``run_plan``,
``Invariants``), each run one Canary in a namespace of its own, with its own
second writer and team edits.

The sandbox calls the checks at the instant of each commit; here they come
from watches, one per resource and namespace, which deliver the route and the
Canary separately. So each namespace's events are put back in etcd's order
(resourceVersion) before they are checked, and a version V of one object is
checked only once the other object's stream is proven to hold every version
up to V: it delivered a version at or after V, or a fresh list of the other
object (read after V was delivered, so its ``metadata.resourceVersion``, etcd's
revision at the read, is at least V) shows nothing newer than what its stream
delivered. A stream that has merely been quiet proves nothing: after an API
server restart a watch can deliver a version written before V well after V
(seen: 0.2 s late, after 7 s of silence). A watch broken by a fault loses
the versions committed while it was down; the relist brings the latest, and
the status-against-route checks of that gap, which compared status with a
route version that may have been superseded, are dropped and counted as
``unverifiable`` (the weight, promotion and end-state checks still hold for
every version seen).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import heapq
import json
import random
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cluster.dataplane import DataPlane
from cluster.harness import Cluster
from tests.chaos.runner import (
    APP,
    CANARIES,
    HTTPROUTES,
    METRIC,
    RESULTS_DIR,
    EpisodePlan,
    EpisodeResult,
    FaultEvent,
    Invariants,
    KillablePrometheus,
    Replicas,
    RunResult,
    _without_weights,
    episode_timeline,
    run_plan,
    save_failure,
    table,
    weights_back_to_primary,
)
from tests.e2e.backends import REPO, RealApiError, RealStore
from tests.runtime import world

REAL_FAULTS = ("apiserver_kill", "etcd_kill", "controller_kill")
#: Seconds the end of an episode waits for every stream to be proven caught up before the last checks.
CATCH_UP = 30.0
GATEWAY = "public"


def real_plan(seed: int, canaries: int, fault_count: tuple[int, int] = (3, 5)) -> EpisodePlan:
    """Episode ``seed`` on the real cluster: one replica, every kind of real fault at least once."""
    rng = random.Random(f"real/{seed}")
    count = rng.randint(*fault_count)
    kinds = list(REAL_FAULTS) + [rng.choice(REAL_FAULTS) for _ in range(count - len(REAL_FAULTS))]
    rng.shuffle(kinds)
    times = sorted(round(rng.uniform(1.0, 14.0), 2) for _ in kinds)
    faults = [
        FaultEvent(at, kind, round(rng.uniform(0.5, 3.0), 2)) for at, kind in zip(times, kinds, strict=True)
    ]
    return EpisodePlan(seed, 1, faults, [run_plan(seed, index) for index in range(canaries)])


# -- the events of one namespace in etcd's order -------------------------------------------------------


@dataclass
class OrderedView:
    """Route and Canary versions of one run, checked in resourceVersion order."""

    checker: Invariants
    pending: list[tuple[int, int, str, dict[str, Any], int]] = field(default_factory=list)
    #: The latest resourceVersion each stream delivered: it holds every version of its object up to there.
    delivered: dict[str, int] = field(default_factory=dict)
    #: Up to where a fresh read proved a stream complete (its object had no version it had not delivered).
    proven: dict[str, int] = field(default_factory=dict)
    #: Route versions a second writer made (status may be stale from there until canaryd puts weights back).
    foreign_versions: set[int] = field(default_factory=set)
    #: Second-writer writes in flight: checking waits for their versions.
    writing: int = 0
    #: What was checked, in order (kept for a failing run's record).
    trace: list[str] = field(default_factory=list)
    #: The latest version of each object checked so far.
    route: dict[str, Any] | None = None
    canary: dict[str, Any] | None = None
    #: (after, up to) resourceVersions whose versions of one object a broken watch may have missed.
    gaps: list[tuple[int, int]] = field(default_factory=list)
    #: Status-against-route violations found so far, by resourceVersion; final at the end.
    tentative: list[tuple[int, str]] = field(default_factory=list)
    unverifiable: int = 0
    #: Fresh reads that proved a stream caught up, and versions checked at the end without that proof.
    proofs: int = 0
    unproven_at_end: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _sequence: int = 0

    def add(self, kind: str, obj: dict[str, Any], relisted: bool, known: str | None) -> None:
        version = int(obj["metadata"]["resourceVersion"])
        with self.lock:
            self.delivered[kind] = max(version, self.delivered.get(kind, 0))
            if relisted:
                if known == obj["metadata"]["resourceVersion"]:
                    return  # nothing missed
                self.gaps.append((int(known) if known else 0, version))
            # Answers so far: for a version the watch delivered late, unknown (-1).
            answers = -1 if relisted else self.checker.prometheus.answered[self.checker.plan.namespace]
            self._sequence += 1
            heapq.heappush(self.pending, (version, self._sequence, kind, obj, answers))

    def _complete_up_to(self, kind: str) -> int:
        return max(self.delivered.get(kind, 0), self.proven.get(kind, 0))

    def waiting_on(self) -> list[str]:
        """The streams the oldest unchecked version waits for: a fresh read of their object may prove them."""
        with self.lock:
            if not self.pending or len(self.delivered) < 2:
                return []
            oldest = self.pending[0][0]
            return [kind for kind in self.delivered if self._complete_up_to(kind) < oldest]

    def read(self, kind: str, latest: int | None, revision: int) -> None:
        """A list of ``kind``'s object at etcd revision ``revision`` found it at ``latest`` (None: absent).

        When the stream has delivered that version, it holds every version up to ``revision``; when it
        has not, the stream is behind and the checks wait for it.
        """
        with self.lock:
            delivered = self.delivered.setdefault(kind, 0)
            if latest is None or latest <= delivered:  # (no object: the runs never delete one)
                self.proofs += 1
                self.proven[kind] = max(revision, self.proven.get(kind, 0))

    def process(self, force: bool = False) -> None:
        """Check every version up to the point both streams are known to hold (``force``: everything)."""
        with self.lock:
            if not force and (len(self.delivered) < 2 or self.writing):
                return  # one stream has not even listed yet, or a second writer's version is not known yet
            watermark = None if force else min(self._complete_up_to(kind) for kind in self.delivered)
            while self.pending and (watermark is None or self.pending[0][0] <= watermark):
                version, _, kind, obj, answers = heapq.heappop(self.pending)
                if force and any(self._complete_up_to(k) < version for k in self.delivered):
                    self.unproven_at_end += 1
                before = len(self.checker.violations)
                if kind == "route":
                    self.route = obj
                    if version in self.foreign_versions:
                        self.checker.foreign_weights = True
                    self.checker.route_changed(obj, self.canary)
                else:
                    self.canary = obj
                    if not self.checker.canary_changed(obj, self.route, answers):
                        self.unverifiable += 1
                self.trace.append(f"rv {version} {_summary(kind, obj)}")
                found = self.checker.violations[before:]
                del self.checker.violations[before:]
                for message in found:
                    if "while the route carries" in message:
                        self.tentative.append((version, message))
                    else:
                        self.checker.violations.append(message)

    def _in_gap(self, version: int) -> bool:
        return any(after < version <= until for after, until in self.gaps)

    def finish(self) -> None:
        """Everything left is checked; status violations inside a gap are dropped as unverifiable."""
        self.process(force=True)
        for version, message in self.tentative:
            if self._in_gap(version):
                self.unverifiable += 1
            else:
                self.checker.violations.append(f"rv {version}: {message}")
        if self.checker.violations:
            gaps = ", ".join(f"({a}, {b}]" for a, b in self.gaps)
            self.checker.violations.append(f"gaps {gaps}; trace: " + " | ".join(self.trace[-40:]))


def _summary(kind: str, obj: dict[str, Any]) -> str:
    if kind == "route":
        weights = [
            {ref.get("name"): ref.get("weight") for ref in rule.get("backendRefs", [])}
            for rule in obj.get("spec", {}).get("rules", [])
        ]
        return f"route {weights}"
    status = obj.get("status") or {}
    return (
        f"canary {status.get('phase')} step {status.get('step')} weight {status.get('canaryWeight')} "
        f"moving {status.get('movingToWeight')}"
    )


class _Watch(threading.Thread):
    """List, then watch, one resource of one namespace; after any error, list again (a relist)."""

    def __init__(self, cluster: Cluster, resource: str, namespace: str, kind: str, view: OrderedView) -> None:
        super().__init__(daemon=True, name=f"chaos watch {resource} {namespace}")
        self.cluster, self.kind, self.view = cluster, kind, view
        plural, _, group = resource.partition(".")
        version = "v1alpha1" if group == "canaryd.io" else "v1"
        self.path = f"/apis/{group}/{version}/namespaces/{namespace}/{plural}"
        self.known: str | None = None
        self.stopped = threading.Event()
        self.relists = 0

    def run(self) -> None:
        first = True
        while not self.stopped.is_set():
            try:
                status, body = self.cluster.api("GET", self.path, timeout=5)
                if status != 200:
                    raise RealApiError(status, body)
                latest = None
                for obj in body.get("items", []):
                    if obj["metadata"]["name"] == APP:
                        self.view.add(self.kind, obj, relisted=not first, known=self.known)
                        self.known = obj["metadata"]["resourceVersion"]
                        latest = int(self.known)
                # The list holds everything up to its revision; the watch goes on from there.
                self.view.read(self.kind, latest, int(body["metadata"]["resourceVersion"]))
                if not first:
                    self.relists += 1
                first = False
                self._follow(body["metadata"]["resourceVersion"])
            except (OSError, ValueError, RealApiError, KeyError):
                if self.stopped.wait(0.3):
                    return

    def prove(self) -> None:
        """A fresh list of the object at etcd's revision now: the stream is caught up, or shown behind."""
        query = urllib.parse.urlencode({"fieldSelector": f"metadata.name={APP}"})
        with contextlib.suppress(OSError, ValueError, KeyError):
            status, body = self.cluster.api("GET", f"{self.path}?{query}", timeout=3)
            if status == 200:
                items = body.get("items", [])
                latest = int(items[0]["metadata"]["resourceVersion"]) if items else None
                self.view.read(self.kind, latest, int(body["metadata"]["resourceVersion"]))

    def _follow(self, version: str) -> None:
        query = urllib.parse.urlencode({"watch": "1", "resourceVersion": version, "timeoutSeconds": "30"})
        request = urllib.request.Request(f"{self.cluster.server}{self.path}?{query}")
        request.add_header("Authorization", f"Bearer {self.cluster.admin_token}")
        with urllib.request.urlopen(request, timeout=35, context=self.cluster.ssl_context()) as response:
            for line in response:
                if self.stopped.is_set():
                    return
                event = json.loads(line)
                if event["type"] == "ERROR":
                    raise ValueError(f"watch ended: {event['object']}")
                obj = event["object"]
                if event["type"] in ("BOOKMARK", "DELETED") or obj["metadata"]["name"] != APP:
                    continue
                self.view.add(self.kind, obj, relisted=False, known=self.known)
                self.known = obj["metadata"]["resourceVersion"]


# -- the episode ----------------------------------------------------------------------------------


async def _retry(action: Any, *args: Any, timeout: float = 90.0) -> Any:
    """``action(*args)`` in a thread, again until the API server answers (it may be down: a fault)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await asyncio.to_thread(action, *args)
        except (RealApiError, OSError) as error:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the API server did not answer within {timeout:.0f} s: {error}"
                ) from error
            await asyncio.sleep(0.3)


def _api_ready(cluster: Cluster) -> bool:
    with contextlib.suppress(OSError):
        return cluster.api("GET", "/readyz", timeout=2)[0] == 200
    return False


async def _apply_real_fault(event: FaultEvent, cluster: Cluster, replicas: Replicas) -> None:
    if event.kind == "controller_kill":
        replicas.kill("replica-0")
        await asyncio.sleep(event.seconds)
        replicas.start("replica-0")
        return
    component = "kube-apiserver" if event.kind == "apiserver_kill" else "etcd"
    await asyncio.to_thread(cluster.kill_component, component)
    await asyncio.sleep(event.seconds)
    if component == "etcd":
        await asyncio.to_thread(cluster.start_etcd)
    else:
        await asyncio.to_thread(cluster.start_apiserver)
    deadline = time.monotonic() + 90
    while not await asyncio.to_thread(_api_ready, cluster):
        if time.monotonic() > deadline:
            raise TimeoutError(f"kube-apiserver not ready 90 s after {component} came back")
        await asyncio.sleep(0.3)


def _second_writer(store: RealStore, namespace: str) -> int:
    """Weights back to the primary; returns the route's resourceVersion the write made."""
    route = weights_back_to_primary(store.get(HTTPROUTES, APP, namespace))
    return int(store.update(HTTPROUTES, route, namespace)["metadata"]["resourceVersion"])


def _team_edit(store: RealStore, namespace: str, invariants: Invariants, value: int) -> None:
    route = store.get(HTTPROUTES, APP, namespace)
    route["metadata"].setdefault("annotations", {})["team/edited"] = str(value)
    header = {"name": "x-team", "value": str(value % 100)}
    route["spec"]["rules"][0]["filters"] = [
        {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [header]}}
    ]
    updated = store.update(HTTPROUTES, route, namespace)
    invariants.team_route = _without_weights(updated)


def _settled(store: RealStore, namespace: str) -> tuple[bool, str | None]:
    status = store.get(CANARIES, APP, namespace).get("status") or {}
    target = store.get("deployments", APP, namespace)
    phase = status.get("phase")
    done = phase in ("Succeeded", "Failed") and target.get("spec", {}).get("replicas") == 0
    return done and "movingToWeight" not in status, phase


async def run_real_episode(
    cluster: Cluster, plane: DataPlane, seed: int, canaries: int = 6, timeout: float = 180.0
) -> tuple[EpisodeResult, Counter[str]]:
    """Episode ``seed`` on the real cluster; also returns how many checks a broken watch made unverifiable."""
    plan = real_plan(seed, canaries)
    tag = uuid.uuid4().hex[:6]
    runs = [replace(run, namespace=f"chaos-{tag}-{run.index}") for run in plan.runs]
    infra, system = f"chaos-{tag}-infra", f"chaos-{tag}-system"
    store = RealStore(cluster, [])
    rng = random.Random(seed ^ 0x5EED)
    started_at = time.monotonic()
    log_dir = RESULTS_DIR / "logs" / f"real-{seed}-{tag}"
    log_dir.mkdir(parents=True, exist_ok=True)
    crds = [arg for path in sorted((REPO / "manifests" / "crd").glob("*.yaml"))
            if path.name != "kustomization.yaml" for arg in ("-f", str(path))]  # fmt: skip
    await asyncio.to_thread(cluster.kubectl, "apply", "--server-side", "--force-conflicts", *crds)
    await asyncio.to_thread(cluster.kubectl, "wait", "--for=condition=Established", "--timeout=60s", *crds)
    for namespace in (infra, system, *(run.namespace for run in runs)):
        await asyncio.to_thread(store.ensure_namespace, namespace)
    await asyncio.to_thread(store.create, "gateways.gateway.networking.k8s.io", plane.gateway(infra, GATEWAY))
    images: dict[str, str] = {}
    prometheus = KillablePrometheus(store, image_of=images.get)
    await prometheus.start()
    checkers = {run.namespace: Invariants(run, prometheus) for run in runs}
    views = {ns: OrderedView(checker) for ns, checker in checkers.items()}
    for run in runs:
        ns = run.namespace
        route = world.route(ns, APP, parent=GATEWAY, parent_namespace=infra)
        route["spec"]["hostnames"] = [f"{APP}.{ns}.test"]
        await asyncio.to_thread(store.create, "deployments", world.deployment(ns, APP))
        created = await asyncio.to_thread(store.create, HTTPROUTES, route)
        checkers[ns].team_route = _without_weights(created)
        canary = world.canary(ns, APP, step_weights=run.steps, threshold=run.threshold, metrics=[METRIC])
        await asyncio.to_thread(store.create, CANARIES, canary)
        images[ns] = "app:1.0"
    watches = [
        _Watch(cluster, resource, run.namespace, kind, views[run.namespace])
        for run in runs
        for resource, kind in ((HTTPROUTES, "route"), (CANARIES, "canary"))
    ]
    for watch in watches:
        watch.start()
    extra = ["--namespaces", ",".join(run.namespace for run in runs), "--leader-election-namespace", system]
    replicas = Replicas(cluster.kubeconfig, prometheus.url, 1, log_dir, extra_args=extra)
    replicas.start_all()
    injected: Counter[str] = Counter()
    hit: dict[str, Counter[str]] = {run.namespace: Counter() for run in runs}
    phases: dict[str, str | None] = {}
    started: set[str] = set()
    end_states: dict[str, dict[str, Any]] = {}
    stop_processing = asyncio.Event()

    streams = {(watch.view.checker.plan.namespace, watch.kind): watch for watch in watches}

    async def keep_processing() -> None:
        while not stop_processing.is_set():
            for view in views.values():
                view.process()
            # A version waiting on a quiet stream: read that stream's object now (it proves the stream
            # caught up, or shows it is behind and the version must wait).
            waiting = [streams[(ns, kind)] for ns, view in views.items() for kind in view.waiting_on()]
            if waiting:
                await asyncio.gather(*(asyncio.to_thread(watch.prove) for watch in waiting))
                for view in views.values():
                    view.process()
            await asyncio.sleep(0.2)

    processing = asyncio.create_task(keep_processing())
    try:

        async def initialized() -> bool:
            for run in runs:
                canary = await _retry(store.get, CANARIES, APP, run.namespace)
                if (canary.get("status") or {}).get("phase") != "Initialized":
                    return False
            return True

        deadline = time.monotonic() + 120
        while not await initialized():
            if time.monotonic() > deadline:
                raise TimeoutError("not every Canary Initialized within 120 s")
            await asyncio.sleep(0.5)
        timeline = episode_timeline(plan, runs)
        began = time.monotonic()
        for at, _, kind, planned, event in timeline:
            await asyncio.sleep(max(0.0, began + at - time.monotonic()))
            if kind == "revision" and planned is not None:
                image = "app:good" if planned.good else "app:bad"
                images[planned.namespace] = image
                await _retry(world.new_revision, store, planned.namespace, APP, image)
                started.add(planned.namespace)
            elif planned is not None:
                injected[kind] += 1
                if planned.namespace in started:
                    hit[planned.namespace][kind] += 1
                checker = checkers[planned.namespace]
                if kind == "second_writer":
                    view = views[planned.namespace]
                    view.writing += 1  # its version must be known before it is checked
                    try:
                        view.foreign_versions.add(await _retry(_second_writer, store, planned.namespace))
                    finally:
                        view.writing -= 1
                else:
                    await _retry(_team_edit, store, planned.namespace, checker, rng.randint(0, 10**6))
            elif event is not None:  # the real faults one after another: each ends before the next
                injected[kind] += 1
                for other in runs:
                    if other.namespace in started:
                        canary = await _retry(store.get, CANARIES, APP, other.namespace)
                        if (canary.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                            hit[other.namespace][kind] += 1
                await _apply_real_fault(event, cluster, replicas)
        deadline = time.monotonic() + timeout
        settled_since: dict[str, float] = {}
        while time.monotonic() < deadline:
            now = time.monotonic()
            for run in runs:
                done, phases[run.namespace] = await _retry(_settled, store, run.namespace)
                if done:
                    settled_since.setdefault(run.namespace, now)
                else:
                    settled_since.pop(run.namespace, None)
            if len(settled_since) == len(runs) and all(now - t > 1.0 for t in settled_since.values()):
                break
            await asyncio.sleep(0.5)
        caught_up_by = time.monotonic() + CATCH_UP  # the watches deliver the last versions
        while any(view.pending for view in views.values()) and time.monotonic() < caught_up_by:
            await asyncio.sleep(0.2)
        stop_processing.set()
        await processing
        crashed = replicas.crashed()
        for run in runs:
            views[run.namespace].finish()
            checker = checkers[run.namespace]
            snapshot = _Snapshot(store)
            await asyncio.to_thread(snapshot.load, run.namespace)
            checker.finished(snapshot, phases.get(run.namespace))
            if checker.violations:  # what the Canary and both Deployments say, for the failure record
                end_states[run.namespace] = await asyncio.to_thread(_end_state, store, run.namespace)
                end_states[run.namespace]["components"] = _component_log(cluster, run.namespace)
                checker.violations.append(_end_state_summary(end_states[run.namespace]))
            for identity in crashed:
                checker.violations.append(f"replica {identity} exited on its own")
    finally:
        stop_processing.set()
        with contextlib.suppress(BaseException):
            await processing
        replicas.stop_all()
        for watch in watches:
            watch.stopped.set()
        await prometheus.kill()
        prometheus.close()
        await asyncio.to_thread(_teardown, store, cluster, [run.namespace for run in runs], infra, system)
    seconds = time.monotonic() - started_at
    results = []
    for run in runs:
        checker = checkers[run.namespace]
        result = RunResult(seed, run.index, run.good, 1, hit[run.namespace], checker.checks,
                           checker.violations, seconds, phases.get(run.namespace))  # fmt: skip
        results.append(result)
        if result.violations:
            replay = f"python bench/bench_chaos.py --real --seed {seed} --episodes 1 --canaries {canaries}"
            details = {
                "replay": replay,
                "replay_alone": None,
                "logs": str(log_dir),
                "end_state": end_states.get(run.namespace),
                "controller_log": _controller_log(log_dir, run.namespace),
            }
            save_failure(result, run, plan, canaries, checker.trace, details)
    extra_counts: Counter[str] = Counter(
        unverifiable=sum(v.unverifiable for v in views.values()),
        relists=sum(w.relists for w in watches),
        proofs=sum(v.proofs for v in views.values()),
        unproven=sum(v.unproven_at_end for v in views.values()),
    )
    return EpisodeResult(seed, 1, injected, results, seconds), extra_counts


def _end_state(store: RealStore, namespace: str) -> dict[str, Any]:
    """The Canary's status and both Deployments' spec and status at the end (what a stuck run waits for)."""
    state: dict[str, Any] = {}
    for key, resource, name in (
        ("canary", CANARIES, APP),
        ("target", "deployments", APP),
        ("primary", "deployments", f"{APP}-primary"),
    ):
        try:
            obj = store.get(resource, name, namespace)
        except (RealApiError, OSError) as error:
            state[key] = {"error": str(error)}
            continue
        spec = obj.get("spec") or {}
        state[key] = {
            "generation": obj["metadata"].get("generation"),
            "resourceVersion": obj["metadata"].get("resourceVersion"),
            "status": obj.get("status"),
        }
        if key != "canary":
            template = (spec.get("template") or {}).get("spec") or {}
            state[key]["replicas"] = spec.get("replicas")
            state[key]["images"] = [c.get("image") for c in template.get("containers", [])]
    state["replicasets"], state["pods"] = _workloads(store.cluster, namespace)
    return state


def _workloads(cluster: Cluster, namespace: str) -> tuple[list[str], list[str]]:
    """One line per ReplicaSet and per pod: what the Deployment controller, the scheduler and kwok did."""
    replicasets: list[str] = []
    pods: list[str] = []
    with contextlib.suppress(OSError, ValueError, KeyError):
        _, body = cluster.api("GET", f"/apis/apps/v1/namespaces/{namespace}/replicasets", timeout=5)
        for rs in body.get("items", []):
            meta, spec, status = rs["metadata"], rs.get("spec") or {}, rs.get("status") or {}
            replicasets.append(
                f"{meta['name']} replicas {spec.get('replicas')} generation {meta.get('generation')} "
                f"observed {status.get('observedGeneration')} status replicas {status.get('replicas')} "
                f"ready {status.get('readyReplicas')} available {status.get('availableReplicas')}"
            )
        _, body = cluster.api("GET", f"/api/v1/namespaces/{namespace}/pods", timeout=5)
        for pod in body.get("items", []):
            meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
            ready = [c.get("status") for c in status.get("conditions", []) if c.get("type") == "Ready"]
            owners = [o.get("name") for o in meta.get("ownerReferences", [])]
            pods.append(
                f"{meta['name']} owner {owners} node {spec.get('nodeName')} phase {status.get('phase')} "
                f"ready {ready} deleting {meta.get('deletionTimestamp')} "
                f"created {meta.get('creationTimestamp')}"
            )
    return replicasets, pods


def _end_state_summary(state: dict[str, Any]) -> str:
    status = (state.get("canary") or {}).get("status") or {}
    conditions = [
        f"{c.get('type')}={c.get('status')} {c.get('reason')}: {c.get('message')}"
        for c in status.get("conditions", [])
    ]
    parts = [f"end: phase {status.get('phase')} conditions {conditions}"]
    for key in ("primary", "target"):
        deployment = state.get(key) or {}
        observed = deployment.get("status") or {}
        parts.append(
            f"{key} replicas {deployment.get('replicas')} images {deployment.get('images')} generation "
            f"{deployment.get('generation')} observed {observed.get('observedGeneration')} updated "
            f"{observed.get('updatedReplicas')} ready {observed.get('readyReplicas')} available "
            f"{observed.get('availableReplicas')}"
        )
    return "; ".join(parts)


def _controller_log(log_dir: Path, namespace: str, limit: int = 300) -> list[str]:
    """The controllers' log lines about ``namespace``, with their starts and stops, in order."""
    markers = (namespace, "controller started", "leading", "signal received", "controller stopped", "stalled")
    lines: list[str] = []
    for path in sorted(log_dir.glob("*.log")):
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                if any(marker in line for marker in markers):
                    lines.append(f"{path.stem}: {line}")
    return lines[-limit:]


def _component_log(cluster: Cluster, namespace: str, limit: int = 200) -> dict[str, list[str]]:
    """What kube-controller-manager, kube-scheduler and kwok logged about ``namespace``."""
    found: dict[str, list[str]] = {}
    for component in ("kube-controller-manager", "kube-scheduler", "kwok"):
        with contextlib.suppress(OSError):
            text = cluster.log_file(component).read_text(errors="replace")
            found[component] = [line for line in text.splitlines() if namespace in line][-limit:]
    return found


class _Snapshot:
    """The end state of one run read once from the API server, in the shape ``Invariants.finished`` reads."""

    def __init__(self, store: RealStore) -> None:
        self.store = store
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}

    def load(self, namespace: str) -> None:
        for resource in (HTTPROUTES, "deployments"):
            self.objects[(resource, APP, namespace)] = copy.deepcopy(self.store.get(resource, APP, namespace))

    def get(self, resource: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        return self.objects[(resource, name, namespace or "")]


def _teardown(store: RealStore, cluster: Cluster, namespaces: list[str], *others: str) -> None:
    for namespace in namespaces:
        with contextlib.suppress(Exception):
            store.patch(CANARIES, APP, {"metadata": {"finalizers": None}}, namespace)
    for namespace in (*namespaces, *others):
        with contextlib.suppress(Exception):
            cluster.api("DELETE", f"/api/v1/namespaces/{namespace}")


def real_table(episodes: list[EpisodeResult], extra: Counter[str]) -> str:
    """The real cluster's faults and checks, in the sandbox table's shape."""
    notes = (
        f"watch relists after faults {extra.get('relists', 0)}; status checks dropped as unverifiable "
        f"(inside a relist's gap) {extra.get('unverifiable', 0)}",
        f"streams proven caught up by a fresh list {extra.get('proofs', 0)}; versions checked at the end "
        f"without that proof {extra.get('unproven', 0)}",
    )
    return table(
        episodes, faults=(*REAL_FAULTS, "second_writer", "team_edit"), where="real cluster: ", notes=notes
    )


__all__ = ["REAL_FAULTS", "real_plan", "real_table", "run_real_episode"]
